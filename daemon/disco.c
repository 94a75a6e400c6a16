/* SPDX-License-Identifier: MIT */
/*
 * XEP-0030 Service Discovery for the server and for accounts (the server
 * answers for a bare JID). Features come from the iq handler table, so a
 * new feature file is advertised by registering it there.
 */
#include <string.h>

#include "iq.h"
#include "jid.h"
#include "stanza.h"

#define DISCO_MAX_FEATURES 64

static int disco_add_identity(struct arena *a, struct xml_node *q, const char *category,
			      const char *type, const char *name)
{
	struct xml_node *id = xml_node_add_child(a, q, NULL, "identity");

	if (!id || xml_attr_set(a, id, "category", category) < 0 ||
	    xml_attr_set(a, id, "type", type) < 0 || (name && xml_attr_set(a, id, "name", name) < 0))
		return -1;
	return 0;
}

void disco_info_get(struct iq_request *rq)
{
	struct arena *a = iq_arena(rq);
	const char *features[DISCO_MAX_FEATURES];
	struct xml_node *q;
	size_t n;
	int ret;

	/* Only the root node exists so far. */
	if (xml_attr_get(rq->payload, "node")) {
		iq_reply_error(rq, "item-not-found", NULL);
		return;
	}
	q = xml_node_new(a, NS_DISCO_INFO, "query");
	if (!q)
		goto oom;
	if (rq->scope == IQ_SCOPE_SERVER)
		ret = disco_add_identity(a, q, "server", "im", "stanzad");
	else
		ret = disco_add_identity(a, q, "account", "registered", NULL);
	if (ret < 0)
		goto oom;
	n = iq_features(rq->scope, features, DISCO_MAX_FEATURES);
	for (size_t i = 0; i < n; i++) {
		struct xml_node *f = xml_node_add_child(a, q, NULL, "feature");

		if (!f || xml_attr_set(a, f, "var", features[i]) < 0)
			goto oom;
	}
	iq_reply_result(rq, q);
	return;
oom:
	iq_reply_error(rq, "internal-server-error", NULL);
}

void disco_items_get(struct iq_request *rq)
{
	struct xml_node *q;

	if (xml_attr_get(rq->payload, "node")) {
		iq_reply_error(rq, "item-not-found", NULL);
		return;
	}
	/* No services or account items yet: an empty list. */
	q = xml_node_new(iq_arena(rq), NS_DISCO_ITEMS, "query");
	if (!q) {
		iq_reply_error(rq, "internal-server-error", NULL);
		return;
	}
	iq_reply_result(rq, q);
}
