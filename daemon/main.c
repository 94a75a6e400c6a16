/* SPDX-License-Identifier: MIT */
/*
 * stanzad: startup and shutdown.
 *
 * ORDER: configuration -> storage (creates the state directory) ->
 * certificate -> TLS contexts -> listeners (so "port in use" is reported
 * before anything runs) -> SASL -> storage thread -> session directory ->
 * signals -> workers. Teardown runs in reverse.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bpf_guard.h"
#include "bpf_sockops.h"
#include "bpf_steer.h"
#include "cluster.h"
#include "config.h"
#include "control.h"
#include "db.h"
#include "handover.h"
#include "http.h"
#include "iq.h"
#include "kmod.h"
#include "log.h"
#include "mailbox.h"
#include "muc.h"
#include "ops.h"
#include "provisioning.h"
#include "pubsub.h"
#include "s2s.h"
#include "reload.h"
#include "registry.h"
#include "sasl.h"
#include "sdlisten.h"
#include "sdnotify.h"
#include "server.h"
#include "session.h"
#include "storage.h"
#include "storage_db.h"
#include "ktls.h"
#include "tls.h"
#include "worker.h"

/* Listen backlog: reconnect storms arrive all at once. */
#define LISTEN_BACKLOG 4096

/* Client listeners are served by every worker; the others by worker 0 (server.h). */
static bool listener_per_worker(enum listener_kind kind)
{
	return kind == LISTENER_C2S || kind == LISTENER_C2S_TLS;
}

/*
 * Whether a listener holds addr (errno EADDRINUSE then): a bind without
 * SO_REUSEPORT fails against any listening socket, including one of a
 * group. SO_REUSEADDR lets connections in TIME_WAIT pass, as our own
 * bind does.
 */
static bool address_taken(const struct sockaddr_storage *ss, unsigned len)
{
	int one = 1, fd, ret, e;

	if ((ss->ss_family == AF_INET && ((const struct sockaddr_in *)ss)->sin_port == 0) ||
	    (ss->ss_family == AF_INET6 && ((const struct sockaddr_in6 *)ss)->sin6_port == 0))
		return false;	/* an ephemeral port is ours alone */
	fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	ret = bind(fd, (const struct sockaddr *)ss, len);
	e = errno;
	close(fd);
	errno = e;
	return ret < 0 && e == EADDRINUSE;
}

static int open_listener(struct server *srv, const char *addr, enum listener_kind kind)
{
	struct sockaddr_storage ss;
	struct listener *l;
	unsigned len;
	int fd, one = 1;
	bool shared;

	if (srv->nlisteners == SERVER_MAX_LISTENERS) {
		fprintf(stderr, "stanzad: too many listeners (at most %d)\n", SERVER_MAX_LISTENERS);
		return -EINVAL;
	}
	if (config_parse_addr(addr, &ss, &len) < 0) {
		fprintf(stderr, "stanzad: cannot parse listen address '%s'\n", addr);
		return -EINVAL;
	}
	/* The socket of the daemon we replace, still queueing connections (handover.c). */
	fd = handover_claim((struct sockaddr *)&ss, len, kind);
	if (fd >= 0)
		goto record;
	/* A socket systemd holds for us (stanzad.socket; sdlisten.c). */
	fd = sdlisten_claim((struct sockaddr *)&ss);
	if (fd >= 0)
		goto record;
	/*
	 * SO_REUSEPORT would let us join another daemon's group: the port must
	 * be free, except for the client ports of a cluster node, which share
	 * them with the other nodes on this box (docs/cluster-deployment.md).
	 */
	shared = listener_per_worker(kind) && srv->cfg->cluster;
	if (listener_per_worker(kind) && address_taken(&ss, len)) {
		if (shared)
			log_info("listener.shared", "addr=%s msg=\"joining the nodes already "
				 "listening here\"", addr);
		else if (srv->cfg->workers > 1)
			goto err;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto err;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* Client ports: every worker (and, in a cluster, node) adds its socket to one group. */
	if (listener_per_worker(kind) && (srv->cfg->workers > 1 || shared))
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
		int e = errno;

		close(fd);
		errno = e;
		/* The default HTTP port (not configured) may be taken: run without it. */
		if (kind == LISTENER_HTTP && !srv->cfg->listen_http.set && e == EADDRINUSE) {
			log_warn("http.listener_unavailable", "addr=%s msg=\"the default HTTP port is "
				 "in use; upload and WebSocket are off (set listen_http)\"", addr);
			return -EADDRINUSE;
		}
		goto err;
	}
record:
	l = &srv->listeners[srv->nlisteners++];
	l->fd = fd;
	l->worker_fd[0] = fd;
	for (unsigned k = 1; k < SERVER_MAX_WORKERS; k++)
		l->worker_fd[k] = -1;
	l->kind = kind;
	snprintf(l->addr, sizeof(l->addr), "%s", addr);
	return 0;
err:
	fprintf(stderr, "stanzad: cannot listen on %s: %s\n", addr, strerror(errno));
	return -errno;
}

