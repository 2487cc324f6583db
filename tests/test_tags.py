# ruff: noqa: F811  (pytest fixtures imported from tests.test_server_support are parameters here)
"""One tag however it is typed: case in any script, Unicode normalization and spacing make no new
tag (core/tags.py), migration 11 merges the tags an older version made twice without losing any
file's link, and the HTTP API follows."""

from __future__ import annotations

import sqlite3
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imageapi.core.db import apply_migrations, connect
from imageapi.core.errors import UsageError
from imageapi.core.migrations import MIGRATIONS
from imageapi.core.tags import add_tags, clean_tag, list_tags, remove_tags, tag_key, tags_for_hashes
from tests.test_server_support import Server, Template, server, template  # noqa: F401

NFC_E = "\u00e9"      # é, one code point (what most keyboards send)
NFD_E = "e\u0301"     # e + combining acute (what macOS file names and some keyboards send)


@pytest.mark.parametrize(("a", "b"), [
    (f"{NFC_E}t{NFC_E}", f"{NFD_E}t{NFD_E}"),
    ("ÉTÉ", f"{NFC_E}t{NFC_E}"),
    (f"E\u0301T{NFC_E}", "été"),
    ("Straße", "STRASSE"),
    ("ΣΊΣΥΦΟΣ", "σίσυφος"),
    ("  Holiday   2020 ", "holiday 2020"),
    ("Ǆ", "ǆ"),
])
def test_spellings_of_one_tag_have_one_key(a: str, b: str) -> None:
    assert tag_key(clean_tag(a)) == tag_key(clean_tag(b))


@pytest.mark.parametrize(("a", "b"), [("été", "ete"), ("resume", "résumé"), ("a b", "ab"), ("1", "١")])
def test_different_tags_keep_different_keys(a: str, b: str) -> None:
    assert tag_key(a) != tag_key(b)


@given(st.text(min_size=1, max_size=20))
@settings(max_examples=300, deadline=None)
def test_key_is_a_fixed_point_of_every_spelling(text: str) -> None:
    """Normalizing or case-folding a tag never changes its key."""
    try:
        tag = clean_tag(text)
    except UsageError:
        return
    key = tag_key(tag)
    for form in ("NFC", "NFD"):
        assert tag_key(unicodedata.normalize(form, tag)) == key
    assert tag_key(tag.casefold()) == key
    assert tag_key(key) == key


@pytest.mark.parametrize("bad", ["", "   ", "a\x00b", "a\x9bb", "\ud800", "x" * 101, 3])
def test_bad_tags_are_refused(bad: object) -> None:
    with pytest.raises(UsageError):
        clean_tag(bad)


def test_stored_spelling_is_the_one_typed() -> None:
    assert clean_tag(f" {NFD_E}t{NFD_E}  ") == f"{NFD_E}t{NFD_E}"


async def test_one_tag_however_it_is_typed(tmp_path: Path) -> None:
    db = await connect(tmp_path / "t.db")
    try:
        assert await add_tags(db, ["h1"], [f"{NFD_E}t{NFD_E}"]) == 1
        assert await add_tags(db, ["h1", "h2"], ["ÉTÉ", f"{NFC_E}t{NFC_E}"]) == 1  # only h2 is new
        first = f"{NFD_E}t{NFD_E}"  # the spelling it was made with
        assert await list_tags(db) == [{"name": first, "count": 0}]  # no files indexed
        assert await tags_for_hashes(db, ["h1", "h2"]) == {"h1": [first], "h2": [first]}
        assert await remove_tags(db, ["h1"], ["E\u0301TE\u0301"]) == 1
        assert await tags_for_hashes(db, ["h1", "h2"]) == {"h1": [], "h2": [first]}
    finally:
        await db.close()


# ----------------------------------------------------------------- migration 11


def _old_database(path: Path) -> sqlite3.Connection:
    """A database as the versions before migration 11 left it."""
    conn = sqlite3.connect(path, isolation_level=None)
    apply_migrations(conn, [m for m in MIGRATIONS if m.version < 11])
    return conn


def test_migration_merges_equal_tags_and_keeps_every_link(tmp_path: Path) -> None:
    conn = _old_database(tmp_path / "old.db")
    spellings = [(1, f"{NFD_E}t{NFD_E}"), (2, "ÉTÉ"), (3, f"{NFC_E}t{NFC_E}"), (4, "Beach"), (5, "STRASSE"),
                 (6, "straße")]
    conn.executemany("INSERT INTO tags (id, name, created_at) VALUES (?, ?, 'then')", spellings)
    links = [("h1", 1), ("h2", 2), ("h3", 3), ("h1", 3), ("h4", 4), ("h5", 5), ("h6", 6), ("h5", 6)]
    conn.executemany("INSERT INTO content_tags (content_hash, tag_id, created_at) VALUES (?, ?, 'then')", links)
    before = {(h, tag_key(dict(spellings)[t])) for h, t in links}

    assert apply_migrations(conn) == [m.version for m in sorted(MIGRATIONS, key=lambda m: m.version)
                                      if m.version >= 11]
    tags = conn.execute("SELECT id, name, key FROM tags ORDER BY id").fetchall()
    assert tags == [(1, f"{NFD_E}t{NFD_E}", "été"), (4, "Beach", "beach"), (5, "STRASSE", "strasse")]
    after = {(h, k) for h, k in conn.execute(
        "SELECT ct.content_hash, t.key FROM content_tags ct JOIN tags t ON t.id = ct.tag_id")}
    assert after == before  # no file lost a tag
    assert conn.execute("SELECT COUNT(*) FROM content_tags").fetchone()[0] == 6
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO tags (name, key, created_at) VALUES ('Été', 'été', 'now')")
    conn.close()


async def test_tag_written_without_a_key_is_still_found(tmp_path: Path) -> None:
    """Rows written by hand (or by a tool that does not know the key) still match by name."""
    db = await connect(tmp_path / "t.db")
    try:
        await db.execute("INSERT INTO tags (name, created_at) VALUES ('Beach', 'now')")
        assert await add_tags(db, ["h1"], ["beach"]) == 1
        assert [t["name"] for t in await list_tags(db)] == ["Beach"]
    finally:
        await db.close()


# ----------------------------------------------------------------- over HTTP


async def test_http_tags_differing_in_normalization_or_case_are_one(server: Server) -> None:
    for spelling in (f"{NFC_E}t{NFC_E}", f"{NFD_E}t{NFD_E}", "ÉTÉ", f"{NFC_E}T{NFC_E}"):
        r = await server.client.post("/image/tags", json={"path": "2020/a.jpg", "tag": spelling}, headers=server.auth)
        assert r.status == 200, await r.text()
    body = await (await server.client.get("/tags", headers=server.auth)).json()
    assert [t["name"] for t in body["tags"]] == [f"{NFC_E}t{NFC_E}"]
    for spelling in ("ÉTÉ", f"{NFD_E}t{NFD_E}"):
        r = await server.client.get("/photos", params={"tag": spelling}, headers=server.auth)
        paths = sorted(i["path"] for i in (await r.json())["items"])
        assert paths == ["2020/a.jpg", "dup.jpg"], spelling  # dup.jpg is the same content
    r = await server.client.delete("/image/tags", json={"path": "2020/a.jpg", "tag": "Été"}, headers=server.auth)
    assert (await r.json())["files"] == [{"path": "2020/a.jpg", "tags": []}]
