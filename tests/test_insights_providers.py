# ruff: noqa: F811  (pytest fixtures imported from tests.test_insights_support are parameters here)
"""The model backends against the stand-ins: Ollama primary/fallback failover (refused, slow past
the timeout, 500, unknown model, malformed answers), no failover once text was streamed, the
OpenRouter allowlist, attribution headers, a 4xx passed on, streamed tool-call fragments, and the
settings (legacy names, bad values)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from imageapi.core.errors import ConfigError, UsageError
from imageapi.core.insights.providers import (
    Backends,
    Message,
    ModelNotAllowed,
    ProviderError,
    ProviderRejected,
    parse_arguments,
)
from imageapi.core.insights.settings import insight_settings_from_env
from tests.llm_standins import Fail, Malformed, Reply, Slow, refused_url
from tests.test_insights_support import (  # noqa: F401  (fixtures)
    FALLBACK_MODEL,
    PRIMARY_MODEL,
    StandIns,
    insight_env,
    standins,
)

HELLO = [Message("system", "be brief"), Message("user", "hello")]


@pytest.fixture()
async def backends(standins: StandIns) -> AsyncIterator[Backends]:
    b = Backends(insight_settings_from_env(insight_env(standins)))
    try:
        yield b
    finally:
        await b.aclose()


def make(standins: StandIns, **extra: str) -> Backends:
    return Backends(insight_settings_from_env(insight_env(standins, **extra)))


async def test_primary_answers(standins: StandIns, backends: Backends) -> None:
    standins.primary.script = [Reply("Hi there", [("get_photo_metadata", {})])]
    reply = await backends.chat_provider("local").chat(HELLO, [{"type": "function", "function": {"name": "x"}}])
    assert (reply.content, reply.server, reply.model, reply.failovers) == ("Hi there", standins.primary.url,
                                                                          PRIMARY_MODEL, [])
    assert [c.name for c in reply.tool_calls] == ["get_photo_metadata"] and reply.tool_calls[0].id
    sent = standins.primary.chats[0]
    assert sent["model"] == PRIMARY_MODEL and sent["messages"][1] == {"role": "user", "content": "hello"}
    assert sent["tools"] and not standins.fallback.chats


@pytest.mark.parametrize("failure,reason", [
    (Fail(500, "out of memory"), "HTTP 500: out of memory"),
    (Slow(3.0), "no complete answer within 1 s"),
    (Malformed(), "malformed answer"),
])
async def test_failover_to_the_fallback(standins: StandIns, failure: Any, reason: str) -> None:
    standins.primary.script = [failure]
    standins.fallback.script = [Reply("from the fallback")]
    b = make(standins, INSIGHTS_REQUEST_TIMEOUT_SEC="1")
    try:
        reply = await b.chat_provider("local").chat(HELLO, None)
    finally:
        await b.aclose()
    assert (reply.content, reply.server, reply.model) == ("from the fallback", standins.fallback.url, FALLBACK_MODEL)
    [failover] = reply.failovers
    assert failover.url == standins.primary.url and failover.model == PRIMARY_MODEL and reason in failover.reason


async def test_refused_primary_fails_over(standins: StandIns, caplog: pytest.LogCaptureFixture) -> None:
    down = refused_url()
    standins.fallback.script = [Reply("fallback here")]
    b = make(standins, OLLAMA_PRIMARY_URL=down)
    try:
        reply = await b.chat_provider("local").chat(HELLO, None, on_delta=None)
    finally:
        await b.aclose()
    assert reply.server == standins.fallback.url
    assert reply.failovers[0].url == down and "refused" in reply.failovers[0].reason
    assert any(down in r.getMessage() and "trying the next server" in r.getMessage() for r in caplog.records)


async def test_unknown_model_on_the_primary_fails_over(standins: StandIns) -> None:
    b = make(standins, OLLAMA_PRIMARY_MODEL="not-pulled")
    try:
        reply = await b.chat_provider("local").chat(HELLO, None)
    finally:
        await b.aclose()
    assert reply.server == standins.fallback.url
    assert "HTTP 404" in reply.failovers[0].reason and "not-pulled" in reply.failovers[0].reason


async def test_nothing_reachable_names_every_url(standins: StandIns) -> None:
    a, c = refused_url(), refused_url()
    b = make(standins, OLLAMA_PRIMARY_URL=a, OLLAMA_FALLBACK_URL=c)
    try:
        with pytest.raises(ProviderError) as info:
            await b.chat_provider("local").chat(HELLO, None)
    finally:
        await b.aclose()
    assert a in info.value.message and c in info.value.message and len(info.value.tried) == 2


async def test_streamed_text_is_not_repeated_by_a_failover(standins: StandIns, backends: Backends) -> None:
    standins.primary.script = [Malformed(before="Half an ans")]
    standins.fallback.script = [Reply("whole answer")]
    deltas: list[str] = []

    async def on_delta(t: str) -> None:
        deltas.append(t)

    with pytest.raises(ProviderError, match="mid-answer"):
        await backends.chat_provider("local").chat(HELLO, None, on_delta)
    assert deltas == ["Half an ans"] and not standins.fallback.chats


async def test_streaming_deltas_and_tool_calls(standins: StandIns, backends: Backends) -> None:
    standins.primary.script = [Reply("Looking it up", [("reverse_geocode", {"lat": 1.5, "lon": 2})], chunks=4)]
    deltas: list[str] = []

    async def on_delta(t: str) -> None:
        deltas.append(t)

    reply = await backends.chat_provider("local").chat(HELLO, None, on_delta)
    assert "".join(deltas) == "Looking it up" and len(deltas) == 4
    assert reply.tool_calls[0].arguments == {"lat": 1.5, "lon": 2}
    assert standins.primary.chats[0]["stream"] is True


async def test_model_choice_for_local(standins: StandIns, backends: Backends) -> None:
    reply = await backends.chat_provider("local", FALLBACK_MODEL).chat(HELLO, None)
    assert reply.server == standins.fallback.url and reply.model == FALLBACK_MODEL
    with pytest.raises(UsageError, match="not one of the configured Ollama models"):
        backends.chat_provider("local", "llama-unknown")
    with pytest.raises(UsageError, match="unknown backend"):
        backends.chat_provider("cloud")


# ---------------------------------------------------------------------------------- OpenRouter


async def test_hybrid_default_model_and_attribution(standins: StandIns, backends: Backends) -> None:
    standins.router.script = [Reply("Title: Paris\n\nA summer day.")]
    reply = await backends.chat_provider("hybrid").chat(HELLO, None)
    assert reply.content.startswith("Title: Paris") and reply.backend == "hybrid"
    assert reply.model == "anthropic/claude-sonnet-4" and reply.server == standins.router.base_url
    headers = standins.router.requests[0]["headers"]
    assert headers["Authorization"] == "Bearer sk-or-test"
    assert headers["HTTP-Referer"] == "https://photos.example.org" and headers["X-Title"] == "imageapi tests"
    assert not standins.primary.chats


async def test_allowlist(standins: StandIns, backends: Backends) -> None:
    assert backends.allowed_models() == ["anthropic/claude-sonnet-4", "openai/gpt-4o"]
    reply = await backends.chat_provider("hybrid", "openai/gpt-4o").chat(HELLO, None)
    assert standins.router.chats[-1]["model"] == "openai/gpt-4o" and reply.model == "openai/gpt-4o"
    with pytest.raises(ModelNotAllowed, match="not in OPENROUTER_ALLOWED_MODELS"):
        backends.chat_provider("hybrid", "meta/llama-4")
    b = make(standins, OPENROUTER_ALLOWED_MODELS="")
    try:
        assert b.allowed_models() == []
        b.chat_provider("hybrid", "anthropic/claude-sonnet-4")  # the default itself is fine
        with pytest.raises(ModelNotAllowed, match="only the default"):
            b.chat_provider("hybrid", "openai/gpt-4o")
    finally:
        await b.aclose()


async def test_hybrid_needs_a_key(standins: StandIns) -> None:
    b = make(standins, OPENROUTER_API_KEY="")
    try:
        with pytest.raises(UsageError, match="OPENROUTER_API_KEY"):
            b.chat_provider("hybrid")
    finally:
        await b.aclose()


async def test_unknown_model_is_the_providers_4xx(standins: StandIns) -> None:
    b = make(standins, OPENROUTER_DEFAULT_MODEL="vendor/typo-model", OPENROUTER_ALLOWED_MODELS="")
    try:
        with pytest.raises(ProviderRejected) as info:
            await b.chat_provider("hybrid").chat(HELLO, None)
    finally:
        await b.aclose()
    assert info.value.status == 400 and "vendor/typo-model is not a valid model ID" in info.value.message


async def test_openrouter_500_and_refused_are_unavailable(standins: StandIns) -> None:
    standins.router.script = [Fail(502, "upstream down")]
    b = make(standins)
    try:
        with pytest.raises(ProviderError, match="HTTP 502"):
            await b.chat_provider("hybrid").chat(HELLO, None)
    finally:
        await b.aclose()
    b = make(standins, OPENROUTER_BASE_URL=refused_url() + "/api/v1")
    try:
        with pytest.raises(ProviderError, match="refused"):
            await b.chat_provider("hybrid").chat(HELLO, None)
    finally:
        await b.aclose()


async def test_openrouter_streamed_tool_call_fragments(standins: StandIns, backends: Backends) -> None:
    standins.router.script = [Reply("Let me check", [("reverse_geocode", {"lat": 48.8, "lon": 2.3}),
                                                     ("get_photo_metadata", {})])]
    deltas: list[str] = []

    async def on_delta(t: str) -> None:
        deltas.append(t)

    reply = await backends.chat_provider("hybrid").chat(HELLO, [{"type": "function", "function": {"name": "x"}}],
                                                        on_delta)
    assert "".join(deltas) == "Let me check"
    assert [(c.name, c.arguments, c.error) for c in reply.tool_calls] == [
        ("reverse_geocode", {"lat": 48.8, "lon": 2.3}, None), ("get_photo_metadata", {}, None)]
    assert all(c.id.startswith("call_") for c in reply.tool_calls)


async def test_openrouter_malformed_arguments_become_an_error(standins: StandIns, backends: Backends) -> None:
    standins.router.script = [Malformed()]
    reply = await backends.chat_provider("hybrid").chat(HELLO, None)
    [call] = reply.tool_calls
    assert call.arguments == {} and call.error and "not valid JSON" in call.error


def test_parse_arguments() -> None:
    assert parse_arguments('{"a": 1}') == ({"a": 1}, None)
    assert parse_arguments("") == ({}, None)
    assert parse_arguments("[1]")[1] == "arguments must be a JSON object, got list"
    assert "not valid JSON" in (parse_arguments('{"a":')[1] or "")
    assert parse_arguments("[" * 100_000)[0] == {}


# ---------------------------------------------------------------------------------- embeddings


async def test_embeddings_fail_over_and_record_the_model(standins: StandIns, backends: Backends) -> None:
    standins.primary.embed_script = [Fail(500, "busy")]
    emb = await backends.embed(["a day in paris", "dinner"])
    assert emb.model == "embed-model" and emb.server == standins.fallback.url and len(emb.vectors) == 2
    assert len(emb.vectors[0]) == 64


async def test_embeddings_last_resort_is_openrouter(standins: StandIns) -> None:
    b = make(standins, OLLAMA_PRIMARY_URL=refused_url(), OLLAMA_FALLBACK_URL=refused_url(),
             OPENROUTER_EMBEDDING_MODEL="openai/text-embedding-3-small")
    try:
        emb = await b.embed(["hello"])
    finally:
        await b.aclose()
    assert emb.model == "openai/text-embedding-3-small" and emb.server == standins.router.base_url


# ------------------------------------------------------------------------------------ settings


def test_settings_defaults_and_legacy_names() -> None:
    s = insight_settings_from_env({})
    assert s.ollama_primary.url == "http://localhost:11434" and s.ollama_primary.model == "nemotron-3-nano:30b"
    assert s.ollama_fallback is None and s.connect_timeout == 5.0 and s.request_timeout == 120.0
    assert s.max_iterations == 10 and s.chat_max_iterations == 6 and not s.hybrid_enabled
    assert s.openrouter_default_model == "anthropic/claude-sonnet-4" and s.embedding_model == "nomic-embed-text:v1.5"
    assert s.openrouter_base_url == "https://openrouter.ai/api/v1" and s.sms_api_url == "http://localhost:8000"
    legacy = insight_settings_from_env({"OLLAMA_URL": "http://gpu:11434/", "OLLAMA_MODEL": "llama3"})
    assert (legacy.ollama_primary.url, legacy.ollama_primary.model) == ("http://gpu:11434", "llama3")
    both = insight_settings_from_env({"OLLAMA_URL": "http://old:1", "OLLAMA_PRIMARY_URL": "http://new:2",
                                      "OLLAMA_FALLBACK_URL": "http://fb:3"})
    assert both.ollama_primary.url == "http://new:2"
    assert both.ollama_fallback is not None and both.ollama_fallback.model == both.ollama_primary.model


@pytest.mark.parametrize("env,setting", [
    ({"OLLAMA_PRIMARY_URL": "localhost:11434"}, "OLLAMA_PRIMARY_URL"),
    ({"AGENTIC_MAX_ITERATIONS": "0"}, "AGENTIC_MAX_ITERATIONS"),
    ({"AGENTIC_CHAT_MAX_ITERATIONS": "six"}, "AGENTIC_CHAT_MAX_ITERATIONS"),
    ({"INSIGHTS_REQUEST_TIMEOUT_SEC": "-1"}, "INSIGHTS_REQUEST_TIMEOUT_SEC"),
    ({"SUMMARIES_FROM": "2024-13-01"}, "SUMMARIES_FROM"),
    ({"SUMMARIES_FROM": "2024-02-01", "SUMMARIES_TO": "2024-01-01"}, "SUMMARIES_FROM"),
])
def test_bad_settings_name_themselves(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        insight_settings_from_env(env)
    assert info.value.setting == setting
