/* SPDX-License-Identifier: MIT */
/*
 * fanout_client: many XMPP clients in one process, for the kernel lab's
 * fan-out tests and benchmark (tests/kernel/test_kmod_lab.py,
 * tests/kernel/bench_fanout.py).
 *
 *   fanout_client --port P --password PW --publisher USER --receivers N
 *                 [--receiver-prefix R] [--tls] [--domain D] [--updates U]
 *                 [--status-bytes B] [--stall K] [--drop K --drop-after U]
 *                 [--digests FILE] [--server-pid PID] [--wait-stdin]
 *                 [--concurrency C] [--timeout S]
 *
 * Receivers r0..r(N-1) and the publisher log in (Direct TLS with --tls,
 * else plain TCP; SASL PLAIN, bind, initial presence). The publisher's
 * roster has every receiver with subscription 'both' (the test seeds it),
 * so each presence it sends is one fan-out to N sessions. Then:
 *
 *   update 0	the publisher's first presence; once every receiver has it,
 *		each receiver starts a SHA-256 of everything it reads after
 *   1..U	one presence each, <status>uNNNNN:...</status> padded to
 *		--status-bytes, sent when every reading receiver got the
 *		previous one; the time from the send to the last receipt is
 *		the fan-out's latency
 *
 * --stall K: receivers 0..K-1 stop reading after update 0 (their socket
 * buffers fill, the server must queue the rest) and read again after the
 * last update; they must end with every update, in order. --drop K:
 * receivers K..2K-1 (after the stalled ones) reset their connections
 * right after update --drop-after is sent. --digests FILE: one line per
 * receiver, "user sha256 bytes updates in-order". --server-pid: the
 * server's CPU time (all its threads) over updates 1..U goes into the
 * report. --wait-stdin: after the logins, print "ready" and wait for a
 * line on stdin (the driver measures memory meanwhile).
 *
 * The report is one JSON object on stdout. Exit status 0 when every
 * reading receiver got every update in order, 1 otherwise, 2 for usage.
 * Single-threaded, epoll, non-blocking; OpenSSL for TLS (no certificate
 * checks: the lab's server has a self-signed one).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <dirent.h>
#include <unistd.h>

#define FC_RBUF		65536		/* one read */
#define FC_LOGIN_MAX	65536		/* bytes kept while logging in */
#define FC_OUT_MAX	(1 << 20)	/* pending output per client */
#define FC_TAIL		16		/* bytes kept across reads to find markers (> 14) */
#define FC_MARK		"<status>u"	/* an update's marker: <status>uNNNNN: */
#define FC_MARK_LEN	9
#define FC_NUM_LEN	5
#define FC_UPDATES_MAX	99999

enum fc_state {
	FC_CONNECTING = 0,
	FC_TLS,
	FC_FEATURES1,		/* header sent, waiting for the SASL mechanisms */
	FC_AUTH,		/* <auth/> sent */
	FC_FEATURES2,		/* header after SASL sent */
	FC_BIND,		/* bind iq sent */
	FC_READY,		/* initial presence sent */
	FC_CLOSED,
};

struct fc_client {
	int fd;
	SSL *ssl;
	enum fc_state state;
	bool publisher;
	bool stalled, dropped, paused;
	bool want_write;	/* EPOLLOUT armed */
	char user[64];
	/* Login: what arrived since the last step. */
	char *login;
	size_t login_len;
	/* Output not yet written (login steps, the publisher's updates). */
	char *out;
	size_t out_len;
	/* After update 0: every byte read, hashed; markers tracked. */
	EVP_MD_CTX *md;
	bool marked;
	uint64_t bytes;
	int last;		/* highest update received whole, -1 none */
	int pending;		/* the update whose marker came last, -1 none */
	bool in_order;
	char tail[FC_TAIL];
	size_t tail_len;
};

static struct {
	const char *host, *domain, *password, *publisher, *prefix, *digests;
	int port, receivers, updates, status_bytes, stall, drop, drop_after, concurrency, timeout;
	int server_pid;
	bool tls, wait_stdin;
} opt = {
	.host = "127.0.0.1", .domain = "localhost", .prefix = "r", .updates = 10,
	.status_bytes = 32, .drop_after = 1, .concurrency = 64, .timeout = 300,
};

