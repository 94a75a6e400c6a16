"""XMPP over WebSocket (RFC 7395) at /xmpp-websocket on the HTTP listener.

A real WebSocket XMPP client (xmpp.js, the npm package @xmpp/client, in
tests/integration/ws-client/) logs in over ws:// and wss:// and exchanges
messages with a TCP client; a small WebSocket client written here checks
the handshake, the framing (<open/>, <close/>, one element per message,
fragmentation, ping) and what breaks it (unmasked frames, oversized and
binary messages, a missing 'xmpp' subprotocol). With account homes spread
over the workers, a WebSocket stream (accepted by worker 0's HTTP
listener) moves to its account's home worker at authentication like a
TCP stream."""
import base64
import hashlib
import json
import os
import queue
import re
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import xml.etree.ElementTree as ET

import pytest

from harness import (DOMAIN, NS_BIND, NS_CLIENT, NS_SASL, NS_STREAM, NS_STREAMS_ERR, NS_TLS, WAIT,
                     connect_and_wait, free_ports, login, next_message, q, tostr)
from sasl2util import NS_SASL2, inline_xml, new_ua_id, sasl2_mechanisms, scram_sasl2

NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CLIENT_DIR = os.path.join(os.path.dirname(__file__), "ws-client")

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class WSError(Exception):
    pass


class WS:
    """A minimal RFC 6455 client: masked frames out, unmasked frames in."""

    def __init__(self, port, protocols=("xmpp",), tls=False, timeout=WAIT, headers=b""):
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s, server_hostname=DOMAIN)
        self.sock = s
        self.buf = b""
        key = base64.b64encode(os.urandom(16))
        req = (b"GET /xmpp-websocket HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key +
               b"\r\n")
        if protocols:
            req += b"Sec-WebSocket-Protocol: " + ", ".join(protocols).encode() + b"\r\n"
        s.sendall(req + headers + b"\r\n")
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            self.headers[k.strip().lower()] = v.strip()
        self.expected_accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise WSError("connection closed; have %r" % self.buf[:200])
        self.buf += chunk

    def _need(self, n):
        while len(self.buf) < n:
            self._fill()

    def send_frame(self, opcode, payload=b"", fin=True, mask=True, rsv=0, length=None):
        self.sock.sendall(self.frame_bytes(opcode, payload, fin, mask, rsv, length))

    @staticmethod
    def frame_bytes(opcode, payload=b"", fin=True, mask=True, rsv=0, length=None):
        n = len(payload) if length is None else length
        head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
        mbit = 0x80 if mask else 0
        if n < 126:
            head += bytes([mbit | n])
        elif n < 65536:
            head += bytes([mbit | 126]) + struct.pack(">H", n)
        else:
            head += bytes([mbit | 127]) + struct.pack(">Q", n)
        if mask:
            key = os.urandom(4)
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            head += key
        return head + payload

    def send(self, text):
        self.send_frame(OP_TEXT, text.encode())

    def frame(self, timeout=WAIT):
        """The next frame: (fin, opcode, payload)."""
        self.sock.settimeout(timeout)
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "server frames must not be masked"
        n, off = b1 & 0x7f, 2
        if n == 126:
            self._need(4)
            n, off = struct.unpack(">H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, off = struct.unpack(">Q", self.buf[2:10])[0], 10
        self._need(off + n)
        payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
        return bool(b0 & 0x80), b0 & 0x0f, payload

    def text(self, timeout=WAIT):
        """The next text message (control frames other than close are skipped)."""
        while True:
            fin, op, payload = self.frame(timeout)
            if op == OP_CLOSE:
                raise WSError("close frame %r instead of a message" % payload)
            if op == OP_TEXT:
                assert fin, "the server sends whole messages"
                return payload.decode()

    def xml(self, timeout=WAIT):
        return ET.fromstring(self.text(timeout))

    # The RawStream calls sasl2util uses.
    def next(self, timeout=WAIT):
        return self.xml(timeout)

    def expect(self, tag, timeout=WAIT):
        el = self.xml(timeout)
        assert el.tag == tag, "expected %s, got %s" % (tag, tostr(el))
        return el

    def close_code(self, timeout=WAIT):
        """Reads until a close frame; returns its code."""
        while True:
            _, op, payload = self.frame(timeout)
            if op == OP_CLOSE:
                return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None

    def eof_within(self, seconds):
        self.sock.settimeout(seconds)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()

    # XMPP on top

    def open(self, to=DOMAIN):
        self.send("<open xmlns='%s' to='%s' version='1.0'/>" % (NS_FRAMING, to))
        hdr = self.xml()
        assert hdr.tag == q(NS_FRAMING, "open"), hdr.tag
        return hdr, self.xml()


def open_stream(port, **kw):
    ws = WS(port, **kw)
    assert ws.status == 101, "no upgrade: %d" % ws.status
    return ws


def plain_login(ws, user, password, resource="raw"):
    """PLAIN, restart, bind over WebSocket; returns the bound JID."""
    _, feats = ws.open()
    mechs = [m.text for m in feats.iter(q(NS_SASL, "mechanism"))]
    assert "PLAIN" in mechs, mechs
    cred = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
    ws.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, cred))
    assert ws.xml().tag == q(NS_SASL, "success")
    _, feats = ws.open()
    assert feats.find(q(NS_BIND, "bind")) is not None
    ws.send("<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='%s'>"
            "<resource>%s</resource></bind></iq>" % (NS_BIND, resource))
    r = ws.xml()
    assert r.get("type") == "result", ET.tostring(r)
    return r.find(".//" + q(NS_BIND, "jid")).text


