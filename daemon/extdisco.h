/* SPDX-License-Identifier: MIT */
/*
 * XEP-0215 External Service Discovery for audio/video calls: the server
 * lists the STUN and TURN service of turn_host:turn_port, and hands out
 * TURN credentials in the shared-secret scheme of coturn's
 * use-auth-secret (the "TURN REST API"): the username is
 * "<expiry as Unix time>:<localpart>", the password the base64 of
 * HMAC-SHA1(turn_secret, username), so the TURN server checks them with
 * the same secret and refuses them once the expiry has passed. They are
 * valid for turn_credential_lifetime seconds.
 *
 * Without turn_host the list is empty; without turn_secret only STUN is
 * listed (a TURN server without credentials would be an open relay).
 * Only local accounts ask: a request from another server is refused by
 * the iq layer (iq_remote_allowed).
 */
#ifndef STANZAD_EXTDISCO_H
#define STANZAD_EXTDISCO_H

#include <stddef.h>
#include <stdint.h>

#include "iq.h"

#define NS_EXTDISCO		"urn:xmpp:extdisco:2"
#define EXTDISCO_PASSWORD_MAX	32	/* base64 of a SHA-1 MAC (28) and a NUL */

/* <services/> and <credentials/> (iq get to the server's domain). */
void extdisco_services_get(struct iq_request *rq);
void extdisco_credentials_get(struct iq_request *rq);

/*
 * The coturn use-auth-secret password of `username` under `secret`,
 * NUL-terminated into out (EXTDISCO_PASSWORD_MAX bytes). 0 or -EIO.
 */
int extdisco_turn_password(const char *secret, const char *username, char *out);

#endif
