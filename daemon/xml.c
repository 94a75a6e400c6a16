/* SPDX-License-Identifier: MIT */
/*
 * XML trees, the serializer, and the pooled Expat stream parser (xml.h).
 *
 * Parser design, in short:
 *
 * - One Expat parser per *busy* stream, taken from a per-worker pool. A
 *   stream between stanzas with nothing buffered gives its parser back
 *   (xml_stream_release_idle); the next bytes take one from the pool and
 *   "prime" it by parsing a synthetic copy of the stream header (same
 *   QName, same namespace declarations), so prefixes declared on the
 *   header and the client's final </stream:stream> still resolve.
 *
 * - Almost every stream has the standard header. A parser released by
 *   such a stream is already in exactly the state priming would produce
 *   (depth 1 under that header, nothing buffered), so the pool keeps it
 *   as is on a second idle list and hands it to the next standard stream
 *   without a reset or priming. Expat keeps no per-client state at that
 *   point beyond the header's QName and namespace bindings; its document
 *   is recycled like any other (XML_RECYCLE_BYTES).
 *
 * - Byte accounting uses Expat's document byte index. `fed` counts bytes
 *   given to Expat in the current document (the priming header included);
 *   `mark` is the offset just after the last thing that left the parser
 *   in a clean between-stanzas state (header start tag, a whitespace run
 *   at stream level, a complete stanza), or the start of the stanza being
 *   parsed. fed - mark is therefore everything Expat holds for the
 *   current top-level element, complete or not, and is what the stanza
 *   and header limits apply to. fed == mark at depth 1 means Expat holds
 *   nothing, which is when the parser can go back to the pool.
 *
 * - Input is given to Expat in slices no longer than the remaining
 *   budget + 1, so an endless element is refused as soon as it crosses
 *   the limit, and Expat's own buffer never grows past about twice the
 *   limit.
 *
 * - Expat 2.5 re-tokenizes an unfinished token from its start on every
 *   XML_Parse call, so a 256 KiB start tag trickled in one byte per read
 *   costs O(n^2) (about 17 s of CPU here). Once Expat holds an unfinished
 *   token of XML_DEFER_MIN bytes or more, new bytes are kept here instead
 *   and scanned by a small lexer that only knows how such a token can end
 *   ('>' outside attribute quotes, ';' for a reference); Expat gets them
 *   as soon as the token can be complete, so a complete stanza is never
 *   held back. A long comment or PI is refused by the lexer itself (both
 *   are restricted, and Expat could only say so at their end). Whatever
 *   else the lexer is unsure about goes to Expat at once. (Expat 2.6's own deferral is off: it can hold back a
 *   complete stanza until more bytes arrive.)
 *
 * - A handler never unwinds through Expat: it records why parsing must
 *   halt (stop, close, error, restart, recycle) and the byte offset, and
 *   calls XML_StopParser(); xml_stream_feed() acts on it after XML_Parse()
 *   returns.
 *
 * - Expat allocates through a counting memory suite, so each parser's
 *   heap use is known: it is capped (a policy violation beyond the cap),
 *   parsers that grew large are freed rather than pooled, and tests can
 *   check that steady-state parsing does not allocate.
 */
#include <errno.h>
#include <expat.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "log.h"
#include "xml.h"

/*
 * Namespace separator for XML_ParserCreateNS. Expat (>= 2.4.5) rejects a
 * namespace URI containing the separator unless it is an RFC 3986 URI
 * character; U+0001 is neither a URI character nor allowed anywhere in an
 * XML 1.0 document (not even as &#1;), so it can never be ambiguous.
 */
#define XML_NS_SEP		'\x01'
#define XML_NS_SEP_STR		"\x01"

/* Arena chunk of a pooled parser: a typical stanza tree fits in one. */
#define XML_ARENA_CHUNK		8192
/* Idle parsers a pool keeps; beyond this they are freed. */
#define XML_POOL_MAX_IDLE	64
/* A parser whose Expat heap grew beyond this is freed, not pooled. */
#define XML_POOL_KEEP_EXPAT	(64 * 1024)
/* Text scratch buffers larger than this are freed when pooled. */
#define XML_POOL_KEEP_TEXT	(16 * 1024)
/* Tree memory (arena) of one stanza may reach this multiple of the limit. */
#define XML_TREE_MEM_FACTOR	8
/* Expat heap per parser may reach this multiple of the limit plus base. */
#define XML_EXPAT_MEM_FACTOR	8
#define XML_EXPAT_MEM_BASE	(2 * 1024 * 1024)
/*
 * After a stanza ends beyond this document offset, the parser is reset
 * and re-primed: Expat keeps every distinct element and attribute name of
 * a document in hash tables, so a long stream of unique names would grow
 * it without bound.
 */
#define XML_RECYCLE_BYTES	(256 * 1024)
/* Largest slice handed to one XML_Parse() call (its length is an int). */
#define XML_MAX_SLICE		(1u << 30)
/* Unfinished tokens from this size on are completed here, not by Expat. */
#ifndef XML_DEFER_MIN
#define XML_DEFER_MIN		1024
#endif

/* The standard c2s header context, kept as NULL in xml_stream. */
static const char xml_std_context[] =
	"<stream:stream xmlns='" XML_NS_CLIENT "' xmlns:stream='" XML_NS_STREAM "'>";

/* xml_stream.state; errors are stored as XML_ST_ERROR | status. */
enum {
	XML_ST_HEADER = 0,	/* a stream header is expected */
	XML_ST_OPEN,		/* header seen, stanzas flow */
	XML_ST_CLOSED,		/* end tag seen or stream destroyed */
	XML_ST_ERROR = 0x80,
};

/* Why a handler halted Expat (struct xml_parser.halt). */
enum {
	XML_HALT_NONE = 0,
	XML_HALT_STOP,		/* a callback returned false */
	XML_HALT_CLOSE,		/* the stream end tag */
	XML_HALT_ERROR,		/* see .err */
	XML_HALT_RESTART,	/* xml_stream_restart() from a callback */
	XML_HALT_RECYCLE,	/* reset and re-prime at a stanza boundary */
};

/* State of the deferral lexer (struct xml_parser.lex). */
enum {
	XML_LEX_TOKEN = 0,	/* at the first byte of the unfinished token */
	XML_LEX_LT,		/* after '<' */
	XML_LEX_BANG,		/* after "<!" */
	XML_LEX_TAG,		/* inside a start tag, outside quotes */
	XML_LEX_EQ,		/* after '=' in a start tag */
	XML_LEX_QUOTE,		/* inside an attribute value quoted by lex_n */
	XML_LEX_END_TAG,	/* inside "</" */
	XML_LEX_REF,		/* inside '&' ... ';' */
};

/* A namespace declaration seen on the stream header. */
struct xml_decl {
	struct xml_decl *next;
	const char *prefix;	/* NULL for the default namespace */
	const char *uri;	/* "" for xmlns='' */
};

struct xml_parser {
	XML_Parser xp;
	struct xml_pool *pool;
	struct xml_parser *next_idle;
	struct xml_parser *all_prev, *all_next;	/* every parser of the pool */
	struct xml_stream *s;			/* owner while in use */
	struct arena arena;			/* trees; reset after each callback */
	struct strbuf text;			/* character data being collected */
	unsigned long salt;			/* hash salt, re-applied on reset */
	size_t expat_bytes;			/* Expat heap held by this parser */
	size_t expat_cap;			/* refused beyond this while parsing */
	bool mm_enforce;			/* inside XML_Parse: enforce the cap */
	bool mm_refused;			/* the cap refused an allocation */

	/* State of the current document; cleared by xml_parser_reset(). */
	uint64_t fed;			/* bytes accepted (given to Expat or deferred) */
	uint64_t expat_fed;		/* bytes given to Expat */
	uint64_t last_ev;		/* end of the last Expat event */
	uint64_t mark;			/* see the file comment */
	struct strbuf tail;		/* bytes [last_ev, fed): Expat's unfinished
					 * token plus deferred bytes */
	bool deferring;			/* new bytes go to tail, not to Expat */
	uint8_t lex;			/* XML_LEX_*, over the bytes in tail */
	uint8_t lex_n;
	uint64_t stanza_start;		/* offset of the open stanza's start tag */
	unsigned depth;			/* open elements; the header is 1 */
	unsigned pending_decls;		/* xmlns declarations of the next tag */
	struct xml_node *cur;		/* innermost open stanza element */
	struct xml_decl *decls, **decls_tail;	/* header declarations */
	bool priming;			/* parsing the synthetic header */
	bool in_parse;			/* inside XML_Parse() */
	bool in_cdata;
	bool restart_req;		/* xml_stream_restart() from a callback */
	uint8_t halt;
	enum xml_status err;
	uint64_t halt_off;		/* document offset where parsing halted */
};

struct xml_pool {
	struct xml_limits limits;
	struct xml_parser *idle;	/* reset, ready for a new document */
	struct xml_parser *primed;	/* at depth 1 under xml_std_context */
	struct xml_parser *all;
	size_t n_idle;			/* on both idle lists */
	size_t n_in_use;
	size_t n_created;
	size_t expat_bytes;
	size_t expat_peak;
	uint64_t expat_allocs;
};

