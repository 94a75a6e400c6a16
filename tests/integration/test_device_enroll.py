"""Fleet enrollment: `stanzactl device import FILE.csv` (bulk, idempotent,
transactional), `stanzactl device list`, and the accounts it makes logging
in with their secrets or certificates."""
import json
import os
import shutil
import tempfile

import pytest

from harness import NS_CLIENT, login, q, tostr, uniq
from sasl2util import PkiCA, cert_context, connect_tls

NS_ROSTER = "jabber:iq:roster"


def write(tmp_path, name, text):
    p = os.path.join(str(tmp_path), name)
    with open(p, "w") as f:
        f.write(text)
    return p


def users(srv):
    r = srv.stanzactl("user", "list")
    assert r.returncode == 0, r.stderr
    return set(r.stdout.split())


def roster_items(s):
    s.send("<iq type='get' id='rg'><query xmlns='%s'/></iq>" % NS_ROSTER)
    el = s.expect(q(NS_CLIENT, "iq"))
    assert el.get("type") == "result", tostr(el)
    return {i.get("jid"): i.get("subscription")
            for i in el.find(q(NS_ROSTER, "query")).findall(q(NS_ROSTER, "item"))}


def db_rows(srv, sql):
    return srv.db_query(sql)


@pytest.fixture(scope="module")
def pki():
    if shutil.which("openssl") is None:
        pytest.skip("no openssl CLI")
    root = tempfile.mkdtemp(prefix="stanzad-enroll-pki-")
    yield PkiCA(root, "fleet")
    shutil.rmtree(root, ignore_errors=True)


def test_bad_line_rejects_the_whole_file(server, tmp_path):
    a, b, c = uniq("dev"), uniq("dev"), uniq("dev")
    before = users(server)
    bad = write(tmp_path, "bad.csv", "jid,credential,tags,owner\n"
                "%s@localhost,pw-a,site=1,\n"
                "not a jid,pw-b,,\n"
                "%s@localhost,pw-c,,\n" % (a, c))
    r = server.stanzactl("device", "import", bad)
    assert r.returncode == 1
    assert "line 3" in r.stderr and "nothing was changed" in r.stderr, r.stderr
    assert users(server) == before
    # A row that only the store can refuse (an owner that is no account): same.
    bad2 = write(tmp_path, "bad2.csv", "%s@localhost,pw-a,,\n%s@localhost,pw-b,,ghost%s@localhost\n"
                 % (a, b, c))
    r = server.stanzactl("device", "import", bad2)
    assert r.returncode == 1 and "line 2" in r.stderr and "not an account" in r.stderr, r.stderr
    assert users(server) == before
    assert not db_rows(server, "SELECT * FROM devices WHERE username IN ('%s', '%s')" % (a, b))
    # The same JID twice.
    bad3 = write(tmp_path, "bad3.csv", "%s@localhost,pw-a,,\n%s@localhost,pw-a2,,\n" % (a, a))
    r = server.stanzactl("device", "import", bad3)
    assert r.returncode == 1 and "line 2" in r.stderr and "line 1" in r.stderr, r.stderr


