# ruff: noqa: F811  (pytest fixtures imported from tests.test_insights_support are parameters here)
"""Daily summaries: the job against the SMS API and model stand-ins (idempotent, '*' contacts, the
token, services going down mid-run), retrieval returning the right day (with and without a date
window, cached and streamed), the agent's search tool, and `imageapi summaries build|search` run
as real processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from imageapi.core.insights.providers import ToolCall
from imageapi.core.insights.store import InsightStore
from imageapi.core.insights.summaries import (
    SmsClient,
    SummaryIndex,
    build_summaries,
    conversation_text,
    search_summaries,
    to_unit_blob,
)
from tests.llm_standins import Fail, Reply, embed_text, refused_url
from tests.test_insights_support import (  # noqa: F401  (fixtures)
    Library1,
    StandIns,
    insight_env,
    library,
    standins,
)

REPO = Path(__file__).resolve().parent.parent

DAYS = {
    ("Alice", "2023-07-13"): ["Packing for Paris tomorrow!", "Bring the camera"],
    ("Alice", "2023-07-14"): ["Fireworks at the Eiffel tower tonight", "Bastille day picnic first"],
    ("Alice", "2023-07-20"): ["Wedding cake tasting at the bakery", "Chocolate or lemon?"],
    ("Bob", "2023-07-14"): ["Dinner reservation confirmed", "Table by the river"],
}


def echo_summary(body: dict[str, Any]) -> Reply:
    """A 'summary' made of the day's messages: retrieval can then be checked against them."""
    prompt = body["messages"][-1]["content"]
    lines = [re.sub(r"^\d\d:\d\d \S+: ", "", ln) for ln in prompt.split("\n\n", 1)[1].splitlines()]
    return Reply("They talked about: " + "; ".join(lines))


def fill(standins: StandIns) -> None:
    for (contact, day), texts in DAYS.items():
        standins.sms.add(contact, day, *texts)
    standins.primary.script = [echo_summary]


async def run_job(lib: Library1, standins: StandIns, contacts: list[str], start: str, end: str,
                  **extra: str) -> Any:
    service = lib.service(**extra)
    settings = service.settings
    sms = SmsClient(settings.sms_api_url, settings.sms_api_token)
    try:
        return await build_summaries(service.store, service.backends, sms, contacts, date.fromisoformat(start),
                                     date.fromisoformat(end))
    finally:
        await sms.aclose()
        await service.aclose()


async def stored(lib: Library1) -> list[tuple[str, str, int, str, str]]:
    async with lib.db.execute("SELECT day, contact, message_count, model, embedding_model FROM "
                              "conversation_summaries ORDER BY day, contact") as cur:
        return [tuple(r) for r in await cur.fetchall()]  # type: ignore[misc]


async def test_build_is_idempotent(standins: StandIns, library: Library1) -> None:
    fill(standins)
    report = await run_job(library, standins, ["Alice", "Bob"], "2023-07-13", "2023-07-20")
    assert (report.written, report.skipped, report.empty, report.failed, report.stopped) == (4, 0, 12, 0, None)
    rows = await stored(library)
    assert [(r[0], r[1], r[2]) for r in rows] == [("2023-07-13", "Alice", 2), ("2023-07-14", "Alice", 2),
                                                 ("2023-07-14", "Bob", 2), ("2023-07-20", "Alice", 2)]
    assert {(r[3], r[4]) for r in rows} == {("big-model", "embed-model")}
    sms_auth = {r["headers"].get("Authorization") for r in standins.sms.requests}
    assert sms_auth == {"Bearer sms-secret"}
    chats, embeds = len(standins.primary.chats), len(standins.primary.embeds)
    again = await run_job(library, standins, ["Alice", "Bob"], "2023-07-13", "2023-07-20")
    assert (again.written, again.skipped) == (0, 4)
    assert (len(standins.primary.chats), len(standins.primary.embeds)) == (chats, embeds)  # no model work
    assert len(await stored(library)) == 4


