/* SPDX-License-Identifier: MIT */
/*
 * `stanzactl kmod ...`: the stanza offload module's control plane over
 * generic netlink (kmod_genl.h). It talks to the kernel, not to the
 * daemon, so it works whether or not stanzad runs, in the caller's
 * network namespace.
 *
 *   stanzactl kmod status          counters and configuration
 *   stanzactl kmod sockets         the registered sockets
 *   stanzactl kmod set KEY VALUE [KEY VALUE...]   (CAP_NET_ADMIN)
 *   stanzactl kmod reset           zero the counters (CAP_NET_ADMIN)
 *
 * Output is one "key: value" per line (sockets: one line per socket),
 * easy to read and to parse. Exit status: 0 success, 1 the module is not
 * loaded or refused the request (the kernel's reason is printed), 2 usage.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmod_genl.h"

#define KCTL_EXIT_OK	0
#define KCTL_EXIT_FAIL	1
#define KCTL_EXIT_USAGE	2

#define KCTL_USAGE \
	"usage: stanzactl kmod status\n" \
	"       stanzactl kmod sockets\n" \
	"       stanzactl kmod set KEY VALUE [KEY VALUE...]\n" \
	"       stanzactl kmod reset\n" \
	"KEY: enabled (yes|no), max_sockets_per_request, max_payload, max_registered\n"

/* Prints the failure of `what`, with the kernel's own words when it gave some. */
static int kctl_fail(struct kmod_genl *g, const char *what, int err)
{
	const char *ext = g ? kmod_genl_error(g) : "";

	if (err == -ENOENT)
		fprintf(stderr, "stanzactl: kmod %s: the stanza_offload module is not loaded\n", what);
	else if (err == -EPERM)
		fprintf(stderr, "stanzactl: kmod %s: %s (needs CAP_NET_ADMIN)\n", what, strerror(-err));
	else
		fprintf(stderr, "stanzactl: kmod %s: %s%s%s\n", what, strerror(-err), ext[0] ? ": " : "",
			ext);
	return KCTL_EXIT_FAIL;
}

static int kctl_status(struct kmod_genl *g)
{
	struct kmod_stats st;
	struct kmod_config cfg;
	int ret;

	ret = kmod_genl_get_stats(g, &st);
	if (ret < 0)
		return kctl_fail(g, "status", ret);
	ret = kmod_genl_get_config(g, &cfg);
	if (ret < 0)
		return kctl_fail(g, "status", ret);
	printf("module: loaded\nversion: %u\nenabled: %s\n", st.version, st.enabled ? "yes" : "no");
	printf("max_sockets_per_request: %u\nmax_payload: %u\nmax_registered: %u\n",
	       cfg.max_sockets_per_request, cfg.max_payload, cfg.max_registered);
	printf("owners: %u\nregistered: %u\n", st.owners, st.registered);
	printf("requests: %llu\nrejected: %llu\ntargets: %llu\ncomplete: %llu\npartial: %llu\n"
	       "blocked: %llu\nerrors: %llu\nbytes: %llu\nregistrations: %llu\n",
	       (unsigned long long)st.requests, (unsigned long long)st.rejected,
	       (unsigned long long)st.targets, (unsigned long long)st.complete,
	       (unsigned long long)st.partial, (unsigned long long)st.blocked,
	       (unsigned long long)st.errors, (unsigned long long)st.bytes,
	       (unsigned long long)st.registrations);
	return KCTL_EXIT_OK;
}

static int kctl_sock_line(const struct kmod_sock_info *si, void *arg)
{
	unsigned *n = arg;

	printf("id=%u pid=%u inode=%llu ktls=%s local_port=%u peer_port=%u bytes=%llu sends=%llu "
	       "partial=%llu\n", si->id, si->owner_pid, (unsigned long long)si->inode,
	       si->ktls ? "yes" : "no", si->local_port, si->peer_port,
	       (unsigned long long)si->bytes, (unsigned long long)si->sends,
	       (unsigned long long)si->partial);
	(*n)++;
	return 0;
}

