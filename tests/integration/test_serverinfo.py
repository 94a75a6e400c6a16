"""XEP-0157 contact addresses in a XEP-0128 serverinfo form of the server's
disco#info: what the contact_* keys give, covered by the server's
XEP-0115 caps hash (checked here and by slixmpp), only on the server's
own disco. (The upload service's max-file-size form: test_http_upload.py.)"""
import asyncio
import time

from harness import DOMAIN, NS_DISCO_INFO, RawStream, connect_and_wait, q, tostr
from imutil import Client
from test_caps import caps_of, verstring

NS_XDATA = "jabber:x:data"
SERVERINFO = "http://jabber.org/network/serverinfo"


def serverinfo(query):
    forms = [x for x in query.findall(q(NS_XDATA, "x"))
             if [v.text for v in x.iter(q(NS_XDATA, "value"))][:1] == [SERVERINFO]]
    assert len(forms) == 1, tostr(query)
    assert forms[0].get("type") == "result"
    return {f.get("var"): [v.text for v in f.findall(q(NS_XDATA, "value"))]
            for f in forms[0].findall(q(NS_XDATA, "field"))}


def disco(c, to=DOMAIN):
    r = c.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=to)
    assert r.get("type") == "result", tostr(r)
    return r.find(q(NS_DISCO_INFO, "query"))


def server_ver(srv):
    s = RawStream(srv.c2s_port)
    try:
        return caps_of(s.open()).get("ver")
    finally:
        s.close()


def test_contact_addresses_in_disco_and_caps(make_server, xmpp, arun):
    srv = make_server("--contact-abuse", "mailto:abuse@localhost",
                      "--contact-abuse", "xmpp:abuse@localhost",
                      "--contact-security", "https://localhost/security",
                      "--contact-admin", "xmpp:admin@localhost")
    u, p, jid = srv.new_account("info")
    c = Client(srv, u, p)
    try:
        info = disco(c)
        fields = serverinfo(info)
        assert fields["FORM_TYPE"] == [SERVERINFO]
        assert fields["abuse-addresses"] == ["mailto:abuse@localhost", "xmpp:abuse@localhost"]
        assert fields["admin-addresses"] == ["xmpp:admin@localhost"]
        assert fields["security-addresses"] == ["https://localhost/security"]
        assert "support-addresses" not in fields
        assert verstring(info) == server_ver(srv)
        # An account's disco carries no server information.
        assert disco(c, to=None).findall(q(NS_XDATA, "x")) == []
    finally:
        c.close()
    cl = xmpp(jid, p, srv.c2s_port, plugins=["xep_0030", "xep_0115", "xep_0128"])

    async def scenario():
        await connect_and_wait(cl)
        # slixmpp recomputes the hash, forms included, before it records it.
        deadline = time.monotonic() + 5
        while not await cl["xep_0115"].get_verstring(DOMAIN):
            assert time.monotonic() < deadline, "slixmpp did not accept the server's caps"
            await asyncio.sleep(0.05)
        info = await cl["xep_0030"].get_info(jid=DOMAIN)
        forms = info["disco_info"].xml.findall(q(NS_XDATA, "x"))
        assert len(forms) == 1
    arun(scenario())


def test_default_form_is_empty_but_present(server):
    u, p, _ = server.new_account("info")
    c = Client(server, u, p)
    try:
        info = disco(c)
        assert serverinfo(info) == {"FORM_TYPE": [SERVERINFO]}
        assert verstring(info) == server_ver(server)
    finally:
        c.close()
