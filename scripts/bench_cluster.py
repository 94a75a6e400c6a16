# SPDX-License-Identifier: MIT
"""The cluster scenario of scripts/bench.py (`--scenario cluster`, asked for
by name only): three stanzad nodes on one Redis (docs/clustering.md).

It starts its own redis-server (append-only file on, as a deployment runs
it) and three nodes (`--cluster redis://... --node-name n1..n3`, each on
its own ports, each with its own SQLite store copied from the bench's
seeded template: cross-node routing needs only the registry in Redis, not
a shared store), then measures in the same run:

  messages  closed loop, --cluster-pairs pairs with --cluster-window messages in
            flight per client, once with both clients of every pair on the
            same node (pairs spread over the three nodes) and once with
            the two on different nodes (n1->n2, n2->n3, n3->n1);
  latency   the same two layouts in open loop at --cluster-rate msg/s in
            total; the body carries the send time, the receiver takes the
            difference (p50/p99);
  fanout    a publisher on n1 with --cluster-contacts contacts (roster
            subscription 'both') sends --cluster-updates presence updates,
            each when every contact got the previous one: contacts spread
            over n1, n2 and n3, then all on n1. Time until the last contact
            got each update, and the stream entries n1 wrote per update
            (`stanzactl --json cluster status`, stanzas.sent: one per other
            node, whatever the number of contacts there).

With --cluster-storage postgresql the three nodes share one PostgreSQL
database instead (a throwaway server started as the integration tests do,
tests/integration/pgserver.py), its accounts and rosters written with psql.

The load is generated here in Python, not by build/loadgen: loadgen
connects every client to one address, and the pairs must straddle nodes.
Reads and writes are batched (one recv, one count of '</message>', one
send of N copies per ready socket), so the generator's CPU per message is
a few microseconds; its share of the CPU is reported beside each figure,
and the nodes' and Redis's CPU per message are what to compare when the
generator is the limit."""
import base64
import json
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

NODES = ("n1", "n2", "n3")
STREAM_HDR = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
              "xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0'>")
BODY_TS = re.compile(rb"<body>(\d+)</body>")


class ClusterError(Exception):
    pass


# --------------------------------------------------------------------------
# Redis and the nodes
# --------------------------------------------------------------------------

class Redis:
    """A throwaway redis-server on a free loopback port, append-only file
    on (every inter-node stanza is written to it), no snapshots."""

    def __init__(self, free_port):
        exe = shutil.which("redis-server")
        if not exe:
            raise ClusterError("no redis-server (apt-get install redis-server)")
        self.dir = tempfile.mkdtemp(prefix="stanzad-bench-redis-")
        self.port = free_port()
        self._log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--dir", self.dir, "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise ClusterError("redis-server exited (%d)" % self.proc.returncode)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ClusterError("redis-server did not answer on port %d" % self.port)
            time.sleep(0.05)
        self.version = subprocess.run([exe, "--version"], capture_output=True,
                                      text=True).stdout.split(" v=")[-1].split()[0]

    @property
    def uri(self):
        return "redis://127.0.0.1:%d" % self.port

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def seed_postgresql(opts, log):
    """A throwaway PostgreSQL (tests/integration/pgserver.py) with one
    database for the three nodes: the schema made by stanzactl, then the
    scenario's accounts and rosters (one PBKDF2
    iteration, as bench.py seeds SQLite). Returns (server, URI)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                    "tests", "integration"))
    import bench
    from pgserver import PgServer

    pg = PgServer()
    pg.start()
    try:
        uri = pg.new_database()
        db = uri.rsplit("/", 1)[1]
        tmp = tempfile.mkdtemp(prefix="stanzad-bench-pgctl-")
        try:
            r = subprocess.run([os.path.join(opts.build, "stanzactl"), "--state-dir", tmp,
                                "--storage", uri, "user", "list"], capture_output=True,
                               text=True, timeout=60)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if r.returncode != 0:
            raise ClusterError("stanzactl could not create the schema in PostgreSQL: %s" %
                               r.stderr.strip())
        pw = opts.password.encode()
        s1 = bench.scram_keys("sha1", pw, bench.SALT, 1)
        s256 = bench.scram_keys("sha256", pw, bench.SALT, 1)
        hx = lambda b: "decode('%s', 'hex')" % b.hex()  # noqa: E731
        creds = ", ".join(hx(x) for x in (bench.SALT, s1[0], s1[1], s256[0], s256[1]))
        users = (["%s%d" % (opts.prefix, i) for i in range(4 * opts.cluster_pairs)] +
                 ["%s%d" % (opts.receiver_prefix, i) for i in range(opts.cluster_contacts)] +
                 [opts.publisher])
        recv = users[4 * opts.cluster_pairs:-1]
        now = int(time.time())
        pub = "%s@%s" % (opts.publisher, opts.domain)
        rosters = (["('%s', '%s@%s', 'both', 1)" % (opts.publisher, r, opts.domain)
                    for r in recv] + ["('%s', '%s', 'both', 1)" % (r, pub) for r in recv])
        # In statements of 200 rows: one argument of psql's command line
        # holds at most 128 KiB.
        for i in range(0, len(users), 200):
            pg.psql("INSERT INTO accounts (username, iterations, salt, sha1_stored,"
                    " sha1_server, sha256_stored, sha256_server, created_at) VALUES " +
                    ", ".join("('%s', 1, %s, %d)" % (u, creds, now)
                              for u in users[i:i + 200]), db=db)
        for i in range(0, len(rosters), 1000):
            pg.psql("INSERT INTO roster_items (username, jid, subscription, version)"
                    " VALUES " + ", ".join(rosters[i:i + 1000]), db=db)
        pg.psql("INSERT INTO roster_versions (username, version) VALUES " + ", ".join(
            "('%s', 1)" % u for u in recv + [opts.publisher]), db=db)
        log("cluster: PostgreSQL on port %d, database %s: %d accounts" % (pg.port, db,
                                                                          len(users)))
        return pg, uri
    except BaseException:
        pg.stop()
        raise


def status(srv):
    """`stanzactl --json cluster status` of a node, or raises."""
    r = srv.ctl_json("cluster", "status", timeout=10)
    if r is None:
        raise ClusterError("stanzactl cluster status failed on %s" % srv.node)
    return r


def stalled(nodes, r, what):
    """Marks r with an error when its messages did not get through: the
    entries still pending or unread in the nodes' streams say where."""
    st = status(nodes[0])
    left = {n["name"]: n["pending"] + n["unread"] for n in st["nodes"]}
    r["streams_left"] = left
    r["error"] = ("%s: %s; stream entries pending or unread per node afterwards: %s" % (
        r["layout"], what, ", ".join("%s %d" % kv for kv in sorted(left.items()))))


