#!/usr/bin/python3
"""Network namespaces for the Jepsen-style tests (docs/testing.md,
"Network modes"): real IP-level partitions between real keel processes.

Layout of one harness invocation (a suite or a single run), all created by
that invocation and deleted by it on every exit path:

  keelj-<pid>-hub        a bridge br0 with 10.77.S.254/24; the harness and
                         its clients run here (the script re-executes
                         itself under `ip netns exec` -- Python 3.11 has no
                         os.setns)
  keelj-<pid>-n<k>       one per node slot k = 1..n: lo, and eth0 with
                         10.77.S.k/24, a veth whose other end v<k> is a
                         port of br0 in the hub

<pid> is the PID of the outer process (the one in the root namespace that
owns the names); S = pid % 250 + 1 only makes addresses easy to tell apart,
they never leave these namespaces. Nothing is created in the root
namespace: the veth pairs are made inside the node namespaces with their
peers placed straight into the hub.

Partitions are policy-routing rules in the receiving node's namespace:

  ip rule add from 10.77.S.<b> iif eth0 blackhole pref 100

(at setup each node namespace's "lookup local" rule moves from pref 0 to
1000: at 0 it would deliver packets for the node's own address before any
rule of ours is consulted)

drops, silently, every packet node b sends to that node (at input routing,
before it reaches TCP: the sender's kernel sees no error, its segments are
just never answered). The hub's address is never matched, so the harness
still reaches every node's client port during a partition. A cut is one
rule on each side; a one-way partition is one rule. Healing deletes
exactly the rules this process added and then checks that no blackhole
rule is left.

Also runnable as a helper for the self-test, inside a node namespace:
  netns.py listen HOST PORT    echo server (one byte in, one byte back)
  netns.py dial HOST PORT      connect, echo once, print "connected", then
                               for every stdin line (a timeout in seconds)
                               echo once more and print "echo" or "stalled"
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

PREFIX = "keelj"
ENV = "KEEL_JEPSEN_NETNS"       # set in the process that runs inside the hub
NAME_RE = re.compile(r"^%s-(\d+)-(hub|n\d+)$" % PREFIX)
IP = shutil.which("ip") or "/usr/sbin/ip"
PY = "/usr/bin/python3"
HERE = os.path.abspath(__file__)
MAX_NODES = 5
RULE_PREF = "100"               # partition rules, before ...
LOCAL_PREF = "1000"             # ... the local table, moved here from 0
CMD_TIMEOUT_S = 10
CHILD_GRACE_S = 40              # after a forwarded signal, then SIGKILL


class SetupError(Exception):
    pass


class Interrupted(Exception):
    def __init__(self, signum):
        super().__init__("signal %d" % signum)
        self.signum = signum


def ip(*args, ns=None, check=True, stdin=None):
    """One `ip` command (in namespace ns); returns stdout. Bounded."""
    cmd = [IP] + (["-n", ns] if ns else []) + list(args)
    try:
        r = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=CMD_TIMEOUT_S, text=True)
    except subprocess.TimeoutExpired:
        raise SetupError("%s: no answer within %ds" % (" ".join(cmd), CMD_TIMEOUT_S))
    if check and r.returncode != 0:
        raise SetupError("%s: %s" % (" ".join(cmd), (r.stderr or r.stdout).strip()))
    return r.stdout


def netns_names():
    out = ip("netns", "list", check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(say):
    """Deletes namespaces named PREFIX-<pid>-... whose owning process is
    gone (a harness killed with SIGKILL cannot clean up). A namespace that
    still holds processes is left alone and reported: they are not ours
    to kill."""
    me = os.getpid()
    for name in netns_names():
        m = NAME_RE.match(name)
        if not m:
            continue
        pid = int(m.group(1))
        if pid != me and pid_alive(pid):
            continue
        inside = ip("netns", "pids", name, check=False).split()
        if inside:
            say("netns: stale %s still holds processes %s; left alone"
                % (name, " ".join(inside)))
            continue
        ip("netns", "del", name, check=False)
        say("netns: removed stale namespace %s (owner %d is gone)" % (name, pid))


class Layout:
    """Names and addresses of one invocation's namespaces."""

    def __init__(self, owner, nodes):
        self.owner = owner
        self.hub = "%s-%d-hub" % (PREFIX, owner)
        self.nodes = ["%s-%d-n%d" % (PREFIX, owner, k) for k in range(1, nodes + 1)]
        self.subnet = "10.77.%d" % (owner % 250 + 1)
        self.hub_ip = self.subnet + ".254"

    def node_ip(self, k):
        return "%s.%d" % (self.subnet, k)

    def to_env(self):
        return json.dumps({"owner": self.owner, "nodes": len(self.nodes)})

    @staticmethod
    def from_env(text):
        d = json.loads(text)
        return Layout(int(d["owner"]), int(d["nodes"]))

    def describe(self):
        return "hub %s, nodes %s.1-%d" % (self.hub, self.subnet, len(self.nodes))


