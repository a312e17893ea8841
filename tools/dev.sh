#!/usr/bin/env bash
# make dev: a local 3-node keel cluster on loopback.
#
# Data under ./dev/node{1,2,3} (kept between runs: a restart recovers from
# the WAL; `rm -rf dev` starts afresh). Client ports DEV_PORT_BASE+1..+3
# (default 7001-7003), peer ports DEV_PORT_BASE+101..+103 (7101-7103).
# Logs go to dev/node*.log. Ctrl-C (or SIGTERM to make) stops every node
# this script started, and only those.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KEEL=$BUILD/keel
BASE=${DEV_PORT_BASE:-7000}
DIR=${DEV_DIR:-dev}
case "$BASE" in ''|*[!0-9]*) echo "dev: DEV_PORT_BASE must be a number" >&2; exit 2;; esac
if [ "$BASE" -lt 1024 ] || [ "$BASE" -gt 65000 ]; then
	echo "dev: DEV_PORT_BASE must be in 1024..65000" >&2; exit 2
fi
[ -x "$KEEL" ] || { echo "dev: $KEEL is missing (run make)" >&2; exit 1; }
mkdir -p "$DIR"
cluster="1=127.0.0.1:$((BASE + 101)),2=127.0.0.1:$((BASE + 102)),3=127.0.0.1:$((BASE + 103))"
pids=()
stop() {
	trap - INT TERM EXIT
	if [ ${#pids[@]} -gt 0 ]; then
		echo
		echo "dev: stopping nodes (pids ${pids[*]})"
		kill -TERM "${pids[@]}" 2>/dev/null
		for _ in $(seq 1 50); do
			alive=0
			for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
			[ $alive = 0 ] && break
			sleep 0.1
		done
		for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
		wait 2>/dev/null
	fi
	exit 0
}
trap stop INT TERM EXIT
for i in 1 2 3; do
	"$KEEL" server --id $i --cluster-id 1 --data-dir "$DIR/node$i" \
		--client-addr 127.0.0.1:$((BASE + i)) --cluster "$cluster" \
		>>"$DIR/node$i.log" 2>&1 &
	pids+=($!)
done
sleep 0.5
for i in 0 1 2; do
	if ! kill -0 "${pids[$i]}" 2>/dev/null; then
		echo "dev: node $((i + 1)) failed to start; last lines of $DIR/node$((i + 1)).log:" >&2
		tail -n 5 "$DIR/node$((i + 1)).log" >&2
		stop
	fi
done
addrs="127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 2)),127.0.0.1:$((BASE + 3))"
echo "keel dev cluster: 3 nodes, data in $DIR/, logs in $DIR/node*.log"
for i in 1 2 3; do
	echo "  node $i  client 127.0.0.1:$((BASE + i))  peer 127.0.0.1:$((BASE + 100 + i))  pid ${pids[$((i - 1))]}"
done
echo "try:   redis-cli -p $((BASE + 1)) set hello world && redis-cli -p $((BASE + 2)) get hello"
echo "       $KEEL status --addr $addrs"
echo "Ctrl-C stops the cluster."
parent=$PPID
reported=(0 0 0)
while :; do
	# make may die of SIGTERM without passing it on: follow it.
	if ! kill -0 "$parent" 2>/dev/null; then
		echo "dev: parent $parent is gone" >&2
		stop
	fi
	gone=0
	for i in 0 1 2; do
		if ! kill -0 "${pids[$i]}" 2>/dev/null; then
			gone=$((gone + 1))
			# Said once per node, not every second.
			if [ "${reported[$i]}" = 0 ]; then
				reported[$i]=1
				echo "dev: node $((i + 1)) exited; see $DIR/node$((i + 1)).log" >&2
			fi
		fi
	done
	if [ $gone = 3 ]; then
		echo "dev: every node has exited; stopping" >&2
		pids=()
		trap - INT TERM EXIT
		exit 1
	fi
	sleep 1 &
	wait $! 2>/dev/null
done
