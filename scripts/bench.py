#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""stanzad benchmarks: `make bench` (BENCH_ARGS="..." passes options here).

Starts stanzad on a free loopback port with a fresh state directory
(plain TCP, --require-tls no, --registration closed), seeds accounts and
rosters straight into its SQLite store, pins the server and the load
generator (build/loadgen, tests/bench/loadgen.c) to separate CPUs, and runs:

  selftest   loadgen against its own echo sink: what the generator can drive
  messages   1:1 messages, closed loop: N clients in pairs, W in flight each
  latency    1:1 messages, open loop at fixed rates; latency at the receiver
  presence   presence fan-out 1 -> R over a roster with subscription 'both'
  pubsub     pubsub fan-out 1 -> R: items published to a node at pubsub.DOMAIN
             that R subscribers get as notifications (XEP-0060)
  idle       N clients logged in and idle (plain TCP, one run per size of
             --idle-clients; and over Direct TLS, one run per size of
             --idle-tls-clients, build/logingen --hold): server RSS, its
             anonymous (heap) part, and the kernel's memory (/proc/meminfo
             Slab, /proc/net/sockstat TCP mem) per connection. Clients leave
             from 127.0.0.2, 127.0.0.3, ... (--source-spread per address),
             so more than one address's ephemeral ports (ip_local_port_range)
             fit; the bench raises RLIMIT_NOFILE (as root, up to fs.nr_open)
  login      TCP connect to ready session over Direct TLS (build/logingen,
             tests/bench/logingen.c): classic RFC 6120 negotiation, SASL2 with
             Bind 2, and FAST tokens; round trips, time to ready, server CPU
             per login
  reconnect  a reconnect storm over Direct TLS (stanzad only; build/logingen
             --hold --storm): --reconnect-devices devices log in (SASL2, Bind 2,
             stream management with resumption, a FAST token) and stay; all
             drop at once (RST: the sessions wait for resumption) and all come
             back at once, per variant: resume (FAST token + inline XEP-0198
             <resume/>, TLS session tickets) and relogin (classic SCRAM login,
             bind, a new session replacing the old); devices back, reconnects/s,
             time to all back, ready p50/p99, server CPU per reconnect, resumed
             vs new sessions
  workers    (not in the default set) stanzad with --workers 1 and 2 (or
             --workers-list) in the same run: a TLS login storm (--storm-devices
             devices, TLS + SCRAM-SHA-256 + bind + stream management + roster +
             initial presence, sessions kept; build/logingen --hold
             --roster-presence) once per steering policy (--steering-list), with
             the per-worker steered counts from `stanzactl --json workers` after
             it, and the closed-loop messages scenario; ratios to one worker in
             DIR/WORKERS.md with --report DIR (bench_report.py --workers). With one worker
             the server gets CPU 0 and the generators CPU 1; with N it gets the
             first N CPUs and the generators the rest, or every CPU when none is
             left (a 2-core host: they share the cores)
  cluster    (not in the default set) three stanzad nodes on one Redis, both
             started by the bench (scripts/bench_cluster.py): messages/s in a
             closed loop and latency p50/p99 at --cluster-rate msg/s between
             users on the same node and on different nodes, and a presence
             fan-out to --cluster-contacts contacts spread over the three
             nodes against all on the publisher's node (time to the last
             contact, stream entries per update); DIR/CLUSTER.md with
             --report DIR

The other scenarios run stanzad with one worker (--workers, 1 by default):
the classic single-core comparison, the peers being pinned to one core too.

Server CPU is the sum of the server threads' run time (/proc/PID/task/*/
schedstat, ns; utime+stime from /proc/PID/stat is reported too) over the
measured window; RSS is VmRSS from /proc/PID/status. One JSON line per
scenario goes to stdout, then a human summary; progress goes to stderr.

--servers stanzad,prosody,ejabberd runs the same scenarios against Debian's
prosody and ejabberd too, in the same run (scripts/bench_peers.py installs,
configures, starts, sets up and stops them); --report DIR writes the run's
JSON lines and DIR/REPORT.md (scripts/bench_report.py): the targets met or
not, and every figure side by side with its ratio to the peers'.

Any server can be measured with --target HOST:PORT (accounts P0..P(N-1)
with --password, the presence publisher and its roster must exist there;
--server-pid PID to get its CPU and RSS).
"""
import argparse
import json
import os
import platform
import queue
import shutil
import signal
import socket
import sqlite3
import resource
import subprocess
import sys
import tempfile
import threading
import time
import hashlib
import hmac

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_cluster  # noqa: E402
import bench_peers  # noqa: E402  (scripts/, beside this file)
import bench_report  # noqa: E402

BUDGET_US_PER_MSG = 5.0
BUDGET_US_PER_DELIVERY = 3.0
BUDGET_IDLE_BYTES = 4096
BUDGET_IDLE_TLS_BYTES = 12 * 1024  # TLS in userspace
BUDGET_P99_US_AT_1000 = 200.0
LOADGEN_MIN_RATE = 300000
# Clients per loadgen process: below the 20,000 fd limit with room to spare.
CLIENTS_PER_PROCESS = 15000
# The peers hold idle connections up to this many (ejabberd takes hundreds
# of KiB each: 100,000 would not fit in memory).
PEER_IDLE_MAX = 10000
# Descriptors beyond the connections: listeners, store, logs, pipes (the
# server keeps 64 for itself: main.c's raise_fd_limit()).
FD_SLACK = 100
SALT = b"stanzad-bench-sa"  # 16 bytes, like scram.h's SCRAM_SALT_LEN
ALL_SCENARIOS = ("selftest", "messages", "latency", "presence", "pubsub", "idle", "login",
                 "reconnect")
# Asked for by name only (--scenario workers): not part of the default run.
EXTRA_SCENARIOS = ("workers", "cluster")
LOGIN_MODES = ("classic", "sasl2", "fast")
RECONNECT_VARIANTS = ("resume", "relogin")
BUDGET_US_PER_LOGIN = 200.0  # >= 5,000 logins/s per core (DESIGN)
PUBSUB_NODE = "bench"


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_listening(host, port, proc, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError("exited with status %s during startup" % proc.returncode)
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise BenchError("%s:%d not accepting after %.0f s" % (host, port, timeout))


def rss_kib(pid):
    """VmRSS and RssAnon of a process, KiB."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


def host_busy_seconds():
    """CPU seconds the machine has been busy (all CPUs; idle and iowait excluded)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_wait, limit=0.10, sample=1.0):
    """Waits (at most max_wait s) until other processes use under `limit` of a
    core over `sample` s. Returns the last busy share measured."""
    deadline = time.monotonic() + max_wait
    while True:
        b0 = host_busy_seconds()
        time.sleep(sample)
        busy = (host_busy_seconds() - b0) / sample
        if busy < limit or time.monotonic() >= deadline:
            return busy


def server_cpu_ns(pid):
    """Run time of all of a process's threads, ns (schedstat)."""
    total = 0
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                    total += int(f.read().split()[0])
            except OSError:
                pass
    except OSError:
        pass
    return total


def drain(pid, quiet_share=0.02, step=0.25, max_wait=15.0):
    """After a window: the CPU seconds the server still spends on it (queued
    storage writes, output) until a `step` passes with under `quiet_share`
    of a core, and the largest RSS seen meanwhile."""
    if not pid:
        return None
    c0 = last = server_cpu_ns(pid)
    peak = rss_kib(pid)["VmRSS"]
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        time.sleep(step)
        now = server_cpu_ns(pid)
        peak = max(peak, rss_kib(pid)["VmRSS"])
        if (now - last) / 1e9 < quiet_share * step:
            break
        last = now
    return {"cpu_s": round((last - c0) / 1e9, 4), "rss_peak_kib": peak,
            "rss_after_kib": rss_kib(pid)["VmRSS"]}


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------
# Accounts: seeded straight into the store
# --------------------------------------------------------------------------

def scram_keys(hname, password, salt, iterations):
    salted = hashlib.pbkdf2_hmac(hname, password, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hname).digest()
    stored = hashlib.new(hname, client_key).digest()
    server = hmac.new(salted, b"Server Key", hname).digest()
    return stored, server


def columns(db, table):
    return {r[1]: r for r in db.execute("PRAGMA table_info(%s)" % table)}


