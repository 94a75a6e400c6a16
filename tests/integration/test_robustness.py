"""Transport-level robustness: STARTTLS injection, fragmented and pipelined
input, concurrent logins, deadlines, ALPN (RFC 6120 sections 4-5, XEP-0368)."""
import socket
import ssl
import threading
import time

import pytest

from harness import (DOMAIN, NS_BIND, NS_CLIENT, NS_PING, NS_TLS, RawStream,
                     StreamClosed, client_tls_context, login, q, register_inband, tostr, uniq)


def test_plaintext_injected_after_starttls_is_never_processed(server):
    """Bytes pipelined after <starttls/> are TLS handshake bytes to the
    server, never XML (the STARTTLS command injection class of bugs)."""
    user, password, jid = server.new_account("inject")
    s = RawStream(server.c2s_port)
    try:
        s.open()
        s.send("<starttls xmlns='%s'/><iq type='set' id='inj'><query xmlns='jabber:iq:register'>"
               "<username>%s</username><password>x</password></query></iq>"
               % (NS_TLS, uniq("injected")))
        s.expect(q(NS_TLS, "proceed"))
        with pytest.raises((ssl.SSLError, OSError, StreamClosed)):
            s._wrap()
            s._new_parser()
            s.open()
    finally:
        s.close()
    # Still healthy for everyone else.
    s, full = login(server.c2s_port, user, password)
    s.close()


def test_stream_id_changes_on_every_restart(server):
    user, password, jid = server.new_account("ids")
    s = RawStream(server.c2s_port)
    try:
        s.open()
        ids = [s.header["id"]]
        s.starttls()
        ids.append(s.header["id"])
        assert s.scram_login(user, password)[0] == "success"
        feats = s.restart()
        ids.append(s.header["id"])
        assert len(set(ids)) == 3, "stream ids repeat across restarts: %s" % ids
        assert feats.find(q(NS_BIND, "bind")) is not None
        assert feats.find("{urn:ietf:params:xml:ns:xmpp-sasl}mechanisms") is None, tostr(feats)
    finally:
        s.close()


