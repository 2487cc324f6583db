"""Every setting is read and checked once, at start-up: a bad value stops any command with exit 2
and one line naming it, before a database, a worker pool, a server or a watcher starts. The
parsers never raise anything but ConfigError, whatever the text (hypothesis). A failure while the
server starts does not leave the process hanging."""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imageapi.core import config as config_module
from imageapi.core import parsers
from imageapi.core.config import load_config, parse_database_url, parse_log_level
from imageapi.core.errors import ConfigError
from imageapi.core.tokens import MIN_SECRET_BYTES

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 40.0  # seconds: a command that hangs instead of failing fails the test

# Every setting with values it must refuse. The first is the one the CLI table runs; the
# in-process table runs them all. Blank means "unset" (the default) everywhere.
INT_BAD = ["abc", "-1", "1.5", "nan", "9" * 40, "\u0663", "1_0", "0x10", "1e3", "++1"]
SECONDS_BAD = ["nan", "soon", "-3", "inf", "1e999", "NaN", "1_0", "Infinity", "0", "1e9"]
URL_BAD = ["localhost:11434", "ftp://x", "http://", "http://[::1", "http://a:99999", "http://a b", "http://\u00e9"]
TEXT_BAD = ["a\nb", "x\x00y", "tab\there", "\udcff"]

