"""Shared set-up of the server tests: a library of generated media indexed once per session by a
real scan (the template), copied per test, and an aiohttp test client over create_app.

Imported by the tests/test_server_*.py modules (fixtures are re-exported by import).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from PIL import Image

from imageapi.core.config import Config, load_config
from imageapi.core.database import transaction
from imageapi.core.db import connect
from imageapi.core.libraries import get_library
from imageapi.core.pool import WorkerPool
from imageapi.core.scan import ScanTarget, run_scan
from imageapi.core.tokens import TokenService
from imageapi.core.users import User, add_user, get_user, hash_password
from imageapi.server.app import create_app
from tests.conftest import find_corpus
from tests.media_factory import make_jpeg

SECRET = "test-secret-key-that-is-long-enough-0123456789"
USER = "alice"
PASSWORD = "correct horse battery"


@dataclass
class Template:
    root: Path        # the library (shared by every test: do not write into it)
    data: Path        # database + thumbnails made by the scan (copied per test)
    outside: Path     # a folder outside the library (symlink targets)


def _make_library(root: Path, outside: Path) -> None:
    make_jpeg(root / "2020" / "a.jpg", (640, 480), taken="2020:06:01 10:00:00", seed=1)
    make_jpeg(root / "2020" / "b.jpg", (480, 640), taken="2020:06:03 11:00:00", seed=2, orientation=6)
    make_jpeg(root / "2021" / "c.jpg", (800, 600), taken="2021:06:01 09:30:00", seed=3)
    make_jpeg(root / "2021" / "sub" / "d.jpg", (320, 240), taken="2019:12:30 23:00:00", seed=4)
    make_jpeg(root / "excluded" / "x.jpg", (320, 240), taken="2018:06:01 08:00:00", seed=5)
    (root / "dup.jpg").write_bytes((root / "2020" / "a.jpg").read_bytes())  # a duplicate
    Image.new("RGB", (300, 200), (10, 200, 30)).save(root / "green.png")
    (root / "bad.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    (root / "name with spaces & ünïcode.jpg").write_bytes((root / "2021" / "c.jpg").read_bytes())
    corpus = find_corpus()
    if corpus is not None:
        shutil.copy(corpus / "video" / "short_1_5s.mp4", root / "clip.mp4")
        shutil.copy(corpus / "raw" / "Canon_350D.cr2", root / "raw.cr2")
        shutil.copy(corpus / "heic" / "IMG_5195.HEIC", root / "phone.heic")
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "secret.jpg").write_bytes((root / "2020" / "a.jpg").read_bytes())
    (outside / "passwd").write_text("root:x:0:0\n")
    os.symlink(outside / "secret.jpg", root / "link_out.jpg")
    os.symlink(outside, root / "linkdir")


def environ(tpl: Template, data: Path, **extra: str) -> dict[str, str]:
    # Faces off unless asked for (the embedded detector, when installed, is otherwise the default).
    faces = {} if any(k.startswith(("APOLLO_", "FACE_BACKEND")) for k in extra) else {"FACE_BACKEND": "off"}
    return {
        **faces,
        "IMAGEAPI_DATA_DIR": str(data),
        "BASE_PATH": str(tpl.root),
        "SECRET_KEY": SECRET,
        "EXCLUDED_DIRS": "excluded",
        "WORKERS": "1",
        **extra,
    }


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    base = tmp_path_factory.mktemp("server_template")
    tpl = Template(root=base / "library", data=base / "data", outside=base / "outside")
    _make_library(tpl.root, tpl.outside)
    cfg = load_config(environ=environ(tpl, tpl.data), cwd=base)

    async def build() -> None:
        db = await connect(cfg.database_path)
        pool = WorkerPool(2)
        try:
            from imageapi.core.libraries import sync_base_path

            await sync_base_path(db, cfg)
            lib = await get_library(db, "main")
            await run_scan(db, cfg, [ScanTarget(lib)], "full", pool)
            await add_user(db, USER, hash_password(PASSWORD))
            # The scan does not follow symlinks; an index that holds one anyway (an older version,
            # a file replaced by a link after the scan) must still not lead outside.
            async with transaction(db):
                await db.execute(
                    "INSERT INTO files (library_id, rel_path, dir, kind, size, mtime_ns, thumb_state, first_seen, "
                    "last_seen) VALUES (?, 'link_out.jpg', '', 'image', 1, 1, 'pending', 'x', 'x')", (lib.id,))
        finally:
            pool.close()
            await db.close()

    asyncio.run(build())
    return tpl


@dataclass
class Server:
    client: TestClient[web.Request, web.Application]
    app: web.Application
    config: Config
    template: Template
    user: User
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.config.database_path)
        conn.row_factory = sqlite3.Row
        return conn


AiohttpClient = Callable[..., Coroutine[Any, Any, TestClient[web.Request, web.Application]]]


async def start_server(aiohttp_client: AiohttpClient, template: Template, tmp: Path, **extra: str) -> Server:
    data = tmp / "data"
    shutil.copytree(template.data, data, symlinks=True)
    for lock in data.glob("*.lock"):
        lock.unlink()
    config = load_config(environ=environ(template, data, **extra), cwd=tmp)
    app = create_app(config)
    client = await aiohttp_client(app)
    import aiosqlite

    async with aiosqlite.connect(config.database_path) as db:
        db.row_factory = aiosqlite.Row
        user = await get_user(db, USER)  # type: ignore[arg-type]
    token = TokenService(SECRET).issue(user, 3600).token
    return Server(client, app, config, template, user, token)


@pytest.fixture()
async def server(aiohttp_client: AiohttpClient, template: Template, env_dirs: dict[str, Path]) -> AsyncIterator[Server]:
    yield await start_server(aiohttp_client, template, env_dirs["tmp"])


def assert_error(body: Any, code: str | None = None) -> None:
    """The one error shape."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"code", "message"} and isinstance(err["message"], str) and err["message"], body
    assert "Traceback" not in err["message"]
    if code is not None:
        assert err["code"] == code, body


def stored_user_token(config: Config, name: str = USER) -> str:
    """A login token for a user of the template's database (tokens carry the user's stored key)."""
    async def load() -> User:
        db = await connect(config.database_path)
        try:
            return await get_user(db, name)
        finally:
            await db.close()

    return TokenService(SECRET).issue(asyncio.run(load()), 3600).token
