#!/usr/bin/env bash
# bench/compare.sh -- keel vs Redis (appendfsync always) vs etcd 3.4, side
# by side in one run on this machine (`make bench`). docs/benchmarks.md
# ("Side by side") says what is measured and records the figures.
#
#   keel   3 `build/keel server` processes (fsync on), redis-benchmark
#          -t set,get -d 256 -n $BENCH_N at -c 1, -c 16, -c 64, -c 16 -P 16
#          against the leader
#   redis  one redis-server, appendonly yes, appendfsync always, the same
#          redis-benchmark runs
#   etcd   3 etcd members, etcd's own tools/benchmark (bench/etcd-
#          benchmark.sh) with --target-leader: put --key-size=8
#          --val-size=256 at 1, 16, 64 clients (as many connections), and
#          range KEY --consistency=l at 64 clients
#
# Then the ratios issue 5 asks for. Servers listen on 127.0.0.1 only, on
# ports found free; data lives in a fresh directory on the build disk (not
# a tmpfs: fsync must cost what it costs); every process started here is
# stopped by its PID on exit, Ctrl-C or SIGTERM; every wait is bounded.
#
# Environment:
#   BENCH_SYSTEMS      which to run (default "keel redis etcd")
#   BENCH_REQUIRE_KEEL 1: exit non-zero when keel cannot be benchmarked
#                      (default: say so clearly and go on without it)
#   BENCH_N            redis-benchmark -n (default 100000)
#   BENCH_ETCD_TOTAL   etcd puts/ranges per run at 16 and 64 clients
#                      (default 100000); at 1 client a tenth of it
#   BENCH_TIMEOUT      seconds for any one benchmark run (default 600)
#   BENCH_KEEP         1: keep the data and logs directory
#   KEEL               the keel binary (default $BUILD/keel)
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$root/$BUILD ;; esac
KEEL=${KEEL:-$BUILD/keel}
SYSTEMS=${BENCH_SYSTEMS:-keel redis etcd}
N=${BENCH_N:-100000}
ETCD_TOTAL=${BENCH_ETCD_TOTAL:-100000}
TMO=${BENCH_TIMEOUT:-600}
PY=/usr/bin/python3

for v in "$N" "$ETCD_TOTAL" "$TMO"; do
	case $v in '' | *[!0-9]*) echo "compare: BENCH_N, BENCH_ETCD_TOTAL and BENCH_TIMEOUT must be positive integers" >&2; exit 2 ;; esac
	[ "$v" -gt 0 ] || { echo "compare: BENCH_N, BENCH_ETCD_TOTAL and BENCH_TIMEOUT must be positive integers" >&2; exit 2; }
done
for s in $SYSTEMS; do
	case $s in keel | redis | etcd) ;; *) echo "compare: unknown system '$s' in BENCH_SYSTEMS (keel, redis, etcd)" >&2; exit 2 ;; esac
done
want() { case " $SYSTEMS " in *" $1 "*) return 0 ;; esac; return 1; }

# ---- processes: every PID we start, stopped on any exit ----------------------

PIDS=()    # every process started here and still to stop
SERVERS=() # the servers among them
RUN_DIR=
# SIGTERM to every PID at once (newest first: clients before the servers
# they talk to), up to 5 s for all of them, then SIGKILL to what is left.
# An etcd leader that gets SIGTERM first hands its leadership to a peer
# and waits for that up to 7 s even when the peers are gone, so the etcd
# run usually ends with one member killed: expected, its data is thrown
# away.
stop_all() {
	local p i alive rev=()
	for p in "${PIDS[@]}"; do
		rev=("$p" "${rev[@]}")
	done
	for p in "${rev[@]}"; do
		kill -TERM "$p" 2>/dev/null
	done
	for ((i = 0; i < 50; i++)); do
		alive=0
		for p in "${rev[@]}"; do
			kill -0 "$p" 2>/dev/null && alive=1
		done
		[ $alive = 0 ] && break
		sleep 0.1
	done
	for p in "${rev[@]}"; do
		if kill -0 "$p" 2>/dev/null; then
			echo "   (pid $p, $(ps -o comm= -p "$p"), still running 5 s after SIGTERM: SIGKILL)"
			kill -KILL "$p" 2>/dev/null
		fi
		wait "$p" 2>/dev/null
	done
	PIDS=()
	SERVERS=()
}
cleanup() {
	trap - EXIT INT TERM
	stop_all
	if [ -n "$RUN_DIR" ] && [ -d "$RUN_DIR" ]; then
		if [ "${BENCH_KEEP:-0}" = 1 ]; then
			echo "compare: data and logs kept in $RUN_DIR"
		else
			rm -rf "$RUN_DIR"
		fi
	fi
}
trap cleanup EXIT
trap 'echo "compare: interrupted" >&2; exit 130' INT
trap 'echo "compare: terminated" >&2; exit 143' TERM

