/* SPDX-License-Identifier: MIT */
/*
 * loadgen: the load generator of `make bench` (driven by scripts/bench.py).
 *
 *   loadgen run  --mode closed|open|presence|idle --host H --port P [...]
 *   loadgen sink --port P [-t N] [--discard]
 *
 * `run` logs clients into an XMPP server over plain TCP (stream header,
 * SASL PLAIN, bind, initial presence), then drives one workload and prints
 * one JSON line with what it measured:
 *
 *   closed    clients in pairs (2k, 2k+1); each starts --window messages
 *             to its partner and answers every message it receives with a
 *             new one, so each pair keeps 2 * window messages in flight.
 *   open      every client sends to its partner at a fixed total --rate;
 *             the body carries the send time, the receiver records latency.
 *             Between sends the thread sleeps until --spin-us before the
 *             next one is due, then polls: timer re-arms and wake-ups cost
 *             more than the sends themselves on a virtual machine (VM
 *             exits), and the receiver's wake-up delay is not the server's
 *             latency. Its CPU share is then no measure of its load: send
 *             lateness is (late_*_us in the result).
 *   presence  client 0 is the publisher, clients 1..R its contacts; the
 *             publisher sends --updates presence updates one after the
 *             other, each when every receiver got the previous one.
 *   idle      log in and stay idle (the driver measures the server's RSS).
 *
 * `sink` is a trivial server for the self-test: it answers the handshake
 * minimally and echoes every <message/> back on the same stream (or only
 * counts it with --discard), so the closed loop runs against it unchanged
 * and shows what the load generator itself can drive. A <presence/> that
 * carries a <status/> is copied as is to every other stream of its thread,
 * one send each: the presence workload against the sink measures what
 * bare per-socket delivery costs on the machine (the fan-out floor).
 *
 * Design, so that the generator is never the bottleneck: one epoll thread
 * per -t, every connection owned by one thread, non-blocking sockets,
 * level-triggered reads into a per-thread buffer, the partial item at the
 * end of a read kept in a per-connection carry buffer, all replies to one
 * read sent with one write. Nothing is allocated per message: carry and
 * output buffers are allocated at most once per connection. Incoming data
 * is not parsed as XML: a top-level item ends at "/>" of its start tag or
 * at "</name>", which holds for the stanzas XMPP servers send (nobody
 * nests a <message/> in a <message/> here).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LG_THREADS_MAX		64
#define LG_RBUF_SIZE		(64 * 1024)	/* one read */
#define LG_CARRY_MAX		(16 * 1024)	/* largest partial item kept between reads */
#define LG_WBUF_SIZE		(256 * 1024)	/* replies composed for one read */
#define LG_WBUF_SLACK		1024		/* room for one more message */
#define LG_OUT_MAX		(512 * 1024)	/* queued output per connection */
#define LG_PREFIX_MAX		160		/* "<message to='...' type='chat'><body>" */
#define LG_NAME_MAX		64		/* element names we look at */
#define LG_USER_MAX		64
#define LG_PAD_MAX		4096		/* --body-pad */
#define LG_EVENTS		256		/* epoll events per wait */
#define LG_HIST_SUB_BITS	7		/* 128 sub-buckets: about 1.5% error */
#define LG_HIST_BUCKETS		(64 << LG_HIST_SUB_BITS)
#define LG_SETTLE_QUIET_MS	300		/* no input for this long: settled */
#define LG_OPEN_BATCH_MAX	4096		/* messages sent per timer tick at most */
#define LG_SYNC_ID		"lgsync"
/*
 * Clients per loopback source address (--source-spread). One source address
 * reaches one server port through at most ip_local_port_range ports (28,232
 * by default); spreading clients over 127.0.0.2, 127.0.0.3, ... lifts that
 * limit, so a million connections fit.
 */
#define LG_SPREAD_DEFAULT	16384

/* epoll tags: the top byte of data.u64, the low bits an index. */
#define LG_TAG_CONN		(1ULL << 56)
#define LG_TAG_EVENT		(2ULL << 56)
#define LG_TAG_LISTEN		(4ULL << 56)
#define LG_TAG_MASK		(0xffULL << 56)

enum lg_mode { LG_CLOSED, LG_OPEN, LG_PRESENCE, LG_IDLE };

enum lg_phase {
	LG_PH_LOGIN = 0,	/* connecting and negotiating */
	LG_PH_RUN,		/* workload running */
	LG_PH_STOP,		/* no new sends; counters frozen */
	LG_PH_QUIT,		/* close every stream */
};

enum lg_state {
	ST_IDLE = 0,		/* not connected yet */
	ST_CONNECTING,
	ST_HEADER,		/* header sent, waiting for features */
	ST_AUTH,		/* <auth/> sent */
	ST_HEADER2,		/* restarted after success */
	ST_BIND,		/* bind iq sent */
	ST_SYNC,		/* presence + ping sent, waiting for the ping result */
	ST_READY,
	ST_CLOSED,
	ST_SINK,		/* sink side of a connection */
};

enum lg_role { ROLE_PAIR = 0, ROLE_PUB, ROLE_RECV };

enum lg_kind {
	K_NONE = 0,	/* whitespace */
	K_DECL,		/* <?xml ...?> */
	K_STREAM_OPEN,
	K_STREAM_CLOSE,
	K_FEATURES,
	K_SUCCESS,
	K_FAILURE,
	K_STREAM_ERROR,
	K_AUTH,
	K_MESSAGE,
	K_PRESENCE,
	K_IQ,
	K_OTHER,
};

/* One complete top-level item of the input. */
struct lg_item {
	enum lg_kind kind;
	const char *p;		/* its '<' */
	size_t len;		/* the whole item */
	size_t tag_len;		/* its start tag, '>' included */
};

struct lg_conn {
	int fd;
	uint8_t state;
	uint8_t role;
	bool out_armed;		/* EPOLLOUT requested */
	bool authed;		/* sink: SASL done */
	bool counted;		/* counted as ready or failed */
	uint32_t idx;		/* client number in this run */
	uint32_t live_idx;	/* sink: position in the thread's live list */
	uint32_t carry_len;
	uint32_t out_off, out_len;
	char *carry;		/* LG_CARRY_MAX, from the first partial item */
	char *out;		/* LG_OUT_MAX, from the first short write */
	uint16_t prefix_len;
	char prefix[LG_PREFIX_MAX];
};

/* Latency histogram: log-linear buckets of nanoseconds. */
struct lg_hist {
	uint64_t n;
	uint64_t max;
	uint64_t b[LG_HIST_BUCKETS];
};

/*
 * Counters of one thread. Written by their thread only (plain stores via
 * LG_ADD), read by the main thread at window edges.
 */
struct lg_counters {
	uint64_t tx_msgs;
	uint64_t rx_msgs;
	uint64_t rx_errors;	/* type='error' stanzas */
	uint64_t rx_presence;
	uint64_t rx_other;
	uint64_t rx_bytes;
	uint64_t tx_bytes;
	uint64_t drops;		/* messages not sent: output queue full */
	uint64_t disconnects;
	uint64_t late_max_ns;	/* open loop: worst send lateness */
	uint64_t late_sum_ns;
	uint64_t late_n;
	uint64_t last_rx_ns;	/* time of the last input */
};

#define LG_ADD(field, v) __atomic_store_n(&(field), (field) + (v), __ATOMIC_RELAXED)
#define LG_SET(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)
#define LG_GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

struct lg_thread {
	int id;
	pthread_t tid;
	int epfd;
	int evfd;		/* phase changes and wake-ups */
	int lfd;		/* sink listener */
	struct lg_conn *conns;
	uint32_t nconns;
	uint32_t *live;		/* sink: fds of open streams, for fan-out */
	uint32_t nlive;
	uint32_t next_connect;	/* next local conn to connect */
	uint32_t inflight;	/* logins in progress */
	int seen_phase;
	char *rbuf;		/* LG_CARRY_MAX + LG_RBUF_SIZE */
	char *wbuf;		/* LG_WBUF_SIZE */
	size_t wlen;
	uint32_t wmsgs;		/* messages in wbuf */
	/* open loop */
	uint64_t open_t0;
	uint64_t open_sent;
	uint32_t open_rr;
	double open_rate;	/* per thread, messages/s */
	bool open_on;		/* the open loop runs */
	struct lg_counters c;
	struct lg_hist hist;
};

/* Options. */
static struct {
	enum lg_mode mode;
	const char *host;
	int port;
	const char *domain;
	const char *prefix;	/* usernames: prefix + number */
	unsigned first;		/* number of the first client */
	const char *password;
	const char *resource;
	const char *publisher;	/* presence: the publisher's username */
	const char *pubsub_node;	/* presence mode over pubsub: publish here instead */
	const char *pubsub_service;	/* ... at this service (default pubsub.DOMAIN) */
	unsigned clients;
	unsigned threads;
	unsigned window;
	double rate;
	double duration;
	double warmup;
	unsigned receivers;
	unsigned updates;
	double update_timeout;
	double login_timeout;
	unsigned login_concurrency;	/* per thread */
	unsigned body_pad;
	unsigned spin_us;	/* open loop: poll this long before a send */
	bool initial_presence;
	bool sync;
	bool discard;		/* sink: count, do not echo */
	pid_t server_pid;
	const char *label;
	unsigned source_spread;	/* clients per source address; 0: the kernel picks */
} opt = {
	.mode = LG_CLOSED,
	.host = "127.0.0.1",
	.port = 5222,
	.domain = "localhost",
	.prefix = "u",
	.password = "bench",
	.resource = "bench",
	.publisher = "pub",
	.clients = 1000,
	.threads = 1,
	.window = 4,
	.rate = 1000,
	.duration = 10,
	.warmup = 1,
	.receivers = 1000,
	.updates = 200,
	.update_timeout = 2,
	.login_timeout = 120,
	.login_concurrency = 256,
	.spin_us = 50,
	.initial_presence = true,
	.source_spread = LG_SPREAD_DEFAULT,
};

