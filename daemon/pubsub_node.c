/* SPDX-License-Identifier: MIT */
/*
 * The pubsub data model: the registry of hosts and nodes, configuration
 * forms, and access decisions. See pubsub_node.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "pubsub_node.h"
#include "roster.h"

/* Buckets of each index start here and double when the load passes 1. */
#define PS_INITIAL_BUCKETS	64

struct ps_registry {
	struct ps_node **nodes;		/* by (host, name) */
	struct ps_node **ids;		/* by id, same bucket count */
	size_t nbuckets;
	size_t nnodes;
	struct ps_host **hosts;
	size_t nhbuckets;
	size_t nhosts;
	uint64_t rng[2];		/* xorshift128+ state for ids (not secrets) */
};

/*
 * One registry per worker: the PEP hosts of the accounts at home there
 * and, on worker 0, the service's. Each thread works on its own
 * (ps_registry_use); the loader at startup fills them all in turn. Node
 * ids and the hash seed are shared by all of them; item sequence numbers
 * come from the store (pubsub_store.h).
 */
static struct ps_registry *regs;
static unsigned nregs;
static __thread struct ps_registry *cur;
static _Atomic uint64_t next_id;
static uint64_t id_end;			/* past the reserved block; 0: none reserved */
static uint32_t seed;			/* random: chains cannot be forced by chosen names */

#define reg (*cur)

/* ---- Hashing and randomness ---- */

static uint32_t ps_hash_bytes(uint32_t h, const char *s, size_t len)
{
	/* FNV-1a, started from the random seed. */
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 16777619u;
	}
	return h;
}

/* A node's index hash: its host's and its name's together. */
static uint32_t ps_node_hash(const struct ps_host *h, const char *name, size_t len)
{
	uint32_t x = ps_hash_bytes(seed ^ h->hash, name, len);

	return x ^ (x >> 15);
}

/* Mixes a node id for its index (ids are sequential). */
static uint32_t ps_id_hash(uint64_t id)
{
	id ^= id >> 33;
	id *= 0xff51afd7ed558ccdULL;
	id ^= id >> 33;
	return (uint32_t)id;
}

/* xorshift128+: fast, seeded from getrandom(); ids need uniqueness, not secrecy. */
static uint64_t ps_rng_next(void)
{
	uint64_t s1 = reg.rng[0];
	const uint64_t s0 = reg.rng[1];

	reg.rng[0] = s0;
	s1 ^= s1 << 23;
	reg.rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
	return reg.rng[1] + s0;
}

void ps_random_hex(char *out, size_t digits)
{
	static const char hex[] = "0123456789abcdef";
	uint64_t r = 0;

	for (size_t i = 0; i < digits; i++) {
		if (i % 16 == 0)
			r = ps_rng_next();
		out[i] = hex[r & 15];
		r >>= 4;
	}
	out[digits] = '\0';
}

/* ---- Registry ---- */

/*
 * The seed and the id generator come from getrandom(): node chains are
 * keyed by names that clients choose, which must not be able to force
 * collisions.
 */
static int ps_registry_setup(struct ps_registry *r)
{
	if (getrandom(r->rng, sizeof(r->rng), 0) != sizeof(r->rng)) {
		r->rng[0] = (uint64_t)time(NULL) | 1;
		r->rng[1] = 0x9e3779b97f4a7c15ULL ^ (uint64_t)(uintptr_t)r;
	}
	if (!r->rng[0] && !r->rng[1])
		r->rng[0] = 1;
	r->nbuckets = PS_INITIAL_BUCKETS;
	r->nhbuckets = PS_INITIAL_BUCKETS;
	r->nodes = calloc(r->nbuckets, sizeof(*r->nodes));
	r->ids = calloc(r->nbuckets, sizeof(*r->ids));
	r->hosts = calloc(r->nhbuckets, sizeof(*r->hosts));
	return r->nodes && r->ids && r->hosts ? 0 : -ENOMEM;
}

int ps_registry_init(unsigned n)
{
	regs = calloc(n ? n : 1, sizeof(*regs));
	if (!regs)
		return -ENOMEM;
	nregs = n ? n : 1;
	cur = &regs[0];
	if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
		/* No entropy (early boot): a time-based seed still varies per run. */
		seed = (uint32_t)time(NULL) * 2654435761u;
	atomic_store(&next_id, 1);
	id_end = 0;
	for (unsigned k = 0; k < nregs; k++) {
		if (ps_registry_setup(&regs[k]) < 0) {
			ps_registry_free();
			return -ENOMEM;
		}
	}
	return 0;
}

void ps_registry_use(unsigned k)
{
	if (regs)
		cur = &regs[k < nregs ? k : 0];
}

unsigned ps_registry_count(void)
{
	return nregs;
}

/* Frees a node and everything it owns (it is out of every index). */
static void ps_node_free(struct ps_node *n)
{
	while (n->affils) {
		struct ps_affiliation *a = n->affils;

		n->affils = a->next;
		free(a);
	}
	while (n->subs) {
		struct ps_subscription *s = n->subs;

		n->subs = s->next;
		free(s);
	}
	ps_config_free(&n->cfg);
	free(n->creator);
	free(n->last_id);
	free(n->last_payload);
	free(n);
}

static void ps_registry_clear(struct ps_registry *r)
{
	for (size_t i = 0; r->hosts && i < r->nhbuckets; i++) {
		while (r->hosts[i]) {
			struct ps_host *h = r->hosts[i];

			r->hosts[i] = h->hnext;
			while (h->nodes) {
				struct ps_node *n = h->nodes;

				h->nodes = n->next;
				ps_node_free(n);
			}
			free(h);
		}
	}
	free(r->nodes);
	free(r->ids);
	free(r->hosts);
	memset(r, 0, sizeof(*r));
}

void ps_registry_free(void)
{
	for (unsigned k = 0; regs && k < nregs; k++)
		ps_registry_clear(&regs[k]);
	free(regs);
	regs = NULL;
	nregs = 0;
	cur = NULL;
}

void ps_host_each(void (*fn)(struct ps_host *h, void *arg), void *arg)
{
	for (size_t i = 0; cur && reg.hosts && i < reg.nhbuckets; i++) {
		struct ps_host *h, *next;

		for (h = reg.hosts[i]; h; h = next) {
			next = h->hnext;
			fn(h, arg);
		}
	}
}

struct ps_host *ps_host_find(const char *jid, size_t len)
{
	uint32_t hv;

