/* SPDX-License-Identifier: MIT */
/*
 * Listener hand-over between a running daemon and its successor (see
 * handover.h for the sequence).
 *
 * Wire format, on a SOCK_SEQPACKET Unix socket (one message per send, the
 * descriptors travel with it as SCM_RIGHTS):
 *
 *   header  "STZH", version 1, type, count, sender pid
 *   type L  the listening sockets: `count` records and as many fds
 *   type C  one connection accepted after the hand-over: one record (the
 *           listener it came from) and its fd
 *   type D  every stream is closing and the last storage write committed:
 *           the successor may read the state (the old daemon may still
 *           linger for its peers' FINs)
 *   EOF     the old daemon has exited (as good as D)
 *
 * A record names the listener's kind ("c2s", "https", ...) and its bound
 * address; kinds travel as names so that a successor built with another
 * enum order still matches them.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "bpf_steer.h"
#include "config.h"
#include "control.h"
#include "handover.h"
#include "log.h"
#include "loop.h"
#include "server.h"
#include "storage.h"
#include "worker.h"

#define HANDOVER_MAGIC		"STZH"
#define HANDOVER_VERSION	1
#define HANDOVER_KIND_MAX	16

enum handover_msg {
	HANDOVER_MSG_LISTENERS = 'L',
	HANDOVER_MSG_CONN = 'C',
	HANDOVER_MSG_DONE = 'D',	/* our last write committed: the state is final */
};

struct handover_hdr {
	char magic[4];
	uint8_t version;
	uint8_t type;		/* enum handover_msg */
	uint16_t count;		/* records (and fds) that follow */
	uint32_t pid;
};

struct handover_rec {
	char kind[HANDOVER_KIND_MAX];	/* listener kind name */
	uint32_t addr_len;
	struct sockaddr_storage addr;	/* the listener's bound address */
};

/* A socket received from the predecessor. */
struct handover_fd {
	int fd;
	bool claimed;
	struct handover_rec rec;
};

static struct {
	/* Successor side: what the predecessor sent. */
	struct handover_fd listeners[SERVER_MAX_LISTENERS];
	unsigned nlisteners;
	struct handover_fd *late;	/* connections it passed on (malloc'd) */
	unsigned nlate;

	/* Running side. */
	int listen_fd;			/* our hand-over socket, -1 none */
	int conn_fd;			/* the successor, once handed over */
	bool handed;
	uint64_t handed_mask;		/* listener indexes handed over (TCP ones) */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
} ho = { .listen_fd = -1, .conn_fd = -1 };

const char *handover_socket_path(const struct config *cfg, char *buf, size_t size)
{
	if (cfg->handover_socket && strcmp(cfg->handover_socket, "off") == 0)
		return NULL;
	if (cfg->handover_socket)
		snprintf(buf, size, "%s", cfg->handover_socket);
	else
		snprintf(buf, size, "%s/%s", cfg->state_dir, HANDOVER_SOCKET_NAME);
	return buf;
}

static const char *handover_kind_name(enum listener_kind k, char *buf, size_t size)
{
	switch (k) {
	case LISTENER_C2S:
		return "c2s";
	case LISTENER_C2S_TLS:
		return "c2s_tls";
	case LISTENER_HTTP:
		return "http";
	case LISTENER_HTTPS:
		return "https";
	case LISTENER_S2S:
		return "s2s";
	case LISTENER_S2S_TLS:
		return "s2s_tls";
	case LISTENER_COMPONENT:
		return "component";
	default:
		break;
	}
	snprintf(buf, size, "kind%d", (int)k);
	return buf;
}

static int handover_sun(const char *path, struct sockaddr_un *sun)
{
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun->sun_path))
		return -ENAMETOOLONG;
	memcpy(sun->sun_path, path, strlen(path));
	return 0;
}

/* Removes path if it is a socket (never a file someone put there by mistake). */
static void handover_unlink_socket(const char *path)
{
	struct stat st;

	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
}

static uint64_t handover_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void handover_set_timeout(int fd, int opt, unsigned ms)
{
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };

	setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof(tv));
}

/* ---- Sending (the running daemon) ---- */

