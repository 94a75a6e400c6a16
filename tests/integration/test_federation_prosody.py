"""Interoperability of stanzad's federation with Debian's prosody as a real peer.

Prosody runs from a temporary directory with its own configuration, on
loopback only: its own self-signed certificate, its c2s and s2s ports,
run_as_root when the test runs as root. It finds stanzad's domain through
libunbound (lua-unbound) and nothing else: a hosts file of the test's own
maps stanzad.test to 127.0.0.1, and a local SRV record
(_xmpp-server._tcp.stanzad.test) names stanzad's s2s port, so no real DNS
and no fixed port are involved; stanzad finds prosody.test through its
static host table. Neither side can verify the other's certificate, so both use
dialback (XEP-0220), in both directions: each server proves itself to
the other, and each checks the other's key with a call back.

Exchanged: a message each way, a subscription each way (subscribe,
subscribed, the presence that follows), presence broadcast and
unavailable at logout.

A second test gives both servers certificates from one test CA and makes
both insist on them (stanzad --s2s-auth verified, prosody
s2s_secure_auth): the links authenticate by SASL EXTERNAL both ways.

Skips with the precise reason when prosody or lua-unbound is missing, or
when prosody cannot start.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from harness import NS_CLIENT, free_ports, q, tostr

import test_federation as tf

S_DOM = "stanzad.test"
P_DOM = "prosody.test"

PROSODY_CFG = """\
-- Written by tests/integration/test_federation_prosody.py
run_as_root = true
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
log = {{ {{ levels = {{ min = "debug" }}, to = "file", filename = "{d}/prosody.log" }} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ {s2s} }}
s2s_direct_tls_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping" }}
modules_disabled = {{ "s2s_bidi" }}
authentication = "internal_plain"
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = {secure}
s2s_timeout = 20
-- stanzad.test is found through a hosts file and a local SRV record (lua-unbound).
unbound = {{ hoststxt = "{d}/hosts"; resolvconf = "{d}/resolv.conf";
            options = {{ ["local-data:"] = "_xmpp-server._tcp.{sdom}. 60 IN SRV 0 0 {sport} {sdom}." }} }}
