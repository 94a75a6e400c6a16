"""The Debian package: install, run, upgrade, remove, purge, reinstall.

One scenario in a throwaway Debian 12 root (conftest.py), step by step in
file order; a step that fails skips the ones after it. What an operator
does, and what Debian policy asks of a package:

- `dpkg -i` without the libraries fails on dependencies and `apt-get -f
  install` fetches them from the mirror and finishes the configuration;
- the files land where they belong with the right modes, the configuration
  is a conffile, the unit is enabled, the man pages are there;
- the `stanzad` system user exists, the state directory is its own, 0700;
- `stanzactl user add` run as root before the daemon ever started leaves
  files the daemon can use; the daemon runs as `stanzad` the way the unit
  starts it, says READY=1, serves a login, and stops cleanly;
- an upgrade to a higher version keeps the edited configuration and the
  data; a remove keeps both; a purge removes both (the user stays, as
  Debian's account guidelines advise); a reinstall finds the same user;
- the module's DKMS package registers its source, builds the module once
  a kernel headers package is there, and takes it away on purge.
"""
import os
import pwd
import re
import select
import signal
import socket
import stat
import subprocess
import time

import pytest

from conftest import dkms_deb
from harness import free_ports, login, q, NS_CLIENT, WAIT

ALICE_PW = "correct horse battery"

_failed = []


@pytest.fixture(autouse=True)
def _in_order(request):
    """Steps build on each other: after a failure the rest skip."""
    if _failed:
        pytest.skip("an earlier step failed: %s" % _failed[0])
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        _failed.append(request.node.name)


class State:
    uid = None


def passwd_entry(root, name):
    for line in open(root.host("/etc/passwd")):
        f = line.rstrip("\n").split(":")
        if f[0] == name:
            return f
    return None


def group_entry(root, name):
    for line in open(root.host("/etc/group")):
        f = line.rstrip("\n").split(":")
        if f[0] == name:
            return f
    return None


def dpkg_status(root):
    r = root.run("dpkg-query -W -f='${db:Status-Abbrev}|${Version}' stanzad", check=False)
    return r.stdout.strip() if r.returncode == 0 else ""


def unit_exec_start(root):
    text = open(root.host("/lib/systemd/system/stanzad.service")).read()
    m = re.search(r"^ExecStart=(.*)$", text, re.M)
    assert m, "no ExecStart= in the unit"
    return m.group(1).strip()


def run_daemon_and_login(root, user, password):
    """Starts the daemon as the stanzad user with the unit's command line
    (plus test ports), checks READY=1, a login and a ping, then SIGTERM."""
    c2s, tls, http = free_ports(3)
    notify = root.host("/run/stanzad-test-notify.sock")
    if os.path.exists(notify):
        os.unlink(notify)
    mgr = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    mgr.bind(notify)
    os.chmod(notify, 0o666)  # the daemon runs as stanzad
    entry = passwd_entry(root, "stanzad")
    cmd = "%s --listen-c2s 127.0.0.1:%d --listen-c2s-tls 127.0.0.1:%d --listen-http 127.0.0.1:%d" % (
        unit_exec_start(root), c2s, tls, http)
    log_path = root.host("/tmp/stanzad-test.log")
    with open(log_path, "wb") as log:
        proc = root.popen("exec " + cmd, user="%s:%s" % (entry[2], entry[3]), log=log,
                          NOTIFY_SOCKET="/run/stanzad-test-notify.sock")
    try:
        r, _, _ = select.select([mgr], [], [], 20)
        text = mgr.recv(4096).decode() if r else ""
        assert text.startswith("READY=1"), "no READY=1 from the daemon; log:\n%s" % (
            open(log_path, errors="replace").read()[-3000:])
        # The process is the daemon itself (exec all the way), running as stanzad.
        st = os.stat("/proc/%d" % proc.pid)
        assert st.st_uid == int(entry[2]), "the daemon runs as uid %d" % st.st_uid
        s, jid = login(c2s, user, password)
        try:
            s.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
            el = s.expect(q(NS_CLIENT, "iq"))
            assert el.get("type") == "result", el.attrib
        finally:
            s.close()
        proc.send_signal(signal.SIGTERM)
        r, _, _ = select.select([mgr], [], [], WAIT)
        assert r and mgr.recv(4096).decode().startswith("STOPPING=1")
        assert proc.wait(timeout=WAIT) == 0, open(log_path, errors="replace").read()[-3000:]
        return jid
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        mgr.close()
        os.unlink(notify)


def mode_owner(root, path):
    st = os.lstat(root.host(path))
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


# ---- The scenario ----

