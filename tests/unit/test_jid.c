/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for daemon/jid.c: RFC 7622 examples, normalization of each
 * part, limits, adversarial bytes, the accessors, and agreement between
 * the ASCII fast path and the libidn path.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <time.h>
#include <cmocka.h>

#define JID_TEST_HOOKS
#include "jid.h"

/* ---- helpers --------------------------------------------------------------- */

/* Compares a view of j->buf with an expected part (NULL = absent). */
static void assert_part(const char *what, const char *got, size_t got_len, const char *want)
{
	size_t want_len = want ? strlen(want) : 0;

	if (got_len != want_len || memcmp(got, want ? want : "", want_len) != 0) {
		print_error("%s: got \"%.*s\" want \"%s\"\n", what, (int)got_len, got,
			    want ? want : "(absent)");
		fail();
	}
}

/*
 * Parses in[0..len) on the automatic path and on the libidn-only path,
 * requires both to succeed with the same result and checks every part
 * and the assembled text.
 */
static void check_valid_n(const char *in, size_t len, const char *local, const char *domain,
			  const char *res)
{
	static struct jid j, s;
	char full[JID_MAX];

	if (jid_parse(&j, in, len) != 0) {
		print_error("rejected: \"%.*s\"\n", (int)len, in);
		fail();
	}
	assert_part("local", j.buf, j.local_len, local);
	assert_part("domain", j.buf + j.domain_off, j.domain_len, domain);
	assert_part("resource", j.buf + j.res_off, j.res_len, res);
	snprintf(full, sizeof(full), "%s%s%s%s%s", local ? local : "", local ? "@" : "", domain,
		 res ? "/" : "", res ? res : "");
	assert_string_equal(j.buf, full);
	assert_int_equal(j.len, strlen(full));

	assert_int_equal(jid_parse_with_path(&s, in, len, JID_PATH_SLOW), 0);
	assert_true(jid_equal(&j, &s));
}

static void check_valid(const char *in, const char *local, const char *domain, const char *res)
{
	check_valid_n(in, strlen(in), local, domain, res);
}

/* Requires -EINVAL on both paths and an emptied output. */
static void check_invalid_n(const char *in, size_t len)
{
	static struct jid j;

	if (jid_parse(&j, in, len) != -EINVAL) {
		print_error("accepted: \"%.*s\" as \"%s\"\n", (int)len, in, j.buf);
		fail();
	}
	assert_int_equal(j.len, 0);
	assert_string_equal(j.buf, "");
	assert_int_equal(jid_parse_with_path(&j, in, len, JID_PATH_SLOW), -EINVAL);
}

static void check_invalid(const char *in)
{
	check_invalid_n(in, strlen(in));
}

/* jid_prep_domain result, or NULL when rejected. */
static const char *prep_domain(const char *in)
{
	static char out[JID_PART_MAX + 1];

	return jid_prep_domain(out, sizeof(out), in, strlen(in)) == 0 ? out : NULL;
}

static const char *prep_local(const char *in, size_t len)
{
	static char out[JID_PART_MAX + 1];

	return jid_prep_local(out, sizeof(out), in, len) == 0 ? out : NULL;
}

static const char *prep_resource(const char *in, size_t len)
{
	static char out[JID_PART_MAX + 1];

	return jid_prep_resource(out, sizeof(out), in, len) == 0 ? out : NULL;
}

/* ---- RFC 7622 section 3.5 ---------------------------------------------------- */

static void rfc7622_table1_valid_jids(void **state)
{
	check_valid("juliet@example.com", "juliet", "example.com", NULL);
	check_valid("juliet@example.com/foo", "juliet", "example.com", "foo");
	check_valid("juliet@example.com/foo bar", "juliet", "example.com", "foo bar");
	check_valid("juliet@example.com/foo@bar", "juliet", "example.com", "foo@bar");
	check_valid("foo\\20bar@example.com", "foo\\20bar", "example.com", NULL);
	check_valid("fussball@example.com", "fussball", "example.com", NULL);
	/* Nodeprep case folding (B.2) maps sharp s to "ss", unlike PRECIS. */
	check_valid("fußball@example.com", "fussball", "example.com", NULL);
	check_valid("π@example.com", "π", "example.com", NULL);
	/* Capital, small and final sigma all fold to small sigma. */
	check_valid("Σ@example.com/foo", "σ", "example.com", "foo");
	check_valid("σ@example.com/foo", "σ", "example.com", "foo");
	check_valid("ς@example.com/foo", "σ", "example.com", "foo");
	check_valid("Σ@example.com", "σ", "example.com", NULL);
	check_valid("king@example.com/♚", "king", "example.com", "♚");
	check_valid("example.com", NULL, "example.com", NULL);
	check_valid("example.com/foobar", NULL, "example.com", "foobar");
	check_valid("a.example.com/b@example.net", NULL, "a.example.com", "b@example.net");
}

static void rfc7622_table2_invalid_jids(void **state)
{
	check_invalid("\"juliet\"@example.com");
	check_invalid("foo bar@example.com");
	check_invalid("@example.com/");
	check_invalid("juliet@");
	check_invalid("/foobar");
}

/*
 * Three Table 2 entries are PRECIS-specific. Under the stringprep profiles
 * the deployed network uses, they are valid, and this pins what we do:
 * a leading space is fine in Resourceprep (RFC errata 4560 says the entry
 * is wrong under PRECIS too), ROMAN NUMERAL FOUR is folded and NFKC'd to
 * "iv", and Nodeprep does not prohibit symbols such as the chess king.
 */
