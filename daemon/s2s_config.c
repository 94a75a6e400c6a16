/* SPDX-License-Identifier: MIT */
/*
 * The federation keys' syntax: the static host table, component secrets
 * and the s2s_auth policy. config_validate() checks them at startup and
 * s2s_server_init() reads them with the same parsers, so the two never
 * disagree. Kept apart from the link code so that the configuration
 * (and its fuzz target) does not pull in the whole federation layer.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "jid.h"
#include "s2s.h"

/* Splits "DOMAIN=REST" and normalizes the domain. Returns REST or NULL. */
static const char *s2s_split_entry(const char *entry, char *domain, size_t domain_size)
{
	const char *eq = strchr(entry, '=');

	if (!eq || eq == entry ||
	    jid_prep_domain(domain, domain_size, entry, (size_t)(eq - entry)) < 0)
		return NULL;
	return eq + 1;
}

/*
 * The host table entry syntax. Only IP literals are accepted (a name would
 * need the resolver at startup, and the table exists for networks where
 * DNS does not answer); "tls:" marks a Direct TLS port (XEP-0368).
 */
int s2s_host_parse(const char *entry, char *domain, size_t domain_size,
		   struct sockaddr_storage *addr, unsigned *addrlen, bool *direct_tls)
{
	const char *rest = s2s_split_entry(entry, domain, domain_size);

	if (!rest)
		return -EINVAL;
	*direct_tls = strncmp(rest, "tls:", 4) == 0;
	if (*direct_tls)
		rest += 4;
	if (config_parse_addr(rest, addr, addrlen) < 0)
		return -EINVAL;
	/* "*" means any address: fine to listen on, meaningless to connect to. */
	if (strncmp(rest, "*:", 2) == 0)
		return -EINVAL;
	return 0;
}

/* The secret is everything after the first '=': it may contain '=' itself. */
int s2s_component_parse(const char *entry, char *domain, size_t domain_size,
			const char **secret)
{
	const char *rest = s2s_split_entry(entry, domain, domain_size);

	if (!rest || !rest[0])
		return -EINVAL;
	*secret = rest;
	return 0;
}

/* The s2s_auth policy: NULL is the default (dialback). */
int s2s_auth_parse(const char *v, bool *verified_only)
{
	if (!v || strcmp(v, "dialback") == 0)
		*verified_only = false;
	else if (strcmp(v, "verified") == 0)
		*verified_only = true;
	else
		return -EINVAL;
	return 0;
}

/*
 * Called by config_validate() after every source was applied: the first
 * bad value prints one line (never a component secret) and fails startup
 * with status 2, like every other bad key.
 */
int config_validate_s2s(struct config *cfg)
{
	static const struct {
		const char *key;
		size_t off;
	} lists[] = {
		{ "listen_s2s", offsetof(struct config, listen_s2s) },
		{ "listen_s2s_tls", offsetof(struct config, listen_s2s_tls) },
		{ "listen_component", offsetof(struct config, listen_component) },
	};
	char domain[JID_PART_MAX + 1];
	struct sockaddr_storage ss;
	const char *secret;
	unsigned len;
	bool b;

	for (size_t k = 0; k < sizeof(lists) / sizeof(lists[0]); k++) {
		const struct config_list *l = (const void *)((const char *)cfg + lists[k].off);

		for (unsigned i = 0; i < l->n; i++)
			if (config_parse_addr(l->v[i], &ss, &len) < 0) {
				fprintf(stderr, "stanzad: %s '%s' is not ADDR:PORT\n", lists[k].key,
					l->v[i]);
				return -EINVAL;
			}
	}
	for (unsigned i = 0; i < cfg->s2s_host.n; i++)
		if (s2s_host_parse(cfg->s2s_host.v[i], domain, sizeof(domain), &ss, &len, &b) < 0) {
			fprintf(stderr, "stanzad: s2s_host '%s' is not DOMAIN=ADDR:PORT "
				"(or DOMAIN=tls:ADDR:PORT)\n", cfg->s2s_host.v[i]);
			return -EINVAL;
		}
	for (unsigned i = 0; i < cfg->component.n; i++) {
		/* Never echo the entry: it holds the secret. */
		if (s2s_component_parse(cfg->component.v[i], domain, sizeof(domain), &secret) < 0) {
			fprintf(stderr, "stanzad: component entry %u is not DOMAIN=SECRET\n", i + 1);
			return -EINVAL;
		}
		if (strcmp(domain, cfg->domain) == 0) {
			fprintf(stderr, "stanzad: component %s is the server's own domain\n", domain);
			return -EINVAL;
		}
	}
	if (s2s_auth_parse(cfg->s2s_auth, &b) < 0) {
		fprintf(stderr, "stanzad: s2s_auth '%s' must be verified or dialback\n", cfg->s2s_auth);
		return -EINVAL;
	}
	return 0;
}
