"""The stanza offload module (kmod/) and the daemon's use of it, under the
lab's kernel (tests/kernel/run-lab-tests.sh; the module's own C tests are
kmod_test.c).

- Loading and unloading: the genetlink family appears and goes, the
  kernel log stays clean, the module's refcount drops to zero after a
  daemon used it, and it can be unloaded while the daemon runs once an
  administrator turns it off (the daemon lets go and falls back).
- Every genetlink command through libnl (`stanzactl kmod`), and
  unprivileged requests (CAP_NET_ADMIN dropped with capsh, or another
  user) rejected.
- Fan-out through the module: 1,000 clients over kTLS get byte for byte
  what the io_uring path sends them; a client that does not read (full
  socket buffer: the daemon queues the rest, order kept); clients that
  reset their connections in the middle of a fan-out.

Without the module's .ko (no kernel headers to build it) every test
skips with that reason; run-lab-tests.sh sets KERNEL_LAB_KMOD=1 when it
built one, and then a missing module is a failure.
"""
import os
import signal
import subprocess
import time

import pytest

import fanout_lab as fl
from harness import StanzadServer

# Clients in the identity test: the 1,000 in make check-kernel, fewer
# in make check's quick run.
BIG = 1000
SMALL = 200


@pytest.fixture(autouse=True)
def need_module():
    if not os.path.exists(fl.KO):
        if os.environ.get("KERNEL_LAB_KMOD"):
            pytest.fail("no %s although the module should have been built" % fl.KO)
        pytest.skip("no %s: the module was not built (no headers for this kernel; "
                    "scripts/kernel-lab.sh kdir)" % fl.KO)
    if not os.path.exists("/proc/net/tls_stat"):
        pytest.skip("not the kernel lab: this kernel has no kTLS; run `make check-kernel`")
    before = len(fl.dmesg_lines())
    fl.load_module()
    yield
    # Whatever a test did, the next finds the module loaded and on.
    fl.load_module()
    fl.kmod_ctl("set", "enabled", "yes")
    complaints = fl.kernel_complaints(before)
    assert not complaints, "the kernel complained:\n" + "\n".join(complaints)


@pytest.fixture
def daemons():
    """start(receivers, *flags): a daemon with r0..r(n-1) and the publisher
    seeded, plain TCP allowed; every daemon is stopped (and must exit 0)."""
    started = []

    def start(receivers, *flags):
        # Hundreds of clients log in from one address at once.
        s = StanzadServer(["--require-tls", "no", "--log-level", "info",
                           "--max-preauth-per-ip", "0"] + list(flags),
                          name="stanzad%s" % (list(flags) or ""))
        fl.seed(s.state_dir, receivers)
        s.start()
        started.append(s)
        return s
    yield start
    for s in started:
        s.stop(timeout=30)


def stats():
    return fl.kmod_status()


def workers_of(s):
    """The daemon's worker count (startup log): each worker opens the device."""
    return int(s.wait_log(r"event=server\.paths .*workers=(\d+)", timeout=60).group(1))


# --------------------------------------------------------------------------
# Loading, the family, privileges
# --------------------------------------------------------------------------

