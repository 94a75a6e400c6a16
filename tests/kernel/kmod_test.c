/* SPDX-License-Identifier: MIT */
/*
 * The stanza offload module against a kernel that has it loaded (the
 * kernel lab: tests/kernel/run-lab-tests.sh loads kmod/ first). Without
 * /dev/stanza_offload every test skips, unless KERNEL_LAB_KMOD=1 says the
 * module must be there.
 *
 * The character device: registration (what it refuses, the reference it
 * holds on a socket), fan-out (bytes on the wire, per-target results, a
 * full send buffer, a peer that is gone, kTLS sockets), request limits.
 * The generic netlink family through libnl (daemon/kmod_genl.c): every
 * command, the event, malformed requests (wrong types and lengths,
 * attributes a command does not take, unknown ones, out-of-range values,
 * truncated messages), and turning the module off (open files revoked).
 * Unprivileged requests are tested from Python (test_kmod_lab.py), which
 * can drop CAP_NET_ADMIN around a whole process.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <stanzad/uapi/stanza_offload.h>

#include "kmod_genl.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

#define READ_TIMEOUT_MS	3000

/* ---- Helpers ---- */

static int dev_open(void)
{
	int fd = open(STANZA_OFFLOAD_DEVICE, O_RDWR | O_CLOEXEC);

	assert_true(fd >= 0);
	return fd;
}

/* A connected loopback TCP pair: *srv is the accepted end (the daemon's side). */
static void tcp_pair(int *srv, int *cli)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	assert_true(l >= 0);
	assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(l, 4), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&a, &alen), 0);
	*cli = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(*cli >= 0);
	assert_int_equal(connect(*cli, (struct sockaddr *)&a, sizeof(a)), 0);
	*srv = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(*srv >= 0);
	setsockopt(*srv, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	close(l);
}

/* Registers fd; returns its id, or the negative per-entry error. */
static int reg(int dev, int fd, uint32_t *flags)
{
	struct stanza_offload_reg r = { .fd = fd };
	struct stanza_offload_register req = {
		.version = STANZA_OFFLOAD_VERSION, .count = 1, .socks = (uintptr_t)&r,
	};

	assert_int_equal(ioctl(dev, STANZA_OFFLOAD_IOC_REGISTER, &req), 0);
	assert_int_equal(req.registered, r.error ? 0 : 1);
	if (flags)
		*flags = r.flags;
	if (r.error)
		return r.error;
	assert_true(r.id != 0);
	return (int)r.id;
}

static int unreg(int dev, uint32_t id)
{
	struct stanza_offload_unregister req = {
		.version = STANZA_OFFLOAD_VERSION, .count = 1, .ids = (uintptr_t)&id,
	};

	return ioctl(dev, STANZA_OFFLOAD_IOC_UNREGISTER, &req);
}

/*
 * One fan-out of prefix + splices[i] + suffix to ids[i]; results[i] gets
 * each target's result. Returns the ioctl's result (0 or -errno) and the
 * number of complete targets in *complete.
 */
static int fanout(int dev, const char *prefix, size_t plen, const char *suffix, size_t slen,
		  const uint32_t *ids, const char *const *splices, size_t n, int32_t *results,
		  uint32_t *complete)
{
	struct stanza_offload_target t[16];
	char buf[1024];
	size_t off = 0;
	struct stanza_offload_fanout req = {
		.version = STANZA_OFFLOAD_VERSION,
		.prefix = (uintptr_t)prefix, .prefix_len = (uint32_t)plen,
		.suffix = (uintptr_t)suffix, .suffix_len = (uint32_t)slen,
		.splices = (uintptr_t)buf, .targets = (uintptr_t)t, .count = (uint32_t)n,
	};

	assert_true(n <= 16);
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(splices[i]);

		assert_true(off + l <= sizeof(buf));
		memcpy(buf + off, splices[i], l);
		t[i] = (struct stanza_offload_target){ .id = ids[i], .splice_off = (uint32_t)off,
						       .splice_len = (uint32_t)l, .result = 12345 };
		off += l;
	}
	req.splices_len = (uint32_t)off;
	if (ioctl(dev, STANZA_OFFLOAD_IOC_FANOUT, &req) < 0)
		return -errno;
	for (size_t i = 0; i < n; i++)
		results[i] = t[i].result;
	if (complete)
		*complete = req.complete;
	return 0;
}

