"""Search (core/search.py, GET /search, `imageapi search`): every field is found, folded and by
prefix; filters combine; cursor pages cover every result once; the index follows the writes that
change what a file is found by (through the database's triggers) and `rebuild` repairs an index
that drifted; no query, however odd, is a 500. On SQLite and (IMAGEAPI_TEST_DATABASE=postgresql)
PostgreSQL."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imageapi.core import search as core
from imageapi.core.config import Config, load_config
from imageapi.core.database import insert, transaction
from imageapi.core.db import Connection, connect
from imageapi.core.errors import UsageError
from imageapi.core.faces.people import create_person, draw_face, rename_person
from imageapi.core.libraries import add_library, remove_library, sync_base_path
from imageapi.core.tags import add_tags, remove_tags
from imageapi.core.tokens import TokenService
from imageapi.core.users import add_user, hash_password
from imageapi.server.app import create_app

SECRET = "search-test-secret-key-long-enough-0123456789"


@dataclass
class Ctx:
    db: Connection
    config: Config
    tmp: Path

    async def add(self, path: str, *, lib: int = 1, kind: str = "image", taken: str | None = "2020-01-01T12:00:00",
                  content_hash: str | None = None, **cols: Any) -> int:
        names = ["library_id", "rel_path", "dir", "kind", "size", "mtime_ns", "taken_at", "content_hash",
                 "first_seen", "last_seen", *cols]
        values = [lib, path, path.rpartition("/")[0], kind, 1, 1, taken, content_hash or f"h-{path}", "x", "x",
                  *cols.values()]
        return await insert(self.db, f"INSERT INTO files ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                            values)

    async def find(self, text: str = "", **kw: Any) -> list[str]:
        """Paths found (every page), in order."""
        out: list[str] = []
        cursor = None
        while True:
            page = await core.search(self.db, self.config, core.SearchQuery(text=text, cursor=cursor, **kw))
            out += [i["path"] for i in page.items]
            if page.next_cursor is None:
                return out
            cursor = page.next_cursor

    async def sql(self, statement: str, params: tuple[object, ...] = ()) -> None:
        async with transaction(self.db):
            await self.db.execute(statement, params)


def _config(tmp: Path) -> Config:
    (tmp / "lib").mkdir(exist_ok=True)
    env = {"IMAGEAPI_DATA_DIR": str(tmp / "data"), "BASE_PATH": str(tmp / "lib"), "SECRET_KEY": SECRET}
    if os.environ.get("DATABASE_URL"):
        env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    return load_config(environ=env, cwd=tmp)


@pytest.fixture()
async def ctx(env_dirs: dict[str, Path]) -> AsyncIterator[Ctx]:
    cfg = _config(env_dirs["tmp"])
    db = await connect(cfg.database)
    await sync_base_path(db, cfg)
    try:
        yield Ctx(db, cfg, env_dirs["tmp"])
    finally:
        await db.close()


# ------------------------------------------------------------------------------------------- text

@pytest.mark.parametrize(("text", "folded"), [
    ("Lisboa", ["lisboa"]), ("São Paulo", ["sao", "paulo"]), ("STRAßE", ["strasse"]), ("İstanbul", ["istanbul"]),
    ("Ångström_x-y", ["angstrom", "x", "y"]), ('"*():^-NEAR AND OR', ["near", "and", "or"]), ("a\x00b", ["a", "b"]),
    ("ｆｕｌｌ", ["full"]), ("Zürich", ["zurich"]),
])
def test_tokens_fold_case_and_accents(text: str, folded: list[str]) -> None:
    assert core.tokens(text) == folded


@given(st.text(max_size=600))
@settings(max_examples=400, deadline=None)
def test_query_parser_takes_any_text_as_words_or_refuses_it(text: str) -> None:
    """Whatever is typed becomes quoted tokens of letters and digits, or a UsageError."""
    from imageapi.core.repositories.search import Terms, fts_match, pg_tsquery

    try:
        words = core.parse_words(text)
    except UsageError as exc:
        assert "\x00" in text or len(text) > core.MAX_QUERY or "too many words" in exc.message
        return
    for w, _ in words:
        assert w and all(c.isalnum() for c in w) and len(w) <= core.MAX_TOKEN
    if words:
        match = fts_match(Terms(words))
        assert match.count('"') == 2 * len(words)
        assert pg_tsquery(Terms(words)).count("'") == 2 * len(words)


# ----------------------------------------------------------------------------------------- fields

HOLIDAY = "Holidays 2019/beach/IMG_0042.JPG"


async def test_each_field_is_searchable(ctx: Ctx) -> None:
    await ctx.add("a/city.jpg", place_city="Lisboa")
    await ctx.add("a/region.jpg", place_region="Andalucía")
    await ctx.add("a/country.jpg", place_country="Portugal", place_cc="PT")
    await ctx.add("a/make.jpg", make="FUJIFILM", model="X-T4")
    await ctx.add("a/lens.jpg", lens="XF23mmF1.4 R")
    await ctx.add(HOLIDAY)
    await ctx.add("a/tag.jpg", content_hash="ht")
    await ctx.add("a/person.jpg", content_hash="hp")
    await ctx.add("a/unnamed.jpg", content_hash="hu")
    await ctx.add("a/insight.jpg", content_hash="hi")
    await add_tags(ctx.db, ["ht"], ["Sunset Glow"])
    await create_person(ctx.db, "Anna Müller")
    await draw_face(ctx.db, "hp", (0.1, 0.1, 0.2, 0.2), "Anna Müller")
    await draw_face(ctx.db, "hu", (0.1, 0.1, 0.2, 0.2))
    await ctx.sql("INSERT INTO insights (content_hash, title, body, tools, backend, server, model, failovers, "
                  "timings, created_at) VALUES ('hi', 'Morning at the Gulbenkian', '', '[]', 'local', 'x', 'm', '[]', "
                  "'{}', 'x')")
    expect = {
        "lisboa": "a/city.jpg", "andalucia": "a/region.jpg", "portugal": "a/country.jpg", "pt": "a/country.jpg",
        "fujifilm": "a/make.jpg", "t4": "a/make.jpg", "xf23mmf1": "a/lens.jpg",
        "img_0042": HOLIDAY, "holidays": HOLIDAY, "beach": HOLIDAY,
        "sunset glow": "a/tag.jpg", "anna": "a/person.jpg", "muller": "a/person.jpg", "gulbenkian": "a/insight.jpg",
        "unnamed": "a/unnamed.jpg",
    }
    for text, path in expect.items():
        assert await ctx.find(text) == [path], text


async def test_prefix_folding_and_one_letter_words(ctx: Ctx) -> None:
    await ctx.add("x/1.jpg", place_city="Lisboa")
    await ctx.add("x/2.jpg", place_city="São Paulo")
    await ctx.add("x/3.jpg", place_city="Straße")
    await ctx.add("x/a.jpg")
    assert await ctx.find("lisb") == ["x/1.jpg"]
    assert await ctx.find("LIS") == ["x/1.jpg"]
    assert await ctx.find("sao") == ["x/2.jpg"]
    assert await ctx.find("SÃO pau") == ["x/2.jpg"]
    assert await ctx.find("strasse") == ["x/3.jpg"]
    assert await ctx.find("lisbon") == []
    assert await ctx.find("a") == ["x/a.jpg"]        # one letter: the whole word only
    assert await ctx.find("lisb sao") == []          # every word


async def test_long_prefixes_with_few_and_many_terms(ctx: Ctx) -> None:
    """A word longer than the prefix indexes stands for the terms it begins (SQLite asks for them
    by name when there are at most 32, else as a prefix): the same files either way."""
    for i in range(40):
        await ctx.add(f"t/alpha{i:02d}.jpg", taken=f"2022-01-01T10:00:{i:02d}")
    await ctx.add("t/alphabet soup.jpg", taken="2021-01-01T10:00:00")
    assert await ctx.find("alpha0") == [f"t/alpha{i:02d}.jpg" for i in range(9, -1, -1)]
    assert len(await ctx.find("alph")) == 41
    assert len(await ctx.find("alpha", date_to="2021-12-31")) == 1
    assert await ctx.find("alphab") == ["t/alphabet soup.jpg"]
    assert await ctx.find("alphax") == []
    await ctx.sql("UPDATE files SET rel_path = 't/omega.jpg' WHERE rel_path = 't/alphabet soup.jpg'")
    assert await ctx.find("alphab") == []          # its term may stay known: it finds nothing
    assert await ctx.find("omeg") == ["t/omega.jpg"]


async def test_a_file_without_words_is_found_by_its_filters(ctx: Ctx) -> None:
    await ctx.add("__/@.~", content_hash="hw")
    await ctx.add("x/words.jpg")
    assert await ctx.find("", kinds=["photo"]) == ["x/words.jpg", "__/@.~"]   # same time: newer id first
    assert await ctx.find("", kinds=["photo"], libraries=["main"], sort="oldest") == [
        "__/@.~", "x/words.jpg"]


# ---------------------------------------------------------------------------------------- filters

async def test_filters_combine(ctx: Ctx) -> None:
    (ctx.tmp / "lib2").mkdir()
    other = await add_library(ctx.db, "other", ctx.tmp / "lib2")
    await ctx.add("f/old.jpg", taken="2018-05-01T10:00:00", make="Canon", model="Canon EOS 5D",
                  gps_lat=38.7, gps_lon=-9.1)
    await ctx.add("f/summer.jpg", taken="2019-07-15T10:00:00", make="Canon", model="Canon EOS 5D",
                  gps_lat=38.7, gps_lon=-9.1, content_hash="hs")
    await ctx.add("f/summer.mp4", kind="video", taken="2019-08-01T10:00:00", make="Canon", model="Canon EOS 5D")
    await ctx.add("f/summer.cr2", kind="raw", taken="2019-07-20T10:00:00", make="Canon", model="Canon EOS 5D")
    await ctx.add("f/nikon.jpg", taken="2019-07-16T10:00:00", make="NIKON", model="D750", gps_lat=-33.9, gps_lon=151.2)
    await ctx.add("f/fiji.jpg", taken="2019-07-17T10:00:00", gps_lat=-17.7, gps_lon=178.0)
    await ctx.add("f/samoa.jpg", taken="2019-07-18T10:00:00", gps_lat=-13.8, gps_lon=-172.0)
    await ctx.add("f/undated.jpg", taken=None)
    await ctx.add("f/elsewhere.jpg", lib=other.id, taken="2019-07-15T11:00:00", make="Canon", model="Canon EOS 5D")
    await add_tags(ctx.db, ["hs"], ["Family"])
    summer = {"date_from": "2019-06-01", "date_to": "2019-08-31"}
    assert await ctx.find("f", **summer) == [
        "f/summer.mp4", "f/summer.cr2", "f/samoa.jpg", "f/fiji.jpg", "f/nikon.jpg", "f/elsewhere.jpg", "f/summer.jpg"]
    assert await ctx.find("", camera="canon eos", **summer) == [
        "f/summer.mp4", "f/summer.cr2", "f/elsewhere.jpg", "f/summer.jpg"]
    assert await ctx.find("", camera="canon", kinds=["photo"], libraries=["main"], **summer) == ["f/summer.jpg"]
    assert await ctx.find("", camera="canon", kinds=["photo", "raw"], libraries=["main"], **summer) == [
        "f/summer.cr2", "f/summer.jpg"]
    assert await ctx.find("summ", kinds=["video"]) == ["f/summer.mp4"]
    assert await ctx.find("", libraries=["other"]) == ["f/elsewhere.jpg"]
    assert await ctx.find("", tags=["family"]) == ["f/summer.jpg"]
    assert await ctx.find("", tags=["nobody tagged this"]) == []
    assert await ctx.find("f", has_gps=True, date_to="2019-07-16") == ["f/nikon.jpg", "f/summer.jpg", "f/old.jpg"]
    assert set(await ctx.find("f", has_gps=False)) == {
        "f/summer.mp4", "f/summer.cr2", "f/undated.jpg", "f/elsewhere.jpg"}
    assert await ctx.find("", bbox="38,-10,39,-9") == ["f/summer.jpg", "f/old.jpg"]
    # west > east: the box crosses the antimeridian (Fiji to Samoa), and nothing at 151°E is in it
    assert await ctx.find("", bbox="-20,170,-10,-170") == ["f/samoa.jpg", "f/fiji.jpg"]
    assert await ctx.find("", date_from="2019-07-15T10:30:00", date_to="2019-07-16T10:00:00") == [
        "f/nikon.jpg", "f/elsewhere.jpg"]
    # undated files sort as the oldest, as in GET /photos
    assert (await ctx.find("f", sort="oldest"))[:3] == ["f/undated.jpg", "f/old.jpg", "f/summer.jpg"]
    assert (await ctx.find("f"))[-1] == "f/undated.jpg"


async def test_person_filter_means_all_of_them(ctx: Ctx) -> None:
    for name, hashes in (("Anna", ["h1", "h2"]), ("Bruno", ["h2", "h3"])):
        await create_person(ctx.db, name)
        for h in hashes:
            await draw_face(ctx.db, h, (0.1, 0.1, 0.2, 0.2), name)
    for i in (1, 2, 3):
        await ctx.add(f"p/{i}.jpg", content_hash=f"h{i}")
    await ctx.add("p/copy-of-2.jpg", content_hash="h2")   # the same content at another path
    assert set(await ctx.find("", persons=["anna"])) == {"p/1.jpg", "p/2.jpg", "p/copy-of-2.jpg"}
    assert set(await ctx.find("", persons=["Anna", "BRUNO"])) == {"p/2.jpg", "p/copy-of-2.jpg"}
    anna = (await core.repo.persons(ctx.db))[0][0]
    assert set(await ctx.find("", persons=[str(anna), "bruno"])) == {"p/2.jpg", "p/copy-of-2.jpg"}
    assert await ctx.find("", persons=["anna", "nobody"]) == []


@pytest.mark.parametrize("sort", ["newest", "oldest", "relevance"])
async def test_cursor_pages_cover_every_result_once(ctx: Ctx, sort: str) -> None:
    ids = []
    for i in range(57):
        taken = None if i % 9 == 0 else f"2021-03-{1 + i % 5:02d}T10:00:{i % 3:02d}"   # many equal times
        extra = {"place_city": "Lisbon Lisbon"} if i % 4 == 0 else {}
        ids.append(await ctx.add(f"c/IMG_{i:03d}.jpg", taken=taken, **extra))
    await ctx.add("c/other.png", place_city="Porto")
    everything = await ctx.find("img", sort=sort, limit=1000)
    assert len(everything) == 57
    for limit in (1, 5, 56):
        paged = await ctx.find("img lisb" if sort == "relevance" else "img", sort=sort, limit=limit)
        if sort == "relevance":
            assert sorted(paged) == sorted(p for p in everything if int(p[6:9]) % 4 == 0)
        else:
            assert paged == everything
    page = await core.search(ctx.db, ctx.config, core.SearchQuery(text="img", sort=sort, limit=2))
    assert page.next_cursor
    other = "oldest" if sort != "oldest" else "newest"
    with pytest.raises(UsageError, match="another sort"):
        await core.search(ctx.db, ctx.config, core.SearchQuery(text="img", sort=other, cursor=page.next_cursor))


async def test_relevance_pages_with_a_bounding_box_and_a_date_range(ctx: Ctx) -> None:
    """Relevance ranks in the index before the files are read (PostgreSQL): the filters on the
    files' own columns still apply to every page."""
    inside = set()
    for i in range(40):
        lat = 38.7 if i % 2 else 41.1
        path = f"b/IMG_{i:03d}.jpg"
        await ctx.add(path, taken=f"2021-0{1 + i % 3}-10T10:00:00", gps_lat=lat, gps_lon=-9.1,
                      place_city="Lisbon" if i % 5 else "Lisbon Lisbon")
        if lat < 39 and i % 3 != 2:
            inside.add(path)
    for limit in (1, 7, 100):
        found = await ctx.find("lisbon img", sort="relevance", bbox="38,-10,39,-9", limit=limit,
                               date_from="2021-01-01", date_to="2021-02-28")
        assert len(found) == len(set(found)) and set(found) == inside


