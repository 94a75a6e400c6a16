/* SPDX-License-Identifier: MIT */
/*
 * Cluster mode on Redis (see cluster.h and docs/clustering.md, section
 * "Redis: membership, registry, inter-node stanzas").
 *
 * Keys, all under PREFIX = "stanzad:DOMAIN:" so that clusters of several
 * domains can share one Redis:
 *   nodes              hash  node name -> JSON (workers, started, pid, version)
 *   alive:NAME         string, this process's token, PX = ttl, refreshed every ttl/3
 *   reap:NAME          string, who cleans up after dead NAME (SET NX, PX 2*ttl)
 *   sess:BARE          hash  resource -> "NODE WORKER PRIORITY AVAILABLE FLAGS"
 *   nodesess:NAME      set   full JIDs NAME registered (counting, reaping)
 *   events             channel: "set FULL VALUE", "del FULL NODE", "reset NODE"
 *   in:NAME:K          stream of stanzas for NAME's worker K (consumer group "g")
 *   left:NAME          string, PX 2*ttl: NAME stopped on purpose (no crash)
 *   owner:services     string, PX ttl: the node that runs the services (a lease)
 *
 * Everything that reads or writes several keys at once is a Lua script, so
 * that a node dying in the middle leaves nothing half done. Worker 0 runs
 * all of it; each worker reads its own stream. The state below is worker
 * 0's except where marked.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <openssl/crypto.h>

#include "arena.h"
#include "c2s.h"
#include "cluster.h"
#include "cluster_redis.h"
#include "cluster_util.h"
#include "config.h"
#include "durable.h"
#include "jid.h"
#include "log.h"
#include "loop.h"
#include "mailbox.h"
#include "presence.h"
#include "muc.h"
#include "provisioning.h"
#include "pubsub.h"
#include "roster.h"
#include "router.h"
#include "server.h"
#include "service.h"
#include "session.h"
#include "sm.h"
#include "stanza.h"
#include "storage.h"
#include "stored_xml.h"
#include "strbuf.h"
#include "worker.h"
#include "xml.h"

#ifndef STANZAD_VERSION
#define STANZAD_VERSION "0.1.0"
#endif

#define CLUSTER_TICK_MS		100	/* the timer: reconnects, heartbeats */
#define CLUSTER_MAX_NODES	64	/* nodes shown and tracked */
#define CLUSTER_PREFIX_MAX	(JID_PART_MAX + 16)
#define CLUSTER_KEY_MAX		(CLUSTER_PREFIX_MAX + JID_MAX + 16)
/* XADD MAXLEN ~ of a stream: a node down for long loses the oldest entries. */
#define CLUSTER_STREAM_MAXLEN	"1000000"
#define CLUSTER_READ_COUNT	128	/* entries per XREADGROUP */
#define CLUSTER_READ_BLOCK_MS	2000
#define CLUSTER_REAP_COUNT	10000	/* entries of a dead node's stream per round */
#define CLUSTER_LAG_SAMPLES	64	/* XADD-to-delivery times kept */
#define CLUSTER_MAX_TARGETS	8	/* nodes one bare-JID stanza may go to */
#define CLUSTER_GROUP		"g"
#define CLUSTER_DEAD_KEEP_MS	600000	/* a reaped node stays in the status this long */
#define CLUSTER_RETRY_MS	1000	/* a failed join or read (Redis loading its data) */
#define CLUSTER_ENTRY_ID_MAX	48	/* a stream entry id: "MS-SEQ", two 64-bit numbers */
#define CLUSTER_OWN_FIND	64	/* resources of one account looked through */

enum cluster_conn_id {
	CL_CONN_REG = 0,	/* worker 0: membership and registry commands, XADD, reaping */
	CL_CONN_EVENTS,		/* worker 0: subscribed to the events channel */
	CL_CONN_IN,		/* every worker: blocked in XREADGROUP on its stream */
	CL_NCONNS,
};

/*
 * A worker's inbound stream PREFIX in:NODE:K and the connection blocked
 * reading it (a blocked connection can do nothing else). Everything but
 * the counters is the worker's own; the counters are read by the status
 * on worker 0, hence atomic.
 */
struct cluster_inbound {
	struct worker *w;
	struct credis c;
	int tfd;			/* CLUSTER_TICK_MS timerfd: reconnects, retries */
	bool reading;			/* an XREADGROUP is out */
	bool backlog;			/* reading our own pending entries first (id 0) */
	bool settling;			/* a batch waits for its writes to commit (in_got) */
	uint64_t retry_ms;		/* a read that failed is tried again then */
	char key[CLUSTER_KEY_MAX];
	_Atomic uint64_t received;
	_Atomic uint64_t lag_ms[CLUSTER_LAG_SAMPLES];	/* XADD-to-routing times */
	_Atomic unsigned lag_n, lag_next;
};

struct cluster_node {
	char name[CLUSTER_NODE_NAME_MAX + 1];
	bool alive;
	long long sessions;
	long long pending;		/* entries of its stream delivered, not acknowledged */
	long long unread;		/* entries not yet delivered (XINFO GROUPS lag) */
	long long oldest_ms;		/* age of the oldest pending entry */
	uint64_t dead_since_ms;		/* wall clock; 0 while alive */
};

struct cluster {
	struct server *srv;
	struct worker *w0;
	struct cluster_uri uri;
	char uri_shown[CLUSTER_URI_MAX];	/* password masked */
	char node[CLUSTER_NODE_NAME_MAX + 1];
	char prefix[CLUSTER_PREFIX_MAX];
	char token[48];			/* this process: another one with our name differs */
	char info[256];			/* our value in `nodes` */
	uint32_t ttl;
	struct credis conns[CL_CONN_IN];	/* worker 0's */
	struct cluster_inbound in[SERVER_MAX_WORKERS];
	unsigned nworkers;

	bool joining, joined;		/* the join script ran on this registry connection */
	atomic_bool leaving;
	uint64_t next_beat_ms;
	bool beat_in_flight;
	uint64_t join_retry_ms;		/* a failed join is tried again then (loop time) */
	bool name_taken_logged;
	bool claimed, ever_joined;	/* the name claimed at startup; joined since */

	/* Our own sessions (full JID -> value), re-registered after every outage. */
	struct cluster_table *own;

	/* The other nodes' sessions: written by worker 0, read by every worker. */
	pthread_rwlock_t lock;
	struct cluster_table *replica;
	atomic_bool routable;		/* connected and joined: stanzas can go out */
	bool loading;			/* events held until the dump answers */
	struct strbuf held;		/* those events, NUL-separated */

	/* What the last heartbeat saw. */
	struct cluster_node nodes[CLUSTER_MAX_NODES];
	unsigned nnodes;
	uint64_t beat_wall_ms;

	/* Inter-node stanzas sent and taken over (worker 0); received: per inbound. */
	uint64_t sent, reaped_entries, send_failed;
};

static struct cluster *cl;

/* A storage barrier: writes nothing, completes once what was before it committed. */
static int cluster_noop(struct storage *st, struct storage_req *req)
{
	return 0;
}

static uint64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

bool cluster_enabled(void)
{
	return cl != NULL;
}

/* ---- Scripts ---- */

/*
 * drop(p, n): forgets what node n registered: its resources (only those
 * still naming n: a resource may have been bound again elsewhere), its
 * set, and tells every node's replica. Returns how many there were, and
 * the full JIDs of those that were available (their contacts are told).
 */
#define LUA_DROP \
	"local function drop(p, n)\n" \
	"  local fulls, avail = redis.call('SMEMBERS', p..'nodesess:'..n), {}\n" \
	"  for _, f in ipairs(fulls) do\n" \
	"    local s = string.find(f, '/', 1, true)\n" \
	"    if s then\n" \
	"      local k = p..'sess:'..string.sub(f, 1, s - 1)\n" \
	"      local r = string.sub(f, s + 1)\n" \
	"      local v = redis.call('HGET', k, r)\n" \
	"      if v and string.sub(v, 1, #n + 1) == n..' ' then\n" \
	"        redis.call('HDEL', k, r)\n" \
	"        if string.match(v, '^%S+ %d+ %-?%d+ (%d)') == '1' then avail[#avail + 1] = f end\n" \
	"      end\n" \
	"    end\n" \
	"  end\n" \
	"  redis.call('DEL', p..'nodesess:'..n)\n" \
	"  redis.call('PUBLISH', p..'events', 'reset '..n)\n" \
	"  return #fulls, avail\n" \
	"end\n"

/* workers(p, n): how many inbound streams node n has (its `nodes` entry's "workers"). */
#define LUA_WORKERS \
	"local function workers(p, n)\n" \
	"  local v = redis.call('HGET', p..'nodes', n)\n" \
	"  local ok, j = pcall(cjson.decode, v or '')\n" \
	"  if ok and type(j) == 'table' and tonumber(j.workers) then return j.workers end\n" \
	"  return 1\n" \
	"end\n"

/* ARGV: prefix, name, token, ttl, info. The name must be ours or free. */
static const char lua_join[] =
	LUA_DROP
	"local p, n, tok = ARGV[1], ARGV[2], ARGV[3]\n"
	"local cur = redis.call('GET', p..'alive:'..n)\n"
	"if cur and cur ~= tok then return redis.error_reply('NAMETAKEN') end\n"
	"redis.call('SET', p..'alive:'..n, tok, 'PX', ARGV[4])\n"
	"redis.call('HSET', p..'nodes', n, ARGV[5])\n"
	"redis.call('DEL', p..'reap:'..n, p..'left:'..n)\n"
	"local dropped = drop(p, n)\n"
	"return dropped\n";

/*
 * ARGV: prefix, name, token, ttl. Refreshes our heartbeat, then answers
 * {rejoin, name, alive, sessions, pending, unread, oldest_ms, ...}:
 * rejoin = 1 when our entry in `nodes` is gone (we were reaped, or Redis
 * lost its data), so that we register everything again.
 */
static const char lua_beat[] =
	"local p, n, tok = ARGV[1], ARGV[2], ARGV[3]\n"
	"local cur = redis.call('GET', p..'alive:'..n)\n"
	"if cur and cur ~= tok then return redis.error_reply('NAMETAKEN') end\n"
	"redis.call('SET', p..'alive:'..n, tok, 'PX', ARGV[4])\n"
	"local out = {0}\n"
	"if redis.call('HEXISTS', p..'nodes', n) == 0 then out[1] = 1 end\n"
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	LUA_WORKERS
	"for _, m in ipairs(redis.call('HKEYS', p..'nodes')) do\n"
	"  local pend, age, unread = 0, 0, 0\n"
	"  for k = 0, workers(p, m) - 1 do\n"
	"    local key = p..'in:'..m..':'..k\n"
	"    local ok, x = pcall(redis.call, 'XPENDING', key, 'g')\n"
	"    if ok and type(x) == 'table' and tonumber(x[1]) and x[1] > 0 then\n"
	"      pend = pend + x[1]\n"
	"      local ms = tonumber(string.match(x[2], '^(%d+)'))\n"
	"      if ms and now - ms > age then age = now - ms end\n"
	"    end\n"
	"    local ok2, gs = pcall(redis.call, 'XINFO', 'GROUPS', key)\n"
	"    if ok2 and type(gs) == 'table' and gs[1] then\n"
	"      local g = gs[1]\n"
	"      for i = 1, #g, 2 do\n"
	"        if g[i] == 'lag' and tonumber(g[i + 1]) then unread = unread + g[i + 1] end\n"
	"      end\n"
	"    end\n"
	"  end\n"
	"  out[#out + 1] = m\n"
	"  local alive = redis.call('EXISTS', p..'alive:'..m)\n"
	"  if alive == 0 and redis.call('EXISTS', p..'left:'..m) == 1 then alive = 2 end\n"
	"  out[#out + 1] = alive\n"
	"  out[#out + 1] = redis.call('SCARD', p..'nodesess:'..m)\n"
	"  out[#out + 1] = pend\n"
	"  out[#out + 1] = unread\n"
	"  out[#out + 1] = age\n"
	"end\n"
	"return out\n";

/*
 * ARGV: prefix, dead node, our name, 2*ttl. The survivor that wins the
 * reap lock removes the dead node's registrations and its entry, and
 * answers {sessions removed, its inbound streams, its available full
 * JIDs}; -1 when it is alive
 * again or another survivor reaps it.
 */
static const char lua_reap[] =
	LUA_DROP
	LUA_WORKERS
	"local p, d = ARGV[1], ARGV[2]\n"
	"if redis.call('EXISTS', p..'alive:'..d) == 1 then return -1 end\n"
	"if not redis.call('SET', p..'reap:'..d, ARGV[3], 'NX', 'PX', ARGV[4]) then return -1 end\n"
	"local nw = workers(p, d)\n"
	"local n, avail = drop(p, d)\n"
	"redis.call('HDEL', p..'nodes', d)\n"
	"return {n, nw, avail}\n";

/*
 * ARGV: prefix, name, token, 2*ttl. Leaving: our sessions go, our stream
 * waits for a reaper, and `left:NAME` tells the others it was no crash.
 */
static const char lua_leave[] =
	LUA_DROP
	"local p, n = ARGV[1], ARGV[2]\n"
	"if redis.call('GET', p..'alive:'..n) ~= ARGV[3] then return 0 end\n"
	"drop(p, n)\n"
	"redis.call('DEL', p..'alive:'..n)\n"
	"redis.call('SET', p..'left:'..n, '1', 'PX', ARGV[4])\n"
	"return 1\n";

/*
 * ARGV: prefix, name, full JID, value, first. Registers a resource of
 * ours: a bind (first = 1) takes the full JID whoever had it (that node
 * ends its session: replica_conflict); an update only while the entry is
 * missing or ours, so that a session replaced elsewhere does not take
 * the name back. Answers "" when written, else the value that stays.
 */
static const char lua_register[] =
	"local p, n, f, v = ARGV[1], ARGV[2], ARGV[3], ARGV[4]\n"
	"local s = string.find(f, '/', 1, true)\n"
	"local k = p..'sess:'..string.sub(f, 1, s - 1)\n"
	"local r = string.sub(f, s + 1)\n"
	"if ARGV[5] ~= '1' then\n"
	"  local cur = redis.call('HGET', k, r)\n"
	"  if cur and string.sub(cur, 1, #n + 1) ~= n..' ' then return cur end\n"
	"end\n"
	"redis.call('HSET', k, r, v)\n"
	"redis.call('SADD', p..'nodesess:'..n, f)\n"
	"redis.call('PUBLISH', p..'events', 'set '..f..' '..v)\n"
	"return ''\n";

