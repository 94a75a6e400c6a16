"""Routing between sessions, stanza rules and server-answered iqs
(RFC 6120 sections 8 and 10, RFC 6121 section 8, XEP-0030, XEP-0199)."""
import asyncio
import socket
import struct

import pytest

from harness import (DOMAIN, NS_CLIENT, NS_DISCO_INFO, NS_PING, NS_SESSION, NS_STANZAS,
                     RawStream, connect_and_wait, login, next_message, q, tostr, uniq)

TRICKY_BODIES = [
    "plain ascii",
    "<b>bold?</b> & &amp; 'single' \"double\" ]]> <![CDATA[x]]>",
    "ünïcødé — 日本語テキスト — emoji 😀🚀 — עברית",
    "  leading and trailing spaces\nand a second line\ttab  ",
]


def stanza_error(el):
    """(type, condition) of an error stanza."""
    assert el.get("type") == "error", "not an error: %s" % tostr(el)
    err = el.find(q(NS_CLIENT, "error"))
    assert err is not None, "error stanza without <error/>: %s" % tostr(el)
    conds = [c.tag.split("}")[1] for c in err if c.tag.startswith("{%s}" % NS_STANZAS)
             and not c.tag.endswith("}text")]
    assert len(conds) == 1, tostr(el)
    return err.get("type"), conds[0]


# ---- 3: two clients, both directions, full and bare JIDs ----

def test_two_clients_exchange_messages_both_ways_full_and_bare_jid(server, xmpp, arun):
    ua, pa, ja = server.new_account("alice")
    ub, pb, jb = server.new_account("bob")
    # Default mechanism choice: what slixmpp picks on its own.
    a = xmpp(ja, pa, server.c2s_port)
    b = xmpp(jb, pb, server.c2s_port)

    async def scenario():
        await asyncio.gather(connect_and_wait(a), connect_and_wait(b))
        a.send_presence()
        b.send_presence()
        # Bare-JID delivery needs the initial presence to have been processed;
        # the full-JID round trip below orders it (one server, one stream each).
        for i, body in enumerate(TRICKY_BODIES):
            # full -> full, then back to the bare JID, then bare -> bare ...
            a.send_message(mto=b.boundjid.full, mbody=body, mtype="chat")
            m = await next_message(b, body=body)
            assert m["from"] == a.boundjid and m["to"] == b.boundjid
            assert m["type"] == "chat"
            b.send_message(mto=a.boundjid.bare, mbody=body + " (reply)", mtype="chat")
            m = await next_message(a, body=body + " (reply)")
            assert m["from"] == b.boundjid
            a.send_message(mto=b.boundjid.bare, mbody=body + " (to bare)", mtype="normal")
            m = await next_message(b, body=body + " (to bare)")
            assert m["from"] == a.boundjid
            b.send_message(mto=a.boundjid.full, mbody=body + " (to full)")
            m = await next_message(a, body=body + " (to full)")
            assert m["from"] == b.boundjid
    arun(scenario())


def test_message_to_bare_jid_without_available_resource_is_not_delivered(server):
    ua, pa, ja = server.new_account("nopres")
    ub, pb, jb = server.new_account("nopres")
    sa, fa = login(server.c2s_port, ua, pa)
    sb, fb = login(server.c2s_port, ub, pb)
    try:
        # No initial presence from b: a bare-JID message is not delivered
        # now but kept offline (XEP-0160, test_offline.py), without an error.
        sa.send("<message to='%s' id='m1' type='chat'><body>hi</body></message>" % jb)
        assert sa.nothing_within(0.3)
        assert sb.nothing_within(0.1)
        # A full-JID message reaches the session regardless of presence.
        sa.send("<message to='%s' id='m2'><body>direct</body></message>" % fb)
        el = sb.expect(q(NS_CLIENT, "message"))
        assert el.findtext(q(NS_CLIENT, "body")) == "direct" and el.get("from") == fa
    finally:
        sa.close()
        sb.close()


def test_server_stamps_from_and_refuses_forged_from(server):
    ua, pa, ja = server.new_account("stamp")
    ub, pb, jb = server.new_account("stamp")
    sa, fa = login(server.c2s_port, ua, pa)
    sb, fb = login(server.c2s_port, ub, pb)
    try:
        sa.send("<message to='%s'><body>no from</body></message>" % fb)
        el = sb.expect(q(NS_CLIENT, "message"))
        assert el.get("from") == fa, "server did not stamp the full JID: %s" % tostr(el)
        sa.send("<message to='%s' from='%s'><body>forged</body></message>" % (fb, fb))
        assert sa.stream_error() == "invalid-from"
        assert sb.nothing_within(0.3)
    finally:
        sa.close()
        sb.close()


