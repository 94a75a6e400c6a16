/* SPDX-License-Identifier: MIT */
/*
 * Who may scrape /metrics: the metrics_allow list of addresses and CIDR
 * prefixes (loopback when unset), checked at startup and per request.
 * IPv4 is matched in its v4-mapped IPv6 form, as the listener sees it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "metrics.h"

int metrics_cidr_parse(const char *s, uint8_t addr[16], unsigned *prefix)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(s, '/');
	size_t hlen = slash ? (size_t)(slash - s) : strlen(s);
	unsigned long len = 0;
	struct in_addr a4;
	bool v4;

	if (hlen == 0 || hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	v4 = inet_pton(AF_INET, host, &a4) == 1;
	if (v4) {
		memset(addr, 0, 10);
		addr[10] = addr[11] = 0xff;
		memcpy(addr + 12, &a4, 4);
	} else if (inet_pton(AF_INET6, host, addr) != 1) {
		return -EINVAL;
	}
	if (slash) {
		char *end;

		if (slash[1] < '0' || slash[1] > '9')
			return -EINVAL;
		len = strtoul(slash + 1, &end, 10);
		if (*end || len > (v4 ? 32u : 128u))
			return -EINVAL;
	} else {
		len = v4 ? 32 : 128;
	}
	*prefix = (unsigned)len + (v4 ? 96 : 0);
	return 0;
}

bool metrics_cidr_match(const uint8_t a[16], const uint8_t net[16], unsigned prefix)
{
	unsigned full = prefix / 8, rest = prefix % 8;

	if (prefix > 128 || memcmp(a, net, full) != 0)
		return false;
	if (rest) {
		uint8_t mask = (uint8_t)(0xff00u >> rest);

		if ((a[full] & mask) != (net[full] & mask))
			return false;
	}
	return true;
}

int metrics_config_check(const struct config *cfg)
{
	uint8_t net[16];
	unsigned prefix;

	for (unsigned i = 0; i < cfg->metrics_allow.n; i++) {
		if (metrics_cidr_parse(cfg->metrics_allow.v[i], net, &prefix) < 0) {
			fprintf(stderr, "stanzad: metrics_allow '%s' is not an address or CIDR prefix "
				"(10.0.0.0/8, fd00::/8)\n", cfg->metrics_allow.v[i]);
			return -EINVAL;
		}
	}
	return 0;
}

bool metrics_peer_allowed(const struct config *cfg, const struct sockaddr_in6 *peer)
{
	static const char *const loopback[] = { "127.0.0.0/8", "::1" };
	const uint8_t *a = peer->sin6_addr.s6_addr;
	const char *const *list = loopback;
	unsigned n = 2;
	uint8_t net[16];
	unsigned prefix;

	if (cfg->metrics_allow.set) {
		list = (const char *const *)cfg->metrics_allow.v;
		n = cfg->metrics_allow.n;	/* 'off' alone: nobody */
	}
	for (unsigned i = 0; i < n; i++)
		if (metrics_cidr_parse(list[i], net, &prefix) == 0 &&
		    metrics_cidr_match(a, net, prefix))
			return true;
	return false;
}
