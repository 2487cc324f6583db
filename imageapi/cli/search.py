"""`imageapi search QUERY [filters]`, `imageapi search rebuild`, `imageapi search status`."""

from __future__ import annotations

import typer
from rich.markup import escape

from imageapi.cli import common
from imageapi.core import search as core
from imageapi.core.config import Config
from imageapi.core.names import safe_text

ACTIONS = ("rebuild", "status")


def register(app: typer.Typer) -> None:
    app.command("search")(search)


def search(
    words: list[str] = typer.Argument(None, help="Words to find (prefixes; case and accents do not matter). "
                                      "`rebuild` alone makes the whole index again, `status` alone shows it."),
    date_from: str | None = typer.Option(None, "--from", help="Taken on or after: YYYY-MM-DD[THH:MM:SS]."),
    date_to: str | None = typer.Option(None, "--to", help="Taken on or before: YYYY-MM-DD[THH:MM:SS]."),
    kind: list[str] = typer.Option([], "--kind", help="photo, video, raw or other (repeat: any of them)."),
    library: list[str] = typer.Option([], "--library", "-l", help="Only this library (repeat: any of them)."),
    person: list[str] = typer.Option([], "--person", help="A person's name or id (repeat: all of them)."),
    tag: list[str] = typer.Option([], "--tag", help="A tag (repeat: all of them)."),
    camera: str | None = typer.Option(None, "--camera", help="Words of the camera's make and model."),
    gps: bool | None = typer.Option(None, "--gps/--no-gps", help="Only files with (without) GPS."),
    bbox: str | None = typer.Option(None, "--bbox", help="south,west,north,east in degrees."),
    sort: str = typer.Option("newest", "--sort", help="newest, oldest or relevance."),
    limit: int = typer.Option(core.DEFAULT_LIMIT, "--limit", help="At most this many files."),
    cursor: str | None = typer.Option(None, "--cursor", help="The next_cursor of the previous page."),
    json_out: bool = typer.Option(False, "--json", help="Print the page as JSON."),
) -> None:
    """Find files by place, camera, lens, file and folder names, tags, people and insight titles."""
    cfg = common.config_with_dirs()
    words = words or []
    action = words[0] if len(words) == 1 and words[0] in ACTIONS else None
    if action is not None:
        _index_command(cfg, action, json_out)
        return
    q = core.SearchQuery(
        text=" ".join(words), date_from=date_from, date_to=date_to, kinds=kind, libraries=library,
        persons=person, tags=tag, camera=camera, has_gps=gps, bbox=bbox, sort=sort, limit=limit, cursor=cursor)

    async def go() -> core.SearchPage:
        async with common.open_store(cfg) as store:
            return await core.search(store.db, cfg, q)

    page = common.run(go)
    if json_out:
        common.emit_json({"items": page.items, "next_cursor": page.next_cursor})
        return
    for item in page.items:
        when = (item.get("taken_at") or "undated")[:19]
        camera_text = " ".join(str(item[k]) for k in ("make", "model") if item.get(k))
        line = f"{when}  {item['library']}:{safe_text(item['path'])}"
        common.out_console.print(escape(line + (f"  ({camera_text})" if camera_text else "")), highlight=False)
    if not page.items:
        common.out_console.print("nothing found")
    if page.next_cursor:
        common.out_console.print(f"more: --cursor {page.next_cursor}", highlight=False)


def _index_command(cfg: Config, action: str, json_out: bool) -> None:
    async def go() -> tuple[int, core.IndexStatus]:
        async with common.open_store(cfg) as store:
            made = await core.rebuild(store.db) if action == "rebuild" else 0
            return made, await core.status(store.db)

    made, st = common.run(go)
    if json_out:
        out: dict[str, int] = {"documents": st.documents, "dirty": st.dirty}
        if action == "rebuild":
            out["made"] = made
        common.emit_json(out)
    elif action == "rebuild":
        common.out_console.print(f"search index rebuilt: {made} files", highlight=False)
    else:
        common.out_console.print(f"search index: {st.documents} files, {st.dirty} waiting", highlight=False)