def streams_left(nodes, settle=2.0):
    """Stream entries not yet acknowledged once the traffic stopped: 0
    within `settle` s when every node reads its streams."""
    deadline = time.monotonic() + settle
    while True:
        left = sum(n["pending"] + n["unread"] for n in status(nodes[0])["nodes"])
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def wait_replicas(nodes, expect, timeout=15):
    """Until every node's replica holds the sessions the others registered
    (expect: node -> sessions there): a message sent before that would find
    no session for its recipient and be stored offline."""
    total = sum(expect.values())
    deadline = time.monotonic() + timeout
    while True:
        st = {n.node: status(n) for n in nodes}
        if all(st[k]["sessions"] == expect[k] and
               st[k]["replica_sessions"] == total - expect[k] for k in st):
            return
        if time.monotonic() > deadline:
            raise ClusterError("the registry did not settle within %d s: %s" % (timeout, {
                k: (v["sessions"], v["replica_sessions"]) for k, v in st.items()}))
        time.sleep(0.1)


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------

def _read_until(s, buf, *marks, timeout=10):
    deadline = time.monotonic() + timeout
    while not any(m in buf for m in marks):
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            d = s.recv(65536)
        except socket.timeout:
            d = None
        if not d:
            raise ClusterError("login: %s, got %r" % ("closed" if d == b"" else "timeout",
                                                      buf[-300:]))
        buf += d
    return buf


def login(port, user, opts, presence=True):
    """A plain-TCP client (the bench's servers run --require-tls no),
    SASL PLAIN, bound to resource 'bench', initial presence sent. Returns
    a connected blocking socket with nothing left unread but what the
    presence brings."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    hdr = (STREAM_HDR % opts.domain).encode()
    s.sendall(hdr)
    _read_until(s, b"", b"</stream:features>")
    cred = base64.b64encode(b"\0" + user.encode() + b"\0" + opts.password.encode())
    s.sendall(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + cred +
              b"</auth>")
    buf = _read_until(s, b"", b"<success", b"<failure")
    if b"<failure" in buf:
        raise ClusterError("login as %s refused: %r" % (user, buf[-200:]))
    s.sendall(hdr)
    _read_until(s, b"", b"</stream:features>")
    s.sendall(b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
              b"<resource>bench</resource></bind></iq>")
    buf = _read_until(s, b"", b"</iq>")
    if b"type='result'" not in buf and b'type="result"' not in buf:
        raise ClusterError("bind as %s failed: %r" % (user, buf[-200:]))
    if presence:
        s.sendall(b"<presence/>")
    s.settimeout(None)
    return s


def drain_all(socks, quiet=0.3, limit=5.0):
    """Reads whatever the server sends until `quiet` s pass without data."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            ev = sel.select(quiet)
            if not ev:
                return
            for k, _ in ev:
                if not k.fileobj.recv(262144):
                    raise ClusterError("a client was disconnected")
    finally:
        sel.close()


def close_all(socks):
    for s in socks:
        try:
            s.sendall(b"</stream:stream>")
        except OSError:
            pass
        s.close()


def jid(user, opts):
    return "%s@%s/bench" % (user, opts.domain)


# --------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------

