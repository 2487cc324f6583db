"""`imageapi faces drain|status|retry-failed|cluster|reindex|serve`."""

from __future__ import annotations

from dataclasses import asdict

import typer

from imageapi.cli import common
from imageapi.core import parsers
from imageapi.core.config import Config
from imageapi.core.errors import ImageapiError
from imageapi.core.faces.backlog import DrainReport, FacePasses, drain
from imageapi.core.faces.reindex import mark_for_reindex
from imageapi.core.faces.settings import FaceSettings
from imageapi.core.faces.store import FaceStatus, face_status, retry_failed
from imageapi.core.libraries import get_library
from imageapi.core.lock import DRAINS

app = typer.Typer(help="Face detection (embedded or by Apollo): the backlog and its status.", no_args_is_help=True)

STATUS_KEYS = ("files", "hashed", "scanned", "pending", "backing_off", "failed", "faces", "people")


def settings_or_exit(cfg: Config, json_out: bool) -> FaceSettings:
    """The face settings; when faces are disabled, say so in one line and exit 0."""
    settings = cfg.faces
    if not settings.enabled:
        if json_out:
            common.emit_json({"enabled": False, "message": settings.disabled_message})
        else:
            common.out_console.print(settings.disabled_message, highlight=False, soft_wrap=True, markup=False)
        raise typer.Exit(common.EXIT_OK)
    return settings


