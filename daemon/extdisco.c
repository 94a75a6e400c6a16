/* SPDX-License-Identifier: MIT */
/*
 * XEP-0215 External Service Discovery: the STUN/TURN services of the
 * configuration, with time-limited TURN credentials (see extdisco.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "config.h"
#include "extdisco.h"
#include "jid.h"
#include "server.h"
#include "worker.h"

#define EXTDISCO_STAMP_MAX 32	/* "YYYY-MM-DDTHH:MM:SSZ" and a NUL */

int extdisco_turn_password(const char *secret, const char *username, char *out)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	int ret = 0;

	if (!HMAC(EVP_sha1(), secret, (int)strlen(secret), (const unsigned char *)username,
		  strlen(username), mac, &len) || len != 20)
		ret = -EIO;
	else
		EVP_EncodeBlock((unsigned char *)out, mac, (int)len);
	OPENSSL_cleanse(mac, sizeof(mac));
	if (ret < 0)
		out[0] = '\0';
	return ret;
}

/*
 * Appends one <service/> of `type` (stun or turn) over `transport`, TURN
 * with fresh credentials for the requester. NULL on ENOMEM or a MAC
 * failure.
 */
static struct xml_node *extdisco_add(struct iq_request *rq, struct xml_node *parent,
				     const char *type, const char *transport)
{
	const struct config *cfg = rq->w->srv->cfg;
	struct arena *a = iq_arena(rq);
	struct xml_node *svc = xml_node_add_child(a, parent, NULL, "service");
	char port[12], user[JID_PART_MAX + 32], pass[EXTDISCO_PASSWORD_MAX];
	char stamp[EXTDISCO_STAMP_MAX];
	time_t expires;
	struct tm tm;
	int ret;

	snprintf(port, sizeof(port), "%" PRIu32, cfg->turn_port);
	if (!svc || xml_attr_set(a, svc, "type", type) < 0 ||
	    xml_attr_set(a, svc, "host", cfg->turn_host) < 0 ||
	    xml_attr_set(a, svc, "port", port) < 0 ||
	    xml_attr_set(a, svc, "transport", transport) < 0)
		return NULL;
	if (strcmp(type, "turn") != 0)
		return svc;
	expires = time(NULL) + (time_t)cfg->turn_credential_lifetime;
	snprintf(user, sizeof(user), "%lld:%.*s", (long long)expires, (int)rq->from->local_len,
		 rq->from->buf);
	if (!gmtime_r(&expires, &tm) ||
	    !strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm) ||
	    extdisco_turn_password(cfg->turn_secret, user, pass) < 0)
		return NULL;
	ret = xml_attr_set(a, svc, "username", user);
	if (ret == 0)
		ret = xml_attr_set(a, svc, "password", pass);
	OPENSSL_cleanse(pass, sizeof(pass));
	/* restricted: the credentials are only for this user, and only for a while. */
	if (ret < 0 || xml_attr_set(a, svc, "expires", stamp) < 0 ||
	    xml_attr_set(a, svc, "restricted", "1") < 0)
		return NULL;
	return svc;
}

/* Whether a filter (a request's 'type', NULL = any) lets `type` through. */
static bool extdisco_match(const char *filter, const char *type)
{
	return !filter || strcmp(filter, type) == 0;
}

/*
 * The services of the configuration that pass `filter`, as children of
 * parent. false on ENOMEM (the caller answers).
 */
static bool extdisco_list(struct iq_request *rq, struct xml_node *parent, const char *filter)
{
	const struct config *cfg = rq->w->srv->cfg;

	if (!cfg->turn_host)
		return true;
	if (extdisco_match(filter, "stun") && !extdisco_add(rq, parent, "stun", "udp"))
		return false;
	if (!cfg->turn_secret || !extdisco_match(filter, "turn"))
		return true;
	return extdisco_add(rq, parent, "turn", "udp") && extdisco_add(rq, parent, "turn", "tcp");
}

void extdisco_services_get(struct iq_request *rq)
{
	const char *filter = xml_attr_get(rq->payload, "type");
	struct xml_node *q = xml_node_new(iq_arena(rq), NS_EXTDISCO, "services");

	/* Another type (turns, ...): none here, and the empty list says so. */
	if (filter && !filter[0])
		filter = NULL;
	if (q && filter && xml_attr_set(iq_arena(rq), q, "type", filter) < 0)
		q = NULL;
	if (!q || !extdisco_list(rq, q, filter)) {
		iq_reply_error(rq, "internal-server-error", NULL);
		return;
	}
	iq_reply_result(rq, q);
}

/*
 * XEP-0215 section 3.3: fresh credentials for one service, named by its
 * host (and type, port when given). Only the TURN service has any.
 */
void extdisco_credentials_get(struct iq_request *rq)
{
	const struct config *cfg = rq->w->srv->cfg;
	const struct xml_node *want = xml_child(rq->payload, NS_EXTDISCO, "service");
	const char *host = want ? xml_attr_get(want, "host") : NULL;
	const char *type = want ? xml_attr_get(want, "type") : NULL;
	const char *port = want ? xml_attr_get(want, "port") : NULL;
	struct xml_node *q;
	char our_port[12];

	if (!host) {
		iq_reply_error(rq, "bad-request", "a <service/> with a 'host' is required");
		return;
	}
	snprintf(our_port, sizeof(our_port), "%" PRIu32, cfg->turn_port);
	if (!cfg->turn_host || !cfg->turn_secret || strcmp(host, cfg->turn_host) != 0 ||
	    (type && strcmp(type, "turn") != 0) || (port && strcmp(port, our_port) != 0)) {
		iq_reply_error(rq, "item-not-found", "no service with credentials by that name");
		return;
	}
	q = xml_node_new(iq_arena(rq), NS_EXTDISCO, "credentials");
	if (!q || !extdisco_add(rq, q, "turn", "udp")) {
		iq_reply_error(rq, "internal-server-error", NULL);
		return;
	}
	iq_reply_result(rq, q);
}