static struct fc_client *clients;	/* receivers, then the publisher */
static int nclients;
static int epfd;
static SSL_CTX *ssl_ctx;
static int errors;
static uint64_t *t_sent, *t_last;	/* per update, ns */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("fanout_client: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* Run time of all the server's threads, ns (schedstat), or 0. */
static uint64_t server_cpu_ns(void)
{
	char path[64], line[300];
	uint64_t total = 0;
	struct dirent *d;
	DIR *dir;

	if (!opt.server_pid)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/task", opt.server_pid);
	dir = opendir(path);
	if (!dir)
		return 0;
	while ((d = readdir(dir)) != NULL) {
		FILE *f;

		if (d->d_name[0] == '.')
			continue;
		snprintf(line, sizeof(line), "/proc/%d/task/%s/schedstat", opt.server_pid, d->d_name);
		f = fopen(line, "r");
		if (!f)
			continue;
		if (fgets(line, sizeof(line), f))
			total += strtoull(line, NULL, 10);
		fclose(f);
	}
	closedir(dir);
	return total;
}

/* ---- Output ---- */

static void fc_arm(struct fc_client *c, bool write)
{
	struct epoll_event ev = { .events = (c->paused ? 0 : EPOLLIN) | (write ? EPOLLOUT : 0),
				  .data.ptr = c };

	c->want_write = write;
	epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void fc_close(struct fc_client *c, bool reset)
{
	if (c->state == FC_CLOSED)
		return;
	if (reset) {
		struct linger lg = { 1, 0 };

		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
	if (c->ssl)
		SSL_free(c->ssl);
	c->ssl = NULL;
	close(c->fd);
	c->state = FC_CLOSED;
}

static void fc_fail(struct fc_client *c, const char *why)
{
	fprintf(stderr, "fanout_client: %s: %s (state %d)\n", c->user, why, c->state);
	errors++;
	fc_close(c, false);
}

/* Writes what is pending; arms EPOLLOUT when the socket is full. */
static void fc_flush(struct fc_client *c)
{
	while (c->out_len && c->state != FC_CLOSED) {
		ssize_t n;

		if (c->ssl) {
			int r = SSL_write(c->ssl, c->out, (int)c->out_len);

			if (r <= 0) {
				int e = SSL_get_error(c->ssl, r);

				if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
					break;
				fc_fail(c, "SSL_write failed");
				return;
			}
			n = r;
		} else {
			n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EAGAIN)
					break;
				fc_fail(c, strerror(errno));
				return;
			}
		}
		memmove(c->out, c->out + n, c->out_len - (size_t)n);
		c->out_len -= (size_t)n;
	}
	if (c->state != FC_CLOSED && (c->out_len > 0) != c->want_write)
		fc_arm(c, c->out_len > 0);
}

static void fc_send(struct fc_client *c, const char *data, size_t len)
{
	if (c->out_len + len > FC_OUT_MAX) {
		fc_fail(c, "output backlog");
		return;
	}
	c->out = realloc(c->out, c->out_len + len);
	if (!c->out)
		die("out of memory");
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
	fc_flush(c);
}

static void fc_send_str(struct fc_client *c, const char *s)
{
	fc_send(c, s, strlen(s));
}

/* ---- Login ---- */

static void fc_header(struct fc_client *c)
{
	char b[256];

	snprintf(b, sizeof(b), "<?xml version='1.0'?><stream:stream to='%s' version='1.0' "
		 "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>", opt.domain);
	fc_send_str(c, b);
	c->login_len = 0;
}

static bool fc_has(const struct fc_client *c, const char *s)
{
	return memmem(c->login, c->login_len, s, strlen(s)) != NULL;
}

static void fc_auth(struct fc_client *c)
{
	unsigned char raw[256], b64[400];
	char b[512];
	int n = snprintf((char *)raw, sizeof(raw), "%c%s%c%s", 0, c->user, 0, opt.password);

	EVP_EncodeBlock(b64, raw, n);
	snprintf(b, sizeof(b), "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
		 "%s</auth>", b64);
	c->login_len = 0;
	fc_send_str(c, b);
}

static void fc_ready(struct fc_client *c);

/* Moves the login on with what has arrived. */
static void fc_login_step(struct fc_client *c)
{
	switch (c->state) {
	case FC_FEATURES1:
		if (!fc_has(c, "</stream:features>"))
			return;
		if (!fc_has(c, ">PLAIN<")) {
			fc_fail(c, "PLAIN not offered");
			return;
		}
		c->state = FC_AUTH;
		fc_auth(c);
		return;
	case FC_AUTH:
		if (fc_has(c, "<failure")) {
			fc_fail(c, "authentication failed");
			return;
		}
		if (!fc_has(c, "<success"))
			return;
		c->state = FC_FEATURES2;
		fc_header(c);
		return;
	case FC_FEATURES2:
		if (!fc_has(c, "</stream:features>"))
			return;
		c->state = FC_BIND;
		c->login_len = 0;
		fc_send_str(c, "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
			    "<resource>fc</resource></bind></iq>");
		return;
	case FC_BIND:
		if (fc_has(c, "type='error'") || fc_has(c, "type=\"error\"")) {
			fc_fail(c, "bind failed");
			return;
		}
		if (!fc_has(c, "</iq>"))
			return;
		c->login_len = 0;
		fc_ready(c);
		return;
	default:
		return;
	}
}

/* ---- Receiving ---- */

/*
 * Update markers in data (with the tail of the previous read in front):
 * <status>uNNNNN: names the update, and the </presence> after it completes
 * it: only then does c->last move on (a copy counts once all its bytes are
 * in). An update out of order is noted.
 */
static void fc_scan(struct fc_client *c, const char *data, size_t len)
{
	static const char end_tag[] = "</presence>";
	char buf[FC_RBUF + FC_TAIL];
	size_t n = c->tail_len, i = 0, keep;

	memcpy(buf, c->tail, c->tail_len);
	memcpy(buf + n, data, len);
	n += len;
	while (i < n) {
		const char *m = memmem(buf + i, n - i, FC_MARK, FC_MARK_LEN);
		const char *e = memmem(buf + i, n - i, end_tag, sizeof(end_tag) - 1);

		if (m && (!e || m < e)) {
			int u = 0;

			if ((size_t)(m - buf) + FC_MARK_LEN + FC_NUM_LEN > n)
				break;	/* the number is in the next read */
			for (int k = 0; k < FC_NUM_LEN; k++)
				u = u * 10 + (m[FC_MARK_LEN + k] - '0');
			c->pending = u;
			i = (size_t)(m - buf) + FC_MARK_LEN + FC_NUM_LEN;
			continue;
		}
		if (!e)
			break;
		i = (size_t)(e - buf) + sizeof(end_tag) - 1;
		if (c->pending <= c->last)
			continue;	/* another presence */
		if (c->marked && c->pending != c->last + 1)
			c->in_order = false;
		c->last = c->pending;
		if (!c->publisher && c->last >= 1 && c->last <= opt.updates && !c->stalled) {
			uint64_t t = now_ns();

			if (t > t_last[c->last])
				t_last[c->last] = t;
		}
	}
	/* Keep what could be the start of a token cut by this read. */
	keep = n - i < FC_TAIL - 1 ? n - i : FC_TAIL - 1;
	memcpy(c->tail, buf + n - keep, keep);
	c->tail_len = keep;
}

static void fc_data(struct fc_client *c, const char *data, size_t len)
{
	if (c->state < FC_READY) {
		size_t before = c->login_len;
		const char *end;

		if (c->login_len + len > FC_LOGIN_MAX) {
			fc_fail(c, "login reply too large");
			return;
		}
		memcpy(c->login + c->login_len, data, len);
		c->login_len += len;
		if (c->state != FC_BIND || !(end = memmem(c->login, c->login_len, "</iq>", 5))) {
			fc_login_step(c);
			return;
		}
		fc_login_step(c);
		/* What came after the bind result in the same read is stream content. */
		end += 5;
		if ((size_t)(end - c->login) < before + len && c->state == FC_READY) {
			size_t skip = (size_t)(end - c->login) - before;

			data += skip;
			len -= skip;
		} else {
			return;
		}
	}
	if (c->marked) {
		EVP_DigestUpdate(c->md, data, len);
		c->bytes += len;
	}
	fc_scan(c, data, len);
}

static void fc_read(struct fc_client *c)
{
	static char buf[FC_RBUF];

	while (c->state != FC_CLOSED && !c->paused) {
		ssize_t n;

		if (c->ssl) {
			int r = SSL_read(c->ssl, buf, sizeof(buf));

			if (r <= 0) {
				int e = SSL_get_error(c->ssl, r);

				if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
					return;
				fc_fail(c, e == SSL_ERROR_ZERO_RETURN ? "closed by the server" : "SSL_read failed");
				return;
			}
			n = r;
		} else {
			n = recv(c->fd, buf, sizeof(buf), 0);
			if (n < 0 && errno == EAGAIN)
				return;
			if (n <= 0) {
				fc_fail(c, n == 0 ? "closed by the server" : strerror(errno));
				return;
			}
		}
		fc_data(c, buf, (size_t)n);
	}
}

/* ---- Connecting ---- */

static void fc_connect(struct fc_client *c)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port) };
	struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
	int one = 1;

	inet_pton(AF_INET, opt.host, &a.sin_addr);
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		die("socket: %s (raise the fd limit)", strerror(errno));
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->login = malloc(FC_LOGIN_MAX);
	c->md = EVP_MD_CTX_new();
	if (!c->login || !c->md)
		die("out of memory");
	c->last = -1;
	c->pending = -1;
	c->in_order = true;
	c->state = FC_CONNECTING;
	c->want_write = true;
	epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
	if (connect(c->fd, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS)
		fc_fail(c, strerror(errno));
}