	if (!cur || !reg.hosts)
		return NULL;
	hv = ps_hash_bytes(seed, jid, len);
	for (struct ps_host *h = reg.hosts[hv & (reg.nhbuckets - 1)]; h; h = h->hnext)
		if (h->hash == hv && h->jid_len == len && memcmp(h->jid, jid, len) == 0)
			return h;
	return NULL;
}

/* Doubles the host index (best effort: a failed grow only costs speed). */
static void ps_hosts_grow(void)
{
	size_t nb = reg.nhbuckets * 2;
	struct ps_host **nt = calloc(nb, sizeof(*nt));

	if (!nt)
		return;
	for (size_t i = 0; i < reg.nhbuckets; i++) {
		while (reg.hosts[i]) {
			struct ps_host *h = reg.hosts[i];

			reg.hosts[i] = h->hnext;
			h->hnext = nt[h->hash & (nb - 1)];
			nt[h->hash & (nb - 1)] = h;
		}
	}
	free(reg.hosts);
	reg.hosts = nt;
	reg.nhbuckets = nb;
}

struct ps_host *ps_host_get(const char *jid, size_t len, bool pep, size_t user_len)
{
	struct ps_host *h = ps_host_find(jid, len);
	size_t b;

	if (h)
		return h;
	h = calloc(1, sizeof(*h) + len + 1);
	if (!h)
		return NULL;
	memcpy(h->jid, jid, len);
	h->jid_len = len;
	h->pep = pep;
	h->user_len = user_len;
	h->hash = ps_hash_bytes(seed, jid, len);
	if (reg.nhosts >= reg.nhbuckets)
		ps_hosts_grow();
	b = h->hash & (reg.nhbuckets - 1);
	h->hnext = reg.hosts[b];
	reg.hosts[b] = h;
	reg.nhosts++;
	return h;
}

struct ps_node *ps_node_find(const struct ps_host *h, const char *name, size_t len)
{
	uint32_t hv;

	if (!h || !cur || !reg.nodes)
		return NULL;
	hv = ps_node_hash(h, name, len);
	for (struct ps_node *n = reg.nodes[hv & (reg.nbuckets - 1)]; n; n = n->hnext)
		if (n->hash == hv && n->host == h && n->name_len == len &&
		    memcmp(n->name, name, len) == 0)
			return n;
	return NULL;
}

struct ps_node *ps_node_by_id(uint64_t id)
{
	if (!cur || !reg.ids)
		return NULL;
	for (struct ps_node *n = reg.ids[ps_id_hash(id) & (reg.nbuckets - 1)]; n; n = n->idnext)
		if (n->id == id)
			return n;
	return NULL;
}

/* Doubles both node indexes together (they share the bucket count). */
static void ps_nodes_grow(void)
{
	size_t nb = reg.nbuckets * 2;
	struct ps_node **nt = calloc(nb, sizeof(*nt));
	struct ps_node **it = calloc(nb, sizeof(*it));

	if (!nt || !it) {
		free(nt);
		free(it);
		return;
	}
	for (size_t i = 0; i < reg.nbuckets; i++) {
		while (reg.nodes[i]) {
			struct ps_node *n = reg.nodes[i];

			reg.nodes[i] = n->hnext;
			n->hnext = nt[n->hash & (nb - 1)];
			nt[n->hash & (nb - 1)] = n;
		}
		while (reg.ids[i]) {
			struct ps_node *n = reg.ids[i];
			size_t b = ps_id_hash(n->id) & (nb - 1);

			reg.ids[i] = n->idnext;
			n->idnext = it[b];
			it[b] = n;
		}
	}
	free(reg.nodes);
	free(reg.ids);
	reg.nodes = nt;
	reg.ids = it;
	reg.nbuckets = nb;
}

/*
 * Ids only grow (loading raises next_id past every stored one, and the
 * reserved block lies above them all), so an id is never reused in a
 * process's life: a completion that finds its node by id finds that node
 * or none.
 */
struct ps_node *ps_node_add(struct ps_host *h, const char *name, size_t len, uint64_t id,
			    struct ps_config *cfg, const char *creator, int64_t created)
{
	struct ps_node *n = calloc(1, sizeof(*n) + len + 1);
	size_t b;

	if (!n || !(n->creator = strdup(creator ? creator : ""))) {
		free(n);
		ps_config_free(cfg);
		return NULL;
	}
	memcpy(n->name, name, len);
	n->name_len = len;
	n->host = h;
	n->cfg = *cfg;
	memset(cfg, 0, sizeof(*cfg));
	if (id) {
		uint64_t seen = atomic_load(&next_id);

		n->id = id;
		while (seen <= id && !atomic_compare_exchange_weak(&next_id, &seen, id + 1))
			;
	} else {
		n->id = atomic_fetch_add(&next_id, 1);
		/* The block is used up: a restart reserves the next one. */
		if (id_end && n->id >= id_end) {
			free(n->creator);
			ps_config_free(&n->cfg);
			free(n);
			return NULL;
		}
	}
	n->refs = 1;
	n->created = created;
	n->hash = ps_node_hash(h, name, len);
	if (reg.nnodes >= reg.nbuckets)
		ps_nodes_grow();
	b = n->hash & (reg.nbuckets - 1);
	n->hnext = reg.nodes[b];
	reg.nodes[b] = n;
	b = ps_id_hash(n->id) & (reg.nbuckets - 1);
	n->idnext = reg.ids[b];
	reg.ids[b] = n;
	n->next = h->nodes;
	h->nodes = n;
	h->nnodes++;
	reg.nnodes++;
	return n;
}

void ps_node_remove(struct ps_node *n)
{
	struct ps_node **pp;

	if (n->deleted)
		return;
	for (pp = &reg.nodes[n->hash & (reg.nbuckets - 1)]; *pp; pp = &(*pp)->hnext)
		if (*pp == n) {
			*pp = n->hnext;
			break;
		}
	for (pp = &reg.ids[ps_id_hash(n->id) & (reg.nbuckets - 1)]; *pp; pp = &(*pp)->idnext)
		if (*pp == n) {
			*pp = n->idnext;
			break;
		}
	for (pp = &n->host->nodes; *pp; pp = &(*pp)->next)
		if (*pp == n) {
			*pp = n->next;
			break;
		}
	n->host->nnodes--;
	reg.nnodes--;
	n->deleted = true;
	n->hnext = n->idnext = n->next = NULL;
	ps_node_unref(n);
}

void ps_node_ref(struct ps_node *n)
{
	n->refs++;
}

/*
 * Requests in flight hold references, so a node deleted meanwhile (or
 * whose account went away) is still safe to look at in their completion.
 */