static struct lg_thread lg_threads[LG_THREADS_MAX];
static struct sockaddr_in lg_addr;
static bool lg_spread;		/* the target is loopback and --source-spread > 0 */
static _Atomic int lg_phase;
static _Atomic int lg_recording;	/* latencies count only inside the window */
static _Atomic unsigned lg_ready;
static _Atomic unsigned lg_failed;
static _Atomic bool lg_pub_allowed;	/* presence: receivers are in */
static pthread_mutex_t lg_fail_lock = PTHREAD_MUTEX_INITIALIZER;
static char lg_fail_msg[512];
static char lg_pad[LG_PAD_MAX + 1];

/* Presence fan-out bookkeeping, indexed by update number 1..K. */
static struct {
	_Atomic uint32_t *count;	/* deliveries so far */
	_Atomic uint64_t *t_last;	/* when the last receiver got it */
	uint64_t *t_send;		/* thread 0 */
	uint32_t sent;			/* updates sent (thread 0) */
	uint32_t complete;		/* updates every receiver got */
	uint32_t timed_out;		/* updates that missed receivers */
	_Atomic bool done;		/* thread 0 finished the sequence */
	bool none;			/* the first update reached nobody */
} lg_pres;

static volatile sig_atomic_t lg_sink_stop;

/* ---- Small helpers ---- */

static uint64_t lg_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void lg_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void lg_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void lg_die(const char *fmt, ...)
{
	va_list ap;

	fputs("loadgen: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* Remembers the first login failure (the one worth reporting). */
static void lg_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void lg_fail(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&lg_fail_lock);
	if (!lg_fail_msg[0]) {
		va_start(ap, fmt);
		vsnprintf(lg_fail_msg, sizeof(lg_fail_msg), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&lg_fail_lock);
}

/* Decimal digits of v into p; returns the length. */
static size_t lg_utoa(char *p, uint64_t v)
{
	char tmp[24];
	size_t n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (size_t i = 0; i < n; i++)
		p[i] = tmp[n - 1 - i];
	return n;
}

/* Reads a decimal number at p (bounded by end); 0 when there is none. */
static uint64_t lg_atou(const char *p, const char *end, const char **stop)
{
	uint64_t v = 0;

	while (p < end && *p >= '0' && *p <= '9')
		v = v * 10 + (uint64_t)(*p++ - '0');
	if (stop)
		*stop = p;
	return v;
}

static void lg_base64(const unsigned char *in, size_t n, char *out)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0;

	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;

		if (i + 1 < n)
			v |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < n)
			v |= in[i + 2];
		out[o++] = tab[(v >> 18) & 63];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < n ? tab[v & 63] : '=';
	}
	out[o] = '\0';
}

/* ---- Histogram ---- */

/*
 * Values below 2^SUB are exact; above, each power of two is split into
 * 2^(SUB-1) buckets: index = 2^(SUB-1) * s + (v >> s), s = msb - SUB + 1.
 */
static unsigned lg_hist_index(uint64_t v)
{
	unsigned msb, s;

	if (v < (1ULL << LG_HIST_SUB_BITS))
		return (unsigned)v;
	msb = 63 - (unsigned)__builtin_clzll(v);
	s = msb - LG_HIST_SUB_BITS + 1;
	return (1U << (LG_HIST_SUB_BITS - 1)) * s + (unsigned)(v >> s);
}

/* The middle of bucket i, in ns. */
static double lg_hist_value(unsigned i)
{
	unsigned half = 1U << (LG_HIST_SUB_BITS - 1), s;

	if (i < (1U << LG_HIST_SUB_BITS))
		return i;
	s = i / half - 1;
	return ((double)(i - half * s) + 0.5) * (double)(1ULL << s);
}

static void lg_hist_add(struct lg_hist *h, uint64_t v)
{
	unsigned i = lg_hist_index(v);

	if (i >= LG_HIST_BUCKETS)
		i = LG_HIST_BUCKETS - 1;
	h->b[i]++;
	h->n++;
	if (v > h->max)
		h->max = v;
}

static void lg_hist_merge(struct lg_hist *to, const struct lg_hist *from)
{
	for (unsigned i = 0; i < LG_HIST_BUCKETS; i++)
		to->b[i] += from->b[i];
	to->n += from->n;
	if (from->max > to->max)
		to->max = from->max;
}

/* Quantile q (0..1) in microseconds, or -1 when empty. */
static double lg_hist_quantile_us(const struct lg_hist *h, double q)
{
	uint64_t want, acc = 0;

	if (!h->n)
		return -1;
	want = (uint64_t)(q * (double)h->n + 0.999999);
	if (want < 1)
		want = 1;
	for (unsigned i = 0; i < LG_HIST_BUCKETS; i++) {
		acc += h->b[i];
		if (acc >= want) {
			double v = lg_hist_value(i);

			return (v > (double)h->max ? (double)h->max : v) / 1000.0;
		}
	}
	return (double)h->max / 1000.0;
}

/* ---- The top-level scanner ---- */

static enum lg_kind lg_kind_of(const char *name, size_t n)
{
#define IS(s) (n == sizeof(s) - 1 && memcmp(name, s, n) == 0)
	if (IS("message"))
		return K_MESSAGE;
	if (IS("presence"))
		return K_PRESENCE;
	if (IS("iq"))
		return K_IQ;
	if (IS("stream:features"))
		return K_FEATURES;
	if (IS("success"))
		return K_SUCCESS;
	if (IS("failure"))
		return K_FAILURE;
	if (IS("stream:error"))
		return K_STREAM_ERROR;
	if (IS("auth"))
		return K_AUTH;
#undef IS
	return K_OTHER;
}

/*
 * Finds the next complete top-level item in p[0..n). Returns the bytes it
 * spans (leading whitespace included), 0 when more input is needed, or -1
 * when the input cannot be XMPP (an element name longer than we handle).
 */
static ssize_t lg_scan(const char *p, size_t n, struct lg_item *it)
{
	const char *s = memchr(p, '<', n), *gt, *e, *name;
	char close[LG_NAME_MAX + 3];
	size_t rem, nlen;

	if (!s) {
		it->kind = K_NONE;	/* text between stanzas: whitespace pings */
		return (ssize_t)n;
	}
	if (s > p) {
		it->kind = K_NONE;
		return s - p;
	}
	rem = n;
	if (rem < 2)
		return 0;
	it->p = s;
	if (s[1] == '?') {
		e = memmem(s, rem, "?>", 2);
		if (!e)
			return 0;
		it->kind = K_DECL;
		it->len = it->tag_len = (size_t)(e + 2 - s);
		return (ssize_t)it->len;
	}
	gt = memchr(s, '>', rem);
	if (!gt)
		return 0;
	it->tag_len = (size_t)(gt + 1 - s);
	if (s[1] == '/') {
		it->kind = K_STREAM_CLOSE;
		it->len = it->tag_len;
		return (ssize_t)it->len;
	}
	name = s + 1;
	for (nlen = 0; name + nlen < gt; nlen++) {
		char ch = name[nlen];

		if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '/')
			break;
	}
	if (nlen == 0 || nlen > LG_NAME_MAX)
		return -1;
	if ((nlen == 13 && memcmp(name, "stream:stream", 13) == 0) ||
	    (nlen == 6 && memcmp(name, "stream", 6) == 0)) {
		it->kind = K_STREAM_OPEN;
		it->len = it->tag_len;
		return (ssize_t)it->len;
	}
	it->kind = lg_kind_of(name, nlen);
	if (gt[-1] == '/') {
		it->len = it->tag_len;
		return (ssize_t)it->len;
	}
	close[0] = '<';
	close[1] = '/';
	memcpy(close + 2, name, nlen);
	close[nlen + 2] = '>';
	e = memmem(gt + 1, rem - it->tag_len, close, nlen + 3);
	if (!e)
		return 0;
	it->len = (size_t)(e + nlen + 3 - s);
	return (ssize_t)it->len;
}

/* The value of attribute `name` in the item's start tag, or NULL. */
static const char *lg_attr(const struct lg_item *it, const char *name, size_t *vlen)
{
	const char *tag = it->p, *end = it->p + it->tag_len, *a = tag;
	size_t nlen = strlen(name);

	while ((a = memmem(a, (size_t)(end - a), name, nlen)) != NULL) {
		const char *v = a + nlen, *q;

		if ((a[-1] == ' ' || a[-1] == '\t' || a[-1] == '\n' || a[-1] == '\r') &&
		    v + 2 < end && v[0] == '=' && (v[1] == '\'' || v[1] == '"')) {
			q = memchr(v + 2, v[1], (size_t)(end - v - 2));
			if (!q)
				return NULL;
			*vlen = (size_t)(q - v - 2);
			return v + 2;
		}
		a += nlen;
	}
	return NULL;
}

static bool lg_attr_is(const struct lg_item *it, const char *name, const char *value)
{
	size_t n;
	const char *v = lg_attr(it, name, &n);

	return v && n == strlen(value) && memcmp(v, value, n) == 0;
}

/* The text right after `open` inside the item (e.g. "<body>"), or NULL. */
static const char *lg_after(const struct lg_item *it, const char *open, size_t open_len)
{
	const char *body = it->p + it->tag_len;
	const char *e = memmem(body, it->len - it->tag_len, open, open_len);

	return e ? e + open_len : NULL;
}

/* ---- Output ---- */

