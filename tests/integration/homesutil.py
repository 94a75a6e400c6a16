"""Checks shared by the tests of forwarding between account homes
(test_homes.py with `homes = loop`, test_homes_spread.py with accounts on
different workers): each takes the server and the accounts to use."""

from harness import NS_CLIENT, login, q, tostr

NS_VCARD = "vcard-temp"
NS_SM = "urn:xmpp:sm:3"
NS_MAM = "urn:xmpp:mam:2"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def next_of(stream, tag, timeout=5):
    """The next element with this tag (skipping others, e.g. presence)."""
    while True:
        el = stream.next(timeout)
        if el.tag == tag:
            return el


def db_rows(server, sql, *args):
    return server.db_query(sql, args)


def check_messages_stay_in_order(server, sender, recipient, count=200):
    """sender, recipient: (user, password, bare JID). Bare and full JID
    interleaved, and the whole burst in one write."""
    snd, _ = login(server.c2s_port, sender[0], sender[1])
    rcv, rfull = login(server.c2s_port, recipient[0], recipient[1])
    try:
        rcv.send("<presence/>")
        burst = "".join("<message to='%s' type='chat' id='o%d'><body>%d</body></message>"
                        % (recipient[2] if i % 2 else rfull, i, i) for i in range(count))
        snd.send(burst)
        got = []
        while len(got) < count:
            el = next_of(rcv, q(NS_CLIENT, "message"))
            got.append(int(el.find(q(NS_CLIENT, "body")).text))
        assert got == list(range(count)), got
    finally:
        snd.close()
        rcv.close()


def check_errors_come_back(server, sender, rjid):
    """A message and an iq to a resource of rjid that is not there."""
    snd, _ = login(server.c2s_port, sender[0], sender[1])
    try:
        # Not chat, to a resource that is not there: service-unavailable (RFC 6121 8.5.3.2).
        snd.send("<message to='%s/nowhere' type='normal' id='b1'><body>x</body></message>"
                 % rjid)
        el = next_of(snd, q(NS_CLIENT, "message"))
        assert el.get("type") == "error" and el.get("id") == "b1", tostr(el)
        assert el.find(q(NS_CLIENT, "error")).find(
            q(NS_STANZAS, "service-unavailable")) is not None, tostr(el)
        snd.send("<iq to='%s/nowhere' type='get' id='b2'><ping xmlns='urn:xmpp:ping'/></iq>"
                 % rjid)
        el = next_of(snd, q(NS_CLIENT, "iq"))
        assert el.get("type") == "error" and el.get("id") == "b2", tostr(el)
    finally:
        snd.close()


def check_contact_vcard(server, asker, owner, name, burst=0):
    """owner sets a vCard; asker reads it (IQ_SCOPE_CONTACT: answered at the
    owner's home from storage, routed back), then `burst` more at once."""
    o, _ = login(server.c2s_port, owner[0], owner[1])
    a, _ = login(server.c2s_port, asker[0], asker[1])
    try:
        o.send("<iq type='set' id='v1'><vCard xmlns='%s'><FN>%s</FN></vCard></iq>"
               % (NS_VCARD, name))
        el = next_of(o, q(NS_CLIENT, "iq"))
        assert el.get("type") == "result", tostr(el)
        a.send("<iq to='%s' type='get' id='v2'><vCard xmlns='%s'/></iq>" % (owner[2], NS_VCARD))
        el = next_of(a, q(NS_CLIENT, "iq"))
        assert el.get("type") == "result" and el.get("id") == "v2", tostr(el)
        assert el.get("from") == owner[2], tostr(el)
        fn = el.find(q(NS_VCARD, "vCard")).find(q(NS_VCARD, "FN"))
        assert fn is not None and fn.text == name, tostr(el)
        if burst:
            a.send("".join("<iq to='%s' type='get' id='m%d'><vCard xmlns='%s'/></iq>"
                           % (owner[2], i, NS_VCARD) for i in range(burst)))
            ids = [next_of(a, q(NS_CLIENT, "iq")).get("id") for _ in range(burst)]
            assert sorted(ids) == sorted("m%d" % i for i in range(burst)), ids
    finally:
        o.close()
        a.close()


def check_both_archives(server, sender, recipient):
    """A message from sender to recipient (each (user, password, bare JID)),
    acknowledged under stream management: then archived for both (the
    recipient's entry written at its home), and found by the recipient's query."""
    (su, sp, _), (ru, rp, rjid) = sender, recipient
    snd, _ = login(server.c2s_port, su, sp)
    rcv, _ = login(server.c2s_port, ru, rp)
    try:
        rcv.send("<presence/>")
        snd.send("<enable xmlns='%s'/>" % NS_SM)
        snd.expect(q(NS_SM, "enabled"))
        snd.send("<message to='%s' type='chat' id='m1'><body>keep me</body></message>" % rjid)
        el = next_of(rcv, q(NS_CLIENT, "message"))
        assert el.find(q(NS_CLIENT, "body")).text == "keep me", tostr(el)
        sid = el.find(q("urn:xmpp:sid:0", "stanza-id"))
        assert sid is not None and sid.get("by") == rjid, tostr(el)
        snd.send("<r xmlns='%s'/>" % NS_SM)
        snd.expect(q(NS_SM, "a"))
        # Both archives: the sender's (outgoing, at its home) and the recipient's.
        rows = db_rows(server, "SELECT username, outgoing, id FROM mam_messages "
                       "WHERE username IN (?, ?) ORDER BY username", su, ru)
        by_user = {u: (o, i) for u, o, i in rows}
        assert by_user.get(su, (None,))[0] == 1, rows
        assert by_user.get(ru) == (0, sid.get("id")), rows
        # And a query by the recipient finds it.
        rcv.send("<iq type='set' id='q1'><query xmlns='%s' queryid='f'/></iq>" % NS_MAM)
        bodies = []
        while True:
            el = rcv.next(5)
            if el.tag == q(NS_CLIENT, "iq") and el.get("id") == "q1":
                assert el.get("type") == "result", tostr(el)
                break
            res = el.find(q(NS_MAM, "result"))
            if res is not None:
                bodies.append(tostr(res))
        assert any("keep me" in b for b in bodies), bodies
    finally:
        snd.close()
        rcv.close()
