"""Helpers for the pubsub (XEP-0060) and PEP (XEP-0163) tests on raw
streams (imutil.Client): requests, data forms, errors with their
pubsub#errors condition, event notifications, and a client's XEP-0115
caps (presence with <c/>, and the answer to the server's disco#info).

Every wait is bounded."""
import base64
import hashlib
import itertools
import os

from harness import DOMAIN, NS_CLIENT, NS_DISCO_INFO, NS_STANZAS, q, tostr, xml_escape

PS = "http://jabber.org/protocol/pubsub"
PSO = PS + "#owner"
PSE = PS + "#event"
PSERR = PS + "#errors"
NS_XDATA = "jabber:x:data"
NS_CAPS = "http://jabber.org/protocol/caps"
NS_DELAY = "urn:xmpp:delay"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
SERVICE = "pubsub." + DOMAIN
NODE_CONFIG = PS + "#node_config"
PUBLISH_OPTIONS = PS + "#publish-options"
CLIENT_NODE = "https://client.example/test"


def form(form_type, fields):
    """A submitted data form; values are str, bool or lists of str."""
    out = ["<x xmlns='%s' type='submit'><field var='FORM_TYPE' type='hidden'><value>%s</value>"
           "</field>" % (NS_XDATA, form_type)]
    for var, val in fields.items():
        vals = val if isinstance(val, (list, tuple)) else [val]
        out.append("<field var='%s'>%s</field>" % (var, "".join(
            "<value>%s</value>" % xml_escape(("1" if v else "0") if isinstance(v, bool) else str(v))
            for v in vals)))
    out.append("</x>")
    return "".join(out)


def ps(c, type_, inner, to=SERVICE, owner=False, timeout=5.0):
    """Sends <pubsub>inner</pubsub> (owner namespace when owner); returns the answer."""
    return c.iq(type_, "<pubsub xmlns='%s'>%s</pubsub>" % (PSO if owner else PS, inner), to=to,
                timeout=timeout)


def ok(el):
    assert el.get("type") == "result", "not a result: %s" % tostr(el)
    return el


def perror(el):
    """(stanza condition, pubsub#errors condition or None) of an error answer."""
    assert el.get("type") == "error", "not an error: %s" % tostr(el)
    err = el.find(q(NS_CLIENT, "error"))
    assert err is not None, tostr(el)
    conds = [c.tag.split("}")[1] for c in err if c.tag.startswith("{%s}" % NS_STANZAS)
             and not c.tag.endswith("}text")]
    apps = [c.tag.split("}")[1] for c in err if c.tag.startswith("{%s}" % PSERR)]
    assert len(conds) == 1, tostr(el)
    return conds[0], (apps[0] if apps else None)


def create(c, node=None, config=None, to=SERVICE):
    attr = " node='%s'" % xml_escape(node) if node is not None else ""
    conf = "<configure>%s</configure>" % form(NODE_CONFIG, config) if config else ""
    return ps(c, "set", "<create%s/>%s" % (attr, conf), to=to)


def publish(c, node, payload="<entry xmlns='urn:test'>x</entry>", item_id=None, options=None,
            to=SERVICE, item=True):
    iid = " id='%s'" % xml_escape(item_id) if item_id else ""
    it = "<item%s>%s</item>" % (iid, payload or "") if item else ""
    po = "<publish-options>%s</publish-options>" % form(PUBLISH_OPTIONS, options) if options else ""
    return ps(c, "set", "<publish node='%s'>%s</publish>%s" % (xml_escape(node), it, po), to=to)


def published_id(answer):
    item = ok(answer).find("%s/%s/%s" % (q(PS, "pubsub"), q(PS, "publish"), q(PS, "item")))
    assert item is not None, tostr(answer)
    return item.get("id")


def subscribe(c, node, jid=None, to=SERVICE, options=None):
    opts = "<options>%s</options>" % form(PS + "#subscribe_options", options) if options else ""
    return ps(c, "set", "<subscribe node='%s' jid='%s'/>%s" % (xml_escape(node), jid or c.bare,
                                                                opts), to=to)


def configure(c, node, config, to=SERVICE):
    return ps(c, "set", "<configure node='%s'>%s</configure>" % (xml_escape(node),
                                                                  form(NODE_CONFIG, config)),
              to=to, owner=True)


def config_of(c, node, to=SERVICE):
    """{var: value or [values]} of the node's configuration form."""
    r = ok(ps(c, "get", "<configure node='%s'/>" % xml_escape(node), to=to, owner=True))
    x = r.find(".//%s" % q(NS_XDATA, "x"))
    out = {}
    for f in x.findall(q(NS_XDATA, "field")):
        vals = [v.text or "" for v in f.findall(q(NS_XDATA, "value"))]
        out[f.get("var")] = vals if f.get("type") in ("list-multi", "jid-multi") else \
            (vals[0] if vals else None)
    return out