/* ARGV: prefix, name, full JID. Only while the resource is still ours. */
static const char lua_unregister[] =
	"local p, n, f = ARGV[1], ARGV[2], ARGV[3]\n"
	"local s = string.find(f, '/', 1, true)\n"
	"local k = p..'sess:'..string.sub(f, 1, s - 1)\n"
	"local r = string.sub(f, s + 1)\n"
	"local v = redis.call('HGET', k, r)\n"
	"if v and string.sub(v, 1, #n + 1) == n..' ' then redis.call('HDEL', k, r) end\n"
	"redis.call('SREM', p..'nodesess:'..n, f)\n"
	"redis.call('PUBLISH', p..'events', 'del '..f..' '..n)\n"
	"return 1\n";

/* ARGV: prefix. Every registered resource: {full, value, ...} (SCAN, not KEYS). */
static const char lua_dump[] =
	"local p = ARGV[1]\n"
	"local out, cur = {}, '0'\n"
	"repeat\n"
	"  local r = redis.call('SCAN', cur, 'MATCH', p..'sess:*', 'COUNT', 1000)\n"
	"  cur = r[1]\n"
	"  for _, k in ipairs(r[2]) do\n"
	"    local bare = string.sub(k, #p + 6)\n"
	"    local h = redis.call('HGETALL', k)\n"
	"    for i = 1, #h, 2 do out[#out + 1] = bare..'/'..h[i]; out[#out + 1] = h[i + 1] end\n"
	"  end\n"
	"until cur == '0'\n"
	"return out\n";

/* ---- Helpers ---- */

static void key_of(char *buf, size_t size, const char *what, const char *name)
{
	snprintf(buf, size, "%s%s%s", cl->prefix, what, name);
}

static void stream_of(char *buf, size_t size, const char *node, unsigned worker)
{
	snprintf(buf, size, "%sin:%s:%u", cl->prefix, node, worker);
}

static bool reply_is_error(const redisReply *r, const char *code)
{
	return r && r->type == REDIS_REPLY_ERROR &&
	       (!code || strncmp(r->str, code, strlen(code)) == 0);
}

static void log_reply_error(const char *event, const redisReply *r)
{
	char msg[200];

	log_warn(event, "msg=%s", r ? log_sanitize(msg, sizeof(msg), r->str, r->len)
				    : "\"connection lost\"");
}

static struct credis *conn_reg(void)
{
	return &cl->conns[CL_CONN_REG];
}

/* ---- The replica (other nodes' sessions) ---- */

static void kick(const char *full, const struct cluster_sess *own, const char *by);

/*
 * A resource we hold was registered by another node (`v`): one full JID
 * is one session (RFC 6120 7.7.2.2), so one of the two ends with
 * <conflict/>, the older one, as on one node. Redis orders the
 * registrations and every node sees their events in that order: ours
 * not come back yet (unconfirmed) means theirs was first, and ours
 * replaces it there (this event is ignored); ours seen already means
 * theirs is newer and our session goes. Returns whether the event is to
 * be ignored.
 */
static bool replica_conflict(const char *full, const struct cluster_sess *v)
{
	struct cluster_sess *own = cluster_table_get(cl->own, full);

	if (!own)
		return false;
	if (own->unconfirmed)
		return true;
	kick(full, own, v->node);
	return false;
}

/* Applies one event "set FULL VALUE" | "del FULL NODE" | "reset NODE" (len bytes). */
static void replica_apply(const char *ev, size_t len)
{
	char buf[JID_MAX + CLUSTER_SESS_TEXT_MAX + 16];
	struct cluster_sess v;
	char *sp;

	if (len >= sizeof(buf))
		return;
	memcpy(buf, ev, len);
	buf[len] = '\0';
	if (strncmp(buf, "reset ", 6) == 0) {
		if (strcmp(buf + 6, cl->node) == 0)
			return;
		pthread_rwlock_wrlock(&cl->lock);
		cluster_table_drop_node(cl->replica, buf + 6);
		pthread_rwlock_unlock(&cl->lock);
		return;
	}
	if (strncmp(buf, "set ", 4) == 0) {
		/* A resource may hold spaces: the value is the last five words. */
		char *p = buf + len;
		struct cluster_sess *own;

		for (int words = 0; words < 5 && p > buf + 4; ) {
			p--;
			if (*p == ' ')
				words++;
		}
		if (p <= buf + 4 || cluster_sess_decode(&v, p + 1, strlen(p + 1)) < 0)
			return;
		*p = '\0';
		if (strcmp(v.node, cl->node) == 0) {
			/* Our own registration is in Redis: another node's is newer from now on. */
			if ((own = cluster_table_get(cl->own, buf + 4)) != NULL)
				own->unconfirmed = false;
			return;
		}
		if (replica_conflict(buf + 4, &v))
			return;
		pthread_rwlock_wrlock(&cl->lock);
		cluster_table_set(cl->replica, buf + 4, &v);
		pthread_rwlock_unlock(&cl->lock);
		return;
	}
	if (strncmp(buf, "del ", 4) == 0 && (sp = strrchr(buf + 4, ' ')) != NULL) {
		*sp = '\0';
		if (strcmp(sp + 1, cl->node) == 0)
			return;
		pthread_rwlock_wrlock(&cl->lock);
		cluster_table_del(cl->replica, buf + 4, sp + 1);
		pthread_rwlock_unlock(&cl->lock);
	}
}

static void replica_dumped(struct credis *c, redisReply *r, void *arg)
{
	struct cluster_sess v, *own;
	size_t n = 0;

	if (!r || r->type != REDIS_REPLY_ARRAY) {
		log_reply_error("cluster.replica_failed", r);
		/* Held events would wait forever: subscribe (and load) again. */
		cl->loading = false;
		strbuf_clear(&cl->held);
		cluster_redis_reset(&cl->conns[CL_CONN_EVENTS]);
		return;
	}
	pthread_rwlock_wrlock(&cl->lock);
	cluster_table_clear(cl->replica);
	for (size_t i = 0; i + 1 < r->elements; i += 2) {
		redisReply *f = r->element[i], *val = r->element[i + 1];

		if (f->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING ||
		    cluster_sess_decode(&v, val->str, val->len) < 0)
			continue;
		/*
		 * Our own entries: their events may have been missed while the
		 * channel was away, so the dump settles conflicts as they would.
		 */
		own = cluster_table_get(cl->own, f->str);
		if (strcmp(v.node, cl->node) == 0) {
			if (own)
				own->unconfirmed = false;
			continue;
		}
		if (own && !own->unconfirmed)
			kick(f->str, own, v.node);
		if (cluster_table_set(cl->replica, f->str, &v) == 0)
			n++;
	}
	pthread_rwlock_unlock(&cl->lock);
	/* What arrived on the channel meanwhile is newer than the dump or repeats it. */
	cl->loading = false;
	for (size_t off = 0; off < cl->held.len;) {
		size_t l = strlen(cl->held.data + off);

		replica_apply(cl->held.data + off, l);
		off += l + 1;
	}
	strbuf_clear(&cl->held);
	log_info("cluster.replica_loaded", "sessions=%zu", n);
}

/*
 * Loads the registry into the replica: when the events connection has
 * subscribed (pub/sub missed what happened while it was away), and when
 * the registry connection joins again (the dump may not have gone out
 * while it was down). Events arriving meanwhile are held.
 */
static void replica_reload(void)
{
	if (!cl->conns[CL_CONN_EVENTS].up)
		return;	/* its subscription reloads */
	if (!cl->loading)
		strbuf_clear(&cl->held);
	if (cluster_redis_cmdf(conn_reg(), replica_dumped, NULL, "EVAL %s 0 %s", lua_dump,
			       cl->prefix) == 0)
		cl->loading = true;
}

static void provisioning_event(const char *ev);

static void events_message(struct credis *c, redisReply *r, void *arg)
{
	redisReply *kind, *payload;

	if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 3)
		return;
	kind = r->element[0];
	payload = r->element[2];
	if (kind->type != REDIS_REPLY_STRING)
		return;
	if (strcmp(kind->str, "subscribe") == 0) {
		replica_reload();
		return;
	}
	if (strcmp(kind->str, "message") != 0 || payload->type != REDIS_REPLY_STRING)
		return;
	if (strncmp(payload->str, "prov ", 5) == 0) {
		provisioning_event(payload->str + 5);	/* not the registry's: never held */
		return;
	}
	if (cl->loading) {
		strbuf_append(&cl->held, payload->str, payload->len);
		strbuf_append(&cl->held, "", 1);
		return;
	}
	replica_apply(payload->str, payload->len);
}

static void events_up(struct credis *c)
{
	char channel[CLUSTER_KEY_MAX];

	key_of(channel, sizeof(channel), "events", "");
	cluster_redis_subscribe(c, events_message, channel);
}

/* ---- Registry: our own sessions ---- */

/* lua_register answered: another node holds the full JID now, our session goes. */
static void registered(struct credis *c, redisReply *r, void *arg)
{
	char *full = arg;
	struct cluster_sess *own, other;

	if (r && r->type == REDIS_REPLY_STRING && r->len &&
	    cluster_sess_decode(&other, r->str, r->len) == 0 && strcmp(other.node, cl->node) != 0 &&
	    (own = cluster_table_get(cl->own, full)) != NULL)
		kick(full, own, other.node);
	else if (r && r->type == REDIS_REPLY_ERROR)
		log_reply_error("cluster.register_failed", r);
	free(full);
}

/* first: a bind (it takes the full JID), not an update of our own entry. */
static void register_one(const char *full, const struct cluster_sess *v, bool first)
{
	char val[CLUSTER_SESS_TEXT_MAX];
	struct cluster_sess *own = cluster_table_get(cl->own, full);
	char *arg;

	if (!strchr(full, '/') || cluster_sess_encode(v, val, sizeof(val)) < 0)
		return;
	if (own && first)
		own->unconfirmed = true;	/* until its event comes back (replica_conflict) */
	arg = strdup(full);
	if (cluster_redis_cmdf(conn_reg(), arg ? registered : NULL, arg, "EVAL %s 0 %s %s %s %s %s",
			       lua_register, cl->prefix, cl->node, full, val, first ? "1" : "0") < 0)
		free(arg);
}

static void register_each(void *arg, const char *bare, const struct cluster_entry *e)
{
	char full[JID_MAX * 2];

	snprintf(full, sizeof(full), "%s/%s", bare, e->resource);
	register_one(full, &e->v, false);
}

static void unregister_one(const char *full)
{
	cluster_redis_cmdf(conn_reg(), NULL, NULL, "EVAL %s 0 %s %s %s", lua_unregister,
			   cl->prefix, cl->node, full);
}

/* A session change posted by its home worker (or made on worker 0 itself). */
struct cluster_sess_msg {
	struct worker_msg msg;
	bool gone;
	struct cluster_sess v;
	char full[];
};

static void sess_apply(struct worker *w, struct cluster_sess_msg *m)
{
	if (m->gone) {
		if (cluster_table_del(cl->own, m->full, NULL) && cl->joined)
			unregister_one(m->full);
	} else {
		bool first = cluster_table_get(cl->own, m->full) == NULL;

		if (cluster_table_set(cl->own, m->full, &m->v) == 0 && cl->joined)
			register_one(m->full, &m->v, first);
	}
}

/* Our session `full` is replaced by one on node `by`: told to its home worker. */
struct cluster_kick_msg {
	struct worker_msg msg;
	char by[CLUSTER_NODE_NAME_MAX + 1];
	char full[];
};

static void kick_arrived(struct worker *w, struct worker_msg *msg)
{
	struct cluster_kick_msg *m = (struct cluster_kick_msg *)msg;

	c2s_replaced_elsewhere(w, m->full, m->by);
	free(m);
}

static void kick(const char *full, const struct cluster_sess *own, const char *by)
{
	struct cluster_kick_msg *m = calloc(1, sizeof(*m) + strlen(full) + 1);

	if (!m) {
		log_warn("cluster.kick_failed", "msg=\"out of memory\"");
		return;
	}
	snprintf(m->by, sizeof(m->by), "%s", by);
	memcpy(m->full, full, strlen(full) + 1);
	/* Through the mailbox even to ourselves: the caller may hold the replica's lock. */
	worker_post(cl->w0, own->worker < cl->nworkers ? own->worker : 0, &m->msg, kick_arrived);
}

static void sess_arrived(struct worker *w, struct worker_msg *msg)
{
	struct cluster_sess_msg *m = (struct cluster_sess_msg *)msg;

	if (cl)
		sess_apply(w, m);
	free(m);
}

static void sess_post(struct worker *w, const struct session *s, bool gone)
{
	struct cluster_sess_msg *m;

	if (!cl || s->remote)
		return;
	m = calloc(1, sizeof(*m) + s->jid_len + 1);
	if (!m) {
		log_warn("cluster.registry_lost", "msg=\"out of memory\"");
		return;
	}
	memcpy(m->full, s->jid, s->jid_len);
	m->gone = gone;
	snprintf(m->v.node, sizeof(m->v.node), "%s", cl->node);
	m->v.worker = w->id;
	m->v.priority = s->priority;
	m->v.available = s->available && !s->ending;
	m->v.flags = (s->carbons ? CLUSTER_SESS_CARBONS : 0) | (s->interested ? CLUSTER_SESS_ROSTER : 0);
	if (w->id == 0) {
		sess_apply(w, m);
		free(m);
		return;
	}
	worker_post(w, 0, &m->msg, sess_arrived);
}

void cluster_session_update(struct worker *w, const struct session *s)
{
	sess_post(w, s, false);
}

void cluster_session_end(struct worker *w, const struct session *s)
{
	sess_post(w, s, true);
}

/* ---- Membership ---- */

static void node_seen(const char *name, long long state, long long sessions, long long pending,
		      long long unread, long long oldest, struct cluster_node *next, unsigned *n)
{
	const struct cluster_node *before = NULL;
	bool alive = state == 1;
	const char *reason = state == 2 ? "left" : "ttl";

	for (unsigned i = 0; i < cl->nnodes; i++)
		if (strcmp(cl->nodes[i].name, name) == 0)
			before = &cl->nodes[i];
	if (strcmp(name, cl->node) != 0) {
		if (alive && (!before || !before->alive))
			log_info("cluster.node_up", "name=%s", name);
		else if (!alive && before && before->alive)
			log_warn("cluster.node_down", "name=%s reason=%s", name, reason);
	}
	if (*n >= CLUSTER_MAX_NODES)
		return;
	next = &next[(*n)++];
	snprintf(next->name, sizeof(next->name), "%s", name);
	next->alive = alive;
	next->sessions = sessions;
	next->pending = pending;
	next->unread = unread;
	next->oldest_ms = oldest;
	next->dead_since_ms = alive ? 0 : before && before->dead_since_ms ? before->dead_since_ms
								      : wall_ms();
}

static void reap_stream(const char *dead, unsigned worker);

