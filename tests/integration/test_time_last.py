"""XEP-0202 Entity Time and XEP-0012 Last Activity answered by the
server: the server's time and uptime, one's own account, and other
accounts (existence, the presence-subscription check, online accounts,
the last logout and its status, persistence across a restart)."""
import datetime
import re
import time

from harness import DOMAIN, NS_CLIENT, NS_DISCO_INFO, connect_and_wait, login, q, tostr
from iqutil import error_of, request, result_of, set_roster_item

NS_TIME = "urn:xmpp:time"
NS_LAST = "jabber:iq:last"
UTC_RX = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def session(server, prefix="tl", user=None, pw=None):
    if user is None:
        user, pw, _ = server.new_account(prefix)
    s, full = login(server.tls_port, user, pw, direct_tls=True)
    return s, user, pw, "%s@%s" % (user, DOMAIN)


def last(s, iq_id, to=None):
    return request(s, "get", "<query xmlns='%s'/>" % NS_LAST, iq_id, to=to)


def seconds_and_text(el):
    qe = result_of(el)
    assert qe is not None and qe.tag == q(NS_LAST, "query"), tostr(el)
    return int(qe.get("seconds")), qe.text


def logout(server, s, bare, status=None):
    """Ends s's session cleanly (after an unavailable presence with
    `status`, when given) and waits until the server has ended it."""
    mark = server.log_size()
    if status is not None:
        s.send("<presence type='unavailable'><status>%s</status></presence>" % status)
    s.send("</stream:stream>")
    server.wait_log(r"event=session\.end [^\n]*jid=%s/" % re.escape(bare), start=mark)
    s.close()


# ---- entity time ----

def test_server_time_is_utc_now(server):
    s, _, _, _ = session(server)
    try:
        el = request(s, "get", "<time xmlns='%s'/>" % NS_TIME, "t", to=DOMAIN)
        t = result_of(el)
        assert t.tag == q(NS_TIME, "time"), tostr(el)
        assert t.find(q(NS_TIME, "tzo")).text == "+00:00"
        utc = t.find(q(NS_TIME, "utc")).text
        assert UTC_RX.match(utc), utc
        then = datetime.datetime.strptime(utc, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc)
        now = datetime.datetime.now(datetime.timezone.utc)
        assert abs((now - then).total_seconds()) < 5, (utc, now)
    finally:
        s.close()


def test_time_is_answered_for_the_server_only(server):
    """An account's time is its clients' business: not answered for a bare JID."""
    s, _, _, bare = session(server)
    try:
        el = request(s, "get", "<time xmlns='%s'/>" % NS_TIME, "t", to=bare)
        assert error_of(el)[1] == "service-unavailable"
        el = request(s, "set", "<time xmlns='%s'/>" % NS_TIME, "t2", to=DOMAIN)
        assert error_of(el)[1] == "bad-request"
    finally:
        s.close()


def test_disco_lists_time_and_last(server):
    s, _, _, _ = session(server)
    try:
        el = request(s, "get", "<query xmlns='%s'/>" % NS_DISCO_INFO, "d", to=DOMAIN)
        feats = [f.get("var") for f in result_of(el)]
        assert NS_TIME in feats and NS_LAST in feats
    finally:
        s.close()


def test_slixmpp_entity_time(server, xmpp, arun):
    user, pw, jid = server.new_account("sltime")
    c = xmpp(jid, pw, server.c2s_port, plugins=["xep_0202"])

    async def scenario():
        await connect_and_wait(c)
        iq = await c["xep_0202"].get_entity_time(DOMAIN)
        # slixmpp 1.8's parsers fail on XEP-0202 values (it appends a
        # second 'Z' to <utc/>, its own output included, and cannot read
        # '+00:00'), so read the elements rather than ["time"].
        t = iq.xml.find("{%s}time" % NS_TIME)
        assert UTC_RX.match(t.find("{%s}utc" % NS_TIME).text)
        assert t.find("{%s}tzo" % NS_TIME).text == "+00:00"
    arun(scenario())


# ---- last activity: the server and oneself ----

