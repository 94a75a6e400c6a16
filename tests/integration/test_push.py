"""XEP-0357 push notifications: enabling and disabling app servers (jid +
node, publish-options kept as given), the summary notification published
to the app server when a message is stored offline or queued for a
session that stream management holds detached, no notification after
disable (or for an app server never registered), an app server's final
error removing its registrations (a temporary one does not), the
per-account limit
and push turned off by configuration, and enabling from slixmpp."""
import asyncio

from harness import DOMAIN, NS_CLIENT, NS_DISCO_INFO, connect_and_wait, q, tostr
from imutil import Client, error_condition
from test_sm import kill, sm_login, wait_detached

NS_PUSH = "urn:xmpp:push:0"
PS = "http://jabber.org/protocol/pubsub"
NS_XDATA = "jabber:x:data"
SECRET_FORM = ("<x xmlns='jabber:x:data' type='submit'>"
               "<field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options"
               "</value></field><field var='secret'><value>s3cr3t</value></field></x>")


def enable(c, jid, node, form=""):
    return c.iq("set", "<enable xmlns='%s' jid='%s' node='%s'>%s</enable>" %
                (NS_PUSH, jid, node, form))


def disable(c, jid, node=None):
    return c.iq("set", "<disable xmlns='%s' jid='%s'%s/>" %
                (NS_PUSH, jid, " node='%s'" % node if node else ""))


def ok(el):
    assert el.get("type") == "result", tostr(el)
    return el


def is_push_iq(el):
    return el.tag == q(NS_CLIENT, "iq") and el.get("type") == "set" and \
        el.find(q(PS, "pubsub")) is not None


def notification(app, answer=True, timeout=5.0):
    """The next publish the app server gets: (iq, node, {field: value}, publish-options)."""
    iq = app.wait(is_push_iq, timeout, "a push notification")
    if answer:
        app.send("<iq type='result' id='%s' to='%s'/>" % (iq.get("id"), iq.get("from")))
    ps = iq.find(q(PS, "pubsub"))
    pub = ps.find(q(PS, "publish"))
    x = pub.find("%s/%s/%s" % (q(PS, "item"), q(NS_PUSH, "notification"), q(NS_XDATA, "x")))
    assert x is not None, tostr(iq)
    fields = {f.get("var"): f.findtext(q(NS_XDATA, "value")) for f in x.findall(q(NS_XDATA, "field"))}
    return iq, pub.get("node"), fields, ps.find(q(PS, "publish-options"))


def chat(c, to, body):
    c.send("<message to='%s' type='chat'><body>%s</body></message>" % (to, body))


def test_account_advertises_push(server):
    u, p, _ = server.new_account("push")
    c = Client(server, u, p)
    try:
        res = ok(c.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO))
        feats = [f.get("var") for f in res.iter(q(NS_DISCO_INFO, "feature"))]
        assert NS_PUSH in feats
    finally:
        c.close()


def test_enable_requires_jid_and_node(server):
    u, p, _ = server.new_account("push")
    c = Client(server, u, p)
    try:
        r = c.iq("set", "<enable xmlns='%s' node='n'/>" % NS_PUSH)
        assert error_condition(r) == ("modify", "bad-request")
        r = c.iq("set", "<enable xmlns='%s' jid='push.example'/>" % NS_PUSH)
        assert error_condition(r) == ("modify", "bad-request")
        r = c.iq("set", "<enable xmlns='%s' jid='a@b@c' node='n'/>" % NS_PUSH)
        assert error_condition(r) == ("modify", "bad-request")
        r = c.iq("get", "<enable xmlns='%s' jid='push.example' node='n'/>" % NS_PUSH)
        assert r.get("type") == "error"
        # Someone else's account cannot be configured.
        u2, _, j2 = server.new_account("push")
        r = c.iq("set", "<enable xmlns='%s' jid='push.example' node='n'/>" % NS_PUSH, to=j2)
        assert r.get("type") == "error"
    finally:
        c.close()


