"""Duplicates and near-duplicates: exact groups across libraries, near groups of generated copies
of a corpus photo, burst frames kept apart, the best copy to keep, `imageapi duplicates` (--json,
--near, --library, backfill), `imageapi worker --kinds phash`, GET /duplicates (paging, malformed
parameters), stacking in the listing and the timeline; and no file is ever deleted or changed."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageEnhance

from imageapi.core import duplicates
from imageapi.core.config import load_config
from imageapi.core.db import connect
from imageapi.core.duplicates import NEAR_FINE, NEAR_PHASH, best_to_keep, near_groups_of
from imageapi.core.phash import distance, hashes_of, inner
from imageapi.core.repositories.duplicates import MemberRow
from imageapi.core.tokens import TokenService
from imageapi.core.users import add_user, get_user, hash_password
from imageapi.server.app import create_app
from tests import dbq
from tests.test_server_support import SECRET, AiohttpClient

ORIGINAL = "jpeg/gps_DSCN0010.jpg"   # 640x480, EXIF date, GPS, camera
OTHERS = ("jpeg/gps_DSCN0012.jpg", "jpeg/gps_DSCN0021.jpg")
VARIANTS = ("resized", "q60", "png", "bright")
BURST = ("1.00", "1.04", "1.10")     # seconds into the corpus clip: frames a burst apart


def imageapi(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imageapi", *args], capture_output=True, text=True, env=env,
                          timeout=180)


def ok(*args: str, env: dict[str, str]) -> Any:
    res = imageapi(*args, env=env)
    assert res.returncode == 0, (args, res.stdout, res.stderr)
    return json.loads(res.stdout) if "--json" in args else res.stdout


def snapshot(*roots: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under the roots: size, mtime and a digest of its bytes."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                st = p.stat()
                out[str(p)] = (st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@dataclass
class Libs:
    env: dict[str, str]
    a: Path
    b: Path
    before: dict[str, tuple[int, int, str]]


def _variants(src: Path, dest: Path) -> None:
    with Image.open(src) as im:
        exif = im.info.get("exif", b"")
        img = im.convert("RGB")
    w, h = img.size
    img.resize((w // 2, h // 2), Image.Resampling.LANCZOS).save(dest / "resized.jpg", quality=90, exif=exif)
    img.save(dest / "q60.jpg", quality=60)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    Image.open(io.BytesIO(buf.getvalue())).convert("RGB").save(dest / "png.jpg", quality=92)
    ImageEnhance.Brightness(img).enhance(1.1).save(dest / "bright.jpg", quality=92)


@pytest.fixture()
def libs(env_dirs: dict[str, Path], corpus: Path) -> Libs:
    """Library `a`: a corpus photo, four re-made copies of it, two other photos and three frames of
    a clip a burst apart; library `b`: a byte-for-byte copy of the photo (older than `a`'s)."""
    a, b = env_dirs["tmp"] / "A", env_dirs["tmp"] / "B"
    (a / "copies").mkdir(parents=True)
    b.mkdir()
    (a / "original.jpg").write_bytes((corpus / ORIGINAL).read_bytes())
    (b / "same.jpg").write_bytes((corpus / ORIGINAL).read_bytes())
    os.utime(b / "same.jpg", ns=(1_500_000_000 * 10**9, 1_500_000_000 * 10**9))
    os.utime(a / "original.jpg", ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    _variants(corpus / ORIGINAL, a / "copies")
    for rel in OTHERS:
        (a / Path(rel).name).write_bytes((corpus / rel).read_bytes())
    for t in BURST:
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", t, "-i", str(corpus / "video" / "clip_6s.mp4"),
                        "-frames:v", "1", "-q:v", "2", str(a / f"burst_{t}.jpg")], check=True, timeout=60)
    env = dict(os.environ)
    env["WORKERS"] = "1"
    ok("library", "add", "a", str(a), env=env)
    ok("library", "add", "b", str(b), env=env)
    return Libs(env, a, b, snapshot(a, b))


