"""XEP-0060 Publish-Subscribe at pubsub.DOMAIN: discovery, node creation
(default, configured, instant), configuration, deletion, purge, publish
and retract with notifications, publish-options preconditions,
subscriptions and their options, item retrieval, affiliations and the
owner's management use cases, access models (open, presence, roster,
whitelist, outcasts), persistence across a restart, and the limits.

Raw streams (imutil.Client) check the exact protocol; one test drives
the same use cases through slixmpp's xep_0060 plugin."""
import asyncio
import time

from harness import DOMAIN, NS_CLIENT, NS_DISCO_INFO, connect_and_wait, q, tostr
from imutil import Client, restart, subscribe_mutually
from iqutil import db_rows
from pubsubutil import (NS_DELAY, NS_DISCO_ITEMS, NS_XDATA, PS, PSE, PSO, SERVICE, config_of,
                        configure, create, event, event_item_ids, get_items, items_of,
                        no_event, ok, perror, ps, publish, published_id, subscribe)


def clients(server, *prefixes, available=True):
    out = []
    for p in prefixes:
        user, pw, _ = server.new_account(p)
        c = Client(server, user, pw)
        if available:
            c.available()
        out.append(c)
    c = out[-1]
    c.drain(0.05)
    return out


def close(*cs):
    for c in cs:
        c.close()


def node_name(prefix="n"):
    return "%s-%d" % (prefix, time.monotonic_ns())


# ---- discovery ----

def test_service_disco_info_items_and_server_listing(server):
    a, = clients(server, "ps")
    try:
        info = ok(a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=SERVICE))
        query = info.find(q(NS_DISCO_INFO, "query"))
        ids = [(i.get("category"), i.get("type")) for i in query.findall(q(NS_DISCO_INFO, "identity"))]
        assert ("pubsub", "service") in ids
        feats = {f.get("var") for f in query.findall(q(NS_DISCO_INFO, "feature"))}
        for f in ("", "#publish", "#create-nodes", "#instant-nodes", "#publish-options",
                  "#retrieve-items", "#subscribe", "#config-node", "#purge-nodes",
                  "#delete-nodes", "#modify-affiliations", "#manage-subscriptions",
                  "#access-whitelist", "#outcast-affiliation", "#persistent-items"):
            assert PS + f in feats, f
        # The server lists the service among its items.
        items = ok(a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_ITEMS, to=DOMAIN))
        jids = [i.get("jid") for i in items.iter(q(NS_DISCO_ITEMS, "item"))]
        assert SERVICE in jids
        # Nodes are listed with their titles; items of a node by id.
        n = node_name()
        ok(create(a, n, {"pubsub#title": "Weather"}))
        ok(publish(a, n, item_id="w1"))
        nodes = ok(a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_ITEMS, to=SERVICE))
        found = [i for i in nodes.iter(q(NS_DISCO_ITEMS, "item")) if i.get("node") == n]
        assert found and found[0].get("name") == "Weather" and found[0].get("jid") == SERVICE
        its = ok(a.iq("get", "<query xmlns='%s' node='%s'/>" % (NS_DISCO_ITEMS, n), to=SERVICE))
        assert [i.get("name") for i in its.iter(q(NS_DISCO_ITEMS, "item"))] == ["w1"]
        # Node info: pubsub/leaf and the meta-data form.
        ni = ok(a.iq("get", "<query xmlns='%s' node='%s'/>" % (NS_DISCO_INFO, n), to=SERVICE))
        nq = ni.find(q(NS_DISCO_INFO, "query"))
        assert nq.find(q(NS_DISCO_INFO, "identity")).get("type") == "leaf"
        fields = {f.get("var"): [v.text for v in f.findall(q(NS_XDATA, "value"))]
                  for f in nq.iter(q(NS_XDATA, "field"))}
        assert fields["FORM_TYPE"] == [PS + "#meta-data"]
        assert fields["pubsub#title"] == ["Weather"]
        assert fields["pubsub#owner"] == [a.bare]
        assert fields["pubsub#access_model"] == ["open"]
        bad = a.iq("get", "<query xmlns='%s' node='nope'/>" % NS_DISCO_INFO, to=SERVICE)
        assert perror(bad)[0] == "item-not-found"
    finally:
        close(a)


# ---- create, configure, delete, purge ----

