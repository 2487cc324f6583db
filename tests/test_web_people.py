"""The People page in a real browser (Playwright for Python driving Debian's Chromium, as
tests/test_web_browser.py does) against a real `imageapi serve` on 127.0.0.1 whose index holds the
corpus JPEGs: named people and unnamed groups of faces listed with their face and counts, a group
named where it stands, a name already taken offering a merge, several merged into another, a
person's faces page after page with "Not this person" and a link to each photo, names that look
like HTML shown as text, keyboard-only use, axe, and the page of a server whose faces are off.

Named people and their faces are written into the index here (SQL, as a detector would); the
unnamed groups are made by `imageapi faces cluster --full` from faces with embeddings.
"""

from __future__ import annotations

import json
import os
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
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

EVIL = "<img src=x onerror=alert(1)>"


@dataclass
class Served:
    base: str
    db: Path
    env: dict[str, str]
    tmp: Path


@pytest.fixture(scope="module")
def served(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    _require_browser()
    tmp = tmp_path_factory.mktemp("people")
    root = tmp / "library"
    (root / "camera").mkdir(parents=True)
    for jpg in sorted((corpus / "jpeg").glob("*.jpg")):
        (root / "camera" / jpg.name).write_bytes(jpg.read_bytes())
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "THUMBNAILS", "VIDEO_PATH", "BASE_PATH")
           and not k.startswith(("APOLLO_", "FACE"))}
    env.update({"IMAGEAPI_DATA_DIR": str(tmp / "data"), "SECRET_KEY": SECRET, "WORKERS": "1",
                "PYTHONPATH": str(REPO), "LOG_LEVEL": "warn",
                # Faces on, with nothing listening: the tests write the faces themselves.
                "APOLLO_FACE_API_BASE_URL": "http://127.0.0.1:9", "FACE_CLUSTER_MIN_FACES": "2"})
    _imageapi(env, "scan", "--full", str(root))
    _imageapi(env, "user", "add", USER, "--password-stdin", stdin=PASSWORD + "\n")
    with serve_for_browser(env, tmp) as base:
        yield Served(base, tmp / "data" / "imageapi.db", env, tmp)


@pytest.fixture(scope="module")
def browser(served: Served) -> Iterator[Any]:
    with launch_chromium() as b:
        yield b


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    p = context.new_page()
    p.dialogs = []
    p.on("dialog", lambda d: (p.dialogs.append(d.message), d.dismiss()))
    p.errors = []
    p.on("pageerror", lambda e: p.errors.append(str(e)))
    try:
        yield p
    finally:
        context.close()


def _login(page: Any, base: str) -> None:
    page.goto(base + "/web/login")
    page.fill("#username", USER)
    page.fill("#password", PASSWORD)
    page.click("form.login button[type=submit]")
    page.wait_for_url(base + "/")


def _contents(served: Served) -> list[tuple[str, str]]:
    """(rel_path, content_hash) of every indexed photo, by path."""
    with sqlite3.connect(served.db) as db:
        return db.execute("SELECT rel_path, content_hash FROM files WHERE kind = 'image' ORDER BY rel_path").fetchall()


def _person(served: Served, name: str, paths: list[str]) -> int:
    """A named person with one manually bound face on each of these photos; the person's id."""
    hashes = dict(_contents(served))
    with sqlite3.connect(served.db) as db:
        db.execute("PRAGMA busy_timeout = 10000")
        person = db.execute("INSERT INTO persons (name, created_at) VALUES (?, 'now')", (name,)).lastrowid
        assert person is not None
        for path in paths:
            _face(db, hashes[path], person, b"\0\0\0\0", "test")
    return person


def _face(db: sqlite3.Connection, content_hash: str, person: int | None, embedding: bytes, model: str) -> int:
    idx = db.execute("SELECT COALESCE(MAX(idx), -1) + 1 FROM faces WHERE content_hash = ?",
                     (content_hash,)).fetchone()[0]
    face = db.execute(
        "INSERT INTO faces (content_hash, idx, x, y, w, h, score, embedding, model, person_id, bound_by, bound_at, "
        "created_at) VALUES (?, ?, 0.3, 0.3, 0.3, 0.3, 0.99, ?, ?, ?, ?, 'now', 'now')",
        (content_hash, idx, embedding, model, person, "manual" if person else None)).lastrowid
    assert face is not None
    return face


