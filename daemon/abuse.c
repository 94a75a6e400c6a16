/* SPDX-License-Identifier: MIT */
/*
 * Defences against misbehaving peers: per-source admission, SASL brute
 * force limits, per-session inbound rate limits and the stanza deadline.
 * See abuse.h for the policy; this file is the mechanism.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "abuse.h"
#include "c2s.h"
#include "config.h"
#include "conn.h"
#include "log.h"
#include "server.h"
#include "tls.h"
#include "websocket.h"
#include "worker.h"

/* A source address (abuse_source_key) and what it is doing. */
struct abuse_source {
	uint8_t addr[16];
	bool used;			/* ever filled (a lookup may stop at unused slots) */
	uint32_t preauth;		/* connections open and not authenticated */
	uint32_t failures;		/* failed logins in the current window */
	uint32_t window_end;		/* s: the failure window restarts after this */
	uint32_t banned_until;		/* s */
};

/* An account name (abuse_user_key) and its failed logins. */
struct abuse_account {
	uint64_t key;			/* 0: never used */
	uint32_t failures;
	uint32_t window_end;
	uint32_t locked_until;
};

/* Reasons of refused connections, for the rate-limited log line. */
enum abuse_refusal {
	ABUSE_REFUSED_PREAUTH = 0,
	ABUSE_REFUSED_BANNED,
	ABUSE_REFUSED_NR,
};

static const char *const abuse_refusal_names[ABUSE_REFUSED_NR] = {
	[ABUSE_REFUSED_PREAUTH] = "preauth-per-ip",
	[ABUSE_REFUSED_BANNED] = "banned",
};

static struct {
	pthread_mutex_t lock;
	pthread_once_t once;
	uint64_t seed[2];
	struct abuse_source sources[ABUSE_SOURCES];
	struct abuse_account accounts[ABUSE_ACCOUNTS];
	/* Rate-limited logging of refusals and of a full table. */
	uint32_t refused_logged_at[ABUSE_REFUSED_NR];
	uint64_t refused_suppressed[ABUSE_REFUSED_NR];
	uint32_t full_logged_at;
	void (*ban_hook)(const struct in6_addr *addr, unsigned seconds);
} abuse = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.once = PTHREAD_ONCE_INIT,
};

static void abuse_seed(void)
{
	if (getrandom(abuse.seed, sizeof(abuse.seed), 0) != (ssize_t)sizeof(abuse.seed)) {
		/* No entropy: still spread keys; only predictability suffers. */
		abuse.seed[0] = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull;
		abuse.seed[1] = (uint64_t)getpid() * 0xc2b2ae3d27d4eb4full;
	}
}

/* Seconds of CLOCK_MONOTONIC (never 0, so 0 can mean "never"). */
static uint32_t abuse_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint32_t)ts.tv_sec + 1;
}

/* A 64-bit mix (splitmix64's finalizer) over seeded words. */
static uint64_t abuse_mix(uint64_t h)
{
	h ^= h >> 30;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 27;
	h *= 0x94d049bb133111ebull;
	h ^= h >> 31;
	return h;
}

/*
 * The seed, drawn once. Every reader of abuse.seed goes through here: read
 * before pthread_once, the first key of the process hashed with a zero
 * seed[0] (so its entry was looked for in the wrong place ever after),
 * and a second worker could read the seed while the first one wrote it.
 */
static const uint64_t *abuse_seeds(void)
{
	pthread_once(&abuse.once, abuse_seed);
	return abuse.seed;
}

static uint64_t abuse_hash(const void *data, size_t len)
{
	const uint64_t *seed = abuse_seeds();
	const uint8_t *p = data;
	uint64_t h = seed[0] ^ (len * 0x9e3779b97f4a7c15ull);

	while (len >= 8) {
		uint64_t w;

		memcpy(&w, p, 8);
		h = abuse_mix(h ^ w ^ seed[1]);
		p += 8;
		len -= 8;
	}
	if (len) {
		uint64_t w = 0;

		memcpy(&w, p, len);
		h = abuse_mix(h ^ w ^ seed[1] ^ (uint64_t)len << 56);
	}
	return abuse_mix(h);
}

