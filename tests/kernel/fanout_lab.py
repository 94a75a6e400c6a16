"""Helpers for the stanza offload module's lab tests and benchmark
(test_kmod_lab.py, bench_fanout.py): the module's .ko, loading and
unloading it, the kernel log, `stanzactl kmod`, accounts seeded straight
into a daemon's store, and the many-client driver (fanout_client.c).
"""
import hashlib
import hmac
import json
import os
import re
import sqlite3
import subprocess
import time

BUILD = os.environ.get("STANZAD_BUILD") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build")
KO = os.path.join(BUILD, "kmod", "stanza_offload.ko")
CLIENT = os.path.join(BUILD, "tests", "fanout_client")
STANZACTL = os.path.join(BUILD, "stanzactl")
DEVICE = "/dev/stanza_offload"
PASSWORD = "fanout-pw"
PUBLISHER = "pub"
SALT = b"stanzad-kmod-sa!"  # 16 bytes, like scram.h's SCRAM_SALT_LEN
KERNEL_COMPLAINTS = re.compile(r"Oops|WARNING:|BUG:|Call Trace|general protection|UBSAN:|KASAN:")


def module_loaded():
    with open("/proc/modules") as f:
        return any(line.split()[0] == "stanza_offload" for line in f)


def module_refcount():
    with open("/proc/modules") as f:
        for line in f:
            parts = line.split()
            if parts[0] == "stanza_offload":
                return int(parts[2])
    return None


def load_module():
    if module_loaded():
        return
    r = subprocess.run(["insmod", KO], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, "insmod %s failed: %s" % (KO, r.stderr)
    deadline = time.monotonic() + 10
    while not os.path.exists(DEVICE):
        assert time.monotonic() < deadline, "%s did not appear" % DEVICE
        time.sleep(0.05)


def unload_module(timeout=10.0):
    """rmmod, retried while the module is busy; returns rmmod's last result."""
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run(["rmmod", "stanza_offload"], capture_output=True, text=True, timeout=60)
        if r.returncode == 0 or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def dmesg_lines():
    return subprocess.run(["dmesg"], capture_output=True, text=True,
                          timeout=30).stdout.splitlines()


def kernel_complaints(before):
    """Complaints (WARNING, BUG, Oops...) among the kernel log lines after
    the first `before` lines (a len(dmesg_lines()) taken earlier)."""
    return [l for l in dmesg_lines()[before:] if KERNEL_COMPLAINTS.search(l)]


def kmod_ctl(*args, wrap=(), timeout=30):
    """`stanzactl kmod ARGS`, optionally under a wrapper (capsh, setpriv)."""
    return subprocess.run(list(wrap) + [STANZACTL, "kmod"] + list(args), capture_output=True,
                          text=True, timeout=timeout)


def kmod_status():
    r = kmod_ctl("status")
    assert r.returncode == 0, "stanzactl kmod status: %s" % r.stderr
    out = {}
    for line in r.stdout.splitlines():
        k, _, v = line.partition(": ")
        out[k] = int(v) if v.isdigit() else v
    return out


# --------------------------------------------------------------------------
# Accounts
# --------------------------------------------------------------------------

def _scram_keys(hname, password, salt, iterations):
    salted = hashlib.pbkdf2_hmac(hname, password, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hname).digest()
    stored = hashlib.new(hname, client_key).digest()
    server = hmac.new(salted, b"Server Key", hname).digest()
    return stored, server


def seed(state_dir, receivers, prefix="r", domain="localhost"):
    """Creates the store with stanzactl, then accounts r0..r(n-1) and the
    publisher, each receiver in the publisher's roster with subscription
    'both' and the reverse. One PBKDF2 iteration: logins cost nothing."""
    r = subprocess.run([STANZACTL, "--state-dir", state_dir, "user", "list"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, "stanzactl could not create the store: %s" % r.stderr
    pw = PASSWORD.encode()
    s1 = _scram_keys("sha1", pw, SALT, 1)
    s256 = _scram_keys("sha256", pw, SALT, 1)
    now = int(time.time())
    users = ["%s%d" % (prefix, i) for i in range(receivers)]
    db = sqlite3.connect(os.path.join(state_dir, "stanzad.db"))
    try:
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO accounts (username, iterations, salt, sha1_stored, sha1_server,"
            " sha256_stored, sha256_server, created_at) VALUES (?, 1, ?, ?, ?, ?, ?, ?)",
            [(u, SALT, s1[0], s1[1], s256[0], s256[1], now) for u in users + [PUBLISHER]])
        cols = {row[1] for row in db.execute("PRAGMA table_info(roster_items)")}
        extra, extra_v = (", version", ", 1") if "version" in cols else ("", "")
        sql = ("INSERT INTO roster_items (username, jid, subscription%s) VALUES (?, ?, 'both'%s)"
               % (extra, extra_v))
        pub_jid = "%s@%s" % (PUBLISHER, domain)
        db.executemany(sql, [(PUBLISHER, "%s@%s" % (u, domain)) for u in users] +
                       [(u, pub_jid) for u in users])
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "roster_versions" in tables:
            db.executemany("INSERT INTO roster_versions (username, version) VALUES (?, 1)",
                           [(u,) for u in users + [PUBLISHER]])
        db.execute("COMMIT")
    finally:
        db.close()


# --------------------------------------------------------------------------
# The many-client driver
# --------------------------------------------------------------------------

class ClientRun:
    """One fanout_client run: .report (its JSON), .digests {user: (sha, bytes, last, order)}."""

    def __init__(self, report, digests, stderr):
        self.report = report
        self.digests = digests
        self.stderr = stderr


def run_clients(port, receivers, updates, digests_path, tls=False, status_bytes=32, stall=0,
                drop=0, drop_after=1, server_pid=None, timeout=600, cpus=None, extra=(),
                on_ready=None):
    """Runs fanout_client to the end. on_ready(), if given, runs once every
    client is logged in and has update 0, before updates 1..U."""
    args = [CLIENT, "--port", str(port), "--password", PASSWORD, "--publisher", PUBLISHER,
            "--receivers", str(receivers), "--updates", str(updates),
            "--status-bytes", str(status_bytes), "--digests", digests_path,
            "--timeout", str(timeout)]
    if tls:
        args.append("--tls")
    if stall:
        args += ["--stall", str(stall)]
    if drop:
        args += ["--drop", str(drop), "--drop-after", str(drop_after)]
    if server_pid:
        args += ["--server-pid", str(server_pid)]
    args += list(extra)
    if on_ready:
        args.append("--wait-stdin")
    if cpus:
        args = ["taskset", "-c", cpus] + args
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        if on_ready:
            line = p.stdout.readline()
            if line.strip() == "ready":
                try:
                    on_ready()
                finally:
                    p.stdin.write("go\n")
                    p.stdin.flush()
        out, err = p.communicate(timeout=timeout + 60)
    except BaseException:
        p.kill()
        p.wait()
        raise
    r = subprocess.CompletedProcess(args, p.returncode, out, err)
    assert r.stdout.strip(), "fanout_client printed nothing (status %d): %s" % (
        r.returncode, r.stderr[-3000:])
    report = json.loads(r.stdout.strip().splitlines()[-1])
    digests = {}
    with open(digests_path) as f:
        for line in f:
            user, sha, nbytes, last, order = line.split()
            digests[user] = (sha, int(nbytes), int(last), order)
    assert r.returncode == 0, "fanout_client failed (%d): %s\n%s" % (
        r.returncode, r.stderr[-3000:], r.stdout[-1000:])
    return ClientRun(report, digests, r.stderr)
