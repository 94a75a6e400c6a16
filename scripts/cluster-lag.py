#!/usr/bin/python3
"""Measures what a stanza between cluster nodes costs (docs/clustering.md):

  - one-way message latency, client on node 1 -> client on node 2 (through
    the Redis stream), against the same with both clients on node 1;
  - the XADD-to-routing lag node 2 measured itself (stanzactl cluster status);
  - Redis's own cost of the two transports it could use, XADD (streams) and
    PUBLISH (pub/sub), with redis-benchmark.

Usage: STANZAD_BUILD=build scripts/cluster-lag.py [N]
Starts its own redis-server and two nodes (the integration harness)."""
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))

from harness import DOMAIN, NS_CLIENT, StanzadServer, login, q, uniq  # noqa: E402
from redisserver import RedisServer  # noqa: E402


def node(redis, name):
    return StanzadServer(["--cluster", redis.uri, "--node-name", name, "--workers", "2",
                          "--log-level", "warn"], name=name, suite_args=False).start()


def one_way(sender, receiver, to, n):
    """ms from send to arrival, per message, one in flight at a time."""
    out = []
    for i in range(n):
        body = "m%d" % i
        t0 = time.perf_counter()
        sender.send(("<message to='%s' type='chat'><body>%s</body></message>" %
                     (to, body)).encode())
        while True:
            el = receiver.next(10)
            b = el.find(q(NS_CLIENT, "body"))
            if el.tag == q(NS_CLIENT, "message") and b is not None and b.text == body:
                break
        out.append((time.perf_counter() - t0) * 1000)
    return out


def summary(ms):
    ms = sorted(ms)
    return "p50 %.2f ms, p99 %.2f ms, max %.2f ms" % (
        statistics.median(ms), ms[int(len(ms) * 0.99) - 1], ms[-1])


def bench(port, *cmd):
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-q", "-n", "200000", "-P", "16",
                          "-c", "4"] + list(cmd), capture_output=True, text=True).stdout
    line = out.strip().splitlines()[-1] if out.strip() else "(no output)"
    return line.rsplit(": ", 1)[-1]  # without the command and its payload


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    redis = RedisServer().start()
    n1, n2 = node(redis, "lag1"), node(redis, "lag2")
    try:
        users = []
        for s in (n1, n1, n2):
            u = uniq("lag")
            s.add_user(u, "pw")
            users.append(u)
        a, ja = login(n1.c2s_port, users[0], "pw")
        local, jl = login(n1.c2s_port, users[1], "pw")
        remote, jr = login(n2.c2s_port, users[2], "pw")
        for st in (a, local, remote):
            st.send(b"<presence/>")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = json.loads(n1.stanzactl("--json", "cluster", "status").stdout)
            if r.get("replica_sessions") == 1:
                break
            time.sleep(0.1)
        one_way(a, local, jl, 50)  # warm-up
        one_way(a, remote, jr, 50)
        same = one_way(a, local, jl, n)
        cross = one_way(a, remote, jr, n)
        st = json.loads(n2.stanzactl("--json", "cluster", "status").stdout)
        print("messages: %d, one in flight" % n)
        print("same node:   " + summary(same))
        print("other node:  " + summary(cross))
        print("node 2's XADD-to-routing lag (last 64): %s" % json.dumps(st["delivery_lag"]))
        print("redis XADD:    " + bench(redis.port, "XADD", "bench:s", "MAXLEN", "~", "1000000",
                                        "*", "payload", "x" * 300) +
              " (300-byte entries, 16 pipelined)")
        print("redis PUBLISH: " + bench(redis.port, "PUBLISH", "bench:c", "x" * 300))
    finally:
        n1.stop()
        n2.stop()
        redis.cleanup()


if __name__ == "__main__":
    main()
