#!/bin/sh
# Runs each cmocka unit-test binary given on the command line, then prints
# a final "N passed, N failed" line over all of them. Exit status is
# nonzero when any binary failed.
set -u
passed=0
failed=0
for t in "$@"; do
	if "$t"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		echo "FAILED: $t"
	fi
done
echo "unit test programs: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
