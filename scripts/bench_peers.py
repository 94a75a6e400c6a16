# SPDX-License-Identifier: MIT
"""The peer servers of `make bench --servers ...`: Debian's prosody and ejabberd.

bench.py runs the same loadgen scenarios against them as against stanzad.
Each peer is started by the bench itself with its own configuration written
here: loopback only, its own free c2s port, its own data directory under
the build directory, plain c2s with SASL PLAIN allowed (as stanzad runs with
--require-tls no), no TLS, no archive (MAM), no offline storage, no rate
limits or shapers, and passwords stored in plain text so that a PLAIN login
costs them no key derivation (stanzad's bench accounts use one PBKDF2
iteration for the same reason). The server is pinned with taskset to the
bench's server CPU like stanzad.

Accounts are created through the server itself, with in-band registration
(XEP-0077) over its own c2s port; the presence scenario's rosters through
real subscription handshakes (ejabberd) or written into the server's own
roster files before anyone logs in (prosody: its handshakes cost time
quadratic in the roster's size, minutes for 1,000 contacts), and checked
through a roster request either way; the pubsub scenario's node and
subscriptions through XEP-0060 requests; all by the small asyncio client
below. Setup runs once per peer, before its first scenario; every scenario
then runs against that one instance (stanzad gets a fresh process per
scenario: its store is seeded in milliseconds).
"""
import asyncio
import os
import pwd
import re
import resource
import shutil
import signal
import socket
import subprocess
import time

PEERS = ("prosody", "ejabberd")
# Registrations in flight at once during setup.
SETUP_CONCURRENCY = 32
SETUP_TIMEOUT = 60.0  # one request during setup, s
START_TIMEOUT = 60.0  # a peer to accept connections, s
# The subscription handshakes of the presence roster, all of them: prosody
# takes time quadratic in the roster's size (about a minute for 1,000).
ROSTER_TIMEOUT = 900.0
STOP_TIMEOUT = 20.0


