"""A throwaway Debian 12 root for the package test (tests/package).

The root is made with debootstrap (minbase) from the Debian mirror this
machine's apt uses; the downloaded base packages are cached as a
debootstrap tarball under build/package-test/ (STANZAD_PACKAGE_CACHE), so
a rerun only unpacks them (about 10 s). apt's downloads inside the root are
cached there too. Every command in the root runs in its own mount
namespace (unshare) with /proc, /dev and /sys mounted, so nothing stays
mounted on the shared host when a test ends, however it ends.

Needs root, debootstrap, unshare, chroot and the mirror; otherwise the
tests fail, or skip and say why when STANZAD_PACKAGE_ALLOW_SKIP=1 (as in
`make check`, on a machine that may have no network).
"""
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

CACHE = os.environ.get("STANZAD_PACKAGE_CACHE") or os.path.join(REPO, "build", "package-test")
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
ALLOW_SKIP = os.environ.get("STANZAD_PACKAGE_ALLOW_SKIP") == "1"


def cannot_run(why):
    """What the test cannot do here: a skip under make check, else a failure."""
    if ALLOW_SKIP:
        print("package-test: SKIP: %s" % why)
        pytest.skip(why)
    pytest.fail("package test cannot run: %s" % why, pytrace=False)


def apt_mirror():
    """The Debian archive (not security, not a third party) apt uses here."""
    found = []
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*")):
        try:
            text = open(path).read()
        except OSError:
            continue
        if path.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
                if SUITE in fields.get("Suites", "").split():
                    found += fields.get("URIs", "").split()
        else:
            for m in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", text, re.M):
                if m.group(2) == SUITE:
                    found.append(m.group(1))
    for uri in found:
        if uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def _mirror_unreachable(mirror):
    url = "%s/dists/%s/Release" % (mirror, SUITE)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=20):
            return None
    except Exception as e:  # any failure to reach it is the same answer
        return "the Debian mirror %s does not answer (%s)" % (mirror, e)


def _why_not():
    if os.geteuid() != 0:
        return "needs root (debootstrap, chroot, mount namespaces)"
    for tool in ("debootstrap", "unshare", "chroot", "dpkg-buildpackage", "dh"):
        if not shutil.which(tool):
            return "%s is not installed (scripts/install-deps.sh package)" % tool
    r = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if r.returncode != 0:
        return "cannot make a mount namespace: %s" % r.stderr.decode().strip()
    return None


class Root:
    """A Debian root under `path`; run() executes a shell command inside."""

    def __init__(self, path):
        self.path = path

    def host(self, inner):
        """The host path of a path inside the root."""
        return os.path.join(self.path, inner.lstrip("/"))

    def _wrap(self, script, user=None):
        p = shlex.quote(self.path)
        mounts = ("mount -t proc proc {p}/proc && mount --rbind /dev {p}/dev && "
                  "mount --rbind /sys {p}/sys && "
                  "mount --bind {c}/apt-archives {p}/var/cache/apt/archives && "
                  "mount --bind {c}/apt-lists {p}/var/lib/apt/lists").format(
                      p=p, c=shlex.quote(CACHE))
        spec = "--userspec=%s " % user if user else ""
        inner = "exec chroot %s%s /bin/sh -c %s" % (spec, p, shlex.quote(script))
        return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                "set -e; %s; %s" % (mounts, inner)]

    def env(self, **extra):
        e = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}
        e.update(extra)
        return e

    def run(self, script, check=True, timeout=600, user=None, input=None):
        r = subprocess.run(self._wrap(script, user), capture_output=True, text=True,
                           timeout=timeout, env=self.env(), input=input)
        if check and r.returncode != 0:
            raise AssertionError("in the root: %s\nexit %d\n--- stdout ---\n%s\n--- stderr ---\n%s"
                                 % (script, r.returncode, r.stdout[-3000:], r.stderr[-3000:]))
        return r

    def popen(self, script, user=None, log=None, **env):
        return subprocess.Popen(self._wrap(script, user), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, env=self.env(**env))


