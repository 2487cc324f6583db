# ruff: noqa: F811  (pytest fixtures imported from tests.test_server_support are parameters here)
"""The login throttle (imageapi/core/throttle.py): counted per address and name, per address and
per name; an attempt is reserved before its password is checked, so guesses sent at once are
throttled like guesses sent one by one; a success lifts only its own (address, name) count. The
rules are checked with the counts in memory and in the database (the server's store)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from imageapi.core import users
from imageapi.core.config import load_config
from imageapi.core.db import connect
from imageapi.core.throttle import DatabaseCounts, LoginThrottle, ThrottledError
from imageapi.core.users import add_user, hash_password
from imageapi.server.keys import THROTTLE
from tests.test_server_support import (  # noqa: F401  (fixtures)
    PASSWORD,
    USER,
    Server,
    Template,
    assert_error,
    server,
    template,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Make = Callable[..., LoginThrottle]


@pytest.fixture(params=["memory", "database"])
async def make(request: pytest.FixtureRequest, env_dirs: dict[str, Path]) -> AsyncIterator[Make]:
    """LoginThrottle(...) with its counts in memory, or in the login_counts table of the test's
    database (PostgreSQL when the suite runs on it: IMAGEAPI_TEST_DATABASE=postgresql)."""
    if request.param == "memory":
        yield LoginThrottle
        return
    db = await connect(load_config().database)
    try:
        yield lambda **kw: LoginThrottle(**kw, counts=DatabaseCounts(lambda: db))
    finally:
        await db.close()


async def fail(t: LoginThrottle, addr: str, name: str) -> None:
    await t.release(await t.reserve(addr, name), ok=False)


async def test_backoff_grows_and_a_success_resets_its_own_count(make: Make) -> None:
    clock = Clock()
    t = make(free=2, max_delay=60, clock=clock)
    await fail(t, "a", "alice")
    await fail(t, "a", "alice")   # 2nd failure: wait 1 s
    clock.now += 0.5
    with pytest.raises(ThrottledError) as exc:
        await t.reserve("a", "alice")
    assert exc.value.retry_after == 1
    clock.now += 0.5
    await fail(t, "a", "alice")   # 3rd: 2 s
    clock.now += 1.5
    with pytest.raises(ThrottledError):
        await t.reserve("a", "alice")
    await fail(t, "b", "alice")  # other addresses are not affected ...
    await fail(t, "a", "bob")    # ... nor other names from the same address
    clock.now += 0.5
    await t.release(await t.reserve("a", "alice"), ok=True)
    await fail(t, "a", "alice")  # the count started again
    await fail(t, "a", "alice")
    for _ in range(50):
        clock.now += 60
        await fail(t, "c", "carol")
    with pytest.raises(ThrottledError) as exc:
        await t.reserve("c", "carol")
    assert exc.value.retry_after == 60  # at most max_delay


async def test_attempts_in_flight_count(make: Make) -> None:
    t = make(free=5)
    held = [await t.reserve("a", "alice") for _ in range(5)]
    with pytest.raises(ThrottledError):
        await t.reserve("a", "alice")
    for attempt in held:
        await t.release(attempt, ok=False)
    with pytest.raises(ThrottledError):
        await t.reserve("a", "alice")


async def test_a_success_by_one_user_does_not_lift_anothers_lockout(make: Make) -> None:
    clock = Clock()
    t = make(free=5, clock=clock)
    for _ in range(4):
        await fail(t, "a", "alice")
    for _ in range(3):
        await t.release(await t.reserve("a", "bob"), ok=True)
    await fail(t, "a", "alice")
    with pytest.raises(ThrottledError):
        await t.reserve("a", "alice")
    await t.release(await t.reserve("a", "bob"), ok=True)  # bob is not locked out by alice's failures


async def test_one_address_guessing_many_names_and_many_addresses_guessing_one_name(make: Make) -> None:
    clock = Clock()
    t = make(free=5, free_shared=20, clock=clock)
    for i in range(20):
        await fail(t, "spray", f"user{i}")
    with pytest.raises(ThrottledError):
        await t.reserve("spray", "somebody")
    await fail(t, "elsewhere", "somebody")
    for i in range(20):
        await fail(t, f"10.0.0.{i}", "alice")
    with pytest.raises(ThrottledError):
        await t.reserve("10.0.1.1", "alice")
    await fail(t, "10.0.1.1", "bob")


async def test_counts_are_forgotten_after_a_quiet_while(make: Make) -> None:
    clock = Clock()
    t = make(free=2, free_shared=3, max_delay=60, forget_after=3600, clock=clock)
    for i in range(3):
        clock.now += 61
        await fail(t, "a", f"x{i}")
    with pytest.raises(ThrottledError):
        await t.reserve("a", "y")
    clock.now += 3600
    await fail(t, "a", "y")


async def test_the_database_deletes_forgotten_counts(env_dirs: dict[str, Path]) -> None:
    """The login_counts table keeps only counts that are not forgotten: it stays small."""
    db = await connect(load_config().database)
    try:
        clock = Clock()
        t = LoginThrottle(free=2, free_shared=3, max_delay=60, forget_after=3600, clock=clock,
                          counts=DatabaseCounts(lambda: db))

        async def rows() -> int:
            async with db.execute("SELECT COUNT(*) FROM login_counts") as cur:
                return int((await cur.fetchone())[0])

        for i in range(50):
            await fail(t, f"10.0.{i}.1", f"user{i}")
        assert await rows() == 150
        clock.now += 1800
        await fail(t, "10.1.0.1", "late")
        assert await rows() == 153
        clock.now += 1801  # the first 50 attempts' counts are forgotten, the last one's are not
        await fail(t, "10.1.0.2", "later")
        assert await rows() == 6
    finally:
        await db.close()


async def test_parallel_wrong_passwords_are_not_all_checked(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    lock = threading.Lock()
    verify = users.verify_password

    def counting(password: str, stored: str) -> bool:
        with lock:
            checked.append(password)
        return verify(password, stored)

    monkeypatch.setattr(users, "verify_password", counting)
    free = server.app[THROTTLE].free
    responses = await asyncio.gather(*(
        server.client.post("/login", json={"username": USER, "password": f"wrong password {i}"})
        for i in range(4 * free)
    ))
    statuses = sorted(r.status for r in responses)
    assert len(checked) <= free
    assert statuses == [401] * len(checked) + [429] * (4 * free - len(checked))
    for r in responses:
        assert_error(await r.json(), "bad_credentials" if r.status == 401 else "too_many_attempts")
        if r.status == 429:
            assert int(r.headers["Retry-After"]) >= 1
    r = await server.client.post("/login", json={"username": USER, "password": PASSWORD})
    assert r.status == 429 and len(checked) <= free


async def _add_bob(server: Server) -> None:
    db = await connect(server.config.database_path)
    try:
        await add_user(db, "bob", hash_password("bobs long password"))
    finally:
        await db.close()


async def test_another_users_login_does_not_reset_a_count(server: Server) -> None:
    await _add_bob(server)
    free = server.app[THROTTLE].free
    wrong = {"username": USER, "password": "wrong password"}
    for _ in range(free - 1):
        assert (await server.client.post("/login", json=wrong)).status == 401
    r = await server.client.post("/login", json={"username": "bob", "password": "bobs long password"})
    assert r.status == 200
    assert (await server.client.post("/login", json=wrong)).status == 401
    r = await server.client.post("/login", json={"username": USER, "password": PASSWORD})
    assert r.status == 429
    assert_error(await r.json(), "too_many_attempts")
    # bob, from the same address, is not locked out by alice's failures
    r = await server.client.post("/login", json={"username": "bob", "password": "bobs long password"})
    assert r.status == 200


async def test_a_user_name_is_counted_whatever_its_case(tmp_path: Path, make: Make) -> None:
    db = await connect(tmp_path / "db.sqlite")
    try:
        await add_user(db, "alice", hash_password(PASSWORD))
        t = make(free=3)
        for name in ("alice", "ALICE", "Alice"):
            with pytest.raises(users.BadCredentialsError):
                await users.login(db, t, "a", name, "wrong password")
        with pytest.raises(ThrottledError):
            await users.login(db, t, "a", "aLiCe", PASSWORD)
        assert (await users.login(db, t, "b", "ALICE", PASSWORD)).name == "alice"
    finally:
        await db.close()


async def test_an_ipv6_64_is_one_address(make: Make) -> None:
    t = make(free=5, free_shared=20)
    for i in range(5):
        await fail(t, f"2001:db8:1:2::{i + 1:x}", "alice")
    for addr in ("2001:db8:1:2:ffff:1:2:3", "2001:DB8:1:2::99", "2001:db8:1:2::1%eth0"):
        with pytest.raises(ThrottledError):
            await t.reserve(addr, "alice")
    await fail(t, "2001:db8:1:3::1", "alice")  # another /64
    for _ in range(5):
        await fail(t, "::ffff:192.0.2.7", "bob")  # IPv4-mapped: the IPv4 address
    with pytest.raises(ThrottledError):
        await t.reserve("192.0.2.7", "bob")
    await fail(t, "192.0.2.8", "bob")
    await fail(t, "unknown", "bob")
