"""A real, throwaway PostgreSQL for the tests.

`Cluster` makes a cluster in a temporary folder with the server binaries of Debian's `postgresql`
package (the newest /usr/lib/postgresql/*/bin), listening on 127.0.0.1 only, on a free port, with
its unix socket in that folder, trust authentication for one throwaway user and fsync off (nothing
in it needs to survive a crash). It is stopped and removed at the end, also when a test fails.
initdb refuses to run as root: then the server runs as the unprivileged user `nobody`.

IMAGEAPI_TEST_POSTGRES_URL=postgresql://... uses that server instead (each test gets its own
database in it, dropped afterwards). Without either the tests skip with the command that installs
PostgreSQL, and fail instead under IMAGEAPI_REQUIRE_POSTGRES=1 (set by .ci/run).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

INSTALL_HINT = "PostgreSQL not found: apt-get install postgresql (or set IMAGEAPI_TEST_POSTGRES_URL)"
USER = "imageapi_test"
UNPRIVILEGED = "nobody"


def find_bin() -> Path | None:
    """The newest PostgreSQL server binaries: /usr/lib/postgresql/<version>/bin (Debian's layout)."""
    found: list[tuple[int, Path]] = []
    for candidate in Path("/usr/lib/postgresql").glob("*/bin"):
        if re.fullmatch(r"\d+", candidate.parent.name) and (candidate / "initdb").is_file():
            found.append((int(candidate.parent.name), candidate))
    if found:
        return max(found)[1]
    pg_ctl = shutil.which("pg_ctl")  # another layout with the binaries on PATH
    if pg_ctl and (Path(pg_ctl).parent / "postgres").is_file():
        return Path(pg_ctl).parent
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_orphans(bindir: Path, base: Path) -> None:
    """Stop and remove clusters left by a test run that was killed (its pytest is gone)."""
    for root in base.glob("imageapi-pg-*"):
        try:
            owner = int((root / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue  # another run, still going
        if (root / "data" / "postmaster.pid").exists():
            subprocess.run([*(["runuser", "-u", UNPRIVILEGED, "--"] if os.geteuid() == 0 else []),
                            str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60, check=False)
        shutil.rmtree(root, ignore_errors=True)


def temp_base() -> Path:
    """Where clusters go: the temporary folder, if the unprivileged user can reach it."""
    base = Path(tempfile.gettempdir())
    if os.geteuid() == 0 and not base.stat().st_mode & 0o001:
        base = Path("/tmp")
    return base


class Cluster:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        base = temp_base()
        sweep_orphans(bindir, base)
        self.root = Path(tempfile.mkdtemp(prefix="imageapi-pg-", dir=base))
        (self.root / "owner.pid").write_text(str(os.getpid()))
        self.data = self.root / "data"
        self.port = 0
        self.started = False
        # As root, initdb and postgres refuse to run: run them as an unprivileged user.
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", UNPRIVILEGED, "--"]
            shutil.chown(self.root, UNPRIVILEGED)
        os.chmod(self.root, 0o700)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=timeout,
                              cwd=self.root, check=False)

    def start(self) -> str:
        atexit.register(self.stop)  # a test run that ends abruptly still stops it
        done = self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust",
                         "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
        for _attempt in range(5):  # the port may be taken between choosing and binding it
            self.port = free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
            done = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
                             "-o", options, "-w", "-t", "60", "start")
            if done.returncode == 0:
                self.started = True
                return self.url()
        log = (self.root / "log").read_text(errors="replace")[-2000:] if (self.root / "log").exists() else ""
        raise RuntimeError(f"PostgreSQL did not start: {done.stderr.strip()} {log}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.started:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)


def with_database(url: str, database: str) -> str:
    """The same server URL naming another database."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


async def create_database(server_url: str) -> str:
    import asyncpg

    name = "t_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(server_url, timeout=30)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_database(server_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(server_url, timeout=30)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
