"""Transactions end to end (issue 12 §3, §4): MULTI/EXEC/DISCARD/WATCH/
UNWATCH with Redis's semantics through redis-py pipelines and raw RESP, on
the leader and on a follower (which forwards the whole EXEC as one write and
reads WATCH revisions linearizably through the leader); KEEL.TXN and
KEEL.GETREV; the one-entry, one-revision rule; relative TTLs inside MULTI
made absolute by the leader (every node agrees on the expiry)."""
import threading
import time
import uuid

import pytest
import redis

from test_server import raw


def node_of(cluster, role):
    return cluster.leader() if role == "leader" else cluster.followers()[0]


def key(prefix):
    return "%s:%s" % (prefix, uuid.uuid4().hex[:10])


ROLES = ["leader", "follower"]


@pytest.mark.parametrize("role", ROLES)
def test_exec_runs_the_queue_and_errors_do_not_roll_back(cluster, role):
    nd = node_of(cluster, role)
    c = nd.client()
    a, b = key("a"), key("b")
    p = c.pipeline(transaction=True)
    p.set(a, "1").incr(a).set(b, "x").incr(b).set(b, "y").get(a)
    res = p.execute(raise_on_error=False)
    assert res[:3] == [True, 2, True], res
    assert isinstance(res[3], redis.exceptions.ResponseError)
    assert "not an integer" in str(res[3])
    assert res[4:] == [True, b"2"]
    assert c.get(b) == b"y"
    # only reads: still one entry, one consistent state
    p = c.pipeline(transaction=True)
    p.get(a).mget(a, b).exists(a, b)
    assert p.execute() == [b"2", [b"2", b"y"], 2]
    # every key written by one EXEC carries the same mod revision
    p = c.pipeline(transaction=True)
    p.set(a, "3").set(b, "4").incr(a)
    assert p.execute() == [True, True, 4]
    ra = c.execute_command("KEEL.GETREV", a)
    rb = c.execute_command("KEEL.GETREV", b)
    assert ra[0] == b"4" and rb[0] == b"4"
    assert ra[2] == rb[2], (ra, rb)
    # one EXEC is one log entry (retried: the leader's expiry sweep may
    # propose an entry of its own in between)
    ld = cluster.leader()
    grew = []
    for _ in range(5):
        before = int(ld.info()["raft_last_index"])
        p = c.pipeline(transaction=True)
        p.set(a, "5").set(b, "6").get(a).incr(a).mget(a, b)
        assert p.execute() == [True, True, b"5", 6, [b"6", b"6"]]
        grew.append(int(ld.info()["raft_last_index"]) - before)
        if grew[-1] == 1:
            break
    assert 1 in grew, grew
    c.close()


