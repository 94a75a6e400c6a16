#!/usr/bin/env python3
"""XEP-0479 (Compliance Suites 2023): which server requirements of the
Core, Web, IM, Mobile and A/V Calling categories a running server meets,
judged only from what it answers over XMPP (and HTTP for the web
connection mechanisms): stream features before and after authentication,
disco#info of the server and of the account, disco#items and the info of
each service, and one temporary chat room for the MUC archive check.

Usage (also `make compliance ARGS="..."`):
  scripts/compliance.py --domain example.org --user alice --password-file F
      [--host H] [--port 5222] [--tls-port 5223] [--http-port 5280]
      [--component-port 5347] [--json]

The password is read from --password-file or the environment variable
STANZAD_COMPLIANCE_PASSWORD (never from the command line, where other
users could see it). Checks that need a port not given are shown as
'?' (not checked). Exit status: 0 when every Advanced Server requirement
is met, 1 when one is not (or could not be checked), 2 when the server
could not be reached or the login failed.
"""
import argparse
import base64
import json
import os
import socket
import ssl
import sys
import urllib.request
import uuid
import xml.etree.ElementTree as ET

NS_STREAM = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SM = "urn:xmpp:sm:3"
NS_CSI = "urn:xmpp:csi:0"
NS_CAPS = "http://jabber.org/protocol/caps"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_OWNER = NS_MUC + "#owner"
NS_XDATA = "jabber:x:data"
TIMEOUT = 10


def q(ns, name):
    return "{%s}%s" % (ns, name)


class Stream:
    """A minimal client stream: just enough XMPP to log in and ask."""

    def __init__(self, host, port, domain, direct_tls=False):
        self.domain = domain
        self.sock = socket.create_connection((host, port), TIMEOUT)
        if direct_tls:
            self._tls()
        self.serial = 0

    def _tls(self):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False      # a compliance check, not a trust decision
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname=self.domain)

    def open(self):
        """Sends a stream header; returns the <features/> element."""
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.pending = []
        self.send("<?xml version='1.0'?><stream:stream xmlns='%s' xmlns:stream='%s' to='%s' "
                  "version='1.0'>" % (NS_CLIENT, NS_STREAM, self.domain))
        return self.expect(q(NS_STREAM, "features"))

    def send(self, text):
        self.sock.sendall(text.encode("utf-8"))

    def next(self):
        """The next top-level element of the stream."""
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the stream")
            self.parser.feed(data)
            for ev, el in self.parser.read_events():
                if ev == "start":
                    self.depth += 1
                else:
                    self.depth -= 1
                    if self.depth == 1:
                        self.pending.append(el)
        return self.pending.pop(0)

    def expect(self, tag):
        el = self.next()
        if el.tag != tag:
            raise ConnectionError("expected %s, got %s" % (tag, ET.tostring(el)[:200]))
        return el

    def starttls(self):
        self.send("<starttls xmlns='%s'/>" % NS_TLS)
        self.expect(q(NS_TLS, "proceed"))
        self._tls()

    def login(self, user, password):
        blob = base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()
        self.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, blob))
        el = self.next()
        if el.tag != q(NS_SASL, "success"):
            raise PermissionError("login as %s failed" % user)

    def iq(self, type_, payload, to=None):
        """Sends an iq and returns the answer (result or error)."""
        self.serial += 1
        iid = "c%d" % self.serial
        self.send("<iq type='%s' id='%s'%s>%s</iq>" %
                  (type_, iid, " to='%s'" % to if to else "", payload))
        while True:
            el = self.next()
            if el.tag == q(NS_CLIENT, "iq") and el.get("id") == iid:
                return el

    def close(self):
        try:
            self.send("</stream:stream>")
        except OSError:
            pass
        self.sock.close()


def features_of(info):
    if info is None or info.get("type") != "result":
        return set()
    return {f.get("var") for f in info.iter(q(DISCO_INFO, "feature"))}


def identities_of(info):
    if info is None or info.get("type") != "result":
        return set()
    return {(i.get("category"), i.get("type")) for i in info.iter(q(DISCO_INFO, "identity"))}


def disco(s, to=None):
    return s.iq("get", "<query xmlns='%s'/>" % DISCO_INFO, to=to)


