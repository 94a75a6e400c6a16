"""XEP-0347 thing registry at registry.DOMAIN, driven by slixmpp clients and
the device simulator (scripts/iot_device_sim.py): discovery, registration,
claims (exact meta data, friendship both ways, the thing told), search with
every operator and paging, public/private things, the KEY tag, update,
remove, unregister, disown (online and offline), and persistence across a
restart."""
import secrets

from harness import DOMAIN
from iotutil import (NS_DISCO_INFO, NS_DISCOVERY, PROVISIONING, REGISTRY, Clients, bare,
                     claim, clients, el, iq_error, mine_payload, owned_device, q, register,
                     search, send_iq, wait_until)

assert clients  # the fixture, imported for pytest


def disco_features(r):
    return {f.get("var") for f in r.xml.iter(q(NS_DISCO_INFO, "feature"))}


def tag(name, value, numeric=False):
    return el(NS_DISCOVERY, "num" if numeric else "str", {"name": name, "value": value})


async def roster_sub(c, jid):
    """The subscription of jid in c's roster, as the server has it now (a roster
    get: a versioned one may come back empty with pushes instead)."""
    await c.get_roster()
    if jid not in c.client_roster:
        return None
    return c.client_roster[jid]["subscription"]


def test_services_are_discoverable(server, clients, arun):
    async def go():
        c = await clients.client()
        items = await send_iq(c, DOMAIN, "get", el("http://jabber.org/protocol/disco#items",
                                                    "query"))
        jids = {i.get("jid") for i in items.xml.iter(
            "{http://jabber.org/protocol/disco#items}item")}
        assert REGISTRY in jids and PROVISIONING in jids
        info = await send_iq(c, REGISTRY, "get", el(NS_DISCO_INFO, "query"))
        assert NS_DISCOVERY in disco_features(info)
        info = await send_iq(c, PROVISIONING, "get", el(NS_DISCO_INFO, "query"))
        feats = disco_features(info)
        for ns in ("urn:xmpp:iot:provisioning", "urn:xmpp:iot:sensordata",
                   "urn:xmpp:iot:control"):
            assert ns in feats, feats
        # A device advertises what it supports itself (XEP-0323/0325 "Determining Support").
        d = await clients.device()
        info = await send_iq(c, d.boundjid.full, "get", el(NS_DISCO_INFO, "query"))
        feats = disco_features(info)
        assert "urn:xmpp:iot:sensordata" in feats and "urn:xmpp:iot:control" in feats
    arun(go())


def test_claim_makes_owner_and_thing_friends(server, clients, arun):
    async def go():
        owner = await clients.client("owner")
        d = await clients.device()
        assert await register(d) is None
        claimed = await claim(owner, d)
        assert claimed.get("jid") == bare(d)
        ev = [det for k, det in d.events if k == "claimed"]
        assert ev and ev[0]["owner"] == bare(owner) and ev[0]["public"] == "true"
        # Server-made friendship: 'both' in each roster.
        assert await roster_sub(owner, bare(d)) == "both"
        assert await roster_sub(d, bare(owner)) == "both"
        # The owner sees the device online.
        await wait_until(lambda: bool(owner.client_roster.presence(bare(d))),
                         what="the device's presence at the owner")
        # A claimed thing registering again is told who owns it; nothing changes.
        assert await register(d) == bare(owner)
        # Claiming twice is fine for the same owner, not for anyone else.
        await claim(owner, d)
        other = await clients.client("other")
        assert await iq_error(other, REGISTRY, "set", mine_payload(d)) == "item-not-found"
    arun(go())


