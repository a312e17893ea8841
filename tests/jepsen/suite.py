#!/usr/bin/python3
"""The Jepsen-style suites (docs/testing.md, "Jepsen-style tests of real
processes"): a list of runs of tests/jepsen/jepsen.py, one line each, then
"N passed, M failed" (the line tools/run-tests.sh counts).

  suite.py short   make test: every nemesis at least once, the five planted
                   bugs caught; about 5 minutes on 2 cores
  suite.py long    make jepsen: longer runs, more seeds, 3 and 5 nodes

A planted-bug run passes only if it reports a VIOLATION. The suite also
fails if some nemesis never ran in it (coverage), so a schedule change
cannot silently drop one. Histories stay in build/jepsen/<suite>/<run>/.
Replay one run: tests/jepsen/jepsen.py --seed S --nemesis N --nodes K --secs T
--net M [--workload pipeline|bank] [--bug B] (the line of every run names them).

Network mode (KEEL_JEPSEN_NET=auto|netns|debug, default auto): as root with
working network namespaces, partitions are IP rules between namespaces
(tests/jepsen/netns.py: the suite re-runs itself inside a hub namespace it
creates and deletes); otherwise KEEL.DEBUG DROP in the servers. The first
line says which, and so does every run line (net=netns or net=debug).
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jepsen  # noqa: E402
import netns  # noqa: E402

# (seed, nemesis, nodes, secs, bug[, options]); options: "snap": N starts
# the servers with --snapshot-entries N, "workload": "pipeline" runs
# pipeline.py's clients (pipelined APPENDs per connection, program order
# checked; issue 12) instead of the register mix, "workload": "bank"
# bank.py's money transfers (issue 12).
# The snapshot runs start the servers with a small --snapshot-entries, so
# every node snapshots many times a second: kill-snapshotting then kills
# nodes mid-snapshot and partitions leave followers behind the leader's
# log base (InstallSnapshot); the run fails unless snapshots finished and
# a restarted node started from one.
PIPE = {"workload": "pipeline"}
# The bank workload (bank.py): transfers by WATCH/MULTI/EXEC, KEEL.TXN and
# session-tagged KEEL.TXN; total, balances and ledger judged. Its planted
# bug watch-blind (EXEC ignores the WATCH conditions) is caught without
# faults within seconds (lost updates: wrong totals, final-mismatch).
BANK = {"workload": "bank"}

SHORT = [
    (101, "kill", 3, 40, None),
    (102, "pause", 3, 20, None),
    (103, "partition", 5, 30, None),
    (104, "clock,disk", 3, 25, None),
    (105, "all", 5, 40, None),
    (106, "partition-leader", 3, 20, "stale-read"),
    (107, "partition-leader", 3, 20, "early-ack"),
    (108, "kill-snapshotting,kill-random,partition-halves", 3, 30, None, {"snap": 50}),
    # Pipelined writes under the faults that change leaders with writes in
    # flight; the planted reorder bug is caught even without faults.
    (109, "kill-leader,kill-random,pause-leader,partition-leader,partition-halves", 3, 22,
     None, PIPE),
    (110, "kill-leader,pause-leader", 3, 8, "reorder", PIPE),
    # The node's program-order fix undone (the simulator's no-order
    # mutant, here --test-bug no-order): caught under leader changes.
    (111, "kill-leader,partition-leader,pause-leader", 3, 15, "no-order", PIPE),
    (113, "kill-leader,pause-leader,partition-leader,clock-skew,slow-disk", 3, 22, None,
     BANK),
    (114, "kill-leader,partition-leader", 3, 8, "watch-blind", BANK),
]

LONG = [
    (201, "kill", 3, 90, None),
    (202, "kill", 5, 90, None),
    (203, "pause", 3, 60, None),
    (204, "pause", 5, 60, None),
    (205, "partition", 3, 90, None),
    (206, "partition", 5, 90, None),
    (207, "clock,disk", 3, 60, None),
    (208, "clock,disk", 5, 60, None),
    (209, "all", 3, 120, None),
    (210, "all", 5, 120, None),
    (211, "partition-leader", 5, 30, "stale-read"),
    (212, "pause-leader,kill-random", 3, 30, "stale-read"),
    (213, "partition-leader", 5, 30, "early-ack"),
    (214, "kill-leader,partition-halves", 3, 30, "early-ack"),
    (215, "kill-snapshotting,kill-all,partition", 3, 90, None, {"snap": 50}),
    (216, "kill-snapshotting,partition-leader,pause", 5, 60, None, {"snap": 100}),
    (217, "kill,pause,partition", 3, 90, None, PIPE),
    (218, "kill,pause,partition", 5, 90, None, PIPE),
    (219, "partition-leader,kill-random", 5, 20, "reorder", PIPE),
    (220, "kill-leader,partition-leader,pause-leader", 5, 30, "no-order", PIPE),
    (221, "all", 3, 90, None, BANK),
    (222, "all", 5, 90, None, BANK),
    (223, "pause-leader,kill-random", 5, 20, "watch-blind", BANK),
]


def flag_refused():
    d = tempfile.mkdtemp(prefix="keel-jepsen-flag-")
    try:
        r = subprocess.run([jepsen.KEEL, "server", "--id", "1", "--data-dir", d,
                            "--cluster", "1=127.0.0.1:1", "--client-addr", "127.0.0.1:2",
                            "--test-bug", "stale-read"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
    except subprocess.TimeoutExpired:
        return False, "did not exit within 10 s"
    finally:
        shutil.rmtree(d, ignore_errors=True)
    out = r.stdout.decode(errors="replace")
    good = r.returncode == 2 and "needs --test-faults" in out
    return good, "exit %d: %s" % (r.returncode, out.splitlines()[0] if out else "")


def main(argv):
    which = argv[0] if argv else "short"
    runs = {"short": SHORT, "long": LONG}.get(which)
    if runs is None:
        print("usage: suite.py short|long")
        return 2
    if not os.access(jepsen.KEEL, os.X_OK):
        print("jepsen: %s missing (make first)" % jepsen.KEEL)
        print("0 passed, 1 failed")
        return 1
    want = os.environ.get("KEEL_JEPSEN_NET", "auto")
    if want not in ("auto", "netns", "debug"):
        print("jepsen: KEEL_JEPSEN_NET=%s: want auto, netns or debug" % want)
        print("0 passed, 1 failed")
        return 2
    mode, info = netns.enter(os.path.abspath(__file__), argv, want, jepsen.say)
    lay = info if mode == "netns" else None
    print("jepsen %s suite: net=%s (%s)" % (which, mode, lay.describe() if lay else info),
          flush=True)
    signal.signal(signal.SIGTERM, jepsen.kill_started)
    signal.signal(signal.SIGINT, jepsen.kill_started)
    out = os.path.join(jepsen.ROOT, "build", "jepsen", which)
    passed = failed = 0
    # The planted bugs must never reach a server without --test-faults.
    ok, why = flag_refused()
    passed, failed = passed + ok, failed + (not ok)
    print("%s flags: --test-bug without --test-faults %s" % ("ok  " if ok else "FAIL", why),
          flush=True)
    covered = set()
    t0 = time.monotonic()
    for seed, nem, nodes, secs, bug, *opt in runs:
        opt = opt[0] if opt else {}
        ok, line, counts = jepsen.one_run(seed, nem, nodes, secs, 2 * nodes, out, bug=bug,
                                          lay=lay, snap_entries=opt.get("snap"),
                                          workload=opt.get("workload", "register"))
        covered.update(k for k, n in counts.items() if n > 0)
        good = ok if bug is None else not ok
        if good:
            passed += 1
        else:
            failed += 1
        tag = "ok  " if good else "FAIL"
        if bug:
            tag += " (planted bug %s: %s)" % (bug, "caught" if not ok else "NOT CAUGHT")
        print("%s %s" % (tag, line), flush=True)
    missing = [k for k in jepsen.NEMESES if k not in covered]
    if missing:
        failed += 1
        print("FAIL coverage: nemeses that never ran: %s" % " ".join(missing))
    else:
        passed += 1
        print("ok   coverage: every nemesis ran (%d kinds)" % len(jepsen.NEMESES))
    print("jepsen %s suite: %.0f s" % (which, time.monotonic() - t0))
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
