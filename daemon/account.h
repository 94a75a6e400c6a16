/* SPDX-License-Identifier: MIT */
/*
 * What the server keeps in memory for an account while it has at least
 * one session: its roster, block list and other per-account state the
 * routing hot path needs without a storage round trip.
 *
 * The state is loaded on the storage thread when the account's first
 * session binds (the bind result waits for it), hangs off the session
 * directory's entry for the bare JID, and is freed with that entry when
 * the last session ends. Every feature that keeps per-account state adds
 * a field here and a line to account_load_sync() / account_free().
 */
#ifndef STANZAD_ACCOUNT_H
#define STANZAD_ACCOUNT_H

#include <stdbool.h>
#include <stdint.h>

#include "avatar_compat.h"
#include "jid.h"
#include "storage.h"

struct roster;		/* roster.c */
struct blocklist;	/* blocking.c */
struct mam_prefs;	/* mam.c */
struct worker;
struct conn;

struct account {
	char user[JID_PART_MAX + 1];	/* normalized localpart */
	struct roster *roster;		/* roster.c: items, version, pending requests */
	struct blocklist *blocklist;
	/* offline.c (XEP-0160): stored count (approximate), a fetch in flight */
	uint32_t offline_count;
	bool offline_fetching;
	bool offline_more;		/* stored during the fetch: fetch again */
	char *last_status;		/* last_activity.c: last unavailable <status/> */
	struct mam_prefs *mam_prefs;	/* mam.c: XEP-0441 preferences, NULL = server default */
	char avatar_hash[AVATAR_HASH_HEX + 1];	/* avatar_compat.c: vCard PHOTO SHA-1, "" none */
};

/*
 * Loads an account's state from the store (storage thread). Returns 0 and
 * a new account in *out, or -errno.
 */
int account_load_sync(struct storage *st, const char *user, struct account **out);

/* Frees the state (NULL is fine). */
void account_free(struct account *a);

/*
 * A load on behalf of a connection: the completion runs `done` on the
 * connection's worker with the loaded account (or NULL and an error), or
 * frees everything if the connection is gone.
 */
struct account_load_req {
	struct storage_req req;		/* first */
	struct account *loaded;		/* out */
	void (*done)(struct conn *c, struct account *loaded, int err);
};

/* Submits a load for c's authenticated user. 0 or -ENOMEM. */
int account_load_submit(struct conn *c, const char *user,
			void (*done)(struct conn *c, struct account *loaded, int err));

#endif
