"""The tool loop: ask the model, run the tools it calls, feed the results back, until it answers
without calling a tool or the iteration cap is reached. At the cap the model is asked once more,
with no tools offered, for its final answer.

An iteration is one model call that offered tools; a run makes at most max_iterations + 1 calls.
`emit` (optional) receives the events a streaming client sees: delta, tool_call, tool_result.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from imageapi.core.errors import ServiceError
from imageapi.core.insights.providers import ChatProvider, ChatReply, Failover, Message
from imageapi.core.insights.store import NewMessage, ToolRecord, result_text
from imageapi.core.insights.tools import Toolbox

log = logging.getLogger(__name__)

Emit = Callable[[str, dict[str, Any]], Awaitable[None]]

FINAL_NUDGE = ("You have used every tool call allowed for this answer. Do not call tools now: give your final "
               "answer with what you have gathered.")
MAX_TITLE_CHARS = 120


@dataclass
class AgentRun:
    final: ChatReply
    new_messages: list[NewMessage]       # tool scaffolding, then the final assistant message
    tools: list[ToolRecord]
    rounds: int
    capped: bool
    failovers: list[Failover] = field(default_factory=list)
    model_seconds: float = 0.0
    tool_seconds: float = 0.0
    seconds: float = 0.0

    def timings(self) -> dict[str, Any]:
        return {"total_ms": round(self.seconds * 1000, 1), "model_ms": round(self.model_seconds * 1000, 1),
                "tools_ms": round(self.tool_seconds * 1000, 1), "rounds": self.rounds, "capped": self.capped}


async def run_agent(provider: ChatProvider, messages: Sequence[Message], toolbox: Toolbox | None,
                    max_iterations: int, emit: Emit | None = None) -> AgentRun:
    """Run the loop over `messages` (system prompt first). Raises ProviderError/ProviderRejected
    from the provider; tool failures are results the model reads."""
    started = time.monotonic()
    convo = list(messages)
    new: list[NewMessage] = []
    records: list[ToolRecord] = []
    failovers: list[Failover] = []
    model_s = tool_s = 0.0
    specs = toolbox.specs() if toolbox is not None and max_iterations > 0 else None

    async def on_delta(text: str) -> None:
        assert emit is not None
        await emit("delta", {"text": text})

    delta = on_delta if emit is not None else None
    rounds = 0
    capped = False
    while True:
        offer = specs if (specs and rounds < max_iterations) else None
        if specs and offer is None:
            capped = True
            convo.append(Message("user", FINAL_NUDGE))  # not stored: the transcript keeps the model's turns
        reply = await provider.chat(convo, offer, delta)
        model_s += reply.seconds
        failovers += reply.failovers
        if offer is None or not reply.tool_calls:
            break
        rounds += 1
        assistant = Message("assistant", reply.content, tool_calls=reply.tool_calls)
        convo.append(assistant)
        new.append(NewMessage(assistant, reply.backend, reply.server, reply.model))
        assert toolbox is not None
        for call in reply.tool_calls:
            if emit is not None:
                await emit("tool_call", {"id": call.id, "name": call.name, "arguments": call.arguments})
            record = await toolbox.run(call)
            tool_s += record.ms / 1000
            records.append(record)
            if emit is not None:
                await emit("tool_result", {"id": call.id, "name": call.name, "result": record.result})
            msg = Message("tool", result_text(record.result), tool_call_id=call.id, name=call.name)
            convo.append(msg)
            new.append(NewMessage(msg))
    text = reply.content.strip()
    if not text:
        raise ServiceError(f"{reply.model} at {reply.server} answered with no text")
    final = Message("assistant", text)
    new.append(NewMessage(final, reply.backend, reply.server, reply.model))
    run = AgentRun(reply, new, records, rounds, capped, failovers, model_s, tool_s, time.monotonic() - started)
    log.info("%s (%s) at %s answered after %d tool round%s%s, %d tool calls, %.1f s%s", reply.model, reply.backend,
             reply.server, rounds, "" if rounds == 1 else "s", " (capped)" if capped else "", len(records),
             run.seconds, f"; {len(failovers)} failover(s)" if failovers else "")
    return run


_TITLE_LINE = re.compile(r"^\s*(?:#+\s*|\*\*\s*)?(?:title\s*[:\-–]\s*)?(?P<t>.+?)\s*(?:\*\*)?\s*$", re.IGNORECASE)


def split_title(text: str) -> tuple[str, str]:
    """(title, body) from a model's answer: a first line 'Title: ...' (or a Markdown heading) is
    the title; otherwise the first sentence, shortened."""
    text = text.strip()
    first, _, rest = text.partition("\n")
    low = first.strip().lower().lstrip("#* ").strip()
    if low.startswith("title") or first.lstrip().startswith("#"):
        m = _TITLE_LINE.match(first)
        title = (m.group("t") if m else first).strip().strip("*\"'").strip()
        if title.lower().startswith("title"):
            title = title[5:].lstrip(" :-–").strip()
        body = rest.strip()
        if title and body:
            return title[:MAX_TITLE_CHARS], body
    sentence = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    title = sentence if len(sentence) <= 80 else sentence[:77].rsplit(" ", 1)[0] + "..."
    return title.rstrip("."), text