/* One message: header, n records, n fds. 0 or -errno. */
static int handover_send(int fd, uint8_t type, const struct handover_rec *recs, const int *fds,
			 unsigned n)
{
	struct handover_hdr hdr = {
		.magic = HANDOVER_MAGIC, .version = HANDOVER_VERSION, .type = type,
		.count = (uint16_t)n, .pid = (uint32_t)getpid(),
	};
	union {
		char buf[CMSG_SPACE(sizeof(int) * SERVER_MAX_LISTENERS)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov[2] = {
		{ .iov_base = &hdr, .iov_len = sizeof(hdr) },
		{ .iov_base = (void *)recs, .iov_len = n * sizeof(*recs) },
	};
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2 };
	struct cmsghdr *cm;

	if (n > SERVER_MAX_LISTENERS)
		return -EINVAL;
	memset(&ctl, 0, sizeof(ctl));
	if (n) {
		msg.msg_control = ctl.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * n);
		cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * n);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * n);
	}
	if (sendmsg(fd, &msg, MSG_NOSIGNAL) < 0)
		return -errno;
	return 0;
}

static void handover_fill_rec(struct handover_rec *r, const struct listener *l)
{
	socklen_t len = sizeof(r->addr);
	char kbuf[HANDOVER_KIND_MAX];

	memset(r, 0, sizeof(*r));
	snprintf(r->kind, sizeof(r->kind), "%s", handover_kind_name(l->kind, kbuf, sizeof(kbuf)));
	if (getsockname(l->fd, (struct sockaddr *)&r->addr, &len) == 0)
		r->addr_len = len;
}

/* The peer must run as our user (or be root): it gets our sockets. */
static bool handover_peer_allowed(int fd, struct ucred *cred)
{
	socklen_t len = sizeof(*cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) < 0)
		return false;
	return cred->uid == geteuid() || cred->uid == 0;
}

/*
 * The state is final once every stream is closing (worker_begin_shutdown
 * closed them all) and what their ends wrote has committed. Sessions end
 * in the shutdown turn, but stream management reroutes their unacked
 * stanzas at the end of that turn: the first barrier completes after it,
 * and a second one, submitted then, is behind every write of the
 * shutdown. Then the successor is told.
 */
struct handover_barrier {
	struct storage_req req;		/* first */
	int rounds;
};

static int handover_noop(struct storage *st, struct storage_req *req)
{
	return 0;
}

static void handover_send_done(void)
{
	if (ho.conn_fd >= 0 && handover_send(ho.conn_fd, HANDOVER_MSG_DONE, NULL, NULL, 0) == 0)
		log_info("server.handover_state_final", "msg=\"the successor may start\"");
}

static void handover_barrier_done(struct storage_req *req)
{
	struct handover_barrier *b = (struct handover_barrier *)req;
	struct worker *w = (struct worker *)((char *)req->inbox - offsetof(struct worker, inbox));

	/* At exit the queue is gone: then everything is committed anyway. */
	if (--b->rounds > 0 && w->srv->store && req->result != -ESHUTDOWN) {
		storage_queue_submit(w->srv->store, req);
		return;
	}
	free(b);
	handover_send_done();
}

static void handover_barrier(struct worker *w)
{
	struct handover_barrier *b = calloc(1, sizeof(*b));

	if (!b)
		return;	/* the successor waits for our exit instead */
	b->rounds = 2;
	b->req.op = STORAGE_OP_RUN;
	b->req.run = handover_noop;
	b->req.done = handover_barrier_done;
	b->req.inbox = &w->inbox;
	storage_queue_submit(w->srv->store, &b->req);
}

