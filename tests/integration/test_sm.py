"""Stream Management (XEP-0198, urn:xmpp:sm:3): enabling, acks in both
directions, the server's ack requests, resumption after a broken
connection, its failures, and what happens to unacknowledged stanzas when a
session ends (other resources, errors, offline storage)."""
import asyncio
import re
import socket
import struct
import time

import pytest

from harness import (DOMAIN, NS_CLIENT, NS_DISCO_INFO, NS_PING, NS_STANZAS, NS_STREAMS_ERR,
                     RawStream, StreamClosed, connect_and_wait, login, make_client, q, tostr,
                     wait_event)

NS_SM = "urn:xmpp:sm:3"
NS_DELAY = "urn:xmpp:delay"
ID_RX = re.compile(r"^[A-Za-z0-9_-]{22,}$")  # >= 128 bits of base64url


# ---- helpers ----

def auth_stream(port, user, password):
    """A raw stream after SASL and the restart (not bound). Returns (stream, features)."""
    s = RawStream(port)
    s.open()
    s.starttls()
    kind, cond = s.scram_login(user, password)
    assert kind == "success", "login as %s failed: %s" % (user, cond)
    return s, s.restart()


def sm_login(port, user, password, resource=None, resume=True, extra=""):
    """Bound raw stream with stream management enabled. Returns (stream, jid, <enabled/>)."""
    s, feats = auth_stream(port, user, password)
    assert feats.find(q(NS_SM, "sm")) is not None, tostr(feats)
    jid = s.bind(resource)
    s.send("<enable xmlns='%s'%s%s/>" % (NS_SM, " resume='true'" if resume else "", extra))
    en = s.expect(q(NS_SM, "enabled"))
    return s, jid, en


def kill(s):
    """Drops the TCP connection abruptly (RST, no </stream:stream>, no close_notify)."""
    try:
        s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()


def is_sm(el, name):
    return el.tag == q(NS_SM, name)


def read_until(s, pred, timeout=5.0):
    """Elements up to and including the first one matching pred."""
    out = []
    deadline = time.monotonic() + timeout
    while True:
        el = s.next(max(0.05, deadline - time.monotonic()))
        out.append(el)
        if pred(el):
            return out


def read_messages(s, n, timeout=5.0):
    """Reads until n messages arrived; returns (messages, everything else)."""
    msgs, other = [], []
    deadline = time.monotonic() + timeout
    while len(msgs) < n:
        el = s.next(max(0.05, deadline - time.monotonic()))
        (msgs if el.tag == q(NS_CLIENT, "message") else other).append(el)
    return msgs, other


def stanzas(els):
    return [e for e in els if e.tag.startswith("{%s}" % NS_CLIENT)]


def bodies(els):
    return [e.findtext(q(NS_CLIENT, "body")) for e in els if e.tag == q(NS_CLIENT, "message")]


def read_stanzas(s, n, timeout=5.0, answer_r=None):
    """Reads until n stanzas arrived. SM elements are collected aside; an
    <r/> is answered with <a h='answer_r()'/> when answer_r is given."""
    got, sm = [], []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        el = s.next(max(0.05, deadline - time.monotonic()))
        if el.tag.startswith("{%s}" % NS_SM):
            sm.append(el)
            if answer_r and is_sm(el, "r"):
                s.send("<a xmlns='%s' h='%d'/>" % (NS_SM, answer_r()))
        else:
            got.append(el)
    return got, sm


def drain(s, seconds):
    """Every element that arrives within `seconds`."""
    out = []
    deadline = time.monotonic() + seconds
    while True:
        try:
            out.append(s.next(max(0.01, deadline - time.monotonic())))
        except TimeoutError:
            return out


def send_msgs(s, to, texts, mtype="chat"):
    """Sends messages in one write (one server loop turn, in practice)."""
    s.send("".join("<message to='%s' type='%s' id='m-%s'><body>%s</body></message>" %
                   (to, mtype, t, t) for t in texts))


def failed_condition(el):
    assert is_sm(el, "failed"), tostr(el)
    conds = [c.tag.split("}")[1] for c in el if c.tag.startswith("{%s}" % NS_STANZAS)]
    assert len(conds) == 1, tostr(el)
    return conds[0]


