"""Helpers for the IoT integration tests (XEP-0323/0324/0325/0347).

Devices are scripts/iot_device_sim.py SimDevice clients; owners and other
parties are plain slixmpp clients from harness.make_client. Requests are
built as ElementTree payloads on slixmpp stanzas, so every byte on the wire
is the XEPs' own.
"""
import asyncio
import os
import sys
import time
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))

from harness import DOMAIN, WAIT, connect_and_wait, disconnect, make_client  # noqa: E402
from iot_device_sim import SimDevice  # noqa: E402

NS_SENSORDATA = "urn:xmpp:iot:sensordata"
NS_CONTROL = "urn:xmpp:iot:control"
NS_PROV = "urn:xmpp:iot:provisioning"
NS_PROV_OWNER = "urn:nf:iot:prov:o:1.0"
NS_DISCOVERY = "urn:xmpp:iot:discovery"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
REGISTRY = "registry." + DOMAIN
PROVISIONING = "provisioning." + DOMAIN


def q(ns, name):
    return "{%s}%s" % (ns, name)


def el(ns, name, attrs=None, children=()):
    e = ET.Element(q(ns, name), {k: str(v) for k, v in (attrs or {}).items()})
    for c in children:
        e.append(c)
    return e


class Clients:
    """Starts clients and devices for a test and disconnects them afterwards."""

    def __init__(self, server, loop):
        self.server = server
        self.loop = loop
        self.all = []

    async def client(self, prefix="user", plugins=(), user=None, password=None):
        if user is None:
            user, password, _ = self.server.new_account(prefix)
        c = make_client("%s@%s/test" % (user, DOMAIN), password, self.server.c2s_port,
                        plugins=plugins)
        c.test_user = user
        c.test_password = password
        # Every message, body or not (slixmpp's 'message' event needs a body).
        c.test_raw = asyncio.Queue()
        c.register_handler(Callback("test raw messages", StanzaPath("message"),
                                    lambda m: c.test_raw.put_nowait(m)))
        self.all.append(c)
        await connect_and_wait(c)
        c.send_presence()
        return c

    async def device(self, prefix="dev", user=None, password=None, resource="sim", **kw):
        if user is None:
            user, password, _ = self.server.new_account(prefix)
        d = SimDevice("%s@%s/%s" % (user, DOMAIN, resource), password,
                      port=self.server.c2s_port, **kw)
        d.test_user = user
        d.test_password = password
        self.all.append(d)
        d.start()
        await asyncio.wait_for(d.online.wait(), WAIT)
        return d

    async def close(self):
        await asyncio.gather(*(disconnect(c) for c in self.all), return_exceptions=True)
        self.all = []


@pytest.fixture
def clients(server, loop):
    cs = Clients(server, loop)
    yield cs
    try:
        loop.run_until_complete(asyncio.wait_for(cs.close(), 10))
    except Exception:
        pass


def bare(c):
    return c.boundjid.bare


async def send_iq(c, to, itype, payload, timeout=WAIT):
    """Sends an iq with one payload; returns the result stanza (raises IqError)."""
    iq = c.Iq()  # a fresh id (make_iq's default id is '0')
    iq["to"] = to
    iq["type"] = itype
    iq.append(payload)
    return await iq.send(timeout=timeout)


async def iq_error(c, to, itype, payload, timeout=WAIT):
    """Sends an iq expected to fail; returns the error condition."""
    try:
        r = await send_iq(c, to, itype, payload, timeout)
    except IqError as e:
        return e.iq["error"]["condition"]
    raise AssertionError("expected an error, got %s" % r)


