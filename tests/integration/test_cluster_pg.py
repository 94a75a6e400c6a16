"""Cluster mode on one shared PostgreSQL store (docs/clustering.md, "The
shared store"): three nodes on ONE database and one Redis. Accounts
created once are usable on every node; messages, subscriptions (with
their roster pushes), presence broadcasts and probes cross nodes; a node
killed with SIGKILL loses no stanza the cluster acknowledged (delivered
before the kill, or offline for the recipient's next node); its contacts
get the unavailable presence its sessions would have sent; and a
PostgreSQL restart under a running cluster fails storage requests for a
while, then everything works again with nothing acknowledged lost."""
import os
import re
import subprocess
import threading
import time

import pytest

from harness import DOMAIN, NS_CLIENT, StanzadServer, home_of, login, q, suite_pg, tostr, uniq
from imutil import Client, error_condition, items
from pgserver import PgServer, pg_bindir
from redisserver import REDIS_SERVER, RedisServer
from test_cluster import DEAD_WITHIN, TTL_MS, body_of, next_of, status, wait_until

NS_SM = "urn:xmpp:sm:3"
NS_PRIVATE = "jabber:iq:private"

pytestmark = [
    pytest.mark.skipif(not os.access(REDIS_SERVER, os.X_OK),
                       reason="no redis-server (scripts/install-deps.sh test)"),
    pytest.mark.skipif(pg_bindir() is None, reason="PostgreSQL is not installed"),
]

_nodes = []


@pytest.fixture
def redis():
    r = RedisServer().start()
    yield r
    while _nodes:
        s = _nodes.pop()
        if s.alive():
            s.kill()
    r.cleanup()


@pytest.fixture
def pg():
    """A PostgreSQL of the test's own (some tests stop it)."""
    p = PgServer().start()
    yield p
    p.stop()


def node(redis, uri, name, *extra):
    s = StanzadServer(["--cluster", redis.uri, "--node-name", name,
                       "--cluster-ttl", str(TTL_MS), "--workers", "2"] + list(extra),
                      name="stanzad(%s)" % name, suite_args=False, storage=uri)
    _nodes.append(s)
    return s.start()


def cluster(redis, uri, *names):
    nodes = [node(redis, uri, n) for n in names]
    for s in nodes:
        wait_until("%s joined" % s.name, lambda: status(s)["state"] == "connected")
    return nodes


def account(s):
    """Created once, through one node: the store is shared."""
    user = uniq("u")
    s.add_user(user, "pw-" + user)
    return user, "pw-" + user, "%s@%s" % (user, DOMAIN)


def im(s, acct, resource, status=None):
    c = Client(s, acct[0], acct[1], resource=resource)
    c.roster_get()
    c.available(status=status)
    c.presence("", c.full)
    return c


def replicated(s, n):
    wait_until("%s sees %d sessions elsewhere" % (s.name, n),
               lambda: status(s)["replica_sessions"] >= n)


def subscribe(a, b):
    """a subscribes to b's presence across nodes; b approves. Both sides'
    roster pushes and presences are checked on the way."""
    a.send("<presence type='subscribe' to='%s'/>" % b.bare)
    it = a.push(b.bare)
    assert it.get("ask") == "subscribe", tostr(it)
    b.presence("subscribe", a.bare, timeout=10)
    b.send("<presence type='subscribed' to='%s'/>" % a.bare)
    it = b.push(a.bare)
    assert it.get("subscription") == "from", tostr(it)
    it = a.push(b.bare, timeout=10)
    assert it.get("subscription") == "to", tostr(it)
    a.presence("subscribed", b.bare, timeout=10)
    # b's server sends b's current presence to its new subscriber.
    a.presence("", b.full, timeout=10)


