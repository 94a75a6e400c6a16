"""XEP-0054 vcard-temp: one's own vCard (get, set, replace, delete), other
users' vCards through their bare JID, the errors the XEP names (no vCard,
no account, a set for someone else, a vCard too large), persistence
across a restart, and a real client's plugin."""
import asyncio
import xml.etree.ElementTree as ET

from harness import DOMAIN, NS_CLIENT, NS_DISCO_INFO, connect_and_wait, login, q, tostr
from iqutil import db_rows, error_of, request, result_of

NS_VCARD = "vcard-temp"

VCARD = ("<vCard xmlns='vcard-temp'><FN>Juliet Capulet</FN>"
         "<N><FAMILY>Capulet</FAMILY><GIVEN>Juliet</GIVEN><MIDDLE/></N>"
         "<NICKNAME>jc &amp; &lt;co&gt;</NICKNAME>"
         "<TEL><HOME/><VOICE/><NUMBER>+39 045 1234</NUMBER></TEL>"
         "<DESC>Ἀθῆναι, \u00e9t\u00e9 \U0001F339</DESC>"
         "<X-EXT xmlns='urn:example:ext' kind='a'><v>1</v></X-EXT></vCard>")


def canon(el):
    """A comparable form of an element: tag, attributes, stripped text, children."""
    return (el.tag, sorted(el.attrib.items()), (el.text or "").strip(),
            [canon(c) for c in el])


def parse(xml):
    return ET.fromstring(xml)


def session(server, prefix="vc"):
    user, pw, bare = server.new_account(prefix)
    s, full = login(server.tls_port, user, pw, direct_tls=True)
    return s, user, pw, bare


def get_vcard(s, iq_id, to=None):
    return request(s, "get", "<vCard xmlns='vcard-temp'/>", iq_id, to=to)


def set_vcard(s, xml, iq_id, to=None):
    return request(s, "set", xml, iq_id, to=to)


# ---- one's own vCard ----

def test_own_vcard_is_empty_before_any_set(server):
    s, _, _, _ = session(server)
    try:
        v = result_of(get_vcard(s, "v0"))
        assert v is not None and v.tag == q(NS_VCARD, "vCard") and len(v) == 0, tostr(v)
    finally:
        s.close()


def test_set_then_get_returns_the_same_vcard(server):
    s, _, _, bare = session(server)
    try:
        el = set_vcard(s, VCARD, "v1")
        assert result_of(el) is None
        got = result_of(get_vcard(s, "v2"))
        assert canon(got) == canon(parse(VCARD))
        # Addressed to one's own bare JID: the same answer, from that JID.
        el = get_vcard(s, "v3", to=bare)
        assert el.get("from") == bare, tostr(el)
        assert canon(result_of(el)) == canon(parse(VCARD))
    finally:
        s.close()


def test_set_replaces_the_whole_vcard(server):
    s, _, _, _ = session(server)
    try:
        assert result_of(set_vcard(s, VCARD, "a")) is None
        assert result_of(set_vcard(s, "<vCard xmlns='vcard-temp'><FN>Only</FN></vCard>", "b")) \
            is None
        got = result_of(get_vcard(s, "c"))
        assert canon(got) == canon(parse("<vCard xmlns='vcard-temp'><FN>Only</FN></vCard>"))
    finally:
        s.close()


def test_empty_vcard_set_deletes_it(server):
    a, _, _, bare_a = session(server)
    b, _, _, _ = session(server)
    try:
        assert result_of(set_vcard(a, VCARD, "s1")) is None
        assert result_of(get_vcard(b, "g1", to=bare_a)) is not None
        assert result_of(set_vcard(a, "<vCard xmlns='vcard-temp'/>", "s2")) is None
        assert len(result_of(get_vcard(a, "g2"))) == 0
        assert error_of(get_vcard(b, "g3", to=bare_a))[1] == "service-unavailable"
    finally:
        a.close()
        b.close()


# ---- other users' vCards ----

def test_other_user_reads_vcard_through_bare_jid(server):
    a, _, _, bare_a = session(server)
    b, _, _, _ = session(server)
    try:
        assert result_of(set_vcard(a, VCARD, "s")) is None
        el = get_vcard(b, "g", to=bare_a)
        assert el.get("from") == bare_a, tostr(el)
        assert canon(result_of(el)) == canon(parse(VCARD))
        # The server answered: a's own stream saw nothing.
        assert a.nothing_within(0.3)
    finally:
        a.close()
        b.close()


def test_other_user_reads_vcard_of_an_offline_account(server):
    a, _, _, bare_a = session(server)
    try:
        assert result_of(set_vcard(a, VCARD, "s")) is None
    finally:
        a.close()
    b, _, _, _ = session(server)
    try:
        assert canon(result_of(get_vcard(b, "g", to=bare_a))) == canon(parse(VCARD))
    finally:
        b.close()


def test_no_vcard_and_no_account_give_the_same_error(server):
    """XEP-0054 3.3: service-unavailable in both cases (no harvesting)."""
    _, _, bare_empty = server.new_account("novc")
    s, _, _, _ = session(server)
    try:
        e1 = error_of(get_vcard(s, "g1", to=bare_empty))
        e2 = error_of(get_vcard(s, "g2", to="nobody-here@" + DOMAIN))
        assert e1[:2] == e2[:2] == ("cancel", "service-unavailable")
    finally:
        s.close()


