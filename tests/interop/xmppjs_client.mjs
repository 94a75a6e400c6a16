// Interop client: xmpp.js (@xmpp/client from npm) over WebSocket.
//
//   node --experimental-websocket xmppjs_client.mjs SERVICE JID PASSWORD PEER
//
// SERVICE is a ws:// or wss:// URL. Same protocol as slixmpp_client.py:
// BOUND, ROSTER <jid>..., SENT, RECEIVED <body>; exit 0 once the peer's
// answer arrived. The package comes from tests/integration/ws-client/
// (npm ci there, pinned by its package-lock.json).
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const req = createRequire(new URL("../integration/ws-client/package.json", import.meta.url));
const { client, xml } = await import(pathToFileURL(req.resolve("@xmpp/client")).href);

const [service, jid, password, peer] = process.argv.slice(2);
const at = jid.indexOf("@");
const say = (line) => process.stdout.write(line + "\n");
const fail = (why) => {
  say("ERROR " + why);
  process.exit(1);
};
setTimeout(() => fail("no answer within 40 s"), 40000).unref();

const xmpp = client({
  service,
  domain: jid.slice(at + 1),
  username: jid.slice(0, at),
  password,
});
xmpp.reconnect.stop();
xmpp.on("error", (err) => fail(String((err && err.message) || err)));

xmpp.on("stanza", async (stanza) => {
  if (!stanza.is("message") || !stanza.getChild("body")) return;
  const from = stanza.attrs.from || "";
  if (from === peer || from.startsWith(peer + "/")) {
    say("RECEIVED " + stanza.getChildText("body"));
    await xmpp.stop();
    process.exit(0);
  }
});

xmpp.on("online", async (address) => {
  say("BOUND " + address.toString());
  const roster = await xmpp.iqCaller.get(xml("query", "jabber:iq:roster"));
  for (const item of roster.getChildren("item")) say("ROSTER " + item.attrs.jid);
  await xmpp.send(xml("presence"));
  await xmpp.send(xml("message", { to: peer, type: "chat" }, xml("body", {}, "hello from xmpp.js")));
  say("SENT");
});

xmpp.start().catch((err) => fail(String((err && err.message) || err)));
