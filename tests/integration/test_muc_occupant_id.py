"""XEP-0421 occupant identifiers in rooms at conference.localhost: every
presence and message the room sends for an occupant carries one
<occupant-id/>, stable for a real bare JID in one room (across nicknames,
rejoins and restarts), different across rooms and users, a sender's own
claim replaced; history and the room archive carry it too; the feature is
announced on the service and on each room."""
import re

from harness import DOMAIN, NS_CLIENT, NS_DISCO_INFO, q, tostr
from imutil import Client
from test_muc import (MESSAGE, PRESENCE, SVC, clients, create, features, join, mam_query, new_room,
                      people, say, self_presence, user, wait_body, wait_presence)  # noqa: F401 (clients: a fixture)

NS_OCCID = "urn:xmpp:occupant-id:0"


def occupant_ids(el):
    return [o.get("id") for o in el.findall(q(NS_OCCID, "occupant-id"))]


def the_id(el):
    ids = occupant_ids(el)
    assert len(ids) == 1, tostr(el)
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", ids[0]), ids
    return ids[0]


def test_announced_on_the_service_and_on_rooms(server, clients):
    a, = people(server, clients, 1)
    room = new_room()
    create(a, room)
    for jid in (SVC, room):
        info = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=jid)
        assert NS_OCCID in features(info), tostr(info)


def test_presence_and_messages_carry_one_stable_id_per_user(server, clients):
    a, b = people(server, clients, 2)
    room = new_room()
    own = the_id(self_presence(create(a, room, nick="alice")))
    got = join(b, room, "bob")
    # b sees a's presence with a's id, and its own with another one.
    alice = [el for el in got if el.tag == PRESENCE and el.get("from") == room + "/alice"]
    assert alice and the_id(alice[0]) == own
    bob = the_id(self_presence(got))
    assert bob != own
    assert the_id(wait_presence(a, room + "/bob")) == bob
    # A claim of the sender's is replaced by the room's.
    a.send("<message to='%s' type='groupchat'><body>hi</body>"
           "<occupant-id xmlns='%s' id='%s'/></message>" % (room, NS_OCCID, bob))
    assert the_id(wait_body(b, room, "hi")) == own
    # Another nickname, or leaving and coming back: the same id.
    b.send("<presence to='%s/robert'/>" % room)
    assert the_id(wait_presence(a, room + "/robert")) == bob
    b.send("<presence to='%s/robert' type='unavailable'/>" % room)
    assert the_id(wait_presence(a, room + "/robert", "unavailable")) == bob
    b.drain(0.2)
    assert the_id(self_presence(join(b, room, "bob2"))) == bob
    # Private messages through the room carry the sender's id too.
    b.send("<message to='%s/alice' type='chat'><body>psst</body></message>" % room)
    pm = a.wait(lambda el: el.tag == MESSAGE and el.findtext(q(NS_CLIENT, "body")) == "psst", 5,
                "the private message")
    assert the_id(pm) == bob


def test_ids_differ_between_rooms(server, clients):
    a, = people(server, clients, 1)
    r1, r2 = new_room(), new_room()
    id1 = the_id(self_presence(create(a, r1)))
    id2 = the_id(self_presence(create(a, r2)))
    assert id1 != id2


def test_history_and_archive_carry_the_id_and_restart_keeps_it(make_server):
    srv = make_server()
    a = user(srv)
    b = user(srv)
    room = new_room()
    try:
        own = the_id(self_presence(create(a, room, persistent=True, history="5")))
        say(a, room, "kept")
        wait_body(a, room, "kept")
        got = join(b, room, "bee")
        hist = [el for el in got if el.tag == MESSAGE and el.findtext(q(NS_CLIENT, "body")) == "kept"]
        assert hist and the_id(hist[0]) == own
        results, fin = mam_query(b, room)
        assert fin.get("type") == "result", tostr(fin)
        archived = [el.find(".//%s" % q(NS_OCCID, "occupant-id")) for el in results]
        assert archived and archived[0] is not None, [tostr(e) for e in results]
        inner = archived[0]
        assert inner.get("id") == own
    finally:
        a.close()
        b.close()
    srv.signal()
    assert srv.wait(10) == 0
    srv.start()
    a = Client(srv, a.user, a.password, "r")
    try:
        assert the_id(self_presence(join(a, room, "again"))) == own
    finally:
        a.close()