/*
 * Workers 1..N-1 get a socket of their own on each client address, in the
 * SO_REUSEPORT group of worker 0's socket. A socket we did not make (a
 * hand-over's or systemd's) joins only if it was made with SO_REUSEPORT;
 * otherwise worker 0 alone serves it, which the log says. Never fatal: a
 * worker without a socket still takes connections that move to it.
 */
static void open_worker_sockets(struct server *srv)
{
	for (unsigned i = 0; i < srv->nlisteners; i++) {
		struct listener *l = &srv->listeners[i];
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int one = 1, on = 0;
		socklen_t olen = sizeof(on);

		if (!listener_per_worker(l->kind) || srv->nworkers < 2)
			continue;
		if (getsockopt(l->fd, SOL_SOCKET, SO_REUSEPORT, &on, &olen) < 0 || !on ||
		    getsockname(l->fd, (struct sockaddr *)&ss, &len) < 0) {
			log_warn("listener.single_worker", "addr=%s msg=\"the inherited socket has no "
				 "SO_REUSEPORT; worker 0 alone accepts here (ReusePort=yes in the socket "
				 "unit)\"", l->addr);
			continue;
		}
		for (unsigned k = 1; k < srv->nworkers; k++) {
			int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

			if (fd < 0 ||
			    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
			    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
			    bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
				log_warn("listener.worker_socket", "addr=%s worker=%u err=\"%s\"", l->addr,
					 k, strerror(errno));
				if (fd >= 0)
					close(fd);
				continue;
			}
			l->worker_fd[k] = fd;
		}
	}
}

static void close_listeners(struct server *srv)
{
	for (unsigned i = 0; i < srv->nlisteners; i++) {
		for (unsigned k = 1; k < SERVER_MAX_WORKERS && listener_per_worker(srv->listeners[i].kind);
		     k++)
			if (srv->listeners[i].worker_fd[k] >= 0)
				close(srv->listeners[i].worker_fd[k]);
		close(srv->listeners[i].fd);
	}
	srv->nlisteners = 0;
}

/* ---- Worker threads (1..N-1; worker 0 runs on the main thread) ---- */

struct worker_start {
	struct server *srv;
	unsigned id;
	int result;
	sem_t *ready;
	pthread_t thread;	/* here, not in the worker: worker_init() clears that */
	bool started;
};

static void *worker_thread(void *arg)
{
	struct worker_start *ws = arg;
	struct worker *w = &ws->srv->workers[ws->id];
	char name[16];

	snprintf(name, sizeof(name), "stanzad-w%u", ws->id);
	pthread_setname_np(pthread_self(), name);
	ws->result = worker_init(w, ws->srv, ws->id, -1);
	sem_post(ws->ready);
	if (ws->result < 0)
		return NULL;
	if (worker_run(w) < 0)
		log_error("worker.stop", "worker=%u msg=\"the loop failed\"", w->id);
	return NULL;
}

/*
 * Starts workers 1..N-1, each making its ring on its own thread. 0, or
 * -errno when one could not start (those that did are stopped again).
 */
