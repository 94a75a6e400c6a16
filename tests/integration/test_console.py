"""The hub's web console at /console/ (daemon/console.c).

Over plain HTTP: the embedded page and its headers, admin-only login with
the stored credentials (wrong password, unknown account and non-admin get
the same answer; the password never reaches the log), the session cookie
(random, HttpOnly, SameSite=Strict, Path, Max-Age), JSON-only POSTs,
logout, the device snapshot with the provisioning rules, and the event
stream: a simulated device (scripts/iot_device_sim.py) comes online and
its readings arrive and change. `console = no` turns the route off.

End to end in headless Chromium (Debian's, driven by playwright-core from
tests/integration/console-driver): log in through the page, see the
device come online and a reading update; the screenshot goes to
BUILD/console-test/console.png. That test skips, saying why, only when
chromium, node or the driver's npm package are missing (make check
installs them through scripts/install-deps.sh console)."""
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from harness import BUILD, DOMAIN, REPO, StanzadServer, uniq, start_spread

SIM = os.path.join(REPO, "scripts", "iot_device_sim.py")
DRIVER_DIR = os.path.join(os.path.dirname(__file__), "console-driver")
JSON_HEADERS = {"Content-Type": "application/json"}


def request(port, method, path, body=None, headers=None, timeout=10):
    """(status, headers dict lower-case (Set-Cookie kept whole), body bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def login(port, user, password, content_type="application/json"):
    body = json.dumps({"user": user, "password": password})
    return request(port, "POST", "/console/login", body, {"Content-Type": content_type})


def cookie_of(headers):
    m = re.match(r"stanzad_console=([0-9a-f]*);", headers.get("set-cookie", ""))
    return m and m.group(1)


class EventStream:
    """GET /console/events, read event by event."""

    def __init__(self, port, token, timeout=30):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.request("GET", "/console/events",
                          headers={"Cookie": "stanzad_console=%s" % token})
        self.resp = self.conn.getresponse()

    def next(self):
        """(event, data as parsed JSON); comments (pings) are skipped."""
        event, data = None, []
        while True:
            line = self.resp.fp.readline()
            if not line:
                raise EOFError("the event stream ended")
            line = line.decode().rstrip("\n")
            if line.startswith(":"):
                continue
            if not line:
                if event:
                    return event, json.loads("".join(data))
                continue
            key, _, value = line.partition(": ")
            if key == "event":
                event = value
            elif key == "data":
                data.append(value)

    def until(self, pred, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event, snap = self.next()
            if event == "devices" and pred(snap):
                return snap
        raise AssertionError("no snapshot matched within %d s" % timeout)

    def close(self):
        self.conn.close()


def device(snap, jid):
    return next(d for d in snap["devices"] if d["jid"] == jid)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A hub: an admin, a plain user, and an enrolled device owned by the admin."""
    boss = uniq("boss")
    srv = StanzadServer(["--admin", "%s@%s" % (boss, DOMAIN)], name="stanzad(console)").start()
    srv.add_user(boss, "boss-secret-1")
    srv.add_user("plain", "plain-secret-1")
    dev = uniq("dev")
    csv = tmp_path_factory.mktemp("console") / "fleet.csv"
    csv.write_text("jid,credential,tags,owner\n%s@%s,devpw-1,kind=temp;site=lab,%s@%s\n" %
                   (dev, DOMAIN, boss, DOMAIN))
    r = srv.stanzactl("device", "import", str(csv))
    assert r.returncode == 0, r.stderr
    srv.boss, srv.dev = boss, dev
    yield srv
    srv.stop()