def paths(group: dict[str, Any]) -> set[str]:
    return {f"{m['library']}/{m['path']}" for m in group["members"]}


def test_exact_and_near_groups_keep_bursts_apart_and_touch_no_file(libs: Libs) -> None:
    ok("scan", "--json", env=libs.env)   # the scan computes the perceptual hashes after the thumbnails
    exact = ok("duplicates", "--json", env=libs.env)
    assert [paths(g) for g in exact["groups"]] == [{"a/original.jpg", "b/same.jpg"}]
    [g] = exact["groups"]
    keep = [m for m in g["members"] if m["keep"]]
    assert [(m["library"], m["path"]) for m in keep] == [("b", "same.jpg")]  # same pixels and metadata: oldest
    assert "oldest" in g["keep_reason"] and g["kind"] == "exact" and g["count"] == 2
    member = g["members"][0]
    assert member["width"] == 640 and member["height"] == 480 and member["size"] > 0
    assert member["taken_at"].startswith("2008-") and member["gps"] is True

    near = ok("duplicates", "--near", "--json", env=libs.env)
    assert [paths(g) for g in near["groups"]] == [
        {"a/original.jpg", "b/same.jpg", *(f"a/copies/{v}.jpg" for v in VARIANTS)}]
    # The half-size copy and the ones without EXIF are never the one to keep.
    kept = [m for m in near["groups"][0]["members"] if m["keep"]]
    assert [m["path"] for m in kept] == ["same.jpg"]

    # Only library b's groups (the exact pair has a member there), and an unknown library.
    assert len(ok("duplicates", "--library", "b", "--json", env=libs.env)["groups"]) == 1
    res = imageapi("duplicates", "--library", "nope", env=libs.env)
    assert res.returncode == 4 and "nope" in res.stderr
    text = ok("duplicates", "--near", env=libs.env)
    assert "keep" in text and "a/copies/q60.jpg" in text and "1 groups" in text
    assert snapshot(libs.a, libs.b) == libs.before


def test_burst_frames_are_not_near_duplicates(libs: Libs) -> None:
    ok("scan", "--json", env=libs.env)
    near = ok("duplicates", "--near", "--json", env=libs.env)
    grouped = {p for g in near["groups"] for p in paths(g)}
    assert not any("burst" in p for p in grouped), near
    assert not any("DSCN0012" in p or "DSCN0021" in p for p in grouped)
    # ...although their coarse hashes are as close as some copies': the finer hash tells them apart.
    conn = dbq.connect(Path(libs.env["IMAGEAPI_DATA_DIR"]) / "imageapi.db")
    try:
        rows = conn.execute("SELECT f.rel_path, p.phash, p.fine FROM files f JOIN perceptual_hashes p "
                            "ON p.content_hash = f.content_hash WHERE f.rel_path LIKE 'burst%' "
                            "ORDER BY f.rel_path").fetchall()
    finally:
        conn.close()
    assert len(rows) == 3
    assert distance(rows[0][1], rows[1][1]) <= NEAR_PHASH
    assert distance(rows[0][2], rows[1][2]) > NEAR_FINE
    # They are reported as similar pictures (a burst), apart from the copies and the other photos.
    similar = ok("duplicates", "--similar", "--json", env=libs.env)
    assert similar["kind"] == "similar"
    # (1.04 and 1.10 s: 6 coarse bits apart; the 1.00 s frame is 10 and 14 bits from them, which the
    # band tables may not pair: bursts are found as far as the coarse hashes are close.)
    [group] = [paths(g) for g in similar["groups"]]
    assert {"a/burst_1.04.jpg", "a/burst_1.10.jpg"} <= group <= {f"a/burst_{t}.jpg" for t in BURST}
    res = imageapi("duplicates", "--near", "--similar", env=libs.env)
    assert res.returncode == 2


