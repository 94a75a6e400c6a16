/* SPDX-License-Identifier: MIT */
/*
 * Provisioning rules: representation, parsing of the owner's rule
 * elements, and the decision for one request (see iot_rules.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "iot_rules.h"
#include "jid.h"
#include "strbuf.h"

/* Names used in the store (iot_rules.kind/scope) and in logs: never change them. */
static const char *const kind_names[IOT_RULE_KINDS] = {
	[IOT_RULE_FRIEND] = "friend",
	[IOT_RULE_READ] = "read",
	[IOT_RULE_CONTROL] = "control",
};

static const char *const range_names[IOT_RANGES] = {
	[IOT_RANGE_ALL] = "all",
	[IOT_RANGE_SERVICE] = "service",
	[IOT_RANGE_DEVICE] = "device",
	[IOT_RANGE_USER] = "user",
	[IOT_RANGE_DOMAIN] = "domain",
	[IOT_RANGE_JID] = "jid",
};

const char *iot_kind_name(enum iot_rule_kind kind)
{
	return (unsigned)kind < IOT_RULE_KINDS ? kind_names[kind] : "?";
}

const char *iot_range_name(enum iot_rule_range range)
{
	return (unsigned)range < IOT_RANGES ? range_names[range] : "?";
}

int iot_kind_parse(const char *s)
{
	for (int i = 0; i < IOT_RULE_KINDS; i++)
		if (strcmp(s, kind_names[i]) == 0)
			return i;
	return -1;
}

int iot_range_parse(const char *s)
{
	for (int i = 0; i < IOT_RANGES; i++)
		if (strcmp(s, range_names[i]) == 0)
			return i;
	return -1;
}

/*
 * One allocation: the struct, then remote, nodes and (when not NULL)
 * partial, each NUL-terminated, so a rule is freed with one free() and
 * costs one malloc per rule set.
 */
struct iot_rule *iot_rule_new(enum iot_rule_kind kind, enum iot_rule_range range, bool result,
			      const char *remote, const char *nodes, const char *partial)
{
	size_t rl = remote ? strlen(remote) : 0, nl = nodes ? strlen(nodes) : 0;
	size_t pl = partial ? strlen(partial) + 1 : 0;
	struct iot_rule *r = calloc(1, sizeof(*r) + rl + 1 + nl + 1 + pl);
	char *p;

	if (!r)
		return NULL;
	r->kind = (uint8_t)kind;
	r->range = (uint8_t)range;
	r->result = result;
	p = r->buf;
	memcpy(p, remote ? remote : "", rl + 1);
	r->remote = p;
	p += rl + 1;
	memcpy(p, nodes ? nodes : "", nl + 1);
	r->nodes = p;
	p += nl + 1;
	if (partial) {
		memcpy(p, partial, pl);
		r->partial = p;
	}
	return r;
}

bool iot_rule_same_key(const struct iot_rule *a, const struct iot_rule *b)
{
	return a->kind == b->kind && a->range == b->range && strcmp(a->remote, b->remote) == 0 &&
	       strcmp(a->nodes, b->nodes) == 0;
}

/* Walks the list segment by segment: names are compared whole, never as prefixes. */
bool iot_list_has(const char *list, const char *name)
{
	size_t len = strlen(name);

	if (!list)
		return false;
	for (const char *p = list; *p;) {
		const char *end = strchr(p, IOT_SEP);
		size_t n = end ? (size_t)(end - p) : strlen(p);

		if (n == len && memcmp(p, name, len) == 0)
			return true;
		if (!end)
			break;
		p = end + 1;
	}
	return false;
}

bool iot_rule_covers(const struct iot_rule *r, const struct iot_query *q)
{
	const char *want;

	switch (r->range) {
	case IOT_RANGE_ALL:
		return true;
	case IOT_RANGE_SERVICE:
		want = q->service_token;
		break;
	case IOT_RANGE_DEVICE:
		want = q->device_token;
		break;
	case IOT_RANGE_USER:
		want = q->user_token;
		break;
	case IOT_RANGE_DOMAIN:
		want = q->domain;
		break;
	case IOT_RANGE_JID:
		want = q->jid;
		break;
	default:
		return false;
	}
	/* An empty token never matches: "" is what an absent attribute must not equal. */
	return want && want[0] && strcmp(r->remote, want) == 0;
}

/*
 * The rule deciding for one node (NULL: the request as a whole). Rank:
 * range first, then a rule naming the node over one for every node;
 * among equals the first in the list (the newest).
 */
