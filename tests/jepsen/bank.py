#!/usr/bin/python3
"""The bank workload of the Jepsen-style tests (issue 12 section 6,
docs/testing.md "The bank workload"): the seeds' money transfer on real
processes under kill, pause, partition, clock and disk faults.

Run it through jepsen.py (this file is the workload; the cluster, the
nemeses, liveness and the run line are jepsen.py's):

  tests/jepsen/jepsen.py --workload bank --seed S --nemesis N --nodes 3|5 --secs T
  tests/jepsen/bank.py --seed S ...          (the same, --workload bank implied)
  tests/jepsen/bank.py --check HISTORY       (re-judge a kept history, exit 0/1)

ACCOUNTS accounts a0.. (default 5; env KEEL_BANK_ACCOUNTS) start with
BALANCE each; the total T never changes. Clients (default 2 per node,
client i on node i mod n, followers included), one redis-py Connection
each, loop on: a read of every balance (READ_P of the ops) or a transfer
of 1..5 from one random account to another, done one of three ways,
chosen per op:

  watch    WATCH from to; GET from; GET to; (balance < amount: UNWATCH,
           fail) else MULTI; SET from; SET to; APPEND ledger "<id>,"; EXEC
           -- nil: a watched key changed, nothing ran; try again from
           WATCH, at most RETRIES times, then fail.
  txn      KEEL.GETREV from; KEEL.GETREV to; then one
           KEEL.TXN IF 2 from MOD = m1 to MOD = m2 THEN 3 (SET from, SET to,
           APPEND ledger) -- branch not taken: read again, at most RETRIES
           times, then fail.
  session  as txn, but the KEEL.TXN goes inside KEEL.RUN <sid> <seq> of the
           client's session (KEEL.SESSION REGISTER); a timeout, a lost
           connection, UNCERTAIN or "not executed" is retried with the SAME
           (sid, seq), through the next node, up to SESSION_TRIES times or
           SESSION_BUDGET_S:
           the session table answers a retry of a seq that ran with its
           recorded reply, so the transfer runs once and the op ends with a
           definite outcome (counted as retried-definite when an earlier
           try was uncertain). ECHO_P of the definite ones are sent once
           more, unneeded, through the next node: the reply must be the
           first one (else an unexpected reply) and the ledger must show
           the id once.

A read is MULTI; GET every account; EXEC -- one log entry, one revision.

Outcomes: a definite reply -> ok or fail (compare failed, funds short,
retries used up: nothing ran); "not executed" / TRYAGAIN (jepsen.
classify_error) -> fail; a timeout, UNCERTAIN or a lost connection after
the write was sent -> info (session mode: only when every retry was
indeterminate). A connection error before EXEC/KEEL.TXN was sent is a
fail (nothing was sent that could write). After an info the client drops
its connection and continues as a new process.

History (history.jsonl; the liveness writes go to liveness.jsonl):
  {"type":"bank","accounts":[...],"total":T,"initial":{...}}        first line
  {"process":P,"type":"invoke","f":"transfer","value":{"from","to","amount","id"},"time":ns}
  {"process":P,"type":"ok"|"fail"|"info","f":"transfer","value":{...same...},"time":ns}
  {"process":P,"type":"invoke","f":"read","time":ns}
  {"process":P,"type":"ok","f":"read","value":{"a0":..,...},"time":ns}  (or fail/info, no value)
  {"type":"final","f":"ledger","value":"t0-1,t3-7,"}                 last line
The final reads (after healing, through every node, linearizable) are
ordinary read ops just before the final line; the final line's ledger
and the last read come from one MGET.

Judged (check_history, on the file alone; final() also judges every
node's READONLY read):
  wrong-total       an ok read does not sum to T
  negative          an ok read, or a step of the ledger replay, has a
                    negative balance
  final-mismatch    the final balances differ from the initial ones with
                    the ledger's transfers applied in order (a lost update:
                    a transfer computed from stale balances)
  lost-ack          an ok transfer id missing from the ledger
  double-apply      an id twice in the ledger
  failed-but-done   a fail transfer id in the ledger
  unknown-id        an id in the ledger that was never invoked
  read-not-prefix   an ok read is not the state after some prefix of the
                    ledger that includes every transfer acknowledged
                    before the read began and none invoked after it ended
                    (a read that sees a partial or stale state)
  no-progress       not one transfer or not one read acknowledged
and, if `keel check --model bank` knows the model, it must accept the
file (exit 0); "unknown model" (exit 2) is skipped and said on the line.
"""
import bisect
import json
import os
import random
import subprocess
import sys
import threading
import time

