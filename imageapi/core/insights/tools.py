"""The tools the model may call while writing an insight or a chat reply.

Each tool works on the photo the conversation is about; arguments are checked, every call has a
timeout, and a failure becomes the tool's result ({"error": ...}) for the model to read: a tool
never ends the conversation. Results are bounded (MAX_RESULT_CHARS in store.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from imageapi.core.config import Config
from imageapi.core.db import Connection, Row
from imageapi.core.errors import ImageapiError, UsageError
from imageapi.core.files import describe_row, taken_at_iso
from imageapi.core.insights.geo import ApolloPlaces, Nominatim, check_position, short_address
from imageapi.core.insights.providers import Backends, ToolCall
from imageapi.core.insights.store import ToolRecord
from imageapi.core.insights.summaries import SummaryIndex, search_summaries
from imageapi.core.libraries import Library
from imageapi.core.repositories import insights as insights_repo
from imageapi.core.tags import tags_for_hashes

RenderImage = Callable[[], Awaitable[bytes]]  # the photo as an upright JPEG, made off the event loop

SAME_DAY_DEFAULT = 20
SAME_DAY_MAX = 100
SUMMARY_WINDOW_DEFAULT = 3
VISION_PROMPT = ("Describe this photo in 3 to 5 factual sentences: the setting, the people (how many, what "
                 "they are doing, no guesses about identity), notable objects, the weather and time of day.")
METADATA_FIELDS = ("path", "kind", "taken_at", "taken_at_source", "make", "model", "lens", "width", "height",
                   "gps_lat", "gps_lon", "gps_alt", "exposure_time", "f_number", "iso", "focal_length", "duration")


def _fn(name: str, description: str, properties: dict[str, Any] | None = None,
        required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": properties or {}, "required": required or []},
    }}


POSITION = {"lat": {"type": "number", "description": "latitude; default: the photo's"},
            "lon": {"type": "number", "description": "longitude; default: the photo's"}}


@dataclass
class Photo:
    library: Library
    rel_path: str
    row: Row

    @property
    def content_hash(self) -> str:
        return str(self.row["content_hash"])

    @property
    def day(self) -> date | None:
        taken = self.row["taken_at"]
        try:
            return date.fromisoformat(taken[:10]) if taken else None
        except ValueError:
            return None


class Toolbox:
    def __init__(self, *, config: Config, db: Connection, photo: Photo, backends: Backends,
                 index: SummaryIndex, nominatim: Nominatim, places: ApolloPlaces | None,
                 render_image: RenderImage | None, timeout: float) -> None:
        self.config, self.db, self.photo = config, db, photo
        self.backends, self.index, self.nominatim, self.places = backends, index, nominatim, places
        self.render_image = render_image
        self.timeout = timeout
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "get_photo_metadata": self.photo_metadata,
            "reverse_geocode": self.reverse_geocode,
            "get_photos_same_day": self.same_day,
            "search_conversation_summaries": self.search,
        }
        if places is not None:
            self._handlers["get_personal_place_at"] = self.personal_place
        if render_image is not None:
            self._handlers["describe_image"] = self.describe_image

    def specs(self) -> list[dict[str, Any]]:
        specs = [
            _fn("get_photo_metadata", "The photo's stored facts: when it was taken, camera and lens, size, GPS "
                "position, the faces found and the people they belong to, and its tags."),
            _fn("reverse_geocode", "The address of a GPS position (by default the photo's), with the user's own "
                "name for the place (Home, Work...) when there is one.", POSITION),
            _fn("get_photos_same_day", "Other photos taken the same day as this one: time, place, people, tags.",
                {"limit": {"type": "integer", "description": f"at most this many (default {SAME_DAY_DEFAULT})"}}),
            _fn("search_conversation_summaries", "Search the daily summaries of the user's text conversations, "
                "by meaning. By default only days near the photo's date.",
                {"query": {"type": "string", "description": "what to look for"},
                 "days_around": {"type": "integer", "description": "days either side of the photo's date "
                                 f"(default {SUMMARY_WINDOW_DEFAULT}; -1: any date)"},
                 "limit": {"type": "integer", "description": "at most this many (default 5)"}}, ["query"]),
        ]
        if self.places is not None:
            specs.insert(2, _fn("get_personal_place_at", "The user's own name for a position (Home, Work, Cabin), "
                                "from their saved places; null when it is none of them.", POSITION))
        if self.render_image is not None:
            specs.append(_fn("describe_image", "What is visible in the photo, described by a vision model.",
                             {"question": {"type": "string", "description": "something specific to look for"}}))
        return specs

    async def run(self, call: ToolCall) -> ToolRecord:
        started = time.monotonic()
        record = ToolRecord(call.id, call.name, call.arguments, None)
        handler = self._handlers.get(call.name)
        try:
            if call.error:
                raise UsageError(call.error)
            if handler is None:
                raise UsageError(f"there is no tool named {call.name!r} (tools: {', '.join(sorted(self._handlers))})")
            async with asyncio.timeout(self.timeout):
                record.result = await handler(call.arguments)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            record.error = f"{call.name} took longer than {self.timeout:g} s"
        except ImageapiError as exc:
            record.error = exc.message
        except Exception as exc:  # a tool's bug must not end the conversation; the model is told
            record.error = f"{type(exc).__name__}: {exc}"
        if record.error is not None:
            record.result = {"error": record.error}
        record.ms = round((time.monotonic() - started) * 1000, 1)
        return record

    # ----------------------------------------------------------------------------------- tools

    async def _people(self, content_hash: str) -> tuple[int, list[str]]:
        faces = await insights_repo.face_names(self.db, content_hash)
        return len(faces), sorted(set(filter(None, faces)), key=str.lower)

    async def photo_metadata(self, args: dict[str, Any]) -> dict[str, Any]:
        rec = describe_row(self.config, self.photo.library, self.photo.row)
        out = {k: rec[k] for k in METADATA_FIELDS if rec.get(k) is not None}
        out["library"] = self.photo.library.name
        faces, people = await self._people(self.photo.content_hash)
        out["faces"] = faces
        out["people"] = people
        out["tags"] = (await tags_for_hashes(self.db, [self.photo.content_hash]))[self.photo.content_hash]
        return out

    def _position(self, args: dict[str, Any]) -> tuple[float, float]:
        lat, lon = args.get("lat"), args.get("lon")
        if lat is None and lon is None:
            lat, lon = self.photo.row["gps_lat"], self.photo.row["gps_lon"]
            if lat is None or lon is None:
                raise UsageError("the photo has no GPS position; give lat and lon")
        return check_position(lat, lon)

    async def reverse_geocode(self, args: dict[str, Any]) -> dict[str, Any]:
        lat, lon = self._position(args)
        personal = None
        personal_error = None
        if self.places is not None:
            try:
                personal = await self.places.place_at(lat, lon)
            except ImageapiError as exc:
                personal_error = exc.message
        try:
            found = await self.nominatim.reverse(lat, lon)
        except ImageapiError:
            if personal is None:
                raise
            found = {"found": False}
        address = short_address(found) if found.get("found") else None
        name = personal["name"] if personal else None
        location = " — ".join(p for p in (name, address) if p) or None
        out: dict[str, Any] = {"lat": lat, "lon": lon, "location": location, "personal_place": name,
                               "address": found.get("address") if found.get("found") else None,
                               "display_name": found.get("display_name")}
        if personal_error:
            out["personal_place_error"] = personal_error
        return out

    async def personal_place(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.places is not None
        lat, lon = self._position(args)
        return {"lat": lat, "lon": lon, "place": await self.places.place_at(lat, lon)}

    async def same_day(self, args: dict[str, Any]) -> dict[str, Any]:
        limit = _int_arg(args, "limit", SAME_DAY_DEFAULT, 1, SAME_DAY_MAX)
        day = self.photo.day
        if day is None:
            return {"date": None, "photos": [], "note": "the photo's date is unknown"}
        nxt = (day + timedelta(days=1)).isoformat()
        rows = await insights_repo.files_taken_between(self.db, self.photo.library.id, day.isoformat(), nxt,
                                                       self.photo.row["id"], limit * 3)
        seen: set[str | None] = {self.photo.content_hash}
        picked = []
        for r in rows:  # identical copies of a photo are one photo
            if r.content_hash is not None and r.content_hash in seen:
                continue
            seen.add(r.content_hash)
            picked.append(r)
            if len(picked) == limit:
                break
        hashes = [r.content_hash for r in picked if r.content_hash]
        tags = await tags_for_hashes(self.db, hashes) if hashes else {}
        photos = []
        for r in picked:
            item: dict[str, Any] = {"path": r.rel_path, "kind": r.kind,
                                    "taken_at": taken_at_iso(r.taken_at, r.taken_at_offset)}
            if r.gps_lat is not None and r.gps_lon is not None:
                item["gps"] = [r.gps_lat, r.gps_lon]
            if r.content_hash:
                _, people = await self._people(r.content_hash)
                if people:
                    item["people"] = people
                if tags.get(r.content_hash):
                    item["tags"] = tags[r.content_hash]
            photos.append(item)
        return {"date": day.isoformat(), "count": len(photos), "photos": photos}

    async def search(self, args: dict[str, Any]) -> dict[str, Any]:
        query = args.get("query")
        if not isinstance(query, str) or not query.strip():
            raise UsageError("query must be a non-empty string")
        window = _int_arg(args, "days_around", SUMMARY_WINDOW_DEFAULT, -1, 3660)
        limit = _int_arg(args, "limit", 5, 1, 20)
        around = self.photo.day if window >= 0 else None
        hits = await search_summaries(self.index, self.backends, query[:2000], around=around,
                                      days=window if around is not None else None, limit=limit)
        return {"query": query, "around": around.isoformat() if around else None,
                "days_around": window if around is not None else None, "results": [h.to_json() for h in hits]}

    async def describe_image(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.render_image is not None
        question = args.get("question")
        prompt = VISION_PROMPT
        if isinstance(question, str) and question.strip():
            prompt += f" Also answer: {question.strip()[:500]}"
        jpeg = await self.render_image()
        found = await self.backends.describe_image(jpeg, prompt)
        return {"description": found.text, "model": found.model}


def _int_arg(args: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = args.get(name)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{name} must be an integer")
    return max(lo, min(hi, value))
