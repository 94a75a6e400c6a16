/* SPDX-License-Identifier: MIT */
/*
 * The pure parts of cluster mode: see cluster_util.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_util.h"

/* ---- The Redis URI ---- */

/* Copies s[0..len) into dst (size bytes, NUL-terminated). 0 or -EINVAL when it does not fit. */
static int copy_part(char *dst, size_t size, const char *s, size_t len)
{
	if (len >= size)
		return -EINVAL;
	memcpy(dst, s, len);
	dst[len] = '\0';
	return 0;
}

/* A decimal number in s[0..len) no larger than max. 0 or -EINVAL. */
static int parse_uint(const char *s, size_t len, unsigned long max, unsigned long *out)
{
	unsigned long v = 0;

	if (len == 0 || len > 10)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

int cluster_uri_parse(struct cluster_uri *u, const char *text)
{
	const char *p, *at, *end, *colon, *slash;
	unsigned long port, db = 0;

	memset(u, 0, sizeof(*u));
	if (!text || strncmp(text, "redis://", 8) != 0)
		return -EINVAL;
	p = text + 8;
	end = p + strlen(p);
	slash = memchr(p, '/', (size_t)(end - p));
	/* The password may hold '@' or ':': the authority ends at the last '@'. */
	at = memrchr(p, '@', (size_t)((slash ? slash : end) - p));
	if (at) {
		/* Only the password form ":PASSWORD@" (Redis before 6 has no user names). */
		if (*p != ':' || copy_part(u->password, sizeof(u->password), p + 1,
					   (size_t)(at - p - 1)) < 0 || !u->password[0])
			goto err;
		p = at + 1;
	}
	if (slash) {
		if (parse_uint(slash + 1, (size_t)(end - slash - 1), 15, &db) < 0)
			goto err;
		end = slash;
	}
	if (*p == '[') {	/* [IPv6]:PORT */
		const char *rb = memchr(p, ']', (size_t)(end - p));

		if (!rb || rb[1] != ':' || copy_part(u->host, sizeof(u->host), p + 1,
						     (size_t)(rb - p - 1)) < 0)
			goto err;
		colon = rb + 1;
	} else {
		colon = memrchr(p, ':', (size_t)(end - p));
		if (!colon || copy_part(u->host, sizeof(u->host), p, (size_t)(colon - p)) < 0 ||
		    strchr(u->host, ':'))
			goto err;
	}
	if (!u->host[0] || parse_uint(colon + 1, (size_t)(end - colon - 1), 65535, &port) < 0 ||
	    port == 0)
		goto err;
	for (const char *h = u->host; *h; h++)
		if (*h <= ' ' || *h == '@' || *h == '/' || (unsigned char)*h >= 0x7f)
			goto err;
	u->port = (uint16_t)port;
	u->db = (unsigned)db;
	return 0;
err:
	cluster_uri_wipe(u);
	memset(u, 0, sizeof(*u));
	return -EINVAL;
}

char *cluster_uri_masked(const struct cluster_uri *u, char *buf, size_t size)
{
	bool v6 = strchr(u->host, ':') != NULL;
	char db[16] = "";

	if (u->db)
		snprintf(db, sizeof(db), "/%u", u->db);
	snprintf(buf, size, "redis://%s%s%s%s:%u%s", u->password[0] ? ":***@" : "", v6 ? "[" : "",
		 u->host, v6 ? "]" : "", u->port, db);
	return buf;
}

void cluster_uri_wipe(struct cluster_uri *u)
{
	explicit_bzero(u->password, sizeof(u->password));
}

bool cluster_node_name_valid(const char *name)
{
	size_t n = 0;

	for (const char *p = name; *p; p++, n++) {
		char c = *p;

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return n >= 1 && n <= CLUSTER_NODE_NAME_MAX;
}

/* ---- Registry values ---- */

int cluster_sess_encode(const struct cluster_sess *v, char *buf, size_t size)
{
	int n;

	if (!cluster_node_name_valid(v->node))
		return -EINVAL;
	if (v->flags > CLUSTER_SESS_FLAGS_MAX)
		return -EINVAL;
	n = snprintf(buf, size, "%s %u %d %d %u", v->node, v->worker, v->priority,
		     v->available ? 1 : 0, v->flags);
	if (n < 0 || (size_t)n >= size)
		return -ENOSPC;
	return n;
}

int cluster_sess_decode(struct cluster_sess *v, const char *text, size_t len)
{
	char buf[CLUSTER_SESS_TEXT_MAX + 1], node[CLUSTER_NODE_NAME_MAX + 2], tail;
	unsigned worker, flags;
	int prio, avail;

	if (len >= sizeof(buf) || memchr(text, '\0', len))
		return -EINVAL;
	memcpy(buf, text, len);
	buf[len] = '\0';
	/* %65s: one byte more than a name may have, so a longer one is refused below. */
	if (sscanf(buf, "%65s %u %d %d %u%c", node, &worker, &prio, &avail, &flags, &tail) != 5)
		return -EINVAL;
	if (!cluster_node_name_valid(node) || worker > 1023 || prio < -128 || prio > 127 ||
	    (avail != 0 && avail != 1) || flags > CLUSTER_SESS_FLAGS_MAX)
		return -EINVAL;
	memcpy(v->node, node, strlen(node) + 1);
	v->worker = worker;
	v->priority = prio;
	v->available = avail == 1;
	v->flags = flags;
	v->unconfirmed = false;
	return 0;
}

/* ---- The session table ---- */

struct ct_res {
	struct ct_res *next;
	struct cluster_sess v;
	char resource[];
};

struct ct_acct {
	struct ct_acct *next;		/* hash chain */
	struct ct_res *res;
	char bare[];
};

struct cluster_table {
	struct ct_acct **buckets;
	size_t nbuckets;		/* power of two */
	size_t naccts, nentries;
};

#define CT_MIN_BUCKETS 64

/* FNV-1a over the bare JID. */
static uint64_t ct_hash(const char *s, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

struct cluster_table *cluster_table_new(void)
{
	struct cluster_table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->buckets = calloc(CT_MIN_BUCKETS, sizeof(*t->buckets));
	if (!t->buckets) {
		free(t);
		return NULL;
	}
	t->nbuckets = CT_MIN_BUCKETS;
	return t;
}

void cluster_table_free(struct cluster_table *t)
{
	if (!t)
		return;
	cluster_table_clear(t);
	free(t->buckets);
	free(t);
}

static struct ct_acct **ct_slot(const struct cluster_table *t, const char *bare, size_t len)
{
	struct ct_acct **pp = &t->buckets[ct_hash(bare, len) & (t->nbuckets - 1)];

	for (; *pp; pp = &(*pp)->next)
		if (strlen((*pp)->bare) == len && memcmp((*pp)->bare, bare, len) == 0)
			break;
	return pp;
}

/* Doubles the buckets when accounts outnumber them; a failed resize only costs speed. */
static void ct_grow(struct cluster_table *t)
{
	size_t n = t->nbuckets * 2;
	struct ct_acct **b;

	if (t->naccts < t->nbuckets)
		return;
	b = calloc(n, sizeof(*b));
	if (!b)
		return;
	for (size_t i = 0; i < t->nbuckets; i++)
		for (struct ct_acct *a = t->buckets[i], *next; a; a = next) {
			size_t k = ct_hash(a->bare, strlen(a->bare)) & (n - 1);

			next = a->next;
			a->next = b[k];
			b[k] = a;
		}
	free(t->buckets);
	t->buckets = b;
	t->nbuckets = n;
}

int cluster_table_set(struct cluster_table *t, const char *full, const struct cluster_sess *v)
{
	const char *slash = strchr(full, '/');
	struct ct_acct **pp, *a;
	struct ct_res *r;
	size_t blen;

	if (!slash || slash == full || !slash[1])
		return -EINVAL;
	blen = (size_t)(slash - full);
	pp = ct_slot(t, full, blen);
	a = *pp;
	if (a) {
		for (r = a->res; r; r = r->next)
			if (strcmp(r->resource, slash + 1) == 0) {
				r->v = *v;
				return 0;
			}
	} else {
		a = calloc(1, sizeof(*a) + blen + 1);
		if (!a)
			return -ENOMEM;
		memcpy(a->bare, full, blen);
		*pp = a;
		t->naccts++;
	}
	r = calloc(1, sizeof(*r) + strlen(slash + 1) + 1);
	if (!r) {
		if (!a->res) {
			*pp = a->next;
			free(a);
			t->naccts--;
		}
		return -ENOMEM;
	}
	strcpy(r->resource, slash + 1);
	r->v = *v;
	r->next = a->res;
	a->res = r;
	t->nentries++;
	ct_grow(t);
	return 0;
}

/* Unlinks *rp; frees the account with its last resource (*pp its link). */
static void ct_unlink(struct cluster_table *t, struct ct_acct **pp, struct ct_res **rp)
{
	struct ct_res *r = *rp;
	struct ct_acct *a = *pp;

	*rp = r->next;
	free(r);
	t->nentries--;
	if (!a->res) {
		*pp = a->next;
		free(a);
		t->naccts--;
	}
}

bool cluster_table_del(struct cluster_table *t, const char *full, const char *node)
{
	const char *slash = strchr(full, '/');
	struct ct_acct **pp;
	struct ct_res **rp;

	if (!slash)
		return false;
	pp = ct_slot(t, full, (size_t)(slash - full));
	if (!*pp)
		return false;
	for (rp = &(*pp)->res; *rp; rp = &(*rp)->next) {
		if (strcmp((*rp)->resource, slash + 1) != 0)
			continue;
		if (node && strcmp((*rp)->v.node, node) != 0)
			return false;
		ct_unlink(t, pp, rp);
		return true;
	}
	return false;
}

size_t cluster_table_drop_node(struct cluster_table *t, const char *node)
{
	size_t n = 0;

	for (size_t i = 0; i < t->nbuckets; i++) {
		struct ct_acct **pp = &t->buckets[i];

		while (*pp) {
			struct ct_acct *a = *pp;
			struct ct_res **rp = &a->res;
			bool gone = false;

			while (*rp) {
				if (strcmp((*rp)->v.node, node) != 0) {
					rp = &(*rp)->next;
					continue;
				}
				gone = !(*rp)->next && rp == &a->res;	/* its last resource */
				ct_unlink(t, pp, rp);
				n++;
				if (gone)
					break;
			}
			if (!gone)
				pp = &a->next;
		}
	}
	return n;
}

void cluster_table_clear(struct cluster_table *t)
{
	for (size_t i = 0; i < t->nbuckets; i++) {
		for (struct ct_acct *a = t->buckets[i], *next; a; a = next) {
			next = a->next;
			for (struct ct_res *r = a->res, *rn; r; r = rn) {
				rn = r->next;
				free(r);
			}
			free(a);
		}
		t->buckets[i] = NULL;
	}
	t->naccts = t->nentries = 0;
}

size_t cluster_table_find(const struct cluster_table *t, const char *bare,
			  struct cluster_entry *out, size_t max)
{
	struct ct_acct *a = *ct_slot(t, bare, strlen(bare));
	size_t n = 0;

	if (!a)
		return 0;
	for (struct ct_res *r = a->res; r; r = r->next, n++)
		if (n < max)
			out[n] = (struct cluster_entry){ .resource = r->resource, .v = r->v };
	return n;
}

struct cluster_sess *cluster_table_get(struct cluster_table *t, const char *full)
{
	const char *slash = strchr(full, '/');
	struct ct_acct *a;

	if (!slash)
		return NULL;
	a = *ct_slot(t, full, (size_t)(slash - full));
	for (struct ct_res *r = a ? a->res : NULL; r; r = r->next)
		if (strcmp(r->resource, slash + 1) == 0)
			return &r->v;
	return NULL;
}

size_t cluster_table_size(const struct cluster_table *t)
{
	return t->nentries;
}

size_t cluster_table_count_node(const struct cluster_table *t, const char *node)
{
	size_t n = 0;

	for (size_t i = 0; i < t->nbuckets; i++)
		for (struct ct_acct *a = t->buckets[i]; a; a = a->next)
			for (struct ct_res *r = a->res; r; r = r->next)
				n += strcmp(r->v.node, node) == 0;
	return n;
}

void cluster_table_each(const struct cluster_table *t,
			void (*fn)(void *arg, const char *bare, const struct cluster_entry *e),
			void *arg)
{
	for (size_t i = 0; i < t->nbuckets; i++)
		for (struct ct_acct *a = t->buckets[i]; a; a = a->next)
			for (struct ct_res *r = a->res; r; r = r->next) {
				struct cluster_entry e = { .resource = r->resource, .v = r->v };

				fn(arg, a->bare, &e);
			}
}
