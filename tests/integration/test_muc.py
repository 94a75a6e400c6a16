"""XEP-0045 Multi-User Chat at conference.localhost: discovery, instant and
reserved rooms, entering (status codes, order of events, history, subject),
leaving (also by a vanished client), nicknames, password, members-only,
moderated rooms, kicks, bans, voice, affiliation lists, private messages,
mediated and direct (XEP-0249) invitations, the configuration form,
destruction, persistence across a restart, the room archive (XEP-0313 on
the room JID, with RSM paging), self-ping (XEP-0410), the service's limits,
a real client's plugin (slixmpp xep_0045), and occupants at home on other
workers than the service's.

Raw streams check the wire; every wait is bounded."""
import asyncio
import time

import pytest

from harness import DOMAIN, NS_CLIENT, NS_DISCO_INFO, NS_STANZAS, login, q, tostr, uniq
from imutil import Client, error_condition

SVC = "conference." + DOMAIN
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = NS_MUC + "#user"
NS_MUC_ADMIN = NS_MUC + "#admin"
NS_MUC_OWNER = NS_MUC + "#owner"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_XDATA = "jabber:x:data"
NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_FORWARD = "urn:xmpp:forward:0"
NS_DELAY = "urn:xmpp:delay"
NS_SID = "urn:xmpp:sid:0"
NS_PING = "urn:xmpp:ping"
NS_CONFERENCE = "jabber:x:conference"

MESSAGE = q(NS_CLIENT, "message")
PRESENCE = q(NS_CLIENT, "presence")


# ---- helpers ----

def user(server, prefix="mu"):
    name, pw, _ = server.new_account(prefix)
    return Client(server, name, pw, resource="r")


def new_room():
    return "%s@%s" % (uniq("room"), SVC)


def codes(el):
    x = el.find(q(NS_MUC_USER, "x"))
    return set() if x is None else {int(s.get("code")) for s in x.findall(q(NS_MUC_USER, "status"))}


def item(el):
    x = el.find(q(NS_MUC_USER, "x"))
    assert x is not None, tostr(el)
    it = x.find(q(NS_MUC_USER, "item"))
    assert it is not None, tostr(el)
    return it


def is_subject(el):
    return (el.tag == MESSAGE and el.find(q(NS_CLIENT, "subject")) is not None and
            el.find(q(NS_CLIENT, "body")) is None)


def from_room(room):
    return lambda el: (el.get("from") or "").split("/", 1)[0] == room


def join(c, room, nick, password=None, history="", extra="", pid="join"):
    """Enters room as nick; returns everything the room sent up to the
    subject (which ends the join, XEP-0045 7.1), or [error] on a refusal."""
    pw = "<password>%s</password>" % password if password is not None else ""
    c.send("<presence to='%s/%s' id='%s'><x xmlns='%s'>%s%s</x>%s</presence>" %
           (room, nick, pid, NS_MUC, pw, history, extra))
    got = []
    while True:
        el = c.wait(from_room(room), 5, "the join of %s to %s" % (nick, room))
        got.append(el)
        if el.tag == PRESENCE and el.get("type") == "error":
            return got
        if is_subject(el):
            return got


def self_presence(got):
    mine = [el for el in got if el.tag == PRESENCE and 110 in codes(el)]
    assert len(mine) == 1, [tostr(e) for e in got]
    return mine[0]


def join_error(c, room, nick, **kw):
    got = join(c, room, nick, **kw)
    assert got[-1].get("type") == "error", "joined anyway: %s" % [tostr(e) for e in got]
    return error_condition(got[-1])


def instant(c, room):
    """Accepts the default configuration (10.1.2): unlocks the room."""
    r = c.iq("set", "<query xmlns='%s'><x xmlns='%s' type='submit'/></query>" %
             (NS_MUC_OWNER, NS_XDATA), to=room)
    assert r.get("type") == "result", tostr(r)


def create(c, room, nick="owner", **config):
    """Creates and configures a room (instant when no options given)."""
    got = join(c, room, nick)
    me = self_presence(got)
    assert 201 in codes(me), tostr(me)
    if config:
        configure(c, room, **config)
    else:
        instant(c, room)
    return got


def form(fields, ftype="submit", form_type=NS_MUC + "#roomconfig"):
    out = "<x xmlns='%s' type='%s'>" % (NS_XDATA, ftype)
    if form_type:
        out += "<field var='FORM_TYPE'><value>%s</value></field>" % form_type
    for var, val in fields.items():
        vals = val if isinstance(val, (list, tuple)) else [val]
        out += "<field var='%s'>%s</field>" % (var, "".join("<value>%s</value>" % v for v in vals))
    return out + "</x>"


CONFIG_VARS = {
    "name": "muc#roomconfig_roomname", "desc": "muc#roomconfig_roomdesc",
    "persistent": "muc#roomconfig_persistentroom", "public": "muc#roomconfig_publicroom",
    "members_only": "muc#roomconfig_membersonly", "moderated": "muc#roomconfig_moderatedroom",
    "password_protected": "muc#roomconfig_passwordprotectedroom",
    "secret": "muc#roomconfig_roomsecret", "max_users": "muc#roomconfig_maxusers",
    "whois": "muc#roomconfig_whois", "history": "muc#maxhistoryfetch",
    "change_subject": "muc#roomconfig_changesubject", "allow_invites": "muc#roomconfig_allowinvites",
    "allow_pm": "muc#roomconfig_allowpm", "archive": "muc#roomconfig_enablearchiving",
    "admins": "muc#roomconfig_roomadmins", "owners": "muc#roomconfig_roomowners",
}


def configure(c, room, expect="result", **opts):
    fields = {}
    for k, v in opts.items():
        if isinstance(v, bool):
            v = "1" if v else "0"
        fields[CONFIG_VARS[k]] = v
    r = c.iq("set", "<query xmlns='%s'>%s</query>" % (NS_MUC_OWNER, form(fields)), to=room)
    assert r.get("type") == expect, tostr(r)
    return r


def admin_set(c, room, items, expect="result"):
    r = c.iq("set", "<query xmlns='%s'>%s</query>" % (NS_MUC_ADMIN, items), to=room)
    assert r.get("type") == expect, tostr(r)
    return r


def admin_get(c, room, attr):
    r = c.iq("get", "<query xmlns='%s'><item %s/></query>" % (NS_MUC_ADMIN, attr), to=room)
    return r


def say(c, room, body, mid=None):
    c.send("<message to='%s' type='groupchat'%s><body>%s</body></message>" %
           (room, " id='%s'" % mid if mid else "", body))


def wait_body(c, room, body, timeout=5):
    return c.wait(lambda el: el.tag == MESSAGE and from_room(room)(el) and
                  el.findtext(q(NS_CLIENT, "body")) == body, timeout, "message %r" % body)


def wait_presence(c, room_nick, type_=None, timeout=5):
    def match(el):
        return (el.tag == PRESENCE and el.get("from") == room_nick and
                (type_ is None or (el.get("type") or "") == type_))
    return c.wait(match, timeout, "presence %s from %s" % (type_, room_nick))


def features(info):
    query = info.find(q(NS_DISCO_INFO, "query"))
    return {f.get("var") for f in query.findall(q(NS_DISCO_INFO, "feature"))}


def roominfo(info):
    x = info.find("%s/%s" % (q(NS_DISCO_INFO, "query"), q(NS_XDATA, "x")))
    assert x is not None, tostr(info)
    return {f.get("var"): f.findtext(q(NS_XDATA, "value")) for f in x.findall(q(NS_XDATA, "field"))}


@pytest.fixture
def clients():
    made = []
    yield made
    for c in made:
        try:
            c.close()
        except Exception:
            pass


def online(*cs):
    """Initial presence: messages to the bare JID reach the client (not offline storage)."""
    for c in cs:
        c.available()
        c.presence("", c.full)


def people(server, clients, n, prefix="mu"):
    out = [user(server, prefix) for _ in range(n)]
    clients.extend(out)
    return out


# ---- discovery ----

def test_service_is_listed_and_answers_disco_info(server, clients):
    (a,) = people(server, clients, 1)
    items = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_ITEMS, to=DOMAIN)
    jids = [i.get("jid") for i in items.iter(q(NS_DISCO_ITEMS, "item"))]
    assert SVC in jids, tostr(items)
    info = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=SVC)
    assert info.get("type") == "result" and info.get("from") == SVC, tostr(info)
    ident = info.find("%s/%s" % (q(NS_DISCO_INFO, "query"), q(NS_DISCO_INFO, "identity")))
    assert ident.get("category") == "conference" and ident.get("type") == "text", tostr(info)
    assert {NS_MUC, NS_MUC + "#stable_id", NS_MUC + "#self-ping-optimization"} <= features(info)
    # Anything else addressed to the service itself: service-unavailable.
    r = a.iq("get", "<query xmlns='jabber:iq:version'/>", to=SVC)
    assert error_condition(r) == ("cancel", "service-unavailable")