@pytest.mark.parametrize("role", ROLES)
def test_queue_time_errors_abort_and_state_rules(cluster, role):
    nd = node_of(cluster, role)
    k = key("q")
    out, _ = raw(nd, b"MULTI\r\nSET %s 1\r\nNOPE x\r\nGET\r\nFLUSHALL\r\nPING\r\n"
                 b"EXEC\r\nGET %s\r\n" % (k.encode(), k.encode()), until=b"$-1\r\n")
    assert out == (b"+OK\r\n+QUEUED\r\n"
                   b"-ERR unknown command 'NOPE', with args beginning with: 'x' \r\n"
                   b"-ERR wrong number of arguments for 'get' command\r\n"
                   b"-ERR Command not allowed inside a transaction\r\n"
                   b"-ERR Command not allowed inside a transaction\r\n"
                   b"-EXECABORT Transaction discarded because of previous errors.\r\n"
                   b"$-1\r\n"), out
    out, _ = raw(nd, b"EXEC\r\nDISCARD\r\nMULTI\r\nMULTI\r\nWATCH x\r\nSET %s 1\r\n"
                 b"DISCARD\r\nEXEC\r\nGET %s\r\n" % (k.encode(), k.encode()),
                 until=b"$-1\r\n")
    assert out == (b"-ERR EXEC without MULTI\r\n-ERR DISCARD without MULTI\r\n"
                   b"+OK\r\n-ERR MULTI calls can not be nested\r\n"
                   b"-ERR WATCH inside MULTI is not allowed\r\n+QUEUED\r\n+OK\r\n"
                   b"-ERR EXEC without MULTI\r\n$-1\r\n"), out
    # a refused command aborts EXEC even when others are queued after it
    out, _ = raw(nd, b"MULTI\r\nNOPE\r\nSET %s 1\r\nEXEC\r\nGET %s\r\n"
                 % (k.encode(), k.encode()), until=b"$-1\r\n")
    assert out.endswith(b"+QUEUED\r\n-EXECABORT Transaction discarded because of "
                        b"previous errors.\r\n$-1\r\n"), out
    # nested MULTI and WATCH-in-MULTI do not abort the transaction
    out, _ = raw(nd, b"MULTI\r\nMULTI\r\nSET %s 5\r\nEXEC\r\n" % k.encode(),
                 until=b"*1\r\n+OK\r\n")
    assert out.endswith(b"+QUEUED\r\n*1\r\n+OK\r\n"), out
    # an empty transaction
    out, _ = raw(nd, b"MULTI\r\nEXEC\r\n", until=b"*0\r\n")
    assert out == b"+OK\r\n*0\r\n"
    # a connection closed in MULTI leaves nothing behind
    c = nd.client()
    out, _ = raw(nd, b"MULTI\r\nSET %s never\r\n" % k.encode(), until=b"+QUEUED\r\n")
    assert c.get(k) == b"5"
    # the internal forms are not client commands
    assert "unknown command" in str(pytest.raises(
        redis.exceptions.ResponseError, c.execute_command, "KEEL.EXEC", "0", "0").value)
    assert "unknown command" in str(pytest.raises(
        redis.exceptions.ResponseError, c.execute_command, "KEEL.WATCH-REVS", k).value)
    c.close()


def test_queue_is_bounded(cluster):
    nd = cluster.nodes[0]
    k = key("big").encode()
    n = 10000
    out, _ = raw(nd, b"MULTI\r\n" + b"INCR %s\r\n" % k * (n + 1) + b"EXEC\r\nGET %s\r\n" % k,
                 until=b"$-1\r\n", timeout=20)
    assert out.count(b"+QUEUED\r\n") == n
    assert out.endswith(b"-ERR keel: transaction too large (at most 10000 commands, "
                        b"524288 arguments and 16777216 bytes queued)\r\n"
                        b"-EXECABORT Transaction discarded because of previous errors.\r\n"
                        b"$-1\r\n"), out[-300:]
    # at the cap it runs, as one entry
    out, _ = raw(nd, b"MULTI\r\n" + b"INCR %s\r\n" % k * n + b"EXEC\r\nGET %s\r\n" % k,
                 until=b"$5\r\n10000\r\n", timeout=20)
    assert out.endswith(b":10000\r\n$5\r\n10000\r\n"), out[-100:]


def transfer_once(c, src, dst, amount):
    """Moves amount with WATCH/MULTI/EXEC; False when a watched key changed."""
    with c.pipeline(transaction=True) as p:
        try:
            p.watch(src, dst)
            s, d = int(p.get(src)), int(p.get(dst))
            p.multi()
            p.set(src, s - amount).set(dst, d + amount)
            p.execute()
            return True
        except redis.exceptions.WatchError:
            return False