# ---------------------------------------------------------------------------- keeping the index

async def test_index_follows_rename_retag_delete_and_people(ctx: Ctx) -> None:
    a = await ctx.add("k/IMG_1.jpg", content_hash="hk")
    await ctx.add("k/copy/IMG_1.jpg", content_hash="hk")
    assert len(await ctx.find("img_1")) == 2
    await ctx.sql("UPDATE files SET rel_path = 'k/Lisbon trip.jpg' WHERE id = ?", (a,))
    assert await ctx.find("lisbon") == ["k/Lisbon trip.jpg"]
    assert await ctx.find("img_1") == ["k/copy/IMG_1.jpg"]
    await add_tags(ctx.db, ["hk"], ["Azulejo"])
    assert sorted(await ctx.find("azul")) == ["k/Lisbon trip.jpg", "k/copy/IMG_1.jpg"]   # both files of the content
    await remove_tags(ctx.db, ["hk"], ["azulejo"])
    assert await ctx.find("azul") == []
    await ctx.sql("UPDATE files SET place_city = 'Sintra', gps_lat = 38.8, gps_lon = -9.4 WHERE id = ?", (a,))
    assert await ctx.find("sintra", has_gps=True) == ["k/Lisbon trip.jpg"]
    await create_person(ctx.db, "Carla")
    await draw_face(ctx.db, "hk", (0.1, 0.1, 0.2, 0.2), "Carla")
    assert len(await ctx.find("carla")) == 2
    await rename_person(ctx.db, "Carla", "Dora")
    assert await ctx.find("carla") == []
    assert len(await ctx.find("dora")) == 2
    await ctx.sql("DELETE FROM files WHERE id = ?", (a,))
    assert await ctx.find("sintra") == []
    assert await ctx.find("dora") == ["k/copy/IMG_1.jpg"]
    await ctx.sql("UPDATE files SET taken_at = '1999-12-31T23:59:59' WHERE rel_path = 'k/copy/IMG_1.jpg'")
    assert await ctx.find("dora", date_to="1999-12-31") == ["k/copy/IMG_1.jpg"]
    assert (await core.status(ctx.db)).dirty == 0


