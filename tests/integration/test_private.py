"""XEP-0049 Private XML Storage: store, retrieve, replace, delete, several
elements per request, isolation between accounts, the errors the XEP
names (another user's data, reserved namespaces, no child element), the
size and count limits, persistence across a restart, and XEP-0048
bookmarks through a real client."""
import xml.etree.ElementTree as ET

from harness import DOMAIN, NS_DISCO_INFO, connect_and_wait, login, q, tostr
from iqutil import db_rows, error_of, request, result_of

NS_PRIVATE = "jabber:iq:private"

PREFS = ("<prefs xmlns='urn:example:prefs' v='2'><nick>Hamlet &amp; co</nick>"
         "<theme xmlns='urn:example:theme'>dark \u263e</theme></prefs>")


def canon(el):
    return (el.tag, sorted(el.attrib.items()), (el.text or "").strip(),
            [canon(c) for c in el])


def session(server, prefix="pv"):
    user, pw, bare = server.new_account(prefix)
    s, _ = login(server.tls_port, user, pw, direct_tls=True)
    return s, user, pw, bare


def query(inner):
    return "<query xmlns='%s'>%s</query>" % (NS_PRIVATE, inner)


def priv_get(s, inner, iq_id, to=None):
    return request(s, "get", query(inner), iq_id, to=to)


def priv_set(s, inner, iq_id, to=None):
    return request(s, "set", query(inner), iq_id, to=to)


def stored(el):
    """The children of the <query/> in a get result."""
    qe = result_of(el)
    assert qe is not None and qe.tag == q(NS_PRIVATE, "query"), tostr(el)
    return list(qe)


# ---- storing and retrieving ----

def test_store_then_retrieve(server):
    s, _, _, _ = session(server)
    try:
        assert result_of(priv_set(s, PREFS, "s")) is None
        got = stored(priv_get(s, "<prefs xmlns='urn:example:prefs'/>", "g"))
        assert [canon(e) for e in got] == [canon(ET.fromstring(PREFS))]
    finally:
        s.close()


def test_nothing_stored_returns_the_empty_element(server):
    s, _, _, _ = session(server)
    try:
        got = stored(priv_get(s, "<exodus xmlns='exodus:prefs'/>", "g"))
        assert len(got) == 1 and got[0].tag == q("exodus:prefs", "exodus") and len(got[0]) == 0
    finally:
        s.close()


def test_several_elements_in_one_request(server):
    s, _, _, _ = session(server)
    try:
        two = ("<a xmlns='urn:example:a'><x>1</x></a>"
               "<storage xmlns='storage:bookmarks'><url name='n' url='http://e.example/'/>"
               "</storage>")
        assert result_of(priv_set(s, two, "s")) is None
        got = stored(priv_get(s, "<storage xmlns='storage:bookmarks'/><a xmlns='urn:example:a'/>"
                                 "<none xmlns='urn:example:none'/>", "g"))
        assert [e.tag for e in got] == [q("storage:bookmarks", "storage"),
                                        q("urn:example:a", "a"), q("urn:example:none", "none")]
        assert got[0].find(q("storage:bookmarks", "url")).get("url") == "http://e.example/"
        assert got[1].find(q("urn:example:a", "x")).text == "1"
        assert len(got[2]) == 0
    finally:
        s.close()


def test_same_namespace_different_elements_are_kept_apart(server):
    s, _, _, _ = session(server)
    try:
        assert result_of(priv_set(s, "<one xmlns='urn:example:n'>1</one>"
                                     "<two xmlns='urn:example:n'>2</two>", "s")) is None
        assert stored(priv_get(s, "<two xmlns='urn:example:n'/>", "g"))[0].text == "2"
        assert stored(priv_get(s, "<one xmlns='urn:example:n'/>", "h"))[0].text == "1"
    finally:
        s.close()


