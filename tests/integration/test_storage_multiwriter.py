"""Several daemons writing one PostgreSQL database at the same time.

The nodes of a cluster share one database: every id and sequence number
the store hands out must stay unique, and every ordering it promises must
hold, while clients on each node write at once. Each test makes its own
database (see pgserver.py) and runs two or three daemons on it:
 - one archive written from three daemons in bursts: every message is
   archived once (unique stanza-ids and timestamps), a MAM query returns
   them all in each sender's order, and the offline copies are all
   delivered at login;
 - two accounts writing each other's archives from two daemons (each
   daemon writes both, in opposite order): both archives complete;
 - pubsub nodes created on different daemons get distinct ids, their
   items are all retrievable, also from a daemon started later, and items
   published to one node from two daemons at once get distinct sequence
   numbers.
"""
import threading
import time

import pytest

from harness import NS_CLIENT, StanzadServer, q, suite_pg, tostr, uniq
from imutil import Client
import pubsubutil as psu
from pgserver import pg_bindir
from test_mam import NS_RSM, mam, online

pytestmark = pytest.mark.skipif(pg_bindir() is None,
                                reason="needs PostgreSQL (scripts/install-deps.sh):"
                                " only a server database has several writers")

SENDERS = 3          # daemons, one sender each
BURSTS = 8
PER_BURST = 15       # messages per burst: 3 x 8 x 15 = 360, under max_offline_messages
ITEMS = 40           # items per node


def daemons(uri, n):
    out = []
    try:
        for i in range(n):
            out.append(StanzadServer(name="stanzad(shared %d)" % i, storage=uri).start())
    except BaseException:
        for s in out:
            s.stop()
        raise
    return out


def stop_all(servers):
    for s in servers:
        s.stop()


def run_together(fns):
    """Runs each fn in its own thread, released at one moment; re-raises a failure."""
    start = threading.Barrier(len(fns))
    errors = []

    def body(fn):
        try:
            start.wait(10)
            fn()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=body, args=(fn,), daemon=True) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a writer hung"
    if errors:
        raise errors[0]


