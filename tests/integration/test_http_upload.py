"""XEP-0363 HTTP File Upload: slots through slixmpp's xep_0363 plugin, PUT
and GET on the HTTP listener with Python's http.client.

Covers discovery (disco#items of the server, the service's identity, feature
and max-file-size form), the size, type and quota checks of a slot request,
the PUT checks (length, type, expiry, a second PUT), GET and HEAD of a file
with its type and length, and persistence and expiry across restarts."""
import asyncio
import http.client
import os
import time
import urllib.parse
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from harness import DOMAIN, WAIT, connect_and_wait
from imutil import restart

UPLOAD = "upload." + DOMAIN
NS_UPLOAD = "urn:xmpp:http:upload:0"


def request(port, method, path, body=None, headers=None, timeout=WAIT):
    """One HTTP request on a fresh connection: (status, headers dict, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def url_path(url):
    """The path of a slot URL (the port changes across restarts)."""
    return urllib.parse.urlsplit(url).path


async def client(xmpp, server, user, pw):
    c = xmpp("%s@%s" % (user, DOMAIN), pw, server.c2s_port,
             plugins=("xep_0030", "xep_0363"))
    await connect_and_wait(c)
    return c


async def slot(c, filename, size, ctype=None):
    """(put_url, get_url) of a new slot, or raises IqError."""
    iq = await c["xep_0363"].request_slot(UPLOAD, filename, size, ctype, timeout=WAIT)
    s = iq["http_upload_slot"]
    return s["put"]["url"], s["get"]["url"]


async def slot_error(c, filename, size, ctype=None):
    """The error stanza a slot request gets (fails if it gets a slot)."""
    with pytest.raises(IqError) as e:
        await slot(c, filename, size, ctype)
    return e.value.iq["error"]


def put(port, url, body, ctype="text/plain", headers=None):
    h = {"Content-Type": ctype}
    h.update(headers or {})
    return request(port, "PUT", url_path(url), body=body, headers=h)


def test_discovery_lists_the_service_with_its_limit(make_server, xmpp, arun):
    srv = make_server("--upload-max-bytes", "4096")
    user, pw, _ = srv.new_account("up")

    async def go():
        c = await client(xmpp, srv, user, pw)
        items = await c["xep_0030"].get_items(jid=DOMAIN, timeout=WAIT)
        assert UPLOAD in [i[0] for i in items["disco_items"]["items"]]
        # (slixmpp 1.8's find_upload_service trips over Python 3.11: asked by hand.)
        info = await c["xep_0030"].get_info(jid=UPLOAD, timeout=WAIT)
        assert info["from"] == UPLOAD
        assert ("store", "file", None, "HTTP File Upload") in info["disco_info"]["identities"]
        assert NS_UPLOAD in info["disco_info"]["features"]
        form = info["disco_info"]["form"]
        assert form["values"]["FORM_TYPE"] in (NS_UPLOAD, [NS_UPLOAD])
        assert form["values"]["max-file-size"] == "4096"
    arun(go())


def test_upload_then_get_and_head(server, xmpp, arun):
    user, pw, _ = server.new_account("up")
    body = "très cool, " * 100
    data = body.encode()

    async def go():
        c = await client(xmpp, server, user, pw)
        return await slot(c, "très cool.txt", len(data), "text/plain; charset=utf-8")
    put_url, get_url = arun(go())
    assert put_url == get_url
    u = urllib.parse.urlsplit(put_url)
    assert u.scheme == "http" and u.port == server.http_port
    # The name keeps its ending, percent-encoded (XEP-0363 section 4).
    assert u.path.endswith("/tr%C3%A8s%20cool.txt"), put_url

    status, _, _ = put(server.http_port, put_url, data, "text/plain; charset=utf-8")
    assert status == 201

    status, h, got = request(server.http_port, "GET", url_path(get_url))
    assert status == 200
    assert got == data
    assert h["content-type"] == "text/plain; charset=utf-8"
    assert h["content-length"] == str(len(data))
    # User content must not run in the server's origin.
    assert "default-src 'none'" in h["content-security-policy"]
    assert h["x-content-type-options"] == "nosniff"

    status, h, got = request(server.http_port, "HEAD", url_path(get_url))
    assert status == 200 and got == b""
    assert h["content-length"] == str(len(data))

    # A second PUT to a used slot: 409.
    status, _, _ = put(server.http_port, put_url, data, "text/plain; charset=utf-8")
    assert status == 409
    # The token does not open another name, nor a name another token.
    token = url_path(get_url).split("/")[2]
    assert request(server.http_port, "GET", "/upload/%s/other.txt" % token)[0] == 404
    assert request(server.http_port, "GET", "/upload/%s/x.txt" % ("0" * 32))[0] == 404
    assert request(server.http_port, "GET", "/upload/nothex/x.txt")[0] == 404


def test_a_large_file_streams_whole(make_server, xmpp, arun):
    srv = make_server("--upload-max-bytes", str(8 << 20))
    user, pw, _ = srv.new_account("up")
    data = os.urandom(3 << 20)  # far above one output chunk

    async def go():
        c = await client(xmpp, srv, user, pw)
        return await slot(c, "blob.bin", len(data), "application/octet-stream")
    put_url, get_url = arun(go())
    assert put(srv.http_port, put_url, data, "application/octet-stream")[0] == 201
    status, h, got = request(srv.http_port, "GET", url_path(get_url), timeout=30)
    assert status == 200 and len(got) == len(data) and got == data


def test_too_large_is_not_acceptable_with_the_limit(make_server, xmpp, arun):
    srv = make_server("--upload-max-bytes", "1000")
    user, pw, _ = srv.new_account("up")

    async def go():
        c = await client(xmpp, srv, user, pw)
        err = await slot_error(c, "big.bin", 1001)
        assert err["condition"] == "not-acceptable" and err["type"] == "modify"
        ftl = err.xml.find("{%s}file-too-large" % NS_UPLOAD)
        assert ftl is not None, "no <file-too-large/> in the error"
        assert ftl.find("{%s}max-file-size" % NS_UPLOAD).text == "1000"
        # Exactly the limit is fine.
        await slot(c, "ok.bin", 1000)
        # A size that is no size.
        for bad in ("0", "-5", "12abc", ""):
            iq = c.make_iq_get(ito=UPLOAD)
            iq.append(ET.fromstring("<request xmlns='%s' filename='a.txt' size='%s'/>" %
                                    (NS_UPLOAD, bad)))
            with pytest.raises(IqError) as e:
                await iq.send(timeout=WAIT)
            assert e.value.iq["error"]["condition"] == "bad-request", bad
    arun(go())


def test_quota_counts_files_and_open_slots(make_server, xmpp, arun):
    srv = make_server("--upload-quota-bytes", "1000")
    user, pw, _ = srv.new_account("up")
    other, opw, _ = srv.new_account("up")

    async def go():
        c = await client(xmpp, srv, user, pw)
        put_url, _ = await slot(c, "a.bin", 600)
        assert put(srv.http_port, put_url, b"a" * 600, "application/octet-stream")[0] == 201
        await slot(c, "b.bin", 300)  # open, not uploaded: still counted
        err = await slot_error(c, "c.bin", 200)
        assert err["condition"] == "resource-constraint" and err["type"] == "wait"
        await slot(c, "d.bin", 100)  # what is left fits
        # The quota is per account.
        d = await client(xmpp, srv, other, opw)
        await slot(d, "e.bin", 900)
    arun(go())


def test_put_must_match_the_slot(server, xmpp, arun):
    user, pw, _ = server.new_account("up")

    async def go():
        c = await client(xmpp, server, user, pw)
        return await slot(c, "img.png", 10, "image/png")
    put_url, get_url = arun(go())
    port = server.http_port
    assert put(port, put_url, b"x" * 9, "image/png")[0] == 400     # shorter
    assert put(port, put_url, b"x" * 11, "image/png")[0] == 413    # longer
    assert put(port, put_url, b"x" * 10, "image/jpeg")[0] == 415   # another type
    assert put(port, put_url, b"x" * 10, "image/png",
               {"Transfer-Encoding": "chunked"})[0] in (400, 411)
    # Nothing was stored by the failures, and the slot still works.
    assert request(port, "GET", url_path(get_url))[0] == 404
    assert put(port, put_url, b"x" * 10, "image/png")[0] == 201
    status, h, got = request(port, "GET", url_path(get_url))
    assert (status, h["content-type"], got) == (200, "image/png", b"x" * 10)


def test_an_expired_slot_refuses_the_put(make_server, xmpp, arun):
    srv = make_server("--upload-slot-timeout", "1")
    user, pw, _ = srv.new_account("up")

    async def go():
        c = await client(xmpp, srv, user, pw)
        return await slot(c, "late.txt", 4, "text/plain")
    put_url, get_url = arun(go())
    time.sleep(2.2)
    assert put(srv.http_port, put_url, b"late", "text/plain")[0] == 403
    assert request(srv.http_port, "GET", url_path(get_url))[0] == 404


def test_allowed_types(make_server, xmpp, arun):
    srv = make_server("--upload-allowed-types", "image/*", "--upload-allowed-types", "text/plain")
    user, pw, _ = srv.new_account("up")

    async def go():
        c = await client(xmpp, srv, user, pw)
        await slot(c, "a.png", 5, "image/png")
        await slot(c, "a.txt", 5, "text/plain; charset=utf-8")
        err = await slot_error(c, "a.html", 5, "text/html")
        assert err["condition"] == "not-acceptable"
    arun(go())


def test_cors_preflight(server):
    status, h, _ = request(server.http_port, "OPTIONS", "/upload/%s/a.txt" % ("a" * 32))
    assert status == 204
    assert h["access-control-allow-origin"] == "*"
    assert "PUT" in h["access-control-allow-methods"]


def test_files_and_metadata_survive_a_restart_and_expire(make_server, xmpp, arun):
    srv = make_server()
    user, pw, _ = srv.new_account("up")
    data = b"\x89PNG persisted"

    async def go():
        c = await client(xmpp, srv, user, pw)
        return await slot(c, "keep.png", len(data), "image/png")
    put_url, get_url = arun(go())
    assert put(srv.http_port, put_url, data, "image/png")[0] == 201
    path = url_path(get_url)
    token = path.split("/")[2]
    stored = os.path.join(srv.state_dir, "upload", token)
    assert os.path.exists(stored)

    restart(srv)
    status, h, got = request(srv.http_port, "GET", path)
    assert (status, h["content-type"], got) == (200, "image/png", data)
    # A used slot stays used after the restart.
    assert put(srv.http_port, put_url, data, "image/png")[0] == 409

    # Age the file past upload_expire_days (30): the startup cleanup deletes it.
    srv.signal()
    assert srv.wait(10) == 0
    srv.db_query("UPDATE uploads SET uploaded_at = uploaded_at - 31 * 86400 WHERE token = ?",
                 (token,))
    srv._close_log()
    srv.stop_requested = False
    mark = srv.log_size()
    srv.start()
    srv.wait_log(r"upload\.cleanup expired_files=1", start=mark)
    assert request(srv.http_port, "GET", path)[0] == 404
    assert not os.path.exists(stored)
    assert srv.db_query("SELECT COUNT(*) FROM uploads WHERE token = ?", (token,))[0][0] == 0


def test_open_slots_and_orphans_are_cleared_at_startup(make_server, xmpp, arun):
    srv = make_server()
    user, pw, _ = srv.new_account("up")

    async def go():
        c = await client(xmpp, srv, user, pw)
        return await slot(c, "never.txt", 5, "text/plain")
    put_url, _ = arun(go())
    # A stray file no row refers to (as after an account was deleted).
    stray = os.path.join(srv.state_dir, "upload", "ab" * 16)
    with open(stray, "wb") as f:
        f.write(b"orphan")
    mark = srv.log_size()
    restart(srv)
    srv.wait_log(r"upload\.cleanup expired_files=0 void_slots=1 orphans=1", start=mark)
    assert not os.path.exists(stray)
    # The open slot is void after the restart.
    assert put(srv.http_port, put_url, b"hello", "text/plain")[0] == 404


def test_upload_off(make_server, xmpp, arun):
    srv = make_server("--upload", "no")
    user, pw, _ = srv.new_account("up")

    async def go():
        c = await client(xmpp, srv, user, pw)
        items = await c["xep_0030"].get_items(jid=DOMAIN, timeout=WAIT)
        assert UPLOAD not in [i[0] for i in items["disco_items"]["items"]]
    arun(go())
    assert request(srv.http_port, "GET", "/upload/%s/a.txt" % ("a" * 32))[0] == 404


def test_pipelined_requests_wait_for_a_file(server, xmpp, arun):
    """A GET answered after a storage lookup, with more requests behind it
    in the same write: the answers come in order on one connection."""
    import socket
    user, pw, _ = server.new_account("up")
    data = b"0123456789" * 20000  # several output chunks

    async def go():
        c = await client(xmpp, server, user, pw)
        return await slot(c, "pipe.bin", len(data), "application/octet-stream")
    put_url, get_url = arun(go())
    assert put(server.http_port, put_url, data, "application/octet-stream")[0] == 201
    path = url_path(get_url).encode()
    s = socket.create_connection(("127.0.0.1", server.http_port), timeout=WAIT)
    try:
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"HEAD " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    first, rest = buf.split(b"\r\n\r\n", 1)
    assert first.startswith(b"HTTP/1.1 200")
    assert rest[:len(data)] == data
    rest = rest[len(data):]
    second, rest = rest.split(b"\r\n\r\n", 1)
    assert second.startswith(b"HTTP/1.1 200") and b"Content-Length: %d" % len(data) in second
    assert rest.startswith(b"HTTP/1.1 404")


def test_expect_100_continue(server, xmpp, arun):
    """A client that waits for 100 Continue before its body gets it when the
    PUT is acceptable, and the final refusal straight away when it is not."""
    import socket
    user, pw, _ = server.new_account("up")

    async def go():
        c = await client(xmpp, server, user, pw)
        return await slot(c, "wait.txt", 5, "text/plain")
    put_url, get_url = arun(go())
    path = url_path(put_url).encode()

    def head(size):
        return (b"PUT " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % size)
    s = socket.create_connection(("127.0.0.1", server.http_port), timeout=WAIT)
    try:
        s.sendall(head(6))  # larger than the slot: refused without a 100
        assert s.recv(4096).startswith(b"HTTP/1.1 413")
    finally:
        s.close()
    s = socket.create_connection(("127.0.0.1", server.http_port), timeout=WAIT)
    try:
        s.sendall(head(5))
        assert s.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hello")
        assert s.recv(4096).startswith(b"HTTP/1.1 201")
    finally:
        s.close()
    assert request(server.http_port, "GET", url_path(get_url))[2] == b"hello"
