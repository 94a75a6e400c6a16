/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for daemon/xml.c: tree API, serializer, stream parser
 * (RFC 6120 restricted XML, limits, stop/restart) and parser pooling.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "xml.h"

#define HDR_STD "<stream:stream xmlns='jabber:client' " \
	"xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>"

/* What the callbacks saw: each stanza serialized, one per line. */
struct rec {
	struct xml_stream *s;
	int opens;
	int stanzas;
	struct strbuf out;
	char default_ns[128];
	char hdr_to[64];
	char hdr_lang[16];
	char hdr_ns[64];
	char hdr_name[32];
	int stop_at;		/* return false at this stanza (1-based) */
	int restart_at;		/* call xml_stream_restart at this stanza */
	bool stop_on_open;
	struct xml_node *keep;	/* clone of the last stanza */
	struct arena keep_arena;
};

static bool rec_open(void *ctx, const struct xml_node *h, const char *default_ns)
{
	struct rec *r = ctx;
	const char *v;

	r->opens++;
	snprintf(r->default_ns, sizeof(r->default_ns), "%s", default_ns);
	v = xml_attr_get(h, "to");
	snprintf(r->hdr_to, sizeof(r->hdr_to), "%s", v ? v : "");
	v = xml_attr_get_ns(h, XML_NS_XML, "lang");
	snprintf(r->hdr_lang, sizeof(r->hdr_lang), "%s", v ? v : "");
	snprintf(r->hdr_ns, sizeof(r->hdr_ns), "%s", h->ns);
	snprintf(r->hdr_name, sizeof(r->hdr_name), "%s", h->name);
	return !r->stop_on_open;
}

static bool rec_stanza(void *ctx, struct xml_node *n)
{
	struct rec *r = ctx;

	r->stanzas++;
	xml_serialize(&r->out, n, XML_NS_CLIENT);
	strbuf_append(&r->out, "\n", 1);
	arena_reset(&r->keep_arena);
	r->keep = xml_node_clone(&r->keep_arena, n);
	if (r->restart_at == r->stanzas)
		xml_stream_restart(r->s);
	return r->stop_at != r->stanzas;
}

static const struct xml_stream_handlers rec_handlers = {
	.stream_open = rec_open,
	.stanza = rec_stanza,
};

struct fixture {
	struct xml_pool *pool;
	struct xml_stream s;
	struct rec r;
};

static struct fixture *fixture_new(const struct xml_limits *lim)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->pool = xml_pool_new(lim);
	assert_non_null(f->pool);
	xml_stream_init(&f->s, f->pool, &rec_handlers, &f->r);
	f->r.s = &f->s;
	f->r.out = (struct strbuf)STRBUF_INIT;
	arena_init(&f->r.keep_arena, 4096);
	return f;
}

static void fixture_free(struct fixture *f)
{
	xml_stream_destroy(&f->s);
	assert_int_equal(xml_pool_in_use(f->pool), 0);
	xml_pool_free(f->pool);
	strbuf_free(&f->r.out);
	arena_release(&f->r.keep_arena);
	free(f);
}

static enum xml_status feed(struct fixture *f, const char *data)
{
	size_t consumed = 0;
	enum xml_status st = xml_stream_feed(&f->s, data, strlen(data), &consumed);

	if (st == XML_OK)
		assert_int_equal(consumed, strlen(data));
	return st;
}

static enum xml_status feed_bytewise(struct fixture *f, const char *data)
{
	enum xml_status st = XML_OK;

	for (size_t i = 0; data[i] && st == XML_OK; i++)
		st = xml_stream_feed(&f->s, data + i, 1, NULL);
	return st;
}

static const char *out(struct fixture *f)
{
	return f->r.out.data ? f->r.out.data : "";
}

/* ---- tree API ---- */

static void test_tree_build_and_query(void **state)
{
	struct arena a;
	struct xml_node *m, *b, *x;

	(void)state;
	arena_init(&a, 1024);
	m = xml_node_new(&a, XML_NS_CLIENT, "message");
	assert_non_null(m);
	assert_int_equal(xml_attr_set(&a, m, "to", "a@b"), 0);
	assert_int_equal(xml_attr_set(&a, m, "type", "chat"), 0);
	assert_int_equal(xml_attr_set(&a, m, "to", "c@d"), 0);
	assert_string_equal(xml_attr_get(m, "to"), "c@d");
	assert_int_equal(xml_attr_set(&a, m, "type", NULL), 0);
	assert_null(xml_attr_get(m, "type"));
	assert_int_equal(xml_attr_set_ns(&a, m, XML_NS_XML, "lang", "en"), 0);
	assert_string_equal(xml_attr_get_ns(m, XML_NS_XML, "lang"), "en");
	assert_null(xml_attr_get(m, "lang"));

	b = xml_node_add_child(&a, m, NULL, "body");
	assert_string_equal(b->ns, XML_NS_CLIENT);
	assert_int_equal(xml_node_add_text(&a, b, "hel", 3), 0);
	assert_int_equal(xml_node_add_text(&a, b, "lo", 2), 0);
	/* merged into one text node */
	assert_null(b->children->next);
	assert_string_equal(xml_text(&a, b), "hello");
	x = xml_node_add_child(&a, m, "urn:x", "x");
	assert_int_equal(xml_node_add_text(&a, m, "t1", 2), 0);
	assert_non_null(xml_node_add_child(&a, m, "urn:y", "y"));
	assert_int_equal(xml_node_add_text(&a, m, "t2", 2), 0);

	assert_int_equal(xml_element_count(m), 3);
	assert_ptr_equal(xml_child(m, "urn:x", "x"), x);
	assert_ptr_equal(xml_child(m, NULL, "x"), x);
	assert_null(xml_child(m, XML_NS_CLIENT, "x"));
	assert_ptr_equal(xml_first_element(m), b);
	assert_ptr_equal(xml_next_element(b), x);
	assert_string_equal(xml_text(&a, m), "t1t2");
	assert_string_equal(xml_text(&a, x), "");

	xml_node_remove(x);
	assert_null(x->parent);
	assert_int_equal(xml_element_count(m), 2);
	xml_node_remove(m->last_child);	/* the "t2" text */
	assert_string_equal(xml_text(&a, m), "t1");
	assert_string_equal(m->last_child->name, "y");
	arena_release(&a);
}

static void test_tree_clone_is_deep(void **state)
{
	struct arena a, b;
	struct strbuf s1 = STRBUF_INIT, s2 = STRBUF_INIT;
	struct xml_node *m, *c;
	char ns[] = "urn:temp";

	(void)state;
	arena_init(&a, 1024);
	arena_init(&b, 1024);
	m = xml_node_new(&a, XML_NS_CLIENT, "iq");
	xml_attr_set(&a, m, "id", "1");
	c = xml_node_add_child(&a, m, ns, "query");
	/* the tree owns copies, so the caller's buffer may change */
	ns[0] = 'X';
	assert_string_equal(c->ns, "urn:temp");
	xml_attr_set_ns(&a, c, "urn:a", "flag", "yes");
	xml_node_add_text(&a, c, "x<y", 3);
	xml_serialize(&s1, m, XML_NS_CLIENT);

	c = xml_node_clone(&b, m);
	arena_release(&a);	/* the clone must not point into a */
	xml_serialize(&s2, c, XML_NS_CLIENT);
	assert_string_equal(s1.data, s2.data);
	strbuf_free(&s1);
	strbuf_free(&s2);
	arena_release(&b);
}

/* ---- serializer ---- */

