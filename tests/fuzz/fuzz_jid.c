/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: JID parsing and normalization (daemon/jid.c).
 *
 * Input: byte 0 is a small output size for the -ENOSPC paths; the rest
 * is the JID text (any bytes).
 *
 * Properties checked besides the sanitizers:
 *   - a failure is -EINVAL with an empty JID; a success has a consistent
 *     layout (offsets, delimiters, part lengths within JID_PART_MAX, no
 *     '@' or '/' in localpart and domainpart);
 *   - normalization is idempotent: parse(text(parse(x))) == parse(x);
 *   - the ASCII fast path, when it answers, agrees with libidn;
 *   - jid_from_parts() and jid_prep_*() on the raw parts agree with
 *     jid_parse(), and the bare-JID helpers agree with each other;
 *   - a too-small output buffer gives -ENOSPC and "" or the same result.
 */
#define JID_TEST_HOOKS
#include <errno.h>
#include <string.h>

#include "fuzz_common.h"
#include "jid.h"

static void check_layout(const struct jid *j, const char *what)
{
	fuzz_check(j->len == strlen(j->buf) && j->len < JID_MAX, "%s: bad len %zu", what, j->len);
	fuzz_check(j->local_len <= JID_PART_MAX && j->domain_len >= 1 &&
		   j->domain_len <= JID_PART_MAX && j->res_len <= JID_PART_MAX,
		   "%s: part lengths %zu/%zu/%zu", what, j->local_len, j->domain_len, j->res_len);
	if (j->local_len) {
		fuzz_check(j->buf[j->local_len] == '@' && j->domain_off == j->local_len + 1,
			   "%s: localpart delimiter", what);
		fuzz_check(!memchr(j->buf, '/', j->local_len) && !memchr(j->buf, '@', j->local_len),
			   "%s: '@' or '/' in localpart '%.*s'", what, (int)j->local_len, j->buf);
	} else {
		fuzz_check(j->domain_off == 0, "%s: domain_off %zu without localpart", what,
			   j->domain_off);
	}
	fuzz_check(!memchr(j->buf + j->domain_off, '/', j->domain_len) &&
		   !memchr(j->buf + j->domain_off, '@', j->domain_len),
		   "%s: '@' or '/' in domainpart '%.*s'", what, (int)j->domain_len,
		   j->buf + j->domain_off);
	if (j->res_len) {
		fuzz_check(j->res_off == j->domain_off + j->domain_len + 1 &&
			   j->buf[j->res_off - 1] == '/' && j->res_off + j->res_len == j->len,
			   "%s: resource layout", what);
	} else {
		fuzz_check(j->len == j->domain_off + j->domain_len, "%s: trailing bytes", what);
	}
}

static bool same_jid(const struct jid *a, const struct jid *b)
{
	return jid_equal(a, b) && a->local_len == b->local_len && a->domain_off == b->domain_off &&
	       a->domain_len == b->domain_len && a->res_len == b->res_len &&
	       (a->res_len == 0 || a->res_off == b->res_off);
}

static void check_failed(int rc, const struct jid *j, const char *what)
{
	fuzz_check(rc == -EINVAL, "%s: rc %d", what, rc);
	fuzz_check(j->len == 0 && j->buf[0] == '\0', "%s: failure left text '%s'", what, j->buf);
}

