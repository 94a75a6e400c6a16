/* SPDX-License-Identifier: MIT */
/*
 * A client of the stanza offload module's generic netlink family
 * ("stanza_offload", include/stanzad/uapi/stanza_offload.h), over libnl:
 * counters, configuration, the registered sockets, and the "events"
 * multicast group. Used by the daemon (events: the module was turned off,
 * let go of it) and by `stanzactl kmod`.
 *
 * Every call is synchronous on its own netlink socket except the events,
 * which a subscribed handle reads without blocking whenever its fd is
 * readable. Errors are -errno: -ENOENT when the family is not registered
 * (module not loaded), what the kernel answered otherwise (-EPERM without
 * CAP_NET_ADMIN, -EINVAL/-ERANGE for a refused attribute); the kernel's
 * extended-ack message, if any, is kept for kmod_genl_error().
 */
#ifndef STANZAD_KMOD_GENL_H
#define STANZAD_KMOD_GENL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kmod_genl;

/* STANZA_OFFLOAD_CMD_GET_STATS */
struct kmod_stats {
	uint32_t version;		/* the module's ABI version */
	bool enabled;
	uint32_t owners;		/* open files of the device */
	uint32_t registered;		/* sockets registered by them */
	uint64_t requests, rejected;
	uint64_t targets, complete, partial, blocked, errors, bytes;
	uint64_t registrations;
};

/* STANZA_OFFLOAD_CMD_GET_CONFIG / SET_CONFIG / CONFIG_EVENT */
struct kmod_config {
	bool enabled;
	uint32_t max_sockets_per_request;
	uint32_t max_payload;
	uint32_t max_registered;
};

/* Which fields of struct kmod_config kmod_genl_set_config() sends. */
enum kmod_config_field {
	KMOD_SET_ENABLED = 1 << 0,
	KMOD_SET_MAX_SOCKETS = 1 << 1,
	KMOD_SET_MAX_PAYLOAD = 1 << 2,
	KMOD_SET_MAX_REGISTERED = 1 << 3,
};

/* One registered socket (STANZA_OFFLOAD_CMD_GET_SOCKETS). */
struct kmod_sock_info {
	uint32_t id;
	uint32_t owner_pid;
	uint64_t inode;			/* /proc/PID/fd/N -> socket:[inode] */
	bool ktls;
	uint16_t local_port, peer_port;
	uint64_t bytes, sends, partial;
};

/*
 * Connects to the family. 0 and *out, -ENOENT when the module is not
 * loaded, or another -errno.
 */
int kmod_genl_open(struct kmod_genl **out);
void kmod_genl_close(struct kmod_genl *g);

/* The kernel's extended-ack message of the last failed request, or "". */
const char *kmod_genl_error(const struct kmod_genl *g);

int kmod_genl_get_stats(struct kmod_genl *g, struct kmod_stats *st);
int kmod_genl_get_config(struct kmod_genl *g, struct kmod_config *cfg);
/* Sends the fields of cfg named in `fields` (enum kmod_config_field). */
int kmod_genl_set_config(struct kmod_genl *g, const struct kmod_config *cfg, unsigned fields);
int kmod_genl_reset_stats(struct kmod_genl *g);

/*
 * Calls fn for every registered socket of the namespace (a dump); fn
 * returning non-zero stops early. 0 or -errno.
 */
int kmod_genl_dump_sockets(struct kmod_genl *g,
			   int (*fn)(const struct kmod_sock_info *si, void *arg), void *arg);

/*
 * Sends a request made of cmd and raw attribute bytes (already in netlink
 * attribute format) and waits for the kernel's answer: for tests of the
 * family's validation. 0 or the -errno the kernel answered.
 */
int kmod_genl_raw(struct kmod_genl *g, uint8_t cmd, const void *attrs, size_t len);

/*
 * Events: joins the "events" group and makes the socket nonblocking.
 * (Use a handle of its own: requests on it would mix with events.) 0 or
 * -errno. After the module was reloaded, call it again on the same handle
 * (the group gets a new id; the fd stays).
 */
int kmod_genl_subscribe(struct kmod_genl *g);
int kmod_genl_fd(const struct kmod_genl *g);

/*
 * Reads every pending event without blocking; fn gets each configuration
 * event. 0 when drained, or -errno.
 */
int kmod_genl_read_events(struct kmod_genl *g,
			  void (*fn)(const struct kmod_config *cfg, void *arg), void *arg);

/*
 * `stanzactl kmod status|sockets|set|reset` (kmod_ctl.c); argv[0] is
 * "kmod". Returns the exit status.
 */
int kmod_ctl_main(int argc, char **argv);

#endif
