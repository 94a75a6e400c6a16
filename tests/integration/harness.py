"""Helpers for the stanzad integration tests.

- StanzadServer: one daemon on free loopback ports with a fresh state
  directory; stderr goes to a log file that failing tests print. With
  STANZAD_TEST_STORAGE=postgresql every daemon (and its stanzactl) stores
  in a fresh database of one PostgreSQL server started for the whole
  session (pgserver.py); db_query() reads the store on either engine.
- RawStream: a raw XMPP client socket (plain, STARTTLS by hand, Direct TLS
  with ALPN) with an incremental XML reader, for protocol-level tests.
- ScramClient: SCRAM-SHA-1/256 (RFC 5802 / RFC 7677) with optional channel
  binding, written here so the tests see every message.
- slixmpp helpers: a client that accepts the self-signed certificate and
  never does DNS, and bounded waits for its events.

Every wait is bounded: a test fails, it never hangs.
"""
import asyncio
import atexit
import base64
import ctypes
import hashlib
import hmac
import itertools
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("STANZAD_BUILD") or os.path.join(REPO, "build")
STANZAD = os.path.join(BUILD, "stanzad")
STANZACTL = os.path.join(BUILD, "stanzactl")

DOMAIN = "localhost"
WAIT = 10.0  # default bound for any single wait

# sqlite (the default) or postgresql: the store every daemon of the suite uses.
TEST_STORAGE = os.environ.get("STANZAD_TEST_STORAGE", "sqlite")
if TEST_STORAGE not in ("sqlite", "postgresql"):
    raise RuntimeError("STANZAD_TEST_STORAGE must be sqlite or postgresql, not %r" % TEST_STORAGE)
_suite_pg = None


def suite_pg():
    """The session's PostgreSQL server, started on first use and stopped
    (its directory removed) when the session ends."""
    global _suite_pg
    if _suite_pg is None:
        from pgserver import PgServer
        _suite_pg = PgServer().start()
        atexit.register(_suite_pg.stop)
    return _suite_pg


def on_postgresql():
    return TEST_STORAGE == "postgresql"


# STANZAD_TEST_CLUSTER=N (N >= 2, with STANZAD_TEST_STORAGE=postgresql):
# every daemon the suite starts with its suite flags is a cluster of N
# nodes on one Redis of its own and one PostgreSQL database, sharing the
# client ports (SO_REUSEPORT), so the tests' clients land on different
# nodes; the test talks to the first node as "the server".
TEST_CLUSTER = int(os.environ.get("STANZAD_TEST_CLUSTER", "0") or 0)
if TEST_CLUSTER == 1 or (TEST_CLUSTER and TEST_STORAGE != "postgresql"):
    raise RuntimeError("STANZAD_TEST_CLUSTER needs at least 2 nodes and "
                       "STANZAD_TEST_STORAGE=postgresql (a shared store)")
# The daemon's default: shorter, a node whose heartbeat is late on a busy
# machine (the whole suite on two cores) is taken for dead and reaped, with
# its sessions and streams, in the middle of a test.
CLUSTER_TTL_MS = 5000


def skip_on_postgresql(reason):
    """Skips the calling test when the suite runs on PostgreSQL."""
    if on_postgresql():
        import pytest
        pytest.skip("on PostgreSQL: " + reason)

NS_STREAM = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_STREAMS_ERR = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_REGISTER = "jabber:iq:register"
NS_REGISTER_FEATURE = "http://jabber.org/features/iq-register"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_PING = "urn:xmpp:ping"
NS_SASL_CB = "urn:xmpp:sasl-cb:0"


def q(ns, name):
    """Clark notation {ns}name, as ElementTree spells qualified names."""
    return "{%s}%s" % (ns, name)


def local(tag):
    return tag.split("}", 1)[1] if tag.startswith("{") else tag


def xml_escape(s):
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("'", "&apos;").replace('"', "&quot;"))


_uniq = itertools.count(1)


def uniq(prefix="user"):
    """A username no other test uses (lowercase: nodeprep is idempotent on it)."""
    return "%s%d%s" % (prefix, next(_uniq), secrets.token_hex(2))


def home_of(bare_jid, workers):
    """The worker an account is at home on with `--homes hash` (worker.c:
    FNV-1a of the normalized bare JID modulo the workers)."""
    h = 14695981039346656037
    for b in bare_jid.encode():
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h % workers


