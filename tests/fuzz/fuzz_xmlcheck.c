/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "fuzz_xmlcheck.h"

/*
 * Limits of the checking parser: far above anything the fuzzed parsers
 * accept, since serializing can add bytes (escapes, xmlns declarations
 * repeated per element) and attributes (declared prefixes).
 */
static const struct xml_limits xmlcheck_limits = {
	.max_stanza_bytes = 64u << 20,
	.max_depth = 4096,
	.max_attrs = 1u << 20,
	.max_header_bytes = 1u << 20,
};

static struct xml_pool *xmlcheck_pool;

struct xmlcheck_ctx {
	const struct xml_node *want;
	int stanzas;
	bool opened;
	const char *why;
	bool equal;
};

static bool ns_eq(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

static bool attrs_equal(const struct xml_attr *a, const struct xml_attr *b, const char **why)
{
	for (; a && b; a = a->next, b = b->next) {
		if (strcmp(a->name, b->name) != 0 || !ns_eq(a->ns, b->ns)) {
			*why = "attribute name/namespace";
			return false;
		}
		if (strcmp(a->value, b->value) != 0) {
			*why = "attribute value";
			return false;
		}
	}
	if (a || b) {
		*why = "attribute count";
		return false;
	}
	return true;
}

bool xmlcheck_equal(const struct xml_node *a, const struct xml_node *b, const char **why)
{
	const struct xml_node *ca, *cb;

	if (!a->name != !b->name) {
		*why = "element vs text";
		return false;
	}
	if (!a->name) {
		if (a->text_len != b->text_len || memcmp(a->text, b->text, a->text_len) != 0) {
			*why = "text";
			return false;
		}
		return true;
	}
	if (strcmp(a->name, b->name) != 0) {
		*why = "element name";
		return false;
	}
	if (!ns_eq(a->ns, b->ns)) {
		*why = "element namespace";
		return false;
	}
	if (!attrs_equal(a->attrs, b->attrs, why))
		return false;
	for (ca = a->children, cb = b->children; ca && cb; ca = ca->next, cb = cb->next) {
		if (!xmlcheck_equal(ca, cb, why))
			return false;
		if (ca->parent != a || cb->parent != b) {
			*why = "parent link";
			return false;
		}
	}
	if (ca || cb) {
		*why = "child count";
		return false;
	}
	if (a->last_child) {
		const struct xml_node *last = a->children;

		while (last->next)
			last = last->next;
		if (last != a->last_child) {
			*why = "last_child link";
			return false;
		}
	}
	return true;
}

static bool xmlcheck_on_open(void *ctx, const struct xml_node *hdr, const char *default_ns)
{
	struct xmlcheck_ctx *c = ctx;

	(void)hdr;
	(void)default_ns;
	c->opened = true;
	return true;
}

static bool xmlcheck_on_stanza(void *ctx, struct xml_node *st)
{
	struct xmlcheck_ctx *c = ctx;

	if (++c->stanzas == 1)
		c->equal = xmlcheck_equal(c->want, st, &c->why);
	return true;
}

static const struct xml_stream_handlers xmlcheck_handlers = {
	.stream_open = xmlcheck_on_open,
	.stanza = xmlcheck_on_stanza,
};

/* Attribute value escaping for the header: every control as a reference. */
static void put_attr_value(struct strbuf *b, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c < 0x20)
			strbuf_printf(b, "&#%u;", c);
		else if (c == '\'')
			strbuf_puts(b, "&apos;");
		else if (c == '&')
			strbuf_puts(b, "&amp;");
		else if (c == '<')
			strbuf_puts(b, "&lt;");
		else
			strbuf_append(b, s, 1);
	}
}

void xmlcheck_roundtrip(const struct xml_node *n, const char *default_ns, const char *what,
			struct strbuf *out)
{
	struct strbuf text = STRBUF_INIT, doc = STRBUF_INIT;
	struct xmlcheck_ctx c = { .want = n, .equal = false, .why = "no stanza" };
	struct xml_stream s;
	enum xml_status st;
	size_t consumed = 0;

	if (!xmlcheck_pool) {
		xmlcheck_pool = xml_pool_new(&xmlcheck_limits);
		if (!xmlcheck_pool)
			abort();
	}
	xml_serialize(&text, n, default_ns);
	fuzz_check(!text.oom, "%s: serializer out of memory", what);

	strbuf_puts(&doc, "<stream:stream xmlns:stream='" XML_NS_STREAM "'");
	if (default_ns && *default_ns) {
		strbuf_puts(&doc, " xmlns='");
		put_attr_value(&doc, default_ns);
		strbuf_puts(&doc, "'");
	}
	strbuf_puts(&doc, ">");
	strbuf_append(&doc, text.data, text.len);

	xml_stream_init(&s, xmlcheck_pool, &xmlcheck_handlers, &c);
	st = xml_stream_feed(&s, doc.data, doc.len, &consumed);
	xml_stream_destroy(&s);

	if (st != XML_OK || !c.opened || c.stanzas != 1 || !c.equal) {
		fprintf(fuzz_err(), "\n%s: round trip failed: status=%d stanzas=%d (%s)\n"
			"default ns: '%s'\nserialized: %s\n", what, (int)st, c.stanzas,
			st == XML_OK ? c.why : "reparse error", default_ns ? default_ns : "",
			text.data);
		fuzz_fail("%s: serialize/parse round trip changed the stanza", what);
	}
	if (out) {
		strbuf_clear(out);
		strbuf_append(out, text.data, text.len);
	}
	strbuf_free(&text);
	strbuf_free(&doc);
}

void xmlcheck_cleanup(void)
{
	xml_pool_free(xmlcheck_pool);
	xmlcheck_pool = NULL;
}