static int kctl_sockets(struct kmod_genl *g)
{
	unsigned n = 0;
	int ret = kmod_genl_dump_sockets(g, kctl_sock_line, &n);

	if (ret < 0)
		return kctl_fail(g, "sockets", ret);
	printf("sockets: %u\n", n);
	return KCTL_EXIT_OK;
}

/* A decimal u32 in [1, 2^32) for a setting. 0 or -EINVAL. */
static int kctl_u32(const char *s, uint32_t *out)
{
	unsigned long long v;
	char *end;

	if (!*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > UINT32_MAX)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

static int kctl_set(struct kmod_genl *g, int argc, char **argv)
{
	struct kmod_config cfg = { 0 };
	unsigned fields = 0;
	int ret = 0;

	if (argc < 2 || argc % 2)
		return fputs("stanzactl: kmod set: KEY VALUE pairs expected\n" KCTL_USAGE, stderr),
		       KCTL_EXIT_USAGE;
	for (int i = 0; i < argc; i += 2) {
		const char *k = argv[i], *v = argv[i + 1];

		if (strcmp(k, "enabled") == 0) {
			cfg.enabled = strcmp(v, "yes") == 0 || strcmp(v, "1") == 0;
			ret = cfg.enabled || strcmp(v, "no") == 0 || strcmp(v, "0") == 0 ? 0 : -EINVAL;
			fields |= KMOD_SET_ENABLED;
		} else if (strcmp(k, "max_sockets_per_request") == 0) {
			ret = kctl_u32(v, &cfg.max_sockets_per_request);
			fields |= KMOD_SET_MAX_SOCKETS;
		} else if (strcmp(k, "max_payload") == 0) {
			ret = kctl_u32(v, &cfg.max_payload);
			fields |= KMOD_SET_MAX_PAYLOAD;
		} else if (strcmp(k, "max_registered") == 0) {
			ret = kctl_u32(v, &cfg.max_registered);
			fields |= KMOD_SET_MAX_REGISTERED;
		} else {
			fprintf(stderr, "stanzactl: kmod set: unknown key '%s'\n" KCTL_USAGE, k);
			return KCTL_EXIT_USAGE;
		}
		if (ret < 0) {
			fprintf(stderr, "stanzactl: kmod set: bad value '%s' for %s\n", v, k);
			return KCTL_EXIT_USAGE;
		}
	}
	/* Ranges are the module's to check: its answer names what is wrong. */
	ret = kmod_genl_set_config(g, &cfg, fields);
	if (ret < 0)
		return kctl_fail(g, "set", ret);
	return KCTL_EXIT_OK;
}

int kmod_ctl_main(int argc, char **argv)
{
	struct kmod_genl *g = NULL;
	const char *cmd = argc > 1 ? argv[1] : "";
	int ret;

	if (argc < 2) {
		fputs("stanzactl: kmod: missing subcommand\n" KCTL_USAGE, stderr);
		return KCTL_EXIT_USAGE;
	}
	if (strcmp(cmd, "status") && strcmp(cmd, "sockets") && strcmp(cmd, "set") &&
	    strcmp(cmd, "reset")) {
		fprintf(stderr, "stanzactl: kmod: unknown subcommand '%s'\n" KCTL_USAGE, cmd);
		return KCTL_EXIT_USAGE;
	}
	if (strcmp(cmd, "set") && argc != 2) {
		fprintf(stderr, "stanzactl: kmod %s: too many arguments\n" KCTL_USAGE, cmd);
		return KCTL_EXIT_USAGE;
	}
	ret = kmod_genl_open(&g);
	if (ret < 0) {
		/* status says "not loaded" on stdout too: it is an answer, not a crash. */
		if (ret == -ENOENT && strcmp(cmd, "status") == 0)
			puts("module: not loaded");
		return kctl_fail(NULL, cmd, ret);
	}
	if (strcmp(cmd, "status") == 0)
		ret = kctl_status(g);
	else if (strcmp(cmd, "sockets") == 0)
		ret = kctl_sockets(g);
	else if (strcmp(cmd, "set") == 0)
		ret = kctl_set(g, argc - 2, argv + 2);
	else if ((ret = kmod_genl_reset_stats(g)) < 0)
		ret = kctl_fail(g, "reset", ret);
	kmod_genl_close(g);
	return ret;
}
