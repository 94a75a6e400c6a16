"""XEP-0050 Ad-Hoc Commands with the XEP-0133 admin commands.

Discovery (the command list per requester, command nodes), every admin
command end to end (add, delete, change password, online users,
registered users, announce, end session), the permission check
(--admin), and the engine's rules: cancel, actions a stage does not
offer, unknown and ended session ids, expiry, the per-account session
limit, forms that do not fit. Passwords never come back or reach the log.

Raw streams show the exact wire format; slixmpp's xep_0050/xep_0133
plugins drive a few flows as a real client does."""
import asyncio
import itertools
import subprocess
import time

import pytest

from harness import (DOMAIN, NS_CLIENT, NS_DISCO_INFO, STANZAD, StanzadServer,
                     connect_and_wait, home_of, login, next_message, q, tostr, xml_escape, start_spread)
from iqutil import error_of, request, result_of

NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_XDATA = "jabber:x:data"
NS_ADMIN = "http://jabber.org/protocol/admin"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"

ADMIN_COMMANDS = ["add-user", "delete-user", "change-user-password", "end-user-session",
                  "get-registered-users-num", "get-registered-users-list",
                  "get-online-users-num", "get-online-users-list", "announce"]

_ids = itertools.count(1)


def node(name):
    return "%s#%s" % (NS_ADMIN, name)


def submit_form(fields, form_type=NS_ADMIN, form_kind="submit"):
    """<x type='submit'/> from {var: value or [values]}."""
    out = ["<x xmlns='%s' type='%s'>" % (NS_XDATA, form_kind)]
    if form_type:
        out.append("<field var='FORM_TYPE'><value>%s</value></field>" % form_type)
    for var, vals in fields.items():
        if not isinstance(vals, (list, tuple)):
            vals = [vals]
        out.append("<field var='%s'>%s</field>" % (
            xml_escape(var), "".join("<value>%s</value>" % xml_escape(v) for v in vals)))
    out.append("</x>")
    return "".join(out)


def command(s, cmd_node, action=None, sessionid=None, payload="", to=DOMAIN):
    """Sends a <command/> set; returns the answer."""
    attrs = " node='%s'" % xml_escape(cmd_node) if cmd_node is not None else ""
    if action:
        attrs += " action='%s'" % action
    if sessionid:
        attrs += " sessionid='%s'" % xml_escape(sessionid)
    return request(s, "set", "<command xmlns='%s'%s>%s</command>" % (NS_COMMANDS, attrs, payload),
                   "c%d" % next(_ids), to=to)


def result_command(el, status=None):
    cmd = result_of(el)
    assert cmd is not None and cmd.tag == q(NS_COMMANDS, "command"), tostr(el)
    if status:
        assert cmd.get("status") == status, tostr(el)
    return cmd


def cmd_error(el):
    """(error type, condition, commands-namespace condition or None, text)."""
    etype, cond, text = error_of(el)
    err = el.find(q(NS_CLIENT, "error"))
    specific = [c.tag.split("}")[1] for c in err if c.tag.startswith("{%s}" % NS_COMMANDS)]
    assert len(specific) <= 1, tostr(el)
    return etype, cond, specific[0] if specific else None, text


def form_of(cmd):
    x = cmd.find(q(NS_XDATA, "x"))
    assert x is not None, tostr(cmd)
    return x


def fields_of(x):
    """{var: (type, [values], required)} of a form."""
    out = {}
    for f in x.findall(q(NS_XDATA, "field")):
        out[f.get("var")] = (f.get("type"), [v.text or "" for v in f.findall(q(NS_XDATA, "value"))],
                             f.find(q(NS_XDATA, "required")) is not None)
    return out


def notes_of(cmd):
    return [(n.get("type"), n.text or "") for n in cmd.findall(q(NS_COMMANDS, "note"))]


def run_single_stage(s, name, fields):
    """execute -> form -> submit (complete). Returns the answer to the submission."""
    first = result_command(command(s, node(name)), "executing")
    sid = first.get("sessionid")
    assert sid, tostr(first)
    return command(s, node(name), "complete", sid, submit_form(fields))


# ---- fixtures ----

