"""XEP-0163 Personal Eventing (PEP) on every account's bare JID: discovery,
auto-create on publish with the PEP defaults, the presence access model,
notifications filtered by XEP-0115 "+notify" interest (the server asks
an unknown 'ver' with disco#info, checks the hash and caches by ver), the
last item on initial presence, publish-options for OMEMO (open access),
bookmarks and private data (XEP-0223, whitelist), the roster model,
blocking, and persistence across a restart.

Raw streams drive the caps handshake exactly; slixmpp's xep_0163,
xep_0115, xep_0118 and xep_0223 plugins show the same from a real client."""
import asyncio
import time

import pytest

from harness import DOMAIN, NS_DISCO_INFO, connect_and_wait, q, tostr, start_spread
from imutil import Client, restart, subscribe_mutually
from pubsubutil import (CLIENT_NODE, NS_CAPS, NS_DELAY, NS_DISCO_ITEMS, PS, PSE, advertise,
                        caps_ver, config_of, create, event, event_item_ids, get_items, items_of,
                        no_caps_query, no_event, ok, perror, ps, publish, published_id, subscribe)

TUNE = "http://jabber.org/protocol/tune"
MOOD = "http://jabber.org/protocol/mood"
DEVICELIST = "eu.siacs.conversations.axolotl.devicelist"
OMEMO2_DEVICES = "urn:xmpp:omemo:2:devices"
BOOKMARKS = "urn:xmpp:bookmarks:1"


def accounts(server, n, prefix="pep"):
    out = []
    for _ in range(n):
        user, pw, _ = server.new_account(prefix)
        out.append(Client(server, user, pw))
    return out


def close(*cs):
    for c in cs:
        c.close()


def friends(server, n):
    """n clients, available, the first subscribed both ways with each other one."""
    cs = accounts(server, n)
    for c in cs:
        c.available()
    for c in cs[1:]:
        subscribe_mutually(cs[0], c)
    for c in cs:
        c.drain(0.05)
    return cs


def tune(title):
    return "<tune xmlns='%s'><title>%s</title></tune>" % (TUNE, title)


# ---- discovery ----

def test_accounts_and_server_advertise_pep(server):
    a, b = friends(server, 2)
    try:
        for target in (None, a.bare, DOMAIN):
            info = ok(a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=target))
            query = info.find(q(NS_DISCO_INFO, "query"))
            ids = [(i.get("category"), i.get("type")) for i in query.findall(q(NS_DISCO_INFO, "identity"))]
            assert ("pubsub", "pep") in ids, (target, ids)
            feats = {f.get("var") for f in query.findall(q(NS_DISCO_INFO, "feature"))}
            for f in ("#publish", "#publish-options", "#auto-create", "#auto-subscribe",
                      "#filtered-notifications", "#last-published", "#access-open",
                      "#access-presence", "#access-roster", "#access-whitelist",
                      "#persistent-items", "#pubsub-on-a-jid"):
                assert PS + f in feats, (target, f)
        # A contact sees the same on the account.
        info = ok(b.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=a.bare))
        ids = [(i.get("category"), i.get("type")) for i in info.iter(q(NS_DISCO_INFO, "identity"))]
        assert ("account", "registered") in ids and ("pubsub", "pep") in ids
    finally:
        close(a, b)


