"""The store on PostgreSQL (--storage postgresql://...).

Runs in every suite (it starts its own throwaway PostgreSQL, see
pgserver.py), so that what only PostgreSQL does is checked whichever store
the rest of the suite uses: two daemons sharing one database, the schema
checks at startup, a server that goes away and comes back, a URI that does
not work, and a password from a passfile.
"""
import os
import socket
import subprocess
import threading
import time

import pytest

from harness import BUILD, STANZACTL, STANZAD, StanzadServer, q, suite_pg, tostr, uniq
from imutil import Client, error_condition, items
import pubsubutil as psu
from pgserver import PASSWORD, PASSWORD_USER, PgServer, pg_bindir
from test_mam import bodies, mam, online
from test_muc import create as room_create, features, new_room, say, wait_body

pytestmark = pytest.mark.skipif(pg_bindir() is None, reason="PostgreSQL is not installed")

NS_PRIVATE = "jabber:iq:private"


def run_daemon(*args, env=None, timeout=30):
    """Starts a daemon that is expected to fail at once; (status, output, seconds)."""
    t0 = time.monotonic()
    r = subprocess.run([STANZAD, "--listen-c2s", "127.0.0.1:0", "--listen-c2s-tls", "off",
                        "--listen-http", "off"] + list(args), capture_output=True, text=True,
                       timeout=timeout, env=env)
    return r.returncode, r.stdout + r.stderr, time.monotonic() - t0


def stanzactl(*args, env=None, stdin=None):
    return subprocess.run([STANZACTL] + list(args), capture_output=True, text=True, timeout=30,
                          env=env, input=stdin)


def wait_rows(server, sql, params, n, timeout=5):
    deadline = time.monotonic() + timeout
    while True:
        got = server.db_query(sql, params)[0][0]
        if got >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def private_set(c, ns, text):
    return c.iq("set", "<query xmlns='%s'><x xmlns='%s'>%s</x></query>" % (NS_PRIVATE, ns, text))


def private_get(c, ns):
    r = c.iq("get", "<query xmlns='%s'><x xmlns='%s'/></query>" % (NS_PRIVATE, ns))
    assert r.get("type") == "result", tostr(r)
    return r.findtext("%s/{%s}x" % (q(NS_PRIVATE, "query"), ns))


def test_a_second_daemon_reads_what_the_first_wrote():
    """Two nodes, one database: everything one daemon stored (accounts,
    roster, offline message, archive, pubsub item, persistent room) is
    there for another daemon with its own state directory."""
    uri = suite_pg().new_database()
    a = StanzadServer(name="stanzad(pg first)", storage=uri).start()
    try:
        alice = a.new_account("pga")
        bob = a.new_account("pgb")
        carol = a.new_account("pgc")
        ca, cb = online(a, alice[:2]), online(a, bob[:2])
        r = ca.roster_set(bob[2], name="Bob", groups=("friends",))
        assert r.get("type") == "result", tostr(r)
        ca.send("<message to='%s' type='chat' id='m1'><body>archived hello</body></message>"
                % bob[2])
        cb.message(body="archived hello")
        ca.send("<message to='%s' type='chat' id='m2'><body>while you were away</body></message>"
                % carol[2])
        node = uniq("node")
        assert psu.ok(psu.create(ca, node))
        assert psu.ok(psu.publish(ca, node, "<entry xmlns='urn:test'>kept item</entry>",
                                  item_id="i1"))
        room = new_room()
        room_create(ca, room, name="Kept", persistent=True)
        say(ca, room, "said in the room")
        wait_body(ca, room, "said in the room")
        assert wait_rows(a, "SELECT count(*) FROM offline_messages WHERE username = ?",
                         (carol[0],), 1) == 1
        assert wait_rows(a, "SELECT count(*) FROM mam_messages WHERE username = ?",
                         (bob[0],), 1) >= 1
        ca.close()
        cb.close()
    finally:
        a.stop()

    b = StanzadServer(name="stanzad(pg second)", storage=uri).start()
    try:
        b.wait_log(r"event=server\.start .*storage=\"?postgresql://")
        ca = Client(b, *alice[:2])
        roster = items(ca.roster_get())
        assert roster[bob[2]].get("name") == "Bob", tostr(roster[bob[2]])
        got = psu.items_of(psu.get_items(ca, node))
        assert [i for i, _ in got] == ["i1"] and got[0][1].text == "kept item", got
        info = ca.iq("get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", to=room)
        assert info.get("type") == "result", tostr(info)
        assert "muc_persistent" in features(info), tostr(info)
        cc = online(b, carol[:2])
        cc.message(body="while you were away")
        cbb = online(b, bob[:2])
        res, fin = mam(cbb)
        assert "archived hello" in bodies(res), bodies(res)
        for c in (ca, cc, cbb):
            c.close()
    finally:
        b.stop()