def sasl2_login(ws, user, password, tag="raw"):
    """SCRAM over SASL2 with Bind 2 over WebSocket (no restart); returns the bound JID."""
    _, feats = ws.open()
    assert "SCRAM-SHA-256" in sasl2_mechanisms(feats), tostr(feats)
    el = scram_sasl2(ws, user, password, extra=inline_xml(new_ua_id(), bind=tag))
    assert el.tag == q(NS_SASL2, "success"), tostr(el)
    return el.find(q(NS_SASL2, "authorization-identifier")).text


@pytest.fixture(scope="module")
def wsrv():
    """A server that allows ws:// (require_tls = no)."""
    from harness import StanzadServer
    s = StanzadServer(["--require-tls", "no"], name="stanzad(ws)").start()
    yield s
    s.stop()


# ---- Handshake ----

def test_upgrade_answers_with_accept_and_the_xmpp_protocol(wsrv):
    ws = open_stream(wsrv.http_port)
    try:
        assert ws.headers["upgrade"].lower() == "websocket"
        assert ws.headers["sec-websocket-accept"] == ws.expected_accept
        assert ws.headers["sec-websocket-protocol"] == "xmpp"
    finally:
        ws.close()


def test_upgrade_without_the_xmpp_subprotocol_is_refused(wsrv):
    for protocols in ((), ("chat", "superchat")):
        ws = WS(wsrv.http_port, protocols=protocols)
        try:
            assert ws.status == 400
            assert "sec-websocket-protocol" not in ws.headers
            assert ws.eof_within(3)
        finally:
            ws.close()


def test_plain_ws_is_refused_while_tls_is_required(server):
    ws = WS(server.http_port)
    try:
        assert ws.status == 403
    finally:
        ws.close()


# ---- Framing ----

def test_open_features_and_close(wsrv):
    ws = open_stream(wsrv.http_port)
    try:
        hdr, feats = ws.open()
        assert hdr.get("from") == DOMAIN and hdr.get("version") == "1.0" and hdr.get("id")
        assert feats.tag == q(NS_STREAM, "features")
        # No STARTTLS over WebSocket (RFC 7395 3.8); SASL is offered.
        assert feats.find(q(NS_TLS, "starttls")) is None
        assert feats.find(q(NS_SASL, "mechanisms")) is not None
        ws.send("<close xmlns='%s'/>" % NS_FRAMING)
        assert ws.xml().tag == q(NS_FRAMING, "close")
        assert ws.close_code() == 1000
        assert ws.eof_within(3)
    finally:
        ws.close()


