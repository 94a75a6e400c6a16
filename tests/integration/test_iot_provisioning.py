"""XEP-0324 provisioning at provisioning.DOMAIN with the owner interface
(urn:nf:iot:prov:o:1.0): friendship decisions the server takes for a
provisioned thing, questions to the owner (also while the owner is
offline), rules only the owner may set, rule changes reaching the device
(clearCache, also after it was offline), things asking the service
themselves, getDevices and deleteRules, and rules surviving a restart."""
import asyncio
import hashlib
import secrets

import pytest

from harness import DOMAIN, NS_STREAM, RawStream, free_ports, tostr, start_spread
from iotutil import (NS_DISCOVERY, NS_PROV, NS_PROV_OWNER, NS_SENSORDATA, PROVISIONING, REGISTRY,
                     Clients, IqError, bare, claim, clients, control_set, device_events, el,
                     iq_error, next_message, next_question, owned_device, partial, q, range_el,
                     readout, send_iq, set_rule, wait_until)

assert clients  # the fixture, imported for pytest


async def subscribe_and_wait(c, to, want):
    """Sends a subscription request; returns the answer type (subscribed/unsubscribed)."""
    fut = asyncio.get_running_loop().create_future()

    def h(p):
        if p["from"].bare == to and p["type"] in ("subscribed", "unsubscribed") and not fut.done():
            fut.set_result(p["type"])
    c.add_event_handler("presence_subscribed", h)
    c.add_event_handler("presence_unsubscribed", h)
    try:
        c.send_presence(pto=to, ptype="subscribe")
        got = await asyncio.wait_for(fut, 10)
        assert got == want, "%s answered %s, expected %s" % (to, got, want)
    finally:
        c.del_event_handler("presence_subscribed", h)
        c.del_event_handler("presence_unsubscribed", h)


async def roster_sub(c, jid):
    await c.get_roster()
    return c.client_roster[jid]["subscription"] if jid in c.client_roster else None


def test_friendship_without_rule_is_refused_and_owner_asked(server, clients, arun):
    async def go():
        owner = await clients.client("owner")
        stranger = await clients.client("stranger")
        d = await owned_device(clients, owner)
        await subscribe_and_wait(stranger, bare(d), "unsubscribed")
        ask = await next_question(owner, "isFriend")
        assert ask.get("jid") == bare(d) and ask.get("remoteJid") == bare(stranger)
        # The request never reached the device: no trace in its roster.
        assert await roster_sub(d, bare(stranger)) is None
        assert await roster_sub(stranger, bare(d)) in (None, "none")
    arun(go())


def test_friendship_allowed_by_rule(server, clients, arun):
    async def go():
        owner = await clients.client("owner")
        friend = await clients.client("friend")
        d = await owned_device(clients, owner)
        before = d.clear_cache_count
        await set_rule(owner, "isFriendRule", d, True, remoteJid=bare(friend))
        # The rule change reaches the device (its cache of decisions is cleared).
        await wait_until(lambda: d.clear_cache_count > before, what="clearCache at the device")
        await wait_until(lambda: bool(device_events(d, "friend")), what="friend advice")
        assert device_events(d, "friend")[-1]["jid"] == bare(friend)
        await subscribe_and_wait(friend, bare(d), "subscribed")
        await wait_until(lambda: bool(friend.client_roster.presence(bare(d))),
                         what="the device's presence at the new friend")
        assert await roster_sub(friend, bare(d)) == "to"
        assert await roster_sub(d, bare(friend)) == "from"
    arun(go())


def test_friendship_ranges_domain_and_all(server, clients, arun):
    async def go():
        owner = await clients.client("owner")
        a = await clients.client("a")
        b = await clients.client("b")
        d = await owned_device(clients, owner)
        # Everyone of this domain may, but b may not: the JID rule is more specific.
        await set_rule(owner, "isFriendRule", d, True, remoteJid=bare(a), range="Domain")
        await set_rule(owner, "isFriendRule", d, False, remoteJid=bare(b))
        await subscribe_and_wait(a, bare(d), "subscribed")
        await subscribe_and_wait(b, bare(d), "unsubscribed")
        # A rule for everyone, refusing: a JID rule still wins for b... now allowing.
        d2 = await owned_device(clients, owner)
        await set_rule(owner, "isFriendRule", d2, False, range="All")
        await subscribe_and_wait(a, bare(d2), "unsubscribed")
        await set_rule(owner, "isFriendRule", d2, True, remoteJid=bare(b))
        await subscribe_and_wait(b, bare(d2), "subscribed")
    arun(go())


