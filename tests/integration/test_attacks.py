"""The attack matrix (tests/reliability/REPORT.md): each attack gets its
protocol error or a clean close, and a well-behaved client logs in and
exchanges a message while it runs (or right after, where the attack
legitimately takes the resource the good client would need).

Attackers connect from other loopback addresses (127.0.0.2 and up: the
whole 127/8 reaches the server on Linux), so per-source limits see them
apart from the well-behaved client on 127.0.0.1."""
import os
import re
import socket
import ssl
import threading
import time

import pytest

from harness import (DOMAIN, NS_CLIENT, NS_STANZAS, NS_TLS, RawStream, StreamClosed, login, q,
                     tostr)
from imutil import Client

NS_SM = "urn:xmpp:sm:3"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_UPLOAD = "urn:xmpp:http:upload:0"
NS_MUC = "http://jabber.org/protocol/muc"


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def _small_asan_quarantine():
    """Memory bounds are asserted from the daemon's RSS. In an ASan build
    (SANITIZE=1) freed memory waits in a quarantine of 256 MiB by default,
    which would be counted as growth: the daemons of this module get a
    small one. Without ASan the variable is not read."""
    old = os.environ.get("ASAN_OPTIONS")
    os.environ["ASAN_OPTIONS"] = (old + ":" if old else "") + \
        "quarantine_size_mb=4:thread_local_quarantine_size_kb=64"
    yield
    if old is None:
        del os.environ["ASAN_OPTIONS"]
    else:
        os.environ["ASAN_OPTIONS"] = old


def rss_kib(srv):
    with open("/proc/%d/status" % srv.proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Good:
    """Two accounts of a well-behaved user pair, logging in from 127.0.0.1."""

    def __init__(self, srv):
        self.srv = srv
        self.a = srv.new_account("good")
        self.b = srv.new_account("good")
        self.n = 0

    def check(self, what="during the attack"):
        """Both log in, a message goes from one to the other, both leave."""
        self.n += 1
        body = "still served %d" % self.n
        sa = sb = None
        try:
            sa, fa = login(self.srv.c2s_port, self.a[0], self.a[1])
            sb, fb = login(self.srv.c2s_port, self.b[0], self.b[1])
            sa.send("<message to='%s' type='chat' id='g%d'><body>%s</body></message>"
                    % (fb, self.n, body))
            el = sb.expect(q(NS_CLIENT, "message"), timeout=5)
            assert el.findtext(q(NS_CLIENT, "body")) == body, tostr(el)
        except Exception as e:
            raise AssertionError("a well-behaved client was not served %s: %r" % (what, e))
        finally:
            for s in (sa, sb):
                if s:
                    s.close()


def raw_connect(port, source, timeout=5):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0))


