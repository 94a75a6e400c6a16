/* SPDX-License-Identifier: MIT */
/*
 * XEP-0324 provisioning at provisioning.DOMAIN and its enforcement in
 * routing (see provisioning.h for what it does; iot_rules.c decides,
 * this file applies the decisions to stanzas, keeps the state and talks
 * to owners and things).
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <openssl/crypto.h>

#include "cluster.h"
#include "config.h"
#include "conn.h"
#include "iot_rules.h"
#include "iot_roster.h"
#include "iot_store.h"
#include "iq.h"
#include "iq_async.h"
#include "jid.h"
#include "log.h"
#include "prov_tokens.h"
#include "provisioning.h"
#include "registry.h"
#include "roster.h"
#include "router.h"
#include "sasl.h"
#include "server.h"
#include "session.h"
#include "stanza.h"
#include "storage.h"
#include "stored_xml.h"
#include "worker.h"

#define PROV_BUCKETS_MIN	64
#define PROV_ARENA_CHUNK	4096
#define PROV_KEY_BYTES		8	/* random bytes of a question's key (hex) */
#define PROV_DEVICES_DEFAULT	20	/* getDevices without maxCount */
#define PROV_DEVICES_MAX	100	/* getDevices maxCount cap */
#define PROV_RESULT_MAX_BYTES	(64 * 1024)	/* a getDevices answer stops growing here */

/* A provisioned thing: owner and rules (newest first). */
struct prov_thing {
	struct prov_thing *hnext;
	struct iot_rule *rules;
	unsigned nrules;
	bool clear_pending;		/* a clearCache waits for the thing to come online */
	char *owner;			/* malloc'd bare JID */
	size_t jid_len;
	char jid[];
};

/* A question asked recently (not asked again before PROV_QUESTION_INTERVAL). */
struct prov_question {
	uint64_t hash;
	int64_t at;
};

/* An IoT iq delivered to a bare JID's resource: its answer gets the bare 'from' back. */
struct prov_bare_iq {
	int64_t expires;
	char *id;		/* into buf */
	char *requester;	/* full JID the answer goes to */
	char *device;		/* full JID the request went to */
	size_t bare_len;	/* device[0..bare_len) is the bare JID */
	char buf[];
};

/*
 * The things at home on one worker (worker_home of the thing's JID), with
 * that worker's questions and bare-JID iqs: routing reads a thing where
 * its sessions are, the stanzas for it being routed there. Each part is
 * used by its own worker only; the service (worker 0) changes things at
 * home elsewhere by posting them a prov_update.
 */
struct prov_part {
	struct prov_thing **buckets;
	size_t nbuckets, count;
	struct prov_question questions[PROV_QUESTIONS_MAX];
	unsigned next_question;
	struct prov_bare_iq *bare[PROV_BARE_IQS_MAX];
	unsigned nbare;
};

static struct {
	bool enabled;
	char domain[JID_MAX];		/* provisioning.DOMAIN */
	const struct server *srv;	/* for worker_home() */
	struct prov_part *parts;	/* one per worker */
	unsigned nparts;
	uint64_t seed;
	_Atomic uint64_t counter;	/* ids of the service's own stanzas (all workers) */
} prov;

/*
 * A change of a thing made by the service (worker 0) or the control
 * socket, for the thing's home worker, where its table entry is: owned
 * (a claim), released (disowned, unregistered), a rule stored, rules
 * deleted, a clearCache from the owner, an enrollment to read again.
 */
enum prov_update_kind {
	PROV_UP_OWNED,
	PROV_UP_RELEASED,
	PROV_UP_RULE,
	PROV_UP_DELETED,
	PROV_UP_CLEAR,
	PROV_UP_REFRESH,
	PROV_UP_RELOAD,
};

static int prov_post_update(struct worker *w, unsigned home, int kind, const char *thing,
			    const char *owner, struct iot_rule *rule, char *nodes);

static const char *const control_params[] = {
	"boolean", "color", "date", "dateTime", "double", "duration", "int", "long", "string",
	"time",
};

/* ---- The table of provisioned things ---- */

/*
 * FNV-1a with a random seed mixed in: thing JIDs are chosen by users, who
 * could otherwise aim at one bucket.
 */