def test_disco_items_lists_the_nodes_each_may_see(server):
    a, b = friends(server, 2)
    c, = accounts(server, 1)
    try:
        ok(publish(a, MOOD, "<mood xmlns='%s'><happy/></mood>" % MOOD, to=None))
        ok(publish(a, DEVICELIST, "<list xmlns='eu.siacs.conversations.axolotl'/>", to=None,
                   options={"pubsub#access_model": "open"}))
        ok(publish(a, "private-node", "<p xmlns='urn:p'/>", to=None,
                   options={"pubsub#access_model": "whitelist"}))

        def nodes(who, to):
            r = ok(who.iq("get", "<query xmlns='%s'/>" % NS_DISCO_ITEMS, to=to))
            return sorted(i.get("node") for i in r.iter(q(NS_DISCO_ITEMS, "item")))
        assert nodes(a, None) == sorted([MOOD, DEVICELIST, "private-node"])
        assert nodes(b, a.bare) == sorted([MOOD, DEVICELIST])
        assert nodes(c, a.bare) == [DEVICELIST]
        # Node info, and a node's items.
        ni = ok(b.iq("get", "<query xmlns='%s' node='%s'/>" % (NS_DISCO_INFO, MOOD), to=a.bare))
        assert ni.find(".//%s" % q(NS_DISCO_INFO, "identity")).get("type") == "leaf"
        its = ok(c.iq("get", "<query xmlns='%s' node='%s'/>" % (NS_DISCO_ITEMS, DEVICELIST),
                      to=a.bare))
        assert len(list(its.iter(q(NS_DISCO_ITEMS, "item")))) == 1
        # A node the asker may not see looks like no node at all (XEP-0030 section 8).
        hidden = ok(c.iq("get", "<query xmlns='%s' node='%s'/>" % (NS_DISCO_ITEMS, MOOD),
                         to=a.bare))
        assert list(hidden.iter(q(NS_DISCO_ITEMS, "item"))) == []
        bad = c.iq("get", "<query xmlns='%s' node='%s'/>" % (NS_DISCO_INFO, MOOD), to=a.bare)
        assert perror(bad)[0] == "service-unavailable"
    finally:
        close(a, b, c)


# ---- auto-create, defaults, access ----

def test_auto_create_with_pep_defaults_and_presence_access(server):
    a, b = friends(server, 2)
    c, = accounts(server, 1)
    try:
        item_id = published_id(publish(a, MOOD, "<mood xmlns='%s'><sad/></mood>" % MOOD, to=None))
        assert item_id
        cfg = config_of(a, MOOD, to=None)
        assert cfg["pubsub#access_model"] == "presence"
        assert cfg["pubsub#send_last_published_item"] == "on_sub_and_presence"
        assert cfg["pubsub#persist_items"] == "1" and cfg["pubsub#max_items"] == "1"
        # A contact with a presence subscription reads it; a stranger may not.
        got = items_of(get_items(b, MOOD, to=a.bare))
        assert [i for i, _ in got] == [item_id] and got[0][1].tag == q(MOOD, "mood")
        assert perror(get_items(c, MOOD, to=a.bare)) == \
            ("not-authorized", "presence-subscription-required")
        assert perror(subscribe(c, MOOD, to=a.bare)) == \
            ("not-authorized", "presence-subscription-required")
        # Only the account publishes or creates on its own PEP service.
        assert perror(publish(b, MOOD, to=a.bare))[0] == "forbidden"
        assert perror(publish(b, "new-node", to=a.bare))[0] == "forbidden"
        assert perror(create(b, "x", to=a.bare))[0] == "forbidden"
        assert perror(ps(b, "set", "<delete node='%s'/>" % MOOD, to=a.bare, owner=True))[0] == \
            "forbidden"
        # Addressed explicitly to one's own bare JID works the same as without 'to'.
        ok(publish(a, MOOD, "<mood xmlns='%s'><happy/></mood>" % MOOD, to=a.bare))
        assert len(items_of(get_items(a, MOOD, to=None))) == 1
        # No such node on someone's PEP service.
        assert perror(get_items(b, "nothing-here", to=a.bare))[0] == "item-not-found"
    finally:
        close(a, b, c)


# ---- +notify filtering ----

def test_notifications_follow_notify_interest(server):
    a, b, c = friends(server, 3)
    a2 = Client(server, a.user, a.password)
    try:
        advertise(b, notify=[TUNE])
        advertise(c, notify=[MOOD])		# interested in something else
        advertise(a2, notify=[TUNE])		# the owner's other resource
        for x in (a, b, c, a2):
            x.drain(0.2)
        ok(publish(a, TUNE, tune("Song"), item_id="t1", to=None))
        for who in (b, a2):
            msg = event(who, TUNE)
            assert msg.get("from") == a.bare, tostr(msg)
            assert msg.get("to") == who.full and msg.get("type") == "headline"
            assert event_item_ids(msg) == ["t1"]
            assert msg.find(".//%s" % q(TUNE, "title")).text == "Song"
        no_event(c, TUNE, 0.3)
        # The publishing resource advertised nothing: no copy for it.
        no_event(a, TUNE, 0.1)
        ok(publish(a, MOOD, "<mood xmlns='%s'/>" % MOOD, to=None))
        assert event(c, MOOD)
        no_event(b, MOOD, 0.3)
    finally:
        close(a, b, c, a2)