static void reaped(struct credis *c, redisReply *r, void *arg)
{
	char *dead = arg;

	if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
	    r->element[0]->type == REDIS_REPLY_INTEGER &&
	    r->element[1]->type == REDIS_REPLY_INTEGER) {
		long long nw = r->element[1]->integer;
		const redisReply *avail = r->element[2];

		log_warn("cluster.node_reaped", "name=%s sessions=%lld streams=%lld", dead,
			 (long long)r->element[0]->integer, nw);
		/*
		 * Our replica forgets the node now, not when the reset comes
		 * back on the events connection: its entries, routed again
		 * here, must not go back to its streams.
		 */
		pthread_rwlock_wrlock(&cl->lock);
		cluster_table_drop_node(cl->replica, dead);
		pthread_rwlock_unlock(&cl->lock);
		for (long long k = 0; k < nw && k < SERVER_MAX_WORKERS; k++)
			reap_stream(dead, (unsigned)k);
		/*
		 * Its available sessions ended without their unavailable
		 * presence: sent to their contacts as a clean end would have
		 * (rosters from the shared store).
		 */
		for (size_t i = 0; avail->type == REDIS_REPLY_ARRAY && i < avail->elements; i++)
			if (avail->element[i]->type == REDIS_REPLY_STRING)
				presence_unavailable_for(cl->w0, avail->element[i]->str);
	} else if (!r || r->type == REDIS_REPLY_ERROR) {
		log_reply_error("cluster.reap_failed", r);
	}
	free(dead);
}

static void join(void);

static void beat_done(struct credis *c, redisReply *r, void *arg)
{
	struct cluster_node next[CLUSTER_MAX_NODES];
	unsigned n = 0, listed;

	cl->beat_in_flight = false;
	if (!r)
		return;
	if (reply_is_error(r, "NAMETAKEN")) {
		log_error("cluster.name_taken", "name=%s msg=\"another process has taken this "
			  "node name while this one could not reach Redis; this node stays out\"",
			  cl->node);
		cl->joined = false;
		cl->name_taken_logged = true;
		cl->join_retry_ms = loop_now_ms(cl->w0->loop) + CLUSTER_RETRY_MS;
		atomic_store(&cl->routable, false);
		return;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
		log_reply_error("cluster.heartbeat_failed", r);
		return;
	}
	for (size_t i = 1; i + 5 < r->elements; i += 6) {
		redisReply **e = &r->element[i];

		if (e[0]->type != REDIS_REPLY_STRING)
			continue;
		node_seen(e[0]->str, e[1]->integer, e[2]->integer, e[3]->integer,
			  e[4]->integer, e[5]->integer, next, &n);
	}
	/*
	 * Nodes that vanished from `nodes` (reaped) stay in the view as dead
	 * for a while, so that the status shows what happened to them.
	 */
	listed = n;
	for (unsigned i = 0; i < cl->nnodes; i++) {
		struct cluster_node *gone = &cl->nodes[i];
		bool still = false;

		for (unsigned k = 0; k < n; k++)
			still |= strcmp(next[k].name, gone->name) == 0;
		if (still || strcmp(gone->name, cl->node) == 0)
			continue;
		if (gone->alive)
			log_warn("cluster.node_down", "name=%s reason=ttl", gone->name);
		if (!gone->dead_since_ms)
			gone->dead_since_ms = wall_ms();
		if (n < CLUSTER_MAX_NODES &&
		    wall_ms() - gone->dead_since_ms < CLUSTER_DEAD_KEEP_MS) {
			next[n] = *gone;
			next[n].alive = false;
			next[n].sessions = next[n].pending = next[n].unread = next[n].oldest_ms = 0;
			n++;
		}
	}
	memcpy(cl->nodes, next, n * sizeof(next[0]));
	cl->nnodes = n;
	cl->beat_wall_ms = wall_ms();
	if (r->element[0]->integer == 1) {
		log_warn("cluster.rejoin", "name=%s msg=\"our entry was gone (reaped, or Redis "
			 "lost its data): registering again\"", cl->node);
		join();
		return;
	}
	/*
	 * A node whose heartbeat expired is dead: the survivors race to clean
	 * up. Only those still listed in `nodes`: the others were reaped.
	 */
	for (unsigned i = 0; i < listed; i++) {
		char *dead;

		if (next[i].alive || strcmp(next[i].name, cl->node) == 0)
			continue;
		dead = strdup(next[i].name);
		if (dead && cluster_redis_cmdf(conn_reg(), reaped, dead, "EVAL %s 0 %s %s %s %u",
					       lua_reap, cl->prefix, dead, cl->node,
					       2 * cl->ttl) < 0)
			free(dead);
	}
}

static void owner_check(void);
static void owner_forget(void);

static void beat(void)
{
	owner_check();	/* the services' lease rides along with every heartbeat */
	if (cl->beat_in_flight)
		return;
	if (cluster_redis_cmdf(conn_reg(), beat_done, NULL, "EVAL %s 0 %s %s %s %u", lua_beat,
			       cl->prefix, cl->node, cl->token, cl->ttl) == 0)
		cl->beat_in_flight = true;
}

static void joined(struct credis *c, redisReply *r, void *arg)
{
	cl->joining = false;
	if (!r)
		return;	/* the connection went: it joins again when it is back */
	cl->join_retry_ms = loop_now_ms(cl->w0->loop) + CLUSTER_RETRY_MS;
	if (reply_is_error(r, "NAMETAKEN")) {
		if (!cl->name_taken_logged)
			log_error("cluster.name_taken", "name=%s msg=\"a live node has this name; "
				  "this node stays out of the cluster until its heartbeat "
				  "expires\"", cl->node);
		cl->name_taken_logged = true;
		return;
	}
	if (r->type != REDIS_REPLY_INTEGER) {
		log_reply_error("cluster.join_failed", r);
		return;
	}
	cl->join_retry_ms = 0;
	cl->name_taken_logged = false;
	cl->joined = cl->ever_joined = true;
	/* Everything we hold, again: after an outage Redis may have lost it or kept stale parts. */
	cluster_table_each(cl->own, register_each, NULL);
	atomic_store(&cl->routable, true);
	log_info("cluster.join", "name=%s sessions=%zu", cl->node, cluster_table_size(cl->own));
	cl->next_beat_ms = 0;
	beat();
	replica_reload();
}

static void join(void)
{
	if (cl->joining || cl->leaving)
		return;
	cl->joined = false;
	if (cluster_redis_cmdf(conn_reg(), joined, NULL, "EVAL %s 0 %s %s %s %u %s", lua_join,
			       cl->prefix, cl->node, cl->token, cl->ttl, cl->info) == 0)
		cl->joining = true;
}

static void reg_up(struct credis *c)
{
	if (c->ever_up)	/* not the first connect */
		log_info("cluster.redis_up", "uri=%s", cl->uri_shown);
	else
		log_info("cluster.redis_up", "uri=%s first=yes", cl->uri_shown);
	cl->beat_in_flight = false;
	cl->joining = false;
	join();
}

static void reg_down(struct credis *c)
{
	cl->joined = false;
	cl->joining = false;
	cl->beat_in_flight = false;
	atomic_store(&cl->routable, false);
	owner_forget();
	log_warn("cluster.redis_down", "uri=%s msg=\"Redis does not answer: reconnecting; "
		 "stanzas for other nodes are handled as if their recipients were offline\"",
		 cl->uri_shown);
}

/* ---- Inter-node stanzas: sending ---- */

/*
 * A stanza for an account the replica shows no session of: the registry
 * itself decides, in one step with the XADD. The replica lags Redis by
 * the events not yet read, so a session bound on another node an instant
 * ago may be missing from it: asking Redis before taking the recipient
 * for offline closes that window for messages and iqs (what would
 * otherwise be stored offline or bounced, or a subscription request
 * kept for the next login). The same rules as route_targets: the
 * resource's node for a full JID; for a bare JID the nodes with an
 * available resource, but for a message one node with an available
 * resource of non-negative priority (which delivers to the account's
 * resources on every node), and for a subscription one node with any
 * session of the account. A bare JID with sessions but none that takes
 * it by the registry goes to one node with a session all the same: the
 * registry lags that node's own sessions (one that became available an
 * instant ago), which it decides from; never this
 * node (its sessions are known here). Returns how many streams got it;
 * 0: handled here as for an offline recipient.
 *   ARGV: prefix, bare JID, resource or "", stanza kind, this node,
 *         MAXLEN, local, ts, from, to, payload
 */
static const char lua_route[] =
	"local p = ARGV[1]\n"
	"local h = redis.call('HGETALL', p..'sess:'..ARGV[2])\n"
	"local want, any, seen = {}, nil, {}\n"
	"for i = 1, #h, 2 do\n"
	"  local node, worker, prio, avail = string.match(h[i + 1], '^(%S+) (%d+) (%-?%d+) (%d) %d+$')\n"
	"  if node and node ~= ARGV[5] and not seen[node] then\n"
	"    local t, take = {node, worker}\n"
	"    if ARGV[3] ~= '' then take = h[i] == ARGV[3]\n"
	"    elseif ARGV[4] == 'subscription' then take = #want == 0\n"
	"    elseif ARGV[4] == 'message' then take = #want == 0 and avail == '1' and tonumber(prio) >= 0\n"
	"    else take = avail == '1' end\n"
	"    if take then seen[node] = true; want[#want + 1] = t end\n"
	"    any = any or t\n"
	"  end\n"
	"end\n"
	"if #want == 0 and any and ARGV[3] == '' then want[1] = any end\n"
	"local sent = 0\n"
	"for _, t in ipairs(want) do\n"
	"  if redis.call('XADD', p..'in:'..t[1]..':'..t[2], 'NOMKSTREAM', 'MAXLEN', '~',\n"
	"      ARGV[6], '*', 'kind', 'stanza', 'node', ARGV[5], 'local', ARGV[7], 'ts', ARGV[8],\n"
	"      'from', ARGV[9], 'to', ARGV[10], 'payload', ARGV[11]) then\n"
	"    sent = sent + 1\n"
	"  end\n"
	"end\n"
	"return sent\n";

/* A stream a stanza goes to: a node's, the recipient's home worker's there. */
struct cluster_target {
	char node[CLUSTER_NODE_NAME_MAX + 1];
	unsigned worker;
};

/* A stanza for other nodes, made at the recipient's home worker, XADDed by worker 0. */
struct cluster_out {
	struct worker_msg msg;
	unsigned inflight;		/* XADDs not answered yet: freed with the last answer */
	bool fell_back;			/* one XADD failed: routed here (out_fallback) */
	/*
	 * The sender's stream-management ack, held until the stanza is in
	 * every target stream (or was handled here instead): released at
	 * the sender's home worker for its session `sender`.
	 */
	bool held;
	unsigned held_worker;
	char sender[JID_MAX];
	uint64_t mark;			/* storage submissions before out_fallback's writes */
	const char *kind;		/* "stanza", or "fanout": `to` is a list of recipients */
	/* No target in the replica: lua_route asks the registry (a message or an iq). */
	const char *lookup;		/* the stanza kind for lua_route, or NULL */
	unsigned ntargets;
	struct cluster_target targets[CLUSTER_MAX_TARGETS];
	bool from_local_session;
	size_t payload_len;
	char *from, *to;
	char payload[];
};

static void entry_sm_give(struct worker *w, const char *payload, size_t len, bool taken);

/*
 * A stanza that cannot go to its node (Redis went down since it was
 * routed, or too much is waiting to be written) does not vanish: it is
 * routed here as if it had arrived from there, so that its recipient,
 * without a session here, gets it offline (or its sender an error).
 * A copy for one session there (cluster_deliver) that is a message is
 * stored offline here, unless it is a carbon copy. A fanned-out presence
 * or a roster change is dropped: presence is state, the roster is in
 * the store. A session's state for another node (a resumption there)
 * is taken back: its stanzas are rerouted here as undelivered.
 */
static void out_fallback(struct cluster_out *o)
{
	struct xml_node *st;
	struct jid jf, jt;
	struct arena a;

	bool deliver = strcmp(o->kind, "deliver") == 0;

	if (strcmp(o->kind, "smgive") == 0) {
		entry_sm_give(cl->w0, o->payload, o->payload_len, false);
		return;
	}
	if ((!deliver && strcmp(o->kind, "stanza") != 0) ||
	    jid_parse(&jf, o->from, strlen(o->from)) < 0 ||
	    jid_parse(&jt, o->to, strlen(o->to)) < 0)
		return;
	arena_init(&a, 4096);
	st = stored_xml_parse(cl->w0->xml, &a, o->payload, o->payload_len);
	/* A copy for a session on another node: a message goes offline here. */
	if (st && deliver)
		router_deliver_cluster(cl->w0, st, &jf, &jt);
	else if (st)
		router_route_cluster(cl->w0, st, &jf, &jt, o->from_local_session, true);
	arena_release(&a);
	arena_reset(&cl->w0->tmp);
}

/* Logs the failure and routes o here, once, however many of its XADDs failed. */
static void out_failed(struct cluster_out *o, const char *why)
{
	char q[JID_MAX + 16];

	cl->send_failed++;
	if (o->fell_back)
		return;
	o->fell_back = true;
	/* The recipient's JID may hold anything a JID may: quoted. */
	log_warn("cluster.send_failed", "to=%s msg=\"%s: handled here as for an offline "
		 "recipient\"", log_sanitize(q, sizeof(q), o->to, strcspn(o->to, "\n")), why);
	out_fallback(o);
}

/* The last XADD answered (or none could be sent): the held ack goes, o is freed. */
static void out_done(struct cluster_out *o)
{
	if (o->held)
		durable_release_remote(cl->w0, o->held_worker, o->sender, o->mark);
	free(o);
}

static void out_added(struct credis *c, redisReply *r, void *arg)
{
	struct cluster_out *o = arg;

	/*
	 * At shutdown (the connection stopping after the loops ended) nothing
	 * is routed or released any more: the sessions are gone.
	 */
	if (!r && c->stopping) {
		if (--o->inflight == 0)
			free(o);
		return;
	}
	/* No answer (the connection went) or an error (Redis out of memory): not in the stream. */
	if (!r || r->type == REDIS_REPLY_ERROR)
		out_failed(o, r ? "Redis refused the XADD" : "Redis went away before answering");
	/* NOMKSTREAM: the node's stream is gone (reaped), nobody would read it. */
	else if (r->type == REDIS_REPLY_NIL)
		out_failed(o, "the node's stream is gone");
	if (--o->inflight == 0)
		out_done(o);
}

