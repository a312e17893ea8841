"""keel server end to end: Redis semantics and error texts through redis-py
and raw sockets, any node accepts any command, pipelining, RESP3, READONLY,
kill -9 of the leader under load, catch-up after restart, malformed input,
output bounds, redis-benchmark and the keel CLI."""
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest
import redis

from conftest import KEEL, Cluster, parse_info


def raw(node, data, timeout=3.0, until=None):
    """Sends bytes, returns every byte received until `until` is seen, the
    server closes, or the timeout passes."""
    s = socket.create_connection(("127.0.0.1", node.client_port), timeout=timeout)
    try:
        s.sendall(data)
        buf = b""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if until is not None and until in buf:
                break
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                return buf, True
            buf += chunk
        return buf, False
    finally:
        s.close()


def err_text(fn, *args):
    with pytest.raises(redis.exceptions.ResponseError) as e:
        fn(*args)
    return str(e.value)


# ---- server-local commands -------------------------------------------------

def test_local_commands(cluster):
    c = cluster.nodes[0].client()
    assert c.ping() is True
    assert raw(cluster.nodes[0], b"PING hi\r\n", until=b"hi\r\n")[0] == b"$2\r\nhi\r\n"
    assert c.echo("x y") == b"x y"
    assert c.execute_command("SELECT", "0") in (True, b"OK")
    assert err_text(c.execute_command, "SELECT", "1") == "DB index is out of range"
    assert err_text(c.execute_command, "SELECT", "x") == "value is not an integer or out of range"
    cid = c.client_id()
    assert isinstance(cid, int) and cid > 0
    assert c.client_getname() is None
    assert c.client_setname("tester") is True
    assert c.client_getname() == "tester"
    assert "Client names cannot contain spaces" in err_text(c.execute_command, "CLIENT", "SETNAME", "a b")
    assert err_text(c.execute_command, "CLIENT", "NOPE") == "unknown subcommand 'NOPE'. Try CLIENT HELP."
    out, _ = raw(cluster.nodes[0], b"COMMAND COUNT\r\n", until=b"\r\n")
    n = int(out[1:-2])
    out, _ = raw(cluster.nodes[0], b"COMMAND LIST\r\n", until=b"$3\r\nget\r\n", timeout=2)
    out, _ = raw(cluster.nodes[0], b"COMMAND LIST\r\nPING\r\n", until=b"+PONG\r\n")
    names = [x for x in out.split(b"\r\n")[1:-2] if not x.startswith(b"$")]
    assert out.startswith(b"*%d\r\n" % n) and len(names) == n, out[:80]
    assert {b"get", b"set", b"ping", b"info", b"scan", b"hello"} <= set(names)
    assert b"keel.expire-delete" not in names  # internal: never a client command
    out, _ = raw(cluster.nodes[0], b"COMMAND DOCS get\r\nPING\r\n", until=b"+PONG\r\n")
    assert out.startswith(b"*2\r\n$3\r\nget\r\n*6\r\n$7\r\nsummary\r\n"), out
    info = c.info()
    for k in ("redis_version", "connected_clients", "total_commands_processed",
              "raft_role", "raft_term", "raft_leader", "raft_commit_index",
              "raft_applied_index"):
        assert k in info, k
    only, _ = raw(cluster.nodes[0], b"INFO raft\r\n", until=b"raft_poisoned")
    assert b"# Raft" in only and b"# Server" not in only


def test_unknown_command_and_arity_errors_match_redis(cluster):
    nd = cluster.nodes[1]
    out, _ = raw(nd, b"*3\r\n$3\r\nFOO\r\n$1\r\na\r\n$2\r\nbc\r\n", until=b"\r\n")
    assert out == b"-ERR unknown command 'FOO', with args beginning with: 'a' 'bc' \r\n"
    out, _ = raw(nd, b"GET\r\n", until=b"\r\n")
    assert out == b"-ERR wrong number of arguments for 'get' command\r\n"
    out, _ = raw(nd, b"KEEL.EXPIRE-DELETE k 1\r\n", until=b"\r\n")
    assert out.startswith(b"-ERR unknown command 'KEEL.EXPIRE-DELETE'")


def test_debug_refused_without_test_faults(tmp_path):
    c = Cluster(1, extra=[]).start()
    try:
        out, _ = raw(c.nodes[0], b"KEEL.DEBUG HEAL\r\n", until=b"\r\n")
        assert out.startswith(b"-ERR KEEL.DEBUG is disabled: start keel server with --test-faults")
    finally:
        c.close()


# ---- kv commands through the cluster ---------------------------------------

