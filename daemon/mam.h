/* SPDX-License-Identifier: MIT */
/*
 * XEP-0313 Message Archive Management for accounts (urn:xmpp:mam:2, with
 * the #extended features), archiving preferences (XEP-0441, same
 * namespace) and XEP-0359 stanza IDs.
 *
 * What is archived (XEP-0313 section 7.1.1): messages of type chat or
 * normal that carry a body or another conversation payload (see
 * mam_archivable), never with a <no-store/> or <no-permanent-store/>
 * hint (XEP-0334), never errors, headlines or groupchat (rooms keep their
 * own archive). A message between two local accounts is archived once in
 * each: as outgoing in the sender's archive when its client sends it
 * (c2s.c, after the block list let it pass) and as incoming in the
 * recipient's when the router accepts it for the account (router.c,
 * before delivery or offline storage). A message to oneself is archived
 * once, as incoming. Whether it is archived follows the archive owner's
 * preferences: the 'never' list, then the 'always' list (JIDs, bare
 * matching any resource), then the default: always, never, or roster
 * (contacts in the roster, and oneself). The server's default for
 * accounts that never set preferences is mam_default (config).
 *
 * Stanza IDs: the archive UID is the XEP-0359 <stanza-id by='BARE'/> of
 * the message. It is added to the copies delivered to the recipient
 * (sessions, offline storage, received carbons) and to the sender's sent
 * carbons, never to the message that goes to the contact. A stanza-id
 * that claims the archive owner's 'by' and did not come from the server
 * itself is removed (XEP-0359 section 5): stanzas from clients and
 * services always; a message the server re-routes (stream management,
 * offline fetch: router_route_stanza with a local sender) keeps the stamp
 * it got the first time and is not archived again.
 *
 * The archive write never blocks the loop: it is a fire-and-forget
 * storage request (group commit with everything else queued), except
 * that a sender with stream management (XEP-0198) gets its acks only once
 * the writes its message caused have committed (DESIGN: acknowledged
 * means durable), as for offline storage. The stored
 * stanza is the message as the server routed it (without our stamp),
 * serialized standalone. IDs are 96 random bits (unpredictable, XEP-0359
 * section 6), order is the time of archiving in microseconds, strictly
 * increasing per archive (the storage thread bumps equal or earlier
 * times), so "chronological order" never depends on clock steps.
 *
 * Retention: messages older than mam_retention_days are never returned
 * and are deleted in batches by the storage thread (at most every
 * MAM_EXPIRE_INTERVAL seconds, on archive writes).
 */
#ifndef STANZAD_MAM_H
#define STANZAD_MAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jid.h"
#include "rsm.h"
#include "xml.h"

#define NS_MAM			"urn:xmpp:mam:2"
#define NS_MAM_EXTENDED		"urn:xmpp:mam:2#extended"
#define NS_SID			"urn:xmpp:sid:0"
#define MAM_NS_FORWARD		"urn:xmpp:forward:0"
#define MAM_NS_DELAY		"urn:xmpp:delay"

#define MAM_PAGE_DEFAULT	50	/* results per page when the query gives no <max/> */
#define MAM_PAGE_MAX		250	/* results per page at most (more: a limited page) */
#define MAM_PAGE_MAX_BYTES	(1u << 20)	/* stored bytes per page (at least one result) */
#define MAM_QUERYID_MAX		256	/* longest 'queryid' (longer: bad-request) */
#define MAM_IDS_MAX		MAM_PAGE_MAX	/* values of the 'ids' field */
#define MAM_PREFS_MAX_JIDS	1000	/* JIDs in the always and never lists together */
#define MAM_ID_LEN		16	/* archive UIDs: 96 random bits, base64url */
#define MAM_DATETIME_MAX	32	/* "2024-01-02T03:04:05.123456Z" and NUL */
/* Archive writes queued but not yet stored, all workers together; past it
 * a message is not archived (and gets no stanza-id), logged as mam.overload. */
#define MAM_MAX_PENDING_BYTES	(16u << 20)
#define MAM_EXPIRE_INTERVAL	60	/* seconds between retention sweeps */
#define MAM_EXPIRE_BATCH	1000	/* rows one sweep deletes at most */

struct account;
struct conn;
struct session;
struct iq_request;
struct jid;
struct storage;
struct strbuf;
struct worker;

/* ---- Preferences (XEP-0441) ---- */

enum mam_mode {
	MAM_MODE_SERVER = 0,	/* no preference stored: the server's mam_default */
	MAM_MODE_ALWAYS,
	MAM_MODE_ROSTER,
	MAM_MODE_NEVER,
};

/* "always", "roster", "never" -> the mode; anything else -> MAM_MODE_SERVER. */
enum mam_mode mam_mode_parse(const char *s);
/* The attribute value of a mode (MAM_MODE_SERVER has none: NULL). */
const char *mam_mode_name(enum mam_mode mode);

