/* SPDX-License-Identifier: MIT */
/*
 * JIDs: split (RFC 7622 section 3.1), then each part prepared on its own.
 *
 * Every part has two implementations:
 *
 *  - a fast path for parts made only of ASCII bytes, which is what nearly
 *    every stanza carries. For ASCII the stringprep profiles reduce to a
 *    table: Nodeprep lowercases A-Z and prohibits controls, space and
 *    " & ' / : < > @; Resourceprep keeps 0x20..0x7e and prohibits controls;
 *    Nameprep lowercases and the hostname rules do the rest. No libidn call,
 *    no allocation, one pass.
 *  - a slow path through libidn (stringprep_4i, idna_to_ascii_4i,
 *    idna_to_unicode_44i) for everything else.
 *
 * The fast path answers -EINVAL only when the whole part is ASCII: an ASCII
 * character it would reject can become part of an allowed one once a
 * combining mark follows ('<' + U+0338 composes to U+226E under NFKC), so
 * any non-ASCII byte sends the part to the slow path. The unit tests run
 * both paths over generated ASCII inputs and require identical results.
 *
 * Domain policy (documented in jid.h): IDNA2003 through libidn, U-labels
 * stored, A-labels verified by a round trip and decoded, '_' accepted in
 * labels (SRV-style and internal component names use it, DNS carries it,
 * and the servers we federate with accept it), numeric-looking last labels
 * rejected unless the whole name is a dotted-quad IPv4 address: getaddrinfo
 * would read "127.1" or "0x7f000001" as an address.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <idna.h>
#include <stringprep.h>

#define JID_TEST_HOOKS
#include "jid.h"

/* Largest raw JID looked at: three raw parts and two delimiters. */
#define JID_RAW_MAX (3 * JID_PART_RAW_MAX + 2)
/* A DNS label, in the A-label form a resolver would send. */
#define JID_LABEL_MAX 63
/*
 * Code points a part may take while libidn works on it. Raw parts are at
 * most JID_PART_RAW_MAX bytes, hence code points. Case folding can expand
 * a character to up to four before NFKC composes them back; a part that
 * overflows the buffer on the way is rejected as too long, which is what
 * it would be: composition gives back about three to one, leaving more
 * than 1023 code points.
 */
#define JID_UCS_MAX (JID_PART_RAW_MAX + 4)
/*
 * Code points of one domain label during preparation. A prepared label has
 * at most 63 (ASCII) or 59 (A-label "xn--" + at least one byte per code
 * point) code points; the slack covers characters mapped to nothing.
 */
#define JID_LABEL_UCS_MAX 256

/*
 * Classes of ASCII bytes for the fast paths. JC_UPPER is 0x20 so that
 * `c | (class & JC_UPPER)` lowercases A-Z and leaves every other byte.
 * '.' is handled apart in domains (label separator).
 */
enum jid_ascii_class {
	JC_LOCAL = 0x01,	/* allowed in a prepared localpart */
	JC_DOMAIN = 0x02,	/* allowed in a domain label: [A-Za-z0-9_-] */
	JC_RES = 0x04,		/* allowed in a prepared resourcepart */
	JC_UPPER = 0x20,	/* A-Z */
};

#define JC_LRD (JC_LOCAL | JC_RES | JC_DOMAIN)
#define JC_LR (JC_LOCAL | JC_RES)

/*
 * Controls (C.2.1) are prohibited everywhere; space (C.1.1) and the eight
 * characters of RFC 3920 Appendix A.5 in Nodeprep only.
 */
