/* SPDX-License-Identifier: MIT */
/*
 * Fan-out through the stanza offload module (see kmod.h for where it sits
 * and the rules a connection must meet). One worker, one open file of
 * /dev/stanza_offload, one batch at a time:
 *
 *   take		c2s_send_prepared() offers a copy; a qualifying one is
 *			counted by stream management and appended to the batch
 *			(its ' to' splice only; the template is copied once)
 *   flush		register the batch's new connections (one ioctl), send
 *			the batch (one ioctl per max_sockets_per_request
 *			targets), queue every remainder in order
 *   detach		the module said ESHUTDOWN (an administrator turned it
 *			off) or vanished: close the file, forget every id, go
 *			on with io_uring sends
 *
 * Memory: per connection only its id and two flags in struct conn; per
 * worker the batch buffers, which keep their size between batches.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <stanzad/uapi/stanza_offload.h>

#include "config.h"
#include "conn.h"
#include "fanout.h"
#include "kmod.h"
#include "kmod_genl.h"
#include "log.h"
#include "loop.h"
#include "server.h"
#include "sm.h"
#include "strbuf.h"
#include "worker.h"

#define KMOD_RETRY_MS		10000		/* retry opening the device this often */
#define KMOD_BATCH_LIMIT	16384		/* targets per ioctl, whatever the module allows */
#define KMOD_REASON_MAX		160

/* One taken copy: its connection and where its splice is in the batch. */
struct kmod_entry {
	uint32_t slot, gen;
	uint32_t splice_off, splice_len;
	int32_t result;			/* bytes the module wrote, or -errno; 0 if not sent */
};

struct kmod_worker {
	struct worker *w;
	int fd;				/* the device, or -1 */
	char reason[KMOD_REASON_MAX];	/* why fd is -1 */
	uint64_t retry_at_ms;		/* next attempt to open (0: at once) */
	uint32_t batch_max;		/* targets per ioctl */
	uint32_t max_payload;		/* the module's limit on a template */
	struct kmod_genl *events;	/* member of the "events" group, or NULL */

	/* The batch: copies of one template. */
	const struct fanout *src;	/* the fan-out they came from */
	uint64_t src_serial;		/* and its template */
	struct strbuf tmpl;		/* the template: prefix = [0, split), suffix = [split, len) */
	size_t split;
	struct strbuf splices;		/* every copy's " to='...'" */
	struct kmod_entry *ents;
	size_t n, cap;
	bool flushing;

	/* Scratch arrays for the ioctls, grown to the largest batch. */
	struct stanza_offload_target *targets;
	struct stanza_offload_reg *regs;
	uint32_t *reg_ent;		/* regs[i] belongs to ents[reg_ent[i]] */
	size_t scratch_cap;

	struct kmod_counters count;
};

/* ---- Opening and closing the device ---- */

/* Ends the use of the module: the file and with it every registration. */
static void kmod_detach(struct kmod_worker *k, const char *why)
{
	struct worker *w = k->w;

	if (k->fd < 0)
		return;
	close(k->fd);
	k->fd = -1;
	snprintf(k->reason, sizeof(k->reason), "%s", why);
	k->retry_at_ms = loop_now_ms(w->loop) + KMOD_RETRY_MS;
	/* The ids died with the file; a later open registers again. */
	for (uint32_t s = 0; s < w->cap; s++) {
		struct conn *c = w->conns[s];

		if (c) {
			c->kmod_id = 0;
			c->kmod_refused = false;
		}
	}
	log_warn("kmod.detached", "reason=\"%s\" msg=\"fan-out continues with io_uring sends\"", why);
}

static void kmod_event_cb(const struct kmod_config *cfg, void *arg)
{
	log_info("kmod.event", "enabled=%s max_sockets_per_request=%u max_payload=%u",
		 cfg->enabled ? "yes" : "no", cfg->max_sockets_per_request, cfg->max_payload);
}

/*
 * Joins the module's "events" group so that a disable reaches us at once
 * (the loop watches the socket; it stays for the worker's life, and is
 * joined again after a reload). Not fatal: without events the next
 * request finds out.
 */
