/* SPDX-License-Identifier: MIT */
/*
 * Loader of the sockops program (see bpf_sockops.h, bpf/sockops.bpf.c).
 *
 * The attachment is a bpf_link on the daemon's own cgroup v2 directory
 * (from /proc/self/cgroup and the cgroup2 mount in /proc/self/mountinfo):
 * the kernel removes it when the process exits, and links always allow
 * other programs on the same cgroup (a second daemon, systemd's own).
 * Accepted sockets inherit the cgroup of their listener, which is the
 * daemon's, so the program sees exactly the connections to our ports.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/types.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bpf_sockops.h"
#include "bpf_util.h"
#include "config.h"
#include "log.h"
#include "server.h"
#include "sockops.h"
#include "sockops.skel.h"

#define SOCKOPS_PATH_MAX 512	/* cgroup directory path */

static struct {
	struct sockops_bpf *skel;
	struct bpf_link *link;
	bool active;
	char detail[160];
	char reason[160];
} sockops;

/*
 * The cgroup v2 directory this process is in, into out. 0, or -ENOENT
 * (no cgroup2 mount or no v2 membership: a v1-only host) with the reason set.
 */
static int sockops_cgroup_dir(char *out, size_t size)
{
	char line[1024], mnt[SOCKOPS_PATH_MAX] = "", rel[SOCKOPS_PATH_MAX] = "";
	FILE *f;

	f = fopen("/proc/self/cgroup", "re");
	if (f) {
		while (fgets(line, sizeof(line), f))
			if (strncmp(line, "0::", 3) == 0) {
				snprintf(rel, sizeof(rel), "%.*s", (int)sizeof(rel) - 1, line + 3);
				rel[strcspn(rel, "\n")] = '\0';
			}
		fclose(f);
	}
	/* mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS... - FSTYPE SOURCE SUPER */
	f = fopen("/proc/self/mountinfo", "re");
	if (f) {
		while (!mnt[0] && fgets(line, sizeof(line), f)) {
			char root[SOCKOPS_PATH_MAX], point[SOCKOPS_PATH_MAX];
			const char *dash = strstr(line, " - cgroup2 ");

			/* Only a mount of the hierarchy's root names paths as /proc/self/cgroup does. */
			if (dash && sscanf(line, "%*s %*s %*s %511s %511s", root, point) == 2 &&
			    strcmp(root, "/") == 0)
				snprintf(mnt, sizeof(mnt), "%s", point);
		}
		fclose(f);
	}
	if (!rel[0] || !mnt[0]) {
		snprintf(sockops.reason, sizeof(sockops.reason), "no cgroup v2 %s",
			 mnt[0] ? "membership" : "mount");
		return -ENOENT;
	}
	if ((size_t)snprintf(out, size, "%s%s", mnt, strcmp(rel, "/") == 0 ? "" : rel) >= size) {
		snprintf(sockops.reason, sizeof(sockops.reason), "cgroup path too long");
		return -ENAMETOOLONG;
	}
	return 0;
}

