"""Federation (RFC 6120 server-to-server) and external components (XEP-0114).

Two stanzad instances with different domains federate over loopback, each
finding the other through the static host table (--s2s-host): messages,
iq and presence subscriptions across domains, with dialback (self-signed
certificates) and with certificates verified against a CA made here with
the openssl CLI (SASL EXTERNAL). Failures bounce: an unreachable peer
gives remote-server-not-found, a peer that accepts TCP and never answers
remote-server-timeout, one that never completes the TCP connect (a full
accept queue) the next address or remote-server-timeout; queues are
bounded per remote domain in stanzas and bytes; silent peers and
components get connection-timeout; a link dropped with stanzas still
queued sends them over one new connection, then bounces them. Inbound streams are checked
(invalid-from, host-unknown, improper-addressing, not-authorized) by a
hand-written peer. A component written here with the socket module
connects, exchanges stanzas (with users of this server and of another
one) and is refused with a bad secret; its secret may come from the
configuration file.

Interoperability with Debian's prosody is in test_federation_prosody.py,
with ejabberd (optional) in test_federation_ejabberd.py; finding peers
through DNS SRV and A/AAAA in test_federation_dns.py.
"""
import base64
import hashlib
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time

import pytest

from harness import (NS_CLIENT, NS_PING, NS_SASL, NS_STANZAS, NS_STREAM, NS_TLS, RawStream,
                     StreamClosed, free_ports, q, tostr, uniq)

NS_SERVER = "jabber:server"
NS_DB = "jabber:server:dialback"
NS_ROSTER = "jabber:iq:roster"
NS_COMPONENT = "jabber:component:accept"

A_DOM = "alpha.test"
B_DOM = "beta.test"


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def fed_login(server, user, password, domain):
    """A raw client stream to `server` for `domain`: STARTTLS, SCRAM, bind."""
    s = RawStream(server.c2s_port)
    s.open(to=domain)
    s.send("<starttls xmlns='%s'/>" % NS_TLS)
    s.expect(q(NS_TLS, "proceed"))
    s._wrap(None)
    s._new_parser()
    s.header = None
    s.open(to=domain)
    kind, cond = s.scram_login(user, password)
    assert kind == "success", cond
    s._new_parser()
    s.header = None
    s.open(to=domain)
    return s, s.bind()


class FClient:
    """A logged-in client that buffers what it is not waiting for."""

    def __init__(self, server, domain, user=None, password="secret-pw", presence=True):
        self.user = user or uniq("fed")
        if not user:
            server.add_user(self.user, password)
        self.s, self.full = fed_login(server, self.user, password, domain)
        self.bare = self.full.split("/", 1)[0]
        self.buffer = []
        # Interested in roster pushes (RFC 6121 2.1.6), as real clients are.
        self.send("<iq type='get' id='roster0'><query xmlns='%s'/></iq>" % NS_ROSTER)
        self.wait(lambda e: e.get("id") == "roster0", what="roster")
        if presence:
            self.send("<presence/>")
            self.wait(lambda e: e.tag == q(NS_CLIENT, "presence") and e.get("from") == self.full,
                      what="own presence")

    def send(self, data):
        self.s.send(data)

    def wait(self, pred, timeout=10.0, what="a matching stanza"):
        for i, el in enumerate(self.buffer):
            if pred(el):
                return self.buffer.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("%s: no %s within %.1f s; got meanwhile: %s" %
                                     (self.full, what, timeout,
                                      [tostr(e) for e in self.buffer][-8:]))
            try:
                el = self.s.next(left)
            except TimeoutError:
                continue
            if pred(el):
                return el
            self.buffer.append(el)

    def message(self, frm=None, body=None, mtype=None, timeout=10.0):
        def ok(e):
            return (e.tag == q(NS_CLIENT, "message") and (frm is None or e.get("from") == frm)
                    and (body is None or e.findtext(q(NS_CLIENT, "body")) == body)
                    and (mtype is None or e.get("type") == mtype))
        return self.wait(ok, timeout, "message from %s %r" % (frm, body))

    def presence(self, frm, ptype=None, timeout=10.0):
        def ok(e):
            return (e.tag == q(NS_CLIENT, "presence") and e.get("from", "").startswith(frm)
                    and e.get("type") == ptype)
        return self.wait(ok, timeout, "presence %s from %s" % (ptype, frm))

    def push(self, jid, timeout=10.0):
        def ok(e):
            if e.tag != q(NS_CLIENT, "iq") or e.get("type") != "set":
                return False
            item = e.find("%s/%s" % (q(NS_ROSTER, "query"), q(NS_ROSTER, "item")))
            return item is not None and item.get("jid") == jid
        el = self.wait(ok, timeout, "roster push for %s" % jid)
        self.send("<iq type='result' id='%s'/>" % el.get("id"))
        return el.find("%s/%s" % (q(NS_ROSTER, "query"), q(NS_ROSTER, "item")))

    def close(self):
        try:
            self.s.send("</stream:stream>")
            self.s.wait_closed(5)
        except Exception:
            pass
        self.s.close()


class PeerClient(FClient):
    """A client of another server (prosody, ejabberd) on PORT for DOMAIN:
    STARTTLS, PLAIN over TLS, bind, roster, initial presence (raw stream)."""

    def __init__(self, port, domain, user, password):
        s = RawStream(port)
        s.open(to=domain)
        s.send("<starttls xmlns='%s'/>" % NS_TLS)
        s.expect(q(NS_TLS, "proceed"))
        s._wrap(None)
        s._new_parser()
        s.header = None
        s.open(to=domain)
        s.auth("PLAIN", b"\0" + user.encode() + b"\0" + password.encode())
        kind, cond = s.sasl_next()
        assert kind == "success", cond
        s._new_parser()
        s.header = None
        s.open(to=domain)
        self.s = s
        self.full = s.bind()
        self.bare = self.full.split("/", 1)[0]
        self.user = user
        self.buffer = []
        self.send("<iq type='get' id='roster0'><query xmlns='%s'/></iq>" % NS_ROSTER)
        self.wait(lambda e: e.get("id") == "roster0", what="roster")
        self.send("<presence/>")