/* ---------------------------------------------------------------- */
/* Expat memory accounting                                          */
/* ---------------------------------------------------------------- */

/*
 * Expat's memory functions get no context, so the parser being driven is
 * passed in a thread-local (pools are per worker thread). Each block
 * records its owner, so frees and reallocs need no context at all.
 */
static __thread struct xml_parser *xml_mm_owner;

struct xml_mm_hdr {
	struct xml_parser *owner;
	size_t size;
};

#define XML_MM_HDR \
	((sizeof(struct xml_mm_hdr) + alignof(max_align_t) - 1) & \
	 ~(alignof(max_align_t) - 1))

static bool xml_mm_over_cap(struct xml_parser *p, size_t grow)
{
	if (!p || !p->mm_enforce || p->expat_bytes + grow <= p->expat_cap)
		return false;
	p->mm_refused = true;
	return true;
}

static void xml_mm_account(struct xml_parser *p, size_t add, size_t sub)
{
	if (!p)
		return;
	p->expat_bytes = p->expat_bytes + add - sub;
	p->pool->expat_bytes = p->pool->expat_bytes + add - sub;
	if (p->expat_bytes > p->pool->expat_peak)
		p->pool->expat_peak = p->expat_bytes;
	if (add)
		p->pool->expat_allocs++;
}

static void *xml_mm_malloc(size_t n)
{
	struct xml_parser *p = xml_mm_owner;
	struct xml_mm_hdr *h;

	if (n > SIZE_MAX - XML_MM_HDR || xml_mm_over_cap(p, n))
		return NULL;
	h = malloc(XML_MM_HDR + n);
	if (!h)
		return NULL;
	h->owner = p;
	h->size = n;
	xml_mm_account(p, n, 0);
	return (char *)h + XML_MM_HDR;
}

static void xml_mm_free(void *ptr)
{
	struct xml_mm_hdr *h;

	if (!ptr)
		return;
	h = (struct xml_mm_hdr *)((char *)ptr - XML_MM_HDR);
	xml_mm_account(h->owner, 0, h->size);
	free(h);
}

static void *xml_mm_realloc(void *ptr, size_t n)
{
	struct xml_mm_hdr *h, *nh;
	size_t old;

	if (!ptr)
		return xml_mm_malloc(n);
	h = (struct xml_mm_hdr *)((char *)ptr - XML_MM_HDR);
	old = h->size;
	if (n > SIZE_MAX - XML_MM_HDR ||
	    (n > old && xml_mm_over_cap(h->owner, n - old)))
		return NULL;
	nh = realloc(h, XML_MM_HDR + n);
	if (!nh)
		return NULL;
	nh->size = n;
	xml_mm_account(nh->owner, n, old);
	return (char *)nh + XML_MM_HDR;
}

static const XML_Memory_Handling_Suite xml_mm_suite = {
	.malloc_fcn = xml_mm_malloc,
	.realloc_fcn = xml_mm_realloc,
	.free_fcn = xml_mm_free,
};

/* ---------------------------------------------------------------- */
/* Strings                                                          */
/* ---------------------------------------------------------------- */

struct xml_known {
	const char *s;
	size_t len;
};

#define XML_KNOWN(str) { str, sizeof(str) - 1 }

/*
 * Namespaces that most stanzas use. A tree points at these constants
 * instead of copying the URI into its arena, and clones share them.
 */
static const struct xml_known xml_known_ns[] = {
	XML_KNOWN(XML_NS_CLIENT),
	XML_KNOWN(XML_NS_SERVER),
	XML_KNOWN(XML_NS_STREAM),
	XML_KNOWN(XML_NS_XML),
	XML_KNOWN("urn:ietf:params:xml:ns:xmpp-stanzas"),
	XML_KNOWN("urn:ietf:params:xml:ns:xmpp-streams"),
	XML_KNOWN("urn:ietf:params:xml:ns:xmpp-tls"),
	XML_KNOWN("urn:ietf:params:xml:ns:xmpp-sasl"),
	XML_KNOWN("urn:ietf:params:xml:ns:xmpp-bind"),
	XML_KNOWN("urn:ietf:params:xml:ns:xmpp-session"),
	XML_KNOWN("jabber:iq:roster"),
	XML_KNOWN("urn:xmpp:sm:3"),
	XML_KNOWN("urn:xmpp:ping"),
	XML_KNOWN("urn:xmpp:delay"),
	XML_KNOWN("jabber:x:data"),
	XML_KNOWN("http://jabber.org/protocol/caps"),
	XML_KNOWN("http://jabber.org/protocol/disco#info"),
	XML_KNOWN("http://jabber.org/protocol/disco#items"),
	XML_KNOWN("http://jabber.org/protocol/chatstates"),
};

/*
 * Returns a stable copy of ns[0..len): `hint` (typically the parent's
 * namespace) when equal, a known constant, or an arena copy.
 */
static const char *xml_ns_intern(struct arena *a, const char *ns, size_t len,
				 const char *hint)
{
	if (len == 0)
		return "";
	if (hint && strncmp(hint, ns, len) == 0 && hint[len] == '\0')
		return hint;
	for (size_t i = 0; i < sizeof(xml_known_ns) / sizeof(xml_known_ns[0]); i++) {
		if (xml_known_ns[i].len == len && memcmp(xml_known_ns[i].s, ns, len) == 0)
			return xml_known_ns[i].s;
	}
	return arena_strndup(a, ns, len);
}

static bool xml_ns_is_known(const char *ns)
{
	for (size_t i = 0; i < sizeof(xml_known_ns) / sizeof(xml_known_ns[0]); i++) {
		if (ns == xml_known_ns[i].s)
			return true;
	}
	return false;
}

static char *xml_strdup0(struct arena *a, const char *s)
{
	/* Empty strings are common (attribute values) and need no copy. */
	if (!*s)
		return (char *)"";
	return arena_strdup(a, s);
}

/*
 * Escape table: for each byte, the replacement in text (t) and in a
 * single- or double-quoted attribute value (a). NULL = copy as is; "" =
 * drop (C0 controls, which XML 1.0 cannot carry at all). Attribute values
 * escape TAB/LF/CR because attribute-value normalization would turn them
 * into spaces; text escapes CR because line-end normalization would turn
 * it into LF.
 */
static const char *xml_escape_rep(unsigned char c, bool attr)
{
	switch (c) {
	case '&': return "&amp;";
	case '<': return "&lt;";
	case '>': return "&gt;";
	case '"': return "&quot;";
	case '\'': return "&apos;";
	case '\r': return "&#13;";
	case '\n': return attr ? "&#10;" : NULL;
	case '\t': return attr ? "&#9;" : NULL;
	default: return c < 0x20 ? "" : NULL;
	}
}

static void xml_escape(struct strbuf *b, const char *s, size_t len, bool attr)
{
	size_t start = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		const char *rep;

		/* Fast path: most bytes are plain. */
		if (c > '>' || (c >= '(' && c <= ';') || c == ' ' || c == '!' ||
		    c == '=' || (c >= '#' && c <= '%'))
			continue;
		rep = xml_escape_rep(c, attr);
		if (!rep)
			continue;
		strbuf_append(b, s + start, i - start);
		strbuf_puts(b, rep);
		start = i + 1;
	}
	strbuf_append(b, s + start, len - start);
}

/* ---------------------------------------------------------------- */
/* Tree building and queries                                        */
/* ---------------------------------------------------------------- */

/*
 * Invariants kept by every function below: children form a singly linked
 * list in document order with last_child pointing at its end; an
 * element's ns is never NULL ("" when none); an attribute's ns is NULL
 * when unqualified, never "". Nothing is freed: removed nodes simply stay
 * in their arena until it is reset.
 */

static struct xml_node *xml_node_alloc(struct arena *a)
{
	struct xml_node *n = arena_alloc(a, sizeof(*n));

	if (n)
		memset(n, 0, sizeof(*n));
	return n;
}

struct xml_node *xml_node_new(struct arena *a, const char *ns, const char *name)
{
	struct xml_node *n;

	if (!name) {
		errno = EINVAL;
		return NULL;
	}
	n = xml_node_alloc(a);
	if (!n)
		return NULL;
	n->ns = ns ? xml_ns_intern(a, ns, strlen(ns), NULL) : "";
	n->name = arena_strdup(a, name);
	if (!n->ns || !n->name) {
		errno = ENOMEM;
		return NULL;
	}
	return n;
}

void xml_node_append(struct xml_node *parent, struct xml_node *child)
{
	child->parent = parent;
	child->next = NULL;
	if (parent->last_child)
		parent->last_child->next = child;
	else
		parent->children = child;
	parent->last_child = child;
}

struct xml_node *xml_node_add_child(struct arena *a, struct xml_node *parent,
				    const char *ns, const char *name)
{
	struct xml_node *n;

	if (!name) {
		errno = EINVAL;
		return NULL;
	}
	n = xml_node_alloc(a);
	if (!n)
		return NULL;
	if (!ns)
		n->ns = parent->ns ? parent->ns : "";
	else
		n->ns = xml_ns_intern(a, ns, strlen(ns), parent->ns);
	n->name = arena_strdup(a, name);
	if (!n->ns || !n->name) {
		errno = ENOMEM;
		return NULL;
	}
	xml_node_append(parent, n);
	return n;
}