async def test_scans_keep_the_index(ctx: Ctx) -> None:
    """A real scan: new files are found by name and camera, a renamed file by its new name only,
    a deleted one no more."""
    from imageapi.core.libraries import get_library
    from imageapi.core.pool import WorkerPool
    from imageapi.core.scan import ScanTarget, run_scan
    from tests.media_factory import make_jpeg

    root = ctx.tmp / "lib"
    make_jpeg(root / "Açores" / "ponta.jpg", (64, 48), taken="2021:05:01 10:00:00", seed=1)
    make_jpeg(root / "Açores" / "furnas.jpg", (64, 48), taken="2021:05:02 10:00:00", seed=2)
    lib = await get_library(ctx.db, "main")
    pool = WorkerPool(1)
    try:
        await run_scan(ctx.db, ctx.config, [ScanTarget(lib)], "full", pool)
        assert await ctx.find("acores") == ["Açores/furnas.jpg", "Açores/ponta.jpg"]
        (root / "Açores" / "ponta.jpg").rename(root / "Açores" / "sete cidades.jpg")
        (root / "Açores" / "furnas.jpg").unlink()
        await run_scan(ctx.db, ctx.config, [ScanTarget(lib)], "full", pool)
    finally:
        pool.close()
    assert await ctx.find("acores") == ["Açores/sete cidades.jpg"]
    assert await ctx.find("ponta") == []
    assert await ctx.find("furnas") == []


