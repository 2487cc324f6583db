"""The core's watcher (imageapi.core.watch), remembering its last tick of each kind for /status."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from imageapi.core.watch import TickResult, Watcher


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ServerWatcher(Watcher):
    """Watcher + what /status shows: the last tick of each kind (quick, full, faces), the last
    error, how many ticks ran, and per library whether its last scan worked and its last failure
    (message and time), so an unmounted share shows while the other libraries go on. A library
    another run (another host) was scanning shows `state: busy` with that run, not a failure."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last: dict[str, dict[str, Any]] = {}
        self.last_error: dict[str, Any] | None = None
        self.current: str | None = None
        # Per library: its last scan, and its last failure (a missing root, ...) with when.
        self.libraries: dict[str, dict[str, Any]] = {}

    async def _record(self, kind: str, tick: Any) -> TickResult:
        started = time.monotonic()
        self.current = kind
        try:
            result: TickResult = await tick
        except Exception as exc:
            self.last_error = {"kind": kind, "at": _now(), "error": f"{type(exc).__name__}: {exc}"}
            raise
        finally:
            self.current = None
        entry: dict[str, Any] = {"number": result.number, "finished_at": _now(),
                                 "seconds": round(time.monotonic() - started, 3), "summary": result.line}
        if result.pending is not None:
            entry["faces_pending"] = result.pending
        if result.skipped:
            entry["skipped"] = sorted(result.skipped)
        if result.drains_busy is not None:
            entry["drains"] = "busy"
        self.last[kind] = entry
        for report in result.reports or ():
            lib = self._library(report.library)
            lib.update(last_scan=kind, last_scan_at=entry["finished_at"], ok=report.failed is None,
                       state="ok" if report.failed is None else "failed", busy=None)
            if report.failed is not None:
                lib.update(last_error=report.failed, last_error_at=entry["finished_at"])
        for name, held in (result.skipped or {}).items():
            self._library(name).update(state="busy", busy={"job": held.job, "pid": held.pid, "host": held.host,
                                                           "at": entry["finished_at"]})
        return result

    def _library(self, name: str) -> dict[str, Any]:
        return self.libraries.setdefault(name, {"last_error": None, "last_error_at": None, "state": None,
                                                "busy": None})

    async def scan_tick(self, mode: str) -> TickResult:
        return await self._record(mode, super().scan_tick(mode))

    async def face_tick(self) -> TickResult:
        return await self._record("faces", super().face_tick())

    def status(self) -> dict[str, Any]:
        return {"ticks": self.ticks, "current": self.current, "last": self.last, "last_error": self.last_error,
                "libraries": self.libraries, "faces_enabled": self.passes is not None}
