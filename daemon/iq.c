/* SPDX-License-Identifier: MIT */
#include <string.h>

#include "blocking.h"
#include "carbons.h"
#include "conn.h"
#include "entity_time.h"
#include "iq.h"
#include "last_activity.h"
#include "log.h"
#include "offline.h"
#include "private_xml.h"
#include "roster.h"
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
	/* Feature only (XEP-0160): no element has an empty name, so nothing dispatches here. */
	{ OFFLINE_FEATURE, "", IQ_SCOPE_SERVER, NULL, NULL, OFFLINE_FEATURE },
};

#define N_IQ_HANDLERS (sizeof(iq_handlers) / sizeof(iq_handlers[0]))

struct arena *iq_arena(struct iq_request *rq)
{
	return &rq->w->tmp;
}

static void iq_send(struct iq_request *rq, struct xml_node *reply)
{
	if (!reply) {
		log_warn("iq.reply_failed", "conn=%llu msg=\"out of memory\"",
			 (unsigned long long)rq->conn->id);
		return;
	}
	conn_send_node(rq->conn, reply);
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
	iq_send(rq, r);
}

void iq_reply_error(struct iq_request *rq, const char *condition, const char *text)
{
	const char *self = iq_reply_self(rq);

	iq_send(rq, stanza_error_reply(iq_arena(rq), rq->iq, self, condition, text));
}

void iq_dispatch(struct iq_request *rq)
{
	const char *type = stanza_type(rq->iq);
	bool is_get = strcmp(type, "get") == 0;

	/* Results and errors addressed to us (e.g. answers to our pings) end here. */
	if (!is_get && strcmp(type, "set") != 0)
		goto out;
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
	arena_reset(iq_arena(rq));
}

size_t iq_features(enum iq_scope scope, const char **out, size_t cap)
{
	size_t n = 0;

	for (size_t i = 0; i < N_IQ_HANDLERS && n < cap; i++)
		if ((iq_handlers[i].scopes & scope) && iq_handlers[i].feature)
			out[n++] = iq_handlers[i].feature;
	return n;
}
