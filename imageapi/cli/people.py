"""`imageapi people list|add|name|rename|merge`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer

from imageapi.cli import common
from imageapi.core.faces.people import (
    MergeResult,
    Person,
    PersonSummary,
    create_person,
    list_people,
    merge_people,
    name_person,
    rename_person,
)

app = typer.Typer(help="People: named persons and unnamed clusters that faces are bound to.", no_args_is_help=True)
T = TypeVar("T")


def _with_db(fn: Callable[..., Awaitable[T]], *args: object) -> T:
    cfg = common.config_with_dirs()

    async def go() -> T:
        async with common.open_store(cfg) as store:
            return await fn(store.db, *args)

    return common.run(go)


@app.command("list")
def list_cmd(json_out: bool = typer.Option(False, "--json")) -> None:
    """People with their bound faces and photos: named ones by name, then unnamed clusters
    ("unnamed #ID"), largest first."""
    people: list[PersonSummary] = _with_db(list_people)
    if json_out:
        common.emit_json([
            {"id": p.id, "name": p.name, "named": p.named, "faces": p.faces, "photos": p.photos,
             "bound_by": p.bound_by} for p in people
        ])
        return
    if not people:
        common.out_console.print("no people yet: `imageapi people add NAME`, then tag photos with that name")
    for p in people:
        how = ", ".join(f"{n} {k}" for k, n in sorted(p.bound_by.items()))
        label = f"[bold]{p.label}[/]" if p.named else p.label
        common.out_console.print(f"{label}: {p.faces} faces in {p.photos} photos" + (f" ({how})" if how else ""),
                                 highlight=False)


@app.command("add")
def add_cmd(name: str, json_out: bool = typer.Option(False, "--json")) -> None:
    """Add a person. Photos tagged with the same name (any case) bind their faces to them."""
    person: Person = _with_db(create_person, name)
    if json_out:
        common.emit_json({"id": person.id, "name": person.name})
    else:
        common.out_console.print(f"person [bold]{person.name}[/] added", highlight=False)


@app.command("name")
def name_cmd(person_id: int, name: str, json_out: bool = typer.Option(False, "--json")) -> None:
    """Name person ID (an unnamed cluster, as `people list` shows it). A name another person has:
    merge instead (`imageapi people merge ID NAME`)."""
    person: Person = _with_db(name_person, person_id, name)
    if json_out:
        common.emit_json({"id": person.id, "name": person.name})
    else:
        common.out_console.print(f"#{person_id} is now [bold]{person.name}[/]", highlight=False)


@app.command("rename")
def rename_cmd(old: str, new: str, json_out: bool = typer.Option(False, "--json")) -> None:
    """Rename a person (tags are not renamed: autobind matches tags against the new name)."""
    person: Person = _with_db(rename_person, old, new)
    if json_out:
        common.emit_json({"id": person.id, "name": person.name})
    else:
        common.out_console.print(f"{old} is now [bold]{person.name}[/]", highlight=False)


@app.command("merge")
def merge_cmd(source: str, target: str, json_out: bool = typer.Option(False, "--json")) -> None:
    """Merge person SOURCE into TARGET: SOURCE's faces go to TARGET and SOURCE is removed. Each is
    a name or an id (`#12` or `12`, for unnamed clusters)."""
    res: MergeResult = _with_db(merge_people, source, target)
    if json_out:
        common.emit_json({"source": res.source, "target": res.target, "moved": res.moved, "unbound": res.unbound})
        return
    common.out_console.print(f"merged {res.source} into [bold]{res.target}[/]: {res.moved} faces moved",
                             highlight=False)
    if res.unbound:
        common.out_console.print(
            f"{res.unbound} faces of {res.source} were left unbound: those photos already had a face of "
            f"{res.target}", highlight=False)
