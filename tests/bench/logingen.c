/* SPDX-License-Identifier: MIT */
/*
 * logingen: the login benchmark of `make bench` (scenario "login", driven
 * by scripts/bench.py). Measures what a device pays to get from a TCP
 * connect to a ready session (bound, stream management on), with three
 * negotiations over Direct TLS (XEP-0368, TLS 1.3):
 *
 *   classic  RFC 6120: header, SCRAM-SHA-256 (2 round trips), stream
 *            restart, bind, <enable/> (XEP-0198)
 *   sasl2    SASL2 (XEP-0388) with SCRAM-SHA-256 and Bind 2 (XEP-0386)
 *            enabling stream management inline
 *   fast     SASL2 with a FAST token (XEP-0484, HT-SHA-256-EXPR by
 *            default) and Bind 2: one round trip after TLS
 *
 * SASL2 clients may cache the server's features (XEP-0388 section 2.1),
 * so by default sasl2 and fast send the stream header and <authenticate/>
 * together (--no-pipeline waits for the features first). fast gets its
 * tokens before the measured window (one SASL2 login per user with
 * <request-token/>). Each login closes its stream cleanly, so no session
 * lingers.
 *
 *   logingen --host H --port P --mode classic|sasl2|fast [options]
 *
 * Prints {"event":"ready"} once set up and, with --sync, waits for a line
 * on stdin; then logs in for --duration seconds on --threads threads (one
 * login at a time each, blocking sockets) and prints one JSON result:
 * logins, failures, round trips per login (TCP and TLS included: each
 * time the client waits for the server), and the time from connect() to
 * ready (mean, p50, p99, ms). The server's CPU is measured by the driver.
 *
 * With --hold N (scenario "idle" over TLS) it instead logs users
 * P<first> .. P<first+N-1> in once each (classic), keeps every session
 * open and idle, prints the result, and closes them all cleanly when a
 * second line (or EOF) arrives on stdin. Those connections leave from
 * 127.0.0.2, 127.0.0.3, ... (--source-spread per address) so that more
 * than one address's worth of ephemeral ports fit.
 *
 * --roster-presence makes a login what a device's start-up is: once the
 * session is ready it also fetches its roster and sends initial presence
 * (both in one flight; ready when the roster arrives, one round trip more).
 *
 * --storm resume|relogin (with --hold; scenario "reconnect") is a reconnect
 * storm: the held devices log in with SASL2 and Bind 2 instead, enabling
 * stream management with resumption inline (and, for resume, with
 * <request-token/>: a FAST token). After the hold result, a line on stdin
 * drops every connection at once, abruptly (RST, no </stream:stream>: the
 * server keeps the sessions for resumption, XEP-0198), then prints
 * {"event":"dropped"}; the next line brings them all back on the threads:
 *
 *   resume   SASL2 with the FAST token and an inline <resume/> (XEP-0198
 *            section 7.2) in <authenticate/>, Bind 2 as the fallback: one
 *            round trip after TLS (with --tls-resume, TLS resumes the
 *            session ticket of the held connection too)
 *   relogin  classic RFC 6120 login (SCRAM-SHA-256, bind of the held
 *            resource, <enable resume/>): a new session replacing the
 *            detached one
 *
 * and prints one result: devices back, failures, how many the server
 * resumed (<resumed/>) and how many got new sessions, the time from the
 * first reconnect to the last ready, and per device the time from its
 * connect() to ready (ready_ms) and from the storm's start (back_ms). The
 * sessions are kept until a line or EOF on stdin, then closed cleanly.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>

#define LG_BUF		16384		/* what one answer may take */
#define LG_MSG		2048		/* one message we compose */
#define LG_TOKEN_MAX	128
#define LG_USER_MAX	64
#define LG_SAMPLES_MAX	(1u << 20)	/* ready times kept per run */
#define LG_TIMEOUT_S	10		/* socket timeout: a stuck login fails */
#define LG_SPREAD_DEFAULT	16384	/* --hold: sessions per source address */
#define LG_ID_MAX	96		/* --storm: stream management id, resource */

enum lg_mode { M_CLASSIC = 0, M_SASL2, M_FAST };
enum lg_storm { S_NONE = 0, S_RESUME, S_RELOGIN };

static struct {
	const char *host, *domain, *password, *prefix, *fast_mech, *label;
	int port;
	enum lg_mode mode;
	unsigned users, threads;
	unsigned hold, first, source_spread;	/* --hold: sessions kept; user numbers */
	double duration;
	bool pipeline, sync, tls_resume, roster_presence;
	enum lg_storm storm;			/* --storm: reconnect variant */
} opt = {
	.host = "127.0.0.1", .domain = "localhost", .password = "bench", .prefix = "u",
	.fast_mech = "HT-SHA-256-EXPR", .users = 200, .threads = 4, .duration = 3,
	.pipeline = true, .label = "login", .source_spread = LG_SPREAD_DEFAULT,
};

/* A session kept open by --hold. */
struct lg_held {
	int fd;
	SSL *ssl;
	bool resumed;			/* --storm: by the server's <resumed/> */
};

/* One simulated device. */
struct lg_user {
	char name[LG_USER_MAX];
	char token[LG_TOKEN_MAX];	/* fast */
	SSL_SESSION *sess;		/* --tls-resume */
	pthread_mutex_t lock;
	char previd[LG_ID_MAX];		/* --storm: the session's stream management id */
	char resource[LG_ID_MAX];	/* --storm: its resource */
};

/* One login's connection. */
struct lg_conn {
	int fd;
	SSL *ssl;
	char buf[LG_BUF + 1];
	size_t len;
	unsigned waits;			/* round trips: times we waited for the server */
	bool resumed;			/* --storm: the server sent <resumed/> */
};