@pytest.fixture(scope="module")
def adm():
    """A server whose admins are boss@ and chief@ (written in another case:
    the configuration normalizes JIDs)."""
    s = StanzadServer(["--admin", "boss@localhost", "--admin", "Chief@LOCALHOST"],
                      name="stanzad(adhoc)").start()
    s.add_user("boss", "boss-pw")
    s.add_user("chief", "chief-pw")
    yield s
    s.stop()


@pytest.fixture
def boss(adm):
    s, _ = login(adm.c2s_port, "boss", "boss-pw")
    yield s
    s.close()


def can_login(server, user, password):
    try:
        s, _ = login(server.c2s_port, user, password)
    except AssertionError:
        return False
    s.close()
    return True


# ---- discovery ----

def test_server_advertises_commands(adm, boss):
    info = result_of(request(boss, "get", "<query xmlns='%s'/>" % NS_DISCO_INFO, "d1", to=DOMAIN))
    feats = {f.get("var") for f in info.findall(q(NS_DISCO_INFO, "feature"))}
    assert NS_COMMANDS in feats


def test_admin_lists_the_admin_commands(adm, boss):
    el = request(boss, "get", "<query xmlns='%s' node='%s'/>" % (NS_DISCO_ITEMS, NS_COMMANDS),
                 "d2", to=DOMAIN)
    items = result_of(el)
    assert items.get("node") == NS_COMMANDS
    got = {(i.get("jid"), i.get("node")) for i in items.findall(q(NS_DISCO_ITEMS, "item"))}
    assert got == {(DOMAIN, node(n)) for n in ADMIN_COMMANDS}
    assert all(i.get("name") for i in items)


def test_non_admin_lists_no_commands_and_is_forbidden(adm):
    user, pw, _ = adm.new_account("plain")
    s, _ = login(adm.c2s_port, user, pw)
    try:
        items = result_of(request(s, "get", "<query xmlns='%s' node='%s'/>" %
                                  (NS_DISCO_ITEMS, NS_COMMANDS), "d3", to=DOMAIN))
        assert list(items) == []
        el = request(s, "get", "<query xmlns='%s' node='%s'/>" % (NS_DISCO_INFO, node("add-user")),
                     "d4", to=DOMAIN)
        assert error_of(el)[1] == "forbidden"
        for name in ("add-user", "get-online-users-num", "announce"):
            assert cmd_error(command(s, node(name)))[1] == "forbidden"
        # A session id obtained elsewhere does not help either.
        assert cmd_error(command(s, node("add-user"), "complete", "w0-1-0000000000000000",
                                 submit_form({"accountjid": "x@localhost"})))[1] == "forbidden"
    finally:
        s.close()


def test_command_node_and_list_info(adm, boss):
    el = request(boss, "get", "<query xmlns='%s' node='%s'/>" % (NS_DISCO_INFO, node("announce")),
                 "d5", to=DOMAIN)
    info = result_of(el)
    ident = info.find(q(NS_DISCO_INFO, "identity"))
    assert (ident.get("category"), ident.get("type")) == ("automation", "command-node")
    feats = {f.get("var") for f in info.findall(q(NS_DISCO_INFO, "feature"))}
    assert {NS_COMMANDS, NS_XDATA} <= feats
    info = result_of(request(boss, "get", "<query xmlns='%s' node='%s'/>" %
                             (NS_DISCO_INFO, NS_COMMANDS), "d6", to=DOMAIN))
    ident = info.find(q(NS_DISCO_INFO, "identity"))
    assert (ident.get("category"), ident.get("type")) == ("automation", "command-list")
    el = request(boss, "get", "<query xmlns='%s' node='%s#nope'/>" % (NS_DISCO_INFO, NS_ADMIN),
                 "d7", to=DOMAIN)
    assert error_of(el)[1] == "item-not-found"