BAD: dict[str, list[str]] = {
    "DATABASE_URL": ["mysql://h/db", "postgresql://h:99999/db", "postgres://h:x/db", "sqlite://", "sqlite:"],
    "BASE_PATH": ["/does/not/exist"],
    "BIND_URL": ["nonsense", "127.0.0.1:99999", "host:port", "http://[::1", "a b:80"],
    "SECRET_KEY": ["short", "x" * 40 + "\x01"],
    "LOG_LEVEL": ["loud", ",", "imageapi=nope"],
    "RUST_LOG": ["imageapi=loud"],
    "WATCH_QUICK_INTERVAL_SECONDS": ["nan", "1e-9", "0.5", *SECONDS_BAD],
    "WATCH_FULL_INTERVAL_SECONDS": ["0", "1e-300", "inf", *SECONDS_BAD],
    "WATCH_DRAINS": ["maybe", "2", "nope", "t"],
    "THUMBNAIL_SIZE": ["big", "0", "100000", *INT_BAD],
    "WORKERS": ["0", "many", "100000", *INT_BAD],
    "VIDEO_MAX_TRANSCODES": ["abc", "0", "1000", *INT_BAD],
    "VIDEO_PREVIEWS_MAX_PER_TICK": ["-1", "eight", "99999999", *INT_BAD],
    "TOKEN_TTL": ["bad", "0", "-1d", "7x", "nan", "inf", "1e999", "99999w", "0s", "d", "7 days"],
    "SERVE_PROCESSES": ["0", "65", "two", *INT_BAD],
    "JOB_LEASE_SECONDS": ["0.5", "3601", *SECONDS_BAD],
    "APOLLO_FACE_API_BASE_URL": URL_BAD,
    "APOLLO_API_BASE_URL": URL_BAD[::-1],
    "FACE_HASH_BACKFILL_MAX_PER_TICK": ["0", *INT_BAD],
    "FACE_BACKLOG_MAX_PER_TICK": ["-5", *INT_BAD],
    "FACE_DETECT_CONCURRENCY": ["nan", "0", "1000", *INT_BAD],
    "FACE_DETECT_TIMEOUT_SEC": ["0", "1e6", *SECONDS_BAD],
    "FACE_AUTOBIND_MIN_COS": ["1.5", "-2", "nan", "inf", "cos", "1e999"],
    "FACE_BACKEND": ["dlib", "on", "1", "embeded"],
    "FACE_UPSAMPLE": ["4", *INT_BAD],
    "FACE_MIN_SIZE_PX": ["0", "1601", *INT_BAD],
    "FACE_MIN_SCORE": ["11", "-11", "nan", "inf", "high"],
    "MAP_TILE_URL": ["tile.openstreetmap.org/{z}/{x}/{y}.png", "https://tiles.example/{z}/{x}.png", *URL_BAD],
    "MAP_TILE_ATTRIBUTION": ["OSM\r\nX: y", *TEXT_BAD],
    "FACE_SERVE_QUEUE_PER_WORKER": ["-1", "10001", *INT_BAD],
    "FACE_SERVE_MAX_BODY_MB": ["0", "1025", *INT_BAD],
    "FACE_SERVE_TIMEOUT_SEC": ["0", "1e6", *SECONDS_BAD],
    "FACE_SERVE_TOKEN": ["short", "a token with spaces in it", "t\u00f6ken-with-\u00fcmlauts-0123"],
    "APOLLO_FACE_API_TOKEN": ["short", "a token with spaces in it", "tab\tinside-the-token-value"],
    "FACE_CLUSTER": ["sometimes", "2", "offf"],
    "FACE_CLUSTER_MAX_DISTANCE": ["0", "-0.1", "2.5", "nan", "inf", "far"],
    "FACE_CLUSTER_MIN_FACES": ["0", "10001", *INT_BAD],
    "FACE_CLUSTER_HOUR": ["24", "3am", "never", *INT_BAD],
    "OLLAMA_PRIMARY_URL": ["localhost:11434", *URL_BAD],
    "OLLAMA_URL": ["http://[::1", *URL_BAD],
    "OLLAMA_PRIMARY_MODEL": TEXT_BAD,
    "OLLAMA_MODEL": TEXT_BAD[::-1],
    "OLLAMA_FALLBACK_URL": ["ftp://x", *URL_BAD],
    "OLLAMA_FALLBACK_MODEL": TEXT_BAD,
    "OLLAMA_VISION_MODEL": TEXT_BAD,
    "OLLAMA_EMBEDDING_MODEL": TEXT_BAD,
    "OLLAMA_CONNECT_TIMEOUT_SEC": ["-1", "0", "1e6", *SECONDS_BAD],
    "INSIGHTS_REQUEST_TIMEOUT_SEC": ["inf", *SECONDS_BAD],
    "OPENROUTER_API_KEY": ["key\r\nX-Injected: 1", *TEXT_BAD],
    "OPENROUTER_DEFAULT_MODEL": TEXT_BAD,
    "OPENROUTER_ALLOWED_MODELS": ["a,b\nc", *TEXT_BAD],
    "OPENROUTER_BASE_URL": ["openrouter.ai", *URL_BAD],
    "OPENROUTER_EMBEDDING_MODEL": TEXT_BAD,
    "OPENROUTER_HTTP_REFERER": ["https://x\r\nY: z", *TEXT_BAD],
    "OPENROUTER_APP_TITLE": TEXT_BAD,
    "AGENTIC_MAX_ITERATIONS": ["0", "101", *INT_BAD],
    "AGENTIC_CHAT_MAX_ITERATIONS": ["six", *INT_BAD],
    "INSIGHTS_TOOL_TIMEOUT_SEC": ["0", *SECONDS_BAD],
    "NOMINATIM_URL": ["nominatim", *URL_BAD],
    "NOMINATIM_USER_AGENT": ["me\nX: y", *TEXT_BAD],
    "NOMINATIM_MIN_INTERVAL_SEC": ["-1", "nan", "1e9", "inf", "soon"],
    "SMS_API_URL": ["sms:8000", *URL_BAD],
    "SMS_API_TOKEN": ["t\nX: y", *TEXT_BAD],
    "SUMMARIES_CONTACTS": ["a\nb", *TEXT_BAD],
    "SUMMARIES_FROM": ["2024-13-01", "yesterday", "2024-02-30", "20240101", "0000-01-01"],
    "SUMMARIES_TO": ["2024-02-30", "tomorrow", "2024-1-1"],
    "SUMMARIES_DAYS": ["0", "100000", *INT_BAD],
    "SUMMARIES_MODEL": TEXT_BAD,
    "TRUSTED_PROXIES": ["proxy.local", "10.0.0.0/33", "127.0.0.1, ::1, nope", "1.2.3.4/x", "\x00"],
    "IMAGEAPI_FFMPEG": ["/does/not/exist/ffmpeg", "no-such-ffmpeg-here", "/", "none", "x\x00y"],
    "IMAGEAPI_FFPROBE": ["/does/not/exist/ffprobe", "no-such-ffprobe-here", "/", "x\x00y"],
    "WORKER_LEASE_SECONDS": ["0.5", *SECONDS_BAD],
    "LIBRARY_PATH_MAP": ["/mnt/nas/photos", "/mnt/nas=relative", "/mnt/nas=/does/not/exist", "=/tmp",
                         "/mnt/nas=/tmp,/mnt/nas=/", "/mnt/nas=/tmp\x00", "main="],
}
# Settings every value of which is acceptable: any folder name or pattern, any path (a bad path
# is said when the folder is made: THUMBNAILS below).
FREE = {"EXCLUDED_DIRS", "IGNORE_PATTERNS", "IMAGEAPI_DATA_DIR", "THUMBNAILS", "VIDEO_PATH", "GIFS_DIRECTORY",
        "PREVIEW_CLIPS_DIRECTORY", "XDG_DATA_HOME"}