struct lg_thread {
	pthread_t tid;
	unsigned index;
	uint64_t logins, failures, resumed;
	double last_ready;		/* --storm: when its last device was back */
	double *back_ms;		/* --storm: storm start to ready, per device */
	double *ready_ms;		/* samples */
	size_t nsamples, cap;
	char last_error[160];
};

static SSL_CTX *lg_ctx;
static struct lg_user *lg_users;
static atomic_bool lg_stop;
static atomic_ulong lg_resumed;	/* logins whose TLS session was resumed */
static const char *lg_mode_names[] = { "classic", "sasl2", "fast" };
static const char *lg_storm_names[] = { "", "resume", "relogin" };
static struct lg_held *lg_held;		/* --hold: one per user */

static void lg_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void lg_die(const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	printf("{\"event\":\"error\",\"error\":\"%s\"}\n", msg);
	fflush(stdout);
	exit(1);
}

static double lg_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- base64, SCRAM, HT ---- */

static void lg_b64(const unsigned char *in, size_t len, char *out)
{
	EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

/* Decodes base64 text into out; returns the length or -1. */
static int lg_unb64(const char *in, size_t len, unsigned char *out)
{
	int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);

	if (n < 0)
		return -1;
	while (len > 0 && in[len - 1] == '=') {	/* EVP_DecodeBlock counts padding */
		len--;
		n--;
	}
	return n;
}

struct lg_scram {
	char cnonce[32];
	char first_bare[LG_USER_MAX + 64];
	unsigned char client_key[32], stored_key[32];
};

/* client-first-message (no channel binding: gs2 flag n). */
static void lg_scram_first(struct lg_scram *s, const char *user, char *out, size_t size)
{
	unsigned char r[18];

	RAND_bytes(r, sizeof(r));
	lg_b64(r, sizeof(r), s->cnonce);
	snprintf(s->first_bare, sizeof(s->first_bare), "n=%s,r=%s", user, s->cnonce);
	snprintf(out, size, "n,,%s", s->first_bare);
}

/* client-final-message from the server's first message. 0 or -1. */
static int lg_scram_final(struct lg_scram *s, const char *server_first, char *out, size_t size)
{
	const char *r = strstr(server_first, "r="), *sp = strstr(server_first, ",s="),
		   *ip = strstr(server_first, ",i=");
	unsigned char salt[64], salted[32], sig[32], proof[32];
	char nonce[128], without[256], auth[768], proofb64[64];
	unsigned int hl = 32;
	int salt_len, iter;

	if (!r || !sp || !ip || sp < r)
		return -1;
	snprintf(nonce, sizeof(nonce), "%.*s", (int)(sp - r - 2), r + 2);
	salt_len = lg_unb64(sp + 3, (size_t)(ip - sp - 3), salt);
	iter = atoi(ip + 3);
	if (salt_len <= 0 || iter <= 0)
		return -1;
	PKCS5_PBKDF2_HMAC(opt.password, (int)strlen(opt.password), salt, salt_len, iter,
			  EVP_sha256(), 32, salted);
	HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Client Key", 10, s->client_key, &hl);
	SHA256(s->client_key, 32, s->stored_key);
	snprintf(without, sizeof(without), "c=biws,r=%s", nonce);	/* biws = base64("n,,") */
	snprintf(auth, sizeof(auth), "%s,%s,%s", s->first_bare, server_first, without);
	HMAC(EVP_sha256(), s->stored_key, 32, (unsigned char *)auth, strlen(auth), sig, &hl);
	for (int i = 0; i < 32; i++)
		proof[i] = s->client_key[i] ^ sig[i];
	lg_b64(proof, 32, proofb64);
	snprintf(out, size, "%s,p=%s", without, proofb64);
	return 0;
}

/* ---- I/O ---- */

static int lg_send(struct lg_conn *c, const char *s)
{
	size_t n = strlen(s);

	return SSL_write(c->ssl, s, (int)n) == (int)n ? 0 : -1;
}

/*
 * Reads until the input holds `marker`; the caller drops the input up to
 * the marker's end with lg_consume(). Returns the position after the
 * marker, or NULL (failure, stream error, timeout, closed).
 */
static char *lg_read_for(struct lg_conn *c, const char *marker)
{
	char *hit;

	for (;;) {
		int n;

		c->buf[c->len] = '\0';
		hit = strstr(c->buf, marker);
		if (hit)
			return hit + strlen(marker);
		if (strstr(c->buf, "failure") || strstr(c->buf, "stream:error"))
			return NULL;
		if (c->len >= LG_BUF)
			return NULL;
		n = SSL_read(c->ssl, c->buf + c->len, (int)(LG_BUF - c->len));
		if (n <= 0)
			return NULL;
		c->len += (size_t)n;
	}
}

/* The same, as the answer to what we just sent: one round trip. */
static char *lg_wait_for(struct lg_conn *c, const char *marker)
{
	c->waits++;
	return lg_read_for(c, marker);
}

/* The base64 payload of the first <name ...>...</name> in the input. */
static int lg_payload(const char *buf, const char *name, char *out, size_t size)
{
	char open[32], close[32];
	const char *a, *b;

	snprintf(open, sizeof(open), "<%s", name);
	snprintf(close, sizeof(close), "</%s>", name);
	a = strstr(buf, open);
	a = a ? strchr(a, '>') : NULL;
	b = a ? strstr(a, close) : NULL;
	if (!b || (size_t)(b - a - 1) >= size)
		return -1;
	memcpy(out, a + 1, (size_t)(b - a - 1));
	out[b - a - 1] = '\0';
	return 0;
}

static void lg_consume(struct lg_conn *c, char *upto)
{
	size_t k = (size_t)(upto - c->buf);

	memmove(c->buf, upto, c->len - k);
	c->len -= k;
}

/* Text between `open` and the next '<' (base64 payloads, tokens). */
static int lg_between(const char *buf, const char *open, const char *close, char *out,
		      size_t size)
{
	const char *a = strstr(buf, open), *b;

	if (!a)
		return -1;
	a += strlen(open);
	b = strstr(a, close);
	if (!b || (size_t)(b - a) >= size)
		return -1;
	memcpy(out, a, (size_t)(b - a));
	out[b - a] = '\0';
	return 0;
}