def test_module_loads_with_its_family_and_unloads_cleanly():
    r = subprocess.run(["genl", "ctrl", "get", "name", "stanza_offload"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and "events" in r.stdout, r.stdout + r.stderr
    st = stats()
    assert st["module"] == "loaded" and st["version"] == 1 and st["enabled"] == "yes"
    assert oct(os.stat(fl.DEVICE).st_mode & 0o777) == "0o600"
    r = fl.unload_module()
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(fl.DEVICE)
    r = fl.kmod_ctl("status")
    assert r.returncode == 1 and "not loaded" in r.stdout + r.stderr
    fl.load_module()
    # A process holding the device keeps the module: rmmod refuses, then works.
    fd = os.open(fl.DEVICE, os.O_RDWR)
    try:
        r = subprocess.run(["rmmod", "stanza_offload"], capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and "in use" in r.stderr, r.stderr
    finally:
        os.close(fd)
    assert fl.unload_module().returncode == 0


def test_every_genetlink_command_through_stanzactl():
    st = stats()
    for key in ("owners", "registered", "requests", "targets", "complete", "partial",
                "blocked", "errors", "bytes", "max_sockets_per_request", "max_payload"):
        assert key in st, st
    r = fl.kmod_ctl("sockets")
    assert r.returncode == 0 and r.stdout.strip().endswith("sockets: 0"), r.stdout + r.stderr
    r = fl.kmod_ctl("set", "max_sockets_per_request", "500", "max_payload", "8192",
                    "max_registered", "7000")
    assert r.returncode == 0, r.stderr
    st = stats()
    assert (st["max_sockets_per_request"], st["max_payload"], st["max_registered"]) == \
        (500, 8192, 7000)
    r = fl.kmod_ctl("reset")
    assert r.returncode == 0, r.stderr
    assert stats()["requests"] == 0
    # The kernel checks ranges and says why.
    r = fl.kmod_ctl("set", "max_payload", "1")
    assert r.returncode == 1 and "out of range" in r.stderr, r.stderr
    r = fl.kmod_ctl("set", "max_sockets_per_request", "0")
    assert r.returncode == 1 and "out of range" in r.stderr, r.stderr
    r = fl.kmod_ctl("set", "bogus", "1")
    assert r.returncode == 2
    r = fl.kmod_ctl("set", "enabled", "maybe")
    assert r.returncode == 2
    r = fl.kmod_ctl("set", "enabled", "no")
    assert r.returncode == 0 and stats()["enabled"] == "no"
    assert fl.kmod_ctl("set", "enabled", "yes", "max_sockets_per_request", "65536",
                       "max_payload", "1048576", "max_registered", "1048576").returncode == 0
    assert stats()["enabled"] == "yes"


def test_unprivileged_requests_are_rejected():
    before = stats()
    no_admin = ["capsh", "--drop=cap_net_admin", "--"]
    # capsh runs the command through bash -c.
    r = subprocess.run(no_admin + ["-c", "%s kmod set enabled no" % fl.STANZACTL],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "Operation not permitted" in r.stderr, r.stderr
    r = subprocess.run(no_admin + ["-c", "%s kmod reset" % fl.STANZACTL],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "Operation not permitted" in r.stderr, r.stderr
    r = subprocess.run(no_admin + ["-c", "%s kmod set max_payload 4096" % fl.STANZACTL],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "Operation not permitted" in r.stderr, r.stderr
    # Reading needs no privilege.
    r = subprocess.run(no_admin + ["-c", "%s kmod status" % fl.STANZACTL],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "enabled: yes" in r.stdout, r.stderr
    # Another user: no CAP_NET_ADMIN, and the device (0600 root) is closed to it.
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    r = fl.kmod_ctl("set", "enabled", "no", wrap=nobody)
    assert r.returncode == 1 and "Operation not permitted" in r.stderr, r.stderr
    r = subprocess.run(nobody + ["/usr/bin/python3", "-c",
                                 "import os; os.open('%s', os.O_RDWR)" % fl.DEVICE],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "Permission denied" in r.stderr, r.stderr
    after = stats()
    assert after["enabled"] == "yes" and after["max_payload"] == before["max_payload"]


# --------------------------------------------------------------------------
# The daemon
# --------------------------------------------------------------------------

def test_startup_says_whether_the_module_is_used(daemons):
    # The listeners accept before the startup log is complete; under TCG an
    # ASan build (SANITIZE=1) needs more than the default 10 s to get there.
    slow = 60
    s = daemons(1)
    s.wait_log(r"event=server\.paths .*kmod=on", timeout=slow)
    s.wait_log(r"event=kmod\.open ", timeout=slow)
    s2 = daemons(1, "--kmod", "no")
    s2.wait_log(r'event=server\.paths .*kmod=off kmod_reason="kmod=no in the configuration"',
                timeout=slow)
    # Only the first daemon holds the device (once per worker).
    assert stats()["owners"] == workers_of(s)
    s.stop(timeout=30)
    s2.stop(timeout=30)
    assert fl.unload_module().returncode == 0
    s3 = daemons(1)
    s3.wait_log(r'event=server\.paths .*kmod=off kmod_reason="no /dev/stanza_offload',
                timeout=slow)


def identical(a, b, what):
    """Every receiver got the same bytes in both runs."""
    assert set(a.digests) == set(b.digests)
    diff = [u for u in a.digests if a.digests[u] != b.digests[u]]
    assert not diff, "%s: %d receivers got different bytes, e.g. %s: %s vs %s" % (
        what, len(diff), diff[0], a.digests[diff[0]], b.digests[diff[0]])
    for u, (sha, nbytes, last, order) in a.digests.items():
        assert order == "in-order" and nbytes > 0, (u, a.digests[u])


def fanout_identity(daemons, tmp_path, receivers, tls):
    updates = 5
    runs = {}
    seen = {}

    def registered_sockets():
        # Every receiver's socket is registered (update 0 went through the
        # module); over TLS they are kTLS sockets.
        seen["sockets"] = fl.kmod_ctl("sockets").stdout

    for kmod in ("yes", "no"):
        s = daemons(receivers, "--kmod", kmod)
        st0 = stats()
        runs[kmod] = fl.run_clients(s.tls_port if tls else s.c2s_port, receivers, updates,
                                    str(tmp_path / ("digests-%s" % kmod)), tls=tls,
                                    status_bytes=200,
                                    on_ready=registered_sockets if kmod == "yes" else None)
        st1 = stats()
        if kmod == "yes":
            # The module carried the fan-outs: every receiver, every update.
            assert st1["targets"] - st0["targets"] >= receivers * updates, (st0, st1)
            assert st1["errors"] == st0["errors"]
            want = "ktls=yes" if tls else "ktls=no"
            assert seen["sockets"].count(want) >= receivers, seen["sockets"][-500:]
        else:
            assert st1["targets"] == st0["targets"], "kmod=no still used the module"
        s.stop(timeout=60)
    identical(runs["yes"], runs["no"], "module against io_uring")
    return runs


def test_fanout_to_many_clients_over_ktls_is_byte_identical(daemons, tmp_path):
    n = BIG if os.environ.get("KERNEL_LAB_FULL") else SMALL
    fanout_identity(daemons, tmp_path, n, tls=True)


def test_fanout_to_plain_tcp_clients_is_byte_identical(daemons, tmp_path):
    fanout_identity(daemons, tmp_path, SMALL, tls=False)


@pytest.fixture
def small_tcp_buffers():
    """TCP buffers of at most 64 kB in the lab's guest (loopback would
    otherwise buffer megabytes for a reader that does not read)."""
    keys = ("net.ipv4.tcp_wmem", "net.ipv4.tcp_rmem")
    old = {k: subprocess.run(["sysctl", "-n", k], capture_output=True, text=True).stdout.strip()
           for k in keys}
    for k in keys:
        subprocess.run(["sysctl", "-q", "%s=4096 16384 65536" % k], check=True)
    yield
    for k in keys:
        subprocess.run(["sysctl", "-q", "%s=%s" % (k, old[k])], check=True)


def test_full_socket_buffer_remainder_is_queued_in_order(daemons, tmp_path, small_tcp_buffers,
                                                        monkeypatch):
    """Three receivers stop reading while 40 updates of 16 kB go out: their
    socket buffers fill, the module takes part of a copy or none, the daemon
    queues the rest after it; when they read again they get every update, in
    order, byte for byte what the io_uring path gives."""
    receivers, updates, stall = 20, 40, 3
    runs = {}
    monkeypatch.setenv("STANZAD_KEEP_STATE", "1")  # the log's last line is needed
    for kmod in ("yes", "no"):
        s = daemons(receivers, "--kmod", kmod)
        st0 = stats()
        runs[kmod] = fl.run_clients(s.c2s_port, receivers, updates,
                                    str(tmp_path / ("digests-%s" % kmod)), status_bytes=16000,
                                    stall=stall)
        assert runs[kmod].report["stalled_ok"] == stall
        st1 = stats()
        s.stop(timeout=60)
        if kmod == "yes":
            assert st1["partial"] + st1["blocked"] > st0["partial"] + st0["blocked"], (st0, st1)
            m = s.wait_log(r"event=kmod\.stats .*queued_bytes=(\d+)")
            assert int(m.group(1)) > 0
    identical(runs["yes"], runs["no"], "stalled receivers")


def test_clients_resetting_mid_fanout_do_not_disturb_the_rest(daemons, tmp_path):
    """20 of 100 receivers reset their connections right after an update
    went out (the module meets ECONNRESET/EPIPE, or the daemon's queue
    does): the others get every update, the daemon goes on, every socket
    is unregistered once its connection is gone."""
    receivers, drop = 100, 20
    s = daemons(receivers)
    st0 = stats()
    run = fl.run_clients(s.c2s_port, receivers, 6, str(tmp_path / "digests"), status_bytes=3000,
                         drop=drop, drop_after=2)
    assert run.report["dropped"] == drop and run.report["errors"] == 0
    assert len(run.digests) == receivers - drop
    assert all(d[2] == 6 and d[3] == "in-order" for d in run.digests.values())
    assert s.alive()
    assert stats()["targets"] > st0["targets"]
    deadline = time.monotonic() + 30
    while stats()["registered"]:
        assert time.monotonic() < deadline, "sockets still registered: %s" % stats()
        time.sleep(0.2)


def test_module_turned_off_and_unloaded_while_the_daemon_runs(daemons, tmp_path):
    receivers = 50
    s = daemons(receivers)
    first = fl.run_clients(s.c2s_port, receivers, 3, str(tmp_path / "d1"))
    st = stats()
    assert st["owners"] == workers_of(s) and st["targets"] >= receivers * 3
    # In use: it cannot go yet.
    r = subprocess.run(["rmmod", "stanza_offload"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    # Off: the daemon hears the event, lets go, and the module can be unloaded.
    mark = s.log_size()
    assert fl.kmod_ctl("set", "enabled", "no").returncode == 0
    s.wait_log(r"event=kmod\.detached ", start=mark)
    r = fl.unload_module()
    assert r.returncode == 0, r.stderr
    # Fan-out goes on with io_uring sends, the same bytes.
    second = fl.run_clients(s.c2s_port, receivers, 3, str(tmp_path / "d2"))
    identical(first, second, "after the module went away")
    assert s.alive()
    # Loaded again: the daemon picks it up at a fan-out after its retry delay.
    fl.load_module()
    time.sleep(11)
    mark = s.log_size()
    third = fl.run_clients(s.c2s_port, receivers, 3, str(tmp_path / "d3"))
    s.wait_log(r"event=kmod\.open ", start=mark)
    identical(first, third, "after the module came back")
    assert stats()["targets"] >= receivers * 2
    s.stop(timeout=60)
    # The daemon is gone: nothing holds the module.
    assert fl.module_refcount() == 0
    assert fl.unload_module().returncode == 0
