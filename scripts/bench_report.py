#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Writes the benchmark report (docs/bench/REPORT.md) from one run's JSON lines.

    scripts/bench_report.py RESULTS.jsonl [-o REPORT.md]

bench.py --report DIR calls this itself at the end of a run and writes
DIR/results.jsonl (the run's JSON lines, a "meta" line first) and
DIR/REPORT.md. Run by hand, it rebuilds the report from a results file.

The report has three parts: every figure of every server side by side, with
the ratio of stanzad to each peer (how many times better stanzad is; below
1 it is worse); each target of issue 9 with the figure this run measured,
met or not, and for an unmet one what bounds it; and how the run was made.
"""
import argparse
import json
import sys

PEER_ORDER = ("stanzad", "prosody", "ejabberd")


def fmt(v, spec="{:,.0f}"):
    return "-" if v is None else spec.format(v)


def get(r, *path):
    for k in path:
        if r is None:
            return None
        r = r.get(k) if isinstance(r, dict) else None
    return r


# Figures of the side-by-side table: (scenario, label, getter, format, higher
# is better). The getter takes one result line.
def _lat(q):
    return lambda r: get(r, "latency_us", q)


FIGURES = {
    "messages": [
        ("throughput, msg/s", lambda r: r.get("msgs_per_s"), "{:,.0f}", True),
        ("server CPU per message, us", lambda r: r.get("server_us_per_msg"), "{:.2f}", False),
        ("CPU-bound capacity on one core, msg/s",
         lambda r: 1e6 / r["server_us_per_msg"] if r.get("server_us_per_msg") else None,
         "{:,.0f}", True),
        ("latency under that load p50, us", _lat("p50"), "{:,.0f}", False),
        ("latency under that load p99, us", _lat("p99"), "{:,.0f}", False),
        ("server CPU, share of a core", lambda r: r.get("server_cpu_util"), "{:.0%}", None),
        ("loadgen CPU, share of a core", lambda r: r.get("loadgen_cpu_util"), "{:.0%}", None),
    ],
    "latency": [
        ("achieved rate, msg/s", lambda r: r.get("msgs_per_s"), "{:,.0f}", True),
        ("latency p50, us", _lat("p50"), "{:,.0f}", False),
        ("latency p99, us", _lat("p99"), "{:,.0f}", False),
        ("latency p99.9, us", _lat("p999"), "{:,.0f}", False),
        ("server CPU per message, us", lambda r: r.get("server_us_per_msg"), "{:.2f}", False),
        ("server CPU, share of a core", lambda r: r.get("server_cpu_util"), "{:.0%}", None),
        ("loadgen CPU, share of a core", lambda r: r.get("loadgen_cpu_util"), "{:.0%}", None),
    ],
    "presence": [
        ("deliveries/s", lambda r: r.get("deliveries_per_s"), "{:,.0f}", True),
        ("server CPU per delivery, us", lambda r: r.get("server_us_per_delivery"), "{:.2f}",
         False),
        ("time to last recipient p50, ms", lambda r: get(r, "fanout_ms", "p50"), "{:.2f}",
         False),
        ("time to last recipient max, ms", lambda r: get(r, "fanout_ms", "max"), "{:.2f}",
         False),
        ("server CPU, share of a core", lambda r: r.get("server_cpu_util"), "{:.0%}", None),
        ("loadgen CPU, share of a core", lambda r: r.get("loadgen_cpu_util"), "{:.0%}", None),
    ],
    "idle": [
        ("RSS per idle connection, bytes", lambda r: r.get("rss_bytes_per_conn"), "{:,.0f}",
         False),
        ("server heap (anonymous RSS) per connection, bytes",
         lambda r: r.get("heap_bytes_per_conn"), "{:,.0f}", False),
        ("server RSS with all connected, KiB", lambda r: r.get("rss_loaded_kib"), "{:,.0f}",
         False),
        ("kernel slab per connection (both ends), bytes",
         lambda r: r.get("kernel_slab_bytes_per_conn"), "{:,.0f}", False),
        ("kernel TCP buffers per connection (both ends), bytes",
         lambda r: r.get("kernel_tcp_mem_bytes_per_conn"), "{:,.0f}", False),
        ("connections held", lambda r: r.get("ready"), "{:,.0f}", True),
        ("logins/s while connecting", lambda r: r.get("logins_per_s"), "{:,.0f}", True),
        ("server CPU per login, us", lambda r: r.get("server_login_us_per_client"),
         "{:,.0f}", False),
    ],
    "login": [
        ("logins/s", lambda r: r.get("logins_per_s"), "{:,.0f}", True),
        ("round trips to a ready session", lambda r: r.get("round_trips"), "{:.0f}", False),
        ("time to ready p50, ms", lambda r: get(r, "ready_ms", "p50"), "{:.2f}", False),
        ("server CPU per login, us", lambda r: r.get("server_us_per_login"), "{:,.0f}", False),
        ("server CPU, share of a core", lambda r: r.get("server_cpu_util"), "{:.0%}", None),
    ],
}
FIGURES["pubsub"] = FIGURES["presence"]
# Order of the sections.
SECTIONS = ("messages", "latency", "presence", "pubsub", "idle", "login")


def title(r):
    s, p = r["scenario"], r.get("params", {})
    if s == "messages":
        return "One-to-one messages, closed loop (%s clients, %s in flight each)" % (
            fmt(p.get("clients")), p.get("window"))
    if s == "latency":
        return "One-to-one messages, open loop at %s msg/s (%s clients)" % (
            fmt(p.get("rate")), fmt(p.get("clients")))
    if s == "presence":
        return "Presence fan-out 1 -> %s (%s updates)" % (fmt(p.get("receivers")),
                                                          fmt(p.get("updates")))
    if s == "pubsub":
        return "Pubsub fan-out 1 -> %s (%s items)" % (fmt(p.get("receivers")),
                                                      fmt(p.get("items")))
    if s == "idle":
        return "Idle connections, %s (%s clients)" % (p.get("transport", "plain TCP"),
                                                      fmt(p.get("clients")))
    if s == "login":
        return "Login over Direct TLS, %s" % p.get("mode")
    return s


def key(r):
    """Results of one scenario instance on different servers share a key."""
    p = r.get("params", {})
    if r["scenario"] == "idle":  # one section per transport (plain first) and size
        tls = (p.get("transport") or "plain TCP") != "plain TCP"
        return (r["scenario"], (tls, p.get("clients") or 0), p.get("transport"))
    return (r["scenario"], p.get("rate"), p.get("mode"))


def ratio(mine, theirs, higher_better):
    """How many times better stanzad's figure is than a peer's (None when
    either is missing or not positive: no ratio means anything then)."""
    if mine is None or theirs is None or higher_better is None or mine <= 0 or theirs <= 0:
        return None
    if higher_better:
        return mine / theirs if theirs else None
    return theirs / mine if mine else None


def noisy_note(label, r):
    """The warning for a window in which other processes took a noticeable share."""
    other = r.get("other_cpu_util") or 0
    if other <= NOISY_OTHER_CPU:
        return []
    return ["%s: other processes used %.0f%% of a core during the window: figures unreliable"
            % (label, other * 100)]


def side_by_side(results, servers):
    out = []
    groups = {}
    for r in results:
        if r.get("scenario") in SECTIONS and "error" not in r:
            groups.setdefault(key(r), {})[r.get("server", "stanzad")] = r
    peers = [s for s in servers if s != "stanzad"]
    for k in sorted(groups, key=lambda k: (SECTIONS.index(k[0]), k[1] or 0, k[2] or "")):
        row = groups[k]
        any_r = row.get("stanzad") or next(iter(row.values()))
        out.append("### %s\n" % title(any_r))
        head = ["figure"] + [s for s in servers if s in row or s == "stanzad"]
        cols = [s for s in servers if s in row or s == "stanzad"]
        for p in peers:
            if p in row:
                head.append("stanzad vs %s" % p)
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for label, getter, spec, hb in FIGURES[k[0]]:
            vals = {s: (getter(row[s]) if s in row else None) for s in cols}
            cells = [label] + [fmt(vals[s], spec) for s in cols]
            for p in peers:
                if p in row:
                    x = ratio(vals.get("stanzad"), vals.get(p), hb)
                    cells.append("-" if x is None else "%.1fx" % x)
            out.append("| " + " | ".join(cells) + " |")
        notes = []
        for s in cols:
            r = row.get(s)
            if r is None:
                continue
            if r.get("status") not in (None, "ok"):
                notes.append("%s: %s" % (s, r["status"]))
            if r.get("loadgen_saturated"):
                notes.append("%s: the load generator was the limit (its CPU near a full "
                             "core, or its sends late)" % s)
            if r.get("archived_per_msg") is not None and r["scenario"] in ("messages",
                                                                         "latency"):
                notes.append("%s: %.2f archive (MAM) rows written per message" %
                             (s, r["archived_per_msg"]))
            notes.extend(noisy_note(s, r))
        if notes:
            out.append("")
            out.extend("- " + n for n in notes)
        out.append("")
    return out


def find(results, scenario, server="stanzad", **params):
    for r in results:
        if r.get("scenario") != scenario or r.get("server", "stanzad") != server:
            continue
        if "error" in r:
            continue
        if all(r.get("params", {}).get(k) == v for k, v in params.items()):
            return r
    return None


def nofile_bound(meta):
    """The descriptor limit of the run's host, when the run recorded it."""
    host = meta.get("host") or {}
    hard = host.get("nofile_hard")
    if not hard:
        return ""
    raise_ = ("and the bench could not raise it (no CAP_SYS_RESOURCE)"
              if host.get("cap_sys_resource") is False else "(raisable as root)")
    return ("on this host one process may hold at most %s descriptors (RLIMIT_NOFILE hard "
            "limit) %s, and the server holds every connection in one process, so no size "
            "above that could be tried; " % (fmt(hard), raise_))


def targets(results, meta):
    """Rows (target, measured, verdict, what bounds it)."""
    rows = []
    st = next((r for r in results if r.get("scenario") == "selftest" and "error" not in r),
              None)
    cap = st.get("loadgen_capacity_msgs_per_s") if st else None
    rows.append(("load generator drives >= 300,000 msg/s on one core (against its sink)",
                 "%s msg/s" % fmt(cap) if st else None, None if cap is None else cap >= 300000,
                 "the generator's own per-message cost (%s us/msg): its epoll loop, one "
                 "read and one write per batch" % fmt(st.get("loadgen_us_per_msg"), "{:.2f}")
                 if st else None))
    m = find(results, "messages")
    us = m.get("server_us_per_msg") if m else None
    arch = m.get("archived_per_msg") if m else None
    arch_note = ("archive on (%.2f MAM rows per message)" % arch if arch else
                 "archive off" if arch is not None else "archive state unknown")
    rows.append(("server CPU per routed one-to-one message <= 5 us",
                 "%s us/msg (%s)" % (fmt(us, "{:.2f}"), arch_note) if m else None,
                 None if us is None else us <= 5.0,
                 "MAM archive writes dominate: about 2 us/msg with the archive off, 5-6 us "
                 "with it on (two SQLite rows per message, one per party); run with "
                 "--server-arg=--mam-default=never to see routing alone"))
    rate = m.get("msgs_per_s") if m else None
    capacity = 1e6 / us if us else None
    rows.append(("throughput >= 150,000 msg/s on one core (closed loop)",
                 "%s msg/s measured, %s msg/s CPU-bound capacity (1 s / CPU per msg), "
                 "server at %s of its core, loadgen at %s" % (
                     fmt(rate), fmt(capacity), fmt(m.get("server_cpu_util"), "{:.0%}"),
                     fmt(m.get("loadgen_cpu_util"), "{:.0%}")) if m else None,
                 None if rate is None else rate >= 150000,
                 "the load generator shares the box: it sends and receives every message "
                 "on its one core, and each message is two loopback TCP transfers; when "
                 "the server's core is not saturated (server CPU share below 100%) the "
                 "server is not the limit, its CPU-bound capacity is the figure to read"))
    for rate_target, budget in ((1000, 200.0), (50000, 1000.0)):
        lr = find(results, "latency", rate=rate_target)
        p99 = get(lr, "latency_us", "p99")
        fl = get(st, "latency_floor")
        floor = (get(fl, "latency_us", "p99") if fl and fl.get("rate") == rate_target
                 else None)
        rows.append(("p99 latency at %s msg/s <= %s ms" % (fmt(rate_target),
                                                          fmt(budget / 1000, "{:g}")),
                     "p99 %s us (p50 %s, p99.9 %s; floor through the sink p99 %s us)" % (
                         fmt(p99), fmt(get(lr, "latency_us", "p50")),
                         fmt(get(lr, "latency_us", "p999")), fmt(floor)) if lr else None,
                     None if p99 is None else p99 <= budget,
                     "the floor: the same open loop through the loadgen's echo sink, no "
                     "server at all, shows what the machine's scheduler and loopback add; "
                     "a shared 2-core virtual machine wakes a sleeping thread in tens to "
                     "hundreds of microseconds"))
    floor_d = get(st, "fanout_floor", "sink_us_per_delivery")
    for sc in ("presence", "pubsub"):
        r = find(results, sc)
        v = r.get("server_us_per_delivery") if r else None
        rows.append(("server CPU per %s delivery <= 3 us" % sc,
                     "%s us/delivery, %s deliveries/s%s" % (
                         fmt(v, "{:.2f}"), fmt(r.get("deliveries_per_s")),
                         "; bare loopback send floor %s us" % fmt(floor_d, "{:.2f}")
                         if floor_d else "") if r else None,
                     None if v is None else v <= 3.0,
                     "the kernel: about 4 us per delivery, of which about 92% is loopback "
                     "TCP (one send per recipient socket and the receiver's wake-up); the "
                     "sink's fan-out floor (same copies, no XMPP work) is the bound for "
                     "one send per recipient"))
    def largest_idle(transport):
        runs = [r for r in results if r.get("scenario") == "idle" and "error" not in r and
                r.get("server", "stanzad") == "stanzad" and
                (get(r, "params", "transport") or "plain TCP") in transport]
        return max(runs, key=lambda r: get(r, "params", "clients") or 0) if runs else None

    def idle_figure(r):
        return ("%s B/conn at %s connections (heap %s B/conn; kernel, both ends: slab %s "
                "B/conn, TCP buffers %s B/conn)" % (
                    fmt(r.get("rss_bytes_per_conn")), fmt(get(r, "params", "clients")),
                    fmt(r.get("heap_bytes_per_conn")), fmt(r.get("kernel_slab_bytes_per_conn")),
                    fmt(r.get("kernel_tcp_mem_bytes_per_conn"))))

    idle = largest_idle(("plain TCP",))
    per = idle.get("rss_bytes_per_conn") if idle else None
    rows.append(("RSS per idle plain connection <= 4 KiB",
                 idle_figure(idle) if idle else None,
                 None if per is None or per <= 0 else per <= 4096,
                 "userspace state per connection (session, connection, parser; kernel "
                 "socket memory is not in RSS and is shown beside it): about 2.5 KB in "
                 "earlier runs; a figure of 0 or below means too few connections to rise "
                 "above the noise"))
    tls = largest_idle(("Direct TLS 1.3",))
    per_t = tls.get("rss_bytes_per_conn") if tls else None
    rows.append(("RSS per idle TLS connection <= 12 KiB in userspace (less with kTLS)",
                 idle_figure(tls) if tls else None,
                 None if per_t is None or per_t <= 0 else per_t <= 12 * 1024,
                 "OpenSSL's per-connection state (SSL object, keys, record buffers unless "
                 "released when idle) on top of the plain connection's; an earlier "
                 "measurement found 14-15 KiB"))
    def held(r):
        return r.get("ready", get(r, "params", "clients")) if r else None

    n, n_t = held(idle), held(tls)
    rows.append(("100,000 TLS and 1,000,000 plain connections held",
                 "%s plain and %s TLS connections held" % (fmt(n), fmt(n_t))
                 if idle or tls else None,
                 None if n is None and n_t is None else
                 (n or 0) >= 1000000 and (n_t or 0) >= 100000,
                 nofile_bound(meta) +
                 "the sizes asked for in this run (--idle-clients, --idle-tls-clients); the "
                 "load generators spread their source addresses over 127.0.0.0/8 "
                 "(--source-spread per address), so the bounds are descriptors "
                 "(RLIMIT_NOFILE, fs.nr_open, fs.file-max) and memory: both ends of each "
                 "connection are on this host"))
    lg = find(results, "login", mode="classic")
    lps = lg.get("logins_per_s") if lg else None
    fig = ("%s logins/s (classic negotiation, full TLS 1.3, %s parallel): 10,000 in "
           "%s s" % (fmt(lps), get(lg, "params", "threads"),
                     fmt(10000 / lps, "{:.1f}") if lps else "-") if lg else None)
    secs = 10000 / lps if lps else None
    if tls and (get(tls, "params", "clients") or 0) >= 10000 and tls.get("login_s"):
        # Measured directly: the TLS idle run logs its devices in (classic,
        # SCRAM-SHA-256, each a distinct account) and keeps them.
        n_tls = get(tls, "params", "clients")
        secs = tls["login_s"] * 10000 / n_tls
        fig = ("%s devices in %s s (idle TLS run: classic negotiation, full TLS 1.3, "
               "SCRAM-SHA-256, sessions kept)%s" % (
                   fmt(n_tls), fmt(tls["login_s"], "{:.1f}"),
                   "; %s logins/s in the login scenario" % fmt(lps) if lps else ""))
    rows.append(("10,000 devices logging in with TLS + SCRAM-SHA-256 in <= 10 s",
                 fig, None if secs is None else secs <= 10,
                 "the full TLS handshake (an X25519 exchange and a signature per login) "
                 "and the round trips of the classic negotiation; SASL2 and FAST, also "
                 "measured above, need fewer"))
    return rows


# Other processes above this share of a core during a window: noisy figures.
NOISY_OTHER_CPU = 0.10

# The reconnect storm's table: (label, getter, format, higher is better).
RECONNECT_FIGURES = [
    ("devices back", lambda r: r.get("devices_back"), "{:,.0f}", None),
    ("failed reconnects", lambda r: r.get("failures"), "{:,.0f}", None),
    ("sessions resumed (`<resumed/>`)", lambda r: r.get("resumed"), "{:,.0f}", None),
    ("new sessions", lambda r: r.get("new_sessions"), "{:,.0f}", None),
    ("TLS sessions resumed (tickets)", lambda r: r.get("tls_resumed"), "{:,.0f}", None),
    ("reconnects/s", lambda r: r.get("reconnects_per_s"), "{:,.0f}", True),
    ("time to all back, s", lambda r: r.get("time_to_all_back_s"), "{:.2f}", False),
    ("ready p50 (connect() to ready), ms", lambda r: get(r, "ready_ms", "p50"), "{:.2f}",
     False),
    ("ready p99 (connect() to ready), ms", lambda r: get(r, "ready_ms", "p99"), "{:.2f}",
     False),
    ("back p50 (from the storm's start), ms", lambda r: get(r, "back_ms", "p50"), "{:.1f}",
     False),
    ("back p99 (from the storm's start), ms", lambda r: get(r, "back_ms", "p99"), "{:.1f}",
     False),
    ("round trips to ready", lambda r: r.get("round_trips"), "{:.0f}", False),
    ("server CPU per reconnect, us", lambda r: r.get("server_us_per_reconnect"), "{:,.0f}",
     False),
    ("server CPU, share of a core", lambda r: r.get("server_cpu_util"), "{:.0%}", None),
    ("load generator CPU, share of a core", lambda r: r.get("loadgen_cpu_util"), "{:.0%}",
     None),
    ("other processes, share of a core", lambda r: r.get("other_cpu_util"), "{:.0%}", None),
]


def reconnect_section(results):
    """The reconnect storm (stanzad only): one column per variant, and how
    many times better resume is than relogin. Nothing without its results."""
    runs = {}
    for r in results:
        if (r.get("scenario") == "reconnect" and "error" not in r and
                r.get("server", "stanzad") == "stanzad"):
            runs[get(r, "params", "variant")] = r
    if not runs:
        return []
    order = [v for v in ("resume", "relogin") if v in runs] + \
        sorted(v for v in runs if v not in ("resume", "relogin"))
    both = "resume" in runs and "relogin" in runs
    any_r = runs[order[0]]
    out = ["## Reconnect storm", ""]
    out.append("%s devices over Direct TLS 1.3, logged in with SASL2 and Bind 2 (stream "
               "management with resumption; a FAST token for resume), drop at once (the "
               "client resets every TCP connection: no `</stream:stream>`, so the server "
               "keeps the sessions for resumption, XEP-0198), and once the server has "
               "handled the drops all come back at once on %s client threads. resume: "
               "SASL2 with the FAST token and `<resume/>` inline in `<authenticate/>` (one "
               "round trip after TLS%s); relogin: the classic login (SCRAM-SHA-256, bind "
               "of the same resource, `<enable/>`), a new session replacing the detached "
               "one. Time to all back runs from the first reconnect to the last device "
               "ready; server CPU per reconnect is the window's plus what the server did "
               "after it." % (
                   fmt(get(any_r, "params", "devices")), get(any_r, "params", "threads"),
                   ", the TLS session resumed from its ticket"
                   if get(runs.get("resume"), "params", "tls_resume") else ""))
    out.append("")
    head = ["figure"] + order + (["resume vs relogin"] if both else [])
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    for label, getter, spec, hb in RECONNECT_FIGURES:
        vals = {v: getter(runs[v]) for v in order}
        cells = [label] + [fmt(vals[v], spec) for v in order]
        if both:
            x = ratio(vals["resume"], vals["relogin"], hb)
            cells.append("-" if x is None else "%.1fx" % x)
        out.append("| " + " | ".join(cells) + " |")
    notes = []
    for v in order:
        r = runs[v]
        n = get(r, "params", "devices")
        if n and (r.get("devices_back") or 0) < n:
            notes.append("%s: %s of %s devices came back (%s)" % (
                v, fmt(r.get("devices_back")), fmt(n),
                get(r, "logingen", "last_error") or "?"))
        notes.extend(noisy_note(v, r))
    if notes:
        out.append("")
        out.extend("- " + x for x in notes)
    out.append("")
    return out


def render(results, meta):
    servers = [s for s in PEER_ORDER if s in (meta.get("servers") or ["stanzad"])]
    noisy = sorted({"%s on %s" % (r["scenario"], r.get("server", "stanzad")) for r in results
                    if (r.get("other_cpu_util") or 0) > NOISY_OTHER_CPU})
    meta = dict(meta, noisy=noisy)
    out = ["# stanzad benchmark report", ""]
    out.append("Made by one command, `%s`, on %s (%s, %s CPUs, kernel %s). Server pinned to "
               "CPU %s, load generator to CPU %s (taskset). Every figure below comes from "
               "this one run; `scripts/bench_report.py` rebuilt this file from "
               "`results.jsonl` beside it." % (
                   meta.get("command", "make bench"), meta.get("date", "?"),
                   get(meta, "host", "cpu_model") or "cpu", get(meta, "host", "cpus"),
                   get(meta, "host", "kernel"), meta.get("server_cpus") or "any",
                   meta.get("loadgen_cpus") or "any"))
    out.append("")
    if meta.get("versions"):
        out.append("Servers: " + ", ".join(
            "%s %s" % (s, (meta["versions"].get(s) or "").replace(s + " ", "", 1))
            for s in servers) + ".")
        out.append("")
    if noisy:
        out.append("**Warning:** other processes used over %d%% of a core during %s: those "
                   "figures are unreliable; run again on a quiet machine." %
                   (NOISY_OTHER_CPU * 100, ", ".join(noisy)))
        out.append("")
    out.append("## Targets (issue 9)")
    out.append("")
    out.append("| target | measured (stanzad) | met | what bounds it (when not met) |")
    out.append("|---|---|---|---|")
    for t, measured, ok, bound in targets(results, meta):
        verdict = "not measured" if ok is None else "yes" if ok else "**no**"
        if ok is not None and meta.get("noisy"):
            verdict += " (busy machine)"
        out.append("| %s | %s | %s | %s |" % (t, measured or "-", verdict,
                                              "" if ok else bound or ""))
    out.append("")
    out.append("## Side by side")
    out.append("")
    out.append("Ratios say how many times better stanzad's figure is than the peer's "
               "(higher throughput, or lower cost, latency or memory); below 1.0x stanzad "
               "is worse. CPU shares are of one core: a server near 100% was saturated, "
               "a load generator near 100% was the limit.")
    out.append("")
    out.extend(side_by_side(results, servers))
    out.extend(reconnect_section(results))
    failed = [r for r in results if "error" in r]
    notes = meta.get("notes") or []
    if failed or notes:
        out.append("## Not measured")
        out.append("")
        for r in failed:
            out.append("- %s on %s: failed: %s" % (r["scenario"], r.get("server", "stanzad"),
                                                  r["error"].splitlines()[0]))
        out.extend("- " + n for n in notes)
        out.append("")
    # Rows of results.jsonl replaced by a later, narrower run, and why.
    if meta.get("amendments"):
        out.append("## Amendments")
        out.append("")
        out.extend("- " + a for a in meta["amendments"])
        out.append("")
    out.append("## How the servers ran")
    out.append("")
    out.append("- stanzad: a fresh process per scenario, one worker (bench.py passes "
               "`--workers 1`, its `--workers` default, though the daemon's default is one "
               "worker per CPU: the single-core comparison, the peers being pinned to one "
               "core too; docs/bench/WORKERS.md compares one and two workers), plain c2s with "
               "`--require-tls no`, accounts seeded into its store with one PBKDF2 "
               "iteration (PLAIN logins then cost no key derivation), abuse limits off "
               "(thousands of clients from one address at line rate).")
    if "prosody" in servers:
        out.append("- prosody: Debian's package, started by the bench with its own "
                   "configuration (scripts/bench_peers.py): epoll backend, plain c2s, "
                   "`internal_plain` passwords, no mod_limits, MAM, carbons, smacks or "
                   "offline storage; pubsub component at pubsub.DOMAIN with its default "
                   "(file) storage. One instance for every scenario.")
    if "ejabberd" in servers:
        out.append("- ejabberd: Debian's package, started by the bench through "
                   "`ejabberdctl foreground` as the ejabberd user with its own config, "
                   "spool and Erlang distribution port: plain c2s without shaper, "
                   "plain-text passwords in Mnesia, no mod_mam, mod_offline, carbons, "
                   "stream management or fail2ban; mod_pubsub with the flat plugin. CPU "
                   "and RSS are the Erlang VM's (beam.smp), pinned to the server CPU so "
                   "it runs one scheduler. One instance for every scenario.")
    if len(servers) > 1:
        out.append("- Peer accounts come from in-band registration (XEP-0077) and the "
                   "pubsub node and subscriptions from XEP-0060 requests over the peer's "
                   "own c2s port before its first scenario; the presence rosters from "
                   "real subscription handshakes on ejabberd, and on prosody written into "
                   "its roster files before anyone logs in (its handshakes take time "
                   "quadratic in the roster's size); either way the publisher's roster "
                   "is checked as the server reports it (roster_items_both below).")
    for s, info in (meta.get("setup") or {}).items():
        out.append("- %s setup: %s" % (s, ", ".join("%s %s" % (k, v)
                                                    for k, v in sorted(info.items()))))
    out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------
# The workers report (bench.py --scenario workers --report DIR: WORKERS.md)
# --------------------------------------------------------------------------

WORKER_SCENARIOS = ("storm", "workers_messages")


def _col(r):
    p = r.get("params", {})
    return (p.get("workers"), p.get("steering") or "none")


def _col_name(c):
    w, st = c
    return "%d worker%s%s" % (w, "" if w == 1 else "s", "" if w == 1 else ", " + st)


def _split(r, total_key="server_cpu_s"):
    """Each server thread's share of the server's CPU: w0 (worker 0, thread
    'stanzad'), w1.., storage, other."""
    th = r.get("server_threads_cpu_s") or {}
    tot = sum(th.values())
    if not tot:
        return None
    parts = {}
    for k, v in th.items():
        name = ("w0" if k == "stanzad" else k[len("stanzad-"):] if k.startswith("stanzad-")
                else k)
        parts[name] = parts.get(name, 0) + v
    order = sorted(parts, key=lambda k: (not k.startswith("w"), k))
    return " / ".join("%s %.0f%%" % (k, 100 * parts[k] / tot) for k in order)


def _ratio_cells(vals, base, hb):
    out = []
    for v in vals:
        x = ratio(v, base, hb) if hb is not None else None
        if hb is False and x is not None:
            x = 1 / x  # cost ratios: plain N-worker / 1-worker
        out.append("-" if x is None else "%.2fx" % x)
    return out


def _table(rows_spec, cols, base_col):
    """rows_spec: (label, getter, spec, higher_better); ratios of every
    column to base_col (throughput: N / 1; cost and latency: N / 1 too, so
    below 1.0x is cheaper or faster)."""
    others = [c for c in cols if c != base_col]
    head = ["figure"] + [_col_name(c) for c in cols] + ["%s vs 1" % _col_name(c).split(" ")[0]
                                                         + ("" if c[1] == "none" else
                                                            " (" + c[1] + ")")
                                                         for c in others]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, getter, spec, hb in rows_spec:
        vals = {c: getter(cols[c]) for c in cols}
        cells = [label] + [v if isinstance(v, str) else fmt(v, spec) for v in vals.values()]
        base = vals.get(base_col)
        for c in others:
            v = vals[c]
            if hb is None or isinstance(v, str) or v is None or not base:
                cells.append("-")
            else:
                cells.append("%.2fx" % (v / base))
        out.append("| " + " | ".join(cells) + " |")
    return out


def _make_command(command):
    """bench.py's command line as `make bench BENCH_ARGS="..."` (its --build
    left to make)."""
    words = command.split()[1:]
    args, skip = [], False
    for w in words:
        if skip:
            skip = False
        elif w == "--build":
            skip = True
        elif not w.startswith("--build="):
            args.append(w)
    return 'make bench BENCH_ARGS="%s"' % " ".join(args)


def _median_rounds(results, scenario, key):
    """{column: the result of its median round by `key`}, each with "_rounds":
    {round: key's value} of every round."""
    groups = {}
    for r in results:
        if r.get("scenario") == scenario and "error" not in r and r.get(key) is not None:
            groups.setdefault(_col(r), []).append(r)
    out = {}
    for c, rs in groups.items():
        rs = sorted(rs, key=lambda r: r[key])
        m = dict(rs[(len(rs) - 1) // 2])
        m["_rounds"] = {get(r, "params", "round") or 1: r[key] for r in rs}
        out[c] = m
    return out


def _each_round(r):
    rounds = r.get("_rounds") or {}
    return " / ".join(fmt(rounds[k]) for k in sorted(rounds)) if len(rounds) > 1 else None


def _round_ratios(r, base):
    """r's figure over base's, round by round (the two ran in the same round)."""
    a, b = r.get("_rounds") or {}, base.get("_rounds") or {}
    return ["%.2fx" % (a[k] / b[k]) for k in sorted(a) if b.get(k)]


def render_workers(results, meta):
    storms = _median_rounds(results, "storm", "logins_per_s")
    msgs = _median_rounds(results, "workers_messages", "msgs_per_s")
    nrounds = max([len(r["_rounds"]) for r in list(storms.values()) + list(msgs.values())] or [1])
    failed = [r for r in results if "error" in r]
    out = ["# stanzad with one and with two workers", ""]
    out.append("Made by one command, `%s` (`%s` runs the same with the binaries of "
               "`build/`), on %s (%s, %s CPUs, kernel %s). Every figure "
               "below comes from this one run; `scripts/bench_report.py --workers "
               "docs/bench/workers.jsonl` rebuilds this file from the JSON lines beside it.%s" % (
                   meta.get("command", "make bench"), _make_command(meta.get("command", "")),
                   meta.get("date", "?"),
                   get(meta, "host", "cpu_model") or "cpu", get(meta, "host", "cpus"),
                   get(meta, "host", "kernel"),
                   " The bench scripts' tree: `%s` (git describe); stanzad: %s%s." % (
                       meta["git"], get(meta, "versions", "stanzad") or "?",
                       ", binary sha256 %s..." % get(meta, "stanzad_binary", "sha256")
                       if meta.get("stanzad_binary") else "")
                   if meta.get("git") else ""))
    out.append("")
    out.append("What it measures (issue 6): the same stanzad binary started with "
               "`--workers 1` and `--workers 2`, a fresh process per measurement, in one run:")
    out.append("")
    any_s = next(iter(storms.values()), None)
    sp = (any_s or {}).get("params", {})
    out.append("- **TLS login storm**: %s devices (distinct accounts) connect over Direct TLS "
               "and each logs in once, the way a device starts: TLS 1.3 handshake, "
               "SCRAM-SHA-256, stream restart, resource bind, stream management, then roster "
               "get and initial presence (sent in one flight, ready when the roster "
               "arrives); the sessions stay open. %s client threads (build/logingen "
               "`--hold --roster-presence`), one login at a time each; %s." % (
                   fmt(sp.get("devices")), sp.get("threads", "?"),
                   "every device from its own source address (127.0.0.2 and on, "
                   "`--source-spread 1`), as devices on the Internet are"
                   if sp.get("source_spread") == 1 else
                   "%s devices per source address over %s addresses of 127.0.0.0/8" % (
                       sp.get("source_spread"), fmt(sp.get("source_addresses")))))
    mp = next(iter(msgs.values()), {}).get("params", {})
    out.append("- **One-to-one messages, closed loop**: bench.py's messages scenario "
               "(%s clients in pairs over plain TCP, %s messages in flight each, %s s), "
               "build/loadgen from 127.0.0.1." % (fmt(mp.get("clients")), mp.get("window", "?"),
                                                   fmt(mp.get("duration_s"), "{:g}")))
    out.append("- **Steering balance**: after each storm, `stanzactl --json workers`: the "
               "connections the steering program sent each worker (`selected`, counted "
               "over the storm) and the connections each worker holds.")
    out.append("")
    out.append("**Read with care:**")
    out.append("")
    out.append("- This host has %s CPUs. With one worker the server is pinned to CPU %s and "
               "the load generator to CPU %s, as in REPORT.md. With two workers the server "
               "gets CPUs %s and the load generator has no core of its own: it runs on %s, "
               "sharing them with the server. The client's TLS and SCRAM work is about as "
               "heavy as the server's, so the generator's CPU share (below) tells how much "
               "of the box it took; the CPU shares are of one core (200%% = both)." % (
                   get(meta, "host", "cpus"),
                   _cpus(storms, msgs, 1, "server_cpus"), _cpus(storms, msgs, 1, "loadgen_cpus"),
                   _cpus(storms, msgs, 2, "server_cpus"), _cpus(storms, msgs, 2, "loadgen_cpus")))
    out.append("- The pre-authentication phase (TLS handshake, SASL, stream negotiation) "
               "runs on the worker that accepted the connection. At authentication success "
               "the connection moves to the account's home worker (`homes = hash`: spread "
               "by a hash of the bare JID), where bind, roster, presence and the account's "
               "routing run; a message between accounts at home on different workers "
               "crosses once through the recipient's home's mailbox (about half of the "
               "pairs with two workers). Logins and message routing both run on every "
               "worker.")
    noisy = sorted({"%s (%s%s)" % (r["scenario"], _col_name(_col(r)),
                                   ", round %s" % get(r, "params", "round")
                                   if nrounds > 1 else "") for r in results
                    if (r.get("other_cpu_util") or 0) > NOISY_OTHER_CPU})
    out.append("- The machine is shared: bench.py waits up to 10 s before each measurement "
               "for other processes to fall under 10%% of a core, and reports what they "
               "used during each window (\"other processes\" rows). %s" % (
                   "Over 10%% during %s: those figures are noisy." % ", ".join(noisy)
                   if noisy else "They stayed under 10% in every window of this run."))
    if nrounds > 1:
        out.append("- %d rounds, each running every configuration in turn (one worker, then "
                   "two), so that other processes' load falls on both alike. Each column "
                   "shows its median round (by logins/s or msg/s); the row \"in each round\" "
                   "and the per-round ratios below show the spread. Differences inside that "
                   "spread are not measured differences." % nrounds)
    out.append("- Accounts are seeded with one PBKDF2 iteration (bench.py's store): SCRAM "
               "then costs the server two HMACs and a hash, the client one PBKDF2 round; "
               "the TLS handshake dominates both sides' cost per login.")
    out.append("")
    base_s = next((c for c in storms if c[0] == 1), None)
    if storms:
        out.append("## TLS login storm")
        out.append("")
        if base_s:
            out.append("Ratios: each two-worker figure divided by the one-worker figure of "
                       "the same run (logins/s above 1.0x is faster; CPU per login and "
                       "latency below 1.0x are cheaper or faster).")
            out.append("")
        spec = [
            ("logins/s", lambda r: r.get("logins_per_s"), "{:,.0f}", True),
            ("logins/s in each round", lambda r: _each_round(r) or "-", None, None),
            ("storm duration, s", lambda r: r.get("storm_s"), "{:.2f}", False),
            ("time to ready p50, ms", lambda r: get(r, "ready_ms", "p50"), "{:.2f}", False),
            ("time to ready p99, ms", lambda r: get(r, "ready_ms", "p99"), "{:.2f}", False),
            ("round trips to ready", lambda r: r.get("round_trips"), "{:.0f}", None),
            ("server CPU per login, us", lambda r: r.get("server_us_per_login"), "{:,.0f}",
             False),
            ("client CPU per login, us", lambda r: r.get("loadgen_us_per_login"), "{:,.0f}",
             False),
            ("server CPU, share of a core", lambda r: r.get("server_cpu_util"), "{:.0%}", False),
            ("load generator CPU, share of a core", lambda r: r.get("loadgen_cpu_util"),
             "{:.0%}", False),
            ("other processes, share of a core", lambda r: r.get("other_cpu_util"), "{:.0%}",
             None),
            ("server CPU by thread", lambda r: _split(r) or "-", None, None),
            ("server-bound capacity, logins/s (projection)", _capacity, "{:,.0f}", True),
            ("failed logins", lambda r: r.get("failures"), "{:,.0f}", None),
        ]
        out.extend(_table(spec, dict(sorted(storms.items())), base_s))
        out.append("")
        out.append("Thread names: w0 is worker 0 (the main thread), w1 worker 1, storage the "
                   "SQLite writer; the split is of the server's CPU during the storm window. "
                   "The projection is not a measurement: the logins/s the server's CPU per "
                   "login would allow with a core per worker and the clients on other "
                   "machines (N cores / CPU per login, and no more than its busiest thread "
                   "allows); on this box the clients' TLS work shares the same two cores.")
        out.append("")
    if storms:
        out.append("## Steering balance after the storm")
        out.append("")
        out.append("| run | steering active | steered to each worker (selected) | imbalance "
                   "(max / mean) | left to the kernel's hash | connections held per worker "
                   "| sessions |")
        out.append("|---|---|---|---|---|---|---|")
        for c, r in sorted(storms.items()):
            pw = r.get("per_worker") or []
            sel = [w.get("selected") or 0 for w in pw]
            imb = (max(sel) / (sum(sel) / len(sel))) if sel and sum(sel) else None
            st = r.get("steering") or {}
            out.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                _col_name(c),
                "yes" if st.get("steering_active") else "no (%s)" % (
                    st.get("steering_reason") or "?"),
                " / ".join("w%d %s" % (w["id"], fmt(w.get("selected"))) for w in pw) or "-",
                fmt(imb, "{:.2f}"), fmt(st.get("fallbacks")),
                " / ".join("w%d %s" % (w["id"], fmt(w.get("connections"))) for w in pw) or "-",
                fmt(r.get("sessions_after"))))
        out.append("")
        out.append("`selected` counts what the sk_reuseport program chose during the storm; "
                   "with one worker there is nothing to steer (the program is off and the "
                   "count stays 0). Connections held are counted after the storm, the "
                   "devices still logged in: every authenticated session has moved to its "
                   "account's home worker.")
        out.append("")
    base_m = next((c for c in msgs if c[0] == 1), None)
    if msgs:
        out.append("## One-to-one messages, closed loop")
        out.append("")
        spec = [
            ("throughput, msg/s", lambda r: r.get("msgs_per_s"), "{:,.0f}", True),
            ("msg/s in each round", lambda r: _each_round(r) or "-", None, None),
            ("server CPU per message, us", lambda r: r.get("server_us_per_msg"), "{:.2f}",
             False),
            ("latency under that load p50, us", lambda r: get(r, "latency_us", "p50"),
             "{:,.0f}", False),
            ("latency under that load p99, us", lambda r: get(r, "latency_us", "p99"),
             "{:,.0f}", False),
            ("server CPU, share of a core", lambda r: r.get("server_cpu_util"), "{:.0%}", False),
            ("load generator CPU, share of a core", lambda r: r.get("loadgen_cpu_util"),
             "{:.0%}", False),
            ("other processes, share of a core", lambda r: r.get("other_cpu_util"), "{:.0%}",
             None),
            ("server CPU by thread", lambda r: _split(r) or "-", None, None),
            ("connections steered to each worker", lambda r: " / ".join(
                "w%d %s" % (w["id"], fmt(w.get("selected")))
                for w in get(r, "per_worker", "workers") or []) or "-", None, None),
        ]
        out.extend(_table(spec, dict(sorted(msgs.items())), base_m))
        out.append("")
    out.append("## What the figures say")
    out.append("")
    out.extend("- " + x for x in _workers_findings(storms, msgs, base_s, base_m))
    out.append("")
    if failed:
        out.append("## Not measured")
        out.append("")
        for r in failed:
            out.append("- %s: failed: %s" % (r["scenario"], r["error"].splitlines()[0]))
        out.append("")
    return "\n".join(out)


def _capacity(r):
    """Logins/s the server's own CPU would allow with one core per worker and
    the clients elsewhere: the cores' time over the CPU per login, and no
    faster than its busiest thread allows."""
    held = get(r, "params", "devices")
    us = r.get("server_us_per_login")
    th = r.get("server_threads_cpu_s") or {}
    nw = get(r, "params", "workers") or 1
    if not held or not us:
        return None
    cap = nw * 1e6 / us
    if th and nw > 1:
        cap = min(cap, held / max(th.values()))
    return cap


def _cpus(storms, msgs, nworkers, key):
    for r in list(storms.values()) + list(msgs.values()):
        if get(r, "params", "workers") == nworkers:
            return get(r, "params", key) or "any"
    return "?"


def _workers_findings(storms, msgs, base_s, base_m):
    """Sentences computed from the figures (no judgement beyond them)."""
    out = []
    b = storms.get(base_s) if base_s else None
    if b and (b.get("loadgen_cpu_util") or 0) > 0.85 > (b.get("server_cpu_util") or 0):
        out.append("The one-worker storm was bound by the load generator, not the server: "
                   "the generator used %s of its own core (%s us of client CPU per login: "
                   "TLS handshake, SCRAM, parsing), the server %s of its core (%s us per "
                   "login). The clients cost more CPU than the server, so on two cores no "
                   "layout lets the measured logins/s show what a second worker adds; "
                   "read the server CPU per login, the thread split and the projection." % (
                       fmt(b.get("loadgen_cpu_util"), "{:.0%}"),
                       fmt(b.get("loadgen_us_per_login"), "{:,.0f}"),
                       fmt(b.get("server_cpu_util"), "{:.0%}"),
                       fmt(b.get("server_us_per_login"), "{:,.0f}")))
    for c, r in sorted(storms.items()):
        if not b or c == base_s:
            continue
        out.append("Login storm, %s: %.2fx the logins/s of one worker (%s vs %s), server "
                   "CPU per login %.2fx (%s vs %s us), time to ready p99 %s vs %s ms; server "
                   "at %s and load generator at %s of a core (one worker: %s and %s)." % (
                       _col_name(c), r["logins_per_s"] / b["logins_per_s"],
                       fmt(r["logins_per_s"]), fmt(b["logins_per_s"]),
                       r["server_us_per_login"] / b["server_us_per_login"],
                       fmt(r["server_us_per_login"]), fmt(b["server_us_per_login"]),
                       fmt(get(r, "ready_ms", "p99"), "{:.1f}"),
                       fmt(get(b, "ready_ms", "p99"), "{:.1f}"),
                       fmt(r.get("server_cpu_util"), "{:.0%}"),
                       fmt(r.get("loadgen_cpu_util"), "{:.0%}"),
                       fmt(b.get("server_cpu_util"), "{:.0%}"),
                       fmt(b.get("loadgen_cpu_util"), "{:.0%}")))
        rr = _round_ratios(r, b)
        if len(rr) > 1:
            out.append("Its logins/s over one worker's, round by round: %s." % ", ".join(rr))
        busy = (r.get("server_cpu_util") or 0) + (r.get("loadgen_cpu_util") or 0) + \
            (r.get("other_cpu_util") or 0)
        if busy > 1.8:
            out.append("With %s the two cores were saturated (server + generator + others "
                       "= %.0f%% of one core out of 200%%): the generator's TLS work took "
                       "the cycles a second worker would need, so this ratio is a floor for "
                       "what two workers give with the clients elsewhere." % (
                           _col_name(c), busy * 100))
    bm = msgs.get(base_m) if base_m else None
    for c, r in sorted(msgs.items()):
        if not bm or c == base_m:
            continue
        th = r.get("server_threads_cpu_s") or {}
        w0 = th.get("stanzad", 0) / sum(th.values()) if th else None
        noisy = [x for x in (r, bm) if (x.get("other_cpu_util") or 0) > NOISY_OTHER_CPU]
        out.append("Messages, %s: %.2fx the throughput of one worker (%s vs %s msg/s), "
                   "server CPU per message %.2fx (%s vs %s us); worker 0 spent %s of the "
                   "server's CPU and the load generator, "
                   "which sends and receives every message, shared the server's cores "
                   "(server %s, generator %s of a core; one worker: %s and %s)%s." % (
                       _col_name(c), r["msgs_per_s"] / bm["msgs_per_s"], fmt(r["msgs_per_s"]),
                       fmt(bm["msgs_per_s"]), r["server_us_per_msg"] / bm["server_us_per_msg"],
                       fmt(r["server_us_per_msg"], "{:.2f}"),
                       fmt(bm["server_us_per_msg"], "{:.2f}"), fmt(w0, "{:.0%}"),
                       fmt(r.get("server_cpu_util"), "{:.0%}"),
                       fmt(r.get("loadgen_cpu_util"), "{:.0%}"),
                       fmt(bm.get("server_cpu_util"), "{:.0%}"),
                       fmt(bm.get("loadgen_cpu_util"), "{:.0%}"),
                       "; other processes used over 10%% of a core in %s, so the ratio is "
                       "noisy" % " and ".join(_col_name(_col(x)) for x in noisy) if noisy
                       else ""))
        rr = _round_ratios(r, bm)
        if len(rr) > 1:
            out.append("Its msg/s over one worker's, round by round: %s." % ", ".join(rr))
        if r["server_us_per_msg"] > bm["server_us_per_msg"]:
            out.append("The CPU per message grows with %s: with accounts spread by hash, "
                       "about half the messages go to an account at home on the other "
                       "worker, which costs a copy of the stanza into a message, its "
                       "post to that worker's mailbox and the doorbell." % _col_name(c))
        busy = (r.get("server_cpu_util") or 0) + (r.get("loadgen_cpu_util") or 0) + \
            (r.get("other_cpu_util") or 0)
        if busy > 1.8:
            out.append("With %s the two cores were saturated (server + generator + others "
                       "= %.0f%% of one core out of 200%%), so this ratio is a floor for what "
                       "two workers give with the clients elsewhere." % (_col_name(c),
                                                                         busy * 100))
    for c, r in sorted(storms.items()):
        pw = r.get("per_worker") or []
        sel = [w.get("selected") or 0 for w in pw]
        if c[0] > 1 and sel and sum(sel):
            out.append("Steering %s: %s of %s new connections steered to worker 0, %s to "
                       "the others." % (c[1], fmt(sel[0]), fmt(sum(sel)), fmt(sum(sel[1:]))))
            if c[1] == "least-loaded":
                out.append("least-loaded compares the connections each worker holds, "
                           "sessions included (each at its account's home): a new connection "
                           "goes to the worker holding fewer. source-hash splits the logins "
                           "by source address instead, whatever the workers hold.")
    return out


def load(path):
    meta, results = {}, []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            if r.get("event") == "meta":
                meta = r
            elif "scenario" in r:
                results.append(r)
    return meta, results


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", help="JSON lines of one run (bench.py --report writes them)")
    p.add_argument("-o", "--output", default=None, help="report file (default: stdout)")
    p.add_argument("--workers", action="store_true",
                   help="the workers report (WORKERS.md) from workers.jsonl")
    p.add_argument("--cluster", action="store_true",
                   help="the cluster report (CLUSTER.md) from cluster.jsonl")
    o = p.parse_args(argv)
    meta, results = load(o.results)
    if o.cluster:
        import bench_cluster  # beside this file; only the cluster report needs it
        text = bench_cluster.render(results, meta)
    else:
        text = (render_workers if o.workers else render)(results, meta)
    if o.output:
        with open(o.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
