"""What every command shares: settings, the database, error -> exit code, progress, --json."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from imageapi.core import errors, ffmpeg
from imageapi.core.config import Config, ensure_dirs, load_config
from imageapi.core.db import Connection, DriverError, connect, database_error
from imageapi.core.libraries import Library, sync_base_path
from imageapi.core.names import safe_text
from imageapi.core.pool import WorkerPool

T = TypeVar("T")

# Exit codes (documented in the README).
EXIT_OK = 0
EXIT_FAILED = 1          # an unexpected error
EXIT_USAGE = 2           # bad setting or argument
EXIT_LOCKED = 3          # another imageapi run holds a lease this one needs (a library's scans, the drains)
EXIT_NOT_FOUND = 4       # unknown library, file not in the index
EXIT_SERVICE = 5         # an external service (face detection, LLM) cannot be reached
EXIT_DISK_FULL = 6       # the database or the disk holding it is full (nothing committed is lost)
EXIT_DATABASE_DAMAGED = 7  # the database file is damaged or is not an SQLite database
EXIT_PARTIAL = 8         # scan: one or more libraries could not be scanned (the others were)
EXIT_INTERRUPTED = 130   # Ctrl-C / SIGTERM

err_console = Console(stderr=True)
out_console = Console()

# Global options given to the root callback, applied over the environment.
overrides: dict[str, Any] = {}


def exit_code_for(exc: errors.ImageapiError) -> int:
    if isinstance(exc, errors.LockedError):
        return EXIT_LOCKED
    if isinstance(exc, errors.NotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, errors.ConfigError | errors.UsageError | errors.PathOutsideLibraryError):
        return EXIT_USAGE
    if isinstance(exc, errors.ServiceError):
        return EXIT_SERVICE
    if isinstance(exc, errors.DatabaseFullError):
        return EXIT_DISK_FULL
    if isinstance(exc, errors.DatabaseCorruptError):
        return EXIT_DATABASE_DAMAGED
    return EXIT_FAILED


def fail(message: str, code: int) -> NoReturn:
    # A message may quote a file name: '[' in it is text, not Rich markup.
    err_console.print(f"[bold red]error:[/] {escape(safe_text(message) or '')}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def config() -> Config:
    """The settings, read and checked once (a bad value: one line, exit 2)."""
    try:
        cfg = load_config(**overrides)
        ffmpeg.use_tools(cfg.ffmpeg, cfg.ffprobe)  # for this process and the workers it starts
        setup_logging(cfg.log_level)
        return cfg
    except errors.ImageapiError as exc:
        fail(exc.message, exit_code_for(exc))


def config_with_dirs() -> Config:
    cfg = config()
    try:
        ensure_dirs(cfg)
    except errors.ImageapiError as exc:
        fail(exc.message, exit_code_for(exc))
    return cfg


_LEVELS = {"off": logging.CRITICAL + 10, "error": logging.ERROR, "warn": logging.WARNING,
           "info": logging.INFO, "debug": logging.DEBUG, "trace": logging.DEBUG}


def setup_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    # The CLI shows its own progress; the core's info lines are for logs of long-running jobs.
    if sys.stderr.isatty() and level == "info":
        logging.getLogger("imageapi.core").setLevel(logging.WARNING)


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run a command's coroutine; core errors become a red line and the documented exit code."""
    try:
        return asyncio.run(_main(coro_fn))
    except errors.ImageapiError as exc:
        fail(exc.message, exit_code_for(exc))
    except DriverError as exc:  # one the core did not catch: a full disk or a damaged file still gets its line
        error = database_error(exc, _database_path())
        if error is None:
            raise
        fail(error.message, exit_code_for(error))
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _database_path() -> Path | None:
    try:
        return load_config(**overrides).database_path
    except errors.ImageapiError:
        return None


async def _main(coro_fn: Callable[[], Awaitable[T]]) -> T:
    return await coro_fn()


def plain_flags_in_help() -> None:
    """Typer's rich help prints a type after every option, `<bool>` after flags too (`--full
    <bool>`), as if they took a value. Flags take none, so they show none, as in click's plain help."""
    from typer.core import TyperOption

    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "plain_flags", False):
        return  # a Typer without the type column, or already done

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        if self.is_flag and not self.count:
            return None
        return original(self, ctx)

    display_type_rich.plain_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=None, default=str) + "\n")
    sys.stdout.flush()


STAGE_LABELS = {
    "discover": "Finding files",
    "index": "Reading, hashing, thumbnailing",
    "hash": "Hashing",
    "places": "Places",
    "thumbs": "Thumbnails",
    "copy": "Copying rows",
    "verify": "Verifying",
}


class ProgressBars:
    """Rich bars per stage: count, rate and ETA. Nothing at all when stdout is not a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stdout.isatty()
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ProgressBars:
        if self.enabled:
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=out_console,
                transient=False,
            )
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if self.progress is None:
            return
        task = self.tasks.get(stage)
        if task is None:
            task = self.progress.add_task(STAGE_LABELS.get(stage, stage), total=total, rate="")
            self.tasks[stage] = task
        self.progress.update(task, completed=done, total=total)
        speed = self.progress.tasks[self.tasks[stage]].speed
        self.progress.update(task, rate=f"{speed:,.1f}/s" if speed else "")


@contextmanager
def job_lock(cfg: Config, job: str, leases: list[tuple[str, str]]) -> Iterator[None]:
    """The job lock's leases (imageapi.core.lock) for the body, or exit 3 naming their holder."""
    from imageapi.core.lock import JobLock

    try:
        lock = JobLock(cfg.database, job, leases, lease=cfg.job_lease).acquire()
    except errors.ImageapiError as exc:  # LockedError: exit 3; the database unusable: its own code
        fail(exc.message, exit_code_for(exc))
    try:
        yield
    finally:
        lock.release()


def path_arg(p: Path | None) -> Path | None:
    return p.expanduser() if p is not None else None


@asynccontextmanager
async def scan_leases(cfg: Config, job: str, libraries: list[Library]) -> AsyncIterator[None]:
    """The scan leases of these libraries, taken inside a command's coroutine (once it knows
    them); LeaseHeldError (exit 3 through `run`) when another run is scanning one of them."""
    from imageapi.core.lock import holding, scan_lease

    leases = [scan_lease(lib.id, lib.name) for lib in sorted({lib.id: lib for lib in libraries}.values(),
                                                             key=lambda lib: lib.id)]
    async with holding(cfg.database, job, leases, lease=cfg.job_lease):
        yield


@dataclass
class Store:
    db: Connection
    pool: WorkerPool


@asynccontextmanager
async def open_store(cfg: Config) -> AsyncIterator[Store]:
    """The migrated database (with BASE_PATH as library `main`) and a worker pool that starts its
    processes only when first used; both closed on the way out."""
    db = await connect(cfg.database)
    pool = WorkerPool(cfg.workers)
    try:
        await sync_base_path(db, cfg)
        yield Store(db, pool)
    finally:
        pool.close()
        await db.close()