void abuse_source_key(const struct in6_addr *addr, uint8_t out[16])
{
	memcpy(out, addr->s6_addr, 16);
	/* Native IPv6: the /64 is the unit one host controls. */
	if (!IN6_IS_ADDR_V4MAPPED(addr))
		memset(out + 8, 0, 8);
}

uint64_t abuse_user_key(const char *user)
{
	uint64_t k = abuse_hash(user, strlen(user));

	return k ? k : 1;
}

/* ---- The tables (callers hold abuse.lock) ---- */

static bool source_idle(const struct abuse_source *s, uint32_t now)
{
	return !s->preauth && now >= s->window_end && now >= s->banned_until;
}

static bool account_idle(const struct abuse_account *a, uint32_t now)
{
	return now >= a->window_end && now >= a->locked_until;
}

static void abuse_table_full(uint32_t now, const char *table)
{
	if (now - abuse.full_logged_at < 60)
		return;
	abuse.full_logged_at = now;
	log_warn("abuse.table_full", "table=%s msg=\"every slot is live; newcomers are not "
		 "tracked until one frees\"", table);
}

/*
 * The entry for a source key: the existing one, else (create) a slot
 * nobody uses or whose entry is idle, reset for this key. NULL when not
 * found and not created.
 */
static struct abuse_source *source_get(const uint8_t key[16], uint32_t now, bool create)
{
	size_t start = abuse_hash(key, 16) & (ABUSE_SOURCES - 1);
	struct abuse_source *spare = NULL;

	for (size_t i = 0; i < ABUSE_PROBE; i++) {
		struct abuse_source *s = &abuse.sources[(start + i) & (ABUSE_SOURCES - 1)];

		if (!s->used) {
			if (!spare)
				spare = s;
			break;	/* never used: the key is not further on */
		}
		if (memcmp(s->addr, key, 16) == 0)
			return s;
		if (!spare && source_idle(s, now))
			spare = s;
	}
	if (!create)
		return NULL;
	if (!spare) {
		abuse_table_full(now, "sources");
		return NULL;
	}
	memset(spare, 0, sizeof(*spare));
	memcpy(spare->addr, key, 16);
	spare->used = true;
	return spare;
}

static struct abuse_account *account_get(uint64_t key, uint32_t now, bool create)
{
	size_t start = abuse_mix(key ^ abuse_seeds()[0]) & (ABUSE_ACCOUNTS - 1);
	struct abuse_account *spare = NULL;

	for (size_t i = 0; i < ABUSE_PROBE; i++) {
		struct abuse_account *a = &abuse.accounts[(start + i) & (ABUSE_ACCOUNTS - 1)];

		if (!a->key) {
			if (!spare)
				spare = a;
			break;
		}
		if (a->key == key)
			return a;
		if (!spare && account_idle(a, now))
			spare = a;
	}
	if (!create)
		return NULL;
	if (!spare) {
		abuse_table_full(now, "accounts");
		return NULL;
	}
	memset(spare, 0, sizeof(*spare));
	spare->key = key;
	return spare;
}

unsigned abuse_source_preauth(const struct in6_addr *addr)
{
	struct abuse_source *s;
	uint8_t key[16];
	unsigned n;

	abuse_source_key(addr, key);
	pthread_mutex_lock(&abuse.lock);
	s = source_get(key, abuse_now_s(), false);
	n = s ? s->preauth : 0;
	pthread_mutex_unlock(&abuse.lock);
	return n;
}

unsigned abuse_account_failures(const char *user)
{
	uint64_t key = abuse_user_key(user);
	struct abuse_account *a;
	unsigned n;

	pthread_mutex_lock(&abuse.lock);
	a = account_get(key, abuse_now_s(), false);
	n = a ? a->failures : 0;
	pthread_mutex_unlock(&abuse.lock);
	return n;
}

void abuse_reset(void)
{
	pthread_mutex_lock(&abuse.lock);
	memset(abuse.sources, 0, sizeof(abuse.sources));
	memset(abuse.accounts, 0, sizeof(abuse.accounts));
	memset(abuse.refused_logged_at, 0, sizeof(abuse.refused_logged_at));
	memset(abuse.refused_suppressed, 0, sizeof(abuse.refused_suppressed));
	abuse.full_logged_at = 0;
	pthread_mutex_unlock(&abuse.lock);
}