def test_string_commands_redis_semantics(cluster):
    c = cluster.nodes[0].client()
    c.flushall()
    assert c.set("k", "v") is True
    assert c.get("k") == b"v"
    assert c.set("k", "w", nx=True) is None
    assert c.set("k", "w", xx=True) is True
    assert c.set("k", "z", get=True) == b"w"
    assert c.setnx("k", "q") is False and c.setnx("k2", "q") is True
    assert c.getset("k", "g") == b"z"
    assert c.getdel("k2") == b"q" and c.get("k2") is None
    assert c.mset({"a": "1", "b": "2"}) is True
    assert c.mget("a", "b", "nope") == [b"1", b"2", None]
    assert c.msetnx({"a": "x", "c": "3"}) is False and c.get("c") is None
    assert c.exists("a", "b", "nope") == 2
    assert c.delete("a", "nope") == 1 and c.unlink("b") == 1
    assert c.incr("n") == 1 and c.incrby("n", 10) == 11
    assert c.decr("n") == 10 and c.decrby("n", 5) == 5
    c.set("s", "abc")
    assert err_text(c.incr, "s") == "value is not an integer or out of range"
    assert c.append("s", "de") == 5 and c.strlen("s") == 5
    assert c.type("s") == b"string" and c.type("nope") == b"none"
    assert c.ttl("s") == -1 and c.ttl("nope") == -2
    assert c.expire("s", 100) is True and 98 <= c.ttl("s") <= 100
    assert 0 < c.pttl("s") <= 100000
    assert c.persist("s") is True and c.ttl("s") == -1
    assert c.setex("e", 100, "v") is True and 98 <= c.ttl("e") <= 100
    assert c.psetex("pe", 100000, "v") is True and c.pttl("pe") > 90000
    assert c.pexpire("pe", 50) is True
    time.sleep(0.3)
    assert c.get("pe") is None  # reads never return an expired key
    at = int(time.time()) + 1000
    assert c.expireat("e", at) is True and 990 <= c.ttl("e") <= 1000
    assert c.pexpireat("e", at * 1000) is True
    assert sorted(c.keys("*")) == sorted([b"k", b"n", b"s", b"e"])
    assert c.dbsize() == 4
    seen, cur = set(), 0
    for _ in range(100):
        cur, ks = c.scan(cur, count=2)
        seen.update(ks)
        if cur == 0:
            break
    assert seen == {b"k", b"n", b"s", b"e"}
    assert c.flushdb() is True and c.dbsize() == 0


def test_write_on_one_node_read_on_every_other(cluster):
    for i, writer in enumerate(cluster.nodes):
        w = writer.client()
        for j in range(20):
            w.set("x%d_%d" % (i, j), "v%d" % j)
        # linearizable reads: visible on every node at once, no waiting
        for reader in cluster.nodes:
            r = reader.client()
            assert r.get("x%d_19" % i) == b"v19"
            assert r.mget(["x%d_%d" % (i, j) for j in range(20)]) == [b"v%d" % j for j in range(20)]


def test_pipelining_keeps_request_order(cluster):
    c = cluster.followers()[0].client()
    p = c.pipeline(transaction=False)
    for i in range(300):
        p.set("p%d" % i, i)
        p.ping()
        p.get("p%d" % i)
        p.echo("e%d" % i)
        p.incr("pc")
    res = p.execute()
    for i in range(300):
        assert res[5 * i] is True
        assert res[5 * i + 1] is True
        assert res[5 * i + 2] == str(i).encode()
        assert res[5 * i + 3] == ("e%d" % i).encode()
        assert res[5 * i + 4] == i + 1
    # raw: many commands in one write, split across reads, in order
    data = b"".join(b"*2\r\n$4\r\nECHO\r\n$%d\r\n%s\r\n*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" %
                    (len(b"m%d" % i), b"m%d" % i, len(b"p%d" % i), b"p%d" % i)
                    for i in range(200))
    out, _ = raw(cluster.nodes[0], data, until=b"$3\r\n199\r\n", timeout=10)
    want = b"".join(b"$%d\r\nm%d\r\n$%d\r\n%d\r\n" % (len(b"m%d" % i), i, len(b"%d" % i), i)
                    for i in range(200))
    assert out == want


def test_resp3_after_hello_3(cluster):
    nd = cluster.nodes[2]
    out, _ = raw(nd, b"HELLO 3\r\nGET nokey\r\nSET r3 v\r\nGET r3\r\nHELLO 2\r\nGET nokey\r\n",
                 until=b"$-1\r\n")
    assert out.startswith(b"%7\r\n$6\r\nserver\r\n$4\r\nkeel\r\n")
    assert b"$5\r\nproto\r\n:3\r\n" in out
    tail = out[out.index(b"modules\r\n*0\r\n") + len(b"modules\r\n*0\r\n"):]
    assert tail.startswith(b"_\r\n+OK\r\n$1\r\nv\r\n*14\r\n")  # RESP2 HELLO: flat array
    assert out.endswith(b"$-1\r\n")
    # a HELLO right behind a pending read must not change that read's reply
    out, _ = raw(nd, b"HELLO 3\r\nGET nokey\r\nHELLO 2\r\nGET nokey\r\n", until=b"$-1\r\n")
    assert out.endswith(b"modules\r\n*0\r\n$-1\r\n") and b"*0\r\n_\r\n*14\r\n" in out, out
    out, _ = raw(nd, b"HELLO 4\r\n", until=b"\r\n")
    assert out == b"-NOPROTO unsupported protocol version\r\n"
    out, _ = raw(nd, b"HELLO 3\r\nINFO server\r\n", until=b"keel_version")
    assert b"=" in out and b"txt:# Server" in out  # verbatim string