def test_create_default_configured_instant_and_conflict(server):
    a, b = clients(server, "ps", "ps")
    try:
        n = node_name()
        r = ok(create(a, n))
        assert perror(create(a, n)) == ("conflict", None)
        assert perror(create(b, n)) == ("conflict", None)
        cfg = config_of(a, n)
        assert cfg["pubsub#access_model"] == "open"
        assert cfg["pubsub#max_items"] == "10" and cfg["pubsub#persist_items"] == "1"
        # Create and configure at once.
        n2 = node_name()
        ok(create(a, n2, {"pubsub#access_model": "whitelist", "pubsub#title": "T",
                          "pubsub#max_items": "max", "pubsub#send_last_published_item": "on_sub"}))
        cfg = config_of(a, n2)
        assert cfg["pubsub#access_model"] == "whitelist" and cfg["pubsub#title"] == "T"
        assert cfg["pubsub#max_items"] == "max"
        assert cfg["pubsub#send_last_published_item"] == "on_sub"
        # An instant node: the service names it.
        r = ok(create(a))
        made = r.find("%s/%s" % (q(PS, "pubsub"), q(PS, "create"))).get("node")
        assert made and len(made) >= 8
        ok(publish(a, made))
        # A bad configuration creates nothing.
        n3 = node_name()
        assert perror(create(a, n3, {"pubsub#access_model": "authorize"})) == \
            ("not-acceptable", "unsupported-access-model")
        assert perror(create(a, n3, {"pubsub#max_items": "100000000"}))[0] == "not-acceptable"
        assert perror(get_items(a, n3))[0] == "item-not-found"
        r = ps(a, "set", "<create node='%s'/><configure node='x'/>" % n3)
        assert perror(r)[0] == "bad-request"
    finally:
        close(a, b)


def test_configure_owner_only_and_validated(server):
    a, b = clients(server, "ps", "ps")
    try:
        n = node_name()
        ok(create(a, n))
        ok(configure(a, n, {"pubsub#title": "New", "pubsub#notify_retract": False,
                            "pubsub#roster_groups_allowed": ["x", "y"]}))
        cfg = config_of(a, n)
        assert cfg["pubsub#title"] == "New" and cfg["pubsub#notify_retract"] == "0"
        assert cfg["pubsub#roster_groups_allowed"] == ["x", "y"]
        assert perror(configure(b, n, {"pubsub#title": "Mine"})) == ("forbidden", None)
        assert perror(ps(b, "get", "<configure node='%s'/>" % n, owner=True))[0] == "forbidden"
        assert perror(configure(a, n, {"pubsub#max_items": "zero"}))[0] == "not-acceptable"
        assert perror(configure(a, n, {"pubsub#persist_items": "maybe"}))[0] == "not-acceptable"
        assert perror(configure(a, "missing-node", {"pubsub#title": "x"}))[0] == "item-not-found"
        assert perror(ps(a, "get", "<configure/>", owner=True)) == ("bad-request", "nodeid-required")
        assert config_of(a, n)["pubsub#title"] == "New"
        # The default configuration (8.3).
        d = ok(ps(a, "get", "<default/>", owner=True))
        assert d.find(".//%s" % q(NS_XDATA, "x")) is not None
    finally:
        close(a, b)


def test_configuration_change_notifies_when_asked(server):
    a, b = clients(server, "ps", "ps")
    try:
        n = node_name()
        ok(create(a, n, {"pubsub#notify_config": True}))
        ok(subscribe(b, n))
        ok(configure(a, n, {"pubsub#title": "Changed"}))
        msg = event(b, n, "configuration")
        x = msg.find(".//%s" % q(NS_XDATA, "x"))
        assert x is not None and x.get("type") == "result"
    finally:
        close(a, b)


def test_delete_node_notifies_subscribers(server):
    a, b, c = clients(server, "ps", "ps", "ps")
    try:
        n = node_name()
        ok(create(a, n))
        ok(subscribe(b, n))
        ok(subscribe(c, n))
        assert perror(ps(b, "set", "<delete node='%s'/>" % n, owner=True)) == ("forbidden", None)
        ok(ps(a, "set", "<delete node='%s'><redirect uri='xmpp:%s?;node=other'/></delete>" %
              (n, SERVICE), owner=True))
        for s in (b, c):
            msg = event(s, n, "delete")
            assert msg.get("from") == SERVICE
            red = msg.find("%s/%s/%s" % (q(PSE, "event"), q(PSE, "delete"), q(PSE, "redirect")))
            assert red is not None and red.get("uri").endswith("node=other")
        assert perror(get_items(b, n))[0] == "item-not-found"
        assert perror(ps(a, "set", "<delete node='%s'/>" % n, owner=True))[0] == "item-not-found"
        # The name is free again.
        ok(create(a, n))
    finally:
        close(a, b, c)


def test_purge_empties_and_notifies(server):
    a, b = clients(server, "ps", "ps")
    try:
        n = node_name()
        ok(create(a, n))
        for i in range(3):
            ok(publish(a, n, item_id="p%d" % i))
        ok(subscribe(b, n))
        assert perror(ps(b, "set", "<purge node='%s'/>" % n, owner=True))[0] == "forbidden"
        ok(ps(a, "set", "<purge node='%s'/>" % n, owner=True))
        event(b, n, "purge")
        assert items_of(get_items(a, n)) == []
        # A node that keeps no items cannot be purged.
        t = node_name()
        ok(create(a, t, {"pubsub#persist_items": False}))
        r = ps(a, "set", "<purge node='%s'/>" % t, owner=True)
        assert perror(r) == ("feature-not-implemented", "unsupported")
    finally:
        close(a, b)


