"""Rosters (RFC 6121 section 2): get, set, remove, pushes to interested
resources, versioning, the error cases of 2.3.3 / 2.5.3, the roster size
limit, persistence across a restart, and a real client (slixmpp)."""
import asyncio

from harness import DOMAIN, NS_CLIENT, connect_and_wait, q, tostr
from imutil import NS_ROSTER, Client, error_condition, groups, items, restart


def contact(server, prefix="contact"):
    return server.new_account(prefix)[2]


def test_stream_features_offer_versioning_and_preapproval(server):
    user, pw, jid = server.new_account("feat")
    c = Client(server, user, pw)
    try:
        feats = c.s.received.decode()
        assert "<ver xmlns='urn:xmpp:features:rosterver'/>" in feats
        assert "<sub xmlns='urn:xmpp:features:pre-approval'/>" in feats
    finally:
        c.close()


def test_empty_roster_with_and_without_versioning(server):
    user, pw, jid = server.new_account("empty")
    c = Client(server, user, pw)
    try:
        r = c.roster_get()
        assert r.get("type") == "result", tostr(r)
        query = r.find(q(NS_ROSTER, "query"))
        assert query is not None and len(query) == 0 and query.get("ver") is None
        # ver='' asks for versioning: the whole roster with its version.
        r = c.roster_get(ver="")
        query = r.find(q(NS_ROSTER, "query"))
        assert query is not None and query.get("ver") is not None, tostr(r)
    finally:
        c.close()


def test_set_update_remove_with_pushes_to_interested_resources_only(server):
    user, pw, jid = server.new_account("pusher")
    one = Client(server, user, pw, resource="one")
    two = Client(server, user, pw, resource="two")
    other = Client(server, user, pw, resource="uninterested")
    buddy = contact(server)
    try:
        one.roster_get()
        two.roster_get()
        r = one.roster_set(buddy, name="Buddy", groups=["Friends", "Work"])
        assert r.get("type") == "result", tostr(r)
        for c in (one, two):
            item = c.push(buddy)
            assert item.get("name") == "Buddy" and item.get("subscription") == "none"
            assert item.get("ask") is None and groups(item) == ["Friends", "Work"]
            assert c.last_push.get("to") == c.full
            assert c.last_push.find(q(NS_ROSTER, "query")).get("ver")
        # Not interested (never asked for the roster): no push.
        other.quiet(lambda el: el.tag == q(NS_CLIENT, "iq"))
        got = items(one.roster_get())
        assert groups(got[buddy]) == ["Friends", "Work"] and got[buddy].get("name") == "Buddy"

        # An update replaces name and groups.
        assert two.roster_set(buddy, name="Pal", groups=["Family"]).get("type") == "result"
        for c in (one, two):
            item = c.push(buddy)
            assert item.get("name") == "Pal" and groups(item) == ["Family"]
        got = items(two.roster_get())
        assert got[buddy].get("name") == "Pal" and groups(got[buddy]) == ["Family"]
        # No name and no groups clears them.
        assert one.roster_set(buddy).get("type") == "result"
        item = one.push(buddy)
        assert item.get("name") is None and groups(item) == []
        two.push(buddy)

        r = one.roster_set(buddy, subscription="remove")
        assert r.get("type") == "result", tostr(r)
        for c in (one, two):
            assert c.push(buddy).get("subscription") == "remove"
        assert buddy not in items(one.roster_get())
        # 2.5.3: removing what is not there.
        r = one.roster_set(buddy, subscription="remove")
        assert error_condition(r) == ("cancel", "item-not-found")
    finally:
        for c in (one, two, other):
            c.close()


