"""The `imageapi` command."""

from __future__ import annotations

from pathlib import Path

import typer

from imageapi import __version__
from imageapi.cli import (
    common,
    db,
    doctor,
    duplicates,
    faces,
    hashcmd,
    info,
    library,
    people,
    places,
    scan,
    search,
    serve,
    summaries,
    thumbs,
    token,
    user,
    video,
    watch,
    workercmd,
)

common.plain_flags_in_help()

app = typer.Typer(
    name="imageapi",
    help="Index, thumbnail and serve your photo and video library.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"imageapi {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    database: Path | None = typer.Option(None, "--database", help="SQLite database (overrides DATABASE_URL)."),
    thumbnails: Path | None = typer.Option(None, "--thumbnails", help="Thumbnail folder (overrides THUMBNAILS)."),
    log_level: str | None = typer.Option(None, "--log-level", help="off, error, warn, info, debug, trace."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    common.overrides.clear()
    if database is not None:
        common.overrides["database_path"] = database.expanduser()
    if thumbnails is not None:
        common.overrides["thumbnails"] = thumbnails.expanduser()
    if log_level is not None:
        from imageapi.core.config import parse_log_level
        from imageapi.core.errors import ConfigError

        try:
            common.overrides["log_level"] = parse_log_level(log_level)
        except ConfigError as exc:
            common.fail(exc.message, common.EXIT_USAGE)


scan.register(app)
info.register(app)
doctor.register(app)
thumbs.register(app)
app.add_typer(library.app, name="library")
app.add_typer(hashcmd.app, name="hash")
app.add_typer(faces.app, name="faces")
app.add_typer(duplicates.app, name="duplicates")
app.add_typer(people.app, name="people")
app.add_typer(places.app, name="places")
app.add_typer(summaries.app, name="summaries")
app.add_typer(video.app, name="video")
watch.register(app)
workercmd.register(app)
serve.register(app)
app.add_typer(user.app, name="user")
app.add_typer(db.app, name="db")
token.register(app)
search.register(app)


def main() -> None:
    app()