def test_a_newer_schema_and_a_foreign_database_are_refused():
    pg = suite_pg()
    uri = pg.new_database()
    r = stanzactl("--storage", uri, "user", "list")
    assert r.returncode == 0, r.stderr
    db = uri.rsplit("/", 1)[1]
    latest = pg.psql("SELECT version FROM stanzad_schema", db=db).strip()
    pg.psql("UPDATE stanzad_schema SET version = 999", db=db)
    rc, out, _ = run_daemon("--storage", uri, "--state-dir", "/tmp/stanzad-pg-unused")
    assert rc == 1, out
    assert "schema version 999 is newer than this build supports (%s)" % latest in out, out
    r = stanzactl("--storage", uri, "user", "list")
    assert r.returncode == 1 and "newer than this build" in r.stderr, r.stderr

    other = pg.new_database()
    pg.psql("CREATE TABLE invoices (id integer)", db=other.rsplit("/", 1)[1])
    rc, out, _ = run_daemon("--storage", other, "--state-dir", "/tmp/stanzad-pg-unused")
    assert rc == 1 and "not a stanzad one" in out, out
    # Refused before anything was created in it.
    assert pg.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
                   db=other.rsplit("/", 1)[1]).strip() == "1"


def test_a_wrong_uri_fails_at_once_with_a_clear_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    rc, out, secs = run_daemon("--storage", "postgresql://someone:hunter2@127.0.0.1:%d/x" % closed,
                               "--state-dir", str(tmp_path / "s"))
    assert rc == 1, out
    lines = [l for l in out.splitlines() if "cannot open storage in" in l]
    assert len(lines) == 1, out
    assert "postgresql://someone:***@127.0.0.1:%d/x" % closed in lines[0], lines[0]
    assert "hunter2" not in out
    assert secs < 10

    # A server that accepts but never answers: connect_timeout, not a hang.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)
    held = []
    stop = threading.Event()

    def hold():
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except OSError:
                pass
    t = threading.Thread(target=hold, daemon=True)
    t.start()
    try:
        port = silent.getsockname()[1]
        rc, out, secs = run_daemon("--storage",
                                   "postgresql://someone@127.0.0.1:%d/x?connect_timeout=2" % port,
                                   "--state-dir", str(tmp_path / "s2"))
        assert rc == 1 and "cannot open storage in" in out, out
        assert secs < 10, "took %.1f s" % secs
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        silent.close()

    rc, out, _ = run_daemon("--storage", "mysql://x", "--state-dir", str(tmp_path / "s3"))
    assert rc != 0 and "storage must be sqlite or a postgresql:// URI" in out, out


def test_password_from_a_passfile(tmp_path):
    pg = suite_pg()
    uri = pg.new_database(owner=PASSWORD_USER)
    env = dict(os.environ)
    env.pop("PGPASSFILE", None)
    env["HOME"] = str(tmp_path)  # no ~/.pgpass of ours
    r = stanzactl("--storage", uri, "user", "list", env=env)
    assert r.returncode == 1 and "password" in r.stderr, r.stderr
    passfile = tmp_path / "pgpass"
    passfile.write_text("127.0.0.1:%d:*:%s:%s\n" % (pg.port, PASSWORD_USER, PASSWORD))
    passfile.chmod(0o600)
    env["PGPASSFILE"] = str(passfile)
    r = stanzactl("--storage", uri, "user", "add", "pwuser1", env=env, stdin="secret-1\n")
    assert r.returncode == 0, r.stderr
    r = stanzactl("--storage", uri, "user", "list", env=env)
    assert r.returncode == 0 and r.stdout.split() == ["pwuser1"], r.stdout + r.stderr
    # A password in the URI works too, and is never shown.
    bad = uri.replace("%s@" % PASSWORD_USER, "%s:wrong-pw@" % PASSWORD_USER)
    env.pop("PGPASSFILE")
    r = stanzactl("--storage", bad, "user", "list", env=env)
    assert r.returncode == 1 and "wrong-pw" not in r.stderr and "***" in r.stderr, r.stderr
    good = uri.replace("%s@" % PASSWORD_USER, "%s:%s@" % (PASSWORD_USER, PASSWORD))
    srv = StanzadServer(name="stanzad(pg password)", storage=good).start()
    try:
        srv.wait_log(r"event=server\.start .*storage=\"?postgresql://%s:\*\*\*@" % PASSWORD_USER)
        assert PASSWORD not in srv.log_text()
        # stanzactl reads the storage key from the daemon's config file.
        conf = tmp_path / "stanzad.conf"
        conf.write_text("state_dir = %s\nstorage = %s\n" % (srv.state_dir, good))
        r = stanzactl("--config", str(conf), "user", "list", env=env)
        assert r.returncode == 0 and r.stdout.split() == ["pwuser1"], r.stdout + r.stderr
    finally:
        srv.stop()


