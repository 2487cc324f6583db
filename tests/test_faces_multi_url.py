"""Several Apollo addresses (APOLLO_FACE_API_BASE_URL=url1,url2): each checked at start-up, detect
calls spread across them, one that goes down skipped, "service down" only when all are."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiosqlite
import pytest

from imageapi.core.db import connect
from imageapi.core.errors import ConfigError
from imageapi.core.faces.apollo import ApolloClient, ApolloError
from imageapi.core.faces.backlog import FacePasses, drain
from imageapi.core.faces.settings import FaceSettings, face_settings_from_env
from imageapi.core.libraries import add_library
from imageapi.core.pool import WorkerPool
from tests.apollo_standin import StandIn, closed_port_url, insert_rows, make_photo

JPEG = b"\xff\xd8\xff\xe0" + bytes(100) + b"\xff\xd9"


def h(i: int) -> str:
    return f"{i:02x}" * 32


@pytest.fixture()
def two() -> Iterator[tuple[StandIn, StandIn]]:
    with StandIn(decode_images=False) as a, StandIn(decode_images=False) as b:
        yield a, b


def test_settings_read_several_urls_and_name_the_setting_of_a_bad_one() -> None:
    st = face_settings_from_env({"APOLLO_FACE_API_BASE_URL": " http://a:1/ , https://b:2,http://a:1,"})
    assert st.base_url == "http://a:1,https://b:2" and st.base_urls == ("http://a:1", "https://b:2")
    assert face_settings_from_env({"APOLLO_API_BASE_URL": "http://x"}).base_urls == ("http://x",)
    assert FaceSettings(base_url=None).base_urls == ()
    for value in ("http://a:1,ftp://b", "http://a:1,b:2", ",", "http://a:99999,http://b"):
        with pytest.raises(ConfigError) as info:
            face_settings_from_env({"APOLLO_FACE_API_BASE_URL": value})
        assert info.value.setting == "APOLLO_FACE_API_BASE_URL"


def test_a_bad_url_in_the_list_stops_a_command_with_exit_2(env_dirs: dict[str, Path]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APOLLO_", "FACE_"))}
    env["APOLLO_FACE_API_BASE_URL"] = "http://127.0.0.1:9,apollo:8000"
    res = subprocess.run([sys.executable, "-m", "imageapi", "faces", "status"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert res.returncode == 2 and "APOLLO_FACE_API_BASE_URL" in res.stderr
    assert res.stderr.strip().count("\n") == 0


def test_constructor_takes_a_string_with_commas_or_a_list() -> None:
    for value in ("http://a:1/,http://b:2", ["http://a:1/", "http://b:2"]):
        client = ApolloClient(value, timeout=1, concurrency=1)
        assert client.base_urls == ("http://a:1", "http://b:2") and client.base_url == "http://a:1,http://b:2"
        asyncio.run(client.aclose())
    with pytest.raises(ValueError):
        ApolloClient(" , ", timeout=1, concurrency=1)


async def test_requests_are_spread_across_the_addresses(two: tuple[StandIn, StandIn]) -> None:
    a, b = two
    a.delay = b.delay = 0.05
    async with ApolloClient(f"{a.url},{b.url}", timeout=5, concurrency=8) as client:
        await asyncio.gather(*(client.detect(JPEG, h(i)) for i in range(16)))
        for i in range(16, 20):  # one at a time: in turn
            await client.detect(JPEG, h(i))
    assert a.total + b.total == 20 and a.total >= 8 and b.total >= 8


async def test_one_address_stopped_mid_run_is_skipped(two: tuple[StandIn, StandIn]) -> None:
    a, b = two
    async with ApolloClient([a.url, b.url], timeout=5, concurrency=4) as client:
        for i in range(4):
            await client.detect(JPEG, h(i))
        assert a.total == 2 and b.total == 2
        b.stop()
        # Every call succeeds: the refused address is marked down and the call goes to the other.
        for i in range(4, 12):
            await client.detect(JPEG, h(i))
        assert a.total == 10 and client.down() == [b.url]
        health = await client.health()
        assert health["status"] == "ok"
        assert health["endpoints"] == [{"url": a.url, "up": True}, {"url": b.url, "up": False}]
        a.stop()
        # All down: a connection failure (the backlog's "service down"), naming the addresses.
        with pytest.raises(ApolloError) as info:
            await client.detect(JPEG, h(20))
        assert info.value.connection and not info.value.permanent
        with pytest.raises(ApolloError) as info:
            await client.health()
        assert info.value.connection and a.url in info.value.message and b.url in info.value.message


async def test_an_address_that_comes_back_is_used_again(two: tuple[StandIn, StandIn]) -> None:
    a, b = two
    port = b.port
    async with ApolloClient([a.url, b.url], timeout=5, concurrency=4) as client:
        b.stop()
        await client.detect(JPEG, h(1))
        await client.detect(JPEG, h(2))
        assert client.down() == [b.url]
        with StandIn(decode_images=False, port=port) as b2:
            await client.health()  # the probe finds it answering again
            assert client.down() == []
            for i in range(3, 7):
                await client.detect(JPEG, h(i))
            assert b2.total == 2


async def test_busy_address_passes_the_call_on(two: tuple[StandIn, StandIn]) -> None:
    a, b = two
    a.mode = "429"
    async with ApolloClient([a.url, b.url], timeout=5, concurrency=4) as client:
        for i in range(6):
            await client.detect(JPEG, h(i))
        assert b.total == 6 and client.down() == []
        b.mode = "429"
        with pytest.raises(ApolloError) as info:
            await client.detect(JPEG, h(9))
        assert info.value.status == 429 and not info.value.permanent and not info.value.connection


async def test_single_url_behaves_as_before() -> None:
    url = closed_port_url()
    async with ApolloClient(url, timeout=5, concurrency=2) as client:
        with pytest.raises(ApolloError) as info:
            await client.detect(JPEG, h(1))
        assert info.value.connection and f"cannot connect to Apollo at {url}" in info.value.message
        with pytest.raises(ApolloError):
            await client.health()
    with StandIn(mode="429", decode_images=False) as busy:
        async with ApolloClient(busy.url, timeout=5, concurrency=2) as client:
            with pytest.raises(ApolloError) as info:
                await client.detect(JPEG, h(1))
            assert info.value.status == 429 and "endpoints" not in await client.health()
            assert busy.total == 1


@pytest.fixture()
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    conn = await connect(tmp_path / "imageapi.db")
    yield conn
    await conn.close()


async def test_drain_goes_on_when_one_address_stops(db: aiosqlite.Connection, tmp_path: Path) -> None:
    root = tmp_path / "lib"
    rels = [f"p{i:03d}.jpg" for i in range(30)]
    for i, rel in enumerate(rels):
        make_photo(root / rel, i)
    lib = await add_library(db, "main", root)
    await insert_rows(db, lib.id, root, rels)
    pool = WorkerPool(2)
    try:
        with StandIn(delay=0.05) as a, StandIn(delay=0.05) as b:
            st = FaceSettings(base_url=f"{a.url},{b.url}", detect_concurrency=2)

            async def stop_b_mid_run() -> None:
                while b.total < 5:
                    await asyncio.sleep(0.01)
                await asyncio.to_thread(b.stop)

            async with FacePasses(db, pool, st) as passes:
                stopper = asyncio.create_task(stop_b_mid_run())
                report = await drain(passes)
                await stopper
                # What b had in flight when it stopped failed transiently; a second drain finds
                # nothing left once those are due again (they back off), and the service never
                # counted as down.
            assert not report.service_down
            assert report.detected + report.transient_failures == 30
            assert report.transient_failures <= st.detect_concurrency
            assert a.total >= 30 - 5 - st.detect_concurrency and b.total >= 5
    finally:
        pool.close()