def test_readonly_serves_stale_local_reads(cluster):
    leader = cluster.leader()
    f = cluster.followers()[0]
    lc = leader.client()
    lc.set("ro", "old")
    fc = f.client()
    assert fc.get("ro") == b"old"
    assert fc.execute_command("READONLY") in (True, b"OK")
    # cut the follower off (both directions, from both sides)
    dbg = [nd.client() for nd in cluster.nodes]
    try:
        for nd in cluster.nodes:
            if nd.id != f.id:
                dbg[f.id - 1].execute_command("KEEL.DEBUG", "DROP", nd.id, 1, 1)
                dbg[nd.id - 1].execute_command("KEEL.DEBUG", "DROP", f.id, 1, 1)
        lid = cluster.wait_ready(nodes=[nd for nd in cluster.nodes if nd.id != f.id])
        cluster.nodes[lid - 1].client().set("ro", "new")
        # READONLY: this node's own (stale) state, at once
        assert fc.get("ro") == b"old"
        # READWRITE: linearizable again -- must not return the stale value
        assert fc.execute_command("READWRITE") in (True, b"OK")
        with pytest.raises(redis.exceptions.ResponseError) as e:
            fc.get("ro")
        assert str(e.value).startswith(("no leader", "not executed")) or \
            "TRYAGAIN" in repr(e.value) or "try again" in str(e.value)
    finally:
        for d in dbg:
            d.execute_command("KEEL.DEBUG", "HEAL")
    cluster.wait_ready()
    fc.execute_command("READONLY")
    deadline = time.time() + 10
    while fc.get("ro") != b"new" and time.time() < deadline:
        time.sleep(0.05)
    assert fc.get("ro") == b"new"
    assert fc.set("ro", "w2") is True  # writes still go to the leader
    assert lc.get("ro") == b"w2"


# ---- faults -----------------------------------------------------------------

def test_kill9_leader_under_load_then_catch_up(fresh_cluster):
    cl = fresh_cluster
    old = cl.leader()
    acked = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w):
        i = 0
        while not stop.is_set():
            nodes = [nd for nd in cl.nodes if nd.alive()]
            nd = nodes[(w + i) % len(nodes)]
            key, val = "w%d_%d" % (w, i), "v%d" % i
            try:
                if nd.client(socket_timeout=5).set(key, val):
                    with lock:
                        acked[key] = val
            except (redis.exceptions.ResponseError, redis.exceptions.ConnectionError,
                    redis.exceptions.TimeoutError):
                pass
            i += 1

    ts = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in ts:
        t.start()
    time.sleep(1.5)
    before = len(acked)
    old.kill9()
    t0 = time.time()
    new_id = cl.wait_ready(timeout=20)
    elected = time.time() - t0
    time.sleep(1.5)
    stop.set()
    for t in ts:
        t.join(timeout=30)
    assert new_id != old.id
    assert before > 20 and len(acked) > before, (before, len(acked))
    # every acknowledged write survived the crash
    c = cl.nodes[new_id - 1].client()
    keys = sorted(acked)
    for i in range(0, len(keys), 200):
        chunk = keys[i:i + 200]
        assert c.mget(chunk) == [acked[k].encode() for k in chunk]
    # the killed node restarts from its WAL and catches up
    old.start()
    leader_commit = int(cl.nodes[new_id - 1].info()["raft_commit_index"])
    old.wait_applied(leader_commit, timeout=20)
    oc = old.client()
    oc.execute_command("READONLY")
    assert oc.mget(keys[:200]) == [acked[k].encode() for k in keys[:200]]
    print("elected a new leader in %.2fs; %d writes acked, %d before the kill" %
          (elected, len(acked), before))


