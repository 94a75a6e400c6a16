"""Addresses on what the server sends (RFC 6120 8.1.2.1)."""

from harness import NS_CLIENT, DOMAIN, login, q, tostr

NS_ROSTER = "jabber:iq:roster"
NS_PING = "urn:xmpp:ping"


def test_answers_for_the_account_never_come_from_the_domain(server):
    """Data the server keeps for the account (roster): 'from' absent or the bare JID."""
    user, password, jid = server.new_account("addr")
    s, full = login(server.c2s_port, user, password)
    try:
        s.send("<iq type='get' id='r1'><query xmlns='%s'/></iq>" % NS_ROSTER)
        el = s.expect(q(NS_CLIENT, "iq"))
        assert el.get("id") == "r1" and el.get("type") == "result", tostr(el)
        assert el.get("from") in (None, jid), tostr(el)
        # A request to the server itself is answered by the server.
        s.send("<iq type='get' id='p1' to='%s'><ping xmlns='%s'/></iq>" % (DOMAIN, NS_PING))
        el = s.expect(q(NS_CLIENT, "iq"))
        assert el.get("id") == "p1" and el.get("from") == DOMAIN, tostr(el)
    finally:
        s.close()