def test_disco_items_lists_public_rooms_only(server, clients):
    a, = people(server, clients, 1)
    pub, hidden, locked = new_room(), new_room(), new_room()
    create(a, pub, name="Public Room")
    create(a, hidden, public=False)
    join(a, locked, "o")  # created but not configured: locked, so not listed
    items = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_ITEMS, to=SVC)
    found = {i.get("jid"): i.get("name") for i in items.iter(q(NS_DISCO_ITEMS, "item"))}
    assert found.get(pub) == "Public Room", tostr(items)
    assert hidden not in found and locked not in found
    # RSM: one per page, in JID order, with the count.
    page = a.iq("get", "<query xmlns='%s'><set xmlns='%s'><max>1</max></set></query>" %
                (NS_DISCO_ITEMS, NS_RSM), to=SVC)
    listed = page.findall(".//%s" % q(NS_DISCO_ITEMS, "item"))
    assert len(listed) == 1, tostr(page)
    count = page.find(".//%s" % q(NS_RSM, "count"))
    assert int(count.text) >= 1


def test_room_disco_info_reflects_configuration(server, clients):
    a, b = people(server, clients, 2)
    room = new_room()
    create(a, room, name="Cave", desc="For witches", members_only=True, moderated=True,
           password_protected=True, secret="s3", whois="anyone", persistent=True,
           public=False)
    a.send("<message to='%s' type='groupchat'><subject>Spells</subject></message>" % room)
    a.wait(is_subject)
    info = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=room)
    assert info.get("type") == "result", tostr(info)
    ident = info.find("%s/%s" % (q(NS_DISCO_INFO, "query"), q(NS_DISCO_INFO, "identity")))
    assert (ident.get("category"), ident.get("type"), ident.get("name")) == \
        ("conference", "text", "Cave")
    f = features(info)
    assert {NS_MUC, "muc_membersonly", "muc_moderated", "muc_passwordprotected",
            "muc_nonanonymous", "muc_persistent", "muc_hidden", NS_MAM} <= f, f
    assert not f & {"muc_open", "muc_unmoderated", "muc_unsecured", "muc_semianonymous",
                    "muc_temporary", "muc_public"}
    ri = roominfo(info)
    assert ri["FORM_TYPE"] == NS_MUC + "#roominfo"
    assert ri["muc#roominfo_description"] == "For witches"
    assert ri["muc#roominfo_subject"] == "Spells"
    assert ri["muc#roominfo_occupants"] == "1"
    # Someone else sees the same; a room that does not exist is item-not-found.
    assert "muc_membersonly" in features(b.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=room))
    r = b.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=new_room())
    assert error_condition(r) == ("cancel", "item-not-found")
    # The other configuration shows the opposite features.
    other = new_room()
    create(a, other)
    f = features(a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=other))
    assert {"muc_open", "muc_unmoderated", "muc_unsecured", "muc_semianonymous",
            "muc_temporary", "muc_public"} <= f, f


# ---- creating rooms ----

def test_instant_room_is_locked_until_the_owner_accepts_the_defaults(server, clients):
    a, b = people(server, clients, 2)
    room = new_room()
    got = join(a, room, "firstwitch")
    me = self_presence(got)
    assert codes(me) >= {110, 201}, tostr(me)
    assert item(me).get("affiliation") == "owner" and item(me).get("role") == "moderator"
    assert me.get("from") == room + "/firstwitch" and me.get("id") == "join"
    # 7.2.6: nobody else gets in while it is locked; messages find no room either.
    assert join_error(b, room, "second") == ("cancel", "item-not-found")
    instant(a, room)
    got = join(b, room, "second")
    me = self_presence(got)
    assert 201 not in codes(me)
    assert item(me).get("role") == "participant" and item(me).get("affiliation") == "none"


def test_reserved_room_with_the_configuration_form(server, clients):
    a, b = people(server, clients, 2)
    room = new_room()
    join(a, room, "owner")
    r = a.iq("get", "<query xmlns='%s'/>" % NS_MUC_OWNER, to=room)
    assert r.get("type") == "result", tostr(r)
    x = r.find("%s/%s" % (q(NS_MUC_OWNER, "query"), q(NS_XDATA, "x")))
    assert x is not None and x.get("type") == "form", tostr(r)
    fields = {f.get("var"): f for f in x.findall(q(NS_XDATA, "field"))}
    for var in ("FORM_TYPE", "muc#roomconfig_roomname", "muc#roomconfig_roomdesc",
                "muc#roomconfig_persistentroom", "muc#roomconfig_publicroom",
                "muc#roomconfig_membersonly", "muc#roomconfig_moderatedroom",
                "muc#roomconfig_passwordprotectedroom", "muc#roomconfig_roomsecret",
                "muc#roomconfig_maxusers", "muc#roomconfig_whois", "muc#maxhistoryfetch",
                "muc#roomconfig_changesubject", "muc#roomconfig_allowinvites",
                "muc#roomconfig_allowpm", "muc#roomconfig_roomowners"):
        assert var in fields, "missing %s in %s" % (var, tostr(x))
    assert fields["FORM_TYPE"].findtext(q(NS_XDATA, "value")) == NS_MUC + "#roomconfig"
    assert fields["muc#roomconfig_persistentroom"].get("type") == "boolean"
    assert fields["muc#roomconfig_roomsecret"].get("type") == "text-private"
    # Refusals: a password-protected room needs a password; values are checked.
    configure(a, room, expect="error", password_protected=True)
    configure(a, room, expect="error", max_users="lots")
    configure(a, room, expect="error", whois="everyone")
    # Still locked after refusals; then the real configuration unlocks it.
    assert join_error(b, room, "b") == ("cancel", "item-not-found")
    configure(a, room, name="Reserved", max_users="10", history="5", change_subject=True)
    r = a.iq("get", "<query xmlns='%s'/>" % NS_MUC_OWNER, to=room)
    x = r.find("%s/%s" % (q(NS_MUC_OWNER, "query"), q(NS_XDATA, "x")))
    vals = {f.get("var"): f.findtext(q(NS_XDATA, "value")) for f in x.findall(q(NS_XDATA, "field"))}
    assert vals["muc#roomconfig_roomname"] == "Reserved"
    assert vals["muc#roomconfig_maxusers"] == "10"
    assert vals["muc#maxhistoryfetch"] == "5"
    assert vals["muc#roomconfig_changesubject"] == "1"
    self_presence(join(b, room, "b"))
    # Only owners configure.
    r = b.iq("get", "<query xmlns='%s'/>" % NS_MUC_OWNER, to=room)
    assert error_condition(r) == ("auth", "forbidden")


def test_cancelling_the_first_configuration_destroys_the_room(server, clients):
    a, = people(server, clients, 1)
    room = new_room()
    join(a, room, "owner")
    r = a.iq("set", "<query xmlns='%s'><x xmlns='%s' type='cancel'/></query>" %
             (NS_MUC_OWNER, NS_XDATA), to=room)
    assert r.get("type") == "result", tostr(r)
    gone = wait_presence(a, room + "/owner", "unavailable")
    assert gone.find(".//%s" % q(NS_MUC_USER, "destroy")) is not None, tostr(gone)
    r = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=room)
    assert error_condition(r) == ("cancel", "item-not-found")


# ---- entering and leaving ----

def test_join_order_roster_then_self_then_history_then_subject(server, clients):
    a, b, c = people(server, clients, 3)
    room = new_room()
    create(a, room)
    join(b, room, "bee")
    say(a, room, "before-c")
    wait_body(b, room, "before-c")
    got = join(c, room, "sea")
    kinds = []
    for el in got:
        if el.tag == PRESENCE:
            kinds.append("self" if 110 in codes(el) else "other")
        elif is_subject(el):
            kinds.append("subject")
        else:
            kinds.append("history")
    assert kinds == ["other", "other", "self", "history", "subject"], kinds
    others = {el.get("from") for el in got if el.tag == PRESENCE and 110 not in codes(el)}
    assert others == {room + "/owner", room + "/bee"}
    # The existing occupants hear the newcomer.
    p = wait_presence(a, room + "/sea")
    assert item(p).get("role") == "participant"
    wait_presence(b, room + "/sea")
    # The empty subject of a room that never had one, from the room itself.
    subj = got[-1]
    assert subj.get("from") == room and subj.get("type") == "groupchat"
    assert (subj.findtext(q(NS_CLIENT, "subject")) or "") == ""


def test_semi_anonymous_room_shows_real_jids_to_moderators_only(server, clients):
    a, b, c = people(server, clients, 3)
    room = new_room()
    create(a, room)
    join(b, room, "bee")
    join(c, room, "sea")
    to_owner = wait_presence(a, room + "/sea")
    to_participant = wait_presence(b, room + "/sea")
    assert item(to_owner).get("jid") == c.full, tostr(to_owner)
    assert item(to_participant).get("jid") is None, tostr(to_participant)
    me = self_presence(join(b, room, "bee"))  # a re-join resynchronizes (7.2.1)
    assert 100 not in codes(me)


