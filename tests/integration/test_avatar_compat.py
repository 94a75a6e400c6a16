"""XEP-0398 user avatar conversion ('urn:xmpp:pep-vcard-conversion:0' on the
account): an avatar published with XEP-0084 (PEP data + metadata) becomes
the vCard PHOTO, a vCard set with a PHOTO is published to the XEP-0084
nodes (with notifications), and the account's presence carries the
XEP-0153 photo hash. Raw streams check the exact stanzas; slixmpp's
xep_0084, xep_0054 and xep_0153 plugins show the same from a real client."""
import asyncio
import base64
import hashlib
import time

from harness import NS_DISCO_INFO, connect_and_wait, q, tostr
from imutil import Client, subscribe_mutually
from pubsubutil import advertise, event, get_items, items_of, ok, publish

DATA = "urn:xmpp:avatar:data"
META = "urn:xmpp:avatar:metadata"
VCARD = "vcard-temp"
UPDATE = "vcard-temp:x:update"
CONVERSION = "urn:xmpp:pep-vcard-conversion:0"
SYNC_WAIT = 10.0    # the conversion is written after the answer: poll up to this long
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3
GIF = b"GIF89a" + bytes(reversed(range(256))) * 2


def sha1(data):
    return hashlib.sha1(data).hexdigest()


def b64(data):
    return base64.b64encode(data).decode()


def account(server):
    user, pw, _ = server.new_account("avc")
    return Client(server, user, pw)


def friends(server):
    a, b = account(server), account(server)
    a.available()
    b.available()
    subscribe_mutually(a, b)
    a.drain(0.05)
    b.drain(0.05)
    return a, b


def vcard_photo(c):
    """(TYPE, decoded BINVAL) of the account's vCard PHOTO, or None."""
    r = ok(c.iq("get", "<vCard xmlns='%s'/>" % VCARD))
    photo = r.find("%s/%s" % (q(VCARD, "vCard"), q(VCARD, "PHOTO")))
    if photo is None:
        return None
    t = photo.find(q(VCARD, "TYPE"))
    return (t.text if t is not None else None,
            base64.b64decode("".join((photo.find(q(VCARD, "BINVAL")).text or "").split())))


def pep_avatar(c):
    """(metadata <info/> attributes, data bytes) of the account's PEP avatar, or None."""
    r = get_items(c, META, to=None)
    if r.get("type") == "error":
        return None
    its = items_of(r)
    if not its:
        return None
    info = its[-1][1].find(q(META, "info"))
    data = dict(items_of(get_items(c, DATA, to=None)))[info.get("id")]
    return dict(info.attrib), base64.b64decode(data.text)


def eventually(fn, pred, what):
    deadline = time.monotonic() + SYNC_WAIT
    while True:
        got = fn()
        if pred(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError("%s: still %r" % (what, got))
        time.sleep(0.05)


def publish_avatar(c, image, mtype="image/png", info_id=None, url_first=False):
    ok(publish(c, DATA, "<data xmlns='%s'>%s</data>" % (DATA, b64(image)), item_id=sha1(image),
               to=None))
    iid = info_id or sha1(image)
    ext = ("<info id='%s' bytes='10' type='image/webp' url='https://example.org/a.webp'/>"
           % ("0" * 40)) if url_first else ""
    return publish(c, META, "<metadata xmlns='%s'>%s<info id='%s' bytes='%d' type='%s'/>"
                            "</metadata>" % (META, ext, iid, len(image), mtype),
                   item_id=iid, to=None)


def photo_hash_in(pres):
    x = pres.find(q(UPDATE, "x"))
    if x is None:
        return None
    p = x.find(q(UPDATE, "photo"))
    return None if p is None else (p.text or "")


def test_account_advertises_conversion(server):
    a = account(server)
    try:
        info = ok(a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO))
        assert CONVERSION in {f.get("var") for f in info.iter(q(NS_DISCO_INFO, "feature"))}
    finally:
        a.close()


def test_pep_avatar_becomes_vcard_photo(server):
    a = account(server)
    try:
        ok(a.iq("set", "<vCard xmlns='%s'><FN>Juliet</FN></vCard>" % VCARD))
        # The external-URL <info/> comes first: the one without a url is used.
        ok(publish_avatar(a, PNG, url_first=True))
        got = eventually(lambda: vcard_photo(a), lambda v: v is not None, "vCard PHOTO")
        assert got == ("image/png", PNG)
        # The rest of the vCard is kept.
        r = ok(a.iq("get", "<vCard xmlns='%s'/>" % VCARD))
        assert r.find(".//%s" % q(VCARD, "FN")).text == "Juliet"

        # A newer avatar replaces the PHOTO.
        ok(publish_avatar(a, GIF, mtype="image/gif"))
        eventually(lambda: vcard_photo(a), lambda v: v == ("image/gif", GIF), "new PHOTO")

        # Failure: metadata naming an image whose data does not hash to the id.
        bogus = "f" * 40
        ok(publish(a, DATA, "<data xmlns='%s'>%s</data>" % (DATA, b64(PNG)), item_id=bogus,
                   to=None))
        ok(publish(a, META, "<metadata xmlns='%s'><info id='%s' bytes='%d' type='image/png'/>"
                            "</metadata>" % (META, bogus, len(PNG)), item_id=bogus, to=None))
        # Failure: metadata naming data that was never published.
        missing = "e" * 40
        ok(publish(a, META, "<metadata xmlns='%s'><info id='%s' bytes='1' type='image/png'/>"
                            "</metadata>" % (META, missing), item_id=missing, to=None))
        time.sleep(0.5)
        assert vcard_photo(a) == ("image/gif", GIF)

        # Empty metadata disables the avatar (XEP-0084 4.7): the PHOTO goes.
        ok(publish(a, META, "<metadata xmlns='%s'/>" % META, item_id="none", to=None))
        eventually(lambda: vcard_photo(a), lambda v: v is None, "PHOTO removed")
    finally:
        a.close()


