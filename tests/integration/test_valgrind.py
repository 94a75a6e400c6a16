"""A short scenario with the daemon under valgrind's memcheck: no leak and
no invalid memory access from start to a SIGTERM shutdown.

The scenario touches the paths a day of service takes (TLS, SCRAM, bind,
roster, presence, a message between online users, an offline message
stored and delivered at the next login, a room, an abrupt disconnect, a
stream error for hostile input, a client still connected at shutdown).

Uninitialised-value checks are off: the kernel fills the receive buffers
through io_uring, which valgrind cannot see, so every byte read from the
network would count as uninitialised. Leaks and invalid reads, writes and
frees are still errors. Skipped when valgrind is absent or the binary is
an ASan build (the two cannot run together)."""
import glob
import os
import re
import shutil
import signal
import time

import pytest

from harness import DOMAIN, NS_CLIENT, STANZAD, RawStream, StanzadServer, q, tostr
from imutil import Client

NS_MUC = "http://jabber.org/protocol/muc"
SLOW = 30.0  # valgrind runs the daemon 20-50 times slower


def _asan_build():
    try:
        with open(STANZAD, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


pytestmark = [
    pytest.mark.skipif(shutil.which("valgrind") is None,
                       reason="valgrind is not installed (apt-get install valgrind)"),
    pytest.mark.skipif(_asan_build(), reason="an ASan build cannot run under valgrind"),
]


def _valgrind_server(monkeypatch):
    # Two workers, accounts spread: what crosses between homes is checked too.
    srv = StanzadServer(["--require-tls", "yes", "--workers", "2", "--homes", "hash"],
                        name="stanzad(valgrind)", suite_args=False)
    log = os.path.join(srv.state_dir, "valgrind.%p.log")
    monkeypatch.setenv("STANZAD_WRAPPER",
                       "valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect "
                       "--show-leak-kinds=definite,indirect --undef-value-errors=no "
                       "--error-exitcode=99 --child-silent-after-fork=yes --num-callers=30 "
                       "--log-file=" + log)
    return srv.start(timeout=90)


def test_short_scenario_under_valgrind_has_no_leaks_and_no_errors(monkeypatch):
    srv = _valgrind_server(monkeypatch)
    try:
        alice = srv.new_account("vga", home=0)
        bob = srv.new_account("vgb", home=1)
        carol = srv.new_account("vgc")
        a = Client(srv, alice[0], alice[1], resource="desk")
        b = Client(srv, bob[0], bob[1])
        # Roster and presence.
        a.send("<iq type='set' id='r1'><query xmlns='jabber:iq:roster'>"
               "<item jid='%s@%s' name='B'/></query></iq>" % (bob[0], DOMAIN))
        a.wait(lambda el: el.get("id") == "r1", timeout=SLOW, what="roster result")
        a.send("<presence><status>here</status></presence>")
        # A message between online users.
        a.send("<message to='%s' type='chat' id='m1'><body>hello</body></message>" % b.full)
        el = b.wait(lambda el: el.tag == q(NS_CLIENT, "message"), timeout=SLOW,
                    what="the message")
        assert el.findtext(q(NS_CLIENT, "body")) == "hello", tostr(el)
        # An offline message, delivered at carol's login.
        a.send("<message to='%s@%s' type='chat' id='m2'><body>later</body></message>"
               % (carol[0], DOMAIN))
        a.send("<iq type='get' id='p1' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>" % DOMAIN)
        a.wait(lambda el: el.get("id") == "p1", timeout=SLOW, what="ping result")
        c = Client(srv, carol[0], carol[1])
        c.send("<presence/>")
        el = c.wait(lambda el: el.tag == q(NS_CLIENT, "message"), timeout=SLOW,
                    what="the offline message")
        assert el.findtext(q(NS_CLIENT, "body")) == "later", tostr(el)
        c.close_cleanly()
        # A room: join, talk, and the room goes when its last occupant leaves.
        room = "vg%d@conference.%s" % (os.getpid(), DOMAIN)
        a.send("<presence to='%s/a'><x xmlns='%s'/></presence>" % (room, NS_MUC))
        a.wait(lambda el: el.tag == q(NS_CLIENT, "presence") and el.get("from") == room + "/a",
               timeout=SLOW, what="room presence")
        a.send("<message to='%s' type='groupchat'><body>hi room</body></message>" % room)
        a.wait(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("type") == "groupchat",
               timeout=SLOW, what="room echo")
        # Bob's connection drops without a closing tag.
        b.close()
        # Hostile input ends with a stream error.
        h = RawStream(srv.c2s_port, timeout=SLOW)
        h.open()
        h.send("<!DOCTYPE x [<!ENTITY a 'aaaa'>]><x>&a;</x>")
        assert h.stream_error(timeout=SLOW) in ("restricted-xml", "not-well-formed")
        h.close()
        time.sleep(0.5)
        # Alice is still connected at shutdown.
        srv.signal(signal.SIGTERM)
        rc = srv.wait(120)
        a.close()
        if rc is None:
            srv._kill()
            pytest.fail("stanzad under valgrind did not exit within 120 s of SIGTERM")
    finally:
        if srv.alive():
            srv._kill()
        srv._close_log()
    reports = glob.glob(os.path.join(srv.state_dir, "valgrind.*.log"))
    assert reports, "valgrind wrote no report"
    text = "".join(open(p, errors="replace").read() for p in reports)
    summary = re.search(r"definitely lost: ([\d,]+) bytes.*?indirectly lost: ([\d,]+) bytes",
                        text, re.S)
    assert rc == 0, "stanzad under valgrind exited %s (99: memcheck errors)\n%s\n--- log ---\n%s" \
        % (rc, text[-6000:], srv.log_tail(30))
    # All heap blocks were freed at exit, or the summary is there and says 0.
    assert "All heap blocks were freed" in text or (
        summary and summary.group(1) == "0" and summary.group(2) == "0"), text[-4000:]
    assert "ERROR SUMMARY: 0 errors" in text, text[-6000:]
    shutil.rmtree(srv.state_dir, ignore_errors=True)