def stanza_error_condition(el):
    assert el.get("type") == "error", tostr(el)
    err = el.find(q(NS_CLIENT, "error"))
    return [c.tag.split("}")[1] for c in err if c.tag.startswith("{%s}" % NS_STANZAS)][0]


def wait_detached(server, jid, start=0):
    server.wait_log(r"event=sm\.detach conn=\d+ jid=%s " % re.escape(jid), start)


def wait_expired(server, jid, start=0, timeout=10):
    server.wait_log(r"event=sm\.expire jid=%s " % re.escape(jid), start, timeout=timeout)


def ping(s, iq_id):
    s.send("<iq type='get' id='%s' to='%s'><ping xmlns='%s'/></iq>" % (iq_id, DOMAIN, NS_PING))


# ---- enabling ----

def test_sm_feature_is_offered_only_after_authentication(server):
    user, pw, _ = server.new_account("smfeat")
    s = RawStream(server.c2s_port)
    try:
        feats = s.open()
        assert feats.find(q(NS_SM, "sm")) is None
        feats = s.starttls()
        assert feats.find(q(NS_SM, "sm")) is None
        assert s.scram_login(user, pw)[0] == "success"
        feats = s.restart()
        assert feats.find(q(NS_SM, "sm")) is not None, tostr(feats)
    finally:
        s.close()


def test_enable_before_bind_fails_and_works_after_bind(server):
    user, pw, _ = server.new_account("smorder")
    s, _ = auth_stream(server.c2s_port, user, pw)
    try:
        s.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
        assert failed_condition(s.next()) == "unexpected-request"
        # The stream goes on: bind, then enable.
        s.bind("res")
        s.send("<enable xmlns='%s'/>" % NS_SM)
        en = s.expect(q(NS_SM, "enabled"))
        # Without resume='true' there is no resumption id.
        assert en.get("id") is None and en.get("resume") is None, tostr(en)
    finally:
        s.close()


def test_enable_with_resume_gives_random_id_and_configured_max(make_server):
    srv = make_server("--sm-resume-timeout", "120")
    user, pw, _ = srv.new_account("smen")
    s1, _, en1 = sm_login(srv.c2s_port, user, pw, "a")
    s2, _, en2 = sm_login(srv.c2s_port, user, pw, "b", extra=" max='30'")
    try:
        assert en1.get("resume") in ("true", "1"), tostr(en1)
        assert ID_RX.match(en1.get("id") or ""), tostr(en1)
        assert en1.get("max") == "120"
        # A shorter window the client prefers is taken.
        assert en2.get("max") == "30"
        assert en1.get("id") != en2.get("id")
    finally:
        s1.close()
        s2.close()


def test_second_enable_fails_and_the_stream_goes_on(server):
    user, pw, _ = server.new_account("smtwice")
    s, _, _ = sm_login(server.c2s_port, user, pw)
    try:
        s.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
        assert failed_condition(s.next()) == "unexpected-request"
        ping(s, "p1")
        got, _ = read_stanzas(s, 1)
        assert got[0].get("type") == "result" and got[0].get("id") == "p1"
    finally:
        s.close()


def test_r_and_a_without_enable_are_ignored_and_resume_after_bind_fails(server):
    user, pw, _ = server.new_account("smnone")
    s, _ = login(server.c2s_port, user, pw)
    try:
        s.send("<r xmlns='%s'/><a xmlns='%s' h='7'/>" % (NS_SM, NS_SM))
        assert s.nothing_within(0.3)
        s.send("<resume xmlns='%s' previd='whatever' h='0'/>" % NS_SM)
        assert failed_condition(s.next()) == "unexpected-request"
    finally:
        s.close()


# ---- counting and acks ----

def test_r_is_answered_with_the_count_of_handled_stanzas(server):
    user, pw, _ = server.new_account("smin")
    s, _ = login(server.c2s_port, user, pw)
    try:
        # Not counted: before <enable/>.
        ping(s, "before")
        s.expect(q(NS_CLIENT, "iq"))
        s.send("<enable xmlns='%s'/>" % NS_SM)
        s.expect(q(NS_SM, "enabled"))
        ping(s, "p1")
        ping(s, "p2")
        # A stanza the server refuses is handled too.
        s.send("<iq type='get' id='bad' to='%s'><x xmlns='urn:example:nothing'/></iq>" % DOMAIN)
        s.send("<r xmlns='%s'/>" % NS_SM)
        els = read_until(s, lambda e: is_sm(e, "a"))
        assert els[-1].get("h") == "3", [tostr(e) for e in els]
        assert len(stanzas(els)) == 3
        # The count goes on.
        ping(s, "p3")
        s.send("<r xmlns='%s'/>" % NS_SM)
        els = read_until(s, lambda e: is_sm(e, "a"))
        assert els[-1].get("h") == "4"
    finally:
        s.close()


