/* SPDX-License-Identifier: MIT */
/*
 * XEP-0012 Last Activity, answered by the server:
 *  - to the server: its uptime in seconds;
 *  - to one's own bare JID: 0 (the asker is online);
 *  - to another local account's bare JID: service-unavailable when the
 *    account does not exist; forbidden unless the account's roster gives
 *    the asker its presence (subscription 'from' or 'both'); 0 when the
 *    account has a session; otherwise the seconds since its last session
 *    ended, with the status text of the last unavailable presence it
 *    sent. An existing account that never logged out gets
 *    service-unavailable (nothing is known), as ejabberd answers.
 *
 * The time and status are written when an account's last session ends
 * (last_activity_session_end, called from c2s_closing).
 */
#ifndef STANZAD_LAST_ACTIVITY_H
#define STANZAD_LAST_ACTIVITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iq.h"

struct conn;
struct session;
struct worker;
struct storage;
struct account;
struct jid;

#define NS_LAST			"jabber:iq:last"
/* Longest status text kept (bytes, cut at a character boundary). */
#define LAST_STATUS_MAX		1024

void last_activity_get(struct iq_request *rq);

/*
 * Session s ends for good (from c2s_session_end; s is still in the
 * directory). When it is the account's last one, the logout time and the
 * status are stored.
 */
void last_activity_session_end(struct worker *w, struct session *s);

/*
 * A broadcast presence (no 'to') from c's session: an unavailable one
 * with a <status/> is remembered for the account, an available one
 * forgets it.
 */
void last_activity_note_presence(struct conn *c, const struct xml_node *presence);

/*
 * XEP-0012 section 4: a last-activity get for one of an account's
 * resources reaches it only if the asker may see the account's presence.
 * True when `st` (from another account, to full JID `to`) is such a get
 * and the asker may not: the router then answers forbidden.
 */
bool last_activity_deny_resource(struct worker *w, const struct xml_node *st,
				 const struct jid *from, const struct jid *to);

/* Frees what the account keeps for this module (from account_free). */
void last_activity_account_free(struct account *a);

/* Seconds since the server started. */
uint64_t last_activity_uptime(void);

/*
 * Copies at most max bytes of s into out (out_size > max), never cutting
 * a UTF-8 sequence in two. Returns the length copied.
 */
size_t last_activity_truncate(char *out, size_t out_size, const char *s, size_t max);

/*
 * The store (storage thread; storage_last_activity.c).
 */
/* 0, -ENOENT (no such account), -EIO, -EBUSY. status may be NULL. */
int last_activity_store_set(struct storage *st, const char *user, int64_t logout_at,
			    const char *status);
/* 0, -ENOENT (nothing recorded), -EIO. status gets "" when none was stored. */
int last_activity_store_get(struct storage *st, const char *user, int64_t *logout_at,
			    char *status, size_t status_size);

#endif
