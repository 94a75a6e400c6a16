"""XEP-0077 In-Band Registration: policy, password change, account removal."""
import asyncio

import pytest

from harness import (NS_CLIENT, NS_REGISTER, NS_REGISTER_FEATURE, NS_STANZAS,
                     ClientFailed, RawStream, connect_and_wait, login, q, tostr, uniq,
                     xml_escape)


def reg_error_condition(el):
    assert el.get("type") == "error", tostr(el)
    err = el.find(q(NS_CLIENT, "error"))
    conds = [c.tag.split("}")[1] for c in err if c.tag.startswith("{%s}" % NS_STANZAS)
             and not c.tag.endswith("}text")]
    return conds[0]


def preauth_stream(port):
    s = RawStream(port, direct_tls=True)
    feats = s.open()
    return s, feats


def register_iq(user, password, iq_id="r1"):
    return ("<iq type='set' id='%s'><query xmlns='%s'><username>%s</username>"
            "<password>%s</password></query></iq>" %
            (iq_id, NS_REGISTER, xml_escape(user), xml_escape(password)))


# ---- 15: registration closed ----

def test_registration_closed_refuses_and_hides_the_feature(make_server):
    srv = make_server("--registration", "closed")
    s, feats = preauth_stream(srv.tls_port)
    try:
        assert feats.find(q(NS_REGISTER_FEATURE, "register")) is None, \
            "register feature advertised although registration is closed: %s" % tostr(feats)
        s.send(register_iq(uniq("closed"), "secret-password"))
        el = s.expect(q(NS_CLIENT, "iq"))
        assert el.get("id") == "r1"
        assert reg_error_condition(el) == "not-allowed"
        assert b"secret-password" not in s.received, "the password was echoed back"
        s.send("<iq type='get' id='g1'><query xmlns='%s'/></iq>" % NS_REGISTER)
        el = s.expect(q(NS_CLIENT, "iq"))
        assert reg_error_condition(el) in ("service-unavailable", "not-allowed", "forbidden")
    finally:
        s.close()


def test_registration_closed_stanzactl_user_can_log_in(make_server):
    srv = make_server("--registration", "closed")
    user, password, jid = srv.new_account("ctl")
    s, full = login(srv.tls_port, user, password, direct_tls=True)
    try:
        assert full.startswith(jid + "/")
    finally:
        s.close()


# ---- registration open: form and errors ----

def test_registration_form_duplicate_and_missing_fields(server):
    user = uniq("dup")
    s, feats = preauth_stream(server.tls_port)
    try:
        assert feats.find(q(NS_REGISTER_FEATURE, "register")) is not None
        s.send("<iq type='get' id='form'><query xmlns='%s'/></iq>" % NS_REGISTER)
        el = s.expect(q(NS_CLIENT, "iq"))
        assert el.get("type") == "result", tostr(el)
        query = el.find(q(NS_REGISTER, "query"))
        assert query.find(q(NS_REGISTER, "username")) is not None
        assert query.find(q(NS_REGISTER, "password")) is not None
        s.send(register_iq(user, "first-password", "a"))
        el = s.expect(q(NS_CLIENT, "iq"))
        assert el.get("type") == "result" and el.get("id") == "a", tostr(el)
        s.send(register_iq(user, "second-password", "b"))
        el = s.expect(q(NS_CLIENT, "iq"))
        assert el.get("id") == "b" and reg_error_condition(el) == "conflict"
        s.send("<iq type='set' id='c'><query xmlns='%s'><username>%s</username></query></iq>"
               % (NS_REGISTER, uniq("nopw")))
        el = s.expect(q(NS_CLIENT, "iq"))
        assert el.get("id") == "c" and reg_error_condition(el) == "not-acceptable"
        assert b"second-password" not in s.received, "the password was echoed back"
    finally:
        s.close()
    # The first registration holds.
    s, full = login(server.tls_port, user, "first-password", direct_tls=True)
    s.close()


