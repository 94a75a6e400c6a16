"""Forwarding between account homes (docs/account-homes.md, steps 1-3),
checked directly with `--homes loop`: every stanza for a local account
goes through its home worker's mailbox (worker 0 posting to itself), is
routed there with no connection, and must behave as if routed at once:
order per sender, errors back to the sender, contact iqs answered,
archive writes for the recipient, and stream-management acks only after
the recipient's side committed. The whole suite runs in this mode with
STANZAD_TEST_ARGS="--homes loop"."""
import os
import subprocess

import pytest

from harness import login, q, skip_on_postgresql, tostr
from homesutil import (check_both_archives, check_contact_vcard, check_errors_come_back,
                       check_messages_stay_in_order, db_rows)

NS_SM = "urn:xmpp:sm:3"


@pytest.fixture(scope="module")
def loop_server():
    from harness import StanzadServer
    s = StanzadServer(["--homes", "loop"], name="stanzad(homes loop)", suite_args=False).start()
    yield s
    s.stop()


def test_loop_mode_is_announced(loop_server):
    loop_server.wait_log(r"event=server\.homes mode=loop")


def test_homes_rejects_an_unknown_mode():
    build = os.environ.get("STANZAD_BUILD", os.path.join(os.path.dirname(__file__), "../../build"))
    p = subprocess.run([os.path.join(build, "stanzad"), "--homes", "bogus"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "homes 'bogus' must be zero, hash, other or loop" in p.stderr, p.stderr


def test_messages_from_one_sender_stay_in_order(loop_server):
    check_messages_stay_in_order(loop_server, loop_server.new_account("ord"),
                                 loop_server.new_account("ord"))


def test_an_error_comes_back_to_the_sender(loop_server):
    check_errors_come_back(loop_server, loop_server.new_account("bnc"),
                           loop_server.new_account("bnc")[2])


def test_a_contact_iq_is_answered(loop_server):
    check_contact_vcard(loop_server, loop_server.new_account("ctq"),
                        loop_server.new_account("ctq"), "Home Loop")


def test_sm_ack_comes_after_the_offline_write(make_server):
    # No archive: the sender's home writes nothing for these messages, so
    # only the recipient's offline writes (at its home) can hold the ack.
    skip_on_postgresql("holds the SQLite file's write lock to delay the commits")
    loop_server = make_server("--homes", "loop", "--mam-default", "never")
    su, sp, _ = loop_server.new_account("ack")
    ru, _, rjid = loop_server.new_account("ack")
    snd, _ = login(loop_server.c2s_port, su, sp)
    db = None
    try:
        snd.send("<enable xmlns='%s'/>" % NS_SM)
        snd.expect(q(NS_SM, "enabled"))
        # The store is held busy: the recipient's home routes and submits
        # its offline writes, which wait; so must the sender's ack.
        import sqlite3
        db = sqlite3.connect(os.path.join(loop_server.state_dir, "stanzad.db"), timeout=5,
                             isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        for i in range(5):
            snd.send("<message to='%s' type='chat' id='a%d'><body>held %d</body></message>"
                     % (rjid, i, i))
        snd.send("<r xmlns='%s'/>" % NS_SM)
        assert snd.nothing_within(0.8), "acknowledged before the recipient's writes committed"
        db.execute("COMMIT")
        a = snd.expect(q(NS_SM, "a"))
        assert a.get("h") == "5", tostr(a)
        # Acknowledged: written by the recipient's home, committed.
        rows = [r[0] for r in db.execute("SELECT stanza FROM offline_messages "
                                         "WHERE username = ?", (ru,)).fetchall()]
        assert len(rows) == 5, rows
        # And without a busy store, round after round.
        for round_ in range(1, 3):
            for i in range(5):
                snd.send("<message to='%s' type='chat'><body>more %d-%d</body></message>"
                         % (rjid, round_, i))
            snd.send("<r xmlns='%s'/>" % NS_SM)
            a = snd.expect(q(NS_SM, "a"))
            assert a.get("h") == str(5 * (round_ + 1)), tostr(a)
            rows = db_rows(loop_server, "SELECT stanza FROM offline_messages "
                           "WHERE username = ?", ru)
            assert len(rows) == 5 * (round_ + 1), rows
    finally:
        if db is not None:
            db.close()
        snd.close()


def test_a_forwarded_message_is_archived_for_the_recipient(loop_server):
    check_both_archives(loop_server, loop_server.new_account("arc"),
                        loop_server.new_account("arc"))