def test_vcard_photo_becomes_pep_avatar_with_notifications(server):
    a, b = friends(server)
    try:
        advertise(b, notify=[META])
        b.drain(0.1)
        ok(a.iq("set", "<vCard xmlns='%s'><FN>Romeo</FN><PHOTO><TYPE>image/png</TYPE>"
                       "<BINVAL>%s</BINVAL></PHOTO></vCard>" % (VCARD, b64(PNG))))
        msg = event(b, META, timeout=SYNC_WAIT)
        info = msg.find(".//%s" % q(META, "info"))
        assert info is not None, tostr(msg)
        assert info.get("id") == sha1(PNG) and info.get("bytes") == str(len(PNG))
        assert info.get("type") == "image/png"
        assert msg.get("from") == a.bare
        attrs, data = pep_avatar(a)
        assert data == PNG and attrs["id"] == sha1(PNG)
        # A contact may fetch the data (PEP defaults: presence access).
        its = dict(items_of(get_items(b, DATA, to=a.bare)))
        assert base64.b64decode(its[sha1(PNG)].text) == PNG

        # Failure: a PHOTO that is not base64 is stored in the vCard, but not published.
        ok(a.iq("set", "<vCard xmlns='%s'><PHOTO><TYPE>image/png</TYPE>"
                       "<BINVAL>@@not base64@@</BINVAL></PHOTO></vCard>" % VCARD))
        time.sleep(0.5)
        attrs, data = pep_avatar(a)
        assert data == PNG
    finally:
        a.close()
        b.close()


def test_presence_carries_the_photo_hash(server):
    a, b = friends(server)
    try:
        ok(a.iq("set", "<vCard xmlns='%s'><PHOTO><TYPE>image/png</TYPE><BINVAL>%s</BINVAL>"
                       "</PHOTO></vCard>" % (VCARD, b64(PNG))))
        a.send("<presence><status>here</status></presence>")
        pres = b.presence(frm=a.full)
        assert photo_hash_in(pres) == sha1(PNG), tostr(pres)
        # A client's own update element is left as it is.
        a.send("<presence><x xmlns='%s'/></presence>" % UPDATE)
        pres = b.presence(frm=a.full)
        assert photo_hash_in(pres) is None and pres.find(q(UPDATE, "x")) is not None
        # Avatar published with PEP: the hash follows.
        ok(publish_avatar(a, GIF, mtype="image/gif"))
        eventually(lambda: vcard_photo(a), lambda v: v == ("image/gif", GIF), "PHOTO")
        a.send("<presence/>")
        assert photo_hash_in(b.presence(frm=a.full)) == sha1(GIF)
        # A new login loads the hash from the stored vCard.
        a.close()
        b.presence(frm=a.full, type_="unavailable")
        a2 = Client(server, a.user, a.password)
        a2.available()
        pres = b.presence(frm=a2.full)
        assert photo_hash_in(pres) == sha1(GIF), tostr(pres)
        a2.close()
        # Failure: no vCard PHOTO, no hash.
        c, d = friends(server)
        c.send("<presence/>")
        assert photo_hash_in(d.presence(frm=c.full)) is None
        c.close()
        d.close()
    finally:
        a.close()
        b.close()


def test_slixmpp_avatar_both_ways(server, xmpp, arun):
    user, pw, jid = server.new_account("avcs")
    c1 = xmpp(jid + "/one", pw, server.c2s_port, plugins=["xep_0054", "xep_0084", "xep_0153"])

    async def vcard_photo_bytes():
        r = await c1["xep_0054"].get_vcard(jid)
        photo = r["vcard_temp"]["PHOTO"]
        return photo["BINVAL"] if photo["BINVAL"] else None

    async def scenario():
        await connect_and_wait(c1)
        # XEP-0084 publish -> the vCard PHOTO.
        await c1["xep_0084"].publish_avatar(PNG)
        await c1["xep_0084"].publish_avatar_metadata(
            [{"id": sha1(PNG), "type": "image/png", "bytes": len(PNG)}])
        deadline = time.monotonic() + SYNC_WAIT
        while await vcard_photo_bytes() != PNG:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        # XEP-0153 (a vCard set) -> the XEP-0084 data, found by the metadata's id.
        await c1["xep_0153"].set_avatar(avatar=GIF, mtype="image/gif")
        deadline = time.monotonic() + SYNC_WAIT
        while True:
            r = await c1["xep_0060"].get_items(jid, META)
            ids = [i["id"] for i in r["pubsub"]["items"]]
            if ids == [sha1(GIF)]:
                break
            assert time.monotonic() < deadline, ids
            await asyncio.sleep(0.05)
        r = await c1["xep_0084"].retrieve_avatar(jid, sha1(GIF))
        assert r["pubsub"]["items"]["item"]["avatar_data"]["value"] == GIF
    arun(scenario())
