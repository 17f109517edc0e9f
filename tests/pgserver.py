"""A throw-away PostgreSQL server for tests and benchmarks: ``initdb`` in a temporary
directory, ``pg_ctl start`` on a free loopback port, one fresh database per caller.

PostgreSQL refuses to run as root, so under root the server runs as the ``postgres`` user
(created by Debian's package, which ``make test`` installs when the binaries are missing).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def _bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if candidates:
        return candidates[-1]
    raise RuntimeError(f"PostgreSQL's {name} is not installed (make test installs it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="batch-server-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self._prefix: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self._prefix = ["runuser", "-u", "postgres", "--"]
        self._run(_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust")
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        log = str(self.dir / "log")
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "-w", "start")
        self._count = 0

    def _run(self, *args: str) -> None:
        subprocess.run([*self._prefix, *args], check=True, capture_output=True, cwd=self.dir)

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database; returns its SQLAlchemy URL."""
        import psycopg

        self._count += 1
        name = name or f"db{self._count}"
        with psycopg.connect(self.url("postgres", sqlalchemy=False), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, database: str, sqlalchemy: bool = True) -> str:
        scheme = "postgresql+psycopg" if sqlalchemy else "postgresql"
        return f"{scheme}://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