static void lg_epoll_mod(struct lg_thread *t, struct lg_conn *c, bool out)
{
	struct epoll_event ev = {
		.events = EPOLLIN | EPOLLRDHUP | (out ? EPOLLOUT : 0),
		.data.u64 = LG_TAG_CONN | (uint64_t)(c - t->conns),
	};

	if (c->out_armed != out && epoll_ctl(t->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
		c->out_armed = out;
}

static void lg_close(struct lg_thread *t, struct lg_conn *c)
{
	if (c->state == ST_SINK && t->live && c->live_idx < t->nlive) {
		/* Swap-remove; fan-out loops run backwards, so this is safe there. */
		uint32_t last = t->live[--t->nlive];

		t->live[c->live_idx] = last;
		t->conns[last].live_idx = c->live_idx;
	}
	if (c->fd >= 0) {
		epoll_ctl(t->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	c->fd = -1;
	c->state = ST_CLOSED;
	c->out_len = c->out_off = 0;
	c->carry_len = 0;
}

/*
 * Writes data on c, or queues what the socket does not take. A chunk that
 * would overflow the queue is dropped whole (never half a stanza): returns
 * false then. Only the first write of a chunk can be partial, and a chunk
 * is at most LG_WBUF_SIZE, so the rest always fits an empty queue.
 */
static bool lg_write(struct lg_thread *t, struct lg_conn *c, const char *d, size_t n)
{
	if (c->fd < 0)
		return false;
	if (c->out_len == c->out_off) {
		ssize_t w = send(c->fd, d, n, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w == (ssize_t)n) {
			LG_ADD(t->c.tx_bytes, n);
			return true;
		}
		if (w < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				if (c->state == ST_READY)
					LG_ADD(t->c.disconnects, 1);
				lg_close(t, c);
				return false;
			}
			w = 0;
		}
		LG_ADD(t->c.tx_bytes, w);
		d += w;
		n -= (size_t)w;
		c->out_len = c->out_off = 0;
	} else if (c->out_len + n > LG_OUT_MAX) {
		if (c->out_off) {
			memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
			c->out_len -= c->out_off;
			c->out_off = 0;
		}
		if (c->out_len + n > LG_OUT_MAX)
			return false;
	}
	if (!c->out) {
		c->out = malloc(LG_OUT_MAX);
		if (!c->out)
			lg_die("out of memory");
	}
	memcpy(c->out + c->out_len, d, n);
	c->out_len += (uint32_t)n;
	lg_epoll_mod(t, c, true);
	return true;
}

static void lg_write_str(struct lg_thread *t, struct lg_conn *c, const char *s)
{
	lg_write(t, c, s, strlen(s));
}

/* EPOLLOUT: sends queued output. */
static void lg_flush(struct lg_thread *t, struct lg_conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (c->state == ST_READY)
				LG_ADD(t->c.disconnects, 1);
			lg_close(t, c);
			return;
		}
		LG_ADD(t->c.tx_bytes, w);
		c->out_off += (uint32_t)w;
	}
	c->out_off = c->out_len = 0;
	lg_epoll_mod(t, c, false);
}

/* Appends one message to c's partner to t->wbuf, stamped with `ts`. */
static void lg_compose_msg(struct lg_thread *t, const struct lg_conn *c, uint64_t ts)
{
	char *p = t->wbuf + t->wlen;

	memcpy(p, c->prefix, c->prefix_len);
	p += c->prefix_len;
	p += lg_utoa(p, ts);
	if (opt.body_pad) {
		*p++ = ' ';
		memcpy(p, lg_pad, opt.body_pad);
		p += opt.body_pad;
	}
	memcpy(p, "</body></message>", 17);
	p += 17;
	t->wlen = (size_t)(p - t->wbuf);
	t->wmsgs++;
}

/* Sends what was composed for c. */
static void lg_wbuf_send(struct lg_thread *t, struct lg_conn *c)
{
	if (!t->wlen)
		return;
	if (lg_write(t, c, t->wbuf, t->wlen))
		LG_ADD(t->c.tx_msgs, t->wmsgs);
	else
		LG_ADD(t->c.drops, t->wmsgs);
	t->wlen = 0;
	t->wmsgs = 0;
}

static bool lg_wbuf_full(const struct lg_thread *t)
{
	return t->wlen + LG_PREFIX_MAX + opt.body_pad + LG_WBUF_SLACK > LG_WBUF_SIZE;
}

/* ---- Client side: login ---- */

static void lg_user_of(const struct lg_conn *c, char *out, size_t size)
{
	if (c->role == ROLE_PUB)
		snprintf(out, size, "%s", opt.publisher);
	else if (c->role == ROLE_RECV)
		snprintf(out, size, "%s%u", opt.prefix, opt.first + c->idx - 1);
	else
		snprintf(out, size, "%s%u", opt.prefix, opt.first + c->idx);
}

static void lg_send_header(struct lg_thread *t, struct lg_conn *c)
{
	char b[512];

	snprintf(b, sizeof(b),
		 "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
		 "xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0'>",
		 opt.domain);
	lg_write_str(t, c, b);
}

static void lg_login_failed(struct lg_thread *t, struct lg_conn *c, const char *why,
			    const struct lg_item *it)
{
	char user[LG_USER_MAX];

	lg_user_of(c, user, sizeof(user));
	if (it)
		lg_fail("%s: %s: %.*s", user, why, (int)(it->len > 300 ? 300 : it->len), it->p);
	else
		lg_fail("%s: %s", user, why);
	if (!c->counted) {
		c->counted = true;
		t->inflight--;
		atomic_fetch_add(&lg_failed, 1);
	}
	lg_close(t, c);
}

static void lg_connect(struct lg_thread *t, struct lg_conn *c)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP };
	int one = 1, fd;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		lg_login_failed(t, c, strerror(errno), NULL);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (lg_spread) {
		/*
		 * Client number g leaves from 127.0.0.(2 + g / spread) and on
		 * (numbers are global: --first differs per process, so several
		 * processes never share an address). With
		 * IP_BIND_ADDRESS_NO_PORT the port is chosen at connect(), per
		 * 4-tuple, not per address at bind().
		 */
		uint32_t g = opt.first + c->idx;
		struct sockaddr_in src = {
			.sin_family = AF_INET,
			.sin_addr.s_addr = htonl(0x7f000002u + g / opt.source_spread),
		};

		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
			c->fd = fd;
			lg_login_failed(t, c, strerror(errno), NULL);
			return;
		}
	}
	c->fd = fd;
	c->state = ST_CONNECTING;
	c->out_armed = true;
	ev.data.u64 = LG_TAG_CONN | (uint64_t)(c - t->conns);
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		lg_login_failed(t, c, strerror(errno), NULL);
		return;
	}
	if (connect(fd, (struct sockaddr *)&lg_addr, sizeof(lg_addr)) < 0 && errno != EINPROGRESS)
		lg_login_failed(t, c, strerror(errno), NULL);
}

/*
 * Starts logins up to the concurrency bound. The publisher (always conn 0
 * of thread 0) is skipped here: it logs in after all its contacts, once
 * the main thread allows it (see lg_cmd_run).
 */
static void lg_fill_connects(struct lg_thread *t)
{
	struct lg_conn *pub = t->nconns ? &t->conns[0] : NULL;

	if (pub && pub->role == ROLE_PUB && pub->state == ST_IDLE &&
	    atomic_load(&lg_pub_allowed)) {
		t->inflight++;
		lg_connect(t, pub);
	}
	while (t->next_connect < t->nconns && t->inflight < opt.login_concurrency) {
		struct lg_conn *c = &t->conns[t->next_connect++];

		if (c->role == ROLE_PUB)
			continue;
		t->inflight++;
		lg_connect(t, c);
	}
}

static void lg_became_ready(struct lg_thread *t, struct lg_conn *c)
{
	c->state = ST_READY;
	c->counted = true;
	t->inflight--;
	atomic_fetch_add(&lg_ready, 1);
}

/* Stanzas during negotiation. Returns false when c was closed. */
static bool lg_login_item(struct lg_thread *t, struct lg_conn *c, const struct lg_item *it)
{
	char b[1024], user[LG_USER_MAX], raw[LG_USER_MAX * 2 + 256], b64[sizeof(raw) * 4 / 3 + 8];
	size_t n;

	if (it->kind == K_STREAM_ERROR || it->kind == K_STREAM_CLOSE) {
		lg_login_failed(t, c, "stream closed during login", it);
		return false;
	}
	switch (c->state) {
	case ST_HEADER:
		if (it->kind != K_FEATURES)
			return true;
		if (!memmem(it->p, it->len, ">PLAIN<", 7)) {
			lg_login_failed(t, c, "PLAIN not offered (start the server with "
					"--require-tls no)", it);
			return false;
		}
		lg_user_of(c, user, sizeof(user));
		n = (size_t)snprintf(raw, sizeof(raw), "%c%s%c%s", 0, user, 0, opt.password);
		lg_base64((const unsigned char *)raw, n, b64);
		snprintf(b, sizeof(b), "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
			 "mechanism='PLAIN'>%s</auth>", b64);
		explicit_bzero(raw, sizeof(raw));
		lg_write_str(t, c, b);
		c->state = ST_AUTH;
		return true;
	case ST_AUTH:
		if (it->kind == K_SUCCESS) {
			lg_send_header(t, c);
			c->state = ST_HEADER2;
		} else if (it->kind == K_FAILURE) {
			lg_login_failed(t, c, "authentication failed", it);
			return false;
		}
		return true;
	case ST_HEADER2:
		if (it->kind != K_FEATURES)
			return true;
		snprintf(b, sizeof(b), "<iq type='set' id='bind'><bind "
			 "xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>%s</resource>"
			 "</bind></iq>", opt.resource);
		lg_write_str(t, c, b);
		c->state = ST_BIND;
		return true;
	case ST_BIND:
		if (it->kind != K_IQ)
			return true;
		if (!lg_attr_is(it, "type", "result")) {
			lg_login_failed(t, c, "bind failed", it);
			return false;
		}
		/*
		 * The ping's answer comes after the server handled the
		 * presence: once every client has it, every presence is in.
		 */
		snprintf(b, sizeof(b), "%s<iq type='get' id='" LG_SYNC_ID "' to='%s'>"
			 "<ping xmlns='urn:xmpp:ping'/></iq>",
			 opt.initial_presence ? "<presence/>" : "", opt.domain);
		lg_write_str(t, c, b);
		c->state = ST_SYNC;
		return true;
	case ST_SYNC:
		if (it->kind == K_IQ && lg_attr_is(it, "id", LG_SYNC_ID))
			lg_became_ready(t, c);
		return true;
	default:
		return true;
	}
}