def test_replace_and_delete(server):
    s, user, _, _ = session(server)
    try:
        assert result_of(priv_set(s, "<p xmlns='urn:example:r'>old</p>", "s1")) is None
        assert result_of(priv_set(s, "<p xmlns='urn:example:r'>new</p>", "s2")) is None
        assert stored(priv_get(s, "<p xmlns='urn:example:r'/>", "g1"))[0].text == "new"
        # An empty element (no attributes, no content) deletes.
        assert result_of(priv_set(s, "<p xmlns='urn:example:r'/>", "s3")) is None
        got = stored(priv_get(s, "<p xmlns='urn:example:r'/>", "g2"))
        assert got[0].text is None and len(got[0]) == 0
        assert db_rows(server, "SELECT count(*) FROM private_xml WHERE username = ?",
                       (user,)) == [(0,)]
    finally:
        s.close()


def test_addressed_to_own_bare_jid_or_server(server):
    s, _, _, bare = session(server)
    try:
        assert result_of(priv_set(s, "<p xmlns='urn:example:t'>b</p>", "s", to=bare)) is None
        el = priv_get(s, "<p xmlns='urn:example:t'/>", "g", to=DOMAIN)
        assert stored(el)[0].text == "b"
    finally:
        s.close()


def test_accounts_do_not_see_each_others_data(server):
    a, _, _, _ = session(server)
    b, _, _, _ = session(server)
    try:
        assert result_of(priv_set(a, "<secret xmlns='urn:example:s'>a's</secret>", "s")) is None
        got = stored(priv_get(b, "<secret xmlns='urn:example:s'/>", "g"))
        assert got[0].text is None
    finally:
        a.close()
        b.close()


# ---- errors ----

def test_other_users_data_is_forbidden(server):
    a, _, _, bare_a = session(server)
    b, _, _, _ = session(server)
    try:
        assert result_of(priv_set(a, "<x xmlns='urn:example:f'>mine</x>", "s")) is None
        err = error_of(priv_get(b, "<x xmlns='urn:example:f'/>", "g", to=bare_a))
        assert err[:2] == ("auth", "forbidden")
        assert error_of(priv_set(b, "<x xmlns='urn:example:f'>evil</x>", "s2", to=bare_a))[1] == \
            "forbidden"
        # Also for an account that does not exist: no difference to observe.
        assert error_of(priv_get(b, "<x xmlns='urn:example:f'/>", "g2",
                                 to="nobody-here@" + DOMAIN))[1] == "forbidden"
        assert stored(priv_get(a, "<x xmlns='urn:example:f'/>", "g3"))[0].text == "mine"
    finally:
        a.close()
        b.close()


def test_reserved_namespaces_are_not_acceptable(server):
    s, _, _, _ = session(server)
    try:
        for i, inner in enumerate(["<vCard xmlns='vcard-temp'><FN>H</FN></vCard>",
                                   "<query xmlns='jabber:iq:roster'/>",
                                   "<x xmlns='jabber:client'/>",
                                   "<q xmlns='http://jabber.org/protocol/muc'/>",
                                   "<bare/>",
                                   "<nons xmlns=''/>"]):
            for kind in ("get", "set"):
                el = request(s, kind, query(inner), "r%d%s" % (i, kind))
                assert error_of(el)[:2] == ("modify", "not-acceptable"), (inner, tostr(el))
        # One reserved element spoils the whole request: nothing is stored.
        el = priv_set(s, "<ok xmlns='urn:example:ok'>1</ok><x xmlns='jabber:x:data'/>", "mix")
        assert error_of(el)[1] == "not-acceptable"
        assert stored(priv_get(s, "<ok xmlns='urn:example:ok'/>", "g"))[0].text is None
    finally:
        s.close()


def test_query_without_a_child_is_not_acceptable(server):
    s, _, _, _ = session(server)
    try:
        assert error_of(priv_get(s, "", "g"))[1] == "not-acceptable"
        assert error_of(priv_set(s, "text only", "s"))[1] == "not-acceptable"
    finally:
        s.close()