def test_only_the_owner_manages_rules(server, clients, arun):
    async def go():
        owner = await clients.client("owner")
        stranger = await clients.client("stranger")
        d = await owned_device(clients, owner)
        rule = el(NS_PROV_OWNER, "isFriendRule", {"jid": bare(d), "remoteJid": bare(stranger),
                                                  "result": "true"})
        assert await iq_error(stranger, PROVISIONING, "set", rule) == "forbidden"
        # Not a provisioned thing: item-not-found; a malformed rule: bad-request.
        unclaimed = await clients.device()
        rule.set("jid", bare(unclaimed))
        assert await iq_error(owner, PROVISIONING, "set", rule) == "item-not-found"
        bad = el(NS_PROV_OWNER, "canReadRule", {"jid": bare(d), "result": "maybe"},
                 [range_el("all")])
        assert await iq_error(owner, PROVISIONING, "set", bad) == "bad-request"
        assert await iq_error(stranger, PROVISIONING, "set", el(
            NS_PROV_OWNER, "clearCache", {"jid": bare(d)})) == "forbidden"
        # The stranger's attempt changed nothing.
        await subscribe_and_wait(stranger, bare(d), "unsubscribed")
    arun(go())


def test_questions_wait_for_an_offline_owner(server, clients, arun):
    async def go():
        owner = await clients.client("owner")
        stranger = await clients.client("stranger")
        d = await owned_device(clients, owner)
        user, password = owner.test_user, owner.test_password
        owner.disconnect()
        await asyncio.sleep(0.3)
        assert await iq_error(stranger, d.boundjid.full, "get", el(
            NS_SENSORDATA, "req", {"seqnr": "1", "momentary": "true"})) == "forbidden"
        # Back online: the question is there (offline storage).
        owner2 = await clients.client(user=user, password=password)
        ask = await next_question(owner2, "canRead")
        assert ask.get("remoteJid") == bare(stranger)
    arun(go())


def test_clear_cache_reaches_an_offline_device_later(server, clients, arun):
    async def go():
        owner = await clients.client("owner")
        reader = await clients.client("reader")
        d = await owned_device(clients, owner)
        user, password = d.test_user, d.test_password
        d.disconnect()
        await wait_until(lambda: not owner.client_roster.presence(bare(d)),
                         what="the device offline")
        await set_rule(owner, "canReadRule", d, True, [range_el("fromJid")],
                       remoteJid=bare(reader))
        d2 = await clients.device(user=user, password=password, resource="again")
        await wait_until(lambda: d2.clear_cache_count == 1, what="clearCache after login")
        # Delivered once: another login gets none.
        d2.disconnect()
        d3 = await clients.device(user=user, password=password, resource="third")
        await asyncio.sleep(0.3)
        assert d3.clear_cache_count == 0
        r = await readout(reader, d3.boundjid.full, 1, momentary=True)
        assert "Temperature" in r.fields
    arun(go())


