"""XEP-0191 Blocking Command: the block list protocol (get, block, unblock,
unblock all, pushes), its errors and limit, enforcement on every stanza
kind in both directions, JID matching, and persistence across a restart."""
import asyncio
import time

import pytest

from harness import (DOMAIN, NS_CLIENT, NS_DISCO_INFO, NS_STANZAS, connect_and_wait, login, q,
                     tostr, start_spread)

NS_BLOCKING = "urn:xmpp:blocking"
NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors"


# ---- helpers ----

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


def request(s, iq_type, payload, iq_id, to=None):
    """Sends an iq and returns (answer, other elements received before it)."""
    to_attr = " to='%s'" % to if to else ""
    s.send("<iq type='%s' id='%s'%s>%s</iq>" % (iq_type, iq_id, to_attr, payload))
    others = []
    deadline = time.monotonic() + 10
    while True:
        el = s.next(max(0.01, deadline - time.monotonic()))
        if el.tag == q(NS_CLIENT, "iq") and el.get("id") == iq_id:
            return el, others
        others.append(el)


def items_xml(jids):
    return "".join("<item jid='%s'/>" % j for j in jids)


def get_list(s, iq_id="bl-get"):
    el, _ = request(s, "get", "<blocklist xmlns='%s'/>" % NS_BLOCKING, iq_id)
    assert el.get("type") == "result", tostr(el)
    bl = el.find(q(NS_BLOCKING, "blocklist"))
    assert bl is not None, tostr(el)
    return sorted(i.get("jid") for i in bl.findall(q(NS_BLOCKING, "item")))


def block(s, jids, iq_id="bl-block"):
    el, others = request(s, "set", "<block xmlns='%s'>%s</block>" % (NS_BLOCKING, items_xml(jids)),
                         iq_id)
    return el, others


def unblock(s, jids, iq_id="bl-unblock"):
    el, others = request(s, "set", "<unblock xmlns='%s'>%s</unblock>" %
                         (NS_BLOCKING, items_xml(jids)), iq_id)
    return el, others


def error_of(el):
    """(error type, defined condition, application conditions) of an error stanza."""
    assert el.get("type") == "error", "not an error: %s" % tostr(el)
    err = el.find(q(NS_CLIENT, "error"))
    assert err is not None, tostr(el)
    conds = [c.tag.split("}")[1] for c in err if c.tag.startswith("{%s}" % NS_STANZAS)
             and not c.tag.endswith("}text")]
    assert len(conds) == 1, tostr(el)
    app = [c.tag for c in err if not c.tag.startswith("{%s}" % NS_STANZAS)]
    return err.get("type"), conds[0], app


def is_push(el, kind):
    return (el.tag == q(NS_CLIENT, "iq") and el.get("type") == "set" and
            el.find(q(NS_BLOCKING, kind)) is not None)


def push_items(el, kind):
    return sorted(i.get("jid") for i in el.find(q(NS_BLOCKING, kind)).findall(q(NS_BLOCKING, "item")))


def available(*streams):
    """Initial presence on each stream, then everything it caused is read:
    the first round makes sure every presence was handled, the second
    reads what each stream was sent meanwhile."""
    for s in streams:
        s.send("<presence/>")
    for _ in range(2):
        for s in streams:
            drain(s)


def two_accounts(server, a="alice", b="bob"):
    ua, pa, ja = server.new_account(a)
    ub, pb, jb = server.new_account(b)
    return (ua, pa, ja), (ub, pb, jb)


# ---- discovery and the list itself ----

def test_server_advertises_blocking_in_disco(server):
    u, p, j = server.new_account("disco")
    s, full = login(server.c2s_port, u, p)
    try:
        el, _ = request(s, "get", "<query xmlns='%s'/>" % NS_DISCO_INFO, "d1", to=DOMAIN)
        feats = [f.get("var") for f in el.find(q(NS_DISCO_INFO, "query"))
                 if f.tag == q(NS_DISCO_INFO, "feature")]
        assert NS_BLOCKING in feats, tostr(el)
    finally:
        s.close()


