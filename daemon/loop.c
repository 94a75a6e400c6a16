/* SPDX-License-Identifier: MIT */
/*
 * io_uring event loop. See loop.h for the turn structure. Nothing outside
 * this file includes liburing's prep/submit calls.
 */
#include <errno.h>
#include <linux/tls.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>

#include "log.h"
#include "loop.h"

#define LOOP_BGID 0	/* the one provided-buffer group per ring */
#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#define LOOP_TLS_RECORD_DATA	23	/* what a receive without a record-type cmsg holds */

struct loop {
	struct io_uring ring;
	const struct loop_handlers *h;
	void *ctx;

	/* Provided buffers for multishot receive. */
	struct io_uring_buf_ring *br;
	size_t br_size;
	char *bufs;
	unsigned buf_count;
	unsigned buf_size;

	/* Timer wheel. */
	struct loop_timer *wheel[LOOP_WHEEL_SLOTS];
	uint64_t now_ms;
	uint64_t now_ns;	/* the same clock read, in ns: when this turn's CQEs arrived */
	uint64_t wheel_tick;	/* last tick whose slot was run */
	unsigned timers_armed;

	/*
	 * Template of every kTLS recvmsg: no address, room for one cmsg (the
	 * record type). Multishot recvmsg puts header, cmsg and payload into
	 * the provided buffer, so nothing per connection stays pinned; the
	 * kernel copies this at submission and parsing reuses it.
	 */
	struct msghdr tls_msg;

	unsigned setup_flags;	/* IORING_SETUP_* the kernel accepted */
	bool has_msg_ring;	/* IORING_OP_MSG_RING (5.18) */
	bool wait_in_poll;	/* under valgrind: block in poll(2), see loop_under_valgrind() */
	bool stop;
};

/*
 * Valgrind (3.19, Debian 12's) runs one thread at a time and keeps its
 * lock through io_uring_enter, so while the loop waits in the ring the
 * storage and other threads never run: the first request that needs them
 * hangs. Under valgrind the loop therefore waits in poll(2) on the ring's
 * fd, which valgrind knows blocks, with a plain ring (DEFER_TASKRUN
 * completions do not wake a poll). Valgrind preloads its vgpreload_*
 * libraries into the program it runs; nothing changes without it.
 */
static bool loop_under_valgrind(void)
{
	const char *pre = getenv("LD_PRELOAD");

	return pre && strstr(pre, "vgpreload_");
}

static uint64_t monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t loop_now_ms(const struct loop *l)
{
	return l->now_ms;
}

uint64_t loop_turn_ns(const struct loop *l)
{
	return l->now_ns;
}

unsigned loop_setup_flags(const struct loop *l)
{
	return l->setup_flags;
}

/*
 * Returns a free SQE, submitting what is queued when the SQ ring is full.
 * The rings are sized so this is rare; if even a submit frees nothing the
 * kernel is out of resources and NULL is returned.
 */
static struct io_uring_sqe *loop_sqe(struct loop *l)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);

	if (!sqe) {
		io_uring_submit(&l->ring);
		sqe = io_uring_get_sqe(&l->ring);
		if (!sqe)
			log_error("loop.sq_full", "msg=\"no submission queue entry available\"");
	}
	return sqe;
}

