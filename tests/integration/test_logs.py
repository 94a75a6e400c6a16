"""Logs: rate-limited repeats (log_rate_limit: at most N lines per second
of one event at one level, the rest counted and summarized in a
log.suppressed line, none lost from the count), and the systemd journal
output (log_target = journal, or auto when $JOURNAL_STREAM names stderr),
checked against a journal socket of our own: the daemon runs in a private
mount namespace where /run/systemd/journal is a directory of this test
holding a datagram socket it reads."""
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from harness import STANZACTL, WAIT, StanzadServer, login


def burst(port, n):
    """n TCP connections opened and closed at once (n conn.open events)."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=WAIT) for _ in range(n)]
    for s in socks:
        s.close()


def count_lines(text, event):
    return len(re.findall(r"level=\w+ event=%s " % re.escape(event), text))


def suppressed(text, event):
    return sum(int(m) for m in re.findall(
        r"event=log\.suppressed suppressed_event=%s suppressed=(\d+) " % re.escape(event), text))


def test_repeats_beyond_the_limit_are_counted_not_written(make_server):
    srv = make_server("--log-rate-limit", "5")
    n = 40
    burst(srv.c2s_port, n)
    # Every conn.open is either a line or part of a summary (3: the start-up probes).
    deadline = time.monotonic() + WAIT
    while True:
        text = srv.log_text()
        lines, left_out = count_lines(text, "conn.open"), suppressed(text, "conn.open")
        if lines + left_out == n + 3:
            break
        assert time.monotonic() < deadline and lines + left_out < n + 3, \
            "lines %d + suppressed %d != %d\n%s" % (lines, left_out, n + 3, text[-3000:])
        time.sleep(0.05)
    assert left_out > 0 and lines <= 3 * 5, (lines, left_out)
    m = re.search(r"level=(\w+) event=log\.suppressed suppressed_event=conn\.open "
                  r"suppressed=\d+ limit=5\n", text)
    assert m and m.group(1) == "info", text[-2000:]
    # Other events keep their own budget: the bursts' closes are limited apart.
    assert count_lines(text, "conn.close") >= 1


def test_rate_limit_zero_writes_every_line(make_server):
    srv = make_server("--log-rate-limit", "0")
    burst(srv.c2s_port, 40)
    deadline = time.monotonic() + WAIT
    while count_lines(srv.log_text(), "conn.close") < 43:
        assert time.monotonic() < deadline, srv.log_tail()
        time.sleep(0.05)
    text = srv.log_text()
    assert count_lines(text, "conn.open") == 43
    assert "log.suppressed" not in text


def test_journal_requested_but_absent_falls_back_to_stderr(make_server):
    if os.path.exists("/run/systemd/journal/socket"):
        pytest.skip("this host runs a journal")
    srv = make_server("--log-target", "journal")
    srv.wait_log(r"level=warn event=log\.journal_unavailable socket=/run/systemd/journal/socket")
    srv.wait_log(r"level=info event=server\.start ")


def test_bad_log_target_is_a_config_error(tmp_path):
    from harness import STANZAD
    r = subprocess.run([STANZAD, "--state-dir", str(tmp_path), "--log-target", "syslog"],
                       capture_output=True, text=True, timeout=WAIT)
    assert r.returncode == 2 and "log_target" in r.stderr


# --------------------------------------------------------------------------
# The journal, for real: the native protocol on a socket we own
# --------------------------------------------------------------------------

WRAPPER = """#!/bin/sh
# Runs "$@" with /run/systemd/journal replaced by directory $1 (a private
# mount namespace: nothing outside it changes).
d=$1; shift
exec unshare -m sh -c 'mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal &&
mount --bind "$0" /run/systemd/journal && exec "$@"' "$d" "$@"
"""


def namespaces_work():
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
                       capture_output=True, timeout=WAIT)
    return r.returncode == 0


class FakeJournal:
    """A datagram socket where journald's would be, drained by a thread from
    the start (the kernel queues only net.unix.max_dgram_qlen datagrams;
    past that the daemon's send fails and the line goes to stderr)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="stanzad-journal-")
        os.chmod(self.dir, 0o755)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(os.path.join(self.dir, "socket"))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.settimeout(0.1)
        self.entries = []
        self.errors = []
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()
        self.wrapper = os.path.join(self.dir, "wrap.sh")
        with open(self.wrapper, "w") as f:
            f.write(WRAPPER)
        os.chmod(self.wrapper, 0o755)

    def _drain(self):
        while self.running:
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = {}
            try:
                assert d.endswith(b"\n"), d
                for line in d.decode().split("\n")[:-1]:
                    k, v = line.split("=", 1)
                    assert re.match(r"^[A-Z0-9_]+$", k) and not k.startswith("_"), k
                    assert k not in fields, "field %s twice" % k
                    fields[k] = v
            except (AssertionError, ValueError) as e:
                self.errors.append("%s: %r" % (e, d))
            with self.lock:
                self.entries.append(fields)

    def read(self):
        assert not self.errors, self.errors
        with self.lock:
            return list(self.entries)

    def wait(self, pred, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.read():
                if pred(e):
                    return e
            time.sleep(0.02)
        raise AssertionError("no journal entry matched; got %r" % self.read()[-10:])

    def close(self):
        self.running = False
        self.thread.join(5)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def journal():
    if not namespaces_work():
        pytest.skip("needs root and mount namespaces (unshare -m) for a private journal socket")
    j = FakeJournal()
    yield j
    j.close()


def start_in_namespace(journal, *args, journal_stream=None):
    """Starts a daemon whose /run/systemd/journal is journal.dir.
    journal_stream: None (unset), "stderr" (the dev:ino of the daemon's
    stderr, as systemd sets it) or a literal value."""
    saved = {k: os.environ.get(k) for k in ("STANZAD_WRAPPER", "JOURNAL_STREAM")}
    os.environ["STANZAD_WRAPPER"] = "%s %s" % (journal.wrapper, journal.dir)
    try:
        srv = StanzadServer(list(args), name="stanzad(journal)")
        if journal_stream == "stderr":
            open(srv.log_path, "ab").close()  # the harness appends to this very file
            st = os.stat(srv.log_path)
            os.environ["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
        elif journal_stream:
            os.environ["JOURNAL_STREAM"] = journal_stream
        else:
            os.environ.pop("JOURNAL_STREAM", None)
        return srv.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_start_entry(journal):
    e = journal.wait(lambda e: e.get("STANZAD_EVENT") == "server.start")
    assert e["PRIORITY"] == "6" and e["SYSLOG_IDENTIFIER"] == "stanzad"
    assert e["MESSAGE"].startswith("event=server.start domain=localhost ")
    assert e["STANZAD_DOMAIN"] == "localhost"
    return e


def test_journal_target_sends_native_datagrams(journal):
    srv = start_in_namespace(journal, "--log-target", "journal")
    try:
        check_start_entry(journal)
        # A failed login: priority info, the pairs as fields, nothing on stderr.
        u, p, _ = srv.new_account("jr")
        s, _ = login(srv.c2s_port, u, p)
        s.close()
        e = journal.wait(lambda e: e.get("STANZAD_EVENT") == "auth.success")
        assert e["STANZAD_MECHANISM"] == "SCRAM-SHA-256"
        assert e["STANZAD_JID"] == "%s@localhost" % u
        assert "event=server.start" not in srv.log_text()
        r = subprocess.run([STANZACTL, "--state-dir", srv.state_dir, "--json", "status"],
                           capture_output=True, text=True, timeout=WAIT)
        assert json.loads(r.stdout)["log"]["target"] == "journal"
    finally:
        srv.stop()
    # The last lines (server.stop) went to the journal too.
    journal.wait(lambda e: e.get("STANZAD_EVENT") == "server.stop")


def test_auto_uses_the_journal_when_stderr_is_its_stream(journal):
    srv = start_in_namespace(journal, journal_stream="stderr")
    try:
        check_start_entry(journal)
        assert "event=server.start" not in srv.log_text()
    finally:
        srv.stop()


def test_auto_stays_on_stderr_when_journal_stream_is_another_file(journal):
    # $JOURNAL_STREAM naming some other stream: stderr was redirected by
    # someone (a shell, a wrapper), so the daemon writes to it.
    srv = start_in_namespace(journal, journal_stream="1:1")
    try:
        srv.wait_log(r"event=server\.start ")
        assert not [e for e in journal.read() if e.get("STANZAD_EVENT") == "server.start"]
    finally:
        srv.stop()
