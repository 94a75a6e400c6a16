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

#include "strbuf.h"
#include "xml.h"

struct fanout {
	struct strbuf tmpl;	/* the stanza without 'to' */
	size_t split;		/* where " to='...'" goes: after "<name" */
	struct strbuf out;	/* one recipient's copy (reused) */
};

#define FANOUT_INIT { STRBUF_INIT, 0, STRBUF_INIT }

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

#endif
