"""The throwaway PostgreSQL of tests/pg.py: local only, and gone after stop()."""

from __future__ import annotations

import asyncio
import os

import pytest

from tests import pg


def test_cluster_is_local_and_leaves_nothing_behind() -> None:
    import asyncpg

    bindir = pg.find_bin()
    if bindir is None or os.environ.get("IMAGEAPI_TEST_POSTGRES_URL"):
        pytest.skip(pg.INSTALL_HINT if bindir is None else "an external server is in use")
    cluster = pg.Cluster(bindir)
    try:
        url = cluster.start()
        assert (cluster.root / f".s.PGSQL.{cluster.port}").exists()  # the unix socket, in its folder

        async def settings() -> tuple[str, str, str]:
            conn = await asyncpg.connect(url, timeout=30)
            try:
                return (await conn.fetchval("SHOW listen_addresses"), await conn.fetchval("SHOW fsync"),
                        await conn.fetchval("SELECT rolsuper::text FROM pg_roles WHERE rolname = current_user"))
            finally:
                await conn.close()

        assert asyncio.run(settings()) == ("127.0.0.1", "off", "true")
        pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
    finally:
        cluster.stop()
    assert not cluster.root.exists()
    assert not running(pid)


def running(pid: int) -> bool:
    """A process that exists and is not a zombie (a container's init may never reap the server)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