def test_offline_message_notifies_with_summary_and_secret(server):
    u, p, jid = server.new_account("push")
    ua, pa, _ = server.new_account("pushapp")
    ub, pb, _ = server.new_account("push")
    app = Client(server, ua, pa, resource="appserver")
    b = Client(server, ub, pb)
    c = Client(server, u, p, resource="phone")
    try:
        ok(enable(c, app.full, "node-1", SECRET_FORM))
        c.close_cleanly()
        chat(b, jid, "secret body text")
        iq, node, fields, po = notification(app)
        assert iq.get("from") == jid and node == "node-1"
        assert fields["FORM_TYPE"] == "urn:xmpp:push:summary"
        assert fields["message-count"] == "1"
        assert fields["last-message-sender"] == b.full
        assert "secret body text" not in tostr(iq)      # never the content
        secret = [f for f in po.iter(q(NS_XDATA, "field")) if f.get("var") == "secret"]
        assert secret and secret[0].findtext(q(NS_XDATA, "value")) == "s3cr3t"
        chat(b, jid, "second")
        _, _, fields, _ = notification(app)
        assert fields["message-count"] == "2"
        # The user comes back and gets the messages from offline storage.
        c = Client(server, u, p)
        c.available()
        assert c.message(body="secret body text") is not None
        assert c.message(body="second") is not None
    finally:
        for x in (app, b, c):
            x.close()


def test_disable_and_unregistered_app_server_get_nothing(server):
    u, p, jid = server.new_account("push")
    ua, pa, _ = server.new_account("pushapp")
    ub, pb, _ = server.new_account("push")
    app = Client(server, ua, pa, resource="appserver")
    other = Client(server, ua, pa, resource="never-registered")
    b = Client(server, ub, pb)
    c = Client(server, u, p)
    try:
        ok(enable(c, app.full, "n1"))
        ok(enable(c, app.full, "n2"))
        ok(disable(c, app.full, "n1"))
        # Disabling what was never enabled is not an error (idempotent).
        ok(disable(c, other.full))
        c.close_cleanly()
        chat(b, jid, "one")
        _, node, _, _ = notification(app)
        assert node == "n2"
        app.quiet(is_push_iq, 0.5)
        # Without a node: every node of that app server goes.
        c = Client(server, u, p)
        ok(disable(c, app.full))
        c.close_cleanly()
        chat(b, jid, "two")
        app.quiet(is_push_iq, 1.0)
        other.quiet(is_push_iq, 0.1)
    finally:
        for x in (app, other, b, c):
            x.close()


def test_app_server_error_removes_its_registrations(server):
    u, p, jid = server.new_account("push")
    ua, pa, _ = server.new_account("pushapp")
    ub, pb, _ = server.new_account("push")
    app = Client(server, ua, pa, resource="appserver")
    b = Client(server, ub, pb)
    c = Client(server, u, p)
    try:
        ok(enable(c, app.full, "n1"))
        ok(enable(c, app.full, "n2"))
        c.close_cleanly()
        # A temporary error ('wait') keeps them.
        chat(b, jid, "one")
        for _ in range(2):
            iq, _, _, _ = notification(app, answer=False)
            app.send("<iq type='error' id='%s' to='%s'><error type='wait'><resource-constraint "
                     "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>" %
                     (iq.get("id"), iq.get("from")))
        chat(b, jid, "two")
        iq, _, _, _ = notification(app, answer=False)
        # A final one ('cancel': the device is gone) removes every node of that app server.
        mark = server.log_size()
        app.send("<iq type='error' id='%s' to='%s'><error type='cancel'><item-not-found "
                 "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>" %
                 (iq.get("id"), iq.get("from")))
        server.wait_log(r"event=push\.dropped user=%s " % u, mark)
        app.drain(0.5)
        chat(b, jid, "three")
        app.quiet(is_push_iq, 1.0)
    finally:
        for x in (app, b, c):
            x.close()