def test_block_normalizes_dedups_answers_and_pushes_to_resources_that_asked(server):
    u, p, j = server.new_account("owner")
    r1, f1 = login(server.c2s_port, u, p, resource="r1")
    r2, f2 = login(server.c2s_port, u, p, resource="r2")
    r3, f3 = login(server.c2s_port, u, p, resource="r3")
    try:
        assert get_list(r1) == []
        assert get_list(r2) == []
        # r3 never asks for the list: it gets no pushes (section 3.3).
        el, others = block(r1, ["Mallory@LocalHost", "evil.example", "mallory@localhost",
                                "x@evil.example/Res"])
        assert el.get("type") == "result", tostr(el)
        assert el.find("*") is None, "a block result carries no payload: %s" % tostr(el)
        want = ["evil.example", "mallory@localhost", "x@evil.example/Res"]
        pushes = [e for e in others + drain(r1) if is_push(e, "block")]
        assert len(pushes) == 1 and push_items(pushes[0], "block") == want
        assert pushes[0].get("to") == f1
        got2 = [e for e in drain(r2) if is_push(e, "block")]
        assert len(got2) == 1 and push_items(got2[0], "block") == want and got2[0].get("to") == f2
        assert not [e for e in drain(r3) if is_push(e, "block")]
        assert get_list(r3) == want
        # Blocking an item again is fine and changes nothing.
        el, _ = block(r1, ["mallory@localhost"], "again")
        assert el.get("type") == "result"
        assert get_list(r1, "g2") == want
    finally:
        for s in (r1, r2, r3):
            s.close()


def test_block_command_errors(server):
    u, p, j = server.new_account("errs")
    s, full = login(server.c2s_port, u, p)
    try:
        cases = [
            ("set", "<block xmlns='%s'/>" % NS_BLOCKING, "bad-request"),
            ("set", "<block xmlns='%s'><item/></block>" % NS_BLOCKING, "bad-request"),
            ("set", "<block xmlns='%s'><item jid='a@b@c'/></block>" % NS_BLOCKING,
             "jid-malformed"),
            ("set", "<block xmlns='%s'><item jid=''/></block>" % NS_BLOCKING, "jid-malformed"),
            ("set", "<block xmlns='%s'><foo jid='x@y'/></block>" % NS_BLOCKING, "bad-request"),
            ("set", "<block xmlns='%s'><item jid='%s'/></block>" % (NS_BLOCKING, j.upper()),
             "not-acceptable"),
            ("set", "<block xmlns='%s'><item jid='%s/other'/></block>" % (NS_BLOCKING, j),
             "not-acceptable"),
            ("set", "<blocklist xmlns='%s'/>" % NS_BLOCKING, "bad-request"),
            ("get", "<block xmlns='%s'><item jid='x@y'/></block>" % NS_BLOCKING, "bad-request"),
            ("get", "<unblock xmlns='%s'/>" % NS_BLOCKING, "bad-request"),
        ]
        for i, (t, payload, cond) in enumerate(cases):
            el, _ = request(s, t, payload, "e%d" % i)
            assert error_of(el)[1] == cond, "%s: %s" % (payload, tostr(el))
        # A valid item next to a bad one: nothing is stored.
        el, _ = request(s, "set", "<block xmlns='%s'><item jid='ok@x'/><item jid='@@'/></block>"
                        % NS_BLOCKING, "mixed")
        assert error_of(el)[1] == "jid-malformed"
        assert get_list(s) == []
    finally:
        s.close()