static void kmod_subscribe(struct kmod_worker *k)
{
	bool fresh = !k->events;
	int ret;

	if (fresh && (ret = kmod_genl_open(&k->events)) < 0) {
		log_warn("kmod.events_unavailable", "err=\"%s\"", strerror(-ret));
		return;
	}
	ret = kmod_genl_subscribe(k->events);
	if (ret == 0 && fresh)
		ret = loop_watch(k->w->loop, kmod_genl_fd(k->events), WORKER_WATCH_KMOD);
	if (ret < 0) {
		log_warn("kmod.events_unavailable", "err=\"%s\"", strerror(-ret));
		if (fresh) {
			kmod_genl_close(k->events);
			k->events = NULL;
		}
	}
}

/* The module's limits, as INFO reported them (they may change at any time). */
static void kmod_limits(struct kmod_worker *k, const struct stanza_offload_info *info)
{
	k->batch_max = info->max_sockets_per_request < KMOD_BATCH_LIMIT ?
		       info->max_sockets_per_request : KMOD_BATCH_LIMIT;
	k->max_payload = info->max_payload;
}

/*
 * Asks the module again (a request was refused as too big, or an event
 * came): new limits, or it was turned off. 0, or -errno when it is
 * unusable now.
 */
static int kmod_refresh(struct kmod_worker *k)
{
	struct stanza_offload_info info;

	if (ioctl(k->fd, STANZA_OFFLOAD_IOC_INFO, &info) < 0)
		return -errno;
	if (!info.enabled)
		return -ESHUTDOWN;
	kmod_limits(k, &info);
	return 0;
}

/* Tries to open the device; sets k->reason when it cannot. 0 or -errno. */
static int kmod_open(struct kmod_worker *k)
{
	struct stanza_offload_info info;
	int fd, err;

	fd = open(STANZA_OFFLOAD_DEVICE, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		if (err == -ENOENT || err == -ENODEV || err == -ENXIO)
			snprintf(k->reason, sizeof(k->reason),
				 "no " STANZA_OFFLOAD_DEVICE " (the stanza_offload module is not loaded)");
		else if (err == -ESHUTDOWN)
			snprintf(k->reason, sizeof(k->reason),
				 "the module is turned off (stanzactl kmod set enabled 1)");
		else
			snprintf(k->reason, sizeof(k->reason), "cannot open " STANZA_OFFLOAD_DEVICE ": %s",
				 strerror(-err));
		return err;
	}
	if (ioctl(fd, STANZA_OFFLOAD_IOC_INFO, &info) < 0) {
		err = -errno;
		snprintf(k->reason, sizeof(k->reason), "the module does not answer: %s", strerror(-err));
		close(fd);
		return err;
	}
	if (info.version != STANZA_OFFLOAD_VERSION || !info.enabled) {
		if (info.version != STANZA_OFFLOAD_VERSION)
			snprintf(k->reason, sizeof(k->reason), "the module speaks ABI %u, this build %u",
				 info.version, STANZA_OFFLOAD_VERSION);
		else
			snprintf(k->reason, sizeof(k->reason), "the module is turned off");
		close(fd);
		return -EPROTO;
	}
	k->fd = fd;
	k->reason[0] = '\0';
	kmod_limits(k, &info);
	log_info("kmod.open", "device=%s version=%u max_sockets_per_request=%u max_payload=%u "
		 "min_fanout=%u", STANZA_OFFLOAD_DEVICE, info.version, info.max_sockets_per_request,
		 info.max_payload, k->w->srv->cfg->kmod_min_fanout);
	kmod_subscribe(k);
	return 0;
}

/* Counters: written by the worker's own thread, summed by status from worker 0. */
static void kmod_count_add(uint64_t *counter, uint64_t n)
{
	__atomic_store_n(counter, *counter + n, __ATOMIC_RELAXED);
}

