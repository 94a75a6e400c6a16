"""Certificate login: SASL EXTERNAL with client certificates (XEP-0178) on
c2s, on both SASL profiles (RFC 6120 and SASL2). The CA, the client
certificates and the CRL are made with the openssl CLI; the client is
Python's ssl module with a certificate."""
import base64
import os
import shutil
import subprocess
import tempfile

import pytest

from harness import (NS_BIND, NS_CLIENT, NS_SASL, NS_STREAM, RawStream, q, tostr)
from sasl2util import (NS_SASL2, PkiCA, authenticate, cert_context, connect_tls,
                       failure_condition, fast_login, inline_xml, new_ua_id, sasl2_mechanisms,
                       token_of)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl CLI")


@pytest.fixture(scope="module")
def pki():
    root = tempfile.mkdtemp(prefix="stanzad-pki-")
    ca = PkiCA(root, "ca")
    other = PkiCA(root, "other")
    p = {"root": root, "ca": ca, "other": other}
    yield p
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def cert_server(pki, request):
    from harness import StanzadServer
    ca = pki["ca"]
    users = {}
    srv = StanzadServer(["--client-ca", ca.cert, "--client-crl", ca.crl],
                        name="stanzad(client-ca)")
    # Certificates first: the CRL is read at startup.
    pki["valid"] = ca.issue("valid", xmpp_addrs=["devvalid@localhost"])
    pki["unknown"] = ca.issue("unknown", xmpp_addrs=["nosuchuser@localhost"])
    pki["two"] = ca.issue("two", xmpp_addrs=["devtwo1@localhost", "devtwo2@localhost"])
    pki["email"] = ca.issue("email", emails=["devmail@localhost"])
    pki["plain"] = ca.issue("plain")  # no JID: only an enrolled fingerprint maps it
    pki["revoked"] = ca.issue("revoked", xmpp_addrs=["devrevoked@localhost"])
    ca.revoke(pki["revoked"][0])
    pki["wrong"] = pki["other"].issue("wrong", xmpp_addrs=["devvalid@localhost"])
    srv.start()
    # devplain is made by the enrollment (an account made before is not adopted).
    for u in ("devvalid", "devtwo1", "devtwo2", "devmail", "devrevoked"):
        srv.add_user(u, "pw-" + u)
    yield srv
    srv.stop()


def ctx_for(pki, name):
    cert, key, _ = pki[name]
    return cert_context(cert, key)


def sasl1_external(s, authzid=None):
    s.send("<auth xmlns='%s' mechanism='EXTERNAL'>%s</auth>" %
           (NS_SASL, base64.b64encode(authzid.encode()).decode() if authzid else "="))
    return s.sasl_next()


def mechanisms(feats):
    m = feats.find(q(NS_SASL, "mechanisms"))
    return [x.text for x in m.findall(q(NS_SASL, "mechanism"))] if m is not None else []


def test_external_offered_only_with_a_verified_certificate(cert_server, pki):
    s, feats = connect_tls(cert_server.c2s_port)
    assert "EXTERNAL" not in mechanisms(feats) and "EXTERNAL" not in sasl2_mechanisms(feats)
    s.close()
    s, feats = connect_tls(cert_server.c2s_port, ctx=ctx_for(pki, "valid"))
    assert "EXTERNAL" in mechanisms(feats) and "EXTERNAL" in sasl2_mechanisms(feats)
    s.close()
    for name in ("wrong", "revoked"):
        s, feats = connect_tls(cert_server.c2s_port, ctx=ctx_for(pki, name))
        assert "EXTERNAL" not in mechanisms(feats), name
        s.close()


@pytest.mark.parametrize("direct_tls", [False, True])
def test_valid_certificate_logs_in(cert_server, pki, direct_tls):
    port = cert_server.tls_port if direct_tls else cert_server.c2s_port
    s, _ = connect_tls(port, direct_tls=direct_tls, ctx=ctx_for(pki, "valid"))
    kind, _ = sasl1_external(s)
    assert kind == "success"
    feats = s.restart()
    assert feats.find(q(NS_BIND, "bind")) is not None
    assert s.bind("cert").startswith("devvalid@localhost/")
    s.close()


def test_unknown_certificate_not_authorized(cert_server, pki):
    s, _ = connect_tls(cert_server.c2s_port, ctx=ctx_for(pki, "unknown"))
    assert sasl1_external(s) == ("failure", "not-authorized")
    s.close()


@pytest.mark.parametrize("name", ["wrong", "revoked"])
def test_other_ca_and_revoked_not_authorized(cert_server, pki, name):
    s, _ = connect_tls(cert_server.c2s_port, ctx=ctx_for(pki, name))
    assert sasl1_external(s) == ("failure", "not-authorized")
    s.close()
    s, _ = connect_tls(cert_server.c2s_port, ctx=ctx_for(pki, name))
    authenticate(s, "EXTERNAL", b"", inline_xml(bind=""))
    assert failure_condition(s.next()) == "not-authorized"
    s.close()


