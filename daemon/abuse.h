/* SPDX-License-Identifier: MIT */
/*
 * Defences against misbehaving peers that the protocol layers do not
 * bound by themselves (the attack matrix of tests/reliability/REPORT.md):
 *
 *  - unauthenticated connection floods: at most max_preauth_per_ip
 *    connections from one source address may be open and not yet
 *    authenticated; more are refused at accept (a stream error on the
 *    plain client port, 429 on HTTP, a close on TLS ports);
 *  - SASL brute force: failed logins are counted per account name and per
 *    source address over auth_failure_window; reaching
 *    max_auth_failures_account locks the account name, reaching
 *    max_auth_failures_source bans the source (auth_ban_source), both for
 *    auth_lockout_time. Locked names and banned sources get
 *    temporary-auth-failure; banned sources are refused at accept;
 *  - slow senders after authentication: a stanza must arrive whole within
 *    stanza_timeout of its first byte (before authentication,
 *    auth_timeout bounds everything), else policy-violation;
 *  - floods from one session: token buckets on inbound stanzas and bytes
 *    (session_stanza_rate/_burst, session_byte_rate/_burst); an empty
 *    bucket ends the stream with policy-violation.
 *
 * The per-source and per-account tables are fixed-size hash tables
 * (ABUSE_SOURCES, ABUSE_ACCOUNTS entries, in static storage): an entry is
 * reused once nothing in it is live, so memory never grows with the
 * number of attackers. When every candidate slot is live, the newcomer is
 * simply not tracked (it gets the protocol's own bounds: auth_timeout,
 * max_auth_failures, max_connections) and abuse.table_full is logged.
 * Keys go through a hash with a random per-process seed, so a peer cannot
 * aim its names or addresses at one bucket.
 *
 * IPv4 sources are whole addresses; IPv6 sources are /64 prefixes (one
 * host usually owns a whole /64, and counting single addresses there
 * would count nothing).
 *
 * The tables are shared by every worker and guarded by one mutex; the
 * per-session buckets live in struct conn and are touched only by the
 * connection's worker.
 */
#ifndef STANZAD_ABUSE_H
#define STANZAD_ABUSE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ABUSE_SOURCES	4096	/* source addresses tracked at once (power of two) */
#define ABUSE_ACCOUNTS	4096	/* account names tracked at once (power of two) */
#define ABUSE_PROBE	16	/* slots a lookup may look at */

struct conn;
struct listener;
struct worker;

/* ---- Accept ---- */

/*
 * Admission of a connection just accepted on listener l (client and HTTP
 * listeners; others are always admitted). Returns true when the source is
 * banned or already has max_preauth_per_ip unauthenticated connections:
 * then the fd is answered as the listener's protocol allows, closed, and
 * conn.refused logged (at most once a second per reason, with the count
 * of lines left out).
 */
bool abuse_accept_refused(struct worker *w, const struct listener *l, int fd);

/* c (peer address filled in) now counts as unauthenticated for its source. */
void abuse_conn_opened(struct conn *c);
/* c authenticated or is being freed: it no longer counts. Idempotent. */
void abuse_conn_done(struct conn *c);

/* ---- SASL brute force ---- */

/*
 * The table key of a normalized username (never 0). Keyed per process:
 * not stable across restarts, not a secret either.
 */
uint64_t abuse_user_key(const char *user);

/*
 * A SASL exchange on c names `user` (a normalized localpart): remembers
 * the name for the outcome, and returns true when the login must be
 * refused for now (the name is locked or c's source is banned; answer
 * temporary-auth-failure). Logs why.
 */
bool abuse_auth_begin(struct conn *c, const char *user);

/*
 * A SASL exchange on c failed with `condition`. Credential failures
 * (not-authorized) count against the account name (the one given to
 * abuse_auth_begin, else `user`, which may be NULL) and against the
 * source; reaching a limit locks the name or bans the source.
 */
void abuse_auth_failed(struct conn *c, const char *user, const char *condition);

/*
 * c authenticated: the name's failure count starts again and c no longer
 * counts as an unauthenticated connection of its source.
 */
void abuse_auth_succeeded(struct conn *c);

/*
 * Bans a source address (IPv4 as v4-mapped) for `seconds`: new
 * connections from it are refused at accept, logins on its open streams
 * get temporary-auth-failure. The brute-force limit calls this; so may
 * anything else that finds a source abusive. It also calls the hook set
 * with auth_ban_set_hook(), where the XDP/TC guard puts the source in its
 * ban map so that the kernel drops its packets before they cost a
 * syscall. Safe from any thread.
 */
void auth_ban_source(const struct in6_addr *addr, unsigned seconds);

/* The guard's hook (NULL: none). Called without the table lock held. */
void auth_ban_set_hook(void (*hook)(const struct in6_addr *addr, unsigned seconds));

/* True while addr is banned. */
bool abuse_source_banned(const struct in6_addr *addr);

/* ---- Inbound rate and stanza deadline (authenticated client streams) ---- */

/*
 * A complete top-level element arrived on c: charges the stanza bucket and
 * clears the stanza deadline. Returns false after ending the stream with
 * policy-violation (the bucket ran dry).
 */
bool abuse_stanza_in(struct conn *c);

/* len plaintext bytes arrived on c: charges the byte bucket. As above. */
bool abuse_bytes_in(struct conn *c, size_t len);

/*
 * After a batch of input was processed: notes when an unfinished stanza
 * started, ends the stream (policy-violation) when one has been arriving
 * for longer than stanza_timeout, and brings c's deadline forward to the
 * moment it would.
 */
void abuse_after_input(struct conn *c);

/*
 * c's deadline fired: true when an unfinished stanza is overdue (the
 * stream was ended with policy-violation), false otherwise (the caller
 * goes on with its own deadline handling, then calls abuse_rearm).
 */
bool abuse_stanza_overdue(struct conn *c);

/* Keeps c's deadline no later than its stanza deadline. */
void abuse_rearm(struct conn *c);

/* ---- For tests ---- */

/* The key of a source address: IPv4 whole, IPv6 its /64. */
void abuse_source_key(const struct in6_addr *addr, uint8_t out[16]);

/*
 * Generic cell rate check (a token bucket kept as one time stamp): charging
 * `cost` units at `rate` per second with room for `burst` units, at time
 * now_us, given the bucket's theoretical arrival time *tat. Returns true
 * (and advances *tat) when allowed, false (leaving *tat) when the bucket
 * is empty. rate 0 allows everything.
 */
bool abuse_gcra(uint64_t *tat, uint64_t now_us, uint64_t cost, uint32_t rate, uint32_t burst);

/* Forgets every entry (unit tests). */
void abuse_reset(void);

/* Unauthenticated connections counted for addr's source (unit tests). */
unsigned abuse_source_preauth(const struct in6_addr *addr);
/* Failures in the current window of an account name (unit tests). */
unsigned abuse_account_failures(const char *user);

#endif