static const unsigned char jid_ascii_class[128] = {
	[' '] = JC_RES,
	['!'] = JC_LR,
	['"'] = JC_RES,
	['#' ... '%'] = JC_LR,
	['&'] = JC_RES,
	['\''] = JC_RES,
	['(' ... ','] = JC_LR,
	['-'] = JC_LRD,
	['.'] = JC_LR,
	['/'] = JC_RES,
	['0' ... '9'] = JC_LRD,
	[':'] = JC_RES,
	[';'] = JC_LR,
	['<'] = JC_RES,
	['='] = JC_LR,
	['>'] = JC_RES,
	['?'] = JC_LR,
	['@'] = JC_RES,
	['A' ... 'Z'] = JC_LRD | JC_UPPER,
	['[' ... '^'] = JC_LR,
	['_'] = JC_LRD,
	['`'] = JC_LR,
	['a' ... 'z'] = JC_LRD,
	['{' ... '~'] = JC_LR,
};

/* ---- UTF-8 <-> UCS-4 ---------------------------------------------------- */

/*
 * Decodes one code point of s[*pos..len) and advances *pos. Strict RFC 3629:
 * no overlong forms, surrogates, values above U+10FFFF, truncated
 * sequences, or NUL. -EINVAL on any of them.
 */
static int utf8_next(const unsigned char *s, size_t len, size_t *pos, uint32_t *cp)
{
	size_t i = *pos, n, k;
	uint32_t c = s[i], min;

	if (c < 0x80) {
		n = 0;
		min = 0;
	} else if ((c & 0xe0) == 0xc0) {
		n = 1;
		min = 0x80;
		c &= 0x1f;
	} else if ((c & 0xf0) == 0xe0) {
		n = 2;
		min = 0x800;
		c &= 0x0f;
	} else if ((c & 0xf8) == 0xf0) {
		n = 3;
		min = 0x10000;
		c &= 0x07;
	} else {
		return -EINVAL;
	}
	if (n > len - i - 1)
		return -EINVAL;
	for (k = 1; k <= n; k++) {
		if ((s[i + k] & 0xc0) != 0x80)
			return -EINVAL;
		c = (c << 6) | (s[i + k] & 0x3f);
	}
	if (c == 0 || c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return -EINVAL;
	*cp = c;
	*pos = i + n + 1;
	return 0;
}

/* Decodes in[0..len) into ucs[0..max). -EINVAL if invalid or too long. */
static int utf8_to_ucs4(const char *in, size_t len, uint32_t *ucs, size_t max, size_t *n)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t pos = 0, k = 0;
	int rc;

	while (pos < len) {
		if (k == max)
			return -EINVAL;
		rc = utf8_next(s, len, &pos, &ucs[k]);
		if (rc < 0)
			return rc;
		k++;
	}
	*n = k;
	return 0;
}

/*
 * Encodes ucs[0..n) into out[0..cap). Returns the byte count, or -EINVAL
 * when it does not fit (the part is too long). Input comes from libidn
 * and is valid Unicode scalar values.
 */
static int ucs4_to_utf8(char *out, size_t cap, const uint32_t *ucs, size_t n)
{
	size_t o = 0, i;

	for (i = 0; i < n; i++) {
		uint32_t c = ucs[i];
		size_t need = c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;

		if (need > cap - o)
			return -EINVAL;
		switch (need) {
		case 1:
			out[o++] = (char)c;
			break;
		case 2:
			out[o++] = (char)(0xc0 | (c >> 6));
			out[o++] = (char)(0x80 | (c & 0x3f));
			break;
		case 3:
			out[o++] = (char)(0xe0 | (c >> 12));
			out[o++] = (char)(0x80 | ((c >> 6) & 0x3f));
			out[o++] = (char)(0x80 | (c & 0x3f));
			break;
		default:
			out[o++] = (char)(0xf0 | (c >> 18));
			out[o++] = (char)(0x80 | ((c >> 12) & 0x3f));
			out[o++] = (char)(0x80 | ((c >> 6) & 0x3f));
			out[o++] = (char)(0x80 | (c & 0x3f));
			break;
		}
	}
	return (int)o;
}

/* ---- fast path helpers ---------------------------------------------------- */

