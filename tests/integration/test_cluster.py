"""Cluster mode on Redis (docs/clustering.md, "Redis: membership, registry,
inter-node stanzas"): nodes join and are listed by `stanzactl cluster
status` with their sessions; a node killed with SIGKILL is reported dead
and its sessions leave the registry within the heartbeat TTL, and it
rejoins when restarted; a Redis restart is survived (reconnect, sessions
registered again); a second node with a live node's name is refused.
Then stanzas between clients on different nodes, and a message for a
node that died before reading it, which ends up offline on the node that
cleaned up after it.

Each node has its own state directory (its own SQLite store), so an
account used on two nodes is created on both."""
import json
import os
import secrets
import signal
import subprocess
import time

import pytest

from harness import (DOMAIN, NS_CLIENT, NS_PING, STANZAD, ServerError, StanzadServer, login,
                     q, tostr, uniq)
from redisserver import REDIS_SERVER, RedisServer

TTL_MS = 1500
# A dead node is noticed at the first heartbeat after its key expired:
# TTL, plus a heartbeat period (TTL/3), plus scheduling on shared cores.
DEAD_WITHIN = TTL_MS / 1000 + 3.0

pytestmark = pytest.mark.skipif(not os.access(REDIS_SERVER, os.X_OK),
                                reason="no redis-server (scripts/install-deps.sh test)")


_nodes = []


@pytest.fixture
def redis():
    r = RedisServer().start()
    yield r
    # A failed test leaves its nodes running: they go before their Redis.
    while _nodes:
        s = _nodes.pop()
        if s.alive():
            s.kill()
    r.cleanup()


def node(redis, name, *extra, start=True):
    s = StanzadServer(["--cluster", redis.uri, "--node-name", name,
                       "--cluster-ttl", str(TTL_MS), "--workers", "2"] + list(extra),
                      name="stanzad(%s)" % name, suite_args=False)
    _nodes.append(s)
    return s.start() if start else s


def status(s):
    r = s.stanzactl("--json", "cluster", "status")
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return json.loads(r.stdout)


def nodes_of(st):
    return {n["name"]: n for n in st["nodes"]}


