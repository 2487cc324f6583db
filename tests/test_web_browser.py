"""The web client in a real browser: Playwright for Python driving Debian's Chromium against a real
`imageapi serve` on 127.0.0.1, with a small library (corpus JPEGs, a video, a file whose name is
HTML) indexed by `imageapi scan`.

Without /usr/bin/chromium or the playwright package these tests skip and say what to install
(`apt-get install chromium`, `pip install '.[test]'`); with IMAGEAPI_REQUIRE_BROWSER=1 (CI) they fail
instead. No browser is ever downloaded: Playwright only drives the system's Chromium.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from tests.conftest import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
USER, PASSWORD = "alice", "correct horse battery"
SECRET = "browser-test-secret-key-0123456789abcdef"
EVIL_NAME = "<img src=x onerror=alert(1)>.jpg"
TIMEOUT_MS = 15_000


def _require_browser() -> Any:
    """The playwright module, or a skip (a failure under IMAGEAPI_REQUIRE_BROWSER=1) saying what is missing."""
    missing = []
    if not CHROMIUM.exists():
        missing.append("Chromium at /usr/bin/chromium (apt-get install -y chromium)")
    try:
        import playwright.sync_api as sync_api
    except ImportError:
        sync_api = None
        missing.append("the playwright package (pip install '.[test]'; never `playwright install`: the system's "
                       "Chromium is used)")
    if missing:
        reason = "browser tests need " + " and ".join(missing)
        if os.environ.get("IMAGEAPI_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + " (IMAGEAPI_REQUIRE_BROWSER=1)")
        pytest.skip(reason)
    return sync_api


@dataclass
class Served:
    base: str
    db: Path
    root: Path
    llm: subprocess.Popen[str]  # the language model stand-in
    llm_url: str
    nowhere: str                # where nothing listens (the fallback model server)
    stacked: set[str]           # copies under the top of a duplicates stack: the timeline leaves them out


def _stacked_copies(env: dict[str, str]) -> set[str]:
    """What `imageapi duplicates` says is not the copy to keep, in each near group and in each exact
    group of a content no near group holds: the copies a collapsed timeline leaves out."""
    def groups(*args: str) -> list[dict[str, Any]]:
        out = subprocess.run([sys.executable, "-m", "imageapi", "duplicates", "--json", *args], env=env, text=True,
                             check=True, capture_output=True, timeout=300).stdout
        return list(json.loads(out)["groups"])
    near = groups("--near")
    in_near = {m["content_hash"] for g in near for m in g["members"]}
    exact = [g for g in groups() if not {m["content_hash"] for m in g["members"]} & in_near]
    return {m["path"] for g in near + exact for m in g["members"] if not m["keep"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _imageapi(env: dict[str, str], *args: str, stdin: str | None = None) -> None:
    subprocess.run([sys.executable, "-m", "imageapi", *args], env=env, input=stdin, text=True, check=True,
                   capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def served(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    _require_browser()
    tmp = tmp_path_factory.mktemp("web")
    root = tmp / "library"
    (root / "camera").mkdir(parents=True)
    for jpg in sorted((corpus / "jpeg").glob("*.jpg")):
        shutil.copy(jpg, root / "camera" / jpg.name)
    shutil.copy(corpus / "jpeg" / "Canon_40D.jpg", root / EVIL_NAME)
    shutil.copy(corpus / "video" / "clip_6s.mp4", root / "clip.mp4")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "THUMBNAILS", "VIDEO_PATH", "BASE_PATH")}
    env.update({"IMAGEAPI_DATA_DIR": str(tmp / "data"), "SECRET_KEY": SECRET, "WORKERS": "1",
                "PYTHONPATH": str(REPO), "LOG_LEVEL": "warn",
                # Faces on, with nothing listening: the tests write the faces themselves (serve --no-watch
                # makes no detect calls).
                "APOLLO_FACE_API_BASE_URL": "http://127.0.0.1:9"})
    _imageapi(env, "scan", "--full", str(root))
    _imageapi(env, "user", "add", USER, "--password-stdin", stdin=PASSWORD + "\n")
    _imageapi(env, "video", "previews")  # the video wall's clips
    # The language model: the Ollama stand-in of tests/llm_standins.py (one tool call, then its answer).
    llm = subprocess.Popen([sys.executable, str(REPO / "tests" / "llm_standins.py"), "--rounds", "1", "--chunks", "4",
                            "--delay", "0.15"], env=env,
                           stdout=subprocess.PIPE, text=True)
    assert llm.stdout is not None
    llm_url = llm.stdout.readline().split()[-1]
    nowhere = f"http://127.0.0.1:{_free_port()}"
    env.update({"OLLAMA_PRIMARY_URL": llm_url, "OLLAMA_FALLBACK_URL": nowhere, "NOMINATIM_URL": nowhere,
                "SMS_API_URL": nowhere, "OLLAMA_CONNECT_TIMEOUT_SEC": "2", "INSIGHTS_REQUEST_TIMEOUT_SEC": "10"})
    try:
        with serve_for_browser(env, tmp) as base:
            yield Served(base, tmp / "data" / "imageapi.db", root, llm, llm_url, nowhere, _stacked_copies(env))
    finally:
        llm.terminate()
        llm.wait(10)


@contextmanager
def serve_for_browser(env: dict[str, str], cwd: Path) -> Iterator[str]:
    """`imageapi serve --no-watch` on a free port until the block ends; its base URL. The browser
    test modules (this one, test_web_map, test_web_people) start their servers with it."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "imageapi", "serve", "--bind", f"127.0.0.1:{port}", "--no-watch"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else ""
                    raise RuntimeError("imageapi serve did not start: " + err) from None
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def launch_chromium() -> Iterator[Any]:
    """Debian's Chromium through Playwright, closed when the block ends."""
    sync_api = _require_browser()
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


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
    p.console_errors = []
    p.on("pageerror", lambda e: p.console_errors.append(str(e)))
    try:
        yield p
    finally:
        context.close()