static bool has_non_ascii(const char *in, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if ((unsigned char)in[i] >= 0x80)
			return true;
	return false;
}

/*
 * The fast path found something it rejects. That is final only for a pure
 * ASCII part; otherwise the slow path decides (see the file comment).
 */
static int fast_reject(const char *in, size_t len)
{
	return has_non_ascii(in, len) ? -EAGAIN : -EINVAL;
}

/*
 * Fast paths. Each writes the prepared part to out (room for JID_PART_MAX
 * bytes) and returns its length, -EINVAL for an invalid ASCII part, or
 * -EAGAIN when the slow path must decide.
 */
static int local_prep_fast(char *out, const char *in, size_t len)
{
	size_t i;

	if (len == 0)
		return -EINVAL;
	if (len > JID_PART_MAX)
		return fast_reject(in, len);
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i], cls;

		if (c >= 0x80)
			return -EAGAIN;
		cls = jid_ascii_class[c];
		if (!(cls & JC_LOCAL))
			return fast_reject(in, len);
		out[i] = (char)(c | (cls & JC_UPPER));
	}
	return (int)len;
}

static int resource_prep_fast(char *out, const char *in, size_t len)
{
	size_t i;

	if (len == 0)
		return -EINVAL;
	if (len > JID_PART_MAX)
		return fast_reject(in, len);
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c >= 0x80)
			return -EAGAIN;
		if (!(jid_ascii_class[c] & JC_RES))
			return fast_reject(in, len);
		out[i] = (char)c;
	}
	return (int)len;
}

/*
 * Host name labels, lowercased, '_' accepted. A label starting "xn--" (any
 * case) is an A-label that only libidn can verify and decode: -EAGAIN.
 * The caller has stripped the trailing dot and handled IPv6 literals.
 */
/* Whether some label of in[0..len) starts "xn--" (any case): an A-label. */
static bool has_ace_label(const char *in, size_t len)
{
	for (size_t i = 0; i + 4 <= len; i++)
		if ((i == 0 || in[i - 1] == '.') && (in[i] | 0x20) == 'x' && (in[i + 1] | 0x20) == 'n' &&
		    in[i + 2] == '-' && in[i + 3] == '-')
			return true;
	return false;
}

static int domain_prep_fast(char *out, const char *in, size_t len)
{
	size_t i, start = 0;

	/*
	 * Too long as given, but A-labels decode to U-labels that may take
	 * fewer bytes in UTF-8: only libidn can tell.
	 */
	if (len > JID_PART_MAX)
		return has_ace_label(in, len) ? -EAGAIN : fast_reject(in, len);
	for (i = 0; i <= len; i++) {
		unsigned char c = i < len ? (unsigned char)in[i] : '.';
		unsigned char cls;
		size_t label_len;

		if (c >= 0x80)
			return -EAGAIN;
		if (c != '.') {
			cls = jid_ascii_class[c];
			if (!(cls & JC_DOMAIN))
				return fast_reject(in, len);
			out[i] = (char)(c | (cls & JC_UPPER));
			continue;
		}
		label_len = i - start;
		if (label_len == 0 || label_len > JID_LABEL_MAX ||
		    out[start] == '-' || out[i - 1] == '-')
			return fast_reject(in, len);
		if (label_len >= 4 && memcmp(out + start, "xn--", 4) == 0)
			return -EAGAIN;
		if (i < len)
			out[i] = '.';
		start = i + 1;
	}
	return (int)len;
}

/* ---- slow path (libidn) --------------------------------------------------- */

/*
 * Runs a stringprep profile over in[0..len) and writes UTF-8 to out (room
 * for JID_PART_MAX bytes). Returns the length or -EINVAL (bad UTF-8,
 * prohibited or unassigned code point, bidi violation, empty or too long
 * after preparation). Uses JID_UCS_MAX * 4 bytes of stack; libidn
 * allocates during NFKC.
 */
