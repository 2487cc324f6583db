"""`imageapi user add|list|remove|passwd`: the server's users."""

from __future__ import annotations

import asyncio
import sys

import typer

from imageapi.cli import common
from imageapi.core import users
from imageapi.core.db import connect
from imageapi.core.errors import UsageError

app = typer.Typer(help="Manage the users who may log in to `imageapi serve`.", no_args_is_help=True)

PASSWORD_STDIN = typer.Option(False, "--password-stdin", help="Read the password from the first line of stdin.")


def read_password(from_stdin: bool) -> str:
    """The new password: the first line of stdin, or typed twice at a prompt."""
    if from_stdin:
        try:
            line = sys.stdin.readline()
        except UnicodeDecodeError:
            common.fail("the password must be valid UTF-8 text", common.EXIT_USAGE)
        password = line.rstrip("\r\n")
    elif not sys.stdin.isatty():
        common.fail("no terminal to ask for the password: use --password-stdin", common.EXIT_USAGE)
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        users.check_password(password)
    except UsageError as exc:
        common.fail(exc.message, common.EXIT_USAGE)
    return password


@app.command("add")
def add(name: str, password_stdin: bool = PASSWORD_STDIN) -> None:
    """Add user NAME (the password is asked for, or read with --password-stdin)."""
    cfg = common.config_with_dirs()
    try:
        users.check_name(name)
    except UsageError as exc:
        common.fail(exc.message, common.EXIT_USAGE)
    password = read_password(password_stdin)

    async def go() -> users.User:
        stored = await asyncio.to_thread(users.hash_password, password)
        db = await connect(cfg.database)
        try:
            return await users.add_user(db, name, stored)
        finally:
            await db.close()

    user = common.run(go)
    common.out_console.print(f"user [bold]{user.name}[/] added", highlight=False)


@app.command("list")
def list_(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the users."""
    cfg = common.config_with_dirs()

    async def go() -> list[users.User]:
        db = await connect(cfg.database)
        try:
            return await users.list_users(db)
        finally:
            await db.close()

    found = common.run(go)
    if json_out:
        common.emit_json([{"name": u.name, "created_at": u.created_at} for u in found])
        return
    if not found:
        common.out_console.print("no users yet: `imageapi user add NAME`")
    for u in found:
        common.out_console.print(f"{u.name}  (since {u.created_at[:10]})", highlight=False)


@app.command("remove")
def remove(name: str) -> None:
    """Remove user NAME; their tokens stop working (within 30 s on a running server)."""
    cfg = common.config_with_dirs()

    async def go() -> users.User:
        db = await connect(cfg.database)
        try:
            return await users.remove_user(db, name)
        finally:
            await db.close()

    user = common.run(go)
    common.out_console.print(f"user [bold]{user.name}[/] removed", highlight=False)


@app.command("passwd")
def passwd(name: str, password_stdin: bool = PASSWORD_STDIN) -> None:
    """Set user NAME's password; tokens issued before now stop working."""
    cfg = common.config_with_dirs()
    password = read_password(password_stdin)

    async def go() -> users.User:
        stored = await asyncio.to_thread(users.hash_password, password)
        db = await connect(cfg.database)
        try:
            return await users.set_password(db, name, stored)
        finally:
            await db.close()

    user = common.run(go)
    common.out_console.print(f"password of [bold]{user.name}[/] changed", highlight=False)
