"""A TLS client for the kernel lab, run as its own process.

Python's ssl module cannot restrict TLS 1.3 cipher suites; an OpenSSL
configuration file can, but only if it is in OPENSSL_CONF before ssl is
loaded. So test_ktls_lab.py starts this script once per (version, cipher)
with that environment, and it prints one JSON line with what it saw.

Modes:
  exchange      two sessions (one Direct TLS, one STARTTLS) log in with
                SCRAM-SHA-256-PLUS (channel binding read from the kernel-mode
                connection), exchange messages of several sizes both ways
                and compare them byte for byte, read /proc/net/tls_stat
                while connected, then close the streams.
  alert         one session; after a message, a fatal alert record sealed
                with the client's own traffic keys (from the key log) is
                written to the socket: the server must drop the connection.
  close_notify  one session; the client sends close_notify mid-stream and
                expects the server's stream close, close_notify and FIN.
"""
import argparse
import hashlib
import hmac
import json
import os
import secrets
import socket
import ssl
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

from harness import (DOMAIN, NS_CLIENT, RawStream, StreamClosed, q,  # noqa: E402
                     tls_exporter, xml_escape)

TLS_RECORD_MAX = 16384
# Characters a body may hold without XML escaping on either side, plus
# multi-byte UTF-8, so equality of the text is equality of the bytes.
BODY_ALPHABET = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;-_+=()[]{}!?"
                 "\u00e9\u00fc\u4e2d\u6587\U0001f600")


class LabStream(RawStream):
    """RawStream whose TLS context is pinned to one version and cipher, and
    which counts the records it sends (for the forged alert)."""

    def __init__(self, port, args, direct_tls=False, keylog=None):
        self.args = args
        self.keylog = keylog
        self.records_sent = 0
        super().__init__(port, direct_tls=direct_tls)

    def _wrap(self, alpn=None):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if self.args.version == "1.2":
            ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers(self.args.cipher)
        else:
            ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        if self.keylog:
            ctx.keylog_filename = self.keylog
        self.sock = ctx.wrap_socket(self.sock, server_hostname=DOMAIN)
        self.tls = True
        self.records_sent = 0

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        if self.tls:
            # One SSL_write of n bytes makes ceil(n / 16384) records.
            self.records_sent += (len(data) + TLS_RECORD_MAX - 1) // TLS_RECORD_MAX
        super().send(data)


def channel_binding(s):
    if s.sock.version() == "TLSv1.3":
        return "tls-exporter", tls_exporter(s.sock)
    return "tls-unique", s.sock.get_channel_binding("tls-unique")


def login(port, user, password, args, direct_tls, keylog=None):
    s = LabStream(port, args, direct_tls=direct_tls, keylog=keylog)
    s.open()
    if not direct_tls:
        s.starttls()
    cb_type, cb_data = channel_binding(s)
    kind, cond = s.scram_login(user, password, mech="SCRAM-SHA-256-PLUS", cb_type=cb_type,
                               cb_data=cb_data)
    assert kind == "success", "SCRAM-SHA-256-PLUS (%s) failed: %s" % (cb_type, cond)
    s.restart()
    s.bind("lab")
    return s


def make_body(size, rng):
    out, n = [], 0
    while n < size:
        ch = BODY_ALPHABET[rng.randrange(len(BODY_ALPHABET))]
        out.append(ch)
        n += len(ch.encode("utf-8"))
    return "".join(out)


def send_and_check(src, dst, body, n):
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    src.send("<message to='%s' type='chat' id='m%d'><body>%s</body></message>" %
             (dst.jid, n, xml_escape(body)))
    el = dst.expect(q(NS_CLIENT, "message"))
    got = el.find(q(NS_CLIENT, "body"))
    assert got is not None, "message %d arrived without a body" % n
    got_digest = hashlib.sha256((got.text or "").encode("utf-8")).hexdigest()
    assert got_digest == digest, ("message %d (%d bytes) changed on the way: sha256 %s != %s" %
                                  (n, len(body.encode()), got_digest, digest))
    assert el.get("from", "").startswith(src.jid.split("/")[0])


def tls_stat():
    stats = {}
    try:
        with open("/proc/net/tls_stat") as f:
            for line in f:
                k, v = line.split()
                stats[k] = int(v)
    except OSError:
        pass
    return stats


def close_stream(s):
    """Our </stream:stream>; the server answers with its own, then closes."""
    s.send("</stream:stream>")
    s.wait_closed()
    assert s.stream_ended, "the server did not close its stream"
    s.close()


def mode_exchange(args, report):
    import random
    rng = random.Random(args.seed)
    a = login(args.tls_port, args.user1, args.pass1, args, direct_tls=True)
    b = login(args.c2s_port, args.user2, args.pass2, args, direct_tls=False)
    report["version"] = a.sock.version()
    report["cipher"] = a.sock.cipher()[0]
    report["version_b"] = b.sock.version()
    report["cipher_b"] = b.sock.cipher()[0]
    n = 0
    total = 0
    for size in args.sizes:
        body = make_body(size, rng)
        send_and_check(a, b, body, n)
        send_and_check(b, a, body[::-1], n + 1)
        n += 2
        total += 2 * len(body.encode("utf-8"))
    report["messages"] = n
    report["bytes"] = total
    report["tls_stat"] = tls_stat()
    close_stream(a)
    close_stream(b)


