/* SPDX-License-Identifier: MIT */
/*
 * hiredis on the io_uring loop: see cluster_redis.h.
 *
 * hiredis calls the adapter's addRead/delRead/addWrite/delWrite to say
 * which readiness it waits for, and cleanup when its context is freed
 * (by a failed connect, a dropped connection, or us). cleanup is the one
 * place that forgets the context: it cancels the polls, bumps the
 * generation so completions still in flight for the old socket are
 * dropped, and schedules the next connect.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/sds.h>

#include "cluster_redis.h"
#include "log.h"
#include "loop.h"
#include "worker.h"

/*
 * hiredis reads 16 KB per call: 1024 calls cover a 16 MB reply (a dead
 * node's stream is read 10000 entries at a time, a few MB).
 */
#define CREDIS_READS_PER_WAKEUP	1024

/* What travels with a command to its reply. */
struct credis_call {
	credis_reply_fn fn;
	void *arg;
};

static uint64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- The adapter ---- */

static void credis_add_read(void *data)
{
	struct credis *c = data;

	if (c->reading || !c->ac)
		return;
	if (loop_poll(c->w->loop, c->ac->c.fd, POLLIN, true, 2 * c->id, c->gen) == 0)
		c->reading = true;
}

static void credis_del_read(void *data)
{
	struct credis *c = data;

	if (!c->reading)
		return;
	c->reading = false;
	loop_poll_cancel(c->w->loop, 2 * c->id, c->gen);
}

static void credis_add_write(void *data)
{
	struct credis *c = data;

	if (c->writing || !c->ac)
		return;
	if (loop_poll(c->w->loop, c->ac->c.fd, POLLOUT, false, 2 * c->id + 1, c->gen) == 0)
		c->writing = true;
}

static void credis_del_write(void *data)
{
	struct credis *c = data;

	if (!c->writing)
		return;
	c->writing = false;
	loop_poll_cancel(c->w->loop, 2 * c->id + 1, c->gen);
}

static void credis_schedule(struct credis *c)
{
	uint64_t now = loop_now_ms(c->w->loop);

	if (c->stopping)
		return;
	c->retry_at_ms = now + c->backoff_ms;
	c->backoff_ms = c->backoff_ms * 2 > CREDIS_BACKOFF_MAX_MS ? CREDIS_BACKOFF_MAX_MS
								   : c->backoff_ms * 2;
}

/* The context is being freed (by hiredis or by us): forget it, come back later. */
static void credis_cleanup(void *data)
{
	struct credis *c = data;

	credis_del_read(c);
	credis_del_write(c);
	c->ac = NULL;
	c->up = false;
	c->gen = (c->gen + 1) & LOOP_GEN_MASK;
	if (!c->down_since_ms)
		c->down_since_ms = wall_ms();
	credis_schedule(c);
	/* Once per outage: a connection that was up, or the first attempts that failed. */
	if (!c->outage_logged && !c->stopping && c->on_down) {
		c->outage_logged = true;
		c->on_down(c);
	}
}

/* ---- Connecting ---- */

static void credis_ready(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct credis *c = ac->data;
	redisReply *r = reply;

	if (!r)
		return;	/* gone meanwhile */
	if (r->type == REDIS_REPLY_ERROR) {
		char msg[160];

		log_error("cluster.redis_refused", "conn=%s msg=%s", c->name,
			  log_sanitize(msg, sizeof(msg), r->str, r->len));
		redisAsyncDisconnect(ac);
		return;
	}
	if (privdata)	/* AUTH or SELECT: the PING after them says when it is ready */
		return;
	c->up = true;
	c->backoff_ms = CREDIS_BACKOFF_MIN_MS;
	c->down_since_ms = 0;
	c->outage_logged = false;
	if (c->on_up)
		c->on_up(c);	/* ever_up still says whether this is the first time */
	c->ever_up = true;
}

static void credis_connected(const redisAsyncContext *ac, int status)
{
	struct credis *c = ac->data;
	redisAsyncContext *a = (redisAsyncContext *)ac;

	if (status != REDIS_OK)
		return;	/* cleanup follows and schedules the next attempt */
	/* AUTH and SELECT when asked for; PING alone says the server answers. */
	if (c->uri->password[0])
		redisAsyncCommand(a, credis_ready, c, "AUTH %s", c->uri->password);
	if (c->uri->db)
		redisAsyncCommand(a, credis_ready, c, "SELECT %u", c->uri->db);
	redisAsyncCommand(a, credis_ready, NULL, "PING");
}

static void credis_disconnected(const redisAsyncContext *ac, int status)
{
	/* cleanup did the work; the log says why from the owner's side. */
}

