"""A throwaway redis-server for the cluster tests: its own port, directory
and append-only file, no snapshots, stopped at exit. restart() stops it
and starts it again on the same port and data (what a Redis restart does
to the nodes that use it)."""
import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time

from harness import free_ports

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


class RedisServer:
    _all = []

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="stanzad-redis-")
        self.port = None
        self.proc = None
        self.log_path = os.path.join(self.dir, "redis.log")

    @property
    def uri(self):
        return "redis://127.0.0.1:%d" % self.port

    def start(self, timeout=10):
        if not os.access(REDIS_SERVER, os.X_OK):
            raise RuntimeError("no redis-server (apt-get install redis-server)")
        if self.port is None:
            self.port = free_ports(1)[0]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--dir", self.dir, "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if self not in RedisServer._all:
            RedisServer._all.append(self)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited (%d):\n%s" %
                                   (self.proc.returncode, open(self.log_path).read()[-2000:]))
            try:
                if self.cli("PING").strip() == "PONG":
                    return self
            except (OSError, subprocess.SubprocessError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer on port %d" % self.port)
            time.sleep(0.05)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, down_for=0.0):
        """Stops it, waits down_for seconds, starts it on the same port and data."""
        self.stop()
        time.sleep(down_for)
        # The port may linger a moment after the process is gone.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                time.sleep(0.05)
            except OSError:
                break
        return self.start()

    def cli(self, *args):
        """One command through redis-cli; its output as text."""
        return subprocess.run([REDIS_CLI, "-p", str(self.port), "--no-auth-warning"] +
                              [str(a) for a in args], capture_output=True, text=True,
                              timeout=10, check=True).stdout

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@atexit.register
def _stop_all():
    for r in RedisServer._all:
        r.cleanup()