# Runs a client in the background, stdout and stderr to files, bounded by
# $TMO, and polls it: a trapped signal is handled within 0.2 s, and when a
# server started here dies the client is stopped at once (redis-benchmark
# retries a lost server forever). Returns the client's status; 124 is a
# timeout, 125 a server that died.
run_bounded() { # out err cmd...
	local out=$1 err=$2 p rc=0 s dead=
	shift 2
	timeout -k 5 "$TMO" "$@" >"$out" 2>"$err" &
	p=$!
	PIDS+=("$p")
	while kill -0 "$p" 2>/dev/null; do
		for s in "${SERVERS[@]}"; do
			kill -0 "$s" 2>/dev/null || dead=$s
		done
		if [ -n "$dead" ]; then
			echo "   server pid $dead exited during the run: stopping the client" | tee -a "$err"
			kill -TERM "$p" 2>/dev/null
			wait "$p" 2>/dev/null
			rc=125
			break
		fi
		sleep 0.2
	done
	if [ -z "$dead" ]; then
		wait "$p"
		rc=$?
	fi
	PIDS=("${PIDS[@]:0:${#PIDS[@]}-1}")
	return $rc
}

# Starts a server in the background; its output goes to a log file.
start_bg() { # log cmd...
	local log=$1
	shift
	"$@" </dev/null >"$log" 2>&1 &
	PIDS+=("$!")
	SERVERS+=("$!")
}

# n free TCP ports on 127.0.0.1 (bound at once, then released).
free_ports() {
	"$PY" - "$1" <<'EOF'
import socket, sys
ss = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    ss.append(s)
print(" ".join(str(s.getsockname()[1]) for s in ss))
EOF
}

# ---- results -----------------------------------------------------------------

# One line per measurement in $RES: system test clients pipeline ops p50 p99
RES=
record() { echo "$*" >>"$RES"; }
lookup() { # system test clients pipeline -> ops/s or ""
	awk -v s="$1" -v t="$2" -v c="$3" -v p="$4" \
		'$1 == s && $2 == t && $3 == c && $4 == p { print $5; exit }' "$RES"
}
FAILED=()

# ---- setup -------------------------------------------------------------------

# The 1-, 5- and 15-minute load averages: other work on the machine.
load() { cut -d' ' -f1-3 /proc/loadavg; }
echo "== bench/compare.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(load)"
"$root/tools/deps-bench.sh" || { echo "compare: dependencies missing (tools/deps-bench.sh)" >&2; exit 1; }
[ -x "$PY" ] || { echo "compare: $PY missing" >&2; exit 1; }

mkdir -p "$BUILD/bench"
RUN_DIR=$(mktemp -d "$BUILD/bench/run.XXXXXX") || exit 1
RES=$RUN_DIR/results.txt
: >"$RES"
echo "   data and logs under $RUN_DIR ($(df -T "$RUN_DIR" | awk 'NR == 2 { print $2 }'))"

# ---- redis-benchmark, shared by keel and Redis ---------------------------------

