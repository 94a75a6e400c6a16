"""systemd socket activation (daemon/sdlisten.c, daemon/dist/stanzad.socket):
listening sockets passed as fds 3.. with LISTEN_FDS / LISTEN_PID are used
by the listen keys with the same address, so a connection made before the
daemon runs is queued and then served; sockets no key wants are closed
with a warning; variables meant for another process are ignored."""
import os
import socket
import subprocess
import tempfile
import time

from harness import DOMAIN, RawStream, STANZAD, free_ports

WAIT = 15


def listening(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(16)
    return s


def start(state, socks, args, listen_pid="self"):
    """Starts stanzad with socks as fds 3, 4, ... (sh keeps its pid across exec)."""
    fds = [s.fileno() for s in socks]

    def place():
        # Above every target first, so that no dup2 overwrites a source.
        tmp = [os.dup(fd) for fd in fds]
        for i, fd in enumerate(tmp):
            os.dup2(fd, 3 + i)
            os.set_inheritable(3 + i, True)

    pid = "$$" if listen_pid == "self" else str(listen_pid)
    cmd = ["sh", "-c", 'LISTEN_PID=%s LISTEN_FDS=%d exec "$0" "$@"' % (pid, len(socks)),
           STANZAD, "--domain", DOMAIN, "--state-dir", state, "--log-level", "debug"] + args
    log = open(os.path.join(state, "stderr.log"), "ab")
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=place, pass_fds=tuple(range(3, 3 + len(socks))))


def log_of(state):
    with open(os.path.join(state, "stderr.log"), errors="replace") as f:
        return f.read()


def wait_log(state, text, proc):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if text in log_of(state):
            return
        assert proc.poll() is None, log_of(state)
        time.sleep(0.05)
    raise AssertionError("no %r in the log:\n%s" % (text, log_of(state)[-3000:]))


def stop(proc):
    proc.terminate()
    assert proc.wait(WAIT) == 0


def test_passed_socket_serves_a_connection_queued_before_the_start():
    state = tempfile.mkdtemp(prefix="stanzad-sa-")
    c2s, tls, http = free_ports(3)
    held = listening(c2s)
    # Made while no daemon runs: the kernel queues it on the held socket.
    early = RawStream(c2s)
    proc = start(state, [held], ["--listen-c2s", "127.0.0.1:%d" % c2s,
                                 "--listen-c2s-tls", "127.0.0.1:%d" % tls,
                                 "--listen-http", "127.0.0.1:%d" % http])
    held.close()  # the daemon has its own copy now
    try:
        wait_log(state, "event=server.socket_activation fds=1 usable=1", proc)
        # Served: the stream header is answered with features.
        features = early.open()
        assert features is not None and early.header is not None
        early.close()
        assert "cannot listen" not in log_of(state)
    finally:
        stop(proc)


def test_sockets_no_listener_wants_are_closed_with_a_warning():
    state = tempfile.mkdtemp(prefix="stanzad-sa-")
    c2s, tls, http, other = free_ports(4)
    stray = listening(other)
    proc = start(state, [stray], ["--listen-c2s", "127.0.0.1:%d" % c2s,
                                  "--listen-c2s-tls", "127.0.0.1:%d" % tls,
                                  "--listen-http", "127.0.0.1:%d" % http])
    stray.close()
    try:
        wait_log(state, "event=server.socket_activation_unused fd=3", proc)
        wait_log(state, "event=server.start", proc)
        # Closed in the daemon too: nobody listens there any more.
        time.sleep(0.2)
        try:
            socket.create_connection(("127.0.0.1", other), timeout=2).close()
            refused = False
        except ConnectionRefusedError:
            refused = True
        assert refused
    finally:
        stop(proc)


def test_variables_meant_for_another_process_are_ignored():
    state = tempfile.mkdtemp(prefix="stanzad-sa-")
    c2s, tls, http = free_ports(3)
    proc = start(state, [], ["--listen-c2s", "127.0.0.1:%d" % c2s,
                             "--listen-c2s-tls", "127.0.0.1:%d" % tls,
                             "--listen-http", "127.0.0.1:%d" % http], listen_pid=1)
    try:
        wait_log(state, "event=server.start", proc)
        assert "socket_activation" not in log_of(state)
        socket.create_connection(("127.0.0.1", c2s), timeout=2).close()
    finally:
        stop(proc)
