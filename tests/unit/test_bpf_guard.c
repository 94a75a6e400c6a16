/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for bpf/guard.bpf.c: its verdicts on packets built here,
 * run in the kernel with bpf_prog_test_run_opts() (no interface, no
 * network). Needs root (or CAP_BPF) and a kernel with BPF: otherwise
 * every test is skipped and says why once.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/types.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include "abuse.h"
#include "bpf_util.h"
#include "guard.h"
#include "guard.skel.h"

#define PORT		5222	/* guarded */
#define OTHER_PORT	80	/* not guarded */
#define BURST		3
#define RATE		1	/* per second: the bucket does not refill during a test */
#define PKT_MAX		128

#define TCP_SYN		0x02
#define TCP_ACK		0x10

static struct guard_bpf *skel;
static const char *skip_why;

/* ---- Packets ---- */

static size_t put_eth(uint8_t *p, uint16_t proto)
{
	memset(p, 0, 14);
	memcpy(p, "\x02\x00\x00\x00\x00\x01", 6);
	memcpy(p + 6, "\x02\x00\x00\x00\x00\x02", 6);
	p[12] = (uint8_t)(proto >> 8);
	p[13] = (uint8_t)proto;
	return 14;
}

static size_t put_tcp(uint8_t *p, uint16_t dport, uint8_t flags)
{
	memset(p, 0, 20);
	p[0] = 0x9c;	/* source port 40000 */
	p[1] = 0x40;
	p[2] = (uint8_t)(dport >> 8);
	p[3] = (uint8_t)dport;
	p[12] = 5 << 4;	/* data offset: 5 words */
	p[13] = flags;
	return 20;
}

/* Ethernet + IPv4 (no options) + TCP from src to dport. */
static size_t pkt4(uint8_t *p, const char *src, uint16_t dport, uint8_t flags, uint16_t frag)
{
	size_t n = put_eth(p, 0x0800);
	uint8_t *ip = p + n;

	memset(ip, 0, 20);
	ip[0] = 0x45;
	ip[3] = 40;
	ip[6] = (uint8_t)(frag >> 8);
	ip[7] = (uint8_t)frag;
	ip[8] = 64;
	ip[9] = 6;	/* TCP */
	assert_int_equal(inet_pton(AF_INET, src, ip + 12), 1);
	assert_int_equal(inet_pton(AF_INET, "192.0.2.1", ip + 16), 1);
	return n + 20 + put_tcp(ip + 20, dport, flags);
}

/* Ethernet + IPv6 + TCP. */
static size_t pkt6(uint8_t *p, const char *src, uint16_t dport, uint8_t flags)
{
	size_t n = put_eth(p, 0x86DD);
	uint8_t *ip = p + n;

	memset(ip, 0, 40);
	ip[0] = 0x60;
	ip[5] = 20;
	ip[6] = 6;	/* next header: TCP */
	ip[7] = 64;
	assert_int_equal(inet_pton(AF_INET6, src, ip + 8), 1);
	assert_int_equal(inet_pton(AF_INET6, "2001:db8:ffff::1", ip + 24), 1);
	return n + 40 + put_tcp(ip + 40, dport, flags);
}

/* The program's verdict (XDP_PASS, XDP_DROP) on len bytes at p. */
static int verdict(const uint8_t *p, size_t len)
{
	uint8_t out[PKT_MAX];
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = p, .data_size_in = (__u32)len,
		    .data_out = out, .data_size_out = sizeof(out), .repeat = 1);

	assert_int_equal(bpf_prog_test_run_opts(bpf_program__fd(skel->progs.stanzad_guard),
						&opts), 0);
	return (int)opts.retval;
}

static int syn4(const char *src, uint16_t dport)
{
	uint8_t p[PKT_MAX];

	return verdict(p, pkt4(p, src, dport, TCP_SYN, 0));
}

static int syn6(const char *src)
{
	uint8_t p[PKT_MAX];

	return verdict(p, pkt6(p, src, PORT, TCP_SYN));
}

