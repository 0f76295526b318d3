"""A throwaway PostgreSQL server for tests of the Postgres checkpointer.

`postgres_server()` (a context manager) runs Debian's binaries (/usr/lib/postgresql/*/bin:
initdb, pg_ctl) in a fresh temporary folder and yields a `PostgresServer`; `.new_database()`
gives the postgresql:// URL of a new, empty database. Postgres refuses to run as root, so as
root the binaries run as the `postgres` system user (which the Debian package creates), in a
folder that user owns. The server listens on 127.0.0.1 at a free port and on a unix socket
inside that folder (never the system's /var/run/postgresql), with trust authentication and
fsync off (tests never crash the server itself, only its clients). On exit it is stopped and
the folder deleted. Without the binaries, the test is skipped, saying what to install.

Use it from a module-scoped fixture, e.g.

    @pytest.fixture(scope="module")
    def postgres():
        with postgres_server() as server:
            yield server
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

INSTALL_HINT = "apt install postgresql (as root, `make system-deps` does it)"
START_TIMEOUT_S = 60  # the machine may be busy with other test jobs


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def new_database(self) -> str:
        """The URL of a new empty database (one per test keeps tests from seeing each other's threads)."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def postgres_bin() -> Path:
    """The newest installed server's bin folder; skips the test when there is none."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        pytest.skip(f"PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin: {INSTALL_HINT}")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server():
    bin_dir = postgres_bin()
    as_root = os.geteuid() == 0
    if as_root:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("running as root, but there is no `postgres` system user to run PostgreSQL as "
                               f"(it comes with the Debian package: {INSTALL_HINT})") from None
    folder = Path(tempfile.mkdtemp(prefix="sia-pg-"))  # not under pytest's tmp (root-only 0700 parents)
    if as_root:
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    user = "postgres" if as_root else pwd.getpwuid(os.geteuid()).pw_name

    def run(*argv: str, timeout: float = START_TIMEOUT_S) -> None:
        cmd = (["runuser", "-u", "postgres", "--"] if as_root else []) + list(argv)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            log = folder / "server.log"
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stdout}{done.stderr}"
                               + (log.read_text()[-3000:] if log.exists() else ""))

    data = folder / "data"
    started = False
    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync")
        port = _free_port()
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-o", options,
            "-w", "-t", str(START_TIMEOUT_S), "start", timeout=START_TIMEOUT_S + 10)
        started = True
        yield PostgresServer("127.0.0.1", port, user)
    finally:
        try:
            if started:
                run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
