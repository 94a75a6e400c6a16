"""The client interop matrix (make check-interop).

Each client stack that Debian or npm ships logs in to a stanzad started
here, binds a resource, fetches its roster where it can, sends a message
to a peer and receives the peer's answer. The peer is the integration
harness's raw client (tests/integration/harness.py). Every client runs as
its own process (script, binary or, for the terminal client, tmux) and
every wait is bounded.

The matrix (client, version, transport, result, note) is printed at the
end and written to BUILD/interop-matrix.md; README.md's table is a copy
of it. A client that is not installed is a skip with the reason, and
shows as such in the matrix.
"""
import os
import re
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from harness import (BUILD, DOMAIN, NS_CLIENT, StanzadServer, free_ports, login, q,  # noqa: E402
                     tostr, uniq, xml_escape)

NS_ROSTER = "jabber:iq:roster"
CLIENT_WAIT = 45  # one client's whole run, login to answer
ROWS = []


@pytest.fixture(scope="session")
def server():
    """One daemon for the matrix: STARTTLS, Direct TLS, and HTTPS for
    wss:// (the WebSocket client)."""
    https, = free_ports(1)
    s = StanzadServer(["--listen-https", "127.0.0.1:%d" % https], name="stanzad(interop)")
    s.start()
    s.https_port = https
    yield s
    s.stop()


class Peer:
    """The other end of each conversation: a raw client, available (so
    messages to its bare JID reach it), whose roster holds nothing."""

    def __init__(self, server):
        self.user, self.password, self.bare = server.new_account("peer")
        self.stream, self.jid = login(server.c2s_port, self.user, self.password, resource="peer")
        self.stream.send("<presence/>")

    def wait_message(self, from_bare, timeout=CLIENT_WAIT):
        """The next chat/normal message with a body from from_bare (any
        resource): (full from, body). Other stanzas are skipped."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("peer got no message from %s within %.0f s; saw: %s" %
                                     (from_bare, timeout, seen[-5:]))
            try:
                el = self.stream.next(left)
            except TimeoutError:
                continue
            seen.append(tostr(el)[:200])
            if el.tag != q(NS_CLIENT, "message"):
                continue
            frm = el.get("from", "")
            body = el.find(q(NS_CLIENT, "body"))
            if frm.split("/")[0] == from_bare and body is not None and el.get("type") != "error":
                return frm, body.text or ""

    def send_message(self, to, body):
        self.stream.send("<message to='%s' type='chat' id='%s'><body>%s</body></message>" %
                         (xml_escape(to), uniq("m"), xml_escape(body)))

    def close(self):
        self.stream.close()


@pytest.fixture
def peer(server):
    p = Peer(server)
    yield p
    p.close()


@pytest.fixture
def account(server):
    """A fresh account for the client under test, its roster holding the
    peer-to-be (set over a raw stream, so the client's roster get has
    something to show). Returns a factory: account(peer) -> (user, pw, bare)."""
    def make(peer):
        user, pw, bare = server.new_account("client")
        s, _ = login(server.c2s_port, user, pw)
        try:
            s.send("<iq type='set' id='r1'><query xmlns='%s'><item jid='%s' name='Peer'/>"
                   "</query></iq>" % (NS_ROSTER, peer.bare))
            while True:
                el = s.next()
                if el.tag == q(NS_CLIENT, "iq") and el.get("id") == "r1":
                    assert el.get("type") == "result", tostr(el)
                    break
        finally:
            s.close()
        return user, pw, bare
    return make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps the call report on the item: the matrix row knows the result."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call = rep


@pytest.fixture
def matrix():
    """matrix(client, version, transport, result, note): one row."""
    def add(client, version, transport, result, note=""):
        ROWS.append((client, version, transport, result, note))
    return add


def matrix_markdown():
    lines = ["| client | version | transport | login + bind | roster | message out / in | note |",
             "|---|---|---|---|---|---|---|"]
    for client, version, transport, result, note in ROWS:
        cells = result if isinstance(result, tuple) else (result, result, result)
        lines.append("| %s | %s | %s | %s | %s | %s | %s |" %
                     ((client, version, transport) + tuple(cells) + (note,)))
    return "\n".join(lines) + "\n"


def pytest_terminal_summary(terminalreporter):
    if not ROWS:
        return
    text = matrix_markdown()
    terminalreporter.write_sep("=", "interop matrix")
    terminalreporter.write(text)
    try:
        with open(os.path.join(BUILD, "interop-matrix.md"), "w") as f:
            f.write(text)
    except OSError:
        pass
