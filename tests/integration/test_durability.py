"""Durability of acknowledgements: a stanza the server acknowledged with a
XEP-0198 <a/> is committed to storage (DESIGN: durable once acknowledged)."""


from harness import NS_CLIENT, login, q, tostr

NS_SM = "urn:xmpp:sm:3"


def offline_rows(server, user):
    return server.db_query("SELECT stanza FROM offline_messages WHERE username = ?", (user,))


def test_ack_for_an_offline_message_comes_after_its_commit(server):
    sender, spw, _ = server.new_account("dur")
    rcpt, _, rjid = server.new_account("dur")
    s, _ = login(server.c2s_port, sender, spw)
    try:
        s.send("<enable xmlns='%s'/>" % NS_SM)
        s.expect(q(NS_SM, "enabled"))
        for i in range(5):
            s.send("<message to='%s' type='chat' id='m%d'><body>durable %d</body></message>"
                   % (rjid, i, i))
        s.send("<r xmlns='%s'/>" % NS_SM)
        a = s.expect(q(NS_SM, "a"))
        assert a.get("h") == "5", tostr(a)
        # The moment the ack is out, every acknowledged message is on disk.
        rows = offline_rows(server, rcpt)
        bodies = [r[0] for r in rows]
        assert len(bodies) == 5, bodies
        for i in range(5):
            assert any("durable %d" % i in b for b in bodies), bodies
    finally:
        s.close()


def test_message_stored_while_recipient_turns_available_is_still_delivered(server):
    """A message stored offline for a bound but not yet available session,
    whose available presence arrives while the write is in flight, is
    delivered once the write completes (not left until the next login)."""
    sender, spw, _ = server.new_account("race")
    rcpt, rpw, rjid = server.new_account("race")
    snd, _ = login(server.c2s_port, sender, spw)
    rcv, _ = login(server.c2s_port, rcpt, rpw)
    try:
        for i in range(5):
            # Message first, presence right behind it: the store is still in flight.
            snd.send("<message to='%s' type='chat' id='x%d'><body>race %d</body></message>"
                     % (rjid, i, i))
            if i == 0:
                rcv.send("<presence/>")
        got = []
        while len(got) < 5:
            el = rcv.next(timeout=5)
            if el.tag == q(NS_CLIENT, "message"):
                got.append(el.find(q(NS_CLIENT, "body")).text)
        assert sorted(got) == ["race %d" % i for i in range(5)], got
    finally:
        snd.close()
        rcv.close()
