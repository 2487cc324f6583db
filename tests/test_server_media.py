# ruff: noqa: F811  (pytest fixtures imported from tests.test_server_support are parameters here)
"""GET /image (thumb, preview, full), /image/metadata, /video: bytes, caching headers, 304, Range,
thumbnails made on the fly, and the traversal list."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from imageapi.core.errors import PathOutsideLibraryError
from imageapi.core.libraries import clean_relative
from imageapi.server.keys import THUMB_CACHE
from imageapi.server.middlewares import ApiError
from imageapi.server.params import _plain, client_path
from tests.test_server_support import (  # noqa: F401  (fixtures)
    Server,
    Template,
    assert_error,
    server,
    template,
)


async def test_thumb_is_the_stored_thumbnail(server: Server) -> None:
    r = await server.client.get("/image", params={"path": "2020/a.jpg"}, headers=server.auth)
    assert r.status == 200
    assert r.headers["Content-Type"] == "image/jpeg"
    body = await r.read()
    stored = server.config.thumbnails / "main" / "2020" / "a.jpg"
    assert body == stored.read_bytes()
    assert r.headers["ETag"].startswith('"') and r.headers["Last-Modified"].endswith("GMT")
    assert "max-age" in r.headers["Cache-Control"]
    im = Image.open(io.BytesIO(body))
    assert max(im.size) <= server.config.thumb_size


async def test_thumb_304_by_etag_and_date(server: Server) -> None:
    r = await server.client.get("/image", params={"path": "2020/a.jpg"}, headers=server.auth)
    etag, modified = r.headers["ETag"], r.headers["Last-Modified"]
    r = await server.client.get("/image", params={"path": "2020/a.jpg"},
                                headers={**server.auth, "If-None-Match": etag})
    assert r.status == 304 and r.headers["ETag"] == etag and await r.read() == b""
    r = await server.client.get("/image", params={"path": "2020/a.jpg"},
                                headers={**server.auth, "If-None-Match": '"other", W/' + etag})
    assert r.status == 304
    r = await server.client.get("/image", params={"path": "2020/a.jpg"},
                                headers={**server.auth, "If-Modified-Since": modified})
    assert r.status == 304
    r = await server.client.get("/image", params={"path": "2020/a.jpg"},
                                headers={**server.auth, "If-None-Match": '"stale"'})
    assert r.status == 200
    r = await server.client.get("/image", params={"path": "2020/a.jpg"},
                                headers={**server.auth, "If-Modified-Since": "garbage"})
    assert r.status == 200


async def test_thumb_cache_notices_a_replaced_file(server: Server) -> None:
    params = {"path": "2020/a.jpg"}
    cache = server.app[THUMB_CACHE]
    cache.recheck = 60.0
    first = await (await server.client.get("/image", params=params, headers=server.auth)).read()
    assert len(cache) >= 1
    stored = server.config.thumbnails / "main" / "2020" / "a.jpg"
    replacement = io.BytesIO()
    Image.new("RGB", (10, 10), (1, 2, 3)).save(replacement, "JPEG")
    tmp = stored.with_name(".replacement")
    tmp.write_bytes(replacement.getvalue())
    os.replace(tmp, stored)
    # Within the recheck window the cached bytes are served without a stat ...
    again = await (await server.client.get("/image", params=params, headers=server.auth)).read()
    assert again == first
    # ... and once it has passed, the file is checked and the new bytes served.
    cache.recheck = 0.0
    second = await (await server.client.get("/image", params=params, headers=server.auth)).read()
    assert second == replacement.getvalue() != first


async def test_missing_thumbnail_is_made_on_the_fly(server: Server) -> None:
    stored = server.config.thumbnails / "main" / "2021" / "c.jpg"
    stored.unlink()
    with server.db() as conn:
        conn.execute("UPDATE files SET thumb_state = 'pending' WHERE rel_path = '2021/c.jpg'")
    r = await server.client.get("/image", params={"path": "2021/c.jpg"}, headers=server.auth)
    assert r.status == 200
    assert stored.is_file() and await r.read() == stored.read_bytes()
    with server.db() as conn:
        state = conn.execute("SELECT thumb_state FROM files WHERE rel_path = '2021/c.jpg'").fetchone()[0]
    assert state == "done"


async def test_unsupported_file_is_415(server: Server) -> None:
    r = await server.client.get("/image", params={"path": "bad.jpg"}, headers=server.auth)
    assert r.status == 415
    assert_error(await r.json(), "unsupported_media")
    r = await server.client.get("/image", params={"path": "bad.jpg", "size": "preview"}, headers=server.auth)
    assert r.status == 415
    assert_error(await r.json(), "unsupported_media")


async def test_preview_is_an_upright_large_jpeg(server: Server) -> None:
    r = await server.client.get("/image", params={"path": "2020/b.jpg", "size": "preview"}, headers=server.auth)
    assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg"
    im = Image.open(io.BytesIO(await r.read()))
    assert im.size == (640, 480)  # stored 480x640 with orientation 6: turned upright
    etag = r.headers["ETag"]
    r = await server.client.get("/image", params={"path": "2020/b.jpg", "size": "preview"},
                                headers={**server.auth, "If-None-Match": etag})
    assert r.status == 304
    r = await server.client.get("/image", params={"path": "green.png", "size": "preview"}, headers=server.auth)
    assert r.status == 200 and Image.open(io.BytesIO(await r.read())).format == "JPEG"


async def test_preview_of_raw_and_heic(server: Server, template: Template) -> None:
    if not (template.root / "raw.cr2").exists():
        pytest.skip("corpus not available")
    for rel in ("raw.cr2", "phone.heic"):
        r = await server.client.get("/image", params={"path": rel, "size": "preview"}, headers=server.auth)
        assert r.status == 200, rel
        im = Image.open(io.BytesIO(await r.read()))
        assert im.format == "JPEG" and max(im.size) <= 2048 and max(im.size) > 400, rel


async def test_full_is_the_original_with_ranges(server: Server, template: Template) -> None:
    original = (template.root / "2020" / "a.jpg").read_bytes()
    r = await server.client.get("/image", params={"path": "2020/a.jpg", "size": "full"}, headers=server.auth)
    assert r.status == 200 and await r.read() == original
    assert r.headers["Content-Type"] == "image/jpeg" and r.headers["Accept-Ranges"] == "bytes"
    etag, modified = r.headers["ETag"], r.headers["Last-Modified"]
    r = await server.client.get("/image", params={"path": "2020/a.jpg", "size": "full"},
                                headers={**server.auth, "Range": "bytes=10-19"})
    assert r.status == 206 and await r.read() == original[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(original)}"
    r = await server.client.get("/image", params={"path": "2020/a.jpg", "size": "full"},
                                headers={**server.auth, "Range": "bytes=-5"})
    assert r.status == 206 and await r.read() == original[-5:]
    r = await server.client.get("/image", params={"path": "2020/a.jpg", "size": "full"},
                                headers={**server.auth, "Range": f"bytes={len(original) + 10}-"})
    assert r.status == 416
    r = await server.client.get("/image", params={"path": "2020/a.jpg", "size": "full"},
                                headers={**server.auth, "If-None-Match": etag})
    assert r.status == 304
    r = await server.client.get("/image", params={"path": "2020/a.jpg", "size": "full"},
                                headers={**server.auth, "If-Modified-Since": modified})
    assert r.status == 304


async def test_full_names_the_type_of_originals(server: Server, template: Template) -> None:
    r = await server.client.get("/image", params={"path": "green.png", "size": "full"}, headers=server.auth)
    assert r.headers["Content-Type"] == "image/png"
    if (template.root / "phone.heic").exists():
        r = await server.client.get("/image", params={"path": "phone.heic", "size": "full"}, headers=server.auth)
        assert r.headers["Content-Type"] == "image/heic"


async def test_video_with_ranges(server: Server, template: Template) -> None:
    if not (template.root / "clip.mp4").exists():
        pytest.skip("corpus not available")
    original = (template.root / "clip.mp4").read_bytes()
    r = await server.client.get("/video", params={"path": "clip.mp4"}, headers=server.auth)
    assert r.status == 200 and r.headers["Content-Type"] == "video/mp4" and await r.read() == original
    r = await server.client.get("/video", params={"path": "clip.mp4"},
                                headers={**server.auth, "Range": "bytes=0-1023"})
    assert r.status == 206 and await r.read() == original[:1024]
    r = await server.client.get("/image", params={"path": "clip.mp4"}, headers=server.auth)
    assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg"  # its thumbnail
    r = await server.client.get("/video", params={"path": "2020/a.jpg"}, headers=server.auth)
    assert r.status == 400
    assert_error(await r.json(), "bad_request")


async def test_metadata(server: Server) -> None:
    r = await server.client.get("/image/metadata", params={"path": "2020/a.jpg"}, headers=server.auth)
    assert r.status == 200
    meta = await r.json()
    assert meta["path"] == "2020/a.jpg" and meta["name"] == "a.jpg" and meta["kind"] == "image"
    assert meta["make"] == "TestCam" and meta["width"] == 640 and meta["taken_at"].startswith("2020-06-01T10:00:00")
    assert meta["tags"] == [] and len(meta["content_hash"]) == 64
    assert "absolute_path" not in meta and "path" not in meta["thumbnail"]  # no server paths leak
    r = await server.client.get("/image/metadata", params={"path": "name with spaces & ünïcode.jpg"},
                                headers=server.auth)
    assert r.status == 200


@pytest.mark.parametrize("endpoint,code", [
    ("/image", "not_found"), ("/image/metadata", "not_found"), ("/video", "not_found"),
])
async def test_unknown_file_is_404(server: Server, endpoint: str, code: str) -> None:
    r = await server.client.get(endpoint, params={"path": "2020/nope.jpg"}, headers=server.auth)
    assert r.status == 404
    assert_error(await r.json(), code)


async def test_unknown_library_and_bad_parameters(server: Server) -> None:
    r = await server.client.get("/image", params={"path": "2020/a.jpg", "library": "nope"}, headers=server.auth)
    assert r.status == 404
    assert_error(await r.json(), "not_found")
    r = await server.client.get("/image", params={"path": "2020/a.jpg", "size": "huge"}, headers=server.auth)
    assert r.status == 400
    assert_error(await r.json(), "bad_parameter")
    r = await server.client.get("/image", headers=server.auth)
    assert r.status == 400
    assert_error(await r.json(), "missing_parameter")


TRAVERSALS = [
    "../etc/passwd",
    "2020/../../etc/passwd",
    "..",
    "/etc/passwd",
    "//etc/passwd",
    "C:/Windows/win.ini",
    "..\\..\\etc\\passwd",
    "2020\\..\\..\\x",
    "%2e%2e/etc/passwd",
    "%2e%2e%2fetc%2fpasswd",
    "%252e%252e/etc/passwd",
    "%25252e%25252e/x",
    "..%2f..%2fetc%2fpasswd",
    "..%5c..%5cetc",
    "2020/a.jpg\x00.png",
    "2020/a.jpg%00",
    "\x00",
    "link_out.jpg",
    "linkdir/secret.jpg",
    "linkdir/passwd",
    ".%2e/x",
    "%2fetc%2fpasswd",
]


@pytest.mark.parametrize("endpoint", ["/image", "/image/metadata", "/video", "/image/tags", "/faces"])
@pytest.mark.parametrize("size", ["thumb", "full"])
async def test_traversal_list_is_refused(server: Server, endpoint: str, size: str) -> None:
    if endpoint != "/image" and size != "thumb":
        return
    for bad in TRAVERSALS:
        params = {"path": bad, "size": size} if endpoint == "/image" else {"path": bad}
        r = await server.client.get(endpoint, params=params, headers=server.auth)
        assert r.status in (400, 404), (endpoint, size, bad, r.status)
        body = await r.json()
        assert_error(body)
        # Nothing from outside the library, whatever the refusal.
        assert "root:" not in body["error"]["message"]


async def test_symlink_in_the_index_is_refused(server: Server) -> None:
    """link_out.jpg is in the index (see the template) but points outside the library."""
    for size in ("full", "preview", "thumb"):
        r = await server.client.get("/image", params={"path": "link_out.jpg", "size": size}, headers=server.auth)
        assert r.status == 400, size
        assert_error(await r.json(), "bad_path")


async def test_raw_encoded_query_paths(server: Server) -> None:
    """Paths exactly as a hostile client writes them in the URL."""
    for raw in ("%2e%2e%2fetc%2fpasswd", "%252e%252e%252fetc", "..%252f..%252fetc", "%2fetc%2fpasswd",
                "2020%2f..%2f..%2fx", "%00", "%5c..%5c"):
        r = await server.client.get(f"/image?size=full&path={raw}", headers=server.auth)
        assert r.status in (400, 404), raw
        assert_error(await r.json())


async def test_head_request(server: Server, tmp_path: Path) -> None:
    r = await server.client.head("/image", params={"path": "2020/a.jpg"}, headers=server.auth)
    assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg"


@given(st.text(alphabet=st.sampled_from(list("ab./\\%:\x00\x1f é2")), max_size=12))
@settings(max_examples=400, deadline=None)
def test_fast_path_agrees_with_the_core_guard(raw: str) -> None:
    """client_path's shortcut for plain paths returns exactly what clean_relative would, and
    never lets through anything clean_relative refuses."""
    try:
        expected: str | None = clean_relative(raw)
    except PathOutsideLibraryError:
        expected = None
    if _plain(raw):
        assert expected == raw
    try:
        got: str | None = client_path(raw, required=False)
    except (PathOutsideLibraryError, ApiError):
        got = None
    if expected is None:
        assert got is None
    elif got is not None:
        assert got == expected
