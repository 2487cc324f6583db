"""The login throttle: failed logins counted per client address and user name together, per
address (any name) and per user name (any address).

Each count has some free failures; past them, every further failure doubles the wait before the
next attempt of that count is even checked, up to `max_delay`. An attempt is reserved before its
password is checked and counts as a failure from then on, unless it is released as a success:
guesses sent at once see each other's reservations, so no more than the free ones get checked.
A success clears only its own (address, name) count; from the address's and the name's counts it
takes back just its own reservation, so one user logging in does not lift another's lockout. A
count nobody has failed for `forget_after` seconds is forgotten. An IPv6 address is counted as
its /64: one host or household gets a whole /64, and counting single addresses would give it 2**64
fresh counts.

Where the counts live is a `Counts` store: `DatabaseCounts` (the `login_counts` table) is what the
server uses, so every server process and host sees the same counts: twenty guesses spread over
several processes still get no more than the free checks, and a lockout holds everywhere. Each
reserve and release is one short write transaction that reads the attempt's counts and writes
them back (SQLite's write lock, PostgreSQL's advisory lock `THROTTLE_LOCK` make it atomic
across processes); rows past `forget_after` are deleted on the way, so the table stays small.
`MemoryCounts` keeps them in this process alone (tests, tools). Times are wall-clock unix seconds,
which every process and host shares (hosts keep their clocks in sync, e.g. with NTP).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from imageapi.core.database import Database
from imageapi.core.db import Connection
from imageapi.core.errors import ImageapiError
from imageapi.core.repositories import login_counts

# Password checks cost ~50 ms of CPU each: at most this many at once, in threads.
CHECK_SLOTS = 2
# PostgreSQL: the transaction-level advisory lock that serializes the throttle's read-and-write.
THROTTLE_LOCK = 0x1A9E_0013


class ThrottledError(ImageapiError):
    """Too many failed logins: the attempt was not checked."""

    code = "too_many_attempts"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins: try again in {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Attempt:
    """A reserved attempt: the counts it was added to, the (address, name) one first."""

    keys: tuple[str, ...]


def client_key(addr: str) -> str:
    """What an address is counted as: an IPv4 address, or an IPv6 /64 (an IPv4-mapped IPv6
    address is its IPv4 address); anything else as itself, bounded."""
    try:
        ip = ipaddress.ip_address(addr.partition("%")[0])  # without an IPv6 zone (fe80::1%eth0)
    except ValueError:
        return addr[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass
class Count:
    failures: int
    not_before: float  # no attempt of this count is checked before this (unix seconds)
    last: float        # when a failure was last added


# The current counts of an attempt's keys (a forgotten or missing one is absent) -> what to write:
# a Count to store, None to delete. May raise (ThrottledError) to change nothing.
Change = Callable[[dict[str, Count]], dict[str, Count | None]]


def forgotten(count: Count, now: float, forget_after: float) -> bool:
    return now >= count.not_before and now - count.last >= forget_after


class Counts(Protocol):
    async def change(self, keys: tuple[str, ...], now: float, forget_after: float, change: Change) -> None:
        """Read the counts of `keys`, apply `change`, write its result: atomically."""


class MemoryCounts:
    """The counts in this process's memory, at most `max_entries` (the least recently used go).
    `change` holds no await, which makes it atomic here."""

    def __init__(self, max_entries: int = 30_000) -> None:
        self.max_entries = max_entries
        self._counts: OrderedDict[str, Count] = OrderedDict()

    async def change(self, keys: tuple[str, ...], now: float, forget_after: float, change: Change) -> None:
        current: dict[str, Count] = {}
        for key in keys:
            count = self._counts.get(key)
            if count is not None and forgotten(count, now, forget_after):
                del self._counts[key]
            elif count is not None:
                current[key] = replace(count)
        for key, new in change(current).items():
            self._counts.pop(key, None)
            if new is not None:
                self._counts[key] = new
        while len(self._counts) > self.max_entries:
            self._counts.popitem(last=False)


class DatabaseCounts:
    """The counts in the `login_counts` table, shared by every process on the database. `conn`
    gives the connection when a change is made (the server's is opened after this is made)."""

    def __init__(self, conn: Callable[[], Connection]) -> None:
        self._conn = conn

    async def change(self, keys: tuple[str, ...], now: float, forget_after: float, change: Change) -> None:
        conn = self._conn()
        async with Database.of(conn).transaction():
            await login_counts.lock_counts(conn, THROTTLE_LOCK)
            # Forget what nobody has failed for a while.
            await login_counts.forget(conn, now - forget_after, now)
            current = {key: Count(failures, not_before, last)
                       for key, failures, not_before, last in await login_counts.read(conn, keys)}
            for key, new in change(current).items():
                if new is None:
                    await login_counts.delete(conn, key)
                else:
                    await login_counts.store(conn, key, new.failures, new.not_before, new.last)

def count_keys(addr: str, name: str) -> tuple[str, str, str]:
    """The counts an attempt goes to: (address, name), address, name. JSON inside: no separator a
    name could hold, and no NUL (which PostgreSQL's text cannot)."""
    addr = client_key(addr)
    return ("p" + json.dumps([addr, name]), "a" + json.dumps(addr), "u" + json.dumps(name))


class LoginThrottle:
    def __init__(
        self,
        free: int = 5,
        free_shared: int = 20,
        max_delay: float = 300.0,
        forget_after: float = 3600.0,
        max_entries: int = 30_000,
        clock: Callable[[], float] = time.time,
        counts: Counts | None = None,
    ) -> None:
        """`free` failures per address and name, `free_shared` per address and per name; the counts
        in `counts` (default: this process's memory, at most `max_entries`)."""
        self.free = free
        self.free_shared = free_shared
        self.max_delay = max_delay
        self.forget_after = forget_after
        self._clock = clock
        self.counts: Counts = counts if counts is not None else MemoryCounts(max_entries)
        self.check_slots = asyncio.Semaphore(CHECK_SLOTS)

    def _delay(self, key: str, failures: int) -> float:
        free = self.free if key.startswith("p") else self.free_shared
        return 0.0 if failures < free else min(self.max_delay, 2.0 ** (failures - free))

    async def reserve(self, addr: str, name: str) -> Attempt:
        """Count an attempt by `addr` for the user name `name`, or raise ThrottledError while any
        of its counts must wait. The caller bounds `name` (users.login: a name that cannot be a
        user's is counted as one)."""
        now = self._clock()
        keys = count_keys(addr, name)

        def add(current: dict[str, Count]) -> dict[str, Count | None]:
            wait = max((c.not_before - now for c in current.values()), default=0.0)
            if wait > 0:
                raise ThrottledError(max(1, math.ceil(wait)))
            out: dict[str, Count | None] = {}
            for key in keys:
                count = current.get(key) or Count(0, 0.0, now)
                count.failures += 1
                count.not_before = now + self._delay(key, count.failures)
                count.last = now
                out[key] = count
            return out

        await self.counts.change(keys, now, self.forget_after, add)
        return Attempt(keys)

    async def release(self, attempt: Attempt, ok: bool) -> None:
        """The attempt's outcome: a failure keeps its counts (the wait now starts from its end);
        a success clears its (address, name) count and takes itself back from the others."""
        now = self._clock()
        pair, *shared = attempt.keys

        def settle(current: dict[str, Count]) -> dict[str, Count | None]:
            out: dict[str, Count | None] = {}
            if ok:
                out[pair] = None
                for key in shared:
                    count = current.get(key)
                    if count is not None:
                        count.failures -= 1
                        if count.failures < self.free_shared:
                            count.not_before = 0.0  # its own reservation may have set the wait
                        out[key] = count if count.failures > 0 else None
                return out
            for key in attempt.keys:
                count = current.get(key) or Count(1, 0.0, now)  # forgotten meanwhile: it still failed
                count.not_before = max(count.not_before, now + self._delay(key, count.failures))
                count.last = now
                out[key] = count
            return out

        await self.counts.change(attempt.keys, now, self.forget_after, settle)
