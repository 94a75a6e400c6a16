"""`make compliance` (scripts/compliance.py): the XEP-0479 2023 Advanced
Server table, judged from the running server's own answers. The
requirements this server implements show as met; a failed login or an
unreachable server exit with status 2 and no table."""
import json
import os
import subprocess
import sys

from harness import DOMAIN

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "compliance.py")
MET = {"Core features", "TLS", "Direct TLS", "Feature discovery", "Feature broadcasts",
       "Event publishing", "Web connection mechanisms", "vcard-temp",
       "Outbound message synchronization", "User blocking", "Group chat",
       "Advanced group chat: MUC archive", "Advanced group chat: self-ping",
       "Persistent storage of private data via PubSub", "Private XML storage",
       "Stream management", "History storage / retrieval", "File upload",
       "Client state indication", "Third party push notifications",
       "STUN/TURN server discovery", "User avatar compatibility",
       "Advanced group chat: bookmarks"}


def run(server, user, pwfile, *extra):
    return subprocess.run([sys.executable, SCRIPT, "--domain", DOMAIN, "--user", user,
                           "--password-file", str(pwfile), "--port", str(server.c2s_port)] +
                          list(extra), capture_output=True, text=True, timeout=60)


def test_table_from_the_servers_answers(server, tmp_path):
    user, pw, _ = server.new_account("comp")
    pwfile = tmp_path / "pw"
    pwfile.write_text(pw + "\n")
    r = run(server, user, pwfile, "--tls-port", str(server.tls_port),
            "--http-port", str(server.http_port), "--json")
    assert r.returncode in (0, 1), r.stderr
    rows = json.loads(r.stdout)
    met = {row["feature"] for row in rows if row["met"]}
    assert MET <= met, sorted(MET - met)
    assert (r.returncode == 0) == all(row["met"] for row in rows)
    # Not given a component port: that row is 'not checked', never 'met'.
    comp = [row for row in rows if row["providers"] == "XEP-0114"]
    assert comp and comp[0]["met"] is None
    text = run(server, user, pwfile).stdout
    assert "XEP-0357" in text and "XEP-0215" in text and "of 26 met" in text


def test_bad_login_and_unreachable_server(server, tmp_path):
    user, pw, _ = server.new_account("comp")
    pwfile = tmp_path / "pw"
    pwfile.write_text("wrong-" + pw + "\n")
    r = run(server, user, pwfile)
    assert r.returncode == 2 and "failed" in r.stderr and r.stdout == ""
    pwfile.write_text(pw + "\n")
    r = subprocess.run([sys.executable, SCRIPT, "--domain", DOMAIN, "--user", user,
                        "--password-file", str(pwfile), "--port", "1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
