"""XEP-0402 bookmarks compatibility with XEP-0049 private XML storage
('urn:xmpp:bookmarks:1#compat', XEP-0402 section 7, XEP-0411): bookmarks a
client stores in private XML appear as items of the PEP node
urn:xmpp:bookmarks:1 (published and retracted with notifications, unchanged
rooms left alone), and a client's publish or retract on that node rewrites
the private XML. Raw streams check the exact stanzas; slixmpp's xep_0048
(private storage) and xep_0060 plugins show the same from a real client."""
import asyncio
import time
import xml.etree.ElementTree as ET

from harness import DOMAIN, NS_DISCO_INFO, connect_and_wait, q, tostr
from imutil import Client, subscribe_mutually
from pubsubutil import (PSE, advertise, event, get_items, items_of, no_event, ok, perror,
                        ps, publish)

BOOKMARKS = "urn:xmpp:bookmarks:1"
LEGACY = "storage:bookmarks"
PRIVATE = "jabber:iq:private"
OPTS = {"pubsub#persist_items": "true", "pubsub#max_items": "max",
        "pubsub#send_last_published_item": "never", "pubsub#access_model": "whitelist"}
SYNC_WAIT = 10.0    # the mirror is written after the answer: poll up to this long


def room(name):
    return "%s@conference.%s" % (name, DOMAIN)


def account(server):
    user, pw, _ = server.new_account("bmc")
    return Client(server, user, pw)


def private_set(c, inner):
    return ok(c.iq("set", "<query xmlns='%s'>%s</query>" % (PRIVATE, inner)))


def private_bookmarks(c):
    """{room jid: conference element} of the private storage:bookmarks."""
    r = ok(c.iq("get", "<query xmlns='%s'><storage xmlns='%s'/></query>" % (PRIVATE, LEGACY)))
    st = r.find("%s/%s" % (q(PRIVATE, "query"), q(LEGACY, "storage")))
    assert st is not None, tostr(r)
    return {c.get("jid"): c for c in st.findall(q(LEGACY, "conference"))}


def private_urls(c):
    r = ok(c.iq("get", "<query xmlns='%s'><storage xmlns='%s'/></query>" % (PRIVATE, LEGACY)))
    return [u.get("url") for u in r.iter(q(LEGACY, "url"))]


def pep_bookmarks(c):
    """{item id: conference payload} of the account's PEP bookmarks."""
    r = get_items(c, BOOKMARKS, to=None)
    if r.get("type") == "error":
        assert perror(r)[0] == "item-not-found", tostr(r)
        return {}
    return dict(items_of(r))


def eventually(fn, pred, what):
    deadline = time.monotonic() + SYNC_WAIT
    while True:
        got = fn()
        if pred(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError("%s: still %r" % (what, got))
        time.sleep(0.05)


def text_of(el, name, ns):
    c = el.find(q(ns, name))
    return None if c is None else c.text


def test_account_advertises_compat(server):
    a = account(server)
    b = account(server)
    try:
        a.available()
        b.available()
        subscribe_mutually(a, b)
        for who, to in ((a, None), (b, a.bare)):
            info = ok(who.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=to))
            feats = {f.get("var") for f in info.iter(q(NS_DISCO_INFO, "feature"))}
            assert BOOKMARKS + "#compat" in feats, feats
        # Not the server's: the feature is the account's (XEP-0402 section 8).
        info = ok(a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=DOMAIN))
        assert BOOKMARKS + "#compat" not in {f.get("var") for f in
                                              info.iter(q(NS_DISCO_INFO, "feature"))}
    finally:
        a.close()
        b.close()


