"""Durability under faults (README "Durability"): what the server
acknowledged survives a SIGKILL under load; a full disk or a read-only
state directory gives clear errors and never a corrupt store.

The tmpfs tests mount small filesystems and skip where mounting is not
allowed (not root, no tmpfs)."""
import os
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from harness import (DOMAIN, skip_on_postgresql, NS_CLIENT, NS_REGISTER, STANZAD, RawStream, StanzadServer,
                     StreamClosed, login, q, register_inband, tostr, uniq, xml_escape)
from imutil import Client

NS_SM = "urn:xmpp:sm:3"
NS_ROSTER = "jabber:iq:roster"


# --------------------------------------------------------------------------
# SIGKILL under load
# --------------------------------------------------------------------------

class Load:
    """Threads that keep the server busy and record what it acknowledged."""

    def __init__(self, srv):
        self.srv = srv
        self.stop = threading.Event()
        self.acked_msgs = {}      # recipient -> [bodies acknowledged by <a h/>]
        self.acked_roster = []    # contacts whose roster set got its result
        self.acked_accounts = []  # (user, password) whose registration got its result
        self.errors = []

    def sender(self, user, pw, rcpt_jid, tag):
        acked = self.acked_msgs.setdefault(rcpt_jid, [])
        try:
            s, _ = login(self.srv.c2s_port, user, pw)
            s.send("<enable xmlns='%s'/>" % NS_SM)
            s.expect(q(NS_SM, "enabled"))
            sent = []
            while not self.stop.is_set():
                for _ in range(5):
                    body = "%s-%d" % (tag, len(sent))
                    s.send("<message to='%s' type='chat'><body>%s</body></message>"
                           % (rcpt_jid, body))
                    sent.append(body)
                s.send("<r xmlns='%s'/>" % NS_SM)
                while True:
                    el = s.next(5)
                    if el.tag == q(NS_SM, "a"):
                        h = int(el.get("h"))
                        acked[:] = sent[:h]
                        break
        except (StreamClosed, OSError, TimeoutError, AssertionError):
            pass  # the kill ends it
        except Exception as e:  # noqa: B902 - report anything else
            self.errors.append(repr(e))

    def roster(self, user, pw):
        try:
            c = Client(self.srv, user, pw)
            n = 0
            while not self.stop.is_set():
                contact = "contact%d@%s" % (n, DOMAIN)
                el = c.roster_set(contact, name="n%d" % n)
                if el.get("type") == "result":
                    self.acked_roster.append(contact)
                n += 1
        except (StreamClosed, OSError, TimeoutError, AssertionError):
            pass
        except Exception as e:  # noqa: B902
            self.errors.append(repr(e))

    def registrar(self):
        try:
            while not self.stop.is_set():
                user, pw = uniq("reg"), "pw-" + uniq("x")
                register_inband(self.srv.c2s_port, user, pw)
                self.acked_accounts.append((user, pw))
        except (StreamClosed, OSError, TimeoutError, AssertionError):
            pass
        except Exception as e:  # noqa: B902
            self.errors.append(repr(e))


def collect_offline(srv, user, pw, want):
    """Logs in, becomes available, returns the bodies that arrive."""
    s, _ = login(srv.c2s_port, user, pw)
    got = []
    try:
        s.send("<presence/>")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                el = s.next(1.5)
            except TimeoutError:
                if len(got) >= want:
                    break
                continue
            if el.tag == q(NS_CLIENT, "message"):
                got.append(el.findtext(q(NS_CLIENT, "body")))
    finally:
        s.close()
    return got