void ps_node_unref(struct ps_node *n)
{
	/* Only removed nodes reach zero: the index holds one ref while live. */
	if (--n->refs == 0)
		ps_node_free(n);
}

unsigned ps_host_count_owned(const struct ps_host *h, const char *jid, size_t len)
{
	unsigned count = 0;

	for (const struct ps_node *n = h->nodes; n; n = n->next)
		if (ps_affil_get(n, jid, len) == PS_AFFIL_OWNER)
			count++;
	return count;
}

void ps_node_ids_reserved(uint64_t block)
{
	atomic_store(&next_id, (block << 32) + 1);
	id_end = (block + 1) << 32;
}

/* ---- Affiliations and subscriptions ---- */

enum ps_affil ps_affil_get(const struct ps_node *n, const char *bare, size_t len)
{
	for (const struct ps_affiliation *a = n->affils; a; a = a->next)
		if (a->jid_len == len && memcmp(a->jid, bare, len) == 0)
			return a->affil;
	return PS_AFFIL_NONE;
}

int ps_affil_set(struct ps_node *n, const char *bare, size_t len, enum ps_affil af)
{
	struct ps_affiliation **pp, *a;

	for (pp = &n->affils; *pp; pp = &(*pp)->next) {
		if ((*pp)->jid_len == len && memcmp((*pp)->jid, bare, len) == 0) {
			if (af == PS_AFFIL_NONE) {
				a = *pp;
				*pp = a->next;
				free(a);
			} else {
				(*pp)->affil = af;
			}
			return 0;
		}
	}
	if (af == PS_AFFIL_NONE)
		return 0;
	a = malloc(sizeof(*a) + len + 1);
	if (!a)
		return -ENOMEM;
	memcpy(a->jid, bare, len);
	a->jid[len] = '\0';
	a->jid_len = len;
	a->affil = af;
	/* Appended: the first owner stays first (its roster is the node's). */
	a->next = NULL;
	*pp = a;
	return 0;
}

unsigned ps_owner_count(const struct ps_node *n)
{
	unsigned c = 0;

	for (const struct ps_affiliation *a = n->affils; a; a = a->next)
		if (a->affil == PS_AFFIL_OWNER)
			c++;
	return c;
}

const struct ps_affiliation *ps_first_owner(const struct ps_node *n)
{
	for (const struct ps_affiliation *a = n->affils; a; a = a->next)
		if (a->affil == PS_AFFIL_OWNER)
			return a;
	return NULL;
}

struct ps_subscription *ps_sub_find(const struct ps_node *n, const char *jid, size_t len)
{
	for (struct ps_subscription *s = n->subs; s; s = s->next)
		if (s->jid_len == len && memcmp(s->jid, jid, len) == 0)
			return s;
	return NULL;
}

bool ps_sub_any_for_bare(const struct ps_node *n, const char *bare, size_t len)
{
	for (const struct ps_subscription *s = n->subs; s; s = s->next)
		if (s->jid_len >= len && memcmp(s->jid, bare, len) == 0 &&
		    (s->jid_len == len || s->jid[len] == '/'))
			return true;
	return false;
}

struct ps_subscription *ps_sub_add(struct ps_node *n, const char *jid, size_t len,
				   enum ps_sub_state state, const char *subid)
{
	struct ps_subscription *s = ps_sub_find(n, jid, len);

	if (s)
		return s;
	s = calloc(1, sizeof(*s) + len + 1);
	if (!s)
		return NULL;
	memcpy(s->jid, jid, len);
	s->jid_len = len;
	s->bare_len = memchr(jid, '/', len) ? (size_t)((const char *)memchr(jid, '/', len) - jid) : len;
	s->state = state;
	s->deliver = true;
	if (subid)
		snprintf(s->subid, sizeof(s->subid), "%s", subid);
	else
		ps_random_hex(s->subid, PS_SUBID_LEN);
	s->next = n->subs;
	n->subs = s;
	n->nsubs++;
	return s;
}

void ps_sub_remove(struct ps_node *n, struct ps_subscription *s)
{
	for (struct ps_subscription **pp = &n->subs; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			n->nsubs--;
			free(s);
			return;
		}
	}
}

/*
 * ---- Names ----
 * The protocol's words for the enums, in tables indexed by value, so
 * that names and parsing cannot disagree.
 */

static const char *const access_names[] = {
	[PS_ACCESS_OPEN] = "open",
	[PS_ACCESS_PRESENCE] = "presence",
	[PS_ACCESS_ROSTER] = "roster",
	[PS_ACCESS_WHITELIST] = "whitelist",
};

static const char *const publish_names[] = {
	[PS_PUBLISH_PUBLISHERS] = "publishers",
	[PS_PUBLISH_SUBSCRIBERS] = "subscribers",
	[PS_PUBLISH_OPEN] = "open",
};

static const char *const send_last_names[] = {
	[PS_SEND_LAST_NEVER] = "never",
	[PS_SEND_LAST_ON_SUB] = "on_sub",
	[PS_SEND_LAST_ON_SUB_AND_PRESENCE] = "on_sub_and_presence",
};

static const char *const affil_names[] = {
	[PS_AFFIL_NONE] = "none",
	[PS_AFFIL_OUTCAST] = "outcast",
	[PS_AFFIL_MEMBER] = "member",
	[PS_AFFIL_PUBLISH_ONLY] = "publish-only",
	[PS_AFFIL_PUBLISHER] = "publisher",
	[PS_AFFIL_OWNER] = "owner",
};

static const char *const sub_names[] = {
	[PS_SUB_NONE] = "none",
	[PS_SUB_PENDING] = "pending",
	[PS_SUB_UNCONFIGURED] = "unconfigured",
	[PS_SUB_SUBSCRIBED] = "subscribed",
};

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Index of s in a name table (entries may be NULL), or -1. */
static int ps_name_index(const char *const *names, size_t n, const char *s)
{
	for (size_t i = 0; s && i < n; i++)
		if (names[i] && strcmp(names[i], s) == 0)
			return (int)i;
	return -1;
}

const char *ps_access_name(enum ps_access a)
{
	return (size_t)a < ARRAY_LEN(access_names) && access_names[a] ? access_names[a] : "open";
}

const char *ps_publish_model_name(enum ps_publish_model m)
{
	return (size_t)m < ARRAY_LEN(publish_names) && publish_names[m] ? publish_names[m]
									 : "publishers";
}

const char *ps_send_last_name(enum ps_send_last s)
{
	return (size_t)s < ARRAY_LEN(send_last_names) && send_last_names[s] ? send_last_names[s]
									     : "never";
}