def test_slixmpp_lists_commands_only_for_admins(adm, xmpp, arun):
    user, pw, jid = adm.new_account("slx")
    admin = xmpp("boss@localhost", "boss-pw", adm.c2s_port, plugins=["xep_0050", "xep_0133"])
    plain = xmpp(jid, pw, adm.c2s_port, plugins=["xep_0050", "xep_0133"])

    async def go():
        await connect_and_wait(admin)
        await connect_and_wait(plain)
        r = await admin["xep_0133"].get_commands(timeout=10)
        nodes = {i[1] for i in r["disco_items"]["items"]}
        r2 = await plain["xep_0133"].get_commands(timeout=10)
        return nodes, r2["disco_items"]["items"]
    nodes, plain_items = arun(go())
    assert nodes == {node(n) for n in ADMIN_COMMANDS}
    assert not plain_items


# ---- add-user ----

def test_add_user_form_then_new_account_logs_in(adm, boss):
    first = result_command(command(boss, node("add-user"), "execute"), "executing")
    assert first.get("node") == node("add-user")
    actions = first.find(q(NS_COMMANDS, "actions"))
    assert actions is not None and actions.get("execute") == "complete", tostr(first)
    assert [c.tag for c in actions] == [q(NS_COMMANDS, "complete")]
    x = form_of(first)
    assert x.get("type") == "form"
    f = fields_of(x)
    assert f["FORM_TYPE"] == ("hidden", [NS_ADMIN], False)
    assert f["accountjid"][0] == "jid-single" and f["accountjid"][2]
    assert f["password"][0] == "text-private"
    user = "added%d" % next(_ids)
    done = command(boss, node("add-user"), "complete", first.get("sessionid"),
                   submit_form({"accountjid": "%s@%s" % (user, DOMAIN),
                                "password": "s3cret-add", "password-verify": "s3cret-add"}))
    cmd = result_command(done, "completed")
    assert cmd.get("sessionid") == first.get("sessionid")
    assert notes_of(cmd)[0][0] == "info"
    assert can_login(adm, user, "s3cret-add")
    assert not can_login(adm, user, "wrong")


def test_add_existing_user_is_a_conflict_and_the_form_comes_back(adm, boss):
    existing, _, ejid = adm.new_account("exists")
    first = result_command(command(boss, node("add-user")))
    sid = first.get("sessionid")
    el = command(boss, node("add-user"), "complete", sid,
                 submit_form({"accountjid": ejid, "password": "Sup3r-Secret-Pw"}))
    etype, cond, specific, text = cmd_error(el)
    assert (etype, cond) == ("cancel", "conflict"), tostr(el)
    assert "Sup3r-Secret-Pw" not in tostr(el)
    cmd = el.find(q(NS_COMMANDS, "command"))
    assert cmd is not None and cmd.get("sessionid") == sid, tostr(el)
    assert notes_of(cmd)[0][0] == "error" and ejid in notes_of(cmd)[0][1]
    # The form again, with the name as entered and no password.
    f = fields_of(form_of(cmd))
    assert f["accountjid"][1] == [ejid] and f["password"][1] == []
    # The session stays: a corrected submission completes it.
    user = "fixed%d" % next(_ids)
    ok = command(boss, node("add-user"), "complete", sid,
                 submit_form({"accountjid": "%s@%s" % (user, DOMAIN), "password": "pw-2"}))
    result_command(ok, "completed")
    assert can_login(adm, user, "pw-2")


def test_add_user_refuses_bad_submissions(adm, boss):
    first = result_command(command(boss, node("add-user")))
    sid = first.get("sessionid")
    user = "bad%d@%s" % (next(_ids), DOMAIN)
    cases = [
        ({"accountjid": user, "password": "a", "password-verify": "b"}, "bad-request"),
        ({"accountjid": "someone@elsewhere.example", "password": "a"}, "bad-request"),
        ({"accountjid": user + "/res", "password": "a"}, "bad-request"),
        ({"password": "a"}, "bad-request"),                  # required field missing
        ({"accountjid": "@@", "password": "a"}, "bad-request"),  # not a JID
        ({"accountjid": [user, user], "password": "a"}, "bad-request"),  # jid-single, 2 values
    ]
    for fields, want in cases:
        el = command(boss, node("add-user"), "complete", sid, submit_form(fields))
        etype, cond, specific, _ = cmd_error(el)
        assert (cond, specific) == (want, "bad-payload"), (fields, tostr(el))
        cmd = el.find(q(NS_COMMANDS, "command"))
        assert cmd is not None and notes_of(cmd)[0][0] == "error", tostr(el)
    # Another FORM_TYPE is not this form.
    el = command(boss, node("add-user"), "complete", sid,
                 submit_form({"accountjid": user, "password": "a"}, form_type="urn:other"))
    assert cmd_error(el)[1:3] == ("bad-request", "bad-payload")
    # No form at all.
    el = command(boss, node("add-user"), "complete", sid)
    assert cmd_error(el)[1:3] == ("bad-request", "bad-payload")
    # None of it was created, and the session is still usable.
    assert not can_login(adm, user.split("@")[0], "a")
    result_command(command(boss, node("add-user"), "cancel", sid), "canceled")