/* The TCP connect finished: TLS, or the stream header. */
static void fc_connected(struct fc_client *c)
{
	int err = 0;
	socklen_t len = sizeof(err);

	getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
	if (err) {
		fc_fail(c, strerror(err));
		return;
	}
	if (!opt.tls) {
		c->state = FC_FEATURES1;
		fc_arm(c, false);
		fc_header(c);
		return;
	}
	c->ssl = SSL_new(ssl_ctx);
	if (!c->ssl)
		die("SSL_new failed");
	SSL_set_fd(c->ssl, c->fd);
	SSL_set_tlsext_host_name(c->ssl, opt.domain);
	SSL_set_connect_state(c->ssl);
	c->state = FC_TLS;
}

static void fc_handshake(struct fc_client *c)
{
	int r = SSL_do_handshake(c->ssl);

	if (r == 1) {
		c->state = FC_FEATURES1;
		fc_arm(c, false);
		fc_header(c);
		return;
	}
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		fc_arm(c, false);
		return;
	case SSL_ERROR_WANT_WRITE:
		fc_arm(c, true);
		return;
	default:
		fc_fail(c, "TLS handshake failed");
	}
}

static int logged_in;

static void fc_ready(struct fc_client *c)
{
	c->state = FC_READY;
	logged_in++;
	if (!c->publisher)
		fc_send_str(c, "<presence/>");
}