static void rfc7622_table2_entries_valid_under_stringprep(void **state)
{
	check_valid("juliet@example.com/ foo", "juliet", "example.com", " foo");
	check_valid("henri\u2163@example.com", "henriiv", "example.com", NULL);
	check_valid("♚@example.com", "♚", "example.com", NULL);
}

/* Prosody's util.jid spec cases, which every deployed server agrees on. */
static void split_rules_match_deployed_servers(void **state)
{
	check_valid("server/resource@foo", NULL, "server", "resource@foo");
	check_valid("server/resource@foo/bar", NULL, "server", "resource@foo/bar");
	check_invalid("node@/server");
	check_invalid("@server");
	check_invalid("@server/resource");
	check_invalid("@/resource");
	check_invalid("@/");
	check_invalid("/");
	check_invalid("@");
	check_invalid("user@@");
	check_invalid("user@@host");
	check_invalid("user@@host/resource");
	check_invalid("user@@host/");
}

/* ---- normalization ---------------------------------------------------------- */

static void localpart_is_case_folded(void **state)
{
	check_valid("JuLiEt@example.com", "juliet", "example.com", NULL);
	check_valid("ÉLODIE@example.com", "élodie", "example.com", NULL);
	check_valid("ΑΘΗΝΑ@example.com", "αθηνα", "example.com", NULL);
}

static void domainpart_is_lowercased(void **state)
{
	check_valid("juliet@EXAMPLE.Com", "juliet", "example.com", NULL);
	check_valid("EXAMPLE.COM/Res", NULL, "example.com", "Res");
}

static void resourcepart_keeps_case_and_symbols(void **state)
{
	check_valid("a@b.example/Balcony ÉTÉ", "a", "b.example", "Balcony ÉTÉ");
	check_valid("a@b.example/x/y@z/", "a", "b.example", "x/y@z/");
	check_valid("a@b.example/@", "a", "b.example", "@");
	/* NFKC still applies: fullwidth A becomes A, case kept. */
	check_valid("a@b.example/\uff21", "a", "b.example", "A");
}

static void resource_may_contain_at_and_slash(void **state)
{
	check_valid("juliet@example.com/a@b/c@d", "juliet", "example.com", "a@b/c@d");
	check_valid("example.com/@/", NULL, "example.com", "@/");
}

static void domain_with_at_sign_is_rejected(void **state)
{
	check_invalid("a@b@example.com");
	check_invalid("a@b@example.com/r");
	assert_null(prep_domain("b@example.com"));
}

static void trailing_dot_is_stripped_once(void **state)
{
	check_valid("juliet@example.com.", "juliet", "example.com", NULL);
	check_valid("juliet@example.com./r", "juliet", "example.com", "r");
	check_valid("Example.COM.", NULL, "example.com", NULL);
	check_invalid("juliet@example.com..");
	check_invalid("juliet@.");
	check_invalid(".");
	check_invalid("juliet@.example.com");
	check_invalid("juliet@example..com");
	assert_string_equal(prep_domain("example.com."), "example.com");
}

static void ipv4_literal_is_kept(void **state)
{
	check_valid("user@192.0.2.1/r", "user", "192.0.2.1", "r");
	check_valid("203.0.113.255", NULL, "203.0.113.255", NULL);
	check_valid("user@192.0.2.1.", "user", "192.0.2.1", NULL);
	assert_string_equal(prep_domain("127.0.0.1"), "127.0.0.1");
}

/* Forms inet_aton/getaddrinfo would read as an address must not pass as names. */
static void numeric_looking_domains_are_rejected(void **state)
{
	check_invalid("user@192.0.2.01");
	check_invalid("user@192.0.2.256");
	check_invalid("user@1.2.3");
	check_invalid("user@127.1");
	check_invalid("user@1.2.3.4.5");
	check_invalid("user@2130706433");
	check_invalid("user@0x7f000001");
	check_invalid("user@0x7f.0.0.1");
	check_invalid("user@0X7F.1");
	check_invalid("user@example.123");
	check_valid("user@123.example", "user", "123.example", NULL);
	check_valid("user@0xcafe.example", "user", "0xcafe.example", NULL);
	check_valid("user@1a.2b", "user", "1a.2b", NULL);
}

static void ipv6_literal_is_canonicalized(void **state)
{
	check_valid("user@[::1]/r", "user", "[::1]", "r");
	check_valid("[2001:DB8::1]", NULL, "[2001:db8::1]", NULL);
	check_valid("[2001:0db8:0:0:0:0:0:1]", NULL, "[2001:db8::1]", NULL);
	check_valid("[::ffff:192.0.2.1]", NULL, "[::ffff:192.0.2.1]", NULL);
	check_valid("user@[::1].", "user", "[::1]", NULL);
	assert_string_equal(prep_domain("[0:0::A]"), "[::a]");
}

static void malformed_ipv6_is_rejected(void **state)
{
	check_invalid("user@[::1");
	check_invalid("user@::1");
	check_invalid("user@[::1]x");
	check_invalid("user@[]");
	check_invalid("user@[");
	check_invalid("user@[fe80::1%eth0]");
	check_invalid("user@[::g]");
	check_invalid("user@[1.2.3.4]");
	check_invalid("user@[1:2:3:4:5:6:7:8:9]");
	check_invalid("user@x[::1]");
	check_invalid_n("user@[::1\0]", 11);
}