def test_login_bind_and_stanzas(wsrv):
    user, pw, bare = wsrv.new_account("ws")
    ws = open_stream(wsrv.http_port)
    try:
        full = plain_login(ws, user, pw)
        assert full == bare + "/raw"
        # Stanzas arrive one per message, in jabber:client.
        ws.send("<iq xmlns='jabber:client' type='get' id='p1' to='%s'>"
                "<ping xmlns='urn:xmpp:ping'/></iq>" % DOMAIN)
        r = ws.xml()
        assert (r.tag, r.get("type"), r.get("id")) == ("{jabber:client}iq", "result", "p1")
        # A message to oneself comes back as one frame.
        ws.send("<message xmlns='jabber:client' to='%s' type='chat'><body>hi &amp; bye</body>"
                "</message>" % full)
        m = ws.xml()
        assert m.tag == "{jabber:client}message"
        assert m.find("{jabber:client}body").text == "hi & bye"
    finally:
        ws.close()


def test_stream_management_resumes_across_websockets(wsrv):
    NS_SM = "urn:xmpp:sm:3"
    user, pw, bare = wsrv.new_account("ws")
    ws = open_stream(wsrv.http_port)
    try:
        full = plain_login(ws, user, pw, "sm")
        ws.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
        enabled = ws.xml()
        assert enabled.tag == q(NS_SM, "enabled"), ET.tostring(enabled)
        previd = enabled.get("id")
    finally:
        ws.close()  # no <close/>, no close frame: a lost connection
    ws = open_stream(wsrv.http_port)
    try:
        _, feats = ws.open()
        cred = base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode()).decode()
        ws.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, cred))
        assert ws.xml().tag == q(NS_SASL, "success")
        ws.open()
        ws.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, previd))
        resumed = ws.xml()
        assert resumed.tag == q(NS_SM, "resumed"), ET.tostring(resumed)
        # The resumed session is the old full JID.
        ws.send("<message xmlns='jabber:client' to='%s' type='chat'><body>back</body></message>"
                % full)
        while True:
            m = ws.xml()
            if m.tag == "{jabber:client}message":
                break
        assert m.find("{jabber:client}body").text == "back"
    finally:
        ws.close()


def test_fragmented_message_with_a_ping_between(wsrv):
    ws = open_stream(wsrv.http_port)
    try:
        text = ("<open xmlns='%s' to='%s' version='1.0'/>" % (NS_FRAMING, DOMAIN)).encode()
        ws.send_frame(OP_TEXT, text[:10], fin=False)
        ws.send_frame(OP_PING, b"are you there")
        ws.send_frame(OP_CONT, text[10:20], fin=False)
        ws.send_frame(OP_CONT, text[20:], fin=True)
        fin, op, payload = ws.frame()
        assert (op, payload) == (OP_PONG, b"are you there")
        assert ws.xml().tag == q(NS_FRAMING, "open")
        assert ws.xml().tag == q(NS_STREAM, "features")
    finally:
        ws.close()


def test_stream_error_is_framed(wsrv):
    ws = open_stream(wsrv.http_port)
    try:
        ws.send("<open xmlns='%s' to='elsewhere.example' version='1.0'/>" % NS_FRAMING)
        assert ws.xml().tag == q(NS_FRAMING, "open")
        err = ws.xml()
        assert err.tag == q(NS_STREAM, "error")
        assert err.find(q(NS_STREAMS_ERR, "host-unknown")) is not None
        assert ws.xml().tag == q(NS_FRAMING, "close")
        assert ws.close_code() == 1000
    finally:
        ws.close()


def test_stanza_before_open_is_a_stream_error(wsrv):
    ws = open_stream(wsrv.http_port)
    try:
        ws.send("<iq xmlns='jabber:client' type='get' id='x'/>")
        assert ws.xml().tag == q(NS_FRAMING, "open")
        assert ws.xml().tag == q(NS_STREAM, "error")
    finally:
        ws.close()


