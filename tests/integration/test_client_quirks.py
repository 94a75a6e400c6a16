"""What deployed clients send that the protocol allows and the server must
take: found by the interop matrix (tests/interop, make check-interop)."""
import pytest

from harness import NS_TLS, RawStream, q


@pytest.mark.parametrize("trailer", ["\n", " \r\n\t"])
def test_whitespace_right_after_starttls_is_not_tls(server, trailer):
    """go-xmpp (go-sendxmpp) writes '<starttls/>\\n' in one write: the
    newline is stream whitespace sent before <proceed/>, not the start of
    the TLS handshake, and must not break it."""
    s = RawStream(server.c2s_port)
    try:
        s.open()
        s.send("<starttls xmlns='%s'/>%s" % (NS_TLS, trailer))
        s.expect(q(NS_TLS, "proceed"))
        s._wrap()  # the handshake must succeed
        s._new_parser()
        s.header = None
        feats = s.open()
        assert feats is not None
    finally:
        s.close()


def test_garbage_after_starttls_still_fails_the_handshake(server):
    """Only whitespace is forgiven: plaintext injected after the command
    (the STARTTLS injection of CVE-2011-0411) never reaches the new stream."""
    s = RawStream(server.c2s_port)
    try:
        s.open()
        s.send("<starttls xmlns='%s'/><iq type='get' id='x'/>" % NS_TLS)
        s.expect(q(NS_TLS, "proceed"))
        with pytest.raises(Exception):
            s._wrap()
            s._new_parser()
            s.header = None
            s.open()
    finally:
        s.close()


def test_whitespace_after_auth_does_not_precede_the_new_stream(server):
    """The same client writes '</auth>\\n': after <success/> the new stream
    header (with its XML declaration) must still be accepted."""
    import base64

    from harness import NS_BIND, NS_SASL, NS_STREAM

    user, pw, _bare = server.new_account("quirk")
    s = RawStream(server.c2s_port)
    try:
        s.open()
        s.starttls()
        s.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>\n" %
               (NS_SASL, base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode()).decode()))
        s.expect(q(NS_SASL, "success"))
        feats = s.restart()
        assert feats.tag == q(NS_STREAM, "features")
        assert feats.find(q(NS_BIND, "bind")) is not None
    finally:
        s.close()