def _group(served: Served, paths: list[str]) -> int:
    """An unnamed person (a cluster of faces, as the clustering makes) with a face bound to it
    automatically on each of these photos; its id."""
    hashes = dict(_contents(served))
    with sqlite3.connect(served.db) as db:
        db.execute("PRAGMA busy_timeout = 10000")
        person = db.execute("INSERT INTO persons (name, created_at) VALUES (NULL, 'now')").lastrowid
        assert person is not None
        for path in paths:
            face = _face(db, hashes[path], person, b"\0\0\0\0", "test")
            db.execute("UPDATE faces SET bound_by = 'auto' WHERE id = ?", (face,))
    return person


def _need_clusters(served: Served) -> None:
    """Skip while the server has no API for unnamed persons (GET /persons/{id}/faces answers 404
    for a person who exists)."""
    listed = _get(served, "/persons")[1]["persons"]
    someone = listed[0]["id"] if listed else _person(served, "Someone", [])
    if not _endpoint(served, f"/persons/{someone}/faces"):
        pytest.skip("the server has no GET /persons/{id}/faces (unnamed persons) yet")


def _get(served: Served, path: str) -> tuple[int, Any]:
    """GET through the API with a token of our own: the status and the JSON answer."""
    req = urllib.request.Request(served.base + "/login", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"username": USER, "password": PASSWORD}).encode())
    with urllib.request.urlopen(req, timeout=10) as resp:
        token = json.load(resp)["token"]
    get = urllib.request.Request(served.base + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(get, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def _faces_of(served: Served, person: int) -> list[int]:
    with sqlite3.connect(served.db) as db:
        return [r[0] for r in db.execute("SELECT id FROM faces WHERE person_id = ? ORDER BY id", (person,))]


def _paths(served: Served, start: int, count: int) -> list[str]:
    return [p for p, _ in _contents(served)[start:start + count]]


def test_people_are_listed_with_their_face_and_counts_and_names_are_text(page: Any, served: Served) -> None:
    evil = _person(served, EVIL, _paths(served, 0, 2))
    zoe = _person(served, "Zoe", _paths(served, 2, 1))
    _login(page, served.base)
    page.goto(served.base + "/web/people")
    card = page.locator(f'.people .person[data-id="{evil}"]')
    card.wait_for()
    assert card.locator(".name").text_content() == EVIL
    assert card.locator(".count").text_content() == "2 photos · 2 faces"
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=card.locator("img").element_handle())
    assert page.locator(f'.people .person[data-id="{zoe}"] .count').text_content() == "1 photo · 1 face"
    # Named people by name, case aside ('<' sorts before letters).
    names = page.locator(".people .person:not(.unnamed) .name").all_text_contents()
    assert names == sorted(names, key=str.lower) and EVIL in names
    # Its own page, and the merge list of another's page.
    page.click(f'.people .person[data-id="{evil}"] a')
    page.wait_for_url(f"**/web/people/{evil}")
    page.wait_for_selector("a.tile")
    assert page.locator(".toolbar .title").text_content() == EVIL and page.locator("a.tile").count() == 2
    page.goto(served.base + f"/web/people/{zoe}")
    page.wait_for_selector("a.tile")
    assert EVIL in page.locator("select[aria-label='Merge into'] option").all_text_contents()
    assert page.locator("img[src='x']").count() == 0 and not page.dialogs and not page.errors


def test_people_selected_are_merged_into_another(page: Any, served: Served) -> None:
    ann, ben, cat = (_person(served, n, _paths(served, i, 1)) for i, n in ((3, "Ann M"), (4, "Ben M"), (5, "Cat M")))
    _login(page, served.base)
    page.goto(served.base + "/web/people")
    bar = page.locator(".merge-bar")
    page.locator(f'[data-id="{ann}"] input.pick').check()
    assert bar.is_visible() and bar.locator(".count").text_content() == "1 selected"
    page.locator(f'[data-id="{ben}"] input.pick').check()
    assert bar.locator(".count").text_content() == "2 selected"
    # The selected are not offered as the target.
    offered = bar.locator("select option").all_text_contents()
    assert "Cat M" in offered and "Ann M" not in offered and "Ben M" not in offered
    bar.locator("select").select_option(label="Cat M")
    bar.locator("button[type=submit]").click()
    page.wait_for_selector(".people-status:has-text('Merged 2 people into Cat M.')")
    page.wait_for_selector(f'[data-id="{ann}"]', state="detached")
    assert page.locator(f'[data-id="{cat}"] .count').text_content() == "3 photos · 3 faces"
    assert page.evaluate("document.activeElement.closest('[data-id]')?.dataset.id") == str(cat)
    assert bar.is_hidden()
    with sqlite3.connect(served.db) as db:
        assert db.execute("SELECT COUNT(*) FROM persons WHERE id IN (?, ?)", (ann, ben)).fetchone()[0] == 0
    assert len(_faces_of(served, cat)) == 3


def test_a_name_already_taken_offers_to_merge_into_that_person(page: Any, served: Served) -> None:
    dan = _person(served, "Dan T", _paths(served, 6, 1))
    eve = _person(served, "Eve T", _paths(served, 7, 1))
    _login(page, served.base)
    page.goto(served.base + f"/web/people/{dan}")
    page.wait_for_selector("a.tile")
    page.fill("input[aria-label='New name']", "eve t")
    page.press("input[aria-label='New name']", "Enter")
    offer = page.locator(".merge-offer")
    offer.wait_for()
    assert offer.text_content().startswith("Eve T already exists. Merge Dan T into them?")
    assert page.evaluate("document.activeElement.textContent") == "Merge into Eve T"
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/web/people/{eve}")
    page.wait_for_function("() => document.querySelector('.toolbar .title')?.textContent === 'Eve T'")
    assert len(_faces_of(served, eve)) == 2


def test_the_people_page_with_the_keyboard_alone(page: Any, served: Served) -> None:
    fay = _person(served, "Fay K", _paths(served, 8, 1))
    gus = _person(served, "Gus K", _paths(served, 9, 1))
    _login(page, served.base)
    page.goto(served.base + "/web/people")
    page.wait_for_selector(f'[data-id="{fay}"]')

    def tab_to(selector: str, back: bool = False) -> None:
        for _ in range(200):
            page.keyboard.press("Shift+Tab" if back else "Tab")
            if page.evaluate("(s) => document.activeElement.matches(s)", selector):
                return
        raise AssertionError(f"Tab never reached {selector}")

    tab_to(f'[data-id="{fay}"] input.pick')
    page.keyboard.press("Space")
    assert page.locator(".merge-bar").is_visible()
    tab_to(".merge-bar select", back=True)
    page.keyboard.type("Gus K")  # a closed select picks the option its typed name starts
    assert page.locator(".merge-bar select").input_value() == str(gus)
    tab_to(".merge-bar button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_selector(f'[data-id="{fay}"]', state="detached")
    # The focus is on the person merged into; Enter opens them.
    assert page.evaluate("document.activeElement.closest('[data-id]')?.dataset.id") == str(gus)
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/web/people/{gus}")
    page.wait_for_selector("a.tile")
    assert len(_faces_of(served, gus)) == 2


def _endpoint(served: Served, path: str) -> bool:
    """Whether the server answers this GET (404 when it has no such route)."""
    return _get(served, path)[0] != 404


def test_a_persons_faces_page_after_page_not_this_person_and_the_photo(page: Any, served: Served) -> None:
    paths = _paths(served, 0, 27)
    hal = _person(served, "Hal F", paths)  # more faces than one page holds
    if not _endpoint(served, f"/persons/{hal}/faces"):
        pytest.skip("the server has no GET /persons/{id}/faces yet")
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if f"/persons/{hal}/faces" in r.url else None)
    _login(page, served.base)
    page.goto(served.base + f"/web/people/{hal}?tab=faces")
    cards = page.locator(".face-card")
    page.wait_for_function("(n) => document.querySelectorAll('.face-card').length === n", arg=len(paths))
    assert len(asked) >= 2 and "cursor=" in asked[1]
    first = cards.first.locator("img")
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=first.element_handle())
    # The link opens the photo in the viewer, over this page.
    where = cards.first.locator("a").get_attribute("aria-label").removeprefix("Photo main: ")
    cards.first.locator("a").click()
    page.wait_for_function("(n) => document.querySelector('.viewer .info h2')?.textContent === n",
                           arg=where.rsplit("/", 1)[-1])
    page.keyboard.press("Escape")
    page.wait_for_selector(".viewer", state="detached")
    # Not this person: the face leaves the page and the person, and the focus moves on.
    gone = int(cards.nth(1).get_attribute("data-face"))
    cards.nth(1).locator("button").click()
    page.wait_for_selector(f'.face-card[data-face="{gone}"]', state="detached")
    assert page.locator(".people-status").text_content() == "That face is no longer Hal F."
    assert page.evaluate("document.activeElement.closest('.face-card')?.dataset.face") == \
        cards.nth(1).get_attribute("data-face")
    assert gone not in _faces_of(served, hal) and len(_faces_of(served, hal)) == len(paths) - 1
    page.reload()
    page.wait_for_function("(n) => document.querySelectorAll('.face-card').length === n", arg=len(paths) - 1)
    assert page.locator(f'.face-card[data-face="{gone}"]').count() == 0 and not page.errors