def test_unmasked_frame_closes_with_1002(wsrv):
    ws = open_stream(wsrv.http_port)
    try:
        ws.send_frame(OP_TEXT, b"<open xmlns='%s' to='localhost' version='1.0'/>" %
                      NS_FRAMING.encode(), mask=False)
        assert ws.close_code() == 1002
        assert ws.eof_within(3)
    finally:
        ws.close()
    assert "client frames must be masked" in wsrv.log_text()


def test_oversized_message_closes_with_1009(wsrv):
    ws = open_stream(wsrv.http_port)
    try:
        # Only the header: the server refuses before any of the megabyte arrives.
        ws.send_frame(OP_TEXT, b"", length=1 << 20)
        assert ws.close_code() == 1009
    finally:
        ws.close()
    # Fragments add up against the same limit (16 KiB before authentication).
    ws = open_stream(wsrv.http_port)
    try:
        for _ in range(3):
            ws.send_frame(OP_TEXT if _ == 0 else OP_CONT, b" " * 8000, fin=False)
        assert ws.close_code() == 1009
    finally:
        ws.close()


def test_binary_and_reserved_bits_are_refused(wsrv):
    ws = open_stream(wsrv.http_port)
    try:
        ws.send_frame(OP_BINARY, b"\x00\x01")
        assert ws.close_code() == 1003
    finally:
        ws.close()
    ws = open_stream(wsrv.http_port)
    try:
        ws.send_frame(OP_TEXT, b"<x/>", rsv=1)
        assert ws.close_code() == 1002
    finally:
        ws.close()
    ws = open_stream(wsrv.http_port)
    try:
        ws.send_frame(OP_CONT, b"<x/>")
        assert ws.close_code() == 1002
    finally:
        ws.close()


def test_close_frame_is_answered(wsrv):
    ws = open_stream(wsrv.http_port)
    try:
        ws.open()
        ws.send_frame(OP_CLOSE, struct.pack(">H", 1001))
        assert ws.close_code() == 1001
        assert ws.eof_within(3)
    finally:
        ws.close()


def test_wss_offers_channel_binding(make_server):
    (port,) = free_ports(1)
    srv = make_server("--listen-https", "127.0.0.1:%d" % port)
    ws = open_stream(port, tls=True)
    try:
        _, feats = ws.open()
        mechs = [m.text for m in feats.iter(q(NS_SASL, "mechanism"))]
        assert "SCRAM-SHA-256-PLUS" in mechs and "PLAIN" in mechs
        assert feats.find(q(NS_TLS, "starttls")) is None
    finally:
        ws.close()
    assert "ws.open" in srv.log_text()


# ---- A real client: xmpp.js ----

def node_client_or_skip():
    node = shutil.which("node")
    if not node:
        pytest.skip("node is not installed (scripts/install-deps.sh installs it)")
    out = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    major, minor = (int(x) for x in out.lstrip("v").split(".")[:2])
    if (major, minor) < (20, 10):
        pytest.skip("@xmpp/client needs Node >= 20.10, found %s" % out)
    if not os.path.isdir(os.path.join(CLIENT_DIR, "node_modules", "@xmpp", "client")):
        pytest.skip("@xmpp/client is not installed: run 'npm ci' in %s "
                    "(scripts/install-deps.sh does)" % CLIENT_DIR)
    return node