def test_caps_resolved_once_per_ver_and_lies_not_cached(server):
    a, b, c = friends(server, 3)
    b2 = Client(server, b.user, b.password)
    try:
        features = ["urn:unique:%d" % time.monotonic_ns()]
        advertise(b, notify=[TUNE], extra=features)
        # The same ver from another client: answered from the cache.
        advertise(b2, notify=[TUNE], extra=features, expect_query=False)
        no_caps_query(b2, 0.3)
        ok(publish(a, TUNE, tune("cached"), to=None))
        assert event(b, TUNE) is not None
        assert event(b2, TUNE) is not None
        # A client whose answer does not hash to its ver is believed for
        # itself only: the next client with that ver is asked again.
        lie_features = ["urn:lie:%d" % time.monotonic_ns()]
        ver = advertise(c, notify=[], extra=lie_features,
                        lie=[NS_DISCO_INFO, "%s+notify" % TUNE])
        c.drain(0.2)
        ok(publish(a, TUNE, tune("for the liar"), to=None))
        assert event(c, TUNE) is not None
        d, = accounts(server, 1)
        d.available()
        subscribe_mutually(a, d)
        advertise(d, notify=[], extra=lie_features)	# same ver as c's: asked again
        close(d)
        assert ver
    finally:
        close(a, b, c, b2)


def test_caps_change_during_session(server):
    a, b = friends(server, 2)
    try:
        advertise(b, notify=[])
        ok(publish(a, TUNE, tune("unheard"), to=None))
        no_event(b, TUNE, 0.3)
        # New caps with the interest: the last item comes, and then new ones.
        advertise(b, notify=[TUNE])
        msg = event(b, TUNE)
        assert msg.find(q(NS_DELAY, "delay")) is not None
        ok(publish(a, TUNE, tune("heard"), to=None))
        assert event(b, TUNE).find(q(NS_DELAY, "delay")) is None
        # Presence without caps: nothing wanted any more.
        b.send("<presence/>")
        b.drain(0.2)
        ok(publish(a, TUNE, tune("again unheard"), to=None))
        no_event(b, TUNE, 0.3)
    finally:
        close(a, b)


# ---- last published item on presence ----

def test_last_item_on_initial_presence_only(server):
    a, b, c = friends(server, 3)
    try:
        ok(publish(a, TUNE, tune("first"), item_id="x1", to=None))
        ok(publish(a, TUNE, tune("latest"), item_id="x2", to=None))
        b.close()
        c.close()
        b = Client(server, b.user, b.password)
        c = Client(server, c.user, c.password)
        ver = advertise(b, notify=[TUNE])
        msg = event(b, TUNE)
        assert msg.get("from") == a.bare and msg.get("to") == b.full
        assert event_item_ids(msg) == ["x2"]
        stamp = msg.find(q(NS_DELAY, "delay"))
        assert stamp is not None and stamp.get("from") == a.bare
        # A presence update is not initial presence: no second copy.
        b.send("<presence><show>away</show><c xmlns='%s' hash='sha-1' node='%s' ver='%s'/>"
               "</presence>" % (NS_CAPS, CLIENT_NODE, ver))
        no_event(b, TUNE, 0.4)
        # Without +notify there is nothing, initial presence or not.
        advertise(c, notify=[MOOD])
        no_event(c, TUNE, 0.4)
        # Unavailable, then available again: initial once more.
        b.send("<presence type='unavailable'/>")
        b.drain(0.2)
        advertise(b, notify=[TUNE], extra=b.caps_extra, expect_query=False)
        assert event_item_ids(event(b, TUNE)) == ["x2"]
        # The owner offline changes nothing: its contacts still get it.
        a.close_cleanly()
        b.send("<presence type='unavailable'/>")
        b.drain(0.2)
        advertise(b, notify=[TUNE], extra=b.caps_extra, expect_query=False)
        assert event_item_ids(event(b, TUNE)) == ["x2"]
    finally:
        close(b, c)