def test_malformed_and_oversized_input(cluster):
    nd = cluster.nodes[0]
    cases = [
        (b"*1\r\n$abc\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*x\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n+PING\r\n", b"-ERR Protocol error: expected '$', got '+'\r\n"),
        (b"*1\r\n$999999999\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*99999999999\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"x" * 70000, b"-ERR Protocol error: too big inline request\r\n"),
        (b"SET a \"unterminated\r\n", b"-ERR Protocol error: unbalanced quotes in request\r\n"),
    ]
    for data, want in cases:
        out, closed = raw(nd, data, timeout=5)
        assert out == want, (data[:40], out)
        assert closed, data[:40]
    # replies before the error still arrive, in order, then the close
    out, closed = raw(nd, b"PING\r\nECHO hi\r\n*1\r\n$x\r\n", timeout=5)
    assert out == b"+PONG\r\n$2\r\nhi\r\n-ERR Protocol error: invalid bulk length\r\n" and closed
    # a value just above the bulk cap is refused; one below it is stored
    out, closed = raw(nd, b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n" % (16 * 1024 * 1024 + 1), timeout=5)
    assert out == b"-ERR Protocol error: invalid bulk length\r\n" and closed
    c = nd.client()
    c.set("big", b"y" * (1 << 20))
    assert c.strlen("big") == 1 << 20
    assert c.ping() is True
    assert all(n.alive() for n in cluster.nodes)


def test_a_client_that_never_reads_cannot_exhaust_memory(cluster):
    nd = cluster.nodes[1]
    c = nd.client()
    val = b"z" * (256 * 1024)
    c.set("fat", val)
    s = socket.create_connection(("127.0.0.1", nd.client_port), timeout=5)
    cmd = b"*2\r\n$3\r\nGET\r\n$3\r\nfat\r\n" * 1000
    s.settimeout(0.5)
    try:
        for _ in range(20):  # 20,000 GETs = 5 GB of replies if nothing bounded them
            s.sendall(cmd)
    except socket.timeout:
        pass  # the server stopped reading from us: the point of the test
    time.sleep(1.5)
    rss_kb = int([l for l in open("/proc/%d/status" % nd.proc.pid) if l.startswith("VmRSS")][0].split()[1])
    assert c.ping() is True  # the server still serves everyone else
    # the slow client was paused, not dropped: its replies are all there, in order
    s.settimeout(10)
    want = b"$262144\r\n" + val + b"\r\n"
    buf = b""
    while len(buf) < 50 * len(want):
        chunk = s.recv(1 << 20)
        assert chunk, "server closed a slow reader instead of pausing it"
        buf += chunk
    assert buf[:50 * len(want)] == want * 50
    s.close()
    print("server RSS with a paused slow reader: %d KiB" % rss_kb)
    limit = 400 if "asan" in os.path.basename(os.environ.get("KEEL_BIN", "")) else 100
    assert rss_kb < limit * 1024, rss_kb
    assert nd.alive()


def test_a_reader_paused_by_its_output_resumes_when_that_output_leaves_at_once(cluster):
    # 40 pipelined local (READONLY) GETs of 256 KiB in one write: the
    # server stops reading this client at the 4 MiB output cap (after 16
    # replies) with the rest of the pipeline still buffered; the client
    # reads with a large receive buffer, so the flush of those 4 MiB
    # completes in one write(2). That write must resume the connection
    # as a completed uv_write does; without it the 17th reply never came.
    f = cluster.followers()[0]
    val = b"q" * (256 * 1024)
    cluster.leader().client().set("fat2", val)
    fc = f.client()
    fc.execute_command("READONLY")
    deadline = time.time() + 10
    while fc.get("fat2") != val and time.time() < deadline:
        time.sleep(0.05)
    assert fc.get("fat2") == val
    s = socket.create_connection(("127.0.0.1", f.client_port), timeout=10)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        s.sendall(b"READONLY\r\n")
        assert s.recv(100) == b"+OK\r\n"
        n = 40
        s.sendall(b"*2\r\n$3\r\nGET\r\n$4\r\nfat2\r\n" * n)
        want = (b"$%d\r\n" % len(val) + val + b"\r\n") * n
        buf = b""
        s.settimeout(5)
        while len(buf) < len(want):
            try:
                chunk = s.recv(1 << 20)
            except socket.timeout:
                break
            if not chunk:
                break
            buf += chunk
        assert len(buf) == len(want), "stalled after %d of %d bytes" % (len(buf), len(want))
        assert buf == want
    finally:
        s.close()


def test_redis_benchmark_runs_without_errors(cluster):
    out = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(cluster.nodes[0].client_port),
                          "-t", "set,get", "-n", "2000", "-q", "-e"],
                         capture_output=True, timeout=90, text=True)
    assert out.returncode == 0, out.stderr
    text = out.stdout.replace("\r", "\n")
    assert "SET:" in text and "GET:" in text, text
    assert "ERR" not in text and "Error" not in text and "TRYAGAIN" not in text, text


def test_redis_cli(cluster):
    port = str(cluster.nodes[2].client_port)
    r = subprocess.run(["redis-cli", "-p", port, "set", "cli", "hello"], capture_output=True, text=True, timeout=10)
    assert r.stdout.strip() == "OK"
    r = subprocess.run(["redis-cli", "-p", str(cluster.nodes[0].client_port), "get", "cli"],
                       capture_output=True, text=True, timeout=10)
    assert r.stdout.strip() == "hello"
    r = subprocess.run(["redis-cli", "-3", "-p", port, "get", "nokey"], capture_output=True, text=True, timeout=10)
    assert r.stdout.strip() == "(nil)" or r.stdout.strip() == ""


# ---- the keel CLI and the server's flags ------------------------------------

