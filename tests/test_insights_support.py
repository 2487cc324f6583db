"""Shared set-up of the insights tests: every stand-in started on 127.0.0.1, the settings that point
imageapi at them, and a small indexed library (rows written directly: these tests are about
insights, not scanning) with GPS, faces, people and tags.

Imported by the tests/test_insights_*.py modules (fixtures are re-exported by import).
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from PIL import Image

from imageapi.core.config import Config, load_config
from imageapi.core.database import transaction
from imageapi.core.db import connect, utcnow
from imageapi.core.insights.service import InsightService
from imageapi.core.insights.settings import insight_settings
from imageapi.core.insights.tools import Photo
from imageapi.core.libraries import Library, add_library
from tests.llm_standins import NominatimStandIn, OllamaStandIn, OpenRouterStandIn, PlacesStandIn, SmsStandIn

PRIMARY_MODEL = "big-model"
FALLBACK_MODEL = "small-model"
ROUTER_MODELS = ["anthropic/claude-sonnet-4", "openai/gpt-4o"]
PHOTO_LAT, PHOTO_LON = 48.8584, 2.2945
HOME_LAT, HOME_LON = 52.3702, 4.8952


@dataclass
class StandIns:
    primary: OllamaStandIn
    fallback: OllamaStandIn
    router: OpenRouterStandIn
    sms: SmsStandIn
    nominatim: NominatimStandIn
    places: PlacesStandIn

    def all(self) -> list[Any]:
        return [self.primary, self.fallback, self.router, self.sms, self.nominatim, self.places]


@pytest.fixture()
async def standins() -> AsyncIterator[StandIns]:
    s = StandIns(
        primary=OllamaStandIn(models=[PRIMARY_MODEL, "vision-model", "embed-model"]),
        fallback=OllamaStandIn(models=[FALLBACK_MODEL, "vision-model", "embed-model"]),
        router=OpenRouterStandIn(models=ROUTER_MODELS),
        sms=SmsStandIn(token="sms-secret"),
        nominatim=NominatimStandIn(),
        places=PlacesStandIn(),
    )
    for x in s.all():
        await x.start()
    s.nominatim.add(PHOTO_LAT, PHOTO_LON, "Avenue Anatole France", "Paris", "France", name="Tour Eiffel")
    s.nominatim.add(HOME_LAT, HOME_LON, "Damstraat", "Amsterdam", "Nederland")
    s.places.places.append((HOME_LAT, HOME_LON, 100.0, "Home"))
    try:
        yield s
    finally:
        for x in s.all():
            await x.stop()


def insight_env(s: StandIns, **extra: str) -> dict[str, str]:
    env = {
        "OLLAMA_PRIMARY_URL": s.primary.url,
        "OLLAMA_PRIMARY_MODEL": PRIMARY_MODEL,
        "OLLAMA_FALLBACK_URL": s.fallback.url,
        "OLLAMA_FALLBACK_MODEL": FALLBACK_MODEL,
        "OLLAMA_VISION_MODEL": "vision-model",
        "OLLAMA_EMBEDDING_MODEL": "embed-model",
        "OLLAMA_CONNECT_TIMEOUT_SEC": "2",
        "INSIGHTS_REQUEST_TIMEOUT_SEC": "5",
        "OPENROUTER_API_KEY": "sk-or-test",
        "OPENROUTER_BASE_URL": s.router.base_url,
        "OPENROUTER_ALLOWED_MODELS": ",".join(ROUTER_MODELS),
        "OPENROUTER_HTTP_REFERER": "https://photos.example.org",
        "OPENROUTER_APP_TITLE": "imageapi tests",
        "NOMINATIM_URL": s.nominatim.url,
        "NOMINATIM_MIN_INTERVAL_SEC": "0.01",
        "APOLLO_API_BASE_URL": s.places.url,
        "SMS_API_URL": s.sms.url,
        "SMS_API_TOKEN": "sms-secret",
    }
    env.update(extra)
    return env


def jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(buf, "JPEG")
    return buf.getvalue()


@dataclass
class Library1:
    db: aiosqlite.Connection
    config: Config
    lib: Library
    env: dict[str, str]

    async def photo(self, rel: str = "2023/eiffel.jpg") -> Photo:
        async with self.db.execute("SELECT * FROM files WHERE library_id = ? AND rel_path = ?",
                                   (self.lib.id, rel)) as cur:
            row = await cur.fetchone()
        assert row is not None
        return Photo(self.lib, rel, row)

    def service(self, **extra: str) -> InsightService:
        cfg = load_config(environ={**self.env, **extra}, cwd=self.config.data_dir.parent)
        return InsightService(cfg, self.db, insight_settings(cfg))


FILES = [
    # rel_path, hash, taken_at, gps
    ("2023/eiffel.jpg", "h-eiffel", "2023-07-14T15:30:00", (PHOTO_LAT, PHOTO_LON)),
    ("2023/eiffel copy.jpg", "h-eiffel", "2023-07-14T15:30:00", (PHOTO_LAT, PHOTO_LON)),
    ("2023/dinner.jpg", "h-dinner", "2023-07-14T20:10:00", None),
    ("2023/home.jpg", "h-home", "2023-07-20T09:00:00", (HOME_LAT, HOME_LON)),
    ("2023/nogps.jpg", "h-nogps", None, None),
]


async def make_library(tmp: Path, env: dict[str, str]) -> Library1:
    root = tmp / "library"
    root.mkdir(parents=True, exist_ok=True)
    full_env = {"IMAGEAPI_DATA_DIR": str(tmp / "data"), "WORKERS": "1", **env}
    config = load_config(environ=full_env, cwd=tmp)
    db = await connect(config.database_path)
    lib = await add_library(db, "main", root)
    now = utcnow()
    for rel, h, taken, gps in FILES:
        await db.execute(
            "INSERT INTO files (library_id, rel_path, dir, kind, size, mtime_ns, content_hash, taken_at, "
            "taken_at_source, make, model, gps_lat, gps_lon, width, height, thumb_state, first_seen, last_seen) "
            "VALUES (?, ?, ?, 'image', 1000, 1, ?, ?, 'exif_original', 'TestCam', 'T1', ?, ?, 640, 480, 'pending', "
            "?, ?)",
            (lib.id, rel, rel.rpartition("/")[0], h, taken, gps[0] if gps else None, gps[1] if gps else None, now, now),
        )
    async with transaction(db):
        await db.execute("INSERT INTO persons (id, name, created_at) VALUES (1, 'Alice', ?), (2, 'Bob', ?)", (now, now))
        for h, idx, person in (("h-eiffel", 0, 1), ("h-eiffel", 1, None), ("h-dinner", 0, 2)):
            await db.execute(
                "INSERT INTO faces (content_hash, idx, x, y, w, h, score, embedding, model, person_id, bound_by, "
                "created_at) VALUES (?, ?, 0.1, 0.1, 0.2, 0.2, 0.99, x'', 'test', ?, ?, ?)",
                (h, idx, person, "manual" if person else None, now),
            )
        await db.execute("INSERT INTO tags (id, name, created_at) VALUES (1, 'vacation', ?)", (now,))
        await db.execute("INSERT INTO content_tags (content_hash, tag_id, created_at) VALUES ('h-eiffel', 1, ?)",
                         (now,))
    return Library1(db, config, lib, full_env)


@pytest.fixture()
async def library(tmp_path: Path, standins: StandIns) -> AsyncIterator[Library1]:
    lib = await make_library(tmp_path, insight_env(standins))
    try:
        yield lib
    finally:
        await lib.db.close()
