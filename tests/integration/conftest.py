"""Fixtures for the stanzad integration tests.

Run with Debian's interpreter (python3-slixmpp, python3-pytest):
    STANZAD_BUILD=/abs/build /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration

- server        one daemon per test module (default flags); tests that do
                not interfere share it and use unique account names.
- make_server   a factory for daemons with extra flags, stopped after the test.
- loop / arun   a fresh asyncio event loop per test, and a bounded runner.
- xmpp          a factory for slixmpp clients that are disconnected after the test.

A daemon must stay up during a test and exit 0 on SIGTERM: a crash or a
non-zero status fails the test (or the module teardown). When a test fails,
the daemon log written during that test is attached to the report.
"""
import asyncio
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from harness import TEST_CLUSTER, StanzadServer, make_client, disconnect  # noqa: E402

# STANZAD_TEST_CLUSTER: tests that need what a cluster does not do yet,
# each with the reason printed as its skip (see the file's header).
CLUSTER_LIMITS = os.path.join(os.path.dirname(__file__), "cluster-limits.txt")


def _cluster_limits():
    limits = []
    with open(CLUSTER_LIMITS) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                test, _, reason = line.partition(" ")
                limits.append((test, reason.strip()))
    return limits


def pytest_collection_modifyitems(config, items):
    if not TEST_CLUSTER:
        return
    limits = _cluster_limits()
    for item in items:
        name = item.nodeid.rsplit("/", 1)[-1]  # file.py::test[param]
        for test, reason in limits:
            if name == test or name.startswith(test + "["):
                item.add_marker(pytest.mark.skip(reason="in a cluster: " + reason))


@pytest.fixture(scope="module")
def server():
    s = StanzadServer(name="stanzad(module)").start()
    yield s
    s.stop()


@pytest.fixture
def make_server():
    started = []

    def factory(*extra_args, suite_args=True):
        s = StanzadServer(extra_args, name="stanzad%s" % (list(extra_args) or ""),
                          suite_args=suite_args).start()
        started.append(s)
        return s
    yield factory
    errors = []
    for s in started:
        try:
            s.stop()
        except Exception as e:  # report every server, not just the first
            errors.append(str(e))
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.fixture(autouse=True)
def _watch_servers(request):
    """Remembers where each live daemon's log stood, and checks afterwards
    that no daemon died during the test without being asked to."""
    marks = {id(s): s.log_size() for s in StanzadServer._all if s.alive()}
    alive_before = [s for s in StanzadServer._all if s.alive()]
    request.node._stanzad_marks = marks
    request.node._stanzad_first_new = len(StanzadServer._all)
    yield
    for s in alive_before:
        if not s.alive() and not getattr(s, "stop_requested", False):
            rc = s.proc.returncode
            pytest.fail("%s died during the test (status %s)\n--- log ---\n%s" %
                        (s.name, rc, s.log_tail(80, marks.get(id(s), 0))), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.failed:
        return
    marks = getattr(item, "_stanzad_marks", {})
    first_new = getattr(item, "_stanzad_first_new", len(StanzadServer._all))
    for i, s in enumerate(StanzadServer._all):
        if id(s) in marks:
            start = marks[id(s)]
        elif i >= first_new:
            start = 0  # started during this test
        else:
            continue
        text = s.log_tail(80, start)
        if text:
            rep.sections.append(("%s log during this test (ports %s/%s)" %
                                 (s.name, s.c2s_port, s.tls_port), text))


@pytest.fixture
def loop():
    """A new event loop per test (slixmpp 1.8 uses asyncio.get_event_loop())."""
    lp = asyncio.new_event_loop()
    asyncio.set_event_loop(lp)
    yield lp
    try:
        pending = [t for t in asyncio.all_tasks(lp) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            lp.run_until_complete(asyncio.wait(pending, timeout=5))
        lp.run_until_complete(lp.shutdown_asyncgens())
    finally:
        lp.close()
        asyncio.set_event_loop(None)


@pytest.fixture
def arun(loop):
    """arun(coro, timeout=30): runs a coroutine on the test's loop, bounded."""
    def run(coro, timeout=30):
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    return run


@pytest.fixture
def xmpp(loop):
    """xmpp(jid, password, port, **kw) -> slixmpp client; all are disconnected
    after the test."""
    clients = []

    def factory(jid, password, port, **kw):
        c = make_client(jid, password, port, **kw)
        clients.append(c)
        return c
    yield factory

    async def close_all():
        await asyncio.gather(*(disconnect(c) for c in clients), return_exceptions=True)
    try:
        loop.run_until_complete(asyncio.wait_for(close_all(), 10))
    except Exception:
        pass