class PeerError(Exception):
    pass


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def raise_fd_limit():
    """Soft fd limit up to the hard one: the peers inherit it and hold
    thousands of connections, and so does the setup client."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def missing_tools(name):
    tools = {"prosody": ("prosody",), "ejabberd": ("ejabberdctl", "erl")}[name]
    return [t for t in tools if not shutil.which(t) and
            not os.access("/usr/sbin/" + t, os.X_OK)]


def _children(pid):
    """Direct children of pid (from /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append(int(d))
    return out


def _find_descendant(pid, comm):
    """The first descendant of pid whose command name is comm, or None."""
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open("/proc/%d/comm" % p) as f:
                if f.read().strip() == comm:
                    return p
        except OSError:
            continue
        todo.extend(_children(p))
    return None


# --------------------------------------------------------------------------
# Setup client: just enough XMPP for registration, rosters and pubsub
# --------------------------------------------------------------------------

HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0'>")


def _id_re(ident):
    return re.compile(r"<iq\b[^>]*\bid=['\"]%s['\"][^>]*?(/>|>.*?</iq>)" % re.escape(ident),
                      re.S)


class SetupClient:
    """One c2s stream. Matching is textual (both peers serialize the way
    this expects: single or double quotes, no prefixes on stanzas)."""

    def __init__(self, host, port, domain):
        self.host, self.port, self.domain = host, port, domain
        self.buf = ""
        self.r = self.w = None
        self.seq = 0

    async def open(self):
        self.r, self.w = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), SETUP_TIMEOUT)
        await self._restart()

    async def _restart(self):
        self.w.write((HEADER % self.domain).encode())
        await self.until(re.compile(r"</stream:features>"))

    async def until(self, pat, timeout=SETUP_TIMEOUT):
        """Reads until pat matches the buffer; drops the buffer up to the
        match's end and returns the match."""
        deadline = time.monotonic() + timeout
        while True:
            m = pat.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            if re.search(r"<stream:error|</stream:stream>", self.buf):
                raise PeerError("stream closed: %s" % self.buf[:300])
            left = deadline - time.monotonic()
            if left <= 0:
                raise PeerError("timed out waiting for %s (got %s)" %
                                (pat.pattern, self.buf[-300:]))
            data = await asyncio.wait_for(self.r.read(65536), left)
            if not data:
                raise PeerError("connection closed (got %s)" % self.buf[-300:])
            self.buf += data.decode("utf-8", "replace")

    async def count(self, pat, n, timeout=SETUP_TIMEOUT):
        """Reads until pat has matched n times in what arrives from now on
        (linear: matched text and what cannot start a match are dropped)."""
        seen = 0
        deadline = time.monotonic() + timeout
        while True:
            last = 0
            for m in pat.finditer(self.buf):
                seen += 1
                last = m.end()
            # Keep only a possibly incomplete start tag at the end.
            cut = self.buf.rfind("<")
            self.buf = self.buf[max(cut, last):] if cut >= 0 else ""
            if seen >= n:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise PeerError("timed out: %d of %d %s" % (seen, n, pat.pattern))
            data = await asyncio.wait_for(self.r.read(65536), left)
            if not data:
                raise PeerError("connection closed after %d of %d %s" % (seen, n, pat.pattern))
            self.buf += data.decode("utf-8", "replace")

    def send(self, xml):
        self.w.write(xml.encode())

    async def iq(self, body, to=None, typ="set", timeout=SETUP_TIMEOUT):
        """Sends an iq and returns its answer's text; raises on type=error."""
        self.seq += 1
        ident = "s%d" % self.seq
        self.send("<iq type='%s' id='%s'%s>%s</iq>" %
                  (typ, ident, " to='%s'" % to if to else "", body))
        m = await self.until(_id_re(ident), timeout)
        text = m.group(0)
        if re.search(r"\btype=['\"]error['\"]", text[:text.find(">")]):
            raise PeerError("iq error: %s" % text[:400])
        return text

    async def register(self, user, password):
        """XEP-0077; an existing account (conflict) counts as done."""
        try:
            await self.iq("<query xmlns='jabber:iq:register'><username>%s</username>"
                          "<password>%s</password></query>" % (user, password))
        except PeerError as e:
            if "conflict" not in str(e):
                raise

    async def login(self, user, password, resource="setup"):
        import base64
        tok = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
        self.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>"
                  % tok)
        m = await self.until(re.compile(r"<(success|failure)\b.*?(/>|</\1>)", re.S))
        if m.group(1) != "success":
            raise PeerError("login of %s failed: %s" % (user, m.group(0)[:300]))
        self.buf = ""
        await self._restart()
        await self.iq("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>%s</resource>"
                      "</bind>" % resource)

    async def available(self):
        """Roster fetched and initial presence sent: an interested, available
        resource, to which the server delivers subscription requests."""
        await self.iq("<query xmlns='jabber:iq:roster'/>", typ="get")
        self.send("<presence/>")

    async def close(self):
        if self.w:
            try:
                self.w.write(b"</stream:stream>")
                await self.w.drain()
                self.w.close()
            except OSError:
                pass


async def _register_all(host, port, domain, users, password):
    sem = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(u):
        async with sem:
            c = SetupClient(host, port, domain)
            await c.open()
            try:
                await c.register(u, password)
            finally:
                await c.close()
    await asyncio.gather(*(one(u) for u in users))


SUB_RE = re.compile(r"<presence\b[^>]*\btype=['\"]subscribe['\"]")