def create(lay):
    """Hub with a bridge, one namespace per node with a veth into it."""
    ip("netns", "add", lay.hub)
    ip("link", "set", "lo", "up", ns=lay.hub)
    ip("link", "add", "br0", "type", "bridge", ns=lay.hub)
    ip("addr", "add", lay.hub_ip + "/24", "dev", "br0", ns=lay.hub)
    ip("link", "set", "br0", "up", ns=lay.hub)
    for k, ns in enumerate(lay.nodes, 1):
        ip("netns", "add", ns)
        ip("link", "set", "lo", "up", ns=ns)
        ip("link", "add", "eth0", "type", "veth", "peer", "name", "v%d" % k,
           "netns", lay.hub, ns=ns)
        ip("link", "set", "v%d" % k, "master", "br0", "up", ns=lay.hub)
        ip("addr", "add", lay.node_ip(k) + "/24", "dev", "eth0", ns=ns)
        ip("link", "set", "eth0", "up", ns=ns)
        # Packets for a local address are matched by the rule at pref 0
        # ("lookup local") before any rule we add; move it behind ours
        # (added first, so the namespace is never without it).
        ip("rule", "add", "pref", LOCAL_PREF, "lookup", "local", ns=ns)
        ip("rule", "del", "pref", "0", ns=ns)


def destroy(lay, say=None):
    """Deletes every link and namespace of lay that exists; returns the
    names still present afterwards (empty when all is gone). A process
    still inside one of them can only be one this invocation started (a
    server whose harness was SIGKILLed): it is SIGKILLed first, by PID."""
    present = set(netns_names())
    for ns in [n for n in lay.nodes + [lay.hub] if n in present]:
        for pid in ip("netns", "pids", ns, check=False).split():
            try:
                os.kill(int(pid), signal.SIGKILL)
                if say:
                    say("netns: killed process %s left in %s" % (pid, ns))
            except (OSError, ValueError):
                pass
    for k, ns in enumerate(lay.nodes, 1):
        if ns in present:
            ip("link", "del", "eth0", ns=ns, check=False)   # and v<k> with it
            ip("netns", "del", ns, check=False)
    if lay.hub in present:
        ip("link", "del", "br0", ns=lay.hub, check=False)
        ip("netns", "del", lay.hub, check=False)
    mine = set(lay.nodes + [lay.hub])
    return sorted(n for n in netns_names() if n in mine)


# ---- partitions (used inside the hub) ------------------------------------------------


