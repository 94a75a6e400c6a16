/* SPDX-License-Identifier: MIT */
/*
 * SASL for c2s streams (RFC 6120 section 6), on GNU SASL (libgsasl).
 *
 * Mechanisms: SCRAM-SHA-256(-PLUS), SCRAM-SHA-1(-PLUS), PLAIN. The stream
 * layer owns the XML; this module sees decoded bytes only.
 *
 * Storage is asynchronous, so an exchange runs in two phases:
 *   1. sasl_begin() takes the mechanism and the initial response and
 *      extracts the username (and, for PLAIN, the password) to look up;
 *   2. once the account's stored credentials (or their absence) are known,
 *      sasl_set_account() provides them and sasl_step() drives GNU SASL,
 *      whose callbacks answer from what was provided, never from storage.
 * For PLAIN, the PBKDF2 check runs off the loop together with the lookup;
 * the step then only consults its verdict.
 *
 * Channel binding (RFC 5802 section 6, RFC 5929, RFC 9266): the -PLUS
 * variants are offered exactly when the channel has binding data, and
 * sasl_begin() enforces the gs2 flag against that offer before any
 * lookup: "p" only on -PLUS with a binding type the channel has, "y" only
 * when no -PLUS was offered (else a downgrade), "n" only without -PLUS.
 *
 * Threads: one struct sasl_server per process, shared read-only by all
 * workers once created (GNU SASL's library handle is not modified after
 * sasl_server_new(), and its session functions are reentrant). An
 * exchange belongs to one thread at a time.
 */
#ifndef STANZAD_SASL_H
#define STANZAD_SASL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scram.h"

#define SASL_USERNAME_MAX	1023
#define SASL_MESSAGE_MAX	8192	/* decoded bytes of one client message */

struct sasl_server;	/* one per process; thread-safe after creation */
struct sasl_exchange;	/* one per authentication attempt */

/* Channel binding available on the connection, for the -PLUS variants. */
struct sasl_channel {
	bool tls;		/* the stream is encrypted */
	bool tls13;
	/* Channel binding data, filled by the caller; len 0 = unavailable. */
	unsigned char exporter[32];
	size_t exporter_len;
	unsigned char unique[64];
	size_t unique_len;
};

/*
 * Creates the per-process SASL state. `domain` is the served domain (for
 * checking authorization identities; it is normalized here). decoy_secret
 * keys the decoy credentials of unknown users (scram_decoy_creds); pass a
 * value kept in the state directory so decoys stay stable across
 * restarts, or NULL for a random one per process. Returns NULL with errno
 * EINVAL (bad domain), ENOMEM or EIO (GNU SASL missing a mechanism).
 */
struct sasl_server *sasl_server_new(const char *domain, const uint8_t decoy_secret[32]);
void sasl_server_free(struct sasl_server *srv);

/*
 * Mechanism names to offer on a stream, best first. PLAIN is offered only
 * over TLS unless allow_plain_insecure; -PLUS variants only when channel
 * binding data is available. Returns the count (<= cap).
 */
size_t sasl_offer(const struct sasl_channel *ch, bool allow_plain_insecure,
		  const char **names, size_t cap);

/*
 * XEP-0440 channel-binding types to advertise for this channel:
 * "tls-exporter" whenever exporter data is present, "tls-unique" only on
 * TLS 1.2 (RFC 9266 deprecates it for 1.3). A client that sends
 * p=tls-unique on TLS 1.3 anyway is still served when unique data was
 * supplied. Returns the count (<= cap).
 */
size_t sasl_cb_types(const struct sasl_channel *ch, const char **names, size_t cap);

/*
 * Whether `mech` may start on this channel under the offer policy of
 * sasl_offer(): NULL when it may, else the RFC 6120 condition to fail
 * with ("invalid-mechanism" for an unknown name or a -PLUS variant
 * without binding data, "mechanism-too-weak" for PLAIN in the clear when
 * not allowed).
 */
const char *sasl_mech_condition(const struct sasl_channel *ch, bool allow_plain_insecure,
				const char *mech);

enum sasl_result {
	SASL_CONTINUE = 0,	/* send a challenge, wait for a response */
	SASL_SUCCESS,		/* send success (with additional data if any) */
	SASL_FAILURE,		/* send failure with *condition */
};

