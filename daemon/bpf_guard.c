/* SPDX-License-Identifier: MIT */
/*
 * Loader of the XDP admission guard (see bpf_guard.h, bpf/guard.bpf.c).
 *
 * Each interface gets a bpf_link (XDP in the driver where the driver has
 * it, else generic XDP): the kernel detaches it when the process exits,
 * crash included, so no guard outlives its daemon. An interface that
 * already has an XDP program keeps it: the attach fails with EBUSY and
 * the guard stays off (all or nothing, so the log line says one thing).
 */
#include <errno.h>
#include <linux/if_link.h>
#include <linux/types.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "abuse.h"
#include "bpf_guard.h"
#include "bpf_util.h"
#include "config.h"
#include "guard.h"
#include "guard.skel.h"
#include "log.h"
#include "server.h"

/*
 * The one guard of the process. Written on the main thread before the
 * workers start and after they stop; read by the ban hook (any thread)
 * and the control socket in between, when it does not change.
 */
static struct {
	struct guard_bpf *skel;
	struct bpf_link *links[GUARD_MAX_IFACES];
	unsigned nlinks;
	bool active;
	char detail[128];
	char reason[160];
} guard;

/* Detaches what start attached (links first, then the maps and program). */
static void guard_unload(void)
{
	for (unsigned i = 0; i < guard.nlinks; i++)
		bpf_link__destroy(guard.links[i]);
	guard.nlinks = 0;
	guard_bpf__destroy(guard.skel);
	guard.skel = NULL;
	guard.active = false;
}

/* Attaches to every configured interface, or to none. 0 or -errno (reason set). */
static int guard_attach(const struct config *cfg)
{
	size_t n = 0;

	for (unsigned i = 0; i < cfg->guard_interfaces.n && i < GUARD_MAX_IFACES; i++) {
		const char *name = cfg->guard_interfaces.v[i];
		unsigned ifindex = if_nametoindex(name);
		LIBBPF_OPTS(bpf_xdp_query_opts, q);
		struct bpf_link *link;
		int err;

		if (!ifindex) {
			snprintf(guard.reason, sizeof(guard.reason), "no interface %s", name);
			return -ENODEV;
		}
		link = bpf_program__attach_xdp(guard.skel->progs.stanzad_guard, (int)ifindex);
		if (!link) {
			err = -errno;
			snprintf(guard.reason, sizeof(guard.reason), "cannot attach to %s: %s", name,
				 err == -EBUSY || err == -EEXIST ?
				 "it has another XDP program" : bpf_util_why(err));
			return err;
		}
		guard.links[guard.nlinks++] = link;
		/* Which mode the kernel chose: the driver's, or generic (after the stack's skb). */
		if (bpf_xdp_query((int)ifindex, 0, &q) < 0)
			q.attach_mode = 0;
		if (n < sizeof(guard.detail))
			n += (size_t)snprintf(guard.detail + n, sizeof(guard.detail) - n, "%s%s (%s)",
					      n ? ", " : "xdp on ", name,
					      q.attach_mode == XDP_ATTACHED_DRV ? "native" :
					      q.attach_mode == XDP_ATTACHED_SKB ? "generic" : "?");
	}
	return 0;
}