def _login(page: Any, served: Served, password: str = PASSWORD) -> None:
    page.goto(served.base + "/")
    page.wait_for_url("**/web/login**")
    page.fill("#username", USER)
    page.fill("#password", password)
    page.click("form.login button[type=submit]")


def _every_copy(page_or_context: Any) -> None:
    """Untick "Stack copies" ahead of the pages: the timeline shows every copy of a duplicates stack
    (the tests of the layout want the corpus's near-duplicates as pictures of their own)."""
    page_or_context.add_init_script("try { localStorage.setItem('imageapi.stack', 'all'); } catch (e) {}")


def _logged_in(page: Any, served: Served) -> None:
    _login(page, served)
    page.wait_for_selector("a.tile img", state="attached")


def _timeline_order(served: Served, every_copy: bool = False) -> list[str]:
    """What the timeline must show, in order: newest first, files without a date last; one file of
    each duplicates stack unless `every_copy`."""
    with sqlite3.connect(served.db) as db:
        rows = [r for r in db.execute("SELECT rel_path, taken_at, id FROM files").fetchall()
                if every_copy or r[0] not in served.stacked]
    dated = sorted((r for r in rows if r[1]), key=lambda r: (r[1], r[2]), reverse=True)
    undated = sorted((r for r in rows if not r[1]), key=lambda r: (r[0], r[2]))
    return [r[0] for r in dated + undated]


def _tiles_in_view(page: Any) -> list[str]:
    """Paths of the rendered tiles, in the order they are laid out (rows top to bottom)."""
    return page.evaluate("""() => [...document.querySelectorAll('.canvas a.tile')]
        .map(a => ({p: a.dataset.path, y: a.getBoundingClientRect().top, x: a.getBoundingClientRect().left}))
        .sort((a, b) => (a.y - b.y) || (a.x - b.x)).map(t => t.p)""")


def _tiles_in_dom(page: Any) -> list[str]:
    """Paths of the rendered tiles in document order: the order of Tab and of screen readers."""
    return page.evaluate("[...document.querySelectorAll('.canvas a.tile')].map(a => a.dataset.path)")


def _thumbs_loaded(page: Any, at_least: int = 8) -> None:
    # (photos: a video's thumbnail is ffmpeg's to make, tested elsewhere)
    page.wait_for_function("""(n) => {
        const imgs = [...document.querySelectorAll('.canvas a.tile:not(:has(.dur)) img')];
        return imgs.length >= n && imgs.slice(0, n).every(i => i.complete && i.naturalWidth > 0); }""", arg=at_least)