def test_non_anonymous_room_warns_with_100_and_shows_jids(server, clients):
    a, b, c = people(server, clients, 3)
    room = new_room()
    create(a, room, whois="anyone")
    got = join(b, room, "bee")
    me = self_presence(got)
    assert 100 in codes(me), tostr(me)
    assert 170 in codes(me)  # the room archives (room logging)
    owner = [el for el in got if el.get("from") == room + "/owner"][0]
    assert item(owner).get("jid") == a.full
    join(c, room, "sea")
    assert item(wait_presence(b, room + "/sea")).get("jid") == c.full


def test_leaving_sends_unavailable_to_everyone(server, clients):
    a, b = people(server, clients, 2)
    room = new_room()
    create(a, room)
    join(b, room, "bee")
    b.send("<presence to='%s/bee' type='unavailable'><status>bye</status></presence>" % room)
    mine = wait_presence(b, room + "/bee", "unavailable")
    assert 110 in codes(mine) and item(mine).get("role") == "none", tostr(mine)
    theirs = wait_presence(a, room + "/bee", "unavailable")
    assert 110 not in codes(theirs) and theirs.findtext(q(NS_CLIENT, "status")) == "bye"
    # No longer an occupant: a message is refused.
    say(b, room, "ghost")
    err = b.wait(lambda el: el.tag == MESSAGE and el.get("type") == "error")
    assert error_condition(err) == ("modify", "not-acceptable")


def test_a_vanished_client_leaves_its_rooms(server, clients):
    a, b = people(server, clients, 2)
    room = new_room()
    create(a, room)
    join(b, room, "bee")
    b.s.sock.close()  # no unavailable, no stream close: the server notices the EOF
    p = wait_presence(a, room + "/bee", "unavailable", timeout=10)
    assert item(p).get("role") == "none"


def test_nick_conflict_and_bad_nicks(server, clients):
    a, b = people(server, clients, 2)
    room = new_room()
    create(a, room, nick="taken")
    assert join_error(b, room, "taken") == ("cancel", "conflict")
    # No nickname at all: jid-malformed (7.2.1).
    b.send("<presence to='%s'><x xmlns='%s'/></presence>" % (room, NS_MUC))
    err = b.wait(lambda el: el.tag == PRESENCE and el.get("type") == "error")
    assert error_condition(err) == ("modify", "jid-malformed")
    assert err.find(q(NS_CLIENT, "error")).get("by") == room
    self_presence(join(b, room, "free"))


def test_nick_change(server, clients):
    a, b = people(server, clients, 2)
    room = new_room()
    create(a, room)
    join(b, room, "old")
    b.send("<presence to='%s/new'/>" % room)
    gone = wait_presence(a, room + "/old", "unavailable")
    assert 303 in codes(gone) and item(gone).get("nick") == "new", tostr(gone)
    mine = wait_presence(b, room + "/old", "unavailable")
    assert codes(mine) >= {303, 110}
    assert (wait_presence(b, room + "/new").get("type") or "") == ""
    wait_presence(a, room + "/new")
    # Taken nickname: conflict, and the old one stays.
    b.send("<presence to='%s/owner'/>" % room)
    err = b.wait(lambda el: el.tag == PRESENCE and el.get("type") == "error")
    assert error_condition(err) == ("cancel", "conflict")
    say(b, room, "still here")
    assert wait_body(a, room, "still here").get("from") == room + "/new"


def test_status_change_is_reflected(server, clients):
    a, b = people(server, clients, 2)
    room = new_room()
    create(a, room)
    join(b, room, "bee")
    b.send("<presence to='%s/bee'><show>away</show><status>lunch</status></presence>" % room)
    p = a.wait(lambda el: el.tag == PRESENCE and el.get("from") == room + "/bee" and
               el.findtext(q(NS_CLIENT, "show")) == "away")
    assert p.findtext(q(NS_CLIENT, "status")) == "lunch"
    # A newcomer sees the stored status too.
    c, = people(server, clients, 1)
    got = join(c, room, "sea")
    bee = [el for el in got if el.get("from") == room + "/bee"][0]
    assert bee.findtext(q(NS_CLIENT, "show")) == "away", tostr(bee)


def test_presence_without_muc_x_from_a_stranger_is_told_it_is_not_in(server, clients):
    a, b = people(server, clients, 2)
    room = new_room()
    create(a, room)
    b.send("<presence to='%s/bee'/>" % room)
    p = wait_presence(b, room + "/bee", "unavailable")
    assert codes(p) == {110, 307, 333}, tostr(p)
    # It did not enter.
    a.quiet(lambda el: el.tag == PRESENCE and el.get("from") == room + "/bee", 0.3)


def test_password_protected_room(server, clients):
    a, b = people(server, clients, 2)
    room = new_room()
    create(a, room, password_protected=True, secret="cauldronburn")
    assert join_error(b, room, "bee") == ("auth", "not-authorized")
    assert join_error(b, room, "bee", password="wrong") == ("auth", "not-authorized")
    self_presence(join(b, room, "bee", password="cauldronburn"))


def test_members_only_room(server, clients):
    a, b = people(server, clients, 2)
    room = new_room()
    create(a, room, members_only=True)
    assert join_error(b, room, "bee") == ("auth", "registration-required")
    admin_set(a, room, "<item affiliation='member' jid='%s'/>" % b.bare)
    me = self_presence(join(b, room, "bee"))
    assert item(me).get("affiliation") == "member"
    # Losing membership in a members-only room removes the occupant (321).
    admin_set(a, room, "<item affiliation='none' jid='%s'/>" % b.bare)
    gone = wait_presence(b, room + "/bee", "unavailable")
    assert codes(gone) >= {321, 110}, tostr(gone)
    assert join_error(b, room, "bee") == ("auth", "registration-required")


def test_member_list_and_other_lists(server, clients):
    a, b, c = people(server, clients, 3)
    room = new_room()
    create(a, room)
    admin_set(a, room, "<item affiliation='member' jid='%s' nick='reserved'/>"
              "<item affiliation='admin' jid='%s'/>" % (b.bare, c.bare))
    r = admin_get(a, room, "affiliation='member'")
    items = r.findall(".//%s" % q(NS_MUC_ADMIN, "item"))
    assert [(i.get("jid"), i.get("affiliation"), i.get("nick")) for i in items] == \
        [(b.bare, "member", "reserved")], tostr(r)
    owners = admin_get(a, room, "affiliation='owner'").findall(".//%s" % q(NS_MUC_ADMIN, "item"))
    assert [i.get("jid") for i in owners] == [a.bare]
    # The reserved nickname is discoverable and taken for others.
    info = b.iq("get", "<query xmlns='%s' node='x-roomuser-item'/>" % NS_DISCO_INFO, to=room)
    ident = info.find(".//%s" % q(NS_DISCO_INFO, "identity"))
    assert ident is not None and ident.get("name") == "reserved", tostr(info)
    assert join_error(c, room, "reserved") == ("cancel", "conflict")
    # A member (semi-anonymous room) may not read lists; nor a non-moderator role lists.
    self_presence(join(b, room, "reserved"))
    r = admin_get(b, room, "affiliation='member'")
    assert error_condition(r) == ("auth", "forbidden")
    r = admin_get(b, room, "role='participant'")
    assert error_condition(r) == ("auth", "forbidden")
    r = admin_get(a, room, "role='participant'")
    assert [i.get("nick") for i in r.findall(".//%s" % q(NS_MUC_ADMIN, "item"))] == ["reserved"]
    # An item with both a role and an affiliation is a bad request (17.4).
    admin_set(a, room, "<item nick='reserved' role='visitor' affiliation='member' jid='%s'/>"
              % b.bare, expect="error")


def test_ban(server, clients):
    a, b, c = people(server, clients, 3)
    room = new_room()
    create(a, room)
    join(b, room, "bee")
    join(c, room, "sea")
    admin_set(a, room, "<item affiliation='outcast' jid='%s'><reason>spam</reason></item>" % b.bare)
    gone = wait_presence(b, room + "/bee", "unavailable")
    assert codes(gone) >= {301, 110}, tostr(gone)
    it = item(gone)
    assert it.get("affiliation") == "outcast" and it.get("role") == "none"
    assert it.find(q(NS_MUC_USER, "actor")).get("nick") == "owner"
    assert it.findtext(q(NS_MUC_USER, "reason")) == "spam"
    seen = wait_presence(c, room + "/bee", "unavailable")
    assert 301 in codes(seen) and 110 not in codes(seen)
    assert join_error(b, room, "bee") == ("auth", "forbidden")
    bans = admin_get(a, room, "affiliation='outcast'")
    assert [i.get("jid") for i in bans.findall(".//%s" % q(NS_MUC_ADMIN, "item"))] == [b.bare]
    # Participants may not ban; owners may not ban themselves.
    r = admin_set(c, room, "<item affiliation='outcast' jid='%s'/>" % a.bare, expect="error")
    assert error_condition(r) == ("auth", "forbidden")
    r = admin_set(a, room, "<item affiliation='outcast' jid='%s'/>" % a.bare, expect="error")
    assert error_condition(r) == ("cancel", "conflict")
    # Lifting the ban lets b in again.
    admin_set(a, room, "<item affiliation='none' jid='%s'/>" % b.bare)
    self_presence(join(b, room, "bee"))


