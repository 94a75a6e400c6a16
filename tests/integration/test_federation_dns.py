"""Federation finds peers through DNS (RFC 6120 3.2, XEP-0368), end to end.

No static host table here: every server finds every other through a DNS
server written in this file (UDP, A/AAAA/SRV, authoritative, NXDOMAIN
for names it does not know). So that the daemons ask it and nothing
else, the scenario runs in its own user, network and mount namespaces
(`unshare -rnm`): a private loopback where port 53 and the default XMPP
port 5269 are free, and /etc/resolv.conf (and nsswitch.conf) replaced
by bind mounts visible only there. Five daemons, five domains:

- gamma.test offers `_xmpps-server._tcp` and `_xmpp-server._tcp`: the
  Direct TLS one is used (XEP-0368: no STARTTLS round trip);
- epsilon.test offers both too, but nothing answers at its Direct TLS
  port: the STARTTLS record is the next address tried;
- beta.test offers `_xmpp-server._tcp` only, two records: the better
  priority points at a dead port, the other at beta's listener, so the
  link comes up after trying them in RFC 2782 order;
- delta.test has no SRV records, only an AAAA record (::1): the domain
  itself at port 5269 (RFC 6120 3.2.1 fallback);
- alpha.test (the sender) has no SRV records, only an A record: the other
  three reach it there at 5269 to answer and for dialback call-backs;
- nxdomain.test does not exist: remote-server-not-found.

pytest runs the scenario as a child (this file with the argument
`scenario`) and skips with the reason when namespaces are not available.
"""
import ctypes
import fcntl
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SKIP_CODE = 77          # the scenario's exit status for "cannot run here"
SCENARIO_TIMEOUT = 120  # seconds for the whole child, generous for a loaded box


def test_srv_direct_tls_priority_and_address_fallback():
    probe = subprocess.run(["unshare", "-rnm", "true"], capture_output=True, text=True,
                           timeout=30) if _which("unshare") else None
    if probe is None:
        pytest.skip("no unshare binary (Debian package util-linux)")
    if probe.returncode != 0:
        pytest.skip("no user/network namespaces here (unshare -rnm: %s)" % probe.stderr.strip())
    # The scenario's network namespace cannot reach the suite's PostgreSQL
    # (nor can its user namespace, which maps root alone, run one): its
    # daemons store in SQLite whatever STANZAD_TEST_STORAGE says.
    env = dict(os.environ, STANZAD_TEST_STORAGE="sqlite")
    r = subprocess.run(["unshare", "-rnm", sys.executable, os.path.abspath(__file__),
                        "scenario"], capture_output=True, text=True, timeout=SCENARIO_TIMEOUT,
                       cwd=HERE, env=env)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    if r.returncode == SKIP_CODE:
        pytest.skip(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "scenario skipped")
    assert r.returncode == 0, "DNS scenario failed (output above):\n%s" % r.stderr[-4000:]


def _which(name):
    import shutil
    return shutil.which(name)


# --------------------------------------------------------------------------
# A small authoritative DNS server (RFC 1035 messages over UDP)
# --------------------------------------------------------------------------

T_A, T_AAAA, T_SRV = 1, 28, 33


def _encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


class DnsServer:
    """Answers from `zone`: {(name, type): [rdata bytes, ...]}; names are
    lowercase without the final dot. Records every question asked."""

    def __init__(self, zone, addr=("127.0.0.1", 53)):
        self.zone = zone
        self.names = {name for name, _ in zone}
        self.asked = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(addr)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @staticmethod
    def srv(priority, weight, port, target):
        return struct.pack("!HHH", priority, weight, port) + _encode_name(target)

    def _answer(self, query):
        if len(query) < 12:
            return None
        qid, flags, qdcount = struct.unpack("!HHH", query[:6])
        if flags & 0x8000 or qdcount != 1:
            return None
        labels, i = [], 12
        while i < len(query) and query[i]:
            n = query[i]
            labels.append(query[i + 1:i + 1 + n].decode("ascii", "replace"))
            i += 1 + n
        if i + 5 > len(query):
            return None
        qtype, qclass = struct.unpack("!HH", query[i + 1:i + 5])
        question = query[12:i + 5]
        name = ".".join(labels).lower()
        self.asked.append((name, qtype))
        records = self.zone.get((name, qtype), []) if qclass == 1 else []
        rcode = 0 if name in self.names else 3  # NXDOMAIN for unknown names
        head = struct.pack("!HHHHHH", qid, 0x8400 | (flags & 0x0100) | rcode, 1,
                           len(records), 0, 0)
        body = b"".join(struct.pack("!HHHIH", 0xC00C, qtype, 1, 60, len(rd)) + rd
                        for rd in records)
        return head + question + body

    def _run(self):
        while not self.stopping:
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            reply = self._answer(data)
            if reply:
                self.sock.sendto(reply, peer)

    def stop(self):
        self.stopping = True
        self.thread.join(2)
        self.sock.close()


