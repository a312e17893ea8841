#!/usr/bin/env bash
# The e2e suite for tools/suites.sh: runs pytest over tests/e2e with
# /usr/bin/python3 (Debian's redis-py and pytest) against build/keel, and
# prints pytest's counts as the "N passed, M failed" line run_counted reads.
# Exit status is pytest's: any failure or error fails the suite.
set -u
cd "$(dirname "$0")"
BUILD=${BUILD:-build}
export KEEL_BIN=${KEEL_BIN:-$(cd ../.. && pwd)/$BUILD/keel}
if [ ! -x "$KEEL_BIN" ]; then
	echo "e2e: $KEEL_BIN missing (make first)"; echo "0 passed, 1 failed"; exit 1
fi
out=$(timeout 420 /usr/bin/python3 -m pytest -q -p no:cacheprovider . 2>&1)
rc=$?
echo "$out"
p=$(echo "$out" | grep -Eo '[0-9]+ passed' | tail -n 1 | awk '{print $1}')
f=$(echo "$out" | grep -Eo '[0-9]+ (failed|error|errors)' | awk '{s+=$1} END {print s+0}')
p=${p:-0}
if [ $rc -ne 0 ] && [ "$f" = 0 ]; then f=1; fi
echo "$p passed, $f failed"
exit $rc