SPREAD_WORKERS = 2  # the workers of start_spread()'s daemon


def start_spread(*extra, name="stanzad(homes hash)"):
    """A started daemon with SPREAD_WORKERS workers and accounts at home by
    hash, whatever STANZAD_TEST_ARGS says, so that new_account(home=K)
    places accounts on given workers. The caller stops it."""
    return StanzadServer(["--workers", str(SPREAD_WORKERS), "--homes", "hash"] + list(extra),
                         name=name, suite_args=False).start()


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 (bound at once, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------------------
# The daemon
# --------------------------------------------------------------------------

class ServerError(Exception):
    pass


class _ClusterLogMark(int):
    """A log offset of the first node that also holds the other nodes'."""

    def __new__(cls, size, siblings):
        mark = super().__new__(cls, size)
        mark.siblings = siblings
        return mark


class StanzadServer:
    """A stanzad process. start() waits until both listeners accept."""

    _all = []  # every server started in this pytest session
    # None: no --log-level, so a configuration file's log_level decides.
    log_level = "debug"

    def __init__(self, extra_args=(), name="stanzad", suite_args=True, storage=None):
        """suite_args=False: without STANZAD_TEST_ARGS, for a test whose
        daemon must run exactly as its own flags say (e.g. where accounts
        are at home). storage: a --storage value; by default the suite's
        (STANZAD_TEST_STORAGE: a fresh PostgreSQL database per daemon)."""
        if storage is None and on_postgresql():
            storage = suite_pg().new_database()
        self.storage = storage  # None: SQLite in state_dir
        self.extra_args = list(extra_args)
        self.suite_args = suite_args
        self.name = name
        self.state_dir = tempfile.mkdtemp(prefix="stanzad-it-")
        self.log_path = os.path.join(self.state_dir, "stderr.log")
        self.proc = None
        self.c2s_port = self.tls_port = None
        self.http_port = None  # the HTTP listener: upload, WebSocket, host-meta
        self.returncode = None
        self.stop_requested = False
        self._log = None
        # STANZAD_TEST_CLUSTER: the other nodes sharing our client ports, and their Redis.
        self.siblings = []
        self.redis = None

    # -- lifecycle --

    def start(self, timeout=WAIT, keep_ports=False):
        """keep_ports: the ports of the previous run (restart())."""
        if not os.access(STANZAD, os.X_OK):
            raise ServerError("no daemon binary at %s (run make first)" % STANZAD)
        last = None
        for _attempt in range(3):  # a port may be taken meanwhile
            if not keep_ports:
                self.c2s_port, self.tls_port, self.http_port = free_ports(3)
            elif _attempt:
                time.sleep(0.5)  # a killed daemon's sockets may take a moment to go
            self._log = open(self.log_path, "ab")
            # STANZAD_WRAPPER (debugging only), e.g. "valgrind -q" or
            # "gdb -q -batch -ex run -ex bt --args".
            wrapper = os.environ.get("STANZAD_WRAPPER", "").split()
            args = wrapper + [STANZAD, "--domain", DOMAIN, "--state-dir", self.state_dir,
                    "--listen-c2s", "127.0.0.1:%d" % self.c2s_port,
                    "--listen-c2s-tls", "127.0.0.1:%d" % self.tls_port,
                    "--listen-http", "127.0.0.1:%d" % self.http_port,
                    "--registration", "open"] + \
                (["--storage", self.storage] if self.storage else []) + \
                (["--log-level", self.log_level] if self.log_level else []) + self.extra_args
            # STANZAD_TEST_ARGS: flags for every daemon the suite starts,
            # e.g. "--homes loop" or "--workers 2" (docs/account-homes.md).
            if self.suite_args:
                args += os.environ.get("STANZAD_TEST_ARGS", "").split()
                args += self._cluster_args("n1")
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                         stdout=self._log, stderr=subprocess.STDOUT)
            if self not in StanzadServer._all:
                StanzadServer._all.append(self)
            try:
                self._wait_ready(timeout)
                self._start_siblings(timeout)
                return self
            except ServerError as e:
                last = e
                if self.proc.poll() is None:
                    self._kill()
                if "cannot listen" not in self.log_text():
                    break
        raise ServerError("%s did not start: %s\n--- log ---\n%s" %
                          (self.name, last, self.log_tail()))

    def _cluster_args(self, node):
        if not (self.suite_args and TEST_CLUSTER):
            return []
        if self.redis is None:
            from redisserver import RedisServer
            self.redis = RedisServer().start()
        return ["--cluster", self.redis.uri, "--node-name", node,
                "--cluster-ttl", str(CLUSTER_TTL_MS)]

    def _start_siblings(self, timeout):
        """STANZAD_TEST_CLUSTER: nodes 2..N on our client ports and store."""
        if not (self.suite_args and TEST_CLUSTER):
            return
        if not self.siblings:
            for k in range(2, TEST_CLUSTER + 1):
                sib = StanzadServer(self.extra_args + os.environ.get("STANZAD_TEST_ARGS", "")
                                    .split() + self._cluster_args("n%d" % k),
                                    name="%s(n%d)" % (self.name, k), suite_args=False,
                                    storage=self.storage)
                self.siblings.append(sib)
        for sib in self.siblings:
            if sib.alive():
                continue
            sib.c2s_port, sib.tls_port = self.c2s_port, self.tls_port
            if sib.http_port is None:
                sib.http_port = free_ports(1)[0]
            sib.start(timeout, keep_ports=True)

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        pending = {self.c2s_port, self.tls_port, self.http_port}
        while pending:
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                raise ServerError("exited with status %d during startup" % rc)
            for port in list(pending):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    pending.discard(port)
                except OSError:
                    pass
            if pending:
                if time.monotonic() > deadline:
                    raise ServerError("ports %s not accepting after %.0f s" %
                                      (sorted(pending), timeout))
                time.sleep(0.02)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL, as a crash or power loss would stop it: no shutdown at all."""
        for sib in self.siblings:
            if sib.alive():
                sib.kill()
        self.stop_requested = True
        self.proc.kill()
        self.returncode = self.proc.wait(timeout=10)
        self._close_log()

    def restart(self, timeout=WAIT):
        """Starts again on the same state directory and ports, after stop()
        with STANZAD_KEEP_STATE or kill()."""
        assert not self.alive(), "%s is still running" % self.name
        self._close_log()
        self.stop_requested = False
        return self.start(timeout, keep_ports=True)

    def signal(self, sig=signal.SIGTERM):
        self.stop_requested = True
        self.proc.send_signal(sig)
        for sib in self.siblings:
            if sib.alive():
                sib.signal(sig)

    def wait(self, timeout):
        """Waits for the exit; returns the status or None on timeout."""
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def _kill(self):
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except Exception:
            pass

    def stop(self, timeout=WAIT):
        """SIGTERM, then SIGKILL after `timeout`. Returns the exit status.

        Raises ServerError when the daemon had to be killed or exited
        non-zero (a crash or sanitizer report must fail the test)."""
        if self.proc is None:
            return None
        for sib in self.siblings:
            if sib.proc is not None:
                sib.stop(timeout)
        self.stop_requested = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self._kill()
                self._close_log()
                raise ServerError("%s ignored SIGTERM for %.0f s; killed\n--- log ---\n%s" %
                                  (self.name, timeout, self.log_tail()))
        self.returncode = self.proc.returncode
        self._close_log()
        if self.returncode != 0:
            raise ServerError("%s exited with status %s (state and log kept in %s)\n"
                              "--- log ---\n%s" % (self.name, self.returncode, self.state_dir,
                                                    self.log_tail()))
        if not os.environ.get("STANZAD_KEEP_STATE"):
            shutil.rmtree(self.state_dir, ignore_errors=True)
            if self.redis is not None:
                self.redis.cleanup()
                self.redis = None
        return self.returncode

    def _close_log(self):
        if self._log:
            self._log.close()
            self._log = None

    # -- log --

    def log_size(self):
        try:
            size = os.path.getsize(self.log_path)
        except OSError:
            size = 0
        if not self.siblings:
            return size
        # STANZAD_TEST_CLUSTER: a mark in every node's log (a test's client
        # may be on any of them), still usable as this node's offset.
        return _ClusterLogMark(size, [sib.log_size() for sib in self.siblings])

    def log_text(self, start=0):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(start)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            text = ""
        for i, sib in enumerate(self.siblings):
            text += sib.log_text(start.siblings[i] if isinstance(start, _ClusterLogMark) else 0)
        return text

    def log_tail(self, lines=60, start=0):
        return "\n".join(self.log_text(start).splitlines()[-lines:])

    def wait_log(self, pattern, start=0, timeout=WAIT):
        """Waits until the log (from byte `start`) matches regex `pattern`."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.log_text(start))
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError("log never matched %r; tail:\n%s" %
                                     (pattern, self.log_tail(40, start)))
            time.sleep(0.02)

    # -- accounts --

    def stanzactl(self, *args, stdin=None, timeout=30):
        if not os.access(STANZACTL, os.X_OK):
            raise ServerError("no stanzactl binary at %s (run make first)" % STANZACTL)
        store = ["--storage", self.storage] if self.storage else []
        return subprocess.run([STANZACTL, "--state-dir", self.state_dir] + store + list(args),
                              input=stdin, capture_output=True, text=True, timeout=timeout)

    def db_query(self, sql, params=()):
        """Runs one statement on the daemon's store, SQLite file or
        PostgreSQL database alike; returns the rows as tuples (numbers as
        int, NULL as None). params fill the ? placeholders in order."""
        if not self.storage:
            import sqlite3
            db = sqlite3.connect(os.path.join(self.state_dir, "stanzad.db"), timeout=10)
            try:
                with db:
                    return [tuple(r) for r in db.execute(sql, params).fetchall()]
            finally:
                db.close()
        parts = sql.split("?")
        assert len(parts) == len(params) + 1, "one ? per parameter"
        text = parts[0]
        for v, rest in zip(params, parts[1:]):
            if v is None:
                lit = "NULL"
            elif isinstance(v, (int, float)):
                lit = str(v)
            elif isinstance(v, bytes):
                lit = "'\\x%s'::bytea" % v.hex()
            else:
                lit = "'%s'" % str(v).replace("'", "''")
            text += lit + rest
        out = suite_pg().psql(text, db=self.storage.rsplit("/", 1)[1], rows=True)
        return out

    def add_user(self, user, password):
        r = self.stanzactl("user", "add", user, stdin=password + "\n")
        assert r.returncode == 0, ("stanzactl user add %s failed (%d): %s %s" %
                                   (user, r.returncode, r.stdout, r.stderr))

    def new_account(self, prefix="user", password=None, home=None, workers=SPREAD_WORKERS):
        """Creates a fresh account with stanzactl; returns (user, password, bare JID).
        home=K: a username whose account is at home on worker K of `workers`
        with `--homes hash` (see home_of)."""
        user = uniq(prefix)
        while home is not None and home_of("%s@%s" % (user, DOMAIN), workers) != home:
            user = uniq(prefix)
        password = password or ("pw-" + secrets.token_hex(6))
        self.add_user(user, password)
        return user, password, "%s@%s" % (user, DOMAIN)


