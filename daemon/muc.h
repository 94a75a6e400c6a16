/* SPDX-License-Identifier: MIT */
/*
 * Multi-User Chat (XEP-0045) at conference.DOMAIN, with the room archive
 * (XEP-0313 on the room JID) and self-ping (XEP-0410).
 *
 * The service is one entry of the service table (service.c): the router
 * hands it every stanza addressed to conference.DOMAIN or a JID at it.
 * Rooms live in memory while they have occupants or are persistent;
 * persistent rooms (configuration, affiliations, subject) are written to
 * the store as they change and loaded at startup, before the loop runs.
 * Groupchat messages are serialized once and spliced per occupant
 * (fanout.h). A user's sessions may share one nickname (XEP-0045 7.2.9):
 * they are separate occupants to the room model and one to the others.
 * Users whose session ends leave their rooms through the
 * unavailable presence presence.c sends to every directed-presence
 * target (RFC 6121 4.6.3); an occupant whose session is gone anyway is
 * removed (status 333) the next time the room sends it something.
 *
 * Files: muc.c (service, room table, routing, persistence), muc_room.c
 * (occupants: presence, messages, history, invitations), muc_admin.c
 * (#admin, #owner, configuration form, disco), muc_archive.c (MAM on
 * the room JID), muc_perm.c (the pure rules of roles and affiliations),
 * storage_muc.c (SQL). muc_room.h is the model they share.
 */
#ifndef STANZAD_MUC_H
#define STANZAD_MUC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xml.h"

#define MUC_SERVICE_LABEL	"conference"

#define NS_MUC			"http://jabber.org/protocol/muc"
#define NS_MUC_USER		"http://jabber.org/protocol/muc#user"
#define NS_MUC_ADMIN		"http://jabber.org/protocol/muc#admin"
#define NS_MUC_OWNER		"http://jabber.org/protocol/muc#owner"
#define NS_MUC_ROOMCONFIG	"http://jabber.org/protocol/muc#roomconfig"
#define NS_MUC_ROOMINFO		"http://jabber.org/protocol/muc#roominfo"
#define NS_MUC_REQUEST		"http://jabber.org/protocol/muc#request"
#define NS_MUC_STABLE_ID	"http://jabber.org/protocol/muc#stable_id"
#define NS_MUC_SELF_PING	"http://jabber.org/protocol/muc#self-ping-optimization"
#define NS_OCCUPANT_ID		"urn:xmpp:occupant-id:0"
#define NS_MAM			"urn:xmpp:mam:2"
#define NS_MAM_EXTENDED		"urn:xmpp:mam:2#extended"
#define NS_RSM			"http://jabber.org/protocol/rsm"
#define NS_FORWARD		"urn:xmpp:forward:0"
#define NS_SID			"urn:xmpp:sid:0"

struct config;
struct conn;
struct jid;
struct server;
struct storage;
struct worker;
struct muc_service;

/* ---- The service ---- */

/* Whether the service runs (config key muc = yes|no). */
bool muc_enabled(const struct config *cfg);

/*
 * The service table's route function: a stanza for conference.DOMAIN or
 * a JID at it. src may be NULL; from/to are normalized. Never answers
 * an error stanza. Calls that arrive while the service is handling a
 * stanza (a session ending inside a delivery sends its unavailable
 * presence here) are queued and handled right after it.
 */
void muc_route(struct worker *w, struct conn *src, struct xml_node *st,
	       const struct jid *from, const struct jid *to);

/*
 * Creates the service for srv (when enabled) and loads the persistent
 * rooms from the store (synchronously: called at startup, before the
 * storage thread owns the store). Sets srv->muc. 0 or -errno (logged).
 */
int muc_service_load(struct server *srv, struct storage *st);

/*
 * Cluster mode, worker 0, this node took the services' lease: the rooms
 * are loaded again from st (a store of the caller's), replacing those in
 * memory (occupants included: a node without the lease has none). On
 * failure the old ones stay. 0 or -errno.
 */
int muc_service_reload(struct server *srv, struct storage *st);

/* Frees the service and every room (NULL is fine). */
void muc_service_free(struct muc_service *svc);

/* ---- Roles and affiliations (XEP-0045 section 5; muc_perm.c, pure) ---- */

