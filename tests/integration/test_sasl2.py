"""SASL2 (XEP-0388), Bind 2 (XEP-0386) with inline stream management
(XEP-0198 section 7), and FAST tokens (XEP-0484) with the HT mechanisms,
driven by a raw XML client (slixmpp 1.8 has no SASL2)."""
import base64
import time

import pytest

from harness import NS_CLIENT, NS_STANZAS, NS_STREAM, RawStream, q, tostr
from sasl2util import (NS_BIND2, NS_FAST, NS_SASL2, NS_SM, authenticate, connect_tls,
                       failure_condition, fast_login, fast_mechanisms, ht_initial, inline_xml,
                       new_ua_id, sasl2_mechanisms, scram_sasl2, token_of)


def ident(success):
    return success.find(q(NS_SASL2, "authorization-identifier")).text


def ping(s, iq_id="p1"):
    s.send("<iq type='get' id='%s' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>" % iq_id)
    el = s.next()
    while el.tag.startswith("{%s}" % NS_SM):  # stream management's <r/> may come first
        el = s.next()
    assert el.tag == q(NS_CLIENT, "iq"), tostr(el)
    assert el.get("type") == "result" and el.get("id") == iq_id, tostr(el)


def login_with_token(server, user, pw, ua, mech="HT-SHA-256-NONE", extra=""):
    """SCRAM + Bind 2 + <request-token/>: returns (stream, success, token)."""
    s, _ = connect_tls(server.c2s_port)
    ok = scram_sasl2(s, user, pw, inline_xml(ua_id=ua, bind="dev", request_token=mech) + extra)
    assert ok.tag == q(NS_SASL2, "success"), tostr(ok)
    tok = token_of(ok)
    assert tok, "no FAST token in %s" % tostr(ok)
    return s, ok, tok[0]


def test_sasl2_offered_after_tls_only(server):
    s = RawStream(server.c2s_port)
    feats = s.open()
    assert feats.find(q(NS_SASL2, "authentication")) is None, tostr(feats)
    feats = s.starttls()
    mechs = sasl2_mechanisms(feats)
    assert "SCRAM-SHA-256" in mechs and "SCRAM-SHA-256-PLUS" in mechs, mechs
    auth = feats.find(q(NS_SASL2, "authentication"))
    inline = auth.find(q(NS_SASL2, "inline"))
    assert inline.find(q(NS_BIND2, "bind")) is not None and inline.find(q(NS_SM, "sm")) is not None
    assert set(fast_mechanisms(feats)) >= {"HT-SHA-256-NONE", "HT-SHA-256-ENDP"}, tostr(feats)
    s.close()


def test_scram_bind2_token_in_one_exchange(server):
    user, pw, jid = server.new_account()
    ua = new_ua_id()
    s, ok, token = login_with_token(server, user, pw, ua)
    full = ident(ok)
    assert full.startswith(jid + "/dev/"), full
    assert ok.find(q(NS_BIND2, "bound")) is not None, tostr(ok)
    assert len(token) >= 65
    # No stream restart: the features of the bound stream follow, without <bind/>.
    assert s.after_success.find(q("urn:ietf:params:xml:ns:xmpp-bind", "bind")) is None
    s.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
    el = s.expect(q(NS_CLIENT, "iq"))
    assert el.get("type") == "result" and el.get("to") == full, tostr(el)
    s.close()


def test_wrong_password_fails_and_may_retry(server):
    user, pw, _ = server.new_account()
    s, _ = connect_tls(server.c2s_port)
    el = scram_sasl2(s, user, "wrong-" + pw)
    assert failure_condition(el) == "not-authorized"
    el = scram_sasl2(s, user, pw, inline_xml(bind=""))
    assert el.tag == q(NS_SASL2, "success"), tostr(el)
    s.close()


def test_unknown_mechanism_and_abort(server):
    s, _ = connect_tls(server.c2s_port)
    authenticate(s, "DIGEST-MD5", b"x")
    assert failure_condition(s.next()) == "invalid-mechanism"
    authenticate(s, "SCRAM-SHA-256")  # no initial response: an empty challenge
    ch = s.expect(q(NS_SASL2, "challenge"))
    assert not (ch.text or "").strip()
    s.send("<abort xmlns='%s'/>" % NS_SASL2)
    assert failure_condition(s.next()) == "aborted"
    s.close()


