// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The control plane: the generic netlink family "stanza_offload".
 *
 * Commands, attributes and their meaning are documented once, in
 * include/stanzad/uapi/stanza_offload.h; the policies below are the
 * kernel's side of that contract, all in one place. Every command has a
 * policy covering every attribute: what a command does not take is
 * NLA_REJECT, so a stray attribute is an error rather than ignored, and
 * the core's strict validation (the default for a new family) rejects
 * unknown types, wrong lengths and trailing bytes. Commands that change
 * state need CAP_NET_ADMIN (GENL_ADMIN_PERM).
 *
 * The family is per network namespace (netnsok): each command works on
 * the caller's namespace's state.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/in.h>
#include <net/genetlink.h>
#include <net/inet_sock.h>
#include <net/sock.h>

#include "so_internal.h"

enum so_genl_mcgrp {
	SO_GENL_MCGRP_EVENTS = 0,
};

/* ---- Policies ---- */

/* Not const: 6.1's struct nla_policy points at them without const. */
static struct netlink_range_validation so_sockets_range = {
	.min = 1,
	.max = STANZA_OFFLOAD_SOCKETS_LIMIT,
};

static struct netlink_range_validation so_payload_range = {
	.min = 64,
	.max = STANZA_OFFLOAD_PAYLOAD_LIMIT,
};

/* GET_STATS, GET_CONFIG, RESET_STATS, GET_SOCKETS: no input at all. */
static const struct nla_policy so_genl_none_policy[STANZA_OFFLOAD_A_MAX + 1] = {
	[STANZA_OFFLOAD_A_PAD ... STANZA_OFFLOAD_A_MAX] = { .type = NLA_REJECT },
};

/* SET_CONFIG: the four settings (contiguous in the enum), nothing else. */
static const struct nla_policy so_genl_set_policy[STANZA_OFFLOAD_A_MAX + 1] = {
	[STANZA_OFFLOAD_A_PAD ... STANZA_OFFLOAD_A_VERSION] = { .type = NLA_REJECT },
	[STANZA_OFFLOAD_A_ENABLED] = NLA_POLICY_MAX(NLA_U8, 1),
	[STANZA_OFFLOAD_A_MAX_SOCKETS_PER_REQUEST] = NLA_POLICY_FULL_RANGE(NLA_U32, &so_sockets_range),
	[STANZA_OFFLOAD_A_MAX_PAYLOAD] = NLA_POLICY_FULL_RANGE(NLA_U32, &so_payload_range),
	[STANZA_OFFLOAD_A_MAX_REGISTERED] = NLA_POLICY_FULL_RANGE(NLA_U32, &so_sockets_range),
	[STANZA_OFFLOAD_A_OWNERS ... STANZA_OFFLOAD_A_MAX] = { .type = NLA_REJECT },
};

static struct genl_family so_genl_family;

/* ---- Message helpers ---- */

static int so_put_u64(struct sk_buff *skb, int attr, u64 v)
{
	return nla_put_u64_64bit(skb, attr, v, STANZA_OFFLOAD_A_PAD);
}

/* The configuration attributes (GET_CONFIG reply, CONFIG_EVENT). */
static int so_genl_put_config(struct sk_buff *skb, const struct so_config *cfg)
{
	if (nla_put_u8(skb, STANZA_OFFLOAD_A_ENABLED, !!cfg->enabled) ||
	    nla_put_u32(skb, STANZA_OFFLOAD_A_MAX_SOCKETS_PER_REQUEST, cfg->max_sockets_per_request) ||
	    nla_put_u32(skb, STANZA_OFFLOAD_A_MAX_PAYLOAD, cfg->max_payload) ||
	    nla_put_u32(skb, STANZA_OFFLOAD_A_MAX_REGISTERED, cfg->max_registered))
		return -EMSGSIZE;
	return 0;
}

