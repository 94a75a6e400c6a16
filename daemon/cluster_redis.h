/* SPDX-License-Identifier: MIT */
/*
 * One Redis connection driven by a worker's io_uring loop: hiredis's
 * asynchronous client (redisAsyncContext) with an adapter whose
 * addRead arms a multishot POLLIN and addWrite a one-shot POLLOUT
 * (loop_poll); their completions call redisAsyncHandleRead/Write. The
 * loop stays the only code that touches the ring, hiredis the only code
 * that reads and writes the socket.
 *
 * The connection comes back by itself: when it cannot be made or drops,
 * it is made again after a backoff that doubles from 100 ms to 2 s
 * (cluster_redis_tick drives it). Its owner hears `up` once a connection
 * answers (after AUTH and SELECT when the URI asks for them) and `down`
 * when it is lost; commands given while it is down fail at once
 * (-ENOTCONN), they are not queued: what must survive an outage is
 * written again on `up` (cluster.c re-registers everything).
 */
#ifndef STANZAD_CLUSTER_REDIS_H
#define STANZAD_CLUSTER_REDIS_H

#include <stdbool.h>
#include <stdint.h>

#include "cluster_util.h"

struct worker;
struct redisAsyncContext;
struct redisReply;

#define CREDIS_BACKOFF_MIN_MS	100
#define CREDIS_BACKOFF_MAX_MS	2000
/*
 * Commands waiting to be written to one connection: beyond this, new
 * ones are refused (-ENOBUFS) instead of growing without bound while
 * Redis is slow.
 */
#define CREDIS_MAX_OUTPUT_BYTES	(64u << 20)
#define CREDIS_CONNECT_TIMEOUT_MS	2000	/* a longer connect (or AUTH) is retried */

struct credis;

/* A reply: r NULL when the connection went away before it came. */
typedef void (*credis_reply_fn)(struct credis *c, struct redisReply *r, void *arg);

struct credis {
	struct worker *w;
	const struct cluster_uri *uri;	/* owned by the caller (cluster.c), outlives this */
	const char *name;		/* for the log: "registry", "events", "inbound" */
	uint32_t id;			/* poll ids 2*id (read), 2*id+1 (write) on w's loop */
	uint32_t gen;			/* of the current socket (loop_poll generations) */
	struct redisAsyncContext *ac;	/* NULL while down */
	bool reading, writing;		/* polls armed for ac */
	bool up;			/* connected and ready (authenticated, db selected) */
	bool ever_up;			/* `up` happened once: later losses are outages */
	bool outage_logged;		/* cluster.redis_down once per outage */
	bool stopping;			/* cluster_redis_stop: no more reconnects */
	unsigned backoff_ms;
	uint64_t retry_at_ms;		/* next connect attempt (loop time), 0 = none due */
	uint64_t connect_started_ms;
	uint64_t down_since_ms;		/* wall clock of the outage's start, 0 when up */
	credis_reply_fn sub_fn;		/* its subscription's messages (subscribe) */
	void (*on_up)(struct credis *c);
	void (*on_down)(struct credis *c);
	void *owner;
};

/* Starts connecting (in the background). c's fields above `ac` are set by the caller. */
void cluster_redis_start(struct credis *c);
/* Drives reconnects and connect timeouts; call often (cluster.c's 100 ms tick). */
void cluster_redis_tick(struct credis *c, uint64_t now_ms);
/* A poll completion for this connection (id/gen as loop_poll gave them). */
void cluster_redis_polled(struct credis *c, uint32_t poll_id, uint32_t gen, int res, bool more);
/* Closes for good (shutdown): pending callbacks run with r == NULL. */
void cluster_redis_stop(struct credis *c);

/*
 * Sends a command given as argv (binary safe); fn (may be NULL) gets the
 * reply. 0, or -ENOTCONN when down (fn is not called), -ENOBUFS past
 * CREDIS_MAX_OUTPUT_BYTES waiting, -ENOMEM.
 */
int cluster_redis_cmd(struct credis *c, credis_reply_fn fn, void *arg, int argc,
		      const char **argv, const size_t *lens);
/* The same with a printf-like hiredis format ("%s", "%b"). */
int cluster_redis_cmdf(struct credis *c, credis_reply_fn fn, void *arg, const char *fmt, ...);

/*
 * SUBSCRIBE channel: fn gets the confirmation and then every message, for
 * as long as the connection lives (subscribe again on `up`). 0 or -ENOTCONN.
 */
int cluster_redis_subscribe(struct credis *c, credis_reply_fn fn, const char *channel);

/*
 * Writes what is queued now, without waiting for the loop (the last
 * commands before the loop stops). Whatever the socket does not take
 * waits for writability as usual.
 */
void cluster_redis_flush(struct credis *c);

/* Drops the connection as if it had failed (a protocol surprise): it comes back. */
void cluster_redis_reset(struct credis *c);

#endif