/* XADDs o to each of its streams; o is ours from here (freed after the answers). */
/* lua_route answered: how many streams took the stanza; none: handled here. */
static void out_looked_up(struct credis *c, redisReply *r, void *arg)
{
	struct cluster_out *o = arg;

	if (!r && c->stopping) {
		free(o);
		return;
	}
	if (!r || r->type == REDIS_REPLY_ERROR)
		out_failed(o, r ? "Redis refused the registry lookup" :
			   "Redis went away before answering");
	else if (r->type == REDIS_REPLY_INTEGER && r->integer > 0)
		cl->sent += (uint64_t)r->integer;
	else
		out_fallback(o);	/* no session anywhere: offline, or an error */
	out_done(o);
}

static void out_lookup(struct cluster_out *o, const char *ts)
{
	const char *slash = strchr(o->to, '/');
	size_t blen = slash ? (size_t)(slash - o->to) : strlen(o->to);
	char bare[JID_MAX];
	const char *argv[] = { "EVAL", lua_route, "0", cl->prefix, bare, slash ? slash + 1 : "",
			       o->lookup, cl->node, CLUSTER_STREAM_MAXLEN,
			       o->from_local_session ? "1" : "0", ts, o->from, o->to, o->payload };
	size_t lens[sizeof(argv) / sizeof(argv[0])];

	memcpy(bare, o->to, blen);
	bare[blen] = '\0';
	for (size_t k = 0; k < sizeof(argv) / sizeof(argv[0]); k++)
		lens[k] = strlen(argv[k]);
	lens[sizeof(argv) / sizeof(argv[0]) - 1] = o->payload_len;
	if (cluster_redis_cmd(conn_reg(), out_looked_up, o, (int)(sizeof(argv) / sizeof(argv[0])),
			      argv, lens) < 0) {
		out_failed(o, "Redis is down or too slow");
		out_done(o);
	}
}

static void out_send(struct cluster_out *o)
{
	char key[CLUSTER_KEY_MAX], ts[24];

	o->mark = storage_queue_submitted(cl->srv->store);
	snprintf(ts, sizeof(ts), "%llu", (unsigned long long)wall_ms());
	if (o->lookup) {
		out_lookup(o, ts);
		return;
	}
	for (unsigned i = 0; i < o->ntargets; i++) {
		const char *argv[] = { "XADD", key, "NOMKSTREAM", "MAXLEN", "~",
				       CLUSTER_STREAM_MAXLEN, "*",
				       "kind", o->kind, "node", cl->node,
				       "local", o->from_local_session ? "1" : "0", "ts", ts,
				       "from", o->from, "to", o->to, "payload", o->payload };
		size_t lens[sizeof(argv) / sizeof(argv[0])];

		stream_of(key, sizeof(key), o->targets[i].node, o->targets[i].worker);
		for (size_t k = 0; k < sizeof(argv) / sizeof(argv[0]); k++)
			lens[k] = strlen(argv[k]);
		lens[sizeof(argv) / sizeof(argv[0]) - 1] = o->payload_len;
		if (cluster_redis_cmd(conn_reg(), out_added, o,
				      (int)(sizeof(argv) / sizeof(argv[0])), argv, lens) == 0) {
			o->inflight++;
			cl->sent++;
		} else {
			out_failed(o, "Redis is down or too slow");
		}
	}
	if (o->inflight == 0)
		out_done(o);
}

static void out_arrived(struct worker *w, struct worker_msg *m)
{
	struct cluster_out *o = (struct cluster_out *)m;

	if (cl)
		out_send(o);
	else
		free(o);
}

/*
 * The streams a stanza for `to` goes to, from the replica: the node (and
 * home worker there) of the resource for a full JID; for a bare JID, the
 * nodes with resources that take it (available), once each: an
 * account's resources on a node are all at its home worker there. A
 * message goes to one node with an available resource of non-negative
 * priority: that node delivers it to the account's resources on every
 * node (router.c, route_message_bare), archived once.
 */
static unsigned route_targets(const struct jid *to, enum stanza_kind kind, bool any,
			      struct cluster_target *targets)
{
	struct cluster_entry e[32];
	char bare[JID_MAX];
	size_t blen = to->domain_off + to->domain_len, n;
	unsigned nt = 0;

	memcpy(bare, to->buf, blen);
	bare[blen] = '\0';
	pthread_rwlock_rdlock(&cl->lock);
	n = cluster_table_find(cl->replica, bare, e, sizeof(e) / sizeof(e[0]));
	if (n > sizeof(e) / sizeof(e[0]))
		n = sizeof(e) / sizeof(e[0]);
	for (size_t i = 0; i < n && nt < CLUSTER_MAX_TARGETS; i++) {
		bool dup = false;

		if (jid_has_resource(to)) {
			if (strlen(e[i].resource) != to->res_len ||
			    memcmp(e[i].resource, to->buf + to->res_off, to->res_len) != 0)
				continue;
		} else if (!any && (!e[i].v.available ||
				    (kind == STANZA_MESSAGE && e[i].v.priority < 0))) {
			continue;
		}
		for (unsigned k = 0; k < nt; k++)
			dup |= strcmp(targets[k].node, e[i].v.node) == 0;
		if (dup)
			continue;
		memcpy(targets[nt].node, e[i].v.node, sizeof(targets[0].node));
		targets[nt++].worker = e[i].v.worker;
		if (!any && !jid_has_resource(to) && kind == STANZA_MESSAGE)
			break;
	}
	pthread_rwlock_unlock(&cl->lock);
	return nt;
}

/* subscribe, subscribed, unsubscribe, unsubscribed (RFC 6121 3) */
static bool route_is_subscription(const char *type)
{
	return strcmp(type, "subscribe") == 0 || strcmp(type, "subscribed") == 0 ||
	       strcmp(type, "unsubscribe") == 0 || strcmp(type, "unsubscribed") == 0;
}

/* What may go to another node: stanzas for a session, not those the account's server answers. */
static bool route_wanted(const struct jid *to, struct xml_node *st, enum stanza_kind kind)
{
	const char *type = stanza_type(st);

	if (jid_has_resource(to))
		return kind != STANZA_OTHER;
	if (kind == STANZA_MESSAGE)
		return strcmp(type, "error") != 0 && strcmp(type, "groupchat") != 0;
	/*
	 * Directed presence, probes (answered where the contact's sessions
	 * are), and subscriptions: the store is shared, but the account's
	 * roster in memory and the resources to push changes to are where
	 * its sessions are.
	 */
	if (kind == STANZA_PRESENCE)
		return !type[0] || strcmp(type, "unavailable") == 0 || strcmp(type, "probe") == 0 ||
		       route_is_subscription(type);
	return false;
}

/*
 * A stanza for another node's stream, serialized once with its addresses
 * and origin (kind and targets are the caller's). Stream management: the
 * sender's ack waits for the XADD's answer, held here for a client of
 * this worker, or taken over from the forward that brought the stanza
 * from the sender's home. NULL when out of memory (nothing is held then).
 */
static struct cluster_out *out_new(struct worker *w, struct conn *src, struct xml_node *st,
				   const struct jid *from, const struct jid *to)
{
	struct strbuf sb = STRBUF_INIT;
	struct cluster_out *o;

	xml_serialize(&sb, st, XML_NS_CLIENT);
	o = sb.oom ? NULL : calloc(1, sizeof(*o) + sb.len + 1 + from->len + 1 + to->len + 1);
	if (!o) {
		strbuf_free(&sb);
		return NULL;
	}
	if (src && src->sess && src->sess->sm && src->sess->jid_len < sizeof(o->sender)) {
		sm_hold_ack(src->sess);
		memcpy(o->sender, src->sess->jid, src->sess->jid_len + 1);
		o->held_worker = w->id;
		o->held = true;
	} else {
		o->held = router_take_held_ack(w, st, &o->held_worker, o->sender,
					       sizeof(o->sender));
	}
	o->from_local_session = router_from_local_session(w, src, st);
	o->payload_len = sb.len;
	memcpy(o->payload, sb.data, sb.len + 1);
	o->from = o->payload + sb.len + 1;
	memcpy(o->from, from->buf, from->len + 1);
	o->to = o->from + from->len + 1;
	memcpy(o->to, to->buf, to->len + 1);
	strbuf_free(&sb);
	return o;
}

/* Presence sent to one entity (available or unavailable), not a probe or a subscription. */
static bool route_directed_presence(struct xml_node *st)
{
	const char *type = stanza_type(st);

	return !type[0] || strcmp(type, "unavailable") == 0;
}

bool cluster_route(struct worker *w, struct conn *src, struct xml_node *st,
		   const struct jid *from, const struct jid *to)
{
	struct cluster_target targets[CLUSTER_MAX_TARGETS];
	enum stanza_kind kind = stanza_kind(st);
	struct cluster_out *o;
	unsigned nt;
	bool sub;

	if (!cl || !atomic_load(&cl->routable) || !route_wanted(to, st, kind))
		return false;
	/*
	 * A subscription goes where the account has sessions, available or
	 * not: they hold its roster and get the roster pushes.
	 */
	sub = kind == STANZA_PRESENCE && !jid_has_resource(to) &&
	      route_is_subscription(stanza_type(st));
	nt = route_targets(to, kind, sub, targets);
	/*
	 * Not in the replica: the registry decides for a message, an iq, a
	 * directed presence or a subscription (lua_route). Not for probes: a
	 * login probes every contact, mostly offline ones, and a probe the
	 * window missed is made good by the contact's own broadcast.
	 */
	if (!nt && kind != STANZA_MESSAGE && kind != STANZA_IQ &&
	    !(kind == STANZA_PRESENCE && (sub || route_directed_presence(st))))
		return false;
	/*
	 * Handled once, on one node: run on each, the second would find the
	 * roster already changed and answer differently.
	 */
	if (sub && nt > 1)
		nt = 1;
	o = out_new(w, src, st, from, to);
	if (!o) {
		log_warn("cluster.send_failed", "msg=\"out of memory\"");
		return false;
	}
	o->kind = "stanza";
	if (!nt)
		o->lookup = kind == STANZA_MESSAGE ? "message" : kind == STANZA_IQ ? "iq" :
			    sub ? "subscription" : "presence";
	o->ntargets = nt;
	memcpy(o->targets, targets, sizeof(targets[0]) * nt);
	if (w->id == 0)
		out_send(o);
	else
		worker_post(w, 0, &o->msg, out_arrived);
	return true;
}

/* ---- The services: one owner node (docs/clustering.md) ---- */

/*
 * The lease PREFIX owner:services names the node whose worker 0 runs the
 * services; every other node sends their stanzas there. Worker 0's
 * alone: the router calls cluster_service_route on worker 0 (stanzas for
 * services are forwarded there first), the status runs there.
 */
static struct {
	char owner[CLUSTER_NODE_NAME_MAX + 1];	/* "" while unknown */
	bool mine;			/* we hold the lease: the services are served here */
	bool in_flight;
	uint64_t takeovers;		/* leases taken (each reloads the services' state) */
	uint64_t forwarded, refused;	/* stanzas sent to the owner; answered unavailable */
} svc_own;

/*
 * ARGV: prefix, name, token, ttl. Renews the lease when it is ours, takes
 * it when it is free (and we are alive: a node that lost its name takes
 * nothing); answers {owner or '', 1 when we took it just now}.
 */
static const char lua_owner[] =
	"local p, n = ARGV[1], ARGV[2]\n"
	"local k = p..'owner:services'\n"
	"local cur = redis.call('GET', k)\n"
	"if redis.call('GET', p..'alive:'..n) ~= ARGV[3] then return {cur or '', 0} end\n"
	"if cur == n then redis.call('PEXPIRE', k, ARGV[4]); return {n, 0} end\n"
	"if cur then return {cur, 0} end\n"
	"redis.call('SET', k, n, 'PX', ARGV[4])\n"
	"return {n, 1}\n";

/*
 * ARGV: prefix, name. Gives the lease back (a stop on purpose): the next
 * heartbeat elsewhere takes it.
 */
static const char lua_owner_release[] =
	"local k = ARGV[1]..'owner:services'\n"
	"if redis.call('GET', k) == ARGV[2] then redis.call('DEL', k) end\n"
	"return 1\n";

/*
 * We took the lease: the persistent state of the services (rooms, pubsub
 * nodes with their affiliations and subscriptions) is read again from the
 * shared store, since the previous owner changed it after we started. A
 * store of our own (one connection, for the time of the load) because
 * the storage thread owns the queue's; worker 0's loop waits meanwhile.
 * Nothing of ours is lost: a node that does not hold the lease serves
 * nothing, so its copy of that state is unused.
 */
static void services_reload(void)
{
	const struct config *cfg = cl->srv->cfg;
	struct storage *st;
	char why[256] = "";
	uint64_t t0 = wall_ms();
	int ret;

	ret = storage_open_at(&st, cfg->storage, cfg->state_dir, why, sizeof(why));
	if (ret < 0) {
		log_error("cluster.services_load_failed", "err=%d msg=\"cannot open the store: "
			  "the services run with the state loaded at startup\"", ret);
		return;
	}
	ret = muc_service_reload(cl->srv, st);
	if (ret == 0)
		ret = pubsub_service_reload(st, cl->srv);
	storage_close(st);
	if (ret < 0)
		log_error("cluster.services_load_failed", "err=%d", ret);
	else
		log_info("cluster.services_loaded", "ms=%llu",
			 (unsigned long long)(wall_ms() - t0));
}

static void owner_seen(struct credis *c, redisReply *r, void *arg)
{
	const char *name;
	bool mine, taken;

	svc_own.in_flight = false;
	if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_STRING ||
	    r->element[1]->type != REDIS_REPLY_INTEGER) {
		if (r)
			log_reply_error("cluster.owner_failed", r);
		return;
	}
	name = r->element[0]->str;
	taken = r->element[1]->integer == 1;
	mine = strcmp(name, cl->node) == 0;
	if (strcmp(name, svc_own.owner) != 0) {
		if (name[0])
			log_info("cluster.services_owner", "name=%s self=%s", name,
				 mine ? "yes" : "no");
		else
			log_warn("cluster.services_owner", "name=none msg=\"no node holds the "
				 "services' lease: their stanzas are answered "
				 "service-unavailable\"");
	}
	if (svc_own.mine && !mine)
		log_warn("cluster.services_lost", "owner=%s msg=\"another node took the "
			 "services' lease (ours expired)\"", name[0] ? name : "none");
	snprintf(svc_own.owner, sizeof(svc_own.owner), "%s", name);
	/*
	 * Taken just now (it was free): whoever held it before may have
	 * changed the stored state. Still ours (a renewal): nothing to load.
	 */
	if (mine && taken) {
		svc_own.takeovers++;
		services_reload();
	}
	svc_own.mine = mine;
}