certificates = "{d}/certs"
ssl = {{ key = "{d}/prosody.key"; certificate = "{d}/prosody.pem"{cafile} }}
VirtualHost "{dom}"
"""


def _lua_unbound_present():
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "lua-unbound"],
                       capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.endswith(" installed")


class Prosody:
    """ca: None for a self-signed certificate (dialback both ways), or a
    test CA (tf.make_ca) that signs prosody's certificate and that prosody
    trusts for stanzad's, with s2s_secure_auth: certificates only."""

    def __init__(self, ca=None):
        self.dir = tempfile.mkdtemp(prefix="stanzad-prosody-")
        os.makedirs(os.path.join(self.dir, "data"))
        os.makedirs(os.path.join(self.dir, "certs"))
        self.c2s_port, self.s2s_port, self.stanzad_s2s_port = free_ports(3)
        self.cfg = os.path.join(self.dir, "prosody.cfg.lua")
        self.log = os.path.join(self.dir, "prosody.log")
        self.proc = None
        if ca:
            cert, key = ca[P_DOM]
            shutil.copy(cert, os.path.join(self.dir, "prosody.pem"))
            shutil.copy(key, os.path.join(self.dir, "prosody.key"))
        else:
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-nodes", "-keyout", "prosody.key",
                            "-out", "prosody.pem", "-days", "2", "-subj", "/CN=" + P_DOM,
                            "-addext", "subjectAltName=DNS:" + P_DOM], cwd=self.dir,
                           check=True, capture_output=True, timeout=30)
        with open(os.path.join(self.dir, "hosts"), "w") as f:
            f.write("127.0.0.1 %s\n" % S_DOM)
        # No name server answers here: SRV lookups fail at once, A comes from hosts.
        with open(os.path.join(self.dir, "resolv.conf"), "w") as f:
            f.write("nameserver 127.0.0.1\n")
        with open(self.cfg, "w") as f:
            f.write(PROSODY_CFG.format(d=self.dir, c2s=self.c2s_port, s2s=self.s2s_port,
                                       dom=P_DOM, sdom=S_DOM, sport=self.stanzad_s2s_port,
                                       secure="true" if ca else "false",
                                       cafile='; cafile = "%s"' % ca["ca"] if ca else ""))

    def register(self, user, password):
        r = subprocess.run(["prosodyctl", "--config", self.cfg, "register", user, P_DOM,
                            password], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, "prosodyctl register failed: %s %s" % (r.stdout, r.stderr)

    def start(self, timeout=15):
        self.out = open(os.path.join(self.dir, "stdout.log"), "wb")
        self.proc = subprocess.Popen(["prosody", "--config", self.cfg, "-F"],
                                     stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return "prosody exited with status %s: %s" % (self.proc.returncode,
                                                              self.tail(20))
            try:
                socket.create_connection(("127.0.0.1", self.c2s_port), timeout=0.5).close()
                socket.create_connection(("127.0.0.1", self.s2s_port), timeout=0.5).close()
                return None
            except OSError:
                time.sleep(0.1)
        return "prosody did not listen within %d s: %s" % (timeout, self.tail(20))

    def tail(self, n=60):
        text = ""
        for name in ("stdout.log", "prosody.log"):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    text += "".join(f.readlines()[-n:])
            except OSError:
                pass
        return text

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "out", None):
            self.out.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _start_prosody(ca=None):
    for tool in ("prosody", "prosodyctl", "openssl"):
        if not shutil.which(tool):
            pytest.skip("no %s binary: Debian package prosody (scripts/install-deps.sh) is "
                        "not installed" % tool)
    if not _lua_unbound_present():
        pytest.skip("Debian package lua-unbound is not installed: prosody then resolves "
                    "only through DNS and cannot find stanzad.test on loopback")
    p = Prosody(ca)
    p.register("carol", "carol-pw")
    err = p.start()
    if err:
        p.stop()
        pytest.skip("prosody cannot run here: " + err)
    return p


@pytest.fixture
def prosody():
    p = _start_prosody()
    yield p
    p.stop()


@pytest.fixture
def prosody_ca():
    if not shutil.which("openssl"):
        pytest.skip("no openssl CLI (Debian package openssl)")
    ca = tf.make_ca([S_DOM, P_DOM])
    p = _start_prosody(ca)
    p.ca = ca
    yield p
    p.stop()


def prosody_client(p, user, password):
    return tf.PeerClient(p.c2s_port, P_DOM, user, password)


def test_prosody_message_and_subscription(make_server, prosody):
    stz = make_server("--domain", S_DOM, "--listen-s2s", "127.0.0.1:%d" % prosody.stanzad_s2s_port,
                      "--s2s-host", "%s=127.0.0.1:%d" % (P_DOM, prosody.s2s_port))
    try:
        dave = tf.FClient(stz, S_DOM)
        carol = prosody_client(prosody, "carol", "carol-pw")
        # stanzad -> prosody
        dave.send("<message to='carol@%s' type='chat' id='s1'><body>hi from stanzad</body>"
                  "</message>" % P_DOM)
        el = carol.message(frm=dave.full, body="hi from stanzad", timeout=20)
        # prosody -> stanzad (prosody resolves stanzad.test, verifies by dialback)
        carol.send("<message to='%s' type='chat' id='p1'><body>hi from prosody</body>"
                   "</message>" % dave.full)
        dave.message(frm=carol.full, body="hi from prosody", timeout=20)
        stz.wait_log(r"s2s\.link_up .*remote=prosody\.test auth=dialback")
        stz.wait_log(r"s2s\.peer_authenticated .*remote=prosody\.test .*method=dialback")
        # dave subscribes to carol; carol approves; dave gets her presence.
        dave.send("<presence type='subscribe' to='carol@%s'/>" % P_DOM)
        assert dave.push("carol@" + P_DOM).get("ask") == "subscribe"
        el = carol.presence(dave.bare, "subscribe", timeout=20)
        carol.send("<presence type='subscribed' to='%s'/>" % dave.bare)
        item = dave.push("carol@" + P_DOM, timeout=20)
        assert item.get("subscription") == "to", tostr(item)
        dave.presence(carol.full, None, timeout=20)
        # carol subscribes to dave; dave approves; carol gets dave's presence.
        carol.send("<presence type='subscribe' to='%s'/>" % dave.bare)
        dave.presence("carol@" + P_DOM, "subscribe", timeout=20)
        dave.send("<presence type='subscribed' to='carol@%s'/>" % P_DOM)
        assert dave.push("carol@" + P_DOM).get("subscription") == "both"
        carol.presence(dave.full, None, timeout=20)
        # A status change and the logout reach prosody's user.
        dave.send("<presence><status>brb</status></presence>")
        el = carol.presence(dave.full, None, timeout=20)
        assert el.findtext(q(NS_CLIENT, "status")) == "brb"
        dave.close()
        carol.presence(dave.full, "unavailable", timeout=20)
        carol.close()
    except Exception:
        print("--- prosody log ---\n" + prosody.tail(80))
        raise


def test_prosody_with_verified_certificates(make_server, prosody_ca):
    """Both sides hold certificates of one CA and insist on them (stanzad
    --s2s-auth verified, prosody s2s_secure_auth): SASL EXTERNAL both ways,
    no dialback."""
    p = prosody_ca
    cert, key = p.ca[S_DOM]
    stz = make_server("--domain", S_DOM, "--listen-s2s", "127.0.0.1:%d" % p.stanzad_s2s_port,
                      "--s2s-host", "%s=127.0.0.1:%d" % (P_DOM, p.s2s_port),
                      "--cert", cert, "--key", key, "--s2s-ca", p.ca["ca"],
                      "--s2s-auth", "verified")
    try:
        dave = tf.FClient(stz, S_DOM)
        carol = prosody_client(p, "carol", "carol-pw")
        dave.send("<message to='carol@%s' type='chat'><body>verified hello</body></message>"
                  % P_DOM)
        carol.message(frm=dave.full, body="verified hello", timeout=20)
        carol.send("<message to='%s' type='chat'><body>verified reply</body></message>"
                   % dave.full)
        dave.message(frm=carol.full, body="verified reply", timeout=20)
        stz.wait_log(r"s2s\.peer_certificate .*remote=prosody\.test verified=yes")
        stz.wait_log(r"s2s\.link_up .*remote=prosody\.test auth=external")
        stz.wait_log(r"s2s\.peer_authenticated .*remote=prosody\.test .*method=external")
        assert "method=dialback" not in stz.log_text()
        dave.close()
        carol.close()
    except Exception:
        print("--- prosody log ---\n" + p.tail(80))
        raise
