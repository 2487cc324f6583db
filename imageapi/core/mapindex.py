"""The map (`GET /map`): photos with GPS clustered in grid cells, answered from memory.

Method. Each library's positions are read once into numpy arrays, sorted by a Morton (Z-order)
code of their Web Mercator tile at level 26 (26 bits of x and y interleaved): every tile of any
lower level is then one contiguous range of the sorted codes. A cell of the answer is the tile at
level zoom + 2 (64 screen pixels, as Leaflet draws 256-pixel tiles); for the cells in view, two
binary searches give the range, its length is the count, prefix sums of latitude and longitude give
the centroid, and the range's middle (in Z-order) is the cover photo. The cost of an answer is
O(cells x libraries x log n), whatever the number of photos in view: at most MAX_CELLS cells (a
larger view is answered with coarser cells). Memory: 32 bytes a photo (code, id, two prefix sums),
32 MB for 1,000,000. Only the rows the answer names (covers, single photos) are read from the
database, by id.

Freshness. The scan bumps the library's map_generation (migration 22) in the transaction that
writes or deletes rows with GPS. The generations are read at most once a second; a library whose
number moved is read again in the background while the old arrays go on answering (the first
read of a library is waited for). Reading 1,000,000 rows takes a few seconds, in pages of
PAGE_ROWS, so other queries on the connection come between.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from imageapi.core.db import Connection
from imageapi.core.errors import UsageError
from imageapi.core.repositories import mapindex as repo

log = logging.getLogger(__name__)

BITS = 26                  # per axis: level-26 tiles (about 0.6 m at the equator)
CELL_LEVELS = 2            # a cell is a tile 2 levels below the zoom's: 64 px of a 256 px tile
MAX_ZOOM = 22
MAX_CELLS = 1024           # cells looked at per answer; a larger view gets coarser cells
SPREAD_ZOOM = 16           # from this zoom on, a cell of at most SPREAD_MAX photos is shown as photos
SPREAD_MAX = 16
MAX_PHOTOS = 2000          # single photos per answer
MAX_LAT = 85.0511287798    # Web Mercator's edge
PAGE_ROWS = 50_000
CHECK_EVERY = 1.0          # seconds between reads of the generations


@dataclass(frozen=True)
class BBox:
    south: float
    west: float
    north: float
    east: float            # east < west: the box crosses the antimeridian


def parse_bbox(raw: str | None) -> BBox:
    """`south,west,north,east` in degrees. Raises UsageError saying what is wrong."""
    if raw is None or not raw.strip():
        raise UsageError("parameter 'bbox' is required: south,west,north,east in degrees")
    parts = raw.split(",")
    if len(parts) != 4:
        raise UsageError(f"parameter 'bbox' must be 4 numbers south,west,north,east, got {len(parts)} values")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise UsageError("parameter 'bbox' must be 4 numbers south,west,north,east") from None
    if not all(math.isfinite(v) for v in values):
        raise UsageError("parameter 'bbox' must hold finite numbers (no NaN or infinity)")
    south, west, north, east = values
    for name, v in (("south", south), ("north", north)):
        if not -90.0 <= v <= 90.0:
            raise UsageError(f"parameter 'bbox': {name} must be a latitude between -90 and 90, got {v}")
    for name, v in (("west", west), ("east", east)):
        if not -180.0 <= v <= 180.0:
            raise UsageError(f"parameter 'bbox': {name} must be a longitude between -180 and 180, got {v}")
    if south > north:
        raise UsageError(f"parameter 'bbox': south ({south}) is north of north ({north})")
    return BBox(south, west, north, east)


def parse_zoom(raw: str | None) -> int:
    if raw is None or not raw.strip():
        raise UsageError(f"parameter 'zoom' is required: an integer from 0 to {MAX_ZOOM}")
    try:
        zoom = int(raw)
    except ValueError:
        raise UsageError(f"parameter 'zoom' must be an integer from 0 to {MAX_ZOOM}, got {raw[:40]!r}") from None
    if not 0 <= zoom <= MAX_ZOOM:
        raise UsageError(f"parameter 'zoom' must be from 0 to {MAX_ZOOM}, got {zoom}")
    return zoom


# -- tiles and Morton codes ---------------------------------------------------------------------

def _tile_x(lon: Any, level: int) -> Any:
    n = 1 << level
    return np.clip(np.floor((np.asarray(lon, dtype=np.float64) + 180.0) / 360.0 * n), 0, n - 1).astype(np.uint64)


def _tile_y(lat: Any, level: int) -> Any:
    n = 1 << level
    rad = np.radians(np.clip(np.asarray(lat, dtype=np.float64), -MAX_LAT, MAX_LAT))
    y = (1.0 - np.log(np.tan(rad) + 1.0 / np.cos(rad)) / math.pi) / 2.0
    return np.clip(np.floor(y * n), 0, n - 1).astype(np.uint64)


def _spread(v: Any) -> Any:
    """The bits of v (< 2**32) moved to the even positions."""
    v = np.asarray(v, dtype=np.uint64)
    for shift, mask in ((16, 0x0000FFFF0000FFFF), (8, 0x00FF00FF00FF00FF), (4, 0x0F0F0F0F0F0F0F0F),
                        (2, 0x3333333333333333), (1, 0x5555555555555555)):
        v = (v | (v << np.uint64(shift))) & np.uint64(mask)
    return v


def morton(x: Any, y: Any) -> Any:
    return _spread(x) | (_spread(y) << np.uint64(1))


def codes_of(lat: Any, lon: Any) -> Any:
    return morton(_tile_x(lon, BITS), _tile_y(lat, BITS))


def _tile_lon(x: Any, level: int) -> Any:
    return np.asarray(x, dtype=np.float64) / (1 << level) * 360.0 - 180.0


def _tile_lat(y: Any, level: int) -> Any:
    return np.degrees(np.arctan(np.sinh(math.pi * (1.0 - 2.0 * np.asarray(y, dtype=np.float64) / (1 << level)))))


@dataclass(frozen=True)
class Points:
    """One library's photos with GPS, in Z-order."""
    generation: int
    codes: Any             # uint64, sorted
    ids: Any               # int64
    cum_lat: Any           # float64, n + 1 prefix sums
    cum_lon: Any

    @staticmethod
    def build(generation: int, ids: Any, lat: Any, lon: Any) -> Points:
        codes = codes_of(lat, lon)
        order = np.argsort(codes, kind="stable")
        zero = np.zeros(1)
        return Points(generation, codes[order], np.asarray(ids, dtype=np.int64)[order],
                      np.concatenate([zero, np.cumsum(np.asarray(lat, dtype=np.float64)[order])]),
                      np.concatenate([zero, np.cumsum(np.asarray(lon, dtype=np.float64)[order])]))


