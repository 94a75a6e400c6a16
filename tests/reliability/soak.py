#!/usr/bin/python3
"""Soak test: N clients for a while of mixed traffic against one stanzad,
watching its memory and checking that nothing acknowledged is lost.

    tests/reliability/soak.py --build build --clients 50 --minutes 5   (make soak)
    tests/reliability/soak.py --build build --clients 16 --seconds 40  (make check)

Each client registers in-band, logs in (a quarter of them over STARTTLS),
enables stream management with resumption, joins a common chat room and
then, until the time is up, does at random: one-to-one messages to other
clients (counted), presence changes, roster sets and removals, room
messages, pings, network drops (the socket just closes, then the stream
is resumed: unacknowledged stanzas are sent again both ways) and clean
logouts followed by fresh logins (messages meanwhile go to offline
storage). At the end every client comes back, acknowledgements settle,
and every message the server acknowledged to its sender must have
reached its recipient.

Memory: RSS (/proc) and the heap in use (the SIGHUP log line, mallinfo2)
are sampled every few seconds. After a warm-up (a quarter of the run),
the last quarter's mean may exceed the first quarter's by at most
max(8 MiB, 10%) (RSS) and max(4 MiB, 10%) (heap).

Errors: any stream error, unexpected iq error, failed resumption or lost
message on the client side, and any log line of level error, or of level
warn outside a short list of expected events, on the server side.
Exit status 0 when everything holds; one JSON line of results on stdout.
"""
import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

DOMAIN = "localhost"
NS_STREAM = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SM = "urn:xmpp:sm:3"
NS_ROSTER = "jabber:iq:roster"
NS_REGISTER = "jabber:iq:register"
NS_PING = "urn:xmpp:ping"
NS_MUC = "http://jabber.org/protocol/muc"
ROOM = "soak@conference." + DOMAIN
HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='%s' "
          "to='%s' version='1.0'>" % (NS_STREAM, DOMAIN))

# Warnings that are part of normal operation under this load.
EXPECTED_WARN = {"server.workers", "server.insecure", "mam.overload", "log.suppressed"}


def q(ns, name):
    return "{%s}%s" % (ns, name)


class Gone(Exception):
    """The connection ended (planned or not)."""


