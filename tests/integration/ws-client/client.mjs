// A real XMPP-over-WebSocket client (xmpp.js, @xmpp/client) driven by the
// integration tests (test_websocket.py) through stdin/stdout, one JSON
// object per line.
//
//   node --experimental-websocket client.mjs SERVICE JID PASSWORD [RESOURCE]
//
// Events printed: {"event":"online","jid":...}, {"event":"message","from":...,
// "body":...}, {"event":"stanza","xml":...} for anything else received,
// {"event":"error","message":...}, {"event":"offline"}.
// Commands read: {"cmd":"message","to":...,"body":...},
// {"cmd":"iq","xml":"<iq .../>"} (answer printed as {"event":"iq","xml":...}),
// {"cmd":"stop"}.
//
// Node 20 has WebSocket behind --experimental-websocket (on by default from
// Node 22); for wss:// with the test server's self-signed certificate the
// test sets NODE_TLS_REJECT_UNAUTHORIZED=0.
import { client, xml } from "@xmpp/client";
import { createInterface } from "node:readline";

const [service, jid, password, resource] = process.argv.slice(2);
if (!service || !jid || !password) {
  console.error("usage: client.mjs SERVICE JID PASSWORD [RESOURCE]");
  process.exit(2);
}
const at = jid.indexOf("@");
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const xmpp = client({
  service,
  domain: jid.slice(at + 1),
  username: jid.slice(0, at),
  password,
  resource: resource || undefined,
});
// The tests decide when to reconnect: never on their own.
xmpp.reconnect.stop();

xmpp.on("error", (err) => out({ event: "error", message: String(err && err.message || err) }));
xmpp.on("offline", () => out({ event: "offline" }));
xmpp.on("stanza", (stanza) => {
  if (stanza.is("message") && stanza.getChild("body")) {
    out({ event: "message", from: stanza.attrs.from, body: stanza.getChildText("body") });
  } else if (!stanza.is("iq")) {
    out({ event: "stanza", xml: stanza.toString() });
  }
});
xmpp.on("online", async (address) => {
  await xmpp.send(xml("presence"));
  out({ event: "online", jid: address.toString() });
});

const rl = createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch {
    out({ event: "error", message: "bad command line" });
    return;
  }
  try {
    if (cmd.cmd === "message") {
      await xmpp.send(xml("message", { to: cmd.to, type: "chat" }, xml("body", {}, cmd.body)));
      out({ event: "sent" });
    } else if (cmd.cmd === "ping") {
      const r = await xmpp.iqCaller.get(xml("ping", "urn:xmpp:ping"), cmd.to);
      out({ event: "iq", xml: r ? r.toString() : "" });
    } else if (cmd.cmd === "stop") {
      await xmpp.stop();
      process.exit(0);
    }
  } catch (err) {
    out({ event: "error", message: String(err && err.message || err) });
  }
});
rl.on("close", async () => {
  try {
    await xmpp.stop();
  } finally {
    process.exit(0);
  }
});

xmpp.start().catch((err) => {
  out({ event: "error", message: String(err && err.message || err) });
  process.exit(1);
});