def test_claim_needs_exactly_the_meta_data(server, clients, arun):
    async def go():
        owner = await clients.client("owner")
        d = await clients.device()
        await register(d)
        tags = dict(d.tags)
        wrong_key = dict(tags, KEY=(False, "0" * 32))
        fewer = {k: v for k, v in tags.items() if k != "MODEL"}
        more = dict(tags, ROOM=(False, "kitchen"))
        for bad in (wrong_key, fewer, more):
            assert await iq_error(owner, REGISTRY, "set",
                                  mine_payload(d, tags=bad)) == "item-not-found"
        # Names in any case, tags in any order, numbers in any spelling: the same thing.
        relaxed = {k.lower(): v for k, v in reversed(list(tags.items()))}
        relaxed["v"] = (True, "1.20")
        r = await send_iq(owner, REGISTRY, "set", mine_payload(d, tags=relaxed))
        assert r.xml.find(q(NS_DISCOVERY, "claimed")).get("jid") == bare(d)
        # Malformed tags are bad requests, not silent mismatches.
        m = el(NS_DISCOVERY, "mine", children=[tag("A:B", "x")])
        assert await iq_error(owner, REGISTRY, "set", m) == "bad-request"
        m = el(NS_DISCOVERY, "mine", children=[tag("V", "one", numeric=True)])
        assert await iq_error(owner, REGISTRY, "set", m) == "bad-request"
    arun(go())


def test_enrolled_owner_cannot_be_claimed_away(server, clients, arun, tmp_path):
    """A device enrolled with an owner (stanzactl device import) is that
    owner's: registering it answers with the owner and leaves nothing to
    claim, and one registered before its enrollment named the owner can
    be claimed by that owner only, not by whoever reads its KEY."""
    async def go():
        owner = await clients.client("owner")
        thief = await clients.client("thief")
        early, late = ["enr" + secrets.token_hex(4) for _ in range(2)]
        csv = tmp_path / "fleet.csv"
        csv.write_text("%s@%s,pw-%s,,\n%s@%s,pw-%s,,%s\n" %
                       (early, DOMAIN, early, late, DOMAIN, late, bare(owner)))
        r = server.stanzactl("device", "import", str(csv))
        assert r.returncode == 0, r.stdout + r.stderr
        e = await clients.device(user=early, password="pw-" + early)
        assert await register(e) is None
        csv.write_text("%s@%s,pw-%s,,%s\n" % (early, DOMAIN, early, bare(owner)))
        r = server.stanzactl("device", "import", str(csv))
        assert r.returncode == 0, r.stdout + r.stderr
        assert await iq_error(thief, REGISTRY, "set", mine_payload(e)) == "item-not-found"
        await claim(owner, e)
        d = await clients.device(user=late, password="pw-" + late)
        assert await register(d) == bare(owner)
        assert await iq_error(thief, REGISTRY, "set", mine_payload(d)) == "item-not-found"
    arun(go())


def test_search_operators_public_private_and_key(server, clients, arun):
    model = "M" + secrets.token_hex(4)

    async def go():
        owner = await clients.client("owner")
        devs = []
        for i, (version, city) in enumerate(((1.2, "Lund"), (2.5, "Malmo"), (3.0, "Lund"))):
            d = await clients.device(tags={
                "SN": (False, "39487%04d" % i), "MODEL": (False, model),
                "V": (True, str(version)), "CITY": (False, city), "KEY": (False, "k%d%s" % (i, model))})
            await register(d)
            devs.append(d)
        # Before any claim nothing is found.
        found, more = await search(owner, [el(NS_DISCOVERY, "strEq", {"name": "MODEL", "value": model})])
        assert found == [] and not more
        await claim(owner, devs[0])
        await claim(owner, devs[1])
        await send_iq(owner, REGISTRY, "set", mine_payload(devs[2], public=False))
        await wait_until(lambda: devs[2].owner == bare(owner))
        ev = [det for k, det in devs[2].events if k == "claimed"]
        assert ev[-1]["public"] == "false"

        def ops(*xs):
            return [el(NS_DISCOVERY, n, a) for n, a in xs]
        base = ("strEq", {"name": "MODEL", "value": model})
        found, _ = await search(owner, ops(base))
        assert sorted(j for j, _, _ in found) == sorted([bare(devs[0]), bare(devs[1])])
        for jid, own, tags in found:
            assert own == bare(owner)
            assert "KEY" not in tags, tags          # never shown
            assert tags["MODEL"] == model
        found, _ = await search(owner, ops(base, ("numRange", {"name": "V", "min": "1",
                                                                "max": "2",
                                                                "maxIncluded": "false"})))
        assert [j for j, _, _ in found] == [bare(devs[0])]
        found, _ = await search(owner, ops(base, ("strMask", {"name": "SN", "value": "39487*1",
                                                               "wildcard": "*"})))
        assert [j for j, _, _ in found] == [bare(devs[1])]
        found, _ = await search(owner, ops(base, ("strNEq", {"name": "CITY", "value": "Lund"})))
        assert [j for j, _, _ in found] == [bare(devs[1])]
        found, _ = await search(owner, ops(base, ("numGt", {"name": "V", "value": "2"})))
        assert [j for j, _, _ in found] == [bare(devs[1])]
        # stanzad's grouping: or / not.
        found, _ = await search(owner, [el(NS_DISCOVERY, "strEq", {"name": "MODEL", "value": model}),
                                        el(NS_DISCOVERY, "not", children=ops(
                                            ("numLt", {"name": "V", "value": "2"})))])
        assert [j for j, _, _ in found] == [bare(devs[1])]
        # KEY is never searched, not even with the right value.
        found, _ = await search(owner, ops(base, ("strEq", {"name": "KEY", "value": "k0" + model})))
        assert found == []
        # Paging.
        found, more = await search(owner, ops(base), offset=0, max_count=1)
        assert len(found) == 1 and more
        found2, more = await search(owner, ops(base), offset=1, max_count=1)
        assert len(found2) == 1 and not more and found2[0][0] != found[0][0]
        # Bad searches.
        assert await iq_error(owner, REGISTRY, "get", el(NS_DISCOVERY, "search")) == "bad-request"
        assert await iq_error(owner, REGISTRY, "get", el(NS_DISCOVERY, "search", children=ops(
            ("numEq", {"name": "V", "value": "x"})))) == "bad-request"
    arun(go())