@pytest.mark.parametrize("role", ROLES)
def test_watch_fails_exec_on_every_kind_of_change(cluster, role):
    nd = node_of(cluster, role)
    c, other = nd.client(), cluster.leader().client()
    k, a = key("w"), key("absent")
    c.set(k, "1")

    def exec_after(watch_keys, change):
        with c.pipeline(transaction=True) as p:
            p.watch(*watch_keys)
            change()
            p.multi()
            p.set(k, "done")
            try:
                return p.execute() == [True]
            except redis.exceptions.WatchError:
                return False

    assert exec_after([k], lambda: None) is True
    assert exec_after([k], lambda: other.set(k, "2")) is False          # modified
    assert exec_after([k], lambda: other.set(k, "2")) is False          # same value
    assert exec_after([k], lambda: other.expire(k, 100)) is False       # TTL change
    assert exec_after([k], lambda: (other.delete(k), other.set(k, "1"))) is False  # re-created
    assert exec_after([k], lambda: other.delete(k)) is False            # deleted
    assert exec_after([a], lambda: None) is True                        # absent, stays
    assert exec_after([a], lambda: (other.set(a, "x"), other.delete(a))) is False  # created+deleted
    c.set(k, "1", px=300)
    assert exec_after([k], lambda: time.sleep(0.6)) is False            # expired
    # Redis 7: a key already expired at WATCH may be deleted meanwhile
    e = key("stale")
    c.set(e, "1", px=50)
    time.sleep(0.2)
    assert exec_after([e], lambda: time.sleep(0.2)) is True
    # this connection's own write counts too
    with c.pipeline(transaction=True) as p:
        p.watch(k)
        c2 = p  # immediate-mode pipeline runs on the watching connection
        c2.set(k, "mine")
        p.multi()
        p.set(k, "x")
        with pytest.raises(redis.exceptions.WatchError):
            p.execute()
    c.close()
    other.close()


@pytest.mark.parametrize("role", ROLES)
def test_unwatch_discard_and_exec_clear_watches(cluster, role):
    nd = node_of(cluster, role)
    k = key("u")
    kb = k.encode()
    other = cluster.leader().client()
    other.set(k, "0")
    s = redis.Redis(host="127.0.0.1", port=nd.client_port, socket_timeout=10)
    conn = s.connection_pool.get_connection("x")

    def cmd(*args):
        conn.send_command(*args)
        return conn.read_response()

    try:
        assert cmd("WATCH", k) == b"OK"
        other.set(k, "1")
        assert cmd("UNWATCH") == b"OK"
        assert cmd("MULTI") == b"OK"
        assert cmd("SET", k, "a") == b"QUEUED"
        assert cmd("EXEC") == [b"OK"]
        assert cmd("WATCH", k) == b"OK"
        assert cmd("MULTI") == b"OK"
        assert cmd("DISCARD") == b"OK"
        other.set(k, "2")
        assert cmd("MULTI") == b"OK"
        assert cmd("SET", k, "b") == b"QUEUED"
        assert cmd("EXEC") == [b"OK"]
        assert cmd("WATCH", k) == b"OK"
        other.set(k, "3")
        assert cmd("MULTI") == b"OK"
        assert cmd("EXEC") is None          # failed: the watches go with it
        other.set(k, "4")
        assert cmd("MULTI") == b"OK"
        assert cmd("GET", k) == b"QUEUED"
        assert cmd("EXEC") == [b"4"]
    finally:
        s.connection_pool.release(conn)
        s.close()
        other.close()
    # a failed EXEC is Redis's null array; the connection's own write
    # after WATCH counts as a change
    out, _ = raw(nd, b"WATCH %s\r\nSET %s 4\r\nMULTI\r\nSET %s 1\r\nEXEC\r\n" % (kb, kb, kb),
                 until=b"*-1\r\n")
    assert out == b"+OK\r\n+OK\r\n+OK\r\n+QUEUED\r\n*-1\r\n", out
    # pipelined without waiting: WATCH's read is done before EXEC goes
    out, _ = raw(nd, b"WATCH %s\r\nGET %s\r\nMULTI\r\nINCR %s\r\nEXEC\r\n" % (kb, kb, kb),
                 until=b"*1\r\n:5\r\n")
    assert out == b"+OK\r\n$1\r\n4\r\n+OK\r\n+QUEUED\r\n*1\r\n:5\r\n", out


