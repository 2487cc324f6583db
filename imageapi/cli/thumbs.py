"""`imageapi thumbs`."""

from __future__ import annotations

from dataclasses import asdict

import typer

from imageapi.cli import common
from imageapi.core.libraries import get_library
from imageapi.core.maintenance import ThumbCounts, make_missing_thumbnails


def register(app: typer.Typer) -> None:
    app.command("thumbs")(thumbs)


def thumbs(
    retry_unsupported: bool = typer.Option(
        False, "--retry-unsupported", help="Remove the .unsupported sentinels and try those files again."),
    library: str | None = typer.Option(None, "--library", "-l"),
    workers: int | None = typer.Option(None, "--workers", min=1),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Make any missing thumbnails of indexed files."""
    cfg = common.config_with_dirs()
    if workers:
        cfg = cfg.with_overrides(workers=workers)

    async def go() -> ThumbCounts:
        async with common.open_store(cfg) as store:
            lib_id = (await get_library(store.db, library)).id if library else None
            with common.ProgressBars(not json_out) as bars:
                return await make_missing_thumbnails(
                    store.db, cfg, store.pool, retry_unsupported=retry_unsupported, library_id=lib_id, progress=bars)

    with common.job_lock(cfg, "imageapi thumbs"):
        counts = common.run(go)
    if json_out:
        common.emit_json(asdict(counts))
    else:
        n = counts.retried_new_tools
        retried = f"; {n} unsupported tried again with new tools" if n else ""
        common.out_console.print(
            f"thumbnails: {counts.made} made, {counts.unsupported} unsupported, {counts.failed} failed "
            f"({counts.checked} files checked{retried})", highlight=False)
