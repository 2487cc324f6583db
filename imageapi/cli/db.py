"""`imageapi db copy`."""

from __future__ import annotations

import typer

from imageapi.cli import common
from imageapi.core.errors import ConfigError
from imageapi.core.postgres.copy import BATCH, CopyResult, copy_index
from imageapi.core.postgres.url import is_postgres_url, parse_postgres_url

app = typer.Typer(help="The index database.", no_args_is_help=True)


@app.command("copy")
def copy(
    to: str | None = typer.Option(None, "--to", metavar="postgresql://user:pass@host/db",
                                  help="The PostgreSQL database to fill (default: DATABASE_URL when it is one)."),
    force: bool = typer.Option(False, "--force", help="Empty a target that holds something else first."),
    batch: int = typer.Option(BATCH, "--batch", min=1, max=1_000_000, help="Rows per COPY batch."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Copy the SQLite index (--database, or DATABASE_URL when it is a path) into PostgreSQL: every
    table, in batches, resumable, verified by row counts and checksums."""
    cfg = common.config()
    try:
        if to is not None and not is_postgres_url(to):
            raise ConfigError("--to", "must be a PostgreSQL URL (postgresql://user:pass@host/db)")
        target = parse_postgres_url(to, "--to") if to is not None else cfg.postgres
        if target is None:
            raise ConfigError("--to", "missing: give --to postgresql://... or set DATABASE_URL to one")
    except ConfigError as exc:
        common.fail(exc.message, common.EXIT_USAGE)

    async def go() -> CopyResult:
        with common.ProgressBars(not json_out) as bars:
            return await copy_index(cfg.database_path, target.url, force=force, batch=batch, progress=bars)

    result = common.run(go)
    if json_out:
        common.emit_json(result.as_json())
        return
    summary = result.as_json()
    common.out_console.print(
        f"copied {summary['copied']} rows ({summary['rows']} in {len(result.tables)} tables"
        f"{', resumed' if result.resumed else ''}) from {result.source} to {result.target}: "
        "counts and checksums match", highlight=False)
