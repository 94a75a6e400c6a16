"""Presence subscriptions (RFC 6121 section 3): request, approval, denial,
cancellation, unsubscription, pre-approval, requests kept for offline
contacts and re-delivered at each login, roster removal side effects,
accounts that do not exist, other domains, persistence across a restart,
and a real client (slixmpp)."""
import asyncio
import time

from harness import DOMAIN, NS_CLIENT, connect_and_wait, q, tostr
from imutil import Client, error_condition, items, is_presence, restart, subscribe_mutually


def pair(server, prefix="sub"):
    ua, pa, _ = server.new_account(prefix + "a")
    ub, pb, _ = server.new_account(prefix + "b")
    return (ua, pa), (ub, pb)


def online(server, creds, roster=True, available=True, resource=None):
    c = Client(server, creds[0], creds[1], resource=resource)
    if roster:
        c.roster_get()
    if available:
        c.available()
        c.presence("", c.full)  # our own broadcast comes back
    return c


def item_of(c, jid):
    return items(c.roster_get()).get(jid)


def state(c, jid):
    it = item_of(c, jid)
    if it is None:
        return None
    return (it.get("subscription"), it.get("ask"), it.get("approved"))


def test_request_and_approval_both_online(server):
    ca, cb = pair(server)
    a, b = online(server, ca), online(server, cb)
    try:
        # 3.1.2: stamped with the bare JID, even when sent to a full JID.
        a.send("<presence type='subscribe' to='%s' id='s1'><status>add me</status></presence>"
               % b.full)
        push = a.push(b.bare)
        assert (push.get("subscription"), push.get("ask")) == ("none", "subscribe")
        req = b.presence("subscribe", a.bare)
        assert req.get("from") == a.bare and req.get("to") == b.bare, tostr(req)
        assert req.findtext(q(NS_CLIENT, "status")) == "add me"
        # 3.1.3: the contact's roster has no item for a mere request.
        b.quiet(lambda el: el.tag == q(NS_CLIENT, "iq"), seconds=0.2)
        assert item_of(b, a.bare) is None

        # 3.1.5: approval.
        b.send("<presence type='subscribed' to='%s'/>" % a.bare)
        assert b.push(a.bare).get("subscription") == "from"
        ok = a.presence("subscribed", b.bare)
        assert ok.get("from") == b.bare and ok.get("to") == a.bare
        push = a.push(b.bare)
        assert (push.get("subscription"), push.get("ask")) == ("to", None)
        # ... and the contact's current presence follows.
        pres = a.presence("", b.full)
        assert pres.get("to") == a.bare
        assert state(a, b.bare) == ("to", None, None)
        assert state(b, a.bare) == ("from", None, None)

        # Now b's presence changes reach a, a's do not reach b.
        b.available(status="busy")
        assert a.presence("", b.full).findtext(q(NS_CLIENT, "status")) == "busy"
        a.available(status="here")
        b.quiet(lambda el: is_presence(el, "", a.bare), seconds=0.3)

        # The reverse direction makes it Both.
        b.send("<presence type='subscribe' to='%s'/>" % a.bare)
        assert b.push(a.bare).get("ask") == "subscribe"
        a.presence("subscribe", b.bare)
        a.send("<presence type='subscribed' to='%s'/>" % b.bare)
        assert a.push(b.bare).get("subscription") == "both"
        b.presence("subscribed", a.bare)
        assert b.push(a.bare).get("subscription") == "both"
        assert b.presence("", a.full).findtext(q(NS_CLIENT, "status")) == "here"
    finally:
        a.close()
        b.close()


def test_duplicate_request_is_not_delivered_twice(server):
    ca, cb = pair(server, "dup")
    a, b = online(server, ca), online(server, cb)
    try:
        a.send("<presence type='subscribe' to='%s'/>" % b.bare)
        b.presence("subscribe", a.bare)
        a.send("<presence type='subscribe' to='%s'/>" % b.bare)
        b.quiet(lambda el: is_presence(el, "subscribe"), seconds=0.4)
    finally:
        a.close()
        b.close()


