"""GET /metrics: the Prometheus text exposition (format 0.0.4) on the HTTP
listener.

Every scrape goes through a strict parser written here from the format's
grammar: HELP and TYPE once per family and before its samples, samples of
a family together, metric and label names, escaped label values, float
values, no duplicate series, histograms with increasing `le` bounds,
cumulative (non-decreasing) buckets ending in +Inf equal to _count, and a
_sum. On top of the grammar, the Prometheus naming conventions: the
stanzad_ prefix, _total on counters and only there, base units in the
names. Then known actions (logins, a failed login, messages, an offline
message, a stream error, stream-management resumption, connections in
each state) must move exactly the counters and gauges they should. Access
is loopback only unless metrics_allow says otherwise; metrics = no turns
the route off."""
import http.client
import math
import re
import socket
import struct
import time

import pytest

from harness import (DOMAIN, NS_STREAMS_ERR, RawStream, StreamClosed, WAIT, login, q, tostr,
                     uniq)

NS_SM = "urn:xmpp:sm:3"

# --------------------------------------------------------------------------
# The exposition format, strictly
# --------------------------------------------------------------------------

METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
LABEL_VALUE = r'"(?:[^"\\\n]|\\\\|\\"|\\n)*"'
SAMPLE_RX = re.compile(r"^(%s)(\{(?:%s=%s(?:,%s=%s)*,?)?\})? (\S+)( -?\d+)?$" %
                       (METRIC_NAME, LABEL_NAME, LABEL_VALUE, LABEL_NAME, LABEL_VALUE))
LABEL_RX = re.compile(r"(%s)=(%s)" % (LABEL_NAME, LABEL_VALUE))
HELP_RX = re.compile(r"^# HELP (%s) (.*)$" % METRIC_NAME)
TYPE_RX = re.compile(r"^# TYPE (%s) (counter|gauge|histogram|summary|untyped)$" % METRIC_NAME)
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class ExpositionError(AssertionError):
    pass