async def test_removing_a_library_removes_its_documents(ctx: Ctx) -> None:
    (ctx.tmp / "lib2").mkdir()
    other = await add_library(ctx.db, "other", ctx.tmp / "lib2")
    await ctx.add("r/Faro.jpg", lib=other.id)
    await ctx.add("r/Faro.jpg")
    assert len(await ctx.find("faro")) == 2
    await remove_library(ctx.db, "other")
    assert await ctx.find("faro") == ["r/Faro.jpg"]
    assert (await core.status(ctx.db)).documents == 1


async def test_rebuild_fixes_a_drifted_index(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "ANALYZE_AFTER", 1)  # PostgreSQL: the statistics are renewed too
    a = await ctx.add("d/one.jpg", place_city="Faro")
    await ctx.add("d/two.jpg", place_city="Braga")
    assert await ctx.find("faro") == ["d/one.jpg"]
    # Drift: a change whose mark is lost, and a document removed behind the index's back.
    await ctx.sql("UPDATE files SET place_city = 'Evora' WHERE id = ?", (a,))
    await ctx.sql("DELETE FROM search_dirty WHERE file_id IS NOT NULL")
    assert await ctx.find("evora") == []
    assert await ctx.find("faro") == ["d/one.jpg"]
    made = await core.rebuild(ctx.db)
    assert made == 2
    assert await ctx.find("evora") == ["d/one.jpg"]
    assert await ctx.find("faro") == []
    assert await ctx.find("braga") == ["d/two.jpg"]
    st = await core.status(ctx.db)
    assert (st.documents, st.dirty) == (2, 0)


