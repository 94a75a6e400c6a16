/* SPDX-License-Identifier: MIT */
#include <string.h>

#include "conn.h"
#include "iq.h"
#include "log.h"
#include "server.h"
#include "stanza.h"
#include "worker.h"

/* Every iq payload the server itself understands. */
static const struct iq_handler iq_handlers[] = {
	{ NS_PING, "ping", IQ_SCOPE_SERVER | IQ_SCOPE_ACCOUNT, ping_get, NULL, NS_PING },
	{ NS_DISCO_INFO, "query", IQ_SCOPE_SERVER | IQ_SCOPE_ACCOUNT, disco_info_get, NULL,
	  NS_DISCO_INFO },
	{ NS_DISCO_ITEMS, "query", IQ_SCOPE_SERVER | IQ_SCOPE_ACCOUNT, disco_items_get, NULL,
	  NS_DISCO_ITEMS },
	{ NS_VERSION, "query", IQ_SCOPE_SERVER, version_get, NULL, NS_VERSION },
	{ NS_REGISTER, "query", IQ_SCOPE_SERVER | IQ_SCOPE_ACCOUNT | IQ_SCOPE_PREAUTH, register_get,
	  register_set, NS_REGISTER },
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

void iq_reply_result(struct iq_request *rq, struct xml_node *payload)
{
	const char *self = rq->w->srv->cfg->domain;
	struct xml_node *r = stanza_iq_result(iq_arena(rq), rq->iq, self);

	if (r && payload)
		xml_node_append(r, payload);
	iq_send(rq, r);
}

void iq_reply_error(struct iq_request *rq, const char *condition, const char *text)
{
	const char *self = rq->w->srv->cfg->domain;

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