import redis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jepsen  # noqa: E402
from jepsen import CLIENT_TIMEOUT_S, KEEL, classify_error, converge, mget, now_s  # noqa: E402

ACCOUNTS = int(os.environ.get("KEEL_BANK_ACCOUNTS", "5"))
BALANCE = 20          # each account's opening balance
LEDGER = "ledger"
READ_P = 0.2          # share of reads; the rest are transfers, a third per mode
MODES = ("watch", "txn", "session")
RETRIES = 5           # watch/txn: compare failures before the transfer gives up
SESSION_TRIES = 40    # session: sends of one (sid, seq) before it gives up
SESSION_BUDGET_S = 20.0   # ... or after this long (a kill-all, an election)
SESSION_TTL_MS = 600000   # long: clock-skew moves the session table's clock
ECHO_P = 0.2          # session: share of definite transfers sent once more
PAUSE_S = (0.0, 0.005)    # between one client's ops
EXCERPT = 3


class BankHistory(jepsen.History):
    """The bank history format (module docstring). jepsen.liveness()
    writes its register-format SETs through event(): those go to a side
    file (liveness.jsonl), counted as usual, so history.jsonl holds only
    bank lines."""

    def __init__(self, path):
        super().__init__(path)
        self.side = open(os.path.join(os.path.dirname(path), "liveness.jsonl"), "w")

    def line(self, obj):
        with self.lock:
            self.f.write(json.dumps(obj) + "\n")

    def op(self, process, typ, f, value=None):
        with self.lock:
            obj = {"process": process, "type": typ, "f": f}
            if value is not None:
                obj["value"] = value
            obj["time"] = time.monotonic_ns()
            self.f.write(json.dumps(obj) + "\n")
            if typ != "invoke":
                self.counts[typ] += 1

    def event(self, process, typ, f, key, value):
        with self.lock:
            self.side.write(json.dumps({"process": process, "type": typ, "f": f, "key": key,
                                        "value": value, "time": time.monotonic_ns()}) + "\n")
            if typ != "invoke":
                self.counts[typ] += 1

    def close(self):
        super().close()
        self.side.close()


def is_ok_reply(r):
    """[OK, OK, <ledger length>]: the replies of SET, SET, APPEND."""
    return (isinstance(r, list) and len(r) == 3 and r[0] in (b"OK", "OK")
            and r[1] in (b"OK", "OK") and isinstance(r[2], int))