def test_fast_login_binds_without_password(server):
    user, pw, jid = server.new_account()
    ua = new_ua_id()
    s, ok, token = login_with_token(server, user, pw, ua)
    first = ident(ok)
    s.close()
    s2, _ = connect_tls(server.c2s_port)
    ok2 = fast_login(s2, user, token, extra=inline_xml(ua_id=ua, bind="dev", fast=1))
    assert ok2.tag == q(NS_SASL2, "success"), tostr(ok2)
    # The same client gets the same resource (stable per user-agent id).
    assert ident(ok2) == first
    ping(s2)
    s2.close()


def test_fast_wrong_token_mechanism_and_user(server):
    user, pw, _ = server.new_account()
    other, _, _ = server.new_account()
    ua = new_ua_id()
    s, _, token = login_with_token(server, user, pw, ua)
    s.close()
    for who, tok, mech in ((user, token[:-1] + ("A" if token[-1] != "A" else "B"), "HT-SHA-256-NONE"),
                           (user, token, "HT-SHA-256-ENDP"),  # bound to NONE at request
                           (other, token, "HT-SHA-256-NONE")):
        s2, _ = connect_tls(server.c2s_port)
        el = fast_login(s2, who, tok, mech, inline_xml(ua_id=ua))
        assert failure_condition(el) == "not-authorized", (who, mech)
        s2.close()


def test_fast_replayed_count_rejected(server):
    user, pw, _ = server.new_account()
    ua = new_ua_id()
    s, _, token = login_with_token(server, user, pw, ua)
    s.close()
    s1, _ = connect_tls(server.c2s_port)
    assert fast_login(s1, user, token, extra=inline_xml(ua_id=ua, fast=5)).tag == \
        q(NS_SASL2, "success")
    s1.close()
    for count in (5, 4):
        s2, _ = connect_tls(server.c2s_port)
        el = fast_login(s2, user, token, extra=inline_xml(ua_id=ua, fast=count))
        assert failure_condition(el) == "not-authorized", count
        s2.close()
    s3, _ = connect_tls(server.c2s_port)
    assert fast_login(s3, user, token, extra=inline_xml(ua_id=ua, fast=6)).tag == \
        q(NS_SASL2, "success")
    s3.close()


def test_fast_expr_proof_is_bound_to_the_connection(server):
    user, pw, _ = server.new_account()
    ua = new_ua_id()
    s, feats = connect_tls(server.c2s_port)
    if "HT-SHA-256-EXPR" not in fast_mechanisms(feats) or not s.tls_exporter():
        pytest.skip("no tls-exporter on this connection")
    ok = scram_sasl2(s, user, pw, inline_xml(ua_id=ua, request_token="HT-SHA-256-EXPR"))
    token = token_of(ok)[0]
    s.close()
    s1, _ = connect_tls(server.c2s_port)
    cb = s1.tls_exporter()
    msg = ht_initial(user, token, "HT-SHA-256-EXPR", cb)
    assert fast_login(s1, user, token, "HT-SHA-256-EXPR", inline_xml(ua_id=ua)).tag == \
        q(NS_SASL2, "success")
    s1.close()
    # The same bytes on another TLS connection: another exporter, a wrong proof.
    s2, _ = connect_tls(server.c2s_port)
    authenticate(s2, "HT-SHA-256-EXPR", msg, inline_xml(ua_id=ua))
    assert failure_condition(s2.next()) == "not-authorized"
    s2.close()


def test_fast_endp_mechanism(server):
    user, pw, _ = server.new_account()
    ua = new_ua_id()
    s, _, token = login_with_token(server, user, pw, ua, mech="HT-SHA-256-ENDP")
    s.close()
    s2, _ = connect_tls(server.c2s_port)
    ok = fast_login(s2, user, token, "HT-SHA-256-ENDP", inline_xml(ua_id=ua, bind=""))
    assert ok.tag == q(NS_SASL2, "success"), tostr(ok)
    s2.close()


def test_fast_token_rotation(make_server):
    # fast_rotate_after 0: every use of a token brings its successor.
    srv = make_server("--fast-rotate-after", "0")
    user, pw, _ = srv.new_account()
    ua = new_ua_id()
    s, _, t1 = login_with_token(srv, user, pw, ua)
    s.close()
    s, _ = connect_tls(srv.c2s_port)
    ok = fast_login(s, user, t1, extra=inline_xml(ua_id=ua))
    t2 = token_of(ok)[0]
    assert t2 and t2 != t1
    s.close()
    # Until the new token is used, the old one still works (the client may have missed it).
    s, _ = connect_tls(srv.c2s_port)
    ok = fast_login(s, user, t1, extra=inline_xml(ua_id=ua))
    assert ok.tag == q(NS_SASL2, "success"), tostr(ok)
    t3 = token_of(ok)[0]
    s.close()
    # t3 replaced the unused t2; using t3 ends t1.
    s, _ = connect_tls(srv.c2s_port)
    assert fast_login(s, user, t2, extra=inline_xml(ua_id=ua)).tag == q(NS_SASL2, "failure")
    s.close()
    s, _ = connect_tls(srv.c2s_port)
    assert fast_login(s, user, t3, extra=inline_xml(ua_id=ua)).tag == q(NS_SASL2, "success")
    s.close()
    s, _ = connect_tls(srv.c2s_port)
    assert failure_condition(fast_login(s, user, t1, extra=inline_xml(ua_id=ua))) == \
        "not-authorized"
    s.close()