static void fc_event(struct fc_client *c, uint32_t events)
{
	if (c->state == FC_CLOSED)
		return;
	if (c->state == FC_CONNECTING) {
		fc_connected(c);
		if (c->state != FC_TLS)
			return;
	}
	if (c->state == FC_TLS) {
		fc_handshake(c);
		if (c->state == FC_TLS || c->state == FC_CLOSED)
			return;
	}
	if (events & EPOLLOUT)
		fc_flush(c);
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		fc_read(c);
}

/* One turn of the event loop, waiting at most ms. */
static void fc_poll(int ms)
{
	struct epoll_event evs[256];
	int n = epoll_wait(epfd, evs, 256, ms);

	for (int i = 0; i < n; i++)
		fc_event(evs[i].data.ptr, evs[i].events);
}

/* ---- The run ---- */

static void fc_send_update(struct fc_client *pub, int u)
{
	static char *b;
	size_t pad = opt.status_bytes > 32 ? (size_t)opt.status_bytes - 7 : 25;
	int n;

	if (!b)
		b = malloc(pad + 128);
	n = snprintf(b, 128, "<presence><status>u%05d:", u);
	memset(b + n, 'a' + u % 26, pad);
	n += (int)pad;
	n += snprintf(b + n, 64, "</status></presence>");
	fc_send(pub, b, (size_t)n);
}