class BankClient(threading.Thread):
    def __init__(self, wl, idx, rng):
        super().__init__(daemon=True)
        self.wl = wl
        self.idx = idx
        self.rng = rng
        self.home = idx % len(wl.cl.nodes)
        self.ni = self.home
        self.conn = None
        self.process = wl.hist.new_process()
        self.n = 0
        self.sid = None
        self.seq = 0

    # -- connections
    def connect(self):
        if self.conn is not None:
            return True
        nd = self.wl.cl.nodes[self.ni]
        c = redis.Connection(host=nd.host, port=nd.client_port,
                             socket_timeout=CLIENT_TIMEOUT_S, socket_connect_timeout=1.0)
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

    def send(self, *cmds):
        """cmds in one write (as redis-py's pipelines do)."""
        self.conn.send_packed_command(self.conn.pack_commands(cmds))

    def read(self):
        """One reply; a server error reply is returned as the exception."""
        try:
            return self.conn.read_response()
        except redis.exceptions.ResponseError as e:
            return e

    def odd(self, what):
        with self.wl.lock:
            self.wl.odd.append(what)

    # -- the loop
    def run(self):
        wl = self.wl
        while not wl.stop_ev.is_set():
            if not self.connect():
                self.ni = self.home
                time.sleep(0.1)
                continue
            if self.rng.random() < READ_P:
                self.read_all()
            else:
                mode = self.rng.choice(MODES)
                if mode == "session" and not self.ensure_session():
                    time.sleep(0.1)
                    continue
                f, t = self.rng.sample(wl.accounts, 2)
                self.n += 1
                tr = {"from": f, "to": t, "amount": self.rng.randint(1, 5),
                      "id": "t%d-%d" % (self.idx, self.n)}
                wl.hist.op(self.process, "invoke", "transfer", tr)
                with wl.lock:
                    wl.transfers[tr["id"]] = tr
                try:
                    typ = getattr(self, "xfer_" + mode)(tr)
                except (TypeError, ValueError, IndexError) as e:
                    # a reply of the wrong shape (e.g. an account missing)
                    self.odd("transfer %s by %s: %r" % (tr["id"], mode, e))
                    typ = "info"
                wl.hist.op(self.process, typ, "transfer", tr)
                with wl.lock:
                    wl.tally[mode][typ] += 1
                    wl.outcome[tr["id"]] = typ
                if typ == "info":
                    self.new_process()
            if self.ni != self.home:
                # a session retry moved on to another node: back home
                self.drop_conn()
                self.ni = self.home
            time.sleep(self.rng.uniform(*PAUSE_S))
        self.drop_conn()

    def new_process(self):
        """Jepsen's rule: an indeterminate op may still be in flight, so
        this process is done; a new one goes on, on a new connection."""
        self.drop_conn()
        self.process = self.wl.hist.new_process()

    def read_all(self):
        wl = self.wl
        wl.hist.op(self.process, "invoke", "read")
        typ, val = "info", None
        try:
            self.send(("MULTI",), *[("GET", a) for a in wl.accounts], ("EXEC",))
            replies = [self.read() for _ in range(len(wl.accounts) + 2)]
            ex = replies[-1]
            if isinstance(ex, Exception):
                typ, odd = classify_error(ex)
                if odd:
                    self.odd("read EXEC: %s" % ex)
            elif isinstance(ex, list) and len(ex) == len(wl.accounts):
                try:
                    val = {a: int(v) for a, v in zip(wl.accounts, ex)}
                    typ = "ok"
                except (TypeError, ValueError):
                    self.odd("read EXEC replied %r" % (ex,))
            else:
                self.odd("read EXEC replied %r" % (ex,))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            typ = "info"
        wl.hist.op(self.process, typ, "read", val)
        with wl.lock:
            wl.tally["read"][typ] += 1
        if typ == "info":
            self.new_process()

    # -- transfers; each returns "ok", "fail" or "info"
    def xfer_watch(self, tr):
        wl = self.wl
        f, t, amt = tr["from"], tr["to"], tr["amount"]
        for _ in range(RETRIES):
            try:
                self.send(("WATCH", f, t), ("GET", f), ("GET", t))
                rw, rf, rt = self.read(), self.read(), self.read()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                self.drop_conn()   # nothing that writes was sent
                return "fail"
            if any(isinstance(r, Exception) for r in (rw, rf, rt)):
                e = next(r for r in (rw, rf, rt) if isinstance(r, Exception))
                if classify_error(e)[1]:
                    self.odd("WATCH/GET: %s" % e)
                self.drop_conn()   # clears the watches
                return "fail"
            bf, bt = int(rf), int(rt)
            if bf < amt:
                with wl.lock:
                    wl.short += 1
                try:
                    self.send(("UNWATCH",))
                    self.read()
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                        OSError):
                    self.drop_conn()
                return "fail"
            try:
                self.send(("MULTI",), ("SET", f, str(bf - amt)), ("SET", t, str(bt + amt)),
                          ("APPEND", LEDGER, tr["id"] + ","), ("EXEC",))
                replies = [self.read() for _ in range(5)]
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                return "info"
            ex = replies[-1]
            if ex is None:
                with wl.lock:
                    wl.nil += 1
                continue   # a watched key changed: nothing ran
            if isinstance(ex, Exception):
                typ, odd = classify_error(ex)
                if odd:
                    self.odd("EXEC: %s (queue replies %r)" % (ex, replies[:-1]))
                    if str(ex).startswith("EXECABORT"):
                        return "fail"
                return typ
            if is_ok_reply(ex):
                return "ok"
            self.odd("EXEC replied %r" % (ex,))
            return "info"
        return "fail"

    def getrevs(self, f, t):
        """(balance, mod) of both, or None (nothing was written)."""
        try:
            self.send(("KEEL.GETREV", f), ("KEEL.GETREV", t))
            rf, rt = self.read(), self.read()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            self.drop_conn()
            return None
        for r in (rf, rt):
            if isinstance(r, Exception):
                if classify_error(r)[1]:
                    self.odd("KEEL.GETREV: %s" % r)
                return None
            if not isinstance(r, list) or len(r) != 4:
                self.odd("KEEL.GETREV replied %r" % (r,))
                return None
        return (int(rf[0]), rf[2]), (int(rt[0]), rt[2])

    def txn_cmd(self, tr, revs):
        (bf, mf), (bt, mt) = revs
        f, t, amt = tr["from"], tr["to"], tr["amount"]
        return ("KEEL.TXN", "IF", "2", f, "MOD", "=", str(mf), t, "MOD", "=", str(mt),
                "THEN", "3", "3", "SET", f, str(bf - amt), "3", "SET", t, str(bt + amt),
                "3", "APPEND", LEDGER, tr["id"] + ",")

    def txn_reply(self, r, what):
        """'ok', 'again' (branch not taken) or None (unexpected)."""
        if isinstance(r, list) and len(r) == 2 and r[0] == 1 and is_ok_reply(r[1]):
            return "ok"
        if isinstance(r, list) and len(r) == 2 and r[0] == 0:
            return "again"
        self.odd("%s replied %r" % (what, r))
        return None

    def xfer_txn(self, tr):
        wl = self.wl
        for _ in range(RETRIES):
            revs = self.getrevs(tr["from"], tr["to"])
            if revs is None:
                return "fail"
            if revs[0][0] < tr["amount"]:
                with wl.lock:
                    wl.short += 1
                return "fail"
            try:
                self.send(self.txn_cmd(tr, revs))
                r = self.read()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                return "info"
            if isinstance(r, Exception):
                typ, odd = classify_error(r)
                if odd:
                    self.odd("KEEL.TXN: %s" % r)
                return typ
            v = self.txn_reply(r, "KEEL.TXN")
            if v == "ok":
                return "ok"
            if v is None:
                return "info"
            with wl.lock:
                wl.nil += 1
        return "fail"

    def ensure_session(self):
        if self.sid is not None:
            return True
        try:
            self.send(("KEEL.SESSION", "REGISTER", "TTL", str(SESSION_TTL_MS)))
            r = self.read()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            self.drop_conn()
            return False
        if isinstance(r, int) and r > 0:
            self.sid = r
            with self.wl.lock:
                self.wl.sessions += 1
            return True
        if not isinstance(r, Exception) or classify_error(r)[1]:
            self.odd("KEEL.SESSION REGISTER replied %r" % (r,))
        return False

    def xfer_session(self, tr):
        wl = self.wl
        for _ in range(RETRIES):
            revs = self.getrevs(tr["from"], tr["to"])
            if revs is None:
                return "fail"
            if revs[0][0] < tr["amount"]:
                with wl.lock:
                    wl.short += 1
                return "fail"
            self.seq += 1
            cmd = ("KEEL.RUN", str(self.sid), str(self.seq)) + self.txn_cmd(tr, revs)
            uncertain = False   # an earlier send of this seq may have run
            deadline = now_s() + SESSION_BUDGET_S
            for k in range(SESSION_TRIES):
                if k:
                    with wl.lock:
                        wl.resends += 1
                    time.sleep(self.rng.uniform(0.1, 0.5))
                    if now_s() > deadline:
                        return "info" if uncertain else "fail"
                if not self.connect():
                    self.ni = (self.ni + 1) % len(wl.cl.nodes)
                    continue
                try:
                    self.send(cmd)
                    r = self.read()
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                        OSError):
                    uncertain = True
                    self.drop_conn()
                    self.ni = (self.ni + 1) % len(wl.cl.nodes)
                    continue
                if isinstance(r, Exception):
                    msg = str(r)
                    if msg.startswith("NOSESSION"):
                        # unknown or expired (it never should be here): this
                        # send ran nothing, but an earlier one may have
                        self.sid = None
                        self.odd("KEEL.RUN: %s" % msg)
                        return "info" if uncertain else "fail"
                    typ, odd = classify_error(r)
                    if odd:
                        # SESSIONOLD/SESSIONREPLY cannot happen one seq at a
                        # time with short replies
                        self.odd("KEEL.RUN: %s" % msg)
                        return "info"
                    if typ == "info":
                        uncertain = True
                    # "not executed" (this send only) or UNCERTAIN: the
                    # same seq again, through the next node
                    self.drop_conn()
                    self.ni = (self.ni + 1) % len(wl.cl.nodes)
                    continue
                result = self.txn_reply(r, "KEEL.RUN KEEL.TXN")
                if result is not None and self.rng.random() < ECHO_P:
                    self.echo(cmd, r)
                break
            else:
                return "info" if uncertain else "fail"
            if result is None:
                return "info"   # an unexpected reply (noted)
            if uncertain:
                with wl.lock:
                    wl.retried_definite += 1
            if result == "ok":
                return "ok"
            with wl.lock:
                wl.nil += 1
        return "fail"


    def echo(self, cmd, first):
        """A retry nobody needed: the same (sid, seq) once more, through
        the next node. It must get the recorded reply and run nothing (the
        ledger shows the id once); any other definite reply is an
        unexpected reply, which fails the run."""
        wl = self.wl
        nd = wl.cl.nodes[(self.ni + 1) % len(wl.cl.nodes)]
        try:
            r = nd.command(*cmd, timeout=CLIENT_TIMEOUT_S)
        except redis.exceptions.ResponseError as e:
            if classify_error(e)[1]:
                self.odd("echo of KEEL.RUN %s %s: %s" % (cmd[1], cmd[2], e))
            return
        except (redis.exceptions.RedisError, OSError):
            return
        with wl.lock:
            wl.echoes += 1
            if r != first:
                wl.odd.append("echo of KEEL.RUN %s %s replied %r, first %r"
                              % (cmd[1], cmd[2], r, first))