static void test_serialize_namespace_omission_and_declaration(void **state)
{
	struct arena a;
	struct strbuf s = STRBUF_INIT;
	struct xml_node *m, *x;

	(void)state;
	arena_init(&a, 1024);
	m = xml_node_new(&a, XML_NS_CLIENT, "message");
	xml_node_add_child(&a, m, NULL, "body");
	x = xml_node_add_child(&a, m, "urn:x", "x");
	xml_node_add_child(&a, x, NULL, "y");
	xml_node_add_child(&a, x, "", "z");
	xml_node_add_child(&a, x, XML_NS_CLIENT, "w");
	xml_serialize(&s, m, XML_NS_CLIENT);
	assert_string_equal(s.data,
		"<message><body/><x xmlns='urn:x'><y/><z xmlns=''/>"
		"<w xmlns='jabber:client'/></x></message>");

	/* a different namespace in scope makes the top element declare its own */
	strbuf_clear(&s);
	xml_serialize(&s, m, XML_NS_SERVER);
	assert_true(strncmp(s.data, "<message xmlns='jabber:client'><body/>", 38) == 0);

	/* namespaced attributes: xml: prefix kept, others get declared prefixes */
	strbuf_clear(&s);
	x = xml_node_new(&a, XML_NS_CLIENT, "presence");
	xml_attr_set_ns(&a, x, XML_NS_XML, "lang", "en");
	xml_attr_set_ns(&a, x, "urn:a", "p", "1");
	xml_attr_set_ns(&a, x, "urn:b", "q", "2");
	xml_attr_set_ns(&a, x, "urn:a", "r", "3");
	xml_serialize(&s, x, XML_NS_CLIENT);
	assert_string_equal(s.data,
		"<presence xmlns:ns1='urn:a' xmlns:ns2='urn:b' xml:lang='en' "
		"ns1:p='1' ns2:q='2' ns1:r='3'/>");
	strbuf_free(&s);
	arena_release(&a);
}

static void test_serialize_stream_elements_keep_prefix(void **state)
{
	struct arena a;
	struct strbuf s = STRBUF_INIT;
	struct xml_node *f;

	(void)state;
	arena_init(&a, 1024);
	f = xml_node_new(&a, XML_NS_STREAM, "features");
	xml_node_add_child(&a, f, "urn:ietf:params:xml:ns:xmpp-tls", "starttls");
	xml_node_add_child(&a, f, XML_NS_CLIENT, "c");
	xml_serialize(&s, f, XML_NS_CLIENT);
	assert_string_equal(s.data,
		"<stream:features xmlns:stream='http://etherx.jabber.org/streams'>"
		"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><c/></stream:features>");
	strbuf_free(&s);
	arena_release(&a);
}

/* Parses `doc` (a header plus stanzas) and returns the serialized stanzas. */
static char *parse_to_string(const char *doc)
{
	struct fixture *f = fixture_new(NULL);
	char *res;

	assert_int_equal(feed(f, doc), XML_OK);
	res = strdup(out(f));
	fixture_free(f);
	return res;
}

static void test_serialize_escaping_round_trip(void **state)
{
	struct arena a;
	struct strbuf s = STRBUF_INIT, doc = STRBUF_INIT;
	struct xml_node *m, *b;
	const char *text = "a & b <c> \"q\" 'a' ]]> \r\n\tend \xe2\x98\xba";
	const char *val = "x&y<z>\"'\t\n\r v";
	struct fixture *f;

	(void)state;
	arena_init(&a, 1024);
	m = xml_node_new(&a, XML_NS_CLIENT, "message");
	xml_attr_set(&a, m, "id", val);
	b = xml_node_add_child(&a, m, NULL, "body");
	xml_node_add_text(&a, b, text, strlen(text));
	xml_serialize(&s, m, XML_NS_CLIENT);
	assert_non_null(strstr(s.data, "&amp; b &lt;c&gt; &quot;q&quot; &apos;a&apos; ]]&gt; &#13;"));
	assert_non_null(strstr(s.data, "id='x&amp;y&lt;z&gt;&quot;&apos;&#9;&#10;&#13; v'"));

	/* the parser gets back exactly the same values */
	strbuf_puts(&doc, HDR_STD);
	strbuf_append(&doc, s.data, s.len);
	f = fixture_new(NULL);
	assert_int_equal(feed(f, doc.data), XML_OK);
	assert_int_equal(f->r.stanzas, 1);
	assert_string_equal(xml_attr_get(f->r.keep, "id"), val);
	assert_string_equal(xml_text(&f->r.keep_arena, xml_child(f->r.keep, NULL, "body")), text);
	/* and serializes it identically */
	strbuf_append(&s, "\n", 1);
	assert_string_equal(out(f), s.data);
	fixture_free(f);
	strbuf_free(&doc);
	strbuf_free(&s);
	arena_release(&a);
}

static void test_parse_serialize_parse_round_trip(void **state)
{
	const char *stanzas =
		"<message to='a@b' xml:lang='de' type='chat'><body>Hi &amp; &lt;3 <b>bold</b> "
		"tail</body><x xmlns='urn:x' xmlns:p='urn:p' p:attr='v'><p:y>1</p:y><z/></x>"
		"<![CDATA[<raw & text>]]></message>"
		"<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>";
	struct strbuf doc = STRBUF_INIT;
	char *first, *second;

	(void)state;
	strbuf_puts(&doc, HDR_STD);
	strbuf_puts(&doc, stanzas);
	first = parse_to_string(doc.data);
	strbuf_clear(&doc);
	strbuf_puts(&doc, HDR_STD);
	strbuf_puts(&doc, first);
	second = parse_to_string(doc.data);
	assert_string_equal(first, second);
	assert_non_null(strstr(first, "<y xmlns='urn:p'>1</y>"));
	assert_non_null(strstr(first, "&lt;raw &amp; text&gt;"));
	free(first);
	free(second);
	strbuf_free(&doc);
}

/* ---- stream parsing ---- */

static void test_header_attributes_and_default_ns(void **state)
{
	struct fixture *f = fixture_new(NULL);

	(void)state;
	assert_int_equal(feed(f, "<?xml version='1.0' encoding='UTF-8'?>\n"
			     "<stream:stream from='u@example.com' to='example.com' "
			     "version='1.0' xml:lang='en' xmlns='jabber:client' "
			     "xmlns:stream='http://etherx.jabber.org/streams'>"), XML_OK);
	assert_int_equal(f->r.opens, 1);
	assert_string_equal(f->r.default_ns, XML_NS_CLIENT);
	assert_string_equal(f->r.hdr_ns, XML_NS_STREAM);
	assert_string_equal(f->r.hdr_name, "stream");
	assert_string_equal(f->r.hdr_to, "example.com");
	assert_string_equal(f->r.hdr_lang, "en");
	/* the standard header needs no stored context */
	assert_null(f->s.ns_context);
	fixture_free(f);
}

static void test_header_without_default_ns(void **state)
{
	struct fixture *f = fixture_new(NULL);

	(void)state;
	assert_int_equal(feed(f, "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>"
			     "<message/>"), XML_OK);
	assert_string_equal(f->r.default_ns, "");
	assert_string_equal(out(f), "<message xmlns=''/>\n");
	fixture_free(f);
}

static const char doc_three[] = HDR_STD
	"<message to='a@b'><body>one</body></message>\n"
	"<presence/> \r\n\t"
	"<iq type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>";

static const char doc_three_out[] =
	"<message to='a@b'><body>one</body></message>\n"
	"<presence/>\n"
	"<iq type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>\n";

