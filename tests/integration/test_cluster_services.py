"""The services in cluster mode (docs/clustering.md, "Services: one owner
node"): three nodes on one PostgreSQL database and one Redis. The node
holding the lease PREFIX owner:services runs the chat rooms, pubsub and
the IoT services; the others send their stanzas there. Users on three
nodes share a room (presence, groupchat, history), a pubsub node is
created on one node, subscribed to from another, published to from the
third; the IoT services and the upload service answer from a node that
is not the owner; a claim reaches a thing on another node and every
node's provisioning table; the status shows the owner; with no owner
known, service stanzas are refused. Then the owner is killed: another
node takes the lease within the TTL plus a heartbeat, loads the rooms
and nodes from the store, serves them again, and a user who was in the
room learns by self-ping (XEP-0410) that it is not any more and joins
again; an owner stopped on purpose gives the lease back at once."""
import asyncio
import os
import time

import pytest

from harness import DOMAIN, NS_CLIENT, StanzadServer, q, suite_pg, tostr, uniq
from imutil import Client, error_condition
from iotutil import (NS_DISCOVERY as NS_IOT_DISCOVERY, REGISTRY, Clients, bare, claim, el,
                     next_question, register, send_iq, set_rule)
from iotutil import wait_until as wait_until_async
import pubsubutil as psu
from pgserver import pg_bindir
from redisserver import REDIS_SERVER, RedisServer
from test_cluster import nodes_of, status, wait_until
from test_iot_provisioning import subscribe_and_wait
from test_muc import (MESSAGE, PRESENCE, codes, create, from_room, is_subject,
                      join, new_room, say, self_presence, wait_body, wait_presence)

TTL_MS = 1500
# The lease expires TTL after the owner's last renewal; a survivor's next
# heartbeat (every TTL/3) takes it; plus scheduling on shared cores.
TAKEOVER_WITHIN = TTL_MS / 1000 + 3.0

NS_PING = "urn:xmpp:ping"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_PROV = "urn:xmpp:iot:provisioning"
NS_DISCOVERY = "urn:xmpp:iot:discovery"

pytestmark = [
    pytest.mark.skipif(not os.access(REDIS_SERVER, os.X_OK),
                       reason="no redis-server (scripts/install-deps.sh test)"),
    pytest.mark.skipif(pg_bindir() is None, reason="PostgreSQL is not installed"),
]


@pytest.fixture
def cluster():
    """Three nodes n1, n2, n3 (2 workers each) on one database and one Redis."""
    r = RedisServer().start()
    uri = suite_pg().new_database()
    made = []

    def start(name):
        s = StanzadServer(["--cluster", r.uri, "--node-name", name,
                           "--cluster-ttl", str(TTL_MS), "--workers", "2"],
                          name="stanzad(%s)" % name, suite_args=False, storage=uri)
        made.append(s)
        return s.start()

    nodes = [start("n1")]
    # The first node takes the lease (it is free): the others find it held.
    wait_until("n1 holds the services' lease", lambda: status(nodes[0])["services_here"])
    nodes += [start("n2"), start("n3")]
    for s in nodes:
        wait_until("%s sees n1 as the owner" % s.name,
                   lambda: status(s)["services_owner"] == "n1")
    yield r, nodes
    for s in made:
        if s.alive():
            s.kill()
    r.cleanup()


def user_on(s, prefix):
    """An account (one store: created once) and a client on node s with presence sent."""
    name, pw, _ = s.new_account(prefix)
    c = Client(s, name, pw, resource="r")
    c.available()
    c.presence("", c.full)
    return c


def owner_lease(redis):
    return redis.cli("GET", "stanzad:%s:owner:services" % DOMAIN).strip()


def self_ping(c, room_nick):
    """XEP-0410: the client pings its own occupant JID; None (result) or the error."""
    r = c.iq("get", "<ping xmlns='%s'/>" % NS_PING, to=room_nick)
    return None if r.get("type") == "result" else error_condition(r)[1]


