/* SPDX-License-Identifier: MIT */
/*
 * Loader of the reuseport steering program (see bpf_steer.h,
 * bpf/steer.bpf.c).
 *
 * The program is attached with SO_ATTACH_REUSEPORT_EBPF to one socket of
 * each c2s group (the kernel keeps one program per group, shared by its
 * members), not through a bpf_link: reuseport programs have none. So it
 * outlives a crashed daemon on sockets a successor inherits; the
 * successor's start replaces it, or detaches it when steering is off.
 *
 * The load map is mmapped so that a worker publishes its load with one
 * store. Drains are rare (the control socket): a map update.
 */
#include <errno.h>
#include <linux/types.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bpf_steer.h"
#include "bpf_util.h"
#include "config.h"
#include "log.h"
#include "server.h"
#include "steer.h"
#include "steer.skel.h"

#ifndef SO_ATTACH_REUSEPORT_EBPF
#define SO_ATTACH_REUSEPORT_EBPF 52
#endif
#ifndef SO_DETACH_REUSEPORT_BPF
#define SO_DETACH_REUSEPORT_BPF 68
#endif
#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

/* How long start waits for a crashed predecessor's socket array to let go of a socket. */
#define STEER_BUSY_RETRIES	50
#define STEER_BUSY_WAIT_NS	10000000	/* 10 ms */

_Static_assert(STEER_MAX_WORKERS == SERVER_MAX_WORKERS, "bpf/steer.h and server.h disagree");

/*
 * The one steering of the process. Written on the main thread before the
 * workers start and after they stop; in between the workers store their
 * loads (each its own slot) and the control socket (worker 0) drains.
 */
static struct {
	struct steer_bpf *skel;
	volatile uint64_t *load;	/* the load map's mmap, STEER_MAX_WORKERS slots */
	size_t load_size;
	unsigned nworkers;
	unsigned nsocks;		/* entries put in the socket array */
	uint32_t sock_keys[STEER_MAX_SOCKS];
	bool drained[STEER_MAX_WORKERS];
	bool active;
	char detail[128];
	char reason[160];
} steer = { .reason = "not started" };

static bool steer_c2s(const struct listener *l)
{
	return l->kind == LISTENER_C2S || l->kind == LISTENER_C2S_TLS;
}

/*
 * Detaches whatever reuseport program the c2s groups have (ours after a
 * failed start, or one a crashed predecessor left): the kernel's hash
 * decides from then on. No program is no error.
 */
static void steer_detach_all(const struct server *srv)
{
	int zero = 0;

	for (unsigned i = 0; i < srv->nlisteners; i++)
		if (steer_c2s(&srv->listeners[i]) && srv->listeners[i].fd >= 0)
			setsockopt(srv->listeners[i].fd, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &zero,
				   sizeof(zero));
}

/* Frees what start made (not the attachment: see bpf_steer_stop). */
static void steer_unload(void)
{
	if (steer.load)
		munmap((void *)steer.load, steer.load_size);
	steer.load = NULL;
	steer_bpf__destroy(steer.skel);
	steer.skel = NULL;
	steer.active = false;
	steer.nsocks = 0;
}

/*
 * Puts fd at key of the socket array. A socket can be in one socket array
 * only: one of a predecessor that crashed holds it until the kernel frees
 * that array, soon after its program was detached; so EBUSY is retried a
 * little. 0 or -errno.
 */
static int steer_add_sock(uint32_t key, int fd)
{
	uint64_t v = (uint64_t)fd;
	int mfd = bpf_map__fd(steer.skel->maps.socks);

	for (int tries = 0;; tries++) {
		struct timespec ts = { 0, STEER_BUSY_WAIT_NS };

		if (bpf_map_update_elem(mfd, &key, &v, BPF_ANY) == 0)
			break;
		if (errno != EBUSY || tries == STEER_BUSY_RETRIES)
			return -errno;
		nanosleep(&ts, NULL);
	}
	steer.sock_keys[steer.nsocks++] = key;
	return 0;
}

/*
 * Registers group g: its members' sockets, their cookies (how the program
 * finds the group of a SYN), and which workers it has. 0 or -errno (reason set).
 */
static int steer_add_group(const struct listener *l, uint32_t g, unsigned nworkers)
{
	struct steer_group grp = { 0 };
	int err;

	for (unsigned k = 0; k < nworkers; k++) {
		uint64_t cookie;
		socklen_t len = sizeof(cookie);
		int fd = l->worker_fd[k];

		if (fd < 0)
			continue;
		err = steer_add_sock(g * STEER_MAX_WORKERS + k, fd);
		if (err < 0) {
			snprintf(steer.reason, sizeof(steer.reason), "socket array (%s, worker %u): %s",
				 l->addr, k, err == -EBUSY ? "the socket is in another steering map" :
				 bpf_util_why(err));
			return err;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) < 0 ||
		    bpf_map__update_elem(steer.skel->maps.cookies, &cookie, sizeof(cookie), &g,
					 sizeof(g), BPF_ANY) < 0) {
			err = -errno;
			snprintf(steer.reason, sizeof(steer.reason), "cookies map (%s): %s", l->addr,
				 bpf_util_why(err));
			return err;
		}
		grp.members |= 1ull << k;
	}
	if (bpf_map__update_elem(steer.skel->maps.groups, &g, sizeof(g), &grp, sizeof(grp),
				 BPF_ANY) < 0) {
		err = -errno;
		snprintf(steer.reason, sizeof(steer.reason), "groups map: %s", bpf_util_why(err));
		return err;
	}
	return 0;
}

