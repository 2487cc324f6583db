# ruff: noqa: F811  (pytest fixtures imported from the support modules are parameters here)
"""The insights endpoints on create_app against the stand-ins: generate and list (per content
hash), 503 naming the URLs tried with nothing stored, the OpenRouter allowlist and a provider's
4xx, chat with its iteration cap, history with tools, rewind and amend, Server-Sent Events read
by a real streaming client (event order, an error event, disconnect cancelling the model call on a
server run like `serve` runs it), and the summaries job at start-up."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from imageapi.core.config import load_config
from imageapi.server.app import create_app
from tests.llm_standins import Fail, Hang, Reply, refused_url
from tests.test_insights_support import (  # noqa: F401  (fixtures)
    PHOTO_LAT,
    PHOTO_LON,
    PRIMARY_MODEL,
    StandIns,
    insight_env,
    standins,
)
from tests.test_server_support import (  # noqa: F401  (fixtures)
    SECRET,
    AiohttpClient,
    Server,
    Template,
    assert_error,
    environ,
    start_server,
    template,
)

PHOTO = "2020/a.jpg"
TOOLS_THEN_ANSWER = [
    Reply("", [("get_photo_metadata", {}), ("reverse_geocode", {})]),
    Reply("Title: Summer in Paris\n\nA bright June morning by the tower."),
]


def place_photo(server: Server) -> None:
    with server.db() as db:
        db.execute("UPDATE files SET gps_lat = ?, gps_lon = ? WHERE rel_path = ?", (PHOTO_LAT, PHOTO_LON, PHOTO))


@pytest.fixture()
async def api(aiohttp_client: AiohttpClient, template: Template, standins: StandIns,
              tmp_path: Path) -> AsyncIterator[Server]:
    server = await start_server(aiohttp_client, template, tmp_path, **insight_env(standins))
    place_photo(server)
    yield server


async def call(server: Server, method: str, url: str, status: int = 200, **kw: Any) -> Any:
    r = await server.client.request(method, url, headers=server.auth, **kw)
    text = await r.text()
    assert r.status == status, (url, r.status, text)
    return json.loads(text)


async def generate(server: Server, status: int = 200, **body: Any) -> Any:
    return await call(server, "POST", "/insights/generate", status, json={"path": PHOTO, **body})


async def test_generate_list_and_content_hash(api: Server, standins: StandIns) -> None:
    standins.primary.script = list(TOOLS_THEN_ANSWER)
    first = await generate(api)
    assert first["title"] == "Summer in Paris" and first["library"] == "main" and first["path"] == PHOTO
    assert first["server"] == standins.primary.url and first["model"] == PRIMARY_MODEL
    assert [t["name"] for t in first["tools"]] == ["get_photo_metadata", "reverse_geocode"]
    assert "Tour Eiffel" in first["tools"][1]["result"]["location"]
    standins.primary.script = [Reply("Title: Again\n\nA second look.")]
    second = await generate(api)
    listed = await call(api, "GET", "/insights", params={"path": PHOTO})
    assert [i["id"] for i in listed["insights"]] == [second["id"], first["id"]]
    dup = await call(api, "GET", "/insights", params={"path": "dup.jpg"})  # same content, other path
    assert [i["id"] for i in dup["insights"]] == [second["id"], first["id"]]


async def test_no_backend_is_503_naming_the_urls_and_stores_nothing(
        aiohttp_client: AiohttpClient, template: Template, standins: StandIns, tmp_path: Path) -> None:
    a, b = refused_url(), refused_url()
    server = await start_server(aiohttp_client, template, tmp_path,
                                **insight_env(standins, OLLAMA_PRIMARY_URL=a, OLLAMA_FALLBACK_URL=b))
    body = await generate(server, 503)
    assert_error(body, "service_unavailable")
    assert a in body["error"]["message"] and b in body["error"]["message"]
    assert (await call(server, "GET", "/insights", params={"path": PHOTO}))["insights"] == []
    with server.db() as db:
        assert db.execute("SELECT COUNT(*) FROM insight_messages").fetchone()[0] == 0


async def test_openrouter_models_allowlist_and_provider_4xx(api: Server, standins: StandIns) -> None:
    models = await call(api, "GET", "/insights/openrouter/models")
    assert models == {"enabled": True, "default": "anthropic/claude-sonnet-4",
                      "models": ["anthropic/claude-sonnet-4", "openai/gpt-4o"]}
    assert_error(await generate(api, 400, backend="hybrid", model="meta/llama-4"), "model_not_allowed")
    assert_error(await generate(api, 400, backend="cloud"), "bad_field")
    standins.router.models = ["anthropic/claude-sonnet-4"]  # the allowlist names one the provider does not know
    body = await generate(api, 400, backend="hybrid", model="openai/gpt-4o")
    assert_error(body, "provider_rejected")
    assert "openai/gpt-4o is not a valid model ID" in body["error"]["message"]
    standins.router.script = [Reply("", [("get_photo_metadata", {})]), Reply("Title: Hybrid\n\nFrom the cloud.")]
    done = await generate(api, backend="hybrid")
    assert done["backend"] == "hybrid" and done["tools"][0]["result"]["path"] == PHOTO
    assert not standins.primary.chats  # chat and tools went to OpenRouter


async def test_chat_history_cap_rewind_and_amend(aiohttp_client: AiohttpClient, template: Template,
                                                 standins: StandIns, tmp_path: Path) -> None:
    server = await start_server(aiohttp_client, template, tmp_path,
                                **insight_env(standins, AGENTIC_CHAT_MAX_ITERATIONS="2"))
    place_photo(server)
    assert_error(await call(server, "POST", "/insights/chat", 404, json={"path": PHOTO, "message": "hi"}),
                 "not_found")
    standins.primary.script = list(TOOLS_THEN_ANSWER)
    insight = await generate(server)

    def step(body: dict[str, Any]) -> Reply:  # keeps calling tools while it may
        return Reply("", [("get_photos_same_day", {})]) if body.get("tools") else Reply("Bob was there too.")

    standins.primary.script = [step]
    before = len(standins.primary.chats)
    turn = await call(server, "POST", "/insights/chat",
                      json={"path": PHOTO, "message": "Who else was there?", "max_iterations": 50})
    chats = standins.primary.chats[before:]
    assert len(chats) == 3 and [bool(c.get("tools")) for c in chats] == [True, True, False]  # clamped to 2
    assert turn["message"]["content"] == "Bob was there too." and turn["timings"]["capped"] is True
    assert [t["name"] for t in turn["message"]["tools"]] == ["get_photos_same_day"] * 2
    # The history the model gets back next time includes the first turn's tool scaffolding.
    assert any(m["role"] == "tool" and m.get("tool_name") == "reverse_geocode" for m in chats[0]["messages"])

    history = await call(server, "GET", "/insights/chat/history", params={"path": PHOTO})
    msgs = history["messages"]
    assert [(m["index"], m["role"]) for m in msgs] == [(0, "user"), (1, "assistant"), (2, "user"), (3, "assistant")]
    assert [t["name"] for t in msgs[1]["tools"]] == ["get_photo_metadata", "reverse_geocode"]
    assert msgs[1]["tools"][0]["result"]["path"] == PHOTO and msgs[1]["tools"][0]["arguments"] == {}
    assert msgs[2]["content"] == "Who else was there?" and history["insight_id"] == insight["id"]

    bad = await call(server, "POST", "/insights/chat/rewind", 400, json={"path": PHOTO, "index": 0})
    assert "initial message cannot be removed" in bad["error"]["message"]
    assert_error(await call(server, "POST", "/insights/chat/rewind", 400, json={"path": PHOTO, "index": 9}))
    kept = await call(server, "POST", "/insights/chat/rewind", json={"path": PHOTO, "index": 3})
    assert [m["role"] for m in kept["messages"]] == ["user", "assistant", "user"]
    with server.db() as db:  # the answer and its tool scaffolding are gone
        roles = [r[0] for r in db.execute("SELECT role FROM insight_messages ORDER BY seq")]
    assert roles == ["user", "assistant", "tool", "tool", "assistant", "user"]
    kept = await call(server, "POST", "/insights/chat/rewind", json={"path": PHOTO, "index": 1})
    assert [m["role"] for m in kept["messages"]] == ["user"]

    standins.primary.script = [Reply("Title: Paris with Bob\n\nYou, Alice and Bob by the tower.")]
    amended = await call(server, "POST", "/insights/chat",
                         json={"path": PHOTO, "message": "Bob took this one", "amend": True})
    new = amended["insight"]
    assert amended["amended"] is True and new["title"] == "Paris with Bob"
    assert new["amended_from"] == insight["id"] and new["thread_id"] == insight["thread_id"]
    listed = await call(server, "GET", "/insights", params={"path": PHOTO})
    assert [i["id"] for i in listed["insights"]] == [new["id"], insight["id"]]
    history = await call(server, "GET", "/insights/chat/history", params={"path": PHOTO})
    assert [m["role"] for m in history["messages"]] == ["user"]  # amend does not append to the transcript
    assert history["insight_id"] == new["id"] and history["thread_id"] == insight["thread_id"]


# ---------------------------------------------------------------------------------------- SSE


async def read_events(resp: aiohttp.ClientResponse) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    name, data = None, []
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and name is not None:
            events.append((name, json.loads("\n".join(data))))
            name, data = None, []
    return events


async def test_stream_event_order(api: Server, standins: StandIns) -> None:
    standins.primary.script = list(TOOLS_THEN_ANSWER)
    await generate(api)
    standins.primary.script = [Reply("Checking", [("get_photo_metadata", {})], chunks=1),
                               Reply("Alice and one other face.", chunks=3)]
    url = api.client.make_url("/insights/chat/stream")
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"path": PHOTO, "message": "Who is in it?"}, headers=api.auth) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
            events = await read_events(resp)
    names = [e[0] for e in events]
    assert names == ["delta", "tool_call", "tool_result", "delta", "delta", "delta", "done"]
    assert events[1][1]["name"] == "get_photo_metadata" and events[2][1]["result"]["people"] == []
    assert "".join(e[1]["text"] for e in events if e[0] == "delta") == "CheckingAlice and one other face."
    done = events[-1][1]
    assert done["message"]["content"] == "Alice and one other face." and done["message"]["index"] == 3
    assert [t["name"] for t in done["message"]["tools"]] == ["get_photo_metadata"]
    history = await call(api, "GET", "/insights/chat/history", params={"path": PHOTO})
    assert history["messages"][-1] == done["message"]


async def test_stream_errors(api: Server, standins: StandIns) -> None:
    standins.primary.script = list(TOOLS_THEN_ANSWER)
    await generate(api)
    before = len((await call(api, "GET", "/insights/chat/history", params={"path": PHOTO}))["messages"])
    standins.primary.script = [Fail(500, "gpu fell off")]
    standins.fallback.script = [Fail(500, "also down")]
    r = await api.client.post("/insights/chat/stream", json={"path": PHOTO, "message": "hi"}, headers=api.auth)
    assert r.status == 503 and r.content_type == "application/json"  # nothing streamed yet: a plain error
    assert_error(await r.json(), "service_unavailable")
    standins.primary.script = [Reply("", [("get_photo_metadata", {})]), Fail(500, "gpu fell off")]
    url = api.client.make_url("/insights/chat/stream")
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"path": PHOTO, "message": "hi"}, headers=api.auth) as resp:
            assert resp.status == 200
            events = await read_events(resp)
    assert [e[0] for e in events] == ["tool_call", "tool_result", "error"]
    assert events[-1][1]["error"]["code"] == "service_unavailable" and "gpu fell off" in events[-1][1]["error"][
        "message"]
    after = await call(api, "GET", "/insights/chat/history", params={"path": PHOTO})
    assert len(after["messages"]) == before  # nothing half-written


class LiveApp:
    """create_app served like `imageapi serve` serves it (a plain AppRunner: aiohttp does not cancel
    handlers when a client leaves), on 127.0.0.1 in the test's loop."""

    def __init__(self, app: web.Application) -> None:
        self.runner = web.AppRunner(app)
        self.url = ""

    async def __aenter__(self) -> LiveApp:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


