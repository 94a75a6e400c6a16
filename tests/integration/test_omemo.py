"""OMEMO end to end through stanzad, with Debian's python3-omemo: two
accounts that are not contacts publish their OMEMO 2 (python3-twomemo)
and OMEMO 0.3 (python3-oldmemo) device lists and bundles on PEP with open
access, fetch each other's, build a session, and exchange encrypted
messages: the first one waits in offline storage, the answer goes
online. The server carries the <encrypted/> element unchanged, in the
offline delivery and in the sender's archive (MAM)."""
import asyncio
import xml.etree.ElementTree as ET

import pytest

from harness import q, tostr
from imutil import Client
from pubsubutil import PS, get_items, items_of, ok, perror, ps, publish

omemo = pytest.importorskip("omemo", reason="python3-omemo is not installed "
                            "(scripts/install-deps.sh installs it)")
twomemo = pytest.importorskip("twomemo", reason="python3-twomemo is not installed")
oldmemo = pytest.importorskip("oldmemo", reason="python3-oldmemo is not installed")
pytest.importorskip("xmlschema", reason="python3-xmlschema is not installed")
import oldmemo.etree  # noqa: E402
import twomemo.etree  # noqa: E402

NS2 = twomemo.twomemo.NAMESPACE
NS1 = oldmemo.oldmemo.NAMESPACE
NS_MAM = "urn:xmpp:mam:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_CLIENT = "jabber:client"
OPEN = {"pubsub#access_model": "open"}
OPEN_MAX = {"pubsub#access_model": "open", "pubsub#max_items": "max"}


class MemoryStorage(omemo.Storage):
    def __init__(self):
        super().__init__()
        self.data = {}

    async def _load(self, key):
        return omemo.Just(self.data[key]) if key in self.data else omemo.Nothing()

    async def _store(self, key, value):
        self.data[key] = value

    async def _delete(self, key):
        self.data.pop(key, None)


def xml(el):
    return ET.tostring(el, encoding="unicode")


def payload_of(c, node, to, item_id):
    """The payload of one item, or None when the node or item is not there."""
    r = get_items(c, node, to=to, ids=[item_id] if item_id else ())
    if r.get("type") == "error":
        assert perror(r)[0] == "item-not-found", tostr(r)
        return None
    got = [p for i, p in items_of(r) if item_id is None or i == item_id]
    return got[0] if got else None


def session_manager_class(client):
    """A SessionManager whose PEP and message I/O go over `client` (a raw stream)."""

    class Manager(omemo.SessionManager):
        @staticmethod
        async def _upload_bundle(bundle):
            if bundle.namespace == NS2:
                ok(publish(client, NS2 + ":bundles", xml(twomemo.etree.serialize_bundle(bundle)),
                           item_id=str(bundle.device_id), to=None, options=OPEN_MAX))
            else:
                ok(publish(client, "%s.bundles:%d" % (NS1, bundle.device_id),
                           xml(oldmemo.etree.serialize_bundle(bundle)), item_id="current",
                           to=None, options=OPEN))

        @staticmethod
        async def _download_bundle(namespace, bare_jid, device_id):
            if namespace == NS2:
                el = payload_of(client, NS2 + ":bundles", bare_jid, str(device_id))
                parse = twomemo.etree.parse_bundle
            else:
                el = payload_of(client, "%s.bundles:%d" % (NS1, device_id), bare_jid, None)
                parse = oldmemo.etree.parse_bundle
            if el is None:
                raise omemo.BundleDownloadFailed("no bundle for %s/%d" % (bare_jid, device_id))
            return parse(el, bare_jid, device_id)

        @staticmethod
        async def _delete_bundle(namespace, device_id):
            if namespace == NS2:
                ps(client, "set", "<retract node='%s:bundles'><item id='%d'/></retract>" %
                   (NS2, device_id), to=None)
            else:
                ps(client, "set", "<delete node='%s.bundles:%d'/>" % (NS1, device_id), to=None,
                   owner=True)

        @staticmethod
        async def _upload_device_list(namespace, device_list):
            if namespace == NS2:
                el = twomemo.etree.serialize_device_list(device_list)
                node = NS2 + ":devices"
            else:
                el = oldmemo.etree.serialize_device_list(device_list)
                node = NS1 + ".devicelist"
            ok(publish(client, node, xml(el), item_id="current", to=None, options=OPEN))

        @staticmethod
        async def _download_device_list(namespace, bare_jid):
            if namespace == NS2:
                el = payload_of(client, NS2 + ":devices", bare_jid, "current")
                return {} if el is None else twomemo.etree.parse_device_list(el)
            el = payload_of(client, NS1 + ".devicelist", bare_jid, "current")
            return {} if el is None else oldmemo.etree.parse_device_list(el)

        async def _evaluate_custom_trust_level(self, device):
            return omemo.TrustLevel.TRUSTED

        async def _make_trust_decision(self, undecided, identifier):
            pass

        @staticmethod
        async def _send_message(message, bare_jid):
            # Empty (key exchange / heartbeat) messages of the library.
            if message.namespace == NS2:
                el = twomemo.etree.serialize_message(message)
            else:
                el = oldmemo.etree.serialize_message(message)
            client.send("<message to='%s' type='chat'>%s<store xmlns='urn:xmpp:hints'/></message>"
                        % (bare_jid, xml(el)))

    return Manager


