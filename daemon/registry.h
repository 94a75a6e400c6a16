/* SPDX-License-Identifier: MIT */
/*
 * The thing registry (XEP-0347) at registry.DOMAIN.
 *
 *  - register (a thing, about itself or a node behind it): meta tags
 *    replace the earlier ones; a claimed thing is answered <claimed/> with
 *    its owner and nothing changes; selfOwned='true' registers it as
 *    public and claimed by itself.
 *  - mine (an owner): claims the unclaimed thing whose tags are exactly
 *    the given ones (names case-insensitive, order free, the KEY tag
 *    included), public unless public='false'. Answered <claimed jid/>;
 *    the thing is told with an iq <claimed/>; owner and thing become
 *    friends (subscription 'both' in both rosters, made by the server)
 *    and the thing is provisioned for its owner (provisioning.h).
 *    Otherwise item-not-found, whatever the reason.
 *  - search: public claimed things matching all the operators
 *    (registry_search.h), offset/maxCount paging, more='true' when there
 *    are more; KEY is never searched nor shown.
 *  - update: by the thing (claimed: its tags change; unclaimed:
 *    <disowned/>; not registered or removed: item-not-found) or by its
 *    owner naming it with 'jid'. An empty string value deletes a tag.
 *  - remove (owner): out of the registry (never found again), still
 *    owned and provisioned; the thing is told with an iq <removed/>.
 *  - unregister (a thing): its registration is deleted (always answered
 *    with an empty result).
 *  - disown (owner): only while the thing is online: it gets an iq
 *    <disowned/>; when it acknowledges, the thing is unclaimed, its tags
 *    replaced by a random KEY, its rules dropped and the friendship ended;
 *    no answer within REGISTRY_DISOWN_TIMEOUT_MS, an error, or offline:
 *    not-allowed.
 *
 * Registrations persist (iot_things, iot_tags; storage_iot.c).
 */
#ifndef STANZAD_REGISTRY_H
#define STANZAD_REGISTRY_H

#include <stdbool.h>

#include "strbuf.h"
#include "xml.h"

struct config;
struct conn;
struct iot_found;
struct jid;
struct worker;

#define REGISTRY_LABEL			"registry"	/* the service is registry.DOMAIN */
#define REGISTRY_NODES_MAX		256	/* registrations behind one JID (XEP-0326 nodes) */
#define REGISTRY_SEARCH_DEFAULT		20	/* things per search page without maxCount */
#define REGISTRY_SEARCH_MAX		100	/* maxCount is lowered to this */
#define REGISTRY_RESULT_MAX_BYTES	(64 * 1024)	/* a page stops growing here (more='true') */
#define REGISTRY_DISOWN_TIMEOUT_MS	10000	/* the thing's answer to <disowned/> */
#define REGISTRY_KEY_BYTES		16	/* random bytes of the KEY of a disowned thing */

/* service.c: whether registry.DOMAIN runs (config key registry). */
bool registry_enabled(const struct config *cfg);

/* service.c: a stanza for registry.DOMAIN. */
void registry_route(struct worker *w, struct conn *src, struct xml_node *st,
		    const struct jid *from, const struct jid *to);

/* Frees disowns still waiting for their thing (at exit, after the workers). */
void registry_shutdown(void);

/*
 * Appends <thing owner jid [nodeId sourceId cacheType]> with its tags
 * (KEY left out) to b: the element of search results, also used by
 * provisioning's getDevices.
 */
void registry_found_append(struct strbuf *b, const struct iot_found *t);

#endif