def wait_until(what, fn, timeout=10.0):
    """Polls fn() until it returns something true; returns it."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError("%s: not within %.1f s (last: %r)" % (what, timeout, last))


def counts(s):
    """{node: (alive, sessions)} as s sees it."""
    return {k: (v["alive"], v["sessions"]) for k, v in nodes_of(status(s)).items()}


def account_on(user, password, *servers):
    for s in servers:
        s.add_user(user, password)
    return user, password, "%s@%s" % (user, DOMAIN)


def online(s, user, password, resource=None):
    """A bound session with initial presence sent (so it takes bare-JID stanzas)."""
    st, jid = login(s.c2s_port, user, password, resource=resource)
    st.send(b"<presence/>")
    return st, jid


def registry(redis, bare):
    out = redis.cli("HGETALL", "stanzad:%s:sess:%s" % (DOMAIN, bare)).splitlines()
    return dict(zip(out[0::2], out[1::2]))


def streams(redis, name):
    """The inbound streams of node `name` (one per worker: in:NAME:K)."""
    return redis.cli("KEYS", "stanzad:%s:in:%s:*" % (DOMAIN, name)).split()


def stream_entries(redis, name):
    return sum(int(redis.cli("XLEN", k).strip() or 0) for k in streams(redis, name))


def next_of(st, tag, timeout=10.0, pred=None):
    """The next element with this tag (others are skipped: presence, pushes)."""
    deadline = time.monotonic() + timeout
    while True:
        el = st.next(max(0.1, deadline - time.monotonic()))
        if el.tag == tag and (pred is None or pred(el)):
            return el


def body_of(el):
    b = el.find(q(NS_CLIENT, "body"))
    return b.text if b is not None else None


# ---- phase 1: membership and registry ----

def test_three_nodes_join_and_status_lists_them_with_session_counts(redis):
    n1, n2, n3 = node(redis, "n1"), node(redis, "n2"), node(redis, "n3")
    u1, p1, _ = account_on(uniq("ca"), "pw-a", n1)
    u2, p2, b2 = account_on(uniq("cb"), "pw-b", n2)
    keep = [online(n1, u1, p1, "r1"), online(n1, u1, p1, "r2"), online(n2, u2, p2, "x")]
    want = {"n1": (True, 2), "n2": (True, 1), "n3": (True, 0)}
    for s in (n1, n2, n3):
        wait_until("%s sees every node and its sessions" % s.name, lambda: counts(s) == want)
    st = status(n3)
    assert st["enabled"] and st["node"] == "n3" and st["state"] == "connected", st
    assert st["redis"] == redis.uri, st
    assert st["replica_sessions"] == 3, st
    # The registry itself: resource -> "NODE WORKER PRIORITY AVAILABLE".
    reg = registry(redis, b2)
    assert list(reg) == ["x"] and reg["x"].startswith("n2 ") and reg["x"].endswith(" 0 1 0"), reg
    out = n1.stanzactl("cluster", "status").stdout
    for name in ("n1", "n2", "n3"):
        assert name in out, out
    assert "(this node)" in out, out
    for st_, _ in keep:
        st_.close()
    wait_until("ended sessions leave the registry", lambda: counts(n3)["n1"] == (True, 0))
    assert registry(redis, b2) == {} or wait_until("n2's session gone",
                                                   lambda: registry(redis, b2) == {})
    for s in (n1, n2, n3):
        s.stop()


def test_a_killed_node_is_reported_dead_its_sessions_leave_and_it_rejoins(redis):
    n1, n2 = node(redis, "k1"), node(redis, "k2")
    u, p, bare = account_on(uniq("kd"), "pw-k", n2)
    keep = online(n2, u, p, "dev")
    wait_until("k1 sees k2's session", lambda: counts(n1).get("k2") == (True, 1))
    mark = n1.log_size()
    n2.kill()
    t0 = time.monotonic()
    wait_until("k2 reported dead", lambda: counts(n1).get("k2", (True,))[0] is False,
               timeout=DEAD_WITHIN + 5)
    wait_until("k2's sessions gone from the registry", lambda: registry(redis, bare) == {},
               timeout=DEAD_WITHIN + 5)
    took = time.monotonic() - t0
    assert took < DEAD_WITHIN, "k2 left the registry after %.1f s (ttl %d ms)" % (took, TTL_MS)
    assert redis.cli("SCARD", "stanzad:%s:nodesess:k2" % DOMAIN).strip() == "0"
    assert status(n1)["replica_sessions"] == 0
    n1.wait_log(r"event=cluster\.node_down name=k2 reason=ttl", start=mark)
    n1.wait_log(r"event=cluster\.node_reaped name=k2 sessions=1", start=mark)
    # Back: it rejoins and registers what it has.
    mark = n1.log_size()
    n2.restart()
    wait_until("k2 alive again", lambda: counts(n1).get("k2") == (True, 0))
    n1.wait_log(r"event=cluster\.node_up name=k2", start=mark)
    keep = online(n2, u, p, "dev2")
    wait_until("k2's new session registered", lambda: counts(n1).get("k2") == (True, 1))
    keep[0].close()
    n1.stop()
    n2.stop()


def test_a_redis_restart_is_survived_and_sessions_are_registered_again(redis):
    n1, n2 = node(redis, "r1"), node(redis, "r2")
    ua, pa, ba = account_on(uniq("ra"), "pw-a", n1)
    ub, pb, bb = account_on(uniq("rb"), "pw-b", n2)
    keep = [online(n1, ua, pa, "a"), online(n2, ub, pb, "b")]
    want = {"r1": (True, 1), "r2": (True, 1)}
    wait_until("both registered", lambda: counts(n1) == want and counts(n2) == want)
    marks = [n1.log_size(), n2.log_size()]
    # The worst case: Redis comes back empty (its data lost).
    redis.cli("FLUSHALL")
    redis.restart(down_for=1.0)
    for s, m in zip((n1, n2), marks):
        s.wait_log(r"event=cluster\.redis_down", start=m)
        s.wait_log(r"event=cluster\.redis_up", start=m)
        assert s.log_text(m).count("event=cluster.redis_down") == 1, s.log_text(m)
    for s in (n1, n2):
        wait_until("%s: counts back after the restart" % s.name, lambda: counts(s) == want)
    assert list(registry(redis, ba)) == ["a"] and list(registry(redis, bb)) == ["b"]
    # The replicas were loaded again: each node knows the other's session.
    wait_until("replicas reloaded", lambda: status(n1)["replica_sessions"] == 1 and
               status(n2)["replica_sessions"] == 1)
    for st_, _ in keep:
        st_.close()
    n1.stop()
    n2.stop()


def test_while_redis_is_down_status_says_so_and_the_node_keeps_serving(redis):
    n1 = node(redis, "d1")
    u, p, _ = account_on(uniq("dd"), "pw-d", n1)
    redis.stop()
    wait_until("down in status", lambda: status(n1)["state"] == "down")
    assert status(n1)["down_since_ms"] > 0
    s, jid = login(n1.c2s_port, u, p)  # logins do not wait for Redis
    s.close()
    redis.start()
    wait_until("connected again", lambda: status(n1)["state"] == "connected")
    n1.stop()


def test_a_second_node_with_a_live_nodes_name_is_refused(redis):
    n1 = node(redis, "same")
    wait_until("the first one joined", lambda: counts(n1) == {"same": (True, 0)})
    dup = node(redis, "same", start=False)
    with pytest.raises(ServerError):
        dup.start()
    assert dup.returncode == 1, dup.returncode
    assert "node name 'same' is in use by a live node" in dup.log_text(), dup.log_tail()
    assert counts(n1) == {"same": (True, 0)}  # the first one is untouched
    n1.stop()


def test_a_stopped_node_leaves_at_once_and_says_so(redis):
    n1, n2 = node(redis, "g1"), node(redis, "g2", "--cluster-ttl", "60000")
    u, p, bare = account_on(uniq("gl"), "pw-g", n2)
    keep = online(n2, u, p, "r")
    wait_until("g1 sees g2's session", lambda: counts(n1).get("g2") == (True, 1))
    mark = n1.log_size()
    n2.stop()
    # No waiting for a 60 s heartbeat: SIGTERM takes its sessions out and says it left.
    assert registry(redis, bare) == {}
    n1.wait_log(r"event=cluster\.node_down name=g2 reason=left", start=mark)
    wait_until("g2 reported dead", lambda: counts(n1).get("g2", (True,))[0] is False)
    keep[0].close()
    n1.stop()


def test_a_node_that_fails_to_start_gives_its_name_back(redis):
    import socket
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    bad = StanzadServer(["--cluster", redis.uri, "--node-name", "rel", "--cluster-ttl", "60000",
                         "--listen-s2s", "127.0.0.1:%d" % port], name="stanzad(rel, busy port)",
                        suite_args=False)
    _nodes.append(bad)
    try:
        bad.start()
    except ServerError:
        pass
    else:
        # The s2s listener fails after the client ports accept (a busy
        # machine lets the harness see those first): the daemon exits then.
        rc = bad.wait(10)
        assert rc not in (None, 0), "started with the s2s port taken (rc=%r)" % rc
    busy.close()
    # No 60 s wait for the claim to expire: the failed start released it.
    assert redis.cli("EXISTS", "stanzad:%s:alive:rel" % DOMAIN).strip() == "0"
    good = node(redis, "rel", "--cluster-ttl", "60000")
    wait_until("joined", lambda: counts(good) == {"rel": (True, 0)})
    good.stop()


def test_cluster_settings_are_checked_and_the_password_never_shown(redis):
    p = subprocess.run([STANZAD, "--cluster", "http://x:1"], capture_output=True, text=True,
                       timeout=10)
    assert p.returncode == 2 and "cluster must be redis://" in p.stderr, p.stderr
    p = subprocess.run([STANZAD, "--cluster", redis.uri, "--node-name", "bad name"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "node_name 'bad name'" in p.stderr, p.stderr
    secret = "s3cr3t-" + secrets.token_hex(4)
    redis.cli("CONFIG", "SET", "requirepass", secret)
    uri = "redis://:%s@127.0.0.1:%d" % (secret, redis.port)
    s = StanzadServer(["--cluster", uri, "--node-name", "pw1", "--cluster-ttl", str(TTL_MS)],
                      name="stanzad(pw1)", suite_args=False).start()
    st = wait_until("joined with the password", lambda: (lambda x: x if x["state"] ==
                                                         "connected" else None)(status(s)))
    assert st["redis"] == "redis://:***@127.0.0.1:%d" % redis.port, st
    r = s.stanzactl("cluster", "status")
    assert secret not in r.stdout
    assert secret not in s.log_text()
    s.stop()
    subprocess.run(["redis-cli", "-p", str(redis.port), "-a", secret, "--no-auth-warning",
                    "CONFIG", "SET", "requirepass", ""], capture_output=True, timeout=10)


def test_without_cluster_mode_status_says_so():
    s = StanzadServer(name="stanzad(no cluster)", suite_args=False).start()
    r = s.stanzactl("cluster", "status")
    assert r.returncode == 0 and "cluster mode is off" in r.stdout, (r.stdout, r.stderr)
    assert status(s) == {"enabled": False}
    s.stop()


# ---- phase 2: stanzas between nodes ----

def test_clients_on_two_nodes_exchange_messages_iq_and_directed_presence(redis):
    n1, n2 = node(redis, "m1"), node(redis, "m2")
    ua, pa, ba = account_on(uniq("ma"), "pw-a", n1)
    ub, pb, bb = account_on(uniq("mb"), "pw-b", n2)
    a, ja = online(n1, ua, pa, "pa")
    b, jb = online(n2, ub, pb, "pb")
    wait_until("each node knows the other's session", lambda:
               status(n1)["replica_sessions"] == 1 and status(n2)["replica_sessions"] == 1)
    # Full JID, both ways.
    a.send(("<message to='%s' type='chat' id='m1'><body>hi full</body></message>" % jb).encode())
    m = next_of(b, q(NS_CLIENT, "message"))
    assert body_of(m) == "hi full" and m.get("from") == ja, tostr(m)
    b.send(("<message to='%s' type='chat' id='m2'><body>back full</body></message>" %
            ja).encode())
    m = next_of(a, q(NS_CLIENT, "message"))
    assert body_of(m) == "back full" and m.get("from") == jb, tostr(m)
    # Bare JID: the receiving node delivers to its own sessions of the account.
    a.send(("<message to='%s' type='normal'><body>hi bare</body></message>" % bb).encode())
    m = next_of(b, q(NS_CLIENT, "message"))
    assert body_of(m) == "hi bare" and m.get("from") == ja, tostr(m)
    # An iq to the other node's client, and its answer back.
    a.send(("<iq to='%s' type='get' id='ping1'><ping xmlns='%s'/></iq>" %
            (jb, NS_PING)).encode())
    iq = next_of(b, q(NS_CLIENT, "iq"), pred=lambda e: e.get("id") == "ping1")
    assert iq.get("from") == ja and iq.get("type") == "get", tostr(iq)
    b.send(("<iq to='%s' type='result' id='ping1'/>" % ja).encode())
    iq = next_of(a, q(NS_CLIENT, "iq"), pred=lambda e: e.get("id") == "ping1")
    assert iq.get("from") == jb and iq.get("type") == "result", tostr(iq)
    # Directed presence.
    a.send(("<presence to='%s'><status>here</status></presence>" % jb).encode())
    pr = next_of(b, q(NS_CLIENT, "presence"), pred=lambda e: e.get("from") == ja)
    assert pr.find(q(NS_CLIENT, "status")).text == "here", tostr(pr)
    # An iq for a resource that is not there is answered by the node routing it.
    a.send(("<iq to='%s/nope' type='get' id='ping2'><ping xmlns='%s'/></iq>" %
            (bb, NS_PING)).encode())
    iq = next_of(a, q(NS_CLIENT, "iq"), pred=lambda e: e.get("id") == "ping2")
    assert iq.get("type") == "error", tostr(iq)
    st = status(n2)
    assert st["stanzas"]["received"] >= 4 and st["delivery_lag"]["samples"] >= 4, st
    # One stream per worker of the receiving node, read by that worker.
    assert sorted(streams(redis, "m2")) == ["stanzad:%s:in:m2:%d" % (DOMAIN, k) for k in (0, 1)]
    st1 = status(n1)
    assert st1["stanzas"]["sent"] >= 4, st1
    a.close()
    b.close()
    n1.stop()
    n2.stop()


def test_a_message_for_a_node_killed_before_reading_it_ends_up_offline(redis):
    n1, n2 = node(redis, "o1"), node(redis, "o2")
    ua, pa, ba = account_on(uniq("oa"), "pw-a", n1)
    # Each node has its own store: the recipient's account exists on both,
    # and its offline message ends up in the store of the node that reaped o2.
    ub, pb, bb = account_on(uniq("ob"), "pw-b", n1, n2)
    a, ja = online(n1, ua, pa, "pa")
    b, jb = online(n2, ub, pb, "pb")
    wait_until("o1 knows o2's session", lambda: status(n1)["replica_sessions"] == 1)
    # o2 stops reading (frozen), gets a message in its stream, then dies.
    n2.proc.send_signal(signal.SIGSTOP)
    a.send(("<message to='%s' type='chat' id='lost?'><body>keep me</body></message>" %
            bb).encode())
    a.send(("<iq to='%s' type='get' id='lost-iq'><ping xmlns='%s'/></iq>" %
            (jb, NS_PING)).encode())
    wait_until("both wait in o2's stream", lambda: stream_entries(redis, "o2") >= 2)
    mark = n1.log_size()
    n2.kill()
    n1.wait_log(r"event=cluster\.node_reaped name=o2", start=mark, timeout=DEAD_WITHIN + 5)
    wait_until("the reaper routed the entries", lambda: status(n1)["stanzas"]["reaped"] == 2)
    # The iq is answered (RFC 6121 8.5.3.2.1: no such resource any more).
    iq = next_of(a, q(NS_CLIENT, "iq"), pred=lambda e: e.get("id") == "lost-iq")
    assert iq.get("type") == "error" and iq.get("from") == jb, tostr(iq)
    # Handled, then deleted once what handling them wrote committed.
    wait_until("o2's streams deleted", lambda: streams(redis, "o2") == [])
    b.close()
    # The recipient logs in on the reaper's node and gets it from offline storage.
    b2, _ = online(n1, ub, pb, "again")
    m = next_of(b2, q(NS_CLIENT, "message"), pred=lambda e: body_of(e) == "keep me")
    assert m.get("from") == ja, tostr(m)
    a.close()
    b2.close()
    n1.stop()


def im_online(s, user, password, resource, status=None):
    from imutil import Client
    c = Client(s, user, password, resource=resource)
    c.roster_get()
    c.available(status=status)
    c.presence("", c.full)
    return c


def test_presence_broadcast_and_probes_reach_contacts_on_another_node(redis):
    from imutil import subscribe_mutually
    n1, n2 = node(redis, "p1"), node(redis, "p2")
    ua, pa, ba = account_on(uniq("pa"), "pw-a", n1, n2)
    ub, pb, bb = account_on(uniq("pb"), "pw-b", n1, n2)
    # Rosters are in each node's own store in this phase: subscribe on both.
    for s in (n1, n2):
        a, b = im_online(s, ua, pa, "sa"), im_online(s, ub, pb, "sb")
        subscribe_mutually(a, b)
        a.close_cleanly()
        b.close_cleanly()
    b = im_online(n2, ub, pb, "bres", status="on p2")
    wait_until("p1 knows b's session", lambda: status(n1)["replica_sessions"] == 1)
    sent_before = status(n1)["stanzas"]["sent"]
    a = im_online(n1, ua, pa, "ares", status="on p1")
    # a's login probe is answered by p2, where b is.
    pr = a.presence("", bb, timeout=10)
    assert pr.find(q(NS_CLIENT, "status")).text == "on p2", tostr(pr)
    # a's broadcast reaches b on p2: one stream entry for p2 with its recipients.
    pr = b.presence("", ba, timeout=10)
    assert pr.find(q(NS_CLIENT, "status")).text == "on p1", tostr(pr)
    assert pr.get("to") == b.full or pr.get("to") == bb, tostr(pr)
    # b's change of presence reaches a on p1.
    b.available(status="still on p2")
    pr = a.wait(lambda el: el.tag == q(NS_CLIENT, "presence") and
                (el.findtext(q(NS_CLIENT, "status")) == "still on p2"), timeout=10)
    assert pr.get("from") == b.full, tostr(pr)
    # a leaves: unavailable to b.
    a.close_cleanly()
    b.presence("unavailable", ba, timeout=10)
    assert status(n1)["stanzas"]["sent"] >= sent_before + 3
    b.close()
    n1.stop()
    n2.stop()


def test_a_message_redis_refuses_is_stored_offline_on_the_sending_node(redis):
    n1, n2 = node(redis, "f1"), node(redis, "f2")
    ua, pa, ba = account_on(uniq("fa"), "pw-a", n1)
    ub, pb, bb = account_on(uniq("fb"), "pw-b", n1, n2)
    a, ja = online(n1, ua, pa, "pa")
    b, jb = online(n2, ub, pb, "pb")
    wait_until("f1 knows f2's session", lambda: status(n1)["replica_sessions"] == 1)
    mark = n1.log_size()
    # Redis out of memory: it refuses every write, the XADD included.
    redis.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
    redis.cli("CONFIG", "SET", "maxmemory", "1")
    try:
        a.send(("<message to='%s' type='chat' id='oom'><body>not lost</body></message>" %
                jb).encode())
        n1.wait_log(r"event=cluster\.send_failed .*Redis refused the XADD", start=mark)
    finally:
        redis.cli("CONFIG", "SET", "maxmemory", "0")
    with pytest.raises(TimeoutError):  # not delivered on f2
        next_of(b, q(NS_CLIENT, "message"), timeout=0.5)
    b.close()
    # Not in f2's stream, but stored on f1: the recipient gets it there.
    b2, _ = online(n1, ub, pb, "again")
    m = next_of(b2, q(NS_CLIENT, "message"), pred=lambda e: body_of(e) == "not lost")
    assert m.get("from") == ja, tostr(m)
    a.close()
    b2.close()
    n1.stop()
    n2.stop()


@pytest.mark.parametrize("same_worker", [True, False])
def test_a_stream_management_ack_waits_until_the_stanza_is_in_redis(redis, same_worker):
    """The sender's <a/> covers a stanza for another node only once Redis
    took it (XADD answered): Redis holds writes for 1.5 s here, and the
    ack waits as long. With --workers 2 the sender's home may be another
    worker than the recipient's (the forward's held ack is taken over)."""
    ns_sm = "urn:xmpp:sm:3"
    n1, n2 = node(redis, "h1"), node(redis, "h2")
    ua, pa, ba = account_on(uniq("ha"), "pw-a", n1)
    # Where the accounts are at home on h1: a hash of the bare JID over 2 workers.
    from harness import home_of
    ub = uniq("hb")
    while (home_of(ba, 2) == home_of("%s@%s" % (ub, DOMAIN), 2)) != same_worker:
        ub = uniq("hb")
    ub, pb, bb = account_on(ub, "pw-b", n2)
    a, ja = online(n1, ua, pa, "pa")
    b, jb = online(n2, ub, pb, "pb")
    a.send(("<enable xmlns='%s'/>" % ns_sm).encode())
    next_of(a, q(ns_sm, "enabled"))
    wait_until("h1 knows h2's session", lambda: status(n1)["replica_sessions"] == 1)
    redis.cli("CLIENT", "PAUSE", "1500", "WRITE")
    t0 = time.monotonic()
    a.send(("<message to='%s' type='chat'><body>acked late</body></message><r xmlns='%s'/>" %
            (jb, ns_sm)).encode())
    ack = next_of(a, q(ns_sm, "a"), timeout=10)
    took = time.monotonic() - t0
    assert took >= 1.0, "acked after %.2f s, before Redis took the stanza" % took
    assert ack.get("h") == "1", tostr(ack)
    m = next_of(b, q(NS_CLIENT, "message"), pred=lambda e: body_of(e) == "acked late")
    assert m.get("from") == ja
    a.close()
    b.close()
    n1.stop()
    n2.stop()


def test_a_session_the_replica_does_not_know_yet_is_found_in_the_registry(redis):
    """The replica lags Redis by the events a node has not read: a message
    for a resource it does not show asks the registry before it is taken
    for offline. Simulated with a registry entry written without its event:
    n1's replica never hears of resource `ghost`, Redis says it is on n2,
    where the message goes; n2 has no such resource and, as for any chat
    message to a gone resource, hands it to the account's session there.
    Without the lookup n1 would have stored it offline."""
    n1, n2 = node(redis, "l1"), node(redis, "l2")
    ua, pa, ba = account_on(uniq("la"), "pw-a", n1, n2)
    ub, pb, bb = account_on(uniq("lb"), "pw-b", n1, n2)
    a, ja = online(n1, ua, pa, "pa")
    b, jb = online(n2, ub, pb, "real")
    wait_until("n1 knows b's session", lambda: status(n1)["replica_sessions"] == 1)
    worker = registry(redis, bb)["real"].split()[1]
    redis.cli("HSET", "stanzad:%s:sess:%s" % (DOMAIN, bb), "ghost", "l2 %s 0 1 0" % worker)
    a.send(("<message to='%s/ghost' type='chat' id='g1'><body>found you</body></message>" %
            bb).encode())
    m = next_of(b, q(NS_CLIENT, "message"), pred=lambda e: body_of(e) == "found you")
    assert m.get("from") == ja, tostr(m)
    assert status(n1)["replica_sessions"] == 1  # the entry never reached the replica
    a.close()
    b.close()
    n1.stop()
    n2.stop()
