"""Stream-level errors (RFC 6120 sections 4.7-4.9, 11 restricted XML)."""
import pytest

from harness import (DOMAIN, NS_CLIENT, NS_REGISTER, NS_STREAM, RawStream, login, q)


def assert_server_header_first(s):
    """RFC 6120 4.9.1.2: the error is sent inside the server's own stream."""
    assert s.header is not None, "no server stream header before the error: %r" % s.received
    assert s.header.get("from") == DOMAIN and s.header.get("version") == "1.0", s.header
    assert s.header.get("id"), s.header
    raw = s.received.decode("utf-8", "replace")
    assert raw.index("<stream:stream") < raw.index("stream:error"), raw


# ---- 6: malformed XML ----

@pytest.mark.parametrize("garbage", [
    "<message><body>crossed</message></body>",
    "<message to='a@localhost' to='b@localhost'/>",
    "<message><body>\x01 control char</body></message>",
    "<message>&undefined;</message>",
    "<a:message xmlns='jabber:client'/>",   # unbound prefix
])
def test_malformed_xml_after_login_is_not_well_formed(server, garbage):
    user, password, jid = server.new_account("badxml")
    s, full = login(server.c2s_port, user, password)
    try:
        s.send(garbage)
        assert s.stream_error() == "not-well-formed"
    finally:
        s.close()


def test_malformed_xml_before_login_is_not_well_formed(server):
    for port, tls in ((server.c2s_port, False), (server.tls_port, True)):
        s = RawStream(port, direct_tls=tls)
        try:
            s.open()
            s.send("<starttls><oops></starttls>")
            assert s.stream_error() == "not-well-formed"
        finally:
            s.close()


def test_malformed_stream_header_is_not_well_formed(server):
    s = RawStream(server.c2s_port)
    try:
        s.send("<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
               "xmlns='jabber:client' xmlns:stream='%s' <<>" % NS_STREAM)
        assert s.stream_error() == "not-well-formed"
        assert_server_header_first(s)
    finally:
        s.close()


def test_server_still_serves_after_malformed_input(server):
    user, password, jid = server.new_account("after")
    s = RawStream(server.c2s_port)
    s.send("\x00\xff\xfe garbage that is not XML at all")
    s.wait_closed()
    s.close()
    s2, full = login(server.c2s_port, user, password)
    s2.close()


# ---- 7: stanza size limits ----

def message_of_size(to, size, id_="big"):
    head = "<message to='%s' id='%s'><body>" % (to, id_)
    tail = "</body></message>"
    fill = size - len(head) - len(tail)
    assert fill > 0
    return head + "x" * fill + tail


def test_stanza_over_max_stanza_bytes_is_policy_violation(make_server):
    srv = make_server("--max-stanza-bytes", "4096")
    user, password, jid = srv.new_account("big")
    s, full = login(srv.c2s_port, user, password)
    try:
        # Just under the limit: delivered (to ourselves).
        st = message_of_size(full, 4096 - 64, "under")
        assert len(st.encode()) < 4096
        s.send(st)
        el = s.expect(q(NS_CLIENT, "message"))
        assert el.get("id") == "under" and len(el.findtext(q(NS_CLIENT, "body"))) > 3900
        # Over it: the stream ends.
        s.send(message_of_size(full, 4096 + 64, "over"))
        assert s.stream_error() == "policy-violation"
    finally:
        s.close()


def test_endless_stanza_is_cut_off_at_the_limit(make_server):
    """The server must not buffer an unterminated stanza without bound."""
    srv = make_server("--max-stanza-bytes", "4096")
    user, password, jid = srv.new_account("endless")
    s, full = login(srv.c2s_port, user, password)
    try:
        s.send("<message to='%s'><body>" % full)
        s.send("y" * 6000)  # never closed
        assert s.stream_error() == "policy-violation"
    finally:
        s.close()


