#!/bin/sh
# The kernel lab's test run, inside the guest (see scripts/kernel-lab.sh):
#
#   scripts/kernel-lab.sh -- tests/kernel/run-lab-tests.sh [--quick|--full] BUILD_DIR
#
# --quick (make check): the kTLS unit tests against the lab kernel, the
#         loop tests (io_uring on 6.1), and tests/kernel (real clients).
# --full  (make check-kernel): the same, then the whole integration suite
#         with kTLS active on every TLS connection.
# Prints one "N passed, N failed" line over the steps; exit status 1 if
# any failed.
set -u
MODE=--quick
case "${1:-}" in --quick|--full) MODE=$1; shift ;; esac
BUILD=${1:?usage: run-lab-tests.sh [--quick|--full] BUILD_DIR}
PYTHON=/usr/bin/python3
export STANZAD_BUILD="$BUILD"
passed=0
failed=0

step() {
	name=$1
	shift
	echo "=== lab: $name"
	start=$(date +%s)
	if "$@"; then
		passed=$((passed + 1))
		echo "=== lab: $name: ok ($(($(date +%s) - start))s)"
	else
		failed=$((failed + 1))
		echo "=== lab: $name: FAILED ($(($(date +%s) - start))s)"
	fi
}

# Without kTLS the lab has nothing to test: fail loudly, do not skip.
if [ ! -r /proc/net/tls_stat ]; then
	echo "lab: this kernel has no kTLS (/proc/net/tls_stat is missing)"
	echo "0 passed, 1 failed"
	exit 1
fi
echo "lab: kernel $(uname -r), $(nproc) CPUs"

step "unit: test_ktls (probe must find every suite)" "$BUILD/tests/test_ktls"
step "unit: test_loop (io_uring on this kernel)" "$BUILD/tests/test_loop"
if [ "$MODE" = --full ]; then
	step "pytest tests/kernel" $PYTHON -m pytest -q -p no:cacheprovider -rs --durations=5 tests/kernel
else
	step "pytest tests/kernel (quick)" $PYTHON -m pytest -q -p no:cacheprovider -rs \
		--durations=5 -m "not slow" tests/kernel
fi
if [ "$MODE" = --full ]; then
	step "pytest tests/integration (kTLS on every TLS connection)" \
		$PYTHON -m pytest -q -p no:cacheprovider tests/integration
fi
echo "lab: kTLS counters at the end:"
cat /proc/net/tls_stat
echo "kernel-lab: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