# --------------------------------------------------------------------------
# The scenario (inside the namespaces)
# --------------------------------------------------------------------------

def _skip(reason):
    print("skipped: " + reason)
    sys.exit(SKIP_CODE)


def _loopback_up():
    """ip link set lo up, without needing iproute2."""
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH14x", b"lo", 0))
        flags = struct.unpack("16sH14x", ifr)[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _bind_over(path, text, tmp):
    """Makes `path` read `text` in this mount namespace only."""
    src = os.path.join(tmp, os.path.basename(path))
    with open(src, "w") as f:
        f.write(text)
    if not os.path.exists(path):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    MS_BIND = 4096
    if libc.mount(src.encode(), path.encode(), None, MS_BIND, None) != 0:
        _skip("cannot bind-mount over %s: %s" % (path, os.strerror(ctypes.get_errno())))
    return True


def _scenario():
    sys.path.insert(0, HERE)
    from harness import StanzadServer, free_ports
    import test_federation as tf

    try:
        _loopback_up()
    except OSError as e:
        _skip("cannot bring up loopback in the network namespace: %s" % e)
    tmp = tempfile.mkdtemp(prefix="stanzad-fed-dns-")
    # glibc reads resolv.conf without one as "nameserver 127.0.0.1" anyway.
    _bind_over("/etc/resolv.conf", "nameserver 127.0.0.1\noptions timeout:2 attempts:2\n", tmp)
    # Only files and DNS: no nss module may answer from the host's resolver.
    _bind_over("/etc/nsswitch.conf", "hosts: files dns\n", tmp)
    have_v6 = True
    try:
        with socket.socket(socket.AF_INET6) as s6:
            s6.bind(("::1", 0))
    except OSError:
        have_v6 = False

    pb, dead, pg_tls, pg_starttls, pe = free_ports(5)
    srv = DnsServer.srv
    zone = {
        ("alpha.test", T_A): [socket.inet_aton("127.0.0.1")],
        ("_xmpp-server._tcp.beta.test", T_SRV): [srv(10, 0, pb, "s2s.beta.test"),
                                                 srv(5, 0, dead, "s2s.beta.test")],
        ("s2s.beta.test", T_A): [socket.inet_aton("127.0.0.2")],
        ("_xmpps-server._tcp.gamma.test", T_SRV): [srv(0, 0, pg_tls, "xmpp.gamma.test")],
        ("_xmpp-server._tcp.gamma.test", T_SRV): [srv(0, 0, pg_starttls, "xmpp.gamma.test")],
        ("xmpp.gamma.test", T_A): [socket.inet_aton("127.0.0.3")],
        ("_xmpps-server._tcp.epsilon.test", T_SRV): [srv(0, 0, dead, "epsilon.test")],
        ("_xmpp-server._tcp.epsilon.test", T_SRV): [srv(0, 0, pe, "epsilon.test")],
        ("epsilon.test", T_A): [socket.inet_aton("127.0.0.5")],
    }
    if have_v6:
        zone[("delta.test", T_AAAA)] = [socket.inet_pton(socket.AF_INET6, "::1")]
        delta_listen, delta_peer = "[::1]:5269", r"\[::1\]:5269"
    else:
        print("note: no IPv6 loopback here; delta.test is reached by its A record")
        zone[("delta.test", T_A)] = [socket.inet_aton("127.0.0.4")]
        delta_listen, delta_peer = "127.0.0.4:5269", r"127\.0\.0\.4:5269"
    try:
        dns = DnsServer(zone)
    except OSError as e:
        _skip("cannot listen on 127.0.0.1:53 in the namespace: %s" % e)

    servers = []

    def start(domain, *args):
        s = StanzadServer(("--domain", domain) + args, name=domain).start()
        servers.append(s)
        return s

    ok = False
    try:
        a = start("alpha.test", "--listen-s2s", "127.0.0.1:5269")
        b = start("beta.test", "--listen-s2s", "127.0.0.2:%d" % pb)
        g = start("gamma.test", "--listen-s2s-tls", "127.0.0.3:%d" % pg_tls,
                  "--listen-s2s", "127.0.0.3:%d" % pg_starttls)
        d = start("delta.test", "--listen-s2s", delta_listen)
        e = start("epsilon.test", "--listen-s2s", "127.0.0.5:%d" % pe)
        alice = tf.FClient(a, "alpha.test")
        peers = [(b, "beta.test", tf.FClient(b, "beta.test")),
                 (g, "gamma.test", tf.FClient(g, "gamma.test")),
                 (d, "delta.test", tf.FClient(d, "delta.test")),
                 (e, "epsilon.test", tf.FClient(e, "epsilon.test"))]
        # Sent at once: each waits in its link's queue while DNS and TLS run.
        for _, dom, c in peers:
            alice.send("<message to='%s' type='chat'><body>to %s</body></message>" %
                       (c.bare, dom))
        for srv_, dom, c in peers:
            c.message(frm=alice.full, body="to " + dom, timeout=20)
            # The answer comes back over the peer's own link to alpha.test,
            # found by alpha's A record at the default port.
            c.send("<message to='%s' type='chat'><body>from %s</body></message>" %
                   (alice.full, dom))
            alice.message(frm=c.full, body="from " + dom, timeout=20)
            srv_.wait_log(r"s2s\.connect .*remote=alpha\.test peer=127\.0\.0\.1:5269 "
                          r"tls=starttls")
        # XEP-0368: the Direct TLS record first, though STARTTLS is offered too.
        a.wait_log(r"s2s\.connect .*remote=gamma\.test peer=127\.0\.0\.3:%d tls=direct" %
                   pg_tls)
        assert not re.search(r"remote=gamma\.test peer=127\.0\.0\.3:%d" % pg_starttls,
                             a.log_text())
        # Direct TLS first; when nothing answers there, STARTTLS.
        log = a.log_text()
        i_dead = log.find("remote=epsilon.test peer=127.0.0.5:%d tls=direct" % dead)
        i_live = log.find("remote=epsilon.test peer=127.0.0.5:%d tls=starttls" % pe)
        assert 0 <= i_dead < i_live, "epsilon.test: Direct TLS record not tried first"
        # RFC 2782 order: priority 5 (dead) was tried first, then priority 10.
        log = a.log_text()
        i_dead = log.find("remote=beta.test peer=127.0.0.2:%d " % dead)
        i_live = log.find("remote=beta.test peer=127.0.0.2:%d " % pb)
        assert 0 <= i_dead < i_live, "beta.test: dead record not tried first"
        a.wait_log(r"s2s\.link_up .*remote=beta\.test")
        # No SRV at all: the domain's own address at 5269.
        a.wait_log(r"s2s\.connect .*remote=delta\.test peer=%s tls=starttls" % delta_peer)
        for name in ("_xmpps-server._tcp.beta.test", "_xmpp-server._tcp.beta.test",
                     "_xmpps-server._tcp.delta.test", "_xmpp-server._tcp.delta.test"):
            assert (name, T_SRV) in dns.asked, "never asked for %s SRV" % name
        # A domain that does not exist: bounced, and quickly (NXDOMAIN is final).
        t0 = time.monotonic()
        alice.send("<message to='x@nxdomain.test' type='chat' id='nx'><body>x</body></message>")
        el = alice.wait(lambda e: e.get("id") == "nx", what="bounce", timeout=15)
        assert tf.stanza_error(el) == ("cancel", "remote-server-not-found"), el
        assert time.monotonic() - t0 < 10
        a.wait_log(r"s2s\.resolve_failed remote=nxdomain\.test")
        alice.close()
        for _, _, c in peers:
            c.close()
        ok = True
    finally:
        errors = []
        for s in servers:
            try:
                s.stop()
            except Exception as e:
                errors.append(str(e))
        dns.stop()
        if not ok:
            for s in servers:
                sys.stderr.write("--- %s log ---\n%s\n" % (s.name, s.log_tail(40)))
        if errors:
            sys.stderr.write("\n".join(errors))
            sys.exit(1)
    print("DNS scenario passed; questions asked: %d" % len(dns.asked))


if __name__ == "__main__" and sys.argv[1:] == ["scenario"]:
    _scenario()
