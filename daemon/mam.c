/* SPDX-License-Identifier: MIT */
/*
 * XEP-0313 Message Archive Management for accounts, XEP-0441 preferences
 * and XEP-0359 stanza IDs. See mam.h for the rules.
 *
 * In this file, in order: modes and preferences; UIDs and times; which
 * messages are archived; the archive write (built on the worker, decided
 * and stored on the storage thread); the routing hooks; queries (parsed
 * on the worker, paged on the storage thread, results sent on the
 * worker); the metadata, form and preferences iqs.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "account.h"
#include "config.h"
#include "conn.h"
#include "dataform.h"
#include "iq.h"
#include "iq_async.h"
#include "jid.h"
#include "log.h"
#include "mam.h"
#include "metrics.h"
#include "roster.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "sm.h"
#include "stanza.h"
#include "storage.h"
#include "stored_xml.h"
#include "worker.h"

#define MAM_NS_HINTS		"urn:xmpp:hints"
#define MAM_NS_CARBONS		"urn:xmpp:carbons:2"
#define MAM_NS_MUC_USER		"http://jabber.org/protocol/muc#user"
#define MAM_NS_XDATA_VALIDATE	"http://jabber.org/protocol/xdata-validate"
#define MAM_US_PER_DAY		(86400LL * 1000000LL)

/* ---- Modes and preferences ---- */

static const char *const mam_mode_names[] = {
	[MAM_MODE_ALWAYS] = "always",
	[MAM_MODE_ROSTER] = "roster",
	[MAM_MODE_NEVER] = "never",
};

enum mam_mode mam_mode_parse(const char *s)
{
	for (int m = MAM_MODE_ALWAYS; s && m <= MAM_MODE_NEVER; m++)
		if (strcmp(s, mam_mode_names[m]) == 0)
			return (enum mam_mode)m;
	return MAM_MODE_SERVER;
}

const char *mam_mode_name(enum mam_mode mode)
{
	return mode >= MAM_MODE_ALWAYS && mode <= MAM_MODE_NEVER ? mam_mode_names[mode] : NULL;
}

/*
 * The mode of accounts without preferences: mam_default, else always,
 * which is what multi-device clients (Conversations, Gajim, Dino) need to
 * sync every one-to-one conversation and what Prosody and ejabberd
 * deployments commonly configure.
 */
static enum mam_mode mam_server_mode(const struct config *cfg)
{
	enum mam_mode m = mam_mode_parse(cfg->mam_default);

	return m == MAM_MODE_SERVER ? MAM_MODE_ALWAYS : m;
}

struct mam_prefs *mam_prefs_new(enum mam_mode mode, const char *always, const char *never)
{
	size_t la = strlen(always), ln = strlen(never);
	struct mam_prefs *p = malloc(sizeof(*p) + la + ln + 2);
	char *buf;

	if (!p)
		return NULL;
	buf = (char *)(p + 1);
	memcpy(buf, always, la + 1);
	memcpy(buf + la + 1, never, ln + 1);
	p->mode = mode;
	p->always = buf;
	p->never = buf + la + 1;
	return p;
}

void mam_prefs_free(struct mam_prefs *p)
{
	free(p);
}

int mam_prefs_load_sync(struct storage *st, const char *user, struct mam_prefs **out)
{
	enum mam_mode mode;
	char *always, *never;
	int ret;

	*out = NULL;
	ret = mam_db_prefs_get(st, user, &mode, &always, &never);
	if (ret < 0)
		return ret;
	/* No row: the server default applies, nothing to keep in memory. */
	if (mode != MAM_MODE_SERVER) {
		*out = mam_prefs_new(mode, always, never);
		if (!*out)
			ret = -ENOMEM;
	}
	free(always);
	free(never);
	return ret;
}

/* Whether a '\n'-joined list has jid[0..len) as one of its lines. */
static bool mam_list_has(const char *list, const char *jid, size_t len)
{
	for (const char *p = list; p && *p;) {
		const char *e = strchr(p, '\n');
		size_t n = e ? (size_t)(e - p) : strlen(p);

		if (n == len && memcmp(p, jid, len) == 0)
			return true;
		p = e ? e + 1 : NULL;
	}
	return false;
}

enum mam_verdict {
	MAM_NO = 0,
	MAM_YES,
	MAM_IF_CONTACT,		/* roster mode: yes for a roster contact or oneself */
};

/*
 * The preferences applied to a peer (its bare JID, and its full JID when
 * it has a resource). XEP-0441: a JID in 'never' is never archived, even
 * when it is in 'always' too; bare JIDs in a list cover every resource.
 */
static enum mam_verdict mam_verdict(enum mam_mode server_mode, enum mam_mode mode,
				    const char *always, const char *never, const char *bare,
				    size_t bare_len, const char *full, size_t full_len)
{
	bool has_res = full_len > bare_len;

	if (mam_list_has(never, bare, bare_len) ||
	    (has_res && mam_list_has(never, full, full_len)))
		return MAM_NO;
	if (mam_list_has(always, bare, bare_len) ||
	    (has_res && mam_list_has(always, full, full_len)))
		return MAM_YES;
	if (mode == MAM_MODE_SERVER)
		mode = server_mode;
	if (mode == MAM_MODE_ALWAYS)
		return MAM_YES;
	return mode == MAM_MODE_NEVER ? MAM_NO : MAM_IF_CONTACT;
}

/* The worker's decision for an account in memory, about peer (a parsed JID). */
static bool mam_wanted(const struct config *cfg, const struct account *a, const struct jid *peer,
		       bool self)
{
	const struct mam_prefs *p = a ? a->mam_prefs : NULL;
	size_t bare_len = peer->domain_off + peer->domain_len;
	char bare[JID_MAX];
	enum mam_verdict v;

	v = mam_verdict(mam_server_mode(cfg), p ? p->mode : MAM_MODE_SERVER, p ? p->always : "",
			p ? p->never : "", peer->buf, bare_len, peer->buf, peer->len);
	if (v != MAM_IF_CONTACT)
		return v == MAM_YES;
	if (self)
		return true;
	memcpy(bare, peer->buf, bare_len);
	bare[bare_len] = '\0';
	return roster_find(a, bare) != NULL;
}

/* ---- UIDs and times ---- */

int mam_new_id(char out[MAM_ID_LEN + 1])
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	unsigned char r[MAM_ID_LEN / 4 * 3];
	size_t o = 0;

	/* OpenSSL's DRBG: per-thread state in userspace, no syscall per call. */
	if (RAND_bytes(r, (int)sizeof(r)) != 1) {
		out[0] = '\0';
		return -EIO;
	}
	for (size_t i = 0; i < sizeof(r); i += 3) {
		uint32_t v = (uint32_t)r[i] << 16 | (uint32_t)r[i + 1] << 8 | r[i + 2];

		out[o++] = alphabet[v >> 18 & 63];
		out[o++] = alphabet[v >> 12 & 63];
		out[o++] = alphabet[v >> 6 & 63];
		out[o++] = alphabet[v & 63];
	}
	out[o] = '\0';
	return 0;
}

