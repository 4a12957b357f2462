"""A throwaway PostgreSQL server for the tests: initdb in a temp dir, loopback, trust auth.

PostgreSQL refuses to run as root, so when the tests run as root (as CI does) the
server runs as the ``postgres`` user, which is created if the machine has none. The
server binaries come from PATH, ``/usr/local/bin`` or ``/usr/lib/postgresql/*/bin``
(Debian's ``postgresql`` package). Nothing here skips: a server that cannot start
raises with its log.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

__all__ = ["PgServer", "find_bindir", "start_server"]

SERVER_USER = "postgres"
_TOOLS = ("initdb", "pg_ctl", "postgres")


def _has_tools(bindir: Path) -> bool:
    return all(os.access(bindir / tool, os.X_OK) for tool in _TOOLS)


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path))


def find_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres`` (newest version)."""
    candidates: list[Path] = []
    found = shutil.which("pg_ctl")
    if found:
        candidates.append(Path(found).resolve().parent)
    candidates.append(Path("/usr/local/bin"))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    candidates += [Path(p) for p in versions]
    for bindir in candidates:
        if _has_tools(bindir):
            return bindir
    raise RuntimeError(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH, in /usr/local/bin "
        "or in /usr/lib/postgresql/*/bin; install them (Debian: apt-get install postgresql)"
    )


def _ensure_user() -> str | None:
    """The user to run the server as: ``postgres`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", SERVER_USER],
            check=True,
            capture_output=True,
            text=True,
        )
    return SERVER_USER


def _as_user(user: str | None, argv: list[str]) -> list[str]:
    if user is None:
        return argv
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", user, "--", *argv]
    return ["su", user, "-s", "/bin/sh", "-c", shlex.join(argv)]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PgServer:
    """A running server; :meth:`stop` shuts it down and deletes its directory."""

    def __init__(self, root: Path, bindir: Path, user: str | None, port: int) -> None:
        self.root = root
        self.bindir = bindir
        self.user = user
        self.port = port
        self.data = root / "data"
        self.log = root / "server.log"
        self.superuser = user or pwd.getpwuid(os.geteuid()).pw_name

    def conninfo(self, dbname: str = "postgres") -> str:
        """A connection string to ``dbname`` over TCP on loopback."""
        return f"host=127.0.0.1 port={self.port} user={self.superuser} dbname={dbname}"

    def create_database(self, name: str) -> str:
        """Create a new UTF8 database and return its connection string."""
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0")
        return self.conninfo(name)

    def _run(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return subprocess.run(
            _as_user(self.user, argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=self.root,
        )

    def log_text(self) -> str:
        """The server's log so far (empty if it wrote none)."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def start(self) -> None:
        """initdb and start the server; raise with the output and log if it fails."""
        initdb = self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.superuser,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{initdb.stdout}\n{initdb.stderr}")
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-p {self.port}",
                f"-k {self.root}",
                "-c max_connections=200",
                "-c fsync=off",  # a test server: visibility and locking are unchanged
            ]
        )
        ctl = self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        if ctl.returncode != 0:
            raise RuntimeError(
                f"pg_ctl start failed (port {self.port}):\n{ctl.stdout}\n{ctl.stderr}\n"
                f"--- server log ---\n{self.log_text()}"
            )

    def stop(self) -> None:
        """Stop the server (fast mode) and delete its directory."""
        try:
            if (self.data / "postmaster.pid").exists():
                stop = self._run(
                    [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                    timeout=60,
                )
                if stop.returncode != 0:
                    self._kill()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _kill(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, 9)
            time.sleep(0.5)


def start_server(attempts: int = 3) -> PgServer:
    """Start a fresh server on a free loopback port (a few tries if a port is taken)."""
    bindir = find_bindir()
    user = _ensure_user()
    errors: list[str] = []
    for _ in range(attempts):
        root = Path(tempfile.mkdtemp(prefix="capsules-pg-"))
        if user is not None:
            shutil.chown(root, user=user, group=pwd.getpwnam(user).pw_gid)
        os.chmod(root, 0o700)
        server = PgServer(root, bindir, user, _free_port())
        try:
            server.start()
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            errors.append(str(exc))
            server.stop()
            if "initdb failed" in str(exc):
                break
            continue
        return server
    raise RuntimeError("could not start a PostgreSQL server for the tests:\n" + "\n".join(errors))