# ---- publish, notifications, retract ----

def test_publish_notifies_subscribers_with_payload(server):
    a, b, c = clients(server, "ps", "ps", "ps")
    try:
        n = node_name()
        ok(create(a, n))
        ok(subscribe(b, n))
        ok(subscribe(c, n))
        r = publish(a, n, "<reading xmlns='urn:sensor'><t>21.5</t></reading>", item_id="r1")
        assert published_id(r) == "r1"
        for s in (b, c):
            msg = event(s, n)
            assert msg.get("type") == "headline" and msg.get("from") == SERVICE
            assert msg.get("to") == s.bare
            assert event_item_ids(msg) == ["r1"]
            item = msg.find(".//%s" % q(PSE, "item"))
            assert item.find(q("urn:sensor", "reading")).findtext(q("urn:sensor", "t")) == "21.5"
        # Without an id the service makes one, and says which.
        gen = published_id(publish(a, n))
        assert gen and gen != "r1"
        assert event_item_ids(event(b, n)) == [gen]
        # The publisher is not subscribed: it gets no copy.
        no_event(a, n, 0.3)
    finally:
        close(a, b, c)


def test_notification_only_node_sends_no_payload(server):
    a, b = clients(server, "ps", "ps")
    try:
        n = node_name()
        ok(create(a, n, {"pubsub#deliver_payloads": False}))
        ok(subscribe(b, n))
        ok(publish(a, n, item_id="x1"))
        item = event(b, n).find(".//%s" % q(PSE, "item"))
        assert item.get("id") == "x1" and len(item) == 0
        # The item itself keeps its payload for retrieval.
        assert items_of(get_items(b, n))[0][1] is not None
    finally:
        close(a, b)


def test_publish_permissions(server):
    a, b, c = clients(server, "ps", "ps", "ps")
    try:
        n = node_name()
        ok(create(a, n))
        assert perror(publish(b, n)) == ("forbidden", None)
        # The publisher affiliation grants it.
        ok(ps(a, "set", "<affiliations node='%s'><affiliation jid='%s' affiliation='publisher'/>"
              "</affiliations>" % (n, b.bare), owner=True))
        ok(publish(b, n))
        # publish_model subscribers: a subscription is enough.
        ok(configure(a, n, {"pubsub#publish_model": "subscribers"}))
        assert perror(publish(c, n))[0] == "forbidden"
        ok(subscribe(c, n))
        ok(publish(c, n))
        # An outcast may do nothing at all, whatever the model.
        ok(configure(a, n, {"pubsub#publish_model": "open"}))
        ok(ps(a, "set", "<affiliations node='%s'><affiliation jid='%s' affiliation='outcast'/>"
              "</affiliations>" % (n, c.bare), owner=True))
        assert perror(publish(c, n)) == ("forbidden", None)
        assert perror(subscribe(c, n)) == ("forbidden", None)
        assert perror(get_items(c, n)) == ("forbidden", None)
        # The service never auto-creates.
        assert perror(publish(a, node_name("missing")))[0] == "item-not-found"
    finally:
        close(a, b, c)


def test_publish_payload_rules(server):
    a, = clients(server, "ps")
    try:
        n = node_name()
        ok(create(a, n))
        two = "<a xmlns='urn:x'/><b xmlns='urn:x'/>"
        assert perror(publish(a, n, two)) == ("bad-request", "invalid-payload")
        assert perror(publish(a, n, item=False)) == ("bad-request", "item-required")
        assert perror(publish(a, n, payload="")) == ("bad-request", "payload-required")
        r = ps(a, "set", "<publish node='%s'><item/><item/></publish>" % n)
        assert perror(r)[0] == "bad-request"
        assert perror(ps(a, "set", "<publish><item/></publish>")) == \
            ("bad-request", "nodeid-required")
        # pubsub#type pins the payload's namespace.
        ok(configure(a, n, {"pubsub#type": "urn:only"}))
        assert perror(publish(a, n))[1] == "invalid-payload"
        ok(publish(a, n, "<e xmlns='urn:only'/>"))
        # Transient notification-only nodes take no item at all.
        t = node_name()
        ok(create(a, t, {"pubsub#persist_items": False, "pubsub#deliver_payloads": False}))
        assert perror(publish(a, t)) == ("bad-request", "item-forbidden")
        ok(publish(a, t, item=False))
    finally:
        close(a)