static int stringprep_part(char *out, const char *in, size_t len, int flags,
			   const Stringprep_profile *profile)
{
	uint32_t ucs[JID_UCS_MAX];
	size_t n;
	int rc;

	if (len == 0 || len > JID_PART_RAW_MAX)
		return -EINVAL;
	rc = utf8_to_ucs4(in, len, ucs, JID_UCS_MAX, &n);
	if (rc < 0)
		return rc;
	if (stringprep_4i(ucs, &n, JID_UCS_MAX, (Stringprep_profile_flags)flags,
			  profile) != STRINGPREP_OK)
		return -EINVAL;
	if (n == 0)
		return -EINVAL;	/* everything was mapped to nothing */
	return ucs4_to_utf8(out, JID_PART_MAX, ucs, n);
}

static int local_prep_slow(char *out, const char *in, size_t len)
{
	return stringprep_part(out, in, len, STRINGPREP_NO_UNASSIGNED,
			       stringprep_xmpp_nodeprep);
}

/*
 * Unassigned code points are allowed here: resources are per-session,
 * compared exactly and never case-folded, so a code point that gains a
 * meaning later cannot merge two identities, while rejecting it would cut
 * off clients on servers with newer Unicode tables.
 */
static int resource_prep_slow(char *out, const char *in, size_t len)
{
	return stringprep_part(out, in, len, 0, stringprep_xmpp_resourceprep);
}

/* IDNA2003 label separators: full stop, ideographic and fullwidth ones. */
static bool is_label_dot(uint32_t c)
{
	return c == 0x2e || c == 0x3002 || c == 0xff0e || c == 0xff61;
}

/* RFC 1123 host name rules on the ASCII code points, plus '_'. */
static bool label_ascii_ok(const uint32_t *l, size_t n)
{
	size_t i;

	if (l[0] == '-' || l[n - 1] == '-')
		return false;
	for (i = 0; i < n; i++) {
		if (l[i] >= 0x80)
			continue;
		if (!(jid_ascii_class[l[i]] & JC_DOMAIN) || (jid_ascii_class[l[i]] & JC_UPPER))
			return false;
	}
	return true;
}

static bool ucs4_has_non_ascii(const uint32_t *l, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (l[i] >= 0x80)
			return true;
	return false;
}

/* Nameprep ran first, so the prefix is already lowercase. */
static bool label_is_ace(const uint32_t *l, size_t n)
{
	return n >= 4 && l[0] == 'x' && l[1] == 'n' && l[2] == '-' && l[3] == '-';
}

/*
 * Prepares one label held in l[0..n) (room for JID_LABEL_UCS_MAX code
 * points, modified) and appends it as a U-label to out[0..cap). Returns
 * the bytes written or -EINVAL.
 */
static int domain_label_slow(char *out, size_t cap, uint32_t *l, size_t n)
{
	uint32_t u[JID_LABEL_UCS_MAX];
	size_t un = JID_LABEL_UCS_MAX;
	char ace[JID_LABEL_MAX + 1];

	if (n == 0)
		return -EINVAL;
	if (stringprep_4i(l, &n, JID_LABEL_UCS_MAX, STRINGPREP_NO_UNASSIGNED,
			  stringprep_nameprep) != STRINGPREP_OK || n == 0)
		return -EINVAL;
	if (label_is_ace(l, n)) {
		/*
		 * ToUnicode re-encodes what it decoded and compares, so a
		 * fake A-label (bad Punycode, a decoding that does not encode
		 * back to the same label) fails instead of being kept.
		 *
		 * But an empty or '-'-terminated Punycode part decodes to
		 * ASCII only, and libidn 1.41's round-trip check then reads
		 * uninitialized stack bytes (it skips a 4-byte prefix the
		 * ASCII result does not have), which can accept "xn--abc-"
		 * as "abc". Such labels end in '-', which host names forbid
		 * anyway: reject them before libidn, and require a non-ASCII
		 * result after it.
		 */
		if (n == 4 || l[n - 1] == '-')
			return -EINVAL;
		if (idna_to_unicode_44i(l, n, u, &un, 0) != IDNA_SUCCESS ||
		    !ucs4_has_non_ascii(u, un))
			return -EINVAL;
		memcpy(l, u, un * sizeof(*u));
		n = un;
	}
	/*
	 * Our STD3 check rather than IDNA_USE_STD3_ASCII_RULES, which would
	 * refuse '_'.
	 */
	if (!label_ascii_ok(l, n))
		return -EINVAL;
	/* Only for its checks: A-label length 1..63, no "xn--" on U-labels. */
	if (idna_to_ascii_4i(l, n, ace, 0) != IDNA_SUCCESS)
		return -EINVAL;
	return ucs4_to_utf8(out, cap, l, n);
}

