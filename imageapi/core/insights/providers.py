"""The model servers behind one small interface: `ChatProvider.chat(messages, tools, on_delta)`.

Two implementations, each on the vendor's own client (they track the wire formats, streaming and
error shapes so we do not have to):
- OllamaChat (the `ollama` package): the primary server, then the fallback on any failure that
  happens before the first streamed byte reached the caller (connect refused or slower than the
  connect timeout, 5xx, a 4xx such as an unknown model, an answer that is not valid, a request
  longer than the request timeout). Every failover is logged and returned with the reply.
- OpenRouterChat (the `openai` package; OpenRouter speaks the OpenAI chat-completions API): the
  hybrid backend's chat and tool calling. A 4xx (an unknown model, a bad key) is passed on as
  ProviderRejected with the provider's status and message.
Embeddings and image descriptions always go to Ollama (`Backends.embed`, `Backends.describe_image`).

Messages travel in a neutral form (`Message`, `ToolCall`) that each provider turns into its own.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import ollama

from imageapi.core.errors import ServiceError, UsageError
from imageapi.core.insights.settings import InsightSettings, OllamaServer

log = logging.getLogger(__name__)

MAX_EMBED_DIM = 8192
MAX_REPLY_CHARS = 200_000      # a reply longer than this is cut: a runaway model cannot fill memory
MAX_TOOL_CALLS_PER_REPLY = 16

DeltaFn = Callable[[str], Awaitable[None]]


class ProviderError(ServiceError):
    """No model server could answer. `tried` lists "url (model): reason" for each attempt."""

    def __init__(self, message: str, tried: list[str] | None = None) -> None:
        super().__init__(message)
        self.tried = tried or []


class ProviderRejected(UsageError):
    """The provider refused the request with a 4xx (an unknown model, a bad key, a refused input).
    `status` is the provider's HTTP status, passed on to the client."""

    code = "provider_rejected"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ModelNotAllowed(UsageError):
    """A model the request may not choose (outside OPENROUTER_ALLOWED_MODELS)."""

    code = "model_not_allowed"


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    error: str | None = None   # the model's arguments were not a JSON object: why (fed back to it)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name, "arguments": self.arguments}
        if self.error:
            out["error"] = self.error
        return out

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ToolCall:
        return cls(str(doc.get("id") or ""), str(doc.get("name") or ""), dict(doc.get("arguments") or {}),
                   doc.get("error"))


@dataclass
class Message:
    role: str                                   # system, user, assistant, tool
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None             # role tool: the call it answers
    name: str | None = None                     # role tool: the tool's name
    images: list[bytes] = field(default_factory=list)  # JPEGs (vision requests only)


@dataclass(frozen=True)
class Failover:
    url: str
    model: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"url": self.url, "model": self.model, "reason": self.reason}


@dataclass
class ChatReply:
    content: str
    tool_calls: list[ToolCall]
    backend: str
    server: str
    model: str
    failovers: list[Failover]
    seconds: float


class ChatProvider(Protocol):
    backend: str

    async def chat(self, messages: Sequence[Message], tools: list[dict[str, Any]] | None,
                   on_delta: DeltaFn | None = None) -> ChatReply: ...

    def targets(self) -> list[str]: ...


def _short(text: object, limit: int = 300) -> str:
    s = " ".join(str(text).split()) or "no detail"
    return s if len(s) <= limit else s[:limit] + "..."


def parse_arguments(raw: object) -> tuple[dict[str, Any], str | None]:
    """A tool call's arguments as a dict, or ({}, why) when the model sent something else."""
    if isinstance(raw, dict):
        return raw, None
    if raw is None or raw == "":
        return {}, None
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            return {}, f"arguments are not valid JSON ({exc.msg} at {exc.pos}): {raw[:200]!r}"
        except RecursionError:
            return {}, "arguments are not valid JSON (nested too deeply)"
        if isinstance(value, dict):
            return value, None
        return {}, f"arguments must be a JSON object, got {type(value).__name__}"
    return {}, f"arguments must be a JSON object, got {type(raw).__name__}"


