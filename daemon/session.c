/* SPDX-License-Identifier: MIT */
/*
 * Session directory: an open hash table (chained) of accounts keyed by bare
 * JID, each with a short list of sessions. The hash is seeded randomly at
 * start; only authenticated, bound sessions insert keys, so a remote party
 * cannot choose colliding keys at will.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "account.h"
#include "session.h"

struct sessdir_account {
	struct sessdir_account *next;	/* hash chain */
	struct session *sessions;
	struct account *state;		/* see account.h */
	uint64_t hash;
	unsigned count;
	size_t bare_len;
	char bare[];
};

struct sessdir {
	struct sessdir_account **buckets;
	size_t nbuckets;		/* power of two */
	size_t naccounts;
	_Atomic size_t nsessions;	/* written by the owner, read by status (relaxed) */
	uint64_t seed;
};

/* FNV-1a, seeded; enough for non-adversarial keys (see above). */
static uint64_t sessdir_hash(const struct sessdir *d, const char *s, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ d->seed;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ULL;
	}
	return h ^ (h >> 29);
}

struct sessdir *sessdir_new(void)
{
	struct sessdir *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->nbuckets = 256;
	d->buckets = calloc(d->nbuckets, sizeof(*d->buckets));
	if (!d->buckets) {
		free(d);
		return NULL;
	}
	if (getrandom(&d->seed, sizeof(d->seed), 0) != sizeof(d->seed))
		d->seed = (uint64_t)(uintptr_t)d;
	return d;
}

void sessdir_free(struct sessdir *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->nbuckets; i++) {
		struct sessdir_account *a = d->buckets[i];

		while (a) {
			struct sessdir_account *next = a->next;

			account_free(a->state);
			free(a);
			a = next;
		}
	}
	free(d->buckets);
	free(d);
}

struct session *session_new(struct conn *c, const char *full_jid, size_t bare_len)
{
	size_t len = strlen(full_jid);
	struct session *s = calloc(1, sizeof(*s) + len + 1);

	if (!s)
		return NULL;
	s->conn = c;
	s->bare_len = bare_len;
	s->jid_len = len;
	memcpy(s->jid, full_jid, len + 1);
	return s;
}

void session_free(struct session *s)
{
	free(s);
}

static struct sessdir_account *sessdir_lookup(struct sessdir *d, const char *bare, size_t len,
					      uint64_t h)
{
	struct sessdir_account *a = d->buckets[h & (d->nbuckets - 1)];

	for (; a; a = a->next)
		if (a->hash == h && a->bare_len == len && memcmp(a->bare, bare, len) == 0)
			return a;
	return NULL;
}

/* Doubles the table when accounts outnumber buckets. */
static void sessdir_grow(struct sessdir *d)
{
	size_t n = d->nbuckets * 2;
	struct sessdir_account **b = calloc(n, sizeof(*b));

	if (!b)
		return;	/* keep working with longer chains */
	for (size_t i = 0; i < d->nbuckets; i++) {
		struct sessdir_account *a = d->buckets[i];

		while (a) {
			struct sessdir_account *next = a->next;

			a->next = b[a->hash & (n - 1)];
			b[a->hash & (n - 1)] = a;
			a = next;
		}
	}
	free(d->buckets);
	d->buckets = b;
	d->nbuckets = n;
}

int sessdir_add(struct sessdir *d, struct session *s)
{
	uint64_t h = sessdir_hash(d, s->jid, s->bare_len);
	struct sessdir_account *a = sessdir_lookup(d, s->jid, s->bare_len, h);

	if (a) {
		for (struct session *o = a->sessions; o; o = o->next)
			if (!o->ending && o->jid_len == s->jid_len &&
			    memcmp(o->jid, s->jid, s->jid_len) == 0)
				return -EEXIST;
	} else {
		a = calloc(1, sizeof(*a) + s->bare_len + 1);
		if (!a)
			return -ENOMEM;
		a->hash = h;
		a->bare_len = s->bare_len;
		memcpy(a->bare, s->jid, s->bare_len);
		a->next = d->buckets[h & (d->nbuckets - 1)];
		d->buckets[h & (d->nbuckets - 1)] = a;
		if (++d->naccounts > d->nbuckets)
			sessdir_grow(d);
	}
	s->next = a->sessions;
	a->sessions = s;
	s->acct = a;
	a->count++;
	atomic_store_explicit(&d->nsessions, d->nsessions + 1, memory_order_relaxed);
	return 0;
}

void sessdir_remove(struct sessdir *d, struct session *s)
{
	struct sessdir_account *a = s->acct, **ap;
	struct session **pp;

	if (!a)
		return;
	for (pp = &a->sessions; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	s->acct = NULL;
	s->next = NULL;
	a->count--;
	atomic_store_explicit(&d->nsessions, d->nsessions - 1, memory_order_relaxed);
	if (a->sessions)
		return;
	for (ap = &d->buckets[a->hash & (d->nbuckets - 1)]; *ap; ap = &(*ap)->next) {
		if (*ap == a) {
			*ap = a->next;
			break;
		}
	}
	d->naccounts--;
	account_free(a->state);
	free(a);
}

struct session *sessdir_find_bare(struct sessdir *d, const char *bare, size_t bare_len)
{
	struct sessdir_account *a = sessdir_lookup(d, bare, bare_len, sessdir_hash(d, bare, bare_len));

	return a ? a->sessions : NULL;
}

struct session *sessdir_find_full(struct sessdir *d, const char *full, size_t len)
{
	const char *slash = memchr(full, '/', len);
	struct session *s;

	if (!slash)
		return NULL;
	/* An ending session is gone for routing even before it leaves the list. */
	for (s = sessdir_find_bare(d, full, (size_t)(slash - full)); s; s = s->next)
		if (!s->ending && s->jid_len == len && memcmp(s->jid, full, len) == 0)
			return s;
	return NULL;
}

unsigned sessdir_count_bare(struct sessdir *d, const char *bare, size_t bare_len)
{
	struct sessdir_account *a = sessdir_lookup(d, bare, bare_len, sessdir_hash(d, bare, bare_len));

	return a ? a->count : 0;
}

size_t sessdir_size(const struct sessdir *d)
{
	return atomic_load_explicit(&d->nsessions, memory_order_relaxed);
}

void sessdir_each(struct sessdir *d, void (*fn)(void *arg, struct session *s), void *arg)
{
	for (size_t i = 0; i < d->nbuckets; i++)
		for (struct sessdir_account *a = d->buckets[i]; a; a = a->next)
			for (struct session *s = a->sessions; s; s = s->next)
				fn(arg, s);
}

struct account *session_account(const struct session *s)
{
	return s->acct ? s->acct->state : NULL;
}

struct account *sessdir_find_account(struct sessdir *d, const char *bare, size_t bare_len)
{
	struct sessdir_account *a = sessdir_lookup(d, bare, bare_len, sessdir_hash(d, bare, bare_len));

	return a ? a->state : NULL;
}

void session_install_account(struct session *s, struct account *a)
{
	if (!s->acct || s->acct->state) {
		account_free(a);
		return;
	}
	s->acct->state = a;
}

struct account *session_take_account(struct session *s)
{
	struct account *a;

	if (!s->acct)
		return NULL;
	a = s->acct->state;
	s->acct->state = NULL;
	return a;
}