STATUS_COLUMNS = ["member", "id", "role", "term", "leader", "last", "commit", "applied",
                  "lag", "snap", "snapping", "keys", "version"]


def status_rows(out):
    """`keel status` output as one {column: value} dict per member line."""
    lines = out.strip().splitlines()
    head = lines[0].split()
    return [dict(zip(head, ln.split())) for ln in lines[1:]]


def test_keel_status_shows_snapshots():
    """Small snapshot interval: every member takes snapshots, and `keel
    status` shows each one's snapshot index as INFO raft reports it."""
    c = Cluster(3, extra=["--request-timeout-ms", "2000", "--snapshot-entries", "20"]).start()
    try:
        addrs = ",".join(nd.addr for nd in c.nodes)
        lead = c.leader().client()
        for i in range(120):
            lead.set("snap/%d" % i, "v%d" % i)
        # Wait (bounded) until every member has a snapshot and none is busy,
        # so that status and INFO below read the same settled values.
        deadline = time.time() + 20
        while time.time() < deadline:
            infos = [nd.info("raft") for nd in c.nodes]
            if all(int(i["raft_snapshot_index"]) > 0 and i["raft_snapshot_in_progress"] == "0"
                   and i["raft_applied_index"] == infos[0]["raft_commit_index"] for i in infos):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("no settled snapshots: %r" % infos)
        # An election between the status call and INFO (a loaded machine)
        # could move an index: a few bounded tries, each compared whole.
        for _ in range(5):
            r = subprocess.run([KEEL, "status", "--addr", addrs], capture_output=True,
                               text=True, timeout=30)
            assert r.returncode == 0, r.stderr
            rows = status_rows(r.stdout)
            infos = [nd.info("raft") for nd in c.nodes]
            assert len(rows) == 3
            good = all(row["snap"] == inf["raft_snapshot_index"] and int(row["snap"]) > 0
                       and row["snapping"] == "no" and row["keys"] == "120"
                       for row, inf in zip(rows, infos))
            if good:
                break
            time.sleep(0.5)
        assert good, (r.stdout, infos)
    finally:
        c.close()


def test_keel_cli(cluster):
    addrs = ",".join(nd.addr for nd in cluster.nodes)

    def kcli(*args):
        return subprocess.run([KEEL] + list(args), capture_output=True, text=True, timeout=30)

    assert kcli("kv", "--addr", addrs, "put", "cli/a", "1").returncode == 0
    assert kcli("kv", "--addr", addrs, "put", "cli/b", "2").returncode == 0
    r = kcli("kv", "--addr", addrs, "get", "cli/a")
    assert r.returncode == 0 and r.stdout == "1\n"
    r = kcli("kv", "--addr", addrs, "scan", "cli/")
    assert r.returncode == 0 and r.stdout == "cli/a 1\ncli/b 2\n", r.stdout
    r = kcli("kv", "--addr", addrs, "del", "cli/a")
    assert r.returncode == 0 and r.stdout == "1\n"
    r = kcli("kv", "--addr", addrs, "get", "cli/a")
    assert r.returncode == 1 and "not found" in r.stderr
    r = kcli("kv", "--addr", "127.0.0.1:1", "get", "x")
    assert r.returncode == 3 and "no member could run" in r.stderr
    r = kcli("kv", "bogus")
    assert r.returncode == 2
    r = kcli("status", "--addr", addrs)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 4 and "leader" in r.stdout and lines[0].split()[2] == "role"
    assert lines[0].split() == STATUS_COLUMNS, lines[0]
    rows = status_rows(r.stdout)
    assert [row["member"] for row in rows] == [nd.addr for nd in cluster.nodes]
    for nd, row in zip(cluster.nodes, rows):
        inf = nd.info("raft")
        assert row["id"] == str(nd.id)
        assert row["role"] in ("leader", "follower", "candidate", "pre-candidate")
        assert row["snap"] == inf["raft_snapshot_index"]  # 0: this cluster has none
        assert row["snapping"] in ("yes", "no")
        assert int(row["last"]) >= int(row["commit"]) >= int(row["applied"]) > 0
        assert row["version"] == nd.info("server")["keel_version"]
    # The keys column moves with the keyspace (another column in its place
    # would not): one more key, one more in the count.
    lead = cluster.leader()  # its own writes are applied when acknowledged
    before = int(status_rows(kcli("status", "--addr", lead.addr).stdout)[0]["keys"])
    assert before == lead.client().dbsize()
    assert lead.client().set("cli/status-extra", "x")
    after = int(status_rows(kcli("status", "--addr", lead.addr).stdout)[0]["keys"])
    assert after == before + 1
    r = kcli("status", "--help")
    for col in ("snap", "snapping", "raft_snapshot_index", "raft_snapshot_in_progress",
                "raft_last_index", "keys", "keel_version"):
        assert col in r.stdout, col
    for sub in ("server", "kv", "status"):
        r = kcli(sub, "--help")
        assert r.returncode == 0 and "usage: keel " + sub in r.stdout