def test_update_by_thing_and_by_owner(server, clients, arun):
    async def go():
        owner = await clients.client("owner")
        stranger = await clients.client("stranger")
        d = await owned_device(clients, owner)
        mark = str(id(d))
        await send_iq(d, REGISTRY, "set", el(NS_DISCOVERY, "update", children=[
            tag("ROOM", "r" + mark), tag("KEY", "")]))
        found, _ = await search(stranger, [el(NS_DISCOVERY, "strEq", {"name": "ROOM",
                                                                    "value": "r" + mark})])
        assert [j for j, _, _ in found] == [bare(d)]
        await send_iq(owner, REGISTRY, "set", el(NS_DISCOVERY, "update", {"jid": bare(d)},
                                                 [tag("APT", "a" + mark)]))
        found, _ = await search(stranger, [el(NS_DISCOVERY, "strEq", {"name": "APT",
                                                                    "value": "a" + mark})])
        assert found and found[0][2]["ROOM"] == "r" + mark
        # An empty string value removes a tag.
        await send_iq(d, REGISTRY, "set", el(NS_DISCOVERY, "update", children=[tag("ROOM", "")]))
        found, _ = await search(stranger, [el(NS_DISCOVERY, "strEq", {"name": "APT",
                                                                    "value": "a" + mark})])
        assert "ROOM" not in found[0][2]
        # Someone else's thing, or none: item-not-found.
        assert await iq_error(stranger, REGISTRY, "set", el(
            NS_DISCOVERY, "update", {"jid": bare(d)}, [tag("APT", "x")])) == "item-not-found"
        assert await iq_error(stranger, REGISTRY, "set", el(
            NS_DISCOVERY, "update", children=[tag("APT", "x")])) == "item-not-found"
        # An unclaimed thing is told it is disowned.
        fresh = await clients.device()
        await register(fresh)
        r = await send_iq(fresh, REGISTRY, "set", el(NS_DISCOVERY, "update",
                                                     children=[tag("APT", "x")]))
        assert r.xml.find(q(NS_DISCOVERY, "disowned")) is not None
    arun(go())