def test_rooms_pubsub_and_iot_served_from_any_node_and_failover(cluster):
    redis, (n1, n2, n3) = cluster
    assert owner_lease(redis) == "n1"
    st = status(n2)
    assert st["services_owner"] == "n1" and not st["services_here"], st
    out = n3.stanzactl("cluster", "status").stdout
    assert "services owner: n1" in out, out

    a, b, c = user_on(n1, "sa"), user_on(n2, "sb"), user_on(n3, "sc")
    # Every client must be in the others' replica before the room sends them anything.
    for s in (n1, n2, n3):
        wait_until("%s sees the three sessions" % s.name,
                   lambda: status(s)["replica_sessions"] == 2)

    # ---- MUC: a persistent room made from a non-owner node ----
    room = new_room()
    create(b, room, nick="bee", persistent=True)
    got = join(c, room, "sea")
    assert 110 in codes(self_presence(got)), [tostr(e) for e in got]
    wait_presence(b, room + "/sea")
    say(b, room, "first words")
    wait_body(b, room, "first words")
    wait_body(c, room, "first words")
    assert status(n2)["services"]["forwarded"] > 0 and status(n3)["services"]["forwarded"] > 0
    got = join(a, room, "ay")   # on the owner itself
    hist = [e for e in got if e.tag == MESSAGE and not is_subject(e)]
    assert [e.findtext(q(NS_CLIENT, "body")) for e in hist] == ["first words"], \
        [tostr(e) for e in got]
    assert {e.get("from") for e in got if e.tag == PRESENCE} >= \
        {room + "/bee", room + "/sea", room + "/ay"}, [tostr(e) for e in got]
    for x in (b, c):
        wait_presence(x, room + "/ay")
    say(c, room, "from n3")
    for x in (a, b, c):
        wait_body(x, room, "from n3")
    assert self_ping(c, room + "/sea") is None
    # A temporary room (memory only): gone with its owner node.
    temp = new_room()
    create(c, temp, nick="sea")
    assert self_ping(c, temp + "/sea") is None

    # ---- pubsub: created from n1, subscribed from n2, published from n3 ----
    node = uniq("node")
    psu.ok(psu.create(a, node))
    psu.ok(psu.configure(a, node, {"pubsub#publish_model": "open"}))
    psu.ok(psu.subscribe(b, node))
    psu.ok(psu.publish(c, node, "<entry xmlns='urn:test'>from n3</entry>",
                              item_id="i1"))
    ev = psu.event(b, node)
    assert "i1" in psu.event_item_ids(ev), tostr(ev)

    # ---- IoT registry and provisioning, from a non-owner node ----
    r = c.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to="registry." + DOMAIN)
    assert r.get("type") == "result", tostr(r)
    assert NS_DISCOVERY in {f.get("var") for f in r.iter("{%s}feature" % NS_DISCO_INFO)}
    r = b.iq("get", "<isFriend xmlns='%s' jid='%s'/>" % (NS_PROV, a.bare),
             to="provisioning." + DOMAIN)
    assert r.get("type") == "result", tostr(r)
    assert r.find(q(NS_PROV, "isFriendResponse")).get("result") == "false", tostr(r)

    # ---- upload: the owner gives the slot, on its own HTTP listener ----
    r = c.iq("get", "<request xmlns='urn:xmpp:http:upload:0' filename='a.txt' size='3' "
             "content-type='text/plain'/>", to="upload." + DOMAIN)
    assert r.get("type") == "result", tostr(r)
    put = r.find("{urn:xmpp:http:upload:0}slot/{urn:xmpp:http:upload:0}put")
    assert put is not None and ":%d/" % n1.http_port in put.get("url"), tostr(r)

    # ---- the owner dies ----
    a.close()
    n1.kill()
    t0 = time.monotonic()
    new = wait_until("a survivor takes the lease",
                     lambda: owner_lease(redis) in ("n2", "n3") and owner_lease(redis),
                     timeout=TAKEOVER_WITHIN)
    took = time.monotonic() - t0
    assert took < TAKEOVER_WITHIN, took
    owner = n2 if new == "n2" else n3
    other = n3 if owner is n2 else n2
    for s in (n2, n3):
        wait_until("%s sees %s as the owner" % (s.name, new),
                   lambda: status(s)["services_owner"] == new)
    assert status(owner)["services_here"] and status(owner)["services"]["takeovers"] == 1
    owner.wait_log(r"event=cluster\.services_loaded")
    assert "n1" in nodes_of(status(other))

    # The room came back from the store (persistent), without its occupants:
    # self-ping tells b and c that they are not in it any more.
    for x, r_, nick in ((b, room, "bee"), (c, room, "sea"), (c, temp, "sea")):
        wait_until("%s answers %s's self-ping" % (r_, nick),
                   lambda: self_ping(x, r_ + "/" + nick) == "not-acceptable")
    got = join(b, room, "bee")
    me = self_presence(got)
    assert 201 not in codes(me), tostr(me)   # not created again: loaded
    hist = [e.findtext(q(NS_CLIENT, "body")) for e in got
            if e.tag == MESSAGE and not is_subject(e)]
    assert "from n3" in hist, [tostr(e) for e in got]
    join(c, room, "sea")
    wait_presence(b, room + "/sea")
    say(c, room, "after the failover")
    wait_body(b, room, "after the failover")
    wait_body(c, room, "after the failover")

    # The pubsub node too: its items, its subscription, a new publish.
    got = psu.items_of(psu.get_items(c, node))
    assert [i for i, _ in got] == ["i1"], got
    psu.ok(psu.publish(c, node, "<entry xmlns='urn:test'>again</entry>",
                              item_id="i2"))
    ev = psu.event(b, node)
    assert "i2" in psu.event_item_ids(ev), tostr(ev)
    for x in (b, c):
        x.close()