@app.command("drain")
def drain_cmd(
    library: str | None = typer.Option(None, "--library", "-l", help="Only this library's photos."),
    max_items: int | None = typer.Option(None, "--max", min=1, help="Stop after N photos."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Worker processes (default: one per core)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Hash what has no hash, then detect the faces of every photo not yet scanned (FACE_BACKEND:
    the embedded detector or Apollo), until none is left. Exits 0 when the backlog is empty or only
    items backing off after a failure remain."""
    cfg = common.config_with_dirs()
    settings = settings_or_exit(cfg, json_out)
    if workers:
        cfg = cfg.with_overrides(workers=workers)

    async def go() -> DrainReport:
        async with common.open_store(cfg) as store:
            library_ids = [(await get_library(store.db, library)).id] if library else None
            async with FacePasses(store.db, store.pool, settings) as passes:
                with common.ProgressBars(not json_out) as bars:
                    return await drain(passes, library_ids=library_ids, max_items=max_items, progress=bars)

    # What the watcher's face passes do: the `drains` lease (scans of any library go on).
    with common.job_lock(cfg, "imageapi faces drain", [DRAINS]):
        report = common.run(go)
    if json_out:
        common.emit_json({
            "hashed": report.hashed, "detected": report.detected, "faces_found": report.faces_found,
            "bound": report.bound, "transient_failures": report.transient_failures,
            "permanent_failures": report.permanent_failures, "remaining": report.remaining,
            "backing_off": report.backing_off, "hash_failures": report.hash_failures,
            "service_down": report.service_down, "seconds": round(report.seconds, 3),
        })
    else:
        common.out_console.print(
            f"hashed {report.hashed}; {report.detected} photos scanned, {report.faces_found} faces found, "
            f"{report.bound} bound to people; {report.transient_failures} transient and "
            f"{report.permanent_failures} permanent failures; {report.remaining} remaining "
            f"({report.backing_off} backing off) in {report.seconds:.1f} s", highlight=False,
        )
        for content_hash, error in report.errors[:5]:
            common.err_console.print(f"  [yellow]{content_hash[:12]}[/]: {error}", highlight=False)
    if report.service_down:
        common.fail(f"Apollo at {settings.base_url} stopped answering ({report.down_reason}); "
                    f"{report.remaining} photos remain, run `imageapi faces drain` again later",
                    common.EXIT_SERVICE)


@app.command("cluster")
def cluster_cmd(
    full: bool = typer.Option(False, "--full", help="Recluster every face but manual binds (else: unbound faces)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Group faces into persons: unbound faces join their nearest person or start unnamed ones;
    --full reclusters everything not bound by hand (named persons keep their names)."""
    from imageapi.core.faces.cluster import ClusterReport, cluster_all, cluster_unbound

    cfg = common.config_with_dirs()
    settings = settings_or_exit(cfg, json_out)

    async def go() -> ClusterReport:
        async with common.open_store(cfg) as store:
            return await (cluster_all if full else cluster_unbound)(store.db, settings)

    with common.job_lock(cfg, "imageapi faces cluster", [DRAINS]):
        rep = common.run(go)
    if json_out:
        common.emit_json({"faces": rep.faces, "bound": rep.bound, "unbound": rep.unbound,
                          "new_persons": rep.new_persons, "named": rep.named, "removed": rep.removed,
                          "seconds": round(rep.seconds, 3)})
    else:
        common.out_console.print(
            f"{rep.faces} faces: {rep.bound} bound, {rep.unbound} unbound, {rep.new_persons} new unnamed persons, "
            f"{rep.named} named by people tags, {rep.removed} empty ones removed in {rep.seconds:.1f} s",
            highlight=False)


@app.command("status")
def status_cmd(
    library: str | None = typer.Option(None, "--library", "-l", help="Only this library's photos."),
    json_out: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Files, hashed, scanned for faces, pending, backing off, failed, faces and people."""
    cfg = common.config_with_dirs()
    settings_or_exit(cfg, json_out)

    async def go() -> FaceStatus:
        async with common.open_store(cfg) as store:
            lib_id = (await get_library(store.db, library)).id if library else None
            return await face_status(store.db, lib_id)

    st = common.run(go)
    values = asdict(st)
    if json_out:
        common.emit_json({**{k: values[k] for k in STATUS_KEYS}, "backend": cfg.faces.active,
                          "backend_reason": cfg.faces.backend_reason})
        return
    common.out_console.print(
        f"backend {cfg.faces.active}: {cfg.faces.backend_reason}\n"
        f"files {st.files} ({st.hashed} hashed, {st.unhashed_images} photos not yet hashed)\n"
        f"photos scanned for faces {st.scanned}, pending {st.pending}, backing off {st.backing_off}, "
        f"failed {st.failed}\nfaces {st.faces}, people {st.people}", highlight=False, markup=False,
    )


@app.command("retry-failed")
def retry_failed_cmd(
    backing_off: bool = typer.Option(False, "--backing-off", help="Also retry transient failures now."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Put photos whose detection failed for good back in the queue."""
    cfg = common.config_with_dirs()
    settings_or_exit(cfg, json_out)

    async def go() -> int:
        async with common.open_store(cfg) as store:
            return await retry_failed(store.db, include_backing_off=backing_off)

    n = common.run(go)
    if json_out:
        common.emit_json({"requeued": n})
    else:
        common.out_console.print(f"{n} photos back in the face queue", highlight=False)


@app.command("reindex")
def reindex_cmd(
    model: str = typer.Option(..., "--model", help="The model whose faces are detected again (e.g. "
                              "dlib-hog-resnet128, or the model Apollo reports)."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Detect again, in the background (watcher, `faces drain`, `worker`), with the current backend,
    every photo whose faces were found by MODEL; names and drawn boxes pass to the new faces by box
    overlap."""
    cfg = common.config_with_dirs()
    settings = settings_or_exit(cfg, json_out)

    async def go() -> int:
        async with common.open_store(cfg) as store:
            return await mark_for_reindex(store.db, model.strip())

    n = common.run(go)
    if json_out:
        common.emit_json({"queued": n, "model": model.strip(), "backend": settings.active})
    else:
        common.out_console.print(f"{n} photos queued for detection by {settings.active} "
                                 f"(their {model.strip()} faces stay until then)", highlight=False)


@app.command("serve")
def serve_cmd(
    bind: str = typer.Option("127.0.0.1:8000", "--bind", help="HOST:PORT to listen on."),
    workers: int | None = typer.Option(None, "--workers", min=1, max=256,
                                       help="Detector processes (default: WORKERS, else one per core)."),
) -> None:
    """Serve the embedded face detector over Apollo's protocol (POST /api/faces/detect, GET /api/health),
    for other imageapi hosts: set their APOLLO_FACE_API_BASE_URL to this address (or several, with commas)."""
    import logging
    from dataclasses import replace

    from imageapi.core.faces import embedded

    cfg = common.config()
    settings = replace(cfg.face_serve, workers=workers or cfg.workers)
    try:
        host, port = parsers.parse_bind("--bind", bind)
    except ImageapiError as exc:
        common.fail(exc.message, common.exit_code_for(exc))
    missing = embedded.available()
    if missing is not None:
        common.fail(missing, common.EXIT_USAGE)

    from imageapi.server import faceserver

    log = logging.getLogger("imageapi.server")

    def started() -> None:
        log.warning("imageapi faces serve on http://%s:%d (%d workers, queue %d, model %s)", host, port,
                    settings.workers, settings.queue_limit, embedded.MODEL)

    try:
        faceserver.run(settings, host, port, on_started=started)
    except OSError as exc:
        common.fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", common.EXIT_USAGE)
    log.warning("imageapi faces serve stopped")
