#!/usr/bin/python3
"""The pipeline workload of the Jepsen-style tests (issue 12 section 1,
docs/testing.md "The pipeline workload"): program order per connection
under faults, on real processes.

Run it through jepsen.py (this file is the workload; the cluster, the
nemeses, liveness, the run line and the history are jepsen.py's):

  tests/jepsen/jepsen.py --workload pipeline --seed S --nemesis N --nodes 3|5 --secs T
  tests/jepsen/pipeline.py --seed S ...      (the same, --workload pipeline implied)

Clients: one thread per connection (default 2 per node, client i on node
i mod n), redis-py Connection objects. Each sends batches of 8-32
`APPEND <key> "<seq>,"` in one write (pack_commands, as redis-py's
pipeline(transaction=False) does), seq increasing per client, then reads
the replies one by one:

  integer reply (the new length)        -> ok
  an error saying "not executed" or
  TRYAGAIN (jepsen.classify_error)      -> fail: must not be in the value
  UNCERTAIN, a timeout, a lost or
  refused connection                    -> info: may or may not be there
  any other reply                       -> info, and an unexpected reply
                                           (fails the run)

After a connection error or timeout the rest of the batch is info, the
connection is dropped and the client reconnects (a new connection is a
new stream) and continues with higher seqs on a NEW key: every key is
written by exactly one connection, so its whole value must be in that
connection's program order. A key also rolls over to a new one (on the
same connection) after KEY_TOKENS tokens, to keep APPEND's copies short.

At the end (after jepsen.py's heal and liveness, and once every node has
applied the leader's commit index), every key is read through every node,
linearizably and with READONLY (that replica's own state), and judged:

  order             the seqs in the value strictly increase (program order;
                    the excerpt around the first inversion is printed)
  double-execution  a token twice
  lost-ack          an acknowledged token missing
  failed-but-done   a token answered "not executed" present
  alien             a token this key was never sent
  ack-position      an acknowledged APPEND replied length L, but the value's
                    first L bytes do not end with its token (the node ran it
                    at another place than it said)
  no-progress       not one APPEND acknowledged in the whole run

The run line adds `tokens=T present=P notexec=E` (tokens sent, present in
the final values, "not executed" replies). The history (history.jsonl)
has an invoke and a completion line per APPEND in the project's field
names (the token as the value of every line); a process id is one key (one
connection), with up to 32 ops in flight, so it is not a single-op-per-
process history and keel check does not judge it (an exhaustive
linearizability search over 32 concurrent appends per key would explode);
the checks above are exact instead.

Every loop is bounded: clients stop when jepsen.py says so, a batch gives
up after BATCH_S, every socket read after CLIENT_TIMEOUT_S.
"""
import os
import random
import sys
import threading
import time

import redis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jepsen  # noqa: E402
from jepsen import CLIENT_TIMEOUT_S, classify_error, converge, mget, now_s  # noqa: E402

BATCH_MIN, BATCH_MAX = 8, 32
KEY_TOKENS = 1500     # tokens per key before the client moves on to a new key
BATCH_S = 10.0        # one batch (send and every reply) gives up after this
EXCERPT = 4           # tokens shown either side of an order violation
PAUSE_S = (0.01, 0.05)    # between one client's batches: ~4k APPENDs/s in all,
                          # not the ~30k/s it could do (2 shared cores; history size)


class KeyLog:
    """One key: written by one connection of one client. tokens: seq ->
    [outcome, reply length or None], in the order sent."""

    def __init__(self, key, client, node, process):
        self.key = key
        self.client = client
        self.node = node
        self.process = process
        self.tokens = {}


