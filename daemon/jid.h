/* SPDX-License-Identifier: MIT */
/*
 * JIDs (RFC 7622): parsing, validation and normalization.
 *
 * Normalization follows what the XMPP network interoperates on: localpart
 * through the stringprep Nodeprep profile (case-folded, prohibited
 * characters rejected), domainpart lowercased and converted from IDNA
 * U-labels with Nameprep (a trailing dot removed, IP literals kept),
 * resourcepart through Resourceprep (case and form kept). Each part is
 * 1..1023 bytes after preparation; localpart and resource may be absent.
 *
 * Choices made where the specifications leave room (see jid.c for why):
 *  - Stringprep (RFC 3920 Nodeprep/Resourceprep, RFC 3491 Nameprep, IDNA2003)
 *    rather than PRECIS, as Prosody, ejabberd, Openfire and slixmpp do. So
 *    "fußball" is "fussball", "ς" and "Σ" are "σ", "henriⅣ" is "henriiv".
 *  - Localpart and domainpart reject code points unassigned in Unicode 3.2
 *    (stored strings: an identity must not change meaning later); the
 *    resourcepart accepts them (emoji in client resources interoperate).
 *  - The domainpart is stored as U-labels: A-labels ("xn--...") are
 *    verified and decoded, so every spelling of a name compares equal.
 *    Labels follow the hostname rules (letters, digits, inner hyphens, at
 *    most 63 bytes in A-label form) and also accept '_'.
 *  - IP literals: a dotted-quad IPv4 address as is; IPv6 in brackets,
 *    rewritten to its RFC 5952 text. A name whose last label looks numeric
 *    ("1.2.3", "0x7f.1", "2130706433") is rejected.
 */
#ifndef STANZAD_JID_H
#define STANZAD_JID_H

#include <stdbool.h>
#include <stddef.h>

#define JID_PART_MAX 1023
/* Largest normalized JID text: local@domain/resource plus NUL. */
#define JID_MAX (3 * JID_PART_MAX + 3)
/*
 * Largest raw part accepted before preparation. Preparation can shrink a
 * part (composition, characters mapped to nothing), so raw input may be
 * longer than JID_PART_MAX, but not without bound.
 */
#define JID_PART_RAW_MAX (4 * JID_PART_MAX)

/*
 * A normalized JID in one buffer: "local@domain/resource". The parts are
 * views into buf (not NUL-terminated individually): local_len == 0 means
 * no localpart, res_len == 0 means no resource.
 */
struct jid {
	char buf[JID_MAX];
	size_t len;		/* strlen(buf) */
	size_t local_len;	/* buf[0 .. local_len) */
	size_t domain_off, domain_len;
	size_t res_off, res_len;
};

/*
 * Parses and normalizes in[0..len) (UTF-8, no NUL; in must not overlap
 * out). Returns 0, or -EINVAL when the JID is malformed (the caller answers
 * jid-malformed / bad-request); out is then an empty JID (len 0).
 * Parts in plain ASCII (no "xn--" label) never reach libidn: the common
 * case costs tens of nanoseconds. Thread-safe.
 */
int jid_parse(struct jid *out, const char *in, size_t len);

/*
 * Builds a JID from NUL-terminated parts, each normalized as in jid_parse.
 * local and resource may be NULL (absent); an empty string is malformed.
 * 0 or -EINVAL.
 */
int jid_from_parts(struct jid *out, const char *local, const char *domain,
		   const char *resource);

/*
 * Normalize one part, in[0..len), into out as a NUL-terminated string
 * (JID_PART_MAX + 1 bytes always suffice). Return 0, -EINVAL when the part
 * is invalid, or -ENOSPC when out is too small; on error out is "" (when
 * out_size > 0).
 */
/* A lone localpart, e.g. a SASL username. */
int jid_prep_local(char *out, size_t out_size, const char *in, size_t len);
/* A lone resourcepart, e.g. a requested resource at bind. */
int jid_prep_resource(char *out, size_t out_size, const char *in, size_t len);
/* A lone domainpart, e.g. a configured host (IP literals accepted). */
int jid_prep_domain(char *out, size_t out_size, const char *in, size_t len);

/*
 * Copies the bare JID (local@domain) of `in` into out as a string.
 * Returns 0, or -ENOSPC (out set to "") when out_size is too small;
 * JID_MAX always suffices.
 */
int jid_bare_str(const struct jid *in, char *out, size_t out_size);
/* Drops the resource in place. */
void jid_to_bare(struct jid *j);

static inline bool jid_has_local(const struct jid *j) { return j->local_len > 0; }
static inline bool jid_has_resource(const struct jid *j) { return j->res_len > 0; }

/* Byte-wise equality of normalized JIDs; bare compare ignores resources. */
bool jid_equal(const struct jid *a, const struct jid *b);
bool jid_bare_equal(const struct jid *a, const struct jid *b);

#ifdef JID_TEST_HOOKS
/*
 * Test hook, not for production callers: jid_parse with the path forced.
 * JID_PATH_FAST uses only the ASCII fast path and returns -EAGAIN when
 * some part would need libidn; JID_PATH_SLOW sends every part through
 * libidn. Lets tests check that both paths agree.
 */
enum jid_path {
	JID_PATH_AUTO = 0,
	JID_PATH_FAST,
	JID_PATH_SLOW,
};
int jid_parse_with_path(struct jid *out, const char *in, size_t len, enum jid_path path);
#endif

#endif
