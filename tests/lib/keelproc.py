"""Process helpers shared by keel's Python harnesses (tests/e2e and
tests/jepsen): where the binary is, free loopback ports, the `keel server`
command line, INFO text, and starting and stopping one server process.

The rules both harnesses keep, kept here once:
  - loopback only: ports are found by binding 127.0.0.1 with port 0;
  - every wait is bounded (the timeouts below, never a bare wait());
  - only our own PIDs are signalled: every function takes the Popen object
    the caller started, never a name or a PID from elsewhere.
"""
import os
import signal
import socket
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEEL = os.environ.get("KEEL_BIN", os.path.join(ROOT, "build", "keel"))

KILL_WAIT_S = 10   # how long a SIGKILLed process may take to be reaped


def free_ports(n):
    """n distinct free loopback ports (all bound at once with port 0, so no
    two are the same, then closed for the servers to take)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def parse_info(text):
    """INFO text as {field: value} (section headers and blank lines out)."""
    if isinstance(text, bytes):
        text = text.decode()
    out = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v.strip()
    return out


def server_args(nid, data_dir, members, cluster_id, client_addr, keel=None):
    """The `keel server` command line every harness node starts with; the
    caller appends its own flags."""
    return [keel or KEEL, "server", "--id", str(nid), "--data-dir", data_dir,
            "--cluster", members, "--cluster-id", str(cluster_id),
            "--client-addr", client_addr]


def spawn(args, log_path, old_log=None):
    """Starts args with stdout and stderr appended to log_path; closes
    old_log (the previous boot's) first. Returns (proc, log file)."""
    if old_log is not None:
        old_log.close()
    log = open(log_path, "ab")
    try:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    except BaseException:
        log.close()
        raise
    return proc, log


def kill9(proc):
    """SIGKILL to our own process and a bounded wait for it."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=KILL_WAIT_S)


def stop(proc, timeout=10):
    """SIGTERM, then SIGKILL if it has not exited within timeout seconds.
    Returns the exit code; None if it had to be SIGKILLed or was never
    started; the old exit code if it had already exited."""
    if proc is None:
        return None
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill9(proc)
        return None