def test_own_resources_get_last_items_of_own_nodes(server):
    a, = friends(server, 1)
    try:
        ok(publish(a, BOOKMARKS, "<conference xmlns='%s' name='Room'/>" % BOOKMARKS,
                   item_id="room@conference.%s" % DOMAIN, to=None,
                   options={"pubsub#persist_items": True, "pubsub#max_items": "max",
                            "pubsub#send_last_published_item": "never",
                            "pubsub#access_model": "whitelist"}))
        ok(publish(a, TUNE, tune("mine"), to=None))
        a2 = Client(server, a.user, a.password)
        advertise(a2, notify=[TUNE, BOOKMARKS])
        assert event(a2, TUNE) is not None
        # Bookmarks say send_last never: no last item, but live notifications.
        no_event(a2, BOOKMARKS, 0.3)
        ok(publish(a, BOOKMARKS, "<conference xmlns='%s' name='Two'/>" % BOOKMARKS,
                   item_id="two@conference.%s" % DOMAIN, to=None))
        assert event(a2, BOOKMARKS) is not None
        close(a2)
    finally:
        close(a)


# ---- publish-options: OMEMO, bookmarks, private data ----

def test_omemo_nodes_open_to_non_contacts(server):
    a, b = friends(server, 2)
    stranger, = accounts(server, 1)
    try:
        for node, payload in ((DEVICELIST, "<list xmlns='eu.siacs.conversations.axolotl'>"
                               "<device id='12345'/></list>"),
                              (OMEMO2_DEVICES, "<devices xmlns='urn:xmpp:omemo:2'>"
                               "<device id='777'/></devices>")):
            ok(publish(a, node, payload, item_id="current", to=None,
                       options={"pubsub#access_model": "open"}))
            got = items_of(get_items(stranger, node, to=a.bare))
            assert [i for i, _ in got] == ["current"]
            assert got[0][1].find(".//%s" % q(got[0][1].tag.split("}")[0][1:], "device")) is not None
            # A precondition that contradicts the node: refused, nothing changes.
            r = publish(a, node, payload, item_id="current", to=None,
                        options={"pubsub#access_model": "presence"})
            assert perror(r) == ("conflict", "precondition-not-met")
            assert config_of(a, node, to=None)["pubsub#access_model"] == "open"
        # The bundle of one device, fetched by id by a stranger.
        bundle = "eu.siacs.conversations.axolotl.bundles:12345"
        ok(publish(a, bundle, "<bundle xmlns='eu.siacs.conversations.axolotl'/>", item_id="current",
                   to=None, options={"pubsub#access_model": "open", "pubsub#max_items": "max"}))
        assert [i for i, _ in items_of(get_items(stranger, bundle, to=a.bare, ids=["current"]))] \
            == ["current"]
        # Device list notifications reach contacts that want them.
        advertise(b, notify=[DEVICELIST])
        assert event(b, DEVICELIST) is not None	# the last item on presence
        ok(publish(a, DEVICELIST, "<list xmlns='eu.siacs.conversations.axolotl'>"
                   "<device id='2'/></list>", item_id="current", to=None,
                   options={"pubsub#access_model": "open"}))
        assert event_item_ids(event(b, DEVICELIST)) == ["current"]
    finally:
        close(a, b, stranger)


def test_bookmarks_whitelist_max_items(server):
    a, b = friends(server, 2)
    try:
        opts = {"pubsub#persist_items": "true", "pubsub#max_items": "max",
                "pubsub#send_last_published_item": "never", "pubsub#access_model": "whitelist"}
        for room in ("one", "two", "three"):
            ok(publish(a, BOOKMARKS, "<conference xmlns='%s' name='%s'/>" % (BOOKMARKS, room),
                       item_id="%s@conference.%s" % (room, DOMAIN), to=None, options=opts))
        assert len(items_of(get_items(a, BOOKMARKS, to=None))) == 3
        cfg = config_of(a, BOOKMARKS, to=None)
        assert cfg["pubsub#max_items"] == "max" and cfg["pubsub#access_model"] == "whitelist"
        # Private: not even a contact may read it.
        assert perror(get_items(b, BOOKMARKS, to=a.bare)) == ("not-allowed", "closed-node")
        # max_items 'max' matches a node configured to the service's limit.
        ok(publish(a, BOOKMARKS, "<conference xmlns='%s'/>" % BOOKMARKS, item_id="x", to=None,
                   options={"pubsub#max_items": "max"}))
        r = publish(a, BOOKMARKS, "<conference xmlns='%s'/>" % BOOKMARKS, item_id="y", to=None,
                    options={"pubsub#max_items": "1"})
        assert perror(r) == ("conflict", "precondition-not-met")
        # Retract notifies the owner's interested resources.
        a2 = Client(server, a.user, a.password)
        advertise(a2, notify=[BOOKMARKS])
        ok(ps(a, "set", "<retract node='%s' notify='true'><item id='x'/></retract>" % BOOKMARKS,
              to=None))
        msg = event(a2, BOOKMARKS)
        assert msg.find(".//%s" % q(PSE, "retract")).get("id") == "x"
        close(a2)
    finally:
        close(a, b)