static uint64_t prov_hash(const char *s, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ prov.seed;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* The worker where a thing (bare JID) is at home: its part of the table. */
static unsigned prov_home(const char *bare)
{
	return prov.nparts > 1 ? worker_home(prov.srv, bare) : 0;
}

/* The part of the table of the calling worker, or NULL (not set up). */
static struct prov_part *prov_at(const struct worker *w)
{
	return prov.parts && w->id < prov.nparts ? &prov.parts[w->id] : NULL;
}

/* The provisioned thing with bare JID jid[0..len) in part p, or NULL. */
static struct prov_thing *prov_find_len(struct prov_part *p, const char *jid, size_t len)
{
	if (!p || !p->buckets)
		return NULL;
	for (struct prov_thing *t = p->buckets[prov_hash(jid, len) & (p->nbuckets - 1)]; t;
	     t = t->hnext)
		if (t->jid_len == len && memcmp(t->jid, jid, len) == 0)
			return t;
	return NULL;
}

static struct prov_thing *prov_find(struct prov_part *p, const char *jid)
{
	return prov_find_len(p, jid, strlen(jid));
}

const char *provisioning_owner(struct worker *w, const char *thing)
{
	struct prov_thing *t = prov_find(prov_at(w), thing);

	return t ? t->owner : NULL;
}

/* Frees a thing, its rules and its owner string (not unlinked here). */
static void prov_thing_free(struct prov_thing *t)
{
	while (t->rules) {
		struct iot_rule *r = t->rules;

		t->rules = r->next;
		free(r);
	}
	free(t->owner);
	free(t);
}

/* Doubles the bucket array (at load 1). Failure keeps the old one: chains just grow. */
static void prov_grow(struct prov_part *p)
{
	size_t n = p->nbuckets ? p->nbuckets * 2 : PROV_BUCKETS_MIN;
	struct prov_thing **b = calloc(n, sizeof(*b));

	if (!b)
		return;
	for (size_t i = 0; i < p->nbuckets; i++) {
		for (struct prov_thing *t = p->buckets[i], *next; t; t = next) {
			uint64_t h = prov_hash(t->jid, t->jid_len) & (n - 1);

			next = t->hnext;
			t->hnext = b[h];
			b[h] = t;
		}
	}
	free(p->buckets);
	p->buckets = b;
	p->nbuckets = n;
}

/* The thing, created when absent, with this owner. NULL on ENOMEM. */
static struct prov_thing *prov_put(struct prov_part *p, const char *jid, const char *owner)
{
	size_t len = strlen(jid);
	struct prov_thing *t = prov_find_len(p, jid, len);
	char *o = p ? strdup(owner) : NULL;
	uint64_t h;

	if (!o)
		return NULL;
	if (t) {
		free(t->owner);
		t->owner = o;
		return t;
	}
	if (p->count >= p->nbuckets)
		prov_grow(p);
	if (!p->buckets) {
		free(o);
		return NULL;
	}
	t = calloc(1, sizeof(*t) + len + 1);
	if (!t) {
		free(o);
		return NULL;
	}
	memcpy(t->jid, jid, len + 1);
	t->jid_len = len;
	t->owner = o;
	h = prov_hash(jid, len) & (p->nbuckets - 1);
	t->hnext = p->buckets[h];
	p->buckets[h] = t;
	p->count++;
	return t;
}

/* Removes a thing (and its rules) from the table; unknown JIDs are fine. */
static void prov_del(struct prov_part *p, const char *jid)
{
	size_t len = strlen(jid);
	struct prov_thing **pp;

	if (!p || !p->buckets)
		return;
	for (pp = &p->buckets[prov_hash(jid, len) & (p->nbuckets - 1)]; *pp;
	     pp = &(*pp)->hnext) {
		if ((*pp)->jid_len == len && memcmp((*pp)->jid, jid, len) == 0) {
			struct prov_thing *t = *pp;

			*pp = t->hnext;
			prov_thing_free(t);
			p->count--;
			return;
		}
	}
}

/* Installs r (owned from now on), replacing a rule with the same key. */
static void prov_rule_install(struct prov_thing *t, struct iot_rule *r)
{
	for (struct iot_rule **pp = &t->rules; *pp; pp = &(*pp)->next) {
		if (iot_rule_same_key(*pp, r)) {
			struct iot_rule *old = *pp;

			*pp = old->next;
			free(old);
			t->nrules--;
			break;
		}
	}
	r->next = t->rules;
	t->rules = r;
	t->nrules++;
}

/* ---- Startup ---- */

/*
 * iot_db_load() callbacks: the table filled before the storage thread
 * starts, each thing in the part of its home worker.
 */
static int prov_load_thing(void *arg, const char *jid, const char *owner, bool clear_cache)
{
	struct prov_thing *t = prov_put(&prov.parts[prov_home(jid)], jid, owner);

	(void)arg;
	if (!t)
		return -ENOMEM;
	t->clear_pending = clear_cache;
	return 0;
}

/* Rules arrive oldest first; installing each at the head leaves the newest first. */
static int prov_load_rule(void *arg, const char *thing, struct iot_rule *r)
{
	struct prov_thing *t = prov_find(&prov.parts[prov_home(thing)], thing);
	unsigned *n = arg;

	if (!t) {
		free(r);	/* a rule of a thing no longer provisioned: ignored */
		return 0;
	}
	prov_rule_install(t, r);
	(*n)++;
	return 0;
}

bool provisioning_enabled(const struct config *cfg)
{
	return cfg->provisioning;
}

int provisioning_init(const struct server *srv, struct storage *st)
{
	const struct config *cfg = srv->cfg;
	unsigned rules = 0;
	size_t things = 0;
	int ret;

	provisioning_shutdown();
	prov.enabled = cfg->provisioning;
	prov.srv = srv;
	snprintf(prov.domain, sizeof(prov.domain), "%s.%s", PROV_LABEL, cfg->domain);
	if (getrandom(&prov.seed, sizeof(prov.seed), 0) != sizeof(prov.seed))
		prov.seed = (uint64_t)time(NULL);
	prov.nparts = srv->nworkers ? srv->nworkers : 1;
	prov.parts = calloc(prov.nparts, sizeof(*prov.parts));
	if (!prov.parts) {
		prov.nparts = 0;
		return -ENOMEM;
	}
	for (unsigned k = 0; k < prov.nparts; k++) {
		prov_grow(&prov.parts[k]);
		if (!prov.parts[k].buckets) {
			provisioning_shutdown();
			return -ENOMEM;
		}
	}
	ret = iot_db_load(st, prov_load_thing, prov_load_rule, &rules);
	if (ret < 0) {
		log_error("provisioning.load_failed", "err=%d", ret);
		provisioning_shutdown();
		return ret;
	}
	for (unsigned k = 0; k < prov.nparts; k++)
		things += prov.parts[k].count;
	log_info("provisioning.start", "domain=%s enabled=%s things=%zu rules=%u", prov.domain,
		 prov.enabled ? "yes" : "no", things, rules);
	return 0;
}

void provisioning_shutdown(void)
{
	for (unsigned k = 0; k < prov.nparts; k++) {
		struct prov_part *p = &prov.parts[k];

		for (size_t i = 0; p->buckets && i < p->nbuckets; i++) {
			for (struct prov_thing *t = p->buckets[i], *next; t; t = next) {
				next = t->hnext;
				prov_thing_free(t);
			}
		}
		free(p->buckets);
		for (unsigned i = 0; i < p->nbare; i++)
			free(p->bare[i]);
	}
	free(prov.parts);
	memset(&prov, 0, sizeof(prov));
	prov_tokens_reset();
}

/* ---- Small helpers ---- */

/*
 * JIDs reach this file parsed and normalized (struct jid); the table and
 * the rules use their bare text, which is a prefix of the full JID.
 */

/* The bare JID of j into out (JID_MAX). */
static void prov_bare(const struct jid *j, char *out)
{
	snprintf(out, JID_MAX, "%.*s", (int)(j->domain_off + j->domain_len), j->buf);
}

static void prov_domain_of(const struct jid *j, char *out)
{
	snprintf(out, JID_MAX, "%.*s", (int)j->domain_len, j->buf + j->domain_off);
}

/* Wall-clock seconds: question intervals and bare-iq expiry survive no restart anyway. */
static int64_t prov_now(void)
{
	return (int64_t)time(NULL);
}

/* A fresh id for a stanza of the service: a counter and a tag. */
static void prov_new_id(char *out, size_t size, const char *tag)
{
	snprintf(out, size, "%s-%" PRIu64, tag, atomic_fetch_add(&prov.counter, 1) + 1);
}

/* Routes a stanza the service built (its 'from' is the service or a thing). */
static void prov_send(struct worker *w, struct xml_node *st)
{
	if (!st || router_route_stanza(w, st) < 0)
		log_warn("provisioning.send_failed", "msg=\"could not route a stanza of the service\"");
}

/* A new element child with one attribute (value NULL: none). NULL on ENOMEM. */
static struct xml_node *prov_child(struct arena *a, struct xml_node *parent, const char *ns,
				   const char *name, const char *attr, const char *value)
{
	struct xml_node *n = xml_node_add_child(a, parent, ns, name);

	if (!n || (attr && value && xml_attr_set(a, n, attr, value) < 0))
		return NULL;
	return n;
}

/* Calls fn for each name of an IOT_SEP-joined list. */
static void prov_each_name(const char *list, void (*fn)(void *arg, const char *name), void *arg)
{
	char name[IOT_NAME_MAX + 1];

	for (const char *p = list; p && *p;) {
		const char *end = strchr(p, IOT_SEP);
		size_t n = end ? (size_t)(end - p) : strlen(p);

		snprintf(name, sizeof(name), "%.*s", (int)n, p);
		fn(arg, name);
		if (!end)
			break;
		p = end + 1;
	}
}

/* ---- clearCache ---- */

struct prov_cc_req {
	struct storage_req req;		/* first */
	bool pending;
	char thing[JID_MAX];
};

/* Storage side: only the flag changes; the thing is told by the worker. */
static int prov_cc_run(struct storage *st, struct storage_req *req)
{
	struct prov_cc_req *cr = (struct prov_cc_req *)req;

	return iot_db_clear_cache(st, cr->thing, cr->pending);
}

/* Fire and forget: a failed write leaves the flag as it was (logged). */
static void prov_cc_done(struct storage_req *req)
{
	if (req->result < 0)
		log_warn("provisioning.store_failed", "op=clear_cache err=%d", req->result);
	free(req);
}

/*
 * Records whether a clearCache waits for the thing, in memory and (fire
 * and forget) in the store, so that a restart still sends it. Nothing is
 * written when the flag does not change.
 */
static void prov_cc_persist(struct worker *w, struct prov_thing *t, bool pending)
{
	struct prov_cc_req *cr;

	if (t->clear_pending == pending)
		return;
	t->clear_pending = pending;
	cr = calloc(1, sizeof(*cr));
	if (!cr)
		return;
	cr->pending = pending;
	snprintf(cr->thing, sizeof(cr->thing), "%s", t->jid);
	cr->req.op = STORAGE_OP_RUN;
	cr->req.run = prov_cc_run;
	cr->req.done = prov_cc_done;
	cr->req.inbox = &w->inbox;
	storage_queue_submit(w->srv->store, &cr->req);
}

/* <iq type='set'><clearCache/></iq> from the service to one session. */
static void prov_cc_send(struct worker *w, const char *to)
{
	struct arena a;
	struct xml_node *iq;
	char id[32];

	arena_init(&a, PROV_ARENA_CHUNK);
	prov_new_id(id, sizeof(id), "cc");
	iq = xml_node_new(&a, XML_NS_CLIENT, "iq");
	if (iq && xml_attr_set(&a, iq, "type", "set") == 0 && xml_attr_set(&a, iq, "id", id) == 0 &&
	    xml_attr_set(&a, iq, "from", prov.domain) == 0 && xml_attr_set(&a, iq, "to", to) == 0 &&
	    xml_node_add_child(&a, iq, NS_IOT_PROVISIONING, "clearCache"))
		prov_send(w, iq);
	arena_release(&a);
}

static void prov_cc_remote(void *arg, const char *full)
{
	prov_cc_send(arg, full);
}

/*
 * XEP-0324 3.6: the thing's decisions changed. Each session gets a
 * clearCache now; a thing without sessions gets it when it comes back.
 */
static void prov_clear_cache(struct worker *w, struct prov_thing *t)
{
	bool sent = false;

	for (struct session *s = sessdir_find_bare(w->sessions, t->jid, t->jid_len), *next; s;
	     s = next) {
		next = s->next;
		if (s->ending)
			continue;
		prov_cc_send(w, s->jid);
		sent = true;
	}
	/* Cluster mode: its sessions on other nodes get theirs through the router. */
	if (cluster_enabled() && cluster_each_resource(t->jid, prov_cc_remote, w) > 0)
		sent = true;
	prov_cc_persist(w, t, !sent);
}

/*
 * A thing the table does not know, looked up in the store when it comes
 * online, or any thing when `stanzactl device import` changed its
 * enrollment (provisioning_refresh(), sync): devices enrolled with an
 * owner while the server runs are provisioned from then on.
 */
struct prov_refresh {
	struct storage_req req;		/* first */
	struct iot_rule *rules;		/* loaded, newest first */
	unsigned nrules;
	bool clear_cache;
	bool sync;			/* the store is right: an owner changed or gone too */
	bool replace;			/* rules too: provisioning_reload */
	char jid[JID_MAX];
	char owner[JID_MAX];		/* "" when not provisioned */
};

static int prov_refresh_rule(void *arg, const char *thing, struct iot_rule *r)
{
	struct prov_refresh *pr = arg;

	(void)thing;
	r->next = pr->rules;
	pr->rules = r;
	pr->nrules++;
	return 0;
}

static int prov_refresh_run(struct storage *st, struct storage_req *req)
{
	struct prov_refresh *pr = (struct prov_refresh *)req;

	return iot_db_thing_load(st, pr->jid, pr->owner, sizeof(pr->owner), &pr->clear_cache,
				 prov_refresh_rule, pr);
}

/*
 * Cluster mode: another node (the services' owner) changed the thing's
 * owner or rules in the store; this node's entry becomes what the store
 * says, at once (no moment without the thing's rules). The owner node
 * alone talks to the thing (clearCache) and the owner.
 */
static void prov_refresh_replace(struct worker *w, struct prov_refresh *pr)
{
	struct prov_part *p = prov_at(w);
	struct prov_thing *t = prov_find(p, pr->jid);

	if (!pr->owner[0]) {
		if (t)
			log_info("provisioning.reloaded", "thing=%s owner=none", pr->jid);
		prov_del(p, pr->jid);
		return;
	}
	t = prov_put(p, pr->jid, pr->owner);
	if (!t) {
		log_warn("provisioning.reload_failed", "thing=%s msg=\"out of memory\"", pr->jid);
		return;
	}
	while (t->rules) {
		struct iot_rule *r = t->rules;

		t->rules = r->next;
		free(r);
	}
	t->rules = pr->rules;
	t->nrules = pr->nrules;
	pr->rules = NULL;
	log_info("provisioning.reloaded", "thing=%s owner=%s rules=%u", t->jid, t->owner,
		 t->nrules);
}

static void prov_refresh_done(struct storage_req *req)
{
	struct prov_refresh *pr = (struct prov_refresh *)req;
	struct worker *w = (struct worker *)((char *)req->inbox - offsetof(struct worker, inbox));
	struct prov_thing *t;

	if (req->result < 0)
		goto out;
	if (pr->replace) {
		prov_refresh_replace(w, pr);
		goto out;
	}
	t = prov_find(prov_at(w), pr->jid);
	/* Enrollment gave it another owner or none: the old one's decisions end. */
	if (pr->sync && t && strcmp(t->owner, pr->owner) != 0) {
		log_info("provisioning.reenrolled", "thing=%s owner=%s", t->jid, pr->owner);
		provisioning_thing_released(w, pr->jid);
		t = NULL;
	}
	/* Provisioned meanwhile (a claim): the table is ahead of this read. */
	if (!pr->owner[0] || t)
		goto out;
	t = prov_put(prov_at(w), pr->jid, pr->owner);
	if (!t)
		goto out;
	t->rules = pr->rules;
	t->nrules = pr->nrules;
	pr->rules = NULL;
	log_info("provisioning.enrolled", "thing=%s owner=%s rules=%u", t->jid, t->owner, t->nrules);
	t->clear_pending = pr->clear_cache;
	if (t->clear_pending)
		prov_clear_cache(w, t);
out:
	while (pr->rules) {
		struct iot_rule *r = pr->rules;

		pr->rules = r->next;
		free(r);
	}
	free(pr);
}

/* Reads bare JID jid[0..len) from the store (async), see struct prov_refresh. 0 or -ENOMEM. */
static int prov_refresh_submit(struct worker *w, const char *jid, size_t len, bool sync)
{
	struct prov_refresh *pr = calloc(1, sizeof(*pr));

	if (!pr)
		return -ENOMEM;
	snprintf(pr->jid, sizeof(pr->jid), "%.*s", (int)len, jid);
	pr->sync = sync;
	pr->req.op = STORAGE_OP_RUN;
	pr->req.run = prov_refresh_run;
	pr->req.done = prov_refresh_done;
	pr->req.inbox = &w->inbox;
	storage_queue_submit(w->srv->store, &pr->req);
	return 0;
}

void provisioning_available(struct worker *w, struct session *s)
{
	struct prov_thing *t;

	if (!prov.enabled)
		return;
	t = prov_find_len(prov_at(w), s->jid, s->bare_len);
	if (t) {
		if (t->clear_pending) {
			prov_cc_send(w, s->jid);
			prov_cc_persist(w, t, false);
		}
		return;
	}
	prov_refresh_submit(w, s->jid, s->bare_len, false);
}

/* provisioning_reload at the thing's home: the store is read (async), then the entry replaced. */
static int prov_reload_submit(struct worker *w, const char *bare)
{
	struct prov_refresh *pr = calloc(1, sizeof(*pr));

	if (!pr)
		return -ENOMEM;
	snprintf(pr->jid, sizeof(pr->jid), "%s", bare);
	pr->replace = true;
	pr->req.op = STORAGE_OP_RUN;
	pr->req.run = prov_refresh_run;
	pr->req.done = prov_refresh_done;
	pr->req.inbox = &w->inbox;
	storage_queue_submit(w->srv->store, &pr->req);
	return 0;
}

int provisioning_reload(struct worker *w, const char *bare)
{
	unsigned home;

	if (!prov.enabled)
		return 0;
	home = prov_home(bare);
	if (home != w->id)
		return prov_post_update(w, home, PROV_UP_RELOAD, bare, "", NULL, NULL);
	return prov_reload_submit(w, bare);
}

int provisioning_refresh(struct worker *w, const char *bare)
{
	unsigned home;

	if (!prov.enabled)
		return 0;
	/* The table entry is the home's: the store is read, and the answer applied, there. */
	home = prov_home(bare);
	if (home != w->id)
		return prov_post_update(w, home, PROV_UP_REFRESH, bare, "", NULL, NULL);
	return prov_refresh_submit(w, bare, strlen(bare), true);
}

/* ---- Questions to owners ---- */

/*
 * Whether to ask the owner now, remembering that it was asked. The same
 * question (thing, kind, requester) is not asked again for
 * PROV_QUESTION_INTERVAL: a device polled by a stranger every second must
 * not flood its owner. Questions are remembered by a 64-bit hash in a ring
 * of PROV_QUESTIONS_MAX; a forgotten one is simply asked again. The scan
 * only runs when no rule answered, never on an allowed request.
 */
static bool prov_should_ask(struct prov_part *p, const char *thing, enum iot_rule_kind kind,
			    const char *remote)
{
	char buf[2 * JID_MAX + 4];
	int n = snprintf(buf, sizeof(buf), "%s\n%d\n%s", thing, (int)kind, remote);
	uint64_t h = prov_hash(buf, n < 0 ? 0 : (size_t)n >= sizeof(buf) ? sizeof(buf) - 1 :
			       (size_t)n);
	int64_t now = prov_now();

	if (!p)
		return false;
	for (unsigned i = 0; i < PROV_QUESTIONS_MAX; i++) {
		if (p->questions[i].hash == h && p->questions[i].at) {
			if (now - p->questions[i].at < PROV_QUESTION_INTERVAL)
				return false;
			p->questions[i].at = now;
			return true;
		}
	}
	p->questions[p->next_question] = (struct prov_question){ .hash = h, .at = now };
	p->next_question = (p->next_question + 1) % PROV_QUESTIONS_MAX;
	return true;
}

/* What a question carries besides thing and requester. */
struct prov_ask {
	enum iot_rule_kind kind;
	const struct xml_node *payload;	/* the request's payload, or NULL (friendship) */
	const char *const *nodes;
	size_t nnodes;
};

/*
 * The fields (<f n=''/>) or parameters (<p n=''/>) a request names, as
 * children of the question, in the form the owner's rule will use.
 */
static void prov_ask_names(struct arena *a, struct xml_node *q, const struct xml_node *payload,
			   enum iot_rule_kind kind)
{
	const char *tag = kind == IOT_RULE_READ ? "f" : "p";

	for (struct xml_node *ch = xml_first_element(payload); ch; ch = xml_next_element(ch)) {
		const char *name = NULL;

		if (kind == IOT_RULE_READ && strcmp(ch->name, "field") == 0) {
			name = xml_attr_get(ch, "name");
		} else if (kind == IOT_RULE_CONTROL) {
			for (size_t i = 0; i < sizeof(control_params) / sizeof(control_params[0]); i++)
				if (strcmp(ch->name, control_params[i]) == 0)
					name = xml_attr_get(ch, "name");
		}
		if (name)
			prov_child(a, q, NULL, tag, "n", name);
	}
}

/*
 * Asks the owner of t whether `remote` may do what the request wants
 * (owner interface: a message, so offline storage keeps it while the
 * owner is away). The message has a human-readable body for ordinary
 * clients and the machine-readable question with a random key that the
 * owner's answering rule may carry. The request itself has been refused
 * already; the answer only affects later requests.
 */
static void prov_ask_owner(struct worker *w, struct prov_thing *t, const char *remote,
			   const struct prov_ask *ask)
{
	static const char *const names[IOT_RULE_KINDS] = { "isFriend", "canRead", "canControl" };
	static const char *const what[IOT_RULE_KINDS] = {
		"befriend", "read the sensor data of", "control",
	};
	static const char *const tokens[] = { "serviceToken", "deviceToken", "userToken" };
	unsigned char raw[PROV_KEY_BYTES];
	char key[2 * PROV_KEY_BYTES + 1], id[48];
	struct xml_node *m, *q, *body;
	struct strbuf text = STRBUF_INIT;
	struct arena a;

	if (!prov_should_ask(prov_at(w), t->jid, ask->kind, remote))
		return;
	if (getrandom(raw, sizeof(raw), 0) != sizeof(raw))
		memset(raw, 0, sizeof(raw));
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(key + 2 * i, 3, "%02x", raw[i]);
	prov_new_id(id, sizeof(id), "q");
	strbuf_printf(&text, "May %s %s %s? Answer with a %sRule (key %s).", remote,
		      what[ask->kind], t->jid, names[ask->kind], key);
	arena_init(&a, PROV_ARENA_CHUNK);
	m = xml_node_new(&a, XML_NS_CLIENT, "message");
	if (!m || xml_attr_set(&a, m, "from", prov.domain) < 0 ||
	    xml_attr_set(&a, m, "to", t->owner) < 0 || xml_attr_set(&a, m, "id", id) < 0)
		goto out;
	body = xml_node_add_child(&a, m, XML_NS_CLIENT, "body");
	if (!body || text.oom || xml_node_add_text(&a, body, text.data, text.len) < 0)
		goto out;
	q = prov_child(&a, m, NS_IOT_PROV_OWNER, names[ask->kind], "jid", t->jid);
	if (!q || xml_attr_set(&a, q, "remoteJid", remote) < 0 || xml_attr_set(&a, q, "key", key) < 0)
		goto out;
	if (ask->payload) {
		for (size_t i = 0; i < sizeof(tokens) / sizeof(tokens[0]); i++) {
			const char *v = xml_attr_get(ask->payload, tokens[i]);

			if (v && xml_attr_set(&a, q, tokens[i], v) < 0)
				goto out;
		}
		for (size_t i = 0; i < ask->nnodes; i++)
			prov_child(&a, q, NULL, "nd", "nodeId", ask->nodes[i]);
		prov_ask_names(&a, q, ask->payload, ask->kind);
	}
	log_info("provisioning.ask", "thing=%s owner=%s kind=%s key=%s", t->jid, t->owner,
		 iot_kind_name(ask->kind), key);
	prov_send(w, m);
out:
	strbuf_free(&text);
	arena_release(&a);
}

/* ---- Decisions on requests ---- */

/*
 * A token a request names, when bare proved it (prov_tokens.h): anybody
 * can write a token attribute, so an unproven one does not count. set is
 * the deciding worker: its copy of the service's proofs.
 */
static const char *prov_held(const char *token, const char *bare, unsigned set)
{
	return token && prov_token_held_in(set, token, bare) ? token : NULL;
}

/*
 * The query for a request's payload: the requester (bare JID and domain,
 * NUL-terminated, valid while q is used) and the XEP-0324 tokens the
 * payload carries that the requester proved, which token-ranged rules
 * match.
 */
static void prov_query(struct iot_query *q, enum iot_rule_kind kind, const char *bare,
		       const char *domain, const struct xml_node *payload, unsigned set)
{
	memset(q, 0, sizeof(*q));
	q->kind = kind;
	q->jid = bare;
	q->domain = domain;
	if (payload) {
		q->service_token = prov_held(xml_attr_get(payload, "serviceToken"), bare, set);
		q->device_token = prov_held(xml_attr_get(payload, "deviceToken"), bare, set);
		q->user_token = prov_held(xml_attr_get(payload, "userToken"), bare, set);
	}
}

/*
 * The <node nodeId/> children of a payload (XEP-0326 concentrators) into
 * ids[0..*n), pointing into the tree. -E2BIG when there are more than
 * IOT_REQUEST_NODES_MAX, -EINVAL for a <node/> without nodeId: such a
 * request is refused as malformed rather than half decided.
 */
static int prov_nodes(const struct xml_node *payload, const char **ids, size_t *n)
{
	*n = 0;
	for (struct xml_node *ch = xml_first_element(payload); ch; ch = xml_next_element(ch)) {
		const char *id;

		if (strcmp(ch->name, "node") != 0)
			continue;
		/* A node the decision cannot name would pass unchecked: malformed. */
		if (!(id = xml_attr_get(ch, "nodeId")))
			return -EINVAL;
		if (*n == IOT_REQUEST_NODES_MAX)
			return -E2BIG;
		ids[(*n)++] = id;
	}
	return 0;
}

/*
 * State of prov_add_names(): adds <tag attr=name/> to parent for each
 * permitted name, once (several allowing rules may name the same field).
 */
struct prov_add_ctx {
	struct arena *a;
	struct xml_node *parent;
	const char *tag, *attr;
	struct strbuf seen;	/* names added so far, IOT_SEP-joined */
	bool added;
};

static void prov_add_name(void *arg, const char *name)
{
	struct prov_add_ctx *c = arg;

	if (c->seen.data && iot_list_has(c->seen.data, name))
		return;
	if (c->seen.len)
		strbuf_append(&c->seen, (char[]){ IOT_SEP }, 1);
	strbuf_puts(&c->seen, name);
	if (prov_child(c->a, c->parent, NULL, c->tag, c->attr, name))
		c->added = true;
}

/*
 * Adds the permitted names of an allowed decision as children of parent
 * (the union of the allowing rules' partial lists). Returns whether any
 * was added: an allowing rule with an empty <partial/> permits nothing.
 */
static bool prov_add_names(struct arena *a, struct xml_node *parent, const struct iot_decision *d,
			   const char *tag, const char *attr)
{
	struct prov_add_ctx c = { .a = a, .parent = parent, .tag = tag, .attr = attr,
				  .seen = STRBUF_INIT };

	for (size_t i = 0; i < d->nallowing; i++)
		prov_each_name(d->allowing[i]->partial, prov_add_name, &c);
	strbuf_free(&c.seen);
	return c.added;
}

static void prov_add_node(void *arg, const char *name)
{
	struct prov_add_ctx *c = arg;

	prov_child(c->a, c->parent, NULL, "node", "nodeId", name);
}

/*
 * Narrows the nodes of a request: drops <node/> children the decision
 * does not allow (bit i of nodes_allowed is the i-th <node/>, in the
 * order prov_nodes() saw them), or, for a request of every node, names
 * the nodes an allowing rule is limited to, so that the device reads or
 * controls only those (XEP-0324 3.3.2, 3.4.2).
 */
static void prov_narrow_nodes(struct arena *a, struct xml_node *payload,
			      const struct iot_decision *d, size_t nnodes)
{
	size_t i = 0;

	if (nnodes) {
		for (struct xml_node *ch = xml_first_element(payload), *next; ch; ch = next) {
			next = xml_next_element(ch);
			if (strcmp(ch->name, "node") != 0 || !xml_attr_get(ch, "nodeId"))
				continue;
			if (i < 64 && !(d->nodes_allowed & (UINT64_C(1) << i)))
				xml_node_remove(ch);
			i++;
		}
	} else if (d->limit_nodes) {
		struct prov_add_ctx c = { .a = a, .parent = payload };

		prov_each_name(d->limit_nodes, prov_add_node, &c);
	}
}

/*
 * Whether an element of a <set/> is a typed parameter (XEP-0325 section
 * 3.2): its name, "" when it has none (no permission names ""), NULL for
 * other elements.
 */
static const char *prov_param_name(const struct xml_node *el)
{
	for (size_t i = 0; i < sizeof(control_params) / sizeof(control_params[0]); i++) {
		if (strcmp(el->name, control_params[i]) == 0) {
			const char *name = xml_attr_get(el, "name");

			return name ? name : "";
		}
	}
	return NULL;
}

/*
 * Narrows a <set/> to the permitted parameters (typed ones and fields of
 * a submitted form). Returns false when it had parameters and none is
 * left.
 */
static bool prov_narrow_set(struct xml_node *set, const struct iot_decision *d)
{
	bool had = false, kept = false;

	for (struct xml_node *ch = xml_first_element(set), *next; ch; ch = next) {
		const char *name = prov_param_name(ch);

		next = xml_next_element(ch);
		if (name) {
			had = true;
			if (iot_decision_name_ok(d, name))
				kept = true;
			else
				xml_node_remove(ch);
		} else if (strcmp(ch->name, "x") == 0 && strcmp(ch->ns, "jabber:x:data") == 0) {
			for (struct xml_node *f = xml_first_element(ch), *fn; f; f = fn) {
				const char *var = xml_attr_get(f, "var");

				fn = xml_next_element(f);
				/*
				 * FORM_TYPE and the form's session (XEP-0336) are not
				 * parameters. Any other field is, hidden or not: a
				 * device may well apply a hidden field by its var.
				 */
				if (strcmp(f->name, "field") != 0 || !var || !strcmp(var, "FORM_TYPE") ||
				    !strcmp(var, "xdd session"))
					continue;
				had = true;
				if (iot_decision_name_ok(d, var))
					kept = true;
				else
					xml_node_remove(f);
			}
		}
	}
	return kept || !had;
}

/*
 * Narrows a <req/> to the permitted fields: requested fields not
 * permitted go; a request for every field names the permitted ones.
 * Returns false when nothing is left to read.
 */
static bool prov_narrow_req(struct arena *a, struct xml_node *req, const struct iot_decision *d)
{
	bool had = false, kept = false;

	if (d->every_name)
		return true;
	for (struct xml_node *ch = xml_first_element(req), *next; ch; ch = next) {
		const char *name = strcmp(ch->name, "field") == 0 ? xml_attr_get(ch, "name") : NULL;

		next = xml_next_element(ch);
		if (!name)
			continue;
		had = true;
		if (iot_decision_name_ok(d, name))
			kept = true;
		else
			xml_node_remove(ch);
	}
	return had ? kept : prov_add_names(a, req, d, "field", "name");
}

/*
 * Filters sensor data a thing sends to a reader whose permission names
 * fields (or nodes): other fields and nodes are taken out. XEP-0323 lets
 * a device treat the field list of a request as a hint only, so the
 * narrowed request alone would not keep the data from the reader.
 * Empty <node/> and <timestamp/> elements are left: they carry nothing.
 */
static void prov_filter_fields(struct xml_node *fields, const struct iot_decision *d)
{
	for (struct xml_node *node = xml_first_element(fields), *nn; node; node = nn) {
		const char *id = xml_attr_get(node, "nodeId");

		nn = xml_next_element(node);
		if (strcmp(node->name, "node") != 0)
			continue;
		if (d->limit_nodes && (!id || !iot_list_has(d->limit_nodes, id))) {
			xml_node_remove(node);
			continue;
		}
		for (struct xml_node *ts = xml_first_element(node); ts; ts = xml_next_element(ts)) {
			for (struct xml_node *f = xml_first_element(ts), *fn; f; f = fn) {
				const char *name = xml_attr_get(f, "name");

				fn = xml_next_element(f);
				if (!name || !iot_decision_name_ok(d, name))
					xml_node_remove(f);
			}
		}
	}
}

/* ---- IoT iqs to bare JIDs ---- */

/* The available session of a bare JID with the highest priority, or NULL. */
static struct session *prov_best_session(struct worker *w, const char *bare, size_t len)
{
	struct session *best = NULL;

	for (struct session *s = sessdir_find_bare(w->sessions, bare, len); s; s = s->next)
		if (!s->ending && s->available && (!best || s->priority > best->priority))
			best = s;
	return best;
}

/* Forgets entry i (the last one takes its place: order does not matter). */
static void prov_bare_drop(struct prov_part *p, unsigned i)
{
	free(p->bare[i]);
	p->bare[i] = p->bare[--p->nbare];
}

/*
 * Remembers an iq delivered to s for a request sent to its bare JID, so
 * that the answer can come from the bare JID again: clients match an
 * answer by id and by the JID they asked (slixmpp accepts no full JID for
 * a bare one). Expired entries go first; a full table drops one entry,
 * whose answer then keeps the device's full JID (still routed).
 */
static void prov_bare_remember(struct prov_part *p, const char *id, const char *requester,
			       const struct session *s)
{
	size_t il = strlen(id) + 1, rl = strlen(requester) + 1;
	int64_t now = prov_now();
	struct prov_bare_iq *b;

	if (!p)
		return;
	for (unsigned i = 0; i < p->nbare;)
		if (p->bare[i]->expires < now)
			prov_bare_drop(p, i);
		else
			i++;
	if (p->nbare == PROV_BARE_IQS_MAX)
		prov_bare_drop(p, 0);	/* full: one answer will carry the full JID */
	b = malloc(sizeof(*b) + il + rl + s->jid_len + 1);
	if (!b)
		return;
	b->expires = now + PROV_BARE_IQ_TIMEOUT;
	b->id = b->buf;
	memcpy(b->id, id, il);
	b->requester = b->id + il;
	memcpy(b->requester, requester, rl);
	b->device = b->requester + rl;
	memcpy(b->device, s->jid, s->jid_len + 1);
	b->bare_len = s->bare_len;
	p->bare[p->nbare++] = b;
}

/*
 * An iq result or error from a full JID to a requester: when it answers a
 * request that went to the bare JID (same id, same device session, same
 * requester), it gets the bare JID as 'from' and the entry is forgotten.
 * Only the device session that got the request can match an entry.
 */
static void prov_bare_answer(struct worker *w, struct xml_node *st, const struct jid *from,
			     const struct jid *to)
{
	const char *id = xml_attr_get(st, "id");
	struct prov_part *p = prov_at(w);
	char bare[JID_MAX];

	if (!id || !jid_has_resource(from) || !p)
		return;
	for (unsigned i = 0; i < p->nbare; i++) {
		struct prov_bare_iq *b = p->bare[i];

		if (strcmp(b->id, id) != 0 || strcmp(b->device, from->buf) != 0 ||
		    strcmp(b->requester, to->buf) != 0)
			continue;
		snprintf(bare, sizeof(bare), "%.*s", (int)b->bare_len, b->device);
		xml_attr_set(&w->tmp, st, "from", bare);
		prov_bare_drop(p, i);
		return;
	}
}

/*
 * Delivers an IoT iq for a bare JID to its best resource. false when none
 * is available, or when the sender may not learn that one is: only the
 * account itself, those its roster shares presence with (From), and
 * parties the provisioning rules let through (vouched) get past the
 * server's own answer (XEP-0030 section 8: a bare JID does not tell
 * strangers whether anybody is online).
 */
static bool prov_bare_deliver(struct worker *w, struct xml_node *st, const struct jid *from,
			      const struct jid *to, const char *from_bare, bool vouched)
{
	struct session *s = prov_best_session(w, to->buf, to->len);
	const char *id = xml_attr_get(st, "id");

	if (!s || !id)
		return false;
	if (!vouched && !jid_bare_equal(from, to) &&
	    !roster_contact_has_from(session_account(s), from_bare))
		return false;
	if (xml_attr_set(&w->tmp, st, "to", s->jid) < 0)
		return false;
	prov_bare_remember(prov_at(w), id, from->buf, s);
	router_deliver(s, st);
	return true;
}

/* ---- The router's hook ---- */

/* The payload of an IoT stanza: first child in an urn:xmpp:iot: namespace, or NULL. */
static struct xml_node *prov_iot_payload(const struct xml_node *st)
{
	for (struct xml_node *ch = xml_first_element(st); ch; ch = xml_next_element(ch))
		if (ch->ns[0] == 'u' && strncmp(ch->ns, "urn:xmpp:iot:", 13) == 0)
			return ch;
	return NULL;
}

/* XEP-0323/0325 requests: the kind of permission they need, or -1. */
static int prov_request_kind(const struct xml_node *p)
{
	if (strcmp(p->ns, NS_IOT_SENSORDATA) == 0)
		return strcmp(p->name, "req") == 0 || strcmp(p->name, "cancel") == 0 ?
		       IOT_RULE_READ : -1;
	if (strcmp(p->ns, NS_IOT_CONTROL) == 0)
		return strcmp(p->name, "set") == 0 || strcmp(p->name, "getForm") == 0 ?
		       IOT_RULE_CONTROL : -1;
	return -1;
}

/*
 * A read-out or control request element (payload) of stanza st for the
 * provisioned thing t, from someone else than its owner or itself.
 * Allowed: the element is narrowed in place to the permitted nodes and
 * fields or parameters, and false is returned (routing goes on). Refused
 * (no rule, a denying rule, or nothing permitted left): the sender gets
 * 'forbidden' (bad-request for a malformed node list), true is returned
 * and the stanza goes no further. An unanswered question goes to the
 * owner either way.
 */
static bool prov_enforce(struct worker *w, struct conn *src, struct xml_node *st,
			 struct xml_node *payload, enum iot_rule_kind kind, struct prov_thing *t,
			 const char *from_bare, const char *from_domain)
{
	const char *nodes[IOT_REQUEST_NODES_MAX];
	struct iot_decision d;
	struct iot_query q;
	size_t n;
	bool ok;
	char qb[128];

	if (prov_nodes(payload, nodes, &n) < 0) {
		router_bounce_w(w, src, st, "bad-request");
		return true;
	}
	prov_query(&q, kind, from_bare, from_domain, payload, w->id);
	iot_decide(t->rules, &q, nodes, n, &d);
	if (d.unanswered) {
		struct prov_ask ask = { .kind = kind, .payload = payload, .nodes = nodes,
					.nnodes = n };

		prov_ask_owner(w, t, from_bare, &ask);
	}
	if (d.verdict == IOT_ALLOW) {
		prov_narrow_nodes(&w->tmp, payload, &d, n);
		if (strcmp(payload->name, "req") == 0)
			ok = prov_narrow_req(&w->tmp, payload, &d);
		else if (strcmp(payload->name, "set") == 0)
			ok = prov_narrow_set(payload, &d);
		else
			ok = true;
		if (ok)
			return false;
	}
	log_info("provisioning.refused", "thing=%s from=%s kind=%s verdict=%s", t->jid,
		 log_sanitize(qb, sizeof(qb), from_bare, strlen(from_bare)), iot_kind_name(kind),
		 d.verdict == IOT_NO_RULE ? "no_rule" : d.verdict == IOT_DENY ? "deny" : "nothing_left");
	router_bounce_w(w, src, st, "forbidden");
	return true;
}

/*
 * Sensor data from thing t to a reader: filtered when the reader's
 * permission names fields or nodes. The tokens of the request it answers
 * are not known here, so only rules by JID, domain or for everyone are
 * applied: a reader let in by a token gets what its request was narrowed
 * to, and a reader without any rule (the device chose to send) is left
 * alone, as the thing's own data are the thing's business.
 */
static void prov_filter_response(struct xml_node *payload, struct prov_thing *t,
				 const char *to_bare, const char *to_domain)
{
	struct iot_decision d;
	struct iot_query q;

	prov_query(&q, IOT_RULE_READ, to_bare, to_domain, NULL, 0);
	iot_decide(t->rules, &q, NULL, 0, &d);
	if (d.verdict == IOT_ALLOW && (!d.every_name || d.limit_nodes))
		prov_filter_fields(payload, &d);
}

/* Sensor data (XEP-0323 <fields/>) from thing t to reader to_bare (prov_filter_response). */
static void prov_filter_sent(struct prov_thing *t, struct xml_node *payload, const struct jid *to,
			     const char *from_bare, const char *to_bare)
{
	char dom[JID_MAX];

	if (strcmp(to_bare, t->owner) == 0 || strcmp(to_bare, from_bare) == 0)
		return;
	prov_domain_of(to, dom);
	for (struct xml_node *ch = payload; ch; ch = xml_next_element(ch))
		if (strcmp(ch->ns, NS_IOT_SENSORDATA) == 0 && strcmp(ch->name, "fields") == 0)
			prov_filter_response(ch, t, to_bare, dom);
}

/*
 * The out-of-line part of provisioning_route(), for stanzas with an IoT
 * payload: requests to a thing are checked and narrowed (and, for a bare
 * JID, delivered to the best resource), sensor data from a thing is
 * filtered for its reader when sender_part (else that was done at the
 * thing's home, provisioning_outbound). Returns true when the stanza was
 * taken.
 */
static bool prov_route_iot(struct worker *w, struct conn *src, struct xml_node *st,
			   struct xml_node *payload, const struct jid *from, const struct jid *to,
			   bool sender_part)
{
	enum stanza_kind kind = stanza_kind(st);
	const char *type = stanza_type(st);
	/*
	 * Every message counts, errors included: a device that acts on a
	 * <set/> whatever the message type must not be reachable that way.
	 */
	bool request = kind == STANZA_MESSAGE || !strcmp(type, "get") || !strcmp(type, "set");
	char from_bare[JID_MAX], to_bare[JID_MAX], dom[JID_MAX];
	struct prov_thing *t;
	bool any = false, check;

	prov_bare(from, from_bare);
	prov_bare(to, to_bare);
	t = prov.enabled ? prov_find(prov_at(w), to_bare) : NULL;
	check = t && strcmp(from_bare, to_bare) != 0 && strcmp(from_bare, t->owner) != 0;
	if (check)
		prov_domain_of(from, dom);
	/* Each request element of the stanza (a message may carry several). */
	for (struct xml_node *ch = request ? payload : NULL; ch; ch = xml_next_element(ch)) {
		int rk = prov_request_kind(ch);

		if (rk < 0)
			continue;
		any = true;
		if (check && prov_enforce(w, src, st, ch, rk, t, from_bare, dom))
			return true;
	}
	if (any)
		return kind == STANZA_IQ && !jid_has_resource(to) ?
		       prov_bare_deliver(w, st, from, to, from_bare, t != NULL) : false;
	/* Sensor data a thing sends back (XEP-0323 <fields/>), to someone else than its owner. */
	if (sender_part && kind == STANZA_MESSAGE && prov.enabled &&
	    (t = prov_find(prov_at(w), from_bare)))
		prov_filter_sent(t, payload, to, from_bare, to_bare);
	return false;
}

/* An iq result or error to a full JID: maybe the answer of an iq delivered for a bare JID. */
static bool prov_is_bare_answer(const struct prov_part *p, const struct xml_node *st,
				const struct jid *to)
{
	const char *type;

	if (!p || !p->nbare || stanza_kind(st) != STANZA_IQ || !jid_has_resource(to))
		return false;
	type = stanza_type(st);
	return strcmp(type, "result") == 0 || strcmp(type, "error") == 0;
}

bool provisioning_route(struct worker *w, struct conn *src, struct xml_node *st,
			const struct jid *from, const struct jid *to)
{
	enum stanza_kind kind = stanza_kind(st);
	/* A local client's stanza had its sender's part at its home (provisioning_outbound). */
	bool sender_part = !router_from_local_session(w, src, st);
	struct xml_node *payload;

	if (kind != STANZA_MESSAGE && kind != STANZA_IQ)
		return false;
	/* Answers to iqs delivered for a bare JID may have any payload, or none. */
	if (sender_part && prov_is_bare_answer(prov_at(w), st, to)) {
		prov_bare_answer(w, st, from, to);
		return false;
	}
	payload = prov_iot_payload(st);
	return payload ? prov_route_iot(w, src, st, payload, from, to, sender_part) : false;
}

void provisioning_outbound(struct worker *w, struct xml_node *st, const struct jid *from,
			   const struct jid *to)
{
	const char *domain = w->srv->cfg->domain;
	char from_bare[JID_MAX], to_bare[JID_MAX];
	struct xml_node *payload;
	struct prov_thing *t;

	if (prov_is_bare_answer(prov_at(w), st, to)) {
		prov_bare_answer(w, st, from, to);
		return;
	}
	/* Sensor data for a local account, as provisioning_route() saw it there. */
	if (!prov.enabled || stanza_kind(st) != STANZA_MESSAGE || !jid_has_local(to) ||
	    to->domain_len != strlen(domain) ||
	    memcmp(to->buf + to->domain_off, domain, to->domain_len) != 0 ||
	    !(payload = prov_iot_payload(st)))
		return;
	/* A message with a request is checked as one, at its recipient's home. */
	for (struct xml_node *ch = payload; ch; ch = xml_next_element(ch))
		if (prov_request_kind(ch) >= 0)
			return;
	prov_bare(from, from_bare);
	t = prov_find(prov_at(w), from_bare);
	if (!t)
		return;
	prov_bare(to, to_bare);
	prov_filter_sent(t, payload, to, from_bare, to_bare);
}

/* ---- Friendship ---- */

/*
 * The decision is the server's (provisioning.h): an allowed requester is
 * approved on the thing's behalf (iot_grant: From in the thing's roster,
 * "subscribed" and its presence to the requester), a refused one gets
 * "unsubscribed" from the thing. Either way the request is not processed
 * further, so the thing neither sees it nor keeps it as pending.
 */

/*
 * Whether j is this server or one of its services (a domain JID at DOMAIN
 * or below it). Another server's domain, or a component with a domain
 * of its own, is a party like any other and needs a rule.
 */
static bool prov_own_service(const struct jid *j)
{
	const char *domain = prov.domain + sizeof(PROV_LABEL);	/* after "provisioning." */
	size_t dl = strlen(domain);
	const char *d = j->buf + j->domain_off;

	if (jid_has_local(j))
		return false;
	return (j->domain_len == dl || (j->domain_len > dl && d[j->domain_len - dl - 1] == '.')) &&
	       memcmp(d + j->domain_len - dl, domain, dl) == 0;
}

bool provisioning_subscribe(struct worker *w, struct xml_node *st, const struct jid *contact,
			    const struct jid *user)
{
	char cbare[JID_MAX], ubare[JID_MAX], dom[JID_MAX];
	struct iot_decision d;
	struct iot_query q;
	struct prov_thing *t;
	struct arena a;
	struct xml_node *p;
	char qb[128];

	(void)st;
	if (!prov.enabled || !prov_at(w) || !prov_at(w)->count)
		return false;
	prov_bare(user, ubare);
	t = prov_find(prov_at(w), ubare);
	if (!t)
		return false;
	prov_bare(contact, cbare);
	/* The owner, and the server's own services, need no rule. */
	if (strcmp(cbare, t->owner) == 0 || strcmp(cbare, ubare) == 0 || prov_own_service(contact))
		return false;
	prov_domain_of(contact, dom);
	prov_query(&q, IOT_RULE_FRIEND, cbare, dom, NULL, 0);
	iot_decide(t->rules, &q, NULL, 0, &d);
	log_info("provisioning.friendship", "thing=%s from=%s verdict=%s", t->jid,
		 log_sanitize(qb, sizeof(qb), cbare, strlen(cbare)),
		 d.verdict == IOT_ALLOW ? "allow" : d.verdict == IOT_DENY ? "deny" : "no_rule");
	if (d.verdict == IOT_ALLOW) {
		iot_grant(w, ubare, cbare);
		return true;
	}
	if (d.unanswered) {
		struct prov_ask ask = { .kind = IOT_RULE_FRIEND };

		prov_ask_owner(w, t, cbare, &ask);
	}
	/* Refused on the thing's behalf: the requester's Pending Out ends. */
	arena_init(&a, PROV_ARENA_CHUNK);
	p = xml_node_new(&a, XML_NS_CLIENT, "presence");
	if (p && xml_attr_set(&a, p, "type", "unsubscribed") == 0 &&
	    xml_attr_set(&a, p, "from", ubare) == 0 && xml_attr_set(&a, p, "to", cbare) == 0)
		prov_send(w, p);
	arena_release(&a);
	return true;
}

/* ---- For the registry ---- */

/*
 * A claim makes the thing provisioned for its new owner. Its rules were
 * deleted from the store with the claim (a new owner must not inherit the
 * old one's), so the table drops them too, and the thing is told to
 * clear its decision cache (XEP-0324 4.2: a new trust relationship).
 */

static void prov_owned_here(struct worker *w, const char *thing, const char *owner)
{
	struct prov_thing *t;

	if (strcmp(thing, owner) == 0) {
		prov_del(prov_at(w), thing);	/* self-owned: nobody to provision it */
		return;
	}
	t = prov_put(prov_at(w), thing, owner);
	if (!t) {
		log_error("provisioning.table_failed", "thing=%s msg=\"out of memory\"", thing);
		return;
	}
	/* A new owner starts from no rules (the store dropped them with the claim). */
	while (t->rules) {
		struct iot_rule *r = t->rules;

		t->rules = r->next;
		free(r);
	}
	t->nrules = 0;
	prov_clear_cache(w, t);
}

/* Disowned or unregistered: the thing decides alone again (its cache cleared). */
static void prov_released_here(struct worker *w, const char *thing)
{
	struct prov_thing *t = prov_find(prov_at(w), thing);

	if (!t)
		return;
	prov_clear_cache(w, t);
	prov_del(prov_at(w), thing);
}

void provisioning_thing_owned(struct worker *w, const char *thing, const char *owner)
{
	unsigned home = prov_home(thing);

	if (home != w->id)
		prov_post_update(w, home, PROV_UP_OWNED, thing, owner, NULL, NULL);
	else
		prov_owned_here(w, thing, owner);
}

void provisioning_thing_released(struct worker *w, const char *thing)
{
	unsigned home = prov_home(thing);

	if (home != w->id)
		prov_post_update(w, home, PROV_UP_RELEASED, thing, "", NULL, NULL);
	else
		prov_released_here(w, thing);
}

/* ---- The service: things asking (XEP-0324) ---- */

/*
 * The requester's provisioned thing (NULL when it is none), and the 'jid'
 * it asks about, bare (XEP-0324 3.2.1: resources are ignored). A missing
 * or malformed 'jid' is answered bad-request here and leaves other->len 0.
 */
static struct prov_thing *prov_asking_thing(struct iq_request *rq, struct jid *other)
{
	const char *jid = xml_attr_get(rq->payload, "jid");
	char bare[JID_MAX];

	if (!jid || jid_parse(other, jid, strlen(jid)) < 0) {
		other->len = 0;
		iq_reply_error(rq, "bad-request", "'jid' must name the other party");
		return NULL;
	}
	jid_to_bare(other);
	prov_bare(rq->from, bare);
	return prov_find(prov_at(rq->w), bare);
}

/*
 * Copies the request's attributes onto the response (XEP-0324 echoes the
 * field types of a canRead), tokens aside: they are credentials and the
 * response goes to the thing that sent them anyway.
 */
static int prov_copy_attrs(struct arena *a, struct xml_node *to, const struct xml_node *from)
{
	for (const struct xml_attr *at = from->attrs; at; at = at->next) {
		if (at->ns || strstr(at->name, "Token"))
			continue;
		if (xml_attr_set(a, to, at->name, at->value) < 0)
			return -ENOMEM;
	}
	return 0;
}

/*
 * isFriend / canRead / canControl from a thing: the answer from the
 * rules. Not a provisioned thing: "no" (XEP-0324 3.10: unknown things
 * are denied). The owner and the thing itself: "yes".
 */
static void prov_thing_asks(struct iq_request *rq, enum iot_rule_kind kind)
{
	static const char *const resp[IOT_RULE_KINDS] = {
		"isFriendResponse", "canReadResponse", "canControlResponse",
	};
	struct arena *a = iq_arena(rq);
	const char *nodes[IOT_REQUEST_NODES_MAX];
	char other_bare[JID_MAX], dom[JID_MAX];
	struct iot_decision d = { .verdict = IOT_DENY };
	struct xml_node *r, *copy = NULL;
	struct prov_thing *t;
	struct iot_query q;
	struct jid other;
	size_t n = 0;

	other.len = 0;
	t = prov_asking_thing(rq, &other);
	if (!other.len)
		return;	/* answered already */
	if (prov_nodes(rq->payload, nodes, &n) < 0) {
		iq_reply_error(rq, "bad-request", "too many nodes");
		return;
	}
	prov_bare(&other, other_bare);
	prov_domain_of(&other, dom);
	if (t && (strcmp(other_bare, t->owner) == 0 || strcmp(other_bare, t->jid) == 0)) {
		d.verdict = IOT_ALLOW;
		d.every_name = true;
		d.nodes_allowed = ~UINT64_C(0);
	} else if (t) {
		prov_query(&q, kind, other_bare, dom, rq->payload, rq->w->id);
		iot_decide(t->rules, &q, nodes, n, &d);
		if (d.unanswered) {
			struct prov_ask ask = { .kind = kind, .payload = kind ? rq->payload : NULL,
						.nodes = nodes, .nnodes = n };

			prov_ask_owner(rq->w, t, other_bare, &ask);
		}
	}
	/*
	 * The request narrowed as routing would narrow it: what remains is
	 * what the response permits (XEP-0324 3.3.2/3.4.2 list the allowed
	 * nodes, fields or parameters); nothing left means "no".
	 */
	if (d.verdict == IOT_ALLOW && kind != IOT_RULE_FRIEND) {
		bool had = false, kept = true;

		copy = xml_node_clone(a, rq->payload);
		if (!copy)
			goto oom;
		prov_narrow_nodes(a, copy, &d, n);
		if (kind == IOT_RULE_READ) {
			kept = prov_narrow_req(a, copy, &d);
		} else if (!d.every_name) {
			kept = false;
			for (struct xml_node *ch = xml_first_element(copy), *next; ch; ch = next) {
				const char *name = xml_attr_get(ch, "name");

				next = xml_next_element(ch);
				if (strcmp(ch->name, "parameter") != 0)
					continue;
				had = true;
				if (name && iot_decision_name_ok(&d, name))
					kept = true;
				else
					xml_node_remove(ch);
			}
			if (!had)
				kept = prov_add_names(a, copy, &d, "parameter", "name");
		}
		if (!kept)
			d.verdict = IOT_DENY;
	}
	r = xml_node_new(a, NS_IOT_PROVISIONING, resp[kind]);
	if (!r || prov_copy_attrs(a, r, rq->payload) < 0 || xml_attr_set(a, r, "jid", other_bare) < 0 ||
	    xml_attr_set(a, r, "result", d.verdict == IOT_ALLOW ? "true" : "false") < 0)
		goto oom;
	while (d.verdict == IOT_ALLOW && copy && copy->children) {
		struct xml_node *ch = copy->children;

		xml_node_remove(ch);
		if (ch->name)
			xml_node_append(r, ch);
	}
	iq_reply_result(rq, r);
	return;
oom:
	iq_reply_error(rq, "internal-server-error", NULL);
}

/* ---- The service: owners managing rules ---- */

enum prov_op_kind {
	PROV_OP_RULE = 1,	/* store a rule */
	PROV_OP_DELETE,		/* delete rules */
	PROV_OP_DEVICES,	/* list the owner's things */
	PROV_OP_CLEAR,		/* clearCache of a thing at home elsewhere (owner checked) */
};

struct prov_op {
	struct iq_async base;		/* first */
	enum prov_op_kind kind;
	struct iot_rule *rule;		/* PROV_OP_RULE, until installed */
	char *nodes;			/* PROV_OP_DELETE: only rules of these nodes; NULL: all */
	size_t max_rules;
	uint32_t offset, max, seen;	/* PROV_OP_DEVICES */
	bool more;
	/*
	 * The thing is at home on another worker, whose table the service
	 * does not read: the store checks that it is the requester's.
	 */
	bool check_owner;
	struct strbuf out;		/* PROV_OP_DEVICES: the <thing/> elements */
	int64_t now;
	char thing[JID_MAX];
	char user[JID_PART_MAX + 1];	/* the thing's localpart ("" when not local) */
	char owner[JID_MAX];
};

static int prov_devices_one(void *arg, const struct iot_found *t)
{
	struct prov_op *op = arg;

	if (op->seen++ < op->offset)
		return 0;
	if (op->out.len >= PROV_RESULT_MAX_BYTES || op->seen > op->offset + op->max) {
		op->more = true;
		return 1;
	}
	registry_found_append(&op->out, t);
	return op->out.oom ? -ENOMEM : 0;
}

/*
 * Storage side of the owner's requests. A rule is checked against the
 * store's count too (the table in memory could lag behind a concurrent
 * request); getDevices walks the owner's things in registration order.
 */
static int prov_drop_rule(void *arg, const char *thing, struct iot_rule *r)
{
	(void)arg;
	(void)thing;
	free(r);
	return 0;
}

/* Storage side: whether op->thing is provisioned (-ENOENT) and the requester's (-EPERM). */
static int prov_op_check_owner(struct storage *st, struct prov_op *op)
{
	char owner[JID_MAX];
	bool clear_cache;
	int ret;

	ret = iot_db_thing_load(st, op->thing, owner, sizeof(owner), &clear_cache, prov_drop_rule,
				NULL);
	if (ret < 0)
		return ret;
	if (!owner[0])
		return -ENOENT;
	return strcmp(owner, op->owner) == 0 ? 0 : -EPERM;
}

static int prov_op_run(struct storage *st, struct storage_req *req)
{
	struct prov_op *op = (struct prov_op *)req;

	if (op->check_owner) {
		int ret = prov_op_check_owner(st, op);

		if (ret < 0)
			return ret;
	}
	switch (op->kind) {
	case PROV_OP_CLEAR:
		return 0;
	case PROV_OP_RULE:
		return iot_db_rule_put(st, op->thing, op->user[0] ? op->user : NULL, op->rule,
				       op->max_rules, op->now);
	case PROV_OP_DELETE:
		return iot_db_rules_delete(st, op->thing, op->nodes);
	case PROV_OP_DEVICES:
		return iot_db_things(st, op->owner, NULL, prov_devices_one, op);
	}
	return -EINVAL;
}

/*
 * A rule was stored: into memory (if the thing is still the requester's:
 * a disown in between makes it moot), then the thing is told, so that a
 * thing caching decisions asks again (XEP-0324 3.6). A friendship rule
 * for one JID is also recommended to, or withdrawn from, the thing.
 */
static void prov_rule_stored(struct worker *w, const char *thing, const char *owner,
			     struct iot_rule **rp)
{
	struct prov_thing *t = prov_find(prov_at(w), thing);
	struct iot_rule *r = *rp;
	struct arena a;
	struct xml_node *m;

	if (!t || strcmp(t->owner, owner) != 0)
		return;
	*rp = NULL;
	prov_rule_install(t, r);
	prov_clear_cache(w, t);
	log_info("provisioning.rule", "thing=%s kind=%s range=%s result=%s", t->jid,
		 iot_kind_name(r->kind), iot_range_name(r->range), r->result ? "true" : "false");
	/* XEP-0324 3.2.3/3.2.4: a friendship with one JID recommended, or ended. */
	if (r->kind != IOT_RULE_FRIEND || r->range != IOT_RANGE_JID)
		return;
	arena_init(&a, PROV_ARENA_CHUNK);
	m = xml_node_new(&a, XML_NS_CLIENT, "message");
	if (m && xml_attr_set(&a, m, "from", prov.domain) == 0 &&
	    xml_attr_set(&a, m, "to", t->jid) == 0 &&
	    prov_child(&a, m, NS_IOT_PROVISIONING, r->result ? "friend" : "unfriend", "jid",
		       r->remote))
		prov_send(w, m);
	arena_release(&a);
}

/* deleteRules done: the same rules leave the table; the thing clears its cache. */
static void prov_rules_deleted(struct worker *w, const char *thing, const char *owner,
			       const char *nodes)
{
	struct prov_thing *t = prov_find(prov_at(w), thing);

	if (!t || strcmp(t->owner, owner) != 0)
		return;
	for (struct iot_rule **pp = &t->rules; *pp;) {
		struct iot_rule *r = *pp;

		if (nodes && strcmp(r->nodes, nodes) != 0) {
			pp = &r->next;
			continue;
		}
		*pp = r->next;
		free(r);
		t->nrules--;
	}
	prov_clear_cache(w, t);
}

/*
 * getDevices done: the <thing/> elements collected on the storage thread
 * (text, escaped there) wrapped in XEP-0347's <found/> and parsed into a
 * tree for the answer.
 */
static void prov_devices_answer(struct prov_op *op, struct session *s)
{
	struct worker *w = iq_async_worker(&op->base);
	struct arena *a = iq_async_arena(&op->base);
	struct strbuf text = STRBUF_INIT;
	struct xml_node *found;

	strbuf_printf(&text, "<found xmlns='%s' more='%s'>", NS_IOT_DISCOVERY,
		      op->more ? "true" : "false");
	if (op->out.len)
		strbuf_append(&text, op->out.data, op->out.len);
	strbuf_puts(&text, "</found>");
	found = text.oom ? NULL : stored_xml_parse(w->xml, a, text.data, text.len);
	if (found)
		iq_async_result(&op->base, s, found);
	else
		iq_async_error(&op->base, s, "internal-server-error", NULL);
	strbuf_free(&text);
}

static void prov_op_done(struct storage_req *req)
{
	struct prov_op *op = (struct prov_op *)req;
	struct worker *w = iq_async_worker(&op->base);
	struct session *s = iq_async_session(&op->base);
	unsigned home = prov_home(op->thing);

	/* The table entry is the thing's home's: changed there. */
	if (req->result == 0 && op->kind == PROV_OP_RULE) {
		if (home == w->id)
			prov_rule_stored(w, op->thing, op->owner, &op->rule);
		else if (prov_post_update(w, home, PROV_UP_RULE, op->thing, op->owner, op->rule,
					  NULL) == 0)
			op->rule = NULL;
	} else if (req->result == 0 && op->kind == PROV_OP_DELETE) {
		if (home == w->id)
			prov_rules_deleted(w, op->thing, op->owner, op->nodes);
		else if (prov_post_update(w, home, PROV_UP_DELETED, op->thing, op->owner, NULL,
					  op->nodes) == 0)
			op->nodes = NULL;
	} else if (req->result == 0 && op->kind == PROV_OP_CLEAR) {
		prov_post_update(w, home, PROV_UP_CLEAR, op->thing, op->owner, NULL, NULL);
	}
	/* Cluster mode: the other nodes' tables follow the store. */
	if (req->result == 0 && (op->kind == PROV_OP_RULE || op->kind == PROV_OP_DELETE))
		cluster_provisioning_changed(w, op->thing);
	if (s) {
		if (op->check_owner && req->result == -ENOENT)
			iq_async_error(&op->base, s, "item-not-found", "not a provisioned thing");
		else if (op->check_owner && req->result == -EPERM)
			iq_async_error(&op->base, s, "forbidden",
				       "only the thing's owner manages its rules");
		else if (req->result == -ENOSPC)
			iq_async_error(&op->base, s, "resource-constraint",
				       "the thing has max_thing_rules rules already");
		else if (req->result < 0)
			iq_async_error(&op->base, s, "internal-server-error", NULL);
		else if (op->kind == PROV_OP_DEVICES)
			prov_devices_answer(op, s);
		else
			iq_async_result(&op->base, s, NULL);
	}
	free(op->rule);
	free(op->nodes);
	strbuf_free(&op->out);
	iq_async_free(&op->base);
}

/*
 * The thing an owner names ('jid'), its bare JID into thing. At home
 * here: checked (provisioned and owned by the requester) and returned.
 * At home on another worker: NULL with *elsewhere set, the check left to
 * the store (check_owner). Else NULL after answering rq with an error.
 */
static struct prov_thing *prov_owned_thing(struct iq_request *rq, const char *jid,
					   char thing[JID_MAX], bool *elsewhere)
{
	char bare[JID_MAX];
	struct prov_thing *t;
	struct jid j;

	*elsewhere = false;
	if (!jid || jid_parse(&j, jid, strlen(jid)) < 0) {
		iq_reply_error(rq, "bad-request", "'jid' must be the thing's JID");
		return NULL;
	}
	prov_bare(&j, thing);
	if (prov_home(thing) != rq->w->id) {
		*elsewhere = true;
		return NULL;
	}
	t = prov_find(prov_at(rq->w), thing);
	if (!t) {
		iq_reply_error(rq, "item-not-found", "not a provisioned thing");
		return NULL;
	}
	prov_bare(rq->from, bare);
	if (strcmp(bare, t->owner) != 0) {
		iq_reply_error(rq, "forbidden", "only the thing's owner manages its rules");
		return NULL;
	}
	return t;
}

/* The payload's name as a static string, for errors echoing it (iq_async_new keeps it). */
static const char *prov_static_name(const struct xml_node *p)
{
	static const char *const names[] = {
		"isFriendRule", "canReadRule", "canControlRule", "deleteRules", "getDevices",
		"clearCache",
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(p->name, names[i]) == 0)
			return names[i];
	return "rule";
}

/*
 * A storage-backed answer to an owner's request (iq_async.h: bounded per
 * connection, answered to the requester's session when done). thing is
 * its bare JID, or NULL; its localpart ties stored rules to the account.
 * NULL after rq was answered with an error.
 */
static struct prov_op *prov_op_new(struct iq_request *rq, enum prov_op_kind kind,
				   const char *thing)
{
	const char *ns = strcmp(rq->payload->ns, NS_IOT_PROV_OWNER) == 0 ? NS_IOT_PROV_OWNER :
			 NS_IOT_PROVISIONING;
	struct prov_op *op = iq_async_new(rq, sizeof(*op), "", ns, prov_static_name(rq->payload),
					  prov_op_run, prov_op_done);
	const char *domain = rq->w->srv->cfg->domain;
	const char *at;

	if (!op)
		return NULL;
	op->kind = kind;
	op->now = prov_now();
	op->out = (struct strbuf)STRBUF_INIT;
	prov_bare(rq->from, op->owner);
	if (thing) {
		snprintf(op->thing, sizeof(op->thing), "%s", thing);
		at = strchr(thing, '@');
		if (at && strcmp(at + 1, domain) == 0 && (size_t)(at - thing) < sizeof(op->user))
			snprintf(op->user, sizeof(op->user), "%.*s", (int)(at - thing), thing);
	}
	return op;
}

/*
 * isFriendRule / canReadRule / canControlRule: parsed and checked here
 * (owner, limit), stored, then installed in memory by the completion;
 * the answer waits for the store.
 */
static void prov_owner_rule(struct iq_request *rq)
{
	char thing[JID_MAX], bare[JID_MAX];
	const char *key, *err = NULL;
	struct iot_rule *r = NULL;
	struct prov_thing *t;
	struct prov_op *op;
	bool replaces = false, elsewhere;
	int ret;

	ret = iot_rule_parse(rq->payload, thing, sizeof(thing), &key, &r, &err);
	if (ret == -ENOMEM) {
		iq_reply_error(rq, "internal-server-error", NULL);
		return;
	}
	if (ret < 0) {
		iq_reply_error(rq, "bad-request", err);
		return;
	}
	t = prov_owned_thing(rq, thing, bare, &elsewhere);
	if (!t && !elsewhere)
		goto out;
	for (struct iot_rule *o = t ? t->rules : NULL; o; o = o->next)
		replaces |= iot_rule_same_key(o, r);
	/* At home elsewhere, the store's count decides alone (-ENOSPC). */
	if (t && !replaces && t->nrules >= rq->w->srv->cfg->max_thing_rules) {
		iq_reply_error(rq, "resource-constraint", "the thing has max_thing_rules rules already");
		goto out;
	}
	op = prov_op_new(rq, PROV_OP_RULE, bare);
	if (!op)
		goto out;
	op->check_owner = elsewhere;
	op->rule = r;
	op->max_rules = rq->w->srv->cfg->max_thing_rules;
	iq_async_submit(rq, &op->base);
	return;
out:
	free(r);
}

/* deleteRules: every rule of the thing, or (with <nd/>) those of exactly these nodes. */
static void prov_owner_delete(struct iq_request *rq)
{
	struct strbuf nodes = STRBUF_INIT;
	char bare[JID_MAX];
	bool elsewhere;
	struct prov_thing *t = prov_owned_thing(rq, xml_attr_get(rq->payload, "jid"), bare,
						&elsewhere);
	struct prov_op *op;

	if (!t && !elsewhere)
		return;
	for (struct xml_node *ch = xml_first_element(rq->payload); ch; ch = xml_next_element(ch)) {
		const char *id = xml_attr_get(ch, "nodeId");

		if (strcmp(ch->name, "nd") != 0 && strcmp(ch->name, "node") != 0)
			continue;
		if (!id || !id[0] || strlen(id) > IOT_NAME_MAX) {
			iq_reply_error(rq, "bad-request", "<nd/> needs a 'nodeId'");
			strbuf_free(&nodes);
			return;
		}
		if (nodes.data && iot_list_has(nodes.data, id))
			continue;
		if (nodes.len)
			strbuf_append(&nodes, (char[]){ IOT_SEP }, 1);
		strbuf_puts(&nodes, id);
	}
	op = prov_op_new(rq, PROV_OP_DELETE, bare);
	if (!op || nodes.oom) {
		strbuf_free(&nodes);
		if (op) {
			iq_reply_error(rq, "internal-server-error", NULL);
			free(op);	/* never submitted: nothing counted, nothing in the arena */
		}
		return;
	}
	op->nodes = nodes.data;	/* taken over (NULL: every rule) */
	op->check_owner = elsewhere;
	iq_async_submit(rq, &op->base);
}

/*
 * clearCache from the owner: passed on to the thing (now, or when it is
 * back); at home elsewhere, once the store confirmed the owner.
 */
static void prov_owner_clear_cache(struct iq_request *rq)
{
	char bare[JID_MAX];
	bool elsewhere;
	struct prov_thing *t = prov_owned_thing(rq, xml_attr_get(rq->payload, "jid"), bare,
						&elsewhere);
	struct prov_op *op;

	if (t) {
		prov_clear_cache(rq->w, t);
		iq_reply_result(rq, NULL);
		return;
	}
	if (!elsewhere)
		return;
	op = prov_op_new(rq, PROV_OP_CLEAR, bare);
	if (!op)
		return;
	op->check_owner = true;
	iq_async_submit(rq, &op->base);
}

/* Parses an optional non-negative integer attribute. 0 or -1. */
static int prov_uint_attr(const struct xml_node *el, const char *name, uint32_t def,
			  uint32_t *out)
{
	const char *v = xml_attr_get(el, name);
	char *end;
	unsigned long n;

	*out = def;
	if (!v)
		return 0;
	if (!v[0] || strspn(v, "0123456789") != strlen(v) || strlen(v) > 9)
		return -1;
	n = strtoul(v, &end, 10);
	*out = (uint32_t)n;
	return 0;
}

/* getDevices: the owner's things in the registry's <found/> form, paged. */
static void prov_owner_devices(struct iq_request *rq)
{
	uint32_t offset, max;
	struct prov_op *op;

	if (prov_uint_attr(rq->payload, "offset", 0, &offset) < 0 ||
	    prov_uint_attr(rq->payload, "maxCount", PROV_DEVICES_DEFAULT, &max) < 0 || max == 0) {
		iq_reply_error(rq, "bad-request", "offset and maxCount must be numbers (maxCount > 0)");
		return;
	}
	op = prov_op_new(rq, PROV_OP_DEVICES, NULL);
	if (!op)
		return;
	op->offset = offset;
	op->max = max > PROV_DEVICES_MAX ? PROV_DEVICES_MAX : max;
	iq_async_submit(rq, &op->base);
}

/* ---- Across workers: things at home elsewhere ---- */

struct prov_update {
	struct worker_msg msg;		/* first */
	enum prov_update_kind kind;
	struct iot_rule *rule;		/* PROV_UP_RULE, owned by the message */
	char *nodes;			/* PROV_UP_DELETED: these nodes' rules (NULL: all) */
	char thing[JID_MAX];
	char owner[JID_MAX];		/* the owner the change was checked for ("" none) */
};

static void prov_update_arrived(struct worker *w, struct worker_msg *m)
{
	struct prov_update *u = (struct prov_update *)m;
	struct arena_mark mark = arena_mark(&w->tmp);
	struct prov_thing *t;

	switch (u->kind) {
	case PROV_UP_OWNED:
		prov_owned_here(w, u->thing, u->owner);
		break;
	case PROV_UP_RELEASED:
		prov_released_here(w, u->thing);
		break;
	case PROV_UP_RULE:
		prov_rule_stored(w, u->thing, u->owner, &u->rule);
		break;
	case PROV_UP_DELETED:
		prov_rules_deleted(w, u->thing, u->owner, u->nodes);
		break;
	case PROV_UP_CLEAR:
		t = prov_find(prov_at(w), u->thing);
		if (t && strcmp(t->owner, u->owner) == 0)
			prov_clear_cache(w, t);
		break;
	case PROV_UP_REFRESH:
		if (prov_refresh_submit(w, u->thing, strlen(u->thing), true) < 0)
			log_warn("provisioning.refresh_failed", "thing=%s msg=\"out of memory\"",
				 u->thing);
		break;
	case PROV_UP_RELOAD:
		if (prov_reload_submit(w, u->thing) < 0)
			log_warn("provisioning.reload_failed", "thing=%s msg=\"out of memory\"",
				 u->thing);
		break;
	}
	arena_rewind(&w->tmp, mark);
	free(u->rule);
	free(u->nodes);
	free(u);
}

/*
 * Posts a change of thing to its home worker (see enum prov_update_kind).
 * rule and nodes are taken over on success only. 0 or -ENOMEM (logged:
 * the change is then missing in memory until the thing's next refresh).
 */
static int prov_post_update(struct worker *w, unsigned home, int kind, const char *thing,
			    const char *owner, struct iot_rule *rule, char *nodes)
{
	struct prov_update *u = calloc(1, sizeof(*u));

	if (!u) {
		log_error("provisioning.update_failed", "thing=%s msg=\"out of memory\"", thing);
		return -ENOMEM;
	}
	u->kind = (enum prov_update_kind)kind;
	u->rule = rule;
	u->nodes = nodes;
	snprintf(u->thing, sizeof(u->thing), "%s", thing);
	snprintf(u->owner, sizeof(u->owner), "%s", owner);
	worker_post(w, home, &u->msg, prov_update_arrived);
	return 0;
}

/* A thing's isFriend/canRead/canControl, carried to its home, where its rules are. */
struct prov_ask_home {
	struct worker_msg msg;		/* first */
	enum iot_rule_kind kind;
	struct arena a;
	struct xml_node *iq;
	char *from, *to;
};

static void prov_ask_home_arrived(struct worker *w, struct worker_msg *m)
{
	struct prov_ask_home *h = (struct prov_ask_home *)m;
	struct arena_mark mark = arena_mark(&w->tmp);
	struct jid from, to;
	struct iq_request rq = {
		.w = w, .iq = h->iq, .from = &from, .to = &to, .scope = IQ_SCOPE_SERVER,
	};

	/* Answered by routing (no connection here): to the thing's session, at this worker. */
	rq.payload = xml_first_element(h->iq);
	if (rq.payload && jid_parse(&from, h->from, strlen(h->from)) == 0 &&
	    jid_parse(&to, h->to, strlen(h->to)) == 0)
		prov_thing_asks(&rq, h->kind);
	arena_rewind(&w->tmp, mark);
	arena_release(&h->a);
	free(h);
}

/*
 * A thing asks the service: decided where the thing is at home (its rules
 * are in that worker's table), here or after a post there.
 */
static void prov_thing_asks_home(struct iq_request *rq, enum iot_rule_kind kind)
{
	char bare[JID_MAX];
	unsigned home;
	struct prov_ask_home *h;

	prov_bare(rq->from, bare);
	home = prov_home(bare);
	if (home == rq->w->id) {
		prov_thing_asks(rq, kind);
		return;
	}
	h = calloc(1, sizeof(*h));
	if (h) {
		arena_init(&h->a, PROV_ARENA_CHUNK);
		h->iq = xml_node_clone(&h->a, rq->iq);
		h->from = arena_strndup(&h->a, rq->from->buf, rq->from->len);
		h->to = arena_strndup(&h->a, rq->to->buf, rq->to->len);
	}
	if (!h || !h->iq || !h->from || !h->to) {
		if (h) {
			arena_release(&h->a);
			free(h);
		}
		iq_reply_error(rq, "internal-server-error", NULL);
		return;
	}
	h->kind = kind;
	worker_post(rq->w, home, &h->msg, prov_ask_home_arrived);
}

/* A proof made at the service, for another worker's copy (prov_tokens.h). */
struct prov_proof_msg {
	struct worker_msg msg;		/* first */
	char token[PROV_TOKEN_LEN + 1];
	char jid[JID_MAX];
};

static void prov_proof_arrived(struct worker *w, struct worker_msg *m)
{
	struct prov_proof_msg *pm = (struct prov_proof_msg *)m;

	if (prov_token_proof_copy(w->id, pm->token, pm->jid) < 0)
		log_warn("provisioning.proof_failed", "msg=\"could not keep a token proof\"");
	free(pm);
}

/*
 * Sends a new proof to every other worker. Posted before the answer that
 * gives the requester its token is routed: a request naming the token
 * reaches a thing's home after the proof (each worker's mailbox keeps the
 * order of what was queued to it, and the request is queued later).
 */
static void prov_share_proof(struct worker *w, const char *token, const char *jid)
{
	for (unsigned k = 0; k < prov.nparts; k++) {
		struct prov_proof_msg *pm;

		if (k == w->id)
			continue;
		pm = calloc(1, sizeof(*pm));
		if (!pm) {
			log_warn("provisioning.proof_failed", "msg=\"out of memory\"");
			continue;
		}
		snprintf(pm->token, sizeof(pm->token), "%s", token);
		snprintf(pm->jid, sizeof(pm->jid), "%s", jid);
		worker_post(w, k, &pm->msg, prov_proof_arrived);
	}
}

/* ---- The service: tokens (XEP-0324 3.1.4) ---- */

/* The payload's base64 text (whitespace ignored: certificates come wrapped), decoded; or NULL. */
static unsigned char *prov_b64_payload(struct iq_request *rq, size_t *len)
{
	const char *text = xml_text(iq_arena(rq), rq->payload);
	size_t n = text ? strlen(text) : 0, o = 0;
	char *clean, *out = NULL;

	if (n == 0 || n > 2 * PROV_TOKEN_CERT_MAX)
		return NULL;
	clean = malloc(n + 1);
	if (!clean)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (!isspace((unsigned char)text[i]))
			clean[o++] = text[i];
	clean[o] = '\0';
	if (o)
		out = sasl_b64_decode(clean, o, len);
	free(clean);
	return (unsigned char *)out;
}

/* An answer element in the XEP-0324 namespace with seqnr or token, and base64 text. */
static void prov_token_reply(struct iq_request *rq, const char *name, const char *attr,
			     const char *value, const unsigned char *data, size_t len)
{
	struct arena *a = iq_arena(rq);
	struct xml_node *el = xml_node_new(a, NS_IOT_PROVISIONING, name);
	char *b64 = data ? sasl_b64_encode((const char *)data, len) : NULL;

	if (!el || xml_attr_set(a, el, attr, value) < 0 || (data && !b64) ||
	    (b64 && xml_node_add_text(a, el, b64, strlen(b64)) < 0))
		iq_reply_error(rq, "internal-server-error", NULL);
	else
		iq_reply_result(rq, el);
	free(b64);
}

/* getToken: a challenge encrypted to the certificate's key. */
static void prov_get_token(struct iq_request *rq)
{
	unsigned char *der, *ct = NULL;
	size_t len = 0, ct_len = 0;
	char from[JID_MAX], num[16];
	uint32_t seqnr = 0;
	int ret;

	der = prov_b64_payload(rq, &len);
	if (!der) {
		iq_reply_error(rq, "bad-request", "a base64 X.509 certificate is needed");
		return;
	}
	prov_bare(rq->from, from);
	ret = prov_token_challenge(from, der, len, prov_now(), &seqnr, &ct, &ct_len);
	free(der);
	if (ret < 0) {
		iq_reply_error(rq, ret == -EINVAL ? "bad-request" : "internal-server-error",
			       ret == -EINVAL ? "not an X.509 certificate with an RSA key" : NULL);
		return;
	}
	snprintf(num, sizeof(num), "%" PRIu32, seqnr);
	prov_token_reply(rq, "getTokenChallenge", "seqnr", num, ct, ct_len);
	free(ct);
}

/* getTokenChallengeResponse: the decrypted challenge earns the token. */
static void prov_token_answer(struct iq_request *rq)
{
	char from[JID_MAX], token[PROV_TOKEN_LEN + 1], qb[128];
	const char *sn = xml_attr_get(rq->payload, "seqnr");
	unsigned char *resp;
	size_t len = 0;
	uint32_t seqnr;
	int ret;

	if (prov_uint_attr(rq->payload, "seqnr", 0, &seqnr) < 0 || !sn) {
		iq_reply_error(rq, "bad-request", "'seqnr' must name the challenge");
		return;
	}
	resp = prov_b64_payload(rq, &len);
	if (!resp) {
		iq_reply_error(rq, "bad-request", "the decrypted challenge, in base64, is needed");
		return;
	}
	prov_bare(rq->from, from);
	ret = prov_token_respond(from, seqnr, resp, len, prov_now(), token);
	OPENSSL_cleanse(resp, len);
	free(resp);
	log_info("provisioning.token", "from=%s result=%s",
		 log_sanitize(qb, sizeof(qb), from, strlen(from)),
		 ret == 0 ? "ok" : ret == -EACCES ? "wrong" : "no_challenge");
	/* Requests naming the token are decided at the things' homes: they get the proof too. */
	if (ret == 0)
		prov_share_proof(rq->w, token, from);
	if (ret == -ENOENT)
		iq_reply_error(rq, "item-not-found", NULL);
	else if (ret == -EACCES)
		iq_reply_error(rq, "bad-request", "wrong response to the challenge");
	else if (ret < 0)
		iq_reply_error(rq, "internal-server-error", NULL);
	else
		prov_token_reply(rq, "getTokenResponse", "token", token, NULL, 0);
}

/* ---- The service: dispatch ---- */

static void prov_disco_info(struct iq_request *rq)
{
	static const char *const features[] = {
		NS_DISCO_INFO, NS_IOT_PROVISIONING, NS_IOT_PROV_OWNER, NS_IOT_SENSORDATA,
		NS_IOT_CONTROL,
	};
	struct arena *a = iq_arena(rq);
	struct xml_node *q = xml_node_new(a, NS_DISCO_INFO, "query"), *id;

	if (!q || xml_attr_get(rq->payload, "node")) {
		iq_reply_error(rq, q ? "item-not-found" : "internal-server-error", NULL);
		return;
	}
	id = xml_node_add_child(a, q, NULL, "identity");
	if (!id || xml_attr_set(a, id, "category", "component") < 0 ||
	    xml_attr_set(a, id, "type", "generic") < 0 ||
	    xml_attr_set(a, id, "name", "IoT provisioning") < 0)
		goto oom;
	for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++)
		if (!prov_child(a, q, NULL, "feature", "var", features[i]))
			goto oom;
	iq_reply_result(rq, q);
	return;
oom:
	iq_reply_error(rq, "internal-server-error", NULL);
}

