"""`imageapi thumbs`."""

from __future__ import annotations

from dataclasses import asdict

import typer

from imageapi.cli import common
from imageapi.core.libraries import get_library, list_libraries
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
            libs = [await get_library(store.db, library)] if library else await list_libraries(store.db)
            # Scans make these thumbnails too (and this sweeps their half-written files): the
            # scan leases of the libraries it works on.
            async with common.scan_leases(cfg, "imageapi thumbs", libs):
                with common.ProgressBars(not json_out) as bars:
                    return await make_missing_thumbnails(
                        store.db, cfg, store.pool, retry_unsupported=retry_unsupported,
                        library_id=libs[0].id if library else None, progress=bars)

    counts = common.run(go)
    if json_out:
        common.emit_json(asdict(counts))
    else:
        n = counts.retried_new_tools
        retried = f"; {n} unsupported tried again with new tools" if n else ""
        common.out_console.print(
            f"thumbnails: {counts.made} made, {counts.unsupported} unsupported, {counts.failed} failed "
            f"({counts.checked} files checked{retried})", highlight=False)
