/* SPDX-License-Identifier: MIT */
/*
 * XEP-0280 Message Carbons: a session that sent <enable/> gets a copy of
 * the account's instant messages that went to or came from its other
 * resources, wrapped (XEP-0297) in <received/> or <sent/>, from the
 * account's bare JID to the session's full JID.
 *
 * Which messages (section 6.1): none with <private xmlns='urn:xmpp:carbons:2'/>
 * or a <no-copy xmlns='urn:xmpp:hints'/> hint (XEP-0334), none of type
 * groupchat, none that already wrap a carbon; then type chat, type normal
 * with a <body/>, messages carrying IM payloads (receipts XEP-0184, chat
 * states XEP-0085, markers XEP-0333), conference invitations (XEP-0249
 * and mediated XEP-0045), and errors that echo such content. Private
 * messages from a MUC occupant (<x xmlns='...muc#user'/>, received) are
 * not copied: the MUC delivers them to every joined client already.
 *
 * Who gets copies:
 *  - received: the carbons-enabled sessions of the recipient account that
 *    did not get the message itself under RFC 6121 8.5 (for a full JID,
 *    every other one; for a bare JID, those outside the delivery set of
 *    highest priority, or of non-negative priority for headlines), and
 *    never the sending session;
 *  - sent: the carbons-enabled sessions of the sender's account other
 *    than the sender. A message to the sender's own account gets
 *    received copies only (one copy per session, not two).
 */
#ifndef STANZAD_CARBONS_H
#define STANZAD_CARBONS_H

#include <stdbool.h>

#include "xml.h"

#define NS_CARBONS	"urn:xmpp:carbons:2"
#define NS_FORWARD	"urn:xmpp:forward:0"
#define NS_HINTS	"urn:xmpp:hints"

struct conn;
struct iq_request;
struct jid;
struct worker;

/* iq set <enable/> / <disable/> (IQ_SCOPE_SERVER | IQ_SCOPE_ACCOUNT). */
void carbons_enable(struct iq_request *rq);
void carbons_disable(struct iq_request *rq);

/*
 * Whether a message is eligible for carbons (the rules above); `received`
 * selects the rules for a message arriving at the account (true) or sent
 * by one of its clients (false).
 */
bool carbons_eligible(const struct xml_node *msg, bool received);

/*
 * A client of c's account sent `st` to `to` (called before routing, after
 * the block list let it pass): sent copies to the other enabled sessions.
 * Any stanza kind may be passed; only messages are copied.
 */
void carbons_sent(struct conn *c, const struct xml_node *st, const struct jid *to);

/*
 * `st` from `from` was just routed to the local account of `to` (after the
 * delivery decision): received copies to the enabled sessions that did
 * not get it. Any stanza kind may be passed; only messages are copied.
 */
void carbons_received(struct worker *w, const struct xml_node *st, const struct jid *from,
		      const struct jid *to);

#endif
