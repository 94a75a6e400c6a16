#!/bin/sh
# Installs the Debian 12 packages stanzad needs to build and test.
#
#   scripts/install-deps.sh [interop] [console] [bench]
#
# With no argument: what `make`, `make check` (the package test included),
# `make install` and `make deb` need. `interop` adds the client stacks of
# make check-interop; `console` (which make check asks for) the browser of
# the web console's end-to-end test; `bench` the peer servers that
# `make bench BENCH_ARGS="--servers stanzad,prosody,ejabberd"` compares
# stanzad with (scripts/bench.py asks for it; not part of make check).
#
# Idempotent: prints nothing and exits 0 when everything is present. When
# something is missing it installs it with apt-get (root only); run as an
# unprivileged user it names the missing packages and exits 1.
set -eu

# Build: compiler, the daemon's libraries, TLS tooling.
BUILD_PKGS="gcc make pkg-config openssl ca-certificates
liburing-dev libexpat1-dev libssl-dev libsqlite3-dev libpq-dev libgsasl-dev
libidn-dev libinih-dev liburcu-dev libhttp-parser-dev libjansson-dev
libnl-3-dev libnl-genl-3-dev libhiredis-dev
libbpf-dev bpftool clang iproute2"
# (libhiredis-dev: the Redis client of cluster mode, daemon/cluster*.c;
# clang compiles bpf/*.bpf.c, bpftool makes vmlinux.h and the skeletons;
# iproute2's ip makes the network namespace of the guard's test.)
# Tests: cmocka for C units, pytest + slixmpp (a real client) for
# integration, sqlite3 CLI to inspect the store in tests, valgrind for the
# daemon's leak check (tests/integration/test_valgrind.py), python3-cryptography
# for the certificates of the XEP-0324 token test, redis-server for the
# cluster tests (tests/integration/test_cluster.py starts its own).
TEST_PKGS="libcmocka-dev python3 python3-pytest python3-slixmpp python3-cryptography sqlite3 valgrind
redis-server"
# Modern-client tests: coturn as the TURN server that must accept the
# credentials of XEP-0215 (tests/integration/test_extdisco.py; its system
# service is stopped below), python3-omemo with both OMEMO versions for
# the end-to-end encryption test (tests/integration/test_omemo.py; xmlschema
# for their XML helpers).
TEST_PKGS="$TEST_PKGS coturn python3-omemo python3-twomemo python3-oldmemo python3-xmlschema"
# PostgreSQL storage (make integration-postgresql, tests/integration/pgserver.py):
# the server binaries and psql; the tests run their own throwaway cluster
# on a free loopback port, so the packaged cluster's service is stopped and
# disabled below (it would hold port 5432 and run for nothing).
TEST_PKGS="$TEST_PKGS postgresql postgresql-client"
# Federation interop (tests/integration/test_federation_prosody.py): prosody as
# a real peer server, lua-unbound so it resolves the test's domain from a
# hosts file and a local SRV record. Its system service is stopped and
# disabled right after we install it (it would hold ports 5222 and 5269).
# ejabberd likewise (tests/integration/test_federation_ejabberd.py).
FED_PKGS="prosody lua-unbound ejabberd"
# Fuzzing (tests/fuzz): clang with libFuzzer and the sanitizer runtimes,
# llvm-symbolizer for readable stack traces.
FUZZ_PKGS="clang libclang-rt-14-dev llvm"
# The kernel lab (scripts/kernel-lab.sh, part of make check): qemu boots
# Debian's kernel package (fetched with apt-get download) with a busybox
# initramfs built with cpio and depmod; its kTLS tests forge TLS records
# with python3-cryptography. The offload module builds against that
# kernel's headers (also fetched with apt-get download, never installed);
# its tests drop CAP_NET_ADMIN with capsh (libcap2-bin).
LAB_PKGS="qemu-system-x86 busybox-static cpio kmod python3-cryptography libcap2-bin"
# Packaging (make install, make deb, and the package test of make check):
# scdoc for the man pages, debhelper and dh-dkms for the .debs, debootstrap and the
# archive keyring for the throwaway root the package test installs it in.
PACKAGE_PKGS="scdoc debhelper dh-dkms debootstrap debian-archive-keyring"
# The interop matrix (make check-interop, tests/interop): client stacks
# from Debian. slixmpp is in TEST_PKGS; xmpp.js comes from npm (below).
INTEROP_PKGS="python3-aioxmpp libstrophe-dev go-sendxmpp profanity tmux"
# The benchmark's peers (scripts/bench_peers.py starts its own instances on
# free loopback ports; the packaged services are stopped below).
BENCH_PKGS="prosody ejabberd"

EXTRA_PKGS=""
CONSOLE_GROUP=""
for group in "$@"; do
	case "$group" in
	interop) EXTRA_PKGS="$EXTRA_PKGS $INTEROP_PKGS" ;;
	console) CONSOLE_GROUP=1 ;;
	bench) EXTRA_PKGS="$EXTRA_PKGS $BENCH_PKGS" ;;
	*) echo "install-deps: unknown group '$group' (interop, console, bench)" >&2; exit 2 ;;
	esac
done