/* ---- Bans ---- */

void auth_ban_set_hook(void (*hook)(const struct in6_addr *addr, unsigned seconds))
{
	pthread_mutex_lock(&abuse.lock);
	abuse.ban_hook = hook;
	pthread_mutex_unlock(&abuse.lock);
}

/* Bans under the lock; returns the hook to call once it is dropped. */
static void (*source_ban_locked(const struct in6_addr *addr, unsigned seconds,
				uint32_t now))(const struct in6_addr *, unsigned)
{
	uint8_t key[16];
	struct abuse_source *s;

	abuse_source_key(addr, key);
	s = source_get(key, now, true);
	if (s && s->banned_until < now + seconds)
		s->banned_until = now + seconds;
	return abuse.ban_hook;
}

static const char *abuse_addr_str(const struct in6_addr *a, char *buf, size_t size)
{
	if (IN6_IS_ADDR_V4MAPPED(a))
		return inet_ntop(AF_INET, &a->s6_addr[12], buf, (socklen_t)size);
	return inet_ntop(AF_INET6, a, buf, (socklen_t)size);
}

void auth_ban_source(const struct in6_addr *addr, unsigned seconds)
{
	void (*hook)(const struct in6_addr *, unsigned);
	char text[INET6_ADDRSTRLEN];

	pthread_mutex_lock(&abuse.lock);
	hook = source_ban_locked(addr, seconds, abuse_now_s());
	pthread_mutex_unlock(&abuse.lock);
	log_warn("auth.ban", "source=%s seconds=%u", abuse_addr_str(addr, text, sizeof(text)),
		 seconds);
	/* The XDP/TC guard's ban map (a later issue) is fed from here. */
	if (hook)
		hook(addr, seconds);
}

bool abuse_source_banned(const struct in6_addr *addr)
{
	uint32_t now = abuse_now_s();
	struct abuse_source *s;
	uint8_t key[16];
	bool banned;

	abuse_source_key(addr, key);
	pthread_mutex_lock(&abuse.lock);
	s = source_get(key, now, false);
	banned = s && now < s->banned_until;
	pthread_mutex_unlock(&abuse.lock);
	return banned;
}

/* ---- Accept ---- */

/* The peer of a fresh socket as a v4-mapped or native IPv6 address. */
static int abuse_peer(int fd, struct in6_addr *out)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
		return -errno;
	memset(out, 0, sizeof(*out));
	if (ss.ss_family == AF_INET) {
		out->s6_addr[10] = 0xff;
		out->s6_addr[11] = 0xff;
		memcpy(&out->s6_addr[12], &((struct sockaddr_in *)&ss)->sin_addr, 4);
		return 0;
	}
	if (ss.ss_family == AF_INET6) {
		*out = ((struct sockaddr_in6 *)&ss)->sin6_addr;
		return 0;
	}
	return -EAFNOSUPPORT;
}

static bool abuse_listener_tracked(const struct listener *l)
{
	return l->kind == LISTENER_C2S || l->kind == LISTENER_C2S_TLS ||
	       l->kind == LISTENER_HTTP || l->kind == LISTENER_HTTPS;
}

/*
 * The refusal as the listener's protocol can carry it, best effort (one
 * non-blocking write into an empty socket buffer). What the peer may have
 * sent already is read first: unread input would turn our close into a
 * reset that discards the answer.
 */
static void abuse_answer_refusal(const struct worker *w, const struct listener *l, int fd,
				 enum abuse_refusal why)
{
	const char *text = why == ABUSE_REFUSED_BANNED ?
		"too many failed logins from your address; try again later" :
		"too many unauthenticated connections from your address";
	char buf[1024];
	int n;

	while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
	if (l->kind == LISTENER_C2S) {
		/* RFC 6120 4.9.1.2: a stream header first, then the error. */
		n = snprintf(buf, sizeof(buf), "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
			     "xmlns:stream='http://etherx.jabber.org/streams' from='%s' version='1.0'>"
			     "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
			     "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>%s</text>"
			     "</stream:error></stream:stream>", w->srv->cfg->domain, text);
	} else if (l->kind == LISTENER_HTTP) {
		n = snprintf(buf, sizeof(buf), "HTTP/1.1 429 Too Many Requests\r\nContent-Type: "
			     "text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s\n",
			     strlen(text) + 1, text);
	} else {
		return;	/* TLS ports: nothing can be said before a handshake */
	}
	if (n > 0 && (size_t)n < sizeof(buf) && send(fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) > 0)
		shutdown(fd, SHUT_WR);
}

