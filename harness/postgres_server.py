"""A private PostgreSQL for one test: ``initdb`` into a temporary directory,
``pg_ctl`` on a free port, so a test may stop and start it at will.

The binaries are found with ``pg_config --bindir`` (Debian keeps them out of
``PATH``). PostgreSQL refuses to run as root; as root, the server runs as
the ``postgres`` user (``runuser``), which owns the data directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

from harness.ports import free_port, port_open, wait_until
from harness.services import unavailable


def _bindir() -> str:
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if found.returncode == 0 and os.path.exists(os.path.join(found.stdout.strip(),
                                                                 "initdb")):
            return found.stdout.strip()
    for root in sorted(os.listdir("/usr/lib/postgresql"), reverse=True) \
            if os.path.isdir("/usr/lib/postgresql") else []:
        candidate = f"/usr/lib/postgresql/{root}/bin"
        if os.path.exists(os.path.join(candidate, "initdb")):
            return candidate
    unavailable("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")


class PrivatePostgres:
    def __init__(self, directory: str) -> None:
        self.bindir = _bindir()
        self.port = free_port()
        self.data = os.path.join(directory, "data")
        self.log = os.path.join(directory, "postgres.log")
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [os.path.join(self.bindir, args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=60)

    def init(self) -> PrivatePostgres:
        os.makedirs(self.data)
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            for path in (os.path.dirname(self.data), self.data):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")
        return self

    def start(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-o",
                  f"-p {self.port} -k {os.path.dirname(self.data)} -c listen_addresses=127.0.0.1 "
                  "-c fsync=off", "start")
        wait_until(lambda: port_open("127.0.0.1", self.port), 10, "private PostgreSQL")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop", check=False)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    directory = tempfile.mkdtemp(prefix="tornchat-pg-")
    if os.geteuid() == 0:
        os.chmod(directory, 0o755)
    server = PrivatePostgres(directory).init()
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)
