"""Message Archive Management (XEP-0313, urn:xmpp:mam:2 with #extended),
archiving preferences (XEP-0441), Result Set Management (XEP-0059) and
stanza IDs (XEP-0359): what is archived (both directions, once each,
per preferences and hints), queries with form filters and RSM paging
forwards and backwards, item-not-found, stanza-id stamps and forged ones,
retention, persistence across a restart, and slixmpp's xep_0313 plugin.

Raw streams check the exact wire behaviour; archive writes are
asynchronous, so a test waits for the delivery of a message (which
follows its archive write in the storage queue) before it queries."""
import asyncio
import datetime
import time

from harness import DOMAIN, NS_CLIENT, NS_DISCO_INFO, connect_and_wait, q, tostr
from imutil import NS_DELAY, Client, error_condition, next_id, restart

NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_SID = "urn:xmpp:sid:0"
NS_FWD = "urn:xmpp:forward:0"
NS_XDATA = "jabber:x:data"
NS_HINTS = "urn:xmpp:hints"
NS_CARBONS = "urn:xmpp:carbons:2"


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def account(server, prefix):
    u, p, _ = server.new_account(prefix)
    return (u, p)


def jid(creds):
    return "%s@%s" % (creds[0], DOMAIN)


def form(**fields):
    """A MAM query form; values may be lists (ids). Keys use _ for -."""
    out = ["<x xmlns='%s' type='submit'><field var='FORM_TYPE' type='hidden'>"
           "<value>%s</value></field>" % (NS_XDATA, NS_MAM)]
    for k, v in fields.items():
        vals = v if isinstance(v, (list, tuple)) else [v]
        out.append("<field var='%s'>%s</field>" % (k.replace("_", "-"), "".join(
            "<value>%s</value>" % x for x in vals)))
    out.append("</x>")
    return "".join(out)


def rsm(max=None, after=None, before=None, index=None):
    out = "<set xmlns='%s'>" % NS_RSM
    if max is not None:
        out += "<max>%d</max>" % max
    if after is not None:
        out += "<after>%s</after>" % after
    if before is not None:
        out += "<before>%s</before>" % before if before else "<before/>"
    if index is not None:
        out += "<index>%d</index>" % index
    return out + "</set>"


class Result:
    def __init__(self, msg):
        res = msg.find(q(NS_MAM, "result"))
        self.msg = msg
        self.id = res.get("id")
        self.queryid = res.get("queryid")
        fwd = res.find(q(NS_FWD, "forwarded"))
        self.stamp = fwd.find(q(NS_DELAY, "delay")).get("stamp")
        self.inner = fwd.find(q(NS_CLIENT, "message"))
        assert self.inner is not None, tostr(msg)
        self.body = self.inner.findtext(q(NS_CLIENT, "body"))

    def __repr__(self):
        return "<%s %r>" % (self.id, self.body)


class Fin:
    def __init__(self, iq):
        self.iq = iq
        self.fin = iq.find(q(NS_MAM, "fin"))
        assert self.fin is not None, tostr(iq)
        self.complete = self.fin.get("complete") == "true"
        s = self.fin.find(q(NS_RSM, "set"))
        assert s is not None, tostr(iq)
        first = s.find(q(NS_RSM, "first"))
        self.first = first.text if first is not None else None
        self.index = int(first.get("index")) if first is not None and first.get("index") else None
        self.last = s.findtext(q(NS_RSM, "last"))
        c = s.findtext(q(NS_RSM, "count"))
        self.count = int(c) if c is not None else None


def mam(c, inner="", to=None, queryid="__auto__", flip=False, timeout=5.0):
    """Runs a query; returns (results, Fin) or (None, error iq)."""
    qid = next_id("mq") if queryid == "__auto__" else queryid
    iid = next_id("mamiq")
    attrs = " queryid='%s'" % qid if qid is not None else ""
    c.send("<iq type='set' id='%s'%s><query xmlns='%s'%s>%s%s</query></iq>" %
           (iid, " to='%s'" % to if to else "", NS_MAM, attrs, inner,
            "<flip-page/>" if flip else ""))
    results = []
    deadline = time.monotonic() + timeout
    while True:
        el = c.wait(lambda e: (e.tag == q(NS_CLIENT, "iq") and e.get("id") == iid) or
                    (e.tag == q(NS_CLIENT, "message") and e.find(q(NS_MAM, "result")) is not None),
                    max(0.1, deadline - time.monotonic()), "MAM results for " + iid)
        if el.tag == q(NS_CLIENT, "iq"):
            if el.get("type") == "error":
                return None, el
            assert el.get("type") == "result", tostr(el)
            return results, Fin(el)
        r = Result(el)
        assert r.queryid == qid, "result for another query: %s" % tostr(el)
        assert el.get("to") == c.full, tostr(el)
        results.append(r)