enum muc_role {
	MUC_ROLE_NONE = 0,
	MUC_ROLE_VISITOR,
	MUC_ROLE_PARTICIPANT,
	MUC_ROLE_MODERATOR,
};

/* Ordered by rank: a larger value is a higher affiliation. */
enum muc_affiliation {
	MUC_AFF_OUTCAST = 0,
	MUC_AFF_NONE,
	MUC_AFF_MEMBER,
	MUC_AFF_ADMIN,
	MUC_AFF_OWNER,
};

/* Who may send private messages (muc#roomconfig_allowpm). */
enum muc_allow_pm {
	MUC_PM_ANYONE = 0,
	MUC_PM_PARTICIPANTS,
	MUC_PM_MODERATORS,
	MUC_PM_NONE,
};

const char *muc_role_name(enum muc_role r);
const char *muc_affiliation_name(enum muc_affiliation a);
const char *muc_allow_pm_name(enum muc_allow_pm p);
/* The value for a name, or -1 when the name is unknown. */
int muc_role_parse(const char *s);
int muc_affiliation_parse(const char *s);
int muc_allow_pm_parse(const char *s);

/* The role a user gets on entering (XEP-0045 5.1.2). */
enum muc_role muc_default_role(enum muc_affiliation aff, bool moderated);

/*
 * Each check returns NULL when the action is allowed, else the stanza
 * error condition XEP-0045 names for the refusal.
 */

/* Entering: outcasts "forbidden", non-members of a members-only room "registration-required". */
const char *muc_check_enter(enum muc_affiliation aff, bool members_only);

/*
 * An occupant (actor) sets the role of another occupant (target) to
 * new_role (XEP-0045 8.2-8.4, 9.6-9.8): only moderators ("forbidden");
 * admins and owners keep voice and moderation and may only be kicked, by
 * a higher affiliation; granting or revoking moderation needs admin or
 * owner; nobody acts on a higher affiliation ("not-allowed"); kicking
 * oneself is a "conflict".
 */
const char *muc_check_role_change(enum muc_affiliation actor_aff, enum muc_role actor_role,
				  enum muc_affiliation target_aff, enum muc_role target_role,
				  enum muc_role new_role, bool self);

/*
 * An admin or owner (actor) changes the affiliation of target (section 9,
 * 10): others "forbidden"; admins manage members, outcasts and the
 * unaffiliated only ("not-allowed"); banning oneself, or an owner leaving
 * the room without owners, is a "conflict". owners = the room's owners.
 */
const char *muc_check_affiliation_change(enum muc_affiliation actor_aff,
					 enum muc_affiliation target_aff,
					 enum muc_affiliation new_aff, bool self, unsigned owners);

/* A groupchat message: non-occupants "not-acceptable", visitors "forbidden". */
const char *muc_check_groupchat(enum muc_role role);
/* A subject change: moderators, and participants when the room lets occupants. */
const char *muc_check_subject(enum muc_role role, bool occupants_may_change);
/* A private message by the sender's role under the room's allow_pm. */
const char *muc_check_pm(enum muc_role role, enum muc_allow_pm allow);
/*
 * A mediated invitation: in an open room any occupant (or an admin or
 * owner from outside); in a members-only room admins and owners, and any
 * occupant when the room allows invitations.
 */
const char *muc_check_invite(enum muc_role role, enum muc_affiliation aff, bool members_only,
			     bool allow_invites);
/* Reading a role list (moderators only). */
const char *muc_check_role_list(enum muc_role actor_role);
/*
 * Reading an affiliation list: admins and owners; members read the
 * member list of a non-anonymous room (XEP-0045 9.5).
 */
const char *muc_check_affiliation_list(enum muc_affiliation actor_aff,
				       enum muc_affiliation list, bool non_anonymous);
/* Whether an occupant with this role sees real JIDs. */
bool muc_sees_jid(enum muc_role viewer, bool non_anonymous);

/*
 * Discussion history to send on entering (XEP-0045 7.2.14): given the
 * times and sizes of the room's n entries (oldest first), how many of the
 * newest to send so that every limit holds: max_stanzas and max_chars
 * (< 0: none), only entries at or after `since` (INT64_MIN: none).
 * Complete stanzas only; stops at the first that does not fit.
 */
