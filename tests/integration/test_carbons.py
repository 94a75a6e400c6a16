"""XEP-0280 Message Carbons: enabling and disabling per session, received
and sent copies and their wrapping (XEP-0297), which messages are copied
(section 6.1, <private/> and the XEP-0334 <no-copy/> hint), and which
resources get a copy (not the ones that got the message itself)."""
import asyncio
import time

from harness import DOMAIN, NS_CLIENT, NS_DISCO_INFO, connect_and_wait, login, q, tostr

NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_HINTS = "urn:xmpp:hints"


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
    to_attr = " to='%s'" % to if to else ""
    s.send("<iq type='%s' id='%s'%s>%s</iq>" % (iq_type, iq_id, to_attr, payload))
    deadline = time.monotonic() + 10
    while True:
        el = s.next(max(0.01, deadline - time.monotonic()))
        if el.tag == q(NS_CLIENT, "iq") and el.get("id") == iq_id:
            return el


def enable(s, on=True, iq_id="cb"):
    el = request(s, "set", "<%s xmlns='%s'/>" % ("enable" if on else "disable", NS_CARBONS),
                 iq_id)
    assert el.get("type") == "result", tostr(el)


def presence(s, priority=0):
    s.send("<presence><priority>%d</priority></presence>" % priority)


def messages(els):
    return [e for e in els if e.tag == q(NS_CLIENT, "message")]


def carbon(el, direction):
    """The forwarded message inside a carbon of `direction` ('received' or 'sent')."""
    wrap = el.find(q(NS_CARBONS, direction))
    assert wrap is not None, "not a %s carbon: %s" % (direction, tostr(el))
    fw = wrap.find(q(NS_FORWARD, "forwarded"))
    assert fw is not None, tostr(el)
    inner = fw.find(q(NS_CLIENT, "message"))
    assert inner is not None, tostr(el)
    return inner


class Account:
    """An account with several raw sessions (resources)."""

    def __init__(self, server, prefix, resources):
        self.user, self.password, self.jid = server.new_account(prefix)
        self.s = {}
        self.full = {}
        for r in resources:
            self.s[r], self.full[r] = login(server.c2s_port, self.user, self.password, resource=r)

    def drain(self):
        for s in self.s.values():
            drain(s)

    def close(self):
        for s in self.s.values():
            s.close()


def make_pair(server, alice_res=("r1", "r2", "r3"), enabled=("r1", "r2"), prio=None):
    alice = Account(server, "alice", alice_res)
    bob = Account(server, "bob", ("b",))
    for r in enabled:
        enable(alice.s[r])
    for r in alice_res:
        presence(alice.s[r], (prio or {}).get(r, 0))
    presence(bob.s["b"])
    # Round one: every presence was handled; round two: what it caused is read.
    for _ in range(2):
        alice.drain()
        bob.drain()
    return alice, bob


def test_server_advertises_carbons(server):
    u, p, j = server.new_account("disco")
    s, full = login(server.c2s_port, u, p)
    try:
        el = request(s, "get", "<query xmlns='%s'/>" % NS_DISCO_INFO, "d1", to=DOMAIN)
        feats = [f.get("var") for f in el.find(q(NS_DISCO_INFO, "query"))
                 if f.tag == q(NS_DISCO_INFO, "feature")]
        assert NS_CARBONS in feats, tostr(el)
    finally:
        s.close()


def test_enable_and_disable_are_idempotent_and_answered(server):
    u, p, j = server.new_account("toggle")
    s, full = login(server.c2s_port, u, p)
    try:
        for i, payload in enumerate(["enable", "enable", "disable", "disable", "enable"]):
            el = request(s, "set", "<%s xmlns='%s'/>" % (payload, NS_CARBONS), "t%d" % i)
            assert el.get("type") == "result" and el.get("to") == full, tostr(el)
        # Addressed to the own bare JID works too.
        el = request(s, "set", "<disable xmlns='%s'/>" % NS_CARBONS, "bare", to=j)
        assert el.get("type") == "result", tostr(el)
        # A get is not the protocol.
        el = request(s, "get", "<enable xmlns='%s'/>" % NS_CARBONS, "g")
        assert el.get("type") == "error", tostr(el)
    finally:
        s.close()


def test_received_message_is_copied_to_other_enabled_resources_only(server):
    alice, bob = make_pair(server)
    try:
        bob.s["b"].send("<message to='%s' type='chat' id='m1'><body>to r1</body>"
                        "<thread>t1</thread></message>" % alice.full["r1"])
        el = alice.s["r1"].expect(q(NS_CLIENT, "message"))
        assert el.get("id") == "m1" and el.find(q(NS_CARBONS, "received")) is None
        el = alice.s["r2"].expect(q(NS_CLIENT, "message"))
        assert (el.get("from"), el.get("to"), el.get("type")) == (
            alice.jid, alice.full["r2"], "chat"), tostr(el)
        inner = carbon(el, "received")
        assert (inner.get("from"), inner.get("to"), inner.get("id")) == (
            bob.full["b"], alice.full["r1"], "m1"), tostr(el)
        assert inner.findtext(q(NS_CLIENT, "body")) == "to r1"
        assert inner.findtext(q(NS_CLIENT, "thread")) == "t1"
        assert alice.s["r3"].nothing_within(0.3), "r3 did not enable carbons"
        assert alice.s["r1"].nothing_within(0.05) and bob.s["b"].nothing_within(0.05)
    finally:
        alice.close()
        bob.close()