def test_preauth_stanza_over_16_kib_is_policy_violation(server):
    for direct in (False, True):
        s = RawStream(server.tls_port if direct else server.c2s_port, direct_tls=direct)
        try:
            s.open()
            if not direct:
                s.starttls()
            # Just under 16 KiB: answered (the id comes back).
            big_id = "i" * (16384 - 200)
            s.send("<iq type='get' id='%s'><query xmlns='%s'/></iq>" % (big_id, NS_REGISTER))
            el = s.expect(q(NS_CLIENT, "iq"))
            assert el.get("id") == big_id and el.get("type") == "result", el.attrib.get("type")
            s.send("<iq type='get' id='%s'><query xmlns='%s'/></iq>" %
                   ("j" * (16384 + 200), NS_REGISTER))
            assert s.stream_error() == "policy-violation"
        finally:
            s.close()


def test_preauth_limit_applies_before_tls_too(server):
    s = RawStream(server.c2s_port)
    try:
        s.open()
        s.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>" + "z" * 17000)
        assert s.stream_error() == "policy-violation"
    finally:
        s.close()


# ---- 9: stream header checks ----

@pytest.mark.parametrize("kwargs,condition", [
    (dict(to="example.org"), "host-unknown"),
    (dict(to=None), "host-unknown"),
    (dict(stream_ns="http://example.org/not-streams"), "invalid-namespace"),
    (dict(ns="jabber:server"), "invalid-namespace"),
    (dict(ns="urn:example:wrong"), "invalid-namespace"),
    (dict(version=None), "unsupported-version"),
    (dict(version="2.0"), "unsupported-version"),
    (dict(version="0.9"), "unsupported-version"),
])
def test_bad_stream_header_gets_header_then_error(server, kwargs, condition):
    for port, tls in ((server.c2s_port, False), (server.tls_port, True)):
        s = RawStream(port, direct_tls=tls)
        try:
            s.send_header(**kwargs)
            assert s.stream_error() == condition, (kwargs, tls)
            assert_server_header_first(s)
        finally:
            s.close()


def test_header_with_wrong_element_name_is_invalid_namespace_or_bad_format(server):
    s = RawStream(server.c2s_port)
    try:
        s.send("<?xml version='1.0'?><stream:strem xmlns='jabber:client' xmlns:stream='%s' "
               "to='localhost' version='1.0'>" % NS_STREAM)
        assert s.stream_error() in ("invalid-namespace", "bad-format")
    finally:
        s.close()


def test_higher_minor_version_is_answered_with_1_0(server):
    s = RawStream(server.c2s_port)
    try:
        s.send_header(version="1.5")
        feats = s.expect(q(NS_STREAM, "features"))
        assert s.header.get("version") == "1.0"
        assert feats is not None
    finally:
        s.close()


def test_header_from_is_echoed_as_to_and_lang_kept(server):
    s = RawStream(server.c2s_port)
    try:
        s.send_header(extra=" from='juliet@localhost' xml:lang='de'")
        s.expect(q(NS_STREAM, "features"))
        assert s.header.get("to") == "juliet@localhost", s.header
        assert s.header.get("{http://www.w3.org/XML/1998/namespace}lang") == "de", s.header
    finally:
        s.close()


def test_stream_to_is_case_insensitive_domain(server):
    s = RawStream(server.c2s_port)
    try:
        s.send_header(to="LocalHost")
        s.expect(q(NS_STREAM, "features"))
        assert s.header.get("from") == DOMAIN
    finally:
        s.close()


# ---- 10: restricted XML (RFC 6120 section 11.1) ----

@pytest.mark.parametrize("payload", [
    "<!-- a comment -->",
    "<?some-pi with data?>",
    "<message to='x@localhost'><!-- comment inside --><body>x</body></message>",
    "<message to='x@localhost'><body><?pi inside?>x</body></message>",
])
def test_comment_and_processing_instruction_are_restricted_xml(server, payload):
    s = RawStream(server.c2s_port)
    try:
        s.open()
        s.send(payload)
        assert s.stream_error() == "restricted-xml"
    finally:
        s.close()