@pytest.mark.parametrize(("kw", "message"), [
    ({"text": "x" * 10_000}, "too long"),
    ({"text": "a\x00b"}, "NUL"),
    ({"text": " ".join(f"w{i}" for i in range(40))}, "too many words"),
    ({"text": ""}, "give words"),
    ({"text": "x", "bbox": "0,0,91,1"}, "latitudes"),
    ({"text": "x", "bbox": "0,-181,1,1"}, "longitudes"),
    ({"text": "x", "bbox": "1,2,3"}, "four numbers"),
    ({"text": "x", "bbox": "nan,0,1,1"}, "finite"),
    ({"text": "x", "bbox": "5,0,1,1"}, "south"),
    ({"text": "x", "date_from": "2020-02-01", "date_to": "2020-01-01"}, "after"),
    ({"text": "x", "date_from": "yesterday"}, "date"),
    ({"text": "x", "cursor": "garbage!"}, "cursor"),
    ({"text": "x", "cursor": "WyJuZXdlc3QiLC0xLG51bGxd"}, "cursor"),     # ["newest",-1,null]
    ({"text": "x", "kinds": ["pdf"]}, "kind"),
    ({"text": "x", "libraries": ["nope"]}, "no library"),
    ({"text": "x", "sort": "size"}, "sort"),
    ({"text": "x", "camera": "---"}, "camera"),
])
async def test_bad_queries_are_usage_errors(ctx: Ctx, kw: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        await core.search(ctx.db, ctx.config, core.SearchQuery(**kw))


async def test_fts_syntax_is_plain_text(ctx: Ctx) -> None:
    await ctx.add("s/near and or.jpg")
    await ctx.add("s/plain.jpg")
    for text in ['"*():^-NEAR AND OR', 'near"', "NEAR(and or)", "{near}: and*", "-and ^or", "'or'", "and:*|or"]:
        assert await ctx.find(text) == ["s/near and or.jpg"], text
    with pytest.raises(UsageError, match="give words"):  # only separators: no words and no filter
        await ctx.find('"""')


# ------------------------------------------------------------------------------------ the endpoint

@pytest.fixture()
async def client(ctx: Ctx, aiohttp_client: Any) -> AsyncIterator[tuple[TestClient[Any, Any], dict[str, str]]]:
    user = await add_user(ctx.db, "alice", hash_password("correct horse battery"))
    await ctx.add("w/Lisboa 1.jpg", taken="2019-07-01T10:00:00", gps_lat=38.7, gps_lon=-9.1)
    await ctx.add("w/Lisboa 2.jpg", taken="2019-07-02T10:00:00")
    app = create_app(ctx.config, watch=False)
    cl = await aiohttp_client(app)
    yield cl, {"Authorization": f"Bearer {TokenService(SECRET).issue(user, 3600).token}"}


async def test_endpoint_answers_items_like_photos(client: tuple[TestClient[Any, Any], dict[str, str]]) -> None:
    cl, auth = client
    res = await cl.get("/search", params={"q": "lisb", "limit": "1"}, headers=auth)
    body = await res.json()
    assert res.status == 200, body
    assert [i["path"] for i in body["items"]] == ["w/Lisboa 2.jpg"]
    item = body["items"][0]
    assert item["library"] == "main" and item["name"] == "Lisboa 2.jpg" and "absolute_path" not in item
    photos = await (await cl.get("/photos", params={"library": "main", "path": "w"}, headers=auth)).json()
    assert set(item) == set(photos["items"][0])
    res = await cl.get("/search", params={"q": "lisb", "limit": "1", "cursor": body["next_cursor"]}, headers=auth)
    assert [i["path"] for i in (await res.json())["items"]] == ["w/Lisboa 1.jpg"]
    res = await cl.get("/search", params=[("q", "lisboa"), ("gps", "true"), ("bbox", "38,-10,39,-9")], headers=auth)
    assert [i["path"] for i in (await res.json())["items"]] == ["w/Lisboa 1.jpg"]
    res = await cl.get("/search", params={"q": "lisb", "bbox": "0,0,95,1"}, headers=auth)
    body = await res.json()
    assert res.status == 400 and body["error"]["code"] == "bad_request" and "latitude" in body["error"]["message"]
    assert (await cl.get("/search", params={"q": "x"})).status == 401


QUERY_TEXT = st.one_of(
    st.text(max_size=80),
    st.sampled_from(['"', '"lis', "*", "()", "NEAR(a b)", "a AND", "OR", "NOT x", "^x", "-x", ":", "x" * 10_000,
                     "\x00", "lisb*", "{body}:x", "'a':*", "a & b | !c", "<->"]),
)
PARAMS = st.fixed_dictionaries({"q": QUERY_TEXT}, optional={
    "bbox": st.one_of(st.text(max_size=30),
                      st.tuples(*[st.floats(-200, 200)] * 4).map(lambda t: ",".join(map(str, t)))),
    "from": st.one_of(st.text(max_size=20), st.dates().map(str)),
    "to": st.one_of(st.text(max_size=20), st.dates().map(str)),
    "cursor": st.one_of(st.text(max_size=40),
                        st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode())),
    "kind": st.sampled_from(["photo", "video", "raw", "x", "photo,raw", ""]),
    "person": st.text(max_size=10),
    "tag": st.text(max_size=10),
    "camera": st.text(max_size=10),
    "gps": st.sampled_from(["true", "false", "maybe", ""]),
    "sort": st.sampled_from(["newest", "oldest", "relevance", "size"]),
    "limit": st.sampled_from(["1", "0", "1001", "x", "50"]),
})


