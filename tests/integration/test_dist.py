"""What the package ships stays true to the daemon: the default
configuration (daemon/dist/stanzad.conf), the man pages (daemon/man/*.scd) and the
systemd unit (daemon/dist/stanzad.service.in).

The key list comes from `stanzad --help`, which prints the option table
of daemon/config.c: a key added there without a line in the default
configuration and an entry in stanzad.conf(5) fails here, and so does a
stanzactl command missing from stanzactl(8)."""
import os
import re
import shutil
import subprocess

import pytest

from harness import REPO, STANZAD, STANZACTL, StanzadServer, free_ports

CONF = os.path.join(REPO, "daemon", "dist", "stanzad.conf")
UNIT_IN = os.path.join(REPO, "daemon", "dist", "stanzad.service.in")
MAN = os.path.join(REPO, "daemon", "man")
# A setting line of the default configuration: "#key = value", no space
# after the '#' (prose comments have one).
SETTING = re.compile(r"^#([a-z][a-z0-9_]*) = (.*)$", re.M)


def help_keys():
    """{key: help text} from stanzad --help."""
    out = subprocess.run([STANZAD, "--help"], capture_output=True, text=True, check=True).stdout
    keys = {}
    for m in re.finditer(r"^  --([a-z0-9-]+) \S+\s+(.*)$", out, re.M):
        if m.group(1) != "config":
            keys[m.group(1).replace("-", "_")] = m.group(2)
    assert len(keys) > 40, "could not read the keys from --help:\n" + out
    return keys


def conf_settings():
    return SETTING.findall(open(CONF).read())


def test_default_config_lists_every_key():
    listed = {k for k, _ in conf_settings()}
    missing = sorted(set(help_keys()) - listed)
    assert not missing, "keys missing from daemon/dist/stanzad.conf: %s" % missing
    unknown = sorted(listed - set(help_keys()))
    assert not unknown, "daemon/dist/stanzad.conf names keys the daemon does not know: %s" % unknown


def test_default_config_shows_the_built_in_defaults():
    """Where --help states a plain default, the commented line shows it."""
    wrong = []
    for key, value in conf_settings():
        m = re.search(r"\(default ([^ ;:)]+)\)", help_keys().get(key, ""))
        # "none" and paths under STATE_DIR are words for what has no literal value.
        if m and m.group(1) != "none" and "STATE_DIR" not in m.group(1) and m.group(1) != value:
            wrong.append("%s: file says %r, --help says %r" % (key, value, m.group(1)))
    assert not wrong, "\n".join(wrong)


def test_default_config_changes_nothing_until_edited():
    for line in open(CONF):
        s = line.strip()
        assert not s or s.startswith("#"), "an active line in the default config: %r" % line


def write_crl(path, cert_path, key_path):
    """An empty CRL signed by the test certificate (python3-cryptography)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    ca = x509.load_pem_x509_certificate(open(cert_path, "rb").read())
    key = serialization.load_pem_private_key(open(key_path, "rb").read(), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
           .last_update(now).next_update(now + datetime.timedelta(days=1))
           .sign(key, hashes.SHA256()))
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))


def test_every_setting_uncommented_is_accepted(make_server, tmp_path):
    """The file with every line uncommented is a configuration the daemon
    starts with. Files the examples name are made real (cert/key, a client
    CA and its CRL), and paths in /var/lib/stanzad move to a temporary
    directory."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost", "-days", "2",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    text = SETTING.sub(r"\1 = \2", open(CONF).read())
    text = re.sub(r"^cert = .*$", "cert = %s" % cert, text, flags=re.M)
    text = re.sub(r"^key = .*$", "key = %s" % key, text, flags=re.M)
    text = re.sub(r"^(client_ca|s2s_ca) = .*$", r"\1 = %s" % cert, text, flags=re.M)
    crl = tmp_path / "client.crl"
    write_crl(crl, cert, key)
    text = re.sub(r"^client_crl = .*$", "client_crl = %s" % crl, text, flags=re.M)
    text = text.replace("= /var/lib/stanzad/", "= %s/" % tmp_path)
    conf = tmp_path / "all.conf"
    conf.write_text(text)
    https, = free_ports(1)
    # Flags win over the file: the harness's ports and state directory.
    s = make_server("--config", str(conf), "--listen-https", "127.0.0.1:%d" % https)
    s.wait_log(r"event=server\.start")
    assert "registration=open" in s.log_text()  # the harness's flag, not the file's


def test_config_man_page_documents_every_key():
    text = open(os.path.join(MAN, "stanzad.conf.5.scd")).read()
    missing = [k for k in help_keys() if "*%s*" % k not in text]
    assert not missing, "keys missing from daemon/man/stanzad.conf.5.scd: %s" % missing


def stanzactl_commands():
    """Command words of each synopsis line of stanzactl --help, e.g.
    'user add': the lowercase words after the options."""
    out = subprocess.run([STANZACTL, "--help"], capture_output=True, text=True).stdout
    cmds = set()
    for line in out.splitlines():
        m = re.match(r"^(?:usage:)?\s+stanzactl\s+(.*)$", line)
        if not m:
            continue
        words = [w for w in re.sub(r"\[[^\]]*\]", " ", m.group(1)).split()]
        cmd = []
        for w in words:
            if re.fullmatch(r"[a-z][a-z-]*(\|[a-z][a-z-]*)*", w):
                cmd.append(w)
            else:
                break
        if cmd:
            # "user add|del" documents two commands.
            *head, last = cmd
            for alt in last.split("|"):
                cmds.add(" ".join(head + [alt]))
    assert cmds, "could not read the commands from stanzactl --help:\n" + out
    return cmds


