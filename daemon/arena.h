/* SPDX-License-Identifier: MIT */
/*
 * Bump allocator for short-lived trees (one stanza, one request).
 *
 * Memory comes in chunks; arena_reset() keeps the first chunk so an arena
 * that is reused per stanza reaches a steady state with no malloc at all.
 * Nothing is freed individually. Allocations are 8-byte aligned.
 */
#ifndef STANZAD_ARENA_H
#define STANZAD_ARENA_H

#include <stddef.h>

struct arena_chunk;

struct arena {
	struct arena_chunk *head;	/* current chunk, newest first */
	size_t chunk_size;		/* size of regular chunks */
	size_t total;			/* bytes held in all chunks */
};

/* No memory is taken until the first allocation. */
void arena_init(struct arena *a, size_t chunk_size);

/* Returns n bytes (n may be 0), or NULL with errno = ENOMEM. */
void *arena_alloc(struct arena *a, size_t n);

/* Copies s[0..n) and adds a NUL. NULL with errno = ENOMEM. */
char *arena_strndup(struct arena *a, const char *s, size_t n);
char *arena_strdup(struct arena *a, const char *s);

/*
 * A position in the arena. Code that may run nested inside a handler that
 * still uses the arena (an error reply built in the middle of routing)
 * takes a mark and rewinds to it, instead of resetting the whole arena.
 */
struct arena_mark {
	struct arena_chunk *chunk;
	size_t used;
};

struct arena_mark arena_mark(const struct arena *a);
/* Frees what was allocated after the mark; earlier allocations stay valid. */
void arena_rewind(struct arena *a, struct arena_mark m);

/* Forgets every allocation but keeps the first chunk for reuse. */
void arena_reset(struct arena *a);

/* Frees every chunk; the arena may be used again afterwards. */
void arena_release(struct arena *a);

#endif