@dataclass(frozen=True)
class Grid:
    level: int
    xs: Any                # uint64 tile x of each cell
    ys: Any


def grid_for(bbox: BBox, zoom: int) -> Grid:
    """The cells in view: tiles of level zoom + CELL_LEVELS, coarser while there are more than
    MAX_CELLS."""
    level = min(zoom + CELL_LEVELS, BITS)
    while True:
        n = 1 << level
        if bbox.west <= bbox.east:
            x_ranges = [(int(_tile_x(bbox.west, level)), int(_tile_x(bbox.east, level)))]
        else:  # across the antimeridian: two strips
            x_ranges = [(int(_tile_x(bbox.west, level)), n - 1), (0, int(_tile_x(bbox.east, level)))]
        y0, y1 = int(_tile_y(bbox.north, level)), int(_tile_y(bbox.south, level))
        cells = sum(b - a + 1 for a, b in x_ranges) * (y1 - y0 + 1)
        if cells <= MAX_CELLS or level == 0:
            break
        level -= 1
    xs = np.concatenate([np.arange(a, b + 1, dtype=np.uint64) for a, b in x_ranges])
    ys = np.arange(y0, y1 + 1, dtype=np.uint64)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    return Grid(level, gx.ravel(), gy.ravel())


@dataclass
class Cells:
    """Per cell of a grid: count, sums of lat and lon, and a cover (library index, position)."""
    count: Any
    sum_lat: Any
    sum_lon: Any
    ranges: list[tuple[Any, Any]]   # per library: (lo, hi) positions of each cell's range