/* ---- Client side: the workloads ---- */

/* Answers a server's iq get/set (XEP-0199 pings) with an empty result. */
static void lg_answer_iq(struct lg_thread *t, struct lg_conn *c, const struct lg_item *it)
{
	const char *id, *from;
	size_t idn, fromn;
	char b[1024];

	if (!lg_attr_is(it, "type", "get") && !lg_attr_is(it, "type", "set"))
		return;
	id = lg_attr(it, "id", &idn);
	from = lg_attr(it, "from", &fromn);
	if (!id || idn > 256 || (from && fromn > 512))
		return;
	if (from)
		snprintf(b, sizeof(b), "<iq type='result' id='%.*s' to='%.*s'/>", (int)idn, id,
			 (int)fromn, from);
	else
		snprintf(b, sizeof(b), "<iq type='result' id='%.*s'/>", (int)idn, id);
	lg_write_str(t, c, b);
}

static bool lg_is_error(const struct lg_item *it)
{
	return lg_attr_is(it, "type", "error");
}

/* A presence update at a receiver: "<status>K TS</status>". */
static void lg_presence_rx(struct lg_thread *t, struct lg_conn *c, const struct lg_item *it,
			   uint64_t now)
{
	const char *s = lg_after(it, "<status>", 8), *end = it->p + it->len, *stop;
	uint64_t k, ts;

	if (c->role != ROLE_RECV || !s) {
		LG_ADD(t->c.rx_other, 1);
		return;
	}
	k = lg_atou(s, end, &stop);
	if (k < 1 || k > opt.updates || stop >= end || *stop != ' ') {
		LG_ADD(t->c.rx_other, 1);
		return;
	}
	ts = lg_atou(stop + 1, end, NULL);
	LG_ADD(t->c.rx_presence, 1);
	if (ts && ts <= now && atomic_load_explicit(&lg_recording, memory_order_relaxed))
		lg_hist_add(&t->hist, now - ts);
	if (atomic_fetch_add(&lg_pres.count[k], 1) + 1 == opt.receivers) {
		atomic_store(&lg_pres.t_last[k], now);
		if (t->id != 0)
			eventfd_write(lg_threads[0].evfd, 1);
	}
}

static void lg_ready_item(struct lg_thread *t, struct lg_conn *c, const struct lg_item *it,
			  uint64_t now)
{
	bool running = atomic_load_explicit(&lg_phase, memory_order_relaxed) == LG_PH_RUN;

	switch (it->kind) {
	case K_MESSAGE: {
		const char *b, *end;
		uint64_t ts;

		if (lg_is_error(it)) {
			LG_ADD(t->c.rx_errors, 1);
			return;
		}
		/* Pubsub fan-out: notifications are the "presence" updates. */
		if (opt.mode == LG_PRESENCE && opt.pubsub_node) {
			lg_presence_rx(t, c, it, now);
			return;
		}
		LG_ADD(t->c.rx_msgs, 1);
		b = lg_after(it, "<body>", 6);
		end = it->p + it->len;
		ts = b ? lg_atou(b, end, NULL) : 0;
		if (ts && ts <= now && atomic_load_explicit(&lg_recording, memory_order_relaxed))
			lg_hist_add(&t->hist, now - ts);
		if (opt.mode == LG_CLOSED && running) {
			if (lg_wbuf_full(t))
				lg_wbuf_send(t, c);
			lg_compose_msg(t, c, now);
		}
		return;
	}
	case K_PRESENCE:
		if (lg_is_error(it))
			LG_ADD(t->c.rx_errors, 1);
		else if (opt.mode == LG_PRESENCE)
			lg_presence_rx(t, c, it, now);
		else
			LG_ADD(t->c.rx_other, 1);
		return;
	case K_IQ:
		if (lg_is_error(it))
			LG_ADD(t->c.rx_errors, 1);
		else
			LG_ADD(t->c.rx_other, 1);
		lg_answer_iq(t, c, it);
		return;
	case K_STREAM_ERROR:
	case K_STREAM_CLOSE:
		if (atomic_load(&lg_phase) < LG_PH_QUIT) {
			fprintf(stderr, "loadgen: client %u: stream closed by the server: %.*s\n",
				c->idx, (int)(it->len > 300 ? 300 : it->len), it->p);
			LG_ADD(t->c.disconnects, 1);
		}
		lg_close(t, c);
		return;
	default:
		return;
	}
}

/* ---- Sink side ---- */

static void lg_sink_item(struct lg_thread *t, struct lg_conn *c, const struct lg_item *it)
{
	static const char features_auth[] =
		"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
		"<mechanism>PLAIN</mechanism></mechanisms></stream:features>";
	static const char features_bind[] =
		"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
		"</stream:features>";
	char b[1024];
	const char *id;
	size_t idn;
	int n;

	switch (it->kind) {
	case K_STREAM_OPEN:
		n = snprintf(b, sizeof(b), "<?xml version='1.0'?><stream:stream "
			     "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
			     "id='sink' from='%s' version='1.0'>%s", opt.domain,
			     c->authed ? features_bind : features_auth);
		memcpy(t->wbuf + t->wlen, b, (size_t)n);
		t->wlen += (size_t)n;
		return;
	case K_AUTH:
		n = snprintf(b, sizeof(b), "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
		memcpy(t->wbuf + t->wlen, b, (size_t)n);
		t->wlen += (size_t)n;
		c->authed = true;
		return;
	case K_IQ:
		id = lg_attr(it, "id", &idn);
		if (!id || idn > 256)
			return;
		if (memmem(it->p, it->len, "<bind", 5))
			n = snprintf(b, sizeof(b), "<iq type='result' id='%.*s'><bind "
				     "xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>sink@%s/%s</jid>"
				     "</bind></iq>", (int)idn, id, opt.domain, opt.resource);
		else
			n = snprintf(b, sizeof(b), "<iq type='result' id='%.*s'/>", (int)idn, id);
		memcpy(t->wbuf + t->wlen, b, (size_t)n);
		t->wlen += (size_t)n;
		return;
	case K_MESSAGE:
		LG_ADD(t->c.rx_msgs, 1);
		if (!opt.discard) {
			memcpy(t->wbuf + t->wlen, it->p, it->len);
			t->wlen += it->len;
			t->wmsgs++;
		}
		return;
	case K_PRESENCE:
		LG_ADD(t->c.rx_presence, 1);
		if (!lg_after(it, "<status>", 8))
			return;
		for (uint32_t i = t->nlive; i-- > 0;) {
			struct lg_conn *to = &t->conns[t->live[i]];

			if (to != c && to->authed && lg_write(t, to, it->p, it->len))
				LG_ADD(t->c.tx_msgs, 1);
		}
		return;
	case K_STREAM_CLOSE:
		memcpy(t->wbuf + t->wlen, "</stream:stream>", 16);
		t->wlen += 16;
		return;
	default:
		return;
	}
}

/* ---- Input ---- */

/*
 * Reads once from c and handles every complete item; keeps the partial
 * one in c->carry. All replies to this read leave in one write.
 */
static void lg_read(struct lg_thread *t, struct lg_conn *c, bool sink)
{
	char *buf = t->rbuf;
	size_t have = c->carry_len, off = 0;
	uint64_t now;
	ssize_t r;

	if (have)
		memcpy(buf, c->carry, have);
	r = recv(c->fd, buf + have, LG_RBUF_SIZE, MSG_DONTWAIT);
	if (r <= 0) {
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		if (c->state == ST_READY && atomic_load(&lg_phase) < LG_PH_QUIT)
			LG_ADD(t->c.disconnects, 1);
		else if (!sink && c->state < ST_READY)
			lg_login_failed(t, c, r == 0 ? "connection closed by the server"
					: strerror(errno), NULL);
		lg_close(t, c);
		return;
	}
	now = lg_now_ns();
	LG_ADD(t->c.rx_bytes, r);
	t->c.last_rx_ns = now;
	have += (size_t)r;
	t->wlen = 0;
	t->wmsgs = 0;
	while (off < have && c->fd >= 0) {
		struct lg_item it;
		ssize_t n = lg_scan(buf + off, have - off, &it);

		if (n == 0)
			break;
		if (n < 0) {
			fprintf(stderr, "loadgen: client %u: input is not XMPP: %.40s\n", c->idx,
				buf + off);
			if (!sink && c->state < ST_READY)
				lg_login_failed(t, c, "bad input", NULL);
			lg_close(t, c);
			return;
		}
		off += (size_t)n;
		if (it.kind == K_NONE || it.kind == K_DECL)
			continue;
		if (sink) {
			if (t->wlen + it.len + 1024 > LG_WBUF_SIZE)
				lg_wbuf_send(t, c);
			lg_sink_item(t, c, &it);
			if (it.kind == K_STREAM_CLOSE) {
				lg_wbuf_send(t, c);
				lg_close(t, c);
				return;
			}
		} else if (c->state == ST_READY) {
			lg_ready_item(t, c, &it, now);
		} else if (!lg_login_item(t, c, &it)) {
			return;
		}
	}
	if (c->fd < 0)
		return;
	lg_wbuf_send(t, c);
	c->carry_len = (uint32_t)(have - off);
	if (c->carry_len) {
		if (c->carry_len > LG_CARRY_MAX) {
			fprintf(stderr, "loadgen: client %u: an item over %d bytes\n", c->idx,
				LG_CARRY_MAX);
			if (!sink && c->state < ST_READY)
				lg_login_failed(t, c, "item too large", NULL);
			lg_close(t, c);
			return;
		}
		if (!c->carry) {
			c->carry = malloc(LG_CARRY_MAX);
			if (!c->carry)
				lg_die("out of memory");
		}
		memmove(c->carry, buf + off, c->carry_len);
	}
}

static void lg_conn_event(struct lg_thread *t, struct lg_conn *c, uint32_t events, bool sink)
{
	if (c->fd < 0)
		return;
	if (c->state == ST_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);

		if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err) {
			lg_login_failed(t, c, strerror(err), NULL);
			return;
		}
		c->state = ST_HEADER;
		lg_epoll_mod(t, c, false);
		lg_send_header(t, c);
		return;
	}
	if (events & EPOLLOUT)
		lg_flush(t, c);
	if (c->fd >= 0 && (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)))
		lg_read(t, c, sink);
}

