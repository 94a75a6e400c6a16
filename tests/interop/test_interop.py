"""One login + bind + roster get + message exchange per client stack.

Every test: a fresh account whose roster holds the peer, the client logs
in, the peer must receive 'hello from CLIENT' from it and answers
'answer for CLIENT' to the resource it came from (go-sendxmpp: to the
bare JID, see its test), and the client must show that answer."""
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import BUILD, CLIENT_WAIT, DOMAIN, HERE

PY = "/usr/bin/python3"  # Debian's interpreter: the python3-* client packages
WS_CLIENT = os.path.join(HERE, "..", "integration", "ws-client")


def deb_version(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None


def py_has(module):
    return subprocess.run([PY, "-c", "import " + module], capture_output=True).returncode == 0


class Row:
    """One line of the matrix; a step not reached when the test failed
    shows as FAIL (the first) and '-' (the rest)."""

    def __init__(self, client, version, transport):
        self.client, self.version, self.transport = client, version, transport
        self.login = self.roster = self.message = None
        self.note = ""


@pytest.fixture
def row(request, matrix):
    rows = []

    def make(client, version, transport):
        r = Row(client, version, transport)
        rows.append(r)
        return r
    yield make
    rep = getattr(request.node, "rep_call", None)
    for r in rows:
        cells, failed = [], False
        for v in (r.login, r.roster, r.message):
            if v is None and rep is not None and rep.failed and not failed:
                v, failed = "FAIL", True
            cells.append(v or "-")
        if rep is not None and rep.skipped:
            cells = ["skipped"] * 3
        matrix(r.client, r.version or "-", r.transport, tuple(cells), r.note)


def skip_row(row, client, version, transport, why):
    r = row(client, version, transport)
    r.note = why
    pytest.skip(why)


class Proc:
    """A client process whose stdout lines are read in a thread."""

    def __init__(self, cmd, env=None, cwd=None):
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True, env=env, cwd=cwd)
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix, timeout=CLIENT_WAIT):
        """The next line starting with prefix; ERROR lines or EOF fail."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("%s: no %s line within %.0f s; output:\n%s" %
                                     (self.cmd[0], prefix, timeout, "\n".join(self.seen[-30:])))
            if line is None:
                raise AssertionError("%s exited (%s) before %s; output:\n%s" %
                                     (self.cmd[0], self.proc.poll(), prefix,
                                      "\n".join(self.seen[-30:])))
            self.seen.append(line)
            if line.startswith("ERROR"):
                raise AssertionError("%s: %s\n%s" % (self.cmd[0], line, "\n".join(self.seen[-30:])))
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def roster(self):
        return [line.split(" ", 1)[1] for line in self.seen if line.startswith("ROSTER ")]

    def finish(self, timeout=15):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("%s did not exit after the exchange" % self.cmd[0])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def exchange(proc, r, peer, bare, name):
    """The protocol of the scripted clients: BOUND, ROSTER..., SENT,
    RECEIVED. Fills the row as each step passes."""
    try:
        jid = proc.expect("BOUND ")
        assert jid.split("/")[0] == bare and "/" in jid, jid
        r.login = "pass"
        frm, body = peer.wait_message(bare)
        assert body == "hello from %s" % name, body
        peer.send_message(frm, "answer for %s" % name)
        assert proc.expect("RECEIVED ") == "answer for %s" % name
        r.roster = "pass" if peer.bare in proc.roster() else "FAIL (%s)" % proc.roster()
        r.message = "pass"
        assert proc.finish() == 0
        assert r.roster == "pass", "the roster did not list the peer: %s" % proc.roster()
    finally:
        proc.kill()


# ---- Python ----

def test_slixmpp(server, peer, account, row):
    version = deb_version("python3-slixmpp")
    if not py_has("slixmpp"):
        skip_row(row, "slixmpp", version, "TCP, STARTTLS", "python3-slixmpp is not installed")
    r = row("slixmpp", version, "TCP, STARTTLS")
    user, pw, bare = account(peer)
    p = Proc([PY, os.path.join(HERE, "slixmpp_client.py"), "127.0.0.1", str(server.c2s_port),
              bare, pw, peer.bare])
    exchange(p, r, peer, bare, "slixmpp")


def test_aioxmpp(server, peer, account, row):
    version = deb_version("python3-aioxmpp")
    if not py_has("aioxmpp"):
        skip_row(row, "aioxmpp", version, "TCP, STARTTLS",
                 "python3-aioxmpp is not installed (scripts/install-deps.sh interop)")
    r = row("aioxmpp", version, "TCP, STARTTLS")
    user, pw, bare = account(peer)
    p = Proc([PY, os.path.join(HERE, "aioxmpp_client.py"), "127.0.0.1", str(server.c2s_port),
              bare, pw, peer.bare])
    exchange(p, r, peer, bare, "aioxmpp")


# ---- C ----

def test_libstrophe(server, peer, account, row):
    version = deb_version("libstrophe-dev")
    binary = os.path.join(BUILD, "interop", "strophe_client")
    if not os.access(binary, os.X_OK):
        skip_row(row, "libstrophe", version, "TCP, STARTTLS",
                 "no %s (make check-interop builds it; needs libstrophe-dev)" % binary)
    r = row("libstrophe", version, "TCP, STARTTLS")
    user, pw, bare = account(peer)
    p = Proc([binary, "127.0.0.1", str(server.c2s_port), bare, pw, peer.bare])
    exchange(p, r, peer, bare, "libstrophe")


# ---- JavaScript ----

def test_xmppjs_websocket(server, peer, account, row):
    version = None
    lock = os.path.join(WS_CLIENT, "node_modules", "@xmpp", "client", "package.json")
    if os.path.exists(lock):
        import json
        version = json.load(open(lock)).get("version")
    transport = "WebSocket (wss://)"
    node = shutil.which("node")
    if not node:
        skip_row(row, "xmpp.js", version, transport, "node is not installed")
    if not version:
        skip_row(row, "xmpp.js", version, transport,
                 "@xmpp/client is not installed (npm ci in tests/integration/ws-client)")
    r = row("xmpp.js", version, transport)
    user, pw, bare = account(peer)
    env = dict(os.environ, NODE_TLS_REJECT_UNAUTHORIZED="0")  # self-signed test certificate
    p = Proc([node, "--experimental-websocket", "--no-warnings",
              os.path.join(HERE, "xmppjs_client.mjs"),
              "wss://127.0.0.1:%d/xmpp-websocket" % server.https_port, bare, pw, peer.bare],
             env=env)
    exchange(p, r, peer, bare, "xmpp.js")


# ---- Go ----

def test_go_sendxmpp(server, peer, account, row):
    """go-sendxmpp sends (one login per run) and listens (-l); it has no
    roster command. The answer goes to the bare JID: the listener's
    session is another one than the sender's, and a message to a bare JID
    without an available resource waits offline, so the order of listener
    login and answer does not matter."""
    version = deb_version("go-sendxmpp")
    binary = shutil.which("go-sendxmpp")
    if not binary:
        skip_row(row, "go-sendxmpp", version, "TCP, STARTTLS",
                 "go-sendxmpp is not installed (scripts/install-deps.sh interop)")
    r = row("go-sendxmpp", version, "TCP, STARTTLS")
    r.roster = "n/a"
    r.note = "no roster command; one login to send, one to listen"
    user, pw, bare = account(peer)
    common = [binary, "-u", bare, "-p", pw, "-j", "127.0.0.1:%d" % server.c2s_port, "-n"]
    home = tempfile.mkdtemp(prefix="stanzad-gosendxmpp-")
    env = dict(os.environ, HOME=home)
    try:
        send = subprocess.run(common + [peer.bare], input="hello from go-sendxmpp\n",
                              capture_output=True, text=True, timeout=CLIENT_WAIT, env=env)
        assert send.returncode == 0, send.stdout + send.stderr
        frm, body = peer.wait_message(bare)
        assert body == "hello from go-sendxmpp", body
        r.login = "pass"
        listener = Proc(common + ["-l"], env=env)
        try:
            peer.send_message(bare, "answer for go-sendxmpp")
            line = listener.expect("", timeout=CLIENT_WAIT)
            while "answer for go-sendxmpp" not in line:
                line = listener.expect("", timeout=CLIENT_WAIT)
            r.message = "pass"
        finally:
            listener.kill()
    finally:
        shutil.rmtree(home, ignore_errors=True)


# ---- A terminal client through tmux ----

class Tmux:
    """A private tmux server (its own socket): the terminal client runs in
    one window; keys go in with send-keys, the screen comes back with
    capture-pane."""

    def __init__(self, cmd, env):
        self.sock = "stanzad-interop-%d" % os.getpid()
        self.env = env
        self._tmux("new-session", "-d", "-s", "client", "-x", "200", "-y", "50", cmd)

    def _tmux(self, *args):
        return subprocess.run(["tmux", "-L", self.sock] + list(args), capture_output=True,
                              text=True, env=self.env, timeout=10)

    def keys(self, text, enter=True):
        self._tmux("send-keys", "-t", "client", "-l", text)
        if enter:
            self._tmux("send-keys", "-t", "client", "Enter")

    def screen(self):
        return self._tmux("capture-pane", "-p", "-t", "client", "-S", "-200").stdout

    def wait_for(self, pattern, timeout=CLIENT_WAIT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.screen()
            if re.search(pattern, text):
                return text
            time.sleep(0.2)
        raise AssertionError("screen never showed %r:\n%s" % (pattern, self.screen()))

    def close(self):
        self._tmux("kill-server")


def test_profanity_in_tmux(server, peer, account, row):
    version = deb_version("profanity")
    transport = "TCP, STARTTLS (terminal, tmux)"
    if not shutil.which("profanity"):
        skip_row(row, "profanity", version, transport,
                 "profanity is not installed (scripts/install-deps.sh interop)")
    if not shutil.which("tmux"):
        skip_row(row, "profanity", version, transport, "tmux is not installed")
    r = row("profanity", version, transport)
    user, pw, bare = account(peer)
    home = tempfile.mkdtemp(prefix="stanzad-profanity-")
    env = {"HOME": home, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TERM": "xterm-256color",
           "LANG": "C.UTF-8"}
    t = Tmux("profanity", env)
    try:
        t.wait_for(r"Welcome to Profanity|Profanity\.")
        # 'tls trust': STARTTLS required, the self-signed certificate accepted.
        t.keys("/connect %s server 127.0.0.1 port %d tls trust" % (bare, server.c2s_port))
        t.wait_for(r"[Pp]assword")
        t.keys(pw)
        t.wait_for(r"%s/\S+ logged in successfully" % re.escape(bare))
        r.login = "pass"
        # The roster panel lists the contact by its name.
        t.wait_for(r"Peer")
        r.roster = "pass"
        t.keys("/msg %s hello from profanity" % peer.bare)
        frm, body = peer.wait_message(bare)
        assert body == "hello from profanity", body
        peer.send_message(frm, "answer for profanity")
        t.wait_for(r"answer for profanity")
        r.message = "pass"
        t.keys("/quit")
    finally:
        t.close()
        shutil.rmtree(home, ignore_errors=True)
