/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR MIT */
/*
 * The stanza offload module's ABI (kmod/), shared by the module, the daemon
 * (daemon/kmod.c, daemon/kmod_genl.c) and stanzactl. Fixed-width fields
 * only; the only pointers are user addresses carried in __u64. Anything
 * incompatible bumps STANZA_OFFLOAD_VERSION; every request carries the
 * version it was built against and the module refuses another.
 *
 * Two interfaces:
 *
 * 1. The data plane: a misc character device, STANZA_OFFLOAD_DEVICE. Each
 *    open file is an owner: it registers connection sockets by fd (the
 *    module takes a reference on each, so a registered socket stays open
 *    until it is unregistered or the file is closed) and submits fan-out
 *    requests naming registered sockets by id. Closing the file (or the
 *    owner's exit) drops every registration it made. The module can only
 *    be unloaded once no file is open.
 *
 * 2. The control plane: the generic netlink family STANZA_OFFLOAD_GENL_NAME
 *    (stats, configuration, registered sockets, events), per network
 *    namespace. Commands that change state need CAP_NET_ADMIN.
 *
 * Per network namespace: configuration, counters and the owners of the
 * namespace the file was opened in; a socket must belong to the owner's
 * namespace.
 */
#ifndef _UAPI_STANZAD_STANZA_OFFLOAD_H
#define _UAPI_STANZAD_STANZA_OFFLOAD_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define STANZA_OFFLOAD_VERSION		1
#define STANZA_OFFLOAD_DEVICE		"/dev/stanza_offload"
#define STANZA_OFFLOAD_DEVICE_NAME	"stanza_offload"

/* Hard limits, whatever the configuration says. */
#define STANZA_OFFLOAD_SOCKETS_LIMIT	(1u << 20)	/* max_sockets_per_request, max_registered */
#define STANZA_OFFLOAD_PAYLOAD_LIMIT	(16u << 20)	/* max_payload */
#define STANZA_OFFLOAD_SPLICE_MAX	(32u << 10)	/* one target's splice bytes */
#define STANZA_OFFLOAD_SPLICES_MAX	(64u << 20)	/* all splice bytes of a request */

/* Defaults of a new network namespace. */
#define STANZA_OFFLOAD_DEFAULT_MAX_SOCKETS	65536
#define STANZA_OFFLOAD_DEFAULT_MAX_PAYLOAD	(1u << 20)
#define STANZA_OFFLOAD_DEFAULT_MAX_REGISTERED	(1u << 20)

/* ---- Character device ioctls ---- */

/*
 * Magic of the device's ioctls. Dispatch is per file (a misc device), so
 * the number only has to be unique within this device.
 */
#define STANZA_OFFLOAD_IOC_MAGIC	0xB9

/* struct stanza_offload_reg.flags: the socket carries the kernel's TLS (kTLS). */
#define STANZA_OFFLOAD_SOCK_KTLS	(1u << 0)

/*
 * STANZA_OFFLOAD_IOC_INFO: the module's version, the namespace's
 * configuration and this file's registrations. Works on a revoked file
 * (enabled = 0 then).
 */
struct stanza_offload_info {
	__u32 version;			/* STANZA_OFFLOAD_VERSION of the module */
	__u32 enabled;			/* 0: requests fail with ESHUTDOWN */
	__u32 max_sockets_per_request;
	__u32 max_payload;		/* prefix_len + suffix_len of a request */
	__u32 max_registered;		/* registrations per open file */
	__u32 registered;		/* this file's registrations */
	__u32 reserved[2];
};

/* One socket of a register request. */
struct stanza_offload_reg {
	__s32 fd;			/* in: a connected TCP socket of the caller */
	__u32 id;			/* out: its id (never 0), or 0 on error */
	__s32 error;			/* out: 0, or a negative errno */
	__u32 flags;			/* out: STANZA_OFFLOAD_SOCK_* */
};

/*
 * STANZA_OFFLOAD_IOC_REGISTER: registers count sockets. Each entry gets
 * its own result; the ioctl fails as a whole only for a malformed
 * request. Per-entry errors: EBADF (not an open fd), ENOTSOCK,
 * EPROTONOSUPPORT (not TCP over IPv4/IPv6), EOPNOTSUPP (an upper layer
 * other than kTLS), EXDEV (another network namespace), ENOSPC (the file
 * holds max_registered sockets), ENOMEM.
 */
struct stanza_offload_register {
	__u32 version;			/* STANZA_OFFLOAD_VERSION */
	__u32 count;			/* entries at socks, at most max_sockets_per_request */
	__u64 socks;			/* user address of struct stanza_offload_reg[count] */
	__u32 registered;		/* out: entries with error 0 */
	__u32 reserved;			/* must be 0 */
};