def test_server_requests_acks_once_per_batch_and_trims_on_ack(server):
    ua, pa, _ = server.new_account("smout")
    ub, pb, _ = server.new_account("smout")
    a, ja, _ = sm_login(server.c2s_port, ua, pa, resume=False)
    b, _ = login(server.c2s_port, ub, pb)

    def requests(els):
        return len([e for e in els if is_sm(e, "r")])
    try:
        send_msgs(b, ja, ["one", "two", "three"])
        got, sm = read_stanzas(a, 3)
        sm += drain(a, 0.3)
        assert bodies(got) == ["one", "two", "three"]
        assert requests(sm) == 1, [tostr(e) for e in sm]   # one <r/> for the batch
        # No second request while the first is unanswered.
        send_msgs(b, ja, ["four"])
        got, sm = read_stanzas(a, 1)
        assert bodies(got) == ["four"] and requests(sm + drain(a, 0.3)) == 0
        # Everything acknowledged: no request.
        a.send("<a xmlns='%s' h='4'/>" % NS_SM)
        assert a.nothing_within(0.3)
        send_msgs(b, ja, ["five"])
        got, sm = read_stanzas(a, 1)
        assert requests(sm + drain(a, 0.3)) == 1
        send_msgs(b, ja, ["six", "seven"])
        got, sm = read_stanzas(a, 2)
        assert requests(sm + drain(a, 0.3)) == 0
        # An ack that leaves stanzas sent after the request: ask again.
        a.send("<a xmlns='%s' h='5'/>" % NS_SM)
        assert requests(drain(a, 0.5)) == 1
        # A full ack: silence; and a sent nothing itself.
        a.send("<a xmlns='%s' h='7'/>" % NS_SM)
        assert a.nothing_within(0.3)
        a.send("<r xmlns='%s'/>" % NS_SM)
        assert a.expect(q(NS_SM, "a")).get("h") == "0"
    finally:
        a.close()
        b.close()


def test_ack_higher_than_sent_is_a_stream_error(server):
    ua, pa, _ = server.new_account("smhigh")
    ub, pb, _ = server.new_account("smhigh")
    a, ja, _ = sm_login(server.c2s_port, ua, pa, resume=False)
    b, _ = login(server.c2s_port, ub, pb)
    try:
        send_msgs(b, ja, ["x", "y"])
        read_stanzas(a, 2)
        a.send("<a xmlns='%s' h='5'/>" % NS_SM)
        assert a.stream_error() == "undefined-condition"
        hc = a.last_error.find(q(NS_SM, "handled-count-too-high"))
        assert hc is not None, tostr(a.last_error)
        assert hc.get("h") == "5" and hc.get("send-count") == "2"
    finally:
        a.close()
        b.close()


def test_ack_without_valid_h_is_a_stream_error(server):
    user, pw, _ = server.new_account("smbadh")
    s, _, _ = sm_login(server.c2s_port, user, pw)
    try:
        s.send("<a xmlns='%s' h='-1'/>" % NS_SM)
        assert s.stream_error() == "invalid-xml"
    finally:
        s.close()


# ---- resumption ----

