/* SPDX-License-Identifier: MIT */
/*
 * SASL EXTERNAL with client certificates (XEP-0178), for both SASL
 * profiles (RFC 6120 in c2s.c, SASL2 in sasl2.c).
 *
 * EXTERNAL is offered when the client presented a certificate that
 * verified against client_ca (tls_client_cert.h). The certificate names
 * the account in one of two ways:
 *   - its SHA-256 fingerprint is enrolled for a device account
 *     (`stanzactl device import`): that account, and only it. An
 *     enrollment is authoritative: JIDs in such a certificate are not
 *     consulted. A revoked fingerprint fails.
 *   - otherwise the xmppAddr (or rfc822Name) entries of its
 *     subjectAltName at this domain that are existing accounts.
 * The authorization identity (the initial response, a bare JID) follows
 * XEP-0178 section 3: none with exactly one candidate selects it; none
 * with several is invalid-authzid; one must be a candidate (else
 * invalid-authzid, or not-authorized when there is no candidate at all).
 * An unknown certificate (no enrollment, no candidate), a revoked one
 * and one that did not verify (another CA, revoked by the CRL, expired)
 * fail with not-authorized.
 */
#ifndef STANZAD_SASL_EXTERNAL_H
#define STANZAD_SASL_EXTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "tls_client_cert.h"

struct conn;
struct strbuf;

/* A client certificate was presented: EXTERNAL may be attempted (and judged). */
bool sasl_external_available(const struct conn *c);
/* ... and it verified: EXTERNAL is offered. */
bool sasl_external_offered(const struct conn *c);
/* Appends <mechanism>EXTERNAL</mechanism> when offered. */
void sasl_external_feature(const struct conn *c, struct strbuf *b);

/* The outcome: user (a normalized localpart) on success, else condition. */
typedef void (*sasl_external_done_fn)(struct conn *c, const char *user, const char *condition);

/*
 * Starts EXTERNAL on c with the decoded initial response authzid[0..len)
 * (len 0: no authorization identity). Returns NULL when the decision was
 * handed to the storage thread (done then runs on c's worker, unless c
 * closed meanwhile), or the condition to fail with at once.
 */
const char *sasl_external_begin(struct conn *c, const char *authzid, size_t len,
				sasl_external_done_fn done);

/* ---- The decision, pure (unit tests) ---- */

struct sasl_external_facts {
	const char *enrolled;		/* account the fingerprint is enrolled for, or NULL */
	bool revoked;			/* that enrollment is revoked */
	const char *cands[TLS_PEER_JIDS_MAX];	/* existing accounts the certificate names */
	size_t ncands;
	bool has_authz;			/* an authorization identity was given */
	const char *authz;		/* its localpart, NULL when it cannot be ours */
};

/* NULL and *user set on success, else the failure condition. */
const char *sasl_external_decide(const struct sasl_external_facts *f, const char **user);

#endif