def test_backfill_and_worker_kind_fill_missing_hashes(libs: Libs) -> None:
    ok("scan", "--json", env=libs.env)
    db_file = Path(libs.env["IMAGEAPI_DATA_DIR"]) / "imageapi.db"
    conn = dbq.connect(db_file)
    try:
        pictures = conn.execute("SELECT COUNT(DISTINCT content_hash) FROM files").fetchone()[0]
        assert conn.execute("SELECT COUNT(*) FROM perceptual_hashes WHERE phash IS NOT NULL").fetchone()[0] \
            == pictures == 10
        conn.execute("DELETE FROM perceptual_hashes")   # as an index made before perceptual hashes
        conn.commit()
    finally:
        conn.close()
    assert ok("duplicates", "--near", "--json", env=libs.env)["groups"] == []
    ok("scan", "--quick", "--json", env=libs.env)   # made no thumbnail: does not look for due hashes
    assert ok("duplicates", "--near", "--json", env=libs.env)["groups"] == []
    assert ok("duplicates", "backfill", "--max", "4", "--json", env=libs.env) == \
        {"hashed": 4, "failed": 0, "remaining": 6}
    report = ok("worker", "--kinds", "phash", "--until-empty", "--json", env=libs.env)
    assert report["kinds"]["phash"]["hashed"] == 6, report
    assert ok("duplicates", "backfill", "--json", env=libs.env) == {"hashed": 0, "failed": 0, "remaining": 0}
    assert len(ok("duplicates", "--near", "--json", env=libs.env)["groups"]) == 1
    assert snapshot(libs.a, libs.b) == libs.before


def _row(i: int, *, w: int | None = 100, h: int | None = 100, date: bool = False, gps: bool = False,
         camera: bool = False, mtime: int = 10) -> MemberRow:
    return MemberRow(i, 1, "main", f"p{i}.jpg", "image", 1000, mtime, f"c{i}", w, h, 1, "2020-01-01T00:00:00",
                     None, "exif_original" if date else "mtime", "Canon" if camera else None, None,
                     1.0 if gps else None)


def test_best_to_keep_rule() -> None:
    # Largest original first, whatever the metadata and age.
    best, why = best_to_keep([_row(1, date=True, gps=True, camera=True, mtime=1), _row(2, w=200, mtime=99)])
    assert best.id == 2 and "largest" in why and "200x100" in why
    # Same size: most metadata (EXIF date, GPS, camera).
    best, why = best_to_keep([_row(1, date=True, mtime=1), _row(2, date=True, gps=True, camera=True, mtime=9)])
    assert best.id == 2 and "most metadata" in why and "GPS" in why
    # Same size and metadata: the oldest file.
    best, why = best_to_keep([_row(1, mtime=9), _row(2, mtime=3), _row(3, mtime=5)])
    assert best.id == 2 and "oldest" in why
    # Unknown dimensions count as smallest.
    assert best_to_keep([_row(1, w=None, h=None, mtime=1), _row(2, w=10, h=10, mtime=5)])[0].id == 2


def test_near_groups_are_transitive_and_need_the_fine_hash(corpus: Path) -> None:
    with Image.open(corpus / ORIGINAL) as im:
        img = im.convert("RGB")

    def of(picture: Image.Image) -> tuple[str, str, str, str]:
        return (*hashes_of(picture), *hashes_of(inner(picture)))

    a = of(img)
    b = of(ImageEnhance.Brightness(img).enhance(1.1))
    c = of(img.resize((320, 240)))
    w, h = img.size
    cropped = of(img.crop((16, 12, w - 16, h - 12)))     # 5% of each side's length cut off
    other = of(Image.open(corpus / OTHERS[0]).convert("RGB"))
    groups = near_groups_of([("a", *a), ("b", *b), ("c", *c), ("d", *cropped), ("x", *other)])
    assert groups == [["a", "b", "c", "d"]]
    # The crop is found through the centre of the whole picture, not through the whole ones.
    assert near_groups_of([("a", a[0], a[1], a[0], a[1]), ("d", *cropped)]) == []
    # The same coarse hash with a far finer one: not a near-duplicate.
    flipped = f"{int(a[1], 16) ^ ((1 << 200) - 1):064x}"
    assert near_groups_of([("a", *a), ("z", a[0], flipped, a[2], flipped)]) == []