/*
 * An account's preferences, in memory with its state (struct account):
 * the lists are normalized JIDs (bare, or full for one resource) joined
 * by '\n', as stored; "" when empty. One allocation with the struct.
 */
struct mam_prefs {
	enum mam_mode mode;
	const char *always;
	const char *never;
};

/* Loads user's preferences (storage thread, at account load); *out NULL when none stored. */
int mam_prefs_load_sync(struct storage *st, const char *user, struct mam_prefs **out);
/* A new preferences object from its stored form. NULL with errno = ENOMEM. */
struct mam_prefs *mam_prefs_new(enum mam_mode mode, const char *always, const char *never);
void mam_prefs_free(struct mam_prefs *p);

/* ---- Archiving hooks ---- */

/*
 * The <stanza-id/> stamp, owned by the caller (on its stack) for one
 * routing call: linked into the stanza by the hook, unlinked by
 * mam_stamp_end(). Opaque to callers.
 */
struct mam_write;
struct mam_stamp {
	struct xml_node node;
	struct xml_attr by, id;
	struct xml_node *parent;	/* the stanza it is linked into, or NULL */
	struct mam_write *pending;	/* archive write submitted at mam_stamp_end */
	struct session *holder;		/* sender whose stream-management acks wait for it */
	struct worker *w;
	char idbuf[MAM_ID_LEN + 1];
	char bybuf[JID_MAX];		/* the archive owner's bare JID */
};

/*
 * c2s, the client whose session JID is `from` sent `st` to `to` (after
 * the block list, before carbons_sent): strips stanza-ids claiming the
 * sender's archive, archives an outgoing message and links the sender's
 * stamp into st for the sent carbons. Call mam_stamp_end(ms) right after
 * carbons_sent().
 */
void mam_outbound(struct mam_stamp *ms, struct conn *c, struct xml_node *st,
		  const struct jid *from, const struct jid *to);

/*
 * router.c, `st` from `from` is about to be routed to the local account
 * of `to` (src: the sender's connection, NULL for stanzas the server
 * holds or services send): strips forged stanza-ids, archives an incoming
 * message and links the recipient's stamp into st, so every delivered
 * copy and the received carbons carry it. Call mam_stamp_end(ms) after
 * the delivery and carbons_received().
 */
void mam_inbound(struct mam_stamp *ms, struct worker *w, struct conn *src, struct xml_node *st,
		 const struct jid *from, const struct jid *to);

/* Unlinks the stamp and hands the pending archive write to the store. */
void mam_stamp_end(struct mam_stamp *ms);

/*
 * Whether a message holds conversation content worth archiving in a user
 * archive: type chat or normal, not an error, no <no-store/> or
 * <no-permanent-store/> hint, and a <body/>, a <store/> hint, or an IM
 * payload that clients sync through the archive (encryption, chat
 * markers, reactions, retractions, corrections, invitations). Not a MAM
 * result or carbon itself.
 */
bool mam_archivable(const struct xml_node *msg);

/* ---- iq handlers (iq.c table) ---- */

void mam_query_get(struct iq_request *rq);	/* the query form (4.1.1 "fields") */
void mam_query_set(struct iq_request *rq);	/* an archive query */
void mam_metadata_get(struct iq_request *rq);	/* first / last message (extended) */
void mam_prefs_get(struct iq_request *rq);
void mam_prefs_set(struct iq_request *rq);
void mam_foreign(struct iq_request *rq);	/* someone else's archive: forbidden */

/* ---- Helpers others may reuse (MUC archive) ---- */

/* A new archive UID (MAM_ID_LEN base64url characters of 96 random bits). 0 or -EIO. */
int mam_new_id(char out[MAM_ID_LEN + 1]);

/*
 * XEP-0082 DateTime: "CCYY-MM-DDThh:mm:ss[.s+](Z|(+|-)hh:mm)" to
 * microseconds since the epoch (fractions past microseconds are cut).
 * 0 or -EINVAL.
 */
int mam_datetime_parse(const char *s, int64_t *out_us);
/* Microseconds since the epoch as "CCYY-MM-DDThh:mm:ss.uuuuuuZ". */
void mam_datetime_format(int64_t us, char out[MAM_DATETIME_MAX]);

/* Microseconds since the epoch, now (CLOCK_REALTIME). */
int64_t mam_now_us(void);

/*
 * A parsed archive query (iq set <query xmlns='urn:xmpp:mam:2'/>): the
 * form fields and the RSM set, strings in the request tree or `a`.
 */
struct mam_query {
	const char *queryid;		/* or NULL */
	const char *with;		/* normalized JID text, or NULL */
	bool with_full;			/* 'with' has a resource */
	int64_t start, end;		/* inclusive, microseconds; INT64_MIN/MAX when absent */
	const char *after_id;		/* form 'after-id', or NULL */
	const char *before_id;		/* form 'before-id', or NULL */
	const char **ids;		/* form 'ids' */
	size_t nids;
	bool flip;			/* <flip-page/> */
	struct rsm_request rsm;
	uint32_t max;			/* page size (rsm, default and cap applied) */
};

