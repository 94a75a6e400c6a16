/* SPDX-License-Identifier: MIT */
/*
 * Services at subdomains of the server (conference.DOMAIN, pubsub.DOMAIN,
 * upload.DOMAIN, ...). Each service is one entry in the table in
 * service.c: a label and a routing function that receives every stanza
 * addressed to the service's domain or to a JID at it. The router consults
 * the table before treating a domain as remote; disco#items of the server
 * lists the enabled services.
 */
#ifndef STANZAD_SERVICE_H
#define STANZAD_SERVICE_H

#include <stdbool.h>
#include <stddef.h>

#include "xml.h"

struct worker;
struct conn;
struct jid;
struct config;

struct service {
	const char *label;	/* "conference": the service is conference.DOMAIN */
	const char *name;	/* human name for disco#items */
	/* Whether the service runs with this configuration (NULL: always). */
	bool (*enabled)(const struct config *cfg);
	/*
	 * A stanza for the service. `src` is the sender's local connection,
	 * or NULL (the sender is found by 'from' for errors); from/to are
	 * parsed and normalized; the tree lives until the call returns.
	 */
	void (*route)(struct worker *w, struct conn *src, struct xml_node *st,
		      const struct jid *from, const struct jid *to);
};

/*
 * The service whose domain is to's domainpart, or NULL. `server_domain`
 * is the configured domain.
 */
const struct service *service_for(const struct config *cfg, const struct jid *to);

/* Calls fn for each enabled service with its full domain. */
void service_each(const struct config *cfg,
		  void (*fn)(void *arg, const struct service *svc, const char *domain), void *arg);

#endif
