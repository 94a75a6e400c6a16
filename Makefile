# stanzad top-level build.
#
#   make            build build/stanzad and build/stanzactl
#   make run        install missing packages, build, start a local server
#   make check      install missing packages, build, run every test
#   make unit       C unit tests only (cmocka)
#   make integration  pytest + slixmpp tests only
#   make integration-postgresql  the same with every daemon on PostgreSQL
#   make integration-cluster  client-facing tests against three cluster nodes on one address
#   make check-kernel the kernel lab in full: kTLS and the offload module under
#                   Debian's 6.1 kernel in qemu; make bench-kernel: its fan-out benchmark
#   make fuzz       libFuzzer targets, FUZZ_SECONDS (default 60) each; see tests/fuzz/
#   make bench      benchmarks (BENCH_ARGS="--scenario messages ..."); not in check
#   make soak       N clients, M minutes of mixed traffic, flat memory (SOAK_ARGS); short run in check
#   make demo       IoT demo: a server, a hub and DEMO_DEVICES (5) simulated devices
#                   for DEMO_SECONDS (60) in a terminal view; Ctrl-C stops it
#   make install    PREFIX=/usr/local DESTDIR=...; make deb, make check-package:
#                   see daemon/dist/dist.mk
#   make check-interop  the client interop matrix (tests/interop/interop.mk)
#   V=1             show the commands
#   SANITIZE=1      ASan + UBSan build in build-san/ (reports are fatal)
#
# Generated files all go under build/. The daemon's objects (all of daemon/
# except the two mains) form build/libstanzad.a, which the unit tests link.

.DELETE_ON_ERROR:
.SUFFIXES:

# Sanitizer builds get their own output folder so objects never mix.
ifeq ($(SANITIZE),1)
BUILD   ?= build-san
endif
BUILD   ?= build
CC      ?= cc
PYTHON  ?= /usr/bin/python3
PKGS    := liburing expat openssl sqlite3 libpq libgsasl libidn inih jansson libnl-genl-3.0 libbpf hiredis

ifeq ($(V),1)
Q :=
msg = @true
else
Q := @
msg = @printf '  %-8s %s\n' '$(1)' '$(2)';
endif

CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Wshadow -Wformat=2 -Wno-unused-parameter \
	   -Wmissing-prototypes -Wstrict-prototypes -fno-strict-aliasing \
	   -D_GNU_SOURCE -Iinclude -Idaemon -MMD -MP
# libhttp-parser-dev ships no pkg-config file.
LDLIBS  += -lhttp_parser -lpthread -lresolv
# The version --version and XEP-0092 report (the package passes its own).
ifdef STANZAD_VERSION
CPPFLAGS += -DSTANZAD_VERSION='"$(STANZAD_VERSION)"'
endif

# SANITIZE=1: ASan + UBSan, every report fatal. The options reach the unit
# tests, the daemon started by the integration tests and stanzactl; a leak
# at exit makes the process exit non-zero, which fails the test.
ifeq ($(SANITIZE),1)
CFLAGS  += -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS += -fsanitize=address,undefined
export ASAN_OPTIONS ?= halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS ?= halt_on_error=1:print_stacktrace=1
endif

# pkg-config is resolved lazily so that `make deps` can run before the
# development packages exist.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