def test_resume_after_killed_socket_delivers_everything_once(server):
    ua, pa, ja_bare = server.new_account("smres")
    ub, pb, _ = server.new_account("smres")
    mark = server.log_size()
    a, ja, en = sm_login(server.c2s_port, ua, pa, "phone")
    b, jb = login(server.c2s_port, ub, pb)
    handled = 0
    try:
        a.send("<presence/>")           # a's stanza 1; the server reflects it to a
        got, _ = read_stanzas(a, 1)
        handled += 1
        send_msgs(b, ja, ["pre1", "pre2"])
        got, _ = read_stanzas(a, 2)
        handled += 2
        assert bodies(got) == ["pre1", "pre2"]
        kill(a)
        wait_detached(server, ja, mark)
        # The detached session is still there and available: nothing bounces.
        send_msgs(b, ja, ["d1", "d2"])
        send_msgs(b, ja_bare, ["d3"])
        b.send("<iq type='get' id='q1' to='%s'><ping xmlns='%s'/></iq>" % (ja, NS_PING))
        assert b.nothing_within(0.5)

        # Resume, claiming pre2 was never handled (it is resent then).
        a2, feats = auth_stream(server.c2s_port, ua, pa)
        a2.send("<resume xmlns='%s' previd='%s' h='%d'/>" % (NS_SM, en.get("id"), handled - 1))
        r = a2.expect(q(NS_SM, "resumed"))
        assert r.get("previd") == en.get("id")
        assert r.get("h") == "1"        # the server handled a's presence
        got, sm = read_stanzas(a2, 5)
        assert bodies(got) == ["pre2", "d1", "d2", "d3"], [tostr(e) for e in got]
        assert got[4].tag == q(NS_CLIENT, "iq") and got[4].get("id") == "q1"
        # Stanzas that waited carry the time they arrived (XEP-0203).
        for m in got[1:4]:
            assert m.find(q(NS_DELAY, "delay")) is not None, tostr(m)
            assert m.get("to") in (ja, ja_bare)
        # Nothing is duplicated, and the server asks for an ack.
        if not any(is_sm(e, "r") for e in sm):
            assert is_sm(a2.next(), "r")
        assert a2.nothing_within(0.3)
        # The resumed session works both ways under the same JID.
        a2.send("<iq type='result' id='q1' to='%s'/>" % jb)
        el = b.expect(q(NS_CLIENT, "iq"))
        assert el.get("type") == "result" and el.get("from") == ja
        a2.send("<a xmlns='%s' h='%d'/><r xmlns='%s'/>" % (NS_SM, handled + 4, NS_SM))
        assert a2.expect(q(NS_SM, "a")).get("h") == "2"
        assert a2.nothing_within(0.3)
        a2.close()
    finally:
        b.close()


def test_resume_with_slixmpp_loses_and_duplicates_nothing(server, xmpp, arun):
    ua, pa, ja_bare = server.new_account("smslix")
    ub, pb, jb = server.new_account("smslix")
    a = xmpp(ja_bare, pa, server.c2s_port, plugins=["xep_0198"])
    b = xmpp(jb, pb, server.c2s_port)
    texts = ["while away %d" % i for i in range(6)]

    async def scenario():
        enabled = asyncio.ensure_future(wait_event(a, "sm_enabled"))
        await asyncio.gather(connect_and_wait(a), connect_and_wait(b))
        await enabled
        a.send_presence()
        b.send_message(mto=a.boundjid.full, mbody="before", mtype="chat")
        m = await asyncio.wait_for(a.test_messages.get(), 5)
        assert m["body"] == "before"
        mark = server.log_size()
        gone = asyncio.ensure_future(wait_event(a, "disconnected"))
        a.transport.abort()
        await gone
        await asyncio.get_running_loop().run_in_executor(
            None, wait_detached, server, a.boundjid.full, mark)
        for t in texts:
            b.send_message(mto=a.boundjid.full, mbody=t, mtype="chat")
        # Until b's stream has carried them: a ping round trip orders it.
        await b["xep_0199"].ping(jid=DOMAIN, timeout=5) if "xep_0199" in b.plugin else None
        await asyncio.sleep(0.3)
        resumed = asyncio.ensure_future(wait_event(a, "session_resumed"))
        a.connect(("127.0.0.1", server.c2s_port))
        await resumed
        got = []
        deadline = time.monotonic() + 5
        while len(got) < len(texts):
            m = await asyncio.wait_for(a.test_messages.get(), max(0.05, deadline - time.monotonic()))
            got.append(m["body"])
        assert got == texts
        await asyncio.sleep(0.5)
        assert a.test_messages.empty(), "duplicates: %r" % a.test_messages.get_nowait()["body"]
    arun(scenario(), timeout=40)