def wait_count(server, sql, params, n, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        got = server.db_query(sql, params)[0][0]
        if got >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def mam_all(c):
    """Every entry of c's archive, oldest first, page by page."""
    out, after = [], None
    while True:
        inner = "<set xmlns='%s'><max>250</max>%s</set>" % (
            NS_RSM, "<after>%s</after>" % after if after else "")
        res, fin = mam(c, inner, timeout=15)
        assert res is not None, tostr(fin)
        out.extend(res)
        if fin.complete or not res:
            return out
        after = fin.last


def test_one_archive_written_from_three_daemons_at_once():
    uri = suite_pg().new_database()
    servers = daemons(uri, SENDERS)
    try:
        target = servers[0].new_account("mwt")
        senders = [online(s, s.new_account("mws")[:2]) for s in servers]

        def burst(k):
            def fn():
                c = senders[k]
                for b in range(BURSTS):
                    c.send("".join(
                        "<message to='%s' type='chat' id='%s'><body>s%d-%03d</body></message>"
                        % (target[2], uniq("m"), k, b * PER_BURST + i)
                        for i in range(PER_BURST)))
                    time.sleep(0.01)
            return fn
        run_together([burst(k) for k in range(SENDERS)])
        total = SENDERS * BURSTS * PER_BURST

        db = servers[0]
        got = wait_count(db, "SELECT count(*) FROM mam_messages WHERE username = ?",
                         (target[0],), total)
        assert got == total, "archived %d of %d" % (got, total)
        rows = db.db_query("SELECT count(*), count(DISTINCT id), count(DISTINCT ts)"
                           " FROM mam_messages WHERE username = ?", (target[0],))[0]
        assert rows == (total, total, total), rows
        assert wait_count(db, "SELECT count(*) FROM offline_messages WHERE username = ?",
                          (target[0],), total) == total
        for c in senders:
            c.close()

        # Every offline copy arrives at login, whichever daemon stored it.
        c = Client(servers[1], *target[:2])
        c.available()
        seen = []
        deadline = time.monotonic() + 30
        while len(seen) < total and time.monotonic() < deadline:
            for el in c.drain(0.3):
                body = el.findtext(q(NS_CLIENT, "body")) if el.tag == q(NS_CLIENT, "message") \
                    else None
                if body and body.startswith("s"):
                    seen.append(body)
        assert len(set(seen)) == len(seen) == total, \
            "delivered %d of %d (%d distinct)" % (len(seen), total, len(set(seen)))

        # The archive in one order, every sender's messages in the order sent.
        res = mam_all(c)
        assert len(res) == total, "MAM returned %d of %d" % (len(res), total)
        assert len({r.id for r in res}) == total
        for k in range(SENDERS):
            mine = [r.body for r in res if r.body.startswith("s%d-" % k)]
            assert mine == ["s%d-%03d" % (k, i) for i in range(BURSTS * PER_BURST)], mine[:20]
        c.close()
    finally:
        stop_all(servers)


def test_two_accounts_writing_each_others_archives_from_two_daemons():
    """Each message goes into two archives, sender's then recipient's: two
    daemons writing them in opposite order at once may wait for each
    other (a deadlock PostgreSQL breaks); nothing is lost either way."""
    uri = suite_pg().new_database()
    servers = daemons(uri, 2)
    try:
        x = servers[0].new_account("mwx")
        y = servers[1].new_account("mwy")
        cx, cy = online(servers[0], x[:2]), online(servers[1], y[:2])
        n = BURSTS * PER_BURST

        def talk(c, to, tag):
            def fn():
                for b in range(BURSTS):
                    c.send("".join(
                        "<message to='%s' type='chat' id='%s'><body>%s-%03d</body></message>"
                        % (to, uniq("m"), tag, b * PER_BURST + i) for i in range(PER_BURST)))
                    time.sleep(0.005)
            return fn
        run_together([talk(cx, y[2], "x"), talk(cy, x[2], "y")])
        db = servers[0]
        for who in (x, y):
            got = wait_count(db, "SELECT count(*) FROM mam_messages WHERE username = ?",
                             (who[0],), 2 * n)
            assert got == 2 * n, "%s: archived %d of %d" % (who[0], got, 2 * n)
            rows = db.db_query("SELECT count(DISTINCT id), count(DISTINCT ts)"
                               " FROM mam_messages WHERE username = ?", (who[0],))[0]
            assert rows == (2 * n, 2 * n), rows
        for c, tag in ((cx, "x"), (cy, "y")):
            res = mam_all(c)
            assert len(res) == 2 * n, len(res)
            for t in ("x", "y"):
                mine = [r.body for r in res if r.body.startswith(t + "-")]
                assert mine == ["%s-%03d" % (t, i) for i in range(n)], (tag, mine[:10])
        cx.close()
        cy.close()
    finally:
        stop_all(servers)


def test_pubsub_nodes_and_items_from_several_daemons():
    uri = suite_pg().new_database()
    servers = daemons(uri, 3)
    late = None
    try:
        clients = [Client(s, *s.new_account("mwp")[:2]) for s in servers]
        nodes = [uniq("mwnode") for _ in servers]
        for c, node in zip(clients, nodes):
            r = psu.create(c, node, config={"pubsub#max_items": "1000",
                                            "pubsub#publish_model": "open"})
            assert r.get("type") == "result", tostr(r)

        def publisher(k):
            def fn():
                for i in range(ITEMS):
                    psu.ok(psu.publish(clients[k], nodes[k],
                                       "<entry xmlns='urn:test'>%d-%d</entry>" % (k, i),
                                       item_id="it%03d" % i))
            return fn
        run_together([publisher(k) for k in range(len(servers))])

        db = servers[0]
        assert db.db_query("SELECT count(*), count(DISTINCT id) FROM pubsub_nodes"
                           " WHERE node IN (?, ?, ?)", tuple(nodes))[0] == (3, 3)
        for k, node in enumerate(nodes):
            got = psu.items_of(psu.get_items(clients[k], node))
            assert [i for i, _ in got] == ["it%03d" % i for i in range(ITEMS)], got[:5]
            assert [p.text for _, p in got] == ["%d-%d" % (k, i) for i in range(ITEMS)]

        # A daemon started now loads all three nodes with their items...
        late = StanzadServer(name="stanzad(shared late)", storage=uri).start()
        lc = Client(late, *late.new_account("mwl")[:2])
        for k, node in enumerate(nodes):
            got = psu.items_of(psu.get_items(lc, node))
            assert [i for i, _ in got] == ["it%03d" % i for i in range(ITEMS)], (node, got[:5])
        # ...and a node of its own gets an id no other daemon uses.
        own = uniq("mwnode")
        psu.ok(psu.create(lc, own))
        assert db.db_query("SELECT count(DISTINCT id) FROM pubsub_nodes")[0][0] == 4

        # One node written from its creator's daemon and the late one at once:
        # the store numbers the items, so they stay in one order.
        owner = clients[0]

        def more(c, tag):
            def fn():
                for i in range(30):
                    psu.ok(psu.publish(c, nodes[0], "<entry xmlns='urn:test'>%s%d</entry>"
                                       % (tag, i), item_id="%s%03d" % (tag, i)))
            return fn
        run_together([more(owner, "a"), more(lc, "l")])
        node_id = db.db_query("SELECT id FROM pubsub_nodes WHERE node = ?", (nodes[0],))[0][0]
        assert db.db_query("SELECT count(*), count(DISTINCT seq) FROM pubsub_items"
                           " WHERE node_id = ?", (node_id,))[0] == (ITEMS + 60, ITEMS + 60)
        got = [i for i, _ in psu.items_of(psu.get_items(lc, nodes[0]))]
        assert len(got) == ITEMS + 60, len(got)
        for tag in ("a", "l"):
            assert [i for i in got if i.startswith(tag)] == ["%s%03d" % (tag, i)
                                                           for i in range(30)]
        for c in clients + [lc]:
            c.close()
    finally:
        stop_all(servers + ([late] if late else []))
