"""XEP-0115 Entity Capabilities of the server (the <c/> stream feature,
its 'ver' recomputed here from disco#info, the caps node) and XEP-0030
answers for accounts (what another entity may learn about an account)."""
import asyncio
import base64
import hashlib
import time

from harness import (DOMAIN, NS_BIND, NS_DISCO_INFO, RawStream, connect_and_wait,
                     login, q, tostr)
from iqutil import error_of, request, result_of, set_roster_item

NS_CAPS = "http://jabber.org/protocol/caps"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_XML = "http://www.w3.org/XML/1998/namespace"
CAPS_NODE = "https://stanzad.example/caps"


def caps_of(features):
    c = features.find(q(NS_CAPS, "c"))
    assert c is not None, "no caps in %s" % tostr(features)
    return c


def verstring(query):
    """XEP-0115 section 5.1 over a disco#info <query/>, extended information
    forms (XEP-0128, e.g. the XEP-0157 serverinfo form) included."""
    ids = sorted((i.get("category"), i.get("type") or "", i.get("{%s}lang" % NS_XML) or "",
                  i.get("name") or "") for i in query.findall(q(NS_DISCO_INFO, "identity")))
    feats = sorted(f.get("var") for f in query.findall(q(NS_DISCO_INFO, "feature")))
    s = "".join("%s/%s/%s/%s<" % i for i in ids) + "".join(f + "<" for f in feats)
    xd = "jabber:x:data"
    forms = []
    for x in query.findall(q(xd, "x")):
        fields = {f.get("var"): sorted(v.text or "" for v in f.findall(q(xd, "value")))
                  for f in x.findall(q(xd, "field"))}
        forms.append((fields.pop("FORM_TYPE")[0], fields))
    for form_type, fields in sorted(forms):
        s += form_type + "<" + "".join(var + "<" + "".join(v + "<" for v in fields[var])
                                       for var in sorted(fields))
    return base64.b64encode(hashlib.sha1(s.encode("utf-8")).digest()).decode()


def disco_info(s, iq_id, to=DOMAIN, node=None):
    node_attr = " node='%s'" % node if node else ""
    return request(s, "get", "<query xmlns='%s'%s/>" % (NS_DISCO_INFO, node_attr), iq_id, to=to)


# ---- the stream feature ----

def test_caps_feature_before_and_after_authentication(server):
    s = RawStream(server.tls_port, direct_tls=True)
    try:
        pre = caps_of(s.open())
        assert pre.get("hash") == "sha-1" and pre.get("node") == CAPS_NODE
        assert len(base64.b64decode(pre.get("ver"))) == 20
    finally:
        s.close()
    user, pw, _ = server.new_account("caps")
    s = RawStream(server.tls_port, direct_tls=True)
    try:
        s.open()
        assert s.scram_login(user, pw)[0] == "success"
        feats = s.restart()
        assert feats.find(q(NS_BIND, "bind")) is not None
        post = caps_of(feats)
        assert dict(post.attrib) == dict(pre.attrib)
    finally:
        s.close()


def test_ver_is_the_hash_of_the_servers_disco_info(server):
    user, pw, _ = server.new_account("caps")
    s, _ = login(server.tls_port, user, pw, direct_tls=True)
    try:
        ver = RawStream(server.tls_port, direct_tls=True)
        try:
            c = caps_of(ver.open())
        finally:
            ver.close()
        info = result_of(disco_info(s, "d"))
        assert verstring(info) == c.get("ver")
        feats = [f.get("var") for f in info.findall(q(NS_DISCO_INFO, "feature"))]
        # Unique features (a duplicate would make every client reject the caps).
        assert len(feats) == len(set(feats))
        assert NS_CAPS in feats
        for ns in ("vcard-temp", "jabber:iq:private", "urn:xmpp:time", "jabber:iq:last"):
            assert ns in feats, ns
    finally:
        s.close()


def test_caps_node_answers_the_same_info(server):
    user, pw, _ = server.new_account("caps")
    s, _ = login(server.tls_port, user, pw, direct_tls=True)
    probe = RawStream(server.tls_port, direct_tls=True)
    try:
        ver = caps_of(probe.open()).get("ver")
        node = "%s#%s" % (CAPS_NODE, ver)
        plain = result_of(disco_info(s, "d1"))
        via_node = result_of(disco_info(s, "d2", node=node))
        assert via_node.get("node") == node
        assert sorted(tostr(c) for c in via_node) == sorted(tostr(c) for c in plain)
        assert verstring(via_node) == ver
        # Other nodes do not exist.
        for bad in (CAPS_NODE, CAPS_NODE + "#AAAA", "http://other.example/#" + ver):
            assert error_of(disco_info(s, "d3", node=bad))[1] == "item-not-found", bad
    finally:
        probe.close()
        s.close()


