"""`imageapi hash backfill`."""

from __future__ import annotations

from dataclasses import asdict

import typer

from imageapi.cli import common
from imageapi.core.lock import DRAINS
from imageapi.core.maintenance import HashBackfillCounts, backfill_hashes

app = typer.Typer(help="Content hashes.", no_args_is_help=True)


@app.command("backfill")
def backfill(
    max_rows: int | None = typer.Option(None, "--max", min=1, help="Hash at most N rows."),
    workers: int | None = typer.Option(None, "--workers", min=1),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Hash indexed files that have no content hash yet, in id order, straight from the database."""
    cfg = common.config_with_dirs()
    if workers:
        cfg = cfg.with_overrides(workers=workers)

    async def go() -> HashBackfillCounts:
        async with common.open_store(cfg) as store:
            with common.ProgressBars(not json_out) as bars:
                return await backfill_hashes(store.db, store.pool, max_rows, progress=bars)

    # The watcher's face passes hash the same rows: the `drains` lease (scans of any library go on).
    with common.job_lock(cfg, "imageapi hash backfill", [DRAINS]):
        counts = common.run(go)
    if json_out:
        common.emit_json(asdict(counts))
    else:
        common.out_console.print(
            f"hashed {counts.hashed}, failed {counts.failed}, {counts.remaining} still without a hash",
            highlight=False)