const char *ps_affil_name(enum ps_affil a)
{
	return (size_t)a < ARRAY_LEN(affil_names) ? affil_names[a] : "none";
}

const char *ps_sub_state_name(enum ps_sub_state s)
{
	return (size_t)s < ARRAY_LEN(sub_names) ? sub_names[s] : "none";
}

enum ps_access ps_access_parse(const char *s)
{
	int i = ps_name_index(access_names, ARRAY_LEN(access_names), s);

	return i < 0 ? 0 : (enum ps_access)i;
}

enum ps_affil ps_affil_parse(const char *s)
{
	return (enum ps_affil)ps_name_index(affil_names, ARRAY_LEN(affil_names), s);
}

enum ps_sub_state ps_sub_state_parse(const char *s)
{
	return (enum ps_sub_state)ps_name_index(sub_names, ARRAY_LEN(sub_names), s);
}

/* ---- Configuration ---- */

void ps_config_default(struct ps_config *c, bool pep)
{
	memset(c, 0, sizeof(*c));
	/* XEP-0163 section 8 for PEP; XEP-0060 4.5 (open) for the service. */
	c->access = pep ? PS_ACCESS_PRESENCE : PS_ACCESS_OPEN;
	c->publish_model = PS_PUBLISH_PUBLISHERS;
	c->send_last = pep ? PS_SEND_LAST_ON_SUB_AND_PRESENCE : PS_SEND_LAST_NEVER;
	c->max_items = pep ? PS_DEFAULT_MAX_ITEMS_PEP : PS_DEFAULT_MAX_ITEMS;
	/*
	 * Items persist and notifications carry payloads (XEP-0163 8 asks
	 * it of PEP; for the service it is what subscribers expect), and
	 * removals are announced: clients keep their views in step with it.
	 */
	c->persist_items = true;
	c->deliver_payloads = true;
	c->deliver_notifications = true;
	c->notify_retract = true;
	c->notify_delete = true;
}

void ps_config_free(struct ps_config *c)
{
	free(c->title);
	free(c->description);
	free(c->payload_type);
	free(c->groups);
	c->title = c->description = c->payload_type = c->groups = NULL;
}

/* *dst = a copy of src, or NULL for NULL. 0 or -ENOMEM. */
static int ps_strdup_opt(char **dst, const char *src)
{
	*dst = NULL;
	if (src && !(*dst = strdup(src)))
		return -ENOMEM;
	return 0;
}

int ps_config_copy(struct ps_config *dst, const struct ps_config *src)
{
	/* Scalars by assignment, then each string replaced by its own copy. */
	*dst = *src;
	if (ps_strdup_opt(&dst->title, src->title) < 0 ||
	    ps_strdup_opt(&dst->description, src->description) < 0 ||
	    ps_strdup_opt(&dst->payload_type, src->payload_type) < 0 ||
	    ps_strdup_opt(&dst->groups, src->groups) < 0) {
		ps_config_free(dst);
		memset(dst, 0, sizeof(*dst));
		return -ENOMEM;
	}
	return 0;
}

uint32_t ps_config_max_items(const struct ps_config *c, const struct ps_limits *lim)
{
	/*
	 * A stored max_items above today's limit (the operator lowered
	 * max_items_per_node since) is clamped, never trusted.
	 */
	if (c->max_items_max || c->max_items > lim->max_items)
		return lim->max_items;
	return c->max_items;
}

/* ---- Forms ---- */

const struct xml_node *ps_form_get(const struct xml_node *parent)
{
	return parent ? xml_child(parent, NS_XDATA, "x") : NULL;
}

/* The first <value/> of a field as text in `a` (NULL when none). */
static const char *ps_field_value(struct arena *a, const struct xml_node *field)
{
	const struct xml_node *v = xml_child(field, NS_XDATA, "value");

	return v ? xml_text(a, v) : NULL;
}

const char *ps_form_type(struct arena *a, const struct xml_node *x)
{
	for (const struct xml_node *f = xml_first_element(x); f; f = xml_next_element(f)) {
		const char *var = xml_attr_get(f, "var");

		if (strcmp(f->name, "field") == 0 && var && strcmp(var, "FORM_TYPE") == 0)
			return ps_field_value(a, f);
	}
	return NULL;
}

int ps_parse_bool(const char *v, bool *out)
{
	if (!v)
		return -EINVAL;
	if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0)
		*out = true;
	else if (strcmp(v, "0") == 0 || strcmp(v, "false") == 0)
		*out = false;
	else
		return -EINVAL;
	return 0;
}

/* A max_items value: "max" or 1..limit. 0 or -EINVAL. */
static int ps_parse_max_items(const char *v, const struct ps_limits *lim, uint32_t *n, bool *max)
{
	char *end;
	unsigned long x;

	if (!v)
		return -EINVAL;
	if (strcmp(v, "max") == 0) {
		*max = true;
		*n = lim->max_items;
		return 0;
	}
	if (v[0] < '0' || v[0] > '9')
		return -EINVAL;
	errno = 0;
	x = strtoul(v, &end, 10);
	if (errno || *end || x < 1 || x > lim->max_items)
		return -EINVAL;
	*max = false;
	*n = (uint32_t)x;
	return 0;
}

/* The field's values joined by ROSTER_GROUP_SEP in `a` ("" when none), or NULL on ENOMEM. */
static char *ps_field_join(struct arena *a, const struct xml_node *field, unsigned *count)
{
	struct strbuf b = STRBUF_INIT;
	char *out;

	*count = 0;
	for (const struct xml_node *v = xml_first_element(field); v; v = xml_next_element(v)) {
		const char *t;

		if (strcmp(v->name, "value") != 0 || strcmp(v->ns, NS_XDATA) != 0)
			continue;
		t = xml_text(a, v);
		if (!t || !t[0])
			continue;
		if (b.len)
			strbuf_append(&b, (char[]){ ROSTER_GROUP_SEP }, 1);
		strbuf_puts(&b, t);
		(*count)++;
	}
	out = b.oom ? NULL : arena_strdup(a, b.data ? b.data : "");
	strbuf_free(&b);
	return out;
}

/* Fills a form error. */
static void ps_form_fail(struct ps_form_error *err, const char *cond, const char *app,
			 const char *text)
{
	err->cond = cond;
	err->app = app;
	err->text = text;
}

/*
 * Replaces a string option with a field value (NULL or "" clears it);
 * over PS_TEXT_MAX bytes is not-acceptable.
 */