/* Whether every reading receiver has update u (one that was closed ends the run). */
static bool fc_all_have(int u)
{
	for (int i = 0; i < opt.receivers; i++) {
		const struct fc_client *c = &clients[i];

		if (c->stalled || c->dropped)
			continue;
		if (c->state == FC_CLOSED)
			die("%s was disconnected before update %d", c->user, u);
		if (c->last < u)
			return false;
	}
	return true;
}

static void fc_wait_for(int u, const char *what)
{
	uint64_t deadline = now_ns() + (uint64_t)opt.timeout * 1000000000ull;

	while (!fc_all_have(u)) {
		if (now_ns() > deadline)
			die("timeout waiting for %s (update %d)", what, u);
		fc_poll(100);
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void usage(void)
{
	fputs("usage: fanout_client --port P --password PW --publisher USER --receivers N [options]\n"
	      "  (see the comment at the top of tests/kernel/fanout_client.c)\n", stderr);
	exit(2);
}

static void parse_args(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "host", 1, 0, 'H' }, { "port", 1, 0, 'p' }, { "domain", 1, 0, 'd' },
		{ "password", 1, 0, 'w' }, { "publisher", 1, 0, 'P' }, { "receivers", 1, 0, 'n' },
		{ "receiver-prefix", 1, 0, 'r' }, { "tls", 0, 0, 't' }, { "updates", 1, 0, 'u' },
		{ "status-bytes", 1, 0, 'b' }, { "stall", 1, 0, 's' }, { "drop", 1, 0, 'D' },
		{ "drop-after", 1, 0, 'A' }, { "digests", 1, 0, 'g' }, { "server-pid", 1, 0, 'S' },
		{ "wait-stdin", 0, 0, 'W' }, { "concurrency", 1, 0, 'c' }, { "timeout", 1, 0, 'T' },
		{ 0, 0, 0, 0 },
	};
	int o;

	while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (o) {
		case 'H': opt.host = optarg; break;
		case 'p': opt.port = atoi(optarg); break;
		case 'd': opt.domain = optarg; break;
		case 'w': opt.password = optarg; break;
		case 'P': opt.publisher = optarg; break;
		case 'n': opt.receivers = atoi(optarg); break;
		case 'r': opt.prefix = optarg; break;
		case 't': opt.tls = true; break;
		case 'u': opt.updates = atoi(optarg); break;
		case 'b': opt.status_bytes = atoi(optarg); break;
		case 's': opt.stall = atoi(optarg); break;
		case 'D': opt.drop = atoi(optarg); break;
		case 'A': opt.drop_after = atoi(optarg); break;
		case 'g': opt.digests = optarg; break;
		case 'S': opt.server_pid = atoi(optarg); break;
		case 'W': opt.wait_stdin = true; break;
		case 'c': opt.concurrency = atoi(optarg); break;
		case 'T': opt.timeout = atoi(optarg); break;
		default: usage();
		}
	}
	if (!opt.port || !opt.password || !opt.publisher || opt.receivers < 1 || opt.updates < 1 ||
	    opt.updates > FC_UPDATES_MAX || opt.stall < 0 || opt.drop < 0 ||
	    opt.stall + opt.drop > opt.receivers || opt.concurrency < 1 ||
	    opt.drop_after < 1 || opt.drop_after > opt.updates)
		usage();
}

