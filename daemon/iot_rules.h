/* SPDX-License-Identifier: MIT */
/*
 * Provisioning rules (XEP-0324 with the owner interface of
 * /work/shared/specs/iot-provisioning-owner.md, namespace
 * urn:nf:iot:prov:o:1.0): what an owner says about who may befriend a
 * thing, read its fields and nodes, and control its parameters, and the
 * decision the server takes from them for one request. Pure logic: no
 * I/O, no global state (provisioning.c keeps the rules in memory and
 * applies the decisions to stanzas).
 *
 * A rule has a kind (friendship, read-out, control), a range saying whom
 * it covers (one JID, a domain, holders of a service, device or user
 * token, or everyone), a result (allow or deny), optionally the nodes it
 * is limited to (concentrators, XEP-0326) and, for an allowing read or
 * control rule, optionally the only fields or parameters it permits.
 *
 * Matching: among the rules of the request's kind whose range covers the
 * requester, the most specific wins, ranked JID > domain > user token >
 * device token > service token > everyone, and a rule naming the node
 * beats one for every node. Equal rank: the newest rule wins (lists are
 * kept newest first). Each node of a request is decided on its own; a
 * request without nodes is decided once (an allowing rule limited to
 * nodes then limits the request to them).
 */
#ifndef STANZAD_IOT_RULES_H
#define STANZAD_IOT_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xml.h"

#define NS_IOT_SENSORDATA	"urn:xmpp:iot:sensordata"	/* XEP-0323 */
#define NS_IOT_CONTROL		"urn:xmpp:iot:control"		/* XEP-0325 */
#define NS_IOT_PROVISIONING	"urn:xmpp:iot:provisioning"	/* XEP-0324, the thing's side */
#define NS_IOT_PROV_OWNER	"urn:nf:iot:prov:o:1.0"		/* the owner's side */

#define IOT_SEP			'\x1f'	/* joins names in a rule: XML cannot carry it */
#define IOT_NAME_MAX		255	/* bytes of a field, parameter or node name; a token */
#define IOT_RULE_NAMES_MAX	64	/* fields or parameters in one rule's <partial/> */
#define IOT_RULE_NODES_MAX	16	/* <nd/> elements in one rule */
#define IOT_REQUEST_NODES_MAX	64	/* nodes one request may name (more: bad-request) */

enum iot_rule_kind {
	IOT_RULE_FRIEND = 0,	/* isFriendRule: may befriend the thing */
	IOT_RULE_READ,		/* canReadRule: XEP-0323 read-outs */
	IOT_RULE_CONTROL,	/* canControlRule: XEP-0325 control */
	IOT_RULE_KINDS,
};

/* Whom a rule covers, in increasing specificity (the order matters). */
enum iot_rule_range {
	IOT_RANGE_ALL = 0,	/* <all/>, range='All' */
	IOT_RANGE_SERVICE,	/* <fromService token/>: the request's serviceToken */
	IOT_RANGE_DEVICE,	/* <fromDevice token/>: deviceToken */
	IOT_RANGE_USER,		/* <fromUser token/>: userToken */
	IOT_RANGE_DOMAIN,	/* <fromDomain/>, range='Domain': remoteJid's domain */
	IOT_RANGE_JID,		/* <fromJid/>, range='Caller': remoteJid, bare */
	IOT_RANGES,
};

/*
 * One rule, allocated in one block (free() it). Strings live in buf.
 * nodes and partial are names joined by IOT_SEP.
 */
struct iot_rule {
	struct iot_rule *next;
	int64_t id;		/* row in the store (0 while unsaved) */
	uint8_t kind;		/* enum iot_rule_kind */
	uint8_t range;		/* enum iot_rule_range */
	bool result;		/* allow or deny */
	const char *remote;	/* bare JID, domain or token; "" for IOT_RANGE_ALL */
	const char *nodes;	/* "" = the thing itself and every node */
	const char *partial;	/* NULL = every field/parameter; "" = none */
	char buf[];
};

/*
 * A new rule with copies of the strings (remote and nodes may be NULL for
 * "", partial NULL for "everything"). NULL with errno = ENOMEM.
 */
struct iot_rule *iot_rule_new(enum iot_rule_kind kind, enum iot_rule_range range, bool result,
			      const char *remote, const char *nodes, const char *partial);

/* Same kind, range, remote and nodes: a new rule with the same key replaces the old. */
bool iot_rule_same_key(const struct iot_rule *a, const struct iot_rule *b);

/* Whether the IOT_SEP-joined list contains name exactly. */
bool iot_list_has(const char *list, const char *name);

/* Names for storage and logs, and back (-1 when unknown). */
const char *iot_kind_name(enum iot_rule_kind kind);
const char *iot_range_name(enum iot_rule_range range);
int iot_kind_parse(const char *s);
int iot_range_parse(const char *s);

/* Who asks, and with which tokens (XEP-0324 tokens; NULL when absent). */
struct iot_query {
	enum iot_rule_kind kind;
	const char *jid;		/* requester's normalized bare JID */
	const char *domain;		/* its domainpart */
	const char *service_token;
	const char *device_token;
	const char *user_token;
};

/* Whether the rule's range covers the requester (kind not checked). */
bool iot_rule_covers(const struct iot_rule *r, const struct iot_query *q);

enum iot_verdict {
	IOT_NO_RULE = 0,	/* nothing covers the request: "no", and ask the owner */
	IOT_ALLOW,		/* at least the thing or one node is allowed */
	IOT_DENY,
};

struct iot_decision {
	enum iot_verdict verdict;
	bool unanswered;		/* some part had no rule: worth asking the owner */
	bool every_name;		/* no allowing rule restricts fields/parameters */
	uint64_t nodes_allowed;		/* bit i: requested node i is allowed */
	/* A request without nodes allowed by a rule limited to nodes: those. */
	const char *limit_nodes;
	/* The allowing rules, whose partial lists together give the permitted names. */
	const struct iot_rule *allowing[IOT_REQUEST_NODES_MAX + 1];
	size_t nallowing;
};

/*
 * Decides a request of q->kind on a thing with these rules. nodes[0..n)
 * are the node ids the request names (n <= IOT_REQUEST_NODES_MAX; 0 for
 * the thing itself or all its nodes). Owners and the thing itself are
 * the caller's business: this only applies rules.
 */
void iot_decide(const struct iot_rule *rules, const struct iot_query *q,
		const char *const *nodes, size_t n, struct iot_decision *d);

/* Whether an allowed decision permits a field or parameter name. */
bool iot_decision_name_ok(const struct iot_decision *d, const char *name);

/*
 * Parses an owner's rule element (isFriendRule, canReadRule,
 * canControlRule; see the owner interface). On success returns 0 with
 * the thing's normalized bare JID in thing[0..thing_size), the optional
 * key (an attribute value of el, or NULL) and a new rule. On a malformed
 * element returns -EINVAL with *err a short reason for bad-request;
 * -ENOMEM when out of memory.
 */
int iot_rule_parse(const struct xml_node *el, char *thing, size_t thing_size,
		   const char **key, struct iot_rule **out, const char **err);

#endif
