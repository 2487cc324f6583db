# ruff: noqa: F811  (pytest fixtures imported from tests.test_server_support are parameters here)
"""The People view's API over unnamed persons (clusters): GET /persons (named flag, counts, cover
face, order, ?named=), GET /persons/{id}/faces (pages), GET /faces/{id}/crop, PATCH /persons/{id}
(naming; 409 on a taken name), merge of unnamed persons, PATCH /faces/{id} with person_id, and
"not this person" remembered on unbind."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.test_server_support import (  # noqa: F401  (fixtures)
    AiohttpClient,
    Server,
    Template,
    assert_error,
    start_server,
    template,
)

PATHS = ("2020/a.jpg", "2020/b.jpg", "2021/c.jpg", "2021/sub/d.jpg")


@pytest.fixture()
async def people_on(aiohttp_client: AiohttpClient, template: Template, env_dirs: dict[str, Path]) -> Server:
    """Ann (named, 1 face), unnamed #2 (3 faces, one per photo), unnamed #3 (1 face), one free face."""
    server = await start_server(aiohttp_client, template, env_dirs["tmp"], APOLLO_FACE_API_BASE_URL="http://127.0.0.1:9")
    with server.db() as db:
        digests = [db.execute("SELECT content_hash FROM files WHERE rel_path = ?", (p,)).fetchone()[0] for p in PATHS]
        db.execute("INSERT INTO persons (id, name, created_at) VALUES (1, 'Ann', 'now'), (2, NULL, 'now'), "
                   "(3, NULL, 'now')")
        faces = [(digests[0], 0, 1, "manual"), (digests[0], 1, 2, "auto"), (digests[1], 0, 2, "auto"),
                 (digests[2], 0, 2, "auto"), (digests[2], 1, 3, "auto"), (digests[3], 0, None, None)]
        for n, (digest, idx, person, how) in enumerate(faces, start=1):
            db.execute("INSERT INTO faces (id, content_hash, idx, x, y, w, h, score, embedding, model, person_id, "
                       "bound_by, created_at) VALUES (?, ?, ?, 0.1, 0.2, 0.3, 0.4, ?, x'00', 'm', ?, ?, 'now')",
                       (n, digest, idx, 0.5 + n / 100, person, how))
    return server


async def persons(s: Server, query: str = "") -> list[dict[str, Any]]:
    resp = await s.client.get("/persons" + query, headers=s.auth)
    assert resp.status == 200, await resp.text()
    return list((await resp.json())["persons"])


async def test_persons_lists_named_by_name_then_unnamed_largest_first(people_on: Server) -> None:
    s = people_on
    assert await persons(s) == [
        {"id": 1, "name": "Ann", "named": True, "faces": 1, "photos": 1, "cover_face_id": 1},
        {"id": 2, "name": None, "named": False, "faces": 3, "photos": 3, "cover_face_id": 4},
        {"id": 3, "name": None, "named": False, "faces": 1, "photos": 1, "cover_face_id": 5},
    ]
    assert [p["id"] for p in await persons(s, "?named=true")] == [1]
    assert [p["id"] for p in await persons(s, "?named=false")] == [2, 3]
    bad = await s.client.get("/persons?named=maybe", headers=s.auth)
    assert bad.status == 400
    assert_error(await bad.json(), "bad_parameter")