/*
 * Splits on the IDNA2003 separators, prepares each label and joins them
 * with '.'. Code points are decoded straight into the label buffer, so the
 * stack use stays at two label buffers whatever the domain length.
 */
static int domain_prep_slow(char *out, const char *in, size_t len)
{
	const unsigned char *s = (const unsigned char *)in;
	uint32_t label[JID_LABEL_UCS_MAX];
	size_t pos = 0, n = 0, o = 0;
	uint32_t c = 0;
	int rc;

	if (len > JID_PART_RAW_MAX)
		return -EINVAL;
	for (;;) {
		bool end = pos == len;

		if (!end) {
			rc = utf8_next(s, len, &pos, &c);
			if (rc < 0)
				return rc;
		}
		if (!end && !is_label_dot(c)) {
			if (n == JID_LABEL_UCS_MAX)
				return -EINVAL;
			label[n++] = c;
			continue;
		}
		rc = domain_label_slow(out + o, JID_PART_MAX - o, label, n);
		if (rc < 0)
			return rc;
		o += (size_t)rc;
		if (end)
			break;
		if (o == JID_PART_MAX)
			return -EINVAL;
		out[o++] = '.';
		n = 0;
	}
	return (int)o;
}

/* ---- per-part dispatch ---------------------------------------------------- */

/* Tries the fast path unless told otherwise; see enum jid_path. */
static int prep_with_path(int (*fast)(char *, const char *, size_t),
			  int (*slow)(char *, const char *, size_t), char *out,
			  const char *in, size_t len, enum jid_path path)
{
	int rc;

	if (path != JID_PATH_SLOW) {
		rc = fast(out, in, len);
		if (rc != -EAGAIN || path == JID_PATH_FAST)
			return rc;
	}
	return slow(out, in, len);
}

/*
 * "[" IPv6 "]": validated by inet_pton and rewritten by inet_ntop, which
 * gives the RFC 5952 form (lowercase, longest zero run compressed), so
 * "[::A]" and "[0:0::a]" name the same host byte for byte.
 */
static int domain_prep_ip6(char *out, const char *in, size_t len)
{
	char text[INET6_ADDRSTRLEN];
	struct in6_addr addr;
	size_t i, n;

	if (len < 3 || in[len - 1] != ']' || len - 2 >= sizeof(text))
		return -EINVAL;
	n = len - 2;
	for (i = 0; i < n; i++) {
		char c = in[1 + i];

		/* inet_pton would stop at a NUL and accept the prefix. */
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
		      (c >= 'A' && c <= 'F') || c == ':' || c == '.'))
			return -EINVAL;
		text[i] = c;
	}
	text[n] = '\0';
	if (inet_pton(AF_INET6, text, &addr) != 1 ||
	    !inet_ntop(AF_INET6, &addr, text, sizeof(text)))
		return -EINVAL;
	n = strlen(text);
	out[0] = '[';
	memcpy(out + 1, text, n);
	out[n + 1] = ']';
	return (int)n + 2;
}

