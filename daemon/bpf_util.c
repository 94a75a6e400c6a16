/* SPDX-License-Identifier: MIT */
/* Helpers of the BPF loaders (see bpf_util.h). */
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpf_util.h"
#include "config.h"
#include "log.h"

/* libbpf's messages are one per line; they say what the verifier disliked. */
static int bpf_util_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char line[512];
	size_t len;

	if (level == LIBBPF_DEBUG)
		return 0;
	vsnprintf(line, sizeof(line), fmt, ap);
	len = strlen(line);
	while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		line[--len] = '\0';
	for (char *p = line; *p; p++)	/* keep the quoted value one value */
		if (*p == '"' || *p == '\n')
			*p = '\'';
	log_debug("bpf.libbpf", "msg=\"%s\"", line);
	return 0;
}

void bpf_util_quiet_libbpf(void)
{
	libbpf_set_print(bpf_util_print);
}

unsigned bpf_util_listener_ports(const struct config *cfg, uint16_t *ports, unsigned max)
{
	const struct config_list *lists[] = {
		&cfg->listen_c2s, &cfg->listen_c2s_tls, &cfg->listen_http, &cfg->listen_https,
		&cfg->listen_s2s, &cfg->listen_s2s_tls, &cfg->listen_component,
	};
	unsigned n = 0;

	for (size_t l = 0; l < sizeof(lists) / sizeof(lists[0]); l++) {
		for (unsigned i = 0; i < lists[l]->n; i++) {
			struct sockaddr_storage ss;
			unsigned len, k;
			uint16_t port;

			if (config_parse_addr(lists[l]->v[i], &ss, &len) < 0)
				continue;	/* main.c says so when it opens the listener */
			if (ss.ss_family == AF_INET)
				port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
			else if (ss.ss_family == AF_INET6)
				port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
			else
				continue;
			for (k = 0; k < n && ports[k] != port; k++)
				;
			if (k == n && n < max && port)
				ports[n++] = port;
		}
	}
	return n;
}

/*
 * A per-CPU array lookup returns one value per possible CPU (not online:
 * a CPU may come later), so the buffer is sized from libbpf's count.
 */
int bpf_util_percpu_sum(int map_fd, unsigned n, uint64_t *out)
{
	int ncpu = libbpf_num_possible_cpus();
	uint64_t *vals;

	if (ncpu <= 0)
		return ncpu < 0 ? ncpu : -EINVAL;
	vals = calloc((size_t)ncpu, sizeof(*vals));
	if (!vals)
		return -ENOMEM;
	for (unsigned slot = 0; slot < n; slot++) {
		uint32_t key = slot;

		out[slot] = 0;
		if (bpf_map_lookup_elem(map_fd, &key, vals) < 0) {
			int e = -errno;

			free(vals);
			return e;
		}
		for (int c = 0; c < ncpu; c++)
			out[slot] += vals[c];
	}
	free(vals);
	return 0;
}

const char *bpf_util_why(int err)
{
	if (err < 0)
		err = -err;
	/* What a daemon without CAP_BPF / CAP_NET_ADMIN gets from bpf() and the attach. */
	if (err == EPERM || err == EACCES)
		return "not permitted (needs CAP_BPF and CAP_NET_ADMIN, or root)";
	return strerror(err);
}
