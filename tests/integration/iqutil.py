"""Small helpers for the tests of server-answered iqs (vCard, private XML,
entity time, last activity, caps): send a request on a raw stream and
wait for its answer, read error conditions, and set up roster state."""
import time

from harness import NS_CLIENT, NS_STANZAS, q, tostr


def request(s, iq_type, payload, iq_id, to=None, timeout=10):
    """Sends an iq and returns its answer (other elements are skipped and
    kept in s.skipped_by_request)."""
    to_attr = " to='%s'" % to if to else ""
    s.send("<iq type='%s' id='%s'%s>%s</iq>" % (iq_type, iq_id, to_attr, payload))
    s.skipped_by_request = []
    deadline = time.monotonic() + timeout
    while True:
        el = s.next(max(0.01, deadline - time.monotonic()))
        if el.tag == q(NS_CLIENT, "iq") and el.get("id") == iq_id:
            return el
        s.skipped_by_request.append(el)


def result_of(el):
    """The payload of a result (or None); fails on anything else."""
    assert el.get("type") == "result", "not a result: %s" % tostr(el)
    children = list(el)
    assert len(children) <= 1, tostr(el)
    return children[0] if children else None


def error_of(el):
    """(error type, defined condition, text or None) of an error stanza."""
    assert el.get("type") == "error", "not an error: %s" % tostr(el)
    err = el.find(q(NS_CLIENT, "error"))
    assert err is not None, tostr(el)
    conds = [c.tag.split("}")[1] for c in err if c.tag.startswith("{%s}" % NS_STANZAS)
             and not c.tag.endswith("}text")]
    assert len(conds) == 1, tostr(el)
    text = err.find(q(NS_STANZAS, "text"))
    return err.get("type"), conds[0], text.text if text is not None else None


def set_roster_item(server, user, contact_bare, subscription):
    """Writes a roster row straight into the server's store, as the roster
    module would have after a subscription handshake: the account `user`
    has `contact_bare` with the given subscription ('none', 'to', 'from',
    'both'). Only valid while `user` has no session (a loaded roster is
    kept in memory)."""
    server.db_query("INSERT INTO roster_items (username, jid, subscription) VALUES (?, ?, ?)"
                    " ON CONFLICT (username, jid) DO UPDATE SET subscription = excluded.subscription",
                    (user, contact_bare, subscription))


def db_rows(server, sql, args=()):
    """Rows of a read-only query on the server's store (for persistence checks)."""
    return server.db_query(sql, args)