def test_three_nodes_share_accounts_messages_subscriptions_and_presence(redis):
    uri = suite_pg().new_database()
    n1, n2, n3 = cluster(redis, uri, "s1", "s2", "s3")
    A, B, C = account(n1), account(n1), account(n1)
    a, b, c = im(n1, A, "ra"), im(n2, B, "rb"), im(n3, C, "rc")
    for s in (n1, n2, n3):
        replicated(s, 2)
    # Messages between every pair of nodes, to full and bare JIDs.
    for (x, y, how) in ((a, b, "full"), (b, c, "bare"), (c, a, "full"), (a, c, "bare")):
        to = y.full if how == "full" else y.bare
        x.send("<message to='%s' type='chat'><body>%s to %s %s</body></message>" %
               (to, x.user, y.user, how))
        m = y.message(timeout=10, body="%s to %s %s" % (x.user, y.user, how))
        assert m.get("from") == x.full, tostr(m)
    # Subscriptions cross nodes: a (s1) to b (s2), and b to c (s3).
    subscribe(a, b)
    subscribe(b, c)
    # The rosters are in the one store: every node reads the same ones.
    peek = Client(n3, A[0], A[1], resource="peek")
    r = items(peek.roster_get())
    assert r[b.bare].get("subscription") == "to", tostr(r[b.bare])
    peek.close()
    # Presence broadcast: b's change reaches its subscriber a on s1.
    b.available(status="b moved")
    pr = a.wait(lambda el: el.tag == q(NS_CLIENT, "presence") and
                el.findtext(q(NS_CLIENT, "status")) == "b moved", timeout=10)
    assert pr.get("from") == b.full, tostr(pr)
    # Probes: a second session of a, on s3, is told where b is (s2) and how.
    a2 = Client(n3, A[0], A[1], resource="ra2")
    a2.roster_get()
    a2.available()
    pr = a2.presence("", b.bare, timeout=10)
    assert pr.get("from") == b.full and pr.findtext(q(NS_CLIENT, "status")) == "b moved", \
        tostr(pr)
    # b leaves: unavailable to a, on s1.
    b.close_cleanly()
    a.presence("unavailable", b.full, timeout=10)
    # An offline message written on s1 is read on s2 (one store).
    a.send("<message to='%s' type='chat'><body>while away</body></message>" % B[2])
    wait_until("stored offline", lambda: n1.db_query(
        "SELECT count(*) FROM offline_messages WHERE username = ?", (B[0],))[0][0] >= 1)
    b2 = im(n2, B, "back")
    b2.message(timeout=10, body="while away")
    for x in (a, a2, c, b2):
        x.close()
    for s in (n1, n2, n3):
        s.stop()


def sm_client(s, acct, resource):
    st, jid = login(s.c2s_port, acct[0], acct[1], resource=resource)
    st.send(b"<presence/>")
    st.send(("<enable xmlns='%s'/>" % NS_SM).encode())
    next_of(st, q(NS_SM, "enabled"))
    return st, jid


class Reader(threading.Thread):
    """Collects the message bodies a stream receives until it closes."""

    def __init__(self, st):
        super().__init__(daemon=True)
        self.st = st
        self.bodies = []
        self.stop = False

    def run(self):
        deadline = time.monotonic() + 120
        while not self.stop and time.monotonic() < deadline:
            try:
                el = self.st.next(0.2)
            except TimeoutError:
                continue
            except Exception:
                return  # closed: the node was killed
            if el.tag == q(NS_CLIENT, "message") and body_of(el):
                self.bodies.append(body_of(el))


def offline_bodies(s, acct, resource, want, timeout=20):
    """The bodies a new session of acct gets from offline storage (until
    every wanted one came, or nothing more arrives)."""
    c = Client(s, acct[0], acct[1], resource=resource)
    c.send("<presence/>")
    got = []
    deadline = time.monotonic() + timeout
    quiet_until = time.monotonic() + 3
    while time.monotonic() < min(deadline, quiet_until) and not want <= set(got):
        try:
            el = c.s.next(0.3)
        except TimeoutError:
            continue
        if el.tag == q(NS_CLIENT, "message") and body_of(el):
            got.append(body_of(el))
            quiet_until = time.monotonic() + 3
    c.close()
    return got