def parse_value(text, line):
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.match(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$", text):
        raise ExpositionError("bad sample value %r in %r" % (text, line))
    return float(text)


def unescape(v):
    return v[1:-1].replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def family_of(name, types):
    """The family a sample belongs to (histogram samples carry suffixes)."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and types.get(name[: -len(suffix)]) in ("histogram", "summary"):
            return name[: -len(suffix)]
    return name


def parse_exposition(text):
    """Parses and checks the whole text; returns {family: {"type", "help",
    "samples": [(name, labels dict, value)]}}."""
    if not text.endswith("\n"):
        raise ExpositionError("the exposition must end with a newline")
    families = {}
    types = {}
    current = None
    closed = set()  # families whose samples are over
    series = set()
    for line in text.split("\n")[:-1]:
        if line.startswith("#"):
            m = HELP_RX.match(line) or TYPE_RX.match(line)
            if not m:
                if line.startswith("# HELP") or line.startswith("# TYPE"):
                    raise ExpositionError("malformed comment %r" % line)
                continue
            name = m.group(1)
            fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
            if fam["samples"]:
                raise ExpositionError("HELP/TYPE of %s after its samples" % name)
            if line.startswith("# HELP"):
                if fam["help"] is not None:
                    raise ExpositionError("two HELP lines for %s" % name)
                fam["help"] = m.group(2)
            else:
                if fam["type"] is not None:
                    raise ExpositionError("two TYPE lines for %s" % name)
                fam["type"] = m.group(2)
                types[name] = m.group(2)
            if current and current != name:
                closed.add(current)
            current = name
            continue
        if not line.strip():
            raise ExpositionError("empty line in the exposition")
        m = SAMPLE_RX.match(line)
        if not m:
            raise ExpositionError("malformed sample line %r" % line)
        name, labeltext, value = m.group(1), m.group(2) or "", m.group(3)
        labels = {}
        for lm in LABEL_RX.finditer(labeltext):
            if lm.group(1) in labels:
                raise ExpositionError("label %s twice in %r" % (lm.group(1), line))
            labels[lm.group(1)] = unescape(lm.group(2))
        fam_name = family_of(name, types)
        if fam_name in closed:
            raise ExpositionError("samples of %s are not together (%r)" % (fam_name, line))
        if current and current != fam_name:
            closed.add(current)
        current = fam_name
        key = (name, tuple(sorted(labels.items())))
        if key in series:
            raise ExpositionError("duplicate series %r" % line)
        series.add(key)
        fam = families.setdefault(fam_name, {"type": None, "help": None, "samples": []})
        fam["samples"].append((name, labels, parse_value(value, line)))
    for name, fam in families.items():
        if fam["type"] is None or fam["help"] is None:
            raise ExpositionError("family %s lacks TYPE or HELP" % name)
        if fam["type"] == "histogram":
            check_histogram(name, fam["samples"])
    return families


def check_histogram(name, samples):
    groups = {}
    for sname, labels, value in samples:
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        g = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if sname == name + "_bucket":
            if "le" not in labels:
                raise ExpositionError("%s bucket without le" % name)
            g["buckets"].append((parse_value(labels["le"], sname), value))
        elif sname == name + "_sum":
            g["sum"] = value
        elif sname == name + "_count":
            g["count"] = value
        else:
            raise ExpositionError("%s is not a sample name of histogram %s" % (sname, name))
    for g in groups.values():
        b = g["buckets"]
        if not b or not math.isinf(b[-1][0]):
            raise ExpositionError("%s: the last bucket must be +Inf" % name)
        for (le0, c0), (le1, c1) in zip(b, b[1:]):
            if not le1 > le0:
                raise ExpositionError("%s: le bounds must increase (%s, %s)" % (name, le0, le1))
            if c1 < c0:
                raise ExpositionError("%s: buckets must be cumulative (%s < %s)" % (name, c1, c0))
        if g["count"] is None or g["sum"] is None:
            raise ExpositionError("%s lacks _count or _sum" % name)
        if g["count"] != b[-1][1]:
            raise ExpositionError("%s: _count %s != +Inf bucket %s" % (name, g["count"], b[-1][1]))
        if g["sum"] < 0:
            raise ExpositionError("%s: negative _sum" % name)


def check_conventions(families):
    for name, fam in families.items():
        assert name.startswith("stanzad_"), "%s lacks the stanzad_ prefix" % name
        if fam["type"] == "counter":
            assert name.endswith("_total"), "counter %s must end in _total" % name
        else:
            assert not name.endswith("_total"), "%s %s must not end in _total" % (fam["type"], name)
        if "latency" in name or "time" in name:
            assert name.endswith("_seconds") or name.endswith("_seconds_total"), \
                "%s: a time in base units ends in _seconds" % name
        if "bytes" in name:
            assert name.endswith("_bytes") or name.endswith("_bytes_total"), name
        for s, _labels, v in fam["samples"]:
            if fam["type"] in ("counter", "histogram"):
                assert v >= 0, "%s is negative" % s


# --------------------------------------------------------------------------
# Scraping
# --------------------------------------------------------------------------

def scrape_raw(port, method="GET", path="/metrics", source=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read().decode()
    finally:
        conn.close()


class Scrape:
    def __init__(self, port):
        status, headers, body = scrape_raw(port)
        assert status == 200, (status, body)
        assert headers["content-type"].startswith("text/plain; version=0.0.4"), headers
        self.text = body
        self.families = parse_exposition(body)
        check_conventions(self.families)

    def value(self, name, **labels):
        """The value of one series (0 when the family has no such series)."""
        fam = self.families[family_of(name, {n: f["type"] for n, f in self.families.items()})]
        for sname, slabels, v in fam["samples"]:
            if sname == name and all(slabels.get(k) == val for k, val in labels.items()) and \
                    len(slabels) >= len(labels):
                if set(labels) == set(slabels) or name.endswith(("_sum", "_count")):
                    return v
        raise KeyError("no series %s%s" % (name, labels))

    def sum(self, name, **labels):
        fam = self.families[family_of(name, {n: f["type"] for n, f in self.families.items()})]
        return sum(v for sname, slabels, v in fam["samples"]
                   if sname == name and all(slabels.get(k) == val for k, val in labels.items()))


def wait_for(port, pred, timeout=WAIT):
    """Scrapes until pred(scrape) holds; returns that scrape."""
    deadline = time.monotonic() + timeout
    while True:
        s = Scrape(port)
        if pred(s):
            return s
        if time.monotonic() > deadline:
            raise AssertionError("metrics never reached the expected state; last scrape:\n%s"
                                 % s.text)
        time.sleep(0.05)


def conns(s, transport, state, tls):
    return s.value("stanzad_connections", transport=transport, state=state, tls=tls)


# --------------------------------------------------------------------------
# The parser itself must refuse what the format forbids
# --------------------------------------------------------------------------

GOOD = ("# HELP stanzad_x_total X.\n# TYPE stanzad_x_total counter\nstanzad_x_total 1\n"
        "# HELP stanzad_h H.\n# TYPE stanzad_h histogram\n"
        'stanzad_h_bucket{le="1"} 1\nstanzad_h_bucket{le="+Inf"} 2\n'
        "stanzad_h_sum 3.5\nstanzad_h_count 2\n")


@pytest.mark.parametrize("bad", [
    GOOD[:-1],                                               # no final newline
    GOOD.replace("# TYPE stanzad_x_total counter\n", ""),    # no TYPE
    GOOD.replace("stanzad_x_total 1\n", "stanzad_x_total 1\n# TYPE stanzad_x_total counter\n"),
    GOOD.replace("stanzad_h_count 2", "stanzad_h_count 3"),  # count != +Inf bucket
    GOOD.replace('{le="1"} 1', '{le="1"} 3'),                # not cumulative
    GOOD.replace('stanzad_h_bucket{le="+Inf"} 2\n', ""),     # no +Inf
    GOOD.replace("stanzad_h_sum 3.5\n", ""),                 # no _sum
    GOOD.replace("stanzad_x_total 1", "stanzad_x_total one"),
    GOOD.replace("stanzad_x_total 1", 'stanzad_x_total{a="b} 1'),
    GOOD.replace("stanzad_x_total 1", "stanzad_x_total 1\nstanzad_x_total 2"),  # duplicate
    GOOD + "stanzad_x_total 2\n",                            # family split in two
    GOOD.replace("# HELP stanzad_h H.", "# HELP stanzad_h H.\n# HELP stanzad_h again"),
])
def test_parser_refuses_malformed_expositions(bad):
    with pytest.raises(ExpositionError):
        parse_exposition(bad)


def test_parser_accepts_a_valid_exposition():
    fams = parse_exposition(GOOD)
    assert fams["stanzad_h"]["type"] == "histogram"


# --------------------------------------------------------------------------
# The endpoint
# --------------------------------------------------------------------------

REQUIRED = {
    "stanzad_connections": "gauge",
    "stanzad_connections_accepted_total": "counter",
    "stanzad_worker_connections": "gauge",
    "stanzad_sessions": "gauge",
    "stanzad_stanzas_received_total": "counter",
    "stanzad_stanzas_sent_total": "counter",
    "stanzad_routing_latency_seconds": "histogram",
    "stanzad_fanout_recipients": "histogram",
    "stanzad_storage_latency_seconds": "histogram",
    "stanzad_storage_queue_depth": "gauge",
    "stanzad_auth_successes_total": "counter",
    "stanzad_auth_failures_total": "counter",
    "stanzad_stream_errors_total": "counter",
    "stanzad_offline_messages_stored_total": "counter",
    "stanzad_archive_writes_total": "counter",
    "stanzad_sm_resumptions_total": "counter",
    "stanzad_guard_drops_total": "counter",
    "stanzad_kernel_path_active": "gauge",
    "stanzad_build_info": "gauge",
    "stanzad_start_time_seconds": "gauge",
    "stanzad_heap_bytes": "gauge",
}


def test_exposition_is_well_formed_and_complete(server):
    s = Scrape(server.http_port)
    for name, typ in REQUIRED.items():
        assert name in s.families, "missing family %s" % name
        assert s.families[name]["type"] == typ, (name, s.families[name]["type"])
    assert s.value("stanzad_kernel_path_active", path="io_uring") == 1
    assert s.value("stanzad_kernel_path_active", path="ktls") in (0, 1)
    assert abs(s.value("stanzad_start_time_seconds") - time.time()) < 3600
    # The scrape's own connection is an open HTTP connection without TLS.
    assert conns(s, "http", "open", "none") >= 1
    # Per-worker connections add up to the connection gauges. Both are read
    # while the scrape is built, a moment apart: a connection of an earlier
    # test closing in that moment is counted by one and not the other, so
    # the scrape is taken again until they agree (bounded).
    for _ in range(50):
        if s.sum("stanzad_worker_connections") == s.sum("stanzad_connections"):
            break
        time.sleep(0.05)
        s = Scrape(server.http_port)
    assert s.sum("stanzad_worker_connections") == s.sum("stanzad_connections")
    # Every RFC 6120 condition is there from the start (at 0 or more).
    assert s.value("stanzad_stream_errors_total", condition="see-other-host") >= 0
    assert s.value("stanzad_auth_failures_total", mechanism="none") >= 0


def test_head_has_the_headers_and_no_body(server):
    status, headers, body = scrape_raw(server.http_port, "HEAD")
    assert status == 200 and body == ""
    assert int(headers["content-length"]) > 1000


def test_other_methods_are_refused(server):
    status, headers, _ = scrape_raw(server.http_port, "PUT")
    assert status == 405 and "GET" in headers["allow"]


def test_counters_move_after_known_actions(make_server):
    srv = make_server()
    port = srv.http_port
    ua, pa, ja = srv.new_account("met")
    ub, pb, jb = srv.new_account("met")
    uc, pc, jc = srv.new_account("met")     # stays offline
    before = Scrape(port)

    a, fa = login(srv.c2s_port, ua, pa, resource="one")
    b, fb = login(srv.c2s_port, ub, pb)
    # A failed SCRAM login, and a stream error before authentication.
    bad = RawStream(srv.c2s_port)
    bad.open()
    bad.starttls()
    kind, cond = bad.scram_login(ua, "wrong-password")
    assert kind == "failure" and cond == "not-authorized"
    bad.close()
    junk = RawStream(srv.c2s_port)
    junk.open()
    junk.send("<a><b></a>")
    assert junk.stream_error() == "not-well-formed"
    try:
        # Two resources of a: presence from one reaches the other (a fan-out).
        a2, fa2 = login(srv.c2s_port, ua, pa, resource="two")
        a2.send("<presence/>")
        a.send("<presence/>")
        a.send("<message to='%s' type='chat' id='m1'><body>hello</body></message>" % fb)
        got = b.next()
        assert got.get("id") == "m1", tostr(got)
        a.send("<message to='%s' type='chat' id='m2'><body>later</body></message>" % jc)
        a.send("<iq type='get' id='p1' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>" % DOMAIN)
        s = wait_for(port, lambda s: s.value("stanzad_offline_messages_stored_total") >=
                     before.value("stanzad_offline_messages_stored_total") + 1 and
                     s.value("stanzad_stanzas_received_total", kind="iq") >
                     before.value("stanzad_stanzas_received_total", kind="iq"))
        d = lambda name, **lb: s.value(name, **lb) - before.value(name, **lb)  # noqa: E731
        assert d("stanzad_auth_successes_total", mechanism="SCRAM-SHA-256") == 3
        assert d("stanzad_auth_failures_total", mechanism="SCRAM-SHA-256") == 1
        assert d("stanzad_stream_errors_total", condition="not-well-formed") == 1
        assert d("stanzad_stanzas_received_total", kind="message") == 2
        assert d("stanzad_stanzas_received_total", kind="presence") == 2
        assert d("stanzad_stanzas_received_total", kind="iq") == 1  # bind is negotiation
        assert d("stanzad_stanzas_sent_total", kind="message") >= 1
        assert d("stanzad_stanzas_sent_total", kind="presence") >= 2
        assert d("stanzad_stanzas_sent_total", kind="iq") >= 1      # the ping's result
        assert d("stanzad_offline_messages_stored_total") == 1
        assert d("stanzad_archive_writes_total") >= 2
        # Every routed stanza has a latency, and each one is small.
        assert d("stanzad_routing_latency_seconds_count") == 5
        assert d("stanzad_routing_latency_seconds_sum") < 5 * 0.1
        assert d("stanzad_fanout_recipients_count") >= 1
        # Logins and the offline message went through the storage thread.
        assert d("stanzad_storage_latency_seconds_count") >= 4
        assert s.value("stanzad_storage_queue_depth") >= 0
        assert s.value("stanzad_sessions") == 3
        assert conns(s, "c2s", "ready", "userspace") + conns(s, "c2s", "ready", "ktls") == 3
        assert d("stanzad_connections_accepted_total", transport="c2s") >= 5
    finally:
        for st in (a, b):
            st.close()
        a2.close()
    s = wait_for(port, lambda s: s.value("stanzad_sessions") == 0 and
                 s.sum("stanzad_connections", transport="c2s") == 0)


def test_connection_gauges_follow_negotiation(make_server):
    srv = make_server()
    port = srv.http_port
    u, p, _ = srv.new_account("gauge")
    s = RawStream(srv.c2s_port)
    try:
        s.open()
        wait_for(port, lambda m: conns(m, "c2s", "negotiating", "none") == 1)
        s.starttls()
        wait_for(port, lambda m: conns(m, "c2s", "negotiating", "none") == 0 and
                 conns(m, "c2s", "negotiating", "userspace") +
                 conns(m, "c2s", "negotiating", "ktls") == 1)
        kind, _ = s.scram_login(u, p)
        assert kind == "success"
        s.restart()
        s.bind()
        m = wait_for(port, lambda m: conns(m, "c2s", "ready", "userspace") +
                     conns(m, "c2s", "ready", "ktls") == 1)
        assert m.sum("stanzad_connections", transport="c2s", state="negotiating") == 0
        # Per worker, they add up (the session may have moved to its home worker).
        assert m.sum("stanzad_worker_connections") == m.sum("stanzad_connections")
    finally:
        s.close()
    wait_for(port, lambda m: m.sum("stanzad_connections", transport="c2s") == 0)


def test_stream_management_resumption_is_counted(make_server):
    srv = make_server()
    port = srv.http_port
    u, p, _ = srv.new_account("smmet")
    before = Scrape(port)
    s, jid = login(srv.c2s_port, u, p)
    s.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
    en = s.expect(q(NS_SM, "enabled"))
    s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    srv.wait_log(r"event=sm\.detach conn=\d+ jid=%s " % re.escape(jid))
    # One resumption that works, one with an unknown id.
    for previd, want in ((en.get("id"), "resumed"), ("no-such-id", "failed")):
        r = RawStream(srv.c2s_port)
        r.open()
        r.starttls()
        assert r.scram_login(u, p)[0] == "success"
        r.restart()
        r.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, previd))
        assert r.next().tag == q(NS_SM, want)
        r.close()
    s2 = wait_for(port, lambda m: m.value("stanzad_sm_resumptions_total", result="failure") >
                  before.value("stanzad_sm_resumptions_total", result="failure"))
    assert s2.value("stanzad_sm_resumptions_total", result="success") == \
        before.value("stanzad_sm_resumptions_total", result="success") + 1


def scrape_admitted(port):
    """A scrape once the guard admits it (a scrape is itself an unauthenticated
    connection; each refused one is counted as a drop)."""
    deadline = time.monotonic() + WAIT
    while scrape_raw(port)[0] != 200:
        assert time.monotonic() < deadline, "the guard never admitted a scrape"
        time.sleep(0.05)
    return Scrape(port)


def hold_preauth(srv, timeout=5):
    """A stream that stays unauthenticated. A connection that just closed
    (a readiness probe, a scrape) may still count for a moment on the
    worker that had it, which then refuses this one (the header comes
    first, then the error): retried until one is held."""
    deadline = time.monotonic() + timeout
    while True:
        h = RawStream(srv.c2s_port)
        h.send_header()
        h.read_header()
        el = h.next()
        if el.tag == "{http://etherx.jabber.org/streams}features":
            return h
        h.close()
        assert time.monotonic() < deadline, "never held: %s" % tostr(el)
        time.sleep(0.05)


def test_guard_refusals_are_counted(make_server):
    srv = make_server("--max-preauth-per-ip", "2")
    key = dict(path="userspace", reason="preauth-per-ip")
    before = scrape_admitted(srv.http_port)
    held = [hold_preauth(srv) for _ in range(2)]
    third = RawStream(srv.c2s_port)
    third.send_header()
    assert third.stream_error() == "policy-violation"
    srv.wait_log(r"event=conn\.refused [^\n]*reason=preauth-per-ip")
    for h in held:
        h.close()
    after = scrape_admitted(srv.http_port)
    assert after.value("stanzad_guard_drops_total", **key) >= \
        before.value("stanzad_guard_drops_total", **key) + 1
    assert after.value("stanzad_guard_drops_total", path="userspace", reason="rate-limit") == 0
    assert after.value("stanzad_guard_drops_total", path="userspace", reason="source-banned") == 0


def test_metrics_are_refused_to_a_non_loopback_peer_by_default(make_server):
    addrs = [a for a in local_addresses() if not a.startswith("127.")]
    if not addrs:
        pytest.skip("this host has no non-loopback address to scrape from")
    srv = make_server()
    assert scrape_raw(srv.http_port)[0] == 200
    status, _, body = scrape_raw(srv.http_port, source=addrs[0])
    assert status == 403 and "metrics_allow" in body
    # The refusal is per request: loopback still gets through.
    assert scrape_raw(srv.http_port)[0] == 200


def test_metrics_allow_replaces_the_loopback_default(make_server):
    only = make_server("--metrics-allow", "10.255.255.0/24", "--metrics-allow", "fd00::/8")
    assert scrape_raw(only.http_port)[0] == 403
    mine = make_server("--metrics-allow", "127.0.0.2/32", "--metrics-allow", "127.0.0.1")
    assert scrape_raw(mine.http_port)[0] == 200


def test_metrics_no_turns_the_route_off(make_server):
    srv = make_server("--metrics", "no")
    assert scrape_raw(srv.http_port)[0] == 404


@pytest.mark.parametrize("value", ["10.0.0.0/33", "nonsense", "::1/200"])
def test_bad_metrics_allow_is_a_config_error(value, tmp_path):
    import subprocess
    from harness import STANZAD
    r = subprocess.run([STANZAD, "--state-dir", str(tmp_path / "s"), "--metrics-allow", value],
                       capture_output=True, text=True, timeout=WAIT)
    assert r.returncode == 2, r
    assert "metrics_allow" in r.stderr and value in r.stderr


def local_addresses():
    """IPv4 addresses of this host's interfaces (best effort)."""
    out = set()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))   # no packet is sent for a UDP connect
            out.add(s.getsockname()[0])
    except OSError:
        pass
    return sorted(out)