def seed_store(build, state_dir, opts):
    """Creates the store with stanzactl (so the schema is the daemon's own),
    then inserts accounts and rosters in one transaction.

    Stored keys use 1 PBKDF2 iteration: logins with PLAIN then cost the
    server almost nothing, so 10,000 clients log in within seconds. Login
    speed is not what these scenarios measure."""
    r = subprocess.run([os.path.join(build, "stanzactl"), "--state-dir", state_dir,
                        "user", "list"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise BenchError("stanzactl could not create the store: %s" % r.stderr.strip())
    pw = opts.password.encode()
    s1 = scram_keys("sha1", pw, SALT, 1)
    s256 = scram_keys("sha256", pw, SALT, 1)
    now = int(time.time())
    users = ["%s%d" % (opts.prefix, i) for i in range(max(opts.clients, opts.idle_clients))]
    recv = ["%s%d" % (opts.receiver_prefix, i) for i in range(opts.receivers)]
    db = sqlite3.connect(os.path.join(state_dir, "stanzad.db"))
    try:
        acc_cols = columns(db, "accounts")
        need = [c for c, r in acc_cols.items() if r[3] and r[4] is None and c not in (
            "username", "iterations", "salt", "sha1_stored", "sha1_server",
            "sha256_stored", "sha256_server", "created_at")]
        if need:
            raise BenchError("accounts has new required columns %s: update seed_store()" % need)
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO accounts (username, iterations, salt, sha1_stored, sha1_server,"
            " sha256_stored, sha256_server, created_at) VALUES (?, 1, ?, ?, ?, ?, ?, ?)",
            [(u, SALT, s1[0], s1[1], s256[0], s256[1], now)
             for u in users + recv + [opts.publisher]])
        roster_ok = True
        try:
            rc = columns(db, "roster_items")
            need = [c for c, r in rc.items() if r[3] and r[4] is None and c not in (
                "username", "jid", "subscription")]
            if need:
                raise BenchError("roster_items has new required columns %s" % need)
            extra = ", version" if "version" in rc else ""
            extra_v = ", 1" if "version" in rc else ""
            sql = ("INSERT INTO roster_items (username, jid, subscription%s)"
                   " VALUES (?, ?, 'both'%s)" % (extra, extra_v))
            pub_jid = "%s@%s" % (opts.publisher, opts.domain)
            rows = [(opts.publisher, "%s@%s" % (r, opts.domain)) for r in recv]
            rows += [(r, pub_jid) for r in recv]
            db.executemany(sql, rows)
            if "roster_versions" in {r[0] for r in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}:
                db.executemany("INSERT INTO roster_versions (username, version) VALUES (?, 1)",
                               [(u,) for u in recv + [opts.publisher]])
        except (sqlite3.Error, BenchError) as e:
            roster_ok = False
            log("cannot seed rosters (%s): the presence scenario will be skipped" % e)
        db.execute("COMMIT")
    finally:
        db.close()
    return roster_ok


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------

def pinned(cpus, argv):
    return (["taskset", "-c", cpus] if cpus else []) + argv


class Server:
    """A stanzad on a free loopback port with a copy of the seeded store."""

    def __init__(self, opts, template, tls=False, workers=None, steering=None):
        self.opts = opts
        self.state_dir = tempfile.mkdtemp(prefix="stanzad-bench-")
        shutil.rmtree(self.state_dir)
        shutil.copytree(template, self.state_dir)
        self.log_path = os.path.join(self.state_dir, "stanzad.log")
        self.host = "127.0.0.1"
        self.port = free_port()
        # The login scenario connects with Direct TLS (XEP-0368).
        self.tls_port = free_port() if tls else None
        argv = [os.path.join(opts.build, "stanzad"), "--domain", opts.domain,
                "--state-dir", self.state_dir,
                "--listen-c2s", "%s:%d" % (self.host, self.port),
                "--listen-c2s-tls", "%s:%d" % (self.host, self.tls_port) if tls else "off",
                "--require-tls", "no", "--registration", "closed",
                "--log-level", opts.server_log_level,
                "--workers", str(workers or opts.workers)] + (
                    ["--steering", steering] if steering else []) + [
                # Thousands of clients from one address at line rate: the
                # abuse limits (per-address, per-session rates) would see an
                # attack. A later --server-arg may set them again.
                "--max-preauth-per-ip", "0", "--session-stanza-rate", "0",
                "--session-byte-rate", "0"] + opts.server_arg
        self.ctl = os.path.join(opts.build, "stanzactl")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(pinned(opts.server_cpus, argv), stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid  # taskset execs the daemon: same pid
        try:
            wait_listening(self.host, self.port, self.proc)
        except BenchError as e:
            self.stop()
            raise BenchError("stanzad did not start: %s\n%s" % (e, self.log_tail()))

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def warnings(self, start=0):
        """{event: count} of the warn/error lines logged since byte `start`
        (the require_tls=no warning every bench server gives excepted)."""
        out = {}
        try:
            with open(self.log_path, "rb") as f:
                f.seek(start)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return out
        for line in text.splitlines():
            if "level=warn" not in line and "level=error" not in line:
                continue
            ev = next((w[6:] for w in line.split() if w.startswith("event=")), "?")
            if ev != "server.insecure":
                out[ev] = out.get(ev, 0) + 1
        return out

    def archived_rows(self):
        """Rows in the message archive (XEP-0313), or None without one."""
        try:
            db = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.state_dir, "stanzad.db"),
                                 uri=True, timeout=5)
            try:
                return db.execute("SELECT count(*) FROM mam_messages").fetchone()[0]
            finally:
                db.close()
        except sqlite3.Error:
            return None

    def log_tail(self, n=20):
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return ""

    def alive(self):
        return self.proc.poll() is None

    def ctl_json(self, *args, timeout=30):
        """`stanzactl --json ARGS` against this server (control socket in
        its state directory), parsed; None when it fails."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                r = subprocess.run([self.ctl, "--state-dir", self.state_dir, "--json"] +
                                   list(args), capture_output=True, text=True, timeout=timeout)
                if r.returncode == 0:
                    return json.loads(r.stdout)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)  # the control socket may listen after the clients' ports

    def stop(self):
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
                log("stanzad ignored SIGTERM; killed")
        self._log.close()
        if rc != 0:
            log("stanzad exited with status %s; log kept in %s:\n%s" %
                (rc, self.state_dir, self.log_tail()))
        elif not self.opts.keep_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        return rc


class External:
    """A server someone else started (--target)."""

    def __init__(self, opts):
        self.host, _, port = opts.target.rpartition(":")
        self.port = int(port)
        self.pid = opts.server_pid

    def alive(self):
        return True

    def log_size(self):
        return 0

    def warnings(self, start=0):
        return None

    def archived_rows(self):
        return None

    def stop(self):
        return 0


class Loadgen:
    """One loadgen process; its stdout lines arrive on a queue."""

    def __init__(self, opts, args, cpus=None, prog="loadgen"):
        argv = [os.path.join(opts.build, prog)] + args
        self.proc = subprocess.Popen(pinned(cpus if cpus is not None else opts.loadgen_cpus,
                                            argv),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.lines = queue.Queue()
        self.err = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines),
                         daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    @staticmethod
    def _pump(f, q):
        for line in f:
            q.put(line)
        q.put(None)

    def _pump_err(self):
        for line in self.proc.stderr:
            self.err.append(line.rstrip())
            if len(self.err) <= 5:
                log("loadgen: " + line.rstrip())

    def event(self, timeout):
        """The next JSON line; raises BenchError on exit or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise BenchError("loadgen gave no answer within %.0f s" % timeout)
            if line is None:
                self.proc.wait()
                raise BenchError("loadgen exited (status %s) without a result: %s" %
                                 (self.proc.returncode, " / ".join(self.err[-3:])))
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == "error":
                self.proc.wait()
                raise BenchError(ev.get("error", "loadgen failed"))
            return ev

    def go(self):
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def wait(self, timeout=15):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Profiler:
    """perf record -g on the server over one measured window (--profile)."""

    def __init__(self, opts, name, pid):
        self.proc = None
        if not opts.profile or not pid:
            return
        os.makedirs(opts.profile, exist_ok=True)
        self.path = os.path.join(opts.profile, "%s.perf.data" % name)
        self.proc = subprocess.Popen(["perf", "record", "-g", "-q", "-p", str(pid), "-o",
                                      self.path], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        time.sleep(0.3)  # perf attaches before the window opens

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=30)
            log("profile: perf report -i %s" % self.path)


# --------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------

def common_args(opts, srv, prefix=None):
    a = ["run", "--host", srv.host, "--port", str(srv.port), "--domain", opts.domain,
         "--password", opts.password, "--prefix", prefix or opts.prefix,
         "-t", str(opts.threads), "--sync"]
    if srv.pid:
        a += ["--server-pid", str(srv.pid)]
    return a


def thread_cpu_ns(pid):
    """Run time of each of a process's threads by name (comm: stanzad is
    worker 0, stanzad-wN worker N, stanzad-storage the store), ns."""
    out = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                comm = f.read().strip()
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                out[comm] = out.get(comm, 0) + int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


def thread_cpu_delta(t0, t1):
    """CPU seconds per thread name between two thread_cpu_ns() readings."""
    return {k: round((v - t0.get(k, 0)) / 1e9, 4) for k, v in sorted(t1.items())
            if v - t0.get(k, 0) > 0}


def run_one(opts, srv, name, args, timeout, cpus=None):
    """One synchronized loadgen run: log in, (profile), go, result, then the
    server's deferred work for the window while the clients idle."""
    lg = Loadgen(opts, args, cpus)
    try:
        lg.event(opts.login_timeout + 30)  # ready (loadgen reports its own timeout first)
        prof = Profiler(opts, name, srv.pid)
        th0 = thread_cpu_ns(srv.pid) if srv.pid else {}
        lg.go()
        res = lg.event(timeout)
        if srv.pid:
            # From go to the result: warm-up included, so read it as a split.
            res["server_threads_cpu_s"] = thread_cpu_delta(th0, thread_cpu_ns(srv.pid))
        res["rss_end_kib"] = rss_kib(srv.pid)["VmRSS"] if srv.pid else None
        res["drain"] = drain(srv.pid)
        prof.stop()
    finally:
        lg.wait()
    return res


def with_deferred(res, ops):
    """us per op including the server's work after the window; (total, deferred)."""
    us = res.get("server_us_per_op")
    d = res.get("drain")
    if us is None or us < 0 or not d or not ops:
        return us, None
    extra = d["cpu_s"] * 1e6 / ops
    return round(us + extra, 3), round(extra, 3)


def host_info():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    # What bounds the idle sizes: descriptors per process, and whether the
    # bench may raise the hard limit (CAP_SYS_RESOURCE, bit 24 of CapEff).
    cap_sys_resource = None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    cap_sys_resource = bool(int(line.split()[1], 16) >> 24 & 1)
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "nofile_hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
            "cap_sys_resource": cap_sys_resource}


def pick(res, *keys):
    return {k: res[k] for k in keys if k in res}


# Open loop: the generator kept up when its sends left on time.
OPEN_LATE_MEAN_US = 100


def saturation(res, threads):
    """Whether the load generator, not the server, limited the run. The open
    loop polls before each send, so its CPU share says nothing: its lateness
    and skipped sends do."""
    if "late_mean_us" in res:
        return res["late_mean_us"] > OPEN_LATE_MEAN_US or res.get("drops", 0) > 0
    return res.get("loadgen_cpu_util", 0) > 0.9 * threads


