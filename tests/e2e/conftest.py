"""Fixtures for keel's end-to-end tests: real `keel server` processes on
free loopback ports in a temp dir, driven by real clients (redis-py, raw
sockets, redis-cli, redis-benchmark).

Every process a fixture starts is remembered by PID and only those are
stopped at the end (SIGTERM, then SIGKILL after a bounded wait). Every wait
is bounded."""
import os
import shutil
import sys
import tempfile
import time

import pytest
import redis

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
import keelproc  # noqa: E402
from keelproc import KEEL, free_ports, parse_info  # noqa: E402,F401 (test_server imports them)


class Node:
    def __init__(self, cluster, nid, client_port, peer_port):
        self.cluster = cluster
        self.id = nid
        self.client_port = client_port
        self.peer_port = peer_port
        self.data_dir = os.path.join(cluster.dir, "node%d" % nid)
        self.log_path = os.path.join(cluster.dir, "node%d.log" % nid)
        self.proc = None

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.client_port

    def start(self):
        assert self.proc is None or self.proc.poll() is not None
        args = keelproc.server_args(self.id, self.data_dir, self.cluster.members,
                                    self.cluster.cluster_id, self.addr) + self.cluster.extra
        self.proc, self.log = keelproc.spawn(args, self.log_path, getattr(self, "log", None))
        self.cluster.pids.add(self.proc.pid)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        keelproc.kill9(self.proc)

    def stop(self, timeout=10):
        return keelproc.stop(self.proc, timeout)

    def client(self, **kw):
        kw.setdefault("socket_timeout", 10)
        return redis.Redis(host="127.0.0.1", port=self.client_port, **kw)

    def wait_applied(self, index, timeout=30):
        """Until this node has applied index (a restarted node may not
        answer at first); returns the seconds it took, or fails with the
        node's log tail."""
        t0 = time.time()
        last = None
        while time.time() < t0 + timeout:
            try:
                last = int(self.info()["raft_applied_index"])
                if last >= index:
                    return time.time() - t0
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                    redis.exceptions.BusyLoadingError) as e:
                last = e
            time.sleep(0.05)
        raise AssertionError("node %d did not apply %d within %ss (last %r):\n%s" %
                             (self.id, index, timeout, last, self.log_text()[-3000:]))

    def info(self, section="raft"):
        c = self.client(socket_timeout=2)
        try:
            return {k: str(v) for k, v in c.info(section).items()}
        finally:
            c.close()

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")


class Cluster:
    def __init__(self, n=3, extra=None, cluster_id=7):
        self.dir = tempfile.mkdtemp(prefix="keel-e2e-")
        self.cluster_id = cluster_id
        self.extra = list(extra or [])
        ports = free_ports(2 * n)
        self.nodes = [Node(self, i + 1, ports[i], ports[n + i]) for i in range(n)]
        self.members = ",".join("%d=127.0.0.1:%d" % (nd.id, nd.peer_port) for nd in self.nodes)
        self.pids = set()

    def start(self):
        try:
            for nd in self.nodes:
                nd.start()
            self.wait_ready()
        except BaseException:
            self.close()  # never leave processes behind a failed start
            raise
        return self

    def wait_ready(self, timeout=20, nodes=None):
        """Until every live node answers PING and one leader is agreed on."""
        nodes = nodes or [nd for nd in self.nodes if nd.alive()]
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            try:
                leaders, roles = set(), {}
                for nd in nodes:
                    assert nd.alive(), "node %d exited:\n%s" % (nd.id, nd.log_text()[-2000:])
                    inf = nd.info()
                    leaders.add(inf.get("raft_leader"))
                    roles[str(nd.id)] = inf.get("raft_role")
                # one leader, agreed on by every polled node, and it is one
                # of them and says so itself (not a dead node's old term)
                if len(leaders) == 1:
                    lid = leaders.pop()
                    if roles.get(lid) == "leader":
                        return int(lid)
                last = (leaders, roles)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
                last = e
            time.sleep(0.05)
        raise AssertionError("no agreed leader within %ss: %r" % (timeout, last))

    def leader(self):
        lid = self.wait_ready()
        return self.nodes[lid - 1]

    def followers(self):
        lid = self.wait_ready()
        return [nd for nd in self.nodes if nd.id != lid and nd.alive()]

    def close(self):
        for nd in self.nodes:
            if nd.proc is not None:
                nd.stop()
                nd.log.close()
                self.pids.discard(nd.proc.pid)
        keep = os.environ.get("KEEL_E2E_KEEP")
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(3, extra=["--test-faults", "--request-timeout-ms", "2000"]).start()
    yield c
    c.close()


@pytest.fixture
def fresh_cluster():
    c = Cluster(3, extra=["--test-faults", "--request-timeout-ms", "2000"]).start()
    yield c
    c.close()