def test_blocklist_of_another_account_is_not_reachable(server):
    (ua, pa, ja), (ub, pb, jb) = two_accounts(server)
    sa, fa = login(server.c2s_port, ua, pa)
    sb, fb = login(server.c2s_port, ub, pb)
    try:
        el, _ = request(sb, "get", "<blocklist xmlns='%s'/>" % NS_BLOCKING, "peek", to=ja)
        assert error_of(el)[1] == "service-unavailable", tostr(el)
        el, _ = request(sb, "set", "<block xmlns='%s'><item jid='x@y'/></block>" % NS_BLOCKING,
                        "meddle", to=ja)
        assert error_of(el)[1] == "service-unavailable", tostr(el)
        assert get_list(sa) == []
    finally:
        sa.close()
        sb.close()


# ---- enforcement: outbound ----

def test_outbound_stanzas_to_blocked_jid_get_not_acceptable_with_blocked(server):
    (ua, pa, ja), (ub, pb, jb) = two_accounts(server)
    sa, fa = login(server.c2s_port, ua, pa)
    sb, fb = login(server.c2s_port, ub, pb)
    try:
        available(sa, sb)
        assert block(sa, [jb])[0].get("type") == "result"
        drain(sa)
        drain(sb)
        sa.send("<message to='%s' type='chat' id='m1'><body>Can you hear me now?</body></message>"
                % jb)
        el = sa.expect(q(NS_CLIENT, "message"))
        assert el.get("id") == "m1" and el.get("from") == jb and el.get("to") == fa, tostr(el)
        etype, cond, app = error_of(el)
        assert (etype, cond, app) == ("cancel", "not-acceptable",
                                      [q(NS_BLOCKING_ERRORS, "blocked")]), tostr(el)
        assert el.findtext(q(NS_CLIENT, "body")) == "Can you hear me now?"
        # A full JID of the blocked account, an iq, and directed presence.
        sa.send("<iq to='%s' type='get' id='i1'><ping xmlns='urn:xmpp:ping'/></iq>" % fb)
        el = sa.expect(q(NS_CLIENT, "iq"))
        assert el.get("id") == "i1" and error_of(el)[1:] == (
            "not-acceptable", [q(NS_BLOCKING_ERRORS, "blocked")]), tostr(el)
        sa.send("<presence to='%s' id='p1'/>" % jb)
        el = sa.expect(q(NS_CLIENT, "presence"))
        assert el.get("id") == "p1" and error_of(el)[1:] == (
            "not-acceptable", [q(NS_BLOCKING_ERRORS, "blocked")]), tostr(el)
        # Errors and iq results are dropped without an answer.
        sa.send("<iq to='%s' type='result' id='r1'/>" % fb)
        sa.send("<message to='%s' type='error' id='e1'><error type='cancel'>"
                "<item-not-found xmlns='%s'/></error></message>" % (jb, NS_STANZAS))
        assert sa.nothing_within(0.3)
        assert sb.nothing_within(0.2), "the blocked contact received something"
    finally:
        sa.close()
        sb.close()


def test_stanza_sent_right_after_block_is_already_refused(server):
    """The client's next stanza is processed after the block took effect
    (RFC 6120 10.1 in-order processing)."""
    (ua, pa, ja), (ub, pb, jb) = two_accounts(server)
    sa, fa = login(server.c2s_port, ua, pa)
    sb, fb = login(server.c2s_port, ub, pb)
    try:
        sa.send("<iq type='set' id='b1'><block xmlns='%s'><item jid='%s'/></block></iq>"
                "<message to='%s' id='m1'><body>too late</body></message>" % (NS_BLOCKING, jb, fb))
        el = sa.expect(q(NS_CLIENT, "iq"))
        assert el.get("id") == "b1" and el.get("type") == "result", tostr(el)
        el = sa.expect(q(NS_CLIENT, "message"))
        assert el.get("id") == "m1" and error_of(el)[1] == "not-acceptable", tostr(el)
        assert sb.nothing_within(0.3)
    finally:
        sa.close()
        sb.close()


# ---- enforcement: inbound ----