/* Whether the device is open, trying again when the retry time came. */
static bool kmod_usable(struct kmod_worker *k)
{
	uint64_t now;

	if (k->fd >= 0)
		return true;
	if (!k->w->srv->cfg->kmod)
		return false;
	now = loop_now_ms(k->w->loop);
	if (now < k->retry_at_ms)
		return false;
	k->retry_at_ms = now + KMOD_RETRY_MS;
	return kmod_open(k) == 0;
}

int kmod_worker_init(struct worker *w)
{
	struct kmod_worker *k = calloc(1, sizeof(*k));

	if (!k)
		return -ENOMEM;
	k->w = w;
	k->fd = -1;
	w->kmod = k;
	if (!w->srv->cfg->kmod) {
		snprintf(k->reason, sizeof(k->reason), "kmod=no in the configuration");
		return 0;
	}
	kmod_open(k);
	k->retry_at_ms = loop_now_ms(w->loop) + KMOD_RETRY_MS;
	return 0;
}

void kmod_worker_destroy(struct worker *w)
{
	struct kmod_worker *k = w->kmod;

	if (!k)
		return;
	if (k->count.requests || k->count.small_batches)
		log_info("kmod.stats", "requests=%llu copies=%llu kernel_bytes=%llu queued_bytes=%llu "
			 "small_batches=%llu registered=%llu",
			 (unsigned long long)k->count.requests, (unsigned long long)k->count.copies,
			 (unsigned long long)k->count.kernel_bytes,
			 (unsigned long long)k->count.queued_bytes,
			 (unsigned long long)k->count.small_batches,
			 (unsigned long long)k->count.registered);
	if (k->fd >= 0)
		close(k->fd);
	kmod_genl_close(k->events);
	strbuf_free(&k->tmpl);
	strbuf_free(&k->splices);
	free(k->ents);
	free(k->targets);
	free(k->regs);
	free(k->reg_ent);
	free(k);
	w->kmod = NULL;
}

const char *kmod_state(const struct worker *w, const char **reason)
{
	const struct kmod_worker *k = w->kmod;

	*reason = k ? k->reason : "not initialised";
	return k && k->fd >= 0 ? "on" : "off";
}

void kmod_counters(const struct server *srv, struct kmod_counters *out)
{
	memset(out, 0, sizeof(*out));
	for (unsigned i = 0; i < srv->nworkers; i++) {
		const struct kmod_counters *c = srv->workers[i].kmod ? &srv->workers[i].kmod->count : NULL;

		if (!c)
			continue;
		out->requests += __atomic_load_n(&c->requests, __ATOMIC_RELAXED);
		out->copies += __atomic_load_n(&c->copies, __ATOMIC_RELAXED);
		out->kernel_bytes += __atomic_load_n(&c->kernel_bytes, __ATOMIC_RELAXED);
		out->queued_bytes += __atomic_load_n(&c->queued_bytes, __ATOMIC_RELAXED);
		out->small_batches += __atomic_load_n(&c->small_batches, __ATOMIC_RELAXED);
		out->registered += __atomic_load_n(&c->registered, __ATOMIC_RELAXED);
	}
}

/* ---- Taking copies ---- */

/* Whether the module may write c's next bytes (kmod.h has the rules). */
static bool kmod_conn_qualifies(const struct conn *c)
{
	if (c->kind != CONN_C2S || c->websocket || c->fd < 0 || c->closing || c->in_reap_list ||
	    c->overflowed || c->kmod_pending || c->kmod_refused)
		return false;
	/* Per-connection order: nothing of ours may be ahead of these bytes. */
	if (c->out_head || c->send_inflight)
		return false;
	switch (c->tls_mode) {
	case CONN_TLS_NONE:
		return c->tls == NULL;
	case CONN_TLS_KTLS:
		return true;
	default:
		return false;	/* userspace TLS, a handoff, receive stopped */
	}
}

/* Room for one more entry and its scratch rows. 0 or -ENOMEM. */
static int kmod_grow(struct kmod_worker *k)
{
	size_t cap = k->cap ? k->cap * 2 : 256;
	struct kmod_entry *e;

	if (k->n < k->cap)
		return 0;
	e = realloc(k->ents, cap * sizeof(*e));
	if (!e)
		return -ENOMEM;
	k->ents = e;
	k->cap = cap;
	return 0;
}