/* Each heartbeat: renew, take or learn the owner. */
static void owner_check(void)
{
	if (svc_own.in_flight || !cl->joined)
		return;
	if (cluster_redis_cmdf(conn_reg(), owner_seen, NULL, "EVAL %s 0 %s %s %s %u", lua_owner,
			       cl->prefix, cl->node, cl->token, cl->ttl) == 0)
		svc_own.in_flight = true;
}

/*
 * Redis is gone: the lease cannot be renewed, and expires within the TTL,
 * when another node may take it. Until we know again, no node is the owner
 * as far as we can tell: not even this one.
 */
static void owner_forget(void)
{
	if (svc_own.mine)
		log_warn("cluster.services_lost", "owner=unknown msg=\"Redis does not answer\"");
	svc_own.owner[0] = '\0';
	svc_own.mine = false;
	svc_own.in_flight = false;
}

static void owner_release(void)
{
	if (!svc_own.mine || !cl->joined)
		return;
	cluster_redis_cmdf(conn_reg(), NULL, NULL, "EVAL %s 0 %s %s", lua_owner_release,
			   cl->prefix, cl->node);
	svc_own.mine = false;
	svc_own.owner[0] = '\0';
}

static void owner_status(json_t *r)
{
	json_object_set_new(r, "services_owner",
			    svc_own.owner[0] ? json_string(svc_own.owner) : json_null());
	json_object_set_new(r, "services_here", json_boolean(svc_own.mine));
	json_object_set_new(r, "services", json_pack("{s:I, s:I, s:I}",
						     "takeovers", (json_int_t)svc_own.takeovers,
						     "forwarded", (json_int_t)svc_own.forwarded,
						     "refused", (json_int_t)svc_own.refused));
}

/*
 * An occupant's self-ping (XEP-0410: an iq ping to its own room JID).
 * XEP-0410 reads service-unavailable as "joined, the occupant just does
 * not answer pings": while the rooms have no owner, the right answer is
 * remote-server-timeout ("the service is unreachable, ask again later"),
 * after which the new owner answers not-acceptable (not an occupant: the
 * occupants were lost with the old owner) and the client joins again.
 */
static bool service_self_ping(struct xml_node *st, const struct jid *to)
{
	struct xml_node *p = xml_first_element(st);

	return stanza_kind(st) == STANZA_IQ && strcmp(stanza_type(st), "get") == 0 &&
	       jid_has_resource(to) && p && strcmp(p->name, "ping") == 0 &&
	       strcmp(p->ns, "urn:xmpp:ping") == 0 &&
	       strncmp(to->buf + to->domain_off, MUC_SERVICE_LABEL ".",
		       strlen(MUC_SERVICE_LABEL) + 1) == 0;
}

/* No owner: the sender learns the service is not there now (no error for an error or a leave). */
static void service_refuse(struct worker *w, struct conn *src, struct xml_node *st,
			   const struct jid *to)
{
	svc_own.refused++;
	if (stanza_kind(st) == STANZA_PRESENCE && strcmp(stanza_type(st), "unavailable") == 0)
		return;
	router_bounce_w(w, src, st, service_self_ping(st, to) ? "remote-server-timeout"
							       : "service-unavailable");
}

/* A stanza for the owner that did not reach Redis: answered here instead. */
static void service_unsent(struct cluster_out *o)
{
	struct xml_node *st;
	struct arena a;
	struct jid jt;

	if (jid_parse(&jt, o->to, strlen(o->to)) < 0)
		return;
	arena_init(&a, 4096);
	st = stored_xml_parse(cl->w0->xml, &a, o->payload, o->payload_len);
	if (st)
		service_refuse(cl->w0, NULL, st, &jt);
	arena_release(&a);
	arena_reset(&cl->w0->tmp);
}

/*
 * ARGV: prefix, owner, its stream, then the entry's fields and values.
 * Added only while the owner's heartbeat lives: the reaper of a dead
 * owner deletes its stream, and an entry added after that would wait for
 * a reader that never comes.
 */
static const char lua_service_add[] =
	"if redis.call('EXISTS', ARGV[1]..'alive:'..ARGV[2]) == 0 then\n"
	"  return redis.error_reply('NOOWNER')\n"
	"end\n"
	"return redis.call('XADD', ARGV[3], 'MAXLEN', '~', '" CLUSTER_STREAM_MAXLEN "', '*', "
	"unpack(ARGV, 4))\n";

static void service_added(struct credis *c, redisReply *r, void *arg)
{
	struct cluster_out *o = arg;

	if (!r && c->stopping) {
		free(o);	/* shutting down: nothing is routed or released any more */
		return;
	}
	/* The owner died (NOOWNER), or Redis went or refused: answered here. */
	if (!r || r->type == REDIS_REPLY_ERROR)
		service_unsent(o);
	out_done(o);
}

/*
 * The registry value of our session `full` ("" when it has none: the
 * server itself, or a session that ended), from our own table.
 */
static void own_value(const char *full, char *val, size_t size)
{
	struct cluster_entry e[CLUSTER_OWN_FIND];
	const char *slash = strchr(full, '/');
	char bare[JID_MAX];
	size_t n;

	val[0] = '\0';
	if (!slash || (size_t)(slash - full) >= sizeof(bare))
		return;
	memcpy(bare, full, (size_t)(slash - full));
	bare[slash - full] = '\0';
	n = cluster_table_find(cl->own, bare, e, CLUSTER_OWN_FIND);
	for (size_t i = 0; i < n && i < CLUSTER_OWN_FIND; i++)
		if (strcmp(e[i].resource, slash + 1) == 0 &&
		    cluster_sess_encode(&e[i].v, val, size) < 0)
			val[0] = '\0';
}

/*
 * The owner, for an entry of kind service: the sender's session as its
 * node registered it ("sess"). Its registration and this entry left that
 * node in that order, but reach us on two connections (the events
 * channel, the stream), so a client that joins a room at once after
 * logging in (bookmarks' autojoin) may be read here first: the room
 * would find no session for it and drop it as gone. Taken into the
 * replica when it has no entry for that resource yet (the event that
 * follows says the same; a later "del" removes it).
 */
static const redisReply *field(const redisReply *fields, const char *name);

static void service_hint(const redisReply *fields, const redisReply *from)
{
	const redisReply *sess = field(fields, "sess");
	struct cluster_entry e[CLUSTER_OWN_FIND];
	const char *slash = strchr(from->str, '/');
	struct cluster_sess v;
	char bare[JID_MAX];
	bool known = false;
	size_t n;

	if (!sess || sess->type != REDIS_REPLY_STRING || !sess->len || !slash ||
	    (size_t)(slash - from->str) >= sizeof(bare) ||
	    cluster_sess_decode(&v, sess->str, sess->len) < 0 || strcmp(v.node, cl->node) == 0)
		return;
	memcpy(bare, from->str, (size_t)(slash - from->str));
	bare[slash - from->str] = '\0';
	pthread_rwlock_wrlock(&cl->lock);
	n = cluster_table_find(cl->replica, bare, e, CLUSTER_OWN_FIND);
	for (size_t i = 0; i < n && i < CLUSTER_OWN_FIND; i++)
		known |= strcmp(e[i].resource, slash + 1) == 0;
	if (!known)
		cluster_table_set(cl->replica, from->str, &v);
	pthread_rwlock_unlock(&cl->lock);
}

/* XADDs o to the owner's stream for worker 0 (o is ours from here). */
static void service_send(struct cluster_out *o)
{
	char key[CLUSTER_KEY_MAX], ts[24], sess[CLUSTER_SESS_TEXT_MAX];
	const char *argv[] = { "EVAL", lua_service_add, "0", cl->prefix, o->targets[0].node, key,
			       "kind", o->kind, "node", cl->node,
			       "local", o->from_local_session ? "1" : "0", "ts", ts,
			       "from", o->from, "to", o->to, "sess", sess, "payload", o->payload };
	size_t lens[sizeof(argv) / sizeof(argv[0])];

	own_value(o->from, sess, sizeof(sess));
	o->mark = storage_queue_submitted(cl->srv->store);
	snprintf(ts, sizeof(ts), "%llu", (unsigned long long)wall_ms());
	stream_of(key, sizeof(key), o->targets[0].node, o->targets[0].worker);
	for (size_t k = 0; k < sizeof(argv) / sizeof(argv[0]); k++)
		lens[k] = strlen(argv[k]);
	lens[sizeof(argv) / sizeof(argv[0]) - 1] = o->payload_len;
	if (cluster_redis_cmd(conn_reg(), service_added, o, (int)(sizeof(argv) / sizeof(argv[0])),
			      argv, lens) == 0) {
		cl->sent++;
		return;
	}
	service_unsent(o);
	out_done(o);
}

static void service_arrived(struct worker *w, struct worker_msg *m)
{
	struct cluster_out *o = (struct cluster_out *)m;

	if (cl)
		service_send(o);
	else
		free(o);
}

bool cluster_service_route(struct worker *w, struct conn *src, struct xml_node *st,
			   const struct jid *from, const struct jid *to)
{
	const struct route_origin *ro = router_origin(w, st);
	struct cluster_out *o;

	if (!cl || svc_own.mine)
		return false;
	/*
	 * No owner known, or this came from another node that took us for the
	 * owner (the lease moved meanwhile): never passed on again.
	 */
	if (!svc_own.owner[0] || !atomic_load(&cl->routable) || (ro && ro->from_cluster)) {
		service_refuse(w, src, st, to);
		return true;
	}
	o = out_new(w, src, st, from, to);
	if (!o) {
		service_refuse(w, src, st, to);
		return true;
	}
	o->kind = "service";
	o->ntargets = 1;
	snprintf(o->targets[0].node, sizeof(o->targets[0].node), "%s", svc_own.owner);
	o->targets[0].worker = 0;	/* the services run on worker 0 */
	svc_own.forwarded++;
	if (w->id == 0)
		service_send(o);
	else
		worker_post(w, 0, &o->msg, service_arrived);
	return true;
}

/* ---- The provisioning tables of every node ---- */

struct cluster_prov_msg {
	struct worker_msg msg;
	char thing[];
};

static void prov_publish(const char *thing)
{
	char ev[JID_MAX + CLUSTER_NODE_NAME_MAX + 8];

	if (!cl->joined)
		return;	/* the others read the store when the thing next connects to them */
	snprintf(ev, sizeof(ev), "prov %s %s", cl->node, thing);
	cluster_redis_cmdf(conn_reg(), NULL, NULL, "PUBLISH %sevents %s", cl->prefix, ev);
}

static void prov_arrived(struct worker *w, struct worker_msg *m)
{
	struct cluster_prov_msg *pm = (struct cluster_prov_msg *)m;

	if (cl)
		prov_publish(pm->thing);
	free(pm);
}

void cluster_provisioning_changed(struct worker *w, const char *thing)
{
	struct cluster_prov_msg *pm;

	if (!cl)
		return;
	if (w->id == 0) {
		prov_publish(thing);
		return;
	}
	pm = calloc(1, sizeof(*pm) + strlen(thing) + 1);
	if (!pm) {
		log_warn("cluster.send_failed", "msg=\"out of memory\"");
		return;
	}
	memcpy(pm->thing, thing, strlen(thing) + 1);
	worker_post(w, 0, &pm->msg, prov_arrived);
}

/* "NODE THING" from the events channel (worker 0): another node changed the store. */
static void provisioning_event(const char *ev)
{
	const char *sp = strchr(ev, ' ');

	if (!sp || ((size_t)(sp - ev) == strlen(cl->node) &&
		    memcmp(ev, cl->node, (size_t)(sp - ev)) == 0))
		return;	/* ours: our table changed already */
	if (provisioning_reload(cl->w0, sp + 1) < 0)
		log_warn("cluster.provisioning_failed", "thing=%s msg=\"out of memory\"", sp + 1);
}

unsigned cluster_each_resource(const char *bare, void (*fn)(void *arg, const char *full),
			       void *arg)
{
	struct cluster_entry e[8];
	char full[8][JID_MAX];
	unsigned n = 0;
	size_t found;

	if (!cl || !atomic_load(&cl->routable))
		return 0;
	pthread_rwlock_rdlock(&cl->lock);
	found = cluster_table_find(cl->replica, bare, e, sizeof(e) / sizeof(e[0]));
	for (size_t i = 0; i < found && i < sizeof(e) / sizeof(e[0]); i++)
		if ((size_t)snprintf(full[n], sizeof(full[n]), "%s/%s", bare, e[i].resource) <
		    sizeof(full[n]))
			n++;
	pthread_rwlock_unlock(&cl->lock);
	/* Outside the lock: fn routes, which reads the replica again. */
	for (unsigned i = 0; i < n; i++)
		fn(arg, full[i]);
	return n;
}

/* Whether jid has sessions on other nodes: available ones, or any. */
static bool elsewhere(const char *jid, size_t len, bool any)
{
	struct cluster_target targets[CLUSTER_MAX_TARGETS];
	struct jid to;

	if (!cl || !atomic_load(&cl->routable) || jid_parse(&to, jid, len) < 0)
		return false;
	return route_targets(&to, STANZA_PRESENCE, any, targets) > 0;
}

bool cluster_elsewhere(const char *jid, size_t len)
{
	return elsewhere(jid, len, false);
}

/* ---- An account's sessions on several nodes ---- */

struct cluster_res *cluster_resources(const char *bare, size_t len, size_t *count)
{
	struct cluster_entry *e = NULL;
	struct cluster_res *out = NULL;
	char b[JID_MAX];
	size_t n, bytes;
	char *p;

	*count = 0;
	if (!cl || !atomic_load(&cl->routable) || len >= sizeof(b))
		return NULL;
	memcpy(b, bare, len);
	b[len] = '\0';
	pthread_rwlock_rdlock(&cl->lock);
	n = cluster_table_find(cl->replica, b, NULL, 0);
	if (n && (e = malloc(n * sizeof(*e))) != NULL) {
		cluster_table_find(cl->replica, b, e, n);
		bytes = n * sizeof(*out);
		for (size_t i = 0; i < n; i++)
			bytes += len + 1 + strlen(e[i].resource) + 1;
		out = malloc(bytes);
		p = out ? (char *)(out + n) : NULL;
		for (size_t i = 0; out && i < n; i++) {
			size_t rl = strlen(e[i].resource);

			out[i].full = p;
			out[i].v = e[i].v;
			memcpy(p, b, len);
			p[len] = '/';
			memcpy(p + len + 1, e[i].resource, rl + 1);
			p += len + 1 + rl + 1;
		}
	}
	pthread_rwlock_unlock(&cl->lock);
	free(e);
	if (n && !out)
		log_warn("cluster.resources_failed", "msg=\"out of memory: the account's sessions "
			 "on other nodes are left out\"");
	*count = out ? n : 0;
	return out;
}

bool cluster_account_elsewhere(const char *bare, size_t len)
{
	return elsewhere(bare, len, true);
}

