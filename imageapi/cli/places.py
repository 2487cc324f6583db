"""`imageapi places [--json]` and `imageapi places backfill`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import typer
from rich.table import Table

from imageapi.cli import common
from imageapi.core.libraries import get_library
from imageapi.core.place_fill import PlaceCounts, backfill
from imageapi.core.place_tree import place_tree
from imageapi.core.places import cache_file

app = typer.Typer(help="Places: where the files were taken, from their GPS, offline.")


@app.callback(invoke_without_command=True)
def tree(
    ctx: typer.Context,
    library: str | None = typer.Option(None, "--library", help="One library (default: every library)."),
    json_out: bool = typer.Option(False, "--json", help="Print the tree as one JSON object on stdout."),
) -> None:
    """Countries, their regions and cities, with the number of files taken there."""
    if ctx.invoked_subcommand is not None:
        return
    cfg = common.config_with_dirs()

    async def go() -> dict[str, Any]:
        async with common.open_store(cfg) as store:
            libs = [await get_library(store.db, library)] if library is not None else None
            return await place_tree(store.db, libs)

    found = common.run(go)
    if json_out:
        common.emit_json(found)
        return
    if not found["countries"]:
        common.out_console.print("no places yet: files with GPS get theirs when scanned "
                                 "(`imageapi places backfill` for files indexed before)", highlight=False)
        return
    table = Table("place", "files", "cover")
    for country in found["countries"]:
        table.add_row(f"[bold]{country['country'] or country['cc']}[/] ({country['cc']})", str(country["count"]),
                      _cover(country["cover"]))
        for region in country["regions"]:
            table.add_row(f"  {region['region'] or '(no region)'}", str(region["count"]), "")
            for city in region["cities"]:
                table.add_row(f"    {city['city'] or '(no city)'}", str(city["count"]), _cover(city["cover"]))
    common.out_console.print(table)
    common.out_console.print(f"{found['total']} files with a place", highlight=False)


def _cover(cover: dict[str, Any] | None) -> str:
    return f"{cover['library']}:{cover['path']}" if cover else ""


@app.command("backfill")
def backfill_cmd(
    max_rows: int | None = typer.Option(None, "--max", min=1, help="Work at most N rows."),
    library: list[str] = typer.Option([], "--library", help="Only these libraries (repeatable)."),
    workers: int | None = typer.Option(None, "--workers", min=1),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Give files with GPS indexed before places existed (or with another dataset version) their
    place and local time, straight from the database."""
    cfg = common.config_with_dirs()
    if workers:
        cfg = cfg.with_overrides(workers=workers)

    async def go() -> PlaceCounts:
        async with common.open_store(cfg) as store:
            ids = [(await get_library(store.db, name)).id for name in library] or None
            with common.ProgressBars(not json_out) as bars:
                return await backfill(store.db, store.pool, max_rows, cache=cache_file(cfg.data_dir),
                                      library_ids=ids, progress=bars)

    # No lease: a row is written only while still due, so a watcher or worker filling the same
    # rows at the same time costs some work twice, never a wrong row.
    counts = common.run(go)
    if json_out:
        common.emit_json(asdict(counts))
    else:
        common.out_console.print(
            f"placed {counts.placed}, {counts.no_place} without a place, {counts.failed} failed, "
            f"{counts.remaining} still due" + (f" ({counts.stale} from an older dataset)" if counts.stale else ""),
            highlight=False)
