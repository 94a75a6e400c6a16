"""XEP-0324 provisioning at provisioning.DOMAIN with the owner interface
(urn:nf:iot:prov:o:1.0): friendship decisions the server takes for a
provisioned thing, questions to the owner (also while the owner is
offline), rules only the owner may set, rule changes reaching the device
(clearCache, also after it was offline), things asking the service
themselves, getDevices and deleteRules, and rules surviving a restart."""
import asyncio
import secrets

import pytest

from harness import DOMAIN
from iotutil import (NS_DISCOVERY, NS_PROV, NS_PROV_OWNER, NS_SENSORDATA, PROVISIONING, Clients,
                     bare, clients, device_events, el, iq_error, next_question,
                     owned_device, partial, q, range_el, readout, send_iq, set_rule, wait_until)

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
        r = server.stanzactl("device", "import", str(csv))
        if r.returncode == 2 and "usage" in (r.stderr + r.stdout):
            pytest.skip("this stanzactl has no device import")
        assert r.returncode == 0, r.stdout + r.stderr
        mark = server.log_size()
        d = await clients.device(user=user, password=secret)
        # Its first presence has the server look its owner up in the store.
        await asyncio.get_running_loop().run_in_executor(
            None, server.wait_log, r"event=provisioning\.enrolled thing=%s" % bare(d), mark)
        assert await iq_error(stranger, d.boundjid.full, "get", el(
            NS_SENSORDATA, "req", {"seqnr": "1", "momentary": "true"})) == "forbidden"
        ask = await next_question(owner, "canRead")
        assert ask.get("jid") == bare(d)
        r = await readout(owner, d.boundjid.full, 2, momentary=True)
        assert "Temperature" in r.fields
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
