"""XEP-0352 Client State Indication: the stream feature, presence held
while inactive (only the latest per sender full JID, bounded), messages
and other stanzas passing at once after the held presence, and the flush
on <active/> before the next stanza is processed."""
import time

from harness import (NS_BIND, NS_CLIENT, NS_PING, DOMAIN, RawStream, connect_and_wait, login, q,
                     tostr)

NS_CSI = "urn:xmpp:csi:0"
NS_DELAY = "urn:xmpp:delay"


_sync_ids = iter(range(1, 1 << 30))


def drain(s):
    """Everything the server queued for s so far: a ping to the server and
    the elements that arrive before its answer (one stream is ordered, so
    nothing depends on timing)."""
    iq_id = "drain-%d" % next(_sync_ids)
    s.send("<iq type='get' id='%s' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>" % (iq_id, DOMAIN))
    got = []
    deadline = time.monotonic() + 10
    while True:
        el = s.next(max(0.01, deadline - time.monotonic()))
        if el.tag == q(NS_CLIENT, "iq") and el.get("id") == iq_id:
            return got
        got.append(el)


def status(el):
    return el.findtext(q(NS_CLIENT, "status"))


def sync(s, iq_id="sync"):
    """A ping to the server: once answered, everything s sent before was routed."""
    s.send("<iq type='get' id='%s' to='%s'><ping xmlns='%s'/></iq>" % (iq_id, DOMAIN, NS_PING))
    while True:
        el = s.next(10)
        if el.tag == q(NS_CLIENT, "iq") and el.get("id") == iq_id:
            return


def pres(s, to, text=None, ptype=None):
    """Directed presence, routed before this returns (so the order across
    streams is the order of the calls)."""
    t = " type='%s'" % ptype if ptype else ""
    body = "<status>%s</status>" % text if text else ""
    s.send("<presence to='%s'%s>%s</presence>" % (to, t, body))
    sync(s, "pres-sync")


class People:
    def __init__(self, server):
        ua, pa, self.alice = server.new_account("alice")
        ub, pb, self.bob = server.new_account("bob")
        uc, pc, self.carol = server.new_account("carol")
        self.a, self.fa = login(server.c2s_port, ua, pa, resource="phone")
        self.b1, self.fb1 = login(server.c2s_port, ub, pb, resource="b1")
        self.b2, self.fb2 = login(server.c2s_port, ub, pb, resource="b2")
        self.c, self.fc = login(server.c2s_port, uc, pc, resource="c")

    def close(self):
        for s in (self.a, self.b1, self.b2, self.c):
            s.close()


def test_csi_feature_is_offered_after_authentication_only(server):
    u, p, j = server.new_account("feat")
    s = RawStream(server.c2s_port)
    try:
        feats = s.open()
        assert feats.find(q(NS_CSI, "csi")) is None, tostr(feats)
        feats = s.starttls()
        assert feats.find(q(NS_CSI, "csi")) is None, tostr(feats)
        assert s.scram_login(u, p)[0] == "success"
        feats = s.restart()
        assert feats.find(q(NS_CSI, "csi")) is not None, tostr(feats)
        assert feats.find(q(NS_BIND, "bind")) is not None
    finally:
        s.close()


def test_inactive_holds_latest_presence_per_full_jid_and_active_flushes_in_order(server):
    p = People(server)
    try:
        p.a.send("<inactive xmlns='%s'/>" % NS_CSI)
        sync(p.a, "s0")
        pres(p.b1, p.fa, "b1-first")
        pres(p.b1, p.fa, "b1-second")
        pres(p.b2, p.fa, "b2-only")
        pres(p.c, p.fa, "carol")
        pres(p.b1, p.fa, "b1-latest")
        for s in (p.b1, p.b2, p.c):
            sync(s)
        assert p.a.nothing_within(0.3), "presence reached an inactive client"
        # <active/> then a ping: the held presence comes first (XEP-0352 5.1).
        p.a.send("<active xmlns='%s'/><iq type='get' id='after' to='%s'><ping xmlns='%s'/></iq>"
                 % (NS_CSI, DOMAIN, NS_PING))
        got = [p.a.next(5) for _ in range(4)]
        pres_els = got[:3]
        assert [(e.get("from"), status(e)) for e in pres_els] == [
            (p.fb2, "b2-only"), (p.fc, "carol"), (p.fb1, "b1-latest")], \
            [tostr(e) for e in got]
        for e in pres_els:
            d = e.find(q(NS_DELAY, "delay"))
            assert d is not None and d.get("stamp", "").endswith("Z"), tostr(e)
            assert d.get("from") == DOMAIN
        assert got[3].tag == q(NS_CLIENT, "iq") and got[3].get("id") == "after"
        # Active again: presence flows at once, without a stamp.
        pres(p.c, p.fa, "live")
        el = p.a.expect(q(NS_CLIENT, "presence"))
        assert status(el) == "live" and el.find(q(NS_DELAY, "delay")) is None
        assert p.a.nothing_within(0.2)
    finally:
        p.close()


