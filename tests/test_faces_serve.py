"""`imageapi faces serve` as a real subprocess on a free port: the same faces and embeddings as the
in-process detector through `imageapi faces drain`, a bounded queue (429 + Retry-After), health
while busy, 4xx (never 5xx) for bad input, a worker killed with -9 replaced, a timeout, and a
SIGTERM that leaves no process behind."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests import dbq

pytest.importorskip("dlib", reason="needs the [faces] extra")

REPO = Path(__file__).resolve().parent.parent
HASH = "ab" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APOLLO_", "FACE_"))}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


class Server:
    def __init__(self, workers: int, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "imageapi", "faces", "serve", "--bind", f"127.0.0.1:{self.port}",
             "--workers", str(workers)],
            env=base_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 90
        while True:
            assert self.proc.poll() is None, self.proc.communicate()
            try:
                if self.health()["ready"] == workers:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the face server did not start"
            time.sleep(0.2)

    def health(self) -> dict[str, Any]:
        res = httpx.get(self.url + "/api/health", timeout=5)
        assert res.status_code == 200
        return dict(res.json())

    def detect(self, image: bytes, timeout: float = 60) -> httpx.Response:
        return httpx.post(self.url + "/api/faces/detect", files={"image": (f"{HASH}.jpg", image, "image/jpeg")},
                          data={"content_hash": HASH}, timeout=timeout)

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        """SIGTERM (or `sig`); the exit code and stderr. Asserts that no process it started is left."""
        below = descendants(self.proc.pid)
        assert below, "the server has worker processes"
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=90)
        deadline = time.monotonic() + 10
        while any(alive(p) for p in below) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in below if alive(p)], "processes left behind after SIGTERM"
        return self.proc.returncode, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            for p in descendants(self.proc.pid):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.kill()
            self.proc.communicate()


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server(2, FACE_SERVE_MAX_BODY_MB="1")
    try:
        yield s
        code, err = s.stop()
        assert code == 0, err
    finally:
        s.kill()


@pytest.fixture(scope="module")
def slow_picture(corpus: Path) -> bytes:
    """A picture the detector takes a while on (about a second or more here)."""
    with Image.open(corpus / "faces" / "obama_1080p.jpg") as im:
        return jpeg(im.convert("RGB").resize((2880, 1620)))


def test_bad_options_and_settings_exit_2_with_one_line() -> None:
    for args, env, needle in (
        (["--bind", "nonsense"], {}, "--bind"),
        (["--bind", "127.0.0.1:99999"], {}, "--bind"),
        ([], {"FACE_SERVE_QUEUE_PER_WORKER": "many"}, "FACE_SERVE_QUEUE_PER_WORKER"),
        ([], {"FACE_SERVE_TIMEOUT_SEC": "0"}, "FACE_SERVE_TIMEOUT_SEC"),
        ([], {"FACE_SERVE_MAX_BODY_MB": "0"}, "FACE_SERVE_MAX_BODY_MB"),
        ([], {"FACE_SERVE_TOKEN": "short"}, "FACE_SERVE_TOKEN"),
        ([], {"FACE_SERVE_TOKEN": "sixteen chars with spaces"}, "FACE_SERVE_TOKEN"),
    ):
        res = subprocess.run([sys.executable, "-m", "imageapi", "faces", "serve", *args], capture_output=True,
                             text=True, env=base_env(**env), timeout=60)
        assert res.returncode == 2 and needle in res.stderr, (args, res.stderr)
        assert res.stderr.strip().count("\n") == 0


def test_without_the_faces_extra_it_says_the_pip_command() -> None:
    # dlib made unimportable in this process, as when the extra is not installed.
    code = ("import sys; sys.modules['dlib'] = None; sys.argv = ['imageapi', 'faces', 'serve', '--bind', "
            f"'127.0.0.1:{free_port()}']; from imageapi.cli.app import main; main()")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=base_env(), timeout=60)
    assert res.returncode == 2 and "pip install 'imageapi[faces]'" in res.stderr
    assert res.stderr.strip().count("\n") == 0


def test_health_says_model_workers_and_queue(server: Server) -> None:
    health = server.health()
    assert health["status"] == "ok" and health["model"] == "dlib-hog-resnet128"
    assert (health["workers"], health["busy"], health["queue"], health["queue_limit"]) == (2, 0, 0, 16)
    assert len(health["pids"]) == 2


def test_drain_through_the_server_matches_in_process_detection(server: Server, corpus: Path,
                                                               env_dirs: dict[str, Path]) -> None:
    from imageapi.core.faces.backlog import prepare_for_detection
    from imageapi.core.faces.embedded import MODEL, detect_jpeg
    from imageapi.core.hashing import hash_file

    root = env_dirs["tmp"] / "Portraits"
    root.mkdir()
    for src in sorted((corpus / "faces").glob("*.jpg")):
        shutil.copy(src, root / src.name)
    env = base_env(WORKERS="2", APOLLO_FACE_API_BASE_URL=server.url)
    scan = subprocess.run([sys.executable, "-m", "imageapi", "scan", str(root)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert scan.returncode == 0, scan.stderr
    res = subprocess.run([sys.executable, "-m", "imageapi", "faces", "drain", "--json"], capture_output=True,
                         text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    files = sorted(root.glob("*.jpg"))
    assert summary["detected"] == len(files) and summary["remaining"] == 0 and summary["transient_failures"] == 0
    conn = dbq.connect(env_dirs["data"] / "imageapi.db")
    try:
        rows = conn.execute("SELECT content_hash, idx, x, y, w, h, score, embedding, model FROM faces "
                            "ORDER BY content_hash, idx").fetchall()
    finally:
        conn.close()
    stored: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        stored.setdefault(row[0], []).append(row)
    total = 0
    for path in files:
        content_hash = hash_file(str(path))
        prepared = prepare_for_detection(str(path), "image", content_hash)
        assert prepared.jpeg is not None
        expected = detect_jpeg(prepared.jpeg)  # in this process, on the picture that was sent
        got = stored.get(content_hash, [])
        assert len(got) == len(expected.faces), path.name
        for row, face in zip(got, expected.faces, strict=True):
            assert row[8] == MODEL
            assert list(row[2:6]) == pytest.approx(list(face.bbox), abs=1e-6)
            assert row[6] == pytest.approx(face.score, abs=1e-5)
            assert embedding_of(row[7]) == pytest.approx(list(face.embedding), abs=1e-5)
        total += len(got)
    assert total >= len(files)  # the portraits have faces: the comparison compared something


def embedding_of(value: Any) -> list[float]:
    """A stored embedding as floats: SQLite's float32 blob, or PostgreSQL's vector / real[] as text."""
    from imageapi.core.faces.embeddings import from_blob

    if isinstance(value, str):
        return [float(x) for x in value.strip("[]{}").split(",")]
    if isinstance(value, list | tuple):
        return [float(x) for x in value]
    return list(from_blob(bytes(value)))


MULTIPART = "multipart/form-data; boundary=XyZ"


def multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"XyZ", end: bytes = b"--\r\n") -> bytes:
    out = b""
    for headers, body in parts:
        out += b"--" + boundary + b"\r\n" + headers + b"\r\n\r\n" + body + b"\r\n"
    return out + b"--" + boundary + end


TINY_PNG = b"\x89PNG\r\n\x1a\n"
# Header values as an HTTP client can send them: printable, no spaces at either end.
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(lambda t: t.strip() or "x")
part_headers = st.one_of(
    st.just(b'Content-Disposition: form-data; name="image"; filename="x.jpg"\r\nContent-Type: image/jpeg'),
    st.just(b'Content-Disposition: form-data; name="content_hash"'),
    header_text.map(lambda t: t.encode()),
    st.binary(max_size=80),
)
part_bodies = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=200).map(lambda b: b"\xff\xd8\xff\xe0" + b),
    st.binary(max_size=200).map(lambda b: TINY_PNG + b),
    st.just(b"RIFF\x00\x00\x00\x00WEBPVP8 "),
)
bodies = st.one_of(
    st.binary(max_size=500),
    st.lists(st.tuples(part_headers, part_bodies), max_size=4).map(multipart),
    st.tuples(st.lists(st.tuples(part_headers, part_bodies), max_size=3), st.binary(max_size=20),
              st.sampled_from([b"--\r\n", b"", b"\r\n", b"-"])).map(lambda t: multipart(t[0], b"XyZ" + t[1], t[2])),
)
content_types = st.one_of(st.just(MULTIPART), st.just("multipart/form-data"), st.just("multipart/mixed; boundary=XyZ"),
                          st.just("image/jpeg"), header_text, st.just("multipart/form-data; boundary=\"\""))
extra_headers = st.dictionaries(
    st.sampled_from(["Content-Encoding", "Transfer-Encoding", "Content-Transfer-Encoding", "X-Any", "Expect"]),
    header_text, max_size=2)


def raw_post(url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """POST over a plain socket, headers as given (no client to tidy them): status and body."""
    host, port = url.removeprefix("http://").split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (f"POST /api/faces/detect HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{head}"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, ctype=content_types, headers=extra_headers)
def test_bad_requests_never_get_a_5xx(server: Server, body: bytes, ctype: str, headers: dict[str, str]) -> None:
    status, answer = raw_post(server.url, {"Content-Type": ctype, **headers}, body)
    assert status < 500, (status, answer)
    doc = json.loads(answer)
    if status != 200:
        assert isinstance(doc["error"]["code"], str) and isinstance(doc["error"]["message"], str)
    else:
        assert set(doc) == {"model", "faces"}


def test_non_pictures_malformed_bodies_and_large_bodies(server: Server) -> None:
    assert server.detect(b"%PDF-1.4 not a picture").status_code == 415
    broken = server.detect(b"\xff\xd8\xff\xe0" + bytes(500))   # a JPEG header, no picture
    assert broken.status_code == 415 and broken.json()["error"]["code"] == "unsupported_media"
    res = httpx.post(server.url + "/api/faces/detect", content=b"--XyZ\r\nnonsense", timeout=30,
                     headers={"Content-Type": MULTIPART})
    assert res.status_code == 400
    res = httpx.post(server.url + "/api/faces/detect", data={"content_hash": HASH}, files={"other": b"x"}, timeout=30)
    assert res.status_code == 400 and "no image part" in res.json()["error"]["message"]
    res = httpx.post(server.url + "/api/faces/detect", json={"image": "x"}, timeout=30)
    assert res.status_code == 415
    big = b"\xff\xd8\xff\xe0" + os.urandom(1024 * 1024 + 10)
    assert server.detect(big).status_code == 413
    # Without a Content-Length (chunked) the limit holds as the body arrives.
    chunked = multipart([(b'Content-Disposition: form-data; name="image"; filename="x.jpg"', big)])
    res = httpx.post(server.url + "/api/faces/detect", content=iter([chunked[:1000], chunked[1000:]]),
                     headers={"Content-Type": MULTIPART}, timeout=30)
    assert res.status_code == 413
    # A blank picture: no face, a valid answer.
    ok = server.detect(jpeg(Image.new("RGB", (64, 48), (200, 200, 200))))
    assert ok.status_code == 200 and ok.json() == {"model": "dlib-hog-resnet128", "faces": []}


def test_full_queue_429_health_while_busy_kill_9_and_sigterm(slow_picture: bytes) -> None:
    server = Server(1, FACE_SERVE_QUEUE_PER_WORKER="1")
    try:
        results: dict[str, httpx.Response | BaseException] = {}

        def send(name: str) -> None:
            try:
                results[name] = server.detect(slow_picture, timeout=120)
            except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
                results[name] = exc

        first = threading.Thread(target=send, args=("first",))
        first.start()
        deadline = time.monotonic() + 30
        while server.health()["busy"] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        second = threading.Thread(target=send, args=("second",))
        second.start()
        while server.health()["queue"] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # The worker is busy and one request waits (1 worker x 1): the next is refused at once.
        started = time.monotonic()
        refused = server.detect(slow_picture)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"]["code"] == "busy" and time.monotonic() - started < 2
        # Health answers at once while the only worker is busy.
        started = time.monotonic()
        health = server.health()
        assert time.monotonic() - started < 1 and (health["busy"], health["queue"]) == (1, 1)
        # kill -9 the worker: its request gets a 503, the waiting one is served by its replacement.
        (pid,) = health["pids"]
        os.kill(pid, signal.SIGKILL)
        first.join(120)
        second.join(180)
        dead = results["first"]
        assert isinstance(dead, httpx.Response) and dead.status_code == 503, dead
        assert "died" in dead.json()["error"]["message"]
        served = results["second"]
        assert isinstance(served, httpx.Response) and served.status_code == 200, served
        assert len(served.json()["faces"]) == 1
        after = server.health()
        assert after["replaced"] == 1 and after["ready"] == 1 and after["pids"] != [pid]
        # SIGTERM: a clean exit and no process left behind.
        code, err = server.stop()
        assert code == 0, err
    finally:
        server.kill()


def test_detection_past_the_timeout_is_a_504_and_the_worker_is_replaced(slow_picture: bytes) -> None:
    server = Server(1, FACE_SERVE_TIMEOUT_SEC="0.5")
    try:
        before = server.health()["pids"]
        res = server.detect(slow_picture)
        assert res.status_code == 504 and res.json()["error"]["code"] == "detector_failed"
        deadline = time.monotonic() + 60
        while (health := server.health())["ready"] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert health["replaced"] == 1 and health["pids"] != before and before[0] not in descendants(server.proc.pid)
        assert server.detect(jpeg(Image.new("RGB", (32, 32)))).status_code == 200
        code, err = server.stop(signal.SIGINT)  # Ctrl-C: the same clean stop
        assert code == 0, err
    finally:
        server.kill()


def test_the_client_waits_out_a_short_retry_after(corpus: Path) -> None:
    import asyncio

    from imageapi.core.faces.apollo import ApolloClient

    picture = (corpus / "faces" / "obama.jpg").read_bytes()
    server = Server(1, FACE_SERVE_QUEUE_PER_WORKER="1")
    try:
        async def burst() -> list[int]:
            async with ApolloClient(server.url, timeout=120, concurrency=6) as client:
                found = await asyncio.gather(*(client.detect(picture, f"{i:02x}" * 32) for i in range(6)))
            return [len(d.faces) for d in found]

        # 1 running + 1 waiting: the other 4 get 429s with a Retry-After of a second or two, and
        # come back after it instead of failing.
        assert asyncio.run(burst()) == [1] * 6
        assert server.health()["detected"] == 6
        code, err = server.stop()
        assert code == 0, err
    finally:
        server.kill()


def test_a_server_with_a_token_answers_only_the_clients_that_send_it(corpus: Path) -> None:
    """FACE_SERVE_TOKEN: a detect call without the bearer token (or with another) is a 401 before
    its body is read; health stays open. imageapi's client sends APOLLO_FACE_API_TOKEN, and a
    refused token is the service being unusable as configured, not a permanent failure of the
    photo (which would mark a whole library failed)."""
    import asyncio

    from imageapi.core.faces.apollo import ApolloClient, ApolloError

    token = "k3y-" + "x" * 28
    picture = (corpus / "faces" / "obama.jpg").read_bytes()
    server = Server(1, FACE_SERVE_TOKEN=token)
    try:
        assert server.health()["ready"] == 1
        refused = server.detect(picture)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = httpx.post(server.url + "/api/faces/detect", headers={"Authorization": "Bearer " + "y" * 32},
                           files={"image": ("a.jpg", picture, "image/jpeg")}, timeout=60)
        assert wrong.status_code == 401

        async def detect(sent: str | None) -> int:
            async with ApolloClient(server.url, timeout=60, concurrency=1, token=sent) as client:
                return len((await client.detect(picture, HASH)).faces)

        assert asyncio.run(detect(token)) == 1
        for sent in (None, "z" * 32):
            with pytest.raises(ApolloError) as caught:
                asyncio.run(detect(sent))
            err = caught.value
            assert err.status == 401 and err.connection and not err.permanent
            assert "APOLLO_FACE_API_TOKEN" in str(err)
        assert server.health()["detected"] == 1
        code, err_text = server.stop()
        assert code == 0, err_text
    finally:
        server.kill()


def test_kill_9_of_the_server_leaves_no_worker_behind() -> None:
    server = Server(2)
    try:
        below = descendants(server.proc.pid)
        assert len(server.health()["pids"]) == 2 and set(server.health()["pids"]) <= below
        server.proc.kill()
        server.proc.communicate()
        deadline = time.monotonic() + 15
        while any(alive(p) for p in below) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in below if alive(p)], "worker processes outlived a kill -9 of the server"
    finally:
        server.kill()