def stanza_error(el):
    err = el.find(q(NS_CLIENT, "error"))
    assert err is not None, "not an error: %s" % tostr(el)
    conds = [c.tag.split("}", 1)[1] for c in err if c.tag.startswith("{%s}" % NS_STANZAS)]
    return err.get("type"), conds[0] if conds else None


def start_pair(make_server, extra_a=(), extra_b=(), both=()):
    """Two servers, alpha.test and beta.test, each in the other's host table."""
    pa, pb = free_ports(2)
    a = make_server("--domain", A_DOM, "--listen-s2s", "127.0.0.1:%d" % pa,
                    "--s2s-host", "%s=127.0.0.1:%d" % (B_DOM, pb), *both, *extra_a)
    b = make_server("--domain", B_DOM, "--listen-s2s", "127.0.0.1:%d" % pb,
                    "--s2s-host", "%s=127.0.0.1:%d" % (A_DOM, pa), *both, *extra_b)
    a.s2s_port, b.s2s_port = pa, pb
    return a, b


def exchange_messages(a, b):
    """alice@alpha and bob@beta write to each other; returns the two clients."""
    alice = FClient(a, A_DOM)
    bob = FClient(b, B_DOM)
    alice.send("<message to='%s' type='chat' id='m1'><body>hello beta</body></message>" % bob.bare)
    el = bob.message(frm=alice.full, body="hello beta")
    assert el.get("to") == bob.bare
    bob.send("<message to='%s' type='chat' id='m2'><body>hello alpha</body></message>" % alice.full)
    alice.message(frm=bob.full, body="hello alpha")
    return alice, bob


# --------------------------------------------------------------------------
# Certificates (openssl CLI)
# --------------------------------------------------------------------------

def openssl(*args, cwd):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, "openssl %s failed: %s" % (" ".join(args), r.stderr)


def make_ca(domains):
    """A CA and a certificate per domain (DNS-ID SAN), in a temp dir."""
    d = tempfile.mkdtemp(prefix="stanzad-fed-ca-")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=stanzad test CA",
            cwd=d)
    out = {"dir": d, "ca": os.path.join(d, "ca.pem")}
    for dom in domains:
        with open(os.path.join(d, dom + ".ext"), "w") as f:
            f.write("subjectAltName=DNS:%s,DNS:*.%s\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n" % (dom, dom))
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", dom + ".key", "-out", dom + ".csr", "-subj", "/CN=" + dom, cwd=d)
        openssl("x509", "-req", "-in", dom + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", dom + ".pem", "-days", "2", "-extfile", dom + ".ext",
                cwd=d)
        out[dom] = (os.path.join(d, dom + ".pem"), os.path.join(d, dom + ".key"))
    return out


@pytest.fixture(scope="module")
def ca():
    if not shutil_which("openssl"):
        pytest.skip("no openssl CLI (Debian package openssl)")
    return make_ca([A_DOM, B_DOM, "gamma.test"])


def shutil_which(name):
    import shutil
    return shutil.which(name)


def cert_args(ca, dom):
    cert, key = ca[dom]
    return ("--cert", cert, "--key", key, "--s2s-ca", ca["ca"])


# --------------------------------------------------------------------------
# Two servers
# --------------------------------------------------------------------------

def test_messages_and_iq_across_domains_with_dialback(make_server):
    a, b = start_pair(make_server)
    alice, bob = exchange_messages(a, b)
    # Self-signed certificates: each side proved itself by dialback (XEP-0220).
    # The first message waited in the link's queue while the link came up.
    a.wait_log(r"s2s\.link_up .*local=alpha\.test remote=beta\.test auth=dialback queued=1")
    b.wait_log(r"s2s\.link_up .*local=beta\.test remote=alpha\.test auth=dialback")
    a.wait_log(r"s2s\.peer_authenticated .*remote=beta\.test local=alpha\.test method=dialback")
    # An iq to a full JID at the other domain, and its result back.
    alice.send("<iq type='get' id='v1' to='%s'><query xmlns='jabber:iq:version'/></iq>" % bob.full)
    el = bob.wait(lambda e: e.tag == q(NS_CLIENT, "iq") and e.get("id") == "v1", what="iq")
    assert el.get("from") == alice.full and el.get("type") == "get"
    bob.send("<iq type='result' id='v1' to='%s'><query xmlns='jabber:iq:version'>"
             "<name>bob's client</name></query></iq>" % alice.full)
    el = alice.wait(lambda e: e.tag == q(NS_CLIENT, "iq") and e.get("id") == "v1", what="result")
    assert el.get("type") == "result" and el.get("from") == bob.full
    # The other server answers its own ping (XEP-0199) over federation.
    alice.send("<iq type='get' id='p1' to='%s'><ping xmlns='%s'/></iq>" % (B_DOM, NS_PING))
    el = alice.wait(lambda e: e.tag == q(NS_CLIENT, "iq") and e.get("id") == "p1", what="pong")
    assert el.get("type") == "result" and el.get("from") == B_DOM
    # An unknown user there: the error comes back across.
    alice.send("<message to='nobody@%s' type='normal' id='n1'><body>x</body></message>" % B_DOM)
    el = alice.wait(lambda e: e.get("id") == "n1", what="bounce")
    assert el.get("type") == "error" and stanza_error(el)[1] == "service-unavailable"
    alice.close()
    bob.close()