int xml_node_add_text(struct arena *a, struct xml_node *parent, const char *text, size_t len)
{
	struct xml_node *last = parent->last_child;
	struct xml_node *t;
	char *buf;

	if (len == 0)
		return 0;
	if (last && !last->name) {
		/*
		 * Merge so that mixed content keeps one text node per run.
		 * Each merge copies the run (arena memory cannot grow in
		 * place); the parser avoids this by collecting character
		 * data first, so only hand-built trees pay for it.
		 */
		if (last->text_len + len < len)
			return -ENOMEM;
		buf = arena_alloc(a, last->text_len + len + 1);
		if (!buf)
			return -ENOMEM;
		memcpy(buf, last->text, last->text_len);
		memcpy(buf + last->text_len, text, len);
		buf[last->text_len + len] = '\0';
		last->text = buf;
		last->text_len += len;
		return 0;
	}
	t = xml_node_alloc(a);
	buf = t ? arena_strndup(a, text, len) : NULL;
	if (!buf)
		return -ENOMEM;
	t->ns = "";
	t->text = buf;
	t->text_len = len;
	xml_node_append(parent, t);
	return 0;
}

/* O(siblings): the list is singly linked to keep nodes small. */
void xml_node_remove(struct xml_node *child)
{
	struct xml_node *parent = child->parent, *prev = NULL, *c;

	if (!parent)
		return;
	for (c = parent->children; c && c != child; c = c->next)
		prev = c;
	if (!c)
		return;
	if (prev)
		prev->next = child->next;
	else
		parent->children = child->next;
	if (parent->last_child == child)
		parent->last_child = prev;
	child->parent = NULL;
	child->next = NULL;
}

/* Namespace equality where NULL and "" both mean "no namespace". */
static bool xml_ns_eq(const char *a, const char *b)
{
	if (!a || !*a)
		return !b || !*b;
	return b && (a == b || strcmp(a, b) == 0);
}

/*
 * Sets, replaces (in place, keeping the attribute order) or, with value
 * NULL, removes the attribute (ns, name). The value is copied before the
 * list is touched so that a failed copy leaves the node unchanged.
 */
static int xml_attr_put(struct arena *a, struct xml_node *n, const char *ns,
			const char *name, const char *value)
{
	struct xml_attr **pp = &n->attrs, *at;
	char *v = NULL;

	if (!name)
		return -EINVAL;
	if (ns && !*ns)
		ns = NULL;
	if (value) {
		v = xml_strdup0(a, value);
		if (!v)
			return -ENOMEM;
	}
	for (; *pp; pp = &(*pp)->next) {
		at = *pp;
		if (strcmp(at->name, name) != 0 || !xml_ns_eq(at->ns, ns))
			continue;
		if (v)
			at->value = v;
		else
			*pp = at->next;
		return 0;
	}
	if (!v)
		return 0;
	at = arena_alloc(a, sizeof(*at));
	if (!at)
		return -ENOMEM;
	at->next = NULL;
	at->ns = ns ? xml_ns_intern(a, ns, strlen(ns), NULL) : NULL;
	at->name = arena_strdup(a, name);
	at->value = v;
	if ((ns && !at->ns) || !at->name)
		return -ENOMEM;
	*pp = at;
	return 0;
}

int xml_attr_set(struct arena *a, struct xml_node *n, const char *name, const char *value)
{
	return xml_attr_put(a, n, NULL, name, value);
}

int xml_attr_set_ns(struct arena *a, struct xml_node *n, const char *ns,
		    const char *name, const char *value)
{
	return xml_attr_put(a, n, ns, name, value);
}

const char *xml_attr_get_ns(const struct xml_node *n, const char *ns, const char *name)
{
	for (const struct xml_attr *at = n->attrs; at; at = at->next) {
		if (strcmp(at->name, name) == 0 && xml_ns_eq(at->ns, ns))
			return at->value;
	}
	return NULL;
}

const char *xml_attr_get(const struct xml_node *n, const char *name)
{
	return xml_attr_get_ns(n, NULL, name);
}

struct xml_node *xml_first_element(const struct xml_node *n)
{
	struct xml_node *c;

	for (c = n->children; c && !c->name; c = c->next)
		;
	return c;
}

struct xml_node *xml_next_element(const struct xml_node *n)
{
	struct xml_node *c;

	for (c = n->next; c && !c->name; c = c->next)
		;
	return c;
}

struct xml_node *xml_child(const struct xml_node *n, const char *ns, const char *name)
{
	for (struct xml_node *c = xml_first_element(n); c; c = xml_next_element(c)) {
		if (name && strcmp(c->name, name) != 0)
			continue;
		if (ns && !xml_ns_eq(c->ns, ns))
			continue;
		return c;
	}
	return NULL;
}

size_t xml_element_count(const struct xml_node *n)
{
	size_t count = 0;

	for (struct xml_node *c = xml_first_element(n); c; c = xml_next_element(c))
		count++;
	return count;
}

const char *xml_text(struct arena *a, const struct xml_node *n)
{
	const struct xml_node *c, *only = NULL;
	size_t len = 0, runs = 0;
	char *buf, *p;

	for (c = n->children; c; c = c->next) {
		if (c->name)
			continue;
		only = c;
		len += c->text_len;
		runs++;
	}
	if (runs == 0)
		return "";
	/* The common case (one run) needs no copy. */
	if (runs == 1)
		return only->text;
	buf = arena_alloc(a, len + 1);
	if (!buf)
		return NULL;
	p = buf;
	for (c = n->children; c; c = c->next) {
		if (c->name)
			continue;
		memcpy(p, c->text, c->text_len);
		p += c->text_len;
	}
	*p = '\0';
	return buf;
}

/* Copies a namespace, sharing the parent's copy or a known constant. */
static const char *xml_clone_ns(struct arena *a, const char *ns, const char *parent_ns)
{
	if (!ns || !*ns)
		return "";
	if (parent_ns && strcmp(ns, parent_ns) == 0)
		return parent_ns;
	if (xml_ns_is_known(ns))
		return ns;
	return xml_ns_intern(a, ns, strlen(ns), NULL);
}

/*
 * Recursion depth is the tree depth: bounded by max_depth for parsed
 * trees, and hand-built trees are shallow.
 */
static struct xml_node *xml_clone_rec(struct arena *a, const struct xml_node *n,
				      const char *parent_ns)
{
	struct xml_node *c = xml_node_alloc(a);
	struct xml_attr **tail;

	if (!c)
		return NULL;
	if (!n->name) {
		c->ns = "";
		c->text = arena_strndup(a, n->text ? n->text : "", n->text_len);
		c->text_len = n->text_len;
		return c->text ? c : NULL;
	}
	c->ns = xml_clone_ns(a, n->ns, parent_ns);
	c->name = arena_strdup(a, n->name);
	if (!c->ns || !c->name)
		return NULL;
	tail = &c->attrs;
	for (const struct xml_attr *at = n->attrs; at; at = at->next) {
		struct xml_attr *na = arena_alloc(a, sizeof(*na));

		if (!na)
			return NULL;
		na->next = NULL;
		na->ns = at->ns ? xml_clone_ns(a, at->ns, NULL) : NULL;
		na->name = arena_strdup(a, at->name);
		na->value = xml_strdup0(a, at->value);
		if ((at->ns && !na->ns) || !na->name || !na->value)
			return NULL;
		*tail = na;
		tail = &na->next;
	}
	for (const struct xml_node *k = n->children; k; k = k->next) {
		struct xml_node *nk = xml_clone_rec(a, k, c->ns);

		if (!nk)
			return NULL;
		xml_node_append(c, nk);
	}
	return c;
}

struct xml_node *xml_node_clone(struct arena *a, const struct xml_node *n)
{
	struct xml_node *c = xml_clone_rec(a, n, NULL);

	if (!c)
		errno = ENOMEM;
	return c;
}

/* ---------------------------------------------------------------- */
/* Serializer                                                       */
/* ---------------------------------------------------------------- */

/* Attributes never written: namespace declarations are ours to make. */
static bool xml_attr_skipped(const struct xml_attr *at)
{
	if (at->ns && *at->ns)
		return strcmp(at->ns, "http://www.w3.org/2000/xmlns/") == 0;
	return strcmp(at->name, "xmlns") == 0;
}

/* A namespaced attribute other than xml:*, which needs a declared prefix. */
static bool xml_attr_needs_prefix(const struct xml_attr *at)
{
	return at->ns && *at->ns && strcmp(at->ns, XML_NS_XML) != 0 &&
	       !xml_attr_skipped(at);
}

/*
 * The generated prefix number of `target`'s namespace on this element:
 * namespaces are numbered 1, 2, ... in order of first use. Returns 0 and
 * sets *first when target is the first attribute using its namespace.
 */