/*
 * STANZA_OFFLOAD_IOC_UNREGISTER: drops count registrations of this file
 * (ids it does not hold are skipped). Returns the number dropped.
 */
struct stanza_offload_unregister {
	__u32 version;			/* STANZA_OFFLOAD_VERSION */
	__u32 count;			/* at most max_sockets_per_request */
	__u64 ids;			/* user address of __u32[count] */
};

/* One recipient of a fan-out. */
struct stanza_offload_target {
	__u32 id;			/* a socket id of this file */
	__u32 splice_off;		/* its splice: splices[splice_off..+splice_len) */
	__u32 splice_len;		/* at most STANZA_OFFLOAD_SPLICE_MAX */
	__s32 result;			/* out: bytes written (0..total), or a negative errno */
};

/*
 * STANZA_OFFLOAD_IOC_FANOUT: writes prefix + splice + suffix to each
 * target's socket, in target order, without blocking (MSG_DONTWAIT): a
 * socket whose send buffer is full takes part of the bytes or none, and
 * `result` says how many it took; the caller sends the rest itself, after
 * those bytes. Works on plain TCP and on kTLS sockets (the kernel's TLS
 * sits below the socket API). Per-target errors: EBADF (no such id),
 * EINVAL (splice out of range), or what the socket's send returned
 * (EPIPE, ECONNRESET, ...); EINTR for targets not tried because the
 * caller got a fatal signal.
 *
 * The ioctl fails as a whole with EINVAL (version, flags, reserved),
 * E2BIG (more than max_sockets_per_request targets, a payload over
 * max_payload, splices over STANZA_OFFLOAD_SPLICES_MAX), ESHUTDOWN
 * (disabled: close the file and fall back), EFAULT or ENOMEM.
 */
struct stanza_offload_fanout {
	__u32 version;			/* STANZA_OFFLOAD_VERSION */
	__u32 flags;			/* none defined: must be 0 */
	__u64 prefix;			/* user address of the bytes before each splice */
	__u64 suffix;			/* user address of the bytes after each splice */
	__u64 splices;			/* user address of all targets' splice bytes */
	__u64 targets;			/* user address of struct stanza_offload_target[count] */
	__u32 prefix_len;
	__u32 suffix_len;
	__u32 splices_len;
	__u32 count;			/* targets, at most max_sockets_per_request */
	__u32 complete;			/* out: targets that took every byte */
	__u32 reserved;			/* must be 0 */
};

#define STANZA_OFFLOAD_IOC_INFO		_IOR(STANZA_OFFLOAD_IOC_MAGIC, 0, struct stanza_offload_info)
#define STANZA_OFFLOAD_IOC_REGISTER	_IOWR(STANZA_OFFLOAD_IOC_MAGIC, 1, struct stanza_offload_register)
#define STANZA_OFFLOAD_IOC_UNREGISTER	_IOW(STANZA_OFFLOAD_IOC_MAGIC, 2, struct stanza_offload_unregister)
#define STANZA_OFFLOAD_IOC_FANOUT	_IOWR(STANZA_OFFLOAD_IOC_MAGIC, 3, struct stanza_offload_fanout)

/* ---- Generic netlink family ---- */

#define STANZA_OFFLOAD_GENL_NAME	"stanza_offload"
#define STANZA_OFFLOAD_GENL_VERSION	1
#define STANZA_OFFLOAD_MCGRP_EVENTS	"events"

/*
 * Commands. Every attribute of every command has a policy: attributes a
 * command does not take are rejected (EINVAL with an extended ack), as
 * are unknown ones and wrong types or lengths.
 *
 * GET_STATS	do; no attributes. Reply: VERSION, ENABLED, OWNERS,
 *		REGISTERED and every STAT_* counter of the caller's namespace.
 * GET_CONFIG	do; no attributes. Reply: ENABLED, MAX_SOCKETS_PER_REQUEST,
 *		MAX_PAYLOAD, MAX_REGISTERED.
 * SET_CONFIG	do; CAP_NET_ADMIN. Any of ENABLED, MAX_SOCKETS_PER_REQUEST,
 *		MAX_PAYLOAD, MAX_REGISTERED (at least one). Setting ENABLED
 *		to 0 revokes every open file of the namespace: their
 *		registrations are dropped and their requests fail with
 *		ESHUTDOWN, so their owners close them and the module can be
 *		unloaded. Opening the device fails with ESHUTDOWN meanwhile.
 *		Reply: none (an ack when asked). Multicasts CONFIG_EVENT.
 * RESET_STATS	do; CAP_NET_ADMIN; no attributes. Zeroes the STAT_* counters.
 * GET_SOCKETS	dump; no attributes. One message per registered socket:
 *		SOCK_ID, OWNER_PID, SOCK_INODE, SOCK_KTLS, SOCK_LOCAL_PORT,
 *		SOCK_PEER_PORT, SOCK_BYTES, SOCK_SENDS, SOCK_PARTIAL.
 * CONFIG_EVENT	multicast to group "events" when SET_CONFIG ran: the
 *		configuration after it (as GET_CONFIG's reply). Never a request.
 */