async def wait_until(pred, timeout=WAIT, what="condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("%s not met within %.0f s" % (what, timeout))
        await asyncio.sleep(0.02)


def device_events(d, kind):
    return [det for k, det in d.events if k == kind]


# ---- XEP-0347 ----

async def register(d, self_owned=False):
    return await d.register_in_registry(self_owned=self_owned)


def mine_payload(d, public=True, tags=None):
    m = el(NS_DISCOVERY, "mine")
    if not public:
        m.set("public", "false")
    for name, (numeric, value) in (tags or d.tags).items():
        m.append(el(NS_DISCOVERY, "num" if numeric else "str", {"name": name, "value": value}))
    return m


async def claim(owner, d, public=True):
    """Claims a registered device; returns the <claimed/> element of the answer."""
    r = await send_iq(owner, REGISTRY, "set", mine_payload(d, public))
    claimed = r.xml.find(q(NS_DISCOVERY, "claimed"))
    assert claimed is not None, "no <claimed/> in %s" % r
    assert claimed.get("jid") == bare(d)
    await wait_until(lambda: d.owner == bare(owner), what="the device told of its claim")
    return claimed


async def owned_device(clients, owner, **kw):
    """A device registered in the registry and claimed by owner (friends both ways)."""
    d = await clients.device(**kw)
    assert await register(d) is None
    await claim(owner, d)
    return d


async def search(c, ops, offset=None, max_count=None):
    s = el(NS_DISCOVERY, "search", children=ops)
    if offset is not None:
        s.set("offset", str(offset))
    if max_count is not None:
        s.set("maxCount", str(max_count))
    r = await send_iq(c, REGISTRY, "get", s)
    found = r.xml.find(q(NS_DISCOVERY, "found"))
    assert found is not None, str(r)
    things = []
    for t in found.findall(q(NS_DISCOVERY, "thing")):
        tags = {x.get("name"): x.get("value") for x in t}
        things.append((t.get("jid"), t.get("owner"), tags))
    return things, found.get("more") == "true"


# ---- XEP-0324 owner interface ----

async def set_rule(owner, name, thing, result, children=(), **attrs):
    rule = el(NS_PROV_OWNER, name, dict(jid=bare(thing) if not isinstance(thing, str) else thing,
                                        result="true" if result else "false", **attrs),
              children)
    return await send_iq(owner, PROVISIONING, "set", rule)


def partial(kind, *names):
    tag = "f" if kind == "read" else "p"
    return el(NS_PROV_OWNER, "partial", children=[el(NS_PROV_OWNER, tag, {"n": n}) for n in names])


def range_el(name, **attrs):
    return el(NS_PROV_OWNER, name, attrs)


async def next_message(c, pred, timeout=WAIT, what="message"):
    """The next message (any, with or without body) for which pred(m) holds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            m = await asyncio.wait_for(c.test_raw.get(), max(0.01, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise AssertionError("no %s within %.0f s" % (what, timeout))
        if pred(m):
            return m


async def next_question(c, name, timeout=WAIT):
    """The next message from the provisioning service carrying <name/> (owner ns)."""
    deadline = time.monotonic() + timeout
    while True:
        m = await asyncio.wait_for(c.test_raw.get(), max(0.01, deadline - time.monotonic()))
        x = m.xml.find(q(NS_PROV_OWNER, name))
        if x is not None and m["from"].bare == PROVISIONING:
            return x


# ---- XEP-0323 ----

class Readout:
    """What came back for one read-out: accepted, messages, the fields by name."""

    def __init__(self):
        self.accepted = None
        self.messages = []
        self.fields = {}
        self.nodes = set()
        self.failure = None
        self.done = asyncio.Event()


async def readout(c, to, seqnr, fields=(), nodes=(), timeout=WAIT, **flags):
    """An XEP-0323 read-out; returns a Readout once done (raises IqError if refused)."""
    r = Readout()

    def on_msg(m):
        for tag in ("fields", "failure", "started", "done"):
            x = m.xml.find(q(NS_SENSORDATA, tag))
            if x is None or x.get("seqnr") != str(seqnr):
                continue
            r.messages.append((tag, x))
            if tag == "fields":
                for node in x.findall(q(NS_SENSORDATA, "node")):
                    r.nodes.add(node.get("nodeId"))
                    for ts in node:
                        for f in ts:
                            r.fields.setdefault(f.get("name"), []).append(
                                (ts.get("value"), f.get("value"), f.tag.split("}")[1],
                                 dict(f.attrib)))
            if tag == "failure":
                r.failure = x
            if tag == "done" or x.get("done") == "true":
                r.done.set()
    name = "test readout %s %s" % (seqnr, id(r))
    c.register_handler(Callback(name, StanzaPath("message"), on_msg))
    try:
        req = el(NS_SENSORDATA, "req", dict(seqnr=seqnr, **{k: "true" for k in flags}),
                 [el(NS_SENSORDATA, "node", {"nodeId": n}) for n in nodes] +
                 [el(NS_SENSORDATA, "field", {"name": n}) for n in fields])
        res = await send_iq(c, to, "get", req, timeout)
        r.accepted = res.xml.find(q(NS_SENSORDATA, "accepted"))
        r.result_from = res["from"]
        await asyncio.wait_for(r.done.wait(), timeout)
        return r
    finally:
        c.remove_handler(name)


def control_set(params, nodes=()):
    """<set/> with typed parameters [(type, name, value)]."""
    return el(NS_CONTROL, "set", children=[el(NS_CONTROL, "node", {"nodeId": n}) for n in nodes] +
              [el(NS_CONTROL, t, {"name": n, "value": v}) for t, n, v in params])


__all__ = [n for n in dir() if not n.startswith("_")] + ["IqError", "IqTimeout"]