async def _roster_and_pubsub(host, port, domain, publisher, receivers, password, node,
                             handshake):
    """Rosters with subscription 'both' between the publisher and every
    receiver, through the usual handshake (unless the peer's store was
    seeded with them), then (node set) the publisher's pubsub node at
    pubsub.DOMAIN with every receiver subscribed (bare JID). Returns the
    items with subscription 'both' on the publisher's roster, as the server
    reports them, and the seconds the pubsub part took."""
    pub_jid = "%s@%s" % (publisher, domain)
    pub = SetupClient(host, port, domain)
    await pub.open()
    await pub.login(publisher, password)
    await pub.available()
    sem = asyncio.Semaphore(SETUP_CONCURRENCY * 2)
    clients = {}

    async def connect(u):
        async with sem:
            c = SetupClient(host, port, domain)
            await c.open()
            await c.login(u, password)
            await c.available()
            clients[u] = c
    await asyncio.gather(*(connect(u) for u in receivers))
    # 1. The publisher asks every receiver; 2. each receiver, once the request
    # has reached it, approves it and asks back; 3. the publisher approves.
    for u in receivers if handshake else ():
        pub.send("<presence to='%s@%s' type='subscribe'/>" % (u, domain))

    async def answer(u):
        c = clients[u]
        await c.until(SUB_RE, ROSTER_TIMEOUT)
        c.send("<presence to='%s' type='subscribed'/><presence to='%s' type='subscribe'/>" %
               (pub_jid, pub_jid))
        await c.iq("<ping xmlns='urn:xmpp:ping'/>", to=domain, typ="get",
                   timeout=ROSTER_TIMEOUT)
    if handshake:
        await asyncio.gather(*(answer(u) for u in receivers))
        await pub.count(SUB_RE, len(receivers), ROSTER_TIMEOUT)
        for u in receivers:
            pub.send("<presence to='%s@%s' type='subscribed'/>" % (u, domain))
    await pub.iq("<ping xmlns='urn:xmpp:ping'/>", to=domain, typ="get", timeout=ROSTER_TIMEOUT)
    t_roster = time.monotonic()
    both = 0
    for _ in range(50):  # the last approvals may still be on their way
        roster = await pub.iq("<query xmlns='jabber:iq:roster'/>", typ="get")
        both = len(re.findall(r"subscription=['\"]both['\"]", roster))
        if both >= len(receivers):
            break
        await asyncio.sleep(0.1)
    if node:
        service = "pubsub." + domain
        try:
            await pub.iq("<pubsub xmlns='http://jabber.org/protocol/pubsub'><create node='%s'/>"
                         "</pubsub>" % node, to=service)
        except PeerError as e:
            if "conflict" not in str(e):
                raise

        async def subscribe(u):
            await clients[u].iq("<pubsub xmlns='http://jabber.org/protocol/pubsub'>"
                                "<subscribe node='%s' jid='%s@%s'/></pubsub>" %
                                (node, u, domain), to=service)
        await asyncio.gather(*(subscribe(u) for u in receivers))
    for c in list(clients.values()) + [pub]:
        await c.close()
    return both, time.monotonic() - t_roster


# --------------------------------------------------------------------------
# The peers
# --------------------------------------------------------------------------

PROSODY_CFG = """\
-- Written by scripts/bench_peers.py for one benchmark run (make bench).
run_as_root = true
daemonize = false
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
certificates = "{d}/certs"
log = {{ {{ levels = {{ min = "warn" }}, to = "file", filename = "{d}/prosody.log" }} }}
network_backend = "epoll"
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
s2s_direct_tls_ports = {{ }}
component_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
-- No mod_limits (rate limits), mod_mam, mod_carbons, mod_smacks or mod_tls.
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping"; "register" }}
modules_disabled = {{ "s2s"; "offline" }}
authentication = "internal_plain"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
allow_registration = true
-- In-band registration from loopback is not throttled (mod_register_limits'
-- default whitelist); the publisher may create pubsub nodes.
admins = {{ "{pub}@{dom}" }}
VirtualHost "{dom}"
Component "pubsub.{dom}" "pubsub"
"""

EJABBERD_YML = """\
# Written by scripts/bench_peers.py for one benchmark run (make bench).
hosts:
  - "{dom}"
loglevel: warning
log_rotate_count: 0
certfiles: []
acme:
  auto: false
listen:
  -
    port: {c2s}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    backlog: 4096
    max_stanza_size: 262144
    shaper: none
    access: all
    starttls: false
    starttls_required: false
auth_method: internal
auth_password_format: plain
registration_timeout: infinity
shaper_rules:
  c2s_shaper: none
access_rules:
  register:
    allow: all
# No mod_mam, mod_offline, mod_carboncopy, mod_stream_mgmt, mod_fail2ban or
# shapers.
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_register:
    ip_access: all
    access: register
  mod_pubsub:
    hosts:
      - "pubsub.{dom}"
    access_createnode: all
    plugins:
      - "flat"
"""