static int lg_connect(struct lg_conn *c, struct lg_user *u)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port) };
	struct timeval tv = { LG_TIMEOUT_S, 0 };
	int one = 1;

	memset(c, 0, offsetof(struct lg_conn, buf));
	c->len = 0;
	inet_pton(AF_INET, opt.host, &sa.sin_addr);
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	c->waits = 1;	/* the TCP handshake */
	c->resumed = false;
	if (opt.hold && opt.source_spread && (ntohl(sa.sin_addr.s_addr) >> 24) == 127) {
		/* User number g leaves from 127.0.0.(2 + g / spread), port chosen at connect(). */
		uint32_t g = opt.first + (uint32_t)(u - lg_users);
		struct sockaddr_in src = {
			.sin_family = AF_INET,
			.sin_addr.s_addr = htonl(0x7f000002u + g / opt.source_spread),
		};

		setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(c->fd, (struct sockaddr *)&src, sizeof(src)) < 0)
			return -1;
	}
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -1;
	c->ssl = SSL_new(lg_ctx);
	if (!c->ssl)
		return -1;
	SSL_set_fd(c->ssl, c->fd);
	SSL_set_tlsext_host_name(c->ssl, opt.domain);
	if (opt.tls_resume) {
		pthread_mutex_lock(&u->lock);
		if (u->sess)
			SSL_set_session(c->ssl, u->sess);
		pthread_mutex_unlock(&u->lock);
	}
	c->waits++;	/* TLS 1.3: one round trip (our Finished goes with our first data) */
	if (SSL_connect(c->ssl) != 1)
		return -1;
	if (SSL_session_reused(c->ssl))
		atomic_fetch_add(&lg_resumed, 1);
	return 0;
}

/* --tls-resume: keeps the connection's TLS session for the user's next one. */
static void lg_keep_session(struct lg_conn *c, struct lg_user *u)
{
	SSL_SESSION *s = SSL_get1_session(c->ssl);

	pthread_mutex_lock(&u->lock);
	if (s && SSL_SESSION_is_resumable(s)) {
		SSL_SESSION_free(u->sess);
		u->sess = s;
		s = NULL;
	}
	pthread_mutex_unlock(&u->lock);
	SSL_SESSION_free(s);
}

static void lg_close(struct lg_conn *c, struct lg_user *u)
{
	if (c->ssl) {
		if (opt.tls_resume)
			lg_keep_session(c, u);
		/*
		 * Freed without a close_notify sent, OpenSSL takes the session
		 * for a bad one and makes it not resumable (ssl_clear_bad_session):
		 * the flag alone (nothing is written) keeps it.
		 */
		SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN);
		SSL_free(c->ssl);
	}
	if (c->fd >= 0)
		close(c->fd);
	c->ssl = NULL;
	c->fd = -1;
}

/* ---- the three negotiations ---- */

static void lg_header(char *out, size_t size)
{
	snprintf(out, size, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
		 "xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0'>",
		 opt.domain);
}

static int lg_classic(struct lg_conn *c, struct lg_user *u)
{
	char msg[LG_MSG], first[512], data[512], b64[1024];
	struct lg_scram s;
	char *p;

	lg_header(msg, sizeof(msg));
	if (lg_send(c, msg) || !(p = lg_wait_for(c, "</stream:features>")))
		return -1;
	lg_consume(c, p);
	lg_scram_first(&s, u->name, first, sizeof(first));
	lg_b64((unsigned char *)first, strlen(first), b64);
	snprintf(msg, sizeof(msg), "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
		 "mechanism='SCRAM-SHA-256'>%s</auth>", b64);
	if (lg_send(c, msg) || !(p = lg_wait_for(c, "</challenge>")))
		return -1;
	if (lg_payload(c->buf, "challenge", b64, sizeof(b64)))
		return -1;
	lg_consume(c, p);
	data[lg_unb64(b64, strlen(b64), (unsigned char *)data)] = '\0';
	if (lg_scram_final(&s, data, first, sizeof(first)) < 0)
		return -1;
	lg_b64((unsigned char *)first, strlen(first), b64);
	snprintf(msg, sizeof(msg), "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</response>",
		 b64);
	if (lg_send(c, msg) || !(p = lg_wait_for(c, "</success>")))
		return -1;
	lg_consume(c, p);
	lg_header(msg, sizeof(msg));
	if (lg_send(c, msg) || !(p = lg_wait_for(c, "</stream:features>")))
		return -1;
	lg_consume(c, p);
	if (opt.storm && u->resource[0]) {
		/* --storm relogin: the held resource again, replacing the detached session. */
		snprintf(msg, sizeof(msg), "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:"
			 "ns:xmpp-bind'><resource>%s</resource></bind></iq>", u->resource);
		if (lg_send(c, msg) || !(p = lg_wait_for(c, "</iq>")))
			return -1;
	} else if (lg_send(c, "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
			      "</iq>") || !(p = lg_wait_for(c, "</iq>"))) {
		return -1;
	}
	lg_consume(c, p);
	if (lg_send(c, opt.storm ? "<enable xmlns='urn:xmpp:sm:3' resume='true'/>" :
		       "<enable xmlns='urn:xmpp:sm:3'/>") || !(p = lg_wait_for(c, "<enabled")))
		return -1;
	if (opt.storm && (!(p = lg_read_for(c, "/>")) ||
			  lg_between(c->buf, "<enabled", "/>", data, sizeof(data)) ||
			  lg_between(data, "id='", "'", u->previd, sizeof(u->previd))))
		return -1;
	lg_consume(c, p);
	return 0;
}

/*
 * --storm: what a device keeps from a SASL2 <success/> (in the input): the
 * stream management id of <enabled/> and the resource of the full JID.
 */
