"""Interoperability of stanzad's federation with Debian's ejabberd as a peer.

ejabberd runs from a temporary directory with its own configuration
(ejabberdctl --config-dir: ejabberd.yml, ejabberdctl.cfg, inetrc), on
loopback only, with a self-signed certificate and an Erlang distribution
port of its own; as root, ejabberdctl runs it as the ejabberd user. It
finds stanzad.test through DNS: its inetrc names the test's own DNS server
(test_federation_dns.DnsServer on a free UDP port) where
_xmpp-server._tcp.stanzad.test points at stanzad's s2s port on
127.0.0.1; stanzad finds ejabberd.test through its static host table. Neither certificate
verifies, so both sides use dialback (XEP-0220). Exchanged: a message each
way and a subscription with the presence that follows.

Skips with the reason when ejabberd is not installed (it is not among make
check's dependencies: a whole Erlang runtime for one test; `scripts/
install-deps.sh bench` installs it) or cannot start.
"""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from harness import NS_CLIENT, NS_REGISTER, RawStream, free_ports, q, tostr

import test_federation as tf
from test_federation_dns import T_SRV, DnsServer

S_DOM = "stanzad.test"
E_DOM = "ejabberd.test"
START_TIMEOUT = 30   # the Erlang VM takes a few seconds on a loaded box

EJABBERD_YML = """\
# Written by tests/integration/test_federation_ejabberd.py
hosts:
  - "{dom}"
loglevel: info
log_rotate_count: 0
certfiles:
  - "{d}/ejabberd.pem"
acme:
  auto: false
listen:
  -
    port: {c2s}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: true
  -
    port: {s2s}
    ip: "127.0.0.1"
    module: ejabberd_s2s_in
s2s_use_starttls: required
s2s_timeout: 20
auth_method: internal
auth_password_format: plain
access_rules:
  register:
    allow: all
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_s2s_dialback: {{}}
  mod_register:
    ip_access: all
    access: register
"""


class Ejabberd:
    def __init__(self, dns_port):
        self.dir = tempfile.mkdtemp(prefix="stanzad-ejabberd-")
        self.spool = os.path.join(self.dir, "spool")
        self.logs = os.path.join(self.dir, "logs")
        os.makedirs(self.spool)
        os.makedirs(self.logs)
        self.c2s_port, self.s2s_port, self.stanzad_s2s_port, dist = free_ports(4)
        self.proc = None
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", "key.pem", "-out",
                        "cert.pem", "-days", "2", "-subj", "/CN=" + E_DOM, "-addext",
                        "subjectAltName=DNS:" + E_DOM], cwd=self.dir, check=True,
                       capture_output=True, timeout=30)
        with open(os.path.join(self.dir, "ejabberd.pem"), "w") as f:
            for name in ("cert.pem", "key.pem"):
                with open(os.path.join(self.dir, name)) as part:
                    f.write(part.read())
        with open(os.path.join(self.dir, "ejabberd.yml"), "w") as f:
            f.write(EJABBERD_YML.format(d=self.dir, dom=E_DOM, c2s=self.c2s_port,
                                        s2s=self.s2s_port))
        with open(os.path.join(self.dir, "ejabberdctl.cfg"), "w") as f:
            f.write("ERL_DIST_PORT=%d\nERL_OPTIONS=\"-env ERL_CRASH_DUMP_BYTES 0\"\n" % dist)
        # The Erlang resolver: the test's DNS server only (not resolv.conf's,
        # which would answer NXDOMAIN first), no hosts file.
        with open(os.path.join(self.dir, "inetrc"), "w") as f:
            f.write("{lookup, [dns]}.\n{resolv_conf, \"\"}.\n{hosts_file, \"\"}.\n"
                    "{nameserver, {127,0,0,1}, %d}.\n{timeout, 1000}.\n{retry, 2}.\n"
                    % dns_port)
        if os.getuid() == 0:
            for path in [self.dir, self.spool, self.logs] + [
                    os.path.join(self.dir, n) for n in os.listdir(self.dir)]:
                shutil.chown(path, "ejabberd", "ejabberd")
        self.ctl = shutil.which("ejabberdctl") or "/usr/sbin/ejabberdctl"

    def start(self):
        self.out = open(os.path.join(self.dir, "stdout.log"), "wb")
        self.proc = subprocess.Popen(
            [self.ctl, "--config-dir", self.dir, "--spool", self.spool, "--logs", self.logs,
             "--node", "stanzadtest%d@localhost" % self.c2s_port, "foreground"],
            stdin=subprocess.DEVNULL, stdout=self.out, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return "ejabberd exited with status %s: %s" % (self.proc.returncode,
                                                               self.tail(20))
            try:
                socket.create_connection(("127.0.0.1", self.c2s_port), timeout=0.5).close()
                socket.create_connection(("127.0.0.1", self.s2s_port), timeout=0.5).close()
                return None
            except OSError:
                time.sleep(0.2)
        return "ejabberd did not listen within %d s: %s" % (START_TIMEOUT, self.tail(20))

    def tail(self, n=60):
        text = ""
        for name in ("stdout.log", "logs/ejabberd.log", "logs/error.log"):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    text += "".join(f.readlines()[-n:])
            except OSError:
                pass
        return text

    def register(self, user, password):
        s = RawStream(self.c2s_port)
        try:
            s.open(to=E_DOM)
            s.starttls()
            s.send("<iq type='set' id='reg1'><query xmlns='%s'><username>%s</username>"
                   "<password>%s</password></query></iq>" % (NS_REGISTER, user, password))
            el = s.expect(q(NS_CLIENT, "iq"))
            assert el.get("type") == "result", "registration failed: %s" % tostr(el)
        finally:
            s.close()

    def _descendants(self):
        """Pids below ejabberdctl (su puts the Erlang VM in a session of its
        own, so neither its process group nor su's signals reach it)."""
        children = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
        out, todo = [], [self.proc.pid]
        while todo:
            kids = children.get(todo.pop(), [])
            out += kids
            todo += kids
        return out

    def stop(self):
        if self.proc and self.proc.poll() is None:
            # The VM stops cleanly on SIGTERM; the scripts above it then exit.
            pids = self._descendants() + [self.proc.pid]
            for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
                for pid in pids:
                    try:
                        os.kill(pid, sig)
                    except OSError:
                        pass
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline and any(
                        os.path.exists("/proc/%d" % p) and p != self.proc.pid for p in pids):
                    self.proc.poll()
                    time.sleep(0.1)
                try:
                    self.proc.wait(1)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if getattr(self, "out", None):
            self.out.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def ejabberd():
    for tool in ("ejabberdctl", "erl", "openssl"):
        if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool):
            pytest.skip("no %s: Debian package ejabberd is not installed (an optional peer, "
                        "not in make check's dependencies: scripts/install-deps.sh bench "
                        "installs it)" % tool)
    if os.getuid() == 0:
        try:
            pwd.getpwnam("ejabberd")
        except KeyError:
            pytest.skip("no ejabberd user to run ejabberd as (ejabberdctl refuses root)")
    dns = DnsServer({}, addr=("127.0.0.1", 0))
    e = Ejabberd(dns.sock.getsockname()[1])
    # ejabberd asks SRV through the Erlang resolver (inetrc) but the
    # target's address through getaddrinfo (the system's DNS): the target
    # is an address literal, which getaddrinfo answers without DNS.
    dns.zone[("_xmpp-server._tcp." + S_DOM, T_SRV)] = [
        DnsServer.srv(0, 0, e.stanzad_s2s_port, "127.0.0.1")]
    dns.names.update(name for name, _ in dns.zone)
    e.dns = dns
    err = e.start()
    if err:
        e.stop()
        dns.stop()
        pytest.skip("ejabberd cannot run here: " + err)
    yield e
    e.stop()
    dns.stop()