def start_sim(srv, prefix, seconds=60):
    """One simulated device, account PREFIX1: enroll it as such before."""
    return subprocess.Popen([sys.executable, SIM, "--server", "127.0.0.1:%d" % srv.c2s_port,
                             "--domain", DOMAIN, "--prefix", prefix, "--count", "1",
                             "--password", "devpw-1", "--duration", str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stop_sim(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_page_and_assets_are_served_with_safe_headers(hub):
    status, h, body = request(hub.http_port, "GET", "/console/")
    assert status == 200 and h["content-type"].startswith("text/html")
    assert b"console.js" in body and b"<form id=\"login-form\"" in body
    assert "default-src 'self'" in h["content-security-policy"]
    assert h["x-content-type-options"] == "nosniff" and h["cache-control"] == "no-store"
    for name, kind in (("console.js", "text/javascript"), ("console.css", "text/css")):
        status, h, body = request(hub.http_port, "GET", "/console/" + name)
        assert status == 200 and h["content-type"].startswith(kind) and body
    assert request(hub.http_port, "GET", "/console/nope.html")[0] == 404
    assert request(hub.http_port, "HEAD", "/console/")[0] == 200
    # Nothing about devices without a login.
    for path in ("/console/api/devices", "/console/events"):
        status, _, body = request(hub.http_port, "GET", path)
        assert status == 401 and b"log in" in body


def test_only_admins_log_in_and_the_password_is_never_logged(hub):
    mark = hub.log_size()
    refused = []
    for user, pw in ((hub.boss, "wrong-password-x"), ("plain", "plain-secret-1"),
                     ("nobody", "whatever-pw-1"), ("%s@elsewhere" % hub.boss, "boss-secret-1")):
        status, h, body = login(hub.http_port, user, pw)
        assert status == 403 and "set-cookie" not in h, (user, status, body)
        refused.append(json.loads(body)["error"])
    assert len(set(refused)) == 1  # the same answer whatever was wrong
    # POSTs must be JSON (no cross-site form can send it), bodies bounded.
    assert login(hub.http_port, hub.boss, "boss-secret-1", "text/plain")[0] == 415
    assert login(hub.http_port, hub.boss, "boss-secret-1",
                 "application/x-www-form-urlencoded")[0] == 415
    assert request(hub.http_port, "POST", "/console/login", "x" * 5000, JSON_HEADERS)[0] == 413
    assert request(hub.http_port, "POST", "/console/login", "{not json", JSON_HEADERS)[0] == 400
    assert request(hub.http_port, "GET", "/console/login")[0] == 405

    status, h, body = login(hub.http_port, hub.boss.upper(), "boss-secret-1")
    assert status == 200, body
    assert json.loads(body) == {"user": "%s@%s" % (hub.boss, DOMAIN)}
    cookie = h["set-cookie"]
    token = cookie_of(h)
    assert token and len(token) == 64
    for attr in ("HttpOnly", "SameSite=Strict", "Path=/console/", "Max-Age=28800"):
        assert attr in cookie, cookie
    assert "Secure" not in cookie  # plain HTTP here; HTTPS adds it
    # Each login gets its own random token.
    assert cookie_of(login(hub.http_port, hub.boss, "boss-secret-1")[1]) != token
    log = hub.log_text(mark)
    assert "console.login user=" in log and "console.login_failed" in log
    for secret in ("boss-secret-1", "wrong-password-x", "plain-secret-1", token):
        assert secret not in log


def test_logout_ends_the_session(hub):
    token = cookie_of(login(hub.http_port, hub.boss, "boss-secret-1")[1])
    auth = {"Cookie": "stanzad_console=" + token}
    assert request(hub.http_port, "GET", "/console/api/devices", headers=auth)[0] == 200
    # A forged or truncated token is nobody's.
    for bad in ("0" * 64, token[:-1], token + "0", ""):
        status = request(hub.http_port, "GET", "/console/api/devices",
                         headers={"Cookie": "a=b; stanzad_console=" + bad})[0]
        assert status == 401, bad
    ev = EventStream(hub.http_port, token)
    assert ev.next()[0] == "devices"
    # A cross-site form cannot log anyone out: POSTs must be JSON.
    assert request(hub.http_port, "POST", "/console/logout", "x=1",
                   dict(auth, **{"Content-Type": "application/x-www-form-urlencoded"}))[0] == 415
    # Other services' cookies on the same host are fine beside ours.
    others = {"Cookie": "grafana_session=%s; stanzad_console=%s; theme=dark" % ("g" * 300, token)}
    assert request(hub.http_port, "GET", "/console/api/devices", headers=others)[0] == 200
    status, h, _ = request(hub.http_port, "POST", "/console/logout", "{}",
                           dict(JSON_HEADERS, **auth))
    assert status == 200 and "Max-Age=0" in h["set-cookie"]
    assert request(hub.http_port, "GET", "/console/api/devices", headers=auth)[0] == 401
    # The open event stream of that login is told, then ended.
    try:
        while True:
            event, _ = ev.next()
            if event == "logout":
                break
        with pytest.raises(EOFError):
            ev.next()
    finally:
        ev.close()


def test_snapshot_and_live_events_follow_a_simulated_device(hub):
    jid = "%s@%s" % (hub.dev, DOMAIN)
    token = cookie_of(login(hub.http_port, hub.boss, "boss-secret-1")[1])
    status, h, body = request(hub.http_port, "GET", "/console/api/devices",
                              headers={"Cookie": "stanzad_console=" + token})
    assert status == 200 and h["content-type"] == "application/json"
    d = device(json.loads(body), jid)
    assert d["online"] is False and d["readings"] == [] and d["owner"] == "%s@%s" % (hub.boss, DOMAIN)
    assert d["tags"] == "kind=temp;site=lab" and isinstance(d["rules"], list)

    ev = EventStream(hub.http_port, token)
    assert ev.resp.status == 200
    assert ev.resp.getheader("Content-Type") == "text/event-stream"
    assert ev.resp.getheader("Content-Length") is None
    sim = None
    # The simulator names accounts PREFIX1..N: enroll one that fits.
    prefix = uniq("simdev")
    csv = os.path.join(hub.state_dir, "sim.csv")
    with open(csv, "w") as f:
        f.write("jid,credential,tags,owner\n%s1@%s,devpw-1,kind=sim,\n" % (prefix, DOMAIN))
    assert hub.stanzactl("device", "import", csv).returncode == 0
    sim_jid = "%s1@%s" % (prefix, DOMAIN)
    try:
        sim = start_sim(hub, prefix)
        snap = ev.until(lambda s: any(x["jid"] == sim_jid and x["online"] for x in s["devices"]))
        assert device(snap, sim_jid)["sessions"] == 1
        snap = ev.until(lambda s: device(s, sim_jid)["readings"])
        first = device(snap, sim_jid)
        names = {f["name"] for f in first["readings"]}
        assert {"Temperature", "Humidity"} <= names, first
        temp = next(f for f in first["readings"] if f["name"] == "Temperature")
        assert float(temp["value"]) and temp["unit"] == "\u00b0C"
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", first["readings_time"])
        # A new read-out every CONSOLE_POLL_MS: its time moves on.
        ev.until(lambda s: device(s, sim_jid)["readings_time"] != first["readings_time"])
        # Logged out: the device goes offline with a last-seen time.
        stop_sim(sim)
        snap = ev.until(lambda s: not device(s, sim_jid)["online"])
        assert device(snap, sim_jid)["last_seen"] >= int(time.time()) - 120
    finally:
        if sim:
            stop_sim(sim)
        ev.close()


def test_snapshot_shows_the_provisioning_rules(hub, loop, arun):
    """The owner's XEP-0324 rules for a device appear with it."""
    from iotutil import Clients, set_rule

    jid = "%s@%s" % (hub.dev, DOMAIN)
    cs = Clients(hub, loop)
    try:
        async def go():
            owner = await cs.client(user=hub.boss, password="boss-secret-1")
            await set_rule(owner, "canReadRule", jid, True, remoteJid="plain@" + DOMAIN)
            await set_rule(owner, "isFriendRule", jid, False, range="All")
        arun(go())
    finally:
        arun(cs.close())
    token = cookie_of(login(hub.http_port, hub.boss, "boss-secret-1")[1])
    _, _, body = request(hub.http_port, "GET", "/console/api/devices",
                         headers={"Cookie": "stanzad_console=" + token})
    rules = device(json.loads(body), jid)["rules"]
    kinds = {(r["kind"], r["range"], r["allow"], r["remote"]) for r in rules}
    assert len(rules) == 2, rules
    assert any(k[0] != "friend" and k[2] and k[3] == "plain@" + DOMAIN for k in kinds), kinds
    assert any(not k[2] and k[3] == "" for k in kinds), kinds


def test_sensor_data_from_others_is_not_taken(hub):
    """Only devices the console asked fill the readings: anyone else's
    <fields/> to the domain is answered as before (service-unavailable)."""
    from harness import login as xmpp_login, q
    s, _ = xmpp_login(hub.c2s_port, "plain", "plain-secret-1")
    try:
        s.send("<message to='%s' id='f1'><fields xmlns='urn:xmpp:iot:sensordata' seqnr='1' "
               "done='true'><node nodeId='n'><timestamp value='2026-01-01T00:00:00Z'>"
               "<numeric name='Temperature' momentary='true' value='99.9'/></timestamp>"
               "</node></fields></message>" % DOMAIN)
        m = s.expect(q("jabber:client", "message"))
        assert m.get("type") == "error" and m.get("id") == "f1"
        assert m.find(".//" + q("urn:ietf:params:xml:ns:xmpp-stanzas",
                                "service-unavailable")) is not None
    finally:
        s.close()
    token = cookie_of(login(hub.http_port, hub.boss, "boss-secret-1")[1])
    _, _, body = request(hub.http_port, "GET", "/console/api/devices",
                         headers={"Cookie": "stanzad_console=" + token})
    assert "99.9" not in body.decode()


def test_a_huge_cookie_header_costs_the_login_not_the_request(hub):
    """Cookies are the browser's: past 1 KiB they are dropped (no console
    session), while every route still answers (no 431)."""
    token = cookie_of(login(hub.http_port, hub.boss, "boss-secret-1")[1])
    huge = {"Cookie": "junk=%s; stanzad_console=%s" % ("j" * 3000, token)}
    assert request(hub.http_port, "GET", "/.well-known/host-meta", headers=huge)[0] == 200
    assert request(hub.http_port, "GET", "/console/", headers=huge)[0] == 200
    assert request(hub.http_port, "GET", "/console/api/devices", headers=huge)[0] == 401
    # Two Cookie headers are read as one list.
    c = http.client.HTTPConnection("127.0.0.1", hub.http_port, timeout=10)
    try:
        c.putrequest("GET", "/console/api/devices")
        c.putheader("Cookie", "a=1")
        c.putheader("Cookie", "stanzad_console=" + token)
        c.endheaders()
        r = c.getresponse()
        r.read()
        assert r.status == 200
    finally:
        c.close()


def test_cookie_is_secure_over_https(make_server):
    import ssl
    from harness import free_ports
    (https_port,) = free_ports(1)
    srv = make_server("--listen-https", "127.0.0.1:%d" % https_port, "--admin", "chief@" + DOMAIN)
    srv.add_user("chief", "chief-secret-1")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = http.client.HTTPSConnection("127.0.0.1", https_port, timeout=10, context=ctx)
    try:
        c.request("POST", "/console/login", json.dumps({"user": "chief",
                                                        "password": "chief-secret-1"}),
                  JSON_HEADERS)
        r = c.getresponse()
        r.read()
        assert r.status == 200
        assert "; Secure" in r.getheader("Set-Cookie")
    finally:
        c.close()
    # The plain listener's cookie cannot carry Secure (the browser would drop it).
    status, h, _ = login(srv.http_port, "chief", "chief-secret-1")
    assert status == 200 and "Secure" not in h["set-cookie"]


def test_console_no_turns_it_off(make_server):
    srv = make_server("--console", "no")
    assert request(srv.http_port, "GET", "/console/")[0] == 404
    assert login(srv.http_port, "a", "b")[0] == 404


def browser_or_skip():
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    node = shutil.which("node")
    if not chromium:
        pytest.skip("chromium is not installed (scripts/install-deps.sh console installs it)")
    if not node:
        pytest.skip("node is not installed (scripts/install-deps.sh console installs it)")
    if not os.path.isdir(os.path.join(DRIVER_DIR, "node_modules", "playwright-core")):
        pytest.skip("playwright-core is not installed in %s (scripts/install-deps.sh console "
                    "runs npm ci there)" % DRIVER_DIR)
    return node, chromium


def test_browser_logs_in_and_sees_a_device_come_online_and_update(hub):
    node, chromium = browser_or_skip()
    prefix = uniq("webdev")
    csv = os.path.join(hub.state_dir, "web.csv")
    with open(csv, "w") as f:
        f.write("jid,credential,tags,owner\n%s1@%s,devpw-1,kind=temp,%s@%s\n" %
                (prefix, DOMAIN, hub.boss, DOMAIN))
    assert hub.stanzactl("device", "import", csv).returncode == 0
    jid = "%s1@%s" % (prefix, DOMAIN)
    out_dir = os.path.join(BUILD, "console-test")
    os.makedirs(out_dir, exist_ok=True)
    shot = os.path.join(out_dir, "console.png")
    if os.path.exists(shot):
        os.unlink(shot)
    sim = start_sim(hub, prefix, 90)
    try:
        r = subprocess.run([node, "drive.mjs", "http://127.0.0.1:%d/console/" % hub.http_port,
                            hub.boss, "boss-secret-1", jid, shot], cwd=DRIVER_DIR,
                           capture_output=True, text=True, timeout=150,
                           env=dict(os.environ, CHROMIUM=chromium))
    finally:
        stop_sim(sim)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert lines, "driver said nothing: %s %s" % (r.stdout, r.stderr)
    seen = json.loads(lines[-1])
    assert r.returncode == 0 and "error" not in seen, (seen, r.stderr[-2000:])
    assert seen["steps"] == ["login form", "logged in", "online", "reading", "reading updated"]
    assert "Temperature" in seen["first"] and seen["first"] != seen["second"]
    assert seen["live"] == "live"
    # The page's script cannot read the session cookie.
    assert seen["scriptCanReadCookie"] is False
    assert {"name": "stanzad_console", "httpOnly": True, "sameSite": "Strict",
            "path": "/console/"} in seen["cookie"]
    assert seen["consoleErrors"] == []
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(shot) > 10000
    print("console screenshot: %s" % shot)


def test_readouts_reach_a_device_at_home_on_another_worker(tmp_path):
    """Two workers, homes by hash (whatever STANZAD_TEST_ARGS says): the
    console runs on worker 0 and the device is at home on worker 1, where
    its session is counted and asked for its read-outs."""
    from harness import home_of
    boss = uniq("boss")
    srv = start_spread("--admin", "%s@%s" % (boss, DOMAIN), name="stanzad(console, homes hash)")
    sim = ev = None
    try:
        srv.add_user(boss, "boss-secret-1")
        prefix = uniq("simdev")
        while home_of("%s1@%s" % (prefix, DOMAIN), 2) != 1:
            prefix = uniq("simdev")
        sim_jid = "%s1@%s" % (prefix, DOMAIN)
        csv = tmp_path / "sim.csv"
        csv.write_text("jid,credential,tags,owner\n%s,devpw-1,kind=sim,%s@%s\n" %
                       (sim_jid, boss, DOMAIN))
        assert srv.stanzactl("device", "import", str(csv)).returncode == 0
        token = cookie_of(login(srv.http_port, boss, "boss-secret-1")[1])
        ev = EventStream(srv.http_port, token)
        assert ev.resp.status == 200
        sim = start_sim(srv, prefix)
        snap = ev.until(lambda s: device(s, sim_jid)["online"])
        assert device(snap, sim_jid)["sessions"] == 1
        snap = ev.until(lambda s: device(s, sim_jid)["readings"])
        names = {f["name"] for f in device(snap, sim_jid)["readings"]}
        assert {"Temperature", "Humidity"} <= names, names
        # The API's snapshot counts it too.
        status, _, body = request(srv.http_port, "GET", "/console/api/devices",
                                  headers={"Cookie": "stanzad_console=" + token})
        assert status == 200 and device(json.loads(body), sim_jid)["sessions"] == 1
        stop_sim(sim)
        ev.until(lambda s: not device(s, sim_jid)["online"])
    finally:
        if sim:
            stop_sim(sim)
        if ev:
            ev.close()
        srv.stop()
