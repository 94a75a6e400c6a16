"""SASL outcomes (RFC 6120 section 6, RFC 5802, RFC 7677)."""
import base64

import pytest

from harness import (NS_SASL, RawStream, ClientFailed, ScramClient, connect_and_wait,
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


# ---- preparation of names and passwords (RFC 4013, RFC 5802 section 5.1, RFC 6122 nodeprep) ----

def test_passwords_are_saslprepped_for_plain_and_scram(server):
    # U+00AD (soft hyphen) maps to nothing; U+2163 (ROMAN NUMERAL FOUR) is NFKC "IV".
    raw_pw = "pass\u00adword\u2163"
    prepared = "passwordIV"
    user, _, jid = server.new_account("prep", password=raw_pw)
    for pw in (raw_pw, prepared):
        s = tls_stream(server)
        try:
            s.auth("PLAIN", b"\0" + user.encode() + b"\0" + pw.encode("utf-8"))
            assert s.sasl_next()[0] == "success", "PLAIN with %r" % pw
        finally:
            s.close()
    # SCRAM: the client normalizes (RFC 5802 5.1), the server stored keys of
    # the prepared password.
    s = tls_stream(server)
    try:
        assert s.scram_login(user, prepared) == ("success", None)
    finally:
        s.close()


def test_username_is_case_insensitive_and_bound_jid_is_prepared(server):
    user, password, jid = server.new_account("casey")
    for mech in ("SCRAM-SHA-256", "PLAIN"):
        s = tls_stream(server)
        try:
            if mech == "PLAIN":
                s.auth("PLAIN", b"\0" + user.upper().encode() + b"\0" + password.encode())
                assert s.sasl_next()[0] == "success"
            else:
                assert s.scram_login(user.upper(), password) == ("success", None)
            s.restart()
            assert s.bind("r").startswith(jid + "/"), s.jid
        finally:
            s.close()


def test_scram_username_with_comma_and_equals_uses_saslname_escapes(server):
    user = uniq("we=ird,") + "x"
    password = "pw-escapes"
    server.add_user(user, password)
    s = tls_stream(server)
    try:
        assert s.scram_login(user, password) == ("success", None)
        s.restart()
        assert s.bind("e").startswith(user + "@")
    finally:
        s.close()


# ---- malformed SCRAM messages ----

def test_scram_syntax_errors_are_malformed_request(server):
    user, password, jid = server.new_account("synt")
    for first in (b"x,,n=%s,r=abcdef" % user.encode(),   # bad gs2 flag
                  b"n,,r=abcdef",                          # no username
                  b"n,,n=%s" % user.encode(),              # no nonce
                  b"garbage"):
        s = tls_stream(server)
        try:
            s.auth("SCRAM-SHA-256", first)
            kind, cond = s.sasl_next()
            assert kind == "failure" and cond in ("malformed-request", "not-authorized"), \
                (first, kind, cond)
        finally:
            s.close()


def test_scram_final_with_foreign_nonce_or_bad_proof_fails(server):
    user, password, jid = server.new_account("nonce")
    # A nonce the server did not send.
    s = tls_stream(server)
    try:
        sc = ScramClient(user, password)
        s.auth("SCRAM-SHA-256", sc.first())
        kind, first = s.sasl_next()
        assert kind == "challenge"
        final = sc.final(first)
        attrs = scram_attrs(first)
        s.response(final.replace(attrs["r"].encode(), attrs["r"].encode() + b"X"))
        kind, cond = s.sasl_next()
        assert kind == "failure" and cond in ("not-authorized", "malformed-request"), cond
    finally:
        s.close()
    # A proof of the right length but wrong.
    s = tls_stream(server)
    try:
        sc = ScramClient(user, password)
        s.auth("SCRAM-SHA-256", sc.first())
        kind, first = s.sasl_next()
        final = sc.final(first)
        head, _, proof = final.rpartition(b",p=")
        bad = bytearray(base64.b64decode(proof))
        bad[0] ^= 1
        s.response(head + b",p=" + base64.b64encode(bytes(bad)))
        assert s.sasl_next() == ("failure", "not-authorized")
    finally:
        s.close()