def test_no_certificate_external_is_invalid_mechanism(cert_server):
    s, _ = connect_tls(cert_server.c2s_port)
    assert sasl1_external(s) == ("failure", "invalid-mechanism")
    s.close()


def test_authzid_rules(cert_server, pki):
    # Two JIDs and no authzid: the server cannot choose (XEP-0178 section 3).
    s, _ = connect_tls(cert_server.c2s_port, ctx=ctx_for(pki, "two"))
    assert sasl1_external(s) == ("failure", "invalid-authzid")
    assert sasl1_external(s, "devtwo2@localhost")[0] == "success"
    s.close()
    # One JID: another authorization identity is refused.
    s, _ = connect_tls(cert_server.c2s_port, ctx=ctx_for(pki, "valid"))
    assert sasl1_external(s, "devtwo1@localhost") == ("failure", "invalid-authzid")
    assert sasl1_external(s, "devvalid@localhost")[0] == "success"
    s.close()


def test_rfc822name_maps_when_there_is_no_xmppaddr(cert_server, pki):
    s, _ = connect_tls(cert_server.c2s_port, ctx=ctx_for(pki, "email"))
    assert sasl1_external(s)[0] == "success"
    s.restart()
    assert s.bind().startswith("devmail@localhost/")
    s.close()


def test_sasl2_external_with_bind2(cert_server, pki):
    s, feats = connect_tls(cert_server.c2s_port, ctx=ctx_for(pki, "valid"))
    authenticate(s, "EXTERNAL", b"", inline_xml(bind="sensor"))
    ok = s.expect(q(NS_SASL2, "success"))
    jid = ok.find(q(NS_SASL2, "authorization-identifier")).text
    assert jid.startswith("devvalid@localhost/sensor/"), tostr(ok)
    s.close()


def test_enrolled_fingerprint_and_revocation(cert_server, pki):
    cert, key, fp = pki["plain"]
    # Not enrolled: no JID in the certificate, so nothing maps it.
    s, _ = connect_tls(cert_server.c2s_port, ctx=ctx_for(pki, "plain"))
    assert sasl1_external(s) == ("failure", "not-authorized")
    s.close()
    csv = os.path.join(pki["root"], "plain.csv")
    with open(csv, "w") as f:
        f.write("devplain@localhost,%s,kind=meter,\n" % fp)
    r = cert_server.stanzactl("device", "import", csv)
    assert r.returncode == 0, r.stderr
    s, _ = connect_tls(cert_server.c2s_port, ctx=ctx_for(pki, "plain"))
    assert sasl1_external(s)[0] == "success"
    s.restart()
    assert s.bind().startswith("devplain@localhost/")
    s.close()
    # A FAST token got with the certificate, and a session that stays open.
    ua = new_ua_id()
    live, _ = connect_tls(cert_server.c2s_port, ctx=ctx_for(pki, "plain"))
    authenticate(live, "EXTERNAL", b"", inline_xml(ua_id=ua, bind="dev",
                                                    request_token="HT-SHA-256-NONE"))
    ok = live.expect(q(NS_SASL2, "success"))
    token = token_of(ok)[0]
    r = cert_server.stanzactl("device", "revoke", fp)
    assert r.returncode == 0, r.stderr
    # Revocation ends what the certificate gave: the token and the session.
    assert "FAST tokens are void" in r.stdout and \
        "1 session(s) of devplain@localhost ended" in r.stdout, r.stdout
    live.close()
    s, _ = connect_tls(cert_server.c2s_port, ctx=ctx_for(pki, "plain"))
    assert sasl1_external(s) == ("failure", "not-authorized")
    s.close()
    s, _ = connect_tls(cert_server.c2s_port)
    el = fast_login(s, "devplain", token, extra=inline_xml(ua_id=ua, bind="dev", fast=1))
    assert failure_condition(el) == "not-authorized", tostr(el)
    s.close()
    # A revoked fingerprint cannot come back through an import.
    r = cert_server.stanzactl("device", "import", csv)
    assert r.returncode == 1 and "line 1" in r.stderr and "revoked" in r.stderr, r.stderr


def test_bad_client_ca_file_fails_startup(tmp_path):
    from harness import StanzadServer, ServerError
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    srv = StanzadServer(["--client-ca", str(bad)], name="stanzad(bad-ca)")
    with pytest.raises(ServerError):
        srv.start(timeout=5)
    assert srv.proc.poll() not in (None, 0)
    assert "client_ca" in srv.log_text()
    srv.stop_requested = True
    shutil.rmtree(srv.state_dir, ignore_errors=True)
