"""Nodes of a cluster on one box share the client ports (SO_REUSEPORT,
docs/cluster-deployment.md): each node's c2s listener joins the kernel's
group of that address, the kernel spreads new connections over every
node's sockets, the reuseport steering program stays off (it would take
every connection for its own node), and when a node dies its sockets leave
the group so that new connections reach the others."""
import os
import time

import pytest

from harness import StanzadServer, StreamClosed, free_ports, login, uniq
from redisserver import REDIS_SERVER, RedisServer

from test_cluster import TTL_MS, account_on, counts, wait_until

pytestmark = pytest.mark.skipif(not os.access(REDIS_SERVER, os.X_OK),
                                reason="no redis-server (scripts/install-deps.sh test)")

LOGINS = 24


@pytest.fixture
def cluster():
    r = RedisServer().start()
    c2s, tls = free_ports(2)
    nodes = []
    for name in ("s1", "s2", "s3"):
        s = StanzadServer(["--cluster", r.uri, "--node-name", name, "--cluster-ttl",
                           str(TTL_MS), "--workers", "2", "--max-resources", str(LOGINS)],
                          name="stanzad(%s)" % name,
                          suite_args=False)
        # The client ports are the cluster's; the HTTP port stays each node's own.
        s.c2s_port, s.tls_port, (s.http_port,) = c2s, tls, free_ports(1)
        nodes.append(s.start(keep_ports=True))
    yield r, nodes
    for s in nodes:
        if s.alive():
            s.kill()
    r.cleanup()


def test_nodes_share_the_client_port_and_the_kernel_spreads_connections(cluster):
    redis, nodes = cluster
    user, password, _ = account_on(uniq("sp"), "pw-sp", *nodes)
    for s in nodes:
        log = s.log_text()
        assert "event=bpf.steer state=off" in log and "cluster mode" in log, log
    streams = [login(nodes[0].c2s_port, user, password, resource="r%d" % i)[0]
               for i in range(LOGINS)]
    # Every login worked whichever node took it; the registry says where they are.
    per_node = wait_until("all sessions registered", lambda: (
        lambda c: c if sum(n for _, n in c.values()) == LOGINS else None)(counts(nodes[0])))
    used = [name for name, (alive, n) in per_node.items() if n > 0]
    # 24 connections all on one of three nodes by chance: (1/3)^23.
    assert len(used) >= 2, per_node
    for st in streams:
        st.close()


def login_retrying(port, user, password, resource, tries=3):
    for attempt in range(tries):
        try:
            return login(port, user, password, resource=resource)[0]
        except StreamClosed:
            if attempt == tries - 1:
                raise
            time.sleep(0.2)


def test_when_a_node_dies_new_connections_go_to_the_others(cluster):
    redis, nodes = cluster
    user, password, _ = account_on(uniq("sd"), "pw-sd", *nodes)
    nodes[1].kill()
    wait_until("s2 is reported dead", lambda: counts(nodes[0]).get("s2", (False, 0))[0] is False,
               timeout=TTL_MS / 1000 + 5)
    # Its sockets left the group with the process: every connection is
    # served. A connection queued on a dying socket in the instant its
    # ring was torn down is reset, as a client of a dead box is: it
    # connects again, once, as clients do.
    streams = [login_retrying(nodes[0].c2s_port, user, password, "d%d" % i)
               for i in range(12)]
    per_node = wait_until("all sessions registered", lambda: (
        lambda c: c if sum(n for _, n in c.values()) == 12 else None)(counts(nodes[0])))
    assert per_node.get("s2", (False, 0))[1] == 0, per_node
    for st in streams:
        st.close()
