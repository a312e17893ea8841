#!/usr/bin/python3
"""Jepsen-style fault tests of real keel processes (issue 6, docs/testing.md).

One run: start a cluster of real `keel server --test-faults` processes on
free loopback ports in a temp dir; run concurrent clients (redis-py, one
connection each, spread over every node) doing GET, SET, KEEL.CAS, INCR and
APPEND; inject faults on a schedule drawn from a printed seed; heal; demand
liveness; read the final state through every node; then judge:

  - `keel check --format jsonl` over the whole history: linearizable;
  - every acknowledged write is there at the end, on every node (unique
    SET keys written once each; APPEND tokens; INCR counters), and every
    write reported as failed is not (failed means not done);
  - no APPEND token and no INCR result appears twice (at most once, also
    when a forwarding connection breaks);
  - no node exited except those the nemesis killed, and every node stops
    cleanly (exit 0) on SIGTERM at the end.

That is the default workload (RegisterWorkload). --workload pipeline
(pipeline.py) runs the same cluster, nemeses, liveness and run line with
clients that pipeline APPENDs on one connection each and checks program
order per connection (issue 12); --workload bank (bank.py) moves money
between accounts by WATCH/MULTI/EXEC, KEEL.TXN and session-tagged
KEEL.TXN and checks the total, the balances and the ledger (issue 12).

It prints one line per run,
  seed=S nemesis=N nodes=3 secs=30 ops=... ok=... fail=... info=... result=ok
or result=VIOLATION followed by the reasons, plus the history path. The
history of every run is kept in OUT/<run>/history.jsonl; a failing run also
keeps its node logs and data dirs there.

Replay: the same --seed (with the same --nemesis, --nodes, --secs) draws the
same schedule of faults, durations, targets and client operations. Real
processes are not deterministic (which node leads, timing), so a replay
re-creates the pressure, not the exact interleaving.

Network (--net, docs/testing.md "Network modes"): as root with working
network namespaces (netns.py) every node runs in its own namespace at its
own address and partitions are IP rules there (net=netns); otherwise the
servers listen on 127.0.0.1 and partitions are KEEL.DEBUG DROP inside them
(net=debug). The run line says which.

Every wait is bounded, every process started is remembered by PID and only
those are signalled.
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import redis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
import keelproc  # noqa: E402
import netns  # noqa: E402
from keelproc import KEEL, ROOT, free_ports  # noqa: E402 (suite.py reads KEEL, ROOT)

# ---- tunables (all small and bounded) -----------------------------------------

TICK_MS = 10
ELECTION_TICKS = 30            # election timeout 300-600 ms (the server default)
REQUEST_TIMEOUT_MS = 2000      # the server answers UNCERTAIN/TRYAGAIN by then
CLIENT_TIMEOUT_S = 3.0         # longer than the request timeout: a paused node
KEY_PERIOD_S = 6.0             # registers rotate so each key's history stays checkable
REGISTERS = 3                  # registers per period
# A partition-leader cut is judged this long after it starts: twice the
# longest election timeout, by when some other node must have stopped
# following the cut-off leader (else the partition had no effect).
JUDGE_S = 2 * 2 * ELECTION_TICKS * TICK_MS / 1000.0
LIVENESS_S = 30.0              # after healing, a write must succeed on every node by then
START_S = 20.0
CHECK_TIMEOUT_S = 120

KILLS = ["kill-random", "kill-leader", "kill-minority", "kill-majority", "kill-all",
         "kill-truncating", "kill-snapshotting"]
PAUSES = ["pause-leader", "pause-random"]
PARTITIONS = ["partition-halves", "partition-leader", "partition-bridge",
              "partition-oneway"]
NEMESES = KILLS + PAUSES + PARTITIONS + ["clock-skew", "slow-disk"]
GROUPS = {"kill": KILLS, "pause": PAUSES, "partition": PARTITIONS,
          "clock": ["clock-skew"], "disk": ["slow-disk"], "all": NEMESES,
          "none": []}


# Every node object this process started a server for, so that a SIGTERM
# or SIGINT to the harness (make, a timeout) kills exactly those servers by
# PID instead of leaving them behind. Test code, not the server: the
# no-global-state rule is for src/.
STARTED = []


def kill_started(signum, _frame):
    for nd in STARTED:
        if nd.proc is not None and nd.proc.poll() is None:
            try:
                nd.proc.send_signal(signal.SIGCONT)
                nd.proc.send_signal(signal.SIGKILL)
                nd.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
    for d in set(nd.cl.dir for nd in STARTED):
        shutil.rmtree(d, ignore_errors=True)
    sys.stderr.write("jepsen: signal %d: killed the servers it started\n" % signum)
    os._exit(128 + signum)


def now_s():
    return time.monotonic()


# ---- the cluster ------------------------------------------------------------------


class Node:
    def __init__(self, cl, nid, host, client_port, peer_port):
        self.cl = cl
        self.id = nid
        self.host = host
        self.client_port = client_port
        self.peer_port = peer_port
        self.data_dir = os.path.join(cl.dir, "node%d" % nid)
        self.log_path = os.path.join(cl.dir, "node%d.log" % nid)
        self.proc = None
        self.log = None
        self.expect_down = False   # set before the nemesis kills it
        self.paused = False
        self.snap_tot = {}         # INFO stats snapshot* counters, summed over boots

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.client_port)

    def start(self):
        assert self.proc is None or self.proc.poll() is not None
        args = keelproc.server_args(self.id, self.data_dir, self.cl.members, 6,
                                    self.addr) + [
                "--test-faults",
                "--tick-ms", str(TICK_MS), "--election-ticks", str(ELECTION_TICKS),
                "--request-timeout-ms", str(REQUEST_TIMEOUT_MS)]
        if self.cl.bug:
            args += ["--test-bug", self.cl.bug]
        if self.cl.snap_entries:
            args += ["--snapshot-entries", str(self.cl.snap_entries)]
        lay = self.cl.lay
        if lay:
            # `ip netns exec` execs the server in place: the PID signalled
            # below is the server's own (checked: its /proc exe is keel).
            args = [netns.IP, "netns", "exec", lay.nodes[self.id - 1]] + args
        self.proc, self.log = keelproc.spawn(args, self.log_path, self.log)
        if lay and not netns.wait_exec(self.proc.pid, KEEL):
            self.cl.errors.append("netns: PID %d of node %d is not %s after start"
                                  % (self.proc.pid, self.id, KEEL))
        self.cl.pids.append(self.proc.pid)
        if self not in STARTED:
            STARTED.append(self)
        self.expect_down = False
        self.paused = False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def harvest(self):
        """Adds this boot's snapshot counters (INFO stats; they restart at
        zero with every boot) to snap_tot. Called just before the node is
        killed or stopped; a node that cannot answer (paused, wedged)
        loses that boot's counts, which only makes the tallies low."""
        if not self.alive() or self.paused:
            return
        try:
            text = self.command("INFO", "stats", timeout=0.5)
        except Exception:   # noqa: BLE001 -- any failure: no counts
            return
        if isinstance(text, bytes):
            text = text.decode()
        for line in text.splitlines():
            if line.startswith("snapshot") and ":" in line:
                k, v = line.split(":", 1)
                if v.strip().isdigit():
                    self.snap_tot[k] = self.snap_tot.get(k, 0) + int(v.strip())

    def kill9(self):
        if not self.alive():
            return
        if self.cl.snap_entries:
            self.harvest()
        self.expect_down = True
        if self.paused:
            self.proc.send_signal(signal.SIGCONT)
            self.paused = False
        keelproc.kill9(self.proc)

    def pause(self):
        if self.alive() and not self.paused:
            self.paused = True
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        if self.alive() and self.paused:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self, timeout=10):
        """SIGTERM; returns the exit code, None if it had to be SIGKILLed."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.resume()
        if self.cl.snap_entries:
            self.harvest()
        self.expect_down = True
        return keelproc.stop(self.proc, timeout)

    def command(self, *args, timeout=1.0):
        """One command on a fresh connection; raises redis errors."""
        c = redis.Connection(host=self.host, port=self.client_port,
                             socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            c.send_command(*args)
            return c.read_response()
        finally:
            c.disconnect()

    def raft_info(self, timeout=1.0):
        return keelproc.parse_info(self.command("INFO", "raft", timeout=timeout))

    def log_tail(self, n=1500):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""


class Cluster:
    def __init__(self, n, bug=None, lay=None, snap_entries=None):
        """lay: a netns.Layout when the harness runs inside its hub
        namespace (node k in namespace lay.nodes[k-1] at its own address,
        the same two ports everywhere), else None: loopback, free ports."""
        self.dir = tempfile.mkdtemp(prefix="keel-jepsen-")
        self.bug = bug
        self.lay = lay
        self.snap_entries = snap_entries   # --snapshot-entries for every server
        self.errors = []
        if lay:
            assert n <= len(lay.nodes)
            self.nodes = [Node(self, i + 1, lay.node_ip(i + 1), 7001, 7002) for i in range(n)]
        else:
            ports = free_ports(2 * n)
            self.nodes = [Node(self, i + 1, "127.0.0.1", ports[i], ports[n + i])
                          for i in range(n)]
        self.members = ",".join("%d=%s:%d" % (nd.id, nd.host, nd.peer_port)
                                for nd in self.nodes)
        self.pids = []
        # Partitions: IP rules in the node namespaces, or KEEL.DEBUG DROP
        # inside the servers. kill-truncating always uses the latter (see
        # do_kill_truncating); clock skew and slow disk are KEEL.DEBUG only.
        self.debug_net = DebugNet(self)
        self.net = NetnsNet(self, lay) if lay else self.debug_net

    def start(self):
        for nd in self.nodes:
            nd.start()

    def up(self):
        return [nd for nd in self.nodes if nd.alive() and not nd.paused]

    def leader(self, timeout=0.0):
        """The leader agreed on by every reachable live node that names
        one, and that calls itself leader; None if there is none (yet)."""
        deadline = now_s() + timeout
        while True:
            seen, roles = set(), {}
            for nd in self.up():
                try:
                    inf = nd.raft_info(timeout=0.5)
                except (redis.exceptions.RedisError, OSError):
                    continue
                roles[nd.id] = inf.get("raft_role")
                if inf.get("raft_leader") not in (None, "0", ""):
                    seen.add(inf.get("raft_leader"))
            if len(seen) == 1:
                lid = int(seen.pop())
                if roles.get(lid) == "leader":
                    return self.nodes[lid - 1]
            if now_s() >= deadline:
                return None
            time.sleep(0.05)

    def debug(self, nd, *args):
        """KEEL.DEBUG on one node; a node that does not answer is reported
        (a paused or dead node keeps no fault state worth healing)."""
        try:
            nd.command("KEEL.DEBUG", *args, timeout=1.0)
            return True
        except (redis.exceptions.RedisError, OSError):
            return False

    def close(self):
        """Stops every live node; {id: exit code} of those (a node already
        dead here is the crash watch's and liveness's business)."""
        codes = {}
        for nd in self.nodes:
            if nd.alive():
                codes[nd.id] = nd.stop()
            if nd.log:
                nd.log.close()
        return codes


class DebugNet:
    """Partitions inside the servers: KEEL.DEBUG DROP in the peer transport
    drops frames in the process; the TCP connections stay up. Every call
    sets a peer's (out, in) pair whole, so a pair is either cut or blocked
    one way, never both (the nemeses never mix them)."""
    name = "debug"

    def __init__(self, cl):
        self.cl = cl

    def block(self, dst, src):
        """dst hears nothing from src (src's frames to dst are dropped)."""
        self.cl.debug(src, "DROP", str(dst.id), "1", "0")
        self.cl.debug(dst, "DROP", str(src.id), "0", "1")

    def cut(self, a, b):
        """No frames either way between a and b."""
        self.cl.debug(a, "DROP", str(b.id), "1", "1")
        self.cl.debug(b, "DROP", str(a.id), "1", "1")

    def heal(self):
        """KEEL.DEBUG HEAL on every node (also resets clock and fsync
        faults, which never overlap a partition). Returns what is left:
        nothing a dead or paused node could keep."""
        for nd in self.cl.nodes:
            self.cl.debug(nd, "HEAL")
        return []

    def leftovers(self):
        return []


class NetnsNet:
    """Partitions at the IP level (netns.Rules): node dst's namespace drops
    every packet from src's address. The hub is never cut, so the harness
    reaches every client port throughout."""
    name = "netns"

    def __init__(self, cl, lay):
        self.cl = cl
        self.rules = netns.Rules(lay)

    def block(self, dst, src):
        self.rules.block(dst.id, src.id)

    def cut(self, a, b):
        self.rules.block(a.id, b.id)
        self.rules.block(b.id, a.id)

    def heal(self):
        """Deletes exactly the rules added; returns any blackhole rule left."""
        return self.rules.heal()

    def leftovers(self):
        return self.rules.leftovers()


# ---- the history ------------------------------------------------------------------


class History:
    """JSON-lines history in the project format; one lock so that the
    line order is the order of the monotonic timestamps."""

    def __init__(self, path):
        self.f = open(path, "w")
        self.lock = threading.Lock()
        self.next_process = 0
        self.counts = {"ok": 0, "fail": 0, "info": 0}

    def new_process(self):
        with self.lock:
            p = self.next_process
            self.next_process += 1
            return p

    def event(self, process, typ, f, key, value):
        with self.lock:
            t = time.monotonic_ns()
            self.f.write(json.dumps({"process": process, "type": typ, "f": f,
                                     "key": key, "value": value, "time": t}) + "\n")
            if typ != "invoke":
                self.counts[typ] += 1

    def close(self):
        self.f.close()


def decode_value(v):
    """A GET reply as the history records it: null, an integer when the
    bytes are its canonical decimal, else the string."""
    if v is None:
        return None
    s = v.decode(errors="replace") if isinstance(v, bytes) else str(v)
    try:
        if str(int(s)) == s:
            return int(s)
    except ValueError:
        pass
    return s


def classify_error(e):
    """Maps a server error reply to the history's completion type, by the
    server's own words (docs/server.md, error texts): 'fail' only when the
    server says the command was not executed; 'info' otherwise. Returns
    (type, unexpected?)."""
    msg = str(e)
    if msg.startswith("TRYAGAIN") or "not executed" in msg:
        return "fail", False
    if msg.startswith("UNCERTAIN"):
        return "info", False
    return "info", True


# ---- clients ----------------------------------------------------------------------


class Run:
    """State shared by the clients of one run (each field has one writer
    or is guarded by lock)."""

    def __init__(self, seed, hist, t0):
        self.seed = seed
        self.hist = hist
        self.t0 = t0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        # unique SET keys: key -> "ok" | "fail" | "info"
        self.unique = {}
        # APPEND tokens: key -> {token: outcome}
        self.tokens = {}
        # INCR counters: key -> {"ok": [values], "info": n}
        self.counters = {}
        self.unexpected = []
        self.gens = set()

    def gen(self):
        return int((now_s() - self.t0) / KEY_PERIOD_S)


class Client(threading.Thread):
    def __init__(self, run, idx, node, rng):
        super().__init__(daemon=True)
        self.run_ = run
        self.idx = idx
        self.node = node
        self.rng = rng
        self.conn = None
        self.process = run.hist.new_process()
        self.n = 0
        self.last = {}

    def connect(self):
        """A live connection before any op is recorded: an op never sent
        (connection refused) is no op at all."""
        if self.conn is not None:
            return True
        c = redis.Connection(host=self.node.host, port=self.node.client_port,
                             socket_timeout=CLIENT_TIMEOUT_S,
                             socket_connect_timeout=1.0)
        try:
            c.connect()
        except (redis.exceptions.RedisError, OSError):
            c.disconnect()
            return False
        self.conn = c
        return True

    def drop_conn(self):
        if self.conn is not None:
            self.conn.disconnect()
            self.conn = None

    def call(self, *args):
        self.conn.send_command(*args)
        return self.conn.read_response()

    def pick(self):
        g = self.run_.gen()
        with self.run_.lock:
            self.run_.gens.add(g)
        r = self.rng.random()
        reg = "r%d-%d" % (g, self.rng.randrange(REGISTERS))
        if r < 0.40:
            return ("read", reg, None)
        if r < 0.58:
            return ("write", reg, self.rng.randrange(10))
        if r < 0.74:
            exp = self.last.get(reg)
            if exp is None or self.rng.random() < 0.3:
                exp = self.rng.randrange(10)
            return ("cas", reg, [exp, self.rng.randrange(10)])
        if r < 0.80:
            return ("incr", reg, None)
        if r < 0.88:
            self.n += 1
            return ("unique", "u%d-%d" % (self.process, self.n), "v%d" % self.n)
        if r < 0.94:
            self.n += 1
            return ("append", "a%d" % (g // 2), "%d.%d," % (self.process, self.n))
        return ("counter", "c%d" % (g // 2), None)

    def run(self):
        while not self.run_.stop.is_set():
            if not self.connect():
                time.sleep(0.1)
                continue
            self.one(*self.pick())
            time.sleep(self.rng.uniform(0, 0.01))
        self.drop_conn()

    def one(self, kind, key, value):
        run = self.run_
        h = run.hist
        p = self.process
        f = {"unique": "write", "counter": "incr"}.get(kind, kind)
        if kind == "read":
            args = ("GET", key)
        elif kind in ("write", "unique"):
            args = ("SET", key, str(value))
        elif kind == "cas":
            args = ("KEEL.CAS", key, str(value[0]), str(value[1]))
        elif kind in ("incr", "counter"):
            args = ("INCR", key)
        else:
            args = ("APPEND", key, value)
        inv = value if kind != "counter" and kind != "incr" else 1
        h.event(p, "invoke", f, key, inv)
        typ, out = "ok", None
        try:
            res = self.call(*args)
            if kind == "read":
                out = decode_value(res)
                if isinstance(out, int):
                    self.last[key] = out
            elif kind in ("write", "unique"):
                if res not in (b"OK", "OK"):
                    typ = "info"
                    run.unexpected.append("SET reply %r" % (res,))
                elif kind == "write":
                    self.last[key] = value
            elif kind == "cas":
                if res == 1:
                    self.last[key] = value[1]
                else:
                    typ = "fail"   # compare did not match: no effect
            elif kind in ("incr", "counter"):
                out = int(res)
            else:
                out = None
        except redis.exceptions.ResponseError as e:
            typ, odd = classify_error(e)
            if odd:
                with run.lock:
                    run.unexpected.append("%s %s: %s" % (args[0], key, e))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                OSError):
            typ = "info"
        if typ == "ok":
            h.event(p, "ok", f, key, out)
        else:
            h.event(p, typ, f, key, None)
        with run.lock:
            if kind == "unique":
                run.unique[key] = typ
            elif kind == "append":
                run.tokens.setdefault(key, {})[value] = typ
            elif kind == "counter":
                c = run.counters.setdefault(key, {"ok": [], "info": 0})
                if typ == "ok":
                    c["ok"].append(out)
                elif typ == "info":
                    c["info"] += 1
        if typ == "info":
            # Jepsen's rule: an indeterminate op may still be in flight, so
            # this process is done; a new one takes over on a new
            # connection (a late reply can never be paired with a new op).
            self.drop_conn()
            self.process = h.new_process()


# ---- nemeses ----------------------------------------------------------------------


class Nemesis(threading.Thread):
    """Draws faults from random.Random(seed) and applies them one at a
    time, each bounded in time and healed before the next. Also watches
    that no node exits except those it killed."""

    def __init__(self, cl, seed, kinds, secs, log):
        super().__init__(daemon=True)
        self.cl = cl
        self.rng = random.Random(seed)
        self.kinds = kinds
        self.secs = secs
        self.logf = log
        self.t0 = now_s()
        self.crashes = []
        self.notes = []
        self.counts = {}
        self.stepdowns = []    # slow-disk: (delay_ms, stepped_down)
        self.snap_kills = [0, 0]       # kill-snapshotting: mid-snapshot, all
        self.cutoff_answers = [0, 0]   # a cut-off node's client port: answered, asked
        self.cutoff_left = 0           # probes where some other node no longer followed it
        self.judged = [0, 0]           # probes at >= JUDGE_S: others had left it, probes
        self.done = threading.Event()
        self.error = None

    def log(self, msg):
        self.logf.write("%8.3f %s\n" % (now_s() - self.t0, msg))
        self.logf.flush()

    def watch(self):
        for nd in self.cl.nodes:
            if nd.proc is not None and not nd.expect_down and nd.proc.poll() is not None:
                self.crashes.append("node %d exited with %s" % (nd.id, nd.proc.returncode))
                self.log("CRASH node %d exit %s" % (nd.id, nd.proc.returncode))
                nd.expect_down = True   # report once

    def sleep(self, secs):
        """Sleeps, watching for crashes every 50 ms."""
        end = now_s() + secs
        while now_s() < end:
            self.watch()
            time.sleep(min(0.05, max(0.0, end - now_s())))

    def target_leader(self):
        ld = self.cl.leader(timeout=2.0)
        if ld is None:
            live = self.cl.up()
            ld = self.rng.choice(live) if live else self.cl.nodes[0]
            self.log("no agreed leader: using node %d" % ld.id)
        return ld

    def run(self):
        try:
            self.schedule()
        except Exception as e:   # a harness bug must fail the run, loudly
            self.error = "nemesis: %r" % (e,)
            self.log(self.error)
        finally:
            self.heal_all()
            self.done.set()

    def schedule(self):
        end = self.t0 + self.secs
        bag = []
        while True:
            quiet = self.rng.uniform(1.0, 2.5)
            if now_s() + quiet >= end or not self.kinds:
                self.sleep(max(0.0, end - now_s()))
                return
            self.sleep(quiet)
            # rounds of a shuffled list: every kind once before any twice
            if not bag:
                bag = list(self.kinds)
                self.rng.shuffle(bag)
            kind = bag.pop()
            dur = self.rng.uniform(1.5, 4.0)
            dur = min(dur, max(0.5, end - now_s()))
            self.counts[kind] = self.counts.get(kind, 0) + 1
            getattr(self, "do_" + kind.replace("-", "_"))(dur)

    # -- kills
    def kill_then_restart(self, victims, dur, why):
        self.log("%s: kill -9 %s for %.1fs" % (why, [v.id for v in victims], dur))
        for v in victims:
            v.kill9()
        self.sleep(dur)
        for v in victims:
            v.start()
        self.log("%s: restarted %s" % (why, [v.id for v in victims]))

    def do_kill_random(self, dur):
        self.kill_then_restart([self.rng.choice(self.cl.nodes)], dur, "kill-random")

    def do_kill_leader(self, dur):
        self.kill_then_restart([self.target_leader()], dur, "kill-leader")

    def do_kill_minority(self, dur):
        n = len(self.cl.nodes)
        self.kill_then_restart(self.rng.sample(self.cl.nodes, (n - 1) // 2), dur,
                               "kill-minority")

    def do_kill_majority(self, dur):
        n = len(self.cl.nodes)
        self.kill_then_restart(self.rng.sample(self.cl.nodes, n // 2 + 1), dur,
                               "kill-majority")

    def do_kill_all(self, dur):
        self.kill_then_restart(list(self.cl.nodes), dur, "kill-all")

    def do_kill_snapshotting(self, dur):
        """kill -9 a random node while its INFO says a local snapshot is
        being written or finished (raft_snapshot_in_progress:1), polling
        for up to 3 s, then restart it: the restart must recover from the
        older snapshot and the log, or refuse with a clear error -- never
        serve wrong data (issue 6). Needs servers with a small
        --snapshot-entries (the suite's snapshot run); without, or when no
        snapshot shows within the bound, it is a plain random kill, and
        the run line's snapkills=H/N says how many landed mid-snapshot."""
        v = self.rng.choice(self.cl.nodes)
        hit = False
        deadline = now_s() + 3.0
        while self.cl.snap_entries and now_s() < deadline and v.alive():
            try:
                if v.raft_info(timeout=0.3).get("raft_snapshot_in_progress") == "1":
                    hit = True
                    break
            except Exception:   # noqa: BLE001 -- paused or cut off: try again
                time.sleep(0.01)
        self.snap_kills[0] += hit
        self.snap_kills[1] += 1
        self.kill_then_restart([v], dur, "kill-snapshotting%s" % (" (mid-snapshot)" if hit else ""))

    def do_kill_truncating(self, dur):
        """Isolate the leader (it takes writes that cannot commit), heal, and
        kill -9 it within ~300 ms, while it learns the new term and cuts its
        uncommitted tail; then restart it. Always KEEL.DEBUG DROP, also in
        netns mode: after an IP-level cut TCP resumes only at its next
        retransmission (backed off to seconds), which would put the old
        leader's truncation long after the kill instead of around it."""
        ld = self.target_leader()
        others = [nd for nd in self.cl.nodes if nd is not ld]
        self.log("kill-truncating: isolate leader %d for %.1fs (KEEL.DEBUG DROP)"
                 % (ld.id, dur))
        for o in others:
            self.cl.debug_net.cut(ld, o)
        self.sleep(dur)
        self.cl.debug_net.heal()
        delay = self.rng.uniform(0.0, 0.3)
        self.sleep(delay)
        self.log("kill-truncating: healed, kill -9 %d after %.0f ms" % (ld.id, delay * 1000))
        ld.kill9()
        self.sleep(self.rng.uniform(0.3, 1.0))
        ld.start()
        self.log("kill-truncating: restarted %d" % ld.id)

    # -- pauses
    def pause_then_resume(self, v, dur, why):
        self.log("%s: SIGSTOP %d for %.1fs" % (why, v.id, dur))
        v.pause()
        self.sleep(dur)
        v.resume()
        self.log("%s: SIGCONT %d" % (why, v.id))

    def do_pause_leader(self, dur):
        self.pause_then_resume(self.target_leader(), dur, "pause-leader")

    def do_pause_random(self, dur):
        self.pause_then_resume(self.rng.choice(self.cl.nodes), dur, "pause-random")

    # -- partitions (self.cl.net: IP rules in netns mode, else KEEL.DEBUG DROP)
    def heal_net(self, why):
        left = self.cl.net.heal()
        if left:
            raise RuntimeError("%s: heal left %s" % (why, "; ".join(left)))
        self.log("%s: healed" % why)

    def ask_cutoff(self, nd, why, judged):
        """The harness is never cut off: a partitioned node's client port
        must still answer it (that is how a read or an acknowledgement by
        a partitioned old leader would be seen)."""
        self.cutoff_answers[1] += 1
        try:
            inf = nd.raft_info(timeout=1.0)
            self.cutoff_answers[0] += 1
            self.log("%s: cut-off node %d answers the harness: role=%s term=%s" % (
                why, nd.id, inf.get("raft_role"), inf.get("raft_term")))
        except (redis.exceptions.RedisError, OSError) as e:
            self.log("%s: cut-off node %d does not answer the harness: %s" % (why, nd.id, e))
        # and what the rest say: a new leader there shows the cut is real
        rest, left = [], False
        for o in self.cl.nodes:
            if o is nd or not o.alive():
                continue
            try:
                i = o.raft_info(timeout=0.5)
                rest.append("%d:%s/term %s/leader %s" % (o.id, i.get("raft_role"),
                                                         i.get("raft_term"),
                                                         i.get("raft_leader")))
                if i.get("raft_role") != "follower" or i.get("raft_leader") != str(nd.id):
                    left = True
            except (redis.exceptions.RedisError, OSError):
                rest.append("%d:?" % o.id)
        self.cutoff_left += left
        if judged:
            self.judged[0] += left
            self.judged[1] += 1
        self.log("%s: the others: %s" % (why, ", ".join(rest)))

    def partition(self, pairs, dur, why, desc, cutoff=None):
        self.log("%s: %s for %.1fs (net=%s)" % (why, desc, dur, self.cl.net.name))
        for a, b in pairs:
            self.cl.net.cut(a, b)
        if cutoff is not None:
            at = JUDGE_S if dur >= JUDGE_S + 0.3 else dur / 2
            self.sleep(at)
            self.ask_cutoff(cutoff, why, at >= JUDGE_S)
            self.sleep(max(0.0, dur - at))
        else:
            self.sleep(dur)
        self.heal_net(why)

    def do_partition_halves(self, dur):
        ns = list(self.cl.nodes)
        self.rng.shuffle(ns)
        k = len(ns) // 2
        a, b = ns[:k], ns[k:]
        self.partition([(x, y) for x in a for y in b], dur, "partition-halves",
                       "%s | %s" % ([x.id for x in a], [y.id for y in b]))

    def do_partition_leader(self, dur):
        ld = self.target_leader()
        self.partition([(ld, o) for o in self.cl.nodes if o is not ld], dur,
                       "partition-leader", "isolate %d" % ld.id, cutoff=ld)

    def do_partition_bridge(self, dur):
        ns = list(self.cl.nodes)
        self.rng.shuffle(ns)
        mid = len(ns) // 2
        bridge, a, b = ns[mid], ns[:mid], ns[mid + 1:]
        self.partition([(x, y) for x in a for y in b], dur, "partition-bridge",
                       "%s | %s, bridge %d" % ([x.id for x in a], [y.id for y in b],
                                               bridge.id))

    def do_partition_oneway(self, dur):
        """A reaches B, B does not reach A: B drops its frames to A."""
        if self.rng.random() < 0.5:
            ld = self.target_leader()
            # the leader is heard by nobody, hears everyone
            pairs = [(o, ld) for o in self.cl.nodes if o is not ld]
            desc = "leader %d mute to all" % ld.id
        else:
            ld = self.target_leader()
            # nobody is heard by the leader, everyone hears it
            pairs = [(ld, o) for o in self.cl.nodes if o is not ld]
            desc = "leader %d deaf to all" % ld.id
        self.log("partition-oneway: %s for %.1fs (net=%s)" % (desc, dur, self.cl.net.name))
        for a, b in pairs:   # a hears nothing from b
            self.cl.net.block(a, b)
        self.sleep(dur)
        self.heal_net("partition-oneway")

    # -- clocks and disks
    def do_clock_skew(self, dur):
        victims = self.rng.sample(self.cl.nodes, self.rng.randint(1, len(self.cl.nodes)))
        offs = {}
        for v in victims:
            off = self.rng.choice([-1, 1]) * self.rng.randint(200, 20000)
            offs[v.id] = off
            self.cl.debug(v, "CLOCK-OFFSET-MS", str(off))
        self.log("clock-skew: offsets %s ms for %.1fs" % (offs, dur))
        self.sleep(dur)
        for v in victims:
            self.cl.debug(v, "HEAL")
        self.log("clock-skew: healed")

    def do_slow_disk(self, dur):
        """fsync delayed beyond the election timeout on the leader: it must
        step down or stay correct (the checks decide correctness; whether
        it stepped down is recorded)."""
        ld = self.target_leader()
        delay = self.rng.randint(2 * ELECTION_TICKS * TICK_MS, 5 * ELECTION_TICKS * TICK_MS)
        dur = max(dur, 3.0 * delay / 1000)
        slow = [ld]
        if self.rng.random() < 0.5:
            # and one follower: now every commit waits for a slow fsync
            slow.append(self.rng.choice([nd for nd in self.cl.nodes if nd is not ld]))
        self.log("slow-disk: fsync delay %d ms on leader %d%s for %.1fs" % (
            delay, ld.id, " and follower %d" % slow[1].id if len(slow) > 1 else "", dur))
        for nd in slow:
            self.cl.debug(nd, "FSYNC-DELAY-MS", str(delay))
        stepped = False
        end = now_s() + dur
        while now_s() < end:
            self.watch()
            try:
                if ld.raft_info(timeout=0.5).get("raft_role") != "leader":
                    stepped = True
            except (redis.exceptions.RedisError, OSError):
                pass
            time.sleep(0.1)
        for nd in slow:
            self.cl.debug(nd, "HEAL")
        self.stepdowns.append((delay, stepped))
        self.log("slow-disk: healed; leader %d %s" % (
            ld.id, "stepped down" if stepped else "stayed leader"))

    def heal_all(self):
        for nd in self.cl.nodes:
            nd.resume()
        for nd in self.cl.nodes:
            if not nd.alive():
                if not nd.expect_down:
                    self.watch()
                nd.start()
                self.log("heal: restarted %d" % nd.id)
        left = self.cl.net.heal() if self.cl.net is not self.cl.debug_net else []
        if left and not self.error:
            self.error = "heal: rules left: %s" % "; ".join(left)
        for nd in self.cl.nodes:
            self.cl.debug(nd, "HEAL")
        self.log("heal: every fault undone")


# ---- the end of a run -------------------------------------------------------------


def liveness(cl, hist, problems):
    """Every node must accept a write (and so have a leader) within
    LIVENESS_S of healing."""
    deadline = now_s() + LIVENESS_S
    for nd in cl.nodes:
        p = hist.new_process()
        while True:
            key = "live-%d" % nd.id
            hist.event(p, "invoke", "write", key, p)
            try:
                nd.command("SET", key, str(p), timeout=CLIENT_TIMEOUT_S)
                hist.event(p, "ok", "write", key, None)
                break
            except redis.exceptions.ResponseError as e:
                typ, _ = classify_error(e)
                hist.event(p, typ, "write", key, None)
            except (redis.exceptions.RedisError, OSError):
                hist.event(p, "info", "write", key, None)
            p = hist.new_process()
            if now_s() > deadline:
                problems.append("liveness: node %d accepted no write within %.0fs of healing"
                                % (nd.id, LIVENESS_S))
                return False
            time.sleep(0.2)
    return True


def converge(cl, timeout=20.0):
    """Until every node has applied what the leader has committed."""
    deadline = now_s() + timeout
    while now_s() < deadline:
        try:
            infos = [nd.raft_info() for nd in cl.nodes]
            commit = max(int(i.get("raft_commit_index", 0)) for i in infos)
            if all(int(i.get("raft_applied_index", -1)) >= commit for i in infos):
                return True
        except (redis.exceptions.RedisError, OSError, ValueError):
            pass
        time.sleep(0.1)
    return False


def mget(nd, keys, local):
    """Values of keys on nd, through one connection: linearizable (forwarded
    read point) or, with local, this replica's own applied state."""
    c = redis.Connection(host=nd.host, port=nd.client_port,
                         socket_timeout=CLIENT_TIMEOUT_S, socket_connect_timeout=1.0)
    out = {}
    try:
        if local:
            c.send_command("READONLY")
            c.read_response()
        for i in range(0, len(keys), 200):
            chunk = keys[i:i + 200]
            c.send_command("MGET", *chunk)
            for k, v in zip(chunk, c.read_response()):
                out[k] = v
    finally:
        c.disconnect()
    return out


def final_checks(cl, run, hist, problems):
    """Acknowledged writes present on every node, failed ones absent, no
    double execution. Register reads go into the history (checked by keel
    check); the rest is checked here."""
    regs = ["r%d-%d" % (g, i) for g in sorted(run.gens) for i in range(REGISTERS)]
    uniq = sorted(run.unique)
    apps = sorted(run.tokens)
    ctrs = sorted(run.counters)
    found = {}   # message -> where it was seen (one entry per message)

    def note(msg, where):
        found.setdefault(msg, []).append(where)

    if not converge(cl):
        problems.append("convergence: nodes did not all apply the leader's commit index in 20s")
    for nd in cl.nodes:
        for local in (False, True):
            try:
                vals = mget(nd, regs + uniq + apps + ctrs, local)
            except (redis.exceptions.RedisError, OSError) as e:
                problems.append("final read on node %d%s failed: %s"
                                % (nd.id, " (local)" if local else "", e))
                continue
            where = "%d%s" % (nd.id, "L" if local else "")
            if not local:
                # linearizable reads of every register: into the history
                for k in regs:
                    p = hist.new_process()
                    hist.event(p, "invoke", "read", k, None)
                    hist.event(p, "ok", "read", k, decode_value(vals.get(k)))
            lost = [k for k in uniq if run.unique[k] == "ok" and vals.get(k) is None]
            done = [k for k in uniq if run.unique[k] == "fail" and vals.get(k) is not None]
            if lost:
                note("lost-ack: %d acknowledged SETs missing (e.g. %s)"
                     % (len(lost), ",".join(lost[:3])), where)
            if done:
                note("failed-but-done: %d SETs reported failed are present (e.g. %s)"
                     % (len(done), ",".join(done[:3])), where)
            for k in apps:
                v = vals.get(k)
                toks = [t for t in (v.decode() if v else "").split(",") if t]
                seen = {}
                for t in toks:
                    seen[t] = seen.get(t, 0) + 1
                dup = [t for t, n in seen.items() if n > 1]
                outcome = run.tokens[k]
                lostt = [t for t, o in outcome.items() if o == "ok" and t[:-1] not in seen]
                donet = [t for t, o in outcome.items() if o == "fail" and t[:-1] in seen]
                alien = [t for t in seen if t + "," not in outcome]
                if dup:
                    note("double-execution: APPEND tokens twice in %s: %s" % (k, dup[:3]),
                         where)
                if lostt:
                    note("lost-ack: %d acknowledged APPENDs missing from %s" % (len(lostt), k),
                         where)
                if donet:
                    note("failed-but-done: %d APPENDs reported failed are in %s"
                         % (len(donet), k), where)
                if alien:
                    note("alien tokens in %s: %s" % (k, alien[:3]), where)
            for k in ctrs:
                c = run.counters[k]
                v = vals.get(k)
                final = int(v) if v is not None else 0
                acked = len(c["ok"])
                if len(set(c["ok"])) != acked:
                    note("double-execution: INCR %s returned the same value twice" % k,
                         where)
                if final < acked or final > acked + c["info"]:
                    note("counter %s is %d: want %d..%d (acked..acked+info)"
                         % (k, final, acked, acked + c["info"]), where)
                if c["ok"] and max(c["ok"]) > final:
                    note("counter %s is %d, below an acknowledged INCR result %d"
                         % (k, final, max(c["ok"])), where)
    for msg, wheres in found.items():
        problems.append("%s on nodes %s" % (msg, ",".join(wheres)))


class RegisterWorkload:
    """The default workload (the module docstring): one redis-py
    connection per client, one op at a time, GET/SET/KEEL.CAS/INCR on
    rotating registers, unique SETs, APPEND tokens, counters; judged by
    keel check over the history and final_checks. one_run drives a
    workload through start, stop, final (after liveness), judge; the
    pipeline workload (pipeline.py) has the same shape."""
    name = "register"

    def __init__(self, cl, seed, hist, clients):
        self.cl = cl
        self.seed = seed
        self.hist = hist
        self.clients = clients
        self.run = None
        self.threads = []

    def start(self):
        self.run = Run(self.seed, self.hist, now_s())
        for i in range(self.clients):
            c = Client(self.run, i, self.cl.nodes[i % len(self.cl.nodes)],
                       random.Random(self.seed * 1000 + i))
            self.threads.append(c)
            c.start()

    def stop(self, problems):
        self.run.stop.set()
        for c in self.threads:
            c.join(timeout=CLIENT_TIMEOUT_S * 3)
            if c.is_alive():
                problems.append("client %d did not stop" % c.idx)

    def final(self, problems):
        final_checks(self.cl, self.run, self.hist, problems)

    def unexpected(self):
        return self.run.unexpected if self.run else []

    def judge(self, hist_path, out_dir, problems):
        """keel check over the whole history (check.txt)."""
        rc, verdict = check_history(hist_path)
        with open(os.path.join(out_dir, "check.txt"), "w") as f:
            f.write(verdict)
        first = verdict.splitlines()[0] if verdict else "?"
        if rc == 1:
            key = [l for l in verdict.splitlines() if l.startswith("key ")]
            problems.insert(0, "not-linearizable (%s)" % (key[0] if key else first))
        elif rc != 0:
            problems.append("checker: %s" % first)

    def line_extra(self):
        return ""

    def stats(self):
        run = self.run

        def tally(outcomes):
            t = {"ok": 0, "fail": 0, "info": 0}
            for o in outcomes:
                t[o] += 1
            return "%d/%d/%d" % (t["ok"], t["fail"], t["info"])
        return "stats (ok/fail/info): unique SETs %s, APPENDs %s, counter INCRs %s" % (
            tally(run.unique.values()),
            tally(o for d in run.tokens.values() for o in d.values()),
            "%d/-/%d" % (sum(len(c["ok"]) for c in run.counters.values()),
                         sum(c["info"] for c in run.counters.values())))


WORKLOADS = ["register", "pipeline", "bank"]


def workload_class(name):
    """register (this file), pipeline (pipeline.py) or bank (bank.py);
    those are imported here: they import this module."""
    if name == "register":
        return RegisterWorkload
    if name == "pipeline":
        import pipeline   # noqa: E402
        return pipeline.PipelineWorkload
    if name == "bank":
        import bank   # noqa: E402
        return bank.BankWorkload
    raise SystemExit("jepsen: unknown workload '%s' (want %s)" % (name, ", ".join(WORKLOADS)))


def check_history(path):
    try:
        r = subprocess.run([KEEL, "check", "--format", "jsonl", "--timeout",
                            str(CHECK_TIMEOUT_S), path], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=CHECK_TIMEOUT_S + 30)
    except subprocess.TimeoutExpired:
        return 2, "keel check did not finish"
    return r.returncode, r.stdout.decode(errors="replace")


def resolve_nemeses(spec):
    out = []
    for part in spec.split(","):
        part = part.strip()
        if part in GROUPS:
            out += GROUPS[part]
        elif part in NEMESES:
            out.append(part)
        else:
            raise SystemExit("jepsen: unknown nemesis '%s' (want one of %s, or a group: %s)"
                             % (part, " ".join(NEMESES), " ".join(GROUPS)))
    seen = []
    for k in out:
        if k not in seen:
            seen.append(k)
    return seen


def one_run(seed, nemesis, nodes, secs, clients, out_root, bug=None, name=None, lay=None,
            snap_entries=None, workload="register"):
    """Returns (result_ok, line, {nemesis kind: times it ran}). lay: the
    netns.Layout when running inside its hub (net=netns), else None.
    workload: register (RegisterWorkload), pipeline (pipeline.py) or bank
    (bank.py); a workload class may name its own history_class (a
    History with the same event() for liveness)."""
    kinds = resolve_nemeses(nemesis)
    wcls = workload_class(workload)
    wtag = "" if workload == "register" else "-" + workload
    name = name or "seed%d-%s-n%d%s%s" % (seed, nemesis.replace(",", "+"), nodes, wtag,
                                         "-" + bug if bug else "")
    out_dir = os.path.join(out_root, name)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    hist_path = os.path.join(out_dir, "history.jsonl")
    problems = []
    cl = Cluster(nodes, bug=bug, lay=lay, snap_entries=snap_entries)
    hist = getattr(wcls, "history_class", History)(hist_path)
    nlog = open(os.path.join(out_dir, "nemesis.log"), "w")
    nlog.write("seed=%d nemesis=%s nodes=%d secs=%g clients=%d workload=%s bug=%s net=%s%s "
               "dir=%s\n" % (seed, nemesis, nodes, secs, clients, workload, bug or "none",
                             cl.net.name, " (%s)" % lay.describe() if lay else "", cl.dir))
    nem = None
    wl = wcls(cl, seed, hist, clients)
    started = False
    codes = {}
    try:
        left = cl.net.leftovers()
        if left:
            problems.append("start: partition rules left from before: %s" % "; ".join(left))
            raise RuntimeError("not clean")
        cl.start()
        if cl.leader(timeout=START_S) is None:
            problems.append("start: no agreed leader within %.0fs" % START_S)
            raise RuntimeError("no leader")
        wl.start()
        started = True
        nem = Nemesis(cl, seed, kinds, secs, nlog)
        nem.start()
        nem.done.wait(timeout=secs + 120)
        if not nem.done.is_set():
            problems.append("nemesis did not finish")
        # a short calm phase with clients still running, then stop them
        time.sleep(2.0)
        wl.stop(problems)
        nem.watch()
        if nem.error:
            problems.append(nem.error)
        if liveness(cl, hist, problems):
            wl.final(problems)
        nem.watch()
    except RuntimeError:
        pass
    finally:
        codes = cl.close()
        hist.close()
    problems += cl.errors
    if nem:
        problems += ["crash: " + c for c in nem.crashes]
        if nem.judged[1] and not nem.judged[0]:
            # Every cut-off leader still followed by every other node
            # 1.2 s into the cut: the partitions did not partition.
            problems.append("partition-ineffective: all %d times, %.1fs into a "
                            "partition-leader cut, every other node still followed the "
                            "cut-off leader" % (nem.judged[1], JUDGE_S))
        if nem.cutoff_answers[1]:
            nlog.write("cut-off nodes answered the harness %d of %d times; the others no "
                       "longer followed them %d of %d times\n"
                       % (nem.cutoff_answers[0], nem.cutoff_answers[1], nem.cutoff_left,
                          nem.cutoff_answers[1]))
    for nid, code in codes.items():
        if code not in (0,) and (nem is None or not any("node %d " % nid in c
                                                         for c in nem.crashes)):
            problems.append("stop: node %d exited %s on SIGTERM (want 0, 'stopped cleanly')"
                            % (nid, code))
    odd = wl.unexpected()
    if odd:
        problems.append("unexpected replies: %d (e.g. %s)" % (len(odd), odd[0]))
    wl.judge(hist_path, out_dir, problems)
    c = hist.counts
    ops = c["ok"] + c["fail"] + c["info"]
    extra = ""
    if nem and nem.stepdowns:
        extra = " slowdisk-stepdown=%d/%d" % (sum(1 for _, s in nem.stepdowns if s),
                                              len(nem.stepdowns))
        # Issue 6: a leader whose disk stalls past the election timeout
        # hands leadership on (node.c check_disk_stall).
        stuck = [d for d, s in nem.stepdowns if not s]
        if stuck:
            problems.append("no-stepdown: the leader stayed leader through "
                            "an fsync stall of %d ms" % stuck[0])
    if snap_entries:
        tot = {}
        for nd in cl.nodes:
            for k, v in nd.snap_tot.items():
                tot[k] = tot.get(k, 0) + v
        extra += " snap_entries=%d snaps=%d/%d installs=%d restores=%d verify_failed=%d" % (
            snap_entries, tot.get("snapshots_taken", 0), tot.get("snapshots_finished", 0),
            tot.get("snapshot_installs", 0), tot.get("snapshot_restored", 0),
            tot.get("snapshot_verify_failed", 0))
        if nem:
            extra += " snapkills=%d/%d" % tuple(nem.snap_kills)
        # The snapshot run must really take snapshots, and a node
        # restarted after them must have started from one.
        if not tot.get("snapshots_finished"):
            problems.append("snapshots-not-exercised: no node finished a snapshot "
                            "(--snapshot-entries %d)" % snap_entries)
        elif nem and nem.snap_kills[1] and not tot.get("snapshot_restored"):
            problems.append("snapshot-restore-not-exercised: nodes were killed and "
                            "restarted, none started from a snapshot")
    faults = ",".join("%s:%d" % kv for kv in sorted(nem.counts.items())) if nem else ""
    if started:
        extra += wl.line_extra()
    line = ("seed=%d nemesis=%s nodes=%d secs=%g%s%s net=%s ops=%d ok=%d fail=%d info=%d "
            "faults=%s%s " % (seed, nemesis, nodes, secs,
                              "" if workload == "register" else " workload=" + workload,
                              " bug=" + bug if bug else "",
                              cl.net.name, ops, c["ok"], c["fail"], c["info"], faults or "-",
                              extra))
    if problems:
        line += "result=VIOLATION " + "; ".join(problems)
        # keep everything of a failing run
        for nd in cl.nodes:
            for src in (nd.log_path, nd.data_dir):
                if os.path.exists(src):
                    dst = os.path.join(out_dir, os.path.basename(src))
                    if os.path.isdir(src):
                        shutil.copytree(src, dst, dirs_exist_ok=True)
                    else:
                        shutil.copy(src, dst)
    else:
        line += "result=ok"
    line += " history=%s" % hist_path
    if started:
        nlog.write(wl.stats() + "\n")
    nlog.write(line + "\n")
    nlog.close()
    shutil.rmtree(cl.dir, ignore_errors=True)
    return not problems, line, dict(nem.counts) if nem else {}


def say(msg):
    print(msg, flush=True)


def main(argv):
    ap = argparse.ArgumentParser(description="Jepsen-style fault test of real keel processes")
    ap.add_argument("--seed", type=int, default=None, help="schedule seed (printed)")
    ap.add_argument("--workload", default="register", choices=WORKLOADS,
                    help="register: the mixed single-op clients (default); pipeline: "
                    "pipelined APPENDs per connection, program order checked (pipeline.py); "
                    "bank: transfers by WATCH/MULTI/EXEC, KEEL.TXN and sessions (bank.py)")
    ap.add_argument("--nemesis", default=None,
                    help="comma list of nemeses or groups (%s; groups: %s); default all, "
                    "for the pipeline workload kill,pause,partition"
                    % (" ".join(NEMESES), " ".join(GROUPS)))
    ap.add_argument("--nodes", type=int, default=3, choices=[3, 5])
    ap.add_argument("--secs", type=float, default=30.0, help="fault phase length")
    ap.add_argument("--clients", type=int, default=None, help="default 2 per node")
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "jepsen"))
    ap.add_argument("--bug", default=None,
                    choices=["stale-read", "early-ack", "reorder", "no-order", "watch-blind"],
                    help="start the servers with --test-bug NAME (a planted bug)")
    ap.add_argument("--snapshot-entries", type=int, default=None,
                    help="start the servers with --snapshot-entries N (snapshot runs)")
    ap.add_argument("--expect-violation", action="store_true",
                    help="exit 0 only if the run reports a violation (planted bugs)")
    ap.add_argument("--net", default=os.environ.get("KEEL_JEPSEN_NET", "auto"),
                    choices=["auto", "netns", "debug"],
                    help="partitions through network namespaces (root), KEEL.DEBUG DROP, "
                    "or netns when possible (default; env KEEL_JEPSEN_NET)")
    a = ap.parse_args(argv)
    if a.nemesis is None:
        a.nemesis = "kill,pause,partition" if a.workload == "pipeline" else "all"
    if not os.access(KEEL, os.X_OK):
        print("jepsen: %s missing (make first)" % KEEL)
        return 2
    mode, info = netns.enter(os.path.abspath(__file__), argv, a.net, say)
    lay = info if mode == "netns" else None
    signal.signal(signal.SIGTERM, kill_started)
    signal.signal(signal.SIGINT, kill_started)
    if a.seed is None:
        # A seed must be printed and replayable; draw one from the OS
        # only when none is given, and print it first.
        a.seed = random.SystemRandom().randrange(1, 1 << 31)
    print("jepsen: seed=%d nemesis=%s nodes=%d secs=%g%s net=%s (%s)"
          % (a.seed, a.nemesis, a.nodes, a.secs,
             "" if a.workload == "register" else " workload=" + a.workload, mode,
             lay.describe() if lay else info), flush=True)
    ok, line, _ = one_run(a.seed, a.nemesis, a.nodes, a.secs, a.clients or 2 * a.nodes, a.out,
                          bug=a.bug, lay=lay, snap_entries=a.snapshot_entries,
                          workload=a.workload)
    print(line, flush=True)
    if a.expect_violation:
        return 0 if not ok else 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