def test_publish_options_preconditions(server):
    a, = clients(server, "ps")
    try:
        n = node_name()
        ok(create(a, n, {"pubsub#access_model": "open", "pubsub#max_items": "5"}))
        ok(publish(a, n, options={"pubsub#access_model": "open", "pubsub#max_items": "5"}))
        r = publish(a, n, options={"pubsub#access_model": "whitelist"})
        assert perror(r) == ("conflict", "precondition-not-met")
        r = publish(a, n, options={"pubsub#persist_items": False})
        assert perror(r) == ("conflict", "precondition-not-met")
        r = publish(a, n, options={"pubsub#no-such-option": "1"})
        assert perror(r) == ("conflict", "precondition-not-met")
        # Nothing was published by the refused requests.
        assert len(items_of(get_items(a, n))) == 1
    finally:
        close(a)


def test_retract_notify_and_errors(server):
    a, b, c = clients(server, "ps", "ps", "ps")
    try:
        n = node_name()
        ok(create(a, n, {"pubsub#notify_retract": False}))
        ok(subscribe(b, n))
        ok(publish(a, n, item_id="k1"))
        ok(publish(a, n, item_id="k2"))
        event(b, n)
        event(b, n)
        assert perror(ps(c, "set", "<retract node='%s'><item id='k1'/></retract>" % n)) == \
            ("forbidden", None)
        # notify='true' notifies even though the node would not.
        ok(ps(a, "set", "<retract node='%s' notify='true'><item id='k1'/></retract>" % n))
        msg = event(b, n)
        rt = msg.find("%s/%s/%s" % (q(PSE, "event"), q(PSE, "items"), q(PSE, "retract")))
        assert rt is not None and rt.get("id") == "k1"
        # Without notify the node's notify_retract (off here) decides.
        ok(ps(a, "set", "<retract node='%s'><item id='k2'/></retract>" % n))
        no_event(b, n, 0.3)
        assert perror(ps(a, "set", "<retract node='%s'><item id='k1'/></retract>" % n))[0] == \
            "item-not-found"
        assert perror(ps(a, "set", "<retract node='%s'><item/></retract>" % n)) == \
            ("bad-request", "item-required")
        assert items_of(get_items(a, n)) == []
    finally:
        close(a, b, c)


# ---- subscriptions ----

def test_subscribe_unsubscribe_and_errors(server):
    a, b, c = clients(server, "ps", "ps", "ps")
    try:
        n = node_name()
        ok(create(a, n))
        r = ok(subscribe(b, n))
        sub = r.find("%s/%s" % (q(PS, "pubsub"), q(PS, "subscription")))
        assert sub.get("subscription") == "subscribed" and sub.get("jid") == b.bare
        subid = sub.get("subid")
        assert subid
        # Again: the same subscription (no multi-subscribe).
        again = ok(subscribe(b, n)).find(".//%s" % q(PS, "subscription"))
        assert again.get("subid") == subid
        # Someone else's JID: bad-request + invalid-jid (6.1.3.1).
        assert perror(subscribe(b, n, jid=c.bare)) == ("bad-request", "invalid-jid")
        assert perror(subscribe(b, n, jid=c.bare + "/x")) == ("bad-request", "invalid-jid")
        assert perror(subscribe(b, "no-such-node"))[0] == "item-not-found"
        # A full JID of one's own is fine and is a separate subscription.
        ok(subscribe(b, n, jid=b.full))
        # Owner view of the subscriptions.
        subs = ok(ps(a, "get", "<subscriptions node='%s'/>" % n, owner=True))
        jids = sorted(s.get("jid") for s in subs.iter(q(PSO, "subscription")))
        assert jids == sorted([b.bare, b.full])
        assert perror(ps(b, "get", "<subscriptions node='%s'/>" % n, owner=True))[0] == "forbidden"
        # Entity view: all of one's subscriptions at the service.
        mine = ok(ps(b, "get", "<subscriptions/>"))
        assert sorted(s.get("jid") for s in mine.iter(q(PS, "subscription"))) == \
            sorted([b.bare, b.full])
        # Unsubscribe errors (6.2.3).
        r = ps(b, "set", "<unsubscribe node='%s' jid='%s' subid='wrong'/>" % (n, b.bare))
        assert perror(r) == ("not-acceptable", "invalid-subid")
        r = ps(c, "set", "<unsubscribe node='%s' jid='%s'/>" % (n, c.bare))
        assert perror(r) == ("unexpected-request", "not-subscribed")
        r = ps(c, "set", "<unsubscribe node='%s' jid='%s'/>" % (n, b.bare))
        assert perror(r) == ("forbidden", None)
        ok(ps(b, "set", "<unsubscribe node='%s' jid='%s' subid='%s'/>" % (n, b.bare, subid)))
        ok(ps(b, "set", "<unsubscribe node='%s' jid='%s'/>" % (n, b.full)))
        ok(publish(a, n))
        no_event(b, n, 0.3)
    finally:
        close(a, b, c)


