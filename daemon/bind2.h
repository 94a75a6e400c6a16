/* SPDX-License-Identifier: MIT */
/*
 * Bind 2 (XEP-0386, urn:xmpp:bind:0): resource binding inside SASL2's
 * <authenticate/>, with the session features a client wants enabled at
 * once: stream management (XEP-0198 <enable/>), carbons (XEP-0280) and
 * the client state (XEP-0352 <active/>/<inactive/>).
 *
 * Resources are "TAG/ID" (section 3.3; just "ID" without a tag), where ID
 * is derived from the account and the SASL2 user-agent id with a server
 * secret when the client sent one, so a device gets the same full JID at
 * every login (and its new session replaces a stale old one), and random
 * otherwise. The user-agent id itself cannot be read out of it.
 *
 * Not done: the XEP-0313 <metadata/> in <bound/> (a SHOULD), and the
 * clearing of offline messages at bind: stanzad keeps delivering them at
 * the first available presence, as devices without MAM need.
 */
#ifndef STANZAD_BIND2_H
#define STANZAD_BIND2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sm.h"

#define NS_BIND2		"urn:xmpp:bind:0"
#define BIND2_TAG_MAX		64	/* bytes of a client tag kept in the resource */
#define BIND2_ID_HEX		12	/* hex digits of the generated part */
#define BIND2_SM_MAX_ATTR	10	/* digits of an <enable max/> kept */

struct conn;
struct account;
struct strbuf;
struct xml_node;

/* A <bind/> request, kept past the parser's arena (SASL2 may wait for storage). */
struct bind2_request {
	bool present;
	char tag[BIND2_TAG_MAX + 1];	/* "" none or unusable */
	bool sm_enable;			/* <enable xmlns='urn:xmpp:sm:3'/> */
	bool sm_resume;			/* ... with resume='true' */
	char sm_max[BIND2_SM_MAX_ATTR + 1];
	bool carbons;			/* <enable xmlns='urn:xmpp:carbons:2'/> */
	int csi;			/* 0 none, 1 <active/>, 2 <inactive/> */
};

/* Reads a <bind xmlns='urn:xmpp:bind:0'/> element; unknown children are ignored. */
void bind2_parse(struct bind2_request *r, const struct xml_node *bind);

/* The feature inside SASL2's <inline/>, with its own inline features. */
void bind2_features(struct strbuf *b);

/*
 * The resource for this login (see the top of the file) into out:
 * secret keys the derivation, user the account, ua_id the SASL2
 * user-agent id ("" for a random resource). 0 or -EINVAL.
 */
int bind2_resource(const uint8_t secret[32], const char *user, const char *ua_id,
		   const char *tag, char *out, size_t size);

/*
 * Binds `full` on c (c2s_bind_resource) with the account state `loaded`
 * (consumed), then enables what r asks for, and appends <bound/> with
 * the inline answers to out. 0, or -EAGAIN with *err the condition when
 * no session could be bound (nothing appended).
 */
int bind2_finish(struct conn *c, const struct bind2_request *r, const char *full,
		 struct account *loaded, struct strbuf *out, const char **err);

#endif
