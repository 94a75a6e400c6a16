#!/usr/bin/python3
"""Interop client: slixmpp (python3-slixmpp).

    slixmpp_client.py HOST PORT JID PASSWORD PEER

Logs in with STARTTLS (the test server's certificate is self-signed, so it
is not verified), prints BOUND <full JID>, ROSTER <jid> per roster item,
sends PEER 'hello from slixmpp' and prints SENT, then RECEIVED <body> for
the first chat message from PEER, and exits 0. Exit 1 on any failure."""
import asyncio
import ssl
import sys

import slixmpp

host, port, jid, password, peer = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6]


class Client(slixmpp.ClientXMPP):
    def __init__(self):
        super().__init__(jid, password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.use_ipv6 = False
        self.use_aiodns = False
        self.done = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("message", self.message)
        self.add_event_handler("failed_all_auth", lambda _: self.fail("authentication failed"))
        self.add_event_handler("disconnected", lambda _: self.fail("disconnected"))

    async def get_dns_records(self, domain, port=None):
        return [(domain, host, int(sys.argv[2]))]

    def fail(self, why):
        if not self.done.done():
            self.done.set_exception(RuntimeError(why))

    async def start(self, _):
        print("BOUND", self.boundjid.full, flush=True)
        await self.get_roster()
        for item in self.client_roster:
            if item != self.boundjid.bare:
                print("ROSTER", item, flush=True)
        self.send_presence()
        self.send_message(mto=peer, mbody="hello from slixmpp", mtype="chat")
        print("SENT", flush=True)

    def message(self, msg):
        if msg["from"].bare == peer and msg["type"] in ("chat", "normal") and msg["body"]:
            print("RECEIVED", msg["body"], flush=True)
            if not self.done.done():
                self.done.set_result(True)


async def main():
    c = Client()
    c.connect((host, port))
    try:
        await asyncio.wait_for(c.done, 40)
    finally:
        c.disconnect()


try:
    asyncio.get_event_loop().run_until_complete(main())
except Exception as e:
    print("ERROR", e, flush=True)
    sys.exit(1)