def muc_room_archived(s, muc, nick):
    """Creates a temporary room on muc, asks its disco#info, destroys it."""
    room = "compliance-%s@%s" % (uuid.uuid4().hex[:12], muc)
    s.send("<presence to='%s/%s'><x xmlns='%s'/></presence>" % (room, nick, NS_MUC))
    while True:
        el = s.next()
        if el.tag == q(NS_CLIENT, "presence") and el.get("from", "").startswith(room + "/"):
            if el.get("type") == "error":
                return False
            break
    s.iq("set", "<query xmlns='%s'><x xmlns='%s' type='submit'/></query>" %
         (NS_MUC_OWNER, NS_XDATA), to=room)
    feats = features_of(disco(s, room))
    s.iq("set", "<query xmlns='%s'><destroy/></query>" % NS_MUC_OWNER, to=room)
    return "urn:xmpp:mam:2" in feats


def try_direct_tls(host, port, domain):
    st = Stream(host, port, domain, direct_tls=True)
    try:
        return st.open() is not None
    finally:
        st.close()


def try_component(host, port, domain):
    sock = socket.create_connection((host, port), TIMEOUT)
    try:
        sock.sendall(("<stream:stream xmlns='jabber:component:accept' xmlns:stream='%s' "
                      "to='compliance.%s'>" % (NS_STREAM, domain)).encode())
        data = sock.recv(4096).decode("utf-8", "replace")
        return "jabber:component:accept" in data
    finally:
        sock.close()


def try_web(host, port):
    """XEP-0156 host-meta naming a WebSocket (RFC 7395) or BOSH endpoint."""
    with urllib.request.urlopen("http://%s:%d/.well-known/host-meta" % (host, port),
                                timeout=TIMEOUT) as r:
        text = r.read().decode("utf-8", "replace")
    return "urn:xmpp:alt-connections:websocket" in text or \
        "urn:xmpp:alt-connections:xbosh" in text


def gather(args, password):
    """Everything the checks look at, from the server's own answers."""
    g = {}
    s = Stream(args.host, args.port, args.domain)
    try:
        pre = s.open()
        g["starttls"] = pre.find(q(NS_TLS, "starttls")) is not None
        s.starttls()
        s.open()
        s.login(args.user, password)
        post = s.open()
        g["caps"] = post.find(q(NS_CAPS, "c")) is not None or pre.find(q(NS_CAPS, "c")) is not None
        g["sm"] = post.find(q(NS_SM, "sm")) is not None
        g["csi"] = post.find(q(NS_CSI, "csi")) is not None
        b = s.iq("set", "<bind xmlns='%s'><resource>compliance</resource></bind>" % NS_BIND)
        g["bound"] = b.get("type") == "result"
        bare = "%s@%s" % (args.user, args.domain)
        server_info = disco(s, args.domain)
        g["disco"] = server_info.get("type") == "result"
        g["server"] = features_of(server_info)
        account_info = disco(s, bare)
        g["account"] = features_of(account_info)
        g["account_ids"] = identities_of(account_info)
        g["roster"] = s.iq("get", "<query xmlns='jabber:iq:roster'/>").get("type") == "result"
        g["services"] = {}
        items = s.iq("get", "<query xmlns='%s'/>" % DISCO_ITEMS, to=args.domain)
        for it in items.iter(q(DISCO_ITEMS, "item")):
            info = disco(s, it.get("jid"))
            g["services"][it.get("jid")] = (identities_of(info), features_of(info))
        s.send("<presence/>")
        mucs = [j for j, (ids, f) in g["services"].items()
                if ("conference", "text") in ids and NS_MUC in f]
        g["muc_archive"] = bool(mucs) and muc_room_archived(s, mucs[0], "compliance")
    finally:
        s.close()
    for key, port, fn in (("direct_tls", args.tls_port, lambda: try_direct_tls(
            args.host, args.tls_port, args.domain)),
            ("component", args.component_port, lambda: try_component(
                args.host, args.component_port, args.domain)),
            ("web", args.http_port, lambda: try_web(args.host, args.http_port))):
        if port is None:
            g[key] = None
            continue
        try:
            g[key] = bool(fn())
        except (OSError, ConnectionError, ET.ParseError):
            g[key] = False
    return g


def service_with(g, feature, identity=None):
    return any(feature in f and (identity is None or identity in ids)
               for ids, f in g["services"].values())