# The four runs on one endpoint, each recorded as SET and GET rows.
redis_bench_all() { # system port
	local sys=$1 port=$2 c p tag rc
	for cp in "1 1" "16 1" "64 1" "16 16"; do
		set -- $cp
		c=$1 p=$2
		tag=$sys-c$c-P$p
		run_bounded "$RUN_DIR/$tag.csv" "$RUN_DIR/$tag.err" \
			redis-benchmark -h 127.0.0.1 -p "$port" -t set,get -d 256 \
			-n "$N" -c "$c" -P "$p" --csv
		rc=$?
		# redis-benchmark goes on after some errors; any error text
		# makes the run count as failed.
		if [ $rc -ne 0 ] || grep -qiE 'error|could not connect' "$RUN_DIR/$tag.err" "$RUN_DIR/$tag.csv"; then
			echo "   $sys -c $c -P $p: FAILED (exit $rc): $(grep -hiE -m1 'error|could not connect|exited' "$RUN_DIR/$tag.err" "$RUN_DIR/$tag.csv" | cut -c1-200)"
			FAILED+=("$sys -c $c -P $p")
			continue
		fi
		# "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
		awk -F, -v s="$sys" -v c="$c" -v p="$p" '
			{ gsub(/"/, "") }
			$1 == "SET" || $1 == "GET" { printf "%s %s %s %s %.0f %s %s\n", s, $1, c, p, $2, $5, $7 }
		' "$RUN_DIR/$tag.csv" >>"$RES"
		echo "   $sys -c $c -P $p: $(awk -v s="$sys" -v c="$c" -v p="$p" '$1 == s && $3 == c && $4 == p { printf "%s %s/s  ", $2, $5 }' "$RES")"
	done
}

wait_pong() { # port seconds
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		[ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$1" PING 2>/dev/null)" = PONG ] && return 0
		sleep 0.1
	done
	return 1
}

# ---- keel --------------------------------------------------------------------

run_keel() {
	echo "== keel: 3-node cluster, fsync on ($KEEL; load $(load))"
	if [ ! -x "$KEEL" ]; then
		echo "   keel: SKIPPED: $KEEL not built (make)"
		return 1
	fi
	# The server's --help lists its flags; a keel without the subcommand
	# says "unknown command" instead (whatever either exits with).
	if ! timeout 10 "$KEEL" server --help 2>&1 | grep -q -- '--cluster'; then
		echo "   keel: SKIPPED: '$KEEL server' does not exist yet (the server is being written on branch"
		echo "         'server'); no keel figures and no keel ratios in this run"
		return 1
	fi
	local ports cl pp i cluster="" leader="" role
	read -r -a ports <<<"$(free_ports 6)"
	for i in 1 2 3; do
		cluster+="${cluster:+,}$i=127.0.0.1:${ports[$((i + 2))]}"
	done
	for i in 1 2 3; do
		cl=${ports[$((i - 1))]}
		start_bg "$RUN_DIR/keel-$i.log" "$KEEL" server --id "$i" \
			--data-dir "$RUN_DIR/keel-$i" --client-addr "127.0.0.1:$cl" \
			--cluster "$cluster" --cluster-id 7301
	done
	for i in 1 2 3; do
		if ! wait_pong "${ports[$((i - 1))]}" 30; then
			echo "   keel: node $i did not answer PING within 30 s; log tail:"
			tail -n 5 "$RUN_DIR/keel-$i.log" | sed 's/^/     /'
			return 2
		fi
	done
	# A write succeeds once a leader is elected; then find the leader
	# (INFO raft role) so that, like etcd's --target-leader, the clients
	# talk to it and nothing is forwarded.
	for ((i = 0; i < 300; i++)); do
		[ "$(timeout 5 redis-cli -h 127.0.0.1 -p "${ports[0]}" SET bench:ready 1 2>/dev/null)" = OK ] && break
		sleep 0.1
	done
	if [ $i -ge 300 ]; then
		echo "   keel: no successful write within 30 s (no leader?)"
		return 2
	fi
	for i in 1 2 3; do
		role=$(timeout 5 redis-cli -h 127.0.0.1 -p "${ports[$((i - 1))]}" INFO raft 2>/dev/null |
			tr -d '\r' | awk -F: '$1 ~ /(^|_)role$/ { print $2; exit }')
		[ "$role" = leader ] && leader=$i
	done
	if [ -z "$leader" ]; then
		echo "   keel: leader not found in INFO raft; benchmarking node 1"
		leader=1
	fi
	echo "   leader: node $leader (127.0.0.1:${ports[$((leader - 1))]})"
	redis_bench_all keel "${ports[$((leader - 1))]}"
	stop_all
	return 0
}

# ---- Redis ---------------------------------------------------------------------

run_redis() {
	echo "== redis: $(redis-server --version | awk '{ print $3 }'), appendonly yes, appendfsync always (load $(load))"
	local port
	port=$(free_ports 1)
	mkdir -p "$RUN_DIR/redis"
	start_bg "$RUN_DIR/redis.log" redis-server --port "$port" --bind 127.0.0.1 \
		--dir "$RUN_DIR/redis" --appendonly yes --appendfsync always \
		--save "" --daemonize no
	if ! wait_pong "$port" 30; then
		echo "   redis: no PONG within 30 s; log tail:"
		tail -n 5 "$RUN_DIR/redis.log" | sed 's/^/     /'
		return 2
	fi
	if [ "$(redis-cli -h 127.0.0.1 -p "$port" CONFIG GET appendfsync | tail -n 1)" != always ]; then
		echo "   redis: appendfsync is not 'always'"
		return 2
	fi
	redis_bench_all redis "$port"
	stop_all
	return 0
}

# ---- etcd ----------------------------------------------------------------------

# etcd benchmark's summary: "Requests/sec:", "50% in X secs", "99% in X secs".
etcd_parse() { # file system test clients
	awk -v s="$2" -v t="$3" -v c="$4" '
		/Requests\/sec:/ { ops = $2 }
		/ 50% in / { p50 = $3 * 1000 }
		/ 99% in / { p99 = $3 * 1000 }
		END { if (ops != "") printf "%s %s %s 1 %.0f %.3f %.3f\n", s, t, c, ops, p50, p99 }
	' "$1"
}

etcd_run() { # test clients total args...
	local t=$1 c=$2 tot=$3 tag rc line
	shift 3
	tag=etcd-$t-c$c
	run_bounded "$RUN_DIR/$tag.out" "$RUN_DIR/$tag.err" "$EB" \
		--endpoints="$ETCD_EPS" --target-leader --conns="$c" --clients="$c" "$@" --total="$tot"
	rc=$?
	line=$(etcd_parse "$RUN_DIR/$tag.out" etcd "$t" "$c")
	if [ $rc -ne 0 ] || [ -z "$line" ] || grep -q 'Error distribution' "$RUN_DIR/$tag.out"; then
		echo "   etcd $t --clients $c: FAILED (exit $rc): $(grep -h -m1 -iE 'error|failed' "$RUN_DIR/$tag.err" "$RUN_DIR/$tag.out" | cut -c1-200)"
		FAILED+=("etcd $t --clients $c")
		return 1
	fi
	echo "$line" >>"$RES"
	echo "   etcd $t --clients $c (--total $tot): $(echo "$line" | awk '{ print $5 }')/s"
}

run_etcd() {
	echo "== etcd: $(etcd --version 2>/dev/null | awk '/etcd Version/ { print $3 }'), 3 members (load $(load))"
	EB=$("$root/bench/etcd-benchmark.sh") || { echo "   etcd: benchmark tool did not build"; return 2; }
	local ports i cl pp initial="" eps="" ok
	read -r -a ports <<<"$(free_ports 6)"
	for i in 1 2 3; do
		initial+="${initial:+,}m$i=http://127.0.0.1:${ports[$((i + 2))]}"
		eps+="${eps:+,}127.0.0.1:${ports[$((i - 1))]}"
	done
	ETCD_EPS=$eps
	for i in 1 2 3; do
		cl=${ports[$((i - 1))]}
		pp=${ports[$((i + 2))]}
		start_bg "$RUN_DIR/etcd-$i.log" etcd --name "m$i" --data-dir "$RUN_DIR/etcd-$i" \
			--listen-client-urls "http://127.0.0.1:$cl" --advertise-client-urls "http://127.0.0.1:$cl" \
			--listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
			--initial-cluster "$initial" --initial-cluster-token "keel-bench-$$" \
			--initial-cluster-state new
	done
	for i in 1 2 3; do
		ok=0
		for ((j = 0; j < 300; j++)); do
			if timeout 2 curl -fs "http://127.0.0.1:${ports[$((i - 1))]}/health" 2>/dev/null | grep -q '"health":"true"'; then
				ok=1
				break
			fi
			sleep 0.1
		done
		if [ $ok = 0 ]; then
			echo "   etcd: member $i not healthy within 30 s; log tail:"
			tail -n 5 "$RUN_DIR/etcd-$i.log" | sed 's/^/     /'
			return 2
		fi
	done
	etcd_run put 1 $((ETCD_TOTAL / 10 > 0 ? ETCD_TOTAL / 10 : 1)) put --key-size=8 --val-size=256
	etcd_run put 16 "$ETCD_TOTAL" put --key-size=8 --val-size=256
	etcd_run put 64 "$ETCD_TOTAL" put --key-size=8 --val-size=256
	# The puts wrote one binary key (key-space-size 1); range reads a
	# plain key "foo" (base64 Zm9v) with a 256-byte value, written here.
	timeout 10 curl -fs -X POST "http://127.0.0.1:${ports[0]}/v3/kv/put" \
		-d '{"key":"Zm9v","value":"'"$(head -c 256 /dev/zero | tr '\0' x | base64 -w0)"'"}' >/dev/null
	etcd_run range-l 64 "$ETCD_TOTAL" range foo --consistency=l
	stop_all
	return 0
}

# ---- run ---------------------------------------------------------------------

keel_rc=0
if want keel; then
	run_keel
	keel_rc=$?
	stop_all
	[ $keel_rc = 2 ] && FAILED+=("keel cluster")
fi
if want redis; then
	run_redis || FAILED+=("redis server")
	stop_all
fi
if want etcd; then
	run_etcd || FAILED+=("etcd cluster")
	stop_all
fi

# ---- table and ratios ------------------------------------------------------------

echo
echo "== results ($(date -u '+%Y-%m-%d %H:%M UTC'), load $(load); $N redis-benchmark requests per test, 256-byte values; etcd 8-byte keys, 256-byte values)"
printf '%-6s %-8s %7s %8s %12s %9s %9s\n' system test clients pipeline ops/s p50_ms p99_ms
awk '{ printf "%-6s %-8s %7s %8s %12s %9s %9s\n", $1, $2, $3, $4, $5, $6, $7 }' "$RES"

ratio() { # label target a b
	local a=$3 b=$4
	if [ -z "$a" ] || [ -z "$b" ]; then
		printf '  %-44s %8s   (target %s)\n' "$1" n/a "$2"
	else
		awk -v l="$1" -v t="$2" -v a="$a" -v b="$b" \
			'BEGIN { printf "  %-44s %7.2fx   (target %s)\n", l, a / b, t }'
	fi
}
echo
echo "== ratios (same run)"
ratio "keel SET c64 / etcd put c64" ">= 3x" "$(lookup keel SET 64 1)" "$(lookup etcd put 64 1)"
ratio "keel SET c64 / Redis-always SET c64" ">= 0.5x" "$(lookup keel SET 64 1)" "$(lookup redis SET 64 1)"
ratio "keel SET c1 / etcd put c1" ">= 2x" "$(lookup keel SET 1 1)" "$(lookup etcd put 1 1)"
ratio "keel GET c64 / etcd linearizable range c64" ">= 5x" "$(lookup keel GET 64 1)" "$(lookup etcd range-l 64 1)"
echo "  for reference:"
ratio "Redis-always SET c64 / etcd put c64" "-" "$(lookup redis SET 64 1)" "$(lookup etcd put 64 1)"
ratio "Redis-always SET c1 / etcd put c1" "-" "$(lookup redis SET 1 1)" "$(lookup etcd put 1 1)"

cp "$RES" "$BUILD/bench/last-results.txt"
echo
echo "raw rows in $BUILD/bench/last-results.txt"
rc=0
if want keel && [ $keel_rc = 1 ]; then
	echo "keel was NOT benchmarked (see above)"
	[ "${BENCH_REQUIRE_KEEL:-0}" = 1 ] && { echo "BENCH_REQUIRE_KEEL=1: failing"; rc=1; }
fi
if [ ${#FAILED[@]} -gt 0 ]; then
	echo "FAILED: ${FAILED[*]}"
	rc=1
fi
exit $rc
