"""Presence (RFC 6121 section 4): initial and subsequent broadcasts, probes
at login, unavailable at logout and when a client vanishes, directed
presence, priorities, presence from and to entities without a
subscription, probes from unauthorized entities, several resources."""
import socket
import struct

import pytest

from harness import NS_CLIENT, q, tostr, start_spread
from imutil import Client, error_condition, is_presence, subscribe_mutually


def online(server, creds, resource=None, available=True, status=None, priority=None):
    c = Client(server, creds[0], creds[1], resource=resource)
    c.roster_get()
    if available:
        c.available(status=status, priority=priority)
        c.presence("", c.full)
    return c


def account(server, prefix):
    u, p, _ = server.new_account(prefix)
    return (u, p)


def test_broadcast_reaches_contacts_with_from_and_own_resources_only(server):
    ca, cb, cc, cd = (account(server, p) for p in ("bca", "bcb", "bcc", "bcd"))
    a, b = online(server, ca), online(server, cb)
    c, d = online(server, cc), online(server, cd)
    a2 = online(server, ca, resource="second")
    try:
        subscribe_mutually(a, b)
        # c only subscribed *to* a's... no: a subscribed to c (a has To, c has From).
        a.send("<presence type='subscribe' to='%s'/>" % c.bare)
        c.presence("subscribe", a.bare)
        c.send("<presence type='subscribed' to='%s'/>" % a.bare)
        a.presence("subscribed", c.bare)
        for x in (a, a2, b, c, d):
            x.drain(0.2)

        a.available(status="broadcast test", priority=3)
        # 4.4.2: contacts with From (b), the account's resources (a, a2) ...
        for x, to in ((b, b.bare), (a, a.full), (a2, a2.full)):
            p = x.presence("", a.full)
            assert p.get("to") == to, tostr(p)
            assert p.findtext(q(NS_CLIENT, "status")) == "broadcast test"
            assert p.findtext(q(NS_CLIENT, "priority")) == "3"
        # ... not c (a only has To towards c) nor d (nothing).
        for x in (c, d):
            x.quiet(lambda el: is_presence(el, None, a.bare), seconds=0.3)
    finally:
        for x in (a, a2, b, c, d):
            x.close()


def test_probes_at_login_answer_with_each_resource(server):
    ca, cb = account(server, "proba"), account(server, "probb")
    a, b = online(server, ca), online(server, cb, status="first")
    b2 = online(server, cb, resource="two", status="second")
    try:
        subscribe_mutually(a, b)
        b2.drain(0.2)
        a.close_cleanly()
        a = Client(server, *ca)
        a.roster_get()
        a.available()
        got = {}
        for _ in range(2):
            p = a.presence("", b.bare)
            got[p.get("from")] = p.findtext(q(NS_CLIENT, "status"))
            assert p.get("to") == a.full
        assert got == {b.full: "first", b2.full: "second"}, got
        # Only once: no duplicates after the probe answers.
        a.quiet(lambda el: is_presence(el, "", b.bare), seconds=0.3)
    finally:
        for x in (a, b, b2):
            x.close()


def test_new_resource_learns_about_the_accounts_other_resources(server):
    ca = account(server, "multi")
    one = online(server, ca, resource="one", status="I am one")
    two = online(server, ca, resource="two", available=False)
    try:
        two.available(status="I am two")
        p = two.presence("", one.full)
        assert p.findtext(q(NS_CLIENT, "status")) == "I am one"
        p = one.presence("", two.full)
        assert p.findtext(q(NS_CLIENT, "status")) == "I am two"
    finally:
        one.close()
        two.close()


def test_unavailable_on_logout_and_on_vanishing(server):
    ca, cb = account(server, "gonea"), account(server, "goneb")
    a, b = online(server, ca), online(server, cb)
    try:
        subscribe_mutually(a, b)
        # Explicit unavailable with a status, then back.
        b.send("<presence type='unavailable'><status>brb</status></presence>")
        p = a.presence("unavailable", b.full)
        assert p.findtext(q(NS_CLIENT, "status")) == "brb"
        b.available()
        a.presence("", b.full)
        # A clean close of the stream.
        b.close_cleanly()
        a.presence("unavailable", b.full)
        # A client that vanishes (TCP reset): the server speaks for it.
        b = online(server, cb)
        a.presence("", b.full)
        b.s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        b.s.sock.close()
        p = a.presence("unavailable", b.full)
        assert p.get("to") == a.bare
    finally:
        a.close()
        b.close()


def test_directed_presence_and_its_unavailable_at_logout(server):
    ca, cc, cd = account(server, "dira"), account(server, "dirc"), account(server, "dird")
    a, c, d = online(server, ca), online(server, cc), online(server, cd)
    try:
        # 4.6: presence to someone without a subscription is delivered ...
        a.send("<presence to='%s'><status>just for you</status></presence>" % c.full)
        p = c.presence("", a.full)
        assert p.findtext(q(NS_CLIENT, "status")) == "just for you" and p.get("to") == c.full
        a.send("<presence to='%s'/>" % d.bare)
        d.presence("", a.full)
        # ... and a directed unavailable ends it for d.
        a.send("<presence type='unavailable' to='%s'/>" % d.bare)
        d.presence("unavailable", a.full)
        # At logout the server tells c (still tracked), not d again.
        a.close_cleanly()
        c.presence("unavailable", a.full)
        d.quiet(lambda el: is_presence(el, None, a.bare), seconds=0.4)
    finally:
        for x in (a, c, d):
            x.close()


