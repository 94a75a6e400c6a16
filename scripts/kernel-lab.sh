#!/bin/sh
# The kernel lab: runs a command under a real Debian 12 kernel (6.1, with
# kTLS and module loading) in qemu, on the host's own files.
#
#   scripts/kernel-lab.sh [OPTIONS] -- COMMAND [ARG...]
#   scripts/kernel-lab.sh prepare     fetch and unpack the kernel only
#   scripts/kernel-lab.sh kdir        prepare headers to build kmod/ against
#                                     the lab kernel; prints the KDIR
#   scripts/kernel-lab.sh version     prints the lab kernel's release
#
# OPTIONS: --timeout SECONDS (default 900), --mem MIB (default 2048),
#          --smp N (default: the host's CPUs, at most 4), --quiet,
#          --allow-skip (exit 0 instead of 77 when the lab cannot run here)
#
# How it works (DESIGN "The kernel lab"):
#   1. The kernel package that linux-image-amd64 points at (Debian 12:
#      linux-image-6.1.0-N-amd64) is fetched with `apt-get download` into
#      build/kernel-lab/cache and unpacked with dpkg-deb -x, once.
#   2. A busybox initramfs is built with the modules the guest needs (9p for
#      the host share; gcm/ctr/ghash/chacha20poly1305/tls for kTLS) and a
#      modules.dep from depmod, so modprobe loads them in dependency order.
#   3. qemu (TCG: KVM does not work on these machines) boots it with the
#      host's / shared read-only over virtio 9p and a fresh run directory
#      (build/kernel-lab/runs/RUN) shared writable at the same path. The
#      guest's init chroots into the host tree, runs COMMAND in the current
#      directory with /tmp on a tmpfs, and leaves its status, output and
#      the kernel log (dmesg) in the run directory before powering off.
#   4. The run fails when COMMAND fails, when the guest does not finish in
#      time, or when the kernel log shows an Oops, a WARNING, a BUG or a
#      call trace.
#
# Exit status: COMMAND's status (0 = pass); 1 for a kernel complaint or a
# lab failure; 124 when the guest timed out; 77 (with a "SKIP" line naming
# the reason) when the lab cannot run here (no qemu, no kernel package).
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAB=${KERNEL_LAB_DIR:-$ROOT/build/kernel-lab}
CACHE=$LAB/cache
HERE=$ROOT/scripts/kernel-lab
TIMEOUT=900
MEM=2048
SMP=$(nproc 2>/dev/null || echo 1)
[ "$SMP" -gt 4 ] && SMP=4
QUIET=0
ALLOW_SKIP=0

say() { [ "$QUIET" = 1 ] || echo "kernel-lab: $*" >&2; }
die() { echo "kernel-lab: error: $*" >&2; exit 1; }
skip() {
	echo "kernel-lab: SKIP: $*" >&2
	[ "$ALLOW_SKIP" = 1 ] && exit 0
	exit 77
}

# ---- The kernel package ----