class _Streamed:
    """Whether any text reached the caller: after that, failing over would repeat it."""

    def __init__(self, on_delta: DeltaFn | None) -> None:
        self.on_delta = on_delta
        self.any = False

    async def __call__(self, text: str) -> None:
        if text and self.on_delta is not None:
            self.any = True
            await self.on_delta(text)


# --------------------------------------------------------------------------------------- Ollama


class OllamaClients:
    """One `ollama.AsyncClient` (an httpx pool) per server URL, shared by every request."""

    def __init__(self, settings: InsightSettings) -> None:
        self.settings = settings
        self._clients: dict[str, ollama.AsyncClient] = {}

    def client(self, url: str) -> ollama.AsyncClient:
        c = self._clients.get(url)
        if c is None:
            timeout = httpx.Timeout(self.settings.request_timeout, connect=self.settings.connect_timeout)
            c = ollama.AsyncClient(host=url, timeout=timeout, follow_redirects=False)
            self._clients[url] = c
        return c

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for c in clients.values():
            await c._client.aclose()

    async def each(self, servers: Sequence[OllamaServer], what: str, streamed: _Streamed | None,
                   call: Callable[[ollama.AsyncClient, OllamaServer], Awaitable[Any]]) -> tuple[Any, OllamaServer,
                                                                                              list[Failover]]:
        """`call` on each server in turn until one succeeds; ProviderError naming every attempt."""
        failovers: list[Failover] = []
        for server in servers:
            try:
                async with asyncio.timeout(self.settings.request_timeout):
                    result = await call(self.client(server.url), server)
                return result, server, failovers
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure of one server is a reason to try the next
                reason = describe_ollama_error(exc, self.settings)
                failovers.append(Failover(server.url, server.model, reason))
                if streamed is not None and streamed.any:
                    raise ProviderError(f"{what}: {server.url} ({server.model}) failed mid-answer: {reason}",
                                        [f"{server.url} ({server.model}): {reason}"]) from None
                log.warning("%s: %s (%s) failed: %s%s", what, server.url, server.model, reason,
                            "; trying the next server" if server is not servers[-1] else "")
        tried = [f"{f.url} ({f.model}): {f.reason}" for f in failovers]
        raise ProviderError(f"{what}: no Ollama server answered; tried " + "; ".join(tried), tried)


def describe_ollama_error(exc: BaseException, settings: InsightSettings) -> str:
    if isinstance(exc, ollama.ResponseError):
        return f"HTTP {exc.status_code}: {_short(exc.error)}" if exc.status_code > 0 else _short(exc.error)
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {settings.connect_timeout:g} s"
    if isinstance(exc, ConnectionError | httpx.ConnectError):
        return "connection refused or unreachable"
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return f"no complete answer within {settings.request_timeout:g} s"
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}: {_short(exc)}"
    if isinstance(exc, ValueError):  # JSON that does not parse, or pydantic's ValidationError
        return f"malformed answer: {_short(exc, 200)}"
    if isinstance(exc, ProviderError):
        return exc.message
    return f"{type(exc).__name__}: {_short(exc)}"