static void idn_domain_is_stored_as_u_labels(void **state)
{
	static struct jid a, b, c, d, e;

	check_valid("user@ÉXAMPLE.com", "user", "éxample.com", NULL);
	check_valid("user@bücher.example/r", "user", "bücher.example", "r");
	/* A-labels in any case decode to the same U-label. */
	check_valid("user@xn--bcher-kva.example", "user", "bücher.example", NULL);
	check_valid("user@XN--BCHER-KVA.EXAMPLE", "user", "bücher.example", NULL);
	/* IDNA2003 label separators: ideographic and fullwidth full stops. */
	check_valid("user@bücher\u3002example", "user", "bücher.example", NULL);
	check_valid("user@bücher\uff0eexample", "user", "bücher.example", NULL);
	/* NFKC: fullwidth letters become ASCII. */
	check_valid("user@\uff45\uff58.com", "user", "ex.com", NULL);

	assert_int_equal(jid_parse(&a, "u@bücher.example", strlen("u@bücher.example")), 0);
	assert_int_equal(jid_parse(&b, "u@xn--bcher-kva.example", 23), 0);
	assert_int_equal(jid_parse(&c, "u@BÜCHER.EXAMPLE.", strlen("u@BÜCHER.EXAMPLE.")), 0);
	assert_int_equal(jid_parse(&d, "U@Xn--Bcher-Kva.Example", 23), 0);
	assert_int_equal(jid_parse(&e, "u@bucher.example", 16), 0);
	assert_true(jid_equal(&a, &b));
	assert_true(jid_equal(&a, &c));
	assert_true(jid_equal(&a, &d));
	assert_false(jid_equal(&a, &e));
	assert_string_equal(prep_domain("XN--BCHER-KVA.example."), "bücher.example");
}

/* n u-umlauts then ".example". */
static const char *umlaut_domain(size_t n)
{
	static char dom[256];
	size_t i;

	for (i = 0; i < n; i++)
		memcpy(dom + 2 * i, "\xc3\xbc", 2);
	memcpy(dom + 2 * n, ".example", 9);
	return dom;
}

static void bad_idn_labels_are_rejected(void **state)
{

	/* Fake A-labels: bad Punycode, decodes to ASCII, not a round trip. */
	check_invalid("user@xn--abc-.example");
	check_invalid("user@xn--.example");
	check_invalid("user@xn--a.example");
	check_invalid("user@xn--ab--.example");
	check_invalid("user@xn--.example/r");
	check_invalid("user@xn--zz\xc3\xbc.example");
	/* Hyphen at a label edge, in U-labels too. */
	check_invalid("user@-bücher.example");
	check_invalid("user@bücher-.example");
	/* Characters outside host names survive Nameprep: still rejected. */
	check_invalid("user@b\xc3\xbc cher.example");
	check_invalid("user@bü!cher.example");
	/* A right-to-left label mixed with left-to-right letters. */
	check_invalid("user@\xd7\x90" "a.example");
	/* Fullwidth solidus maps to '/' under NFKC: not a host name character. */
	check_invalid("user@a\uff0fb.example");

	/*
	 * The 63-byte limit applies to the A-label: 40 u-umlauts are 80 bytes
	 * of UTF-8 but "xn--" + 46 bytes of Punycode; 60 are too many.
	 */
	assert_non_null(prep_domain(umlaut_domain(40)));
	assert_int_equal(strlen(prep_domain(umlaut_domain(40))), 80 + 8);
	assert_null(prep_domain(umlaut_domain(60)));
}

static void underscore_is_tolerated_in_domains(void **state)
{
	check_valid("_xmpp-client._tcp.example.com", NULL, "_xmpp-client._tcp.example.com", NULL);
	check_valid("user@pubsub_1.Example", "user", "pubsub_1.example", NULL);
	check_valid("user@b\xc3\xbc_cher.example", "user", "b\xc3\xbc_cher.example", NULL);
}

static void domain_labels_follow_hostname_rules(void **state)
{
	char label[80];

	check_invalid("user@-example.com");
	check_invalid("user@example-.com");
	check_invalid("user@exa mple.com");
	check_invalid("user@exa*mple.com");
	check_invalid("user@exa:5222");
	check_valid("user@a-b--c.example", "user", "a-b--c.example", NULL);
	check_valid("localhost", NULL, "localhost", NULL);

	memset(label, 'a', 63);
	memcpy(label + 63, ".com", 5);
	assert_non_null(prep_domain(label));
	memset(label, 'a', 64);
	memcpy(label + 64, ".com", 5);
	assert_null(prep_domain(label));
}

/* ---- limits ------------------------------------------------------------------- */

/* prefix, n bytes of 'a', suffix; returns the length. */
static size_t make_part_jid(char *buf, const char *prefix, size_t n, const char *suffix)
{
	size_t p = strlen(prefix), s = strlen(suffix);

	memcpy(buf, prefix, p);
	memset(buf + p, 'a', n);
	memcpy(buf + p + n, suffix, s + 1);
	return p + n + s;
}

/* n bytes of domain: 'a' with a '.' every 62 bytes (labels of 61). */
static void make_domain(char *buf, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		buf[i] = i % 62 == 61 ? '.' : 'a';
	buf[n] = '\0';
}

static void parts_of_1023_bytes_ok_1024_rejected(void **state)
{
	static char buf[4 * JID_PART_RAW_MAX];
	static struct jid j;
	size_t n;

	n = make_part_jid(buf, "", 1023, "@example.com");
	assert_int_equal(jid_parse(&j, buf, n), 0);
	assert_int_equal(j.local_len, 1023);
	n = make_part_jid(buf, "", 1024, "@example.com");
	check_invalid_n(buf, n);

	n = make_part_jid(buf, "u@example.com/", 1023, "");
	assert_int_equal(jid_parse(&j, buf, n), 0);
	assert_int_equal(j.res_len, 1023);
	n = make_part_jid(buf, "u@example.com/", 1024, "");
	check_invalid_n(buf, n);

	make_domain(buf, 1023);
	assert_int_equal(jid_parse(&j, buf, 1023), 0);
	assert_int_equal(j.domain_len, 1023);
	make_domain(buf, 1024);
	check_invalid_n(buf, 1024);
	/* Far beyond any part limit: refused before it is scanned. */
	memset(buf, 'a', sizeof(buf));
	check_invalid_n(buf, sizeof(buf));
	assert_int_equal(jid_parse(&j, buf, (size_t)-1), -EINVAL);
	/* The trailing dot is not part of the domainpart. */
	make_domain(buf, 1023);
	buf[1023] = '.';
	assert_int_equal(jid_parse(&j, buf, 1024), 0);
	assert_int_equal(j.domain_len, 1023);
}