static unsigned xml_attr_prefix_index(const struct xml_attr *attrs,
				      const struct xml_attr *target, bool *first)
{
	unsigned idx = 0;

	for (const struct xml_attr *at = attrs; at; at = at->next) {
		bool seen = false;

		if (!xml_attr_needs_prefix(at))
			continue;
		for (const struct xml_attr *b = attrs; b != at; b = b->next) {
			if (xml_attr_needs_prefix(b) && strcmp(b->ns, at->ns) == 0) {
				seen = true;
				break;
			}
		}
		if (seen)
			continue;
		idx++;
		if (strcmp(at->ns, target->ns) == 0) {
			*first = (at == target);
			return idx;
		}
	}
	*first = false;
	return idx;
}

/*
 * Writes the attributes of n, preceded by declarations of the prefixes
 * they need. Prefixes are local to the element (declared on it, used
 * only by its own attributes), so they can never clash with a prefix of
 * an ancestor or with the elements, which always use default namespaces.
 */
static void xml_serialize_attrs(struct strbuf *out, const struct xml_node *n)
{
	const struct xml_attr *at;
	bool first;
	unsigned idx;

	/* Declarations for generated prefixes come first. */
	for (at = n->attrs; at; at = at->next) {
		if (!xml_attr_needs_prefix(at))
			continue;
		idx = xml_attr_prefix_index(n->attrs, at, &first);
		if (!first)
			continue;
		strbuf_printf(out, " xmlns:ns%u='", idx);
		xml_escape(out, at->ns, strlen(at->ns), true);
		strbuf_append(out, "'", 1);
	}
	for (at = n->attrs; at; at = at->next) {
		if (xml_attr_skipped(at))
			continue;
		strbuf_append(out, " ", 1);
		if (xml_attr_needs_prefix(at)) {
			idx = xml_attr_prefix_index(n->attrs, at, &first);
			strbuf_printf(out, "ns%u:", idx);
		} else if (at->ns && *at->ns) {
			strbuf_append(out, "xml:", 4);
		}
		strbuf_puts(out, at->name);
		strbuf_append(out, "='", 2);
		xml_escape(out, at->value, strlen(at->value), true);
		strbuf_append(out, "'", 1);
	}
}

/*
 * dflt is the default namespace in scope; stream_bound says whether this
 * serialization already declared the "stream" prefix on an ancestor.
 */
static void xml_serialize_rec(struct strbuf *out, const struct xml_node *n,
			      const char *dflt, bool stream_bound)
{
	const char *ns = n->ns ? n->ns : "";
	bool prefixed = false;

	if (!n->name) {
		xml_escape(out, n->text ? n->text : "", n->text_len, false);
		return;
	}
	strbuf_append(out, "<", 1);
	if (strcmp(ns, dflt) == 0) {
		strbuf_puts(out, n->name);
	} else if (strcmp(ns, XML_NS_STREAM) == 0) {
		/*
		 * Stream-level elements keep the conventional "stream:"
		 * prefix (RFC 6120 4.8.5; some clients match on it). The
		 * declaration is repeated so the output stands alone, e.g.
		 * in a WebSocket frame (RFC 7395).
		 */
		prefixed = true;
		strbuf_append(out, "stream:", 7);
		strbuf_puts(out, n->name);
		if (!stream_bound)
			strbuf_puts(out, " xmlns:stream='" XML_NS_STREAM "'");
		stream_bound = true;
	} else {
		strbuf_puts(out, n->name);
		strbuf_append(out, " xmlns='", 8);
		xml_escape(out, ns, strlen(ns), true);
		strbuf_append(out, "'", 1);
		dflt = ns;
	}
	xml_serialize_attrs(out, n);
	if (!n->children) {
		strbuf_append(out, "/>", 2);
		return;
	}
	strbuf_append(out, ">", 1);
	for (const struct xml_node *c = n->children; c; c = c->next)
		xml_serialize_rec(out, c, dflt, stream_bound);
	strbuf_append(out, prefixed ? "</stream:" : "</", prefixed ? 9 : 2);
	strbuf_puts(out, n->name);
	strbuf_append(out, ">", 1);
}

void xml_serialize(struct strbuf *out, const struct xml_node *n, const char *parent_ns)
{
	xml_serialize_rec(out, n, parent_ns ? parent_ns : "", false);
}

/* ---------------------------------------------------------------- */
/* Parser: Expat handlers                                           */
/* ---------------------------------------------------------------- */

static size_t xml_stanza_limit(const struct xml_parser *p)
{
	const struct xml_stream *s = p->s;

	return s->limit_override ? s->limit_override : p->pool->limits.max_stanza_bytes;
}

/* The budget that fed - mark must stay within. */
static size_t xml_pending_limit(const struct xml_parser *p)
{
	if (p->s->state == XML_ST_HEADER)
		return p->pool->limits.max_header_bytes;
	return xml_stanza_limit(p);
}

/* Offset just past the current Expat event. */
static uint64_t xml_event_end(const struct xml_parser *p)
{
	return (uint64_t)XML_GetCurrentByteIndex(p->xp) +
	       (uint64_t)XML_GetCurrentByteCount(p->xp);
}

static void xml_halt(struct xml_parser *p, uint8_t why, uint64_t off, enum xml_status err)
{
	if (p->halt)
		return;
	p->halt = why;
	p->halt_off = off;
	p->err = err;
	XML_StopParser(p->xp, XML_FALSE);
}

static void xml_fail(struct xml_parser *p, enum xml_status err)
{
	xml_halt(p, XML_HALT_ERROR, 0, err);
}

/*
 * Splits an Expat name "uri SEP local [SEP prefix]" (or a bare "local").
 * Returns the local name and sets *local_len; ns and ns_len get the URI
 * (length 0 when none), prefix and prefix_len the prefix when present.
 */
static const char *xml_split_name(const char *name, const char **ns, size_t *ns_len,
				  size_t *local_len, const char **prefix, size_t *prefix_len)
{
	const char *sep = strchr(name, XML_NS_SEP), *local, *sep2;

	*prefix = NULL;
	*prefix_len = 0;
	if (!sep) {
		*ns = "";
		*ns_len = 0;
		*local_len = strlen(name);
		return name;
	}
	*ns = name;
	*ns_len = (size_t)(sep - name);
	local = sep + 1;
	sep2 = strchr(local, XML_NS_SEP);
	if (sep2) {
		*local_len = (size_t)(sep2 - local);
		*prefix = sep2 + 1;
		*prefix_len = strlen(sep2 + 1);
	} else {
		*local_len = strlen(local);
	}
	return local;
}

/* Tree memory must stay a small multiple of the stanza limit. */
static bool xml_tree_over_budget(struct xml_parser *p)
{
	size_t limit = xml_stanza_limit(p);
	size_t budget = XML_TREE_MEM_FACTOR * limit + XML_ARENA_CHUNK;

	if (budget / XML_TREE_MEM_FACTOR < limit)
		budget = SIZE_MAX;
	if (p->arena.total <= budget)
		return false;
	xml_fail(p, XML_ERR_POLICY);
	return true;
}

/* Turns collected character data into a text node of the open element. */
static int xml_flush_text(struct xml_parser *p)
{
	struct xml_node *t;
	char *buf;

	if (p->text.len == 0)
		return 0;
	t = xml_node_alloc(&p->arena);
	buf = t ? arena_strndup(&p->arena, p->text.data, p->text.len) : NULL;
	if (!buf) {
		xml_fail(p, XML_ERR_NOMEM);
		return -1;
	}
	t->ns = "";
	t->text = buf;
	t->text_len = p->text.len;
	xml_node_append(p->cur, t);
	strbuf_clear(&p->text);
	return xml_tree_over_budget(p) ? -1 : 0;
}

/* Builds an element with its attributes (not linked to a parent). */
static struct xml_node *xml_build_element(struct xml_parser *p, const char *name,
					  const char **atts, const char *parent_ns,
					  const char **prefix, size_t *prefix_len)
{
	struct arena *a = &p->arena;
	struct xml_node *n = xml_node_alloc(a);
	struct xml_attr **tail;
	const char *ns, *local, *apfx;
	size_t ns_len, local_len, apfx_len;

	if (!n)
		return NULL;
	local = xml_split_name(name, &ns, &ns_len, &local_len, prefix, prefix_len);
	n->ns = xml_ns_intern(a, ns, ns_len, parent_ns);
	n->name = arena_strndup(a, local, local_len);
	if (!n->ns || !n->name)
		return NULL;
	tail = &n->attrs;
	for (; atts[0]; atts += 2) {
		struct xml_attr *at = arena_alloc(a, sizeof(*at));

		if (!at)
			return NULL;
		local = xml_split_name(atts[0], &ns, &ns_len, &local_len, &apfx, &apfx_len);
		at->next = NULL;
		at->ns = ns_len ? xml_ns_intern(a, ns, ns_len, NULL) : NULL;
		at->name = arena_strndup(a, local, local_len);
		at->value = xml_strdup0(a, atts[1]);
		if ((ns_len && !at->ns) || !at->name || !at->value)
			return NULL;
		*tail = at;
		tail = &at->next;
	}
	return n;
}

/*
 * Writes the synthetic header that re-creates the stream's namespace
 * context in a fresh parser: same QName, same declarations (the default
 * one first). Stores NULL in *out for the standard c2s header.
 */
