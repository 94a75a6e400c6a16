"""Accounts at home on different workers (`--homes hash`, docs/account-homes.md):
each account's sessions and state live on its home worker, stanzas between
accounts cross through the mailboxes, the services run on worker 0. The
accounts of each test are placed on given workers with new_account(home=K)."""
import re

import pytest

from harness import DOMAIN, NS_CLIENT, login, q, tostr, start_spread
from homesutil import (check_both_archives, check_contact_vcard, check_errors_come_back,
                       check_messages_stay_in_order, db_rows, next_of)

NS_SM = "urn:xmpp:sm:3"
NS_MAM = "urn:xmpp:mam:2"
NS_LAST = "jabber:iq:last"
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = NS_MUC + "#user"
NS_MUC_OWNER = NS_MUC + "#owner"


@pytest.fixture(scope="module")
def spread():
    s = start_spread()
    yield s
    s.stop()


def pair(server, prefix, a_home=0, b_home=1):
    a = server.new_account(prefix, home=a_home)
    b = server.new_account(prefix, home=b_home)
    return a, b


def sessions_by_worker(server):
    r = server.stanzactl("status")
    assert r.returncode == 0, r.stderr
    m = re.search(r"^sessions: (\d+) \(worker 0: (\d+), worker 1: (\d+)\)$", r.stdout, re.M)
    assert m, r.stdout
    return [int(x) for x in m.groups()]


def test_hash_mode_is_announced_and_sessions_live_at_home(spread):
    spread.wait_log(r"event=server\.homes mode=hash workers=2")
    before = sessions_by_worker(spread)
    streams = []
    try:
        # Whichever worker takes each connection, the session is bound at home.
        for home in (1, 1, 0):
            u, p, _ = spread.new_account("mv", home=home)
            streams.append(login(spread.c2s_port, u, p)[0])
        after = sessions_by_worker(spread)
        assert [a - b for a, b in zip(after, before)] == [3, 1, 2], (before, after)
    finally:
        for s in streams:
            s.close()


@pytest.mark.parametrize("homes", [(0, 1), (1, 0)])
def test_messages_cross_homes_in_order(spread, homes):
    check_messages_stay_in_order(spread, *pair(spread, "ord", *homes))


def test_an_error_comes_back_across_homes(spread):
    sender, recipient = pair(spread, "bnc")
    check_errors_come_back(spread, sender, recipient[2])


@pytest.mark.parametrize("homes", [(0, 1), (1, 0)])
def test_a_storage_backed_contact_iq_is_answered_across_homes(spread, homes):
    # The vCard is read at the owner's home from storage; the answer goes
    # back to the asker's home (iq_async's stand-in for remote requesters).
    asker, owner = pair(spread, "ctq", *homes)
    check_contact_vcard(spread, asker, owner, "Far Home", burst=20)


def test_an_iq_between_clients_and_its_answer_cross_homes(spread):
    (su, sp, _), (ru, rp, _) = pair(spread, "png")
    a, afull = login(spread.c2s_port, su, sp)
    b, bfull = login(spread.c2s_port, ru, rp)
    try:
        a.send("<iq to='%s' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>" % bfull)
        el = next_of(b, q(NS_CLIENT, "iq"))
        assert el.get("from") == afull and el.get("id") == "p1", tostr(el)
        b.send("<iq to='%s' type='result' id='p1'/>" % afull)
        el = next_of(a, q(NS_CLIENT, "iq"))
        assert el.get("type") == "result" and el.get("from") == bfull, tostr(el)
    finally:
        a.close()
        b.close()


def test_offline_message_across_homes_after_the_ack(spread):
    (su, sp, _), (ru, rp, rjid) = pair(spread, "off", 1, 0)
    snd, _ = login(spread.c2s_port, su, sp)
    try:
        snd.send("<enable xmlns='%s'/>" % NS_SM)
        snd.expect(q(NS_SM, "enabled"))
        for i in range(3):
            snd.send("<message to='%s' type='chat' id='f%d'><body>later %d</body></message>"
                     % (rjid, i, i))
        snd.send("<r xmlns='%s'/>" % NS_SM)
        a = snd.expect(q(NS_SM, "a"))
        assert a.get("h") == "3", tostr(a)
        # Acknowledged means stored by the recipient's home.
        rows = db_rows(spread, "SELECT stanza FROM offline_messages WHERE username = ?", ru)
        assert len(rows) == 3, rows
    finally:
        snd.close()
    rcv, _ = login(spread.c2s_port, ru, rp)
    try:
        rcv.send("<presence/>")
        bodies = []
        while len(bodies) < 3:
            el = next_of(rcv, q(NS_CLIENT, "message"))
            bodies.append(el.find(q(NS_CLIENT, "body")).text)
        assert bodies == ["later 0", "later 1", "later 2"], bodies
    finally:
        rcv.close()


def test_both_archives_across_homes(spread):
    check_both_archives(spread, *pair(spread, "arc"))


def test_last_activity_of_a_contact_at_another_home(spread):
    (su, sp, _), (ru, rp, rjid) = pair(spread, "lst")
    b, _ = login(spread.c2s_port, ru, rp)
    b.close()
    a, _ = login(spread.c2s_port, su, sp)
    try:
        # No subscription: the server answers for the account (forbidden or a result).
        a.send("<iq to='%s' type='get' id='l1'><query xmlns='%s'/></iq>" % (rjid, NS_LAST))
        el = next_of(a, q(NS_CLIENT, "iq"))
        assert el.get("id") == "l1" and el.get("type") in ("result", "error"), tostr(el)
    finally:
        a.close()


def test_a_room_serves_occupants_at_both_homes(spread):
    (u0, p0, j0), (u1, p1, j1) = pair(spread, "muc")
    a, afull = login(spread.c2s_port, u0, p0)
    b, bfull = login(spread.c2s_port, u1, p1)
    room = "spread%s@conference.%s" % (u0[-6:], DOMAIN)
    try:
        # Created by the account on worker 1 (the room lives on worker 0).
        b.send("<presence to='%s/bee'><x xmlns='%s'/></presence>" % (room, NS_MUC))
        el = next_of(b, q(NS_CLIENT, "presence"))
        assert el.get("from") == room + "/bee", tostr(el)
        b.send("<iq to='%s' type='set' id='c1'><query xmlns='%s'><x xmlns='jabber:x:data' "
               "type='submit'/></query></iq>" % (room, NS_MUC_OWNER))
        el = next_of(b, q(NS_CLIENT, "iq"))
        assert el.get("type") == "result", tostr(el)
        a.send("<presence to='%s/ant'><x xmlns='%s'/></presence>" % (room, NS_MUC))
        seen = set()
        while "ant" not in seen:
            el = next_of(a, q(NS_CLIENT, "presence"))
            seen.add(el.get("from").split("/", 1)[1])
        el = next_of(b, q(NS_CLIENT, "presence"))
        assert el.get("from") == room + "/ant", tostr(el)
        for sender, nick in ((a, "ant"), (b, "bee")):
            sender.send("<message to='%s' type='groupchat'><body>hi from %s</body></message>"
                        % (room, nick))
            for rcv in (a, b):
                el = next_of(rcv, q(NS_CLIENT, "message"))
                while el.find(q(NS_CLIENT, "body")) is None:  # the subject on joining
                    el = next_of(rcv, q(NS_CLIENT, "message"))
                assert el.get("from") == "%s/%s" % (room, nick), tostr(el)
                assert el.find(q(NS_CLIENT, "body")).text == "hi from " + nick, tostr(el)
    finally:
        a.close()
        b.close()