int64_t mam_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Days from 1970-01-01 to y-m-d, proleptic Gregorian (H. Hinnant's days_from_civil). */
static int64_t mam_days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

/* n decimal digits at s into *out. */
static bool mam_digits(const char *s, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

int mam_datetime_parse(const char *s, int64_t *out_us)
{
	static const int mdays[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	int y, mo, d, h, mi, sec, tzh = 0, tzm = 0, sign = 0, fdigits = 0;
	int64_t frac = 0, secs;
	bool leap;

	if (!mam_digits(s, 4, &y) || s[4] != '-' || !mam_digits(s + 5, 2, &mo) || s[7] != '-' ||
	    !mam_digits(s + 8, 2, &d) || s[10] != 'T' || !mam_digits(s + 11, 2, &h) ||
	    s[13] != ':' || !mam_digits(s + 14, 2, &mi) || s[16] != ':' ||
	    !mam_digits(s + 17, 2, &sec))
		return -EINVAL;
	s += 19;
	if (*s == '.') {
		if (s[1] < '0' || s[1] > '9')
			return -EINVAL;
		/* Any number of digits; past microseconds they are cut. */
		for (s++; *s >= '0' && *s <= '9'; s++)
			if (fdigits < 6) {
				frac = frac * 10 + (*s - '0');
				fdigits++;
			}
		for (; fdigits < 6; fdigits++)
			frac *= 10;
	}
	if (*s == 'Z') {
		s++;
	} else if (*s == '+' || *s == '-') {
		sign = *s == '-' ? -1 : 1;
		if (!mam_digits(s + 1, 2, &tzh) || s[3] != ':' || !mam_digits(s + 4, 2, &tzm) ||
		    tzh > 23 || tzm > 59)
			return -EINVAL;
		s += 6;
	} else {
		return -EINVAL;	/* XEP-0082: the time zone is not optional */
	}
	leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
	if (*s || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && leap) || h > 23 ||
	    mi > 59 || sec > 60)
		return -EINVAL;
	secs = mam_days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 +
	       sec - sign * (tzh * 3600 + tzm * 60);
	*out_us = secs * 1000000 + frac;
	return 0;
}

void mam_datetime_format(int64_t us, char out[MAM_DATETIME_MAX])
{
	int64_t secs = us / 1000000, frac = us % 1000000;
	struct tm tm;
	time_t t;

	if (frac < 0) {
		frac += 1000000;
		secs--;
	}
	t = (time_t)secs;
	gmtime_r(&t, &tm);
	/* Years past 9999 cannot be written in XEP-0082: clamp (never happens from a clock). */
	if (tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0) {
		snprintf(out, MAM_DATETIME_MAX, "%s", "9999-12-31T23:59:59.999999Z");
		return;
	}
	snprintf(out, MAM_DATETIME_MAX, "%04u-%02u-%02uT%02u:%02u:%02u.%06uZ",
		 (unsigned)(tm.tm_year + 1900) % 10000, (unsigned)(tm.tm_mon + 1) % 100,
		 (unsigned)tm.tm_mday % 100, (unsigned)tm.tm_hour % 100, (unsigned)tm.tm_min % 100,
		 (unsigned)tm.tm_sec % 100, (unsigned)frac % 1000000);
}

/* The oldest time still kept (microseconds), or 0 when everything is kept. */
static int64_t mam_cutoff(const struct config *cfg, int64_t now)
{
	return cfg->mam_retention_days ? now - (int64_t)cfg->mam_retention_days * MAM_US_PER_DAY :
					 0;
}

/* For the store's "newer than" arguments: ts > this is alive. */
static int64_t mam_alive_after(int64_t cutoff)
{
	return cutoff ? cutoff - 1 : INT64_MIN;
}

/* ---- Which messages ---- */

struct mam_payload {
	const char *ns;
	const char *name;	/* NULL: any element of the namespace */
};

/*
 * Payloads that make a bodyless message part of the conversation, as
 * clients that sync through the archive expect them there (receipts and
 * chat states are not: they describe a moment, not the conversation).
 */
static const struct mam_payload mam_payloads[] = {
	{ MAM_NS_HINTS, "store" },				/* XEP-0334 */
	{ "urn:xmpp:eme:0", "encryption" },			/* XEP-0380 */
	{ "eu.siacs.conversations.axolotl", "encrypted" },	/* OMEMO (legacy) */
	{ "urn:xmpp:omemo:2", "encrypted" },			/* XEP-0384 */
	{ "urn:xmpp:openpgp:0", "openpgp" },			/* XEP-0373 */
	{ "jabber:x:encrypted", "x" },				/* XEP-0027 */
	{ "urn:xmpp:chat-markers:0", "received" },		/* XEP-0333 */
	{ "urn:xmpp:chat-markers:0", "displayed" },
	{ "urn:xmpp:chat-markers:0", "acknowledged" },
	{ "urn:xmpp:reactions:0", "reactions" },		/* XEP-0444 */
	{ "urn:xmpp:message-retract:1", "retract" },		/* XEP-0424 */
	{ "urn:xmpp:fasten:0", "apply-to" },			/* XEP-0422 (retract v0) */
	{ "jabber:x:conference", "x" },				/* XEP-0249 invitations */
	{ "urn:xmpp:jingle-message:0", NULL },			/* XEP-0353 call log */
};

bool mam_archivable(const struct xml_node *msg)
{
	const char *type;
	bool worth = false;

	if (stanza_kind(msg) != STANZA_MESSAGE)
		return false;
	type = stanza_type(msg);
	if (strcmp(type, "chat") != 0 && strcmp(type, "normal") != 0)
		return false;
	for (const struct xml_node *ch = xml_first_element(msg); ch; ch = xml_next_element(ch)) {
		if (strcmp(ch->ns, MAM_NS_HINTS) == 0 &&
		    (strcmp(ch->name, "no-store") == 0 ||
		     strcmp(ch->name, "no-permanent-store") == 0))
			return false;
		/* What the server wraps (carbons, archive results) is not a new message. */
		if ((strcmp(ch->ns, MAM_NS_CARBONS) == 0 && strcmp(ch->name, "private") != 0) ||
		    strcmp(ch->ns, NS_MAM) == 0)
			return false;
		if (worth)
			continue;
		if (strcmp(ch->ns, XML_NS_CLIENT) == 0 && strcmp(ch->name, "body") == 0) {
			worth = true;
			continue;
		}
		if (strcmp(ch->ns, MAM_NS_MUC_USER) == 0 && strcmp(ch->name, "x") == 0 &&
		    xml_child(ch, MAM_NS_MUC_USER, "invite")) {
			worth = true;	/* a mediated invitation (XEP-0045 7.8.2) */
			continue;
		}
		for (size_t i = 0; i < sizeof(mam_payloads) / sizeof(mam_payloads[0]); i++) {
			const struct mam_payload *pl = &mam_payloads[i];

			if (strcmp(ch->ns, pl->ns) == 0 &&
			    (!pl->name || strcmp(ch->name, pl->name) == 0)) {
				worth = true;
				break;
			}
		}
	}
	return worth;
}

/* Removes every <stanza-id xmlns='urn:xmpp:sid:0'/> of st whose 'by' is bare[0..len). */
static void mam_strip(struct xml_node *st, const char *bare, size_t len)
{
	struct xml_node *ch = xml_first_element(st), *next;

	for (; ch; ch = next) {
		const char *by;

		next = xml_next_element(ch);
		if (strcmp(ch->ns, NS_SID) != 0 || strcmp(ch->name, "stanza-id") != 0)
			continue;
		by = xml_attr_get(ch, "by");
		/* XEP-0359 5: ours to set, so anything claiming it is forged. */
		if (by && strlen(by) == len && memcmp(by, bare, len) == 0)
			xml_node_remove(ch);
	}
}

/* ---- The archive write ---- */

/* Bytes of archive writes queued, all workers (see MAM_MAX_PENDING_BYTES). */
static atomic_size_t mam_pending;
/* When mam.overload was last logged (seconds), to log it once a minute. */
static atomic_llong mam_overload_logged;

/*
 * One message for one archive. Built on the worker in a single buffer
 * (header, then the texts), run on the storage thread. Nothing comes back
 * to the worker (req.inbox NULL, done runs on the storage thread) unless
 * the sender's stream-management acks wait for the commit (DESIGN: what
 * is acknowledged is durable): then done releases the hold on the worker.
 */
struct mam_write {
	struct storage_req req;		/* first; req.user: the archive owner */
	int64_t ts;			/* when the server took the message (microseconds) */
	int64_t cutoff;			/* retention: older entries may be swept; 0 = keep */
	uint32_t keep;			/* max_mam_messages: entries kept; 0 = all */
	size_t size;			/* bytes held, counted in mam_pending */
	bool outgoing;
	bool self;			/* the peer is the owner itself */
	bool decide;			/* the owner is not in memory: apply its stored prefs */
	enum mam_mode server_mode;	/* mam_default, for `decide` */
	char id[MAM_ID_LEN + 1];
	size_t stanza_len;
	size_t peer_off, res_off, stamp_off;	/* into text[] */
	size_t holder_off;		/* the sender whose acks wait (full JID), 0: none */
	char text[];			/* stanza \0 peer \0 resource \0 stamp \0 holder \0 */
};

/* What precedes text[]: appended as zeros, then filled in. */
static const char mam_zeros[offsetof(struct mam_write, text)];

/* The next retention sweep (microseconds). Storage thread only. */
static int64_t mam_next_sweep;

/* Deletes a batch of expired entries when one is due; failures wait for the next one. */
static void mam_sweep(struct storage *st, int64_t cutoff)
{
	int64_t now = mam_now_us();
	uint32_t n = 0;

	if (!cutoff || now < mam_next_sweep)
		return;
	if (mam_db_expire(st, cutoff, MAM_EXPIRE_BATCH, &n) < 0)
		n = 0;
	/* A full batch means more are due: go on with the next write. */
	mam_next_sweep = n == MAM_EXPIRE_BATCH ? now : now + MAM_EXPIRE_INTERVAL * 1000000LL;
	if (n)
		log_info("mam.expired", "count=%u", n);
}

/* The stored preferences of an owner that is not in memory, applied (storage thread). */
static bool mam_write_decide(struct storage *st, const struct mam_write *mw)
{
	const char *peer = mw->text + mw->peer_off, *res = mw->text + mw->res_off;
	enum mam_mode mode;
	char *always, *never;
	char full[JID_MAX];
	enum mam_verdict v;
	uint8_t state;
	bool approved, exists = false;
	int n;

	if (mam_db_prefs_get(st, mw->req.user, &mode, &always, &never) < 0)
		return false;
	n = snprintf(full, sizeof(full), "%s%s%s", peer, res[0] ? "/" : "", res);
	if (n < 0 || (size_t)n >= sizeof(full))
		n = 0;
	v = mam_verdict(mw->server_mode, mode, always, never, peer, strlen(peer), full, (size_t)n);
	free(always);
	free(never);
	if (v != MAM_IF_CONTACT)
		return v == MAM_YES;
	if (mw->self)
		return true;
	return roster_db_state(st, mw->req.user, peer, &state, &approved, &exists) == 0 && exists;
}

/*
 * Storage thread: applies the stored preferences when the worker could
 * not, then appends the entry, or takes the stamp back out of the offline
 * copy; a due retention sweep follows a successful write.
 */
static int mam_write_run(struct storage *st, struct storage_req *req)
{
	struct mam_write *mw = (struct mam_write *)req;
	int ret = 0;

	if (!mw->decide || mam_write_decide(st, mw)) {
		ret = mam_db_insert(st, req->user, mw->ts, mw->id, mw->text + mw->peer_off,
				    mw->text + mw->res_off, mw->outgoing, mw->text, mw->stanza_len);
		/* The count quota: the oldest go, in the same commit as the new one. */
		if (ret == 0 && mw->keep)
			ret = mam_db_prune(st, req->user, mw->keep);
		/* No such account: the router bounces the message; nothing to keep. */
		if (ret == -ENOENT)
			ret = 0;
		/* A UID met an older one (96 random bits: never seen in practice). */
		if (ret == -EEXIST) {
			log_error("mam.duplicate_id", "user=%s id=%s", req->user, mw->id);
			ret = 0;
		}
	} else if (mw->text[mw->stamp_off]) {
		/* Declined after the offline copy got the stamp: take it back. */
		ret = mam_db_unstamp_offline(st, req->user, mw->text + mw->stamp_off);
	}
	if (ret == 0)
		mam_sweep(st, mw->cutoff);
	return ret;
}

/*
 * The write is done (committed or failed: either way the sender may be
 * acked). On the storage thread, or on the worker when an ack is held.
 */
static void mam_write_done(struct storage_req *req)
{
	struct mam_write *mw = (struct mam_write *)req;

	if (req->result < 0)
		log_warn("mam.store_failed", "user=%s id=%s err=%d", req->user, mw->id,
			 req->result);
	if (mw->holder_off) {
		struct worker *w = (struct worker *)((char *)req->inbox -
						     offsetof(struct worker, inbox));
		const char *holder = mw->text + mw->holder_off;
		struct session *s = sessdir_find_full(w->sessions, holder, strlen(holder));

		if (s)
			sm_release_ack(s);
	}
	atomic_fetch_sub(&mam_pending, mw->size);
	free(mw);
}

/* Logs (once a minute) that archive writes are being refused. */
static void mam_overload(void)
{
	long long now = (long long)time(NULL);
	long long last = atomic_load(&mam_overload_logged);

	if (now - last >= 60 && atomic_compare_exchange_strong(&mam_overload_logged, &last, now))
		log_warn("mam.overload",
			 "pending_bytes=%zu limit=%u msg=\"messages are not archived\"",
			 atomic_load(&mam_pending), MAM_MAX_PENDING_BYTES);
}

/*
 * A write of st for `user`'s archive, peer = the other party. The stanza
 * is serialized straight into the buffer that becomes the request (one
 * allocation per write). With stamp_by (the owner's bare JID), the
 * request also carries the <stanza-id/> exactly as the serializer writes
 * it inside a stanza, to find it again in an offline copy. NULL when
 * overloaded or out of memory.
 */
static struct mam_write *mam_write_new(struct worker *w, const struct xml_node *st,
				       const char *user, const struct jid *peer, bool outgoing,
				       bool self, const char *stamp_by,
				       const struct session *holder)
{
	const size_t hdr = offsetof(struct mam_write, text);
	const struct config *cfg = w->srv->cfg;
	struct strbuf b = STRBUF_INIT;
	struct mam_write *mw;
	size_t stanza_len, peer_off, res_off, stamp_off, holder_off = 0;
	char id[MAM_ID_LEN + 1];

	if (atomic_load(&mam_pending) >= MAM_MAX_PENDING_BYTES) {
		mam_overload();
		return NULL;
	}
	if (mam_new_id(id) < 0)
		return NULL;
	strbuf_append(&b, mam_zeros, hdr);
	stored_xml_serialize(&b, st);
	stanza_len = b.len - hdr;
	strbuf_append(&b, "", 1);
	peer_off = b.len - hdr;
	strbuf_append(&b, peer->buf, peer->domain_off + peer->domain_len);
	strbuf_append(&b, "", 1);
	res_off = b.len - hdr;
	strbuf_append(&b, peer->buf + peer->res_off, peer->res_len);
	strbuf_append(&b, "", 1);
	stamp_off = b.len - hdr;
	if (stamp_by) {
		struct xml_attr ida = { .name = "id", .value = id };
		struct xml_attr bya = { .next = &ida, .name = "by", .value = stamp_by };
		struct xml_node sid = { .ns = NS_SID, .name = "stanza-id", .attrs = &bya };

		xml_serialize(&b, &sid, XML_NS_CLIENT);
	}
	if (holder) {
		strbuf_append(&b, "", 1);
		holder_off = b.len - hdr;
		strbuf_append(&b, holder->jid, holder->jid_len);
	}
	if (b.oom) {
		strbuf_free(&b);
		return NULL;
	}
	mw = (struct mam_write *)b.data;	/* malloc'd: aligned for the header */
	memcpy(mw->id, id, sizeof(id));
	mw->req.op = STORAGE_OP_RUN;
	mw->req.run = mam_write_run;
	mw->req.done = mam_write_done;
	snprintf(mw->req.user, sizeof(mw->req.user), "%s", user);
	mw->ts = mam_now_us();
	mw->cutoff = mam_cutoff(cfg, mw->ts);
	mw->keep = cfg->max_mam_messages;
	mw->size = b.cap;
	mw->outgoing = outgoing;
	mw->self = self;
	mw->decide = stamp_by != NULL;
	mw->server_mode = mam_server_mode(cfg);
	mw->stanza_len = stanza_len;
	mw->peer_off = peer_off;
	mw->res_off = res_off;
	mw->stamp_off = stamp_off;
	mw->holder_off = holder_off;
	return mw;
}

/* Hands the write to the store; `holder` (the sender, or NULL) is acked after the commit. */
static void mam_write_submit(struct worker *w, struct mam_write *mw, struct session *holder)
{
	if (mw->holder_off && holder) {
		sm_hold_ack(holder);
		mw->req.inbox = &w->inbox;
	} else {
		mw->holder_off = 0;
	}
	atomic_fetch_add(&mam_pending, mw->size);
	METRIC_INC(w->metrics.archive_writes);
	/* Archive writes may wait a few ms so that one commit covers many. */
	mw->req.lazy = true;
	storage_queue_submit(w->srv->store, &mw->req);
}

/* The sender's session when its stream-management acks must wait for our writes. */
static struct session *mam_holder(struct conn *src)
{
	return src && src->sess && src->sess->sm ? src->sess : NULL;
}

/* ---- Hooks ---- */

/* An empty stamp for the archive of `owner` (a parsed JID; its bare part is used). */
static void mam_stamp_init(struct mam_stamp *ms, struct worker *w, const struct jid *owner)
{
	size_t len = owner->domain_off + owner->domain_len;

	ms->parent = NULL;
	ms->pending = NULL;
	ms->holder = NULL;
	ms->w = w;
	memcpy(ms->bybuf, owner->buf, len);
	ms->bybuf[len] = '\0';
}

/* Links <stanza-id xmlns='urn:xmpp:sid:0' by=owner id=id/> into st (no allocation). */
static void mam_stamp_link(struct mam_stamp *ms, struct xml_node *st, const char *id)
{
	snprintf(ms->idbuf, sizeof(ms->idbuf), "%s", id);
	ms->id = (struct xml_attr){ .name = "id", .value = ms->idbuf };
	ms->by = (struct xml_attr){ .next = &ms->id, .name = "by", .value = ms->bybuf };
	ms->node = (struct xml_node){ .ns = NS_SID, .name = "stanza-id", .attrs = &ms->by };
	xml_node_append(st, &ms->node);
	ms->parent = st;
}

/* The localpart of a JID as a string (JID_PART_MAX + 1 bytes). */
static void mam_localpart(const struct jid *j, char *out, size_t size)
{
	snprintf(out, size, "%.*s", (int)j->local_len, j->buf);
}

void mam_outbound(struct mam_stamp *ms, struct conn *c, struct xml_node *st,
		  const struct jid *from, const struct jid *to)
{
	struct session *s = c->sess;
	char user[JID_PART_MAX + 1];
	struct mam_write *mw;

	mam_stamp_init(ms, c->w, from);
	if (!s || stanza_kind(st) != STANZA_MESSAGE)
		return;
	mam_strip(st, ms->bybuf, strlen(ms->bybuf));
	/* To oneself: archived once, as incoming, when it arrives. */
	if (!to || jid_bare_equal(from, to) || !mam_archivable(st) ||
	    !mam_wanted(c->w->srv->cfg, session_account(s), to, false))
		return;
	mam_localpart(from, user, sizeof(user));
	mw = mam_write_new(c->w, st, user, to, true, false, NULL, mam_holder(c));
	if (!mw)
		return;
	/* The stamp only travels in the sent carbons (XEP-0313 5.1.2). */
	mam_stamp_link(ms, st, mw->id);
	mam_write_submit(c->w, mw, mam_holder(c));
}

/* Whether the JID is the server itself or one of its accounts (not a subdomain). */
static bool mam_is_local(const struct worker *w, const struct jid *j)
{
	const char *domain = w->srv->cfg->domain;

	return j->domain_len == strlen(domain) &&
	       memcmp(j->buf + j->domain_off, domain, j->domain_len) == 0;
}

void mam_inbound(struct mam_stamp *ms, struct worker *w, struct conn *src, struct xml_node *st,
		 const struct jid *from, const struct jid *to)
{
	struct sessdir *dir = w->sessions;
	size_t bare_len = to->domain_off + to->domain_len;
	char user[JID_PART_MAX + 1];
	struct mam_write *mw;
	struct account *a;
	bool self;

	mam_stamp_init(ms, w, to);
	if (stanza_kind(st) != STANZA_MESSAGE || !from)
		return;
	/*
	 * Routed again by the server itself (stream management, offline
	 * fetch): archived when it first came, and its stamp is ours.
	 * Stanzas from clients arrive with their connection, services'
	 * from their own domains.
	 */
	if (!router_from_local_session(w, src, st) && mam_is_local(w, from))
		return;
	mam_strip(st, ms->bybuf, bare_len);
	if (!mam_archivable(st))
		return;
	/* The router refuses anything but chat for a resource that is not there (8.5.3.2). */
	if (jid_has_resource(to) && strcmp(stanza_type(st), "chat") != 0 &&
	    !sessdir_find_full(dir, to->buf, to->len))
		return;
	self = jid_bare_equal(from, to);
	a = sessdir_find_account(dir, to->buf, bare_len);
	if (a && !mam_wanted(w->srv->cfg, a, from, self))
		return;
	mam_localpart(to, user, sizeof(user));
	/*
	 * An account not in memory (no session) has its stored preferences
	 * applied by the storage thread. The offline copy is stamped all the
	 * same; should they decline, the write takes the stamp out of it
	 * again: it is submitted after the offline store (mam_stamp_end).
	 */
	ms->holder = mam_holder(src);
	mw = mam_write_new(w, st, user, from, false, self, a ? NULL : ms->bybuf, ms->holder);
	if (!mw)
		return;
	mam_stamp_link(ms, st, mw->id);
	ms->pending = mw;
}

void mam_stamp_end(struct mam_stamp *ms)
{
	if (ms->parent) {
		xml_node_remove(&ms->node);
		ms->parent = NULL;
	}
	if (ms->pending) {
		mam_write_submit(ms->w, ms->pending, ms->holder);
		ms->pending = NULL;
	}
}

/* ---- Queries ---- */

/* Field values: an empty one counts as absent (clients send empty fields). */
static const char *mam_field_value(const struct dataform_field *fl)
{
	return fl->nvalues && fl->values[0][0] ? fl->values[0] : NULL;
}

/* Sets the parse error and returns -EINVAL. */
static int mam_query_bad(const char **condition, const char **why, const char *cond,
			 const char *text)
{
	*condition = cond;
	*why = text;
	return -EINVAL;
}

/* One field of the query form into q. 0 or -EINVAL (condition and why set). */
static int mam_query_field(struct arena *a, const struct dataform_field *fl,
			   struct mam_query *q, const char **condition, const char **why)
{
	const char *v = mam_field_value(fl);
	struct jid j;

	if (strcmp(fl->var, DATAFORM_FORM_TYPE) == 0)
		return 0;
	if (strcmp(fl->var, "with") == 0) {
		if (!v)
			return 0;
		if (jid_parse(&j, v, strlen(v)) < 0)
			return mam_query_bad(condition, why, "bad-request",
					     "'with' is not a valid JID");
		q->with = arena_strdup(a, j.buf);
		q->with_full = jid_has_resource(&j);
		return q->with ? 0 : -ENOMEM;
	}
	if (strcmp(fl->var, "start") == 0 || strcmp(fl->var, "end") == 0) {
		bool start = fl->var[0] == 's';

		if (v && mam_datetime_parse(v, start ? &q->start : &q->end) < 0)
			return mam_query_bad(condition, why, "bad-request", start ?
					     "'start' is not a XEP-0082 date and time" :
					     "'end' is not a XEP-0082 date and time");
		return 0;
	}
	if (strcmp(fl->var, "after-id") == 0 || strcmp(fl->var, "before-id") == 0) {
		if (v && strlen(v) > RSM_UID_MAX)
			return mam_query_bad(condition, why, "bad-request", "archive UID too long");
		if (fl->var[0] == 'a')
			q->after_id = v;
		else
			q->before_id = v;
		return 0;
	}
	if (strcmp(fl->var, "ids") == 0) {
		if (fl->nvalues > MAM_IDS_MAX)
			return mam_query_bad(condition, why, "bad-request", "too many 'ids'");
		for (size_t i = 0; i < fl->nvalues; i++)
			if (!fl->values[i][0] || strlen(fl->values[i]) > RSM_UID_MAX)
				return mam_query_bad(condition, why, "bad-request",
						     "an 'ids' value is empty or too long");
		q->ids = fl->values;
		q->nids = fl->nvalues;
		return 0;
	}
	/* XEP-0313 4.1.1: a field the server does not know. */
	return mam_query_bad(condition, why, "feature-not-implemented", "unknown query field");
}

int mam_query_parse(struct arena *a, const struct xml_node *query, struct mam_query *out,
		    const char **condition, const char **why)
{
	struct xml_node *x;
	struct dataform form;
	int ret;

	memset(out, 0, sizeof(*out));
	out->start = INT64_MIN;
	out->end = INT64_MAX;
	*condition = "bad-request";
	*why = NULL;
	out->queryid = xml_attr_get(query, "queryid");
	if (out->queryid && strlen(out->queryid) > MAM_QUERYID_MAX)
		return mam_query_bad(condition, why, "bad-request", "queryid too long");
	/* 'node' is for pubsub archives (XEP-0442); an account's archive has none. */
	if (xml_attr_get(query, "node"))
		return mam_query_bad(condition, why, "feature-not-implemented",
				     "this archive has no nodes");
	ret = rsm_parse(a, query, &out->rsm, why);
	if (ret < 0)
		return ret;
	out->flip = xml_child(query, NS_MAM, "flip-page") != NULL;
	x = dataform_find(query, NULL);
	if (x) {
		ret = dataform_parse(a, x, &form, why);
		if (ret == -ENOMEM)
			return ret;
		if (ret < 0)
			return -EINVAL;
		if (form.type != DATAFORM_SUBMIT)
			return mam_query_bad(condition, why, "bad-request",
					     "the query form must be of type 'submit'");
		if (form.form_type && strcmp(form.form_type, NS_MAM) != 0)
			return mam_query_bad(condition, why, "bad-request",
					     "FORM_TYPE must be urn:xmpp:mam:2");
		for (size_t i = 0; i < form.nfields; i++) {
			if (!form.fields[i].var)
				continue;	/* a fixed field: nothing to read */
			ret = mam_query_field(a, &form.fields[i], out, condition, why);
			if (ret < 0)
				return ret;
		}
	}
	out->max = rsm_page_size(&out->rsm, MAM_PAGE_DEFAULT, MAM_PAGE_MAX);
	return 0;
}

/* Appends s escaped for a single-quoted attribute (TAB, LF, CR kept as references). */
static void mam_put_attr(struct strbuf *out, const char *s)
{
	for (const char *p = s; *p;) {
		size_t n = strcspn(p, "\t\n\r");

		strbuf_append_xml_escaped(out, p, n);
		p += n;
		if (*p) {
			strbuf_printf(out, "&#%d;", *p);
			p++;
		}
	}
}

void mam_result_serialize(struct strbuf *out, const char *to, const char *from,
			  const char *queryid, const char *id, int64_t ts_us, const char *stanza,
			  size_t stanza_len)
{
	char stamp[MAM_DATETIME_MAX];

	mam_datetime_format(ts_us, stamp);
	strbuf_puts(out, "<message to='");
	mam_put_attr(out, to);
	if (from) {
		strbuf_puts(out, "' from='");
		mam_put_attr(out, from);
	}
	strbuf_puts(out, "'><result xmlns='" NS_MAM "'");
	if (queryid) {
		strbuf_puts(out, " queryid='");
		mam_put_attr(out, queryid);
		strbuf_puts(out, "'");
	}
	strbuf_puts(out, " id='");
	mam_put_attr(out, id);
	strbuf_puts(out, "'><forwarded xmlns='" MAM_NS_FORWARD "'><delay xmlns='" MAM_NS_DELAY
		    "' stamp='");
	strbuf_puts(out, stamp);
	strbuf_puts(out, "'/>");
	strbuf_append(out, stanza, stanza_len);
	strbuf_puts(out, "</forwarded></result></message>");
}

/* A query on its way through the store and back. */
struct mam_query_op {
	struct iq_async a;		/* first */
	/* in */
	struct mam_filter f;		/* the form's selection; peer/resource point below */
	int64_t alive_after;		/* retention: only ts > this exists */
	uint32_t max, index, byte_limit;
	bool has_index, backwards, flip;
	const char *after_id, *before_id;	/* form fields, into text[] (or NULL) */
	const char *rsm_after, *rsm_before;	/* RSM; rsm_before "" = the last page */
	size_t nids;			/* 'ids' values, NUL-separated in text[] */
	const char *ids;
	char peer[JID_MAX];
	char resource[JID_PART_MAX + 1];
	char queryid[MAM_QUERYID_MAX + 1];
	bool has_queryid;
	/* out */
	struct strbuf rows;		/* struct mam_row_rec, id \0, stanza \0 per row */
	uint32_t nrows, count, first_index;
	bool more;			/* the page was cut: not complete */
	int64_t oldest;			/* ts of the oldest row taken */
	char text[];
};

/*
 * A row in op->rows: the id and the stanza follow it, each NUL-terminated,
 * then zeros up to the next multiple of 8, where the next row starts.
 */
struct mam_row_rec {
	int64_t ts;
	uint32_t id_len, len;
};

/* Bytes one row takes in op->rows. */
static size_t mam_rec_size(const struct mam_row_rec *r)
{
	return (sizeof(*r) + r->id_len + 1 + r->len + 1 + 7) & ~(size_t)7;
}

/* Takes a row into the page unless it is full (by count or bytes): then stops. */
static int mam_collect(void *arg, const struct mam_row *row)
{
	struct mam_query_op *op = arg;
	struct mam_row_rec rec = { row->ts, (uint32_t)strlen(row->id), (uint32_t)row->len };

	if (op->nrows == op->max || (op->nrows && op->rows.len + row->len > op->byte_limit)) {
		op->more = true;
		return 1;
	}
	strbuf_append(&op->rows, &rec, sizeof(rec));
	strbuf_append(&op->rows, row->id, rec.id_len + 1);
	strbuf_append(&op->rows, row->stanza, row->len);
	strbuf_append(&op->rows, "\0\0\0\0\0\0\0", 1 + (mam_rec_size(&rec) - sizeof(rec) -
								rec.id_len - 1 - rec.len - 1));
	if (op->rows.oom)
		return -ENOMEM;
	if (!op->nrows || row->ts < op->oldest)
		op->oldest = row->ts;
	op->nrows++;
	return 0;
}

/* Whether a row fetched by id passes the rest of the query (ids mode). */
static bool mam_row_matches(const struct mam_filter *f, const struct mam_row *row)
{
	if (row->ts <= f->lo || row->ts >= f->hi)
		return false;
	if (f->peer && strcmp(row->peer, f->peer) != 0)
		return false;
	return !f->resource || strcmp(row->resource, f->resource) == 0;
}

/* mam_collect for rows fetched by UID: only those the rest of the query selects count. */
static int mam_collect_matching(void *arg, const struct mam_row *row)
{
	struct mam_query_op *op = arg;

	if (!mam_row_matches(&op->f, row))
		return 0;
	op->count++;
	return op->more ? 0 : (mam_collect(op, row) < 0 ? -ENOMEM : 0);
}

/* Narrows (lo) or (hi) to the ts of archive entry id. 0, -ENOENT, -errno. */
static int mam_bound(struct storage *st, const struct mam_query_op *op, const char *id,
		     int64_t *bound, bool lower)
{
	int64_t ts;
	int ret = mam_db_lookup(st, op->a.req.user, id, op->alive_after, &ts);

	if (ret < 0)
		return ret;
	if (lower ? ts > *bound : ts < *bound)
		*bound = ts;
	return 0;
}

struct mam_id_ts {
	int64_t ts;
	const char *id;
};

/* qsort order of UIDs: by their archive time. */
static int mam_id_ts_cmp(const void *x, const void *y)
{
	const struct mam_id_ts *a = x, *b = y;

	return a->ts < b->ts ? -1 : a->ts > b->ts;
}

/* The 'ids' form: exactly those entries (each must exist), in archive order. */
static int mam_query_ids(struct storage *st, struct mam_query_op *op)
{
	struct mam_id_ts v[MAM_IDS_MAX];
	const char *id = op->ids;
	size_t n = 0;
	int ret;

	for (size_t i = 0; i < op->nids; i++, id += strlen(id) + 1) {
		bool dup = false;
		int64_t ts;

		ret = mam_db_lookup(st, op->a.req.user, id, op->alive_after, &ts);
		if (ret < 0)
			return ret;
		for (size_t k = 0; k < n; k++)
			dup = dup || v[k].ts == ts;
		if (!dup)
			v[n++] = (struct mam_id_ts){ ts, id };
	}
	qsort(v, n, sizeof(v[0]), mam_id_ts_cmp);
	for (size_t i = 0; i < n; i++) {
		ret = mam_db_get(st, op->a.req.user, v[i].id, op->alive_after, mam_collect_matching,
				 op);
		if (ret < 0)
			return ret;
	}
	op->first_index = 0;
	return 0;
}

/*
 * Storage thread: the form's bounds, then either the 'ids' entries or
 * one page (page size + 1 rows in the paging direction: the extra one
 * says whether the page is complete), the count of the whole selection
 * and the position of the page in it.
 */
static int mam_query_run(struct storage *st, struct storage_req *req)
{
	struct mam_query_op *op = (struct mam_query_op *)req;
	struct mam_filter page, before;
	int ret;

	if (op->after_id && (ret = mam_bound(st, op, op->after_id, &op->f.lo, true)) < 0)
		return ret;
	if (op->before_id && (ret = mam_bound(st, op, op->before_id, &op->f.hi, false)) < 0)
		return ret;
	if (op->nids)
		return mam_query_ids(st, op);
	page = op->f;
	if (op->rsm_after && (ret = mam_bound(st, op, op->rsm_after, &page.lo, true)) < 0)
		return ret;
	if (op->rsm_before && op->rsm_before[0] &&
	    (ret = mam_bound(st, op, op->rsm_before, &page.hi, false)) < 0)
		return ret;
	ret = mam_db_count(st, req->user, &op->f, &op->count);
	if (ret < 0)
		return ret;
	if (op->max == 0) {
		op->more = op->count > 0;	/* XEP-0059 2.7: just the count */
		return 0;
	}
	ret = mam_db_page(st, req->user, &page, op->backwards, op->max + 1,
			  op->has_index ? op->index : 0, mam_collect, op);
	if (ret < 0 || !op->nrows)
		return ret;
	before = op->f;
	before.hi = op->oldest;
	return mam_db_count(st, req->user, &before, &op->first_index);
}

/*
 * One result to the session: prepared bytes under a bare shell for the
 * delivery filters, or a tree for a session that stream management holds
 * detached (its queue keeps what the tree serializes to).
 */
static void mam_deliver(struct worker *w, struct session *s, struct xml_node *shell,
			const struct strbuf *b)
{
	struct xml_node *m;
	struct arena a;

	if (s->conn) {
		router_deliver_prepared(s, shell, NULL, b->data, b->len);
		return;
	}
	arena_init(&a, 4096);
	m = stored_xml_parse(w->xml, &a, b->data, b->len);
	if (m)
		router_deliver(s, m);
	else
		log_warn("mam.result_dropped", "jid=%s err=%d", s->jid, errno);
	arena_release(&a);
}

/* The results, then the <fin/> (XEP-0313 4.2, 4.3). */
static void mam_query_answer(struct worker *w, struct session *s, struct mam_query_op *op)
{
	struct arena *a = iq_async_arena(&op->a);
	const char *from = op->a.to[0] ? op->a.to : NULL;
	const char *queryid = op->has_queryid ? op->queryid : NULL;
	const struct mam_row_rec *recs[MAM_PAGE_MAX + 1];
	struct strbuf out = STRBUF_INIT;
	struct xml_node *shell, *fin;
	struct rsm_reply rr = { .has_count = true, .count = op->count };
	const char *p = op->rows.data;
	uint32_t n = op->nrows;

	/* Rows came newest first when paging backwards; results go oldest first. */
	for (uint32_t i = 0; i < n; i++) {
		const struct mam_row_rec *r = (const struct mam_row_rec *)p;
		uint32_t k = op->backwards && !op->nids ? n - 1 - i : i;

		recs[k] = r;
		p += mam_rec_size(r);
	}
	shell = xml_node_new(a, XML_NS_CLIENT, "message");
	if (!shell || xml_attr_set(a, shell, "to", op->a.from) < 0 ||
	    (from && xml_attr_set(a, shell, "from", from) < 0)) {
		iq_async_error(&op->a, s, "internal-server-error", NULL);
		return;
	}
	for (uint32_t i = 0; i < n; i++) {
		const struct mam_row_rec *r = recs[op->flip ? n - 1 - i : i];
		const char *id = (const char *)(r + 1);

		strbuf_clear(&out);
		mam_result_serialize(&out, op->a.from, from, queryid, id, r->ts,
				     id + r->id_len + 1, r->len);
		if (out.oom)
			break;
		mam_deliver(w, s, shell, &out);
	}
	strbuf_free(&out);
	if (n) {
		/* RSM first/last follow the archive order, flipped page or not. */
		rr.first = (const char *)(recs[0] + 1);
		rr.last = (const char *)(recs[n - 1] + 1);
		/*
		 * No index on a backwards page: slixmpp (1.8) ends a reverse
		 * iteration as soon as index + page == count, which holds for
		 * the first page backwards; the index is optional (XEP-0313 4.3).
		 */
		rr.has_index = !op->backwards || op->nids;
		rr.index = op->first_index;
	}
	fin = xml_node_new(a, NS_MAM, "fin");
	if (!fin || (queryid && xml_attr_set(a, fin, "queryid", queryid) < 0) ||
	    (!op->more && xml_attr_set(a, fin, "complete", "true") < 0) ||
	    !rsm_build(a, fin, &rr)) {
		iq_async_error(&op->a, s, "internal-server-error", NULL);
		return;
	}
	iq_async_result(&op->a, s, fin);
}

/* Worker: answers the query (results and fin, or the error), if the requester is still there. */
static void mam_query_done(struct storage_req *req)
{
	struct mam_query_op *op = (struct mam_query_op *)req;
	struct session *s = iq_async_session(&op->a);

	if (req->result < 0 && req->result != -ENOENT)
		log_warn("mam.query_failed", "user=%s err=%d", req->user, req->result);
	if (!s)
		goto out;
	if (req->result == -ENOENT)
		iq_async_error(&op->a, s, "item-not-found", "no such message in the archive");
	else if (req->result < 0)
		iq_async_error(&op->a, s, "internal-server-error", NULL);
	else
		mam_query_answer(iq_async_worker(&op->a), s, op);
out:
	strbuf_free(&op->rows);
	iq_async_free(&op->a);
}

/* Copies s (NUL included) to *p and advances it; returns the copy. */
static const char *mam_put_text(char **p, const char *s)
{
	char *at = *p;
	size_t n = strlen(s) + 1;

	memcpy(at, s, n);
	*p += n;
	return at;
}

/* Bytes the query's UIDs take in op->text. */
static size_t mam_query_text_size(const struct mam_query *q)
{
	size_t n = 0;

	n += q->after_id ? strlen(q->after_id) + 1 : 0;
	n += q->before_id ? strlen(q->before_id) + 1 : 0;
	n += q->rsm.after ? strlen(q->rsm.after) + 1 : 0;
	n += q->rsm.before ? strlen(q->rsm.before) + 1 : 0;
	for (size_t i = 0; i < q->nids; i++)
		n += strlen(q->ids[i]) + 1;
	return n;
}

/* Only the owner reads an archive (XEP-0313 section 9): others are refused. */
void mam_foreign(struct iq_request *rq)
{
	iq_reply_error(rq, "forbidden", "only the account itself may use its archive");
}

/*
 * An archive query: parsed here (errors answered at once), bounds made
 * exclusive and floored by the retention, UIDs copied into the request,
 * the rest on the storage thread (mam_query_run) and back (mam_query_done).
 */
void mam_query_set(struct iq_request *rq)
{
	const struct config *cfg = rq->w->srv->cfg;
	const char *condition, *why;
	struct mam_query q;
	struct mam_query_op *op;
	char user[JID_PART_MAX + 1];
	struct jid with;
	int64_t cutoff;
	char *p;
	int ret;

	if (rq->scope != IQ_SCOPE_ACCOUNT) {
		mam_foreign(rq);
		return;
	}
	ret = mam_query_parse(iq_arena(rq), rq->payload, &q, &condition, &why);
	if (ret < 0) {
		iq_reply_error(rq, ret == -ENOMEM ? "internal-server-error" : condition, why);
		return;
	}
	mam_localpart(rq->from, user, sizeof(user));
	op = iq_async_new(rq, sizeof(*op) + mam_query_text_size(&q), user, NS_MAM, "query",
			  mam_query_run, mam_query_done);
	if (!op)
		return;
	cutoff = mam_cutoff(cfg, mam_now_us());
	op->alive_after = mam_alive_after(cutoff);
	/* Bounds are exclusive: start and end are inclusive, retention is a floor. */
	op->f.lo = q.start == INT64_MIN ? INT64_MIN : q.start - 1;
	if (op->f.lo < op->alive_after)
		op->f.lo = op->alive_after;
	op->f.hi = q.end == INT64_MAX ? INT64_MAX : q.end + 1;
	if (q.with && jid_parse(&with, q.with, strlen(q.with)) == 0) {
		snprintf(op->peer, sizeof(op->peer), "%.*s",
			 (int)(with.domain_off + with.domain_len), with.buf);
		op->f.peer = op->peer;
		if (q.with_full) {
			snprintf(op->resource, sizeof(op->resource), "%.*s", (int)with.res_len,
				 with.buf + with.res_off);
			op->f.resource = op->resource;
		}
	}
	op->max = q.max;
	op->has_index = q.rsm.has_index;
	op->index = q.rsm.index;
	op->backwards = rsm_backwards(&q.rsm);
	op->flip = q.flip;
	op->byte_limit = cfg->max_output_bytes / 4 < MAM_PAGE_MAX_BYTES ?
			 cfg->max_output_bytes / 4 : MAM_PAGE_MAX_BYTES;
	if (q.queryid) {
		snprintf(op->queryid, sizeof(op->queryid), "%s", q.queryid);
		op->has_queryid = true;
	}
	p = op->text;
	op->after_id = q.after_id ? mam_put_text(&p, q.after_id) : NULL;
	op->before_id = q.before_id ? mam_put_text(&p, q.before_id) : NULL;
	op->rsm_after = q.rsm.after ? mam_put_text(&p, q.rsm.after) : NULL;
	op->rsm_before = q.rsm.before ? mam_put_text(&p, q.rsm.before) : NULL;
	op->ids = p;
	op->nids = q.nids;
	for (size_t i = 0; i < q.nids; i++)
		mam_put_text(&p, q.ids[i]);
	iq_async_submit(rq, &op->a);
}

/* The query form (XEP-0313 4.1.1): every field a query may carry. */
void mam_query_get(struct iq_request *rq)
{
	static const char *const text_fields[] = { "start", "end", "after-id", "before-id" };
	struct arena *a = iq_arena(rq);
	struct xml_node *q, *x, *ids, *v;

	if (rq->scope != IQ_SCOPE_ACCOUNT) {
		mam_foreign(rq);
		return;
	}
	q = xml_node_new(a, NS_MAM, "query");
	x = q ? dataform_new(a, DATAFORM_FORM, NS_MAM) : NULL;
	if (!x || !dataform_add_field(a, x, DATAFORM_FIELD_JID_SINGLE, "with", NULL))
		goto oom;
	xml_node_append(q, x);
	for (size_t i = 0; i < sizeof(text_fields) / sizeof(text_fields[0]); i++)
		if (!dataform_add_field(a, x, DATAFORM_FIELD_TEXT_SINGLE, text_fields[i], NULL))
			goto oom;
	/* 'ids' takes any values (XEP-0122 open validation), never a list of them all. */
	ids = dataform_add_field(a, x, DATAFORM_FIELD_LIST_MULTI, "ids", NULL);
	v = ids ? xml_node_add_child(a, ids, MAM_NS_XDATA_VALIDATE, "validate") : NULL;
	if (!v || xml_attr_set(a, v, "datatype", "xs:string") < 0 ||
	    !xml_node_add_child(a, v, MAM_NS_XDATA_VALIDATE, "open"))
		goto oom;
	iq_reply_result(rq, q);
	return;
oom:
	iq_reply_error(rq, "internal-server-error", NULL);
}

/* ---- Metadata (XEP-0313 6) ---- */

struct mam_meta_op {
	struct iq_async a;		/* first */
	int64_t alive_after;
	unsigned n;			/* rows seen: 0 (empty archive) or 2 */
	int64_t ts[2];
	char id[2][RSM_UID_MAX + 1];
};

/* The first and the last entry, in that order (mam_db_bounds). */
static int mam_meta_row(void *arg, const struct mam_row *row)
{
	struct mam_meta_op *op = arg;

	if (op->n < 2) {
		op->ts[op->n] = row->ts;
		snprintf(op->id[op->n], sizeof(op->id[0]), "%s", row->id);
		op->n++;
	}
	return 0;
}

/* Storage thread: the oldest and newest live entries. */
static int mam_meta_run(struct storage *st, struct storage_req *req)
{
	struct mam_meta_op *op = (struct mam_meta_op *)req;

	return mam_db_bounds(st, req->user, op->alive_after, mam_meta_row, op);
}

/* Worker: <metadata> with <start/> and <end/>, or empty for an empty archive. */
static void mam_meta_done(struct storage_req *req)
{
	struct mam_meta_op *op = (struct mam_meta_op *)req;
	struct session *s = iq_async_session(&op->a);
	struct arena *a = iq_async_arena(&op->a);
	static const char *const names[2] = { "start", "end" };
	struct xml_node *m;

	if (!s)
		goto out;
	if (req->result < 0) {
		log_warn("mam.metadata_failed", "user=%s err=%d", req->user, req->result);
		iq_async_error(&op->a, s, "internal-server-error", NULL);
		goto out;
	}
	m = xml_node_new(a, NS_MAM, "metadata");
	/* An empty archive: an empty element (XEP-0313 1.1.0). */
	for (unsigned i = 0; m && op->n == 2 && i < 2; i++) {
		struct xml_node *el = xml_node_add_child(a, m, NULL, names[i]);
		char stamp[MAM_DATETIME_MAX];

		mam_datetime_format(op->ts[i], stamp);
		if (!el || xml_attr_set(a, el, "id", op->id[i]) < 0 ||
		    xml_attr_set(a, el, "timestamp", stamp) < 0)
			m = NULL;
	}
	if (m)
		iq_async_result(&op->a, s, m);
	else
		iq_async_error(&op->a, s, "internal-server-error", NULL);
out:
	iq_async_free(&op->a);
}

void mam_metadata_get(struct iq_request *rq)
{
	char user[JID_PART_MAX + 1];
	struct mam_meta_op *op;

	if (rq->scope != IQ_SCOPE_ACCOUNT) {
		mam_foreign(rq);
		return;
	}
	mam_localpart(rq->from, user, sizeof(user));
	op = iq_async_new(rq, sizeof(*op), user, NS_MAM, "metadata", mam_meta_run, mam_meta_done);
	if (!op)
		return;
	op->alive_after = mam_alive_after(mam_cutoff(rq->w->srv->cfg, mam_now_us()));
	iq_async_submit(rq, &op->a);
}

/* ---- Preferences (XEP-0441) ---- */

/* <prefs default=MODE><always><jid/>...</always><never>...</never></prefs>. NULL on ENOMEM. */
static struct xml_node *mam_prefs_element(struct arena *a, enum mam_mode mode, const char *always,
					  const char *never)
{
	struct xml_node *p = xml_node_new(a, NS_MAM, "prefs");
	const char *lists[2] = { always, never };
	static const char *const names[2] = { "always", "never" };

	if (!p || xml_attr_set(a, p, "default", mam_mode_name(mode)) < 0)
		return NULL;
	for (int i = 0; i < 2; i++) {
		struct xml_node *l = xml_node_add_child(a, p, NULL, names[i]);

		if (!l)
			return NULL;
		for (const char *s = lists[i]; s && *s;) {
			const char *e = strchr(s, '\n');
			size_t n = e ? (size_t)(e - s) : strlen(s);
			struct xml_node *j = xml_node_add_child(a, l, NULL, "jid");

			if (!j || xml_node_add_text(a, j, s, n) < 0)
				return NULL;
			s = e ? e + 1 : NULL;
		}
	}
	return p;
}

/* XEP-0441 get: from memory (the requester's account is loaded), the server default if none. */
void mam_prefs_get(struct iq_request *rq)
{
	const struct account *acct = rq->conn->sess ? session_account(rq->conn->sess) : NULL;
	const struct mam_prefs *p = acct ? acct->mam_prefs : NULL;
	struct xml_node *el;

	if (rq->scope != IQ_SCOPE_ACCOUNT) {
		mam_foreign(rq);
		return;
	}
	el = mam_prefs_element(iq_arena(rq), p ? p->mode : mam_server_mode(rq->w->srv->cfg),
			       p ? p->always : "", p ? p->never : "");
	if (el)
		iq_reply_result(rq, el);
	else
		iq_reply_error(rq, "internal-server-error", NULL);
}

struct mam_prefs_op {
	struct iq_async a;		/* first */
	enum mam_mode mode;
	const char *always, *never;	/* into text[] */
	char text[];
};

/* Storage thread: the new preferences replace the stored ones. */
static int mam_prefs_run(struct storage *st, struct storage_req *req)
{
	struct mam_prefs_op *op = (struct mam_prefs_op *)req;

	return mam_db_prefs_put(st, req->user, op->mode, op->always, op->never);
}

/* Stored: the account's sessions use the new preferences from now on. */
static void mam_prefs_done(struct storage_req *req)
{
	struct mam_prefs_op *op = (struct mam_prefs_op *)req;
	struct worker *w = iq_async_worker(&op->a);
	struct session *s = iq_async_session(&op->a);
	const char *slash = strchr(op->a.from, '/');
	size_t bare_len = slash ? (size_t)(slash - op->a.from) : strlen(op->a.from);
	struct account *acct;
	struct xml_node *el;

	if (req->result < 0) {
		log_warn("mam.prefs_failed", "user=%s err=%d", req->user, req->result);
		if (s)
			iq_async_error(&op->a, s, "internal-server-error", NULL);
		goto out;
	}
	acct = sessdir_find_account(w->sessions, op->a.from, bare_len);
	if (acct) {
		struct mam_prefs *np = mam_prefs_new(op->mode, op->always, op->never);

		if (np) {
			mam_prefs_free(acct->mam_prefs);
			acct->mam_prefs = np;
		} else {
			log_error("mam.prefs_failed", "user=%s msg=\"out of memory\"", req->user);
		}
	}
	if (!s)
		goto out;
	el = mam_prefs_element(iq_async_arena(&op->a), op->mode, op->always, op->never);
	if (el)
		iq_async_result(&op->a, s, el);
	else
		iq_async_error(&op->a, s, "internal-server-error", NULL);
out:
	iq_async_free(&op->a);
}

/*
 * The JIDs of one list element (<always/> or <never/>) normalized and
 * joined by '\n' into b. 0, or -EINVAL (why set), -E2BIG past the limit.
 */
static int mam_prefs_list(struct arena *a, const struct xml_node *list, struct strbuf *b,
			  size_t *count, const char **why)
{
	for (const struct xml_node *j = xml_first_element(list); j; j = xml_next_element(j)) {
		const char *text;
		struct jid jid;

		if (strcmp(j->ns, NS_MAM) != 0 || strcmp(j->name, "jid") != 0)
			continue;
		text = xml_text(a, j);
		if (!text || jid_parse(&jid, text, strlen(text)) < 0) {
			*why = "not a valid JID in the preferences";
			return -EINVAL;
		}
		if (++*count > MAM_PREFS_MAX_JIDS) {
			*why = "too many JIDs in the preferences";
			return -E2BIG;
		}
		if (b->len)
			strbuf_append(b, "\n", 1);
		strbuf_append(b, jid.buf, jid.len);
	}
	return 0;
}

/*
 * XEP-0441 set: a known default and valid JIDs (normalized, at most
 * MAM_PREFS_MAX_JIDS), stored, then in effect and echoed back.
 */
void mam_prefs_set(struct iq_request *rq)
{
	enum mam_mode mode = mam_mode_parse(xml_attr_get(rq->payload, "default"));
	struct strbuf lists[2] = { STRBUF_INIT, STRBUF_INIT };
	static const char *const names[2] = { "always", "never" };
	char user[JID_PART_MAX + 1];
	struct mam_prefs_op *op;
	const char *why = NULL;
	size_t count = 0;
	char *p;
	int ret = 0;

	if (rq->scope != IQ_SCOPE_ACCOUNT) {
		mam_foreign(rq);
		return;
	}
	if (mode == MAM_MODE_SERVER) {
		iq_reply_error(rq, "bad-request", "'default' must be always, roster or never");
		return;
	}
	for (int i = 0; i < 2 && ret == 0; i++) {
		const struct xml_node *l = xml_child(rq->payload, NS_MAM, names[i]);

		if (l)
			ret = mam_prefs_list(iq_arena(rq), l, &lists[i], &count, &why);
	}
	if (ret == 0 && (lists[0].oom || lists[1].oom))
		ret = -ENOMEM;
	if (ret < 0) {
		iq_reply_error(rq, ret == -E2BIG ? "not-acceptable" : ret == -ENOMEM ?
			       "internal-server-error" : "bad-request", why);
		goto out;
	}
	mam_localpart(rq->from, user, sizeof(user));
	op = iq_async_new(rq, sizeof(*op) + lists[0].len + lists[1].len + 2, user, NS_MAM, "prefs",
			  mam_prefs_run, mam_prefs_done);
	if (!op)
		goto out;
	op->mode = mode;
	p = op->text;
	op->always = mam_put_text(&p, lists[0].data ? lists[0].data : "");
	op->never = mam_put_text(&p, lists[1].data ? lists[1].data : "");
	iq_async_submit(rq, &op->a);
out:
	strbuf_free(&lists[0]);
	strbuf_free(&lists[1]);
}
