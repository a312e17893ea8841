#!/usr/bin/env bash
# The Jepsen-style suites for tools/suites.sh and `make jepsen`:
#   tests/jepsen/run.sh short|long
# runs tests/jepsen/suite.py with /usr/bin/python3 (Debian's redis-py)
# against build/keel; the suite prints one line per run and closes with the
# "N passed, M failed" line run_counted reads. Exit status is the suite's.
# KEEL_JEPSEN_NET=auto|netns|debug picks how partitions are made (auto: netns
# when root and namespaces work; the suite's first line says which).
set -u
cd "$(dirname "$0")"
BUILD=${BUILD:-build}
export KEEL_BIN=${KEEL_BIN:-$(cd ../.. && pwd)/$BUILD/keel}
if [ ! -x "$KEEL_BIN" ]; then
	echo "jepsen: $KEEL_BIN missing (make first)"; echo "0 passed, 1 failed"; exit 1
fi
which=${1:-short}
# Bounded: the short suite takes about 5 minutes, the long one about 27.
limit=600
[ "$which" = long ] && limit=2400
timeout --kill-after=30 $limit /usr/bin/python3 suite.py "$which"
rc=$?
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
	echo "jepsen: the $which suite did not finish within ${limit}s"; echo "0 passed, 1 failed"
fi
exit $rc
