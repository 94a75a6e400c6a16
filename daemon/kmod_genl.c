/* SPDX-License-Identifier: MIT */
/*
 * The stanza offload module's generic netlink family through libnl-genl
 * (see kmod_genl.h). Requests ask for an ack, so every command ends with
 * either the kernel's ack, its error (with the extended-ack message when
 * the kernel gave one), or the end of a dump.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/netlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <stanzad/uapi/stanza_offload.h>

#include "kmod_genl.h"

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

#define KG_ERROR_MAX	200	/* longest extended-ack message kept */
#define KG_EVENT_READS	64	/* reads per kmod_genl_read_events() call */

struct kmod_genl {
	struct nl_sock *sk;
	int family;		/* the family's id when the handle was opened */
	int err;		/* the kernel's errno for the current request */
	bool done;		/* ack or end of dump seen */
	char error[KG_ERROR_MAX];
};

/* How replies and events are checked on our side (types and lengths). */
static struct nla_policy kg_policy[STANZA_OFFLOAD_A_MAX + 1] = {
	[STANZA_OFFLOAD_A_VERSION] = { .type = NLA_U32 },
	[STANZA_OFFLOAD_A_ENABLED] = { .type = NLA_U8 },
	[STANZA_OFFLOAD_A_MAX_SOCKETS_PER_REQUEST] = { .type = NLA_U32 },
	[STANZA_OFFLOAD_A_MAX_PAYLOAD] = { .type = NLA_U32 },
	[STANZA_OFFLOAD_A_MAX_REGISTERED] = { .type = NLA_U32 },
	[STANZA_OFFLOAD_A_OWNERS] = { .type = NLA_U32 },
	[STANZA_OFFLOAD_A_REGISTERED] = { .type = NLA_U32 },
	[STANZA_OFFLOAD_A_STAT_REQUESTS] = { .type = NLA_U64 },
	[STANZA_OFFLOAD_A_STAT_REJECTED] = { .type = NLA_U64 },
	[STANZA_OFFLOAD_A_STAT_TARGETS] = { .type = NLA_U64 },
	[STANZA_OFFLOAD_A_STAT_COMPLETE] = { .type = NLA_U64 },
	[STANZA_OFFLOAD_A_STAT_PARTIAL] = { .type = NLA_U64 },
	[STANZA_OFFLOAD_A_STAT_BLOCKED] = { .type = NLA_U64 },
	[STANZA_OFFLOAD_A_STAT_ERRORS] = { .type = NLA_U64 },
	[STANZA_OFFLOAD_A_STAT_BYTES] = { .type = NLA_U64 },
	[STANZA_OFFLOAD_A_STAT_REGISTRATIONS] = { .type = NLA_U64 },
	[STANZA_OFFLOAD_A_SOCK_ID] = { .type = NLA_U32 },
	[STANZA_OFFLOAD_A_OWNER_PID] = { .type = NLA_U32 },
	[STANZA_OFFLOAD_A_SOCK_INODE] = { .type = NLA_U64 },
	[STANZA_OFFLOAD_A_SOCK_KTLS] = { .type = NLA_U8 },
	[STANZA_OFFLOAD_A_SOCK_LOCAL_PORT] = { .type = NLA_U16 },
	[STANZA_OFFLOAD_A_SOCK_PEER_PORT] = { .type = NLA_U16 },
	[STANZA_OFFLOAD_A_SOCK_BYTES] = { .type = NLA_U64 },
	[STANZA_OFFLOAD_A_SOCK_SENDS] = { .type = NLA_U64 },
	[STANZA_OFFLOAD_A_SOCK_PARTIAL] = { .type = NLA_U64 },
};

/* libnl's error codes (negative NLE_*) as -errno, for what we can meet. */
static int kg_errno(int nlerr)
{
	switch (-nlerr) {
	case NLE_OBJ_NOTFOUND:
		return -ENOENT;
	case NLE_PERM:
		return -EPERM;
	case NLE_NOACCESS:
		return -EACCES;
	case NLE_INVAL:
		return -EINVAL;
	case NLE_RANGE:
		return -ERANGE;
	case NLE_NOMEM:
		return -ENOMEM;
	case NLE_AGAIN:
		return -EAGAIN;
	case NLE_MSGSIZE:
		return -EMSGSIZE;
	case NLE_OPNOTSUPP:
		return -EOPNOTSUPP;
	case NLE_INTR:
		return -EINTR;
	default:
		return -EIO;
	}
}