def test_presence_subscription_across_domains(make_server):
    a, b = start_pair(make_server)
    alice = FClient(a, A_DOM)
    bob = FClient(b, B_DOM)
    # alice asks bob (RFC 6121 3.1): roster push with ask, bob sees the request.
    alice.send("<presence type='subscribe' to='%s'/>" % bob.bare)
    item = alice.push(bob.bare)
    assert item.get("ask") == "subscribe"
    el = bob.presence(alice.bare, "subscribe")
    assert el.get("from") == alice.bare
    # bob approves: alice's roster says 'to' and bob's presence follows.
    bob.send("<presence type='subscribed' to='%s'/>" % alice.bare)
    assert bob.push(alice.bare).get("subscription") == "from"
    item = alice.push(bob.bare)
    assert item.get("subscription") == "to" and item.get("ask") is None
    alice.presence(bob.full, None)
    # And the other direction: mutual.
    bob.send("<presence type='subscribe' to='%s'/>" % alice.bare)
    bob.push(alice.bare)
    alice.presence(bob.bare, "subscribe")
    alice.send("<presence type='subscribed' to='%s'/>" % bob.bare)
    assert alice.push(bob.bare).get("subscription") == "both"
    assert bob.push(alice.bare).get("subscription") == "both"
    bob.presence(alice.full, None)
    # Broadcasts cross the link: a status change, then unavailable at logout.
    bob.send("<presence><show>away</show><status>lunch</status></presence>")
    el = alice.presence(bob.full, None)
    assert el.findtext(q(NS_CLIENT, "status")) == "lunch"
    bob.close()
    alice.presence(bob.full, "unavailable")
    # A new session of bob probes alice's server and gets her presence (4.3).
    bob2 = FClient(b, B_DOM, user=bob.user)
    el = bob2.presence(alice.full, None)
    alice.presence(bob2.full, None)   # and alice hears bob's initial presence
    alice.close()
    bob2.presence(alice.full, "unavailable")
    bob2.close()


def test_remote_cancellation_and_directed_presence(make_server):
    """RFC 6121 across domains: a contact at another server cancels a
    subscription (3.2) and the user hears 'unavailable' from it; directed
    presence to a stranger there is followed by unavailable at logout (4.6)."""
    a, b = start_pair(make_server)
    alice = FClient(a, A_DOM)
    bob = FClient(b, B_DOM)
    carol = FClient(b, B_DOM)
    alice.send("<presence type='subscribe' to='%s'/>" % bob.bare)
    alice.push(bob.bare)
    bob.presence(alice.bare, "subscribe")
    bob.send("<presence type='subscribed' to='%s'/>" % alice.bare)
    bob.push(alice.bare)
    assert alice.push(bob.bare).get("subscription") == "to"
    alice.presence(bob.full, None)
    # bob takes his approval back: alice's roster says none, bob goes unavailable.
    bob.send("<presence type='unsubscribed' to='%s'/>" % alice.bare)
    assert bob.push(alice.bare).get("subscription") == "none"
    item = alice.push(bob.bare)
    assert item.get("subscription") == "none", tostr(item)
    alice.presence(bob.full, "unavailable")
    # Directed presence to carol (no subscription at all), then logout.
    alice.send("<presence to='%s'><status>just for you</status></presence>" % carol.full)
    el = carol.presence(alice.full, None)
    assert el.findtext(q(NS_CLIENT, "status")) == "just for you"
    alice.close()
    carol.presence(alice.full, "unavailable")
    bob.close()
    carol.close()


def test_certificates_verified_by_ca_use_sasl_external(make_server, ca):
    a, b = start_pair(make_server, extra_a=cert_args(ca, A_DOM), extra_b=cert_args(ca, B_DOM),
                      both=("--s2s-auth", "verified"))
    alice, bob = exchange_messages(a, b)
    a.wait_log(r"s2s\.link_up .*remote=beta\.test auth=external")
    b.wait_log(r"s2s\.link_up .*remote=alpha\.test auth=external")
    a.wait_log(r"s2s\.peer_authenticated .*remote=beta\.test .*method=external")
    assert "method=dialback " not in a.log_text() + b.log_text()
    alice.close()
    bob.close()


def test_verified_policy_refuses_a_self_signed_peer(make_server, ca):
    # alpha trusts only the CA and insists; beta has a self-signed certificate.
    a, b = start_pair(make_server, extra_a=cert_args(ca, A_DOM) + ("--s2s-auth", "verified"))
    alice = FClient(a, A_DOM)
    bob = FClient(b, B_DOM)
    # alpha will not talk to a server that cannot prove its name.
    alice.send("<message to='%s' type='chat' id='v1'><body>x</body></message>" % bob.bare)
    el = alice.wait(lambda e: e.get("id") == "v1", what="bounce")
    assert stanza_error(el) == ("cancel", "remote-server-not-found")
    a.wait_log(r"s2s\.peer_certificate .*remote=beta\.test verified=no")
    # Nor accept beta's stanzas by dialback: beta bounces them.
    bob.send("<message to='%s' type='chat' id='v2'><body>x</body></message>" % alice.bare)
    el = bob.wait(lambda e: e.get("id") == "v2", what="bounce", timeout=15)
    assert el.get("type") == "error"
    a.wait_log(r"s2s\.dialback_refused .*remote=beta\.test")
    alice.close()
    bob.close()


# --------------------------------------------------------------------------
# Failures: bounces, limits, timeouts
# --------------------------------------------------------------------------

def test_unreachable_peer_bounces_remote_server_not_found(make_server):
    (closed,) = free_ports(1)   # nothing listens there: connection refused
    a = make_server("--domain", A_DOM, "--s2s-host", "dead.test=127.0.0.1:%d" % closed)
    alice = FClient(a, A_DOM)
    alice.send("<message to='x@dead.test' type='chat' id='d1'><body>x</body></message>")
    el = alice.wait(lambda e: e.get("id") == "d1", what="bounce")
    assert el.get("from") == "x@dead.test" and el.get("type") == "error"
    assert stanza_error(el) == ("cancel", "remote-server-not-found")
    # Subscription requests bounce too; presence broadcasts never do.
    alice.send("<presence type='subscribe' to='y@dead.test' id='d2'/>")
    el = alice.wait(lambda e: e.get("id") == "d2", what="subscribe bounce")
    assert stanza_error(el) == ("cancel", "remote-server-not-found")
    # .invalid never resolves (RFC 6761): an immediate answer, no DNS wait.
    t0 = time.monotonic()
    alice.send("<iq to='nowhere.invalid' type='get' id='d3'><ping xmlns='%s'/></iq>" % NS_PING)
    el = alice.wait(lambda e: e.get("id") == "d3", what="iq bounce")
    assert stanza_error(el)[1] == "remote-server-not-found" and time.monotonic() - t0 < 5
    alice.close()


