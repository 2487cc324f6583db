# ruff: noqa: F811  (pytest fixtures imported from tests.test_insights_support are parameters here)
"""The tool loop and the tools, through InsightService against the stand-ins: a multi-step tool
conversation stored per content hash, the iteration caps, bad tool calls fed back to the model,
failover recorded, nothing stored on failure, reverse geocoding (personal places folded in,
cache, rate limit, User-Agent), title parsing and transcript rendering."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from imageapi.core.insights.agent import FINAL_NUDGE, split_title
from imageapi.core.insights.providers import Message, ProviderError, ToolCall
from imageapi.core.insights.store import StoredMessage, render
from tests.llm_standins import Fail, Malformed, Reply, refused_url
from tests.test_insights_support import (  # noqa: F401  (fixtures)
    FALLBACK_MODEL,
    HOME_LAT,
    HOME_LON,
    PRIMARY_MODEL,
    Library1,
    StandIns,
    jpeg_bytes,
    library,
    standins,
)


async def render_image() -> bytes:
    return jpeg_bytes()


def tool_messages(chat: dict[str, Any]) -> dict[str, Any]:
    """tool name -> parsed result, from what the model was sent."""
    return {m["tool_name"]: json.loads(m["content"]) for m in chat["messages"] if m["role"] == "tool"}


async def test_multi_step_tool_conversation(standins: StandIns, library: Library1) -> None:
    standins.primary.script = [
        Reply("", [("get_photo_metadata", {}), ("reverse_geocode", {})]),
        Reply("", [("get_photos_same_day", {}), ("describe_image", {"question": "is it sunny?"}),
                   ("search_conversation_summaries", {"query": "paris trip"})]),
        Reply("Title: Bastille Day at the Eiffel Tower\n\nYou and Alice spent the afternoon in Paris."),
    ]
    service = library.service()
    photo = await library.photo()
    try:
        insight = await service.generate(photo, render_image=render_image)
    finally:
        await service.aclose()
    assert insight["title"] == "Bastille Day at the Eiffel Tower"
    assert insight["text"] == "You and Alice spent the afternoon in Paris."
    assert (insight["backend"], insight["server"], insight["model"]) == ("local", standins.primary.url, PRIMARY_MODEL)
    assert insight["content_hash"] == "h-eiffel" and insight["failovers"] == []
    assert insight["timings"]["rounds"] == 2 and insight["timings"]["capped"] is False
    tools = {t["name"]: t for t in insight["tools"]}
    assert list(tools) == ["get_photo_metadata", "reverse_geocode", "get_photos_same_day", "describe_image",
                           "search_conversation_summaries"]
    meta = tools["get_photo_metadata"]["result"]
    assert meta["taken_at"] == "2023-07-14T15:30:00" and meta["gps_lat"] == 48.8584
    assert meta["people"] == ["Alice"] and meta["faces"] == 2 and meta["tags"] == ["vacation"]
    assert "Tour Eiffel" in tools["reverse_geocode"]["result"]["location"]
    same = tools["get_photos_same_day"]["result"]
    assert [p["path"] for p in same["photos"]] == ["2023/dinner.jpg"]  # not itself, not its copy
    assert same["photos"][0]["people"] == ["Bob"]
    assert tools["describe_image"]["arguments"] == {"question": "is it sunny?"}
    assert tools["describe_image"]["result"]["model"] == "vision-model"
    assert tools["search_conversation_summaries"]["result"]["around"] == "2023-07-14"
    # What the model saw: the tool results of round 1 in its second request; the image went to vision.
    chats = [c for c in standins.primary.chats if c["model"] == PRIMARY_MODEL]
    assert len(chats) == 3 and chats[0]["tools"]
    assert set(tool_messages(chats[1])) == {"get_photo_metadata", "reverse_geocode"}
    vision = [c for c in standins.primary.chats if c["model"] == "vision-model"]
    assert len(vision) == 1 and vision[0]["messages"][0]["images"] and "sunny" in vision[0]["messages"][0]["content"]
    # Stored per content hash: the copy of the photo shows the same insight.
    service = library.service()
    try:
        copy = await library.photo("2023/eiffel copy.jpg")
        assert [i["id"] for i in await service.insights(copy)] == [insight["id"]]
        history = await service.history(copy)
    finally:
        await service.aclose()
    msgs = history["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant"]
    assert [t["name"] for t in msgs[1]["tools"]] == list(tools)
    assert msgs[1]["tools"][0]["result"]["people"] == ["Alice"]


async def test_iteration_cap_asks_for_a_final_answer_without_tools(standins: StandIns, library: Library1) -> None:
    def step(body: dict[str, Any]) -> Reply:
        if body.get("tools"):
            return Reply("", [("get_photo_metadata", {})])
        return Reply("Title: Enough\n\nDone looking.")

    standins.primary.script = [step]
    service = library.service(AGENTIC_MAX_ITERATIONS="3")
    try:
        insight = await service.generate(await library.photo())
    finally:
        await service.aclose()
    chats = standins.primary.chats
    assert len(chats) == 4 and all(c.get("tools") for c in chats[:3]) and not chats[3].get("tools")
    assert chats[3]["messages"][-1] == {"role": "user", "content": FINAL_NUDGE}
    assert insight["timings"]["rounds"] == 3 and insight["timings"]["capped"] is True
    assert len(insight["tools"]) == 3 and insight["title"] == "Enough"


async def test_bad_tool_calls_are_fed_back(standins: StandIns, library: Library1) -> None:
    standins.primary.script = [
        Reply("", [("launch_rockets", {}), ("reverse_geocode", {"lat": 123, "lon": 0}),
                   ("get_photos_same_day", {"limit": "lots"})]),
        Reply("Title: Still fine\n\nThe model carried on."),
    ]
    service = library.service()
    try:
        insight = await service.generate(await library.photo())
    finally:
        await service.aclose()
    errors = [t["result"]["error"] for t in insight["tools"]]
    assert "no tool named 'launch_rockets'" in errors[0]
    assert "not a position on Earth" in errors[1] and "limit must be an integer" in errors[2]
    fed = tool_messages(standins.primary.chats[1])
    assert "error" in fed["launch_rockets"] and insight["title"] == "Still fine"


async def test_failover_is_recorded_with_the_insight(standins: StandIns, library: Library1) -> None:
    standins.primary.script = [Fail(503, "loading model")]
    standins.fallback.script = [Reply("Title: Small but fine\n\nFrom the fallback.")]
    service = library.service()
    try:
        insight = await service.generate(await library.photo())
    finally:
        await service.aclose()
    assert (insight["server"], insight["model"]) == (standins.fallback.url, FALLBACK_MODEL)
    assert insight["failovers"] == [{"url": standins.primary.url, "model": PRIMARY_MODEL,
                                     "reason": "HTTP 503: loading model"}]


async def test_nothing_is_stored_when_no_backend_answers(standins: StandIns, library: Library1) -> None:
    service = library.service(OLLAMA_PRIMARY_URL=refused_url(), OLLAMA_FALLBACK_URL=refused_url())
    try:
        with pytest.raises(ProviderError, match="tried"):
            await service.generate(await library.photo())
    finally:
        await service.aclose()
    standins.primary.script = [Reply("", [("get_photo_metadata", {})]), Malformed()]
    standins.fallback.script = [Fail(500)]
    service = library.service()
    try:
        with pytest.raises(ProviderError):  # fails in round 2, after a tool ran
            await service.generate(await library.photo())
    finally:
        await service.aclose()
    for table in ("insights", "insight_messages"):
        async with library.db.execute(f"SELECT COUNT(*) FROM {table}") as cur:
            assert (await cur.fetchone())[0] == 0


async def test_personal_place_is_folded_into_the_location(standins: StandIns, library: Library1) -> None:
    service = library.service()
    photo = await library.photo("2023/home.jpg")
    box = service.toolbox(photo, None)
    try:
        geo = await box.run(ToolCall("c1", "reverse_geocode", {}))
        place = await box.run(ToolCall("c2", "get_personal_place_at", {}))
        away = await box.run(ToolCall("c3", "get_personal_place_at", {"lat": 10.0, "lon": 10.0}))
    finally:
        await service.aclose()
    assert geo.result["location"] == "Home — Damstraat, Amsterdam, Nederland"
    assert geo.result["personal_place"] == "Home"
    assert place.result["place"]["name"] == "Home" and place.result["place"]["distance_m"] < 1
    assert away.result["place"] is None
    assert standins.places.requests[0]["query"] == {"lat": str(HOME_LAT), "lon": str(HOME_LON)}


async def test_without_apollo_there_is_no_places_tool(standins: StandIns, library: Library1) -> None:
    service = library.service(APOLLO_API_BASE_URL="")
    try:
        box = service.toolbox(await library.photo(), None)
        names = [s["function"]["name"] for s in box.specs()]
        geo = await box.run(ToolCall("c1", "reverse_geocode", {}))
    finally:
        await service.aclose()
    assert "get_personal_place_at" not in names and "describe_image" not in names
    assert geo.result["personal_place"] is None and "Tour Eiffel" in geo.result["location"]


async def test_nominatim_cache_rate_limit_and_user_agent(standins: StandIns, library: Library1) -> None:
    service = library.service(NOMINATIM_MIN_INTERVAL_SEC="0.4", NOMINATIM_USER_AGENT="imageapi-test/1 (me@example.org)")
    try:
        box = service.toolbox(await library.photo(), None)
        started = time.monotonic()
        first = await box.run(ToolCall("a", "reverse_geocode", {}))
        again = await box.run(ToolCall("b", "reverse_geocode", {"lat": 48.85841, "lon": 2.29452}))  # same ~11 m
        other = await box.run(ToolCall("c", "reverse_geocode", {"lat": HOME_LAT, "lon": HOME_LON}))
        elapsed = time.monotonic() - started
    finally:
        await service.aclose()
    assert first.result["location"] == again.result["location"] and other.result["address"]["city"] == "Amsterdam"
    reqs = standins.nominatim.requests
    assert len(reqs) == 2 and elapsed >= 0.4 and reqs[1]["at"] - reqs[0]["at"] >= 0.39
    assert reqs[0]["headers"]["User-Agent"] == "imageapi-test/1 (me@example.org)"
    assert reqs[0]["query"]["format"] == "jsonv2"
    service = library.service()  # a new process would read the database cache
    try:
        box = service.toolbox(await library.photo(), None)
        await box.run(ToolCall("d", "reverse_geocode", {}))
    finally:
        await service.aclose()
    assert len(standins.nominatim.requests) == 2


async def test_geocoder_down_is_a_tool_error(standins: StandIns, library: Library1) -> None:
    standins.nominatim.fail = Fail(429, "slow down")
    service = library.service(APOLLO_API_BASE_URL="")
    try:
        rec = await service.toolbox(await library.photo(), None).run(ToolCall("a", "reverse_geocode", {}))
        nogps = await service.toolbox(await library.photo("2023/nogps.jpg"), None).run(
            ToolCall("b", "reverse_geocode", {}))
        same = await service.toolbox(await library.photo("2023/nogps.jpg"), None).run(
            ToolCall("c", "get_photos_same_day", {}))
    finally:
        await service.aclose()
    assert "HTTP 429" in rec.result["error"] and "no GPS position" in nogps.result["error"]
    assert same.result["photos"] == [] and same.result["date"] is None


@pytest.mark.parametrize("text,title,body", [
    ("Title: A day out\n\nWe walked.", "A day out", "We walked."),
    ("**Title:** Sunset sail\nOn the lake.", "Sunset sail", "On the lake."),
    ("# Summer in Paris\nThe tower.", "Summer in Paris", "The tower."),
    ("Just one sentence here. And more.", "Just one sentence here", "Just one sentence here. And more."),
])
def test_split_title(text: str, title: str, body: str) -> None:
    assert split_title(text) == (title, body)


def test_render_groups_tool_scaffolding_with_the_answer() -> None:
    call = ToolCall("c1", "get_photo_metadata", {})
    stored = [
        StoredMessage(0, Message("user", "Write an insight")),
        StoredMessage(1, Message("assistant", "", tool_calls=[call])),
        StoredMessage(2, Message("tool", '{"people": ["Alice"]}', tool_call_id="c1", name="get_photo_metadata")),
        StoredMessage(3, Message("assistant", "Title: X\n\nY"), "local", "http://a", "m"),
        StoredMessage(4, Message("user", "Who is there?")),
        StoredMessage(5, Message("assistant", "Alice."), "local", "http://a", "m"),
    ]
    out = render(stored)
    assert [(r.index, r.role, r.start_seq) for r in out] == [(0, "user", 0), (1, "assistant", 1), (2, "user", 4),
                                                            (3, "assistant", 5)]
    assert out[1].tools == [{"name": "get_photo_metadata", "arguments": {}, "result": {"people": ["Alice"]}}]
    assert out[3].tools == []