def chat(sender, to, body, extra="", type_="chat"):
    sender.send("<message to='%s' type='%s' id='%s'><body>%s</body>%s</message>" %
                (to, type_, next_id("m"), body, extra))


def stanza_ids(msg):
    return [(s.get("by"), s.get("id")) for s in msg.findall(q(NS_SID, "stanza-id"))]


def db_query(server, sql, args=()):
    return server.db_query(sql, args)


def wait_offline(server, user, n, timeout=5):
    deadline = time.monotonic() + timeout
    while True:
        got = db_query(server, "SELECT count(*) FROM offline_messages WHERE username = ?",
                       (user,))[0][0]
        if got == n:
            return
        assert time.monotonic() < deadline, "offline: %d stored, want %d" % (got, n)
        time.sleep(0.02)


def archived(server, user):
    return db_query(server, "SELECT count(*) FROM mam_messages WHERE username = ?", (user,))[0][0]


def wait_archived(server, user, n, timeout=5):
    deadline = time.monotonic() + timeout
    while archived(server, user) != n:
        assert time.monotonic() < deadline, "archived %d, want %d" % (archived(server, user), n)
        time.sleep(0.02)


def bodies(results):
    return [r.body for r in results]


def online(server, creds, resource=None):
    """A logged-in client that sent available presence (bare-JID chats reach it)."""
    c = Client(server, *creds, resource=resource)
    c.available()
    c.presence("", c.full)   # its own presence comes back: the session is available
    return c


def pair(server, pa="ma", pb="mb"):
    ca, cb = account(server, pa), account(server, pb)
    return ca, cb, online(server, ca), online(server, cb)


def send_and_receive(a, b, n, prefix="m"):
    """a sends n chats to b; b receives them all (so they are archived)."""
    for i in range(n):
        chat(a, b.bare, "%s%d" % (prefix, i))
    got = []
    for i in range(n):
        got.append(b.message(body="%s%d" % (prefix, i)))
    return got


# --------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------

def test_account_advertises_mam_and_stanza_ids(server):
    ca = account(server, "md")
    a = Client(server, *ca)
    try:
        for to in (None, a.bare):
            r = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=to)
            feats = {f.get("var") for f in r.iter(q(NS_DISCO_INFO, "feature"))}
            assert {NS_MAM, NS_MAM + "#extended", NS_SID} <= feats, tostr(r)
    finally:
        a.close()


# --------------------------------------------------------------------------
# what is archived
# --------------------------------------------------------------------------