class PipeClient(threading.Thread):
    def __init__(self, wl, idx, node, rng):
        super().__init__(daemon=True)
        self.wl = wl
        self.idx = idx
        self.node = node
        self.rng = rng
        self.conn = None
        self.klog = None
        self.nkeys = 0
        self.seq = 0

    def connect(self):
        """A live connection before anything is recorded; every new
        connection starts a new key."""
        if self.conn is not None:
            return True
        c = redis.Connection(host=self.node.host, port=self.node.client_port,
                             socket_timeout=CLIENT_TIMEOUT_S, socket_connect_timeout=1.0)
        try:
            c.connect()
        except (redis.exceptions.RedisError, OSError):
            c.disconnect()
            return False
        self.conn = c
        self.new_key()
        return True

    def new_key(self):
        self.nkeys += 1
        k = KeyLog("p%d-%d" % (self.idx, self.nkeys), self.idx, self.node.id,
                   self.wl.hist.new_process())
        with self.wl.lock:
            self.wl.keys[k.key] = k
        self.klog = k

    def drop_conn(self):
        if self.conn is not None:
            self.conn.disconnect()
            self.conn = None

    def run(self):
        while not self.wl.stop_ev.is_set():
            if not self.connect():
                time.sleep(0.1)
                continue
            self.batch()
            time.sleep(self.rng.uniform(*PAUSE_S))
        self.drop_conn()

    def finish(self, seq, typ, length=None):
        k = self.klog
        k.tokens[seq][0] = typ
        k.tokens[seq][1] = length
        self.wl.hist.event(k.process, typ, "append", k.key, "%d," % seq)

    def batch(self):
        wl = self.wl
        if len(self.klog.tokens) >= KEY_TOKENS:
            self.new_key()
        k = self.klog
        n = self.rng.randint(BATCH_MIN, BATCH_MAX)
        seqs = list(range(self.seq + 1, self.seq + 1 + n))
        self.seq += n
        for q in seqs:
            k.tokens[q] = ["info", None]   # until a reply says otherwise
            wl.hist.event(k.process, "invoke", "append", k.key, "%d," % q)
        deadline = now_s() + BATCH_S
        i = 0
        try:
            self.conn.send_packed_command(self.conn.pack_commands(
                [("APPEND", k.key, "%d," % q) for q in seqs]))
            while i < n:
                if now_s() > deadline:
                    raise redis.exceptions.TimeoutError("batch over %gs" % BATCH_S)
                try:
                    res = self.conn.read_response()
                except redis.exceptions.ResponseError as e:
                    typ, odd = classify_error(e)
                    if "not executed" in str(e):
                        with wl.lock:
                            wl.notexec += 1
                    if odd:
                        with wl.lock:
                            wl.odd.append("APPEND %s %d: %s" % (k.key, seqs[i], e))
                    self.finish(seqs[i], typ)
                    i += 1
                    continue
                if isinstance(res, int):
                    self.finish(seqs[i], "ok", res)
                else:
                    with wl.lock:
                        wl.odd.append("APPEND %s %d replied %r" % (k.key, seqs[i], res))
                    self.finish(seqs[i], "info")
                i += 1
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            # The rest may or may not run (they are on their way, or in
            # a paused node's socket); this stream is over.
            for q in seqs[i:]:
                self.finish(q, "info")
            self.drop_conn()