bool bpf_sockops_start(const struct server *srv)
{
	const struct config *cfg = srv->cfg;
	uint16_t ports[BPF_UTIL_MAX_PORTS];
	char dir[SOCKOPS_PATH_MAX];
	unsigned nports;
	uint8_t one = 1;
	int err, cgfd;

	sockops.detail[0] = sockops.reason[0] = '\0';
	if (!cfg->bpf) {
		snprintf(sockops.reason, sizeof(sockops.reason), "disabled (bpf = no)");
		goto off;
	}
	nports = bpf_util_listener_ports(cfg, ports, BPF_UTIL_MAX_PORTS);
	if (!nports) {
		snprintf(sockops.reason, sizeof(sockops.reason), "no TCP listeners");
		goto off;
	}
	if (sockops_cgroup_dir(dir, sizeof(dir)) < 0)
		goto off;
	bpf_util_quiet_libbpf();
	sockops.skel = sockops_bpf__open();
	if (!sockops.skel) {
		snprintf(sockops.reason, sizeof(sockops.reason), "cannot open: %s",
			 bpf_util_why(errno));
		goto off;
	}
	sockops.skel->rodata->keepalive_idle = cfg->tcp_keepalive_idle;
	sockops.skel->rodata->keepalive_interval = cfg->tcp_keepalive_interval;
	sockops.skel->rodata->keepalive_count = cfg->tcp_keepalive_count;
	sockops.skel->rodata->user_timeout_ms = cfg->tcp_user_timeout;
	sockops.skel->rodata->nodelay = cfg->tcp_nodelay;
	err = sockops_bpf__load(sockops.skel);
	if (err) {
		snprintf(sockops.reason, sizeof(sockops.reason), "cannot load: %s",
			 bpf_util_why(err));
		goto unload;
	}
	for (unsigned i = 0; i < nports; i++) {
		if (bpf_map__update_elem(sockops.skel->maps.ports, &ports[i], sizeof(ports[i]),
					 &one, sizeof(one), BPF_ANY) < 0) {
			snprintf(sockops.reason, sizeof(sockops.reason), "ports map: %s",
				 bpf_util_why(errno));
			goto unload;
		}
	}
	cgfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cgfd < 0) {
		snprintf(sockops.reason, sizeof(sockops.reason), "cannot open %.100s: %s", dir,
			 strerror(errno));
		goto unload;
	}
	sockops.link = bpf_program__attach_cgroup(sockops.skel->progs.stanzad_sockops, cgfd);
	err = -errno;
	close(cgfd);	/* the link holds the cgroup */
	if (!sockops.link) {
		snprintf(sockops.reason, sizeof(sockops.reason), "cannot attach to %.100s: %s", dir,
			 bpf_util_why(err));
		goto unload;
	}
	sockops.active = true;
	snprintf(sockops.detail, sizeof(sockops.detail), "cgroup %.100s", dir);
	log_info("bpf.sockops", "state=active cgroup=%s ports=%u keepalive=%u/%u/%u "
		 "user_timeout_ms=%u nodelay=%s", dir, nports, cfg->tcp_keepalive_idle,
		 cfg->tcp_keepalive_interval, cfg->tcp_keepalive_count, cfg->tcp_user_timeout,
		 cfg->tcp_nodelay ? "yes" : "no");
	return true;
unload:
	bpf_sockops_stop();
off:
	log_info("bpf.sockops", "state=off reason=\"%s\" fallback=\"setsockopt per connection\"",
		 sockops.reason);
	return false;
}

void bpf_sockops_stop(void)
{
	bpf_link__destroy(sockops.link);
	sockops.link = NULL;
	sockops_bpf__destroy(sockops.skel);
	sockops.skel = NULL;
	sockops.active = false;
}

bool bpf_sockops_state(const char **detail, const char **reason)
{
	*detail = sockops.detail;
	*reason = sockops.reason;
	return sockops.active;
}

int bpf_sockops_counters(struct bpf_sockops_counters *out)
{
	uint64_t v[SOCKOPS_NCOUNTERS];
	int ret;

	memset(out, 0, sizeof(*out));
	if (!sockops.active)
		return -ENODEV;
	ret = bpf_util_percpu_sum(bpf_map__fd(sockops.skel->maps.counters), SOCKOPS_NCOUNTERS, v);
	if (ret < 0)
		return ret;
	out->tuned = v[SOCKOPS_TUNED];
	out->failed = v[SOCKOPS_FAILED];
	return 0;
}

void bpf_sockops_fallback(const struct config *cfg, int fd)
{
	int one = 1, v;

	if (sockops.active)
		return;
	/* Failures change nothing that matters: the connection works without them. */
	if (cfg->tcp_nodelay)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (cfg->tcp_keepalive_idle) {
		setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
		v = (int)cfg->tcp_keepalive_idle;
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof(v));
		v = (int)cfg->tcp_keepalive_interval;
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, sizeof(v));
		v = (int)cfg->tcp_keepalive_count;
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v, sizeof(v));
	}
	if (cfg->tcp_user_timeout) {
		v = (int)cfg->tcp_user_timeout;
		setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &v, sizeof(v));
	}
}