static void credis_connect(struct credis *c)
{
	redisAsyncContext *ac;

	c->retry_at_ms = 0;
	c->connect_started_ms = loop_now_ms(c->w->loop);
	ac = redisAsyncConnect(c->uri->host, c->uri->port);
	if (!ac) {
		credis_schedule(c);
		return;
	}
	if (ac->err) {
		/* Failed before any event was attached: no cleanup call comes. */
		redisAsyncFree(ac);
		if (!c->down_since_ms)
			c->down_since_ms = wall_ms();
		credis_schedule(c);
		if (!c->outage_logged && c->on_down) {
			c->outage_logged = true;
			c->on_down(c);
		}
		return;
	}
	c->ac = ac;
	c->reading = c->writing = false;
	ac->data = c;
	ac->ev.data = c;
	ac->ev.addRead = credis_add_read;
	ac->ev.delRead = credis_del_read;
	ac->ev.addWrite = credis_add_write;
	ac->ev.delWrite = credis_del_write;
	ac->ev.cleanup = credis_cleanup;
	redisAsyncSetConnectCallback(ac, credis_connected);
	redisAsyncSetDisconnectCallback(ac, credis_disconnected);
	/* hiredis waits for writability to learn how the nonblocking connect ended. */
	credis_add_write(c);
}

void cluster_redis_start(struct credis *c)
{
	c->ac = NULL;
	c->up = false;
	c->backoff_ms = CREDIS_BACKOFF_MIN_MS;
	credis_connect(c);
}

void cluster_redis_tick(struct credis *c, uint64_t now_ms)
{
	if (c->stopping)
		return;
	if (!c->ac && c->retry_at_ms && now_ms >= c->retry_at_ms) {
		credis_connect(c);
		return;
	}
	/* A connect or handshake that hangs (a firewall dropping SYNs): start over. */
	if (c->ac && !c->up && now_ms - c->connect_started_ms > CREDIS_CONNECT_TIMEOUT_MS)
		redisAsyncFree(c->ac);
}

void cluster_redis_polled(struct credis *c, uint32_t poll_id, uint32_t gen, int res, bool more)
{
	bool write = poll_id & 1;

	if (gen != c->gen || !c->ac)
		return;	/* an earlier socket's */
	if (write) {
		if (!c->writing)
			return;
		c->writing = false;	/* one-shot: hiredis adds it again if it has more */
		redisAsyncHandleWrite(c->ac);
		return;
	}
	if (!c->reading || res == -ECANCELED)
		return;
	if (!more)
		c->reading = false;	/* the multishot poll ended: armed again below */
	redisAsyncHandleRead(c->ac);
	/*
	 * hiredis reads at most 16 KB a call and the multishot poll fires
	 * again only when more data arrives: the rest of a large reply (a
	 * batch of stream entries) would wait for the next one. Read what
	 * is already there (bounded: other connections get their turn).
	 */
	for (int i = 0, n; i < CREDIS_READS_PER_WAKEUP && gen == c->gen && c->ac &&
			   ioctl(c->ac->c.fd, FIONREAD, &n) == 0 && n > 0; i++)
		redisAsyncHandleRead(c->ac);
	/* The read may have freed the context (EOF): then gen moved on. */
	if (gen == c->gen && c->ac && !c->reading)
		credis_add_read(c);
}

void cluster_redis_stop(struct credis *c)
{
	c->stopping = true;
	if (c->ac)
		redisAsyncFree(c->ac);
}

void cluster_redis_flush(struct credis *c)
{
	if (c->ac && c->up)
		redisAsyncHandleWrite(c->ac);
}

void cluster_redis_reset(struct credis *c)
{
	if (c->ac)
		redisAsyncDisconnect(c->ac);
}

/* ---- Commands ---- */

static void credis_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct credis_call *call = privdata;

	if (call->fn)
		call->fn(ac->data, reply, call->arg);
	free(call);
}

int cluster_redis_cmd(struct credis *c, credis_reply_fn fn, void *arg, int argc,
		      const char **argv, const size_t *lens)
{
	struct credis_call *call;

	if (!c->ac || !c->up)
		return -ENOTCONN;
	if (sdslen(c->ac->c.obuf) > CREDIS_MAX_OUTPUT_BYTES)
		return -ENOBUFS;
	call = malloc(sizeof(*call));
	if (!call)
		return -ENOMEM;
	*call = (struct credis_call){ fn, arg };
	if (redisAsyncCommandArgv(c->ac, credis_reply, call, argc, argv, lens) != REDIS_OK) {
		free(call);
		return -ENOTCONN;
	}
	return 0;
}

int cluster_redis_cmdf(struct credis *c, credis_reply_fn fn, void *arg, const char *fmt, ...)
{
	struct credis_call *call;
	va_list ap;
	int ret;

	if (!c->ac || !c->up)
		return -ENOTCONN;
	call = malloc(sizeof(*call));
	if (!call)
		return -ENOMEM;
	*call = (struct credis_call){ fn, arg };
	va_start(ap, fmt);
	ret = redisvAsyncCommand(c->ac, credis_reply, call, fmt, ap);
	va_end(ap);
	if (ret != REDIS_OK) {
		free(call);
		return -ENOTCONN;
	}
	return 0;
}

/* A subscription's callback runs once per message: nothing to free per call. */
static void credis_sub_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct credis *c = ac->data;

	if (c->sub_fn)
		c->sub_fn(c, reply, NULL);
}

int cluster_redis_subscribe(struct credis *c, credis_reply_fn fn, const char *channel)
{
	if (!c->ac || !c->up)
		return -ENOTCONN;
	c->sub_fn = fn;
	if (redisAsyncCommand(c->ac, credis_sub_reply, NULL, "SUBSCRIBE %s", channel) != REDIS_OK)
		return -ENOTCONN;
	return 0;
}
