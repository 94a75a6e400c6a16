"""Graceful shutdown and restart: SIGTERM flushes storage and exits in
bounded time; a new daemon started on the same state takes the listening
sockets over (handover.c), so clients connecting in a loop through the
restart never see "connection refused"; SIGHUP reloads what can change and
names what needs a restart (reload.c)."""
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time

from harness import (DOMAIN, NS_CLIENT, STANZAD, RawStream, StanzadServer, client_tls_context,
                     login, q, tostr)
from imutil import Client

HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream="
          "'http://etherx.jabber.org/streams' to='%s' version='1.0'>" % DOMAIN).encode()


class Prober:
    """Connects again and again, and sorts what each attempt got."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.outcomes = {}
        self.thread = threading.Thread(target=self.run)

    def attempt(self):
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=15)
        except ConnectionRefusedError:
            return "refused"
        except OSError as e:
            return "connect-error:%s" % e.errno
        try:
            s.sendall(HEADER)
            data = b""
            while b"</stream:features>" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            if b"</stream:features>" in data:
                return "served"
            if b"system-shutdown" in data:
                return "shutdown"
            return "closed:%r" % data[-80:]
        except ConnectionResetError:
            return "reset"
        except socket.timeout:
            return "timeout"
        finally:
            s.close()

    def run(self):
        while not self.stop.is_set():
            r = self.attempt()
            self.outcomes[r] = self.outcomes.get(r, 0) + 1
            time.sleep(0.005)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


def successor_of(srv, *extra):
    """A second daemon on srv's state directory, store, ports and flags (not started)."""
    succ = StanzadServer(srv.extra_args + list(extra), name=srv.name + "(successor)",
                         storage=srv.storage)
    os.rmdir(succ.state_dir)
    succ.state_dir = srv.state_dir
    succ.log_path = srv.log_path + ".successor"
    succ.c2s_port, succ.tls_port, succ.http_port = srv.c2s_port, srv.tls_port, srv.http_port
    return succ


def retire(srv):
    """srv has exited: its stop() must not remove the state its successor uses."""
    srv.state_dir = tempfile.mkdtemp(prefix="stanzad-retired-")


def test_restart_hands_the_listeners_over_and_refuses_nobody(make_server):
    srv = make_server()
    user, pw, jid = srv.new_account("ho")
    absent, apw, ajid = srv.new_account("ho")
    s, _ = login(srv.c2s_port, user, pw)
    s.send("<message to='%s' type='chat' id='before'><body>across the restart</body></message>"
           % ajid)
    time.sleep(0.3)
    succ = successor_of(srv)
    with Prober(srv.c2s_port) as probe, Prober(srv.tls_port) as tls_probe:
        time.sleep(0.5)
        t0 = time.monotonic()
        succ.start(keep_ports=True)
        try:
            # The old daemon ends its streams with system-shutdown and exits.
            assert s.stream_error(timeout=10) == "system-shutdown"
            assert srv.wait(15) == 0, srv.log_tail(30)
            retire(srv)
            succ.wait_log(r"event=server\.start ")
            took = time.monotonic() - t0
            time.sleep(1.0)  # the successor serves the probes for a while
        except BaseException:
            succ.stop()
            raise
    try:
        print("probe outcomes: c2s %s, tls %s; restart took %.2f s" % (probe.outcomes, tls_probe.outcomes, took))
        assert probe.outcomes.get("refused", 0) == 0, probe.outcomes
        assert tls_probe.outcomes.get("refused", 0) == 0, tls_probe.outcomes
        bad = {k: v for k, v in probe.outcomes.items() if k not in ("served", "shutdown")}
        assert not bad, probe.outcomes
        assert probe.outcomes.get("served", 0) > 20, probe.outcomes
        assert took < 10, "the restart took %.1f s" % took
        assert "role=old" in srv.log_text() and "role=new" in succ.log_text()
        # The successor's steering took the client sockets over from ours (bpf_steer.c).
        if os.geteuid() == 0 and (os.cpu_count() or 1) > 1:
            assert "event=bpf.steer state=active" in succ.log_text(), succ.log_tail(40)
        succ.wait_log(r"event=server\.handover_done waited_ms=\d+")
        # The successor has the state: the message stored before the restart.
        c = Client(succ, absent, apw)
        c.send("<presence/>")
        m = c.wait(lambda el: el.tag == q(NS_CLIENT, "message"), what="the offline message")
        assert m.findtext(q(NS_CLIENT, "body")) == "across the restart"
        c.close()
        # And it takes the next restart over the same way; the old daemon's
        # exit left the successor's sockets in place.
        assert os.path.exists(os.path.join(succ.state_dir, "handover.sock"))
        if "control.listen" in succ.log_text():
            assert os.path.exists(os.path.join(succ.state_dir, "control"))
    finally:
        s.close()
        assert succ.stop() == 0


def test_without_a_running_daemon_a_stale_socket_is_ignored(make_server):
    srv = make_server("--listen-http", "off")
    srv.wait_log(r"event=server\.start ")  # the hand-over socket is made just before
    path = os.path.join(srv.state_dir, "handover.sock")
    assert os.path.exists(path)
    srv.kill()  # the socket file stays behind
    srv.restart()
    # Nobody listens (or, for a moment after the kill, nobody answers).
    srv.wait_log(r"server\.handover_(stale|failed)")
    s, _ = login(srv.c2s_port, *srv.new_account("stale")[:2])
    s.close()


