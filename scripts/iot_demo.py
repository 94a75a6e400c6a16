#!/usr/bin/python3
"""`make demo`: stanzad with a hub and simulated devices, in a terminal view.

What happens (all on one loopback server, state in a temporary directory):

1. stanzad starts (registry.localhost and provisioning.localhost on), and
   stanzactl creates the accounts: a hub, a visitor, and N devices.
2. The devices (scripts/iot_device_sim.py) connect and register in the
   thing registry (XEP-0347) with their meta tags, KEY included.
3. The hub claims each device with those tags, as an installer scanning
   the QR codes would: the server makes hub and device friends, and
   provisions the device for the hub (XEP-0324).
4. The hub lets the visitor read the Temperature field only (a rule).
5. Every two seconds the hub reads every device (XEP-0323, momentary and
   status values) and the view shows what it received; every ten seconds
   it switches one device's relay (XEP-0325). The visitor reads a device
   now and then (the server narrows its request to Temperature) and tries
   to switch a relay (the server answers forbidden; the device never sees
   it).

It ends after --duration seconds or at Ctrl-C, stopping the server and
removing the state (--keep-state keeps it).
"""
import argparse
import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import slixmpp  # noqa: E402
from slixmpp.exceptions import IqError, IqTimeout  # noqa: E402
from slixmpp.xmlstream.handler import Callback  # noqa: E402
from slixmpp.xmlstream.matcher import MatchXPath  # noqa: E402

from iot_device_sim import (NS_CONTROL, NS_DISCOVERY, NS_SENSORDATA, SimDevice,  # noqa: E402
                            configure_client, q)

