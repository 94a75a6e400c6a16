/* SPDX-License-Identifier: MIT */
/*
 * Routing (RFC 6120 section 10, RFC 6121 section 8.5): where a stanza from
 * a local session goes, by the kind and type of stanza and whether the
 * address is the server, a bare JID or a full JID.
 */
#ifndef STANZAD_ROUTER_H
#define STANZAD_ROUTER_H

#include <stdbool.h>

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

struct session;

/*
 * Delivers `st` to a local session. The single path of every delivery, so
 * features that filter or hold stanzas (block lists, client state
 * indication) and stream management see each one.
 */
void router_deliver(struct session *s, struct xml_node *st);

/*
 * The same for one copy of a fan-out (presence broadcast): data[0..len)
 * is st serialized for this recipient, with 'to' = `to` (st itself may
 * carry another 'to' or none). Filters and hooks see st with `to` set
 * for the duration of the call; a hook that keeps the stanza copies the
 * tree; what goes out on the stream is `data` (no serialization here).
 * to/data may be NULL: then this is router_deliver().
 */
void router_deliver_prepared(struct session *s, struct xml_node *st, const char *to,
			     const char *data, size_t len);

/* Sends an error reply for `st` back to `src` (unless st is an error). */
void router_bounce(struct conn *src, const struct xml_node *st, const char *condition);

struct worker;

/* The same with an explicit worker; src NULL finds the sender by 'from'. */
void router_route_w(struct worker *w, struct conn *src, struct xml_node *st,
		    const struct jid *from, const struct jid *to);
void router_bounce_w(struct worker *w, struct conn *src, const struct xml_node *st,
		     const char *condition);

/*
 * Whether the local account of `jid` (bare or full, normalized) is at home
 * on another worker: its sessions and state are not in w->sessions.
 */
bool router_home_elsewhere(struct worker *w, const char *jid, size_t len);
/*
 * Routes st (a tree the caller keeps, 'from' set) to `to` (a full or bare
 * JID of a local account): 'to' is set for the call only, the router
 * forwards it to the account's home, where it is delivered as any routed
 * stanza. For fan-outs of the services on worker 0 to sessions at home
 * elsewhere, and answers to requesters at home elsewhere. Without 'from'
 * (the server answering for the account itself) it comes from the bare
 * 'to'. 0, or -EINVAL (unusable addresses).
 */
int router_route_copy(struct worker *w, struct xml_node *st, const char *to, size_t to_len);

/*
 * Where a stanza forwarded to its recipient's home worker came from
 * (docs/account-homes.md, section 0). At the home it is routed with
 * src == NULL, which otherwise means "the server itself or another
 * domain": these flags tell the difference.
 */
struct route_origin {
	const struct xml_node *st;	/* the stanza they describe (at its home) */
	bool from_local_session;	/* sent by a local client session */
	bool held_ack;			/* that session's SM ack waits for a release */
	unsigned origin_worker;		/* the worker that forwarded it (the sender's home) */
	const char *sender;		/* the sender's full JID (held_ack) */
	bool from_cluster;		/* came from another node's stream: never sent on again */
};

/*
 * What another node routed for the account `to` here, its recipient's
 * side done there (cluster.c: cluster_deliver), or a copy that could not
 * leave this node: delivered to the session `to` as it is, or, the
 * session being gone, a message is stored offline (the account's other
 * resources may have had their own copy); a carbon copy or presence for
 * a gone session is dropped. Any worker (taken to the account's home).
 */
void router_deliver_cluster(struct worker *w, struct xml_node *st, const struct jid *from,
			    const struct jid *to);

/*
 * A stanza another node sent (cluster.c): routed as one forwarded from
 * another worker, at the recipient's home (through its mailbox when that
 * is another worker), with the sender's origin. delivered = true: it
 * came for a session here and is never sent to another node again (no
 * ping-pong on a stale replica); false: a dead node's stanza taken over
 * by this node (it may go wherever the recipient is now).
 */
void router_route_cluster(struct worker *w, struct xml_node *st, const struct jid *from,
			  const struct jid *to, bool from_local_session, bool delivered);

/*
 * Takes over the sender's held stream-management ack of the forwarded
 * stanza st being routed (cluster.c: it is released once the stanza is
 * in another node's stream, not when the routing here ends). Copies the
 * sender's full JID into sender (size bytes) and its home worker into
 * *worker. false when st's ack is not held.
 */
bool router_take_held_ack(struct worker *w, const struct xml_node *st, unsigned *worker,
			  char *sender, size_t size);

/* The origin of `st` when it is a forwarded stanza being routed at home, else NULL. */
const struct route_origin *router_origin(const struct worker *w, const struct xml_node *st);
/* Whether st was sent by a local client session: src set, or forwarded from one. */
bool router_from_local_session(const struct worker *w, const struct conn *src,
			       const struct xml_node *st);

/*
 * homes = loop (config.c): stanzas forwarded to this worker by itself are
 * routed before anything later delivers directly (end of a client stanza).
 */
void router_forwards_settle(struct worker *w);

/* Frees the worker's spare messages of forwarded stanzas (at its end). */
void router_worker_destroy(struct worker *w);

/*
 * Routes a stanza the server itself holds (e.g. unacknowledged stanzas of
 * an ended session, offline messages): addresses from its attributes,
 * errors to the sender's session if it is local. 0, or -EINVAL for a
 * stanza without a valid 'from' or with a malformed 'to'.
 */
int router_route_stanza(struct worker *w, struct xml_node *st);

#endif
