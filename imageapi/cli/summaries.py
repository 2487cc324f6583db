"""`imageapi summaries build|search`: daily conversation summaries from the SMS API (docs/sms-api.md)."""

from __future__ import annotations

from datetime import date, timedelta

import typer

from imageapi.cli import common
from imageapi.core.errors import ImageapiError
from imageapi.core.insights.providers import Backends
from imageapi.core.insights.store import InsightStore
from imageapi.core.insights.summaries import (
    Hit,
    SmsClient,
    SummaryIndex,
    SummaryReport,
    build_summaries,
    parse_day,
    search_summaries,
    settings_range,
)

app = typer.Typer(help="Daily summaries of text conversations, for insights to search.", no_args_is_help=True)

common.STAGE_LABELS.setdefault("summaries", "Summarising days")


def _day(raw: str | None, name: str) -> date | None:
    if raw is None:
        return None
    try:
        return parse_day(raw, name)
    except ImageapiError as exc:
        common.fail(exc.message, common.EXIT_USAGE)


@app.command("build")
def build_cmd(
    first: str | None = typer.Option(None, "--from", help="First day, YYYY-MM-DD (default: SUMMARIES_FROM, "
                                     "else SUMMARIES_DAYS before --to)."),
    last: str | None = typer.Option(None, "--to", help="Last day, YYYY-MM-DD (default: SUMMARIES_TO, else yesterday)."),
    contacts: list[str] = typer.Option([], "--contact", "-c", help="A contact (repeatable; '*': every contact). "
                                       "Default: SUMMARIES_CONTACTS."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Write one summary per day and contact (with its embedding), skipping days already done.
    Exits 5 when the SMS API or every model server stopped answering (run it again later)."""
    cfg = common.config_with_dirs()
    settings = cfg.insights
    start, end = settings_range(settings, _day(first, "--from"), _day(last, "--to"))
    names = list(contacts) or list(settings.summaries_contacts)
    if not names:
        common.fail("no contacts: give --contact NAME (or '*') or set SUMMARIES_CONTACTS", common.EXIT_USAGE)

    async def go() -> SummaryReport:
        async with common.open_store(cfg) as store:
            backends = Backends(settings)
            sms = SmsClient(settings.sms_api_url, settings.sms_api_token)
            try:
                with common.ProgressBars(not json_out) as bars:
                    return await build_summaries(InsightStore(store.db), backends, sms, names, start, end,
                                                 progress=bars)
            finally:
                await sms.aclose()
                await backends.aclose()

    report = common.run(go)
    if json_out:
        common.emit_json({"from": start.isoformat(), "to": end.isoformat(), "contacts": names, **report.to_json()})
    else:
        common.out_console.print(
            f"{start}..{end}: {report.written} summaries written, {report.skipped} already done, {report.empty} "
            f"days without messages, {report.failed} failed in {report.seconds:.1f} s", highlight=False)
        for day, contact, error in report.errors[:5]:
            common.err_console.print(f"  [yellow]{day} {contact}[/]: {error}", highlight=False)
    if report.stopped:
        common.fail(f"stopped early: {report.stopped}", common.EXIT_SERVICE)


@app.command("search")
def search_cmd(
    query: str = typer.Argument(..., help="What to look for, in plain words."),
    around: str | None = typer.Option(None, "--around", help="Only days near this one (YYYY-MM-DD)."),
    days: int = typer.Option(3, "--days", min=0, max=3660, help="Days either side of --around."),
    limit: int = typer.Option(5, "--limit", "-n", min=1, max=100, help="At most this many."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """The stored summaries closest in meaning to QUERY (cosine similarity of embeddings)."""
    cfg = common.config_with_dirs()
    settings = cfg.insights
    center = _day(around, "--around")

    async def go() -> list[Hit]:
        async with common.open_store(cfg) as store:
            backends = Backends(settings)
            try:
                return await search_summaries(SummaryIndex(store.db), backends, query, around=center,
                                              days=days if center else None, limit=limit)
            finally:
                await backends.aclose()

    hits = common.run(go)
    if json_out:
        common.emit_json({"query": query, "around": center.isoformat() if center else None,
                          "window": [(center - timedelta(days=days)).isoformat(),
                                     (center + timedelta(days=days)).isoformat()] if center else None,
                          "results": [h.to_json() for h in hits]})
        return
    if not hits:
        common.out_console.print("no summaries found", highlight=False)
    for h in hits:
        common.out_console.print(f"[bold]{h.day}[/] {h.contact} ({h.score:.3f})\n  {h.summary}", highlight=False)