static int xml_context_build(struct xml_parser *p, const char *prefix, size_t prefix_len,
			     const char *local, char **out)
{
	struct strbuf b = STRBUF_INIT;
	int pass;

	strbuf_append(&b, "<", 1);
	if (prefix) {
		strbuf_append(&b, prefix, prefix_len);
		strbuf_append(&b, ":", 1);
	}
	strbuf_puts(&b, local);
	for (pass = 0; pass < 2; pass++) {
		for (struct xml_decl *d = p->decls; d; d = d->next) {
			if ((pass == 0) != (d->prefix == NULL))
				continue;
			strbuf_puts(&b, " xmlns");
			if (d->prefix) {
				strbuf_append(&b, ":", 1);
				strbuf_puts(&b, d->prefix);
			}
			strbuf_append(&b, "='", 2);
			xml_escape(&b, d->uri, strlen(d->uri), true);
			strbuf_append(&b, "'", 1);
		}
	}
	strbuf_append(&b, ">", 1);
	if (b.oom) {
		strbuf_free(&b);
		return -ENOMEM;
	}
	if (strcmp(b.data, xml_std_context) == 0) {
		*out = NULL;
		strbuf_free(&b);
		return 0;
	}
	/* Exact-size copy: it lives as long as the connection. */
	*out = strdup(b.data);
	strbuf_free(&b);
	return *out ? 0 : -ENOMEM;
}

static void xml_header_start(struct xml_parser *p, const char *name, const char **atts,
			     uint64_t end)
{
	struct xml_stream *s = p->s;
	const struct xml_stream_handlers *h = s->handlers;
	const char *prefix, *default_ns = "";
	size_t prefix_len;
	struct xml_node *hdr;
	char *context;
	bool ok = true;

	p->depth = 1;
	p->mark = end;
	if (p->priming) {
		arena_reset(&p->arena);
		p->decls = NULL;
		p->decls_tail = &p->decls;
		return;
	}
	if (end > p->pool->limits.max_header_bytes) {
		xml_fail(p, XML_ERR_POLICY);
		return;
	}
	hdr = xml_build_element(p, name, atts, NULL, &prefix, &prefix_len);
	if (!hdr || xml_context_build(p, prefix, prefix_len, hdr->name, &context)) {
		xml_fail(p, XML_ERR_NOMEM);
		return;
	}
	for (struct xml_decl *d = p->decls; d; d = d->next) {
		if (!d->prefix)
			default_ns = d->uri;
	}
	free(s->ns_context);
	s->ns_context = context;
	s->state = XML_ST_OPEN;
	if (h && h->stream_open)
		ok = h->stream_open(s->ctx, hdr, default_ns);
	arena_reset(&p->arena);
	p->decls = NULL;
	p->decls_tail = &p->decls;
	if (!ok)
		xml_halt(p, XML_HALT_STOP, end, XML_OK);
	else if (p->restart_req)
		xml_halt(p, XML_HALT_RESTART, end, XML_OK);
}

/*
 * Start tag. Depth 0: the stream header. Depth 1: a new stanza, whose
 * start offset becomes the mark so the stanza limit covers all of it.
 * Deeper: a child of the open element. Checks come before any
 * allocation so that a refused tag costs nothing.
 */
static void XMLCALL xml_on_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
	struct xml_parser *p = ud;
	const struct xml_limits *lim = &p->pool->limits;
	struct xml_node *n;
	const char *prefix;
	size_t prefix_len;
	unsigned nattrs = p->pending_decls;
	uint64_t start;

	if (p->halt)
		return;
	p->pending_decls = 0;
	for (const XML_Char **a = atts; *a; a += 2)
		nattrs++;
	if (nattrs > lim->max_attrs) {
		xml_fail(p, XML_ERR_POLICY);
		return;
	}
	p->last_ev = xml_event_end(p);
	if (p->depth == 0) {
		xml_header_start(p, name, atts, p->last_ev);
		return;
	}
	start = (uint64_t)XML_GetCurrentByteIndex(p->xp);
	if (p->depth == 1) {
		p->stanza_start = start;
		p->mark = start;
	} else if (p->depth > lim->max_depth) {
		/* depth counts the header, so the stanza is at level depth. */
		xml_fail(p, XML_ERR_POLICY);
		return;
	}
	if (xml_flush_text(p))
		return;
	n = xml_build_element(p, name, atts, p->cur ? p->cur->ns : NULL,
			      &prefix, &prefix_len);
	if (!n) {
		xml_fail(p, XML_ERR_NOMEM);
		return;
	}
	if (p->cur)
		xml_node_append(p->cur, n);
	p->cur = n;
	p->depth++;
	xml_tree_over_budget(p);
}

/*
 * A stanza is complete: hand it to the callback, then free its tree.
 * Whatever the callback asked for (stop, restart) is honoured exactly at
 * `end`, so the caller's byte count matches the element boundary.
 */
static void xml_stanza_end(struct xml_parser *p, uint64_t end)
{
	struct xml_stream *s = p->s;
	const struct xml_stream_handlers *h = s->handlers;
	struct xml_node *n = p->cur;
	bool ok = true;

	p->cur = NULL;
	p->mark = end;
	/* Exact check; the slicing in xml_stream_feed allows one byte over. */
	if (end - p->stanza_start > xml_stanza_limit(p)) {
		xml_fail(p, XML_ERR_POLICY);
		return;
	}
	if (!p->priming && h && h->stanza)
		ok = h->stanza(s->ctx, n);
	arena_reset(&p->arena);
	if (!ok)
		xml_halt(p, XML_HALT_STOP, end, XML_OK);
	else if (p->restart_req)
		xml_halt(p, XML_HALT_RESTART, end, XML_OK);
	else if (end > XML_RECYCLE_BYTES)
		xml_halt(p, XML_HALT_RECYCLE, end, XML_OK);
}

/*
 * End tag. Expat has already checked that it matches its start tag, so
 * only the depth matters: 1 closes the stream, 2 completes a stanza.
 */
static void XMLCALL xml_on_end(void *ud, const XML_Char *name)
{
	struct xml_parser *p = ud;
	uint64_t end;

	(void)name;
	if (p->halt)
		return;
	end = xml_event_end(p);
	p->last_ev = end;
	if (p->depth == 1) {
		p->depth = 0;
		p->mark = end;
		xml_halt(p, XML_HALT_CLOSE, end, XML_OK);
		return;
	}
	if (xml_flush_text(p))
		return;
	p->depth--;
	if (p->depth == 1)
		xml_stanza_end(p, end);
	else
		p->cur = p->cur->parent;
}

static bool xml_is_space(const char *s, int len)
{
	for (int i = 0; i < len; i++) {
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
			return false;
	}
	return true;
}

/*
 * Character data, possibly in several pieces per run (Expat splits at
 * buffer ends, newlines and references). Inside a stanza the pieces are
 * collected and become one text node at the next tag.
 */
static void XMLCALL xml_on_text(void *ud, const XML_Char *s, int len)
{
	struct xml_parser *p = ud;

	if (p->halt)
		return;
	p->last_ev = xml_event_end(p);
	if (p->depth >= 2) {
		strbuf_append(&p->text, s, (size_t)len);
		if (p->text.oom)
			xml_fail(p, XML_ERR_NOMEM);
		return;
	}
	/* Stream level: whitespace is a keepalive, anything else is wrong. */
	if (!xml_is_space(s, len)) {
		xml_fail(p, XML_ERR_BAD_FORMAT);
		return;
	}
	if (p->depth == 1 && !p->in_cdata)
		p->mark = p->last_ev;
}

/*
 * A CDATA section at stream level (whitespace only, or it is refused)
 * ends at "]]>", not at its last character: the mark moves only then, so
 * a parser is never pooled in the middle of a section.
 */
static void XMLCALL xml_on_cdata_start(void *ud)
{
	struct xml_parser *p = ud;

	if (p->halt)
		return;
	p->in_cdata = true;
	p->last_ev = xml_event_end(p);
}

static void XMLCALL xml_on_cdata_end(void *ud)
{
	struct xml_parser *p = ud;

	if (p->halt)
		return;
	p->in_cdata = false;
	p->last_ev = xml_event_end(p);
	if (p->depth == 1)
		p->mark = p->last_ev;
}

/*
 * Called before the start handler of the tag that declares the prefix.
 * Declarations on the header are recorded: they are what a fresh parser
 * must be primed with to continue the stream.
 */
static void XMLCALL xml_on_ns_decl(void *ud, const XML_Char *prefix, const XML_Char *uri)
{
	struct xml_parser *p = ud;
	struct xml_decl *d;

	if (p->halt)
		return;
	/* Declarations count as attributes of the tag that carries them. */
	if (++p->pending_decls > p->pool->limits.max_attrs) {
		xml_fail(p, XML_ERR_POLICY);
		return;
	}
	if (p->depth != 0 || p->priming)
		return;
	d = arena_alloc(&p->arena, sizeof(*d));
	if (!d) {
		xml_fail(p, XML_ERR_NOMEM);
		return;
	}
	d->next = NULL;
	d->prefix = prefix ? arena_strdup(&p->arena, prefix) : NULL;
	d->uri = uri ? arena_strdup(&p->arena, uri) : "";
	if ((prefix && !d->prefix) || !d->uri) {
		xml_fail(p, XML_ERR_NOMEM);
		return;
	}
	*p->decls_tail = d;
	p->decls_tail = &d->next;
}

