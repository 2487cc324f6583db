"""The Apollo client and the face settings: answers classified as permanent or transient, strict
parsing of untrusted answers, timeouts, refused connections."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest

from imageapi.core.config import load_config
from imageapi.core.errors import ConfigError
from imageapi.core.faces.apollo import ApolloClient, ApolloError, parse_detection
from imageapi.core.faces.settings import FaceSettings, face_settings, face_settings_from_env
from tests.apollo_standin import MODEL, StandIn, closed_port_url, default_faces, face

HASH = "ab" * 32
JPEG = b"\xff\xd8\xff\xe0" + bytes(100) + b"\xff\xd9"


@pytest.fixture()
def standin() -> Iterator[StandIn]:
    with StandIn(decode_images=False) as s:
        yield s


def test_settings_defaults_fallback_and_validation() -> None:
    off = face_settings_from_env({"FACE_BACKEND": "off"})
    assert off.base_url is None and off.active == "off" and not off.enabled
    assert not FaceSettings(base_url=None).enabled
    assert (off.hash_backfill_max_per_tick, off.backlog_max_per_tick, off.detect_concurrency,
            off.detect_timeout, off.autobind_min_cos) == (2000, 64, 8, 60.0, 0.4)
    fallback = face_settings_from_env({"APOLLO_API_BASE_URL": "http://apollo:8000/"})
    assert fallback.base_url == "http://apollo:8000" and fallback.enabled
    both = face_settings_from_env({"APOLLO_API_BASE_URL": "http://a", "APOLLO_FACE_API_BASE_URL": "https://f/x"})
    assert both.base_url == "https://f/x"
    tuned = face_settings_from_env({"FACE_BACKLOG_MAX_PER_TICK": "5", "FACE_DETECT_CONCURRENCY": "2",
                                    "FACE_DETECT_TIMEOUT_SEC": "1.5", "FACE_AUTOBIND_MIN_COS": "-0.2",
                                    "FACE_HASH_BACKFILL_MAX_PER_TICK": "10"})
    assert (tuned.backlog_max_per_tick, tuned.detect_concurrency, tuned.detect_timeout, tuned.autobind_min_cos,
            tuned.hash_backfill_max_per_tick) == (5, 2, 1.5, -0.2, 10)
    for name, value in (("FACE_BACKLOG_MAX_PER_TICK", "0"), ("FACE_DETECT_CONCURRENCY", "many"),
                        ("FACE_DETECT_TIMEOUT_SEC", "0"), ("FACE_DETECT_TIMEOUT_SEC", "nan"),
                        ("FACE_AUTOBIND_MIN_COS", "1.5"), ("APOLLO_FACE_API_BASE_URL", "apollo:8000")):
        with pytest.raises(ConfigError) as info:
            face_settings_from_env({name: value})
        assert info.value.setting == name


def test_settings_come_from_the_config(env_dirs: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APOLLO_API_BASE_URL", raising=False)
    monkeypatch.setenv("APOLLO_FACE_API_BASE_URL", "http://127.0.0.1:9")
    (env_dirs["tmp"] / ".env").write_text("FACE_DETECT_CONCURRENCY=3\n")
    st = face_settings(load_config())
    assert st.base_url == "http://127.0.0.1:9" and st.detect_concurrency == 3


async def test_detect_sends_the_protocol_and_parses_the_answer(standin: StandIn) -> None:
    async with ApolloClient(standin.url, timeout=5, concurrency=2) as client:
        det = await client.detect(JPEG, HASH)
        health = await client.health()
    assert det.model == MODEL and len(det.faces) == len(default_faces(HASH))
    assert standin.requests == {HASH: 1} and standin.received[0].size == len(JPEG)
    if det.faces:
        assert list(det.faces[0].embedding) == pytest.approx(default_faces(HASH)[0]["embedding"])
    assert health["status"] == "ok" and health["http_status"] == 200


@pytest.mark.parametrize(("mode", "permanent", "service"), [
    ("400", True, False), ("415", True, False), ("422", True, False),
    ("408", False, False), ("429", False, False), ("500", False, False), ("503", False, False),
    ("badjson", False, False), ("badshape", False, False), ("drop", False, False),
    # The service as configured, not the picture: a token refused, not the detect endpoint.
    ("401", False, True), ("403", False, True), ("404", False, True), ("405", False, True),
])
async def test_answers_are_classified(standin: StandIn, mode: str, permanent: bool, service: bool) -> None:
    standin.mode = mode
    async with ApolloClient(standin.url, timeout=5, concurrency=2) as client:
        with pytest.raises(ApolloError) as info:
            await client.detect(JPEG, HASH)
    assert info.value.permanent is permanent and info.value.connection is service
    if mode.isdigit():
        assert info.value.status == int(mode) and mode in info.value.message


async def test_refused_connection_and_timeout() -> None:
    async with ApolloClient(closed_port_url(), timeout=5, concurrency=2) as client:
        with pytest.raises(ApolloError) as info:
            await client.detect(JPEG, HASH)
        assert info.value.connection and not info.value.permanent
        with pytest.raises(ApolloError) as info:
            await client.health()
        assert info.value.connection
    with StandIn(mode="hang", decode_images=False) as hanging:
        async with ApolloClient(hanging.url, timeout=0.3, concurrency=2) as client:
            with pytest.raises(ApolloError) as info:
                await client.detect(JPEG, HASH)
    assert "no answer within" in info.value.message and not info.value.permanent and not info.value.connection


def _answer(faces: object, model: object = "m") -> bytes:
    return json.dumps({"model": model, "faces": faces}).encode()


def test_parse_detection_is_strict() -> None:
    ok = parse_detection(_answer([face([1.0, 2.0], (0.1, 0.2, 0.3, 0.4), 0.75)]))
    assert ok.faces[0].bbox == (0.1, 0.2, 0.3, 0.4) and ok.faces[0].score == 0.75
    assert parse_detection(_answer([])).faces == []
    bad = [
        b"", b"not json", b"[1, 2]", b"\xff\xfe", b"[" * 100_000,
        _answer([], model=""), _answer([], model=3), json.dumps({"model": "m"}).encode(),
        _answer([{"bbox": [0, 0, 1], "score": 1, "embedding": [1.0]}]),
        _answer([{"bbox": [0, 0, 1, 1], "score": "high", "embedding": [1.0]}]),
        _answer([{"bbox": [0, 0, 1, 1], "score": True, "embedding": [1.0]}]),
        _answer([{"bbox": [0, 0, 1, 1], "score": 1, "embedding": []}]),
        _answer([{"bbox": [0, 0, 1, 1], "score": 1, "embedding": ["x"]}]),
        _answer([{"bbox": [0, 0, 1, 1], "score": 1, "embedding": [1.0] * 5000}]),
        _answer([face([1.0, 2.0]), face([1.0, 2.0, 3.0])]),            # embeddings of different lengths
        _answer([face([1.0])] * 1001),
        _answer(["face"]),
        b'{"model": "m", "faces": [{"bbox": [0, 0, 1, 1], "score": NaN, "embedding": [1.0]}]}',
        b'{"model": "m", "faces": [{"bbox": [0, 0, 1, Infinity], "score": 1, "embedding": [1.0]}]}',
    ]
    for body in bad:
        with pytest.raises(ApolloError) as info:
            parse_detection(body)
        assert not info.value.permanent and not info.value.connection
    assert math.isfinite(ok.faces[0].embedding[0])


async def test_answer_size_is_capped(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    from imageapi.core.faces import apollo

    monkeypatch.setattr(apollo, "MAX_RESPONSE_BYTES", 1000)
    standin.script[HASH] = [face([0.123456789] * 200)]
    async with ApolloClient(standin.url, timeout=5, concurrency=1) as client:
        with pytest.raises(ApolloError) as info:
            await client.detect(JPEG, HASH)
    assert "larger than 1000 bytes" in info.value.message and not info.value.permanent
