#!/usr/bin/python3
"""A stand-in for `keel server`, for bench/selftest.sh only.

It takes the real server's flags (--id, --data-dir, --client-addr,
--cluster, --cluster-id), answers the little RESP that compare.sh and
redis-benchmark send (PING, SET, GET, INFO raft, CONFIG), and reports
`raft_role:leader` only for the node whose id is FAKE_KEEL_LEADER, so the
self-test can see the script find the leader, parse, fail and clean up
without the real server. No Raft, no disk: never a figure to record.

FAKE_KEEL_PIDDIR: each node writes its pid there (the self-test checks
that every one is gone afterwards). FAKE_KEEL_MODE=err: SET of
redis-benchmark's keys (key:...) answers an error, so a benchmark run must
be reported as failed (compare.sh's own readiness write still succeeds);
FAKE_KEEL_MODE=die: the node exits at its 100th such SET.
"""
import asyncio
import os
import sys

HELP = """usage: keel server --id N --data-dir DIR --client-addr HOST:PORT
  --cluster 1=HOST:PORT,... --cluster-id N   (fake-keel stand-in)
"""


def parse_args(argv):
    if len(argv) < 2 or argv[1] != "server":
        sys.stderr.write("fake-keel: only 'server' is known\n")
        sys.exit(2)
    if "--help" in argv:
        sys.stdout.write(HELP)
        sys.exit(0)
    opts = {}
    i = 2
    while i + 1 < len(argv):
        if not argv[i].startswith("--"):
            sys.stderr.write("fake-keel: bad argument %r\n" % argv[i])
            sys.exit(2)
        opts[argv[i][2:]] = argv[i + 1]
        i += 2
    for need in ("id", "data-dir", "client-addr", "cluster", "cluster-id"):
        if need not in opts:
            sys.stderr.write("fake-keel: --%s missing\n" % need)
            sys.exit(2)
    return opts


def bulk(b):
    return b"$%d\r\n%s\r\n" % (len(b), b)


class Node:
    def __init__(self, node_id):
        self.id = node_id
        self.kv = {}
        self.leader = os.environ.get("FAKE_KEEL_LEADER", "") == str(node_id)
        self.err = os.environ.get("FAKE_KEEL_MODE", "") == "err"
        self.die = os.environ.get("FAKE_KEEL_MODE", "") == "die"
        self.sets = 0

    def call(self, args):
        cmd = args[0].upper() if args else b""
        if cmd == b"PING":
            return b"+PONG\r\n"
        if cmd == b"SET" and len(args) >= 3:
            if self.die and args[1].startswith(b"key:"):
                self.sets += 1
                if self.sets == 100:
                    os._exit(1)  # a crash in the middle of a run
            if self.err and args[1].startswith(b"key:"):  # redis-benchmark's
                return b"-ERR fake-keel: write refused\r\n"
            self.kv[args[1]] = args[2]
            return b"+OK\r\n"
        if cmd == b"GET" and len(args) == 2:
            v = self.kv.get(args[1])
            return b"$-1\r\n" if v is None else bulk(v)
        if cmd == b"INFO":
            role = b"leader" if self.leader else b"follower"
            return bulk(b"# Raft\r\nraft_node_id:%d\r\nraft_role:%s\r\n"
                        % (self.id, role))
        if cmd == b"CONFIG":
            return b"*0\r\n"
        return b"-ERR unknown command\r\n"


async def serve_conn(node, reader, writer):
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            if not line.startswith(b"*"):
                args = line.split()  # inline command
            else:
                n = int(line[1:])
                if n < 0 or n > 64:
                    break
                args = []
                for _ in range(n):
                    hdr = await reader.readline()
                    ln = int(hdr[1:])
                    if ln < 0 or ln > (1 << 20):
                        return
                    args.append((await reader.readexactly(ln + 2))[:-2])
            writer.write(node.call(args))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main():
    opts = parse_args(sys.argv)
    node = Node(int(opts["id"]))
    os.makedirs(opts["data-dir"], exist_ok=True)
    piddir = os.environ.get("FAKE_KEEL_PIDDIR")
    if piddir:
        with open(os.path.join(piddir, "node-%s.pid" % opts["id"]), "w") as f:
            f.write("%d\n" % os.getpid())
    host, port = opts["client-addr"].rsplit(":", 1)
    if host != "127.0.0.1":
        sys.stderr.write("fake-keel: listens on 127.0.0.1 only\n")
        sys.exit(2)
    srv = await asyncio.start_server(
        lambda r, w: serve_conn(node, r, w), host, int(port))
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
