/* SPDX-License-Identifier: MIT */
/*
 * Cluster mode (docs/clustering.md): several stanzad nodes serving one
 * domain, with Redis holding the node membership, the session registry
 * and the queues of stanzas between nodes.
 *
 * Worker 0 owns the cluster's state and two Redis connections: one for
 * membership, registry commands and the XADDs of stanzas for other
 * nodes, one subscribed to the registry's event channel. Every worker
 * has one more, blocked reading its own inbound stream, so a stanza from
 * another node arrives at its recipient's home worker. Workers tell
 * worker 0 about their sessions and their stanzas for other nodes by
 * mailbox message, and read the replica of the other nodes' sessions (a
 * table under a read-write lock) when they route.
 */
#ifndef STANZAD_CLUSTER_H
#define STANZAD_CLUSTER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster_util.h"

struct server;
struct worker;
struct session;
struct xml_node;
struct jid;
struct conn;

/*
 * Reads the cluster settings (cluster, node_name, cluster_ttl) and, when
 * cluster mode is on, claims the node name in Redis: a live node with
 * the same name makes this fail with a message on stderr (-EADDRINUSE).
 * Redis being unreachable is not fatal: the node joins once it answers.
 * Before the workers start. 0 or -errno.
 */
int cluster_init(struct server *srv);
/* After the workers ended. */
void cluster_shutdown(void);

/* Whether cluster mode is on (cheap: for the hooks on hot paths). */
bool cluster_enabled(void);

/* Each worker: its timer and inbound connection; worker 0 also the others. */
int cluster_worker_start(struct worker *w);
void cluster_worker_stop(struct worker *w);
/* Worker 0 is shutting down: leave the cluster (best effort, while the loop still runs). */
void cluster_leave(struct worker *w);
/* The cluster timer fired (WORKER_WATCH_CLUSTER). */
void cluster_watch(struct worker *w);
/* A completion of loop_poll for a Redis connection. */
void cluster_polled(struct worker *w, uint32_t id, uint32_t gen, int res, bool more);

/*
 * Registry hooks, on the session's home worker: a session was bound or
 * its availability or priority changed (update), or it ended (end).
 */
void cluster_session_update(struct worker *w, const struct session *s);
void cluster_session_end(struct worker *w, const struct session *s);

/*
 * Routing (router.c): a stanza for the local account `to` that has no
 * session on this node. When the replica shows sessions of that account
 * on other nodes, the stanza goes to their inbound streams and this
 * returns true; false: route it here as usual (offline storage, bounce).
 */
bool cluster_route(struct worker *w, struct conn *src, struct xml_node *st,
		   const struct jid *from, const struct jid *to);

/*
 * Presence broadcast to contacts on other nodes (presence.c): contacts
 * without a session on this worker are added as they are met (those the
 * replica shows available on other nodes are kept, grouped by node);
 * then one stream entry per node carries the presence once with the list
 * of its recipients there. `tmpl` is the presence serialized without
 * 'to', `from` the sender's full JID. send frees cf (NULL is fine).
 */
struct cluster_fanout;
void cluster_fanout_add(struct cluster_fanout **cf, const char *jid, size_t len);
void cluster_fanout_send(struct worker *w, struct cluster_fanout *cf, const char *tmpl,
			 size_t tlen, const char *from);

/*
 * The services (conference., pubsub., upload., the IoT registry and
 * provisioning) run on one node at a time, the holder of the lease
 * PREFIX owner:services (docs/clustering.md, "Services: one owner
 * node"). Worker 0, for a stanza addressed to a service: false when
 * this node serves it (cluster mode off, or we hold the lease); true
 * when it was sent to the owner's worker 0, or answered
 * service-unavailable while no owner is known.
 */
bool cluster_service_route(struct worker *w, struct conn *src, struct xml_node *st,
			   const struct jid *from, const struct jid *to);

/*
 * Whether a local account's JID (full: that resource; bare: any
 * available one) has sessions on another node, by the replica: the
 * services route what they send such a recipient instead of looking for
 * a session here. Any worker.
 */
bool cluster_elsewhere(const char *jid, size_t len);

/*
 * The services' owner changed a thing's owner or rules in the shared
 * store (registry.c, provisioning.c): every other node reads that thing
 * again into its provisioning table (provisioning_reload), through the
 * events channel ("prov NODE THING"). Any worker.
 */
void cluster_provisioning_changed(struct worker *w, const char *thing);

/*
 * Calls fn for each resource of the local account `bare` on other nodes
 * (full JIDs, from the replica): the services address such sessions
 * themselves (the registry's notices to a thing). Any worker; fn may
 * route. Returns how many.
 */
unsigned cluster_each_resource(const char *bare, void (*fn)(void *arg, const char *full),
			       void *arg);

/*
 * One account, sessions on several nodes (docs/clustering.md, "One
 * account on several nodes"). The node that routes a stanza for the
 * account does the recipient's side once (block list, archive, the
 * choice of resources, carbons) and hands copies to the chosen sessions
 * on other nodes, which deliver them as they are.
 */

/* A resource of the account on another node, from the replica. */
struct cluster_res {
	const char *full;	/* bare/resource */
	struct cluster_sess v;	/* its node, worker, priority, availability, flags */
};

/*
 * The account bare[0..len)'s resources on other nodes: an array of
 * *count (free() it; NULL and 0 when none, or cluster mode is off or
 * not joined). Any worker.
 */
struct cluster_res *cluster_resources(const char *bare, size_t len, size_t *count);

/* Whether the account bare[0..len) has a session (any) on another node. Any worker. */
bool cluster_account_elsewhere(const char *bare, size_t len);

/*
 * Sends st to the session r on its node, delivered there as it is (its
 * 'to' unchanged; the recipient's side of routing ran here). `src`: the
 * sender's connection here, whose SM ack waits for the stream (or NULL).
 */
void cluster_deliver(struct worker *w, struct conn *src, struct xml_node *st, const char *from,
		     const struct cluster_res *r);

/*
 * A stanza for the bare JID `to` routed here (presence): also sent to the
 * other nodes with available resources of the account, where it reaches
 * those (and goes no further). Whether any node was sent it.
 */
bool cluster_route_others(struct worker *w, struct conn *src, struct xml_node *st,
			  const struct jid *from, const struct jid *to);

/*
 * A roster push (an iq with the changed item, no 'to') for the account
 * bare[0..len): every other node with a session of the account applies
 * the item to its copy of the roster and pushes it to its interested
 * resources (roster_pushed_elsewhere).
 */
void cluster_roster_push(struct worker *w, const char *bare, size_t len, struct xml_node *iq);

/*
 * Stream management resumption of a session another node holds (sm.c):
 * asks every other node with a session of the account `bare` for the
 * one with resumption id `id`, for connection c of worker w; each
 * answers sm_take_answered() on w. Returns how many nodes were asked (0:
 * none, or cluster mode is off or not joined).
 */
unsigned cluster_sm_take(struct worker *w, struct conn *c, const char *bare, const char *id);

/* `stanzactl cluster status`: a JSON object (the caller owns it). Worker 0. */
json_t *cluster_status_json(struct server *srv);

#endif