/* A stanza for one stream as `kind`; NULL when out of memory (logged). */
static struct cluster_out *out_to(struct worker *w, struct conn *src, struct xml_node *st,
				  const char *from, const char *to, const char *kind,
				  const char *node, unsigned worker)
{
	struct jid jf, jt;
	struct cluster_out *o;

	if (jid_parse(&jf, from, strlen(from)) < 0 || jid_parse(&jt, to, strlen(to)) < 0)
		return NULL;
	o = out_new(w, src, st, &jf, &jt);
	if (!o) {
		log_warn("cluster.send_failed", "msg=\"out of memory\"");
		return NULL;
	}
	o->kind = kind;
	o->ntargets = 1;
	snprintf(o->targets[0].node, sizeof(o->targets[0].node), "%s", node);
	o->targets[0].worker = worker;
	return o;
}

static void out_go(struct worker *w, struct cluster_out *o)
{
	if (w->id == 0)
		out_send(o);
	else
		worker_post(w, 0, &o->msg, out_arrived);
}

void cluster_deliver(struct worker *w, struct conn *src, struct xml_node *st, const char *from,
		     const struct cluster_res *r)
{
	struct cluster_out *o;

	if (!cl || !atomic_load(&cl->routable))
		return;
	o = out_to(w, src, st, from, r->full, "deliver", r->v.node, r->v.worker);
	if (o)
		out_go(w, o);
}

/*
 * st as `kind` to every other node with sessions of the account `to`
 * (available ones, or any). How many nodes.
 */
static unsigned out_each_node(struct worker *w, struct conn *src, struct xml_node *st,
			      const struct jid *from, const struct jid *to, const char *kind,
			      bool any)
{
	struct cluster_target targets[CLUSTER_MAX_TARGETS];
	unsigned nt;

	if (!cl || !atomic_load(&cl->routable) || jid_has_resource(to))
		return 0;
	nt = route_targets(to, stanza_kind(st), any, targets);
	for (unsigned i = 0; i < nt; i++) {
		struct cluster_out *o = out_to(w, src, st, from->buf, to->buf, kind,
					       targets[i].node, targets[i].worker);

		if (o)
			out_go(w, o);
	}
	return nt;
}

bool cluster_route_others(struct worker *w, struct conn *src, struct xml_node *st,
			  const struct jid *from, const struct jid *to)
{
	return out_each_node(w, src, st, from, to, "stanza", false) > 0;
}

/* An entry of `kind` with a payload of our own (not a stanza) for one stream. */
static void out_raw(struct worker *w, const char *kind, const char *from, const char *to,
		    const char *payload, size_t len, const char *node, unsigned worker)
{
	size_t flen = strlen(from), tlen = strlen(to);
	struct cluster_out *o = calloc(1, sizeof(*o) + len + 1 + flen + 1 + tlen + 1);

	if (!o) {
		log_warn("cluster.send_failed", "msg=\"out of memory\"");
		return;
	}
	o->kind = kind;
	o->ntargets = 1;
	snprintf(o->targets[0].node, sizeof(o->targets[0].node), "%s", node);
	o->targets[0].worker = worker;
	o->payload_len = len;
	memcpy(o->payload, payload, len);
	o->from = o->payload + len + 1;
	memcpy(o->from, from, flen + 1);
	o->to = o->from + flen + 1;
	memcpy(o->to, to, tlen + 1);
	out_go(w, o);
}

unsigned cluster_sm_take(struct worker *w, struct conn *c, const char *bare, const char *id)
{
	struct cluster_target targets[CLUSTER_MAX_TARGETS];
	char payload[CLUSTER_NODE_NAME_MAX + 96];
	struct jid to;
	unsigned nt;

	if (!cl || !atomic_load(&cl->routable) || jid_parse(&to, bare, strlen(bare)) < 0)
		return 0;
	/* Every node with a session of the account: a detached one is still registered. */
	nt = route_targets(&to, STANZA_PRESENCE, true, targets);
	snprintf(payload, sizeof(payload), "%s %s %u %u %u", id, cl->node, w->id, c->slot, c->gen);
	for (unsigned i = 0; i < nt; i++)
		out_raw(w, "smtake", to.buf, to.buf, payload, strlen(payload), targets[i].node,
			targets[i].worker);
	return nt;
}

/*
 * A "smtake" entry: a node asks for the session with a resumption id
 * (sm_export); answered "smgive" with its state, or without one. A dead
 * node's (reaped) is answered without: its sessions died with it.
 */
static void entry_sm_take(struct worker *w, const redisReply *payload, const redisReply *from,
			  bool reaped)
{
	char buf[CLUSTER_NODE_NAME_MAX + 96], id[SM_ID_LEN + 2], node[CLUSTER_NODE_NAME_MAX + 2];
	struct strbuf out = STRBUF_INIT;
	unsigned worker, slot, gen;
	size_t hdr;

	if (payload->len >= sizeof(buf))
		return;
	memcpy(buf, payload->str, payload->len);
	buf[payload->len] = '\0';
	if (sscanf(buf, "%25s %65s %u %u %u", id, node, &worker, &slot, &gen) != 5 ||
	    !cluster_node_name_valid(node)) {
		log_warn("cluster.entry_invalid", "msg=\"a resumption request without its fields\"");
		return;
	}
	strbuf_printf(&out, "%u %u %s\n", slot, gen, id);
	hdr = out.len;
	if (reaped || !sm_export(w, from->str, id, node, &out))
		out.len = hdr;	/* not here: an answer without a state */
	if (!out.oom)
		out_raw(w, "smgive", from->str, from->str, out.data, out.len, node, worker);
	OPENSSL_cleanse(out.data, out.len);	/* the resumption id */
	strbuf_free(&out);
}

/*
 * A "smgive" entry: the answer to our request (sm_take_answered). A dead
 * node's, or one that could not be sent: nobody takes the session, its
 * stanzas are rerouted as undelivered.
 */
static void entry_sm_give(struct worker *w, const char *payload, size_t len, bool taken)
{
	const char *nl = memchr(payload, '\n', len);
	char hdr[96], id[SM_ID_LEN + 2];
	unsigned slot, gen;

	if (!nl || (size_t)(nl - payload) >= sizeof(hdr))
		return;
	memcpy(hdr, payload, (size_t)(nl - payload));
	hdr[nl - payload] = '\0';
	if (sscanf(hdr, "%u %u %25s", &slot, &gen, id) != 3)
		return;
	if (!taken)
		slot = UINT32_MAX;	/* no connection waits here for it */
	sm_take_answered(w, slot, gen, id, nl + 1, len - (size_t)(nl + 1 - payload));
}

void cluster_roster_push(struct worker *w, const char *bare, size_t len, struct xml_node *iq)
{
	struct jid to;

	/* Every node with a session of the account, available or not: it holds the roster. */
	if (jid_parse(&to, bare, len) == 0)
		out_each_node(w, NULL, iq, &to, &to, "roster", true);
}

/* ---- Presence broadcast to other nodes ---- */

#define CLUSTER_FANOUT_NODES 16

/* Per node: the stream of its first recipient's home worker (it forwards the others). */
struct cluster_fanout {
	unsigned n;
	struct {
		struct cluster_target t;
		struct strbuf rcpt;	/* bare JIDs, each followed by '\n' */
	} e[CLUSTER_FANOUT_NODES];
};

void cluster_fanout_add(struct cluster_fanout **cf, const char *jid, size_t len)
{
	struct cluster_target targets[CLUSTER_MAX_TARGETS];
	struct jid to;
	unsigned nt;

	if (!cl || !atomic_load(&cl->routable) || jid_parse(&to, jid, len) < 0)
		return;
	nt = route_targets(&to, STANZA_PRESENCE, false, targets);
	for (unsigned i = 0; i < nt; i++) {
		unsigned k = 0;

		if (!*cf && !(*cf = calloc(1, sizeof(**cf))))
			return;	/* presence is state: the next broadcast repairs it */
		while (k < (*cf)->n && strcmp((*cf)->e[k].t.node, targets[i].node) != 0)
			k++;
		if (k == (*cf)->n) {
			if (k == CLUSTER_FANOUT_NODES)
				continue;
			(*cf)->e[k].t = targets[i];
			(*cf)->n++;
		}
		strbuf_append(&(*cf)->e[k].rcpt, to.buf, to.len);
		strbuf_append(&(*cf)->e[k].rcpt, "\n", 1);
	}
}

void cluster_fanout_send(struct worker *w, struct cluster_fanout *cf, const char *tmpl,
			 size_t tlen, const char *from)
{
	if (!cf)
		return;
	for (unsigned i = 0; i < cf->n; i++) {
		struct strbuf *r = &cf->e[i].rcpt;
		size_t flen = strlen(from);
		struct cluster_out *o = r->oom ? NULL : calloc(1, sizeof(*o) + tlen + 1 + flen + 1 +
							       r->len + 1);

		if (!o) {
			log_warn("cluster.send_failed", "msg=\"out of memory\"");
			strbuf_free(r);
			continue;
		}
		o->kind = "fanout";
		o->ntargets = 1;
		o->targets[0] = cf->e[i].t;
		o->from_local_session = true;
		o->payload_len = tlen;
		memcpy(o->payload, tmpl, tlen);
		o->from = o->payload + tlen + 1;
		memcpy(o->from, from, flen + 1);
		o->to = o->from + flen + 1;
		memcpy(o->to, r->data, r->len - 1);	/* without the last '\n' */
		strbuf_free(r);
		if (w->id == 0)
			out_send(o);
		else
			worker_post(w, 0, &o->msg, out_arrived);
	}
	free(cf);
}

/* ---- Inter-node stanzas: receiving ---- */

static const redisReply *field(const redisReply *fields, const char *name)
{
	for (size_t i = 0; i + 1 < fields->elements; i += 2)
		if (fields->element[i]->type == REDIS_REPLY_STRING &&
		    strcmp(fields->element[i]->str, name) == 0)
			return fields->element[i + 1];
	return NULL;
}

static void lag_record(struct cluster_inbound *ib, uint64_t ms)
{
	unsigned next = atomic_load_explicit(&ib->lag_next, memory_order_relaxed);

	atomic_store_explicit(&ib->lag_ms[next], ms, memory_order_relaxed);
	atomic_store_explicit(&ib->lag_next, (next + 1) % CLUSTER_LAG_SAMPLES,
			      memory_order_relaxed);
	if (atomic_load_explicit(&ib->lag_n, memory_order_relaxed) < CLUSTER_LAG_SAMPLES)
		atomic_fetch_add_explicit(&ib->lag_n, 1, memory_order_relaxed);
}

/*
 * Routes one stanza of an entry to `to` (to[0..len)). A presence fanned
 * out to several recipients gets each one's 'to' (it travels without).
 */
static bool entry_route_one(struct worker *w, const redisReply *payload, const struct jid *jf,
			    const char *to, size_t len, bool local, bool reaped, bool set_to)
{
	struct xml_node *st;
	struct arena a;
	struct jid jt;
	bool ok = false;

	if (jid_parse(&jt, to, len) < 0)
		return false;
	arena_init(&a, 4096);
	st = stored_xml_parse(w->xml, &a, payload->str, payload->len);
	if (st && (!set_to || xml_attr_set(&a, st, "to", jt.buf) == 0)) {
		router_route_cluster(w, st, jf, &jt, local, !reaped);
		ok = true;
	}
	arena_release(&a);
	arena_reset(&w->tmp);
	return ok;
}

/*
 * Routes one stream entry [id, [field, value, ...]]. For our stream
 * (reaped = false) the stanza is routed as one forwarded from another
 * worker; for a dead node's (reaped = true) it is routed here afresh: its
 * recipient's resources are gone from the registry, so messages end up
 * offline and iqs are answered with an error (RFC 6121 8.5).
 */
static void service_hint(const redisReply *fields, const redisReply *from);

/* A "deliver" entry (to one session here) or a "roster" one (to the account's sessions here). */
static void entry_deliver(struct worker *w, const redisReply *payload, const struct jid *jf,
			  const redisReply *to, bool roster)
{
	struct xml_node *st;
	struct arena a;
	struct jid jt;

	if (jid_parse(&jt, to->str, to->len) < 0) {
		log_warn("cluster.entry_invalid", "msg=\"an inbound entry without a usable address\"");
		return;
	}
	arena_init(&a, 4096);
	st = stored_xml_parse(w->xml, &a, payload->str, payload->len);
	if (!st)
		log_warn("cluster.entry_invalid", "msg=\"an inbound stanza does not parse\"");
	else if (roster)
		roster_pushed_elsewhere(w, &jt, st);
	else
		router_deliver_cluster(w, st, jf, &jt);
	arena_release(&a);
	arena_reset(&w->tmp);
}

static void entry_route(struct worker *w, const redisReply *entry, struct cluster_inbound *ib)
{
	bool reaped = ib == NULL;
	const redisReply *fields, *payload, *from, *to, *local, *ts, *kind;
	bool fanout, is_local, ok = true;
	struct jid jf;

	if (entry->type != REDIS_REPLY_ARRAY || entry->elements < 2 ||
	    entry->element[1]->type != REDIS_REPLY_ARRAY)
		return;
	fields = entry->element[1];
	payload = field(fields, "payload");
	from = field(fields, "from");
	to = field(fields, "to");
	local = field(fields, "local");
	ts = field(fields, "ts");
	kind = field(fields, "kind");
	if (!payload || !from || !to || !kind || jid_parse(&jf, from->str, from->len) < 0) {
		log_warn("cluster.entry_invalid", "msg=\"an inbound stream entry without a usable "
			 "stanza or address\"");
		return;
	}
	if (ts && !reaped) {
		uint64_t sent = strtoull(ts->str, NULL, 10), now = wall_ms();

		lag_record(ib, now > sent ? now - sent : 0);
	}
	if (strcmp(kind->str, "smtake") == 0) {
		entry_sm_take(w, payload, from, reaped);
		goto counted;
	}
	if (strcmp(kind->str, "smgive") == 0) {
		entry_sm_give(w, payload->str, payload->len, !reaped);
		goto counted;
	}
	/*
	 * For sessions here, the recipient's side done on the sender's node:
	 * a copy for one session (or for the account's sessions to choose
	 * from), and the account's roster changed there. A dead node's copy
	 * goes to the same place (router_deliver_cluster: offline, its
	 * session being gone); its roster changes are in the store already.
	 */
	if (strcmp(kind->str, "deliver") == 0) {
		entry_deliver(w, payload, &jf, to, false);
		goto counted;
	}
	if (strcmp(kind->str, "roster") == 0) {
		if (!reaped)
			entry_deliver(w, payload, &jf, to, true);
		goto counted;
	}
	fanout = strcmp(kind->str, "fanout") == 0;
	is_local = local && local->str[0] == '1';
	if (!reaped && strcmp(kind->str, "service") == 0)
		service_hint(fields, from);	/* the sender, before the room answers it */
	if (!fanout) {
		ok = entry_route_one(w, payload, &jf, to->str, to->len, is_local, reaped, false);
	} else if (!reaped) {
		/* One presence for every recipient on this node; a dead node's is dropped. */
		for (const char *p = to->str, *end = to->str + to->len, *nl; p < end; p = nl + 1) {
			nl = memchr(p, '\n', (size_t)(end - p));
			if (!nl)
				nl = end;
			ok &= entry_route_one(w, payload, &jf, p, (size_t)(nl - p), is_local, false,
					      true);
		}
	}
	if (!ok)
		log_warn("cluster.entry_invalid", "msg=\"an inbound stanza does not parse\"");
counted:
	if (reaped)
		cl->reaped_entries++;	/* worker 0, the reaper */
	else
		atomic_fetch_add_explicit(&ib->received, 1, memory_order_relaxed);
}

