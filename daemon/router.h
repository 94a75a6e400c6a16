/* SPDX-License-Identifier: MIT */
/*
 * Routing (RFC 6120 section 10, RFC 6121 section 8.5): where a stanza from
 * a local session goes, by the kind and type of stanza and whether the
 * address is the server, a bare JID or a full JID.
 */
#ifndef STANZAD_ROUTER_H
#define STANZAD_ROUTER_H

#include "xml.h"

struct conn;
struct jid;

/*
 * Routes `st`, sent by the session on `src` whose full JID is `from` (the
 * stanza's 'from' attribute is already stamped). `to` is the parsed 'to',
 * or NULL when absent. Errors go back to `src`; error stanzas are never
 * answered with errors.
 */
void router_route(struct conn *src, struct xml_node *st, const struct jid *from,
		  const struct jid *to);

/* Sends an error reply for `st` back to `src` (unless st is an error). */
void router_bounce(struct conn *src, const struct xml_node *st, const char *condition);

#endif
