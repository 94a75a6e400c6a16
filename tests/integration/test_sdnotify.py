"""The daemon speaks systemd's notification protocol (sd_notify(3)).

A fake service manager (a datagram socket with SO_PASSCRED, as systemd's
own) is named in NOTIFY_SOCKET; the daemon must send READY=1 once its
listeners accept, STOPPING=1 when SIGTERM starts the shutdown, and
WATCHDOG=1 at least every half WATCHDOG_USEC while its event loop runs.
Each datagram must come from the daemon's own pid (NotifyAccess=main)."""
import os
import select
import signal
import socket
import struct
import tempfile
import time

import pytest

from harness import WAIT

SCM_CREDENTIALS = 2
CRED = struct.Struct("iII")  # struct ucred: pid, uid, gid


class FakeManager:
    def __init__(self, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if abstract:
            name = "stanzad-it-notify-%d-%d" % (os.getpid(), time.monotonic_ns())
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            self.dir = tempfile.mkdtemp(prefix="stanzad-notify-")
            self.env = os.path.join(self.dir, "notify.sock")
            self.sock.bind(self.env)

    def recv(self, timeout=WAIT):
        """(text, sender pid) of the next datagram, or (None, None) on timeout."""
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return None, None
        data, anc, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(CRED.size))
        pid = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == SCM_CREDENTIALS:
                pid = CRED.unpack(payload[:CRED.size])[0]
        return data.decode(), pid

    def expect(self, first_line, pid, timeout=WAIT):
        """Waits for a message whose first line is first_line; returns its
        fields. Fails on any other message first, or a foreign sender."""
        text, sender = self.recv(timeout)
        assert text is not None, "no %s within %.0f s" % (first_line, timeout)
        assert sender == pid, "message %r came from pid %s, not the daemon %d" % (text, sender, pid)
        lines = text.split("\n")
        assert lines[0] == first_line, "expected %s, got %r" % (first_line, text)
        return dict(line.split("=", 1) for line in lines)

    def close(self):
        self.sock.close()


@pytest.fixture
def manager():
    m = FakeManager()
    yield m
    m.close()


def test_ready_once_listening_and_stopping_on_sigterm(make_server, manager, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", manager.env)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    s = make_server()
    fields = manager.expect("READY=1", s.proc.pid)
    assert fields.get("STATUS"), "READY=1 without a STATUS= line: %r" % fields
    # READY means clients can connect now, without retrying.
    socket.create_connection(("127.0.0.1", s.c2s_port), timeout=2).close()
    s.signal(signal.SIGTERM)
    manager.expect("STOPPING=1", s.proc.pid)
    assert s.wait(WAIT) == 0
    # Nothing after STOPPING (no watchdog was asked for).
    assert manager.recv(0.2) == (None, None)


def test_abstract_notify_socket(make_server, monkeypatch):
    m = FakeManager(abstract=True)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", m.env)
        s = make_server()
        m.expect("READY=1", s.proc.pid)
    finally:
        m.close()


def test_watchdog_pings_within_half_the_timeout(make_server, manager, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", manager.env)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")  # pings due every 2 s at most
    s = make_server()
    manager.expect("READY=1", s.proc.pid)
    stamps = []
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline and len(stamps) < 4:
        manager.expect("WATCHDOG=1", s.proc.pid, timeout=3)
        stamps.append(time.monotonic())
    assert len(stamps) >= 4, stamps
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert max(gaps) <= 2.2, "watchdog gaps %s exceed half of WATCHDOG_USEC" % gaps
    s.signal(signal.SIGTERM)
    # Pings may interleave until the loop ends; STOPPING must come.
    for _ in range(5):
        text, pid = manager.recv(WAIT)
        assert pid == s.proc.pid
        if text.startswith("STOPPING=1"):
            break
        assert text == "WATCHDOG=1", text
    else:
        pytest.fail("no STOPPING=1 after SIGTERM")
    assert s.wait(WAIT) == 0


def test_watchdog_meant_for_another_process_is_not_fed(make_server, manager, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", manager.env)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    s = make_server()
    manager.expect("READY=1", s.proc.pid)
    assert manager.recv(2.5) == (None, None)


def test_unreachable_notify_socket_does_not_stop_the_daemon(make_server, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/stanzad/notify.sock")
    s = make_server()
    s.wait_log(r"event=sdnotify\.send_failed")
    socket.create_connection(("127.0.0.1", s.c2s_port), timeout=2).close()