def test_silent_peer_bounces_remote_server_timeout_and_queue_limit(make_server):
    # A "server" that accepts TCP and never says a word.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    port = lsock.getsockname()[1]
    try:
        a = make_server("--domain", A_DOM, "--s2s-host", "silent.test=127.0.0.1:%d" % port,
                        "--s2s-host", "quiet.test=127.0.0.1:%d" % port,
                        "--s2s-handshake-timeout", "2", "--s2s-queue-max", "2",
                        "--s2s-queue-max-bytes", "65536")
        alice = FClient(a, A_DOM)
        for i in range(3):
            alice.send("<message to='x@silent.test' type='chat' id='q%d'><body>%d</body>"
                       "</message>" % (i, i))
        # The third does not fit in the queue while the link comes up.
        el = alice.wait(lambda e: e.get("id") == "q2", what="queue-full bounce", timeout=2)
        assert stanza_error(el) == ("wait", "resource-constraint")
        # The limits are per remote domain: quiet.test has a queue of its
        # own, bounded in bytes too (40 KB fits in 64 KiB, twice does not).
        big = "y" * 40000
        for i in range(2):
            alice.send("<message to='x@quiet.test' type='chat' id='b%d'><body>%s</body>"
                       "</message>" % (i, big))
        el = alice.wait(lambda e: e.get("id") == "b1", what="bytes-full bounce", timeout=2)
        assert stanza_error(el) == ("wait", "resource-constraint")
        el = alice.wait(lambda e: e.get("id") == "b0", what="timeout bounce", timeout=8)
        assert stanza_error(el) == ("wait", "remote-server-timeout"), tostr(el)[:300]
        t0 = time.monotonic()
        for i in range(2):
            el = alice.wait(lambda e, i=i: e.get("id") == "q%d" % i, what="timeout bounce",
                            timeout=8)
            assert stanza_error(el) == ("wait", "remote-server-timeout"), tostr(el)
        assert time.monotonic() - t0 < 6
        a.wait_log(r"s2s\.timeout .*remote=silent\.test state=header")
        alice.close()
    finally:
        lsock.close()