static int loop_setup_buffers(struct loop *l)
{
	struct io_uring_buf_reg reg;
	int ret;

	l->br_size = l->buf_count * sizeof(struct io_uring_buf);
	l->br = mmap(NULL, l->br_size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (l->br == MAP_FAILED) {
		l->br = NULL;
		return -errno;
	}
	l->bufs = malloc((size_t)l->buf_count * l->buf_size);
	if (!l->bufs) {
		ret = -ENOMEM;
		goto err_unmap;
	}

	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (unsigned long)l->br;
	reg.ring_entries = l->buf_count;
	reg.bgid = LOOP_BGID;
	ret = io_uring_register_buf_ring(&l->ring, &reg, 0);
	if (ret)
		goto err_free_bufs;

	io_uring_buf_ring_init(l->br);
	for (unsigned i = 0; i < l->buf_count; i++)
		io_uring_buf_ring_add(l->br, l->bufs + (size_t)i * l->buf_size, l->buf_size, (unsigned short)i,
				      io_uring_buf_ring_mask(l->buf_count), (int)i);
	io_uring_buf_ring_advance(l->br, (int)l->buf_count);
	return 0;

err_free_bufs:
	free(l->bufs);
	l->bufs = NULL;
err_unmap:
	munmap(l->br, l->br_size);
	l->br = NULL;
	return ret;
}

struct loop *loop_new(const struct loop_config *cfg, const struct loop_handlers *h, void *ctx)
{
	struct io_uring_params p;
	struct loop *l;
	int ret;

	if (!cfg->buf_count || (cfg->buf_count & (cfg->buf_count - 1)) || cfg->buf_count > 32768) {
		errno = EINVAL;
		return NULL;
	}
	l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->h = h;
	l->ctx = ctx;
	l->buf_count = cfg->buf_count;
	l->buf_size = cfg->buf_size;

	/*
	 * One thread submits and reaps, so the kernel may skip the locking
	 * and defer task work to our wait (fewer context switches). Older
	 * kernels reject these flags: fall back to a plain ring.
	 */
	l->wait_in_poll = loop_under_valgrind();
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
	p.cq_entries = cfg->ring_entries * 4;
	ret = l->wait_in_poll ? -EINVAL : io_uring_queue_init_params(cfg->ring_entries, &l->ring, &p);
	if (ret == -EINVAL) {
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE;
		p.cq_entries = cfg->ring_entries * 4;
		ret = io_uring_queue_init_params(cfg->ring_entries, &l->ring, &p);
	}
	if (ret)
		goto err_free;
	l->setup_flags = p.flags;

	ret = loop_setup_buffers(l);
	if (ret)
		goto err_exit_ring;

	l->tls_msg.msg_controllen = CMSG_SPACE(sizeof(unsigned char));
	{
		struct io_uring_probe *probe = io_uring_get_probe_ring(&l->ring);

		l->has_msg_ring = probe && io_uring_opcode_supported(probe, IORING_OP_MSG_RING);
		io_uring_free_probe(probe);
	}
	l->now_ns = monotonic_ns();
	l->now_ms = l->now_ns / 1000000;
	l->wheel_tick = l->now_ms / LOOP_TICK_MS;
	return l;

err_exit_ring:
	io_uring_queue_exit(&l->ring);
err_free:
	free(l);
	errno = -ret;
	return NULL;
}

void loop_free(struct loop *l)
{
	if (!l)
		return;
	io_uring_unregister_buf_ring(&l->ring, LOOP_BGID);
	io_uring_queue_exit(&l->ring);
	free(l->bufs);
	if (l->br)
		munmap(l->br, l->br_size);
	free(l);
}

int loop_add_listener(struct loop *l, int fd, unsigned listener)
{
	struct io_uring_sqe *sqe = loop_sqe(l);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, loop_ud_pack(LOOP_OP_ACCEPT, (uint32_t)fd, listener));
	return 0;
}

void loop_recv(struct loop *l, int fd, uint32_t slot, uint32_t gen)
{
	struct io_uring_sqe *sqe = loop_sqe(l);

	if (!sqe)
		return;
	io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = LOOP_BGID;
	io_uring_sqe_set_data64(sqe, loop_ud_pack(LOOP_OP_RECV, gen, slot));
}