def test_remove_and_unregister(server, clients, arun):
    async def go():
        owner = await clients.client("owner")
        stranger = await clients.client("stranger")
        d = await owned_device(clients, owner)
        model = d.tags["MODEL"][1]
        sn = [el(NS_DISCOVERY, "strEq", {"name": "SN", "value": d.tags["SN"][1]})]
        found, _ = await search(stranger, sn)
        assert [j for j, _, _ in found] == [bare(d)]
        assert await iq_error(stranger, REGISTRY, "set", el(NS_DISCOVERY, "remove",
                                                            {"jid": bare(d)})) == "item-not-found"
        await send_iq(owner, REGISTRY, "set", el(NS_DISCOVERY, "remove", {"jid": bare(d)}))
        await wait_until(lambda: any(k == "removed" for k, _ in d.events),
                         what="the device told of its removal")
        found, _ = await search(stranger, sn)
        assert found == [] and model
        # Removed: its own updates find nothing.
        assert await iq_error(d, REGISTRY, "set", el(NS_DISCOVERY, "update",
                                                     children=[tag("ROOM", "x")])) == "item-not-found"
        # Unregistering always succeeds; afterwards nobody can claim it.
        d2 = await clients.device()
        await register(d2)
        await send_iq(d2, REGISTRY, "set", el(NS_DISCOVERY, "unregister"))
        await send_iq(d2, REGISTRY, "set", el(NS_DISCOVERY, "unregister"))
        assert await iq_error(owner, REGISTRY, "set", mine_payload(d2)) == "item-not-found"
    arun(go())


def test_disown_online_thing(server, clients, arun):
    async def go():
        owner = await clients.client("owner")
        d = await owned_device(clients, owner)
        stranger = await clients.client("stranger")
        assert await iq_error(stranger, REGISTRY, "set", el(NS_DISCOVERY, "disown",
                                                            {"jid": bare(d)})) == "item-not-found"
        await send_iq(owner, REGISTRY, "set", el(NS_DISCOVERY, "disown", {"jid": bare(d)}))
        assert any(k == "disowned" for k, _ in d.events)
        # The friendship the claim made is gone.
        assert await roster_sub(owner, bare(d)) in (None, "none")
        # The device registers again (as XEP-0347 wants) and can be claimed anew.
        await wait_until(lambda: sum(1 for k, _ in d.events if k == "registered") >= 2,
                         what="the device registering again")
        await claim(owner, d)
        assert await roster_sub(owner, bare(d)) == "both"
    arun(go())


def test_disown_needs_the_thing_online(server, clients, arun):
    async def go():
        owner = await clients.client("owner")
        d = await owned_device(clients, owner)
        d.disconnect()
        await wait_until(lambda: not owner.client_roster.presence(bare(d)),
                         what="the device offline")
        assert await iq_error(owner, REGISTRY, "set", el(NS_DISCOVERY, "disown",
                                                         {"jid": bare(d)})) == "not-allowed"
    arun(go())


def test_self_owned_thing_is_public_at_once(server, clients, arun):
    async def go():
        c = await clients.client()
        d = await clients.device()
        assert await register(d, self_owned=True) is None
        found, _ = await search(c, [el(NS_DISCOVERY, "strEq", {"name": "SN",
                                                             "value": d.tags["SN"][1]})])
        assert [(j, o) for j, o, _ in found] == [(bare(d), bare(d))]
        # Nobody can claim it.
        assert await iq_error(c, REGISTRY, "set", mine_payload(d)) == "item-not-found"
    arun(go())


def test_registrations_persist_across_restart(make_server, loop, arun):
    srv = make_server()
    cs = Clients(srv, loop)
    state = {}

    async def before():
        owner = await cs.client("owner")
        d = await owned_device(cs, owner)
        unclaimed = await cs.device()
        await register(unclaimed)
        state.update(owner=(owner.test_user, owner.test_password), dev=d, unclaimed=unclaimed,
                     devkey=(d.test_user, d.test_password))
        await cs.close()
    arun(before())
    srv.signal()
    assert srv.wait(10) == 0
    srv.start()
    cs2 = Clients(srv, loop)

    async def after():
        owner = await cs2.client(user=state["owner"][0], password=state["owner"][1])
        d = state["dev"]
        found, _ = await search(owner, [el(NS_DISCOVERY, "strEq", {"name": "SN",
                                                                 "value": d.tags["SN"][1]})])
        assert [(j, o) for j, o, _ in found] == [(bare(d), bare(owner))]
        # The unclaimed one is still there to be claimed.
        u = state["unclaimed"]
        r = await send_iq(owner, REGISTRY, "set", mine_payload(u))
        assert r.xml.find(q(NS_DISCOVERY, "claimed")).get("jid") == bare(u)
        await cs2.close()
    try:
        arun(after())
    finally:
        loop.run_until_complete(cs2.close())