def test_element_over_the_size_limit_is_not_acceptable(make_server):
    srv = make_server("--max-private-bytes", "1024")
    s, _, _, _ = session(srv)
    try:
        small = "<a xmlns='urn:example:z'>%s</a>" % ("x" * 900)
        big = "<b xmlns='urn:example:z'>%s</b>" % ("y" * 1100)
        # The limit is per element: two under it together are fine.
        assert result_of(priv_set(s, small + small.replace("<a ", "<c ").replace("</a>", "</c>"),
                                  "ok")) is None
        other = "<a xmlns='urn:example:z'>%s</a>" % ("w" * 900)
        err = error_of(priv_set(s, other + big, "big"))
        assert err[:2] == ("modify", "not-acceptable") and "1024" in (err[2] or ""), err
        # All or nothing: the small element of the refused request was not written.
        assert stored(priv_get(s, "<a xmlns='urn:example:z'/>", "g"))[0].text == "x" * 900
        assert stored(priv_get(s, "<b xmlns='urn:example:z'/>", "h"))[0].text is None
    finally:
        s.close()


def test_number_of_stored_elements_is_bounded(server):
    s, _, _, _ = session(server)
    limit, per = 256, 32
    try:
        for r in range(limit // per):
            inner = "".join("<e%d xmlns='urn:example:many'>v</e%d>" % (r * per + i, r * per + i)
                            for i in range(per))
            assert result_of(priv_set(s, inner, "m%d" % r)) is None
        err = error_of(priv_set(s, "<extra xmlns='urn:example:many'>v</extra>", "over"))
        assert err[1] == "not-acceptable" and str(limit) in (err[2] or ""), err
        # Replacing what exists still works at the limit, and so does deleting.
        assert result_of(priv_set(s, "<e0 xmlns='urn:example:many'>w</e0>", "rep")) is None
        assert result_of(priv_set(s, "<e1 xmlns='urn:example:many'/>", "del")) is None
        assert result_of(priv_set(s, "<extra xmlns='urn:example:many'>v</extra>", "now")) is None
    finally:
        s.close()


def test_disco_lists_private_storage(server):
    s, _, _, bare = session(server)
    try:
        for to in (DOMAIN, bare):
            el = request(s, "get", "<query xmlns='%s'/>" % NS_DISCO_INFO, "d", to=to)
            assert NS_PRIVATE in [f.get("var") for f in result_of(el)]
    finally:
        s.close()


# ---- persistence ----

def test_private_xml_survives_a_restart(make_server):
    srv = make_server()
    user, pw, _ = srv.new_account("pvr")
    s, _ = login(srv.tls_port, user, pw, direct_tls=True)
    try:
        assert result_of(priv_set(s, PREFS, "s")) is None
    finally:
        s.close()
    srv.signal()
    assert srv.wait(10) == 0
    srv.start()
    s, _ = login(srv.tls_port, user, pw, direct_tls=True)
    try:
        got = stored(priv_get(s, "<prefs xmlns='urn:example:prefs'/>", "g"))
        assert [canon(e) for e in got] == [canon(ET.fromstring(PREFS))]
    finally:
        s.close()


# ---- a real client ----

def test_slixmpp_bookmarks_in_private_storage(server, xmpp, arun):
    from slixmpp.plugins.xep_0048.stanza import Bookmarks

    user, pw, jid = server.new_account("bm")
    c1 = xmpp(jid + "/one", pw, server.c2s_port, plugins=["xep_0048"])
    c2 = xmpp(jid + "/two", pw, server.c2s_port, plugins=["xep_0048"])

    async def scenario():
        await connect_and_wait(c1)
        bm = Bookmarks()
        bm.add_conference("room@conference.example", "hamlet", name="Elsinore", autojoin=True)
        bm.add_url("https://example.org/", name="Example")
        await c1["xep_0048"].set_bookmarks(bm, method="xep_0049")
        await connect_and_wait(c2)
        got = await c2["xep_0048"].get_bookmarks(method="xep_0049")
        confs = got["private"]["bookmarks"]["conferences"]
        assert [str(c["jid"]) for c in confs] == ["room@conference.example"]
        assert confs[0]["nick"] == "hamlet"
    arun(scenario())