static int ps_set_text(char **dst, const char *v, struct ps_form_error *err)
{
	char *dup = NULL;

	if (v && strlen(v) > PS_TEXT_MAX) {
		ps_form_fail(err, "not-acceptable", NULL, "value too long");
		return -EINVAL;
	}
	if (v && v[0] && !(dup = strdup(v)))
		return -ENOMEM;
	free(*dst);
	*dst = dup;
	return 0;
}

/* The booleans of the form, by field name. */
static bool *ps_config_bool_field(struct ps_config *c, const char *var)
{
	static const struct {
		const char *var;
		size_t off;
	} fields[] = {
		{ "pubsub#persist_items", offsetof(struct ps_config, persist_items) },
		{ "pubsub#deliver_payloads", offsetof(struct ps_config, deliver_payloads) },
		{ "pubsub#deliver_notifications", offsetof(struct ps_config, deliver_notifications) },
		{ "pubsub#notify_retract", offsetof(struct ps_config, notify_retract) },
		{ "pubsub#notify_delete", offsetof(struct ps_config, notify_delete) },
		{ "pubsub#notify_config", offsetof(struct ps_config, notify_config) },
		{ "pubsub#presence_based_delivery", offsetof(struct ps_config, presence_based) },
	};

	for (size_t i = 0; i < ARRAY_LEN(fields); i++)
		if (strcmp(fields[i].var, var) == 0)
			return (bool *)((char *)c + fields[i].off);
	return NULL;
}

/* Applies one field to c. 0, 1 (unknown field), -EINVAL (err filled), -ENOMEM. */
static int ps_config_apply_field(struct ps_config *c, struct arena *a,
				 const struct xml_node *f, const char *var,
				 const struct ps_limits *lim, struct ps_form_error *err)
{
	const char *v = ps_field_value(a, f);
	bool *bp = ps_config_bool_field(c, var);
	int i;

	if (bp) {
		if (ps_parse_bool(v, bp) < 0)
			goto bad;
		return 0;
	}
	if (strcmp(var, "pubsub#access_model") == 0) {
		enum ps_access am = ps_access_parse(v);

		if (!am) {
			ps_form_fail(err, "not-acceptable", "unsupported-access-model", NULL);
			return -EINVAL;
		}
		c->access = am;
	} else if (strcmp(var, "pubsub#publish_model") == 0) {
		i = ps_name_index(publish_names, ARRAY_LEN(publish_names), v);
		if (i < 0)
			goto bad;
		c->publish_model = (enum ps_publish_model)i;
	} else if (strcmp(var, "pubsub#send_last_published_item") == 0) {
		i = ps_name_index(send_last_names, ARRAY_LEN(send_last_names), v);
		if (i < 0)
			goto bad;
		c->send_last = (enum ps_send_last)i;
	} else if (strcmp(var, "pubsub#max_items") == 0) {
		if (ps_parse_max_items(v, lim, &c->max_items, &c->max_items_max) < 0) {
			ps_form_fail(err, "not-acceptable", NULL,
				     "max_items must be 'max' or 1 up to the service's limit");
			return -EINVAL;
		}
	} else if (strcmp(var, "pubsub#notification_type") == 0) {
		if (!v || (strcmp(v, "normal") != 0 && strcmp(v, "headline") != 0))
			goto bad;
		c->notification_normal = strcmp(v, "normal") == 0;
	} else if (strcmp(var, "pubsub#node_type") == 0) {
		/* Collections (XEP-0248) are not supported: leaf only. */
		if (!v || strcmp(v, "leaf") != 0)
			goto bad;
	} else if (strcmp(var, "pubsub#title") == 0) {
		return ps_set_text(&c->title, v, err);
	} else if (strcmp(var, "pubsub#description") == 0) {
		return ps_set_text(&c->description, v, err);
	} else if (strcmp(var, "pubsub#type") == 0) {
		return ps_set_text(&c->payload_type, v, err);
	} else if (strcmp(var, "pubsub#roster_groups_allowed") == 0) {
		unsigned n;
		char *joined = ps_field_join(a, f, &n);

		if (!joined)
			return -ENOMEM;
		if (n > PS_GROUPS_MAX || strlen(joined) > PS_GROUPS_MAX * (ROSTER_GROUP_MAX + 1)) {
			ps_form_fail(err, "not-acceptable", NULL, "too many roster groups");
			return -EINVAL;
		}
		free(c->groups);
		c->groups = joined[0] ? strdup(joined) : NULL;
		if (joined[0] && !c->groups)
			return -ENOMEM;
	} else {
		return 1;
	}
	return 0;
bad:
	ps_form_fail(err, "not-acceptable", NULL, "bad value for a configuration field");
	return -EINVAL;
}

int ps_config_apply_form(struct ps_config *c, const struct xml_node *x,
			 const struct ps_limits *lim, bool strict, struct ps_form_error *err)
{
	struct ps_config tmp;
	struct arena a;
	const char *type = xml_attr_get(x, "type");
	const char *ft;
	unsigned nfields = 0;
	int ret = 0;

	/* XEP-0060 8.2.4: a cancelled form keeps the configuration as it is. */
	if (type && strcmp(type, "cancel") == 0)
		return 0;
	if (type && strcmp(type, "submit") != 0) {
		ps_form_fail(err, "bad-request", NULL, "a configuration form must be of type submit");
		return -EINVAL;
	}
	arena_init(&a, 1024);
	ft = ps_form_type(&a, x);
	if (ft && strcmp(ft, NS_PUBSUB_NODE_CONFIG) != 0 && strcmp(ft, NS_PUBSUB_PUBLISH_OPTIONS) != 0) {
		arena_release(&a);
		ps_form_fail(err, "bad-request", NULL, "unexpected FORM_TYPE");
		return -EINVAL;
	}
	/* Fields apply to a copy, which replaces c only if every field was good. */
	if (ps_config_copy(&tmp, c) < 0) {
		arena_release(&a);
		return -ENOMEM;
	}
	for (const struct xml_node *f = xml_first_element(x); f && ret >= 0; f = xml_next_element(f)) {
		const char *var = xml_attr_get(f, "var");

		if (strcmp(f->name, "field") != 0 || !var || strcmp(var, "FORM_TYPE") == 0)
			continue;
		if (++nfields > PS_FORM_FIELDS_MAX) {
			ps_form_fail(err, "not-acceptable", NULL, "too many fields");
			ret = -EINVAL;
			break;
		}
		ret = ps_config_apply_field(&tmp, &a, f, var, lim, err);
		if (ret == 1) {
			ret = 0;
			if (strict) {
				ps_form_fail(err, "conflict", "precondition-not-met", "unknown field");
				ret = -EINVAL;
			}
		}
	}
	arena_release(&a);
	if (ret < 0) {
		ps_config_free(&tmp);
		return ret;
	}
	ps_config_free(c);
	*c = tmp;
	return 0;
}