def test_cli_refuses_bad_numbers():
    """Every number flag of the CLI goes through the strict parser: trailing
    junk, empty, overflow, a sign or a blank is refused (exit 2) with a
    message naming the flag, the value and the range -- never read as 0,
    a wrapped 2^64-1 or the leading digits."""
    def kcli(*args):
        return subprocess.run([KEEL] + list(args), capture_output=True, text=True, timeout=30)

    for bad in ("12abc", "", "99999999999999999999999", "-1", " 5", "+5"):
        r = kcli("sim", "--seed", bad, "--ops", "10")
        assert r.returncode == 2 and "seed=" not in r.stdout, (bad, r.stdout[:200])
        assert "keel sim: bad --seed '%s': a whole number from 0 to 18446744073709551615" % bad \
            in r.stderr, (bad, r.stderr)
    cases = [
        (["sim", "--seeds", "1-x"], "keel sim: bad --seeds end 'x'"),
        (["sim", "--seeds", "-1-3"], "keel sim: bad --seeds start ''"),
        (["sim", "--seeds", "5-3"], "keel sim: bad --seeds end '3': a whole number from 5"),
        (["sim", "--seeds", "7"], "keel sim: bad --seeds '7'"),
        (["sim", "--ops", "10x"], "keel sim: bad --ops '10x': a whole number from 1 to 100000000"),
        (["sim", "--nodes", "-3"], "keel sim: bad --nodes '-3'"),
        (["sim", "--nodes", "4"], "keel sim: bad --nodes '4'"),
        (["kv", "--timeout-ms", "5x", "get", "a"], "keel: bad --timeout-ms '5x'"),
        (["kv", "--addr", "127.0.0.1:1", "scan", "--limit", "-1"], "keel kv scan: bad --limit '-1'"),
        (["bench", "raft", "--runs", "5x"], "keel bench raft: bad --runs '5x'"),
        (["bench", "raft", "--entries", "-1"], "keel bench raft: bad --entries '-1'"),
        (["bench", "raft", "--size", "4294967297"], "keel bench raft: bad --size '4294967297'"),
    ]
    for args, msg in cases:
        r = kcli(*args)
        assert r.returncode == 2 and msg in r.stderr, (args, r.returncode, r.stderr)
    # The top seed is a seed like any other: a range ending there runs it once
    # and stops (a "seed <= last" loop would wrap to 0 and run on).
    r = kcli("sim", "--seeds", "18446744073709551614-18446744073709551615", "--ops", "10")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("seed=") == 2 and "seeds=2 ok=2" in r.stdout, r.stdout[-400:]


def test_server_flag_and_startup_errors(tmp_path):
    def srv(*args):
        return subprocess.run([KEEL, "server"] + list(args), capture_output=True, text=True, timeout=20)

    r = srv("--id", "1")
    assert r.returncode == 2 and "missing --data-dir" in r.stderr
    r = srv("--id", "x", "--data-dir", str(tmp_path))
    assert r.returncode == 2 and "--id: bad value 'x'" in r.stderr
    r = srv("--id", "1", "--data-dir", str(tmp_path / "d"), "--cluster", "2=127.0.0.1:1")
    assert r.returncode == 2 and "node 1 is not in --cluster" in r.stderr
    # a data dir of another cluster, then of another node, is refused naming both
    c = Cluster(1, cluster_id=11).start()
    try:
        _foreign_dirs(c, srv, tmp_path)
    finally:
        c.close()


def _foreign_dirs(c, srv, tmp_path):
    data, members = c.nodes[0].data_dir, c.members
    port = c.nodes[0].client_port
    # while it runs: its client port cannot be bound twice
    r = srv("--id", "2", "--data-dir", str(tmp_path / "x"), "--cluster",
            "2=127.0.0.1:%d" % (port + 1 if port < 65000 else port - 1),
            "--client-addr", "127.0.0.1:%d" % port)
    assert r.returncode == 1 and ("cannot listen for clients on 127.0.0.1:%d" % port) in r.stderr
    assert c.nodes[0].stop() == 0  # SIGTERM: clean exit
    assert "stopped cleanly" in c.nodes[0].log_text()
    r = srv("--id", "1", "--data-dir", data, "--cluster", members, "--cluster-id", "12",
            "--client-addr", "127.0.0.1:%d" % port)
    assert r.returncode == 1 and "belongs to cluster 11 node 1, not cluster 12 node 1" in r.stderr
    r = srv("--id", "2", "--data-dir", data, "--cluster", members.replace("1=", "2="),
            "--cluster-id", "11", "--client-addr", "127.0.0.1:%d" % port)
    assert r.returncode == 1 and "belongs to cluster 11 node 1, not cluster 11 node 2" in r.stderr