static void largest_jid_fits_the_buffer(void **state)
{
	static char buf[2 * JID_MAX];
	static struct jid j;
	size_t n;

	n = make_part_jid(buf, "", 1023, "@");
	make_domain(buf + n, 1023);
	n += 1023;
	n += (size_t)sprintf(buf + n, "/");
	n = make_part_jid(buf + n, "", 1023, "") + n;
	assert_int_equal(jid_parse(&j, buf, n), 0);
	assert_int_equal(j.len, JID_MAX - 1);
	assert_int_equal(strlen(j.buf), JID_MAX - 1);
	assert_int_equal(j.res_off + j.res_len, JID_MAX - 1);
}

/* RFC 7622: the limits hold after preparation, not on the raw input. */
static void length_is_measured_after_preparation(void **state)
{
	static char buf[2 * JID_PART_RAW_MAX];
	size_t i, n;

	/* U+FDFA expands to 33 bytes under NFKC: 31 fit, 32 do not. */
	for (n = 0, i = 0; i < 31; i++)
		n += (size_t)sprintf(buf + n, "\ufdfa");
	assert_non_null(prep_resource(buf, n));
	assert_int_equal(strlen(prep_resource(buf, n)), 1023);
	n += (size_t)sprintf(buf + n, "\ufdfa");
	assert_null(prep_resource(buf, n));

	/* Soft hyphens are mapped to nothing: 1023 letters + 2 hyphens fit. */
	memset(buf, 'a', 1023);
	memcpy(buf + 1023, "\u00ad\u00ad", 4);
	assert_non_null(prep_local(buf, 1027));
	assert_int_equal(strlen(prep_local(buf, 1027)), 1023);

	/*
	 * Capital I with dot (2 bytes) folds to i + U+0307 (3 bytes): 341 of
	 * them (682 raw bytes) prepare to 1023 bytes, 342 to 1026.
	 */
	for (n = 0, i = 0; i < 341; i++)
		n += (size_t)sprintf(buf + n, "\u0130");
	assert_non_null(prep_local(buf, n));
	assert_int_equal(strlen(prep_local(buf, n)), 1023);
	n += (size_t)sprintf(buf + n, "\u0130");
	assert_null(prep_local(buf, n));

	/* Raw input is bounded too, whatever it would prepare to. */
	for (n = 0; n + 2 <= JID_PART_RAW_MAX; n += 2)
		memcpy(buf + n, "\u00ad", 2);
	buf[n++] = 'a';
	assert_null(prep_local(buf, n));
	assert_string_equal(prep_local(buf + 4, n - 4), "a");
}

static void empty_parts_are_rejected(void **state)
{
	char out[16];

	check_invalid("");
	check_invalid_n(NULL, 0);
	check_invalid("@example.com");
	check_invalid("user@");
	check_invalid("user@/r");
	check_invalid("user@example.com/");
	check_invalid("/r");
	check_invalid("@/");
	/* Parts that prepare to nothing (only characters mapped to nothing). */
	check_invalid("\u00ad@example.com");
	check_invalid("user@example.com/\u200b");
	check_invalid("user@\u00ad.example");
	assert_int_equal(jid_prep_local(out, sizeof(out), "", 0), -EINVAL);
	assert_int_equal(jid_prep_resource(out, sizeof(out), "", 0), -EINVAL);
	assert_int_equal(jid_prep_domain(out, sizeof(out), "", 0), -EINVAL);
	assert_int_equal(jid_prep_domain(out, sizeof(out), ".", 1), -EINVAL);
}

/* ---- adversarial bytes ----------------------------------------------------------- */

static void embedded_nul_is_rejected(void **state)
{
	char out[64];

	check_invalid_n("us\0er@example.com", 17);
	check_invalid_n("\0@example.com", 13);
	check_invalid_n("user@exa\0mple.com", 17);
	check_invalid_n("user@example.com\0", 17);
	check_invalid_n("user@example.com/r\0s", 20);
	check_invalid_n("user@example.com/\0", 18);
	check_invalid_n("user\0@example.com/r\xc3\xa9", 20);
	assert_int_equal(jid_prep_local(out, sizeof(out), "a\0b", 3), -EINVAL);
	assert_int_equal(jid_prep_resource(out, sizeof(out), "a\0b", 3), -EINVAL);
	assert_int_equal(jid_prep_domain(out, sizeof(out), "a\0b", 3), -EINVAL);
}

