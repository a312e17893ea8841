#!/usr/bin/python3
"""bench/ab_c1.py OLD_KEEL NEW_KEEL [PAIRS] -- two keel builds side by side
on the noisiest figure, 1-client SET: for each pair, a fresh 3-node cluster
(fsync on, loopback) of each build in turn, 3 runs of `redis-benchmark -c 1
-n 15000 -t set -d 256` against its leader. Prints every run and the median
per build (docs/benchmarks.md records runs). Servers listen on 127.0.0.1;
every process started is stopped by its PID; every wait is bounded."""
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import redis

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "lib"))
import keelproc  # noqa: E402


def one_cluster(binary, runs=3):
    d = tempfile.mkdtemp(prefix="keel-ab-", dir=os.path.join(keelproc.ROOT, "build"))
    ports = keelproc.free_ports(6)
    members = ",".join("%d=127.0.0.1:%d" % (i + 1, ports[3 + i]) for i in range(3))
    procs, logs = [], []
    try:
        for i in range(3):
            args = keelproc.server_args(i + 1, os.path.join(d, "n%d" % i), members, 9,
                                        "127.0.0.1:%d" % ports[i], keel=binary)
            p, log = keelproc.spawn(args, os.path.join(d, "n%d.log" % i))
            procs.append(p)
            logs.append(log)
        leader = None
        deadline = time.time() + 20
        while leader is None and time.time() < deadline:
            for port in ports[:3]:
                try:
                    if redis.Redis(port=port, socket_timeout=1).info("raft").get(
                            "raft_role") == "leader":
                        leader = port
                except redis.exceptions.RedisError:
                    pass
            time.sleep(0.05)
        if leader is None:
            raise SystemExit("ab_c1: no leader within 20 s (%s)" % binary)
        out = []
        for _ in range(runs):
            r = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(leader),
                                "-c", "1", "-n", "15000", "-t", "set", "-d", "256", "-q"],
                               capture_output=True, text=True, timeout=300).stdout
            out.append(float(re.findall(r"SET: ([0-9.]+) requests per second", r)[-1]))
        return out
    finally:
        for p in procs:
            keelproc.stop(p)
        for log in logs:
            log.close()
        shutil.rmtree(d, ignore_errors=True)


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    pairs = int(argv[2]) if len(argv) > 2 else 3
    runs = {argv[0]: [], argv[1]: []}
    for k in range(pairs):
        for b in argv[:2]:
            r = one_cluster(b)
            runs[b] += r
            print("pair %d %s: %s" % (k + 1, b, " ".join("%.0f" % x for x in r)), flush=True)
    a, b = (statistics.median(runs[x]) for x in argv[:2])
    print("median SET c1: old %.0f, new %.0f ops/s, new/old %.2fx" % (a, b, b / a))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