static int lg_storm_keep(struct lg_conn *c, struct lg_user *u)
{
	char el[512], jid[LG_USER_MAX + LG_ID_MAX + 64];
	const char *slash;

	if (lg_between(c->buf, "<enabled", "/>", el, sizeof(el)) ||
	    lg_between(el, "id='", "'", u->previd, sizeof(u->previd)) ||
	    lg_between(c->buf, "<authorization-identifier>", "</authorization-identifier>", jid,
		       sizeof(jid)) || !(slash = strchr(jid, '/')))
		return -1;
	snprintf(u->resource, sizeof(u->resource), "%s", slash + 1);
	return 0;
}

/*
 * The SASL2 children after the mechanism's initial response. --storm:
 * stream management with resumption, and with resume an inline <resume/>
 * of the session held before (h 0: the idle devices were sent no stanza).
 */
static void lg_inline(const struct lg_user *u, bool want_token, bool resume, char *out,
		      size_t size)
{
	char res[LG_ID_MAX + 64] = "";

	if (resume && u->previd[0])
		snprintf(res, sizeof(res), "<resume xmlns='urn:xmpp:sm:3' previd='%s' h='0'/>",
			 u->previd);
	snprintf(out, size, "<user-agent id='bench-%s'/>%s<bind xmlns='urn:xmpp:bind:0'>"
		 "<tag>bench</tag><enable xmlns='urn:xmpp:sm:3'%s/></bind>%s%s%s", u->name, res,
		 opt.storm ? " resume='true'" : "",
		 want_token ? "<request-token xmlns='urn:xmpp:fast:0' mechanism='" : "",
		 want_token ? opt.fast_mech : "", want_token ? "'/>" : "");
}

/* Sends the header (and, pipelined, the first SASL2 element with it). */
static int lg_sasl2_open(struct lg_conn *c, const char *authenticate)
{
	char msg[LG_MSG * 2];
	char *p;

	lg_header(msg, sizeof(msg));
	if (opt.pipeline) {
		strncat(msg, authenticate, sizeof(msg) - strlen(msg) - 1);
		return lg_send(c, msg);
	}
	if (lg_send(c, msg) || !(p = lg_wait_for(c, "</stream:features>")))
		return -1;
	lg_consume(c, p);
	return lg_send(c, authenticate);
}

/* SASL2 + SCRAM + Bind 2; with want_token, keeps the FAST token issued. */
static int lg_sasl2(struct lg_conn *c, struct lg_user *u, bool want_token)
{
	char msg[LG_MSG], first[512], data[512], b64[1024], inl[512];
	struct lg_scram s;
	char *p;

	lg_scram_first(&s, u->name, first, sizeof(first));
	lg_b64((unsigned char *)first, strlen(first), b64);
	lg_inline(u, want_token, false, inl, sizeof(inl));
	snprintf(msg, sizeof(msg), "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='SCRAM-SHA-256'>"
		 "<initial-response>%s</initial-response>%s</authenticate>", b64, inl);
	if (lg_sasl2_open(c, msg) || !(p = lg_wait_for(c, "</challenge>")))
		return -1;
	if (lg_payload(c->buf, "challenge", b64, sizeof(b64)))
		return -1;
	lg_consume(c, p);
	data[lg_unb64(b64, strlen(b64), (unsigned char *)data)] = '\0';
	if (lg_scram_final(&s, data, first, sizeof(first)) < 0)
		return -1;
	lg_b64((unsigned char *)first, strlen(first), b64);
	snprintf(msg, sizeof(msg), "<response xmlns='urn:xmpp:sasl:2'>%s</response>", b64);
	if (lg_send(c, msg) || !(p = lg_wait_for(c, "</success>")))
		return -1;
	if (want_token && lg_between(c->buf, "token='", "'", u->token, sizeof(u->token)))
		return -1;
	if (opt.storm && lg_storm_keep(c, u))
		return -1;
	lg_consume(c, p);
	/* The features that follow <success/> come in the same flight. */
	if (!(p = lg_read_for(c, "</stream:features>")))
		return -1;
	lg_consume(c, p);
	return 0;
}

static int lg_fast(struct lg_conn *c, struct lg_user *u)
{
	unsigned char cb[32], mac[32], ir[LG_USER_MAX + 40];
	char msg[LG_MSG], b64[256], inl[512];
	unsigned int hl = 32;
	size_t ulen = strlen(u->name), cblen = 0;
	char *p;

	if (strcmp(opt.fast_mech, "HT-SHA-256-EXPR") == 0) {
		if (SSL_export_keying_material(c->ssl, cb, 32, "EXPORTER-Channel-Binding", 24, NULL,
					       0, 0) != 1)
			return -1;
		cblen = 32;
	}
	memcpy(msg, "Initiator", 9);
	memcpy(msg + 9, cb, cblen);
	HMAC(EVP_sha256(), u->token, (int)strlen(u->token), (unsigned char *)msg, 9 + cblen, mac,
	     &hl);
	memcpy(ir, u->name, ulen);
	ir[ulen] = 0;
	memcpy(ir + ulen + 1, mac, 32);
	lg_b64(ir, ulen + 33, b64);
	lg_inline(u, false, opt.storm == S_RESUME, inl, sizeof(inl));
	snprintf(msg, sizeof(msg), "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='%s'>"
		 "<initial-response>%s</initial-response>%s</authenticate>", opt.fast_mech, b64,
		 inl);
	if (lg_sasl2_open(c, msg) || !(p = lg_wait_for(c, "</success>")))
		return -1;
	/* A token given on rotation replaces ours. */
	lg_between(c->buf, "token='", "'", u->token, sizeof(u->token));
	/* Resumed inline: ready now, no features follow (XEP-0198 section 7). */
	c->resumed = strstr(c->buf, "<resumed") != NULL && strstr(c->buf, "<resumed") < p;
	if (opt.storm && !c->resumed && lg_storm_keep(c, u))
		return -1;
	lg_consume(c, p);
	if (c->resumed)
		return 0;
	if (!(p = lg_read_for(c, "</stream:features>")))
		return -1;
	lg_consume(c, p);
	return 0;
}