static void bad_utf8_is_rejected(void **state)
{
	static const char *const bad[] = {
		"\x80",			/* lone continuation byte */
		"\xc3",			/* truncated two-byte sequence */
		"\xe2\x82",		/* truncated three-byte sequence */
		"\xc0\xaf",		/* overlong '/' */
		"\xe0\x80\xaf",		/* overlong '/' */
		"\xf0\x80\x80\xaf",	/* overlong '/' */
		"\xc0\x80",		/* overlong NUL */
		"\xed\xa0\x80",		/* UTF-16 surrogate */
		"\xf4\x90\x80\x80",	/* above U+10FFFF */
		"\xf8\x88\x80\x80\x80",	/* five-byte form */
		"\xfe",
		"\xff",
		"\xc3\x28",		/* continuation missing */
	};
	char buf[64];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(buf, sizeof(buf), "a%sb@example.com", bad[i]);
		check_invalid(buf);
		snprintf(buf, sizeof(buf), "user@a%sb.example", bad[i]);
		check_invalid(buf);
		snprintf(buf, sizeof(buf), "user@example.com/a%sb", bad[i]);
		check_invalid(buf);
		snprintf(buf, sizeof(buf), "user@example.com/%s", bad[i]);
		check_invalid(buf);
	}
}

static void prohibited_localpart_characters_are_rejected(void **state)
{
	/* RFC 3920 A.5 ASCII exclusions, space, controls, then Unicode tables. */
	static const char *const bad[] = {
		"a\"b", "a&b", "a'b", "a/b", "a:b", "a<b", "a>b", "a@b", "a b",
		"a\x7f" "b", "a\x01" "b", "a\tb", "a\nb",
		"a\u00a0b",		/* C.1.2 non-ASCII space */
		"a\u3000b",		/* C.1.2 ideographic space */
		"a\xc2\x85" "b",	/* C.2.2 control U+0085 */
		"a\ue000b",		/* C.3 private use */
		"a\xef\xbf\xbf" "b",	/* C.4 non-character U+FFFF */
		"a\u200eb",		/* C.8 left-to-right mark */
		"a\xf3\xa0\x80\x81" "b",	/* C.9 language tag U+E0001 */
		"a\xc8\xa1" "b",	/* U+0221, unassigned in Unicode 3.2 */
		"a\xf0\x9f\x98\x80" "b",	/* emoji, unassigned in Unicode 3.2 */
		"\xd7\x90" "a",		/* Hebrew then Latin: bidi rule */
		"a\uff20b",		/* fullwidth '@' maps to '@' */
		"a\uff02b",		/* fullwidth '"' maps to '"' */
	};
	char buf[64];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (prep_local(bad[i], strlen(bad[i]))) {
			print_error("accepted localpart \"%s\"\n", bad[i]);
			fail();
		}
		if (strchr(bad[i], '@') || strchr(bad[i], '/'))
			continue;	/* these split the JID differently */
		snprintf(buf, sizeof(buf), "%s@example.com", bad[i]);
		check_invalid(buf);
	}
	/* Allowed: the rest of printable ASCII, including the escapes' '\'. */
	assert_string_equal(prep_local("!#$%()*+,-.;=?[\\]^_`{|}~", 24),
			    "!#$%()*+,-.;=?[\\]^_`{|}~");
}

static void prohibited_resource_characters_are_rejected(void **state)
{
	static const char *const bad[] = {
		"a\x7f", "a\x01", "a\tb", "\r\n", "a\ue000b", "a\u200eb", "a\u2028b",
	};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_null(prep_resource(bad[i], strlen(bad[i])));
	/* Unassigned code points are allowed in resources (see jid.h). */
	assert_string_equal(prep_resource("phone \xf0\x9f\x98\x80", 10),
			    "phone \xf0\x9f\x98\x80");
	assert_string_equal(prep_resource(" \"&'/:<>@ ", 10), " \"&'/:<>@ ");
	/* Prohibition applies after NFKC: no-break space becomes a space. */
	assert_string_equal(prep_resource("a\u00a0b", 4), "a b");
}

/*
 * '<' is prohibited in a localpart but '<' + U+0338 composes to U+226E,
 * which is not: the fast path must not reject a part on an ASCII byte
 * when non-ASCII follows.
 */
static void combining_mark_after_ascii_goes_to_libidn(void **state)
{
	static struct jid j;
	const char *in = "a<\u0338b@example.com";

	check_valid(in, "a\u226eb", "example.com", NULL);
	assert_int_equal(jid_parse_with_path(&j, in, strlen(in), JID_PATH_FAST), -EAGAIN);
	check_valid("a@x=\u0338y.example", "a", "x\u2260y.example", NULL);
}

/* ---- accessors ---------------------------------------------------------------- */

static void bare_str_copies_local_and_domain(void **state)
{
	static struct jid j;
	char out[JID_MAX], small[8];

	assert_int_equal(jid_parse(&j, "Juliet@Example.com/Balcony", 26), 0);
	assert_int_equal(jid_bare_str(&j, out, sizeof(out)), 0);
	assert_string_equal(out, "juliet@example.com");
	/* Too small: empty, never a truncated (possibly valid) JID. */
	memset(small, 'x', sizeof(small));
	assert_int_equal(jid_bare_str(&j, small, sizeof(small)), -ENOSPC);
	assert_string_equal(small, "");
	assert_int_equal(jid_bare_str(&j, out, 18), -ENOSPC);
	assert_int_equal(jid_bare_str(&j, out, 19), 0);
	assert_string_equal(out, "juliet@example.com");

	assert_int_equal(jid_parse(&j, "example.com/r", 13), 0);
	assert_int_equal(jid_bare_str(&j, out, sizeof(out)), 0);
	assert_string_equal(out, "example.com");
}

static void to_bare_drops_the_resource(void **state)
{
	static struct jid j, b;

	assert_int_equal(jid_parse(&j, "juliet@example.com/balcony", 26), 0);
	assert_true(jid_has_resource(&j));
	jid_to_bare(&j);
	assert_false(jid_has_resource(&j));
	assert_true(jid_has_local(&j));
	assert_string_equal(j.buf, "juliet@example.com");
	assert_int_equal(j.len, 18);
	assert_int_equal(jid_parse(&b, "juliet@example.com", 18), 0);
	assert_true(jid_equal(&j, &b));
	/* Idempotent, and fine on a bare JID. */
	jid_to_bare(&j);
	assert_true(jid_equal(&j, &b));
}