def test_sigkill_under_load_loses_nothing_acknowledged(make_server):
    srv = make_server("--max-offline-messages", "100000")
    senders = [srv.new_account("snd") for _ in range(3)]
    rcpts = [srv.new_account("rcv") for _ in range(3)]
    ruser, rpw, _ = srv.new_account("rost")
    load = Load(srv)
    threads = [threading.Thread(target=load.sender, args=(u, p, rcpts[i][2], "s%d" % i))
               for i, (u, p, _) in enumerate(senders)]
    threads.append(threading.Thread(target=load.roster, args=(ruser, rpw)))
    threads.append(threading.Thread(target=load.registrar))
    for t in threads:
        t.start()
    # Under load for at least 2 s and until each kind of write was
    # acknowledged a few times (slow machines, e.g. the kernel lab's
    # emulated CPU, need longer to log the clients in).
    start = time.time()
    while time.time() - start < 60:
        enough = (sum(len(v) for v in list(load.acked_msgs.values())) > 40
                  and load.acked_roster and load.acked_accounts)
        if enough and time.time() - start >= 2.0:
            break
        time.sleep(0.1)
    srv.kill()  # no shutdown, no flush: only what was committed is there
    load.stop.set()
    for t in threads:
        t.join(15)
    assert not load.errors, load.errors
    acked = sum(len(v) for v in load.acked_msgs.values())
    print("killed under load: %d messages, %d roster items, %d registrations acknowledged"
          % (acked, len(load.acked_roster), len(load.acked_accounts)))
    assert acked > 20 and load.acked_roster and load.acked_accounts, (
        "too little load to mean anything: %d messages, %d roster items, %d accounts"
        % (acked, len(load.acked_roster), len(load.acked_accounts)))

    srv.restart()
    if not srv.storage:
        assert integrity(srv.state_dir) == "ok"
    for user, pw, jid in rcpts:
        want = load.acked_msgs.get(jid, [])
        got = collect_offline(srv, user, pw, len(want))
        missing = [b for b in want if b not in got]
        assert not missing, "acknowledged messages lost: %s" % missing[:10]
    c = Client(srv, ruser, rpw)
    try:
        roster = c.roster_get()
        have = {i.get("jid") for i in roster.iter(q(NS_ROSTER, "item"))}
        missing = [j for j in load.acked_roster if j not in have]
        assert not missing, "acknowledged roster items lost: %s" % missing[:10]
    finally:
        c.close()
    for user, pw in load.acked_accounts:
        s, _ = login(srv.c2s_port, user, pw)
        s.close()


def test_roster_result_and_ack_come_after_the_commit(server):
    """The roster row is on disk when its result arrives, and every row an
    SM ack covers is on disk when the <a/> arrives (one <a/> may answer
    several <r/> that waited for the same commit)."""
    user, pw, _ = server.new_account("rcommit")
    s, _ = login(server.c2s_port, user, pw)
    try:
        s.send("<enable xmlns='%s'/>" % NS_SM)
        s.expect(q(NS_SM, "enabled"))
        for i in range(5):
            s.send("<iq type='set' id='rs%d'><query xmlns='%s'><item jid='x%d@%s'/></query></iq>"
                   "<r xmlns='%s'/>" % (i, NS_ROSTER, i, DOMAIN, NS_SM))
        results, h = set(), 0
        while len(results) < 5 or h < 5:
            el = s.next(5)
            if el.tag == q(NS_SM, "a"):
                h = int(el.get("h"))
                rows = rows_of(server, user)
                assert all("x%d@%s" % (n, DOMAIN) in rows for n in range(h)), (h, rows)
            elif el.tag == q(NS_CLIENT, "iq") and el.get("type") == "result":
                results.add(el.get("id"))
                n = int(el.get("id")[2:])
                assert "x%d@%s" % (n, DOMAIN) in rows_of(server, user)
    finally:
        s.close()


def rows_of(server, user):
    return [r[0] for r in server.db_query("SELECT jid FROM roster_items WHERE username = ?",
                                          (user,))]


# --------------------------------------------------------------------------
# full disk, read-only state directory
# --------------------------------------------------------------------------

