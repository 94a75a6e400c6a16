/* SPDX-License-Identifier: MIT */
/*
 * IoT provisioning (XEP-0324) at provisioning.DOMAIN, with the owner
 * interface of /work/shared/specs/iot-provisioning-owner.md, and its
 * enforcement in routing: the server, not the thing, applies the rules.
 *
 * A provisioned thing is an account claimed in the thing registry
 * (XEP-0347, registry.c) by another JID, its owner. Its owner and the
 * thing's own resources may do anything; everyone else needs a rule:
 *
 *  - friendship: a presence subscription request to the thing is
 *    approved by the server (the requester gains the thing's presence)
 *    when a rule allows it, and answered "unsubscribed" otherwise; it
 *    never reaches the thing;
 *  - read-out (XEP-0323 <req/>, <cancel/>) and control (XEP-0325 <set/>,
 *    <getForm/>), in iq or message: without permission the sender gets
 *    'forbidden' and the stanza never reaches the thing; a permission
 *    limited to some nodes, fields or parameters narrows the request
 *    before delivery (nodes and fields named in the <req/>, parameters
 *    taken out of the <set/>), and sensor data the thing sends back to
 *    such a reader is filtered to the permitted fields too;
 *  - with no rule for a question the answer is "no" at once, and the
 *    owner is asked: a <message/> from the service (stored offline when
 *    the owner is away) with <isFriend/>, <canRead/> or <canControl/>
 *    carrying a key; the same question is asked again only after
 *    PROV_QUESTION_INTERVAL.
 *
 * Owners manage rules with iq sets to the service (isFriendRule,
 * canReadRule, canControlRule, deleteRules, clearCache; getDevices lists
 * their things). Rules persist (iot_rules) and are kept in memory for the
 * routing decisions. A change reaches the thing as a <clearCache/> iq to
 * each of its sessions, or at its next available presence when offline.
 * Things may also ask the service themselves (isFriend, canRead,
 * canControl); the answers come from the same rules.
 *
 * IoT requests (XEP-0323/0325 iqs) addressed to a thing's bare JID are
 * delivered to its available resource with the highest priority, and the
 * answer is returned from the bare JID, so that clients written after the
 * XEP examples (which address bare JIDs) work.
 *
 * State is process-wide and used by one worker (as the session directory
 * is); loaded at startup before the storage thread starts.
 */
#ifndef STANZAD_PROVISIONING_H
#define STANZAD_PROVISIONING_H

#include <stdbool.h>

#include "xml.h"

struct config;
struct conn;
struct jid;
struct session;
struct storage;
struct worker;

#define PROV_LABEL		"provisioning"	/* the service is provisioning.DOMAIN */
#define PROV_QUESTIONS_MAX	1024	/* questions to owners remembered */
#define PROV_QUESTION_INTERVAL	3600	/* seconds before the same question is asked again */
#define PROV_BARE_IQS_MAX	256	/* IoT iqs to bare JIDs awaiting the thing's answer */
#define PROV_BARE_IQ_TIMEOUT	120	/* seconds such an answer is waited for */

/* service.c: whether provisioning.DOMAIN runs (config key provisioning). */
bool provisioning_enabled(const struct config *cfg);

/* service.c: a stanza for provisioning.DOMAIN. */
void provisioning_service_route(struct worker *w, struct conn *src, struct xml_node *st,
				const struct jid *from, const struct jid *to);

/*
 * Startup (before the storage thread owns the store): things and rules,
 * each thing in the table of its home worker (worker_home: the workers
 * must be counted and the homes configured already). 0 or -errno.
 */
struct server;
int provisioning_init(const struct server *srv, struct storage *st);
void provisioning_shutdown(void);

/*
 * The router's hook for a message or iq to a local account (router.c,
 * route_local): enforces the rules on XEP-0323/0325 stanzas, delivers
 * IoT iqs addressed to a bare JID. Returns true when it took the stanza
 * (answered, dropped or delivered), false to let routing go on (st may
 * have been narrowed). Costs a few compares for other stanzas. Runs at
 * the recipient's home; what depends on the sender being a thing (the
 * answer to an iq delivered for its bare JID, sensor data it sends) is
 * done here only for senders that are not local clients.
 */
bool provisioning_route(struct worker *w, struct conn *src, struct xml_node *st,
			const struct jid *from, const struct jid *to);

/*
 * c2s.c's hook for a message or iq a local client sends to `to`, before
 * it is routed, at the sender's home (where a thing's table entry is):
 * an answer to an iq delivered for its bare JID gets the bare JID as
 * 'from', sensor data for another account is narrowed to what the
 * reader may see.
 */
void provisioning_outbound(struct worker *w, struct xml_node *st, const struct jid *from,
			   const struct jid *to);

/*
 * presence.c's hook for an inbound subscription request from contact to
 * user (both bare): true when the service decided it (approved or
 * refused; the request goes no further), false when user is not a
 * provisioned thing or contact may befriend it freely (its owner).
 */
bool provisioning_subscribe(struct worker *w, struct xml_node *st, const struct jid *contact,
			    const struct jid *user);

/* presence.c's hook: s became available (a clearCache may be waiting for it). */
void provisioning_available(struct worker *w, struct session *s);

/*
 * control.c ("provisioning refresh JID", sent by `stanzactl device import`
 * for each device it enrolled): reads the thing's owner and rules from
 * the store again, so that a device enrolled with an owner is provisioned
 * before its first session (requests queued offline for it included),
 * and one whose owner changed or went is released. 0 or -ENOMEM.
 */
int provisioning_refresh(struct worker *w, const char *bare);

/*
 * Cluster mode (cluster.c): the services' owner changed the thing's owner
 * or rules in the shared store; this node's table entry is read again
 * and replaced (or removed), without telling anyone. Any worker. 0 or
 * -ENOMEM.
 */
int provisioning_reload(struct worker *w, const char *bare);

/*
 * ---- For the registry (registry.c), on any worker ----
 * The change is made at the thing's home worker (posted there when it
 * is another one).
 */

/* thing (bare) was claimed by owner: provisioned from now on, without rules. */
void provisioning_thing_owned(struct worker *w, const char *thing, const char *owner);

/* thing was disowned or unregistered: no longer provisioned, its rules gone. */
void provisioning_thing_released(struct worker *w, const char *thing);

/*
 * The owner of a provisioned thing, or NULL. Only at the thing's home
 * worker (elsewhere: NULL); other workers ask the store (iot_db_thing_load).
 */
const char *provisioning_owner(struct worker *w, const char *thing);

#endif