# ------------------------------------------------------------------------------------ the server

@dataclass
class Api:
    client: TestClient
    auth: dict[str, str]

    async def get(self, url: str, status: int = 200, **params: Any) -> Any:
        r = await self.client.get(url, params={k: str(v) for k, v in params.items()}, headers=self.auth)
        assert r.status == status, (url, params, r.status, await r.text())
        return await r.json()


@pytest.fixture()
async def api(libs: Libs, aiohttp_client: AiohttpClient) -> AsyncIterator[Api]:
    ok("scan", "--json", env=libs.env)
    env = {**libs.env, "SECRET_KEY": SECRET}
    config = load_config(environ=env, cwd=Path.cwd())
    db = await connect(config.database)
    try:
        await add_user(db, "alice", hash_password("correct horse battery"))
        user = await get_user(db, "alice")
    finally:
        await db.close()
    client = await aiohttp_client(create_app(config, watch=False))
    yield Api(client, {"Authorization": f"Bearer {TokenService(SECRET).issue(user, 3600).token}"})


async def test_endpoint_pages_groups(api: Api, libs: Libs) -> None:
    body = await api.get("/duplicates")
    assert body["kind"] == "exact" and body["next_cursor"] is None
    assert [paths(g) for g in body["groups"]] == [{"a/original.jpg", "b/same.jpg"}]
    near = await api.get("/duplicates", near="true")
    assert len(near["groups"]) == 1 and near["groups"][0]["count"] == 6
    assert (await api.get("/duplicates", library="a"))["library"] == "a"
    # Two more exact pairs, then pages of one group each: every group once, in order.
    for i in range(2):
        (libs.a / f"again{i}.jpg").write_bytes((libs.a / OTHERS[i].split("/")[1]).read_bytes())
    ok("scan", "--json", env=libs.env)
    everything = [g["key"] for g in (await api.get("/duplicates"))["groups"]]
    assert len(everything) == 3 and everything == sorted(everything)
    seen, cursor = [], None
    while True:
        page = await api.get("/duplicates", limit=1, **({"cursor": cursor} if cursor else {}))
        seen += [g["key"] for g in page["groups"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == everything
    # A cursor of the exact listing is refused by the near one.
    first = await api.get("/duplicates", limit=1)
    err = await api.get("/duplicates", 400, near="true", cursor=first["next_cursor"])
    assert err["error"]["code"] == "bad_request"
    await api.get("/duplicates", 404, library="nope")
    err = await api.get("/duplicates", 400, near="true", similar="true")
    assert err["error"]["code"] == "bad_parameter"
    similar = await api.get("/duplicates", similar="true")
    assert similar["kind"] == "similar" and all(g["kind"] == "similar" for g in similar["groups"])


async def test_endpoint_never_500(api: Api) -> None:
    """Malformed parameters get a 400 (or 404 for a library that does not exist), never a 500.
    Hypothesis draws the cases; they are then sent to the live app."""
    text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
    cursors = st.one_of(text, st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode()),
                        st.builds(lambda k, n: base64.urlsafe_b64encode(json.dumps(["dups", n, k]).encode()).decode(),
                                  st.one_of(text, st.integers(), st.none()),
                                  st.one_of(st.sampled_from(["exact", "near", "similar"]), st.booleans(), text)))
    cases: list[dict[str, str]] = []

    flags = st.one_of(st.sampled_from(["true", "0", "yes", ""]), text)

    @settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(near=flags, similar=flags, library=st.one_of(st.just("a"), text), cursor=cursors,
           limit=st.one_of(text, st.integers(-5, 10**6).map(str)))
    def draw(near: str, similar: str, library: str, cursor: str, limit: str) -> None:
        cases.append({"near": near, "similar": similar, "library": library, "cursor": cursor, "limit": limit})

    draw()
    for params in cases:
        r = await api.client.get("/duplicates", params=params, headers=api.auth)
        body = await r.json()
        assert r.status in (200, 400, 404), (params, r.status, body)
        assert ("groups" in body) if r.status == 200 else (set(body) == {"error"}), (params, body)


async def test_stacks_in_listing_and_timeline(api: Api, libs: Libs) -> None:
    plain = await api.get("/photos", library="a", recursive="true", limit=1000)
    assert all("stack" not in i for i in plain["items"])
    body = await api.get("/photos", library="a", recursive="true", limit=1000, stack="true")
    stacks = {i["path"]: i["stack"] for i in body["items"]}
    group = {p for p, s in stacks.items() if s is not None}
    assert group == {"original.jpg", *(f"copies/{v}.jpg" for v in VARIANTS)}
    tops = [p for p in group if stacks[p]["top"]]
    assert tops == ["original.jpg"] and {stacks[p]["count"] for p in group} == {5}
    assert len({stacks[p]["group"] for p in group}) == 1
    assert all(stacks[p] is None for p in stacks if "burst" in p)
    # The timeline of every library: the stack is the whole group, on top the oldest full-size copy
    # (in b); the copies without EXIF are in other months, with the same stack.
    items = (await api.get("/timeline/items", month="2008-10", stack="true"))["items"]
    by_path = {(i["library"], i["path"]): i["stack"] for i in items}
    assert by_path[("b", "same.jpg")]["top"] is True and by_path[("a", "original.jpg")]["top"] is False
    assert by_path[("b", "same.jpg")]["count"] == 6 and by_path[("a", "copies/resized.jpg")]["top"] is False
    assert by_path[("b", "same.jpg")]["group"] == stacks["original.jpg"]["group"]
    assert snapshot(libs.a, libs.b) == libs.before


async def test_a_collapsed_timeline_shows_one_file_per_stack(api: Api, libs: Libs,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """?collapse=true: the copies under a stack's top are neither counted by the buckets nor listed
    by the items, whose pages (offset, limit) count what is shown; they come back when the stack
    loses its copies. No file is touched."""
    every = await api.get("/timeline/buckets")
    collapsed = await api.get("/timeline/buckets", collapse="true")
    items = (await api.get("/timeline/items", month="2008-10", stack="true"))["items"]
    under = {(i["library"], i["path"]) for i in items if i["stack"] and not i["stack"]["top"]}
    months = {m["month"]: m for m in every["months"]}
    left_out = {m["month"]: months[m["month"]]["count"] - m["count"] for m in collapsed["months"]}
    left_out.update({m: months[m]["count"] for m in months if m not in left_out})  # months with only copies
    assert sum(left_out.values()) >= len(under) > 0
    for m in collapsed["months"]:
        assert m["count"] == sum(d["count"] for d in m["days"]) or m["month"] == "undated"
    for month in collapsed["months"]:
        shown = (await api.get("/timeline/items", month=month["month"], collapse="true"))["items"]
        assert len(shown) == month["count"]
        assert all(i["stack"] is None or i["stack"]["top"] for i in shown)
        paged = []
        for offset in range(0, month["count"], 2):
            paged += (await api.get("/timeline/items", month=month["month"], collapse="true", offset=offset,
                                    limit=2))["items"]
        assert paged == shown
    kept = (await api.get("/timeline/items", month="2008-10", collapse="true"))["items"]
    assert not under & {(i["library"], i["path"]) for i in kept}
    assert ("b", "same.jpg") in {(i["library"], i["path"]) for i in kept}
    assert snapshot(libs.a, libs.b) == libs.before

    # A new copy of a photo is left out as soon as it is indexed (the stacking follows the files).
    monkeypatch.setattr(duplicates, "COLLAPSE_FRESH_SEC", 0.0)

    async def left_out_in_all() -> int:
        every = await api.get("/timeline/buckets")
        collapsed = await api.get("/timeline/buckets", collapse="true")
        return sum(m["count"] for m in every["months"]) - sum(m["count"] for m in collapsed["months"])

    before = await left_out_in_all()
    (libs.a / "again.jpg").write_bytes((libs.a / OTHERS[0].split("/")[1]).read_bytes())
    ok("scan", "--json", env=libs.env)
    assert await left_out_in_all() == before + 1