def test_isolated_node_answers_with_honest_errors(fresh_cluster):
    cl = fresh_cluster
    f = cl.followers()[0]
    others = [nd for nd in cl.nodes if nd.id != f.id]
    fd = f.client()
    for nd in others:
        fd.execute_command("KEEL.DEBUG", "DROP", nd.id, 1, 1)
        nd.client().execute_command("KEEL.DEBUG", "DROP", f.id, 1, 1)
    try:
        c = f.client(socket_timeout=10)
        t0 = time.time()
        with pytest.raises(redis.exceptions.ResponseError) as e:
            c.set("iso", "1")
        waited = time.time() - t0
        msg = str(e.value)
        # either it never reached a leader (safe to retry) or it may have:
        # the reply must say which, never a bare failure
        assert ("not executed" in msg and "try again" in msg) or \
            "may or may not have been applied" in msg, msg
        assert 1.0 <= waited <= 6.0, waited  # the request timeout (2 s), bounded
        with pytest.raises(redis.exceptions.ResponseError) as e:
            c.get("iso")
        assert "not executed" in str(e.value), str(e.value)
        # the rest of the cluster is unaffected
        lid = cl.wait_ready(nodes=others)
        assert cl.nodes[lid - 1].client().set("iso2", "ok") is True
    finally:
        for nd in cl.nodes:
            nd.client().execute_command("KEEL.DEBUG", "HEAL")
    cl.wait_ready()
    assert f.client().get("iso2") == b"ok"


def test_fsync_delay_fault_slows_writes(cluster):
    leader = cluster.leader()
    c = leader.client()
    dbg = [nd.client() for nd in cluster.nodes]
    try:
        for d in dbg:
            d.execute_command("KEEL.DEBUG", "FSYNC-DELAY-MS", 150)
        t0 = time.time()
        c.set("slow", "1")
        slow = time.time() - t0
    finally:
        for d in dbg:
            d.execute_command("KEEL.DEBUG", "HEAL")
    t0 = time.time()
    c.set("fast", "1")
    fast = time.time() - t0
    assert slow >= 0.15 and fast < slow, (slow, fast)
    assert b"FSYNC-DELAY-MS" in raw(leader, b"KEEL.DEBUG NOPE\r\n", until=b"\r\n")[0]


def test_sigterm_mid_load_is_clean_and_loses_no_acked_write():
    c = Cluster(1, cluster_id=5).start()
    try:
        nd = c.nodes[0]
        acked, stop = [], threading.Event()

        def writer():
            cl = nd.client(socket_timeout=5)
            i = 0
            while not stop.is_set():
                try:
                    p = cl.pipeline(transaction=False)
                    for k in range(20):
                        p.set("t%d" % (i + k), i + k)
                    if all(p.execute()):
                        acked.extend(range(i, i + 20))
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                        redis.exceptions.ResponseError):
                    return
                i += 20

        t = threading.Thread(target=writer)
        t.start()
        time.sleep(1.0)
        t0 = time.time()
        rc = nd.stop(timeout=15)
        took = time.time() - t0
        stop.set()
        t.join(timeout=10)
        assert rc == 0 and took < 8, (rc, took)
        assert "stopped cleanly" in nd.log_text()
        # Every disk write the server issued completed before it exited
        # (the store wrappers count both sides; a lost completion shows here).
        m = re.findall(r"stopping: (\d+) disk writes issued, (\d+) done", nd.log_text())
        assert m and m[-1][0] == m[-1][1] and int(m[-1][0]) > 0, m
        assert len(acked) > 100
        assert os.path.exists(os.path.join(nd.data_dir, "KEEL-ID"))
        nd.start()
        c.wait_ready()
        got = nd.client().mget(["t%d" % i for i in acked])
        assert got == [str(i).encode() for i in acked]
    finally:
        c.close()


# ---- every request gets an answer (the -c 1 hang hunt) ------------------------

REQ_TIMEOUT_S = 2.0  # the fixtures' --request-timeout-ms
SLACK_S = 2.5        # ticks, retries, a loaded 2-core machine
OK_ERRORS = ("TRYAGAIN", "UNCERTAIN", "not executed", "may or may not")


class OneConnection(threading.Thread):
    """Sequential SET/GET pairs on ONE connection to one node, each timed.
    A socket timeout is a request that got no answer at all: the failure
    this guards against. A closed connection (its node was killed) ends
    the thread; it is an answer, not a silent wait."""

    def __init__(self, node, tag, socket_timeout):
        super().__init__(daemon=True)
        self.node, self.tag = node, tag
        self.c = node.client(socket_timeout=socket_timeout)
        self.stop = threading.Event()
        self.log = []  # (start, seconds, op, outcome)
        self.silent, self.bad = [], []

    def one(self, op, *args):
        t0 = time.time()
        try:
            r = self.c.execute_command(op, *args)
            out = "ok"
        except redis.exceptions.ResponseError as e:
            r, out = None, "err"
            if not any(s in str(e) for s in OK_ERRORS):
                self.bad.append((op, str(e)))
        except redis.exceptions.TimeoutError:
            r, out = None, "silent"
            self.silent.append((op, args, t0))
        self.log.append((t0, time.time() - t0, op, out))
        return r, out

    def run(self):
        i = 0
        try:
            while not self.stop.is_set() and i < 20000:
                key, val = "h%s_%d" % (self.tag, i), "v%d" % i
                _, s = self.one("SET", key, val)
                if s == "silent":
                    return
                got, g = self.one("GET", key)
                if g == "silent":
                    return
                if s == "ok" and g == "ok" and got != val.encode():
                    self.bad.append(("GET after SET", key, got))
                i += 1
        except redis.exceptions.ConnectionError:
            self.log.append((time.time(), 0.0, "-", "closed"))
        finally:
            self.c.close()

    def longest(self, since=0.0, until=1e18):
        return max([d for t, d, _, _ in self.log if since <= t <= until] or [0.0])

    def oks_after(self, t):
        return sum(1 for t0, _, _, o in self.log if t0 >= t and o == "ok")