class Blackhole:
    """A TCP port that never completes a connect: its accept queue is full
    (backlog 0, filled and never accepted), so further SYNs are dropped."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(0)
        self.port = self.lsock.getsockname()[1]
        self.fill = []
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self.fill.append(s)
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            probe.connect(("127.0.0.1", self.port))
            self.works = False
        except socket.timeout:
            self.works = True
        except OSError:   # e.g. tcp_abort_on_overflow: refused, not silent
            self.works = False
        finally:
            probe.close()

    def close(self):
        for s in self.fill:
            s.close()
        self.lsock.close()


def test_connect_timeout_tries_the_next_address_then_bounces(make_server):
    hole = Blackhole()
    try:
        if not hole.works:
            pytest.skip("this kernel completes connects past a full accept queue")
        # beta.test has two host table entries: the black hole first.
        pa, pb = free_ports(2)
        b = make_server("--domain", B_DOM, "--listen-s2s", "127.0.0.1:%d" % pb,
                        "--s2s-host", "%s=127.0.0.1:%d" % (A_DOM, pa))
        a = make_server("--domain", A_DOM, "--listen-s2s", "127.0.0.1:%d" % pa,
                        "--s2s-host", "%s=127.0.0.1:%d" % (B_DOM, hole.port),
                        "--s2s-host", "%s=127.0.0.1:%d" % (B_DOM, pb),
                        "--s2s-host", "hole.test=127.0.0.1:%d" % hole.port,
                        "--s2s-connect-timeout", "1")
        alice = FClient(a, A_DOM)
        bob = FClient(b, B_DOM)
        t0 = time.monotonic()
        alice.send("<message to='%s' type='chat'><body>after a timeout</body></message>" %
                   bob.bare)
        bob.message(frm=alice.full, body="after a timeout", timeout=15)
        a.wait_log(r"s2s\.timeout .*remote=beta\.test state=connecting")
        assert time.monotonic() - t0 >= 0.8   # it did wait for the first address
        # A domain whose only address never answers: remote-server-timeout.
        alice.send("<message to='x@hole.test' type='chat' id='h1'><body>x</body></message>")
        el = alice.wait(lambda e: e.get("id") == "h1", what="timeout bounce", timeout=15)
        assert stanza_error(el) == ("wait", "remote-server-timeout"), tostr(el)
        alice.close()
        bob.close()
    finally:
        hole.close()


def test_handshake_timeout_closes_silent_peers_and_components(make_server):
    port, cport = free_ports(2)
    make_server("--domain", A_DOM, "--listen-s2s", "127.0.0.1:%d" % port,
                "--listen-component", "127.0.0.1:%d" % cport,
                "--component", "bot.alpha.test=s3cret", "--s2s-handshake-timeout", "1")
    t0 = time.monotonic()
    # A server that opens a stream and never authenticates...
    p = Peer(port, A_DOM, "gamma.test")
    p.features()
    # ... and a component that never sends its handshake.
    r = RawStream(cport)
    r.send("<?xml version='1.0'?><stream:stream xmlns='%s' xmlns:stream='%s' to='%s'>"
           % (NS_COMPONENT, NS_STREAM, "bot.alpha.test"))
    r.read_header()
    assert p.r.stream_error() == "connection-timeout"
    assert r.stream_error() == "connection-timeout"
    assert time.monotonic() - t0 < 8
    p.close()
    r.close()


def test_idle_link_is_closed(make_server):
    a, b = start_pair(make_server, both=("--s2s-idle-timeout", "1"))
    alice, bob = exchange_messages(a, b)
    # Both streams end for idleness, each closed by whichever side's timer
    # fires first: alpha's link (alpha outbound or beta inbound), beta's link.
    def idle_closed(out_side, out_remote, in_side, in_remote):
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            if (re.search(r"s2s\.idle_close conn=\d+ local=\S+ remote=%s" % out_remote,
                          out_side.log_text()) or
                    re.search(r"s2s\.idle_close conn=\d+ remote=%s" % in_remote,
                              in_side.log_text())):
                return True
            time.sleep(0.05)
        return False
    assert idle_closed(a, r"beta\.test", b, r"alpha\.test"), "alpha's link stayed open"
    assert idle_closed(b, r"alpha\.test", a, r"beta\.test"), "beta's link stayed open"
    # The next stanza simply makes a new link.
    alice.send("<message to='%s' type='chat'><body>again</body></message>" % bob.bare)
    bob.message(frm=alice.full, body="again")
    alice.close()
    bob.close()


def test_stanzas_queued_on_a_dropped_link_are_not_lost(make_server):
    """A link that goes down with stanzas still in its queue (the peer had
    stopped reading) does not drop them silently: a new link is tried for
    them, and when that fails too their senders get errors."""
    a, b = start_pair(make_server, extra_a=("--session-stanza-rate", "0",
                                            "--session-byte-rate", "0",
                                            "--s2s-queue-max", "100000",
                                            "--s2s-queue-max-bytes", str(64 << 20)))
    alice, bob = exchange_messages(a, b)
    bob.close()
    b.signal(signal.SIGSTOP)   # beta stops reading: alpha's link backs up
    try:
        # A filler fills the kernel buffers and the output high-water mark;
        # the rest waits in the link's queue. Its own bounces go nowhere
        # (it is offline by then).
        filler = FClient(a, A_DOM, presence=False)
        pad = "f" * 8000
        chunk = "".join("<message to='%s' type='chat'><body>%d %s</body></message>" %
                        (bob.bare, i, pad) for i in range(100))
        for _ in range(15):   # 12 MB
            filler.send(chunk)
        filler.close()   # alpha has routed all of it once it closes the stream
        for i in range(3):
            alice.send("<message to='%s' type='chat' id='k%d'><body>queued %d</body></message>"
                       % (bob.bare, i, i))
        alice.send("<iq type='get' id='sync'><ping xmlns='%s'/></iq>" % NS_PING)
        alice.wait(lambda e: e.get("id") == "sync", what="ping result")
    finally:
        b.kill()   # SIGKILL works on a stopped process
    # beta is gone: the link drops, the retry is refused, alice hears of it.
    for i in range(3):
        el = alice.wait(lambda e, i=i: e.get("id") == "k%d" % i, what="bounce", timeout=15)
        assert stanza_error(el) == ("cancel", "remote-server-not-found"), tostr(el)[:300]
    a.wait_log(r"s2s\.link_down local=alpha\.test remote=beta\.test queued=[1-9]")
    alice.close()
    b.restart()   # so that the fixture's clean stop applies


class StallingPeer:
    """A fake server for fake.test: STARTTLS, accepts our dialback key
    without checking it, then never reads; each connection is cut (RST,
    unread data pending) when its `drop` event is set."""

    def __init__(self, certfile, keyfile):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(certfile, keyfile)
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.drops = [threading.Event(), threading.Event(), threading.Event()]
        self.ready = 0
        self.errors = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @staticmethod
    def _read_until(sock, marker, timeout=10):
        sock.settimeout(timeout)
        data = b""
        while marker not in data:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed before %r" % marker)
            data += chunk
        return data

    def _header(self, sock, n):
        sock.sendall(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                     b"xmlns:stream='http://etherx.jabber.org/streams' "
                     b"xmlns:db='jabber:server:dialback' from='fake.test' to='alpha.test' "
                     b"id='stall%d' version='1.0'>" % n)

    def _run(self):
        for n in range(len(self.drops)):
            try:
                self.lsock.settimeout(30)
                sock, _ = self.lsock.accept()
            except OSError:
                return
            try:
                self._read_until(sock, b">")
                self._header(sock, n)
                sock.sendall(b"<stream:features><starttls xmlns='%s'><required/></starttls>"
                             b"</stream:features>" % NS_TLS.encode())
                self._read_until(sock, b"starttls")
                sock.sendall(b"<proceed xmlns='%s'/>" % NS_TLS.encode())
                sock = self.ctx.wrap_socket(sock, server_side=True)
                self._read_until(sock, b">")
                self._header(sock, n)
                sock.sendall(b"<stream:features><dialback xmlns='urn:xmpp:features:dialback'/>"
                             b"</stream:features>")
                self._read_until(sock, b"db:result")
                sock.sendall(b"<db:result from='fake.test' to='alpha.test' type='valid'/>")
                self.ready += 1
                self.drops[n].wait(30)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()   # RST: the link drops at once
            except Exception as e:   # reported by the test
                self.errors.append(repr(e))
                sock.close()

    def close(self):
        for ev in self.drops:
            ev.set()
        self.lsock.close()


def test_a_link_dropped_twice_bounces_its_queue(make_server, ca):
    """The new connection for a dropped link's queue is tried once: when the
    peer stalls and drops that one too, the queue bounces (no endless
    reconnecting while the senders wait)."""
    peer = StallingPeer(*ca["gamma.test"])
    try:
        a = make_server("--domain", A_DOM, "--s2s-host", "fake.test=127.0.0.1:%d" % peer.port,
                        "--session-stanza-rate", "0", "--session-byte-rate", "0",
                        "--s2s-queue-max", "100000", "--s2s-queue-max-bytes", str(64 << 20))
        filler = FClient(a, A_DOM, presence=False)
        pad = "f" * 8000
        chunk = "".join("<message to='x@fake.test' type='chat'><body>%d %s</body></message>" %
                        (i, pad) for i in range(100))
        for _ in range(20):   # 16 MB: more than two connections' buffers hold
            filler.send(chunk)
        filler.close()
        alice = FClient(a, A_DOM)
        for i in range(3):
            alice.send("<message to='x@fake.test' type='chat' id='t%d'><body>%d</body>"
                       "</message>" % (i, i))
        alice.send("<iq type='get' id='sync'><ping xmlns='%s'/></iq>" % NS_PING)
        alice.wait(lambda e: e.get("id") == "sync", what="ping result")
        assert peer.ready == 1, peer.errors
        peer.drops[0].set()   # first drop: a new connection takes the queue
        a.wait_log(r"s2s\.link_up .*remote=fake\.test auth=dialback queued=[1-9]")
        deadline = time.monotonic() + 10
        while peer.ready < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert peer.ready == 2, peer.errors
        time.sleep(0.5)   # let the new connection back up as well
        peer.drops[1].set()   # second drop: the queue bounces
        for i in range(3):
            el = alice.wait(lambda e, i=i: e.get("id") == "t%d" % i, what="bounce", timeout=15)
            assert stanza_error(el) == ("wait", "remote-server-timeout"), tostr(el)[:300]
        log = a.log_text()
        assert len(re.findall(r"s2s\.link_down local=alpha\.test remote=fake\.test "
                              r"queued=[1-9]", log)) == 2
        assert peer.ready == 2   # no third connection
        alice.close()
    finally:
        peer.close()


def test_federation_off_answers_remote_server_not_found(make_server):
    a = make_server("--domain", A_DOM, "--s2s", "no")
    alice = FClient(a, A_DOM)
    alice.send("<message to='x@beta.test' type='chat' id='o1'><body>x</body></message>")
    el = alice.wait(lambda e: e.get("id") == "o1", what="bounce")
    assert stanza_error(el) == ("cancel", "remote-server-not-found")
    alice.close()


# --------------------------------------------------------------------------
# Inbound stream checks, with a hand-written peer
# --------------------------------------------------------------------------

class Peer:
    """A raw inbound s2s stream to a stanzad, as another server would open it."""

    def __init__(self, port, to, frm, ns=NS_SERVER):
        self.r = RawStream(port)
        self.to, self.frm, self.ns = to, frm, ns
        self.r.send("<?xml version='1.0'?><stream:stream xmlns='%s' xmlns:stream='%s' "
                    "xmlns:db='%s' to='%s' from='%s' version='1.0'>" % (ns, NS_STREAM, NS_DB, to,
                                                                        frm))

    def features(self):
        self.r.read_header()
        return self.r.expect(q(NS_STREAM, "features"))

    def starttls(self, certfile=None, keyfile=None):
        self.r.send("<starttls xmlns='%s'/>" % NS_TLS)
        self.r.expect(q(NS_TLS, "proceed"))
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if certfile:
            ctx.load_cert_chain(certfile, keyfile)
        self.r.sock = ctx.wrap_socket(self.r.sock, server_hostname=self.to)
        self.r.tls = True
        self.r._new_parser()
        self.r.header = None
        self.r.send("<?xml version='1.0'?><stream:stream xmlns='%s' xmlns:stream='%s' "
                    "xmlns:db='%s' to='%s' from='%s' version='1.0'>" % (self.ns, NS_STREAM,
                                                                        NS_DB, self.to,
                                                                        self.frm))
        return self.features()

    def external(self):
        self.r.send("<auth xmlns='%s' mechanism='EXTERNAL'>%s</auth>" %
                    (NS_SASL, base64.b64encode(self.frm.encode()).decode()))
        el = self.r.next()
        assert el.tag == q(NS_SASL, "success"), tostr(el)
        self.r._new_parser()
        self.r.header = None
        self.r.send("<?xml version='1.0'?><stream:stream xmlns='%s' xmlns:stream='%s' "
                    "to='%s' from='%s' version='1.0'>" % (self.ns, NS_STREAM, self.to, self.frm))
        return self.features()

    def close(self):
        self.r.close()


def test_inbound_stream_checks(make_server, ca):
    port, closed = free_ports(2)
    # gamma.test's answers go nowhere (nothing listens): we only see them leave.
    a = make_server("--domain", A_DOM, "--listen-s2s", "127.0.0.1:%d" % port,
                    "--s2s-host", "gamma.test=127.0.0.1:%d" % closed, *cert_args(ca, A_DOM))
    # A stream to a domain alpha does not serve.
    p = Peer(port, "elsewhere.test", "gamma.test")
    assert p.r.stream_error() == "host-unknown"
    p.close()
    # TLS first: stanzas on a plain stream are refused.
    p = Peer(port, A_DOM, "gamma.test")
    feats = p.features()
    assert feats.find("%s/%s" % (q(NS_TLS, "starttls"), q(NS_TLS, "required"))) is not None
    p.r.send("<message from='x@gamma.test' to='y@alpha.test'><body>x</body></message>")
    assert p.r.stream_error() == "not-authorized"
    p.close()
    # TLS without authentication: stanzas are not accepted either.
    p = Peer(port, A_DOM, "gamma.test")
    p.features()
    feats = p.starttls()
    assert feats.find(q("urn:xmpp:features:dialback", "dialback")) is not None
    p.r.send("<message from='x@gamma.test' to='y@alpha.test'><body>x</body></message>")
    assert p.r.stream_error() == "not-authorized"
    p.close()

    def authenticated():
        peer = Peer(port, A_DOM, "gamma.test")
        peer.features()
        feats = peer.starttls(*ca["gamma.test"])
        mechs = [m.text for m in feats.iter(q(NS_SASL, "mechanism"))]
        assert mechs == ["EXTERNAL"], tostr(feats)
        peer.external()
        return peer
    # SASL EXTERNAL with a certificate the CA signed for gamma.test.
    p = authenticated()
    p.r.send("<message from='x@other.test' to='y@alpha.test'><body>x</body></message>")
    assert p.r.stream_error() == "invalid-from"
    p.close()
    p = authenticated()
    p.r.send("<message from='x@gamma.test' to='y@elsewhere.test'><body>x</body></message>")
    assert p.r.stream_error() == "host-unknown"
    p.close()
    p = authenticated()
    p.r.send("<message from='x@gamma.test'><body>x</body></message>")
    assert p.r.stream_error() == "improper-addressing"
    p.close()
    # A good stanza is routed: an unknown user's error comes back on our link.
    p = authenticated()
    p.r.send("<iq from='x@gamma.test/r' to='%s' type='get' id='g1'><ping xmlns='%s'/></iq>" %
             (A_DOM, NS_PING))
    a.wait_log(r"s2s\.link_failed local=alpha\.test remote=gamma\.test")
    p.close()
    # A certificate for another name does not authenticate gamma.test.
    p = Peer(port, A_DOM, "gamma.test")
    p.features()
    feats = p.starttls(*ca[B_DOM])
    assert not [m.text for m in feats.iter(q(NS_SASL, "mechanism"))]
    p.r.send("<auth xmlns='%s' mechanism='EXTERNAL'>=</auth>" % NS_SASL)
    el = p.r.next()
    assert el.tag == q(NS_SASL, "failure")
    p.close()


def test_dialback_verification_answers(make_server):
    (port,) = free_ports(1)
    a = make_server("--domain", A_DOM, "--listen-s2s", "127.0.0.1:%d" % port)
    # alpha is authoritative for its own keys only: a made-up key is invalid.
    p = Peer(port, A_DOM, "gamma.test")
    p.features()
    p.r.send("<db:verify from='gamma.test' to='%s' id='abc'>%s</db:verify>" % (A_DOM, "0" * 64))
    el = p.r.next()
    assert el.tag == q(NS_DB, "verify") and el.get("type") == "invalid"
    assert el.get("from") == A_DOM and el.get("to") == "gamma.test" and el.get("id") == "abc"
    # A domain it does not serve: an error, not a stream error (XEP-0220 2.4).
    p.r.send("<db:verify from='gamma.test' to='other.test' id='abc'>00</db:verify>")
    el = p.r.next()
    assert el.get("type") == "error"
    p.close()


# --------------------------------------------------------------------------
# External components (XEP-0114)
# --------------------------------------------------------------------------

class Component:
    def __init__(self, port, domain, secret):
        self.r = RawStream(port)
        self.domain = domain
        self.r.send("<?xml version='1.0'?><stream:stream xmlns='%s' xmlns:stream='%s' to='%s'>"
                    % (NS_COMPONENT, NS_STREAM, domain))
        self.r.read_header()
        sid = self.r.header.get("id")
        assert sid and self.r.header.get("from") == domain
        self.r.send("<handshake>%s</handshake>" %
                    hashlib.sha1((sid + secret).encode()).hexdigest())

    def close(self):
        self.r.close()


def test_component_exchanges_stanzas(make_server):
    (cport,) = free_ports(1)
    a = make_server("--domain", A_DOM, "--listen-component", "127.0.0.1:%d" % cport,
                    "--component", "bot.alpha.test=s3cret", "--component", "gw.test=other")
    alice = FClient(a, A_DOM)
    # Not connected yet: service-unavailable.
    alice.send("<message to='echo@bot.alpha.test' type='chat' id='c0'><body>x</body></message>")
    el = alice.wait(lambda e: e.get("id") == "c0", what="bounce")
    assert stanza_error(el) == ("cancel", "service-unavailable")
    comp = Component(cport, "bot.alpha.test", "s3cret")
    el = comp.r.next()
    assert el.tag == q(NS_COMPONENT, "handshake"), tostr(el)
    # A message to the component's domain goes to it...
    alice.send("<message to='echo@bot.alpha.test' type='chat' id='c1'><body>ping</body></message>")
    el = comp.r.next()
    assert el.tag == q(NS_COMPONENT, "message") and el.get("from") == alice.full
    assert el.get("to") == "echo@bot.alpha.test"
    assert el.findtext(q(NS_COMPONENT, "body")) == "ping"
    # ... and what it sends comes back to the user.
    comp.r.send("<message from='echo@bot.alpha.test' to='%s' type='chat'><body>pong</body>"
                "</message>" % alice.full)
    alice.message(frm="echo@bot.alpha.test", body="pong")
    # Server iqs answer the component (disco of the server).
    comp.r.send("<iq from='bot.alpha.test' to='%s' type='get' id='i1'>"
                "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>" % A_DOM)
    el = comp.r.next()
    assert el.tag == q(NS_COMPONENT, "iq") and el.get("type") == "result", tostr(el)
    # It may only speak for its own domain.
    comp.r.send("<message from='x@gw.test' to='%s'><body>x</body></message>" % alice.full)
    assert comp.r.stream_error() == "invalid-from"
    comp.close()
    a.wait_log(r"component\.disconnected .*domain=bot\.alpha\.test")
    # Gone: stanzas to it bounce again.
    alice.send("<message to='echo@bot.alpha.test' type='chat' id='c2'><body>x</body></message>")
    el = alice.wait(lambda e: e.get("id") == "c2", what="bounce")
    assert stanza_error(el) == ("cancel", "service-unavailable")
    alice.close()


def test_component_reached_from_another_server(make_server):
    """A component's domain is federated like the server's: bob at beta
    writes to it (beta reaches bot.alpha.test at alpha's s2s port) and the
    component's answer crosses a link from bot.alpha.test to beta."""
    (cport,) = free_ports(1)
    pa, pb = free_ports(2)
    a = make_server("--domain", A_DOM, "--listen-s2s", "127.0.0.1:%d" % pa,
                    "--s2s-host", "%s=127.0.0.1:%d" % (B_DOM, pb),
                    "--listen-component", "127.0.0.1:%d" % cport,
                    "--component", "bot.alpha.test=s3cret")
    b = make_server("--domain", B_DOM, "--listen-s2s", "127.0.0.1:%d" % pb,
                    "--s2s-host", "%s=127.0.0.1:%d" % (A_DOM, pa),
                    "--s2s-host", "bot.alpha.test=127.0.0.1:%d" % pa)
    comp = Component(cport, "bot.alpha.test", "s3cret")
    assert comp.r.next().tag == q(NS_COMPONENT, "handshake")
    bob = FClient(b, B_DOM)
    bob.send("<message to='echo@bot.alpha.test' type='chat'><body>remote ping</body></message>")
    el = comp.r.next(timeout=15)
    assert el.tag == q(NS_COMPONENT, "message") and el.get("from") == bob.full, tostr(el)
    comp.r.send("<message from='echo@bot.alpha.test' to='%s' type='chat'><body>remote pong"
                "</body></message>" % bob.full)
    bob.message(frm="echo@bot.alpha.test", body="remote pong", timeout=15)
    a.wait_log(r"s2s\.link_up .*local=bot\.alpha\.test remote=beta\.test")
    bob.close()
    comp.close()


def test_component_bad_secret_and_unknown_domain(make_server):
    (cport,) = free_ports(1)
    make_server("--domain", A_DOM, "--listen-component", "127.0.0.1:%d" % cport,
                "--component", "bot.alpha.test=s3cret")
    comp = Component(cport, "bot.alpha.test", "wrong")
    assert comp.r.stream_error() == "not-authorized"
    comp.close()
    r = RawStream(cport)
    r.send("<?xml version='1.0'?><stream:stream xmlns='%s' xmlns:stream='%s' to='nope.test'>"
           % (NS_COMPONENT, NS_STREAM))
    assert r.stream_error() == "host-unknown"
    r.close()
    # A second stream for a connected component gets conflict.
    c1 = Component(cport, "bot.alpha.test", "s3cret")
    assert c1.r.next().tag == q(NS_COMPONENT, "handshake")
    c2 = Component(cport, "bot.alpha.test", "s3cret")
    assert c2.r.stream_error() == "conflict"
    c2.close()
    c1.close()


def test_federation_keys_in_the_config_file(make_server):
    """The component secrets (and the federation keys) from the INI file:
    the component authenticates with the file's secret, which is never
    logged."""
    (cport,) = free_ports(1)
    d = tempfile.mkdtemp(prefix="stanzad-fed-conf-")
    conf = os.path.join(d, "stanzad.conf")
    with open(conf, "w") as f:
        f.write("listen_component = 127.0.0.1:%d\n"
                "component = bot.alpha.test=file-secret-1\n"
                "component = gw.alpha.test=file-secret-2\n"
                "s2s_auth = verified\n"
                "s2s_host = beta.test=tls:127.0.0.1:1\n" % cport)
    a = make_server("--config", conf, "--domain", A_DOM)
    a.wait_log(r"s2s\.start .*components=127\.0\.0\.1:%d auth=verified hosts=1 "
               r"configured_components=2" % cport)
    for dom, secret in (("bot.alpha.test", "file-secret-1"), ("gw.alpha.test", "file-secret-2")):
        comp = Component(cport, dom, secret)
        assert comp.r.next().tag == q(NS_COMPONENT, "handshake")
        comp.close()
    assert "file-secret" not in a.log_text()


def test_bad_federation_flags_are_refused():
    from harness import STANZAD
    for args, words in (
            (["--s2s-host", "beta.test=nowhere"], "s2s_host"),
            (["--s2s-auth", "maybe"], "s2s_auth"),
            (["--component", "bot.test"], "component"),
            (["--listen-s2s", "nope"], "listen_s2s")):
        r = subprocess.run([STANZAD, "--state-dir", tempfile.mkdtemp()] + args,
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 2 and words in r.stderr, (args, r.stderr)
    # A component's secret is never echoed in an error.
    r = subprocess.run([STANZAD, "--state-dir", tempfile.mkdtemp(), "--component", "=topsecret"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "topsecret" not in r.stderr


def test_direct_tls_links(make_server):
    """XEP-0368: alpha listens for Direct TLS (ALPN xmpp-server), beta reaches
    it there (host table 'tls:'); beta's answers use its STARTTLS port."""
    pa, pb = free_ports(2)
    a = make_server("--domain", A_DOM, "--listen-s2s-tls", "127.0.0.1:%d" % pa,
                    "--s2s-host", "%s=127.0.0.1:%d" % (B_DOM, pb))
    b = make_server("--domain", B_DOM, "--listen-s2s", "127.0.0.1:%d" % pb,
                    "--s2s-host", "%s=tls:127.0.0.1:%d" % (A_DOM, pa))
    bob = FClient(b, B_DOM)
    alice = FClient(a, A_DOM)
    bob.send("<message to='%s' type='chat'><body>over direct tls</body></message>" % alice.bare)
    alice.message(frm=bob.full, body="over direct tls")
    b.wait_log(r"s2s\.connect .*remote=alpha\.test .*tls=direct")
    b.wait_log(r"s2s\.link_up .*remote=alpha\.test")
    # A plain client on the Direct TLS port gets nothing but a failed handshake.
    r = RawStream(pa)
    r.send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
           "xmlns:stream='%s' to='%s' version='1.0'>" % (NS_STREAM, A_DOM))
    with pytest.raises((StreamClosed, TimeoutError, AssertionError)):
        r.read_header(timeout=3)
    r.close()
    alice.close()
    bob.close()


def test_slixmpp_component(make_server, arun):
    """A real component library (slixmpp's ComponentXMPP) connects and echoes."""
    slixmpp = pytest.importorskip("slixmpp")
    from slixmpp.componentxmpp import ComponentXMPP
    import asyncio

    (cport,) = free_ports(1)
    a = make_server("--domain", A_DOM, "--listen-component", "127.0.0.1:%d" % cport,
                    "--component", "echo.alpha.test=lib-secret")
    comp = ComponentXMPP("echo.alpha.test", "lib-secret", "127.0.0.1", cport)
    ready = asyncio.get_event_loop().create_future()
    comp.add_event_handler("session_start", lambda _: ready.done() or ready.set_result(True))

    def echo(msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            msg.reply("echo: " + msg["body"]).send()
    comp.add_event_handler("message", echo)
    comp.connect()
    try:
        arun(asyncio.wait_for(ready, 10))
        alice = FClient(a, A_DOM)
        alice.send("<message to='bot@echo.alpha.test' type='chat'><body>hi</body></message>")
        # The component runs on the asyncio loop: let it turn while we wait.
        el = None
        for _ in range(50):
            arun(asyncio.sleep(0.1))
            try:
                el = alice.message(frm="bot@echo.alpha.test", body="echo: hi", timeout=0.1)
                break
            except AssertionError:
                pass
        assert el is not None and el.get("to") == alice.full
        alice.close()
    finally:
        comp.disconnect()
        arun(asyncio.sleep(0.2))


def test_link_flow_control_keeps_a_burst(make_server):
    """A burst larger than the output limit of a connection crosses the link
    intact: past the high-water mark stanzas wait in the link's queue
    instead of cutting the link off as a slow reader would be."""
    a, b = start_pair(make_server, extra_a=("--max-output-bytes", "65536",
                                            "--session-stanza-rate", "0",
                                            "--s2s-queue-max", "5000"))
    alice, bob = exchange_messages(a, b)
    n, pad = 1500, "x" * 200
    alice.send("".join("<message to='%s' type='chat'><body>%d %s</body></message>" %
                       (bob.full, i, pad) for i in range(n)))
    seen = 0
    while seen < n:
        el = bob.message(frm=alice.full, timeout=15)
        assert el.findtext(q(NS_CLIENT, "body")) == "%d %s" % (seen, pad)   # in order
        seen += 1
    assert "output_overflow" not in a.log_text()
    alice.close()
    bob.close()