async def test_faces_of_a_person_come_in_pages(people_on: Server) -> None:
    s = people_on
    resp = await s.client.get("/persons/2/faces?limit=2", headers=s.auth)
    body = await resp.json()
    assert resp.status == 200 and [f["id"] for f in body["faces"]] == [2, 3] and body["next_cursor"] == "3"
    first = body["faces"][0]
    assert first == {"id": 2, "library": "main", "path": "2020/a.jpg", "box": {"x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4},
                     "score": 0.52, "bound_by": "auto"}
    rest = await (await s.client.get("/persons/2/faces?limit=2&cursor=3", headers=s.auth)).json()
    assert [f["id"] for f in rest["faces"]] == [4] and rest["next_cursor"] is None
    assert (await s.client.get("/persons/99/faces", headers=s.auth)).status == 404
    for bad in ("limit=0", "limit=501", "cursor=abc", "cursor=-1"):
        resp = await s.client.get(f"/persons/2/faces?{bad}", headers=s.auth)
        assert resp.status == 400, bad
        assert_error(await resp.json(), "bad_parameter")
    assert (await s.client.get("/persons/2/faces")).status == 401


async def test_crop_of_one_face_and_of_an_unnamed_person(people_on: Server) -> None:
    s = people_on
    for url in ("/faces/6/crop", "/persons/2/face"):
        resp = await s.client.get(url, headers=s.auth)
        assert resp.status == 200 and resp.content_type == "image/jpeg", url
        face = Image.open(io.BytesIO(await resp.read()))
        assert max(face.size) <= 160 and face.size[0] == face.size[1]
    missing = await s.client.get("/faces/99/crop", headers=s.auth)
    assert missing.status == 404
    assert_error(await missing.json(), "not_found")
    assert (await s.client.get("/faces/abc/crop", headers=s.auth)).status == 404
    assert (await s.client.get("/faces/6/crop")).status == 401


async def test_naming_an_unnamed_person_and_a_taken_name(people_on: Server) -> None:
    s = people_on
    resp = await s.client.patch("/persons/2", json={"name": " Bea "}, headers=s.auth)
    assert resp.status == 200 and (await resp.json())["person"] == {"id": 2, "name": "Bea", "named": True}
    taken = await s.client.patch("/persons/3", json={"name": "ann"}, headers=s.auth)
    assert taken.status == 409
    body = await taken.json()
    assert_error(body, "conflict")
    assert "merge" in body["error"]["message"]
    assert [p["id"] for p in await persons(s, "?named=true")] == [1, 2]


async def test_merging_unnamed_persons(people_on: Server) -> None:
    s = people_on
    resp = await s.client.post("/persons/3/merge", json={"into": 2}, headers=s.auth)
    body = await resp.json()
    # Face 5 is in the photo of face 4 (already #2's): it is left unbound.
    assert resp.status == 200 and body == {"enabled": True, "person": {"id": 2, "name": None, "named": False},
                                           "moved": 0, "unbound": 1}
    # A named source merged into an unnamed target: the name is kept.
    resp = await s.client.post("/persons/1/merge", json={"into": 2}, headers=s.auth)
    body = await resp.json()
    assert body["person"] == {"id": 2, "name": "Ann", "named": True} and body["unbound"] == 1
    assert [(p["id"], p["name"]) for p in await persons(s)] == [(2, "Ann")]
    assert (await s.client.post("/persons/2/merge", json={"into": 0}, headers=s.auth)).status == 404


async def test_binding_by_id_and_not_this_person(people_on: Server) -> None:
    s = people_on
    resp = await s.client.patch("/faces/6", json={"person_id": 3}, headers=s.auth)
    assert resp.status == 200
    face = (await resp.json())["face"]
    assert face["person"] == {"id": 3, "name": None} and face["bound_by"] == "manual"
    resp = await s.client.patch("/faces/6", json={"person_id": None}, headers=s.auth)
    assert resp.status == 200 and (await resp.json())["face"]["person"] is None
    resp = await s.client.patch("/faces/3", json={"person": None}, headers=s.auth)
    assert resp.status == 200
    with s.db() as db:
        rejected = sorted(tuple(r) for r in db.execute("SELECT face_id, person_id FROM face_rejections"))
    assert rejected == [(3, 2), (6, 3)]
    # Binding by hand takes the "not this person" back.
    assert (await s.client.patch("/faces/6", json={"person_id": 3}, headers=s.auth)).status == 200
    with s.db() as db:
        assert [tuple(r) for r in db.execute("SELECT face_id, person_id FROM face_rejections")] == [(3, 2)]
    for body, status in (({"person_id": 99}, 404), ({"person_id": 0}, 404), ({"person_id": "3"}, 400),
                         ({"person_id": True}, 400), ({"person_id": 3, "person": "Ann"}, 400), ({}, 400)):
        resp = await s.client.patch("/faces/6", json=body, headers=s.auth)
        assert resp.status == status, body
        assert_error(await resp.json())
    assert (await s.client.patch("/faces/99", json={"person_id": 3}, headers=s.auth)).status == 404


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                    max_leaves=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from([("PATCH", "/faces/6"), ("PATCH", "/persons/3"), ("POST", "/persons/3/merge")]),
       st.dictionaries(st.sampled_from(["person", "person_id", "name", "into", "x"]), JSON, max_size=3))
async def test_malformed_bodies_are_4xx_in_the_error_shape(people_on: Server, route: tuple[str, str],
                                                           body: dict[str, Any]) -> None:
    s = people_on
    method, url = route
    resp = await s.client.request(method, url, json=body, headers=s.auth)
    assert resp.status < 500, (body, await resp.text())
    if resp.status >= 400:
        assert_error(await resp.json())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=12), st.text(max_size=12), st.text(max_size=12))
async def test_malformed_queries_are_4xx_in_the_error_shape(people_on: Server, named: str, limit: str,
                                                            cursor: str) -> None:
    s = people_on
    for url, params in (("/persons", {"named": named}), ("/persons/2/faces", {"limit": limit, "cursor": cursor})):
        resp = await s.client.get(url, params=params, headers=s.auth)
        assert resp.status in (200, 400), (url, params, await resp.text())
        if resp.status == 400:
            assert_error(await resp.json())