def test_kick(server, clients):
    a, b, c = people(server, clients, 3)
    room = new_room()
    create(a, room)
    join(b, room, "bee")
    join(c, room, "sea")
    # A participant may not kick.
    r = admin_set(c, room, "<item nick='bee' role='none'/>", expect="error")
    assert error_condition(r) == ("auth", "forbidden")
    # Nobody kicks the owner; kicking oneself is a conflict; unknown nick: item-not-found.
    admin_set(a, room, "<item nick='owner' role='none'/>", expect="error")
    r = admin_set(a, room, "<item nick='nobody' role='none'/>", expect="error")
    assert error_condition(r) == ("cancel", "item-not-found")
    admin_set(a, room, "<item nick='bee' role='none'><reason>out</reason></item>")
    gone = wait_presence(b, room + "/bee", "unavailable")
    assert codes(gone) >= {307, 110}, tostr(gone)
    assert item(gone).findtext(q(NS_MUC_USER, "reason")) == "out"
    assert 307 in codes(wait_presence(c, room + "/bee", "unavailable"))
    # A kick is not a ban.
    self_presence(join(b, room, "bee"))


def test_moderated_room_and_voice(server, clients):
    a, b, c = people(server, clients, 3)
    room = new_room()
    create(a, room, moderated=True)
    me = self_presence(join(b, room, "bee"))
    assert item(me).get("role") == "visitor"
    join(c, room, "sea")
    say(b, room, "may I?")
    err = b.wait(lambda el: el.tag == MESSAGE and el.get("type") == "error")
    assert error_condition(err) == ("auth", "forbidden")
    c.quiet(lambda el: el.tag == MESSAGE and el.findtext(q(NS_CLIENT, "body")) == "may I?", 0.3)
    # Voice granted: the role change reaches everyone, then the message goes through.
    admin_set(a, room, "<item nick='bee' role='participant'/>")
    p = c.wait(lambda el: el.tag == PRESENCE and el.get("from") == room + "/bee" and
               item(el).get("role") == "participant")
    assert item(p).get("jid") is None
    say(b, room, "thanks")
    wait_body(c, room, "thanks")
    # Revoked again: forbidden again; the voice list lists participants.
    admin_set(a, room, "<item nick='bee' role='visitor'/>")
    voice = admin_get(a, room, "role='participant'")
    assert "bee" not in [i.get("nick") for i in voice.findall(".//%s" % q(NS_MUC_ADMIN, "item"))]
    b.wait(lambda el: el.tag == PRESENCE and el.get("from") == room + "/bee" and
           item(el).get("role") == "visitor")
    say(b, room, "again")
    err = b.wait(lambda el: el.tag == MESSAGE and el.get("type") == "error")
    assert error_condition(err) == ("auth", "forbidden")


def test_voice_request_goes_to_moderators(server, clients):
    a, b = people(server, clients, 2)
    room = new_room()
    create(a, room, moderated=True)
    join(b, room, "bee")
    b.send("<message to='%s'>%s</message>" % (room, form(
        {"muc#role": "participant"}, form_type=NS_MUC + "#request")))
    req = a.wait(lambda el: el.tag == MESSAGE and el.find(q(NS_XDATA, "x")) is not None)
    fields = {f.get("var"): f.findtext(q(NS_XDATA, "value"))
              for f in req.find(q(NS_XDATA, "x")).findall(q(NS_XDATA, "field"))}
    assert fields["muc#roomnick"] == "bee" and fields["muc#jid"] == b.full
    a.send("<message to='%s'>%s</message>" % (room, form(
        {"muc#role": "participant", "muc#jid": b.full, "muc#roomnick": "bee",
         "muc#request_allow": "true"}, form_type=NS_MUC + "#request")))
    b.wait(lambda el: el.tag == PRESENCE and el.get("from") == room + "/bee" and
           item(el).get("role") == "participant")


def test_max_users(server, clients):
    a, b, c = people(server, clients, 3)
    room = new_room()
    create(a, room, max_users="2")
    self_presence(join(b, room, "bee"))
    assert join_error(c, room, "sea") == ("wait", "service-unavailable")


# ---- messages ----

def test_groupchat_is_reflected_to_every_occupant(server, clients):
    a, b, c = people(server, clients, 3)
    room = new_room()
    create(a, room)
    join(b, room, "bee")
    join(c, room, "sea")
    say(b, room, "hello all", mid="m1")
    copies = [wait_body(x, room, "hello all") for x in (a, b, c)]
    sids = set()
    for x, m in zip((a, b, c), copies):
        assert m.get("from") == room + "/bee" and m.get("type") == "groupchat"
        assert m.get("id") == "m1" and m.get("to") == x.full, tostr(m)
        sid = m.find(q(NS_SID, "stanza-id"))
        assert sid is not None and sid.get("by") == room, tostr(m)
        sids.add(sid.get("id"))
    assert len(sids) == 1  # one archived message, the same id in every copy
    # A message without an id gets one (stable ids, 7.4).
    say(c, room, "no id")
    assert wait_body(a, room, "no id").get("id")


def test_message_rules(server, clients):
    a, b = people(server, clients, 2)
    room = new_room()
    create(a, room)
    # Not an occupant: not-acceptable, and nobody gets it.
    say(b, room, "outsider")
    err = b.wait(lambda el: el.tag == MESSAGE and el.get("type") == "error")
    assert error_condition(err) == ("modify", "not-acceptable")
    assert err.get("from") == room
    # An occupant's message to the room must be groupchat.
    join(b, room, "bee")
    b.send("<message to='%s' type='chat'><body>wrong type</body></message>" % room)
    err = b.wait(lambda el: el.tag == MESSAGE and el.get("type") == "error")
    assert error_condition(err) == ("modify", "bad-request")
    # A room that does not exist.
    say(b, new_room(), "anyone?")
    err = b.wait(lambda el: el.tag == MESSAGE and el.get("type") == "error")
    assert error_condition(err) == ("cancel", "item-not-found")
    # Claims of MUC data and of the room's stanza ids are dropped.
    b.send("<message to='%s' type='groupchat'><body>spoof</body>"
           "<x xmlns='%s'><item jid='admin@%s'/></x>"
           "<stanza-id xmlns='%s' by='%s' id='fake'/></message>" %
           (room, NS_MUC_USER, DOMAIN, NS_SID, room))
    m = wait_body(a, room, "spoof")
    assert m.find(q(NS_MUC_USER, "x")) is None, tostr(m)
    assert [s.get("id") for s in m.findall(q(NS_SID, "stanza-id"))] != ["fake"]
    assert len(m.findall(q(NS_SID, "stanza-id"))) == 1


def test_subject(server, clients):
    a, b, c = people(server, clients, 3)
    room = new_room()
    create(a, room)
    join(b, room, "bee")
    # Participants may not change it by default.
    b.send("<message to='%s' type='groupchat'><subject>mine</subject></message>" % room)
    err = b.wait(lambda el: el.tag == MESSAGE and el.get("type") == "error")
    assert error_condition(err) == ("auth", "forbidden")
    a.send("<message to='%s' type='groupchat'><subject>Fire Burn</subject></message>" % room)
    s = b.wait(is_subject)
    assert s.findtext(q(NS_CLIENT, "subject")) == "Fire Burn" and s.get("from") == room + "/owner"
    # A newcomer gets it after the history, stamped by the room.
    got = join(c, room, "sea")
    subj = got[-1]
    assert subj.findtext(q(NS_CLIENT, "subject")) == "Fire Burn"
    assert subj.get("from") == room + "/owner"
    assert subj.find(q(NS_DELAY, "delay")).get("from") == room
    # With changesubject, participants may.
    configure(a, room, change_subject=True)
    b.send("<message to='%s' type='groupchat'><subject>ours</subject></message>" % room)
    assert a.wait(lambda el: is_subject(el) and
                  el.findtext(q(NS_CLIENT, "subject")) == "ours").get("from") == room + "/bee"
    # Subject plus body is an ordinary message, not a subject change.
    say(a, room, "x")
    a.send("<message to='%s' type='groupchat'><subject>t</subject><body>msg</body></message>" % room)
    wait_body(b, room, "msg")
    info = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=room)
    assert roominfo(info)["muc#roominfo_subject"] == "ours"


