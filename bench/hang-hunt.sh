#!/usr/bin/env bash
# bench/hang-hunt.sh -- bounded loops of `redis-benchmark -c 1` against a
# 3-node keel cluster started the way bench/compare.sh starts it, to catch
# a request that never gets a reply (docs/benchmarks.md, "the -c 1 hang").
#
#   KEEL=build/keel HUNT_LOOPS=10 HUNT_N=20000 HUNT_TARGET=leader bench/hang-hunt.sh
#
# HUNT_TARGET: leader (default) or follower; HUNT_CLIENTS: redis-benchmark
# -c (default 1; the node batching counters printed at the end are more
# telling with more). Each loop is bounded by
# HUNT_TIMEOUT seconds (default 120; a loop normally takes 10-20 s). When
# a loop times out, INFO from every node is saved beside the node logs and
# the script goes on with the next loop. Data and logs stay in
# build/bench/hunt.* (the data directories are removed at the end unless
# HUNT_KEEP=1). Only the processes started here are stopped, by PID.
# Exit status: 0 if every loop finished, 1 if any hung or failed.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
KEEL=${KEEL:-$root/build/keel}
LOOPS=${HUNT_LOOPS:-10}
N=${HUNT_N:-20000}
TMO=${HUNT_TIMEOUT:-120}
TARGET=${HUNT_TARGET:-leader}
C=${HUNT_CLIENTS:-1}
PY=/usr/bin/python3
for v in "$LOOPS" "$N" "$TMO" "$C"; do
	case $v in '' | *[!0-9]*) echo "hang-hunt: HUNT_LOOPS, HUNT_N, HUNT_TIMEOUT, HUNT_CLIENTS must be positive integers" >&2; exit 2 ;; esac
	[ "$v" -gt 0 ] && [ "$v" -le 1000000 ] || { echo "hang-hunt: numbers must be 1..1000000" >&2; exit 2; }
done
case $TARGET in leader | follower) ;; *) echo "hang-hunt: HUNT_TARGET is leader or follower" >&2; exit 2 ;; esac
[ -x "$KEEL" ] || { echo "hang-hunt: $KEEL not built" >&2; exit 2; }

PIDS=()
mkdir -p "$root/build/bench"
DIR=$(mktemp -d "$root/build/bench/hunt.XXXXXX") || exit 2
cleanup() {
	trap - EXIT INT TERM
	local p i
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for ((i = 0; i < 50; i++)); do
		local alive=0
		for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
		[ $alive = 0 ] && break
		sleep 0.1
	done
	for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	[ "${HUNT_KEEP:-0}" = 1 ] || rm -rf "$DIR"/keel-?
	echo "hang-hunt: logs in $DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

read -r -a ports <<<"$("$PY" -c '
import socket
ss = [socket.socket() for _ in range(6)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')"
cluster=""
for i in 1 2 3; do cluster+="${cluster:+,}$i=127.0.0.1:${ports[$((i + 2))]}"; done
for i in 1 2 3; do
	"$KEEL" server --id "$i" --data-dir "$DIR/keel-$i" --client-addr "127.0.0.1:${ports[$((i - 1))]}" \
		--cluster "$cluster" --cluster-id 7302 </dev/null >"$DIR/keel-$i.log" 2>&1 &
	PIDS+=("$!")
done
for ((i = 0; i < 300; i++)); do
	[ "$(timeout 5 redis-cli -h 127.0.0.1 -p "${ports[0]}" SET hunt:ready 1 2>/dev/null)" = OK ] && break
	sleep 0.1
done
[ $i -lt 300 ] || { echo "hang-hunt: no write succeeded within 30 s"; exit 1; }

role_of() { timeout 5 redis-cli -h 127.0.0.1 -p "${ports[$(($1 - 1))]}" INFO raft 2>/dev/null | tr -d '\r' | awk -F: '$1 == "raft_role" { print $2 }'; }
bad=0
for ((l = 1; l <= LOOPS; l++)); do
	node=
	for i in 1 2 3; do
		r=$(role_of $i)
		if [ "$TARGET" = leader ] && [ "$r" = leader ]; then node=$i; fi
		if [ "$TARGET" = follower ] && [ "$r" = follower ] && [ -z "$node" ]; then node=$i; fi
	done
	node=${node:-1}
	t0=$(date +%s.%N)
	timeout -k 5 "$TMO" redis-benchmark -h 127.0.0.1 -p "${ports[$((node - 1))]}" -c "$C" -n "$N" -t set -d 256 --csv \
		>"$DIR/loop-$l.csv" 2>"$DIR/loop-$l.err"
	rc=$?
	t1=$(date +%s.%N)
	secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
	ops=$(awk -F, '{ gsub(/"/, "") } $1 == "SET" { print $2 }' "$DIR/loop-$l.csv")
	echo "loop $l: node $node ($TARGET) exit $rc in ${secs}s, SET ${ops:-?}/s, load $(cut -d' ' -f1 /proc/loadavg)"
	if [ $rc -ne 0 ] || grep -qiE 'error' "$DIR/loop-$l.err" "$DIR/loop-$l.csv"; then
		bad=1
		for i in 1 2 3; do
			timeout 5 redis-cli -h 127.0.0.1 -p "${ports[$((i - 1))]}" INFO everything >"$DIR/loop-$l-info-$i.txt" 2>&1
		done
		echo "   loop $l FAILED or HUNG: $(head -c 300 "$DIR/loop-$l.err"); INFO saved as $DIR/loop-$l-info-*.txt"
	fi
	for p in "${PIDS[@]}"; do
		kill -0 "$p" 2>/dev/null || { echo "hang-hunt: server pid $p exited"; exit 1; }
	done
done
for i in 1 2 3; do
	echo "node $i ($(role_of $i)): $(timeout 5 redis-cli -h 127.0.0.1 -p "${ports[$((i - 1))]}" INFO stats 2>/dev/null |
		tr -d '\r' | grep -E '^(node_batch|node_batched|wal_writes|wal_syncs|wal_max_batch|node_replies)' | tr '\n' ' ')"
done
exit $bad