/*
 * One login of user u in the run's mode; ready_ms set. 0 or -1. With keep,
 * a successful session stays open and is handed over there.
 */
static int lg_login(struct lg_user *u, enum lg_mode mode, bool want_token, double *ready_ms,
		    unsigned *waits, struct lg_held *keep)
{
	struct lg_conn *c = malloc(sizeof(*c));
	double t0 = lg_now();
	int ret;

	if (!c)
		return -1;
	c->fd = -1;
	c->ssl = NULL;
	ret = lg_connect(c, u);
	if (ret == 0) {
		if (mode == M_CLASSIC)
			ret = lg_classic(c, u);
		else if (mode == M_SASL2)
			ret = lg_sasl2(c, u, want_token);
		else
			ret = lg_fast(c, u);
	}
	if (ret == 0 && opt.roster_presence) {
		char *p;

		/* In order on the server: the roster's answer follows the presence's handling. */
		if (lg_send(c, "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>"
			       "<presence/>") || !(p = lg_wait_for(c, "</iq>")))
			ret = -1;
		else
			lg_consume(c, p);
	}
	*ready_ms = (lg_now() - t0) * 1e3;
	*waits = c->waits;
	if (ret == 0 && keep) {
		/* TLS 1.3 tickets came after the handshake, read with the answers. */
		if (opt.tls_resume)
			lg_keep_session(c, u);
		keep->fd = c->fd;
		keep->ssl = c->ssl;
		keep->resumed = c->resumed;
		free(c);
		return 0;
	}
	/* A clean end: no session waits for resumption. */
	if (ret == 0)
		lg_send(c, "</stream:stream>");
	lg_close(c, u);
	free(c);
	return ret;
}

/* ---- threads ---- */

static atomic_uint lg_waits_seen;

static void *lg_thread_main(void *arg)
{
	struct lg_thread *t = arg;
	unsigned next = t->index;

	while (!atomic_load(&lg_stop)) {
		struct lg_user *u = &lg_users[next % opt.users];
		double ms;
		unsigned waits;

		next += opt.threads;
		if (lg_login(u, opt.mode, false, &ms, &waits, NULL) < 0) {
			t->failures++;
			snprintf(t->last_error, sizeof(t->last_error), "login of %s failed", u->name);
			ERR_clear_error();
			continue;
		}
		t->logins++;
		atomic_store(&lg_waits_seen, waits);
		if (t->nsamples == t->cap && t->cap < LG_SAMPLES_MAX) {
			size_t cap = t->cap ? t->cap * 2 : 1024;
			double *nb = realloc(t->ready_ms, cap * sizeof(*nb));

			if (nb) {
				t->ready_ms = nb;
				t->cap = cap;
			}
		}
		if (t->nsamples < t->cap)
			t->ready_ms[t->nsamples++] = ms;
	}
	return NULL;
}

/* --hold: thread t logs in users t, t + threads, ... once each and keeps them. */
static void *lg_hold_main(void *arg)
{
	struct lg_thread *t = arg;

	for (unsigned i = t->index; i < opt.hold && !atomic_load(&lg_stop); i += opt.threads) {
		double ms;
		unsigned waits;

		/* --storm: SASL2 + Bind 2 with resumable stream management (and a FAST token). */
		if (lg_login(&lg_users[i], opt.storm ? M_SASL2 : M_CLASSIC, opt.storm == S_RESUME,
			     &ms, &waits, &lg_held[i]) < 0) {
			t->failures++;
			snprintf(t->last_error, sizeof(t->last_error), "login of %s failed: %s",
				 lg_users[i].name, strerror(errno));
			ERR_clear_error();
			continue;
		}
		t->logins++;
		atomic_store(&lg_waits_seen, waits);
		if (t->nsamples < t->cap)
			t->ready_ms[t->nsamples++] = ms;
	}
	return NULL;
}

/* --hold: ends every kept session cleanly (no session waits for resumption). */
static void lg_release_held(void)
{
	for (unsigned i = 0; i < opt.hold; i++) {
		struct lg_held *h = &lg_held[i];

		if (!h->ssl)
			continue;
		SSL_write(h->ssl, "</stream:stream>", 16);
		SSL_free(h->ssl);
		close(h->fd);
		h->ssl = NULL;
	}
}

/*
 * --storm: every held connection goes at once, as when a network drops:
 * RST (SO_LINGER 0), no </stream:stream> and no TLS close_notify, so the
 * server keeps the sessions for resumption. Returns how many went.
 */
static unsigned lg_drop_held(void)
{
	struct linger lin = { 1, 0 };
	unsigned n = 0;

	for (unsigned i = 0; i < opt.hold; i++) {
		struct lg_held *h = &lg_held[i];

		if (!h->ssl)
			continue;
		setsockopt(h->fd, SOL_SOCKET, SO_LINGER, &lin, sizeof(lin));
		/* Nothing is written; the flag keeps the TLS session resumable (lg_close()). */
		SSL_set_shutdown(h->ssl, SSL_SENT_SHUTDOWN);
		SSL_free(h->ssl);
		close(h->fd);
		h->ssl = NULL;
		h->fd = -1;
		n++;
	}
	return n;
}

static double lg_storm_t0;