def test_import_login_and_idempotent_reimport(make_server, pki, tmp_path):
    srv = make_server("--client-ca", pki.cert)
    owner, opw, ojid = srv.new_account("owner")
    d1, d2, d3 = uniq("sensor"), uniq("valve"), uniq("meter")
    cert, key, fp = pki.issue(d3)  # no JID inside: the enrolled fingerprint maps it
    text = ("jid,credential,tags,owner\n"
            "%s@localhost,secret-%s,\"site=lab;kind=temp\",%s\n"
            "%s@localhost,\"p,w %s\",kind=valve,\n"
            "%s@localhost,%s,kind=meter site=lab,%s\n" % (d1, d1, ojid, d2, d2, d3, fp, ojid))
    good = write(tmp_path, "fleet.csv", text)
    r = srv.stanzactl("device", "import", good)
    assert r.returncode == 0, r.stderr
    assert "3 created, 0 updated, 0 unchanged" in r.stdout, r.stdout

    # Secrets log in with SCRAM; the certificate with EXTERNAL.
    s1, jid1 = login(srv.c2s_port, d1, "secret-" + d1)
    s2, _ = login(srv.c2s_port, d2, "p,w " + d2)
    s2.close()
    s3, _ = connect_tls(srv.c2s_port, ctx=cert_context(cert, key))
    s3.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
    assert s3.sasl_next()[0] == "success"
    s3.close()

    # The owner and its devices are contacts both ways.
    assert roster_items(s1) == {ojid: "both"}
    so, _ = login(srv.c2s_port, owner, opw)
    assert roster_items(so) == {"%s@localhost" % d1: "both", "%s@localhost" % d3: "both"}

    # Idempotent: the same file again changes nothing.
    r = srv.stanzactl("device", "import", good)
    assert r.returncode == 0 and "0 created, 0 updated, 3 unchanged" in r.stdout, r.stdout

    # device list: tags, owner; d1 is online (the control socket answers).
    r = srv.stanzactl("--json", "device", "list")
    assert r.returncode == 0, r.stderr
    rows = {d["jid"]: d for d in json.loads(r.stdout)}
    assert rows["%s@localhost" % d1]["tags"] == ["kind=temp", "site=lab"]
    assert rows["%s@localhost" % d1]["owner"] == ojid
    assert rows["%s@localhost" % d3]["certificates"] == 1
    if rows["%s@localhost" % d1]["online"] is None:
        assert "online state unavailable" in r.stderr
    else:
        assert rows["%s@localhost" % d1]["online"] is True
        assert rows["%s@localhost" % d2]["online"] is False
        assert rows["%s@localhost" % d2]["last_seen"] != "never"  # it logged out
    r = srv.stanzactl("device", "list")
    assert r.returncode == 0 and d1 in r.stdout and "kind=valve" in r.stdout, r.stdout
    s1.close()
    so.close()

    # An update: d2 gets a new secret and d1 loses its owner; d3 unchanged.
    text2 = ("%s@localhost,secret-%s,\"site=lab;kind=temp\",\n"
             "%s@localhost,new-secret,kind=valve,\n"
             "%s@localhost,%s,kind=meter site=lab,%s\n" % (d1, d1, d2, d3, fp, ojid))
    r = srv.stanzactl("device", "import", write(tmp_path, "fleet2.csv", text2))
    assert r.returncode == 0 and "0 created, 2 updated, 1 unchanged" in r.stdout, r.stdout
    s2, _ = login(srv.c2s_port, d2, "new-secret")
    s2.close()
    so, _ = login(srv.c2s_port, owner, opw)
    assert roster_items(so)["%s@localhost" % d1] == "none"
    so.close()


def test_existing_account_is_not_adopted(server, tmp_path):
    """An account registered before the import (a squatter on a device's
    JID, or a person's) is refused: no new secret, no certificate."""
    user, pw, jid = server.new_account("squat")
    r = server.stanzactl("device", "import", write(tmp_path, "squat.csv",
                                                   "%s,new-secret,,\n" % jid))
    assert r.returncode == 1 and "line 1" in r.stderr and "not enrolled" in r.stderr, r.stderr
    s, _ = login(server.c2s_port, user, pw)
    s.close()
    assert not db_rows(server, "SELECT * FROM devices WHERE username = '%s'" % user)


def test_import_usage_errors(server, tmp_path):
    r = server.stanzactl("device", "import")
    assert r.returncode == 2
    r = server.stanzactl("device", "import", os.path.join(str(tmp_path), "missing.csv"))
    assert r.returncode == 1 and "cannot read" in r.stderr
    r = server.stanzactl("device", "revoke", "not-a-fingerprint")
    assert r.returncode == 1