void handover_accept(struct worker *w)
{
	struct server *srv = w->srv;
	struct handover_rec recs[SERVER_MAX_LISTENERS];
	int fds[SERVER_MAX_LISTENERS];
	struct ucred cred = { 0 };
	unsigned n = 0;
	int cfd, ret;

	if (ho.listen_fd < 0)
		return;
	cfd = accept4(ho.listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (cfd < 0)
		return;
	if (ho.handed || w->draining) {
		/* One successor, and none while we are stopping anyway. */
		close(cfd);
		return;
	}
	if (!handover_peer_allowed(cfd, &cred)) {
		log_warn("server.handover_refused", "uid=%u msg=\"the peer runs as another user\"",
			 (unsigned)cred.uid);
		close(cfd);
		return;
	}
	handover_set_timeout(cfd, SO_SNDTIMEO, 2000);
	/* The successor's steering program takes the client sockets into its own array. */
	bpf_steer_release();
	for (unsigned i = 0; i < srv->nlisteners; i++) {
		if (srv->listeners[i].fd < 0)
			continue;
		handover_fill_rec(&recs[n], &srv->listeners[i]);
		/* TCP listeners only: Unix sockets (control) are recreated by path. */
		if (recs[n].addr.ss_family != AF_INET && recs[n].addr.ss_family != AF_INET6)
			continue;
		ho.handed_mask |= 1ull << i;
		fds[n++] = srv->listeners[i].fd;
	}
	ret = handover_send(cfd, HANDOVER_MSG_LISTENERS, recs, fds, n);
	if (ret < 0) {
		log_warn("server.handover_failed", "err=\"%s\" msg=\"still serving\"", strerror(-ret));
		close(cfd);
		return;
	}
	ho.conn_fd = cfd;
	ho.handed = true;
	/*
	 * Stop accepting: the successor accepts from the same sockets now.
	 * What our accepts still complete goes over (handover_forward).
	 */
	for (unsigned i = 0; i < n; i++)
		loop_cancel_fd(w->loop, fds[i]);
	loop_cancel_fd(w->loop, ho.listen_fd);
	/*
	 * Unix listeners (the control socket) stop too and leave their path
	 * to the successor, which creates its own: a socket that still
	 * answered would look like a daemon already running.
	 */
	for (unsigned i = 0; i < srv->nlisteners; i++) {
		struct sockaddr_un sun;
		socklen_t len = sizeof(sun);

		if (srv->listeners[i].fd < 0 || (ho.handed_mask & (1ull << i)) ||
		    getsockname(srv->listeners[i].fd, (struct sockaddr *)&sun, &len) < 0 ||
		    sun.sun_family != AF_UNIX || len <= offsetof(struct sockaddr_un, sun_path) ||
		    !sun.sun_path[0])
			continue;
		loop_cancel_fd(w->loop, srv->listeners[i].fd);
		sun.sun_path[sizeof(sun.sun_path) - 1] = '\0';
		handover_unlink_socket(sun.sun_path);
	}
	control_close(srv);	/* forgets the path, so our exit leaves the successor's alone */
	/* The path is the successor's from now on (it binds it once we are gone). */
	handover_unlink_socket(ho.path);
	log_info("server.handover", "role=old listeners=%u successor_pid=%d msg=\"handing over; "
		 "draining\"", n, (int)cred.pid);
	worker_begin_shutdown(w);
	handover_barrier(w);
}

bool handover_forward(struct worker *w, unsigned listener, int fd)
{
	struct handover_rec rec;
	int ret;

	if (!ho.handed || ho.conn_fd < 0 || !(ho.handed_mask & (1ull << listener)))
		return false;
	handover_fill_rec(&rec, &w->srv->listeners[listener]);
	ret = handover_send(ho.conn_fd, HANDOVER_MSG_CONN, &rec, &fd, 1);
	if (ret < 0) {
		log_warn("server.handover_conn_failed", "err=\"%s\"", strerror(-ret));
		return false;
	}
	log_info("server.handover_conn", "listener=%s msg=\"accepted after the hand-over; "
		 "passed on\"", w->srv->listeners[listener].addr);
	close(fd);
	return true;
}

/* ---- Receiving (the successor) ---- */

/*
 * One message into hdr/recs with its fds. Returns the number of records
 * (fds in fds[]), -EPIPE at end of file, -EAGAIN on timeout, -EPROTO for
 * a malformed message (its fds closed).
 */
static int handover_recv(int fd, struct handover_hdr *hdr, struct handover_rec *recs,
			 unsigned max, int *fds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * SERVER_MAX_LISTENERS)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov[2] = {
		{ .iov_base = hdr, .iov_len = sizeof(*hdr) },
		{ .iov_base = recs, .iov_len = max * sizeof(*recs) },
	};
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2, .msg_control = ctl.buf,
			      .msg_controllen = sizeof(ctl.buf) };
	unsigned nfds = 0;
	struct cmsghdr *cm;
	ssize_t got;

	got = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
	if (got < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -EAGAIN : -errno;
	if (got == 0)
		return -EPIPE;
	for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
			unsigned k = (unsigned)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));

			for (unsigned i = 0; i < k; i++) {
				int f;

				memcpy(&f, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
				if (nfds < max)
					fds[nfds++] = f;
				else
					close(f);
			}
		}
	}
	if ((size_t)got < sizeof(*hdr) || memcmp(hdr->magic, HANDOVER_MAGIC, 4) != 0 ||
	    hdr->version != HANDOVER_VERSION || hdr->count > max || hdr->count != nfds ||
	    (size_t)got != sizeof(*hdr) + hdr->count * sizeof(*recs) ||
	    (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
		for (unsigned i = 0; i < nfds; i++)
			close(fds[i]);
		return -EPROTO;
	}
	for (unsigned i = 0; i < nfds; i++)
		recs[i].kind[HANDOVER_KIND_MAX - 1] = '\0';
	return (int)nfds;
}