/* --storm: thread t brings devices t, t + threads, ... back once each. */
static void *lg_storm_main(void *arg)
{
	struct lg_thread *t = arg;
	enum lg_mode mode = opt.storm == S_RESUME ? M_FAST : M_CLASSIC;

	for (unsigned i = t->index; i < opt.hold; i += opt.threads) {
		struct lg_user *u = &lg_users[i];
		double ms, now;
		unsigned waits;

		if (!u->previd[0])
			continue;	/* not held: nothing to come back to */
		if (lg_login(u, mode, false, &ms, &waits, &lg_held[i]) < 0) {
			t->failures++;
			snprintf(t->last_error, sizeof(t->last_error), "reconnect of %s failed: %s",
				 u->name, strerror(errno));
			ERR_clear_error();
			continue;
		}
		now = lg_now();
		t->logins++;
		t->resumed += lg_held[i].resumed;
		t->last_ready = now;
		atomic_store(&lg_waits_seen, waits);
		if (t->nsamples < t->cap) {
			t->back_ms[t->nsamples] = (now - lg_storm_t0) * 1e3;
			t->ready_ms[t->nsamples++] = ms;
		}
	}
	return NULL;
}

static int lg_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Tokens for fast: one SASL2 login with <request-token/> per user. */
static void lg_get_tokens(void)
{
	for (unsigned i = 0; i < opt.users; i++) {
		double ms;
		unsigned waits;

		if (lg_login(&lg_users[i], M_SASL2, true, &ms, &waits, NULL) < 0 ||
		    !lg_users[i].token[0])
			lg_die("could not get a FAST token for %s", lg_users[i].name);
	}
}

/* p50 / p99 of n sorted samples. */
static double lg_pct(const double *v, size_t n, double q)
{
	return n ? v[(size_t)((n - 1) * q)] : 0.0;
}

/*
 * --storm, after the hold: drops every connection, says so, and at the
 * next line on stdin brings every device back at once on the threads;
 * prints one result line. The sessions stay for lg_release_held().
 */
static void lg_cmd_storm(struct lg_thread *th)
{
	uint64_t back = 0, failures = 0, resumed = 0, expected = 0;
	double *ready, *backs, sum = 0, last = 0, elapsed;
	const char *err = NULL;
	unsigned dropped;
	size_t n = 0;
	char line[64];

	for (unsigned i = 0; i < opt.hold; i++)
		expected += lg_users[i].previd[0] != '\0';
	dropped = lg_drop_held();
	printf("{\"event\":\"dropped\",\"dropped\":%u}\n", dropped);
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return;
	ready = malloc((size_t)opt.hold * sizeof(*ready));
	backs = malloc((size_t)opt.hold * sizeof(*backs));
	if (!ready || !backs)
		lg_die("%s", "out of memory");
	atomic_store(&lg_resumed, 0);
	for (unsigned i = 0; i < opt.threads; i++) {
		th[i].logins = th[i].failures = th[i].resumed = 0;
		th[i].nsamples = 0;
		th[i].last_ready = 0;
		th[i].last_error[0] = '\0';
		th[i].back_ms = malloc(th[i].cap * sizeof(double));
		if (!th[i].back_ms)
			lg_die("%s", "out of memory");
	}
	lg_storm_t0 = lg_now();
	for (unsigned i = 0; i < opt.threads; i++)
		if (pthread_create(&th[i].tid, NULL, lg_storm_main, &th[i]))
			lg_die("%s", "thread setup failed");
	for (unsigned i = 0; i < opt.threads; i++) {
		pthread_join(th[i].tid, NULL);
		back += th[i].logins;
		failures += th[i].failures;
		resumed += th[i].resumed;
		if (th[i].last_ready > last)
			last = th[i].last_ready;
		for (size_t k = 0; k < th[i].nsamples; k++) {
			ready[n] = th[i].ready_ms[k];
			backs[n++] = th[i].back_ms[k];
			sum += th[i].ready_ms[k];
		}
		if (!err && th[i].last_error[0])
			err = th[i].last_error;
	}
	/* From the first reconnect to the last device ready. */
	elapsed = last > 0 ? last - lg_storm_t0 : lg_now() - lg_storm_t0;
	if (n) {
		qsort(ready, n, sizeof(*ready), lg_cmp);
		qsort(backs, n, sizeof(*backs), lg_cmp);
	}
	printf("{\"event\":\"result\",\"mode\":\"storm\",\"variant\":\"%s\",\"devices\":%u,"
	       "\"dropped\":%u,\"expected\":%llu,\"back\":%llu,\"failures\":%llu,"
	       "\"resumed\":%llu,\"new_sessions\":%llu,\"elapsed_s\":%.3f,"
	       "\"reconnects_per_s\":%.1f,\"threads\":%u,\"round_trips\":%u,"
	       "\"tls_resume\":%s,\"tls_resumed\":%lu,\"fast_mech\":\"%s\","
	       "\"ready_ms\":{\"mean\":%.3f,\"p50\":%.3f,\"p99\":%.3f},"
	       "\"back_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f}",
	       lg_storm_names[opt.storm], opt.hold, dropped, (unsigned long long)expected,
	       (unsigned long long)back, (unsigned long long)failures,
	       (unsigned long long)resumed, (unsigned long long)(back - resumed), elapsed,
	       back / (elapsed > 0 ? elapsed : 1e-9), opt.threads, atomic_load(&lg_waits_seen),
	       opt.tls_resume ? "true" : "false", atomic_load(&lg_resumed),
	       opt.storm == S_RESUME ? opt.fast_mech : "", n ? sum / n : 0.0,
	       lg_pct(ready, n, 0.5), lg_pct(ready, n, 0.99), lg_pct(backs, n, 0.5),
	       lg_pct(backs, n, 0.99), n ? backs[n - 1] : 0.0);
	if (err)
		printf(",\"last_error\":\"%s\"", err);
	printf("}\n");
	fflush(stdout);
	free(ready);
	free(backs);
	if (!fgets(line, sizeof(line), stdin))
		line[0] = '\0';
}

/*
 * --hold: logs every user in once on the threads, prints one result line,
 * keeps the sessions until a line or EOF on stdin, then ends them.
 */
