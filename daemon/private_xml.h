/* SPDX-License-Identifier: MIT */
/*
 * XEP-0049 Private XML Storage: an account keeps namespaced elements on
 * the server (bookmarks, client preferences), one stored element per
 * (namespace, element name), for its own eyes only.
 *
 * Rules chosen where the XEP leaves room:
 *  - get and set carry one or more child elements; a get answers each one
 *    with the stored element or, when none is stored, the element as
 *    asked (empty). No child: not-acceptable (the XEP's "Bad Format" is
 *    not an RFC 6120 condition; not-acceptable is what it requires for a
 *    set without one and lists as common practice for a get).
 *  - reserved namespaces (XEP-0049 section 2.3: 'jabber:...',
 *    'http://jabber.org/...', 'vcard-temp', and no namespace at all):
 *    not-acceptable.
 *  - addressed to another account: forbidden.
 *  - an element larger than max_private_bytes once serialized:
 *    not-acceptable with a text naming the limit; more than
 *    PRIVATE_MAX_ITEMS stored elements per account: not-acceptable too.
 *  - setting an element with no attributes and no children deletes the
 *    stored one.
 */
#ifndef STANZAD_PRIVATE_XML_H
#define STANZAD_PRIVATE_XML_H

#include <stdbool.h>
#include <stddef.h>

#include "iq.h"

struct storage;

#define NS_PRIVATE		"jabber:iq:private"
/* Elements in one request (the stanza size bounds it too). */
#define PRIVATE_MAX_PER_REQUEST	32
/* Distinct elements one account may keep. */
#define PRIVATE_MAX_ITEMS	256

void private_xml_get(struct iq_request *rq);
void private_xml_set(struct iq_request *rq);

/* True when ns may not be used for private storage (see above). */
bool private_xml_ns_reserved(const char *ns);

/*
 * The store (storage thread; storage_private_xml.c). `user` is a
 * normalized localpart.
 */
/* The stored element text (malloc'd) in *xml. 0, -ENOENT, -EIO. */
int private_xml_store_get(struct storage *st, const char *user, const char *ns,
			  const char *name, char **xml, size_t *len);
/*
 * Stores (replacing) or, with xml NULL, deletes one element. 0, -ENOENT
 * (no such account), -ENOSPC (PRIVATE_MAX_ITEMS reached), -EIO, -EBUSY.
 */
int private_xml_store_set(struct storage *st, const char *user, const char *ns,
			  const char *name, const char *xml, size_t len);

#endif