/* A consistent-enough copy of the configuration for a reply. */
static void so_config_read(const struct so_net *sn, struct so_config *out)
{
	out->enabled = READ_ONCE(sn->cfg.enabled);
	out->max_sockets_per_request = READ_ONCE(sn->cfg.max_sockets_per_request);
	out->max_payload = READ_ONCE(sn->cfg.max_payload);
	out->max_registered = READ_ONCE(sn->cfg.max_registered);
}

/* ---- Handlers ---- */

/* Counters of GET_STATS, in reply order. */
static const struct {
	int attr;
	size_t off;
} so_stat_attrs[] = {
	{ STANZA_OFFLOAD_A_STAT_REQUESTS, offsetof(struct so_stats, requests) },
	{ STANZA_OFFLOAD_A_STAT_REJECTED, offsetof(struct so_stats, rejected) },
	{ STANZA_OFFLOAD_A_STAT_TARGETS, offsetof(struct so_stats, targets) },
	{ STANZA_OFFLOAD_A_STAT_COMPLETE, offsetof(struct so_stats, complete) },
	{ STANZA_OFFLOAD_A_STAT_PARTIAL, offsetof(struct so_stats, partial) },
	{ STANZA_OFFLOAD_A_STAT_BLOCKED, offsetof(struct so_stats, blocked) },
	{ STANZA_OFFLOAD_A_STAT_ERRORS, offsetof(struct so_stats, errors) },
	{ STANZA_OFFLOAD_A_STAT_BYTES, offsetof(struct so_stats, bytes) },
	{ STANZA_OFFLOAD_A_STAT_REGISTRATIONS, offsetof(struct so_stats, registrations) },
};

static atomic64_t *so_stat(struct so_stats *st, size_t off)
{
	return (atomic64_t *)((char *)st + off);
}

/**
 * so_genl_get_stats_doit - STANZA_OFFLOAD_CMD_GET_STATS
 * @skb: the request
 * @info: its parsed form (no attributes: the policy rejects any)
 *
 * Replies with the module's ABI version, the namespace's enabled flag,
 * open files, registered sockets and every STAT_* counter.
 *
 * Return: 0 once the reply is queued, or a negative errno.
 */
