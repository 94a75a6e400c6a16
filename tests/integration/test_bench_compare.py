"""make bench side by side with prosody and ejabberd (scripts/bench_peers.py)
and its report (scripts/bench_report.py), without running a benchmark.

- The report: targets met or not with what bounds the unmet ones, figures
  of every server side by side with ratios, from a results file.
- The options: --servers validated, peers refused with --target.
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