def test_unanswered_idle_ping_detaches_and_the_session_resumes(make_server):
    srv = make_server("--idle-timeout", "1", "--ping-timeout", "1")
    user, pw, _ = srv.new_account("smidle")
    mark = srv.log_size()
    a, ja, en = sm_login(srv.c2s_port, user, pw)
    try:
        # The server's ping is a stanza (counted); the client stays silent.
        got, _ = read_stanzas(a, 1, timeout=5)
        assert got[0].find(q(NS_PING, "ping")) is not None, tostr(got[0])
        assert a.stream_error(timeout=5) == "connection-timeout"
    finally:
        a.close()
    wait_detached(srv, ja, mark)
    s, _ = auth_stream(srv.c2s_port, user, pw)
    try:
        s.send("<resume xmlns='%s' previd='%s' h='1'/>" % (NS_SM, en.get("id")))
        s.expect(q(NS_SM, "resumed"))
        # The ping was acknowledged by h='1': not sent again.
        els = drain(s, 0.3)
        assert not stanzas(els), [tostr(e) for e in els]
    finally:
        s.close()


def test_resume_with_unknown_id_fails_then_bind_works(server):
    user, pw, _ = server.new_account("smunk")
    s, _ = auth_stream(server.c2s_port, user, pw)
    try:
        s.send("<resume xmlns='%s' previd='AAAAAAAAAAAAAAAAAAAAAAAA' h='0'/>" % NS_SM)
        el = s.next()
        assert failed_condition(el) == "item-not-found"
        assert el.get("h") is None
        s.bind("fresh")
        s.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
        s.expect(q(NS_SM, "enabled"))
    finally:
        s.close()


def test_resume_by_another_account_fails(server):
    ua, pa, _ = server.new_account("smown")
    um, pm, _ = server.new_account("smthief")
    mark = server.log_size()
    a, ja, en = sm_login(server.c2s_port, ua, pa)
    kill(a)
    wait_detached(server, ja, mark)
    m, _ = auth_stream(server.c2s_port, um, pm)
    try:
        m.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, en.get("id")))
        el = m.next()
        assert failed_condition(el) == "item-not-found" and el.get("h") is None
    finally:
        m.close()
    # The owner still can.
    a2, _ = auth_stream(server.c2s_port, ua, pa)
    try:
        a2.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, en.get("id")))
        assert a2.expect(q(NS_SM, "resumed")).get("previd") == en.get("id")
    finally:
        a2.close()


def test_resume_after_the_window_fails_with_the_last_h(make_server):
    srv = make_server("--sm-resume-timeout", "1")
    user, pw, _ = srv.new_account("smlate")
    mark = srv.log_size()
    a, ja, en = sm_login(srv.c2s_port, user, pw)
    ping(a, "p1")
    ping(a, "p2")
    read_stanzas(a, 2)
    kill(a)
    wait_detached(srv, ja, mark)
    wait_expired(srv, ja, mark)
    s, _ = auth_stream(srv.c2s_port, user, pw)
    try:
        s.send("<resume xmlns='%s' previd='%s' h='2'/>" % (NS_SM, en.get("id")))
        el = s.next()
        assert failed_condition(el) == "item-not-found"
        assert el.get("h") == "2", tostr(el)      # what the server had handled
        s.bind()                                  # the client may bind instead
    finally:
        s.close()


def test_resume_closes_the_old_connection_with_conflict(server):
    user, pw, _ = server.new_account("smhalf")
    old, ja, en = sm_login(server.c2s_port, user, pw)
    # The old TCP connection stays open (half-open from the server's view).
    new, _ = auth_stream(server.c2s_port, user, pw)
    try:
        new.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, en.get("id")))
        new.expect(q(NS_SM, "resumed"))
        assert old.stream_error() == "conflict"
        # The session lives on in the new stream.
        ping(new, "p1")
        got, _ = read_stanzas(new, 1)
        assert got[0].get("id") == "p1"
    finally:
        old.close()
        new.close()


def test_resume_with_h_higher_than_sent_fails(server):
    user, pw, _ = server.new_account("smrhigh")
    mark = server.log_size()
    a, ja, en = sm_login(server.c2s_port, user, pw)
    kill(a)
    wait_detached(server, ja, mark)
    s, _ = auth_stream(server.c2s_port, user, pw)
    try:
        s.send("<resume xmlns='%s' previd='%s' h='9'/>" % (NS_SM, en.get("id")))
        assert failed_condition(s.next()) == "undefined-condition"
        # The session is still there for a correct resumption.
        s.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, en.get("id")))
        s.expect(q(NS_SM, "resumed"))
    finally:
        s.close()