void loop_recv_limited(struct loop *l, int fd, uint32_t slot, uint32_t gen, size_t max)
{
	struct io_uring_sqe *sqe = loop_sqe(l);

	if (!sqe)
		return;
	if (max > l->buf_size)
		max = l->buf_size;
	io_uring_prep_recv(sqe, fd, NULL, max, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = LOOP_BGID;
	io_uring_sqe_set_data64(sqe, loop_ud_pack(LOOP_OP_RECV, gen, slot));
}

void loop_recv_tls(struct loop *l, int fd, uint32_t slot, uint32_t gen)
{
	struct io_uring_sqe *sqe = loop_sqe(l);

	if (!sqe)
		return;
	io_uring_prep_recvmsg_multishot(sqe, fd, &l->tls_msg, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = LOOP_BGID;
	io_uring_sqe_set_data64(sqe, loop_ud_pack(LOOP_OP_RECV_TLS, gen, slot));
}

void loop_cancel_recv(struct loop *l, enum loop_op op, uint32_t slot, uint32_t gen)
{
	struct io_uring_sqe *sqe = loop_sqe(l);

	if (!sqe)
		return;
	io_uring_prep_cancel64(sqe, loop_ud_pack(op, gen, slot), 0);
	io_uring_sqe_set_data64(sqe, loop_ud_pack(LOOP_OP_CANCEL, 0, 0));
}

void loop_send(struct loop *l, int fd, uint32_t slot, uint32_t gen, const void *data, size_t len)
{
	struct io_uring_sqe *sqe = loop_sqe(l);

	if (!sqe)
		return;
	/* MSG_NOSIGNAL: a reset peer is an error code, never SIGPIPE. */
	io_uring_prep_send(sqe, fd, data, len, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, loop_ud_pack(LOOP_OP_SEND, gen, slot));
}

int loop_connect(struct loop *l, int fd, const struct sockaddr *addr, unsigned addrlen,
		 uint32_t slot, uint32_t gen)
{
	struct io_uring_sqe *sqe = loop_sqe(l);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_connect(sqe, fd, addr, (socklen_t)addrlen);
	io_uring_sqe_set_data64(sqe, loop_ud_pack(LOOP_OP_CONNECT, gen, slot));
	return 0;
}

bool loop_msg_ring_supported(const struct loop *l)
{
	return l->has_msg_ring;
}

int loop_msg_ring(struct loop *l, const struct loop *target, unsigned from, unsigned to)
{
	struct io_uring_sqe *sqe;

	if (!l->has_msg_ring)
		return -EOPNOTSUPP;
	sqe = loop_sqe(l);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_msg_ring(sqe, target->ring.ring_fd, 0, loop_ud_pack(LOOP_OP_MSG, 0, from), 0);
	/* A delivered doorbell needs no word back; a failed one does. */
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	io_uring_sqe_set_data64(sqe, loop_ud_pack(LOOP_OP_MSG_SENT, 0, to));
	return 0;
}

void loop_submit(struct loop *l)
{
	io_uring_submit(&l->ring);
}

void loop_cancel_fd(struct loop *l, int fd)
{
	struct io_uring_sqe *sqe = loop_sqe(l);

	if (!sqe)
		return;
	io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
	io_uring_sqe_set_data64(sqe, loop_ud_pack(LOOP_OP_CANCEL, 0, 0));
}

int loop_watch(struct loop *l, int fd, unsigned watch_id)
{
	struct io_uring_sqe *sqe = loop_sqe(l);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_poll_multishot(sqe, fd, POLLIN);
	/* The fd rides in the generation bits so a re-arm needs no lookup. */
	io_uring_sqe_set_data64(sqe, loop_ud_pack(LOOP_OP_WATCH, (uint32_t)fd, watch_id));
	return 0;
}

int loop_poll(struct loop *l, int fd, unsigned events, bool multishot, uint32_t id, uint32_t gen)
{
	struct io_uring_sqe *sqe = loop_sqe(l);

	if (!sqe)
		return -EBUSY;
	if (multishot)
		io_uring_prep_poll_multishot(sqe, fd, events);
	else
		io_uring_prep_poll_add(sqe, fd, events);
	io_uring_sqe_set_data64(sqe, loop_ud_pack(LOOP_OP_POLL, gen, id));
	return 0;
}

void loop_poll_cancel(struct loop *l, uint32_t id, uint32_t gen)
{
	struct io_uring_sqe *sqe = loop_sqe(l);

	if (!sqe)
		return;
	io_uring_prep_poll_remove(sqe, loop_ud_pack(LOOP_OP_POLL, gen, id));
	io_uring_sqe_set_data64(sqe, loop_ud_pack(LOOP_OP_CANCEL, 0, 0));
}

/* ---- Timers ---- */

static void wheel_insert(struct loop *l, struct loop_timer *t)
{
	uint64_t tick = (t->expires_ms + LOOP_TICK_MS - 1) / LOOP_TICK_MS;
	struct loop_timer **head;

	/* A deadline inside the tick being run goes to the next one. */
	if (tick <= l->wheel_tick)
		tick = l->wheel_tick + 1;
	head = &l->wheel[tick & (LOOP_WHEEL_SLOTS - 1)];
	t->next = *head;
	if (t->next)
		t->next->pprev = &t->next;
	t->pprev = head;
	*head = t;
}

void loop_timer_cancel(struct loop_timer *t)
{
	if (!t->pprev)
		return;
	*t->pprev = t->next;
	if (t->next)
		t->next->pprev = t->pprev;
	t->next = NULL;
	t->pprev = NULL;
}

void loop_timer_arm(struct loop *l, struct loop_timer *t, uint64_t delay_ms)
{
	loop_timer_cancel(t);
	t->expires_ms = l->now_ms + delay_ms;
	wheel_insert(l, t);
}

/*
 * Runs every slot from the last tick run up to now. A slot holds timers of
 * every lap of the wheel; those due later are put back. The slot's list is
 * detached first and consumed from its head, so a timer callback may arm or
 * cancel any timer, including ones still on the detached list.
 */
static void loop_run_timers(struct loop *l)
{
	uint64_t now_tick = l->now_ms / LOOP_TICK_MS;

	while (l->wheel_tick < now_tick) {
		struct loop_timer **slot, *list, *t;

		l->wheel_tick++;
		slot = &l->wheel[l->wheel_tick & (LOOP_WHEEL_SLOTS - 1)];
		list = *slot;
		*slot = NULL;
		if (list)
			list->pprev = &list;
		while ((t = list) != NULL) {
			list = t->next;
			if (list)
				list->pprev = &list;
			t->next = NULL;
			t->pprev = NULL;
			if (t->expires_ms <= l->now_ms)
				t->fn(t);
			else
				wheel_insert(l, t);
		}
	}
}

/* ---- Completions ---- */

static void loop_recycle_buffer(struct loop *l, unsigned bid)
{
	io_uring_buf_ring_add(l->br, l->bufs + (size_t)bid * l->buf_size, l->buf_size, (unsigned short)bid,
			      io_uring_buf_ring_mask(l->buf_count), 0);
	io_uring_buf_ring_advance(l->br, 1);
}

static void loop_handle_recv(struct loop *l, struct io_uring_cqe *cqe)
{
	uint64_t ud = cqe->user_data;
	bool more = cqe->flags & IORING_CQE_F_MORE;

	if (cqe->res > 0) {
		unsigned bid;

		if (!(cqe->flags & IORING_CQE_F_BUFFER)) {
			/* Cannot happen with buffer select; treat as an error. */
			l->h->received(l->ctx, loop_ud_slot(ud), loop_ud_gen(ud), NULL, 0, -EIO, more);
			return;
		}
		bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		l->h->received(l->ctx, loop_ud_slot(ud), loop_ud_gen(ud),
			       l->bufs + (size_t)bid * l->buf_size, (size_t)cqe->res, 0, more);
		loop_recycle_buffer(l, bid);
		return;
	}
	if (cqe->flags & IORING_CQE_F_BUFFER)
		loop_recycle_buffer(l, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
	l->h->received(l->ctx, loop_ud_slot(ud), loop_ud_gen(ud), NULL, 0, cqe->res, more);
}

/* The record type in a kTLS recvmsg's control data (data if none). */
static unsigned loop_tls_record_type(struct loop *l, struct io_uring_recvmsg_out *o)
{
	struct cmsghdr *cmsg;

	for (cmsg = io_uring_recvmsg_cmsg_firsthdr(o, &l->tls_msg); cmsg;
	     cmsg = io_uring_recvmsg_cmsg_nexthdr(o, &l->tls_msg, cmsg))
		if (cmsg->cmsg_level == SOL_TLS && cmsg->cmsg_type == TLS_GET_RECORD_TYPE)
			return *(unsigned char *)CMSG_DATA(cmsg);
	return LOOP_TLS_RECORD_DATA;
}

/*
 * A multishot recvmsg completion: res counts the io_uring_recvmsg_out
 * header, the control area and the payload. A payload of 0 is the end of
 * the stream (kTLS never returns empty records).
 */
static void loop_handle_recv_tls(struct loop *l, struct io_uring_cqe *cqe)
{
	uint64_t ud = cqe->user_data;
	bool more = cqe->flags & IORING_CQE_F_MORE;
	struct io_uring_recvmsg_out *o;
	unsigned bid, type;
	unsigned len;
	char *buf;

	if (!(cqe->flags & IORING_CQE_F_BUFFER)) {
		l->h->received_tls(l->ctx, loop_ud_slot(ud), loop_ud_gen(ud), 0, NULL, 0,
				   cqe->res < 0 ? cqe->res : -EIO, more);
		return;
	}
	bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
	buf = l->bufs + (size_t)bid * l->buf_size;
	o = cqe->res > 0 ? io_uring_recvmsg_validate(buf, cqe->res, &l->tls_msg) : NULL;
	if (!o) {
		loop_recycle_buffer(l, bid);
		l->h->received_tls(l->ctx, loop_ud_slot(ud), loop_ud_gen(ud), 0, NULL, 0,
				   cqe->res < 0 ? cqe->res : -EIO, more);
		return;
	}
	len = io_uring_recvmsg_payload_length(o, cqe->res, &l->tls_msg);
	/* A record type we could not see would be taken for data: refuse it. */
	if (o->flags & MSG_CTRUNC) {
		loop_recycle_buffer(l, bid);
		l->h->received_tls(l->ctx, loop_ud_slot(ud), loop_ud_gen(ud), 0, NULL, 0, -EIO, more);
		return;
	}
	type = loop_tls_record_type(l, o);
	l->h->received_tls(l->ctx, loop_ud_slot(ud), loop_ud_gen(ud), type,
			   len ? io_uring_recvmsg_payload(o, &l->tls_msg) : NULL, len, 0, more);
	loop_recycle_buffer(l, bid);
}

static void loop_handle_cqe(struct loop *l, struct io_uring_cqe *cqe)
{
	uint64_t ud = cqe->user_data;

	switch (loop_ud_op(ud)) {
	case LOOP_OP_ACCEPT:
		if (cqe->res >= 0)
			l->h->accepted(l->ctx, loop_ud_slot(ud), cqe->res);
		else
			l->h->accept_error(l->ctx, loop_ud_slot(ud), cqe->res);
		/* Multishot accept ends on errors such as EMFILE: re-arm. */
		if (!(cqe->flags & IORING_CQE_F_MORE) && cqe->res != -ECANCELED)
			loop_add_listener(l, (int)loop_ud_gen(ud), loop_ud_slot(ud));
		break;
	case LOOP_OP_RECV:
		loop_handle_recv(l, cqe);
		break;
	case LOOP_OP_RECV_TLS:
		loop_handle_recv_tls(l, cqe);
		break;
	case LOOP_OP_SEND:
		l->h->sent(l->ctx, loop_ud_slot(ud), loop_ud_gen(ud), cqe->res);
		break;
	case LOOP_OP_CONNECT:
		if (l->h->connected)
			l->h->connected(l->ctx, loop_ud_slot(ud), loop_ud_gen(ud), cqe->res);
		break;
	case LOOP_OP_WATCH:
		if (cqe->res >= 0)
			l->h->watch(l->ctx, loop_ud_slot(ud));
		if (!(cqe->flags & IORING_CQE_F_MORE) && cqe->res != -ECANCELED)
			loop_watch(l, (int)loop_ud_gen(ud), loop_ud_slot(ud));
		break;
	case LOOP_OP_MSG:
		if (l->h->message)
			l->h->message(l->ctx, loop_ud_slot(ud));
		break;
	case LOOP_OP_MSG_SENT:
		if (cqe->res < 0 && l->h->message_failed)
			l->h->message_failed(l->ctx, loop_ud_slot(ud), cqe->res);
		break;
	case LOOP_OP_POLL:
		if (l->h->polled)
			l->h->polled(l->ctx, loop_ud_slot(ud), loop_ud_gen(ud), cqe->res,
				     cqe->flags & IORING_CQE_F_MORE);
		break;
	case LOOP_OP_CANCEL:
	case LOOP_OP_NONE:
		break;
	}
}

int loop_run_once(struct loop *l, unsigned timeout_ms)
{
	struct __kernel_timespec ts;
	struct io_uring_cqe *cqe;
	unsigned head, count = 0;
	int ret;

	if (l->wait_in_poll) {
		struct pollfd pfd = { .fd = l->ring.ring_fd, .events = POLLIN };

		io_uring_submit(&l->ring);
		if (!io_uring_cq_ready(&l->ring))
			poll(&pfd, 1, (int)timeout_ms);
		timeout_ms = 0;
	}
	ts.tv_sec = timeout_ms / 1000;
	ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
	ret = io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1, &ts, NULL);
	if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY)
		return ret;

	/* One clock read per turn: timers, and the arrival time of its stanzas (metrics.h). */
	l->now_ns = monotonic_ns();
	l->now_ms = l->now_ns / 1000000;
	io_uring_for_each_cqe(&l->ring, head, cqe) {
		loop_handle_cqe(l, cqe);
		count++;
	}
	io_uring_cq_advance(&l->ring, count);

	loop_run_timers(l);
	l->h->flush(l->ctx);
	return 0;
}

int loop_run(struct loop *l)
{
	while (!l->stop) {
		/* Wake at the next tick boundary so timers stay on time. */
		uint64_t next = (l->now_ms / LOOP_TICK_MS + 1) * LOOP_TICK_MS;
		unsigned wait = (unsigned)(next - l->now_ms);
		int ret = loop_run_once(l, wait ? wait : 1);

		if (ret < 0) {
			log_error("loop.fatal", "err=%d msg=\"%s\"", ret, strerror(-ret));
			return ret;
		}
	}
	/* Hand the final batch (stream closes, errors) to the kernel. */
	io_uring_submit(&l->ring);
	return 0;
}

void loop_stop(struct loop *l)
{
	l->stop = true;
}
