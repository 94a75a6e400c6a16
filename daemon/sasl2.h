/* SPDX-License-Identifier: MIT */
/*
 * SASL2 (XEP-0388, urn:xmpp:sasl:2) for c2s streams, with what it can
 * negotiate inline: Bind 2 (bind2.h), stream management resumption and
 * enabling (XEP-0198 section 7), and FAST tokens (fast.h).
 *
 * Offered next to RFC 6120 SASL once the stream is encrypted (or when
 * require_tls = no), unless sasl2 = no. Mechanisms: those of sasl.c
 * (SCRAM-SHA-256/-1 and -PLUS, PLAIN), EXTERNAL with a verified client
 * certificate (sasl_external.h), and the HT mechanisms with a FAST token.
 *
 * One login, as the state table sees it:
 *   auth --<authenticate/>--> sasl-lookup (storage) --> sasl2 (challenge)
 *        --<response/>--> ... --> post-authentication steps, each maybe
 *        waiting for storage: a requested token, an inline <resume/>, the
 *        account's state for Bind 2 --> <success/> (+ <stream:features/>
 *        unless resumed) --> bind or ready. No stream restart.
 * A failure answers <failure/> with the RFC 6120 condition and goes back
 * to auth; max_auth_failures counts SASL2 attempts too.
 */
#ifndef STANZAD_SASL2_H
#define STANZAD_SASL2_H

#include <stdbool.h>

#define NS_SASL2	"urn:xmpp:sasl:2"

#define SASL2_PREVID_MAX	64	/* bytes of an inline <resume previd/> kept */

struct conn;
struct strbuf;
struct xml_node;

/* The <authentication/> stream feature (before authentication), when offered. */
void sasl2_features(struct conn *c, struct strbuf *b);

/* State-table handlers (c2s.c): <authenticate/> in auth, <response/>/<abort/> in sasl2. */
bool sasl2_authenticate(struct conn *c, struct xml_node *el);
bool sasl2_response(struct conn *c, struct xml_node *el);
bool sasl2_abort(struct conn *c, struct xml_node *el);

/* The connection is closing: frees the negotiation (in-flight requests find it gone). */
void sasl2_conn_closing(struct conn *c);

/*
 * A resumption inside <authenticate/> that another node was asked for
 * (sm_resume_inline gave -EINPROGRESS): where sm.c appends its answer
 * (NULL when c has no SASL2 login), and the end of the wait, after
 * which the login goes on (Bind 2 when not resumed, then <success/>).
 */
struct strbuf *sasl2_inline_out(struct conn *c);
void sasl2_resume_answered(struct conn *c, bool resumed);

#endif