static void equal_compares_normalized_forms(void **state)
{
	static struct jid a, b, c, d;

	assert_int_equal(jid_parse(&a, "Juliet@EXAMPLE.com./balcony", 27), 0);
	assert_int_equal(jid_parse(&b, "juliet@example.com/balcony", 26), 0);
	assert_int_equal(jid_parse(&c, "juliet@example.com/Balcony", 26), 0);
	assert_int_equal(jid_parse(&d, "juliet@example.com", 18), 0);
	assert_true(jid_equal(&a, &b));
	assert_false(jid_equal(&b, &c));
	assert_false(jid_equal(&b, &d));
	assert_true(jid_bare_equal(&b, &c));
	assert_true(jid_bare_equal(&b, &d));
	assert_true(jid_bare_equal(&a, &d));

	/* Same bytes, different split: never equal. */
	assert_int_equal(jid_parse(&a, "example.com/a@b", 15), 0);
	assert_int_equal(jid_parse(&b, "a@example.com", 13), 0);
	assert_false(jid_bare_equal(&a, &b));
	assert_int_equal(jid_parse(&a, "a@b/c", 5), 0);
	assert_int_equal(jid_parse(&b, "a@b/c/", 6), 0);
	assert_false(jid_equal(&a, &b));
}

static void from_parts_normalizes_each_part(void **state)
{
	static struct jid j, p;

	assert_int_equal(jid_from_parts(&j, "Juliet", "Example.COM.", "Balcony"), 0);
	assert_string_equal(j.buf, "juliet@example.com/Balcony");
	assert_int_equal(jid_parse(&p, "juliet@example.com/Balcony", 26), 0);
	assert_true(jid_equal(&j, &p));
	assert_int_equal(j.local_len, p.local_len);
	assert_int_equal(j.domain_off, p.domain_off);
	assert_int_equal(j.res_off, p.res_off);

	assert_int_equal(jid_from_parts(&j, NULL, "example.com", NULL), 0);
	assert_string_equal(j.buf, "example.com");
	assert_false(jid_has_local(&j));
	assert_int_equal(jid_from_parts(&j, NULL, "bücher.example", "x/y@z"), 0);
	assert_string_equal(j.buf, "bücher.example/x/y@z");
	assert_int_equal(jid_from_parts(&j, "fußball", "xn--bcher-kva.example", NULL), 0);
	assert_string_equal(j.buf, "fussball@bücher.example");

	assert_int_equal(jid_from_parts(&j, "", "example.com", NULL), -EINVAL);
	assert_int_equal(j.len, 0);
	assert_int_equal(jid_from_parts(&j, "a", "example.com", ""), -EINVAL);
	assert_int_equal(jid_from_parts(&j, "a@b", "example.com", NULL), -EINVAL);
	assert_int_equal(jid_from_parts(&j, "a/b", "example.com", NULL), -EINVAL);
	assert_int_equal(jid_from_parts(&j, "a", "b/c", NULL), -EINVAL);
	assert_int_equal(jid_from_parts(&j, "a", NULL, NULL), -EINVAL);
}

static void prep_functions_write_strings(void **state)
{
	char out[32], tiny[4];

	assert_int_equal(jid_prep_local(out, sizeof(out), "SASL.User", 9), 0);
	assert_string_equal(out, "sasl.user");
	assert_int_equal(jid_prep_resource(out, sizeof(out), "Gajim.X", 7), 0);
	assert_string_equal(out, "Gajim.X");
	assert_int_equal(jid_prep_domain(out, sizeof(out), "Chat.Example.", 13), 0);
	assert_string_equal(out, "chat.example");
	/* Length honoured: no reading past len. */
	assert_int_equal(jid_prep_local(out, sizeof(out), "abcdef", 3), 0);
	assert_string_equal(out, "abc");

	memset(tiny, 'x', sizeof(tiny));
	assert_int_equal(jid_prep_local(tiny, sizeof(tiny), "abcd", 4), -ENOSPC);
	assert_string_equal(tiny, "");
	assert_int_equal(jid_prep_local(tiny, sizeof(tiny), "abc", 3), 0);
	assert_string_equal(tiny, "abc");
	assert_int_equal(jid_prep_local(tiny, 0, "abc", 3), -ENOSPC);
	memset(out, 'x', sizeof(out));
	assert_int_equal(jid_prep_local(out, sizeof(out), "a b", 3), -EINVAL);
	assert_string_equal(out, "");
	assert_int_equal(jid_prep_local(out, sizeof(out), NULL, 0), -EINVAL);
}

/* ---- fast path against libidn ---------------------------------------------------- */

/*
 * Compares the ASCII fast path with the libidn path on one input. Returns
 * 1 when the fast path decided it, 0 when it deferred (-EAGAIN), and
 * counts valid results in *valid.
 */
static int compare_paths(const char *in, size_t len, unsigned *valid)
{
	static struct jid f, s;
	int rf, rs;

	rf = jid_parse_with_path(&f, in, len, JID_PATH_FAST);
	rs = jid_parse_with_path(&s, in, len, JID_PATH_SLOW);
	if (rf == -EAGAIN)
		return 0;
	if (rf != rs || (rf == 0 && (!jid_equal(&f, &s) || f.local_len != s.local_len ||
				     f.domain_off != s.domain_off || f.res_off != s.res_off))) {
		print_error("paths disagree on \"%.*s\": fast %d \"%s\", libidn %d \"%s\"\n",
			    (int)len, in, rf, f.buf, rs, s.buf);
		fail();
	}
	if (rf == 0)
		(*valid)++;
	return 1;
}