async def test_every_contact_and_the_day_prompt(standins: StandIns, library: Library1) -> None:
    fill(standins)
    report = await run_job(library, standins, ["*"], "2023-07-14", "2023-07-14")
    assert report.written == 2 and {r[1] for r in await stored(library)} == {"Alice", "Bob"}
    prompt = standins.primary.chats[0]["messages"][-1]["content"]
    assert "Friday 14 July 2023" in prompt and "Fireworks at the Eiffel tower tonight" in prompt
    assert standins.primary.chats[0]["messages"][0]["role"] == "system"


async def test_services_going_down_stop_the_job(standins: StandIns, library: Library1) -> None:
    fill(standins)
    standins.sms.fail = Fail(503, "phone offline")
    report = await run_job(library, standins, ["Alice"], "2023-07-13", "2023-07-14")
    assert report.written == 0 and "HTTP 503" in (report.stopped or "")
    standins.sms.fail = None
    report = await run_job(library, standins, ["Alice"], "2023-07-13", "2023-07-20", SMS_API_TOKEN="wrong")
    assert "HTTP 401" in (report.stopped or "")
    calls = 0

    def flaky(body: dict[str, Any]) -> Any:
        nonlocal calls
        calls += 1
        return echo_summary(body) if calls == 1 else Fail(500, "oom")

    standins.primary.script = [flaky]
    standins.fallback.script = [Fail(500, "oom")]
    report = await run_job(library, standins, ["Alice"], "2023-07-13", "2023-07-20")
    assert report.written == 1 and "no Ollama server answered" in (report.stopped or "")
    standins.primary.script = [echo_summary]
    report = await run_job(library, standins, ["Alice"], "2023-07-13", "2023-07-20")
    assert (report.written, report.skipped, report.stopped) == (2, 1, None)  # the rest, later


async def test_retrieval_returns_the_right_day(standins: StandIns, library: Library1) -> None:
    fill(standins)
    await run_job(library, standins, ["Alice", "Bob"], "2023-07-13", "2023-07-20")
    service = library.service()
    try:
        index = SummaryIndex(library.db)
        cake = await search_summaries(index, service.backends, "wedding cake tasting", limit=2)
        assert (cake[0].day, cake[0].contact) == ("2023-07-20", "Alice") and cake[0].score > cake[1].score
        near = await search_summaries(index, service.backends, "wedding cake tasting", around=date(2023, 7, 14),
                                      days=1, limit=5)
        assert {h.day for h in near} <= {"2023-07-13", "2023-07-14", "2023-07-15"} and len(near) == 3
        fireworks = await search_summaries(index, service.backends, "fireworks eiffel tower", limit=1)
        assert (fireworks[0].day, fireworks[0].contact) == ("2023-07-14", "Alice")
        streamed = await search_summaries(SummaryIndex(library.db, max_cached_bytes=0), service.backends,
                                          "fireworks eiffel tower", limit=4)
        cached = await search_summaries(index, service.backends, "fireworks eiffel tower", limit=4)
        assert [(h.id, round(h.score, 5)) for h in streamed] == [(h.id, round(h.score, 5)) for h in cached]
        # A summary added after the matrix was cached is found by the next search.
        await service.store.add_summary(day="2023-08-01", contact="Carol", summary="Sailing regatta on the lake",
                                        message_count=3, model="m", server="s",
                                        embedding=to_unit_blob(embed_text("sailing regatta lake")),
                                        embedding_model="embed-model")
        sail = await search_summaries(index, service.backends, "regatta sailing", limit=1)
        assert sail[0].contact == "Carol"
        # Vectors of another embedding model are never compared.
        await service.store.add_summary(day="2023-08-02", contact="Dan", summary="Regatta", message_count=1,
                                        model="m", server="s", embedding=to_unit_blob(embed_text("regatta sailing")),
                                        embedding_model="other-model")
        assert all(h.contact != "Dan" for h in await search_summaries(index, service.backends, "regatta sailing"))
        # The agent's tool searches around the photo's day (2023-07-14) by default.
        box = service.toolbox(await library.photo(), None)
        rec = await box.run(ToolCall("s1", "search_conversation_summaries", {"query": "wedding cake"}))
        anywhere = await box.run(ToolCall("s2", "search_conversation_summaries",
                                          {"query": "wedding cake", "days_around": -1, "limit": 1}))
    finally:
        await service.aclose()
    assert {r["day"] for r in rec.result["results"]} <= {"2023-07-13", "2023-07-14"}
    assert rec.result["around"] == "2023-07-14" and rec.result["days_around"] == 3
    assert anywhere.result["results"][0]["day"] == "2023-07-20"