def test_subscription_options_deliver(server):
    a, b = clients(server, "ps", "ps")
    try:
        n = node_name()
        ok(create(a, n))
        ok(subscribe(b, n))
        r = ok(ps(b, "get", "<options node='%s' jid='%s'/>" % (n, b.bare)))
        x = r.find(".//%s" % q(NS_XDATA, "x"))
        vals = {f.get("var"): f.findtext(q(NS_XDATA, "value")) for f in x.findall(q(NS_XDATA, "field"))}
        assert vals["FORM_TYPE"] == PS + "#subscribe_options" and vals["pubsub#deliver"] == "1"
        from pubsubutil import form
        off = form(PS + "#subscribe_options", {"pubsub#deliver": False})
        ok(ps(b, "set", "<options node='%s' jid='%s'>%s</options>" % (n, b.bare, off)))
        ok(publish(a, n))
        no_event(b, n, 0.3)
        bad = form(PS + "#subscribe_options", {"pubsub#deliver": "perhaps"})
        r = ps(b, "set", "<options node='%s' jid='%s'>%s</options>" % (n, b.bare, bad))
        assert perror(r) == ("bad-request", "invalid-options")
        assert perror(ps(b, "get", "<options node='%s'/>" % n)) == ("bad-request", "jid-required")
        assert perror(ps(a, "get", "<options node='%s' jid='%s'/>" % (n, a.bare))) == \
            ("unexpected-request", "not-subscribed")
        on = form(PS + "#subscribe_options", {"pubsub#deliver": True})
        ok(ps(b, "set", "<options node='%s' jid='%s'>%s</options>" % (n, b.bare, on)))
        ok(publish(a, n, item_id="back"))
        assert event_item_ids(event(b, n)) == ["back"]
    finally:
        close(a, b)


def test_last_item_sent_on_subscription(server):
    a, b = clients(server, "ps", "ps")
    try:
        n = node_name()
        ok(create(a, n, {"pubsub#send_last_published_item": "on_sub"}))
        ok(publish(a, n, item_id="old"))
        ok(publish(a, n, "<entry xmlns='urn:test'>newest</entry>", item_id="new"))
        ok(subscribe(b, n))
        msg = event(b, n)
        assert event_item_ids(msg) == ["new"]
        assert msg.find(q(NS_DELAY, "delay")) is not None
        # 'never' (the service's default) sends nothing.
        m = node_name()
        ok(create(a, m))
        ok(publish(a, m))
        ok(subscribe(b, m))
        no_event(b, m, 0.3)
    finally:
        close(a, b)


# ---- items ----

def test_items_all_newest_and_by_id(server):
    a, b = clients(server, "ps", "ps")
    try:
        n = node_name()
        ok(create(a, n, {"pubsub#max_items": "3"}))
        for i in range(5):
            ok(publish(a, n, "<v xmlns='urn:n'>%d</v>" % i, item_id="i%d" % i))
        # Only max_items are kept, oldest first in the answer.
        assert [i for i, _ in items_of(get_items(b, n))] == ["i2", "i3", "i4"]
        assert [i for i, _ in items_of(get_items(b, n, max_items=2))] == ["i3", "i4"]
        got = items_of(get_items(b, n, ids=("i4", "i2", "gone")))
        assert [i for i, _ in got] == ["i2", "i4"]
        assert got[1][1].text == "4"
        # Republishing an id replaces it and makes it the newest.
        ok(publish(a, n, "<v xmlns='urn:n'>again</v>", item_id="i2"))
        assert [i for i, _ in items_of(get_items(b, n))] == ["i3", "i4", "i2"]
        assert perror(ps(b, "get", "<items node='%s' max_items='x'/>" % n))[0] == "bad-request"
        assert perror(get_items(b, "nope"))[0] == "item-not-found"
        # Lowering max_items trims at once.
        ok(configure(a, n, {"pubsub#max_items": "1"}))
        assert [i for i, _ in items_of(get_items(b, n))] == ["i2"]
    finally:
        close(a, b)


def test_transient_node_keeps_only_the_last_item_in_memory(server):
    a, b = clients(server, "ps", "ps")
    try:
        n = node_name()
        ok(create(a, n, {"pubsub#persist_items": False}))
        ok(subscribe(b, n))
        ok(publish(a, n, item_id="t1"))
        ok(publish(a, n, item_id="t2"))
        assert event_item_ids(event(b, n)) == ["t1"]
        assert event_item_ids(event(b, n)) == ["t2"]
        assert [i for i, _ in items_of(get_items(b, n))] == ["t2"]
        r = ps(a, "set", "<retract node='%s'><item id='t2'/></retract>" % n)
        assert perror(r) == ("feature-not-implemented", "unsupported")
        rows = db_rows(server, "SELECT count(*) FROM pubsub_items i JOIN pubsub_nodes n"
                       " ON n.id = i.node_id WHERE n.node = ?", (n,))
        assert rows[0][0] == 0
    finally:
        close(a, b)


# ---- affiliations and the owner's management ----

