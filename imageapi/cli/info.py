"""`imageapi info PATH`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from imageapi.cli import common
from imageapi.core.files import describe_row, get_file_row
from imageapi.core.libraries import clean_relative, get_library, list_libraries, locate


def register(app: typer.Typer) -> None:
    app.command("info")(info)


def info(
    path: str = typer.Argument(..., help="An absolute path, or one relative to a library root with --library."),
    library: str | None = typer.Option(None, "--library", "-l", help="PATH is relative to this library's root."),
    json_out: bool = typer.Option(False, "--json", help="Print the record as JSON."),
) -> None:
    """Show what the index holds for one file."""
    cfg = common.config_with_dirs()

    async def go() -> dict[str, Any]:
        async with common.open_store(cfg) as store:
            if library is not None:
                lib = await get_library(store.db, library)
                rel = clean_relative(path)
            else:
                lib, rel = locate(await list_libraries(store.db), Path(os.path.abspath(os.path.expanduser(path))))
            return describe_row(cfg, lib, await get_file_row(store.db, lib, rel))

    record = common.run(go)
    if json_out:
        common.emit_json(record)
        return
    for key, value in record.items():
        if key == "thumbnail":
            value = f"{value['state']}" + (f" ({value['reason']})" if value["reason"] else "") + (
                f" {value['path']}" if value["path"] else "")
        if value is not None:
            common.out_console.print(f"[bold]{key:>15}[/] {value}", highlight=False)