class PeerServer:
    """A peer server started for the bench: .host, .port, .pid (the process
    doing the work, for CPU and RSS), .name, and the interface bench.py's
    scenarios use (alive, stop, log_size, warnings, archived_rows)."""

    name = None

    def __init__(self, opts, cpus):
        self.opts = opts
        self.host = "127.0.0.1"
        self.port = _free_port()
        base = os.path.join(opts.build, "bench-peers")
        os.makedirs(base, exist_ok=True)
        self.dir = os.path.join(base, "%s-%d" % (self.name, os.getpid()))
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.proc = None
        self.pid = None
        self.cpus = cpus
        self._out = open(os.path.join(self.dir, "stdout.log"), "wb")

    # -- what bench.py calls --
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_size(self):
        return 0

    def warnings(self, start=0):
        return None

    def archived_rows(self):
        return None

    def _wait_listening(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PeerError("%s exited with status %s: %s" %
                                (self.name, self.proc.returncode, self.log_tail()))
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise PeerError("%s did not listen within %.0f s: %s" %
                        (self.name, START_TIMEOUT, self.log_tail()))

    def log_tail(self, n=20):
        text = ""
        for name in self.log_files():
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    text += "".join(f.readlines()[-n:])
            except OSError:
                pass
        return text

    def setup(self, users, receivers, publisher, password, node):
        """Accounts, rosters and the pubsub node; returns a dict of what was done."""
        t0 = time.monotonic()
        raise_fd_limit()
        asyncio.run(_register_all(self.host, self.port, self.opts.domain,
                                  users + receivers + [publisher], password))
        t1 = time.monotonic()
        both, pubsub_s = 0, 0.0
        if receivers:
            seeded = self.seed_rosters(publisher, receivers)
            both, pubsub_s = asyncio.run(_roster_and_pubsub(
                self.host, self.port, self.opts.domain, publisher, receivers, password, node,
                handshake=not seeded))
        return {"accounts": len(users) + len(receivers) + 1,
                "register_s": round(t1 - t0, 2), "roster_items_both": both,
                "roster_s": round(time.monotonic() - t1 - pubsub_s, 2),
                "pubsub_s": round(pubsub_s, 2)}

    def seed_rosters(self, publisher, receivers):
        """Writes the presence rosters into the peer's store itself when
        the handshakes would take too long; True when it did."""
        return False

    def version(self):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", self.name],
                           capture_output=True, text=True)
        return r.stdout.strip() or None

    def stop(self):
        rc = 0
        if self.proc is not None and self.proc.poll() is None:
            self._terminate()
            try:
                rc = self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._kill()
                rc = self.proc.wait()
        self._out.close()
        if not self.opts.keep_state:
            shutil.rmtree(self.dir, ignore_errors=True)
        return 0 if rc in (0, -signal.SIGTERM, 143) else rc

    def _terminate(self):
        os.kill(self.pid or self.proc.pid, signal.SIGTERM)

    def _kill(self):
        for p in (self.pid, self.proc.pid):
            try:
                os.kill(p, signal.SIGKILL)
            except (OSError, TypeError):
                pass


class Prosody(PeerServer):
    name = "prosody"

    def log_files(self):
        return ("stdout.log", "prosody.log")

    def start(self, pinned):
        os.makedirs(os.path.join(self.dir, "data"))
        os.makedirs(os.path.join(self.dir, "certs"))
        cfg = os.path.join(self.dir, "prosody.cfg.lua")
        with open(cfg, "w") as f:
            f.write(PROSODY_CFG.format(d=self.dir, c2s=self.port, dom=self.opts.domain,
                                       pub=self.opts.publisher))
        self.proc = subprocess.Popen(pinned(self.cpus, ["prosody", "--config", cfg, "-F"]),
                                     stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT)
        self.pid = self.proc.pid  # taskset execs prosody's interpreter: same pid
        self._wait_listening()

    def seed_rosters(self, publisher, receivers):
        """Prosody saves a whole roster on every change: the R handshakes
        of a 1,000-contact roster take minutes (quadratic). Its roster files
        are written instead, in its own format, before anyone logs in (the
        server reads them at login; setup then checks the publisher's
        roster as the server reports it)."""
        d = os.path.join(self.dir, "data", _prosody_encode(self.opts.domain), "roster")
        os.makedirs(d, exist_ok=True)
        dom = self.opts.domain
        files = {publisher: ["%s@%s" % (u, dom) for u in receivers]}
        files.update({u: ["%s@%s" % (publisher, dom)] for u in receivers})
        for user, contacts in files.items():
            with open(os.path.join(d, _prosody_encode(user) + ".dat"), "w") as f:
                f.write(_prosody_roster(contacts))
        return True