# The WebSocket test's real client (xmpp.js, tests/integration/ws-client):
# npm packages pinned by its package-lock.json, installed with `npm ci`
# when Node >= 20.10 and npm are present. Without them the test skips and
# says why; nothing else depends on it, so a failure here is not fatal.
ws_client() {
	dir="$(dirname "$0")/../tests/integration/ws-client"
	[ -d "$dir/node_modules/@xmpp/client" ] && [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ] && return 0
	command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || return 0
	node -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>20||(a==20&&b>=10)?0:1)' || return 0
	(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/tmp/stanzad-npm.log 2>&1) ||
		echo "stanzad: npm ci in tests/integration/ws-client failed (log: /tmp/stanzad-npm.log); the WebSocket client test will skip" >&2
}
ws_client

# The web console's browser test (tests/integration/test_console.py, group
# `console`): Debian's chromium driven by playwright-core from npm, pinned
# by tests/integration/console-driver/package-lock.json (it downloads no
# browser). Not fatal: without them that one test skips and says why.
console_deps() {
	pkgs=""
	command -v chromium >/dev/null 2>&1 || pkgs="$pkgs chromium"
	command -v node >/dev/null 2>&1 || pkgs="$pkgs nodejs"
	command -v npm >/dev/null 2>&1 || pkgs="$pkgs npm"
	if [ -n "$pkgs" ] && [ "$(id -u)" -ne 0 ]; then
		echo "stanzad: the console browser test needs:$pkgs (sudo scripts/install-deps.sh console); it will skip" >&2
	elif [ -n "$pkgs" ]; then
		echo "stanzad: installing Debian packages for the console test:$pkgs"
		# shellcheck disable=SC2086
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $pkgs \
			>/tmp/stanzad-apt-console.log 2>&1 ||
		{ apt-get update -q >>/tmp/stanzad-apt-console.log 2>&1
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $pkgs \
			>>/tmp/stanzad-apt-console.log 2>&1; } ||
		echo "stanzad: apt-get could not install:$pkgs (log: /tmp/stanzad-apt-console.log); the console browser test will skip" >&2
	fi
	dir="$(dirname "$0")/../tests/integration/console-driver"
	[ -d "$dir/node_modules/playwright-core" ] && [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ] && return 0
	command -v npm >/dev/null 2>&1 || return 0
	(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/tmp/stanzad-npm-console.log 2>&1) ||
		echo "stanzad: npm ci in tests/integration/console-driver failed (log: /tmp/stanzad-npm-console.log); the console browser test will skip" >&2
}
[ -n "$CONSOLE_GROUP" ] && console_deps

missing=""
for p in $BUILD_PKGS $TEST_PKGS $FED_PKGS $FUZZ_PKGS $LAB_PKGS $PACKAGE_PKGS $EXTRA_PKGS; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$status" in
	*" installed") ;;
	*) missing="$missing $p" ;;
	esac
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "stanzad: missing Debian packages:$missing" >&2
	echo "stanzad: run 'sudo scripts/install-deps.sh' (or install them with apt-get) and retry" >&2
	exit 1
fi

echo "stanzad: installing Debian packages:$missing"
export DEBIAN_FRONTEND=noninteractive
# A fresh machine may have no package lists yet: update once and retry.
# shellcheck disable=SC2086
if ! apt-get install -y -q --no-install-recommends $missing >/tmp/stanzad-apt.log 2>&1; then
	apt-get update -q >>/tmp/stanzad-apt.log 2>&1 || true
	if ! apt-get install -y -q --no-install-recommends $missing >>/tmp/stanzad-apt.log 2>&1; then
		tail -n 20 /tmp/stanzad-apt.log >&2
		echo "stanzad: apt-get could not install:$missing (log: /tmp/stanzad-apt.log)" >&2
		exit 1
	fi
fi
# The tests start their own prosody; the packaged daemon must not hold the ports.
case " $missing " in
*" prosody "*)
	if command -v systemctl >/dev/null 2>&1; then
		systemctl disable --now prosody >/dev/null 2>&1 || true
	fi
	[ -x /etc/init.d/prosody ] && /etc/init.d/prosody stop >/dev/null 2>&1 || true
	;;
esac
# The cluster tests start their own redis-server on free ports; the
# packaged service is not needed (and would keep a Redis running for nothing).
case " $missing " in
*" redis-server "*)
	if command -v systemctl >/dev/null 2>&1; then
		systemctl disable --now redis-server >/dev/null 2>&1 || true
	fi
	[ -x /etc/init.d/redis-server ] && /etc/init.d/redis-server stop >/dev/null 2>&1 || true
	;;
esac
case " $missing " in
*" coturn "*)
	if command -v systemctl >/dev/null 2>&1; then
		systemctl disable --now coturn >/dev/null 2>&1 || true
	fi
	[ -x /etc/init.d/coturn ] && /etc/init.d/coturn stop >/dev/null 2>&1 || true
	;;
esac
case " $missing " in
*" postgresql "*)
	if command -v systemctl >/dev/null 2>&1; then
		systemctl disable --now postgresql >/dev/null 2>&1 || true
	fi
	[ -x /etc/init.d/postgresql ] && /etc/init.d/postgresql stop >/dev/null 2>&1 || true
	;;
esac
case " $missing " in
*" ejabberd "*)
	if command -v systemctl >/dev/null 2>&1; then
		systemctl disable --now ejabberd >/dev/null 2>&1 || true
	fi
	[ -x /etc/init.d/ejabberd ] && /etc/init.d/ejabberd stop >/dev/null 2>&1 || true
	;;
esac