static void test_several_stanzas_in_one_feed(void **state)
{
	struct fixture *f = fixture_new(NULL);

	(void)state;
	assert_int_equal(feed(f, doc_three), XML_OK);
	assert_int_equal(f->r.stanzas, 3);
	assert_string_equal(out(f), doc_three_out);
	fixture_free(f);
}

static void test_stanzas_split_byte_by_byte(void **state)
{
	struct fixture *f = fixture_new(NULL);

	(void)state;
	assert_int_equal(feed_bytewise(f, doc_three), XML_OK);
	assert_int_equal(f->r.opens, 1);
	assert_string_equal(out(f), doc_three_out);
	fixture_free(f);
}

static void test_stanzas_split_bytewise_with_release(void **state)
{
	struct fixture *f = fixture_new(NULL);

	/* release after every byte: pooling must not change the result */
	(void)state;
	for (size_t i = 0; doc_three[i]; i++) {
		assert_int_equal(xml_stream_feed(&f->s, doc_three + i, 1, NULL), XML_OK);
		xml_stream_release_idle(&f->s);
	}
	assert_string_equal(out(f), doc_three_out);
	fixture_free(f);
}

static void test_prefixes_resolved(void **state)
{
	struct fixture *f = fixture_new(NULL);
	struct xml_node *n, *c;

	(void)state;
	assert_int_equal(feed(f, HDR_STD "<cl:iq xmlns:cl='jabber:client' xmlns:q='urn:q' "
			     "q:a='1' b='2'><q:query><item/></q:query></cl:iq>"), XML_OK);
	n = f->r.keep;
	assert_non_null(n);
	assert_string_equal(n->ns, XML_NS_CLIENT);
	assert_string_equal(n->name, "iq");
	assert_string_equal(xml_attr_get_ns(n, "urn:q", "a"), "1");
	assert_null(xml_attr_get(n, "a"));
	assert_string_equal(xml_attr_get(n, "b"), "2");
	c = xml_child(n, "urn:q", "query");
	assert_non_null(c);
	/* item has no prefix: it is in the default namespace (jabber:client) */
	assert_non_null(xml_child(c, XML_NS_CLIENT, "item"));
	fixture_free(f);
}

static void test_xml_lang_attribute(void **state)
{
	struct fixture *f = fixture_new(NULL);

	(void)state;
	assert_int_equal(feed(f, HDR_STD "<message xml:lang='de'><body xml:lang='fr'>x</body>"
			     "</message>"), XML_OK);
	assert_string_equal(xml_attr_get_ns(f->r.keep, XML_NS_XML, "lang"), "de");
	assert_string_equal(f->r.keep->attrs->ns, XML_NS_XML);
	assert_string_equal(f->r.keep->attrs->name, "lang");
	assert_string_equal(out(f), "<message xml:lang='de'><body xml:lang='fr'>x</body></message>\n");
	fixture_free(f);
}

static void test_predefined_entities_and_char_refs(void **state)
{
	struct fixture *f = fixture_new(NULL);

	(void)state;
	assert_int_equal(feed(f, HDR_STD "<m a='&lt;&#x41;&#66;&amp;'>&amp;&lt;&gt;&quot;&apos;"
			     "&#x263A;&#9731;</m>"), XML_OK);
	assert_string_equal(xml_attr_get(f->r.keep, "a"), "<AB&");
	assert_string_equal(xml_text(&f->r.keep_arena, f->r.keep),
			    "&<>\"'\xe2\x98\xba\xe2\x98\x83");
	fixture_free(f);
}

static enum xml_status parse_status(const char *doc)
{
	struct fixture *f = fixture_new(NULL);
	enum xml_status st = feed(f, doc);

	fixture_free(f);
	return st;
}

static void test_restricted_xml_rejected(void **state)
{
	(void)state;
	assert_int_equal(parse_status("<!DOCTYPE stream><stream:stream/>"), XML_ERR_RESTRICTED);
	assert_int_equal(parse_status("<?xml version='1.0'?><!DOCTYPE s SYSTEM 'http://x/'>"),
			 XML_ERR_RESTRICTED);
	assert_int_equal(parse_status("<!DOCTYPE s [<!ENTITY e 'boom'>]><s>&e;</s>"),
			 XML_ERR_RESTRICTED);
	assert_int_equal(parse_status("<!-- hi -->" HDR_STD), XML_ERR_RESTRICTED);
	assert_int_equal(parse_status(HDR_STD "<!-- hi -->"), XML_ERR_RESTRICTED);
	assert_int_equal(parse_status(HDR_STD "<message><!-- hi --></message>"),
			 XML_ERR_RESTRICTED);
	assert_int_equal(parse_status("<?php x?>" HDR_STD), XML_ERR_RESTRICTED);
	assert_int_equal(parse_status(HDR_STD "<message><?pi x?></message>"), XML_ERR_RESTRICTED);
	assert_int_equal(parse_status(HDR_STD "<?pi x?>"), XML_ERR_RESTRICTED);
	/* without a DTD an undefined entity is a well-formedness error */
	assert_int_equal(parse_status(HDR_STD "<message>&foo;</message>"),
			 XML_ERR_NOT_WELL_FORMED);
	assert_int_equal(parse_status(HDR_STD "<message a='&foo;'/>"), XML_ERR_NOT_WELL_FORMED);
	/* the XML declaration is fine at the start, nowhere else */
	assert_int_equal(parse_status("<?xml version='1.0'?>" HDR_STD), XML_OK);
	assert_int_equal(parse_status(HDR_STD "<?xml version='1.0'?>"), XML_ERR_NOT_WELL_FORMED);
	assert_int_equal(parse_status(" <?xml version='1.0'?>" HDR_STD), XML_ERR_NOT_WELL_FORMED);
}

static void test_entity_bomb_rejected_quickly(void **state)
{
	static const char bomb[] =
		"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
		"<!ENTITY lol1 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>"
		"<!ENTITY lol2 '&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;'>"
		"<!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>"
		"<!ENTITY lol4 '&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;'>"
		"<!ENTITY lol5 '&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;'>"
		"<!ENTITY lol6 '&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;'>"
		"<!ENTITY lol7 '&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;'>"
		"<!ENTITY lol8 '&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;'>"
		"<!ENTITY lol9 '&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;'>"
		"]><stream:stream xmlns:stream='http://etherx.jabber.org/streams'>"
		"<m>&lol9;</m>";
	struct timespec t0, t1;
	struct fixture *f = fixture_new(NULL);
	double ms;

	(void)state;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(feed(f, bomb), XML_ERR_RESTRICTED);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	assert_true(ms < 50.0);
	assert_int_equal(f->r.stanzas, 0);
	/* the stream stays failed */
	assert_int_equal(feed(f, "<m/>"), XML_ERR_RESTRICTED);
	fixture_free(f);
}