/* RFC 6120 section 11.1: none of these may appear in an XMPP stream. */
static void xml_restricted(struct xml_parser *p)
{
	if (!p->halt)
		xml_fail(p, XML_ERR_RESTRICTED);
}

static void XMLCALL xml_on_comment(void *ud, const XML_Char *data)
{
	(void)data;
	xml_restricted(ud);
}

static void XMLCALL xml_on_pi(void *ud, const XML_Char *target, const XML_Char *data)
{
	(void)target;
	(void)data;
	xml_restricted(ud);
}

static void XMLCALL xml_on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
				   const XML_Char *pubid, int has_internal_subset)
{
	(void)name;
	(void)sysid;
	(void)pubid;
	(void)has_internal_subset;
	xml_restricted(ud);
}

static void XMLCALL xml_on_entity_decl(void *ud, const XML_Char *name, int is_pe,
				       const XML_Char *value, int value_len,
				       const XML_Char *base, const XML_Char *sysid,
				       const XML_Char *pubid, const XML_Char *notation)
{
	(void)name; (void)is_pe; (void)value; (void)value_len;
	(void)base; (void)sysid; (void)pubid; (void)notation;
	xml_restricted(ud);
}

static void XMLCALL xml_on_skipped_entity(void *ud, const XML_Char *name, int is_pe)
{
	(void)name;
	(void)is_pe;
	xml_restricted(ud);
}

static void XMLCALL xml_on_notation(void *ud, const XML_Char *name, const XML_Char *base,
				    const XML_Char *sysid, const XML_Char *pubid)
{
	(void)name; (void)base; (void)sysid; (void)pubid;
	xml_restricted(ud);
}

/* Maps an Expat error that no handler flagged to a stream status. */
static enum xml_status xml_map_expat_error(struct xml_parser *p)
{
	switch (XML_GetErrorCode(p->xp)) {
	case XML_ERROR_NO_MEMORY:
		return p->mm_refused ? XML_ERR_POLICY : XML_ERR_NOMEM;
	case XML_ERROR_RECURSIVE_ENTITY_REF:
	case XML_ERROR_PARAM_ENTITY_REF:
	case XML_ERROR_BINARY_ENTITY_REF:
	case XML_ERROR_ATTRIBUTE_EXTERNAL_ENTITY_REF:
	case XML_ERROR_EXTERNAL_ENTITY_HANDLING:
	case XML_ERROR_NOT_STANDALONE:
	case XML_ERROR_ENTITY_DECLARED_IN_PE:
	case XML_ERROR_FEATURE_REQUIRES_XML_DTD:
	case XML_ERROR_CANT_CHANGE_FEATURE_ONCE_PARSING:
	case XML_ERROR_AMPLIFICATION_LIMIT_BREACH:
		return XML_ERR_RESTRICTED;
	default:
		return XML_ERR_NOT_WELL_FORMED;
	}
}

/* ---------------------------------------------------------------- */
/* Parser lifecycle and pool                                        */
/* ---------------------------------------------------------------- */

/* Installs handlers and options; Expat clears them on reset. */
static void xml_parser_setup(struct xml_parser *p)
{
	XML_Parser xp = p->xp;

	XML_SetUserData(xp, p);
	XML_SetHashSalt(xp, p->salt);
	XML_SetParamEntityParsing(xp, XML_PARAM_ENTITY_PARSING_NEVER);
	XML_SetReturnNSTriplet(xp, XML_TRUE);
#if XML_MAJOR_VERSION > 2 || (XML_MAJOR_VERSION == 2 && XML_MINOR_VERSION >= 6)
	/*
	 * Reparse deferral (Expat 2.6) can hold back a complete stanza until
	 * more bytes arrive, which stalls an interactive stream. Slices are
	 * bounded by the stanza limit instead.
	 */
	XML_SetReparseDeferralEnabled(xp, XML_FALSE);
#endif
	XML_SetElementHandler(xp, xml_on_start, xml_on_end);
	XML_SetCharacterDataHandler(xp, xml_on_text);
	XML_SetCdataSectionHandler(xp, xml_on_cdata_start, xml_on_cdata_end);
	XML_SetStartNamespaceDeclHandler(xp, xml_on_ns_decl);
	XML_SetCommentHandler(xp, xml_on_comment);
	XML_SetProcessingInstructionHandler(xp, xml_on_pi);
	XML_SetStartDoctypeDeclHandler(xp, xml_on_doctype);
	XML_SetEntityDeclHandler(xp, xml_on_entity_decl);
	XML_SetSkippedEntityHandler(xp, xml_on_skipped_entity);
	XML_SetNotationDeclHandler(xp, xml_on_notation);

	p->fed = 0;
	p->expat_fed = 0;
	p->last_ev = 0;
	p->mark = 0;
	p->deferring = false;
	strbuf_clear(&p->tail);
	p->stanza_start = 0;
	p->depth = 0;
	p->pending_decls = 0;
	p->cur = NULL;
	p->decls = NULL;
	p->decls_tail = &p->decls;
	p->priming = false;
	p->in_cdata = false;
	p->restart_req = false;
	p->halt = XML_HALT_NONE;
	p->err = XML_OK;
	p->halt_off = 0;
	p->mm_refused = false;
	arena_reset(&p->arena);
	strbuf_clear(&p->text);
}

/* Readies a parser for a new document. 0 or -ENOMEM. */
static int xml_parser_reset(struct xml_parser *p)
{
	struct xml_parser *prev = xml_mm_owner;
	XML_Bool ok;

	xml_mm_owner = p;
	/* Forcing UTF-8 (RFC 6120 11.6) overrides any encoding declaration. */
	ok = XML_ParserReset(p->xp, "UTF-8");
	xml_mm_owner = prev;
	if (!ok)
		return -ENOMEM;
	xml_parser_setup(p);
	return 0;
}

static void xml_parser_free(struct xml_parser *p)
{
	struct xml_pool *pool = p->pool;
	struct xml_parser *prev = xml_mm_owner;

	xml_mm_owner = p;
	XML_ParserFree(p->xp);
	xml_mm_owner = prev;
	if (p->all_prev)
		p->all_prev->all_next = p->all_next;
	else
		pool->all = p->all_next;
	if (p->all_next)
		p->all_next->all_prev = p->all_prev;
	arena_release(&p->arena);
	strbuf_free(&p->text);
	strbuf_free(&p->tail);
	free(p);
}

/*
 * A new parser with its own random hash salt (Expat's hash tables are
 * keyed by it, so peers cannot aim collisions at them). The salt is
 * drawn once and re-applied on every reset: a getrandom() call per
 * reset would be a syscall per pool round trip.
 */
static struct xml_parser *xml_parser_new(struct xml_pool *pool)
{
	const struct xml_limits *lim = &pool->limits;
	struct xml_parser *p, *prev = xml_mm_owner;
	size_t base;

	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->pool = pool;
	arena_init(&p->arena, XML_ARENA_CHUNK);
	p->text = (struct strbuf)STRBUF_INIT;
	p->tail = (struct strbuf)STRBUF_INIT;
	if (getrandom(&p->salt, sizeof(p->salt), 0) != (ssize_t)sizeof(p->salt))
		goto err_free;
	base = lim->max_stanza_bytes > lim->max_header_bytes ?
	       lim->max_stanza_bytes : lim->max_header_bytes;
	if (base > (SIZE_MAX - XML_EXPAT_MEM_BASE) / XML_EXPAT_MEM_FACTOR)
		p->expat_cap = SIZE_MAX;
	else
		p->expat_cap = XML_EXPAT_MEM_FACTOR * base + XML_EXPAT_MEM_BASE;

	xml_mm_owner = p;
	p->xp = XML_ParserCreate_MM("UTF-8", &xml_mm_suite, XML_NS_SEP_STR);
	xml_mm_owner = prev;
	if (!p->xp)
		goto err_free;
	p->all_next = pool->all;
	if (pool->all)
		pool->all->all_prev = p;
	pool->all = p;
	pool->n_created++;
	xml_parser_setup(p);
	return p;

err_free:
	free(p);
	errno = ENOMEM;
	return NULL;
}

struct xml_pool *xml_pool_new(const struct xml_limits *limits)
{
	static const struct xml_limits defaults = XML_LIMITS_DEFAULT;
	struct xml_pool *pool = calloc(1, sizeof(*pool));

	if (!pool)
		return NULL;
	pool->limits = limits ? *limits : defaults;
	return pool;
}

/*
 * Frees the pool and its idle parsers. Parsers still held by streams are
 * freed too; those streams must not be used afterwards.
 */
void xml_pool_free(struct xml_pool *pool)
{
	if (!pool)
		return;
	while (pool->all)
		xml_parser_free(pool->all);
	free(pool);
}

size_t xml_pool_idle(const struct xml_pool *pool)
{
	return pool->n_idle;
}

size_t xml_pool_in_use(const struct xml_pool *pool)
{
	return pool->n_in_use;
}

void xml_pool_stats(const struct xml_pool *pool, struct xml_pool_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->idle = pool->n_idle;
	st->in_use = pool->n_in_use;
	st->created = pool->n_created;
	st->expat_bytes = pool->expat_bytes;
	st->expat_peak = pool->expat_peak;
	st->expat_allocs = pool->expat_allocs;
	for (const struct xml_parser *p = pool->all; p; p = p->all_next)
		st->tree_bytes += p->arena.total + p->text.cap + p->tail.cap;
}