/* Whether field f's value(s) equal the configuration's value of var. -1: unknown var. */
static int ps_precondition_holds(const struct ps_config *c, struct arena *a,
				 const struct xml_node *f, const char *var,
				 const struct ps_limits *lim)
{
	struct ps_config *cm = (struct ps_config *)c;	/* read only: the field lookup */
	const char *v = ps_field_value(a, f);
	bool *bp = ps_config_bool_field(cm, var);
	bool b;

	if (bp)
		return ps_parse_bool(v, &b) == 0 && b == *bp;
	if (strcmp(var, "pubsub#access_model") == 0)
		return v && strcmp(v, ps_access_name(c->access)) == 0;
	if (strcmp(var, "pubsub#publish_model") == 0)
		return v && strcmp(v, ps_publish_model_name(c->publish_model)) == 0;
	if (strcmp(var, "pubsub#send_last_published_item") == 0)
		return v && strcmp(v, ps_send_last_name(c->send_last)) == 0;
	if (strcmp(var, "pubsub#notification_type") == 0)
		return v && strcmp(v, c->notification_normal ? "normal" : "headline") == 0;
	if (strcmp(var, "pubsub#max_items") == 0) {
		uint32_t n;
		bool max;

		if (ps_parse_max_items(v, lim, &n, &max) < 0)
			return 0;
		/* 'max' and the service's limit are the same number of items. */
		return ps_config_max_items(c, lim) == n;
	}
	if (strcmp(var, "pubsub#title") == 0)
		return strcmp(v ? v : "", c->title ? c->title : "") == 0;
	if (strcmp(var, "pubsub#description") == 0)
		return strcmp(v ? v : "", c->description ? c->description : "") == 0;
	if (strcmp(var, "pubsub#type") == 0)
		return strcmp(v ? v : "", c->payload_type ? c->payload_type : "") == 0;
	if (strcmp(var, "pubsub#roster_groups_allowed") == 0) {
		unsigned n;
		const char *joined = ps_field_join(a, f, &n);

		/* Same set: each side's groups all in the other. */
		return joined && ps_groups_match_all(joined, c->groups) &&
		       ps_groups_match_all(c->groups, joined);
	}
	if (strcmp(var, "pubsub#node_type") == 0)
		return v && strcmp(v, "leaf") == 0;
	return -1;
}

int ps_config_check_preconditions(const struct ps_config *c, const struct xml_node *x,
				  const struct ps_limits *lim, struct ps_form_error *err)
{
	struct arena a;
	const char *ft;
	int ret = 0;

	arena_init(&a, 1024);
	ft = ps_form_type(&a, x);
	if (!ft || strcmp(ft, NS_PUBSUB_PUBLISH_OPTIONS) != 0) {
		ps_form_fail(err, "bad-request", NULL, "publish-options needs its FORM_TYPE");
		ret = -EINVAL;
		goto out;
	}
	for (const struct xml_node *f = xml_first_element(x); f; f = xml_next_element(f)) {
		const char *var = xml_attr_get(f, "var");
		int holds;

		if (strcmp(f->name, "field") != 0 || !var || strcmp(var, "FORM_TYPE") == 0)
			continue;
		holds = ps_precondition_holds(c, &a, f, var, lim);
		if (holds != 1) {
			/* Unknown fields are preconditions that cannot hold (7.1.5). */
			ps_form_fail(err, "conflict", "precondition-not-met",
				     holds < 0 ? "unknown field" : NULL);
			ret = -EINVAL;
			goto out;
		}
	}
out:
	arena_release(&a);
	return ret;
}

/* Adds <field var type [label]><value>v</value></field>; v NULL = no value. */
static struct xml_node *ps_form_field(struct arena *a, struct xml_node *x, const char *var,
				      const char *type, const char *v)
{
	struct xml_node *f = xml_node_add_child(a, x, NS_XDATA, "field");
	struct xml_node *val;

	if (!f || xml_attr_set(a, f, "var", var) < 0 || (type && xml_attr_set(a, f, "type", type) < 0))
		return NULL;
	if (v) {
		val = xml_node_add_child(a, f, NS_XDATA, "value");
		if (!val || xml_node_add_text(a, val, v, strlen(v)) < 0)
			return NULL;
	}
	return f;
}

/* A list-single field with its options. */
static struct xml_node *ps_form_list(struct arena *a, struct xml_node *x, const char *var,
				     const char *const *names, size_t n, const char *v, bool form)
{
	struct xml_node *f = ps_form_field(a, x, var, "list-single", v);

	for (size_t i = 0; f && form && i < n; i++) {
		struct xml_node *o, *ov;

		if (!names[i])
			continue;
		o = xml_node_add_child(a, f, NS_XDATA, "option");
		ov = o ? xml_node_add_child(a, o, NS_XDATA, "value") : NULL;
		if (!ov || xml_node_add_text(a, ov, names[i], strlen(names[i])) < 0)
			return NULL;
	}
	return f;
}

