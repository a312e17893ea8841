#!/usr/bin/env bash
# Runs every built test binary and suite, prints each one's verdict, and
# closes with one line: "N passed, M failed" (suites count as one each for
# the ones that are not unit binaries). Exit 1 if anything failed.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
passed=0
failed=0
failures=()

run_counted() { # name, command...: a binary that ends with "N passed, M failed"
	local name=$1; shift
	local log="$BUILD/logs/$name.log"
	mkdir -p "$BUILD/logs"
	local start=$SECONDS
	"$@" >"$log" 2>&1
	local rc=$?
	local line
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
	local p=0 f=0
	if [ -n "$line" ]; then
		p=$(echo "$line" | awk '{print $1}')
		f=$(echo "$line" | awk '{print $3}')
	fi
	if [ $rc -ne 0 ] && [ "$f" = 0 ]; then f=1; fi
	passed=$((passed + p))
	failed=$((failed + f))
	if [ $rc -ne 0 ]; then
		failures+=("$name")
		echo "FAIL $name ($((SECONDS - start))s): $p passed, $f failed -- log: $log"
		grep -E '^(FAIL|  )' "$log" | head -n 40
		tail -n 20 "$log"
	else
		echo "ok   $name ($((SECONDS - start))s): $p passed"
	fi
}

run_suite() { # name, command...: counts as one test
	local name=$1; shift
	local log="$BUILD/logs/$name.log"
	mkdir -p "$BUILD/logs"
	local start=$SECONDS
	if "$@" >"$log" 2>&1; then
		passed=$((passed + 1))
		echo "ok   $name ($((SECONDS - start))s)"
	else
		failed=$((failed + 1))
		failures+=("$name")
		echo "FAIL $name ($((SECONDS - start))s) -- log: $log"
		tail -n 40 "$log"
	fi
}

for t in "$BUILD"/asan/tests/test_*; do
	[ -x "$t" ] || continue
	run_counted "$(basename "$t")" "$t"
done
if [ -x "$BUILD/asan/tests/raft_scenarios" ]; then
	run_counted raft_scenarios "$BUILD/asan/tests/raft_scenarios" tests/raft/testdata
fi
# Further suites (simulator sweeps, checker verdicts, fuzz smoke, ...) are
# listed in tools/suites.sh, one "run_suite NAME CMD..." per line.
if [ -f tools/suites.sh ]; then
	# shellcheck source=/dev/null
	. tools/suites.sh
fi

echo
if [ ${#failures[@]} -gt 0 ]; then
	echo "failed: ${failures[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
