"""`imageapi library add|list|remove`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from imageapi.cli import common
from imageapi.core.libraries import Library, add_library, drop_caches, get_library, remove_library
from imageapi.core.status import libraries_with_counts

app = typer.Typer(help="Manage libraries (named folders to index).", no_args_is_help=True)


@app.command("add")
def add(name: str, path: Path, json_out: bool = typer.Option(False, "--json")) -> None:
    """Add a library NAME rooted at PATH."""
    cfg = common.config_with_dirs()

    async def go() -> Library:
        async with common.open_store(cfg) as store:
            return await add_library(store.db, name, path)

    lib = common.run(go)
    if json_out:
        common.emit_json({"name": lib.name, "root": str(lib.root)})
    else:
        common.out_console.print(f"library [bold]{lib.name}[/] at {lib.root}", highlight=False)


@app.command("list")
def list_(json_out: bool = typer.Option(False, "--json")) -> None:
    """List the libraries with their file counts."""
    cfg = common.config_with_dirs()

    async def go() -> list[dict[str, object]]:
        async with common.open_store(cfg) as store:
            return [{"name": c.library.name, "root": str(c.library.root), "files": c.files}
                    for c in await libraries_with_counts(store.db)]

    libs = common.run(go)
    if json_out:
        common.emit_json(libs)
        return
    if not libs:
        common.out_console.print("no libraries yet: `imageapi library add NAME PATH` or `imageapi scan PATH`")
    for lib in libs:
        common.out_console.print(f"{lib['name']}\t{lib['root']}\t{lib['files']} files", highlight=False)


@app.command("remove")
def remove(name: str) -> None:
    """Remove library NAME from the index (its files on disk are not touched)."""
    cfg = common.config_with_dirs()

    async def go() -> Library:
        async with common.open_store(cfg) as store:
            # Not while the library is being scanned (on any host): its scan lease.
            async with common.scan_leases(cfg, "imageapi library remove", [await get_library(store.db, name)]):
                lib = await remove_library(store.db, name)
                await asyncio.to_thread(drop_caches, cfg, lib.name)
                return lib

    lib = common.run(go)
    common.out_console.print(f"removed library [bold]{lib.name}[/] ({lib.root})", highlight=False)