def test_sent_message_is_copied_to_other_enabled_resources_only(server):
    alice, bob = make_pair(server, enabled=("r2",))
    try:
        # r1 has carbons off: its messages are still copied to r2 (section 7).
        alice.s["r1"].send("<message to='%s' type='chat' id='s1'><body>hello bob</body></message>"
                           % bob.jid)
        el = bob.s["b"].expect(q(NS_CLIENT, "message"))
        assert el.get("id") == "s1" and el.find(q(NS_CARBONS, "sent")) is None
        el = alice.s["r2"].expect(q(NS_CLIENT, "message"))
        assert (el.get("from"), el.get("to"), el.get("type")) == (
            alice.jid, alice.full["r2"], "chat"), tostr(el)
        inner = carbon(el, "sent")
        assert (inner.get("from"), inner.get("to"), inner.get("id")) == (
            alice.full["r1"], bob.jid, "s1"), tostr(el)
        assert inner.findtext(q(NS_CLIENT, "body")) == "hello bob"
        assert alice.s["r1"].nothing_within(0.3), "the sender got its own copy"
        assert alice.s["r3"].nothing_within(0.05)
        # Now r1 enables: still no copy of its own messages.
        enable(alice.s["r1"], iq_id="late")
        alice.s["r1"].send("<message to='%s' type='chat' id='s2'><body>again</body></message>"
                           % bob.full["b"])
        assert carbon(alice.s["r2"].expect(q(NS_CLIENT, "message")), "sent").get("id") == "s2"
        assert alice.s["r1"].nothing_within(0.3)
    finally:
        alice.close()
        bob.close()


def test_private_and_no_copy_messages_are_not_copied(server):
    alice, bob = make_pair(server)
    try:
        marks = ["<private xmlns='%s'/>" % NS_CARBONS, "<no-copy xmlns='%s'/>" % NS_HINTS,
                 "<private xmlns='%s'/><no-copy xmlns='%s'/>" % (NS_CARBONS, NS_HINTS)]
        for i, mark in enumerate(marks):
            bob.s["b"].send("<message to='%s' type='chat' id='in%d'><body>x</body>%s</message>"
                            % (alice.full["r1"], i, mark))
            assert alice.s["r1"].expect(q(NS_CLIENT, "message")).get("id") == "in%d" % i
            alice.s["r1"].send("<message to='%s' type='chat' id='out%d'><body>y</body>%s"
                               "</message>" % (bob.jid, i, mark))
            assert bob.s["b"].expect(q(NS_CLIENT, "message")).get("id") == "out%d" % i
        assert alice.s["r2"].nothing_within(0.4), "a private message was copied"
        # The marks did not disable carbons for the next message.
        bob.s["b"].send("<message to='%s' type='chat' id='plain'><body>z</body></message>"
                        % alice.full["r1"])
        assert carbon(alice.s["r2"].expect(q(NS_CLIENT, "message")), "received").get(
            "id") == "plain"
    finally:
        alice.close()
        bob.close()


def test_bare_jid_delivery_copies_only_to_resources_that_did_not_get_it(server):
    alice, bob = make_pair(server, enabled=("r1", "r2", "r3"), prio={"r1": 5, "r2": 5, "r3": 1})
    try:
        bob.s["b"].send("<message to='%s' type='chat' id='bare'><body>all</body></message>"
                        % alice.jid)
        for r in ("r1", "r2"):
            el = alice.s[r].expect(q(NS_CLIENT, "message"))
            assert el.get("id") == "bare" and el.find(q(NS_CARBONS, "received")) is None, tostr(el)
            assert alice.s[r].nothing_within(0.2), "a resource got the message twice"
        el = alice.s["r3"].expect(q(NS_CLIENT, "message"))
        assert carbon(el, "received").get("id") == "bare"
    finally:
        alice.close()
        bob.close()