static int so_genl_get_stats_doit(struct sk_buff *skb, struct genl_info *info)
{
	struct so_net *sn = so_net(genl_info_net(info));
	struct sk_buff *msg;
	void *hdr;
	size_t i;

	msg = genlmsg_new(NLMSG_GOODSIZE, GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	hdr = genlmsg_put_reply(msg, info, &so_genl_family, 0, STANZA_OFFLOAD_CMD_GET_STATS);
	if (!hdr)
		goto err_free_msg;
	if (nla_put_u32(msg, STANZA_OFFLOAD_A_VERSION, STANZA_OFFLOAD_VERSION) ||
	    nla_put_u8(msg, STANZA_OFFLOAD_A_ENABLED, !!READ_ONCE(sn->cfg.enabled)) ||
	    nla_put_u32(msg, STANZA_OFFLOAD_A_OWNERS, READ_ONCE(sn->nowners)) ||
	    nla_put_u32(msg, STANZA_OFFLOAD_A_REGISTERED, atomic_read(&sn->registered)))
		goto err_cancel_msg;
	for (i = 0; i < ARRAY_SIZE(so_stat_attrs); i++)
		if (so_put_u64(msg, so_stat_attrs[i].attr,
			       atomic64_read(so_stat(&sn->stats, so_stat_attrs[i].off))))
			goto err_cancel_msg;
	genlmsg_end(msg, hdr);
	return genlmsg_reply(msg, info);

err_cancel_msg:
	genlmsg_cancel(msg, hdr);
err_free_msg:
	nlmsg_free(msg);
	return -EMSGSIZE;
}

/**
 * so_genl_get_config_doit - STANZA_OFFLOAD_CMD_GET_CONFIG
 * @skb: the request
 * @info: its parsed form (no attributes)
 *
 * Return: 0 once the reply (the four settings) is queued, or a negative errno.
 */
static int so_genl_get_config_doit(struct sk_buff *skb, struct genl_info *info)
{
	struct so_net *sn = so_net(genl_info_net(info));
	struct so_config cfg;
	struct sk_buff *msg;
	void *hdr;

	so_config_read(sn, &cfg);
	msg = genlmsg_new(NLMSG_GOODSIZE, GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	hdr = genlmsg_put_reply(msg, info, &so_genl_family, 0, STANZA_OFFLOAD_CMD_GET_CONFIG);
	if (!hdr)
		goto err_free_msg;
	if (so_genl_put_config(msg, &cfg))
		goto err_cancel_msg;
	genlmsg_end(msg, hdr);
	return genlmsg_reply(msg, info);

err_cancel_msg:
	genlmsg_cancel(msg, hdr);
err_free_msg:
	nlmsg_free(msg);
	return -EMSGSIZE;
}

/* Multicasts the configuration to the "events" group of net, if anyone listens. */
static void so_genl_notify_config(struct net *net, const struct so_config *cfg)
{
	struct sk_buff *msg;
	void *hdr;

	if (!genl_has_listeners(&so_genl_family, net, SO_GENL_MCGRP_EVENTS))
		return;
	msg = genlmsg_new(NLMSG_GOODSIZE, GFP_KERNEL);
	if (!msg)
		return;
	hdr = genlmsg_put(msg, 0, 0, &so_genl_family, 0, STANZA_OFFLOAD_CMD_CONFIG_EVENT);
	if (!hdr || so_genl_put_config(msg, cfg)) {
		nlmsg_free(msg);
		return;
	}
	genlmsg_end(msg, hdr);
	genlmsg_multicast_netns(&so_genl_family, net, msg, 0, SO_GENL_MCGRP_EVENTS, GFP_KERNEL);
}

/**
 * so_genl_set_config_doit - STANZA_OFFLOAD_CMD_SET_CONFIG (CAP_NET_ADMIN)
 * @skb: the request
 * @info: its parsed form: any of ENABLED, MAX_SOCKETS_PER_REQUEST,
 *	MAX_PAYLOAD, MAX_REGISTERED, already range-checked by the policy
 *
 * Applies the settings given. Turning the module off revokes every open
 * file of the namespace (see so_owner_revoke()). Multicasts the result.
 *
 * Return: 0, or -EINVAL (with an extended ack) when no setting is given.
 */
static int so_genl_set_config_doit(struct sk_buff *skb, struct genl_info *info)
{
	struct net *net = genl_info_net(info);
	struct so_net *sn = so_net(net);
	struct nlattr **tb = info->attrs;
	struct so_owner *o;
	struct so_config cfg;
	unsigned int revoked = 0;
	bool revoke;

	if (!tb[STANZA_OFFLOAD_A_ENABLED] && !tb[STANZA_OFFLOAD_A_MAX_SOCKETS_PER_REQUEST] &&
	    !tb[STANZA_OFFLOAD_A_MAX_PAYLOAD] && !tb[STANZA_OFFLOAD_A_MAX_REGISTERED]) {
		NL_SET_ERR_MSG(info->extack, "no setting given");
		return -EINVAL;
	}

	mutex_lock(&sn->lock);
	cfg = sn->cfg;
	if (tb[STANZA_OFFLOAD_A_ENABLED])
		cfg.enabled = nla_get_u8(tb[STANZA_OFFLOAD_A_ENABLED]);
	if (tb[STANZA_OFFLOAD_A_MAX_SOCKETS_PER_REQUEST])
		cfg.max_sockets_per_request = nla_get_u32(tb[STANZA_OFFLOAD_A_MAX_SOCKETS_PER_REQUEST]);
	if (tb[STANZA_OFFLOAD_A_MAX_PAYLOAD])
		cfg.max_payload = nla_get_u32(tb[STANZA_OFFLOAD_A_MAX_PAYLOAD]);
	if (tb[STANZA_OFFLOAD_A_MAX_REGISTERED])
		cfg.max_registered = nla_get_u32(tb[STANZA_OFFLOAD_A_MAX_REGISTERED]);
	revoke = sn->cfg.enabled && !cfg.enabled;

	/* Requests read these without the lock. */
	WRITE_ONCE(sn->cfg.max_sockets_per_request, cfg.max_sockets_per_request);
	WRITE_ONCE(sn->cfg.max_payload, cfg.max_payload);
	WRITE_ONCE(sn->cfg.max_registered, cfg.max_registered);
	WRITE_ONCE(sn->cfg.enabled, cfg.enabled);
	if (revoke) {
		list_for_each_entry(o, &sn->owners, node) {
			so_owner_revoke(o);
			revoked++;
		}
	}
	mutex_unlock(&sn->lock);

	if (revoke)
		pr_info("turned off in a namespace: %u open files revoked\n", revoked);
	so_genl_notify_config(net, &cfg);
	return 0;
}

/**
 * so_genl_reset_stats_doit - STANZA_OFFLOAD_CMD_RESET_STATS (CAP_NET_ADMIN)
 * @skb: the request
 * @info: its parsed form (no attributes)
 *
 * Zeroes the namespace's STAT_* counters (not the gauges OWNERS and
 * REGISTERED, nor the per-socket counters of the dump).
 *
 * Return: 0.
 */
static int so_genl_reset_stats_doit(struct sk_buff *skb, struct genl_info *info)
{
	struct so_net *sn = so_net(genl_info_net(info));
	size_t i;

	for (i = 0; i < ARRAY_SIZE(so_stat_attrs); i++)
		atomic64_set(so_stat(&sn->stats, so_stat_attrs[i].off), 0);
	return 0;
}

/* One GET_SOCKETS message for s of owner o. 0 or -EMSGSIZE. */
static int so_genl_fill_sock(struct sk_buff *skb, struct netlink_callback *cb,
			     const struct so_owner *o, const struct so_sock *s)
{
	const struct inet_sock *inet = inet_sk(s->sock->sk);
	void *hdr;

	hdr = genlmsg_put(skb, NETLINK_CB(cb->skb).portid, cb->nlh->nlmsg_seq, &so_genl_family,
			  NLM_F_MULTI, STANZA_OFFLOAD_CMD_GET_SOCKETS);
	if (!hdr)
		return -EMSGSIZE;
	genl_dump_check_consistent(cb, hdr);
	if (nla_put_u32(skb, STANZA_OFFLOAD_A_SOCK_ID, s->id) ||
	    nla_put_u32(skb, STANZA_OFFLOAD_A_OWNER_PID, o->pid) ||
	    so_put_u64(skb, STANZA_OFFLOAD_A_SOCK_INODE, SOCK_INODE(s->sock)->i_ino) ||
	    nla_put_u8(skb, STANZA_OFFLOAD_A_SOCK_KTLS, so_sock_is_ktls(s->sock)) ||
	    nla_put_u16(skb, STANZA_OFFLOAD_A_SOCK_LOCAL_PORT, ntohs(inet->inet_sport)) ||
	    nla_put_u16(skb, STANZA_OFFLOAD_A_SOCK_PEER_PORT, ntohs(inet->inet_dport)) ||
	    so_put_u64(skb, STANZA_OFFLOAD_A_SOCK_BYTES, s->bytes) ||
	    so_put_u64(skb, STANZA_OFFLOAD_A_SOCK_SENDS, s->sends) ||
	    so_put_u64(skb, STANZA_OFFLOAD_A_SOCK_PARTIAL, s->partial)) {
		genlmsg_cancel(skb, hdr);
		return -EMSGSIZE;
	}
	genlmsg_end(skb, hdr);
	return 0;
}

/**
 * so_genl_get_sockets_dumpit - STANZA_OFFLOAD_CMD_GET_SOCKETS (dump)
 * @skb: the buffer to fill
 * @cb: the dump state; args[0] is the position of the owner in the
 *	namespace's list, args[1] the next socket id within it
 *
 * One message per registered socket of every open file of the caller's
 * namespace. The owner list may change between two parts of a dump; the
 * namespace's generation counter marks such a dump NLM_F_DUMP_INTR.
 *
 * Return: the bytes put in @skb (0 at the end), or a negative errno.
 */
static int so_genl_get_sockets_dumpit(struct sk_buff *skb, struct netlink_callback *cb)
{
	struct so_net *sn = so_net(sock_net(skb->sk));
	unsigned long want = cb->args[0], pos = 0, id = cb->args[1];
	struct so_owner *o;
	struct so_sock *s;
	int err = 0;

	mutex_lock(&sn->lock);
	cb->seq = sn->gen;
	list_for_each_entry(o, &sn->owners, node) {
		if (pos < want) {
			pos++;
			continue;
		}
		mutex_lock(&o->lock);
		xa_for_each_start(&o->socks, id, s, id) {
			err = so_genl_fill_sock(skb, cb, o, s);
			if (err)
				break;
		}
		mutex_unlock(&o->lock);
		if (err)
			break;	/* resume at this owner, this id */
		want = ++pos;
		id = 0;
	}
	mutex_unlock(&sn->lock);
	cb->args[0] = want;
	cb->args[1] = id;
	/* A message that does not fit an empty buffer never will. */
	if (err && !skb->len)
		return err;
	return skb->len;
}

/* ---- The family ---- */

static const struct genl_ops so_genl_ops[] = {
	{
		.cmd = STANZA_OFFLOAD_CMD_GET_STATS,
		.doit = so_genl_get_stats_doit,
		.policy = so_genl_none_policy,
		.maxattr = STANZA_OFFLOAD_A_MAX,
	},
	{
		.cmd = STANZA_OFFLOAD_CMD_GET_CONFIG,
		.doit = so_genl_get_config_doit,
		.policy = so_genl_none_policy,
		.maxattr = STANZA_OFFLOAD_A_MAX,
	},
	{
		.cmd = STANZA_OFFLOAD_CMD_SET_CONFIG,
		.doit = so_genl_set_config_doit,
		.policy = so_genl_set_policy,
		.maxattr = STANZA_OFFLOAD_A_MAX,
		.flags = GENL_ADMIN_PERM,
	},
	{
		.cmd = STANZA_OFFLOAD_CMD_RESET_STATS,
		.doit = so_genl_reset_stats_doit,
		.policy = so_genl_none_policy,
		.maxattr = STANZA_OFFLOAD_A_MAX,
		.flags = GENL_ADMIN_PERM,
	},
	{
		.cmd = STANZA_OFFLOAD_CMD_GET_SOCKETS,
		.dumpit = so_genl_get_sockets_dumpit,
		.policy = so_genl_none_policy,
		.maxattr = STANZA_OFFLOAD_A_MAX,
	},
};

static const struct genl_multicast_group so_genl_mcgrps[] = {
	[SO_GENL_MCGRP_EVENTS] = { .name = STANZA_OFFLOAD_MCGRP_EVENTS },
};

static struct genl_family so_genl_family __ro_after_init = {
	.name = STANZA_OFFLOAD_GENL_NAME,
	.version = STANZA_OFFLOAD_GENL_VERSION,
	.maxattr = STANZA_OFFLOAD_A_MAX,
	.policy = so_genl_none_policy,
	.netnsok = true,
	.module = THIS_MODULE,
	.ops = so_genl_ops,
	.n_ops = ARRAY_SIZE(so_genl_ops),
	.mcgrps = so_genl_mcgrps,
	.n_mcgrps = ARRAY_SIZE(so_genl_mcgrps),
};

int so_genl_init(void)
{
	return genl_register_family(&so_genl_family);
}

void so_genl_exit(void)
{
	genl_unregister_family(&so_genl_family);
}
