/* SPDX-License-Identifier: MIT */
/*
 * iq requests the server answers itself (RFC 6120 8.2.3, RFC 6121 8.5),
 * dispatched through one table of handlers: each protocol feature file
 * (ping.c, disco.c, version.c, register.c, ...) provides get/set functions
 * and the table in iq.c says where they apply and which disco feature they
 * add. Unknown payloads get service-unavailable.
 */
#ifndef STANZAD_IQ_H
#define STANZAD_IQ_H

#include <stdbool.h>
#include <stddef.h>

#include "xml.h"

struct worker;
struct conn;
struct session;
struct jid;

/* Where a handler applies. */
enum iq_scope {
	IQ_SCOPE_SERVER = 1,	/* to the domain */
	IQ_SCOPE_ACCOUNT = 2,	/* to a bare JID (or no 'to'): the server acts for the account */
	IQ_SCOPE_PREAUTH = 4,	/* on a stream that is not authenticated yet */
	/*
	 * To another local account's bare JID: the server answers on that
	 * account's behalf to someone else (RFC 6121 8.5.2.1.3), e.g. a
	 * vCard or last-activity get. rq->to is the target. The account
	 * may not exist: handlers check and answer service-unavailable.
	 */
	IQ_SCOPE_CONTACT = 8,
};

struct iq_request {
	struct worker *w;
	struct conn *conn;		/* the requester's connection */
	struct xml_node *iq;		/* valid during the handler call only */
	struct xml_node *payload;	/* the one child element */
	const struct jid *from;		/* requester; NULL before authentication */
	const struct jid *to;		/* target; NULL = none given */
	enum iq_scope scope;
};

struct iq_handler {
	const char *ns;
	const char *name;
	unsigned scopes;		/* enum iq_scope bits */
	void (*get)(struct iq_request *rq);
	void (*set)(struct iq_request *rq);
	const char *feature;		/* disco#info var, or NULL */
};

/* Answers rq from the handler table (or with an error). */
void iq_dispatch(struct iq_request *rq);

/* Disco features of the handlers for a scope. Returns the count (<= cap). */
size_t iq_features(enum iq_scope scope, const char **out, size_t cap);

/*
 * Whether a request from another server or a component (no local
 * connection) may be answered: the server's ping, disco, version and
 * time, which need no session.
 */
bool iq_remote_allowed(const struct iq_request *rq);

/* Reply helpers: send to rq->conn (routed back when NULL: requester elsewhere). payload may be NULL. */
void iq_reply_result(struct iq_request *rq, struct xml_node *payload);
void iq_reply_error(struct iq_request *rq, const char *condition, const char *text);
/*
 * Sends a reply built by the handler (NULL: out of memory, logged): on
 * rq->conn, or routed when the requester has no connection here (another
 * server, a component, or a local client at home on another worker).
 */
void iq_reply_node(struct iq_request *rq, struct xml_node *reply);

/* The scratch arena for building replies (reset after each dispatch). */
struct arena *iq_arena(struct iq_request *rq);

/* Feature handlers (one file each). */
void ping_get(struct iq_request *rq);
void disco_info_get(struct iq_request *rq);
void disco_items_get(struct iq_request *rq);
struct config;
/*
 * At start, once: the server's XEP-0157 contact addresses (XEP-0128 form
 * in its disco#info), hashed into its XEP-0115 'ver' too. 0 or -ENOMEM.
 */
int disco_serverinfo_init(const struct config *cfg);
void version_get(struct iq_request *rq);
void register_get(struct iq_request *rq);
void register_set(struct iq_request *rq);
/*
 * Ends every session of the local account `bare` (a removed account,
 * XEP-0077 3.2 / XEP-0133 4.2) with the stream error condition and text
 * (static strings); detached sessions just end. The sessions live at the
 * account's home: called on another worker, it posts the job there.
 */
struct worker;
void register_end_account(struct worker *w, const char *bare, const char *condition,
			  const char *text);

#define NS_PING		"urn:xmpp:ping"
#define NS_DISCO_INFO	"http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS	"http://jabber.org/protocol/disco#items"
#define NS_VERSION	"jabber:iq:version"
#define NS_REGISTER	"jabber:iq:register"

#endif
