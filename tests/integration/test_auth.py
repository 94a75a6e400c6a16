"""SASL outcomes (RFC 6120 section 6, RFC 5802, RFC 7677)."""
import base64

import pytest

from harness import (NS_SASL, RawStream, ClientFailed, ScramClient, connect_and_wait, q,
                     uniq)


def scram_attrs(data):
    return ScramClient.parse(data)


# ---- 4: wrong password ----

def test_wrong_password_fails_with_not_authorized_in_slixmpp(server, xmpp, arun):
    user, password, jid = server.new_account("wrongpw")
    c = xmpp(jid, password + "-nope", server.c2s_port, mech="SCRAM-SHA-256")
    with pytest.raises(ClientFailed):
        arun(connect_and_wait(c))
    assert c.test_auth_failures == ["not-authorized"]
    assert "session_start" not in c.test_events


def test_too_many_failed_attempts_on_one_stream_end_with_policy_violation(server):
    user, password, jid = server.new_account("brute")
    s = RawStream(server.tls_port, direct_tls=True)
    try:
        s.open()
        for attempt in range(1, 4):
            kind, cond = s.scram_login(user, "guess-%d" % attempt)
            assert (kind, cond) == ("failure", "not-authorized"), (attempt, kind, cond)
        # Default max_auth_failures = 3: the third failure closes the stream.
        assert s.stream_error() == "policy-violation"
    finally:
        s.close()


def test_failed_attempts_below_the_limit_allow_a_retry_on_the_same_stream(server):
    user, password, jid = server.new_account("retry")
    s = RawStream(server.tls_port, direct_tls=True)
    try:
        s.open()
        for attempt in range(2):
            assert s.scram_login(user, "bad%d" % attempt) == ("failure", "not-authorized")
        assert s.scram_login(user, password) == ("success", None)
        s.restart()
        assert s.bind().startswith(jid + "/")
    finally:
        s.close()


# ---- 5: unknown user ----

def test_unknown_user_scram_runs_to_the_end_like_a_real_account(server):
    real, rpw, _ = server.new_account("real")
    ghost = uniq("ghost")
    salts = []
    for who, pw in ((real, rpw + "x"), (ghost, "whatever"), (ghost, "whatever")):
        s = RawStream(server.tls_port, direct_tls=True)
        try:
            s.open()
            kind, cond = s.scram_login(who, pw)
            assert (kind, cond) == ("failure", "not-authorized"), (who, kind, cond)
            first = scram_attrs(s.scram_first)
            assert set(first) == {"r", "s", "i"}, s.scram_first
            assert first["i"] == "4096", s.scram_first
            salts.append(base64.b64decode(first["s"]))
        finally:
            s.close()
    real_salt, ghost1, ghost2 = salts
    assert len(ghost1) == len(real_salt), "decoy salt length differs from a real one"
    assert ghost1 == ghost2, "an unknown user's salt changes between attempts (tells it apart)"
    assert ghost1 != real_salt


def test_unknown_user_plain_fails_with_not_authorized(server):
    s = RawStream(server.tls_port, direct_tls=True)
    try:
        s.open()
        s.auth("PLAIN", b"\0" + uniq("ghost").encode() + b"\0secret")
        assert s.sasl_next() == ("failure", "not-authorized")
    finally:
        s.close()


# ---- 11: SASL failure conditions ----

def tls_stream(server):
    s = RawStream(server.tls_port, direct_tls=True)
    s.open()
    return s


def test_unknown_mechanism_is_invalid_mechanism(server):
    s = tls_stream(server)
    try:
        s.auth("X-NOT-A-MECH", b"whatever")
        assert s.sasl_next() == ("failure", "invalid-mechanism")
        s.send("<auth xmlns='%s'>=</auth>" % NS_SASL)  # no mechanism attribute
        assert s.sasl_next() == ("failure", "invalid-mechanism")
    finally:
        s.close()


def test_bad_base64_is_incorrect_encoding(server):
    s = tls_stream(server)
    try:
        s.send("<auth xmlns='%s' mechanism='PLAIN'>AGZvbwBi$$YXI=</auth>" % NS_SASL)
        assert s.sasl_next() == ("failure", "incorrect-encoding")
        s.send("<auth xmlns='%s' mechanism='PLAIN'>AGZvbwBiYXI</auth>" % NS_SASL)  # no padding
        assert s.sasl_next() == ("failure", "incorrect-encoding")
    finally:
        s.close()


def test_bad_base64_in_a_response_is_incorrect_encoding(server):
    user, password, jid = server.new_account("b64resp")
    s = tls_stream(server)
    try:
        s.auth("SCRAM-SHA-256", ScramClient(user, password).first())
        assert s.sasl_next()[0] == "challenge"
        s.send("<response xmlns='%s'>***</response>" % NS_SASL)
        assert s.sasl_next() == ("failure", "incorrect-encoding")
    finally:
        s.close()


def test_abort_mid_exchange_is_aborted_and_login_still_possible(server):
    user, password, jid = server.new_account("abort")
    s = tls_stream(server)
    try:
        for _ in range(4):  # aborts do not count as failed attempts
            s.auth("SCRAM-SHA-256", ScramClient(user, password).first())
            assert s.sasl_next()[0] == "challenge"
            s.send("<abort xmlns='%s'/>" % NS_SASL)
            assert s.sasl_next() == ("failure", "aborted")
        assert s.scram_login(user, password) == ("success", None)
    finally:
        s.close()


def test_plain_before_tls_when_tls_required_is_encryption_required(server):
    user, password, jid = server.new_account("cleartext")
    s = RawStream(server.c2s_port)
    try:
        s.open()
        s.auth("PLAIN", b"\0" + user.encode() + b"\0" + password.encode())
        assert s.sasl_next() == ("failure", "encryption-required")
        # The stream goes on: STARTTLS and a login still work.
        s.starttls()
        s.auth("PLAIN", b"\0" + user.encode() + b"\0" + password.encode())
        assert s.sasl_next()[0] == "success"
    finally:
        s.close()


def test_plain_with_correct_password_over_tls_succeeds(server):
    user, password, jid = server.new_account("plain")
    s = tls_stream(server)
    try:
        s.auth("PLAIN", b"\0" + user.encode() + b"\0" + password.encode())
        kind, data = s.sasl_next()
        assert kind == "success", data
        s.restart()
        assert s.bind("p").startswith(jid + "/p")
    finally:
        s.close()


def test_plain_without_initial_response_gets_an_empty_challenge(server):
    user, password, jid = server.new_account("plainchal")
    s = tls_stream(server)
    try:
        s.auth("PLAIN", empty=True)
        assert s.sasl_next() == ("challenge", b"")
        s.response(b"\0" + user.encode() + b"\0" + password.encode())
        assert s.sasl_next()[0] == "success"
    finally:
        s.close()


def test_plain_with_authzid_of_someone_else_is_refused(server):
    user, password, jid = server.new_account("authzid")
    other, _, ojid = server.new_account("victim")
    s = tls_stream(server)
    try:
        s.auth("PLAIN", ojid.encode() + b"\0" + user.encode() + b"\0" + password.encode())
        kind, cond = s.sasl_next()
        assert kind == "failure" and cond in ("invalid-authzid", "not-authorized"), cond
    finally:
        s.close()
