"""Fixtures for the kernel lab tests (tests/kernel), run inside the lab's
guest by tests/kernel/run-lab-tests.sh under a kernel with kTLS.

They reuse the integration harness (tests/integration/harness.py): the
same daemon launcher, raw XMPP streams and SCRAM client.
"""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from harness import StanzadServer  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long measurements, only in make check-kernel")


def kernel_has_ktls():
    return os.path.exists("/proc/net/tls_stat")


@pytest.fixture(scope="module")
def server():
    if not kernel_has_ktls():
        pytest.skip("this kernel has no kTLS (/proc/net/tls_stat); run `make check-kernel`")
    s = StanzadServer(name="stanzad(kernel lab)").start()
    yield s
    s.stop()


@pytest.fixture
def make_server():
    started = []

    def factory(*extra_args):
        s = StanzadServer(list(extra_args), name="stanzad%s" % (list(extra_args) or "")).start()
        started.append(s)
        return s
    yield factory
    errors = []
    for s in started:
        try:
            s.stop()
        except Exception as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test gets the tail of every daemon's log attached."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.failed:
        return
    for s in StanzadServer._all:
        text = s.log_tail(60)
        if text:
            rep.sections.append(("%s log (ports %s/%s)" % (s.name, s.c2s_port, s.tls_port), text))
