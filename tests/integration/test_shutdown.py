"""Graceful shutdown: SIGTERM ends every stream with system-shutdown
(RFC 6120 4.9.3.22) and the daemon exits 0."""
import asyncio
import signal

from harness import RawStream, connect_and_wait, login


def test_sigterm_sends_system_shutdown_and_exits_zero(make_server, xmpp, arun):
    srv = make_server()
    ua, pa, ja = srv.new_account("down")
    ub, pb, jb = srv.new_account("down")
    bound, _ = login(srv.c2s_port, ub, pb)       # a bound session
    preauth = RawStream(srv.c2s_port)            # one still negotiating
    preauth.open()
    c = xmpp(ja, pa, srv.tls_port, direct_tls=True)
    arun(connect_and_wait(c))

    srv.signal(signal.SIGTERM)
    try:
        assert bound.stream_error() == "system-shutdown"
        assert preauth.stream_error() == "system-shutdown"

        async def wait_client():
            for _ in range(250):
                if c.test_stream_errors:
                    return
                await asyncio.sleep(0.02)
        arun(wait_client())
        assert c.test_stream_errors == ["system-shutdown"]
    finally:
        bound.close()
        preauth.close()
    rc = srv.wait(10)
    assert rc == 0, "stanzad exited with %r after SIGTERM\n%s" % (rc, srv.log_tail(30))


def test_sigterm_with_a_client_that_never_reads_still_exits(make_server):
    """A peer that does not read (full socket buffers) must not hold the
    shutdown forever: the daemon bounds the drain and exits 0."""
    srv = make_server()
    user, password, jid = srv.new_account("stuck")
    s, full = login(srv.c2s_port, user, password)
    # Make the server queue output towards a peer that stops reading.
    s.sock.setblocking(False)
    msg = "<message to='%s'><body>%s</body></message>" % (full, "z" * 2000)
    sent = 0
    try:
        for _ in range(400):
            try:
                s.sock.send(msg.encode())
                sent += 1
            except (BlockingIOError, OSError):
                break
        srv.signal(signal.SIGTERM)
        rc = srv.wait(15)
        assert rc == 0, "stanzad exited with %r (or hung) with a non-reading peer\n%s" % (
            rc, srv.log_tail(30))
    finally:
        s.close()