NS_PROV_OWNER = "urn:nf:iot:prov:o:1.0"
DOMAIN = "localhost"
READ_EVERY = 2.0
SWITCH_EVERY = 10.0
VISIT_EVERY = 5.0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, build, state, keep):
        self.build = build
        self.state = state
        self.keep = keep
        self.port = free_port()
        self.proc = None
        self.log = None

    def start(self):
        self.log = open(os.path.join(self.state, "stanzad.log"), "ab")
        self.proc = subprocess.Popen(
            [os.path.join(self.build, "stanzad"), "--domain", DOMAIN, "--state-dir", self.state,
             "--listen-c2s", "127.0.0.1:%d" % self.port, "--listen-c2s-tls", "off",
             "--listen-http", "off", "--registration", "closed", "--log-level", "info"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)  # Ctrl-C reaches us; we stop it in order
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise SystemExit("stanzad exited at startup; see %s/stanzad.log" % self.state)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("stanzad is not listening after 10 s")
                time.sleep(0.05)

    def add_user(self, user, password):
        r = subprocess.run([os.path.join(self.build, "stanzactl"), "--state-dir", self.state,
                            "user", "add", user], input=password + "\n", capture_output=True,
                           text=True, timeout=30)
        if r.returncode != 0:
            raise SystemExit("stanzactl user add %s: %s" % (user, r.stderr.strip()))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.log:
            self.log.close()


class Hub:
    """The owner: claims devices, reads them, switches relays, renders the view."""

    def __init__(self, port, password, visitor_password, devices, duration):
        self.port = port
        self.c = configure_client(slixmpp.ClientXMPP("hub@%s/console" % DOMAIN, password),
                                  "127.0.0.1", port)
        self.v = configure_client(slixmpp.ClientXMPP("visitor@%s/phone" % DOMAIN,
                                                     visitor_password), "127.0.0.1", port)
        self.devices = devices
        self.duration = duration
        self.rows = {d.boundjid.bare: {} for d in devices}
        self.log = []
        self.readings = 0
        self.seq = 0
        self.start = time.monotonic()
        self.next_table = self.start
        for client in (self.c, self.v):
            client.register_handler(Callback("fields", MatchXPath(
                "{jabber:client}message/{%s}fields" % NS_SENSORDATA), self.on_fields))

    def note(self, text):
        line = "%5.1fs  %s" % (time.monotonic() - self.start, text)
        self.log.append(line)
        del self.log[:-8]
        if not sys.stdout.isatty():
            print(line, flush=True)  # a log, not a screen

    def on_fields(self, msg):
        who = "hub" if msg["to"].bare == self.c.boundjid.bare else "visitor"
        row = self.rows.setdefault(msg["from"].bare, {})
        names = []
        for f in msg.xml.iter():
            name = f.get("name")
            if name and f.get("value") is not None:
                names.append(name)
                if who == "hub":
                    row[name] = (f.get("value"), f.get("unit") or "")
        if who == "hub":
            row["_at"] = time.monotonic()
            self.readings += 1
        else:
            self.note("visitor read %s: got %s (a rule allows Temperature only)" %
                      (msg["from"].user, ", ".join(sorted(set(names))) or "nothing"))

    async def connect(self, client):
        fut = asyncio.get_running_loop().create_future()
        client.add_event_handler("session_start", lambda _: fut.done() or fut.set_result(True),
                                 disposable=True)
        client.add_event_handler("failed_all_auth", lambda _: fut.done() or fut.set_exception(
            SystemExit("login failed")), disposable=True)
        client.connect(("127.0.0.1", self.port))
        await asyncio.wait_for(fut, 15)
        client.send_presence()

    async def iq(self, client, to, itype, payload):
        iq = client.Iq()  # a fresh id (make_iq's default id is '0')
        iq["to"] = to
        iq["type"] = itype
        iq.append(payload)
        return await iq.send(timeout=10)

    async def claim(self, d):
        mine = ET.Element(q(NS_DISCOVERY, "mine"))
        d.tag_elements(mine)
        await self.iq(self.c, "registry.%s" % DOMAIN, "set", mine)
        self.note("claimed %s (registry: %s)" % (d.boundjid.user, d.claim_string()[:48] + "..."))

    async def allow_visitor(self, d):
        rule = ET.Element(q(NS_PROV_OWNER, "canReadRule"), {
            "jid": d.boundjid.bare, "remoteJid": self.v.boundjid.bare, "result": "true"})
        part = ET.SubElement(rule, q(NS_PROV_OWNER, "partial"))
        ET.SubElement(part, q(NS_PROV_OWNER, "f"), {"n": "Temperature"})
        ET.SubElement(rule, q(NS_PROV_OWNER, "fromJid"))
        await self.iq(self.c, "provisioning.%s" % DOMAIN, "set", rule)

    async def read(self, client, d):
        self.seq += 1
        req = ET.Element(q(NS_SENSORDATA, "req"), {"seqnr": str(self.seq), "momentary": "true",
                                                    "status": "true"})
        try:
            await self.iq(client, d.boundjid.bare, "get", req)
        except (IqError, IqTimeout) as e:
            self.note("read %s failed: %s" % (d.boundjid.user, e))

    async def switch(self, client, d, who):
        on = not d.state["Relay"]
        s = ET.Element(q(NS_CONTROL, "set"))
        ET.SubElement(s, q(NS_CONTROL, "boolean"), {"name": "Relay", "value": str(on).lower()})
        try:
            await self.iq(client, d.boundjid.bare, "set", s)
            self.note("%s switched %s's relay %s" % (who, d.boundjid.user, "on" if on else "off"))
        except IqError as e:
            self.note("%s tried to switch %s's relay: %s (the device never saw it)" %
                      (who, d.boundjid.user, e.iq["error"]["condition"]))
        except IqTimeout:
            self.note("%s: no answer from %s" % (who, d.boundjid.user))

    def render(self, final=False):
        elapsed = time.monotonic() - self.start
        tty = sys.stdout.isatty() and not final
        lines = ["stanzad IoT demo  ·  %s  ·  %d devices  ·  %.0f/%.0f s  ·  %d readings  ·  "
                 "Ctrl-C stops" % (DOMAIN, len(self.devices), elapsed, self.duration,
                                   self.readings), ""]
        lines.append("%-14s %10s %9s %8s %7s %9s %8s" % ("device", "temp", "humidity",
                                                         "battery", "relay", "setpoint", "age"))
        for d in self.devices:
            r = self.rows.get(d.boundjid.bare, {})

            def v(name, fmt="%s%s"):
                x = r.get(name)
                return fmt % x if x else "-"
            age = "%.1fs" % (time.monotonic() - r["_at"]) if "_at" in r else "-"
            relay = {"true": "on", "false": "off"}.get(r.get("Relay", ("",))[0], "-")
            lines.append("%-14s %10s %9s %8s %7s %9s %8s" % (
                d.boundjid.user, v("Temperature", "%s %s"), v("Humidity"), v("Battery"),
                relay, v("Setpoint", "%s %s"), age))
        lines += ["", "events:"] + ["  " + e for e in self.log]
        if tty:
            sys.stdout.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
        elif final or time.monotonic() >= self.next_table:
            # Not a terminal: the table now and then; events are printed as they happen.
            self.next_table = time.monotonic() + 10
            sys.stdout.write("\n".join(lines[:3 + len(self.devices)]) + "\n\n")
        sys.stdout.flush()

    async def run(self):
        for client in (self.c, self.v):
            await self.connect(client)
        for d in self.devices:
            await asyncio.wait_for(d.online.wait(), 15)
            await d.register_in_registry()
            await self.claim(d)
            await self.allow_visitor(d)
        next_read = next_switch = next_visit = time.monotonic()
        turn = 0
        while time.monotonic() - self.start < self.duration:
            now = time.monotonic()
            if now >= next_read:
                await asyncio.gather(*(self.read(self.c, d) for d in self.devices))
                next_read = now + READ_EVERY
            if now >= next_switch:
                await self.switch(self.c, self.devices[turn % len(self.devices)], "hub")
                next_switch = now + SWITCH_EVERY
            if now >= next_visit:
                d = self.devices[turn % len(self.devices)]
                await self.read(self.v, d)
                await self.switch(self.v, d, "visitor")
                next_visit = now + VISIT_EVERY
                turn += 1
            self.render()
            await asyncio.sleep(0.5)
        self.render(final=True)


async def demo(args, server):
    pw = {name: secrets.token_hex(8) for name in ("hub", "visitor")}
    devices = []
    for i in range(1, args.devices + 1):
        pw["dev%d" % i] = secrets.token_hex(8)
    for user, password in pw.items():
        server.add_user(user, password)
    for i in range(1, args.devices + 1):
        d = SimDevice("dev%d@%s/sensor" % (i, DOMAIN), pw["dev%d" % i], port=server.port,
                      seed=i)
        devices.append(d)
        d.start()
    hub = Hub(server.port, pw["hub"], pw["visitor"], devices, args.duration)
    try:
        await hub.run()
    finally:
        for c in [hub.c, hub.v] + devices:
            c.disconnect()
        await asyncio.sleep(0.3)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(os.path.dirname(__file__), "..", "build"))
    ap.add_argument("--devices", type=int, default=5)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--keep-state", action="store_true")
    args = ap.parse_args()
    if not 1 <= args.devices <= 200:
        ap.error("--devices must be 1..200")
    for tool in ("stanzad", "stanzactl"):
        if not os.access(os.path.join(args.build, tool), os.X_OK):
            raise SystemExit("no %s in %s (run make first)" % (tool, args.build))
    state = tempfile.mkdtemp(prefix="stanzad-demo-")
    os.chmod(state, 0o700)
    server = Server(args.build, state, args.keep_state)
    try:
        server.start()
        asyncio.run(demo(args, server))
    except KeyboardInterrupt:
        print("\nstopped")
    finally:
        server.stop()
        if args.keep_state:
            print("state and server log kept in %s" % state)
        else:
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