DAEMON_MAINS := daemon/main.c daemon/stanzactl.c
DAEMON_SRCS  := $(filter-out $(DAEMON_MAINS),$(sort $(wildcard daemon/*.c)))
DAEMON_OBJS  := $(DAEMON_SRCS:%.c=$(BUILD)/obj/%.o)
UNIT_SRCS    := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BINS    := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)

all: $(BUILD)/stanzad $(BUILD)/stanzactl

include daemon/console/console.mk
include bpf/bpf.mk
include kmod/kmod.mk
include tests/fuzz/fuzz.mk
include daemon/dist/dist.mk
include tests/interop/interop.mk

$(BUILD)/obj/%.o: %.c
	$(call msg,CC,$<)
	@mkdir -p $(@D)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(PKG_CFLAGS) -c $< -o $@

$(BUILD)/libstanzad.a: $(DAEMON_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/stanzad: $(BUILD)/obj/daemon/main.o $(BUILD)/libstanzad.a
	$(call msg,LD,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

$(BUILD)/stanzactl: $(BUILD)/obj/daemon/stanzactl.o $(BUILD)/libstanzad.a
	$(call msg,LD,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(BUILD)/libstanzad.a
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lcmocka $(LDLIBS)

deps:
	$(Q)scripts/install-deps.sh

# The unit runner prints one cmocka summary per file and a total line.
unit: $(UNIT_BINS)
	$(Q)scripts/run-unit.sh $(UNIT_BINS)

# XEP-0479 requirements a running server meets, from its own answers, e.g.
#   make compliance ARGS="--domain example.org --user alice --password-file pw"
compliance:
	$(Q)$(PYTHON) scripts/compliance.py $(ARGS)

integration: $(BUILD)/stanzad $(BUILD)/stanzactl
	$(Q)STANZAD_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -q -rs -p no:cacheprovider tests/integration

# The routing between account homes (router.c, docs/account-homes.md) in
# the diagnostic homes = loop mode, where every stanza for a local account
# passes through a mailbox: the tests of what it touches.
HOMES_LOOP_TESTS := $(addprefix tests/integration/,test_homes.py test_messaging.py \
	test_presence.py test_subscription.py test_mam.py test_blocking.py test_sm.py \
	test_durability.py test_offline.py test_carbons.py)
integration-homes-loop: $(BUILD)/stanzad $(BUILD)/stanzactl
	$(Q)STANZAD_BUILD=$(abspath $(BUILD)) STANZAD_TEST_ARGS="--homes loop" \
		$(PYTHON) -m pytest -q -rs -p no:cacheprovider $(HOMES_LOOP_TESTS)

# The integration suite with every daemon (and stanzactl) on PostgreSQL:
# the tests start a throwaway server (tests/integration/pgserver.py) and
# give each daemon a fresh database. Without PostgreSQL's binaries it says
# so and succeeds.
integration-postgresql: $(BUILD)/stanzad $(BUILD)/stanzactl
	$(Q)if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "integration-postgresql: skipped: PostgreSQL is not installed (scripts/install-deps.sh)"; \
	else \
		STANZAD_BUILD=$(abspath $(BUILD)) STANZAD_TEST_STORAGE=postgresql \
			$(PYTHON) -m pytest -q -rs -p no:cacheprovider tests/integration; \
	fi

# The tests of what a client sees (streams, SASL, roster, presence,
# messages, MUC, pubsub) against one address served by three cluster
# nodes sharing it with SO_REUSEPORT, on PostgreSQL and Redis, so that a
# test's clients land on different nodes (harness.py, STANZAD_TEST_CLUSTER).
# What a cluster does not do yet is skipped with its reason
# (tests/integration/cluster-limits.txt). Without PostgreSQL or Redis it
# says so and succeeds.
CLUSTER_TESTS := $(addprefix tests/integration/,test_stream_errors.py test_auth.py \
	test_login.py test_sasl2.py test_roster.py test_presence.py test_subscription.py \
	test_messaging.py test_muc.py test_pubsub.py)
integration-cluster: $(BUILD)/stanzad $(BUILD)/stanzactl
	$(Q)if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	       ! command -v redis-server >/dev/null 2>&1; then \
		echo "integration-cluster: skipped: PostgreSQL or redis-server is not installed (scripts/install-deps.sh)"; \
	else \
		STANZAD_BUILD=$(abspath $(BUILD)) STANZAD_TEST_STORAGE=postgresql STANZAD_TEST_CLUSTER=3 \
			$(PYTHON) -m pytest -q -rs -p no:cacheprovider $(CLUSTER_TESTS); \
	fi

check: deps
	$(Q)scripts/install-deps.sh console
	$(Q)$(MAKE) --no-print-directory all $(UNIT_BINS)
	$(Q)$(MAKE) --no-print-directory unit
	$(Q)$(MAKE) --no-print-directory integration
	$(Q)$(MAKE) --no-print-directory integration-homes-loop
	$(Q)$(MAKE) --no-print-directory integration-postgresql
	$(Q)$(MAKE) --no-print-directory integration-cluster
	$(Q)$(MAKE) --no-print-directory soak-check
	$(Q)STANZAD_PACKAGE_ALLOW_SKIP=1 $(MAKE) --no-print-directory check-package
	$(Q)$(MAKE) --no-print-directory fuzz-check
	$(Q)$(MAKE) --no-print-directory tsan-check
	$(Q)$(MAKE) --no-print-directory kernel-lab-quick

# The kernel lab (scripts/kernel-lab.sh, tests/kernel/): what the host's
# kernel cannot do (kTLS, the stanza offload module) runs under Debian 12's
# 6.1 kernel in qemu, on this tree's binaries, with the module built
# against that kernel's headers (kmod/kmod.mk). `make check` runs the quick
# part (about 2 minutes) and accepts a skip with its reason printed (no
# qemu, no kernel package); check-kernel runs everything and fails if the
# lab cannot run. bench-kernel: the fan-out benchmark of the kernel paths
# (tests/kernel/bench_fanout.py; its report is tests/kernel/BENCH.md).
KERNEL_LAB := scripts/kernel-lab.sh
LAB_BINS   := $(BUILD)/tests/test_ktls $(BUILD)/tests/test_loop $(BUILD)/tests/test_mailbox \
	      $(BUILD)/tests/kmod_test \
	      $(BUILD)/tests/fanout_client

kernel-lab-quick: all $(LAB_BINS)
	$(Q)$(MAKE) --no-print-directory kmod-lab 2>/dev/null || \
		echo "  KMOD     not built for the lab (no headers for its kernel): its tests skip"
	$(Q)$(KERNEL_LAB) --allow-skip --timeout 600 -- \
		tests/kernel/run-lab-tests.sh --quick $(abspath $(BUILD))

check-kernel: deps
	$(Q)$(MAKE) --no-print-directory all $(LAB_BINS)
	$(Q)$(MAKE) --no-print-directory kmod-lab
	$(Q)$(KERNEL_LAB) --timeout 3600 --mem 3072 -- \
		tests/kernel/run-lab-tests.sh --full $(abspath $(BUILD))

bench-kernel: deps
	$(Q)$(MAKE) --no-print-directory all $(LAB_BINS)
	$(Q)$(MAKE) --no-print-directory kmod-lab
	$(Q)$(KERNEL_LAB) --timeout 5400 --mem 8192 -- \
		$(PYTHON) tests/kernel/bench_fanout.py --build $(abspath $(BUILD)) $(BENCH_ARGS)

run: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)scripts/run-local.sh $(BUILD)

# The load generator is standalone (libc and pthreads only).
$(BUILD)/loadgen: $(BUILD)/obj/tests/bench/loadgen.o
	$(call msg,LD,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The login benchmark's client (scenario "login"): TLS, so OpenSSL too.
$(BUILD)/logingen: $(BUILD)/obj/tests/bench/logingen.o
	$(call msg,LD,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ -lssl -lcrypto $(LDLIBS)

bench: $(BUILD)/stanzad $(BUILD)/stanzactl $(BUILD)/loadgen $(BUILD)/logingen
	$(Q)$(PYTHON) scripts/bench.py --build $(abspath $(BUILD)) $(BENCH_ARGS)

# Soak (tests/reliability/soak.py): mixed traffic with reconnects and stream
# resumption, memory sampled, every acknowledged message checked. `make soak`
# runs SOAK_ARGS (default 50 clients for 5 minutes); `make check` a short one.
# The summary goes to the terminal, the samples to BUILD/soak.json.
SOAK_ARGS       ?= --clients 50 --minutes 5
SOAK_CHECK_ARGS ?= --clients 16 --seconds 40

soak: $(BUILD)/stanzad $(BUILD)/stanzactl
	$(Q)$(PYTHON) tests/reliability/soak.py --build $(abspath $(BUILD)) $(SOAK_ARGS) > $(BUILD)/soak.json

soak-check: $(BUILD)/stanzad $(BUILD)/stanzactl
	$(Q)$(PYTHON) tests/reliability/soak.py --build $(abspath $(BUILD)) $(SOAK_CHECK_ARGS) > $(BUILD)/soak-check.json

# ThreadSanitizer over what several threads share: the mailboxes (unit
# test) and the daemon with two workers moving connections, steering,
# reloading and shutting down, and accounts at home on different workers
# using the services and each other, and cluster mode's Redis connections on
# every worker (integration tests). Its own build folder;
# a race report makes the process exit 66, which fails the test.
TSAN_BUILD := build-tsan
TSAN_TESTS := tests/integration/test_workers.py tests/integration/test_steer.py \
	      tests/integration/test_sasl2.py tests/integration/test_shutdown.py \
	      tests/integration/test_homes_spread.py tests/integration/test_muc.py \
	      tests/integration/test_pep.py tests/integration/test_presence.py \
	      tests/integration/test_adhoc.py tests/integration/test_iot_provisioning.py \
	      tests/integration/test_cluster.py tests/integration/test_cluster_accounts.py
tsan-check:
	$(Q)$(MAKE) --no-print-directory BUILD=$(TSAN_BUILD) CC="$(CC) -fsanitize=thread" \
		$(TSAN_BUILD)/stanzad $(TSAN_BUILD)/stanzactl $(TSAN_BUILD)/tests/test_mailbox
	$(Q)TSAN_OPTIONS="halt_on_error=1:exitcode=66" $(TSAN_BUILD)/tests/test_mailbox
	$(Q)TSAN_OPTIONS="halt_on_error=0:exitcode=66" STANZAD_BUILD=$(abspath $(TSAN_BUILD)) \
		$(PYTHON) -m pytest -q -p no:cacheprovider $(TSAN_TESTS)

# The IoT demo (scripts/iot_demo.py): temporary state, removed at the end.
DEMO_DEVICES ?= 5
DEMO_SECONDS ?= 60
demo: $(BUILD)/stanzad $(BUILD)/stanzactl
	$(Q)$(PYTHON) scripts/iot_demo.py --build $(abspath $(BUILD)) --devices $(DEMO_DEVICES) \
		--duration $(DEMO_SECONDS)

clean:
	rm -rf $(BUILD)

.PHONY: all deps unit integration compliance check run clean bench kernel-lab-quick check-kernel bench-kernel demo soak soak-check tsan-check integration-homes-loop integration-postgresql
.PRECIOUS: $(BUILD)/obj/%.o

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
