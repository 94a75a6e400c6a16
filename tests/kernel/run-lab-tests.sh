#!/bin/sh
# The kernel lab's test run, inside the guest (see scripts/kernel-lab.sh):
#
#   scripts/kernel-lab.sh -- tests/kernel/run-lab-tests.sh [--quick|--full] BUILD_DIR
#
# --quick (make check): the kTLS unit tests against the lab kernel, the
#         loop tests (io_uring on 6.1), the stanza offload module's C tests
#         (when BUILD_DIR/kmod has it), and tests/kernel (real clients).
# --full  (make check-kernel): the same with the 1,000-client fan-out, then
#         the whole integration suite with kTLS active on every TLS
#         connection and the module loaded (fan-out goes through it).
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
step "unit: test_mailbox (MSG_RING doorbells between workers on this kernel)" \
	"$BUILD/tests/test_mailbox"

# The stanza offload module, built for this kernel by `make kmod-lab`.
KO="$BUILD/kmod/stanza_offload.ko"
kmod_unit() {
	insmod "$KO" || return 1
	"$BUILD/tests/kmod_test"
	rc=$?
	rmmod stanza_offload || rc=1
	return $rc
}
if [ -f "$KO" ]; then
	export KERNEL_LAB_KMOD=1
	step "unit: kmod_test (the module's device and genetlink family)" kmod_unit
else
	echo "lab: SKIP the stanza offload module: $KO was not built (no headers for this kernel)"
fi
if [ "$MODE" = --full ]; then
	export KERNEL_LAB_FULL=1
	step "pytest tests/kernel" $PYTHON -m pytest -q -p no:cacheprovider -rs --durations=5 tests/kernel
else
	step "pytest tests/kernel (quick)" $PYTHON -m pytest -q -p no:cacheprovider -rs \
		--durations=5 -m "not slow" tests/kernel
fi
if [ "$MODE" = --full ]; then
	# With the module loaded every fan-out the suite makes may go through it.
	[ -f "$KO" ] && { grep -q '^stanza_offload ' /proc/modules || insmod "$KO"; }
	step "pytest tests/integration (kTLS on every TLS connection, module loaded)" \
		$PYTHON -m pytest -q -p no:cacheprovider tests/integration
	if grep -q '^stanza_offload ' /proc/modules; then
		echo "lab: the offload module after the integration suite:"
		"$BUILD/stanzactl" kmod status | grep -E '^(requests|targets|complete|partial|blocked|errors|bytes):'
		step "kmod: unloads after the suite (nothing holds it)" rmmod stanza_offload
	fi
fi
echo "lab: kTLS counters at the end:"
cat /proc/net/tls_stat
echo "kernel-lab: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