class Rules:
    """Blackhole rules in node namespaces; remembers what it added so heal
    deletes exactly that."""

    def __init__(self, lay):
        self.lay = lay
        self.added = []     # (dst slot, src slot) in the order added

    def _spec(self, src):
        return ["from", self.lay.node_ip(src), "iif", "eth0", "blackhole",
                "pref", RULE_PREF]

    def block(self, dst, src):
        """Slot dst drops every packet slot src sends it."""
        if (dst, src) in self.added:
            return
        ip("rule", "add", *self._spec(src), ns=self.lay.nodes[dst - 1])
        self.added.append((dst, src))

    def heal(self):
        """Deletes what block added, then returns the blackhole rules still
        present in any node namespace (empty when healed)."""
        errors = []
        for dst, src in reversed(self.added):
            try:
                ip("rule", "del", *self._spec(src), ns=self.lay.nodes[dst - 1])
            except SetupError as e:
                errors.append(str(e))
        self.added = []
        return errors + self.leftovers()

    def leftovers(self):
        out = []
        for ns in self.lay.nodes:
            for line in ip("rule", "show", ns=ns, check=False).splitlines():
                if "blackhole" in line:
                    out.append("%s: %s" % (ns, line.strip()))
        return out


def wait_exec(pid, path, timeout=3.0):
    """True once /proc/pid/exe is path: `ip netns exec` replaced itself by
    the server, so the PID the harness signals is the server's."""
    want = os.path.realpath(path)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if os.path.realpath("/proc/%d/exe" % pid) == want:
                return True
        except OSError:
            return False
        time.sleep(0.01)
    return False


# ---- the self-test -------------------------------------------------------------------