def read_until_closed(sock, timeout=5):
    """Everything the server sends until it closes (b'' if it closes at once)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return data
        except socket.timeout:
            raise AssertionError("the server kept the connection open; got %r" % data[-300:])
        if not chunk:
            return data
        data += chunk
    raise AssertionError("the server kept the connection open; got %r" % data[-300:])


def stanza_error(el):
    err = el.find(q(NS_CLIENT, "error"))
    assert err is not None, tostr(el)
    conds = [c.tag.split("}")[1] for c in err if c.tag.startswith("{%s}" % NS_STANZAS)
             and not c.tag.endswith("}text")]
    return conds[0], err.get("type")


def send_slowly(sock, data, delay, stop):
    """Sends data a byte at a time; stops quietly when the server closes."""
    for i in range(len(data)):
        if stop.is_set():
            return
        try:
            sock.send(data[i:i + 1])
        except OSError:
            return
        time.sleep(delay)


# --------------------------------------------------------------------------
# slow senders
# --------------------------------------------------------------------------

def test_slowloris_header_before_auth_is_closed_by_auth_timeout(make_server):
    srv = make_server("--auth-timeout", "2")
    good = Good(srv)
    header = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream="
              "'http://etherx.jabber.org/streams' to='%s' version='1.0'>" % DOMAIN).encode()
    stop = threading.Event()
    socks = [raw_connect(srv.c2s_port, "127.0.0.2") for _ in range(6)]
    threads = [threading.Thread(target=send_slowly, args=(s, header, 0.05, stop)) for s in socks]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    try:
        good.check()
        for s in socks:
            data = read_until_closed(s, timeout=6)
            # The header never completed: the server still opens its stream for the error.
            assert b"connection-timeout" in data, data[-300:]
        assert time.monotonic() - t0 < 5.5
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        for s in socks:
            s.close()
    good.check("after the attack")


def test_slowloris_stanza_after_auth_is_cut_by_stanza_timeout(make_server):
    srv = make_server("--stanza-timeout", "2")
    good = Good(srv)
    user, pw, _ = srv.new_account("slow")
    s, full = login(srv.c2s_port, user, pw, source="127.0.0.2")
    stop = threading.Event()
    msg = ("<message to='%s' type='chat'><body>%s</body></message>" % (full, "x" * 200)).encode()
    t = threading.Thread(target=send_slowly, args=(s.sock, msg, 0.05, stop))
    t0 = time.monotonic()
    t.start()
    try:
        good.check()
        assert s.stream_error(timeout=6) == "policy-violation"
        assert 1.5 < time.monotonic() - t0 < 5
        srv.wait_log(r"stream\.timeout conn=\d+ reason=stanza-incomplete")
    finally:
        stop.set()
        t.join(5)
        s.close()
    good.check("after the attack")


def test_half_a_stanza_then_silence_is_cut_by_the_timer(make_server):
    srv = make_server("--stanza-timeout", "2", "--idle-timeout", "0")
    user, pw, _ = srv.new_account("stall")
    s, full = login(srv.c2s_port, user, pw, source="127.0.0.2")
    try:
        t0 = time.monotonic()
        s.send("<message to='%s'><body>never fini" % full)
        assert s.stream_error(timeout=6) == "policy-violation"
        assert 1.5 < time.monotonic() - t0 < 4.5
    finally:
        s.close()


def test_whitespace_keepalives_and_slow_but_timely_stanzas_pass(make_server):
    srv = make_server("--stanza-timeout", "1")
    user, pw, _ = srv.new_account("keep")
    s, full = login(srv.c2s_port, user, pw)
    try:
        for _ in range(7):  # 2.1 s of whitespace: no stanza is in progress
            s.send(" ")
            time.sleep(0.3)
        # A stanza in two halves 0.6 s apart, several times: each completes in time.
        for i in range(3):
            s.send("<iq type='get' id='k%d' to='%s'><ping xmlns='urn:xmpp:ping'/>" % (i, DOMAIN))
            time.sleep(0.6)
            s.send("</iq>")
            el = s.expect(q(NS_CLIENT, "iq"))
            assert el.get("id") == "k%d" % i and el.get("type") == "result", tostr(el)
    finally:
        s.close()


# --------------------------------------------------------------------------
# connection floods
# --------------------------------------------------------------------------

def test_unauthenticated_flood_from_one_address_is_refused_past_the_limit(make_server):
    srv = make_server("--max-preauth-per-ip", "8", "--auth-timeout", "3")
    good = Good(srv)
    held = [raw_connect(srv.c2s_port, "127.0.0.2") for _ in range(8)]
    try:
        time.sleep(0.3)  # accepted and counted
        refused = []
        for _ in range(20):
            s = raw_connect(srv.c2s_port, "127.0.0.2")
            refused.append(read_until_closed(s, timeout=3))
            s.close()
        assert all(b"policy-violation" in r or r == b"" for r in refused), refused[:3]
        assert sum(b"policy-violation" in r for r in refused) >= 10, refused[:3]
        # The TLS port refuses too (a close: nothing can be said before a handshake).
        s = raw_connect(srv.tls_port, "127.0.0.2")
        assert read_until_closed(s, timeout=3) == b""
        s.close()
        # HTTP says 429.
        s = raw_connect(srv.http_port, "127.0.0.2")
        assert read_until_closed(s, timeout=3).startswith(b"HTTP/1.1 429 ")
        s.close()
        srv.wait_log(r"conn\.refused listener=\S+ reason=preauth-per-ip source=127\.0\.0\.2")
        # Another address is not affected.
        good.check()
        # The held ones are closed by the auth timeout; then the address is welcome again.
        for s in held:
            assert b"connection-timeout" in read_until_closed(s, timeout=6)
        s = RawStream(srv.c2s_port, source="127.0.0.2")
        s.open()
        s.close()
    finally:
        for s in held:
            s.close()
    good.check("after the attack")


def test_authenticated_connections_do_not_count_against_the_address(make_server):
    srv = make_server("--max-preauth-per-ip", "3")
    user, pw, _ = srv.new_account("many")
    streams = []
    try:
        for i in range(8):  # more sessions than the unauthenticated limit, one at a time
            s, _ = login(srv.c2s_port, user, pw, resource="r%d" % i, source="127.0.0.3")
            streams.append(s)
    finally:
        for s in streams:
            s.close()


def test_connection_flood_from_many_addresses_is_bounded_by_max_connections(make_server):
    srv = make_server("--max-connections", "40", "--auth-timeout", "2",
                      "--max-preauth-per-ip", "2")
    good = Good(srv)
    flood = []
    try:
        for i in range(60):  # 2 per address from 30 addresses: each within its own limit
            try:
                flood.append(raw_connect(srv.c2s_port, "127.0.1.%d" % (i // 2 + 1)))
            except OSError:
                pass
        time.sleep(0.3)
        srv.wait_log(r"conn\.refused listener=\S+ reason=max-connections")
        # Idle connections hold their slots at most auth_timeout (and the
        # short linger for the peer's FIN after the stream error).
        for s in flood:  # timed out, or refused at once past max_connections
            data = read_until_closed(s, timeout=6)
            assert data == b"" or b"connection-timeout" in data, data[-200:]
            s.close()
        good.check("once the idle flood timed out")
        assert srv.alive()
    finally:
        for s in flood:
            s.close()


# --------------------------------------------------------------------------
# hostile XML
# --------------------------------------------------------------------------

BOMB = ("<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
        + "".join("<!ENTITY lol%d '%s'>" % (i, ("&lol%d;" % (i - 1) if i else "&lol;") * 10)
                  for i in range(10))
        + "]>")


def test_xml_bomb_is_restricted_xml_before_and_after_auth(server):
    good = Good(server)
    s = RawStream(server.c2s_port, source="127.0.0.4")
    try:
        s.send(BOMB + "<stream:stream xmlns='jabber:client' xmlns:stream="
               "'http://etherx.jabber.org/streams' to='%s' version='1.0'>&lol9;" % DOMAIN)
        assert s.stream_error() == "restricted-xml"
    finally:
        s.close()
    user, pw, _ = server.new_account("bomb")
    s, full = login(server.c2s_port, user, pw, source="127.0.0.4")
    try:
        s.send("<!DOCTYPE x [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;'>]>"
               "<message to='%s'><body>&b;</body></message>" % full)
        assert s.stream_error() in ("restricted-xml", "not-well-formed")
    finally:
        s.close()
    good.check()


def test_deep_nesting_is_policy_violation(server):
    good = Good(server)
    user, pw, _ = server.new_account("deep")
    s, full = login(server.c2s_port, user, pw, source="127.0.0.4")
    try:
        before = rss_kib(server)
        s.send("<message to='%s'>" % full + "<a>" * 5000)
        assert s.stream_error() == "policy-violation"
        assert rss_kib(server) - before < 20000
    finally:
        s.close()
    good.check()


def test_huge_attribute_and_huge_name_are_policy_violation(server):
    good = Good(server)
    user, pw, _ = server.new_account("attr")
    for payload in ("<message to='x@%s' id='%s'>" % (DOMAIN, "A" * (2 << 20)),
                    "<message %s='v'/>" % ("b" * (1 << 20))):
        s, full = login(server.c2s_port, user, pw, source="127.0.0.4")
        try:
            before = rss_kib(server)
            try:
                s.sock.settimeout(10)
                s.send(payload)  # the server cuts it off before the end: that is fine
            except OSError:
                pass
            assert s.stream_error() == "policy-violation"
            assert rss_kib(server) - before < 20000
        finally:
            s.close()
    # Before authentication the limit is much smaller (max_stanza_bytes_preauth).
    s = RawStream(server.c2s_port, source="127.0.0.4")
    try:
        s.open()
        try:
            s.send("<iq type='get' id='%s'/>" % ("i" * 100000))
        except OSError:
            pass
        assert s.stream_error() == "policy-violation"
    finally:
        s.close()
    good.check()


def test_too_many_attributes_and_a_huge_stream_header(server):
    good = Good(server)
    s = RawStream(server.c2s_port, source="127.0.0.4")
    try:
        s.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream="
               "'http://etherx.jabber.org/streams' to='%s' version='1.0' x='%s'>"
               % (DOMAIN, "h" * 20000))
        assert s.stream_error() == "policy-violation"
    finally:
        s.close()
    user, pw, _ = server.new_account("attrs")
    s, full = login(server.c2s_port, user, pw, source="127.0.0.4")
    try:
        s.send("<message to='%s' %s/>" % (full, " ".join("a%d='v'" % i for i in range(500))))
        assert s.stream_error() == "policy-violation"
    finally:
        s.close()
    good.check()


# --------------------------------------------------------------------------
# SASL brute force
# --------------------------------------------------------------------------

def attempt(port, user, password, source):
    """One SCRAM attempt on a fresh stream: 'success' or the failure condition,
    or 'refused' when the connection is refused at accept."""
    try:
        s = RawStream(port, direct_tls=True, source=source)
    except (OSError, ssl.SSLError):
        return "refused"
    try:
        try:
            s.open()
        except (StreamClosed, AssertionError, OSError, ssl.SSLError):
            return "refused"
        kind, cond = s.scram_login(user, password)
        return "success" if kind == "success" else cond
    finally:
        s.close()


def test_per_account_lockout_then_release(make_server):
    srv = make_server("--max-auth-failures-account", "5", "--auth-lockout-time", "3",
                      "--max-auth-failures-source", "0")
    good = Good(srv)
    victim, vpw, _ = srv.new_account("victim")
    # Guesses from five different addresses: the account name is what adds up.
    results = [attempt(srv.tls_port, victim, "guess%d" % i, "127.0.0.%d" % (10 + i))
               for i in range(5)]
    assert results == ["not-authorized"] * 5, results
    srv.wait_log(r"auth\.lockout conn=\d+ failures=5 seconds=3")
    # Locked: even the right password is refused for now, from anywhere.
    assert attempt(srv.tls_port, victim, vpw, "127.0.0.1") == "temporary-auth-failure"
    # A name that does not exist locks the same way (no account enumeration).
    ghost = "ghost%d" % os.getpid()
    for i in range(5):
        assert attempt(srv.tls_port, ghost, "x", "127.0.0.%d" % (20 + i)) == "not-authorized"
    assert attempt(srv.tls_port, ghost, "x", "127.0.0.30") == "temporary-auth-failure"
    # Other accounts are not affected.
    good.check()
    time.sleep(3.2)
    assert attempt(srv.tls_port, victim, vpw, "127.0.0.1") == "success"


def test_per_source_ban_refuses_the_address_then_lifts(make_server):
    srv = make_server("--max-auth-failures-source", "6", "--auth-lockout-time", "3",
                      "--max-auth-failures-account", "0")
    good = Good(srv)
    user, pw, _ = srv.new_account("target")
    results = [attempt(srv.tls_port, "user%d" % i, "guess", "127.0.0.40") for i in range(6)]
    assert results == ["not-authorized"] * 6, results
    srv.wait_log(r"auth\.ban source=127\.0\.0\.40 seconds=3 failures=6")
    # Banned: refused at accept on every listener, even with the right password.
    assert attempt(srv.tls_port, user, pw, "127.0.0.40") == "refused"
    s = raw_connect(srv.c2s_port, "127.0.0.40")
    assert b"too many failed logins" in read_until_closed(s)
    s.close()
    srv.wait_log(r"conn\.refused listener=\S+ reason=banned source=127\.0\.0\.40")
    good.check()
    assert attempt(srv.tls_port, user, pw, "127.0.0.41") == "success"
    time.sleep(3.2)
    assert attempt(srv.tls_port, user, pw, "127.0.0.40") == "success"


def test_default_limits_allow_a_few_typos(server):
    user, pw, _ = server.new_account("typo")
    for i in range(3):
        assert attempt(server.tls_port, user, "typo%d" % i, "127.0.0.50") == "not-authorized"
    assert attempt(server.tls_port, user, pw, "127.0.0.50") == "success"


# --------------------------------------------------------------------------
# floods from an authenticated session
# --------------------------------------------------------------------------

def test_stanza_flood_gets_policy_violation_and_a_burst_passes(make_server):
    srv = make_server("--session-stanza-rate", "50", "--session-stanza-burst", "200")
    good = Good(srv)
    user, pw, _ = srv.new_account("flood")
    rcpt, rpw, rjid = srv.new_account("flood")
    r, rfull = login(srv.c2s_port, rcpt, rpw)
    # A burst within the allowance goes through whole.
    s, full = login(srv.c2s_port, user, pw, source="127.0.0.5")
    try:
        s.send("".join("<message to='%s' type='chat' id='b%d'><body>%d</body></message>"
                       % (rfull, i, i) for i in range(150)))
        got = [r.expect(q(NS_CLIENT, "message")).get("id") for _ in range(150)]
        assert got == ["b%d" % i for i in range(150)]
        time.sleep(1)
        # A flood does not.
        flood = "".join("<message to='%s' type='chat'><body>f</body></message>" % rfull
                        for _ in range(2000))
        try:
            s.send(flood)
        except OSError:
            pass
        assert s.stream_error() == "policy-violation"
        assert "session_stanza_rate" in tostr(s.last_error)
        srv.wait_log(r"abuse\.rate_limit conn=\d+ jid=\S+ kind=stanzas")
    finally:
        s.close()
        r.close()
    good.check()


def test_byte_flood_gets_policy_violation(make_server):
    srv = make_server("--session-byte-rate", "65536", "--session-byte-burst", "131072")
    good = Good(srv)
    user, pw, _ = srv.new_account("bytes")
    s, full = login(srv.c2s_port, user, pw, source="127.0.0.5")
    try:
        big = "<message to='nobody@%s' type='headline'><body>%s</body></message>" % (
            DOMAIN, "y" * 30000)
        try:
            for _ in range(40):
                s.send(big)
        except OSError:
            pass
        assert s.stream_error() == "policy-violation"
        srv.wait_log(r"abuse\.rate_limit conn=\d+ jid=\S+ kind=bytes")
    finally:
        s.close()
    good.check()


# --------------------------------------------------------------------------
# quotas
# --------------------------------------------------------------------------

def test_quotas_roster_offline_pubsub_muc_archive_upload(make_server):
    srv = make_server("--max-roster-items", "3", "--max-offline-messages", "3",
                      "--max-items-per-node", "2", "--max-pubsub-nodes", "2",
                      "--max-pubsub-item-bytes", "256", "--max-muc-archive", "3",
                      "--upload-quota-bytes", "1000")
    good = Good(srv)
    user, pw, _ = srv.new_account("quota")
    absent, _, ajid = srv.new_account("quota")
    c = Client(srv, user, pw)
    try:
        # Roster: the fourth contact is not-allowed.
        for i in range(3):
            assert c.roster_set("c%d@%s" % (i, DOMAIN)).get("type") == "result"
        assert stanza_error(c.roster_set("c9@%s" % DOMAIN))[0] == "not-allowed"
        # Offline storage: the fourth message gets resource-constraint (wait).
        for i in range(4):
            c.send("<message to='%s' type='chat' id='o%d'><body>%d</body></message>"
                   % (ajid, i, i))
        err = c.wait(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("type") == "error")
        assert err.get("id") == "o3" and stanza_error(err) == ("resource-constraint", "wait")
        # Pubsub: nodes per account, item size; items beyond max are rotated out.
        svc = "pubsub." + DOMAIN
        for n in ("n1", "n2"):
            assert c.iq("set", "<pubsub xmlns='%s'><create node='%s'/></pubsub>" % (NS_PUBSUB, n),
                        to=svc).get("type") == "result"
        err = c.iq("set", "<pubsub xmlns='%s'><create node='n3'/></pubsub>" % NS_PUBSUB, to=svc)
        assert stanza_error(err)[0] == "policy-violation", tostr(err)
        big = "<pubsub xmlns='%s'><publish node='n1'><item><e xmlns='urn:t'>%s</e></item>" \
              "</publish></pubsub>" % (NS_PUBSUB, "z" * 1000)
        assert stanza_error(c.iq("set", big, to=svc))[0] == "not-acceptable"
        for i in range(5):
            pub = "<pubsub xmlns='%s'><publish node='n1'><item id='i%d'><e xmlns='urn:t'/></item>" \
                  "</publish></pubsub>" % (NS_PUBSUB, i)
            assert c.iq("set", pub, to=svc).get("type") == "result"
        items = c.iq("get", "<pubsub xmlns='%s'><items node='n1'/></pubsub>" % NS_PUBSUB, to=svc)
        ids = [i.get("id") for i in items.iter(q(NS_PUBSUB, "item"))]
        assert sorted(ids) == ["i3", "i4"], tostr(items)
        # Upload: slots past the account's quota get resource-constraint (wait).
        up = "upload." + DOMAIN
        ok = c.iq("get", "<request xmlns='%s' filename='a.bin' size='900'/>" % NS_UPLOAD, to=up)
        assert ok.get("type") == "result", tostr(ok)
        err = c.iq("get", "<request xmlns='%s' filename='b.bin' size='200'/>" % NS_UPLOAD, to=up)
        assert stanza_error(err) == ("resource-constraint", "wait")
        # A room archive keeps only its newest max_muc_archive messages.
        room = "quota%d@conference.%s" % (os.getpid(), DOMAIN)
        c.send("<presence to='%s/me'><x xmlns='%s'/></presence>" % (room, NS_MUC))
        c.wait(lambda el: el.tag == q(NS_CLIENT, "presence") and
               el.get("from") == room + "/me", what="room presence")
        c.iq("set", "<query xmlns='%s#owner'><x xmlns='jabber:x:data' type='submit'/></query>"
             % NS_MUC, to=room)
        for i in range(6):
            c.send("<message to='%s' type='groupchat'><body>m%d</body></message>" % (room, i))
            c.wait(lambda el, i=i: el.tag == q(NS_CLIENT, "message") and
                   el.findtext(q(NS_CLIENT, "body")) == "m%d" % i, what="echo m%d" % i)
        time.sleep(0.3)
        fin = c.iq("set", "<query xmlns='urn:xmpp:mam:2' queryid='qa'/>", to=room)
        assert fin.get("type") == "result", tostr(fin)
        bodies = [el.findtext(".//{%s}body" % NS_CLIENT) for el in c.drain(0.3)
                  if el.find("{urn:xmpp:mam:2}result") is not None] + \
                 [el.findtext(".//{%s}body" % NS_CLIENT) for el in c.buffer]
        got = [b for b in bodies if b]
        assert got == ["m3", "m4", "m5"], got
    finally:
        c.close()
    good.check()


def archive_bodies(c, to=None):
    """The bodies of c's archive (or a room's, with `to`), oldest first."""
    fin = c.iq("set", "<query xmlns='urn:xmpp:mam:2' queryid='qa'/>", to=to)
    assert fin.get("type") == "result", tostr(fin)
    bodies = [el.findtext(".//{%s}body" % NS_CLIENT) for el in c.drain(0.3)
              if el.find("{urn:xmpp:mam:2}result") is not None] + \
             [el.findtext(".//{%s}body" % NS_CLIENT) for el in c.buffer
              if el.find("{urn:xmpp:mam:2}result") is not None]
    c.buffer = []
    return [b for b in bodies if b]


def test_personal_archive_keeps_only_the_newest_max_mam_messages(make_server):
    """An account flooded with messages keeps its newest max_mam_messages
    in its archive (sender's and recipient's side alike); the oldest go."""
    srv = make_server("--max-mam-messages", "3")
    good = Good(srv)
    a_user, a_pw, _ = srv.new_account("arch")
    b_user, b_pw, _ = srv.new_account("arch")
    a = Client(srv, a_user, a_pw)
    b = Client(srv, b_user, b_pw)
    try:
        for i in range(6):
            a.send("<message to='%s' type='chat' id='a%d'><body>m%d</body></message>"
                   % (b.full, i, i))
            b.wait(lambda el, i=i: el.tag == q(NS_CLIENT, "message") and
                   el.findtext(q(NS_CLIENT, "body")) == "m%d" % i, what="m%d" % i)
        time.sleep(0.3)  # archive writes linger a few ms before their commit
        assert archive_bodies(a) == ["m3", "m4", "m5"]
        assert archive_bodies(b) == ["m3", "m4", "m5"]
    finally:
        a.close()
        b.close()
    good.check()


# --------------------------------------------------------------------------
# a client that never reads
# --------------------------------------------------------------------------

def plain_login(port, user, password, resource=None, source=None):
    """PLAIN without TLS (require_tls = no): a plain socket two threads may share."""
    s = RawStream(port, source=source)
    s.open()
    s.auth("PLAIN", b"\0" + user.encode() + b"\0" + password.encode())
    kind, cond = s.sasl_next()
    assert kind == "success", cond
    s.restart()
    return s, s.bind(resource)


def discard_input(sock, stop):
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            if not sock.recv(65536):
                return
        except socket.timeout:
            continue
        except OSError:
            return


def test_a_client_that_never_reads_is_cut_off_and_memory_stays_bounded(make_server):
    """120 MB of headlines to a client that reads nothing: its queue
    (max_output_bytes) overflows and it is cut off, the rest finds nobody
    and is dropped; the server's memory does not follow the flood."""
    srv = make_server("--session-byte-rate", "0", "--session-stanza-rate", "0",
                      "--require-tls", "no")
    good = Good(srv)
    sender, spw, _ = srv.new_account("pump")
    sink, kpw, sjid = srv.new_account("sink")
    # The sink logs in, becomes available, shrinks its receive buffer and never reads again.
    k, kfull = plain_login(srv.c2s_port, sink, kpw, "stuck", source="127.0.0.6")
    k.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    k.send("<presence/>")
    s, _ = plain_login(srv.c2s_port, sender, spw)
    stop = threading.Event()
    reader = threading.Thread(target=discard_input, args=(s.sock, stop))
    reader.start()
    time.sleep(0.2)
    baseline = rss_kib(srv)
    peak = baseline
    body = "p" * 8000
    try:
        chunk = "".join("<message to='%s' type='headline'><body>%s</body></message>"
                        % (sjid, body) for _ in range(20)).encode()
        for i in range(750):  # 120 MB
            s.sock.sendall(chunk)
            if i % 25 == 0:
                peak = max(peak, rss_kib(srv))
        srv.wait_log(r"conn\.output_overflow conn=\d+ queued=\d+ limit=2097152")
        srv.wait_log(r"conn\.close conn=\d+ reason=slow-reader")
        good.check("while a non-reader is flooded")
        peak = max(peak, rss_kib(srv))
        print("non-reader flood: RSS %d KiB before, %d KiB at the peak" % (baseline, peak))
        assert peak - baseline < 32 * 1024, "RSS grew by %d KiB" % (peak - baseline)
        # Only the sink was cut off; the sender is still connected.
        assert not re.search(r"session\.end conn=\d+ jid=%s" % sender, srv.log_text())
    finally:
        stop.set()
        reader.join(5)
        s.close()
        k.close()
    good.check("after the attack")