async def manager(client):
    return await session_manager_class(client).create(
        [twomemo.Twomemo(MemoryStorage()), oldmemo.Oldmemo(MemoryStorage())], MemoryStorage(),
        client.bare, "test device", "trusted")


def encrypted_child(msg, ns):
    return msg.find(q(ns, "encrypted"))


async def parse(msg, ns, sender, own, sm):
    el = encrypted_child(msg, ns)
    assert el is not None, tostr(msg)
    if ns == NS2:
        return twomemo.etree.parse_message(el, sender)
    # OMEMO 0.3 messages do not say which backend: the parser asks the manager.
    return await oldmemo.etree.parse_message(el, sender, own, sm)


async def send_encrypted(sm, client, to, text, ns):
    """Encrypts text for `to` with backend ns; sends it; returns the <encrypted/> sent.
    The recipient's device lists are fetched first, as a client does for a
    new chat partner (it is no contact: no +notify events from it)."""
    for n in (NS2, NS1):
        await sm.refresh_device_list(n, to)
    messages, errors = await sm.encrypt(frozenset([to]), {NS2: text.encode(), NS1: text.encode()},
                                        backend_priority_order=[ns])
    assert not errors, errors
    msg = [m for m in messages if m.namespace == ns][0]
    el = twomemo.etree.serialize_message(msg) if ns == NS2 else \
        oldmemo.etree.serialize_message(msg)
    client.send("<message to='%s' type='chat' id='om-%s'>%s<body>[OMEMO]</body></message>" %
                (to, text.replace(" ", "-"), xml(el)))
    return el


def canonical(el):
    return ET.canonicalize(xml(el), strip_text=True)


@pytest.mark.parametrize("ns", [NS2, NS1], ids=["omemo2", "omemo0.3"])
def test_encrypted_chat_between_strangers_via_offline_storage(server, arun, ns):
    ua, pa, ja = server.new_account("omemo")
    ub, pb, jb = server.new_account("omemo")
    alice = Client(server, ua, pa)
    bob = Client(server, ub, pb)
    alice.available()

    async def scenario():
        sm_a = await manager(alice)
        sm_b = await manager(bob)
        bob.close()                     # Bob goes offline
        # Alice, no contact of Bob's, fetches his devices and bundles.
        sent = await send_encrypted(sm_a, alice, jb, "hello offline bob", ns)
        bob2 = Client(server, ub, pb)
        try:
            sm_b2 = session_manager_class(bob2)
            sm_b.__class__ = sm_b2  # same state, I/O over the new stream
            bob2.available()
            msg = bob2.wait(lambda e: e.tag == q(NS_CLIENT, "message") and
                            encrypted_child(e, ns) is not None, 10, "the offline message")
            assert msg.find(q("urn:xmpp:delay", "delay")) is not None, tostr(msg)
            assert canonical(encrypted_child(msg, ns)) == canonical(sent)
            plain, device, _ = await sm_b.decrypt(await parse(msg, ns, ja, jb, sm_b))
            assert plain == b"hello offline bob"
            # The answer, online, on the session the first message built.
            await send_encrypted(sm_b, bob2, ja, "hi alice", ns)
            msg = alice.wait(lambda e: e.tag == q(NS_CLIENT, "message") and
                             encrypted_child(e, ns) is not None, 10, "bob's answer")
            plain, _, _ = await sm_a.decrypt(await parse(msg, ns, jb, ja, sm_a))
            assert plain == b"hi alice"
        finally:
            bob2.close()
        # Alice's archive holds what she sent, byte for byte the same element.
        r = alice.iq("set", "<query xmlns='%s' queryid='om'/>" % NS_MAM)
        assert r.get("type") == "result", tostr(r)
        archived = [m for m in alice.drain(0.3) if m.find(q(NS_MAM, "result")) is not None]
        found = [f for m in archived
                 for f in m.iter(q(NS_CLIENT, "message"))
                 if encrypted_child(f, ns) is not None and f.get("to", "").startswith(jb)]
        assert found, [tostr(m) for m in archived]
        assert canonical(encrypted_child(found[0], ns)) == canonical(sent)

    try:
        arun(scenario(), timeout=60)
    finally:
        alice.close()