def test_history_on_join(server, clients):
    a, b = people(server, clients, 2)
    room = new_room()
    create(a, room, history="3")
    for i in range(5):
        say(a, room, "h%d" % i)
    for i in range(5):
        wait_body(a, room, "h%d" % i)

    def bodies(got):
        return [el.findtext(q(NS_CLIENT, "body")) for el in got
                if el.tag == MESSAGE and el.find(q(NS_CLIENT, "body")) is not None]
    got = join(b, room, "bee")
    assert bodies(got) == ["h2", "h3", "h4"]
    hist = [el for el in got if el.tag == MESSAGE and not is_subject(el)]
    for m in hist:
        d = m.find(q(NS_DELAY, "delay"))
        assert d is not None and d.get("from") == room and d.get("stamp"), tostr(m)
        assert m.get("from") == room + "/owner" and m.get("type") == "groupchat"
    # The client's limits: maxstanzas, maxchars='0' (none), seconds, since.
    b.send("<presence to='%s/bee' type='unavailable'/>" % room)
    wait_presence(b, room + "/bee", "unavailable")
    assert bodies(join(b, room, "bee", history="<history maxstanzas='1'/>")) == ["h4"]
    b.send("<presence to='%s/bee' type='unavailable'/>" % room)
    wait_presence(b, room + "/bee", "unavailable")
    assert bodies(join(b, room, "bee", history="<history maxchars='0'/>")) == []
    b.send("<presence to='%s/bee' type='unavailable'/>" % room)
    wait_presence(b, room + "/bee", "unavailable")
    assert bodies(join(b, room, "bee", history="<history since='2999-01-01T00:00:00Z'/>")) == []
    b.send("<presence to='%s/bee' type='unavailable'/>" % room)
    wait_presence(b, room + "/bee", "unavailable")
    assert bodies(join(b, room, "bee", history="<history seconds='3600'/>")) == \
        ["h2", "h3", "h4"]
    # No history kept at all.
    configure(a, room, history="0")
    b.send("<presence to='%s/bee' type='unavailable'/>" % room)
    wait_presence(b, room + "/bee", "unavailable")
    assert bodies(join(b, room, "bee")) == []


def test_private_messages(server, clients):
    a, b, c = people(server, clients, 3)
    room = new_room()
    create(a, room)
    join(b, room, "bee")
    b.send("<message to='%s/owner' type='chat' id='pm1'><body>psst</body></message>" % room)
    m = a.wait(lambda el: el.tag == MESSAGE and el.findtext(q(NS_CLIENT, "body")) == "psst")
    assert m.get("from") == room + "/bee" and m.get("to") == a.full and m.get("type") == "chat"
    assert m.find(q(NS_MUC_USER, "x")) is not None, tostr(m)
    # To a nickname nobody has: item-not-found; of type groupchat: bad-request.
    b.send("<message to='%s/nobody' type='chat'><body>?</body></message>" % room)
    err = b.wait(lambda el: el.tag == MESSAGE and el.get("type") == "error")
    assert error_condition(err) == ("cancel", "item-not-found")
    b.send("<message to='%s/owner' type='groupchat'><body>?</body></message>" % room)
    err = b.wait(lambda el: el.tag == MESSAGE and el.get("type") == "error")
    assert error_condition(err) == ("modify", "bad-request")
    # From someone outside the room: not-acceptable.
    c.send("<message to='%s/owner' type='chat'><body>hi</body></message>" % room)
    err = c.wait(lambda el: el.tag == MESSAGE and el.get("type") == "error")
    assert error_condition(err) == ("modify", "not-acceptable")
    # allow_pm=moderators: the participant may not, the moderator may.
    configure(a, room, allow_pm="moderators")
    b.send("<message to='%s/owner' type='chat'><body>again</body></message>" % room)
    err = b.wait(lambda el: el.tag == MESSAGE and el.get("type") == "error")
    assert error_condition(err) == ("auth", "forbidden")
    a.send("<message to='%s/bee' type='chat'><body>reply</body></message>" % room)
    assert b.wait(lambda el: el.tag == MESSAGE and
                  el.findtext(q(NS_CLIENT, "body")) == "reply").get("from") == room + "/owner"


def test_iq_between_occupants_and_self_ping(server, clients):
    a, b, c = people(server, clients, 3)
    room = new_room()
    create(a, room)
    join(b, room, "bee")
    # XEP-0410: the room answers a ping to oneself.
    r = b.iq("get", "<ping xmlns='%s'/>" % NS_PING, to=room + "/bee")
    assert r.get("type") == "result" and r.get("from") == room + "/bee", tostr(r)
    r = c.iq("get", "<ping xmlns='%s'/>" % NS_PING, to=room + "/bee")
    assert error_condition(r) == ("modify", "not-acceptable")
    # Another occupant's JID: passed on with the occupant JID, and the answer back.
    b.send("<iq type='get' id='v1' to='%s/owner'><query xmlns='jabber:iq:version'/></iq>" % room)
    fwd = a.wait(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("id") == "v1")
    assert fwd.get("from") == room + "/bee" and fwd.get("to") == a.full, tostr(fwd)
    a.send("<iq type='result' id='v1' to='%s/bee'><query xmlns='jabber:iq:version'>"
           "<name>witchclient</name></query></iq>" % room)
    ans = b.wait(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("id") == "v1")
    assert ans.get("type") == "result" and ans.get("from") == room + "/owner", tostr(ans)
    assert "witchclient" in tostr(ans)


# ---- invitations ----

def test_mediated_invitation_and_decline(server, clients):
    a, b, c = people(server, clients, 3)
    online(a, b)
    room = new_room()
    create(a, room, password_protected=True, secret="pw1")
    a.send("<message to='%s' id='inv1'><x xmlns='%s'><invite to='%s'><reason>come</reason>"
           "</invite></x></message>" % (room, NS_MUC_USER, b.bare))
    inv = b.wait(lambda el: el.tag == MESSAGE and el.find(q(NS_MUC_USER, "x")) is not None)
    assert inv.get("from") == room, tostr(inv)
    x = inv.find(q(NS_MUC_USER, "x"))
    assert x.find(q(NS_MUC_USER, "invite")).get("from") == a.full
    assert x.find(q(NS_MUC_USER, "invite")).findtext(q(NS_MUC_USER, "reason")) == "come"
    assert x.findtext(q(NS_MUC_USER, "password")) == "pw1"
    b.send("<message to='%s'><x xmlns='%s'><decline to='%s'><reason>busy</reason></decline>"
           "</x></message>" % (room, NS_MUC_USER, a.full))
    dec = a.wait(lambda el: el.tag == MESSAGE and el.find(".//%s" % q(NS_MUC_USER, "decline"))
                 is not None)
    assert dec.get("from") == room
    assert dec.find(".//%s" % q(NS_MUC_USER, "decline")).get("from") == b.bare
    # Someone outside the room cannot invite to it.
    c.send("<message to='%s'><x xmlns='%s'><invite to='%s'/></x></message>" %
           (room, NS_MUC_USER, b.bare))
    err = c.wait(lambda el: el.tag == MESSAGE and el.get("type") == "error")
    assert error_condition(err) == ("modify", "not-acceptable")


def test_invitation_to_a_members_only_room(server, clients):
    a, b, c, d = people(server, clients, 4)
    online(c, d)
    room = new_room()
    create(a, room, members_only=True)
    admin_set(a, room, "<item affiliation='member' jid='%s'/>" % b.bare)
    join(b, room, "bee")
    # A member may not invite unless the room allows it (9.4).
    b.send("<message to='%s'><x xmlns='%s'><invite to='%s'/></x></message>" %
           (room, NS_MUC_USER, c.bare))
    err = b.wait(lambda el: el.tag == MESSAGE and el.get("type") == "error")
    assert error_condition(err) == ("auth", "forbidden")
    # The owner's invitation makes the invitee a member.
    a.send("<message to='%s'><x xmlns='%s'><invite to='%s'/></x></message>" %
           (room, NS_MUC_USER, c.bare))
    c.wait(lambda el: el.tag == MESSAGE and el.find(".//%s" % q(NS_MUC_USER, "invite")) is not None)
    assert item(self_presence(join(c, room, "sea"))).get("affiliation") == "member"
    configure(a, room, allow_invites=True)
    b.send("<message to='%s'><x xmlns='%s'><invite to='%s'/></x></message>" %
           (room, NS_MUC_USER, d.bare))
    d.wait(lambda el: el.tag == MESSAGE and el.find(".//%s" % q(NS_MUC_USER, "invite")) is not None)
    self_presence(join(d, room, "dee"))


def test_direct_invitation_is_routed(server, clients):
    a, b = people(server, clients, 2)
    online(b)
    room = new_room()
    create(a, room)
    a.send("<message to='%s'><x xmlns='%s' jid='%s' reason='join us'/></message>" %
           (b.bare, NS_CONFERENCE, room))
    m = b.wait(lambda el: el.tag == MESSAGE and el.find(q(NS_CONFERENCE, "x")) is not None)
    assert m.get("from") == a.full
    assert m.find(q(NS_CONFERENCE, "x")).get("jid") == room


# ---- destruction ----

