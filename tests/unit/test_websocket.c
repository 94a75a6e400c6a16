/* SPDX-License-Identifier: MIT */
/*
 * The RFC 6455 / RFC 7395 pieces that need no connection: the handshake
 * key (RFC 6455's own example), header token lists, frame headers both
 * ways (all three length forms, the forbidden top bit, partial input),
 * unmasking across pieces, and the output side that cuts c2s's XML into
 * one element per message and rewrites the stream header and end tag.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "strbuf.h"
#include "websocket.h"

/* RFC 6455 section 1.3. */
static void test_accept_key_matches_rfc6455_example(void **state)
{
	char out[WS_ACCEPT_LEN + 1];

	assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out), 0);
	assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_accept_key_refuses_bad_keys(void **state)
{
	char out[WS_ACCEPT_LEN + 1];

	assert_int_equal(ws_accept_key(NULL, out), -EINVAL);
	assert_int_equal(ws_accept_key("", out), -EINVAL);
	/* 15 and 17 bytes, not 16. */
	assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25j", out), -EINVAL);
	assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==AAAA", out), -EINVAL);
	assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25j*Q==", out), -EINVAL);
}

static void test_header_token_lists(void **state)
{
	assert_true(ws_header_has_token("xmpp", "xmpp"));
	assert_true(ws_header_has_token("chat, XMPP", "xmpp"));
	assert_true(ws_header_has_token("keep-alive, Upgrade", "upgrade"));
	assert_true(ws_header_has_token(" xmpp ,chat", "xmpp"));
	assert_false(ws_header_has_token("xmpp-ish", "xmpp"));
	assert_false(ws_header_has_token("notxmpp", "xmpp"));
	assert_false(ws_header_has_token("", "xmpp"));
}

static void test_frame_header_roundtrip_all_length_forms(void **state)
{
	static const uint64_t lens[] = { 0, 1, 125, 126, 65535, 65536, 1ull << 40 };

	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		uint8_t buf[WS_FRAME_HEADER_MAX];
		size_t n = ws_frame_header(buf, WS_OP_TEXT, true, lens[i]);
		struct ws_frame f;

		assert_int_equal(n, lens[i] < 126 ? 2 : lens[i] < 65536 ? 4 : 10);
		assert_int_equal(ws_frame_parse(buf, n, &f), 1);
		assert_true(f.fin);
		assert_false(f.masked);
		assert_int_equal(f.opcode, WS_OP_TEXT);
		assert_int_equal(f.len, lens[i]);
		assert_int_equal(f.header_len, n);
		/* Any prefix is "need more". */
		for (size_t k = 0; k < n; k++)
			assert_int_equal(ws_frame_parse(buf, k, &f), 0);
	}
}

static void test_frame_parse_reads_mask_rsv_and_opcode(void **state)
{
	const uint8_t d[] = { 0x49, 0x85, 1, 2, 3, 4, 'x' };	/* no FIN, RSV1, ping, masked */
	const uint8_t masked[] = { 0x81, 0xfe, 0x01, 0x00, 0xa, 0xb, 0xc, 0xd };
	struct ws_frame f;

	assert_int_equal(ws_frame_parse(d, sizeof(d), &f), 1);
	assert_false(f.fin);
	assert_int_equal(f.rsv, 4);
	assert_int_equal(f.opcode, WS_OP_PING);
	assert_true(f.masked);
	assert_int_equal(f.len, 5);
	assert_memory_equal(f.mask, "\1\2\3\4", 4);
	assert_int_equal(f.header_len, 6);

	assert_int_equal(ws_frame_parse(masked, sizeof(masked) - 1, &f), 0);
	assert_int_equal(ws_frame_parse(masked, sizeof(masked), &f), 1);
	assert_int_equal(f.len, 256);
	assert_int_equal(f.header_len, 8);
}

static void test_frame_parse_refuses_64bit_top_bit(void **state)
{
	uint8_t d[10] = { 0x81, 127, 0x80, 0, 0, 0, 0, 0, 0, 1 };
	struct ws_frame f;

	assert_int_equal(ws_frame_parse(d, sizeof(d), &f), -EPROTO);
}