async def test_disconnect_cancels_the_model_call(api: Server, standins: StandIns, tmp_path: Path) -> None:
    standins.primary.script = list(TOOLS_THEN_ANSWER)
    await generate(api)  # the insight, made through the test client, in the same database
    config = api.config
    async with LiveApp(create_app(config)) as live:
        before = (await call(api, "GET", "/insights/chat/history", params={"path": PHOTO}))["messages"]
        standins.primary.script = [Hang("Let me think", seconds=30)]
        async with aiohttp.ClientSession() as session:
            resp = await session.post(f"{live.url}/insights/chat/stream", json={"path": PHOTO, "message": "and?"},
                                      headers=api.auth)
            assert resp.status == 200
            first = await resp.content.readline()
            assert first == b"event: delta\n"
            resp.close()  # the user closed the page
        for _ in range(100):
            if standins.primary.cancelled:
                break
            await asyncio.sleep(0.05)
        assert standins.primary.cancelled == 1  # the stand-in saw the model call go away
        after = (await call(api, "GET", "/insights/chat/history", params={"path": PHOTO}))["messages"]
        assert after == before


# ------------------------------------------------------------------------------- summaries job


class IdleWatcher:
    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()


async def test_serve_runs_the_summaries_job_at_start_up(template: Template, standins: StandIns,
                                                       tmp_path: Path) -> None:
    import shutil

    standins.sms.add("Alice", "2024-03-02", "Dinner at the harbour tonight?", "Yes, 8pm at the fish place")
    standins.sms.add("Alice", "2024-03-03", "Thanks for dinner")
    standins.primary.script = [lambda body: Reply("Planned a harbour dinner at eight.")]
    data = tmp_path / "data"
    shutil.copytree(template.data, data, symlinks=True)
    for lock in data.glob("*.lock"):
        lock.unlink()
    env = environ(template, data, **insight_env(standins, SUMMARIES_CONTACTS="Alice", SUMMARIES_FROM="2024-03-01",
                                               SUMMARIES_TO="2024-03-04"))
    config = load_config(environ=env, cwd=tmp_path)

    def rows() -> list[tuple[str, str, str]]:
        with sqlite3.connect(config.database_path) as db:
            sql = "SELECT day, contact, embedding_model FROM conversation_summaries ORDER BY day"
            return db.execute(sql).fetchall()

    async with LiveApp(create_app(config, watch=True, watcher_factory=lambda *a: IdleWatcher())):
        for _ in range(100):
            if len(rows()) == 2:
                break
            await asyncio.sleep(0.05)
    assert rows() == [("2024-03-02", "Alice", "embed-model"), ("2024-03-03", "Alice", "embed-model")]
    asked = [r["query"]["date"] for r in standins.sms.requests if r["path"] == "/api/messages"]
    assert asked == ["2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04"]
    async with LiveApp(create_app(config, watch=False)):  # a helper process (no watcher): no job
        await asyncio.sleep(0.2)
    assert len([r for r in standins.sms.requests if r["path"] == "/api/messages"]) == 4