def test_owner_manages_affiliations(server):
    a, b, c = clients(server, "ps", "ps", "ps")
    try:
        n = node_name()
        ok(create(a, n))
        ok(subscribe(c, n))
        aff = ok(ps(a, "get", "<affiliations node='%s'/>" % n, owner=True))
        assert [(x.get("jid"), x.get("affiliation")) for x in aff.iter(q(PSO, "affiliation"))] == \
            [(a.bare, "owner")]
        assert perror(ps(b, "get", "<affiliations node='%s'/>" % n, owner=True))[0] == "forbidden"
        ok(ps(a, "set", "<affiliations node='%s'><affiliation jid='%s' affiliation='owner'/>"
              "<affiliation jid='%s' affiliation='outcast'/></affiliations>" % (n, b.bare, c.bare),
              owner=True))
        # The outcast lost its subscription, and is told (8.8.4).
        msg = event(c, n, "subscription")
        sub = msg.find("%s/%s" % (q(PSE, "event"), q(PSE, "subscription")))
        assert sub.get("subscription") == "none"
        subs = ok(ps(a, "get", "<subscriptions node='%s'/>" % n, owner=True))
        assert list(subs.iter(q(PSO, "subscription"))) == []
        # The second owner may configure; the entity's own view lists its roles.
        ok(configure(b, n, {"pubsub#title": "by b"}))
        mine = ok(ps(c, "get", "<affiliations/>"))
        assert [(x.get("node"), x.get("affiliation")) for x in mine.iter(q(PS, "affiliation"))
                if x.get("node") == n] == [(n, "outcast")]
        # Never without an owner (8.9.2.4); an entity named twice is refused.
        r = ps(a, "set", "<affiliations node='%s'><affiliation jid='%s' affiliation='none'/>"
               "<affiliation jid='%s' affiliation='member'/></affiliations>" % (n, a.bare, b.bare),
               owner=True)
        assert perror(r)[0] == "not-acceptable"
        r = ps(a, "set", "<affiliations node='%s'><affiliation jid='%s' affiliation='member'/>"
               "<affiliation jid='%s' affiliation='owner'/></affiliations>" % (n, c.bare, c.bare),
               owner=True)
        assert perror(r)[0] == "bad-request"
        r = ps(a, "set", "<affiliations node='%s'><affiliation jid='%s' affiliation='king'/>"
               "</affiliations>" % (n, c.bare), owner=True)
        assert perror(r)[0] == "bad-request"
        # One owner may resign while another remains.
        ok(ps(a, "set", "<affiliations node='%s'><affiliation jid='%s' affiliation='none'/>"
              "</affiliations>" % (n, a.bare), owner=True))
        assert perror(configure(a, n, {"pubsub#title": "no"}))[0] == "forbidden"
    finally:
        close(a, b, c)


def test_owner_manages_subscriptions(server):
    a, b = clients(server, "ps", "ps")
    try:
        n = node_name()
        ok(create(a, n))
        ok(ps(a, "set", "<subscriptions node='%s'><subscription jid='%s' subscription='subscribed'/>"
              "</subscriptions>" % (n, b.bare), owner=True))
        assert event(b, n, "subscription").find(".//%s" % q(PSE, "subscription")).get(
            "subscription") == "subscribed"
        ok(publish(a, n, item_id="for-b"))
        assert event_item_ids(event(b, n)) == ["for-b"]
        ok(ps(a, "set", "<subscriptions node='%s'><subscription jid='%s' subscription='none'/>"
              "</subscriptions>" % (n, b.bare), owner=True))
        event(b, n, "subscription")
        ok(publish(a, n))
        no_event(b, n, 0.3)
        r = ps(a, "set", "<subscriptions node='%s'><subscription jid='%s' subscription='bogus'/>"
               "</subscriptions>" % (n, b.bare), owner=True)
        assert perror(r)[0] == "not-acceptable"
        r = ps(b, "set", "<subscriptions node='%s'><subscription jid='%s' subscription='subscribed'/>"
               "</subscriptions>" % (n, b.bare), owner=True)
        assert perror(r)[0] == "forbidden"
    finally:
        close(a, b)


# ---- access models ----

def test_whitelist_and_member_affiliation(server):
    a, b = clients(server, "ps", "ps")
    try:
        n = node_name()
        ok(create(a, n, {"pubsub#access_model": "whitelist"}))
        ok(publish(a, n, item_id="secret"))
        assert perror(subscribe(b, n)) == ("not-allowed", "closed-node")
        assert perror(get_items(b, n)) == ("not-allowed", "closed-node")
        ok(ps(a, "set", "<affiliations node='%s'><affiliation jid='%s' affiliation='member'/>"
              "</affiliations>" % (n, b.bare), owner=True))
        assert [i for i, _ in items_of(get_items(b, n))] == ["secret"]
        ok(subscribe(b, n))
        # Hidden from those who may not see it.
        c, = clients(server, "ps")
        nodes = ok(c.iq("get", "<query xmlns='%s'/>" % NS_DISCO_ITEMS, to=SERVICE))
        assert n not in [i.get("node") for i in nodes.iter(q(NS_DISCO_ITEMS, "item"))]
        c.close()
    finally:
        close(a, b)