def test_login_with_a_wrong_password_then_the_timeline_in_date_order(page: Any, served: Served) -> None:
    _login(page, served, "wrong password!")
    page.wait_for_selector("text=Wrong user name or password.")
    assert "/web/login" in page.url
    page.fill("#password", PASSWORD)
    page.click("form.login button[type=submit]")
    page.wait_for_url(served.base + "/")
    _thumbs_loaded(page)
    shown = _tiles_in_view(page)
    order = _timeline_order(served)
    assert shown == order[: len(shown)] and len(shown) >= 8
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["imageapi_session"]["httpOnly"] and cookies["imageapi_session"]["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # not readable by scripts
    assert not page.console_errors


def test_the_timeline_stacks_duplicates_without_touching_a_file(page: Any, served: Served) -> None:
    """The corpus's orient_* photos are one picture stored with each EXIF orientation: upright they
    are near-duplicates. The timeline shows the copy to keep (the oldest: the first copied) with
    "+7" and leaves the others out; "Stack copies" unticked shows every copy, the others dimmed.
    Every file is still on disk."""
    page.set_viewport_size({"width": 1600, "height": 1200})
    _logged_in(page, served)
    families = ("landscape", "portrait")
    copies = [f"camera/orient_{family}_{n}.jpg" for family in families for n in range(2, 9)]
    assert set(copies) <= served.stacked
    for family in families:
        page.wait_for_selector(f'a.tile[data-path="camera/orient_{family}_1.jpg"] .stack')
        assert page.locator(f'a.tile[data-path="camera/orient_{family}_1.jpg"] .stack').inner_text() == "+7"
    for path in copies:
        assert page.locator(f'a.tile[data-path="{path}"]').count() == 0
    months = json.loads(page.evaluate("fetch('/timeline/buckets?collapse=true').then(r => r.text())"))["months"]
    every = json.loads(page.evaluate("fetch('/timeline/buckets').then(r => r.text())"))["months"]
    assert sum(m["count"] for m in every) - sum(m["count"] for m in months) == len(served.stacked)
    page.uncheck("#stack-copies")
    for path in copies:
        page.wait_for_selector(f'a.tile.stacked[data-path="{path}"]')
        assert (served.root / path).is_file()
    assert page.locator("a.tile .stack").count() == page.locator("a.tile:not(.stacked) .stack").count()
    page.reload()  # the choice is remembered
    page.wait_for_selector('a.tile.stacked[data-path="camera/orient_landscape_2.jpg"]')
    assert not page.is_checked("#stack-copies")
    page.check("#stack-copies")
    page.wait_for_selector('a.tile[data-path="camera/orient_landscape_1.jpg"] .stack')
    assert page.locator('a.tile[data-path="camera/orient_landscape_2.jpg"]').count() == 0
    assert not page.console_errors


def test_scrubber_jumps_to_a_month(page: Any, served: Served) -> None:
    page.set_viewport_size({"width": 1200, "height": 500})
    _logged_in(page, served)
    months = json.loads(page.evaluate("fetch('/timeline/buckets?collapse=true').then(r => r.text())"))["months"]
    assert len(months) >= 3
    # A month in the middle (its header goes to the top) and the oldest (the end of the timeline).
    for mi in (len(months) // 2, len(months) - 1):
        month = months[mi]["month"]
        page.click(f'.scrubber button[data-month="{month}"]')
        header = page.locator(f'h2.month-h[data-month="{month}"]')
        header.wait_for()
        box, view = header.bounding_box(), page.locator(".scroller").bounding_box()
        assert box is not None and view is not None
        if mi < len(months) - 1:
            assert view["y"] - 1 <= box["y"] < view["y"] + 10, (box, view)
        else:
            assert view["y"] <= box["y"] <= view["y"] + view["height"] - box["height"], (box, view)
        first_of_month = _timeline_order(served)[sum(m["count"] for m in months[:mi])]
        page.wait_for_selector(f'a.tile[data-path="{first_of_month}"] img')


ROWS = """() => [...document.querySelectorAll('.canvas .row')].map(r => [...r.querySelectorAll('a.tile')].map(a => {
    const b = a.getBoundingClientRect(); return {p: a.dataset.path, w: b.width, h: b.height}; }))
    .filter(r => r.length)"""


def _shapes(served: Served) -> dict[str, float]:
    """Width / height of each file as its thumbnail shows it."""
    with sqlite3.connect(served.db) as db:
        rows = db.execute("SELECT rel_path, width, height, orientation, rotation FROM files").fetchall()
    out = {}
    for path, w, h, orientation, rotation in rows:
        if w and h:
            turned = (orientation or 0) in (5, 6, 7, 8) or abs(rotation or 0) % 180 == 90
            out[path] = min(3.0, max(0.5, h / w if turned else w / h))
        else:
            out[path] = 1.0
    return out


def test_the_justified_grid_fills_each_row_with_the_pictures_shapes_and_is_remembered(page: Any,
                                                                                      served: Served) -> None:
    _every_copy(page)
    _logged_in(page, served)
    page.select_option("#grid-layout", "justified")
    page.wait_for_function("() => !document.querySelector('.canvas .row[data-pending]')")
    shapes = _shapes(served)
    width = page.evaluate("document.querySelector('.scroller').clientWidth")

    def check_justified() -> None:
        rows = page.evaluate(ROWS)
        assert len(rows) >= 2
        full = 0
        for row in rows:
            heights = {round(t["h"]) for t in row}
            assert len(heights) == 1, row  # one height per row
            for t in row:  # each picture keeps its shape (within the rounding of a pixel)
                assert abs(t["w"] - shapes[t["p"]] * t["h"]) <= 2, (t, shapes[t["p"]])
            total = sum(t["w"] for t in row)
            if abs(total - width) <= 2:
                full += 1
            else:  # the short last row of a day keeps the target height
                assert total < width and heights == {220}, (row, width)
        assert full >= 1
        assert len({round(shapes[t["p"]], 2) for row in rows for t in row}) >= 2  # not all one shape
        shown = _tiles_in_view(page)
        assert shown == _timeline_order(served, every_copy=True)[: len(shown)]

    check_justified()
    page.reload()
    page.wait_for_selector("a.tile img", state="attached")
    assert page.eval_on_selector("#grid-layout", "s => s.value") == "justified"
    page.wait_for_function("() => !document.querySelector('.canvas .row[data-pending]')")
    check_justified()
    page.select_option("#grid-layout", "square")
    for row in page.evaluate(ROWS):
        assert all(abs(t["w"] - t["h"]) <= 1 for t in row)
    assert not page.console_errors


def test_viewer_opens_the_picture_with_metadata_and_moves_with_the_arrow_keys(page: Any, served: Served) -> None:
    _logged_in(page, served)
    order = _timeline_order(served)
    with sqlite3.connect(served.db) as db:
        db.row_factory = sqlite3.Row
        rows = {r["rel_path"]: r for r in db.execute("SELECT * FROM files")}
    k = next(i for i in range(len(order) - 1) if rows[order[i]]["kind"] == rows[order[i + 1]]["kind"] == "image")
    page.click(f'a.tile[data-path="{order[k]}"]')
    page.wait_for_url("**view=**")
    first = rows[order[k]]
    page.wait_for_function("() => { const i = document.querySelector('.viewer .picture'); "
                           "return i && i.complete && i.naturalWidth > 0; }")
    assert page.locator(".viewer .picture").get_attribute("src") == (
        "/image?" + urlencode({"library": "main", "path": order[k], "size": "preview"}))
    assert page.locator(".viewer .info h2").text_content() == order[k].rpartition("/")[2]
    info = page.locator(".viewer .info dl").text_content() or ""
    assert f"{first['width']} × {first['height']}" in info
    if first["model"]:
        assert first["model"] in info
    page.keyboard.press("ArrowRight")
    page.wait_for_function("(name) => document.querySelector('.viewer .info h2')?.textContent === name",
                           arg=order[k + 1].rpartition("/")[2])
    assert "view=" in page.url and quote(order[k + 1], safe="") in page.url
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("(name) => document.querySelector('.viewer .info h2')?.textContent === name",
                           arg=order[k].rpartition("/")[2])
    page.go_back()  # the viewer's moves replace the address: back closes it
    page.wait_for_selector(".viewer", state="detached")
    gps = next(p for p in order if rows[p]["gps_lat"] is not None)
    page.goto(served.base + "/?view=main/" + gps)  # a viewer address opens by itself
    link = page.locator(".viewer .info a[href^='https://www.openstreetmap.org/']")
    link.wait_for()
    assert f"{rows[gps]['gps_lat']:.5f}" in (link.get_attribute("href") or "")
    # The place found offline from the GPS, by name (the corpus's GPS photos are in Arezzo).
    place = ", ".join(dict.fromkeys(x for x in (rows[gps]["place_city"], rows[gps]["place_region"],
                                                 rows[gps]["place_country"]) if x))
    assert place.startswith("Arezzo") and page.locator(".viewer .info .place-name").text_content() == place
    page.keyboard.press("Escape")
    page.wait_for_selector(".viewer", state="detached")
    assert "view=" not in page.url


def test_swipes_move_through_the_viewer_and_down_closes_it(browser: Any, served: Served) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 800}, has_touch=True, is_mobile=True)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        _logged_in(page, served)
        order = _timeline_order(served)
        page.goto(served.base + "/?view=main/" + order[1])
        page.wait_for_function("(name) => document.querySelector('.viewer h2')?.textContent === name",
                               arg=order[1].rpartition("/")[2])
        assert page.evaluate("getComputedStyle(document.querySelector('.viewer .info')).display") == "none"
        swipe = """([dx, dy]) => { const s = document.querySelector('.viewer .stage');
            const r = s.getBoundingClientRect();
            const x = r.left + r.width / 2, y = r.top + r.height / 2;
            const ev = (type, ex, ey) => s.dispatchEvent(new PointerEvent(type, {pointerType: 'touch', clientX: ex,
                clientY: ey, bubbles: true, isPrimary: true}));
            ev('pointerdown', x, y); ev('pointerup', x + dx, y + dy); }"""
        shown = "(name) => document.querySelector('.viewer h2')?.textContent === name"
        page.evaluate(swipe, [-150, 10])  # right to left: the next one
        page.wait_for_function("(p) => location.search.includes(encodeURIComponent(p))", arg=order[2])
        page.wait_for_function(shown, arg=order[2].rpartition("/")[2])
        page.evaluate(swipe, [150, -5])   # left to right: back
        page.wait_for_function("(p) => location.search.includes(encodeURIComponent(p))", arg=order[1])
        page.wait_for_function(shown, arg=order[1].rpartition("/")[2])
        page.evaluate(swipe, [5, 200])    # down: close
        page.wait_for_selector(".viewer", state="detached")
        # A phone-sized grid: 3 or 4 pictures a row.
        per_row = page.evaluate("document.querySelector('.canvas .row:not(.ph)').children.length")
        assert per_row in (3, 4)
    finally:
        context.close()