# ---- the end of a session: unacked stanzas, presence ----

def test_detached_session_stays_available_and_unacked_go_to_another_resource(make_server):
    srv = make_server("--sm-resume-timeout", "2")
    ua, pa, ja_bare = srv.new_account("smend")
    ub, pb, jb = srv.new_account("smend")
    mark = srv.log_size()
    phone, jphone, _ = sm_login(srv.c2s_port, ua, pa, resource="phone")
    desk, jdesk = login(srv.c2s_port, ua, pa, resource="desk")
    b, _ = login(srv.c2s_port, ub, pb)
    try:
        phone.send("<presence><priority>5</priority></presence>")
        desk.send("<presence><priority>1</priority></presence>")
        drain(phone, 0.3)               # the account's presence, reflected
        drain(desk, 0.1)
        send_msgs(b, jphone, ["seen-not-acked"])
        got, _ = read_stanzas(phone, 1)
        assert bodies(got) == ["seen-not-acked"]
        kill(phone)
        wait_detached(srv, jphone, mark)
        # Within the window: the phone is still available (highest priority
        # for bare-JID messages) and desk hears no unavailable presence.
        send_msgs(b, ja_bare, ["to-bare"])
        send_msgs(b, jphone, ["to-phone"])
        b.send("<iq type='get' id='q1' to='%s'><ping xmlns='%s'/></iq>" % (jphone, NS_PING))
        assert desk.nothing_within(0.7)
        assert b.nothing_within(0.1)
        wait_expired(srv, jphone, mark)
        # After it: the unacked messages reach desk, with their delay stamps.
        msgs, _ = read_messages(desk, 3)
        assert sorted(bodies(msgs)) == ["seen-not-acked", "to-bare", "to-phone"], \
            [tostr(e) for e in msgs]
        for m in msgs:
            assert m.get("from") == b.jid
            assert m.find(q(NS_DELAY, "delay")) is not None, tostr(m)
        # The iq request is answered with an error to its sender.
        el = b.expect(q(NS_CLIENT, "iq"))
        assert el.get("id") == "q1" and stanza_error_condition(el) == "service-unavailable"
        # And the session is gone: a new bare-JID message goes to desk at once.
        send_msgs(b, ja_bare, ["after"])
        msgs, _ = read_messages(desk, 1)
        assert bodies(msgs) == ["after"]
    finally:
        for s in (phone, desk, b):
            s.close()


def test_presence_becomes_unavailable_only_when_the_window_ends(make_server):
    srv = make_server("--sm-resume-timeout", "2")
    ua, pa, _ = srv.new_account("smpres")
    mark = srv.log_size()
    desk, jdesk = login(srv.c2s_port, ua, pa, resource="desk")
    desk.send("<presence/>")
    read_stanzas(desk, 1)
    # Does a session that simply ends broadcast unavailable presence here?
    probe, jprobe = login(srv.c2s_port, ua, pa, resource="probe")
    probe.send("<presence/>")
    read_stanzas(desk, 1)
    kill(probe)
    try:
        unavailable_on_end = desk.next(1.5).get("type") == "unavailable"
    except TimeoutError:
        unavailable_on_end = False
    if not unavailable_on_end:
        desk.close()
        pytest.skip("sessions that end do not broadcast unavailable presence yet "
                    "(RFC 6121 presence module)")
    phone, jphone, _ = sm_login(srv.c2s_port, ua, pa, resource="phone")
    try:
        phone.send("<presence/>")
        el = desk.expect(q(NS_CLIENT, "presence"))
        assert el.get("from") == jphone and el.get("type") is None
        kill(phone)
        wait_detached(srv, jphone, mark)
        assert desk.nothing_within(1.0)
        wait_expired(srv, jphone, mark)
        el = desk.expect(q(NS_CLIENT, "presence"), timeout=3)
        assert el.get("from") == jphone and el.get("type") == "unavailable"
    finally:
        desk.close()


