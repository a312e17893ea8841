"""keel server end to end: full disks.

Each node's data directory is a small ext4 image, loop-mounted in a mount
namespace of the node's own (`unshare -m`: nothing is mounted on the host,
and the mount goes away with the process). The log is filled with
8 KiB values until a follower's disk is full, then every disk: a full disk
must give clear errors, never crash a node, never lose or invent a write.
Then the images are grown (as an operator frees space) and the cluster is
restarted: every acknowledged write is there on every node, no write that
was answered "not executed" is, and new writes work.

The WAL preallocates 64 MiB segments (include/keel/wal.h), so a 100 MiB
image (~85 MiB free) takes one segment and fails the second; a 180 MiB
image (~160 MiB free) takes two. Snapshots are off so the log is all that
grows. Needs root and loop devices; skipped, loudly, without them."""
import os
import shutil
import subprocess
import time

import pytest
import redis

import keelproc
from conftest import Cluster, Node

VALUE = 8192
SMALL_MB, BIG_MB = 100, 180
FULL = "storage failure"


def have_loop():
    if os.geteuid() != 0:
        return "needs root (loop mounts)"
    for tool in ("unshare", "mkfs.ext4", "resize2fs", "e2fsck", "mount"):
        if not shutil.which(tool):
            return "needs %s" % tool
    if not os.path.exists("/dev/loop-control"):
        return "needs /dev/loop-control"
    return None