def test_a_tag_added_in_the_viewer_is_there_after_a_reload_as_text(page: Any, served: Served) -> None:
    _logged_in(page, served)
    target = _timeline_order(served)[2]
    page.goto(served.base + "/?view=main/" + target)
    tag = "<b>bold</b> & <img src=x onerror=alert(2)>"
    page.fill(".tag-add input", tag)
    page.press(".tag-add input", "Enter")
    page.wait_for_selector(".tags .tag span")
    page.reload()
    page.wait_for_selector(".tags .tag span")
    assert page.locator(".tags .tag span").all_text_contents() == [tag]
    assert page.locator(".tags b, .viewer img[src='x']").count() == 0
    assert not page.dialogs
    page.click(f".tags .tag button[aria-label='Remove tag {tag}']")
    page.wait_for_selector(".tags .none")


def test_a_file_named_like_html_renders_as_text(page: Any, served: Served) -> None:
    _logged_in(page, served)
    page.goto(served.base + "/?view=main/" + EVIL_NAME)
    page.wait_for_function("(name) => document.querySelector('.viewer .info h2')?.textContent === name", arg=EVIL_NAME)
    assert page.locator("img[src='x']").count() == 0
    page.goto(served.base + "/web/folders/main")
    tile = page.locator("a.tile", has=page.locator(f"img[alt='{EVIL_NAME}']"))
    tile.wait_for()
    assert tile.get_attribute("title") == EVIL_NAME
    assert page.locator("img[src='x']").count() == 0 and not page.dialogs


def test_logout_ends_the_session_on_the_server(page: Any, served: Served) -> None:
    _logged_in(page, served)
    old = {c["name"]: c["value"] for c in page.context.cookies()}["imageapi_session"]
    page.click("#logout")
    page.wait_for_url("**/web/login")
    assert page.request.get(served.base + "/libraries").status == 401
    # The old cookie, sent again by hand: revoked on the server, not only forgotten by the browser.
    replay = page.request.get(served.base + "/libraries", headers={"Cookie": f"imageapi_session={old}"})
    assert replay.status == 401