def test_every_people_page_passes_axe(browser: Any, served: Served) -> None:
    ida = _person(served, "Ida A", _paths(served, 10, 2))
    context = browser.new_context(bypass_csp=True, viewport={"width": 1200, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        _login(page, served.base)
        pages = [("/web/people", ".people .person"), (f"/web/people/{ida}", "a.tile")]
        if _endpoint(served, f"/persons/{ida}/faces"):
            group = _group(served, _paths(served, 10, 2))
            pages += [(f"/web/people/{ida}?tab=faces", ".face-card"), ("/web/people", ".person.unnamed"),
                      (f"/web/people/{group}", ".face-card")]
        found = {}
        for path, ready in pages:
            for scheme in ("light", "dark"):
                page.emulate_media(color_scheme=scheme)
                page.goto(served.base + path)
                page.wait_for_selector(ready)
                page.add_script_tag(path=str(AXE))
                found[path + " " + scheme] = page.evaluate(AXE_RUN)
        assert not any(found.values()), found
    finally:
        context.close()


def test_a_server_with_faces_off_says_so(page: Any, served: Served) -> None:
    env = {k: v for k, v in served.env.items() if not k.startswith(("APOLLO_", "FACE"))}
    env["FACE_BACKEND"] = "off"
    with serve_for_browser(env, served.tmp) as base:
        _login(page, base)
        page.goto(base + "/web/people")
        page.wait_for_selector(".empty h2:has-text('Faces are off')")
        assert "imageapi faces status" in page.locator(".empty p").text_content()
        page.goto(base + "/web/people/1")
        page.wait_for_selector(".empty h2:has-text('Faces are off')")
        assert not page.errors


def _name_of(served: Served, person: int) -> str | None:
    with sqlite3.connect(served.db) as db:
        row = db.execute("SELECT name FROM persons WHERE id = ?", (person,)).fetchone()
    assert row is not None, f"person {person} is gone"
    return row[0]


def test_unnamed_groups_come_largest_first_and_are_named_where_they_stand(page: Any, served: Served) -> None:
    _need_clusters(served)
    small, big = _group(served, _paths(served, 12, 2)), _group(served, _paths(served, 14, 3))
    _login(page, served.base)
    page.goto(served.base + "/web/people")
    page.wait_for_selector(f'.person.unnamed[data-id="{small}"]')
    order = page.locator(".person.unnamed").evaluate_all("cs => cs.map(c => Number(c.dataset.id))")
    assert order.index(big) < order.index(small)
    card = page.locator(f'.person.unnamed[data-id="{big}"]')
    assert card.locator(".count").text_content() == "3 photos · 3 faces"
    assert card.locator("a").text_content().startswith("Unnamed")
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=card.locator("img").element_handle())
    after = order[order.index(big) + 1]
    card.locator(f"input[aria-label='Name Unnamed person {big}']").fill("Jon N")
    page.keyboard.press("Enter")
    page.wait_for_selector(".people-status:has-text('Named Jon N.')")
    named = page.locator(f'.person[data-id="{big}"]')
    assert named.get_attribute("class") == "person" and named.locator(".name").text_content() == "Jon N"
    # The focus is on the next group to name.
    assert page.evaluate("document.activeElement.closest('[data-id]')?.dataset.id") == str(after)
    assert page.evaluate("document.activeElement.matches('.name-form input')")
    assert _name_of(served, big) == "Jon N"
    # A name that looks like HTML is text.
    evil = "<svg onload=alert(2)>"
    page.fill(f"input[aria-label='Name Unnamed person {small}']", evil)
    page.press(f"input[aria-label='Name Unnamed person {small}']", "Enter")
    page.wait_for_function("(id) => document.querySelector(`.person[data-id='${id}']:not(.unnamed) .name`)", arg=small)
    assert page.locator(f'.person[data-id="{small}"] .name').text_content() == evil
    assert page.locator("svg").count() == 0 and not page.dialogs and not page.errors
    assert _name_of(served, small) == evil


def test_naming_a_group_with_a_name_taken_meanwhile_merges_it_on_request(page: Any, served: Served) -> None:
    _need_clusters(served)
    group = _group(served, _paths(served, 18, 2))
    _login(page, served.base)
    page.goto(served.base + "/web/people")
    field = page.locator(f"input[aria-label='Name Unnamed person {group}']")
    field.wait_for()
    lou = _person(served, "Lou N", _paths(served, 17, 1))  # after the page was drawn: the server says 409
    field.fill("lou n")
    field.press("Enter")
    offer = page.locator(f'[data-id="{group}"] .merge-offer')
    offer.wait_for()
    assert offer.text_content().startswith(f"Lou N already exists. Merge Unnamed person {group} into them?")
    # Cancel: back to the name field; asked again (the page knows Lou now), the offer comes again.
    offer.locator("button", has_text="Cancel").click()
    assert offer.count() == 0
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == f"Name Unnamed person {group}"
    page.keyboard.press("Enter")
    offer.wait_for()
    page.keyboard.press("Enter")  # the offer's button has the focus
    page.wait_for_selector(f".people-status:has-text('Merged Unnamed person {group} into Lou N.')")
    page.wait_for_selector(f'[data-id="{group}"]', state="detached")
    assert page.locator(f'[data-id="{lou}"] .count').text_content() == "3 photos · 3 faces"
    assert len(_faces_of(served, lou)) == 3


def test_groups_selected_are_merged_into_another_group(page: Any, served: Served) -> None:
    _need_clusters(served)
    one, two, into = (_group(served, _paths(served, 23 + i, n)) for i, n in ((0, 1), (1, 1), (2, 2)))
    _login(page, served.base)
    page.goto(served.base + "/web/people")
    page.locator(f'[data-id="{one}"] input.pick').check()
    page.locator(f'[data-id="{two}"] input.pick').check()
    page.locator(".merge-bar select").select_option(label=f"Unnamed person {into} (2 photos · 2 faces)")
    page.locator(".merge-bar button[type=submit]").click()
    page.wait_for_selector(f".people-status:has-text('Merged 2 people into Unnamed person {into}.')")
    assert page.locator(f'[data-id="{into}"] .count').text_content() == "4 photos · 4 faces"
    assert page.locator(f'[data-id="{one}"], [data-id="{two}"]').count() == 0
    assert len(_faces_of(served, into)) == 4 and _name_of(served, into) is None


def test_an_unnamed_groups_page_shows_its_faces_to_unbind_and_names_it(page: Any, served: Served) -> None:
    _need_clusters(served)
    group = _group(served, _paths(served, 20, 3))
    _login(page, served.base)
    page.goto(served.base + f"/web/people/{group}")  # the faces, first, for a group
    page.wait_for_function("() => document.querySelectorAll('.face-card').length === 3")
    assert page.locator(".people-tabs a[aria-current=page]").text_content() == "Faces"
    assert page.locator(".toolbar .title").text_content() == f"Unnamed person {group}"
    first = page.locator(".face-card").first
    gone = int(first.get_attribute("data-face"))
    first.locator("button").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector(f'.face-card[data-face="{gone}"]', state="detached")
    assert len(_faces_of(served, group)) == 2
    assert gone not in [f["id"] for f in _get(served, f"/persons/{group}/faces")[1]["faces"]]
    page.fill("input[aria-label='Name']", "Mia N")
    page.press("input[aria-label='Name']", "Enter")
    page.wait_for_function("() => document.querySelector('.toolbar .title')?.textContent === 'Mia N'")
    assert _name_of(served, group) == "Mia N"
    page.reload()
    page.wait_for_selector("a.tile")  # named now: the photos first
    assert page.locator("a.tile").count() == 2


def test_the_viewer_names_a_face_of_an_unnamed_group_and_binds_others_by_name(page: Any, served: Served) -> None:
    _need_clusters(served)
    path = _paths(served, 26, 1)[0]
    group = _group(served, [path])
    with sqlite3.connect(served.db) as db:
        free = _face(db, dict(_contents(served))[path], None, b"\0\0\0\0", "test")
    _login(page, served.base)
    page.goto(served.base + "/web/people/" + str(group))
    page.locator(".face-card a").first.click()
    # (Other tests' people may have faces on this photo too: the group's and the free one are looked for.)
    page.wait_for_function("(g) => { const t = [...document.querySelectorAll('.viewer .faces .face span')]"
                           ".map((s) => s.textContent); return t.includes(g) && t.includes('?'); }",
                           arg=f"Unnamed person {group}")
    line = page.locator(".face-list li", has=page.locator("strong", has_text=f"Unnamed person {group}"))
    assert line.locator("button").get_attribute("aria-label").endswith(f" from Unnamed person {group}")
    field = page.locator(".face-list input").last  # the free face: the last one on the photo
    field.fill("Olga V")
    field.press("Enter")
    page.wait_for_function("() => [...document.querySelectorAll('.viewer .faces .face span')]"
                           ".some((s) => s.textContent === 'Olga V')")
    with sqlite3.connect(served.db) as db:
        assert db.execute("SELECT p.name FROM faces f JOIN persons p ON p.id = f.person_id WHERE f.id = ?",
                          (free,)).fetchone() == ("Olga V",)
    assert not page.errors and page.locator("#error").is_hidden()


def test_a_named_person_merged_into_a_group_gives_it_their_name(page: Any, served: Served) -> None:
    _need_clusters(served)
    pia, group = _person(served, "Pia N", _paths(served, 1, 1)), _group(served, _paths(served, 2, 1))
    _login(page, served.base)
    page.goto(served.base + "/web/people")
    page.locator(f'[data-id="{pia}"] input.pick').check()
    page.locator(".merge-bar select").select_option(value=str(group))
    page.locator(".merge-bar button[type=submit]").click()
    page.wait_for_selector(f".people-status:has-text('Merged Pia N into Unnamed person {group}, now named Pia N.')")
    page.wait_for_selector(f'.person:not(.unnamed)[data-id="{group}"] .name:text-is("Pia N")')
    assert page.locator(f'[data-id="{pia}"]').count() == 0
    assert _name_of(served, group) == "Pia N" and len(_faces_of(served, group)) == 2


def test_faces_selected_on_a_groups_page_are_moved_to_another_person(page: Any, served: Served) -> None:
    _need_clusters(served)
    quin = _person(served, "Quin N", _paths(served, 4, 1))
    group = _group(served, _paths(served, 5, 3))
    moving = _faces_of(served, group)[:2]
    _login(page, served.base)
    page.goto(served.base + f"/web/people/{group}?tab=faces")
    page.wait_for_function("() => document.querySelectorAll('.face-card').length === 3")
    bar = page.locator(".merge-bar")
    assert bar.is_hidden()
    for face in moving:
        page.locator(f'.face-card[data-face="{face}"] input.pick').check()
    assert bar.locator(".count").text_content() == "2 selected"
    bar.locator("select").select_option(label="Quin N")
    bar.locator("button[type=submit]").click()
    page.wait_for_selector(".people-status:has-text('Moved 2 faces to Quin N.')")
    assert page.locator(".face-card").count() == 1 and bar.is_hidden()
    assert sorted(_faces_of(served, quin))[-2:] == sorted(moving) and len(_faces_of(served, group)) == 1
    with sqlite3.connect(served.db) as db:
        assert {r[0] for r in db.execute(f"SELECT bound_by FROM faces WHERE id IN ({moving[0]}, {moving[1]})")} == \
            {"manual"}