def test_slixmpp_add_user_flow(adm, xmpp, arun):
    admin = xmpp("chief@localhost", "chief-pw", adm.c2s_port, plugins=["xep_0050", "xep_0133"])
    user = "slixadd%d" % next(_ids)

    async def go():
        await connect_and_wait(admin)
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def on_form(iq, session):
            # Answer every field the form offers, as a client UI would.
            values = {var: f["value"] for var, f in iq["command"]["form"].get_fields().items()}
            values.update({"accountjid": "%s@%s" % (user, DOMAIN), "password": "slix-pw",
                           "password-verify": "slix-pw"})
            answer = admin["xep_0004"].make_form(ftype="submit")
            for var, value in values.items():
                answer.add_field(var=var, value=value)
            session["payload"] = answer
            session["next"] = on_done
            admin["xep_0050"].complete_command(session)

        def on_done(iq, session):
            done.set_result(iq)

        def on_error(iq, session):
            done.set_exception(AssertionError("error: %s" % iq))
        admin["xep_0133"].add_user(session={"next": on_form, "error": on_error})
        return await asyncio.wait_for(done, 10)
    iq = arun(go())
    assert iq["command"]["status"] == "completed"
    assert can_login(adm, user, "slix-pw")


# ---- change-user-password ----

def test_change_user_password(adm, boss):
    user, old_pw, jid = adm.new_account("chg")
    done = run_single_stage(boss, "change-user-password",
                            {"accountjid": jid, "password": "brand-new-pw"})
    result_command(done, "completed")
    assert can_login(adm, user, "brand-new-pw")
    assert not can_login(adm, user, old_pw)
    # No such account: item-not-found, the form back.
    ghost = "ghost%d@%s" % (next(_ids), DOMAIN)
    el = run_single_stage(boss, "change-user-password", {"accountjid": ghost, "password": "x"})
    assert cmd_error(el)[1] == "item-not-found", tostr(el)
    assert "brand-new-pw" not in adm.log_text() and "x</value>" not in tostr(el)


# ---- delete-user ----

def test_delete_user_ends_sessions_and_blocks_login(adm, boss):
    user, pw, jid = adm.new_account("del")
    victim, _ = login(adm.c2s_port, user, pw, resource="one")
    victim2, _ = login(adm.c2s_port, user, pw, resource="two")
    try:
        missing = "nobody%d@%s" % (next(_ids), DOMAIN)
        done = run_single_stage(boss, "delete-user",
                                {"accountjids": [jid, missing, "x@elsewhere.example"]})
        cmd = result_command(done, "completed")
        (ntype, text), = notes_of(cmd)
        assert ntype == "warn" and jid in text and missing in text and "elsewhere" in text, text
        assert victim.stream_error() == "not-authorized"
        assert victim2.stream_error() == "not-authorized"
    finally:
        victim.close()
        victim2.close()
    assert not can_login(adm, user, pw)
    r = adm.stanzactl("user", "list")
    assert user not in r.stdout.split()


# ---- online users ----