class DiskNode(Node):
    """A node whose data dir is <img> mounted in its own mount namespace."""

    def __init__(self, cluster, nid, client_port, peer_port, mb):
        super().__init__(cluster, nid, client_port, peer_port)
        self.img = os.path.join(cluster.dir, "node%d.img" % nid)
        self.mnt = os.path.join(cluster.dir, "mnt%d" % nid)
        self.data_dir = os.path.join(self.mnt, "data")
        os.makedirs(self.mnt)
        with open(self.img, "wb") as f:
            f.truncate(mb << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", self.img], check=True, timeout=60)

    def start(self):
        assert self.proc is None or self.proc.poll() is not None
        args = keelproc.server_args(self.id, self.data_dir, self.cluster.members,
                                    self.cluster.cluster_id, self.addr) + self.cluster.extra
        # unshare and sh exec in place: the PID we hold is keel's.
        script = ('img=$1; mnt=$2; shift 2; mount -o loop "$img" "$mnt" && '
                  'mkdir -p "$mnt/data" && exec "$@"')
        wrapped = ["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                   "keel-disk", self.img, self.mnt] + args
        self.proc, self.log = keelproc.spawn(wrapped, self.log_path, getattr(self, "log", None))
        self.cluster.pids.add(self.proc.pid)

    def grow(self, mb):
        assert not self.alive()
        with open(self.img, "r+b") as f:
            f.truncate(mb << 20)
        subprocess.run(["e2fsck", "-f", "-y", self.img], check=False, timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["resize2fs", self.img], check=True, timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_cluster(sizes):
    cl = Cluster(3, extra=["--request-timeout-ms", "3000",
                           "--snapshot-entries", "4294967295",
                           "--snapshot-log-bytes", str(1 << 40)])
    cl.nodes = [DiskNode(cl, nd.id, nd.client_port, nd.peer_port, sizes[i])
                for i, nd in enumerate(cl.nodes)]
    return cl


class Writer:
    """Unique keys, one at a time through whichever node leads; every
    outcome kept: acked, not executed, or uncertain."""

    def __init__(self, cl):
        self.cl = cl
        self.i = 0
        self.acked, self.not_executed, self.uncertain = {}, set(), set()
        self.errors = []
        self.conn = None

    def _leader(self):
        for nd in self.cl.nodes:
            try:
                if nd.alive() and nd.info().get("raft_role") == "leader" and \
                        nd.info().get("raft_poisoned") == "0":
                    return nd
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                pass
        return None

    def write(self, n, batch=16):
        """About n writes, in pipelines of `batch` (each answered on its
        own); returns how many were acknowledged."""
        ok = 0
        for _ in range(0, n, batch):
            if self.conn is None:
                nd = self._leader()
                if nd is None:
                    self.errors.append("no leader")
                    time.sleep(0.05)
                    continue
                self.conn = nd.client(socket_timeout=10)
            keys = []
            p = self.conn.pipeline(transaction=False)
            for _ in range(batch):
                key = "k%06d" % self.i
                val = ("%06d" % self.i).encode() * (VALUE // 6)
                self.i += 1
                keys.append((key, val))
                p.set(key, val)
            try:
                res = p.execute(raise_on_error=False)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
                self.errors.append(repr(e))
                self.uncertain.update(k for k, _ in keys)  # no answer: unknown
                self.conn = None
                continue
            for (key, val), r in zip(keys, res):
                if r is True:
                    self.acked[key] = val
                    ok += 1
                    continue
                assert isinstance(r, redis.exceptions.ResponseError), repr(r)
                msg = str(r)
                self.errors.append(msg)
                if "UNCERTAIN" in msg:
                    self.uncertain.add(key)
                else:
                    assert "not executed" in msg, msg  # no other kind of answer
                    self.not_executed.add(key)
                self.conn = None
        return ok


def poisoned(nd):
    assert nd.alive(), "node %d died:\n%s" % (nd.id, nd.log_text()[-2000:])
    try:
        return nd.info().get("raft_poisoned") == "1"
    except redis.exceptions.ConnectionError as e:
        raise AssertionError("node %d stopped answering INFO (%r):\n%s" %
                             (nd.id, e, nd.log_text()[-2000:]))


@pytest.mark.skipif(have_loop() is not None, reason=str(have_loop()))
def test_full_disks_give_clear_errors_and_lose_nothing():
    cl = make_cluster([BIG_MB, BIG_MB, SMALL_MB])
    try:
        cl.start()
        small = cl.nodes[2]
        w = Writer(cl)

        # Phase 1: the small disk fills (its second segment cannot be
        # allocated); the other two go on committing.
        deadline = time.time() + 90
        while not poisoned(small) and time.time() < deadline and w.i < 30000:
            w.write(200)
        assert poisoned(small), "node 3 never hit its full disk (%d writes)" % w.i
        assert small.alive()
        assert "no space left on device" in small.log_text()
        with pytest.raises(redis.exceptions.ResponseError) as e:
            small.client().set("on-the-full-node", "x")
        assert FULL in str(e.value) and "not executed" in str(e.value), str(e.value)
        w.not_executed.add("on-the-full-node")
        # A majority still has room: writes go on being acknowledged (an
        # election may come first -- node 3 may have led, or a loaded
        # leader's disk stall hands leadership over -- so bounded by time).
        ok, deadline = 0, time.time() + 30
        while ok < 250 and time.time() < deadline:
            ok += w.write(32)
        assert ok >= 250, (ok, w.errors[-5:])

        # Phase 2: the big disks fill too; writes stop being acknowledged.
        deadline = time.time() + 120
        while time.time() < deadline and w.i < 60000 and \
                not (poisoned(cl.nodes[0]) and poisoned(cl.nodes[1])):
            w.write(200)
        assert poisoned(cl.nodes[0]) and poisoned(cl.nodes[1]), "big disks never filled"
        for nd in cl.nodes:
            assert nd.alive(), "node %d died of a full disk:\n%s" % (nd.id, nd.log_text()[-2000:])
            with pytest.raises(redis.exceptions.ResponseError) as e:
                nd.client().set("after-full-%d" % nd.id, "x")
            assert FULL in str(e.value), str(e.value)
            w.not_executed.add("after-full-%d" % nd.id)

        # Free space, restart: recovery from the WALs the full disks left.
        for nd in cl.nodes:
            nd.stop()
        for nd in cl.nodes:
            nd.grow(BIG_MB * 3)
        for nd in cl.nodes:
            nd.start()
        cl.wait_ready(timeout=60)
        leader = cl.leader()
        assert leader.client().set("after-restart", "ok")
        target = int(leader.info()["raft_commit_index"])
        for nd in cl.nodes:
            nd.wait_applied(target, timeout=60)
            c = nd.client(socket_timeout=30)
            c.execute_command("READONLY")
            keys = sorted(w.acked)
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                assert c.mget(chunk) == [w.acked[k] for k in chunk], "node %d lost a write" % nd.id
            gone = sorted(w.not_executed)
            if gone:
                assert c.mget(gone) == [None] * len(gone), "node %d ran a write it said was not executed" % nd.id
            assert c.get("after-restart") == b"ok"
            c.close()
        print("acked=%d not_executed=%d uncertain=%d writes=%d" %
              (len(w.acked), len(w.not_executed), len(w.uncertain), w.i))
    finally:
        cl.close()
