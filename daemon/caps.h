/* SPDX-License-Identifier: MIT */
/*
 * XEP-0115 Entity Capabilities of the server: a <c/> stream feature
 * (section 6.3) whose 'ver' hashes the server's disco#info (section 5.1),
 * so clients can cache what the server supports instead of asking on
 * every connection. disco#info to the server with node 'NODE#VER' answers
 * the same information.
 *
 * The identity and feature list here are the single source for both the
 * hash and the server's disco#info answer, so the two cannot disagree.
 * They come from the iq handler table, which is fixed at build time, so
 * 'ver' is computed once.
 */
#ifndef STANZAD_CAPS_H
#define STANZAD_CAPS_H

#include <stdbool.h>
#include <stddef.h>

#include "strbuf.h"

#define NS_CAPS		"http://jabber.org/protocol/caps"
/*
 * The caps 'node': a URI naming the software (XEP-0115 section 4
 * recommends the project's web address; this project has none yet, so
 * a URL under the reserved .example domain, which can never belong to
 * someone else, stands in for it).
 */
#define CAPS_NODE	"https://stanzad.example/caps"
#define CAPS_HASH	"sha-1"
/* Base64 of a SHA-1 digest (28 characters) and its NUL, with room to spare. */
#define CAPS_VER_MAX	64
/* Most features one disco#info answer lists (PEP alone brings about 40). */
#define CAPS_MAX_FEATURES 128

struct caps_identity {
	const char *category;
	const char *type;
	const char *lang;	/* xml:lang, or NULL */
	const char *name;	/* or NULL */
};

/*
 * The server's identities (disco#info and the hash both use them):
 * server/im first, then pubsub/pep (XEP-0163 9, XEP-0223 4: the server
 * offers PEP on every account).
 */
extern const struct caps_identity caps_server_identities[];
extern const size_t caps_server_nidentities;
/* The first of them, server/im. */
#define caps_server_identity (caps_server_identities[0])

/*
 * The verification string of XEP-0115 section 5.1 (no data forms):
 * identities sorted by category/type/lang, features sorted, each
 * followed by '<', SHA-1, base64. Inputs may come in any order;
 * duplicate features count once. Writes out (>= CAPS_VER_MAX bytes).
 * 0, -EINVAL (no identity, a NULL field, or out too small), -ENOMEM.
 */
int caps_ver_compute(const struct caps_identity *ids, size_t nids,
		     const char *const *features, size_t nfeatures, char *out, size_t out_size);

/*
 * Features a disco#info answer lists for an iq scope (enum iq_scope):
 * those of the iq handler table, plus caps itself for the server and
 * PEP's (pubsub_disco_features), sorted and without duplicates. Returns
 * the count (<= cap).
 */
size_t caps_features(unsigned scope, const char **out, size_t cap);

/*
 * The server's extended information (XEP-0128) in the form XEP-0115 5.1
 * steps 6-8 hash it ("FORM_TYPE<var<value<..."): called once at start,
 * before the first caps_server_ver(); s must live as long as the process.
 */
void caps_server_set_forms(const char *s);

/* The server's 'ver' (computed on first use); "" if that failed (logged). */
const char *caps_server_ver(void);

/* True when node is the server's CAPS_NODE '#' ver. */
bool caps_is_server_node(const char *node);

/* Appends the <c/> stream feature (nothing if the hash could not be made). */
void caps_stream_feature(struct strbuf *b);

#endif