def test_inbound_stanzas_from_blocked_jid(server):
    (ua, pa, ja), (ub, pb, jb) = two_accounts(server)
    sa1, fa1 = login(server.c2s_port, ua, pa, resource="one")
    sa2, fa2 = login(server.c2s_port, ua, pa, resource="two")
    sb, fb = login(server.c2s_port, ub, pb)
    try:
        available(sa1, sa2, sb)
        assert block(sa1, [jb])[0].get("type") == "result"
        for s in (sa1, sa2, sb):
            drain(s)
        # Chat to the bare JID (two resources of equal priority): one error.
        sb.send("<message to='%s' type='chat' id='c1'><body>hi</body></message>" % ja)
        el = sb.expect(q(NS_CLIENT, "message"))
        assert el.get("id") == "c1" and el.get("from") == ja
        assert error_of(el)[1:] == ("service-unavailable", []), tostr(el)
        # Normal to a full JID, iq get and set: service-unavailable.
        sb.send("<message to='%s' id='n1'><body>hi</body></message>" % fa1)
        el = sb.expect(q(NS_CLIENT, "message"))
        assert el.get("id") == "n1" and error_of(el)[1] == "service-unavailable"
        sb.send("<iq to='%s' type='get' id='i1'><query xmlns='jabber:iq:version'/></iq>" % fa2)
        el = sb.expect(q(NS_CLIENT, "iq"))
        assert el.get("id") == "i1" and error_of(el)[1] == "service-unavailable"
        sb.send("<iq to='%s' type='set' id='i2'><query xmlns='jabber:iq:private'/></iq>" % ja)
        el = sb.expect(q(NS_CLIENT, "iq"))
        assert el.get("id") == "i2" and error_of(el)[1] == "service-unavailable"
        # Presence of every kind, headlines, iq results and errors: silence.
        sb.send("<presence to='%s'/>" % ja)
        sb.send("<presence to='%s' type='subscribe'/>" % ja)
        sb.send("<presence to='%s' type='probe'/>" % ja)
        sb.send("<message to='%s' type='headline'><body>news</body></message>" % ja)
        sb.send("<iq to='%s' type='result' id='r1'/>" % fa1)
        sb.send("<message to='%s' type='error' id='x'><error type='cancel'>"
                "<gone xmlns='%s'/></error></message>" % (fa1, NS_STANZAS))
        assert sb.nothing_within(0.4)
        assert sa1.nothing_within(0.1) and sa2.nothing_within(0.1)
        # The user's own resources still reach each other.
        sa1.send("<message to='%s' id='own'><body>me</body></message>" % fa2)
        el = sa2.expect(q(NS_CLIENT, "message"))
        assert el.get("id") == "own"
    finally:
        for s in (sa1, sa2, sb):
            s.close()


def test_block_sends_unavailable_presence_to_the_contact(server):
    (ua, pa, ja), (ub, pb, jb) = two_accounts(server)
    sa1, fa1 = login(server.c2s_port, ua, pa, resource="avail")
    sa2, fa2 = login(server.c2s_port, ua, pa, resource="quiet")
    sb, fb = login(server.c2s_port, ub, pb)
    try:
        available(sa1, sb)  # sa2 stays unavailable
        sa1.send("<presence to='%s'/>" % jb)  # bob sees alice's presence
        el = sb.expect(q(NS_CLIENT, "presence"))
        assert el.get("from") == fa1 and el.get("type") is None
        drain(sa1)
        assert block(sa2, [jb])[0].get("type") == "result"
        got = [e for e in drain(sb) if e.tag == q(NS_CLIENT, "presence")]
        assert [(e.get("from"), e.get("type")) for e in got] == [(fa1, "unavailable")], \
            [tostr(e) for e in got]
        # After that, nothing more reaches bob from alice.
        sa1.send("<presence><status>back</status></presence>")
        assert sb.nothing_within(0.3)
    finally:
        for s in (sa1, sa2, sb):
            s.close()