/* Every ASCII byte (put where the shape has '#'), in every part. */
static void fast_path_matches_libidn_for_every_ascii_byte(void **state)
{
	static const char *const shapes[] = {
		"a#b@example.com", "#@example.com", "a#@example.com", "#a@b",
		"u@a#b.example", "u@#.example", "u@#b.example", "u@a.#", "#", "a.#",
		"u@example.com/a#b", "u@example.com/#", "example.com/##", "u@b#/c",
	};
	char buf[64];
	unsigned valid = 0, decided = 0, total = 0;
	size_t i, k;
	int c;

	for (i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
		for (c = 1; c < 128; c++) {
			for (k = 0; shapes[i][k]; k++)
				buf[k] = shapes[i][k] == '#' ? (char)c : shapes[i][k];
			decided += (unsigned)compare_paths(buf, k, &valid);
			total++;
		}
	}
	/* No "xn--" here: the fast path must have decided every case. */
	assert_int_equal(decided, total);
	assert_true(valid > total / 4 && valid < total);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state >> 32);
}

/*
 * A random piece: mostly letters and digits; `noise` percent of the
 * characters are specials, any ASCII byte, or chunks such as "xn--".
 */
static size_t random_piece(char *out, size_t max, uint32_t noise)
{
	static const char common[] = "abcXYZ019-_.";
	static const char special[] = "@/ \"&'<>:[]\\%*!~=";
	static const char *const chunks[] = { "xn--", "XN--bcher-kva", "xn--bcher-kva",
					       "[::1]", "127.0.0.1", "0x7f", "..", "-" };
	size_t n = rng() % max, i = 0;

	while (i < n) {
		uint32_t r = rng() % 100;

		if (r >= noise) {
			out[i++] = common[rng() % (sizeof(common) - 1)];
		} else if (r < noise / 2) {
			out[i++] = special[rng() % (sizeof(special) - 1)];
		} else if (r < noise * 3 / 4) {
			out[i++] = (char)(1 + rng() % 127);
		} else {
			const char *ch = chunks[rng() % (sizeof(chunks) / sizeof(chunks[0]))];
			size_t l = strlen(ch);

			if (i + l > max)
				break;
			memcpy(out + i, ch, l);
			i += l;
		}
	}
	return i;
}

static void fast_path_matches_libidn_on_random_ascii(void **state)
{
	char buf[128];
	unsigned valid = 0, decided = 0, round;
	const unsigned rounds = 30000;
	size_t n;

	for (round = 0; round < rounds; round++) {
		if (round % 3 == 0) {
			/* Free-form: any shape at all. */
			n = random_piece(buf, 40, 30);
		} else {
			/* Structured: [local@]domain[/resource], parts random. */
			n = 0;
			if (rng() % 4) {
				n += random_piece(buf + n, 12, 8);
				buf[n++] = '@';
			}
			n += random_piece(buf + n, 30, 8);
			if (rng() % 2) {
				buf[n++] = '/';
				n += random_piece(buf + n, 20, 8);
			}
		}
		decided += (unsigned)compare_paths(buf, n, &valid);
	}
	/* The fast path must carry nearly all ASCII input, valid or not. */
	print_message("%u random inputs: %u decided by the fast path, %u valid\n", rounds,
		      decided, valid);
	assert_true(decided > rounds * 9 / 10);
	assert_true(valid > rounds / 8);
	assert_true(valid < decided * 9 / 10);
}

/*
 * Any bytes at all: the automatic path (fast path per ASCII part, libidn
 * for the rest) must give exactly what libidn alone gives. Catches a fast
 * path that rejects a part libidn would accept once non-ASCII follows.
 */
static void auto_path_matches_libidn_on_random_utf8(void **state)
{
	static const char *const tokens[] = {
		"a", "Z", "0", ".", "-", "_", "@", "/", " ", "<", ">", "=", "\"", "xn--",
		"\u00e9", "\u0301", "\u0338", "\u00ad", "\u00df", "\u0130", "\u03a3",
		"\u3002", "\uff0e", "\uff20", "\u2163", "\u05d0", "\u200e", "\ufdfa",
		"\xf0\x9f\x98\x80", "\xff", "\xc3", "\xed\xa0\x80", "\xc0\xaf",
	};
	static struct jid a, s;
	char buf[256];
	unsigned round, valid = 0;
	int ra, rs;

	for (round = 0; round < 20000; round++) {
		size_t n = 0, k = 1 + rng() % 24;

		while (k--) {
			const char *t = tokens[rng() % (sizeof(tokens) / sizeof(tokens[0]))];

			/* Bias towards letters so that valid JIDs come up often. */
			if (rng() % 2)
				t = "a";
			memcpy(buf + n, t, strlen(t));
			n += strlen(t);
		}
		ra = jid_parse(&a, buf, n);
		rs = jid_parse_with_path(&s, buf, n, JID_PATH_SLOW);
		if (ra != rs || (ra == 0 && !jid_equal(&a, &s))) {
			print_error("paths disagree on \"%.*s\": auto %d \"%s\", libidn %d \"%s\"\n",
				    (int)n, buf, ra, a.buf, rs, s.buf);
			fail();
		}
		valid += ra == 0;
	}
	assert_true(valid > 1000);
}