def test_cross_site_requests_with_the_cookie_are_refused(page: Any, served: Served) -> None:
    _logged_in(page, served)
    target = _timeline_order(served)[0]
    # A page on another site makes the browser post to the server (a CSRF attempt): a plain form,
    # text/plain, its body shaped as the JSON the server reads.
    evil = served.base.replace("127.0.0.1", "localhost") + "/evil-page"  # localhost: another site
    name = html.escape(json.dumps({"path": target, "tag": "csrf", "pad": ""})[:-2], quote=True)
    form = (f'<form method="post" enctype="text/plain" action="{served.base}/image/tags">'
            f'<input type="hidden" name="{name}" value="&quot;}}"><button>go</button></form>')
    page.route(evil, lambda route: route.fulfill(content_type="text/html", body=form))
    page.goto(evil)
    with page.expect_navigation():
        page.click("button")
    assert '"unauthorized"' in page.content()  # SameSite=Strict: the browser did not send the cookie
    with sqlite3.connect(served.db) as db:
        assert db.execute("SELECT COUNT(*) FROM tags WHERE name = 'csrf'").fetchone()[0] == 0
    # Should a browser send the cookie anyway (no SameSite support), the server refuses by itself.
    cookie = {c["name"]: c["value"] for c in page.context.cookies()}["imageapi_session"]
    forged = page.request.post(served.base + "/image/tags", data={"path": target, "tag": "csrf"},
                               headers={"Cookie": f"imageapi_session={cookie}", "Sec-Fetch-Site": "cross-site",
                                        "Origin": served.base.replace("127.0.0.1", "localhost")})
    assert forged.status == 403
    with sqlite3.connect(served.db) as db:
        assert db.execute("SELECT COUNT(*) FROM tags WHERE name = 'csrf'").fetchone()[0] == 0


def test_a_video_plays_through_hls(page: Any, served: Served) -> None:
    _logged_in(page, served)
    page.goto(served.base + "/?view=main/clip.mp4")
    video = page.locator(".viewer video")
    video.wait_for()
    page.evaluate("() => { const v = document.querySelector('.viewer video'); v.muted = true; return v.play(); }")
    page.wait_for_function("() => document.querySelector('.viewer video').currentTime > 0.5", timeout=30_000)
    assert not page.console_errors


def test_the_video_wall_plays_its_clips_and_opens_the_viewer(page: Any, served: Served) -> None:
    _logged_in(page, served)
    page.goto(served.base + "/web/videos")
    page.wait_for_function("() => document.querySelector('.flat-grid video')?.currentTime > 0.3")
    assert page.locator(".flat-grid video").evaluate("v => v.muted && v.loop")
    page.click(".flat-grid a.tile")
    page.wait_for_selector(".viewer video")
    assert "view=main%2Fclip.mp4" in page.url or "view=main/clip.mp4" in page.url


def test_tags_status_memories_and_people_pages(page: Any, served: Served) -> None:
    _logged_in(page, served)
    target = _timeline_order(served)[3]
    added = page.evaluate("""(path) => fetch('/image/tags', {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify({path, tag: 'holiday <3'})})
        .then(r => r.status)""", target)
    assert added == 200
    page.goto(served.base + "/web/tags")
    page.click("text=holiday <3")
    page.wait_for_url("**/web/tags/holiday%20%3C3")
    page.wait_for_selector(f'a.tile[data-path="{target}"]')
    assert page.locator("a.tile").count() == 1
    with sqlite3.connect(served.db) as db:
        files = db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
        taken = db.execute("SELECT rel_path, taken_at FROM files WHERE taken_at < '2015' AND kind = 'image' "
                           "ORDER BY taken_at LIMIT 1").fetchone()
    page.goto(served.base + "/web/status")
    page.wait_for_selector(".status dl")
    assert page.locator(".status dl").first.text_content().startswith(f"files{files}")
    assert page.locator(".status td", has_text="done").count() >= 1
    # Memories of that photo's day, seen from a later year.
    day = f"2024-{taken[1][5:10]}"
    page.goto(served.base + f"/web/memories?span=day&date={day}")
    page.wait_for_selector(f'a.tile[data-path="{taken[0]}"]')
    assert page.locator(".year-h").first.text_content().startswith(taken[1][:4])
    page.goto(served.base + "/web/people")
    page.wait_for_selector(".people, .empty")


def test_memories_are_of_today_in_the_time_zone_chosen_and_the_choice_is_remembered(browser: Any,
                                                                                    served: Served) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    # Kiritimati (UTC+14) and Pago Pago (UTC-11): 25 hours apart, so "today" always differs.
    context = browser.new_context(viewport={"width": 1200, "height": 800}, timezone_id="Pacific/Kiritimati")
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url) if "/memories?" in r.url else None)
        _logged_in(page, served)
        page.goto(served.base + "/web/memories")
        zone = page.locator("#memories-tz")
        zone.wait_for()
        assert zone.input_value() == "Pacific/Kiritimati"  # the browser's by default
        today = {z: datetime.now(ZoneInfo(z)).date().isoformat() for z in ("Pacific/Kiritimati", "Pacific/Pago_Pago")}
        page.wait_for_selector(f".memories-day:has-text('{today['Pacific/Kiritimati']}')")
        assert "tz=Pacific%2FKiritimati" in asked[-1]
        page.select_option("#memories-tz", "Pacific/Pago_Pago")
        page.wait_for_selector(f".memories-day:has-text('{today['Pacific/Pago_Pago']}')")
        assert "tz=Pacific%2FPago_Pago" in asked[-1]
        page.goto(served.base + "/web/memories?span=week")  # no zone in the address: the one chosen
        page.wait_for_selector(f".memories-day:has-text('{today['Pacific/Pago_Pago']}')")
        assert page.locator("#memories-tz").input_value() == "Pacific/Pago_Pago"
        assert "tz=Pacific%2FPago_Pago" in asked[-1] and "span=week" in asked[-1]
    finally:
        context.close()


