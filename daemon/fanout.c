/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "fanout.h"
#include "metrics.h"

/*
 * The last copy rendered on this thread (fanout_copy_source): the fan-out,
 * its template's serial, and the copy's bytes. Thread-local because each
 * worker renders on its own thread.
 */
static __thread struct {
	const struct fanout *f;
	uint64_t serial;
	const char *data;
	size_t len;
} fanout_last;

static __thread uint64_t fanout_serial;

/* A new template in f: copies rendered from the old one are no longer known. */
static void fanout_new_template(struct fanout *f)
{
	metrics_fanout(f->copies);	/* the previous template's recipients (metrics.h) */
	f->copies = 0;
	f->serial = ++fanout_serial;
	if (fanout_last.f == f)
		fanout_last.f = NULL;
}

/* Length of "<name" at the start of a serialized element, or 0 if malformed. */
static size_t fanout_split_of(const char *data, size_t len)
{
	size_t i = 1;

	if (len < 3 || data[0] != '<')
		return 0;
	while (i < len && data[i] != ' ' && data[i] != '>' && data[i] != '/')
		i++;
	return i < len && i > 1 ? i : 0;
}

int fanout_prepare(struct fanout *f, const struct xml_node *st)
{
	struct xml_node *n = (struct xml_node *)st;
	struct xml_attr **pp, *to = NULL;

	/*
	 * Leave 'to' out by unlinking it for the duration of the call (the
	 * tree is back as it was on return): cheaper than cutting it out of
	 * the text, where a value such as "x to=" would fool a plain search.
	 */
	for (pp = &n->attrs; *pp; pp = &(*pp)->next) {
		if (!(*pp)->ns && strcmp((*pp)->name, "to") == 0) {
			to = *pp;
			*pp = to->next;
			break;
		}
	}
	strbuf_clear(&f->tmpl);
	xml_serialize(&f->tmpl, st, XML_NS_CLIENT);
	if (to)
		*pp = to;	/* pp still points at to's old link */
	fanout_new_template(f);
	if (f->tmpl.oom)
		return -ENOMEM;
	f->split = 1 + strlen(st->name);
	return 0;
}

int fanout_prepare_bytes(struct fanout *f, const char *data, size_t len)
{
	size_t split = fanout_split_of(data, len);

	if (!split)
		return -EINVAL;
	strbuf_clear(&f->tmpl);
	strbuf_append(&f->tmpl, data, len);
	fanout_new_template(f);
	if (f->tmpl.oom)
		return -ENOMEM;
	f->split = split;
	return 0;
}

const char *fanout_render(struct fanout *f, const char *to, size_t to_len, size_t *len)
{
	struct strbuf *o = &f->out;

	strbuf_clear(o);
	/* Worst case every byte of the JID becomes "&quot;". */
	if (strbuf_reserve(o, f->tmpl.len + 6 * to_len + 8) < 0)
		return NULL;
	memcpy(o->data, f->tmpl.data, f->split);
	memcpy(o->data + f->split, " to='", 5);
	o->len = f->split + 5;
	strbuf_append_xml_escaped(o, to, to_len);
	strbuf_append(o, "'", 1);
	strbuf_append(o, f->tmpl.data + f->split, f->tmpl.len - f->split);
	if (o->oom)
		return NULL;
	*len = o->len;
	f->copies++;
	fanout_last.f = f;
	fanout_last.serial = f->serial;
	fanout_last.data = o->data;
	fanout_last.len = o->len;
	return o->data;
}

void fanout_release(struct fanout *f)
{
	metrics_fanout(f->copies);
	f->copies = 0;
	if (fanout_last.f == f)
		fanout_last.f = NULL;
	strbuf_free(&f->tmpl);
	strbuf_free(&f->out);
	f->split = 0;
}

const struct fanout *fanout_copy_source(const char *data, size_t len, size_t *splice_len)
{
	const struct fanout *f = fanout_last.f;

	if (!f || data != fanout_last.data || len != fanout_last.len || f->serial != fanout_last.serial ||
	    f->out.data != data || len < f->tmpl.len)
		return NULL;
	*splice_len = len - f->tmpl.len;
	return f;
}
