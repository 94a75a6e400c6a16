/* SPDX-License-Identifier: MIT */
/*
 * The model the MUC files share (muc.h says which file does what): the
 * service, its rooms, their occupants and affiliations, and the context
 * of one stanza's handling. Not for use outside muc*.c.
 *
 * Memory: a room is one allocation plus its strings; an occupant keeps
 * its nickname, real JID and last presence (serialized children, to be
 * re-emitted to newcomers); the history is a ring of serialized messages.
 * Everything a stanza's handling builds lives in the service's arena,
 * reset once the stanza is done.
 */
#ifndef STANZAD_MUC_ROOM_H
#define STANZAD_MUC_ROOM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "arena.h"
#include "fanout.h"
#include "jid.h"
#include "muc.h"
#include "strbuf.h"
#include "xml.h"

/* Named limits of the service (the operator's are config keys, see README). */
#define MUC_ROOM_DEFAULT_HISTORY 20		/* a new room's (max_muc_history caps it) */
#define MUC_HISTORY_MAX_BYTES	(512 * 1024)	/* history text a room keeps, at most */
#define MUC_OWNER_EXTRA_SLOTS	8		/* admins, owners in a full room (7.2.10) */
#define MUC_MAX_AFFILIATIONS	10000		/* affiliation entries per room */
#define MUC_CONFIG_TEXT_MAX	1024		/* room name, description (bytes) */
#define MUC_PASSWORD_MAX	256		/* room password (bytes) */
#define MUC_SUBJECT_MAX		16384		/* subject (bytes) */
#define MUC_REASON_MAX		1024		/* a kick, ban or invite <reason/> */
#define MUC_MAX_ITEMS		64		/* #admin items, invites of one stanza */
#define MUC_DEFERRED_MAX	4096		/* stanzas queued while the service is busy */
#define MUC_ID_LEN		16		/* made-up and archive ids (base64url) */
#define MUC_RANDOM_POOL		3072		/* random bytes drawn per getrandom() */
#define MUC_OCCID_KEY_LEN	32		/* XEP-0421 service key */
#define MUC_OCCID_LEN		22		/* an occupant id: 128 bits, base64url */

struct worker;
struct session;
struct muc_room;

/* The configuration of a room (XEP-0045 10.1.3, muc#roomconfig). */
struct muc_config {
	char *title;			/* muc#roomconfig_roomname, or NULL */
	char *description;		/* or NULL */
	char *password;			/* NULL: not password-protected */
	uint32_t max_users;		/* 0: the service's max_muc_occupants */
	uint32_t history_len;		/* messages kept and sent on entering */
	uint8_t allow_pm;		/* enum muc_allow_pm */
	bool persistent;
	bool public_room;
	bool members_only;
	bool moderated;
	bool non_anonymous;		/* whois = anyone */
	bool change_subject;		/* occupants (participants) may change it */
	bool allow_invites;		/* occupants may invite to a members-only room */
	bool archive;			/* messages go to the MAM archive */
};

/* One entry of a room's affiliation list (never MUC_AFF_NONE). */
struct muc_affil {
	struct muc_affil *next;
	uint8_t aff;			/* enum muc_affiliation */
	char *nick;			/* reserved nickname, or NULL */
	size_t jid_len;
	char jid[];			/* bare JID, or a domain (bans) */
};

struct muc_occupant {
	struct muc_occupant *next;
	uint8_t role;			/* enum muc_role */
	uint8_t aff;			/* enum muc_affiliation, cached from the list */
	bool ghost;			/* its session is gone: removed after the delivery */
	char *nick;			/* malloc'd, resourceprepped */
	size_t nick_len;
	char *pres;			/* "<presence>children</presence>", malloc'd, or NULL */
	size_t pres_len;
	size_t bare_len;		/* jid[0..bare_len) is the bare JID */
	size_t jid_len;
	char jid[];			/* the real full JID */
};

struct muc_history {
	int64_t at;
	size_t len;
	char *text;			/* the message as broadcast, without 'to' */
};

