# ruff: noqa: F811  (pytest fixtures imported from tests.test_server_support are parameters here)
"""PATCH /persons/{id}, POST /persons/{id}/merge, GET /persons/{id}/face (the web client's people page)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from tests.test_server_support import (  # noqa: F401  (fixtures)
    AiohttpClient,
    Server,
    Template,
    assert_error,
    start_server,
    template,
)


@pytest.fixture()
async def faces_on(aiohttp_client: AiohttpClient, template: Template, env_dirs: dict[str, Path]) -> Server:
    server = await start_server(aiohttp_client, template, env_dirs["tmp"], APOLLO_FACE_API_BASE_URL="http://127.0.0.1:9")
    with server.db() as db:
        digest = db.execute("SELECT content_hash FROM files WHERE rel_path = '2021/c.jpg'").fetchone()[0]
        for name in ("Ann", "Ben"):
            db.execute("INSERT INTO persons (name, created_at) VALUES (?, 'now')", (name,))
        # Ann: two faces (the better one is cut), Ben: one face in the same photo.
        for idx, (x, score, person) in enumerate([(0.1, 0.7, 1), (0.5, 0.9, 1), (0.3, 0.8, 2)]):
            db.execute("INSERT INTO faces (content_hash, idx, x, y, w, h, score, embedding, model, person_id, "
                       "bound_by, created_at) VALUES (?, ?, ?, 0.2, 0.25, 0.5, ?, x'00', 'm', ?, 'manual', 'now')",
                       (digest, idx, x, score, person if idx != 0 else None))
        db.execute("UPDATE faces SET person_id = 1 WHERE idx = 1")
    return server


async def test_rename_a_person(faces_on: Server) -> None:
    s = faces_on
    resp = await s.client.patch("/persons/1", json={"name": "  Anna   Maria "}, headers=s.auth)
    assert resp.status == 200 and (await resp.json())["person"] == {"id": 1, "name": "Anna Maria",
                                                                                "named": True}
    taken = await s.client.patch("/persons/1", json={"name": "ben"}, headers=s.auth)
    assert taken.status == 409 and "merge" in (await taken.json())["error"]["message"]
    assert (await s.client.patch("/persons/99", json={"name": "X"}, headers=s.auth)).status == 404
    assert (await s.client.patch("/persons/1", json={"name": 3}, headers=s.auth)).status == 400
    assert (await s.client.patch("/persons/1", json={"name": "X"})).status == 401


async def test_merge_moves_faces_and_unbinds_where_the_target_is_already_in_the_photo(faces_on: Server) -> None:
    s = faces_on
    resp = await s.client.post("/persons/2/merge", json={"into": 1}, headers=s.auth)
    body = await resp.json()
    assert resp.status == 200 and body == {"enabled": True, "person": {"id": 1, "name": "Ann", "named": True},
                                           "moved": 0, "unbound": 1}
    with s.db() as db:
        assert [r[0] for r in db.execute("SELECT name FROM persons")] == ["Ann"]
    assert (await s.client.post("/persons/1/merge", json={"into": 1}, headers=s.auth)).status == 400
    assert (await s.client.post("/persons/1/merge", json={"into": 2}, headers=s.auth)).status == 404


async def test_face_crop_is_a_small_jpeg_of_the_best_face(faces_on: Server) -> None:
    s = faces_on
    resp = await s.client.get("/persons/1/face", headers=s.auth)
    assert resp.status == 200 and resp.content_type == "image/jpeg"
    face = Image.open(io.BytesIO(await resp.read()))
    assert max(face.size) <= 160 and face.size[0] == face.size[1]
    with s.db() as db:
        db.execute("UPDATE faces SET person_id = NULL WHERE person_id = 2")
    missing = await s.client.get("/persons/2/face", headers=s.auth)
    assert missing.status == 404
    assert_error(await missing.json(), "not_found")
    (s.config.thumbnails / "main" / "2021" / "c.jpg").write_bytes(b"not a picture")
    broken = await s.client.get("/persons/1/face", headers=s.auth)
    assert broken.status == 422
