"""XEP-0215 external service discovery for calls: the STUN/TURN service of
turn_host/turn_port, TURN credentials in coturn's use-auth-secret scheme
(username 'expiry:localpart', password base64(HMAC-SHA1(secret, username)),
valid turn_credential_lifetime seconds), the type filter, <credentials/>
for a named service and its failures, nothing without configuration, STUN
only without a secret, and the secret never in the log. When Debian's
coturn is installed, a TURN allocation with the handed-out credentials
succeeds on a loopback coturn sharing the secret, and fails once they
have expired (or when the password does not match)."""
import asyncio
import base64
import calendar
import hashlib
import hmac
import os
import shutil
import subprocess
import time

import pytest

from harness import DOMAIN, NS_CLIENT, NS_DISCO_INFO, connect_and_wait, free_ports, q, tostr
from imutil import Client, error_condition

NS_EXTDISCO = "urn:xmpp:extdisco:2"
SECRET = "very-secret-turn-key"


def services(c, type_=None):
    r = c.iq("get", "<services xmlns='%s'%s/>" % (NS_EXTDISCO, " type='%s'" % type_ if type_ else ""),
             to=DOMAIN)
    assert r.get("type") == "result", tostr(r)
    return r.find(q(NS_EXTDISCO, "services")).findall(q(NS_EXTDISCO, "service"))


def check_turn(svc, user, lifetime, secret=SECRET):
    """The credentials of a TURN <service/> follow coturn's scheme."""
    name, pw = svc.get("username"), svc.get("password")
    ts, local = name.split(":", 1)
    assert local == user
    want = base64.b64encode(hmac.new(secret.encode(), name.encode(), hashlib.sha1).digest())
    assert pw == want.decode()
    assert abs(int(ts) - (time.time() + lifetime)) < 30
    stamp = calendar.timegm(time.strptime(svc.get("expires"), "%Y-%m-%dT%H:%M:%SZ"))
    assert stamp == int(ts)
    assert svc.get("restricted") in ("1", "true")
    return name, pw


def test_nothing_configured_gives_an_empty_list(server):
    u, p, _ = server.new_account("turn")
    c = Client(server, u, p)
    try:
        r = c.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=DOMAIN)
        assert NS_EXTDISCO in [f.get("var") for f in r.iter(q(NS_DISCO_INFO, "feature"))]
        assert services(c) == []
        r = c.iq("get", "<credentials xmlns='%s'><service host='turn.example' type='turn'/>"
                 "</credentials>" % NS_EXTDISCO, to=DOMAIN)
        assert error_condition(r) == ("cancel", "item-not-found")
    finally:
        c.close()


def test_stun_and_turn_with_time_limited_credentials(make_server):
    srv = make_server("--turn-host", "turn.example.org", "--turn-port", "3479",
                      "--turn-secret", SECRET, "--turn-credential-lifetime", "600")
    u, p, _ = srv.new_account("turn")
    c = Client(srv, u, p)
    try:
        got = services(c)
        kinds = sorted((s.get("type"), s.get("transport")) for s in got)
        assert kinds == [("stun", "udp"), ("turn", "tcp"), ("turn", "udp")]
        for s in got:
            assert s.get("host") == "turn.example.org" and s.get("port") == "3479"
            if s.get("type") == "stun":
                assert s.get("username") is None and s.get("password") is None
            else:
                check_turn(s, u, 600)
        assert [s.get("type") for s in services(c, "stun")] == ["stun"]
        assert {s.get("type") for s in services(c, "turn")} == {"turn"}
        assert services(c, "turns") == []
        # Fresh credentials for the named service.
        r = c.iq("get", "<credentials xmlns='%s'><service host='turn.example.org' type='turn'/>"
                 "</credentials>" % NS_EXTDISCO, to=DOMAIN)
        assert r.get("type") == "result", tostr(r)
        check_turn(r.find(q(NS_EXTDISCO, "credentials")).find(q(NS_EXTDISCO, "service")), u, 600)
        for bad, cond in (("<service host='other.example' type='turn'/>", "item-not-found"),
                          ("<service host='turn.example.org' type='stun'/>", "item-not-found"),
                          ("<service host='turn.example.org' port='1'/>", "item-not-found"),
                          ("", "bad-request")):
            r = c.iq("get", "<credentials xmlns='%s'>%s</credentials>" % (NS_EXTDISCO, bad),
                     to=DOMAIN)
            assert error_condition(r)[1] == cond, bad
        # The services are the server's, not an account's.
        r = c.iq("get", "<services xmlns='%s'/>" % NS_EXTDISCO)
        assert r.get("type") == "error"
        assert SECRET not in srv.log_text()
    finally:
        c.close()


