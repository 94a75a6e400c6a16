/* SPDX-License-Identifier: MIT */
/*
 * Stored XML goes back through the same Expat stream parser as network
 * input, limits included: the store is trusted, but a corrupt row must
 * end in an error answer, never in a tree the serializer cannot handle.
 */
#include <errno.h>
#include <string.h>

#include "stored_xml.h"

/* The context the parser needs before the element: a client stream header. */
static const char stored_xml_header[] =
	"<stream:stream xmlns='" XML_NS_CLIENT "' xmlns:stream='" XML_NS_STREAM "'>";

struct stored_xml_ctx {
	struct arena *a;
	struct xml_node *out;
	int err;
};

static bool stored_xml_on_open(void *ctx, const struct xml_node *hdr, const char *default_ns)
{
	return true;
}

/* One element is all there is: keep a copy and stop. */
static bool stored_xml_on_element(void *ctx, struct xml_node *el)
{
	struct stored_xml_ctx *sx = ctx;

	sx->out = xml_node_clone(sx->a, el);
	if (!sx->out)
		sx->err = ENOMEM;
	return false;
}

static const struct xml_stream_handlers stored_xml_handlers = {
	.stream_open = stored_xml_on_open,
	.stanza = stored_xml_on_element,
};

/*
 * No namespace in scope: the top element declares its own (xmlns='...'),
 * so the text means the same whatever stream it is later parsed in.
 */
void stored_xml_serialize(struct strbuf *out, const struct xml_node *el)
{
	xml_serialize(out, el, NULL);
}

struct xml_node *stored_xml_parse(struct xml_pool *pool, struct arena *a, const char *text,
				  size_t len)
{
	struct stored_xml_ctx sx = { .a = a };
	struct xml_stream s;
	enum xml_status st;
	size_t consumed = 0;

	/* A private stream: the pooled parser goes back to the pool at destroy. */
	xml_stream_init(&s, pool, &stored_xml_handlers, &sx);
	st = xml_stream_feed(&s, stored_xml_header, sizeof(stored_xml_header) - 1, NULL);
	if (st == XML_OK)
		st = xml_stream_feed(&s, text, len, &consumed);
	xml_stream_destroy(&s);
	if (sx.err) {
		errno = sx.err;
		return NULL;
	}
	/* Exactly one element and nothing after it. */
	if (st != XML_STOPPED || !sx.out || consumed != len) {
		errno = st == XML_ERR_NOMEM ? ENOMEM : EINVAL;
		return NULL;
	}
	return sx.out;
}

bool stored_xml_is_empty(const struct xml_node *el)
{
	/* Namespace declarations may show up as attributes; they are not content. */
	for (const struct xml_attr *at = el->attrs; at; at = at->next) {
		bool decl = (at->ns && strcmp(at->ns, "http://www.w3.org/2000/xmlns/") == 0) ||
			    (!(at->ns && *at->ns) && strcmp(at->name, "xmlns") == 0);

		if (!decl)
			return false;
	}
	return el->children == NULL;
}