static void fast_path_covers_plain_jids(void **state)
{
	static const char *const plain[] = {
		"user@example.com/res", "User@Example.COM", "example.com",
		"conference.example.org/Nick Name", "a.b-c_d@e.f/g@h/i", "[::1]", "10.0.0.1",
	};
	static struct jid j;
	size_t i;

	for (i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
		assert_int_equal(jid_parse_with_path(&j, plain[i], strlen(plain[i]),
						     JID_PATH_FAST), 0);
	/* And defers what it cannot decide alone. */
	assert_int_equal(jid_parse_with_path(&j, "é@x.example", 12, JID_PATH_FAST), -EAGAIN);
	assert_int_equal(jid_parse_with_path(&j, "u@xn--bcher-kva.example", 23, JID_PATH_FAST),
			 -EAGAIN);
	assert_int_equal(jid_parse_with_path(&j, "u@x.example/é", 14, JID_PATH_FAST), -EAGAIN);
}

/* ---- threads and timing ------------------------------------------------------------- */

struct thread_arg {
	int failures;
};

static void *parse_thread(void *p)
{
	struct thread_arg *arg = p;
	static const char *const in[] = { "Fußball@BÜCHER.example/Ré", "u@XN--BCHER-KVA.example",
					  "user@example.com/res" };
	static const char *const want[] = { "fussball@bücher.example/Ré", "u@bücher.example",
					    "user@example.com/res" };
	struct jid *j = malloc(sizeof(*j));	/* test_malloc is not thread-safe */
	int i;

	if (!j) {
		arg->failures++;
		return NULL;
	}
	for (i = 0; i < 3000; i++) {
		size_t k = (size_t)i % 3;

		if (jid_parse(j, in[k], strlen(in[k])) != 0 || strcmp(j->buf, want[k]) != 0)
			arg->failures++;
	}
	free(j);
	return NULL;
}

static void parse_is_thread_safe(void **state)
{
	pthread_t t[4];
	struct thread_arg args[4] = { { 0 } };
	int i;

	for (i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, parse_thread, &args[i]), 0);
	for (i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(args[i].failures, 0);
	}
}

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/*
 * Reports the cost of the hot path. No threshold is asserted: this also
 * runs under valgrind and sanitizers, and machine speed varies.
 */
static void report_parse_cost(void **state)
{
	static struct jid j;
	const char *in = "user@example.com/res";
	size_t len = strlen(in);
	const int fast_iters = 1000000, slow_iters = 20000;
	double t0, fast_ns, slow_ns;
	int i, rc = 0;

	t0 = now_ns();
	for (i = 0; i < fast_iters; i++)
		rc |= jid_parse(&j, in, len);
	fast_ns = (now_ns() - t0) / fast_iters;
	t0 = now_ns();
	for (i = 0; i < slow_iters; i++)
		rc |= jid_parse_with_path(&j, in, len, JID_PATH_SLOW);
	slow_ns = (now_ns() - t0) / slow_iters;
	assert_int_equal(rc, 0);
	print_message("jid_parse(\"%s\"): %.1f ns (fast path), %.1f ns (libidn path)\n", in,
		      fast_ns, slow_ns);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(rfc7622_table1_valid_jids),
		cmocka_unit_test(rfc7622_table2_invalid_jids),
		cmocka_unit_test(rfc7622_table2_entries_valid_under_stringprep),
		cmocka_unit_test(split_rules_match_deployed_servers),
		cmocka_unit_test(localpart_is_case_folded),
		cmocka_unit_test(domainpart_is_lowercased),
		cmocka_unit_test(resourcepart_keeps_case_and_symbols),
		cmocka_unit_test(resource_may_contain_at_and_slash),
		cmocka_unit_test(domain_with_at_sign_is_rejected),
		cmocka_unit_test(trailing_dot_is_stripped_once),
		cmocka_unit_test(ipv4_literal_is_kept),
		cmocka_unit_test(numeric_looking_domains_are_rejected),
		cmocka_unit_test(ipv6_literal_is_canonicalized),
		cmocka_unit_test(malformed_ipv6_is_rejected),
		cmocka_unit_test(idn_domain_is_stored_as_u_labels),
		cmocka_unit_test(bad_idn_labels_are_rejected),
		cmocka_unit_test(underscore_is_tolerated_in_domains),
		cmocka_unit_test(domain_labels_follow_hostname_rules),
		cmocka_unit_test(parts_of_1023_bytes_ok_1024_rejected),
		cmocka_unit_test(largest_jid_fits_the_buffer),
		cmocka_unit_test(length_is_measured_after_preparation),
		cmocka_unit_test(empty_parts_are_rejected),
		cmocka_unit_test(embedded_nul_is_rejected),
		cmocka_unit_test(bad_utf8_is_rejected),
		cmocka_unit_test(prohibited_localpart_characters_are_rejected),
		cmocka_unit_test(prohibited_resource_characters_are_rejected),
		cmocka_unit_test(combining_mark_after_ascii_goes_to_libidn),
		cmocka_unit_test(bare_str_copies_local_and_domain),
		cmocka_unit_test(to_bare_drops_the_resource),
		cmocka_unit_test(equal_compares_normalized_forms),
		cmocka_unit_test(from_parts_normalizes_each_part),
		cmocka_unit_test(prep_functions_write_strings),
		cmocka_unit_test(fast_path_matches_libidn_for_every_ascii_byte),
		cmocka_unit_test(fast_path_matches_libidn_on_random_ascii),
		cmocka_unit_test(auto_path_matches_libidn_on_random_utf8),
		cmocka_unit_test(fast_path_covers_plain_jids),
		cmocka_unit_test(parse_is_thread_safe),
		cmocka_unit_test(report_parse_cost),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