def test_clean_close_reroutes_unacked_at_once_and_cannot_be_resumed(server):
    ua, pa, _ = server.new_account("smclean")
    ub, pb, _ = server.new_account("smclean")
    phone, jphone, en = sm_login(server.c2s_port, ua, pa, "phone")
    desk, jdesk = login(server.c2s_port, ua, pa, resource="desk")
    b, _ = login(server.c2s_port, ub, pb)
    try:
        desk.send("<presence/>")
        phone.send("<presence/>")       # handled: 1
        seen = len(stanzas(drain(phone, 0.3)))  # the account's presence, reflected
        drain(desk, 0.1)
        send_msgs(b, jphone, ["acked"])
        got, _ = read_stanzas(phone, 1)
        assert bodies(got) == ["acked"]
        phone.send("<a xmlns='%s' h='%d'/>" % (NS_SM, seen + 1))
        send_msgs(b, jphone, ["unacked"])
        got, _ = read_stanzas(phone, 1)
        assert bodies(got) == ["unacked"]
        phone.send("</stream:stream>")
        # Our last ack comes before the end of the stream.
        acks = [e for e in read_until(phone, lambda e: is_sm(e, "a")) if is_sm(e, "a")]
        assert acks[0].get("h") == "1"
        # Only what the client did not acknowledge is routed again.
        msgs, _ = read_messages(desk, 1, timeout=2)
        assert bodies(msgs) == ["unacked"]
        assert not bodies(drain(desk, 0.3))
        # No resumption after a clean close.
        s, _ = auth_stream(server.c2s_port, ua, pa)
        s.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, en.get("id")))
        el = s.next()
        assert failed_condition(el) == "item-not-found" and el.get("h") == "1"
        s.close()
    finally:
        for s in (phone, desk, b):
            s.close()


def test_error_for_a_detached_sender_waits_for_its_resumption(server):
    ua, pa, _ = server.new_account("smbounce")
    ub, pb, _ = server.new_account("smbounce")
    mark = server.log_size()
    b, jb, _ = sm_login(server.c2s_port, ub, pb, resume=False)
    a, ja, en = sm_login(server.c2s_port, ua, pa)
    a.send("<iq type='get' id='q1' to='%s'><ping xmlns='%s'/></iq>" % (jb, NS_PING))
    got, _ = read_stanzas(b, 1)
    assert got[0].get("id") == "q1"      # b never answers nor acks it
    kill(a)
    wait_detached(server, ja, mark)
    # b leaves: its unacked iq request is answered for it, to a detached a.
    b.send("</stream:stream>")
    b.wait_closed()
    server.wait_log(r"event=sm\.reroute routed=0 bounced=1", mark)
    s, _ = auth_stream(server.c2s_port, ua, pa)
    try:
        s.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, en.get("id")))
        s.expect(q(NS_SM, "resumed"))
        got, _ = read_stanzas(s, 1)
        assert got[0].get("id") == "q1" and got[0].get("from") == jb
        assert stanza_error_condition(got[0]) == "service-unavailable"
    finally:
        s.close()
        b.close()


def test_too_many_unacked_ends_the_stream_and_loses_nothing(make_server):
    srv = make_server("--sm-max-unacked", "4")
    ua, pa, _ = srv.new_account("smfull")
    ub, pb, _ = srv.new_account("smfull")
    phone, jphone, _ = sm_login(srv.c2s_port, ua, pa, resource="phone")
    desk, jdesk = login(srv.c2s_port, ua, pa, resource="desk")
    b, _ = login(srv.c2s_port, ub, pb)
    texts = ["n%d" % i for i in range(7)]
    try:
        desk.send("<presence/>")
        read_stanzas(desk, 1)
        send_msgs(b, jphone, texts)
        assert phone.stream_error() == "policy-violation"
        assert bodies(phone.skipped) == texts[:4]
        # All of them, seen or not, go where an unavailable resource's would.
        got, _ = read_messages(desk, 7)
        assert sorted(bodies(got)) == sorted(texts)
    finally:
        for s in (phone, desk, b):
            s.close()


def test_unacked_bytes_are_bounded_too(make_server):
    srv = make_server("--sm-max-unacked-bytes", "65536", "--max-stanza-bytes", "32768")
    ua, pa, _ = srv.new_account("smbytes")
    ub, pb, _ = srv.new_account("smbytes")
    phone, jphone, _ = sm_login(srv.c2s_port, ua, pa, resource="phone")
    desk, _ = login(srv.c2s_port, ua, pa, resource="desk")
    b, _ = login(srv.c2s_port, ub, pb)
    texts = ["%d%s" % (i, "x" * 15000) for i in range(5)]
    try:
        desk.send("<presence/>")
        drain(desk, 0.2)
        for i, t in enumerate(texts):    # 5 x 15 kB > 64 KiB unacked
            b.send("<message to='%s' id='big%d' type='chat'><body>%s</body></message>" % (jphone, i, t))
        assert phone.stream_error() == "policy-violation"
        assert len(bodies(phone.skipped)) == 4
        got, _ = read_messages(desk, 5)
        assert sorted(bodies(got)) == sorted(texts)
    finally:
        for s in (phone, desk, b):
            s.close()


