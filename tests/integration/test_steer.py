"""Reuseport steering (bpf/steer.bpf.c, daemon/bpf_steer.c) with the
running daemon: `stanzactl workers` (connections, drained, steered
connections per worker), new connections spread over the workers, a
drained worker getting none, and the fallback to the kernel's hash.

The daemon is started with --workers 2. Until it really runs two workers
(stanzactl status lists fewer), the tests that need two skip with
"daemon runs one worker", so they turn on by themselves when it does.
The steering checks need root (BPF); without it they skip too."""
import json
import os
import subprocess
import time

import pytest

from harness import STANZAD, WAIT, RawStream

ROOT = os.geteuid() == 0
NWORKERS = 2


def start(make_server, *args):
    """A daemon with NWORKERS workers, once its control socket listens (the
    harness waits for the client listeners only, which may come first)."""
    srv = make_server("--workers", str(NWORKERS), *args)
    srv.wait_log(r"event=control\.listen")
    return srv


def ctl_json(srv, *args):
    r = srv.stanzactl("--json", *args)
    assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
    return json.loads(r.stdout)


def need_workers(srv, n=NWORKERS):
    if len(ctl_json(srv, "status")["workers"]) < n:
        pytest.skip("daemon runs one worker")


def need_steering(srv):
    st = ctl_json(srv, "workers")["steering"]
    if not ROOT:
        pytest.skip("needs root (BPF)")
    assert st["active"], "steering is off: %s\n%s" % (st["reason"], srv.log_tail())


def open_streams(srv, n, source=None):
    streams = []
    for _ in range(n):
        s = RawStream(srv.c2s_port, source=source)
        s.open()
        streams.append(s)
    return streams


def wait_connections(srv, at_least):
    """The workers' answer once they count at_least connections in all."""
    deadline = time.monotonic() + WAIT
    while True:
        r = ctl_json(srv, "workers")
        if sum(w["connections"] for w in r["workers"]) >= at_least:
            return r
        assert time.monotonic() < deadline, r
        time.sleep(0.05)


def close_all(streams):
    for s in streams:
        s.close()


@pytest.fixture
def server2(make_server):
    return start(make_server)


def test_workers_lists_every_worker(server2):
    r = ctl_json(server2, "workers")
    assert [w["id"] for w in r["workers"]] == list(range(len(r["workers"])))
    for w in r["workers"]:
        assert set(w) >= {"id", "connections", "drained", "selected"}
        assert w["drained"] is False
    assert set(r["steering"]) >= {"active", "detail", "reason", "fallbacks"}
    text = server2.stanzactl("workers")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("steering: ")
    assert "WORKER" in text.stdout and "DRAINED" in text.stdout


def test_steering_state_is_a_kernel_path(server2):
    need_workers(server2)
    paths = {p["name"]: p for p in ctl_json(server2, "paths")["paths"]}
    st = ctl_json(server2, "workers")["steering"]
    assert paths["reuseport_steering"]["active"] == st["active"]
    assert "event=bpf.steer " in server2.log_text()


def test_connections_spread_over_the_workers(server2):
    need_workers(server2)
    need_steering(server2)
    streams = open_streams(server2, 20)
    try:
        r = wait_connections(server2, 20)
        conns = [w["connections"] for w in r["workers"]]
        assert all(c > 0 for c in conns), r
        assert sum(w["selected"] for w in r["workers"]) >= 20, r
    finally:
        close_all(streams)


def test_drained_worker_gets_no_new_connections(server2):
    need_workers(server2)
    need_steering(server2)
    r = server2.stanzactl("workers", "drain", "1")
    assert r.returncode == 0, r.stderr
    assert "worker 1 drained" in r.stdout
    before = ctl_json(server2, "workers")["workers"]
    assert before[1]["drained"] is True
    # The last worker taking connections cannot be drained.
    r = server2.stanzactl("workers", "drain", "0")
    assert r.returncode == 1 and "last one" in r.stderr, (r.stdout, r.stderr)
    streams = open_streams(server2, 12)
    try:
        after = wait_connections(server2, 12)["workers"]
        assert after[1]["selected"] == before[1]["selected"], after
        assert after[1]["connections"] == before[1]["connections"], after
        assert after[0]["connections"] >= 12, after
    finally:
        close_all(streams)
    r = server2.stanzactl("workers", "undrain", "1")
    assert r.returncode == 0, r.stderr
    assert ctl_json(server2, "workers")["workers"][1]["drained"] is False
    r = server2.stanzactl("workers", "drain", "7")
    assert r.returncode == 1 and "no worker" in r.stderr, r.stderr


def test_source_hash_keeps_a_source_on_one_worker(make_server):
    srv = start(make_server, "--steering", "source-hash")
    need_workers(srv)
    need_steering(srv)
    before = [w["selected"] for w in ctl_json(srv, "workers")["workers"]]
    streams = open_streams(srv, 8, source="127.0.0.9")
    try:
        r = wait_connections(srv, 8)
        got = [w["selected"] - b for w, b in zip(r["workers"], before)]
        assert sorted(got) == [0, 8], r
    finally:
        close_all(streams)


def test_steering_kernel_leaves_it_to_the_kernel(make_server):
    srv = start(make_server, "--steering", "kernel")
    st = ctl_json(srv, "workers")["steering"]
    assert st["active"] is False
    need_workers(srv)
    assert st["reason"] == "steering = kernel"
    r = srv.stanzactl("workers", "drain", "1")
    assert r.returncode == 1 and "steering is off" in r.stderr, r.stderr
    streams = open_streams(srv, 6)
    try:
        wait_connections(srv, 6)
    finally:
        close_all(streams)


def test_bpf_no_turns_steering_off(make_server):
    srv = start(make_server, "--bpf", "no")
    need_workers(srv)
    st = ctl_json(srv, "workers")["steering"]
    assert st["active"] is False and st["reason"] == "disabled (bpf = no)"


def test_unknown_steering_policy_is_refused(tmp_path):
    r = subprocess.run([STANZAD, "--state-dir", str(tmp_path), "--steering", "round-robin"],
                       capture_output=True, text=True, timeout=WAIT)
    assert r.returncode != 0
    assert "steering 'round-robin' must be least-loaded, source-hash or kernel" in r.stderr
