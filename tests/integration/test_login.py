"""Account creation, login (STARTTLS and Direct TLS), resource binding,
channel binding (RFC 6120 sections 5-7, XEP-0077, XEP-0368, RFC 5802/9266)."""
import ssl

import pytest

from harness import (DOMAIN, NS_BIND, NS_CLIENT, NS_SASL, NS_SASL_CB, NS_TLS,
                     NS_REGISTER_FEATURE, RawStream, connect_and_wait, login, q,
                     tostr, uniq)


def mechanisms(features):
    m = features.find(q(NS_SASL, "mechanisms"))
    assert m is not None, "no SASL mechanisms in %s" % tostr(features)
    return [e.text for e in m.findall(q(NS_SASL, "mechanism"))]


def test_register_inband_with_slixmpp_then_login_scram_sha256_over_starttls(server, xmpp, arun):
    user = uniq("reg")
    password = "s3cret-<&>'\"-ünï"
    jid = "%s@%s" % (user, DOMAIN)
    c = xmpp(jid, password, server.c2s_port, mech="SCRAM-SHA-256", plugins=["xep_0077"])
    # slixmpp 1.8.3 holds back every stanza until session_start, including
    # the pre-authentication registration iq; let it through.
    c._always_send_everything = True
    registered = []

    async def on_register(form):
        iq = c.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = user
        iq["register"]["password"] = password
        reply = await iq.send(timeout=10)
        registered.append(reply["type"])
    c.add_event_handler("register", on_register)

    mark = server.log_size()
    arun(connect_and_wait(c))
    assert registered == ["result"]
    assert isinstance(c.socket, (ssl.SSLObject, ssl.SSLSocket)), "session is not over TLS"
    assert c["feature_mechanisms"].mech.name == "SCRAM-SHA-256"
    assert c.boundjid.bare == jid
    assert c.boundjid.resource, "no resource bound"
    server.wait_log(r"auth\.success conn=\d+ mechanism=SCRAM-SHA-256 jid=%s" % jid, start=mark)


def test_login_scram_sha256_over_direct_tls_with_slixmpp(server, xmpp, arun):
    user, password, jid = server.new_account("dtls")
    c = xmpp(jid, password, server.tls_port, mech="SCRAM-SHA-256", direct_tls=True)
    mark = server.log_size()
    arun(connect_and_wait(c))
    assert isinstance(c.socket, (ssl.SSLObject, ssl.SSLSocket))
    assert c.boundjid.bare == jid and c.boundjid.resource
    server.wait_log(r"auth\.success conn=\d+ mechanism=SCRAM-SHA-256 jid=%s" % jid, start=mark)


def test_direct_tls_negotiates_alpn_xmpp_client_and_skips_starttls(server):
    user, password, jid = server.new_account("dtlsraw")
    s = RawStream(server.tls_port, direct_tls=True)
    try:
        assert s.sock.selected_alpn_protocol() == "xmpp-client"
        feats = s.open()
        assert s.header.get("from") == DOMAIN and s.header.get("version") == "1.0"
        assert s.header.get("id"), "no stream id"
        assert feats.find(q(NS_TLS, "starttls")) is None, "STARTTLS offered on Direct TLS"
        assert "SCRAM-SHA-256" in mechanisms(feats)
        kind, cond = s.scram_login(user, password)
        assert kind == "success", cond
        feats = s.restart()
        assert feats.find(q(NS_BIND, "bind")) is not None
        full = s.bind("dt")
        assert full == jid + "/dt"
    finally:
        s.close()


def test_starttls_required_and_mechanisms_only_after_tls(server):
    s = RawStream(server.c2s_port)
    try:
        feats = s.open()
        st = feats.find(q(NS_TLS, "starttls"))
        assert st is not None and st.find(q(NS_TLS, "required")) is not None, tostr(feats)
        assert feats.find(q(NS_SASL, "mechanisms")) is None, \
            "mechanisms offered before TLS although TLS is required: %s" % tostr(feats)
        feats = s.starttls()
        assert feats.find(q(NS_TLS, "starttls")) is None
        mechs = mechanisms(feats)
        assert "SCRAM-SHA-256" in mechs and "PLAIN" in mechs
        assert feats.find(q(NS_REGISTER_FEATURE, "register")) is not None
    finally:
        s.close()


# ---- resource binding (RFC 6120 section 7) ----

def test_bind_generates_a_resource_when_none_requested(server):
    user, password, jid = server.new_account("bindgen")
    s1, full1 = login(server.c2s_port, user, password)
    s2, full2 = login(server.c2s_port, user, password)
    try:
        for full in (full1, full2):
            bare, _, res = full.partition("/")
            assert bare == jid and res, full
        assert full1 != full2, "two generated resources are equal: %s" % full1
    finally:
        s1.close()
        s2.close()


def test_bind_keeps_the_client_chosen_resource(server):
    user, password, jid = server.new_account("bindres")
    s, full = login(server.c2s_port, user, password, resource="Gajim.Laptop-1")
    try:
        assert full == jid + "/Gajim.Laptop-1"
    finally:
        s.close()


def test_second_login_with_same_full_jid_replaces_first_with_conflict(server):
    user, password, jid = server.new_account("bindconf")
    s1, full1 = login(server.c2s_port, user, password, resource="phone")
    s2, full2 = login(server.c2s_port, user, password, resource="phone")
    other, _, ojid = server.new_account("bindconfpeer")
    s3, _ = login(server.c2s_port, other, _)
    try:
        assert full1 == full2 == jid + "/phone"
        assert s1.stream_error() == "conflict"
        # The new session owns the full JID now.
        s3.send("<message to='%s' type='chat' id='m1'><body>to the new one</body></message>"
                % full2)
        m = s2.expect(q(NS_CLIENT, "message"))
        assert m.findtext(q(NS_CLIENT, "body")) == "to the new one"
    finally:
        for s in (s1, s2, s3):
            s.close()