def test_directed_presence_before_initial_presence(server):
    ca, cc = account(server, "pre0a"), account(server, "pre0c")
    a = online(server, ca, available=False)
    c = online(server, cc)
    try:
        a.send("<presence to='%s'/>" % c.bare)
        c.presence("", a.full)
        # a was never available to its contacts, but c heard from it.
        a.s.sock.close()
        c.presence("unavailable", a.full)
    finally:
        a.close()
        c.close()


def test_negative_priority_gets_presence_not_bare_messages(server):
    ca, cb = account(server, "nega"), account(server, "negb")
    a, b = online(server, ca), online(server, cb, priority=-5)
    try:
        subscribe_mutually(a, b)
        a.available(status="seen by negatives")
        p = b.presence("", a.full)
        assert p.findtext(q(NS_CLIENT, "status")) == "seen by negatives"
        a.send("<message to='%s' type='chat'><body>to bare</body></message>" % b.bare)
        b.quiet(lambda el: el.tag == q(NS_CLIENT, "message"), seconds=0.4)
        a.send("<message to='%s' type='chat'><body>to full</body></message>" % b.full)
        assert b.message(body="to full") is not None
        # Going non-negative delivers what was kept meanwhile (XEP-0160).
        b.available(priority=0)
        assert b.message(body="to bare") is not None
    finally:
        a.close()
        b.close()


def test_invalid_priority_is_bad_request(server):
    ca = account(server, "badprio")
    a = online(server, ca, available=False)
    try:
        for bad in ("200", "-129", "high", ""):
            a.send("<presence id='p%s'><priority>%s</priority></presence>" % (bad, bad))
            el = a.wait(lambda e: e.tag == q(NS_CLIENT, "presence") and
                        e.get("type") == "error")
            assert error_condition(el) == ("modify", "bad-request")
        a.send("<presence><priority> -128 </priority></presence>")
        a.presence("", a.full)
    finally:
        a.close()


def test_presence_from_strangers_to_bare_and_full_jids(server):
    ca, cb = account(server, "stra"), account(server, "strb")
    a = online(server, ca)
    b1 = online(server, cb, resource="one")
    b2 = online(server, cb, resource="two", priority=-1)
    b3 = online(server, cb, resource="three", available=False)
    try:
        for x in (b1, b2):
            x.drain(0.2)
        # 8.5.2.1.2: to the bare JID: every available resource.
        a.send("<presence to='%s'><show>chat</show></presence>" % b1.bare)
        for x in (b1, b2):
            assert x.presence("", a.full).get("to") == b1.bare
        b3.quiet(lambda el: is_presence(el, None, a.bare), seconds=0.3)
        # 8.5.3.1: to a full JID: that resource (available or not).
        a.send("<presence to='%s'/>" % b3.full)
        b3.presence("", a.full)
        # 8.5.3.2.2: to a resource that does not exist: dropped.
        a.send("<presence to='%s/nosuch'/>" % b1.bare)
        for x in (b1, b2, b3):
            x.quiet(lambda el: is_presence(el, None, a.bare), seconds=0.2)
        a.quiet(lambda el: el.get("type") == "error", seconds=0.1)
    finally:
        for x in (a, b1, b2, b3):
            x.close()


def test_probes_from_clients_authorized_and_not(server):
    ca, cb, cc = account(server, "pra"), account(server, "prb"), account(server, "prc")
    a, b, c = online(server, ca), online(server, cb, status="b here"), online(server, cc)
    try:
        subscribe_mutually(a, b)
        # Authorized (a has To): b's current presence.
        a.send("<presence type='probe' to='%s'/>" % b.bare)
        p = a.presence("", b.full)
        assert p.findtext(q(NS_CLIENT, "status")) == "b here"
        # 4.3.2: not authorized: never the presence. (b's server answers
        # "unsubscribed", which c's server, finding no subscription to
        # cancel, does not deliver: RFC 6121 A.3.4, row None.)
        c.send("<presence type='probe' to='%s'/>" % b.bare)
        c.quiet(lambda el: is_presence(el, None, b.bare), seconds=0.4)
        # b never sees the probes.
        b.quiet(lambda el: is_presence(el, "probe"), seconds=0.1)
    finally:
        for x in (a, b, c):
            x.close()


def test_presence_to_other_domains_is_dropped(server):
    ca = account(server, "far")
    a = online(server, ca)
    try:
        # .invalid never resolves (RFC 6761): the link fails, and presence is not bounced.
        a.send("<presence to='someone@example.invalid'/>")
        a.send("<presence type='probe' to='someone@example.invalid'/>")
        a.quiet(seconds=0.4)
    finally:
        a.close()