ALL = set(BAD) | FREE

COMMANDS: list[list[str]] = [["serve"], ["watch"], ["scan"], ["video", "previews"], ["faces", "drain"],
                             ["summaries", "build"], ["video", "hls"], ["doctor"], ["user", "list"], ["worker"]]

# The hangs and spins of issue 9, each on the command where it happened: before, each of these
# printed an error and then hung (ignoring SIGTERM), or ran on (failing every login), or spun.
HANGS = [
    (["serve"], "VIDEO_MAX_TRANSCODES", "abc"),
    (["serve"], "VIDEO_MAX_TRANSCODES", "0"),
    (["serve"], "VIDEO_PREVIEWS_MAX_PER_TICK", "-1"),
    (["watch"], "VIDEO_PREVIEWS_MAX_PER_TICK", "-1"),
    (["serve"], "TOKEN_TTL", "bad"),
    (["serve"], "TOKEN_TTL", "0"),
    (["watch"], "WATCH_QUICK_INTERVAL_SECONDS", "nan"),
    (["watch"], "WATCH_QUICK_INTERVAL_SECONDS", "1e-9"),
    (["serve"], "WATCH_FULL_INTERVAL_SECONDS", "nan"),
    (["serve"], "WATCH_DRAINS", "maybe"),
    (["video", "hls"], "VIDEO_MAX_TRANSCODES", "0"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def cli(tmp_path: Path) -> dict[str, Path]:
    photos = tmp_path / "photos"
    photos.mkdir()
    return {"tmp": tmp_path, "data": tmp_path / "data", "photos": photos}


def run_cli(cli: dict[str, Path], command: list[str], extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ALL and k not in ("LOG_LEVEL", "RUST_LOG")}
    env.update({"IMAGEAPI_DATA_DIR": str(cli["data"]), "BASE_PATH": str(cli["photos"]), "WORKERS": "1",
                "SECRET_KEY": "s" * 48, "APOLLO_FACE_API_BASE_URL": "http://127.0.0.1:9",
                "SUMMARIES_CONTACTS": "*", "PYTHONPATH": str(REPO)})
    env.update(extra)
    args = list(command)
    if command == ["serve"]:
        args += ["--bind", f"127.0.0.1:{free_port()}"]
    # A timeout kills the command: a hang fails the test instead of hanging it.
    return subprocess.run([sys.executable, "-m", "imageapi", *args], capture_output=True, text=True, env=env,
                          cwd=cli["tmp"], timeout=TIMEOUT, errors="backslashreplace")


def assert_refused_before_anything_started(cli: dict[str, Path], res: subprocess.CompletedProcess[str],
                                           name: str) -> None:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2, (name, res.returncode, res.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: {name}: "), res.stderr
    assert res.stdout == ""
    # Nothing was opened: no database (the server's first start-up step, every command's first
    # write), no thumbnail folder.
    assert not (cli["data"] / "imageapi.db").exists()
    assert not (cli["data"] / "thumbnails").exists()


CLI_CASES = [(COMMANDS[i % len(COMMANDS)], name, values[0]) for i, (name, values) in enumerate(sorted(BAD.items()))]


@pytest.mark.parametrize(("command", "name", "value"), CLI_CASES,
                         ids=[f"{' '.join(c)}-{n}={v!r}" for c, n, v in CLI_CASES])
def test_a_bad_setting_is_exit_2_in_one_line_before_anything_starts(
        cli: dict[str, Path], command: list[str], name: str, value: str) -> None:
    assert_refused_before_anything_started(cli, run_cli(cli, command, {name: value}), name)


@pytest.mark.parametrize(("command", "name", "value"), HANGS,
                         ids=[f"{' '.join(c)}-{n}={v!r}" for c, n, v in HANGS])
def test_the_settings_that_hung_or_spun_are_exit_2(
        cli: dict[str, Path], command: list[str], name: str, value: str) -> None:
    assert_refused_before_anything_started(cli, run_cli(cli, command, {name: value}), name)


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_every_command_checks_every_setting_first(cli: dict[str, Path], command: list[str]) -> None:
    # A setting that command never uses is still checked: the insight ones for scan, the video
    # ones for faces, and so on.
    for name, value in (("OLLAMA_PRIMARY_URL", "localhost:11434"), ("FACE_DETECT_TIMEOUT_SEC", "nan")):
        assert_refused_before_anything_started(cli, run_cli(cli, command, {name: value}), name)


def test_a_folder_that_cannot_be_made_is_exit_2_before_the_database(cli: dict[str, Path]) -> None:
    blocker = cli["tmp"] / "file"
    blocker.write_text("")
    for command in (["serve"], ["watch"], ["scan"]):
        res = run_cli(cli, command, {"THUMBNAILS": str(blocker / "thumbs")})
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and "THUMBNAILS" in res.stderr, res.stderr
        assert not (cli["data"] / "imageapi.db").exists()


def test_every_documented_setting_is_in_the_table() -> None:
    names: set[str] = set()
    for doc in ("README.md", "docs/insights.md", "docs/apollo-faces.md", "docs/video.md"):
        in_table = False
        for line in (REPO / doc).read_text().splitlines():
            in_table = line.startswith("| setting |") or (in_table and line.startswith("|"))
            if in_table:
                names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    assert names and names - ALL == set()
    for name in BAD:  # and the table names no setting that does not exist
        assert name in names or name in ("RUST_LOG", "OLLAMA_URL", "OLLAMA_MODEL"), name


# --------------------------------------------------------------------------------------------
# In process: every bad value of the table, and blank values


@pytest.mark.parametrize("name", sorted(BAD))
def test_load_config_refuses_each_bad_value_naming_the_setting(tmp_path: Path, name: str) -> None:
    for value in BAD[name]:
        env = {"IMAGEAPI_DATA_DIR": str(tmp_path / "data"), name: value}
        if name in ("OLLAMA_MODEL", "OLLAMA_URL"):
            env.update({"OLLAMA_PRIMARY_MODEL": "", "OLLAMA_PRIMARY_URL": ""})
        with pytest.raises(ConfigError) as info:
            load_config(environ=env, cwd=tmp_path)
        assert info.value.setting == name, value
        assert "\n" not in info.value.message and len(info.value.message) < 200, value


def test_blank_means_the_default(tmp_path: Path) -> None:
    base = {"IMAGEAPI_DATA_DIR": str(tmp_path / "data")}
    default = load_config(environ=base, cwd=tmp_path)
    for name in sorted(ALL - {"IMAGEAPI_DATA_DIR", "XDG_DATA_HOME", "IGNORE_PATTERNS"}):
        for blank in ("", "  "):
            assert load_config(environ={**base, name: blank}, cwd=tmp_path) == default, name


def test_good_values_are_typed(tmp_path: Path) -> None:
    cfg = load_config(environ={
        "IMAGEAPI_DATA_DIR": str(tmp_path), "VIDEO_MAX_TRANSCODES": " 3 ", "VIDEO_PREVIEWS_MAX_PER_TICK": "0",
        "TOKEN_TTL": "12h", "SERVE_PROCESSES": "4", "WATCH_QUICK_INTERVAL_SECONDS": "1",
        "WATCH_FULL_INTERVAL_SECONDS": "1.5e3", "FACE_DETECT_TIMEOUT_SEC": "0.5", "FACE_AUTOBIND_MIN_COS": "-1",
        "APOLLO_API_BASE_URL": "http://apollo:8000/", "SUMMARIES_FROM": "2024-01-02", "BIND_URL": ":9000",
        "SECRET_KEY": "k" * MIN_SECRET_BYTES}, cwd=tmp_path)
    assert (cfg.video.max_transcodes, cfg.video.previews_max_per_tick) == (3, 0)
    assert (cfg.server.token_ttl, cfg.server.processes) == (12 * 3600, 4)
    assert (cfg.watch_quick_interval, cfg.watch_full_interval) == (1.0, 1500.0)
    assert cfg.faces.base_url == "http://apollo:8000" and cfg.faces.detect_timeout == 0.5
    assert cfg.faces.autobind_min_cos == -1 and cfg.insights.apollo_url == "http://apollo:8000"
    assert cfg.insights.summaries_from == date(2024, 1, 2) and cfg.bind_url == ":9000"
    assert config_module.MIN_SECRET_BYTES == MIN_SECRET_BYTES


# --------------------------------------------------------------------------------------------
# The parsers, with generated text: a value within bounds, or ConfigError naming the setting


def any_text() -> st.SearchStrategy[str]:
    # Surrogates included: the environment holds undecodable bytes that way.
    return st.text(st.characters(exclude_categories=()), max_size=60)


def numberish() -> st.SearchStrategy[str]:
    words = st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-0", "0", "1_000", "\u0663",
                             "0x1f", "1e-400", "9" * 5000, ".", "+", "1.", ".5", " 7 ", "7d", "7 d", "1w", "2.5h"])
    return st.one_of(any_text(), words, st.integers().map(str), st.floats().map(repr),
                     st.from_regex(r"\A[+-]?[0-9]{0,6}(\.[0-9]{0,3})?([eE][+-]?[0-9]{1,4})?[smhdwSMHDW]?\Z"))


def refused_by_name(fn: object, name: str, *args: object, **kw: object) -> object:
    try:
        return fn(*args, **kw)  # type: ignore[operator]
    except ConfigError as exc:
        assert exc.setting == name and "\n" not in exc.message
        return None


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(numberish(), st.integers(-5, 5), st.integers(0, 10**6))
def test_parse_int(raw: str, lo: int, span: int) -> None:
    value = refused_by_name(parsers.parse_int, "N", "N", raw, minimum=lo, maximum=lo + span)
    assert value is None or (type(value) is int and lo <= value <= lo + span)


@SETTINGS
@given(numberish(), st.sampled_from([0.0, 1.0, -1.0]), st.booleans())
def test_parse_number(raw: str, lo: float, above: bool) -> None:
    value = refused_by_name(parsers.parse_number, "N", "N", raw, minimum=lo, maximum=1e6, above=above)
    assert value is None or (isinstance(value, float) and math.isfinite(value) and lo <= value <= 1e6
                             and not (above and value == lo))


@SETTINGS
@given(numberish())
def test_parse_duration(raw: str) -> None:
    value = refused_by_name(parsers.parse_duration, "D", "D", raw, minimum=1.0, maximum=10 * 365 * 86400.0)
    assert value is None or (isinstance(value, float) and 1.0 <= value <= 10 * 365 * 86400.0)


def urlish() -> st.SearchStrategy[str]:
    return st.one_of(any_text(), st.builds(lambda a, b: a + b, st.sampled_from(
        ["http://", "https://", "ftp://", "http://[", "http://[::1]:", "http://a:", "//", "http:"]), any_text()))


@SETTINGS
@given(urlish())
def test_parse_url(raw: str) -> None:
    value = refused_by_name(parsers.parse_url, "U", "U", raw)
    if value is not None:
        from urllib.parse import urlsplit

        parts = urlsplit(str(value))
        assert parts.scheme in ("http", "https") and parts.hostname and value.isascii()  # type: ignore[union-attr]
        assert not any(c.isspace() for c in str(value))


@SETTINGS
@given(any_text())
def test_parse_text_day_bind_and_lists(raw: str) -> None:
    text = refused_by_name(parsers.parse_header_text, "T", "T", raw)
    assert text is None or not re.search(r"[\x00-\x1f\x7f]", str(text))
    day = refused_by_name(parsers.parse_day, "D", "D", raw)
    assert day is None or isinstance(day, date)
    bind = refused_by_name(parsers.parse_bind, "B", "B", raw)
    assert bind is None or (isinstance(bind, tuple) and 0 <= bind[1] <= 65535)
    assert all(item and item == item.strip() for item in parsers.parse_list(raw))
    refused_by_name(parse_log_level, "LOG_LEVEL", raw)
    refused_by_name(parse_database_url, "DATABASE_URL", raw)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(sorted(ALL - {"BASE_PATH", "IMAGEAPI_DATA_DIR", "XDG_DATA_HOME"})),
                       st.one_of(numberish(), urlish()), max_size=6))