/*
 * A last label of digits or "0x" + hex is an address to inet_aton (hence
 * getaddrinfo), never a DNS name: accept it only as a canonical dotted
 * quad (inet_pton refuses leading zeros and short forms).
 */
static int domain_check_numeric(const char *d, size_t len)
{
	char text[INET_ADDRSTRLEN];
	struct in_addr addr;
	size_t i, start = len;
	bool hex;

	while (start > 0 && d[start - 1] != '.')
		start--;
	hex = len - start >= 2 && d[start] == '0' && d[start + 1] == 'x';

	for (i = hex ? start + 2 : start; i < len; i++) {
		char c = d[i];

		if (!((c >= '0' && c <= '9') || (hex && c >= 'a' && c <= 'f')))
			return 0;	/* a name */
	}
	if (len >= sizeof(text))
		return -EINVAL;
	memcpy(text, d, len);
	text[len] = '\0';
	return inet_pton(AF_INET, text, &addr) == 1 ? 0 : -EINVAL;
}

static int prep_local(char *out, const char *in, size_t len, enum jid_path path)
{
	return prep_with_path(local_prep_fast, local_prep_slow, out, in, len, path);
}

static int prep_resource(char *out, const char *in, size_t len, enum jid_path path)
{
	return prep_with_path(resource_prep_fast, resource_prep_slow, out, in, len, path);
}

/*
 * The steps common to both paths: one trailing '.' goes first (RFC 7622
 * section 3.2), brackets mean IPv6, the numeric check comes last.
 */
static int prep_domain(char *out, const char *in, size_t len, enum jid_path path)
{
	int rc;

	if (len > 0 && in[len - 1] == '.')
		len--;
	if (len == 0)
		return -EINVAL;
	if (in[0] == '[')
		return domain_prep_ip6(out, in, len);
	rc = prep_with_path(domain_prep_fast, domain_prep_slow, out, in, len, path);
	if (rc < 0)
		return rc;
	return domain_check_numeric(out, (size_t)rc) < 0 ? -EINVAL : rc;
}

/* ---- JIDs ------------------------------------------------------------------ */

static void jid_clear(struct jid *j)
{
	j->buf[0] = '\0';
	j->len = 0;
	j->local_len = 0;
	j->domain_off = j->domain_len = 0;
	j->res_off = j->res_len = 0;
}

/*
 * Prepares the parts straight into j->buf: local (if any), '@', domain,
 * '/' and resource (if any). Each part is at most JID_PART_MAX bytes, so
 * the whole fits JID_MAX with its NUL. NULL local/res means absent.
 */
static int jid_build(struct jid *j, const char *local, size_t local_len, const char *dom,
		     size_t dom_len, const char *res, size_t res_len, enum jid_path path)
{
	char *p = j->buf;
	int rc;

	j->local_len = 0;
	if (local) {
		rc = prep_local(p, local, local_len, path);
		if (rc < 0)
			goto err_clear;
		j->local_len = (size_t)rc;
		p += rc;
		*p++ = '@';
	}
	j->domain_off = (size_t)(p - j->buf);
	rc = prep_domain(p, dom, dom_len, path);
	if (rc < 0)
		goto err_clear;
	j->domain_len = (size_t)rc;
	p += rc;
	j->res_len = 0;
	if (res) {
		*p++ = '/';
		rc = prep_resource(p, res, res_len, path);
		if (rc < 0)
			goto err_clear;
		j->res_len = (size_t)rc;
	}
	j->res_off = (size_t)(p - j->buf);
	p += j->res_len;
	*p = '\0';
	j->len = (size_t)(p - j->buf);
	return 0;

err_clear:
	jid_clear(j);
	return rc;
}

/*
 * RFC 7622 section 3.1: the resource starts after the first '/', and only
 * then is the localpart cut at the first '@', so "a/b@c" is the domain "a"
 * with resource "b@c". A delimiter present with an empty part is malformed.
 */