int main(int argc, char **argv)
{
	struct rlimit rl;
	uint64_t t0, cpu0 = 0, cpu1 = 0, t_run0, t_run1, *lat;
	int connecting = 0, started = 0, failures = 0, stalled_ok = 0;
	struct fc_client *pub;
	FILE *dg = NULL;

	parse_args(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	/* In the lab we are root in a fresh kernel: room for every socket. */
	rl.rlim_cur = rl.rlim_max = (rlim_t)opt.receivers + 1024;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
		getrlimit(RLIMIT_NOFILE, &rl);
		if (rl.rlim_cur < (rlim_t)opt.receivers + 64) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	if (opt.tls) {
		static const unsigned char alpn[] = "\x0bxmpp-client";

		ssl_ctx = SSL_CTX_new(TLS_client_method());
		if (!ssl_ctx)
			die("SSL_CTX_new failed");
		SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_NONE, NULL);
		SSL_CTX_set_alpn_protos(ssl_ctx, alpn, sizeof(alpn) - 1);
	}
	epfd = epoll_create1(EPOLL_CLOEXEC);
	nclients = opt.receivers + 1;
	clients = calloc((size_t)nclients, sizeof(*clients));
	t_sent = calloc((size_t)opt.updates + 1, sizeof(*t_sent));
	t_last = calloc((size_t)opt.updates + 1, sizeof(*t_last));
	lat = calloc((size_t)opt.updates + 1, sizeof(*lat));
	if (!clients || !t_sent || !t_last || !lat)
		die("out of memory");
	for (int i = 0; i < opt.receivers; i++) {
		snprintf(clients[i].user, sizeof(clients[i].user), "%s%d", opt.prefix, i);
		clients[i].stalled = i < opt.stall;
	}
	pub = &clients[opt.receivers];
	pub->publisher = true;
	snprintf(pub->user, sizeof(pub->user), "%s", opt.publisher);

	/* Logins, at most --concurrency at a time; the publisher last. */
	t0 = now_ns();
	while (logged_in + failures < opt.receivers) {
		uint64_t deadline = t0 + (uint64_t)opt.timeout * 1000000000ull;

		connecting = started - logged_in - errors;
		while (started < opt.receivers && connecting < opt.concurrency) {
			fc_connect(&clients[started++]);
			connecting++;
		}
		fc_poll(50);
		failures = errors;
		if (now_ns() > deadline)
			die("timeout: %d of %d receivers logged in", logged_in, opt.receivers);
	}
	if (errors)
		die("%d receivers could not log in", errors);
	fc_connect(pub);
	while (pub->state != FC_READY) {
		if (pub->state == FC_CLOSED)
			die("the publisher could not log in");
		fc_poll(50);
	}
	fprintf(stderr, "fanout_client: %d receivers and the publisher logged in in %.1f s\n",
		opt.receivers, (double)(now_ns() - t0) / 1e9);

	/* Update 0: everyone has it, then the digests start. */
	fc_send_update(pub, 0);
	fc_wait_for(0, "the publisher's first presence");
	for (int i = 0; i < 20; i++)
		fc_poll(10);	/* stragglers of the login (presence reflections) */
	for (int i = 0; i < opt.receivers; i++) {
		struct fc_client *c = &clients[i];

		EVP_DigestInit_ex(c->md, EVP_sha256(), NULL);
		c->marked = true;
		if (c->stalled) {
			c->paused = true;
			fc_arm(c, c->want_write);
		}
	}
	if (opt.wait_stdin) {
		char line[16];

		printf("ready\n");
		fflush(stdout);
		if (!fgets(line, sizeof(line), stdin))
			die("stdin closed");
	}

	cpu0 = server_cpu_ns();
	t_run0 = now_ns();
	for (int u = 1; u <= opt.updates; u++) {
		t_sent[u] = now_ns();
		fc_send_update(pub, u);
		if (u == opt.drop_after) {
			for (int i = opt.stall; i < opt.stall + opt.drop; i++) {
				clients[i].dropped = true;
				fc_close(&clients[i], true);
			}
		}
		fc_wait_for(u, "an update");
	}
	t_run1 = now_ns();
	/* What the server still spends on it (queued output) ends within a moment. */
	for (int i = 0; i < 5; i++)
		fc_poll(20);
	cpu1 = server_cpu_ns();

	/* The stalled receivers read again and must get everything, in order. */
	for (int i = 0; i < opt.stall; i++) {
		clients[i].paused = false;
		fc_arm(&clients[i], clients[i].want_write);
	}
	{
		uint64_t deadline = now_ns() + (uint64_t)opt.timeout * 1000000000ull;
		bool done = false;

		while (!done && now_ns() < deadline) {
			done = true;
			for (int i = 0; i < opt.stall; i++)
				if (clients[i].state != FC_CLOSED && clients[i].last < opt.updates)
					done = false;
			if (!done)
				fc_poll(100);
		}
	}

	if (opt.digests && !(dg = fopen(opt.digests, "w")))
		die("cannot write %s: %s", opt.digests, strerror(errno));
	for (int i = 0; i < opt.receivers; i++) {
		struct fc_client *c = &clients[i];
		unsigned char md[32];
		unsigned mdlen = 0;
		char hex[65];

		if (c->dropped)
			continue;
		EVP_DigestFinal_ex(c->md, md, &mdlen);
		for (unsigned k = 0; k < mdlen; k++)
			snprintf(hex + 2 * k, 3, "%02x", md[k]);
		if (dg)
			fprintf(dg, "%s %s %" PRIu64 " %d %s\n", c->user, hex, c->bytes, c->last,
				c->in_order ? "in-order" : "OUT-OF-ORDER");
		if (c->last != opt.updates || !c->in_order || c->state == FC_CLOSED) {
			fprintf(stderr, "fanout_client: %s ended at update %d%s%s\n", c->user, c->last,
				c->in_order ? "" : ", out of order",
				c->state == FC_CLOSED ? ", closed" : "");
			errors++;
		} else if (c->stalled) {
			stalled_ok++;
		}
	}
	if (dg)
		fclose(dg);

	for (int u = 1; u <= opt.updates; u++)
		lat[u - 1] = t_last[u] > t_sent[u] ? t_last[u] - t_sent[u] : 0;
	qsort(lat, (size_t)opt.updates, sizeof(*lat), cmp_u64);
	{
		uint64_t sum = 0;

		for (int u = 0; u < opt.updates; u++)
			sum += lat[u];
		printf("{\"receivers\": %d, \"tls\": %s, \"updates\": %d, \"status_bytes\": %d, "
		       "\"login_s\": %.2f, \"run_s\": %.3f, \"last_recipient_us\": {\"mean\": %.1f, "
		       "\"p50\": %.1f, \"min\": %.1f, \"max\": %.1f}, \"server_cpu_ns\": %" PRIu64 ", "
		       "\"server_cpu_ns_per_delivery\": %.1f, \"stalled_ok\": %d, \"dropped\": %d, "
		       "\"errors\": %d}\n",
		       opt.receivers, opt.tls ? "true" : "false", opt.updates, opt.status_bytes,
		       (double)(t_run0 - t0) / 1e9, (double)(t_run1 - t_run0) / 1e9,
		       (double)sum / opt.updates / 1e3, (double)lat[opt.updates / 2] / 1e3,
		       (double)lat[0] / 1e3, (double)lat[opt.updates - 1] / 1e3, cpu1 - cpu0,
		       opt.server_pid ? (double)(cpu1 - cpu0) /
				       ((double)opt.updates * (opt.receivers - opt.drop)) : 0.0,
		       stalled_ok, opt.drop, errors);
	}
	/* Everything is freed so that a SANITIZE=1 build's leak check passes at exit. */
	for (int i = 0; i < nclients; i++) {
		fc_close(&clients[i], false);
		free(clients[i].login);
		free(clients[i].out);
		EVP_MD_CTX_free(clients[i].md);
	}
	free(lat);
	free(t_last);
	free(t_sent);
	free(clients);
	SSL_CTX_free(ssl_ctx);
	return errors ? 1 : 0;
}
