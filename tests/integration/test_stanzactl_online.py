"""stanzactl against the running daemon, over the control socket
(STATE_DIR/control): status, sessions list / kick, users list, roster
show, queues, certs show / reload, paths, each as text and with --json;
the one clear line when the daemon is not running; the socket's file
permissions (0600, or 0660 with control_group) as its access control; the
line protocol itself (unknown commands, oversized and empty requests);
a stale socket left by a crash; and the offline user commands still
working beside it."""
import grp
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import time

import pytest

from harness import (DOMAIN, NS_STREAMS_ERR, STANZACTL, STANZAD, RawStream, StanzadServer,
                     ServerError, StreamClosed, WAIT, client_tls_context, login, q, tostr, SPREAD_WORKERS)

NS_ROSTER = "jabber:iq:roster"
ONLINE = [["status"], ["sessions", "list"], ["users", "list"], ["queues"], ["certs", "show"],
          ["paths"], ["roster", "show", "nobody"], ["sessions", "kick", "nobody@localhost"],
          ["certs", "reload"]]


def ctl(srv_or_dir, *args, json_out=False, timeout=30):
    state = srv_or_dir.state_dir if hasattr(srv_or_dir, "state_dir") else str(srv_or_dir)
    cmd = [STANZACTL, "--state-dir", state] + (["--json"] if json_out else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def ctl_json(srv, *args):
    r = ctl(srv, *args, json_out=True)
    assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
    return json.loads(r.stdout)


def raw_request(path, data, read_timeout=WAIT):
    """Sends bytes on the control socket; returns the decoded answer object."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(read_timeout)
    s.connect(path)
    try:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    finally:
        s.close()
    assert out.endswith(b"\n") and out.count(b"\n") == 1, out
    return json.loads(out)


def control_path(srv):
    return os.path.join(srv.state_dir, "control")


# --------------------------------------------------------------------------
# No daemon
# --------------------------------------------------------------------------

@pytest.mark.parametrize("args", ONLINE, ids=lambda a: " ".join(a))
def test_online_commands_say_the_daemon_is_not_running(args, tmp_path):
    r = ctl(tmp_path, *args)
    assert r.returncode == 1, r
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "not running" in lines[0], r.stderr
    assert str(tmp_path / "control") in lines[0]


def test_json_flag_does_not_change_the_not_running_line(tmp_path):
    r = ctl(tmp_path, "status", json_out=True)
    assert r.returncode == 1 and r.stdout == "" and "not running" in r.stderr


def test_usage_errors_exit_2(tmp_path):
    for args in (["sessions"], ["sessions", "nuke"], ["roster", "show"],
                 ["status", "extra"], ["sessions", "kick"]):
        r = ctl(tmp_path, *args)
        assert r.returncode == 2, (args, r)


def test_offline_user_commands_still_work_beside_the_daemon(server):
    user = "offl%d" % os.getpid()
    r = server.stanzactl("user", "add", user, stdin="pw-offline\n")
    assert r.returncode == 0, r
    r = server.stanzactl("user", "list")
    assert r.returncode == 0 and user in r.stdout.split()
    # ... and the online view sees the account the offline command made.
    users = ctl_json(server, "users", "list")["users"]
    assert any(u["user"] == user and u["online"] is False for u in users)
    assert server.stanzactl("user", "del", user).returncode == 0


# --------------------------------------------------------------------------
# status, paths
# --------------------------------------------------------------------------

def test_status_shows_version_uptime_workers_paths_and_storage(server):
    st = ctl_json(server, "status")
    assert re.match(r"^\d+\.\d+", st["version"])
    assert st["domain"] == DOMAIN
    assert st["pid"] == server.proc.pid
    assert 0 <= st["uptime_seconds"] < 3600
    # One worker per online CPU unless --workers says otherwise (the suite may
    # run every daemon with it: STANZAD_TEST_ARGS).
    extra = os.environ.get("STANZAD_TEST_ARGS", "").split()
    nworkers = (int(extra[extra.index("--workers") + 1]) if "--workers" in extra[:-1]
                else min(os.cpu_count() or 1, 64))
    assert [w["id"] for w in st["workers"]] == list(range(nworkers))
    assert st["connections"] == sum(w["connections"] for w in st["workers"])
    assert set(st["storage"]) >= {"queue_depth", "requests", "commits", "failures"}
    paths = {p["name"]: p for p in st["kernel_paths"]}
    assert paths["io_uring"]["active"] is True
    assert "ktls" in paths
    # A path that is off says why.
    for p in paths.values():
        if not p["active"]:
            assert p["reason"], p
    kinds = {l["kind"] for l in st["listeners"]}
    assert {"c2s", "c2s_tls", "http", "control"} <= kinds
    assert st["log"]["target"] == "stderr"
    text = ctl(server, "status")
    assert text.returncode == 0
    assert "stanzad %s, domain %s" % (st["version"], DOMAIN) in text.stdout
    assert "io_uring" in text.stdout and "kernel paths:" in text.stdout


def test_paths_lists_each_kernel_path_with_its_reason(server):
    paths = ctl_json(server, "paths")["paths"]
    names = [p["name"] for p in paths]
    assert "io_uring" in names and "ktls" in names and "reuseport_steering" in names
    text = ctl(server, "paths").stdout
    for p in paths:
        line = [l for l in text.splitlines() if l.split()[0] == p["name"]]
        assert line, text
        assert ("active" if p["active"] else "off") in line[0]


# --------------------------------------------------------------------------
# sessions, users
# --------------------------------------------------------------------------

def test_sessions_list_and_kick(make_server):
    srv = make_server()
    u, p, bare = srv.new_account("kick")
    a, ja = login(srv.c2s_port, u, p, resource="phone")
    b, jb = login(srv.c2s_port, u, p, resource="laptop")
    try:
        a.send("<presence><priority>5</priority></presence>")
        sessions = {s["jid"]: s for s in ctl_json(srv, "sessions", "list")["sessions"]}
        assert set(sessions) == {ja, jb}
        sa = sessions[ja]
        assert sa["transport"] == "c2s" and sa["tls"] in ("userspace", "ktls")
        assert sa["detached"] is False and sa["stream_management"] is False
        assert re.match(r"^127\.0\.0\.1:\d+$", sa["peer"])
        text = ctl(srv, "sessions", "list").stdout
        assert ja in text and jb in text and "JID" in text.splitlines()[0]

        # A full JID ends that session only, with policy-violation.
        r = ctl(srv, "sessions", "kick", ja)
        assert r.returncode == 0 and ("session %s ended" % ja) in r.stdout, r
        assert a.stream_error() == "policy-violation"
        srv.wait_log(r"event=control\.kick jid=%s" % re.escape(ja))
        left = [s["jid"] for s in ctl_json(srv, "sessions", "list")["sessions"]]
        assert left == [jb]
        # A bare JID ends every session of the account.
        assert ctl_json(srv, "sessions", "kick", bare)["kicked"] == [jb]
        assert b.stream_error() == "policy-violation"
        # Nothing left to kick: one line, exit 1.
        r = ctl(srv, "sessions", "kick", bare)
        assert r.returncode == 1 and "no session" in r.stderr
        assert ctl_json(srv, "sessions", "list")["sessions"] == []
        assert ctl(srv, "sessions", "list").stdout.strip() == "no sessions"
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("jid", ["not a jid", "@localhost", "user@other.example", "localhost"])
def test_kick_refuses_bad_or_foreign_jids(server, jid):
    r = ctl(server, "sessions", "kick", jid)
    assert r.returncode in (1, 2) and r.stderr.count("\n") == 1, r


def test_users_list_shows_online_state(make_server):
    srv = make_server()
    ua, pa, _ = srv.new_account("ul")
    ub, pb, _ = srv.new_account("ul")
    a, _ = login(srv.c2s_port, ua, pa, resource="r1")
    a2, _ = login(srv.c2s_port, ua, pa, resource="r2")
    try:
        res = ctl_json(srv, "users", "list")
        users = {u["user"]: u for u in res["users"]}
        assert users[ua]["online"] is True and users[ua]["sessions"] == 2
        assert users[ua]["jid"] == "%s@%s" % (ua, DOMAIN)
        assert users[ub]["online"] is False and users[ub]["sessions"] == 0
        assert res["total"] == len(res["users"]) and res["truncated"] is False
        text = ctl(srv, "users", "list").stdout
        assert re.search(r"^%s\s+online \(2 sessions\)$" % ua, text, re.M), text
        assert re.search(r"^%s\s+offline$" % ub, text, re.M), text
    finally:
        a.close()
        a2.close()


def spread_server(make_server):
    """Two workers, accounts placed by hash whatever STANZAD_TEST_ARGS says
    (home_of() tells each account's worker)."""
    return make_server("--workers", str(SPREAD_WORKERS), "--homes", "hash", suite_args=False)


def test_sessions_and_users_of_every_worker(make_server):
    srv = spread_server(make_server)
    (u0, p0, j0), (u1, p1, j1) = [srv.new_account("spr", home=k, workers=2) for k in (0, 1)]
    a, ja = login(srv.c2s_port, u0, p0)
    b, jb = login(srv.c2s_port, u1, p1, resource="one")
    b2, jb2 = login(srv.c2s_port, u1, p1, resource="two")
    try:
        res = ctl_json(srv, "sessions", "list")
        sessions = {s["jid"]: s for s in res["sessions"]}
        assert set(sessions) == {ja, jb, jb2} and res["total"] == 3, res
        assert sessions[ja]["worker"] == 0 and sessions[jb]["worker"] == 1, res
        users = {u["user"]: u for u in ctl_json(srv, "users", "list")["users"]}
        assert users[u0]["sessions"] == 1 and users[u1]["sessions"] == 2, users
        assert ctl_json(srv, "status")["sessions"] == 3

        # Kicked at the account's home; the answer names what ended.
        assert ctl_json(srv, "sessions", "kick", jb)["kicked"] == [jb]
        assert b.stream_error() == "policy-violation"
        assert b2.nothing_within(0.3)
        assert ctl_json(srv, "sessions", "kick", j1)["kicked"] == [jb2]
        assert b2.stream_error() == "policy-violation"
        r = ctl(srv, "sessions", "kick", j1)
        assert r.returncode == 1 and "no session" in r.stderr
        left = [s["jid"] for s in ctl_json(srv, "sessions", "list")["sessions"]]
        assert left == [ja]
        users = {u["user"]: u for u in ctl_json(srv, "users", "list")["users"]}
        assert users[u1]["online"] is False and users[u0]["online"] is True
    finally:
        a.close()
        b.close()
        b2.close()


# --------------------------------------------------------------------------
# roster, queues
# --------------------------------------------------------------------------

def test_roster_show_reads_the_stored_roster(make_server):
    srv = make_server()
    ua, pa, ja = srv.new_account("ros")
    ub, pb, jb = srv.new_account("ros")
    a, _ = login(srv.c2s_port, ua, pa)
    try:
        a.send("<iq type='set' id='r1'><query xmlns='%s'><item jid='%s' name='Bob B.'>"
               "<group>Friends</group><group>Work</group></item></query></iq>" % (NS_ROSTER, jb))
        while a.next().get("id") != "r1":
            pass
        a.send("<presence to='%s' type='subscribe'/>" % jb)
        deadline = time.monotonic() + WAIT
        while True:
            res = ctl_json(srv, "roster", "show", ua)
            if res["items"] and res["items"][0]["ask"] == "subscribe":
                break
            assert time.monotonic() < deadline, res
            time.sleep(0.05)
        item = res["items"][0]
        assert res["user"] == ua and res["total"] == 1 and res["version"] >= 2
        assert item["jid"] == jb and item["name"] == "Bob B."
        assert sorted(item["groups"]) == ["Friends", "Work"]
        assert item["subscription"] == "none" and item["approved"] is False
        # b's side: a request waits for an answer.
        assert ctl_json(srv, "roster", "show", jb)["pending_requests"] == [ja]
        text = ctl(srv, "roster", "show", ja).stdout
        assert "roster of %s" % ua in text and "Bob B." in text and "Friends, Work" in text
    finally:
        a.close()
    r = ctl(srv, "roster", "show", "nosuchuser")
    assert r.returncode == 1 and "no account 'nosuchuser'" in r.stderr
    r = ctl(srv, "roster", "show", "%s@other.example" % ua)
    assert r.returncode == 1 and "not a user" in r.stderr


def test_queues_count_offline_messages_per_account(make_server):
    srv = make_server()
    ua, pa, _ = srv.new_account("q")
    ub, _, jb = srv.new_account("q")
    assert ctl(srv, "queues").stdout.startswith("no offline messages")
    a, _ = login(srv.c2s_port, ua, pa)
    try:
        for i in range(3):
            a.send("<message to='%s' type='chat' id='q%d'><body>m%d</body></message>"
                   % (jb, i, i))
        deadline = time.monotonic() + WAIT
        while True:
            res = ctl_json(srv, "queues")
            if res["messages"] == 3:
                break
            assert time.monotonic() < deadline, res
            time.sleep(0.05)
        assert res["queues"] == [{"user": ub, "offline": 3}]
        assert res["total"] == 1 and res["storage_queue_depth"] >= 0
        text = ctl(srv, "queues").stdout
        assert re.search(r"^%s\s+3$" % ub, text, re.M) and "3 messages for 1 account" in text
    finally:
        a.close()


# --------------------------------------------------------------------------
# certs
# --------------------------------------------------------------------------

def make_cert(directory, name, cn="localhost"):
    cert, key = os.path.join(directory, name + ".pem"), os.path.join(directory, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "30", "-subj", "/CN=" + cn,
                    "-addext", "subjectAltName=DNS:%s" % cn, "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=30)
    der = subprocess.run(["openssl", "x509", "-in", cert, "-outform", "DER"], check=True,
                         capture_output=True, timeout=30).stdout
    return cert, key, ":".join("%02X" % b for b in hashlib.sha256(der).digest())


def served_fingerprint(port):
    """sha256 of the certificate a new Direct TLS connection is given."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
        with client_tls_context(["xmpp-client"]).wrap_socket(raw, server_hostname=DOMAIN) as s:
            return ":".join("%02X" % b for b in hashlib.sha256(s.getpeercert(True)).digest())


def test_certs_show_and_reload(make_server, tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("no openssl command")
    cert_a, key_a, fp_a = make_cert(str(tmp_path), "a")
    cert_b, key_b, fp_b = make_cert(str(tmp_path), "b")
    live_cert, live_key = str(tmp_path / "live.pem"), str(tmp_path / "live.key")
    shutil.copy(cert_a, live_cert)
    shutil.copy(key_a, live_key)
    srv = make_server("--cert", live_cert, "--key", live_key)
    u, p, _ = srv.new_account("cert")

    shown = ctl_json(srv, "certs", "show")
    assert shown["cert_file"] == live_cert and shown["key_file"] == live_key
    c = shown["certificate"]
    assert c["sha256"] == fp_a and c["subject"] == "CN=localhost" and c["self_signed"] is True
    assert c["dns_names"] == ["localhost"] and c["key"].startswith("EC")
    assert 28 <= c["days_left"] <= 30
    assert served_fingerprint(srv.tls_port) == fp_a
    text = ctl(srv, "certs", "show").stdout
    assert "sha256:      %s" % fp_a in text and "(self-signed)" in text

    # A session made with A survives the reload; new handshakes get B.
    old, jid = login(srv.c2s_port, u, p)
    shutil.copy(cert_b, live_cert)
    shutil.copy(key_b, live_key)
    r = ctl(srv, "certs", "reload")
    assert r.returncode == 0 and "certificate reloaded" in r.stdout and fp_b in r.stdout, r
    srv.wait_log(r"event=tls\.reload cert=%s sha256=%s" % (re.escape(live_cert), fp_b))
    assert served_fingerprint(srv.tls_port) == fp_b
    assert ctl_json(srv, "certs", "show")["certificate"]["sha256"] == fp_b
    old.send("<iq type='get' id='still'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert old.next().get("id") == "still"
    old.close()

    # A key that is not the certificate's: refused, B stays in use.
    shutil.copy(cert_a, live_cert)
    r = ctl(srv, "certs", "reload")
    assert r.returncode == 1 and "does not belong" in r.stderr and "unchanged" in r.stderr, r
    assert served_fingerprint(srv.tls_port) == fp_b
    # An unreadable certificate: the same.
    os.unlink(live_cert)
    r = ctl_json_fail(srv, "certs", "reload")
    assert "cannot read certificate" in r
    assert served_fingerprint(srv.tls_port) == fp_b
    srv.wait_log(r"event=tls\.reload_failed")


def ctl_json_fail(srv, *args):
    r = ctl(srv, *args, json_out=True)
    assert r.returncode == 1 and r.stdout == "", r
    assert r.stderr.count("\n") == 1, r.stderr
    return r.stderr


# --------------------------------------------------------------------------
# Every command with --json; the protocol
# --------------------------------------------------------------------------

@pytest.mark.parametrize("args", [a for a in ONLINE if a[0] not in ("roster", "sessions") or
                                  a[1] == "list"] + [["roster", "show", "__USER__"]],
                         ids=lambda a: " ".join(a))
def test_every_command_prints_json_with_the_flag(server, args):
    if "__USER__" in args:
        user, _, _ = server.new_account("js")
        args = [a.replace("__USER__", user) for a in args]
    if args == ["certs", "reload"]:
        args = ["certs", "show"]  # reload is tested above; the module server keeps its cert
    out = ctl_json(server, *args)
    assert isinstance(out, dict) and out


def test_protocol_answers_errors_as_json(server):
    path = control_path(server)
    r = raw_request(path, b"frobnicate\n")
    assert r["ok"] is False and "unknown command" in r["error"]
    r = raw_request(path, b"\n")
    assert r["ok"] is False and "empty" in r["error"]
    r = raw_request(path, b"status with args\n")
    assert r["ok"] is False
    r = raw_request(path, b"x" * 5000)
    assert r["ok"] is False and "longer than" in r["error"]
    r = raw_request(path, b"sta\0tus\n")
    assert r["ok"] is False
    r = raw_request(path, b"\xff\xfe status\n")     # not UTF-8: still a JSON error
    assert r["ok"] is False and "unknown command" in r["error"]
    r = raw_request(path, b"roster show \xc3\x28\n")
    assert r["ok"] is False
    r = raw_request(path, b"status\r\n")
    assert r["ok"] is True and r["result"]["domain"] == DOMAIN
    # Pipelined extra lines are ignored: one request, one answer per connection.
    r = raw_request(path, b"paths\nstatus\n")
    assert r["ok"] is True and "paths" in r["result"]
    server.wait_log(r"event=control\.request conn=\d+ uid=\d+ cmd=\"paths\" arg=-")


def test_half_sent_request_does_not_hold_the_loop(server):
    path = control_path(server)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(b"stat")      # never finished
    try:
        # Meanwhile others are served.
        assert raw_request(path, b"paths\n")["ok"] is True
        assert ctl(server, "status").returncode == 0
    finally:
        s.close()


# --------------------------------------------------------------------------
# Access control, lifecycle
# --------------------------------------------------------------------------

def test_socket_is_owner_only_by_default(server):
    st = os.stat(control_path(server))
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600


def other_group():
    """A group other than this process's own, or None."""
    mine = set(os.getgroups()) | {os.getgid()}
    for g in grp.getgrall():
        if g.gr_gid not in mine:
            return g
    return None


def test_control_group_makes_it_group_accessible(make_server):
    g = other_group()
    if g is None or os.geteuid() != 0:
        pytest.skip("needs root and a group to give the socket to")
    srv = make_server("--control-group", g.gr_name)
    st = os.stat(control_path(srv))
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == g.gr_gid
    assert ctl(srv, "status").returncode == 0


def test_unknown_control_group_is_a_config_error(tmp_path):
    r = subprocess.run([STANZAD, "--state-dir", str(tmp_path / "s"), "--control-group",
                        "no-such-group-here"], capture_output=True, text=True, timeout=WAIT)
    assert r.returncode == 2 and "control_group" in r.stderr, r


def test_other_users_are_refused_by_the_file_permissions(server, tmp_path):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run stanzactl as another user")
    # The socket's own mode must refuse, so make the path reachable to test just that.
    link = tmp_path / "ctl.sock"
    os.chmod(str(tmp_path), 0o755)
    os.symlink(control_path(server), str(link))
    st_dir = os.stat(server.state_dir)
    os.chmod(server.state_dir, 0o711)
    try:
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            STANZACTL, "--socket", str(link), "status"],
                           capture_output=True, text=True, timeout=WAIT)
    finally:
        os.chmod(server.state_dir, stat.S_IMODE(st_dir.st_mode))
    if "Permission denied" in r.stderr and "stanzactl" not in r.stderr:
        pytest.skip("the stanzactl binary is not executable by nobody here")
    assert r.returncode == 1 and "permission denied" in r.stderr, r


def test_custom_socket_path_and_off(make_server, tmp_path):
    path = str(tmp_path / "ctl.sock")
    srv = make_server("--control-socket", path)
    assert not os.path.exists(control_path(srv))
    r = subprocess.run([STANZACTL, "--socket", path, "--json", "status"], capture_output=True,
                       text=True, timeout=WAIT)
    assert r.returncode == 0 and json.loads(r.stdout)["domain"] == DOMAIN
    conf = tmp_path / "stanzad.conf"
    conf.write_text("state_dir = %s\ncontrol_socket = %s\n" % (srv.state_dir, path))
    r = subprocess.run([STANZACTL, "--config", str(conf), "paths"], capture_output=True,
                       text=True, timeout=WAIT)
    assert r.returncode == 0 and "io_uring" in r.stdout, r
    off = make_server("--control-socket", "off")
    assert not os.path.exists(control_path(off))
    assert "not running" in ctl(off, "status").stderr
    srv.stop()
    assert not os.path.exists(path)   # removed at exit


def test_stale_socket_is_replaced_and_a_live_one_is_not(tmp_path):
    a = StanzadServer(name="stanzad(a)").start()
    try:
        a.proc.send_signal(signal.SIGKILL)
        a.wait(WAIT)
        a.stop_requested = True
        assert os.path.exists(control_path(a))   # left behind by the crash
        b = StanzadServer(name="stanzad(b)", storage=a.storage)
        b.state_dir = a.state_dir
        b.log_path = os.path.join(b.state_dir, "stderr-b.log")
        b.start()
        try:
            assert ctl(b, "status").returncode == 0
            # A second daemon on the same state directory, not taking over
            # (hand-over off, handover.h), refuses to steal the socket.
            c = subprocess.run([STANZAD, "--state-dir", b.state_dir, "--listen-c2s",
                                "127.0.0.1:0", "--listen-c2s-tls", "127.0.0.1:0",
                                "--listen-http", "127.0.0.1:0", "--handover-socket", "off"],
                               capture_output=True, text=True, timeout=WAIT)
            assert c.returncode != 0 and "another process answers on the control socket" in \
                c.stderr, c
            assert ctl(b, "status").returncode == 0
        finally:
            b.stop()
    finally:
        shutil.rmtree(a.state_dir, ignore_errors=True)


def test_long_command_names_are_the_same_commands(server):
    """devices/rosters/certificates/kernel: the names the operators' guide uses."""
    assert ctl_json(server, "kernel") == ctl_json(server, "paths")
    assert ctl_json(server, "certificates", "show") == ctl_json(server, "certs", "show")
    a, b = ctl(server, "rosters", "show", "nobody"), ctl(server, "roster", "show", "nobody")
    assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr)
    assert "no account 'nobody'" in a.stderr
