"""`imageapi info PATH`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from imageapi.cli import common
from imageapi.core.errors import NotFoundError
from imageapi.core.files import describe_row, get_file_row
from imageapi.core.libraries import clean_relative, get_library, list_libraries, locate
from imageapi.core.names import safe_text, shown, stored


def register(app: typer.Typer) -> None:
    app.command("info")(info)


def info(
    path: str = typer.Argument(..., help="An absolute path, or one relative to a library root with --library "
                               "(as on disk, or as listed)."),
    library: str | None = typer.Option(None, "--library", "-l", help="PATH is relative to this library's root."),
    json_out: bool = typer.Option(False, "--json", help="Print the record as JSON."),
) -> None:
    """Show what the index holds for one file."""
    cfg = common.config_with_dirs()

    async def go() -> dict[str, Any]:
        async with common.open_store(cfg) as store:
            if library is None:
                lib, rel = locate(await list_libraries(store.db), Path(os.path.abspath(os.path.expanduser(path))))
                return describe_row(cfg, lib, await get_file_row(store.db, lib, rel))
            lib = await get_library(store.db, library)
            # The name as on disk (what a shell passes), or as listed (its stored form).
            rel = clean_relative(stored(path))
            try:
                return describe_row(cfg, lib, await get_file_row(store.db, lib, rel))
            except NotFoundError:
                if stored(path) == path or safe_text(path) != path:
                    raise
            return describe_row(cfg, lib, await get_file_row(store.db, lib, clean_relative(path)))

    record = common.run(go)
    if json_out:
        common.emit_json(record)
        return
    for key, value in record.items():
        if key == "thumbnail":
            value = f"{value['state']}" + (f" ({value['reason']})" if value["reason"] else "") + (
                f" {value['path']}" if value["path"] else "")
        if value is not None:
            # Names may hold control characters or '[': shown escaped, never as markup.
            common.out_console.print(f"[bold]{key:>15}[/] {escape(shown(str(value)))}", highlight=False)