def _prosody_encode(s):
    """A path component as prosody's datamanager encodes it."""
    return "".join(c if c.isascii() and c.isalnum() else "%%%02x" % ord(c) for c in s)


def _lua_string(s):
    return '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')


def _prosody_roster(contacts):
    """A roster file of prosody's internal store: every contact 'both'."""
    out = ["return {", "\t[false] = {", "\t\t[\"version\"] = 1;",
           "\t\t[\"pending\"] = {};", "\t};"]
    for jid in contacts:
        out += ["\t[%s] = {" % _lua_string(jid), "\t\t[\"subscription\"] = \"both\";",
                "\t\t[\"groups\"] = {};", "\t};"]
    out.append("};")
    return "\n".join(out) + "\n"


class Ejabberd(PeerServer):
    """ejabberdctl foreground, as the ejabberd user, with its own config,
    spool and log directories, and an Erlang distribution port of its own
    (no epmd left behind)."""
    name = "ejabberd"

    def log_files(self):
        return ("stdout.log", "logs/ejabberd.log", "logs/error.log")

    def start(self, pinned):
        spool, logs = os.path.join(self.dir, "spool"), os.path.join(self.dir, "logs")
        os.makedirs(spool)
        os.makedirs(logs)
        yml = os.path.join(self.dir, "ejabberd.yml")
        ctl = os.path.join(self.dir, "ejabberdctl.cfg")
        with open(yml, "w") as f:
            f.write(EJABBERD_YML.format(c2s=self.port, dom=self.opts.domain))
        # The bench holds at most 10,000 idle connections on a peer
        # (bench.PEER_IDLE_MAX), however large its own idle runs are.
        ports = max(32000, min(self.opts.idle_clients, 10000) + self.opts.receivers + 5000)
        with open(ctl, "w") as f:
            f.write("ERL_DIST_PORT=%d\nERL_MAX_PORTS=%d\nERL_PROCESSES=%d\n"
                    "ERL_OPTIONS=\"-env ERL_CRASH_DUMP_BYTES 0\"\n" %
                    (_free_port(), ports, max(250000, 4 * ports)))
        if os.getuid() == 0:
            try:
                shutil.chown(self.dir, "ejabberd", "ejabberd")
                for d in (spool, logs):
                    shutil.chown(d, "ejabberd", "ejabberd")
            except (LookupError, OSError) as e:
                raise PeerError("cannot hand %s to the ejabberd user: %s" % (self.dir, e))
            os.chmod(self.dir, 0o755)
        ctlbin = shutil.which("ejabberdctl") or "/usr/sbin/ejabberdctl"
        self.argv = [ctlbin, "--ctl-config", ctl, "--config", yml, "--spool", spool,
                     "--logs", logs, "--node", "bench%d@localhost" % self.port]
        # As root, run it as the ejabberd user ourselves: ejabberdctl would
        # switch with su, whose PAM session (pam_limits) gives the VM init's
        # 1,024 descriptors, too few for the idle scenario.
        who = {}
        if os.getuid() == 0:
            pw = pwd.getpwnam("ejabberd")
            who = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [],
                   "env": dict(os.environ, HOME=pw.pw_dir, USER="ejabberd",
                               LOGNAME="ejabberd")}
        self.proc = subprocess.Popen(pinned(self.cpus, self.argv + ["foreground"]),
                                     stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     cwd=spool, **who)
        self._wait_listening()
        # The work happens in the Erlang VM, a few processes below.
        self.pid = _find_descendant(self.proc.pid, "beam.smp")
        if not self.pid:
            raise PeerError("ejabberd listens but no beam.smp below pid %d" % self.proc.pid)

    def _terminate(self):
        # The VM stops cleanly on SIGTERM (init:stop); the scripts above it exit.
        os.kill(self.pid or self.proc.pid, signal.SIGTERM)


def make_peer(name, opts, cpus):
    return {"prosody": Prosody, "ejabberd": Ejabberd}[name](opts, cpus)