def test_server_uptime_grows(make_server):
    started = time.monotonic()
    srv = make_server()
    s, _, _, _ = session(srv)
    try:
        up1, text = seconds_and_text(last(s, "l1", to=DOMAIN))
        assert text is None
        assert 0 <= up1 <= time.monotonic() - started + 1
        time.sleep(1.1)
        up2, _ = seconds_and_text(last(s, "l2", to=DOMAIN))
        assert up2 >= up1 + 1
    finally:
        s.close()


def test_own_account_is_online(server):
    s, _, _, bare = session(server)
    try:
        assert seconds_and_text(last(s, "l1")) == (0, None)
        assert seconds_and_text(last(s, "l2", to=bare)) == (0, None)
    finally:
        s.close()


# ---- last activity: other accounts ----

def test_unknown_account_is_service_unavailable(server):
    s, _, _, _ = session(server)
    try:
        assert error_of(last(s, "l", to="nobody-here@" + DOMAIN))[:2] == \
            ("cancel", "service-unavailable")
    finally:
        s.close()


def test_without_presence_subscription_is_forbidden(server):
    ut, pt, bt = server.new_account("tgt")
    s, _, _, bare = session(server)
    try:
        assert error_of(last(s, "l1", to=bt))[:2] == ("auth", "forbidden")
        # 'to' means the target receives the asker's presence, not the reverse.
        set_roster_item(server, ut, bare, "to")
        assert error_of(last(s, "l2", to=bt))[1] == "forbidden"
        set_roster_item(server, ut, bare, "none")
        assert error_of(last(s, "l3", to=bt))[1] == "forbidden"
    finally:
        s.close()


def test_logout_time_and_status_for_a_subscribed_contact(server):
    ut, pt, bt = server.new_account("tgt")
    s, _, _, bare = session(server)
    try:
        t, _, _, _ = session(server, user=ut, pw=pt)
        t.send("<presence/>")
        logout(server, t, bt, status="Heading Home")
        set_roster_item(server, ut, bare, "from")
        secs, text = seconds_and_text(last(s, "l1", to=bt))
        assert 0 <= secs <= 3 and text == "Heading Home"
        time.sleep(1.1)
        set_roster_item(server, ut, bare, "both")
        secs2, text = seconds_and_text(last(s, "l2", to=bt))
        assert secs2 >= 1 and text == "Heading Home"
    finally:
        s.close()


def test_online_contact_answers_zero(server):
    ut, pt, bt = server.new_account("tgt")
    s, _, _, bare = session(server)
    set_roster_item(server, ut, bare, "both")
    t, _, _, _ = session(server, user=ut, pw=pt)
    try:
        assert seconds_and_text(last(s, "l", to=bt)) == (0, None)
        # The server answered: the target's stream saw nothing.
        assert t.nothing_within(0.3)
    finally:
        t.close()
        s.close()


def test_contact_that_never_logged_out(server):
    ut, pt, bt = server.new_account("tgt")
    s, _, _, bare = session(server)
    try:
        set_roster_item(server, ut, bare, "from")
        assert error_of(last(s, "l", to=bt))[1] == "service-unavailable"
    finally:
        s.close()


def test_status_is_forgotten_once_available_again(server):
    ut, pt, bt = server.new_account("tgt")
    s, _, _, bare = session(server)
    try:
        t, _, _, _ = session(server, user=ut, pw=pt)
        t.send("<presence type='unavailable'><status>brb</status></presence><presence/>")
        logout(server, t, bt)
        set_roster_item(server, ut, bare, "both")
        assert seconds_and_text(last(s, "l", to=bt))[1] is None
    finally:
        s.close()


def test_only_the_last_session_counts_as_logout(server):
    ut, pt, bt = server.new_account("tgt")
    s, _, _, bare = session(server)
    set_roster_item(server, ut, bare, "from")
    try:
        t1, _, _, _ = session(server, user=ut, pw=pt)
        t2, _, _, _ = session(server, user=ut, pw=pt)
        logout(server, t1, bt, status="one gone")
        # t2 is still online: 0, whatever t1 said.
        assert seconds_and_text(last(s, "l1", to=bt)) == (0, None)
        logout(server, t2, bt, status="all gone")
        assert seconds_and_text(last(s, "l2", to=bt))[1] == "all gone"
    finally:
        s.close()