/* ---- Workload steps run by the threads ---- */

/* Closed loop start: `window` messages from every ready client. */
static void lg_closed_start(struct lg_thread *t)
{
	uint64_t now = lg_now_ns();

	for (uint32_t i = 0; i < t->nconns; i++) {
		struct lg_conn *c = &t->conns[i];

		if (c->state != ST_READY)
			continue;
		t->wlen = 0;
		t->wmsgs = 0;
		for (unsigned w = 0; w < opt.window; w++) {
			if (lg_wbuf_full(t))
				lg_wbuf_send(t, c);
			lg_compose_msg(t, c, now);
		}
		lg_wbuf_send(t, c);
	}
}

/* When message i of this thread is due (ns), rounded up so it is due then. */
static uint64_t lg_open_due_at(const struct lg_thread *t, uint64_t i)
{
	return t->open_t0 + (uint64_t)((double)i * 1e9 / t->open_rate) + 1;
}

/*
 * Open loop: sends every message due by now, one per client in turn.
 * Message i is due at t0 + i / rate. Returns ns until the next one.
 */
static uint64_t lg_open_tick(struct lg_thread *t)
{
	uint64_t now = lg_now_ns(), due, n, late, next;

	if (!t->open_on || !t->nconns)
		return UINT64_MAX;
	due = (uint64_t)((double)(now - t->open_t0) * t->open_rate / 1e9) + 1;
	n = due > t->open_sent ? due - t->open_sent : 0;
	if (n) {
		late = now - lg_open_due_at(t, t->open_sent);
		if ((int64_t)late > 0) {
			if (late > t->c.late_max_ns)
				LG_SET(t->c.late_max_ns, late);
			LG_ADD(t->c.late_sum_ns, late);
		}
		LG_ADD(t->c.late_n, 1);
	}
	if (n > LG_OPEN_BATCH_MAX) {
		/* Hopelessly behind: skip the backlog rather than burst it. */
		LG_ADD(t->c.drops, n - LG_OPEN_BATCH_MAX);
		t->open_sent += n - LG_OPEN_BATCH_MAX;
		n = LG_OPEN_BATCH_MAX;
	}
	for (uint64_t i = 0; i < n; i++) {
		struct lg_conn *c = NULL;

		for (uint32_t tries = 0; tries < t->nconns; tries++) {
			struct lg_conn *cand = &t->conns[t->open_rr];

			t->open_rr = (t->open_rr + 1) % t->nconns;
			if (cand->state == ST_READY) {
				c = cand;
				break;
			}
		}
		t->open_sent++;
		if (!c) {
			LG_ADD(t->c.drops, 1);
			continue;
		}
		t->wlen = 0;
		t->wmsgs = 0;
		lg_compose_msg(t, c, lg_now_ns());
		lg_wbuf_send(t, c);
	}
	next = lg_open_due_at(t, t->open_sent);
	now = lg_now_ns();
	return next > now ? next - now : 0;
}

/*
 * Presence: the publisher's next update. With --pubsub-node the update is
 * an item published to that node (XEP-0060) instead, carrying the same
 * <status>K TS</status>, and receivers count the notifications.
 */
static void lg_pres_send(struct lg_thread *t, struct lg_conn *pub)
{
	uint32_t k = ++lg_pres.sent;
	char b[1024], *p = b;
	uint64_t now = lg_now_ns();

	if (opt.pubsub_node)
		p += snprintf(p, 700, "<iq type='set' id='lgpub' to='%s'><pubsub xmlns='"
			      "http://jabber.org/protocol/pubsub'><publish node='%s'><item>"
			      "<u xmlns='urn:stanzad:bench'>", opt.pubsub_service, opt.pubsub_node);
	p += sprintf(p, "%s", opt.pubsub_node ? "<status>" : "<presence><status>");
	p += lg_utoa(p, k);
	*p++ = ' ';
	p += lg_utoa(p, now);
	if (opt.pubsub_node)
		p += sprintf(p, "</status></u></item></publish></pubsub></iq>");
	else
		p += sprintf(p, "</status></presence>");
	lg_pres.t_send[k] = now;
	if (!lg_write(t, pub, b, (size_t)(p - b)))
		LG_ADD(t->c.drops, 1);
	else
		LG_ADD(t->c.tx_msgs, 1);
}

/*
 * Thread 0 drives the publisher: the next update goes when the previous
 * one reached every receiver, or after update_timeout without that. An
 * update that reached nobody at all ends the run: the server does not
 * fan presence out, and waiting longer would not change that.
 */
static void lg_pres_step(struct lg_thread *t)
{
	struct lg_conn *pub = &t->conns[0];
	uint64_t now;
	uint32_t k = lg_pres.sent;

	if (atomic_load(&lg_pres.done) || atomic_load(&lg_phase) != LG_PH_RUN)
		return;
	if (pub->role != ROLE_PUB || pub->state != ST_READY) {
		atomic_store(&lg_pres.done, true);
		return;
	}
	if (k == 0) {
		lg_pres_send(t, pub);
		return;
	}
	now = lg_now_ns();
	if (atomic_load(&lg_pres.count[k]) >= opt.receivers) {
		lg_pres.complete++;
	} else if (now - lg_pres.t_send[k] > (uint64_t)(opt.update_timeout * 1e9)) {
		lg_pres.timed_out++;
		if (atomic_load(&lg_pres.count[k]) == 0 && k == 1) {
			lg_pres.none = true;
			atomic_store(&lg_pres.done, true);
			return;
		}
	} else {
		return;
	}
	if (k >= opt.updates) {
		atomic_store(&lg_pres.done, true);
		return;
	}
	lg_pres_send(t, pub);
}

/* A phase change announced by the main thread. */
static void lg_phase_changed(struct lg_thread *t, int ph)
{
	if (ph == LG_PH_RUN) {
		if (opt.mode == LG_CLOSED) {
			lg_closed_start(t);
		} else if (opt.mode == LG_OPEN) {
			t->open_t0 = lg_now_ns();
			t->open_sent = 0;
			t->open_on = true;
		}
	} else if (ph == LG_PH_STOP) {
		t->open_on = false;
	} else if (ph == LG_PH_QUIT) {
		for (uint32_t i = 0; i < t->nconns; i++) {
			struct lg_conn *c = &t->conns[i];

			if (c->fd >= 0 && c->state >= ST_HEADER) {
				lg_write_str(t, c, "</stream:stream>");
				if (c->fd >= 0)
					shutdown(c->fd, SHUT_WR);
			}
		}
	}
}

static void *lg_thread_main(void *arg)
{
	struct lg_thread *t = arg;
	struct epoll_event evs[LG_EVENTS];
	bool sink = t->lfd >= 0;

	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	for (;;) {
		int ph = atomic_load(&lg_phase), timeout = -1, n;
		struct timespec ts, *tsp = NULL;

		if (ph != t->seen_phase) {
			t->seen_phase = ph;
			lg_phase_changed(t, ph);
		}
		if (sink && lg_sink_stop)
			break;
		if (!sink) {
			lg_fill_connects(t);
			if (ph == LG_PH_QUIT) {
				bool open = false;

				for (uint32_t i = 0; i < t->nconns && !open; i++)
					open = t->conns[i].fd >= 0;
				if (!open)
					break;
			}
			if (opt.mode == LG_PRESENCE && t->id == 0) {
				lg_pres_step(t);
				timeout = 10;	/* update_timeout checks */
			}
		}
		if (sink)
			timeout = 200;	/* notice lg_sink_stop */
		if (timeout >= 0) {
			ts.tv_sec = timeout / 1000;
			ts.tv_nsec = (long)(timeout % 1000) * 1000000L;
			tsp = &ts;
		}
		if (t->open_on) {
			uint64_t wait = lg_open_tick(t), spin = (uint64_t)opt.spin_us * 1000;

			wait = wait > spin ? wait - spin : 0;
			ts.tv_sec = (time_t)(wait / 1000000000ULL);
			ts.tv_nsec = (long)(wait % 1000000000ULL);
			tsp = &ts;
		}
		n = epoll_pwait2(t->epfd, evs, LG_EVENTS, tsp, NULL);
		if (n < 0 && errno != EINTR)
			lg_die("epoll_wait: %s", strerror(errno));
		for (int i = 0; i < n; i++) {
			uint64_t tag = evs[i].data.u64 & LG_TAG_MASK;
			uint64_t idx = evs[i].data.u64 & ~LG_TAG_MASK;
			uint64_t v;

			if (tag == LG_TAG_CONN) {
				lg_conn_event(t, &t->conns[idx], evs[i].events, sink);
			} else if (tag == LG_TAG_EVENT) {
				eventfd_read(t->evfd, &v);
			} else if (tag == LG_TAG_LISTEN) {
				for (;;) {
					int fd = accept4(t->lfd, NULL, NULL,
							 SOCK_NONBLOCK | SOCK_CLOEXEC), one = 1;
					struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP };
					struct lg_conn *c;

					if (fd < 0)
						break;
					if ((uint32_t)fd >= t->nconns) {
						close(fd);
						continue;
					}
					setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					c = &t->conns[fd];
					c->fd = fd;
					c->idx = (uint32_t)fd;
					c->state = ST_SINK;
					c->live_idx = t->nlive;
					t->live[t->nlive++] = (uint32_t)fd;
					c->authed = false;
					c->out_armed = false;
					c->carry_len = 0;
					c->out_len = c->out_off = 0;
					ev.data.u64 = LG_TAG_CONN | (uint64_t)fd;
					if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
						lg_close(t, c);
				}
			}
		}
	}
	return NULL;
}