/* One log line per second per reason at most; the others are counted. */
static void abuse_log_refusal(enum abuse_refusal why, const struct in6_addr *peer,
			      const struct listener *l, uint32_t now)
{
	char text[INET6_ADDRSTRLEN];
	uint64_t suppressed;

	pthread_mutex_lock(&abuse.lock);
	if (abuse.refused_logged_at[why] == now) {
		abuse.refused_suppressed[why]++;
		pthread_mutex_unlock(&abuse.lock);
		return;
	}
	abuse.refused_logged_at[why] = now;
	suppressed = abuse.refused_suppressed[why];
	abuse.refused_suppressed[why] = 0;
	pthread_mutex_unlock(&abuse.lock);
	log_warn("conn.refused", "listener=%s reason=%s source=%s suppressed=%llu", l->addr,
		 abuse_refusal_names[why], abuse_addr_str(peer, text, sizeof(text)),
		 (unsigned long long)suppressed);
}

bool abuse_accept_refused(struct worker *w, const struct listener *l, int fd)
{
	uint32_t limit = w->srv->cfg->max_preauth_per_ip, now = abuse_now_s();
	enum abuse_refusal why = ABUSE_REFUSED_NR;
	struct abuse_source *s;
	struct in6_addr peer;
	uint8_t key[16];

	if (!abuse_listener_tracked(l) || abuse_peer(fd, &peer) < 0)
		return false;
	abuse_source_key(&peer, key);
	pthread_mutex_lock(&abuse.lock);
	s = source_get(key, now, false);
	if (s && now < s->banned_until)
		why = ABUSE_REFUSED_BANNED;
	else if (s && limit && s->preauth >= limit)
		why = ABUSE_REFUSED_PREAUTH;
	pthread_mutex_unlock(&abuse.lock);
	if (why == ABUSE_REFUSED_NR)
		return false;
	METRIC_INC(w->metrics.guard_drops[why == ABUSE_REFUSED_BANNED ? METRICS_GUARD_BANNED
								       : METRICS_GUARD_PREAUTH]);
	abuse_log_refusal(why, &peer, l, now);
	abuse_answer_refusal(w, l, fd, why);
	close(fd);
	return true;
}

void abuse_conn_opened(struct conn *c)
{
	uint32_t now = abuse_now_s();
	struct abuse_source *s;
	uint8_t key[16];

	/* Federation and components authenticate their own way (s2s.c). */
	if (c->kind != CONN_C2S && c->kind != CONN_HTTP)
		return;
	abuse_source_key(&c->peer.sin6_addr, key);
	pthread_mutex_lock(&abuse.lock);
	s = source_get(key, now, true);
	if (s) {
		s->preauth++;
		c->abuse_counted = true;
	}
	pthread_mutex_unlock(&abuse.lock);
}

void abuse_conn_done(struct conn *c)
{
	struct abuse_source *s;
	uint8_t key[16];

	if (!c->abuse_counted)
		return;
	c->abuse_counted = false;
	abuse_source_key(&c->peer.sin6_addr, key);
	pthread_mutex_lock(&abuse.lock);
	/* Gone only if a full table let it be reused (then it was never idle). */
	s = source_get(key, abuse_now_s(), false);
	if (s && s->preauth)
		s->preauth--;
	pthread_mutex_unlock(&abuse.lock);
}

/* ---- SASL brute force ---- */

bool abuse_auth_begin(struct conn *c, const char *user)
{
	uint32_t now = abuse_now_s();
	bool banned = false, locked = false;
	struct abuse_account *a;
	struct abuse_source *s;
	uint8_t key[16];

	c->auth_user_key = abuse_user_key(user);
	abuse_source_key(&c->peer.sin6_addr, key);
	pthread_mutex_lock(&abuse.lock);
	s = source_get(key, now, false);
	banned = s && now < s->banned_until;
	a = account_get(c->auth_user_key, now, false);
	locked = a && now < a->locked_until;
	pthread_mutex_unlock(&abuse.lock);
	if (banned || locked) {
		log_info("auth.refused", "conn=%llu reason=%s", (unsigned long long)c->id,
			 banned ? "source-banned" : "account-locked");
		METRIC_INC(c->w->metrics.guard_drops[METRICS_GUARD_AUTH]);	/* metrics.h */
	}
	return banned || locked;
}

