#!/usr/bin/python3
"""Reference IoT device simulator for stanzad (slixmpp, asyncio).

Each simulated device is an XMPP client that behaves like a small sensor
with an actuator:

- XEP-0323 sensor data: answers <req/> read-outs (iq get) with <accepted/>
  and then <fields/> messages: momentary Temperature (degC), Humidity (%),
  Setpoint (degC, writable) and Relay (writable), status Battery (%) and
  Signal (dBm), identity Device ID and Model, and hourly historical
  temperatures when historical values are asked for, each block with its
  timestamp. Field and node names in the request are honoured as hints.
  'when' in the future queues the read-out (<accepted queued='true'/>,
  <started/> at that time); <cancel/> cancels a queued one. While the
  control parameter SensorFault is true, read-outs end in <failure/>.
- XEP-0325 control: <set/> in an iq (answered <setResponse/>, or
  bad-request with <paramError/> for unknown parameters and wrong types)
  or in a message (no answer); typed parameters or a submitted form;
  <getForm/> gives the control form. Parameters: Relay (boolean),
  Setpoint (double, 5..35), SensorFault (boolean), ReportInterval (int).
- XEP-0324: answers the provisioning service's <clearCache/>, notes
  <friend/>/<unfriend/> recommendations.
- XEP-0347: can register itself in the thing registry with meta tags
  (SN, MAN, MODEL, V, CLASS, KEY), and follows <claimed/>, <removed/>
  and <disowned/> (registering again after a disown).

Many devices run in one process on one asyncio loop:

    scripts/iot_device_sim.py --server 127.0.0.1:5222 --domain localhost \\
        --prefix dev --count 5 --password secret --register-in-registry

The accounts must exist (e.g. `stanzactl user add dev1`). Events are printed
one per line (JSON with --json). Tests import SimDevice from this file.
"""
import argparse
import asyncio
import datetime
import json
import logging
import random
import ssl
import sys
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

NS_CLIENT = "jabber:client"
NS_SENSORDATA = "urn:xmpp:iot:sensordata"
NS_CONTROL = "urn:xmpp:iot:control"
NS_PROVISIONING = "urn:xmpp:iot:provisioning"
NS_DISCOVERY = "urn:xmpp:iot:discovery"
NS_DATA = "jabber:x:data"
NS_XDV = "http://jabber.org/protocol/xdata-validate"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"

FIELD_TYPES = ("momentary", "peak", "status", "computed", "identity", "historicalSecond",
               "historicalMinute", "historicalHour", "historicalDay", "historicalWeek",
               "historicalMonth", "historicalQuarter", "historicalYear", "historicalOther")
MAX_QUEUE_DELAY = 3600.0  # a read-out 'when' further away is refused
HISTORY_HOURS = 6         # hourly historical temperatures kept


def q(ns, name):
    return "{%s}%s" % (ns, name)


def now_stamp(t=None):
    """xs:dateTime in UTC without fractions."""
    t = t or datetime.datetime.now(datetime.timezone.utc)
    return t.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_bool(v):
    if v in ("true", "1"):
        return True
    if v in ("false", "0"):
        return False
    raise ValueError("not a boolean: %r" % v)


def configure_client(c, host, port, verify_tls=False):
    """Sets up a slixmpp client for a local test server: no DNS (host:port
    given), and, unless verify_tls, the server's self-signed certificate
    accepted."""
    if not verify_tls:
        c.ssl_context.check_hostname = False
        c.ssl_context.verify_mode = ssl.CERT_NONE
    c.use_ipv6 = False
    c.use_aiodns = False
    c.whitespace_keepalive = False

    async def no_dns(domain, port_=None):
        return [(c.boundjid.domain, host, port)]
    c.get_dns_records = no_dns
    return c


class ParamError(Exception):
    def __init__(self, name, text):
        super().__init__(text)
        self.name = name
        self.text = text