def test_online_users_list_and_number(adm, boss):
    accounts = [adm.new_account("onl") for _ in range(2)]
    streams = [login(adm.c2s_port, u, p)[0] for u, p, _ in accounts]
    streams.append(login(adm.c2s_port, accounts[0][0], accounts[0][1], resource="r2")[0])
    try:
        first = result_command(command(boss, node("get-online-users-list")), "executing")
        f = fields_of(form_of(first))
        assert f["max_items"][0] == "list-single"
        done = command(boss, node("get-online-users-list"), "complete", first.get("sessionid"),
                       submit_form({"max_items": "none"}))
        x = form_of(result_command(done, "completed"))
        assert x.get("type") == "result"
        listed = fields_of(x)["onlineuserjids"][1]
        assert len(listed) == len(set(listed)), listed   # one entry per account
        assert {"boss@localhost"} | {j for _, _, j in accounts} <= set(listed)
        num = result_command(command(boss, node("get-online-users-num")), "completed")
        n = int(fields_of(form_of(num))["onlineusersnum"][1][0])
        assert n == len(listed)
        # max_items cuts the list (and says so).
        done = run_single_stage(boss, "get-online-users-list", {"max_items": "25"})
        assert len(fields_of(form_of(result_command(done)))["onlineuserjids"][1]) <= 25
        el = run_single_stage(boss, "get-online-users-list", {"max_items": "7"})
        assert cmd_error(el)[1:3] == ("bad-request", "bad-payload")   # not an option
    finally:
        for s in streams:
            s.close()


def test_slixmpp_online_users_num(adm, xmpp, arun):
    admin = xmpp("boss@localhost", "boss-pw", adm.c2s_port, plugins=["xep_0050", "xep_0133"])

    async def go():
        await connect_and_wait(admin)
        return await admin["xep_0050"].send_command(DOMAIN, node("get-online-users-num"),
                                                    timeout=10)
    iq = arun(go())
    assert iq["command"]["status"] == "completed"
    assert int(iq["command"]["form"]["values"]["onlineusersnum"]) >= 1


# ---- registered users ----

def test_registered_users_number_and_list(adm, boss):
    adm.new_account("reg")
    users = adm.stanzactl("user", "list").stdout.split()
    num = result_command(command(boss, node("get-registered-users-num")), "completed")
    assert num.get("sessionid")
    assert fields_of(form_of(num))["registeredusersnum"][1] == [str(len(users))]
    done = run_single_stage(boss, "get-registered-users-list", {"max_items": "none"})
    listed = fields_of(form_of(result_command(done, "completed")))["registereduserjids"][1]
    assert sorted(listed) == sorted("%s@%s" % (u, DOMAIN) for u in users)


# ---- announce ----

def test_announce_reaches_every_online_session(adm, boss):
    (u1, p1, _), (u2, p2, _) = adm.new_account("ann"), adm.new_account("ann")
    s1, _ = login(adm.c2s_port, u1, p1)
    s1b, _ = login(adm.c2s_port, u1, p1, resource="b")
    s2, _ = login(adm.c2s_port, u2, p2)
    try:
        done = run_single_stage(boss, "announce", {"subject": "Maintenance",
                                                   "announcement": ["Going down", "in 5 min"]})
        cmd = result_command(done, "completed")
        assert notes_of(cmd)[0][0] == "info"
        # The admin's own copy came while it waited for the answer.
        mine = [el for el in boss.skipped_by_request if el.tag == q(NS_CLIENT, "message")]
        for s in (s1, s1b, s2, boss):
            m = mine.pop() if s is boss else s.expect(q(NS_CLIENT, "message"))
            assert m.get("type") == "headline" and m.get("from") == DOMAIN, tostr(m)
            assert m.get("to") == s.jid, tostr(m)
            assert m.findtext(q(NS_CLIENT, "body")) == "Going down\nin 5 min"
            assert m.findtext(q(NS_CLIENT, "subject")) == "Maintenance"
    finally:
        for s in (s1, s1b, s2):
            s.close()


def test_announce_via_slixmpp_client_receives(adm, xmpp, arun, boss):
    user, pw, jid = adm.new_account("annslx")
    c = xmpp(jid, pw, adm.c2s_port)
    arun(connect_and_wait(c))
    done = run_single_stage(boss, "announce", {"announcement": "hello all"})
    result_command(done, "completed")
    m = arun(next_message(c, body="hello all"))
    assert m["type"] == "headline" and m["from"].bare == DOMAIN


# ---- end-user-session ----