static void counters(uint64_t out[GUARD_NCOUNTERS])
{
	assert_int_equal(bpf_util_percpu_sum(bpf_map__fd(skel->maps.counters), GUARD_NCOUNTERS,
					     out), 0);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Bans addr (v4-mapped or IPv6) until now + delta_ns (negative: in the past), keyed as abuse.c. */
static void ban(const struct in6_addr *addr, int64_t delta_ns)
{
	struct guard_key key;
	struct guard_ban b = { .until_ns = now_ns() + (uint64_t)delta_ns };

	abuse_source_key(addr, key.addr);
	assert_int_equal(bpf_map__update_elem(skel->maps.bans, &key, sizeof(key), &b, sizeof(b),
					      BPF_ANY), 0);
}

static struct in6_addr addr4(const char *s)
{
	struct in6_addr a;

	memset(&a, 0, sizeof(a));
	a.s6_addr[10] = 0xff;
	a.s6_addr[11] = 0xff;
	inet_pton(AF_INET, s, &a.s6_addr[12]);
	return a;
}

static struct in6_addr addr6(const char *s)
{
	struct in6_addr a;

	inet_pton(AF_INET6, s, &a);
	return a;
}

/* ---- Fixture: a fresh program and maps per test ---- */

static int setup(void **state)
{
	uint16_t port = PORT;
	uint8_t one = 1;

	if (skip_why)
		return 0;
	if (geteuid() != 0) {
		skip_why = "not root";
		return 0;
	}
	bpf_util_quiet_libbpf();
	skel = guard_bpf__open();
	if (!skel) {
		skip_why = "cannot open the BPF object";
		return 0;
	}
	skel->rodata->syn_interval_ns = 1000000000ull / RATE;
	skel->rodata->syn_burst = BURST;
	if (guard_bpf__load(skel) < 0) {
		guard_bpf__destroy(skel);
		skel = NULL;
		skip_why = "the kernel refused to load it (no BPF here?)";
		return 0;
	}
	return bpf_map__update_elem(skel->maps.ports, &port, sizeof(port), &one, sizeof(one),
				    BPF_ANY);
}

static int teardown(void **state)
{
	guard_bpf__destroy(skel);
	skel = NULL;
	return 0;
}

#define NEED_BPF() do {							\
		if (!skel) {						\
			print_message("skipped: %s\n", skip_why);	\
			skip();						\
		}							\
	} while (0)

/* ---- Tests ---- */

static void test_burst_of_syns_passes_then_the_source_is_dropped(void **state)
{
	uint64_t c[GUARD_NCOUNTERS];

	NEED_BPF();
	for (int i = 0; i < BURST; i++)
		assert_int_equal(syn4("198.51.100.7", PORT), XDP_PASS);
	assert_int_equal(syn4("198.51.100.7", PORT), XDP_DROP);
	assert_int_equal(syn4("198.51.100.7", PORT), XDP_DROP);
	counters(c);
	assert_int_equal(c[GUARD_PASSED], BURST);
	assert_int_equal(c[GUARD_RATE_DROPPED], 2);
	assert_int_equal(c[GUARD_BAN_DROPPED], 0);
}

static void test_other_sources_keep_their_own_bucket(void **state)
{
	NEED_BPF();
	for (int i = 0; i < BURST; i++)
		assert_int_equal(syn4("198.51.100.7", PORT), XDP_PASS);
	assert_int_equal(syn4("198.51.100.7", PORT), XDP_DROP);
	assert_int_equal(syn4("198.51.100.8", PORT), XDP_PASS);
}

static void test_other_ports_and_segments_are_not_charged(void **state)
{
	uint8_t p[PKT_MAX];
	uint64_t c[GUARD_NCOUNTERS];

	NEED_BPF();
	for (int i = 0; i < BURST * 3; i++)
		assert_int_equal(syn4("198.51.100.7", OTHER_PORT), XDP_PASS);
	for (int i = 0; i < BURST; i++)
		assert_int_equal(syn4("198.51.100.7", PORT), XDP_PASS);
	/* The bucket is empty: the established side and SYN-ACKs still flow. */
	assert_int_equal(verdict(p, pkt4(p, "198.51.100.7", PORT, TCP_ACK, 0)), XDP_PASS);
	assert_int_equal(verdict(p, pkt4(p, "198.51.100.7", PORT, TCP_SYN | TCP_ACK, 0)),
			 XDP_PASS);
	counters(c);
	assert_int_equal(c[GUARD_PASSED], BURST);
	assert_int_equal(c[GUARD_RATE_DROPPED], 0);
}

