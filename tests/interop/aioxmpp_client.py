#!/usr/bin/python3
"""Interop client: aioxmpp (python3-aioxmpp).

    aioxmpp_client.py HOST PORT JID PASSWORD PEER

Same protocol as slixmpp_client.py: BOUND, ROSTER <jid>..., SENT,
RECEIVED <body>; exit 0 once the peer's answer arrived."""
import asyncio
import sys

import aioxmpp
import aioxmpp.connector
import aioxmpp.dispatcher
import aioxmpp.roster

host, port, jid, password, peer = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6]
peer_jid = aioxmpp.JID.fromstr(peer)


async def main():
    client = aioxmpp.PresenceManagedClient(
        aioxmpp.JID.fromstr(jid),
        # The test server's certificate is self-signed: no verification.
        aioxmpp.make_security_layer(password, no_verify=True),
        override_peer=[(host, port, aioxmpp.connector.STARTTLSConnector())],
    )
    roster = client.summon(aioxmpp.roster.RosterClient)
    dispatcher = client.summon(aioxmpp.dispatcher.SimpleMessageDispatcher)
    got = asyncio.get_running_loop().create_future()

    def on_message(msg):
        if msg.from_.bare() == peer_jid and msg.body and not got.done():
            got.set_result(msg.body.any())
    dispatcher.register_callback(aioxmpp.MessageType.CHAT, None, on_message)
    dispatcher.register_callback(aioxmpp.MessageType.NORMAL, None, on_message)

    roster_ready = asyncio.get_running_loop().create_future()
    roster.on_initial_roster_received.connect(
        lambda: roster_ready.done() or roster_ready.set_result(True))

    client.presence = aioxmpp.PresenceState(True)
    async with client.connected() as stream:
        print("BOUND", client.local_jid, flush=True)
        await asyncio.wait_for(roster_ready, 20)
        for item_jid in roster.items:
            print("ROSTER", item_jid, flush=True)
        msg = aioxmpp.Message(to=peer_jid, type_=aioxmpp.MessageType.CHAT)
        msg.body[None] = "hello from aioxmpp"
        await stream.send(msg)
        print("SENT", flush=True)
        body = await asyncio.wait_for(got, 30)
        print("RECEIVED", body, flush=True)


try:
    asyncio.run(asyncio.wait_for(main(), 45))
except Exception as e:
    print("ERROR", type(e).__name__, e, flush=True)
    sys.exit(1)
