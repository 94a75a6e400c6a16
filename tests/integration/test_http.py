"""The HTTP listener: XEP-0156 discovery (host-meta), keep-alive and
pipelining, HTTPS, and robustness: oversized headers and targets, slow
senders, idle connections, unknown paths and methods, bodies where none
belongs, garbage."""
import json
import socket
import ssl
import time
import xml.etree.ElementTree as ET

from harness import WAIT, free_ports

XRD = "{http://docs.oasis-open.org/ns/xri/xrd-1.0}"
WS_REL = "urn:xmpp:alt-connections:websocket"


class Conn:
    """A client connection with a receive buffer (responses may be pipelined)."""

    def __init__(self, port, tls=False, timeout=WAIT):
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s, server_hostname="localhost")
        self.sock = s
        self.buf = b""

    def sendall(self, data):
        self.sock.sendall(data)

    def close(self):
        self.sock.close()

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server; have %r" % self.buf[:200])
        self.buf += chunk

    def response(self):
        """One response: (status, headers dict, body)."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def closed_within(self, seconds):
        """True when the server closes the connection (EOF or reset) within `seconds`."""
        self.sock.settimeout(seconds)
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        return False


def get(port, path, extra=b"", tls=False):
    c = Conn(port, tls)
    try:
        c.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n" + extra + b"\r\n")
        return c.response()
    finally:
        c.close()


def test_host_meta_xrd_and_json(server):
    status, h, body = get(server.http_port, "/.well-known/host-meta")
    assert status == 200
    assert h["content-type"].startswith("application/xrd+xml")
    assert h["access-control-allow-origin"] == "*"
    links = ET.fromstring(body).findall(XRD + "Link")
    assert [(ln.get("rel"), ln.get("href")) for ln in links] == [
        (WS_REL, "ws://localhost/xmpp-websocket")]

    status, h, body = get(server.http_port, "/.well-known/host-meta.json",
                          extra=b"")
    assert status == 200 and h["content-type"] == "application/json"
    assert json.loads(body) == {"links": [{"rel": WS_REL, "href": "ws://localhost/xmpp-websocket"}]}


def test_host_meta_names_the_host_the_client_used(server):
    s = Conn(server.http_port)
    try:
        s.sendall(b"GET /.well-known/host-meta.json HTTP/1.1\r\nHost: chat.example:5280\r\n\r\n")
        _, _, body = s.response()
    finally:
        s.close()
    assert json.loads(body)["links"][0]["href"] == "ws://chat.example:5280/xmpp-websocket"
    # A Host that is not a plain host[:port] is not echoed.
    s = Conn(server.http_port)
    try:
        s.sendall(b"GET /.well-known/host-meta.json HTTP/1.1\r\nHost: a\"b<c>\r\n\r\n")
        _, _, body = s.response()
    finally:
        s.close()
    assert json.loads(body)["links"][0]["href"] == \
        "ws://127.0.0.1:%d/xmpp-websocket" % server.http_port


def test_https_listener_and_wss_discovery(make_server):
    (https_port,) = free_ports(1)
    srv = make_server("--listen-https", "127.0.0.1:%d" % https_port)
    status, _, body = get(https_port, "/.well-known/host-meta.json", tls=True)
    assert status == 200
    assert json.loads(body)["links"][0]["href"] == "wss://localhost/xmpp-websocket"
    # Slot URLs prefer the HTTPS listener.
    assert "base_url=https://127.0.0.1:%d" % https_port in srv.log_text()


def test_keep_alive_and_pipelining(server):
    s = Conn(server.http_port)
    try:
        s.sendall(b"GET /.well-known/host-meta HTTP/1.1\r\nHost: localhost\r\n\r\n")
        status, h, _ = s.response()
        assert status == 200 and h["connection"] == "keep-alive"
        # Two requests in one write: two answers, in order, on the same connection.
        s.sendall(b"GET /nothing HTTP/1.1\r\nHost: localhost\r\n\r\n"
                  b"GET /.well-known/host-meta.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
        status1, _, _ = s.response()
        status2, h2, body2 = s.response()
        assert (status1, status2) == (404, 200)
        assert json.loads(body2)["links"]
        # Connection: close is honoured.
        s.sendall(b"GET /.well-known/host-meta HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, h, _ = s.response()
        assert status == 200 and h["connection"] == "close"
        assert s.closed_within(3)
    finally:
        s.close()


def test_oversized_headers_get_431(server):
    s = Conn(server.http_port)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Filler: " + b"a" * 9000 + b"\r\n\r\n")
        status, h, _ = s.response()
        assert status == 431 and h["connection"] == "close"
        assert s.closed_within(3)
    finally:
        s.close()
    # Many small headers count the same.
    s = Conn(server.http_port)
    try:
        s.sendall(b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(1200)) + b"\r\n")
        assert s.response()[0] == 431
    finally:
        s.close()


def test_long_target_gets_414(server):
    assert get(server.http_port, "/" + "a" * 3000)[0] == 414


def test_slow_headers_time_out(make_server):
    srv = make_server("--http-request-timeout", "2")
    s = Conn(srv.http_port)
    try:
        # A byte every 0.4 s keeps the connection busy but the headers never end.
        start = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        status = None
        s.sock.settimeout(0.4)
        while time.monotonic() - start < 8:
            try:
                s.sendall(b"X")
                data = s.sock.recv(4096)
                if data:
                    status = int(data.split()[1])
                    break
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        assert status == 408, "no 408 for a trickled request"
        assert time.monotonic() - start < 5
        assert s.closed_within(3)
    finally:
        s.close()
    assert "http.timeout" in srv.log_text()


def test_idle_keep_alive_connection_is_closed(make_server):
    srv = make_server("--http-idle-timeout", "1")
    s = Conn(srv.http_port)
    try:
        assert s.closed_within(4)
    finally:
        s.close()


def test_unknown_path_and_wrong_method(server):
    status, _, body = get(server.http_port, "/no/such/thing")
    assert status == 404 and body.startswith(b"404 Not Found")
    s = Conn(server.http_port)
    try:
        s.sendall(b"DELETE /.well-known/host-meta HTTP/1.1\r\nHost: localhost\r\n\r\n")
        status, h, _ = s.response()
        assert status == 405
        assert h["allow"] == "GET, HEAD, OPTIONS"
    finally:
        s.close()


def test_body_where_none_belongs_gets_413(server):
    s = Conn(server.http_port)
    try:
        s.sendall(b"GET /.well-known/host-meta HTTP/1.1\r\nHost: localhost\r\n"
                  b"Content-Length: 5\r\n\r\nhello")
        status, h, _ = s.response()
        assert status == 413 and h["connection"] == "close"
    finally:
        s.close()


def test_garbage_gets_400_and_the_server_lives_on(server):
    for junk in (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40,
                 b"HELLO THERE\r\n\r\n", b"GET / HTTP/9.9x\r\n\r\n"):
        s = Conn(server.http_port)
        try:
            s.sendall(junk)
            status, h, _ = s.response()
            assert status == 400 and h["connection"] == "close"
        finally:
            s.close()
    assert get(server.http_port, "/.well-known/host-meta")[0] == 200