def test_block_tells_a_stranger_nothing(server):
    """Without a subscription or directed presence, the blocked JID may not
    see the user's presence: blocking sends it nothing at all."""
    (ua, pa, ja), (ub, pb, jb) = two_accounts(server)
    sa, fa = login(server.c2s_port, ua, pa)
    sb, fb = login(server.c2s_port, ub, pb)
    try:
        available(sa, sb)
        assert block(sa, [jb])[0].get("type") == "result"
        assert sb.nothing_within(0.4), "a stranger learned about the user's resources"
    finally:
        sa.close()
        sb.close()


def test_subscribed_contact_gets_unavailable_on_block_and_presence_on_unblock(server):
    (ua, pa, ja), (ub, pb, jb) = two_accounts(server)
    sa, fa = login(server.c2s_port, ua, pa)
    sb, fb = login(server.c2s_port, ub, pb)
    try:
        available(sa, sb)
        sa.send("<presence><status>at work</status></presence>")
        drain(sa)
        # bob subscribes to alice's presence; alice approves (RFC 6121 3.1).
        sb.send("<presence to='%s' type='subscribe'/>" % ja)
        drain(sb)
        el = [e for e in drain(sa) if e.tag == q(NS_CLIENT, "presence")]
        assert el and el[0].get("type") == "subscribe", [tostr(e) for e in el]
        sa.send("<presence to='%s' type='subscribed'/>" % jb)
        drain(sa)
        got = [e for e in drain(sb) if e.tag == q(NS_CLIENT, "presence")]
        assert any(e.get("from") == fa and e.get("type") is None for e in got), \
            [tostr(e) for e in got]
        drain(sa)
        # Block: bob sees alice go offline.
        assert block(sa, [jb])[0].get("type") == "result"
        got = [e for e in drain(sb) if e.tag == q(NS_CLIENT, "presence")]
        assert [(e.get("from"), e.get("type")) for e in got] == [(fa, "unavailable")], \
            [tostr(e) for e in got]
        # Broadcasts on alice's behalf no longer reach bob, though subscribed.
        sa.send("<presence><status>at work</status></presence>")
        drain(sa)
        assert not drain(sb), "a broadcast reached a blocked contact"
        # Unblock: bob gets alice's current presence again (section 3.4).
        assert unblock(sa, [jb])[0].get("type") == "result"
        got = [e for e in drain(sb) if e.tag == q(NS_CLIENT, "presence")]
        assert [(e.get("from"), e.get("type"), e.findtext(q(NS_CLIENT, "status")))
                for e in got] == [(fa, None, "at work")], [tostr(e) for e in got]
    finally:
        sa.close()
        sb.close()


# ---- JID matching (XEP-0191 section 5) ----

def test_full_jid_item_blocks_only_that_resource(server):
    (ua, pa, ja), (ub, pb, jb) = two_accounts(server)
    sa, fa = login(server.c2s_port, ua, pa)
    sb1, fb1 = login(server.c2s_port, ub, pb, resource="one")
    sb2, fb2 = login(server.c2s_port, ub, pb, resource="two")
    try:
        assert block(sa, [fb1])[0].get("type") == "result"
        drain(sa)
        sb1.send("<message to='%s' id='x1'><body>1</body></message>" % fa)
        assert error_of(sb1.expect(q(NS_CLIENT, "message")))[1] == "service-unavailable"
        sb2.send("<message to='%s' id='x2'><body>2</body></message>" % fa)
        el = sa.expect(q(NS_CLIENT, "message"))
        assert el.get("id") == "x2" and el.get("from") == fb2
        # Outbound: only the blocked full JID is refused.
        sa.send("<message to='%s' id='y2'><body>ok</body></message>" % fb2)
        assert sb2.expect(q(NS_CLIENT, "message")).get("id") == "y2"
        sa.send("<message to='%s' id='y1'><body>no</body></message>" % fb1)
        assert error_of(sa.expect(q(NS_CLIENT, "message")))[1] == "not-acceptable"
    finally:
        for s in (sa, sb1, sb2):
            s.close()