def test_things_ask_the_service(server, clients, arun):
    async def go():
        owner = await clients.client("owner")
        reader = await clients.client("reader")
        stranger = await clients.client("stranger")
        d = await owned_device(clients, owner)
        await set_rule(owner, "canReadRule", d, True, [partial("read", "Temperature")],
                       remoteJid=bare(reader))

        async def ask(name, jid, children=(), **attrs):
            r = await send_iq(d, PROVISIONING, "get", el(NS_PROV, name, dict(jid=jid, **attrs),
                                                         children))
            return r.xml.find(q(NS_PROV, name + "Response"))
        r = await ask("isFriend", bare(owner))
        assert r.get("result") == "true" and r.get("jid") == bare(owner)
        r = await ask("isFriend", bare(stranger) + "/res")
        assert r.get("result") == "false" and r.get("jid") == bare(stranger)
        r = await ask("canRead", bare(reader), momentary="true")
        assert r.get("result") == "true" and r.get("momentary") == "true"
        assert [f.get("name") for f in r.findall(q(NS_PROV, "field"))] == ["Temperature"]
        r = await ask("canRead", bare(reader), [el(NS_PROV, "field", {"name": "Humidity"}),
                                                el(NS_PROV, "field", {"name": "Temperature"})])
        assert [f.get("name") for f in r.findall(q(NS_PROV, "field"))] == ["Temperature"]
        r = await ask("canControl", bare(reader), [el(NS_PROV, "parameter", {"name": "Relay"})])
        assert r.get("result") == "false"
        await set_rule(owner, "canControlRule", d, True, [partial("control", "Relay")],
                       remoteJid=bare(reader))
        r = await ask("canControl", bare(reader), [el(NS_PROV, "parameter", {"name": "Relay"}),
                                                   el(NS_PROV, "parameter",
                                                      {"name": "Setpoint"})])
        assert r.get("result") == "true"
        assert [p.get("name") for p in r.findall(q(NS_PROV, "parameter"))] == ["Relay"]
        r = await ask("canControl", bare(reader), [el(NS_PROV, "parameter",
                                                      {"name": "Setpoint"})])
        assert r.get("result") == "false"
        # A client that is not a provisioned thing learns nothing.
        r = await send_iq(stranger, PROVISIONING, "get", el(NS_PROV, "isFriend",
                                                           {"jid": bare(owner)}))
        assert r.xml.find(q(NS_PROV, "isFriendResponse")).get("result") == "false"
        assert await iq_error(d, PROVISIONING, "get", el(NS_PROV, "isFriend")) == "bad-request"
    arun(go())


def test_get_devices_and_delete_rules(server, clients, arun):
    async def go():
        owner = await clients.client("owner")
        reader = await clients.client("reader")
        d1 = await owned_device(clients, owner)
        d2 = await owned_device(clients, owner)
        r = await send_iq(owner, PROVISIONING, "get", el(NS_PROV_OWNER, "getDevices"))
        found = r.xml.find(q(NS_DISCOVERY, "found"))
        things = {t.get("jid"): t for t in found.findall(q(NS_DISCOVERY, "thing"))}
        assert set(things) == {bare(d1), bare(d2)}
        assert all(t.get("owner") == bare(owner) for t in things.values())
        assert not [x for x in things[bare(d1)] if x.get("name") == "KEY"]
        r = await send_iq(owner, PROVISIONING, "get", el(NS_PROV_OWNER, "getDevices",
                                                         {"maxCount": "1"}))
        assert r.xml.find(q(NS_DISCOVERY, "found")).get("more") == "true"
        # A rule, then all rules deleted: the reader is refused again.
        await set_rule(owner, "canReadRule", d1, True, [range_el("all")])
        r = await readout(reader, d1.boundjid.full, 1, momentary=True)
        assert "Temperature" in r.fields
        before = d1.clear_cache_count
        await send_iq(owner, PROVISIONING, "set", el(NS_PROV_OWNER, "deleteRules",
                                                     {"jid": bare(d1)}))
        await wait_until(lambda: d1.clear_cache_count > before, what="clearCache after delete")
        assert await iq_error(reader, d1.boundjid.full, "get", el(
            NS_SENSORDATA, "req", {"seqnr": "2", "momentary": "true"})) == "forbidden"
    arun(go())


def test_enrolled_owner_provisions_the_device(server, clients, arun, tmp_path):
    """A device enrolled with an owner (stanzactl device import, while the
    server runs) is provisioned for that owner from its first session."""
    async def go():
        owner = await clients.client("owner")
        stranger = await clients.client("stranger")
        user = "enr" + secrets.token_hex(4)
        secret = "s-" + secrets.token_hex(8)
        csv = tmp_path / "fleet.csv"
        csv.write_text("jid,credential,tags,owner\n%s@%s,%s,sensor,%s\n" %
                       (user, DOMAIN, secret, bare(owner)))
        mark = server.log_size()
        r = server.stanzactl("device", "import", str(csv))
        if r.returncode == 2 and "usage" in (r.stderr + r.stdout):
            pytest.skip("this stanzactl has no device import")
        assert r.returncode == 0, r.stdout + r.stderr
        d = await clients.device(user=user, password=secret)
        # The import told the server (else its first presence has it look in the store).
        await asyncio.get_running_loop().run_in_executor(
            None, server.wait_log, r"event=provisioning\.enrolled thing=%s" % bare(d), mark)
        assert await iq_error(stranger, d.boundjid.full, "get", el(
            NS_SENSORDATA, "req", {"seqnr": "1", "momentary": "true"})) == "forbidden"
        ask = await next_question(owner, "canRead")
        assert ask.get("jid") == bare(d)
        r = await readout(owner, d.boundjid.full, 2, momentary=True)
        assert "Temperature" in r.fields
    arun(go())