/* Reads exactly n bytes within READ_TIMEOUT_MS; fails the test otherwise. */
static void read_exact(int fd, char *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t r;

		assert_int_equal(poll(&p, 1, READ_TIMEOUT_MS), 1);
		r = read(fd, buf + got, n - got);
		assert_true(r > 0);
		got += (size_t)r;
	}
}

/* Whether fd reaches EOF (or a reset) within ms. */
static bool sees_eof(int fd, int ms)
{
	char buf[4096];

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t r;

		if (poll(&p, 1, ms) != 1)
			return false;
		r = read(fd, buf, sizeof(buf));
		if (r <= 0)
			return true;
	}
}

static struct kmod_genl *genl(void)
{
	struct kmod_genl *g = NULL;

	assert_int_equal(kmod_genl_open(&g), 0);
	return g;
}

/* Sets one u32 setting through genetlink (needs CAP_NET_ADMIN). */
static void set_u32(unsigned field, uint32_t v)
{
	struct kmod_genl *g = genl();
	struct kmod_config cfg = { .max_sockets_per_request = v, .max_payload = v,
				   .max_registered = v };

	assert_int_equal(kmod_genl_set_config(g, &cfg, field), 0);
	kmod_genl_close(g);
}

static void set_enabled(bool on)
{
	struct kmod_genl *g = genl();
	struct kmod_config cfg = { .enabled = on };

	assert_int_equal(kmod_genl_set_config(g, &cfg, KMOD_SET_ENABLED), 0);
	kmod_genl_close(g);
}

/* ---- The device ---- */

static void test_info_reports_version_and_limits(void **state)
{
	struct stanza_offload_info info;
	int dev = dev_open();

	assert_int_equal(ioctl(dev, STANZA_OFFLOAD_IOC_INFO, &info), 0);
	assert_int_equal(info.version, STANZA_OFFLOAD_VERSION);
	assert_int_equal(info.enabled, 1);
	assert_int_equal(info.max_sockets_per_request, STANZA_OFFLOAD_DEFAULT_MAX_SOCKETS);
	assert_int_equal(info.max_payload, STANZA_OFFLOAD_DEFAULT_MAX_PAYLOAD);
	assert_int_equal(info.registered, 0);
	close(dev);
}

static void test_unknown_ioctl_and_bad_version_are_refused(void **state)
{
	struct stanza_offload_fanout f = { .version = STANZA_OFFLOAD_VERSION + 1, .count = 1 };
	struct stanza_offload_register r = { .version = 0, .count = 1 };
	int dev = dev_open(), x = 0;

	assert_int_equal(ioctl(dev, _IO(STANZA_OFFLOAD_IOC_MAGIC, 99), &x), -1);
	assert_int_equal(errno, ENOTTY);
	assert_int_equal(ioctl(dev, STANZA_OFFLOAD_IOC_FANOUT, &f), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(ioctl(dev, STANZA_OFFLOAD_IOC_REGISTER, &r), -1);
	assert_int_equal(errno, EINVAL);
	/* Flags and reserved fields must be zero: room for later versions. */
	f.version = STANZA_OFFLOAD_VERSION;
	f.flags = 1;
	assert_int_equal(ioctl(dev, STANZA_OFFLOAD_IOC_FANOUT, &f), -1);
	assert_int_equal(errno, EINVAL);
	f.flags = 0;
	f.reserved = 1;
	assert_int_equal(ioctl(dev, STANZA_OFFLOAD_IOC_FANOUT, &f), -1);
	assert_int_equal(errno, EINVAL);
	/* Addresses that are not ours. */
	f.reserved = 0;
	f.targets = 16;
	assert_int_equal(ioctl(dev, STANZA_OFFLOAD_IOC_FANOUT, &f), -1);
	assert_int_equal(errno, EFAULT);
	assert_int_equal(ioctl(dev, STANZA_OFFLOAD_IOC_INFO, (void *)8), -1);
	assert_int_equal(errno, EFAULT);
	close(dev);
}

static void test_register_refuses_what_is_not_a_tcp_socket(void **state)
{
	int dev = dev_open(), p[2], u[2], udp;

	assert_int_equal(pipe(p), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, u), 0);
	udp = socket(AF_INET, SOCK_DGRAM, 0);
	assert_int_equal(reg(dev, -1, NULL), -EBADF);
	assert_int_equal(reg(dev, 1000000, NULL), -EBADF);
	assert_int_equal(reg(dev, p[0], NULL), -ENOTSOCK);
	assert_int_equal(reg(dev, u[0], NULL), -EPROTONOSUPPORT);
	assert_int_equal(reg(dev, udp, NULL), -EPROTONOSUPPORT);
	close(p[0]);
	close(p[1]);
	close(u[0]);
	close(u[1]);
	close(udp);
	close(dev);
}