def test_dpkg_install_then_apt_fetches_the_dependencies(root, debs):
    first, _ = debs
    os.makedirs(root.host("/tmp/debs"), exist_ok=True)
    for d in debs:
        subprocess.run(["cp", d, root.host("/tmp/debs/")], check=True)
    name = os.path.basename(first)
    # A minimal system lacks liburing, libgsasl...: dpkg stops at configure.
    r = root.run("dpkg -i /tmp/debs/%s" % name, check=False)
    assert r.returncode != 0, "dpkg -i succeeded without the libraries?"
    assert "dependency problems" in r.stderr, r.stderr
    root.run("apt-get update -q && apt-get -f install -y -q --no-install-recommends",
             timeout=900)
    status = dpkg_status(root)
    assert status.startswith("ii |"), status


def test_files_are_where_debian_puts_them(root):
    for path, mode in [("/usr/sbin/stanzad", 0o755), ("/usr/bin/stanzactl", 0o755),
                       ("/etc/stanzad/stanzad.conf", 0o644),
                       ("/lib/systemd/system/stanzad.service", 0o644),
                       ("/usr/share/man/man8/stanzad.8.gz", 0o644),
                       ("/usr/share/man/man8/stanzactl.8.gz", 0o644),
                       ("/usr/share/man/man5/stanzad.conf.5.gz", 0o644),
                       ("/usr/share/doc/stanzad/copyright", 0o644)]:
        assert os.path.exists(root.host(path)), path
        m, uid, gid = mode_owner(root, path)
        assert (m, uid, gid) == (mode, 0, 0), "%s: mode %o owner %d:%d" % (path, m, uid, gid)
    conffiles = root.run("dpkg-query -W -f='${Conffiles}' stanzad").stdout
    assert "/etc/stanzad/stanzad.conf" in conffiles, conffiles
    # Enabled for the next boot (deb-systemd-helper works without systemd running).
    link = root.host("/etc/systemd/system/multi-user.target.wants/stanzad.service")
    assert os.path.islink(link) and os.readlink(link) == "/lib/systemd/system/stanzad.service"
    # The binaries run and are this build.
    r = root.run("stanzad --version && stanzactl --help >/dev/null")
    assert r.stdout.startswith("stanzad "), r.stdout


def test_system_user_and_private_state_dir(root):
    entry = passwd_entry(root, "stanzad")
    assert entry, "no stanzad user"
    _name, _pw, uid, gid, _gecos, home, shell = entry
    assert int(uid) < 1000, "not a system uid: %s" % uid
    assert home == "/var/lib/stanzad" and shell == "/usr/sbin/nologin", entry
    assert group_entry(root, "stanzad")[2] == gid
    shadow = [l for l in open(root.host("/etc/shadow")) if l.startswith("stanzad:")]
    assert shadow and shadow[0].split(":")[1] in ("*", "!", "!*"), "stanzad has a password"
    assert mode_owner(root, "/var/lib/stanzad") == (0o700, int(uid), int(gid))
    State.uid = int(uid)


def test_stanzactl_as_root_leaves_files_the_daemon_can_use(root):
    # Before the daemon ever ran: the store is created by this command.
    root.run("stanzactl user add alice", input=ALICE_PW + "\n")
    for f in os.listdir(root.host("/var/lib/stanzad")):
        st = os.lstat(root.host("/var/lib/stanzad/" + f))
        assert st.st_uid == State.uid, "%s belongs to uid %d, not stanzad" % (f, st.st_uid)


def test_daemon_runs_as_stanzad_like_the_unit_starts_it(root):
    jid = run_daemon_and_login(root, "alice", ALICE_PW)
    assert jid.startswith("alice@localhost/")
    # What it created is its own; the secrets are private even with the
    # umask of a shell (the unit sets UMask=0077 on top).
    for f in ("stanzad.db", "cert.pem", "key.pem", "decoy.key"):
        m, uid, _gid = mode_owner(root, "/var/lib/stanzad/" + f)
        assert uid == State.uid, "%s belongs to uid %d" % (f, uid)
        if f in ("key.pem", "decoy.key"):
            assert m & 0o077 == 0, "%s: mode %o" % (f, m)


def test_upgrade_keeps_the_edited_config_and_the_data(root, debs):
    _, upgrade = debs
    conf = root.host("/etc/stanzad/stanzad.conf")
    with open(conf, "a") as f:
        f.write("\n# edited by the operator\nmax_resources = 7\n")
    edited = open(conf).read()
    root.run("dpkg -i /tmp/debs/%s" % os.path.basename(upgrade))
    new_version = subprocess.run(["dpkg-deb", "-f", upgrade, "Version"], capture_output=True,
                                 text=True, check=True).stdout.strip()
    assert dpkg_status(root) == "ii |%s" % new_version
    assert open(conf).read() == edited
    assert not [f for f in os.listdir(root.host("/etc/stanzad")) if f.startswith("stanzad.conf.")]
    # The new binary is in place, the user and the accounts are the same.
    r = root.run("stanzad --version")
    assert new_version.split("-")[0] in r.stdout, r.stdout
    assert int(passwd_entry(root, "stanzad")[2]) == State.uid
    assert "alice" in root.run("stanzactl user list").stdout.split()
    assert mode_owner(root, "/var/lib/stanzad")[:2] == (0o700, State.uid)
    run_daemon_and_login(root, "alice", ALICE_PW)


