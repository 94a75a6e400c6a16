/* SPDX-License-Identifier: MIT */
/*
 * XEP-0030 Service Discovery for the server and for accounts (the server
 * answers for a bare JID). Features come from the iq handler table, so a
 * new feature file is advertised by registering it there.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "adhoc.h"
#include "caps.h"
#include "config.h"
#include "contact_query.h"
#include "dataform.h"
#include "iq.h"
#include "pubsub.h"
#include "server.h"
#include "service.h"
#include "jid.h"
#include "stanza.h"
#include "strbuf.h"
#include "worker.h"

#define DISCO_MAX_FEATURES CAPS_MAX_FEATURES
#define NS_SERVERINFO "http://jabber.org/network/serverinfo"	/* XEP-0157 */

/* XEP-0157 contact address fields, sorted by var (the order XEP-0115 hashes). */
static const struct {
	const char *var;
	size_t off;		/* of a struct config_list in struct config */
} disco_contacts[] = {
	{ "abuse-addresses", offsetof(struct config, contact_abuse) },
	{ "admin-addresses", offsetof(struct config, contact_admin) },
	{ "feedback-addresses", offsetof(struct config, contact_feedback) },
	{ "security-addresses", offsetof(struct config, contact_security) },
	{ "support-addresses", offsetof(struct config, contact_support) },
};

#define DISCO_NCONTACTS (sizeof(disco_contacts) / sizeof(disco_contacts[0]))

/*
 * Whether the server's disco#info carries the XEP-0157 form: only once
 * disco_serverinfo_init() gave the caps hash the same form, so the two
 * never disagree.
 */
static bool disco_serverinfo_ready;

static const struct config_list *disco_contact(const struct config *cfg, size_t i)
{
	return (const struct config_list *)((const char *)cfg + disco_contacts[i].off);
}

static int disco_cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int disco_serverinfo_init(const struct config *cfg)
{
	/* Lives as long as the process: the caps hash is computed from it lazily. */
	static struct strbuf s = STRBUF_INIT;

	strbuf_clear(&s);
	/* XEP-0115 5.1 steps 6-8: FORM_TYPE, then each field's var and sorted values. */
	strbuf_puts(&s, NS_SERVERINFO "<");
	for (size_t i = 0; i < DISCO_NCONTACTS; i++) {
		const struct config_list *l = disco_contact(cfg, i);
		const char *v[CONFIG_MAX_LIST];

		if (!l->n)
			continue;
		memcpy(v, l->v, l->n * sizeof(v[0]));
		qsort(v, l->n, sizeof(v[0]), disco_cmp_str);
		strbuf_puts(&s, disco_contacts[i].var);
		strbuf_puts(&s, "<");
		for (unsigned k = 0; k < l->n; k++) {
			strbuf_puts(&s, v[k]);
			strbuf_puts(&s, "<");
		}
	}
	if (s.oom)
		return -ENOMEM;
	caps_server_set_forms(s.data);
	disco_serverinfo_ready = true;
	return 0;
}

/* The XEP-0157 form (XEP-0128 extended information) of the server. 0 or -ENOMEM. */
static int disco_add_serverinfo(struct arena *a, struct xml_node *q, const struct config *cfg)
{
	struct xml_node *x = dataform_new(a, DATAFORM_RESULT, NS_SERVERINFO);

	if (!x)
		return -ENOMEM;
	xml_node_append(q, x);
	for (size_t i = 0; i < DISCO_NCONTACTS; i++) {
		const struct config_list *l = disco_contact(cfg, i);
		struct xml_node *f;

		if (!l->n)
			continue;
		f = dataform_add_field(a, x, DATAFORM_FIELD_UNSPECIFIED, disco_contacts[i].var, NULL);
		if (!f)
			return -ENOMEM;
		for (unsigned k = 0; k < l->n; k++)
			if (dataform_field_add_value(a, f, l->v[k]) < 0)
				return -ENOMEM;
	}
	return 0;
}

static int disco_add_identity(struct arena *a, struct xml_node *q, const char *category,
			      const char *type, const char *name)
{
	struct xml_node *id = xml_node_add_child(a, q, NULL, "identity");

	if (!id || xml_attr_set(a, id, "category", category) < 0 ||
	    xml_attr_set(a, id, "type", type) < 0 || (name && xml_attr_set(a, id, "name", name) < 0))
		return -1;
	return 0;
}

/*
 * The info of the server or of an account, for an iq scope: its identity
 * and the features of that scope (caps.c keeps the server's list, which
 * its XEP-0115 hash covers). node is echoed when not NULL. NULL on ENOMEM.
 */
static struct xml_node *disco_info(struct arena *a, const struct config *cfg,
				   enum iq_scope scope, const char *node)
{
	const char *features[DISCO_MAX_FEATURES];
	const struct caps_identity *id = &caps_server_identity;
	struct xml_node *q = xml_node_new(a, NS_DISCO_INFO, "query");
	size_t n;
	int ret;