def test_roster_access_model_for_pep(server):
    a, b, c = friends(server, 3)
    try:
        a.roster_set(b.bare, groups=["family"])
        a.roster_set(c.bare, groups=["work"])
        node = "urn:xmpp:family-news"
        ok(publish(a, node, "<n xmlns='urn:f'/>", to=None,
                   options={"pubsub#access_model": "roster",
                            "pubsub#roster_groups_allowed": ["family"]}))
        advertise(b, notify=[node])
        advertise(c, notify=[node])
        assert event(b, node) is not None	# last item on presence: b may
        no_event(c, node, 0.3)
        ok(publish(a, node, "<n xmlns='urn:f'>2</n>", to=None))
        assert event(b, node) is not None
        no_event(c, node, 0.3)
        assert perror(get_items(c, node, to=a.bare)) == ("not-authorized", "not-in-roster-group")
    finally:
        close(a, b, c)


def test_explicit_subscription_to_open_pep_node(server):
    a, = friends(server, 1)
    stranger, = accounts(server, 1)
    stranger.available()
    try:
        node = "urn:xmpp:public-status"
        ok(publish(a, node, "<s xmlns='urn:s'>1</s>", to=None,
                   options={"pubsub#access_model": "open"}))
        ok(subscribe(stranger, node, to=a.bare))
        event(stranger, node)	# the last item (send_last on_sub_and_presence)
        ok(publish(a, node, "<s xmlns='urn:s'>2</s>", item_id="two", to=None))
        msg = event(stranger, node)
        # No caps from the stranger: to its bare JID (XEP-0163 4.3.2).
        assert msg.get("to") == stranger.bare and event_item_ids(msg) == ["two"]
    finally:
        close(a, stranger)


def test_blocked_contact_gets_no_notification(server):
    a, b = friends(server, 2)
    try:
        advertise(b, notify=[TUNE])
        b.drain(0.2)
        ok(a.iq("set", "<block xmlns='urn:xmpp:blocking'><item jid='%s'/></block>" % b.bare))
        ok(publish(a, TUNE, tune("not for b"), to=None))
        no_event(b, TUNE, 0.4)
    finally:
        close(a, b)


def test_delete_pep_node_tells_interested_contacts(server):
    a, b = friends(server, 2)
    try:
        ok(publish(a, MOOD, "<mood xmlns='%s'/>" % MOOD, to=None))
        advertise(b, notify=[MOOD])
        event(b, MOOD)
        ok(ps(a, "set", "<delete node='%s'/>" % MOOD, to=None, owner=True))
        assert event(b, MOOD, "delete").get("from") == a.bare
        assert perror(get_items(b, MOOD, to=a.bare))[0] == "item-not-found"
    finally:
        close(a, b)


def test_pep_survives_restart(make_server):
    srv = make_server()
    a, b = accounts(srv, 2)
    a.available()
    b.available()
    subscribe_mutually(a, b)
    ok(publish(a, TUNE, tune("before restart"), item_id="kept", to=None))
    ok(publish(a, DEVICELIST, "<list xmlns='eu.siacs.conversations.axolotl'/>", to=None,
               options={"pubsub#access_model": "open"}))
    close(a, b)
    restart(srv)
    b = Client(srv, b.user, b.password)
    c, = accounts(srv, 1)
    try:
        advertise(b, notify=[TUNE])
        msg = event(b, TUNE)
        assert event_item_ids(msg) == ["kept"]
        assert msg.find(".//%s" % q(TUNE, "title")).text == "before restart"
        assert len(items_of(get_items(c, DEVICELIST, to=a.bare))) == 1
        assert perror(get_items(c, TUNE, to=a.bare))[0] == "not-authorized"
    finally:
        close(b, c)