static void test_not_well_formed(void **state)
{
	(void)state;
	assert_int_equal(parse_status(HDR_STD "<message>\xff\xfe</message>"),
			 XML_ERR_NOT_WELL_FORMED);
	/* overlong encoding of '/' and a UTF-16 surrogate */
	assert_int_equal(parse_status(HDR_STD "<m>\xc0\xaf</m>"), XML_ERR_NOT_WELL_FORMED);
	assert_int_equal(parse_status(HDR_STD "<m>\xed\xa0\x80</m>"), XML_ERR_NOT_WELL_FORMED);
	assert_int_equal(parse_status(HDR_STD "<m a='\xe2\x28\xa1'/>"), XML_ERR_NOT_WELL_FORMED);
	assert_int_equal(parse_status(HDR_STD "<message><body></message></body>"),
			 XML_ERR_NOT_WELL_FORMED);
	assert_int_equal(parse_status(HDR_STD "<message></stream:stream>"),
			 XML_ERR_NOT_WELL_FORMED);
	assert_int_equal(parse_status(HDR_STD "<x:message/>"), XML_ERR_NOT_WELL_FORMED);
	assert_int_equal(parse_status(HDR_STD "<m a='1' a='2'/>"), XML_ERR_NOT_WELL_FORMED);
	assert_int_equal(parse_status(HDR_STD "<m>&#0;</m>"), XML_ERR_NOT_WELL_FORMED);
	assert_int_equal(parse_status(HDR_STD "<m>\x01</m>"), XML_ERR_NOT_WELL_FORMED);
	assert_int_equal(parse_status(HDR_STD "<m xmlns:p=''/>"), XML_ERR_NOT_WELL_FORMED);
	assert_int_equal(parse_status("junk "), XML_ERR_NOT_WELL_FORMED);
	assert_int_equal(parse_status("<a></b>"), XML_ERR_NOT_WELL_FORMED);
}

static void test_text_at_stream_level(void **state)
{
	struct fixture *f;

	(void)state;
	assert_int_equal(parse_status(HDR_STD "hello<message/>"), XML_ERR_BAD_FORMAT);
	assert_int_equal(parse_status(HDR_STD "<message/>x"), XML_ERR_BAD_FORMAT);
	assert_int_equal(parse_status(HDR_STD " &amp; "), XML_ERR_BAD_FORMAT);

	/* whitespace keepalives are fine, also between feeds and as CDATA */
	f = fixture_new(NULL);
	assert_int_equal(feed(f, HDR_STD " \n "), XML_OK);
	assert_int_equal(feed(f, "\t\r\n<presence/>  "), XML_OK);
	assert_int_equal(feed(f, "<![CDATA[ ]]> "), XML_OK);
	assert_int_equal(f->r.stanzas, 1);
	xml_stream_release_idle(&f->s);
	assert_null(f->s.parser);
	assert_int_equal(feed(f, " "), XML_OK);
	fixture_free(f);
}

static void test_stop_consumed_then_restart(void **state)
{
	static const char part1[] = "<?xml version='1.0'?>" HDR_STD
		"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
	static const char part2[] = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
		"xmlns:stream='http://etherx.jabber.org/streams' to='second'><presence/>";
	struct fixture *f = fixture_new(NULL);
	char buf[512];
	size_t consumed = 0;

	(void)state;
	snprintf(buf, sizeof(buf), "%s%s", part1, part2);
	f->r.stop_at = 1;
	assert_int_equal(xml_stream_feed(&f->s, buf, strlen(buf), &consumed), XML_STOPPED);
	assert_int_equal(consumed, strlen(part1));
	assert_int_equal(f->r.stanzas, 1);
	assert_int_equal(f->r.opens, 1);
	/* the bytes after the element were not parsed */
	assert_string_equal(out(f), "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\n");
	assert_int_equal(xml_pool_in_use(f->pool), 0);

	xml_stream_restart(&f->s);
	assert_int_equal(feed(f, buf + consumed), XML_OK);
	assert_int_equal(f->r.opens, 2);
	assert_string_equal(f->r.hdr_to, "second");
	assert_int_equal(f->r.stanzas, 2);
	fixture_free(f);
}

static void test_stop_byte_by_byte_consumed(void **state)
{
	struct fixture *f = fixture_new(NULL);
	const char *doc = HDR_STD "<a/><b>x</b><c/>";
	size_t consumed = 99;
	enum xml_status st = XML_OK;
	size_t i;

	(void)state;
	f->r.stop_at = 2;
	for (i = 0; doc[i]; i++) {
		st = xml_stream_feed(&f->s, doc + i, 1, &consumed);
		if (st != XML_OK)
			break;
	}
	assert_int_equal(st, XML_STOPPED);
	assert_int_equal(consumed, 1);
	assert_int_equal(i + 1, strlen(HDR_STD "<a/><b>x</b>"));
	/* without a restart the same stream goes on */
	assert_int_equal(feed(f, doc + i + 1), XML_OK);
	assert_int_equal(f->r.stanzas, 3);
	fixture_free(f);
}

static void test_stop_on_header_then_continue(void **state)
{
	struct fixture *f = fixture_new(NULL);
	const char *doc = "<s:stream xmlns:s='http://etherx.jabber.org/streams' "
		"xmlns='jabber:server'><db:result xmlns:db='jabber:server:dialback'/>";
	size_t consumed;

	(void)state;
	f->r.stop_on_open = true;
	assert_int_equal(xml_stream_feed(&f->s, doc, strlen(doc), &consumed), XML_STOPPED);
	assert_int_equal(consumed, strchr(doc, '>') - doc + 1);
	assert_int_equal(f->r.stanzas, 0);
	assert_non_null(f->s.ns_context);
	assert_int_equal(feed(f, doc + consumed), XML_OK);
	assert_int_equal(f->r.stanzas, 1);
	assert_string_equal(f->r.keep->ns, "jabber:server:dialback");
	assert_int_equal(feed(f, "</s:stream>"), XML_CLOSED);
	fixture_free(f);
}

static void test_restart_from_callback_continues(void **state)
{
	struct fixture *f = fixture_new(NULL);

	(void)state;
	f->r.restart_at = 1;
	assert_int_equal(feed(f, HDR_STD "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
			     "<stream:stream xmlns='jabber:client' to='again' "
			     "xmlns:stream='http://etherx.jabber.org/streams'><presence/>"), XML_OK);
	assert_int_equal(f->r.opens, 2);
	assert_string_equal(f->r.hdr_to, "again");
	assert_int_equal(f->r.stanzas, 2);
	assert_string_equal(f->r.keep->name, "presence");
	fixture_free(f);
}

/*
 * Clients that end every write with a newline (go-xmpp) send one after
 * </auth>: it belongs to the old stream, and the restarted one must still
 * take its XML declaration.
 */
static void test_whitespace_before_restarted_header_is_dropped(void **state)
{
	static const char part1[] = "<?xml version='1.0'?>" HDR_STD
		"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AA==</auth>\n";
	static const char again[] = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
		"xmlns:stream='http://etherx.jabber.org/streams' to='again'><presence/>";
	struct fixture *f = fixture_new(NULL);
	size_t consumed = 0;
	char buf[512];

	(void)state;
	f->r.stop_at = 1;
	assert_int_equal(xml_stream_feed(&f->s, part1, strlen(part1), &consumed), XML_STOPPED);
	assert_int_equal(consumed, strlen(part1) - 1);
	xml_stream_restart(&f->s);
	/* The newline, then in another read the new header. */
	assert_int_equal(feed(f, part1 + consumed), XML_OK);
	assert_int_equal(feed(f, " \r\n\t"), XML_OK);
	assert_int_equal(feed(f, again), XML_OK);
	assert_int_equal(f->r.opens, 2);
	assert_string_equal(f->r.hdr_to, "again");
	fixture_free(f);

	/* Restarted from the callback, the whitespace in the same read. */
	f = fixture_new(NULL);
	f->r.restart_at = 1;
	snprintf(buf, sizeof(buf), "%s%s", HDR_STD "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>\n",
		 again);
	assert_int_equal(feed(f, buf), XML_OK);
	assert_int_equal(f->r.opens, 2);
	assert_int_equal(f->r.stanzas, 2);
	fixture_free(f);
}

