"""`imageapi serve`: the HTTP server, with the watcher running beside the requests."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from urllib.parse import urlsplit

import typer

from imageapi.cli import common
from imageapi.core.config import Config
from imageapi.core.errors import ConfigError, ImageapiError, UsageError
from imageapi.core.tokens import check_secret


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
        from imageapi.server.sessions import web_settings

        web_settings(cfg)  # TRUSTED_PROXIES, checked before anything starts
        host, port = parse_bind(bind or cfg.bind_url)
        count = processes or serve_processes(cfg)
    except ImageapiError as exc:
        common.fail(exc.message, common.exit_code_for(exc))
    if cfg.log_level in ("info", "debug", "trace"):
        # The watcher's tick lines and the server's start/stop lines belong in the log.
        for name in ("imageapi.core.watch", "imageapi.server", "aiohttp.server"):
            logging.getLogger(name).setLevel(logging.INFO)

    from imageapi.server import runner
    from imageapi.server.app import create_app

    watch = not no_watch
    with ExitStack() as stack:
        if watch:
            # The watcher is a long-running writer: one per database (a cron scan must wait).
            stack.enter_context(common.job_lock(cfg, "imageapi serve"))
        try:
            runner.serve(lambda w: create_app(cfg, watch=w), host, port, cfg, processes=count, watch=watch)
        except ImageapiError as exc:
            common.fail(exc.message, common.exit_code_for(exc))
        except OSError as exc:
            common.fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", common.EXIT_USAGE)


def serve_processes(cfg: Config) -> int:
    raw = cfg.get("SERVE_PROCESSES")
    if raw is None:
        return 1
    if not raw.isdigit() or not 1 <= int(raw) <= 64:
        raise ConfigError("SERVE_PROCESSES", f"must be a whole number from 1 to 64, got {raw!r}")
    return int(raw)