def hkdf_expand_label(secret, label, length, hash_name):
    info = (length.to_bytes(2, "big") + bytes([len(b"tls13 " + label)]) + b"tls13 " + label +
            b"\x00")
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = hmac.new(secret, t + info + bytes([i]), hash_name).digest()
        out += t
        i += 1
    return out[:length]


def forge_alert(s, keylog, level, description):
    """A TLS 1.3 alert record under the client's application keys."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
    secret = None
    with open(keylog) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "CLIENT_TRAFFIC_SECRET_0":
                secret = bytes.fromhex(parts[2])
    assert secret, "no CLIENT_TRAFFIC_SECRET_0 in the key log"
    cipher = s.sock.cipher()[0]
    hash_name = "sha384" if "SHA384" in cipher else "sha256"
    key_len = 16 if "AES_128" in cipher else 32
    key = hkdf_expand_label(secret, b"key", key_len, hash_name)
    iv = hkdf_expand_label(secret, b"iv", 12, hash_name)
    seq = s.records_sent
    nonce = bytes(a ^ b for a, b in zip(iv, seq.to_bytes(12, "big")))
    inner = bytes([level, description, 21])  # alert, then the inner content type
    header = bytes([23, 3, 3]) + (len(inner) + 16).to_bytes(2, "big")
    aead = ChaCha20Poly1305(key) if "CHACHA" in cipher else AESGCM(key)
    return header + aead.encrypt(nonce, inner, header)


def mode_alert(args, report):
    assert args.version == "1.3", "the forged alert is a TLS 1.3 record"
    keylog = tempfile.mktemp(prefix="ktls-keylog-")
    a = login(args.tls_port, args.user1, args.pass1, args, direct_tls=True, keylog=keylog)
    try:
        # A round trip first, so the alert really comes mid-stream.
        a.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        el = a.expect(q(NS_CLIENT, "iq"))
        assert el.get("id") == "p1" and el.get("type") == "result"
        record = forge_alert(a, keylog, 2, 80)  # fatal internal_error
    finally:
        os.unlink(keylog)
    os.write(a.sock.fileno(), record)
    # The server drops the connection: no more data, no close_notify.
    deadline = time.monotonic() + 10
    raw = socket.socket(fileno=os.dup(a.sock.fileno()))
    raw.settimeout(1)
    extra = b""
    while time.monotonic() < deadline:
        try:
            d = raw.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            d = b""
        if not d:
            break
        extra += d
    else:
        raise AssertionError("the server kept the connection after a fatal alert")
    raw.close()
    a.close()
    report["after_alert_bytes"] = len(extra)


def mode_close_notify(args, report):
    a = login(args.tls_port, args.user1, args.pass1, args, direct_tls=True)
    a.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    a.expect(q(NS_CLIENT, "iq"))
    # close_notify now. The server answers like OpenSSL in userspace would:
    # its </stream:stream>, its close_notify, then FIN. OpenSSL 3.0 as a
    # client calls data after its own close_notify an error, so the answer
    # is read below the TLS layer: it must end in FIN, soon.
    a.sock.settimeout(10)
    try:
        plain = a.sock.unwrap()
        report["unwrap"] = "clean"
    except ssl.SSLError as e:
        if "APPLICATION_DATA_AFTER_CLOSE_NOTIFY" not in str(e):
            raise
        report["unwrap"] = "data before close_notify"
        plain = socket.socket(fileno=os.dup(a.sock.fileno()))
    plain.settimeout(10)
    rest = b""
    while True:
        d = plain.recv(4096)
        if not d:
            break
        rest += d
    plain.close()
    a.close()
    report["after_unwrap"] = len(rest)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", default="exchange", choices=["exchange", "alert", "close_notify"])
    p.add_argument("--c2s-port", type=int, required=True)
    p.add_argument("--tls-port", type=int, required=True)
    p.add_argument("--version", choices=["1.2", "1.3"], required=True)
    p.add_argument("--cipher", required=True, help="TLS 1.2 cipher list entry (1.3: from OPENSSL_CONF)")
    p.add_argument("--user1", required=True)
    p.add_argument("--pass1", required=True)
    p.add_argument("--user2")
    p.add_argument("--pass2")
    p.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")],
                   default=[1, 100, 4000, 16000, 16384, 40000, 100000])
    p.add_argument("--seed", type=int, default=secrets.randbits(32))
    args = p.parse_args()
    report = {"mode": args.mode, "seed": args.seed}
    try:
        {"exchange": mode_exchange, "alert": mode_alert,
         "close_notify": mode_close_notify}[args.mode](args, report)
        report["ok"] = True
    except (AssertionError, StreamClosed, TimeoutError, OSError, ssl.SSLError) as e:
        report["ok"] = False
        report["error"] = "%s: %s" % (type(e).__name__, e)
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