/* Whitespace inside an open stream is still passed over as before. */
static void test_whitespace_between_stanzas_still_fine(void **state)
{
	struct fixture *f = fixture_new(NULL);

	(void)state;
	assert_int_equal(feed(f, HDR_STD "\n<a/>\n \n<b/>"), XML_OK);
	assert_int_equal(f->r.stanzas, 2);
	fixture_free(f);
}

static void test_stream_close(void **state)
{
	struct fixture *f = fixture_new(NULL);
	size_t consumed;
	const char *tail = "<presence/></stream:stream>trailing";

	(void)state;
	assert_int_equal(feed(f, HDR_STD), XML_OK);
	assert_int_equal(xml_stream_feed(&f->s, tail, strlen(tail), &consumed), XML_CLOSED);
	assert_int_equal(consumed, strlen("<presence/></stream:stream>"));
	assert_int_equal(f->r.stanzas, 1);
	assert_int_equal(xml_pool_in_use(f->pool), 0);
	assert_int_equal(xml_stream_feed(&f->s, "x", 1, &consumed), XML_CLOSED);
	assert_int_equal(consumed, 0);
	fixture_free(f);

	/* the close tag split in pieces after a pool round trip */
	f = fixture_new(NULL);
	assert_int_equal(feed(f, HDR_STD "<a/>"), XML_OK);
	xml_stream_release_idle(&f->s);
	assert_int_equal(feed(f, "</stream:str"), XML_OK);
	assert_int_equal(feed(f, "eam>"), XML_CLOSED);
	fixture_free(f);
}

/* ---- limits ---- */

static void test_limit_stanza_size(void **state)
{
	struct xml_limits lim = { 1000, 32, 64, 4096 };
	struct fixture *f = fixture_new(&lim);
	char big[1200], ok[1001];

	(void)state;
	/* exactly at the limit is accepted */
	memset(ok, 'x', sizeof(ok));
	memcpy(ok, "<m>", 3);
	memcpy(ok + 1000 - 4, "</m>", 5);
	assert_int_equal(strlen(ok), 1000);
	assert_int_equal(feed(f, HDR_STD), XML_OK);
	assert_int_equal(feed(f, ok), XML_OK);
	assert_int_equal(f->r.stanzas, 1);
	/* one byte more is not */
	memset(big, 'x', sizeof(big));
	memcpy(big, "<m>", 3);
	memcpy(big + 1001 - 4, "</m>", 5);
	assert_int_equal(feed(f, big), XML_ERR_POLICY);
	assert_int_equal(f->r.stanzas, 1);
	fixture_free(f);
}

/* A stanza that never ends is refused as soon as it crosses the limit. */
static void test_limit_endless_stanza(void **state)
{
	struct xml_limits lim = { 1000, 32, 64, 4096 };
	struct fixture *f;
	size_t fed, i;
	enum xml_status st = XML_OK;

	(void)state;
	/* endless text, fed in 7-byte pieces */
	f = fixture_new(&lim);
	assert_int_equal(feed(f, HDR_STD "<message><body>"), XML_OK);
	fed = strlen("<message><body>");
	for (i = 0; i < 1000 && st == XML_OK; i++) {
		st = xml_stream_feed(&f->s, "abcdefg", 7, NULL);
		fed += 7;
	}
	assert_int_equal(st, XML_ERR_POLICY);
	assert_true(fed > 1000 && fed <= 1007);
	fixture_free(f);

	/* an endless attribute value, which Expat buffers without events */
	f = fixture_new(&lim);
	st = feed(f, HDR_STD "<message to='");
	fed = strlen("<message to='");
	while (st == XML_OK) {
		st = xml_stream_feed(&f->s, "a", 1, NULL);
		fed++;
	}
	assert_int_equal(st, XML_ERR_POLICY);
	assert_int_equal(fed, 1001);
	fixture_free(f);

	/*
	 * An endless element name in one big feed: Expat must never be
	 * handed (and buffer) much more than the limit.
	 */
	f = fixture_new(&lim);
	{
		size_t n = 1024 * 1024;
		char *buf = malloc(n);
		struct xml_pool_stats ps;

		memset(buf, 'n', n);
		buf[0] = '<';
		assert_int_equal(feed(f, HDR_STD), XML_OK);
		assert_int_equal(xml_stream_feed(&f->s, buf, n, NULL), XML_ERR_POLICY);
		xml_pool_stats(f->pool, &ps);
		assert_true(ps.expat_peak < 64 * 1024);
		free(buf);
	}
	fixture_free(f);
}

static void test_limit_override(void **state)
{
	struct fixture *f = fixture_new(NULL);
	char stanza[200];

	(void)state;
	snprintf(stanza, sizeof(stanza), "<message><body>%0150d</body></message>", 0);
	assert_int_equal(feed(f, HDR_STD), XML_OK);
	assert_int_equal(feed(f, stanza), XML_OK);
	f->s.limit_override = 100;
	assert_int_equal(feed(f, stanza), XML_ERR_POLICY);
	assert_int_equal(f->r.stanzas, 1);
	fixture_free(f);
}

static void test_limit_depth(void **state)
{
	struct strbuf b = STRBUF_INIT;
	int i;

	(void)state;
	strbuf_puts(&b, HDR_STD);
	for (i = 0; i < 32; i++)
		strbuf_puts(&b, "<d>");
	for (i = 0; i < 32; i++)
		strbuf_puts(&b, "</d>");
	assert_int_equal(parse_status(b.data), XML_OK);
	strbuf_clear(&b);
	strbuf_puts(&b, HDR_STD);
	for (i = 0; i < 33; i++)
		strbuf_puts(&b, "<d>");
	assert_int_equal(parse_status(b.data), XML_ERR_POLICY);
	strbuf_free(&b);
}

static void test_limit_attributes(void **state)
{
	struct strbuf b = STRBUF_INIT;
	int i;

	(void)state;
	strbuf_puts(&b, HDR_STD "<m");
	for (i = 0; i < 64; i++)
		strbuf_printf(&b, " a%d='x'", i);
	strbuf_puts(&b, "/>");
	assert_int_equal(parse_status(b.data), XML_OK);

	strbuf_clear(&b);
	strbuf_puts(&b, HDR_STD "<m");
	for (i = 0; i < 65; i++)
		strbuf_printf(&b, " a%d='x'", i);
	strbuf_puts(&b, "/>");
	assert_int_equal(parse_status(b.data), XML_ERR_POLICY);

	/* namespace declarations count too */
	strbuf_clear(&b);
	strbuf_puts(&b, HDR_STD "<m");
	for (i = 0; i < 65; i++)
		strbuf_printf(&b, " xmlns:p%d='urn:%d'", i, i);
	strbuf_puts(&b, "/>");
	assert_int_equal(parse_status(b.data), XML_ERR_POLICY);
	strbuf_free(&b);
}

static void test_limit_header_size(void **state)
{
	struct strbuf b = STRBUF_INIT;
	struct fixture *f;
	enum xml_status st = XML_OK;
	size_t fed = 0;

	(void)state;
	strbuf_puts(&b, "<stream:stream xmlns='jabber:client' "
		    "xmlns:stream='http://etherx.jabber.org/streams' to='");
	while (b.len < 4096 - 2)
		strbuf_append(&b, "x", 1);
	strbuf_puts(&b, "'>");
	assert_int_equal(b.len, 4096);
	assert_int_equal(parse_status(b.data), XML_OK);
	strbuf_clear(&b);
	strbuf_puts(&b, "<stream:stream xmlns='jabber:client' "
		    "xmlns:stream='http://etherx.jabber.org/streams' to='");
	while (b.len < 4097 - 2)
		strbuf_append(&b, "x", 1);
	strbuf_puts(&b, "'>");
	assert_int_equal(parse_status(b.data), XML_ERR_POLICY);

	/* a header that never ends, byte by byte */
	f = fixture_new(NULL);
	while (st == XML_OK) {
		st = xml_stream_feed(&f->s, fed ? "x" : "<", 1, NULL);
		fed++;
	}
	assert_int_equal(st, XML_ERR_POLICY);
	assert_int_equal(fed, 4097);
	fixture_free(f);
	strbuf_free(&b);
}