static void in_got(struct credis *c, redisReply *r, void *arg);

/* Reads the next batch of a worker's stream (blocking on its own connection). */
static void in_read(struct cluster_inbound *ib)
{
	if (ib->reading || ib->settling || !ib->c.up || atomic_load(&cl->leaving))
		return;
	if (cluster_redis_cmdf(&ib->c, in_got, ib, "XREADGROUP GROUP " CLUSTER_GROUP " %s COUNT %d "
			       "BLOCK %d STREAMS %s %s", cl->node, CLUSTER_READ_COUNT,
			       CLUSTER_READ_BLOCK_MS, ib->key, ib->backlog ? "0" : ">") == 0)
		ib->reading = true;
}

static void group_made(struct credis *c, redisReply *r, void *arg)
{
	if (r && r->type == REDIS_REPLY_ERROR && !reply_is_error(r, "BUSYGROUP"))
		log_reply_error("cluster.group_failed", r);
	in_read(arg);
}

static void group_make(struct cluster_inbound *ib)
{
	/* From the start: what was sent while we were away is ours to deliver. */
	cluster_redis_cmdf(&ib->c, group_made, ib, "XGROUP CREATE %s " CLUSTER_GROUP " 0 MKSTREAM",
			   ib->key);
}

/*
 * A batch of entries routed here, waiting for what routing them wrote
 * (offline messages, archive rows) to commit before the stream forgets
 * them: a node killed in between leaves them pending for its reaper.
 */
struct cluster_settle {
	struct storage_req req;		/* first */
	struct cluster_inbound *ib;
	unsigned n;
	char ids[CLUSTER_READ_COUNT][CLUSTER_ENTRY_ID_MAX];
};

/* XACKs the batch's entries and reads the next one. */
static void in_acked(struct cluster_inbound *ib, struct cluster_settle *b)
{
	const char *argv[3 + CLUSTER_READ_COUNT] = { "XACK", ib->key, CLUSTER_GROUP };
	size_t lens[3 + CLUSTER_READ_COUNT];

	for (unsigned i = 0; i < b->n; i++)
		argv[3 + i] = b->ids[i];
	for (unsigned i = 0; i < 3 + b->n; i++)
		lens[i] = strlen(argv[i]);
	/*
	 * The connection went meanwhile: the entries stay pending and are
	 * read again from id 0 (delivered twice rather than lost).
	 */
	if (b->n && ib->c.up)
		cluster_redis_cmd(&ib->c, NULL, NULL, (int)(3 + b->n), argv, lens);
	in_read(ib);
}

static void in_settled(struct storage_req *req)
{
	struct cluster_settle *b = (struct cluster_settle *)req;
	struct cluster_inbound *ib = b->ib;

	if (cl && ib->w) {
		ib->settling = false;
		in_acked(ib, b);
	}
	free(b);
}

static void in_got(struct credis *c, redisReply *r, void *arg)
{
	struct cluster_inbound *ib = arg;
	struct storage_queue *q = ib->w->srv->store;
	struct cluster_settle *b;
	uint64_t mark;
	size_t n = 0;

	ib->reading = false;
	if (!r)
		return;
	if (reply_is_error(r, "NOGROUP")) {
		/* The stream went (we were reaped, or Redis lost it): start over. */
		ib->backlog = true;
		group_make(ib);
		return;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		/* Redis loading its data, or out of memory: again in a moment, not at once. */
		log_reply_error("cluster.read_failed", r);
		ib->retry_ms = loop_now_ms(ib->w->loop) + CLUSTER_RETRY_MS;
		return;
	}
	b = calloc(1, sizeof(*b));
	if (!b) {
		/* Nothing acknowledged: the entries are read again later (id 0). */
		ib->backlog = true;
		ib->retry_ms = loop_now_ms(ib->w->loop) + CLUSTER_RETRY_MS;
		return;
	}
	b->ib = ib;
	mark = storage_queue_submitted(q);
	if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
	    r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2) {
		const redisReply *entries = r->element[0]->element[1];

		for (size_t i = 0; i < entries->elements && b->n < CLUSTER_READ_COUNT; i++) {
			const redisReply *e = entries->element[i];

			if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
			    e->element[0]->type != REDIS_REPLY_STRING ||
			    e->element[0]->len >= CLUSTER_ENTRY_ID_MAX)
				continue;
			/* A pending entry whose data was trimmed away: nothing left to deliver. */
			if (e->element[1]->type == REDIS_REPLY_ARRAY)
				entry_route(ib->w, e, ib);
			memcpy(b->ids[b->n++], e->element[0]->str, e->element[0]->len + 1);
			n++;
		}
	}
	/* Our own backlog (id 0) ends when it comes back empty. */
	if (ib->backlog && n == 0)
		ib->backlog = false;
	/*
	 * Routed at their recipients' home: done as far as the stream goes
	 * once what that wrote committed (a barrier behind those writes,
	 * durable.h), at once when nothing was written.
	 */
	if (storage_queue_submitted(q) == mark) {
		in_acked(ib, b);
		free(b);
		return;
	}
	b->req.op = STORAGE_OP_RUN;
	b->req.run = cluster_noop;
	b->req.done = in_settled;
	b->req.inbox = &ib->w->inbox;
	ib->settling = true;
	storage_queue_submit(q, &b->req);
}

static void in_up(struct credis *c)
{
	struct cluster_inbound *ib = c->owner;

	ib->reading = false;
	ib->backlog = true;
	group_make(ib);
}

/* ---- A dead node's stream (we won its reap) ---- */

struct reap_ctx {
	char key[CLUSTER_KEY_MAX];
	char alive[CLUSTER_KEY_MAX];	/* the dead node's heartbeat key (back: stop) */
	bool claimed;	/* pending entries done; now those never delivered */
};

static void reap_next(struct reap_ctx *rc);

/*
 * The end of a dead node's stream: deleted only once what routing its
 * entries wrote committed. The entries were routed on worker 0 and
 * forwarded to their recipients' home workers, so each worker gets a
 * message behind those forwards (mailboxes keep each sender's order) and
 * submits a barrier behind what they wrote; the last barrier deletes the
 * stream. Killed before that, the reaper leaves the stream to the next
 * one (duplicates, not losses).
 */
struct reap_fin {
	unsigned left;			/* barriers not completed (worker 0 counts) */
	char key[CLUSTER_KEY_MAX];
	char alive[CLUSTER_KEY_MAX];
};

struct reap_fin_msg {
	union {
		struct worker_msg msg;
		struct storage_req req;
	};
	struct reap_fin *fin;
};

/*
 * ARGV: a dead node's stream, its heartbeat key, force. Deleted only when
 * nothing was added since the reaper's last read (a node that had not
 * seen the reset yet; 0: read on), or at once with force (it never made
 * its group). Never once the node is back under its name: the stream is
 * its new run's then (it made its group on it already, or is about to).
 */
static const char lua_reap_del[] =
	"local k = ARGV[1]\n"
	"if redis.call('EXISTS', ARGV[2]) == 1 then return 1 end\n"
	"if ARGV[3] == '1' then redis.call('DEL', k); return 1 end\n"
	"local ok, s = pcall(redis.call, 'XINFO', 'STREAM', k)\n"
	"if not ok then return 1 end\n"
	"local last\n"
	"for i = 1, #s, 2 do if s[i] == 'last-generated-id' then last = s[i + 1] end end\n"
	"for _, g in ipairs(redis.call('XINFO', 'GROUPS', k)) do\n"
	"  for i = 1, #g, 2 do\n"
	"    if g[i] == 'last-delivered-id' and g[i + 1] ~= last then return 0 end\n"
	"  end\n"
	"end\n"
	"redis.call('DEL', k)\n"
	"return 1\n";

static void reap_deleted(struct credis *c, redisReply *r, void *arg)
{
	struct reap_fin *fin = arg;
	struct reap_ctx *rc;

	if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 0 &&
	    (rc = calloc(1, sizeof(*rc))) != NULL) {
		/* Entries arrived after our last read: those too, then again. */
		memcpy(rc->key, fin->key, sizeof(rc->key));
		memcpy(rc->alive, fin->alive, sizeof(rc->alive));
		rc->claimed = true;
		reap_next(rc);
	} else if (r && r->type == REDIS_REPLY_ERROR) {
		log_reply_error("cluster.reap_failed", r);
	}
	free(fin);
}

/* Worker 0: one more barrier completed (or could not be made); the last one deletes. */
static void reap_fin_one(struct reap_fin *fin)
{
	if (--fin->left)
		return;
	if (!conn_reg()->up || cluster_redis_cmdf(conn_reg(), reap_deleted, fin, "EVAL %s 0 %s %s 0",
						  lua_reap_del, fin->key, fin->alive) < 0)
		free(fin);	/* the stream stays: the next reaper routes it again */
}

static void reap_fin_back(struct worker *w, struct worker_msg *msg)
{
	struct reap_fin_msg *m = (struct reap_fin_msg *)msg;
	struct reap_fin *fin = m->fin;

	free(m);
	reap_fin_one(fin);
}

/* On the worker that submitted it: back to worker 0, which owns the Redis connection. */
static void reap_fin_done(struct storage_req *req)
{
	struct reap_fin_msg *m = (struct reap_fin_msg *)req;
	struct worker *w = (struct worker *)((char *)req->inbox - offsetof(struct worker, inbox));

	if (!cl || !cl->w0) {
		free(m);	/* shutting down: the stream stays for another reaper */
		return;
	}
	memset(&m->msg, 0, sizeof(m->msg));
	if (w == cl->w0)
		reap_fin_back(w, &m->msg);
	else
		worker_post(w, 0, &m->msg, reap_fin_back);
}

/* On each worker, behind the forwards worker 0 posted: a barrier. */
static void reap_fin_arrived(struct worker *w, struct worker_msg *msg)
{
	struct reap_fin_msg *m = (struct reap_fin_msg *)msg;

	memset(&m->req, 0, sizeof(m->req));
	m->req.op = STORAGE_OP_RUN;
	m->req.run = cluster_noop;
	m->req.done = reap_fin_done;
	m->req.inbox = &w->inbox;
	storage_queue_submit(w->srv->store, &m->req);
}

static void reap_finish(struct reap_ctx *rc)
{
	unsigned nw = cl->srv->nworkers;
	struct reap_fin *fin = calloc(1, sizeof(*fin));

	if (!fin) {
		free(rc);
		return;	/* the stream stays: the next reaper routes it again */
	}
	memcpy(fin->key, rc->key, sizeof(fin->key));
	memcpy(fin->alive, rc->alive, sizeof(fin->alive));
	free(rc);
	/* One more than the workers: the loop's own, so no barrier finishes it early. */
	fin->left = nw + 1;
	for (unsigned k = 0; k < nw; k++) {
		struct reap_fin_msg *m = calloc(1, sizeof(*m));

		if (!m) {
			/* Counted as done: a missing barrier must not keep the stream forever. */
			reap_fin_one(fin);
			continue;
		}
		m->fin = fin;
		if (k == cl->w0->id)
			reap_fin_arrived(cl->w0, &m->msg);
		else
			worker_post(cl->w0, k, &m->msg, reap_fin_arrived);
	}
	reap_fin_one(fin);
}

static void reap_entries(const redisReply *entries)
{
	for (size_t i = 0; i < entries->elements; i++)
		entry_route(cl->w0, entries->element[i], NULL);
}

static void reap_got(struct credis *c, redisReply *r, void *arg)
{
	struct reap_ctx *rc = arg;
	const redisReply *entries = NULL;

	if (!r) {
		free(rc);
		return;	/* another survivor's reap lock expires and it tries again */
	}
	if (reply_is_error(r, "NOGROUP") || (r->type == REDIS_REPLY_ERROR && !rc->claimed)) {
		/* The dead node never made its group: every entry is unread. */
		cluster_redis_cmdf(conn_reg(), NULL, NULL, "EVAL %s 0 %s %s 1", lua_reap_del, rc->key,
				   rc->alive);
		free(rc);
		return;
	}
	if (!rc->claimed) {
		/* XAUTOCLAIM: [next, entries, deleted] */
		if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2)
			entries = r->element[1];
		if (entries)
			reap_entries(entries);
		rc->claimed = true;
		reap_next(rc);
		return;
	}
	/* XREADGROUP: [[key, entries]] or nil when nothing is left */
	if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
	    r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2)
		entries = r->element[0]->element[1];
	if (entries && entries->elements) {
		reap_entries(entries);
		reap_next(rc);
		return;
	}
	reap_finish(rc);
}

static void reap_next(struct reap_ctx *rc)
{
	int ret;

	if (!rc->claimed)
		ret = cluster_redis_cmdf(conn_reg(), reap_got, rc,
					 "XAUTOCLAIM %s " CLUSTER_GROUP " %s 0 0-0 COUNT %d",
					 rc->key, cl->node, CLUSTER_REAP_COUNT);
	else
		ret = cluster_redis_cmdf(conn_reg(), reap_got, rc, "XREADGROUP GROUP " CLUSTER_GROUP
					 " %s COUNT %d STREAMS %s >", cl->node, CLUSTER_REAP_COUNT,
					 rc->key);
	if (ret < 0)
		free(rc);
}

static void reap_stream(const char *dead, unsigned worker)
{
	struct reap_ctx *rc = calloc(1, sizeof(*rc));

	if (!rc)
		return;
	stream_of(rc->key, sizeof(rc->key), dead, worker);
	key_of(rc->alive, sizeof(rc->alive), "alive:", dead);
	reap_next(rc);
}

/* ---- The timers ---- */

