"""`imageapi serve`: the HTTP server, with the watcher running beside the requests."""

from __future__ import annotations

import logging

import typer

from imageapi.cli import common
from imageapi.core import parsers
from imageapi.core.errors import ConfigError, ImageapiError, UsageError
from imageapi.core.tokens import check_secret


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def parse_bind(value: str) -> tuple[str, int]:
    """'HOST:PORT', '[IPv6]:PORT', ':PORT' or 'http://HOST:PORT' -> (host, port)."""
    try:
        return parsers.parse_bind("--bind", value)
    except ConfigError as exc:
        raise UsageError(exc.message) from None


def serve(
    bind: str | None = typer.Option(None, "--bind", help="HOST:PORT to listen on (default: BIND_URL)."),
    no_watch: bool = typer.Option(False, "--no-watch", help="Serve only: no scans or face passes in the background."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Worker processes (default: one per core)."),
    processes: int | None = typer.Option(
        None, "--processes", min=1, max=64,
        help="Server processes sharing the port (default: SERVE_PROCESSES, else 1); the watcher runs in one."),
) -> None:
    """Serve the library over HTTP (JSON API, thumbnails, originals), and keep it indexed."""
    cfg = common.config_with_dirs()
    if workers:
        cfg = cfg.with_overrides(workers=workers)
    try:
        check_secret(cfg.secret_key)
        host, port = parse_bind(bind or cfg.bind_url)
        count = processes or cfg.server.processes
    except ImageapiError as exc:
        common.fail(exc.message, common.exit_code_for(exc))
    if cfg.log_level in ("info", "debug", "trace"):
        # The watcher's tick lines and the server's start/stop lines belong in the log.
        for name in ("imageapi.core.watch", "imageapi.server", "aiohttp.server"):
            logging.getLogger(name).setLevel(logging.INFO)

    from imageapi.server import runner
    from imageapi.server.app import create_app

    watch = not no_watch
    # No lock for the server's life: its watcher takes a library's scan lease per scan and the
    # `drains` lease per pass (imageapi.core.lock), so several hosts and a cron scan share the work.
    try:
        runner.serve(lambda w: create_app(cfg, watch=w), host, port, cfg, processes=count, watch=watch)
    except ImageapiError as exc:
        common.fail(exc.message, common.exit_code_for(exc))
    except OSError as exc:
        common.fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", common.EXIT_USAGE)

