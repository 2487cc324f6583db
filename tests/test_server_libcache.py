# ruff: noqa: F811  (pytest fixtures imported from tests.test_server_support are parameters here)
"""The server's library cache: a stale cache under load reloads once, not once per request."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from imageapi.core.errors import NotFoundError
from imageapi.server import libcache
from imageapi.server.keys import LIBRARIES
from tests.test_server_support import Server, server, template  # noqa: F401  (fixtures)


async def test_requests_share_one_reload(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    libs = server.app[LIBRARIES]
    calls = [0]
    real = libcache.list_libraries

    async def counting(db: Any) -> Any:
        calls[0] += 1
        await asyncio.sleep(0.05)  # a slow query: every request in flight would join it
        return await real(db)

    monkeypatch.setattr(libcache, "list_libraries", counting)
    libs._loaded = float("-inf")  # stale
    got = await asyncio.gather(*(libs.get(None) for _ in range(20)), libs.get("main"))
    assert {lib.name for lib in got} == {"main"} and calls[0] == 1
    assert libs.fresh(None) is got[0]
    # An unknown name still makes a reload of its own, and says which libraries there are.
    with pytest.raises(NotFoundError, match="main"):
        await libs.get("nope")
    assert calls[0] == 2


async def test_a_failed_reload_fails_its_callers_and_the_next_one_retries(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    libs = server.app[LIBRARIES]
    real = libcache.list_libraries
    fail = [True]

    async def flaky(db: Any) -> Any:
        if fail[0]:
            raise OSError("disk went away")
        return await real(db)

    monkeypatch.setattr(libcache, "list_libraries", flaky)
    libs._loaded = float("-inf")
    results = await asyncio.gather(libs.get(None), libs.get(None), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    fail[0] = False
    assert (await libs.get(None)).name == "main"