# ---- 16: password change and removal ----

def test_password_change_via_xep0077(server, xmpp, arun):
    user, password, jid = server.new_account("chpw")
    new_password = "n3w-pässword<&>"
    c = xmpp(jid, password, server.c2s_port, plugins=["xep_0077"])

    async def change():
        await connect_and_wait(c)
        reply = await c["xep_0077"].change_password(new_password, timeout=10)
        assert reply["type"] == "result"
    arun(change())

    old = xmpp(jid, password, server.c2s_port, mech="SCRAM-SHA-256")
    with pytest.raises(ClientFailed):
        arun(connect_and_wait(old))
    assert old.test_auth_failures == ["not-authorized"]
    new = xmpp(jid, new_password, server.c2s_port, mech="SCRAM-SHA-256")
    arun(connect_and_wait(new))
    assert new.boundjid.bare == jid


def test_password_change_for_another_user_is_refused(server):
    user, password, jid = server.new_account("chother")
    victim, vpw, vjid = server.new_account("victim")
    s, full = login(server.c2s_port, user, password)
    try:
        s.send(register_iq(victim, "hijacked", "x"))
        el = s.expect(q(NS_CLIENT, "iq"))
        assert el.get("id") == "x"
        assert reg_error_condition(el) in ("not-authorized", "forbidden", "not-allowed")
    finally:
        s.close()
    s, full = login(server.c2s_port, victim, vpw)
    s.close()


def test_account_removal_ends_sessions_and_blocks_login(server, xmpp, arun):
    user, password, jid = server.new_account("remove")
    other, _opw, _ = server.new_account("remove")
    raw, raw_full = login(server.c2s_port, user, password, resource="second")
    c = xmpp(jid, password, server.c2s_port, plugins=["xep_0077"])

    async def remove():
        await connect_and_wait(c)
        reply = await c["xep_0077"].cancel_registration(timeout=10)
        assert reply["type"] == "result"
        for _ in range(200):
            if c.test_stream_errors:
                break
            await asyncio.sleep(0.02)
        assert c.test_stream_errors == ["not-authorized"]
    try:
        arun(remove())
        # The other resource of the account ends the same way.
        assert raw.stream_error() == "not-authorized"
    finally:
        raw.close()

    again = xmpp(jid, password, server.c2s_port, mech="SCRAM-SHA-256")
    with pytest.raises(ClientFailed):
        arun(connect_and_wait(again))
    assert again.test_auth_failures == ["not-authorized"]
    # The name is free again.
    s, feats = preauth_stream(server.tls_port)
    try:
        s.send(register_iq(user, "reborn"))
        el = s.expect(q(NS_CLIENT, "iq"))
        assert el.get("type") == "result", tostr(el)
    finally:
        s.close()


def test_registration_before_starttls_is_refused_when_tls_is_required(server):
    """Credentials must never be accepted in the clear when TLS is required."""
    user = uniq("cleartext")
    s = RawStream(server.c2s_port)
    try:
        s.open()
        s.send(register_iq(user, "clear-password"))
        el_or_cond = None
        try:
            el_or_cond = s.stream_error()
        except AssertionError:
            pass
        assert el_or_cond == "not-authorized", \
            "pre-TLS registration not refused with a stream error: %r" % s.received[-500:]
    finally:
        s.close()
    r = server.stanzactl("user", "list")
    assert r.returncode == 0 and user not in r.stdout, r.stdout


@pytest.mark.parametrize("bad_user", ["bad@name", "bad/name", "has space", "a" * 1100, "<x>"])
def test_registration_with_an_invalid_username_is_refused(server, bad_user):
    s, feats = preauth_stream(server.tls_port)
    try:
        s.send(register_iq(bad_user, "whatever-pw"))
        el = s.expect(q(NS_CLIENT, "iq"))
        assert reg_error_condition(el) in ("not-acceptable", "jid-malformed", "bad-request")
    finally:
        s.close()