def test_stanzactl_man_page_documents_every_command():
    text = open(os.path.join(MAN, "stanzactl.8.scd")).read()
    flat = re.sub(r"[*_]", "", text)
    missing = sorted(c for c in stanzactl_commands() if c not in flat)
    assert not missing, "stanzactl commands missing from daemon/man/stanzactl.8.scd: %s" % missing


@pytest.mark.skipif(not shutil.which("scdoc"), reason="scdoc is not installed")
@pytest.mark.parametrize("page", sorted(p for p in os.listdir(MAN) if p.endswith(".scd")))
def test_man_page_builds_and_renders_cleanly(page, tmp_path):
    src = os.path.join(MAN, page)
    out = tmp_path / page[:-4]
    with open(src, "rb") as f, open(out, "wb") as o:
        r = subprocess.run(["scdoc"], stdin=f, stdout=o, stderr=subprocess.PIPE)
    assert r.returncode == 0, r.stderr.decode()
    if shutil.which("groff"):
        r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(out)],
                           capture_output=True, text=True, env={"LC_ALL": "C.UTF-8", "PATH": os.environ["PATH"]})
        assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def unit_text(sbindir):
    return (open(UNIT_IN).read().replace("@SBINDIR@", sbindir)
            .replace("@SYSCONFDIR@", "/etc"))


def test_unit_says_what_the_daemon_does():
    text = unit_text("/usr/sbin")
    for line in ("Type=notify", "NotifyAccess=main", "User=stanzad",
                 "ExecStart=/usr/sbin/stanzad --config /etc/stanzad/stanzad.conf",
                 "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure",
                 "StateDirectory=stanzad", "StateDirectoryMode=0700",
                 "ReadWritePaths=/var/lib/stanzad", "ProtectSystem=strict",
                 "NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectHome=yes",
                 "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN",
                 "AmbientCapabilities=CAP_BPF CAP_NET_ADMIN"):
        assert re.search(r"^%s$" % re.escape(line), text, re.M), "unit lacks %r" % line
    # The daemon's state_dir default is what the unit makes writable.
    assert "(default /var/lib/stanzad)" in help_keys()["state_dir"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_unit_verifies_and_is_hardened(tmp_path):
    unit = tmp_path / "stanzad.service"
    unit.write_text(unit_text(os.path.dirname(STANZAD)))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                       capture_output=True, text=True)
    # verify exits 0 on unknown keys and bad values: any output is a finding.
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
    # The exposure score (0 best, 10 worst) of `systemd-analyze security`.
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=25",
                        str(unit)], capture_output=True, text=True)
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout)
    assert r.returncode == 0 and m, r.stdout[-2000:] + r.stderr
    assert float(m.group(1)) <= 2.5


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_socket_unit_verifies_and_matches_the_default_listeners(tmp_path):
    """The optional socket activation example: valid beside the service, and
    each ListenStream= is a listener of the default configuration (a socket
    no listen key names would be closed by the daemon)."""
    (tmp_path / "stanzad.service").write_text(unit_text(os.path.dirname(STANZAD)))
    sock = tmp_path / "stanzad.socket"
    text = open(os.path.join(REPO, "daemon", "dist", "stanzad.socket")).read()
    sock.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(sock)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
    streams = re.findall(r"^ListenStream=(\S+)$", text, re.M)
    assert streams
    conf = open(os.path.join(REPO, "daemon", "dist", "stanzad.conf")).read()
    for addr in streams:
        assert re.search(r"^#listen_\w+ = %s$" % re.escape(addr), conf, re.M), addr
    examples = open(os.path.join(REPO, "debian", "stanzad.examples")).read().split()
    assert "daemon/dist/stanzad.socket" in examples


def build_depends():
    text = open(os.path.join(REPO, "debian", "control")).read()
    m = re.search(r"^Build-Depends:(.*?)^\S", text, re.M | re.S)
    return {re.split(r"[\s(<\[]", d.strip())[0] for d in m.group(1).split(",") if d.strip()}


def test_package_build_depends_on_every_library_the_build_uses():
    """debian/control keeps up with the Makefile's pkg-config modules and
    the -dev packages scripts/install-deps.sh installs for the build."""
    deps = build_depends()
    make = open(os.path.join(REPO, "Makefile")).read()
    modules = re.search(r"^PKGS\s*:=(.*)$", make, re.M).group(1).split()
    missing = []
    for mod in modules:
        pcdir = subprocess.run(["pkg-config", "--variable=pcfiledir", mod], capture_output=True,
                               text=True).stdout.strip()
        assert pcdir, "pkg-config does not know %s" % mod
        owner = subprocess.run(["dpkg", "-S", os.path.join(pcdir, mod + ".pc")],
                               capture_output=True, text=True)
        if owner.returncode != 0:
            continue  # a .pc file from outside Debian's packages: nothing to name
        pkg = owner.stdout.split(":")[0]
        if pkg not in deps:
            missing.append("%s (pkg-config %s)" % (pkg, mod))
    script = open(os.path.join(REPO, "scripts", "install-deps.sh")).read()
    build_pkgs = re.search(r'^BUILD_PKGS="([^"]*)"', script, re.M).group(1).split()
    missing += [p for p in build_pkgs if p.endswith("-dev") and p not in deps]
    assert not missing, "debian/control Build-Depends lacks: %s" % sorted(set(missing))
