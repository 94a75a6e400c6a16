/* SPDX-License-Identifier: MIT */
/*
 * One stanza to many recipients, serialized once.
 *
 * A presence broadcast goes to every contact allowed to see it and every
 * available resource of the user, and RFC 6121 4.2.2 has the server
 * address each copy to its recipient ('to'). Serializing the tree once
 * per recipient would walk it R times; instead the stanza is serialized
 * once without 'to' into a template, and each copy is the template's
 * prefix (the start tag's name), " to='<escaped JID>'", and the rest:
 * two memcpys and the escaping of one JID per recipient.
 *
 * The template can also be made from bytes already serialized without
 * 'to' (a session's stored last presence), which is how probes and new
 * subscriptions are answered without a tree.
 */
#ifndef STANZAD_FANOUT_H
#define STANZAD_FANOUT_H

#include <stddef.h>
#include <stdint.h>

#include "strbuf.h"
#include "xml.h"

struct fanout {
	struct strbuf tmpl;	/* the stanza without 'to' */
	size_t split;		/* where " to='...'" goes: after "<name" */
	struct strbuf out;	/* one recipient's copy (reused) */
	uint64_t serial;	/* new with each template on this thread (fanout_copy_source) */
	uint32_t copies;	/* copies rendered from the current template (metrics.h) */
};

#define FANOUT_INIT { STRBUF_INIT, 0, STRBUF_INIT, 0, 0 }

/*
 * Serializes st (its 'to', if any, left out; st itself is not changed)
 * into the template. 0, or -ENOMEM.
 */
int fanout_prepare(struct fanout *f, const struct xml_node *st);

/*
 * Uses data[0..len), a stanza serialized without 'to' (as fanout_prepare
 * makes it), as the template. 0, -EINVAL when it does not start with
 * "<name" followed by a space, '>' or '/', or -ENOMEM.
 */
int fanout_prepare_bytes(struct fanout *f, const char *data, size_t len);

/*
 * The copy for one recipient: returns the bytes (valid until the next
 * render or fanout_release) and their length in *len, or NULL on ENOMEM.
 * to[0..to_len) is a normalized JID; it is escaped here.
 */
const char *fanout_render(struct fanout *f, const char *to, size_t to_len, size_t *len);

/* The template itself (no 'to'), e.g. to keep as a session's last presence. */
static inline const char *fanout_template(const struct fanout *f, size_t *len)
{
	*len = f->tmpl.len;
	return f->tmpl.data;
}

/* Frees both buffers; the struct may be prepared again. */
void fanout_release(struct fanout *f);

/*
 * Where a copy came from, for the kernel offload (kmod.c), which sends the
 * template and each recipient's splice to many sockets in one request: if
 * data[0..len) is the copy fanout_render() returned last on this thread,
 * and its fan-out was neither prepared again nor released since, returns
 * that fan-out, with the spliced " to='...'" at data[f->split] for
 * *splice_len bytes (the rest is the template: tmpl[0..split) before it,
 * tmpl[split..] after). NULL for any other bytes.
 */
const struct fanout *fanout_copy_source(const char *data, size_t len, size_t *splice_len);

#endif