static int start_worker_threads(struct server *srv, struct worker_start *ws)
{
	sem_t ready;
	int ret = 0;

	sem_init(&ready, 0, 0);
	for (unsigned k = 1; k < srv->nworkers; k++) {
		ws[k] = (struct worker_start){ .srv = srv, .id = k, .result = -EAGAIN, .ready = &ready };
		ws[k].started = pthread_create(&ws[k].thread, NULL, worker_thread, &ws[k]) == 0;
		if (!ws[k].started)
			sem_post(&ready);
	}
	for (unsigned k = 1; k < srv->nworkers; k++)
		sem_wait(&ready);
	sem_destroy(&ready);
	for (unsigned k = 1; k < srv->nworkers; k++) {
		if (ws[k].result < 0) {
			fprintf(stderr, "stanzad: cannot start worker %u: %s\n", k, strerror(-ws[k].result));
			ret = ws[k].result;
		}
	}
	return ret;
}

/* Waits for workers 1..N-1 to end (after worker 0 asked them to). */
static void join_worker_threads(struct server *srv, struct worker_start *ws)
{
	for (unsigned k = 1; k < srv->nworkers; k++)
		if (ws[k].started)
			pthread_join(ws[k].thread, NULL);
}

/* Uses the whole hard fd limit; derives max_connections from it if unset. */
static void raise_fd_limit(struct config *cfg)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (!cfg->max_connections) {
		rlim_t n = rl.rlim_cur > 128 ? rl.rlim_cur - 64 : 64;

		cfg->max_connections = n > 10000000 ? 10000000 : (uint32_t)n;
	}
}

static int file_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/* Loads the configured certificate, or makes a self-signed one on first start. */
static int setup_tls(struct server *srv)
{
	const struct config *cfg = srv->cfg;
	const char *cert = config_cert_path(cfg), *key;
	char cert_path[4096];

	snprintf(cert_path, sizeof(cert_path), "%s", cert);
	key = config_key_path(cfg);
	if (!cfg->cert && (!file_exists(cert_path) || !file_exists(key))) {
		int ret = tls_generate_self_signed(cfg->domain, cert_path, key);

		if (ret < 0) {
			fprintf(stderr, "stanzad: cannot create a self-signed certificate in %s: %s\n",
				cfg->state_dir, strerror(-ret));
			return ret;
		}
		log_info("tls.self_signed", "domain=%s cert=%s", cfg->domain, cert_path);
	}
	srv->tls_starttls = tls_server_new(cert_path, key, NULL);
	if (!srv->tls_starttls)
		goto err;
	/* Same certificate and ticket keys: a ticket from one port resumes on the other. */
	srv->tls_direct = tls_server_share(srv->tls_starttls, "xmpp-client");
	if (!srv->tls_direct)
		goto err;
	/* SASL EXTERNAL (XEP-0178): c2s clients may present certificates from this CA. */
	if (cfg->client_ca &&
	    (tls_server_set_client_ca(srv->tls_starttls, cfg->client_ca, cfg->client_crl) < 0 ||
	     tls_server_set_client_ca(srv->tls_direct, cfg->client_ca, cfg->client_crl) < 0)) {
		fprintf(stderr, "stanzad: cannot load client_ca %s%s%s (see the log line above)\n",
			cfg->client_ca, cfg->client_crl ? " / client_crl " : "",
			cfg->client_crl ? cfg->client_crl : "");
		tls_server_free(srv->tls_direct);
		tls_server_free(srv->tls_starttls);
		srv->tls_direct = srv->tls_starttls = NULL;
		return -EINVAL;
	}
	/* Which suites the kernel takes after the handshake (logged in server.paths). */
	srv->ktls_mask = cfg->ktls ? ktls_probe(srv->ktls_reason, sizeof(srv->ktls_reason)) : 0;
	if (!cfg->ktls)
		snprintf(srv->ktls_reason, sizeof(srv->ktls_reason), "ktls=no in the configuration");
	tls_server_enable_ktls(srv->tls_starttls, srv->ktls_mask);
	tls_server_enable_ktls(srv->tls_direct, srv->ktls_mask);
	return 0;
err:
	fprintf(stderr, "stanzad: cannot load certificate %s and key %s (see the log line above)\n",
		cert_path, key);
	return -EINVAL;
}