class PipelineWorkload:
    """jepsen.one_run's workload interface (see RegisterWorkload)."""
    name = "pipeline"

    def __init__(self, cl, seed, hist, clients):
        self.cl = cl
        self.seed = seed
        self.hist = hist
        self.clients = clients
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.keys = {}        # key -> KeyLog
        self.odd = []         # unexpected replies
        self.notexec = 0      # replies saying "not executed"
        self.present = 0      # tokens in the final values (linearizable read, first node)
        self.threads = []

    def start(self):
        for i in range(self.clients):
            c = PipeClient(self, i, self.cl.nodes[i % len(self.cl.nodes)],
                           random.Random(self.seed * 1000 + i))
            self.threads.append(c)
            c.start()

    def stop(self, problems):
        self.stop_ev.set()
        for c in self.threads:
            c.join(timeout=BATCH_S + CLIENT_TIMEOUT_S)
            if c.is_alive():
                problems.append("client %d did not stop" % c.idx)

    def unexpected(self):
        return self.odd

    def judge(self, hist_path, out_dir, problems):
        """Nothing more: final() judged every key (see the docstring on
        why keel check does not read this history)."""

    def final(self, problems):
        cl = self.cl
        keys = sorted(self.keys)
        # kind -> {"keys": keys it was seen in, "nodes": reads it was seen
        # in, "first": the first message}: one problem per kind, so a
        # bug seen in every key makes one readable line, not hundreds.
        found = {}

        def note(kind, key, where, msg):
            f = found.setdefault(kind, {"keys": set(), "nodes": [], "first": msg})
            f["keys"].add(key)
            if where not in f["nodes"]:
                f["nodes"].append(where)

        if not converge(cl):
            problems.append("convergence: nodes did not all apply the leader's commit "
                            "index in 20s")
        first = True
        for nd in cl.nodes:
            for local in (False, True):
                try:
                    vals = mget(nd, keys, local)
                except (redis.exceptions.RedisError, OSError) as e:
                    problems.append("final read on node %d%s failed: %s"
                                    % (nd.id, " (local)" if local else "", e))
                    continue
                where = "%d%s" % (nd.id, "L" if local else "")
                present = 0
                for key in keys:
                    v = vals.get(key)
                    text = v.decode(errors="replace") if v is not None else ""
                    if not local:
                        p = self.hist.new_process()
                        self.hist.event(p, "invoke", "read", key, None)
                        self.hist.event(p, "ok", "read", key, text or None)
                    present += self.judge_key(
                        self.keys[key], text,
                        lambda kind, msg, key=key, where=where: note(kind, key, where, msg))
                if first and not local:
                    self.present = present
                    first = False
        for kind, f in found.items():
            problems.append("%s: %d of %d keys, e.g. %s; seen on nodes %s" % (
                kind, len(f["keys"]), len(keys), f["first"], ",".join(f["nodes"])))
        if not any(t[0] == "ok" for k in self.keys.values() for t in k.tokens.values()):
            problems.append("no-progress: not one APPEND was acknowledged")

    @staticmethod
    def judge_key(k, text, note):
        """Every check of one key's final value; returns the tokens found."""
        parts = [t for t in text.split(",") if t] if text else []
        seqs, alien = [], []
        for t in parts:
            try:
                q = int(t)
            except ValueError:
                alien.append(t)
                continue
            if str(q) != t or q not in k.tokens:
                alien.append(t)
                continue
            seqs.append(q)
        if alien:
            note("alien", "tokens %s never sent to %s" % (alien[:3], k.key))
        seen = {}
        for q in seqs:
            seen[q] = seen.get(q, 0) + 1
        dup = sorted(q for q, c in seen.items() if c > 1)
        if dup:
            note("double-execution", "tokens twice in %s: %s" % (k.key, dup[:5]))
        inv = [i for i in range(1, len(seqs)) if seqs[i] <= seqs[i - 1]]
        if inv:
            i = inv[0]
            lo, hi = max(0, i - EXCERPT), min(len(seqs), i + EXCERPT + 1)
            late = {}
            for j in inv:
                o = k.tokens[seqs[j]][0]
                late[o] = late.get(o, 0) + 1
            note("order", "%s (client %d on node %d, one connection) breaks program order "
                 "%d times (those tokens: %s), first: %s%s%s" % (
                     k.key, k.client, k.node, len(inv),
                     " ".join("%s %d" % kv for kv in sorted(late.items())),
                     "..." if lo else "", ",".join(str(q) for q in seqs[lo:hi]),
                     "..." if hi < len(seqs) else ""))
        lost = [q for q, (o, _) in k.tokens.items() if o == "ok" and q not in seen]
        if lost:
            note("lost-ack", "%d acknowledged APPENDs missing from %s (e.g. %s)"
                 % (len(lost), k.key, lost[:3]))
        done = [q for q, (o, _) in k.tokens.items() if o == "fail" and q in seen]
        if done:
            note("failed-but-done", "%d APPENDs answered 'not executed' are in %s (e.g. %s)"
                 % (len(done), k.key, done[:3]))
        # A reply's length says where the token went: the first L bytes
        # of the value end with it (only this connection appends here).
        off = []
        for q, (o, length) in k.tokens.items():
            if o != "ok" or length is None or q not in seen:
                continue
            tok = "%d," % q
            head = text[:length]
            if not (head == tok or head.endswith("," + tok)):
                off.append((q, length))
        if off:
            q, length = off[0]
            note("ack-position", "%d acknowledged APPENDs to %s replied a length whose "
                 "prefix does not end with their token (e.g. %d replied %d, the value's "
                 "first %d bytes end '%s')" % (len(off), k.key, q, length, length,
                                               text[max(0, length - 16):length]))
        return len(seen)

    def line_extra(self):
        sent = sum(len(k.tokens) for k in self.keys.values())
        return " keys=%d tokens=%d present=%d notexec=%d" % (len(self.keys), sent,
                                                             self.present, self.notexec)

    def stats(self):
        t = {"ok": 0, "fail": 0, "info": 0}
        for k in self.keys.values():
            for o, _ in k.tokens.values():
                t[o] += 1
        return ("stats (ok/fail/info): pipelined APPENDs %d/%d/%d over %d keys, "
                "%d 'not executed' replies" % (t["ok"], t["fail"], t["info"],
                                               len(self.keys), self.notexec))


if __name__ == "__main__":
    sys.exit(jepsen.main(["--workload", "pipeline"] + sys.argv[1:]))