# ---- through a real client library ----

def test_slixmpp_pep_notify_and_private_storage(server, xmpp, arun):
    ua, pa, ja = server.new_account("pep")
    ub, pb, jb = server.new_account("pep")
    plugins = ["xep_0030", "xep_0004", "xep_0060", "xep_0115", "xep_0163", "xep_0118", "xep_0223"]
    pub = xmpp(ja + "/p", pa, server.c2s_port, plugins=plugins)
    sub = xmpp(jb + "/s", pb, server.c2s_port, plugins=plugins)
    tunes = asyncio.Queue()
    sub.add_event_handler("user_tune_publish", lambda m: tunes.put_nowait(m))

    async def scenario():
        from slixmpp.xmlstream import ElementBase
        await asyncio.gather(connect_and_wait(pub), connect_and_wait(sub))
        # Mutual presence subscription.
        for x, y in ((pub, jb), (sub, ja)):
            await x.update_roster(y, subscription="both")
        pub.send_presence(pto=jb, ptype="subscribe")
        sub.send_presence(pto=ja, ptype="subscribed")
        sub.send_presence(pto=ja, ptype="subscribe")
        pub.send_presence(pto=jb, ptype="subscribed")
        await asyncio.sleep(0.3)
        # xep_0118 registers the tune+notify interest; caps go out with presence.
        pub.send_presence()
        sub.send_presence()
        await asyncio.sleep(0.5)
        await pub["xep_0118"].publish_tune(artist="Artist", title="Live")
        m = await asyncio.wait_for(tunes.get(), 5)
        assert m["pubsub_event"]["items"]["item"]["tune"]["title"] == "Live"
        assert str(m["from"]) == ja
        # XEP-0223: private data through publish-options (whitelist, persistent).
        class Secret(ElementBase):
            name = "secret"
            namespace = "urn:test:private"
            plugin_attrib = "secret"
        secret = Secret()
        secret.xml.text = "42"
        await pub["xep_0223"].store(secret, node="urn:test:private", id="s1")
        got = await pub["xep_0223"].retrieve("urn:test:private")
        assert [i["id"] for i in got["pubsub"]["items"]] == ["s1"]
        try:
            await sub["xep_0060"].get_items(ja, "urn:test:private")
            raise AssertionError("a contact read private data")
        except Exception as e:  # IqError: closed-node
            assert "not-allowed" in str(getattr(e, "iq", e)) or "closed-node" in str(e) or \
                getattr(e, "condition", "") == "not-allowed"
    arun(scenario(), timeout=40)


def test_removed_account_leaves_no_pubsub_state(server):
    from pubsubutil import SERVICE
    a, b = friends(server, 2)
    try:
        ok(publish(a, DEVICELIST, "<list xmlns='eu.siacs.conversations.axolotl'/>", to=None,
                   options={"pubsub#access_model": "open"}))
        n = "removal-%d" % time.monotonic_ns()
        ok(create(b, n))
        ok(ps(b, "set", "<affiliations node='%s'><affiliation jid='%s' affiliation='owner'/>"
              "</affiliations>" % (n, a.bare), to=SERVICE, owner=True))
        ok(subscribe(a, n))
        ok(a.iq("set", "<query xmlns='jabber:iq:register'><remove/></query>"))
        time.sleep(0.3)
        assert perror(get_items(b, DEVICELIST, to=a.bare))[0] == "item-not-found"
        aff = ok(ps(b, "get", "<affiliations node='%s'/>" % n, to=SERVICE, owner=True))
        assert [x.get("jid") for x in aff.iter(q(PS + "#owner", "affiliation"))] == [b.bare]
        subs = ok(ps(b, "get", "<subscriptions node='%s'/>" % n, to=SERVICE, owner=True))
        assert list(subs.iter(q(PS + "#owner", "subscription"))) == []
    finally:
        close(a, b)


# ---- accounts at home on different workers (docs/account-homes.md, 2.5) ----

@pytest.fixture(scope="module")
def homes_server():
    """Two workers, accounts spread by hash: the PEP service of an account
    lives at its home, pubsub.DOMAIN on worker 0. The suite-wide
    STANZAD_TEST_ARGS are left out so the placement below holds."""
    s = start_spread()
    yield s
    s.stop()


