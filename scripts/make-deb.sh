#!/bin/sh
# Builds the Debian packages of stanzad from a copy of the work tree.
#
#   scripts/make-deb.sh OUTDIR [--version VERSION]
#
# The tree (tracked files and new ones git does not ignore; everything but
# build output without git) is copied to OUTDIR/src, and
# dpkg-buildpackage builds the binary packages there, unsigned: they land
# in OUTDIR. Building in a copy keeps debhelper's files (debian/stanzad/,
# debian/files, ...) out of the work tree and leaves the tree's build/
# alone. --version VERSION first adds a changelog entry with that version
# to the copy (the package test builds an upgrade this way).
#
# Prints the path of each .deb built, one per line, on stdout.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 1 ] || { echo "usage: $0 OUTDIR [--version VERSION]" >&2; exit 2; }
OUT=$1
shift
VERSION=
while [ $# -gt 0 ]; do
	case "$1" in
	--version) VERSION=${2:?--version needs a value}; shift 2 ;;
	*) echo "make-deb: unknown argument '$1'" >&2; exit 2 ;;
	esac
done

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SRC=$OUT/src
rm -rf "$SRC"
mkdir -p "$SRC"
rm -f "$OUT"/*.deb "$OUT"/*.buildinfo "$OUT"/*.changes

# The copy: what git would commit now (tracked, or new and not ignored),
# minus files deleted in the work tree.
if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
	(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
		xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
		tar --null -T - -cf -) | tar -C "$SRC" -xf -
else
	(cd "$ROOT" && tar --exclude='./build*' --exclude=./.git -cf - .) | tar -C "$SRC" -xf -
fi

if [ -n "$VERSION" ]; then
	# A changelog entry on top; dpkg-parsechangelog takes the version from it.
	tmp=$SRC/debian/changelog.new
	{
		printf 'stanzad (%s) bookworm; urgency=medium\n\n' "$VERSION"
		printf '  * Rebuild with version %s.\n\n' "$VERSION"
		printf ' -- stanzad maintainers <maintainers@stanzad.example>  %s\n\n' "$(date -R)"
		cat "$SRC/debian/changelog"
	} >"$tmp"
	mv "$tmp" "$SRC/debian/changelog"
fi

# A package is built as Debian builds it, whatever make called this: under
# `make check SANITIZE=1` the environment carries SANITIZE=1 (in MAKEFLAGS,
# which debian/rules' make would obey) and the sanitizers' options.
unset MAKEFLAGS MFLAGS MAKELEVEL SANITIZE ASAN_OPTIONS UBSAN_OPTIONS

# -b: binary packages only; -us -uc: unsigned. The log stays beside them.
log=$OUT/build.log
jobs=$(nproc 2>/dev/null || echo 1)
if ! (cd "$SRC" && dpkg-buildpackage -b -us -uc -j"$jobs" >"$log" 2>&1); then
	tail -n 40 "$log" >&2
	echo "make-deb: dpkg-buildpackage failed (log: $log)" >&2
	exit 1
fi
ls "$OUT"/*.deb
