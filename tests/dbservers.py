"""Real local servers for end-to-end tests (test helper; binds 127.0.0.1 only, needs no network).

- ``mariadb_server()`` / fixture ``mariadb``: a throwaway MariaDB server (Debian's ``mariadb-server``) in a temporary
  data directory, with database ``appdb`` and user ``app`` (random password, all rights on appdb); yields ``MariaDB``.
- ``moto_server()`` / fixture ``moto``: moto's ThreadedMotoServer; yields its endpoint URL.
- ``mariadb_sql(db, sql)``: run SQL as ``app`` over TCP with the ``mariadb`` command line client.

conftest.py loads this module as a plugin, so tests just name the fixtures. Every wait is bounded; the server
process is stopped (SIGTERM, then SIGKILL) and its directory deleted even when the test fails, and it gets SIGKILL
if the test process itself dies (``setpriv --pdeathsig``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from faultproxy import free_port

MARIADBD = "/usr/sbin/mariadbd"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
SMALL = ["--innodb-buffer-pool-size=16M", "--innodb-log-file-size=4M"]  # ~22 MB on disk instead of ~114 MB


@dataclass(frozen=True)
class MariaDB:
    """Where the test server listens and how the app connects to it."""

    host: str
    port: int
    user: str
    password: str
    database: str
    socket: str
    pid: int  # of mariadbd, for tests that check it is gone


def _mariadbd() -> str:
    """Path of mariadbd, or skip (locally) / fail (in CI) when mariadb-server is not installed."""
    path = shutil.which("mariadbd") or (MARIADBD if os.access(MARIADBD, os.X_OK) else None)
    if path and shutil.which("mariadb-install-db") and shutil.which("mariadb"):
        return path
    if os.environ.get("CI") == "true":
        raise RuntimeError("mariadbd, mariadb-install-db or mariadb not found: .ci/run must install mariadb-server")
    pytest.skip("MariaDB is not installed (apt-get install mariadb-server)")


def _tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _root_sql(socket: str, sql: str) -> subprocess.CompletedProcess[str]:
    """Run SQL as root over the unix socket (root has no password: --auth-root-authentication-method=normal)."""
    return subprocess.run(["mariadb", "--no-defaults", f"--socket={socket}", "--user=root", "--connect-timeout=5",
                           "--batch", "-e", sql], check=False, capture_output=True, text=True, timeout=30)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)


@contextmanager
def mariadb_server(timeout: float = START_TIMEOUT) -> Iterator[MariaDB]:
    """Start a fresh MariaDB on 127.0.0.1:<free port>; stop it and delete its files on exit."""
    mariadbd = _mariadbd()
    tmp = Path(tempfile.mkdtemp(prefix="lb-mariadb-"))
    if len(str(tmp)) > 80:  # unix socket paths are limited to ~107 bytes
        shutil.rmtree(tmp)
        tmp = Path(tempfile.mkdtemp(prefix="lb-mariadb-", dir="/tmp"))
    data, socket, log = tmp / "data", str(tmp / "mysqld.sock"), tmp / "error.log"
    user = ["--user=root"] if os.geteuid() == 0 else []  # as root mariadbd refuses to start without it
    proc: subprocess.Popen | None = None
    try:
        install = subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal",
             "--skip-test-db", "--skip-name-resolve", *user, *SMALL],
            check=False, capture_output=True, text=True, timeout=timeout)
        if install.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed ({install.returncode}):\n{install.stdout}\n{install.stderr}")
        port = free_port()
        guard = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [*guard, mariadbd, "--no-defaults", *user, f"--datadir={data}", f"--socket={socket}", f"--port={port}",
                 "--bind-address=127.0.0.1", f"--pid-file={tmp / 'mysqld.pid'}", "--skip-name-resolve",
                 "--skip-log-bin", "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci", *SMALL],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        deadline = time.monotonic() + timeout
        while _root_sql(socket, "SELECT 1").returncode != 0:
            if proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited with {proc.returncode}; last lines of {log}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mariadbd not ready after {timeout:.0f} s; last lines of {log}:\n{_tail(log)}")
            time.sleep(0.1)
        db = MariaDB("127.0.0.1", port, "app", secrets.token_hex(16), "appdb", socket, proc.pid)
        grants = [f"CREATE USER '{db.user}'@'{host}' IDENTIFIED BY '{db.password}';"
                  f"GRANT ALL PRIVILEGES ON {db.database}.* TO '{db.user}'@'{host}';"
                  for host in ("127.0.0.1", "localhost")]
        setup = _root_sql(socket, f"CREATE DATABASE {db.database} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
                          + "".join(grants))
        if setup.returncode != 0:
            raise RuntimeError(f"creating {db.database} and {db.user} failed:\n{setup.stderr}")
        yield db
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def mariadb_sql(db: MariaDB, sql: str, timeout: float = 30) -> str:
    """Run SQL as the app user over TCP with the mariadb client; returns tab-separated rows without a header."""
    result = subprocess.run(
        ["mariadb", "--no-defaults", f"--host={db.host}", f"--port={db.port}", "--protocol=TCP", f"--user={db.user}",
         "--default-character-set=utf8mb4", "--connect-timeout=5", "--batch", "--skip-column-names", db.database,
         "-e", sql],
        env={**os.environ, "MYSQL_PWD": db.password},  # not on the command line
        check=False, capture_output=True, text=True, encoding="utf-8", timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"mariadb client failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


@contextmanager
def moto_server() -> Iterator[str]:
    """Start moto's threaded server on 127.0.0.1:<free port>; yields ``http://127.0.0.1:PORT``."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def mariadb() -> Iterator[MariaDB]:
    """A MariaDB server shared by the tests of one module."""
    with mariadb_server() as db:
        yield db


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    """A moto server's endpoint URL, shared by the tests of one module."""
    with moto_server() as url:
        yield url