def test_fast_no_rotation_before_due(server):
    user, pw, _ = server.new_account()
    ua = new_ua_id()
    s, _, token = login_with_token(server, user, pw, ua)
    s.close()
    s, _ = connect_tls(server.c2s_port)
    ok = fast_login(s, user, token, extra=inline_xml(ua_id=ua))
    assert token_of(ok) is None, tostr(ok)  # fast_rotate_after is a day
    s.close()


def test_fast_invalidation(server):
    user, pw, _ = server.new_account()
    ua = new_ua_id()
    s, _, token = login_with_token(server, user, pw, ua)
    s.close()
    s, _ = connect_tls(server.c2s_port)
    ok = fast_login(s, user, token, extra=inline_xml(ua_id=ua, fast=True, invalidate=True))
    assert ok.tag == q(NS_SASL2, "success") and token_of(ok) is None, tostr(ok)
    s.close()
    s, _ = connect_tls(server.c2s_port)
    assert failure_condition(fast_login(s, user, token, extra=inline_xml(ua_id=ua))) == \
        "not-authorized"
    s.close()


def test_password_change_ends_fast_tokens(server):
    """New credentials end the tokens got with the old ones."""
    user, pw, _ = server.new_account()
    ua = new_ua_id()
    s, _, token = login_with_token(server, user, pw, ua)
    s.close()
    r = server.stanzactl("user", "passwd", user, stdin="pw-changed\n")
    assert r.returncode == 0, r.stderr
    s, _ = connect_tls(server.c2s_port)
    assert failure_condition(fast_login(s, user, token, extra=inline_xml(ua_id=ua))) == \
        "not-authorized"
    s.close()


def test_fast_tokens_survive_restart(make_server):
    srv = make_server()
    user, pw, _ = srv.new_account()
    ua = new_ua_id()
    s, _, token = login_with_token(srv, user, pw, ua)
    s.close()
    srv.signal()
    assert srv.wait(10) == 0
    srv.start()
    s, _ = connect_tls(srv.c2s_port)
    assert fast_login(s, user, token, extra=inline_xml(ua_id=ua)).tag == q(NS_SASL2, "success")
    s.close()
    # The database holds the token's hash, not the token.
    rows = srv.db_query("SELECT key FROM fast_tokens")
    assert rows and all(token.encode() not in r[0] for r in rows)
    import hashlib
    assert any(r[0] == hashlib.sha256(token.encode()).digest() for r in rows)


def test_bind2_inline_sm_enable_and_resume(server):
    user, pw, jid = server.new_account()
    peer, ppw, pjid = server.new_account()
    ua = new_ua_id()
    s, _ = connect_tls(server.c2s_port)
    ok = scram_sasl2(s, user, pw, inline_xml(ua_id=ua, bind="dev", sm_enable=True,
                                             request_token="HT-SHA-256-NONE"))
    enabled = ok.find("%s/%s" % (q(NS_BIND2, "bound"), q(NS_SM, "enabled")))
    assert enabled is not None and enabled.get("resume") == "true", tostr(ok)
    previd, full, token = enabled.get("id"), ident(ok), token_of(ok)[0]
    s.send("<presence/>")
    # The connection breaks (no </stream:stream>): the session waits for resumption.
    s.sock.close()
    server.wait_log(r"sm.detach conn=\d+ jid=%s" % full.replace("/", r"\/"))
    # A message arrives meanwhile.
    p, _ = connect_tls(server.c2s_port)
    assert scram_sasl2(p, peer, ppw, inline_xml(bind="")).tag == q(NS_SASL2, "success")
    p.send("<message to='%s' type='chat' id='m1'><body>while away</body></message>" % full)
    time.sleep(0.2)
    # FAST + inline <resume/>: one round trip back into the session.
    s2, _ = connect_tls(server.c2s_port)
    ok2 = fast_login(s2, user, token, extra=inline_xml(ua_id=ua, bind="dev", sm_enable=True,
                                                         resume=(previd, 0)))
    assert ok2.tag == q(NS_SASL2, "success"), tostr(ok2)
    resumed = ok2.find(q(NS_SM, "resumed"))
    assert resumed is not None and resumed.get("previd") == previd, tostr(ok2)
    assert ok2.find(q(NS_BIND2, "bound")) is None, "a resumed stream binds nothing"
    assert ident(ok2) == full
    assert s2.after_success is None  # no features after an inline resumption
    got = []
    for _ in range(3):
        el = s2.next()
        got.append(el)
        if el.tag == q(NS_CLIENT, "message"):
            break
    msgs = [e for e in got if e.tag == q(NS_CLIENT, "message")]
    assert msgs and msgs[0].find(q(NS_CLIENT, "body")).text == "while away", \
        [tostr(e) for e in got]
    ping(s2)
    s2.close()
    p.close()