def test_faces_are_drawn_with_their_names_and_can_be_unbound_and_bound(page: Any, served: Served) -> None:
    target = _timeline_order(served)[4]
    with sqlite3.connect(served.db) as db:
        digest = db.execute("SELECT content_hash FROM files WHERE rel_path = ?", (target,)).fetchone()[0]
        bob = db.execute("INSERT INTO persons (name, created_at) VALUES ('Bob', 'now')").lastrowid
        db.execute("INSERT INTO faces (content_hash, idx, x, y, w, h, score, embedding, model, person_id, bound_by, "
                   "created_at) VALUES (?, 0, 0.2, 0.2, 0.3, 0.4, 0.99, x'00000000', 'test', ?, 'manual', 'now')",
                   (digest, bob))
    _logged_in(page, served)
    page.goto(served.base + "/?view=main/" + target)
    label = page.locator(".viewer .faces .face span")
    label.wait_for()
    assert label.text_content() == "Bob"
    # The boxes are placed over the picture once it has loaded (its size decides where they go).
    page.wait_for_function("() => document.querySelector('.viewer .faces')?.getBoundingClientRect().width > 10")
    box, picture = page.locator(".viewer .faces .face").bounding_box(), page.locator(".viewer .picture").bounding_box()
    assert box and picture and abs(box["x"] - (picture["x"] + 0.2 * picture["width"])) < 4
    page.click("text=Unbind")
    page.wait_for_function("() => document.querySelector('.viewer .faces .face span')?.textContent === '?'")
    name = "Carol <i>x</i>"
    page.fill(".face-list input", name)
    page.press(".face-list input", "Enter")
    page.wait_for_function("(n) => document.querySelector('.viewer .faces .face span')?.textContent === n", arg=name)
    with sqlite3.connect(served.db) as db:
        bound = db.execute("SELECT p.name FROM faces f JOIN persons p ON p.id = f.person_id WHERE f.content_hash = ?",
                           (digest,)).fetchall()
    assert bound == [(name,)]
    page.keyboard.press("Escape")
    page.goto(served.base + "/web/people")
    face = page.locator(".people a", has_text=name).locator("img")
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=face.element_handle())
    page.click(f"text={name}")
    page.wait_for_selector(f'a.tile[data-path="{target}"]')
    assert page.locator(".toolbar .title").text_content() == name and page.locator("i").count() == 0
    # Rename, then merge into Bob.
    page.fill("input[aria-label='New name']", "Carol B.")
    page.click("text=Rename")
    page.wait_for_function("() => document.querySelector('.toolbar .title')?.textContent === 'Carol B.'")
    page.select_option("select[aria-label='Merge into']", label="Bob")
    page.click("button:has-text('Merge')")
    page.wait_for_url(f"**/web/people/{bob}")
    page.wait_for_function("() => document.querySelector('.toolbar .title')?.textContent === 'Bob'")
    # That face was unbound from Bob by hand ("not Bob", remembered): the merge leaves it unbound.
    page.wait_for_selector(".empty:has-text('No photos yet')")
    assert page.locator(f'a.tile[data-path="{target}"]').count() == 0
    with sqlite3.connect(served.db) as db:
        assert db.execute("SELECT COUNT(*) FROM persons WHERE name LIKE 'Carol%'").fetchone()[0] == 0
        assert db.execute("SELECT person_id FROM faces WHERE content_hash = ?", (digest,)).fetchall() == [(None,)]


def test_insights_write_stream_rewind_amend_and_say_when_no_model_answers(page: Any, served: Served) -> None:
    _logged_in(page, served)
    target = _timeline_order(served)[5]
    page.goto(served.base + "/?view=main/" + target)
    box = page.locator(".insight-box")
    box.locator("text=No insight yet.").wait_for()
    box.locator("text=Write an insight").click()
    box.locator(".insight h4").wait_for()
    assert box.locator(".insight h4").text_content() == "Bench"
    assert box.locator(".insight .text").text_content() == "An instant answer."
    box.locator("textarea").fill("Where was this? <b>now</b>")
    # The answer appears as it streams: record the live message's text at every change.
    page.evaluate("""() => { window.__seen = []; new MutationObserver(() => {
        const t = document.querySelector('.chat .live .text'); if (t) window.__seen.push(t.textContent); })
        .observe(document.querySelector('.chat'), {subtree: true, childList: true, characterData: true}); }""")
    box.locator("button[type=submit]").click()
    page.wait_for_function("() => document.querySelectorAll('.chat .msg').length === 2 "
                           "&& !document.querySelector('.live')")
    assert box.locator(".chat .msg.user .text").text_content() == "Where was this? <b>now</b>"
    seen = [t for t in page.evaluate("window.__seen") if t]
    assert len(set(seen)) >= 3 and "Title: Bench\n\nAn instant answer.".startswith(seen[0]), seen
    assert "An instant answer." in (box.locator(".chat .msg.assistant .text").text_content() or "")
    tool = box.locator(".insight details.tool")  # the tool calls that wrote the insight
    assert tool.count() == 1 and not tool.evaluate("d => d.open")  # folded
    assert tool.locator("summary").text_content() == "tool: get_photo_metadata"
    assert box.locator(".chat b").count() == 0
    first_id = page.evaluate("(p) => fetch('/insights?path=' + encodeURIComponent(p)).then(r => r.json())"
                             ".then(d => d.insights[0].id)", target)
    # Rewind from the question: the conversation is back to the insight alone.
    box.locator("text=Rewind to here").click()
    page.wait_for_function("() => document.querySelectorAll('.chat .msg').length === 0")
    # Amend: the answer becomes a new insight.
    box.locator("textarea").fill("Say it shorter")
    box.locator("#amend").check()
    box.locator("button[type=submit]").click()
    page.wait_for_function("([p, old]) => fetch('/insights?path=' + encodeURIComponent(p)).then(r => r.json())"
                           ".then(d => d.insights[0].id !== old)", arg=[target, first_id])
    # No model server answers: a message naming what was tried, and the viewer goes on working.
    served.llm.terminate()
    served.llm.wait(10)
    box.locator("text=Write an insight").click()
    note = box.locator(".insight-note")
    page.wait_for_function("() => /127\\.0\\.0\\.1/.test(document.querySelector('.insight-note').textContent)")
    assert served.llm_url in (note.text_content() or "") and served.nowhere in (note.text_content() or "")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("(p) => location.search.includes(encodeURIComponent(p))", arg=_timeline_order(served)[6])