def test_private_storage_becomes_pep_items_with_notifications(server):
    a = account(server)
    a2 = Client(server, a.user, a.password)
    try:
        advertise(a2, notify=[BOOKMARKS])
        a2.drain(0.1)
        private_set(a, "<storage xmlns='%s'>"
                       "<conference jid='%s' name='Elsinore' autojoin='true'>"
                       "<nick>hamlet</nick><password>s3cret</password></conference>"
                       "<conference jid='%s' name='Wittenberg'/>"
                       "<url name='Example' url='https://example.org/'/>"
                       "<conference jid='not a jid@@' name='bad'/>"
                       "<conference jid='%s/res' name='full jid'/>"
                       "<conference jid='%s' name='duplicate'/>"
                       "</storage>" % (LEGACY, room("elsinore"), room("wittenberg"),
                                       room("x"), room("elsinore")))
        got = set()
        for _ in range(2):
            msg = event(a2, BOOKMARKS, timeout=SYNC_WAIT)
            for it in msg.iter(q(PSE, "item")):
                conf = it.find(q(BOOKMARKS, "conference"))
                assert conf is not None, tostr(msg)
                got.add(it.get("id"))
        assert got == {room("elsinore"), room("wittenberg")}
        items = pep_bookmarks(a)
        # Invalid, full and duplicate room JIDs and <url/> are not carried.
        assert set(items) == {room("elsinore"), room("wittenberg")}
        e = items[room("elsinore")]
        assert e.tag == q(BOOKMARKS, "conference")
        assert e.get("name") == "Elsinore" and e.get("autojoin") == "true"
        assert text_of(e, "nick", BOOKMARKS) == "hamlet"
        assert text_of(e, "password", BOOKMARKS) == "s3cret"
        assert items[room("wittenberg")].get("autojoin") in (None, "false")
        # The node the server created is private (XEP-0223 / XEP-0402 configuration).
        cfg = ok(ps(a, "get", "<configure node='%s'/>" % BOOKMARKS, to=None, owner=True))
        vals = {f.get("var"): [v.text for v in f.findall(q("jabber:x:data", "value"))]
                for f in cfg.iter(q("jabber:x:data", "field"))}
        assert vals["pubsub#access_model"] == ["whitelist"]
        assert vals["pubsub#max_items"] == ["max"]

        # A replacement list: one room renamed, one unchanged, one gone.
        private_set(a, "<storage xmlns='%s'>"
                       "<conference jid='%s' name='Elsinore' autojoin='true'>"
                       "<nick>hamlet</nick><password>s3cret</password></conference>"
                       "<conference jid='%s' name='Inn'/>"
                       "</storage>" % (LEGACY, room("elsinore"), room("inn")))
        published, retracted = set(), set()
        deadline = time.monotonic() + SYNC_WAIT
        while (published, retracted) != ({room("inn")}, {room("wittenberg")}):
            assert time.monotonic() < deadline, (published, retracted)
            msg = event(a2, BOOKMARKS, timeout=SYNC_WAIT)
            published |= {i.get("id") for i in msg.iter(q(PSE, "item"))}
            retracted |= {i.get("id") for i in msg.iter(q(PSE, "retract"))}
        # No notification for the unchanged room (XEP-0402 7.2).
        no_event(a2, BOOKMARKS, seconds=0.5)
        assert set(pep_bookmarks(a)) == {room("elsinore"), room("inn")}

        # Deleting the private element empties the node.
        private_set(a, "<storage xmlns='%s'/>" % LEGACY)
        eventually(lambda: pep_bookmarks(a), lambda v: v == {}, "PEP bookmarks after delete")
    finally:
        a.close()
        a2.close()


def test_pep_bookmarks_stay_private_to_the_owner(server):
    a = account(server)
    b = account(server)
    try:
        a.available()
        b.available()
        subscribe_mutually(a, b)
        private_set(a, "<storage xmlns='%s'><conference jid='%s' name='secret'/></storage>"
                    % (LEGACY, room("secret")))
        eventually(lambda: pep_bookmarks(a), lambda v: room("secret") in v, "mirrored")
        # Even a contact may not read the mirrored bookmarks (whitelist).
        assert perror(get_items(b, BOOKMARKS, to=a.bare)) == ("not-allowed", "closed-node")
    finally:
        a.close()
        b.close()


def test_refused_private_set_changes_no_pep_item(server):
    a = account(server)
    try:
        private_set(a, "<storage xmlns='%s'><conference jid='%s'/></storage>"
                    % (LEGACY, room("kept")))
        eventually(lambda: set(pep_bookmarks(a)), lambda v: v == {room("kept")}, "mirrored")
        # One request, all or nothing: a reserved namespace refuses the whole set.
        r = a.iq("set", "<query xmlns='%s'><storage xmlns='%s'><conference jid='%s'/></storage>"
                        "<vCard xmlns='vcard-temp'/></query>" % (PRIVATE, LEGACY, room("new")))
        assert r.get("type") == "error", tostr(r)
        time.sleep(0.3)
        assert set(pep_bookmarks(a)) == {room("kept")}
        assert set(private_bookmarks(a)) == {room("kept")}
    finally:
        a.close()


