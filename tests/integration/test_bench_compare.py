"""make bench side by side with prosody and ejabberd (scripts/bench_peers.py)
and its report (scripts/bench_report.py), without running a benchmark.

- The report: targets met or not with what bounds the unmet ones, figures
  of every server side by side with ratios, from a results file.
- The options: --servers validated, peers refused with --target; the idle
  sizes (--idle-clients, --idle-tls-clients) as lists.
- The idle rows: plain and TLS figures with the kernel's memory, and the
  100,000 TLS / 1,000,000 plain target judged from the largest runs.
- loadgen (compiled here from tests/bench/loadgen.c) spreads its clients
  over source addresses 127.0.0.2, 127.0.0.3, ... (--source-spread), seen
  with ss against its own sink.
- Each peer that is installed starts from the configuration the bench
  writes, gets its accounts by in-band registration, rosters with
  subscription 'both' by real handshakes and a pubsub node with
  subscribers, and stops leaving no data directory behind. Skips a peer
  that is not installed (scripts/install-deps.sh bench).
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts")
sys.path.insert(0, SCRIPTS)

import bench  # noqa: E402
import bench_peers  # noqa: E402
import bench_report  # noqa: E402

HOST = {"cpus": 2, "cpu_model": "test cpu", "kernel": "6.1"}


def _results():
    msgs = {"scenario": "messages", "params": {"clients": 1000, "window": 4},
            "msgs_per_s": 200000, "server_us_per_msg": 2.0, "server_cpu_util": 0.4,
            "loadgen_cpu_util": 0.99, "other_cpu_util": 0.01, "latency_us": {"p50": 100,
                                                                              "p99": 300},
            "archived_per_msg": 0.0}
    lat = {"scenario": "latency", "params": {"rate": 1000, "clients": 1000},
           "msgs_per_s": 1000, "latency_us": {"p50": 60, "p99": 450, "p999": 900},
           "server_us_per_msg": 3.0, "other_cpu_util": 0.0}
    idle = {"scenario": "idle", "params": {"clients": 10000}, "rss_bytes_per_conn": 2500,
            "rss_loaded_kib": 40000, "logins_per_s": 20000}
    out = []
    for server, k in (("stanzad", 1), ("prosody", 50), ("ejabberd", 20)):
        for r in (msgs, lat, idle):
            r = json.loads(json.dumps(r))
            r["server"] = server
            if "msgs_per_s" in r and r["scenario"] == "messages":
                r["msgs_per_s"] //= k
            if "server_us_per_msg" in r:
                r["server_us_per_msg"] *= k
            if "rss_bytes_per_conn" in r:
                r["rss_bytes_per_conn"] *= k
            out.append(r)
    out.append({"scenario": "presence", "server": "prosody", "error": "setup failed\nmore"})
    return out


def test_report_targets_ratios_and_failures(tmp_path):
    path = tmp_path / "results.jsonl"
    meta = {"event": "meta", "command": "scripts/bench.py --servers stanzad,prosody,ejabberd",
            "date": "today", "host": HOST, "servers": ["stanzad", "prosody", "ejabberd"],
            "server_cpus": "0", "loadgen_cpus": "1", "versions": {"prosody": "0.12"},
            "notes": ["login on prosody: not measured"]}
    with open(path, "w") as f:
        for r in [meta] + _results():
            f.write(json.dumps(r) + "\n")
    assert bench_report.main([str(path), "-o", str(tmp_path / "REPORT.md")]) == 0
    text = (tmp_path / "REPORT.md").read_text()
    lines = text.splitlines()

    def row(prefix):
        return next(line for line in lines if line.startswith(prefix))
    # Targets: met, not met with its bound, not measured.
    assert "| yes |" in row("| server CPU per routed one-to-one message <= 5 us | 2.00 us/msg")
    r = row("| p99 latency at 1,000 msg/s <= 0.2 ms | p99 450 us")
    assert "| **no** |" in r and "floor" in r
    assert "| not measured |" in row("| RSS per idle TLS connection")
    assert "| yes |" in row("| throughput >= 150,000 msg/s")
    assert "| **no** |" in row("| 100,000 TLS and 1,000,000 plain")
    # Side by side with ratios: 50x and 20x cheaper, throughput 50x and 20x.
    assert row("| server CPU per message, us | 2.00 | 100.00 | 40.00 | 50.0x | 20.0x |")
    assert row("| throughput, msg/s | 200,000 | 4,000 | 10,000 | 50.0x | 20.0x |")
    assert row("| RSS per idle connection, bytes | 2,500 | 125,000 | 50,000 | 50.0x | 20.0x |")
    # Failures and notes are listed, the machine was quiet (no warning).
    assert "- presence on prosody: failed: setup failed" in lines
    assert "- login on prosody: not measured" in lines
    assert "Warning" not in text


def test_report_flags_a_busy_machine(tmp_path):
    res = _results()
    res[0]["other_cpu_util"] = 0.8
    text = bench_report.render(res, {"servers": ["stanzad"], "host": HOST})
    assert "**Warning:** other processes used over 10% of a core during messages on stanzad" \
        in text
    assert "(busy machine)" in text
    # stanzad alone: no peer columns.
    assert "stanzad vs" not in text


def test_servers_option():
    o = bench.parse_args(["--servers", "stanzad,prosody", "--login-users", "10"])
    assert o.server_list == ["stanzad", "prosody"] and o.peer_list == ["prosody"]
    for bad in (["--servers", "openfire"], ["--servers", "prosody,prosody"],
                ["--servers", "prosody", "--target", "127.0.0.1:5222"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad + ["--login-users", "10"])


def test_idle_size_options():
    o = bench.parse_args(["--idle-clients", "2000,20000", "--idle-tls-clients", "0",
                          "--login-users", "10"])
    assert o.idle_list == [2000, 20000] and o.idle_tls_list == [] and o.idle_clients == 20000
    # The reconnect storm (in the default set) seeds its devices too.
    o = bench.parse_args(["--idle-clients", "10", "--idle-tls-clients", "5,300",
                          "--login-users", "10", "--source-spread", "0",
                          "--reconnect-devices", "100"])
    assert o.idle_clients == 300 and o.idle_tls_list == [5, 300] and o.source_spread == 0
    o = bench.parse_args(["--idle-clients", "10", "--idle-tls-clients", "0",
                          "--login-users", "10"])
    assert "reconnect" in o.scenarios and o.reconnect_devices == 5000
    assert o.idle_clients == 5000 and o.reconnect_variant_list == ["resume", "relogin"]
    o = bench.parse_args(["--idle-clients", "10", "--idle-tls-clients", "0",
                          "--login-users", "10", "--scenario", "idle"])
    assert o.idle_clients == 10
    for bad in (["--idle-clients", "many"], ["--idle-clients", "0"], ["--idle-clients", ""],
                ["--source-spread", "-1"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad + ["--login-users", "10"])


def _reconnect(variant, back, resumed, us):
    return {"scenario": "reconnect", "server": "stanzad",
            "params": {"variant": variant, "devices": 2000, "threads": 32,
                       "tls_resume": variant == "resume"},
            "devices_back": back, "failures": 2000 - back, "resumed": resumed,
            "new_sessions": back - resumed, "tls_resumed": resumed,
            "reconnects_per_s": 4000.0, "time_to_all_back_s": 0.5,
            "ready_ms": {"p50": 5.0, "p99": 20.0}, "back_ms": {"p50": 250.0, "p99": 490.0},
            "round_trips": 3 if variant == "resume" else 8, "server_us_per_reconnect": us,
            "server_cpu_util": 0.9, "loadgen_cpu_util": 0.9, "other_cpu_util": 0.0,
            "logingen": {"last_error": "reconnect of u7 failed"}}


def test_report_reconnect_section():
    meta = {"servers": ["stanzad", "prosody"],
            "notes": ["reconnect on prosody: not measured (no TLS in the peers)"]}
    text = bench_report.render([_reconnect("resume", 2000, 2000, 100.0),
                                _reconnect("relogin", 1990, 0, 400.0)], meta)
    sec = text.split("## Reconnect storm", 1)[1].split("\n## ", 1)[0]
    assert "| figure | resume | relogin | resume vs relogin |" in sec
    assert "| server CPU per reconnect, us | 100 | 400 | 4.0x |" in sec
    assert "| sessions resumed (`<resumed/>`) | 2,000 | 0 | - |" in sec
    assert "relogin: 1,990 of 2,000 devices came back (reconnect of u7 failed)" in sec
    assert "- reconnect on prosody: not measured" in text
    # Without its results the report has no such section.
    assert "Reconnect storm" not in bench_report.render([], {"servers": ["stanzad"]})


def _idle(n, transport, per, ready=None):
    return {"scenario": "idle", "server": "stanzad",
            "params": {"clients": n, "transport": transport},
            "ready": n if ready is None else ready, "rss_bytes_per_conn": per,
            "heap_bytes_per_conn": per - 100, "kernel_slab_bytes_per_conn": 9000,
            "kernel_tcp_mem_bytes_per_conn": 0, "rss_loaded_kib": n * per // 1024}


def test_report_idle_plain_and_tls():
    meta = {"servers": ["stanzad"], "host": HOST}
    # The largest runs decide; a small run's noise does not.
    res = [_idle(2000, "plain TCP", 5700), _idle(1000000, "plain TCP", 2600),
           _idle(100000, "Direct TLS 1.3", 11000)]
    lines = bench_report.render(res, meta).splitlines()

    def row(prefix):
        return next(line for line in lines if line.startswith(prefix))
    r = row("| RSS per idle plain connection <= 4 KiB")
    assert "2,600 B/conn at 1,000,000 connections" in r and "slab 9,000 B/conn" in r
    assert "| yes |" in r
    assert "| yes |" in row("| RSS per idle TLS connection <= 12 KiB")
    r = row("| 100,000 TLS and 1,000,000 plain connections held")
    assert "1,000,000 plain and 100,000 TLS" in r and "| yes |" in r
    # Plain sections first, then TLS; every size its own section.
    heads = [line for line in lines if line.startswith("### Idle")]
    assert heads == ["### Idle connections, plain TCP (2,000 clients)",
                     "### Idle connections, plain TCP (1,000,000 clients)",
                     "### Idle connections, Direct TLS 1.3 (100,000 clients)"]
    assert "| kernel slab per connection (both ends), bytes | 9,000 |" in lines
    # The TLS run logs 100,000 devices in: 10,000 take a tenth of its time.
    res[2]["login_s"] = 80.0
    lines = bench_report.render(res, meta).splitlines()
    r = row("| 10,000 devices logging in with TLS")
    assert "100,000 devices in 80.0 s" in r and "| yes |" in r
    # Fewer held than asked, or TLS over budget: not met.
    res = [_idle(1000000, "plain TCP", 2600, ready=999000),
           _idle(100000, "Direct TLS 1.3", 19000)]
    lines = bench_report.render(res, meta).splitlines()
    assert "| **no** |" in row("| 100,000 TLS and 1,000,000 plain")
    assert "| **no** |" in row("| RSS per idle TLS connection")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_loadgen_spreads_source_addresses(tmp_path):
    if not shutil.which("gcc") or not shutil.which("ss"):
        pytest.skip("needs gcc and ss (iproute2)")
    src = os.path.join(SCRIPTS, "..", "tests", "bench", "loadgen.c")
    lg = str(tmp_path / "loadgen")
    subprocess.run(["gcc", "-std=gnu11", "-D_GNU_SOURCE", "-O1", "-pthread", src, "-o", lg],
                   check=True, timeout=120)
    port = _free_port()
    sink = subprocess.Popen([lg, "sink", "--port", str(port)], stdout=subprocess.DEVNULL)
    run = None
    try:
        bench.wait_listening("127.0.0.1", port, sink, timeout=10)
        run = subprocess.Popen([lg, "run", "--mode", "idle", "-c", "7", "--first", "4",
                                "--source-spread", "3", "--host", "127.0.0.1", "--port",
                                str(port), "--sync", "--login-timeout", "20"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = json.loads(run.stdout.readline())
        assert ready["event"] == "ready" and ready["ready"] == 7
        ss = subprocess.run(["ss", "-Htn", "state", "established", "( dport = :%d )" % port],
                            capture_output=True, text=True, timeout=10).stdout
        srcs = sorted(line.split()[2].rsplit(":", 1)[0] for line in ss.splitlines())
        # Clients 4..10, 3 per address: 4,5 on .3; 6,7,8 on .4; 9,10 on .5.
        assert srcs == ["127.0.0.3"] * 2 + ["127.0.0.4"] * 3 + ["127.0.0.5"] * 2, ss
        run.stdin.write("go\n")
        run.stdin.flush()
        assert json.loads(run.stdout.readline())["event"] == "result"
        assert run.wait(timeout=20) == 0
    finally:
        for p in (run, sink):
            if p and p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.parametrize("name", bench_peers.PEERS)
def test_peer_starts_and_is_set_up(name):
    missing = bench_peers.missing_tools(name)
    if missing:
        pytest.skip("%s not installed (scripts/install-deps.sh bench): no %s" %
                    (name, ", ".join(missing)))
    if name == "ejabberd" and os.getuid() == 0:
        import pwd
        try:
            pwd.getpwnam("ejabberd")
        except KeyError:
            pytest.skip("no ejabberd user to run ejabberd as")
    # Not under pytest's tmp_path (mode 0700): the ejabberd user must reach it.
    build = tempfile.mkdtemp(prefix="stanzad-bench-peer-")
    os.chmod(build, 0o755)
    opts = argparse.Namespace(build=build, domain="localhost", publisher="pub",
                              idle_clients=4, receivers=2, keep_state=False)
    peer = bench_peers.make_peer(name, opts, "")
    try:
        peer.start(bench.pinned)
        assert peer.pid and os.path.exists("/proc/%d" % peer.pid)
        info = peer.setup(["u0", "u1"], ["p0", "p1"], "pub", "bench", "bench")
        assert info["accounts"] == 5 and info["roster_items_both"] == 2
        # Registering again finds the accounts (conflict) and carries on.
        assert peer.setup(["u0"], [], "pub", "bench", None)["accounts"] == 2
    except bench_peers.PeerError as e:
        pytest.fail("%s: %s\n%s" % (name, e, peer.log_tail(40)))
    finally:
        rc = peer.stop()
        left = os.path.exists(peer.dir)
        shutil.rmtree(build, ignore_errors=True)
    assert rc == 0 and not left