def test_server_disco_items_lists_only_its_services(server):
    user, pw, _ = server.new_account("caps")
    s, _ = login(server.tls_port, user, pw, direct_tls=True)
    try:
        el = request(s, "get", "<query xmlns='%s'/>" % NS_DISCO_ITEMS, "i", to=DOMAIN)
        items = result_of(el)
        assert items.tag == q(NS_DISCO_ITEMS, "query")
        # Items are the subdomain services (conference., pubsub., ...), nothing else.
        for it in items:
            assert it.tag == q(NS_DISCO_ITEMS, "item")
            jid = it.get("jid")
            assert jid.endswith("." + DOMAIN) and "@" not in jid and "/" not in jid, jid
    finally:
        s.close()


def test_slixmpp_validates_and_caches_the_server_caps(server, xmpp, arun):
    user, pw, jid = server.new_account("slcaps")
    c = xmpp(jid, pw, server.c2s_port, plugins=["xep_0030", "xep_0115"])

    async def scenario():
        await connect_and_wait(c)
        # slixmpp fetches NODE#VER, recomputes the hash and only then
        # records the server's ver: a wrong hash never gets here.
        deadline = time.monotonic() + 5
        while True:
            ver = await c["xep_0115"].get_verstring(DOMAIN)
            if ver:
                break
            assert time.monotonic() < deadline, "slixmpp did not accept the server's caps"
            await asyncio.sleep(0.05)
        info = await c["xep_0115"].get_caps(verstring=ver)
        assert "urn:xmpp:time" in info["features"]
    arun(scenario())


# ---- disco#info and #items for accounts (XEP-0030 section 8) ----

def test_account_info_needs_a_presence_subscription(server):
    ut, pt, bt = server.new_account("acct")
    ua, pa, ba = server.new_account("asker")
    s, _ = login(server.tls_port, ua, pa, direct_tls=True)
    try:
        assert error_of(disco_info(s, "a1", to=bt))[:2] == ("cancel", "service-unavailable")
        assert error_of(disco_info(s, "a2", to="nobody-here@" + DOMAIN))[1] == \
            "service-unavailable"
        set_roster_item(server, ut, ba, "to")
        assert error_of(disco_info(s, "a3", to=bt))[1] == "service-unavailable"
        set_roster_item(server, ut, ba, "from")
        el = disco_info(s, "a4", to=bt)
        assert el.get("from") == bt, tostr(el)
        info = result_of(el)
        ids = [(i.get("category"), i.get("type")) for i in info.findall(q(NS_DISCO_INFO,
                                                                            "identity"))]
        # Every account is also a PEP service (XEP-0163 9.1).
        assert ids == [("account", "registered"), ("pubsub", "pep")]
        feats = {f.get("var") for f in info.findall(q(NS_DISCO_INFO, "feature"))}
        assert {"vcard-temp", "jabber:iq:last", NS_DISCO_INFO} <= feats
        # Only what the asker may use on that JID.
        assert not feats & {"jabber:iq:private", "jabber:iq:register", NS_CAPS}
        # An account has no nodes; only a subscriber learns that much.
        assert error_of(disco_info(s, "a5", to=bt, node="x"))[1] == "item-not-found"
        set_roster_item(server, ut, ba, "none")
        assert error_of(disco_info(s, "a6", to=bt, node="x"))[1] == "service-unavailable"
    finally:
        s.close()


def test_own_account_info(server):
    user, pw, bare = server.new_account("acct")
    s, _ = login(server.tls_port, user, pw, direct_tls=True)
    try:
        info = result_of(disco_info(s, "o", to=bare))
        ids = [(i.get("category"), i.get("type")) for i in info.findall(q(NS_DISCO_INFO,
                                                                            "identity"))]
        assert ids == [("account", "registered"), ("pubsub", "pep")]
        feats = {f.get("var") for f in info.findall(q(NS_DISCO_INFO, "feature"))}
        assert {"jabber:iq:private", "vcard-temp"} <= feats
    finally:
        s.close()


def test_account_items_are_empty_whoever_asks(server):
    _, _, bt = server.new_account("acct")
    user, pw, _ = server.new_account("asker")
    s, _ = login(server.tls_port, user, pw, direct_tls=True)
    try:
        for i, to in enumerate((bt, "nobody-here@" + DOMAIN)):
            for node in ("", " node='x'"):
                el = request(s, "get", "<query xmlns='%s'%s/>" % (NS_DISCO_ITEMS, node),
                             "i%d%d" % (i, len(node)), to=to)
                items = result_of(el)
                assert items is not None and len(items) == 0, tostr(el)
    finally:
        s.close()


def test_unsupported_payload_to_an_account_is_service_unavailable(server):
    _, _, bt = server.new_account("acct")
    user, pw, _ = server.new_account("asker")
    s, _ = login(server.tls_port, user, pw, direct_tls=True)
    try:
        el = request(s, "get", "<ping xmlns='urn:xmpp:ping'/>", "p", to=bt)
        assert error_of(el)[1] == "service-unavailable"
        el = request(s, "get", "<query xmlns='jabber:iq:version'/>", "v", to=bt)
        assert error_of(el)[1] == "service-unavailable"
        # Results and errors to someone's bare JID are dropped, never answered.
        s.send("<iq type='result' id='r' to='%s'/>" % bt)
        assert s.nothing_within(0.3)
    finally:
        s.close()
