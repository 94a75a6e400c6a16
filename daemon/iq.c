/* SPDX-License-Identifier: MIT */
#include <string.h>

#include "adhoc.h"
#include "blocking.h"
#include "carbons.h"
#include "conn.h"
#include "entity_time.h"
#include "extdisco.h"
#include "iq.h"
#include "last_activity.h"
#include "log.h"
#include "mam.h"
#include "offline.h"
#include "pep.h"
#include "private_xml.h"
#include "pubsub.h"
#include "push.h"
#include "roster.h"
#include "router.h"
#include "server.h"
#include "stanza.h"
#include "vcard.h"
#include "worker.h"

/* Every iq payload the server itself understands. */
static const struct iq_handler iq_handlers[] = {
	{ NS_PING, "ping", IQ_SCOPE_SERVER | IQ_SCOPE_ACCOUNT, ping_get, NULL, NS_PING },
	{ NS_DISCO_INFO, "query", IQ_SCOPE_SERVER | IQ_SCOPE_ACCOUNT | IQ_SCOPE_CONTACT,
	  disco_info_get, NULL, NS_DISCO_INFO },
	{ NS_DISCO_ITEMS, "query", IQ_SCOPE_SERVER | IQ_SCOPE_ACCOUNT | IQ_SCOPE_CONTACT,
	  disco_items_get, NULL, NS_DISCO_ITEMS },
	{ NS_VERSION, "query", IQ_SCOPE_SERVER, version_get, NULL, NS_VERSION },
	{ NS_REGISTER, "query", IQ_SCOPE_SERVER | IQ_SCOPE_ACCOUNT | IQ_SCOPE_PREAUTH, register_get,
	  register_set, NS_REGISTER },
	{ NS_BLOCKING, "blocklist", IQ_SCOPE_SERVER | IQ_SCOPE_ACCOUNT, blocking_get, NULL,
	  NS_BLOCKING },
	{ NS_BLOCKING, "block", IQ_SCOPE_SERVER | IQ_SCOPE_ACCOUNT, NULL, blocking_set, NULL },
	{ NS_BLOCKING, "unblock", IQ_SCOPE_SERVER | IQ_SCOPE_ACCOUNT, NULL, blocking_set, NULL },
	{ NS_CARBONS, "enable", IQ_SCOPE_SERVER | IQ_SCOPE_ACCOUNT, NULL, carbons_enable,
	  NS_CARBONS },
	{ NS_CARBONS, "disable", IQ_SCOPE_SERVER | IQ_SCOPE_ACCOUNT, NULL, carbons_disable, NULL },
	{ NS_VCARD, "vCard", IQ_SCOPE_SERVER | IQ_SCOPE_ACCOUNT | IQ_SCOPE_CONTACT, vcard_get,
	  vcard_set, NS_VCARD },
	{ NS_PRIVATE, "query", IQ_SCOPE_SERVER | IQ_SCOPE_ACCOUNT, private_xml_get,
	  private_xml_set, NS_PRIVATE },
	/* Someone else's private XML: forbidden, and not a feature of that account. */
	{ NS_PRIVATE, "query", IQ_SCOPE_CONTACT, private_xml_get, private_xml_set, NULL },
	{ NS_TIME, "time", IQ_SCOPE_SERVER, entity_time_get, NULL, NS_TIME },
	{ NS_LAST, "query", IQ_SCOPE_SERVER | IQ_SCOPE_ACCOUNT | IQ_SCOPE_CONTACT,
	  last_activity_get, NULL, NS_LAST },
	{ NS_ROSTER, "query", IQ_SCOPE_ACCOUNT, roster_get, roster_set, NS_ROSTER },
	/* Someone else's roster: forbidden (RFC 6121 2.3.3). */
	{ NS_ROSTER, "query", IQ_SCOPE_CONTACT, roster_foreign, roster_foreign, NULL },
	/* XEP-0050 ad-hoc commands on the server JID (adhoc.c; XEP-0133 in admin.c). */
	{ NS_COMMANDS, "command", IQ_SCOPE_SERVER, NULL, adhoc_set, NS_COMMANDS },
	/* Feature only (XEP-0160): no element has an empty name, so nothing dispatches here. */
	{ OFFLINE_FEATURE, "", IQ_SCOPE_SERVER, NULL, NULL, OFFLINE_FEATURE },
	/*
	 * XEP-0163 PEP: pubsub at one's own bare JID or someone else's
	 * (pubsub.c; its features come from pubsub_disco_features()).
	 */
	{ NS_PUBSUB, "pubsub", IQ_SCOPE_ACCOUNT | IQ_SCOPE_CONTACT, pep_iq_get, pep_iq_set, NULL },
	{ NS_PUBSUB_OWNER, "pubsub", IQ_SCOPE_ACCOUNT | IQ_SCOPE_CONTACT, pep_iq_get, pep_iq_set,
	  NULL },
	/* XEP-0313 archive of the account (mam.c); XEP-0441 preferences; XEP-0359 stanza-ids. */
	{ NS_MAM, "query", IQ_SCOPE_ACCOUNT, mam_query_get, mam_query_set, NS_MAM },
	{ NS_MAM, "metadata", IQ_SCOPE_ACCOUNT, mam_metadata_get, NULL, NS_MAM_EXTENDED },
	{ NS_MAM, "prefs", IQ_SCOPE_ACCOUNT, mam_prefs_get, mam_prefs_set, NULL },
	{ NS_SID, "", IQ_SCOPE_ACCOUNT, NULL, NULL, NS_SID },
	/* Someone else's archive: forbidden (XEP-0313 section 9). */
	{ NS_MAM, "query", IQ_SCOPE_CONTACT, mam_foreign, mam_foreign, NULL },
	{ NS_MAM, "metadata", IQ_SCOPE_CONTACT, mam_foreign, mam_foreign, NULL },
	{ NS_MAM, "prefs", IQ_SCOPE_CONTACT, mam_foreign, mam_foreign, NULL },
	/* XEP-0357 push notifications: app servers of the account (push.c). */
	{ NS_PUSH, "enable", IQ_SCOPE_ACCOUNT, NULL, push_enable, NS_PUSH },
	{ NS_PUSH, "disable", IQ_SCOPE_ACCOUNT, NULL, push_disable, NULL },
	/* XEP-0215 STUN/TURN services and TURN credentials (extdisco.c). */
	{ NS_EXTDISCO, "services", IQ_SCOPE_SERVER, extdisco_services_get, NULL, NS_EXTDISCO },
	{ NS_EXTDISCO, "credentials", IQ_SCOPE_SERVER, extdisco_credentials_get, NULL, NULL },
};

