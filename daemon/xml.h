/* SPDX-License-Identifier: MIT */
/*
 * XML for XMPP streams: a compact element tree, a streaming parser built
 * on Expat that yields one top-level element (stanza) at a time, and a
 * serializer.
 *
 * Trees live in an arena: every string and node of a stanza is allocated
 * from the arena of the parser that produced it, and is valid until the
 * stanza callback returns. Handlers that need a stanza later serialize it
 * or copy it (xml_node_clone) into an arena of their own.
 *
 * Names are split into namespace URI and local name. The parser resolves
 * prefixes (RFC 6120 section 4.8), so handlers compare (ns, name) pairs and
 * never see prefixes. The serializer writes xmlns='...' only where an
 * element's namespace differs from its parent's, and assumes the caller's
 * stream default namespace (jabber:client) for the top element.
 */
#ifndef STANZAD_XML_H
#define STANZAD_XML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "strbuf.h"

#define XML_NS_XML	"http://www.w3.org/XML/1998/namespace"
#define XML_NS_STREAM	"http://etherx.jabber.org/streams"
#define XML_NS_CLIENT	"jabber:client"
#define XML_NS_SERVER	"jabber:server"

struct xml_attr {
	struct xml_attr *next;
	const char *ns;		/* NULL for unqualified attributes */
	const char *name;	/* local name */
	const char *value;	/* unescaped, NUL-terminated */
};

/*
 * An element, or a text node when name == NULL. Text nodes hold unescaped
 * character data (text, text_len; also NUL-terminated). Children keep
 * document order, so mixed content round-trips.
 */
struct xml_node {
	struct xml_node *parent;
	struct xml_node *next;		/* next sibling */
	struct xml_node *children;	/* first child */
	struct xml_node *last_child;
	const char *ns;			/* namespace URI; "" if none */
	const char *name;		/* local name; NULL for text */
	struct xml_attr *attrs;
	const char *text;
	size_t text_len;
};

/*
 * ---- Tree building and queries (all allocations from `a`) ----
 * Names, namespaces and values passed in are copied into `a` (well-known
 * namespace URIs are shared constants), so callers may pass temporaries.
 */

/* A new element with no parent. NULL with errno = ENOMEM. */
struct xml_node *xml_node_new(struct arena *a, const char *ns, const char *name);
/* A new element appended to parent; its ns defaults to the parent's when ns is NULL. */
struct xml_node *xml_node_add_child(struct arena *a, struct xml_node *parent,
				    const char *ns, const char *name);
/* Appends a text node (merging with a preceding text node). 0 or -ENOMEM. */
int xml_node_add_text(struct arena *a, struct xml_node *parent, const char *text, size_t len);
/* Appends `child` (from any arena that outlives parent) as last child. */
void xml_node_append(struct xml_node *parent, struct xml_node *child);
/* Unlinks child from its parent. */
void xml_node_remove(struct xml_node *child);
/* Sets (replacing) an unqualified attribute; value NULL removes it. 0 or -ENOMEM. */
int xml_attr_set(struct arena *a, struct xml_node *n, const char *name, const char *value);
/* Same for a namespaced attribute, e.g. (XML_NS_XML, "lang"). */
int xml_attr_set_ns(struct arena *a, struct xml_node *n, const char *ns,
		    const char *name, const char *value);
/* Value of an unqualified attribute, or NULL. */
const char *xml_attr_get(const struct xml_node *n, const char *name);
const char *xml_attr_get_ns(const struct xml_node *n, const char *ns, const char *name);

/* First child element with this ns and name (ns NULL = any), or NULL. */
struct xml_node *xml_child(const struct xml_node *n, const char *ns, const char *name);
/* First child element, or NULL; next element sibling, or NULL. */
struct xml_node *xml_first_element(const struct xml_node *n);
struct xml_node *xml_next_element(const struct xml_node *n);
/* Number of child elements. */
size_t xml_element_count(const struct xml_node *n);
/* Concatenated text of n's direct text children, in `a` ("" if none). */
const char *xml_text(struct arena *a, const struct xml_node *n);
/* Deep copy into another arena. NULL with errno = ENOMEM. */
struct xml_node *xml_node_clone(struct arena *a, const struct xml_node *n);

/* ---- Serializer ---- */

/*
 * Appends n (and its subtree) to out. parent_ns is the namespace in scope
 * (the stream's default namespace for a stanza; NULL means none): xmlns is
 * written only where an element's ns differs from it. Attribute values and
 * text are escaped (the five XML specials; CR, and TAB/LF in attributes,
 * as character references so they survive normalization; other C0
 * controls, which XML cannot carry, are dropped); xml:lang keeps its
 * prefix; other namespaced attributes get declared prefixes ns1, ns2, ...
 * Elements in XML_NS_STREAM (features, error) are written as
 * <stream:x xmlns:stream='...'> rather than with a default namespace,
 * since some clients match on the conventional prefix; their children
 * still see parent_ns as the default namespace.
 */
void xml_serialize(struct strbuf *out, const struct xml_node *n, const char *parent_ns);

/* ---- Streaming parser ---- */