def host_busy_seconds():
    """CPU seconds the machine has been busy (all CPUs; idle and iowait excluded)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


class CpuWatch:
    """CPU seconds of the nodes, Redis, this process and every other
    process of the machine ("other": the host's busy time minus ours) over
    a window."""

    def __init__(self, cpu_seconds, nodes, redis):
        self.cpu_seconds = cpu_seconds
        self.pids = {n.node: n.pid for n in nodes}
        self.pids["redis"] = redis.pid

    def _now(self):
        out = {k: self.cpu_seconds(p) for k, p in self.pids.items()}
        ru = resource.getrusage(resource.RUSAGE_SELF)
        out["generator"] = ru.ru_utime + ru.ru_stime
        out["_host"] = host_busy_seconds()
        out["_t"] = time.monotonic()
        return out

    def start(self):
        self.t0 = self._now()

    def stop(self):
        t1 = self._now()
        wall = t1["_t"] - self.t0["_t"]
        d = {k: t1[k] - self.t0[k] for k in t1 if not k.startswith("_")}
        d["nodes"] = sum(v for k, v in d.items() if k in NODES)
        d["other"] = max(0.0, t1["_host"] - self.t0["_host"] - d["nodes"] - d["redis"] -
                         d["generator"])
        return wall, d


def closed_loop(pairs, window, warmup, duration, watch):
    """pairs: [(sock_a, jid_a, sock_b, jid_b)]. Every client starts `window`
    messages to its partner and answers each message it receives with a
    new one. Returns msg/s over `duration` after `warmup`, and the CPU."""
    sel = selectors.DefaultSelector()
    conns = []
    for a, ja, b, jb in pairs:
        for s, to in ((a, jb), (b, ja)):
            msg = ("<message to='%s' type='chat'><body>x</body></message>" % to).encode()
            c = [s, msg, b""]
            conns.append(c)
            sel.register(s, selectors.EVENT_READ, c)
    for c in conns:
        c[0].sendall(c[1] * window)
    received = 0
    t_warm = time.monotonic() + warmup
    t_end = t_warm + duration
    counted = None
    try:
        while True:
            now = time.monotonic()
            if counted is None and now >= t_warm:
                counted = received
                watch.start()
            if now >= t_end:
                break
            for k, _ in sel.select(0.5):
                c = k.data
                d = c[0].recv(262144)
                if not d:
                    raise ClusterError("a client was disconnected during the closed loop")
                buf = c[2] + d
                n = buf.count(b"</message>")
                c[2] = buf[-9:]  # a '</message>' cut by the read ends in here
                if n:
                    received += n
                    c[0].sendall(c[1] * n)
    finally:
        sel.close()
    wall, cpu = watch.stop()
    n = received - (counted or 0)
    return n, wall, cpu


def open_loop(pairs, rate, warmup, duration, watch):
    """Every client sends to its partner in turn, `rate` messages/s in
    total, each stamped with its send time (monotonic ns); the receiver
    records arrival - stamp. Returns the latencies (us) of the messages
    sent after `warmup`, the number sent then, and the CPU."""
    sel = selectors.DefaultSelector()
    senders = []
    for a, ja, b, jb in pairs:
        for s, to in ((a, jb), (b, ja)):
            senders.append((s, ("<message to='%s' type='chat'><body>" % to).encode()))
            sel.register(s, selectors.EVENT_READ, [s, b""])
    lat, sent, lost_window = [], 0, []
    interval = 1.0 / rate
    t0 = time.monotonic()
    t_warm = t0 + warmup
    t_end = t_warm + duration
    due = t0
    i = 0
    watching = False
    min_ts = None

    def read(k):
        c = k.data
        d = c[0].recv(262144)
        if not d:
            raise ClusterError("a client was disconnected during the open loop")
        now = time.monotonic_ns()
        buf = c[1] + d
        cut = buf.rfind(b"</message>")
        if cut < 0:
            c[1] = buf
            return
        c[1] = buf[cut + 10:]
        for m in BODY_TS.finditer(buf, 0, cut):
            ts = int(m.group(1))
            if min_ts is not None and ts >= min_ts:
                lat.append((now - ts) / 1000.0)

    try:
        while True:
            now = time.monotonic()
            if now >= t_end:
                break
            if not watching and now >= t_warm:
                watching = True
                min_ts = time.monotonic_ns()
                watch.start()
            if now >= due:
                s, prefix = senders[i % len(senders)]
                i += 1
                s.sendall(prefix + str(time.monotonic_ns()).encode() + b"</body></message>")
                if watching:
                    sent += 1
                due += interval
                continue
            for k, _ in sel.select(max(0.0, due - now)):
                read(k)
        wall, cpu = watch.stop()
        # What is still on its way (up to 2 s).
        deadline = time.monotonic() + 2
        while len(lat) < sent and time.monotonic() < deadline:
            for k, _ in sel.select(0.1):
                read(k)
    finally:
        sel.close()
    return lat, sent, wall, cpu


def fanout(pub, contacts, updates, timeout, nodes, watch):
    """The publisher sends `updates` presence updates, each once every
    contact got the previous one. Returns the ms until the last contact
    got each update, updates that timed out, and the stream entries each
    node wrote and read meanwhile."""
    sel = selectors.DefaultSelector()
    for s in contacts:
        sel.register(s, selectors.EVENT_READ, [s, b"", False])
    pub.setblocking(False)
    before = {n.node: status(n)["stanzas"] for n in nodes}
    times, timed_out = [], 0
    watch.start()
    try:
        for k in range(updates):
            token = b"<status>c%d</status>" % k
            pending = len(contacts)
            for key in sel.get_map().values():
                key.data[1:] = [b"", False]
            t0 = time.monotonic()
            pub.sendall(b"<presence><status>c%d</status></presence>" % k)
            deadline = t0 + timeout
            last = None
            while pending and time.monotonic() < deadline:
                for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
                    c = key.data
                    d = c[0].recv(262144)
                    if not d:
                        raise ClusterError("a contact was disconnected during the fan-out")
                    buf = c[1] + d
                    if not c[2] and token in buf:
                        c[2] = True
                        pending -= 1
                        last = time.monotonic()
                    c[1] = buf[-len(token):]
            if pending:
                timed_out += 1
                if timed_out >= 3 and not times:
                    break  # nothing gets through: no need to wait out every update
            else:
                times.append((last - t0) * 1000.0)
            try:
                while pub.recv(262144):
                    pass
            except BlockingIOError:
                pass
    finally:
        sel.close()
        pub.setblocking(True)
    wall, cpu = watch.stop()
    time.sleep(0.3)  # the receivers' counters: the last entries are acknowledged
    after = {n.node: status(n)["stanzas"] for n in nodes}
    entries = {k: {"sent": after[k]["sent"] - before[k]["sent"],
                   "received": after[k]["received"] - before[k]["received"]} for k in after}
    return times, timed_out, entries, wall, cpu


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100.0 * len(xs))) - 1))]


def cpu_fields(cpu, wall, ops):
    """CPU shares of one core over the window and microseconds per op."""
    out = {"cpu_share": {k: round(v / wall, 3) for k, v in sorted(cpu.items())},
           "us_per_op": {k: round(v * 1e6 / ops, 2) if ops else None
                         for k, v in sorted(cpu.items())}}
    return out


# --------------------------------------------------------------------------
# The scenario
# --------------------------------------------------------------------------

def run(opts, template, server_cls, free_port, cpu_seconds, log):
    """Runs the scenario; returns its result lines (JSON-able dicts)."""
    redis = Redis(free_port)
    nodes = []
    results = []
    pg, storage = None, []
    setup = {"redis": redis.version, "nodes": len(NODES), "workers_per_node": opts.workers,
             "store": "sqlite, one per node (copies of the seeded store)"}
    try:
        if opts.cluster_storage == "postgresql":
            pg, uri = seed_postgresql(opts, log)
            storage = ["--storage", uri]
            setup["store"] = "postgresql, one database for the three nodes"
            setup["postgresql"] = pg.bindir.rstrip("/").split("/")[-2]
        for name in NODES:
            o = type(opts)(**vars(opts))
            # No pinning: three nodes, Redis and the generator share the
            # machine's cores. No archive by default (a later --server-arg
            # may turn it on): it costs the same on both layouts.
            o.server_cpus = ""
            o.server_arg = ["--cluster", redis.uri, "--node-name", name, "--listen-http", "off",
                            "--mam-default=never"] + storage + list(opts.server_arg)
            srv = server_cls(o, template)
            srv.node = name
            nodes.append(srv)
        by = {n.node: n for n in nodes}
        wait_replicas(nodes, {k: 0 for k in by})
        watch = CpuWatch(cpu_seconds, nodes, redis)
        log("cluster: redis %s on port %d, nodes %s on ports %s" % (
            redis.version, redis.port, ",".join(NODES),
            ",".join(str(n.port) for n in nodes)))
        P = opts.cluster_pairs
        for layout in ("same", "cross"):
            base = 0 if layout == "same" else 2 * P
            pairs, expect = [], {k: 0 for k in by}
            for k in range(P):
                na = NODES[k % 3]
                nb = na if layout == "same" else NODES[(k + 1) % 3]
                ua, ub = ("%s%d" % (opts.prefix, base + 2 * k),
                          "%s%d" % (opts.prefix, base + 2 * k + 1))
                pairs.append((login(by[na].port, ua, opts), jid(ua, opts),
                              login(by[nb].port, ub, opts), jid(ub, opts)))
                expect[na] += 1
                expect[nb] += 1
            socks = [p[0] for p in pairs] + [p[2] for p in pairs]
            try:
                wait_replicas(nodes, expect)
                drain_all(socks)
                log("cluster: %s-node pairs: closed loop, %d pairs, window %d" %
                    (layout, P, opts.cluster_window))
                st0 = {n.node: status(n)["stanzas"] for n in nodes}
                n, wall, cpu = closed_loop(pairs, opts.cluster_window, opts.warmup,
                                           opts.cluster_duration, watch)
                full = {n_.node: status(n_) for n_ in nodes}
                st1 = {k: v["stanzas"] for k, v in full.items()}
                drain_all(socks)
                r = {"scenario": "cluster_messages", "layout": layout,
                     "params": {"pairs": P, "window": opts.cluster_window,
                                "duration_s": opts.cluster_duration},
                     "msgs_per_s": round(n / wall), "messages": n,
                     "stream_entries": sum(st1[k]["sent"] - st0[k]["sent"] for k in st1)}
                if layout == "cross":
                    # What each node measured itself, XADD to routed (ms, wall
                    # clocks; the last 64 entries it read).
                    r["delivery_lag_ms"] = {k: v["delivery_lag"] for k, v in full.items()}
                r.update(cpu_fields(cpu, wall, n))
                if n == 0:
                    stalled(nodes, r, "no message arrived in the closed loop")
                elif streams_left(nodes):
                    stalled(nodes, r, "messages stopped arriving in the closed loop")
                results.append(r)
                log("cluster: %s-node: %s msg/s" % (layout, r["msgs_per_s"]))
                log("cluster: %s-node pairs: open loop at %d msg/s" % (layout, opts.cluster_rate))
                lat, sent, wall, cpu = open_loop(pairs, opts.cluster_rate, 1.0,
                                                 opts.cluster_duration, watch)
                r = {"scenario": "cluster_latency", "layout": layout,
                     "params": {"pairs": P, "rate": opts.cluster_rate,
                                "duration_s": opts.cluster_duration},
                     "sent": sent, "received": len(lat),
                     "latency_us": {"n": len(lat), "p50": pct(lat, 50), "p90": pct(lat, 90),
                                    "p99": pct(lat, 99), "max": max(lat) if lat else None}}
                r.update(cpu_fields(cpu, wall, sent))
                if len(lat) < sent:
                    stalled(nodes, r, "%d of %d messages did not arrive within 2 s in the "
                                      "open loop" % (sent - len(lat), sent))
                results.append(r)
                log("cluster: %s-node: p50 %.0f us, p99 %.0f us" % (
                    layout, r["latency_us"]["p50"] or 0, r["latency_us"]["p99"] or 0))
            finally:
                close_all(socks)
        N = opts.cluster_contacts
        for layout in ("spread", "local"):
            expect = {k: 0 for k in by}
            pub = login(by["n1"].port, opts.publisher, opts)
            expect["n1"] += 1
            contacts = []
            try:
                for i in range(N):
                    node = NODES[i % 3] if layout == "spread" else "n1"
                    contacts.append(login(by[node].port, "%s%d" % (opts.receiver_prefix, i),
                                          opts))
                    expect[node] += 1
                wait_replicas(nodes, expect)
                drain_all(contacts + [pub])
                log("cluster: presence fan-out to %d contacts, %s" % (N, layout))
                times, timed_out, entries, wall, cpu = fanout(
                    pub, contacts, opts.cluster_updates, opts.update_timeout, nodes, watch)
                u = opts.cluster_updates
                r = {"scenario": "cluster_fanout", "layout": layout,
                     "params": {"contacts": N, "updates": u,
                                "contacts_per_node": {k: v - (k == "n1") for k, v in
                                                      expect.items()}},
                     "updates_ok": len(times), "updates_timed_out": timed_out,
                     "fanout_ms": {"n": len(times), "p50": pct(times, 50),
                                   "p99": pct(times, 99), "max": max(times) if times else None},
                     "stream_entries": entries,
                     "entries_per_update": round(entries["n1"]["sent"] / u, 2),
                     "entries_per_update_by_node": {k: round(v["received"] / u, 2)
                                                    for k, v in entries.items()}}
                r.update(cpu_fields(cpu, wall, len(times) * N))
                if timed_out:
                    stalled(nodes, r, "%d of %d updates did not reach every contact within "
                                      "%g s" % (timed_out, u, opts.update_timeout))
                else:
                    # One entry per other node holding contacts, whatever their number.
                    want = sum(1 for k, v in expect.items() if k != "n1" and v)
                    if entries["n1"]["sent"] != want * u:
                        r["error"] = ("%s: n1 wrote %d stream entries for %d updates, not %d "
                                      "(one per other node with contacts)" % (
                                          layout, entries["n1"]["sent"], u, want * u))
                results.append(r)
                log("cluster: fan-out %s: p50 %.2f ms, %.2f stream entries per update" % (
                    layout, r["fanout_ms"]["p50"] or 0, r["entries_per_update"]))
            finally:
                close_all(contacts + [pub])
            # The next layout logs the same accounts in elsewhere: the old
            # sessions must have left every replica first.
            wait_replicas(nodes, {k: 0 for k in by})
    except (ClusterError, OSError) as e:
        # What was measured so far stays; the rest of the run is not made.
        results.append({"scenario": "cluster", "error": str(e)})
    finally:
        for n in nodes:
            warns = n.warnings(0)
            if warns:
                setup.setdefault("warnings", {})[n.node] = warns
        for n in nodes:
            n.stop()
        redis.stop()
        if pg:
            pg.stop()
    for r in results:
        r["setup"] = setup
    return results


# --------------------------------------------------------------------------
# Summary and report
# --------------------------------------------------------------------------

def _by(results, scenario, layout):
    return next((r for r in results if r.get("scenario") == scenario and
                 r.get("layout") == layout), None)


def _ratio(a, b):
    return "%.2fx" % (a / b) if a is not None and b else "-"


def _f(v, spec="{:,.0f}"):
    return "-" if v is None else spec.format(v)


def summary(results):
    """The human summary printed after the run."""
    lines = ["", "cluster (3 nodes, one Redis):"]
    ms, mc = _by(results, "cluster_messages", "same"), _by(results, "cluster_messages", "cross")
    if ms and mc:
        lines.append("  messages/s, closed loop: same node %s, other node %s (%s)" % (
            _f(ms["msgs_per_s"]), _f(mc["msgs_per_s"]),
            _ratio(mc["msgs_per_s"], ms["msgs_per_s"])))
    ls, lc = _by(results, "cluster_latency", "same"), _by(results, "cluster_latency", "cross")
    if ls and lc:
        lines.append("  latency at %s msg/s, p50/p99 us: same node %s/%s, other node %s/%s" % (
            _f(ls["params"]["rate"]), _f(ls["latency_us"]["p50"]), _f(ls["latency_us"]["p99"]),
            _f(lc["latency_us"]["p50"]), _f(lc["latency_us"]["p99"])))
    for layout in ("spread", "local"):
        r = _by(results, "cluster_fanout", layout)
        if r:
            lines.append("  presence fan-out to %d contacts, %s: p50/p99 %s/%s ms, %s stream "
                         "entries per update" % (
                             r["params"]["contacts"], layout, _f(r["fanout_ms"]["p50"], "{:.2f}"),
                             _f(r["fanout_ms"]["p99"], "{:.2f}"), r["entries_per_update"]))
    for r in results:
        if "error" in r:
            lines.append("  FAILED: %s" % r["error"].splitlines()[0])
    return "\n".join(lines)


def _host_line(meta):
    h = meta.get("host", {})
    return "%s, %s CPUs, kernel %s" % (h.get("cpu_model") or "cpu", h.get("cpus", "?"),
                                       h.get("kernel", "?"))


def render(results, meta):
    """DIR/CLUSTER.md from the cluster scenario's JSON lines."""
    ms, mc = _by(results, "cluster_messages", "same"), _by(results, "cluster_messages", "cross")
    ls, lc = _by(results, "cluster_latency", "same"), _by(results, "cluster_latency", "cross")
    fs, fl = _by(results, "cluster_fanout", "spread"), _by(results, "cluster_fanout", "local")
    setup = next((r["setup"] for r in results if "setup" in r), {})
    cmd = meta.get("command", "scripts/bench.py --scenario cluster")
    args = cmd.split("scripts/bench.py", 1)[-1].strip().split()
    args = [a for i, a in enumerate(args)
            if a != "--build" and (i == 0 or args[i - 1] != "--build")]
    cmd = "scripts/bench.py --build build " + " ".join(args)
    out = ["# stanzad in a cluster of three nodes", ""]
    out.append("Made by one command, `%s` (`make bench BENCH_ARGS=\"%s\"` runs the same with "
               "the binaries of `build/`), on %s (%s). Every figure below comes from this one "
               "run; `scripts/bench_report.py --cluster docs/bench/cluster.jsonl` rebuilds "
               "this file from the JSON lines beside it. The bench scripts' tree: `%s` (git "
               "describe); stanzad: %s, binary sha256 %s...; Redis %s." % (
                   cmd, " ".join(args), meta.get("date", "?"), _host_line(meta),
                   meta.get("git") or "?", meta.get("versions", {}).get("stanzad", "?"),
                   meta.get("stanzad_binary", {}).get("sha256", "?"), setup.get("redis", "?")))
    out += ["", "What it measures, in one run: a redis-server started by the bench "
            "(`appendonly yes`, as a deployment runs it) and three stanzad nodes "
            "(`--cluster redis://127.0.0.1:PORT --node-name n1|n2|n3`, %s worker each, "
            "each on its own ports), then:" % setup.get("workers_per_node", 1), "",
            "- **Messages, closed loop**: client pairs, each client keeps `--cluster-window` "
            "messages in flight to its partner and answers each one it receives with a new "
            "one. *Same node*: both clients of a pair on one node, the pairs spread over the "
            "three nodes. *Other node*: the two clients on different nodes (n1 -> n2, "
            "n2 -> n3, n3 -> n1), every message through the recipient's node's Redis stream "
            "(XADD by the sender's node, XREADGROUP by the recipient's).",
            "- **Latency, open loop**: the same two layouts at a fixed total rate; each body "
            "carries its send time, the receiving client takes the difference.",
            "- **Presence fan-out**: a publisher on n1 with contacts (roster subscription "
            "`both`) sends presence updates, each once every contact got the previous one: "
            "contacts spread over n1, n2 and n3, then all on n1. Time from the send to the "
            "last contact's arrival, and the stream entries each node wrote and read "
            "(`stanzactl --json cluster status`, `stanzas.sent` / `stanzas.received`).",
            "", "**Read with care:**", "",
            "- This host has %s CPUs for everything: the three nodes, Redis and the load "
            "generator share them (nothing is pinned). The generator's, the nodes' and "
            "Redis's CPU shares are given with each figure (shares of one core: 200%% = both "
            "cores); when they add up to about 200%%, the box, not a node, was the limit, and "
            "the CPU per message says more than the rate." % meta.get("host", {}).get("cpus", "?"),
            "- The load generator is Python (scripts/bench_cluster.py), not build/loadgen: "
            "loadgen connects every client to one address, and the pairs here straddle "
            "nodes. It batches (one read, one count, one write of N answers per ready "
            "socket), so it costs about a microsecond per message in the closed loop; in the "
            "open loop and the fan-out its own wake-ups and Python's per-socket work are "
            "part of the times measured (the same in both layouts).",
            ("- Each node has its own SQLite store, a copy of the bench's seeded one (the "
             "same accounts and rosters everywhere): routing between nodes uses only the "
             "session registry in Redis, not a shared store, so the figures do not depend on "
             "it (`--cluster-storage postgresql` runs the three on one PostgreSQL database)."
             if setup.get("store", "").startswith("sqlite") else
             "- The three nodes share one PostgreSQL %s database (`--cluster-storage "
             "postgresql`), on a server the bench started on this host; routing between "
             "nodes uses the session registry in Redis, not the store." %
             setup.get("postgresql", "")) +
            " The message archive is off (`--mam-default=never`; a `--server-arg` turns it "
            "on): it costs the same on both layouts and would hide the difference measured.",
            "- One run on a machine shared with other work (its share is the \"other "
            "processes\" row), so p99 and max latencies move from run to run (a scheduling "
            "delay of one process is enough)."]
    if setup.get("warnings"):
        out.append("- Warnings the nodes logged: %s." % "; ".join(
            "%s: %s" % (k, ", ".join("%s x%d" % kv for kv in sorted(v.items())))
            for k, v in sorted(setup["warnings"].items())))

    def share(r, k):
        v = (r or {}).get("cpu_share", {}).get(k)
        return "-" if v is None else "%.0f%%" % (v * 100)

    def us(r, k):
        v = (r or {}).get("us_per_op", {}).get(k)
        return "-" if v is None else "%.2f" % v

    def rat(a, b):
        return "-" if a is None or b is None else _ratio(a, b)

    if ms or mc:
        out += ["", "## Messages between users on the same node and on different nodes", "",
                "Ratios: the other-node figure divided by the same-node one (msg/s below "
                "1.0x is slower; CPU per message above 1.0x costs more).", "",
                "| figure | same node | other node | other / same |", "|---|---|---|---|"]
        g = lambda r, k: (r or {}).get(k)  # noqa: E731
        out.append("| pairs, messages in flight per client | %s | %s | - |" % (
            "%d, %d" % (ms["params"]["pairs"], ms["params"]["window"]) if ms else "-",
            "%d, %d" % (mc["params"]["pairs"], mc["params"]["window"]) if mc else "-"))
        out.append("| throughput, msg/s (closed loop, %s s) | %s | %s | %s |" % (
            _f(g(ms, "params") and ms["params"]["duration_s"], "{:g}"),
            _f(g(ms, "msgs_per_s")), _f(g(mc, "msgs_per_s")),
            rat(g(mc, "msgs_per_s"), g(ms, "msgs_per_s"))))
        out.append("| stream entries written (XADD) | %s | %s | - |" % (
            _f(g(ms, "stream_entries")), _f(g(mc, "stream_entries"))))
        dl = (mc or {}).get("delivery_lag_ms")
        if dl:
            out.append("| XADD to routed on the recipient's node, ms (average / max of its "
                       "last 64; n1, n2, n3) | - | %s | - |" % ", ".join(
                           "%s / %s" % (dl[n]["avg_ms"], dl[n]["max_ms"]) for n in NODES
                           if n in dl))
        for k, name in (("nodes", "the three nodes' CPU per message, us"),
                        ("redis", "Redis's CPU per message, us"),
                        ("generator", "load generator's CPU per message, us")):
            a = (ms or {}).get("us_per_op", {}).get(k)
            b = (mc or {}).get("us_per_op", {}).get(k)
            out.append("| %s | %s | %s | %s |" % (name, us(ms, k), us(mc, k),
                                                   rat(b, a) if a and a >= 0.1 else "-"))
        for k, name in (("nodes", "the three nodes' CPU, share of a core"),
                        ("n1", "n1 / n2 / n3 CPU, share of a core"),
                        ("redis", "Redis CPU, share of a core"),
                        ("generator", "load generator CPU, share of a core"),
                        ("other", "other processes of the machine, share of a core")):
            if k == "n1":
                out.append("| %s | %s | %s | - |" % (name, " / ".join(share(ms, n) for n in NODES),
                                                     " / ".join(share(mc, n) for n in NODES)))
            else:
                out.append("| %s | %s | %s | - |" % (name, share(ms, k), share(mc, k)))
        if ls or lc:
            rate = (ls or lc)["params"]["rate"]
            out += ["", "Latency at %s msg/s in total (open loop, %s s), one way, client to "
                    "client, microseconds:" % (_f(rate), _f((ls or lc)["params"]["duration_s"],
                                                             "{:g}")), "",
                    "| figure | same node | other node | other / same |", "|---|---|---|---|"]
            for k in ("p50", "p90", "p99", "max"):
                a = (ls or {}).get("latency_us", {}).get(k)
                b = (lc or {}).get("latency_us", {}).get(k)
                out.append("| %s | %s | %s | %s |" % (k, _f(a), _f(b), rat(b, a)))
            out.append("| messages received / sent | %s | %s | - |" % (
                "%s / %s" % (_f(ls["received"]), _f(ls["sent"])) if ls else "-",
                "%s / %s" % (_f(lc["received"]), _f(lc["sent"])) if lc else "-"))
    if fs or fl:
        out += ["", "## Presence fan-out across three nodes", "",
                "| figure | contacts on n1, n2, n3 | contacts all on n1 | spread / all on n1 |",
                "|---|---|---|---|"]
        out.append("| contacts per node (n1 / n2 / n3) | %s | %s | - |" % tuple(
            " / ".join(str(r["params"]["contacts_per_node"][n]) for n in NODES) if r else "-"
            for r in (fs, fl)))
        out.append("| updates, of which every contact got | %s | %s | - |" % tuple(
            "%d, %d" % (r["params"]["updates"], r["updates_ok"]) if r else "-" for r in (fs, fl)))
        for k in ("p50", "p99", "max"):
            a = (fs or {}).get("fanout_ms", {}).get(k)
            b = (fl or {}).get("fanout_ms", {}).get(k)
            out.append("| time to the last contact %s, ms | %s | %s | %s |" % (
                k, _f(a, "{:.2f}"), _f(b, "{:.2f}"), rat(a, b)))
        out.append("| stream entries n1 wrote per update | %s | %s | - |" % tuple(
            _f(r["entries_per_update"], "{:g}") if r else "-" for r in (fs, fl)))
        out.append("| stream entries read per update (n1 / n2 / n3) | %s | %s | - |" % tuple(
            " / ".join(_f(r["entries_per_update_by_node"][n], "{:g}") for n in NODES)
            if r else "-" for r in (fs, fl)))
        out.append("| the three nodes' CPU per delivery, us | %s | %s | %s |" % (
            us(fs, "nodes"), us(fl, "nodes"),
            rat((fs or {}).get("us_per_op", {}).get("nodes"),
                (fl or {}).get("us_per_op", {}).get("nodes"))))
        out.append("| Redis's CPU per delivery, us | %s | %s | - |" % (us(fs, "redis"),
                                                                    us(fl, "redis")))
        out.append("| other processes of the machine, share of a core | %s | %s | - |" % (
            share(fs, "other"), share(fl, "other")))
    out += ["", "## What the figures say", ""]
    ok = lambda r: r and "error" not in r  # noqa: E731
    if ok(ms) and ok(mc) and ms["msgs_per_s"]:
        out.append("- Between users on different nodes the closed loop ran at %s of the "
                   "same-node rate (%s vs %s msg/s). A message between nodes costs the three "
                   "nodes %s us of CPU against %s us on one node (%s), and Redis %s us: the "
                   "XADD on the sender's node (through worker 0's registry connection), the "
                   "XREADGROUP, parse and XACK on the recipient's." % (
                       _ratio(mc["msgs_per_s"], ms["msgs_per_s"]), _f(mc["msgs_per_s"]),
                       _f(ms["msgs_per_s"]), us(mc, "nodes"), us(ms, "nodes"),
                       rat(mc["us_per_op"].get("nodes"), ms["us_per_op"].get("nodes")),
                       us(mc, "redis")))
        tot = sum(v for k, v in mc["cpu_share"].items()
                  if k in NODES + ("redis", "generator", "other"))
        busiest = max((k for k in mc["cpu_share"] if k in NODES + ("redis", "generator")),
                      key=lambda k: mc["cpu_share"][k])
        ncpu = meta.get("host", {}).get("cpus", 2)
        if tot >= 0.85 * ncpu:
            out.append("- In the other-node run the nodes, Redis, the generator and the "
                       "machine's other processes used %.0f%% "
                       "of one core out of %d00%%: the cores were (nearly) saturated, so the "
                       "rate is "
                       "what this box allows with everything on it, not what nodes on "
                       "machines of their own would reach; compare the CPU per message." % (
                           tot * 100, ncpu))
        else:
            out.append("- In the other-node run the nodes, Redis, the generator and the "
                       "machine's other processes used %.0f%% of one core out of %d00%%, "
                       "the busiest process (%s) %s: neither the box nor one process was "
                       "saturated, so the rate is bound by the waits "
                       "on the way (%s messages in flight, each through an XADD answered by "
                       "Redis and a batch read by the recipient's blocked XREADGROUP; the "
                       "XADD-to-routed times above), not by CPU." % (
                           tot * 100, ncpu, busiest, share(mc, busiest),
                           _f(2 * mc["params"]["pairs"] * mc["params"]["window"])))
        dl = mc.get("delivery_lag_ms")
        if dl and mc["msgs_per_s"]:
            inflight = 2 * mc["params"]["pairs"] * mc["params"]["window"]
            out.append("- Where the time goes: %s messages in flight at %s msg/s is %.1f ms "
                       "in flight per message on average (in flight / rate). The recipients' "
                       "nodes measured %s ms (n1, n2, n3) from the sending node's XADD to "
                       "the routing of the entry, over their last 64 entries at the end of "
                       "the window: much of a message's time passes in the stream hop, not "
                       "in the clients or the routing inside a node." % (
                           _f(inflight), _f(mc["msgs_per_s"]),
                           inflight * 1000.0 / mc["msgs_per_s"],
                           ", ".join(str(dl[n]["avg_ms"]) for n in NODES if n in dl)))
    if ok(ls) and ok(lc) and ls["latency_us"]["p50"]:
        out.append("- At %s msg/s a message to another node took %s us at the median "
                   "(%s the same-node %s us) and %s us at p99 (same node %s us): the way "
                   "adds the XADD through the sender's worker 0, Redis, and the wake-up of "
                   "the recipient's blocked XREADGROUP. The p99s move from run to run on "
                   "this shared machine." % (
                       _f(lc["params"]["rate"]), _f(lc["latency_us"]["p50"]),
                       rat(lc["latency_us"]["p50"], ls["latency_us"]["p50"]),
                       _f(ls["latency_us"]["p50"]), _f(lc["latency_us"]["p99"]),
                       _f(ls["latency_us"]["p99"])))
    if ok(fs) and ok(fl):
        n_other = sum(fs["params"]["contacts_per_node"][n] for n in NODES[1:])
        out.append("- Presence to %d contacts, %d of them on n2 and n3: n1 wrote %s stream "
                   "entries per update, one per other node and not one per remote contact "
                   "(%d); each other node read %s per update and delivered it to its %d "
                   "contacts. With every contact on n1: %s entries." % (
                       fs["params"]["contacts"], n_other, _f(fs["entries_per_update"], "{:g}"),
                       n_other, " and ".join(_f(fs["entries_per_update_by_node"][n], "{:g}")
                                            for n in NODES[1:]),
                       fs["params"]["contacts_per_node"]["n2"],
                       _f(fl["entries_per_update"], "{:g}")))
        if fs["fanout_ms"]["p50"] and fl["fanout_ms"]["p50"]:
            out.append("- Time to the last contact: %s ms at the median spread over three "
                       "nodes against %s ms on one node (%s); the spread layout divides the "
                       "deliveries among three processes but adds a stream hop for two "
                       "thirds of them." % (_f(fs["fanout_ms"]["p50"], "{:.2f}"),
                                            _f(fl["fanout_ms"]["p50"], "{:.2f}"),
                                            _ratio(fs["fanout_ms"]["p50"],
                                                   fl["fanout_ms"]["p50"])))
    if any("error" in r for r in results):
        out.append("- Not measured: a run fails when the messages or presence updates do not "
                   "all arrive (stream entries left pending or unread afterwards); its "
                   "figures above are what it got before that, and no conclusion is drawn "
                   "from them.")
    for r in results:
        if "error" in r:
            out.append("- FAILED: %s%s" % ("%s, " % r["scenario"] if "layout" in r else "",
                                          r["error"].splitlines()[0]))
    return "\n".join(out) + "\n"