def test_detached_queue_overflow_ends_the_session_early(make_server):
    srv = make_server("--sm-max-unacked", "3", "--sm-resume-timeout", "60")
    ua, pa, _ = srv.new_account("smdfull")
    ub, pb, _ = srv.new_account("smdfull")
    mark = srv.log_size()
    phone, jphone, en = sm_login(srv.c2s_port, ua, pa, resource="phone")
    desk, _ = login(srv.c2s_port, ua, pa, resource="desk")
    b, _ = login(srv.c2s_port, ub, pb)
    try:
        desk.send("<presence/>")
        read_stanzas(desk, 1)
        kill(phone)
        wait_detached(srv, jphone, mark)
        send_msgs(b, jphone, ["o%d" % i for i in range(5)])
        srv.wait_log(r"event=sm\.expire jid=%s reason=overflow" % re.escape(jphone), mark)
        got, _ = read_messages(desk, 5)
        assert sorted(bodies(got)) == ["o%d" % i for i in range(5)]
    finally:
        for s in (desk, b):
            s.close()


def offline_supported(port, user, pw):
    s, _ = login(port, user, pw)
    try:
        s.send("<iq type='get' id='d1' to='%s'><query xmlns='%s'/></iq>" % (DOMAIN, NS_DISCO_INFO))
        el = s.expect(q(NS_CLIENT, "iq"))
        feats = [f.get("var") for f in el.iter(q(NS_DISCO_INFO, "feature"))]
        return "msgoffline" in feats
    finally:
        s.close()


def test_unacked_messages_go_to_offline_storage_when_the_window_ends(make_server):
    srv = make_server("--sm-resume-timeout", "1")
    ua, pa, _ = srv.new_account("smoff")
    ub, pb, _ = srv.new_account("smoff")
    if not offline_supported(srv.c2s_port, ub, pb):
        pytest.skip("no offline message storage in this build (XEP-0160 'msgoffline')")
    mark = srv.log_size()
    phone, jphone, _ = sm_login(srv.c2s_port, ua, pa, resource="phone")
    b, _ = login(srv.c2s_port, ub, pb)
    try:
        phone.send("<presence/>")
        read_stanzas(phone, 1)
        send_msgs(b, jphone, ["keep-me"])
        read_stanzas(phone, 1)
        kill(phone)
        wait_detached(srv, jphone, mark)
        send_msgs(b, jphone, ["and-me"])
        wait_expired(srv, jphone, mark)
        time.sleep(0.3)
        # Next login with initial presence: both arrive from storage.
        a2, _ = login(srv.c2s_port, ua, pa, resource="phone")
        a2.send("<presence/>")
        got, _ = read_stanzas(a2, 3)
        assert sorted(bodies(got)) == ["and-me", "keep-me"]
        a2.close()
    finally:
        b.close()


def test_shutdown_with_a_detached_session_is_clean(make_server):
    srv = make_server("--sm-resume-timeout", "60")
    ua, pa, _ = srv.new_account("smstop")
    ub, pb, _ = srv.new_account("smstop")
    mark = srv.log_size()
    phone, jphone, _ = sm_login(srv.c2s_port, ua, pa, resource="phone")
    b, _ = login(srv.c2s_port, ub, pb)
    kill(phone)
    wait_detached(srv, jphone, mark)
    send_msgs(b, jphone, ["pending"])
    b.send("</stream:stream>")
    b.wait_closed()
    srv.wait_log(r"event=sm\.queued jid=%s unacked=1" % re.escape(jphone), mark)
    srv.signal()
    assert srv.wait(10) == 0
    log = srv.log_text(mark)
    assert "event=sm.expire jid=%s reason=shutdown" % jphone in log
    # Its queued message was handed to the router, not forgotten.
    assert re.search(r"event=sm\.reroute routed=1 ", log), log[-2000:]
