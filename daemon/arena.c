/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"

struct arena_chunk {
	struct arena_chunk *next;
	size_t size;	/* usable bytes in data[] */
	size_t used;
	_Alignas(8) unsigned char data[];
};

void arena_init(struct arena *a, size_t chunk_size)
{
	a->head = NULL;
	a->chunk_size = chunk_size ? chunk_size : 4096;
	a->total = 0;
}

static struct arena_chunk *arena_grow(struct arena *a, size_t n)
{
	size_t size = n > a->chunk_size ? n : a->chunk_size;
	struct arena_chunk *c;

	c = malloc(sizeof(*c) + size);
	if (!c)
		return NULL;
	c->size = size;
	c->used = 0;
	c->next = a->head;
	a->head = c;
	a->total += size;
	return c;
}

void *arena_alloc(struct arena *a, size_t n)
{
	struct arena_chunk *c = a->head;
	size_t need = (n + 7) & ~(size_t)7;
	void *p;

	if (need < n) {
		errno = ENOMEM;
		return NULL;
	}
	if (!c || c->size - c->used < need) {
		c = arena_grow(a, need);
		if (!c) {
			errno = ENOMEM;
			return NULL;
		}
	}
	p = c->data + c->used;
	c->used += need;
	return p;
}

char *arena_strndup(struct arena *a, const char *s, size_t n)
{
	char *p = arena_alloc(a, n + 1);

	if (!p)
		return NULL;
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

char *arena_strdup(struct arena *a, const char *s)
{
	return arena_strndup(a, s, strlen(s));
}

void arena_reset(struct arena *a)
{
	struct arena_chunk *c = a->head, *first = NULL;

	/* The oldest chunk is last in the list; keep it if it is regular. */
	while (c) {
		struct arena_chunk *next = c->next;

		if (!next && c->size == a->chunk_size) {
			first = c;
			break;
		}
		a->total -= c->size;
		free(c);
		c = next;
	}
	a->head = first;
	if (first) {
		first->used = 0;
		first->next = NULL;
	}
}

void arena_release(struct arena *a)
{
	struct arena_chunk *c = a->head;

	while (c) {
		struct arena_chunk *next = c->next;

		free(c);
		c = next;
	}
	a->head = NULL;
	a->total = 0;
}

struct arena_mark arena_mark(const struct arena *a)
{
	struct arena_mark m = { a->head, a->head ? a->head->used : 0 };

	return m;
}

void arena_rewind(struct arena *a, struct arena_mark m)
{
	/* Chunks newer than the mark's are on top of the list. */
	while (a->head && a->head != m.chunk) {
		struct arena_chunk *c = a->head;

		a->head = c->next;
		a->total -= c->size;
		free(c);
	}
	if (a->head)
		a->head->used = m.used;
}