def test_denial_clears_pending_out(server):
    ca, cb = pair(server, "deny")
    a, b = online(server, ca), online(server, cb)
    try:
        a.send("<presence type='subscribe' to='%s'/>" % b.bare)
        a.push(b.bare)
        b.presence("subscribe", a.bare)
        b.send("<presence type='unsubscribed' to='%s'/>" % b.bare.replace(b.bare, a.bare))
        a.presence("unsubscribed", b.bare)
        push = a.push(b.bare)
        assert (push.get("subscription"), push.get("ask")) == ("none", None)
        # The request is answered: not delivered again at b's next login.
        b.close_cleanly()
        b = online(server, cb)
        b.quiet(lambda el: is_presence(el, "subscribe"), seconds=0.4)
    finally:
        a.close()
        b.close()


def test_request_to_offline_contact_is_kept_and_redelivered_until_answered(server):
    ca, cb = pair(server, "off")
    a = online(server, ca)
    b_jid = "%s@%s" % (cb[0], DOMAIN)
    try:
        a.send("<presence type='subscribe' to='%s'><status>hi</status></presence>" % b_jid)
        assert a.push(b_jid).get("ask") == "subscribe"
        # b logs in without presence: nothing yet; available: the request.
        b = online(server, cb, available=False)
        b.quiet(lambda el: is_presence(el, "subscribe"), seconds=0.3)
        b.available()
        req = b.presence("subscribe", a.bare)
        assert req.get("to") == b.bare and req.findtext(q(NS_CLIENT, "status")) == "hi"
        b.close_cleanly()
        # 3.1.3: again at each login until answered.
        b = online(server, cb)
        b.presence("subscribe", a.bare)
        b.send("<presence type='subscribed' to='%s'/>" % a.bare)
        a.presence("subscribed", b_jid)
        b.close_cleanly()
        b = online(server, cb)
        b.quiet(lambda el: is_presence(el, "subscribe"), seconds=0.4)
        assert state(b, a.bare) == ("from", None, None)
        b.close()
    finally:
        a.close()


def _forget_subscription(server, user, contact):
    """Makes user's stored item for contact say none (a roster that lost
    its state, while the contact's still grants From)."""
    server.db_query("UPDATE roster_items SET subscription = 'none', ask = 0 "
                    "WHERE username = ? AND jid = ?", (user, contact))


def test_contact_with_from_answers_automatically_online_and_offline(server):
    ca, cb = pair(server, "auto")
    a, b = online(server, ca), online(server, cb)
    try:
        subscribe_mutually(a, b)
        a.close_cleanly()
        b.presence("unavailable", a.bare)
        _forget_subscription(server, ca[0], b.bare)
        a = online(server, ca)
        assert state(a, b.bare) == ("none", None, None)
        # 3.1.3: b has granted From already: b's server answers, b sees nothing.
        a.send("<presence type='subscribe' to='%s'/>" % b.bare)
        a.presence("subscribed", b.bare)
        assert state(a, b.bare) == ("to", None, None)
        b.quiet(lambda el: is_presence(el, "subscribe"), seconds=0.3)
        a.presence("", b.full)  # and b's presence comes along

        # The same with b offline: answered from b's stored roster.
        b.close_cleanly()
        a.close_cleanly()
        _forget_subscription(server, ca[0], b.bare)
        a = online(server, ca)
        a.send("<presence type='subscribe' to='%s'/>" % b.bare)
        a.presence("subscribed", b.bare)
        assert state(a, b.bare) == ("to", None, None)
    finally:
        a.close()
        b.close()


def test_preapproval(server):
    ca, cb = pair(server, "pre")
    a, b = online(server, ca), online(server, cb)
    try:
        # 3.4: b approves a before a asks: noted, not routed.
        b.send("<presence type='subscribed' to='%s'/>" % a.bare)
        push = b.push(a.bare)
        assert (push.get("subscription"), push.get("approved")) == ("none", "true")
        a.quiet(lambda el: is_presence(el, "subscribed"), seconds=0.3)
        # a asks: answered at once, b is not bothered.
        a.send("<presence type='subscribe' to='%s'/>" % b.bare)
        a.presence("subscribed", b.bare)
        assert a.push(b.bare).get("subscription") in ("none", "to")
        assert state(a, b.bare) == ("to", None, None)
        push = b.push(a.bare)
        assert (push.get("subscription"), push.get("approved")) == ("from", None)
        b.quiet(lambda el: is_presence(el, "subscribe"), seconds=0.3)
        a.presence("", b.full)  # b's presence follows the approval
    finally:
        a.close()
        b.close()