struct xml_node *ps_config_form(struct arena *a, const struct ps_config *c, const char *type,
				const struct ps_limits *lim)
{
	struct xml_node *x = xml_node_new(a, NS_XDATA, "x");
	bool form = strcmp(type, "form") == 0;
	char num[16];
	bool ok;

	if (!x || xml_attr_set(a, x, "type", type) < 0)
		return NULL;
	if (c->max_items_max)
		snprintf(num, sizeof(num), "max");
	else
		snprintf(num, sizeof(num), "%" PRIu32, c->max_items);
	ok = ps_form_field(a, x, "FORM_TYPE", "hidden", NS_PUBSUB_NODE_CONFIG) &&
	     ps_form_field(a, x, "pubsub#title", "text-single", c->title) &&
	     ps_form_field(a, x, "pubsub#description", "text-single", c->description) &&
	     ps_form_field(a, x, "pubsub#type", "text-single", c->payload_type) &&
	     ps_form_field(a, x, "pubsub#node_type", "list-single", "leaf") &&
	     ps_form_field(a, x, "pubsub#deliver_notifications", "boolean",
			   c->deliver_notifications ? "1" : "0") &&
	     ps_form_field(a, x, "pubsub#deliver_payloads", "boolean",
			   c->deliver_payloads ? "1" : "0") &&
	     ps_form_field(a, x, "pubsub#notify_config", "boolean", c->notify_config ? "1" : "0") &&
	     ps_form_field(a, x, "pubsub#notify_delete", "boolean", c->notify_delete ? "1" : "0") &&
	     ps_form_field(a, x, "pubsub#notify_retract", "boolean",
			   c->notify_retract ? "1" : "0") &&
	     ps_form_field(a, x, "pubsub#persist_items", "boolean", c->persist_items ? "1" : "0") &&
	     ps_form_field(a, x, "pubsub#max_items", "text-single", num) &&
	     ps_form_list(a, x, "pubsub#access_model", access_names, ARRAY_LEN(access_names),
			  ps_access_name(c->access), form) &&
	     ps_form_list(a, x, "pubsub#publish_model", publish_names, ARRAY_LEN(publish_names),
			  ps_publish_model_name(c->publish_model), form) &&
	     ps_form_list(a, x, "pubsub#send_last_published_item", send_last_names,
			  ARRAY_LEN(send_last_names), ps_send_last_name(c->send_last), form) &&
	     ps_form_field(a, x, "pubsub#presence_based_delivery", "boolean",
			   c->presence_based ? "1" : "0") &&
	     ps_form_list(a, x, "pubsub#notification_type",
			  (const char *const[]){ "normal", "headline" }, 2,
			  c->notification_normal ? "normal" : "headline", form);
	if (ok) {
		struct xml_node *g = ps_form_field(a, x, "pubsub#roster_groups_allowed",
						   "list-multi", NULL);
		const char *p = c->groups;

		ok = g != NULL;
		while (ok && p && *p) {
			const char *sep = strchr(p, ROSTER_GROUP_SEP);
			size_t len = sep ? (size_t)(sep - p) : strlen(p);
			struct xml_node *v = xml_node_add_child(a, g, NS_XDATA, "value");

			ok = v && xml_node_add_text(a, v, p, len) == 0;
			p = sep ? sep + 1 : p + len;
		}
	}
	(void)lim;
	return ok ? x : NULL;
}

/* ---- The store's text form ---- */

/* Appends value with backslash, newline and CR escaped. */
static void ps_put_escaped(struct strbuf *out, const char *v)
{
	for (const char *p = v; *p; p++) {
		if (*p == '\\')
			strbuf_puts(out, "\\\\");
		else if (*p == '\n')
			strbuf_puts(out, "\\n");
		else if (*p == '\r')
			strbuf_puts(out, "\\r");
		else
			strbuf_append(out, p, 1);
	}
}

/* key=value line of the stored configuration; a NULL value writes nothing. */
static void ps_put_kv(struct strbuf *out, const char *k, const char *v)
{
	if (!v)
		return;
	strbuf_puts(out, k);
	strbuf_puts(out, "=");
	ps_put_escaped(out, v);
	strbuf_puts(out, "\n");
}

void ps_config_serialize(struct strbuf *out, const struct ps_config *c)
{
	/*
	 * Every scalar is written, defaults included: a later build with
	 * other defaults must not change the meaning of a stored node.
	 */
	strbuf_printf(out, "access=%s\npublish=%s\nsend_last=%s\n", ps_access_name(c->access),
		      ps_publish_model_name(c->publish_model), ps_send_last_name(c->send_last));
	if (c->max_items_max)
		strbuf_puts(out, "max_items=max\n");
	else
		strbuf_printf(out, "max_items=%" PRIu32 "\n", c->max_items);
	strbuf_printf(out, "persist=%d\npayloads=%d\nnotifications=%d\nnotify_retract=%d\n"
		      "notify_delete=%d\nnotify_config=%d\npresence_based=%d\nnotification_type=%s\n",
		      c->persist_items, c->deliver_payloads, c->deliver_notifications,
		      c->notify_retract, c->notify_delete, c->notify_config, c->presence_based,
		      c->notification_normal ? "normal" : "headline");
	ps_put_kv(out, "title", c->title);
	ps_put_kv(out, "description", c->description);
	ps_put_kv(out, "type", c->payload_type);
	ps_put_kv(out, "groups", c->groups);
}

