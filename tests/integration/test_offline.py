"""Offline messages (XEP-0160, XEP-0203 stamps; RFC 6121 8.5.2.2 and
8.5.3.2): what is stored and what is not, delivery at the first
non-negative available presence to that resource, order, the quota,
accounts that do not exist, persistence across a restart, and a real
client (slixmpp)."""
import asyncio
import datetime
import os
import time

from harness import (DOMAIN, NS_CLIENT, NS_DISCO_INFO, connect_and_wait, next_message, q,
                     tostr, uniq)
from imutil import NS_DELAY, Client, error_condition, restart


def account(server, prefix):
    u, p, _ = server.new_account(prefix)
    return (u, p)


def jid(creds):
    return "%s@%s" % (creds[0], DOMAIN)


def stored(server, user):
    return server.db_query("SELECT count(*) FROM offline_messages WHERE username = ?",
                           (user,))[0][0]


def wait_stored(server, user, n, timeout=5):
    deadline = time.monotonic() + timeout
    while stored(server, user) != n:
        assert time.monotonic() < deadline, "stored %d, want %d" % (stored(server, user), n)
        time.sleep(0.02)


def delay_of(msg):
    d = msg.find(q(NS_DELAY, "delay"))
    assert d is not None, "no delay stamp: %s" % tostr(msg)
    return d


def test_message_for_offline_account_is_stored_and_delivered_with_delay(server):
    ca, cb = account(server, "offa"), account(server, "offb")
    a = Client(server, *ca)
    try:
        before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        a.send("<message to='%s' type='chat' id='o1'><body>while you were out</body>"
               "<thread>t1</thread></message>" % jid(cb))
        a.send("<message to='%s' id='o2'><body>normal one</body></message>" % jid(cb))
        a.quiet(seconds=0.3)  # no error: kept
        wait_stored(server, cb[0], 2)
        b = Client(server, *cb)
        b.roster_get()
        b.quiet(lambda el: el.tag == q(NS_CLIENT, "message"), seconds=0.3)
        b.available()
        m1, m2 = b.message(), b.message()
        assert (m1.get("id"), m2.get("id")) == ("o1", "o2")
        assert m1.get("from") == a.full and m1.get("to") == jid(cb) and m1.get("type") == "chat"
        assert m1.findtext(q(NS_CLIENT, "body")) == "while you were out"
        assert m1.findtext(q(NS_CLIENT, "thread")) == "t1"
        d = delay_of(m1)
        assert d.get("from") == DOMAIN
        stamp = datetime.datetime.strptime(d.get("stamp"), "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc)
        assert before - datetime.timedelta(seconds=2) <= stamp <= \
            datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
        # Delivered means deleted.
        wait_stored(server, cb[0], 0)
        b.close_cleanly()
        b = Client(server, *cb)
        b.available()
        b.quiet(lambda el: el.tag == q(NS_CLIENT, "message"), seconds=0.4)
        b.close()
    finally:
        a.close()


def test_only_normal_and_chat_are_stored(server):
    ca, cb = account(server, "typa"), account(server, "typb")
    a = Client(server, *ca)
    try:
        to = jid(cb)
        a.send("<message to='%s' type='headline' id='h'><body>news</body></message>" % to)
        a.send("<message to='%s' type='error' id='e'><error type='cancel'>"
               "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
               "</message>" % to)
        a.send("<message to='%s' type='chat' id='cs'><composing xmlns="
               "'http://jabber.org/protocol/chatstates'/></message>" % to)
        a.send("<message to='%s' type='chat' id='ns'><body>x</body>"
               "<no-store xmlns='urn:xmpp:hints'/></message>" % to)
        a.send("<message to='%s' type='groupchat' id='g'><body>x</body></message>" % to)
        el = a.message()
        assert el.get("id") == "g" and error_condition(el) == ("cancel", "service-unavailable")
        a.send("<message to='%s' type='chat' id='keep'><body>kept</body>"
               "<active xmlns='http://jabber.org/protocol/chatstates'/></message>" % to)
        wait_stored(server, cb[0], 1)
        a.quiet(seconds=0.2)
        b = Client(server, *cb)
        b.available()
        m = b.message()
        assert m.get("id") == "keep"
        b.quiet(lambda el: el.tag == q(NS_CLIENT, "message"), seconds=0.3)
        b.close()
    finally:
        a.close()


def test_unknown_account_gets_service_unavailable_with_payload(server):
    ca = account(server, "ghostsender")
    a = Client(server, *ca)
    try:
        ghost = "nobody-%s@%s" % (uniq("g"), DOMAIN)
        a.send("<message to='%s' type='chat' id='u1'><body>hello?</body></message>" % ghost)
        el = a.message()
        assert el.get("id") == "u1" and el.get("from") == ghost and el.get("to") == a.full
        assert error_condition(el) == ("cancel", "service-unavailable")
        assert el.findtext(q(NS_CLIENT, "body")) == "hello?"
        # The same for a full JID of an unknown account (chat: as if bare).
        a.send("<message to='%s/res' type='chat' id='u2'><body>x</body></message>" % ghost)
        el = a.message()
        assert el.get("id") == "u2" and error_condition(el)[1] == "service-unavailable"
    finally:
        a.close()


def test_quota_is_answered_with_resource_constraint(make_server):
    srv = make_server("--max-offline-messages", "2")
    ca, cb = account(srv, "quota"), account(srv, "quotb")
    a = Client(srv, *ca)
    try:
        for i in range(3):
            a.send("<message to='%s' type='chat' id='q%d'><body>%d</body></message>"
                   % (jid(cb), i, i))
        el = a.message()
        assert el.get("id") == "q2" and error_condition(el) == ("wait", "resource-constraint")
        a.quiet(seconds=0.2)
        b = Client(srv, *cb)
        b.available()
        assert [b.message().get("id") for _ in range(2)] == ["q0", "q1"]
        b.close()
        # Room again once delivered.
        wait_stored(srv, cb[0], 0)
        a.send("<message to='%s' type='chat' id='q3'><body>3</body></message>" % jid(cb))
        wait_stored(srv, cb[0], 1)
    finally:
        a.close()


def test_order_is_kept_across_storage_and_delivery(server):
    ca, cb = account(server, "orda"), account(server, "ordb")
    a = Client(server, *ca)
    try:
        n = 150  # more than one fetch batch
        for i in range(n):
            a.send("<message to='%s' type='chat' id='m%d'><body>%d</body></message>"
                   % (jid(cb), i, i))
        wait_stored(server, cb[0], n, timeout=10)
        b = Client(server, *cb)
        b.available()
        # Messages sent while the stored ones are being delivered queue
        # behind them.
        for i in range(n, n + 30):
            a.send("<message to='%s' type='chat' id='m%d'><body>%d</body></message>"
                   % (jid(cb), i, i))
        ids = [b.message(timeout=10).get("id") for _ in range(n + 30)]
        assert ids == ["m%d" % i for i in range(n + 30)]
        b.quiet(lambda el: el.tag == q(NS_CLIENT, "message"), seconds=0.3)
        b.close()
    finally:
        a.close()


def test_delivery_waits_for_non_negative_priority_and_goes_to_that_resource(server):
    ca, cb = account(server, "prioa"), account(server, "priob")
    a = Client(server, *ca)
    try:
        a.send("<message to='%s' type='chat' id='p1'><body>for the first one</body></message>"
               % jid(cb))
        wait_stored(server, cb[0], 1)
        neg = Client(server, *cb, resource="neg")
        idle = Client(server, *cb, resource="idle")
        neg.available(priority=-1)
        neg.quiet(lambda el: el.tag == q(NS_CLIENT, "message"), seconds=0.3)
        assert stored(server, cb[0]) == 1
        pos = Client(server, *cb, resource="pos")
        pos.available(priority=0)
        m = pos.message()
        assert m.get("id") == "p1"
        for x in (neg, idle):
            x.quiet(lambda el: el.tag == q(NS_CLIENT, "message"), seconds=0.2)
        for x in (neg, idle, pos):
            x.close()
    finally:
        a.close()


def test_full_jid_of_gone_resource(server):
    ca, cb = account(server, "fja"), account(server, "fjb")
    a = Client(server, *ca)
    try:
        gone = "%s/gone" % jid(cb)
        # 8.5.3.2.1: chat is handled as if sent to the bare JID (stored) ...
        a.send("<message to='%s' type='chat' id='c'><body>chat</body></message>" % gone)
        wait_stored(server, cb[0], 1)
        # ... normal and headline are refused.
        a.send("<message to='%s' type='normal' id='n'><body>x</body></message>" % gone)
        el = a.message()
        assert el.get("id") == "n" and error_condition(el)[1] == "service-unavailable"
        a.send("<message to='%s' type='headline' id='h'><body>x</body></message>" % gone)
        el = a.message()
        assert el.get("id") == "h" and error_condition(el)[1] == "service-unavailable"
        b = Client(server, *cb)
        b.available()
        m = b.message()
        assert m.get("id") == "c" and m.get("to") == gone
        b.close()
    finally:
        a.close()


def test_server_advertises_msgoffline(server):
    ca = account(server, "disco")
    a = Client(server, *ca)
    try:
        r = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=DOMAIN)
        feats = [f.get("var") for f in r.find(q(NS_DISCO_INFO, "query"))
                 if f.tag == q(NS_DISCO_INFO, "feature")]
        assert "msgoffline" in feats, feats
    finally:
        a.close()