/* Connects to a running daemon; -ENOENT when there is none (stale sockets removed). */
static int handover_connect(const char *path)
{
	struct sockaddr_un sun;
	int fd, ret;

	ret = handover_sun(path, &sun);
	if (ret < 0)
		return ret;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0)
		return fd;
	ret = -errno;
	close(fd);
	if (ret == -ECONNREFUSED) {
		/* Left by a daemon that did not exit cleanly. */
		log_info("server.handover_stale", "path=%s msg=\"nobody listens; removed\"", path);
		handover_unlink_socket(path);
		return -ENOENT;
	}
	return ret;
}

/* Waits for the predecessor's exit, keeping the connections it passes on. */
static void handover_wait_exit(int fd)
{
	uint64_t start = handover_now_ms();
	struct handover_hdr hdr;
	struct handover_rec rec;
	int lfd, n;

	handover_set_timeout(fd, SO_RCVTIMEO, 500);
	while (handover_now_ms() - start < HANDOVER_WAIT_MS) {
		n = handover_recv(fd, &hdr, &rec, 1, &lfd);
		if (n == -EAGAIN || n == -EPROTO)
			continue;
		if (n < 0)
			break;	/* end of file: it has exited */
		if (hdr.type == HANDOVER_MSG_DONE)
			break;	/* its state is final */
		if (n != 1)
			continue;
		if (hdr.type != HANDOVER_MSG_CONN || ho.nlate == HANDOVER_MAX_LATE) {
			close(lfd);
			continue;
		}
		if (!ho.late) {
			ho.late = calloc(HANDOVER_MAX_LATE, sizeof(*ho.late));
			if (!ho.late) {
				close(lfd);
				continue;
			}
		}
		ho.late[ho.nlate].fd = lfd;
		ho.late[ho.nlate].rec = rec;
		ho.nlate++;
	}
	if (handover_now_ms() - start >= HANDOVER_WAIT_MS)
		log_warn("server.handover_timeout", "waited_ms=%u msg=\"the old daemon is still "
			 "running; starting anyway\"", HANDOVER_WAIT_MS);
	else
		log_info("server.handover_done", "waited_ms=%llu connections=%u",
			 (unsigned long long)(handover_now_ms() - start), ho.nlate);
}

int handover_take(const struct config *cfg)
{
	struct handover_rec recs[SERVER_MAX_LISTENERS];
	int fds[SERVER_MAX_LISTENERS];
	struct handover_hdr hdr;
	char path[sizeof(ho.path)];
	int fd, n;

	if (!handover_socket_path(cfg, path, sizeof(path)))
		return 0;
	fd = handover_connect(path);
	if (fd == -ENOENT)
		return 0;
	if (fd < 0) {
		log_warn("server.handover_unavailable", "path=%s err=\"%s\"", path, strerror(-fd));
		return 0;
	}
	handover_set_timeout(fd, SO_RCVTIMEO, HANDOVER_ANSWER_MS);
	n = handover_recv(fd, &hdr, recs, SERVER_MAX_LISTENERS, fds);
	if (n < 0 || hdr.type != HANDOVER_MSG_LISTENERS) {
		log_warn("server.handover_failed", "path=%s msg=\"the running daemon did not hand its "
			 "listeners over\"", path);
		for (int i = 0; i < n; i++)
			close(fds[i]);
		close(fd);
		return 0;
	}
	for (int i = 0; i < n; i++) {
		ho.listeners[i].fd = fds[i];
		ho.listeners[i].rec = recs[i];
		/* What the socket really is bound to, rather than what we were told. */
		ho.listeners[i].rec.addr_len = sizeof(ho.listeners[i].rec.addr);
		if (getsockname(fds[i], (struct sockaddr *)&ho.listeners[i].rec.addr,
				&ho.listeners[i].rec.addr_len) < 0)
			ho.listeners[i].rec.addr_len = 0;
	}
	ho.nlisteners = (unsigned)n;
	log_info("server.handover", "role=new listeners=%d predecessor_pid=%u msg=\"waiting for "
		 "it to finish\"", n, hdr.pid);
	handover_wait_exit(fd);
	close(fd);
	return n;
}

