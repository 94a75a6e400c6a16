#!/usr/bin/python3
"""Presence fan-out benchmark of the kernel paths, in the kernel lab
(`make bench-kernel`; the report is tests/kernel/BENCH.md).

    scripts/kernel-lab.sh --mem 8192 -- /usr/bin/python3 tests/kernel/bench_fanout.py \\
        --build $PWD/build [--sizes 1000,10000] [--configs ...] [--updates N]

One publisher, R subscribers over Direct TLS (TLS 1.3, AES-128-GCM), R in
--sizes; per configuration a fresh daemon (one worker, pinned to CPU 0;
the clients on the other CPUs):

  userspace   OpenSSL's record layer + io_uring sends   (ktls=no,  kmod=no)
  ktls        kTLS + io_uring sends                     (ktls=yes, kmod=no)
  ktls+kmod   kTLS + the offload module                 (ktls=yes, kmod=yes)
  plain       plain TCP + io_uring sends (reference)    (require_tls=no)
  plain+kmod  plain TCP + the offload module (reference)

Each update is one presence broadcast to R sessions; the publisher sends
the next when every subscriber has the previous one. Measured per run:

  server CPU per delivery   the daemon's threads' run time (schedstat, all
                            threads: user, system, io_uring workers) over
                            the updates, divided by updates x R
  time to last recipient    from the publisher's send to the last
                            subscriber's receipt, per update (mean, p50, max)
  memory per connection     the daemon's RSS and heap (SIGHUP heap_in_use)
                            with R logged-in subscribers, minus the same
                            before they connected, over R; and the kernel's
                            slab growth over R (both ends of each loopback
                            connection, kTLS state included)

Crypto: the lab's initramfs loads the kernel's generic AES-GCM (C code);
a Debian system on hardware loads the AES-NI/PCLMUL implementations by
CPU modalias. The benchmark loads them (aesni-intel, ghash-clmulni-intel,
chacha-x86_64, poly1305-x86_64 from the unpacked kernel package) so that
kTLS and OpenSSL use the same instructions, and reports which driver
serves gcm(aes).

Under TCG emulation absolute times are many times slower than hardware;
compare ratios between configurations of one run. One JSON line per run on
stdout, a Markdown table at the end.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

CONFIGS = {
    "userspace": {"tls": True, "flags": ["--ktls", "no", "--kmod", "no"], "module": False},
    "ktls": {"tls": True, "flags": ["--ktls", "yes", "--kmod", "no"], "module": False},
    "ktls+kmod": {"tls": True, "flags": ["--ktls", "yes", "--kmod", "yes",
                                         "--kmod-min-fanout", "1"], "module": True},
    "plain": {"tls": False, "flags": ["--kmod", "no"], "module": False},
    "plain+kmod": {"tls": False, "flags": ["--kmod", "yes", "--kmod-min-fanout", "1"],
                   "module": True},
}


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
ACCEL_MODULES = ("aesni-intel", "ghash-clmulni-intel", "chacha-x86_64", "poly1305-x86_64")


def load_accelerated_crypto():
    """insmod the x86 crypto implementations (and what they need) from the
    lab's unpacked kernel package; returns the driver that now serves
    gcm(aes) (the highest priority in /proc/crypto)."""
    rel = os.uname().release
    lab = os.environ.get("KERNEL_LAB_DIR") or os.path.join(REPO, "build", "kernel-lab")
    moddir = os.path.join(lab, "kernel-%s" % rel, "lib", "modules", rel)
    deps = {}
    try:
        with open(os.path.join(moddir, "modules.dep")) as f:
            for line in f:
                path, _, rest = line.partition(":")
                deps[path] = rest.split()
    except OSError as e:
        log("cannot read %s/modules.dep (%s): kTLS keeps the generic crypto" % (moddir, e))
        return None
    loaded = {l.split()[0] for l in open("/proc/modules")}
    for name in ACCEL_MODULES:
        path = next((p for p in deps if os.path.basename(p).split(".ko")[0] == name), None)
        if not path:
            log("no %s in %s" % (name, rel))
            continue
        for p in list(reversed(deps[path])) + [path]:
            mod = os.path.basename(p).split(".ko")[0].replace("-", "_")
            if mod in loaded:
                continue
            r = subprocess.run(["insmod", os.path.join(moddir, p)], capture_output=True,
                               text=True)
            if r.returncode == 0:
                loaded.add(mod)
            else:
                log("insmod %s: %s" % (p, r.stderr.strip()))
    best, prio, name = None, -1, None
    for block in open("/proc/crypto").read().split("\n\n"):
        fields = dict(l.split(":", 1) for l in block.splitlines() if ":" in l)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if fields.get("name") == "gcm(aes)" and int(fields.get("priority", -1)) > prio:
            prio, best = int(fields["priority"]), fields.get("driver")
    return best


def meminfo():
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = int(v.split()[0])
    return out


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Daemon:
    def __init__(self, build, template, flags, log_path):
        self.state = tempfile.mkdtemp(prefix="bench-kmod-")
        shutil.rmtree(self.state)
        shutil.copytree(template, self.state)
        self.log_path = log_path
        self.port = 0
        import harness
        self.c2s, self.tls = harness.free_ports(2)
        args = ["taskset", "-c", "0", os.path.join(build, "stanzad"), "--domain", "localhost",
                "--state-dir", self.state, "--listen-c2s", "127.0.0.1:%d" % self.c2s,
                "--listen-c2s-tls", "127.0.0.1:%d" % self.tls, "--listen-http", "off",
                "--require-tls", "no", "--registration", "closed", "--log-level", "info",
                "--workers", "1", "--max-connections", "30000",
                "--max-output-bytes", str(16 << 20), "--max-preauth-per-ip", "0",
                "--session-byte-rate", "0", "--session-stanza-rate", "0"] + flags
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        import socket
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.tls), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("stanzad did not start:\n" + open(log_path).read()[-2000:])
                time.sleep(0.1)

    def heap(self):
        """heap_in_use of a SIGHUP log line (the daemon's malloc'd bytes)."""
        size = os.path.getsize(self.log_path)
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(size)
                m = re.search(rb"heap_in_use=(\d+)", f.read())
            if m:
                return int(m.group(1))
            time.sleep(0.1)
        return None

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.state, ignore_errors=True)


def one_run(opts, template, name, receivers, updates):
    import fanout_lab as fl
    cfg = CONFIGS[name]
    if cfg["module"]:
        fl.load_module()
        fl.kmod_ctl("reset")
    elif fl.module_loaded():
        assert fl.unload_module().returncode == 0
    d = Daemon(opts.build, template, cfg["flags"], os.path.join(opts.out, "%s-%d.log" % (
        name, receivers)))
    try:
        time.sleep(1)
        rss0, heap0, slab0 = rss_kib(d.proc.pid), d.heap(), meminfo()["Slab"]
        mem = {}

        def at_ready():
            time.sleep(1)
            mem["rss"] = rss_kib(d.proc.pid)
            mem["heap"] = d.heap()
            mem["slab"] = meminfo()["Slab"]

        run = fl.run_clients(d.tls if cfg["tls"] else d.c2s, receivers, updates,
                             os.path.join(opts.out, "digests-%s-%d" % (name, receivers)),
                             tls=cfg["tls"], status_bytes=opts.status_bytes,
                             server_pid=d.proc.pid, timeout=3000, cpus=opts.client_cpus,
                             extra=["--concurrency", "256"], on_ready=at_ready)
        kstats = fl.kmod_status() if cfg["module"] else None
    finally:
        d.stop()
    rep = run.report
    res = {
        "config": name, "receivers": receivers, "updates": updates,
        "status_bytes": opts.status_bytes,
        "cpu_us_per_delivery": round(rep["server_cpu_ns_per_delivery"] / 1e3, 3),
        "last_recipient_ms": {k: round(v / 1e3, 2) for k, v in rep["last_recipient_us"].items()},
        "login_s": rep["login_s"],
        "rss_kib_per_conn": round((mem["rss"] - rss0) / receivers, 2),
        "heap_bytes_per_conn": round((mem["heap"] - heap0) / receivers, 1)
        if mem.get("heap") and heap0 else None,
        "kernel_slab_kib_per_conn_pair": round((mem["slab"] - slab0) / receivers, 2),
    }
    if kstats:
        res["kmod"] = {k: kstats[k] for k in ("requests", "targets", "complete", "partial",
                                              "blocked", "errors")}
    return res


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def summarize(results):
    """Per (receivers, config): medians over the rounds, and the least CPU."""
    groups = {}
    for r in results:
        groups.setdefault((r["receivers"], r["config"]), []).append(r)
    out = []
    for (n, name), rs in groups.items():
        out.append({
            "receivers": n, "config": name, "rounds": len(rs),
            "cpu_us": median([r["cpu_us_per_delivery"] for r in rs]),
            "cpu_us_min": min(r["cpu_us_per_delivery"] for r in rs),
            "cpu_us_max": max(r["cpu_us_per_delivery"] for r in rs),
            "last_ms": median([r["last_recipient_ms"]["mean"] for r in rs]),
            "last_ms_max": median([r["last_recipient_ms"]["max"] for r in rs]),
            "rss_kib": median([r["rss_kib_per_conn"] for r in rs]),
            "heap_b": median([r["heap_bytes_per_conn"] for r in rs
                              if r["heap_bytes_per_conn"] is not None] or [0]),
            "slab_kib": median([r["kernel_slab_kib_per_conn_pair"] for r in rs]),
        })
    return out


def table(results):
    rows = summarize(results)
    by = {(r["config"], r["receivers"]): r for r in rows}
    lines = ["| receivers | config | rounds | server CPU / delivery, us: median (min-max) | "
             "last recipient, ms: mean, max | RSS / conn (KiB) | heap / conn (B) | "
             "kernel slab / conn pair (KiB) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %d | %s | %d | %.1f (%.1f-%.1f) | %.1f, %.1f | %.2f | %.0f | %.2f |" % (
            r["receivers"], r["config"], r["rounds"], r["cpu_us"], r["cpu_us_min"],
            r["cpu_us_max"], r["last_ms"], r["last_ms_max"], r["rss_kib"], r["heap_b"],
            r["slab_kib"]))
    lines.append("")
    lines.append("Ratios (median CPU per delivery; median mean time to the last recipient):")
    pairs = [("ktls", "userspace"), ("ktls+kmod", "userspace"), ("ktls+kmod", "ktls"),
             ("plain+kmod", "plain")]
    for n in sorted({r["receivers"] for r in rows}):
        for a, b in pairs:
            ra, rb = by.get((a, n)), by.get((b, n))
            if ra and rb:
                lines.append("- %d: %s / %s: CPU x%.2f, latency x%.2f" % (
                    n, a, b, ra["cpu_us"] / rb["cpu_us"], ra["last_ms"] / rb["last_ms"]))
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", required=True)
    p.add_argument("--sizes", default="1000,10000")
    p.add_argument("--configs", default="userspace,ktls,ktls+kmod,plain,plain+kmod",
                   help="comma-separated; a config may repeat (runs alternate)")
    p.add_argument("--updates", type=int, default=0, help="per run (default 40 for 1,000, "
                   "10 for 10,000)")
    p.add_argument("--status-bytes", type=int, default=100)
    p.add_argument("--rounds", default="", help="rounds per size, e.g. 5,2 (default: 3 for "
                   "sizes up to 1,000, 2 above); the configurations alternate within a round")
    p.add_argument("--client-cpus", default=None, help="default: every CPU but 0")
    p.add_argument("--out", default=None, help="logs and digests (default: a temporary dir)")
    opts = p.parse_args()
    os.environ["STANZAD_BUILD"] = opts.build
    import fanout_lab as fl
    if not os.path.exists("/proc/net/tls_stat"):
        sys.exit("bench: not the kernel lab (no kTLS); run `make bench-kernel`")
    if not os.path.exists(fl.KO):
        sys.exit("bench: no %s (make kmod-lab)" % fl.KO)
    ncpu = os.cpu_count() or 1
    if opts.client_cpus is None:
        opts.client_cpus = "1-%d" % (ncpu - 1) if ncpu > 1 else None
    opts.out = opts.out or tempfile.mkdtemp(prefix="bench-kmod-out-")
    sizes = [int(x) for x in opts.sizes.split(",")]
    configs = opts.configs.split(",")
    for c in configs:
        if c not in CONFIGS:
            sys.exit("bench: unknown config %s" % c)
    subprocess.run(["sysctl", "-q", "net.core.somaxconn=65535",
                    "net.ipv4.tcp_max_syn_backlog=65535", "fs.file-max=1000000",
                    "net.ipv4.ip_local_port_range=1024 65000"], check=False)
    import resource
    resource.setrlimit(resource.RLIMIT_NOFILE, (200000, 200000))

    gcm = load_accelerated_crypto()
    log("gcm(aes) in the kernel: %s" % gcm)
    template = tempfile.mkdtemp(prefix="bench-kmod-store-")
    log("seeding %d accounts" % max(sizes))
    fl.seed(template, max(sizes))
    log("kernel %s, %d CPUs; runs: %s x %s" % (os.uname().release, ncpu, configs, sizes))
    results = []
    rounds = [int(x) for x in opts.rounds.split(",")] if opts.rounds else []
    for si, n in enumerate(sizes):
        updates = opts.updates or (40 if n <= 1000 else 10)
        nrounds = rounds[si] if si < len(rounds) else (3 if n <= 1000 else 2)
        for rnd in range(nrounds):
            for name in configs:
                log("%s, %d subscribers, %d updates (round %d/%d)" % (name, n, updates, rnd + 1,
                                                                       nrounds))
                t0 = time.monotonic()
                r = one_run(opts, template, name, n, updates)
                r["round"] = rnd + 1
                log("  done in %.0f s: %.2f us/delivery, last recipient %.1f ms" % (
                    time.monotonic() - t0, r["cpu_us_per_delivery"],
                    r["last_recipient_ms"]["mean"]))
                print(json.dumps(r), flush=True)
                results.append(r)
                os.rename(os.path.join(opts.out, "digests-%s-%d" % (name, n)),
                          os.path.join(opts.out, "digests-%s-%d-%d" % (name, n, len(results))))
    # The same bytes whatever the path: the digests of one size must agree.
    for n in sizes:
        ref = None
        for i, r in enumerate(results):
            if r["receivers"] != n:
                continue
            with open(os.path.join(opts.out, "digests-%s-%d-%d" % (r["config"], n, i + 1))) as f:
                d = sorted(line.split()[:2] + line.split()[3:] for line in f)
            if ref is None:
                ref = (r["config"], d)
            elif d != ref[1]:
                log("WARNING: %s and %s delivered different bytes at %d" % (ref[0], r["config"], n))
            else:
                r["bytes_identical_to"] = ref[0]
    print(table(results))


if __name__ == "__main__":
    main()
