"""A throwaway PostgreSQL server for tests, started from the installed server binaries.

``initdb`` makes a cluster in a fresh temporary folder, ``pg_ctl`` starts it on 127.0.0.1 at a
free port with password (SCRAM) authentication over TCP, and it is stopped and deleted at the
end. Debian's ``postgresql`` package puts the binaries in ``/usr/lib/postgresql/<N>/bin``, off
the PATH; `.ci/run` installs that package. PostgreSQL refuses to run as root, so under root the
server runs as the ``postgres`` user the package creates.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2

DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"
SERVER_USER = "postgres"  # the account Debian's postgresql package creates


class PostgresNotInstalledError(RuntimeError):
    """The PostgreSQL server binaries (initdb, pg_ctl) are not on this machine."""


@dataclass(frozen=True)
class PostgresServer:
    """Where a running test server listens, and the superuser that owns its database."""

    host: str
    port: int
    username: str
    password: str
    db_name: str

    def dagster_env(self) -> dict[str, str]:
        """The variables deploy/dagster.yaml reads its connection settings from."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": self.username,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.db_name,
        }


def find_bindir() -> Path:
    """The folder holding initdb and pg_ctl: the PATH's, else Debian's newest major version."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    debian = sorted(
        Path("/").glob(DEBIAN_BINDIRS.lstrip("/")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1,
        reverse=True,
    )
    for bindir in [*candidates, *debian]:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise PostgresNotInstalledError(
        f"no PostgreSQL server binaries: initdb and pg_ctl are neither on the PATH nor in "
        f"{DEBIAN_BINDIRS}; install them with `apt-get install postgresql` (.ci/run does)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(folder: Path) -> list[str]:
    """Command prefix that runs a server binary as a non-root user owning ``folder``."""
    if os.geteuid() != 0:
        return []
    try:
        account = pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresNotInstalledError(
            f"running as root needs the {SERVER_USER!r} user (PostgreSQL refuses root); "
            "Debian's postgresql package creates it"
        ) from None
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, account.pw_uid, account.pw_gid)
    return ["runuser", "-u", SERVER_USER, "--"]


def _run(command: list[str], cwd: Path) -> None:
    """Run a server binary; an error quotes its output and the server log."""
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    if done.returncode != 0:
        log = cwd / "server.log"
        raise RuntimeError(
            f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}"
            + (f"\nserver log:\n{log.read_text()[-2000:]}" if log.exists() else "")
        )


@contextmanager
def running_postgres(password: str, db_name: str = "dagster") -> Iterator[PostgresServer]:
    """Start a server with superuser ``dagster`` and an empty database ``db_name``; yield it."""
    bindir = find_bindir()
    root = Path(tempfile.mkdtemp(prefix="astroclip-pg-"))
    data = root / "data"
    (root / "pwfile").write_text(password + "\n")
    server = PostgresServer("127.0.0.1", _free_port(), "dagster", password, db_name)
    options = (
        f"-c listen_addresses={server.host} -c port={server.port} "
        f"-c unix_socket_directories={root} -c max_connections=200 -c fsync=off"
    )
    try:
        sudo = _as_server_user(root)
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", server.username]
        initdb += [f"--pwfile={root / 'pwfile'}", "--auth-host=scram-sha-256"]
        _run([*sudo, *initdb, "--auth-local=trust", "--encoding=UTF8", "--no-sync"], root)
        pg_ctl = [*sudo, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log")]
        _run([*pg_ctl, "-o", options, "-w", "-t", "60", "start"], root)
        conn = psycopg2.connect(
            host=server.host,
            port=server.port,
            user=server.username,
            password=password,
            dbname="postgres",
        )
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{db_name}"')
        conn.close()
        yield server
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True, cwd=root)
        shutil.rmtree(root, ignore_errors=True)
