/* SPDX-License-Identifier: MIT */
/*
 * Growable byte buffer, kept NUL-terminated for convenience. Used as the
 * serializer's output and as scratch space that is reused (strbuf_clear
 * keeps the allocation), so steady-state use does not allocate.
 */
#ifndef STANZAD_STRBUF_H
#define STANZAD_STRBUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

struct strbuf {
	char *data;	/* NULL until the first append */
	size_t len;
	size_t cap;
	bool oom;	/* an append failed; the content is incomplete */
};

#define STRBUF_INIT { NULL, 0, 0, false }

/* Ensures room for `extra` more bytes plus the NUL. 0 or -ENOMEM. */
int strbuf_reserve(struct strbuf *b, size_t extra);
void strbuf_append(struct strbuf *b, const void *data, size_t len);
void strbuf_puts(struct strbuf *b, const char *s);
void strbuf_printf(struct strbuf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Appends text with the five XML special characters escaped. */
void strbuf_append_xml_escaped(struct strbuf *b, const char *s, size_t len);
static inline void strbuf_clear(struct strbuf *b)
{
	b->len = 0;
	b->oom = false;
	if (b->data)
		b->data[0] = '\0';
}
void strbuf_free(struct strbuf *b);

#endif
