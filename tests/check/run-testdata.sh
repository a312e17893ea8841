#!/usr/bin/env bash
# run-testdata.sh -- runs `keel check` (the release build) on every history
# listed in the shared test data's verdicts.txt files and compares with the
# known verdict. Each file gets LIMIT seconds (default 5), enforced with
# timeout(1) as well as --timeout; a file that is too slow fails. Prints one
# line per file and closes with "N passed, M failed"; exits non-zero on any
# mismatch.
#
# It also runs the bank model's examples in tests/check/bank/ (in the
# repository): expected.txt lists each file with its exit code (0 valid,
# 1 violations, 2 malformed input), for 0 and 1 the first line, and for 1
# the violation kinds (comma-separated) that must each be reported.
#
# The test data lives beside the repository (CI clones shared/ next to it):
# $(git rev-parse --show-toplevel)/../shared/testdata, else
# /work/shared/testdata, or $KEEL_TESTDATA if set.
set -u
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel 2>/dev/null || (cd "$(dirname "$0")/../.." && pwd))
cd "$root" || exit 2
BUILD=${BUILD:-build}
KEEL=${KEEL:-$BUILD/keel}
LIMIT=${LIMIT:-5}
data=${KEEL_TESTDATA:-}
if [ -z "$data" ]; then
	if [ -d "$root/../shared/testdata/linearizability" ]; then
		data=$root/../shared/testdata
	else
		data=/work/shared/testdata
	fi
fi
data=$data/linearizability
if [ ! -x "$KEEL" ]; then
	make --no-print-directory "$KEEL" >/dev/null || { echo "cannot build $KEEL"; echo "0 passed, 1 failed"; exit 1; }
fi

passed=0
failed=0
total_ms=0
max_ms=0
max_file=

bank=tests/check/bank
while read -r file want_rc want kinds _; do
	[ -n "$file" ] || continue
	case $file in \#*) continue ;; esac
	out=$(timeout -k 1 "$LIMIT" "$KEEL" check --model bank "$bank/$file" 2>&1)
	rc=$?
	got=$(printf '%s\n' "$out" | head -n 1)
	missing=
	for k in $(printf '%s' "${kinds:-}" | tr ',' ' '); do
		printf '%s\n' "$out" | grep -q "^$k: " || missing="$missing $k"
	done
	if [ "$rc" -eq "$want_rc" ] && [ -z "$missing" ] && { [ -z "$want" ] || [ "$got" = "$want" ]; }; then
		echo "ok   bank/$file exit $rc ${want:-} ${kinds:-}"
		passed=$((passed + 1))
	else
		echo "FAIL bank/$file: want exit $want_rc ${want:-} ${kinds:-}, got exit $rc '$got'${missing:+, not reported:$missing}"
		printf '%s\n' "$out" | head -n 20 | sed 's/^/    /'
		failed=$((failed + 1))
	fi
done <"$bank/expected.txt"

if [ ! -d "$data" ]; then
	echo "no test data at $data"
	echo "$passed passed, $((failed + 1)) failed"
	exit 1
fi
for dir in jepsen-etcd kv; do
	verdicts=$data/$dir/verdicts.txt
	if [ ! -f "$verdicts" ]; then
		echo "FAIL $dir: no verdicts.txt"
		failed=$((failed + 1))
		continue
	fi
	while read -r file want _; do
		[ -n "$file" ] || continue
		case $file in \#*) continue ;; esac
		start=$(date +%s%N)
		out=$(timeout -k 1 "$LIMIT" "$KEEL" check --timeout "$LIMIT" "$data/$dir/$file" 2>&1)
		rc=$?
		ms=$((($(date +%s%N) - start) / 1000000))
		total_ms=$((total_ms + ms))
		if [ "$ms" -gt "$max_ms" ]; then max_ms=$ms; max_file=$dir/$file; fi
		got=$(printf '%s\n' "$out" | head -n 1)
		case $got in
		linearizable) want_rc=0 ;;
		not-linearizable) want_rc=1 ;;
		*) want_rc=2 ;;
		esac
		if [ "$got" = "$want" ] && [ "$rc" -eq "$want_rc" ]; then
			echo "ok   $dir/$file $got (${ms} ms)"
			passed=$((passed + 1))
		else
			[ "$rc" -eq 124 ] && got="timed out after ${LIMIT}s"
			echo "FAIL $dir/$file: want $want, got '$got' (exit $rc, ${ms} ms)"
			printf '%s\n' "$out" | head -n 20 | sed 's/^/    /'
			failed=$((failed + 1))
		fi
	done <"$verdicts"
done
echo "slowest: $max_file ${max_ms} ms; total ${total_ms} ms"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
