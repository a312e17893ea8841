#!/usr/bin/env bash
# run-testdata.sh -- runs `keel check` (the release build) on every history
# listed in the shared test data's verdicts.txt files and compares with the
# known verdict. Each file gets LIMIT seconds (default 5), enforced with
# timeout(1) as well as --timeout; a file that is too slow fails. Prints one
# line per file and closes with "N passed, M failed"; exits non-zero on any
# mismatch.
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
if [ ! -d "$data" ]; then
	echo "no test data at $data"
	echo "0 passed, 1 failed"
	exit 1
fi
if [ ! -x "$KEEL" ]; then
	make --no-print-directory "$KEEL" >/dev/null || { echo "cannot build $KEEL"; echo "0 passed, 1 failed"; exit 1; }
fi

passed=0
failed=0
total_ms=0
max_ms=0
max_file=
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