static void test_unmask_in_pieces_equals_unmask_whole(void **state)
{
	const uint8_t mask[4] = { 0x37, 0xfa, 0x21, 0x3d };
	uint8_t whole[11], pieces[11];

	/* RFC 6455 5.7: "Hello" masked with 37 fa 21 3d. */
	memcpy(whole, "\x7f\x9f\x4d\x51\x58", 5);
	ws_unmask(whole, 5, mask, 0);
	assert_memory_equal(whole, "Hello", 5);

	memcpy(whole, "hello world", 11);
	memcpy(pieces, "hello world", 11);
	ws_unmask(whole, 11, mask, 0);
	ws_unmask(pieces, 3, mask, 0);
	ws_unmask(pieces + 3, 5, mask, 3);
	ws_unmask(pieces + 8, 3, mask, 8);
	assert_memory_equal(whole, pieces, 11);
}

/* ---- The output side ---- */

struct units {
	char *text[16];
	bool close[16];
	int n;
};

static int collect(void *arg, const char *text, size_t len, bool close)
{
	struct units *u = arg;

	assert_true(u->n < 16);
	u->text[u->n] = strndup(text, len);
	u->close[u->n] = close;
	u->n++;
	return 0;
}

static void units_free(struct units *u)
{
	for (int i = 0; i < u->n; i++)
		free(u->text[i]);
	u->n = 0;
}

static void feed(struct ws_out *o, struct strbuf *tmp, struct units *u, const char *s)
{
	assert_int_equal(ws_out_feed(o, tmp, s, strlen(s), collect, u), 0);
}

static void test_out_header_becomes_open(void **state)
{
	struct ws_out o = { 0 };
	struct strbuf tmp = STRBUF_INIT;
	struct units u = { 0 };

	feed(&o, &tmp, &u, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
	     "xmlns:stream='http://etherx.jabber.org/streams' id='abc' from='example.org' "
	     "version='1.0' xml:lang='en'>");
	assert_int_equal(u.n, 1);
	assert_string_equal(u.text[0], "<open xmlns='" NS_FRAMING "' id='abc' from='example.org' "
			    "version='1.0' xml:lang='en'/>");
	units_free(&u);
	ws_out_free(&o);
	strbuf_free(&tmp);
}

static void test_out_elements_get_their_namespaces(void **state)
{
	struct ws_out o = { 0 };
	struct strbuf tmp = STRBUF_INIT;
	struct units u = { 0 };

	feed(&o, &tmp, &u, "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
	     "</stream:features><message to='a@b' id='1'><body>x &gt; y</body></message>"
	     "<r xmlns='urn:xmpp:sm:3'/>");
	assert_int_equal(u.n, 3);
	assert_string_equal(u.text[0], "<stream:features xmlns:stream='http://etherx.jabber.org/"
			    "streams'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>");
	assert_string_equal(u.text[1], "<message xmlns='jabber:client' to='a@b' id='1'><body>"
			    "x &gt; y</body></message>");
	assert_string_equal(u.text[2], "<r xmlns='urn:xmpp:sm:3'/>");
	units_free(&u);
	ws_out_free(&o);
	strbuf_free(&tmp);
}

static void test_out_units_split_across_writes(void **state)
{
	struct ws_out o = { 0 };
	struct strbuf tmp = STRBUF_INIT;
	struct units u = { 0 };
	const char *s = "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/>"
			"</failure><iq type='result' id='a&apos;>b'/>";

	/* One byte at a time: nothing comes out early, everything comes out once. */
	for (size_t i = 0; s[i]; i++) {
		char one[2] = { s[i], 0 };

		feed(&o, &tmp, &u, one);
		if (i + 1 < strlen("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/>"
				   "</failure>"))
			assert_int_equal(u.n, 0);
	}
	assert_int_equal(u.n, 2);
	assert_string_equal(u.text[0], "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
			    "<not-authorized/></failure>");
	assert_string_equal(u.text[1], "<iq xmlns='jabber:client' type='result' id='a&apos;>b'/>");
	units_free(&u);
	ws_out_free(&o);
	strbuf_free(&tmp);
}