def test_enrollment_rules_before_the_first_login(server, clients, arun, tmp_path):
    """An import tells the running server: a device enrolled with an owner
    is provisioned before its first login (a control message a stranger
    queues for it offline is refused, not delivered when it comes), and
    one whose owner the next import takes away is released."""
    async def go():
        owner = await clients.client("owner")
        stranger = await clients.client("stranger")
        user = "enr" + secrets.token_hex(4)
        secret = "s-" + secrets.token_hex(8)
        jid = "%s@%s" % (user, DOMAIN)
        csv = tmp_path / "fleet.csv"
        csv.write_text("%s,%s,sensor,%s\n" % (jid, secret, bare(owner)))
        mark = server.log_size()
        r = server.stanzactl("device", "import", str(csv))
        assert r.returncode == 0 and not r.stderr, r.stdout + r.stderr
        await asyncio.get_running_loop().run_in_executor(
            None, server.wait_log, r"event=provisioning\.enrolled thing=%s" % jid, mark)
        m = stranger.make_message(mto=jid)
        m.append(control_set([("boolean", "Relay", "true")]))
        m.send()
        back = await next_message(stranger, lambda m: m["type"] == "error", what="an error")
        assert back["error"]["condition"] == "forbidden"
        d = await clients.device(user=user, password=secret)
        await asyncio.sleep(0.5)
        assert d.state["Relay"] is False and not device_events(d, "control")
        # Without an owner now: the device decides alone again.
        csv.write_text("%s,%s,sensor,\n" % (jid, secret))
        mark = server.log_size()
        r = server.stanzactl("device", "import", str(csv))
        assert r.returncode == 0 and not r.stderr, r.stdout + r.stderr
        await asyncio.get_running_loop().run_in_executor(
            None, server.wait_log, r"event=provisioning\.reenrolled thing=%s" % jid, mark)
        r = await readout(stranger, d.boundjid.full, 3, momentary=True)
        assert "Temperature" in r.fields
    arun(go())


def test_foreign_domain_jid_needs_a_rule(make_server, loop, arun):
    """Only the server's own services befriend a thing without a rule: a
    domain JID of another server or component (here an external component
    with a domain of its own) is refused, and the thing never sees it."""
    (cport,) = free_ports(1)
    srv = make_server("--listen-component", "127.0.0.1:%d" % cport,
                      "--component", "gw.test=s3cret")
    cs = Clients(srv, loop)

    async def go():
        owner = await cs.client("owner")
        d = await owned_device(cs, owner)
        comp = RawStream(cport)
        try:
            comp.send("<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
                      "xmlns:stream='%s' to='gw.test'>" % NS_STREAM)
            comp.read_header()
            sid = comp.header.get("id")
            comp.send("<handshake>%s</handshake>" %
                      hashlib.sha1((sid + "s3cret").encode()).hexdigest())
            assert comp.next().tag.endswith("handshake")
            comp.send("<presence from='gw.test' to='%s' type='subscribe'/>" % bare(d))
            got = comp.next()
            assert got.get("type") == "unsubscribed" and got.get("from") == bare(d), tostr(got)
        finally:
            comp.close()
        await cs.close()
    arun(go())


