#!/usr/bin/env bash
# bench/selftest.sh -- checks bench/compare.sh itself, in about a minute,
# without measuring anything worth recording: the keel runs go to
# bench/fake-keel.py (a stand-in that takes keel server's flags), the Redis
# run uses tiny request counts. It checks that the script
#   - skips keel clearly when `keel server` does not exist, and fails then
#     only with BENCH_REQUIRE_KEEL=1;
#   - refuses bad settings with a message and exit 2;
#   - finds the leader through INFO raft and records every run;
#   - reports a run whose requests get errors as FAILED, exit 1;
#   - stops the client at once when a server dies mid-run (FAILED);
#   - stops every process it started on SIGINT (the whole process group,
#     as Ctrl-C does) and SIGTERM, and removes its data directory.
# Needs what tools/deps-bench.sh installs (redis-benchmark, redis-server).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$root/$BUILD ;; esac
export BUILD
PY=/usr/bin/python3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-selftest.XXXXXX") || exit 1
# A broken compare.sh must not leave the stand-in nodes behind: every pid
# they wrote (kept in pids/ and seen/) is stopped here at the end.
reap() {
	local f p
	for f in "$tmp"/pids/node-*.pid "$tmp"/seen/*.pid; do
		[ -f "$f" ] || continue
		p=$(cat "$f")
		kill -0 "$p" 2>/dev/null && { echo "selftest: stopping leaked node pid $p"; kill "$p"; }
	done
	# and a redis-server compare.sh started: its working directory is
	# under build/bench/run.* (redis-server chdirs to --dir).
	for p in $(pgrep -x redis-server); do
		case $(readlink "/proc/$p/cwd" 2>/dev/null) in
		"$BUILD"/bench/run.*) echo "selftest: stopping leaked redis-server pid $p"; kill "$p" ;;
		esac
	done
	rm -rf "$tmp"
}
trap reap EXIT
pass=0
fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); [ -n "${2:-}" ] && sed 's/^/     | /' "$2" | tail -n 15; }

# Runs compare.sh (bounded), output to $tmp/out; sets rc.
run() {
	timeout -k 5 120 "$root/bench/compare.sh" >"$tmp/out" 2>&1
	rc=$?
}
# Every pid a fake node wrote must be gone.
nodes_gone() {
	local f p
	for f in "$tmp"/pids/node-*.pid; do
		[ -f "$f" ] || continue
		p=$(cat "$f")
		kill -0 "$p" 2>/dev/null && return 1
	done
	return 0
}
no_run_dirs() { ! ls -d "$BUILD"/bench/run.* >/dev/null 2>&1; }

mkdir -p "$tmp/pids" "$tmp/seen"
next_case() { # keep the pids of earlier cases for reap
	local f
	for f in "$tmp"/pids/node-*.pid; do
		[ -f "$f" ] && mv "$f" "$tmp/seen/$RANDOM-$(basename "$f")"
	done
}
printf '#!/bin/sh\necho "keel: unknown command '"'"'$1'"'"'" >&2\nexit 2\n' >"$tmp/keel-old"
chmod +x "$tmp/keel-old"
export FAKE_KEEL_PIDDIR=$tmp/pids
rm -rf "$BUILD"/bench/run.*

# 1. no `keel server` yet: skipped, exit 0; required: exit 1.
KEEL=$tmp/keel-old BENCH_SYSTEMS=keel run
if [ $rc = 0 ] && grep -q 'keel: SKIPPED' "$tmp/out" && grep -q 'keel was NOT benchmarked' "$tmp/out"; then
	ok "keel without 'server' is skipped, exit 0"
else
	bad "keel without 'server' is skipped, exit 0 (rc $rc)" "$tmp/out"
fi
KEEL=$tmp/keel-old BENCH_SYSTEMS=keel BENCH_REQUIRE_KEEL=1 run
if [ $rc = 1 ] && grep -q 'BENCH_REQUIRE_KEEL=1: failing' "$tmp/out"; then
	ok "BENCH_REQUIRE_KEEL=1 makes the skip an error"
else
	bad "BENCH_REQUIRE_KEEL=1 makes the skip an error (rc $rc)" "$tmp/out"
fi

# 2. bad settings.
BENCH_N=12x run
if [ $rc = 2 ] && grep -q 'positive integers' "$tmp/out"; then ok "BENCH_N=12x refused"; else bad "BENCH_N=12x refused (rc $rc)" "$tmp/out"; fi
BENCH_SYSTEMS="keel mysql" run
if [ $rc = 2 ] && grep -q "unknown system 'mysql'" "$tmp/out"; then ok "unknown system refused"; else bad "unknown system refused (rc $rc)" "$tmp/out"; fi

# 3. leader found (node 2 says raft_role:leader), every run recorded, with Redis beside it.
KEEL=$root/bench/fake-keel.py FAKE_KEEL_LEADER=2 BENCH_SYSTEMS="keel redis" BENCH_N=300 run
rows=$(awk '$1 == "keel"' "$BUILD/bench/last-results.txt" 2>/dev/null | wc -l)
if [ $rc = 0 ] && grep -q 'leader: node 2 ' "$tmp/out" && [ "$rows" = 8 ] &&
	grep -Eq 'keel SET c64 / Redis-always SET c64 +[0-9]+\.[0-9]+x' "$tmp/out"; then
	ok "leader found through INFO raft, 8 keel rows, keel/Redis ratio printed"
else
	bad "leader found through INFO raft, 8 keel rows, keel/Redis ratio printed (rc $rc, $rows rows)" "$tmp/out"
fi
if nodes_gone && no_run_dirs; then ok "after a run: every node stopped, data removed"; else bad "after a run: every node stopped, data removed"; fi

# 4. errors in the replies: the run is FAILED, exit 1.
next_case
KEEL=$root/bench/fake-keel.py FAKE_KEEL_LEADER=1 FAKE_KEEL_MODE=err BENCH_SYSTEMS=keel BENCH_N=300 run
if [ $rc = 1 ] && grep -q 'keel -c 1 -P 1: FAILED' "$tmp/out" && grep -q '^FAILED: keel -c 1 -P 1' "$tmp/out"; then
	ok "error replies make the run FAILED, exit 1"
else
	bad "error replies make the run FAILED, exit 1 (rc $rc)" "$tmp/out"
fi

# 5. the leader dies in the middle of a run: the client is stopped at once
# (redis-benchmark would retry forever), the run is FAILED, exit 1.
next_case
start=$SECONDS
KEEL=$root/bench/fake-keel.py FAKE_KEEL_LEADER=1 FAKE_KEEL_MODE=die BENCH_SYSTEMS=keel BENCH_N=300 run
if [ $rc = 1 ] && grep -q 'exited during the run' "$tmp/out" && grep -q '^FAILED: keel -c 1 -P 1' "$tmp/out" &&
	[ $((SECONDS - start)) -lt 60 ] && nodes_gone; then
	ok "a node dying mid-run stops the client, FAILED, exit 1 ($((SECONDS - start)) s)"
else
	bad "a node dying mid-run stops the client, FAILED, exit 1 (rc $rc, $((SECONDS - start)) s)" "$tmp/out"
fi

# 6. SIGINT to the process group (Ctrl-C) and SIGTERM to the script, in
# the middle of a long benchmark run.
for sig in SIGINT SIGTERM; do
	next_case
	KEEL=$root/bench/fake-keel.py FAKE_KEEL_LEADER=1 BENCH_SYSTEMS=keel BENCH_N=5000000 \
		"$PY" - "$sig" "$root/bench/compare.sh" "$tmp/pids" >"$tmp/out" 2>&1 <<'EOF'
import os, signal, subprocess, sys, time
sig, script, piddir = getattr(signal, sys.argv[1]), sys.argv[2], sys.argv[3]
# A fresh process group with SIGINT at its default, as in a terminal.
p = subprocess.Popen([script], start_new_session=True,
                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
deadline = time.time() + 30
while len(os.listdir(piddir)) < 3 and time.time() < deadline:
    time.sleep(0.1)
time.sleep(1.5)  # redis-benchmark is running now
t0 = time.time()
if sig == signal.SIGINT:
    os.killpg(p.pid, sig)
else:
    os.kill(p.pid, sig)
try:
    rc = p.wait(timeout=20)
except subprocess.TimeoutExpired:
    os.killpg(p.pid, signal.SIGKILL)
    rc = "hung"
print("exit", rc, "after %.1f s" % (time.time() - t0))
EOF
	want=130
	[ $sig = SIGTERM ] && want=143
	if grep -q "^exit $want after" "$tmp/out" && nodes_gone && no_run_dirs &&
		! pgrep -f -- "-p [0-9]+ -t set,get .* -n 5000000" >/dev/null; then
		ok "$sig: exit $want, every node and redis-benchmark stopped, data removed ($(grep '^exit' "$tmp/out"))"
	else
		bad "$sig: exit $want, every node and redis-benchmark stopped, data removed" "$tmp/out"
	fi
done

echo "bench selftest: $pass passed, $fail failed"
[ $fail = 0 ]