def test_offline_messages_survive_restart(make_server):
    srv = make_server()
    ca, cb = account(srv, "rsta"), account(srv, "rstb")
    a = Client(srv, *ca)
    for i in range(3):
        a.send("<message to='%s' type='chat' id='r%d'><body>before restart %d</body></message>"
               % (jid(cb), i, i))
    wait_stored(srv, cb[0], 3)
    a.close_cleanly()
    restart(srv)
    b = Client(srv, *cb)
    try:
        b.available()
        ms = [b.message() for _ in range(3)]
        assert [m.get("id") for m in ms] == ["r0", "r1", "r2"]
        assert all(delay_of(m).get("from") == DOMAIN for m in ms)
    finally:
        b.close()


def test_slixmpp_receives_offline_message_with_delay(server, xmpp, arun):
    ua, pa, ja = server.new_account("slixoa")
    ub, pb, jb = server.new_account("slixob")
    a = xmpp(ja, pa, server.c2s_port)
    b = xmpp(jb, pb, server.c2s_port, plugins=["xep_0203"])

    async def scenario():
        await connect_and_wait(a)
        a.send_message(mto=jb, mbody="stored for slixmpp", mtype="chat")
        for _ in range(100):
            if stored(server, ub) == 1:
                break
            await asyncio.sleep(0.05)
        await connect_and_wait(b)
        b.send_presence()
        m = await next_message(b, body="stored for slixmpp")
        assert m["from"].bare == ja
        assert m["delay"]["from"] == DOMAIN and m["delay"]["stamp"] is not None
    arun(scenario())
