/* SPDX-License-Identifier: MIT */
/*
 * XEP-0398 "urn:xmpp:pep-vcard-conversion:0" (advertised on accounts):
 * an account's avatar kept in both places clients look for it,
 *  - XEP-0084: PEP nodes urn:xmpp:avatar:data (item id = SHA-1 of the
 *    image, base64 payload) and urn:xmpp:avatar:metadata (<info/>), and
 *  - XEP-0153: the vCard PHOTO (TYPE, BINVAL), whose SHA-1 goes into the
 *    account's presence as <x xmlns='vcard-temp:x:update'><photo/>.
 *
 * A client's publish to the metadata node: the data item its first
 * <info/> without a url names is looked up, its SHA-1 checked against
 * the id, and the vCard PHOTO replaced (empty metadata: PHOTO removed).
 * A client's vCard set with a PHOTO: the image is published to the data
 * node, then its <info/> to the metadata node (both with the PEP
 * defaults when created), each notified as a client publish. What the
 * server writes on the account's behalf triggers nothing, so the two
 * never echo.
 *
 * Presence: the hash of the stored PHOTO is loaded with the account and
 * kept current by both conversions; the account's available presence
 * gets the vcard-temp:x:update element unless the client put one in.
 */
#ifndef STANZAD_AVATAR_COMPAT_H
#define STANZAD_AVATAR_COMPAT_H

#include <stddef.h>

#define NS_AVATAR_DATA		"urn:xmpp:avatar:data"
#define NS_AVATAR_METADATA	"urn:xmpp:avatar:metadata"
#define NS_PEP_VCARD_CONVERSION	"urn:xmpp:pep-vcard-conversion:0"
#define NS_VCARD_UPDATE		"vcard-temp:x:update"
#define AVATAR_HASH_HEX		40	/* SHA-1, lower-case hex */
#define AVATAR_TYPE_MAX		63	/* bytes of a MIME type carried */

struct storage;
struct session;
struct worker;
struct xml_node;

/* pubsub.c: a client published to `user`'s avatar metadata node. */
void avatar_compat_pep_changed(struct worker *w, const char *user);
/* vcard.c: a client stored (xml) or deleted (xml NULL) `user`'s vCard. */
void avatar_compat_vcard_set(struct worker *w, const char *user, const char *xml, size_t len);
/* presence.c: s broadcasts available presence st; the photo hash is added. */
void avatar_compat_presence(struct worker *w, struct session *s, struct xml_node *st);
/*
 * account.c (storage thread): the SHA-1 (hex) of the PHOTO of `user`'s
 * stored vCard into hash (AVATAR_HASH_HEX + 1 bytes; "" when none). 0 or
 * -errno.
 */
int avatar_compat_load(struct storage *st, const char *user, char *hash);

#endif