/* Dense markup within the byte limit must not blow up tree memory. */
static void test_limit_tree_memory(void **state)
{
	struct xml_limits lim = { 64 * 1024, 32, 64, 4096 };
	struct fixture *f = fixture_new(&lim);
	struct strbuf b = STRBUF_INIT;
	struct xml_pool_stats st;

	(void)state;
	strbuf_puts(&b, "<m>");
	while (b.len < 60 * 1024)
		strbuf_puts(&b, "<a/>");
	strbuf_puts(&b, "</m>");
	assert_int_equal(feed(f, HDR_STD), XML_OK);
	assert_int_equal(xml_stream_feed(&f->s, b.data, b.len, NULL), XML_ERR_POLICY);
	xml_pool_stats(f->pool, &st);
	assert_true(st.tree_bytes <= 8 * lim.max_stanza_bytes + 64 * 1024);
	fixture_free(f);

	/* the same size in ordinary markup is fine */
	f = fixture_new(&lim);
	strbuf_clear(&b);
	strbuf_puts(&b, "<m>");
	while (b.len < 60 * 1024)
		strbuf_puts(&b, "<item jid='someone@example.com' name='Some One'>"
			    "<group>Friends</group></item>");
	strbuf_puts(&b, "</m>");
	assert_int_equal(feed(f, HDR_STD), XML_OK);
	assert_int_equal(xml_stream_feed(&f->s, b.data, b.len, NULL), XML_OK);
	assert_int_equal(f->r.stanzas, 1);
	fixture_free(f);
	strbuf_free(&b);
}

/* ---- unfinished tokens trickled in small reads ---- */

static double ms_since(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/*
 * Expat 2.5 re-scans an unfinished token on every call: a 256 KiB start
 * tag fed byte by byte would cost ~17 s of CPU without the deferral.
 */
static void test_trickled_endless_tag_is_linear(void **state)
{
	/* plain bytes, and '>' that only ends the tag outside quotes */
	static const char pattern[][3] = { "aa", "a>" };

	(void)state;
	for (size_t k = 0; k < 2; k++) {
		struct fixture *f = fixture_new(NULL);
		enum xml_status st;
		struct timespec t0;
		size_t fed = strlen("<message to='");

		assert_int_equal(feed(f, HDR_STD "<message to='"), XML_OK);
		clock_gettime(CLOCK_MONOTONIC, &t0);
		do {
			st = xml_stream_feed(&f->s, &pattern[k][fed % 2], 1, NULL);
			fed++;
		} while (st == XML_OK);
		assert_int_equal(st, XML_ERR_POLICY);
		assert_int_equal(fed, 256 * 1024 + 1);
		assert_true(ms_since(&t0) < 2000.0);
		fixture_free(f);
	}
}

/* A long tag fed byte by byte is delivered exactly when its '>' arrives. */
static void test_trickled_long_tag_delivered_on_time(void **state)
{
	struct fixture *f = fixture_new(NULL);
	struct strbuf b = STRBUF_INIT, val = STRBUF_INIT;
	size_t i;

	(void)state;
	/* values with '>', ';', the other quote and references in them */
	while (val.len < 8000)
		strbuf_puts(&val, "a>b;c\"d&amp;e&#x3b;");
	strbuf_puts(&b, "<message id='");
	strbuf_append(&b, val.data, val.len);
	strbuf_puts(&b, "' to = \"x'y\" ><body>hi</body></message><presence");
	strbuf_puts(&b, " type='");
	strbuf_append(&b, val.data, val.len);
	strbuf_puts(&b, "'/>");
	assert_int_equal(feed(f, HDR_STD), XML_OK);
	for (i = 0; i < b.len; i++) {
		assert_int_equal(xml_stream_feed(&f->s, b.data + i, 1, NULL), XML_OK);
		xml_stream_release_idle(&f->s);
		if (i + 1 == b.len - strlen("<presence type='") - val.len - strlen("'/>"))
			assert_int_equal(f->r.stanzas, 1);	/* right after </message> */
		if (i + 2 == b.len - strlen("<presence type='") - val.len - strlen("'/>"))
			assert_int_equal(f->r.stanzas, 0);	/* its '>' still missing */
		if (i + 2 == b.len)
			assert_int_equal(f->r.stanzas, 1);	/* '>' of "/>" still missing */
	}
	assert_int_equal(f->r.stanzas, 2);
	assert_string_equal(f->r.keep->name, "presence");
	assert_non_null(strstr(out(f), "to='x&apos;y'><body>hi</body></message>"));
	assert_non_null(strstr(out(f), "a&gt;b;c&quot;d&amp;e;a&gt;"));
	assert_null(f->s.parser);
	fixture_free(f);
	strbuf_free(&b);
	strbuf_free(&val);
}

/* Comments and PIs are refused long before their end. */
static void test_trickled_long_comment_refused(void **state)
{
	static const char *const starts[] = { "<!--", "<?pi " };

	(void)state;
	for (size_t k = 0; k < 2; k++) {
		struct fixture *f = fixture_new(NULL);
		enum xml_status st;
		size_t n = 0;

		assert_int_equal(feed(f, HDR_STD), XML_OK);
		assert_int_equal(feed(f, starts[k]), XML_OK);
		do {
			st = xml_stream_feed(&f->s, "x", 1, NULL);
			n++;
		} while (st == XML_OK);
		assert_int_equal(st, XML_ERR_RESTRICTED);
		assert_true(n < 4096);
		fixture_free(f);
	}
}

/* ---- pooling ---- */

static void test_pool_release_and_reprime_custom_prefix(void **state)
{
	struct fixture *f = fixture_new(NULL);

	(void)state;
	assert_int_equal(feed(f, "<s:stream xmlns:s='http://etherx.jabber.org/streams' "
			     "xmlns='jabber:client' xmlns:foo='urn:foo' "
			     "xmlns:q=\"urn:it's&amp;\" to='example.com'>"), XML_OK);
	assert_non_null(f->s.ns_context);
	assert_string_equal(f->r.hdr_ns, XML_NS_STREAM);
	assert_int_equal(feed(f, "<presence/>"), XML_OK);
	assert_int_equal(xml_pool_idle(f->pool), 0);
	xml_stream_release_idle(&f->s);
	assert_null(f->s.parser);
	assert_int_equal(xml_pool_idle(f->pool), 1);
	assert_int_equal(xml_pool_in_use(f->pool), 0);

	/* a fresh parser still knows foo:, q: and the s: prefix */
	assert_int_equal(feed(f, "<message><foo:bar q:x='1'/></message>"), XML_OK);
	assert_int_equal(xml_pool_idle(f->pool), 0);
	assert_int_equal(xml_pool_in_use(f->pool), 1);
	assert_non_null(xml_child(f->r.keep, "urn:foo", "bar"));
	assert_string_equal(xml_attr_get_ns(xml_child(f->r.keep, "urn:foo", "bar"),
					    "urn:it's&", "x"), "1");
	xml_stream_release_idle(&f->s);
	assert_int_equal(feed(f, "<s:features/>"), XML_OK);
	assert_string_equal(f->r.keep->ns, XML_NS_STREAM);
	xml_stream_release_idle(&f->s);
	assert_int_equal(feed(f, "</s:stream>"), XML_CLOSED);
	assert_int_equal(f->r.stanzas, 3);
	fixture_free(f);
}

static void test_pool_standard_header_has_no_context(void **state)
{
	struct fixture *f = fixture_new(NULL);

	(void)state;
	/* declarations in the other order are still the standard context */
	assert_int_equal(feed(f, "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
			     "xmlns='jabber:client' version='1.0'>"), XML_OK);
	assert_null(f->s.ns_context);
	xml_stream_release_idle(&f->s);
	assert_null(f->s.parser);
	assert_int_equal(feed(f, "<message/></stream:stream>"), XML_CLOSED);
	assert_int_equal(f->r.stanzas, 1);
	fixture_free(f);
}

static void test_pool_release_is_noop_mid_stanza(void **state)
{
	static const char *const pieces[] = {
		"<mess", "age to='a@b'", "><body>hi", "</body>", "</message", "\r", ">",
	};
	struct fixture *f = fixture_new(NULL);

	(void)state;
	assert_int_equal(feed(f, HDR_STD), XML_OK);
	for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
		assert_int_equal(feed(f, pieces[i]), XML_OK);
		xml_stream_release_idle(&f->s);
		if (i + 1 < sizeof(pieces) / sizeof(pieces[0])) {
			assert_non_null(f->s.parser);
			assert_int_equal(xml_pool_idle(f->pool), 0);
		}
	}
	assert_null(f->s.parser);
	assert_int_equal(xml_pool_idle(f->pool), 1);
	assert_string_equal(out(f), "<message to='a@b'><body>hi</body></message>\n");

	/* a trailing partial UTF-8 character keeps the parser too */
	assert_int_equal(feed(f, "<m>\xe2\x98"), XML_OK);
	xml_stream_release_idle(&f->s);
	assert_non_null(f->s.parser);
	assert_int_equal(feed(f, "\xba</m>"), XML_OK);
	xml_stream_release_idle(&f->s);
	assert_null(f->s.parser);
	assert_string_equal(xml_text(&f->r.keep_arena, f->r.keep), "\xe2\x98\xba");
	fixture_free(f);
}