/* The policy of the steering key; -1 for kernel (no program). */
static int steer_policy(const struct config *cfg, const char **name)
{
	const char *s = cfg->steering ? cfg->steering : "least-loaded";

	*name = s;
	if (strcmp(s, "kernel") == 0)
		return -1;
	return strcmp(s, "source-hash") == 0 ? STEER_SOURCE_HASH : STEER_LEAST_LOADED;
}

bool bpf_steer_start(struct server *srv)
{
	const struct config *cfg = srv->cfg;
	struct steer_config sc = { 0 };
	unsigned ngroups = 0, groups[STEER_MAX_GROUPS];
	uint32_t zero = 0;
	const char *pname;
	int policy = steer_policy(cfg, &pname), prog_fd, err;

	steer.detail[0] = steer.reason[0] = '\0';
	memset(steer.drained, 0, sizeof(steer.drained));
	steer.nworkers = srv->nworkers;
	for (unsigned i = 0; i < srv->nlisteners; i++) {
		if (!steer_c2s(&srv->listeners[i]))
			continue;
		if (ngroups == STEER_MAX_GROUPS) {
			snprintf(steer.reason, sizeof(steer.reason), "more than %d client listeners",
				 STEER_MAX_GROUPS);
			goto off;
		}
		groups[ngroups++] = i;
	}
	if (!cfg->bpf) {
		snprintf(steer.reason, sizeof(steer.reason), "disabled (bpf = no)");
		goto off;
	}
	if (policy < 0) {
		snprintf(steer.reason, sizeof(steer.reason), "steering = kernel");
		goto off;
	}
	/*
	 * A group has one program, and ours chooses among our sockets only: on
	 * a port shared with other nodes it would take every connection.
	 */
	if (cfg->cluster) {
		snprintf(steer.reason, sizeof(steer.reason), "cluster mode (client ports "
			 "shared with other nodes)");
		goto off;
	}
	if (srv->nworkers < 2) {
		snprintf(steer.reason, sizeof(steer.reason), "single worker");
		goto off;
	}
	if (srv->nworkers > STEER_MAX_WORKERS) {
		snprintf(steer.reason, sizeof(steer.reason), "more than %d workers",
			 STEER_MAX_WORKERS);
		goto off;
	}
	if (!ngroups) {
		snprintf(steer.reason, sizeof(steer.reason), "no client listeners");
		goto off;
	}
	bpf_util_quiet_libbpf();
	steer.skel = steer_bpf__open_and_load();
	if (!steer.skel) {
		snprintf(steer.reason, sizeof(steer.reason), "cannot load: %s", bpf_util_why(errno));
		goto off;
	}
	/*
	 * Attached first, with nothing in its array yet (it leaves every SYN to
	 * the kernel's hash meanwhile): replacing a predecessor's program in
	 * one step, rather than detaching it first, leaves no moment without a
	 * select-or-migrate program, when a closing listener's queue would be
	 * reset instead of moved. The predecessor's array then goes, and with
	 * it its hold on the sockets (steer_add_sock waits for that).
	 */
	prog_fd = bpf_program__fd(steer.skel->progs.stanzad_steer);
	for (unsigned g = 0; g < ngroups; g++) {
		const struct listener *l = &srv->listeners[groups[g]];

		if (setsockopt(l->fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &prog_fd,
			       sizeof(prog_fd)) < 0) {
			err = -errno;
			snprintf(steer.reason, sizeof(steer.reason), "cannot attach to %s: %s",
				 l->addr, bpf_util_why(err));
			goto unload;
		}
	}
	for (unsigned g = 0; g < ngroups; g++)
		if (steer_add_group(&srv->listeners[groups[g]], g, srv->nworkers) < 0)
			goto unload;
	sc.policy = (uint32_t)policy;
	sc.nworkers = srv->nworkers;
	if (getrandom(&sc.seed, sizeof(sc.seed), 0) != (ssize_t)sizeof(sc.seed))
		sc.seed = (uint32_t)time(NULL) ^ (uint32_t)getpid();
	if (bpf_map__update_elem(steer.skel->maps.settings, &zero, sizeof(zero), &sc, sizeof(sc),
				 BPF_ANY) < 0) {
		snprintf(steer.reason, sizeof(steer.reason), "settings map: %s", bpf_util_why(errno));
		goto unload;
	}
	steer.load_size = (size_t)sysconf(_SC_PAGESIZE);
	if (steer.load_size < STEER_MAX_WORKERS * sizeof(uint64_t))
		steer.load_size = STEER_MAX_WORKERS * sizeof(uint64_t);
	steer.load = mmap(NULL, steer.load_size, PROT_READ | PROT_WRITE, MAP_SHARED,
			  bpf_map__fd(steer.skel->maps.load), 0);
	if (steer.load == MAP_FAILED) {
		steer.load = NULL;
		snprintf(steer.reason, sizeof(steer.reason), "cannot mmap the load map: %s",
			 strerror(errno));
		goto unload;
	}
	steer.active = true;
	snprintf(steer.detail, sizeof(steer.detail), "%s over %u workers, %u listener%s", pname,
		 srv->nworkers, ngroups, ngroups == 1 ? "" : "s");
	log_info("bpf.steer", "state=active policy=%s workers=%u listeners=%u", pname,
		 srv->nworkers, ngroups);
	return true;
unload:
	steer_unload();
off:
	/* Whatever is attached (ours, half done, or a predecessor's) goes: the kernel's hash. */
	steer_detach_all(srv);
	steer.detail[0] = '\0';
	log_info("bpf.steer", "state=off policy=%s reason=\"%s\" fallback=\"kernel reuseport hash\"",
		 pname, steer.reason);
	return false;
}