size_t muc_history_select(const int64_t *at, const size_t *len, size_t n, long max_stanzas,
			  long max_chars, int64_t since);

/*
 * Parses an XEP-0082 DateTime ("1970-01-01T00:00:00Z", optional fraction,
 * "Z" or "+hh:mm"/"-hh:mm") into seconds since the epoch. 0 or -EINVAL.
 */
int muc_parse_datetime(const char *s, int64_t *out);

/* Whether a nickname is usable: not empty, not only white space. */
bool muc_nick_ok(const char *nick, size_t len);

/* ---- Storage (storage thread; storage_muc.c) ---- */

/* A persistent room as stored (strings NUL-terminated; NULL = none). */
struct muc_room_row {
	const char *name;		/* the room's localpart */
	const char *title;		/* muc#roomconfig_roomname */
	const char *description;
	const char *password;		/* NULL: not password-protected */
	const char *subject;		/* NULL: never set */
	const char *subject_nick;
	int64_t subject_at;
	uint32_t max_users;		/* 0: the service limit */
	uint32_t history_len;
	uint8_t allow_pm;		/* enum muc_allow_pm */
	bool public_room, members_only, moderated, non_anonymous;
	bool change_subject, allow_invites, archive;
};

/* One affiliation as stored. */
struct muc_affiliation_row {
	const char *jid;		/* bare JID or domain */
	uint8_t aff;			/* enum muc_affiliation, never NONE */
	const char *nick;		/* reserved nickname or NULL */
};

/* An archived message (MAM). */
struct muc_archive_row {
	int64_t seq;			/* order in the archive */
	int64_t at;			/* seconds since the epoch */
	const char *stanza_id;
	const char *nick;
	const char *real_jid;		/* the sender's full JID */
	const char *stanza;		/* serialized without 'to' */
	size_t stanza_len;
};

/* Calls room_fn per stored room, aff_fn per affiliation of it. 0 or -errno. */
int muc_db_load(struct storage *st, int (*room_fn)(void *arg, const struct muc_room_row *r),
		int (*aff_fn)(void *arg, const char *room, const struct muc_affiliation_row *a),
		void *arg);
/* Replaces the stored room and its affiliations (naff rows). 0 or -errno. */
int muc_db_room_put(struct storage *st, const struct muc_room_row *r,
		    const struct muc_affiliation_row *affs, size_t naff);
/*
 * Forgets a stored room: its row and affiliations, and its archive too
 * when with_archive (the room went away; without: it just stopped being
 * persistent). 0 or -errno.
 */
int muc_db_room_delete(struct storage *st, const char *name, bool with_archive);

/*
 * Archives a message, then keeps only the newest `keep` of the room.
 * real_bare is the sender's bare JID (for 'with' filters). 0 or -errno
 * (-EEXIST: the stanza id is taken).
 */
int muc_db_archive_put(struct storage *st, const char *room, const struct muc_archive_row *m,
		       const char *real_bare, uint32_t keep);
/* Forgets a room's archive (the room went away). 0 or -errno. */
int muc_db_archive_delete(struct storage *st, const char *room);
/* The sequence number of an archived id: 0, -ENOENT or -errno. */
int muc_db_archive_seq(struct storage *st, const char *room, const char *stanza_id,
		       int64_t *seq);

/* An archive query: rows with lo < seq < hi and start <= at <= end. */
struct muc_archive_filter {
	int64_t lo, hi;
	int64_t start, end;
	const char *with_bare;		/* NULL: any sender */
	const char *with_nick;		/* NULL: any nickname */
};

/*
 * Calls fn for up to `limit` matching rows, oldest first, or newest first
 * when `backward`. fn returns 0 to go on. 0 or -errno.
 */
int muc_db_archive_query(struct storage *st, const char *room,
			 const struct muc_archive_filter *f, bool backward, uint32_t limit,
			 int (*fn)(void *arg, const struct muc_archive_row *m), void *arg);
/* How many rows match f. 0 or -errno. */
int muc_db_archive_count(struct storage *st, const char *room,
			 const struct muc_archive_filter *f, uint64_t *out);
/* The row with this stanza id, through fn (not called when none). 0 or -errno. */
int muc_db_archive_get(struct storage *st, const char *room, const char *stanza_id,
		       int (*fn)(void *arg, const struct muc_archive_row *m), void *arg);

#endif
