"""`imageapi doctor`."""

from __future__ import annotations

from dataclasses import asdict

import typer
from rich.markup import escape

from imageapi.cli import common
from imageapi.core.doctor import run_checks


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)


def doctor(json_out: bool = typer.Option(False, "--json", help="Print the checks as JSON.")) -> None:
    """Report what is available and what is missing, with the fix. Exit 1 if something required is missing."""
    cfg = common.config()
    checks = run_checks(cfg)
    failed = [c for c in checks if not c.ok and c.required]
    if json_out:
        common.emit_json({"ok": not failed, "checks": [asdict(c) for c in checks]})
    else:
        for c in checks:
            mark = "[green]ok[/]" if c.ok else ("[red]missing[/]" if c.required else "[yellow]optional[/]")
            # escape: a detail or fix may hold brackets (pip install 'imageapi[faces]').
            common.out_console.print(f"{mark:>20} [bold]{c.name}[/]: {escape(c.detail)}", highlight=False)
            if not c.ok and c.fix:
                common.out_console.print(f"{'':>10} fix: {escape(c.fix)}", highlight=False)
    if failed:
        raise typer.Exit(common.EXIT_FAILED)