def test_end_user_session_bare_and_full(adm, boss):
    user, pw, jid = adm.new_account("kick")
    a, full_a = login(adm.c2s_port, user, pw, resource="a")
    b, full_b = login(adm.c2s_port, user, pw, resource="b")
    try:
        # A full JID ends that session only.
        done = run_single_stage(boss, "end-user-session", {"accountjids": full_a})
        assert notes_of(result_command(done, "completed"))[0] == ("info", "1 session ended.")
        assert a.stream_error() == "policy-violation"
        assert b.nothing_within(0.3)
        c, _ = login(adm.c2s_port, user, pw, resource="c")
        # A bare JID ends all of them (named twice, each counts once); the
        # account still logs in afterwards.
        done = run_single_stage(boss, "end-user-session", {"accountjids": [jid, full_b]})
        assert notes_of(result_command(done, "completed"))[0] == ("info", "2 sessions ended.")
        assert b.stream_error() == "policy-violation"
        assert c.stream_error() == "policy-violation"
        assert can_login(adm, user, pw)
        done = run_single_stage(boss, "end-user-session",
                                {"accountjids": "nobody%d@%s" % (next(_ids), DOMAIN)})
        assert notes_of(result_command(done, "completed"))[0][0] == "warn"
    finally:
        a.close()
        b.close()


def test_admin_ending_own_session_hears_back_first(adm):
    s, full = login(adm.c2s_port, "chief", "chief-pw", resource="self")
    try:
        done = run_single_stage(s, "end-user-session", {"accountjids": full})
        assert notes_of(result_command(done, "completed"))[0] == ("info", "1 session ended.")
        assert s.stream_error() == "policy-violation"
    finally:
        s.close()


# ---- engine: actions and sessions ----

def test_cancel_ends_the_session(adm, boss):
    first = result_command(command(boss, node("delete-user")))
    sid = first.get("sessionid")
    cmd = result_command(command(boss, node("delete-user"), "cancel", sid), "canceled")
    assert cmd.get("sessionid") == sid and list(cmd) == []
    # An ended session is over, not unknown.
    el = command(boss, node("delete-user"), "complete", sid,
                 submit_form({"accountjids": "x@localhost"}))
    assert cmd_error(el)[:3] == ("cancel", "not-allowed", "session-expired"), tostr(el)


def test_completed_session_cannot_be_reused(adm, boss):
    first = result_command(command(boss, node("get-online-users-list")))
    sid = first.get("sessionid")
    result_command(command(boss, node("get-online-users-list"), "complete", sid,
                           submit_form({"max_items": "25"})), "completed")
    el = command(boss, node("get-online-users-list"), "complete", sid,
                 submit_form({"max_items": "25"}))
    assert cmd_error(el)[1:3] == ("not-allowed", "session-expired")


def test_unknown_and_foreign_session_ids(adm, boss):
    for sid in ("made-up", "w0-1-0123456789abcdef", "x" * 300):
        el = command(boss, node("add-user"), "cancel", sid)
        assert cmd_error(el)[:3] == ("modify", "bad-request", "bad-sessionid"), tostr(el)
    first = result_command(command(boss, node("add-user")))
    sid = first.get("sessionid")
    # Another admin cannot continue it, nor can it continue another command.
    chief, _ = login(adm.c2s_port, "chief", "chief-pw")
    try:
        el = command(chief, node("add-user"), "cancel", sid)
        assert cmd_error(el)[1:3] == ("bad-request", "bad-sessionid")
    finally:
        chief.close()
    el = command(boss, node("delete-user"), "cancel", sid)
    assert cmd_error(el)[1:3] == ("bad-request", "bad-sessionid")
    result_command(command(boss, node("add-user"), "cancel", sid), "canceled")