static const struct iot_rule *iot_best_rule(const struct iot_rule *rules,
					    const struct iot_query *q, const char *node)
{
	const struct iot_rule *best = NULL;
	int best_score = -1;

	for (const struct iot_rule *r = rules; r; r = r->next) {
		int score;

		if (r->kind != q->kind || !iot_rule_covers(r, q))
			continue;
		if (node && r->nodes[0] && !iot_list_has(r->nodes, node))
			continue;
		score = r->range * 2 + (node && r->nodes[0] ? 1 : 0);
		if (score > best_score) {
			best = r;
			best_score = score;
		}
	}
	return best;
}

/*
 * Records an allowing rule once (several nodes may be allowed by the same
 * rule); the array has room for one per requested node plus one.
 */
static void iot_decision_add(struct iot_decision *d, const struct iot_rule *r)
{
	for (size_t i = 0; i < d->nallowing; i++)
		if (d->allowing[i] == r)
			return;
	if (d->nallowing < sizeof(d->allowing) / sizeof(d->allowing[0]))
		d->allowing[d->nallowing++] = r;
}

/*
 * Verdict with nodes: allowed if any node is, denied if none is and some
 * rule said no, "no rule" only when no node had any rule. Nodes past
 * IOT_REQUEST_NODES_MAX are not looked at (callers refuse such requests).
 */
void iot_decide(const struct iot_rule *rules, const struct iot_query *q,
		const char *const *nodes, size_t n, struct iot_decision *d)
{
	bool any_deny = false;

	memset(d, 0, sizeof(*d));
	if (n > IOT_REQUEST_NODES_MAX)
		n = IOT_REQUEST_NODES_MAX;
	if (n == 0) {
		const struct iot_rule *r = iot_best_rule(rules, q, NULL);

		if (!r) {
			d->verdict = IOT_NO_RULE;
			d->unanswered = true;
			return;
		}
		if (!r->result) {
			d->verdict = IOT_DENY;
			return;
		}
		d->verdict = IOT_ALLOW;
		d->limit_nodes = r->nodes[0] ? r->nodes : NULL;
		iot_decision_add(d, r);
	} else {
		for (size_t i = 0; i < n; i++) {
			const struct iot_rule *r = iot_best_rule(rules, q, nodes[i]);

			if (!r) {
				d->unanswered = true;
			} else if (r->result) {
				d->nodes_allowed |= UINT64_C(1) << i;
				iot_decision_add(d, r);
			} else {
				any_deny = true;
			}
		}
		if (d->nodes_allowed)
			d->verdict = IOT_ALLOW;
		else if (d->unanswered && !any_deny)
			d->verdict = IOT_NO_RULE;
		else
			d->verdict = IOT_DENY;
	}
	d->every_name = d->verdict == IOT_ALLOW;
	for (size_t i = 0; i < d->nallowing; i++)
		if (d->allowing[i]->partial)
			d->every_name = false;
}

bool iot_decision_name_ok(const struct iot_decision *d, const char *name)
{
	if (d->verdict != IOT_ALLOW)
		return false;
	if (d->every_name)
		return true;
	for (size_t i = 0; i < d->nallowing; i++)
		if (!d->allowing[i]->partial || iot_list_has(d->allowing[i]->partial, name))
			return true;
	return false;
}

/* ---- Parsing the owner's rule elements ---- */

/* xs:boolean. 0, or -1 when not one of true/false/1/0. */
static int iot_parse_bool(const char *s, bool *out)
{
	if (!s)
		return -1;
	if (strcmp(s, "true") == 0 || strcmp(s, "1") == 0)
		*out = true;
	else if (strcmp(s, "false") == 0 || strcmp(s, "0") == 0)
		*out = false;
	else
		return -1;
	return 0;
}

/* A name a rule may carry: 1..IOT_NAME_MAX bytes without the separator. */
static bool iot_name_ok(const char *s)
{
	size_t len = s ? strlen(s) : 0;

	return len > 0 && len <= IOT_NAME_MAX && !memchr(s, IOT_SEP, len);
}

/* Appends name to an IOT_SEP-joined list unless it is there already. */
static void iot_list_add(struct strbuf *b, const char *name)
{
	if (b->data && iot_list_has(b->data, name))
		return;
	if (b->len)
		strbuf_append(b, (char[]){ IOT_SEP }, 1);
	strbuf_puts(b, name);
}