struct muc_room {
	struct muc_room *hnext;		/* hash chain */
	struct muc_config cfg;
	bool locked;			/* created, waiting for its first configuration */
	bool stored;			/* has rows in the store */
	bool archived;			/* may have archive rows */
	struct muc_affil *affils;
	unsigned naffils;
	unsigned nowners;
	struct muc_occupant *occupants;	/* in order of entering */
	unsigned noccupants;
	char *subject;			/* NULL: never set ("" once cleared) */
	char *subject_nick;		/* who set it, or NULL */
	int64_t subject_at;
	struct muc_history *hist;	/* oldest first; hist_cap allocated */
	unsigned hist_cap, hist_count;
	size_t hist_bytes;
	uint32_t hash;
	size_t name_len;		/* jid[0..name_len) is the room's localpart */
	size_t jid_len;
	char jid[];			/* name@conference.DOMAIN */
};

/*
 * The copies of one fan-out for occupants at home on other workers,
 * collected per worker and posted as one message each (muc_remote.c).
 */
struct muc_batch {
	const struct xml_node *st;	/* the fan-out's tree (in the service's arena) */
	struct strbuf *jids;		/* per worker: full JIDs, each ending with a NUL */
	uint32_t *count;		/* per worker */
	unsigned nworkers;		/* entries of both (0: none allocated yet) */
};

/* A stanza queued while the service was busy (see muc_route). */
struct muc_deferred {
	struct muc_deferred *next;
	size_t len;
	char text[];
};

struct muc_service {
	struct server *srv;
	const struct config *cfg;
	char domain[JID_PART_MAX + 1];	/* conference.DOMAIN */
	size_t domain_len;
	struct muc_room **buckets;
	size_t nbuckets;		/* a power of two */
	size_t nrooms;
	uint32_t hash_seed;
	struct arena arena;		/* one stanza's trees */
	struct strbuf buf;		/* scratch text */
	struct fanout fan_anon;		/* presence without real JIDs */
	struct fanout fan_jid;		/* presence with them; also messages */
	struct muc_batch remote_anon;	/* fan_anon's copies for other workers */
	struct muc_batch remote_jid;	/* fan_jid's */
	unsigned depth;			/* > 0 while handling a stanza */
	struct muc_deferred *deferred, *deferred_tail;
	unsigned ndeferred;
	uint8_t pool[MUC_RANDOM_POOL];	/* random bytes for ids */
	uint8_t occid_key[MUC_OCCID_KEY_LEN];	/* XEP-0421 (muc_occupant_id.c) */
	size_t pool_left;
};

/* What the handlers of one stanza share. */
struct muc_ctx {
	struct worker *w;
	struct muc_service *svc;
	struct xml_node *st;
	const struct jid *from;		/* the sender (normalized) */
	const struct jid *to;		/* conference.DOMAIN, a room or an occupant JID */
	struct muc_room *room;		/* to's room, or NULL when none */
	struct arena *a;		/* = &svc->arena */
};

/* ---- muc.c: rooms, delivery, replies, persistence ---- */

struct muc_room *muc_room_find(struct muc_service *svc, const char *name, size_t len);
/* A new room with the default configuration (not locked yet). NULL on ENOMEM. */
struct muc_room *muc_room_create(struct muc_service *svc, const char *name, size_t len);
/*
 * The room goes away: out of the table, its stored rows and archive
 * deleted, freed. Occupants must have been told already.
 */
void muc_room_destroy(struct muc_ctx *c, struct muc_room *room);
/*
 * Destroys the room if nothing keeps it: no occupants and not persistent
 * (or still locked, XEP-0045 10.1.3). True when it did: c->room is then
 * cleared if it was that room.
 */
bool muc_room_maybe_destroy(struct muc_ctx *c, struct muc_room *room);

/* The affiliation of a user (a real JID, full or bare) with the room. */
enum muc_affiliation muc_room_affiliation(const struct muc_room *room, const char *jid,
					  size_t len);
