/* SPDX-License-Identifier: MIT */
/*
 * Round-trip checker for stanza trees, shared by the XML and stanza
 * fuzz targets: serialize a tree, parse the text again with a separate
 * parser pool (large limits), and require the same tree.
 */
#ifndef STANZAD_FUZZ_XMLCHECK_H
#define STANZAD_FUZZ_XMLCHECK_H

#include <stdbool.h>

#include "strbuf.h"
#include "xml.h"

/*
 * Deep equality: names, namespaces ("" and NULL alike), attributes in
 * order, text runs. On a difference, *why says what and where.
 */
bool xmlcheck_equal(const struct xml_node *a, const struct xml_node *b, const char **why);

/*
 * Serializes n with default namespace default_ns in scope (as the stream
 * would), parses the result under a header declaring that default
 * namespace, and aborts with both texts if the trees differ or the text
 * does not parse as exactly one stanza. `what` names the caller in the
 * message. If out is not NULL the serialized text is left there.
 */
void xmlcheck_roundtrip(const struct xml_node *n, const char *default_ns, const char *what,
			struct strbuf *out);

/* Frees the checker's pool (for leak-clean exits in tests). */
void xmlcheck_cleanup(void);

#endif
