#!/usr/bin/python3
"""bench/txn_latency.py -- the latency of one SET, of MULTI + 10 SETs +
EXEC, of KEEL.TXN with 10 SETs, and of a session-tagged SET (KEEL.RUN), at
1 client against the leader of a 3-node cluster (fsync on), side by side
(issue 12 section 6: "EXEC of 10 SETs at 1 client costs at most 1.5x a
single SET's latency"). `make bench-txn`; docs/benchmarks.md records runs.

The four kinds run interleaved (round robin, one request of each per
round), so machine noise hits them alike. Prints per kind the median and
p99 in microseconds and the ratio of medians to SET.

Environment: KEEL_BIN (default build/keel), BENCH_TXN_N requests per kind
(default 2000), BENCH_TXN_ROUNDS (default 1: the whole run repeated, each
printed). Servers listen on 127.0.0.1 only; every process started is
stopped by its PID; every wait is bounded.
"""
import os
import shutil
import statistics
import sys
import tempfile
import time

import redis

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "lib"))
import keelproc  # noqa: E402

N = int(os.environ.get("BENCH_TXN_N", "2000"))
ROUNDS = int(os.environ.get("BENCH_TXN_ROUNDS", "1"))


def start_cluster(d):
    ports = keelproc.free_ports(6)
    members = ",".join("%d=127.0.0.1:%d" % (i + 1, ports[3 + i]) for i in range(3))
    procs = []
    for i in range(3):
        args = keelproc.server_args(i + 1, os.path.join(d, "n%d" % (i + 1)), members, 9,
                                    "127.0.0.1:%d" % ports[i])
        p, _log = keelproc.spawn(args, os.path.join(d, "n%d.log" % (i + 1)))
        procs.append(p)
    return procs, ports[:3]


def find_leader(ports, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for port in ports:
            try:
                c = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
                if c.info("raft").get("raft_role") == "leader":
                    return c
            except redis.exceptions.RedisError:
                pass
        time.sleep(0.05)
    raise SystemExit("bench-txn: no leader within %ss" % timeout)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def one_round(c):
    sid = c.execute_command("KEEL.SESSION", "REGISTER")
    val = b"v" * 64
    kinds = {
        "SET": lambda i: c.set("b:k%d" % (i % 100), val),
        "MULTI+10xSET+EXEC": None,
        "KEEL.TXN 10xSET": lambda i: c.execute_command(
            "KEEL.TXN", "THEN", 10,
            *sum((["3", "SET", "b:t%d" % k, val] for k in range(10)), [])),
        "KEEL.RUN SET": lambda i: c.execute_command(
            "KEEL.RUN", sid, i + 1, "SET", "b:s%d" % (i % 100), val),
    }
    pipe = c.pipeline(transaction=True)

    def multi(i):
        for k in range(10):
            pipe.set("b:m%d" % k, val)
        pipe.execute()
    kinds["MULTI+10xSET+EXEC"] = multi
    lat = {k: [] for k in kinds}
    for i in range(N):
        for name, fn in kinds.items():
            t0 = time.perf_counter()
            fn(i)
            lat[name].append((time.perf_counter() - t0) * 1e6)
    base = statistics.median(lat["SET"])
    for name, xs in lat.items():
        med = statistics.median(xs)
        print("  %-20s median %7.0f us  p99 %7.0f us  ratio %.2fx" %
              (name, med, pct(xs, 0.99), med / base), flush=True)


def main():
    keel = os.environ.get("KEEL_BIN", keelproc.KEEL)
    if not os.access(keel, os.X_OK):
        print("bench-txn: %s missing (make first)" % keel)
        return 1
    d = tempfile.mkdtemp(prefix="keel-bench-txn-", dir=os.path.join(keelproc.ROOT, "build"))
    procs = []
    try:
        procs, ports = start_cluster(d)
        c = find_leader(ports)
        print("bench-txn: %s, 3 nodes (fsync on), 1 client on the leader, %d requests "
              "per kind per round, kinds interleaved" % (keel, N), flush=True)
        for r in range(ROUNDS):
            print("round %d:" % (r + 1), flush=True)
            one_round(c)
        return 0
    finally:
        for p in procs:
            keelproc.stop(p)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