static bool iot_is_owner_ns(const struct xml_node *el)
{
	return strcmp(el->ns, NS_IOT_PROV_OWNER) == 0 || strcmp(el->ns, NS_IOT_PROVISIONING) == 0;
}

/*
 * The range of an isFriendRule ('range' attribute: Caller, Domain or All;
 * Caller when absent, the narrowest choice).
 */
static int iot_friend_range(const char *v)
{
	if (!v || strcmp(v, "Caller") == 0)
		return IOT_RANGE_JID;
	if (strcmp(v, "Domain") == 0)
		return IOT_RANGE_DOMAIN;
	if (strcmp(v, "All") == 0)
		return IOT_RANGE_ALL;
	return -1;
}

/* The range child of a canReadRule / canControlRule, with its token. */
static int iot_child_range(const struct xml_node *ch, const char **token)
{
	static const struct {
		const char *name;
		int range;
	} map[] = {
		{ "fromJid", IOT_RANGE_JID },
		{ "fromDomain", IOT_RANGE_DOMAIN },
		{ "fromService", IOT_RANGE_SERVICE },
		{ "fromDevice", IOT_RANGE_DEVICE },
		{ "fromUser", IOT_RANGE_USER },
		{ "all", IOT_RANGE_ALL },
	};

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		if (strcmp(ch->name, map[i].name) == 0) {
			*token = xml_attr_get(ch, "token");
			return map[i].range;
		}
	}
	return -1;
}

/* A name attribute of <f/>, <p/>, <nd/>: the spec's short form or the long one. */
static const char *iot_attr2(const struct xml_node *el, const char *a, const char *b)
{
	const char *v = xml_attr_get(el, a);

	return v ? v : xml_attr_get(el, b);
}

/* <partial><f n='..'/>...</partial>: the names into b. 0, or -EINVAL with *err. */
static int iot_parse_partial(const struct xml_node *partial, enum iot_rule_kind kind,
			     struct strbuf *b, const char **err)
{
	const char *want = kind == IOT_RULE_READ ? "f" : "p";
	unsigned count = 0;

	for (struct xml_node *ch = xml_first_element(partial); ch; ch = xml_next_element(ch)) {
		const char *name = iot_attr2(ch, "n", "name");

		if (strcmp(ch->name, want) != 0 && strcmp(ch->name, kind == IOT_RULE_READ ?
							  "field" : "parameter") != 0) {
			*err = kind == IOT_RULE_READ ? "only <f n=''/> in a read rule's <partial/>" :
						       "only <p n=''/> in a control rule's <partial/>";
			return -EINVAL;
		}
		if (!iot_name_ok(name)) {
			*err = "a field or parameter name is missing or too long";
			return -EINVAL;
		}
		if (++count > IOT_RULE_NAMES_MAX) {
			*err = "too many names in <partial/>";
			return -EINVAL;
		}
		iot_list_add(b, name);
	}
	return 0;
}

/*
 * Reads the attributes every rule has: jid (the thing: a bare JID with a
 * localpart), remoteJid (optional here; bare), result. 0 or -EINVAL with
 * *err.
 */
static int iot_parse_common(const struct xml_node *el, char *thing, size_t thing_size,
			    struct jid *remote, bool *has_remote, bool *result, const char **err)
{
	const char *jid = xml_attr_get(el, "jid");
	const char *rj = xml_attr_get(el, "remoteJid");
	struct jid j;

	if (!jid || jid_parse(&j, jid, strlen(jid)) < 0 || !jid_has_local(&j)) {
		*err = "'jid' must be the thing's JID";
		return -EINVAL;
	}
	if (jid_bare_str(&j, thing, thing_size) < 0) {
		*err = "'jid' is too long";
		return -EINVAL;
	}
	*has_remote = rj && rj[0];
	if (*has_remote) {
		if (jid_parse(remote, rj, strlen(rj)) < 0) {
			*err = "'remoteJid' is not a JID";
			return -EINVAL;
		}
		jid_to_bare(remote);
	}
	if (iot_parse_bool(xml_attr_get(el, "result"), result) < 0) {
		*err = "'result' must be true or false";
		return -EINVAL;
	}
	return 0;
}

/*
 * The remote string of a rule: the bare JID (JID range), the domain
 * (domain range), the token (token ranges) or "" (everyone). The domain
 * comes from remoteJid, which may be a plain domain.
 */