static void test_out_quotes_hide_angle_brackets(void **state)
{
	struct ws_out o = { 0 };
	struct strbuf tmp = STRBUF_INIT;
	struct units u = { 0 };

	/* A '>' or "/>" inside an attribute value ends nothing. */
	feed(&o, &tmp, &u, "<presence status=\"a/>b\" x='>'><show>away</show></presence>");
	assert_int_equal(u.n, 1);
	assert_string_equal(u.text[0], "<presence xmlns='jabber:client' status=\"a/>b\" x='>'>"
			    "<show>away</show></presence>");
	units_free(&u);
	ws_out_free(&o);
	strbuf_free(&tmp);
}

static void test_out_error_and_end_tag(void **state)
{
	struct ws_out o = { 0 };
	struct strbuf tmp = STRBUF_INIT;
	struct units u = { 0 };

	feed(&o, &tmp, &u, "<stream:stream xmlns='jabber:client' id='x'>");
	feed(&o, &tmp, &u, "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
	     "</stream:error></stream:stream>");
	assert_int_equal(u.n, 3);
	assert_string_equal(u.text[1], "<stream:error xmlns:stream='http://etherx.jabber.org/streams'>"
			    "<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>");
	assert_false(u.close[1]);
	assert_string_equal(u.text[2], "<close xmlns='" NS_FRAMING "'/>");
	assert_true(u.close[2]);
	units_free(&u);
	ws_out_free(&o);
	strbuf_free(&tmp);
}

static void test_out_keeps_an_existing_stream_declaration(void **state)
{
	struct ws_out o = { 0 };
	struct strbuf tmp = STRBUF_INIT;
	struct units u = { 0 };

	feed(&o, &tmp, &u, "  <stream:features xmlns:stream='http://etherx.jabber.org/streams'/> ");
	assert_int_equal(u.n, 1);
	assert_string_equal(u.text[0], "<stream:features xmlns:stream='http://etherx.jabber.org/"
			    "streams'/>");
	assert_int_equal(o.pend.len, 0);	/* the whitespace went too */
	units_free(&u);
	ws_out_free(&o);
	strbuf_free(&tmp);
}

static void test_out_refuses_comments(void **state)
{
	struct ws_out o = { 0 };
	struct strbuf tmp = STRBUF_INIT;
	struct units u = { 0 };

	assert_int_equal(ws_out_feed(&o, &tmp, "<!-- x -->", 10, collect, &u), -EPROTO);
	ws_out_free(&o);
	strbuf_free(&tmp);
}

static int stop_at_second(void *arg, const char *text, size_t len, bool close)
{
	int *n = arg;

	return ++*n == 2 ? -EPIPE : 0;
}

static void test_out_stops_on_emit_error(void **state)
{
	struct ws_out o = { 0 };
	struct strbuf tmp = STRBUF_INIT;
	int n = 0;

	assert_int_equal(ws_out_feed(&o, &tmp, "<a/><b/><c/>", 12, stop_at_second, &n), -EPIPE);
	assert_int_equal(n, 2);
	ws_out_free(&o);
	strbuf_free(&tmp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accept_key_matches_rfc6455_example),
		cmocka_unit_test(test_accept_key_refuses_bad_keys),
		cmocka_unit_test(test_header_token_lists),
		cmocka_unit_test(test_frame_header_roundtrip_all_length_forms),
		cmocka_unit_test(test_frame_parse_reads_mask_rsv_and_opcode),
		cmocka_unit_test(test_frame_parse_refuses_64bit_top_bit),
		cmocka_unit_test(test_unmask_in_pieces_equals_unmask_whole),
		cmocka_unit_test(test_out_header_becomes_open),
		cmocka_unit_test(test_out_elements_get_their_namespaces),
		cmocka_unit_test(test_out_units_split_across_writes),
		cmocka_unit_test(test_out_quotes_hide_angle_brackets),
		cmocka_unit_test(test_out_error_and_end_tag),
		cmocka_unit_test(test_out_keeps_an_existing_stream_declaration),
		cmocka_unit_test(test_out_refuses_comments),
		cmocka_unit_test(test_out_stops_on_emit_error),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
