"""`imageapi token --user NAME --ttl 30d`: a bearer token for scripts."""

from __future__ import annotations

import typer

from imageapi.cli import common
from imageapi.core import users
from imageapi.core.db import connect
from imageapi.core.errors import UsageError
from imageapi.core.tokens import IssuedToken, TokenService, check_secret, parse_ttl


def register(app: typer.Typer) -> None:
    app.command("token")(token)


def token(
    user: str = typer.Option(..., "--user", "-u", help="The user the token acts for."),
    ttl: str = typer.Option("30d", "--ttl", help="Lifetime: 30d, 12h, 15m or seconds."),
    json_out: bool = typer.Option(False, "--json", help="Print {token, expires_at, user} as JSON."),
) -> None:
    """Print a bearer token (JWT signed with SECRET_KEY) for USER."""
    cfg = common.config_with_dirs()
    try:
        secret = check_secret(cfg.secret_key)
        seconds = parse_ttl(ttl)
    except UsageError as exc:
        common.fail(exc.message, common.EXIT_USAGE)

    async def go() -> IssuedToken:
        db = await connect(cfg.database)
        try:
            found = await users.get_user(db, user)
        finally:
            await db.close()
        return TokenService(secret).issue(found, seconds)

    issued = common.run(go)
    if json_out:
        common.emit_json({"token": issued.token, "expires_at": issued.expires_at_iso, "user": user})
    else:
        typer.echo(issued.token)