int jid_parse_with_path(struct jid *out, const char *in, size_t len, enum jid_path path)
{
	const char *slash, *at, *local = NULL, *res = NULL;
	size_t dom_end, dom_start = 0, local_len = 0, res_len = 0;

	if (!in || len > JID_RAW_MAX) {
		jid_clear(out);
		return -EINVAL;
	}
	slash = memchr(in, '/', len);
	dom_end = slash ? (size_t)(slash - in) : len;
	if (slash) {
		res = slash + 1;
		res_len = len - dom_end - 1;
	}
	at = memchr(in, '@', dom_end);
	if (at) {
		local = in;
		local_len = (size_t)(at - in);
		dom_start = local_len + 1;
	}
	return jid_build(out, local, local_len, in + dom_start, dom_end - dom_start, res,
			 res_len, path);
}

int jid_parse(struct jid *out, const char *in, size_t len)
{
	return jid_parse_with_path(out, in, len, JID_PATH_AUTO);
}

int jid_from_parts(struct jid *out, const char *local, const char *domain,
		   const char *resource)
{
	/* strnlen bounds the scan; one byte over the limit is enough to fail. */
	size_t max = JID_PART_RAW_MAX + 1;

	if (!domain) {
		jid_clear(out);
		return -EINVAL;
	}
	return jid_build(out, local, local ? strnlen(local, max) : 0, domain,
			 strnlen(domain, max), resource, resource ? strnlen(resource, max) : 0,
			 JID_PATH_AUTO);
}

/* Prepares into a scratch part, then copies out with a NUL if it fits. */
static int prep_to_string(int (*prep)(char *, const char *, size_t, enum jid_path),
			  char *out, size_t out_size, const char *in, size_t len)
{
	char part[JID_PART_MAX];
	int rc;

	if (out_size > 0)
		out[0] = '\0';
	if (!in)
		return -EINVAL;
	rc = prep(part, in, len, JID_PATH_AUTO);
	if (rc < 0)
		return rc;
	if ((size_t)rc >= out_size)
		return -ENOSPC;
	memcpy(out, part, (size_t)rc);
	out[rc] = '\0';
	return 0;
}

int jid_prep_local(char *out, size_t out_size, const char *in, size_t len)
{
	return prep_to_string(prep_local, out, out_size, in, len);
}

int jid_prep_resource(char *out, size_t out_size, const char *in, size_t len)
{
	return prep_to_string(prep_resource, out, out_size, in, len);
}

int jid_prep_domain(char *out, size_t out_size, const char *in, size_t len)
{
	return prep_to_string(prep_domain, out, out_size, in, len);
}

static size_t jid_bare_len(const struct jid *j)
{
	return j->domain_off + j->domain_len;
}

int jid_bare_str(const struct jid *in, char *out, size_t out_size)
{
	size_t n = jid_bare_len(in);

	if (n >= out_size) {
		/* Never a truncated JID: a prefix can be another valid JID. */
		if (out_size > 0)
			out[0] = '\0';
		return -ENOSPC;
	}
	memcpy(out, in->buf, n);
	out[n] = '\0';
	return 0;
}

void jid_to_bare(struct jid *j)
{
	j->len = jid_bare_len(j);
	j->buf[j->len] = '\0';
	j->res_off = j->len;
	j->res_len = 0;
}

/*
 * The text alone identifies the parts: neither localpart nor domainpart
 * can hold '@' or '/', so comparing buffers compares every part.
 */
bool jid_equal(const struct jid *a, const struct jid *b)
{
	return a->len == b->len && memcmp(a->buf, b->buf, a->len) == 0;
}

bool jid_bare_equal(const struct jid *a, const struct jid *b)
{
	size_t n = jid_bare_len(a);

	return n == jid_bare_len(b) && memcmp(a->buf, b->buf, n) == 0;
}
