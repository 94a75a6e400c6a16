/* SPDX-License-Identifier: MIT */
/*
 * XEP-0059 Result Set Management: request parsing, reply building and
 * in-memory paging. See rsm.h for the rules.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "rsm.h"

/*
 * A decimal number in 0..UINT32_MAX, surrounding whitespace allowed (a
 * pretty-printing client may add it). 0 or -EINVAL.
 */
static int rsm_parse_u32(const char *s, uint32_t *out)
{
	uint64_t v = 0;
	size_t digits = 0;

	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
		s++;
	for (; *s >= '0' && *s <= '9'; s++) {
		v = v * 10 + (uint64_t)(*s - '0');
		if (v > UINT32_MAX)
			return -EINVAL;
		digits++;
	}
	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
		s++;
	if (!digits || *s)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

/* Sets *why (when wanted) and returns -EINVAL. */
static int rsm_bad(const char **why, const char *text)
{
	if (why)
		*why = text;
	return -EINVAL;
}

int rsm_parse(struct arena *a, const struct xml_node *parent, struct rsm_request *out,
	      const char **why)
{
	const struct xml_node *set = xml_child(parent, NS_RSM, "set");
	bool seen_after = false, seen_before = false;

	memset(out, 0, sizeof(*out));
	if (!set)
		return 0;
	out->present = true;
	for (const struct xml_node *ch = xml_first_element(set); ch; ch = xml_next_element(ch)) {
		const char *text;

		/* Other namespaces and unknown children are ignored (extensibility). */
		if (strcmp(ch->ns, NS_RSM) != 0)
			continue;
		if (strcmp(ch->name, "max") && strcmp(ch->name, "after") &&
		    strcmp(ch->name, "before") && strcmp(ch->name, "index"))
			continue;
		text = xml_text(a, ch);
		if (!text)
			return -ENOMEM;
		if (strcmp(ch->name, "max") == 0) {
			if (out->has_max)
				return rsm_bad(why, "<max/> given twice");
			if (rsm_parse_u32(text, &out->max) < 0)
				return rsm_bad(why, "<max/> must be a non-negative integer");
			out->has_max = true;
		} else if (strcmp(ch->name, "index") == 0) {
			if (out->has_index)
				return rsm_bad(why, "<index/> given twice");
			if (rsm_parse_u32(text, &out->index) < 0)
				return rsm_bad(why, "<index/> must be a non-negative integer");
			out->has_index = true;
		} else {
			bool after = strcmp(ch->name, "after") == 0;

			if (after ? seen_after : seen_before)
				return rsm_bad(why, after ? "<after/> given twice" :
						     "<before/> given twice");
			if (strlen(text) > RSM_UID_MAX)
				return rsm_bad(why, "item UID too long");
			/* An empty <before/> is the last page; an empty <after/> is nothing. */
			if (after && !text[0])
				return rsm_bad(why, "<after/> needs the UID of an item");
			if (after) {
				out->after = text;
				seen_after = true;
			} else {
				out->before = text;
				seen_before = true;
			}
		}
	}
	if (out->has_index && (out->after || out->before))
		return rsm_bad(why, "<index/> cannot be combined with <after/> or <before/>");
	return 0;
}

uint32_t rsm_page_size(const struct rsm_request *r, uint32_t dflt, uint32_t cap)
{
	uint32_t n = r->has_max ? r->max : dflt;

	return n < cap ? n : cap;
}

/* <name>text</name> under parent. 0 or -ENOMEM. */
static int rsm_add_text_child(struct arena *a, struct xml_node *parent, const char *name,
			      const char *text, struct xml_node **out)
{
	struct xml_node *el = xml_node_add_child(a, parent, NS_RSM, name);

	if (!el || xml_node_add_text(a, el, text, strlen(text)) < 0)
		return -ENOMEM;
	if (out)
		*out = el;
	return 0;
}

struct xml_node *rsm_build(struct arena *a, struct xml_node *parent, const struct rsm_reply *r)
{
	struct xml_node *set = parent ? xml_node_add_child(a, parent, NS_RSM, "set") :
					xml_node_new(a, NS_RSM, "set");
	char num[16];

	if (!set)
		return NULL;
	if (r->first) {
		struct xml_node *first;

		if (rsm_add_text_child(a, set, "first", r->first, &first) < 0)
			return NULL;
		if (r->has_index) {
			snprintf(num, sizeof(num), "%u", r->index);
			if (xml_attr_set(a, first, "index", num) < 0)
				return NULL;
		}
		if (rsm_add_text_child(a, set, "last", r->last ? r->last : r->first, NULL) < 0)
			return NULL;
	}
	if (r->has_count) {
		snprintf(num, sizeof(num), "%u", r->count);
		if (rsm_add_text_child(a, set, "count", num, NULL) < 0)
			return NULL;
	}
	return set;
}

void rsm_serialize(struct strbuf *out, const struct rsm_reply *r)
{
	strbuf_puts(out, "<set xmlns='" NS_RSM "'>");
	if (r->first) {
		const char *last = r->last ? r->last : r->first;

		if (r->has_index)
			strbuf_printf(out, "<first index='%u'>", r->index);
		else
			strbuf_puts(out, "<first>");
		strbuf_append_xml_escaped(out, r->first, strlen(r->first));
		strbuf_puts(out, "</first><last>");
		strbuf_append_xml_escaped(out, last, strlen(last));
		strbuf_puts(out, "</last>");
	}
	if (r->has_count)
		strbuf_printf(out, "<count>%u</count>", r->count);
	strbuf_puts(out, "</set>");
}

int rsm_window(const struct rsm_request *r, size_t n, uint32_t dflt, uint32_t cap,
	       long (*find)(void *arg, const char *uid), void *arg, struct rsm_window *out)
{
	size_t limit = rsm_page_size(r, dflt, cap);
	size_t lo = 0, hi = n, avail;

	memset(out, 0, sizeof(*out));
	if (r->after) {
		long p = find(arg, r->after);

		if (p < 0 || (size_t)p >= n)
			return -ENOENT;
		lo = (size_t)p + 1;
	}
	if (r->before && r->before[0]) {
		long p = find(arg, r->before);

		if (p < 0 || (size_t)p >= n)
			return -ENOENT;
		hi = (size_t)p;
	}
	if (hi < lo)
		hi = lo;	/* after and before the wrong way round: nothing between */
	if (rsm_backwards(r)) {
		avail = hi - lo;
		out->len = avail < limit ? avail : limit;
		out->start = hi - out->len;
		out->complete = out->start == lo;
	} else {
		/* XEP-0059 2.6: an index past the end gives an empty page. */
		out->start = r->has_index ? (r->index < n ? r->index : n) : lo;
		avail = hi - out->start;
		out->len = avail < limit ? avail : limit;
		out->complete = out->start + out->len == hi;
	}
	return 0;
}