def _to_ollama(messages: Sequence[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        d: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            d["tool_calls"] = [{"function": {"name": c.name, "arguments": c.arguments}} for c in m.tool_calls]
        if m.role == "tool" and m.name:
            d["tool_name"] = m.name
        if m.images:
            d["images"] = [base64.b64encode(i).decode() for i in m.images]
        out.append(d)
    return out


def new_call_id() -> str:
    """Ollama's tool calls carry no id: ours pair each call with its result in the transcript."""
    return f"call_{secrets.token_hex(6)}"


def _ollama_calls(raw: Sequence[Any] | None) -> list[ToolCall]:
    calls: list[ToolCall] = []
    for c in raw or []:
        fn = c.function
        args, error = parse_arguments(fn.arguments)
        calls.append(ToolCall(id=new_call_id(), name=str(fn.name), arguments=args, error=error))
    return calls


class OllamaChat:
    backend = "local"

    def __init__(self, clients: OllamaClients, servers: Sequence[OllamaServer]) -> None:
        self.clients = clients
        self.servers = list(servers)

    def targets(self) -> list[str]:
        return [f"{s.url} ({s.model})" for s in self.servers]

    async def chat(self, messages: Sequence[Message], tools: list[dict[str, Any]] | None,
                   on_delta: DeltaFn | None = None) -> ChatReply:
        started = time.monotonic()
        streamed = _Streamed(on_delta)
        wire = _to_ollama(messages)

        async def one(client: ollama.AsyncClient, server: OllamaServer) -> tuple[str, list[ToolCall]]:
            if on_delta is None:
                resp = await client.chat(model=server.model, messages=wire, tools=tools or None, stream=False)
                calls = _ollama_calls(resp.message.tool_calls)
                return (resp.message.content or "")[:MAX_REPLY_CHARS], calls
            text: list[str] = []
            size = 0
            calls = []
            stream: Any = await client.chat(model=server.model, messages=wire, tools=tools or None, stream=True)
            async with contextlib.aclosing(stream):  # an async generator: closed (its request too) on any exit
                async for part in stream:
                    piece = part.message.content or ""
                    if piece and size < MAX_REPLY_CHARS:
                        piece = piece[: MAX_REPLY_CHARS - size]
                        size += len(piece)
                        text.append(piece)
                        await streamed(piece)
                    calls += _ollama_calls(part.message.tool_calls)
            return "".join(text), calls

        (content, calls), server, failovers = await self.clients.each(self.servers, "chat", streamed, one)
        return ChatReply(content, calls[:MAX_TOOL_CALLS_PER_REPLY], self.backend, server.url, server.model,
                         failovers, time.monotonic() - started)


# ----------------------------------------------------------------------------------- OpenRouter


def _to_openai(messages: Sequence[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content})
            continue
        d: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            d["tool_calls"] = [{"id": c.id, "type": "function",
                                "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                               for c in m.tool_calls]
        out.append(d)
    return out


class OpenRouterChat:
    backend = "hybrid"

    def __init__(self, settings: InsightSettings, model: str) -> None:
        import openai  # imported on first use: a large package that local-only set-ups never need

        self.settings = settings
        self.model = model
        self.base_url = settings.openrouter_base_url
        headers = {}
        if settings.openrouter_http_referer:
            headers["HTTP-Referer"] = settings.openrouter_http_referer
        if settings.openrouter_app_title:
            headers["X-Title"] = settings.openrouter_app_title
        self._openai = openai
        self.client = openai.AsyncOpenAI(
            api_key=settings.openrouter_api_key, base_url=settings.openrouter_base_url,
            default_headers=headers or None, max_retries=0,
            timeout=openai.Timeout(settings.request_timeout, connect=settings.connect_timeout),
        )

    def targets(self) -> list[str]:
        return [f"{self.base_url} ({self.model})"]

    async def aclose(self) -> None:
        await self.client.close()

    async def chat(self, messages: Sequence[Message], tools: list[dict[str, Any]] | None,
                   on_delta: DeltaFn | None = None) -> ChatReply:
        started = time.monotonic()
        kwargs: dict[str, Any] = {"model": self.model, "messages": _to_openai(messages)}
        if tools:
            kwargs["tools"] = tools
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                if on_delta is None:
                    content, calls = await self._plain(kwargs)
                else:
                    content, calls = await self._stream(kwargs, on_delta)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # classified below
            raise self._classify(exc) from None
        return ChatReply(content, calls[:MAX_TOOL_CALLS_PER_REPLY], self.backend, self.base_url, self.model, [],
                         time.monotonic() - started)

    async def _plain(self, kwargs: dict[str, Any]) -> tuple[str, list[ToolCall]]:
        resp = await self.client.chat.completions.create(**kwargs)
        if not resp.choices:
            raise ValueError("the answer has no choices")
        msg = resp.choices[0].message
        calls = []
        for c in msg.tool_calls or []:
            fn = getattr(c, "function", None)
            if fn is None:
                continue
            args, error = parse_arguments(fn.arguments)
            calls.append(ToolCall(id=c.id or new_call_id(), name=fn.name, arguments=args, error=error))
        return (msg.content or "")[:MAX_REPLY_CHARS], calls

    async def _stream(self, kwargs: dict[str, Any], on_delta: DeltaFn) -> tuple[str, list[ToolCall]]:
        text: list[str] = []
        size = 0
        pending: dict[int, dict[str, str]] = {}  # tool calls arrive in fragments, by index
        stream = await self.client.chat.completions.create(stream=True, **kwargs)
        async with stream:
            async for chunk in stream:
                if not chunk.choices:
                    continue
                delta = chunk.choices[0].delta
                if delta.content and size < MAX_REPLY_CHARS:
                    piece = delta.content[: MAX_REPLY_CHARS - size]
                    size += len(piece)
                    text.append(piece)
                    await on_delta(piece)
                for tc in delta.tool_calls or []:
                    if tc.index >= MAX_TOOL_CALLS_PER_REPLY:
                        continue
                    slot = pending.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                    slot["id"] = tc.id or slot["id"]
                    if tc.function is not None:
                        slot["name"] += tc.function.name or ""
                        if len(slot["arguments"]) < MAX_REPLY_CHARS:
                            slot["arguments"] += tc.function.arguments or ""
        calls = []
        for i in sorted(pending):
            slot = pending[i]
            args, error = parse_arguments(slot["arguments"])
            calls.append(ToolCall(id=slot["id"] or new_call_id(), name=slot["name"], arguments=args, error=error))
        return "".join(text), calls

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                resp = await self.client.embeddings.create(model=self.model, input=list(texts))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise self._classify(exc) from None
        return _check_vectors([d.embedding for d in sorted(resp.data, key=lambda d: d.index)], len(texts))

    def _classify(self, exc: BaseException) -> Exception:
        openai = self._openai
        where = f"OpenRouter at {self.base_url} (model {self.model})"
        if isinstance(exc, openai.APIStatusError):
            detail = _provider_message(exc.body) or _short(exc.message)
            if 400 <= exc.status_code < 500 and exc.status_code not in (408, 429):
                return ProviderRejected(f"{where} refused the request: HTTP {exc.status_code}: {detail}",
                                        exc.status_code)
            return ProviderError(f"{where} failed: HTTP {exc.status_code}: {detail}",
                                 [f"{self.base_url} ({self.model}): HTTP {exc.status_code}"])
        if isinstance(exc, openai.APITimeoutError | TimeoutError):
            reason = f"no complete answer within {self.settings.request_timeout:g} s"
        elif isinstance(exc, openai.APIConnectionError):
            reason = "connection refused or unreachable"
        elif isinstance(exc, ValueError | openai.APIError):
            reason = f"malformed answer: {_short(exc, 200)}"
        else:
            reason = f"{type(exc).__name__}: {_short(exc)}"
        log.warning("%s: %s", where, reason)
        return ProviderError(f"{where}: {reason}", [f"{self.base_url} ({self.model}): {reason}"])


def _provider_message(body: object) -> str | None:
    """OpenRouter's {"error": {"message": ...}} (or OpenAI's), when the body has it."""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return _short(err["message"])
        if isinstance(body.get("message"), str):
            return _short(body["message"])
    return None


# ------------------------------------------------------------------------------------ Backends


@dataclass
class Embedding:
    vectors: list[list[float]]
    model: str
    server: str


@dataclass
class Description:
    text: str
    model: str
    server: str
    failovers: list[Failover]


class Backends:
    """Everything that talks to a model, for one process: pick a chat provider per request
    (allowlist checked), embed text, describe an image."""

    def __init__(self, settings: InsightSettings) -> None:
        self.settings = settings
        self.ollama = OllamaClients(settings)
        self._openrouter: dict[str, OpenRouterChat] = {}

    async def aclose(self) -> None:
        await self.ollama.aclose()
        routers, self._openrouter = self._openrouter, {}
        for r in routers.values():
            await r.aclose()

    def allowed_models(self) -> list[str]:
        return list(self.settings.openrouter_allowed_models)

    def chat_provider(self, backend: str | None, model: str | None = None) -> ChatProvider:
        """The provider for a request. UsageError for an unknown backend, hybrid without a key, or
        a model outside what may be chosen."""
        s = self.settings
        backend = backend or "local"
        if backend == "local":
            servers = s.ollama_servers
            if model is not None:
                if model not in {srv.model for srv in servers}:
                    raise UsageError(f"model {model!r} is not one of the configured Ollama models "
                                     f"({', '.join(sorted({srv.model for srv in servers}))})")
                servers = [srv for srv in servers if srv.model == model] or servers
            return OllamaChat(self.ollama, servers)
        if backend == "hybrid":
            if not s.hybrid_enabled:
                raise UsageError("the hybrid backend is not enabled (OPENROUTER_API_KEY is not set)")
            chosen = model or s.openrouter_default_model
            if model is not None and model != s.openrouter_default_model and model not in s.openrouter_allowed_models:
                allowed = ", ".join(s.openrouter_allowed_models) or "none: only the default model"
                raise ModelNotAllowed(f"model {model!r} is not in OPENROUTER_ALLOWED_MODELS (allowed: {allowed})")
            return self._router(chosen)
        raise UsageError(f"unknown backend {backend!r} (local or hybrid)")

    def summary_provider(self) -> ChatProvider:
        s = self.settings
        if s.summary_model:
            return OllamaChat(self.ollama, [OllamaServer(srv.url, s.summary_model) for srv in s.ollama_servers])
        return OllamaChat(self.ollama, s.ollama_servers)

    def _router(self, model: str) -> OpenRouterChat:
        router = self._openrouter.get(model)
        if router is None:
            router = self._openrouter[model] = OpenRouterChat(self.settings, model)
        return router

    async def embed(self, texts: Sequence[str]) -> Embedding:
        """Embeddings through Ollama (primary, then fallback), checked for shape. When no Ollama
        server answers and OPENROUTER_EMBEDDING_MODEL is set (with a key), OpenRouter's: the model
        is recorded with each vector and only vectors of one model are ever compared."""
        s = self.settings
        servers = [OllamaServer(srv.url, s.embedding_model) for srv in s.ollama_servers]

        async def one(client: ollama.AsyncClient, server: OllamaServer) -> list[list[float]]:
            resp = await client.embed(model=server.model, input=list(texts))
            return _check_vectors(resp.embeddings, len(texts))

        try:
            vectors, server, _ = await self.ollama.each(servers, "embeddings", None, one)
        except ProviderError:
            if not (s.openrouter_embedding_model and s.hybrid_enabled):
                raise
            log.warning("embeddings: no Ollama server answered; using OpenRouter's %s", s.openrouter_embedding_model)
            router = self._router(s.openrouter_embedding_model)
            return Embedding(await router.embed(texts), router.model, router.base_url)
        return Embedding(vectors, server.model, server.url)

    async def describe_image(self, jpeg: bytes, prompt: str) -> Description:
        """What the vision model sees in the picture."""
        s = self.settings
        servers = [OllamaServer(srv.url, s.vision_model) for srv in s.ollama_servers]
        msg = _to_ollama([Message("user", prompt, images=[jpeg])])

        async def one(client: ollama.AsyncClient, server: OllamaServer) -> str:
            resp = await client.chat(model=server.model, messages=msg, stream=False)
            return (resp.message.content or "").strip()[:MAX_REPLY_CHARS]

        text, server, failovers = await self.ollama.each(servers, "image description", None, one)
        return Description(text, server.model, server.url, failovers)


def _check_vectors(raw: Sequence[Sequence[float]], expected: int) -> list[list[float]]:
    if len(raw) != expected:
        raise ValueError(f"{len(raw)} embeddings for {expected} inputs")
    out: list[list[float]] = []
    dim: int | None = None
    for v in raw:
        vec = [float(x) for x in v]
        if not vec or len(vec) > MAX_EMBED_DIM or not all(math.isfinite(x) for x in vec):
            raise ValueError(f"an embedding must have 1..{MAX_EMBED_DIM} finite numbers")
        if dim is not None and len(vec) != dim:
            raise ValueError("embeddings of different lengths")
        dim = len(vec)
        out.append(vec)
    return out