def probe(lay, say):
    """Checks, before any test runs, that the namespaces carry TCP and that
    a rule cuts exactly what it should: node 2 reaches node 1; with node 1
    dropping node 2's packets, an established connection stalls and a new
    one times out, while the hub still reaches node 1; healed, the stalled
    connection resumes (TCP retransmits). Raises SetupError otherwise."""
    port = "7999"
    lst = subprocess.Popen([IP, "netns", "exec", lay.nodes[0], PY, HERE, "listen",
                            lay.node_ip(1), port], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    dial = None
    rules = Rules(lay)

    def dial_once(ns):
        r = subprocess.run([IP, "netns", "exec", ns, PY, HERE, "dial", lay.node_ip(1), port],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=CMD_TIMEOUT_S)
        return (r.stdout.splitlines() or ["(nothing)"])[0].strip()

    try:
        if lst.stdout.readline().strip() != "listening":
            raise SetupError("probe listener did not start")
        dial = subprocess.Popen([IP, "netns", "exec", lay.nodes[1], PY, HERE, "dial",
                                 lay.node_ip(1), port], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        first = dial.stdout.readline().strip()
        if first != "connected":
            raise SetupError("node 2 cannot reach node 1: %s" % first)

        def ask(wait_s):
            dial.stdin.write("%d\n" % wait_s)
            dial.stdin.flush()
            return dial.stdout.readline().strip()

        rules.block(1, 2)
        during = ask(1)
        fresh = dial_once(lay.nodes[1])
        hub = dial_once(lay.hub)
        left = rules.heal()
        after = ask(15)
        if during != "stalled":
            raise SetupError("a blackhole rule did not stop an established connection (%s)"
                             % during)
        if not fresh.startswith("cannot"):
            raise SetupError("a blackhole rule did not stop a new connection (%s)" % fresh)
        if hub != "connected":
            raise SetupError("the hub did not reach a partitioned node (%s)" % hub)
        if left:
            raise SetupError("rules left after heal: %s" % left)
        if after != "echo":
            raise SetupError("the connection did not resume after heal (%s)" % after)
        say("netns: self-test ok (a rule cut an established and a new connection, the hub "
            "still reached the cut node, the healed connection resumed)")
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        raise SetupError("probe: %r" % (e,))
    finally:
        rules.heal()
        for p in (dial, lst):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(timeout=5)


def _echo(c):
    try:
        while True:
            b = c.recv(1)
            if not b:
                break
            c.sendall(b)
    except OSError:
        pass
    finally:
        c.close()


def _helper(argv):
    """The probe's two ends, run inside a namespace (see the docstring)."""
    mode, host, port = argv[0], argv[1], int(argv[2])
    if mode == "listen":
        import threading
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(8)
        s.settimeout(60)          # the probe kills it long before
        print("listening", flush=True)
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return 0
            c.settimeout(60)
            threading.Thread(target=_echo, args=(c,), daemon=True).start()
    try:
        s = socket.create_connection((host, port), timeout=1.0)
        s.settimeout(1.0)
        s.sendall(b"a")
        if s.recv(1) != b"a":
            raise OSError("no echo")
    except OSError as e:
        print("cannot connect: %s" % (e or type(e).__name__), flush=True)
        return 1
    print("connected", flush=True)
    for line in sys.stdin:
        s.settimeout(float(line.strip() or "1"))
        try:
            s.sendall(b"x")
            print("echo" if s.recv(1) == b"x" else "closed", flush=True)
        except socket.timeout:
            print("stalled", flush=True)
        except OSError as e:
            print("error %s" % e, flush=True)
    return 0


# ---- entering the hub ------------------------------------------------------------------


def enter(script, argv, want, say):
    """Decides the network mode of this invocation.

    want: "auto" (netns if possible, else debug), "netns" (exit 2 if not
    possible) or "debug". In the process that runs the tests it returns
    ("netns", Layout) -- inside the hub -- or ("debug", reason). In the
    outer process of a netns run it does not return: it creates the
    namespaces, runs `ip netns exec HUB python3 script argv...`, forwards
    SIGINT/SIGTERM to it, deletes every namespace and exits with its
    status."""
    inner = os.environ.get(ENV)
    if inner:
        lay = Layout.from_env(inner)
        # If the outer process dies (SIGKILL: it cannot clean up), get a
        # SIGTERM, so that this harness kills its servers and the
        # namespaces empty for the next invocation's sweep.
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass
        if os.getppid() != lay.owner:
            os.kill(os.getpid(), signal.SIGTERM)
        return "netns", lay
    if want == "debug":
        return "debug", "asked for"

    def refuse(why):
        if want == "netns":
            say("jepsen: --net netns impossible: %s" % why)
            sys.exit(2)
        return "debug", why

    if os.geteuid() != 0:
        return refuse("not root")
    if not os.access(IP, os.X_OK):
        return refuse("no ip(8)")
    lay = Layout(os.getpid(), MAX_NODES)
    st = {"child": None, "got": [], "setup": True}

    def on_signal(signum, _frame):
        st["got"].append((signum, time.monotonic()))
        if st["child"] is not None:
            try:
                st["child"].send_signal(signum)
            except OSError:
                pass
        elif st["setup"] and len(st["got"]) == 1:
            raise Interrupted(signum)   # setup: unwind, clean up, exit

    def cleanup():
        left = destroy(lay, say)
        say("netns: %s" % ("removed %s and its %d node namespaces (veths, bridge)"
                           % (lay.hub, len(lay.nodes)) if not left else
                           "COULD NOT REMOVE %s" % " ".join(left)))
        return left

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        sweep_stale(say)
        create(lay)
        probe(lay, say)
    except SetupError as e:
        cleanup()
        for s, h in old.items():
            signal.signal(s, h)
        return refuse("setup failed: %s" % e)
    except Interrupted as e:
        cleanup()
        sys.exit(128 + e.signum)
    st["setup"] = False
    rc = 1
    try:
        env = dict(os.environ)
        env[ENV] = lay.to_env()
        st["child"] = subprocess.Popen([IP, "netns", "exec", lay.hub, PY, script]
                                       + list(argv), env=env)
        child = st["child"]
        if st["got"]:     # a signal between the fork and the line above
            child.send_signal(st["got"][0][0])
        while child.poll() is None:
            if st["got"] and time.monotonic() - st["got"][0][1] > CHILD_GRACE_S:
                child.kill()
            time.sleep(0.1)
        rc = child.returncode if child.returncode >= 0 else 128 - child.returncode
    finally:
        if st["child"] is not None and st["child"].poll() is None:
            st["child"].kill()
            st["child"].wait(timeout=10)
        if cleanup() and rc == 0:
            rc = 1
    sys.exit(rc)


if __name__ == "__main__":
    sys.exit(_helper(sys.argv[1:]))