def test_destroy_room(server, clients):
    a, b = people(server, clients, 2)
    room, venue = new_room(), new_room()
    create(a, room)
    join(b, room, "bee")
    r = b.iq("set", "<query xmlns='%s'><destroy/></query>" % NS_MUC_OWNER, to=room)
    assert error_condition(r) == ("auth", "forbidden")
    r = a.iq("set", "<query xmlns='%s'><destroy jid='%s'><reason>moving</reason>"
             "</destroy></query>" % (NS_MUC_OWNER, venue), to=room)
    assert r.get("type") == "result", tostr(r)
    for x, nick in ((a, "owner"), (b, "bee")):
        p = wait_presence(x, room + "/" + nick, "unavailable")
        d = p.find(".//%s" % q(NS_MUC_USER, "destroy"))
        assert d is not None and d.get("jid") == venue, tostr(p)
        assert d.findtext(q(NS_MUC_USER, "reason")) == "moving"
        assert item(p).get("role") == "none"
    # b only hears about itself, not every occupant's departure.
    b.quiet(lambda el: el.tag == PRESENCE and el.get("from") == room + "/owner", 0.3)
    r = b.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=room)
    assert error_condition(r) == ("cancel", "item-not-found")


# ---- persistence ----

def test_persistent_room_survives_a_restart(make_server):
    srv = make_server()
    a = user(srv)
    b = user(srv)
    room = new_room()
    try:
        create(a, room, name="Keep", persistent=True, members_only=True, history="10")
        admin_set(a, room, "<item affiliation='member' jid='%s' nick='bee'/>" % b.bare)
        admin_set(a, room, "<item affiliation='outcast' jid='evil@%s'/>" % DOMAIN)
        a.send("<message to='%s' type='groupchat'><subject>Kept</subject></message>" % room)
        a.wait(is_subject)
        say(a, room, "remember me")
        wait_body(a, room, "remember me")
        # A temporary room next to it goes away with its last occupant.
        temp = new_room()
        create(a, temp)
    finally:
        a.close()
        b.close()
    srv.signal()
    assert srv.wait(10) == 0
    srv.start()
    a = Client(srv, a.user, a.password, "r")
    b = Client(srv, b.user, b.password, "r")
    try:
        info = b.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=room)
        assert info.get("type") == "result", tostr(info)
        assert "muc_membersonly" in features(info) and "muc_persistent" in features(info)
        assert roominfo(info)["muc#roominfo_subject"] == "Kept"
        got = join(b, room, "bee")
        me = self_presence(got)
        assert item(me).get("affiliation") == "member"
        hist = [el.findtext(q(NS_CLIENT, "body")) for el in got
                if el.tag == MESSAGE and not is_subject(el)]
        assert hist == ["remember me"], [tostr(e) for e in got]
        assert got[-1].findtext(q(NS_CLIENT, "subject")) == "Kept"
        owners = admin_get(a, room, "affiliation='owner'")
        assert [i.get("jid") for i in owners.findall(".//%s" % q(NS_MUC_ADMIN, "item"))] == [a.bare]
        bans = admin_get(a, room, "affiliation='outcast'")
        assert [i.get("jid") for i in bans.findall(".//%s" % q(NS_MUC_ADMIN, "item"))] == \
            ["evil@" + DOMAIN]
        r = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=temp)
        assert error_condition(r) == ("cancel", "item-not-found")
        # Destroyed: gone for good, also after another restart.
        r = a.iq("set", "<query xmlns='%s'><destroy/></query>" % NS_MUC_OWNER, to=room)
        assert r.get("type") == "result"
    finally:
        a.close()
        b.close()
    srv.signal()
    assert srv.wait(10) == 0
    srv.start()
    c = Client(srv, b.user, b.password, "r")
    try:
        r = c.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=room)
        assert error_condition(r) == ("cancel", "item-not-found")
    finally:
        c.close()


# ---- the room archive (XEP-0313) ----

def mam_query(c, room, inner="", qid="q1", timeout=5):
    """Runs a MAM query on the room; returns (results, fin iq)."""
    iid = "mam-" + qid
    c.send("<iq type='set' id='%s' to='%s'><query xmlns='%s' queryid='%s'>%s</query></iq>" %
           (iid, room, NS_MAM, qid, inner))
    fin = c.wait(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("id") == iid, timeout)
    results = []
    for el in c.drain(0.05):
        r = el.find(q(NS_MAM, "result")) if el.tag == MESSAGE else None
        if r is not None and r.get("queryid") == qid:
            results.append(el)
        else:
            c.buffer.append(el)
    # Results come before the fin: they are in the buffer already.
    for el in list(c.buffer):
        r = el.find(q(NS_MAM, "result")) if el.tag == MESSAGE else None
        if r is not None and r.get("queryid") == qid and el not in results:
            results.append(el)
            c.buffer.remove(el)
    return results, fin


def result_body(el):
    fwd = el.find("%s/%s" % (q(NS_MAM, "result"), q(NS_FORWARD, "forwarded")))
    return fwd.find(q(NS_CLIENT, "message")).findtext(q(NS_CLIENT, "body"))


def test_archive_query_with_paging(server, clients):
    a, b, c = people(server, clients, 3)
    room = new_room()
    create(a, room)
    join(b, room, "bee")
    sids = []
    for i in range(6):
        say(b if i % 2 else a, room, "a%d" % i)
        m = wait_body(a, room, "a%d" % i)
        sids.append(m.find(q(NS_SID, "stanza-id")).get("id"))
    res, fin = mam_query(a, room)
    assert fin.get("type") == "result", tostr(fin)
    assert [result_body(r) for r in res] == ["a%d" % i for i in range(6)]
    r0 = res[0]
    assert r0.get("from") == room and r0.find(q(NS_MAM, "result")).get("id") == sids[0]
    inner = r0.find(".//%s" % q(NS_CLIENT, "message"))
    assert inner.get("from") == room + "/owner" and inner.get("to") is None, tostr(r0)
    assert r0.find(".//%s" % q(NS_DELAY, "delay")).get("stamp")
    f = fin.find(q(NS_MAM, "fin"))
    assert f.get("complete") == "true"
    assert f.findtext(".//%s" % q(NS_RSM, "count")) == "6"
    # Pages of 2: forwards with <after/>, the last page with an empty <before/>.
    res, fin = mam_query(a, room, "<set xmlns='%s'><max>2</max></set>" % NS_RSM, "p1")
    assert [result_body(r) for r in res] == ["a0", "a1"]
    f = fin.find(q(NS_MAM, "fin"))
    assert f.get("complete") != "true"
    last = f.findtext(".//%s" % q(NS_RSM, "last"))
    assert last == sids[1]
    res, fin = mam_query(a, room, "<set xmlns='%s'><max>2</max><after>%s</after></set>" %
                         (NS_RSM, last), "p2")
    assert [result_body(r) for r in res] == ["a2", "a3"]
    res, fin = mam_query(a, room, "<set xmlns='%s'><max>2</max><before/></set>" % NS_RSM, "p3")
    assert [result_body(r) for r in res] == ["a4", "a5"]
    res, fin = mam_query(a, room, "<set xmlns='%s'><max>2</max><before>%s</before></set>" %
                         (NS_RSM, sids[4]), "p4")
    assert [result_body(r) for r in res] == ["a2", "a3"]
    # An unknown id: item-not-found.
    res, fin = mam_query(a, room, "<set xmlns='%s'><after>nope</after></set>" % NS_RSM, "p5")
    assert error_condition(fin) == ("cancel", "item-not-found")
    # Form filters: with an occupant JID (nickname), ids, after-id; a flipped page.
    flt = form({"with": room + "/bee"}, form_type=NS_MAM)
    res, fin = mam_query(a, room, flt, "f1")
    assert [result_body(r) for r in res] == ["a1", "a3", "a5"]
    # A real JID, for who may see them (the owner); time bounds.
    res, fin = mam_query(a, room, form({"with": b.bare}, form_type=NS_MAM), "f0")
    assert [result_body(r) for r in res] == ["a1", "a3", "a5"]
    res, fin = mam_query(a, room, form({"end": "2000-01-01T00:00:00Z"}, form_type=NS_MAM), "f6")
    assert res == [] and fin.find(q(NS_MAM, "fin")).get("complete") == "true"
    res, fin = mam_query(a, room, form({"start": "yesterday"}, form_type=NS_MAM), "f7")
    assert error_condition(fin) == ("modify", "bad-request")
    flt = form({"ids": [sids[5], sids[2]]}, form_type=NS_MAM)
    res, fin = mam_query(a, room, flt, "f2")
    assert [result_body(r) for r in res] == ["a2", "a5"]
    flt = form({"after-id": sids[3]}, form_type=NS_MAM)
    res, fin = mam_query(a, room, flt + "<flip-page/>", "f3")
    assert [result_body(r) for r in res] == ["a5", "a4"]
    flt = form({"start": "2999-01-01T00:00:00Z"}, form_type=NS_MAM)
    res, fin = mam_query(a, room, flt, "f4")
    assert res == [] and fin.get("type") == "result"
    flt = form({"bogus": "1"}, form_type=NS_MAM)
    res, fin = mam_query(a, room, flt, "f5")
    assert error_condition(fin) == ("cancel", "feature-not-implemented")
    # Semi-anonymous room: the owner sees real JIDs, a participant does not and
    # may not filter by one; someone who never entered may read an open room.
    res, _ = mam_query(a, room, "", "j1")
    assert res[1].find(".//%s" % q(NS_MUC_USER, "item")).get("jid") == b.full
    res, _ = mam_query(b, room, "", "j2")
    assert res[1].find(".//%s" % q(NS_MUC_USER, "item")) is None
    res, fin = mam_query(b, room, form({"with": a.bare}, form_type=NS_MAM), "j3")
    assert error_condition(fin) == ("auth", "forbidden")
    res, fin = mam_query(c, room, "", "j4")
    assert len(res) == 6
    # Metadata: the first and last ids.
    md = a.iq("get", "<metadata xmlns='%s'/>" % NS_MAM, to=room)
    assert md.find(".//%s" % q(NS_MAM, "start")).get("id") == sids[0], tostr(md)
    assert md.find(".//%s" % q(NS_MAM, "end")).get("id") == sids[5]
    # The query form lists the filters.
    fm = a.iq("get", "<query xmlns='%s'/>" % NS_MAM, to=room)
    vars_ = {f.get("var") for f in fm.iter(q(NS_XDATA, "field"))}
    assert {"FORM_TYPE", "with", "start", "end", "before-id", "after-id", "ids"} <= vars_