def test_unreachable_app_server_keeps_its_registration(server):
    u, p, jid = server.new_account("push")
    ua, pa, _ = server.new_account("pushapp")
    ub, pb, _ = server.new_account("push")
    app = Client(server, ua, pa, resource="appserver")
    b = Client(server, ub, pb)
    c = Client(server, u, p)
    try:
        ok(enable(c, app.full, "n1"))
        c.close_cleanly()
        app.close_cleanly()
        # Bounced by routing (no such resource): not a refusal.
        chat(b, jid, "while the app server is away")
        b.drain(0.5)
        app = Client(server, ua, pa, resource="appserver")
        chat(b, jid, "back")
        _, node, fields, _ = notification(app)
        assert node == "n1" and fields["message-count"] == "2"
    finally:
        for x in (app, b, c):
            x.close()


def test_detached_session_gets_a_notification(server):
    u, p, jid = server.new_account("push")
    ua, pa, _ = server.new_account("pushapp")
    ub, pb, _ = server.new_account("push")
    app = Client(server, ua, pa, resource="appserver")
    b = Client(server, ub, pb)
    mark = server.log_size()
    phone, jphone, _ = sm_login(server.c2s_port, u, p, resource="phone")
    try:
        phone.send("<presence/>")
        phone.send("<iq type='set' id='en'><enable xmlns='%s' jid='%s' node='dn'/></iq>" %
                   (NS_PUSH, app.full))
        while True:
            el = phone.next(5)
            if el.tag == q(NS_CLIENT, "iq") and el.get("id") == "en":
                assert el.get("type") == "result", tostr(el)
                break
        kill(phone)
        wait_detached(server, jphone, mark)
        chat(b, jphone, "while detached")
        _, node, fields, po = notification(app)
        assert node == "dn" and po is None
        assert fields["last-message-sender"] == b.full
        # Chat states alone are not worth a notification.
        b.send("<message to='%s' type='chat'><active xmlns='http://jabber.org/protocol/"
               "chatstates'/></message>" % jphone)
        app.quiet(is_push_iq, 0.7)
    finally:
        for x in (app, b):
            x.close()


def test_registration_limit_and_push_off(make_server):
    srv = make_server("--push-max-registrations", "2")
    u, p, _ = srv.new_account("push")
    c = Client(srv, u, p)
    try:
        ok(enable(c, "push.example.net", "a"))
        ok(enable(c, "push.example.net", "b"))
        r = enable(c, "push.example.net", "c")
        assert error_condition(r) == ("wait", "resource-constraint")
        ok(enable(c, "push.example.net", "a", SECRET_FORM))   # replacing is fine
        ok(disable(c, "push.example.net", "b"))
        ok(enable(c, "push.example.net", "c"))
    finally:
        c.close()
    off = make_server("--push-max-registrations", "0")
    u, p, _ = off.new_account("push")
    c = Client(off, u, p)
    try:
        assert error_condition(enable(c, "push.example.net", "a"))[1] == "not-allowed"
    finally:
        c.close()


def test_slixmpp_enables_push(server, xmpp, arun):
    from slixmpp.xmlstream import ET
    u, p, jid = server.new_account("push")
    ua, pa, _ = server.new_account("pushapp")
    ub, pb, _ = server.new_account("push")
    app = Client(server, ua, pa, resource="appserver")
    b = Client(server, ub, pb)
    cl = xmpp(jid + "/slix", p, server.c2s_port, plugins=["xep_0030", "xep_0004"])

    async def scenario():
        await connect_and_wait(cl)
        info = await cl["xep_0030"].get_info(jid=jid)
        assert NS_PUSH in info["disco_info"]["features"]
        iq = cl.make_iq_set()
        iq.append(ET.fromstring("<enable xmlns='%s' jid='%s' node='slix'>%s</enable>" %
                                (NS_PUSH, app.full, SECRET_FORM)))
        await iq.send(timeout=10)
        cl.disconnect()
        await asyncio.sleep(0.3)
    arun(scenario(), timeout=30)
    try:
        chat(b, jid, "hello")
        _, node, fields, po = notification(app)
        assert node == "slix" and fields["message-count"] == "1" and po is not None
    finally:
        app.close()
        b.close()
