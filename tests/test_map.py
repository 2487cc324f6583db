"""GET /map: clusters of the photos with GPS (core/mapindex.py), against a brute-force count, over
HTTP on a scanned library of generated JPEGs with GPS (SQLite and PostgreSQL), its validation
(hypothesis) and its freshness after a scan."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imageapi.core import mapindex
from imageapi.core.config import DEFAULT_TILE_URL, Config, load_config
from imageapi.core.db import connect
from imageapi.core.libraries import get_library, sync_base_path
from imageapi.core.pool import WorkerPool
from imageapi.core.scan import ScanTarget, run_scan
from imageapi.core.tokens import TokenService
from imageapi.core.users import add_user, get_user, hash_password
from imageapi.server.app import create_app
from tests.media_factory import make_jpeg
from tests.test_server_support import SECRET, AiohttpClient

# Where the generated photos were "taken".
LISBON = [(38.7223 + i * 0.0004, -9.1393 + i * 0.0003) for i in range(6)]
SYDNEY = (-33.8688, 151.2093)
TOKYO = [(35.6762, 139.6503), (35.6765, 139.6510)]
FIJI = [(-17.71, 179.6), (-17.72, -179.6)]  # either side of the antimeridian


# -- the clustering itself, against brute force -------------------------------------------------

def _tile(lat: float, lon: float, level: int) -> tuple[int, int]:
    n = 2 ** level
    lat = max(-mapindex.MAX_LAT, min(mapindex.MAX_LAT, lat))
    x = min(n - 1, max(0, math.floor((lon + 180) / 360 * n)))
    rad = math.radians(lat)
    y = min(n - 1, max(0, math.floor((1 - math.log(math.tan(rad) + 1 / math.cos(rad)) / math.pi) / 2 * n)))
    return x, y


lats = st.floats(-89.9, 89.9)
lons = st.floats(-180, 180)


@settings(max_examples=150, deadline=None)
@given(points=st.lists(st.tuples(lats, lons), max_size=60), zoom=st.integers(0, 22),
       box=st.tuples(lats, lons, lats, lons), split=st.integers(0, 60))
def test_cells_count_what_brute_force_counts(points: list[tuple[float, float]], zoom: int,
                                             box: tuple[float, float, float, float], split: int) -> None:
    south, west, north, east = box
    south, north = min(south, north), max(south, north)
    bbox = mapindex.BBox(south, west, north, east)
    # Two libraries: their counts add up.
    libs = [mapindex.Points.build(0, np.arange(len(part)) + offset, [p[0] for p in part], [p[1] for p in part])
            for part, offset in ((points[:split], 0), (points[split:], 1000))]
    grid = mapindex.grid_for(bbox, zoom)
    assert len(grid.xs) <= mapindex.MAX_CELLS or grid.level == 0
    assert grid.level <= zoom + mapindex.CELL_LEVELS
    cells = mapindex.count_cells(grid, libs)
    in_view = {(int(x), int(y)) for x, y in zip(grid.xs, grid.ys, strict=True)}
    expected = Counter(t for t in (_tile(la, lo, grid.level) for la, lo in points) if t in in_view)
    got = {(int(x), int(y)): int(n) for x, y, n in zip(grid.xs, grid.ys, cells.count, strict=True) if n}
    assert got == dict(expected)
    for c in np.flatnonzero(cells.count):
        members = [p for p in points if _tile(*p, grid.level) == (int(grid.xs[c]), int(grid.ys[c]))]
        assert cells.sum_lat[c] / cells.count[c] == pytest.approx(sum(p[0] for p in members) / len(members),
                                                                  abs=1e-6)
    # The view's corners are in view (west > east: the strip across the antimeridian too).
    for lat, lon in ((south, west), (north, east)):
        assert _tile(lat, lon, grid.level) in in_view


# -- over HTTP ----------------------------------------------------------------------------------

@dataclass
class Mapped:
    client: TestClient[web.Request, web.Application]
    config: Config
    root: Path
    auth: dict[str, str]


async def _scan(config: Config) -> None:
    db = await connect(config.database)
    pool = WorkerPool(1)
    try:
        await sync_base_path(db, config)
        await run_scan(db, config, [ScanTarget(await get_library(db, "main"))], "full", pool)
    finally:
        pool.close()
        await db.close()


@pytest.fixture()
async def mapped(aiohttp_client: AiohttpClient, env_dirs: dict[str, Path],
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Mapped]:
    root = env_dirs["tmp"] / "library"
    for i, gps in enumerate(LISBON):
        make_jpeg(root / "lisbon" / f"L{i}.jpg", gps=gps, seed=i)
    make_jpeg(root / "sydney.jpg", gps=SYDNEY, seed=20)
    for i, gps in enumerate(TOKYO):
        make_jpeg(root / "tokyo" / f"T{i}.jpg", gps=gps, seed=30 + i)
    for i, gps in enumerate(FIJI):
        make_jpeg(root / "fiji" / f"F{i}.jpg", gps=gps, seed=40 + i)
    make_jpeg(root / "nowhere.jpg", seed=50)
    monkeypatch.setenv("BASE_PATH", str(root))
    monkeypatch.setenv("SECRET_KEY", SECRET)
    monkeypatch.setenv("WORKERS", "1")
    config = load_config()
    await _scan(config)
    db = await connect(config.database)
    try:
        await add_user(db, "ann", hash_password("a long enough password"))
        user = await get_user(db, "ann")
    finally:
        await db.close()
    assert user is not None
    client = await aiohttp_client(create_app(config))
    yield Mapped(client, config, root, {"Authorization": f"Bearer {TokenService(SECRET).issue(user, 3600).token}"})


async def _map(m: Mapped, status: int = 200, **params: Any) -> Any:
    r = await m.client.get("/map", params={k: str(v) for k, v in params.items()}, headers=m.auth)
    body = await r.json()
    assert r.status == status, body
    return body


WORLD = "-85,-180,85,180"


async def test_the_world_holds_every_photo_with_gps_once(mapped: Mapped) -> None:
    body = await _map(mapped, bbox=WORLD, zoom=2)
    gps_count = len(LISBON) + 1 + len(TOKYO) + len(FIJI)
    assert body["total"] == gps_count
    assert sum(c["count"] for c in body["clusters"]) + len(body["photos"]) == gps_count
    assert body["tiles"] == {"url": "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
                             "attribution": "© OpenStreetMap contributors"}
    assert (await _map(mapped, bbox=WORLD, zoom=0))["total"] == gps_count
    # Sydney alone in its cell: a photo, with what the viewer and a thumbnail need.
    [sydney] = [p for p in body["photos"] if p["path"] == "sydney.jpg"]
    assert sydney["library"] == "main" and sydney["lat"] == pytest.approx(SYDNEY[0], abs=1e-4)
    assert sydney["name"] == "sydney.jpg" and sydney["kind"] == "image" and isinstance(sydney["id"], int)
    [lisbon] = [c for c in body["clusters"] if c["count"] == len(LISBON)]
    assert lisbon["lat"] == pytest.approx(sum(p[0] for p in LISBON) / len(LISBON), abs=1e-5)
    assert lisbon["lon"] == pytest.approx(sum(p[1] for p in LISBON) / len(LISBON), abs=1e-5)
    s, w, n, e = lisbon["bounds"]
    assert s <= lisbon["lat"] <= n and w <= lisbon["lon"] <= e
    assert lisbon["cover"]["path"].startswith("lisbon/") and lisbon["cover"]["library"] == "main"
    thumb = await mapped.client.get("/image", params={"library": "main", "path": lisbon["cover"]["path"]},
                                    headers=mapped.auth)
    assert thumb.status == 200


async def test_zooming_in_splits_a_cluster_into_photos(mapped: Mapped) -> None:
    s, w = min(p[0] for p in LISBON) - 0.001, min(p[1] for p in LISBON) - 0.001
    n, e = max(p[0] for p in LISBON) + 0.001, max(p[1] for p in LISBON) + 0.001
    far = await _map(mapped, bbox=f"{s},{w},{n},{e}", zoom=8)
    assert [c["count"] for c in far["clusters"]] == [len(LISBON)] and far["photos"] == []
    near = await _map(mapped, bbox=f"{s},{w},{n},{e}", zoom=18)
    assert sorted(p["path"] for p in near["photos"]) == sorted(f"lisbon/L{i}.jpg" for i in range(len(LISBON)))
    assert near["clusters"] == []
    # Nothing outside the box.
    assert {p["path"].split("/")[0] for p in near["photos"]} == {"lisbon"}


async def test_a_box_across_the_antimeridian(mapped: Mapped) -> None:
    body = await _map(mapped, bbox="-20,179,-15,-179", zoom=10)
    assert sorted(p["path"] for p in body["photos"]) == ["fiji/F0.jpg", "fiji/F1.jpg"]
    across = await _map(mapped, bbox="-40,170,40,-170", zoom=3)  # cells of 11.25 degrees
    assert across["total"] == len(FIJI)
    plain = await _map(mapped, bbox="-40,-160,40,160", zoom=3)  # the other way round: the rest of the world
    assert plain["total"] == len(LISBON) + 1 + len(TOKYO)


async def test_a_library_filter(mapped: Mapped) -> None:
    assert (await _map(mapped, bbox=WORLD, zoom=2, library="main"))["total"] == 11
    body = await _map(mapped, 404, bbox=WORLD, zoom=2, library="nope")
    assert "nope" in body["error"]["message"]


@pytest.mark.parametrize("params,words", [
    ({"zoom": 3}, "'bbox' is required"),
    ({"bbox": WORLD}, "'zoom' is required"),
    ({"bbox": "91,0,92,1", "zoom": 3}, "latitude between -90 and 90"),
    ({"bbox": "10,0,5,1", "zoom": 3}, "south (10.0) is north of north"),
    ({"bbox": "nan,0,5,1", "zoom": 3}, "finite"),
    ({"bbox": "0,0,5", "zoom": 3}, "4 numbers"),
    ({"bbox": "0,-181,5,1", "zoom": 3}, "longitude between -180 and 180"),
    ({"bbox": WORLD, "zoom": 23}, "from 0 to 22"),
    ({"bbox": WORLD, "zoom": -1}, "from 0 to 22"),
    ({"bbox": WORLD, "zoom": "1.5"}, "integer"),
])
async def test_bad_parameters_are_400_with_a_clear_message(mapped: Mapped, params: dict[str, Any],
                                                           words: str) -> None:
    body = await _map(mapped, 400, **params)
    assert words in body["error"]["message"] and body["error"]["code"] == "bad_request"


async def test_anything_in_bbox_and_zoom_is_an_answer_or_a_400(mapped: Mapped) -> None:
    texts = st.one_of(st.text(max_size=40), st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0,
                                                      max_size=5).map(lambda v: ",".join(map(str, v))))
    seen: list[tuple[str, str]] = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(bbox=texts, zoom=st.one_of(st.integers(-5, 40).map(str), st.text(max_size=5)))
    def collect(bbox: str, zoom: str) -> None:
        seen.append((bbox, zoom))

    collect()
    for bbox, zoom in seen:
        r = await mapped.client.get("/map", params={"bbox": bbox, "zoom": zoom}, headers=mapped.auth)
        body = await r.json()
        assert r.status in (200, 400), (bbox, zoom, r.status, body)
        if r.status == 400:
            assert body["error"]["message"]


async def test_a_scan_that_adds_photos_shows_on_the_map(mapped: Mapped) -> None:
    assert (await _map(mapped, bbox=WORLD, zoom=1))["total"] == 11
    make_jpeg(mapped.root / "sydney2.jpg", gps=(SYDNEY[0] + 0.01, SYDNEY[1]), seed=60)
    (mapped.root / "tokyo" / "T0.jpg").unlink()
    await _scan(mapped.config)
    deadline = time.monotonic() + 15
    while True:  # read again in the background: the old answer until then
        body = await _map(mapped, bbox=WORLD, zoom=1)
        if body["total"] == 11 and "tokyo/T0.jpg" not in str(body) and "sydney2.jpg" in str(body) or \
                time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    near = await _map(mapped, bbox=f"{SYDNEY[0] - 0.1},{SYDNEY[1] - 0.1},{SYDNEY[0] + 0.1},{SYDNEY[1] + 0.1}",
                      zoom=18)
    assert sorted(p["path"] for p in near["photos"]) == ["sydney.jpg", "sydney2.jpg"]
    tokyo = await _map(mapped, bbox="35,139,36,140", zoom=18)
    assert [p["path"] for p in tokyo["photos"]] == ["tokyo/T1.jpg"]


def test_the_tile_setting(tmp_path: Path) -> None:
    from imageapi.core.errors import ConfigError

    env = {"IMAGEAPI_DATA_DIR": str(tmp_path)}
    assert load_config(environ={**env, "MAP_TILE_URL": ""}, cwd=tmp_path).map_tile_url == DEFAULT_TILE_URL
    assert load_config(environ={**env, "MAP_TILE_URL": "none"}, cwd=tmp_path).map_tile_url is None
    url = "https://{s}.tiles.example.org/{z}/{x}/{y}.png"
    assert load_config(environ={**env, "MAP_TILE_URL": url}, cwd=tmp_path).map_tile_url == url
    for bad in ("ftp://x/{z}/{x}/{y}", "https://x.org/tiles.png", "not a url"):
        with pytest.raises(ConfigError, match="MAP_TILE_URL"):
            load_config(environ={**env, "MAP_TILE_URL": bad}, cwd=tmp_path)


def test_the_web_client_may_show_the_tiles_and_nothing_else_from_elsewhere() -> None:
    from imageapi.server.webapp import security_headers

    def img_src(url: str | None) -> str:
        csp = security_headers(url)["Content-Security-Policy"]
        return next(d for d in csp.split("; ") if d.startswith("img-src"))

    assert img_src(None) == "img-src 'self' data: blob:"
    assert img_src("https://tile.openstreetmap.org/{z}/{x}/{y}.png") == \
        "img-src 'self' data: blob: https://tile.openstreetmap.org"
    assert img_src("https://{s}.tiles.example.org:8443/{z}/{x}/{y}.png") == \
        "img-src 'self' data: blob: https://*.tiles.example.org:8443"
    assert "tile" not in security_headers("https://tile.openstreetmap.org/{z}/{x}/{y}.png")["Content-Security-Policy"] \
        .split("img-src")[0]