/* Starts a batch for the copies of f. 0 or -ENOMEM. */
static int kmod_batch_start(struct kmod_worker *k, const struct fanout *f)
{
	size_t tlen;
	const char *t = fanout_template(f, &tlen);

	strbuf_clear(&k->tmpl);
	strbuf_clear(&k->splices);
	strbuf_append(&k->tmpl, t, tlen);
	if (k->tmpl.oom)
		return -ENOMEM;
	k->split = f->split;
	k->src = f;
	k->src_serial = f->serial;
	return 0;
}

bool kmod_fanout_take(struct conn *c, const char *data, size_t len)
{
	struct worker *w = c->w;
	struct kmod_worker *k = w->kmod;
	const struct fanout *f;
	struct kmod_entry *e;
	size_t splice_len;

	if (!k || k->flushing || !kmod_conn_qualifies(c))
		return false;
	f = fanout_copy_source(data, len, &splice_len);
	if (!f || splice_len > STANZA_OFFLOAD_SPLICE_MAX || !kmod_usable(k) ||
	    len - splice_len > k->max_payload)
		return false;
	/* One template per batch; a full batch goes first. */
	if (k->n && (k->src != f || k->src_serial != f->serial || k->n >= k->batch_max))
		kmod_flush(w);
	if (k->fd < 0)
		return false;	/* the flush found the module gone */
	if (!k->n && kmod_batch_start(k, f) < 0)
		return false;
	if (kmod_grow(k) < 0 || k->splices.len + splice_len > STANZA_OFFLOAD_SPLICES_MAX)
		return false;
	/* From here the copy is ours: stream management counts it as sent. */
	if (sm_count_stanza(c, data, len) < 0)
		return true;
	e = &k->ents[k->n];
	e->slot = c->slot;
	e->gen = c->gen;
	e->splice_off = (uint32_t)k->splices.len;
	e->splice_len = (uint32_t)splice_len;
	e->result = 0;
	strbuf_append(&k->splices, data + f->split, splice_len);
	if (k->splices.oom) {
		/* Counted already: send it the usual way, without counting again. */
		k->splices.len = e->splice_off;
		k->splices.oom = false;
		conn_send_transport(c, data, len);
		return true;
	}
	k->n++;
	c->kmod_pending = true;
	return true;
}

bool kmod_pending(const struct worker *w)
{
	return w->kmod && w->kmod->n;
}

/* ---- Flushing ---- */

/* The scratch arrays for n entries. 0 or -ENOMEM. */
static int kmod_scratch(struct kmod_worker *k, size_t n)
{
	struct stanza_offload_target *t;
	struct stanza_offload_reg *r;
	uint32_t *re;

	if (n <= k->scratch_cap)
		return 0;
	t = realloc(k->targets, n * sizeof(*t));
	if (t)
		k->targets = t;
	r = realloc(k->regs, n * sizeof(*r));
	if (r)
		k->regs = r;
	re = realloc(k->reg_ent, n * sizeof(*re));
	if (re)
		k->reg_ent = re;
	if (!t || !r || !re)
		return -ENOMEM;
	k->scratch_cap = n;
	return 0;
}

/* The entry's connection, if it is still there and may still send. */
static struct conn *kmod_entry_conn(struct kmod_worker *k, const struct kmod_entry *e)
{
	struct conn *c = worker_conn(k->w, e->slot, e->gen);

	return c && !c->in_reap_list && c->fd >= 0 ? c : NULL;
}

/*
 * Registers the batch's connections that have no id yet, in ioctls of at
 * most batch_max. A socket the module refuses is never offered again.
 * 0, or -errno when the module is unusable (the caller detaches).
 */