def placed(server, home, prefix="peph"):
    user, pw, _ = server.new_account(prefix, home=home, workers=2)
    c = Client(server, user, pw)
    c.available()
    return c


@pytest.mark.parametrize("owner_home", [0, 1])
def test_pep_and_pubsub_across_homes(homes_server, owner_home):
    srv = homes_server
    a = placed(srv, owner_home)  # the PEP owner
    b = placed(srv, 1 - owner_home)  # its contact, at home on the other worker
    try:
        subscribe_mutually(a, b)
        # Last item when the contact's caps first say +notify.
        ok(publish(a, TUNE, tune("before"), item_id="t0", to=None))
        advertise(b, notify=[TUNE])
        msg = event(b, TUNE)
        assert event_item_ids(msg) == ["t0"] and msg.find(q(NS_DELAY, "delay")) is not None
        assert msg.get("from") == a.bare and msg.get("to") == b.full
        # Live notifications, by +notify, to the contact's home.
        ok(publish(a, TUNE, tune("live"), item_id="t1", to=None))
        msg = event(b, TUNE)
        assert event_item_ids(msg) == ["t1"] and msg.find(q(NS_DELAY, "delay")) is None
        # Retraction.
        ok(ps(a, "set", "<retract node='%s' notify='true'><item id='t1'/></retract>" % TUNE,
              to=None))
        ev = event(b, TUNE)
        assert ev.find(".//%s" % q(PSE, "retract")).get("id") == "t1", tostr(ev)
        # The owner's block list holds at its home, before the copy leaves.
        ok(a.iq("set", "<block xmlns='urn:xmpp:blocking'><item jid='%s'/></block>" % b.bare))
        ok(publish(a, TUNE, tune("blocked"), item_id="t2", to=None))
        no_event(b, TUNE, 0.4)
        ok(a.iq("set", "<unblock xmlns='urn:xmpp:blocking'><item jid='%s'/></unblock>" % b.bare))
        ok(publish(a, TUNE, tune("last"), item_id="t3", to=None))
        assert event_item_ids(event(b, TUNE)) == ["t3"]
        # A new login of the contact: the last item again, from the owner's home.
        extra = b.caps_extra
        b.close()
        b = Client(srv, b.user, b.password)
        advertise(b, notify=[TUNE], extra=extra, expect_query=False)	# cached at its home
        assert event_item_ids(event(b, TUNE)) == ["t3"]
        # The contact reads the owner's node: answered across homes.
        assert [i for i, _ in items_of(get_items(b, TUNE, to=a.bare))] == ["t3"]
        # pubsub.DOMAIN (worker 0): explicit subscriptions of both, events to both.
        n = "homes-%d-%d" % (owner_home, time.monotonic_ns())
        ok(create(a, n))
        ok(subscribe(a, n))
        ok(subscribe(b, n))
        ok(publish(a, n, item_id="s1"))
        for who in (a, b):
            assert event_item_ids(event(who, n)) == ["s1"]
    finally:
        close(a, b)


def test_removed_account_leaves_no_subscriptions_at_other_homes(homes_server):
    from pubsubutil import SERVICE
    srv = homes_server
    o = placed(srv, 0)		# owns a service node and a PEP node
    r = placed(srv, 1)		# subscribes to both, then removes its account
    try:
        n = "gone-%d" % time.monotonic_ns()
        ok(create(o, n))
        ok(subscribe(r, n))
        ok(publish(o, "urn:xmpp:public-status", "<s xmlns='urn:s'>1</s>", to=None,
                   options={"pubsub#access_model": "open"}))
        ok(subscribe(r, "urn:xmpp:public-status", to=o.bare))

        def subscribers():
            out = []
            for node, to in ((n, SERVICE), ("urn:xmpp:public-status", None)):
                subs = ok(ps(o, "get", "<subscriptions node='%s'/>" % node, to=to, owner=True))
                out.append([x.get("jid") for x in subs.iter(q(PS + "#owner", "subscription"))])
            return out
        assert subscribers() == [[r.bare], [r.bare]]
        ok(r.iq("set", "<query xmlns='jabber:iq:register'><remove/></query>"))
        time.sleep(0.3)
        assert subscribers() == [[], []]
    finally:
        close(o, r)