def test_broadcast_to_many_contacts_is_delivered_once_each(server):
    """A presence change of a user with N contacts reaches each contact
    exactly once, with the right 'to' (the template splice)."""
    n = 12
    cu = account(server, "hub")
    hub = online(server, cu)
    contacts = [online(server, account(server, "leaf%d" % i)) for i in range(n)]
    try:
        for c in contacts:
            c.send("<presence type='subscribe' to='%s'/>" % hub.bare)
            hub.presence("subscribe", c.bare)
            hub.send("<presence type='subscribed' to='%s'/>" % c.bare)
            c.presence("subscribed", hub.bare)
        for c in contacts:
            c.drain(0.05)
        hub.drain(0.2)
        hub.available(status="hello all")
        for c in contacts:
            p = c.presence("", hub.full)
            assert p.get("to") == c.bare and \
                p.findtext(q(NS_CLIENT, "status")) == "hello all", tostr(p)
        for c in contacts:
            c.quiet(lambda el: is_presence(el, None, hub.bare), seconds=0.05)
    finally:
        hub.close()
        for c in contacts:
            c.close()


def check_login_probe_corrects_a_stale_to(server, ca, cb):
    """a has a stale To for b (b does not grant From): a's login probe is
    answered "unsubscribed" by b's side, which cancels the To (A.3.4)."""
    b = online(server, cb)
    a = Client(server, *ca)
    try:
        r = a.roster_set(b.bare, name="stale")
        assert r.get("type") == "result"
        a.close_cleanly()
        server.db_query("UPDATE roster_items SET subscription = 'to' WHERE username = ?", (ca[0],))
        a = online(server, ca)
        a.presence("unsubscribed", b.bare)
        push = a.push(b.bare)
        assert push.get("subscription") == "none" and push.get("name") == "stale"
        a.quiet(lambda el: is_presence(el, "", b.bare), seconds=0.2)
    finally:
        a.close()
        b.close()


def test_login_probe_to_a_contact_that_does_not_grant_from_corrects_the_roster(server):
    """4.3.2: the contact's server answers an unauthorized probe with
    "unsubscribed", which cancels the user's stale To (A.3.4)."""
    check_login_probe_corrects_a_stale_to(server, account(server, "stalea"),
                                          account(server, "staleb"))


# ---- Account homes spread over the workers (docs/account-homes.md, 2.3) ----

@pytest.fixture(scope="module")
def spread_server():
    s = start_spread()
    yield s
    s.stop()


def spread_account(server, prefix, home):
    u, p, _ = server.new_account(prefix, home=home)
    return (u, p)


def test_presence_between_contacts_at_home_on_different_workers(spread_server):
    s = spread_server
    ca, cb = spread_account(s, "hpa", 0), spread_account(s, "hpb", 1)
    a, b = online(s, ca, status="a here"), online(s, cb, status="b here")
    a2 = b2 = None
    try:
        # The subscription handshake across homes, both ways.
        subscribe_mutually(a, b)
        # A change is broadcast to the contact at its home.
        a.available(status="changed")
        p = b.presence("", a.full)
        assert p.get("to") == b.bare and p.findtext(q(NS_CLIENT, "status")) == "changed"
        b.available(status="b changed")
        p = a.presence("", b.full)
        assert p.get("to") == a.bare and p.findtext(q(NS_CLIENT, "status")) == "b changed"
        # Every resource of the contact gets it, once.
        b2 = online(s, cb, resource="second")
        a.presence("", b2.full)
        assert b2.presence("", a.full).findtext(q(NS_CLIENT, "status")) == "changed"
        a.available(status="to both")
        for x in (b, b2):
            p = x.presence("", a.full)
            assert p.findtext(q(NS_CLIENT, "status")) == "to both"
            x.quiet(lambda el: is_presence(el, "", a.bare), seconds=0.3)
        b2.close_cleanly()
        a.presence("unavailable", b2.full)
        # A login probes the contact, already online at another home: the
        # answer comes from there, to the new session's full JID.
        a2 = Client(s, *ca, resource="late")
        a2.roster_get()
        a2.available()
        p = a2.presence("", b.bare)
        assert p.get("from") == b.full and p.get("to") == a2.full, tostr(p)
        assert p.findtext(q(NS_CLIENT, "status")) == "b changed"
        a2.quiet(lambda el: is_presence(el, "", b.bare), seconds=0.3)
        b.presence("", a2.full)
        # Unavailable, explicit and at logout.
        a.send("<presence type='unavailable'><status>brb</status></presence>")
        p = b.presence("unavailable", a.full)
        assert p.findtext(q(NS_CLIENT, "status")) == "brb"
        a2.close_cleanly()
        b.presence("unavailable", a2.full)
    finally:
        for x in (a, a2, b, b2):
            if x:
                x.close()


def test_login_probe_across_homes_corrects_the_roster(spread_server):
    """The contact's home answers the probe: without From there, the
    prober gets "unsubscribed", which cancels its stale To (RFC 6121 4.3.2)."""
    s = spread_server
    check_login_probe_corrects_a_stale_to(s, spread_account(s, "hqa", 1),
                                          spread_account(s, "hqb", 0))