static int kmod_register_batch(struct kmod_worker *k)
{
	struct stanza_offload_register req = { .version = STANZA_OFFLOAD_VERSION };
	size_t nreg = 0, i = 0;

	while (i < k->n) {
		for (nreg = 0; i < k->n && nreg < k->batch_max; i++) {
			struct conn *c = kmod_entry_conn(k, &k->ents[i]);

			if (!c || c->kmod_id)
				continue;
			k->regs[nreg] = (struct stanza_offload_reg){ .fd = c->fd };
			k->reg_ent[nreg++] = (uint32_t)i;
		}
		if (!nreg)
			continue;
		req.count = (uint32_t)nreg;
		req.socks = (uint64_t)(uintptr_t)k->regs;
		if (ioctl(k->fd, STANZA_OFFLOAD_IOC_REGISTER, &req) < 0)
			return -errno;
		for (size_t j = 0; j < nreg; j++) {
			struct conn *c = worker_conn(k->w, k->ents[k->reg_ent[j]].slot,
						     k->ents[k->reg_ent[j]].gen);

			if (k->regs[j].error == 0) {
				c->kmod_id = k->regs[j].id;
				kmod_count_add(&k->count.registered, 1);
			} else {
				c->kmod_refused = true;
				log_debug("kmod.register_refused", "conn=%llu err=\"%s\"",
					  (unsigned long long)c->id, strerror(-k->regs[j].error));
			}
		}
	}
	return 0;
}

/*
 * Sends the entries to the module in ioctls of at most batch_max targets;
 * each entry's result says what its socket took. 0, or -errno when the
 * module is unusable (entries not sent keep result 0: all queued).
 */
static int kmod_send_batch(struct kmod_worker *k)
{
	struct stanza_offload_fanout req = {
		.version = STANZA_OFFLOAD_VERSION,
		.prefix = (uint64_t)(uintptr_t)k->tmpl.data,
		.prefix_len = (uint32_t)k->split,
		.suffix = (uint64_t)(uintptr_t)(k->tmpl.data + k->split),
		.suffix_len = (uint32_t)(k->tmpl.len - k->split),
		.splices = (uint64_t)(uintptr_t)k->splices.data,
		.splices_len = (uint32_t)k->splices.len,
		.targets = (uint64_t)(uintptr_t)k->targets,
	};
	size_t i = 0, nt;

	while (i < k->n) {
		size_t first = i;

		for (nt = 0; i < k->n && nt < k->batch_max; i++) {
			struct kmod_entry *e = &k->ents[i];
			struct conn *c = kmod_entry_conn(k, e);

			e->result = 0;
			if (!c || !c->kmod_id)
				continue;
			k->targets[nt++] = (struct stanza_offload_target){
				.id = c->kmod_id, .splice_off = e->splice_off,
				.splice_len = e->splice_len,
			};
		}
		if (!nt)
			continue;
		req.count = (uint32_t)nt;
		if (ioctl(k->fd, STANZA_OFFLOAD_IOC_FANOUT, &req) < 0)
			return -errno;
		kmod_count_add(&k->count.requests, 1);
		/* Results back to their entries, in the same order. */
		nt = 0;
		for (size_t j = first; j < i; j++) {
			struct kmod_entry *e = &k->ents[j];
			struct conn *c = kmod_entry_conn(k, e);

			if (!c || !c->kmod_id)
				continue;
			e->result = k->targets[nt++].result;
			if (e->result > 0)
				kmod_count_add(&k->count.kernel_bytes, (uint64_t)e->result);
			kmod_count_add(&k->count.copies, 1);
		}
	}
	return 0;
}

/*
 * Queues what c's socket did not take of entry e: the copy's bytes from
 * offset `from` (prefix, splice and suffix are consecutive in the copy).
 */
static void kmod_queue_rest(struct kmod_worker *k, struct conn *c, const struct kmod_entry *e,
			    size_t from)
{
	const char *parts[3] = { k->tmpl.data, k->splices.data + e->splice_off,
				 k->tmpl.data + k->split };
	size_t lens[3] = { k->split, e->splice_len, k->tmpl.len - k->split };

	for (int i = 0; i < 3; i++) {
		if (from >= lens[i]) {
			from -= lens[i];
			continue;
		}
		kmod_count_add(&k->count.queued_bytes, lens[i] - from);
		if (conn_send_transport(c, parts[i] + from, lens[i] - from) < 0)
			return;	/* closed or over its limit: the rest would be dropped too */
		from = 0;
	}
}