def test_pep_publish_and_retract_rewrite_private_storage(server):
    a = account(server)
    try:
        # A legacy <url/> bookmark has no PEP form: the rewrites keep it.
        private_set(a, "<storage xmlns='%s'><url name='Ex' url='https://example.org/'/></storage>"
                    % LEGACY)
        payload = ("<conference xmlns='%s' name='Council' autojoin='true'>"
                   "<nick>ophelia</nick><extensions><x xmlns='urn:example'/></extensions>"
                   "</conference>" % BOOKMARKS)
        ok(publish(a, BOOKMARKS, payload, item_id=room("council"), to=None, options=OPTS))
        ok(publish(a, BOOKMARKS, "<conference xmlns='%s' name='Court'/>" % BOOKMARKS,
                   item_id=room("court"), to=None, options=OPTS))
        got = eventually(lambda: private_bookmarks(a), lambda v: len(v) == 2, "private XML")
        assert private_urls(a) == ["https://example.org/"]
        c = got[room("council")]
        assert c.get("name") == "Council" and c.get("autojoin") == "true"
        assert text_of(c, "nick", LEGACY) == "ophelia"
        assert got[room("court")].get("name") == "Court"

        ok(ps(a, "set", "<retract node='%s' notify='true'><item id='%s'/></retract>"
              % (BOOKMARKS, room("court")), to=None))
        eventually(lambda: set(private_bookmarks(a)), lambda v: v == {room("council")},
                   "private XML after retract")

        # A publish the node refuses (precondition conflict) changes nothing.
        r = publish(a, BOOKMARKS, "<conference xmlns='%s' name='Nope'/>" % BOOKMARKS,
                    item_id=room("nope"), to=None, options={"pubsub#max_items": "1"})
        assert perror(r) == ("conflict", "precondition-not-met")
        # A retract of an item that does not exist fails and changes nothing either.
        r = ps(a, "set", "<retract node='%s'><item id='%s'/></retract>"
               % (BOOKMARKS, room("ghost")), to=None)
        assert perror(r)[0] == "item-not-found"
        time.sleep(0.3)
        assert set(private_bookmarks(a)) == {room("council")}
        # The last room retracted: only the <url/> stays.
        ok(ps(a, "set", "<retract node='%s'><item id='%s'/></retract>"
              % (BOOKMARKS, room("council")), to=None))
        eventually(lambda: private_bookmarks(a), lambda v: v == {}, "private XML emptied")
        assert private_urls(a) == ["https://example.org/"]
    finally:
        a.close()


def test_slixmpp_private_bookmarks_seen_on_pep_and_back(server, xmpp, arun):
    from slixmpp.plugins.xep_0048.stanza import Bookmarks

    user, pw, jid = server.new_account("bmcs")
    c1 = xmpp(jid + "/one", pw, server.c2s_port, plugins=["xep_0048", "xep_0060"])

    async def pep_items():
        r = await c1["xep_0060"].get_items(jid, BOOKMARKS)
        return {i["id"]: i for i in r["pubsub"]["items"]}

    async def scenario():
        await connect_and_wait(c1)
        bm = Bookmarks()
        bm.add_conference(room("gallery"), "horatio", name="Gallery", autojoin=True)
        await c1["xep_0048"].set_bookmarks(bm, method="xep_0049")
        deadline = time.monotonic() + SYNC_WAIT
        while room("gallery") not in await pep_items():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        conf = (await pep_items())[room("gallery")].xml.find(q(BOOKMARKS, "conference"))
        assert conf.get("name") == "Gallery" and text_of(conf, "nick", BOOKMARKS) == "horatio"

        # Publishing through PEP shows up in private storage, for XEP-0049 clients.
        await c1["xep_0060"].publish(jid, BOOKMARKS, id=room("hall"),
                                     payload=ET.fromstring(
                                         "<conference xmlns='%s' name='Hall'/>" % BOOKMARKS))
        deadline = time.monotonic() + SYNC_WAIT
        while True:
            got = await c1["xep_0048"].get_bookmarks(method="xep_0049")
            jids = sorted(str(c["jid"]) for c in got["private"]["bookmarks"]["conferences"])
            if jids == sorted([room("gallery"), room("hall")]):
                break
            assert time.monotonic() < deadline, jids
            await asyncio.sleep(0.05)
    arun(scenario())