def test_remove_keeps_config_and_state(root):
    root.run("dpkg -r stanzad")
    assert dpkg_status(root).startswith("rc |"), dpkg_status(root)
    assert not os.path.exists(root.host("/usr/sbin/stanzad"))
    assert not os.path.exists(root.host("/lib/systemd/system/stanzad.service"))
    assert os.path.exists(root.host("/etc/stanzad/stanzad.conf"))
    assert os.path.exists(root.host("/var/lib/stanzad/stanzad.db"))


def test_purge_removes_config_and_state_and_keeps_the_user(root):
    root.run("dpkg -P stanzad")
    assert dpkg_status(root) == "" or dpkg_status(root).startswith("un")
    assert not os.path.exists(root.host("/etc/stanzad"))
    assert not os.path.exists(root.host("/var/lib/stanzad"))
    assert not os.path.exists(root.host("/etc/systemd/system/multi-user.target.wants/stanzad.service"))
    # Debian keeps system users on purge: their uid may still own files.
    assert passwd_entry(root, "stanzad") is not None


def test_reinstall_after_purge_reuses_the_user(root, debs):
    _, upgrade = debs
    root.run("dpkg -i /tmp/debs/%s" % os.path.basename(upgrade))
    assert dpkg_status(root).startswith("ii |")
    assert int(passwd_entry(root, "stanzad")[2]) == State.uid
    assert mode_owner(root, "/var/lib/stanzad")[:2] == (0o700, State.uid)
    # A fresh start: no accounts.
    assert root.run("stanzactl user list").stdout.strip() == ""


# ---- The offload module's DKMS package ----

def test_dkms_package_registers_the_module_source(root, debs):
    deb = dkms_deb(debs[1])
    subprocess.run(["cp", deb, root.host("/tmp/debs/")], check=True)
    r = root.run("dpkg -i /tmp/debs/%s" % os.path.basename(deb), check=False)
    if r.returncode != 0:  # dkms and its compiler come from the mirror
        assert "dependency problems" in r.stderr, r.stderr
        root.run("apt-get -f install -y -q --no-install-recommends", timeout=900)
    version = subprocess.run(["dpkg-deb", "-f", deb, "Version"], capture_output=True,
                             text=True, check=True).stdout.strip()
    src = "/usr/src/stanza-offload-%s" % version
    for f in ("dkms.conf", "Kbuild", "include/stanzad/uapi/stanza_offload.h"):
        assert os.path.exists(root.host(src + "/" + f)), f
    # No headers in the root yet: registered, nothing built.
    status = root.run("dkms status stanza-offload").stdout
    assert re.search(r"stanza-offload/%s: added" % re.escape(version), status), status
    # The daemon's package gives the module's device to the stanzad user.
    assert "stanza_offload" in open(root.host("/lib/udev/rules.d/60-stanzad.rules")).read()


def test_dkms_builds_the_module_when_kernel_headers_arrive(root):
    # Debian's current kernel headers: their postinst hook runs dkms.
    root.run("apt-get install -y -q --no-install-recommends linux-headers-amd64", timeout=1200)
    kver = root.run("dpkg-query -W -f='${Depends}' linux-headers-amd64").stdout
    kver = re.search(r"linux-headers-(\S+)", kver).group(1)
    status = root.run("dkms status stanza-offload").stdout
    assert re.search(r"stanza-offload/\S+, %s, x86_64: installed" % re.escape(kver), status), status
    ko = "/lib/modules/%s/updates/dkms/stanza_offload.ko" % kver
    assert os.path.exists(root.host(ko)), ko
    info = root.run("modinfo -F description %s" % ko).stdout
    assert "offload" in info, info


def test_dkms_purge_removes_the_built_module(root):
    kver = re.search(r"linux-headers-(\S+)", root.run(
        "dpkg-query -W -f='${Depends}' linux-headers-amd64").stdout).group(1)
    root.run("dpkg -P stanza-offload-dkms")
    assert root.run("dkms status stanza-offload").stdout.strip() == ""
    assert not os.path.exists(root.host("/lib/modules/%s/updates/dkms/stanza_offload.ko" % kver))
