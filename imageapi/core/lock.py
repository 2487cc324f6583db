"""The job lock: leases in the database, one per piece of work that must not run twice at once.

Work is locked by what it would duplicate, not by database, so `imageapi serve` on several hosts
(each with its watcher) and a cron `imageapi scan` share one database:
- `scan:<library id>` (scan_lease): a library's scans, and whatever rewrites that library's files
  (`imageapi scan`, `thumbs`, `library remove`, each watcher tick's scan of it). The watcher skips
  a library whose lease another run holds for that tick; the CLI is refused (LockedError, exit 3).
- `drains` (DRAINS): the passes working through the whole database's backlogs (hashes, faces,
  video previews): `faces drain`, `hash backfill`, `video previews`, each watcher tick's passes.
A second run wanting a held lease fails at once with LeaseHeldError naming the holder.

Each lease is a row in `job_leases`, so it holds across processes and hosts, on SQLite as on
PostgreSQL: the holder (its host, pid and a random id) and when the lease runs out.
A heartbeat thread pushes the expiry on every third of the lease while the lock is held; release
deletes the row. A holder that is killed (kill -9) or cut off from the database stops renewing, and
the next run takes the lock over once the lease has run out (`JOB_LEASE_SECONDS`, 30 s by default).
A holder on this same machine whose process is gone is taken over at once (as the kernel dropped a
flock at a kill -9): "this machine" is the same kernel boot and pid namespace, where its pid means
the same process. A holder that finds its lease taken over (it was cut off for longer than the
lease) has lost the right to write: `on_lost` is called, by default stopping the process (SIGTERM);
the watcher cancels the step instead (`holding`).

Expiry times are wall-clock unix seconds: hosts sharing a database keep their clocks in sync
(NTP); a skew well under the lease does no harm.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from types import TracebackType

from imageapi.core.database import Database
from imageapi.core.db import Connection, connect
from imageapi.core.errors import LeaseHeldError, LeaseLostError
from imageapi.core.postgres.url import DatabaseSetting
from imageapi.core.repositories import job_leases

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0
# A lease: its row's name, and what it guards (for the message when it is held).
LeaseName = tuple[str, str]
DRAINS: LeaseName = ("drains", "the hash, face and video preview passes of this database")
START_TIMEOUT = 60.0  # seconds to open the database and take (or be refused) the lease


# Who holds a lease (random id, host, machine, pid, job) and until when: the lease row itself.
Holder = job_leases.LeaseRow


def scan_lease(library_id: int, library_name: str) -> LeaseName:
    return f"scan:{library_id}", f"library {library_name!r}"


def machine_id() -> str:
    """Where a pid names one process: this kernel boot and this pid namespace."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = socket.gethostname()
    try:
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        pidns = 0
    return f"{boot}/{pidns}"


def process_gone(pid: int) -> bool:
    """Whether no process of this machine has that pid (a zombie is gone too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # someone else's process: there
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state == "Z"


def _stop_process() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


async def holder_of(conn: Connection, name: str) -> Holder | None:
    return await job_leases.lease_row(conn, name)


class Lease:
    """The lease `name` in a database, taken and renewed through one connection (async)."""

    def __init__(self, conn: Connection, name: str, job: str, lease: float, *, host: str | None = None,
                 machine: str | None = None, clock: Callable[[], float] = time.time,
                 what: str = "this database") -> None:
        self.conn = conn
        self.name = name
        self.what = what
        self.job = job
        self.lease = lease
        self.me = Holder(secrets.token_hex(16), host or socket.gethostname(), machine or machine_id(), os.getpid(),
                         job, 0.0)
        self._clock = clock
        self.expires_at = 0.0

    def _takeable(self, found: Holder | None, now: float) -> bool:
        if found is None or found.holder == self.me.holder or found.expires_at <= now:
            return True
        return found.machine == self.me.machine and found.pid != os.getpid() and process_gone(found.pid)

    async def take(self) -> None:
        """Take the lease, or raise LockedError naming its live holder. One write transaction:
        the row is swapped only if it still names the holder seen (a compare-and-set, so two
        takers at once cannot both win, on either database)."""
        me = self.me
        async with Database.of(self.conn).transaction():
            now = self._clock()
            found = await holder_of(self.conn, self.name)
            if not self._takeable(found, now):
                assert found is not None
                raise self._busy(found)
            expires = now + self.lease
            row = job_leases.LeaseRow(me.holder, me.host, me.machine, me.pid, me.job, expires)
            if found is None:
                await job_leases.insert_lease(self.conn, self.name, row)
            else:
                await job_leases.replace_lease(self.conn, self.name, row, found.holder)
            now_held = await holder_of(self.conn, self.name)
        if now_held is None or now_held.holder != me.holder:
            raise self._busy(now_held or found or me)
        if found is not None and found.holder != me.holder:
            log.warning("took over the job lock of %s from %s (pid %d on %s), whose lease had run out or whose "
                        "process is gone", self.what, found.job, found.pid, found.host)
        self.expires_at = expires

    async def renew(self) -> bool:
        """Push the expiry on; False when the lease is no longer this holder's."""
        async with Database.of(self.conn).transaction():
            expires = self._clock() + self.lease
            await job_leases.extend_lease(self.conn, self.name, self.me.holder, expires)
            found = await holder_of(self.conn, self.name)
        if found is None or found.holder != self.me.holder:
            return False
        self.expires_at = expires
        return True

    async def give_back(self) -> None:
        async with Database.of(self.conn).transaction():
            await job_leases.delete_lease(self.conn, self.name, self.me.holder)

    def _busy(self, found: Holder) -> LeaseHeldError:
        return LeaseHeldError(
            f"another imageapi run ({found.job}, pid {found.pid} on {found.host}) is already working on "
            f"{self.what}; try again when it has finished", found.job, found.pid, found.host)