def test_presence_and_roster_access_models(server):
    a, b, c = clients(server, "ps", "ps", "ps")
    try:
        subscribe_mutually(a, b)
        # a puts b in group 'friends'.
        a.roster_set(b.bare, groups=["friends"])
        pn, rn = node_name("pres"), node_name("rost")
        ok(create(a, pn, {"pubsub#access_model": "presence"}))
        ok(create(a, rn, {"pubsub#access_model": "roster",
                          "pubsub#roster_groups_allowed": ["friends"]}))
        ok(publish(a, pn, item_id="p"))
        ok(publish(a, rn, item_id="r"))
        assert [i for i, _ in items_of(get_items(b, pn))] == ["p"]
        assert [i for i, _ in items_of(get_items(b, rn))] == ["r"]
        ok(subscribe(b, rn))
        assert perror(get_items(c, pn)) == ("not-authorized", "presence-subscription-required")
        assert perror(subscribe(c, pn)) == ("not-authorized", "presence-subscription-required")
        assert perror(get_items(c, rn)) == ("not-authorized", "not-in-roster-group")
        # Moving b to another group takes its access away (and its notifications).
        a.roster_set(b.bare, groups=["work"])
        assert perror(get_items(b, rn)) == ("not-authorized", "not-in-roster-group")
        b.drain(0.1)
        ok(publish(a, rn, item_id="r2"))
        no_event(b, rn, 0.3)
    finally:
        close(a, b, c)


def test_roster_access_decided_by_the_store_when_owner_offline(server):
    a, b = clients(server, "ps", "ps")
    try:
        subscribe_mutually(a, b)
        a.roster_set(b.bare, groups=["inner"])
        n, m = node_name("ro"), node_name("ro")
        ok(create(a, n, {"pubsub#access_model": "roster", "pubsub#roster_groups_allowed": "inner"}))
        ok(create(a, m, {"pubsub#access_model": "roster", "pubsub#roster_groups_allowed": "outer"}))
        ok(publish(a, n, item_id="x"))
        ok(publish(a, m, item_id="y"))
        a.close_cleanly()
        time.sleep(0.2)
        # The owner's roster is not in memory now: the store answers.
        assert [i for i, _ in items_of(get_items(b, n))] == ["x"]
        assert perror(get_items(b, m)) == ("not-authorized", "not-in-roster-group")
        ok(subscribe(b, n))
        assert perror(subscribe(b, m)) == ("not-authorized", "not-in-roster-group")
        subs = ok(ps(b, "get", "<subscriptions/>"))
        assert [s.get("node") for s in subs.iter(q(PS, "subscription"))] == [n]
    finally:
        close(b)


# ---- persistence and limits ----

def test_nodes_items_subscriptions_survive_restart(make_server):
    srv = make_server()
    ua, pa, ja = srv.new_account("ps")
    ub, pb, jb = srv.new_account("ps")
    a = Client(srv, ua, pa)
    b = Client(srv, ub, pb)
    n, t = node_name(), node_name("transient")
    ok(create(a, n, {"pubsub#title": "Kept", "pubsub#access_model": "whitelist"}))
    ok(create(a, t, {"pubsub#persist_items": False}))
    ok(ps(a, "set", "<affiliations node='%s'><affiliation jid='%s' affiliation='member'/>"
          "</affiliations>" % (n, jb), owner=True))
    ok(subscribe(b, n))
    ok(publish(a, n, "<v xmlns='urn:p'>1</v>", item_id="one"))
    ok(publish(a, n, "<v xmlns='urn:p'>2</v>", item_id="two"))
    ok(publish(a, t, item_id="gone"))
    a.close()
    b.close()
    restart(srv)
    a = Client(srv, ua, pa)
    b = Client(srv, ub, pb)
    b.available()
    try:
        assert config_of(a, n)["pubsub#title"] == "Kept"
        got = items_of(get_items(b, n))
        assert [i for i, _ in got] == ["one", "two"] and got[1][1].text == "2"
        subs = ok(ps(b, "get", "<subscriptions/>"))
        assert [s.get("node") for s in subs.iter(q(PS, "subscription"))] == [n]
        ok(publish(a, n, item_id="three"))
        assert event_item_ids(event(b, n)) == ["three"]
        # Transient items did not survive; the node did.
        assert items_of(get_items(a, t)) == []
        # New items keep their order after the restart (sequence continues).
        assert [i for i, _ in items_of(get_items(b, n))] == ["one", "two", "three"]
    finally:
        close(a, b)