	if (!q || (node && xml_attr_set(a, q, "node", node) < 0))
		return NULL;
	if (scope == IQ_SCOPE_SERVER) {
		ret = 0;
		for (size_t i = 0; i < caps_server_nidentities && ret == 0; i++) {
			id = &caps_server_identities[i];
			ret = disco_add_identity(a, q, id->category, id->type, id->name);
		}
	} else {
		/* Every account is also a PEP service (XEP-0163 9.1). */
		ret = disco_add_identity(a, q, "account", "registered", NULL);
		if (ret == 0)
			ret = disco_add_identity(a, q, "pubsub", "pep", NULL);
	}
	if (ret < 0)
		return NULL;
	n = caps_features(scope, features, DISCO_MAX_FEATURES);
	for (size_t i = 0; i < n; i++) {
		struct xml_node *f = xml_node_add_child(a, q, NULL, "feature");

		if (!f || xml_attr_set(a, f, "var", features[i]) < 0)
			return NULL;
	}
	if (scope == IQ_SCOPE_SERVER && disco_serverinfo_ready && disco_add_serverinfo(a, q, cfg) < 0)
		return NULL;
	return q;
}

/*
 * XEP-0030 section 8 (security): another entity learns that an account
 * exists, and what it supports, only when the account shares its
 * presence with it; otherwise, and when there is no such account, the
 * answer is service-unavailable.
 */
static void disco_contact_answer(const struct iq_async *op, struct session *s,
				 const struct contact_facts *f)
{
	struct xml_node *q;

	if (!f->exists || !f->subscribed) {
		iq_async_error(op, s, "service-unavailable", NULL);
		return;
	}
	q = disco_info(iq_async_arena(op), NULL, IQ_SCOPE_CONTACT, NULL);
	if (q)
		iq_async_result(op, s, q);
	else
		iq_async_error(op, s, "internal-server-error", NULL);
}

/* The same for a node of the account: none exist, which only subscribers may learn. */
static void disco_contact_node_answer(const struct iq_async *op, struct session *s,
				      const struct contact_facts *f)
{
	iq_async_error(op, s, f->exists && f->subscribed ? "item-not-found" : "service-unavailable",
		       NULL);
}

void disco_info_get(struct iq_request *rq)
{
	const char *node = xml_attr_get(rq->payload, "node");
	struct xml_node *q;

	/* A PEP node of an account (XEP-0060 5.3 on its bare JID, pubsub.c). */
	if (node && rq->scope != IQ_SCOPE_SERVER && pubsub_pep_disco_info(rq))
		return;
	if (rq->scope == IQ_SCOPE_CONTACT) {
		contact_query(rq, false, NS_DISCO_INFO, "query",
			      node ? disco_contact_node_answer : disco_contact_answer);
		return;
	}
	/* The ad-hoc command list and its commands (XEP-0050, adhoc.c). */
	if (node && rq->scope == IQ_SCOPE_SERVER && adhoc_disco_info(rq, node))
		return;
	/* Besides the root, only the server's caps node (XEP-0115 6.2) exists. */
	if (node && !(rq->scope == IQ_SCOPE_SERVER && caps_is_server_node(node))) {
		iq_reply_error(rq, "item-not-found", NULL);
		return;
	}
	q = disco_info(iq_arena(rq), rq->w->srv->cfg, rq->scope, node);
	if (!q) {
		iq_reply_error(rq, "internal-server-error", NULL);
		return;
	}
	iq_reply_result(rq, q);
}

struct disco_items_ctx {
	struct arena *a;
	struct xml_node *q;
	bool oom;
};

static void disco_add_service(void *arg, const struct service *svc, const char *domain)
{
	struct disco_items_ctx *ctx = arg;
	struct xml_node *it = xml_node_add_child(ctx->a, ctx->q, NULL, "item");

	if (!it || xml_attr_set(ctx->a, it, "jid", domain) < 0 ||
	    (svc->name && xml_attr_set(ctx->a, it, "name", svc->name) < 0))
		ctx->oom = true;
}

void disco_items_get(struct iq_request *rq)
{
	const char *node = xml_attr_get(rq->payload, "node");
	struct xml_node *q;

	/* The ad-hoc commands this requester may run (XEP-0050, adhoc.c). */
	if (node && rq->scope == IQ_SCOPE_SERVER && adhoc_disco_items(rq, node))
		return;
	/* An account's PEP nodes, or a node's items (XEP-0163 9, pubsub.c). */
	if (rq->scope != IQ_SCOPE_SERVER && pubsub_pep_disco_items(rq))
		return;

	/*
	 * For someone else's account the list is empty whatever the node
	 * (XEP-0030 section 8: nothing that tells whether it exists).
	 */
	if (node && rq->scope != IQ_SCOPE_CONTACT) {
		iq_reply_error(rq, "item-not-found", NULL);
		return;
	}
	q = xml_node_new(iq_arena(rq), NS_DISCO_ITEMS, "query");
	if (!q) {
		iq_reply_error(rq, "internal-server-error", NULL);
		return;
	}
	/* The server's items are its services (conference., pubsub., ...). */
	if (rq->scope == IQ_SCOPE_SERVER) {
		struct disco_items_ctx ctx = { iq_arena(rq), q, false };

		service_each(rq->w->srv->cfg, disco_add_service, &ctx);
		if (ctx.oom) {
			iq_reply_error(rq, "internal-server-error", NULL);
			return;
		}
	}
	iq_reply_result(rq, q);
}