#define N_IQ_HANDLERS (sizeof(iq_handlers) / sizeof(iq_handlers[0]))

struct arena *iq_arena(struct iq_request *rq)
{
	return &rq->w->tmp;
}

void iq_reply_node(struct iq_request *rq, struct xml_node *reply)
{
	if (!reply) {
		log_warn("iq.reply_failed", "conn=%llu msg=\"out of memory\"",
			 rq->conn ? (unsigned long long)rq->conn->id : 0ULL);
		return;
	}
	/* A request from another server or a component: the answer is routed back. */
	if (!rq->conn) {
		router_route_stanza(rq->w, reply);
		return;
	}
	conn_send_node(rq->conn, reply);
}

bool iq_remote_allowed(const struct iq_request *rq)
{
	static const struct {
		const char *ns, *name;
	} allowed[] = {
		{ NS_PING, "ping" }, { NS_DISCO_INFO, "query" }, { NS_DISCO_ITEMS, "query" },
		{ NS_VERSION, "query" }, { NS_TIME, "time" },
	};

	for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
		if (strcmp(rq->payload->ns, allowed[i].ns) == 0 &&
		    strcmp(rq->payload->name, allowed[i].name) == 0)
			return true;
	return false;
}

/*
 * The 'from' of an answer to a request that had no 'to': the domain for
 * the server's own services, none for what the server does on behalf of
 * the account (RFC 6120 8.1.2.1: absent or the bare JID, never the domain).
 */
static const char *iq_reply_self(const struct iq_request *rq)
{
	return rq->scope == IQ_SCOPE_ACCOUNT ? NULL : rq->w->srv->cfg->domain;
}

void iq_reply_result(struct iq_request *rq, struct xml_node *payload)
{
	const char *self = iq_reply_self(rq);
	struct xml_node *r = stanza_iq_result(iq_arena(rq), rq->iq, self);

	if (r && payload)
		xml_node_append(r, payload);
	iq_reply_node(rq, r);
}

void iq_reply_error(struct iq_request *rq, const char *condition, const char *text)
{
	const char *self = iq_reply_self(rq);

	iq_reply_node(rq, stanza_error_reply(iq_arena(rq), rq->iq, self, condition, text));
}

void iq_dispatch(struct iq_request *rq)
{
	const char *type = stanza_type(rq->iq);
	bool is_get = strcmp(type, "get") == 0;
	struct arena_mark mark = arena_mark(iq_arena(rq));

	/* Results and errors addressed to us (e.g. answers to our pings) end here. */
	if (!is_get && strcmp(type, "set") != 0) {
		pep_iq_response(rq);	/* XEP-0115: answers to PEP's caps queries (pep.c) */
		goto out;
	}
	for (size_t i = 0; i < N_IQ_HANDLERS; i++) {
		const struct iq_handler *h = &iq_handlers[i];
		void (*fn)(struct iq_request *);

		if (!(h->scopes & rq->scope) || strcmp(h->name, rq->payload->name) != 0 ||
		    strcmp(h->ns, rq->payload->ns) != 0)
			continue;
		fn = is_get ? h->get : h->set;
		if (fn)
			fn(rq);
		else
			iq_reply_error(rq, "bad-request", NULL);
		goto out;
	}
	iq_reply_error(rq, "service-unavailable", NULL);
out:
	/* Dispatch runs inside routing: keep what the caller had in the arena. */
	arena_rewind(iq_arena(rq), mark);
}

size_t iq_features(enum iq_scope scope, const char **out, size_t cap)
{
	size_t n = 0;

	for (size_t i = 0; i < N_IQ_HANDLERS && n < cap; i++)
		if ((iq_handlers[i].scopes & scope) && iq_handlers[i].feature)
			out[n++] = iq_handlers[i].feature;
	return n;
}