bool bpf_guard_start(const struct server *srv)
{
	const struct config *cfg = srv->cfg;
	uint16_t ports[BPF_UTIL_MAX_PORTS];
	unsigned nports;
	uint8_t one = 1;
	int err;

	guard.detail[0] = guard.reason[0] = '\0';
	if (!cfg->bpf) {
		snprintf(guard.reason, sizeof(guard.reason), "disabled (bpf = no)");
		goto off;
	}
	if (!cfg->guard_interfaces.n) {
		snprintf(guard.reason, sizeof(guard.reason), "no interfaces (guard_interfaces)");
		goto off;
	}
	nports = bpf_util_listener_ports(cfg, ports, BPF_UTIL_MAX_PORTS);
	if (!nports) {
		snprintf(guard.reason, sizeof(guard.reason), "no TCP listeners");
		goto off;
	}
	bpf_util_quiet_libbpf();
	guard.skel = guard_bpf__open();
	if (!guard.skel) {
		snprintf(guard.reason, sizeof(guard.reason), "cannot open: %s", bpf_util_why(errno));
		goto off;
	}
	/* guard_syn_rate 0: no bucket, bans only (the interval 0 admits everything). */
	guard.skel->rodata->syn_interval_ns = cfg->guard_syn_rate ?
					      1000000000ull / cfg->guard_syn_rate : 0;
	guard.skel->rodata->syn_burst = cfg->guard_syn_burst;
	err = guard_bpf__load(guard.skel);
	if (err) {
		snprintf(guard.reason, sizeof(guard.reason), "cannot load: %s", bpf_util_why(err));
		goto unload;
	}
	/* The program ignores every other port: the host's own traffic passes untouched. */
	for (unsigned i = 0; i < nports; i++) {
		if (bpf_map__update_elem(guard.skel->maps.ports, &ports[i], sizeof(ports[i]), &one,
					 sizeof(one), BPF_ANY) < 0) {
			snprintf(guard.reason, sizeof(guard.reason), "ports map: %s",
				 bpf_util_why(errno));
			goto unload;
		}
	}
	if (guard_attach(cfg) < 0)
		goto unload;
	guard.active = true;
	/* From now on a ban of abuse.c also lands in the kernel's ban map. */
	auth_ban_set_hook(bpf_guard_ban);
	log_info("bpf.guard", "state=active detail=\"%s\" ports=%u syn_rate=%u syn_burst=%u",
		 guard.detail, nports, cfg->guard_syn_rate, cfg->guard_syn_burst);
	return true;
unload:
	guard_unload();
	guard.detail[0] = '\0';
off:
	log_info("bpf.guard", "state=off reason=\"%s\" fallback=\"userspace limits (abuse.c)\"",
		 guard.reason);
	return false;
}

void bpf_guard_stop(void)
{
	if (!guard.skel)
		return;
	auth_ban_set_hook(NULL);
	guard_unload();
	snprintf(guard.reason, sizeof(guard.reason), "stopped");
}

bool bpf_guard_state(const char **detail, const char **reason)
{
	*detail = guard.detail;
	*reason = guard.reason;
	return guard.active;
}

int bpf_guard_counters(struct bpf_guard_counters *out)
{
	uint64_t v[GUARD_NCOUNTERS];
	int ret;

	memset(out, 0, sizeof(*out));
	if (!guard.active)
		return -ENODEV;
	ret = bpf_util_percpu_sum(bpf_map__fd(guard.skel->maps.counters), GUARD_NCOUNTERS, v);
	if (ret < 0)
		return ret;
	out->passed = v[GUARD_PASSED];
	out->rate_dropped = v[GUARD_RATE_DROPPED];
	out->ban_dropped = v[GUARD_BAN_DROPPED];
	return 0;
}

void bpf_guard_ban(const struct in6_addr *addr, unsigned seconds)
{
	struct guard_key key;
	struct guard_ban ban, old;
	struct timespec ts;
	int fd;

	if (!guard.active)
		return;
	fd = bpf_map__fd(guard.skel->maps.bans);
	/* The same unit as abuse.c's table: IPv4 address, IPv6 /64 (see bpf/guard.h). */
	abuse_source_key(addr, key.addr);
	/* bpf_ktime_get_ns() is CLOCK_MONOTONIC. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ban.until_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec +
		       (uint64_t)seconds * 1000000000ull;
	/* A longer ban already in place stays. */
	if (bpf_map_lookup_elem(fd, &key, &old) == 0 && old.until_ns > ban.until_ns)
		return;
	/* The map is LRU: when full, the ban least recently hit makes room. */
	if (bpf_map_update_elem(fd, &key, &ban, BPF_ANY) < 0)
		log_warn("bpf.guard_ban_failed", "err=\"%s\"", strerror(errno));
}