def test_long_status_is_cut_at_a_character_boundary(server):
    ut, pt, bt = server.new_account("tgt")
    s, _, _, bare = session(server)
    try:
        t, _, _, _ = session(server, user=ut, pw=pt)
        logout(server, t, bt, status="\u00e9" * 1500)
        set_roster_item(server, ut, bare, "from")
        _, text = seconds_and_text(last(s, "l", to=bt))
        assert 0 < len(text.encode()) <= 1024 and set(text) == {"\u00e9"}
    finally:
        s.close()


def test_last_activity_survives_a_restart(make_server):
    srv = make_server()
    ut, pt, bt = srv.new_account("tgt")
    ua, pa, ba = srv.new_account("asker")
    t, _, _, _ = session(srv, user=ut, pw=pt)
    logout(srv, t, bt, status="before restart")
    set_roster_item(srv, ut, ba, "both")
    srv.signal()
    assert srv.wait(10) == 0
    time.sleep(1.1)
    srv.start()
    s, _, _, _ = session(srv, user=ua, pw=pa)
    try:
        secs, text = seconds_and_text(last(s, "l", to=bt))
        assert secs >= 1 and text == "before restart"
    finally:
        s.close()


def test_slixmpp_last_activity(server, xmpp, arun):
    ut, pt, bt = server.new_account("sllast")
    ua, pa, ba = server.new_account("sllast")
    t, _, _, _ = session(server, user=ut, pw=pt)
    logout(server, t, bt, status="gone fishing")
    set_roster_item(server, ut, ba, "both")
    c = xmpp(ba, pa, server.c2s_port, plugins=["xep_0012"])

    async def scenario():
        await connect_and_wait(c)
        iq = await c["xep_0012"].get_last_activity(bt)
        assert iq["last_activity"]["status"] == "gone fishing"
        assert iq["last_activity"]["seconds"] >= 0
        up = await c["xep_0012"].get_last_activity(DOMAIN)
        assert up["last_activity"]["seconds"] >= 0
    arun(scenario())


# ---- with a real subscription handshake (RFC 6121 section 3) ----

def wait_for(s, pred, what, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        el = s.next(max(0.01, deadline - time.monotonic()))
        if pred(el):
            return el
        assert time.monotonic() < deadline, "no %s" % what


def is_presence(kind, frm):
    def pred(el):
        return (el.tag == q(NS_CLIENT, "presence") and el.get("type") == kind and
                (el.get("from") or "").split("/")[0] == frm)
    return pred


def test_subscription_handshake_grants_last_activity(server):
    """B approves A's subscription: A may see B's last activity and idle
    time, B (who has no subscription to A) may not see A's."""
    a, ua, pa, ba = session(server, prefix="suba")
    b, ub, pb, bb = session(server, prefix="subb")
    try:
        a.send("<presence/>")
        b.send("<presence/>")
        a.send("<presence type='subscribe' to='%s'/>" % bb)
        wait_for(b, is_presence("subscribe", ba), "subscribe at B")
        b.send("<presence type='subscribed' to='%s'/>" % ba)
        wait_for(a, is_presence("subscribed", bb), "subscribed at A")
        # B is online: 0, answered by the server on B's behalf.
        assert seconds_and_text(last(a, "l1", to=bb)) == (0, None)
        assert error_of(last(b, "l2", to=ba))[1] == "forbidden"
        # To a full JID: delivered to B's client for A, refused for B.
        a.send("<iq type='get' id='idle' to='%s'><query xmlns='%s'/></iq>" % (b.jid, NS_LAST))
        got = wait_for(b, lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("id") == "idle",
                       "the idle-time request at B")
        assert got.get("from") == a.jid
        el = request(b, "get", "<query xmlns='%s'/>" % NS_LAST, "idle2", to=a.jid)
        assert error_of(el)[:2] == ("auth", "forbidden")
        # Account info follows the same rule.
        assert result_of(request(a, "get", "<query xmlns='%s'/>" % NS_DISCO_INFO, "d1",
                                 to=bb)) is not None
        assert error_of(request(b, "get", "<query xmlns='%s'/>" % NS_DISCO_INFO, "d2",
                                to=ba))[1] == "service-unavailable"
        logout(server, b, bb, status="Heading Home")
        secs, text = seconds_and_text(last(a, "l3", to=bb))
        assert secs <= 3 and text == "Heading Home"
    finally:
        a.close()
        b.close()