def test_stanza_sent_byte_by_byte_with_split_utf8_is_parsed(server):
    ua, pa, ja = server.new_account("bytes")
    ub, pb, jb = server.new_account("bytes")
    sa, fa = login(server.c2s_port, ua, pa)
    sb, fb = login(server.tls_port, ub, pb, direct_tls=True)
    body = "split ünïcødé 😀 & <tags>"
    try:
        st = ("<message to='%s' id='bb'><body>%s</body></message>"
              % (fb, body.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")))
        for byte in st.encode("utf-8"):  # every byte its own TLS record
            sa.send(bytes([byte]))
        el = sb.expect(q(NS_CLIENT, "message"))
        assert el.findtext(q(NS_CLIENT, "body")) == body
    finally:
        sa.close()
        sb.close()


def test_many_pipelined_stanzas_in_one_write_all_answered_in_order(server):
    user, password, jid = server.new_account("pipe")
    s, full = login(server.c2s_port, user, password)
    try:
        n = 200
        s.send("".join("<iq type='get' id='p%d' to='%s'><ping xmlns='%s'/></iq>"
                       % (i, DOMAIN, NS_PING) for i in range(n)))
        got = [s.expect(q(NS_CLIENT, "iq")).get("id") for _ in range(n)]
        assert got == ["p%d" % i for i in range(n)]
    finally:
        s.close()


def test_concurrent_registrations_and_logins(server):
    """Storage requests arrive in batches when many clients log in at once."""
    n = 24
    users = [(uniq("crowd"), "pw-%d" % i) for i in range(n)]
    errors = []

    def worker(user, pw):
        try:
            register_inband(server.c2s_port, user, pw)
            s, full = login(server.c2s_port, user, pw)
            s.close()
        except BaseException as e:  # noqa: B902 - report everything
            errors.append("%s: %r" % (user, e))
    threads = [threading.Thread(target=worker, args=u) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "logins hung"
    assert not errors, errors[:5]


def test_concurrent_failed_and_good_logins(server):
    user, password, jid = server.new_account("mixed")
    results = {}

    def worker(i):
        s = RawStream(server.tls_port, direct_tls=True)
        try:
            s.open()
            pw = password if i % 2 == 0 else "wrong-%d" % i
            s.auth("PLAIN", b"\0" + user.encode() + b"\0" + pw.encode())
            results[i] = s.sasl_next()[0]
        except BaseException as e:  # noqa: B902
            results[i] = repr(e)
        finally:
            s.close()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {i: ("success" if i % 2 == 0 else "failure") for i in range(16)}


def test_negotiation_that_takes_too_long_gets_connection_timeout(make_server):
    srv = make_server("--auth-timeout", "1")
    s = RawStream(srv.c2s_port)
    t0 = time.monotonic()
    try:
        s.open()
        assert s.stream_error(timeout=5) == "connection-timeout"
        assert 0.5 < time.monotonic() - t0 < 4
    finally:
        s.close()
    # A half-open Direct TLS connection (no handshake at all) is bounded too.
    raw = socket.create_connection(("127.0.0.1", srv.tls_port))
    try:
        raw.settimeout(5)
        t0 = time.monotonic()
        while raw.recv(4096):
            pass
        assert time.monotonic() - t0 < 4.5
    finally:
        raw.close()


def test_idle_session_is_pinged_and_closed_when_silent(make_server):
    """Silence for idle_timeout gets a ping; a session that answers stays,
    one that stays silent for ping_timeout more gets connection-timeout."""
    srv = make_server("--idle-timeout", "1", "--ping-timeout", "2")
    ua, pa, _ = srv.new_account("idle")
    ub, pb, _ = srv.new_account("idle")
    answering, fa = login(srv.c2s_port, ua, pa)
    silent, fs = login(srv.c2s_port, ub, pb)
    t0 = time.monotonic()
    pings = []
    try:
        # Answer every ping for a while: longer than idle + ping timeout.
        while time.monotonic() - t0 < 3.6:
            try:
                el = answering.next(timeout=max(0.05, 3.6 - (time.monotonic() - t0)))
            except TimeoutError:
                break
            except StreamClosed:
                raise AssertionError("server closed an answering session after pings %s: %r"
                                     % (pings, answering.received[-300:]))
            assert el.tag == q(NS_CLIENT, "iq"), "session that answered its pings got %s" \
                % tostr(el)
            assert el.get("type") == "get" and el.find(q(NS_PING, "ping")) is not None, tostr(el)
            assert el.get("from") == DOMAIN and el.get("to") == fa, tostr(el)
            pings.append(round(time.monotonic() - t0, 2))
            answering.send("<iq type='result' id='%s' to='%s'/>" % (el.get("id"), DOMAIN))
        assert pings, "no ping after more than idle_timeout of silence"
        # The silent one got a ping, ignored it, and was disconnected.
        assert silent.stream_error(timeout=2) == "connection-timeout"
        assert len(silent.skipped) == 1 and silent.skipped[0].find(q(NS_PING, "ping")) is not None
        # The answering one is still there.
        answering.send("<iq type='get' id='still' to='%s'><ping xmlns='%s'/></iq>"
                       % (DOMAIN, NS_PING))
        while True:
            el = answering.expect(q(NS_CLIENT, "iq"))
            if el.get("id") == "still":
                assert el.get("type") == "result"
                break
            answering.send("<iq type='result' id='%s' to='%s'/>" % (el.get("id"), DOMAIN))
    finally:
        answering.close()
        silent.close()


def test_direct_tls_with_a_foreign_alpn_is_refused(server):
    raw = socket.create_connection(("127.0.0.1", server.tls_port), timeout=5)
    ctx = client_tls_context(alpn=["h2"])
    with pytest.raises(ssl.SSLError):
        ctx.wrap_socket(raw, server_hostname=DOMAIN).recv(1)
    raw.close()


def test_direct_tls_without_alpn_is_accepted(server):
    user, password, jid = server.new_account("noalpn")
    s = RawStream(server.tls_port, direct_tls=True, alpn=None)
    try:
        assert s.sock.selected_alpn_protocol() is None
        s.open()
        assert s.scram_login(user, password)[0] == "success"
    finally:
        s.close()


def test_resource_too_long_is_bad_request(server):
    user, password, jid = server.new_account("longres")
    s = RawStream(server.tls_port, direct_tls=True)
    try:
        s.open()
        assert s.scram_login(user, password)[0] == "success"
        s.restart()
        s.send("<iq type='set' id='b'><bind xmlns='%s'><resource>%s</resource></bind></iq>"
               % (NS_BIND, "r" * 1100))
        el = s.expect(q(NS_CLIENT, "iq"))
        assert el.get("type") == "error" and el.get("id") == "b", tostr(el)
        assert el.find("%s/{urn:ietf:params:xml:ns:xmpp-stanzas}bad-request"
                       % q(NS_CLIENT, "error")) is not None, tostr(el)
        # Binding a proper resource afterwards works.
        assert s.bind("ok") == jid + "/ok"
    finally:
        s.close()


def test_garbage_tls_records_after_the_handshake_close_only_that_connection(server):
    user, password, jid = server.new_account("tlsjunk")
    s = RawStream(server.tls_port, direct_tls=True)
    try:
        s.open()
        # Write around the TLS layer: a record with a bogus MAC.
        dup = socket.socket(fileno=socket.dup(s.sock.fileno()))
        dup.sendall(b"\x17\x03\x03\x00\x20" + b"\xaa" * 32)
        dup.close()
        # The server must drop the connection (TLS alert and/or close), not wait.
        try:
            el = s.next(5)
            raise AssertionError("server answered after a corrupt record: %s" % tostr(el))
        except TimeoutError:
            raise AssertionError("server kept a connection with a corrupt TLS record open")
        except (StreamClosed, ssl.SSLError, ConnectionError):
            pass
    finally:
        s.close()
    s, full = login(server.tls_port, user, password, direct_tls=True)
    s.close()