def parse_ledger(text):
    return [x for x in text.split(",") if x] if text else []


def replay(initial, accounts, transfers, ids):
    """States after each prefix of the ledger (len(ids)+1 tuples in account
    order) and the first negative step, if any."""
    bal = dict(initial)
    states = [tuple(bal[a] for a in accounts)]
    neg = None
    for i, x in enumerate(ids):
        tr = transfers.get(x)
        if tr is not None:
            bal[tr["from"]] -= tr["amount"]
            bal[tr["to"]] += tr["amount"]
            if neg is None and bal[tr["from"]] < 0:
                neg = (i, x, tr["from"], bal[tr["from"]])
        states.append(tuple(bal[a] for a in accounts))
    return states, neg


def check_history(path):
    """Judges a bank history file on its own; returns (problems, figures)."""
    problems = []
    head, final = None, None
    transfers, inv_t, done = {}, {}, {}      # id -> value, invoke ns, (type, ns)
    reads = []                                # (invoke ns, ok ns, value)
    open_read = {}
    with open(path) as f:
        for n, text in enumerate(f, 1):
            try:
                o = json.loads(text)
            except ValueError:
                problems.append("history line %d does not parse" % n)
                continue
            if o.get("type") == "bank":
                head = o
            elif o.get("type") == "final":
                final = o
            elif o.get("f") == "transfer":
                v = o["value"]
                if o["type"] == "invoke":
                    transfers[v["id"]] = v
                    inv_t[v["id"]] = o["time"]
                else:
                    done[v["id"]] = (o["type"], o["time"])
            elif o.get("f") == "read":
                if o["type"] == "invoke":
                    open_read[o["process"]] = o["time"]
                else:
                    t0 = open_read.pop(o["process"], None)
                    if o["type"] == "ok" and t0 is not None:
                        reads.append((t0, o["time"], o["value"]))
    if head is None:
        return ["history: no bank header line"], {}
    accounts, total, initial = head["accounts"], head["total"], head["initial"]
    fig = {"transfers": len(transfers), "reads": len(reads)}
    if sum(initial.values()) != total:
        problems.append("header: initial balances sum to %d, total %d"
                        % (sum(initial.values()), total))
    # every ok read: the total, no negative balance
    wrong = [r for r in reads if sum(r[2].get(a, 0) for a in accounts) != total]
    if wrong:
        r = wrong[0][2]
        problems.append("wrong-total: %d of %d ok reads do not sum to %d (e.g. %s = %d)"
                        % (len(wrong), len(reads), total, r, sum(r.values())))
    negr = [r for r in reads if any(v < 0 for v in r[2].values())]
    if negr:
        problems.append("negative: %d ok reads have a negative balance (e.g. %s)"
                        % (len(negr), negr[0][2]))
    if final is None:
        problems.append("history: no final ledger line (no final read)")
        return problems, fig
    ids = parse_ledger(final["value"])
    fig["ledger"] = len(ids)
    seen = {}
    for x in ids:
        seen[x] = seen.get(x, 0) + 1
    unknown = [x for x in seen if x not in transfers]
    dup = [x for x, c in seen.items() if c > 1]
    lost = [x for x, (t, _) in done.items() if t == "ok" and x not in seen]
    failed = [x for x, (t, _) in done.items() if t == "fail" and x in seen]
    for kind, xs in (("unknown-id", unknown), ("double-apply", dup), ("lost-ack", lost),
                     ("failed-but-done", failed)):
        if xs:
            problems.append("%s: %d transfer ids (e.g. %s)" % (kind, len(xs), ",".join(xs[:3])))
    states, neg = replay(initial, accounts, transfers, ids)
    if neg:
        problems.append("negative: the ledger replay takes %s to %d at transfer %d (%s)"
                        % (neg[2], neg[3], neg[0] + 1, neg[1]))
    if sum(states[-1]) != total:
        problems.append("ledger replay sums to %d, not %d" % (sum(states[-1]), total))
    # the last read is a final read, from the MGET the ledger line came from
    if not reads:
        problems.append("no-progress: no read acknowledged")
        return problems, fig
    last = reads[-1][2]
    want = dict(zip(accounts, states[-1]))
    if last != want:
        problems.append("final-mismatch: final balances %s, initial + ledger (%d transfers) "
                        "gives %s" % (last, len(ids), want))
    if not any(t == "ok" for t, _ in done.values()):
        problems.append("no-progress: not one transfer acknowledged")
    # every ok read is a ledger prefix state, within its real-time window
    where = {}
    for i, s in enumerate(states):
        where.setdefault(s, []).append(i)
    pos = {x: i + 1 for i, x in enumerate(ids) if seen.get(x) == 1}
    acked = sorted((tm, pos[x]) for x, (t, tm) in done.items() if t == "ok" and x in pos)
    ack_t = [a for a, _ in acked]
    ack_max, m = [], 0
    for _, p in acked:
        m = max(m, p)
        ack_max.append(m)
    inv_max, m = [], 0
    for x in ids:
        m = max(m, inv_t.get(x, 0))
        inv_max.append(m)
    bad = []
    for t0, t1, val in reads:
        st = tuple(val.get(a) for a in accounts)
        k = bisect.bisect_left(ack_t, t0)          # acked strictly before the read began
        lo = ack_max[k - 1] if k else 0
        hi = bisect.bisect_right(inv_max, t1)      # prefixes invoked by the read's end
        cand = where.get(st, [])
        j = bisect.bisect_left(cand, lo)
        if j >= len(cand) or cand[j] > hi:
            bad.append((val, lo, hi, cand[:3]))
    if bad:
        val, lo, hi, cand = bad[0]
        problems.append("read-not-prefix: %d of %d ok reads are not the state after a ledger "
                        "prefix of %d..%d transfers (e.g. %s; that state is after prefixes %s)"
                        % (len(bad), len(reads), lo, hi, val, cand or "none"))
    return problems, fig


