/* SPDX-License-Identifier: MIT */
/*
 * Stanza helpers (RFC 6120 section 8): kinds and types, error replies,
 * iq results. Everything is built in a caller-supplied arena.
 */
#ifndef STANZAD_STANZA_H
#define STANZAD_STANZA_H

#include <stdbool.h>

#include "arena.h"
#include "xml.h"

#define NS_STANZAS	"urn:ietf:params:xml:ns:xmpp-stanzas"
#define NS_STREAMS	"urn:ietf:params:xml:ns:xmpp-streams"

enum stanza_kind {
	STANZA_OTHER = 0,
	STANZA_MESSAGE,
	STANZA_PRESENCE,
	STANZA_IQ,
};

enum stanza_kind stanza_kind(const struct xml_node *n);

/* The 'type' attribute, with RFC defaults: message "normal", presence "" (available). */
const char *stanza_type(const struct xml_node *n);
bool stanza_is_error(const struct xml_node *n);

/*
 * Checks the type against RFC 6120/6121 for the stanza kind. For iq also
 * checks the id and that get/set carry exactly one child element. Returns
 * NULL if valid, else the stanza error condition to answer with.
 */
const char *stanza_validate(const struct xml_node *n);

/* The error type (cancel, modify, auth, wait) RFC 6120 8.3.3 gives a condition. */
const char *stanza_error_type(const char *condition);

/*
 * Builds the error reply to `orig`: same name and id, to = orig's from,
 * from = orig's to (or `self` when orig has none), type error, the
 * original payload (child elements) and an <error/> with condition and
 * optional text. NULL on ENOMEM. Callers must not answer error stanzas.
 */
struct xml_node *stanza_error_reply(struct arena *a, const struct xml_node *orig,
				    const char *self, const char *condition, const char *text);

/* <iq type='result'/> answering `iq` (to/from swapped, id kept, no payload). */
struct xml_node *stanza_iq_result(struct arena *a, const struct xml_node *iq, const char *self);

#endif