def test_without_a_secret_only_stun(make_server):
    srv = make_server("--turn-host", "stun.example.org")
    u, p, _ = srv.new_account("turn")
    c = Client(srv, u, p)
    try:
        got = services(c)
        assert [(s.get("type"), s.get("port")) for s in got] == [("stun", "3478")]
    finally:
        c.close()


def test_slixmpp_gets_turn_credentials(make_server, xmpp, arun):
    from slixmpp.xmlstream import ET
    srv = make_server("--turn-host", "127.0.0.1", "--turn-secret", SECRET)
    u, p, jid = srv.new_account("turn")
    cl = xmpp(jid + "/call", p, srv.c2s_port, plugins=["xep_0030"])
    out = {}

    async def scenario():
        await connect_and_wait(cl)
        iq = cl.make_iq_get(ito=DOMAIN)
        iq.append(ET.Element("{%s}services" % NS_EXTDISCO, {"type": "turn"}))
        res = await iq.send(timeout=10)
        out["svc"] = res.xml.find(q(NS_EXTDISCO, "services")).findall(q(NS_EXTDISCO, "service"))
    arun(scenario(), timeout=30)
    assert len(out["svc"]) == 2
    check_turn(out["svc"][0], u, 86400)


# ---- against a real TURN server (Debian's coturn) ----

def turn_allocate(port, user, password):
    """Runs one TURN allocation with coturn's test client; True on success."""
    r = subprocess.run(["turnutils_uclient", "-y", "-n", "1", "-m", "1", "-l", "100",
                        "-u", user, "-w", password, "-p", str(port), "127.0.0.1"],
                       capture_output=True, text=True, timeout=30)
    text = r.stdout + r.stderr
    return r.returncode == 0 and "Cannot complete Allocation" not in text and \
        "tot_recv_msgs=" in text, text


@pytest.mark.skipif(not (shutil.which("turnserver") and shutil.which("turnutils_uclient")),
                    reason="coturn is not installed (scripts/install-deps.sh installs it)")
def test_coturn_accepts_fresh_and_refuses_expired_credentials(make_server, tmp_path):
    port, = free_ports(1)
    turn = subprocess.Popen(["turnserver", "-n", "--listening-ip", "127.0.0.1",
                             "--relay-ip", "127.0.0.1", "--listening-port", str(port),
                             "--use-auth-secret", "--static-auth-secret", SECRET,
                             "--realm", DOMAIN, "--allow-loopback-peers", "--no-tls", "--no-dtls",
                             "--no-cli", "--log-file", "stdout", "--pidfile",
                             str(tmp_path / "turn.pid"), "--userdb", str(tmp_path / "turn.db")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        assert turn.poll() is None, "turnserver did not start"
        srv = make_server("--turn-host", "127.0.0.1", "--turn-port", str(port),
                          "--turn-secret", SECRET, "--turn-credential-lifetime", "6")
        u, p, _ = srv.new_account("turn")
        c = Client(srv, u, p)
        try:
            svc = [s for s in services(c, "turn") if s.get("transport") == "udp"][0]
            name, pw = check_turn(svc, u, 6)
        finally:
            c.close()
        okay, text = turn_allocate(port, name, pw)
        assert okay, text
        # Once the expiry in the username has passed, coturn refuses them.
        time.sleep(max(0.0, int(name.split(":")[0]) + 1.5 - time.time()))
        okay, text = turn_allocate(port, name, pw)
        assert not okay and "Cannot complete Allocation" in text, text
        # A forged password is refused too (the secret matters).
        okay, text = turn_allocate(port, "%d:%s" % (time.time() + 60, u), pw)
        assert not okay, text
    finally:
        turn.terminate()
        try:
            turn.wait(5)
        except subprocess.TimeoutExpired:
            turn.kill()