static int lg_cmd_hold(struct lg_thread *th)
{
	uint64_t held = 0, failures = 0;
	double t0, elapsed, *all, sum = 0;
	const char *err = NULL;
	size_t n = 0;
	char line[64];

	/* Idle sessions keep no TLS read/write buffers on our side. */
	SSL_CTX_set_mode(lg_ctx, SSL_MODE_RELEASE_BUFFERS);
	lg_held = calloc(opt.hold, sizeof(*lg_held));
	all = malloc((size_t)opt.hold * sizeof(*all));
	if (!lg_held || !all)
		lg_die("%s", "out of memory");
	t0 = lg_now();
	for (unsigned i = 0; i < opt.threads; i++) {
		th[i].index = i;
		th[i].cap = opt.hold / opt.threads + 1;
		th[i].ready_ms = malloc(th[i].cap * sizeof(double));
		if (!th[i].ready_ms || pthread_create(&th[i].tid, NULL, lg_hold_main, &th[i]))
			lg_die("%s", "thread setup failed");
	}
	for (unsigned i = 0; i < opt.threads; i++) {
		pthread_join(th[i].tid, NULL);
		held += th[i].logins;
		failures += th[i].failures;
		for (size_t k = 0; k < th[i].nsamples; k++) {
			all[n++] = th[i].ready_ms[k];
			sum += th[i].ready_ms[k];
		}
		if (!err && th[i].last_error[0])
			err = th[i].last_error;
	}
	elapsed = lg_now() - t0;
	if (n)
		qsort(all, n, sizeof(*all), lg_cmp);
	printf("{\"event\":\"result\",\"mode\":\"hold\",\"held\":%llu,\"failures\":%llu,"
	       "\"elapsed_s\":%.3f,\"logins_per_s\":%.1f,\"threads\":%u,"
	       "\"round_trips\":%u,\"roster_presence\":%s,"
	       "\"ready_ms\":{\"mean\":%.3f,\"p50\":%.3f,\"p99\":%.3f}",
	       (unsigned long long)held, (unsigned long long)failures, elapsed,
	       held / (elapsed > 0 ? elapsed : 1e-9), opt.threads, atomic_load(&lg_waits_seen),
	       opt.roster_presence ? "true" : "false", n ? sum / n : 0.0,
	       n ? all[n / 2] : 0.0, n ? all[(size_t)((n - 1) * 0.99)] : 0.0);
	if (err)
		printf(",\"last_error\":\"%s\"", err);
	if (opt.storm)
		printf(",\"storm\":\"%s\"", lg_storm_names[opt.storm]);
	printf("}\n");
	fflush(stdout);
	free(all);
	if (!fgets(line, sizeof(line), stdin))
		line[0] = '\0';
	if (opt.storm && line[0])
		lg_cmd_storm(th);
	lg_release_held();
	return 0;
}

