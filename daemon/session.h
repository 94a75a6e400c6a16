/* SPDX-License-Identifier: MIT */
/*
 * Sessions (bound resources) and the directory that finds them by JID.
 *
 * The directory maps a bare JID to the account's sessions (one per bound
 * resource). Lookups are by normalized strings, so callers pass JIDs that
 * went through jid_parse(). The directory is owned by the server; with a
 * single worker no locking is needed (see DESIGN notes in the README for
 * the multi-worker plan).
 */
#ifndef STANZAD_SESSION_H
#define STANZAD_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct conn;
struct worker;
struct account;
struct sessdir_account;
struct sm_state;
struct presence_state;
struct csi_held;
struct pep_session;

struct session {
	struct conn *conn;		/* NULL while detached (stream management, sm.h) */
	struct sessdir_account *acct;
	struct sm_state *sm;		/* XEP-0198 state after <enable/>, else NULL (sm.c) */
	struct session *next;		/* next session of the same account */
	int priority;			/* -128..127, from the last presence */
	bool available;			/* sent available presence, not yet unavailable */
	bool interested;		/* requested the roster: gets pushes (roster.c) */
	struct presence_state *pres;	/* last presence, directed presence (presence.c) */
	bool blocklist_requested;	/* XEP-0191: gets block list pushes (blocking.c) */
	bool carbons;			/* XEP-0280: carbons enabled (carbons.c) */
	bool csi_inactive;		/* XEP-0352: client said <inactive/> (csi.c) */
	bool ending;			/* ended; leaves the directory at the end of the turn */
	/*
	 * Its stream management state went to another node, where the client
	 * resumed it (sm_export): it ends here without a word to anyone.
	 */
	bool moved;
	struct session *ending_next;	/* worker's list of ending sessions */
	struct csi_held *csi_held;	/* XEP-0352: presence held while inactive, or NULL */
	struct pep_session *pep;	/* XEP-0115 caps and +notify interests (pep.c), or NULL */
	/*
	 * Set only on a worker's stand-in for a requester at home on another
	 * worker (w->remote_requester, iq_async.c): what is delivered to it
	 * is routed to the requester's home from this worker (router.c).
	 */
	struct worker *remote;
	size_t bare_len;		/* jid[0..bare_len) is the bare JID */
	size_t jid_len;
	char jid[];			/* full JID, NUL-terminated */
};

struct sessdir;

struct sessdir *sessdir_new(void);
void sessdir_free(struct sessdir *d);

/* A new unbound session for full JID text (bare_len = bytes before '/'). */
struct session *session_new(struct conn *c, const char *full_jid, size_t bare_len);
void session_free(struct session *s);

/* Adds s. -EEXIST if its full JID is bound already, -ENOMEM. */
int sessdir_add(struct sessdir *d, struct session *s);
/* Removes s (no-op when not added). */
void sessdir_remove(struct sessdir *d, struct session *s);

/* The first session of the bare JID (iterate with ->next), or NULL. */
struct session *sessdir_find_bare(struct sessdir *d, const char *bare, size_t bare_len);
/* The session with exactly this full JID, or NULL. */
struct session *sessdir_find_full(struct sessdir *d, const char *full, size_t len);
/*
 * The account state of a session's account (see account.h), or NULL when
 * none was installed yet.
 */
struct account *session_account(const struct session *s);
/* The account state for a bare JID with sessions, or NULL. */
struct account *sessdir_find_account(struct sessdir *d, const char *bare, size_t bare_len);
/*
 * Installs state for s's account unless it has some already (then `a` is
 * freed). Owned by the directory from now on: freed with the last session.
 */
void session_install_account(struct session *s, struct account *a);
/* Detaches and returns the state of s's account (the caller owns it now). */
struct account *session_take_account(struct session *s);

/* Sessions bound for the bare JID. */
unsigned sessdir_count_bare(struct sessdir *d, const char *bare, size_t bare_len);
/* Total sessions. */
size_t sessdir_size(const struct sessdir *d);
/*
 * Calls fn for every session in the directory (ending ones included: check
 * s->ending), account by account. fn must not add or remove sessions; it
 * may end them (c2s_session_end only marks them), which is safe here.
 */
void sessdir_each(struct sessdir *d, void (*fn)(void *arg, struct session *s), void *arg);

#endif
