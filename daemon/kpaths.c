/* SPDX-License-Identifier: MIT */
/*
 * What the kernel paths look like in this process (see kpaths.h). Read
 * from what startup decided (server.h: the kTLS probe) and from the ring
 * of the first worker; nothing here probes the kernel again.
 */
#include <liburing.h>
#include <stdio.h>
#include <string.h>

#include "bpf_guard.h"
#include "bpf_sockops.h"
#include "bpf_steer.h"
#include "config.h"
#include "kmod.h"
#include "kpaths.h"
#include "ktls.h"
#include "loop.h"
#include "server.h"
#include "worker.h"

/* "tls1.2:aes128gcm,..." for the suites in mask. */
static void kpaths_ktls_suites(unsigned mask, char *out, size_t size)
{
	static const char *const ciphers[] = {
		[KTLS_AES_128_GCM] = "aes128gcm",
		[KTLS_AES_256_GCM] = "aes256gcm",
		[KTLS_CHACHA20_POLY1305] = "chacha20poly1305",
	};
	size_t n = 0;

	out[0] = '\0';
	for (int v13 = 0; v13 <= 1; v13++) {
		for (unsigned c = KTLS_AES_128_GCM; c <= KTLS_CHACHA20_POLY1305; c++) {
			if (!(mask & KTLS_BIT(v13, c)) || n >= size)
				continue;
			n += (size_t)snprintf(out + n, size - n, "%s%s:%s", n ? "," : "",
					      v13 ? "tls1.3" : "tls1.2", ciphers[c]);
		}
	}
}

unsigned kpaths_describe(const struct server *srv, struct kpath out[KPATHS_MAX])
{
	unsigned n = 0, flags = 0;
	struct kpath *p;

	memset(out, 0, sizeof(struct kpath) * KPATHS_MAX);
	if (srv->workers && srv->workers[0].loop)
		flags = loop_setup_flags(srv->workers[0].loop);

	/* The loop cannot run without it: if it is described at all, it is on. */
	p = &out[n++];
	p->name = "io_uring";
	p->active = true;
	snprintf(p->detail, sizeof(p->detail), "multishot accept/recv, provided buffers%s",
		 (flags & IORING_SETUP_DEFER_TASKRUN) ? ", single issuer, deferred task work" : "");
	if (!(flags & IORING_SETUP_DEFER_TASKRUN))
		snprintf(p->reason, sizeof(p->reason),
			 "the kernel refused SINGLE_ISSUER/DEFER_TASKRUN: a plain ring");

	p = &out[n++];
	p->name = "ktls";
	p->active = srv->ktls_mask != 0;
	kpaths_ktls_suites(srv->ktls_mask, p->detail, sizeof(p->detail));
	if (srv->ktls_mask != KTLS_ALL_SUITES)
		snprintf(p->reason, sizeof(p->reason), "%s",
			 srv->ktls_reason[0] ? srv->ktls_reason : "some suites are missing");

	/* The stanza offload module (kmod.c): every worker opens it; worker 0's state tells. */
	p = &out[n++];
	p->name = "kmod";
	if (srv->workers && srv->workers[0].kmod) {
		struct kmod_counters kc;
		const char *why;

		p->active = strcmp(kmod_state(&srv->workers[0], &why), "on") == 0;
		snprintf(p->reason, sizeof(p->reason), "%s", why);
		kmod_counters(srv, &kc);
		if (p->active)
			snprintf(p->detail, sizeof(p->detail), "fan-outs of %u+ copies; requests=%llu "
				 "copies=%llu", srv->cfg->kmod_min_fanout,
				 (unsigned long long)kc.requests, (unsigned long long)kc.copies);
	} else {
		snprintf(p->reason, sizeof(p->reason), "not started");
	}

	/* The XDP guard (bpf_guard.c) with its counters, the sockops program (bpf_sockops.c). */
	{
		struct bpf_guard_counters gc;
		struct bpf_sockops_counters sc;
		const char *detail, *reason;

		p = &out[n++];
		p->name = "xdp_guard";
		p->active = bpf_guard_state(&detail, &reason);
		snprintf(p->reason, sizeof(p->reason), "%s", reason);
		if (p->active && bpf_guard_counters(&gc) == 0)
			snprintf(p->detail, sizeof(p->detail), "%s; passed=%llu rate_dropped=%llu "
				 "ban_dropped=%llu", detail, (unsigned long long)gc.passed,
				 (unsigned long long)gc.rate_dropped,
				 (unsigned long long)gc.ban_dropped);
		p = &out[n++];
		p->name = "sockops";
		p->active = bpf_sockops_state(&detail, &reason);
		snprintf(p->reason, sizeof(p->reason), "%s", reason);
		if (p->active && bpf_sockops_counters(&sc) == 0)
			snprintf(p->detail, sizeof(p->detail), "%s; tuned=%llu failed=%llu", detail,
				 (unsigned long long)sc.tuned, (unsigned long long)sc.failed);
	}

	/* The steering program (bpf_steer.c): its policy, or why the kernel's hash decides. */
	{
		struct bpf_steer_counters tc;
		const char *detail, *reason;

		p = &out[n++];
		p->name = "reuseport_steering";
		p->active = bpf_steer_state(&detail, &reason);
		snprintf(p->reason, sizeof(p->reason), "%s", reason[0] ? reason : "not started");
		if (p->active && bpf_steer_counters(&tc) == 0)
			snprintf(p->detail, sizeof(p->detail), "%s; fallbacks=%llu", detail,
				 (unsigned long long)tc.fallbacks);
		if (p->active)
			p->reason[0] = '\0';
		else
			snprintf(p->detail, sizeof(p->detail), "kernel reuseport hash");
	}
	return n;
}
