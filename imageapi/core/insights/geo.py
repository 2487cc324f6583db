"""Where a photo was taken: Nominatim reverse geocoding and Apollo's personal places.

Nominatim's usage policy (https://operations.osmfoundation.org/policies/nominatim/): an
identifying User-Agent, at most one request per second, and caching. Answers are cached in the
database (geocode_cache) for CACHE_DAYS, keyed by position rounded to ~11 m, and requests are
spaced by NOMINATIM_MIN_INTERVAL_SEC across the whole process.

Apollo's Places API (docs/insights.md) gives the user's own names for places (Home, Work, Cabin);
those change when the user edits them, so they are cached in memory for a few minutes only.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from imageapi.core.errors import ServiceError, UsageError
from imageapi.core.insights.http import get_json
from imageapi.core.insights.settings import InsightSettings
from imageapi.core.insights.store import InsightStore, geo_key

HTTP_TIMEOUT = 15.0
MAX_RESPONSE_BYTES = 1024 * 1024
CACHE_DAYS = 90
PLACES_TTL = 300.0
PLACES_PATH = "/api/places/at"
ADDRESS_KEYS = ("amenity", "tourism", "leisure", "building", "house_number", "road", "neighbourhood", "suburb",
                "village", "town", "city", "municipality", "county", "state", "postcode", "country", "country_code")


class GeoError(ServiceError):
    """A geocoding service failed."""


def check_position(lat: object, lon: object) -> tuple[float, float]:
    if isinstance(lat, bool) or isinstance(lon, bool) or not isinstance(lat, int | float) \
            or not isinstance(lon, int | float):
        raise UsageError("lat and lon must be numbers")
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise UsageError(f"({lat}, {lon}) is not a position on Earth")
    return float(lat), float(lon)


async def _get_json(client: httpx.AsyncClient, url: str, params: dict[str, Any], what: str) -> tuple[int, Any]:
    status, doc, _ = await get_json(client, url, params, what=what, timeout=HTTP_TIMEOUT + 5,
                                    max_bytes=MAX_RESPONSE_BYTES, error=GeoError)
    return status, doc


class Nominatim:
    def __init__(self, settings: InsightSettings, store: InsightStore,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = settings.nominatim_url
        self.min_interval = settings.nominatim_min_interval
        self.store = store
        self._client = httpx.AsyncClient(
            headers={"User-Agent": settings.nominatim_user_agent, "Accept": "application/json"},
            timeout=httpx.Timeout(HTTP_TIMEOUT, connect=5.0), transport=transport, follow_redirects=False)
        self._lock = asyncio.Lock()
        self._last = float("-inf")
        self.requests = 0  # made to the service (not served from the cache)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def reverse(self, lat: float, lon: float) -> dict[str, Any]:
        lat, lon = check_position(lat, lon)
        oldest = (datetime.now(UTC) - timedelta(days=CACHE_DAYS)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        cached = await self.store.cached_geocode("nominatim", lat, lon, oldest)
        if cached is not None:
            return dict(cached, cached=True)
        async with self._lock:  # one request at a time, spaced: Nominatim's policy
            cached = await self.store.cached_geocode("nominatim", lat, lon, oldest)  # a waiter may have fetched it
            if cached is not None:
                return dict(cached, cached=True)
            wait = self._last + self.min_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                status, doc = await _get_json(self._client, f"{self.url}/reverse", {
                    "format": "jsonv2", "lat": f"{geo_key(lat) / 10_000:.4f}", "lon": f"{geo_key(lon) / 10_000:.4f}",
                    "zoom": 18, "addressdetails": 1,
                }, f"Nominatim at {self.url}")
            finally:
                self._last = time.monotonic()
                self.requests += 1
        if status >= 400:
            raise GeoError(f"Nominatim at {self.url} answered HTTP {status}")
        result = parse_nominatim(doc)
        await self.store.cache_geocode("nominatim", lat, lon, result)
        return dict(result, cached=False)


def parse_nominatim(doc: Any) -> dict[str, Any]:
    """The useful part of a jsonv2 reverse answer; {"found": False} for 'Unable to geocode'."""
    if not isinstance(doc, dict) or "error" in doc:
        return {"found": False}
    raw_address = doc.get("address")
    address: dict[str, Any] = raw_address if isinstance(raw_address, dict) else {}
    parts = {k: str(address[k]) for k in ADDRESS_KEYS if isinstance(address.get(k), str | int | float)}
    display = doc.get("display_name") if isinstance(doc.get("display_name"), str) else None
    name = doc.get("name") if isinstance(doc.get("name"), str) and doc.get("name") else None
    return {"found": True, "display_name": display, "name": name, "address": parts,
            "category": doc.get("category") if isinstance(doc.get("category"), str) else None,
            "type": doc.get("type") if isinstance(doc.get("type"), str) else None}


def short_address(result: dict[str, Any]) -> str | None:
    """'Road 12, Town, Country' from a parsed answer, or its display name."""
    a = result.get("address") or {}
    street = " ".join(p for p in (a.get("road"), a.get("house_number")) if p)
    place = a.get("city") or a.get("town") or a.get("village") or a.get("municipality") or a.get("county")
    bits = [b for b in (result.get("name"), street, a.get("suburb"), place, a.get("state"), a.get("country")) if b]
    if bits:
        return ", ".join(dict.fromkeys(bits))
    return result.get("display_name")


class ApolloPlaces:
    """GET {APOLLO_API_BASE_URL}/api/places/at?lat=&lon= -> {"place": {"name", "distance_m"?} | null}."""

    def __init__(self, base_url: str, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(HTTP_TIMEOUT, connect=5.0), transport=transport,
                                         follow_redirects=False, headers={"Accept": "application/json"})
        self._cache: dict[tuple[int, int], tuple[float, dict[str, Any] | None]] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    async def place_at(self, lat: float, lon: float) -> dict[str, Any] | None:
        lat, lon = check_position(lat, lon)
        key = (geo_key(lat), geo_key(lon))
        hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < PLACES_TTL:
            return hit[1]
        status, doc = await _get_json(self._client, f"{self.base_url}{PLACES_PATH}", {"lat": lat, "lon": lon},
                                      f"Apollo places at {self.base_url}")
        if status == 404:
            place = None
        elif status >= 400:
            raise GeoError(f"Apollo places at {self.base_url} answered HTTP {status}")
        else:
            place = parse_place(doc)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (time.monotonic(), place)
        return place


def parse_place(doc: Any) -> dict[str, Any] | None:
    if not isinstance(doc, dict):
        raise GeoError("Apollo places: the answer is not a JSON object")
    place = doc.get("place")
    if place is None:
        return None
    if not isinstance(place, dict) or not isinstance(place.get("name"), str) or not place["name"].strip():
        raise GeoError("Apollo places: 'place' must be null or an object with a name")
    out: dict[str, Any] = {"name": place["name"].strip()[:200]}
    dist = place.get("distance_m")
    if isinstance(dist, int | float) and not isinstance(dist, bool):
        out["distance_m"] = round(float(dist), 1)
    return out
