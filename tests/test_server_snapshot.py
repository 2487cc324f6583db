# ruff: noqa: F811  (pytest fixtures imported from tests.test_server_support are parameters here)
"""The server's database connection never stays inside a read snapshot: what another process (a
CLI command, `imageapi faces drain`, another server process) commits is seen by the next request,
whatever requests came before."""

from __future__ import annotations

from pathlib import Path

from tests.test_server_support import AiohttpClient, Server, Template, start_server, template  # noqa: F401


async def _persons(server: Server) -> list[str]:
    r = await server.client.get("/persons", headers=server.auth)
    assert r.status == 200
    body = await r.json()
    assert body["enabled"]
    return sorted(p["name"] for p in body["persons"])


async def test_a_commit_by_another_process_is_seen_after_tagging(aiohttp_client: AiohttpClient, template: Template,
                                                                 tmp_path: Path) -> None:
    server = await start_server(aiohttp_client, template, tmp_path, APOLLO_FACE_API_BASE_URL="http://127.0.0.1:9")
    for tag in ("Holiday", "<b>Beach</b> & co"):
        r = await server.client.post("/image/tags", json={"path": "2020/a.jpg", "tag": tag}, headers=server.auth)
        assert r.status == 200, await r.text()
        for path in ("/tags", "/image/tags?path=2020/a.jpg", "/image/tags?path=2020/b.jpg",
                     "/image/metadata?path=2020/a.jpg", "/insights?path=2020/a.jpg",
                     "/insights/chat/history?path=2020/a.jpg", "/faces?path=2020/a.jpg", "/status",
                     "/timeline/buckets", "/timeline/items?month=2020-06", "/photos", "/memories"):
            r = await server.client.get(path, headers=server.auth)
            assert r.status < 500, (path, await r.text())
        r = await server.client.delete("/image/tags", json={"path": "2020/a.jpg", "tag": tag}, headers=server.auth)
        assert r.status == 200, await r.text()
        before = await _persons(server)
        with server.db() as other:
            other.execute("INSERT INTO persons (name, created_at) VALUES (?, 'now')", (f"Zed {tag}",))
        assert await _persons(server) == sorted([*before, f"Zed {tag}"])