def test_archive_access_and_private_messages_are_not_archived(server, clients):
    a, b, c = people(server, clients, 3)
    room = new_room()
    create(a, room, members_only=True)
    admin_set(a, room, "<item affiliation='member' jid='%s'/>" % b.bare)
    join(b, room, "bee")
    say(a, room, "members only")
    wait_body(b, room, "members only")
    b.send("<message to='%s/owner' type='chat'><body>private</body></message>" % room)
    a.wait(lambda el: el.tag == MESSAGE and el.findtext(q(NS_CLIENT, "body")) == "private")
    res, fin = mam_query(b, room, "", "m1")
    assert [result_body(r) for r in res] == ["members only"]
    res, fin = mam_query(c, room, "", "m2")
    assert error_condition(fin) == ("auth", "forbidden")
    # With archiving off: no MAM on the room, no stanza-id, no 170.
    configure(a, room, archive=False)
    say(a, room, "off the record")
    m = wait_body(b, room, "off the record")
    assert m.find(q(NS_SID, "stanza-id")) is None
    res, fin = mam_query(b, room, "", "m3")
    assert error_condition(fin) == ("cancel", "service-unavailable")


# ---- limits and the switch ----

def test_room_limit(make_server):
    srv = make_server("--max-muc-rooms", "1", "--max-muc-occupants", "2", "--max-muc-history", "1")
    a = user(srv)
    b = user(srv)
    c = user(srv)
    try:
        room = new_room()
        create(a, room)
        assert join_error(a, new_room(), "x") == ("wait", "resource-constraint")
        # The service's occupant limit caps the room; admins and owners get spare seats.
        join(b, room, "bee")
        assert join_error(c, room, "sea") == ("wait", "service-unavailable")
        configure(a, room, expect="error", max_users="3")
        configure(a, room, expect="error", history="2")
        admin_set(a, room, "<item affiliation='admin' jid='%s'/>" % c.bare)
        self_presence(join(c, room, "sea"))
        # History is capped at max_muc_history.
        say(a, room, "one")
        say(a, room, "two")
        wait_body(c, room, "one")
        wait_body(c, room, "two")
        c.send("<presence to='%s/sea' type='unavailable'/>" % room)
        wait_presence(c, room + "/sea", "unavailable")
        got = join(c, room, "sea")
        assert [el.findtext(q(NS_CLIENT, "body")) for el in got
                if el.tag == MESSAGE and not is_subject(el)] == ["two"]
        # Once the room is gone, another may be created.
        for x, nick in ((a, "owner"), (b, "bee"), (c, "sea")):
            x.send("<presence to='%s/%s' type='unavailable'/>" % (room, nick))
            wait_presence(x, room + "/" + nick, "unavailable")
        create(a, new_room())
    finally:
        for x in (a, b, c):
            x.close()


def test_service_can_be_switched_off(make_server):
    srv = make_server("--muc", "no")
    a = user(srv)
    try:
        items = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_ITEMS, to=DOMAIN)
        assert SVC not in [i.get("jid") for i in items.iter(q(NS_DISCO_ITEMS, "item"))]
        r = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=SVC)
        assert r.get("type") == "error", tostr(r)
    finally:
        a.close()


# ---- a real client ----

def test_slixmpp_plugin(server, xmpp, arun):
    from slixmpp.exceptions import PresenceError

    ua, pa, ja = server.new_account("sx")
    ub, pb, jb = server.new_account("sx")
    room = new_room()
    plugins = ["xep_0030", "xep_0045", "xep_0004", "xep_0059", "xep_0313"]
    a = xmpp(ja + "/one", pa, server.c2s_port, plugins=plugins)
    b = xmpp(jb + "/one", pb, server.c2s_port, plugins=plugins)

    async def scenario():
        from harness import connect_and_wait
        await connect_and_wait(a)
        await connect_and_wait(b)
        a.send_presence()
        b.send_presence()
        pres, subject, occupants, history = await a["xep_0045"].join_muc_wait(
            room, "alice", timeout=5)
        assert {110, 201} <= pres["muc"]["status_codes"], pres
        cfg = await a["xep_0045"].get_room_config(room)
        cfg.set_values({"muc#roomconfig_roomname": "Slix Room",
                        "muc#roomconfig_moderatedroom": False})
        await a["xep_0045"].set_room_config(room, cfg)
        info = await a["xep_0030"].get_info(jid=room)
        assert [i[3] for i in info["disco_info"]["identities"]] == ["Slix Room"], info
        got = asyncio.get_running_loop().create_future()
        a.add_event_handler("groupchat_message",
                            lambda m: got.done() or got.set_result(m))
        pres, subject, occupants, history = await b["xep_0045"].join_muc_wait(
            room, "bob", timeout=5)
        assert pres["muc"]["role"] == "participant"
        b.send_message(mto=room, mbody="hi from slixmpp", mtype="groupchat")
        m = await asyncio.wait_for(got, 5)
        assert m["body"] == "hi from slixmpp" and m["from"].resource == "bob"
        last = asyncio.get_running_loop().create_future()
        a.add_event_handler("groupchat_message", lambda m: m["body"] == "n2" and
                            not last.done() and last.set_result(m))
        for i in range(3):
            b.send_message(mto=room, mbody="n%d" % i, mtype="groupchat")
        await asyncio.wait_for(last, 5)
        # The room archive through slixmpp's MAM plugin, paged by RSM (2 per page).
        bodies = []
        async for msg in a["xep_0313"].iterate(jid=room, rsm={"max": 2}):
            bodies.append(msg["mam_result"]["forwarded"]["stanza"]["body"])
            if len(bodies) > 10:
                break
        assert bodies == ["hi from slixmpp", "n0", "n1", "n2"], bodies
        await a["xep_0045"].set_affiliation(room, "outcast", jid=jb, reason="bye")
        members = await a["xep_0045"].get_affiliation_list(room, "outcast")
        assert jb in [str(j) for j in members], members
        try:
            await b["xep_0045"].join_muc_wait(room, "bob2", timeout=5)
            raise AssertionError("a banned user entered")
        except PresenceError as e:
            assert e.condition == "forbidden"
        await a["xep_0045"].destroy(room, reason="done")
    arun(scenario(), timeout=40)


# ---- configuration changes seen by the occupants ----

def test_configuration_changes_are_announced(server, clients):
    a, b, c = people(server, clients, 3)
    room = new_room()
    create(a, room)
    join(b, room, "bee")
    join(c, room, "sea")

    def notice():
        return b.wait(lambda el: el.tag == MESSAGE and el.get("from") == room and
                      el.find(q(NS_MUC_USER, "x")) is not None and
                      el.find(q(NS_CLIENT, "body")) is None, 5, "a status notice")
    # 10.2.1: privacy changes get their own codes, anything else 104.
    configure(a, room, whois="anyone")
    assert codes(notice()) == {172}
    configure(a, room, name="Renamed")
    assert codes(notice()) == {104}
    configure(a, room, whois="moderators", archive=False)
    assert codes(notice()) == {173, 171}
    # Becoming members-only removes whoever is not a member (322).
    admin_set(a, room, "<item affiliation='member' jid='%s'/>" % b.bare)
    configure(a, room, members_only=True)
    gone = wait_presence(c, room + "/sea", "unavailable")
    assert codes(gone) >= {322, 110}, tostr(gone)
    assert 322 in codes(wait_presence(b, room + "/sea", "unavailable"))