def test_which_messages_are_eligible(server):
    alice, bob = make_pair(server)
    cases = [
        ("normal-body", "<message to='%s' id='%s'><body>x</body></message>", True),
        ("normal-nobody", "<message to='%s' id='%s'><subject>s</subject></message>", False),
        ("headline", "<message to='%s' type='headline' id='%s'><body>x</body></message>", False),
        ("groupchat", "<message to='%s' type='groupchat' id='%s'><body>x</body></message>",
         False),
        ("chatstate", "<message to='%s' id='%s'><composing "
         "xmlns='http://jabber.org/protocol/chatstates'/></message>", True),
        ("receipt", "<message to='%s' id='%s'><received xmlns='urn:xmpp:receipts' id='m'/>"
         "</message>", True),
        ("marker", "<message to='%s' id='%s'><displayed xmlns='urn:xmpp:chat-markers:0' id='m'/>"
         "</message>", True),
        ("chat-empty", "<message to='%s' type='chat' id='%s'/>", True),
        ("muc-pm", "<message to='%s' type='chat' id='%s'><body>pm</body>"
         "<x xmlns='http://jabber.org/protocol/muc#user'/></message>", False),
        ("muc-invite", "<message to='%s' id='%s'><x xmlns='http://jabber.org/protocol/muc#user'>"
         "<invite from='c@d'/></x></message>", True),
        ("direct-invite", "<message to='%s' id='%s'><x xmlns='jabber:x:conference' jid='r@c'/>"
         "</message>", True),
        ("nested-carbon", "<message to='%s' type='chat' id='%s'><received xmlns='%s'/>"
         "</message>" % ("%s", "%s", NS_CARBONS), False),
    ]
    try:
        for name, tmpl, want in cases:
            bob.s["b"].send(tmpl % (alice.full["r1"], name))
            el = alice.s["r1"].expect(q(NS_CLIENT, "message"))
            assert el.get("id") == name, tostr(el)
            got = messages(drain(alice.s["r2"]))
            if want:
                assert len(got) == 1 and carbon(got[0], "received").get("id") == name, \
                    "%s: %s" % (name, [tostr(g) for g in got])
                assert got[0].get("type") == el.get("type"), tostr(got[0])
            else:
                assert not got, "%s copied: %s" % (name, tostr(got[0]))
    finally:
        alice.close()
        bob.close()


def test_disabled_resource_gets_no_copies(server):
    alice, bob = make_pair(server)
    try:
        enable(alice.s["r2"], on=False, iq_id="off")
        bob.s["b"].send("<message to='%s' type='chat' id='x'><body>x</body></message>"
                        % alice.full["r1"])
        assert alice.s["r1"].expect(q(NS_CLIENT, "message")).get("id") == "x"
        alice.s["r1"].send("<message to='%s' type='chat' id='y'><body>y</body></message>"
                           % bob.jid)
        assert bob.s["b"].expect(q(NS_CLIENT, "message")).get("id") == "y"
        assert alice.s["r2"].nothing_within(0.4)
    finally:
        alice.close()
        bob.close()


def test_message_between_own_resources_gives_one_copy(server):
    alice, bob = make_pair(server, enabled=("r1", "r2", "r3"))
    try:
        alice.s["r1"].send("<message to='%s' type='chat' id='self'><body>note</body></message>"
                           % alice.full["r2"])
        assert alice.s["r2"].expect(q(NS_CLIENT, "message")).get("id") == "self"
        got = messages(drain(alice.s["r3"]))
        assert len(got) == 1 and carbon(got[0], "received").get("id") == "self", \
            [tostr(g) for g in got]
        assert alice.s["r1"].nothing_within(0.1) and alice.s["r2"].nothing_within(0.1)
    finally:
        alice.close()
        bob.close()


def test_undeliverable_message_is_not_copied(server):
    """No resource takes the message (it goes to offline storage, or the
    sender gets an error): no resource gets a copy either."""
    alice = Account(server, "alice", ("r1",))
    bob = Account(server, "bob", ("b",))
    try:
        enable(alice.s["r1"])  # carbons on, but never sent presence
        bob.s["b"].send("<message to='%s' type='chat' id='u'><body>x</body></message>" % alice.jid)
        assert alice.s["r1"].nothing_within(0.4), "an undelivered message was copied"
        for el in drain(bob.s["b"]):
            assert el.get("type") == "error", tostr(el)
    finally:
        alice.close()
        bob.close()


def test_slixmpp_sees_carbon_events(server, xmpp, arun):
    ua, pa, ja = server.new_account("slixa")
    ub, pb, jb = server.new_account("slixb")
    plugins = ["xep_0030", "xep_0297", "xep_0280"]
    a1 = xmpp(ja + "/one", pa, server.c2s_port, plugins=plugins)
    a2 = xmpp(ja + "/two", pa, server.c2s_port, plugins=plugins)
    b = xmpp(jb + "/b", pb, server.c2s_port, plugins=plugins)

    async def scenario():
        await asyncio.gather(connect_and_wait(a1), connect_and_wait(a2), connect_and_wait(b))
        await a2["xep_0280"].enable()
        loop = asyncio.get_running_loop()
        sent, received = loop.create_future(), loop.create_future()
        a2.add_event_handler("carbon_sent", lambda m: sent.done() or sent.set_result(m))
        a2.add_event_handler("carbon_received",
                             lambda m: received.done() or received.set_result(m))
        a1.send_message(mto=b.boundjid.full, mbody="out", mtype="chat")
        m = await asyncio.wait_for(sent, 10)
        assert m["carbon_sent"]["body"] == "out"
        b.send_message(mto=a1.boundjid.full, mbody="in", mtype="chat")
        m = await asyncio.wait_for(received, 10)
        assert m["carbon_received"]["body"] == "in"
        assert m["carbon_received"]["from"] == b.boundjid
    arun(scenario())