def test_action_errors(adm, boss):
    el = command(boss, node("add-user"), "jump")
    assert cmd_error(el)[1:3] == ("bad-request", "malformed-action")
    # Continuing without a session.
    el = command(boss, node("add-user"), "complete")
    assert cmd_error(el)[1:3] == ("bad-request", "bad-sessionid")
    first = result_command(command(boss, node("add-user")))
    sid = first.get("sessionid")
    # One stage: neither next nor prev is offered.
    for action in ("next", "prev"):
        el = command(boss, node("add-user"), action, sid,
                     submit_form({"accountjid": "n@localhost", "password": "p"}))
        assert cmd_error(el)[1:3] == ("bad-request", "bad-action"), (action, tostr(el))
    # 'execute' means the stage's default (complete): the form is checked.
    el = command(boss, node("add-user"), "execute", sid, submit_form({"password": "p"}))
    assert cmd_error(el)[1:3] == ("bad-request", "bad-payload")
    result_command(command(boss, node("add-user"), "cancel", sid), "canceled")


def test_missing_and_unknown_nodes(adm, boss):
    el = command(boss, None)
    assert cmd_error(el)[1] == "bad-request"
    el = command(boss, NS_ADMIN + "#shutdown")
    assert cmd_error(el)[1] == "item-not-found"
    # Commands live on the server JID only.
    el = command(boss, node("add-user"), to="boss@localhost")
    assert error_of(el)[1] == "service-unavailable"


def test_expired_session(make_server):
    srv = make_server("--admin", "boss@localhost", "--adhoc-timeout", "1")
    srv.add_user("boss", "boss-pw")
    s, _ = login(srv.c2s_port, "boss", "boss-pw")
    try:
        first = result_command(command(s, node("announce")))
        sid = first.get("sessionid")
        time.sleep(1.3)
        el = command(s, node("announce"), "complete", sid, submit_form({"announcement": "late"}))
        assert cmd_error(el)[:3] == ("cancel", "not-allowed", "session-expired"), tostr(el)
        # A step within the timeout keeps a session alive.
        first = result_command(command(s, node("announce")))
        sid = first.get("sessionid")
        time.sleep(0.6)
        el = command(s, node("announce"), "complete", sid, submit_form({}))
        assert cmd_error(el)[1:3] == ("bad-request", "bad-payload")   # still there, refused
        time.sleep(0.6)
        result_command(command(s, node("announce"), "cancel", sid), "canceled")
    finally:
        s.close()


def test_session_limit_ends_the_oldest(make_server):
    srv = make_server("--admin", "boss@localhost", "--adhoc-max-sessions", "2")
    srv.add_user("boss", "boss-pw")
    s, _ = login(srv.c2s_port, "boss", "boss-pw")
    try:
        sids = [result_command(command(s, node("announce"))).get("sessionid") for _ in range(3)]
        assert len(set(sids)) == 3
        el = command(s, node("announce"), "cancel", sids[0])
        assert cmd_error(el)[1:3] == ("not-allowed", "session-expired")
        for sid in sids[1:]:
            result_command(command(s, node("announce"), "cancel", sid), "canceled")
    finally:
        s.close()


def test_passwords_never_reach_the_log(adm, boss):
    secret = "Zq9-never-log-%d" % next(_ids)
    user = "logchk%d" % next(_ids)
    result_command(run_single_stage(boss, "add-user", {"accountjid": "%s@%s" % (user, DOMAIN),
                                                       "password": secret}), "completed")
    el = run_single_stage(boss, "add-user", {"accountjid": "%s@%s" % (user, DOMAIN),
                                             "password": secret})
    assert cmd_error(el)[1] == "conflict"
    assert secret not in tostr(el)
    result_command(run_single_stage(boss, "change-user-password",
                                    {"accountjid": "%s@%s" % (user, DOMAIN),
                                     "password": secret + "2"}), "completed")
    assert secret not in adm.log_text()


