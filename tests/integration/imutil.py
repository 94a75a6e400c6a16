"""Helpers for the IM-core tests (rosters, subscriptions, presence, offline
messages) on raw streams: exact wire behaviour matters there.

Every wait is bounded."""
import itertools
import signal
import time

from harness import (DOMAIN, NS_CLIENT, NS_STANZAS, StreamClosed, login, q, tostr, xml_escape)

NS_ROSTER = "jabber:iq:roster"
NS_DELAY = "urn:xmpp:delay"

_ids = itertools.count(1)


def next_id(prefix="r"):
    return "%s%d" % (prefix, next(_ids))


class Client:
    """A logged-in raw stream with a buffer of elements seen but not yet
    asked for, so a test can wait for one kind of stanza while others
    (pushes, presence) arrive in between."""

    def __init__(self, server, user, password, resource=None):
        self.server = server
        self.user = user
        self.password = password
        self.s, self.full = login(server.c2s_port, user, password, resource=resource)
        self.bare = self.full.split("/", 1)[0]
        self.buffer = []

    def send(self, data):
        self.s.send(data)

    def close(self):
        self.s.close()

    def close_cleanly(self):
        try:
            self.s.send("</stream:stream>")
            self.s.wait_closed(5)
        except Exception:
            pass
        self.s.close()

    def _read(self, timeout):
        return self.s.next(timeout)

    def wait(self, pred, timeout=5.0, what="a matching stanza"):
        """The first element (buffered or new) for which pred(el) is true."""
        for i, el in enumerate(self.buffer):
            if pred(el):
                return self.buffer.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("%s: no %s within %.1f s; got meanwhile: %s" %
                                     (self.full, what, timeout,
                                      [tostr(e) for e in self.buffer][-8:]))
            try:
                el = self._read(left)
            except TimeoutError:
                continue
            if pred(el):
                return el
            self.buffer.append(el)

    def drain(self, seconds=0.3):
        """Everything that arrives within `seconds` (plus the buffer)."""
        out = self.buffer
        self.buffer = []
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            try:
                out.append(self._read(left))
            except TimeoutError:
                return out

    def quiet(self, pred=lambda el: True, seconds=0.4):
        """Asserts that nothing matching pred arrives within `seconds`."""
        got = [el for el in self.drain(seconds) if pred(el)]
        assert not got, "%s: unexpected %s" % (self.full, [tostr(e) for e in got])

    # -- iq --

    def iq(self, type_, payload, to=None, timeout=5.0):
        """Sends an iq and returns its answer (result or error)."""
        iid = next_id("iq")
        self.send("<iq type='%s' id='%s'%s>%s</iq>" %
                  (type_, iid, " to='%s'" % to if to else "", payload))
        return self.wait(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("id") == iid and
                         el.get("type") in ("result", "error"), timeout, "answer to " + iid)

    def roster_get(self, ver=None):
        v = "" if ver is None else " ver='%s'" % xml_escape(ver)
        return self.iq("get", "<query xmlns='%s'%s/>" % (NS_ROSTER, v))

    def roster_set(self, jid, name=None, groups=(), subscription=None, raw=None):
        if raw is None:
            attrs = "jid='%s'" % xml_escape(jid)
            if name is not None:
                attrs += " name='%s'" % xml_escape(name)
            if subscription is not None:
                attrs += " subscription='%s'" % subscription
            inner = "".join("<group>%s</group>" % xml_escape(g) for g in groups)
            raw = "<item %s>%s</item>" % (attrs, inner)
        return self.iq("set", "<query xmlns='%s'>%s</query>" % (NS_ROSTER, raw))

    def push(self, jid=None, timeout=5.0):
        """Waits for a roster push (optionally about `jid`), answers it, returns the <item/>."""
        def is_push(el):
            if el.tag != q(NS_CLIENT, "iq") or el.get("type") != "set":
                return False
            item = el.find("%s/%s" % (q(NS_ROSTER, "query"), q(NS_ROSTER, "item")))
            return item is not None and (jid is None or item.get("jid") == jid)
        el = self.wait(is_push, timeout, "roster push%s" % (" for " + jid if jid else ""))
        assert el.get("from") in (None, self.bare), "push from elsewhere: %s" % tostr(el)
        self.send("<iq type='result' id='%s'/>" % el.get("id"))
        self.last_push = el
        return el.find("%s/%s" % (q(NS_ROSTER, "query"), q(NS_ROSTER, "item")))

    # -- presence --

    def presence(self, type_=None, frm=None, timeout=5.0):
        """Waits for a presence stanza of a type ('' = available) from a JID
        (a bare JID matches any of its resources)."""
        def match(el):
            if el.tag != q(NS_CLIENT, "presence"):
                return False
            if type_ is not None and (el.get("type") or "") != type_:
                return False
            if frm is not None:
                f = el.get("from") or ""
                if f != frm and f.split("/", 1)[0] != frm:
                    return False
            return True
        return self.wait(match, timeout, "presence type=%r from=%r" % (type_, frm))

    def available(self, priority=None, status=None, extra=""):
        body = ""
        if priority is not None:
            body += "<priority>%d</priority>" % priority
        if status is not None:
            body += "<status>%s</status>" % xml_escape(status)
        self.send("<presence>%s%s</presence>" % (body, extra))

    def message(self, timeout=5.0, body=None):
        def match(el):
            return el.tag == q(NS_CLIENT, "message") and (
                body is None or el.findtext(q(NS_CLIENT, "body")) == body)
        return self.wait(match, timeout, "message%s" % (" %r" % body if body else ""))


