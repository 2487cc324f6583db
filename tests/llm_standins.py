"""Real HTTP stand-ins on 127.0.0.1 for the services insights talk to: Ollama (chat with tool
calls, NDJSON streaming, embeddings), OpenRouter (OpenAI chat completions with tools and SSE
streaming, embeddings), the SMS API, Nominatim and Apollo Places.

Each is an aiohttp application on its own port, run by a plain AppRunner in the test's event loop.
Chat replies are scripted per test: `script` is a list of steps taken in order (the last one
repeats); a step is a `Reply`, a `Fail`, a `Slow`, a `Malformed`, a `Hang`, or a function of the
request body returning one. Every request body is recorded, and a streaming handler whose client
goes away records it in `cancelled`.

Embeddings are a bag of hashed words (unit length, EMBED_DIM numbers): texts that share words are
close, so retrieval tests can tell the right day from the others.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

EMBED_DIM = 64


@dataclass
class Reply:
    text: str = ""
    tool_calls: list[tuple[str, Any]] = field(default_factory=list)  # (name, arguments dict or raw string)
    chunks: int = 3          # text pieces when streaming
    delay: float = 0.0       # seconds between streamed pieces


@dataclass
class Fail:
    status: int = 500
    message: str = "internal error"


@dataclass
class Slow:
    seconds: float
    then: Reply = field(default_factory=lambda: Reply("late answer"))


@dataclass
class Malformed:
    """A reply whose body is not the protocol: a line that is not JSON (Ollama) or tool-call
    arguments that are not JSON (OpenRouter, where the client passes the string on)."""

    raw: str = '{"message": {"role": "assistant", "content": "x", "tool_calls": [{"function": {"name": "get_photo_'
    before: str = ""         # text streamed (as valid parts) before the broken line


@dataclass
class Hang:
    """Stream `first` and then nothing for `seconds` (a model thinking; the client may leave)."""

    first: str = "Thinking"
    seconds: float = 30.0


Step = Reply | Fail | Slow | Malformed | Hang | Callable[[dict[str, Any]], Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def refused_url() -> str:
    """A URL nothing listens on (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"


def embed_text(text: str, dim: int = EMBED_DIM) -> list[float]:
    v = [0.0] * dim
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        if len(word) < 3:
            continue
        h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
        v[h % dim] += 1.0
    n = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / n for x in v]


class StandIn:
    def __init__(self) -> None:
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.requests: list[dict[str, Any]] = []   # {"path", "body", "headers", "at"}
        self.cancelled = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> StandIn:
        self.runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def record(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"_raw": raw.decode("utf-8", "replace")}
        self.requests.append({"path": request.path, "query": dict(request.query), "body": body,
                              "headers": request.headers.copy(), "at": time.monotonic()})
        return body if isinstance(body, dict) else {}


class ChatStandIn(StandIn):
    """Shared by the two chat stand-ins: the script, the known models."""

    def __init__(self, models: list[str] | None = None) -> None:
        super().__init__()
        self._script: list[Step] = [Reply("Title: A day out\n\nA quiet afternoon.")]
        self._step = 0
        self.models = models        # None: any model name is known
        self.chats: list[dict[str, Any]] = []

    @property
    def script(self) -> list[Step]:
        return self._script

    @script.setter
    def script(self, steps: list[Step]) -> None:
        """A new script starts from its first step."""
        self._script = list(steps)
        self._step = 0

    def next_step(self, body: dict[str, Any]) -> Any:
        step = self._script[min(self._step, len(self._script) - 1)]
        self._step += 1
        return step(body) if callable(step) else step

    def unknown_model(self, body: dict[str, Any]) -> bool:
        return self.models is not None and body.get("model") not in self.models


