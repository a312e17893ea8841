"""keel server end to end, snapshots: a follower that was down while the
leader compacted its log past it catches up by InstallSnapshot over real
TCP, and a restarted node comes back from its own snapshot on disk.

Issue 5: "restart the killed node, it catches up (from log or snapshot)".
test_server.py's kill -9 test covers the log; this one forces the snapshot
path (--snapshot-entries small, enough writes while the follower is down
that its next entry is gone from the leader's log) and checks from INFO
that the path really was the snapshot, not the log."""


from conftest import Cluster

SNAP_EVERY = 100     # --snapshot-entries: a snapshot every 100 applied entries
WRITES = 1500        # while the follower is down: many snapshots, log compacted


def stats(nd):
    return nd.info("stats")


def wait_caught_up(nd, leader, timeout=30):
    """Until nd has applied the leader's commit index; returns the time."""
    return nd.wait_applied(int(leader.info()["raft_commit_index"]), timeout)


def readonly_values(nd, keys):
    c = nd.client()
    try:
        c.execute_command("READONLY")
        out = []
        for i in range(0, len(keys), 250):
            out += c.mget(keys[i:i + 250])
        return out
    finally:
        c.close()


def test_follower_down_past_compaction_catches_up_by_snapshot_then_restores():
    cl = Cluster(3, extra=["--request-timeout-ms", "3000",
                           "--snapshot-entries", str(SNAP_EVERY)]).start()
    try:
        leader = cl.leader()
        lagger = cl.followers()[0]
        c = leader.client()
        c.set("before", "down")
        wait_caught_up(lagger, leader)
        lagger.kill9()
        down_at = int(leader.info()["raft_commit_index"])

        # Writes while it is down, each acknowledged, in small pipelines:
        # each is its own append message, so the leader's in-flight window
        # to the dead follower (64 appends) fills and the rest is never
        # queued for it -- it must come back through the snapshot. (Big
        # pipelines make a few big appends that the peer's send queue
        # keeps and delivers once it is back: catch-up from the log.)
        want = {}
        for b in range(0, WRITES, 10):
            p = c.pipeline(transaction=False)
            for i in range(b, b + 10):
                k, v = "k%05d" % i, "v%d-%s" % (i, "x" * (i % 37))
                p.set(k, v)
                want[k] = v.encode()
            assert p.execute() == [True] * 10
        inf = leader.info()
        # The leader's newest snapshot is far past the follower's last
        # entry, so (two snapshots are kept, the log compacted at the older)
        # the entries after down_at are gone from its log.
        assert int(inf["raft_snapshot_index"]) > down_at + 2 * SNAP_EVERY, inf
        sent_before = int(stats(leader)["snapshot_sends_ok"])

        # Restart: it must catch up through InstallSnapshot.
        lagger.start()
        took = wait_caught_up(lagger, leader)
        ls = stats(lagger)
        assert int(ls["snapshot_installs"]) >= 1, ls
        assert int(stats(leader)["snapshot_sends_ok"]) > sent_before
        keys = sorted(want) + ["before"]
        want["before"] = b"down"
        assert readonly_values(lagger, keys) == [want[k] for k in keys]
        # Linearizable reads through it, too (forwarded read index).
        lc = lagger.client()
        assert lc.get("k00000") == want["k00000"]
        lc.close()

        # A restart with its own snapshot on disk restores from it (and
        # replays only the log after it), then serves the same data.
        c.set("after", "install")
        want["after"] = b"install"
        keys.append("after")
        wait_caught_up(lagger, leader)
        lagger.kill9()
        lagger.start()
        wait_caught_up(lagger, leader)
        assert int(stats(lagger)["snapshot_restored"]) >= 1
        assert readonly_values(lagger, keys) == [want[k] for k in keys]
        print("caught up by snapshot in %.2fs (%d writes while down)" % (took, WRITES))
    finally:
        cl.close()