/* Limits: breaching one is a policy-violation stream error. */
struct xml_limits {
	size_t max_stanza_bytes;	/* bytes of one top-level element, default 256 KiB */
	unsigned max_depth;		/* element nesting inside a stanza (the stanza
					 * itself is level 1), default 32 */
	unsigned max_attrs;		/* attributes per element, xmlns declarations
					 * included, default 64 */
	size_t max_header_bytes;	/* bytes of the stream header, default 4 KiB */
};

#define XML_LIMITS_DEFAULT { 256 * 1024, 32, 64, 4096 }

/* Outcome of xml_stream_feed; each error maps to an RFC 6120 stream error. */
enum xml_status {
	XML_OK = 0,
	XML_STOPPED,		/* a callback asked to stop; see *consumed */
	XML_CLOSED,		/* the peer closed the stream (</stream:stream>) */
	XML_ERR_NOT_WELL_FORMED,/* not-well-formed */
	XML_ERR_RESTRICTED,	/* restricted-xml: DTD, comment, PI, entity decl */
	XML_ERR_POLICY,		/* policy-violation: a limit was exceeded */
	XML_ERR_BAD_FORMAT,	/* bad-format: e.g. text at stream level */
	XML_ERR_NOMEM,		/* internal-server-error */
};

/* Callbacks return true to keep parsing, false to stop (XML_STOPPED). */
struct xml_stream_handlers {
	/*
	 * The stream header. `header` has the header's attributes (to, from,
	 * version, id, xml:lang), its ns/name as parsed, and `default_ns` is
	 * the content namespace declared on it ("" if none). Checking them is
	 * the caller's job.
	 */
	bool (*stream_open)(void *ctx, const struct xml_node *header, const char *default_ns);
	/* A complete top-level element. Valid until the callback returns. */
	bool (*stanza)(void *ctx, struct xml_node *stanza);
};

/*
 * Per-worker pool of Expat parsers (and their arenas). A connection holds
 * a parser only while it is inside a stanza or has unparsed bytes; between
 * stanzas it returns it here, which keeps idle connections small.
 */
struct xml_pool;

/* limits NULL = XML_LIMITS_DEFAULT. NULL with errno = ENOMEM. */
struct xml_pool *xml_pool_new(const struct xml_limits *limits);
/* Also frees parsers still held by streams: destroy those streams first. */
void xml_pool_free(struct xml_pool *pool);
/* Number of parsers currently idle in the pool / handed out (for tests). */
size_t xml_pool_idle(const struct xml_pool *pool);
size_t xml_pool_in_use(const struct xml_pool *pool);

/* Counters for metrics and tests. */
struct xml_pool_stats {
	size_t idle;		/* parsers in the pool */
	size_t in_use;		/* parsers held by streams */
	size_t created;		/* parsers created since xml_pool_new */
	size_t expat_bytes;	/* heap held by Expat in all parsers */
	size_t expat_peak;	/* most heap one parser's Expat ever held */
	size_t tree_bytes;	/* arenas and text buffers of all parsers */
	uint64_t expat_allocs;	/* malloc/realloc calls made by Expat */
};

void xml_pool_stats(const struct xml_pool *pool, struct xml_pool_stats *st);

/*
 * Per-connection stream state. Small: a pointer to a pooled parser when
 * busy, and the stream header's namespace context (so a fresh parser can
 * be primed to continue the same stream).
 */
struct xml_stream {
	struct xml_pool *pool;
	void *parser;			/* pooled parser, NULL when idle */
	char *ns_context;		/* NULL: the standard header; else malloc'd */
	const struct xml_stream_handlers *handlers;
	void *ctx;
	size_t limit_override;		/* if nonzero, replaces max_stanza_bytes */
	uint8_t state;			/* private: header expected, open, closed */
	bool restarted;			/* private: restarted, no byte of the new stream yet */
};

void xml_stream_init(struct xml_stream *s, struct xml_pool *pool,
		     const struct xml_stream_handlers *h, void *ctx);

/*
 * Feeds bytes. Callbacks run inside. Returns XML_OK when all bytes were
 * consumed, XML_STOPPED when a callback returned false (*consumed = bytes
 * up to and including the element that stopped; the rest was not parsed),
 * XML_CLOSED when the stream end tag was seen (*consumed as for STOPPED),
 * or an error (*consumed = 0). After an error the stream is unusable until
 * restarted; feeding a closed stream returns XML_CLOSED again.
 * After XML_STOPPED the stream continues where it stopped: feed the rest
 * (or restart first). consumed may be NULL.
 *
 * From inside a callback, a stream may call xml_stream_restart() and set
 * limit_override, but must not feed or destroy itself.
 */
enum xml_status xml_stream_feed(struct xml_stream *s, const char *data, size_t len,
				size_t *consumed);

/*
 * Expects a new stream header next (after STARTTLS or SASL success); also
 * clears an error state. Called from a callback, it takes effect right
 * after the current element: if the callback returns true, the rest of
 * the bytes being fed are parsed as the new document.
 */
void xml_stream_restart(struct xml_stream *s);

/*
 * Gives the parser back to the pool if the stream is between stanzas with
 * nothing buffered. Call after a batch of input. Cheap when not possible.
 */
void xml_stream_release_idle(struct xml_stream *s);

/* Releases everything the stream holds; the stream reads as closed. */
void xml_stream_destroy(struct xml_stream *s);

/* The RFC 6120 stream error condition for an error status. */
const char *xml_status_condition(enum xml_status st);

#endif