class SimDevice(slixmpp.ClientXMPP):
    """One simulated device. Attributes tests may read:

    state        dict of control parameters (Relay, Setpoint, SensorFault, ReportInterval)
    events       list of (kind, detail dict), newest last
    owner        bare JID of the owner once claimed, else None
    tags         dict name -> (is_numeric, value) of the registry meta tags
    """

    def __init__(self, jid, password, *, port=5222, host="127.0.0.1", seed=None,
                 tags=None, node_id=None, on_event=None, verify_tls=False, honour_hints=True):
        super().__init__(jid, password)
        # False: a sloppy device that reports every field whatever the request names
        # (XEP-0323 allows it; the server filters for restricted readers).
        self.honour_hints = honour_hints
        self.sim_host = host
        self.sim_port = port
        self.rng = random.Random(seed if seed is not None else jid)
        self.node_id = node_id or self.boundjid.user
        self.on_event = on_event
        self.events = []
        self.owner = None
        self.registered = asyncio.Event()
        self.online = asyncio.Event()
        self.readouts = 0
        self.clear_cache_count = 0
        self.state = {"Relay": False, "Setpoint": 21.0, "SensorFault": False,
                      "ReportInterval": 60}
        # Sensor model: a temperature drifting around the setpoint.
        self.temperature = 20.0 + self.rng.uniform(-2.0, 2.0)
        self.humidity = 40.0 + self.rng.uniform(-5.0, 5.0)
        self.battery = 100.0 - self.rng.uniform(0.0, 20.0)
        self.history = []  # (datetime, temperature), newest first
        self.queued = {}   # (requester, seqnr) -> asyncio.TimerHandle
        sn = "%012d" % self.rng.randrange(10 ** 12)
        self.tags = tags if tags is not None else {
            "SN": (False, sn), "MAN": (False, "stanzad.example"), "MODEL": (False, "SimSensor"),
            "V": (True, "1.2"), "CLASS": (False, "Thermostat"),
            "KEY": (False, "%032x" % self.rng.getrandbits(128)),
        }
        configure_client(self, host, port, verify_tls)
        self.register_plugin("xep_0030")
        self.add_event_handler("session_start", self._session_start)
        handlers = [
            ("sim req", q(NS_SENSORDATA, "req"), self._iq_req),
            ("sim cancel", q(NS_SENSORDATA, "cancel"), self._iq_cancel),
            ("sim set", q(NS_CONTROL, "set"), self._iq_set),
            ("sim getForm", q(NS_CONTROL, "getForm"), self._iq_get_form),
            ("sim clearCache", q(NS_PROVISIONING, "clearCache"), self._iq_clear_cache),
            ("sim claimed", q(NS_DISCOVERY, "claimed"), self._iq_registry),
            ("sim removed", q(NS_DISCOVERY, "removed"), self._iq_registry),
            ("sim disowned", q(NS_DISCOVERY, "disowned"), self._iq_registry),
        ]
        for name, tag, fn in handlers:
            self.register_handler(Callback(name, MatchXPath("{%s}iq/%s" % (NS_CLIENT, tag)), fn))
        # Messages without a body (slixmpp's 'message' event wants one): control, advice.
        for tag in (q(NS_CONTROL, "set"), q(NS_PROVISIONING, "friend"),
                    q(NS_PROVISIONING, "unfriend")):
            self.register_handler(Callback("sim message " + tag, MatchXPath(
                "{%s}message/%s" % (NS_CLIENT, tag)), self._message))

    # -- bookkeeping --

    def note(self, kind, **detail):
        self.events.append((kind, detail))
        if self.on_event:
            self.on_event(self, kind, detail)

    def start(self):
        self.connect((self.sim_host, self.sim_port))

    async def _session_start(self, _):
        self["xep_0030"].add_feature(NS_SENSORDATA)
        self["xep_0030"].add_feature(NS_CONTROL)
        self.send_presence()
        await self.get_roster()
        self.online.set()
        self.note("online", jid=self.boundjid.full)

    # -- the sensor --

    def sample(self):
        """Advances the sensor model by one step; returns the momentary values."""
        target = self.state["Setpoint"] + (1.5 if self.state["Relay"] else -1.0)
        self.temperature += 0.2 * (target - self.temperature) + self.rng.gauss(0, 0.1)
        self.humidity = min(95.0, max(15.0, self.humidity + self.rng.gauss(0, 0.4)))
        self.battery = max(0.0, self.battery - self.rng.uniform(0.0, 0.05))
        stamp = datetime.datetime.now(datetime.timezone.utc)
        hour = stamp.replace(minute=0, second=0, microsecond=0)
        if not self.history or self.history[0][0] != hour:
            self.history.insert(0, (hour, self.temperature))
            del self.history[HISTORY_HOURS:]
        return stamp

    def _fields(self, flags, names, stamp):
        """The field elements of one read-out: [(timestamp, [ET elements])]."""
        def field(tag, name, value, kinds, unit=None, writable=None):
            el = ET.Element(q(NS_SENSORDATA, tag), {"name": name, "value": value,
                                                    "automaticReadout": "true"})
            for k in kinds:
                el.set(k, "true")
            if unit:
                el.set("unit", unit)
            if writable is not None:
                el.set("writable", "true" if writable else "false")
            return el

        want_all = flags.get("all") or not any(flags.get(t) for t in FIELD_TYPES + ("historical",))
        blocks = []
        now = []
        if want_all or flags.get("momentary"):
            now += [field("numeric", "Temperature", "%.1f" % self.temperature, ["momentary"], "°C"),
                    field("numeric", "Humidity", "%.0f" % self.humidity, ["momentary"], "%"),
                    field("numeric", "Setpoint", "%.1f" % self.state["Setpoint"], ["momentary"],
                          "°C", True),
                    field("boolean", "Relay", "true" if self.state["Relay"] else "false",
                          ["momentary"], writable=True)]
        if want_all or flags.get("status"):
            now += [field("numeric", "Battery", "%.0f" % self.battery, ["status"], "%"),
                    field("int", "Signal", str(-40 - self.rng.randrange(40)), ["status"])]
        if want_all or flags.get("identity"):
            now += [field("string", "Device ID", self.node_id, ["identity"]),
                    field("string", "Model", self.tags.get("MODEL", (False, "SimSensor"))[1],
                          ["identity"])]
        if names and self.honour_hints:
            now = [el for el in now if el.get("name") in names]
        if now:
            blocks.append((now_stamp(stamp), now))
        historical = want_all or flags.get("historical") or any(
            flags.get(t) for t in FIELD_TYPES if t.startswith("historical"))
        if historical and (not names or not self.honour_hints or "Temperature" in names):
            for when, temp in self.history:
                blocks.append((now_stamp(when), [field("numeric", "Temperature", "%.1f" % temp,
                                                       ["historicalHour"], "°C")]))
        return blocks

    # -- XEP-0323 --

    def _error(self, iq, condition, text=None, etype="cancel", extra=None):
        r = iq.reply(clear=True)
        r["type"] = "error"
        r["error"]["condition"] = condition
        r["error"]["type"] = etype
        if text:
            r["error"]["text"] = text
        if extra is not None:
            r["error"].xml.append(extra)
        r.send()

    def _iq_req(self, iq):
        if iq["type"] != "get":
            return
        req = iq.xml.find(q(NS_SENSORDATA, "req"))
        seqnr = req.get("seqnr")
        if not seqnr:
            self._error(iq, "bad-request", "seqnr is required", "modify")
            return
        nodes = [n.get("nodeId") for n in req.findall(q(NS_SENSORDATA, "node"))]
        if any(n != self.node_id for n in nodes):
            self._error(iq, "item-not-found", "no such node")
            return
        flags = {}
        for k in FIELD_TYPES + ("all", "historical"):
            if req.get(k) is not None:
                try:
                    flags[k] = parse_bool(req.get(k))
                except ValueError:
                    self._error(iq, "bad-request", "bad %s" % k, "modify")
                    return
        names = {f.get("name") for f in req.findall(q(NS_SENSORDATA, "field"))}
        requester = iq["from"].full
        delay = 0.0
        if req.get("when"):
            try:
                when = datetime.datetime.fromisoformat(req.get("when").replace("Z", "+00:00"))
                if when.tzinfo is None:
                    when = when.replace(tzinfo=datetime.timezone.utc)
                delay = (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
            except ValueError:
                self._error(iq, "bad-request", "bad 'when'", "modify")
                return
            if delay > MAX_QUEUE_DELAY:
                self._error(iq, "bad-request", "'when' is too far away", "modify")
                return
        r = iq.reply(clear=True)
        acc = ET.Element(q(NS_SENSORDATA, "accepted"), {"seqnr": seqnr})
        if delay > 0:
            acc.set("queued", "true")
        r.append(acc)
        r.send()
        self.note("readout", requester=requester, seqnr=seqnr, fields=sorted(names),
                   queued=delay > 0)
        if delay > 0:
            key = (requester, seqnr)
            self.queued[key] = self.loop.call_later(delay, self._start_queued, key, flags, names)
        else:
            self._readout(requester, seqnr, flags, names)

    def _start_queued(self, key, flags, names):
        if self.queued.pop(key, None) is None:
            return
        requester, seqnr = key
        msg = self.make_message(mto=requester)
        msg.append(ET.Element(q(NS_SENSORDATA, "started"), {"seqnr": seqnr}))
        msg.send()
        self._readout(requester, seqnr, flags, names)

    def _readout(self, requester, seqnr, flags, names):
        self.readouts += 1
        stamp = self.sample()
        if self.state["SensorFault"]:
            msg = self.make_message(mto=requester)
            fail = ET.SubElement(msg.xml, q(NS_SENSORDATA, "failure"),
                                 {"seqnr": seqnr, "done": "true"})
            err = ET.SubElement(fail, q(NS_SENSORDATA, "error"),
                                {"nodeId": self.node_id, "timestamp": now_stamp(stamp)})
            err.text = "Sensor timeout."
            msg.send()
            self.note("failure", requester=requester, seqnr=seqnr)
            return
        blocks = self._fields(flags, names, stamp)
        # Momentary values in one message, history in another: a partial, then a full read-out.
        groups = [blocks[:1], blocks[1:]] if len(blocks) > 1 else [blocks]
        for i, group in enumerate(groups):
            msg = self.make_message(mto=requester)
            attrs = {"seqnr": seqnr}
            if i == len(groups) - 1:
                attrs["done"] = "true"
            fields = ET.SubElement(msg.xml, q(NS_SENSORDATA, "fields"), attrs)
            if group:
                node = ET.SubElement(fields, q(NS_SENSORDATA, "node"), {"nodeId": self.node_id})
                for stamp_text, els in group:
                    ts = ET.SubElement(node, q(NS_SENSORDATA, "timestamp"), {"value": stamp_text})
                    ts.extend(els)
            msg.send()

    def _iq_cancel(self, iq):
        if iq["type"] != "get":
            return
        seqnr = iq.xml.find(q(NS_SENSORDATA, "cancel")).get("seqnr")
        handle = self.queued.pop((iq["from"].full, seqnr), None)
        if handle is None:
            self._error(iq, "item-not-found", "no queued read-out with that seqnr")
            return
        handle.cancel()
        r = iq.reply(clear=True)
        r.append(ET.Element(q(NS_SENSORDATA, "cancelled"), {"seqnr": seqnr}))
        r.send()
        self.note("cancelled", requester=iq["from"].full, seqnr=seqnr)

    # -- XEP-0325 --

    def _parse_set(self, set_el):
        """The parameters of a <set/> as {name: value}; raises ParamError."""
        changes = {}
        typed = {"boolean": "bool", "double": "float", "int": "int", "long": "int",
                 "string": "str"}
        for ch in set_el:
            tag = ch.tag.split("}")[-1]
            if tag == "node":
                if ch.get("nodeId") != self.node_id:
                    raise ParamError(ch.get("nodeId") or "", "No such node.")
                continue
            if tag == "x" and ch.tag.startswith("{%s}" % NS_DATA):
                for f in ch.findall(q(NS_DATA, "field")):
                    var = f.get("var")
                    if not var or f.get("type") == "hidden" or var in ("FORM_TYPE", "xdd session"):
                        continue
                    v = f.find(q(NS_DATA, "value"))
                    changes[var] = self._convert(var, None, v.text if v is not None else "")
                continue
            name = ch.get("name")
            if tag not in typed and tag not in ("color", "date", "dateTime", "duration", "time"):
                raise ParamError(name or tag, "Unknown parameter element.")
            changes[name] = self._convert(name, typed.get(tag, "str"), ch.get("value"))
        return changes

    def _convert(self, name, kind, value):
        want = {"Relay": "bool", "SensorFault": "bool", "Setpoint": "float",
                "ReportInterval": "int"}
        if name not in want:
            raise ParamError(name or "", "Unknown parameter.")
        try:
            if want[name] == "bool":
                if kind not in (None, "bool"):
                    raise ValueError
                return parse_bool(value)
            if want[name] == "float":
                if kind not in (None, "float", "int"):
                    raise ValueError
                v = float(value)
                if not 5.0 <= v <= 35.0:
                    raise ParamError(name, "Out of range (5..35).")
                return v
            if kind not in (None, "int"):
                raise ValueError
            v = int(value)
            if not 1 <= v <= 86400:
                raise ParamError(name, "Out of range (1..86400).")
            return v
        except (TypeError, ValueError):
            raise ParamError(name, "Invalid parameter type.")

    def _apply(self, changes, sender):
        for k, v in changes.items():
            self.state[k] = v
        self.note("control", sender=sender, changes=changes)

    def _iq_set(self, iq):
        if iq["type"] != "set":
            return
        try:
            changes = self._parse_set(iq.xml.find(q(NS_CONTROL, "set")))
        except ParamError as e:
            pe = ET.Element(q(NS_CONTROL, "paramError"), {"var": e.name})
            pe.text = e.text
            self._error(iq, "bad-request", None, "modify", pe)
            return
        self._apply(changes, iq["from"].full)
        r = iq.reply(clear=True)
        r.append(ET.Element(q(NS_CONTROL, "setResponse"), {"responseCode": "OK"}))
        r.send()

    def _iq_get_form(self, iq):
        if iq["type"] != "get":
            return
        r = iq.reply(clear=True)
        x = ET.SubElement(r.xml, q(NS_DATA, "x"), {"type": "form"})
        ET.SubElement(x, q(NS_DATA, "title")).text = "SimSensor %s" % self.node_id
        spec = [("Relay", "boolean", "Relay", "true" if self.state["Relay"] else "false", None),
                ("Setpoint", "text-single", "Setpoint (°C)", "%.1f" % self.state["Setpoint"],
                 ("xs:double", "5", "35")),
                ("SensorFault", "boolean", "Simulate a sensor fault",
                 "true" if self.state["SensorFault"] else "false", None),
                ("ReportInterval", "text-single", "Report interval (s)",
                 str(self.state["ReportInterval"]), ("xs:int", "1", "86400"))]
        for var, ftype, label, value, validate in spec:
            f = ET.SubElement(x, q(NS_DATA, "field"), {"var": var, "type": ftype, "label": label})
            ET.SubElement(f, q(NS_DATA, "value")).text = value
            if validate:
                v = ET.SubElement(f, q(NS_XDV, "validate"), {"datatype": validate[0]})
                ET.SubElement(v, q(NS_XDV, "range"), {"min": validate[1], "max": validate[2]})
        r.send()

    # -- messages: control without answer, provisioning advice --

    def _message(self, msg):
        set_el = msg.xml.find(q(NS_CONTROL, "set"))
        if set_el is not None and msg["type"] != "error":
            try:
                self._apply(self._parse_set(set_el), msg["from"].full)
            except ParamError as e:
                self.note("control_rejected", sender=msg["from"].full, param=e.name)
            return
        for tag in ("friend", "unfriend"):
            el = msg.xml.find(q(NS_PROVISIONING, tag))
            if el is not None:
                self.note(tag, jid=el.get("jid"))

    # -- XEP-0324 --

    def _iq_clear_cache(self, iq):
        if iq["type"] != "set":
            return
        self.clear_cache_count += 1
        r = iq.reply(clear=True)
        r.append(ET.Element(q(NS_PROVISIONING, "clearCacheResponse")))
        r.send()
        self.note("clear_cache", sender=iq["from"].full)

    # -- XEP-0347 --

    def registry_jid(self):
        return "registry.%s" % self.boundjid.domain

    def tag_elements(self, parent):
        for name, (numeric, value) in self.tags.items():
            ET.SubElement(parent, q(NS_DISCOVERY, "num" if numeric else "str"),
                          {"name": name, "value": value})

    async def register_in_registry(self, self_owned=False, timeout=10):
        """Registers the device; returns the owner's JID if it is claimed already, else None."""
        iq = self.make_iq_set(ito=self.registry_jid())
        reg = ET.SubElement(iq.xml, q(NS_DISCOVERY, "register"))
        if self_owned:
            reg.set("selfOwned", "true")
        self.tag_elements(reg)
        r = await iq.send(timeout=timeout)
        claimed = r.xml.find(q(NS_DISCOVERY, "claimed"))
        self.owner = claimed.get("jid") if claimed is not None else None
        self.registered.set()
        self.note("registered", claimed_by=self.owner)
        return self.owner

    def claim_string(self):
        """The IoTDisco string of XEP-0347 3.7 (what a QR code on the device would hold)."""
        parts = ["IoTDisco"]
        for name, (numeric, value) in self.tags.items():
            v = value.replace("\\", "\\\\").replace(";", "\\;")
            parts.append("%s%s:%s" % ("#" if numeric else "", name, v))
        return ";".join(parts)

    def _iq_registry(self, iq):
        if iq["type"] != "set" or iq["from"].bare != self.registry_jid():
            return
        el = next(iter(iq.xml))
        kind = el.tag.split("}")[-1]
        iq.reply(clear=True).send()
        if kind == "claimed":
            self.owner = el.get("jid")
            self.note("claimed", owner=self.owner, public=el.get("public", "true"))
        elif kind == "removed":
            self.note("removed")
        elif kind == "disowned":
            self.owner = None
            self.note("disowned")
            # XEP-0347 3.13: register again so that the device can be claimed anew.
            asyncio.ensure_future(self._register_again())

    async def _register_again(self):
        await asyncio.sleep(0.2)
        try:
            await self.register_in_registry()
        except Exception as e:  # the registry may refuse; the device goes on
            self.note("register_failed", error=str(e))


async def run_devices(args):
    host, _, port = args.server.rpartition(":")
    loop = asyncio.get_running_loop()
    devices = []

    def on_event(dev, kind, detail):
        if args.json:
            print(json.dumps({"device": dev.boundjid.bare, "event": kind, **detail},
                             default=str), flush=True)
        elif kind != "readout" or args.verbose:
            print("%-28s %-12s %s" % (dev.boundjid.bare, kind, detail), flush=True)

    for i in range(1, args.count + 1):
        jid = "%s%d@%s/sim" % (args.prefix, i, args.domain)
        d = SimDevice(jid, args.password, host=host or "127.0.0.1", port=int(port),
                      on_event=on_event, seed=args.seed + i if args.seed is not None else None)
        devices.append(d)
        d.start()
    if args.register_in_registry:
        async def reg(d):
            try:
                await asyncio.wait_for(d.online.wait(), 15)
                await d.register_in_registry()
                print("%s claim with: %s" % (d.boundjid.bare, d.claim_string()), flush=True)
            except Exception as e:
                print("%s: registration failed: %s" % (d.boundjid.bare, e), file=sys.stderr)
        await asyncio.gather(*(reg(d) for d in devices))
    try:
        if args.duration:
            await asyncio.sleep(args.duration)
        else:
            await loop.create_future()
    finally:
        for d in devices:
            d.disconnect()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", default="127.0.0.1:5222", help="HOST:PORT of the c2s listener")
    ap.add_argument("--domain", default="localhost")
    ap.add_argument("--prefix", default="dev", help="accounts are PREFIX1..PREFIXn")
    ap.add_argument("--count", type=int, default=3)
    ap.add_argument("--password", required=True)
    ap.add_argument("--register-in-registry", action="store_true",
                    help="register each device in registry.DOMAIN (XEP-0347)")
    ap.add_argument("--duration", type=float, default=0, help="seconds to run (0: until Ctrl-C)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="events as JSON lines")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    try:
        asyncio.run(run_devices(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