static void lg_usage(void)
{
	fputs("usage: logingen [--host H] --port P --mode classic|sasl2|fast [options]\n"
	      "  --domain D         XMPP domain (localhost)\n"
	      "  --password PW      of every user (bench)\n"
	      "  --prefix P         users P0 .. P(N-1) (u)\n"
	      "  --users N          distinct users (200)\n"
	      "  -t, --threads N    logins in parallel, one at a time each (4)\n"
	      "  -d, --duration S   measured seconds (3)\n"
	      "  --fast-mech M      HT-SHA-256-EXPR (default) or HT-SHA-256-NONE\n"
	      "  --no-pipeline      sasl2/fast: wait for the features before <authenticate/>\n"
	      "  --tls-resume       resume TLS sessions (tickets) from the previous login\n"
	      "  --sync             print a ready line, wait for a stdin line, then run\n"
	      "  --hold N           log users P<first>.. in once each (classic), keep them\n"
	      "                     open, print the result, close them at the next stdin line\n"
	      "  --first N          number of the first --hold user (0)\n"
	      "  --source-spread N  --hold on loopback: sessions per source address\n"
	      "                     127.0.0.2, 127.0.0.3, ... (16384; 0: one address)\n"
	      "  --roster-presence  after each login: roster get and initial presence\n"
	      "  --storm V          with --hold: SASL2 logins with resumable stream management;\n"
	      "                     at the next stdin line drop every connection abruptly, at\n"
	      "                     the one after bring all back (V resume: FAST + inline\n"
	      "                     <resume/>; relogin: classic login, new session), print\n"
	      "                     the result, close them at the line after that\n", stdout);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "host", required_argument, NULL, 'H' }, { "port", required_argument, NULL, 'p' },
		{ "mode", required_argument, NULL, 'm' }, { "domain", required_argument, NULL, 'D' },
		{ "password", required_argument, NULL, 'w' },
		{ "prefix", required_argument, NULL, 'x' }, { "users", required_argument, NULL, 'u' },
		{ "threads", required_argument, NULL, 't' },
		{ "duration", required_argument, NULL, 'd' },
		{ "fast-mech", required_argument, NULL, 'f' },
		{ "no-pipeline", no_argument, NULL, 'n' }, { "tls-resume", no_argument, NULL, 'r' },
		{ "sync", no_argument, NULL, 's' }, { "help", no_argument, NULL, 'h' },
		{ "hold", required_argument, NULL, 'o' }, { "first", required_argument, NULL, 'F' },
		{ "source-spread", required_argument, NULL, 'S' },
		{ "roster-presence", no_argument, NULL, 'P' },
		{ "storm", required_argument, NULL, 'R' },
		{ NULL, 0, NULL, 0 },
	};
	struct lg_thread *th;
	uint64_t logins = 0, failures = 0;
	double t0, elapsed, *all = NULL, sum = 0;
	size_t n = 0;
	char line[64];
	int o;

	while ((o = getopt_long(argc, argv, "t:d:h", lo, NULL)) != -1) {
		switch (o) {
		case 'H': opt.host = optarg; break;
		case 'p': opt.port = atoi(optarg); break;
		case 'D': opt.domain = optarg; break;
		case 'w': opt.password = optarg; break;
		case 'x': opt.prefix = optarg; break;
		case 'u': opt.users = (unsigned)atoi(optarg); break;
		case 't': opt.threads = (unsigned)atoi(optarg); break;
		case 'd': opt.duration = atof(optarg); break;
		case 'f': opt.fast_mech = optarg; break;
		case 'n': opt.pipeline = false; break;
		case 'r': opt.tls_resume = true; break;
		case 's': opt.sync = true; break;
		case 'o': opt.hold = (unsigned)atoi(optarg); break;
		case 'F': opt.first = (unsigned)atoi(optarg); break;
		case 'S': opt.source_spread = (unsigned)atoi(optarg); break;
		case 'P': opt.roster_presence = true; break;
		case 'R':
			if (strcmp(optarg, "resume") == 0)
				opt.storm = S_RESUME;
			else if (strcmp(optarg, "relogin") == 0)
				opt.storm = S_RELOGIN;
			else
				lg_die("unknown --storm %s (resume or relogin)", optarg);
			break;
		case 'm':
			for (o = 0; o < 3 && strcmp(optarg, lg_mode_names[o]); o++)
				;
			if (o == 3)
				lg_die("unknown mode %s", optarg);
			opt.mode = (enum lg_mode)o;
			break;
		case 'h': lg_usage(); return 0;
		default: lg_usage(); return 2;
		}
	}
	if (!opt.port || !opt.users || !opt.threads || opt.duration <= 0)
		lg_die("%s", "--port, --users, --threads and --duration must be positive");
	if (opt.storm && !opt.hold)
		lg_die("%s", "--storm needs --hold");
	if (opt.hold) {
		struct rlimit rl;

		if (opt.mode != M_CLASSIC)
			lg_die("%s", "--hold logs in with --mode classic");
		opt.users = opt.hold;
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)opt.hold + 64)
			lg_die("--hold %u needs more descriptors than RLIMIT_NOFILE %llu", opt.hold,
			       (unsigned long long)rl.rlim_cur);
	}
	signal(SIGPIPE, SIG_IGN);
	lg_ctx = SSL_CTX_new(TLS_client_method());
	if (!lg_ctx)
		lg_die("%s", "no SSL_CTX");
	SSL_CTX_set_min_proto_version(lg_ctx, TLS1_3_VERSION);
	SSL_CTX_set_verify(lg_ctx, SSL_VERIFY_NONE, NULL);	/* the bench's self-signed cert */
	SSL_CTX_set_alpn_protos(lg_ctx, (const unsigned char *)"\x0bxmpp-client", 12);
	SSL_CTX_set_session_cache_mode(lg_ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
	lg_users = calloc(opt.users, sizeof(*lg_users));
	th = calloc(opt.threads, sizeof(*th));
	if (!lg_users || !th)
		lg_die("%s", "out of memory");
	for (unsigned i = 0; i < opt.users; i++) {
		snprintf(lg_users[i].name, LG_USER_MAX, "%s%u", opt.prefix, opt.first + i);
		pthread_mutex_init(&lg_users[i].lock, NULL);
	}
	if (opt.mode == M_FAST)
		lg_get_tokens();
	printf("{\"event\":\"ready\",\"mode\":\"%s\",\"users\":%u}\n", lg_mode_names[opt.mode],
	       opt.users);
	fflush(stdout);
	if (opt.sync && !fgets(line, sizeof(line), stdin))
		return 0;
	if (opt.hold)
		return lg_cmd_hold(th);
	t0 = lg_now();
	for (unsigned i = 0; i < opt.threads; i++) {
		th[i].index = i;
		if (pthread_create(&th[i].tid, NULL, lg_thread_main, &th[i]))
			lg_die("%s", "pthread_create failed");
	}
	while (lg_now() - t0 < opt.duration)
		usleep(10000);
	atomic_store(&lg_stop, true);
	for (unsigned i = 0; i < opt.threads; i++)
		pthread_join(th[i].tid, NULL);
	elapsed = lg_now() - t0;
	for (unsigned i = 0; i < opt.threads; i++) {
		logins += th[i].logins;
		failures += th[i].failures;
		n += th[i].nsamples;
	}
	all = malloc((n ? n : 1) * sizeof(*all));
	n = 0;
	for (unsigned i = 0; i < opt.threads && all; i++)
		for (size_t k = 0; k < th[i].nsamples; k++) {
			all[n++] = th[i].ready_ms[k];
			sum += th[i].ready_ms[k];
		}
	if (all && n)
		qsort(all, n, sizeof(*all), lg_cmp);
	printf("{\"event\":\"result\",\"mode\":\"%s\",\"logins\":%llu,\"failures\":%llu,"
	       "\"elapsed_s\":%.3f,\"logins_per_s\":%.1f,\"round_trips\":%u,\"pipelined\":%s,"
	       "\"tls_resume\":%s,\"tls_resumed\":%lu,\"threads\":%u,\"users\":%u,\"fast_mech\":\"%s\","
	       "\"ready_ms\":{\"mean\":%.3f,\"p50\":%.3f,\"p99\":%.3f}",
	       lg_mode_names[opt.mode], (unsigned long long)logins, (unsigned long long)failures,
	       elapsed, logins / elapsed, atomic_load(&lg_waits_seen),
	       opt.mode != M_CLASSIC && opt.pipeline ? "true" : "false",
	       opt.tls_resume ? "true" : "false", atomic_load(&lg_resumed), opt.threads, opt.users,
	       opt.mode == M_FAST ? opt.fast_mech : "",
	       n ? sum / n : 0.0, n ? all[n / 2] : 0.0, n ? all[(size_t)((n - 1) * 0.99)] : 0.0);
	for (unsigned i = 0; i < opt.threads; i++)
		if (th[i].last_error[0]) {
			printf(",\"last_error\":\"%s\"", th[i].last_error);
			break;
		}
	printf("}\n");
	fflush(stdout);
	free(all);
	return 0;
}
