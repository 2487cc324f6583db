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

The counts live in this process's memory: `reserve` and `release` hold no await, which makes
each atomic here; they are awaitables so a store shared between processes can take their place.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from imageapi.core.errors import ImageapiError

# Password checks cost ~50 ms of CPU each: at most this many at once, in threads.
CHECK_SLOTS = 2


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
class _Count:
    failures: int
    not_before: float  # no attempt of this count is checked before this (monotonic seconds)
    last: float        # when a failure was last added


class LoginThrottle:
    def __init__(
        self,
        free: int = 5,
        free_shared: int = 20,
        max_delay: float = 300.0,
        forget_after: float = 3600.0,
        max_entries: int = 30_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`free` failures per address and name, `free_shared` per address and per name."""
        self.free = free
        self.free_shared = free_shared
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_entries = max_entries
        self._clock = clock
        self._counts: OrderedDict[str, _Count] = OrderedDict()
        self.check_slots = asyncio.Semaphore(CHECK_SLOTS)

    def _delay(self, key: str, failures: int) -> float:
        free = self.free if key.startswith("p") else self.free_shared
        return 0.0 if failures < free else min(self.max_delay, 2.0 ** (failures - free))

    def _get(self, key: str, now: float) -> _Count | None:
        count = self._counts.get(key)
        if count is not None and now >= count.not_before and now - count.last >= self.forget_after:
            del self._counts[key]
            return None
        return count

    async def reserve(self, addr: str, name: str) -> Attempt:
        """Count an attempt by `addr` for the user name `name`, or raise ThrottledError while any
        of its counts must wait. The caller bounds `name` (users.login: a name that cannot be a
        user's is counted as one)."""
        now = self._clock()
        addr = client_key(addr)
        keys = (f"p\0{addr}\0{name}", f"a\0{addr}", f"u\0{name}")
        waits = [c.not_before - now for c in (self._get(k, now) for k in keys) if c is not None]
        wait = max(waits, default=0.0)
        if wait > 0:
            raise ThrottledError(max(1, math.ceil(wait)))
        for key in keys:
            count = self._counts.pop(key, None) or _Count(0, 0.0, now)
            count.failures += 1
            count.not_before = now + self._delay(key, count.failures)
            count.last = now
            self._counts[key] = count
        while len(self._counts) > self.max_entries:
            self._counts.popitem(last=False)
        return Attempt(keys)

    async def release(self, attempt: Attempt, ok: bool) -> None:
        """The attempt's outcome: a failure keeps its counts (the wait now starts from its end);
        a success clears its (address, name) count and takes itself back from the others."""
        now = self._clock()
        pair, *shared = attempt.keys
        if ok:
            self._counts.pop(pair, None)
            for key in shared:
                count = self._counts.get(key)
                if count is not None:
                    count.failures -= 1
                    if count.failures < self.free_shared:
                        count.not_before = 0.0  # its own reservation may have set the wait
                    if count.failures <= 0:
                        del self._counts[key]
            return
        for key in attempt.keys:
            count = self._counts.get(key)
            if count is None:  # forgotten meanwhile (evicted): it still failed
                count = self._counts[key] = _Count(1, 0.0, now)
            count.not_before = max(count.not_before, now + self._delay(key, count.failures))
            count.last = now
