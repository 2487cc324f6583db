"""`imageapi duplicates [--near] [--library NAME] [--json]` and `imageapi duplicates backfill`."""

from __future__ import annotations

from dataclasses import asdict

import typer

from imageapi.cli import common
from imageapi.core import duplicates
from imageapi.core.duplicates import Group, HashCounts
from imageapi.core.libraries import get_library
from imageapi.core.names import shown

app = typer.Typer(help="Duplicates and near-duplicates (nothing is ever deleted).", invoke_without_command=True)


@app.callback()
def list_cmd(
    ctx: typer.Context,
    near: bool = typer.Option(False, "--near", help="Near-duplicates (resized, recompressed, edited copies)."),
    similar: bool = typer.Option(False, "--similar", help="Pictures of one moment that are not copies (bursts)."),
    library: str | None = typer.Option(None, "--library", "-l", help="Only groups with a file in this library."),
    json_out: bool = typer.Option(False, "--json", help="Print the groups as JSON."),
) -> None:
    """Groups of duplicates: the same content at several paths, or with --near copies of one
    picture, or with --similar pictures of one moment that are not copies (bursts). Each member
    with its path, size, dimensions and date; the best one to keep marked, with the reason.
    Nothing is deleted or changed."""
    if ctx.invoked_subcommand is not None:
        return
    if near and similar:
        common.fail("--near and --similar: ask for one kind of group at a time", common.EXIT_USAGE)
    kind = "similar" if similar else "near" if near else "exact"
    cfg = common.config_with_dirs()

    async def go() -> list[Group]:
        async with common.open_store(cfg) as store:
            lib_id = (await get_library(store.db, library)).id if library else None
            return (await duplicates.find_groups(store.db, kind=kind, library_id=lib_id)).groups

    groups = common.run(go)
    if json_out:
        common.emit_json({"kind": kind, "groups": [g.record() for g in groups]})
        return
    if not groups:
        common.out_console.print({"exact": "no duplicates", "near": "no near-duplicates",
                                  "similar": "no similar pictures"}[kind], highlight=False)
        return
    for g in groups:
        common.out_console.print(f"{g.kind} group of {len(g.members)}, keep: {g.reason}", highlight=False)
        for m in g.members:
            r = m.record()
            dims = f"{r['width']}x{r['height']}" if r["width"] else "?x?"
            common.out_console.print(
                f"  {'keep' if m.keep else '    '} {shown(r['library'])}/{shown(r['path'])}  {r['size']} bytes  "
                f"{dims}  {r['taken_at'] or 'no date'}", highlight=False, markup=False, soft_wrap=True)
    files = sum(len(g.members) for g in groups)
    common.out_console.print(f"{len(groups)} groups, {files} files, {files - len(groups)} could go",
                             highlight=False)


@app.command("backfill")
def backfill(
    library: str | None = typer.Option(None, "--library", "-l", help="Only this library's pictures."),
    max_items: int | None = typer.Option(None, "--max", min=1, help="At most N pictures."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Worker processes (default: one per core)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Compute the perceptual hashes that are missing (pictures indexed before they existed), from
    the thumbnails. Scans and `imageapi worker` compute them too; running beside them is safe."""
    cfg = common.config_with_dirs()
    if workers:
        cfg = cfg.with_overrides(workers=workers)

    async def go() -> HashCounts:
        async with common.open_store(cfg) as store:
            ids = [(await get_library(store.db, library)).id] if library else None
            with common.ProgressBars(not json_out) as bars:
                return await duplicates.hash_pass(store.db, cfg, store.pool, library_ids=ids, max_items=max_items,
                                                  progress=bars)

    counts = common.run(go)
    if json_out:
        common.emit_json(asdict(counts))
    else:
        common.out_console.print(f"perceptual hashes: {counts.hashed} computed, {counts.failed} thumbnails "
                                 f"unreadable, {counts.remaining} still due", highlight=False)