static void test_fanout_writes_prefix_splice_suffix_to_each_socket(void **state)
{
	static const char *const splices[] = { " to='a@x'", " to='bob@example.org'", "" };
	const char prefix[] = "<presence", suffix[] = " from='p@x/r'><status>hi</status></presence>";
	int dev = dev_open(), srv[3], cli[3];
	uint32_t ids[3], flags, complete = 0;
	int32_t res[3];
	char buf[256], want[256];

	for (int i = 0; i < 3; i++) {
		tcp_pair(&srv[i], &cli[i]);
		ids[i] = (uint32_t)reg(dev, srv[i], &flags);
		assert_int_equal(flags, 0);
	}
	assert_int_equal(fanout(dev, prefix, strlen(prefix), suffix, strlen(suffix), ids, splices, 3,
				res, &complete), 0);
	assert_int_equal(complete, 3);
	for (int i = 0; i < 3; i++) {
		int n = snprintf(want, sizeof(want), "%s%s%s", prefix, splices[i], suffix);

		assert_int_equal(res[i], n);
		read_exact(cli[i], buf, (size_t)n);
		assert_memory_equal(buf, want, (size_t)n);
		assert_int_equal(unreg(dev, ids[i]), 1);
		close(srv[i]);
		close(cli[i]);
	}
	close(dev);
}

static void test_fanout_reports_per_target_errors(void **state)
{
	static const char *const splices[] = { "A", "B", "C" };
	struct stanza_offload_target t = { 0 };
	struct stanza_offload_fanout f = {
		.version = STANZA_OFFLOAD_VERSION, .prefix = (uintptr_t)"x", .prefix_len = 1,
		.splices = (uintptr_t)"abc", .splices_len = 3, .targets = (uintptr_t)&t, .count = 1,
	};
	int dev = dev_open(), srv, cli;
	uint32_t ids[3], complete = 9;
	int32_t res[3];
	char buf[8];

	tcp_pair(&srv, &cli);
	ids[0] = 999999;	/* never registered */
	ids[1] = (uint32_t)reg(dev, srv, NULL);
	ids[2] = 0;
	assert_int_equal(fanout(dev, "<", 1, ">", 1, ids, splices, 3, res, &complete), 0);
	assert_int_equal(res[0], -EBADF);
	assert_int_equal(res[1], 3);
	assert_int_equal(res[2], -EBADF);
	assert_int_equal(complete, 1);
	read_exact(cli, buf, 3);
	assert_memory_equal(buf, "<B>", 3);
	/* A splice outside the splice bytes. */
	t = (struct stanza_offload_target){ .id = ids[1], .splice_off = 2, .splice_len = 2 };
	assert_int_equal(ioctl(dev, STANZA_OFFLOAD_IOC_FANOUT, &f), 0);
	assert_int_equal(t.result, -EINVAL);
	t = (struct stanza_offload_target){ .id = ids[1], .splice_off = UINT32_MAX, .splice_len = 2 };
	assert_int_equal(ioctl(dev, STANZA_OFFLOAD_IOC_FANOUT, &f), 0);
	assert_int_equal(t.result, -EINVAL);
	/* Another file's id is unknown here. */
	{
		int dev2 = dev_open();

		t = (struct stanza_offload_target){ .id = ids[1], .splice_off = 0, .splice_len = 1 };
		assert_int_equal(ioctl(dev2, STANZA_OFFLOAD_IOC_FANOUT, &f), 0);
		assert_int_equal(t.result, -EBADF);
		close(dev2);
	}
	close(srv);
	close(cli);
	close(dev);
}

