/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "jid.h"
#include "muc.h"
#include "provisioning.h"
#include "pubsub.h"
#include "registry.h"
#include "service.h"
#include "upload.h"

/* Every built-in service: one line each; the empty entry ends the table. */
static const struct service services[] = {
	{ "upload", "HTTP File Upload", upload_enabled, upload_route },	/* XEP-0363 (upload.c) */
	{ MUC_SERVICE_LABEL, "Chatrooms", muc_enabled, muc_route },	/* XEP-0045 (muc.c) */
	{ PUBSUB_LABEL, "Publish-Subscribe", pubsub_enabled, pubsub_service_route },	/* XEP-0060 */
	{ REGISTRY_LABEL, "Thing registry", registry_enabled, registry_route },	/* XEP-0347 */
	{ PROV_LABEL, "IoT provisioning", provisioning_enabled, provisioning_service_route },	/* XEP-0324 */
	{ NULL, NULL, NULL, NULL },
};

const struct service *service_for(const struct config *cfg, const struct jid *to)
{
	const char *dom = to->buf + to->domain_off;
	size_t dlen = to->domain_len, base = strlen(cfg->domain);

	/* label '.' domain: the label must be exactly one leading label. */
	if (dlen <= base + 1 || dom[dlen - base - 1] != '.' ||
	    memcmp(dom + dlen - base, cfg->domain, base) != 0)
		return NULL;
	for (const struct service *s = services; s->label; s++) {
		size_t llen = strlen(s->label);

		if (llen == dlen - base - 1 && memcmp(dom, s->label, llen) == 0 &&
		    (!s->enabled || s->enabled(cfg)))
			return s;
	}
	return NULL;
}

void service_each(const struct config *cfg,
		  void (*fn)(void *arg, const struct service *svc, const char *domain), void *arg)
{
	char domain[JID_PART_MAX + 1];

	for (const struct service *s = services; s->label; s++) {
		if (s->enabled && !s->enabled(cfg))
			continue;
		snprintf(domain, sizeof(domain), "%s.%s", s->label, cfg->domain);
		fn(arg, s, domain);
	}
}