void cluster_watch(struct worker *w)
{
	struct cluster_inbound *ib;
	uint64_t expirations, now;

	if (!cl)
		return;
	ib = &cl->in[w->id];
	if (read(ib->tfd, &expirations, sizeof(expirations)) < 0)
		return;
	now = loop_now_ms(w->loop);
	cluster_redis_tick(&ib->c, now);
	if (ib->retry_ms && now >= ib->retry_ms) {
		ib->retry_ms = 0;
		in_read(ib);
	}
	if (w->id != 0)
		return;
	for (unsigned i = 0; i < CL_CONN_IN; i++)
		cluster_redis_tick(&cl->conns[i], now);
	if (cl->joined && !atomic_load(&cl->leaving) && now >= cl->next_beat_ms) {
		cl->next_beat_ms = now + cl->ttl / 3;
		beat();
	}
	/* A join the server refused (name taken, Redis loading): again. */
	if (!cl->joined && !cl->joining && !atomic_load(&cl->leaving) && cl->join_retry_ms &&
	    now >= cl->join_retry_ms && conn_reg()->up) {
		cl->join_retry_ms = 0;
		join();
	}
}

void cluster_polled(struct worker *w, uint32_t id, uint32_t gen, int res, bool more)
{
	if (!cl || id / 2 > CL_CONN_IN)
		return;
	if (id / 2 == CL_CONN_IN)
		cluster_redis_polled(&cl->in[w->id].c, id, gen, res, more);
	else if (w->id == 0)
		cluster_redis_polled(&cl->conns[id / 2], id, gen, res, more);
}

/* ---- Status ---- */

json_t *cluster_status_json(struct server *srv)
{
	json_t *r = json_object(), *nodes, *lag;
	uint64_t max = 0, sum = 0, samples = 0, received = 0, last = 0;
	bool last_set = false;
	struct credis *reg;

	if (!cl) {
		json_object_set_new(r, "enabled", json_false());
		return r;
	}
	reg = conn_reg();
	nodes = json_array();
	json_object_set_new(r, "enabled", json_true());
	json_object_set_new(r, "node", json_string(cl->node));
	json_object_set_new(r, "redis", json_string(cl->uri_shown));
	json_object_set_new(r, "state", json_string(reg->up && cl->joined ? "connected" :
						    reg->up ? "joining" :
						    reg->down_since_ms ? "down" : "connecting"));
	json_object_set_new(r, "down_since_ms", json_integer((json_int_t)reg->down_since_ms));
	json_object_set_new(r, "ttl_ms", json_integer(cl->ttl));
	json_object_set_new(r, "sessions", json_integer((json_int_t)cluster_table_size(cl->own)));
	pthread_rwlock_rdlock(&cl->lock);
	json_object_set_new(r, "replica_sessions",
			    json_integer((json_int_t)cluster_table_size(cl->replica)));
	pthread_rwlock_unlock(&cl->lock);
	json_object_set_new(r, "heartbeat_ms", json_integer((json_int_t)cl->beat_wall_ms));
	owner_status(r);
	for (unsigned i = 0; i < cl->nnodes; i++) {
		const struct cluster_node *n = &cl->nodes[i];

		json_t *o = json_pack("{s:s, s:b, s:I, s:b, s:I, s:I, s:I, s:I}",
				      "name", n->name, "alive", n->alive,
				      "dead_since_ms", (json_int_t)n->dead_since_ms,
				      "self", strcmp(n->name, cl->node) == 0,
				      "sessions", (json_int_t)n->sessions,
				      "pending", (json_int_t)n->pending,
				      "unread", (json_int_t)n->unread,
				      "oldest_pending_ms", (json_int_t)n->oldest_ms);

		json_array_append_new(nodes, o);
	}
	json_object_set_new(r, "nodes", nodes);
	/*
	 * Every worker's samples together (each reads its own stream); read
	 * while they are written, so a sample or two may be from either side
	 * of the moment: good enough for a gauge.
	 */
	for (unsigned k = 0; k < cl->nworkers; k++) {
		struct cluster_inbound *ib = &cl->in[k];
		unsigned n = atomic_load_explicit(&ib->lag_n, memory_order_relaxed);
		unsigned next = atomic_load_explicit(&ib->lag_next, memory_order_relaxed);

		for (unsigned i = 0; i < n; i++) {
			uint64_t v = atomic_load_explicit(&ib->lag_ms[i], memory_order_relaxed);

			sum += v;
			max = v > max ? v : max;
		}
		samples += n;
		received += atomic_load_explicit(&ib->received, memory_order_relaxed);
		if (n && (k == 0 || !last_set)) {
			last = atomic_load_explicit(&ib->lag_ms[(next + CLUSTER_LAG_SAMPLES - 1) %
							       CLUSTER_LAG_SAMPLES],
						    memory_order_relaxed);
			last_set = true;
		}
	}
	lag = json_pack("{s:I, s:I, s:I, s:I}", "samples", (json_int_t)samples,
			"last_ms", (json_int_t)last,
			"avg_ms", (json_int_t)(samples ? sum / samples : 0),
			"max_ms", (json_int_t)max);
	json_object_set_new(r, "delivery_lag", lag);
	json_object_set_new(r, "stanzas", json_pack("{s:I, s:I, s:I, s:I}",
						    "sent", (json_int_t)cl->sent,
						    "received", (json_int_t)received,
						    "reaped", (json_int_t)cl->reaped_entries,
						    "send_failed", (json_int_t)cl->send_failed));
	return r;
}

/* ---- Start and stop ---- */

/*
 * A blocking client for what happens before the loop runs and after it
 * ended (the name claim and its release): connected, authenticated, the
 * database selected. NULL when Redis does not answer (2 s); *fatal is set
 * when it answers but refuses (wrong password, no such database), with
 * the reason on stderr.
 */
static redisContext *sync_connect(bool *fatal)
{
	struct timeval tv = { 2, 0 };
	redisContext *c = redisConnectWithTimeout(cl->uri.host, cl->uri.port, tv);
	redisReply *r;

	*fatal = false;
	if (!c || c->err) {
		if (c)
			redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv);
	if (cl->uri.password[0]) {
		r = redisCommand(c, "AUTH %s", cl->uri.password);
		*fatal = !r || r->type == REDIS_REPLY_ERROR;
		if (*fatal)
			fprintf(stderr, "stanzad: cluster: Redis at %s refused the password\n",
				cl->uri_shown);
		if (r)
			freeReplyObject(r);
	}
	if (!*fatal && cl->uri.db) {
		r = redisCommand(c, "SELECT %u", cl->uri.db);
		*fatal = !r || r->type == REDIS_REPLY_ERROR;
		if (*fatal)
			fprintf(stderr, "stanzad: cluster: Redis at %s has no database %u\n",
				cl->uri_shown, cl->uri.db);
		if (r)
			freeReplyObject(r);
	}
	if (*fatal) {
		redisFree(c);
		return NULL;
	}
	return c;
}

/*
 * Claims the node name before anything starts: a second live node of the
 * same name must not start at all. Redis not answering is no reason to
 * stay down (it may come up later; the join checks the name then).
 */
static int claim_name(void)
{
	char key[CLUSTER_KEY_MAX];
	redisContext *c;
	redisReply *r;
	bool fatal;
	int ret = 0;

	c = sync_connect(&fatal);
	if (!c) {
		if (fatal)
			return -EACCES;
		log_warn("cluster.claim_skipped", "uri=%s msg=\"Redis does not answer at startup: "
			 "joining once it does\"", cl->uri_shown);
		return 0;
	}
	key_of(key, sizeof(key), "alive:", cl->node);
	r = redisCommand(c, "SET %s %s NX PX %u", key, cl->token, cl->ttl);
	if (r && r->type == REDIS_REPLY_NIL) {
		fprintf(stderr, "stanzad: cluster: node name '%s' is in use by a live node of %s "
			"(its heartbeat key %s has not expired): give this node another "
			"--node-name, or wait %u ms after that node stopped\n", cl->node,
			cl->srv->cfg->domain, key, cl->ttl);
		ret = -EADDRINUSE;
	} else if (!r || r->type == REDIS_REPLY_ERROR) {
		log_warn("cluster.claim_failed", "msg=\"%s\"", r ? "Redis refused the claim"
								     : "no answer");
	} else {
		cl->claimed = true;
	}
	if (r)
		freeReplyObject(r);
	redisFree(c);
	return ret;
}

/*
 * A node that claimed its name but never joined (its startup failed
 * after the claim, e.g. a port in use) gives the name back at once, so
 * that starting it again does not have to wait for the claim to expire.
 */
static void release_claim(void)
{
	static const char lua_release[] =
		"if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end\n"
		"return 1\n";
	char key[CLUSTER_KEY_MAX];
	redisContext *c;
	redisReply *r;
	bool fatal;

	if (!cl->claimed || cl->ever_joined || !(c = sync_connect(&fatal)))
		return;
	key_of(key, sizeof(key), "alive:", cl->node);
	r = redisCommand(c, "EVAL %s 1 %s %s", lua_release, key, cl->token);
	if (r)
		freeReplyObject(r);
	redisFree(c);
}

int cluster_init(struct server *srv)
{
	const struct config *cfg = srv->cfg;
	unsigned char rnd[8];
	int ret;

	if (!cfg->cluster || !cfg->cluster[0])
		return 0;
	cl = calloc(1, sizeof(*cl));
	if (!cl)
		return -ENOMEM;
	cl->srv = srv;
	cl->nworkers = cfg->workers ? cfg->workers : 1;
	for (unsigned k = 0; k < SERVER_MAX_WORKERS; k++)
		cl->in[k].tfd = -1;
	if (cluster_uri_parse(&cl->uri, cfg->cluster) < 0) {
		fprintf(stderr, "stanzad: cluster must be redis://[:PASSWORD@]HOST:PORT[/DB]\n");
		ret = -EINVAL;
		goto err_free;
	}
	cluster_uri_masked(&cl->uri, cl->uri_shown, sizeof(cl->uri_shown));
	snprintf(cl->node, sizeof(cl->node), "%s", cfg->node_name);
	snprintf(cl->prefix, sizeof(cl->prefix), "stanzad:%s:", cfg->domain);
	cl->ttl = cfg->cluster_ttl;
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		memset(rnd, 0, sizeof(rnd));
	snprintf(cl->token, sizeof(cl->token), "%d-%02x%02x%02x%02x%02x%02x%02x%02x", getpid(),
		 rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
	snprintf(cl->info, sizeof(cl->info),
		 "{\"workers\":%u,\"started\":%lld,\"pid\":%d,\"version\":\"%s\"}", cl->nworkers,
		 (long long)srv->started, getpid(), STANZAD_VERSION);
	cl->own = cluster_table_new();
	cl->replica = cluster_table_new();
	if (!cl->own || !cl->replica || pthread_rwlock_init(&cl->lock, NULL) != 0) {
		ret = -ENOMEM;
		goto err_tables;
	}
	ret = claim_name();
	if (ret < 0)
		goto err_lock;
	log_info("cluster.start", "name=%s uri=%s ttl_ms=%u prefix=%s", cl->node, cl->uri_shown,
		 cl->ttl, cl->prefix);
	return 0;

err_lock:
	pthread_rwlock_destroy(&cl->lock);
err_tables:
	cluster_table_free(cl->own);
	cluster_table_free(cl->replica);
	cluster_uri_wipe(&cl->uri);
err_free:
	free(cl);
	cl = NULL;
	return ret;
}

void cluster_shutdown(void)
{
	if (!cl)
		return;
	release_claim();
	for (unsigned k = 0; k < SERVER_MAX_WORKERS; k++)
		if (cl->in[k].tfd >= 0)
			close(cl->in[k].tfd);
	strbuf_free(&cl->held);
	pthread_rwlock_destroy(&cl->lock);
	cluster_table_free(cl->own);
	cluster_table_free(cl->replica);
	cluster_uri_wipe(&cl->uri);
	free(cl);
	cl = NULL;
}

int cluster_worker_start(struct worker *w)
{
	static const char *names[CL_CONN_IN] = { "registry", "events" };
	struct itimerspec its = {
		.it_interval = { 0, CLUSTER_TICK_MS * 1000000L },
		.it_value = { 0, CLUSTER_TICK_MS * 1000000L },
	};
	struct cluster_inbound *ib;
	int ret;

	if (!cl || w->id >= SERVER_MAX_WORKERS)
		return 0;
	/* Every worker: its timer and its inbound stream's connection. */
	ib = &cl->in[w->id];
	ib->w = w;
	stream_of(ib->key, sizeof(ib->key), cl->node, w->id);
	ib->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (ib->tfd < 0)
		return -errno;
	if (timerfd_settime(ib->tfd, 0, &its, NULL) < 0)
		return -errno;
	ret = loop_watch(w->loop, ib->tfd, WORKER_WATCH_CLUSTER);
	if (ret < 0)
		return ret;
	ib->c = (struct credis){ .w = w, .uri = &cl->uri, .name = "inbound", .id = CL_CONN_IN,
				 .on_up = in_up, .owner = ib };
	cluster_redis_start(&ib->c);
	if (w->id != 0)
		return 0;
	/* Worker 0: membership, registry and the events channel. */
	cl->w0 = w;
	for (unsigned i = 0; i < CL_CONN_IN; i++)
		cl->conns[i] = (struct credis){ .w = w, .uri = &cl->uri, .name = names[i],
						.id = i };
	cl->conns[CL_CONN_REG].on_up = reg_up;
	cl->conns[CL_CONN_REG].on_down = reg_down;
	cl->conns[CL_CONN_EVENTS].on_up = events_up;
	for (unsigned i = 0; i < CL_CONN_IN; i++)
		cluster_redis_start(&cl->conns[i]);
	return 0;
}

void cluster_leave(struct worker *w)
{
	if (!cl || w->id != 0 || atomic_load(&cl->leaving))
		return;
	owner_release();
	if (cl->joined)
		cluster_redis_cmdf(conn_reg(), NULL, NULL, "EVAL %s 0 %s %s %s %u", lua_leave,
				   cl->prefix, cl->node, cl->token, 2 * cl->ttl);
	/* The loop may stop within this turn: the command goes out now. */
	cluster_redis_flush(conn_reg());
	atomic_store(&cl->leaving, true);
	cl->joined = false;
	atomic_store(&cl->routable, false);
	log_info("cluster.leave", "name=%s", cl->node);
}

void cluster_worker_stop(struct worker *w)
{
	if (!cl || w->id >= SERVER_MAX_WORKERS || !cl->in[w->id].w)
		return;
	cluster_redis_stop(&cl->in[w->id].c);
	cl->in[w->id].w = NULL;
	if (w->id != 0)
		return;
	for (unsigned i = 0; i < CL_CONN_IN; i++)
		cluster_redis_stop(&cl->conns[i]);
	cl->w0 = NULL;
}