def test_unavailable_replaces_held_available_presence(server):
    p = People(server)
    try:
        p.a.send("<inactive xmlns='%s'/>" % NS_CSI)
        sync(p.a, "s0")
        pres(p.b1, p.fa, "here")
        pres(p.b1, p.fa, ptype="unavailable")
        sync(p.b1)
        assert p.a.nothing_within(0.2)
        p.a.send("<active xmlns='%s'/>" % NS_CSI)
        got = drain(p.a)
        assert [(e.get("from"), e.get("type")) for e in got] == [(p.fb1, "unavailable")], \
            [tostr(e) for e in got]
    finally:
        p.close()


def test_message_passes_at_once_after_the_held_presence(server):
    p = People(server)
    try:
        p.a.send("<inactive xmlns='%s'/>" % NS_CSI)
        sync(p.a, "s0")
        pres(p.b1, p.fa, "b1")
        pres(p.c, p.fa, "carol")
        for s in (p.b1, p.c):
            sync(s)
        assert p.a.nothing_within(0.2)
        p.b1.send("<message to='%s' type='chat' id='m1'><body>wake up</body></message>" % p.fa)
        got = [p.a.next(5) for _ in range(3)]
        assert [e.tag for e in got] == [q(NS_CLIENT, "presence")] * 2 + [q(NS_CLIENT, "message")]
        assert [status(e) for e in got[:2]] == ["b1", "carol"]
        assert got[2].get("id") == "m1"
        # Still inactive: the next presence is held again.
        pres(p.c, p.fa, "later")
        sync(p.c)
        assert p.a.nothing_within(0.3)
        # An iq passes too, flushing first.
        p.b2.send("<iq type='get' id='v1' to='%s'><query xmlns='jabber:iq:version'/></iq>" % p.fa)
        got = [p.a.next(5) for _ in range(2)]
        assert status(got[0]) == "later" and got[1].get("id") == "v1", [tostr(e) for e in got]
    finally:
        p.close()


def test_held_presence_is_bounded_by_count(make_server):
    srv = make_server("--max-csi-held-presence", "2")
    p = People(srv)
    try:
        p.a.send("<inactive xmlns='%s'/>" % NS_CSI)
        sync(p.a, "s0")
        pres(p.b1, p.fa, "1")
        pres(p.b2, p.fa, "2")
        pres(p.b1, p.fa, "1b")  # same sender: still two held
        for s in (p.b1, p.b2):
            sync(s)
        assert p.a.nothing_within(0.3)
        pres(p.c, p.fa, "3")  # a third sender: everything goes out
        got = drain(p.a)
        assert [status(e) for e in got] == ["2", "1b", "3"], [tostr(e) for e in got]
        # And holding starts over.
        pres(p.c, p.fa, "4")
        sync(p.c)
        assert p.a.nothing_within(0.3)
    finally:
        p.close()


def test_held_presence_is_bounded_by_bytes(make_server):
    srv = make_server("--max-csi-held-bytes", "4096")
    p = People(srv)
    try:
        p.a.send("<inactive xmlns='%s'/>" % NS_CSI)
        sync(p.a, "s0")
        big = "x" * 3000
        pres(p.b1, p.fa, big)
        pres(p.b1, p.fa, big + "y")  # replaces, but the old copy still counts
        sync(p.b1)
        got = drain(p.a)
        assert got and status(got[-1]) == big + "y", [tostr(e)[:80] for e in got]
    finally:
        p.close()


def test_repeated_indications_and_session_end_while_holding(server):
    p = People(server)
    try:
        p.a.send("<active xmlns='%s'/><inactive xmlns='%s'/><inactive xmlns='%s'/>"
                 % (NS_CSI, NS_CSI, NS_CSI))
        sync(p.a, "s0")
        pres(p.b1, p.fa, "held")
        sync(p.b1)
        assert p.a.nothing_within(0.2)
        # The client goes away with presence held: nothing leaks or breaks.
        p.a.close()
        time.sleep(0.1)
        pres(p.b2, p.fa, "after")
        sync(p.b2)
    finally:
        p.close()
    # The server is still fine.
    u, pw, j = server.new_account("after")
    s, full = login(server.c2s_port, u, pw)
    sync(s)
    s.close()


def test_slixmpp_enables_csi_from_the_feature(server, xmpp, arun):
    u, pw, j = server.new_account("slix")
    c = xmpp(j, pw, server.c2s_port, plugins=["xep_0352", "xep_0199"])

    async def scenario():
        await connect_and_wait(c)
        assert c["xep_0352"].enabled, "slixmpp did not see the csi stream feature"
        c["xep_0352"].send_inactive()
        c["xep_0352"].send_active()
        # The stream is still healthy after both indications.
        await c["xep_0199"].ping(jid=DOMAIN, timeout=5)
    arun(scenario())