def test_invalid_admin_jid_is_refused_at_startup(tmp_path):
    for bad in ("not a jid", "user@localhost/res", "localhost"):
        r = subprocess.run([STANZAD, "--state-dir", str(tmp_path), "--admin", bad],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode != 0 and "admin" in r.stderr, (bad, r.stderr)


# ---- accounts at home on different workers ----

@pytest.fixture(scope="module")
def spread():
    """root@ is at home on worker 0, boss@ on worker 1 (both admins)."""
    assert home_of("root@" + DOMAIN, 2) == 0 and home_of("boss@" + DOMAIN, 2) == 1
    s = start_spread("--admin", "root@localhost", "--admin", "boss@localhost",
                     name="stanzad(adhoc, homes hash)")
    s.add_user("root", "root-pw")
    s.add_user("boss", "boss-pw")
    yield s
    s.stop()


@pytest.mark.parametrize("admin", ["root", "boss"])
def test_online_users_of_every_worker(spread, admin):
    adm_s, _ = login(spread.c2s_port, admin, admin + "-pw")
    accounts = [spread.new_account("onw", home=k, workers=2) for k in (0, 1)]
    streams = [login(spread.c2s_port, u, p)[0] for u, p, _ in accounts]
    try:
        done = run_single_stage(adm_s, "get-online-users-list", {"max_items": "none"})
        listed = fields_of(form_of(result_command(done, "completed")))["onlineuserjids"][1]
        assert {"%s@%s" % (admin, DOMAIN)} | {j for _, _, j in accounts} <= set(listed), listed
        assert listed == sorted(set(listed)), listed
        num = result_command(command(adm_s, node("get-online-users-num")), "completed")
        assert int(fields_of(form_of(num))["onlineusersnum"][1][0]) == len(listed)
    finally:
        for s in streams + [adm_s]:
            s.close()


def test_end_session_of_a_user_on_another_worker(spread):
    root, _ = login(spread.c2s_port, "root", "root-pw", resource="spread")
    user, pw, jid = spread.new_account("endw", home=1, workers=2)
    a, full_a = login(spread.c2s_port, user, pw, resource="a")
    b, _ = login(spread.c2s_port, user, pw, resource="b")
    near_u, near_p, near = spread.new_account("endw", home=0, workers=2)
    c, _ = login(spread.c2s_port, near_u, near_p)
    try:
        done = run_single_stage(root, "end-user-session", {"accountjids": full_a})
        assert notes_of(result_command(done, "completed"))[0] == ("info", "1 session ended.")
        assert a.stream_error() == "policy-violation"
        assert b.nothing_within(0.3)
        # Accounts on both workers in one submission, the admin's own session last.
        done = run_single_stage(root, "end-user-session", {"accountjids": [jid, near]})
        assert notes_of(result_command(done, "completed"))[0] == ("info", "2 sessions ended.")
        assert b.stream_error() == "policy-violation"
        assert c.stream_error() == "policy-violation"
        assert can_login(spread, user, pw)
    finally:
        for s in (a, b, c, root):
            s.close()


def test_announce_reaches_sessions_on_every_worker(spread):
    root, _ = login(spread.c2s_port, "root", "root-pw", resource="ann")
    accounts = [spread.new_account("annw", home=k, workers=2) for k in (0, 1, 1)]
    streams = [login(spread.c2s_port, u, p)[0] for u, p, _ in accounts]
    try:
        done = run_single_stage(root, "announce", {"announcement": "spread out"})
        cmd = result_command(done, "completed")
        (ntype, text), = notes_of(cmd)
        assert ntype == "info", text
        assert int(text.split()[4]) >= 4, text   # "The announcement went to N sessions."
        mine = [el for el in root.skipped_by_request if el.tag == q(NS_CLIENT, "message")]
        assert mine and mine[0].findtext(q(NS_CLIENT, "body")) == "spread out"
        for s in streams:
            m = s.expect(q(NS_CLIENT, "message"))
            assert m.get("type") == "headline" and m.get("to") == s.jid, tostr(m)
            assert m.findtext(q(NS_CLIENT, "body")) == "spread out"
    finally:
        for s in streams + [root]:
            s.close()


def test_delete_user_on_another_worker_ends_its_sessions(spread):
    root, _ = login(spread.c2s_port, "root", "root-pw", resource="del")
    user, pw, jid = spread.new_account("delw", home=1, workers=2)
    victim, _ = login(spread.c2s_port, user, pw)
    try:
        done = run_single_stage(root, "delete-user", {"accountjids": jid})
        (ntype, text), = notes_of(result_command(done, "completed"))
        assert ntype == "info" and jid in text, text
        assert victim.stream_error() == "not-authorized"
        assert root.nothing_within(0.2)
    finally:
        victim.close()
        root.close()
    assert not can_login(spread, user, pw)