def test_limits_nodes_items_and_payload_size(make_server):
    srv = make_server("--max-pubsub-nodes", "2", "--max-items-per-node", "4",
                      "--max-pubsub-item-bytes", "200")
    ua, pa, _ = srv.new_account("ps")
    a = Client(srv, ua, pa)
    try:
        ok(create(a, "one"))
        ok(create(a, "two", {"pubsub#max_items": "max"}))
        assert perror(create(a, "three")) == ("policy-violation", "max-nodes-exceeded")
        assert perror(create(a)) == ("policy-violation", "max-nodes-exceeded")
        assert perror(configure(a, "one", {"pubsub#max_items": "5"}))[0] == "not-acceptable"
        for i in range(6):
            ok(publish(a, "two", item_id="x%d" % i))
        assert [i for i, _ in items_of(get_items(a, "two"))] == ["x2", "x3", "x4", "x5"]
        big = "<b xmlns='urn:big'>%s</b>" % ("z" * 300)
        assert perror(publish(a, "one", big)) == ("not-acceptable", "payload-too-big")
        ok(publish(a, "one", "<b xmlns='urn:big'>%s</b>" % ("z" * 100)))
        # Deleting frees a place.
        ok(ps(a, "set", "<delete node='one'/>", owner=True))
        ok(create(a, "three"))
    finally:
        a.close()


def test_service_can_be_turned_off(make_server):
    srv = make_server("--pubsub", "no")
    ua, pa, _ = srv.new_account("ps")
    a = Client(srv, ua, pa)
    try:
        items = ok(a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_ITEMS, to=DOMAIN))
        assert SERVICE not in [i.get("jid") for i in items.iter(q(NS_DISCO_ITEMS, "item"))]
        assert perror(create(a, "x"))[0] == "remote-server-not-found"
        # PEP still works.
        ok(publish(a, "urn:pep", to=None))
    finally:
        a.close()


def test_robustness_against_odd_requests(server):
    a, = clients(server, "ps")
    try:
        long_name = "n" * 2000
        assert perror(create(a, long_name))[0] == "not-acceptable"
        assert perror(ps(a, "get", "<nothing-known/>"))[0] == "feature-not-implemented"
        assert perror(ps(a, "get", "<publish node='x'/>"))[0] == "bad-request"
        assert perror(a.iq("set", "<pubsub xmlns='%s'/>" % PS, to=SERVICE))[0] == "bad-request"
        assert perror(a.iq("get", "<query xmlns='urn:nothing'/>", to=SERVICE))[0] == \
            "service-unavailable"
        assert perror(a.iq("get", "<pubsub xmlns='%s'><items node='x'/></pubsub>" % PS,
                           to=SERVICE + "/res"))[0] == "service-unavailable"
        ok(a.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=SERVICE))
        n = node_name()
        ok(create(a, n))
        r = ps(a, "get", "<items node='%s'>%s</items>" % (n, "<item id='a'/>" * 5000), timeout=10)
        assert perror(r)[0] == "policy-violation"
    finally:
        close(a)


# ---- through a real client library ----

def test_slixmpp_xep_0060_round_trip(server, xmpp, arun):
    ua, pa, ja = server.new_account("ps")
    ub, pb, jb = server.new_account("ps")
    pub = xmpp(ja + "/p", pa, server.c2s_port, plugins=["xep_0030", "xep_0060", "xep_0004"])
    sub = xmpp(jb + "/s", pb, server.c2s_port, plugins=["xep_0030", "xep_0060", "xep_0004"])
    got = asyncio.Queue()
    sub.add_event_handler("pubsub_publish", lambda m: got.put_nowait(m))

    async def scenario():
        from slixmpp.xmlstream import ET
        await asyncio.gather(connect_and_wait(pub), connect_and_wait(sub))
        sub.send_presence()
        node = node_name("slix")
        await pub["xep_0060"].create_node(SERVICE, node)
        r = await sub["xep_0060"].subscribe(SERVICE, node)
        assert r["pubsub"]["subscription"]["subscription"] == "subscribed"
        await asyncio.sleep(0.1)
        payload = ET.fromstring("<telemetry xmlns='urn:dev'><cpu>7</cpu></telemetry>")
        await pub["xep_0060"].publish(SERVICE, node, id="m1", payload=payload)
        m = await asyncio.wait_for(got.get(), 5)
        assert m["pubsub_event"]["items"]["node"] == node
        assert m["pubsub_event"]["items"]["item"]["id"] == "m1"
        items = await sub["xep_0060"].get_items(SERVICE, node)
        assert [i["id"] for i in items["pubsub"]["items"]] == ["m1"]
        cfg = await pub["xep_0060"].get_node_config(SERVICE, node)
        form = cfg["pubsub_owner"]["configure"]["form"]
        assert form.get_fields()["pubsub#access_model"]["value"] == "open"
        await pub["xep_0060"].retract(SERVICE, node, "m1", notify=True)
        await pub["xep_0060"].delete_node(SERVICE, node)
    arun(scenario())