void kmod_flush(struct worker *w)
{
	struct kmod_worker *k = w->kmod;
	size_t total_base;
	int ret = 0;

	if (!k || !k->n || k->flushing)
		return;
	k->flushing = true;
	total_base = k->tmpl.len;
	if (k->fd < 0) {
		ret = -ENODEV;
	} else if (k->n < w->srv->cfg->kmod_min_fanout) {
		kmod_count_add(&k->count.small_batches, 1);
		for (size_t i = 0; i < k->n; i++)
			k->ents[i].result = 0;
	} else if (kmod_scratch(k, k->n < k->batch_max ? k->n : k->batch_max) < 0) {
		for (size_t i = 0; i < k->n; i++)
			k->ents[i].result = 0;
	} else {
		ret = kmod_register_batch(k);
		if (ret == 0)
			ret = kmod_send_batch(k);
	}
	/* Limits lowered since we asked: the copies are queued, later batches fit. */
	if (ret == -E2BIG)
		ret = kmod_refresh(k);
	if (ret == -ESHUTDOWN || ret == -ENODEV || ret == -EBADF || ret == -ENOTTY) {
		kmod_detach(k, ret == -ESHUTDOWN ? "turned off by an administrator" :
			       "the module went away");
	} else if (ret < 0) {
		log_warn("kmod.request_failed", "err=\"%s\" copies=%zu msg=\"queued instead\"",
			 strerror(-ret), k->n);
	}

	/* Every entry, in order: the module's part is out, the rest is queued. */
	for (size_t i = 0; i < k->n; i++) {
		struct kmod_entry *e = &k->ents[i];
		struct conn *c = worker_conn(w, e->slot, e->gen);
		size_t total = total_base + e->splice_len;
		size_t done = e->result > 0 ? (size_t)e->result : 0;

		if (!c)
			continue;
		c->kmod_pending = false;
		if (c->in_reap_list || c->fd < 0)
			continue;	/* aborted meanwhile: its output is dropped anyway */
		if (e->result == -EBADF)
			c->kmod_id = 0;	/* the module no longer knows it: register again */
		/* Another error (EPIPE...): queued, the io_uring send meets it and closes. */
		if (done < total)
			kmod_queue_rest(k, c, e, done);
	}
	k->n = 0;
	k->src = NULL;
	k->flushing = false;
}

void kmod_conn_free(struct conn *c)
{
	struct kmod_worker *k = c->w->kmod;
	uint32_t id = c->kmod_id;
	struct stanza_offload_unregister req = {
		.version = STANZA_OFFLOAD_VERSION, .count = 1, .ids = (uint64_t)(uintptr_t)&id,
	};

	c->kmod_pending = false;
	if (!id || !k || k->fd < 0)
		return;
	c->kmod_id = 0;
	/* The module holds the socket open until this: do it before close(fd). */
	if (ioctl(k->fd, STANZA_OFFLOAD_IOC_UNREGISTER, &req) < 0)
		log_debug("kmod.unregister_failed", "conn=%llu err=\"%s\"", (unsigned long long)c->id,
			  strerror(errno));
}

/* ---- Events ---- */

void kmod_watch(struct worker *w)
{
	struct kmod_worker *k = w->kmod;
	int ret;

	if (!k || !k->events)
		return;
	kmod_genl_read_events(k->events, kmod_event_cb, k);
	if (k->fd < 0)
		return;
	/*
	 * Whatever the event said, the device is the authority: a revoked
	 * file answers INFO with enabled = 0, and the limits are its own. A
	 * batch in progress goes first (to the module or, if it is gone, to
	 * the queues).
	 */
	kmod_flush(w);
	if (k->fd >= 0 && (ret = kmod_refresh(k)) < 0)
		kmod_detach(k, ret == -ESHUTDOWN ? "turned off by an administrator" :
			    "the module does not answer");
}
