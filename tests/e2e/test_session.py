"""Exactly-once client sessions on real processes (docs/kv.md "Sessions",
issue 12 section 5): a (session, seq) retried through any node -- after a
leader change, after a restart from a snapshot -- returns the first run's
reply and does not run again; unknown and expired sessions run nothing."""
import time

import pytest
import redis

from conftest import Cluster


def run(c, sid, seq, *cmd):
    return c.execute_command("KEEL.RUN", sid, seq, *cmd)


def test_retry_through_every_node_runs_once(cluster):
    c1 = cluster.nodes[0].client()
    sid = c1.execute_command("KEEL.SESSION", "REGISTER")
    assert isinstance(sid, int) and sid > 0
    assert run(c1, sid, 1, "INCR", "sess:ctr") == 1
    # the same seq through every node, leader or follower: the first
    # reply, and the counter did not move
    for nd in cluster.nodes:
        assert run(nd.client(), sid, 1, "INCR", "sess:ctr") == 1
    assert c1.get("sess:ctr") == b"1"
    # a new seq runs; its retry does not
    assert run(cluster.nodes[2].client(), sid, 2, "INCR", "sess:ctr") == 2
    assert run(cluster.nodes[1].client(), sid, 2, "INCR", "sess:ctr") == 2
    assert c1.get("sess:ctr") == b"2"
    # errors are replies too: kept and replayed, never re-run
    c1.set("sess:str", "x")
    with pytest.raises(redis.ResponseError, match="not an integer"):
        run(c1, sid, 3, "INCR", "sess:str")
    c1.set("sess:str", "5")
    with pytest.raises(redis.ResponseError, match="not an integer"):
        run(cluster.nodes[1].client(), sid, 3, "INCR", "sess:str")
    assert c1.get("sess:str") == b"5"
    assert c1.execute_command("KEEL.SESSION", "KEEPALIVE", sid) == b"OK"
    assert c1.execute_command("KEEL.SESSION", "CLOSE", sid) == b"OK"
    with pytest.raises(redis.ResponseError, match="NOSESSION"):
        run(c1, sid, 4, "INCR", "sess:ctr")
    assert c1.get("sess:ctr") == b"2"


def test_bad_input_gets_clear_errors_and_runs_nothing(cluster):
    c = cluster.nodes[1].client()
    for args, msg in [
        (("KEEL.SESSION", "FROB"), "syntax"),
        (("KEEL.SESSION", "REGISTER", "TTL", "5"), "1000..86400000"),
        (("KEEL.SESSION", "KEEPALIVE", "x"), "positive integer"),
        (("KEEL.RUN", "1", "0", "SET", "k", "v"), "positive integers"),
        (("KEEL.RUN", "1", "1", "GET", "k"), "one write command"),
        (("KEEL.RUN", "999999999", "1", "SET", "sess:never", "v"), "NOSESSION"),
    ]:
        with pytest.raises(redis.ResponseError, match=msg):
            c.execute_command(*args)
    assert c.exists("sess:never") == 0
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        c.execute_command("KEEL.RUN", "1", "2")


def test_sessions_expire_by_leader_time(cluster):
    c = cluster.nodes[0].client()
    sid = c.execute_command("KEEL.SESSION", "REGISTER", "TTL", "1000")
    assert run(c, sid, 1, "SET", "sess:exp", "a") == b"OK"
    time.sleep(1.5)
    # the next entry of any session moves the table's clock past the TTL
    other = c.execute_command("KEEL.SESSION", "REGISTER")
    assert other != sid
    with pytest.raises(redis.ResponseError, match="NOSESSION"):
        run(c, sid, 2, "SET", "sess:exp", "b")
    assert c.get("sess:exp") == b"a"


def test_a_retry_after_a_leader_change_and_a_snapshot_restart_runs_once():
    cl = Cluster(3, extra=["--test-faults", "--request-timeout-ms", "2000",
                           "--snapshot-entries", "20"]).start()
    try:
        ld = cl.leader()
        c = ld.client()
        sid = c.execute_command("KEEL.SESSION", "REGISTER")
        assert run(c, sid, 1, "APPEND", "sess:log", "a,") == 2
        ran_by = int(ld.info()["raft_applied_index"])  # >= its index
        # enough entries that every node snapshots past the session
        for i in range(60):
            c.set("sess:fill:%d" % i, "x")
        ld.wait_applied(ran_by + 60)
        for _ in range(100):  # the snapshot is written in the background
            if int(ld.info()["raft_snapshot_index"]) >= ran_by:
                break
            time.sleep(0.05)
        assert int(ld.info()["raft_snapshot_index"]) >= ran_by
        # the leader dies; the retry goes to the new one
        ld.kill9()
        others = [nd for nd in cl.nodes if nd is not ld]
        cl.wait_ready(nodes=others)
        c2 = others[0].client()
        assert run(c2, sid, 1, "APPEND", "sess:log", "a,") == 2
        assert c2.get("sess:log") == b"a,"
        # the old leader restarts from its snapshot and answers the retry
        # from the table it restored
        ld.start()
        cl.wait_ready()
        ld.wait_applied(int(others[0].info()["raft_applied_index"]))
        # it started from a snapshot that holds the session's first run:
        # the table came from the snapshot, not from replaying the log
        assert ld.info("stats")["snapshot_restored"] == "1"
        assert int(ld.info()["raft_snapshot_index"]) >= ran_by
        c3 = ld.client()
        c3.execute_command("READWRITE")
        assert run(c3, sid, 1, "APPEND", "sess:log", "a,") == 2
        assert run(c3, sid, 2, "APPEND", "sess:log", "b,") == 4
        assert c3.get("sess:log") == b"a,b,"
    finally:
        cl.close()