class OllamaStandIn(ChatStandIn):
    def __init__(self, models: list[str] | None = None) -> None:
        super().__init__(models)
        self.app.router.add_post("/api/chat", self.chat)
        self.app.router.add_post("/api/embed", self.embed)
        self.embeds: list[dict[str, Any]] = []
        self.embed_script: list[Fail | None] = []
        self.dim = EMBED_DIM

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        self.chats.append(body)
        if self.unknown_model(body):
            return web.json_response({"error": f"model '{body.get('model')}' not found"}, status=404)
        step = self.next_step(body)
        stream = body.get("stream", True)
        if isinstance(step, Fail):
            return web.json_response({"error": step.message}, status=step.status)
        if isinstance(step, Slow):
            await asyncio.sleep(step.seconds)
            step = step.then
        model = body.get("model", "")
        if isinstance(step, Malformed):
            resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await resp.prepare(request)
            if step.before:
                await resp.write(json.dumps(_ollama_part(model, step.before, None, False)).encode() + b"\n")
            await resp.write(step.raw.encode() + b"\n")
            await resp.write_eof()
            return resp
        if isinstance(step, Hang):
            resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await resp.prepare(request)
            try:
                await resp.write(json.dumps(_ollama_part(model, step.first, None, False)).encode() + b"\n")
                await asyncio.sleep(step.seconds)
            except (asyncio.CancelledError, ConnectionResetError):
                self.cancelled += 1
                raise
            await resp.write(json.dumps(_ollama_part(model, "", None, True)).encode() + b"\n")
            return resp
        assert isinstance(step, Reply)
        calls = [{"function": {"name": n, "arguments": a}} for n, a in step.tool_calls] or None
        if not stream:
            return web.json_response(_ollama_part(model, step.text, calls, True))
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        try:
            for piece in _pieces(step.text, step.chunks):
                await resp.write(json.dumps(_ollama_part(model, piece, None, False)).encode() + b"\n")
                if step.delay:
                    await asyncio.sleep(step.delay)
            if calls:
                await resp.write(json.dumps(_ollama_part(model, "", calls, False)).encode() + b"\n")
            await resp.write(json.dumps(_ollama_part(model, "", None, True)).encode() + b"\n")
        except (asyncio.CancelledError, ConnectionResetError):
            self.cancelled += 1
            raise
        return resp

    async def embed(self, request: web.Request) -> web.Response:
        body = await self.record(request)
        self.embeds.append(body)
        if self.embed_script:
            fail = self.embed_script.pop(0)
            if fail is not None:
                return web.json_response({"error": fail.message}, status=fail.status)
        if self.unknown_model(body):
            return web.json_response({"error": f"model '{body.get('model')}' not found"}, status=404)
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        return web.json_response({"model": body.get("model"), "embeddings": [embed_text(t, self.dim) for t in texts]})


def _pieces(text: str, n: int) -> list[str]:
    if not text:
        return []
    n = max(1, min(n, len(text)))
    size = math.ceil(len(text) / n)
    return [text[i:i + size] for i in range(0, len(text), size)]


def _ollama_part(model: str, content: str, calls: Any, done: bool) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        msg["tool_calls"] = calls
    part: dict[str, Any] = {"model": model, "created_at": "2024-01-01T00:00:00Z", "message": msg, "done": done}
    if done:
        part["done_reason"] = "stop"
    return part