/* ---- Setup ---- */

static void lg_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void lg_thread_init(struct lg_thread *t, int id)
{
	struct epoll_event ev = { .events = EPOLLIN };

	t->id = id;
	t->lfd = -1;
	t->epfd = epoll_create1(EPOLL_CLOEXEC);
	t->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	t->rbuf = malloc(LG_CARRY_MAX + LG_RBUF_SIZE);
	t->wbuf = malloc(LG_WBUF_SIZE);
	if (t->epfd < 0 || t->evfd < 0 || !t->rbuf || !t->wbuf)
		lg_die("thread setup: %s", strerror(errno));
	ev.data.u64 = LG_TAG_EVENT;
	epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->evfd, &ev);
}

/* The message prefix of a client: its partner's full JID. */
static void lg_conn_prefix(struct lg_conn *c)
{
	unsigned partner = opt.first + (c->idx ^ 1U);
	int n = snprintf(c->prefix, sizeof(c->prefix),
			 "<message to='%s%u@%s/%s' type='chat'><body>", opt.prefix, partner,
			 opt.domain, opt.resource);

	if (n < 0 || (size_t)n >= sizeof(c->prefix))
		lg_die("names too long for a message prefix");
	c->prefix_len = (uint16_t)n;
}

static void lg_setup_clients(void)
{
	unsigned total = opt.mode == LG_PRESENCE ? opt.receivers + 1 : opt.clients;

	for (unsigned i = 0; i < opt.threads; i++) {
		struct lg_thread *t = &lg_threads[i];
		unsigned n = total / opt.threads + (i < total % opt.threads);

		lg_thread_init(t, (int)i);
		t->conns = calloc(n ? n : 1, sizeof(*t->conns));
		if (!t->conns)
			lg_die("out of memory");
		t->nconns = n;
		t->open_rate = opt.rate / opt.threads;
	}
	for (unsigned g = 0; g < total; g++) {
		struct lg_thread *t = &lg_threads[g % opt.threads];
		struct lg_conn *c = &t->conns[g / opt.threads];

		c->fd = -1;
		c->idx = g;
		if (opt.mode == LG_PRESENCE)
			c->role = g == 0 ? ROLE_PUB : ROLE_RECV;
		else
			c->role = ROLE_PAIR;
		lg_conn_prefix(c);
	}
}

/* ---- Measurements ---- */

/* CPU time of a process in ns: the sum of its threads' schedstat run time. */
static uint64_t lg_proc_cpu_ns(pid_t pid)
{
	char path[64], line[128];
	uint64_t sum = 0;
	struct dirent *d;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	dir = opendir(path);
	if (!dir)
		return 0;
	while ((d = readdir(dir)) != NULL) {
		char p[320];
		FILE *f;

		if (d->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "/proc/%d/task/%s/schedstat", (int)pid, d->d_name);
		f = fopen(p, "r");
		if (!f)
			continue;
		if (fgets(line, sizeof(line), f))
			sum += strtoull(line, NULL, 10);
		fclose(f);
	}
	closedir(dir);
	return sum;
}

/* utime + stime of a process from /proc/PID/stat, in seconds. */
static double lg_proc_stat_s(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long ut = 0, st = 0;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
			 &ut, &st) != 2)
		return 0;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/*
 * CPU seconds the whole machine spent busy (every CPU; /proc/stat user to
 * steal, idle and iowait excluded): minus server and loadgen, what other
 * processes took during the window.
 */
static double lg_host_busy_s(void)
{
	unsigned long long v[8] = { 0 };
	FILE *f = fopen("/proc/stat", "r");
	int n;

	if (!f)
		return 0;
	n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
		   &v[4], &v[5], &v[6], &v[7]);
	fclose(f);
	if (n != 8)
		return 0;
	return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

static double lg_self_cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

struct lg_snap {
	uint64_t t_ns;
	double self_cpu;
	double host_busy;
	uint64_t srv_ns;
	double srv_stat;
	struct lg_counters c;
};

static void lg_snapshot(struct lg_snap *s)
{
	memset(s, 0, sizeof(*s));
	s->t_ns = lg_now_ns();
	s->self_cpu = lg_self_cpu_s();
	s->host_busy = lg_host_busy_s();
	if (opt.server_pid > 0) {
		s->srv_ns = lg_proc_cpu_ns(opt.server_pid);
		s->srv_stat = lg_proc_stat_s(opt.server_pid);
	}
	for (unsigned i = 0; i < opt.threads; i++) {
		struct lg_counters *c = &lg_threads[i].c;

		s->c.tx_msgs += LG_GET(c->tx_msgs);
		s->c.rx_msgs += LG_GET(c->rx_msgs);
		s->c.rx_errors += LG_GET(c->rx_errors);
		s->c.rx_presence += LG_GET(c->rx_presence);
		s->c.rx_other += LG_GET(c->rx_other);
		s->c.rx_bytes += LG_GET(c->rx_bytes);
		s->c.tx_bytes += LG_GET(c->tx_bytes);
		s->c.drops += LG_GET(c->drops);
		s->c.disconnects += LG_GET(c->disconnects);
		s->c.late_sum_ns += LG_GET(c->late_sum_ns);
		s->c.late_n += LG_GET(c->late_n);
		if (LG_GET(c->late_max_ns) > s->c.late_max_ns)
			s->c.late_max_ns = LG_GET(c->late_max_ns);
		if (LG_GET(c->last_rx_ns) > s->c.last_rx_ns)
			s->c.last_rx_ns = LG_GET(c->last_rx_ns);
	}
}

static void lg_set_phase(int ph)
{
	atomic_store(&lg_phase, ph);
	for (unsigned i = 0; i < opt.threads; i++)
		eventfd_write(lg_threads[i].evfd, 1);
}