@pytest.fixture
def tmpfs():
    """mount(size) -> a fresh tmpfs directory of that size; unmounted after."""
    mounts = []

    def mount(size):
        d = tempfile.mkdtemp(prefix="stanzad-fs-")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size, "tmpfs", d],
                           capture_output=True, text=True)
        if r.returncode != 0:
            os.rmdir(d)
            pytest.skip("cannot mount a tmpfs here: %s" % r.stderr.strip())
        mounts.append(d)
        return d
    yield mount
    for d in mounts:
        subprocess.run(["umount", "-l", d], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


class KeptServer(StanzadServer):
    """A daemon whose stop() leaves its state directory alone."""

    def stop(self, timeout=10.0):
        keep = self.state_dir
        self.state_dir = tempfile.mkdtemp(prefix="stanzad-void-")  # what stop() removes
        try:
            return super().stop(timeout)
        finally:
            self.state_dir = keep


def server_on(state_dir, *args):
    """A daemon whose state directory is state_dir; its log is kept elsewhere."""
    srv = KeptServer(list(args), name="stanzad(state on %s)" % state_dir)
    shutil.rmtree(srv.state_dir, ignore_errors=True)
    logdir = tempfile.mkdtemp(prefix="stanzad-log-")
    srv.log_path = os.path.join(logdir, "stderr.log")
    srv.state_dir = state_dir
    return srv


def fill(path):
    """Writes a file until the filesystem is full."""
    with open(os.path.join(path, "filler"), "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
        try:
            os.fsync(f.fileno())
        except OSError:
            pass


def integrity(state_dir, read_only=False):
    import sqlite3
    path = os.path.join(state_dir, "stanzad.db")
    db = sqlite3.connect("file:%s?immutable=1" % path if read_only else path, uri=read_only,
                         timeout=5)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def run_once(state_dir, *args, timeout=10):
    """Starts a daemon that is expected to fail at once; its output."""
    r = subprocess.run([STANZAD, "--state-dir", state_dir, "--listen-c2s", "127.0.0.1:0",
                        "--listen-c2s-tls", "off", "--listen-http", "off"] + list(args),
                       capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout + r.stderr


def test_startup_on_a_full_disk_says_so_in_one_line(tmpfs):
    skip_on_postgresql("the store is not in the state directory")
    d = tmpfs("256k")
    fill(d)
    rc, out = run_once(os.path.join(d, "state"))
    assert rc == 1, out
    lines = [l for l in out.splitlines() if l.startswith("stanzad:")]
    assert len(lines) == 1 and "No space left on device" in lines[0], out


def test_startup_on_a_read_only_state_dir_says_so_in_one_line(tmpfs):
    skip_on_postgresql("the store is not in the state directory")
    d = tmpfs("8m")
    state = os.path.join(d, "state")
    srv = server_on(state)
    srv.start()
    srv.stop()  # a valid store
    assert subprocess.run(["mount", "-o", "remount,ro", d]).returncode == 0
    rc, out = run_once(state)
    assert rc == 1, out
    lines = [l for l in out.splitlines() if l.startswith("stanzad:")]
    assert len(lines) == 1 and "ead-only" in lines[0], out
    assert integrity(state, read_only=True) == "ok"


def test_full_disk_at_runtime_is_answered_logged_and_harmless(tmpfs):
    skip_on_postgresql("the store is not in the state directory")
    d = tmpfs("16m")
    srv = server_on(os.path.join(d, "state"), "--log-level", "info")
    srv.start()
    try:
        a_user, a_pw, _ = srv.new_account("fa")
        b_user, b_pw, b_jid = srv.new_account("fb")
        _, _, absent = srv.new_account("fc")
        a = Client(srv, a_user, a_pw)
        b = Client(srv, b_user, b_pw)
        b.send("<presence/>")
        mark = srv.log_size()
        fill(d)
        # A roster change cannot be stored: an error, not a result.
        el = a.roster_set("full@%s" % DOMAIN)
        assert el.get("type") == "error", tostr(el)
        # An offline message cannot be stored: bounced with an error.
        a.send("<message to='%s' type='chat' id='off1'><body>x</body></message>" % absent)
        err = a.wait(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("id") == "off1")
        assert err.get("type") == "error", tostr(err)
        # A registration cannot be stored.
        s = RawStream(srv.c2s_port)
        try:
            s.open()
            s.starttls()
            s.send("<iq type='set' id='reg'><query xmlns='%s'><username>%s</username>"
                   "<password>pw</password></query></iq>" % (NS_REGISTER, uniq("full")))
            el = s.expect(q(NS_CLIENT, "iq"))
            assert el.get("type") == "error", tostr(el)
        finally:
            s.close()
        # What needs no storage still works: a message between online users.
        a.send("<message to='%s' type='chat' id='live'><body>still here</body></message>"
               % b.full)
        got = b.wait(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("id") == "live")
        assert got.findtext(q(NS_CLIENT, "body")) == "still here"
        # It is all in the log.
        assert "database or disk is full" in srv.log_text(mark) or \
            "storage." in srv.log_text(mark), srv.log_tail(20, mark)
        # Space again: everything works again.
        os.unlink(os.path.join(d, "filler"))
        el = a.roster_set("back@%s" % DOMAIN)
        assert el.get("type") == "result", tostr(el)
        a.send("<message to='%s' type='chat' id='off2'><body>later</body></message>" % absent)
        a.quiet(lambda el: el.get("id") == "off2", 1.0)
        a.close()
        b.close()
    finally:
        srv.stop()
    assert integrity(os.path.join(d, "state")) == "ok"
    # And what was stored after the disk had room again is there after a restart.
    srv2 = server_on(os.path.join(d, "state"))
    srv2.start()
    try:
        c = Client(srv2, a_user, a_pw)
        items = {i.get("jid") for i in c.roster_get().iter(q(NS_ROSTER, "item"))}
        assert "back@%s" % DOMAIN in items and "full@%s" % DOMAIN not in items, items
        c.close()
    finally:
        srv2.stop()