SCREENSHOTS = {"timeline": "/", "viewer": "/?view=main/camera/gps_DSCN0010.jpg"}


def test_screenshots_for_the_readme(browser: Any, served: Served, tmp_path: Path) -> None:
    """The README's pictures of the timeline and the viewer: taken on every run (so they can always
    be made), written to docs/ with IMAGEAPI_WRITE_SCREENSHOTS=1, as small palette PNGs."""
    from PIL import Image

    out = REPO / "docs" if os.environ.get("IMAGEAPI_WRITE_SCREENSHOTS") == "1" else tmp_path
    context = browser.new_context(viewport={"width": 960, "height": 600}, color_scheme="light")
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        _logged_in(page, served)
        for name, path in SCREENSHOTS.items():
            page.goto(served.base + path)
            if name == "viewer":
                page.wait_for_function("() => { const i = document.querySelector('.viewer .picture'); "
                                       "return i && i.complete && i.naturalWidth > 0; }")
                page.locator(".viewer .info a[href^='https://www.openstreetmap.org/']").wait_for()
            else:  # (stacked, the corpus's 13 photos lie in many months: fewer on the first screen)
                _thumbs_loaded(page, at_least=5)
            raw = tmp_path / f"{name}-raw.png"
            page.screenshot(path=str(raw))
            with Image.open(raw) as im:
                small = im.convert("RGB").quantize(colors=96, method=Image.Quantize.MEDIANCUT)
                small.save(out / f"web-{name}.png", optimize=True)
            size = (out / f"web-{name}.png").stat().st_size
            assert 10_000 < size < 400_000, size  # a picture of something, and small
    finally:
        context.close()


