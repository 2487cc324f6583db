"""The parsers every setting goes through: whole numbers and numbers within bounds, durations,
URLs, lists, dates, header-safe text and HOST:PORT addresses.

Each takes the setting's name and raw text and returns a value or raises ConfigError naming the
setting; no other exception gets out, whatever the text. A blank value means "unset" (the
default). Numbers are plain ASCII decimals: no `nan`, `inf`, `1_000` or non-ASCII digits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import date
from urllib.parse import urlsplit

from imageapi.core.errors import ConfigError

_INT = re.compile(r"\A[+-]?[0-9]+\Z")
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_FLOAT = re.compile(rf"\A{_NUMBER}\Z")
_DURATION = re.compile(rf"\A({_NUMBER})\s*([smhdw]?)\Z", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_DIGITS = 30  # longer whole numbers are out of any range (and int() refuses very long ones)


def shown(raw: str) -> str:
    """The value as quoted in a message, cut short so the message stays one readable line."""
    text = raw if len(raw) <= 40 else raw[:40] + "..."
    return repr(text)


def raw_value(env: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    """(name, stripped value) of the first of `names` that is set and not blank."""
    for name in names:
        value = env.get(name)
        if value is not None and value.strip():
            return name, value.strip()
    return None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _bounds(minimum: float, maximum: float) -> str:
    return f"from {_num(minimum)} to {_num(maximum)}"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_token(env: Mapping[str, str], *names: str) -> str | None:
    """A shared secret sent or checked as `Authorization: Bearer TOKEN`: None when unset or blank;
    visible ASCII only (it travels in an HTTP header), at least 16 characters."""
    found = raw_value(env, *names)
    if found is None:
        return None
    name, raw = found
    if not all(0x21 <= ord(c) <= 0x7E for c in raw):
        raise ConfigError(name, "must be printable ASCII without spaces (it is sent in an HTTP header)")
    if len(raw) < 16:
        raise ConfigError(name, f"must be at least 16 characters, got {len(raw)}")
    return raw


def env_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A yes/no setting: 1/true/yes/on or 0/false/no/off (any case); unset or empty: `default`."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ConfigError(name, f"must be true or false (1/0, yes/no, on/off), got {shown(raw)}")


def parse_int(name: str, raw: str, *, minimum: int, maximum: int) -> int:
    text = raw.strip()
    if not _INT.match(text):
        raise ConfigError(name, f"must be a whole number {_bounds(minimum, maximum)}, got {shown(raw)}")
    if len(text.lstrip("+-")) > MAX_DIGITS or not minimum <= int(text) <= maximum:
        raise ConfigError(name, f"must be {_bounds(minimum, maximum)}, got {shown(raw)}")
    return int(text)


def parse_number(name: str, raw: str, *, minimum: float, maximum: float, above: bool = False,
                 unit: str = "") -> float:
    """A finite decimal number in minimum..maximum (`above`: strictly greater than minimum)."""
    what = f"a number{unit}"
    lower = f"greater than {_num(minimum)} and at most {_num(maximum)}" if above else _bounds(minimum, maximum)
    text = raw.strip()
    if not _FLOAT.match(text):
        raise ConfigError(name, f"must be {what} {lower}, got {shown(raw)}")
    value = float(text)
    if not math.isfinite(value) or value > maximum or value < minimum or (above and value == minimum):
        raise ConfigError(name, f"must be {lower}, got {shown(raw)}")
    return value


def parse_duration(name: str, raw: str, *, minimum: float, maximum: float) -> float:
    """'30d', '12h', '15m', '45s', '2w' or a number of seconds -> seconds."""
    match = _DURATION.match(raw.strip())
    if not match:
        raise ConfigError(name, f"must be a duration such as 7d, 12h, 15m or a number of seconds, got {shown(raw)}")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not math.isfinite(value) or not minimum <= value <= maximum:
        raise ConfigError(name, f"must be {_bounds(minimum, maximum)} seconds, got {shown(raw)}")
    return value


def parse_url(name: str, raw: str, example: str = "http://host:port") -> str:
    """An http(s) URL with a host (and a valid port if any), without its trailing slash."""
    text = raw.strip()
    bad = ConfigError(name, f"must be an http(s) URL such as {example}, got {shown(raw)}")
    if _CONTROL.search(text) or any(c.isspace() for c in text) or not text.isascii():
        raise bad
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise bad from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad
    return text.rstrip("/")


def parse_day(name: str, raw: str) -> date:
    text = raw.strip()
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        raise ConfigError(name, f"must be a date YYYY-MM-DD, got {shown(raw)}")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(name, f"must be a date YYYY-MM-DD, got {shown(raw)}") from None


def parse_header_text(name: str, raw: str) -> str:
    """Text sent in an HTTP header (a key, a user agent): no control characters, no line breaks."""
    text = raw.strip()
    if _CONTROL.search(text):
        raise ConfigError(name, "must not contain control characters or line breaks")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(name, "must be valid text (it holds bytes that are not UTF-8)") from None
    return text


def parse_list(raw: str | None, *, strip: str = "") -> tuple[str, ...]:
    """Comma-separated items, blanks and repeats dropped (order kept)."""
    if not raw:
        return ()
    items = (p.strip().strip(strip) if strip else p.strip() for p in raw.split(","))
    return tuple(dict.fromkeys(p for p in items if p))


def parse_bind(name: str, raw: str) -> tuple[str, int]:
    """'HOST:PORT', '[IPv6]:PORT', ':PORT' or 'http://HOST:PORT' -> (host, port)."""
    text = raw.strip()
    bad = ConfigError(name, f"bind address {shown(raw)} must be HOST:PORT (e.g. 127.0.0.1:8080)")
    if _CONTROL.search(text) or any(c.isspace() for c in text):
        raise bad
    try:
        parts = urlsplit(text if "://" in text else f"//{text}")
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise bad from None
    host = host or ("0.0.0.0" if text.startswith(":") else None)
    if host is None or port is None:
        raise bad
    return host, port


# The same, reading a mapping of settings: `default` when unset or blank.

def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 1, maximum: int) -> int:
    found = raw_value(env, name)
    return default if found is None else parse_int(name, found[1], minimum=minimum, maximum=maximum)


def env_number(env: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float,
               above: bool = False, unit: str = "") -> float:
    found = raw_value(env, name)
    if found is None:
        return default
    return parse_number(name, found[1], minimum=minimum, maximum=maximum, above=above, unit=unit)


def env_duration(env: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float) -> float:
    found = raw_value(env, name)
    return default if found is None else parse_duration(name, found[1], minimum=minimum, maximum=maximum)


def env_url(env: Mapping[str, str], name: str, default: str, *aliases: str) -> str:
    """The URL in `name` (or the first alias set), else `default`; the error names the one read."""
    return env_url_or_none(env, name, *aliases) or default


def env_url_or_none(env: Mapping[str, str], *names: str) -> str | None:
    found = raw_value(env, *names)
    return None if found is None else parse_url(*found)


def env_text(env: Mapping[str, str], *names: str) -> str | None:
    """Free text (a model name, a key): the first of `names` set, header-safe; None when unset."""
    found = raw_value(env, *names)
    return None if found is None else parse_header_text(*found)


def env_day(env: Mapping[str, str], name: str) -> date | None:
    found = raw_value(env, name)
    return None if found is None else parse_day(*found)