def test_chat_is_archived_once_in_each_archive_with_stanza_id(server):
    ca, cb, a, b = pair(server)
    try:
        chat(a, b.bare, "hello bob")
        got = b.message(body="hello bob")
        ids = stanza_ids(got)
        assert len(ids) == 1 and ids[0][0] == b.bare, tostr(got)
        res_b, fin_b = mam(b)
        assert bodies(res_b) == ["hello bob"]
        assert res_b[0].id == ids[0][1], "stanza-id is the archive UID"
        assert res_b[0].inner.get("from") == a.full and res_b[0].inner.get("to") == b.bare
        # The archived copy is the message as sent, without our stamp.
        assert stanza_ids(res_b[0].inner) == []
        assert fin_b.complete and fin_b.count == 1 and fin_b.first == fin_b.last == res_b[0].id
        res_a, fin_a = mam(a)
        assert bodies(res_a) == ["hello bob"]
        assert res_a[0].id != res_b[0].id
        assert res_a[0].inner.get("from") == a.full
        # The message to the contact never carries the sender's stamp.
        assert all(by != a.bare for by, _ in ids)
        # The stamp of the delay is a XEP-0082 time close to now.
        t = datetime.datetime.strptime(res_b[0].stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
        now = datetime.datetime.utcnow()
        assert abs((now - t).total_seconds()) < 60
    finally:
        a.close()
        b.close()


def test_message_to_offline_account_is_archived_and_stamped(server):
    ca, cb = account(server, "moa"), account(server, "mob")
    a = Client(server, *ca)
    try:
        chat(a, jid(cb), "while away")
        wait_offline(server, cb[0], 1)
        b = Client(server, *cb)
        b.available()
        got = b.message(body="while away")
        ids = stanza_ids(got)
        assert len(ids) == 1 and ids[0][0] == b.bare, tostr(got)
        res, fin = mam(b)
        assert bodies(res) == ["while away"] and res[0].id == ids[0][1]
        b.close()
    finally:
        a.close()


def test_message_to_self_is_archived_once(server):
    ca = account(server, "mself")
    a = Client(server, *ca)
    try:
        a.available()
        chat(a, a.bare, "note to self")
        a.message(body="note to self")
        res, fin = mam(a)
        assert bodies(res) == ["note to self"]
        res, fin = mam(a, form(**{"with": a.bare}))
        assert bodies(res) == ["note to self"]
    finally:
        a.close()


def test_hints_states_headlines_and_errors_are_not_archived(server):
    ca, cb, a, b = pair(server, "mha", "mhb")
    try:
        chat(a, b.bare, "secret", "<no-store xmlns='%s'/>" % NS_HINTS)
        chat(a, b.bare, "otr", "<no-permanent-store xmlns='%s'/>" % NS_HINTS)
        chat(a, b.bare, "news", type_="headline")
        a.send("<message to='%s' type='chat'><composing xmlns="
               "'http://jabber.org/protocol/chatstates'/></message>" % b.bare)
        a.send("<message to='%s' type='error'><body>err</body><error type='cancel'>"
               "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
               % b.bare)
        for body in ("secret", "otr", "news"):
            m = b.message(body=body)
            assert stanza_ids(m) == [], tostr(m)
        chat(a, b.bare, "kept")
        assert stanza_ids(b.message(body="kept"))
        assert bodies(mam(b)[0]) == ["kept"]
        assert bodies(mam(a)[0]) == ["kept"]
        # A bodyless message with the <store/> hint is kept.
        a.send("<message to='%s' type='chat' id='st1'><store xmlns='%s'/>"
               "<x xmlns='urn:example:payload'/></message>" % (b.bare, NS_HINTS))
        m = b.wait(lambda el: el.get("id") == "st1")
        assert stanza_ids(m)
        assert len(mam(b)[0]) == 2
    finally:
        a.close()
        b.close()


def test_forged_stanza_ids_are_stripped(server):
    ca, cb, a, b = pair(server, "mfa", "mfb")
    try:
        a.send("<message to='%s' type='chat' id='f1'><body>forged</body>"
               "<stanza-id xmlns='%s' by='%s' id='fake-bob'/>"
               "<stanza-id xmlns='%s' by='%s' id='fake-alice'/>"
               "<stanza-id xmlns='%s' by='room@conference.example' id='keep'/></message>"
               % (b.bare, NS_SID, b.bare, NS_SID, a.bare, NS_SID))
        got = b.message(body="forged")
        ids = stanza_ids(got)
        mine = [i for by, i in ids if by == b.bare]
        assert len(mine) == 1 and mine[0] != "fake-bob", tostr(got)
        assert (a.bare, "fake-alice") not in ids, tostr(got)
        assert ("room@conference.example", "keep") in ids, "others' stamps are not ours to strip"
        res, _ = mam(b)
        assert res[0].id == mine[0]
        # Neither archive keeps the stamps that claimed it.
        assert stanza_ids(res[0].inner) == [("room@conference.example", "keep")]
        assert ("room@conference.example", "keep") in stanza_ids(mam(a)[0][0].inner)
    finally:
        a.close()
        b.close()


def test_carbons_carry_the_stanza_ids(server):
    ca, cb = account(server, "mca"), account(server, "mcb")
    a1 = online(server, ca, resource="one")
    a2 = online(server, ca, resource="two")
    b1 = online(server, cb, resource="one")
    b2 = online(server, cb, resource="two")
    try:
        for c in (a1, a2, b1, b2):
            assert c.iq("set", "<enable xmlns='%s'/>" % NS_CARBONS).get("type") == "result"
        a1.send("<message to='%s' type='chat' id='cb1'><body>carbon me</body></message>" % b1.full)
        got = b1.message(body="carbon me")
        bob_id = stanza_ids(got)
        sent = a2.wait(lambda el: el.find(q(NS_CARBONS, "sent")) is not None)
        inner = sent.find("%s/%s/%s" % (q(NS_CARBONS, "sent"), q(NS_FWD, "forwarded"),
                                        q(NS_CLIENT, "message")))
        alice_id = stanza_ids(inner)
        assert len(alice_id) == 1 and alice_id[0][0] == a1.bare, tostr(sent)
        assert alice_id[0][1] == mam(a1)[0][0].id
        recv = b2.wait(lambda el: el.find(q(NS_CARBONS, "received")) is not None)
        inner = recv.find("%s/%s/%s" % (q(NS_CARBONS, "received"), q(NS_FWD, "forwarded"),
                                        q(NS_CLIENT, "message")))
        assert stanza_ids(inner) == bob_id
        assert bob_id[0][1] == mam(b1)[0][0].id
    finally:
        for c in (a1, a2, b1, b2):
            c.close()


# --------------------------------------------------------------------------
# preferences
# --------------------------------------------------------------------------

def prefs_set(c, default, always=(), never=()):
    def lst(name, jids):
        return "<%s>%s</%s>" % (name, "".join("<jid>%s</jid>" % j for j in jids), name)
    r = c.iq("set", "<prefs xmlns='%s' default='%s'>%s%s</prefs>" %
             (NS_MAM, default, lst("always", always), lst("never", never)))
    return r


def prefs_of(r):
    p = r.find(q(NS_MAM, "prefs"))
    assert p is not None, tostr(r)
    al = [j.text for j in p.findall("%s/%s" % (q(NS_MAM, "always"), q(NS_MAM, "jid")))]
    nv = [j.text for j in p.findall("%s/%s" % (q(NS_MAM, "never"), q(NS_MAM, "jid")))]
    return p.get("default"), al, nv


def test_prefs_get_defaults_to_always(server):
    a = Client(server, *account(server, "mpg"))
    try:
        assert prefs_of(a.iq("get", "<prefs xmlns='%s'/>" % NS_MAM)) == ("always", [], [])
    finally:
        a.close()


def test_prefs_default_never_with_always_list(server):
    ca, cb, a, b = pair(server, "mpa", "mpb")
    cc = account(server, "mpc")
    c = online(server, cc)
    try:
        r = prefs_set(b, "never", always=[c.bare.upper()])
        assert r.get("type") == "result", tostr(r)
        assert prefs_of(r) == ("never", [c.bare], [])   # normalized
        assert prefs_of(b.iq("get", "<prefs xmlns='%s'/>" % NS_MAM)) == ("never", [c.bare], [])
        chat(a, b.bare, "from a")
        m = b.message(body="from a")
        assert stanza_ids(m) == [], "not archived, so no stanza-id"
        chat(c, b.bare, "from c")
        m = b.message(body="from c")
        assert len(stanza_ids(m)) == 1
        assert bodies(mam(b)[0]) == ["from c"]
        # The sender's own archive follows the sender's preferences.
        assert bodies(mam(a)[0]) == ["from a"]
        # Outgoing messages follow them too.
        chat(b, a.bare, "to a")
        a.message(body="to a")
        chat(b, c.bare, "to c")
        c.message(body="to c")
        assert bodies(mam(b)[0]) == ["from c", "to c"]
    finally:
        for x in (a, b, c):
            x.close()


def test_prefs_never_list_wins_over_always(server):
    ca, cb, a, b = pair(server, "mpna", "mpnb")
    try:
        assert prefs_set(b, "always", always=[a.bare], never=[a.bare]).get("type") == "result"
        chat(a, b.bare, "hidden")
        assert stanza_ids(b.message(body="hidden")) == []
        assert mam(b)[0] == []
        # A full JID in a list covers that resource only.
        assert prefs_set(b, "always", never=[a.full]).get("type") == "result"
        chat(a, b.bare, "hidden too")
        b.message(body="hidden too")
        a2 = online(server, ca, resource="other")
        chat(a2, b.bare, "seen")
        b.message(body="seen")
        assert bodies(mam(b)[0]) == ["seen"]
        a2.close()
    finally:
        a.close()
        b.close()


def test_prefs_roster_mode(server):
    ca, cb, a, b = pair(server, "mra", "mrb")
    cc = account(server, "mrc")
    c = online(server, cc)
    try:
        assert prefs_set(b, "roster").get("type") == "result"
        b.roster_get()
        b.roster_set(a.bare, name="A")
        b.push(a.bare)
        chat(a, b.bare, "contact")
        assert stanza_ids(b.message(body="contact"))
        chat(c, b.bare, "stranger")
        assert stanza_ids(b.message(body="stranger")) == []
        assert bodies(mam(b)[0]) == ["contact"]
    finally:
        for x in (a, b, c):
            x.close()


def test_prefs_apply_to_an_account_without_sessions(server):
    ca, cb = account(server, "mpoa"), account(server, "mpob")
    cc = account(server, "mpoc")
    b = Client(server, *cb)
    assert prefs_set(b, "roster", always=[jid(cc)]).get("type") == "result"
    b.close_cleanly()
    a = Client(server, *ca)
    c = online(server, cc)
    try:
        chat(a, jid(cb), "stranger offline")
        chat(c, jid(cb), "listed offline")
        wait_offline(server, cb[0], 2)
        b = Client(server, *cb)
        b.available()
        m1 = b.message(body="stranger offline")
        m2 = b.message(body="listed offline")
        assert stanza_ids(m1) == [], "declined: the offline copy loses its stamp"
        assert len(stanza_ids(m2)) == 1
        res, _ = mam(b)
        assert bodies(res) == ["listed offline"] and res[0].id == stanza_ids(m2)[0][1]
        b.close()
    finally:
        a.close()
        c.close()


def test_prefs_errors(server):
    a = Client(server, *account(server, "mpe"))
    try:
        for bad in ("<prefs xmlns='%s' default='sometimes'/>" % NS_MAM,
                    "<prefs xmlns='%s'/>" % NS_MAM,
                    "<prefs xmlns='%s' default='always'><always><jid>a@@b</jid></always></prefs>"
                    % NS_MAM):
            assert error_condition(a.iq("set", bad)) == ("modify", "bad-request")
        assert prefs_of(a.iq("get", "<prefs xmlns='%s'/>" % NS_MAM))[0] == "always"
    finally:
        a.close()


def test_server_default_never(make_server):
    srv = make_server("--mam-default", "never")
    ca, cb, a, b = pair(srv, "mdna", "mdnb")
    try:
        assert prefs_of(b.iq("get", "<prefs xmlns='%s'/>" % NS_MAM))[0] == "never"
        chat(a, b.bare, "not kept")
        assert stanza_ids(b.message(body="not kept")) == []
        assert mam(a)[0] == [] and mam(b)[0] == []
        assert prefs_set(b, "always").get("type") == "result"
        chat(a, b.bare, "kept now")
        assert stanza_ids(b.message(body="kept now"))
        assert bodies(mam(b)[0]) == ["kept now"]
    finally:
        a.close()
        b.close()


def test_bad_mam_default_is_refused_at_startup(tmp_path):
    import subprocess
    from harness import STANZAD
    r = subprocess.run([STANZAD, "--state-dir", str(tmp_path), "--mam-default", "sometimes"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and "mam_default" in r.stderr


# --------------------------------------------------------------------------
# queries
# --------------------------------------------------------------------------

def test_filter_with(server):
    ca, cb, a, b = pair(server, "mwa", "mwb")
    cc = account(server, "mwc")
    c = online(server, cc, resource="desk")
    try:
        chat(a, b.bare, "a1")
        b.message(body="a1")
        chat(c, b.bare, "c1")
        b.message(body="c1")
        chat(b, a.bare, "b-to-a")
        a.message(body="b-to-a")
        assert bodies(mam(b, form(**{"with": a.bare}))[0]) == ["a1", "b-to-a"]
        assert bodies(mam(b, form(**{"with": c.bare}))[0]) == ["c1"]
        assert bodies(mam(b, form(**{"with": c.full}))[0]) == ["c1"]
        assert mam(b, form(**{"with": c.bare + "/other"}))[0] == []
        assert bodies(mam(b, form(**{"with": ""}))[0]) == ["a1", "c1", "b-to-a"]
        res, fin = mam(b, form(**{"with": "nobody@" + DOMAIN}))
        assert res == [] and fin.complete and fin.count == 0 and fin.first is None
    finally:
        for x in (a, b, c):
            x.close()


def test_filter_start_end(server):
    ca, cb, a, b = pair(server, "mta", "mtb")
    try:
        send_and_receive(a, b, 3, "t")
        res, _ = mam(b)
        stamps = [r.stamp for r in res]
        assert len(set(stamps)) == 3 and stamps == sorted(stamps)
        assert bodies(mam(b, form(start=stamps[1]))[0]) == ["t1", "t2"]
        assert bodies(mam(b, form(end=stamps[1]))[0]) == ["t0", "t1"]
        assert bodies(mam(b, form(start=stamps[1], end=stamps[1]))[0]) == ["t1"]
        assert mam(b, form(start=stamps[2], end=stamps[0]))[0] == []
        assert bodies(mam(b, form(start="2000-01-01T00:00:00Z"))[0]) == ["t0", "t1", "t2"]
        assert mam(b, form(start="2999-01-01T00:00:00+02:00"))[0] == []
        # Time zones are honoured.
        assert bodies(mam(b, form(end="2999-01-01T00:00:00.5-05:30"))[0]) == ["t0", "t1", "t2"]
        for bad in ("yesterday", "2020-13-01T00:00:00Z", "2020-01-01T00:00:00",
                    "2020-02-30T00:00:00Z"):
            res, err = mam(b, form(start=bad))
            assert res is None and error_condition(err) == ("modify", "bad-request"), bad
    finally:
        a.close()
        b.close()


def page_walk(c, n_max, backwards=False, inner=""):
    """Pages through the whole archive by RSM; returns (bodies, pages)."""
    seen, pages, cursor = [], [], None
    while True:
        if backwards:
            r = rsm(max=n_max, before=cursor or "")
        else:
            r = rsm(max=n_max, after=cursor)
        res, fin = mam(c, inner + r)
        assert res is not None, tostr(fin)
        pages.append((res, fin))
        if backwards:
            seen = bodies(res) + seen
            cursor = fin.first
        else:
            seen += bodies(res)
            cursor = fin.last
        if res:
            assert fin.first == res[0].id and fin.last == res[-1].id
        if fin.complete:
            return seen, pages
        assert len(pages) < 50, "paging never completed"


def test_rsm_paging_forwards_and_backwards(server):
    ca, cb, a, b = pair(server, "mrpa", "mrpb")
    try:
        send_and_receive(a, b, 23, "p")
        want = ["p%d" % i for i in range(23)]
        seen, pages = page_walk(b, 5)
        assert seen == want
        assert [len(r) for r, _ in pages] == [5, 5, 5, 5, 3]
        assert [f.complete for _, f in pages] == [False] * 4 + [True]
        assert [f.index for _, f in pages] == [0, 5, 10, 15, 20]
        assert all(f.count == 23 for _, f in pages)
        seen, pages = page_walk(b, 5, backwards=True)
        assert seen == want
        assert [bodies(r) for r, _ in pages][0] == want[18:], "empty <before/>: the last page"
        # No index backwards (slixmpp would stop after one page); count still.
        assert [f.index for _, f in pages] == [None] * 5
        assert all(f.count == 23 for _, f in pages)
        assert [f.complete for _, f in pages] == [False] * 4 + [True]
        # Within a backwards page, results are still in chronological order.
        assert bodies(pages[1][0]) == want[13:18]
        # An exact fit: the page that ends the archive is complete.
        res, fin = mam(b, rsm(max=23))
        assert len(res) == 23 and fin.complete
        res, fin = mam(b, rsm(max=22))
        assert len(res) == 22 and not fin.complete
        # Default page size, and the server's cap on a huge max.
        res, fin = mam(b, rsm(max=100000))
        assert len(res) == 23 and fin.complete
        # With a filter, paging covers only the matching messages.
        seen, _ = page_walk(b, 4, inner=form(**{"with": a.bare}))
        assert seen == want
    finally:
        a.close()
        b.close()


def test_rsm_count_only_index_and_flip(server):
    ca, cb, a, b = pair(server, "mrca", "mrcb")
    try:
        send_and_receive(a, b, 6, "k")
        res, fin = mam(b, rsm(max=0))
        assert res == [] and fin.count == 6 and not fin.complete and fin.first is None
        res, fin = mam(b, rsm(max=2, index=3))
        assert bodies(res) == ["k3", "k4"] and fin.index == 3 and not fin.complete
        res, fin = mam(b, rsm(max=2, index=6))
        assert res == [] and fin.complete
        res, fin = mam(b, rsm(max=3, before=""), flip=True)
        assert bodies(res) == ["k5", "k4", "k3"], "flip-page: newest first"
        assert fin.first == res[-1].id and fin.last == res[0].id, "RSM keeps archive order"
        res, err = mam(b, rsm(max=2, index=1, after=mam(b)[0][0].id))
        assert res is None and error_condition(err) == ("modify", "bad-request")
        res, err = mam(b, "<set xmlns='%s'><max>lots</max></set>" % NS_RSM)
        assert res is None and error_condition(err) == ("modify", "bad-request")
    finally:
        a.close()
        b.close()


def test_ids_and_id_bounds(server):
    ca, cb, a, b = pair(server, "mia", "mib")
    try:
        send_and_receive(a, b, 6, "i")
        allres, _ = mam(b)
        ids = [r.id for r in allres]
        res, fin = mam(b, form(ids=[ids[4], ids[1]]))
        assert bodies(res) == ["i1", "i4"], "archive order, whatever the order asked"
        assert fin.complete and fin.count == 2
        res, fin = mam(b, form(after_id=ids[1], before_id=ids[4]))
        assert bodies(res) == ["i2", "i3"]
        res, fin = mam(b, form(after_id=ids[3]))
        assert bodies(res) == ["i4", "i5"]
        # RSM after/before are archive UIDs too.
        assert bodies(mam(b, rsm(after=ids[2], max=2))[0]) == ["i3", "i4"]
        assert bodies(mam(b, rsm(before=ids[2], max=5))[0]) == ["i0", "i1"]
        # The query form lists every field, ids with open validation.
        r = b.iq("get", "<query xmlns='%s'/>" % NS_MAM)
        vars_ = {f.get("var") for f in r.iter(q(NS_XDATA, "field"))}
        assert {"FORM_TYPE", "with", "start", "end", "before-id", "after-id", "ids"} <= vars_
        assert r.find(".//{http://jabber.org/protocol/xdata-validate}open") is not None
    finally:
        a.close()
        b.close()


def test_unknown_ids_are_item_not_found(server):
    ca, cb, a, b = pair(server, "mna", "mnb")
    try:
        send_and_receive(a, b, 2, "n")
        known = mam(b)[0][0].id
        other = mam(a)[0][0].id   # a UID of another archive is unknown here
        for inner in (rsm(after="nope"), rsm(before="nope"), rsm(after=other),
                      form(after_id="nope"), form(before_id="nope"),
                      form(ids=[known, "nope"])):
            res, err = mam(b, inner)
            assert res is None, inner
            assert error_condition(err) == ("cancel", "item-not-found"), tostr(err)
    finally:
        a.close()
        b.close()


def test_bad_queries(server):
    ca, cb, a, b = pair(server, "mqa", "mqb")
    try:
        res, err = mam(b, form(color="blue"))
        assert error_condition(err) == ("cancel", "feature-not-implemented")
        res, err = mam(b, "<x xmlns='%s' type='submit'><field var='FORM_TYPE' type='hidden'>"
                          "<value>urn:example</value></field></x>" % NS_XDATA)
        assert error_condition(err) == ("modify", "bad-request")
        res, err = mam(b, form(**{"with": "a@@b"}))
        assert error_condition(err) == ("modify", "bad-request")
        res, err = mam(b, queryid="q" * 300)
        assert error_condition(err) == ("modify", "bad-request")
        # Someone else's archive is not for reading.
        res, err = mam(a, to=b.bare)
        assert error_condition(err) == ("auth", "forbidden")
        r = a.iq("get", "<prefs xmlns='%s'/>" % NS_MAM, to=b.bare)
        assert error_condition(r) == ("auth", "forbidden")
        # No queryid: results without one, and to the bare JID addressed.
        send_and_receive(a, b, 1, "z")
        res, fin = mam(b, queryid=None, to=b.bare)
        assert bodies(res) == ["z0"] and res[0].queryid is None
        assert res[0].msg.get("from") == b.bare and fin.iq.get("from") == b.bare
    finally:
        a.close()
        b.close()


def test_metadata(server):
    ca, cb, a, b = pair(server, "mma", "mmb")
    try:
        r = b.iq("get", "<metadata xmlns='%s'/>" % NS_MAM)
        md = r.find(q(NS_MAM, "metadata"))
        assert md is not None and len(md) == 0, "empty archive: empty <metadata/>"
        send_and_receive(a, b, 3, "d")
        res, _ = mam(b)
        md = b.iq("get", "<metadata xmlns='%s'/>" % NS_MAM).find(q(NS_MAM, "metadata"))
        assert md.find(q(NS_MAM, "start")).get("id") == res[0].id
        assert md.find(q(NS_MAM, "end")).get("id") == res[-1].id
        assert md.find(q(NS_MAM, "end")).get("timestamp") == res[-1].stamp
    finally:
        a.close()
        b.close()


# --------------------------------------------------------------------------
# persistence and retention
# --------------------------------------------------------------------------

def test_archive_and_prefs_survive_restart(make_server):
    srv = make_server()
    ca, cb, a, b = pair(srv, "msa", "msb")
    send_and_receive(a, b, 3, "r")
    before, _ = mam(b)
    assert prefs_set(b, "roster", never=["x@" + DOMAIN]).get("type") == "result"
    a.close()
    b.close()
    restart(srv)
    b = online(srv, cb)
    try:
        after, fin = mam(b)
        assert [(r.id, r.body, r.stamp) for r in after] == \
            [(r.id, r.body, r.stamp) for r in before]
        assert prefs_of(b.iq("get", "<prefs xmlns='%s'/>" % NS_MAM)) == \
            ("roster", [], ["x@" + DOMAIN])
        # New entries go after the old ones.
        a = Client(srv, *ca)
        b.roster_get()
        b.roster_set(a.bare)
        b.push(a.bare)
        chat(a, b.bare, "after restart")
        b.message(body="after restart")
        assert bodies(mam(b)[0]) == ["r0", "r1", "r2", "after restart"]
        a.close()
    finally:
        b.close()


def test_retention_hides_and_deletes_old_messages(make_server):
    srv = make_server("--mam-retention-days", "30")
    ca, cb, a, b = pair(srv, "mxa", "mxb")
    send_and_receive(a, b, 4, "x")
    wait_archived(srv, cb[0], 4)
    a.close()
    b.close()
    srv.signal()
    assert srv.wait(10) == 0
    srv._close_log()
    # Age the two oldest entries of each archive by 40 days (order kept).
    for user in (ca[0], cb[0]):
        rows = srv.db_query("SELECT ts FROM mam_messages WHERE username = ? ORDER BY ts", (user,))
        for (ts,) in rows[:2]:
            srv.db_query("UPDATE mam_messages SET ts = ? WHERE username = ? AND ts = ?",
                         (ts - 40 * 86400 * 10**6, user, ts))
    srv.stop_requested = False
    srv.start()
    b = online(srv, cb)
    a = Client(srv, *ca)
    try:
        res, fin = mam(b)
        assert bodies(res) == ["x2", "x3"] and fin.count == 2
        old = db_query(srv, "SELECT id FROM mam_messages WHERE username = ? ORDER BY ts",
                       (cb[0],))[0][0]
        res, err = mam(b, rsm(after=old))
        assert error_condition(err) == ("cancel", "item-not-found"), "expired is gone"
        # The next archive write sweeps the expired entries away.
        chat(a, b.bare, "fresh")
        b.message(body="fresh")
        wait_archived(srv, cb[0], 3)
        wait_archived(srv, ca[0], 3)
    finally:
        a.close()
        b.close()


# --------------------------------------------------------------------------
# a real client
# --------------------------------------------------------------------------

def test_slixmpp_retrieve_and_iterate(server, xmpp, arun):
    ca, cb = account(server, "mxsa"), account(server, "mxsb")
    a = Client(server, *ca)
    b = xmpp(jid(cb), cb[1], server.c2s_port,
             plugins=["xep_0030", "xep_0004", "xep_0059", "xep_0297", "xep_0313"])

    async def scenario():
        await connect_and_wait(b)
        b.send_presence()
        # A round trip after the presence: the server has taken it (stanzas
        # of one stream are handled in order), so the chats reach the session.
        fields = await b["xep_0313"].get_fields(timeout=5)
        assert {"with", "start", "end", "ids"} <= set(fields.get_fields())
        for i in range(12):
            chat(a, jid(cb), "s%d" % i)
        for i in range(12):
            m = await asyncio.wait_for(b.test_messages.get(), 5)
            assert m["body"] == "s%d" % i
        iq = await b["xep_0313"].retrieve(with_jid=a.bare, timeout=10)
        got = [r["mam_result"]["forwarded"]["stanza"]["body"] for r in iq["mam"]["results"]]
        assert got == ["s%d" % i for i in range(12)]
        assert iq["mam_fin"]["rsm"]["count"] == "12"
        seen = []
        async for msg in b["xep_0313"].iterate(with_jid=a.bare, rsm={"max": 5}):
            seen.append(msg["mam_result"]["forwarded"]["stanza"]["body"])
        assert seen == ["s%d" % i for i in range(12)]
        seen = []
        async for msg in b["xep_0313"].iterate(reverse=True, rsm={"max": 5}):
            seen.append(msg["mam_result"]["forwarded"]["stanza"]["body"])
        assert seen == ["s%d" % i for i in reversed(range(12))]
    try:
        arun(scenario(), timeout=40)
    finally:
        a.close()


def test_stream_management_ack_comes_after_the_archive_commit(server):
    """DESIGN: what is acknowledged is durable, the archive included."""
    ca, cb = account(server, "mka"), account(server, "mkb")
    b = online(server, cb)
    a = Client(server, *ca)
    NS_SM = "urn:xmpp:sm:3"
    try:
        a.send("<enable xmlns='%s'/>" % NS_SM)
        a.wait(lambda el: el.tag == q(NS_SM, "enabled"))
        for i in range(5):
            chat(a, b.bare, "durable %d" % i)
        a.send("<r xmlns='%s'/>" % NS_SM)
        ack = a.wait(lambda el: el.tag == q(NS_SM, "a"))
        assert ack.get("h") == "5", tostr(ack)
        # The moment the ack is out, both archives hold every message.
        assert archived(server, ca[0]) == 5
        assert archived(server, cb[0]) == 5
    finally:
        a.close()
        b.close()