class OpenRouterStandIn(ChatStandIn):
    """Base URL: `url` + "/api/v1" (like https://openrouter.ai/api/v1)."""

    def __init__(self, models: list[str] | None = None) -> None:
        super().__init__(models)
        self.app.router.add_post("/api/v1/chat/completions", self.completions)
        self.app.router.add_post("/api/v1/embeddings", self.embeddings)

    @property
    def base_url(self) -> str:
        return self.url + "/api/v1"

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        self.chats.append(body)
        model = body.get("model", "")
        if self.unknown_model(body):
            return web.json_response({"error": {"message": f"{model} is not a valid model ID", "code": 400}},
                                     status=400)
        step = self.next_step(body)
        if isinstance(step, Fail):
            return web.json_response({"error": {"message": step.message, "code": step.status}}, status=step.status)
        if isinstance(step, Slow):
            await asyncio.sleep(step.seconds)
            step = step.then
        if isinstance(step, Malformed):
            step = Reply("", [("get_photo_metadata", '{"broken": ')])
        if isinstance(step, Hang):
            return await self._hang(request, model, step)
        assert isinstance(step, Reply)
        calls = [{"id": f"call_{i}_{len(self.chats)}", "type": "function",
                  "function": {"name": n, "arguments": a if isinstance(a, str) else json.dumps(a)}}
                 for i, (n, a) in enumerate(step.tool_calls)]
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": step.text or None}
            if calls:
                message["tool_calls"] = calls
            return web.json_response({
                "id": "gen-1", "object": "chat.completion", "created": 1700000000, "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
            })
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            for piece in _pieces(step.text, step.chunks):
                await _sse(resp, _chunk(model, {"content": piece}))
                if step.delay:
                    await asyncio.sleep(step.delay)
            for i, c in enumerate(calls):  # each call's arguments in two fragments, as providers do
                args = c["function"]["arguments"]
                half = len(args) // 2
                await _sse(resp, _chunk(model, {"tool_calls": [{"index": i, "id": c["id"], "type": "function",
                                                                "function": {"name": c["function"]["name"],
                                                                             "arguments": args[:half]}}]}))
                await _sse(resp, _chunk(model, {"tool_calls": [{"index": i, "function": {"arguments": args[half:]}}]}))
            await _sse(resp, _chunk(model, {}, "tool_calls" if calls else "stop"))
            await resp.write(b"data: [DONE]\n\n")
        except (asyncio.CancelledError, ConnectionResetError):
            self.cancelled += 1
            raise
        return resp

    async def _hang(self, request: web.Request, model: str, step: Hang) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            await _sse(resp, _chunk(model, {"content": step.first}))
            await asyncio.sleep(step.seconds)
        except (asyncio.CancelledError, ConnectionResetError):
            self.cancelled += 1
            raise
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await self.record(request)
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        return web.json_response({"object": "list", "model": body.get("model"), "data": [
            {"object": "embedding", "index": i, "embedding": embed_text(t)} for i, t in enumerate(texts)]})


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "gen-1", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


async def _sse(resp: web.StreamResponse, doc: dict[str, Any]) -> None:
    await resp.write(b"data: " + json.dumps(doc).encode() + b"\n\n")


class SmsStandIn(StandIn):
    """GET /api/contacts, GET /api/messages?contact=&date= (docs/sms-api.md)."""

    def __init__(self, token: str | None = None) -> None:
        super().__init__()
        self.token = token
        self.messages: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.contacts: list[str] = []
        self.fail: Fail | None = None
        self.app.router.add_get("/api/contacts", self.get_contacts)
        self.app.router.add_get("/api/messages", self.get_messages)

    def add(self, contact: str, day: str, *texts: str) -> None:
        if contact not in self.contacts:
            self.contacts.append(contact)
        box = self.messages.setdefault((contact, day), [])
        for i, t in enumerate(texts):
            box.append({"timestamp": f"{day}T{9 + i % 12:02d}:{i % 60:02d}:00", "from_me": i % 2 == 0,
                        "sender": "me" if i % 2 == 0 else contact, "text": t})

    def _check(self, request: web.Request) -> web.Response | None:
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "unauthorized"}, status=401)
        if self.fail is not None:
            return web.json_response({"error": self.fail.message}, status=self.fail.status)
        return None

    async def get_contacts(self, request: web.Request) -> web.Response:
        await self.record(request)
        return self._check(request) or web.json_response({"contacts": [{"name": c} for c in self.contacts]})

    async def get_messages(self, request: web.Request) -> web.Response:
        await self.record(request)
        bad = self._check(request)
        if bad is not None:
            return bad
        contact, day = request.query.get("contact", ""), request.query.get("date", "")
        if contact not in self.contacts:
            return web.json_response({"error": "unknown contact"}, status=404)
        return web.json_response({"contact": contact, "date": day, "messages": self.messages.get((contact, day), [])})