/* A part prepared alone equals the same part inside the parsed JID. */
static void check_prep(int (*prep)(char *, size_t, const char *, size_t), const char *what,
		       const char *raw, size_t raw_len, const char *want, size_t want_len,
		       size_t small)
{
	char out[JID_PART_MAX + 1];
	char tiny[256];
	int rc;

	rc = prep(out, sizeof(out), raw, raw_len);
	fuzz_check(rc == 0, "%s: part prepared inside the JID but alone rc %d", what, rc);
	fuzz_check(strlen(out) == want_len && memcmp(out, want, want_len) == 0,
		   "%s: alone '%s', in the JID '%.*s'", what, out, (int)want_len, want);

	rc = prep(tiny, small, raw, raw_len);
	if (want_len < small) {
		fuzz_check(rc == 0 && strcmp(tiny, out) == 0, "%s: small buffer rc %d", what, rc);
	} else {
		fuzz_check(rc == -ENOSPC, "%s: %zu bytes into %zu gave rc %d", what, want_len,
			   small, rc);
		fuzz_check(small == 0 || tiny[0] == '\0', "%s: -ENOSPC left text", what);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet_logs();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct jid j, k, fast, slow, parts, bare;
	struct fuzz_in in = { data, size };
	size_t small = fuzz_u8(&in) % 64;
	const char *s = (const char *)in.p;
	size_t len = in.left;
	char bare_text[JID_MAX], tiny[64];
	int rc, rc_fast, rc_slow;

	rc = jid_parse(&j, s, len);

	/* Fast path (when it answers) and libidn agree; AUTO is one of them. */
	rc_fast = jid_parse_with_path(&fast, s, len, JID_PATH_FAST);
	rc_slow = jid_parse_with_path(&slow, s, len, JID_PATH_SLOW);
	if (rc_fast != -EAGAIN) {
		fuzz_check(rc_fast == rc_slow, "fast path rc %d, libidn rc %d for '%.*s'", rc_fast,
			   rc_slow, (int)len, s);
		fuzz_check(rc_fast < 0 || same_jid(&fast, &slow),
			   "fast path '%s', libidn '%s'", fast.buf, slow.buf);
		fuzz_check(rc == rc_fast && (rc < 0 || same_jid(&j, &fast)),
			   "auto path differs from the fast path");
	} else {
		fuzz_check(rc == rc_slow && (rc < 0 || same_jid(&j, &slow)),
			   "auto path differs from the libidn path");
	}

	if (rc < 0) {
		check_failed(rc, &j, "jid_parse");
		if (rc_slow < 0)
			check_failed(rc_slow, &slow, "slow path");
	} else {
		check_layout(&j, "jid_parse");

		/* Idempotence. */
		rc = jid_parse(&k, j.buf, j.len);
		fuzz_check(rc == 0, "normalized '%s' does not parse again (rc %d)", j.buf, rc);
		fuzz_check(same_jid(&j, &k), "not idempotent: '%s' -> '%s'", j.buf, k.buf);

		/* Bare helpers. */
		rc = jid_bare_str(&j, bare_text, sizeof(bare_text));
		fuzz_check(rc == 0 && strlen(bare_text) == j.domain_off + j.domain_len &&
			   memcmp(bare_text, j.buf, j.domain_off + j.domain_len) == 0,
			   "jid_bare_str gave '%s'", bare_text);
		rc = jid_bare_str(&j, tiny, small);
		if (j.domain_off + j.domain_len < small)
			fuzz_check(rc == 0 && strcmp(tiny, bare_text) == 0, "jid_bare_str small");
		else
			fuzz_check(rc == -ENOSPC && (small == 0 || tiny[0] == '\0'),
				   "jid_bare_str into %zu bytes: rc %d", small, rc);
		bare = j;
		jid_to_bare(&bare);
		check_layout(&bare, "jid_to_bare");
		fuzz_check(strcmp(bare.buf, bare_text) == 0 && jid_bare_equal(&j, &bare) &&
			   !jid_has_resource(&bare), "jid_to_bare gave '%s'", bare.buf);
		rc = jid_parse(&k, bare_text, strlen(bare_text));
		fuzz_check(rc == 0 && same_jid(&k, &bare), "bare JID '%s' does not parse back",
			   bare_text);
	}

	/*
	 * The raw parts as RFC 7622 section 3.1 splits them: the resource
	 * after the first '/', then the localpart before the first '@'.
	 * C-string APIs cannot carry a NUL, so only NUL-free inputs.
	 */
	if (!memchr(s, '\0', len) && len <= 3 * JID_PART_RAW_MAX + 2) {
		char *copy = fuzz_strndup((const uint8_t *)s, len);
		char *slash = strchr(copy, '/');
		char *res = NULL, *local = NULL, *dom = copy, *at;

		if (slash) {
			*slash = '\0';
			res = slash + 1;
		}
		at = strchr(copy, '@');
		if (at) {
			*at = '\0';
			local = copy;
			dom = at + 1;
		}
		rc = jid_from_parts(&parts, local, dom, res);
		if (rc == 0) {
			fuzz_check(jid_parse(&k, s, len) == 0 && same_jid(&parts, &k),
				   "jid_from_parts '%s' but jid_parse differs", parts.buf);
			check_prep(jid_prep_domain, "domain", dom, strlen(dom),
				   k.buf + k.domain_off, k.domain_len, small);
			if (local)
				check_prep(jid_prep_local, "local", local, strlen(local), k.buf,
					   k.local_len, small);
			if (res)
				check_prep(jid_prep_resource, "resource", res, strlen(res),
					   k.buf + k.res_off, k.res_len, small);
		} else {
			check_failed(rc, &parts, "jid_from_parts");
			fuzz_check(jid_parse(&k, s, len) < 0, "jid_parse accepts what "
				   "jid_from_parts refuses: '%s'", copy);
		}
		free(copy);
	}
	return 0;
}