/*
 * A parser released by a standard stream is handed on without a reset;
 * a stream with another header must still get a correctly primed one.
 */
static void test_pool_primed_parser_handed_between_streams(void **state)
{
	struct xml_pool *pool = xml_pool_new(NULL);
	struct xml_stream a, b, c;
	struct rec ra = { 0 }, rb = { 0 }, rc = { 0 };
	struct xml_pool_stats st;
	const char *hdr_c = "<s:stream xmlns:s='http://etherx.jabber.org/streams' "
		"xmlns='jabber:client'>";

	(void)state;
	xml_stream_init(&a, pool, &rec_handlers, &ra);
	xml_stream_init(&b, pool, &rec_handlers, &rb);
	xml_stream_init(&c, pool, &rec_handlers, &rc);
	assert_int_equal(xml_stream_feed(&a, HDR_STD, strlen(HDR_STD), NULL), XML_OK);
	assert_int_equal(xml_stream_feed(&b, HDR_STD, strlen(HDR_STD), NULL), XML_OK);
	assert_int_equal(xml_stream_feed(&c, hdr_c, strlen(hdr_c), NULL), XML_OK);
	xml_stream_release_idle(&a);
	xml_stream_release_idle(&b);
	xml_stream_release_idle(&c);
	assert_int_equal(xml_pool_idle(pool), 3);

	for (int i = 0; i < 3; i++) {
		assert_int_equal(xml_stream_feed(&c, "<a/>", 4, NULL), XML_OK);
		xml_stream_release_idle(&c);
		assert_int_equal(xml_stream_feed(&a, "<b/>", 4, NULL), XML_OK);
		xml_stream_release_idle(&a);
		assert_int_equal(xml_stream_feed(&b, "<c/>", 4, NULL), XML_OK);
		xml_stream_release_idle(&b);
	}
	assert_int_equal(xml_stream_feed(&c, "</s:stream>", 11, NULL), XML_CLOSED);
	assert_int_equal(xml_stream_feed(&a, "</stream:stream>", 16, NULL), XML_CLOSED);
	/* b's closing tag must match its own header, not another stream's */
	assert_int_equal(xml_stream_feed(&b, "</s:stream>", 11, NULL), XML_ERR_NOT_WELL_FORMED);
	assert_int_equal(rc.stanzas, 3);
	assert_string_equal(ra.out.data, "<b/>\n<b/>\n<b/>\n");
	assert_string_equal(rb.out.data, "<c/>\n<c/>\n<c/>\n");
	xml_pool_stats(pool, &st);
	assert_int_equal(st.created, 3);
	xml_stream_destroy(&a);
	xml_stream_destroy(&b);
	xml_stream_destroy(&c);
	xml_pool_free(pool);
	strbuf_free(&ra.out);
	strbuf_free(&rb.out);
	strbuf_free(&rc.out);
	arena_release(&ra.keep_arena);
	arena_release(&rb.keep_arena);
	arena_release(&rc.keep_arena);
}

#define N_STREAMS 100

static void test_pool_many_streams_share(void **state)
{
	struct xml_pool *pool = xml_pool_new(NULL);
	struct xml_stream *s = calloc(N_STREAMS, sizeof(*s));
	struct rec *r = calloc(N_STREAMS, sizeof(*r));
	struct xml_pool_stats st;
	char buf[256];
	int i, round;

	(void)state;
	for (i = 0; i < N_STREAMS; i++) {
		xml_stream_init(&s[i], pool, &rec_handlers, &r[i]);
		r[i].s = &s[i];
		arena_init(&r[i].keep_arena, 1024);
		snprintf(buf, sizeof(buf), "<stream:stream xmlns='jabber:client' "
			 "xmlns:stream='http://etherx.jabber.org/streams' to='d%d'>", i);
		assert_int_equal(xml_stream_feed(&s[i], buf, strlen(buf), NULL), XML_OK);
		/* every stream holds a parser mid-stanza at the same time */
		assert_int_equal(xml_stream_feed(&s[i], "<message><bo", 12, NULL), XML_OK);
	}
	assert_int_equal(xml_pool_in_use(pool), N_STREAMS);
	for (i = 0; i < N_STREAMS; i++) {
		snprintf(buf, sizeof(buf), "dy>%d</body></message>", i);
		assert_int_equal(xml_stream_feed(&s[i], buf, strlen(buf), NULL), XML_OK);
		xml_stream_release_idle(&s[i]);
	}
	assert_int_equal(xml_pool_in_use(pool), 0);
	/* only 64 idle parsers are kept */
	assert_int_equal(xml_pool_idle(pool), 64);
	for (round = 0; round < 5; round++) {
		for (i = 0; i < N_STREAMS; i++) {
			snprintf(buf, sizeof(buf), "<iq id='%d-%d'/>", round, i);
			assert_int_equal(xml_stream_feed(&s[i], buf, strlen(buf), NULL), XML_OK);
			xml_stream_release_idle(&s[i]);
			assert_int_equal(xml_pool_in_use(pool), 0);
		}
	}
	xml_pool_stats(pool, &st);
	/* serial use after the first burst needs no new parser */
	assert_int_equal(st.created, N_STREAMS);
	for (i = 0; i < N_STREAMS; i++) {
		char want[64];

		assert_int_equal(r[i].stanzas, 6);
		snprintf(want, sizeof(want), "d%d", i);
		assert_string_equal(r[i].hdr_to, want);
		snprintf(want, sizeof(want), "%d", i);
		assert_non_null(strstr(r[i].out.data, want));
		snprintf(want, sizeof(want), "<iq id='4-%d'/>\n", i);
		assert_non_null(strstr(r[i].out.data, want));
		xml_stream_destroy(&s[i]);
		strbuf_free(&r[i].out);
		arena_release(&r[i].keep_arena);
	}
	xml_pool_free(pool);
	free(s);
	free(r);
}

