/* SPDX-License-Identifier: MIT */
/*
 * XEP-0402 "urn:xmpp:bookmarks:1#compat" (section 7, XEP-0411): an
 * account's bookmarks kept in both places clients look for them,
 *  - XEP-0049 private XML <storage xmlns='storage:bookmarks'/>, and
 *  - XEP-0402 PEP node urn:xmpp:bookmarks:1 (one item per room, the
 *    item id being the room's JID).
 *
 * A client's private XML set of storage:bookmarks replaces the PEP items
 * (changed and new rooms published, rooms gone retracted, each notified
 * as a client's publish; unchanged ones untouched). A client's publish
 * or retract on the PEP node rewrites the private XML from every item
 * (XEP-0402 "Publishing via this specification"). What the server writes
 * on the account's behalf triggers nothing, so the two never echo.
 *
 * What is carried: the room JID, name, autojoin, nick and password.
 * XEP-0048 <url/> bookmarks have no PEP counterpart: a rewrite from PEP
 * keeps those already in the private element. XEP-0402 <extensions/>
 * have no XEP-0048 counterpart and are not carried.
 */
#ifndef STANZAD_BOOKMARKS_COMPAT_H
#define STANZAD_BOOKMARKS_COMPAT_H

#include <stddef.h>

#define NS_BOOKMARKS_LEGACY	"storage:bookmarks"
#define NS_BOOKMARKS_COMPAT	"urn:xmpp:bookmarks:1#compat"
/* Rooms one conversion carries (more: the conversion is skipped, logged). */
#define BOOKMARKS_COMPAT_MAX	256

struct worker;

/*
 * private_xml.c: `user`'s storage:bookmarks element was stored (xml the
 * stored text) or deleted (xml NULL) by a client.
 */
void bookmarks_compat_private_set(struct worker *w, const char *user, const char *xml,
				  size_t len);
/* pubsub.c: a client published to or retracted from `user`'s bookmarks node. */
void bookmarks_compat_pep_changed(struct worker *w, const char *user);

#endif