int handover_claim(const struct sockaddr *addr, socklen_t len, enum listener_kind kind)
{
	char kbuf[HANDOVER_KIND_MAX];
	const char *name = handover_kind_name(kind, kbuf, sizeof(kbuf));

	for (unsigned i = 0; i < ho.nlisteners; i++) {
		struct handover_fd *h = &ho.listeners[i];

		if (h->claimed || !h->rec.addr_len || strcmp(h->rec.kind, name) != 0 ||
		    !config_addr_equal((const struct sockaddr *)&h->rec.addr, addr))
			continue;
		h->claimed = true;
		return h->fd;
	}
	return -ENOENT;
}

void handover_release_unclaimed(void)
{
	for (unsigned i = 0; i < ho.nlisteners; i++) {
		if (ho.listeners[i].claimed)
			continue;
		log_info("server.handover_unused", "kind=%s msg=\"a listener the old daemon had is "
			 "not configured; closed\"", ho.listeners[i].rec.kind);
		close(ho.listeners[i].fd);
		ho.listeners[i].claimed = true;
	}
}

/* The index of our listener a passed-on connection belongs to, or -1. */
static int handover_listener_of(const struct server *srv, const struct handover_rec *rec)
{
	char kbuf[HANDOVER_KIND_MAX];

	for (unsigned i = 0; i < srv->nlisteners; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);

		if (srv->listeners[i].fd < 0 ||
		    strcmp(handover_kind_name(srv->listeners[i].kind, kbuf, sizeof(kbuf)), rec->kind) ||
		    getsockname(srv->listeners[i].fd, (struct sockaddr *)&ss, &len) < 0)
			continue;
		if (config_addr_equal((struct sockaddr *)&ss, (const struct sockaddr *)&rec->addr))
			return (int)i;
	}
	return -1;
}

int handover_start(struct worker *w)
{
	struct sockaddr_un sun;
	int fd, ret;

	for (unsigned i = 0; i < ho.nlate; i++) {
		int idx = handover_listener_of(w->srv, &ho.late[i].rec);

		if (idx < 0)
			close(ho.late[i].fd);
		else
			worker_adopt(w, (unsigned)idx, ho.late[i].fd);
	}
	free(ho.late);
	ho.late = NULL;
	ho.nlate = 0;

	if (!handover_socket_path(w->srv->cfg, ho.path, sizeof(ho.path)))
		return 0;
	ret = handover_sun(ho.path, &sun);
	if (ret < 0)
		goto err;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ret = -errno;
		goto err;
	}
	handover_unlink_socket(ho.path);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || chmod(ho.path, 0600) < 0 ||
	    listen(fd, 4) < 0) {
		ret = -errno;
		close(fd);
		goto err;
	}
	ret = loop_watch(w->loop, fd, WORKER_WATCH_HANDOVER);
	if (ret < 0) {
		close(fd);
		handover_unlink_socket(ho.path);
		goto err;
	}
	ho.listen_fd = fd;
	return 0;
err:
	log_warn("server.handover_unavailable", "path=%s err=\"%s\" msg=\"restarts will not hand "
		 "the listeners over\"", ho.path, strerror(-ret));
	ho.path[0] = '\0';
	return ret;
}

void handover_finish(void)
{
	if (ho.listen_fd >= 0) {
		close(ho.listen_fd);
		ho.listen_fd = -1;
		/* Handed over: the path is no longer ours to remove. */
		if (!ho.handed && ho.path[0])
			handover_unlink_socket(ho.path);
	}
	if (ho.conn_fd >= 0) {
		close(ho.conn_fd);
		ho.conn_fd = -1;
	}
	for (unsigned i = 0; i < ho.nlisteners; i++)
		if (!ho.listeners[i].claimed)
			close(ho.listeners[i].fd);
	ho.nlisteners = 0;
}