class JobLock:
    """Leases of a database's job lock (sync, for the CLI): `acquire` takes them all or raises
    LeaseHeldError (giving back those it took); while held, a thread renews them; `release` gives
    them back. See the module doc. `host` and `machine` default to this one's (a test passes
    another to stand in for a second host, whose pids mean nothing here)."""

    def __init__(self, database: Path | DatabaseSetting, job: str, leases: Sequence[LeaseName], *,
                 lease: float = LEASE_SECONDS, on_lost: Callable[[], None] = _stop_process,
                 host: str | None = None, machine: str | None = None) -> None:
        self.database = database
        self.job = job
        self.lease = lease
        self.leases = list(leases)
        self.name = ", ".join(name for name, _ in self.leases)
        self.on_lost = on_lost
        self._host, self._machine = host, machine
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def acquire(self) -> JobLock:
        started: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(started,), name=f"job lock {self.name}",
                                        daemon=True)
        self._thread.start()
        try:
            started.result(START_TIMEOUT)
        except BaseException:
            if self._loop is not None and self._stop is not None:  # timed out: give it back if it comes
                try:
                    self._loop.call_soon_threadsafe(self._stop.set)
                except RuntimeError:
                    pass  # the loop has ended
            self._thread.join(START_TIMEOUT)
            self._thread = None
            raise
        return self

    def release(self) -> None:
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None or loop is None or stop is None:
            return
        try:
            loop.call_soon_threadsafe(stop.set)
        except RuntimeError:
            pass  # the loop has ended (the lease was lost)
        thread.join(START_TIMEOUT)
        self._thread = None

    def _run(self, started: Future[None]) -> None:
        try:
            asyncio.run(self._hold(started))
        except BaseException as exc:  # reported through `started` when it was not yet
            if not started.done():
                started.set_exception(exc)
            else:
                log.warning("job lock %s: %s", self.name, exc)

    async def _hold(self, started: Future[None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        conn = await connect(self.database)
        try:
            taken: list[Lease] = []
            try:
                for name, what in self.leases:
                    lease = Lease(conn, name, self.job, self.lease, host=self._host, machine=self._machine, what=what)
                    await lease.take()
                    taken.append(lease)
            except BaseException:
                for lease in taken:  # all or none
                    with suppress(Exception):
                        await lease.give_back()
                raise
            started.set_result(None)
            if await self._heartbeat(taken):
                for lease in taken:
                    await lease.give_back()
        finally:
            await conn.close()

    async def _renew(self, leases: list[Lease]) -> bool:
        held = True
        for lease in leases:
            held = await lease.renew() and held
        return held

    async def _heartbeat(self, leases: list[Lease]) -> bool:
        """Renew every third of the lease until released (True) or the lease is lost (False).
        A renewal that fails (the database out of reach) is tried again each second until the
        lease has run out."""
        assert self._stop is not None
        every = self.lease / 3
        wait = every
        while True:
            try:
                await asyncio.wait_for(self._stop.wait(), wait)
                return True
            except TimeoutError:
                pass
            try:
                expires_at = min(lease.expires_at for lease in leases)
                held = await asyncio.wait_for(self._renew(leases), max(0.1, expires_at - time.time()))
                wait = every
            except Exception as exc:  # out of reach (or timed out): try again while the lease lasts
                held = time.time() < min(lease.expires_at for lease in leases)
                log.warning("could not renew the job lock (%s): %s", self.job, str(exc) or type(exc).__name__)
                wait = min(1.0, every)
            if not held:
                log.error("the job lock was lost (%s): the database could not be reached for longer than the "
                          "lease (%.0f s), and another run may have taken over; stopping", self.job, self.lease)
                self.on_lost()
                return False

    def __enter__(self) -> JobLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


@asynccontextmanager
async def holding(database: Path | DatabaseSetting, job: str, leases: Sequence[LeaseName], *,
                  lease: float = LEASE_SECONDS) -> AsyncIterator[None]:
    """The leases held (from an event loop) for the body, which is cancelled if they are lost:
    then LeaseLostError is raised instead of the cancellation. LeaseHeldError when another run
    holds one. The lock's thread and connection are its own, so the body's work never delays a
    renewal."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    lost = threading.Event()
    inside = False  # read and written on the loop only: a late loss cancels nothing after the body

    def cancel_body() -> None:
        if inside:
            task.cancel()

    def on_lost() -> None:
        lost.set()
        loop.call_soon_threadsafe(cancel_body)

    lock = JobLock(database, job, leases, lease=lease, on_lost=on_lost)
    await _finish_in_thread(lock.acquire, lock)
    inside = True
    try:
        yield
    except asyncio.CancelledError:
        if not lost.is_set() or task.uncancel() > 0:
            raise  # not (only) our cancellation: the caller's stands
        raise LeaseLostError(f"the lease of {', '.join(what for _, what in leases)} was lost (the database could "
                             f"not be reached for longer than the lease); the work was stopped") from None
    finally:
        inside = False
        await _finish_in_thread(lock.release, None)


async def _finish_in_thread(fn: Callable[[], object], undo: JobLock | None) -> None:
    """Run fn in a thread to its end even when cancelled (then `undo` is released after it)."""
    fut = asyncio.ensure_future(asyncio.to_thread(fn))
    try:
        await asyncio.shield(fut)
    except asyncio.CancelledError:
        with suppress(Exception):
            await fut
            if undo is not None:
                await asyncio.to_thread(undo.release)
        raise