def test_comment_after_login_is_restricted_xml(server):
    user, password, jid = server.new_account("comment")
    s, full = login(server.c2s_port, user, password)
    try:
        s.send("<!-- hello -->")
        assert s.stream_error() == "restricted-xml"
    finally:
        s.close()


@pytest.mark.parametrize("doctype", [
    "<!DOCTYPE stream:stream>",
    "<!DOCTYPE stream:stream [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;'>]>",
    "<!DOCTYPE stream:stream SYSTEM 'file:///etc/passwd'>",
])
def test_doctype_is_restricted_xml(server, doctype):
    s = RawStream(server.c2s_port)
    try:
        s.send("<?xml version='1.0'?>" + doctype +
               "<stream:stream xmlns='jabber:client' xmlns:stream='%s' to='localhost' "
               "version='1.0'>" % NS_STREAM)
        assert s.stream_error() == "restricted-xml"
        assert_server_header_first(s)
    finally:
        s.close()


@pytest.mark.parametrize("element", [
    "<foo xmlns='urn:example:unknown'/>",
    "<thing/>",                       # jabber:client, but not a stanza
])
def test_unknown_top_level_element_is_unsupported_stanza_type(server, element):
    """RFC 6120 4.9.3.24."""
    user, password, jid = server.new_account("unsup")
    s, full = login(server.c2s_port, user, password)
    try:
        s.send(element)
        assert s.stream_error() == "unsupported-stanza-type"
    finally:
        s.close()


def test_client_closing_the_stream_gets_the_closing_tag(server):
    s = RawStream(server.c2s_port)
    try:
        s.open()
        s.send("</stream:stream>")
        s.wait_closed()
        assert s.stream_ended, "server did not close its stream: %r" % s.received[-200:]
    finally:
        s.close()


# ---- parser limits (policy-violation) ----

def test_deeply_nested_stanza_is_policy_violation(server):
    user, password, jid = server.new_account("deep")
    s, full = login(server.c2s_port, user, password)
    try:
        depth = 200
        s.send("<message to='%s'>" % full + "<x xmlns='urn:example:deep'>" * depth
               + "</x>" * depth + "</message>")
        assert s.stream_error() == "policy-violation"
    finally:
        s.close()


def test_element_with_too_many_attributes_is_policy_violation(server):
    user, password, jid = server.new_account("attrs")
    s, full = login(server.c2s_port, user, password)
    try:
        attrs = " ".join("a%d='v'" % i for i in range(300))
        s.send("<message to='%s'><x xmlns='urn:example:attrs' %s/></message>" % (full, attrs))
        assert s.stream_error() == "policy-violation"
    finally:
        s.close()


def test_oversized_stream_header_is_policy_violation(server):
    s = RawStream(server.c2s_port)
    try:
        s.send_header(extra=" id='%s'" % ("h" * 8192))
        assert s.stream_error() == "policy-violation"
    finally:
        s.close()


def test_moderate_nesting_and_attributes_are_fine(server):
    user, password, jid = server.new_account("moderate")
    s, full = login(server.c2s_port, user, password)
    try:
        attrs = " ".join("a%d='v%d'" % (i, i) for i in range(20))
        inner = "<x xmlns='urn:example:n'>" * 10 + "deep" + "</x>" * 10
        s.send("<message to='%s' id='mod'><y xmlns='urn:example:a' %s/>%s</message>"
               % (full, attrs, inner))
        el = s.expect(q(NS_CLIENT, "message"))
        assert el.get("id") == "mod"
        y = el.find("{urn:example:a}y")
        assert y is not None and y.get("a19") == "v19"
        assert "".join(el.itertext()) == "deep"
    finally:
        s.close()