/* Counts one failure in a fixed window; true when it reached `limit`. */
static bool abuse_count(uint32_t *failures, uint32_t *window_end, uint32_t now, uint32_t window,
			uint32_t limit)
{
	if (now >= *window_end) {
		*failures = 0;
		*window_end = now + window;
	}
	if (*failures < UINT32_MAX)
		(*failures)++;
	return limit && *failures >= limit;
}

void abuse_auth_failed(struct conn *c, const char *user, const char *condition)
{
	uint64_t user_key = c->auth_user_key ? c->auth_user_key : user ? abuse_user_key(user) : 0;
	const struct config *cfg = c->w->srv->cfg;
	uint32_t now = abuse_now_s(), lock = cfg->auth_lockout_time;
	void (*hook)(const struct in6_addr *, unsigned) = NULL;
	bool lock_account = false, ban = false;
	uint32_t acc_failures = 0, src_failures = 0;
	struct abuse_account *a;
	struct abuse_source *s;
	uint8_t key[16];

	c->auth_user_key = 0;
	/* Only wrong credentials are guesses; malformed exchanges are bounded per stream. */
	if (strcmp(condition, "not-authorized") != 0)
		return;
	abuse_source_key(&c->peer.sin6_addr, key);
	pthread_mutex_lock(&abuse.lock);
	s = source_get(key, now, true);
	if (s && now >= s->banned_until &&
	    abuse_count(&s->failures, &s->window_end, now, cfg->auth_failure_window,
			cfg->max_auth_failures_source)) {
		src_failures = s->failures;
		s->failures = 0;
		ban = true;
		hook = source_ban_locked(&c->peer.sin6_addr, lock, now);
	}
	a = user_key ? account_get(user_key, now, true) : NULL;
	if (a && now >= a->locked_until &&
	    abuse_count(&a->failures, &a->window_end, now, cfg->auth_failure_window,
			cfg->max_auth_failures_account)) {
		acc_failures = a->failures;
		a->failures = 0;
		a->locked_until = now + lock;
		lock_account = true;
	}
	pthread_mutex_unlock(&abuse.lock);

	if (lock_account)
		log_warn("auth.lockout", "conn=%llu failures=%u seconds=%u msg=\"the account name "
			 "is locked after failed logins\"", (unsigned long long)c->id, acc_failures,
			 lock);
	if (ban) {
		char text[INET6_ADDRSTRLEN];

		log_warn("auth.ban", "source=%s seconds=%u failures=%u",
			 abuse_addr_str(&c->peer.sin6_addr, text, sizeof(text)), lock, src_failures);
		if (hook)
			hook(&c->peer.sin6_addr, lock);
	}
}

void abuse_auth_succeeded(struct conn *c)
{
	uint64_t user_key = c->auth_user_key;
	struct abuse_account *a;

	c->auth_user_key = 0;
	abuse_conn_done(c);
	if (!user_key)
		return;
	pthread_mutex_lock(&abuse.lock);
	a = account_get(user_key, abuse_now_s(), false);
	if (a)
		a->failures = 0;
	pthread_mutex_unlock(&abuse.lock);
}

/* ---- Inbound rate ---- */

bool abuse_gcra(uint64_t *tat, uint64_t now_us, uint64_t cost, uint32_t rate, uint32_t burst)
{
	uint64_t t, cost_us, tau;

	if (!rate)
		return true;
	cost_us = cost * 1000000ull / rate;
	tau = (uint64_t)burst * 1000000ull / rate;
	t = *tat > now_us ? *tat : now_us;
	if (t + cost_us - now_us > tau)
		return false;
	*tat = t + cost_us;
	return true;
}

/* Authenticated client streams only: s2s, components and HTTP have their own bounds. */
static bool abuse_rated(const struct conn *c)
{
	return c->kind == CONN_C2S && c->authenticated && !c->closing;
}