def test_a_node_killed_mid_stream_loses_no_acknowledged_message(redis):
    """a (k1, stream management) sends numbered messages to b (k2); k2 is
    killed mid-stream. Everything k1 acknowledged to a was received by b
    before the kill or reaches b from offline storage on k3."""
    uri = suite_pg().new_database()
    n1, n2, n3 = cluster(redis, uri, "k1", "k2", "k3")
    A, B = account(n1), account(n1)
    a, ja = sm_client(n1, A, "ra")
    b, jb = login(n2.c2s_port, B[0], B[1], resource="rb")
    b.send(b"<presence/>")
    replicated(n1, 1)
    reader = Reader(b)
    reader.start()
    total, acked, killed = 400, 0, False
    for i in range(1, total + 1):
        a.send(("<message to='%s' type='chat'><body>n%d</body></message>" % (B[2], i)).encode())
        if i % 10 == 0:
            a.send(("<r xmlns='%s'/>" % NS_SM).encode())
            acked = max(acked, int(next_of(a, q(NS_SM, "a"), timeout=10).get("h")))
        if not killed and len(reader.bodies) >= 100:
            n2.kill()
            killed = True
        time.sleep(0.002)
    assert killed, "b received only %d messages" % len(reader.bodies)
    a.send(("<r xmlns='%s'/>" % NS_SM).encode())
    acked = max(acked, int(next_of(a, q(NS_SM, "a"), timeout=10).get("h")))
    assert acked == total, acked  # Redis took every one
    # Reaped by k1 or k3, whichever wins the reap lock.
    wait_until("k2 reaped", lambda: any(re.search(r"event=cluster\.node_reaped name=k2",
                                                  s.log_text()) for s in (n1, n3)),
               timeout=DEAD_WITHIN + 5)
    # Every entry of k2's streams routed again (stored offline) and the
    # streams deleted: b's next login finds them all.
    wait_until("k2's streams handled", lambda: redis.cli(
        "KEYS", "stanzad:%s:in:k2:*" % DOMAIN).split() == [], timeout=10)
    reader.stop = True
    reader.join(5)
    before = set(reader.bodies)
    want = {"n%d" % i for i in range(1, acked + 1)}
    after = offline_bodies(n3, B, "again", want - before)
    missing = sorted(want - before - set(after), key=lambda x: int(x[1:]))
    assert not missing, "lost %d of %d acked (%d before the kill, %d offline): %s; %s %s" % (
        len(missing), acked, len(before), len(after), missing[:20],
        [status(s)["stanzas"] for s in (n1, n3)], n1.db_query(
            "SELECT count(*) FROM offline_messages WHERE username = ?", (B[0],)))
    a.close()
    n1.stop()
    n3.stop()


def test_an_entry_stays_in_the_stream_until_its_offline_write_committed(redis, pg):
    """The receiving node's offline write is held (the table locked) when
    it is killed: the entry was not acknowledged in its stream, so the
    node that reaps it stores it again, and the recipient gets it."""
    uri = pg.new_database()
    n1, n2 = cluster(redis, uri, "w1", "w2")
    A, B = account(n1), account(n1)
    wait_until("w2 reads its streams", lambda: int(redis.cli(
        "EXISTS", "stanzad:%s:in:w2:0" % DOMAIN).strip() or 0) == 1)
    db = uri.rsplit("/", 1)[1]
    # The offline table locked: w2's write of the stanza below waits.
    psql = subprocess.Popen(pg._cmd([os.path.join(pg.bindir, "psql"), "-X", "-q", "-A", "-t",
                                     "-h", "127.0.0.1", "-p", str(pg.port), "-U", pg.user,
                                     "-d", db]),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=pg._env())
    try:
        psql.stdin.write("BEGIN; LOCK TABLE offline_messages IN EXCLUSIVE MODE; "
                         "SELECT 'locked';\n")
        psql.stdin.flush()
        assert psql.stdout.readline().strip() == "locked"
        # A stanza for b (offline everywhere) in w2's stream (its home worker's),
        # as another node writes it.
        key = "stanzad:%s:in:w2:%d" % (DOMAIN, home_of(B[2], 2))
        payload = ("<message xmlns='jabber:client' from='%s/ra' to='%s' type='chat'>"
                   "<body>held write</body></message>" % (A[2], B[2]))
        redis.cli("XADD", key, "*", "kind", "stanza", "node", "w1", "local", "1", "ts",
                  str(int(time.time() * 1000)), "from", A[2] + "/ra", "to", B[2],
                  "payload", payload)
        # Read by w2 and routed, its write waiting: pending, not acknowledged.
        wait_until("w2 read the entry", lambda: redis.cli(
            "XINFO", "GROUPS", key).split().count("entries-read") and
            redis.cli("XINFO", "GROUPS", key).split()[
                redis.cli("XINFO", "GROUPS", key).split().index("entries-read") + 1] == "1")
        time.sleep(0.5)
        pending = redis.cli("XPENDING", key, "g").split()
        assert pending and pending[0] == "1", pending
        n2.kill()
    finally:
        psql.stdin.write("ROLLBACK;\n")
        psql.stdin.close()
        psql.wait(10)
    n1.wait_log(r"event=cluster\.node_reaped name=w2", timeout=DEAD_WITHIN + 5)
    b = Client(n1, B[0], B[1], resource="next")
    b.send("<presence/>")
    m = b.message(timeout=10, body="held write")
    assert m.get("from") == A[2] + "/ra", tostr(m)
    b.close()
    n1.stop()