# --------------------------------------------------------------------------
# Raw XMPP over a socket
# --------------------------------------------------------------------------

class StreamClosed(Exception):
    """The server ended the stream (</stream:stream>) or the TCP connection."""

    def __init__(self, msg, data=b""):
        super().__init__(msg)
        self.data = data


def client_tls_context(alpn=None):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


class RawStream:
    """One client connection, read through an incremental XML parser.

    next() returns complete top-level elements (ElementTree, Clark names);
    the server's stream header is in self.header (attribute dict). All
    bytes received are kept in self.received for failure messages."""

    def __init__(self, port, direct_tls=False, alpn=("xmpp-client",), timeout=WAIT, source=None):
        self.port = port
        self.timeout = timeout
        # source: another loopback address (127.0.0.2, ...) to look like another host.
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tls = False
        self.received = b""
        self.eof = False
        self.stream_ended = False
        self.header = None
        if direct_tls:
            self._wrap(alpn)
        self._new_parser()

    # -- transport --

    def _wrap(self, alpn=None):
        ctx = client_tls_context(alpn)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=DOMAIN)
        self.tls = True

    def _new_parser(self):
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.pending = []  # complete top-level elements not yet returned
        self._header_seen = False

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _recv(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from the server within the time limit; got so far: %r"
                               % self.received[-2000:])
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            raise TimeoutError("no data from the server within the time limit; got so far: %r"
                               % self.received[-2000:])
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError,
                BrokenPipeError):
            data = b""
        except ssl.SSLError as e:
            raise StreamClosed("TLS error: %s" % e, self.received)
        if not data:
            self.eof = True
        self.received += data
        return data

    def _feed(self, data):
        try:
            self.parser.feed(data)
            events = list(self.parser.read_events())
        except ET.ParseError as e:
            raise AssertionError("server sent malformed XML (%s); bytes: %r" %
                                 (e, self.received[-2000:]))
        for ev, el in events:
            if ev == "start":
                if self.depth == 0:
                    assert el.tag == q(NS_STREAM, "stream"), "bad root %s" % el.tag
                    self.header = dict(el.attrib)
                    self._header_seen = True
                self.depth += 1
            else:
                self.depth -= 1
                if self.depth == 1:
                    self.pending.append(el)
                elif self.depth == 0:
                    self.stream_ended = True

    # -- reading --

    def read_header(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self._header_seen:
            data = self._recv(deadline)
            if not data:
                raise StreamClosed("closed before a stream header", self.received)
            self._feed(data)
        return self.header

    def next(self, timeout=None):
        """The next complete top-level element. Raises StreamClosed when the
        stream or the connection ended first, TimeoutError on silence."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self.pending:
            if self.stream_ended or self.eof:
                raise StreamClosed("stream ended", self.received)
            data = self._recv(deadline)
            if data:
                self._feed(data)
        return self.pending.pop(0)

    def expect(self, tag, timeout=None):
        el = self.next(timeout)
        assert el.tag == tag, "expected %s, got %s: %s" % (tag, el.tag, tostr(el))
        return el

    def nothing_within(self, seconds):
        """True when no element arrives within `seconds` (and the stream stays open)."""
        try:
            el = self.next(seconds)
        except TimeoutError:
            return True
        raise AssertionError("expected silence, got %s" % tostr(el))

    def wait_closed(self, timeout=None):
        """Reads until the server ends the TCP connection (elements that
        arrive meanwhile stay in self.pending). TimeoutError if it does not."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self.eof:
            data = self._recv(deadline)
            if data:
                try:
                    self._feed(data)
                except AssertionError:
                    pass
        return True

    def stream_error(self, timeout=None):
        """Reads until a stream error; returns its condition (local name).

        Checks what RFC 6120 4.9 asks: the error is followed by the closing
        stream tag, and then the server closes the TCP connection. Stanzas
        received before the error are skipped (kept in self.skipped)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        self.skipped = []
        while True:
            try:
                el = self.next(max(0.01, deadline - time.monotonic()))
            except StreamClosed:
                raise AssertionError("stream closed without a stream error; received: %r" %
                                     self.received[-3000:])
            if el.tag == q(NS_STREAM, "error"):
                break
            self.skipped.append(el)
        conds = [local(c.tag) for c in el if c.tag.startswith("{%s}" % NS_STREAMS_ERR)
                 and local(c.tag) != "text"]
        assert len(conds) == 1, "stream error without exactly one condition: %s" % tostr(el)
        self.last_error = el
        # </stream:stream> then the end of the connection.
        self.wait_closed(max(0.5, deadline - time.monotonic()))
        assert self.stream_ended, ("no </stream:stream> after the stream error; bytes: %r" %
                                   self.received[-500:])
        return conds[0]

    # -- stream negotiation --

    def open(self, to=DOMAIN, version="1.0", ns=NS_CLIENT, stream_ns=NS_STREAM, extra=""):
        """Sends a stream header, reads the server's header and features."""
        self.send_header(to=to, version=version, ns=ns, stream_ns=stream_ns, extra=extra)
        self.read_header()
        return self.expect(q(NS_STREAM, "features"))

    def send_header(self, to=DOMAIN, version="1.0", ns=NS_CLIENT, stream_ns=NS_STREAM, extra=""):
        attrs = ""
        if to is not None:
            attrs += " to='%s'" % to
        if version is not None:
            attrs += " version='%s'" % version
        self.send("<?xml version='1.0'?><stream:stream xmlns='%s' xmlns:stream='%s'%s%s>" %
                  (ns, stream_ns, attrs, extra))

    def restart(self):
        self._new_parser()
        self.header = None
        return self.open()

    def starttls(self, alpn=None):
        """STARTTLS by hand: <starttls/>, <proceed/>, handshake, new stream."""
        self.send("<starttls xmlns='%s'/>" % NS_TLS)
        self.expect(q(NS_TLS, "proceed"))
        assert not self.pending, "data after <proceed/>"
        self._wrap(alpn)
        self._new_parser()
        self.header = None
        return self.open()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # -- SASL --

    def auth(self, mechanism, initial=b"", empty=False):
        """Sends <auth/>; initial is raw bytes (base64-encoded here)."""
        if empty:
            payload = ""
        else:
            payload = base64.b64encode(initial).decode() if initial else "="
        self.send("<auth xmlns='%s' mechanism='%s'>%s</auth>" % (NS_SASL, mechanism, payload))

    def response(self, data):
        payload = base64.b64encode(data).decode() if data else ""
        self.send("<response xmlns='%s'>%s</response>" % (NS_SASL, payload))

    def sasl_next(self, timeout=None):
        """The next SASL element: (kind, bytes or condition)."""
        el = self.next(timeout)
        kind = local(el.tag)
        assert el.tag.startswith("{%s}" % NS_SASL), "not a SASL element: %s" % tostr(el)
        if kind == "failure":
            conds = [local(c.tag) for c in el if local(c.tag) != "text"]
            return "failure", conds[0] if conds else None
        text = (el.text or "").strip()
        return kind, (b"" if text in ("", "=") else base64.b64decode(text))

    def scram_login(self, user, password, mech="SCRAM-SHA-256", cb_type=None, cb_data=None,
                    gs2_flag=None):
        """Runs SCRAM to the end. Returns ("success", None) or ("failure", condition)."""
        sc = ScramClient(user, password, mech, cb_type=cb_type, cb_data=cb_data,
                         gs2_flag=gs2_flag)
        self.auth(mech, sc.first())
        kind, data = self.sasl_next()
        if kind != "challenge":
            return kind, data
        self.scram_first = data
        self.response(sc.final(data))
        kind, data = self.sasl_next()
        if kind == "success":
            sc.verify(data)
            return "success", None
        return kind, data

    def bind(self, resource=None, iq_id="bind1"):
        """Binds (after the post-auth restart). Returns the full JID."""
        res = "<resource>%s</resource>" % xml_escape(resource) if resource else ""
        self.send("<iq type='set' id='%s'><bind xmlns='%s'>%s</bind></iq>" % (iq_id, NS_BIND, res))
        el = self.expect(q(NS_CLIENT, "iq"))
        assert el.get("type") == "result" and el.get("id") == iq_id, tostr(el)
        jid = el.find("%s/%s" % (q(NS_BIND, "bind"), q(NS_BIND, "jid")))
        assert jid is not None and jid.text, tostr(el)
        self.jid = jid.text
        return jid.text

    # -- channel binding --

    def tls_unique(self):
        return self.sock.get_channel_binding("tls-unique")

    def tls_exporter(self):
        return tls_exporter(self.sock)


def register_inband(port, user, password):
    """XEP-0077 registration on a raw stream (after STARTTLS)."""
    s = RawStream(port)
    try:
        s.open()
        s.starttls()
        s.send("<iq type='set' id='reg1'><query xmlns='%s'><username>%s</username>"
               "<password>%s</password></query></iq>" %
               (NS_REGISTER, xml_escape(user), xml_escape(password)))
        el = s.expect(q(NS_CLIENT, "iq"))
        assert el.get("type") == "result", "registration of %s failed: %s" % (user, tostr(el))
    finally:
        s.close()


def tostr(el):
    return ET.tostring(el, encoding="unicode")


def login(port, user, password, direct_tls=False, resource=None, mech="SCRAM-SHA-256",
          source=None):
    """A raw stream, authenticated and bound. Returns (stream, full JID)."""
    s = RawStream(port, direct_tls=direct_tls, source=source)
    s.open()
    if not direct_tls:
        s.starttls()
    if mech == "PLAIN":
        s.auth("PLAIN", b"\0" + user.encode() + b"\0" + password.encode())
        kind, cond = s.sasl_next()
    else:
        kind, cond = s.scram_login(user, password, mech)
    assert kind == "success", "login as %s failed: %s" % (user, cond)
    feats = s.restart()
    assert feats.find(q(NS_BIND, "bind")) is not None, tostr(feats)
    jid = s.bind(resource)
    return s, jid


# --------------------------------------------------------------------------
# SCRAM (RFC 5802, RFC 7677), channel binding (RFC 5929, RFC 9266)
# --------------------------------------------------------------------------

class ScramError(AssertionError):
    pass


def _saslname(s):
    return s.replace("=", "=3D").replace(",", "=2C")


class ScramClient:
    def __init__(self, user, password, mech="SCRAM-SHA-256", cb_type=None, cb_data=None,
                 gs2_flag=None, nonce=None):
        base = mech[:-5] if mech.endswith("-PLUS") else mech
        self.hname = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256",
                      "SCRAM-SHA-512": "sha512"}[base]
        self.user = user
        self.password = password.encode("utf-8")
        self.cb_data = cb_data or b""
        if gs2_flag is None:
            gs2_flag = ("p=" + cb_type) if mech.endswith("-PLUS") else "n"
        self.gs2_header = (gs2_flag + ",,").encode()
        self.cnonce = nonce or base64.b64encode(os.urandom(18)).decode()
        self.first_bare = "n=%s,r=%s" % (_saslname(user), self.cnonce)

    def first(self):
        return self.gs2_header + self.first_bare.encode("utf-8")

    def _h(self, data):
        return hashlib.new(self.hname, data).digest()

    def _hmac(self, key, data):
        return hmac.new(key, data, self.hname).digest()

    @staticmethod
    def parse(msg):
        out = {}
        for part in msg.decode("utf-8").split(","):
            k, _, v = part.partition("=")
            out[k] = v
        return out

    def final(self, server_first):
        self.server_first = server_first
        attrs = self.parse(server_first)
        if not attrs.get("r", "").startswith(self.cnonce) or attrs["r"] == self.cnonce:
            raise ScramError("server nonce does not extend ours: %r" % server_first)
        self.salt = base64.b64decode(attrs["s"])
        self.iterations = int(attrs["i"])
        cbind = base64.b64encode(self.gs2_header + self.cb_data).decode()
        without_proof = "c=%s,r=%s" % (cbind, attrs["r"])
        salted = hashlib.pbkdf2_hmac(self.hname, self.password, self.salt, self.iterations)
        client_key = self._hmac(salted, b"Client Key")
        stored_key = self._h(client_key)
        self.auth_message = ("%s,%s,%s" % (self.first_bare, server_first.decode("utf-8"),
                                           without_proof)).encode("utf-8")
        sig = self._hmac(stored_key, self.auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        self.server_key = self._hmac(salted, b"Server Key")
        return ("%s,p=%s" % (without_proof, base64.b64encode(proof).decode())).encode()

    def verify(self, server_final):
        attrs = self.parse(server_final)
        want = base64.b64encode(self._hmac(self.server_key, self.auth_message)).decode()
        if attrs.get("v") != want:
            raise ScramError("bad server signature in %r" % server_final)


_libssl = None


def tls_exporter(sslsock, length=32):
    """RFC 9266 tls-exporter for a Python ssl.SSLSocket, via OpenSSL.

    Python 3.11 has no keying-material exporter, so this reads the SSL*
    out of the _ssl object (PyObject_HEAD, PyObject *Socket, SSL *ssl) and
    calls SSL_export_keying_material from the libssl the interpreter
    loaded. The pointer is checked (SSL_get_version must agree with
    Python's view) before it is used. Returns None if that fails."""
    global _libssl
    try:
        if _libssl is None:
            lib = ctypes.CDLL("libssl.so.3")
            lib.SSL_get_version.restype = ctypes.c_char_p
            lib.SSL_get_version.argtypes = [ctypes.c_void_p]
            lib.SSL_export_keying_material.restype = ctypes.c_int
            lib.SSL_export_keying_material.argtypes = [
                ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
            _libssl = lib
        obj = sslsock._sslobj
        ptr = ctypes.c_void_p.from_address(id(obj) + 3 * ctypes.sizeof(ctypes.c_void_p)).value
        if not ptr or _libssl.SSL_get_version(ptr).decode() != sslsock.version():
            return None
        out = ctypes.create_string_buffer(length)
        label = b"EXPORTER-Channel-Binding"
        if _libssl.SSL_export_keying_material(ptr, out, length, label, len(label),
                                              None, 0, 0) != 1:
            return None
        return out.raw
    except Exception:
        return None


# --------------------------------------------------------------------------
# slixmpp
# --------------------------------------------------------------------------

class ClientFailed(Exception):
    pass


def make_client(jid, password, port, *, mech=None, plugins=(), direct_tls=False,
                channel_binding=None):
    """A slixmpp ClientXMPP for the test server.

    mech restricts SASL to one mechanism. channel_binding=False hides the
    TLS channel binding from slixmpp: slixmpp 1.8 otherwise sends gs2 flag
    'y' with a non-PLUS SCRAM over TLS, which a server that offers -PLUS
    must refuse as a downgrade (RFC 5802 section 6)."""
    import slixmpp

    c = slixmpp.ClientXMPP(jid, password)
    c.ssl_context.check_hostname = False
    c.ssl_context.verify_mode = ssl.CERT_NONE
    c.use_ipv6 = False
    c.use_aiodns = False
    c.whitespace_keepalive = False
    c.test_port = port
    c.test_direct_tls = direct_tls

    async def no_dns(domain, port=None):
        # The test server is on 127.0.0.1 at a random port: never resolve.
        return [(DOMAIN, "127.0.0.1", c.test_port)]
    c.get_dns_records = no_dns

    for p in plugins:
        c.register_plugin(p)
    if mech:
        c["feature_mechanisms"].use_mech = mech
    if channel_binding is None:
        channel_binding = mech is None or mech.endswith("-PLUS")
    if not channel_binding:
        mechs = c["feature_mechanisms"]
        default_cb = mechs.sasl_callback

        def creds_without_cb(required, optional):
            r = default_cb(required, optional)
            if "channel_binding" in r:
                r["channel_binding"] = None
            return r
        mechs.sasl_callback = creds_without_cb

    # Record what happened for the assertions and failure messages.
    c.test_events = []
    c.test_stream_errors = []
    c.test_auth_failures = []
    c.test_messages = asyncio.Queue()
    c.add_event_handler("stream_error", lambda e: c.test_stream_errors.append(e["condition"]))
    c.add_event_handler("failed_auth",
                        lambda s: c.test_auth_failures.append(s["condition"]))
    c.add_event_handler("message", lambda m: c.test_messages.put_nowait(m))
    for ev in ("connected", "disconnected", "session_start", "auth_success",
               "failed_all_auth", "connection_failed", "session_bind"):
        c.add_event_handler(ev, (lambda name: lambda *_: c.test_events.append(name))(ev))
    return c


async def connect_and_wait(c, timeout=WAIT):
    """Connects and waits for session_start. Raises ClientFailed on auth
    failure, disconnection or connection failure."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def done(result=None, exc=None):
        if not fut.done():
            if exc:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

    h = {
        "session_start": lambda _: done(True),
        "failed_all_auth": lambda _: done(exc=ClientFailed("auth failed: %s" % c.test_auth_failures)),
        "disconnected": lambda r: done(exc=ClientFailed("disconnected before session: %s; stream errors %s"
                                                        % (r, c.test_stream_errors))),
        "connection_failed": lambda e: done(exc=ClientFailed("connection failed: %s" % e)),
    }
    for k, v in h.items():
        c.add_event_handler(k, v, disposable=True)
    c.connect(("127.0.0.1", c.test_port), use_ssl=c.test_direct_tls)
    try:
        await asyncio.wait_for(fut, timeout)
    except asyncio.TimeoutError:
        raise ClientFailed("no session within %.0f s; events %s" % (timeout, c.test_events))
    finally:
        for k, v in h.items():
            c.del_event_handler(k, v)


async def wait_event(c, name, timeout=WAIT):
    """Waits for the next slixmpp event `name`; returns its argument."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def h(arg=None):
        if not fut.done():
            fut.set_result(arg)
    c.add_event_handler(name, h, disposable=True)
    try:
        return await asyncio.wait_for(fut, timeout)
    except asyncio.TimeoutError:
        raise AssertionError("event %s not seen within %.0f s; events %s" %
                             (name, timeout, c.test_events))
    finally:
        c.del_event_handler(name, h)


async def next_message(c, timeout=WAIT, body=None):
    """The next message the client received (optionally with a given body)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            m = await asyncio.wait_for(c.test_messages.get(),
                                       max(0.01, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise AssertionError("no message%s within %.0f s" %
                                 (" with body %r" % body if body else "", timeout))
        if body is None or m["body"] == body:
            return m


async def disconnect(c, timeout=5):
    """Ends a client's stream if it is still up; bounded."""
    c.cancel_connection_attempt()
    if c.transport is None:
        return
    try:
        await asyncio.wait_for(c.disconnect(wait=1.0), timeout)
    except Exception:
        pass
    if c.transport is not None:
        c.abort()
