"""Shared fixtures. The corpus of real camera files lives in ../shared/corpus (or IMAGEAPI_CORPUS);
tests that need it skip with a reason when it is absent, and fail instead under
IMAGEAPI_REQUIRE_CORPUS=1 (set by .ci/run)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# IMAGEAPI_TEST_DATABASE=postgresql runs the suite against PostgreSQL: every test's environment
# (env_dirs) and database (db_target) is then a fresh database on the test server (tests/pg.py).
ON_POSTGRES = os.environ.get("IMAGEAPI_TEST_DATABASE", "sqlite") == "postgresql"


# Modules that never open the index (parsers, decoders, ffmpeg): run once, on the SQLite pass.
DATABASE_FREE = {"test_exif.py", "test_ffmpeg.py", "test_raw.py", "test_raw_formats.py", "test_raw_fuzz.py",
                 "test_thumbs.py", "test_video_doctor.py", "test_walk.py"}
# The browser tests build one SQLite index per module (and look into it with sqlite3); the server
# API they drive is tested against PostgreSQL by the server test modules.
OWN_SQLITE = {"test_web_browser.py", "test_web_people.py", "test_web_map.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Against PostgreSQL: `@pytest.mark.sqlite_only` tests (what only an SQLite file has: its
    header, pages, WAL) and the modules that never open the index are skipped."""
    if not ON_POSTGRES:
        return
    sqlite_file = pytest.mark.skip(reason="about the SQLite file itself (IMAGEAPI_TEST_DATABASE=postgresql)")
    no_database = pytest.mark.skip(reason="never opens the index: run on the SQLite pass")
    own_sqlite = pytest.mark.skip(reason="serves an SQLite index of its own: run on the SQLite pass")
    for item in items:
        if item.get_closest_marker("sqlite_only"):
            item.add_marker(sqlite_file)
        elif item.path.name in DATABASE_FREE:
            item.add_marker(no_database)
        elif item.path.name in OWN_SQLITE:
            item.add_marker(own_sqlite)


def find_corpus() -> Path | None:
    env = os.environ.get("IMAGEAPI_CORPUS")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "corpus")
    for c in candidates:
        if (c / "expected_exiftool.json").is_file():
            return c
    return None


@pytest.fixture(scope="session")
def corpus() -> Path:
    found = find_corpus()
    if found is None:
        reason = "test corpus not found: set IMAGEAPI_CORPUS or put it at ../shared/corpus"
        if os.environ.get("IMAGEAPI_REQUIRE_CORPUS") == "1":
            pytest.fail(reason + " (IMAGEAPI_REQUIRE_CORPUS=1)")
        pytest.skip(reason)
    return found


@pytest.fixture(scope="session")
def oracle(corpus: Path) -> dict[str, dict]:
    """What exiftool reads from each corpus file, keyed by path relative to the corpus ('jpeg/x.jpg')."""
    entries = json.loads((corpus / "expected_exiftool.json").read_text())
    return {e["SourceFile"].removeprefix("./"): e for e in entries}


@pytest.fixture()
def env_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> dict[str, Path]:
    """An isolated data folder and environment for one test (no .env or settings leak in); its
    database is a fresh PostgreSQL one when the suite runs against PostgreSQL."""
    data = tmp_path / "data"
    for name in (
        "DATABASE_URL", "BASE_PATH", "THUMBNAILS", "VIDEO_PATH", "GIFS_DIRECTORY",
        "PREVIEW_CLIPS_DIRECTORY", "EXCLUDED_DIRS", "IGNORE_PATTERNS", "LOG_LEVEL", "RUST_LOG",
        "WATCH_QUICK_INTERVAL_SECONDS", "WATCH_FULL_INTERVAL_SECONDS", "SECRET_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IMAGEAPI_DATA_DIR", str(data))
    if ON_POSTGRES:
        monkeypatch.setenv("DATABASE_URL", request.getfixturevalue("pg_url"))
    monkeypatch.chdir(tmp_path)
    return {"data": data, "tmp": tmp_path}


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A PostgreSQL server URL for the whole run (tests/pg.py): IMAGEAPI_TEST_POSTGRES_URL, or a
    throwaway cluster started here and removed at the end."""
    from tests import pg

    given = os.environ.get("IMAGEAPI_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    bindir = pg.find_bin()
    if bindir is None:
        if os.environ.get("IMAGEAPI_REQUIRE_POSTGRES") == "1":
            pytest.fail(pg.INSTALL_HINT + " (IMAGEAPI_REQUIRE_POSTGRES=1)")
        pytest.skip(pg.INSTALL_HINT)
    cluster = pg.Cluster(bindir)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture()
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped after the test."""
    import asyncio

    from tests import pg

    name = asyncio.run(pg.create_database(pg_server))
    try:
        yield pg.with_database(pg_server, name)
    finally:
        asyncio.run(pg.drop_database(pg_server, name))