static bool prov_is(const struct xml_node *p, const char *name)
{
	return strcmp(p->name, name) == 0 &&
	       (strcmp(p->ns, NS_IOT_PROVISIONING) == 0 || strcmp(p->ns, NS_IOT_PROV_OWNER) == 0);
}

/*
 * The service's iq payloads. The owner's elements are taken in either
 * namespace (the owner interface's, or XEP-0324's own): clients written
 * before the owner interface used the latter.
 */
static void prov_dispatch(struct iq_request *rq, bool get)
{
	struct xml_node *p = rq->payload;

	if (get && strcmp(p->ns, NS_DISCO_INFO) == 0 && strcmp(p->name, "query") == 0)
		prov_disco_info(rq);
	else if (get && strcmp(p->ns, NS_DISCO_ITEMS) == 0 && strcmp(p->name, "query") == 0)
		iq_reply_result(rq, xml_node_new(iq_arena(rq), NS_DISCO_ITEMS, "query"));
	else if (get && prov_is(p, "isFriend"))
		prov_thing_asks_home(rq, IOT_RULE_FRIEND);
	else if (get && prov_is(p, "canRead"))
		prov_thing_asks_home(rq, IOT_RULE_READ);
	else if (get && prov_is(p, "canControl"))
		prov_thing_asks_home(rq, IOT_RULE_CONTROL);
	else if (get && prov_is(p, "getDevices"))
		prov_owner_devices(rq);
	else if (get && prov_is(p, "getToken"))
		prov_get_token(rq);
	else if (get && prov_is(p, "getTokenChallengeResponse"))
		prov_token_answer(rq);
	else if (!get && (prov_is(p, "isFriendRule") || prov_is(p, "canReadRule") ||
			  prov_is(p, "canControlRule")))
		prov_owner_rule(rq);
	else if (!get && prov_is(p, "deleteRules"))
		prov_owner_delete(rq);
	else if (!get && prov_is(p, "clearCache"))
		prov_owner_clear_cache(rq);
	else
		iq_reply_error(rq, "service-unavailable", NULL);
}