/*
 * Parses a query element. Returns 0, or -EINVAL with *condition the
 * stanza error to answer (bad-request, feature-not-implemented for an
 * unknown form field, jid-malformed is reported as bad-request) and *why
 * a static English text; -ENOMEM.
 */
int mam_query_parse(struct arena *a, const struct xml_node *query, struct mam_query *out,
		    const char **condition, const char **why);

/*
 * Appends one result message to out:
 * <message to=TO [from=FROM]><result xmlns='urn:xmpp:mam:2' [queryid] id=ID>
 * <forwarded xmlns='urn:xmpp:forward:0'><delay stamp=TS/>STANZA</forwarded>
 * </result></message>. `stanza` is standalone XML (its own xmlns), as
 * stored_xml_serialize writes it.
 */
void mam_result_serialize(struct strbuf *out, const char *to, const char *from,
			  const char *queryid, const char *id, int64_t ts_us, const char *stanza,
			  size_t stanza_len);

/* ---- Storage (storage thread; storage_mam.c) ---- */

/* One archived message as the store returns it (strings valid during the callback). */
struct mam_row {
	int64_t ts;			/* microseconds: the archive order */
	const char *id;
	const char *peer;		/* bare JID of the other party */
	const char *resource;		/* its resource, "" if none */
	bool outgoing;
	const char *stanza;
	size_t len;
};

/* What a page or a count selects: ts in (lo, hi), the peer when given. */
struct mam_filter {
	int64_t lo, hi;			/* exclusive bounds */
	const char *peer;		/* bare JID, or NULL for all */
	const char *resource;		/* with a peer: only this resource, or NULL */
};

/* Tries at appending one entry while other nodes append to the same archive. */
#define MAM_INSERT_TRIES 16

/*
 * Appends a message to user's archive at time ts (raised above the newest
 * entry when needed, and above an entry another node sharing the database
 * appended meanwhile). 0; -ENOENT when the account does not exist;
 * -EEXIST when the id is taken; -EBUSY when the archive stayed contended
 * for MAM_INSERT_TRIES tries; -EIO.
 */
int mam_db_insert(struct storage *st, const char *user, int64_t ts, const char *id,
		  const char *peer, const char *resource, bool outgoing, const char *stanza,
		  size_t len);
/* The ts of archive entry `id` if it is newer than `cutoff`. 0, -ENOENT or -EIO. */
int mam_db_lookup(struct storage *st, const char *user, const char *id, int64_t cutoff,
		  int64_t *ts);
/* One entry by id (newer than cutoff) to fn. 0, -ENOENT or -errno (fn's too). */
int mam_db_get(struct storage *st, const char *user, const char *id, int64_t cutoff,
	       int (*fn)(void *arg, const struct mam_row *row), void *arg);
/*
 * Up to `limit` entries matching f, skipping `offset`, oldest first or
 * (backwards) newest first, to fn; fn returns nonzero to stop (a positive
 * value is not an error). 0 or -errno.
 */
int mam_db_page(struct storage *st, const char *user, const struct mam_filter *f,
		bool backwards, uint32_t limit, uint32_t offset,
		int (*fn)(void *arg, const struct mam_row *row), void *arg);
/* Entries matching f. 0 or -errno. */
int mam_db_count(struct storage *st, const char *user, const struct mam_filter *f,
		 uint32_t *out);
/* The oldest and newest entries newer than cutoff (fn twice, or never when empty). */
int mam_db_bounds(struct storage *st, const char *user, int64_t cutoff,
		  int (*fn)(void *arg, const struct mam_row *row), void *arg);
/* Deletes all but the newest `keep` entries of user's archive (keep > 0). 0 or -errno. */
int mam_db_prune(struct storage *st, const char *user, uint32_t keep);
/* Deletes up to `batch` entries (all archives) older than cutoff. 0 or -errno. */
int mam_db_expire(struct storage *st, int64_t cutoff, uint32_t batch, uint32_t *deleted);
/*
 * Preferences: *mode MAM_MODE_SERVER and empty lists when none stored;
 * the lists are JIDs joined by '\n' (malloc'd, the caller frees).
 */
int mam_db_prefs_get(struct storage *st, const char *user, enum mam_mode *mode, char **always,
		     char **never);
int mam_db_prefs_put(struct storage *st, const char *user, enum mam_mode mode,
		     const char *always, const char *never);
/*
 * Removes the stamp text (a serialized <stanza-id/>) from user's offline
 * messages that contain it: a message stored offline with a stamp the
 * archive then declined. 0 or -errno.
 */
int mam_db_unstamp_offline(struct storage *st, const char *user, const char *stamp);

#endif