def self_signed_der():
    """A new RSA key and a self-signed certificate for it (DER)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    import datetime
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "service")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.DER)


async def get_token(c, key, der):
    """XEP-0324 getToken: the challenge decrypted with the private key earns the token."""
    import base64
    from cryptography.hazmat.primitives.asymmetric import padding
    ask = el(NS_PROV, "getToken")
    ask.text = base64.b64encode(der).decode()
    r = await send_iq(c, PROVISIONING, "get", ask)
    ch = r.xml.find(q(NS_PROV, "getTokenChallenge"))
    secret = key.decrypt(base64.b64decode(ch.text), padding.PKCS1v15())
    ans = el(NS_PROV, "getTokenChallengeResponse", {"seqnr": ch.get("seqnr")})
    ans.text = base64.b64encode(secret).decode()
    r = await send_iq(c, PROVISIONING, "get", ans)
    return r.xml.find(q(NS_PROV, "getTokenResponse")).get("token")


def test_token_rules_need_a_proven_token(server, clients, arun):
    """A rule for a token lets in the JID that proved the token (getToken,
    with the certificate's private key), not a stranger who writes the
    same token into its request; a wrong answer to a challenge earns
    nothing."""
    pytest.importorskip("cryptography")

    async def go():
        owner = await clients.client("owner")
        holder = await clients.client("holder")
        stranger = await clients.client("stranger")
        d = await owned_device(clients, owner)
        key, der = self_signed_der()
        token = await get_token(holder, key, der)
        assert token and " " not in token
        await set_rule(owner, "canReadRule", d, True, [range_el("fromUser", token=token)])

        def req(seqnr):
            return el(NS_SENSORDATA, "req", {"seqnr": seqnr, "momentary": "true",
                                             "userToken": token})
        assert await iq_error(stranger, d.boundjid.full, "get", req("1")) == "forbidden"
        r = await send_iq(holder, d.boundjid.full, "get", req("2"))
        assert r["type"] == "result"
        # The stranger cannot get the token without the key.
        import base64
        ask = el(NS_PROV, "getToken")
        ask.text = base64.b64encode(der).decode()
        ch = (await send_iq(stranger, PROVISIONING, "get", ask)).xml.find(
            q(NS_PROV, "getTokenChallenge"))
        ans = el(NS_PROV, "getTokenChallengeResponse", {"seqnr": ch.get("seqnr")})
        ans.text = base64.b64encode(b"\0" * 32).decode()
        assert await iq_error(stranger, PROVISIONING, "get", ans) == "bad-request"
        assert await iq_error(stranger, d.boundjid.full, "get", req("3")) == "forbidden"
    arun(go())


def test_rules_persist_across_restart(make_server, loop, arun):
    srv = make_server()
    cs = Clients(srv, loop)
    st = {}

    async def before():
        owner = await cs.client("owner")
        reader = await cs.client("reader")
        friend = await cs.client("friend")
        d = await owned_device(cs, owner)
        await set_rule(owner, "canReadRule", d, True, [partial("read", "Humidity")],
                       remoteJid=bare(reader))
        await set_rule(owner, "isFriendRule", d, True, remoteJid=bare(friend))
        for name, c in (("owner", owner), ("reader", reader), ("friend", friend), ("dev", d)):
            st[name] = (c.test_user, c.test_password)
        await cs.close()
    arun(before())
    srv.signal()
    assert srv.wait(10) == 0
    srv.start()
    cs2 = Clients(srv, loop)

    async def after():
        reader = await cs2.client(user=st["reader"][0], password=st["reader"][1])
        friend = await cs2.client(user=st["friend"][0], password=st["friend"][1])
        stranger = await cs2.client("stranger")
        d = await cs2.device(user=st["dev"][0], password=st["dev"][1])
        r = await readout(reader, d.boundjid.full, 1, momentary=True)
        assert set(r.fields) == {"Humidity"}
        assert await iq_error(stranger, d.boundjid.full, "get", el(
            NS_SENSORDATA, "req", {"seqnr": "2", "momentary": "true"})) == "forbidden"
        await subscribe_and_wait(friend, bare(d), "subscribed")
        await subscribe_and_wait(stranger, bare(d), "unsubscribed")
    try:
        arun(after())
    finally:
        loop.run_until_complete(cs2.close())


@pytest.fixture(scope="module")
def spread_server():
    """Two workers, accounts at home by hash (whatever STANZAD_TEST_ARGS
    says): a thing and the parties around it can be placed on different
    workers, away from the services on worker 0."""
    s = start_spread()
    yield s
    s.stop()


@pytest.fixture
def spread(spread_server, loop):
    cs = Clients(spread_server, loop)
    yield cs
    try:
        loop.run_until_complete(asyncio.wait_for(cs.close(), 10))
    except Exception:
        pass


async def placed(cs, kind, prefix, home, **kw):
    """A client or device whose account is at home on worker `home`."""
    user, password, _ = cs.server.new_account(prefix, home=home, workers=2)
    if kind == "device":
        return await cs.device(user=user, password=password, **kw)
    return await cs.client(user=user, password=password)


async def register_and_claim(owner, dev):
    """dev registers (its answer is not waited for: a claim finds the
    registration once stored), then owner claims it."""
    import time
    import xml.etree.ElementTree as ET
    iq = dev.make_iq_set(ito=dev.registry_jid())
    dev.tag_elements(ET.SubElement(iq.xml, q(NS_DISCOVERY, "register")))
    dev.send(iq)
    deadline = time.monotonic() + 10
    while True:
        try:
            return await claim(owner, dev)
        except IqError as e:
            if e.iq["error"]["condition"] != "item-not-found" or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def test_thing_at_home_on_another_worker_than_its_owner(spread_server, spread, arun):
    """The thing on worker 1, its owner and a reader on worker 0 (with the
    services): the claim reaches the thing's sessions and makes them
    friends, the owner's rules (set at the service) decide at the thing's
    home, sensor data is narrowed there, a thing's own question to the
    service is decided with its rules, a token proven at the service
    counts there, and a disown asks the thing."""
    from harness import home_of
    pytest.importorskip("cryptography")

    async def go():
        owner = await placed(spread, "client", "owner", 0)
        reader = await placed(spread, "client", "reader", 0)
        d = await placed(spread, "device", "dev", 1)
        sloppy = await placed(spread, "device", "sloppy", 1, honour_hints=False)
        assert home_of(bare(d), 2) == 1 and home_of(bare(owner), 2) == 0
        for dev in (d, sloppy):
            await register_and_claim(owner, dev)  # the device on worker 1 is told of its claim
        # The claim befriended both sides, each in its own home's roster.
        assert await roster_sub(owner, bare(d)) == "both"
        assert await roster_sub(d, bare(owner)) == "both"
        # No rule yet: refused at the thing's home, the owner asked.
        req = el(NS_SENSORDATA, "req", {"seqnr": "1", "momentary": "true"})
        assert await iq_error(reader, d.boundjid.full, "get", req) == "forbidden"
        ask = await next_question(owner, "canRead")
        assert ask.get("jid") == bare(d) and ask.get("remoteJid") == bare(reader)
        # The owner's rule, stored by the service, is what the thing's home applies.
        before = d.clear_cache_count
        for dev in (d, sloppy):
            await set_rule(owner, "canReadRule", dev, True, [partial("read", "Temperature")],
                           remoteJid=bare(reader))
        await wait_until(lambda: d.clear_cache_count > before, what="clearCache at the device")
        r = await readout(reader, d.boundjid.full, 2, momentary=True, status=True)
        assert set(r.fields) == {"Temperature"}, r.fields
        # A device that ignores the hint: its answer is filtered where it is at home.
        r = await readout(reader, sloppy.boundjid.full, 3, momentary=True, status=True)
        assert set(r.fields) == {"Temperature"}, r.fields
        # To the bare JID: answered from the bare JID.
        r = await readout(reader, bare(d), 4, momentary=True)
        assert str(r.result_from) == bare(d) and set(r.fields) == {"Temperature"}
        # The thing asks the service: decided with the rules at its home.
        res = await send_iq(d, PROVISIONING, "get", el(NS_PROV, "canRead", {
            "jid": bare(reader)}, [el(NS_PROV, "field", {"name": "Humidity"})]))
        assert res.xml.find(q(NS_PROV, "canReadResponse")).get("result") == "false"
        # The rules go again: refused again.
        await send_iq(owner, PROVISIONING, "set", el(NS_PROV_OWNER, "deleteRules",
                                                     {"jid": bare(d)}))
        assert await iq_error(reader, d.boundjid.full, "get", el(
            NS_SENSORDATA, "req", {"seqnr": "5", "momentary": "true"})) == "forbidden"
        # A token proven at the service (worker 0) counts at the thing's home.
        key, der = self_signed_der()
        token = await get_token(reader, key, der)
        await set_rule(owner, "canReadRule", d, True, [range_el("fromUser", token=token)])
        r = await send_iq(reader, d.boundjid.full, "get", el(NS_SENSORDATA, "req", {
            "seqnr": "6", "momentary": "true", "userToken": token}))
        assert r["type"] == "result"
        # Disowning asks the thing's session on worker 1; then it decides alone.
        await send_iq(owner, REGISTRY, "set", el(NS_DISCOVERY, "disown", {"jid": bare(d)}))
        await wait_until(lambda: bool(device_events(d, "disowned")), what="disown asked")
        r = await readout(reader, d.boundjid.full, 7, momentary=True)
        assert "Temperature" in r.fields
    arun(go())