def test_roster_set_errors_of_rfc6121_2_3_3(server):
    user, pw, jid = server.new_account("errs")
    c = Client(server, user, pw)
    buddy = contact(server)
    try:
        c.roster_get()

        def err(**kw):
            r = c.roster_set(buddy, **kw)
            return error_condition(r)[1]

        two = ("<item jid='%s'/><item jid='x@%s'/>" % (buddy, DOMAIN))
        assert err(raw=two) == "bad-request"
        assert err(raw="") == "bad-request"
        assert err(raw="<item name='no jid'/>") == "bad-request"
        assert err(groups=["G", "G"]) == "bad-request"
        assert err(groups=[""]) == "not-acceptable"
        assert err(groups=["x" * 1024]) == "not-acceptable"
        assert err(name="n" * 1024) == "not-acceptable"
        assert err(subscription="bogus") == "bad-request"
        assert err(raw="<item jid='not@a@jid'/>") == "jid-malformed"
        assert err(raw="<item jid='%s/res'/>" % buddy) == "bad-request"
        # Limits that hold: exactly at them is fine.
        r = c.roster_set(buddy, name="n" * 1023, groups=["g" * 1023])
        assert r.get("type") == "result", tostr(r)
        c.push(buddy)
        # The client cannot set the subscription state: the value is ignored.
        r = c.roster_set(buddy, subscription="both")
        assert r.get("type") == "result"
        assert c.push(buddy).get("subscription") == "none"
        assert items(c.roster_get())[buddy].get("subscription") == "none"
        # A roster get carries no items.
        r = c.iq("get", "<query xmlns='%s'><item jid='%s'/></query>" % (NS_ROSTER, buddy))
        assert error_condition(r)[1] == "bad-request"
    finally:
        c.close()


def test_someone_elses_roster_is_forbidden(server):
    ua, pa, ja = server.new_account("nosy")
    ub, pb, jb = server.new_account("victim")
    a = Client(server, ua, pa)
    b = Client(server, ub, pb)
    try:
        r = a.iq("get", "<query xmlns='%s'/>" % NS_ROSTER, to=jb)
        assert error_condition(r) == ("auth", "forbidden")
        r = a.iq("set", "<query xmlns='%s'><item jid='%s'/></query>" % (NS_ROSTER, ja), to=jb)
        assert error_condition(r) == ("auth", "forbidden")
        assert ja not in items(b.roster_get())
        # Addressed to the own bare JID explicitly: fine.
        r = a.iq("get", "<query xmlns='%s'/>" % NS_ROSTER, to=ja)
        assert r.get("type") == "result"
        # The server itself has no roster.
        r = a.iq("get", "<query xmlns='%s'/>" % NS_ROSTER, to=DOMAIN)
        assert error_condition(r)[1] == "service-unavailable"
    finally:
        a.close()
        b.close()


def test_max_roster_items_is_enforced(make_server):
    srv = make_server("--max-roster-items", "2")
    user, pw, jid = srv.new_account("full")
    c = Client(srv, user, pw)
    try:
        c.roster_get()
        first, second, third = ("c%d@%s" % (i, DOMAIN) for i in range(3))
        assert c.roster_set(first).get("type") == "result"
        assert c.roster_set(second).get("type") == "result"
        r = c.roster_set(third)
        assert error_condition(r) == ("cancel", "not-allowed")
        # Changing an existing item still works, and removing makes room.
        assert c.roster_set(first, name="First").get("type") == "result"
        assert c.roster_set(second, subscription="remove").get("type") == "result"
        assert c.roster_set(third).get("type") == "result"
        # A subscription request that would add an item is refused too.
        c.send("<presence type='subscribe' to='c9@%s' id='sub9'/>" % DOMAIN)
        el = c.wait(lambda e: e.tag == q(NS_CLIENT, "presence") and e.get("id") == "sub9")
        assert error_condition(el)[1] == "not-allowed"
        assert set(items(c.roster_get())) == {first, third}
    finally:
        c.close()