AXE = REPO / "tests" / "vendor" / "axe-core" / "axe.min.js"  # from npm: scripts/refresh_web_vendor.sh
AXE_RUN = """() => axe.run(document, {resultTypes: ['violations']}).then(r => r.violations
    .filter(v => v.impact === 'critical' || v.impact === 'serious')
    .map(v => `${v.id} (${v.impact}): ${v.nodes.map(n => n.target.join(' ')).join(', ')}`))"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_passes_axe_without_critical_or_serious_violations(browser: Any, served: Served,
                                                                      scheme: str) -> None:
    # The page's CSP rightly refuses a script injected by the test: this context bypasses it.
    context = browser.new_context(bypass_csp=True, viewport={"width": 1200, "height": 800}, color_scheme=scheme)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto(served.base + "/web/login")
        page.add_script_tag(path=str(AXE))
        # The check can fail: an unlabelled field is reported.
        page.evaluate("() => document.body.append(document.createElement('input'))")
        assert any(v.startswith("label (critical)") for v in page.evaluate(AXE_RUN))
        page.reload()
        found = {}
        for path, ready in [("/web/login", "#username"), ("LOGIN", ""), ("/", "a.tile"),
                            ("/?view=main/" + _timeline_order(served)[1], ".viewer .info dl"),
                            ("/web/folders/main", "a.tile"), ("/web/videos", "a.tile"),
                            ("/web/memories?span=month", ".toolbar"), ("/web/people", ".people, .empty"),
                            ("/web/tags", ".folders, .empty"), ("/web/status", ".status dl"), ("/web/nope", ".empty")]:
            if path == "LOGIN":
                page.fill("#username", USER)
                page.fill("#password", PASSWORD)
                page.click("form.login button[type=submit]")
                page.wait_for_url(served.base + "/")
                continue
            page.goto(served.base + path)
            page.wait_for_selector(ready)
            page.add_script_tag(path=str(AXE))
            found[path] = page.evaluate(AXE_RUN)
        assert not any(found.values()), found
    finally:
        context.close()


def test_tiles_are_in_the_dom_in_the_order_they_are_laid_out_whichever_month_answers_first(
        page: Any, served: Served) -> None:
    """Tab and screen readers follow the DOM: the newest month's pictures, held back until the
    others have been drawn, still come first in it."""
    held: list[Any] = []

    def hold_the_first(route: Any) -> None:
        if held:
            route.continue_()
        else:
            held.append(route)

    _login(page, served)
    page.wait_for_url(served.base + "/")
    page.route("**/timeline/items?*", hold_the_first)
    page.reload()
    page.wait_for_function("() => document.querySelectorAll('.canvas a.tile').length > 0")
    held[0].continue_()
    page.wait_for_function("() => !document.querySelector('.canvas .row.ph')")
    laid_out = _tiles_in_view(page)
    assert _tiles_in_dom(page) == laid_out
    assert laid_out == _timeline_order(served)[: len(laid_out)]


def test_keyboard_only(page: Any, served: Served) -> None:
    page.goto(served.base + "/web/login")
    page.keyboard.type(USER)  # the user name field has the focus
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(served.base + "/")
    page.wait_for_selector("a.tile img", state="attached")
    page.wait_for_function("() => !document.querySelector('.canvas .row.ph')")  # every month on screen loaded
    # Tab follows the DOM: the tiles must be in it in the order they are laid out, whichever month
    # answered first.
    assert _tiles_in_dom(page) == _tiles_in_view(page)
    for _ in range(30):  # Tab through the bar and the filter to the first picture
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.matches('a.tile')"):
            break
    first = page.evaluate("document.activeElement.dataset.path")
    assert first == _timeline_order(served)[0]
    page.keyboard.press("Enter")
    page.keyboard.press("ArrowRight")  # at once: it counts from the picture being opened
    page.wait_for_function("(p) => location.search.includes(encodeURIComponent(p))", arg=_timeline_order(served)[1])
    page.keyboard.press("Escape")
    page.wait_for_selector(".viewer", state="detached")
    # Back on the grid, the picture the viewer showed has the focus.
    assert page.evaluate("document.activeElement.dataset.path") == _timeline_order(served)[1]


def _add_big_library(served: Served, name: str, count: int) -> None:
    """A library of `count` synthetic rows over ten years (no files: their thumbnails are marked
    unsupported, so the server answers each at once with a 415)."""
    (served.root.parent / name).mkdir(exist_ok=True)
    with sqlite3.connect(served.db) as db:
        db.execute("PRAGMA busy_timeout = 30000")
        lib = db.execute("INSERT INTO libraries (name, root, created_at) VALUES (?, ?, 'now')",
                         (name, str(served.root.parent / name))).lastrowid
        span = 10 * 365 * 86400
        rows = []
        for i in range(count):
            t = time.gmtime(946684800 + i * span // count)  # 2000-01-01 onwards
            kind = ("video", "raw", "heic", "image", "image")[i % 5]
            rows.append((lib, f"{t.tm_year}/{i:06d}.jpg", str(t.tm_year), kind, 1000, i,
                         time.strftime("%Y-%m-%dT%H:%M:%S", t), 3.5 if kind == "video" else None))
        db.executemany(
            "INSERT INTO files (library_id, rel_path, dir, kind, size, mtime_ns, taken_at, duration, thumb_state, "
            "first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'unsupported', 'now', 'now')", rows)


def test_a_timeline_of_100k_files_keeps_the_dom_small(page: Any, served: Served) -> None:
    _add_big_library(served, "big", 100_000)
    page.set_viewport_size({"width": 1600, "height": 1000})
    _logged_in(page, served)
    deadline = time.monotonic() + 15
    while page.request.get(served.base + "/timeline/buckets?library=big").status != 200:  # the library cache
        assert time.monotonic() < deadline
        time.sleep(0.2)
    page.goto(served.base + "/?library=big")
    page.wait_for_selector('a.tile[data-path^="2009/"]')
    counts = []
    months = page.eval_on_selector_all(".scrubber button", "els => els.map(e => e.dataset.month)")
    assert len(months) == 120
    for month in (months[30], months[77], months[-1], months[0]):
        page.click(f'.scrubber button[data-month="{month}"]')
        page.wait_for_selector(f'a.tile[data-path^="{month[:4]}/"]')
        counts.append(page.evaluate("document.images.length"))
    for fraction in (0.13, 0.5, 0.91):  # scrolled, not jumped
        page.evaluate("(f) => { const s = document.querySelector('.scroller'); s.scrollTop = f * s.scrollHeight; }",
                      fraction)
        # Pictures at the new place (not the rows of the old one, still there until the next frame).
        page.wait_for_function("""() => { const r = document.querySelector('.scroller').getBoundingClientRect();
            return [0.3, 0.5, 0.7].some(f => document.elementFromPoint(r.left + r.width / 3, r.top + f * r.height)
                ?.tagName === 'IMG'); }""")
        counts.append(page.evaluate("document.images.length"))
    assert all(0 < c <= 1500 for c in counts), str(counts)
    page.select_option("#grid-layout", "justified")  # every month it loads is laid out again
    for month in (months[50], months[-1]):
        page.click(f'.scrubber button[data-month="{month}"]')
        page.wait_for_selector(f'a.tile[data-path^="{month[:4]}/"]')
        counts.append(page.evaluate("document.images.length"))
    page.evaluate("() => { const s = document.querySelector('.scroller'); s.scrollTop = 0.4 * s.scrollHeight; }")
    # Laid out and showing pictures at the new place: no row waiting for its layout is not enough
    # by itself (right after the scroll, before the next frame, none is waiting yet).
    page.wait_for_function("""() => { const r = document.querySelector('.scroller').getBoundingClientRect();
        return !document.querySelector('.canvas .row[data-pending]') && [0.3, 0.5, 0.7].some(
            f => document.elementFromPoint(r.left + r.width / 3, r.top + f * r.height)?.tagName === 'IMG'); }""")
    counts.append(page.evaluate("document.images.length"))
    assert all(0 < c <= 1500 for c in counts), str(counts)
    badges = page.locator(".canvas .tile .badge").all_text_contents()
    assert {"RAW", "HEIC"} <= set(badges) and page.locator(".canvas .tile .dur").first.text_content() == "▶ 0:04"


def test_too_many_failed_logins_say_when_to_try_again(page: Any, served: Served) -> None:
    """Last in this file: the throttle holds this address back for a few seconds afterwards."""
    page.goto(served.base + "/web/login")
    page.fill("#username", "mallory")
    seen = ""
    for _ in range(12):
        page.fill("#password", "not the password")
        page.click("form.login button[type=submit]")
        page.wait_for_function("() => document.querySelector('.login-msg').textContent !== ''")
        seen = page.locator(".login-msg").text_content() or ""
        if "try again" in seen:
            break
        page.evaluate("document.querySelector('.login-msg').textContent = ''")
    assert re.fullmatch(r"Too many failed logins: try again in \d+ s\.", seen), seen