async def test_store_add_summary_is_once_per_day_and_contact(library: Library1) -> None:
    store = InsightStore(library.db)
    args: dict[str, Any] = dict(day="2023-01-01", contact="Eve", summary="x", message_count=1, model="m", server="s",
                                embedding=to_unit_blob([1.0, 0.0]), embedding_model="e")
    assert await store.add_summary(**args) is True
    assert await store.add_summary(**args) is False


def test_conversation_text_keeps_the_start_and_end() -> None:
    from imageapi.core.insights.summaries import SmsMessage

    msgs = [SmsMessage(f"2023-01-01T10:{i % 60:02d}:00", i % 2 == 0, "me" if i % 2 == 0 else "Al", f"message {i}")
            for i in range(500)]
    text = conversation_text(msgs, budget=400)
    assert text.startswith("10:00 me: message 0") and text.endswith("message 499")
    assert "[... messages left out ...]" in text and len(text) < 450


async def test_search_with_no_embedding_backend_fails_clearly(standins: StandIns, library: Library1) -> None:
    fill(standins)
    service = library.service(OLLAMA_PRIMARY_URL=refused_url(), OLLAMA_FALLBACK_URL=refused_url())
    try:
        with pytest.raises(Exception, match="no Ollama server answered"):
            await search_summaries(SummaryIndex(library.db), service.backends, "anything")
    finally:
        await service.aclose()


# ---------------------------------------------------------------------------------------- CLI


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "imageapi", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_build_and_search(standins: StandIns, tmp_path: Path) -> None:
    fill(standins)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA", "OPENROUTER", "SMS_", "SUMMARIES"))}
    env.update(insight_env(standins), IMAGEAPI_DATA_DIR=str(tmp_path / "data"), WORKERS="1")
    env.pop("BASE_PATH", None)
    env.pop("DATABASE_URL", None)
    code, out, err = await cli(env, "summaries", "build", "--from", "2023-07-13", "--to", "2023-07-20",
                               "--contact", "Alice", "--contact", "Bob", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["written"], doc["skipped"], doc["from"], doc["contacts"]) == (4, 0, "2023-07-13", ["Alice", "Bob"])
    code, out, err = await cli(env, "summaries", "build", "--from", "2023-07-13", "--to", "2023-07-20",
                               "-c", "Alice", "-c", "Bob", "--json")
    assert code == 0 and json.loads(out)["skipped"] == 4
    code, out, err = await cli(env, "summaries", "search", "wedding cake", "--json", "--limit", "1")
    assert code == 0, err
    assert json.loads(out)["results"][0]["day"] == "2023-07-20"
    code, out, _ = await cli(env, "summaries", "search", "wedding cake", "--around", "2023-07-14", "--days", "0")
    assert code == 0 and "2023-07-14" in out and "2023-07-20" not in out
    code, _, err = await cli(env, "summaries", "build", "--from", "2023-07-20", "--to", "2023-07-13", "-c", "A")
    assert code == 2 and "after" in err
    code, _, err = await cli(env, "summaries", "build", "--from", "2023-07-21", "--to", "2023-07-21")
    assert code == 2 and "--contact" in err
    down = {**env, "SMS_API_URL": refused_url()}
    code, _, err = await cli(down, "summaries", "build", "--from", "2023-07-21", "--to", "2023-07-22", "-c", "Alice")
    assert code == 5 and "cannot connect to the SMS API" in err
