"""Places and time zones from GPS, offline (core/places.py): at scan time in the workers, the
backfill (command, watcher tick, `imageapi worker --kinds places`), GET /places and `imageapi places`.

Real corpus photos with GPS, JPEGs and a video generated with GPS and dates, both databases
(IMAGEAPI_TEST_DATABASE=postgresql)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from imageapi.core import places
from imageapi.core.places import check_position, locate, parse_key, place_key
from tests import dbq
from tests.media_factory import make_jpeg
from tests.test_cli import imageapi

SECRET = "test-secret-key-that-is-long-enough-0123456789"

NEW_YORK = (40.7128, -74.0060)
LISBON = (38.7223, -9.1393)
SYDNEY = (-33.8688, 151.2093)


def _rational(value: float) -> tuple[Fraction, Fraction, Fraction]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = round(((value - degrees) * 60 - minutes) * 60 * 1000)
    return Fraction(degrees), Fraction(minutes), Fraction(seconds, 1000)


def gps_jpeg(path: Path, lat: float, lon: float, taken: str, offset: str | None = None, seed: int = 0) -> Path:
    """A generated JPEG with a GPS position, DateTimeOriginal and optionally OffsetTimeOriginal
    (written with Pillow's EXIF writer)."""
    make_jpeg(path, taken=taken, seed=seed)
    with Image.open(path) as im:
        exif = im.getexif()
        gps = exif.get_ifd(0x8825)
        gps[1], gps[2] = ("N" if lat >= 0 else "S"), _rational(lat)
        gps[3], gps[4] = ("E" if lon >= 0 else "W"), _rational(lon)
        if offset is not None:
            exif.get_ifd(0x8769)[0x9011] = offset  # OffsetTimeOriginal
        im.load()
        copy = im.copy()
    copy.save(path, "JPEG", quality=85, exif=exif.tobytes())
    return path


def gps_video(path: Path, utc: str, location: str) -> Path:
    """An MP4 whose container holds a UTC creation time and an ISO 6709 position (as phones write)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10",
                    "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-metadata", f"creation_time={utc}",
                    "-metadata", f"location={location}", str(path)], check=True, timeout=60)
    return path


def rows(db: Path, where: str = "1=1") -> dict[str, dict[str, Any]]:
    cols = ("rel_path", "place_city", "place_region", "place_country", "place_cc", "place_key", "taken_at",
            "taken_at_offset", "taken_at_offset_source", "gps_lat")
    with dbq.connect(db) as conn:
        found = conn.execute(f"SELECT {', '.join(cols)} FROM files WHERE {where}").fetchall()
    return {r[0]: dict(zip(cols, r, strict=True)) for r in found}


# -- the rules, without a database -----------------------------------------------------------------

def test_dst_offsets_from_gps_north_and_south() -> None:
    # New York: EST in January, EDT in July; Sydney the other way round.
    assert locate(*NEW_YORK, "2021-01-15T12:00:00", None, "exif_original", "image").taken_at_offset == -300
    summer = locate(*NEW_YORK, "2021-07-15T12:00:00", None, "exif_original", "image")
    assert (summer.taken_at_offset, summer.offset_source) == (-240, "gps")
    assert locate(*SYDNEY, "2021-01-15T12:00:00", None, "exif_original", "image").taken_at_offset == 660
    assert locate(*SYDNEY, "2021-07-15T12:00:00", None, "exif_original", "image").taken_at_offset == 600
    # Around the change (New York, 14 March 2021, 02:00 -> 03:00): an hour before and after.
    assert locate(*NEW_YORK, "2021-03-14T01:30:00", None, "exif_original", "image").taken_at_offset == -300
    assert locate(*NEW_YORK, "2021-03-14T03:30:00", None, "exif_original", "image").taken_at_offset == -240


def test_exif_offset_is_kept_and_instants_move_to_the_local_day() -> None:
    kept = locate(*NEW_YORK, "2021-07-15T12:00:00", 120, "exif_original", "image")
    assert (kept.taken_at, kept.taken_at_offset, kept.offset_source) == ("2021-07-15T12:00:00", 120, "exif")
    # A video's container time is UTC: 03:30 UTC on 5 July is the evening of 4 July in New York.
    video = locate(*NEW_YORK, "2021-07-05T03:30:00", 0, "video", "video")
    assert (video.taken_at, video.taken_at_offset, video.offset_source) == ("2021-07-04T23:30:00", -240, "gps")
    # An mtime shown in this machine's zone (+01:00 here) is an instant too.
    mtime = locate(*LISBON, "2021-01-10T10:00:00", 60, "mtime", "image")
    assert (mtime.taken_at, mtime.taken_at_offset, mtime.offset_source) == ("2021-01-10T09:00:00", 0, "gps")
    # No GPS: the file's own offset, or none.
    assert locate(None, None, "2021-01-10T10:00:00", 60, "exif_original", "image").offset_source == "exif"
    assert locate(None, None, "2021-01-10T10:00:00", None, "exif_original", "image").offset_source == "none"
    assert locate(None, None, "2021-01-10T10:00:00", 60, "mtime", "image").offset_source == "none"
    # Computed again (the backfill after a dataset change): a 'gps' offset is not the file's own.
    again = locate(*NEW_YORK, "2021-07-15T12:00:00", -300, "exif_original", "image", previous_source="gps")
    assert (again.taken_at_offset, again.offset_source) == (-240, "gps")


@pytest.mark.parametrize("lat, lon", [(0.0, 0.0), (math.nan, 10.0), (10.0, math.inf), (90.5, 10.0),
                                      (10.0, -180.01), (-91.0, 0.0)])
def test_bad_coordinates_give_no_place_but_are_recorded(lat: float, lon: float) -> None:
    found = locate(lat, lon, "2021-07-15T12:00:00", None, "exif_original", "image")
    assert found.place is None and found.problem and found.key is not None
    assert found.offset_source == "none" and found.taken_at_offset is None


def test_places_far_from_any_town_and_across_the_date_line() -> None:
    assert places.place_at(0.5, -30.0) is None               # mid-Atlantic
    suva = places.place_at(-18.1416, 178.4419)
    assert suva is not None and suva.cc == "FJ"
    taveuni = places.place_at(-16.80, -179.99)                # just east of the 180th meridian: Fiji still
    assert taveuni is not None and taveuni.cc == "FJ"
    lisbon = places.place_at(*LISBON)
    assert lisbon == places.Place("Lisbon", "Lisbon", "Portugal", "PT")


def test_places_cache_answers_as_the_package_and_refuses_stale_or_cut_files(tmp_path: Path) -> None:
    cache = tmp_path / "places-cache.bin"
    built = places._Cities.from_package()
    built.save(cache)
    loaded = places._Cities.load(cache)
    assert loaded is not None
    for lat, lon in (LISBON, NEW_YORK, SYDNEY, (35.68, 139.76), (-16.80, -179.99), (64.1, -21.9), (0.5, -30.0)):
        assert loaded.nearest(lat, lon) == built.nearest(lat, lon)
    data = cache.read_bytes()
    cache.write_bytes(data[: len(data) // 2])
    assert places._Cities.load(cache) is None
    cache.write_bytes(data.replace(places.dataset_version().encode(), b"0:old", 1))
    assert places._Cities.load(cache) is None


coordinate = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-1000, 1000),
                       st.text(max_size=12), st.none(), st.booleans())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(coordinate, coordinate)
def test_check_position_accepts_exactly_the_points_on_earth(lat: Any, lon: Any) -> None:
    got = check_position(lat, lon)
    try:
        la, lo = float(lat), float(lon)
        numeric = not isinstance(lat, bool) and not isinstance(lon, bool)
    except (TypeError, ValueError, OverflowError):
        numeric = False
    ok = (numeric and math.isfinite(la) and math.isfinite(lo) and abs(la) <= 90 and abs(lo) <= 180
          and not (la == 0 and lo == 0))
    assert (got is not None) == ok
    if got is not None:
        assert got == (la, lo)


@settings(max_examples=300, deadline=None)
@given(st.floats(-90, 90), st.floats(-180, 180))
def test_place_keys_round_trip_and_every_position_is_placed_or_not(lat: float, lon: float) -> None:
    parsed = parse_key(place_key(lat, lon))
    assert parsed is not None and parsed[:2] == (lat, lon) and parsed[2] == places.dataset_version()
    found = locate(lat, lon, "2020-02-29T23:59:59", None, "exif_original", "image")
    if check_position(lat, lon) is None:
        assert found.place is None
    elif found.place is not None:
        assert len(found.place.cc) == 2 and found.place.cc.isupper()
    assert found.offset_source in ("gps", "none")
    if found.offset_source == "gps":
        assert found.taken_at_offset is not None and -12 * 60 <= found.taken_at_offset <= 14 * 60


@given(st.text(max_size=40))
def test_parse_key_never_raises(text: str) -> None:
    parsed = parse_key(text)
    assert parsed is None or (isinstance(parsed[0], float) and parsed[2])


# -- at scan time -----------------------------------------------------------------------------------

@pytest.fixture()
def library(env_dirs: dict[str, Path], corpus: Path) -> dict[str, Path]:
    root = env_dirs["tmp"] / "lib"
    (root / "corpus").mkdir(parents=True)
    for name in ("gps_DSCN0010.jpg", "gps_DSCN0012.jpg", "gps_DSCN0021.jpg", "Canon_40D.jpg", "no_exif.jpg"):
        shutil.copy(corpus / "jpeg" / name, root / "corpus" / name)
    shutil.copy(corpus / "heic" / "IMG_5195.HEIC", root / "corpus" / "IMG_5195.HEIC")
    gps_jpeg(root / "ny" / "winter.jpg", *NEW_YORK, "2021:01:15 12:00:00", seed=1)
    gps_jpeg(root / "ny" / "summer.jpg", *NEW_YORK, "2021:07:15 12:00:00", seed=2)
    gps_jpeg(root / "ny" / "own_offset.jpg", *NEW_YORK, "2021:07:15 12:00:00", offset="+02:00", seed=3)
    gps_jpeg(root / "syd" / "summer.jpg", *SYDNEY, "2021:01:15 12:00:00", seed=4)
    gps_jpeg(root / "lis" / "a.jpg", *LISBON, "2020:08:01 10:00:00", seed=5)
    gps_jpeg(root / "nowhere.jpg", 0.0, 0.0, "2020:08:01 10:00:00", seed=6)
    gps_video(root / "ny" / "evening.mp4", "2021-07-05T03:30:00Z", "+40.7128-074.0060/")
    res = imageapi("scan", "--full", str(root), "--json")
    assert res.returncode == 0, res.stderr
    return {"root": root, "db": env_dirs["data"] / "imageapi.db"}


def test_scan_gives_corpus_photos_their_place(library: dict[str, Path], oracle: dict[str, dict]) -> None:
    got = rows(library["db"])
    for name in ("gps_DSCN0010.jpg", "gps_DSCN0012.jpg", "gps_DSCN0021.jpg"):
        assert oracle[f"jpeg/{name}"]["GPSLatitude"]  # the oracle says it has GPS
        row = got[f"corpus/{name}"]
        # The exif-samples Nikon photos were taken in Arezzo, Tuscany.
        assert (row["place_city"], row["place_region"], row["place_country"], row["place_cc"]) == (
            "Arezzo", "Tuscany", "Italy", "IT"), row
        assert row["place_key"].endswith("@" + places.dataset_version())
        # October 2008 in Italy: CEST.
        assert (row["taken_at_offset"], row["taken_at_offset_source"]) == (120, "gps")
    heic = got["corpus/IMG_5195.HEIC"]   # an iPhone photo near Kansas City, Missouri, with its own offset
    assert (heic["place_region"], heic["place_cc"]) == ("Missouri", "US")
    assert heic["taken_at_offset_source"] == "exif"
    for name in ("Canon_40D.jpg", "no_exif.jpg"):
        assert got[f"corpus/{name}"]["place_key"] is None and got[f"corpus/{name}"]["place_cc"] is None
    # No GPS: the Canon's EXIF date has no offset; no_exif.jpg's XMP date has one (+02:00).
    assert got["corpus/Canon_40D.jpg"]["taken_at_offset_source"] == "none"
    assert (got["corpus/no_exif.jpg"]["taken_at_offset"], got["corpus/no_exif.jpg"]["taken_at_offset_source"]) == (
        120, "exif")


def test_scan_offsets_from_gps_across_dst_and_exif_offsets_kept(library: dict[str, Path]) -> None:
    got = rows(library["db"])
    assert (got["ny/winter.jpg"]["taken_at_offset"], got["ny/winter.jpg"]["taken_at_offset_source"]) == (-300, "gps")
    assert (got["ny/summer.jpg"]["taken_at_offset"], got["ny/summer.jpg"]["taken_at_offset_source"]) == (-240, "gps")
    assert (got["ny/own_offset.jpg"]["taken_at_offset"], got["ny/own_offset.jpg"]["taken_at_offset_source"]) == (
        120, "exif")
    assert got["syd/summer.jpg"]["taken_at_offset"] == 660
    assert (got["ny/summer.jpg"]["place_city"], got["ny/summer.jpg"]["place_cc"]) == ("New York City", "US")
    assert (got["lis/a.jpg"]["place_city"], got["lis/a.jpg"]["place_country"]) == ("Lisbon", "Portugal")
    # (0, 0) is what a receiver without a fix writes: no GPS, no place.
    assert got["nowhere.jpg"]["gps_lat"] is None and got["nowhere.jpg"]["place_key"] is None
    # The video's UTC time is shown at New York's wall clock: the timeline puts it on 4 July.
    info = json.loads(imageapi("info", str(library["root"] / "lis" / "a.jpg"), "--json").stdout)
    assert info["place"] == {"city": "Lisbon", "region": "Lisbon", "country": "Portugal", "cc": "PT"}
    assert (info["taken_at"], info["taken_at_offset_source"]) == ("2020-08-01T10:00:00+01:00", "gps")
    video = got["ny/evening.mp4"]
    assert (video["taken_at"], video["taken_at_offset"], video["taken_at_offset_source"]) == (
        "2021-07-04T23:30:00", -240, "gps")


# -- the backfill ---------------------------------------------------------------------------------

FORGET = ("UPDATE files SET place_city = NULL, place_region = NULL, place_country = NULL, place_cc = NULL, "
          "place_key = NULL, taken_at_offset_source = NULL")


def _as_before_places(db: Path) -> dict[str, dict[str, Any]]:
    """The rows as an index made before places existed holds them; what the scan wrote."""
    before = rows(db, "gps_lat IS NOT NULL")
    with dbq.connect(db) as conn:
        # The offsets a scan without places wrote: none for EXIF dates, UTC for the video.
        conn.execute("UPDATE files SET taken_at_offset = NULL WHERE taken_at_offset_source = 'gps' "
                     "AND kind != 'video'")
        conn.execute("UPDATE files SET taken_at = '2021-07-05T03:30:00', taken_at_offset = 0 "
                     "WHERE rel_path = 'ny/evening.mp4'")
        conn.execute(FORGET)
        conn.commit()
    return before


def test_places_backfill_fills_old_rows_like_the_scan(library: dict[str, Path]) -> None:
    before = _as_before_places(library["db"])
    res = imageapi("places", "backfill", "--max", "3", "--json")
    assert res.returncode == 0, res.stderr
    first = json.loads(res.stdout)
    assert first["placed"] == 3 and first["remaining"] == len(before) - 3
    res = imageapi("places", "backfill", "--json")
    assert json.loads(res.stdout) == {"placed": len(before) - 3, "no_place": 0, "failed": 0, "stale": 0,
                                      "remaining": 0}
    assert rows(library["db"], "gps_lat IS NOT NULL") == before


def test_backfill_redoes_rows_of_another_dataset_and_records_bad_positions(library: dict[str, Path]) -> None:
    with dbq.connect(library["db"]) as conn:
        conn.execute("UPDATE files SET place_key = '1.0,2.0@0:old', place_city = 'Nowhere' "
                     "WHERE rel_path = 'lis/a.jpg'")
        conn.execute(f"{FORGET}, gps_lat = 95.5, taken_at_offset = NULL WHERE rel_path = 'syd/summer.jpg'")
        conn.commit()
    res = imageapi("places", "backfill", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"placed": 1, "no_place": 1, "failed": 0, "stale": 1, "remaining": 0}
    got = rows(library["db"])
    assert got["lis/a.jpg"]["place_city"] == "Lisbon"
    bad = got["syd/summer.jpg"]
    assert bad["place_cc"] is None and bad["place_key"].startswith("95.5,151.209")
    assert bad["place_key"].endswith(f"@{places.dataset_version()}")
    assert bad["taken_at_offset_source"] == "none"
    # Recorded: not due again.
    assert json.loads(imageapi("places", "backfill", "--json").stdout)["remaining"] == 0


def test_worker_kind_and_watcher_tick_fill_places(library: dict[str, Path]) -> None:
    before = _as_before_places(library["db"])
    res = imageapi("worker", "--kinds", "places", "--until-empty", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["kinds"]["places"]["placed"] == len(before), report
    assert rows(library["db"], "gps_lat IS NOT NULL") == before

    _as_before_places(library["db"])
    res = imageapi("watch", "--once")
    assert res.returncode == 0, res.stderr
    assert rows(library["db"], "gps_lat IS NOT NULL") == before


# -- GET /places and `imageapi places` ---------------------------------------------------------------

def test_places_cli_tree_and_table(library: dict[str, Path], env_dirs: dict[str, Path]) -> None:
    res = imageapi("places", "--json")
    assert res.returncode == 0, res.stderr
    tree = json.loads(res.stdout)
    by_cc = {c["cc"]: c for c in tree["countries"]}
    assert tree["total"] == 10 and set(by_cc) == {"IT", "US", "AU", "PT"}
    # Most files first: the US (3 New York photos, the video, the HEIC), then Italy.
    assert [c["cc"] for c in tree["countries"]][:2] == ["US", "IT"]
    us = by_cc["US"]
    assert (us["country"], us["count"]) == ("United States", 5)
    assert [(r["region"], r["count"]) for r in us["regions"]] == [("New York", 4), ("Missouri", 1)]
    ny = us["regions"][0]["cities"]
    assert [(c["city"], c["count"]) for c in ny] == [("New York City", 4)]
    assert ny[0]["cover"]["library"] == "main" and ny[0]["cover"]["path"].startswith("ny/")
    assert us["cover"] == ny[0]["cover"]
    it = by_cc["IT"]["regions"][0]
    assert (it["region"], it["cities"][0]["city"], it["count"]) == ("Tuscany", "Arezzo", 3)

    other = env_dirs["tmp"] / "other"
    gps_jpeg(other / "x.jpg", *LISBON, "2020:08:01 10:00:00", seed=9)
    assert imageapi("library", "add", "other", str(other)).returncode == 0
    assert imageapi("scan", "--library", "other").returncode == 0
    only = json.loads(imageapi("places", "--library", "other", "--json").stdout)
    assert only["total"] == 1 and only["countries"][0]["regions"][0]["cities"][0]["cover"]["library"] == "other"
    assert json.loads(imageapi("places", "--json").stdout)["total"] == 11

    table = imageapi("places", env={**os.environ, "COLUMNS": "160"})
    assert table.returncode == 0, table.stderr
    for text in ("United States (US)", "New York City", "Tuscany", "Arezzo", "Lisbon", "11 files with a place"):
        assert text in table.stdout, table.stdout
    missing = imageapi("places", "--library", "nope")
    assert missing.returncode != 0 and "nope" in missing.stderr


async def test_get_places(library: dict[str, Path], aiohttp_client: Any) -> None:
    from imageapi.core.config import load_config
    from imageapi.core.db import connect
    from imageapi.core.tokens import TokenService
    from imageapi.core.users import add_user, hash_password
    from imageapi.server.app import create_app

    config = load_config(environ={**os.environ, "SECRET_KEY": SECRET})
    db = await connect(config.database)
    try:
        user = await add_user(db, "alice", hash_password("correct horse battery"))
    finally:
        await db.close()
    client = await aiohttp_client(create_app(config))
    auth = {"Authorization": f"Bearer {TokenService(SECRET).issue(user, 3600).token}"}
    r = await client.get("/places", headers=auth)
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["total"] == 10
    city = body["countries"][0]["regions"][0]["cities"][0]
    assert set(city["cover"]) >= {"id", "library", "path", "name", "kind", "taken_at"}
    r = await client.get("/places", params={"library": "main"}, headers=auth)
    assert (await r.json())["total"] == 10
    r = await client.get("/places", params={"library": "nope"}, headers=auth)
    assert r.status == 404 and (await r.json())["error"]["code"]
    assert (await client.get("/places")).status == 401