def scenario_selftest(opts):
    port = free_port()
    sink = subprocess.Popen(pinned(opts.server_cpus,
                                   [os.path.join(opts.build, "loadgen"), "sink", "--port",
                                    str(port), "--domain", opts.domain]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening("127.0.0.1", port, sink)
        srv = External(argparse.Namespace(target="127.0.0.1:%d" % port,
                                          server_pid=sink.pid))
        args = common_args(opts, srv) + ["--mode", "closed", "-c", str(opts.clients),
                                         "-w", str(opts.window), "-d", str(opts.selftest_duration),
                                         "--warmup", "0.5", "--label", "selftest"]
        res = run_one(opts, srv, "selftest", args, opts.selftest_duration + 30)
        # The latency floor: the open loop through the sink, no server work.
        floor = None
        if opts.rate_list:
            rate = opts.rate_list[0]
            args = common_args(opts, srv) + ["--mode", "open", "-c", str(opts.clients),
                                             "-r", str(rate), "-d", str(opts.selftest_duration),
                                             "--warmup", "0.5", "--spin-us", str(opts.spin_us),
                                             "--label", "selftest-floor"]
            fl = run_one(opts, srv, "selftest-floor", args, opts.selftest_duration + 30)
            floor = {"rate": rate, "latency_us": fl["latency_us"],
                     "send_late_max_us": fl.get("late_max_us")}
        # The fan-out floor: the sink copies each update to every other stream.
        fanout_floor = None
        if opts.receivers and opts.updates:
            args = common_args(opts, srv, prefix=opts.receiver_prefix) + [
                "--mode", "presence", "--publisher", opts.publisher,
                "--receivers", str(opts.receivers), "--updates", str(opts.updates),
                "--update-timeout", str(opts.update_timeout), "--label", "selftest-fanout"]
            fo = run_one(opts, srv, "selftest-fanout", args,
                         opts.updates * opts.update_timeout + 60)
            fanout_floor = {"receivers": opts.receivers, "deliveries": fo["deliveries"],
                            "deliveries_per_s": fo["rate"],
                            "sink_us_per_delivery": fo.get("server_us_per_op"),
                            "fanout_ms": fo.get("fanout_ms")}
    finally:
        sink.send_signal(signal.SIGTERM)
        try:
            sink.wait(timeout=5)
        except subprocess.TimeoutExpired:
            sink.kill()
    util = res["loadgen_cpu_util"] or 1e-9
    # What one loadgen thread could drive: the rate scaled to a full core.
    capacity = res["rate"] / min(1.0, util / opts.threads)
    return {
        "scenario": "selftest",
        "params": {"clients": opts.clients, "window": opts.window, "threads": opts.threads,
                   "duration_s": opts.selftest_duration, "target": "loadgen echo sink"},
        "msgs_per_s": res["rate"],
        "loadgen_us_per_msg": res["loadgen_us_per_op"],
        "loadgen_cpu_util": res["loadgen_cpu_util"],
        "loadgen_capacity_msgs_per_s": round(capacity),
        "sink_cpu_util": res.get("server_cpu_util"),
        "other_cpu_util": res.get("other_cpu_util"),
        "latency_floor": floor,
        "fanout_floor": fanout_floor,
        "ok": capacity >= LOADGEN_MIN_RATE,
        "loadgen": res,
    }


def scenario_messages(opts, srv):
    args = common_args(opts, srv) + ["--mode", "closed", "-c", str(opts.clients),
                                     "-w", str(opts.window), "-d", str(opts.duration),
                                     "--warmup", str(opts.warmup), "--label", "messages"]
    res = run_one(opts, srv, "messages", args, opts.duration + opts.warmup + 60)
    total, deferred = with_deferred(res, res["received"])
    out = {
        "scenario": "messages",
        "params": {"clients": opts.clients, "pairs": opts.clients // 2, "window": opts.window,
                   "in_flight": res.get("in_flight"), "duration_s": opts.duration,
                   "threads": opts.threads},
        "msgs_per_s": res["rate"],
        "server_us_per_msg": total,
        "server_us_per_msg_window": res.get("server_us_per_op"),
        "server_us_per_msg_deferred": deferred,
        "server_cpu_util": res.get("server_cpu_util"),
        "loadgen_cpu_util": res["loadgen_cpu_util"],
        "other_cpu_util": res.get("other_cpu_util"),
        "loadgen_us_per_msg": res["loadgen_us_per_op"],
        "latency_us": res["latency_us"],
        "errors": res["errors"], "drops": res["drops"], "disconnects": res["disconnects"],
        "loadgen_saturated": saturation(res, opts.threads),
        "loadgen": res,
    }
    rows = srv.archived_rows()
    if rows is not None:
        # Both parties' archives: 2 rows per message when nothing is shed.
        out["archived_rows"] = rows
        out["archived_per_msg"] = round(rows / max(1, res.get("received_total", 0)), 3)
    if srv.pid:
        out["server_rss_end_kib"] = res["rss_end_kib"]
        out["server_rss_peak_after_kib"] = res["drain"]["rss_peak_kib"]
        out["server_rss_drained_kib"] = res["drain"]["rss_after_kib"]
    return out


def scenario_latency(opts, srv, rate):
    args = common_args(opts, srv) + ["--mode", "open", "-c", str(opts.clients),
                                     "-r", str(rate), "-d", str(opts.latency_duration),
                                     "--warmup", "1", "--spin-us", str(opts.spin_us),
                                     "--label", "latency-%d" % rate]
    rows0 = srv.archived_rows()
    res = run_one(opts, srv, "latency-%d" % rate, args, opts.latency_duration + 60)
    total, deferred = with_deferred(res, res["received"])
    rows = srv.archived_rows()
    arch = {}
    if rows is not None and rows0 is not None:
        arch = {"archived_rows": rows - rows0,
                "archived_per_msg": round((rows - rows0) / max(1, res["received_total"]), 3)}
    return dict(arch, **{
        "scenario": "latency",
        "params": {"rate": rate, "clients": opts.clients, "duration_s": opts.latency_duration,
                   "threads": opts.threads},
        "msgs_per_s": res["rate"],
        "latency_us": res["latency_us"],
        "server_us_per_msg": total,
        "server_us_per_msg_deferred": deferred,
        "server_cpu_util": res.get("server_cpu_util"),
        "loadgen_cpu_util": res["loadgen_cpu_util"],
        "other_cpu_util": res.get("other_cpu_util"),
        "send_late_max_us": res.get("late_max_us"),
        "send_late_mean_us": res.get("late_mean_us"),
        "errors": res["errors"], "drops": res["drops"], "disconnects": res["disconnects"],
        "loadgen_saturated": saturation(res, opts.threads),
        "loadgen": res,
    })


def scenario_presence(opts, srv):
    args = common_args(opts, srv, prefix=opts.receiver_prefix) + [
        "--mode", "presence", "--publisher", opts.publisher,
        "--receivers", str(opts.receivers), "--updates", str(opts.updates),
        "--update-timeout", str(opts.update_timeout), "--label", "presence"]
    res = run_one(opts, srv, "presence", args,
                  opts.updates * opts.update_timeout + 60)
    if res["no_deliveries"]:
        status = ("no_deliveries: the first update reached none of the %d contacts within "
                  "%.1f s: the server does not broadcast presence to roster subscribers "
                  "(yet)" % (opts.receivers, opts.update_timeout))
    elif res["updates_timed_out"]:
        status = ("partial: %d of %d updates missed some contacts (%d deliveries of %d)" %
                  (res["updates_timed_out"], res["updates_sent"], res["deliveries"],
                   res["updates_sent"] * opts.receivers))
    else:
        status = "ok"
    ok = status == "ok"
    total, deferred = with_deferred(res, res["deliveries"])
    return {
        "scenario": "presence",
        "params": {"receivers": opts.receivers, "updates": opts.updates,
                   "update_timeout_s": opts.update_timeout, "threads": opts.threads},
        "status": status,
        "deliveries": res["deliveries"],
        "deliveries_per_s": res["rate"] if ok else None,
        "server_us_per_delivery": total if res["deliveries"] else None,
        "server_us_per_delivery_deferred": deferred if res["deliveries"] else None,
        "server_cpu_util": res.get("server_cpu_util"),
        "loadgen_cpu_util": res["loadgen_cpu_util"],
        "other_cpu_util": res.get("other_cpu_util"),
        "fanout_ms": res.get("fanout_ms"),
        "latency_us": res["latency_us"],
        "errors": res["errors"], "disconnects": res["disconnects"],
        "loadgen_saturated": saturation(res, opts.threads) if ok else False,
        "loadgen": res,
    }


def seed_pubsub(state_dir, opts):
    """The pubsub scenario's node at pubsub.DOMAIN, owned by the publisher,
    with every receiver subscribed (bare JID), straight into the store.
    The node's configuration is the service's default (empty text)."""
    db = sqlite3.connect(os.path.join(state_dir, "stanzad.db"))
    try:
        if "pubsub_nodes" not in {r[0] for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}:
            log("no pubsub tables in the store: the pubsub scenario will be skipped")
            return False
        pub_jid = "%s@%s" % (opts.publisher, opts.domain)
        db.execute("BEGIN")
        db.execute("INSERT INTO pubsub_nodes (id, host, username, node, config, creator,"
                   " created_at) VALUES (1, ?, NULL, ?, '', ?, ?)",
                   ("pubsub." + opts.domain, PUBSUB_NODE, pub_jid, int(time.time())))
        db.execute("INSERT INTO pubsub_affiliations (node_id, jid, affiliation)"
                   " VALUES (1, ?, 'owner')", (pub_jid,))
        db.executemany("INSERT INTO pubsub_subscriptions (node_id, jid, subid, state, options)"
                       " VALUES (1, ?, ?, 'subscribed', '')",
                       [("%s%d@%s" % (opts.receiver_prefix, i, opts.domain), "s%d" % i)
                        for i in range(opts.receivers)])
        db.execute("COMMIT")
        return True
    except sqlite3.Error as e:
        log("cannot seed the pubsub node (%s): the pubsub scenario will be skipped" % e)
        return False
    finally:
        db.close()


def scenario_pubsub(opts, srv):
    """Like presence, but each update is an item published to the node."""
    args = common_args(opts, srv, prefix=opts.receiver_prefix) + [
        "--mode", "presence", "--publisher", opts.publisher,
        "--receivers", str(opts.receivers), "--updates", str(opts.updates),
        "--update-timeout", str(opts.update_timeout), "--label", "pubsub",
        "--pubsub-node", PUBSUB_NODE, "--pubsub-service", "pubsub." + opts.domain]
    res = run_one(opts, srv, "pubsub", args, opts.updates * opts.update_timeout + 60)
    if res["no_deliveries"]:
        status = ("no_deliveries: the first item reached none of the %d subscribers within "
                  "%.1f s" % (opts.receivers, opts.update_timeout))
    elif res["updates_timed_out"]:
        status = ("partial: %d of %d items missed some subscribers (%d deliveries of %d)" %
                  (res["updates_timed_out"], res["updates_sent"], res["deliveries"],
                   res["updates_sent"] * opts.receivers))
    else:
        status = "ok"
    ok = status == "ok"
    total, deferred = with_deferred(res, res["deliveries"])
    return {
        "scenario": "pubsub",
        "params": {"receivers": opts.receivers, "items": opts.updates,
                   "update_timeout_s": opts.update_timeout, "threads": opts.threads},
        "status": status,
        "deliveries": res["deliveries"],
        "deliveries_per_s": res["rate"] if ok else None,
        "server_us_per_delivery": total if res["deliveries"] else None,
        "server_us_per_delivery_deferred": deferred if res["deliveries"] else None,
        "server_us_per_publish": (round(total * opts.receivers, 1)
                                  if res["deliveries"] and total is not None else None),
        "server_cpu_util": res.get("server_cpu_util"),
        "loadgen_cpu_util": res["loadgen_cpu_util"],
        "other_cpu_util": res.get("other_cpu_util"),
        "fanout_ms": res.get("fanout_ms"),
        "latency_us": res["latency_us"],
        "errors": res["errors"], "disconnects": res["disconnects"],
        "loadgen_saturated": saturation(res, opts.threads) if ok else False,
        "loadgen": res,
    }


def kernel_mem():
    """The kernel's memory that grows with connections, KiB: Slab and
    SUnreclaim from /proc/meminfo, TCP socket buffers (/proc/net/sockstat
    'mem', pages) and sockets in use."""
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Slab", "SUnreclaim", "MemAvailable"):
                out[k] = int(v.split()[0])
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                w = line.split()[1:]
                kv = dict(zip(w[0::2], (int(x) for x in w[1::2])))
                out["tcp_inuse"] = kv.get("inuse", 0)
                out["tcp_mem_kib"] = kv.get("mem", 0) * os.sysconf("SC_PAGE_SIZE") // 1024
    return out


def sysctl_int(name):
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return None


def raise_nofile(need):
    """RLIMIT_NOFILE of this process (so of the server and the load
    generators it starts) up to need, as far as fs.nr_open allows; the
    limit reached."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, need)
    nr_open = (sysctl_int("fs.nr_open") or [hard])[0]
    if want > hard:
        want_hard = min(want, nr_open)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want_hard, want_hard))
            return want_hard
        except (ValueError, OSError):
            want = hard  # not root: the hard limit is as far as it goes
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return min(want, hard)


def idle_limits(opts, n):
    """Why n idle connections cannot be held on this host, or None."""
    import resource
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < n + FD_SLACK:
        return ("RLIMIT_NOFILE is %d, %d connections need %d: the server holds them all "
                "in one process. Raising the hard limit needs root with CAP_SYS_RESOURCE "
                "(or start from a shell with 'ulimit -Hn %d'), and fs.nr_open (now %s) "
                "at least as high" % (soft, n, n + FD_SLACK, n + FD_SLACK,
                                      (sysctl_int("fs.nr_open") or ["?"])[0]))
    ports = sysctl_int("net.ipv4.ip_local_port_range")
    per_addr = opts.source_spread or n
    if ports and ports[1] - ports[0] + 1 < per_addr:
        return ("net.ipv4.ip_local_port_range %d-%d has fewer ports than the %d clients "
                "per source address: lower --source-spread" % (ports[0], ports[1], per_addr))
    ct_max = (sysctl_int("net.netfilter.nf_conntrack_max") or [0])[0]
    ct_count = (sysctl_int("net.netfilter.nf_conntrack_count") or [0])[0]
    if ct_count and ct_max < n + 1000:
        # Loopback connections are tracked here: past the table's size the
        # kernel drops new connections' packets.
        return ("connection tracking is on and net.netfilter.nf_conntrack_max is %d: "
                "sysctl -w net.netfilter.nf_conntrack_max=%d" % (ct_max, 2 * n))
    file_max = (sysctl_int("fs.file-max") or [0])[0]
    if file_max and file_max < 2 * n + 10 * FD_SLACK:
        return ("fs.file-max %d is below the %d descriptors of both ends: "
                "sysctl -w fs.file-max=%d" % (file_max, 2 * n, 4 * n))
    return None


def scenario_idle(opts, srv, n, tls=False):
    """n clients log in (plain TCP, loadgen; or Direct TLS, logingen --hold)
    and stay idle; the server's RSS, its anonymous part (heap and mmap
    arenas) and the kernel's memory (both ends of every loopback
    connection) before and with them, per connection."""
    why = idle_limits(opts, n)
    if why:
        raise BenchError("%d idle connections: %s" % (n, why))
    per_proc = CLIENTS_PER_PROCESS if not tls else n
    nproc = (n + per_proc - 1) // per_proc
    base = rss_kib(srv.pid) if srv.pid else None
    k0 = kernel_mem()
    cpu0 = cpu_seconds(srv.pid) if srv.pid else None
    t0 = time.monotonic()
    gens, first, held = [], 0, None
    spread = ["--source-spread", str(opts.source_spread)]
    try:
        for i in range(nproc):
            k = n // nproc + (1 if i < n % nproc else 0)
            if tls:
                a = ["--host", srv.host, "--port", str(srv.tls_port), "--domain", opts.domain,
                     "--password", opts.password, "--prefix", opts.prefix, "--mode", "classic",
                     "-t", str(opts.login_threads), "--hold", str(k), "--first", str(first),
                     "--sync"] + spread
                gens.append(Loadgen(opts, a, prog="logingen"))
            else:
                a = common_args(opts, srv) + ["--mode", "idle", "-c", str(k), "--first",
                                              str(first), "--label", "idle",
                                              "--login-timeout", str(opts.login_timeout)] + spread
                gens.append(Loadgen(opts, a))
            first += k
        readies = [g.event(opts.login_timeout + 30) for g in gens]
        if tls:
            for g in gens:
                g.go()
            held = [g.event(opts.login_timeout + n / 100.0) for g in gens]
            readies = [{"ready": h.get("held", 0)} for h in held]
            if sum(r["ready"] for r in readies) < n:
                raise BenchError("%d of %d TLS sessions held (%s)" % (
                    sum(r["ready"] for r in readies), n,
                    next((h["last_error"] for h in held if h.get("last_error")), "?")))
        login_s = time.monotonic() - t0
        time.sleep(1.0)  # let allocations settle
        cpu1 = cpu_seconds(srv.pid) if srv.pid else None
        loaded = rss_kib(srv.pid) if srv.pid else None
        k1 = kernel_mem()
        for g in gens:
            g.go()
        if not tls:
            for g in gens:
                g.event(30)
    finally:
        for g in gens:
            g.wait(timeout=60 + n / 20000.0)
    after = None
    if srv.pid:
        time.sleep(1.0)
        after = rss_kib(srv.pid)
    out = {
        "scenario": "idle",
        "params": {"clients": n, "loadgen_processes": nproc,
                   "transport": "Direct TLS 1.3" if tls else "plain TCP",
                   "source_spread": opts.source_spread,
                   "source_addresses": (n + opts.source_spread - 1) // opts.source_spread
                   if opts.source_spread else 1},
        "login_s": round(login_s, 3),
        "logins_per_s": round(n / login_s) if login_s > 0 else None,
        "ready": sum(r.get("ready", 0) for r in readies),
        # Both ends of every connection are on this host: the kernel's
        # figures count the client's socket as well as the server's.
        "kernel_slab_delta_kib": k1["Slab"] - k0["Slab"],
        "kernel_slab_bytes_per_conn": round((k1["Slab"] - k0["Slab"]) * 1024 / n),
        "kernel_sunreclaim_bytes_per_conn": round((k1["SUnreclaim"] - k0["SUnreclaim"])
                                                  * 1024 / n),
        "kernel_tcp_mem_bytes_per_conn": round((k1["tcp_mem_kib"] - k0["tcp_mem_kib"])
                                               * 1024 / n),
        "tcp_sockets_delta": k1["tcp_inuse"] - k0["tcp_inuse"],
        "mem_available_delta_kib": k1["MemAvailable"] - k0["MemAvailable"],
    }
    if held:
        out["tls_ready_ms"] = held[0].get("ready_ms")
    if base:
        delta = (loaded["VmRSS"] - base["VmRSS"]) * 1024
        out.update({
            "rss_baseline_kib": base["VmRSS"], "rss_loaded_kib": loaded["VmRSS"],
            "rss_after_close_kib": after["VmRSS"],
            "rss_anon_delta_kib": loaded.get("RssAnon", 0) - base.get("RssAnon", 0),
            "rss_bytes_per_conn": round(delta / n),
            "heap_bytes_per_conn": round((loaded.get("RssAnon", 0) - base.get("RssAnon", 0))
                                         * 1024 / n),
            "server_login_cpu_s": round(cpu1 - cpu0, 3),
            "server_login_us_per_client": round((cpu1 - cpu0) * 1e6 / n, 1),
        })
    return out


def scenario_login(opts, srv):
    """One logingen run per negotiation, each a fresh window on the same
    server: logins per second, round trips, time from connect() to ready,
    server CPU per login (the window's, plus what it still does after)."""
    out = []
    for mode in opts.login_mode_list:
        args = ["--host", srv.host, "--port", str(srv.tls_port), "--domain", opts.domain,
                "--password", opts.password, "--prefix", opts.prefix,
                "--users", str(opts.login_users), "-t", str(opts.login_threads),
                "-d", str(opts.login_duration), "--mode", mode, "--sync"]
        if opts.tls_resume:
            args.append("--tls-resume")
        lg = Loadgen(opts, args, prog="logingen")
        try:
            lg.event(opts.login_timeout + 30)  # ready: FAST tokens fetched
            prof = Profiler(opts, "login-" + mode, srv.pid)
            c0, h0 = server_cpu_ns(srv.pid), host_busy_seconds()
            l0, t0 = cpu_seconds(lg.proc.pid), time.monotonic()
            lg.go()
            res = lg.event(opts.login_duration + 60)
            c1, h1 = server_cpu_ns(srv.pid), host_busy_seconds()
            l1, t1 = cpu_seconds(lg.proc.pid), time.monotonic()
            prof.stop()
            d = drain(srv.pid)
        finally:
            lg.wait()
        if res.get("failures") and not res.get("logins"):
            raise BenchError("%s: every login failed (%s)" % (mode, res.get("last_error")))
        win = max(t1 - t0, 1e-9)
        n = max(res["logins"], 1)
        srv_s = (c1 - c0) / 1e9
        r = {
            "scenario": "login",
            "params": {"mode": mode, "threads": opts.login_threads, "users": opts.login_users,
                       "duration_s": opts.login_duration, "transport": "Direct TLS 1.3",
                       "pipelined": res.get("pipelined"), "tls_resume": res.get("tls_resume"),
                       "fast_mech": res.get("fast_mech") or None},
            "logins_per_s": res["logins_per_s"],
            "round_trips": res["round_trips"],
            "ready_ms": res["ready_ms"],
            "failures": res["failures"],
            "server_us_per_login_window": round(srv_s * 1e6 / n, 1),
            "server_cpu_util": round(srv_s / win, 3),
            "loadgen_cpu_util": round((l1 - l0) / win, 3),
            "other_cpu_util": round(max(0.0, (h1 - h0) - srv_s - (l1 - l0)) / win, 3),
            "logingen": res,
        }
        r["server_us_per_login"] = round((srv_s + (d["cpu_s"] if d else 0)) * 1e6 / n, 1)
        r["server_us_per_login_deferred"] = round((d["cpu_s"] if d else 0) * 1e6 / n, 1)
        out.append(r)
    return out


def scenario_reconnect(opts, srv):
    """The reconnect storm, one logingen run per variant on the same server:
    --reconnect-devices devices log in (SASL2 + Bind 2, stream management
    with resumption; FAST tokens for resume) and stay, all drop at once
    (RST, no </stream:stream>: the server keeps their sessions), and once
    the server has handled the drops all come back at once. The window runs
    from the first reconnect to the last device ready; server CPU per
    reconnect is the window's plus what the server still does after it."""
    n = opts.reconnect_devices
    why = idle_limits(opts, n)
    if why:
        raise BenchError("reconnect storm of %d devices: %s" % (n, why))
    out = []
    for variant in opts.reconnect_variant_list:
        a = ["--host", srv.host, "--port", str(srv.tls_port), "--domain", opts.domain,
             "--password", opts.password, "--prefix", opts.prefix, "--mode", "classic",
             "-t", str(opts.reconnect_threads), "--hold", str(n), "--first", "0", "--sync",
             "--source-spread", str(opts.source_spread), "--storm", variant]
        if variant == "resume":
            a.append("--tls-resume")
        lg = Loadgen(opts, a, prog="logingen")
        try:
            lg.event(opts.login_timeout + 30)  # ready
            lg.go()
            held = lg.event(opts.login_timeout + n / 100.0)
            if held.get("held", 0) < n:
                raise BenchError("%s: %d of %d devices logged in (%s)" % (
                    variant, held.get("held", 0), n, held.get("last_error")))
            cd0 = server_cpu_ns(srv.pid)
            lg.go()  # all drop
            dropped = lg.event(60)
            # The server notices the drops and detaches the sessions first.
            drain(srv.pid)
            drop_s = (server_cpu_ns(srv.pid) - cd0) / 1e9
            status = srv.ctl_json("status") if srv.pid else None
            prof = Profiler(opts, "reconnect-" + variant, srv.pid)
            c0, h0 = server_cpu_ns(srv.pid), host_busy_seconds()
            l0, t0 = cpu_seconds(lg.proc.pid), time.monotonic()
            lg.go()  # all come back
            res = lg.event(opts.login_timeout + n / 100.0)
            c1, h1 = server_cpu_ns(srv.pid), host_busy_seconds()
            l1, t1 = cpu_seconds(lg.proc.pid), time.monotonic()
            prof.stop()
            d = drain(srv.pid)
            after = srv.ctl_json("status") if srv.pid else None
        finally:
            lg.wait(timeout=60 + n / 2000.0)
        back = res.get("back", 0)
        if not back:
            raise BenchError("%s: no device came back (%s)" % (variant, res.get("last_error")))
        win = max(t1 - t0, 1e-9)
        srv_s = (c1 - c0) / 1e9
        lat, bk = res.get("ready_ms") or {}, res.get("back_ms") or {}
        r = {
            "scenario": "reconnect",
            "params": {"variant": variant, "devices": n, "threads": opts.reconnect_threads,
                       "transport": "Direct TLS 1.3", "tls_resume": res.get("tls_resume"),
                       "fast_mech": res.get("fast_mech") or None,
                       "negotiation": ("SASL2 + FAST token + inline SM <resume/>"
                                       if variant == "resume" else
                                       "classic: SCRAM-SHA-256, bind, <enable/>"),
                       "source_spread": opts.source_spread},
            "devices_back": back,
            "failures": res.get("failures"),
            "resumed": res.get("resumed"),
            "new_sessions": res.get("new_sessions"),
            "tls_resumed": res.get("tls_resumed"),
            "reconnects_per_s": res.get("reconnects_per_s"),
            "time_to_all_back_s": res.get("elapsed_s"),
            "round_trips": res.get("round_trips"),
            "ready_ms": lat,
            "back_ms": bk,
            "server_cpu_s": round(srv_s, 4),
            "server_us_per_reconnect_window": round(srv_s * 1e6 / back, 1),
            "server_cpu_util": round(srv_s / win, 3),
            "loadgen_cpu_util": round((l1 - l0) / win, 3),
            "other_cpu_util": round(max(0.0, (h1 - h0) - srv_s - (l1 - l0)) / win, 3),
            "drop_server_cpu_s": round(drop_s, 4),  # the drops handled, before the window
            "dropped": dropped.get("dropped"),
            "sessions_after_drop": status.get("sessions") if status else None,
            "sessions_after": after.get("sessions") if after else None,
            "hold": pick(held, "held", "failures", "elapsed_s", "logins_per_s", "ready_ms"),
            "logingen": res,
        }
        r["server_us_per_reconnect"] = round((srv_s + (d["cpu_s"] if d else 0)) * 1e6 / back, 1)
        r["server_us_per_reconnect_deferred"] = round((d["cpu_s"] if d else 0) * 1e6 / back, 1)
        out.append(r)
    return out


# --------------------------------------------------------------------------
# Workers: one and N workers in the same run
# --------------------------------------------------------------------------

def worker_layout(opts, nworkers):
    """(server CPUs, generator CPUs, shared) for a server with nworkers
    workers: one worker keeps the classic layout (--server-cpus and
    --loadgen-cpus); N workers get the first N CPUs, the generators the rest,
    or every CPU when none is left."""
    cpus = sorted(os.sched_getaffinity(0))
    if nworkers <= 1:
        return opts.server_cpus, opts.loadgen_cpus, False
    srv = cpus[:nworkers]
    rest = cpus[nworkers:]
    allc = ",".join(str(c) for c in cpus)
    return (",".join(str(c) for c in srv), ",".join(str(c) for c in rest) if rest else allc,
            not rest)


def workers_snapshot(srv):
    """`stanzactl --json workers`: per worker connections and steered
    (selected) counts, and the steering's state."""
    r = srv.ctl_json("workers")
    if r is None:
        return None
    st = r.get("steering", {})
    return {"workers": [{k: w.get(k) for k in ("id", "connections", "selected", "drained")}
                        for w in r.get("workers", [])],
            "steering_active": st.get("active"), "steering_detail": st.get("detail"),
            "steering_reason": st.get("reason"), "fallbacks": st.get("fallbacks")}


def scenario_storm(opts, srv, nworkers, steering, layout):
    """The TLS login storm: --storm-devices devices log in once each over
    Direct TLS (classic: TLS 1.3, SCRAM-SHA-256, bind, stream management,
    then roster and initial presence) on --storm-threads blocking client
    threads, and stay. Logins/s, time to ready, server and generator CPU,
    each server thread's CPU, and where the steering put the connections."""
    n = opts.storm_devices
    why = idle_limits(argparse.Namespace(source_spread=opts.storm_spread), n)
    if why:
        raise BenchError("storm of %d devices: %s" % (n, why))
    before = workers_snapshot(srv)
    a = ["--host", srv.host, "--port", str(srv.tls_port), "--domain", opts.domain,
         "--password", opts.password, "--prefix", opts.prefix, "--mode", "classic",
         "-t", str(opts.storm_threads), "--hold", str(n), "--first", "0", "--sync",
         "--source-spread", str(opts.storm_spread), "--roster-presence"]
    lg = Loadgen(opts, a, cpus=layout[1], prog="logingen")
    try:
        lg.event(opts.login_timeout + 30)
        prof = Profiler(opts, "storm-w%d-%s" % (nworkers, steering or "none"), srv.pid)
        c0, h0, th0 = server_cpu_ns(srv.pid), host_busy_seconds(), thread_cpu_ns(srv.pid)
        l0, t0 = cpu_seconds(lg.proc.pid), time.monotonic()
        lg.go()
        res = lg.event(opts.login_timeout + n / 100.0)
        c1, h1, th1 = server_cpu_ns(srv.pid), host_busy_seconds(), thread_cpu_ns(srv.pid)
        l1, t1 = cpu_seconds(lg.proc.pid), time.monotonic()
        prof.stop()
        d = drain(srv.pid)
        after = workers_snapshot(srv)
        status = srv.ctl_json("status")
        lg.go()  # the devices leave
    finally:
        lg.wait(timeout=60 + n / 2000.0)
    held = res.get("held", 0)
    if held < n:
        raise BenchError("%d of %d devices logged in (%s)" % (held, n, res.get("last_error")))
    win = max(t1 - t0, 1e-9)
    srv_s = (c1 - c0) / 1e9
    lg_s = l1 - l0
    per = None
    if before and after:
        per = [{"id": w["id"], "connections": w["connections"],
                "selected": (w["selected"] or 0) - (b["selected"] or 0)}
               for w, b in zip(after["workers"], before["workers"])]
    return {
        "scenario": "storm",
        "params": {"workers": nworkers, "steering": steering or "none", "devices": n,
                   "threads": opts.storm_threads, "source_spread": opts.storm_spread,
                   "source_addresses": (n + opts.storm_spread - 1) // opts.storm_spread
                   if opts.storm_spread else 1,
                   "transport": "Direct TLS 1.3", "negotiation": "classic, SCRAM-SHA-256",
                   "roster_presence": res.get("roster_presence"),
                   "server_cpus": layout[0], "loadgen_cpus": layout[1], "shared_cpus": layout[2]},
        "logins_per_s": round(held / win, 1),
        "storm_s": round(win, 3),
        "round_trips": res.get("round_trips"),
        "ready_ms": res.get("ready_ms"),
        "failures": res.get("failures"),
        "server_cpu_s": round(srv_s, 4),
        "server_us_per_login": round((srv_s + (d["cpu_s"] if d else 0)) * 1e6 / held, 1),
        "server_us_per_login_deferred": round((d["cpu_s"] if d else 0) * 1e6 / held, 1),
        "server_cpu_util": round(srv_s / win, 3),
        "loadgen_cpu_util": round(lg_s / win, 3),
        "loadgen_us_per_login": round(lg_s * 1e6 / held, 1),
        "other_cpu_util": round(max(0.0, (h1 - h0) - srv_s - lg_s) / win, 3),
        "server_threads_cpu_s": thread_cpu_delta(th0, th1),
        "per_worker": per,
        "steering": ({k: after[k] for k in ("steering_active", "steering_detail",
                                           "steering_reason", "fallbacks")} if after else None),
        "workers_after": after,
        "sessions_after": status.get("sessions") if status else None,
        "logingen": res,
    }


def workers_jobs(opts, template, with_server):
    """The workers scenario's runs, in order: per worker count, the storm
    once per steering policy (one policy with one worker: there is nothing
    to steer), then the messages scenario."""
    jobs = []
    for rnd, nw in [(rnd, nw) for rnd in range(opts.workers_rounds)
                    for nw in opts.workers_list]:
        layout = worker_layout(opts, nw)
        o2 = argparse.Namespace(**vars(opts))
        o2.server_cpus, o2.loadgen_cpus = layout[0], layout[1]
        for st in (opts.steering_list if nw > 1 else [None]):
            name = "storm w%d%s" % (nw, " " + st if st else "")
            if opts.workers_rounds > 1:
                name += " round %d" % (rnd + 1)

            def storm(s, o2=o2, nw=nw, st=st, layout=layout, rnd=rnd):
                r = scenario_storm(o2, s, nw, st, layout)
                r["params"]["round"] = rnd + 1
                return r
            jobs.append((name, lambda nw=nw, st=st, o2=o2, storm=storm, name=name: [
                with_server(name, storm, tls=True, workers=nw, steering=st, sopts=o2)]))
        if True:  # the messages scenario with nw workers
            name = "messages w%d" % nw
            if opts.workers_rounds > 1:
                name += " round %d" % (rnd + 1)
            st = opts.steering_list[0] if nw > 1 and opts.steering_list else None

            def msg(s, o2=o2, nw=nw, st=st, layout=layout, rnd=rnd):
                r = scenario_messages(o2, s)
                r["scenario"] = "workers_messages"
                r["params"].update({"workers": nw, "steering": st or "none", "round": rnd + 1,
                                    "server_cpus": layout[0], "loadgen_cpus": layout[1],
                                    "shared_cpus": layout[2]})
                r["server_threads_cpu_s"] = r["loadgen"].get("server_threads_cpu_s")
                r["per_worker"] = workers_snapshot(s)
                return r
            jobs.append((name, lambda nw=nw, st=st, o2=o2, msg=msg, name=name: [
                with_server(name, msg, workers=nw, steering=st, sopts=o2)]))
    return jobs


# --------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------

def fmt(v, spec="{:,.0f}"):
    return "-" if v is None else spec.format(v)


def verdict(value, budget, lower_is_better=True):
    if value is None:
        return "n/a"
    ok = value <= budget if lower_is_better else value >= budget
    return "ok" if ok else "OVER" if lower_is_better else "UNDER"


# Other processes using more than this share of a core make figures noisy.
NOISY_OTHER_CPU = 0.10


def deferred_note(r):
    d = r.get("server_us_per_msg_deferred") or r.get("server_us_per_delivery_deferred")
    return " (%.2f after)" % d if d and d >= 0.05 else ""


def summary(results, failures):
    rows = []
    floor = next((r.get("latency_floor") for r in results
                  if r["scenario"] == "selftest" and r.get("latency_floor")), None)
    fofloor = next((r.get("fanout_floor") for r in results
                    if r["scenario"] == "selftest" and r.get("fanout_floor")), None)
    for r in results:
        s = r["scenario"]
        if s == "selftest":
            rows.append(("selftest (loadgen vs sink)",
                         "%s msg/s (capacity %s)" % (fmt(r["msgs_per_s"]),
                                                     fmt(r["loadgen_capacity_msgs_per_s"])),
                         "loadgen %s us/msg" % fmt(r["loadgen_us_per_msg"], "{:.2f}"),
                         fmt(r["sink_cpu_util"], "{:.0%}"), fmt(r["loadgen_cpu_util"], "{:.0%}"),
                         ">= 300,000 msg/s",
                         verdict(r["loadgen_capacity_msgs_per_s"], LOADGEN_MIN_RATE, False)))
        elif s == "messages":
            rows.append(("messages (closed, %d clients, W=%d)" % (r["params"]["clients"],
                                                                 r["params"]["window"]),
                         "%s msg/s" % fmt(r["msgs_per_s"]),
                         "%s us/msg" % fmt(r["server_us_per_msg"], "{:.2f}") + deferred_note(r),
                         fmt(r["server_cpu_util"], "{:.0%}"), fmt(r["loadgen_cpu_util"], "{:.0%}"),
                         "<= 5 us/msg",
                         verdict(r["server_us_per_msg"], BUDGET_US_PER_MSG)
                         + (" (loadgen-bound)" if r["loadgen_saturated"] else "")))
        elif s == "latency":
            lat = r["latency_us"] or {}
            rate = r["params"]["rate"]
            fl = (floor or {}).get("latency_us") if (floor or {}).get("rate") == rate else None
            rows.append(("latency (open, %s msg/s)" % fmt(rate),
                         "p50/p99/p99.9 %s/%s/%s us" % (fmt(lat.get("p50"), "{:.0f}"),
                                                       fmt(lat.get("p99"), "{:.0f}"),
                                                       fmt(lat.get("p999"), "{:.0f}"))
                         + (" (floor %s/%s/%s)" % (fmt(fl.get("p50"), "{:.0f}"),
                                                   fmt(fl.get("p99"), "{:.0f}"),
                                                   fmt(fl.get("p999"), "{:.0f}")) if fl else ""),
                         "%s us/msg" % fmt(r["server_us_per_msg"], "{:.2f}") + deferred_note(r),
                         fmt(r["server_cpu_util"], "{:.0%}"), fmt(r["loadgen_cpu_util"], "{:.0%}"),
                         "p99 <= 200 us" if rate == 1000 else "-",
                         (verdict(lat.get("p99"), BUDGET_P99_US_AT_1000) if rate == 1000
                          else ("%s msg/s" % fmt(r["msgs_per_s"])))
                         + (" (loadgen late)" if r["loadgen_saturated"] else "")))
        elif s == "presence":
            if r["status"] == "ok":
                fo = r["fanout_ms"] or {}
                fig = "%s deliv/s, fan-out p50 %s ms" % (fmt(r["deliveries_per_s"]),
                                                       fmt(fo.get("p50"), "{:.2f}"))
            else:
                fig = r["status"].split(":")[0] + " (%d deliveries)" % r["deliveries"]
            rows.append(("presence (1 -> %d, %d updates)" % (r["params"]["receivers"],
                                                            r["params"]["updates"]),
                         fig, "%s us/deliv" % fmt(r["server_us_per_delivery"], "{:.2f}")
                         + deferred_note(r)
                         + (" (floor %s)" % fmt(fofloor.get("sink_us_per_delivery"), "{:.2f}")
                            if fofloor and fofloor.get("receivers") == r["params"]["receivers"]
                            else ""),
                         fmt(r["server_cpu_util"], "{:.0%}"), fmt(r["loadgen_cpu_util"], "{:.0%}"),
                         "<= 3 us/delivery",
                         verdict(r["server_us_per_delivery"], BUDGET_US_PER_DELIVERY)))
        elif s == "pubsub":
            if r["status"] == "ok":
                fo = r["fanout_ms"] or {}
                fig = "%s deliv/s, fan-out p50 %s ms" % (fmt(r["deliveries_per_s"]),
                                                       fmt(fo.get("p50"), "{:.2f}"))
            else:
                fig = r["status"].split(":")[0] + " (%d deliveries)" % r["deliveries"]
            rows.append(("pubsub (1 -> %d, %d items)" % (r["params"]["receivers"],
                                                        r["params"]["items"]),
                         fig, "%s us/deliv" % fmt(r["server_us_per_delivery"], "{:.2f}")
                         + deferred_note(r),
                         fmt(r["server_cpu_util"], "{:.0%}"), fmt(r["loadgen_cpu_util"], "{:.0%}"),
                         "<= 3 us/delivery",
                         verdict(r["server_us_per_delivery"], BUDGET_US_PER_DELIVERY)))
        elif s == "idle":
            per = r.get("rss_bytes_per_conn")
            tls = r["params"].get("transport", "plain TCP") != "plain TCP"
            budget = BUDGET_IDLE_TLS_BYTES if tls else BUDGET_IDLE_BYTES
            rows.append(("idle (%s %s connections)" % (fmt(r["params"]["clients"]),
                                                       "TLS" if tls else "plain"),
                         "%s B/conn RSS (heap %s), kernel %s B/conn slab" % (
                             fmt(per), fmt(r.get("heap_bytes_per_conn")),
                             fmt(r.get("kernel_slab_bytes_per_conn"))),
                         "login %s us/client" % fmt(r.get("server_login_us_per_client"),
                                                     "{:.0f}"),
                         "-", "-", "<= %d KiB/conn" % (budget // 1024), verdict(per, budget)))
        elif s == "login":
            p, lat = r["params"], r["ready_ms"]
            rows.append(("login %s (%s%s)" % ({"sasl2": "SASL2+Bind2"}.get(p["mode"], p["mode"]),
                                             p["fast_mech"] + ", " if p["fast_mech"] else "",
                                             "TLS resumed" if p["tls_resume"] else "full TLS"),
                         "%s logins/s, %d RTT, ready p50 %s ms" % (
                             fmt(r["logins_per_s"]), r["round_trips"],
                             fmt(lat.get("p50"), "{:.2f}")),
                         "%s us/login" % fmt(r["server_us_per_login"], "{:.0f}"),
                         fmt(r["server_cpu_util"], "{:.0%}"), fmt(r["loadgen_cpu_util"], "{:.0%}"),
                         ">= 5,000/s/core", verdict(r["server_us_per_login"], BUDGET_US_PER_LOGIN)))
        elif s == "reconnect":
            p, lat = r["params"], r.get("ready_ms") or {}
            rows.append(("reconnect %s (%s devices)" % (p["variant"], fmt(p["devices"])),
                         "%s back in %s s, %s/s, ready p50/p99 %s/%s ms, resumed %s, new %s%s" % (
                             fmt(r["devices_back"]), fmt(r["time_to_all_back_s"], "{:.2f}"),
                             fmt(r["reconnects_per_s"]), fmt(lat.get("p50"), "{:.1f}"),
                             fmt(lat.get("p99"), "{:.1f}"), fmt(r["resumed"]),
                             fmt(r["new_sessions"]),
                             ", %s failed" % fmt(r["failures"]) if r.get("failures") else ""),
                         "%s us/reconnect" % fmt(r["server_us_per_reconnect"], "{:.0f}"),
                         fmt(r["server_cpu_util"], "{:.0%}"), fmt(r["loadgen_cpu_util"], "{:.0%}"),
                         "-", "-"))
        elif s == "storm":
            p, lat = r["params"], r.get("ready_ms") or {}
            pw = r.get("per_worker") or []
            rows.append(("storm w%d %s (%s devices)" % (p["workers"], p["steering"],
                                                        fmt(p["devices"])),
                         "%s logins/s, ready p50/p99 %s/%s ms, steered %s" % (
                             fmt(r["logins_per_s"]), fmt(lat.get("p50"), "{:.1f}"),
                             fmt(lat.get("p99"), "{:.1f}"),
                             "/".join(str(w["selected"]) for w in pw) or "-"),
                         "%s us/login" % fmt(r["server_us_per_login"], "{:.0f}"),
                         fmt(r["server_cpu_util"], "{:.0%}"), fmt(r["loadgen_cpu_util"], "{:.0%}"),
                         "-", "-"))
        elif s == "workers_messages":
            p = r["params"]
            rows.append(("messages w%d (closed, %d clients, W=%d)" % (
                             p["workers"], p["clients"], p["window"]),
                         "%s msg/s" % fmt(r["msgs_per_s"]),
                         "%s us/msg" % fmt(r["server_us_per_msg"], "{:.2f}") + deferred_note(r),
                         fmt(r["server_cpu_util"], "{:.0%}"), fmt(r["loadgen_cpu_util"], "{:.0%}"),
                         "-", "-"))
    # One row per result, in order: add the other processes' CPU share.
    rows = [row[:5] + (fmt(results[i].get("other_cpu_util"), "{:.0%}"),) + row[5:]
            for i, row in enumerate(rows)]
    # A peer's rows say whose they are; the budgets are stanzad's.
    rows = [(("%s: " % results[i]["server"] + row[0],) + row[1:6] + ("-", "-"))
            if results[i].get("server") not in (None, "loadgen", "stanzad") else row
            for i, row in enumerate(rows)]
    head = ("scenario", "figure", "server cost", "srv CPU", "lg CPU", "other", "budget",
            "verdict")
    widths = [max(len(str(row[i])) for row in rows + [head]) for i in range(len(head))]
    lines = ["", "stanzad benchmark summary (%s, %d CPUs, kernel %s)" %
             (host_info()["cpu_model"] or "cpu", os.cpu_count(), platform.release())]
    lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    for name, err in failures:
        lines.append("%s: FAILED: %s" % (name, err))
    for r in results:
        if r["scenario"] in ("presence", "pubsub") and r["status"] != "ok":
            lines.append("%s: %s" % (r["scenario"], r["status"]))
    if floor:
        lines.append("floor: the same open loop through the loadgen's echo sink (no server): "
                     "the latency this machine and the generator add by themselves.")
    seen = set()
    for r in results:
        w = r.get("server_warnings")
        if w and r["scenario"] not in seen:
            seen.add(r["scenario"])
            lines.append("%s: server warnings: %s" % (r["scenario"], ", ".join(
                "%s x%d" % (k, v) for k, v in sorted(w.items()))))
        # No rows and no overload: archiving is off (mam_default=never), not shed.
        if (r.get("archived_per_msg") is not None and r["archived_per_msg"] < 1.9 and
                (r.get("archived_rows") or "mam.overload" in (w or {}))):
            lines.append("%s: %.2f archive rows per message (2 = both archives written): the "
                         "server shed archive writes" % (r["scenario"], r["archived_per_msg"]))
    if any(deferred_note(r) for r in results):
        lines.append("(x after): part of the server cost spent after the window on work the "
                     "window queued (storage writes), included in the figure.")
    if fofloor:
        lines.append("presence floor: the sink's CPU per delivery when it copies each update "
                     "to every stream with one send each (bare loopback TCP, no XMPP work).")
    noisy = [r["scenario"] for r in results
             if (r.get("other_cpu_util") or 0) > NOISY_OTHER_CPU]
    lines.append("srv CPU / lg CPU / other: share of one core used by the server / the load "
                 "generator / every other process in the window (lg near 100%: the generator "
                 "was the limit; the open loop polls, so there its lateness tells instead).")
    if any(r["scenario"] == "login" for r in results):
        lines.append("login: RTT = round trips from connect() to a bound session with stream "
                     "management (TCP and TLS included); SASL2 and FAST send the stream header "
                     "with <authenticate/> (cached features, XEP-0388).")
    if any(r["scenario"] == "reconnect" for r in results):
        lines.append("reconnect: every device drops at once (RST), then all come back at once; "
                     "time from the first reconnect to the last ready; resumed = the server "
                     "answered <resumed/> (XEP-0198), new = a new session.")
    if noisy:
        lines.append("WARNING: other processes used over %d%% of a core during %s: those "
                     "figures are unreliable; run on a quiet machine." %
                     (NOISY_OTHER_CPU * 100, ", ".join(sorted(set(noisy)))))
    return "\n".join(lines)


# --------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                   "..", "build"))
    p.add_argument("--scenario", default=",".join(ALL_SCENARIOS),
                   help="comma-separated subset of: %s (default all of them); also %s" % (
                       ", ".join(ALL_SCENARIOS), ", ".join(EXTRA_SCENARIOS)))
    p.add_argument("--clients", type=int, default=1000, help="messages/latency clients (1000)")
    p.add_argument("--window", type=int, default=4,
                   help="closed loop: messages each client keeps starting (4)")
    p.add_argument("--duration", type=float, default=8, help="messages: seconds measured (8)")
    p.add_argument("--warmup", type=float, default=1)
    p.add_argument("--rates", default="1000,50000", help="open-loop rates, msgs/s")
    p.add_argument("--latency-duration", type=float, default=5)
    p.add_argument("--spin-us", type=int, default=50,
                   help="open loop: the loadgen polls this long before each send (50)")
    p.add_argument("--selftest-duration", type=float, default=3)
    p.add_argument("--receivers", type=int, default=1000, help="presence fan-out (1000)")
    p.add_argument("--updates", type=int, default=200, help="presence updates (200)")
    p.add_argument("--update-timeout", type=float, default=2.0)
    p.add_argument("--idle-clients", default="10000",
                   help="idle scenario, plain TCP: comma-separated sizes, one run each "
                        "(10000), e.g. 10000,100000,1000000")
    p.add_argument("--idle-tls-clients", default="10000",
                   help="idle scenario over Direct TLS (stanzad only): comma-separated "
                        "sizes (10000; 0: none), e.g. 10000,100000")
    p.add_argument("--source-spread", type=int, default=16384,
                   help="idle scenario: clients per loopback source address, 127.0.0.2 "
                        "and on (16384; 0: one address, at most ip_local_port_range)")
    p.add_argument("--login-modes", default=",".join(LOGIN_MODES),
                   help="login scenario: negotiations to measure (%s)" % ",".join(LOGIN_MODES))
    p.add_argument("--login-duration", type=float, default=3, help="login: seconds per mode (3)")
    p.add_argument("--login-threads", type=int, default=4,
                   help="login: logins in parallel, one at a time each (4)")
    p.add_argument("--login-users", type=int, default=200, help="login: distinct users (200)")
    p.add_argument("--tls-resume", action="store_true",
                   help="login: resume TLS sessions with tickets (a reconnecting device)")
    p.add_argument("--reconnect-devices", type=int, default=5000,
                   help="reconnect storm (stanzad only): devices that drop and come back "
                        "(5000)")
    p.add_argument("--reconnect-variants", default=",".join(RECONNECT_VARIANTS),
                   help="reconnect storm: how devices come back (%s)" %
                        ",".join(RECONNECT_VARIANTS))
    p.add_argument("--reconnect-threads", type=int, default=32,
                   help="reconnect storm: client threads, one login at a time each (32)")
    p.add_argument("--threads", type=int, default=1, help="loadgen threads (1)")
    p.add_argument("--workers", type=int, default=1,
                   help="stanzad's --workers in every scenario but 'workers' (1: the "
                        "single-core comparison with the peers, pinned to one core too)")
    p.add_argument("--workers-list", default="1,2",
                   help="scenario workers: the worker counts compared in one run (1,2)")
    p.add_argument("--steering-list", default="least-loaded,source-hash",
                   help="scenario workers: a storm per steering policy with more than one "
                        "worker; the first also for messages (least-loaded,source-hash)")
    p.add_argument("--workers-rounds", type=int, default=1,
                   help="scenario workers: rounds, each every worker count in turn; the "
                        "report shows each figure's median round and the range (1)")
    p.add_argument("--storm-devices", type=int, default=10000,
                   help="scenario workers: devices in the TLS login storm (10000)")
    p.add_argument("--storm-threads", type=int, default=32,
                   help="scenario workers: storm client threads, one login at a time each (32)")
    p.add_argument("--storm-spread", type=int, default=1,
                   help="scenario workers: storm devices per loopback source address, "
                        "127.0.0.2 and on (1: one address per device, as on the Internet; "
                        "source-hash needs many)")
    p.add_argument("--cluster-pairs", type=int, default=60,
                   help="scenario cluster: client pairs in the message runs (60)")
    p.add_argument("--cluster-window", type=int, default=16,
                   help="scenario cluster: messages in flight per client, closed loop (16)")
    p.add_argument("--cluster-duration", type=float, default=5,
                   help="scenario cluster: seconds measured per message run (5)")
    p.add_argument("--cluster-rate", type=int, default=1000,
                   help="scenario cluster: open-loop rate for the latency, msg/s (1000)")
    p.add_argument("--cluster-contacts", type=int, default=300,
                   help="scenario cluster: the publisher's contacts in the fan-out (300)")
    p.add_argument("--cluster-storage", choices=("sqlite", "postgresql"), default="sqlite",
                   help="scenario cluster: a SQLite store per node (a copy of the seeded "
                        "one), or one PostgreSQL database the three share, on a throwaway "
                        "server the bench starts (sqlite)")
    p.add_argument("--cluster-updates", type=int, default=200,
                   help="scenario cluster: presence updates per fan-out layout (200)")
    p.add_argument("--server-cpus", default=None, help="taskset list for the server")
    p.add_argument("--loadgen-cpus", default=None, help="taskset list for the loadgen")
    p.add_argument("--servers", default="stanzad",
                   help="comma-separated servers to measure in this run, each with every "
                        "scenario: stanzad, prosody, ejabberd (the peers are Debian's, "
                        "installed and started by the bench; default stanzad)")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="write DIR/results.jsonl and DIR/REPORT.md (scripts/bench_report.py) "
                        "from this run, e.g. docs/bench")
    p.add_argument("--target", default=None,
                   help="HOST:PORT of a running server to measure instead of starting stanzad")
    p.add_argument("--server-pid", type=int, default=0, help="with --target: its pid")
    p.add_argument("--domain", default="localhost")
    p.add_argument("--password", default="bench")
    p.add_argument("--prefix", default="u", help="usernames u0, u1, ...")
    p.add_argument("--receiver-prefix", default="p", help="presence contacts p0, p1, ...")
    p.add_argument("--publisher", default="pub")
    p.add_argument("--login-timeout", type=float, default=120)
    p.add_argument("--server-arg", action="append", default=[],
                   help="extra stanzad argument (repeatable), e.g. --server-arg=--idle-timeout=0")
    p.add_argument("--server-log-level", default="warn")
    p.add_argument("--profile", default=None, metavar="DIR",
                   help="perf record -g the server during each window into DIR")
    p.add_argument("--keep-state", action="store_true")
    p.add_argument("--quiet-wait", type=float, default=10,
                   help="before each scenario, wait up to S s for other processes to "
                        "use under 10%% of a core (10; 0: do not wait)")
    o = p.parse_args(argv)
    o.build = os.path.abspath(o.build)
    o.scenarios = [s.strip() for s in o.scenario.split(",") if s.strip()]
    for s in o.scenarios:
        if s not in ALL_SCENARIOS + EXTRA_SCENARIOS:
            p.error("unknown scenario %r (choose from %s)" % (
                s, ", ".join(ALL_SCENARIOS + EXTRA_SCENARIOS)))
    try:
        o.workers_list = [int(x) for x in o.workers_list.split(",") if x.strip()]
    except ValueError:
        p.error("--workers-list takes comma-separated numbers")
    if not o.workers_list or min(o.workers_list) < 1 or o.workers < 1:
        p.error("--workers and --workers-list need positive numbers")
    o.steering_list = [x.strip() for x in o.steering_list.split(",") if x.strip()]
    for x in o.steering_list:
        if x not in ("least-loaded", "source-hash", "kernel"):
            p.error("unknown steering %r (least-loaded, source-hash or kernel)" % x)
    if not o.steering_list:
        p.error("--steering-list needs a policy")
    if o.storm_devices < 1 or o.storm_threads < 1 or o.storm_spread < 0 or o.workers_rounds < 1:
        p.error("--storm-devices and --storm-threads must be positive")
    if o.reconnect_devices < 1 or o.reconnect_threads < 1:
        p.error("--reconnect-devices and --reconnect-threads must be positive")
    o.reconnect_variant_list = [v.strip() for v in o.reconnect_variants.split(",") if v.strip()]
    for v in o.reconnect_variant_list:
        if v not in RECONNECT_VARIANTS:
            p.error("unknown reconnect variant %r (choose from %s)" % (
                v, ", ".join(RECONNECT_VARIANTS)))
    o.server_list = [x.strip() for x in o.servers.split(",") if x.strip()]
    for x in o.server_list:
        if x not in ("stanzad",) + bench_peers.PEERS:
            p.error("unknown server %r (choose from stanzad, %s)" %
                    (x, ", ".join(bench_peers.PEERS)))
    if not o.server_list or len(set(o.server_list)) != len(o.server_list):
        p.error("--servers needs distinct servers")
    o.peer_list = [x for x in o.server_list if x != "stanzad"]
    if o.target and o.peer_list:
        p.error("--target measures one running server: not with prosody or ejabberd")
    o.rate_list = [int(float(r)) for r in o.rates.split(",") if r.strip()]
    try:
        o.idle_list = [int(x) for x in o.idle_clients.split(",") if x.strip()]
        o.idle_tls_list = [int(x) for x in o.idle_tls_clients.split(",")
                           if x.strip() and int(x) > 0]
    except ValueError:
        p.error("--idle-clients and --idle-tls-clients take comma-separated numbers")
    if not o.idle_list or min(o.idle_list + o.idle_tls_list) < 1:
        p.error("--idle-clients needs at least one size, every size positive")
    if o.source_spread < 0:
        p.error("--source-spread must not be negative")
    # The seeded accounts cover the largest idle run and the storms (users P0 ..).
    o.idle_clients = max(o.idle_list + o.idle_tls_list +
                         ([o.storm_devices] if "workers" in o.scenarios else []) +
                         ([o.reconnect_devices] if "reconnect" in o.scenarios else []))
    o.login_mode_list = [m.strip() for m in o.login_modes.split(",") if m.strip()]
    for m in o.login_mode_list:
        if m not in LOGIN_MODES:
            p.error("unknown login mode %r (choose from %s)" % (m, ", ".join(LOGIN_MODES)))
    if o.login_users > max(o.clients, o.idle_clients):
        p.error("--login-users must not exceed the seeded accounts (--clients, --idle-clients)")
    if o.clients < 2 or o.clients % 2:
        p.error("--clients must be even (clients talk in pairs)")
    if "cluster" in o.scenarios:
        if min(o.cluster_pairs, o.cluster_window, o.cluster_contacts, o.cluster_updates,
               o.cluster_rate) < 1 or \
                o.cluster_duration <= 0:
            p.error("--cluster-pairs, -contacts, -updates, -rate, -duration must be positive")
        # Accounts: both layouts' pairs, and the fan-out's contacts.
        o.clients = max(o.clients, 4 * o.cluster_pairs)
        o.receivers = max(o.receivers, o.cluster_contacts)
    cpus = sorted(os.sched_getaffinity(0))
    if o.server_cpus is None:
        o.server_cpus = str(cpus[0]) if len(cpus) > 1 else ""
    if o.loadgen_cpus is None:
        o.loadgen_cpus = ",".join(str(c) for c in cpus[1:1 + o.threads]) if len(cpus) > 1 else ""
    if len(cpus) < 2:
        log("one CPU only: server and loadgen share it, figures mean little")
    return o


def ensure_peers(opts):
    """The peer servers asked for are installed, by scripts/install-deps.sh
    bench when they are not (it needs root; without it, it names them)."""
    missing = [s for s in opts.peer_list if bench_peers.missing_tools(s)]
    if not missing:
        return
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "install-deps.sh")
    log("installing %s for the comparison (scripts/install-deps.sh bench)" % ", ".join(missing))
    r = subprocess.run([script, "bench"])
    still = [s for s in opts.peer_list if bench_peers.missing_tools(s)]
    if r.returncode != 0 or still:
        raise SystemExit("bench: %s not installed: run 'sudo scripts/install-deps.sh bench'" %
                         ", ".join(still or missing))


def peer_accounts(opts):
    """Usernames a peer needs for the scenarios asked for: (users, receivers)."""
    n = 0
    if {"messages", "latency"} & set(opts.scenarios):
        n = opts.clients
    if "idle" in opts.scenarios:
        n = max([n] + [k for k in opts.idle_list if k <= PEER_IDLE_MAX])
    recv = opts.receivers if {"presence", "pubsub"} & set(opts.scenarios) else 0
    return (["%s%d" % (opts.prefix, i) for i in range(n)],
            ["%s%d" % (opts.receiver_prefix, i) for i in range(recv)])


def write_report(opts, meta, lines):
    """--report DIR: the run's JSON lines (meta first) and REPORT.md from them;
    the workers scenario's go to DIR/workers.jsonl and DIR/WORKERS.md, the
    cluster scenario's to DIR/cluster.jsonl and DIR/CLUSTER.md, and a run of
    those scenarios alone writes only theirs."""
    os.makedirs(opts.report, exist_ok=True)
    if "cluster" in opts.scenarios:
        cl = [r for r in lines if r.get("scenario", "").startswith("cluster")]
        path = os.path.join(opts.report, "cluster.jsonl")
        with open(path, "w") as f:
            for r in [meta] + cl:
                f.write(json.dumps(r) + "\n")
        meta2, results = bench_report.load(path)
        with open(os.path.join(opts.report, "CLUSTER.md"), "w") as f:
            f.write(bench_cluster.render(results, meta2))
        log("report: %s (figures in %s)" % (os.path.join(opts.report, "CLUSTER.md"), path))
        lines = [r for r in lines if r not in cl]
        if not [s for s in opts.scenarios if s != "cluster"]:
            return
    if "workers" in opts.scenarios:
        wl = [r for r in lines if r.get("scenario") in bench_report.WORKER_SCENARIOS or
              (r.get("scenario", "").startswith(("storm", "messages w")) and "error" in r)]
        path = os.path.join(opts.report, "workers.jsonl")
        with open(path, "w") as f:
            for r in [meta] + wl:
                f.write(json.dumps(r) + "\n")
        meta2, results = bench_report.load(path)
        with open(os.path.join(opts.report, "WORKERS.md"), "w") as f:
            f.write(bench_report.render_workers(results, meta2))
        log("report: %s (figures in %s)" % (os.path.join(opts.report, "WORKERS.md"), path))
        lines = [r for r in lines if r not in wl]
        if not [s for s in opts.scenarios if s != "workers"]:
            return
    path = os.path.join(opts.report, "results.jsonl")
    with open(path, "w") as f:
        for r in [meta] + lines:
            f.write(json.dumps(r) + "\n")
    meta2, results = bench_report.load(path)
    with open(os.path.join(opts.report, "REPORT.md"), "w") as f:
        f.write(bench_report.render(results, meta2))
    log("report: %s (figures in %s)" % (os.path.join(opts.report, "REPORT.md"), path))


def main(argv):
    opts = parse_args(argv)
    need = ["loadgen"] + (["logingen"] if {"login", "workers", "reconnect"} &
                          set(opts.scenarios) and "stanzad" in opts.server_list else [])
    if "stanzad" in opts.server_list and not opts.target:
        need += ["stanzad", "stanzactl"]
    for b in need:
        if not os.access(os.path.join(opts.build, b), os.X_OK):
            raise SystemExit("bench: no %s in %s (run make bench)" % (b, opts.build))
    if opts.peer_list:
        ensure_peers(opts)
        bench_peers.raise_fd_limit()
    if {"idle", "workers", "reconnect"} & set(opts.scenarios):
        lim = raise_nofile(opts.idle_clients + FD_SLACK)
        log("RLIMIT_NOFILE %d (fs.nr_open %s, fs.file-max %s, ip_local_port_range %s)" % (
            lim, *[" ".join(map(str, sysctl_int(k) or ["?"])) for k in (
                "fs.nr_open", "fs.file-max", "net.ipv4.ip_local_port_range")]))
    t_start = time.monotonic()
    results, failures, notes, lines = [], [], [], []
    cluster_lines = []  # not in results: the summary table has no rows for them
    template, roster_ok, pubsub_ok = None, True, True
    host = host_info()
    meta = {"event": "meta", "command": "scripts/bench.py " + " ".join(argv),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "host": host,
            "servers": opts.server_list, "scenarios": opts.scenarios,
            "server_cpus": opts.server_cpus, "loadgen_cpus": opts.loadgen_cpus,
            "versions": {}, "setup": {}, "notes": notes}
    if "stanzad" in opts.server_list and not opts.target:
        template = tempfile.mkdtemp(prefix="stanzad-bench-seed-")
        t = time.monotonic()
        roster_ok = seed_store(opts.build, template, opts)
        pubsub_ok = seed_pubsub(template, opts)
        log("seeded %d accounts in %.2f s (server on CPU %s, loadgen on CPU %s)" %
            (max(opts.clients, opts.idle_clients) + opts.receivers + 1,
             time.monotonic() - t, opts.server_cpus or "any", opts.loadgen_cpus or "any"))

    seeded = (roster_ok, pubsub_ok)

    def quiet(name):
        if opts.quiet_wait <= 0:
            return
        busy = wait_quiet(opts.quiet_wait)
        if busy >= 0.10:
            log("%s: the machine is busy (%.0f%% of a core used by other processes); "
                "running anyway" % (name, busy * 100))

    def with_server(name, fn, tls=False, peer=None, workers=None, steering=None, sopts=None):
        """fn on a fresh stanzad (or the --target), or on a peer that
        outlives the scenario; workers, steering and sopts (options with
        other CPUs) for the workers scenario."""
        srv = None
        quiet(name)
        try:
            srv = peer or (External(opts) if opts.target else
                           Server(sopts or opts, template, tls, workers, steering))
            log("%s: running" % name)
            mark = srv.log_size()
            out = fn(srv)
            if not srv.alive():
                raise BenchError("the server died during the run")
            warns = srv.warnings(mark)
            for r in (out if isinstance(out, list) else [out]):
                if warns is not None:
                    r["server_warnings"] = warns
            return out
        finally:
            if (peer is None and srv is not None and srv.stop() not in (0, None) and
                    not opts.target):
                failures.append((name, "stanzad exited non-zero"))

    def latency_runs(server, srv):
        """Open-loop rates; a peer is not driven above the throughput it
        reached in the closed loop (its queue would only grow)."""
        cap = next((r["msgs_per_s"] for r in results if r["scenario"] == "messages" and
                    r.get("server") == server), None)
        out = []
        for rate in opts.rate_list:
            if server != "stanzad" and cap and rate > cap:
                notes.append("latency at %s msg/s on %s: not run, above the %s msg/s it "
                             "reached in the closed loop" % (fmt(rate), server, fmt(cap)))
                continue
            out.append(scenario_latency(opts, srv, rate))
        return out

    def jobs_for(server, peer):
        ws = lambda name, fn, tls=False: with_server(  # noqa: E731
            name if server == "stanzad" else "%s %s" % (server, name), fn, tls, peer)
        jobs = []
        if "messages" in opts.scenarios:
            jobs.append(("messages", lambda: [ws("messages",
                                                 lambda s: scenario_messages(opts, s))]))
        if "latency" in opts.scenarios:
            jobs.append(("latency", lambda: ws("latency", lambda s: latency_runs(server, s))))
        if "presence" in opts.scenarios:
            if roster_ok:
                jobs.append(("presence", lambda: [ws(
                    "presence", lambda s: scenario_presence(opts, s))]))
            else:
                failures.append(("presence", "rosters could not be set up on " + server))
        if "pubsub" in opts.scenarios:
            if pubsub_ok:
                jobs.append(("pubsub", lambda: [ws(
                    "pubsub", lambda s: scenario_pubsub(opts, s))]))
            else:
                failures.append(("pubsub", "the pubsub node could not be set up on " + server))
        if "idle" in opts.scenarios:
            for n in opts.idle_list:
                if peer is not None and n > PEER_IDLE_MAX:
                    notes.append("idle at %s connections on %s: not run (the peers hold at "
                                 "most %s here)" % (fmt(n), server, fmt(PEER_IDLE_MAX)))
                    continue
                jobs.append(("idle %d" % n, lambda n=n: [ws(
                    "idle %d" % n, lambda s: scenario_idle(opts, s, n))]))
            if peer is not None and opts.idle_tls_list:
                notes.append("idle over TLS on %s: not measured (the bench does not configure "
                             "TLS in the peers)" % server)
            elif opts.idle_tls_list and opts.target:
                failures.append(("idle TLS", "needs a stanzad started by the bench"))
            else:
                for n in opts.idle_tls_list:
                    jobs.append(("idle TLS %d" % n, lambda n=n: [ws(
                        "idle TLS %d" % n, lambda s: scenario_idle(opts, s, n, tls=True),
                        tls=True)]))
        if "login" in opts.scenarios:
            if peer is not None:
                notes.append("login on %s: not measured (the login scenario is Direct TLS "
                             "with stanzad's certificate; the bench does not configure TLS "
                             "in the peers)" % server)
            elif opts.target:
                failures.append(("login", "needs a stanzad started by the bench (Direct TLS)"))
            else:
                jobs.append(("login", lambda: ws(
                    "login", lambda s: scenario_login(opts, s), tls=True)))
        if "reconnect" in opts.scenarios:
            if peer is not None:
                notes.append("reconnect on %s: not measured (the reconnect storm is Direct TLS "
                             "with stanzad's certificate, stream resumption and FAST; the bench "
                             "does not configure TLS in the peers)" % server)
            elif opts.target:
                failures.append(("reconnect", "needs a stanzad started by the bench "
                                              "(Direct TLS)"))
            else:
                jobs.append(("reconnect", lambda: ws(
                    "reconnect", lambda s: scenario_reconnect(opts, s), tls=True)))
        return jobs

    def run_jobs(server, jobs):
        for name, job in jobs:
            try:
                for r in job():
                    r["server"] = server
                    r["host"] = host
                    print(json.dumps(r), flush=True)
                    results.append(r)
                    lines.append(r)
            except BenchError as e:
                log("%s on %s failed: %s" % (name, server, e))
                failures.append(("%s (%s)" % (name, server), str(e).splitlines()[0]))
                err = {"scenario": name, "server": server, "error": str(e)}
                print(json.dumps(err), flush=True)
                lines.append(err)

    if "selftest" in opts.scenarios:
        run_jobs("loadgen", [("selftest",
                              lambda: (quiet("selftest"), [scenario_selftest(opts)])[1])])
    for server in opts.server_list:
        if server == "stanzad":
            roster_ok, pubsub_ok = seeded
            run_jobs(server, jobs_for(server, None))
            if "workers" in opts.scenarios:
                if opts.target:
                    failures.append(("workers", "needs a stanzad started by the bench"))
                else:
                    run_jobs(server, workers_jobs(opts, template, with_server))
            if "cluster" in opts.scenarios:
                if opts.target:
                    failures.append(("cluster", "needs stanzads started by the bench"))
                else:
                    quiet("cluster")
                    try:
                        for r in bench_cluster.run(opts, template, Server, free_port,
                                                   cpu_seconds, log):
                            r["server"] = server
                            r["host"] = host
                            print(json.dumps(r), flush=True)
                            cluster_lines.append(r)
                            lines.append(r)
                            if "error" in r:
                                failures.append(("cluster", r["error"].splitlines()[0]))
                    except (BenchError, bench_cluster.ClusterError, OSError) as e:
                        log("cluster failed: %s" % e)
                        failures.append(("cluster", str(e).splitlines()[0]))
                        err = {"scenario": "cluster", "server": server, "error": str(e)}
                        print(json.dumps(err), flush=True)
                        lines.append(err)
            continue
        peer = bench_peers.make_peer(server, opts, opts.server_cpus)
        try:
            t = time.monotonic()
            peer.start(pinned)
            meta["versions"][server] = peer.version()
            users, recv = peer_accounts(opts)
            log("%s: started in %.1f s (pid %s); registering %d accounts" %
                (server, time.monotonic() - t, peer.pid, len(users) + len(recv) + 1))
            info = peer.setup(users, recv, opts.publisher, opts.password,
                              PUBSUB_NODE if "pubsub" in opts.scenarios else None)
            meta["setup"][server] = info
            log("%s: set up (%s)" % (server, info))
            roster_ok = info["roster_items_both"] >= len(recv)
            pubsub_ok = True
            run_jobs(server, jobs_for(server, peer))
        except (bench_peers.PeerError, OSError) as e:
            log("%s failed: %s" % (server, e))
            failures.append((server, str(e).splitlines()[0] if str(e) else repr(e)))
            err = {"scenario": "setup", "server": server, "error": str(e) or repr(e)}
            print(json.dumps(err), flush=True)
            lines.append(err)
        finally:
            if peer.stop() not in (0, None):
                failures.append((server, "%s exited non-zero" % server))
    if stanzad_version := stanzad_version_of(opts):
        meta["versions"]["stanzad"] = stanzad_version
    if "stanzad" in opts.server_list and not opts.target:
        try:
            path = os.path.join(opts.build, "stanzad")
            with open(path, "rb") as f:
                meta["stanzad_binary"] = {"sha256": hashlib.sha256(f.read()).hexdigest()[:16]}
        except OSError:
            pass
    try:
        meta["git"] = subprocess.run(
            ["git", "-C", os.path.dirname(os.path.abspath(__file__)), "describe", "--always",
             "--dirty"], capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        pass
    if template:
        shutil.rmtree(template, ignore_errors=True)
    print(summary(results, failures))
    if cluster_lines:
        print(bench_cluster.summary(cluster_lines))
    for n in notes:
        print(n)
    print("total %.0f s" % (time.monotonic() - t_start))
    if opts.report:
        write_report(opts, meta, lines)
    return 1 if failures else 0


def stanzad_version_of(opts):
    if "stanzad" not in opts.server_list or opts.target:
        return None
    try:
        r = subprocess.run([os.path.join(opts.build, "stanzad"), "--version"],
                           capture_output=True, text=True, timeout=10)
        return (r.stdout.strip() or r.stderr.strip()).splitlines()[0] if r.returncode == 0 \
            else None
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
