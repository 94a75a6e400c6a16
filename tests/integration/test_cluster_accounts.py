"""One account with sessions on two nodes at once (docs/clustering.md,
"One account on several nodes"): two nodes on one PostgreSQL database
and one Redis, each test placing the account's resources on both. The
node that routes a stanza for the account decides for all of its
resources (bare-JID delivery by priority, carbons, archived once); one
full JID is one session across nodes (<conflict/>); max_resources counts
every node's sessions; roster changes and pending subscription requests
reach the account's copy of its roster on the other node; its resources
see each other's presence and answer each other's login probe."""
import os
import time

import pytest

from harness import NS_BIND, NS_CLIENT, NS_STANZAS, RawStream, q, suite_pg, tostr, uniq
from imutil import Client
from pgserver import pg_bindir
from redisserver import REDIS_SERVER
from test_cluster import wait_until, status
from test_cluster_pg import account, cluster, im, redis, replicated  # noqa: F401 (fixture)

NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"

pytestmark = [
    pytest.mark.skipif(not os.access(REDIS_SERVER, os.X_OK),
                       reason="no redis-server (scripts/install-deps.sh test)"),
    pytest.mark.skipif(pg_bindir() is None, reason="PostgreSQL is not installed"),
]


def two_nodes(redis, *extra):
    uri = suite_pg().new_database()
    if not extra:
        return cluster(redis, uri, uniq("a"), uniq("b"))
    from test_cluster_pg import node
    nodes = [node(redis, uri, uniq(p), *extra) for p in ("a", "b")]
    for s in nodes:
        wait_until("%s joined" % s.name, lambda: status(s)["state"] == "connected")
    return nodes


def sees(s, n):
    """Node s's replica shows n resources of other nodes, all available."""
    wait_until("%s sees %d available resources elsewhere" % (s.name, n),
               lambda: status(s)["replica_sessions"] >= n)


def archived(s, user, body):
    return s.db_query("SELECT count(*) FROM mam_messages WHERE username = ? AND stanza LIKE ?",
                      (user, "%" + body + "%"))[0][0]


def carbon(el, direction):
    d = el.find(q(NS_CARBONS, direction))
    assert d is not None, tostr(el)
    return d.find(q(NS_FORWARD, "forwarded")).find(q(NS_CLIENT, "message"))


def enable_carbons(c):
    r = c.iq("set", "<enable xmlns='%s'/>" % NS_CARBONS)
    assert r.get("type") == "result", tostr(r)


def test_bare_jid_messages_follow_priority_across_nodes_and_are_archived_once(redis):
    n1, n2 = two_nodes(redis)
    A, S = account(n1), account(n1)
    lo = im(n1, A, "low")
    lo.available(priority=1)
    hi = im(n2, A, "high")
    hi.available(priority=5)
    s = im(n1, S, "s")
    # n1 must know that "high" (on n2) has priority 5 before it routes.
    wait_until("n1 sees high's priority", lambda: status(n1)["replica_sessions"] >= 1)
    lo.drain(0.3)
    hi.drain(0.3)
    s.send("<message to='%s' type='chat'><body>to the highest</body></message>" % A[2])
    m = hi.message(body="to the highest", timeout=10)
    assert m.get("from") == s.full, tostr(m)
    lo.quiet(lambda el: el.tag == q(NS_CLIENT, "message"), seconds=0.5)
    # Equal priorities: both resources, one on each node, get it.
    hi.available(priority=1)
    lo.presence("", hi.full, timeout=10)   # n1 learnt of the change
    s.send("<message to='%s' type='chat'><body>to both</body></message>" % A[2])
    lo.message(body="to both", timeout=10)
    hi.message(body="to both", timeout=10)
    # Routed once, on n1: one copy in the account's archive.
    wait_until("archived", lambda: archived(n1, A[0], "to both") >= 1)
    assert archived(n1, A[0], "to both") == 1
    assert archived(n1, A[0], "to the highest") == 1
    # A negative priority gets no bare-JID message; the other resource does.
    hi.available(priority=-1)
    lo.presence("", hi.full, timeout=10)
    s.send("<message to='%s' type='chat'><body>not to negatives</body></message>" % A[2])
    lo.message(body="not to negatives", timeout=10)
    hi.quiet(lambda el: el.tag == q(NS_CLIENT, "message"), seconds=0.5)
    for c in (lo, hi, s):
        c.close()


def test_a_full_jid_bound_on_another_node_replaces_the_first_session(redis):
    n1, n2 = two_nodes(redis)
    A, S = account(n1), account(n2)
    first = im(n1, A, "phone")
    sees(n2, 1)
    second = im(n2, A, "phone")
    assert first.s.stream_error(timeout=10) == "conflict"
    n1.wait_log(r"event=session\.replaced conn=\d+ jid=%s/phone by_node=%s" %
                (A[2], status(n2)["node"]))
    # The registry names n2 for the resource: a message to it goes there.
    wait_until("n1's phone session ended", lambda: status(n1)["sessions"] == 0)
    s = im(n1, S, "s")
    s.send("<message to='%s/phone' type='chat'><body>to the new one</body></message>" % A[2])
    m = second.message(body="to the new one", timeout=10)
    assert m.get("from") == s.full, tostr(m)
    second.close()
    s.close()