static void test_fanout_limits_refuse_the_whole_request(void **state)
{
	static const char *const splices[] = { "", "", "" };
	static char big[STANZA_OFFLOAD_DEFAULT_MAX_PAYLOAD + 1];
	struct stanza_offload_target t[2] = { { 0 } };
	struct stanza_offload_fanout f = {
		.version = STANZA_OFFLOAD_VERSION, .prefix = (uintptr_t)big,
		.prefix_len = sizeof(big), .targets = (uintptr_t)t, .count = 1,
	};
	int dev = dev_open(), srv, cli;
	uint32_t ids[3];
	int32_t res[3];

	tcp_pair(&srv, &cli);
	ids[0] = ids[1] = ids[2] = (uint32_t)reg(dev, srv, NULL);
	t[0].id = ids[0];
	assert_int_equal(ioctl(dev, STANZA_OFFLOAD_IOC_FANOUT, &f), -1);
	assert_int_equal(errno, E2BIG);
	f.prefix_len = 1;
	f.splices_len = STANZA_OFFLOAD_SPLICES_MAX + 1;
	assert_int_equal(ioctl(dev, STANZA_OFFLOAD_IOC_FANOUT, &f), -1);
	assert_int_equal(errno, E2BIG);
	/* The namespace's limit on targets, changed through genetlink. */
	set_u32(KMOD_SET_MAX_SOCKETS, 2);
	assert_int_equal(fanout(dev, "<", 1, ">", 1, ids, splices, 3, res, NULL), -E2BIG);
	assert_int_equal(fanout(dev, "<", 1, ">", 1, ids, splices, 2, res, NULL), 0);
	assert_int_equal(res[0], 2);
	assert_int_equal(res[1], 2);
	set_u32(KMOD_SET_MAX_SOCKETS, STANZA_OFFLOAD_DEFAULT_MAX_SOCKETS);
	assert_int_equal(fanout(dev, "<", 1, ">", 1, ids, splices, 3, res, NULL), 0);
	close(srv);
	close(cli);
	close(dev);
}

/*
 * A peer that does not read: the socket takes what fits, then part of a
 * copy, then nothing, and says so per copy; nothing blocks.
 */