def model_check(path):
    """`keel check --model bank` when the binary knows the model:
    (rc, first line, skipped?)."""
    try:
        r = subprocess.run([KEEL, "check", "--model", "bank", path], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=jepsen.CHECK_TIMEOUT_S + 30)
    except subprocess.TimeoutExpired:
        return 2, "keel check did not finish", False
    out = r.stdout.decode(errors="replace")
    first = out.splitlines()[0] if out else ""
    if r.returncode == 2 and "unknown model" in out:
        return 2, first, True
    return r.returncode, out, False


class BankWorkload:
    """jepsen.one_run's workload interface (see RegisterWorkload)."""
    name = "bank"
    history_class = BankHistory

    def __init__(self, cl, seed, hist, clients):
        self.cl = cl
        self.seed = seed
        self.hist = hist
        self.clients = clients
        self.accounts = ["a%d" % i for i in range(ACCOUNTS)]
        self.initial = {a: BALANCE for a in self.accounts}
        self.total = BALANCE * ACCOUNTS
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.odd = []
        self.tally = {m: {"ok": 0, "fail": 0, "info": 0} for m in MODES + ("read",)}
        self.outcome = {}
        self.transfers = {}       # id -> the invoke's value
        self.short = 0            # transfers refused: funds short
        self.nil = 0              # EXEC nil / branch not taken (then retried)
        self.resends = 0          # session: re-sends of one (sid, seq)
        self.retried_definite = 0
        self.echoes = 0           # session: unneeded same-seq re-sends answered
        self.sessions = 0
        self.ledger_len = None
        self.bankcheck = "-"
        self.threads = []

    def seed_accounts(self):
        """MSET of every opening balance (idempotent: retried on any node
        until one answers OK)."""
        args = ["MSET"]
        for a in self.accounts:
            args += [a, str(self.initial[a])]
        deadline = now_s() + jepsen.START_S
        i = 0
        while now_s() < deadline:
            nd = self.cl.nodes[i % len(self.cl.nodes)]
            i += 1
            try:
                if nd.command(*args, timeout=CLIENT_TIMEOUT_S) in (b"OK", "OK"):
                    return True
            except (redis.exceptions.RedisError, OSError):
                time.sleep(0.2)
        return False

    def start(self):
        self.hist.line({"type": "bank", "accounts": self.accounts, "total": self.total,
                        "initial": self.initial})
        if not self.seed_accounts():
            self.odd.append("could not seed the accounts within %gs" % jepsen.START_S)
            return
        for i in range(self.clients):
            c = BankClient(self, i, random.Random(self.seed * 1000 + i))
            self.threads.append(c)
            c.start()

    def stop(self, problems):
        self.stop_ev.set()
        for c in self.threads:
            c.join(timeout=SESSION_BUDGET_S + 3 * CLIENT_TIMEOUT_S)
            if c.is_alive():
                problems.append("client %d did not stop" % c.idx)

    def unexpected(self):
        return self.odd

    def final(self, problems):
        """Every node read linearizably (into the history) and READONLY;
        each read judged against its own ledger."""
        cl = self.cl
        if not converge(cl):
            problems.append("convergence: nodes did not all apply the leader's commit "
                            "index in 20s")
        found = {}
        last_ledger = None
        transfers = dict(self.transfers)
        for nd in cl.nodes:
            for local in (False, True):
                where = "%d%s" % (nd.id, "L" if local else "")
                p = self.hist.new_process()
                if not local:
                    self.hist.op(p, "invoke", "read")
                try:
                    vals = mget(nd, self.accounts + [LEDGER], local)
                    bal = {a: int(vals.get(a)) for a in self.accounts}
                except (redis.exceptions.RedisError, OSError, TypeError, ValueError) as e:
                    if not local:
                        self.hist.op(p, "info", "read")
                    problems.append("final read on node %s failed: %s" % (where, e))
                    continue
                ledger = (vals.get(LEDGER) or b"").decode(errors="replace")
                if not local:
                    self.hist.op(p, "ok", "read", bal)
                    last_ledger = ledger
                ids = parse_ledger(ledger)
                states, _ = replay(self.initial, self.accounts, transfers, ids)
                want = dict(zip(self.accounts, states[-1]))
                if bal != want:
                    found.setdefault("final-mismatch: final balances %s, initial + ledger "
                                     "(%d transfers) gives %s" % (bal, len(ids), want),
                                     []).append(where)
                if sum(bal.values()) != self.total:
                    found.setdefault("wrong-total: final balances sum to %d, not %d"
                                     % (sum(bal.values()), self.total), []).append(where)
        for msg, wheres in found.items():
            problems.append("%s on nodes %s" % (msg, ",".join(wheres)))
        if last_ledger is not None:
            self.hist.line({"type": "final", "f": "ledger", "value": last_ledger})
            self.ledger_len = len(parse_ledger(last_ledger))

    def judge(self, hist_path, out_dir, problems):
        found, fig = check_history(hist_path)
        # final() reported the final reads of every node already
        lines = [p for p in found if not (p.startswith("final-mismatch") and
                                          any(q.startswith("final-mismatch") for q in problems))]
        out = ""
        if self.ledger_len is not None:
            rc, out, skipped = model_check(hist_path)
            if skipped:
                self.bankcheck = "skipped(unknown model)"
            else:
                self.bankcheck = "ok" if rc == 0 else "rc%d" % rc
                if rc != 0:
                    # its verdict and the first violation it names
                    first = " ".join(out.splitlines()[:2])[:240] if out else "?"
                    lines.append("keel check --model bank: exit %d: %s" % (rc, first))
        with open(os.path.join(out_dir, "check.txt"), "w") as f:
            f.write("bank.py check_history: %s\n" % ("; ".join(found) if found else "ok"))
            f.write("keel check --model bank: %s\n%s" % (self.bankcheck, out))
        problems[:0] = lines

    def line_extra(self):
        def t(m):
            d = self.tally[m]
            return "%d/%d/%d" % (d["ok"], d["fail"], d["info"])
        return (" accounts=%d total=%d transfers=%d watch=%s txn=%s session=%s read=%s "
                "short=%d retry=%d resends=%d retried-definite=%d echoes=%d ledger=%s bankcheck=%s"
                % (len(self.accounts), self.total, len(self.outcome), t("watch"), t("txn"),
                   t("session"), t("read"), self.short, self.nil, self.resends,
                   self.retried_definite, self.echoes,
                   "-" if self.ledger_len is None else self.ledger_len, self.bankcheck))

    def stats(self):
        return ("stats (ok/fail/info): transfers by watch %s, txn %s, session %s; reads %s; "
                "funds short %d; compare retries %d; session re-sends %d, definite after an "
                "uncertain send %d, echoes %d; sessions %d" % tuple(
                    ["%d/%d/%d" % (self.tally[m]["ok"], self.tally[m]["fail"],
                                   self.tally[m]["info"]) for m in MODES + ("read",)]
                    + [self.short, self.nil, self.resends, self.retried_definite,
                       self.echoes, self.sessions]))


def main(argv):
    if argv[:1] == ["--check"] and len(argv) == 2:
        problems, fig = check_history(argv[1])
        print("%s: %s %s" % (argv[1], " ".join("%s=%s" % kv for kv in sorted(fig.items())),
                             "VIOLATION " + "; ".join(problems) if problems else "ok"))
        return 1 if problems else 0
    return jepsen.main(["--workload", "bank"] + argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
