"""`imageapi scan`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer
from rich.markup import escape

from imageapi.cli import common
from imageapi.core.names import shown
from imageapi.core.scan import ScanCounts, ScanReport, resolve_targets, run_scan


def register(app: typer.Typer) -> None:
    app.command("scan")(scan)


def scan(
    path: Path | None = typer.Argument(None, help="A folder: inside a library, scan only it; with no "
                                       "library configured yet, it becomes library 'main'."),
    full: bool = typer.Option(False, "--full", help="List every folder (records removals and in-place edits)."),
    quick: bool = typer.Option(False, "--quick", help="Only folders changed since the last scan listed them."),
    library: list[str] = typer.Option([], "--library", "-l", help="Scan only this library (repeatable)."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Worker processes (default: one per core)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Index new, changed, moved and removed files; make their thumbnails."""
    if full and quick:
        common.fail("--full and --quick exclude each other", common.EXIT_USAGE)
    mode = "quick" if quick else "full"
    cfg = common.config_with_dirs()
    if workers:
        cfg = cfg.with_overrides(workers=workers)

    async def go() -> list[ScanReport]:
        async with common.open_store(cfg) as store:
            targets = await resolve_targets(store.db, library, common.path_arg(path))
            # One scan per library at a time, on any host: a watcher or a cron scan of another
            # library goes on beside this one.
            async with common.scan_leases(cfg, f"imageapi scan --{mode}", [t.library for t in targets]):
                with common.ProgressBars(not json_out) as bars:
                    return await run_scan(store.db, cfg, targets, mode, store.pool, bars)

    reports = common.run(go)
    total = ScanCounts()
    for r in reports:
        total.add(r.counts)
    seconds = sum(r.seconds for r in reports)
    if json_out:
        common.emit_json({
            "mode": mode,
            **asdict(total),
            "seconds": round(seconds, 3),
            "libraries": [
                {"library": r.library, "subtree": r.subtree, **asdict(r.counts),
                 "seconds": round(r.seconds, 3), "warnings": r.warnings, "failed": r.failed,
                 "errors_sample": [{"path": p, "error": e} for p, e in r.errors]}
                for r in reports
            ],
        })
        if any(r.failed for r in reports):
            raise typer.Exit(common.EXIT_PARTIAL)
        return
    failed = [r for r in reports if r.failed]
    for r in reports:
        c = r.counts
        where = escape(shown(f"{r.library}/{r.subtree}" if r.subtree else r.library))
        if r.failed:
            common.err_console.print(f"[bold red]{where}: scan failed:[/] {escape(shown(r.failed))}", highlight=False)
            continue
        common.out_console.print(
            f"[bold]{where}[/]: {c.scanned} files, {c.added} added, {c.changed} changed, "
            f"{c.moved} moved, {c.removed} removed, {c.hashed} hashed; thumbnails {c.thumbs_made} made, "
            f"{c.thumbs_unsupported} unsupported, {c.thumbs_failed} failed; {c.errors} errors "
            f"({r.seconds:.1f} s)", highlight=False,
        )
        for w in r.warnings:
            common.err_console.print(f"[yellow]warning:[/] {escape(shown(w))}", highlight=False)
        for p, e in r.errors[:10]:
            common.err_console.print(f"  [red]{escape(shown(p))}[/]: {escape(shown(e))}", highlight=False)
        if len(r.errors) > 10 or c.errors > len(r.errors[:10]):
            common.err_console.print(f"  ... {c.errors} errors in all (see `imageapi info PATH`)")
    if failed:
        # The other libraries were scanned; the exit code says that some were not.
        raise typer.Exit(common.EXIT_PARTIAL)
