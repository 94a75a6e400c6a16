"""XEP-0323 sensor data and XEP-0325 control between clients and simulated
devices (scripts/iot_device_sim.py), through stanzad's routing and its
XEP-0324 enforcement: full and partial read-outs, failures, queued
read-outs and their cancellation, control by iq and by message, the
slixmpp xep_0323/xep_0325 plugins, requests to a bare JID, and what a
party without permission gets: forbidden, with nothing reaching the
device, or the request (and the answer) narrowed to the permitted fields
and parameters."""
import asyncio
import datetime

from iotutil import (NS_CONTROL, NS_SENSORDATA, NS_PROV_OWNER, bare, clients, control_set,
                     device_events, el, iq_error, next_message, next_question, owned_device, partial, q,
                     readout, send_iq, set_rule, wait_until, IqError)

assert clients  # the fixture, imported for pytest


def test_owner_reads_with_the_slixmpp_plugin(server, clients, arun):
    async def go():
        owner = await clients.client("owner", plugins=("xep_0323",))
        d = await owned_device(clients, owner)
        got = []
        done = asyncio.Event()

        def cb(from_jid, result, nodeId=None, timestamp=None, fields=None, error_msg=None):
            got.append((result, nodeId, fields))
            if result in ("done", "failure", "rejected"):
                done.set()
        owner["xep_0323"].request_data(owner.boundjid.full, d.boundjid.full, cb,
                                       flags={"momentary": "true"})
        await asyncio.wait_for(done.wait(), 10)
        results = [r for r, _, _ in got]
        assert results[0] == "accepted" and results[-1] == "done", got
        fields = {f["name"]: f for r, _, fs in got if r == "fields" for f in fs}
        assert fields["Temperature"]["typename"] == "numeric"
        assert fields["Temperature"]["unit"] == "°C"
        assert fields["Relay"]["typename"] == "boolean"
        assert "Humidity" in fields and "Setpoint" in fields
        assert "Battery" not in fields  # a status value, not asked for
    arun(go())


def test_full_and_partial_readouts(server, clients, arun):
    async def go():
        owner = await clients.client("owner")
        d = await owned_device(clients, owner)
        r = await readout(owner, d.boundjid.full, 1, all=True)
        assert r.accepted is not None and r.accepted.get("seqnr") == "1"
        # Momentary and status values, then history: several <fields/>, the last one done.
        kinds = [m for m, _ in r.messages]
        assert kinds.count("fields") >= 2, kinds
        assert r.messages[-1][1].get("done") == "true"
        assert {"Temperature", "Humidity", "Battery", "Signal", "Device ID"} <= set(r.fields)
        temps = r.fields["Temperature"]
        assert any(a.get("historicalHour") == "true" for _, _, _, a in temps)
        for stamp, _, _, _ in temps:
            datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        # A partial read-out: one field named.
        r = await readout(owner, d.boundjid.full, 2, fields=["Humidity"], momentary=True)
        assert set(r.fields) == {"Humidity"}
        assert r.nodes == {d.node_id}
        # An unknown node: the device's error comes back.
        try:
            await readout(owner, d.boundjid.full, 3, nodes=["nosuchnode"], momentary=True)
            raise AssertionError("read-out of an unknown node accepted")
        except IqError as e:
            assert e.iq["error"]["condition"] == "item-not-found"
    arun(go())


def test_readout_failure(server, clients, arun):
    async def go():
        owner = await clients.client("owner")
        d = await owned_device(clients, owner)
        await send_iq(owner, d.boundjid.full, "set", control_set([("boolean", "SensorFault",
                                                                   "true")]))
        r = await readout(owner, d.boundjid.full, 7, momentary=True)
        assert r.failure is not None and r.failure.get("done") == "true"
        err = r.failure.find(q(NS_SENSORDATA, "error"))
        assert err is not None and err.get("nodeId") == d.node_id and err.text
    arun(go())