/* The entry for exactly this bare JID (or domain), or NULL. */
struct muc_affil *muc_affil_find(const struct muc_room *room, const char *jid, size_t len);
/*
 * Sets an affiliation (MUC_AFF_NONE removes the entry); nick NULL keeps
 * the reserved nickname, "" clears it. 0, -ENOSPC (MUC_MAX_AFFILIATIONS)
 * or -ENOMEM.
 */
int muc_affil_set(struct muc_room *room, const char *jid, size_t len, enum muc_affiliation aff,
		  const char *nick);
/* The bare JID that reserved nick in the room, or NULL. */
const struct muc_affil *muc_nick_reserved(const struct muc_room *room, const char *nick);

/* The service's limit on occupants of a room with this configuration. */
uint32_t muc_room_max_users(const struct muc_service *svc, const struct muc_room *room);

/*
 * Sends st to one local session by full JID (sets 'to'). 0, or -ENOENT
 * when there is no such session (the caller may treat it as a ghost).
 * A session at home on another worker gets it there (0): when it is
 * missing, that worker reports it and it is removed as a ghost later.
 */
int muc_deliver(struct muc_ctx *c, const char *jid, struct xml_node *st);
/* Routes a stanza the room generates (to a bare or full JID; offline storage applies). */
void muc_route_out(struct muc_ctx *c, struct xml_node *st);
/*
 * Answers the stanza being handled with an error from its 'to', an
 * <error by='room'/> with condition and optional text. Never answers an
 * error. For presence the payload echoed is an empty <x xmlns=muc/>.
 */
void muc_reply_error(struct muc_ctx *c, const char *condition, const char *text);
/* The same with an error type other than RFC 6120's usual one (NULL: the usual). */
void muc_reply_error_typed(struct muc_ctx *c, const char *type, const char *condition,
			   const char *text);
/* An iq result answering the stanza being handled, with an optional payload. */
void muc_reply_result(struct muc_ctx *c, struct xml_node *payload);

/* A fresh unpredictable id of MUC_ID_LEN characters (out has room for the NUL). */
void muc_new_id(struct muc_service *svc, char out[MUC_ID_LEN + 1]);
/* seconds since the epoch */
int64_t muc_now(void);
/* Formats an XEP-0082 UTC DateTime into out (>= 21 bytes). */
void muc_format_time(int64_t t, char *out, size_t size);
/* "room@service/nick" in the context's arena, or NULL. */
char *muc_occupant_jid(struct muc_ctx *c, const struct muc_room *room, const char *nick);

/* Writes the room's configuration and affiliations (if persistent), or forgets them. */
void muc_persist(struct muc_ctx *c, struct muc_room *room);
/* Queues an archived message (text without 'to'). */
void muc_archive_put(struct muc_ctx *c, struct muc_room *room, const struct muc_occupant *occ,
		     const char *sid, const char *text, size_t len, int64_t at);

/*
 * A home worker found no session for these occupants (n full JIDs, each
 * ending with a NUL) of the room with JID room_jid: they are ghosts,
 * removed at once (on worker 0, from muc_remote.c).
 */
void muc_ghosts_reported(struct worker *w, const char *room_jid, const char *jids, uint32_t n);

/* ---- muc_remote.c: occupants at home on other workers ---- */

/* Whether jid (full or bare) is a local account at home on another worker than w. */
bool muc_home_elsewhere(const struct worker *w, const char *jid, size_t len);

/*
 * Adds a copy of fan-out f (svc->fan_anon or svc->fan_jid, prepared from
 * st) for the session `jid` to the batch of its home worker. False when
 * that home is this worker: the caller delivers it here.
 */
bool muc_remote_add(struct muc_ctx *c, const struct fanout *f, const struct xml_node *st,
		    const char *jid, size_t len);
/* Posts f's batches, one message per worker (before f is prepared again). */
void muc_remote_flush(struct muc_ctx *c, const struct muc_room *room, const struct fanout *f);
/*
 * Posts one stanza to the session `jid` at its home on another worker
 * (a missing session is reported as a ghost of c->room). 0, -ENOMEM, or
 * -EAGAIN when the home is this worker.
 */