/* A typical stanza parsed by a held parser allocates nothing. */
static void test_steady_state_no_malloc(void **state)
{
	static const char msg[] =
		"<message to='juliet@example.com/balcony' from='romeo@example.net/orchard' "
		"type='chat' id='a1b2c3d4' xml:lang='en'><body>Art thou not Romeo, "
		"and a Montague?</body><active xmlns='http://jabber.org/protocol/chatstates'/>"
		"</message>";
	static const struct xml_stream_handlers quiet = { NULL, NULL };
	struct xml_pool *pool = xml_pool_new(NULL);
	struct xml_stream s;
	struct xml_pool_stats before, after;

	(void)state;
	assert_true(strlen(msg) >= 200 && strlen(msg) < 260);
	xml_stream_init(&s, pool, &quiet, NULL);
	assert_int_equal(xml_stream_feed(&s, HDR_STD, strlen(HDR_STD), NULL), XML_OK);
	for (int i = 0; i < 10; i++)
		assert_int_equal(xml_stream_feed(&s, msg, strlen(msg), NULL), XML_OK);
	xml_pool_stats(pool, &before);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(xml_stream_feed(&s, msg, strlen(msg), NULL), XML_OK);
	xml_pool_stats(pool, &after);
	assert_int_equal(after.expat_allocs, before.expat_allocs);
	assert_int_equal(after.expat_bytes, before.expat_bytes);
	assert_int_equal(after.tree_bytes, before.tree_bytes);
	assert_int_equal(after.created, 1);

	/*
	 * Nor does a pool round trip per stanza for a standard stream. The
	 * only allocations left are the document recycle every 256 KiB
	 * (one here; the loop above stays within the first document).
	 */
	for (int i = 0; i < 1000; i++) {
		assert_int_equal(xml_stream_feed(&s, msg, strlen(msg), NULL), XML_OK);
		xml_stream_release_idle(&s);
		assert_null(s.parser);
	}
	before = after;
	xml_pool_stats(pool, &after);
	assert_true(after.expat_allocs - before.expat_allocs <= 20);
	assert_int_equal(after.tree_bytes, before.tree_bytes);
	assert_int_equal(after.created, 1);
	xml_stream_destroy(&s);
	xml_pool_free(pool);
}

/* A long stream is reset at stanza boundaries; nothing is lost. */
static void test_long_stream_recycles_parser(void **state)
{
	struct fixture *f = fixture_new(NULL);
	struct xml_pool_stats st;
	char buf[128];
	size_t total = 0;
	int i;

	(void)state;
	assert_int_equal(feed(f, "<x:stream xmlns:x='http://etherx.jabber.org/streams' "
			     "xmlns='jabber:client' xmlns:u='urn:u'>"), XML_OK);
	for (i = 0; total < 1024 * 1024; i++) {
		/* unique element names would grow Expat's tables forever */
		int n = snprintf(buf, sizeof(buf), "<message id='%d'><u:e%d/></message>", i, i);

		assert_int_equal(xml_stream_feed(&f->s, buf, (size_t)n, NULL), XML_OK);
		total += (size_t)n;
	}
	assert_int_equal(f->r.stanzas, i);
	assert_non_null(xml_child(f->r.keep, "urn:u", NULL));
	xml_pool_stats(f->pool, &st);
	/* about 1.8 MB without recycling, 0.5 MB with */
	assert_true(st.expat_peak < 1024 * 1024);
	assert_int_equal(feed(f, "</x:stream>"), XML_CLOSED);
	fixture_free(f);
}

static void test_status_conditions(void **state)
{
	(void)state;
	assert_string_equal(xml_status_condition(XML_ERR_NOT_WELL_FORMED), "not-well-formed");
	assert_string_equal(xml_status_condition(XML_ERR_RESTRICTED), "restricted-xml");
	assert_string_equal(xml_status_condition(XML_ERR_POLICY), "policy-violation");
	assert_string_equal(xml_status_condition(XML_ERR_BAD_FORMAT), "bad-format");
	assert_string_equal(xml_status_condition(XML_ERR_NOMEM), "internal-server-error");
	assert_null(xml_status_condition(XML_OK));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tree_build_and_query),
		cmocka_unit_test(test_tree_clone_is_deep),
		cmocka_unit_test(test_serialize_namespace_omission_and_declaration),
		cmocka_unit_test(test_serialize_stream_elements_keep_prefix),
		cmocka_unit_test(test_serialize_escaping_round_trip),
		cmocka_unit_test(test_parse_serialize_parse_round_trip),
		cmocka_unit_test(test_header_attributes_and_default_ns),
		cmocka_unit_test(test_header_without_default_ns),
		cmocka_unit_test(test_several_stanzas_in_one_feed),
		cmocka_unit_test(test_stanzas_split_byte_by_byte),
		cmocka_unit_test(test_stanzas_split_bytewise_with_release),
		cmocka_unit_test(test_prefixes_resolved),
		cmocka_unit_test(test_xml_lang_attribute),
		cmocka_unit_test(test_predefined_entities_and_char_refs),
		cmocka_unit_test(test_restricted_xml_rejected),
		cmocka_unit_test(test_entity_bomb_rejected_quickly),
		cmocka_unit_test(test_not_well_formed),
		cmocka_unit_test(test_text_at_stream_level),
		cmocka_unit_test(test_stop_consumed_then_restart),
		cmocka_unit_test(test_stop_byte_by_byte_consumed),
		cmocka_unit_test(test_stop_on_header_then_continue),
		cmocka_unit_test(test_restart_from_callback_continues),
		cmocka_unit_test(test_whitespace_before_restarted_header_is_dropped),
		cmocka_unit_test(test_whitespace_between_stanzas_still_fine),
		cmocka_unit_test(test_stream_close),
		cmocka_unit_test(test_limit_stanza_size),
		cmocka_unit_test(test_limit_endless_stanza),
		cmocka_unit_test(test_limit_override),
		cmocka_unit_test(test_limit_depth),
		cmocka_unit_test(test_limit_attributes),
		cmocka_unit_test(test_limit_header_size),
		cmocka_unit_test(test_limit_tree_memory),
		cmocka_unit_test(test_trickled_endless_tag_is_linear),
		cmocka_unit_test(test_trickled_long_tag_delivered_on_time),
		cmocka_unit_test(test_trickled_long_comment_refused),
		cmocka_unit_test(test_pool_release_and_reprime_custom_prefix),
		cmocka_unit_test(test_pool_standard_header_has_no_context),
		cmocka_unit_test(test_pool_release_is_noop_mid_stanza),
		cmocka_unit_test(test_pool_primed_parser_handed_between_streams),
		cmocka_unit_test(test_pool_many_streams_share),
		cmocka_unit_test(test_steady_state_no_malloc),
		cmocka_unit_test(test_long_stream_recycles_parser),
		cmocka_unit_test(test_status_conditions),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