static struct xml_parser *xml_pool_pop(struct xml_parser **list, size_t *n)
{
	struct xml_parser *p = *list;

	if (p) {
		*list = p->next_idle;
		p->next_idle = NULL;
		(*n)--;
	}
	return p;
}

/*
 * Takes a parser. With want_primed, one already primed with the standard
 * header is preferred and *primed says whether one was found; otherwise
 * the parser is ready for a new document.
 */
static struct xml_parser *xml_pool_get(struct xml_pool *pool, bool want_primed, bool *primed)
{
	struct xml_parser *p = NULL;

	*primed = false;
	if (want_primed) {
		p = xml_pool_pop(&pool->primed, &pool->n_idle);
		*primed = p != NULL;
	}
	if (!p)
		p = xml_pool_pop(&pool->idle, &pool->n_idle);
	if (!p) {
		p = xml_pool_pop(&pool->primed, &pool->n_idle);
		if (p && xml_parser_reset(p)) {
			xml_parser_free(p);
			p = NULL;
		}
	}
	if (!p)
		p = xml_parser_new(pool);
	if (p)
		pool->n_in_use++;
	return p;
}

/*
 * Takes a parser back. keep_primed: p is idle at depth 1 under the
 * standard header and may be handed on as is. Otherwise it is reset.
 * Parsers beyond XML_POOL_MAX_IDLE, or grown large, are freed.
 */
static void xml_pool_put(struct xml_pool *pool, struct xml_parser *p, bool keep_primed)
{
	pool->n_in_use--;
	p->s = NULL;
	if (pool->n_idle >= XML_POOL_MAX_IDLE || p->expat_bytes > XML_POOL_KEEP_EXPAT) {
		xml_parser_free(p);
		return;
	}
	if (p->text.cap > XML_POOL_KEEP_TEXT)
		strbuf_free(&p->text);
	if (p->tail.cap > XML_POOL_KEEP_TEXT)
		strbuf_free(&p->tail);
	if (keep_primed && p->fed <= XML_RECYCLE_BYTES) {
		p->restart_req = false;
		p->next_idle = pool->primed;
		pool->primed = p;
		pool->n_idle++;
		return;
	}
	if (xml_parser_reset(p) || p->expat_bytes > XML_POOL_KEEP_EXPAT) {
		xml_parser_free(p);
		return;
	}
	p->next_idle = pool->idle;
	pool->idle = p;
	pool->n_idle++;
}

/* ---------------------------------------------------------------- */
/* Streams                                                          */
/* ---------------------------------------------------------------- */

void xml_stream_init(struct xml_stream *s, struct xml_pool *pool,
		     const struct xml_stream_handlers *h, void *ctx)
{
	memset(s, 0, sizeof(*s));
	s->pool = pool;
	s->handlers = h;
	s->ctx = ctx;
	s->state = XML_ST_HEADER;
}

/* Runs Expat on bytes of the current document, with accounting on. */
static enum XML_Status xml_parse(struct xml_parser *p, const char *data, size_t len)
{
	struct xml_parser *prev = xml_mm_owner;
	enum XML_Status rc;

	xml_mm_owner = p;
	p->mm_enforce = true;
	p->in_parse = true;
	rc = XML_Parse(p->xp, data, (int)len, XML_FALSE);
	p->in_parse = false;
	p->mm_enforce = false;
	xml_mm_owner = prev;
	return rc;
}

/*
 * Parses the stream's header context into a fresh parser with callbacks
 * suppressed, leaving it at depth 1 as if the header had just been read.
 */
static int xml_prime(struct xml_stream *s, struct xml_parser *p)
{
	const char *ctx = s->ns_context ? s->ns_context : xml_std_context;
	size_t len = strlen(ctx);
	enum XML_Status rc;

	p->priming = true;
	p->fed = len;
	p->expat_fed = len;
	rc = xml_parse(p, ctx, len);
	p->priming = false;
	if (rc != XML_STATUS_OK || p->halt || p->depth != 1 || p->mark != len) {
		log_error("xml.prime_failed", "expat=\"%s\"",
			  XML_ErrorString(XML_GetErrorCode(p->xp)));
		return -EPROTO;
	}
	return 0;
}

static void xml_stream_detach(struct xml_stream *s, bool keep_primed)
{
	struct xml_parser *p = s->parser;

	if (!p)
		return;
	s->parser = NULL;
	xml_pool_put(s->pool, p, keep_primed);
}

static enum xml_status xml_stream_attach(struct xml_stream *s)
{
	bool open = s->state == XML_ST_OPEN, primed;
	struct xml_parser *p = xml_pool_get(s->pool, open && !s->ns_context, &primed);

	if (!p)
		return XML_ERR_NOMEM;
	p->s = s;
	s->parser = p;
	if (open && !primed && xml_prime(s, p)) {
		xml_stream_detach(s, false);
		return XML_ERR_NOMEM;
	}
	return XML_OK;
}

static enum xml_status xml_stream_error(struct xml_stream *s, enum xml_status st)
{
	struct xml_parser *p = s->parser;

	if (p && log_enabled(LOG_LVL_DEBUG))
		log_debug("xml.stream_error", "condition=%s expat=\"%s\" offset=%llu",
			  xml_status_condition(st),
			  XML_ErrorString(XML_GetErrorCode(p->xp)),
			  (unsigned long long)p->fed);
	s->state = (uint8_t)(XML_ST_ERROR | st);
	xml_stream_detach(s, false);
	return st;
}

/* Bytes that may be part of a name (Expat checks them properly). */
static bool xml_lex_name_byte(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-' || c == '.' || c == ':' || c >= 0x80;
}

static bool xml_lex_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* What the deferral lexer concluded (xml_lex). */
enum {
	XML_LEX_MORE = 0,	/* the token is certainly unfinished */
	XML_LEX_PARSE,		/* it may end here, or Expat should judge it */
	XML_LEX_REFUSE,		/* a comment or PI: restricted XML */
};

/*
 * Runs the deferral lexer over more bytes of the unfinished token (a
 * token that Expat has held for XML_DEFER_MIN bytes or more).
 */
static int xml_lex(struct xml_parser *p, const char *data, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)data[i];

		switch (p->lex) {
		case XML_LEX_TOKEN:
			if (c == '<')
				p->lex = XML_LEX_LT;
			else if (c == '&')
				p->lex = XML_LEX_REF;
			else
				return XML_LEX_PARSE;
			break;
		case XML_LEX_LT:
			if (c == '/')
				p->lex = XML_LEX_END_TAG;
			else if (c == '!')
				p->lex = XML_LEX_BANG;
			else if (c == '?')
				return XML_LEX_REFUSE;	/* a long PI */
			else if (xml_lex_name_byte(c))
				p->lex = XML_LEX_TAG;
			else
				return XML_LEX_PARSE;
			break;
		case XML_LEX_BANG:
			/* "<!-" starts a comment; "<![CDATA[" is short */
			return c == '-' ? XML_LEX_REFUSE : XML_LEX_PARSE;
		case XML_LEX_TAG:
			/* names, spaces, '=' and the '/' of "/>" only */
			if (c == '=')
				p->lex = XML_LEX_EQ;
			else if (!xml_lex_name_byte(c) && !xml_lex_space(c) && c != '/')
				return XML_LEX_PARSE;
			break;
		case XML_LEX_EQ:
			if (c == '\'' || c == '"') {
				p->lex = XML_LEX_QUOTE;
				p->lex_n = c;
			} else if (!xml_lex_space(c)) {
				return XML_LEX_PARSE;
			}
			break;
		case XML_LEX_QUOTE:
			if (c == '<')
				return XML_LEX_PARSE;
			if (c == p->lex_n)
				p->lex = XML_LEX_TAG;
			break;
		case XML_LEX_END_TAG:
			if (!xml_lex_name_byte(c) && !xml_lex_space(c))
				return XML_LEX_PARSE;
			break;
		default: /* XML_LEX_REF: a name, or '#' and digits */
			if (!xml_lex_name_byte(c) && c != '#')
				return XML_LEX_PARSE;
			break;
		}
	}
	return XML_LEX_MORE;
}

/*
 * Deferral mode: keeps a slice in tail. Returns XML_OK with *parse set
 * when Expat must now see the deferred bytes, XML_OK when they stay
 * deferred, or an error.
 */
static enum xml_status xml_defer(struct xml_parser *p, const char *data, size_t len,
				 bool *parse)
{
	int r;

	*parse = false;
	strbuf_append(&p->tail, data, len);
	if (p->tail.oom)
		return XML_ERR_NOMEM;
	p->fed += len;
	r = xml_lex(p, data, len);
	if (r == XML_LEX_REFUSE)
		return XML_ERR_RESTRICTED;
	if (r == XML_LEX_PARSE) {
		p->deferring = false;
		*parse = true;
	}
	return XML_OK;
}