/*
 * Reads a 32-byte secret from state_dir/name, creating it (mode 0600) on
 * first start. The SCRAM decoys for unknown users derive from it; it must
 * survive restarts, or an unknown user's salt would change while a real
 * one's does not. 0 or -errno.
 */
static int load_secret(const char *state_dir, const char *name, uint8_t out[32])
{
	char path[4096], tmp[4200];
	ssize_t n;
	int fd, ret;

	snprintf(path, sizeof(path), "%s/%s", state_dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0) {
		n = read(fd, out, 32);
		ret = n == 32 ? 0 : -EINVAL;
		close(fd);
		return ret;
	}
	if (errno != ENOENT)
		return -errno;
	if (getrandom(out, 32, 0) != 32)
		return -errno;
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	ret = write(fd, out, 32) == 32 && fsync(fd) == 0 ? 0 : -EIO;
	close(fd);
	if (ret == 0 && rename(tmp, path) < 0)
		ret = -errno;
	if (ret < 0)
		unlink(tmp);
	return ret;
}

/* The signals the loop handles; blocked so that they wait for the signalfd. */
static int block_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGHUP);
	return pthread_sigmask(SIG_BLOCK, set, NULL) != 0 ? -errno : 0;
}

static int setup_signals(void)
{
	sigset_t set;

	/* Signals arrive through a signalfd that the loop watches. */
	signal(SIGPIPE, SIG_IGN);
	if (block_signals(&set) < 0)
		return -errno;
	return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

static void log_startup(const struct server *srv)
{
	const struct config *cfg = srv->cfg;
	char c2s[256] = "", tls[256] = "", http[256] = "";
	char store[512], qstore[512];
	const char *kmod_on, *kmod_why, *steer_detail, *steer_why;
	bool steer_on;

	for (unsigned i = 0; i < srv->nlisteners; i++) {
		enum listener_kind k = srv->listeners[i].kind;
		char *dst = k == LISTENER_C2S ? c2s : k == LISTENER_C2S_TLS ? tls : http;

		if (k == LISTENER_CONTROL || s2s_listener_kind(k))
			continue;	/* control.listen, s2s.start say where (control.c, s2s.c) */

		snprintf(dst + strlen(dst), 256 - strlen(dst), "%s%s", dst[0] ? "," : "",
			 srv->listeners[i].addr);
	}
	db_uri_mask(cfg->storage, store, sizeof(store));
	log_info("server.start", "domain=%s c2s=%s c2s_tls=%s state_dir=%s storage=%s "
		 "registration=%s require_tls=%s", cfg->domain, c2s[0] ? c2s : "off",
		 tls[0] ? tls : "off", cfg->state_dir,
		 log_sanitize(qstore, sizeof(qstore), store, strlen(store)),
		 cfg->registration_open ? "open" : "closed", cfg->require_tls ? "yes" : "no");
	if (cfg->homes_loop)
		log_info("server.homes", "mode=loop msg=\"diagnostic: every stanza for a local account "
			 "passes through its home worker's mailbox\"");
	else if (cfg->homes_mode == HOMES_HASH)
		log_info("server.homes", "mode=hash workers=%u", srv->nworkers);
	else if (cfg->homes_mode == HOMES_OTHER)
		log_info("server.homes", "mode=other worker=%u msg=\"diagnostic: every account at "
			 "home on the last worker\"", srv->nworkers - 1);
	if (srv->http)
		log_info("http.start", "listeners=%s base_url=%s websocket=%s upload=%s", http,
			 srv->http->base_url, cfg->websocket ? "yes" : "no",
			 srv->http->upload ? "yes" : "no");
	/* Which kernel paths are in use, and why the others are not. */
	/* The offload module (kmod.c): worker 0 opened it or says why not. */
	kmod_on = kmod_state(&srv->workers[0], &kmod_why);
	steer_on = bpf_steer_state(&steer_detail, &steer_why);
	log_info("server.paths", "io_uring=on tls=%s ktls=%s ktls_suites=0x%02x%s%s%s "
		 "kmod=%s%s%s%s steering=%s%s%s%s workers=%u doorbell=%s",
		 srv->ktls_mask ? "ktls" : "userspace",
		 srv->ktls_mask == KTLS_ALL_SUITES ? "on" : srv->ktls_mask ? "partial" : "off",
		 srv->ktls_mask, srv->ktls_reason[0] ? " ktls_reason=\"" : "", srv->ktls_reason,
		 srv->ktls_reason[0] ? "\"" : "", kmod_on, kmod_why[0] ? " kmod_reason=\"" : "",
		 kmod_why, kmod_why[0] ? "\"" : "",
		 steer_on ? "bpf" : srv->nworkers > 1 ? "kernel-hash" : "none",
		 !steer_on && steer_why[0] ? " steering_reason=\"" : "", steer_on ? "" : steer_why,
		 !steer_on && steer_why[0] ? "\"" : "", srv->nworkers,
		 srv->workers[0].mbox.efd >= 0 ? "eventfd" : "msg_ring");
	if (!cfg->require_tls)
		log_warn("server.insecure", "msg=\"require_tls=no: clients may authenticate without "
			 "TLS; use only on trusted networks and for benchmarks\"");
}

int main(int argc, char **argv)
{
	struct config cfg;
	struct server srv;
	struct worker *w = NULL;
	struct worker_start *starts = NULL;
	bool barriers = false;
	struct storage *st = NULL;
	char why[512];
	enum log_level lvl;
	sigset_t early;
	int ret, sfd, status = 1;

	memset(&srv, 0, sizeof(srv));
	/*
	 * A SIGTERM that comes once the listeners accept but before the loop
	 * runs must stay pending for the signalfd, not kill the process.
	 */
	block_signals(&early);
	ret = config_load(&cfg, argc, argv);
	if (ret != 0) {
		config_free(&cfg);
		return ret == 1 ? 0 : ret == -EINVAL ? 2 : 1;
	}
	srv.cfg = &cfg;
	reload_set_args(argc, argv);	/* SIGHUP reads the same file and flags (reload.c) */
	if (log_level_parse(cfg.log_level, &lvl) == 0)
		log_threshold = lvl;
	raise_fd_limit(&cfg);
	/* Before any thread: it reads and clears $NOTIFY_SOCKET (systemd). */
	sdnotify_init();
	ops_log_open(&cfg);	/* stderr or the journal, rate limit (ops_config.c) */
	srv.started = time(NULL);
	/* XEP-0157 contact addresses, before anything computes the caps hash (disco.c). */
	if (disco_serverinfo_init(&cfg) < 0)
		goto out_config;

	ret = storage_open_at(&st, cfg.storage, cfg.state_dir, why, sizeof(why));
	if (ret < 0) {
		/* why names the file, or the server with the password masked. */
		fprintf(stderr, "stanzad: cannot open storage in %s (%s)\n", why, strerror(-ret));
		goto out_config;
	}
	if (setup_tls(&srv) < 0)
		goto out_storage;
	/*
	 * Cluster mode: the node name is claimed in Redis before anything is
	 * served (a second live node of the same name must not start).
	 */
	ret = cluster_init(&srv);
	if (ret < 0)
		goto out_storage;
	/*
	 * A daemon running on this state hands its listening sockets over and
	 * exits (handover.c); everything that can fail was checked above.
	 */
	handover_take(&cfg);
	sdlisten_take();	/* systemd socket activation, when a socket unit started us */
	/*
	 * The BPF paths, each saying whether it runs and why not: before the
	 * listeners, so that sockops sees every connection's handshake.
	 */
	bpf_guard_start(&srv);
	bpf_sockops_start(&srv);
	for (unsigned i = 0; i < cfg.listen_c2s.n; i++)
		if (open_listener(&srv, cfg.listen_c2s.v[i], LISTENER_C2S) < 0)
			goto out_listeners;
	for (unsigned i = 0; i < cfg.listen_c2s_tls.n; i++)
		if (open_listener(&srv, cfg.listen_c2s_tls.v[i], LISTENER_C2S_TLS) < 0)
			goto out_listeners;
	for (unsigned i = 0; i < cfg.listen_http.n; i++) {
		ret = open_listener(&srv, cfg.listen_http.v[i], LISTENER_HTTP);
		if (ret == -EADDRINUSE && !cfg.listen_http.set) {
			cfg.listen_http.n = 0;	/* the default only: see open_listener */
			free(cfg.listen_http.v[0]);
			cfg.listen_http.v[0] = NULL;
		} else if (ret < 0) {
			goto out_listeners;
		}
	}
	for (unsigned i = 0; i < cfg.listen_https.n; i++)
		if (open_listener(&srv, cfg.listen_https.v[i], LISTENER_HTTPS) < 0)
			goto out_listeners;
	/* Federation and components (s2s.c); all off unless configured. */
	for (unsigned i = 0; i < cfg.listen_s2s.n; i++)
		if (open_listener(&srv, cfg.listen_s2s.v[i], LISTENER_S2S) < 0)
			goto out_listeners;
	for (unsigned i = 0; i < cfg.listen_s2s_tls.n; i++)
		if (open_listener(&srv, cfg.listen_s2s_tls.v[i], LISTENER_S2S_TLS) < 0)
			goto out_listeners;
	for (unsigned i = 0; i < cfg.listen_component.n; i++)
		if (open_listener(&srv, cfg.listen_component.v[i], LISTENER_COMPONENT) < 0)
			goto out_listeners;
	handover_release_unclaimed();
	sdlisten_release_unclaimed();
	/* The workers, with their sockets on the client ports and the steering program. */
	srv.nworkers = cfg.workers ? cfg.workers : 1;
	srv.workers = calloc(srv.nworkers, sizeof(*srv.workers));
	starts = calloc(srv.nworkers, sizeof(*starts));
	if (!srv.workers || !starts) {
		fprintf(stderr, "stanzad: out of memory\n");
		goto out_listeners;
	}
	pthread_barrier_init(&srv.park_in, NULL, srv.nworkers);
	pthread_barrier_init(&srv.park_out, NULL, srv.nworkers);
	barriers = true;
	/* stanzactl's socket; no thread runs yet (it sets the umask for a moment). */
	if (control_open(&srv) < 0)
		goto out_listeners;
	if (http_configured(&cfg)) {
		srv.http = http_server_new(&srv);
		if (!srv.http) {
			fprintf(stderr, "stanzad: cannot set up the HTTP listener: %s\n", strerror(errno));
			goto out_listeners;
		}
	}

	/* After the control socket: `stanzactl` works as soon as the ports answer. */
	open_worker_sockets(&srv);
	bpf_steer_start(&srv);

	/*
	 * The nodes of a cluster share their store, and must share this secret
	 * too (an unknown name gets the same decoy salt from each): in the
	 * store then. One node alone keeps it in its state directory.
	 */
	if (storage_on_pg(st))
		ret = storage_shared_secret(st, "decoy", srv.decoy_secret);
	else
		ret = load_secret(cfg.state_dir, "decoy.key", srv.decoy_secret);
	if (ret < 0) {
		fprintf(stderr, "stanzad: cannot read or create the SCRAM decoy secret (%s): %s\n",
			storage_on_pg(st) ? "in the store" : "decoy.key in the state directory",
			strerror(-ret));
		goto out_listeners;
	}
	srv.sasl = sasl_server_new(cfg.domain, srv.decoy_secret);
	if (!srv.sasl) {
		fprintf(stderr, "stanzad: cannot initialise SASL: %s\n", strerror(errno));
		goto out_listeners;
	}
	/* One session directory per worker: each holds the accounts at home there. */
	for (unsigned k = 0; k < srv.nworkers; k++)
		if (!(srv.sessdirs[k] = sessdir_new()))
			goto out_sessions;
	/* Persistent chat rooms are read before the storage thread owns the store. */
	ret = muc_service_load(&srv, st);
	if (ret < 0) {
		fprintf(stderr, "stanzad: cannot load the chat rooms: %s\n", strerror(-ret));
		goto out_sessions;
	}
	/* So are the pubsub and PEP nodes (XEP-0060, XEP-0163). */
	ret = pubsub_init(st, &srv);
	if (ret < 0) {
		fprintf(stderr, "stanzad: cannot load the pubsub nodes: %s\n", strerror(-ret));
		goto out_sessions;
	}
	/* And the provisioned things with their rules (XEP-0324, XEP-0347). */
	ret = provisioning_init(&srv, st);
	if (ret < 0) {
		fprintf(stderr, "stanzad: cannot load the provisioning rules: %s\n", strerror(-ret));
		goto out_sessions;
	}
	/* TLS contexts of federation, its host table and resolver thread (s2s.c). */
	if (s2s_server_init(&srv) < 0)
		goto out_sessions;
	ret = storage_queue_start(&srv.store, st);
	if (ret < 0) {
		fprintf(stderr, "stanzad: cannot start the storage thread: %s\n", strerror(-ret));
		goto out_sessions;
	}
	st = NULL;	/* the queue owns the store now */

	sfd = setup_signals();
	if (sfd < 0) {
		fprintf(stderr, "stanzad: cannot set up signals: %s\n", strerror(errno));
		goto out_store;
	}
	w = &srv.workers[0];
	ret = worker_init(w, &srv, 0, sfd);
	if (ret < 0) {
		fprintf(stderr, "stanzad: cannot start the event loop: %s\n", strerror(-ret));
		goto out_signals;
	}
	if (start_worker_threads(&srv, starts) < 0) {
		worker_begin_shutdown(w);	/* the ones that started stop again */
		worker_post_now(w);
		status = 1;
		goto out_workers;
	}
	/* Connections the predecessor passed on, then our own hand-over socket. */
	handover_start(w);
	log_startup(&srv);
	sdnotify_ready(w->loop, "accepting connections");

	ret = worker_run(w);
	status = ret < 0 ? 1 : 0;
	sdnotify_close();	/* its watchdog timer lives on the worker's loop */
	worker_post_now(w);	/* the stop messages, if the loop ended on its own */
out_workers:
	join_worker_threads(&srv, starts);
	/*
	 * What the workers posted each other while stopping (connections that
	 * moved to worker 0 after its loop ended are closed below).
	 */
	workers_quiesce(&srv);
	log_info("server.stop", "status=%d", status);

	/*
	 * The storage thread finishes what is queued and posts completions to
	 * the workers' inboxes, so it stops while the inboxes still exist;
	 * worker_destroy() then drains them against closed connections.
	 */
	storage_queue_stop(srv.store);
	srv.store = NULL;
	s2s_server_stop(&srv);	/* the resolver posts to the inbox too */
	/* The last completions, and what they post each other (answers, acks released). */
	workers_quiesce(&srv);
	for (unsigned k = srv.nworkers; k-- > 0;)
		if (srv.workers[k].loop)
			worker_destroy(&srv.workers[k]);
out_signals:
	close(sfd);
out_store:
	if (srv.store)
		storage_queue_stop(srv.store);
out_sessions:
	s2s_server_free(&srv);
	registry_shutdown();
	provisioning_shutdown();
	pubsub_shutdown();
	muc_service_free(srv.muc);
	for (unsigned k = 0; k < srv.nworkers; k++)
		sessdir_free(srv.sessdirs[k]);
	sasl_server_free(srv.sasl);
out_listeners:
	http_server_free(srv.http);
	control_close(&srv);	/* the socket file */
	handover_finish();	/* after the store stopped: the successor may go on */
	bpf_guard_stop();
	bpf_sockops_stop();
	bpf_steer_stop();
	close_listeners(&srv);
	if (barriers) {
		pthread_barrier_destroy(&srv.park_in);
		pthread_barrier_destroy(&srv.park_out);
	}
	free(srv.workers);
	free(starts);
	tls_server_free(srv.tls_direct);
	tls_server_free(srv.tls_starttls);
out_storage:
	cluster_shutdown();	/* after the workers: their Redis connections are closed */
	if (st)
		storage_close(st);
out_config:
	log_close();	/* the last rate-limit summaries */
	config_free(&cfg);
	return status;
}
