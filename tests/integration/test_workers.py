"""Several workers: client connections accepted by any worker, moved to
the account's home worker at authentication (daemon/worker.c), with
what the client already sent going along; logins of every kind, stanzas
between clients that came in on different workers, reload and shutdown
with the workers running, and one worker still working.

Worker 0 is drained with `stanzactl workers drain 0` where a test needs
every connection to arrive on another worker, so that each login moves.
"""
import base64
import json
import re
import signal
import time

import pytest

from harness import (DOMAIN, NS_BIND, NS_CLIENT, NS_SASL, NS_STREAM, RawStream, login, q, tostr,
                     uniq)
from sasl2util import (NS_SASL2, authentication_feature, connect_tls, fast_login, inline_xml,
                       new_ua_id, scram_sasl2, token_of)

NWORKERS = 2


def ctl_json(srv, *args):
    r = srv.stanzactl("--json", *args)
    assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
    return json.loads(r.stdout)


@pytest.fixture
def server2(make_server):
    srv = make_server("--workers", str(NWORKERS))
    srv.wait_log(r"event=control\.listen")
    return srv


def pinned(make_server, *args):
    """A server with exactly these flags, for tests that count the workers
    or expect where a login moves: the suite-wide STANZAD_TEST_ARGS (which
    may set --workers and --homes) are left out."""
    return make_server(*args, suite_args=False)


@pytest.fixture
def server2_zero(make_server):
    """Two workers, every account at home on worker 0."""
    srv = pinned(make_server, "--workers", str(NWORKERS), "--homes", "zero")
    srv.wait_log(r"event=control\.listen")
    return srv


def drain_worker0(srv):
    """Every new connection goes to worker 1 (needs the steering program)."""
    st = ctl_json(srv, "workers")["steering"]
    if not st["active"]:
        pytest.skip("steering is off: %s" % st["reason"])
    ctl_json(srv, "workers", "drain", "0")


def moves(srv, start=0):
    return len(re.findall(r"event=conn\.move conn=\d+ from=1 to=0", srv.log_text(start)))


def test_startup_says_how_many_workers_and_doorbell(server2_zero):
    server2 = server2_zero
    server2.wait_log(r"event=server\.paths .*workers=2 doorbell=(msg_ring|eventfd)")
    assert len(ctl_json(server2, "status")["workers"]) == 2


def test_login_on_worker1_moves_home_and_works(server2_zero):
    server2 = server2_zero
    drain_worker0(server2)
    user, pw, bare = server2.new_account()
    mark = server2.log_size()
    s, jid = login(server2.c2s_port, user, pw)
    try:
        assert jid.startswith(bare + "/")
        s.send("<iq type='get' id='p1' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>" % DOMAIN)
        r = s.expect(q(NS_CLIENT, "iq"))
        assert r.get("type") == "result" and r.get("id") == "p1", tostr(r)
    finally:
        s.close()
    server2.wait_log(r"event=conn\.move conn=\d+ from=1 to=0", start=mark)
    # Direct TLS and PLAIN too.
    s, jid = login(server2.tls_port, user, pw, direct_tls=True, mech="PLAIN")
    s.close()


def test_bytes_sent_with_the_auth_go_along(server2):
    """A client that pipelines its new stream header right behind <auth/>
    (PLAIN needs no round trip): the header arrives at worker 1 before the
    move and must be read on worker 0."""
    drain_worker0(server2)
    user, pw, _ = server2.new_account(home=0)  # so that the login moves (homes = hash)
    s = RawStream(server2.c2s_port)
    try:
        s.open()
        s.starttls()
        payload = base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode()).decode()
        s.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>"
               "<stream:stream xmlns='jabber:client' xmlns:stream='%s' to='%s' version='1.0'>"
               % (NS_SASL, payload, NS_STREAM, DOMAIN))
        # <success/> (worker 1), then the answer to our header (worker 0): read
        # them as bytes, since they may come in one read.
        start = len(s.received)
        deadline = time.monotonic() + 10
        while b"</stream:features>" not in s.received[start:]:
            assert s._recv(deadline), s.received[start:]
        got = s.received[start:]
        assert b"<success" in got and got.index(b"<success") < got.index(b"<stream:stream"), got
        assert b"urn:ietf:params:xml:ns:xmpp-bind" in got, got
        s.send("<iq type='set' id='b1'><bind xmlns='%s'/></iq>" % NS_BIND)
        start = len(s.received)
        while b"</iq>" not in s.received[start:]:
            assert s._recv(deadline), s.received[start:]
        assert re.search(rb"<jid>%s@%s/" % (user.encode(), DOMAIN.encode()),
                         s.received[start:]), s.received[start:]
    finally:
        s.close()