def _bootstrap(dest):
    """debootstrap minbase into dest, from the cached tarball when there is one."""
    os.makedirs(CACHE, exist_ok=True)
    tarball = os.path.join(CACHE, "%s-minbase.tgz" % SUITE)
    mirror = apt_mirror()
    log = os.path.join(CACHE, "debootstrap.log")
    if not os.path.exists(tarball):
        tmp = tarball + ".part"
        work = os.path.join(CACHE, "tarball-work")
        shutil.rmtree(work, ignore_errors=True)
        with open(log, "w") as f:
            r = subprocess.run(["debootstrap", "--variant=minbase", "--make-tarball=" + tmp,
                                SUITE, work, mirror], stdout=f, stderr=subprocess.STDOUT,
                               timeout=900)
        shutil.rmtree(work, ignore_errors=True)
        if r.returncode != 0:
            cannot_run("debootstrap --make-tarball from %s failed (log: %s)" % (mirror, log))
        os.rename(tmp, tarball)
    shutil.rmtree(dest, ignore_errors=True)
    with open(log, "a") as f:
        r = subprocess.run(["debootstrap", "--variant=minbase", "--unpack-tarball=" + tarball,
                            SUITE, dest, mirror], stdout=f, stderr=subprocess.STDOUT,
                           timeout=900)
    if r.returncode != 0:
        pytest.fail("debootstrap --unpack-tarball failed (log: %s)" % log)
    # What the root needs from outside: name resolution for apt, and no
    # service starts from maintainer scripts (there is no init anyway).
    shutil.copy("/etc/resolv.conf", os.path.join(dest, "etc", "resolv.conf"))
    rc = os.path.join(dest, "usr", "sbin", "policy-rc.d")
    with open(rc, "w") as f:
        f.write("#!/bin/sh\nexit 101\n")
    os.chmod(rc, 0o755)
    for d in ("apt-archives/partial", "apt-lists/partial"):
        os.makedirs(os.path.join(CACHE, d), exist_ok=True)
    return mirror


def build_deb(outdir, version=None):
    """Builds this tree's package into outdir; returns the stanzad .deb path.
    The rebuild with another version skips the unit tests (nocheck): the
    first build ran them on the same sources."""
    cmd = [os.path.join(REPO, "scripts", "make-deb.sh"), outdir]
    env = dict(os.environ)
    if version:
        cmd += ["--version", version]
        env["DEB_BUILD_OPTIONS"] = (env.get("DEB_BUILD_OPTIONS", "") + " nocheck").strip()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env)
    assert r.returncode == 0, "make-deb.sh failed:\n%s\n%s" % (r.stdout, r.stderr[-4000:])
    debs = [p for p in r.stdout.split() if os.path.basename(p).startswith("stanzad_")]
    assert len(debs) == 1, r.stdout
    return debs[0]


def dkms_deb(stanzad_deb):
    """The stanza-offload-dkms package built beside a stanzad package."""
    found = glob.glob(os.path.join(os.path.dirname(stanzad_deb), "stanza-offload-dkms_*.deb"))
    assert len(found) == 1, found
    return found[0]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each test's call report on the item (the scenario's ordering
    fixture reads it)."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call = rep


@pytest.fixture(scope="session")
def debs():
    """(first, upgrade): this tree's package and a rebuild with a higher version."""
    why = _why_not()
    if why:
        cannot_run(why)
    first = build_deb(os.path.join(CACHE, "deb-1"))
    version = subprocess.run(["dpkg-deb", "-f", first, "Version"], capture_output=True,
                             text=True, check=True).stdout.strip()
    upgrade = build_deb(os.path.join(CACHE, "deb-2"), version + "+pkgtest1")
    return first, upgrade


@pytest.fixture(scope="session")
def root():
    why = _why_not() or _mirror_unreachable(apt_mirror())
    if why:
        cannot_run(why)
    path = os.path.join(CACHE, "root")
    mirror = _bootstrap(path)
    r = Root(path)
    r.mirror = mirror
    yield r
    if not os.environ.get("STANZAD_KEEP_ROOT"):
        shutil.rmtree(path, ignore_errors=True)