class Stream:
    """An XMPP stream over asyncio streams with an incremental parser."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.new_parser()

    def new_parser(self):
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.pending = []

    def send(self, data):
        self.writer.write(data.encode())

    async def next(self, timeout=30):
        while not self.pending:
            try:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
            except asyncio.TimeoutError:
                raise Gone("silence for %s s" % timeout)
            except (ConnectionError, ssl.SSLError, OSError) as e:
                raise Gone(repr(e))
            if not data:
                raise Gone("eof")
            self.parser.feed(data)
            for ev, el in self.parser.read_events():
                if ev == "start":
                    self.depth += 1
                else:
                    self.depth -= 1
                    if self.depth == 1:
                        self.pending.append(el)
                    elif self.depth == 0:
                        raise Gone("stream end")
        return self.pending.pop(0)

    async def expect(self, tag):
        el = await self.next()
        if el.tag == q(NS_STREAM, "error"):
            raise StreamError(ET.tostring(el, encoding="unicode"))
        if el.tag != tag:
            raise Protocol("expected %s, got %s" % (tag, ET.tostring(el, encoding="unicode")[:300]))
        return el

    def close(self):
        try:
            self.writer.close()
        except Exception:
            pass


class StreamError(Exception):
    pass


class Protocol(Exception):
    pass


class Stats:
    def __init__(self):
        self.counts = {}
        self.errors = []

    def inc(self, k, n=1):
        self.counts[k] = self.counts.get(k, 0) + n

    def error(self, who, what):
        self.errors.append("%s: %s" % (who, what))


class Client:
    def __init__(self, soak, idx):
        self.soak = soak
        self.idx = idx
        self.user = "soak%d" % idx
        self.password = "pw-%d-%s" % (idx, soak.run_id)
        self.bare = "%s@%s" % (self.user, DOMAIN)
        self.tls = idx % 4 == 0
        self.stream = None
        self.full = None
        self.sm_id = None
        self.in_h = 0                 # stanzas handled from the server
        self.out_seq = 0              # stanzas sent since <enable/>
        self.unacked = []             # (seq, text) the server has not acknowledged
        self.acked_msgs = set()       # message ids the server acknowledged
        self.sent_msgs = {}           # id -> recipient bare
        self.seq_of_msg = {}          # seq -> message id
        self.received = set()         # message ids received
        self.iqs = {}                 # id -> what, for answers we wait for
        self.contacts = set()
        self.online = False
        self.reader_task = None
        self.n = 0

    # -- connection --

    async def connect(self):
        r, w = await asyncio.open_connection("127.0.0.1", self.soak.port)
        s = Stream(r, w)
        s.send(HEADER)
        feats = await s.expect(q(NS_STREAM, "features"))
        if self.tls:
            s.send("<starttls xmlns='%s'/>" % NS_TLS)
            await s.expect(q(NS_TLS, "proceed"))
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            await w.start_tls(ctx, server_hostname=DOMAIN)
            s.new_parser()
            s.send(HEADER)
            feats = await s.expect(q(NS_STREAM, "features"))
        return s, feats

    async def register(self):
        s, _ = await self.connect()
        try:
            s.send("<iq type='set' id='reg'><query xmlns='%s'><username>%s</username>"
                   "<password>%s</password></query></iq>" % (NS_REGISTER, self.user, self.password))
            el = await s.expect(q(NS_CLIENT, "iq"))
            if el.get("type") != "result":
                raise Protocol("registration failed: %s" % ET.tostring(el, encoding="unicode"))
        finally:
            s.close()

    async def authenticate(self):
        import base64
        s, _ = await self.connect()
        cred = base64.b64encode(b"\0" + self.user.encode() + b"\0" + self.password.encode())
        s.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, cred.decode()))
        await s.expect(q(NS_SASL, "success"))
        s.new_parser()
        s.send(HEADER)
        await s.expect(q(NS_STREAM, "features"))
        return s

    async def login(self, resume=False):
        """A fresh session, or the resumption of the previous one."""
        s = await self.authenticate()
        self.stream = s
        if resume and self.sm_id:
            s.send("<resume xmlns='%s' previd='%s' h='%d'/>" % (NS_SM, self.sm_id, self.in_h))
            el = await s.next()
            if el.tag == q(NS_SM, "resumed"):
                self.ack(int(el.get("h")))
                for _, text in list(self.unacked):
                    s.send(text)  # what the server had not acknowledged goes again
                self.soak.stats.inc("resumed")
                self.online = True
                self.start_reader()
                return
            self.soak.stats.error(self.user, "resumption failed: %s"
                                  % ET.tostring(el, encoding="unicode")[:200])
            # Not resumed: the unacked messages count as not acknowledged.
            self.forget_unacked()
        s.send("<iq type='set' id='bind'><bind xmlns='%s'><resource>r%d</resource></bind></iq>"
               % (NS_BIND, self.idx))
        el = await s.expect(q(NS_CLIENT, "iq"))
        self.full = el.find("%s/%s" % (q(NS_BIND, "bind"), q(NS_BIND, "jid"))).text
        s.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
        el = await s.expect(q(NS_SM, "enabled"))
        self.sm_id = el.get("id")
        self.in_h = 0
        self.out_seq = 0
        self.unacked = []
        self.seq_of_msg = {}
        self.online = True
        self.start_reader()
        self.stanza("<presence><priority>1</priority></presence>")
        self.stanza("<presence to='%s/%s'><x xmlns='%s'><history maxstanzas='0'/></x></presence>"
                    % (ROOM, self.user, NS_MUC))
        self.soak.stats.inc("logins")

    def forget_unacked(self):
        for seq, _ in self.unacked:
            mid = self.seq_of_msg.pop(seq, None)
            if mid:
                self.sent_msgs.pop(mid, None)
        self.unacked = []

    def start_reader(self):
        self.reader_task = asyncio.ensure_future(self.read_loop(self.stream))

    # -- stream management --

    def stanza(self, text, msg_id=None, to=None):
        self.out_seq += 1
        self.unacked.append((self.out_seq, text))
        if msg_id:
            self.seq_of_msg[self.out_seq] = msg_id
            self.sent_msgs[msg_id] = to
        if self.online:
            self.stream.send(text)
            if len(self.unacked) % 8 == 0:
                self.stream.send("<r xmlns='%s'/>" % NS_SM)

    def ack(self, h):
        keep = []
        for seq, text in self.unacked:
            if seq <= h:
                mid = self.seq_of_msg.pop(seq, None)
                if mid:
                    self.acked_msgs.add(mid)
            else:
                keep.append((seq, text))
        self.unacked = keep

    async def read_loop(self, s):
        try:
            while True:
                el = await s.next(timeout=120)
                tag = el.tag
                if tag in (q(NS_CLIENT, "message"), q(NS_CLIENT, "presence"), q(NS_CLIENT, "iq")):
                    self.in_h += 1
                if tag == q(NS_CLIENT, "message"):
                    self.on_message(el)
                elif tag == q(NS_CLIENT, "iq"):
                    self.on_iq(el)
                elif tag == q(NS_SM, "r"):
                    s.send("<a xmlns='%s' h='%d'/>" % (NS_SM, self.in_h))
                elif tag == q(NS_SM, "a"):
                    self.ack(int(el.get("h")))
                elif tag == q(NS_STREAM, "error"):
                    self.soak.stats.error(self.user, "stream error: %s"
                                          % ET.tostring(el, encoding="unicode")[:300])
                    raise Gone("stream error")
        except Gone:
            pass
        except Exception as e:  # noqa: B902 - a bug in the driver or a bad stanza
            self.soak.stats.error(self.user, "reader: %r" % e)
        finally:
            if self.stream is s:
                self.online = False

    def on_message(self, el):
        body = el.findtext(q(NS_CLIENT, "body")) or ""
        if el.get("type") == "error":
            self.soak.stats.error(self.user, "message error: %s"
                                  % ET.tostring(el, encoding="unicode")[:300])
        elif el.get("type") == "groupchat":
            self.soak.stats.inc("groupchat_received")
        elif body.startswith("soak:"):
            self.received.add(body[5:])
            self.soak.stats.inc("messages_received")

    def on_iq(self, el):
        t, iid = el.get("type"), el.get("id")
        if t in ("get", "set"):
            # Roster pushes and the server's pings: answered.
            self.stream.send("<iq type='result' id='%s'%s/>" % (
                iid, " to='%s'" % el.get("from") if el.get("from") else ""))
            return
        what = self.iqs.pop(iid, None)
        if t == "error" and what:
            self.soak.stats.error(self.user, "%s failed: %s" % (
                what, ET.tostring(el, encoding="unicode")[:300]))
        elif what:
            self.soak.stats.inc("iq_" + what)

    # -- actions --

    def iq(self, what, type_, payload, to=None):
        self.n += 1
        iid = "%s%d" % (what[:2], self.n)
        self.iqs[iid] = what
        self.stanza("<iq type='%s' id='%s'%s>%s</iq>" % (
            type_, iid, " to='%s'" % to if to else "", payload))

    def act(self, rng):
        c = self.soak.clients
        x = rng.random()
        self.n += 1
        if x < 0.5:
            peer = c[rng.randrange(len(c))]
            mid = "%s-%d" % (self.user, self.n)
            self.stanza("<message to='%s' type='chat' id='%s'><body>soak:%s</body></message>"
                        % (peer.bare, mid, mid), msg_id=mid, to=peer.bare)
            self.soak.stats.inc("messages_sent")
        elif x < 0.6:
            show = rng.choice(["away", "chat", "dnd", "xa"])
            self.stanza("<presence><show>%s</show><priority>1</priority></presence>" % show)
            self.soak.stats.inc("presence")
        elif x < 0.7:
            contact = "c%d@%s" % (rng.randrange(20), DOMAIN)
            if contact in self.contacts and rng.random() < 0.5:
                self.contacts.discard(contact)
                self.iq("roster", "set", "<query xmlns='%s'><item jid='%s' subscription='remove'/>"
                        "</query>" % (NS_ROSTER, contact))
            else:
                self.contacts.add(contact)
                self.iq("roster", "set", "<query xmlns='%s'><item jid='%s' name='n%d'/></query>"
                        % (NS_ROSTER, contact, self.n))
        elif x < 0.8:
            self.stanza("<message to='%s' type='groupchat'><body>room %d</body></message>"
                        % (ROOM, self.n))
            self.soak.stats.inc("groupchat_sent")
        elif x < 0.9:
            self.iq("ping", "get", "<ping xmlns='%s'/>" % NS_PING, to=DOMAIN)
        elif x < 0.95:
            return "drop"
        elif x < 0.97:
            return "logout"
        return None

    async def run(self, until, rng):
        await self.login()
        while time.monotonic() < until:
            await asyncio.sleep(rng.expovariate(self.soak.args.rate))
            if not self.online:
                await self.reconnect(resume=True)
                continue
            what = self.act(rng)
            if what == "drop":
                # The network goes away: no </stream:stream>, the server keeps the session.
                self.stream.writer.transport.abort()
                self.online = False
                self.soak.stats.inc("drops")
                await asyncio.sleep(rng.uniform(0.05, 0.5))
                await self.reconnect(resume=True)
            elif what == "logout":
                self.stream.send("<r xmlns='%s'/>" % NS_SM)
                await asyncio.sleep(0.2)
                self.stream.send("</stream:stream>")
                await asyncio.sleep(0.1)
                self.stream.close()
                self.online = False
                self.soak.stats.inc("logouts")
                await asyncio.sleep(rng.uniform(0.1, 1.0))
                # A clean close ends the session: unacked messages are the server's to
                # reroute (it acknowledged them before the close or they are lost to it).
                self.forget_unacked()
                await self.reconnect(resume=False)

    async def reconnect(self, resume):
        for attempt in range(5):
            try:
                await self.login(resume=resume)
                return
            except (Gone, OSError, Protocol, StreamError) as e:
                self.soak.stats.inc("reconnect_retries")
                if attempt == 4:
                    self.soak.stats.error(self.user, "cannot log in again: %r" % e)
                await asyncio.sleep(0.5)

    async def settle(self):
        """Back online, every stanza acknowledged."""
        if not self.online:
            await self.reconnect(resume=True)
        for _ in range(50):
            if not self.unacked:
                return
            if self.online:
                self.stream.send("<r xmlns='%s'/>" % NS_SM)
            await asyncio.sleep(0.1)
        self.soak.stats.error(self.user, "%d stanzas never acknowledged" % len(self.unacked))


class Soak:
    def __init__(self, args):
        self.args = args
        self.run_id = "%x" % random.getrandbits(32)
        self.stats = Stats()
        self.clients = []
        self.samples = []   # (t, rss_kib, heap_bytes or None)

    # -- the server --

    def start_server(self):
        a = self.args
        self.state = tempfile.mkdtemp(prefix="stanzad-soak-")
        self.log_path = os.path.join(self.state, "stanzad.log")
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        argv = [os.path.join(a.build, "stanzad"), "--domain", DOMAIN, "--state-dir", self.state,
                "--listen-c2s", "127.0.0.1:%d" % self.port, "--listen-c2s-tls", "off",
                "--listen-http", "off", "--require-tls", "no", "--registration", "open",
                "--log-level", "info", "--sm-resume-timeout", "600"] + a.server_arg
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("soak: stanzad did not start:\n" + self.log_tail())
                time.sleep(0.05)

    def log_text(self, start=0):
        with open(self.log_path, "rb") as f:
            f.seek(start)
            return f.read().decode("utf-8", "replace")

    def log_tail(self, n=30):
        return "\n".join(self.log_text().splitlines()[-n:])

    def sample(self, t0):
        rss = None
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        mark = os.path.getsize(self.log_path)
        self.proc.send_signal(signal.SIGHUP)
        heap = None
        for _ in range(50):
            m = re.search(r"signal=SIGHUP \S+ heap_in_use=(\d+)", self.log_text(mark))
            if m:
                heap = int(m.group(1))
                break
            time.sleep(0.02)
        self.samples.append((round(time.monotonic() - t0, 1), rss, heap))

    async def sampler(self, t0, until):
        while time.monotonic() < until:
            await asyncio.get_running_loop().run_in_executor(None, self.sample, t0)
            await asyncio.sleep(self.args.sample_every)

    def stop_server(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = "killed"
        self.log.close()
        return rc

    # -- the run --

    async def run(self):
        a = self.args
        duration = a.seconds if a.seconds else a.minutes * 60
        self.clients = [Client(self, i) for i in range(a.clients)]
        rng = random.Random(a.seed)
        # Everyone exists before anyone writes to them.
        sem = asyncio.Semaphore(8)

        async def register(c):
            async with sem:
                await c.register()
        await asyncio.gather(*(register(c) for c in self.clients))
        await self.make_room()
        t0 = time.monotonic()
        until = t0 + duration
        sampler = asyncio.ensure_future(self.sampler(t0, until))
        await asyncio.gather(*(c.run(until, random.Random(rng.random())) for c in self.clients),
                             return_exceptions=False)
        await sampler
        # Settle: everyone back, everything acknowledged, deliveries done.
        await asyncio.gather(*(c.settle() for c in self.clients))
        await asyncio.sleep(2.0)
        for c in self.clients:
            if c.online:
                c.stream.send("<r xmlns='%s'/>" % NS_SM)
        await asyncio.sleep(1.0)
        self.sample(t0)
        self.check_delivery()
        for c in self.clients:
            if c.stream:
                c.stream.send("</stream:stream>")
        await asyncio.sleep(0.3)
        for c in self.clients:
            if c.stream:
                c.stream.close()

    async def make_room(self):
        """The common room, persistent, so it never goes back to a locked new room."""
        c = self.clients[0]
        s = await c.authenticate()
        try:
            s.send("<iq type='set' id='b'><bind xmlns='%s'/></iq>" % NS_BIND)
            await s.expect(q(NS_CLIENT, "iq"))
            s.send("<presence to='%s/owner'><x xmlns='%s'/></presence>" % (ROOM, NS_MUC))
            s.send("<iq type='set' id='cfg' to='%s'><query xmlns='%s#owner'><x xmlns='jabber:x:data' "
                   "type='submit'><field var='FORM_TYPE'><value>%s#roomconfig</value></field>"
                   "<field var='muc#roomconfig_persistentroom'><value>1</value></field>"
                   "</x></query></iq>" % (ROOM, NS_MUC, NS_MUC))
            while True:
                el = await s.next()
                if el.tag == q(NS_CLIENT, "iq") and el.get("id") == "cfg":
                    if el.get("type") != "result":
                        raise SystemExit("soak: cannot configure the room: %s"
                                         % ET.tostring(el, encoding="unicode"))
                    break
            s.send("</stream:stream>")
        finally:
            s.close()

    def check_delivery(self):
        by_user = {c.bare: c for c in self.clients}
        acked = lost = 0
        examples = []
        for c in self.clients:
            for mid in c.acked_msgs:
                to = c.sent_msgs.get(mid)
                if to is None:
                    continue
                acked += 1
                if mid not in by_user[to].received:
                    lost += 1
                    if len(examples) < 5:
                        examples.append("%s -> %s" % (mid, to))
        self.stats.inc("messages_acked", acked)
        if lost:
            self.stats.error("delivery", "%d of %d acknowledged messages never arrived, e.g. %s"
                             % (lost, acked, examples))

    def check_memory(self):
        if os.environ.get("ASAN_OPTIONS") is not None and "soak_memory" not in os.environ.get(
                "STANZAD_SOAK_FORCE", ""):
            # SANITIZE=1: ASan's quarantine and shadow memory grow by design.
            return {"verdict": "not judged under AddressSanitizer"}
        pts = [s for s in self.samples if s[1] is not None]
        if len(pts) < 8:
            return {"verdict": "too few samples (%d)" % len(pts)}
        pts = pts[len(pts) // 4:]  # warm-up excluded
        quarter = max(1, len(pts) // 4)
        out = {}
        for name, i, floor in (("rss_kib", 1, 8 * 1024), ("heap_kib", 2, 4 * 1024)):
            vals = [p[i] / (1024 if name == "heap_kib" else 1) for p in pts if p[i] is not None]
            if len(vals) < 4:
                continue
            first = statistics.mean(vals[:quarter])
            last = statistics.mean(vals[-quarter:])
            allowed = max(floor, first * 0.10)
            out[name] = {"first": round(first), "last": round(last), "growth": round(last - first),
                         "allowed": round(allowed)}
            if last - first > allowed:
                self.stats.error("memory", "%s grew from %d to %d KiB (allowed %d)"
                                 % (name, first, last, allowed))
        return out

    def check_log(self):
        bad = []
        for line in self.log_text().splitlines():
            m = re.search(r"level=(warn|error) event=(\S+)", line)
            if not m:
                continue
            if m.group(1) == "error" or m.group(2) not in EXPECTED_WARN:
                bad.append(line[:300])
        if bad:
            self.stats.error("server log", "%d warn/error lines, first: %s" % (len(bad), bad[:3]))
        return len(bad)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(os.path.dirname(__file__), "..", "..", "build"))
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--seconds", type=float, default=0, help="overrides --minutes")
    ap.add_argument("--rate", type=float, default=4.0, help="actions per second per client")
    ap.add_argument("--sample-every", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--server-arg", action="append", default=[])
    ap.add_argument("--keep-state", action="store_true")
    args = ap.parse_args()
    soak = Soak(args)
    soak.start_server()
    t_start = time.monotonic()
    try:
        asyncio.run(soak.run())
    finally:
        rc = soak.stop_server()
    if rc != 0:
        soak.stats.error("server", "exit status %s" % rc)
    mem = soak.check_memory()
    warns = soak.check_log()
    result = {
        "clients": args.clients, "seconds": round(time.monotonic() - t_start, 1),
        "counts": soak.stats.counts, "memory": mem, "server_warnings": warns,
        "samples": soak.samples, "errors": soak.stats.errors[:20],
        "ok": not soak.stats.errors,
    }
    print(json.dumps(result))
    c = soak.stats.counts
    print("soak: %d clients, %.0f s: %d messages sent, %d acked, %d received; %d logins, "
          "%d resumptions, %d drops, %d logouts; memory %s; %s" % (
              args.clients, result["seconds"], c.get("messages_sent", 0),
              c.get("messages_acked", 0), c.get("messages_received", 0), c.get("logins", 0),
              c.get("resumed", 0), c.get("drops", 0), c.get("logouts", 0),
              ", ".join("%s %+d KiB (allowed %d)" % (k, v["growth"], v["allowed"])
                        for k, v in mem.items() if isinstance(v, dict)),
              "OK" if result["ok"] else "FAILED: " + "; ".join(soak.stats.errors[:5])),
          file=sys.stderr)
    if args.keep_state or not result["ok"]:
        print("soak: state and log kept in %s" % soak.state, file=sys.stderr)
    else:
        shutil.rmtree(soak.state, ignore_errors=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