class NominatimStandIn(StandIn):
    def __init__(self) -> None:
        super().__init__()
        self.places: list[tuple[float, float, dict[str, Any]]] = []
        self.fail: Fail | None = None
        self.app.router.add_get("/reverse", self.reverse)

    def add(self, lat: float, lon: float, road: str, city: str, country: str, name: str | None = None) -> None:
        self.places.append((lat, lon, {
            "place_id": len(self.places) + 1, "lat": str(lat), "lon": str(lon), "category": "highway",
            "type": "residential", "name": name or "",
            "display_name": ", ".join(p for p in (name, road, city, country) if p),
            "address": {"road": road, "city": city, "country": country, "country_code": "xx"},
        }))

    async def reverse(self, request: web.Request) -> web.Response:
        await self.record(request)
        if self.fail is not None:
            return web.json_response({"error": self.fail.message}, status=self.fail.status)
        lat, lon = float(request.query["lat"]), float(request.query["lon"])
        for plat, plon, doc in self.places:
            if abs(plat - lat) < 0.01 and abs(plon - lon) < 0.01:
                return web.json_response(doc)
        return web.json_response({"error": "Unable to geocode"})


class PlacesStandIn(StandIn):
    """Apollo's Places API: GET /api/places/at?lat=&lon= -> {"place": {"name", "distance_m"} | null}."""

    def __init__(self) -> None:
        super().__init__()
        self.places: list[tuple[float, float, float, str]] = []  # lat, lon, radius in metres, name
        self.app.router.add_get("/api/places/at", self.at)

    async def at(self, request: web.Request) -> web.Response:
        await self.record(request)
        lat, lon = float(request.query["lat"]), float(request.query["lon"])
        for plat, plon, radius, name in self.places:
            d = _metres(lat, lon, plat, plon)
            if d <= radius:
                return web.json_response({"place": {"name": name, "distance_m": d}})
        return web.json_response({"place": None})


def _metres(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371000 * math.asin(math.sqrt(a))


def tool_rounds(rounds: int, chunks: int = 1, delay: float = 0.0) -> Callable[[dict[str, Any]], Reply]:
    """A script step: call get_photo_metadata until `rounds` tool results are in the conversation,
    then answer (streamed in `chunks` pieces, `delay` seconds apart)."""

    def step(body: dict[str, Any]) -> Reply:
        done = sum(1 for m in body.get("messages", []) if m.get("role") == "tool")
        if body.get("tools") and done < rounds:
            return Reply("", [("get_photo_metadata", {})])
        return Reply("Title: Bench\n\nAn instant answer.", chunks=chunks, delay=delay)

    return step


async def _serve(rounds: int, dim: int, chunks: int = 1, delay: float = 0.0) -> None:
    ollama = OllamaStandIn()
    ollama.dim = dim
    ollama.script = [tool_rounds(rounds, chunks, delay)]
    ollama.requests = _Discard()  # a long benchmark must not keep every request
    ollama.chats = _Discard()
    ollama.embeds = _Discard()
    await ollama.start()
    print(f"URL {ollama.url}", flush=True)
    await asyncio.Event().wait()


class _Discard(list[Any]):
    def append(self, item: Any) -> None:
        pass


if __name__ == "__main__":  # an instant Ollama stand-in for bench/bench_insights.py
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="tool rounds before the answer")
    parser.add_argument("--dim", type=int, default=EMBED_DIM, help="embedding length (nomic-embed-text: 768)")
    parser.add_argument("--chunks", type=int, default=1, help="pieces a streamed answer comes in")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between the pieces")
    opts = parser.parse_args()
    try:
        asyncio.run(_serve(opts.rounds, opts.dim, opts.chunks, opts.delay))
    except KeyboardInterrupt:
        pass