/* Reads an attribute or leaves the default (0). */
static uint64_t kg_u64(struct nlattr **tb, int a)
{
	return tb[a] ? nla_get_u64(tb[a]) : 0;
}

static uint32_t kg_u32(struct nlattr **tb, int a)
{
	return tb[a] ? nla_get_u32(tb[a]) : 0;
}

/* Parses a reply or event into tb. 0 or -EINVAL. */
static int kg_parse(struct nl_msg *msg, struct nlattr **tb, uint8_t *cmd)
{
	struct nlmsghdr *nlh = nlmsg_hdr(msg);
	struct genlmsghdr *gh = nlmsg_data(nlh);

	if (genlmsg_parse(nlh, 0, tb, STANZA_OFFLOAD_A_MAX, kg_policy) < 0)
		return -EINVAL;
	if (cmd)
		*cmd = gh->cmd;
	return 0;
}

/* ---- Requests ---- */

/* A private copy of the socket's callbacks (the socket keeps its own). */
static struct nl_cb *kg_cb(struct kmod_genl *g)
{
	struct nl_cb *s = nl_socket_get_cb(g->sk);
	struct nl_cb *cb = nl_cb_clone(s);

	nl_cb_put(s);
	return cb;
}

/*
 * The kernel's extended ack: the message follows the error (and the copy
 * of our request unless the kernel capped it) as NLMSGERR_ATTR_* TLVs.
 */
static void kg_extack(struct kmod_genl *g, const struct nlmsgerr *e)
{
	const struct nlmsghdr *nlh = (const struct nlmsghdr *)((const char *)e - NLMSG_HDRLEN);
	size_t off = sizeof(*e);
	const struct nlattr *a;
	int rem;

	if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS))
		return;
	if (!(nlh->nlmsg_flags & NLM_F_CAPPED))
		off += e->msg.nlmsg_len - NLMSG_HDRLEN;
	off = NLMSG_ALIGN(off);
	if (NLMSG_HDRLEN + off >= nlh->nlmsg_len)
		return;
	a = (const struct nlattr *)((const char *)e + off);
	rem = (int)(nlh->nlmsg_len - NLMSG_HDRLEN - off);
	for (; nla_ok(a, rem); a = nla_next(a, &rem)) {
		if (nla_type(a) == NLMSGERR_ATTR_MSG && nla_len(a) > 0) {
			snprintf(g->error, sizeof(g->error), "%.*s", nla_len(a),
				 (const char *)nla_data(a));
			return;
		}
	}
}

static int kg_err_cb(struct sockaddr_nl *nla, struct nlmsgerr *e, void *arg)
{
	struct kmod_genl *g = arg;

	g->err = e->error;
	kg_extack(g, e);
	return NL_STOP;
}

static int kg_done_cb(struct nl_msg *msg, void *arg)
{
	struct kmod_genl *g = arg;

	g->done = true;
	return NL_STOP;
}

static int kg_skip_cb(struct nl_msg *msg, void *arg)
{
	return NL_OK;
}

/*
 * Sends msg (freed here) and reads until the ack, the end of the dump or
 * an error; `valid` sees each reply. 0 or -errno.
 */
static int kg_request(struct kmod_genl *g, struct nl_msg *msg, nl_recvmsg_msg_cb_t valid,
		      void *arg)
{
	struct nl_cb *cb = kg_cb(g);
	int ret;

	g->err = 0;
	g->done = false;
	g->error[0] = '\0';
	if (!cb) {
		nlmsg_free(msg);
		return -ENOMEM;
	}
	nl_cb_set(cb, NL_CB_VALID, NL_CB_CUSTOM, valid ? valid : kg_skip_cb, arg);
	nl_cb_set(cb, NL_CB_ACK, NL_CB_CUSTOM, kg_done_cb, g);
	nl_cb_set(cb, NL_CB_FINISH, NL_CB_CUSTOM, kg_done_cb, g);
	nl_cb_err(cb, NL_CB_CUSTOM, kg_err_cb, g);
	ret = nl_send_auto(g->sk, msg);
	nlmsg_free(msg);
	if (ret < 0) {
		nl_cb_put(cb);
		return kg_errno(ret);
	}
	while (!g->done && !g->err) {
		ret = nl_recvmsgs(g->sk, cb);
		if (ret < 0 && !g->err) {
			nl_cb_put(cb);
			return kg_errno(ret);
		}
	}
	nl_cb_put(cb);
	return g->err;
}