def test_versioned_get_sends_only_changes(server):
    user, pw, jid = server.new_account("ver")
    c = Client(server, user, pw)
    a, b, d = (contact(server) for _ in range(3))
    try:
        c.roster_get()
        for j in (a, b, d):
            assert c.roster_set(j, name=j.split("@")[0]).get("type") == "result"
            c.push(j)
        ver = c.roster_get(ver="").find(q(NS_ROSTER, "query")).get("ver")
        # Up to date: an empty result, nothing else.
        r = c.roster_get(ver=ver)
        assert r.get("type") == "result" and len(r) == 0, tostr(r)
        c.quiet(seconds=0.3)

        # Changes after `ver`: one update and one removal.
        assert c.roster_set(a, name="changed").get("type") == "result"
        c.push(a)
        assert c.roster_set(b, subscription="remove").get("type") == "result"
        c.push(b)
        latest = c.last_push.find(q(NS_ROSTER, "query")).get("ver")
        r = c.roster_get(ver=ver)
        assert r.get("type") == "result" and len(r) == 0, tostr(r)
        first = c.push()
        second = c.push()
        assert (first.get("jid"), first.get("name")) == (a, "changed")
        assert (second.get("jid"), second.get("subscription")) == (b, "remove")
        assert c.last_push.find(q(NS_ROSTER, "query")).get("ver") == latest
        c.quiet(lambda el: el.tag == q(NS_CLIENT, "iq"), seconds=0.3)

        # A version we never issued (or garbage): the whole roster.
        for bogus in ("999999999", "abc", "-1"):
            r = c.roster_get(ver=bogus)
            got = items(r)
            assert set(got) == {a, d}, tostr(r)
            assert r.find(q(NS_ROSTER, "query")).get("ver") == latest
    finally:
        c.close()


def test_roster_and_version_survive_restart(make_server):
    srv = make_server()
    user, pw, jid = srv.new_account("persist")
    buddy, gone = contact(srv), contact(srv)
    c = Client(srv, user, pw)
    c.roster_get()
    assert c.roster_set(buddy, name="Kept", groups=["A", "B"]).get("type") == "result"
    assert c.roster_set(gone).get("type") == "result"
    assert c.roster_set(gone, subscription="remove").get("type") == "result"
    c.push(buddy)
    c.push(gone)
    c.push(gone)
    old_ver = c.last_push.find(q(NS_ROSTER, "query")).get("ver")
    mid_ver = str(int(old_ver) - 2)
    c.close_cleanly()

    restart(srv)
    c = Client(srv, user, pw)
    try:
        r = c.roster_get(ver="")
        got = items(r)
        assert set(got) == {buddy}
        assert got[buddy].get("name") == "Kept" and groups(got[buddy]) == ["A", "B"]
        assert r.find(q(NS_ROSTER, "query")).get("ver") == old_ver
        # The removal is remembered for versioned clients.
        r = c.roster_get(ver=mid_ver)
        assert len(r) == 0
        # One push per item changed since, with its latest state.
        pushed = c.push()
        assert (pushed.get("jid"), pushed.get("subscription")) == (gone, "remove")
        assert c.last_push.find(q(NS_ROSTER, "query")).get("ver") == old_ver
        c.quiet(lambda el: el.tag == q(NS_CLIENT, "iq"), seconds=0.3)
    finally:
        c.close()


def test_slixmpp_roster_round_trip(server, xmpp, arun):
    user, pw, jid = server.new_account("slix")
    buddy = contact(server)
    cl = xmpp(jid, pw, server.c2s_port)

    async def scenario():
        await connect_and_wait(cl)
        await cl.get_roster(timeout=10)
        assert buddy not in cl.client_roster
        await cl.update_roster(buddy, name="Slix Buddy", groups=["Tests"], timeout=10)
        for _ in range(50):  # the push updates the local roster
            if buddy in cl.client_roster and cl.client_roster[buddy]["name"] == "Slix Buddy":
                break
            await asyncio.sleep(0.05)
        item = cl.client_roster[buddy]
        assert item["name"] == "Slix Buddy" and item["groups"] == ["Tests"]
        assert item["subscription"] == "none"
        await cl.del_roster_item(buddy)
        for _ in range(50):
            if buddy not in cl.client_roster:
                break
            await asyncio.sleep(0.05)
        assert buddy not in cl.client_roster
        await cl.get_roster(timeout=10)
        assert buddy not in cl.client_roster
    arun(scenario())