def test_every_request_on_one_connection_is_answered_across_pause_and_kill(fresh_cluster):
    """One connection per node, sequential requests (redis-benchmark -c 1
    style), through three faults: the leader stopped past an election
    (SIGSTOP 3 s, SIGCONT), a majority stopped longer than the request
    timeout (6 s: the last node can only answer by its timeout), and the
    leader killed. Every request gets a value or an honest error, never a
    silent wait: within the request timeout plus slack, plus whatever time
    its own node spent stopped."""
    cl = fresh_cluster
    paused = {nd.id: [] for nd in cl.nodes}  # id -> [(stop, cont)]
    longest_pause = 6.0
    conns = [OneConnection(nd, "n%d" % nd.id,
                           socket_timeout=longest_pause + REQ_TIMEOUT_S + 3 * SLACK_S)
             for nd in cl.nodes]

    def pause(nodes, secs):
        t = time.time()
        for nd in nodes:
            nd.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(secs)
        finally:
            for nd in nodes:
                nd.proc.send_signal(signal.SIGCONT)
        w = (t, time.time())
        for nd in nodes:
            paused[nd.id].append(w)
        return w

    for t in conns:
        t.start()
    try:
        time.sleep(1.0)
        old = cl.leader()
        pause([old], 3.0)                       # 1. the leader, past an election
        lid = cl.wait_ready(timeout=20)
        time.sleep(1.0)
        rest = [nd for nd in cl.nodes if nd.id != lid]
        alone = rest[0]                          # 2. a majority stopped: alone answers by timeouts
        maj = pause([cl.nodes[lid - 1], rest[1]], longest_pause)
        t_after_majority = maj[1]
        lid = cl.wait_ready(timeout=20)
        time.sleep(1.0)
        killed = cl.nodes[lid - 1]               # 3. the leader killed
        t_kill = time.time()
        killed.kill9()
        cl.wait_ready(timeout=20)
        time.sleep(1.5)
    finally:
        for t in conns:
            t.stop.set()
        for t in conns:
            t.join(timeout=longest_pause + REQ_TIMEOUT_S + 4 * SLACK_S)
    assert not any(t.is_alive() for t in conns), "a client thread is stuck"
    bound = REQ_TIMEOUT_S + SLACK_S
    for t in conns:
        assert not t.silent, ("no reply at all", t.tag, t.silent)
        assert not t.bad, (t.tag, t.bad)
        assert len(t.log) > 4, (t.tag, len(t.log))
        for t0, d, op, out in t.log:
            stopped = sum(max(0.0, min(b, t0 + d) - max(a, t0)) for a, b in paused[t.node.id])
            assert d <= bound + stopped, (t.tag, op, out, round(d, 2), round(stopped, 2))
    # while the majority was stopped, the node left alone answered (with
    # honest errors: it cannot commit) instead of holding its client
    lone = [x for x in conns if x.node is alone][0]
    during = [o for t0, _, _, o in lone.log if maj[0] + 0.5 < t0 < maj[1] - 0.5]
    assert "err" in during, (lone.tag, during[:10])
    # and the cluster served values again after each fault
    alive = [t for t in conns if t.node is not killed]
    assert any(t.oks_after(t_after_majority + 1.0) > 0 for t in alive)
    assert any(t.oks_after(t_kill + 1.0) > 0 for t in alive)
    print("requests: %s; longest: %s" % (
        {t.tag: len(t.log) for t in conns}, {t.tag: round(t.longest(), 2) for t in conns}))


def test_command_info_lists_acl_categories(cluster):
    # COMMAND INFO's 7th field (redis-py's parser drops it: read it raw)
    out, _ = raw(cluster.nodes[0], b"COMMAND INFO get keel.run\r\nPING\r\n",
                 until=b"+PONG\r\n")
    get = out[:out.index(b"keel.run")]
    for cat in (b"@read", b"@string", b"@fast"):
        assert b"$%d\r\n%s\r\n" % (len(cat), cat) in get
    run = out[out.index(b"keel.run"):]
    assert b"$6\r\n@write\r\n" in run