def test_preapproval_cancelled_and_for_offline_contact(server):
    ca, cb = pair(server, "prec")
    a, b = online(server, ca), online(server, cb)
    try:
        b.send("<presence type='subscribed' to='%s'/>" % a.bare)
        assert b.push(a.bare).get("approved") == "true"
        b.send("<presence type='unsubscribed' to='%s'/>" % a.bare)
        assert b.push(a.bare).get("approved") is None
        a.send("<presence type='subscribe' to='%s'/>" % b.bare)
        b.presence("subscribe", a.bare)  # a normal request again
        a.quiet(lambda el: is_presence(el, "subscribed"), seconds=0.3)
        # Pre-approved while offline: the stored approval answers.
        b.send("<presence type='subscribed' to='%s'/>" % a.bare)
        a.presence("subscribed", b.bare)
        a.send("<presence type='unsubscribe' to='%s'/>" % b.bare)
        b.send("<presence type='unsubscribed' to='%s'/>" % a.bare)
        a.drain(0.3)
        b.drain(0.05)
        assert state(b, a.bare) == ("none", None, None)
        b.send("<presence type='subscribed' to='%s'/>" % a.bare)
        assert b.push(a.bare).get("approved") == "true"
        b.close_cleanly()
        a.send("<presence type='subscribe' to='%s'/>" % b.bare)
        a.presence("subscribed", b.bare)
        assert state(a, b.bare)[0] == "to"
    finally:
        a.close()
        b.close()


def test_unsubscribe_and_cancellation(server):
    ca, cb = pair(server, "uns")
    a, b = online(server, ca), online(server, cb)
    try:
        subscribe_mutually(a, b)
        # 3.3: a stops receiving b's presence.
        a.send("<presence type='unsubscribe' to='%s'/>" % b.bare)
        assert a.push(b.bare).get("subscription") == "from"
        b.presence("unsubscribe", a.bare)
        assert b.push(a.bare).get("subscription") == "to"
        # b's server tells a that b is gone from a's view.
        a.presence("unavailable", b.full)
        # 3.2: b cancels a's... a still has From, so b cancels that: a
        # cancels b's subscription to a.
        a.send("<presence type='unsubscribed' to='%s'/>" % b.bare)
        assert a.push(b.bare).get("subscription") == "none"
        b.presence("unsubscribed", a.bare)
        assert b.push(a.bare).get("subscription") == "none"
        b.presence("unavailable", a.full)
        # No more presence either way.
        a.available(status="x")
        b.quiet(lambda el: is_presence(el, "", a.bare), seconds=0.3)
    finally:
        a.close()
        b.close()


def test_changes_for_an_offline_contact_are_stored(server):
    ca, cb = pair(server, "offc")
    a, b = online(server, ca), online(server, cb)
    try:
        subscribe_mutually(a, b)
        b.close_cleanly()
        a.send("<presence type='unsubscribed' to='%s'/>" % b.bare)
        assert a.push(b.bare).get("subscription") == "to"
        b = online(server, cb)
        assert state(b, a.bare) == ("from", None, None)
    finally:
        a.close()
        b.close()


def test_roster_remove_cancels_both_directions(server):
    ca, cb = pair(server, "rem")
    a, b = online(server, ca), online(server, cb)
    try:
        subscribe_mutually(a, b)
        assert a.roster_set(b.bare, subscription="remove").get("type") == "result"
        assert a.push(b.bare).get("subscription") == "remove"
        got = b.drain(0.6)
        kinds = [(el.get("type"), el.get("from")) for el in got if is_presence(el)]
        assert ("unsubscribe", a.bare) in kinds and ("unsubscribed", a.bare) in kinds, kinds
        assert ("unavailable", a.full) in kinds, kinds
        assert state(b, a.bare) == ("none", None, None)
        # A pending request is cancelled by a removal too.
        b.send("<presence type='subscribe' to='%s'/>" % a.bare)
        a.presence("subscribe", b.bare)
        b.push(a.bare)
        assert a.roster_set(b.bare).get("type") == "result"
        assert a.roster_set(b.bare, subscription="remove").get("type") == "result"
        b.presence("unsubscribed", a.bare)
        assert state(b, a.bare) == ("none", None, None)
    finally:
        a.close()
        b.close()


