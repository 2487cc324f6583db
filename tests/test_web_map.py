"""The web client's map page and search box in a real browser (Playwright driving Debian's
Chromium, as tests/test_web_browser.py), against `imageapi serve` on 127.0.0.1 with a library of
generated JPEGs with GPS indexed by `imageapi scan`. MAP_TILE_URL is `none`: no tile server, the
clusters on a plain background, nothing fetched from elsewhere (the tests run offline)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import REPO
from tests.media_factory import make_jpeg
from tests.test_web_browser import (
    AXE,
    AXE_RUN,
    PASSWORD,
    SECRET,
    TIMEOUT_MS,
    USER,
    _imageapi,
    _require_browser,
    launch_chromium,
    serve_for_browser,
)

EVIL = "<img src=x onerror=alert(1)>.jpg"
LISBON = [(38.7223 + i * 0.002, -9.1393 + i * 0.002) for i in range(8)]
ELSEWHERE = {"sydney/harbour_at_dusk.jpg": (-33.8568, 151.2153), "tokyo/shrine.jpg": (35.6764, 139.6993),
             EVIL: (48.8584, 2.2945)}


@dataclass
class Served:
    base: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    _require_browser()
    tmp = tmp_path_factory.mktemp("webmap")
    root = tmp / "library"
    for i, gps in enumerate(LISBON):
        make_jpeg(root / "lisbon" / f"IMG_{i:04d}.jpg", gps=gps, seed=i, taken=f"2022:05:0{1 + i % 8} 10:00:00")
    for seed, (rel, gps) in enumerate(ELSEWHERE.items(), start=100):
        make_jpeg(root / rel, gps=gps, seed=seed)
    make_jpeg(root / "no_place.jpg", seed=200)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "THUMBNAILS", "VIDEO_PATH", "BASE_PATH")}
    env.update({"IMAGEAPI_DATA_DIR": str(tmp / "data"), "SECRET_KEY": SECRET, "WORKERS": "1",
                "PYTHONPATH": str(REPO), "LOG_LEVEL": "warn", "MAP_TILE_URL": "none"})
    _imageapi(env, "scan", "--full", str(root))
    _imageapi(env, "user", "add", USER, "--password-stdin", stdin=PASSWORD + "\n")
    with serve_for_browser(env, tmp) as base:
        yield Served(base)


@pytest.fixture(scope="module")
def browser(served: Served) -> Iterator[Any]:
    with launch_chromium() as b:
        yield b


@pytest.fixture()
def page(browser: Any, served: Served) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    p = context.new_page()
    p.dialogs = []
    p.on("dialog", lambda d: (p.dialogs.append(d.message), d.dismiss()))
    p.errors = []
    p.on("pageerror", lambda e: p.errors.append(str(e)))
    p.elsewhere = []  # requests to any other host than the server's
    p.on("request", lambda r: None if r.url.startswith(served.base) else p.elsewhere.append(r.url))
    try:
        yield p
    finally:
        context.close()


def _log_in(page: Any, served: Served, then: str = "/web/map") -> None:
    page.goto(served.base + "/web/login?next=" + quote(then))
    page.fill("#username", USER)
    page.fill("#password", PASSWORD)
    page.click("form.login button[type=submit]")
    page.wait_for_url(served.base + then)


def _clusters(page: Any) -> list[int]:
    page.wait_for_selector(".map-box[data-loaded]")
    return page.evaluate("""() => [...document.querySelectorAll('.map-cluster .n')]
        .map(n => Number(n.textContent.replace(/[^0-9]/g, '')))""")


def test_the_map_shows_clusters_with_their_counts_without_a_tile_server(page: Any, served: Served) -> None:
    _log_in(page, served)
    page.wait_for_selector(".map-cluster")
    counts = _clusters(page)
    photos = page.locator(".map-photo").count()
    with_gps = len(LISBON) + len(ELSEWHERE)
    assert len(LISBON) in counts and sum(counts) + photos == with_gps
    assert page.locator(".leaflet-tile").count() == 0  # a plain background
    assert page.locator(".toolbar .count").inner_text().startswith(f"{with_gps} photos")
    # The cover of a cluster is a thumbnail of the library, loaded.
    page.wait_for_function("""() => [...document.querySelectorAll('.map-cluster img')]
        .some(i => i.complete && i.naturalWidth > 0)""")
    assert not page.elsewhere and not page.errors and not page.dialogs


def test_clicking_a_cluster_zooms_in_until_its_photos_open_the_viewer(page: Any, served: Served) -> None:
    _log_in(page, served)
    page.wait_for_selector(".map-cluster")
    titles = "() => [...document.querySelectorAll('.leaflet-marker-icon')].map(m => m.title)"
    assert f"{len(LISBON)} photos" in page.evaluate(titles)
    zooms = []
    while page.locator(".map-cluster").count() and len(zooms) < 12:
        zoom = int(page.get_attribute(".map-box", "data-zoom"))
        zooms.append(zoom)
        page.locator(".map-cluster").first.click()
        page.wait_for_function("(z) => Number(document.querySelector('.map-box').dataset.zoom) > z", arg=zoom)
        page.wait_for_function("""(z) => { const b = document.querySelector('.map-box');
            return Number(b.dataset.zoom) > z && !b.classList.contains('leaflet-zoom-anim'); }""", arg=zoom)
    assert len(zooms) >= 2 and zooms[0] == 2, zooms  # the world, then closer each click
    shown = [t for t in page.evaluate(titles) if t.startswith("IMG_")]
    assert shown and not page.locator(".map-cluster").count(), shown
    page.locator(f".leaflet-marker-icon[title='{shown[0]}']").click()
    page.wait_for_selector(".viewer")
    assert "view=" + quote(f"main/lisbon/{shown[0]}", safe="") in page.url
    page.keyboard.press("Escape")
    page.wait_for_selector(".viewer", state="detached")
    assert page.locator(".map-photo").count() == len(shown)  # the map is where it was
    assert not page.elsewhere and not page.errors


def test_a_file_named_like_html_is_text_on_the_map(page: Any, served: Served) -> None:
    _log_in(page, served)
    page.wait_for_selector(".map-cluster, .map-photo")
    page.wait_for_selector(f".leaflet-marker-icon[title={json.dumps(EVIL)}]", state="attached")
    assert page.evaluate("() => document.querySelectorAll('img[src=\"x\"]').length") == 0
    assert not page.dialogs


def _search_available(page: Any) -> bool:
    return bool(page.evaluate("fetch('/search?q=x').then(r => r.status !== 404)"))


def test_the_search_box_finds_a_photo_by_its_file_name(page: Any, served: Served) -> None:
    _log_in(page, served, "/web/folders")
    assert page.locator("#search input").is_visible()  # in the header of every page
    if not _search_available(page):
        pytest.skip("GET /search answers 404 on this server: the search box has no endpoint to ask yet")
    page.fill("#search input", "harbour")
    page.press("#search input", "Enter")
    page.wait_for_url("**/web/search?q=harbour")
    page.wait_for_selector("a.tile[data-path='sydney/harbour_at_dusk.jpg']")
    assert page.locator("a.tile").count() == 1
    assert page.input_value("#search input") == "harbour"
    page.click("a.tile")
    page.wait_for_selector(".viewer")
    page.keyboard.press("Escape")
    page.fill("#search input", "nothing-is-called-this")
    page.press("#search input", "Enter")
    page.wait_for_selector("text=Nothing found")
    assert not page.errors


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_map_and_search_pages_pass_axe(browser: Any, served: Served, scheme: str) -> None:
    context = browser.new_context(bypass_csp=True, viewport={"width": 1200, "height": 800}, color_scheme=scheme)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        _log_in(page, served)
        found = {}
        for path, ready in [("/web/map", ".map-cluster"), ("/web/search", ".empty")]:
            page.goto(served.base + path)
            page.wait_for_selector(ready)
            page.add_script_tag(path=str(AXE))
            found[path] = page.evaluate(AXE_RUN)
        assert not any(found.values()), found
    finally:
        context.close()