def items(result):
    """{jid: item element} of a roster result."""
    query = result.find(q(NS_ROSTER, "query"))
    assert query is not None, tostr(result)
    return {it.get("jid"): it for it in query.findall(q(NS_ROSTER, "item"))}


def groups(item):
    return sorted(g.text or "" for g in item.findall(q(NS_ROSTER, "group")))


def error_condition(el):
    """(error type, condition) of an error stanza."""
    assert el.get("type") == "error", "not an error: %s" % tostr(el)
    err = el.find(q(NS_CLIENT, "error"))
    assert err is not None, tostr(el)
    conds = [c.tag.split("}")[1] for c in err if c.tag.startswith("{%s}" % NS_STANZAS) and
             not c.tag.endswith("}text")]
    assert len(conds) == 1, tostr(el)
    return err.get("type"), conds[0]


def is_presence(el, type_=None, frm=None):
    if el.tag != q(NS_CLIENT, "presence"):
        return False
    if type_ is not None and (el.get("type") or "") != type_:
        return False
    if frm is not None and (el.get("from") or "").split("/", 1)[0] != frm.split("/", 1)[0]:
        return False
    return True


def subscribe_mutually(a, b):
    """Makes a and b subscribed both ways (both must be available). The
    pushes and presences involved are consumed."""
    a.send("<presence type='subscribe' to='%s'/>" % b.bare)
    b.presence("subscribe", a.bare)
    b.send("<presence type='subscribed' to='%s'/>" % a.bare)
    a.presence("subscribed", b.bare)
    b.send("<presence type='subscribe' to='%s'/>" % a.bare)
    a.presence("subscribe", b.bare)
    a.send("<presence type='subscribed' to='%s'/>" % b.bare)
    b.presence("subscribed", a.bare)
    # Settle: both now see each other's presence; drop what is queued.
    a.drain(0.3)
    b.drain(0.05)


def restart(server, timeout=10):
    """Stops the daemon gracefully and starts it again on the same state
    directory (new ports)."""
    server.signal(signal.SIGTERM)
    rc = server.wait(timeout)
    assert rc == 0, "daemon exited with %s on SIGTERM" % rc
    server._close_log()
    server.stop_requested = False
    server.start()


__all__ = ["Client", "DOMAIN", "NS_ROSTER", "NS_DELAY", "StreamClosed", "error_condition",
           "groups", "is_presence", "items", "next_id", "restart", "subscribe_mutually"]