/*
 * Starts an exchange. mech must be one of the offered names (the caller
 * checks it was offered, see sasl_mech_condition()); ch is copied.
 * initial/initial_len is the decoded initial response, kept by the
 * exchange for its first step.
 *
 * On success *out is the exchange and username (username_size should be
 * SASL_USERNAME_MAX + 1) holds the prepared username, SASLprep then
 * nodeprep, to look up. Returns 0, or:
 *   -EINVAL with *condition: "invalid-mechanism", "malformed-request"
 *     (syntax, or a message over SASL_MESSAGE_MAX), "not-authorized" (a
 *     username that cannot be an account, or a channel-binding flag that
 *     contradicts the offer), "invalid-authzid" (an authorization identity
 *     other than the user's own bare JID or localpart),
 *     "temporary-auth-failure" (out of memory);
 *   -EAGAIN when initial is NULL (no initial response): send an empty
 *     challenge and call sasl_begin() again with the client's response as
 *     `initial`. *condition is then "malformed-request", for callers that
 *     treat every error alike.
 */
int sasl_begin(struct sasl_server *srv, const char *mech, const struct sasl_channel *ch,
	       const char *initial, size_t initial_len, struct sasl_exchange **out,
	       char *username, size_t username_size, const char **condition);

/*
 * True while the exchange waits for sasl_set_account(): look up the
 * username from sasl_begin() first. Every mechanism here needs the lookup.
 */
bool sasl_needs_lookup(const struct sasl_exchange *x);

/*
 * For PLAIN: the password from the initial response (for the off-loop
 * check), or NULL for other mechanisms. Valid until sasl_end().
 */
const char *sasl_plain_password(const struct sasl_exchange *x);

/*
 * Provides the lookup's outcome: creds NULL when the account does not
 * exist (a decoy is used so that SCRAM fails only at the end), and for
 * PLAIN the verdict of scram_verify_password(). creds is copied. For an
 * unknown PLAIN user, spend the same PBKDF2 anyway (verify against
 * scram_decoy_creds) so that the answer time does not tell.
 * Credentials with an iteration count outside 1..SCRAM_ITERATIONS_MAX
 * make the next step fail with temporary-auth-failure.
 */
void sasl_set_account(struct sasl_exchange *x, const struct scram_creds *creds,
		      bool plain_ok);

/*
 * Runs one step. in is the decoded client data; the first call uses the
 * initial response kept by sasl_begin() and ignores in (pass it or NULL).
 * On SASL_CONTINUE/SASL_SUCCESS, *out (malloc'd, may be NULL when empty)
 * holds the bytes to send base64-encoded; the caller frees it. On
 * SASL_FAILURE, *condition is the RFC 6120 6.5 condition, and every later
 * step fails the same way. A message over SASL_MESSAGE_MAX bytes is a
 * malformed-request.
 */
enum sasl_result sasl_step(struct sasl_exchange *x, const char *in, size_t in_len,
			   char **out, size_t *out_len, const char **condition);

/*
 * The RFC 6120 condition for a GNU SASL error code (Gsasl_rc): every code
 * maps to not-authorized, malformed-request, invalid-mechanism or
 * temporary-auth-failure; unknown codes to not-authorized.
 */
const char *sasl_condition_from_gsasl(int gsasl_rc);

/* The authenticated username after SASL_SUCCESS, else NULL. */
const char *sasl_authenticated_user(const struct sasl_exchange *x);
/* Mechanism name of the exchange. */
const char *sasl_mech_name(const struct sasl_exchange *x);

/* Ends the exchange and wipes its secrets. NULL is fine. */
void sasl_end(struct sasl_exchange *x);

/*
 * Base64 for SASL payloads (RFC 4648, padding required, no whitespace,
 * no non-zero bits after the last byte). decode: "=" (and the empty
 * string) is the empty payload; telling an absent initial response from
 * "=" is the caller's job. Returns a malloc'd buffer (NUL-terminated)
 * and its length, or NULL with errno = EINVAL (incorrect-encoding) /
 * ENOMEM. encode: the empty payload becomes "=". NULL with errno =
 * ENOMEM.
 */
char *sasl_b64_decode(const char *in, size_t in_len, size_t *out_len);
char *sasl_b64_encode(const char *in, size_t in_len);

#endif