# (category, feature, providers, check) -- the Advanced Server column of
# XEP-0479 2023; every row listed is required there.
def requirements(g):
    srv, acct = g["server"], g["account"]
    return [
        ("Core", "Core features", "RFC 6120", g["bound"]),
        ("Core", "TLS", "RFC 7590", g["starttls"]),
        ("Core", "Direct TLS", "XEP-0368", g["direct_tls"]),
        ("Core", "Feature discovery", "XEP-0030", g["disco"]),
        ("Core", "Feature broadcasts", "XEP-0115", g["caps"] and NS_CAPS in srv),
        ("Core", "Server extensibility", "XEP-0114", g["component"]),
        ("Core", "Event publishing", "XEP-0163",
         ("pubsub", "pep") in g["account_ids"] and
         "http://jabber.org/protocol/pubsub#publish" in acct),
        ("Web", "Web connection mechanisms", "RFC 7395, XEP-0206", g["web"]),
        ("IM", "Core features", "RFC 6121", g["roster"]),
        # XEP-0398 section 2: the feature is announced on the account.
        ("IM", "User avatar compatibility", "XEP-0398, XEP-0153",
         "urn:xmpp:pep-vcard-conversion:0" in acct),
        ("IM", "vcard-temp", "XEP-0054", "vcard-temp" in srv),
        ("IM", "Outbound message synchronization", "XEP-0280", "urn:xmpp:carbons:2" in srv),
        ("IM", "User blocking", "XEP-0191", "urn:xmpp:blocking" in srv),
        ("IM", "Group chat", "XEP-0045, XEP-0249",
         service_with(g, NS_MUC, ("conference", "text"))),
        ("IM", "Advanced group chat: bookmarks", "XEP-0048, XEP-0402",
         "urn:xmpp:bookmarks:1#compat" in acct),
        ("IM", "Advanced group chat: MUC archive", "XEP-0313", g["muc_archive"]),
        ("IM", "Advanced group chat: self-ping", "XEP-0410",
         service_with(g, NS_MUC + "#self-ping-optimization")),
        ("IM", "Persistent storage of private data via PubSub", "XEP-0223",
         "http://jabber.org/protocol/pubsub#publish-options" in acct),
        ("IM", "Private XML storage", "XEP-0049", "jabber:iq:private" in srv),
        ("IM", "Stream management", "XEP-0198", g["sm"]),
        ("IM", "History storage / retrieval", "XEP-0313", "urn:xmpp:mam:2" in acct),
        ("IM", "File upload", "XEP-0363", service_with(g, "urn:xmpp:http:upload:0")),
        ("Mobile", "Stream management", "XEP-0198", g["sm"]),
        ("Mobile", "Client state indication", "XEP-0352", g["csi"]),
        ("Mobile", "Third party push notifications", "XEP-0357", "urn:xmpp:push:0" in acct),
        ("A/V", "STUN/TURN server discovery", "XEP-0215",
         "urn:xmpp:extdisco:2" in srv or service_with(g, "urn:xmpp:extdisco:2")),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--domain", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password-file")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5222)
    ap.add_argument("--tls-port", type=int)
    ap.add_argument("--http-port", type=int)
    ap.add_argument("--component-port", type=int)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.password_file:
        with open(args.password_file) as f:
            password = f.readline().rstrip("\n")
    else:
        password = os.environ.get("STANZAD_COMPLIANCE_PASSWORD")
    if not password:
        print("compliance: no password (--password-file or STANZAD_COMPLIANCE_PASSWORD)",
              file=sys.stderr)
        return 2
    try:
        g = gather(args, password)
    except (OSError, ConnectionError, PermissionError, ET.ParseError) as e:
        print("compliance: %s" % e, file=sys.stderr)
        return 2
    rows = requirements(g)
    if args.json:
        print(json.dumps([{"category": c, "feature": f, "providers": p,
                           "met": m} for c, f, p, m in rows]))
    else:
        print("XEP-0479 (2023) Advanced Server requirements, %s" % args.domain)
        print("%-7s %-48s %-20s %s" % ("Suite", "Feature", "Providers", "Met"))
        for c, f, p, m in rows:
            print("%-7s %-48s %-20s %s" % (c, f, p, "?" if m is None else "yes" if m else "NO"))
        met = sum(1 for r in rows if r[3])
        print("%d of %d met%s" % (met, len(rows), "" if met == len(rows) else
                                  "; '?' = not checked (give the port)"))
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
