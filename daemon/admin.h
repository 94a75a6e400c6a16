/* SPDX-License-Identifier: MIT */
/*
 * XEP-0133 Service Administration: the ad-hoc commands (XEP-0050, see
 * adhoc.h) operators use on the server JID. Only the accounts named by
 * the `admin` configuration key (--admin JID, repeatable) see or run
 * them; everyone else gets forbidden.
 *
 * Commands (node http://jabber.org/protocol/admin#NAME):
 *   add-user, delete-user, change-user-password, end-user-session,
 *   get-online-users-num, get-online-users-list,
 *   get-registered-users-num, get-registered-users-list, announce.
 *
 * Account changes go through the storage thread as in-band registration
 * does (register.c): the same requests, so the same key derivation, and
 * a deleted account's sessions end the same way (not-authorized). An
 * ended session (end-user-session) gets policy-violation. Passwords are
 * never logged or sent back, not even in an error.
 */
#ifndef STANZAD_ADMIN_H
#define STANZAD_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "adhoc.h"

#define NS_ADMIN		"http://jabber.org/protocol/admin"
#define ADMIN_MAX_TARGETS	100	/* JIDs one delete-user / end-user-session names */
#define ADMIN_MAX_LIST		10000	/* JIDs one list answer carries ("none" = no limit) */

struct config;
struct storage;

extern const struct adhoc_command admin_commands[];
extern const size_t admin_ncommands;

/* Whether the normalized bare JID is one of the configured admins. */
bool admin_is_admin(const struct config *cfg, const char *bare);

/* ---- Storage (storage_admin.c; storage thread) ---- */

/* Number of accounts. 0 or -EIO / -EBUSY. */
int admin_store_count_accounts(struct storage *st, uint64_t *out);

#endif