static int iot_remote_for(int range, const struct jid *remote, bool has_remote,
			  const char *token, char *out, size_t out_size, const char **err)
{
	out[0] = '\0';
	switch (range) {
	case IOT_RANGE_ALL:
		return 0;
	case IOT_RANGE_JID:
	case IOT_RANGE_DOMAIN:
		if (!has_remote) {
			*err = "'remoteJid' is needed for this range";
			return -EINVAL;
		}
		if (range == IOT_RANGE_DOMAIN) {
			if (remote->domain_len >= out_size)
				return -EINVAL;
			memcpy(out, remote->buf + remote->domain_off, remote->domain_len);
			out[remote->domain_len] = '\0';
			return 0;
		}
		return jid_bare_str(remote, out, out_size) < 0 ? -EINVAL : 0;
	default:
		if (!token || !iot_name_ok(token)) {
			*err = "the range needs a 'token'";
			return -EINVAL;
		}
		strncpy(out, token, out_size - 1);
		out[out_size - 1] = '\0';
		return 0;
	}
}

int iot_rule_parse(const struct xml_node *el, char *thing, size_t thing_size,
		   const char **key, struct iot_rule **out, const char **err)
{
	struct strbuf nodes = STRBUF_INIT, partial = STRBUF_INIT;
	char remote_str[JID_MAX];
	const char *token = NULL;
	bool has_remote, result, has_partial = false;
	int kind, range = -1, ret;
	unsigned nnodes = 0;
	struct jid remote;

	*out = NULL;
	*err = "bad rule";
	if (!iot_is_owner_ns(el))
		return -EINVAL;
	if (strcmp(el->name, "isFriendRule") == 0)
		kind = IOT_RULE_FRIEND;
	else if (strcmp(el->name, "canReadRule") == 0)
		kind = IOT_RULE_READ;
	else if (strcmp(el->name, "canControlRule") == 0)
		kind = IOT_RULE_CONTROL;
	else
		return -EINVAL;
	ret = iot_parse_common(el, thing, thing_size, &remote, &has_remote, &result, err);
	if (ret < 0)
		return ret;
	*key = xml_attr_get(el, "key");
	if (kind == IOT_RULE_FRIEND) {
		range = iot_friend_range(xml_attr_get(el, "range"));
		if (range < 0) {
			*err = "'range' must be Caller, Domain or All";
			return -EINVAL;
		}
	} else {
		for (struct xml_node *ch = xml_first_element(el); ch; ch = xml_next_element(ch)) {
			int r;

			if (strcmp(ch->name, "nd") == 0 || strcmp(ch->name, "node") == 0) {
				const char *id = iot_attr2(ch, "nodeId", "id");

				ret = -EINVAL;
				if (!iot_name_ok(id)) {
					*err = "<nd/> needs a 'nodeId'";
					goto out;
				}
				if (++nnodes > IOT_RULE_NODES_MAX) {
					*err = "too many <nd/> in one rule";
					goto out;
				}
				iot_list_add(&nodes, id);
			} else if (strcmp(ch->name, "partial") == 0) {
				ret = -EINVAL;
				if (has_partial) {
					*err = "more than one <partial/>";
					goto out;
				}
				has_partial = true;
				strbuf_puts(&partial, "");	/* "" (not NULL): an empty list */
				ret = iot_parse_partial(ch, kind, &partial, err);
				if (ret < 0)
					goto out;
			} else if ((r = iot_child_range(ch, &token)) >= 0) {
				ret = -EINVAL;
				if (range >= 0) {
					*err = "more than one range element";
					goto out;
				}
				range = r;
			} else {
				ret = -EINVAL;
				*err = "unknown element in the rule";
				goto out;
			}
		}
		/* No range element: the caller's JID when one is named. */
		if (range < 0) {
			ret = -EINVAL;
			if (!has_remote) {
				*err = "the rule needs a range element or a 'remoteJid'";
				goto out;
			}
			range = IOT_RANGE_JID;
		}
	}
	ret = iot_remote_for(range, &remote, has_remote, token, remote_str, sizeof(remote_str), err);
	if (ret < 0)
		goto out;
	ret = -ENOMEM;
	if (nodes.oom || partial.oom)
		goto out;
	/* A denying rule restricts nothing: only allowing rules carry names. */
	*out = iot_rule_new(kind, range, result, remote_str, nodes.data,
			    result && has_partial ? (partial.data ? partial.data : "") : NULL);
	ret = *out ? 0 : -ENOMEM;
out:
	strbuf_free(&nodes);
	strbuf_free(&partial);
	return ret;
}