void provisioning_service_route(struct worker *w, struct conn *src, struct xml_node *st,
				const struct jid *from, const struct jid *to)
{
	const char *type = stanza_type(st);
	struct arena_mark mark = arena_mark(&w->tmp);
	struct iq_request rq = {
		.w = w, .conn = src, .iq = st, .from = from, .to = to, .scope = IQ_SCOPE_SERVER,
	};
	bool get = strcmp(type, "get") == 0;

	if (stanza_kind(st) != STANZA_IQ) {
		/* Nothing reads messages here; presence is ignored (no friendship needed). */
		if (stanza_kind(st) == STANZA_MESSAGE && !stanza_is_error(st))
			router_bounce_w(w, src, st, "service-unavailable");
		return;
	}
	/* Answers to the service's clearCache: nothing more to do. */
	if (!get && strcmp(type, "set") != 0)
		return;
	/*
	 * Only local clients ask, on their stream here or from their home
	 * worker (the answer is routed back there).
	 */
	if (src ? !src->sess : !router_from_local_session(w, src, st))
		return;
	rq.payload = xml_first_element(st);
	if (!rq.payload || jid_has_local(to) || jid_has_resource(to))
		iq_reply_error(&rq, "service-unavailable", NULL);
	else
		prov_dispatch(&rq, get);
	arena_rewind(&w->tmp, mark);
}