void bpf_steer_release(void)
{
	uint32_t zero = 0;
	struct steer_config sc = { 0 };

	if (!steer.skel || !steer.active)
		return;
	/* Same as the first half of stop; the load map stays mapped for the workers. */
	bpf_map__update_elem(steer.skel->maps.settings, &zero, sizeof(zero), &sc, sizeof(sc),
			     BPF_ANY);
	for (unsigned i = 0; i < steer.nsocks; i++)
		bpf_map_delete_elem(bpf_map__fd(steer.skel->maps.socks), &steer.sock_keys[i]);
	steer.nsocks = 0;
	steer.active = false;
	snprintf(steer.reason, sizeof(steer.reason), "handed over to the successor");
	log_info("bpf.steer", "state=off reason=\"%s\"", steer.reason);
}

void bpf_steer_stop(void)
{
	uint32_t zero = 0;
	struct steer_config sc = { 0 };

	if (!steer.skel)
		return;
	/*
	 * No workers: the program, still attached, leaves everything to the
	 * kernel. The sockets leave the array (closed ones already have), so
	 * that a successor's array can take them.
	 */
	bpf_map__update_elem(steer.skel->maps.settings, &zero, sizeof(zero), &sc, sizeof(sc),
			     BPF_ANY);
	for (unsigned i = 0; i < steer.nsocks; i++)
		bpf_map_delete_elem(bpf_map__fd(steer.skel->maps.socks), &steer.sock_keys[i]);
	steer_unload();
	steer.detail[0] = '\0';
	snprintf(steer.reason, sizeof(steer.reason), "stopped");
}

void bpf_steer_set_load(unsigned worker, uint32_t load)
{
	volatile uint64_t *slots = steer.load;

	if (slots && worker < steer.nworkers)
		__atomic_store_n(&slots[worker], (uint64_t)load, __ATOMIC_RELAXED);
}

int bpf_steer_drain(unsigned worker, bool drained)
{
	uint32_t key = worker, v = drained;
	unsigned undrained = 0;

	if (!steer.active)
		return -ENODEV;
	if (worker >= steer.nworkers)
		return -EINVAL;
	for (unsigned k = 0; k < steer.nworkers; k++)
		undrained += k != worker && !steer.drained[k];
	if (drained && !undrained)
		return -EBUSY;
	if (bpf_map__update_elem(steer.skel->maps.drain, &key, sizeof(key), &v, sizeof(v),
				 BPF_ANY) < 0)
		return -errno;
	if (steer.drained[worker] != drained)
		log_info("bpf.steer_drain", "worker=%u drained=%s", worker, drained ? "yes" : "no");
	steer.drained[worker] = drained;
	return 0;
}

bool bpf_steer_drained(unsigned worker)
{
	return steer.active && worker < STEER_MAX_WORKERS && steer.drained[worker];
}

bool bpf_steer_state(const char **detail, const char **reason)
{
	*detail = steer.detail;
	*reason = steer.reason;
	return steer.active;
}

int bpf_steer_counters(struct bpf_steer_counters *out)
{
	uint64_t v[STEER_NCOUNTERS];
	int ret;

	memset(out, 0, sizeof(*out));
	if (!steer.active)
		return -ENODEV;
	ret = bpf_util_percpu_sum(bpf_map__fd(steer.skel->maps.counters), STEER_NCOUNTERS, v);
	if (ret < 0)
		return ret;
	for (unsigned k = 0; k < STEER_MAX_WORKERS; k++)
		out->selected[k] = v[k];
	out->fallbacks = v[STEER_FALLBACK];
	return 0;
}