def test_subscription_to_unknown_account_or_other_domain(server):
    user, pw, jid = server.new_account("lonely")
    a = online(server, (user, pw))
    ghost = "nobody-%s@%s" % (user, DOMAIN)
    try:
        # 8.5.1: no such user: the server answers "unsubscribed".
        a.send("<presence type='subscribe' to='%s'/>" % ghost)
        assert a.push(ghost).get("ask") == "subscribe"
        a.presence("unsubscribed", ghost)
        assert a.push(ghost).get("ask") is None
        # An unreachable domain (.invalid never resolves, RFC 6761): the request
        # is bounced by the federation link and stays pending like any unanswered one.
        a.send("<presence type='subscribe' to='someone@example.invalid' id='far'/>")
        el = a.wait(lambda e: e.tag == q(NS_CLIENT, "presence") and e.get("id") == "far")
        assert error_condition(el) == ("cancel", "remote-server-not-found")
        assert items(a.roster_get())["someone@example.invalid"].get("ask") == "subscribe"
    finally:
        a.close()


def test_pending_request_survives_restart(make_server):
    srv = make_server()
    ca, cb = pair(srv, "rst")
    a = online(srv, ca)
    b_jid = "%s@%s" % (cb[0], DOMAIN)
    a.send("<presence type='subscribe' to='%s'><status>after restart</status></presence>" % b_jid)
    a.push(b_jid)
    a.close_cleanly()
    # The request is durable before the restart (it went through storage).
    for _ in range(50):
        if srv.db_query("SELECT count(*) FROM subscription_requests WHERE username = ?",
                        (cb[0],))[0][0]:
            break
        time.sleep(0.05)
    restart(srv)
    b = online(srv, cb)
    try:
        req = b.presence("subscribe", "%s@%s" % (ca[0], DOMAIN))
        assert req.findtext(q(NS_CLIENT, "status")) == "after restart"
        b.send("<presence type='subscribed' to='%s@%s'/>" % (ca[0], DOMAIN))
        assert b.push().get("subscription") == "from"
    finally:
        b.close()
    a = online(srv, ca)
    try:
        assert state(a, b_jid) == ("to", None, None)
    finally:
        a.close()


def test_slixmpp_clients_subscribe_to_each_other(server, xmpp, arun):
    ua, pa, ja = server.new_account("slixsa")
    ub, pb, jb = server.new_account("slixsb")
    a = xmpp(ja, pa, server.c2s_port)
    b = xmpp(jb, pb, server.c2s_port)
    for c in (a, b):
        c.roster.auto_authorize = None  # None: ask (False would refuse at once)
        c.roster.auto_subscribe = False

    async def scenario():
        await asyncio.gather(connect_and_wait(a), connect_and_wait(b))
        await asyncio.gather(a.get_roster(timeout=10), b.get_roster(timeout=10))
        a.send_presence()
        b.send_presence()
        got_request = asyncio.get_running_loop().create_future()
        b.add_event_handler("presence_subscribe",
                            lambda p: got_request.done() or got_request.set_result(p))
        a.send_presence_subscription(pto=jb)
        p = await asyncio.wait_for(got_request, 10)
        assert p["from"].bare == ja
        b.send_presence(pto=ja, ptype="subscribed")
        for _ in range(100):
            if a.client_roster[jb]["subscription"] == "to" and \
                    b.client_roster[ja]["subscription"] == "from":
                break
            await asyncio.sleep(0.05)
        assert a.client_roster[jb]["subscription"] == "to"
        assert b.client_roster[ja]["subscription"] == "from"
        # a now sees b online.
        for _ in range(100):
            if a.client_roster[jb].resources:
                break
            await asyncio.sleep(0.05)
        assert a.client_roster[jb].resources, "no presence from b"
    arun(scenario())