def test_bind2_failed_resume_binds_a_new_session(server):
    user, pw, jid = server.new_account()
    s, _ = connect_tls(server.c2s_port)
    ok = scram_sasl2(s, user, pw, inline_xml(bind="x", sm_enable=True,
                                             resume=("AAAAAAAAAAAAAAAAAAAAAAAA", 0)))
    failed = ok.find(q(NS_SM, "failed"))
    assert failed is not None and failed.find(q(NS_STANZAS, "item-not-found")) is not None, \
        tostr(ok)
    assert ok.find("%s/%s" % (q(NS_BIND2, "bound"), q(NS_SM, "enabled"))) is not None, tostr(ok)
    assert ident(ok).startswith(jid + "/x/")
    assert s.after_success is not None
    ping(s)
    s.close()


def test_bind2_carbons_and_csi_inline(server):
    user, pw, jid = server.new_account()
    peer, ppw, pjid = server.new_account()
    a, _ = connect_tls(server.c2s_port)
    assert scram_sasl2(a, user, pw, inline_xml(bind="a", carbons=True)).tag == \
        q(NS_SASL2, "success")
    b, _ = connect_tls(server.c2s_port)
    okb = scram_sasl2(b, user, pw, inline_xml(bind="b", csi="inactive"))
    assert okb.tag == q(NS_SASL2, "success")
    b.send("<message to='%s' type='chat' id='c1'><body>sent by b</body></message>" % pjid)
    # a enabled carbons inline: it gets a copy of what b sent.
    el = a.expect(q(NS_CLIENT, "message"))
    assert el.find(q("urn:xmpp:carbons:2", "sent")) is not None, tostr(el)
    a.close()
    b.close()


def test_pipelined_authenticate_after_fast(server):
    """A client that knows the features sends header and <authenticate/> at once."""
    user, pw, _ = server.new_account()
    ua = new_ua_id()
    s, _, token = login_with_token(server, user, pw, ua)
    s.close()
    s2 = RawStream(server.tls_port, direct_tls=True)
    s2.send_header()
    authenticate(s2, "HT-SHA-256-NONE", ht_initial(user, token, "HT-SHA-256-NONE", b""),
                 inline_xml(ua_id=ua, bind=""))
    s2.send("<iq type='get' id='early'><query xmlns='jabber:iq:roster'/></iq>")
    s2.read_header()
    s2.expect(q(NS_STREAM, "features"))
    s2.expect(q(NS_SASL2, "success"))
    s2.expect(q(NS_STREAM, "features"))
    el = s2.expect(q(NS_CLIENT, "iq"))
    assert el.get("id") == "early" and el.get("type") == "result", tostr(el)
    s2.close()


def test_sasl2_off(make_server):
    srv = make_server("--sasl2", "no")
    s, feats = connect_tls(srv.c2s_port)
    assert feats.find(q(NS_SASL2, "authentication")) is None
    s.close()


def test_second_authenticate_after_success_is_a_stream_error(server):
    user, pw, _ = server.new_account()
    s, _ = connect_tls(server.c2s_port)
    assert scram_sasl2(s, user, pw, inline_xml(bind="")).tag == q(NS_SASL2, "success")
    authenticate(s, "PLAIN", b"\0%s\0%s" % (user.encode(), pw.encode()))
    assert s.stream_error() == "policy-violation"


def test_other_traffic_during_sasl2_is_a_stream_error(server):
    user, pw, _ = server.new_account()
    s, _ = connect_tls(server.c2s_port)
    authenticate(s, "SCRAM-SHA-256")
    s.expect(q(NS_SASL2, "challenge"))
    s.send("<message to='%s@localhost'><body>too early</body></message>" % user)
    assert s.stream_error() == "not-authorized"