def test_bank_transfers_keep_the_total(cluster):
    """Concurrent WATCH/MULTI/EXEC transfers on every node, and KEEL.TXN
    transfers: the total never changes, no balance is lost."""
    accts = [key("acct") for _ in range(4)]
    c0 = cluster.leader().client()
    for a in accts:
        c0.set(a, 100)
    stop = time.time() + 3
    done = {"watch": 0, "txn": 0, "retries": 0}
    errors = []

    def worker(i):
        c = cluster.nodes[i % 3].client()
        n = 0
        try:
            while time.time() < stop:
                n += 1
                src, dst = accts[n % 4], accts[(n + i + 1) % 4]
                if src == dst:
                    continue
                if i % 2 == 0:
                    if transfer_once(c, src, dst, 1):
                        done["watch"] += 1
                    else:
                        done["retries"] += 1
                else:
                    # one round trip: compare the value read, then move
                    v = c.execute_command("KEEL.GETREV", src)
                    w = c.execute_command("KEEL.GETREV", dst)
                    r = c.execute_command(
                        "KEEL.TXN", "IF", 2, src, "MOD", "=", v[2], dst, "MOD", "=", w[2],
                        "THEN", 2, 3, "DECRBY", src, 1, 3, "INCRBY", dst, 1)
                    if r[0] == 1:
                        done["txn"] += 1
                    else:
                        done["retries"] += 1
                # every read of all balances in one transaction sums right
                p = c.pipeline(transaction=True)
                p.mget(*accts)
                total = sum(int(x) for x in p.execute()[0])
                if total != 400:
                    errors.append(total)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(repr(e))
        finally:
            c.close()

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    assert not errors, errors[:5]
    assert done["watch"] > 0 and done["txn"] > 0, done
    vals = [int(c0.get(a)) for a in accts]
    assert sum(vals) == 400, vals
    for nd in cluster.nodes:
        c = nd.client()
        assert [int(x) for x in c.mget(*accts)] == vals
        c.close()
    c0.close()


@pytest.mark.parametrize("role", ROLES)
def test_keel_txn_and_getrev(cluster, role):
    nd = node_of(cluster, role)
    c = nd.client()
    a, b = key("ta"), key("tb")
    assert c.execute_command("KEEL.GETREV", a) is None
    c.set(a, "100")
    c.set(b, "50")
    va = c.execute_command("KEEL.GETREV", a)
    assert va[0] == b"100" and va[1] == va[2] and va[3] == 1
    r = c.execute_command("KEEL.TXN", "IF", 2, a, "VALUE", "=", "100", b, "EXISTS", "=", 1,
                          "THEN", 2, 3, "DECRBY", a, 30, 3, "INCRBY", b, 30,
                          "ELSE", 1, 2, "GET", a)
    assert r == [1, [70, 80]], r
    r = c.execute_command("KEEL.TXN", "IF", 1, a, "MOD", "=", va[2],
                          "THEN", 1, 3, "SET", a, "lost",
                          "ELSE", 2, 2, "GET", a, 2, "GET", b)
    assert r == [0, [b"70", b"80"]], r
    ga, gb = c.execute_command("KEEL.GETREV", a), c.execute_command("KEEL.GETREV", b)
    assert ga[2] == gb[2] and ga[3] == 2 and gb[3] == 2, (ga, gb)
    with pytest.raises(redis.exceptions.ResponseError) as e:
        c.execute_command("KEEL.TXN", "IF", 1, a, "SIZE", "=", 1, "THEN", 0)
    assert "compare field" in str(e.value)
    with pytest.raises(redis.exceptions.ResponseError) as e:
        c.execute_command("KEEL.TXN", "THEN", 1, 1, "FLUSHALL")
    assert "not allowed in a transaction" in str(e.value)
    # KEEL.TXN inside MULTI is refused (no nesting)
    p = c.pipeline(transaction=True)
    p.execute_command("KEEL.TXN", "THEN", 0)
    with pytest.raises(redis.exceptions.ResponseError) as e:
        p.execute()
    assert "not allowed inside a transaction" in str(e.value)
    c.close()