def test_bare_jid_item_blocks_every_resource(server):
    (ua, pa, ja), (ub, pb, jb) = two_accounts(server)
    sa, fa = login(server.c2s_port, ua, pa)
    sb1, fb1 = login(server.c2s_port, ub, pb, resource="one")
    sb2, fb2 = login(server.c2s_port, ub, pb, resource="two")
    try:
        assert block(sa, [jb.upper()])[0].get("type") == "result"
        drain(sa)
        for s, i in ((sb1, "z1"), (sb2, "z2")):
            s.send("<message to='%s' id='%s'><body>x</body></message>" % (fa, i))
            assert error_of(s.expect(q(NS_CLIENT, "message")))[1] == "service-unavailable"
        assert sa.nothing_within(0.2)
    finally:
        for s in (sa, sb1, sb2):
            s.close()


def test_domain_item_blocks_the_whole_domain_but_not_the_own_account(server):
    (ua, pa, ja), (ub, pb, jb) = two_accounts(server)
    sa1, fa1 = login(server.c2s_port, ua, pa, resource="one")
    sa2, fa2 = login(server.c2s_port, ua, pa, resource="two")
    sb, fb = login(server.c2s_port, ub, pb)
    try:
        assert block(sa1, [DOMAIN.upper()])[0].get("type") == "result"
        drain(sa1)
        sb.send("<message to='%s' id='d1'><body>x</body></message>" % fa1)
        assert error_of(sb.expect(q(NS_CLIENT, "message")))[1] == "service-unavailable"
        sa1.send("<message to='%s' id='d2'><body>x</body></message>" % fb)
        assert error_of(sa1.expect(q(NS_CLIENT, "message")))[1:] == (
            "not-acceptable", [q(NS_BLOCKING_ERRORS, "blocked")])
        # Own resources, and the server itself, still answer.
        sa1.send("<message to='%s' id='d3'><body>me</body></message>" % fa2)
        assert sa2.expect(q(NS_CLIENT, "message")).get("id") == "d3"
        el, _ = request(sa1, "get", "<ping xmlns='urn:xmpp:ping'/>", "srv", to=DOMAIN)
        assert el.get("type") == "result", tostr(el)
        assert get_list(sa2) == [DOMAIN]
    finally:
        for s in (sa1, sa2, sb):
            s.close()


# ---- unblock ----

def test_unblock_and_unblock_all_are_pushed_and_restore_delivery(server):
    (ua, pa, ja), (ub, pb, jb) = two_accounts(server)
    sa1, fa1 = login(server.c2s_port, ua, pa, resource="one")
    sa2, fa2 = login(server.c2s_port, ua, pa, resource="two")
    sb, fb = login(server.c2s_port, ub, pb)
    try:
        get_list(sa2)
        assert block(sa1, [jb, "a@elsewhere", "elsewhere.example"])[0].get("type") == "result"
        drain(sa1)
        drain(sa2)
        el, others = unblock(sa1, [jb, "nobody@nowhere"])
        assert el.get("type") == "result", tostr(el)
        # sa1 never asked for the list: no push for it.
        assert not [e for e in others + drain(sa1) if is_push(e, "unblock")]
        pushes = [e for e in drain(sa2) if is_push(e, "unblock")]
        assert len(pushes) == 1 and push_items(pushes[0], "unblock") == sorted(
            [jb, "nobody@nowhere"])
        assert get_list(sa2) == ["a@elsewhere", "elsewhere.example"]
        sb.send("<message to='%s' id='u1'><body>back</body></message>" % fa1)
        assert sa1.expect(q(NS_CLIENT, "message")).get("id") == "u1"
        # Unblock all: an empty <unblock/> push.
        el, _ = request(sa1, "set", "<unblock xmlns='%s'/>" % NS_BLOCKING, "all")
        assert el.get("type") == "result"
        pushes = [e for e in drain(sa2) if is_push(e, "unblock")]
        assert len(pushes) == 1 and push_items(pushes[0], "unblock") == []
        assert get_list(sa1, "after") == []
    finally:
        for s in (sa1, sa2, sb):
            s.close()


# ---- limit and persistence ----