def ejabberd_client(e, user, password):
    return tf.PeerClient(e.c2s_port, E_DOM, user, password)


def test_ejabberd_messages_and_subscription(make_server, ejabberd):
    e = ejabberd
    e.register("erin", "erin-pw")
    stz = make_server("--domain", S_DOM, "--listen-s2s", "127.0.0.1:%d" % e.stanzad_s2s_port,
                      "--s2s-host", "%s=127.0.0.1:%d" % (E_DOM, e.s2s_port))
    try:
        dave = tf.FClient(stz, S_DOM)
        erin = ejabberd_client(e, "erin", "erin-pw")
        # stanzad -> ejabberd (ejabberd checks our key by a call back: its DNS)
        dave.send("<message to='erin@%s' type='chat'><body>hi from stanzad</body></message>"
                  % E_DOM)
        erin.message(frm=dave.full, body="hi from stanzad", timeout=20)
        # ejabberd -> stanzad (found through SRV)
        erin.send("<message to='%s' type='chat'><body>hi from ejabberd</body></message>"
                  % dave.full)
        dave.message(frm=erin.full, body="hi from ejabberd", timeout=20)
        stz.wait_log(r"s2s\.link_up .*remote=ejabberd\.test auth=dialback")
        stz.wait_log(r"s2s\.peer_authenticated .*remote=ejabberd\.test .*method=dialback")
        # dave subscribes to erin; erin approves; dave gets her presence.
        dave.send("<presence type='subscribe' to='erin@%s'/>" % E_DOM)
        assert dave.push("erin@" + E_DOM).get("ask") == "subscribe"
        erin.presence(dave.bare, "subscribe", timeout=20)
        erin.send("<presence type='subscribed' to='%s'/>" % dave.bare)
        item = dave.push("erin@" + E_DOM, timeout=20)
        assert item.get("subscription") == "to", tostr(item)
        dave.presence(erin.full, None, timeout=20)
        dave.close()
        erin.close()
    except Exception:
        print("--- DNS questions: %s" % e.dns.asked)
        print("--- ejabberd log ---\n" + e.tail(80))
        raise
