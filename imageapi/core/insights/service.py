"""Insights for one process: generate an insight, continue its conversation (or amend it), show
and rewind the transcript. The HTTP routes and the CLI are thin layers over `InsightService`.

Nothing is written until the model has finished: a failed or cancelled request stores nothing.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from imageapi.core.config import Config
from imageapi.core.db import Connection
from imageapi.core.errors import NotFoundError, UsageError
from imageapi.core.files import get_file_row, taken_at_iso
from imageapi.core.insights.agent import Emit, run_agent, split_title
from imageapi.core.insights.geo import ApolloPlaces, Nominatim
from imageapi.core.insights.providers import Backends, Message
from imageapi.core.insights.settings import InsightSettings
from imageapi.core.insights.store import InsightDraft, InsightStore, NewMessage, render
from imageapi.core.insights.summaries import SummaryIndex
from imageapi.core.insights.tools import Photo, RenderImage, Toolbox
from imageapi.core.libraries import Library

log = logging.getLogger(__name__)

MAX_USER_MESSAGE_CHARS = 8000

SYSTEM = (
    "You write short, grounded insights about one photo from the user's own library: where and when it was "
    "taken, who was there, and what was going on that day. Gather facts with the tools before you write. Never "
    "invent names, places or events the tools did not give you; when something is unknown, leave it out. Write "
    "warmly and plainly, in the second person when it fits."
)
FORMAT = ("Answer with a first line 'Title: <a title of at most eight words>', then a blank line, then two to "
          "five sentences.")
CHAT = ("The user is now talking with you about this photo and your insight. Answer briefly and use the tools "
        "when a question needs facts you do not have yet.")
AMEND = ("Rewrite the insight about this photo so that it takes the whole conversation, and this last message, "
         "into account.")
GENERATE_REQUEST = "Write an insight about this photo."


def photo_context(photo: Photo) -> str:
    row = photo.row
    bits = [f"The photo is '{photo.rel_path}' in the library '{photo.library.name}'"]
    taken = taken_at_iso(row["taken_at"], row["taken_at_offset"])
    if taken:
        bits.append(f"taken {taken}")
    return ", ".join(bits) + f". Today is {date.today().isoformat()}."


class InsightService:
    def __init__(self, config: Config, db: Connection, settings: InsightSettings,
                 backends: Backends | None = None) -> None:
        self.config, self.db, self.settings = config, db, settings
        self.store = InsightStore(db)
        self.backends = backends or Backends(settings)
        self.index = SummaryIndex(db)
        self.nominatim = Nominatim(settings, self.store)
        self.places = ApolloPlaces(settings.apollo_url) if settings.apollo_url else None

    async def aclose(self) -> None:
        await self.backends.aclose()
        await self.nominatim.aclose()
        if self.places is not None:
            await self.places.aclose()

    async def photo(self, lib: Library, rel: str) -> Photo:
        row = await get_file_row(self.db, lib, rel)
        if not row["content_hash"]:
            raise UsageError(f"{rel!r} is not hashed yet; insights belong to content (try again after the next scan)")
        if row["kind"] not in ("image", "heic", "raw", "video"):
            raise UsageError(f"{rel!r} is not a photo or a video")
        return Photo(lib, rel, row)

    def toolbox(self, photo: Photo, render_image: RenderImage | None) -> Toolbox:
        return Toolbox(config=self.config, db=self.db, photo=photo, backends=self.backends, index=self.index,
                       nominatim=self.nominatim, places=self.places, render_image=render_image,
                       timeout=self.settings.tool_timeout)

    def clamp(self, requested: int | None) -> int:
        cap = self.settings.chat_max_iterations
        if requested is None:
            return cap
        return max(0, min(cap, requested))

    async def generate(self, photo: Photo, *, backend: str | None = None, model: str | None = None,
                       render_image: RenderImage | None = None, emit: Emit | None = None) -> dict[str, Any]:
        """A new insight, starting a new conversation thread."""
        provider = self.backends.chat_provider(backend, model)
        request = Message("user", GENERATE_REQUEST)
        system = Message("system", f"{SYSTEM} {photo_context(photo)} {FORMAT}")
        run = await run_agent(provider, [system, request], self.toolbox(photo, render_image),
                              self.settings.max_iterations, emit)
        title, body = split_title(run.final.content)
        draft = InsightDraft(title, body, run.tools, run.final.backend, run.final.server, run.final.model,
                             run.failovers, run.timings())
        insight = await self.store.add_insight(photo.content_hash, draft,
                                               transcript=[NewMessage(request), *run.new_messages])
        log.info("insight %d for %s/%s by %s (%s) at %s%s", insight["id"], photo.library.name, photo.rel_path,
                 draft.model, draft.backend, draft.server,
                 "; failovers: " + ", ".join(f"{f.url} ({f.reason})" for f in draft.failovers) if draft.failovers
                 else "")
        return insight

    async def insights(self, photo: Photo) -> list[dict[str, Any]]:
        return await self.store.list_insights(photo.content_hash)

    async def _thread(self, photo: Photo) -> tuple[dict[str, Any], list[Any]]:
        insight = await self.store.latest_or_404(photo.content_hash, photo.rel_path)
        return insight, await self.store.thread(insight["thread_id"])

    async def history(self, photo: Photo) -> dict[str, Any]:
        insight, stored = await self._thread(photo)
        return {"library": photo.library.name, "path": photo.rel_path, "insight_id": insight["id"],
                "thread_id": insight["thread_id"], "messages": [r.to_json() for r in render(stored)]}

    async def rewind(self, photo: Photo, index: int) -> dict[str, Any]:
        insight = await self.store.latest_or_404(photo.content_hash, photo.rel_path)
        kept = await self.store.rewind(insight["thread_id"], index)
        return {"library": photo.library.name, "path": photo.rel_path, "insight_id": insight["id"],
                "thread_id": insight["thread_id"], "messages": [r.to_json() for r in kept]}

    async def chat(self, photo: Photo, text: str, *, backend: str | None = None, model: str | None = None,
                   max_iterations: int | None = None, amend: bool = False,
                   render_image: RenderImage | None = None, emit: Emit | None = None) -> dict[str, Any]:
        """One chat turn. With `amend`, the answer is a rewritten insight stored as a new insight row
        of the same thread, and the transcript is left as it was."""
        text = text.strip()
        if not text:
            raise UsageError("the message is empty")
        if len(text) > MAX_USER_MESSAGE_CHARS:
            raise UsageError(f"the message is longer than {MAX_USER_MESSAGE_CHARS} characters")
        provider = self.backends.chat_provider(backend, model)
        insight, stored = await self._thread(photo)
        if not stored:
            raise NotFoundError("the conversation of this insight is empty")
        history = [sm.message for sm in stored]
        last_seq = stored[-1].seq
        rounds = self.clamp(max_iterations)
        toolbox = self.toolbox(photo, render_image)
        system_text = f"{SYSTEM} {photo_context(photo)} Your current insight is titled {insight['title']!r}."
        if amend:
            system = Message("system", f"{system_text} {AMEND} {FORMAT}")
            run = await run_agent(provider, [system, *history, Message("user", text)], toolbox, rounds, emit)
            title, body = split_title(run.final.content)
            draft = InsightDraft(title, body, run.tools, run.final.backend, run.final.server, run.final.model,
                                 run.failovers, run.timings())
            new = await self.store.add_insight(photo.content_hash, draft, thread_id=insight["thread_id"],
                                               amended_from=insight["id"])
            log.info("insight %d amends %d (%s) by %s at %s", new["id"], insight["id"], photo.rel_path, draft.model,
                     draft.server)
            return {"amended": True, "insight": new}
        system = Message("system", f"{system_text} {CHAT}")
        user = Message("user", text)
        run = await run_agent(provider, [system, *history, user], toolbox, rounds, emit)
        await self.store.append(insight["thread_id"], last_seq, [NewMessage(user), *run.new_messages])
        rendered = render(await self.store.thread(insight["thread_id"]))
        reply = rendered[-1]
        return {"amended": False, "insight_id": insight["id"], "thread_id": insight["thread_id"],
                "message": reply.to_json(), "failovers": [f.to_json() for f in run.failovers],
                "timings": run.timings()}