def test_queued_readout_is_cancelled(server, clients, arun):
    async def go():
        owner = await clients.client("owner")
        d = await owned_device(clients, owner)
        when = (datetime.datetime.now(datetime.timezone.utc) +
                datetime.timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
        req = el(NS_SENSORDATA, "req", {"seqnr": "9", "momentary": "true", "when": when})
        r = await send_iq(owner, d.boundjid.full, "get", req)
        acc = r.xml.find(q(NS_SENSORDATA, "accepted"))
        assert acc.get("queued") == "true"
        r = await send_iq(owner, d.boundjid.full, "get", el(NS_SENSORDATA, "cancel",
                                                             {"seqnr": "9"}))
        assert r.xml.find(q(NS_SENSORDATA, "cancelled")).get("seqnr") == "9"
        assert device_events(d, "cancelled")
        assert await iq_error(owner, d.boundjid.full, "get",
                              el(NS_SENSORDATA, "cancel", {"seqnr": "9"})) == "item-not-found"
    arun(go())


def test_unprovisioned_device_is_plain_routing(server, clients, arun):
    async def go():
        anyone = await clients.client("anyone")
        d = await clients.device()  # never registered nor claimed: nothing to enforce
        r = await readout(anyone, d.boundjid.full, 1, momentary=True)
        assert "Temperature" in r.fields
        await send_iq(anyone, d.boundjid.full, "set", control_set([("boolean", "Relay", "true")]))
        assert d.state["Relay"] is True
        # Its bare JID does not tell a stranger whether it is online...
        before = d.readouts
        req = el(NS_SENSORDATA, "req", {"seqnr": "2", "momentary": "true"})
        assert await iq_error(anyone, bare(d), "get", req) == "service-unavailable"
        assert d.readouts == before
        # ...but does once the device shares its presence (it approves subscriptions itself).
        anyone.send_presence(pto=bare(d), ptype="subscribe")
        await wait_until(lambda: bool(anyone.client_roster.presence(bare(d))),
                         what="the device's presence")
        r = await readout(anyone, bare(d), 3, momentary=True)
        assert "Temperature" in r.fields
    arun(go())


def test_forbidden_readout_never_reaches_the_device(server, clients, arun):
    async def go():
        owner = await clients.client("owner")
        stranger = await clients.client("stranger")
        d = await owned_device(clients, owner)
        before = d.readouts
        req = el(NS_SENSORDATA, "req", {"seqnr": "5", "momentary": "true"},
                 [el(NS_SENSORDATA, "field", {"name": "Temperature"})])
        assert await iq_error(stranger, d.boundjid.full, "get", req) == "forbidden"
        # No rule yet: the owner is asked, with the fields of the request.
        ask = await next_question(owner, "canRead")
        assert ask.get("jid") == bare(d) and ask.get("remoteJid") == bare(stranger)
        assert ask.get("key")
        assert [f.get("n") for f in ask.findall(q(NS_PROV_OWNER, "f"))] == ["Temperature"]
        # Cancel needs read permission too; to the bare JID just the same.
        assert await iq_error(stranger, d.boundjid.full, "get",
                              el(NS_SENSORDATA, "cancel", {"seqnr": "5"})) == "forbidden"
        assert await iq_error(stranger, bare(d), "get", req) == "forbidden"
        await asyncio.sleep(0.2)
        assert d.readouts == before and not [e for e in device_events(d, "readout")
                                             if e["requester"].startswith(bare(stranger))]
        # A refusal of a rule is a refusal too.
        await set_rule(owner, "canReadRule", d, False, remoteJid=bare(stranger))
        assert await iq_error(stranger, d.boundjid.full, "get", req) == "forbidden"
    arun(go())


def test_partial_read_permission_narrows_request_and_answer(server, clients, arun):
    async def go():
        owner = await clients.client("owner")
        reader = await clients.client("reader")
        d = await owned_device(clients, owner)
        sloppy = await owned_device(clients, owner, honour_hints=False)
        for dev in (d, sloppy):
            await set_rule(owner, "canReadRule", dev, True, [partial("read", "Temperature",
                                                                     "Battery")],
                           remoteJid=bare(reader))
        # Asking for everything: the device is asked for the permitted fields only.
        r = await readout(reader, d.boundjid.full, 1, momentary=True, status=True)
        assert set(r.fields) == {"Temperature", "Battery"}
        ev = device_events(d, "readout")[-1]
        assert ev["fields"] == ["Battery", "Temperature"]
        # A device that ignores the hint: the server filters its answer.
        r = await readout(reader, sloppy.boundjid.full, 1, momentary=True, status=True)
        assert set(r.fields) == {"Temperature", "Battery"}, r.fields
        # Asking for one permitted and one other field: only the permitted one.
        r = await readout(reader, d.boundjid.full, 2, fields=["Temperature", "Humidity"],
                          momentary=True)
        assert set(r.fields) == {"Temperature"}
        # Only fields without permission: forbidden.
        req = el(NS_SENSORDATA, "req", {"seqnr": "3", "momentary": "true"},
                 [el(NS_SENSORDATA, "field", {"name": "Humidity"})])
        assert await iq_error(reader, d.boundjid.full, "get", req) == "forbidden"
        # The owner still reads everything.
        r = await readout(owner, sloppy.boundjid.full, 4, momentary=True, status=True)
        assert {"Humidity", "Relay", "Signal"} <= set(r.fields)
    arun(go())


def test_control_by_iq_and_by_message(server, clients, arun):
    async def go():
        owner = await clients.client("owner", plugins=("xep_0325",))
        d = await owned_device(clients, owner)
        r = await send_iq(owner, d.boundjid.full, "set",
                          control_set([("boolean", "Relay", "true"), ("double", "Setpoint", "23.5")]))
        assert r.xml.find(q(NS_CONTROL, "setResponse")) is not None
        assert d.state["Relay"] is True and d.state["Setpoint"] == 23.5
        # Read back: the control parameters show up as writable fields.
        rd = await readout(owner, d.boundjid.full, 1, momentary=True)
        assert rd.fields["Relay"][0][1] == "true" and rd.fields["Relay"][0][3]["writable"] == "true"
        assert rd.fields["Setpoint"][0][1] == "23.5"
        # Without an answer: a message.
        m = owner.make_message(mto=d.boundjid.full)
        m.append(control_set([("double", "Setpoint", "19")]))
        m.send()
        await wait_until(lambda: d.state["Setpoint"] == 19.0, what="the message's set applied")
        # The device's errors come back to the caller.
        try:
            await send_iq(owner, d.boundjid.full, "set", control_set([("int", "Nope", "1")]))
            raise AssertionError("unknown parameter accepted")
        except IqError as e:
            assert e.iq["error"]["condition"] == "bad-request"
            pe = e.iq.xml.find(".//" + q(NS_CONTROL, "paramError"))
            assert pe is not None and pe.get("var") == "Nope"
        # The control form.
        r = await send_iq(owner, d.boundjid.full, "get", el(NS_CONTROL, "getForm"))
        vars_ = {f.get("var") for f in r.xml.iter("{jabber:x:data}field")}
        assert {"Relay", "Setpoint"} <= vars_
        # The slixmpp xep_0325 plugin's set request.
        done = asyncio.Event()
        got = {}

        def cb(from_jid, result, nodeIds=None, fields=None, error_msg=None):
            got["result"] = result
            done.set()
        owner["xep_0325"].set_request(owner.boundjid.full, d.boundjid.full, cb,
                                      fields=[("Relay", "boolean", "false")])
        await asyncio.wait_for(done.wait(), 10)
        assert got["result"] == "OK" and d.state["Relay"] is False
    arun(go())


def test_forbidden_control_never_reaches_the_device(server, clients, arun):
    async def go():
        owner = await clients.client("owner")
        stranger = await clients.client("stranger")
        d = await owned_device(clients, owner)
        s = control_set([("boolean", "Relay", "true")])
        assert await iq_error(stranger, d.boundjid.full, "set", s) == "forbidden"
        ask = await next_question(owner, "canControl")
        assert [p.get("n") for p in ask.findall(q(NS_PROV_OWNER, "p"))] == ["Relay"]
        assert await iq_error(stranger, d.boundjid.full, "get", el(NS_CONTROL, "getForm")) == \
            "forbidden"
        # By message: an error message back, nothing applied.
        m = stranger.make_message(mto=d.boundjid.full)
        m.append(control_set([("boolean", "Relay", "true")]))
        m.send()
        back = await next_message(stranger, lambda m: m["type"] == "error", what="an error")
        assert back["error"]["condition"] == "forbidden"
        # A <set/> behind another IoT element, or in an error message, is refused all the same.
        m = stranger.make_message(mto=d.boundjid.full)
        m.append(el(NS_SENSORDATA, "fields", {"seqnr": "1"}))
        m.append(control_set([("boolean", "Relay", "true")]))
        m.send()
        back = await next_message(stranger, lambda m: m["type"] == "error", what="an error")
        assert back["error"]["condition"] == "forbidden"
        m = stranger.make_message(mto=d.boundjid.full, mtype="error")
        m.append(control_set([("boolean", "Relay", "true")]))
        m.send()
        await asyncio.sleep(0.2)
        assert d.state["Relay"] is False and not device_events(d, "control")
    arun(go())


def test_partial_control_permission(server, clients, arun):
    async def go():
        owner = await clients.client("owner")
        op = await clients.client("operator")
        d = await owned_device(clients, owner)
        await set_rule(owner, "canControlRule", d, True, [partial("control", "Relay")],
                       remoteJid=bare(op))
        await send_iq(op, d.boundjid.full, "set",
                      control_set([("boolean", "Relay", "true"), ("double", "Setpoint", "30")]))
        assert d.state["Relay"] is True and d.state["Setpoint"] == 21.0
        assert device_events(d, "control")[-1]["changes"] == {"Relay": True}
        assert await iq_error(op, d.boundjid.full, "set",
                              control_set([("double", "Setpoint", "30")])) == "forbidden"
    arun(go())


def test_requests_to_the_bare_jid(server, clients, arun):
    async def go():
        owner = await clients.client("owner")
        d = await owned_device(clients, owner)
        r = await readout(owner, bare(d), 11, momentary=True)
        assert str(r.result_from) == bare(d)   # answered from where it was asked
        assert "Temperature" in r.fields
        res = await send_iq(owner, bare(d), "set", control_set([("boolean", "Relay", "true")]))
        assert res["from"] == bare(d) and d.state["Relay"] is True
        # Nobody online: the server answers for the account.
        d.disconnect()
        await wait_until(lambda: not owner.client_roster.presence(bare(d)),
                         what="the device offline")
        assert await iq_error(owner, bare(d), "get", el(NS_SENSORDATA, "req", {
            "seqnr": "12", "momentary": "true"})) == "service-unavailable"
    arun(go())