def test_handover_off_means_a_second_daemon_cannot_take_the_ports(make_server):
    srv = make_server("--handover-socket", "off")
    assert not os.path.exists(os.path.join(srv.state_dir, "handover.sock"))
    r = subprocess.run([STANZAD, "--state-dir", srv.state_dir, "--handover-socket", "off",
                        "--listen-c2s", "127.0.0.1:%d" % srv.c2s_port, "--listen-c2s-tls", "off",
                        "--listen-http", "off"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and "cannot listen" in r.stderr, r.stderr
    assert srv.alive()


def test_sigterm_flushes_storage_and_exits_in_time(make_server):
    """What was handed to the storage thread before SIGTERM is on disk after
    the exit: archive writes (which wait a few ms for company) included."""
    srv = make_server()
    a, apw, _ = srv.new_account("flush")
    b, bpw, bjid = srv.new_account("flush")
    sa, _ = login(srv.c2s_port, a, apw)
    sb, bfull = login(srv.c2s_port, b, bpw)
    n = 60
    sa.send("".join("<message to='%s' type='chat' id='f%d'><body>flush %d</body></message>"
                    % (bfull, i, i) for i in range(n)))
    for _ in range(n):
        sb.expect(q(NS_CLIENT, "message"))
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    assert srv.wait(10) == 0
    assert time.monotonic() - t0 < 6
    sa.close()
    sb.close()
    srv.restart()
    c = Client(srv, a, apw)
    try:
        fin = c.iq("set", "<query xmlns='urn:xmpp:mam:2' queryid='all'><set xmlns="
                   "'http://jabber.org/protocol/rsm'><max>200</max></set></query>")
        assert fin.get("type") == "result", tostr(fin)
        bodies = [el.findtext(".//{%s}body" % NS_CLIENT) for el in c.drain(0.5) + c.buffer
                  if el.find("{urn:xmpp:mam:2}result") is not None]
        assert sorted(bodies) == sorted("flush %d" % i for i in range(n)), bodies
    finally:
        c.close()


# --------------------------------------------------------------------------
# SIGHUP
# --------------------------------------------------------------------------

def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def hup(srv):
    mark = srv.log_size()
    srv.proc.send_signal(signal.SIGHUP)
    return mark


def peer_cert(port):
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    s = client_tls_context(["xmpp-client"]).wrap_socket(raw, server_hostname=DOMAIN)
    try:
        return s.getpeercert(binary_form=True)
    finally:
        s.close()


def bind_error(port, user, pw, resource):
    s = RawStream(port, direct_tls=True)
    try:
        s.open()
        assert s.scram_login(user, pw)[0] == "success"
        s.restart()
        s.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
               "<resource>%s</resource></bind></iq>" % resource)
        el = s.expect(q(NS_CLIENT, "iq"))
        if el.get("type") == "result":
            return None, s
        return [c.tag.split("}")[1] for c in el.find(q(NS_CLIENT, "error"))][0], s
    except BaseException:
        s.close()
        raise


def test_sighup_applies_limits_and_certificates_and_names_the_rest(make_server, tmp_path):
    conf = tmp_path / "stanzad.conf"
    write(conf, "max_resources = 4\nmuc = yes\n")
    srv = make_server("--config", str(conf))
    user, pw, _ = srv.new_account("hup")
    err, s1 = bind_error(srv.tls_port, user, pw, "one")
    assert err is None
    # Limits change at once; keys that shape the running server wait for a restart.
    write(conf, "max_resources = 1\nmuc = no\nstanza_timeout = 7\n")
    mark = hup(srv)
    m = srv.wait_log(r"event=config\.reload file=\S+ applied=(\S+) needs_restart=(\S+)", mark)
    assert set(m.group(1).split(",")) == {"max_resources", "stanza_timeout"}, m.group(0)
    assert m.group(2) == "muc", m.group(0)
    srv.wait_log(r"event=config\.restart_needed keys=muc", mark)
    err, s2 = bind_error(srv.tls_port, user, pw, "two")
    assert err == "resource-constraint"
    s1.close()
    s2.close()
    # A file that does not load changes nothing.
    write(conf, "max_resources = lots\n")
    mark = hup(srv)
    srv.wait_log(r"event=config\.reload_failed", mark)
    # A new certificate at new paths is used by the next handshakes.
    old = peer_cert(srv.tls_port)
    cert, key = str(tmp_path / "new.pem"), str(tmp_path / "new.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=%s" % DOMAIN], check=True, capture_output=True)
    write(conf, "max_resources = 1\nmuc = no\nstanza_timeout = 7\ncert = %s\nkey = %s\n"
          % (cert, key))
    mark = hup(srv)
    srv.wait_log(r"event=tls\.reload cert=%s" % cert, mark)
    new = peer_cert(srv.tls_port)
    assert new != old
    with open(cert) as f:
        assert ssl.DER_cert_to_PEM_cert(new).strip() == f.read().strip()
    # The log line the memory measurements read is still there.
    srv.wait_log(r"event=server\.signal signal=SIGHUP action=reload heap_in_use=\d+ "
                 r"connections=\d+", mark)


def test_sighup_changes_the_log_level(tmp_path):
    """log_level from the file (no --log-level on the command line): at
    warn a new connection logs nothing; after a SIGHUP with debug it does,
    and the reload names log_level as applied."""
    conf = tmp_path / "stanzad.conf"
    write(conf, "log_level = warn\n")
    srv = StanzadServer(["--config", str(conf)], name="stanzad(log level)")
    srv.log_level = None
    srv.start()
    try:
        raw = RawStream(srv.c2s_port)
        raw.open()
        raw.close()
        time.sleep(0.3)
        assert "event=conn.open" not in srv.log_text(), srv.log_tail(20)
        write(conf, "log_level = debug\n")
        mark = hup(srv)
        srv.wait_log(r"event=config\.reload file=\S+ applied=log_level needs_restart=none", mark)
        raw = RawStream(srv.c2s_port)
        raw.open()
        raw.close()
        srv.wait_log(r"level=info event=conn\.open", mark)
    finally:
        srv.stop()