static void test_banned_source_syns_are_dropped(void **state)
{
	struct in6_addr a = addr4("203.0.113.9");
	uint8_t p[PKT_MAX];
	uint64_t c[GUARD_NCOUNTERS];

	NEED_BPF();
	ban(&a, 60ll * 1000000000);
	assert_int_equal(syn4("203.0.113.9", PORT), XDP_DROP);
	/* Only new connections: segments of its open streams pass. */
	assert_int_equal(verdict(p, pkt4(p, "203.0.113.9", PORT, TCP_ACK, 0)), XDP_PASS);
	assert_int_equal(syn4("203.0.113.10", PORT), XDP_PASS);
	counters(c);
	assert_int_equal(c[GUARD_BAN_DROPPED], 1);
	assert_int_equal(c[GUARD_PASSED], 1);
}

static void test_expired_ban_is_removed_and_the_source_passes(void **state)
{
	struct in6_addr a = addr4("203.0.113.9");
	struct guard_key key;
	struct guard_ban b;

	NEED_BPF();
	ban(&a, -1000000);
	assert_int_equal(syn4("203.0.113.9", PORT), XDP_PASS);
	abuse_source_key(&a, key.addr);
	assert_int_not_equal(bpf_map__lookup_elem(skel->maps.bans, &key, sizeof(key), &b,
						  sizeof(b), 0), 0);
}

static void test_ipv6_sources_are_counted_per_64(void **state)
{
	NEED_BPF();
	for (int i = 0; i < BURST; i++)
		assert_int_equal(syn6(i % 2 ? "2001:db8:1:2::1" : "2001:db8:1:2::ffff"), XDP_PASS);
	/* Another address of the same /64 shares the bucket, another /64 does not. */
	assert_int_equal(syn6("2001:db8:1:2:abcd::1"), XDP_DROP);
	assert_int_equal(syn6("2001:db8:1:3::1"), XDP_PASS);
}

static void test_ipv6_ban_covers_its_64(void **state)
{
	struct in6_addr a = addr6("2001:db8:5:6::42");

	NEED_BPF();
	ban(&a, 60ll * 1000000000);
	assert_int_equal(syn6("2001:db8:5:6:1:2:3:4"), XDP_DROP);
	assert_int_equal(syn6("2001:db8:5:7::42"), XDP_PASS);
}

static void test_truncated_and_odd_packets_pass(void **state)
{
	uint8_t p[PKT_MAX];
	size_t n;

	NEED_BPF();
	/* Ethernet only, IPv4 cut inside its header, TCP cut inside its header. */
	n = pkt4(p, "198.51.100.7", PORT, TCP_SYN, 0);
	assert_int_equal(verdict(p, 14), XDP_PASS);
	assert_int_equal(verdict(p, 14 + 10), XDP_PASS);
	assert_int_equal(verdict(p, n - 10), XDP_PASS);
	n = pkt6(p, "2001:db8::1", PORT, TCP_SYN);
	assert_int_equal(verdict(p, 14 + 30), XDP_PASS);
	assert_int_equal(verdict(p, n - 1), XDP_PASS);
	/* A later IPv4 fragment has no TCP header: never charged. */
	for (int i = 0; i < BURST * 2; i++)
		assert_int_equal(verdict(p, pkt4(p, "198.51.100.7", PORT, TCP_SYN, 100)), XDP_PASS);
	/* An IHL below 5 is not IPv4 we can read. */
	n = pkt4(p, "198.51.100.7", PORT, TCP_SYN, 0);
	p[14] = 0x41;
	for (int i = 0; i < BURST * 2; i++)
		assert_int_equal(verdict(p, n), XDP_PASS);
	/* Not IP at all (ARP). */
	n = put_eth(p, 0x0806);
	memset(p + n, 0, 28);
	assert_int_equal(verdict(p, n + 28), XDP_PASS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_burst_of_syns_passes_then_the_source_is_dropped,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_sources_keep_their_own_bucket, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_other_ports_and_segments_are_not_charged,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_banned_source_syns_are_dropped, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_expired_ban_is_removed_and_the_source_passes,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_ipv6_sources_are_counted_per_64, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_ipv6_ban_covers_its_64, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_and_odd_packets_pass, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
