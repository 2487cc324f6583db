"""`imageapi serve`: the HTTP server, with the watcher running beside the requests."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from urllib.parse import urlsplit

import typer

from imageapi.cli import common
from imageapi.core.errors import ImageapiError, UsageError
from imageapi.core.tokens import check_secret

SHUTDOWN_TIMEOUT = 30.0  # seconds in-flight requests get to finish after SIGTERM/SIGINT


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def parse_bind(value: str) -> tuple[str, int]:
    """'HOST:PORT', '[IPv6]:PORT', ':PORT' or 'http://HOST:PORT' -> (host, port)."""
    raw = value.strip()
    parts = urlsplit(raw if "://" in raw else f"//{raw}")
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or ("0.0.0.0" if raw.startswith(":") else None)
    if host is None or port is None:
        raise UsageError(f"bind address {value!r} must be HOST:PORT (e.g. 127.0.0.1:8080)")
    return host, port


def serve(
    bind: str | None = typer.Option(None, "--bind", help="HOST:PORT to listen on (default: BIND_URL)."),
    no_watch: bool = typer.Option(False, "--no-watch", help="Serve only: no scans or face passes in the background."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Worker processes (default: one per core)."),
) -> None:
    """Serve the library over HTTP (JSON API, thumbnails, originals), and keep it indexed."""
    cfg = common.config_with_dirs()
    if workers:
        cfg = cfg.with_overrides(workers=workers)
    try:
        check_secret(cfg.secret_key)
        host, port = parse_bind(bind or cfg.bind_url)
    except UsageError as exc:
        common.fail(exc.message, common.EXIT_USAGE)
    if cfg.log_level in ("info", "debug", "trace"):
        # The watcher's tick lines and the server's start/stop lines belong in the log.
        for name in ("imageapi.core.watch", "imageapi.server", "aiohttp.server"):
            logging.getLogger(name).setLevel(logging.INFO)

    from aiohttp import web

    from imageapi.server.app import create_app

    watch = not no_watch
    log = logging.getLogger("imageapi.server")
    with ExitStack() as stack:
        if watch:
            # The watcher is a long-running writer: one per database (a cron scan must wait).
            stack.enter_context(common.job_lock(cfg, "imageapi serve"))
        try:
            app = create_app(cfg, watch=watch)
            web.run_app(
                app, host=host, port=port, shutdown_timeout=SHUTDOWN_TIMEOUT, handle_signals=True,
                access_log=logging.getLogger("aiohttp.access") if cfg.log_level in ("debug", "trace") else None,
                print=lambda _: log.warning(
                    "imageapi serving on http://%s:%d (watcher %s, %d workers)", host, port,
                    "on" if watch else "off", cfg.workers),
            )
        except ImageapiError as exc:
            common.fail(exc.message, common.exit_code_for(exc))
        except OSError as exc:
            common.fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", common.EXIT_USAGE)
    log.warning("imageapi server stopped")