# The release the lab boots, e.g. 6.1.0-56-amd64: what linux-image-amd64
# depends on now, or else the newest package already in the cache.
kernel_release() {
	rel=$(apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: linux-image-\(6\.[0-9.]*-[0-9]*-amd64\)$/\1/p' | head -n 1)
	if [ -z "$rel" ] && [ "$(id -u)" = 0 ]; then
		# A fresh machine may have no package lists yet.
		apt-get update -q >/dev/null 2>&1 || true
		rel=$(apt-cache depends linux-image-amd64 2>/dev/null |
			sed -n 's/^ *Depends: linux-image-\(6\.[0-9.]*-[0-9]*-amd64\)$/\1/p' | head -n 1)
	fi
	if [ -z "$rel" ]; then
		# Offline: whatever was fetched before.
		rel=$(ls "$CACHE" 2>/dev/null | sed -n 's/^linux-image-\(.*-amd64\)_.*\.deb$/\1/p' |
			sort -V | tail -n 1)
	fi
	echo "$rel"
}

# Fetches package $1 into the cache unless a .deb of it is there already.
fetch_deb() {
	pkg=$1
	if ! ls "$CACHE/${pkg}_"*.deb >/dev/null 2>&1; then
		mkdir -p "$CACHE"
		say "fetching $pkg"
		# apt's sandbox user cannot write under build/: download as root
		# into a temporary directory, then move the file into the cache.
		tmp=$(mktemp -d)
		if ! (cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>"$tmp/err"); then
			cat "$tmp/err" >&2
			rm -rf "$tmp"
			return 1
		fi
		mv "$tmp"/*.deb "$CACHE"/
		rm -rf "$tmp"
	fi
	ls "$CACHE/${pkg}_"*.deb | sort -V | tail -n 1
}

# Unpacks the kernel image package into $LAB/kernel-$REL (once).
prepare_kernel() {
	REL=$(kernel_release)
	[ -n "$REL" ] || skip "no linux-image-6.1.0-*-amd64 package known to apt and none cached"
	KDIR_IMG=$LAB/kernel-$REL
	if [ ! -f "$KDIR_IMG/.unpacked" ]; then
		deb=$(fetch_deb "linux-image-$REL") || skip "cannot download linux-image-$REL"
		say "unpacking $(basename "$deb")"
		rm -rf "$KDIR_IMG"
		mkdir -p "$KDIR_IMG"
		dpkg-deb -x "$deb" "$KDIR_IMG"
		touch "$KDIR_IMG/.unpacked"
	fi
	VMLINUZ=$KDIR_IMG/boot/vmlinuz-$REL
	MODDIR=$KDIR_IMG/lib/modules/$REL
	[ -f "$VMLINUZ" ] || die "no kernel image in $KDIR_IMG"
}

# Headers to build out-of-tree modules against the lab kernel: the -amd64
# headers, their -common tree and linux-kbuild, unpacked side by side; the
# absolute /usr/src include in the -amd64 Makefile is pointed at the
# unpacked -common tree. Prints the directory to pass as KDIR.
prepare_kdir() {
	prepare_kernel
	HDIR=$LAB/headers-$REL
	common=${REL%-amd64}-common
	if [ ! -f "$HDIR/.unpacked" ]; then
		rm -rf "$HDIR"
		mkdir -p "$HDIR"
		kbuild=$(apt-cache depends "linux-headers-$REL" 2>/dev/null |
			sed -n 's/^ *Depends: \(linux-kbuild-[0-9.]*\)$/\1/p' | head -n 1)
		for p in "linux-headers-$REL" "linux-headers-$common" "${kbuild:-linux-kbuild-6.1}"; do
			deb=$(fetch_deb "$p") || die "cannot download $p"
			dpkg-deb -x "$deb" "$HDIR"
		done
		sed -i "s|/usr/src/linux-headers-$common|$HDIR/usr/src/linux-headers-$common|g" \
			"$HDIR/usr/src/linux-headers-$REL/Makefile"
		# The kbuild tools are referenced through a relative symlink into
		# /usr/lib/linux-kbuild-*: point it at the unpacked copy.
		for l in "$HDIR/usr/src/linux-headers-$REL/scripts" "$HDIR/usr/src/linux-headers-$REL/tools" \
			 "$HDIR/usr/src/linux-headers-$common/scripts" "$HDIR/usr/src/linux-headers-$common/tools"; do
			[ -L "$l" ] || continue
			t=$(readlink "$l")
			case "$t" in
			/*) ln -sfn "$HDIR$t" "$l" ;;
			esac
		done
		touch "$HDIR/.unpacked"
	fi
	echo "$HDIR/usr/src/linux-headers-$REL"
}

# ---- The initramfs ----

# Builds $RUN/initramfs.cpio: busybox, init, the listed modules and their
# dependencies with a modules.dep of their own.
build_initramfs() {
	stage=$RUN/initramfs
	busybox=$(command -v busybox || true)
	[ -n "$busybox" ] || skip "busybox is not installed (package busybox-static)"
	# The initramfs has no libc: only a static busybox runs there.
	LC_ALL=C ldd "$busybox" 2>&1 | grep -q 'not a dynamic' ||
		skip "$busybox is dynamically linked (install busybox-static)"
	mkdir -p "$stage/bin" "$stage/sbin" "$stage/usr/bin" "$stage/usr/sbin" "$stage/etc" \
		"$stage/proc" "$stage/sys" "$stage/dev" "$stage/lib/modules/$REL"
	cp "$busybox" "$stage/bin/busybox"
	ln -s busybox "$stage/bin/sh"
	cp "$HERE/init" "$stage/init"
	chmod 755 "$stage/init"
	grep -v '^#' "$HERE/modules.list" | sed '/^$/d' > "$stage/etc/lab-modules"

	# Full dependency information once per kernel, then the closure of
	# what the guest loads (plus anything `lab-modules` adds) is copied.
	if [ ! -f "$MODDIR/modules.dep" ]; then
		depmod -b "$KDIR_IMG" "$REL"
	fi
	want=$(cat "$stage/etc/lab-modules")
	mods=""
	for m in $want; do
		path=$(modname_path "$m") || die "module $m is not in $REL"
		mods="$mods $path $(dep_paths "$path")"
	done
	for p in $(echo "$mods" | tr ' ' '\n' | sort -u); do
		mkdir -p "$stage/lib/modules/$REL/$(dirname "$p")"
		cp "$MODDIR/$p" "$stage/lib/modules/$REL/$p"
	done
	cp "$MODDIR/modules.order" "$MODDIR/modules.builtin" "$MODDIR/modules.builtin.modinfo" \
		"$stage/lib/modules/$REL/" 2>/dev/null || true
	depmod -b "$stage" "$REL"
	(cd "$stage" && find . | cpio -o -H newc --quiet) > "$RUN/initramfs.cpio"
	rm -rf "$stage"
}

# Path (relative to the module directory) of module $1; - and _ are the
# same in module names.
modname_path() {
	awk -F: -v want="$(echo "$1" | tr '-' '_')" '
		{ n = $1; sub(/.*\//, "", n); sub(/\.ko.*$/, "", n); gsub(/-/, "_", n) }
		n == want { print $1; found = 1; exit }
		END { exit !found }' "$MODDIR/modules.dep"
}

# Dependencies of module path $1, from modules.dep (already transitive).
dep_paths() {
	sed -n "s|^$1: *||p" "$MODDIR/modules.dep"
}

# ---- Running ----

# Kernel complaints that fail a run even when the command passed.
KERNEL_COMPLAINTS='Oops|WARNING:|BUG:|Call Trace|kernel BUG|general protection fault|Kernel panic|UBSAN:|KASAN:'

run_lab() {
	command -v qemu-system-x86_64 >/dev/null 2>&1 ||
		skip "qemu-system-x86_64 is not installed (package qemu-system-x86)"
	command -v cpio >/dev/null 2>&1 || skip "cpio is not installed"
	command -v depmod >/dev/null 2>&1 || skip "depmod is not installed (package kmod)"
	prepare_kernel

	mkdir -p "$LAB/runs"
	RUN=$(mktemp -d "$LAB/runs/run.XXXXXX")
	chmod 755 "$RUN"
	# The command, quoted, as the guest's shell will run it.
	{
		echo "# generated by kernel-lab.sh"
		printf 'exec'
		for a in "$@"; do
			printf " '%s'" "$(printf '%s' "$a" | sed "s/'/'\\\\''/g")"
		done
		echo
	} > "$RUN/cmd.sh"
	build_initramfs

	say "booting $REL (TCG, ${SMP} CPUs, ${MEM} MiB, timeout ${TIMEOUT}s); run directory $RUN"
	start=$(date +%s)
	set +e
	timeout -k 10 "$TIMEOUT" qemu-system-x86_64 \
		-accel tcg -cpu max -smp "$SMP" -m "$MEM" \
		-kernel "$VMLINUZ" -initrd "$RUN/initramfs.cpio" \
		-append "console=ttyS0 loglevel=5 panic=-1 rdinit=/init lab.run=$RUN lab.cwd=$(pwd)" \
		-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
		-virtfs "local,path=$RUN,mount_tag=labrun,security_model=none,multidevs=remap" \
		-nic none -display none -no-reboot -monitor none \
		-serial "file:$RUN/console.log" >"$RUN/qemu.log" 2>&1
	qrc=$?
	set -e
	elapsed=$(($(date +%s) - start))

	say "guest stopped after ${elapsed}s (logs: $RUN)"
	if [ -f "$RUN/output.log" ] && [ "$QUIET" != 1 ]; then
		cat "$RUN/output.log"
	fi
	# The initramfs is rebuilt each run; old runs keep only their logs.
	rm -f "$RUN/initramfs.cpio"
	ls -dt "$LAB/runs"/run.* 2>/dev/null | tail -n +21 | xargs rm -rf
	if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
		echo "kernel-lab: FAIL: the guest did not finish within ${TIMEOUT}s" >&2
		tail -n 40 "$RUN/console.log" >&2 || true
		return 124
	fi
	if [ "$qrc" != 0 ]; then
		cat "$RUN/qemu.log" >&2
		# qemu itself could not start (no TCG, no memory): nothing was tested.
		[ -f "$RUN/console.log" ] && [ -s "$RUN/console.log" ] ||
			skip "qemu could not start (status $qrc)"
		echo "kernel-lab: FAIL: qemu exited with status $qrc" >&2
		return 1
	fi
	if [ ! -f "$RUN/status" ]; then
		echo "kernel-lab: FAIL: the guest stopped before the command finished" >&2
		cat "$RUN/init.log" 2>/dev/null >&2 || true
		tail -n 40 "$RUN/console.log" >&2 || true
		return 1
	fi
	status=$(cat "$RUN/status")
	# The console shows what happened before the run directory was mounted;
	# dmesg has every kernel message of the run.
	if cat "$RUN/console.log" "$RUN/dmesg.log" 2>/dev/null | grep -E "$KERNEL_COMPLAINTS" >"$RUN/complaints"; then
		echo "kernel-lab: FAIL: the kernel complained during the run:" >&2
		head -n 40 "$RUN/complaints" >&2
		return 1
	fi
	[ "$status" = 0 ] || echo "kernel-lab: FAIL: the command exited with status $status" >&2
	return "$status"
}

# ---- Main ----

while [ $# -gt 0 ]; do
	case "$1" in
	--timeout) TIMEOUT=$2; shift 2 ;;
	--mem) MEM=$2; shift 2 ;;
	--smp) SMP=$2; shift 2 ;;
	--quiet) QUIET=1; shift ;;
	--allow-skip) ALLOW_SKIP=1; shift ;;
	--) shift; break ;;
	prepare) prepare_kernel; say "kernel $REL ready in $KDIR_IMG"; exit 0 ;;
	kdir) prepare_kdir; exit 0 ;;
	version) prepare_kernel; echo "$REL"; exit 0 ;;
	-h|--help) sed -n '2,/^set -eu/p' "$0" | sed 's/^# \{0,1\}//;/^set -eu/d'; exit 0 ;;
	*) break ;;
	esac
done
[ $# -gt 0 ] || die "no command given (see --help)"
[ "$(id -u)" = 0 ] || skip "the lab needs root (apt-get download, 9p export of /)"
run_lab "$@"