def test_sasl2_bind2_and_fast_through_worker1(server2):
    drain_worker0(server2)
    user, pw, bare = server2.new_account(home=0)  # so that the login moves (homes = hash)
    ua = new_ua_id()
    s, feats = connect_tls(server2.c2s_port)
    try:
        assert authentication_feature(feats) is not None
        el = scram_sasl2(s, user, pw, inline_xml(ua_id=ua, bind="phone",
                                                 request_token="HT-SHA-256-NONE"))
        assert el.tag == q(NS_SASL2, "success"), tostr(el)
        assert el.find(q("urn:xmpp:bind:0", "bound")) is not None, tostr(el)
        token = token_of(el)
        assert token and token[0]
    finally:
        s.close()
    s, feats = connect_tls(server2.c2s_port)
    try:
        el = fast_login(s, user, token[0], extra=inline_xml(ua_id=ua, bind="phone", fast=True))
        assert el.tag == q(NS_SASL2, "success"), tostr(el)
        authz = el.find(q(NS_SASL2, "authorization-identifier"))
        assert authz is not None and authz.text.startswith(bare + "/"), tostr(el)
    finally:
        s.close()


def test_messages_between_clients_of_both_workers_arrive_in_order(server2):
    """Alice connects to worker 1 (worker 0 drained), Bob to worker 0
    (worker 1 drained); 200 messages arrive complete and in order."""
    st = ctl_json(server2, "workers")["steering"]
    if not st["active"]:
        pytest.skip("steering is off: %s" % st["reason"])
    ua, pa, alice = server2.new_account("alice")
    ub, pb, bob = server2.new_account("bob")
    ctl_json(server2, "workers", "drain", "0")
    a, ajid = login(server2.c2s_port, ua, pa)
    ctl_json(server2, "workers", "undrain", "0")
    ctl_json(server2, "workers", "drain", "1")
    b, bjid = login(server2.c2s_port, ub, pb)
    ctl_json(server2, "workers", "undrain", "1")
    try:
        n = 200
        a.send("".join("<message to='%s' type='chat' id='m%d'><body>%d</body></message>"
                       % (bjid, i, i) for i in range(n)))
        got = []
        deadline = time.monotonic() + 20
        while len(got) < n and time.monotonic() < deadline:
            el = b.next()
            if el.tag == q(NS_CLIENT, "message"):
                got.append(int(el.find(q(NS_CLIENT, "body")).text))
        assert got == list(range(n))
    finally:
        a.close()
        b.close()


def test_connections_spread_and_counts_add_up(server2):
    streams = []
    try:
        for _ in range(40):
            s = RawStream(server2.c2s_port)
            s.open()
            streams.append(s)
        deadline = time.monotonic() + 10
        while True:
            ws = ctl_json(server2, "workers")["workers"]
            if sum(w["connections"] for w in ws) >= 40 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert sum(w["connections"] for w in ws) >= 40
        assert all(w["connections"] > 0 for w in ws), ws
    finally:
        for s in streams:
            s.close()


def test_max_connections_counts_all_workers(make_server):
    srv = make_server("--workers", "2", "--max-connections", "10")
    streams = []
    try:
        for _ in range(14):
            try:
                s = RawStream(srv.c2s_port)
                streams.append(s)
            except OSError:
                pass
        # 10 in all, not 10 per worker: 4 of the 14 are refused.
        deadline = time.monotonic() + 10
        pat = r"conn\.refused listener=127\.0\.0\.1:%d reason=max-connections" % srv.c2s_port
        while len(re.findall(pat, srv.log_text())) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        # (up to 3 more while the harness's startup probes are still counted)
        assert 4 <= len(re.findall(pat, srv.log_text())) <= 7, srv.log_tail()
    finally:
        for s in streams:
            s.close()


def test_reload_with_workers_running(server2):
    user, pw, _ = server2.new_account()
    mark = server2.log_size()
    server2.proc.send_signal(signal.SIGHUP)
    server2.wait_log(r"event=config\.reload", start=mark)
    for _ in range(6):
        s, _ = login(server2.c2s_port, user, pw)
        s.close()
    r = ctl_json(server2, "certs", "reload")
    assert "certificate" in r
    s, _ = login(server2.tls_port, user, pw, direct_tls=True)
    s.close()


def test_shutdown_with_connections_on_both_workers(make_server):
    srv = make_server("--workers", "2")
    srv.wait_log(r"event=control\.listen")
    user, pw, _ = srv.new_account()
    streams = [login(srv.c2s_port, user, pw)[0] for _ in range(6)]
    streams += [RawStream(srv.c2s_port) for _ in range(6)]
    srv.signal(signal.SIGTERM)
    assert srv.wait(15) == 0
    for s in streams:
        s.close()


def test_one_worker_still_works(make_server):
    srv = pinned(make_server, "--workers", "1")
    srv.wait_log(r"event=server\.paths .*workers=1")
    user, pw, _ = srv.new_account()
    s, jid = login(srv.c2s_port, user, pw)
    s.close()
    assert "conn.move" not in srv.log_text()