class NodeClient:
    """tests/integration/ws-client/client.mjs as a subprocess, JSON lines both ways."""

    def __init__(self, node, service, jid, password, resource, insecure_tls=False):
        env = dict(os.environ)
        if insecure_tls:
            env["NODE_TLS_REJECT_UNAUTHORIZED"] = "0"  # the server's self-signed certificate
        self.proc = subprocess.Popen(
            [node, "--experimental-websocket", "--no-warnings", "client.mjs", service, jid,
             password, resource], cwd=CLIENT_DIR, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                self.events.put({"event": "garbage", "line": line})
        self.events.put({"event": "exit"})

    def wait(self, event, timeout=WAIT):
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                ev = self.events.get(timeout=deadline - time.monotonic())
            except queue.Empty:
                break
            seen.append(ev)
            if ev["event"] == event:
                return ev
            if ev["event"] in ("error", "exit"):
                break
        raise AssertionError("no %r from the node client; saw %s; stderr: %s" %
                             (event, seen, self._stderr()))

    def _stderr(self):
        if self.proc.poll() is None:
            return "(running)"
        return self.proc.stderr.read()[-2000:]

    def cmd(self, **kw):
        self.proc.stdin.write(json.dumps(kw) + "\n")
        self.proc.stdin.flush()

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.cmd(cmd="stop")
                self.proc.wait(timeout=5)
            except Exception:
                self.proc.kill()
                self.proc.wait(timeout=5)


def exchange_with_tcp_client(srv, node, service, xmpp, arun, insecure_tls=False,
                             homes=(None, None)):
    """homes: the workers the WebSocket and the TCP account are at home on
    (with --homes hash and two workers), None for any."""
    a_user, a_pw, a_bare = srv.new_account("wsa", home=homes[0])
    b_user, b_pw, b_bare = srv.new_account("tcp", home=homes[1])
    nc = NodeClient(node, service, a_bare, a_pw, "browser", insecure_tls)
    try:
        online = nc.wait("online")
        # xmpp.js binds with Bind 2 (XEP-0386) where SASL2 is offered: its
        # resource is then a tag starting a server-made resource.
        full = online["jid"]
        assert full == a_bare + "/browser" or full.startswith(a_bare + "/browser/"), full

        async def go():
            b = xmpp(b_bare, b_pw, srv.c2s_port)
            await connect_and_wait(b)
            # TCP -> WebSocket
            b.send_message(mto=full, mbody="hello over tcp", mtype="chat")
            got = await _in_thread(nc.wait, "message")
            assert got["body"] == "hello over tcp" and got["from"].startswith(b_bare)
            # WebSocket -> TCP
            nc.cmd(cmd="message", to=str(b.boundjid), body="hello over websocket")
            m = await next_message(b)
            assert m["body"] == "hello over websocket"
            assert str(m["from"]) == full
        arun(go())
    finally:
        nc.stop()


async def _in_thread(fn, *args):
    import asyncio
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def test_xmpp_js_over_ws_talks_to_a_tcp_client(wsrv, xmpp, arun):
    node = node_client_or_skip()
    exchange_with_tcp_client(wsrv, node, "ws://127.0.0.1:%d/xmpp-websocket" % wsrv.http_port,
                             xmpp, arun)
    assert "ws.open" in wsrv.log_text()


def test_xmpp_js_over_wss_with_tls_required(make_server, xmpp, arun):
    node = node_client_or_skip()
    (port,) = free_ports(1)
    srv = make_server("--listen-https", "127.0.0.1:%d" % port)
    exchange_with_tcp_client(srv, node, "wss://127.0.0.1:%d/xmpp-websocket" % port, xmpp, arun,
                             insecure_tls=True)
    log = srv.log_text()
    assert "ws.open" in log and "secure=yes" in log


# ---- Account homes: a WebSocket stream lives at its account's home ----

@pytest.fixture(scope="module")
def homes_srv():
    """Two workers, homes by hash, ws:// and wss://. Accounts are placed on
    a worker by the hash of their JID and this worker count, so the
    suite-wide STANZAD_TEST_ARGS (which may change both) are left out."""
    from harness import StanzadServer
    (https,) = free_ports(1)
    s = StanzadServer(["--workers", "2", "--homes", "hash", "--require-tls", "no",
                       "--listen-https", "127.0.0.1:%d" % https], name="stanzad(ws homes)",
                      suite_args=False)
    s.start()
    s.https_port = https
    yield s
    s.stop()


def ws_next_message(ws):
    while True:
        el = ws.xml()
        if el.tag == q(NS_CLIENT, "message"):
            return el


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
@pytest.mark.parametrize("sasl", ["sasl", "sasl2"])
def test_ws_session_moves_to_its_home_worker(homes_srv, tls, sasl):
    """The HTTP listener is worker 0's; an account at home on worker 1
    logging in over WebSocket moves there with its framing (and TLS)
    state, and talks to TCP clients at home on either worker."""
    srv = homes_srv
    wu, wp, _ = srv.new_account("wsh", home=1)
    au, ap, _ = srv.new_account("tcp0", home=0)
    bu, bp, _ = srv.new_account("tcp1", home=1)
    mark = srv.log_size()
    ws = open_stream(srv.https_port if tls else srv.http_port, tls=tls)
    peers = []
    try:
        full = (plain_login if sasl == "sasl" else sasl2_login)(ws, wu, wp, "home")
        cid = re.findall(r"event=ws\.open conn=(\d+)", srv.log_text(mark))[-1]
        srv.wait_log(r"event=conn\.move conn=%s from=0 to=1" % cid, start=mark)
        peers = [login(srv.c2s_port, au, ap), login(srv.c2s_port, bu, bp)]
        for i, (peer, pfull) in enumerate(peers):
            peer.send("<message to='%s' type='chat' id='in%d'><body>to ws %d</body></message>"
                      % (full, i, i))
            m = ws_next_message(ws)
            assert m.get("from") == pfull and m.findtext(q(NS_CLIENT, "body")) == "to ws %d" % i, \
                tostr(m)
            ws.send("<message xmlns='jabber:client' to='%s' type='chat' id='out%d'>"
                    "<body>from ws %d</body></message>" % (pfull, i, i))
            m = peer.expect(q(NS_CLIENT, "message"))
            assert m.get("from") == full and m.findtext(q(NS_CLIENT, "body")) == "from ws %d" % i, \
                tostr(m)
        # The session is in the home worker's directory: its own JID reaches it.
        ws.send("<message xmlns='jabber:client' to='%s' type='chat'><body>self</body></message>"
                % full)
        assert ws_next_message(ws).findtext(q(NS_CLIENT, "body")) == "self"
    finally:
        ws.close()
        for peer, _ in peers:
            peer.close()


def test_ws_frames_sent_with_the_auth_go_along(homes_srv):
    """PLAIN needs no round trip: a client may send <open/> and the start
    of its next frame right behind <auth/>. They arrive on worker 0 while
    the stream is about to move, go along with it, and are read at home
    on worker 1, where the rest of the frame arrives."""
    srv = homes_srv
    user, pw, bare = srv.new_account("wsp", home=1)
    mark = srv.log_size()
    ws = open_stream(srv.http_port)
    try:
        ws.open()
        cred = base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode()).decode()
        auth = WS.frame_bytes(OP_TEXT, ("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>"
                                        % (NS_SASL, cred)).encode())
        reopen = WS.frame_bytes(OP_TEXT, ("<open xmlns='%s' to='%s' version='1.0'/>"
                                          % (NS_FRAMING, DOMAIN)).encode())
        bind = WS.frame_bytes(OP_TEXT, ("<iq xmlns='jabber:client' type='set' id='b1'><bind "
                                        "xmlns='%s'><resource>piped</resource></bind></iq>"
                                        % NS_BIND).encode())
        ws.sock.sendall(auth + reopen + bind[:3])
        assert ws.xml().tag == q(NS_SASL, "success")
        assert ws.xml().tag == q(NS_FRAMING, "open")
        assert ws.xml().find(q(NS_BIND, "bind")) is not None
        cid = re.findall(r"event=ws\.open conn=(\d+)", srv.log_text(mark))[-1]
        srv.wait_log(r"event=conn\.move conn=%s from=0 to=1" % cid, start=mark)
        ws.sock.sendall(bind[3:])
        r = ws.xml()
        assert r.get("type") == "result", tostr(r)
        assert r.find(".//" + q(NS_BIND, "jid")).text == bare + "/piped"
    finally:
        ws.close()


def test_xmpp_js_at_home_on_worker1_talks_to_tcp_clients(homes_srv, xmpp, arun):
    node = node_client_or_skip()
    for tcp_home in (0, 1):
        exchange_with_tcp_client(homes_srv, node,
                                 "ws://127.0.0.1:%d/xmpp-websocket" % homes_srv.http_port, xmpp,
                                 arun, homes=(1, tcp_home))
    assert re.search(r"event=conn\.move conn=\d+ from=0 to=1", homes_srv.log_text())