async def test_endpoint_never_fails_on_odd_queries(client: tuple[TestClient[Any, Any], dict[str, str]]) -> None:
    cl, auth = client

    @given(PARAMS)
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    def check(params: dict[str, str]) -> None:
        calls.append(params)

    calls: list[dict[str, str]] = []
    check()
    for params in calls:
        res = await cl.get("/search", params=params, headers=auth)
        body = await res.json()
        assert res.status in (200, 400), (params, body)
        if res.status == 400:
            assert set(body) == {"error"} and body["error"]["message"], body
    assert len(calls) >= 50


# ----------------------------------------------------------------------------------------- the CLI

async def test_cli_search_and_rebuild(ctx: Ctx) -> None:
    # In a subprocess, as users run it (an in-process CliRunner leaves state behind that later
    # tests of the server's fast path trip over).
    import subprocess
    import sys

    await ctx.add("cli/Porto.jpg", make="Canon")
    await ctx.add("cli/other.jpg")
    env = {**os.environ, "IMAGEAPI_DATA_DIR": str(ctx.tmp / "data"), "BASE_PATH": str(ctx.tmp / "lib")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "imageapi", *args], capture_output=True, text=True,
                              env=env, timeout=120)

    res = await _in_thread(cli, "search", "port", "--camera", "canon", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert [i["path"] for i in out["items"]] == ["cli/Porto.jpg"] and out["next_cursor"] is None
    res = await _in_thread(cli, "search", "port", "--bbox", "91,0,0,0")
    assert res.returncode == 2 and "latitude" in res.stderr
    res = await _in_thread(cli, "search", "rebuild", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"documents": 2, "dirty": 0, "made": 2}


async def _in_thread(fn: Any, *args: Any) -> Any:
    import asyncio

    return await asyncio.to_thread(fn, *args)
