#!/bin/sh
# Runs libFuzzer targets built by tests/fuzz/fuzz.mk, one after the other,
# and ends with one summary line. Exit status is nonzero when any target
# found a crash, a leak, a timeout or a broken property.
#
#   scripts/run-fuzz.sh [--check] [--seconds N] [--dir BUILD/fuzz] TARGET...
#
# For each target: first every saved regression input
# (tests/fuzz/regressions/TARGET/) is replayed, then the fuzzer runs for
# N seconds over its working corpus (BUILD/fuzz/corpus/TARGET, where new
# inputs go) and the committed seeds (tests/fuzz/corpus/TARGET, read
# only). tests/fuzz/TARGET.options holds extra libFuzzer flags,
# tests/fuzz/TARGET.dict a dictionary. --check only changes the wording:
# it is the short run of `make check`.
#
# Findings are written to BUILD/fuzz/artifacts/TARGET/ (crash-*, leak-*,
# timeout-*); the full output of each run is BUILD/fuzz/logs/TARGET.log.
# To reproduce:  BUILD/fuzz/TARGET BUILD/fuzz/artifacts/TARGET/crash-...
set -u

seconds=60
dir=build/fuzz
mode=fuzz
while [ $# -gt 0 ]; do
	case "$1" in
	--seconds) seconds=$2; shift 2 ;;
	--dir) dir=$2; shift 2 ;;
	--check) mode=check; shift ;;
	--) shift; break ;;
	-*) echo "usage: $0 [--check] [--seconds N] [--dir DIR] TARGET..." >&2; exit 2 ;;
	*) break ;;
	esac
done

# Stack traces for UBSan reports too (ASan prints them anyway).
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
export UBSAN_OPTIONS

passed=0
failed=0
failed_names=""
total_runs=0

# Value of "stat::NAME: N" in a log, or 0.
fuzz_stat() {
	sed -n "s/^stat::$1: *\([0-9]*\).*/\1/p" "$2" | tail -n 1 | grep . || echo 0
}

for t in "$@"; do
	bin=$dir/$t
	work=$dir/corpus/$t
	art=$dir/artifacts/$t
	log=$dir/logs/$t.log
	seeds=tests/fuzz/corpus/$t
	regs=tests/fuzz/regressions/$t
	mkdir -p "$work" "$art" "$dir/logs"
	: >"$log"

	opts="-timeout=10 -rss_limit_mb=2048 -artifact_prefix=$art/"
	[ -f "tests/fuzz/$t.options" ] && opts="$opts $(grep -v '^#' "tests/fuzz/$t.options")"
	[ -f "tests/fuzz/$t.dict" ] && opts="$opts -dict=tests/fuzz/$t.dict"

	ok=1
	why=""
	# Regression inputs first: each is run once, by name.
	if [ -d "$regs" ] && [ -n "$(ls -A "$regs" 2>/dev/null)" ]; then
		nregs=$(ls -A "$regs" | wc -l)
		# shellcheck disable=SC2086
		if ! "$bin" $opts "$regs"/* >>"$log" 2>&1; then
			ok=0
			why="a regression input fails again"
		fi
	else
		nregs=0
	fi
	if [ $ok -eq 1 ]; then
		corpora="$work"
		[ -d "$seeds" ] && corpora="$corpora $seeds"
		# shellcheck disable=SC2086
		if ! "$bin" $opts -max_total_time="$seconds" -print_final_stats=1 \
			$corpora >>"$log" 2>&1; then
			ok=0
			why="finding"
		fi
	fi

	runs=$(fuzz_stat number_of_executed_units "$log")
	total_runs=$((total_runs + runs))
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
	ft=$(grep -o 'ft: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
	corp=$(ls -A "$work" | wc -l)
	if [ $ok -eq 1 ]; then
		passed=$((passed + 1))
		printf '  %-16s ok: %s runs in %ss, cov %s, ft %s, corpus %s, %s regressions\n' \
			"$t" "$runs" "$seconds" "${cov:-?}" "${ft:-?}" "$corp" "$nregs"
	else
		failed=$((failed + 1))
		failed_names="$failed_names $t"
		printf '  %-16s FAILED (%s) after %s runs; log: %s\n' "$t" "$why" "$runs" "$log"
		# The sanitizer or property report, without libFuzzer's progress lines.
		grep -v -e '^#[0-9]' -e '^INFO:' -e '^\s*NEW_FUNC' "$log" | tail -n 60 | sed 's/^/    /'
		ls "$art" 2>/dev/null | sed "s|^|    artifact: $art/|"
	fi
done

if [ $failed -eq 0 ]; then
	echo "fuzz ($mode, ${seconds}s per target): $passed targets passed, $total_runs runs, no findings"
else
	echo "fuzz ($mode, ${seconds}s per target): $passed passed, $failed FAILED:$failed_names"
fi
[ $failed -eq 0 ]
