"""A throwaway PostgreSQL server for the tests that run stanzad on it.

PgServer starts one: initdb into a temporary directory, postgres on a free
loopback port with its Unix socket in that directory (nothing outside it is
touched), trust authentication for the test cluster's own superuser on
loopback and password authentication for the role `pwuser` (the passfile
test). PostgreSQL refuses to run as root: when we are root, the cluster
runs as `nobody` with the directory chowned to it. stop() stops it and
removes the directory.

    pg = PgServer(); pg.start()
    uri = pg.new_database()      # postgresql://nobody@127.0.0.1:PORT/sd_1
    ...
    pg.stop()
"""

import glob
import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time

PG_BINDIRS = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
PASSWORD_USER = "pwuser"
PASSWORD = "s3cret-pw"


def pg_bindir():
    """The newest installed PostgreSQL's bin directory, or None."""
    for d in PG_BINDIRS:
        if os.path.exists(os.path.join(d, "initdb")) and os.path.exists(os.path.join(d, "postgres")):
            return d
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self):
        self.bindir = pg_bindir()
        if not self.bindir:
            raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)")
        self.dir = None
        self.port = None
        self.proc = None
        self._ids = itertools.count(1)
        self.as_root = os.geteuid() == 0
        self.user = "nobody" if self.as_root else pwd.getpwuid(os.geteuid()).pw_name

    # ---- running things as the cluster's owner ----

    def _cmd(self, args, server=False):
        # server: a session that dies without stop() (killed pytest) takes
        # the cluster with it, fast shutdown (SIGINT) at the parent's death.
        if self.as_root:
            return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                    "--reset-env"] + (["--pdeathsig", "SIGINT"] if server else []) + args
        return args

    def _pdeathsig(self):
        if not self.as_root:
            import ctypes
            import signal
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGINT))  # PR_SET_PDEATHSIG

    def _env(self):
        env = dict(os.environ)
        env.pop("PGPASSFILE", None)
        env["LC_ALL"] = "C"
        return env

    def _run(self, args, **kw):
        return subprocess.run(self._cmd(args), env=self._env(), capture_output=True,
                              text=True, timeout=120, **kw)

    # ---- lifecycle ----

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="stanzad-pg-")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        if self.as_root:
            shutil.chown(self.dir, "nobody", "nogroup")
        r = self._run([os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", self.user,
                       "--auth-local=trust", "--auth-host=trust", "-E", "UTF8",
                       "--locale=C", "--no-sync"])
        if r.returncode != 0:
            raise RuntimeError("initdb failed: %s %s" % (r.stdout, r.stderr))
        # The password role logs in with scram over TCP; everyone else is trusted.
        hba = os.path.join(self.data, "pg_hba.conf")
        with open(hba) as f:
            rest = f.read()
        with open(hba, "w") as f:
            f.write("host all %s 127.0.0.1/32 scram-sha-256\n" % PASSWORD_USER)
            f.write(rest)
        self.port = _free_port()
        self._spawn()
        self.psql("CREATE ROLE %s LOGIN PASSWORD '%s'" % (PASSWORD_USER, PASSWORD))
        return self

    def _spawn(self):
        self.log = open(os.path.join(self.dir, "postgres.log"), "ab")
        self.proc = subprocess.Popen(
            self._cmd(server=True, args=[os.path.join(self.bindir, "postgres"), "-D", self.data,
                       "-c", "listen_addresses=127.0.0.1", "-p", str(self.port),
                       "-k", self.dir, "-c", "fsync=off", "-c", "synchronous_commit=off",
                       "-c", "full_page_writes=off", "-c", "max_connections=200",
                       "-c", "shared_buffers=32MB"]),
            env=self._env(), stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=self._pdeathsig)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited: %s" % self.log_text()[-2000:])
            r = self._run([os.path.join(self.bindir, "pg_isready"), "-h", "127.0.0.1",
                           "-p", str(self.port)])
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("postgres did not start: %s" % self.log_text()[-2000:])

    def log_text(self):
        try:
            with open(os.path.join(self.dir, "postgres.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def pause(self):
        """Stops the server (fast shutdown: sessions are cut), keeping its data."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()    # SIGTERM: smart shutdown waits for clients
            self.proc.send_signal(2)  # SIGINT: fast shutdown, clients are cut now
            self.proc.wait(timeout=30)
        self.proc = None
        self.log.close()

    def resume(self):
        """Starts the server again on the same port and data."""
        self._spawn()

    def stop(self):
        if self.proc:
            self.pause()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    # ---- databases ----

    def psql(self, sql, db="postgres", rows=False):
        """Runs sql as the cluster's superuser. Returns stdout, or with
        rows=True the rows as tuples (numbers as int, NULL as None)."""
        r = self._run([os.path.join(self.bindir, "psql"), "-X", "-q", "-A", "-t",
                       "-F", "\x1f", "-R", "\x1e", "-P", "null=\x02",
                       "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
                       "-U", self.user, "-d", db, "-c", sql])
        if r.returncode != 0:
            raise RuntimeError("psql failed: %s" % r.stderr)
        if not rows:
            return r.stdout
        out = []
        for line in r.stdout.rstrip("\n").split("\x1e"):
            if line == "" or line == "\n":
                continue
            fields = []
            for v in line.split("\x1f"):
                if v == "\x02":
                    fields.append(None)
                elif re.fullmatch(r"-?[0-9]+", v):
                    fields.append(int(v))
                elif re.fullmatch(r"\\x(?:[0-9a-f]{2})*", v):
                    fields.append(bytes.fromhex(v[2:]))  # bytea, as sqlite3 gives a BLOB
                else:
                    fields.append(v)
            out.append(tuple(fields))
        return out

    def uri(self, db, user=None):
        return "postgresql://%s@127.0.0.1:%d/%s" % (user or self.user, self.port, db)

    def new_database(self, owner=None):
        """A fresh empty database for one daemon; returns its URI."""
        name = "sd_%d_%d" % (os.getpid(), next(self._ids))
        self.psql("CREATE DATABASE %s%s" % (name, " OWNER %s" % owner if owner else ""))
        return self.uri(name, owner)