def test_no_owner_known_means_service_unavailable(cluster):
    """While no node is known to hold the lease, a node answers the
    services' stanzas service-unavailable (iq error, presence error)
    instead of serving them: not even the node that held it serves on.
    Here the lease names no node (an empty value) until it is removed,
    and the next heartbeat takes it."""
    redis, (n1, n2, n3) = cluster
    b = user_on(n2, "sb")
    key = "stanzad:%s:owner:services" % DOMAIN
    redis.cli("SET", key, "", "PX", "60000")
    for s in (n1, n2, n3):
        wait_until("%s knows no owner" % s.name, lambda: status(s)["services_owner"] is None)
    assert not status(n1)["services_here"]
    n1.wait_log(r"event=cluster\.services_lost")
    r = b.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to="pubsub." + DOMAIN)
    assert r.get("type") == "error" and error_condition(r)[1] == "service-unavailable", tostr(r)
    room = new_room()
    b.send("<presence to='%s/me'><x xmlns='http://jabber.org/protocol/muc'/></presence>" % room)
    err = b.wait(lambda el: el.tag == PRESENCE and from_room(room)(el), 5, "the refusal")
    assert err.get("type") == "error" and error_condition(err)[1] == "service-unavailable", \
        tostr(err)
    # XEP-0410: not "service-unavailable" (which means "joined" there) but "try later".
    assert self_ping(b, room + "/me") == "remote-server-timeout"
    assert status(n2)["services"]["refused"] >= 3
    redis.cli("DEL", key)
    wait_until("the lease is taken again",
               lambda: owner_lease(redis) in ("n1", "n2", "n3"), timeout=TAKEOVER_WITHIN)
    owner = owner_lease(redis)
    wait_until("n2 sees the new owner", lambda: status(n2)["services_owner"] == owner)
    r = b.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to="pubsub." + DOMAIN)
    assert r.get("type") == "result", tostr(r)
    b.close()


def test_a_stopped_owner_gives_the_lease_back(cluster):
    """SIGTERM: the owner gives the lease back before it exits, so the
    next heartbeat elsewhere takes it (not the TTL later), and the new
    owner loads the persistent room made before."""
    redis, (n1, n2, n3) = cluster
    b = user_on(n2, "sb")
    room = new_room()
    create(b, room, nick="bee", persistent=True)
    b.close()
    n1.stop()
    assert owner_lease(redis) != "n1"
    new = wait_until("a survivor takes the lease",
                     lambda: owner_lease(redis) in ("n2", "n3") and owner_lease(redis),
                     timeout=TAKEOVER_WITHIN)
    owner = n2 if new == "n2" else n3
    owner.wait_log(r"event=cluster\.services_loaded")
    for s in (n2, n3):
        wait_until("%s sees %s as the owner" % (s.name, new),
                   lambda: status(s)["services_owner"] == new)
    c = user_on(n3, "sc")
    got = join(c, room, "sea")
    assert 201 not in codes(self_presence(got)), [tostr(e) for e in got]
    c.close()


def test_a_claim_reaches_the_thing_and_every_node_table(cluster, loop, arun):
    """A thing on n2 registers (XEP-0347) and an owner on n3 claims it, both
    through the owner n1: the thing on n2 is told of its claim, and the
    provisioning tables of n2 and n3 learn of it from the store (the owner
    node's event), so a stranger's friendship request from n3 is refused
    on the thing's node and the owner asked (XEP-0324), as on a single
    node."""
    redis, (n1, n2, n3) = cluster
    c2, c3 = Clients(n2, loop), Clients(n3, loop)

    async def go():
        d = await c2.device()
        owner = await c3.client("owner")
        stranger = await c3.client("stranger")
        for s in (n1, n3):
            wait_until("%s sees the thing's session" % s.name,
                       lambda: status(s)["replica_sessions"] >= 1)
        assert await register(d) is None
        await claim(owner, d)
        # Both tables: a subscription to the thing is decided on its node (n2).
        for s in (n2, n3):
            s.wait_log(r"event=provisioning\.reloaded thing=%s owner=%s" %
                       (bare(d), bare(owner)))
        await subscribe_and_wait(stranger, bare(d), "unsubscribed")
        ask = await next_question(owner, "isFriend")
        assert ask.get("jid") == bare(d) and ask.get("remoteJid") == bare(stranger)
        # A rule the owner sets reaches n3's table, and the clearCache the thing on n2.
        friend = await c3.client("friend")
        before = d.clear_cache_count
        await set_rule(owner, "isFriendRule", d, True, remoteJid=bare(friend))
        await wait_until_async(lambda: d.clear_cache_count > before, what="clearCache on n2")
        for s in (n2, n3):
            s.wait_log(r"event=provisioning\.reloaded thing=%s owner=%s rules=1" %
                       (bare(d), bare(owner)))
        await subscribe_and_wait(friend, bare(d), "subscribed")
        # Disowning asks the thing, online on n2 only.
        await send_iq(owner, REGISTRY, "set", el(NS_IOT_DISCOVERY, "disown", {"jid": bare(d)}))
        assert any(k == "disowned" for k, _ in d.events)
        n3.wait_log(r"event=provisioning\.reloaded thing=%s owner=none" % bare(d))
    try:
        arun(go(), timeout=60)
    finally:
        loop.run_until_complete(asyncio.wait_for(
            asyncio.gather(c2.close(), c3.close(), return_exceptions=True), 10))