def items_of(answer):
    """[(id, payload element or None)] of an items result."""
    its = ok(answer).find("%s/%s" % (q(PS, "pubsub"), q(PS, "items")))
    assert its is not None, tostr(answer)
    return [(i.get("id"), (list(i) or [None])[0]) for i in its.findall(q(PS, "item"))]


def get_items(c, node, to=SERVICE, max_items=None, ids=()):
    attr = " max_items='%d'" % max_items if max_items else ""
    inner = "".join("<item id='%s'/>" % xml_escape(i) for i in ids)
    return ps(c, "get", "<items node='%s'%s>%s</items>" % (xml_escape(node), attr, inner), to=to)


def is_event(el, node=None, kind=None):
    """Whether el is a pubsub event message (about node; with a child `kind`)."""
    if el.tag != q(NS_CLIENT, "message"):
        return False
    ev = el.find(q(PSE, "event"))
    if ev is None:
        return False
    child = list(ev)[0] if len(ev) else None
    if child is None:
        return False
    if node is not None and child.get("node") != node:
        return False
    return kind is None or child.tag == q(PSE, kind)


def event(c, node=None, kind="items", timeout=5.0):
    return c.wait(lambda el: is_event(el, node, kind), timeout,
                  "pubsub event %s about %r" % (kind, node))


def event_item_ids(msg):
    items = msg.find("%s/%s" % (q(PSE, "event"), q(PSE, "items")))
    return [i.get("id") for i in items.findall(q(PSE, "item"))]


def no_event(c, node=None, seconds=0.5):
    c.quiet(lambda el: is_event(el, node), seconds)


# ---- XEP-0115 caps of a raw client ----

def caps_ver(features, identity=("client", "pc", "", "test")):
    s = "%s/%s/%s/%s<" % identity + "".join(f + "<" for f in sorted(set(features)))
    return base64.b64encode(hashlib.sha1(s.encode("utf-8")).digest()).decode()


def disco_answer(iq_id, to, node, features, frm, identity=("client", "pc", "", "test")):
    feats = "".join("<feature var='%s'/>" % xml_escape(f) for f in sorted(set(features)))
    return ("<iq type='result' id='%s' to='%s' from='%s'><query xmlns='%s' node='%s'>"
            "<identity category='%s' type='%s' name='%s'/>%s</query></iq>" %
            (xml_escape(iq_id), xml_escape(to), xml_escape(frm), NS_DISCO_INFO, xml_escape(node),
             identity[0], identity[1], identity[3], feats))


def is_caps_query(el):
    return (el.tag == q(NS_CLIENT, "iq") and el.get("type") == "get" and
            el.find(q(NS_DISCO_INFO, "query")) is not None and
            (el.find(q(NS_DISCO_INFO, "query")).get("node") or "").startswith(CLIENT_NODE + "#"))


_uniq = itertools.count(1)


def advertise(c, notify=(), extra=None, expect_query=True, lie=None, priority=None,
              timeout=5.0):
    """Sends available presence with caps whose features include NODE+notify
    for each node in `notify`. When the server asks (expect_query), answers
    its disco#info with those features (or with `lie`, a different feature
    list, to test that unverifiable answers are not cached). Returns the ver.

    The server caches verified caps by ver for its whole life, so unless
    `extra` is given the features get a unique one (the server must ask);
    the extra features used are kept in c.caps_extra, to send the same
    caps again."""
    if extra is None:
        extra = ["urn:test:uniq:%d:%d" % (os.getpid(), next(_uniq))]
    c.caps_extra = list(extra)
    features = [NS_DISCO_INFO, NS_CAPS] + list(extra) + ["%s+notify" % n for n in notify]
    ver = caps_ver(features)
    prio = "<priority>%d</priority>" % priority if priority is not None else ""
    c.send("<presence>%s<c xmlns='%s' hash='sha-1' node='%s' ver='%s'/></presence>" %
           (prio, NS_CAPS, CLIENT_NODE, ver))
    if expect_query:
        el = c.wait(is_caps_query, timeout, "caps disco#info query")
        assert el.get("from") == DOMAIN, tostr(el)
        assert el.find(q(NS_DISCO_INFO, "query")).get("node") == CLIENT_NODE + "#" + ver
        c.send(disco_answer(el.get("id"), el.get("from"), CLIENT_NODE + "#" + ver,
                            lie if lie is not None else features, c.full))
    return ver


def no_caps_query(c, seconds=0.5):
    c.quiet(is_caps_query, seconds)
