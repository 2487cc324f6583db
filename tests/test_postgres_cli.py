"""The commands with DATABASE_URL=postgresql://...: the same index as SQLite gives, and doctor."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.media_factory import make_jpeg
from tests.test_cli import imageapi


def _env(env_dirs: dict[str, Path], url: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": url}


def test_doctor_checks_the_postgresql_server(env_dirs: dict[str, Path], pg_url: str) -> None:
    res = imageapi("doctor", "--json", env=_env(env_dirs, pg_url))
    assert res.returncode == 0, res.stdout + res.stderr
    checks = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
    assert checks["database"]["ok"] and "PostgreSQL" in checks["database"]["detail"]
    assert "database integrity" not in checks  # SQLite's quick_check has no meaning here
    assert checks["database schema"]["ok"]

    gone = "postgresql://someone:hunter2@127.0.0.1:1/nothing"
    res = imageapi("doctor", "--json", env=_env(env_dirs, gone))
    assert res.returncode == 1
    checks = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
    assert not checks["database"]["ok"] and checks["database"]["fix"]
    assert "hunter2" not in res.stdout + res.stderr


def test_scan_on_postgresql_indexes_what_sqlite_indexes(env_dirs: dict[str, Path], pg_url: str) -> None:
    root = env_dirs["tmp"] / "Pictures"
    for i in range(5):
        make_jpeg(root / f"album{i % 2}" / f"IMG_{i}.jpg", seed=i)
    records = {}
    for name, extra in (("sqlite", {"IMAGEAPI_DATA_DIR": str(env_dirs["tmp"] / "sq")}),
                        ("postgresql", {"DATABASE_URL": pg_url})):
        env = {**os.environ, "BASE_PATH": str(root), **extra}
        if name == "sqlite":
            env.pop("DATABASE_URL", None)
        res = imageapi("scan", "--full", "--json", env=env)
        assert res.returncode == 0, res.stderr
        first = json.loads(res.stdout)["libraries"][0]
        assert (first["added"], first["hashed"], first["thumbs_made"], first["errors"]) == (5, 5, 5, 0), first
        again = json.loads(imageapi("scan", "--full", "--json", env=env).stdout)["libraries"][0]
        assert (again["scanned"], again["added"], again["changed"]) == (5, 0, 0), again
        records[name] = [json.loads(imageapi("info", str(p), "--json", env=env).stdout)
                         for p in sorted(root.rglob("*.jpg"))]
    for rec in (*records["sqlite"], *records["postgresql"]):
        for key in ("id", "first_seen", "last_seen", "indexed_at"):
            rec.pop(key, None)
        rec["thumbnail"].pop("path")  # under each run's data folder
    for a, b in zip(records["sqlite"], records["postgresql"], strict=True):
        assert a == b, {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