def test_contacts_get_unavailable_from_a_killed_nodes_sessions(redis):
    uri = suite_pg().new_database()
    n1, n2 = cluster(redis, uri, "u1", "u2")
    A, B = account(n1), account(n1)
    a, b = im(n1, A, "ra"), im(n2, B, "rb")
    replicated(n1, 1)
    replicated(n2, 1)
    subscribe(a, b)
    a.drain(0.2)
    t0 = time.monotonic()
    n2.kill()
    pr = a.presence("unavailable", b.full, timeout=DEAD_WITHIN + 3)
    took = time.monotonic() - t0
    assert pr.get("from") == b.full, tostr(pr)
    assert took < DEAD_WITHIN + 2, took
    # The reaper read b's roster from the store: one contact with From.
    n1.wait_log(r"event=presence\.gone jid=%s contacts=1" % re.escape(b.full))
    a.close()
    n1.stop()


def private_set(c, ns, text):
    return c.iq("set", "<query xmlns='%s'><x xmlns='%s'>%s</x></query>" % (NS_PRIVATE, ns, text))


def test_a_postgresql_restart_under_a_running_cluster(redis, pg):
    uri = pg.new_database()
    n1, n2 = cluster(redis, uri, "r1", "r2")
    A, B, C = account(n1), account(n1), account(n1)
    a, b = im(n1, A, "ra"), im(n2, B, "rb")
    replicated(n1, 1)
    # Stored (and acknowledged) before the outage.
    a.send("<message to='%s' type='chat'><body>before</body></message>" % C[2])
    db = uri.rsplit("/", 1)[1]
    wait_until("stored offline", lambda: pg.psql(
        "SELECT count(*) FROM offline_messages WHERE username = '%s'" % C[0], db=db,
        rows=True)[0][0] == 1)
    pg.pause()
    try:
        r = private_set(a, "urn:test:pg", "during")
        assert error_condition(r)[1] in ("internal-server-error", "resource-constraint"), \
            tostr(r)
        r = private_set(b, "urn:test:pg", "during")
        assert error_condition(r)[1] in ("internal-server-error", "resource-constraint"), \
            tostr(r)
        # Between sessions, nothing needs the store: still delivered across nodes.
        a.send("<message to='%s' type='chat'><body>during</body></message>" % b.full)
        b.message(timeout=10, body="during")
        # An offline write that fails is answered with an error, not dropped silently.
        a.send("<message to='%s' type='chat' id='off1'><body>lost?</body></message>" % C[2])
        e = a.wait(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("id") == "off1",
                   timeout=15)
        assert error_condition(e)[1] in ("internal-server-error", "resource-constraint"), \
            tostr(e)
    finally:
        pg.resume()
    deadline = time.monotonic() + 20
    while True:
        r = private_set(b, "urn:test:pg", "after")
        if r.get("type") == "result" or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert r.get("type") == "result", tostr(r)
    wait_until("r1's store is back", lambda: private_set(a, "urn:test:pg", "after").get(
        "type") == "result", timeout=20)
    # Across nodes again, and offline storage on the shared store.
    b.send("<message to='%s' type='chat'><body>after</body></message>" % a.full)
    a.message(timeout=10, body="after")
    b.send("<message to='%s' type='chat'><body>after offline</body></message>" % C[2])
    c = Client(n2, C[0], C[1], resource="rc")
    c.send("<presence/>")
    got = set()
    deadline = time.monotonic() + 10
    while not {"before", "after offline"} <= got and time.monotonic() < deadline:
        got.add(body_of(c.message(timeout=max(0.1, deadline - time.monotonic()))))
    assert {"before", "after offline"} <= got, got
    for x in (a, b, c):
        x.close()
    n1.stop()
    n2.stop()