static void test_full_send_buffer_takes_part_then_nothing(void **state)
{
	static char suffix[60000];
	static const char *const splices[] = { "!" };
	int dev = dev_open(), srv, cli, small = 4096;
	bool partial = false, blocked = false;
	uint32_t id;
	size_t total = 0;

	memset(suffix, 'z', sizeof(suffix));
	tcp_pair(&srv, &cli);
	setsockopt(srv, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	setsockopt(cli, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	id = (uint32_t)reg(dev, srv, NULL);
	for (int i = 0; i < 200 && !blocked; i++) {
		int32_t res;

		assert_int_equal(fanout(dev, "<", 1, suffix, sizeof(suffix), &id, splices, 1, &res,
					NULL), 0);
		assert_true(res >= 0 && (size_t)res <= sizeof(suffix) + 2);
		if (res > 0 && (size_t)res < sizeof(suffix) + 2)
			partial = true;
		if (res == 0)
			blocked = true;
		total += (size_t)res;
	}
	assert_true(partial);
	assert_true(blocked);
	/* Everything that was reported written arrives. */
	{
		char *buf = malloc(total);

		read_exact(cli, buf, total);
		free(buf);
	}
	close(srv);
	close(cli);
	close(dev);
}

static void test_peer_gone_reports_an_error(void **state)
{
	static const char *const splices[] = { "x" };
	int dev = dev_open(), srv, cli;
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	int32_t res = 0;
	uint32_t id;

	tcp_pair(&srv, &cli);
	id = (uint32_t)reg(dev, srv, NULL);
	/* A reset: the peer's socket is gone at once. */
	setsockopt(cli, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(cli);
	for (int i = 0; i < 50 && res >= 0; i++) {
		assert_int_equal(fanout(dev, "<", 1, ">", 1, &id, splices, 1, &res, NULL), 0);
		if (res >= 0)
			usleep(10000);
	}
	assert_true(res == -ECONNRESET || res == -EPIPE);
	close(srv);
	close(dev);
}

/* The module's reference keeps a socket open after the owner closed its fd. */
static void test_registration_holds_the_socket_until_unregistered(void **state)
{
	int dev = dev_open(), srv, cli;
	uint32_t id;

	tcp_pair(&srv, &cli);
	id = (uint32_t)reg(dev, srv, NULL);
	close(srv);
	assert_false(sees_eof(cli, 200));
	assert_int_equal(unreg(dev, id), 1);
	assert_true(sees_eof(cli, READ_TIMEOUT_MS));
	/* Unknown ids are skipped; the count says what was dropped. */
	assert_int_equal(unreg(dev, id), 0);
	assert_int_equal(unreg(dev, 0), 0);
	close(cli);
	close(dev);
}

static void test_closing_the_device_drops_registrations(void **state)
{
	struct kmod_genl *g = genl();
	struct kmod_stats before, after;
	int dev, srv, cli;

	assert_int_equal(kmod_genl_get_stats(g, &before), 0);
	dev = dev_open();
	tcp_pair(&srv, &cli);
	reg(dev, srv, NULL);
	close(srv);
	assert_int_equal(kmod_genl_get_stats(g, &after), 0);
	assert_int_equal(after.registered, before.registered + 1);
	assert_int_equal(after.owners, before.owners + 1);
	close(dev);
	assert_true(sees_eof(cli, READ_TIMEOUT_MS));
	assert_int_equal(kmod_genl_get_stats(g, &after), 0);
	assert_int_equal(after.registered, before.registered);
	assert_int_equal(after.owners, before.owners);
	close(cli);
	kmod_genl_close(g);
}

/*
 * kTLS: the module writes to a socket whose TX is the kernel's TLS; the
 * peer, with the same keys as its RX, reads the plaintext back. Records,
 * nonces and sequence numbers are the kernel's own.
 */
static void test_ktls_socket_gets_records_the_peer_decrypts(void **state)
{
	static const char *const splices[] = { " to='k@x'" };
	struct tls12_crypto_info_aes_gcm_128 ci = { 0 };
	const char want[] = "<message to='k@x'><body>over kTLS</body></message>";
	int dev = dev_open(), srv, cli;
	uint32_t id, flags = 0;
	int32_t res;
	char buf[128];

	if (access("/proc/net/tls_stat", R_OK) != 0) {
		close(dev);
		skip();
	}
	tcp_pair(&srv, &cli);
	ci.info.version = TLS_1_3_VERSION;
	ci.info.cipher_type = TLS_CIPHER_AES_GCM_128;
	memset(ci.key, 0x42, sizeof(ci.key));
	memset(ci.iv, 0x17, sizeof(ci.iv));
	memset(ci.salt, 0x05, sizeof(ci.salt));
	assert_int_equal(setsockopt(srv, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")), 0);
	assert_int_equal(setsockopt(srv, SOL_TLS, TLS_TX, &ci, sizeof(ci)), 0);
	assert_int_equal(setsockopt(cli, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")), 0);
	assert_int_equal(setsockopt(cli, SOL_TLS, TLS_RX, &ci, sizeof(ci)), 0);
	id = (uint32_t)reg(dev, srv, &flags);
	assert_int_equal(flags, STANZA_OFFLOAD_SOCK_KTLS);
	assert_int_equal(fanout(dev, "<message", 8, "><body>over kTLS</body></message>", 33, &id,
				splices, 1, &res, NULL), 0);
	assert_int_equal(res, (int)strlen(want));
	read_exact(cli, buf, strlen(want));
	assert_memory_equal(buf, want, strlen(want));
	close(srv);
	close(cli);
	close(dev);
}

/* ---- Generic netlink ---- */

/* Finds socket `id` of this process in the dump. */
struct find_sock {
	uint32_t id;
	struct kmod_sock_info si;
	bool found;
};

static int find_sock_cb(const struct kmod_sock_info *si, void *arg)
{
	struct find_sock *f = arg;

	if (si->id == f->id && si->owner_pid == (uint32_t)getpid()) {
		f->si = *si;
		f->found = true;
	}
	return 0;
}

static void test_genl_stats_config_and_dump(void **state)
{
	static const char *const splices[] = { "!" };
	struct kmod_genl *g = genl();
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);
	struct kmod_stats st0, st;
	struct kmod_config cfg;
	struct find_sock f = { 0 };
	int dev = dev_open(), srv, cli;
	int32_t res;
	char buf[8];

	assert_int_equal(kmod_genl_get_stats(g, &st0), 0);
	assert_int_equal(st0.version, STANZA_OFFLOAD_VERSION);
	assert_true(st0.enabled);
	assert_int_equal(kmod_genl_get_config(g, &cfg), 0);
	assert_true(cfg.enabled);
	assert_int_equal(cfg.max_sockets_per_request, STANZA_OFFLOAD_DEFAULT_MAX_SOCKETS);
	assert_int_equal(cfg.max_registered, STANZA_OFFLOAD_DEFAULT_MAX_REGISTERED);

	tcp_pair(&srv, &cli);
	f.id = (uint32_t)reg(dev, srv, NULL);
	assert_int_equal(fanout(dev, "<", 1, ">", 1, &f.id, splices, 1, &res, NULL), 0);
	read_exact(cli, buf, 3);
	assert_int_equal(kmod_genl_get_stats(g, &st), 0);
	assert_int_equal(st.requests, st0.requests + 1);
	assert_int_equal(st.targets, st0.targets + 1);
	assert_int_equal(st.complete, st0.complete + 1);
	assert_int_equal(st.bytes, st0.bytes + 3);
	assert_int_equal(st.registrations, st0.registrations + 1);

	assert_int_equal(kmod_genl_dump_sockets(g, find_sock_cb, &f), 0);
	assert_true(f.found);
	assert_int_equal(getsockname(srv, (struct sockaddr *)&a, &alen), 0);
	assert_int_equal(f.si.local_port, ntohs(a.sin_port));
	assert_int_equal(f.si.bytes, 3);
	assert_int_equal(f.si.sends, 1);
	assert_false(f.si.ktls);
	assert_true(f.si.inode != 0);
	close(srv);
	close(cli);
	close(dev);
	kmod_genl_close(g);
}

static int count_cb(const struct kmod_sock_info *si, void *arg)
{
	(*(unsigned *)arg)++;
	return 0;
}

/* A dump larger than one netlink message buffer resumes where it stopped. */
static void test_genl_dump_spans_several_buffers(void **state)
{
	enum { N = 300 };
	struct kmod_genl *g = genl();
	static int srv[N], cli[N];
	unsigned n0 = 0, n1 = 0;
	int dev = dev_open();

	assert_int_equal(kmod_genl_dump_sockets(g, count_cb, &n0), 0);
	for (int i = 0; i < N; i++) {
		tcp_pair(&srv[i], &cli[i]);
		reg(dev, srv[i], NULL);
	}
	assert_int_equal(kmod_genl_dump_sockets(g, count_cb, &n1), 0);
	assert_int_equal(n1, n0 + N);
	close(dev);
	for (int i = 0; i < N; i++) {
		close(srv[i]);
		close(cli[i]);
	}
	kmod_genl_close(g);
}

static void test_genl_reset_stats(void **state)
{
	struct kmod_genl *g = genl();
	struct kmod_stats st;

	assert_int_equal(kmod_genl_reset_stats(g), 0);
	assert_int_equal(kmod_genl_get_stats(g, &st), 0);
	assert_int_equal(st.requests, 0);
	assert_int_equal(st.bytes, 0);
	assert_int_equal(st.targets, 0);
	kmod_genl_close(g);
}

static void event_cb(const struct kmod_config *cfg, void *arg)
{
	struct kmod_config *out = arg;

	*out = *cfg;
	out->max_registered |= 0x80000000u;	/* mark: an event arrived */
}

static void test_genl_set_config_is_multicast(void **state)
{
	struct kmod_genl *ev = genl();
	struct kmod_config got = { 0 };
	struct pollfd p;

	assert_int_equal(kmod_genl_subscribe(ev), 0);
	set_u32(KMOD_SET_MAX_PAYLOAD, 4096);
	p = (struct pollfd){ .fd = kmod_genl_fd(ev), .events = POLLIN };
	assert_int_equal(poll(&p, 1, READ_TIMEOUT_MS), 1);
	assert_int_equal(kmod_genl_read_events(ev, event_cb, &got), 0);
	assert_true(got.max_registered & 0x80000000u);
	assert_int_equal(got.max_payload, 4096);
	assert_true(got.enabled);
	set_u32(KMOD_SET_MAX_PAYLOAD, STANZA_OFFLOAD_DEFAULT_MAX_PAYLOAD);
	kmod_genl_close(ev);
}

/* Appends one raw attribute (header + value, padded) to buf at *off. */
static void put_attr(uint8_t *buf, size_t *off, uint16_t type, const void *v, uint16_t vlen,
		     uint16_t claimed_len)
{
	uint16_t len = claimed_len ? claimed_len : (uint16_t)(4 + vlen);

	memcpy(buf + *off, &len, 2);
	memcpy(buf + *off + 2, &type, 2);
	memcpy(buf + *off + 4, v, vlen);
	*off += (size_t)((4 + vlen + 3) & ~3);
}

/* Sends cmd with the given attributes; expects one of two errnos. */
static void expect_refused(struct kmod_genl *g, uint8_t cmd, const uint8_t *attrs, size_t len,
			   int want1, int want2, const char *what)
{
	int ret = kmod_genl_raw(g, cmd, attrs, len);

	print_message("%s: %s (%s)\n", what, strerror(-ret), kmod_genl_error(g));
	assert_true(ret == want1 || ret == want2);
}

static void test_genl_malformed_requests_are_rejected(void **state)
{
	struct kmod_genl *g = genl();
	struct kmod_config before, after;
	uint8_t buf[64];
	uint32_t u32 = 1;
	uint16_t u16 = 1;
	uint8_t u8 = 2;
	size_t off;

	assert_int_equal(kmod_genl_get_config(g, &before), 0);

	/* ENABLED is a u8: four bytes is a wrong length. */
	off = 0;
	put_attr(buf, &off, STANZA_OFFLOAD_A_ENABLED, &u32, 4, 0);
	expect_refused(g, STANZA_OFFLOAD_CMD_SET_CONFIG, buf, off, -EINVAL, -ERANGE, "u8 sent as u32");
	/* ... and 0 or 1 only. */
	off = 0;
	put_attr(buf, &off, STANZA_OFFLOAD_A_ENABLED, &u8, 1, 0);
	expect_refused(g, STANZA_OFFLOAD_CMD_SET_CONFIG, buf, off, -ERANGE, -EINVAL, "enabled=2");
	/* A u32 setting with two bytes. */
	off = 0;
	put_attr(buf, &off, STANZA_OFFLOAD_A_MAX_PAYLOAD, &u16, 2, 0);
	expect_refused(g, STANZA_OFFLOAD_CMD_SET_CONFIG, buf, off, -ERANGE, -EINVAL, "u32 sent as u16");
	/* Out of range: a payload limit under 64 bytes, zero sockets. */
	off = 0;
	put_attr(buf, &off, STANZA_OFFLOAD_A_MAX_PAYLOAD, &u32, 4, 0);
	expect_refused(g, STANZA_OFFLOAD_CMD_SET_CONFIG, buf, off, -ERANGE, -EINVAL, "max_payload=1");
	u32 = 0;
	off = 0;
	put_attr(buf, &off, STANZA_OFFLOAD_A_MAX_SOCKETS_PER_REQUEST, &u32, 4, 0);
	expect_refused(g, STANZA_OFFLOAD_CMD_SET_CONFIG, buf, off, -ERANGE, -EINVAL,
		       "max_sockets_per_request=0");
	u32 = STANZA_OFFLOAD_SOCKETS_LIMIT + 1;
	off = 0;
	put_attr(buf, &off, STANZA_OFFLOAD_A_MAX_REGISTERED, &u32, 4, 0);
	expect_refused(g, STANZA_OFFLOAD_CMD_SET_CONFIG, buf, off, -ERANGE, -EINVAL,
		       "max_registered over the limit");
	/* An attribute SET_CONFIG does not take (a counter), and an unknown one. */
	u32 = 7;
	off = 0;
	put_attr(buf, &off, STANZA_OFFLOAD_A_STAT_BYTES, &u32, 4, 0);
	expect_refused(g, STANZA_OFFLOAD_CMD_SET_CONFIG, buf, off, -EINVAL, -EINVAL, "a counter in SET");
	off = 0;
	put_attr(buf, &off, 200, &u32, 4, 0);
	expect_refused(g, STANZA_OFFLOAD_CMD_SET_CONFIG, buf, off, -EINVAL, -EINVAL, "unknown type 200");
	/* Nothing to set. */
	expect_refused(g, STANZA_OFFLOAD_CMD_SET_CONFIG, buf, 0, -EINVAL, -EINVAL, "empty SET");
	/* Commands without input refuse any attribute. */
	off = 0;
	put_attr(buf, &off, STANZA_OFFLOAD_A_ENABLED, &u8, 1, 0);
	expect_refused(g, STANZA_OFFLOAD_CMD_GET_STATS, buf, off, -EINVAL, -EINVAL, "GET_STATS + attr");
	expect_refused(g, STANZA_OFFLOAD_CMD_GET_CONFIG, buf, off, -EINVAL, -EINVAL, "GET_CONFIG + attr");
	expect_refused(g, STANZA_OFFLOAD_CMD_RESET_STATS, buf, off, -EINVAL, -EINVAL,
		       "RESET_STATS + attr");
	/* An attribute whose length runs past the message. */
	u32 = 4096;
	off = 0;
	put_attr(buf, &off, STANZA_OFFLOAD_A_MAX_PAYLOAD, &u32, 4, 40);
	expect_refused(g, STANZA_OFFLOAD_CMD_SET_CONFIG, buf, off, -EINVAL, -ERANGE, "truncated attr");
	/* Trailing bytes that are no attribute. */
	off = 0;
	put_attr(buf, &off, STANZA_OFFLOAD_A_MAX_PAYLOAD, &u32, 4, 0);
	buf[off] = 1;
	buf[off + 1] = 0;
	expect_refused(g, STANZA_OFFLOAD_CMD_SET_CONFIG, buf, off + 2, -EINVAL, -ERANGE,
		       "trailing garbage");
	/* Commands that do not exist, or are events only. */
	expect_refused(g, 99, NULL, 0, -EOPNOTSUPP, -EOPNOTSUPP, "command 99");
	expect_refused(g, STANZA_OFFLOAD_CMD_CONFIG_EVENT, NULL, 0, -EOPNOTSUPP, -EOPNOTSUPP,
		       "CONFIG_EVENT as a request");
	expect_refused(g, STANZA_OFFLOAD_CMD_UNSPEC, NULL, 0, -EOPNOTSUPP, -EOPNOTSUPP, "command 0");

	/* None of it changed anything. */
	assert_int_equal(kmod_genl_get_config(g, &after), 0);
	assert_memory_equal(&before, &after, sizeof(before));
	kmod_genl_close(g);
}

/* Turning the module off revokes open files so that it can be unloaded. */
static void test_disable_revokes_open_files(void **state)
{
	static const char *const splices[] = { "x" };
	struct stanza_offload_info info;
	struct kmod_genl *g = genl();
	struct kmod_stats st;
	int dev = dev_open(), srv, cli;
	int32_t res;
	uint32_t id;

	tcp_pair(&srv, &cli);
	id = (uint32_t)reg(dev, srv, NULL);
	close(srv);
	set_enabled(false);
	assert_true(sees_eof(cli, READ_TIMEOUT_MS));	/* its registration is gone */
	assert_int_equal(fanout(dev, "<", 1, ">", 1, &id, splices, 1, &res, NULL), -ESHUTDOWN);
	assert_int_equal(ioctl(dev, STANZA_OFFLOAD_IOC_INFO, &info), 0);
	assert_int_equal(info.enabled, 0);
	assert_int_equal(info.registered, 0);
	assert_int_equal(open(STANZA_OFFLOAD_DEVICE, O_RDWR), -1);
	assert_int_equal(errno, ESHUTDOWN);
	assert_int_equal(kmod_genl_get_stats(g, &st), 0);
	assert_false(st.enabled);
	/* On again: new files work, the revoked one stays revoked. */
	set_enabled(true);
	assert_int_equal(ioctl(dev, STANZA_OFFLOAD_IOC_INFO, &info), 0);
	assert_int_equal(info.enabled, 0);
	close(dev);
	dev = dev_open();
	assert_int_equal(ioctl(dev, STANZA_OFFLOAD_IOC_INFO, &info), 0);
	assert_int_equal(info.enabled, 1);
	close(dev);
	close(cli);
	kmod_genl_close(g);
}

static int group_setup(void **state)
{
	if (access(STANZA_OFFLOAD_DEVICE, F_OK) == 0)
		return 0;
	if (getenv("KERNEL_LAB_KMOD")) {
		fprintf(stderr, "kmod_test: %s is missing but the module should be loaded\n",
			STANZA_OFFLOAD_DEVICE);
		return -1;
	}
	return 0;
}

/* Every test skips without the module (a host without it); state is the test. */
static void with_module(void **state)
{
	void (*fn)(void **) = (void (*)(void **))*state;

	if (access(STANZA_OFFLOAD_DEVICE, F_OK) != 0) {
		print_message("no %s: the stanza_offload module is not loaded\n", STANZA_OFFLOAD_DEVICE);
		skip();
	}
	*state = NULL;
	fn(state);
}

#define T(f) { .name = #f, .test_func = with_module, .initial_state = (void *)f }

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_info_reports_version_and_limits),
		T(test_unknown_ioctl_and_bad_version_are_refused),
		T(test_register_refuses_what_is_not_a_tcp_socket),
		T(test_fanout_writes_prefix_splice_suffix_to_each_socket),
		T(test_fanout_reports_per_target_errors),
		T(test_fanout_limits_refuse_the_whole_request),
		T(test_full_send_buffer_takes_part_then_nothing),
		T(test_peer_gone_reports_an_error),
		T(test_registration_holds_the_socket_until_unregistered),
		T(test_closing_the_device_drops_registrations),
		T(test_ktls_socket_gets_records_the_peer_decrypts),
		T(test_genl_stats_config_and_dump),
		T(test_genl_dump_spans_several_buffers),
		T(test_genl_reset_stats),
		T(test_genl_set_config_is_multicast),
		T(test_genl_malformed_requests_are_rejected),
		T(test_disable_revokes_open_files),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("kmod", tests, group_setup, NULL);
}