static bool abuse_rate_exceeded(struct conn *c, const char *what, const char *key)
{
	char text[96];

	log_warn("abuse.rate_limit", "conn=%llu jid=%s kind=%s", (unsigned long long)c->id,
		 c->jid ? c->jid : "-", what);
	METRIC_INC(c->w->metrics.guard_drops[METRICS_GUARD_RATE]);	/* metrics.h */
	snprintf(text, sizeof(text), "inbound rate limit exceeded (%s)", key);
	c2s_stream_error(c, "policy-violation", text);
	return false;
}

bool abuse_stanza_in(struct conn *c)
{
	const struct config *cfg = c->w->srv->cfg;

	c->stanza_start_ms = 0;
	if (!abuse_rated(c))
		return true;
	if (abuse_gcra(&c->rate_tat_stanzas, loop_now_ms(c->w->loop) * 1000, 1,
		       cfg->session_stanza_rate, cfg->session_stanza_burst))
		return true;
	return abuse_rate_exceeded(c, "stanzas", "session_stanza_rate");
}

bool abuse_bytes_in(struct conn *c, size_t len)
{
	const struct config *cfg = c->w->srv->cfg;

	if (!abuse_rated(c))
		return true;
	if (abuse_gcra(&c->rate_tat_bytes, loop_now_ms(c->w->loop) * 1000, len,
		       cfg->session_byte_rate, cfg->session_byte_burst))
		return true;
	return abuse_rate_exceeded(c, "bytes", "session_byte_rate");
}

/* ---- The stanza deadline ---- */

/*
 * An unfinished stanza: the XML parser holds part of one, the WebSocket
 * layer part of a message, or userspace TLS part of a record. Input
 * paused by the server (a storage step) is not the peer's doing.
 */
static bool abuse_partial(const struct conn *c)
{
	if (c->input_paused)
		return false;
	if (c->xs.parser)
		return true;
	if (c->websocket && ws_input_partial(c))
		return true;
	return c->tls && !tls_conn_in_kernel(c->tls) && tls_conn_rx_partial(c->tls) > 0;
}

static uint64_t abuse_stanza_deadline_ms(const struct conn *c)
{
	return c->stanza_start_ms + (uint64_t)c->w->srv->cfg->stanza_timeout * 1000;
}

static void abuse_stanza_timeout(struct conn *c)
{
	log_info("stream.timeout", "conn=%llu reason=stanza-incomplete elapsed_ms=%llu",
		 (unsigned long long)c->id,
		 (unsigned long long)(loop_now_ms(c->w->loop) - c->stanza_start_ms));
	c->close_reason = CONN_CLOSE_TIMEOUT;
	c2s_stream_error(c, "policy-violation", "a stanza took too long to arrive (stanza_timeout)");
}

void abuse_rearm(struct conn *c)
{
	uint64_t now, due;

	if (!c->stanza_start_ms || c->closing || !c->w->srv->cfg->stanza_timeout)
		return;
	now = loop_now_ms(c->w->loop);
	due = abuse_stanza_deadline_ms(c);
	if (loop_timer_armed(&c->timer) && c->timer.expires_ms <= due)
		return;
	conn_set_deadline(c, due > now ? due - now : 0);
}

void abuse_after_input(struct conn *c)
{
	if (!abuse_rated(c) || !c->w->srv->cfg->stanza_timeout)
		return;
	if (!abuse_partial(c)) {
		c->stanza_start_ms = 0;
		return;
	}
	if (!c->stanza_start_ms) {
		c->stanza_start_ms = loop_now_ms(c->w->loop) | 1;
		abuse_rearm(c);
		return;
	}
	/* A slow sender is caught by its own bytes, before the timer ticks. */
	if (loop_now_ms(c->w->loop) >= abuse_stanza_deadline_ms(c))
		abuse_stanza_timeout(c);
}

bool abuse_stanza_overdue(struct conn *c)
{
	if (!c->stanza_start_ms || !abuse_rated(c) || !c->w->srv->cfg->stanza_timeout)
		return false;
	if (!abuse_partial(c)) {
		c->stanza_start_ms = 0;
		return false;
	}
	if (loop_now_ms(c->w->loop) < abuse_stanza_deadline_ms(c))
		return false;
	abuse_stanza_timeout(c);
	return true;
}