/* Waits until `want` logins finished (ready or failed). */
static void lg_wait_logins(unsigned want, uint64_t deadline)
{
	while (atomic_load(&lg_ready) + atomic_load(&lg_failed) < want) {
		if (lg_now_ns() > deadline) {
			printf("{\"event\":\"error\",\"mode\":\"%s\",\"error\":\"login timeout: %u of %u "
			       "clients ready\"}\n", opt.label, atomic_load(&lg_ready), want);
			fflush(stdout);
			exit(1);
		}
		lg_sleep_ms(5);
	}
	if (atomic_load(&lg_failed)) {
		char esc[sizeof(lg_fail_msg) * 2];
		size_t o = 0;

		for (const char *p = lg_fail_msg; *p && o + 2 < sizeof(esc); p++) {
			if (*p == '"' || *p == '\\')
				esc[o++] = '\\';
			esc[o++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
		}
		esc[o] = '\0';
		printf("{\"event\":\"error\",\"mode\":\"%s\",\"error\":\"%u of %u logins failed; "
		       "first: %s\"}\n", opt.label, atomic_load(&lg_failed), want, esc);
		fflush(stdout);
		exit(1);
	}
}

/* Waits until no input arrived for LG_SETTLE_QUIET_MS (at most max_ms). */
static void lg_settle(unsigned max_ms)
{
	uint64_t end = lg_now_ns() + (uint64_t)max_ms * 1000000ULL;

	for (;;) {
		struct lg_snap s;

		lg_sleep_ms(50);
		lg_snapshot(&s);
		if (s.t_ns - s.c.last_rx_ns > LG_SETTLE_QUIET_MS * 1000000ULL || s.t_ns > end)
			return;
	}
}

static void lg_print_lat(const struct lg_hist *h)
{
	if (!h->n) {
		printf("\"latency_us\":null");
		return;
	}
	printf("\"latency_us\":{\"n\":%" PRIu64 ",\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,"
	       "\"p999\":%.1f,\"max\":%.1f}", h->n, lg_hist_quantile_us(h, 0.5),
	       lg_hist_quantile_us(h, 0.9), lg_hist_quantile_us(h, 0.99),
	       lg_hist_quantile_us(h, 0.999), (double)h->max / 1000.0);
}

static int lg_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The result line. */
static void lg_report(const struct lg_snap *a, const struct lg_snap *b, double login_s)
{
	double wall = (double)(b->t_ns - a->t_ns) / 1e9;
	double self = b->self_cpu - a->self_cpu;
	double srv = (double)(b->srv_ns - a->srv_ns) / 1e9;
	double srv_stat = b->srv_stat - a->srv_stat;
	uint64_t rx = b->c.rx_msgs - a->c.rx_msgs, tx = b->c.tx_msgs - a->c.tx_msgs;
	uint64_t rxp = b->c.rx_presence - a->c.rx_presence;
	uint64_t ops = opt.mode == LG_PRESENCE ? rxp : rx;
	struct lg_hist *h = calloc(1, sizeof(*h));

	if (!h)
		lg_die("out of memory");
	for (unsigned i = 0; i < opt.threads; i++)
		lg_hist_merge(h, &lg_threads[i].hist);
	if (srv <= 0 && srv_stat > 0)
		srv = srv_stat;
	printf("{\"event\":\"result\",\"mode\":\"%s\",\"clients\":%u,\"threads\":%u,"
	       "\"login_s\":%.3f,\"window_s\":%.3f,", opt.label,
	       opt.mode == LG_PRESENCE ? opt.receivers + 1 : opt.clients, opt.threads, login_s,
	       wall);
	if (opt.mode == LG_CLOSED)
		printf("\"window\":%u,\"in_flight\":%u,", opt.window, opt.window * opt.clients);
	if (opt.mode == LG_OPEN)
		printf("\"target_rate\":%.0f,\"late_max_us\":%.1f,\"late_mean_us\":%.1f,",
		       opt.rate, (double)b->c.late_max_ns / 1000.0,
		       b->c.late_n ? (double)b->c.late_sum_ns / (double)b->c.late_n / 1000.0 : 0.0);
	printf("\"sent\":%" PRIu64 ",\"received\":%" PRIu64 ",\"rate\":%.0f,", tx,
	       opt.mode == LG_PRESENCE ? rxp : rx, wall > 0 ? (double)ops / wall : 0.0);
	printf("\"sent_total\":%" PRIu64 ",\"received_total\":%" PRIu64 ",", b->c.tx_msgs,
	       opt.mode == LG_PRESENCE ? b->c.rx_presence : b->c.rx_msgs);
	printf("\"errors\":%" PRIu64 ",\"drops\":%" PRIu64 ",\"disconnects\":%" PRIu64 ",",
	       b->c.rx_errors - a->c.rx_errors, b->c.drops - a->c.drops,
	       b->c.disconnects - a->c.disconnects);
	if (opt.mode == LG_PRESENCE) {
		uint64_t *fan = calloc(opt.updates + 1, sizeof(*fan));
		unsigned nf = 0;

		if (!fan)
			lg_die("out of memory");
		for (unsigned k = 1; k <= lg_pres.sent; k++) {
			uint64_t last = atomic_load(&lg_pres.t_last[k]);

			if (last)
				fan[nf++] = last - lg_pres.t_send[k];
		}
		qsort(fan, nf, sizeof(*fan), lg_cmp_u64);
		printf("\"receivers\":%u,\"updates_sent\":%u,\"updates_complete\":%u,"
		       "\"updates_timed_out\":%u,\"no_deliveries\":%s,\"deliveries\":%" PRIu64 ",",
		       opt.receivers, lg_pres.sent, lg_pres.complete, lg_pres.timed_out,
		       lg_pres.none ? "true" : "false", rxp);
		if (nf)
			printf("\"fanout_ms\":{\"p50\":%.3f,\"max\":%.3f,\"min\":%.3f},",
			       (double)fan[nf / 2] / 1e6, (double)fan[nf - 1] / 1e6,
			       (double)fan[0] / 1e6);
		else
			printf("\"fanout_ms\":null,");
		free(fan);
	}
	lg_print_lat(h);
	printf(",\"loadgen_cpu_s\":%.3f,\"loadgen_cpu_util\":%.3f", self,
	       wall > 0 ? self / wall : 0.0);
	if (opt.server_pid > 0) {
		double other = b->host_busy - a->host_busy - self - srv;

		printf(",\"other_cpu_util\":%.3f", wall > 0 && other > 0 ? other / wall : 0.0);
	}
	if (opt.server_pid > 0)
		printf(",\"server_cpu_s\":%.4f,\"server_cpu_stat_s\":%.3f,\"server_cpu_util\":%.3f,"
		       "\"server_us_per_op\":%.3f", srv, srv_stat, wall > 0 ? srv / wall : 0.0,
		       ops ? srv * 1e6 / (double)ops : -1.0);
	printf(",\"loadgen_us_per_op\":%.3f}\n", ops ? self * 1e6 / (double)ops : -1.0);
	fflush(stdout);
	free(h);
}

/* ---- Commands ---- */

static void lg_sync_point(const char *what, double login_s)
{
	char line[64];

	if (!opt.sync)
		return;
	printf("{\"event\":\"%s\",\"mode\":\"%s\",\"ready\":%u,\"login_s\":%.3f}\n", what, opt.label,
	       atomic_load(&lg_ready), login_s);
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return;
}

static void lg_quit(void)
{
	uint64_t end = lg_now_ns() + 2000000000ULL;

	lg_set_phase(LG_PH_QUIT);
	for (unsigned i = 0; i < opt.threads; i++) {
		/* Threads leave once their streams are closed, or we stop waiting. */
		while (lg_now_ns() < end) {
			if (pthread_tryjoin_np(lg_threads[i].tid, NULL) == 0)
				break;
			lg_sleep_ms(10);
		}
	}
}

static int lg_cmd_run(void)
{
	struct lg_snap a, b;
	uint64_t t0 = lg_now_ns(), deadline;
	unsigned expect;
	double login_s;

	if (opt.mode != LG_PRESENCE && opt.mode != LG_IDLE && (opt.clients < 2 || opt.clients % 2))
		lg_die("--clients must be even and at least 2 (clients talk in pairs)");
	if (opt.mode == LG_PRESENCE) {
		size_t k = (size_t)opt.updates + 1;

		lg_pres.count = calloc(k, sizeof(*lg_pres.count));
		lg_pres.t_last = calloc(k, sizeof(*lg_pres.t_last));
		lg_pres.t_send = calloc(k, sizeof(*lg_pres.t_send));
		if (!lg_pres.count || !lg_pres.t_last || !lg_pres.t_send)
			lg_die("out of memory");
	}
	lg_setup_clients();
	for (unsigned i = 0; i < opt.threads; i++)
		if (pthread_create(&lg_threads[i].tid, NULL, lg_thread_main, &lg_threads[i]))
			lg_die("pthread_create failed");
	deadline = t0 + (uint64_t)(opt.login_timeout * 1e9);
	expect = opt.mode == LG_PRESENCE ? opt.receivers : opt.clients;
	lg_wait_logins(expect, deadline);
	if (opt.mode == LG_PRESENCE) {
		/* Contacts are in: now the publisher (its probes answered in settle). */
		lg_settle(2000);
		atomic_store(&lg_pub_allowed, true);
		eventfd_write(lg_threads[0].evfd, 1);
		lg_wait_logins(expect + 1, deadline);
	}
	login_s = (double)(lg_now_ns() - t0) / 1e9;
	lg_settle(5000);
	lg_sync_point("ready", login_s);
	if (opt.mode == LG_IDLE) {
		if (!opt.sync)	/* hold the connections for a look from outside */
			lg_sleep_ms((unsigned)(opt.duration * 1000));
		lg_snapshot(&a);
		lg_report(&a, &a, login_s);
		lg_quit();
		return 0;
	}
	if (opt.mode == LG_PRESENCE) {
		lg_snapshot(&a);
		atomic_store(&lg_recording, 1);
		lg_set_phase(LG_PH_RUN);
		/* Bounded: every update either completes or times out. */
		while (!atomic_load(&lg_pres.done))
			lg_sleep_ms(2);
		/* The window ends at the last delivery, not when we noticed it. */
		lg_snapshot(&b);
		if (b.c.last_rx_ns > a.t_ns && lg_pres.complete == lg_pres.sent)
			b.t_ns = b.c.last_rx_ns;
	} else {
		lg_set_phase(LG_PH_RUN);
		lg_sleep_ms((unsigned)(opt.warmup * 1000));
		lg_snapshot(&a);
		atomic_store(&lg_recording, 1);
		lg_sleep_ms((unsigned)(opt.duration * 1000));
		atomic_store(&lg_recording, 0);
		lg_snapshot(&b);
	}
	atomic_store(&lg_recording, 0);
	lg_set_phase(LG_PH_STOP);
	lg_sleep_ms(20);
	lg_report(&a, &b, login_s);
	/*
	 * With --sync the streams stay open (idle) until a line or EOF on
	 * stdin: the driver measures the work the server still does for the
	 * window (queued storage writes) before logouts add their own.
	 */
	if (opt.sync) {
		char line[64];

		if (!fgets(line, sizeof(line), stdin))
			line[0] = '\0';
	}
	lg_quit();
	return 0;
}

static void lg_sink_signal(int sig)
{
	(void)sig;
	lg_sink_stop = 1;
}

static int lg_cmd_sink(void)
{
	struct sockaddr_in sa = lg_addr;
	struct rlimit rl;
	uint64_t rx = 0, rxp = 0;
	unsigned maxfd;

	getrlimit(RLIMIT_NOFILE, &rl);
	maxfd = rl.rlim_cur > 1000000 ? 1000000 : (unsigned)rl.rlim_cur;
	signal(SIGTERM, lg_sink_signal);
	signal(SIGINT, lg_sink_signal);
	signal(SIGPIPE, SIG_IGN);
	for (unsigned i = 0; i < opt.threads; i++) {
		struct lg_thread *t = &lg_threads[i];
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = LG_TAG_LISTEN };
		int one = 1;

		lg_thread_init(t, (int)i);
		/* Indexed by fd: each thread owns the fds its listener accepted. */
		t->conns = calloc(maxfd, sizeof(*t->conns));
		if (!t->conns)
			lg_die("out of memory");
		t->nconns = maxfd;
		t->live = calloc(maxfd, sizeof(*t->live));
		if (!t->live)
			lg_die("out of memory");
		for (unsigned k = 0; k < maxfd; k++)
			t->conns[k].fd = -1;
		t->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		setsockopt(t->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		setsockopt(t->lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
		if (bind(t->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(t->lfd, 4096) < 0)
			lg_die("cannot listen on %s:%d: %s", opt.host, opt.port, strerror(errno));
		epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->lfd, &ev);
	}
	for (unsigned i = 0; i < opt.threads; i++)
		if (pthread_create(&lg_threads[i].tid, NULL, lg_thread_main, &lg_threads[i]))
			lg_die("pthread_create failed");
	for (unsigned i = 0; i < opt.threads; i++) {
		pthread_join(lg_threads[i].tid, NULL);
		rx += lg_threads[i].c.rx_msgs;
		rxp += lg_threads[i].c.rx_presence;
	}
	printf("{\"event\":\"sink\",\"messages\":%" PRIu64 ",\"presence\":%" PRIu64 "}\n", rx, rxp);
	return 0;
}

static void lg_usage(FILE *f)
{
	fputs("usage: loadgen run [options]   drive an XMPP server\n"
	      "       loadgen sink [options]  a minimal echo server for the self-test\n"
	      "\n"
	      "  --mode closed|open|presence|idle   workload (run)\n"
	      "  --host ADDR --port N       target (run) or listen address (sink)\n"
	      "  --domain NAME              XMPP domain (localhost)\n"
	      "  --prefix P --first N       usernames P<N>, P<N+1>, ... (u, 0)\n"
	      "  --password PW              every account's password (bench)\n"
	      "  --resource R               resource to bind (bench)\n"
	      "  --publisher USER           presence publisher (pub); receivers P<first>..\n"
	      "  -c, --clients N            clients (1000; pairs: even)\n"
	      "  -t, --threads N            event-loop threads (1)\n"
	      "  -w, --window N             closed loop: messages each client starts (4)\n"
	      "  -r, --rate N               open loop: messages/s in total (1000)\n"
	      "  -d, --duration S           measured seconds (10)\n"
	      "  --warmup S                 unmeasured seconds first (1)\n"
	      "  --receivers N --updates K  presence fan-out size and updates (1000, 200)\n"
	      "  --update-timeout S         presence: give up on an update after S (2)\n"
	      "  --pubsub-node NODE         presence mode over pubsub: the publisher publishes\n"
	      "                             items to NODE; receivers (its subscribers) count\n"
	      "                             the notifications\n"
	      "  --pubsub-service JID       the pubsub service (pubsub.DOMAIN)\n"
	      "  --login-timeout S          all logins done within S (120)\n"
	      "  --login-concurrency N      logins in progress per thread (256)\n"
	      "  --body-pad N               extra body bytes per message (0)\n"
	      "  --spin-us N                open loop: poll N us before each send (50)\n"
	      "  --no-presence              skip the initial presence\n"
	      "  --server-pid PID           sample this process's CPU over the window\n"
	      "  --sync                     print a ready line and wait for a stdin line;\n"
	      "                             after the result, hold the streams until another\n"
	      "                             line (the driver measures deferred server work)\n"
	      "  --label NAME               the mode name printed in results\n"
	      "  --source-spread N          loopback target: N clients per source address\n"
	      "                             127.0.0.2, 127.0.0.3, ... (16384; 0: one address)\n"
	      "  --discard                  sink: count messages, do not echo\n", f);
}

int main(int argc, char **argv)
{
	static const struct option longs[] = {
		{ "mode", required_argument, NULL, 'm' },
		{ "host", required_argument, NULL, 'H' },
		{ "port", required_argument, NULL, 'p' },
		{ "domain", required_argument, NULL, 'D' },
		{ "prefix", required_argument, NULL, 'P' },
		{ "first", required_argument, NULL, 'F' },
		{ "password", required_argument, NULL, 'W' },
		{ "resource", required_argument, NULL, 'R' },
		{ "publisher", required_argument, NULL, 'U' },
		{ "clients", required_argument, NULL, 'c' },
		{ "threads", required_argument, NULL, 't' },
		{ "window", required_argument, NULL, 'w' },
		{ "rate", required_argument, NULL, 'r' },
		{ "duration", required_argument, NULL, 'd' },
		{ "warmup", required_argument, NULL, 1 },
		{ "receivers", required_argument, NULL, 2 },
		{ "updates", required_argument, NULL, 3 },
		{ "update-timeout", required_argument, NULL, 4 },
		{ "login-timeout", required_argument, NULL, 5 },
		{ "login-concurrency", required_argument, NULL, 6 },
		{ "body-pad", required_argument, NULL, 7 },
		{ "no-presence", no_argument, NULL, 8 },
		{ "server-pid", required_argument, NULL, 9 },
		{ "sync", no_argument, NULL, 10 },
		{ "label", required_argument, NULL, 11 },
		{ "discard", no_argument, NULL, 12 },
		{ "spin-us", required_argument, NULL, 13 },
		{ "pubsub-node", required_argument, NULL, 14 },
		{ "pubsub-service", required_argument, NULL, 15 },
		{ "source-spread", required_argument, NULL, 16 },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *cmd;
	int ch;

	if (argc < 2 || argv[1][0] == '-') {
		lg_usage(argc >= 2 && strcmp(argv[1], "--help") == 0 ? stdout : stderr);
		return argc >= 2 && strcmp(argv[1], "--help") == 0 ? 0 : 2;
	}
	cmd = argv[1];
	argv++;
	argc--;
	while ((ch = getopt_long(argc, argv, "c:t:w:r:d:h", longs, NULL)) != -1) {
		switch (ch) {
		case 'm':
			if (strcmp(optarg, "closed") == 0)
				opt.mode = LG_CLOSED;
			else if (strcmp(optarg, "open") == 0)
				opt.mode = LG_OPEN;
			else if (strcmp(optarg, "presence") == 0)
				opt.mode = LG_PRESENCE;
			else if (strcmp(optarg, "idle") == 0)
				opt.mode = LG_IDLE;
			else
				lg_die("unknown mode '%s'", optarg);
			break;
		case 'H': opt.host = optarg; break;
		case 'p': opt.port = atoi(optarg); break;
		case 'D': opt.domain = optarg; break;
		case 'P': opt.prefix = optarg; break;
		case 'F': opt.first = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'W': opt.password = optarg; break;
		case 'R': opt.resource = optarg; break;
		case 'U': opt.publisher = optarg; break;
		case 'c': opt.clients = (unsigned)strtoul(optarg, NULL, 10); break;
		case 't': opt.threads = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'w': opt.window = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'r': opt.rate = strtod(optarg, NULL); break;
		case 'd': opt.duration = strtod(optarg, NULL); break;
		case 1: opt.warmup = strtod(optarg, NULL); break;
		case 2: opt.receivers = (unsigned)strtoul(optarg, NULL, 10); break;
		case 3: opt.updates = (unsigned)strtoul(optarg, NULL, 10); break;
		case 4: opt.update_timeout = strtod(optarg, NULL); break;
		case 5: opt.login_timeout = strtod(optarg, NULL); break;
		case 6: opt.login_concurrency = (unsigned)strtoul(optarg, NULL, 10); break;
		case 7: opt.body_pad = (unsigned)strtoul(optarg, NULL, 10); break;
		case 8: opt.initial_presence = false; break;
		case 9: opt.server_pid = (pid_t)atoi(optarg); break;
		case 10: opt.sync = true; break;
		case 11: opt.label = optarg; break;
		case 12: opt.discard = true; break;
		case 13: opt.spin_us = (unsigned)strtoul(optarg, NULL, 10); break;
		case 14: opt.pubsub_node = optarg; break;
		case 15: opt.pubsub_service = optarg; break;
		case 16: opt.source_spread = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'h': lg_usage(stdout); return 0;
		default: lg_usage(stderr); return 2;
		}
	}
	if (opt.threads < 1 || opt.threads > LG_THREADS_MAX)
		lg_die("--threads must be 1..%d", LG_THREADS_MAX);
	if (opt.body_pad > LG_PAD_MAX)
		lg_die("--body-pad at most %d", LG_PAD_MAX);
	if (opt.rate <= 0 || opt.duration < 0 || opt.warmup < 0 || !opt.login_concurrency)
		lg_die("--rate, --duration, --warmup, --login-concurrency must be positive");
	if (opt.mode == LG_PRESENCE && (!opt.receivers || !opt.updates))
		lg_die("--receivers and --updates must be positive");
	if (opt.pubsub_node && (strlen(opt.pubsub_node) > 200 || strchr(opt.pubsub_node, '\'')))
		lg_die("--pubsub-node: at most 200 bytes, no quote");
	if (opt.pubsub_node && !opt.pubsub_service) {
		static char svc[256];

		snprintf(svc, sizeof(svc), "pubsub.%s", opt.domain);
		opt.pubsub_service = svc;
	}
	if (opt.pubsub_service && (strlen(opt.pubsub_service) > 200 ||
				   strchr(opt.pubsub_service, '\'')))
		lg_die("--pubsub-service: at most 200 bytes, no quote");
	if (opt.window * (opt.body_pad + LG_PREFIX_MAX + 64) > LG_OUT_MAX)
		lg_die("--window too large for the output queue");
	memset(lg_pad, 'x', sizeof(lg_pad) - 1);
	if (!opt.label)
		opt.label = strcmp(cmd, "sink") == 0 ? "sink" :
			    (const char *[]){ "closed", "open", "presence", "idle" }[opt.mode];
	lg_addr.sin_family = AF_INET;
	lg_addr.sin_port = htons((uint16_t)opt.port);
	if (inet_pton(AF_INET, opt.host, &lg_addr.sin_addr) != 1)
		lg_die("--host must be an IPv4 address, not '%s'", opt.host);
	lg_spread = opt.source_spread && (ntohl(lg_addr.sin_addr.s_addr) >> 24) == 127;
	if (lg_spread && (opt.first + (uint64_t)opt.clients + opt.receivers) / opt.source_spread >=
	    0xfffffdu)
		lg_die("--source-spread %u: too many clients for 127.0.0.0/8", opt.source_spread);
	lg_raise_nofile();
	signal(SIGPIPE, SIG_IGN);
	if (strcmp(cmd, "run") == 0)
		return lg_cmd_run();
	if (strcmp(cmd, "sink") == 0)
		return lg_cmd_sink();
	lg_usage(stderr);
	return 2;
}
