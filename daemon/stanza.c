/* SPDX-License-Identifier: MIT */
#include <string.h>

#include "stanza.h"

enum stanza_kind stanza_kind(const struct xml_node *n)
{
	if (!n->name || strcmp(n->ns, XML_NS_CLIENT) != 0)
		return STANZA_OTHER;
	if (strcmp(n->name, "message") == 0)
		return STANZA_MESSAGE;
	if (strcmp(n->name, "presence") == 0)
		return STANZA_PRESENCE;
	if (strcmp(n->name, "iq") == 0)
		return STANZA_IQ;
	return STANZA_OTHER;
}

const char *stanza_type(const struct xml_node *n)
{
	const char *t = xml_attr_get(n, "type");

	if (t)
		return t;
	return stanza_kind(n) == STANZA_MESSAGE ? "normal" : "";
}

bool stanza_is_error(const struct xml_node *n)
{
	const char *t = xml_attr_get(n, "type");

	return t && strcmp(t, "error") == 0;
}

static bool type_in(const char *t, const char *const *set)
{
	for (; *set; set++)
		if (strcmp(t, *set) == 0)
			return true;
	return false;
}

const char *stanza_validate(const struct xml_node *n)
{
	static const char *const message_types[] = { "chat", "error", "groupchat", "headline",
						      "normal", NULL };
	static const char *const presence_types[] = { "", "error", "probe", "subscribe",
						       "subscribed", "unavailable", "unsubscribe",
						       "unsubscribed", NULL };
	static const char *const iq_types[] = { "get", "set", "result", "error", NULL };
	const char *t = stanza_type(n);

	switch (stanza_kind(n)) {
	case STANZA_MESSAGE:
		return type_in(t, message_types) ? NULL : "bad-request";
	case STANZA_PRESENCE:
		return type_in(t, presence_types) ? NULL : "bad-request";
	case STANZA_IQ:
		if (!type_in(t, iq_types) || !xml_attr_get(n, "id"))
			return "bad-request";
		/* RFC 6120 8.2.3: a request carries exactly one payload. */
		if ((strcmp(t, "get") == 0 || strcmp(t, "set") == 0) && xml_element_count(n) != 1)
			return "bad-request";
		/* A result carries zero or one. */
		if (strcmp(t, "result") == 0 && xml_element_count(n) > 1)
			return "bad-request";
		return NULL;
	case STANZA_OTHER:
		break;
	}
	return "bad-request";
}

const char *stanza_error_type(const char *condition)
{
	static const struct {
		const char *cond, *type;
	} table[] = {
		{ "bad-request", "modify" },
		{ "conflict", "cancel" },
		{ "feature-not-implemented", "cancel" },
		{ "forbidden", "auth" },
		{ "gone", "cancel" },
		{ "internal-server-error", "cancel" },
		{ "item-not-found", "cancel" },
		{ "jid-malformed", "modify" },
		{ "not-acceptable", "modify" },
		{ "not-allowed", "cancel" },
		{ "not-authorized", "auth" },
		{ "policy-violation", "modify" },
		{ "recipient-unavailable", "wait" },
		{ "redirect", "modify" },
		{ "registration-required", "auth" },
		{ "remote-server-not-found", "cancel" },
		{ "remote-server-timeout", "wait" },
		{ "resource-constraint", "wait" },
		{ "service-unavailable", "cancel" },
		{ "subscription-required", "auth" },
		{ "undefined-condition", "cancel" },
		{ "unexpected-request", "wait" },
	};

	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (strcmp(table[i].cond, condition) == 0)
			return table[i].type;
	return "cancel";
}

/* Sets to/from of a reply: to = orig from, from = orig to or self. */
static int reply_addresses(struct arena *a, struct xml_node *r, const struct xml_node *orig,
			   const char *self)
{
	const char *from = xml_attr_get(orig, "from");
	const char *to = xml_attr_get(orig, "to");
	const char *id = xml_attr_get(orig, "id");

	if (from && xml_attr_set(a, r, "to", from) < 0)
		return -1;
	if ((to || self) && xml_attr_set(a, r, "from", to ? to : self) < 0)
		return -1;
	if (id && xml_attr_set(a, r, "id", id) < 0)
		return -1;
	return 0;
}

struct xml_node *stanza_error_reply(struct arena *a, const struct xml_node *orig,
				    const char *self, const char *condition, const char *text)
{
	struct xml_node *r, *err;

	r = xml_node_new(a, XML_NS_CLIENT, orig->name);
	if (!r || reply_addresses(a, r, orig, self) < 0 || xml_attr_set(a, r, "type", "error") < 0)
		return NULL;
	/* The original payload helps the sender match the error (RFC 6120 8.3.1). */
	for (struct xml_node *ch = xml_first_element(orig); ch; ch = xml_next_element(ch)) {
		struct xml_node *copy;

		if (strcmp(ch->ns, XML_NS_CLIENT) == 0 && strcmp(ch->name, "error") == 0)
			continue;
		copy = xml_node_clone(a, ch);
		if (!copy)
			return NULL;
		xml_node_append(r, copy);
	}
	err = xml_node_add_child(a, r, XML_NS_CLIENT, "error");
	if (!err || xml_attr_set(a, err, "type", stanza_error_type(condition)) < 0)
		return NULL;
	if (!xml_node_add_child(a, err, NS_STANZAS, condition))
		return NULL;
	if (text) {
		struct xml_node *t = xml_node_add_child(a, err, NS_STANZAS, "text");

		if (!t || xml_attr_set_ns(a, t, XML_NS_XML, "lang", "en") < 0 ||
		    xml_node_add_text(a, t, text, strlen(text)) < 0)
			return NULL;
	}
	return r;
}

struct xml_node *stanza_iq_result(struct arena *a, const struct xml_node *iq, const char *self)
{
	struct xml_node *r = xml_node_new(a, XML_NS_CLIENT, "iq");

	if (!r || reply_addresses(a, r, iq, self) < 0 || xml_attr_set(a, r, "type", "result") < 0)
		return NULL;
	return r;
}