@pytest.mark.parametrize("role", ROLES)
def test_relative_ttl_in_multi_is_made_absolute_by_the_leader(cluster, role):
    nd = node_of(cluster, role)
    c = nd.client()
    k, k2 = key("ttl"), key("ttl2")
    p = c.pipeline(transaction=True)
    p.set(k, "v", ex=100).setex(k2, 50, "w").get(k)
    assert p.execute() == [True, True, b"v"]
    idx = int(cluster.leader().info()["raft_applied_index"])
    pttls = []
    for n in cluster.nodes:
        n.wait_applied(idx)
        cc = n.client()
        t0 = time.time()
        pttls.append((cc.pttl(k), cc.pttl(k2), t0))
        cc.close()
    for p1, p2, _ in pttls:
        assert 90_000 < p1 <= 100_000 and 40_000 < p2 <= 50_000, pttls
    c.close()


def test_command_table_lists_the_transaction_commands(cluster):
    nd = cluster.nodes[0]
    for name, arity in (("multi", 1), ("exec", 1), ("discard", 1), ("watch", -2),
                        ("unwatch", 1), ("keel.txn", -3), ("keel.getrev", 2)):
        out, _ = raw(nd, b"COMMAND INFO %s\r\nPING\r\n" % name.encode(), until=b"+PONG\r\n")
        want = b"*1\r\n*10\r\n$%d\r\n%s\r\n:%d\r\n" % (len(name), name.encode(), arity)
        assert out.startswith(want), (name, out[:80])
    out, _ = raw(nd, b"COMMAND LIST\r\nPING\r\n", until=b"+PONG\r\n")
    assert b"keel.exec" not in out and b"keel.watch-revs" not in out
    assert b"multi" in out and b"keel.txn" in out


def test_exec_across_a_leader_pause_is_all_or_nothing(fresh_cluster):
    """EXEC on a follower while the leader is stopped (SIGSTOP) and a new
    one is elected: the answer is the result or an honest error (not
    executed / outcome unknown), and every node ends with all of the
    transaction's writes or none."""
    import os
    import signal
    cl = fresh_cluster
    outcomes = []
    for round_ in range(2):
        ld = cl.leader()
        f = [nd for nd in cl.nodes if nd.id != ld.id][0]
        c = f.client(socket_timeout=15)
        keys = [key("p%d" % round_) for _ in range(4)]
        os.kill(ld.proc.pid, signal.SIGSTOP)
        try:
            p = c.pipeline(transaction=True)
            for i, k in enumerate(keys):
                p.set(k, i)
            p.incr(keys[0])
            try:
                res = p.execute()
                assert res == [True] * 4 + [1], res
                outcomes.append("ok")
            except redis.exceptions.ResponseError as e:
                msg = str(e)
                assert ("not executed" in msg) or ("may or may not have been applied" in msg), msg
                outcomes.append("not executed" if "not executed" in msg else "unknown")
        finally:
            os.kill(ld.proc.pid, signal.SIGCONT)
        cl.wait_ready(timeout=20)
        idx = max(int(nd.info()["raft_commit_index"]) for nd in cl.nodes)
        for nd in cl.nodes:
            nd.wait_applied(idx)
            got = nd.client().mget(*keys)
            assert got in ([None] * 4, [b"1", b"1", b"2", b"3"]), (nd.id, got)
            if outcomes[-1] == "ok":
                assert got == [b"1", b"1", b"2", b"3"], (nd.id, got)
            if outcomes[-1] == "not executed":
                assert got == [None] * 4, (nd.id, got)
        c.close()
    print("outcomes", outcomes)
    assert outcomes, outcomes