def count_cells(grid: Grid, libs: list[Points]) -> Cells:
    shift = np.uint64(2 * (BITS - grid.level))
    base = morton(grid.xs, grid.ys) << shift
    top = base + (np.uint64(1) << shift)
    count = np.zeros(len(base), dtype=np.int64)
    sum_lat = np.zeros(len(base))
    sum_lon = np.zeros(len(base))
    ranges = []
    for p in libs:
        lo = np.searchsorted(p.codes, base, side="left")
        hi = np.searchsorted(p.codes, top, side="left")
        count += hi - lo
        sum_lat += p.cum_lat[hi] - p.cum_lat[lo]
        sum_lon += p.cum_lon[hi] - p.cum_lon[lo]
        ranges.append((lo, hi))
    return Cells(count, sum_lat, sum_lon, ranges)


@dataclass(frozen=True)
class Answer:
    level: int
    clusters: list[dict[str, Any]]
    photos: list[dict[str, Any]]
    total: int


def _ref(row: tuple[Any, ...], file_id: int) -> dict[str, Any]:
    library, path, kind, taken_at, lat, lon = row
    return {"id": file_id, "library": library, "path": path, "name": path.rpartition("/")[2], "kind": kind,
            "taken_at": taken_at, "lat": lat, "lon": lon}


async def answer(db: Connection, libs: list[Points], bbox: BBox, zoom: int) -> Answer:
    """Clusters and single photos in `bbox` at `zoom` (CPU work off the event loop)."""
    plan = await asyncio.to_thread(_plan, libs, bbox, zoom)
    wanted = sorted({i for i in plan.covers if i >= 0} | {i for ids in plan.spread for i in ids})
    # Rows deleted, or whose position went, since the arrays were read are left out.
    rows = {k: v for k, v in (await repo.file_refs(db, wanted)).items() if v[4] is not None and v[5] is not None}
    photos = [_ref(rows[i], i) for ids in plan.spread for i in ids if i in rows]
    clusters = [{"count": n, "lat": lat, "lon": lon, "bounds": bounds,
                 "cover": _ref(rows[cover], cover) if cover in rows else None}
                for n, lat, lon, bounds, cover in zip(plan.counts, plan.lats, plan.lons, plan.bounds, plan.covers,
                                                      strict=True)]
    return Answer(plan.level, clusters, photos, plan.total)


@dataclass(frozen=True)
class Plan:
    """What an answer holds, before the rows it names are read: per cluster its count, centroid,
    bounds and cover id (-1: none); the ids of the cells shown as photos."""
    level: int
    total: int
    counts: list[int]
    lats: list[float]
    lons: list[float]
    bounds: list[list[float]]
    covers: list[int]
    spread: list[list[int]]


