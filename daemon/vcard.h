/* SPDX-License-Identifier: MIT */
/*
 * XEP-0054 vcard-temp: an account stores its own vCard; anyone may read
 * the vCard of a local account by asking its bare JID, and the server
 * answers on the account's behalf.
 *
 * Errors, as the XEP asks:
 *  - own vCard, none stored: a result with an empty <vCard/>;
 *  - another account's vCard, none stored or no such account: the same
 *    service-unavailable in both cases (no directory harvesting);
 *  - a set addressed anywhere but the sender's own account: forbidden;
 *  - larger than max_vcard_bytes once serialized: not-acceptable (as
 *    XEP-0060 answers a payload that is too big), with a text naming the
 *    limit.
 * Storing a <vCard/> without children deletes the stored one.
 */
#ifndef STANZAD_VCARD_H
#define STANZAD_VCARD_H

#include <stddef.h>

#include "iq.h"

struct storage;

#define NS_VCARD	"vcard-temp"

void vcard_get(struct iq_request *rq);
void vcard_set(struct iq_request *rq);

/*
 * The store (storage thread; storage_vcard.c). `user` is a
 * normalized localpart.
 */
/* The stored vCard text (malloc'd, NUL-terminated) in *xml. 0, -ENOENT, -EIO. */
int vcard_store_get(struct storage *st, const char *user, char **xml, size_t *len);
/*
 * Stores xml[0..len) as the account's vCard, replacing any; xml NULL
 * deletes it. 0, -ENOENT (no such account), -EIO or -EBUSY.
 */
int vcard_store_set(struct storage *st, const char *user, const char *xml, size_t len);

#endif