def test_max_resources_counts_the_sessions_on_every_node(redis):
    n1, n2 = two_nodes(redis, "--max-resources", "2")
    A = account(n1)
    a = Client(n1, A[0], A[1], resource="a")
    b = Client(n2, A[0], A[1], resource="b")
    sees(n1, 1)
    c = RawStream(n1.tls_port, direct_tls=True)
    c.open()
    assert c.scram_login(A[0], A[1])[0] == "success"
    c.restart()
    c.send("<iq type='set' id='b3'><bind xmlns='%s'><resource>c</resource></bind></iq>" % NS_BIND)
    el = c.expect(q(NS_CLIENT, "iq"))
    assert el.get("type") == "error", tostr(el)
    assert el.find("%s/{urn:ietf:params:xml:ns:xmpp-stanzas}resource-constraint"
                   % q(NS_CLIENT, "error")) is not None, tostr(el)
    c.close()
    # Binding a resource the other node holds replaces it: within the limit.
    b2 = Client(n1, A[0], A[1], resource="b")
    assert b.s.stream_error(timeout=10) == "conflict"
    for x in (a, b2):
        x.close()


def test_carbons_and_roster_pushes_reach_the_accounts_resources_on_the_other_node(redis):
    n1, n2 = two_nodes(redis)
    A, B = account(n1), account(n1)
    r1, r2 = im(n1, A, "r1"), im(n2, A, "r2")
    enable_carbons(r1)
    enable_carbons(r2)
    b = im(n1, B, "b")
    # n1 must know r2 has carbons on (its registry entry says so).
    wait_until("n1 sees r2", lambda: status(n1)["replica_sessions"] >= 1)
    r1.drain(0.5)
    r2.drain(0.5)
    # To r2 (n2): r1 (n1) gets the received carbon from n2.
    b.send("<message to='%s' type='chat' id='in'><body>to r2</body></message>" % r2.full)
    r2.message(body="to r2", timeout=10)
    c = r1.wait(lambda el: el.tag == q(NS_CLIENT, "message") and
                el.find(q(NS_CARBONS, "received")) is not None, 10, "received carbon")
    assert carbon(c, "received").get("id") == "in" and c.get("to") == r1.full, tostr(c)
    # From r2 (n2) to b (n1): r1 gets the sent carbon.
    r2.send("<message to='%s' type='chat' id='out'><body>from r2</body></message>" % b.bare)
    b.message(body="from r2", timeout=10)
    c = r1.wait(lambda el: el.tag == q(NS_CLIENT, "message") and
                el.find(q(NS_CARBONS, "sent")) is not None, 10, "sent carbon")
    assert carbon(c, "sent").get("id") == "out", tostr(c)
    # A roster change on n1 is pushed to r2 on n2, whose node's copy follows.
    friend = "friend-%s@example.org" % uniq("f")
    assert r1.roster_set(friend, name="Friend", groups=("Mates",)).get("type") == "result"
    r1.push(friend)
    it = r2.push(friend, timeout=10)
    assert it.get("name") == "Friend", tostr(it)
    roster = r2.roster_get()
    names = [i.get("name") for i in roster.iter("{jabber:iq:roster}item")
             if i.get("jid") == friend]
    assert names == ["Friend"], tostr(roster)
    # Removing it: the same.
    assert r2.roster_set(friend, subscription="remove").get("type") == "result"
    it = r1.push(friend, timeout=10)
    assert it.get("subscription") == "remove", tostr(it)
    roster = r1.roster_get()
    assert not [i for i in roster.iter("{jabber:iq:roster}item") if i.get("jid") == friend]
    for x in (r1, r2, b):
        x.close()


def test_the_accounts_resources_see_each_others_presence_across_nodes(redis):
    n1, n2 = two_nodes(redis)
    A = account(n1)
    r1 = im(n1, A, "r1", status="on n1")
    sees(n2, 1)
    # r2's login probe is answered by r1 from n1; r1 hears r2's broadcast.
    r2 = Client(n2, A[0], A[1], resource="r2")
    r2.roster_get()
    r2.available(status="on n2")
    p = r2.presence("", r1.full, timeout=10)
    assert p.findtext(q(NS_CLIENT, "status")) == "on n1", tostr(p)
    p = r1.presence("", r2.full, timeout=10)
    assert p.findtext(q(NS_CLIENT, "status")) == "on n2" and p.get("to") == r1.full, tostr(p)
    r2.close()
    r1.presence("unavailable", r2.full, timeout=10)
    r1.close()