def _plan(libs: list[Points], bbox: BBox, zoom: int) -> Plan:
    grid = grid_for(bbox, zoom)
    cells = count_cells(grid, libs)
    limit = SPREAD_MAX if zoom >= SPREAD_ZOOM else 1
    nonzero = np.flatnonzero(cells.count)
    counts = cells.count[nonzero]
    # Cells shown as photos: few enough, in order, while the budget lasts.
    small = counts <= limit
    small &= np.cumsum(np.where(small, counts, 0)) <= MAX_PHOTOS
    spread: list[list[int]] = []
    for c in nonzero[small].tolist():
        ids: list[int] = []
        for p, (lo, hi) in zip(libs, cells.ranges, strict=True):
            ids.extend(p.ids[lo[c]:hi[c]].tolist())
        spread.append(ids)
    big = nonzero[~small]
    n = cells.count[big]
    # The cover: the middle of the cell's Z-order range in the library holding most of it.
    covers = np.full(len(big), -1, dtype=np.int64)
    if len(big) and libs:
        sizes = np.stack([hi[big] - lo[big] for lo, hi in cells.ranges])
        best = np.argmax(sizes, axis=0)
        for k, p in enumerate(libs):
            mine = best == k
            lo, hi = cells.ranges[k][0][big][mine], cells.ranges[k][1][big][mine]
            covers[mine] = p.ids[lo + (hi - lo) // 2]
    xs, ys = grid.xs[big], grid.ys[big]
    bounds = np.round(np.stack([_tile_lat(ys + np.uint64(1), grid.level), _tile_lon(xs, grid.level),
                                _tile_lat(ys, grid.level), _tile_lon(xs + np.uint64(1), grid.level)], axis=1), 7)
    return Plan(grid.level, int(cells.count.sum()), n.tolist(), np.round(cells.sum_lat[big] / n, 7).tolist(),
                np.round(cells.sum_lon[big] / n, 7).tolist(), bounds.tolist(), covers.tolist(), spread)


def _concat(parts: list[Any], dtype: Any) -> Any:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


class MapIndex:
    """Every library's Points, kept fresh by their generation (one per server process)."""

    def __init__(self, db: Connection, check_every: float = CHECK_EVERY, page_rows: int = PAGE_ROWS) -> None:
        self.db = db
        self.check_every = check_every
        self.page_rows = page_rows
        self._points: dict[int, Points] = {}
        self._generations: dict[int, int] = {}
        self._checked = float("-inf")
        self._loads: dict[int, asyncio.Task[Points]] = {}

    async def points(self, library_ids: list[int] | None = None) -> list[Points]:
        """The Points of these libraries (every library's when None), loading what is missing and
        reloading, in the background, what changed."""
        if time.monotonic() - self._checked > self.check_every:
            self._generations = await repo.generations(self.db)
            self._checked = time.monotonic()
            for gone in set(self._points) - set(self._generations):
                del self._points[gone]
        wanted = sorted(self._generations) if library_ids is None else library_ids
        out: list[Points] = []
        for lib in wanted:
            gen = self._generations.get(lib, 0)
            have = self._points.get(lib)
            if have is None or have.generation != gen:
                task = self._loads.get(lib)
                if task is None:
                    task = self._loads[lib] = asyncio.ensure_future(self._load(lib, gen))
                    task.add_done_callback(functools.partial(self._loaded, lib))
                if have is None:
                    have = await asyncio.shield(task)
            out.append(have)
        return out

    def _loaded(self, lib: int, task: asyncio.Task[Points]) -> None:
        self._loads.pop(lib, None)
        if task.cancelled():
            return
        if task.exception() is not None:
            log.warning("map: reading the positions of library %s failed: %s", lib, task.exception())
            return
        self._points[lib] = task.result()

    async def _load(self, lib: int, generation: int) -> Points:
        started = time.monotonic()
        ids: list[Any] = []
        lats: list[Any] = []
        lons: list[Any] = []
        after = 0
        while True:
            rows = await repo.gps_rows(self.db, lib, after, self.page_rows)
            if not rows:
                break
            block = np.asarray(rows, dtype=np.float64)
            ids.append(block[:, 0].astype(np.int64))
            lats.append(block[:, 1])
            lons.append(block[:, 2])
            after = int(rows[-1][0])
            if len(rows) < self.page_rows:
                break
        points = await asyncio.to_thread(Points.build, generation, _concat(ids, np.int64), _concat(lats, np.float64),
                                         _concat(lons, np.float64))
        log.info("map: library %s, %d positions read in %.2f s", lib, len(points.ids), time.monotonic() - started)
        return points