# ---- 8: a client that vanishes ----

def _reset(sock):
    """Closes with RST (SO_LINGER 0): the peer vanishes without a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


@pytest.mark.parametrize("how", ["reset_mid_stanza", "close_right_after_bind"])
def test_vanished_client_is_cleaned_up_and_others_keep_working(server, how):
    ug, pg, jg = server.new_account("ghost")
    ua, pa, ja = server.new_account("alive")
    ub, pb, jb = server.new_account("alive")
    ghost, gfull = login(server.c2s_port, ug, pg, resource="vanishing")
    mark = server.log_size()
    if how == "reset_mid_stanza":
        ghost.send("<message to='%s'><body>half a stan" % ja)
        _reset(ghost.sock)
    else:
        ghost.sock.close()
    server.wait_log(r"session\.end conn=\d+ jid=%s/vanishing" % jg, start=mark)

    # Others still log in and talk.
    sa, fa = login(server.c2s_port, ua, pa)
    sb, fb = login(server.c2s_port, ub, pb)
    try:
        sa.send("<message to='%s' id='x1'><body>still here</body></message>" % fb)
        el = sb.expect(q(NS_CLIENT, "message"))
        assert el.findtext(q(NS_CLIENT, "body")) == "still here"
        sb.send("<message to='%s' id='x2'><body>and back</body></message>" % fa)
        el = sa.expect(q(NS_CLIENT, "message"))
        assert el.findtext(q(NS_CLIENT, "body")) == "and back"
        # The vanished session is gone: its full JID no longer routes (a
        # normal message there is refused, RFC 6121 8.5.3.2.1; a chat one
        # would be stored offline for the account).
        sa.send("<message to='%s' id='x3' type='normal'><body>anyone?</body></message>" % gfull)
        el = sa.expect(q(NS_CLIENT, "message"))
        assert el.get("id") == "x3"
        assert stanza_error(el)[1] == "service-unavailable"
        sa.send("<iq to='%s' id='x4' type='get'><ping xmlns='%s'/></iq>" % (gfull, NS_PING))
        el = sa.expect(q(NS_CLIENT, "iq"))
        assert el.get("id") == "x4" and stanza_error(el)[1] == "service-unavailable"
    finally:
        sa.close()
        sb.close()


def test_vanish_during_tls_handshake_and_mid_auth_does_not_hurt_the_server(server):
    user, password, jid = server.new_account("half")
    # TCP connect then RST during the Direct TLS handshake.
    s = socket.create_connection(("127.0.0.1", server.tls_port))
    s.send(b"\x16\x03\x01\x00\xc8\x01\x00\x00")  # a truncated ClientHello
    _reset(s)
    # Mid-SCRAM: client-first sent, then gone.
    r = RawStream(server.c2s_port)
    r.open()
    r.starttls()
    r.auth("SCRAM-SHA-256", b"n,,n=%s,r=abcdefghijklmnop" % user.encode())
    r.sasl_next()
    _reset(r.sock)
    # The server still serves a full login.
    s2, full = login(server.c2s_port, user, password)
    s2.close()


# ---- 13: stanza rules ----

def test_stanza_before_auth_is_stream_error_not_authorized(server):
    s = RawStream(server.tls_port, direct_tls=True)
    try:
        s.open()
        s.send("<message to='someone@%s'><body>too early</body></message>" % DOMAIN)
        assert s.stream_error() == "not-authorized"
    finally:
        s.close()


def test_stanza_before_bind_is_stream_error_not_authorized(server):
    user, password, jid = server.new_account("nobind")
    s = RawStream(server.tls_port, direct_tls=True)
    try:
        s.open()
        assert s.scram_login(user, password)[0] == "success"
        s.restart()
        s.send("<message to='%s'><body>not bound yet</body></message>" % jid)
        assert s.stream_error() == "not-authorized"
    finally:
        s.close()


def test_presence_before_bind_is_stream_error_not_authorized(server):
    user, password, jid = server.new_account("nobindp")
    s = RawStream(server.tls_port, direct_tls=True)
    try:
        s.open()
        assert s.scram_login(user, password)[0] == "success"
        s.restart()
        s.send("<presence/>")
        assert s.stream_error() == "not-authorized"
    finally:
        s.close()


def test_iq_rules_two_children_and_missing_id_are_bad_request(server):
    user, password, jid = server.new_account("iqrules")
    s, full = login(server.c2s_port, user, password)
    try:
        s.send("<iq type='get' id='two' to='%s'><ping xmlns='%s'/><query xmlns='%s'/></iq>"
               % (DOMAIN, NS_PING, NS_DISCO_INFO))
        el = s.expect(q(NS_CLIENT, "iq"))
        assert el.get("id") == "two"
        assert stanza_error(el) == ("modify", "bad-request")
        s.send("<iq type='get' to='%s'><ping xmlns='%s'/></iq>" % (DOMAIN, NS_PING))
        el = s.expect(q(NS_CLIENT, "iq"))
        assert el.get("id") is None
        assert stanza_error(el) == ("modify", "bad-request")
        s.send("<iq type='get' id='none' to='%s'/>" % DOMAIN)
        el = s.expect(q(NS_CLIENT, "iq"))
        assert el.get("id") == "none" and stanza_error(el)[1] == "bad-request"
        # The stream is still fine.
        s.send("<iq type='get' id='ok' to='%s'><ping xmlns='%s'/></iq>" % (DOMAIN, NS_PING))
        el = s.expect(q(NS_CLIENT, "iq"))
        assert el.get("id") == "ok" and el.get("type") == "result", tostr(el)
    finally:
        s.close()


def test_message_to_unknown_local_user_and_remote_domain(server):
    user, password, jid = server.new_account("bounce")
    s, full = login(server.c2s_port, user, password)
    try:
        s.send("<message to='nobody-%s@%s' id='u1' type='chat'><body>x</body></message>"
               % (uniq("n"), DOMAIN))
        el = s.expect(q(NS_CLIENT, "message"))
        assert el.get("id") == "u1" and el.get("to") == full
        assert stanza_error(el) == ("cancel", "service-unavailable")
        s.send("<message to='someone@example.invalid' id='r1' type='chat'><body>x</body></message>")
        el = s.expect(q(NS_CLIENT, "message"))
        assert el.get("id") == "r1" and el.get("from") == "someone@example.invalid"
        assert stanza_error(el) == ("cancel", "remote-server-not-found")
        s.send("<iq to='example.invalid' id='r2' type='get'><ping xmlns='%s'/></iq>" % NS_PING)
        el = s.expect(q(NS_CLIENT, "iq"))
        assert el.get("id") == "r2" and stanza_error(el)[1] == "remote-server-not-found"
    finally:
        s.close()


def test_error_stanzas_never_get_error_replies(server):
    user, password, jid = server.new_account("noloop")
    s, full = login(server.c2s_port, user, password)
    err = "<error type='cancel'><item-not-found xmlns='%s'/></error>" % NS_STANZAS
    try:
        s.send("<message to='nobody-%s@%s' type='error' id='e1'>%s</message>"
               % (uniq("n"), DOMAIN, err))
        s.send("<message to='x@example.invalid' type='error' id='e2'>%s</message>" % err)
        s.send("<iq to='nobody-%s@%s/r' type='error' id='e3'>%s</iq>" % (uniq("n"), DOMAIN, err))
        s.send("<presence to='nobody-%s@%s' type='error'>%s</presence>" % (uniq("n"), DOMAIN, err))
        assert s.nothing_within(1.0)
        s.send("<iq type='get' id='alive' to='%s'><ping xmlns='%s'/></iq>" % (DOMAIN, NS_PING))
        el = s.expect(q(NS_CLIENT, "iq"))
        assert el.get("id") == "alive" and el.get("type") == "result"
    finally:
        s.close()


# ---- 14: keepalives, legacy session, disco, ping ----

def test_whitespace_keepalives_between_stanzas_are_accepted(server):
    user, password, jid = server.new_account("ws")
    s, full = login(server.c2s_port, user, password)
    try:
        for i in range(3):
            s.send(" ")
            s.send("\n\t \r\n")
            s.send("<iq type='get' id='p%d' to='%s'><ping xmlns='%s'/></iq>  \n"
                   % (i, DOMAIN, NS_PING))
            el = s.expect(q(NS_CLIENT, "iq"))
            assert el.get("id") == "p%d" % i and el.get("type") == "result", tostr(el)
        s.send(" " * 4096)  # a long keepalive run is not a stanza
        s.send("<iq type='get' id='after' to='%s'><ping xmlns='%s'/></iq>" % (DOMAIN, NS_PING))
        el = s.expect(q(NS_CLIENT, "iq"))
        assert el.get("id") == "after" and el.get("type") == "result"
    finally:
        s.close()


def test_legacy_session_iq_gets_a_result(server):
    user, password, jid = server.new_account("sess")
    s, full = login(server.c2s_port, user, password)
    try:
        s.send("<iq type='set' id='sess1'><session xmlns='%s'/></iq>" % NS_SESSION)
        el = s.expect(q(NS_CLIENT, "iq"))
        assert el.get("id") == "sess1" and el.get("type") == "result", tostr(el)
    finally:
        s.close()


def test_disco_info_and_ping_to_the_server(server, xmpp, arun):
    user, password, jid = server.new_account("disco")
    c = xmpp(jid, password, server.c2s_port, plugins=["xep_0030", "xep_0199"])

    async def scenario():
        await connect_and_wait(c)
        info = await c["xep_0030"].get_info(jid=DOMAIN, local=False, timeout=10)
        ids = info["disco_info"]["identities"]
        assert any(cat == "server" and typ == "im" for cat, typ, _lang, _name in ids), ids
        feats = info["disco_info"]["features"]
        assert NS_PING in feats and NS_DISCO_INFO in feats, feats
        rtt = await c["xep_0199"].ping(jid=DOMAIN, timeout=10)
        assert rtt is not None and rtt >= 0
    arun(scenario())


def test_ping_and_disco_raw_replies_are_addressed_correctly(server):
    user, password, jid = server.new_account("pingraw")
    s, full = login(server.c2s_port, user, password)
    try:
        s.send("<iq type='get' id='pg' to='%s'><ping xmlns='%s'/></iq>" % (DOMAIN, NS_PING))
        el = s.expect(q(NS_CLIENT, "iq"))
        assert (el.get("type"), el.get("id"), el.get("from"), el.get("to")) == \
            ("result", "pg", DOMAIN, full), tostr(el)
        s.send("<iq type='get' id='di' to='%s'><query xmlns='%s'/></iq>" % (DOMAIN, NS_DISCO_INFO))
        el = s.expect(q(NS_CLIENT, "iq"))
        assert el.get("type") == "result" and el.get("id") == "di"
        ident = el.find("%s/%s" % (q(NS_DISCO_INFO, "query"), q(NS_DISCO_INFO, "identity")))
        assert ident is not None and (ident.get("category"), ident.get("type")) == \
            ("server", "im"), tostr(el)
    finally:
        s.close()


def test_stanzas_pipelined_before_closing_the_stream_are_delivered(server):
    """RFC 6120 4.4: what the client sent before </stream:stream> is still
    processed, and the server closes its stream in return."""
    ua, pa, ja = server.new_account("closer")
    ub, pb, jb = server.new_account("closer")
    sa, fa = login(server.c2s_port, ua, pa)
    sb, fb = login(server.c2s_port, ub, pb)
    try:
        sa.send("<message to='%s' id='last'><body>last words</body></message></stream:stream>"
                % fb)
        el = sb.expect(q(NS_CLIENT, "message"))
        assert el.findtext(q(NS_CLIENT, "body")) == "last words" and el.get("from") == fa
        sa.wait_closed()
        assert sa.stream_ended
    finally:
        sa.close()
        sb.close()


def test_message_without_to_goes_to_own_bare_jid(server):
    user, password, jid = server.new_account("self")
    s1, f1 = login(server.c2s_port, user, password, resource="one")
    s2, f2 = login(server.c2s_port, user, password, resource="two")
    try:
        s2.send("<presence/>")
        # s2 receives its own presence broadcast.
        el = s2.expect(q(NS_CLIENT, "presence"))
        assert el.get("from") == f2
        s1.send("<message id='note' type='chat'><body>note to self</body></message>")
        el = s2.expect(q(NS_CLIENT, "message"))
        assert el.findtext(q(NS_CLIENT, "body")) == "note to self" and el.get("from") == f1
    finally:
        s1.close()
        s2.close()


# ---- RFC 6121 8.5: delivery to a bare JID follows availability and priority ----

def test_bare_jid_delivery_follows_priority_and_availability(server):
    owner, opw, ojid = server.new_account("prio")
    sender, spw, _ = server.new_account("prio")
    hi, fhi = login(server.c2s_port, owner, opw, resource="high")
    lo, flo = login(server.c2s_port, owner, opw, resource="low")
    neg, fneg = login(server.c2s_port, owner, opw, resource="negative")
    s, fs = login(server.c2s_port, sender, spw)
    streams = (hi, lo, neg)

    def drain_presence():
        # Each session sees the account's own presence broadcasts; skip them.
        for st in streams:
            while True:
                try:
                    el = st.next(0.2)
                except TimeoutError:
                    break
                assert el.tag == q(NS_CLIENT, "presence"), tostr(el)

    try:
        hi.send("<presence><priority>5</priority></presence>")
        lo.send("<presence><priority>1</priority></presence>")
        neg.send("<presence><priority>-1</priority></presence>")
        drain_presence()
        # chat/normal: only the highest non-negative priority.
        s.send("<message to='%s' type='chat' id='c1'><body>chat</body></message>" % ojid)
        assert hi.expect(q(NS_CLIENT, "message")).get("id") == "c1"
        assert lo.nothing_within(0.2) and neg.nothing_within(0.01)
        # headline: every non-negative resource.
        s.send("<message to='%s' type='headline' id='h1'><body>news</body></message>" % ojid)
        assert hi.expect(q(NS_CLIENT, "message")).get("id") == "h1"
        assert lo.expect(q(NS_CLIENT, "message")).get("id") == "h1"
        assert neg.nothing_within(0.2)
        # groupchat to an account: error.
        s.send("<message to='%s' type='groupchat' id='g1'><body>x</body></message>" % ojid)
        el = s.expect(q(NS_CLIENT, "message"))
        assert el.get("id") == "g1" and stanza_error(el)[1] == "service-unavailable"
        # Once the top resource goes unavailable, the next one gets chats.
        hi.send("<presence type='unavailable'/>")
        drain_presence()
        s.send("<message to='%s' type='chat' id='c2'><body>chat</body></message>" % ojid)
        assert lo.expect(q(NS_CLIENT, "message")).get("id") == "c2"
        assert hi.nothing_within(0.2)
        # Only a negative-priority resource left available: not delivered
        # to it (stored offline instead, XEP-0160; no error).
        lo.send("<presence type='unavailable'/>")
        drain_presence()
        s.send("<message to='%s' type='chat' id='c3'><body>chat</body></message>" % ojid)
        assert s.nothing_within(0.3)
        assert neg.nothing_within(0.01)
        # A full JID always reaches its session.
        s.send("<message to='%s' type='chat' id='c4'><body>direct</body></message>" % fneg)
        assert neg.expect(q(NS_CLIENT, "message")).get("id") == "c4"
    finally:
        for st in streams + (s,):
            st.close()


def test_iq_between_two_clients_round_trips(server):
    ua, pa, ja = server.new_account("iqa")
    ub, pb, jb = server.new_account("iqb")
    sa, fa = login(server.c2s_port, ua, pa)
    sb, fb = login(server.c2s_port, ub, pb)
    try:
        sa.send("<iq to='%s' type='get' id='q1'><query xmlns='jabber:iq:version'/></iq>" % fb)
        el = sb.expect(q(NS_CLIENT, "iq"))
        assert (el.get("from"), el.get("id"), el.get("type")) == (fa, "q1", "get"), tostr(el)
        sb.send("<iq to='%s' type='result' id='q1'><query xmlns='jabber:iq:version'>"
                "<name>test</name></query></iq>" % fa)
        el = sa.expect(q(NS_CLIENT, "iq"))
        assert (el.get("from"), el.get("id"), el.get("type")) == (fb, "q1", "result"), tostr(el)
        # An iq to someone else's bare JID is answered by the server, not them.
        sa.send("<iq to='%s' type='get' id='q2'><query xmlns='jabber:iq:version'/></iq>" % jb)
        el = sa.expect(q(NS_CLIENT, "iq"))
        assert el.get("id") == "q2" and el.get("type") == "error", tostr(el)
        assert sb.nothing_within(0.2)
    finally:
        sa.close()
        sb.close()