int muc_remote_deliver(struct muc_ctx *c, const char *jid, struct xml_node *st);
void muc_batch_free(struct muc_batch *b);

/* ---- muc_room.c: occupants ---- */

void muc_presence(struct muc_ctx *c);
void muc_message(struct muc_ctx *c);
/* An iq to an occupant JID (forwarded, or a self-ping answered). */
void muc_iq_occupant(struct muc_ctx *c);

struct muc_occupant *muc_occupant_by_jid(const struct muc_room *room, const char *jid,
					 size_t len);
struct muc_occupant *muc_occupant_by_nick(const struct muc_room *room, const char *nick);
/* Sets the role of occ and of the user's other sessions under its nickname (7.2.9). */
void muc_set_nick_role(struct muc_room *room, struct muc_occupant *occ, enum muc_role role);

/* Status codes carried by a presence broadcast (XEP-0045 15). */
#define MUC_MAX_CODES 6

/*
 * An occupant's role or affiliation changed (the occupant stays): the new
 * state to everyone, with the actor's nickname and the reason if given.
 */
void muc_occupant_changed(struct muc_ctx *c, struct muc_room *room, struct muc_occupant *occ,
			  const char *actor, const char *reason);
/*
 * Removes an occupant for the room's reasons (kick 307, ban 301,
 * affiliation 321, members-only 322, error 333): unavailable presence
 * with `code` to it and everyone, then it is freed. Does not destroy the
 * room (the caller calls muc_room_maybe_destroy when done).
 */
void muc_occupant_remove(struct muc_ctx *c, struct muc_room *room, struct muc_occupant *occ,
			 int code, const char *actor, const char *reason);
/* Removes the occupants marked as ghosts by a delivery (status 333). */
void muc_purge_ghosts(struct muc_ctx *c, struct muc_room *room);
/*
 * Tells every occupant that the room is destroyed (unavailable with
 * <destroy/>, optional alternate venue, password and reason) and frees
 * the occupants; the room itself stays for the caller to destroy.
 */
void muc_room_evacuate(struct muc_ctx *c, struct muc_room *room, const char *venue,
		       const char *password, const char *reason);
/* A groupchat message from the room with status codes (configuration change, 10.2.1). */
void muc_room_notify_codes(struct muc_ctx *c, struct muc_room *room, const int *codes,
			   size_t ncodes);
/* Adds a message (text without 'to') to the room's history ring. */
void muc_history_add(struct muc_service *svc, struct muc_room *room, const char *text,
		     size_t len, int64_t at);
/* Trims the history to the room's configured length. */
void muc_history_trim(struct muc_room *room);
void muc_history_free(struct muc_room *room);
void muc_occupant_free(struct muc_occupant *occ);

/* ---- muc_admin.c: iq to the service and to rooms ---- */

/* An iq to conference.DOMAIN itself. */
void muc_iq_service(struct muc_ctx *c);
/* An iq to a room's bare JID. */
void muc_iq_room(struct muc_ctx *c);
/* Fills a configuration with the service's defaults. */
void muc_config_defaults(const struct muc_service *svc, struct muc_config *cfg);
void muc_config_free(struct muc_config *cfg);

/* ---- muc_occupant_id.c: occupant identifiers (XEP-0421) ---- */

/* Loads the service key from the state directory, creating it the first time. */
void muc_occupant_id_init(struct muc_service *svc);
/* occ's id in room: from the real bare JID (bare, bare_len). */
void muc_occupant_id_make(const struct muc_service *svc, const struct muc_room *room,
			  const char *bare, size_t bare_len, char out[MUC_OCCID_LEN + 1]);
/* Replaces any <occupant-id/> of st with occ's. 0 or -ENOMEM. */
int muc_occupant_id_stamp(struct muc_ctx *c, const struct muc_room *room,
			  const struct muc_occupant *occ, struct xml_node *st);

/* ---- muc_archive.c: MAM on the room JID ---- */

/* An urn:xmpp:mam:2 iq to a room (query form, query, metadata). */
void muc_archive_iq(struct muc_ctx *c);

#endif