def test_server_itself_has_no_vcard(server):
    s, _, _, _ = session(server)
    try:
        assert error_of(get_vcard(s, "g", to=DOMAIN))[1] == "item-not-found"
    finally:
        s.close()


# ---- errors ----

def test_set_for_another_user_is_forbidden(server):
    a, _, _, bare_a = session(server)
    b, _, _, _ = session(server)
    try:
        assert result_of(set_vcard(a, VCARD, "s")) is None
        err = error_of(set_vcard(b, "<vCard xmlns='vcard-temp'><FN>Evil</FN></vCard>", "x",
                                 to=bare_a))
        assert err[:2] == ("auth", "forbidden")
        assert error_of(set_vcard(b, "<vCard xmlns='vcard-temp'/>", "y", to=DOMAIN))[1] == \
            "forbidden"
        # a's vCard is untouched.
        assert canon(result_of(get_vcard(a, "g"))) == canon(parse(VCARD))
    finally:
        a.close()
        b.close()


def test_vcard_over_the_size_limit_is_not_acceptable(make_server):
    srv = make_server("--max-vcard-bytes", "1024")
    s, _, _, _ = session(srv)
    try:
        small = "<vCard xmlns='vcard-temp'><DESC>%s</DESC></vCard>" % ("x" * 900)
        big = "<vCard xmlns='vcard-temp'><DESC>%s</DESC></vCard>" % ("y" * 1100)
        assert result_of(set_vcard(s, small, "ok")) is None
        err = error_of(set_vcard(s, big, "big"))
        assert err[:2] == ("modify", "not-acceptable"), err
        assert "1024" in (err[2] or ""), err
        # The stored vCard is still the small one.
        assert canon(result_of(get_vcard(s, "g"))) == canon(parse(small))
    finally:
        s.close()


def test_request_flood_is_bounded_and_every_request_answered(server):
    s, _, _, _ = session(server)
    try:
        n = 40
        s.send("".join("<iq type='get' id='f%d'><vCard xmlns='vcard-temp'/></iq>" % i
                       for i in range(n)))
        seen = {}
        while len(seen) < n:
            el = s.expect(q(NS_CLIENT, "iq"))
            assert el.get("id") not in seen, "answered twice: %s" % tostr(el)
            seen[el.get("id")] = el
        errors = 0
        for el in seen.values():
            if el.get("type") == "error":
                assert error_of(el)[1] == "resource-constraint", tostr(el)
                errors += 1
            else:
                assert result_of(el).tag == q(NS_VCARD, "vCard")
        # All arrive in one read, before any storage answer: the bound shows.
        assert 0 < errors < n
        assert s.nothing_within(0.3)
    finally:
        s.close()


def test_disco_lists_vcard_temp(server):
    s, _, _, _ = session(server)
    try:
        el = request(s, "get", "<query xmlns='%s'/>" % NS_DISCO_INFO, "d", to=DOMAIN)
        feats = [f.get("var") for f in result_of(el)]
        assert NS_VCARD in feats
    finally:
        s.close()


# ---- persistence ----

def test_vcard_survives_a_restart(make_server):
    srv = make_server()
    user, pw, bare = srv.new_account("vcr")
    s, _ = login(srv.tls_port, user, pw, direct_tls=True)
    try:
        assert result_of(set_vcard(s, VCARD, "s")) is None
    finally:
        s.close()
    srv.signal()
    assert srv.wait(10) == 0
    assert len(db_rows(srv, "SELECT vcard FROM vcards WHERE username = ?", (user,))) == 1
    srv.start()
    s, _ = login(srv.tls_port, user, pw, direct_tls=True)
    try:
        assert canon(result_of(get_vcard(s, "g"))) == canon(parse(VCARD))
    finally:
        s.close()


def test_account_removal_deletes_the_vcard(server):
    s, user, _, _ = session(server)
    try:
        assert result_of(set_vcard(s, VCARD, "s")) is None
    finally:
        s.close()
    assert db_rows(server, "SELECT count(*) FROM vcards WHERE username = ?", (user,)) == [(1,)]
    r = server.stanzactl("user", "del", user)
    assert r.returncode == 0, r.stderr
    assert db_rows(server, "SELECT count(*) FROM vcards WHERE username = ?", (user,)) == [(0,)]


# ---- a real client ----

def test_slixmpp_vcard_plugin_round_trip(server, xmpp, arun):
    ua, pa, ja = server.new_account("slvc")
    ub, pb, jb = server.new_account("slvc")
    a = xmpp(ja, pa, server.c2s_port, plugins=["xep_0054"])
    b = xmpp(jb, pb, server.c2s_port, plugins=["xep_0054"])

    async def scenario():
        await asyncio.gather(connect_and_wait(a), connect_and_wait(b))
        card = a["xep_0054"].make_vcard()
        card["FN"] = "Alice Example"
        card["NICKNAME"] = "alice"
        await a["xep_0054"].publish_vcard(card)
        own = await a["xep_0054"].get_vcard(cached=False)
        assert own["vcard_temp"]["FN"] == "Alice Example"
        other = await b["xep_0054"].get_vcard(ja, cached=False)
        assert "alice" in other["vcard_temp"]["NICKNAME"]
    arun(scenario())
