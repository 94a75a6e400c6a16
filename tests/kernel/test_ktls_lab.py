"""kTLS in the daemon, against a kernel that has it (the kernel lab).

Every test here needs /proc/net/tls_stat; on a host without kTLS the
module is skipped with that reason. In the lab a missing kTLS is a failure
of the lab itself (run-lab-tests.sh checks it first).

- Real TLS 1.2 and 1.3 clients with each AEAD suite exchange messages of
  1 byte to 100 kB both ways, byte for byte, over Direct TLS and STARTTLS,
  logging in with SCRAM-SHA-256-PLUS (channel binding after the SSL object
  was freed); the log must show mode=ktls and the kernel's counters the
  offloaded sessions.
- A TLS 1.3 KeyUpdate (openssl s_client 'K') and a TLS 1.2 renegotiation
  ('R') end the stream with <reset/>, never with garbage.
- A fatal alert mid-stream drops the connection; close_notify mid-stream
  is answered cleanly.
- Memory per idle TLS connection, userspace TLS against kTLS.
"""
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from harness import DOMAIN, NS_CLIENT, RawStream, q, uniq

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, "ktls_client.py")
PYTHON = "/usr/bin/python3"

# (version, suite as OpenSSL names it, TLS 1.2 cipher-list entry or None)
SUITES = [
    ("1.2", "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"),
    ("1.2", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"),
    ("1.2", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-ECDSA-CHACHA20-POLY1305"),
    ("1.3", "TLS_AES_128_GCM_SHA256", None),
    ("1.3", "TLS_AES_256_GCM_SHA384", None),
    ("1.3", "TLS_CHACHA20_POLY1305_SHA256", None),
]

OPENSSL_CNF = """openssl_conf = default_conf
[default_conf]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
Ciphersuites = %s
"""


def tls_stat():
    stats = {}
    with open("/proc/net/tls_stat") as f:
        for line in f:
            k, v = line.split()
            stats[k] = int(v)
    return stats


def run_client(server, version, suite, cipher12, mode="exchange", users=1, extra=()):
    """Runs ktls_client.py pinned to one version and suite; returns its report."""
    accounts = []
    for _ in range(users):
        user, password, _jid = server.new_account("lab")
        accounts += [user, password]
    args = [PYTHON, CLIENT, "--mode", mode, "--c2s-port", str(server.c2s_port),
            "--tls-port", str(server.tls_port), "--version", version,
            "--cipher", cipher12 or suite, "--user1", accounts[0], "--pass1", accounts[1]]
    if users > 1:
        args += ["--user2", accounts[2], "--pass2", accounts[3]]
    args += list(extra)
    env = dict(os.environ)
    with tempfile.NamedTemporaryFile("w", suffix=".cnf", delete=False) as cnf:
        cnf.write(OPENSSL_CNF % (suite if version == "1.3" else "TLS_AES_128_GCM_SHA256"))
    env["OPENSSL_CONF"] = cnf.name
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=180, env=env)
    finally:
        os.unlink(cnf.name)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    assert lines, "client printed no report (status %d)\n%s\n%s" % (p.returncode, p.stdout,
                                                                   p.stderr)
    report = json.loads(lines[-1])
    assert report.get("ok"), "client failed: %s\nstderr: %s" % (report, p.stderr[-3000:])
    return report


def established(server, start):
    """(conn, version, cipher, mode) of every tls.established since `start`."""
    rx = re.compile(r"event=tls\.established conn=(\d+) version=(\S+) cipher=(\S+) mode=(\S+)")
    return rx.findall(server.log_text(start))


def test_server_reports_every_suite_offloaded(server):
    m = server.wait_log(r"event=server\.paths .*")
    assert "tls=ktls ktls=on ktls_suites=0x3f" in m.group(0), m.group(0)


@pytest.mark.parametrize("version,suite,cipher12", SUITES,
                         ids=["%s-%s" % (v, s) for v, s, _ in SUITES])
def test_messages_cross_ktls_byte_exact(server, version, suite, cipher12):
    before = tls_stat()
    mark = server.log_size()
    report = run_client(server, version, suite, cipher12, users=2)
    assert report["version"] == report["version_b"] == "TLSv" + version
    assert report["cipher"] == report["cipher_b"] == suite
    assert report["messages"] == 14

    # Both connections were in the kernel while the client held them.
    during = report["tls_stat"]
    assert during["TlsCurrTxSw"] >= 2 and during["TlsCurrRxSw"] >= 2, during
    after = tls_stat()
    assert after["TlsTxSw"] >= before["TlsTxSw"] + 2, (before, after)
    assert after["TlsRxSw"] >= before["TlsRxSw"] + 2, (before, after)
    assert after["TlsDecryptError"] == before["TlsDecryptError"], (before, after)

    # The daemon says so too, for each connection, with the suite in use.
    server.wait_log(r"event=conn\.close conn=\d+ reason=\S+ tls=ktls", start=mark)
    est = established(server, mark)
    assert len(est) == 2, server.log_tail(40, mark)
    for _conn, ver, cipher, mode in est:
        assert (ver, mode) == ("TLSv" + version, "ktls"), est
        assert cipher == suite, est
    log = server.log_text(mark)
    assert len(re.findall(r"event=tls\.ktls_active ", log)) == 2, log[-3000:]
    assert "tls.ktls_failed" not in log and "tls.error" not in log, log[-3000:]


def openssl_client(server, version, command, mark):
    """openssl s_client on the Direct TLS port: opens a stream, then sends
    one of its interactive commands ('K' KeyUpdate, 'R' renegotiation) and
    reads until the server closes. stdin stays open meanwhile: at its end
    s_client would quit by itself. Returns everything it printed."""
    args = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % server.tls_port,
            "-servername", DOMAIN, "-alpn", "xmpp-client", "-tls1_3" if version == "1.3"
            else "-tls1_2"]
    if version == "1.2":
        args += ["-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    out = b""
    try:
        p.stdin.write(("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                       "xmlns:stream='http://etherx.jabber.org/streams' to='%s' "
                       "version='1.0'>\n" % DOMAIN).encode())
        p.stdin.flush()
        server.wait_log(r"event=tls\.ktls_active ", start=mark)
        out += read_until(p, b"</stream:features>", 20)
        p.stdin.write(command.encode() + b"\n")
        p.stdin.flush()
        out += read_until(p, None, 30)
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
    return out.decode("utf-8", "replace")


def read_until(p, marker, timeout):
    """Reads p's stdout until marker appears (None: until EOF), bounded."""
    out = b""
    deadline = time.monotonic() + timeout
    fd = p.stdout.fileno()
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if not r:
            continue
        d = os.read(fd, 65536)
        if not d:
            return out
        out += d
        if marker is not None and marker in out:
            return out
    raise AssertionError("s_client: no %r within %ds; output: %r" % (marker or "EOF", timeout,
                                                                   out[-2000:]))


def test_key_update_from_the_client_closes_cleanly(server):
    mark = server.log_size()
    out = openssl_client(server, "1.3", "K", mark)
    assert "KEYUPDATE" in out, out[-2000:]
    # The stream ends with <reset/>, in clear text the client could decrypt.
    assert re.search(r"<stream:error><reset xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>", out), \
        out[-2000:]
    assert "</stream:stream>" in out, out[-2000:]
    m = server.wait_log(r"event=tls\.key_update conn=\d+ requested=yes action=close", start=mark)
    assert m
    server.wait_log(r"event=stream\.error conn=\d+ condition=reset", start=mark)
    assert "TlsDecryptError" in tls_stat()
    assert tls_stat()["TlsDecryptError"] == 0


def test_renegotiation_under_tls12_is_declined(server):
    """As userspace OpenSSL does: a no_renegotiation warning. OpenSSL's
    client then gives up with a fatal alert, which ends the connection."""
    mark = server.log_size()
    before = tls_stat()
    out = openssl_client(server, "1.2", "R", mark)
    assert "RENEGOTIATING" in out, out[-2000:]
    assert "no renegotiation" in out, out[-2000:]
    server.wait_log(r"event=tls\.renegotiation_refused conn=\d+", start=mark)
    server.wait_log(r"event=tls\.error conn=\d+ reason=\"peer sent alert: handshake failure\"",
                    start=mark)
    assert tls_stat()["TlsDecryptError"] == before["TlsDecryptError"]


def test_fatal_alert_mid_stream_drops_the_connection(server):
    mark = server.log_size()
    report = run_client(server, "1.3", "TLS_AES_128_GCM_SHA256", None, mode="alert")
    assert report["after_alert_bytes"] == 0, report
    server.wait_log(r"event=tls\.error conn=\d+ reason=\"peer sent alert: internal error\" "
                    r"level=2 description=80", start=mark)
    server.wait_log(r"event=conn\.close conn=\d+ reason=stream-error tls=ktls", start=mark)


@pytest.mark.parametrize("version,suite,cipher12", [SUITES[0], SUITES[5]],
                         ids=["1.2", "1.3"])
def test_close_notify_mid_stream_is_answered(server, version, suite, cipher12):
    mark = server.log_size()
    run_client(server, version, suite, cipher12, mode="close_notify")
    server.wait_log(r"event=conn\.close conn=\d+ reason=peer tls=ktls", start=mark)
    assert "tls.error" not in server.log_text(mark)


# ---- memory ----

IDLE_CONNECTIONS = int(os.environ.get("KTLS_LAB_IDLE_CONNECTIONS", "100"))


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def heap_in_use(server):
    """The daemon's malloc'd bytes, from its SIGHUP log line (mallinfo2)."""
    mark = server.log_size()
    server.proc.send_signal(signal.SIGHUP)
    m = server.wait_log(r"event=server\.signal signal=SIGHUP .*heap_in_use=(\d+) "
                        r"connections=(\d+)", start=mark)
    return int(m.group(1)), int(m.group(2))


def plain_login(server, user, password, resource):
    s = RawStream(server.tls_port, direct_tls=True)
    s.open()
    s.auth("PLAIN", b"\0" + user.encode() + b"\0" + password.encode())
    s.expect(q("urn:ietf:params:xml:ns:xmpp-sasl", "success"))
    s.restart()
    s.bind(resource)
    return s


def idle_cost(server, n):
    """(heap KiB, RSS KiB) per idle, bound TLS 1.3 session (Direct TLS)."""
    user, password, _ = server.new_account("idle")
    # Pools, caches and the first chunks of every table fill up first.
    warm = [plain_login(server, user, password, "w%d" % i) for i in range(8)]
    time.sleep(0.5)
    heap0, conns0 = heap_in_use(server)
    rss0 = rss_kib(server.proc.pid)
    conns = []
    for i in range(n):
        # Resources are per account (max_resources is 16): spread them.
        if i % 12 == 0:
            user, password, _ = server.new_account("idle")
        conns.append(plain_login(server, user, password, "r%d" % i))
    time.sleep(1.0)
    heap1, conns1 = heap_in_use(server)
    rss1 = rss_kib(server.proc.pid)
    assert conns1 - conns0 == n, (conns0, conns1)
    for s in conns + warm:
        s.close()
    return (heap1 - heap0) / 1024.0 / n, (rss1 - rss0) / n


@pytest.mark.slow
def test_idle_tls_connection_memory(make_server):
    if not os.path.exists("/proc/net/tls_stat"):
        pytest.skip("no kTLS in this kernel")
    user_space = make_server("--ktls", "no")
    heap_user, rss_user = idle_cost(user_space, IDLE_CONNECTIONS)
    kernel = make_server("--ktls", "yes")
    heap_ktls, rss_ktls = idle_cost(kernel, IDLE_CONNECTIONS)
    line = ("memory per idle TLS 1.3 connection (%d connections): heap in use: userspace "
            "%.1f KiB, ktls %.1f KiB; RSS: userspace %.1f KiB, ktls %.1f KiB" %
            (IDLE_CONNECTIONS, heap_user, heap_ktls, rss_user, rss_ktls))
    print(line)
    sys.stderr.write(line + "\n")
    with open(os.path.join(os.environ.get("LAB_RUN", tempfile.gettempdir()), "memory.txt"),
              "a") as f:
        f.write(line + "\n")
    assert heap_ktls < heap_user, line
    # DESIGN budget: <= 12 KiB per idle TLS connection, kernel memory excluded.
    assert heap_ktls <= 12.0, line
