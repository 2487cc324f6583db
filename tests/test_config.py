from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from imageapi.core.config import ensure_dirs, load_config, parse_database_url, parse_log_level
from imageapi.core.errors import ConfigError
from imageapi.core.postgres.url import parse_postgres_url

REPO = Path(__file__).resolve().parent.parent


def test_defaults_need_only_a_data_dir(env_dirs: dict[str, Path]) -> None:
    cfg = load_config()
    assert cfg.database_path == env_dirs["data"] / "imageapi.db"
    assert cfg.thumbnails == env_dirs["data"] / "thumbnails"
    assert cfg.watch_quick_interval == 60 and cfg.watch_full_interval == 3600
    assert cfg.base_path is None and cfg.thumb_size == 400


def test_dotenv_in_a_parent_folder_is_read_and_environment_wins(
    env_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp = env_dirs["tmp"]
    (tmp / ".env").write_text("THUMBNAILS=/from/dotenv\nWATCH_QUICK_INTERVAL_SECONDS=5\n")
    sub = tmp / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    cfg = load_config()
    assert cfg.thumbnails == Path("/from/dotenv") and cfg.watch_quick_interval == 5
    monkeypatch.setenv("THUMBNAILS", str(tmp / "thumbs"))
    assert load_config().thumbnails == tmp / "thumbs"
    assert load_config(thumbnails=tmp / "cli").thumbnails == tmp / "cli"


def test_database_url_forms() -> None:
    assert parse_database_url("sqlite:////abs/x.db") == Path("/abs/x.db")
    assert parse_database_url("sqlite:///abs/x.db") == Path("/abs/x.db")
    assert parse_database_url("sqlite://rel/x.db?mode=rwc") == Path("rel/x.db")
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        parse_database_url("sqlite://")
    assert parse_database_url("/p/y.db") == Path("/p/y.db")
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        parse_database_url("postgres://host/db")  # not a path: load_config reads it as PostgreSQL


@pytest.mark.parametrize("url", ["postgresql://u:s3cret@db.example:5433/photos", "postgres://u:s3cret@h/db",
                                 "postgresql://u:s3cret@/db?host=/run/postgresql"])
def test_postgres_database_url(env_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    cfg = load_config()
    assert cfg.database.kind == "postgresql" and cfg.database.url == url
    assert "s3cret" not in repr(cfg) and "s3cret" not in cfg.database.shown and "***" in cfg.database.shown
    assert cfg.database_path == env_dirs["data"] / "imageapi.db"  # the SQLite file `db copy` reads
    assert load_config(database_path=env_dirs["tmp"] / "x.db").database.kind == "sqlite"  # --database wins
    with pytest.raises(ConfigError, match="DATABASE_URL") as bad:
        load_config(environ={"DATABASE_URL": "postgresql://u:s3cret@h:99999/db"})
    assert "s3cret" not in bad.value.message
    with pytest.raises(ConfigError, match="DATABASE_URL") as bad:
        load_config(environ={"DATABASE_URL": "mysql://u:s3cret@h/db"})
    assert "s3cret" not in bad.value.message


def test_an_unreachable_postgresql_is_one_line_without_its_password(env_dirs: dict[str, Path]) -> None:
    import subprocess
    import sys

    env = {**os.environ, "DATABASE_URL": "postgresql://u:s3cret@127.0.0.1:1/db", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "imageapi", "library", "list"], capture_output=True, text=True,
                          env=env, cwd=env_dirs["tmp"], timeout=60)
    assert done.returncode == 5, done.stderr  # a service that is down
    assert "cannot connect to PostgreSQL at postgresql://u:***@127.0.0.1:1/db" in done.stderr.replace("\n", "")
    assert "s3cret" not in done.stderr + done.stdout and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 3  # one line (wrapped by the terminal width at most)


@pytest.mark.parametrize(
    ("value", "level"),
    [("info", "info"), ("DEBUG", "debug"), ("warning", "warn"), ("hyper=warn,imageapi=trace", "trace"), ("off", "off")],
)
def test_log_levels(value: str, level: str) -> None:
    assert parse_log_level(value) == level


@pytest.mark.parametrize(
    ("name", "value"),
    [("WATCH_QUICK_INTERVAL_SECONDS", "soon"), ("WATCH_FULL_INTERVAL_SECONDS", "-3"), ("LOG_LEVEL", "loud"),
     ("THUMBNAIL_SIZE", "big")],
)
def test_bad_values_name_the_setting(env_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                     name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_config()
    assert info.value.setting == name


def test_unreadable_base_path_and_uncreatable_thumbnails(env_dirs: dict[str, Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASE_PATH", str(env_dirs["tmp"] / "missing"))
    with pytest.raises(ConfigError, match="BASE_PATH"):
        load_config()
    monkeypatch.delenv("BASE_PATH")
    blocker = env_dirs["tmp"] / "file"
    blocker.write_text("x")
    monkeypatch.setenv("THUMBNAILS", str(blocker / "thumbs"))
    with pytest.raises(ConfigError, match="THUMBNAILS"):
        ensure_dirs(load_config())


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30), st.text(max_size=20).map(lambda p: "\u00a7" + p),  # '§': in no message
       st.sampled_from(["postgresql", "postgres", "POSTGRESQL", "mysql"]))
def test_postgres_url_password_never_shown(rest: str, password: str, scheme: str) -> None:
    """Whatever the URL around it, a password is neither in the setting's repr nor in an error."""
    from urllib.parse import quote

    secret = quote(password, safe="")
    assume(secret not in rest and secret not in scheme and secret not in "user:***")
    url = f"{scheme}://user:{secret}@{rest}" if len(rest) % 2 else f"{scheme}://user@{rest}?password={secret}"
    try:
        found = parse_postgres_url(url)
    except ConfigError as exc:
        assert exc.setting == "DATABASE_URL" and "\n" not in exc.message
        assert secret not in exc.message
        return
    assert found.kind == "postgresql" and found.url == url
    assert secret not in repr(found) and secret not in found.shown


def test_an_unknown_users_home_is_the_settings_error(env_dirs: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        parse_database_url("~no_such_user_zz/x.db")
    with pytest.raises(ConfigError, match="THUMBNAILS"):
        load_config(environ={"THUMBNAILS": "~no_such_user_zz/t"})