def test_blocklist_limit_is_enforced(make_server):
    srv = make_server("--max-blocklist-items", "3")
    u, p, j = srv.new_account("limit")
    s, full = login(srv.c2s_port, u, p)
    try:
        el, _ = block(s, ["a@x", "b@x", "c@x", "d@x"], "four")
        assert error_of(el)[1] == "policy-violation", tostr(el)
        assert get_list(s) == []
        assert block(s, ["a@x", "b@x"], "two")[0].get("type") == "result"
        # Items already in the list do not count twice.
        assert block(s, ["a@x", "c@x"], "three")[0].get("type") == "result"
        el, _ = block(s, ["d@x"], "over")
        assert error_of(el)[1] == "policy-violation", tostr(el)
        assert get_list(s, "g2") == ["a@x", "b@x", "c@x"]
    finally:
        s.close()


def test_blocklist_survives_a_restart_and_is_enforced_after_it(make_server):
    srv = make_server()
    (ua, pa, ja), (ub, pb, jb) = two_accounts(srv)
    s, full = login(srv.c2s_port, ua, pa)
    try:
        assert block(s, [jb, "spam.example"])[0].get("type") == "result"
        assert unblock(s, ["spam.example"])[0].get("type") == "result"
    finally:
        s.close()
    srv.signal()
    assert srv.wait(10) == 0
    srv.start()
    sa, fa = login(srv.c2s_port, ua, pa)
    sb, fb = login(srv.c2s_port, ub, pb)
    try:
        assert get_list(sa) == [jb]
        sb.send("<message to='%s' id='after'><body>x</body></message>" % fa)
        assert error_of(sb.expect(q(NS_CLIENT, "message")))[1] == "service-unavailable"
    finally:
        sa.close()
        sb.close()


# ---- a real client ----

def test_slixmpp_blocking_plugin_round_trip(server, xmpp, arun):
    (ua, pa, ja), (ub, pb, jb) = two_accounts(server)
    a1 = xmpp(ja + "/one", pa, server.c2s_port, plugins=["xep_0030", "xep_0191"])
    a2 = xmpp(ja + "/two", pa, server.c2s_port, plugins=["xep_0030", "xep_0191"])

    async def scenario():
        await asyncio.gather(connect_and_wait(a1), connect_and_wait(a2))
        assert (await a2["xep_0191"].get_blocked())["blocklist"]["items"] == set()
        blocked = asyncio.get_running_loop().create_future()
        a2.add_event_handler("blocked", lambda iq: blocked.done() or blocked.set_result(iq))
        await a1["xep_0191"].block([jb, "spam.example"])
        iq = await asyncio.wait_for(blocked, 10)
        assert {str(j) for j in iq["block"]["items"]} == {jb, "spam.example"}
        got = (await a1["xep_0191"].get_blocked())["blocklist"]["items"]
        assert {str(j) for j in got} == {jb, "spam.example"}
        await a1["xep_0191"].unblock([jb])
        got = (await a2["xep_0191"].get_blocked())["blocklist"]["items"]
        assert {str(j) for j in got} == {"spam.example"}
    arun(scenario())


# ---- Account homes spread over the workers (docs/account-homes.md, 2.2) ----

@pytest.fixture(scope="module")
def spread_server():
    s = start_spread()
    yield s
    s.stop()


def spread_online(server, creds, resource=None, status=None):
    from imutil import Client
    c = Client(server, creds[0], creds[1], resource=resource)
    c.roster_get()
    c.available(status=status)
    c.presence("", c.full)
    return c


def block_items(c, kind, jids):
    r = c.iq("set", "<%s xmlns='%s'>%s</%s>" % (kind, NS_BLOCKING, items_xml(jids), kind))
    assert r.get("type") == "result", tostr(r)


def is_presence_from(el, jid, type_=""):
    return el.tag == q(NS_CLIENT, "presence") and (el.get("type") or "") == type_ and \
        (el.get("from") or "").split("/", 1)[0] == jid


