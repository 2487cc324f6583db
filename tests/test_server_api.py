# ruff: noqa: F811  (pytest fixtures imported from tests.test_server_support are parameters here)
"""The JSON endpoints: /libraries, /photos (cursor pagination, folders, filters), tags, memories,
faces and persons (enabled and disabled), /status, and the error shape of each error path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.test_server_support import (  # noqa: F401  (fixtures)
    AiohttpClient,
    Server,
    Template,
    assert_error,
    server,
    start_server,
    template,
)


async def get(server: Server, url: str, status: int = 200, **params: Any) -> Any:
    r = await server.client.get(url, params={k: str(v) for k, v in params.items()}, headers=server.auth)
    assert r.status == status, (url, params, r.status, await r.text())
    return await r.json()


async def test_libraries(server: Server) -> None:
    body = await get(server, "/libraries")
    [lib] = body["libraries"]
    assert lib["name"] == "main" and lib["files"] >= 9


async def test_photos_root_lists_files_and_folders(server: Server) -> None:
    body = await get(server, "/photos")
    names = {i["path"] for i in body["items"]}
    assert {"dup.jpg", "green.png", "bad.jpg"} <= names
    assert not any("/" in n for n in names)
    folders = {f["name"]: f["count"] for f in body["folders"]}
    assert folders["2020"] == 2 and folders["2021"] == 2 and folders["excluded"] == 1  # 2021 counts sub/
    assert body["next_cursor"] is None and body["library"] == "main"
    sub = await get(server, "/photos", path="2021")
    assert [i["path"] for i in sub["items"]] == ["2021/c.jpg"]
    assert sub["folders"] == [{"name": "sub", "path": "2021/sub", "count": 1}]


async def test_photos_recursive_sorted(server: Server) -> None:
    body = await get(server, "/photos", path="2021", recursive="true", sort="taken_asc")
    assert [i["path"] for i in body["items"]] == ["2021/sub/d.jpg", "2021/c.jpg"]
    body = await get(server, "/photos", path="2020", sort="taken_desc")
    assert [i["path"] for i in body["items"]] == ["2020/b.jpg", "2020/a.jpg"]
    body = await get(server, "/photos", path="2020", sort="name_desc")
    assert [i["path"] for i in body["items"]] == ["2020/b.jpg", "2020/a.jpg"]


@pytest.mark.parametrize("sort", ["taken_desc", "taken_asc", "name_asc", "name_desc", "mtime_desc", "mtime_asc"])
async def test_cursor_pagination_is_stable_and_complete(server: Server, sort: str) -> None:
    everything = await get(server, "/photos", recursive="true", sort=sort, limit=1000)
    expected = [i["id"] for i in everything["items"]]
    assert len(expected) == len(set(expected)) >= 10
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"recursive": "true", "sort": sort, "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = await get(server, "/photos", **params)
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert page["folders"] == []  # folders come with the first page only
    assert seen == expected


@pytest.mark.parametrize("params,code", [
    ({"cursor": "garbage"}, "bad_request"),
    ({"cursor": "WyJuYW1lX2FzYyIsImEiLDFd"}, "bad_request"),  # made for another sort
    ({"sort": "random"}, "bad_parameter"),
    ({"limit": "0"}, "bad_parameter"),
    ({"limit": "abc"}, "bad_parameter"),
    ({"recursive": "maybe"}, "bad_parameter"),
    ({"person": "-1"}, "bad_parameter"),
    ({"path": "../x"}, "bad_path"),
    ({"library": "nope"}, "not_found"),
])
async def test_photos_bad_parameters(server: Server, params: dict[str, str], code: str) -> None:
    r = await server.client.get("/photos", params=params, headers=server.auth)
    assert r.status in (400, 404)
    assert_error(await r.json(), code)


async def test_tags_follow_content(server: Server) -> None:
    r = await server.client.post("/image/tags", json={"path": "2020/a.jpg", "tag": "Holiday"}, headers=server.auth)
    assert r.status == 200
    body = await r.json()
    assert body["changed"] == 1 and body["files"] == [{"path": "2020/a.jpg", "tags": ["Holiday"]}]
    # dup.jpg has the same bytes: it carries the tag too.
    assert (await get(server, "/image/tags", path="dup.jpg"))["tags"] == ["Holiday"]
    # Case-insensitive, many paths at once, idempotent.
    both = {"paths": ["2020/b.jpg", "2020/a.jpg"], "tags": ["holiday", "Beach"]}
    r = await server.client.post("/image/tags", json=both, headers=server.auth)
    body = await r.json()
    assert body["changed"] == 3
    assert {f["path"]: f["tags"] for f in body["files"]} == {"2020/b.jpg": ["Beach", "Holiday"],
                                                             "2020/a.jpg": ["Beach", "Holiday"]}
    tags = {t["name"]: t["count"] for t in (await get(server, "/tags"))["tags"]}
    assert tags == {"Beach": 3, "Holiday": 3}  # a.jpg, dup.jpg, b.jpg
    listed = await get(server, "/photos", tag="HOLIDAY")
    assert {i["path"] for i in listed["items"]} == {"2020/a.jpg", "2020/b.jpg", "dup.jpg"}
    # A moved file (the scan keeps its row and changes the path) keeps its tags.
    with server.db() as conn:
        conn.execute("UPDATE files SET rel_path = 'moved/b.jpg', dir = 'moved' WHERE rel_path = '2020/b.jpg'")
    assert (await get(server, "/image/tags", path="moved/b.jpg"))["tags"] == ["Beach", "Holiday"]
    r = await server.client.delete("/image/tags", json={"paths": ["2020/a.jpg"], "tag": "beach"}, headers=server.auth)
    assert (await r.json())["changed"] == 1
    tags = {t["name"]: t["count"] for t in (await get(server, "/tags"))["tags"]}
    assert tags == {"Beach": 1, "Holiday": 3}
    r = await server.client.delete("/image/tags", json={"path": "moved/b.jpg", "tag": "Beach"}, headers=server.auth)
    assert "Beach" not in {t["name"] for t in (await get(server, "/tags"))["tags"]}


async def test_tagging_an_unhashed_file_hashes_it(server: Server) -> None:
    with server.db() as conn:
        conn.execute("UPDATE files SET content_hash = NULL WHERE rel_path = 'green.png'")
    r = await server.client.post("/image/tags", json={"path": "green.png", "tag": "green"}, headers=server.auth)
    assert r.status == 200
    with server.db() as conn:
        digest = conn.execute("SELECT content_hash FROM files WHERE rel_path = 'green.png'").fetchone()[0]
    assert digest and len(digest) == 64


@pytest.mark.parametrize("body,status,code", [
    ({"tag": "x"}, 400, "missing_field"),
    ({"path": "2020/a.jpg"}, 400, "missing_field"),
    ({"path": "2020/a.jpg", "tag": ""}, 400, "bad_request"),
    ({"path": "2020/a.jpg", "tag": 5}, 400, "bad_field"),
    ({"path": "2020/a.jpg", "tags": "x"}, 400, "bad_field"),
    ({"paths": [1, 2], "tag": "x"}, 400, "bad_field"),
    ({"path": "../../etc/passwd", "tag": "x"}, 400, "bad_path"),
    ({"path": "2020/none.jpg", "tag": "x"}, 404, "not_found"),
    ({"path": "2020/a.jpg", "tag": "x" * 101}, 400, "bad_request"),
    ({"path": "2020/a.jpg", "tag": "a\x07b"}, 400, "bad_request"),
])
async def test_tag_errors(server: Server, body: dict[str, Any], status: int, code: str) -> None:
    for method in ("POST", "DELETE"):
        r = await server.client.request(method, "/image/tags", json=body, headers=server.auth)
        assert r.status == status, (method, body)
        assert_error(await r.json(), code)


async def test_memories(server: Server) -> None:
    body = await get(server, "/memories", span="day", date="2024-06-01")
    assert [y["year"] for y in body["years"]] == [2021, 2020]  # newest first; 2018's is in EXCLUDED_DIRS
    assert [i["path"] for i in body["years"][1]["items"]] == ["2020/a.jpg", "dup.jpg"]
    week = await get(server, "/memories", span="week", date="2024-06-01")
    assert {i["path"] for y in week["years"] for i in y["items"]} == {
        "2020/a.jpg", "dup.jpg", "2020/b.jpg", "2021/c.jpg", "name with spaces & ünïcode.jpg"}
    # Only earlier years: on 2021-06-01 itself, 2021's photo is not a memory.
    same = await get(server, "/memories", span="month", date="2021-06-15")
    assert [y["year"] for y in same["years"]] == [2020]
    # A week across New Year belongs to the year of its middle day.
    ny = await get(server, "/memories", span="week", date="2021-01-01")
    assert [(y["year"], [i["path"] for i in y["items"]]) for y in ny["years"]] == [(2020, ["2021/sub/d.jpg"])]
    today = await get(server, "/memories", tz="Pacific/Kiritimati")
    assert len(today["date"]) == 10


@pytest.mark.parametrize("params,code", [
    ({"span": "year"}, "bad_parameter"),
    ({"date": "2024-13-01"}, "bad_request"),
    ({"tz": "Mars/Olympus"}, "bad_request"),
    ({"tz": "../../etc/passwd"}, "bad_request"),
    ({"tz": "W1tb" * 100}, "bad_request"),  # the tzdata package's loader cannot open so long a name
    ({"limit": "0"}, "bad_parameter"),
    ({"date": ""}, "bad_request"),
])
async def test_memories_errors(server: Server, params: dict[str, str], code: str) -> None:
    r = await server.client.get("/memories", params=params, headers=server.auth)
    assert r.status == 400
    assert_error(await r.json(), code)


async def test_faces_disabled_answer_empty(server: Server) -> None:
    assert await get(server, "/faces", path="2020/a.jpg") == {
        "enabled": False, "library": "main", "path": "2020/a.jpg", "scanned": False, "faces": []}
    assert await get(server, "/persons") == {"enabled": False, "persons": []}
    r = await server.client.post("/persons", json={"name": "Ann"}, headers=server.auth)
    assert r.status == 200 and (await r.json())["person"] is None
    r = await server.client.patch("/faces/1", json={"person": "Ann"}, headers=server.auth)
    assert r.status == 200 and (await r.json())["face"] is None
    r = await server.client.delete("/faces/1", headers=server.auth)
    assert r.status == 200 and (await r.json())["deleted"] is None
    body = await get(server, "/persons/1/photos")
    assert body["items"] == [] and body["enabled"] is False
    assert (await get(server, "/photos", person=1))["items"] == []


async def test_faces_enabled(aiohttp_client: AiohttpClient, template: Template, tmp_path: Path) -> None:
    srv = await start_server(aiohttp_client, template, tmp_path, APOLLO_FACE_API_BASE_URL="http://127.0.0.1:9")
    r = await srv.client.post("/persons", json={"name": "Ann"}, headers=srv.auth)
    assert r.status == 201
    ann = (await r.json())["person"]
    r = await srv.client.post("/persons", json={"name": "ann"}, headers=srv.auth)
    assert r.status == 400  # names are unique, case-insensitively
    r = await srv.client.post("/faces", json={"path": "2020/a.jpg", "box": {"x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4}},
                              headers=srv.auth)
    assert r.status == 201
    face = (await r.json())["face"]
    assert face["box"] == {"x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4} and face["person"] is None
    r = await srv.client.patch(f"/faces/{face['id']}", json={"person": "Ann"}, headers=srv.auth)
    assert (await r.json())["face"]["person"] == {"id": ann["id"], "name": "Ann"}
    body = await get(srv, "/faces", path="dup.jpg")  # same content, same faces
    assert [f["id"] for f in body["faces"]] == [face["id"]] and body["enabled"] is True
    persons = (await get(srv, "/persons"))["persons"]
    assert persons == [{"id": ann["id"], "name": "Ann", "named": True, "faces": 1, "photos": 1,
                        "cover_face_id": face["id"]}]
    photos = await get(srv, f"/persons/{ann['id']}/photos")
    assert {i["path"] for i in photos["items"]} == {"2020/a.jpg", "dup.jpg"}
    assert {i["path"] for i in (await get(srv, "/photos", person=ann["id"]))["items"]} == {"2020/a.jpg", "dup.jpg"}
    r = await srv.client.patch(f"/faces/{face['id']}", json={"person": None}, headers=srv.auth)
    assert (await r.json())["face"]["person"] is None
    r = await srv.client.post("/faces", json={"path": "2021/c.jpg", "box": {"x": 0.5, "y": 0.5, "w": 0.2, "h": 0.2},
                                              "person": "Ann"}, headers=srv.auth)
    second = (await r.json())["face"]
    assert second["person"]["name"] == "Ann" and second["bound_by"] == "manual"
    r = await srv.client.delete(f"/faces/{face['id']}", headers=srv.auth)
    assert (await r.json())["deleted"] == face["id"]
    r = await srv.client.delete(f"/faces/{face['id']}", headers=srv.auth)
    assert r.status == 404
    assert_error(await r.json(), "not_found")
    for bad, status in [({"path": "2020/a.jpg", "box": {"x": 0.9, "y": 0, "w": 0.5, "h": 0.1}}, 400),
                        ({"path": "2020/a.jpg", "box": {"x": "a", "y": 0, "w": 0.5, "h": 0.1}}, 400),
                        ({"path": "2020/a.jpg"}, 400),
                        ({"path": "2020/a.jpg", "box": {"x": 0, "y": 0, "w": 0.5, "h": 0.1}, "person": "Nobody"}, 404)]:
        r = await srv.client.post("/faces", json=bad, headers=srv.auth)
        assert r.status == status, bad
        assert_error(await r.json())
    r = await srv.client.patch("/faces/999999", json={"person": "Ann"}, headers=srv.auth)
    assert r.status == 404
    r = await srv.client.patch(f"/faces/{second['id']}", json={}, headers=srv.auth)
    assert r.status == 400 and "'person'" in (await r.json())["error"]["message"]
    for bad_id in ("abc", "0", "-1", "１"):
        r = await srv.client.get(f"/persons/{bad_id}/photos", headers=srv.auth)
        assert r.status == 404, bad_id
        assert_error(await r.json(), "not_found")
        r = await srv.client.patch(f"/faces/{bad_id}", json={"person": None}, headers=srv.auth)
        assert r.status == 404, bad_id
    r = await srv.client.get("/persons/424242/photos", headers=srv.auth)
    assert r.status == 404
    status = await get(srv, "/status")
    assert status["faces"]["enabled"] is True and status["faces"]["faces"] == 1


async def test_status(server: Server) -> None:
    body = await get(server, "/status")
    assert body["backlog"]["files"] >= 10 and body["backlog"]["unhashed"] >= 0
    assert body["watcher"] == {"running": False}
    [scan] = body["last_scans"]
    assert scan["library"] == "main" and scan["mode"] == "full" and scan["status"] == "done"


@pytest.mark.parametrize("method,path", [("PUT", "/photos"), ("POST", "/health"), ("DELETE", "/libraries")])
async def test_wrong_method_has_the_error_shape(server: Server, method: str, path: str) -> None:
    r = await server.client.request(method, path, headers=server.auth)
    assert r.status == 405
    assert_error(await r.json(), "method_not_allowed")


async def test_unknown_route_has_the_error_shape(server: Server) -> None:
    r = await server.client.get("/nope", headers=server.auth)
    assert r.status == 404
    assert_error(await r.json(), "not_found")


async def test_non_json_content_type(server: Server) -> None:
    form = {**server.auth, "Content-Type": "application/x-www-form-urlencoded"}
    r = await server.client.post("/image/tags", data=b"path=a", headers=form)
    assert r.status == 415
    assert_error(await r.json(), "unsupported_media_type")