def test_load_config_raises_only_config_error(tmp_path: Path, env: dict[str, str]) -> None:
    env = {k: v.replace("\x00", "") for k, v in env.items()}  # an environment cannot hold NUL
    try:
        cfg = load_config(environ={"IMAGEAPI_DATA_DIR": str(tmp_path / "data"), **env}, cwd=tmp_path)
    except ConfigError as exc:
        assert exc.setting in ALL | {"OLLAMA_URL", "OLLAMA_MODEL", "SUMMARIES_FROM"}
        return
    assert 1 <= cfg.watch_quick_interval <= config_module.MAX_INTERVAL
    assert 1 <= cfg.video.max_transcodes and cfg.video.previews_max_per_tick >= 0 and cfg.server.token_ttl >= 1


# --------------------------------------------------------------------------------------------
# A failure while the server starts: everything opened is closed again, and the process ends


STARTUP_FAILS = textwrap.dedent("""
    import sys
    from imageapi.core.config import load_config
    from imageapi.server import runner
    from imageapi.server.app import create_app

    cfg = load_config()

    def broken_watcher(config, db, pool):
        raise RuntimeError("the watcher cannot be made")

    runner.serve(lambda w: create_app(cfg, watch=w, watcher_factory=broken_watcher), "127.0.0.1",
                 int(sys.argv[1]), cfg)
""")


def test_a_failure_while_the_server_starts_ends_the_process(cli: dict[str, Path]) -> None:
    """The database, its second connection and the pools were open when the watcher failed: they
    are closed again, so the error ends the process instead of leaving it hanging, deaf to SIGTERM."""
    env = {**os.environ, "IMAGEAPI_DATA_DIR": str(cli["data"]), "SECRET_KEY": "s" * 48, "WORKERS": "1",
           "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", STARTUP_FAILS, str(free_port())], capture_output=True, text=True,
                         env=env, cwd=cli["tmp"], timeout=TIMEOUT)
    assert res.returncode == 1 and "the watcher cannot be made" in res.stderr, res.stderr
    assert (cli["data"] / "imageapi.db").exists()  # the database had been opened
