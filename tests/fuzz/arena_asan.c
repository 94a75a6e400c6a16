/* SPDX-License-Identifier: MIT */
/*
 * A stand-in for daemon/arena.c in the fuzz builds: the same API, but
 * every allocation is its own malloc() block and arena_reset() frees them
 * all. A bump allocator hides a use after reset (the memory stays mapped
 * and is simply reused); here AddressSanitizer reports it as a
 * heap-use-after-free, with the stack of the reset that freed it. This
 * is what tells whether "valid until the callback returns" and "the
 * scratch arena is reset after each dispatch" are respected.
 *
 * `total` counts requested bytes, so budgets that read it (the XML tree
 * budget) see slightly less than with real chunks.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"

struct arena_chunk {
	struct arena_chunk *next;
	size_t size;
	max_align_t data[];
};

void arena_init(struct arena *a, size_t chunk_size)
{
	a->head = NULL;
	a->chunk_size = chunk_size ? chunk_size : 4096;
	a->total = 0;
}

void *arena_alloc(struct arena *a, size_t n)
{
	struct arena_chunk *c;

	if (n > SIZE_MAX - sizeof(*c)) {
		errno = ENOMEM;
		return NULL;
	}
	c = malloc(sizeof(*c) + n);
	if (!c) {
		errno = ENOMEM;
		return NULL;
	}
	c->size = n;
	c->next = a->head;
	a->head = c;
	a->total += n;
	return c->data;
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

void arena_reset(struct arena *a)
{
	arena_release(a);
}

/* A mark is the newest block; rewinding frees every block allocated after it. */
struct arena_mark arena_mark(const struct arena *a)
{
	struct arena_mark m = { a->head, 0 };

	return m;
}

void arena_rewind(struct arena *a, struct arena_mark m)
{
	while (a->head && a->head != m.chunk) {
		struct arena_chunk *c = a->head;

		a->head = c->next;
		a->total -= c->size;
		free(c);
	}
}
