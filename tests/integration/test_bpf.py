"""The BPF kernel paths (issue 6): the XDP admission guard (bpf/guard.bpf.c,
daemon/bpf_guard.c) and the sockops TCP settings (bpf/sockops.bpf.c,
daemon/bpf_sockops.c), each with its fallback when BPF is off (--bpf no).

Real sockets. The guard's tests put the clients in their own network
namespace, joined to the host by a veth pair whose host side carries the
guard; they need root and iproute2 and skip with the reason otherwise.
The sockops tests read the options of the daemon's accepted socket with
pidfd_getfd(2) (root)."""
import ctypes
import json
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest

from harness import RawStream, WAIT, q, NS_BIND, StanzadServer

ROOT = os.geteuid() == 0
CLONE_NEWNET = 0x40000000
SYS_PIDFD_GETFD = 438  # x86_64 and arm64 share the number
TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT = 4, 5, 6, 18

libc = ctypes.CDLL(None, use_errno=True)
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (BPF, network namespaces)")


# --------------------------------------------------------------------------
# A network namespace behind a veth pair
# --------------------------------------------------------------------------

def _ip(*args, check=True):
    return subprocess.run(["ip"] + list(args), capture_output=True, text=True, timeout=10,
                          check=check)


class Netns:
    """Namespace NAME with veth HOST (host side, .1) <-> PEER (inside: .2, .3, .4).

    IPv6: the host side is ::1 of two /64s, the namespace ::2 of each (two
    sources: the guard counts IPv6 per /64)."""

    def __init__(self):
        n = os.getpid() % 100000
        self.name = "stz-bpf-%d" % n
        self.host_if, self.peer_if = "stzh%d" % n, "stzn%d" % n
        # 198.18.0.0/15 is for benchmarks (RFC 2544): no real network uses it.
        net = "198.%d.%d" % (18 + os.getpid() % 2, os.getpid() // 2 % 250)
        self.host_ip = net + ".1"
        self.srcs = [net + ".%d" % i for i in (2, 3, 4)]
        net6 = "fd66:%x:%x" % (os.getpid() % 65536, 0)
        self.host_ip6 = net6 + ":1::1"
        self.srcs6 = [net6 + ":1::2", net6 + ":2::2"]
        self._cleanup()
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if,
                "netns", self.name)
            _ip("addr", "add", self.host_ip + "/24", "dev", self.host_if)
            for pfx in (1, 2):  # nodad: usable at once
                _ip("addr", "add", "%s:%d::1/64" % (net6, pfx), "dev", self.host_if, "nodad")
            _ip("link", "set", self.host_if, "up")
            for src in self.srcs:
                _ip("-n", self.name, "addr", "add", src + "/24", "dev", self.peer_if)
            for src in self.srcs6:
                _ip("-n", self.name, "addr", "add", src + "/64", "dev", self.peer_if, "nodad")
            _ip("-n", self.name, "link", "set", self.peer_if, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self._cleanup()
            raise

    def _cleanup(self):
        _ip("link", "del", self.host_if, check=False)  # takes the peer with it
        _ip("netns", "del", self.name, check=False)

    close = _cleanup

    def socket(self, src):
        """A TCP socket made inside the namespace, bound to src (one of self.srcs)."""
        return self.sockets(src, 1)[0]

    def sockets(self, src, n):
        """n such sockets, made at once."""
        out = {}

        def run():  # setns() moves only this thread, which then ends
            fd = os.open("/run/netns/" + self.name, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
                out["socks"] = []
                for _ in range(n):
                    s = socket.socket(socket.AF_INET6 if ":" in src else socket.AF_INET,
                                      socket.SOCK_STREAM)
                    out["socks"].append(s)
                    s.bind((src, 0))
            except BaseException as e:
                out["err"] = e
            finally:
                os.close(fd)
        t = threading.Thread(target=run)
        t.start()
        t.join()
        if "err" in out:
            for s in out.get("socks", []):
                s.close()
            raise out["err"]
        return out["socks"]


@pytest.fixture
def netns():
    if not ROOT:
        pytest.skip("needs root (network namespaces, BPF)")
    if not shutil.which("ip"):
        pytest.skip("no ip command (iproute2)")
    try:
        ns = Netns()
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip("cannot create a network namespace with a veth pair: %s" %
                    getattr(e, "stderr", e))
    yield ns
    ns.close()


class NsStream(RawStream):
    """A RawStream over a socket already connected (from the namespace)."""

    def __init__(self, sock):
        self.port = None
        self.timeout = WAIT
        self.sock = sock
        self.sock.settimeout(WAIT)
        self.tls = False
        self.received = b""
        self.eof = False
        self.stream_ended = False
        self.header = None
        self._new_parser()


def ns_connect(ns, src, port, timeout=WAIT):
    s = ns.socket(src)
    s.settimeout(timeout)
    s.connect((ns.host_ip6 if ":" in src else ns.host_ip, port))
    return s


def ns_login(ns, src, port, user, password):
    """STARTTLS, SCRAM and bind from src in the namespace. Returns the stream."""
    st = NsStream(ns_connect(ns, src, port))
    st.open()
    st.starttls()
    kind, cond = st.scram_login(user, password)
    assert kind == "success", cond
    feats = st.restart()
    assert feats.find(q(NS_BIND, "bind")) is not None
    st.bind()
    return st


def ctl_json(server, *args):
    r = server.stanzactl("--json", *args)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return json.loads(r.stdout)


def kpath(server, name):
    return {p["name"]: p for p in ctl_json(server, "status")["kernel_paths"]}[name]


def guarded_server(ns, *extra):
    """A daemon with client listeners on the veth's host addresses (one port)."""
    port = _free_port(ns.host_ip)
    srv = StanzadServer(["--listen-c2s", "%s:%d" % (ns.host_ip, port),
                         "--listen-c2s", "[%s]:%d" % (ns.host_ip6, port),
                         "--guard-interfaces", ns.host_if] + list(extra),
                        name="stanzad(guard)").start()
    srv.ns_port = port
    return ready(srv)


def ready(srv):
    """srv once startup is over (the listeners accept earlier): logged, control socket up."""
    srv.wait_log(r"event=server\.start ")
    return srv


def _free_port(addr):
    s = socket.socket()
    s.bind((addr, 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------------------
# The guard
# --------------------------------------------------------------------------

@needs_root
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_guard_drops_a_syn_flood_while_another_source_logs_in(netns, family):
    srcs = netns.srcs if family == "ipv4" else netns.srcs6
    dst = netns.host_ip if family == "ipv4" else netns.host_ip6
    srv = guarded_server(netns, "--guard-syn-rate", "1", "--guard-syn-burst", "5")
    flood = []
    try:
        srv.wait_log(r"event=bpf\.guard state=active")
        g = ctl_json(srv, "guard")
        assert g["active"] and netns.host_if in g["detail"], g
        user, pw, _ = srv.new_account("guard")
        # 40 connection attempts at once from .2: the first 5 get through.
        flood = netns.sockets(srcs[0], 40)
        for s in flood:
            s.setblocking(False)
            s.connect_ex((dst, srv.ns_port))
        time.sleep(1.5)  # handshakes done; dropped SYNs retransmit after 1 s
        _, writable, _ = select.select([], flood, [], 0)
        connected = [s for s in writable if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0]
        # 5 at once, then 1/s: a slow machine may see a few refills.
        assert 5 <= len(connected) <= 10, len(connected)
        # Another source behind the same interface logs in.
        st = ns_login(netns, srcs[1], srv.ns_port, user, pw)
        st.close()
        c = ctl_json(srv, "guard")["counters"]
        assert c["rate_dropped"] >= 25, c
        assert c["passed"] >= 6 and c["ban_dropped"] == 0, c
        text = srv.stanzactl("guard").stdout
        assert "xdp guard: active" in text and "rate-dropped" in text, text
        assert "passed=" in kpath(srv, "xdp_guard")["detail"]
        metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % srv.http_port,
                                         timeout=WAIT).read().decode()
        m = re.search(r'^stanzad_guard_drops_total\{path="xdp",reason="rate-limit"\} (\d+)$',
                      metrics, re.M)
        assert m and int(m.group(1)) >= 25, metrics[-2000:]
        assert 'stanzad_kernel_path_active{path="xdp_guard"} 1' in metrics
    finally:
        for s in flood:
            s.close()
        srv.stop()


@needs_root
def test_auth_ban_reaches_the_guard(netns):
    srv = guarded_server(netns, "--max-auth-failures-source", "2")
    try:
        user, pw, _ = srv.new_account("banme")
        st = NsStream(ns_connect(netns, netns.srcs[2], srv.ns_port))
        st.open()
        st.starttls()
        for _ in range(2):
            assert st.scram_login(user, "wrong-" + pw)[0] == "failure"
        srv.wait_log(r"event=auth\.ban source=%s" % netns.srcs[2].replace(".", r"\."))
        st.close()
        # The kernel drops its SYNs now: no answer at all, not a refusal by the daemon.
        with pytest.raises((socket.timeout, TimeoutError)):
            ns_connect(netns, netns.srcs[2], srv.ns_port, timeout=1.5).close()
        assert ctl_json(srv, "guard")["counters"]["ban_dropped"] >= 1
        # Another source is not banned.
        ns_login(netns, netns.srcs[1], srv.ns_port, user, pw).close()
    finally:
        srv.stop()


@needs_root
def test_without_bpf_the_guard_is_off_and_logins_work(netns):
    srv = guarded_server(netns, "--bpf", "no")
    try:
        srv.wait_log(r'event=bpf\.guard state=off reason="disabled \(bpf = no\)"')
        srv.wait_log(r'event=bpf\.sockops state=off reason="disabled \(bpf = no\)"')
        g = ctl_json(srv, "guard")
        assert not g["active"] and g["reason"] == "disabled (bpf = no)", g
        p = kpath(srv, "xdp_guard")
        assert not p["active"] and p["reason"] == "disabled (bpf = no)", p
        user, pw, _ = srv.new_account("nobpf")
        for src in netns.srcs[:2]:
            ns_login(netns, src, srv.ns_port, user, pw).close()
    finally:
        srv.stop()


def test_guard_without_interfaces_says_why(server):
    ready(server)
    p = kpath(server, "xdp_guard")
    assert not p["active"] and p["reason"] == "no interfaces (guard_interfaces)", p
    server.wait_log(r'event=bpf\.guard state=off reason="no interfaces \(guard_interfaces\)"')


# --------------------------------------------------------------------------
# sockops
# --------------------------------------------------------------------------

TUNING = ["--tcp-keepalive-idle", "77", "--tcp-keepalive-interval", "11",
          "--tcp-keepalive-count", "3", "--tcp-user-timeout", "12345"]


def server_side_options(srv, client):
    """The options of the daemon's socket for client's connection (pidfd_getfd)."""
    pid = srv.proc.pid
    want = client.getsockname()
    pidfd = os.pidfd_open(pid)
    try:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            for name in os.listdir("/proc/%d/fd" % pid):
                try:
                    if not os.readlink("/proc/%d/fd/%s" % (pid, name)).startswith("socket:"):
                        continue
                except OSError:
                    continue
                fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0)
                if fd < 0:
                    continue
                s = socket.socket(fileno=fd)
                try:
                    if s.family != socket.AF_INET or s.type != socket.SOCK_STREAM:
                        continue
                    try:
                        if s.getpeername() != want:
                            continue
                    except OSError:
                        continue
                    return {
                        "keepalive": s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                        "idle": s.getsockopt(socket.IPPROTO_TCP, TCP_KEEPIDLE),
                        "interval": s.getsockopt(socket.IPPROTO_TCP, TCP_KEEPINTVL),
                        "count": s.getsockopt(socket.IPPROTO_TCP, TCP_KEEPCNT),
                        "user_timeout": s.getsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT),
                        "nodelay": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
                    }
                finally:
                    s.close()
            time.sleep(0.05)  # not accepted yet
    finally:
        os.close(pidfd)
    raise AssertionError("the daemon has no socket for %s" % (want,))


EXPECTED = {"keepalive": 1, "idle": 77, "interval": 11, "count": 3, "user_timeout": 12345,
            "nodelay": 1}


@needs_root
def test_sockops_sets_the_options_of_accepted_connections(make_server):
    srv = ready(make_server(*TUNING))
    srv.wait_log(r"event=bpf\.sockops state=active")
    p = kpath(srv, "sockops")
    assert p["active"] and p["detail"].startswith("cgroup "), p
    before = int(p["detail"].split("tuned=")[1].split()[0])
    st = RawStream(srv.c2s_port)
    try:
        st.open()
        assert server_side_options(srv, st.sock) == EXPECTED
    finally:
        st.close()
    # Counted by the kernel program: the daemon made no setsockopt() call.
    after = int(kpath(srv, "sockops")["detail"].split("tuned=")[1].split()[0])
    assert after >= before + 1, (before, after)


@needs_root
def test_without_bpf_the_daemon_sets_the_same_options(make_server):
    srv = ready(make_server("--bpf", "no", *TUNING))
    p = kpath(srv, "sockops")
    assert not p["active"] and p["reason"] == "disabled (bpf = no)", p
    st = RawStream(srv.c2s_port)
    try:
        st.open()
        assert server_side_options(srv, st.sock) == EXPECTED
    finally:
        st.close()


@needs_root
def test_guard_is_taken_over_by_a_restarts_successor(netns):
    """The successor attaches only after its predecessor exited (handover.c
    waits for that), so the interface is free again and the guard runs on."""
    srv = guarded_server(netns, "--guard-syn-rate", "1", "--guard-syn-burst", "2")
    succ = StanzadServer(srv.extra_args, name="stanzad(guard successor)", storage=srv.storage)
    os.rmdir(succ.state_dir)
    succ.state_dir, succ.log_path = srv.state_dir, srv.log_path + ".successor"
    succ.c2s_port, succ.tls_port, succ.http_port = srv.c2s_port, srv.tls_port, srv.http_port
    try:
        succ.start(keep_ports=True)
        assert srv.wait(15) == 0, srv.log_tail(30)
        srv.state_dir = tempfile.mkdtemp(prefix="stanzad-retired-")  # stop() leaves the state
        ready(succ)
        succ.wait_log(r"event=bpf\.guard state=active")
        for _ in range(4):
            try:
                ns_connect(netns, netns.srcs[0], srv.ns_port, timeout=0.5).close()
            except OSError:
                pass
        assert ctl_json(succ, "guard")["counters"]["rate_dropped"] >= 1
    finally:
        succ.stop()
        srv.stop()