def test_a_request_kept_on_one_node_is_answered_from_the_other(redis):
    """The subscription request goes to one of the account's nodes, which
    keeps it; approving it from a resource on the other node is an answer
    to a pending request there too (RFC 6121 3.1.5), not a pre-approval."""
    n1, n2 = two_nodes(redis)
    A, B, C = account(n1), account(n1), account(n2)
    r1, r2 = im(n1, A, "r1"), im(n2, A, "r2")
    b, c = im(n1, B, "b"), im(n2, C, "c")
    for s in (n1, n2):
        sees(s, 2)
    # Two requesters, each request answered from the other resource than
    # the one first shown the request: one of the two crosses nodes.
    for requester, approver in ((b, r2), (c, r1)):
        requester.send("<presence type='subscribe' to='%s'/>" % A[2])
        assert requester.push(A[2]).get("ask") == "subscribe"
        r1.presence("subscribe", requester.bare, timeout=10)
        r2.presence("subscribe", requester.bare, timeout=10)
        approver.send("<presence type='subscribed' to='%s'/>" % requester.bare)
        requester.presence("subscribed", A[2], timeout=10)
        it = requester.push(A[2], timeout=10)
        assert it.get("subscription") == "to", tostr(it)
        for x in (r1, r2):
            it = x.push(requester.bare, timeout=10)
            assert it.get("subscription") == "from", tostr(it)
        # Both of A's resources send their presence to the new subscriber.
        requester.presence("", r1.full, timeout=10)
        requester.presence("", r2.full, timeout=10)
    for x in (r1, r2, b, c):
        x.close()


def test_a_session_detached_on_one_node_is_resumed_on_the_other(redis):
    """XEP-0198 resumption where the client lands elsewhere: the node it
    reached asks for the session, the holder hands it over (without telling
    the contacts it left), and the stanzas the client missed follow
    <resumed/> on the new node; nothing is lost or sent twice."""
    from test_sm import NS_SM, kill, read_messages, sm_login, auth_stream
    n1, n2 = two_nodes(redis)
    A, B = account(n1), account(n1)
    s, full, en = sm_login(n1.c2s_port, A[0], A[1], resource="roam")
    previd = en.get("id")
    s.send("<presence><status>roaming</status></presence>")
    b = im(n2, B, "b")
    # b and A are contacts, so b would notice an unavailable presence.
    b.send("<presence type='subscribe' to='%s'/>" % A[2])
    s.expect(q(NS_CLIENT, "presence"))
    s.send("<presence type='subscribed' to='%s'/>" % b.bare)
    b.presence("subscribed", A[2], timeout=10)
    b.presence("", full, timeout=10)
    b.drain(0.3)
    kill(s)
    n1.wait_log(r"sm\.detach conn=\d+ jid=%s" % full.replace("/", r"\/"))
    for i in range(3):
        b.send("<message to='%s' type='chat'><body>away %d</body></message>" % (full, i))
    time.sleep(0.3)
    # The client comes back through n2.
    s2, feats = auth_stream(n2.c2s_port, A[0], A[1])
    s2.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, previd))
    els = [s2.next(10)]
    assert els[0].tag == q(NS_SM, "resumed") and els[0].get("previd") == previd, tostr(els[0])
    # n1 handled the client's presence and its answer to b: h = 2.
    assert els[0].get("h") == "2", tostr(els[0])
    msgs, _ = read_messages(s2, 3, timeout=10)
    assert [m.findtext(q(NS_CLIENT, "body")) for m in msgs if
            m.findtext(q(NS_CLIENT, "body"), "").startswith("away")] == \
        ["away 0", "away 1", "away 2"], [tostr(m) for m in msgs]
    n1.wait_log(r"event=sm\.moved jid=%s to_node=" % full.replace("/", r"\/"))
    n2.wait_log(r"event=sm\.resume conn=\d+ jid=%s" % full.replace("/", r"\/"))
    # The contact saw no unavailable: the session lives on, now on n2.
    b.quiet(lambda el: el.tag == q(NS_CLIENT, "presence") and el.get("type") == "unavailable",
            seconds=0.5)
    wait_until("n2 holds the session", lambda: status(n2)["sessions"] == 2 and
               status(n1)["sessions"] == 0)
    b.send("<message to='%s' type='chat'><body>after</body></message>" % full)
    msgs, _ = read_messages(s2, 1, timeout=10)
    assert msgs[0].findtext(q(NS_CLIENT, "body")) == "after", tostr(msgs[0])
    # A resumption id nobody holds any more fails as on one node.
    s3, _ = auth_stream(n1.c2s_port, A[0], A[1])
    s3.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, "x" * 24))
    f = s3.next(10)
    assert f.tag == q(NS_SM, "failed") and f.find(q(NS_STANZAS, "item-not-found")) is not None, \
        tostr(f)
    for x in (s2, s3, b):
        x.close()