/* Undoes ps_put_escaped in place. */
static void ps_unescape(char *s)
{
	char *w = s;

	for (char *r = s; *r; r++) {
		if (*r == '\\' && r[1]) {
			r++;
			*w++ = *r == 'n' ? '\n' : *r == 'r' ? '\r' : *r;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
}

/* One key=value of the stored form. 0, -EINVAL or -ENOMEM. */
static int ps_config_parse_kv(struct ps_config *c, const char *k, const char *v)
{
	static const struct ps_limits any = { .max_items = UINT32_MAX };
	int i;

	if (strcmp(k, "access") == 0) {
		if (!(c->access = ps_access_parse(v)))
			return -EINVAL;
	} else if (strcmp(k, "publish") == 0) {
		if ((i = ps_name_index(publish_names, ARRAY_LEN(publish_names), v)) < 0)
			return -EINVAL;
		c->publish_model = (enum ps_publish_model)i;
	} else if (strcmp(k, "send_last") == 0) {
		if ((i = ps_name_index(send_last_names, ARRAY_LEN(send_last_names), v)) < 0)
			return -EINVAL;
		c->send_last = (enum ps_send_last)i;
	} else if (strcmp(k, "max_items") == 0) {
		/* Stored values are kept even above today's limit (it may have been lowered). */
		if (ps_parse_max_items(v, &any, &c->max_items, &c->max_items_max) < 0)
			return -EINVAL;
	} else if (strcmp(k, "persist") == 0) {
		return ps_parse_bool(v, &c->persist_items);
	} else if (strcmp(k, "payloads") == 0) {
		return ps_parse_bool(v, &c->deliver_payloads);
	} else if (strcmp(k, "notifications") == 0) {
		return ps_parse_bool(v, &c->deliver_notifications);
	} else if (strcmp(k, "notify_retract") == 0) {
		return ps_parse_bool(v, &c->notify_retract);
	} else if (strcmp(k, "notify_delete") == 0) {
		return ps_parse_bool(v, &c->notify_delete);
	} else if (strcmp(k, "notify_config") == 0) {
		return ps_parse_bool(v, &c->notify_config);
	} else if (strcmp(k, "presence_based") == 0) {
		return ps_parse_bool(v, &c->presence_based);
	} else if (strcmp(k, "notification_type") == 0) {
		c->notification_normal = strcmp(v, "normal") == 0;
	} else if (strcmp(k, "title") == 0) {
		return ps_strdup_opt(&c->title, v);
	} else if (strcmp(k, "description") == 0) {
		return ps_strdup_opt(&c->description, v);
	} else if (strcmp(k, "type") == 0) {
		return ps_strdup_opt(&c->payload_type, v);
	} else if (strcmp(k, "groups") == 0) {
		return ps_strdup_opt(&c->groups, v);
	}
	/* Unknown keys: written by a newer build; ignored. */
	return 0;
}

int ps_config_parse(struct ps_config *c, bool pep, const char *text, size_t len)
{
	char *copy = malloc(len + 1), *line, *save = NULL;
	int ret = 0;

	/* Defaults first: keys a store written by an older build lacks keep them. */
	ps_config_default(c, pep);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, text, len);
	copy[len] = '\0';
	for (line = strtok_r(copy, "\n", &save); line && ret == 0;
	     line = strtok_r(NULL, "\n", &save)) {
		char *eq = strchr(line, '=');

		if (!eq) {
			ret = -EINVAL;
			break;
		}
		*eq = '\0';
		ps_unescape(eq + 1);
		/* A string key given twice keeps the last value. */
		if (strcmp(line, "title") == 0 || strcmp(line, "description") == 0 ||
		    strcmp(line, "type") == 0 || strcmp(line, "groups") == 0) {
			char **slot = strcmp(line, "title") == 0 ? &c->title :
				      strcmp(line, "description") == 0 ? &c->description :
				      strcmp(line, "type") == 0 ? &c->payload_type : &c->groups;

			free(*slot);
			*slot = NULL;
		}
		ret = ps_config_parse_kv(c, line, eq + 1);
	}
	free(copy);
	if (ret < 0)
		ps_config_free(c);
	return ret;
}

/* ---- Access decisions ---- */

/* Whether `group` (len bytes) is one of the joined groups. */
static bool ps_group_in(const char *joined, const char *group, size_t len)
{
	const char *p = joined;

	while (p && *p) {
		const char *sep = strchr(p, ROSTER_GROUP_SEP);
		size_t l = sep ? (size_t)(sep - p) : strlen(p);

		if (l == len && memcmp(p, group, len) == 0)
			return true;
		p = sep ? sep + 1 : p + l;
	}
	return false;
}

bool ps_groups_match(const char *allowed, const char *contact_groups)
{
	const char *p = allowed;

	/* Both lists are short (a few groups): a nested scan beats building sets. */
	while (p && *p) {
		const char *sep = strchr(p, ROSTER_GROUP_SEP);
		size_t l = sep ? (size_t)(sep - p) : strlen(p);

		if (ps_group_in(contact_groups, p, l))
			return true;
		p = sep ? sep + 1 : p + l;
	}
	return false;
}

bool ps_groups_match_all(const char *sub, const char *super)
{
	const char *p = sub;

	while (p && *p) {
		const char *sep = strchr(p, ROSTER_GROUP_SEP);
		size_t l = sep ? (size_t)(sep - p) : strlen(p);

		if (!ps_group_in(super, p, l))
			return false;
		p = sep ? sep + 1 : p + l;
	}
	return true;
}

/* Owners, publishers and members pass every access model (4.5, 6.5.1). */
static bool ps_privileged(const struct ps_requester *r)
{
	return r->is_owner_account || r->affil == PS_AFFIL_OWNER ||
	       r->affil == PS_AFFIL_PUBLISHER || r->affil == PS_AFFIL_MEMBER;
}

enum ps_verdict ps_access_check(const struct ps_config *c, const struct ps_requester *r)
{
	if (r->is_owner_account)
		return PS_ALLOW;
	if (r->affil == PS_AFFIL_OUTCAST)
		return PS_DENY_OUTCAST;
	if (ps_privileged(r))
		return PS_ALLOW;
	/* The affiliation table (4.1): publish-only may neither subscribe nor retrieve. */
	if (r->affil == PS_AFFIL_PUBLISH_ONLY)
		return PS_DENY_FORBIDDEN;
	switch (c->access) {
	case PS_ACCESS_OPEN:
		return PS_ALLOW;
	case PS_ACCESS_PRESENCE:
		return r->has_from ? PS_ALLOW : PS_DENY_PRESENCE;
	case PS_ACCESS_ROSTER:
		return r->in_groups ? PS_ALLOW : PS_DENY_ROSTER;
	case PS_ACCESS_WHITELIST:
		return PS_DENY_WHITELIST;
	}
	return PS_DENY_FORBIDDEN;
}

bool ps_access_needs_roster(const struct ps_config *c, const struct ps_requester *r)
{
	if (r->is_owner_account || r->affil == PS_AFFIL_OUTCAST || ps_privileged(r) ||
	    r->affil == PS_AFFIL_PUBLISH_ONLY)
		return false;
	return c->access == PS_ACCESS_PRESENCE || c->access == PS_ACCESS_ROSTER;
}

enum ps_verdict ps_publish_check(const struct ps_config *c, const struct ps_requester *r)
{
	/* XEP-0163: the account is the one publisher of its PEP nodes. */
	if (r->is_owner_account)
		return PS_ALLOW;
	if (r->affil == PS_AFFIL_OUTCAST)
		return PS_DENY_OUTCAST;
	if (r->affil == PS_AFFIL_OWNER || r->affil == PS_AFFIL_PUBLISHER ||
	    r->affil == PS_AFFIL_PUBLISH_ONLY)
		return PS_ALLOW;
	switch (c->publish_model) {
	case PS_PUBLISH_OPEN:
		return PS_ALLOW;
	case PS_PUBLISH_SUBSCRIBERS:
		return r->subscribed ? PS_ALLOW : PS_DENY_FORBIDDEN;
	case PS_PUBLISH_PUBLISHERS:
		break;
	}
	return PS_DENY_FORBIDDEN;
}

void ps_verdict_error(enum ps_verdict v, const char **cond, const char **app)
{
	*app = NULL;
	switch (v) {
	case PS_ALLOW:
		*cond = NULL;
		return;
	case PS_DENY_PRESENCE:
		*cond = "not-authorized";
		*app = "presence-subscription-required";
		return;
	case PS_DENY_ROSTER:
		*cond = "not-authorized";
		*app = "not-in-roster-group";
		return;
	case PS_DENY_WHITELIST:
		*cond = "not-allowed";
		*app = "closed-node";
		return;
	case PS_DENY_OUTCAST:
	case PS_DENY_FORBIDDEN:
		break;
	}
	*cond = "forbidden";
}
