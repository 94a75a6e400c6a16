/* SPDX-License-Identifier: MIT */
/*
 * XEP-0352 Client State Indication: a client says <inactive/> when its
 * user is not looking (a phone with its screen off) and <active/> when
 * the user is back. While a session is inactive the server holds back
 * presence broadcasts (available and unavailable presence), keeping only
 * the latest one per sender full JID: a contact that changes status ten
 * times costs the sleeping client one stanza, delivered later.
 *
 * Everything else passes at once: messages, iq, subscription and error
 * presence. Before such a stanza goes out the held presence is flushed,
 * so the client never sees a message from a contact before that
 * contact's earlier presence (the order Prosody's mod_csi_simple keeps
 * too: "important" stanzas flush its queue first). <active/> flushes
 * the held presence before the next stanza of the stream is processed
 * (XEP-0352 section 5.1). Held presence carries a XEP-0203 delay stamp.
 *
 * Bounds: at most max_csi_held_presence senders and max_csi_held_bytes
 * of held stanzas per session; at either limit everything held is
 * delivered and holding starts over. A session holds nothing (a NULL
 * pointer) while active or while nothing is held.
 */
#ifndef STANZAD_CSI_H
#define STANZAD_CSI_H

#include <stdbool.h>

#include "xml.h"

#define NS_CSI		"urn:xmpp:csi:0"
/* The stream feature, offered once the client is authenticated. */
#define CSI_FEATURE	"<csi xmlns='" NS_CSI "'/>"

struct conn;
struct session;

/* c2s ready-state handler for <active/> and <inactive/>. Returns true. */
bool csi_element(struct conn *c, struct xml_node *el);

/*
 * Delivery hook (router_deliver), for a session with a connection: true
 * when `st` was held (copied; the caller must not send it), false when
 * the caller sends it now (anything held went out first).
 */
bool csi_hold(struct session *s, struct xml_node *st);

/*
 * A resumed stream starts active (XEP-0352 section 5.2): call once the
 * resumption answer is out; held presence is delivered.
 */
void csi_stream_resumed(struct session *s);

/* The session ends: held presence is dropped and freed. */
void csi_session_end(struct session *s);

#endif