/*
 * After XML_Parse: keeps in tail exactly the bytes Expat has not turned
 * into events, [last_ev, fed) - normally none. Before the call tail held
 * [old last_ev, base) when Expat parsed the caller's slice (data, len,
 * at document offset base), or [old last_ev, fed) when it parsed deferred
 * bytes out of tail (from_tail). Then decides whether to defer next.
 * Returns 0, -ENOMEM, or -EPROTO for a long comment or PI.
 */
static int xml_tail_update(struct xml_parser *p, const char *data, size_t len, uint64_t base,
			   bool from_tail)
{
	struct strbuf *t = &p->tail;
	size_t held = (size_t)(p->fed - p->last_ev);
	uint64_t start;

	if (held == 0) {
		strbuf_clear(t);
		return 0;
	}
	if (!from_tail && p->last_ev >= base) {
		/* Everything held came with this slice (the usual case). */
		strbuf_clear(t);
		strbuf_append(t, data + (p->last_ev - base), held);
	} else {
		if (!from_tail)
			strbuf_append(t, data, len);
		if (t->oom)
			return -ENOMEM;
		start = p->fed - t->len;
		memmove(t->data, t->data + (p->last_ev - start), held);
		t->len = held;
		t->data[held] = '\0';
	}
	if (t->oom)
		return -ENOMEM;
	if (held >= XML_DEFER_MIN && p->s->state == XML_ST_OPEN) {
		int r;

		p->lex = XML_LEX_TOKEN;
		p->lex_n = 0;
		r = xml_lex(p, t->data, t->len);
		if (r == XML_LEX_REFUSE)
			return -EPROTO;
		p->deferring = r == XML_LEX_MORE;
	}
	return 0;
}

/*
 * Acts on a handler's halt request after XML_Parse returned. Returns
 * XML_OK when parsing goes on at *pos (restart or recycle), else the
 * status to return from xml_stream_feed.
 */
static enum xml_status xml_stream_halted(struct xml_stream *s, struct xml_parser *p,
					 size_t *pos, uint64_t base)
{
	uint8_t why = p->halt;

	if (why == XML_HALT_ERROR)
		return xml_stream_error(s, p->err);
	/*
	 * The halting event ended inside the slice that started at base:
	 * deferred bytes from earlier slices never complete a token.
	 */
	if (p->halt_off < base) {
		log_error("xml.halt_offset", "halt=%llu base=%llu",
			  (unsigned long long)p->halt_off, (unsigned long long)base);
		return xml_stream_error(s, XML_ERR_NOMEM);
	}
	*pos += (size_t)(p->halt_off - base);
	switch (why) {
	case XML_HALT_STOP:
		xml_stream_detach(s, false);
		return XML_STOPPED;
	case XML_HALT_CLOSE:
		s->state = XML_ST_CLOSED;
		xml_stream_detach(s, false);
		return XML_CLOSED;
	case XML_HALT_RESTART:
		if (xml_parser_reset(p))
			return xml_stream_error(s, XML_ERR_NOMEM);
		return XML_OK;
	default: /* XML_HALT_RECYCLE */
		if (xml_parser_reset(p) || xml_prime(s, p))
			return xml_stream_error(s, XML_ERR_NOMEM);
		return XML_OK;
	}
}

/*
 * The main loop hands Expat one slice at a time (see the file comment)
 * and, after each XML_Parse, acts on what the handlers recorded: a halt
 * carries the exact document offset where the stream stopped, closed,
 * restarted or must be recycled; pos follows it so that *consumed and
 * the bytes parsed by a restarted document line up with the caller's
 * buffer.
 */
enum xml_status xml_stream_feed(struct xml_stream *s, const char *data, size_t len,
				size_t *consumed)
{
	struct xml_parser *p;
	enum xml_status st;
	size_t pos = 0;

	if (consumed)
		*consumed = 0;
	if (s->state & XML_ST_ERROR)
		return (enum xml_status)(s->state & ~XML_ST_ERROR);
	if (s->state == XML_ST_CLOSED)
		return XML_CLOSED;
	p = s->parser;
	if (p && p->in_parse) {
		/* Feeding a stream from its own callback is a caller bug. */
		log_error("xml.reentrant_feed", "stream=%p", (void *)s);
		return XML_ERR_NOMEM;
	}
	if (len == 0)
		return XML_OK;
	if (!s->parser) {
		st = xml_stream_attach(s);
		if (st != XML_OK)
			return xml_stream_error(s, st);
	}
	p = s->parser;
	while (pos < len) {
		size_t limit = xml_pending_limit(p);
		size_t pending = (size_t)(p->fed - p->mark);
		size_t slice = len - pos;
		uint64_t base = p->fed;
		enum XML_Status rc;
		bool from_tail;

		/*
		 * A restarted stream that has not begun: whitespace before
		 * its header still belongs to the previous stream (go-xmpp
		 * ends every write with a newline, so one follows </auth>),
		 * and Expat takes an XML declaration only as the very first
		 * bytes of a document. A first stream gets no such leeway.
		 */
		if (s->restarted && s->state == XML_ST_HEADER && p->fed == 0) {
			while (pos < len && xml_is_space(data + pos, 1))
				pos++;
			if (pos == len)
				break;
			s->restarted = false;
			slice = len - pos;
		}
		/*
		 * Normally checked after each slice; again here because a
		 * callback may have lowered limit_override since.
		 */
		if (pending > limit)
			return xml_stream_error(s, XML_ERR_POLICY);
		/* At most one byte beyond the budget: Expat never buffers more. */
		if (slice > limit - pending)
			slice = limit - pending + 1;
		if (slice > XML_MAX_SLICE)
			slice = XML_MAX_SLICE;
		if (p->deferring) {
			bool parse;

			st = xml_defer(p, data + pos, slice, &parse);
			if (st != XML_OK)
				return xml_stream_error(s, st);
			if (!parse) {
				pos += slice;
				if (p->fed - p->mark > xml_pending_limit(p))
					return xml_stream_error(s, XML_ERR_POLICY);
				continue;
			}
			/* The token can end now: Expat gets the deferred bytes. */
			from_tail = true;
			rc = xml_parse(p, p->tail.data + (p->expat_fed - (p->fed - p->tail.len)),
				       (size_t)(p->fed - p->expat_fed));
			p->expat_fed = p->fed;
		} else {
			from_tail = false;
			p->fed += slice;
			p->expat_fed = p->fed;
			rc = xml_parse(p, data + pos, slice);
		}
		if (p->halt) {
			st = xml_stream_halted(s, p, &pos, base);
			if (st == XML_OK)
				continue;
			if (consumed && (st == XML_STOPPED || st == XML_CLOSED))
				*consumed = pos;
			return st;
		}
		if (rc != XML_STATUS_OK)
			return xml_stream_error(s, xml_map_expat_error(p));
		switch (xml_tail_update(p, data + pos, slice, base, from_tail)) {
		case 0:
			break;
		case -EPROTO:
			return xml_stream_error(s, XML_ERR_RESTRICTED);
		default:
			return xml_stream_error(s, XML_ERR_NOMEM);
		}
		pos += slice;
		if (p->fed - p->mark > xml_pending_limit(p))
			return xml_stream_error(s, XML_ERR_POLICY);
	}
	if (consumed)
		*consumed = len;
	return XML_OK;
}

/*
 * Outside a callback, the parser simply goes back to the pool (reset
 * there) and the next feed takes a fresh one for the new document.
 */
void xml_stream_restart(struct xml_stream *s)
{
	struct xml_parser *p = s->parser;

	free(s->ns_context);
	s->ns_context = NULL;
	s->state = XML_ST_HEADER;
	s->restarted = true;
	if (!p)
		return;
	if (p->in_parse) {
		/* Called from a callback: reset once Expat has returned. */
		p->restart_req = true;
		return;
	}
	xml_stream_detach(s, false);
}

/*
 * Idle means: open, at depth 1, and every byte fed has been accounted for
 * by an event (fed == mark), so Expat holds no partial tag, character,
 * reference or CR. A trailing CR is held by Expat (it might start CRLF),
 * which correctly keeps the parser until the next byte.
 */
void xml_stream_release_idle(struct xml_stream *s)
{
	struct xml_parser *p = s->parser;

	if (!p || p->in_parse)
		return;
	if (s->state == XML_ST_OPEN) {
		/* fed == mark: Expat holds no byte of an unfinished token. */
		if (p->depth != 1 || p->fed != p->mark || p->in_cdata)
			return;
		xml_stream_detach(s, !s->ns_context);
		return;
	}
	if (s->state == XML_ST_HEADER && p->fed != 0)
		return;
	xml_stream_detach(s, false);
}

void xml_stream_destroy(struct xml_stream *s)
{
	xml_stream_detach(s, false);
	free(s->ns_context);
	s->ns_context = NULL;
	s->state = XML_ST_CLOSED;
}

const char *xml_status_condition(enum xml_status st)
{
	switch (st) {
	case XML_ERR_NOT_WELL_FORMED:
		return "not-well-formed";
	case XML_ERR_RESTRICTED:
		return "restricted-xml";
	case XML_ERR_POLICY:
		return "policy-violation";
	case XML_ERR_BAD_FORMAT:
		return "bad-format";
	case XML_ERR_NOMEM:
		return "internal-server-error";
	default:
		return NULL;
	}
}
