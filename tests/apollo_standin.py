"""A stand-in Apollo for the tests and the bench: a real aiohttp server on 127.0.0.1.

It speaks the protocol of docs/apollo-faces.md and can answer normally, slowly, with 500s, with bad
JSON, with 4xx, or hang; `closed_port_url()` gives an address that refuses connections. It counts
requests per content hash and the most requests in flight at once.

In a test: `with StandIn() as apollo: ... apollo.url ...` (it runs in a thread with its own loop).
From a shell (the bench): `python -m tests.apollo_standin [--delay S]` prints its URL and serves.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import random
import socket
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MODEL = "standin-arcface-1"
DIM = 32


def hash_embedding(seed: str, dim: int = DIM) -> list[float]:
    """A deterministic pseudo-random embedding for a seed (e.g. content hash + face index)."""
    rnd = random.Random(hashlib.sha256(seed.encode()).digest())
    return [rnd.gauss(0.0, 1.0) for _ in range(dim)]


def near(base: list[float], seed: str, noise: float = 0.2) -> list[float]:
    """An embedding close to `base` (cosine about 0.98 for noise 0.2): the same person again."""
    rnd = random.Random(seed)
    return [x + rnd.gauss(0.0, noise) for x in base]


def face(embedding: list[float], bbox: tuple[float, float, float, float] = (0.3, 0.2, 0.3, 0.4),
         score: float = 0.9) -> dict[str, Any]:
    return {"bbox": list(bbox), "score": score, "embedding": embedding}


def default_faces(content_hash: str, dim: int = DIM) -> list[dict[str, Any]]:
    """0, 1 or 2 faces, derived from the hash."""
    n = int(content_hash[:2], 16) % 3
    return [face(hash_embedding(f"{content_hash}/{i}", dim), (0.1 + 0.4 * i, 0.2, 0.3, 0.4)) for i in range(n)]


@dataclass
class Received:
    content_hash: str
    size: int
    width: int | None = None
    height: int | None = None
    format: str | None = None


@dataclass
class StandIn:
    """mode: ok, 500, 503, 408, 429, 400, 404, 422, badjson, badshape, hang, drop.
    `per_hash` overrides the mode for single hashes; `script` sets the faces answered for a hash."""

    mode: str = "ok"
    delay: float = 0.0
    decode_images: bool = True
    dim: int = DIM
    per_hash: dict[str, str] = field(default_factory=dict)
    script: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    order: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    health_requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/faces/detect", self._detect)
        app.router.add_get("/api/health", self._health)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        self.health_requests += 1
        return web.json_response({"status": "ok", "model": MODEL})

    async def _detect(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        content_hash = str(form.get("content_hash", ""))
        image = form.get("image")
        payload = image.file.read() if isinstance(image, web.FileField) else b""
        with self._lock:
            self.requests[content_hash] += 1
            self.order.append(content_hash)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            rec = self._describe(content_hash, payload)
            with self._lock:
                self.received.append(rec)
            mode = self.per_hash.get(content_hash, self.mode)
            if self.delay:
                await asyncio.sleep(self.delay)
            return await self._answer(request, mode, content_hash)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _describe(self, content_hash: str, payload: bytes) -> Received:
        rec = Received(content_hash, len(payload))
        if self.decode_images and payload:
            from PIL import Image

            try:
                with Image.open(io.BytesIO(payload)) as im:
                    rec.width, rec.height, rec.format = im.width, im.height, im.format
            except Exception:
                rec.format = "undecodable"
        return rec

    async def _answer(self, request: web.Request, mode: str, content_hash: str) -> web.StreamResponse:
        if mode == "ok":
            faces = self.script.get(content_hash)
            if faces is None:
                faces = default_faces(content_hash, self.dim)
            return web.json_response({"model": MODEL, "faces": faces})
        if mode.isdigit():
            return web.json_response({"error": f"stand-in answers {mode}"}, status=int(mode))
        if mode == "badjson":
            return web.Response(text='{"model": "x", "faces": [', content_type="application/json")
        if mode == "badshape":
            return web.json_response({"model": MODEL, "faces": [{"bbox": [1, 2], "score": "high"}]})
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "drop":
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError
        raise AssertionError(f"unknown stand-in mode {mode!r}")

    # -- running it ---------------------------------------------------------------------------

    def start(self) -> StandIn:
        self._thread = threading.Thread(target=self._serve, name="apollo-standin", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the stand-in Apollo did not start")
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        loop.run_until_complete(self._start_site())
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._cleanup())
        # Handlers still waiting (mode "hang") are cancelled, not left for the loop to destroy.
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()

    async def _start_site(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def closed_port_url() -> str:
    """An address where nothing listens: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--decode", action="store_true", help="decode every image received")
    parser.add_argument("--dim", type=int, default=DIM, help="embedding length (insightface: 512)")
    args = parser.parse_args()

    async def serve() -> None:
        standin = StandIn(delay=args.delay, decode_images=args.decode, dim=args.dim)
        runner = web.AppRunner(standin.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        sys.stdout.write(json.dumps({"url": f"http://127.0.0.1:{port}"}) + "\n")
        sys.stdout.flush()
        while True:
            await asyncio.sleep(3600)

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    _main()


# -- small libraries for the face tests -------------------------------------------------------------

def make_photo(path: Any, seed: int, size: tuple[int, int] = (96, 64), orientation: int | None = None) -> Any:
    """A small distinct JPEG (distinct content per seed, so distinct hashes)."""
    from pathlib import Path

    from PIL import Image

    rnd = random.Random(seed)
    im = Image.new("RGB", size, (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    for _ in range(4):
        x, y = rnd.randrange(size[0]), rnd.randrange(size[1])
        im.paste((rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)),
                 (x, y, min(size[0], x + 1 + rnd.randrange(size[0])), min(size[1], y + 1 + rnd.randrange(size[1]))))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    im.save(p, "JPEG", quality=80, exif=exif.tobytes())
    return p


async def insert_rows(db: Any, library_id: int, root: Any, rel_paths: list[str], *, hashed: bool = True) -> list[int]:
    """Index files as the scan would (kind from the name, blake3 of the content), without a walk."""
    import os

    from imageapi.core.database import insert, transaction
    from imageapi.core.db import utcnow
    from imageapi.core.hashing import hash_file
    from imageapi.core.kinds import kind_of

    ids = []
    now = utcnow()
    async with transaction(db):
        for rel in rel_paths:
            path = os.path.join(root, rel)
            st = os.stat(path)
            ids.append(await insert(
                db,
                "INSERT INTO files (library_id, rel_path, dir, kind, size, mtime_ns, content_hash, first_seen, "
                "last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (library_id, rel, rel.rpartition("/")[0], kind_of(rel) or "other", st.st_size, st.st_mtime_ns,
                 hash_file(path) if hashed else None, now, now),
            ))
    return ids


async def tag(db: Any, content_hash: str, *names: str) -> None:
    """Tag content (the tags tables of migration 1; names are case-insensitive)."""
    from imageapi.core.database import transaction
    from imageapi.core.db import utcnow

    async with transaction(db):
        for name in names:
            await db.execute("INSERT OR IGNORE INTO tags (name, created_at) VALUES (?, ?)", (name, utcnow()))
            await db.execute(
                "INSERT OR IGNORE INTO content_tags (content_hash, tag_id, created_at) "
                "SELECT ?, id, ? FROM tags WHERE name = ?", (content_hash, utcnow(), name),
            )