def test_second_bind_on_one_stream_is_refused(server):
    user, password, jid = server.new_account("bind2")
    s, full = login(server.c2s_port, user, password, resource="a")
    try:
        s.send("<iq type='set' id='b2'><bind xmlns='%s'><resource>b</resource></bind></iq>"
               % NS_BIND)
        el = s.expect(q(NS_CLIENT, "iq"))
        assert el.get("type") == "error" and el.get("id") == "b2", tostr(el)
    finally:
        s.close()


# ---- channel binding (RFC 5802 section 6, RFC 5929, RFC 9266, XEP-0440) ----

def test_plus_mechanisms_and_binding_types_offered_over_tls(server):
    s = RawStream(server.tls_port, direct_tls=True)
    try:
        feats = s.open()
        mechs = mechanisms(feats)
        assert "SCRAM-SHA-256-PLUS" in mechs, mechs
        cb = feats.find(q(NS_SASL_CB, "sasl-channel-binding"))
        assert cb is not None, "no XEP-0440 element: %s" % tostr(feats)
        types = [e.get("type") for e in cb.findall(q(NS_SASL_CB, "channel-binding"))]
        assert s.sock.version() == "TLSv1.3"
        assert "tls-exporter" in types, types
    finally:
        s.close()


def test_login_scram_sha256_plus_with_slixmpp_tls_unique(server, xmpp, arun):
    user, password, jid = server.new_account("plus")
    c = xmpp(jid, password, server.c2s_port, mech="SCRAM-SHA-256-PLUS")
    mark = server.log_size()
    arun(connect_and_wait(c))
    assert c["feature_mechanisms"].mech.name == "SCRAM-SHA-256-PLUS"
    assert c.boundjid.bare == jid
    server.wait_log(r"auth\.success conn=\d+ mechanism=SCRAM-SHA-256-PLUS jid=%s" % jid,
                    start=mark)


def test_login_scram_sha256_plus_with_tls_exporter(server):
    user, password, jid = server.new_account("exporter")
    s = RawStream(server.tls_port, direct_tls=True)
    try:
        s.open()
        data = s.tls_exporter()
        if data is None:
            pytest.skip("cannot compute tls-exporter from Python's ssl module here")
        kind, cond = s.scram_login(user, password, "SCRAM-SHA-256-PLUS",
                                   cb_type="tls-exporter", cb_data=data)
        assert kind == "success", cond
    finally:
        s.close()


def test_scram_plus_with_wrong_binding_data_fails(server):
    user, password, jid = server.new_account("badcb")
    s = RawStream(server.tls_port, direct_tls=True)
    try:
        s.open()
        kind, cond = s.scram_login(user, password, "SCRAM-SHA-256-PLUS",
                                   cb_type="tls-exporter", cb_data=b"\0" * 32)
        assert (kind, cond) == ("failure", "not-authorized")
    finally:
        s.close()


def test_scram_gs2_flag_y_is_refused_when_plus_was_offered(server):
    """RFC 5802 section 6: 'y' means the client thinks the server cannot
    bind; a server that offered -PLUS must treat that as a downgrade."""
    user, password, jid = server.new_account("flagy")
    s = RawStream(server.tls_port, direct_tls=True)
    try:
        s.open()
        kind, cond = s.scram_login(user, password, "SCRAM-SHA-256", gs2_flag="y")
        assert kind == "failure", "gs2 flag 'y' accepted although -PLUS was offered"
    finally:
        s.close()


def test_sessions_per_account_are_limited_by_max_resources(make_server):
    srv = make_server("--max-resources", "2")
    user, password, jid = srv.new_account("maxres")
    s1, _ = login(srv.c2s_port, user, password, resource="a")
    s2, _ = login(srv.c2s_port, user, password, resource="b")
    s3 = RawStream(srv.tls_port, direct_tls=True)
    try:
        s3.open()
        assert s3.scram_login(user, password)[0] == "success"
        s3.restart()
        s3.send("<iq type='set' id='b3'><bind xmlns='%s'><resource>c</resource></bind></iq>"
                % NS_BIND)
        el = s3.expect(q(NS_CLIENT, "iq"))
        assert el.get("type") == "error" and el.get("id") == "b3", tostr(el)
        assert el.find("%s/{urn:ietf:params:xml:ns:xmpp-stanzas}resource-constraint"
                       % q(NS_CLIENT, "error")) is not None, tostr(el)
        # Replacing an existing resource is still allowed at the limit.
        s4, full4 = login(srv.c2s_port, user, password, resource="a")
        assert s1.stream_error() == "conflict"
        s4.close()
    finally:
        for s in (s1, s2, s3):
            s.close()


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256"])
def test_scram_variants_log_in(server, mech):
    user, password, jid = server.new_account("variant")
    s = RawStream(server.tls_port, direct_tls=True)
    try:
        feats = s.open()
        assert mech in mechanisms(feats)
        kw = {}
        if mech.endswith("-PLUS"):
            data = s.tls_exporter()
            if data is None:
                pytest.skip("cannot compute tls-exporter from Python's ssl module here")
            kw = dict(cb_type="tls-exporter", cb_data=data)
        assert s.scram_login(user, password, mech, **kw) == ("success", None)
        s.restart()
        assert s.bind().startswith(jid + "/")
    finally:
        s.close()
