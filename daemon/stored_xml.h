/* SPDX-License-Identifier: MIT */
/*
 * XML kept in the store as text (vCards, private XML): the element is
 * serialized standalone (its own xmlns declared) and parsed back into a
 * tree when it is sent, because every stanza reaches a client stream as
 * a tree (c2s_send_stanza), never as raw bytes.
 */
#ifndef STANZAD_STORED_XML_H
#define STANZAD_STORED_XML_H

#include <stddef.h>

#include "arena.h"
#include "strbuf.h"
#include "xml.h"

/* Appends el as standalone text (no namespace assumed around it). */
void stored_xml_serialize(struct strbuf *out, const struct xml_node *el);

/*
 * Parses text made by stored_xml_serialize back into a tree allocated in
 * `a`, using a parser from `pool` (the pool's limits apply: the text must
 * fit its stanza limit). The default namespace around the text is
 * jabber:client, so a stanza serialized as for a client stream
 * (xml_serialize with parent XML_NS_CLIENT) parses back the same too.
 * Returns the element, or NULL with errno EINVAL (not exactly one
 * well-formed element) or ENOMEM.
 */
struct xml_node *stored_xml_parse(struct xml_pool *pool, struct arena *a, const char *text,
				  size_t len);

/* True when el has no attributes (namespace declarations aside) and no children. */
bool stored_xml_is_empty(const struct xml_node *el);

#endif