def test_owners_and_admins_through_the_form_and_the_last_owner(server, clients):
    a, b = people(server, clients, 2)
    room = new_room()
    create(a, room)
    join(b, room, "bee")
    # The last owner may not step down (10.5).
    r = admin_set(a, room, "<item affiliation='admin' jid='%s'/>" % a.bare, expect="error")
    assert error_condition(r) == ("cancel", "conflict")
    # Owners by the form: b becomes one, and a moderator with it.
    configure(a, room, owners=[a.bare, b.bare])
    p = b.wait(lambda el: el.tag == PRESENCE and el.get("from") == room + "/bee" and
               item(el).get("affiliation") == "owner")
    assert item(p).get("role") == "moderator"
    # Now a may step down to admin; an empty owner list is refused.
    admin_set(a, room, "<item affiliation='admin' jid='%s'/>" % a.bare)
    configure(b, room, expect="error", owners=[])
    admins = admin_get(b, room, "affiliation='admin'")
    assert [i.get("jid") for i in admins.findall(".//%s" % q(NS_MUC_ADMIN, "item"))] == [a.bare]
    # An admin may not touch an owner.
    r = admin_set(a, room, "<item affiliation='none' jid='%s'/>" % b.bare, expect="error")
    assert error_condition(r) == ("cancel", "not-allowed")


# ---- robustness ----

def test_a_slow_occupant_is_cut_off_and_leaves(make_server):
    """A client that stops reading overflows its output during the room's
    fan-outs; its session ends and it leaves the room; everyone else goes
    on getting the messages."""
    srv = make_server("--max-output-bytes", "65536", "--sm-resume-timeout", "0")
    a = user(srv)
    b = user(srv)
    slow = user(srv)
    try:
        room = new_room()
        create(a, room)
        join(b, room, "bee")
        join(slow, room, "slow")
        slow.s.sock.setsockopt(__import__("socket").SOL_SOCKET,
                               __import__("socket").SO_RCVBUF, 4096)
        body = "x" * 60000
        for i in range(300):
            a.send("<message to='%s' type='groupchat' id='big%d'><body>%s%d</body></message>" %
                   (room, i, body, i))
            # The others read everything (their copies must not pile up).
            wait_body(a, room, body + str(i))
            wait_body(b, room, body + str(i))
            if "conn.output_overflow" in srv.log_text():
                break
        srv.wait_log("conn.output_overflow", timeout=20)
        gone = wait_presence(b, room + "/slow", "unavailable", timeout=20)
        assert item(gone).get("role") == "none"
        say(a, room, "after")
        wait_body(b, room, "after", timeout=10)
    finally:
        for x in (a, b, slow):
            x.close()


def test_stanzas_the_room_sends_itself_while_busy_are_queued(server, clients):
    """An invitation addressed to another room goes out through the router
    and comes straight back to the service while it is still handling the
    invitation: it is queued and handled afterwards (not inside)."""
    a, = people(server, clients, 1)
    room, other = new_room(), new_room()
    create(a, room)
    create(a, other)
    mark = server.log_size()
    a.send("<message to='%s'><x xmlns='%s'><invite to='%s'/></x></message>" %
           (room, NS_MUC_USER, other))
    server.wait_log("event=muc.deferred", start=mark)
    # The service is still fine.
    say(a, room, "still works")
    wait_body(a, room, "still works")


def test_two_sessions_of_a_user_share_a_nickname(server, clients):
    """XEP-0045 7.2.9: the same bare JID may enter twice with one nickname;
    the room shows one occupant, both sessions get the traffic, and the
    nickname leaves with its last session."""
    a, b, c = people(server, clients, 3)
    b2 = Client(server, b.user, b.password, resource="r2")
    clients.append(b2)
    room = new_room()
    create(a, room)
    join(b, room, "bee")
    wait_presence(a, room + "/bee")
    got = join(b2, room, "bee")
    me = self_presence(got)
    assert item(me).get("jid") == b2.full
    # The second session's roster does not list its own nickname as someone else.
    assert [el.get("from") for el in got if el.tag == PRESENCE and 110 not in codes(el)] == \
        [room + "/owner"]
    # The first session hears about it as itself; someone else still may not take the nick.
    assert 110 in codes(wait_presence(b, room + "/bee"))
    assert join_error(c, room, "bee") == ("cancel", "conflict")
    say(a, room, "to both")
    wait_body(b, room, "to both")
    wait_body(b2, room, "to both")
    a.send("<message to='%s/bee' type='chat'><body>pm both</body></message>" % room)
    for x in (b, b2):
        x.wait(lambda el: el.tag == MESSAGE and el.findtext(q(NS_CLIENT, "body")) == "pm both")
    # One session leaves: the nickname stays (a sees no unavailable).
    b.send("<presence to='%s/bee' type='unavailable'/>" % room)
    assert 110 in codes(wait_presence(b, room + "/bee", "unavailable"))
    a.quiet(lambda el: el.tag == PRESENCE and el.get("from") == room + "/bee" and
            el.get("type") == "unavailable", 0.4)
    say(a, room, "still one")
    wait_body(b2, room, "still one")
    # The last one leaves: now it is gone.
    b2.send("<presence to='%s/bee' type='unavailable'/>" % room)
    wait_presence(a, room + "/bee", "unavailable")


# ---- occupants at home on other workers (docs/account-homes.md 2.6) ----

def test_occupants_at_home_on_other_workers(make_server):
    """The service runs on worker 0; with homes = hash the owner is at home
    there and two occupants on worker 1 (one batch per fan-out): messages,
    presence, private messages, history on entering and the archive reach
    them, and an occupant on worker 1 whose session vanished without its
    unavailable reaching the room is removed (333) after the next message."""
    srv = make_server("--workers", "2", "--homes", "hash", suite_args=False)  # exact placements
    made = []

    def at_home(k):
        name, pw, _ = srv.new_account("mh", home=k, workers=2)
        made.append(Client(srv, name, pw, resource="r"))
        return made[-1]
    try:
        a, b, c, d = at_home(0), at_home(1), at_home(1), at_home(1)
        room = new_room()
        create(a, room, history="5")
        say(a, room, "before")
        wait_body(a, room, "before")
        # History on entering, from worker 0 to worker 1, with its delay stamp.
        got = join(b, room, "bee")
        hist = [el for el in got if el.tag == MESSAGE and el.findtext(q(NS_CLIENT, "body"))]
        assert [el.findtext(q(NS_CLIENT, "body")) for el in hist] == ["before"]
        assert hist[0].find(q(NS_DELAY, "delay")).get("from") == room
        assert 110 in codes(self_presence(got))
        wait_presence(a, room + "/bee")
        got = join(c, room, "cee")
        assert {el.get("from") for el in got if el.tag == PRESENCE and 110 not in codes(el)} == \
            {room + "/owner", room + "/bee"}
        wait_presence(a, room + "/cee")
        wait_presence(b, room + "/cee")
        # The ghost-to-be: its join is not among its session's directed
        # presences (they are full), so its end does not tell the room.
        d.send("".join("<presence to='nobody%d@%s/x'/>" % (i, DOMAIN) for i in range(256)))
        join(d, room, "dee")
        for x in (a, b, c):
            wait_presence(x, room + "/dee")
        # Groupchat both ways: from worker 1 to all, from worker 0 to all.
        say(b, room, "from one")
        for x in (a, b, c, d):
            wait_body(x, room, "from one")
        say(a, room, "from zero")
        for x in (a, b, c, d):
            wait_body(x, room, "from zero")
        # A status change on worker 1 reaches both workers.
        c.send("<presence to='%s/cee'><show>away</show></presence>" % room)
        for x in (a, b):
            p = wait_presence(x, room + "/cee")
            assert p.findtext(q(NS_CLIENT, "show")) == "away", tostr(p)
        # Private messages: 1 -> 0, 0 -> 1, 1 -> 1 (through the room on 0).
        for snd, rcv, to, frm, body in ((b, a, "owner", "bee", "pm10"),
                                        (a, c, "cee", "owner", "pm01"),
                                        (c, b, "bee", "cee", "pm11")):
            snd.send("<message to='%s/%s' type='chat'><body>%s</body></message>" %
                     (room, to, body))
            m = rcv.wait(lambda el: el.tag == MESSAGE and
                         el.findtext(q(NS_CLIENT, "body")) == body, 5, body)
            assert m.get("from") == room + "/" + frm and m.get("to") == rcv.full, tostr(m)
        # The room's archive, asked from worker 1.
        res, fin = mam_query(c, room)
        assert fin.get("type") == "result", tostr(fin)
        assert [result_body(r) for r in res] == ["before", "from one", "from zero"]
        assert fin.find(q(NS_MAM, "fin")).get("complete") == "true"
        # d's connection dies; the room hears nothing of it.
        d.s.sock.close()
        srv.wait_log(r"event=session\.end conn=\d+ jid=%s@%s/r" % (d.user, DOMAIN), timeout=10)
        a.quiet(lambda el: el.tag == PRESENCE and el.get("from") == room + "/dee", 0.3)
        say(a, room, "after")
        for x in (a, b, c):
            wait_body(x, room, "after")
        for x in (a, b, c):
            gone = wait_presence(x, room + "/dee", "unavailable")
            assert 333 in codes(gone) and item(gone).get("role") == "none", tostr(gone)
        srv.wait_log(r"event=muc\.ghost_removed room=%s" % room)
        say(b, room, "still here")
        for x in (a, b, c):
            wait_body(x, room, "still here")
    finally:
        for x in made:
            x.close()