/* A new request message for cmd (flags: NLM_F_DUMP or 0), or NULL. */
static struct nl_msg *kg_msg(struct kmod_genl *g, uint8_t cmd, int flags)
{
	struct nl_msg *msg = nlmsg_alloc();

	if (!msg)
		return NULL;
	if (!genlmsg_put(msg, NL_AUTO_PORT, NL_AUTO_SEQ, g->family, 0, flags, cmd,
			 STANZA_OFFLOAD_GENL_VERSION)) {
		nlmsg_free(msg);
		return NULL;
	}
	return msg;
}

int kmod_genl_open(struct kmod_genl **out)
{
	struct kmod_genl *g = calloc(1, sizeof(*g));
	int one = 1, ret;

	if (!g)
		return -ENOMEM;
	g->sk = nl_socket_alloc();
	if (!g->sk) {
		free(g);
		return -ENOMEM;
	}
	ret = genl_connect(g->sk);
	if (ret < 0) {
		ret = kg_errno(ret);
		goto err_free_sock;
	}
	fcntl(nl_socket_get_fd(g->sk), F_SETFD, FD_CLOEXEC);
	/* Ask for the kernel's reasons; older kernels ignore it. */
	setsockopt(nl_socket_get_fd(g->sk), SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
	g->family = genl_ctrl_resolve(g->sk, STANZA_OFFLOAD_GENL_NAME);
	if (g->family < 0) {
		ret = g->family == -NLE_OBJ_NOTFOUND ? -ENOENT : kg_errno(g->family);
		goto err_free_sock;
	}
	*out = g;
	return 0;

err_free_sock:
	nl_socket_free(g->sk);
	free(g);
	return ret;
}

void kmod_genl_close(struct kmod_genl *g)
{
	if (!g)
		return;
	nl_socket_free(g->sk);
	free(g);
}

const char *kmod_genl_error(const struct kmod_genl *g)
{
	return g->error;
}

static int kg_stats_cb(struct nl_msg *msg, void *arg)
{
	struct nlattr *tb[STANZA_OFFLOAD_A_MAX + 1];
	struct kmod_stats *st = arg;

	if (kg_parse(msg, tb, NULL) < 0)
		return NL_SKIP;
	st->version = kg_u32(tb, STANZA_OFFLOAD_A_VERSION);
	st->enabled = tb[STANZA_OFFLOAD_A_ENABLED] && nla_get_u8(tb[STANZA_OFFLOAD_A_ENABLED]);
	st->owners = kg_u32(tb, STANZA_OFFLOAD_A_OWNERS);
	st->registered = kg_u32(tb, STANZA_OFFLOAD_A_REGISTERED);
	st->requests = kg_u64(tb, STANZA_OFFLOAD_A_STAT_REQUESTS);
	st->rejected = kg_u64(tb, STANZA_OFFLOAD_A_STAT_REJECTED);
	st->targets = kg_u64(tb, STANZA_OFFLOAD_A_STAT_TARGETS);
	st->complete = kg_u64(tb, STANZA_OFFLOAD_A_STAT_COMPLETE);
	st->partial = kg_u64(tb, STANZA_OFFLOAD_A_STAT_PARTIAL);
	st->blocked = kg_u64(tb, STANZA_OFFLOAD_A_STAT_BLOCKED);
	st->errors = kg_u64(tb, STANZA_OFFLOAD_A_STAT_ERRORS);
	st->bytes = kg_u64(tb, STANZA_OFFLOAD_A_STAT_BYTES);
	st->registrations = kg_u64(tb, STANZA_OFFLOAD_A_STAT_REGISTRATIONS);
	return NL_OK;
}

int kmod_genl_get_stats(struct kmod_genl *g, struct kmod_stats *st)
{
	struct nl_msg *msg = kg_msg(g, STANZA_OFFLOAD_CMD_GET_STATS, 0);

	memset(st, 0, sizeof(*st));
	if (!msg)
		return -ENOMEM;
	return kg_request(g, msg, kg_stats_cb, st);
}

/* The configuration attributes of a reply or event. */
static void kg_config_from(struct nlattr **tb, struct kmod_config *cfg)
{
	cfg->enabled = tb[STANZA_OFFLOAD_A_ENABLED] && nla_get_u8(tb[STANZA_OFFLOAD_A_ENABLED]);
	cfg->max_sockets_per_request = kg_u32(tb, STANZA_OFFLOAD_A_MAX_SOCKETS_PER_REQUEST);
	cfg->max_payload = kg_u32(tb, STANZA_OFFLOAD_A_MAX_PAYLOAD);
	cfg->max_registered = kg_u32(tb, STANZA_OFFLOAD_A_MAX_REGISTERED);
}

static int kg_config_cb(struct nl_msg *msg, void *arg)
{
	struct nlattr *tb[STANZA_OFFLOAD_A_MAX + 1];

	if (kg_parse(msg, tb, NULL) < 0)
		return NL_SKIP;
	kg_config_from(tb, arg);
	return NL_OK;
}

int kmod_genl_get_config(struct kmod_genl *g, struct kmod_config *cfg)
{
	struct nl_msg *msg = kg_msg(g, STANZA_OFFLOAD_CMD_GET_CONFIG, 0);

	memset(cfg, 0, sizeof(*cfg));
	if (!msg)
		return -ENOMEM;
	return kg_request(g, msg, kg_config_cb, cfg);
}

int kmod_genl_set_config(struct kmod_genl *g, const struct kmod_config *cfg, unsigned fields)
{
	struct nl_msg *msg = kg_msg(g, STANZA_OFFLOAD_CMD_SET_CONFIG, 0);

	if (!msg)
		return -ENOMEM;
	if (((fields & KMOD_SET_ENABLED) &&
	     nla_put_u8(msg, STANZA_OFFLOAD_A_ENABLED, cfg->enabled ? 1 : 0) < 0) ||
	    ((fields & KMOD_SET_MAX_SOCKETS) &&
	     nla_put_u32(msg, STANZA_OFFLOAD_A_MAX_SOCKETS_PER_REQUEST,
			 cfg->max_sockets_per_request) < 0) ||
	    ((fields & KMOD_SET_MAX_PAYLOAD) &&
	     nla_put_u32(msg, STANZA_OFFLOAD_A_MAX_PAYLOAD, cfg->max_payload) < 0) ||
	    ((fields & KMOD_SET_MAX_REGISTERED) &&
	     nla_put_u32(msg, STANZA_OFFLOAD_A_MAX_REGISTERED, cfg->max_registered) < 0)) {
		nlmsg_free(msg);
		return -EMSGSIZE;
	}
	return kg_request(g, msg, NULL, NULL);
}

int kmod_genl_reset_stats(struct kmod_genl *g)
{
	struct nl_msg *msg = kg_msg(g, STANZA_OFFLOAD_CMD_RESET_STATS, 0);

	if (!msg)
		return -ENOMEM;
	return kg_request(g, msg, NULL, NULL);
}

/* State of a socket dump. */
struct kg_dump {
	int (*fn)(const struct kmod_sock_info *si, void *arg);
	void *arg;
	bool stopped;
};

static int kg_sock_cb(struct nl_msg *msg, void *arg)
{
	struct nlattr *tb[STANZA_OFFLOAD_A_MAX + 1];
	struct kg_dump *d = arg;
	struct kmod_sock_info si;

	if (d->stopped || kg_parse(msg, tb, NULL) < 0)
		return NL_SKIP;
	memset(&si, 0, sizeof(si));
	si.id = kg_u32(tb, STANZA_OFFLOAD_A_SOCK_ID);
	si.owner_pid = kg_u32(tb, STANZA_OFFLOAD_A_OWNER_PID);
	si.inode = kg_u64(tb, STANZA_OFFLOAD_A_SOCK_INODE);
	si.ktls = tb[STANZA_OFFLOAD_A_SOCK_KTLS] && nla_get_u8(tb[STANZA_OFFLOAD_A_SOCK_KTLS]);
	if (tb[STANZA_OFFLOAD_A_SOCK_LOCAL_PORT])
		si.local_port = nla_get_u16(tb[STANZA_OFFLOAD_A_SOCK_LOCAL_PORT]);
	if (tb[STANZA_OFFLOAD_A_SOCK_PEER_PORT])
		si.peer_port = nla_get_u16(tb[STANZA_OFFLOAD_A_SOCK_PEER_PORT]);
	si.bytes = kg_u64(tb, STANZA_OFFLOAD_A_SOCK_BYTES);
	si.sends = kg_u64(tb, STANZA_OFFLOAD_A_SOCK_SENDS);
	si.partial = kg_u64(tb, STANZA_OFFLOAD_A_SOCK_PARTIAL);
	/* The rest of the dump is still read (and skipped) to its end. */
	if (d->fn(&si, d->arg))
		d->stopped = true;
	return NL_OK;
}

int kmod_genl_dump_sockets(struct kmod_genl *g,
			   int (*fn)(const struct kmod_sock_info *si, void *arg), void *arg)
{
	struct nl_msg *msg = kg_msg(g, STANZA_OFFLOAD_CMD_GET_SOCKETS, NLM_F_DUMP);
	struct kg_dump d = { fn, arg, false };

	if (!msg)
		return -ENOMEM;
	return kg_request(g, msg, kg_sock_cb, &d);
}

int kmod_genl_raw(struct kmod_genl *g, uint8_t cmd, const void *attrs, size_t len)
{
	struct nl_msg *msg = kg_msg(g, cmd, 0);

	if (!msg)
		return -ENOMEM;
	if (len && nlmsg_append(msg, (void *)attrs, len, NLMSG_ALIGNTO) < 0) {
		nlmsg_free(msg);
		return -EMSGSIZE;
	}
	return kg_request(g, msg, NULL, NULL);
}

/* ---- Events ---- */

int kmod_genl_subscribe(struct kmod_genl *g)
{
	struct kmod_genl *q;
	int grp, ret;

	/*
	 * Resolve on a handle of its own: this one may already be a
	 * nonblocking member of the group (a reload), where a reply would
	 * mix with events.
	 */
	ret = kmod_genl_open(&q);
	if (ret < 0)
		return ret;
	grp = genl_ctrl_resolve_grp(q->sk, STANZA_OFFLOAD_GENL_NAME, STANZA_OFFLOAD_MCGRP_EVENTS);
	kmod_genl_close(q);
	if (grp < 0)
		return grp == -NLE_OBJ_NOTFOUND ? -ENOENT : kg_errno(grp);
	/* Events carry no sequence numbers of ours. */
	nl_socket_disable_seq_check(g->sk);
	ret = nl_socket_add_membership(g->sk, grp);
	if (ret < 0)
		return kg_errno(ret);
	ret = nl_socket_set_nonblocking(g->sk);
	return ret < 0 ? kg_errno(ret) : 0;
}

int kmod_genl_fd(const struct kmod_genl *g)
{
	return nl_socket_get_fd(g->sk);
}

/* State of an event read. */
struct kg_events {
	void (*fn)(const struct kmod_config *cfg, void *arg);
	void *arg;
};

static int kg_event_cb(struct nl_msg *msg, void *arg)
{
	struct nlattr *tb[STANZA_OFFLOAD_A_MAX + 1];
	struct kg_events *ev = arg;
	struct kmod_config cfg;
	uint8_t cmd;

	if (kg_parse(msg, tb, &cmd) < 0 || cmd != STANZA_OFFLOAD_CMD_CONFIG_EVENT)
		return NL_SKIP;
	kg_config_from(tb, &cfg);
	ev->fn(&cfg, ev->arg);
	return NL_OK;
}

int kmod_genl_read_events(struct kmod_genl *g,
			  void (*fn)(const struct kmod_config *cfg, void *arg), void *arg)
{
	struct nl_cb *cb = kg_cb(g);
	struct kg_events ev = { fn, arg };
	int ret = 0;

	if (!cb)
		return -ENOMEM;
	nl_cb_set(cb, NL_CB_VALID, NL_CB_CUSTOM, kg_event_cb, &ev);
	/* Bounded: the loop calls again when the socket is still readable. */
	for (int i = 0; i < KG_EVENT_READS && ret >= 0; i++)
		ret = nl_recvmsgs(g->sk, cb);
	nl_cb_put(cb);
	if (ret >= 0)
		return 0;
	/* Drained; an overrun (ENOBUFS) only means events were lost. */
	return ret == -NLE_AGAIN || ret == -NLE_NOMEM ? 0 : kg_errno(ret);
}