enum stanza_offload_cmd {
	STANZA_OFFLOAD_CMD_UNSPEC = 0,
	STANZA_OFFLOAD_CMD_GET_STATS,
	STANZA_OFFLOAD_CMD_GET_CONFIG,
	STANZA_OFFLOAD_CMD_SET_CONFIG,
	STANZA_OFFLOAD_CMD_RESET_STATS,
	STANZA_OFFLOAD_CMD_GET_SOCKETS,
	STANZA_OFFLOAD_CMD_CONFIG_EVENT,

	__STANZA_OFFLOAD_CMD_MAX,
	STANZA_OFFLOAD_CMD_MAX = __STANZA_OFFLOAD_CMD_MAX - 1
};

/*
 * Attributes (one namespace for all commands). Types: u8 flags are 0 or 1;
 * counters are u64 (64-bit aligned with PAD).
 */
enum stanza_offload_attr {
	STANZA_OFFLOAD_A_UNSPEC = 0,
	STANZA_OFFLOAD_A_PAD,				/* alignment of u64 attributes */
	STANZA_OFFLOAD_A_VERSION,			/* u32: STANZA_OFFLOAD_VERSION */
	STANZA_OFFLOAD_A_ENABLED,			/* u8: 0 or 1 */
	STANZA_OFFLOAD_A_MAX_SOCKETS_PER_REQUEST,	/* u32: 1..SOCKETS_LIMIT */
	STANZA_OFFLOAD_A_MAX_PAYLOAD,			/* u32: 64..PAYLOAD_LIMIT */
	STANZA_OFFLOAD_A_MAX_REGISTERED,		/* u32: 1..SOCKETS_LIMIT, per open file */
	STANZA_OFFLOAD_A_OWNERS,			/* u32: open files */
	STANZA_OFFLOAD_A_REGISTERED,			/* u32: registered sockets */
	STANZA_OFFLOAD_A_STAT_REQUESTS,			/* u64: fan-out requests served */
	STANZA_OFFLOAD_A_STAT_REJECTED,			/* u64: requests refused as a whole */
	STANZA_OFFLOAD_A_STAT_TARGETS,			/* u64: sockets written to (tried) */
	STANZA_OFFLOAD_A_STAT_COMPLETE,			/* u64: ... that took every byte */
	STANZA_OFFLOAD_A_STAT_PARTIAL,			/* u64: ... that took some */
	STANZA_OFFLOAD_A_STAT_BLOCKED,			/* u64: ... that took none (buffer full) */
	STANZA_OFFLOAD_A_STAT_ERRORS,			/* u64: ... that failed (or unknown id) */
	STANZA_OFFLOAD_A_STAT_BYTES,			/* u64: bytes written */
	STANZA_OFFLOAD_A_STAT_REGISTRATIONS,		/* u64: sockets registered, ever */
	STANZA_OFFLOAD_A_SOCK_ID,			/* u32 */
	STANZA_OFFLOAD_A_OWNER_PID,			/* u32: process that opened the file */
	STANZA_OFFLOAD_A_SOCK_INODE,			/* u64: as in /proc/PID/fd "socket:[N]" */
	STANZA_OFFLOAD_A_SOCK_KTLS,			/* u8: the kernel's TLS is on */
	STANZA_OFFLOAD_A_SOCK_LOCAL_PORT,		/* u16 */
	STANZA_OFFLOAD_A_SOCK_PEER_PORT,		/* u16 */
	STANZA_OFFLOAD_A_SOCK_BYTES,			/* u64: bytes the module wrote to it */
	STANZA_OFFLOAD_A_SOCK_SENDS,			/* u64: fan-out writes to it */
	STANZA_OFFLOAD_A_SOCK_PARTIAL,			/* u64: writes that took part or none */

	__STANZA_OFFLOAD_A_MAX,
	STANZA_OFFLOAD_A_MAX = __STANZA_OFFLOAD_A_MAX - 1
};

#endif /* _UAPI_STANZAD_STANZA_OFFLOAD_H */
