"""Command-line behaviour of stanzad and stanzactl: bad input gets one clear
line and a non-zero exit, never a crash; stanzactl manages accounts."""

import os
import signal
import socket
import subprocess
import tempfile

import pytest

BUILD = os.environ.get("STANZAD_BUILD", os.path.join(os.path.dirname(__file__), "../../build"))
STANZAD = os.path.join(BUILD, "stanzad")
STANZACTL = os.path.join(BUILD, "stanzactl")


def run(args, stdin=None, timeout=10):
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=timeout)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_one_clear_line(proc, *needles):
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert lines, "no message on stderr"
    # No crash: a signal would show as a negative return code.
    assert proc.returncode > 0, proc.returncode
    text = "\n".join(lines)
    for n in needles:
        assert n in text, text


@pytest.mark.parametrize("args,needle", [
    (["--no-such-flag", "1"], "unknown option '--no-such-flag'"),
    (["--workers", "zero"], "is not a number"),
    (["--registration", "perhaps"], "must be open or closed"),
    (["--listen-c2s", "nowhere"], "listen_c2s 'nowhere' is not ADDR:PORT"),
    (["--domain", "not a domain"], "is not a valid XMPP domain"),
    (["--domain"], "needs a value"),
    (["stray"], "unexpected argument 'stray'"),
])
def test_bad_flags_exit_2_with_one_line(args, needle):
    p = run([STANZAD] + args)
    assert p.returncode == 2
    assert_one_clear_line(p, needle)
    assert len(p.stderr.strip().splitlines()) == 1


def test_unreadable_config_file_is_reported():
    p = run([STANZAD, "--config", "/nonexistent/stanzad.conf"])
    assert_one_clear_line(p, "cannot read config file /nonexistent/stanzad.conf")


def test_config_file_errors_name_the_line(tmp_path):
    conf = tmp_path / "stanzad.conf"
    conf.write_text("domain = example.org\n\nbogus_key = 1\n")
    p = run([STANZAD, "--config", str(conf)])
    assert p.returncode == 2
    assert_one_clear_line(p, f"{conf}:3: unknown key 'bogus_key'")


def test_port_in_use_is_reported(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        p = run([STANZAD, "--state-dir", str(tmp_path / "state"),
                 "--listen-c2s", f"127.0.0.1:{port}", "--listen-c2s-tls", "off"])
    assert p.returncode == 1
    assert_one_clear_line(p, f"cannot listen on 127.0.0.1:{port}", "Address already in use")


def test_state_dir_that_is_a_file_is_reported(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    p = run([STANZAD, "--state-dir", str(f), "--listen-c2s", f"127.0.0.1:{free_port()}",
             "--listen-c2s-tls", "off"])
    assert p.returncode == 1
    assert_one_clear_line(p, "cannot open storage in")


def test_bad_certificate_is_reported(tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_text("not a certificate\n")
    p = run([STANZAD, "--state-dir", str(tmp_path / "s"), "--cert", str(cert), "--key", str(cert),
             "--listen-c2s", f"127.0.0.1:{free_port()}", "--listen-c2s-tls", "off"])
    assert p.returncode == 1
    assert "cannot load certificate" in p.stderr


def test_help_lists_every_flag():
    p = run([STANZAD, "--help"])
    assert p.returncode == 0
    for flag in ("--domain", "--state-dir", "--listen-c2s", "--listen-c2s-tls", "--registration",
                 "--workers", "--log-level", "--require-tls", "--cert", "--key", "--config"):
        assert flag in p.stdout


def test_sigterm_stops_an_idle_server_cleanly(tmp_path):
    port = free_port()
    proc = subprocess.Popen([STANZAD, "--state-dir", str(tmp_path / "s"),
                             "--listen-c2s", f"127.0.0.1:{port}", "--listen-c2s-tls", "off"],
                            stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    break
                import time
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "event=server.stop status=0" in err
    # The generated certificate and the database are in the state dir, private.
    st = os.stat(tmp_path / "s")
    assert st.st_mode & 0o777 == 0o700
    assert os.stat(tmp_path / "s" / "key.pem").st_mode & 0o077 == 0


def test_stanzactl_manages_accounts(tmp_path):
    sd = str(tmp_path / "state")
    p = run([STANZACTL, "--state-dir", sd, "user", "add", "Alice"], stdin="pw-1\n")
    assert p.returncode == 0, p.stderr
    p = run([STANZACTL, "--state-dir", sd, "user", "add", "bob@localhost"], stdin="pw-2\n")
    assert p.returncode == 0, p.stderr
    p = run([STANZACTL, "--state-dir", sd, "user", "list"])
    assert p.returncode == 0
    # Usernames are normalized (case-folded, localpart of a bare JID).
    assert p.stdout.split() == ["alice", "bob"]
    p = run([STANZACTL, "--state-dir", sd, "user", "add", "alice"], stdin="x\n")
    assert p.returncode == 1
    assert "already exists" in p.stderr
    p = run([STANZACTL, "--state-dir", sd, "user", "passwd", "alice"], stdin="pw-3\n")
    assert p.returncode == 0, p.stderr
    p = run([STANZACTL, "--state-dir", sd, "user", "passwd", "nobody"], stdin="pw\n")
    assert p.returncode == 1
    p = run([STANZACTL, "--state-dir", sd, "user", "del", "bob"])
    assert p.returncode == 0
    p = run([STANZACTL, "--state-dir", sd, "user", "list"])
    assert p.stdout.split() == ["alice"]
    p = run([STANZACTL, "--state-dir", sd, "user", "del", "bob"])
    assert p.returncode == 1


def test_stanzactl_never_stores_the_password(tmp_path):
    sd = tmp_path / "state"
    secret = "correct horse battery staple"
    assert run([STANZACTL, "--state-dir", str(sd), "user", "add", "carol"],
               stdin=secret + "\n").returncode == 0
    for name in os.listdir(sd):
        data = (sd / name).read_bytes()
        assert secret.encode() not in data, name


@pytest.mark.parametrize("args,stdin", [
    (["user"], None),
    (["user", "frobnicate", "x"], None),
    (["nothing"], None),
    (["user", "add"], None),
])
def test_stanzactl_usage_errors_exit_2(tmp_path, args, stdin):
    p = run([STANZACTL, "--state-dir", str(tmp_path / "s")] + args, stdin=stdin)
    assert p.returncode == 2
    assert p.stderr.strip()


def test_stanzactl_rejects_empty_password_and_bad_names(tmp_path):
    sd = str(tmp_path / "s")
    p = run([STANZACTL, "--state-dir", sd, "user", "add", "dave"], stdin="\n")
    assert p.returncode != 0
    p = run([STANZACTL, "--state-dir", sd, "user", "add", "bad user"], stdin="pw\n")
    assert p.returncode == 1
    assert p.stderr.strip()