def test_blocked_contact_at_another_home_gets_no_presence_either_way(spread_server):
    from imutil import subscribe_mutually
    s = spread_server
    ua, pa, _ = s.new_account("hba", home=0)
    ub, pb, _ = s.new_account("hbb", home=1)
    a, b = spread_online(s, (ua, pa)), spread_online(s, (ub, pb))
    a2 = b2 = None
    try:
        subscribe_mutually(a, b)
        a.available(status="before")
        assert b.presence("", a.full).findtext(q(NS_CLIENT, "status")) == "before"
        block_items(a, "block", [b.bare])
        b.presence("unavailable", a.full)
        # Broadcasts of the blocking user do not reach the blocked contact ...
        a.available(status="hidden")
        b.quiet(lambda el: is_presence_from(el, a.bare), seconds=0.4)
        # ... nor the blocked contact's reach the user.
        b.available(status="unseen")
        a.quiet(lambda el: is_presence_from(el, b.bare), seconds=0.4)
        # Probes at login, both ways, answer nothing.
        b2 = spread_online(s, (ub, pb), resource="late")
        a2 = spread_online(s, (ua, pa), resource="late")
        b2.quiet(lambda el: is_presence_from(el, a.bare), seconds=0.4)
        a2.quiet(lambda el: is_presence_from(el, b.bare), seconds=0.1)
        for x in (a, b):
            x.quiet(lambda el: is_presence_from(el, (b if x is a else a).bare), seconds=0.1)
        # Unblocked: the contact learns the current presence again (section 3.4).
        block_items(a, "unblock", [b.bare])
        got = {b.presence("", a.bare).get("from") for _ in range(2)}
        assert got == {a.full, a2.full}, got
    finally:
        for x in (a, a2, b, b2):
            if x:
                x.close()


def test_full_jid_item_of_a_sender_at_another_home_hides_only_that_resource(spread_server):
    from imutil import subscribe_mutually
    s = spread_server
    ua, pa, _ = s.new_account("hfa", home=0)
    ub, pb, _ = s.new_account("hfb", home=1)
    a = spread_online(s, (ua, pa))
    b1 = spread_online(s, (ub, pb), resource="one")
    b2 = None
    try:
        subscribe_mutually(a, b1)
        b2 = spread_online(s, (ub, pb), resource="two")
        b2.presence("", a.full)
        block_items(a, "block", [b1.full])
        b1.drain(0.3)
        a.available(status="for two")
        assert b2.presence("", a.full).findtext(q(NS_CLIENT, "status")) == "for two"
        b1.quiet(lambda el: is_presence_from(el, a.bare), seconds=0.4)
        a.close_cleanly()
        b2.presence("unavailable", a.full)
        b1.quiet(lambda el: is_presence_from(el, a.bare, "unavailable"), seconds=0.4)
    finally:
        for x in (a, b1, b2):
            if x:
                x.close()


def test_full_jid_item_applies_to_presence_after_an_approval_across_homes(spread_server):
    """The current presence a new subscriber gets (RFC 6121 3.1.5) skips the
    blocked resource too, though it is addressed to the bare JID."""
    s = spread_server
    ua, pa, _ = s.new_account("hga", home=1)
    ub, pb, _ = s.new_account("hgb", home=0)
    a = spread_online(s, (ua, pa), status="approved")
    b1 = spread_online(s, (ub, pb), resource="one")
    b2 = spread_online(s, (ub, pb), resource="two")
    try:
        block_items(a, "block", [b1.full])
        b1.send("<presence type='subscribe' to='%s'/>" % a.bare)
        a.presence("subscribe", b1.bare)
        a.send("<presence type='subscribed' to='%s'/>" % b1.bare)
        p = b2.presence("", a.full)
        assert p.findtext(q(NS_CLIENT, "status")) == "approved", tostr(p)
        b1.quiet(lambda el: is_presence_from(el, a.bare), seconds=0.4)
    finally:
        for x in (a, b1, b2):
            x.close()