def test_nodes_starting_together_migrate_once():
    """Several processes open one empty database at the same moment: the
    advisory lock lets one of them migrate, the others wait and find the
    schema done; none fails."""
    pg = suite_pg()
    uri = pg.new_database()
    procs = [subprocess.Popen([STANZACTL, "--storage", uri, "user", "list"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(6)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    db = uri.rsplit("/", 1)[1]
    r = stanzactl("--storage", uri, "user", "list")
    assert r.returncode == 0, r.stderr
    rows = pg.psql("SELECT one, version FROM stanzad_schema", db=db, rows=True)
    assert len(rows) == 1 and rows[0][1] >= 9, rows


def test_server_outage_fails_requests_then_recovers(tmp_path):
    """PostgreSQL stopped under a running daemon: requests that need the
    store get an error (not a hang, not a crash), storage.down is logged
    once; once it is back the next requests work (storage.up) and what was
    committed before is all there."""
    pg = PgServer().start()  # its own cluster: this test stops it
    srv = None
    try:
        srv = StanzadServer(name="stanzad(pg outage)", storage=pg.new_database(),
                            extra_args=["--log-level", "info"])
        srv.log_level = None
        srv.start()
        user, pw, _ = srv.new_account("out")
        c = Client(srv, user, pw)
        r = private_set(c, "urn:test:before", "kept")
        assert r.get("type") == "result", tostr(r)
        mark = srv.log_size()
        pg.pause()
        errors = []
        for i in range(3):
            r = private_set(c, "urn:test:during", "lost %d" % i)
            assert r.get("type") == "error", tostr(r)
            errors.append(error_condition(r))
        assert all(e[1] in ("internal-server-error", "resource-constraint") for e in errors), \
            errors
        srv.wait_log(r"event=storage\.down", start=mark)
        assert srv.log_text(mark).count("event=storage.down") == 1, srv.log_tail(40, mark)
        pg.resume()
        deadline = time.monotonic() + 15
        while True:
            r = private_set(c, "urn:test:after", "back")
            if r.get("type") == "result" or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert r.get("type") == "result", tostr(r)
        srv.wait_log(r"event=storage\.up", start=mark)
        assert private_get(c, "urn:test:before") == "kept"
        assert private_get(c, "urn:test:after") == "back"
        assert srv.alive()
        c.close()
        # stanzactl works against the server that came back, and the daemon
        # still serves logins (accounts read from the store).
        c = Client(srv, user, pw)
        c.close()
        srv.stop()
        srv = None
    finally:
        if srv is not None and srv.alive():
            srv._kill()
        pg.stop()


@pytest.mark.parametrize("name", ["test_db", "test_account_store"])
def test_unit_tests_of_the_store_pass_on_postgresql(name):
    """C unit tests of the driver layer and of the per-account stores, run
    again on a fresh PostgreSQL database (STANZAD_TEST_PG_DSN)."""
    binary = os.path.join(BUILD, "tests", name)
    if not os.access(binary, os.X_OK):
        pytest.skip("no %s (make unit builds it)" % binary)
    env = dict(os.environ, STANZAD_TEST_PG_DSN=suite_pg().new_database())
    r = subprocess.run([binary], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    # Two groups ran: SQLite, then PostgreSQL.
    assert (r.stdout + r.stderr).count("[==========] Running") == 2, r.stdout + r.stderr
