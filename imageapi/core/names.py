"""File names as the index stores them, and back: any name a POSIX filesystem holds, losslessly.

A POSIX file name is bytes (anything but '/' and NUL). Python hands a name that is not valid UTF-8
to us as a str in which each undecodable byte 0xXX is the lone surrogate U+DCXX
("surrogateescape"): such a str opens the right file, but SQLite TEXT and JSON cannot hold lone
surrogates. So the index keeps a *stored form* of every relative path (the `rel_path` and `dir`
columns, the API's `path`, `imageapi info`):

- each byte that is not part of valid UTF-8 is written as U+FFFD (the replacement character)
  followed by its two upper-case hex digits: b"IMG_\\xff\\xfe.jpg" is "IMG_\\ufffdFF\\ufffdFE.jpg"
  (shown `IMG_�FF�FE.jpg`);
- a U+FFFD that is really in a name is doubled: "a\\ufffdb.jpg" is stored as "a\\ufffd\\ufffdb.jpg";
- every other name is stored as it is (all valid UTF-8 without U+FFFD: every name indexed before).

The mapping is one-to-one, so two files never share a stored path and the stored path leads back
to the exact bytes (`on_disk`). A text that is not the stored form of any name (U+FFFD followed by
anything else, or bytes written escaped that together are valid UTF-8) is refused. Thumbnails are
written under the real bytes: THUMBNAILS/<library>/<the name on disk>.
"""

from __future__ import annotations

import os
import re

from imageapi.core.errors import PathOutsideLibraryError, UsageError

ESC = "\ufffd"
NAME_MAX = 255    # bytes in one path component (Linux, and every filesystem a NAS exports)
PATH_MAX = 4095   # bytes in a whole path (Linux PATH_MAX less the NUL)

_TO_STORED = re.compile("[\udc80-\udcff\ufffd]")
_TO_DISK = re.compile("\ufffd(\ufffd|[89A-F][0-9A-F])")
_SURROGATES = re.compile("[\ud800-\udfff]")
_SHORT = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape_one(m: re.Match[str]) -> str:
    c = m.group()
    return ESC + ESC if c == ESC else f"{ESC}{ord(c) - 0xDC00:02X}"


def stored(name: str) -> str:
    """The stored form of a name or relative path as os.scandir / os.fsdecode give it."""
    if name.isascii():  # O(1) in CPython: the hot case of every scan
        return name
    return _TO_STORED.sub(_escape_one, name)


def _unescape_one(m: re.Match[str]) -> str:
    c = m.group(1)
    return ESC if c == ESC else chr(0xDC00 + int(c, 16))


def on_disk(text: str) -> str:
    """The name (for open() and os.*) of a stored form. Raises PathOutsideLibraryError for a text
    that is no stored form, so a client cannot name one file two ways."""
    if text.isascii():
        return text
    if _SURROGATES.search(text):
        raise PathOutsideLibraryError("path contains lone surrogates (not text)")
    if ESC not in text:
        return text
    name = _TO_DISK.sub(_unescape_one, text)
    if stored(os.fsdecode(os.fsencode(name))) != text:
        raise PathOutsideLibraryError(
            "path has a \ufffd that is not followed by \ufffd or the two hex digits of a byte that is not UTF-8")
    return name


def check_length(rel_on_disk: str) -> None:
    """Refuse a relative path no filesystem could hold (a component over NAME_MAX bytes or the
    whole over PATH_MAX): a clear 400 instead of an error from the filesystem."""
    if len(rel_on_disk) <= NAME_MAX and rel_on_disk.isascii():
        return
    raw = os.fsencode(rel_on_disk)
    if len(raw) > PATH_MAX:
        raise UsageError(f"path is too long ({len(raw)} bytes; at most {PATH_MAX})")
    for part in raw.split(b"/"):
        if len(part) > NAME_MAX:
            raise UsageError(f"a path component is too long ({len(part)} bytes; at most {NAME_MAX})")


def safe_text(text: str | None) -> str | None:
    """A message for the database or JSON: lone surrogates (an undecodable file name in an error
    message) written as in the stored form."""
    if text is None or text.isascii():
        return text
    return _SURROGATES.sub(lambda m: f"{ESC}{ord(m.group()) & 0xFF:02X}", text)


def shown(text: str) -> str:
    """A stored path (or a message) for a terminal: control and format characters (newline, tab,
    ESC, DEL, C1, bidi overrides) written as backslash escapes, so a name cannot move the cursor,
    fake another line or reorder what is shown."""
    text = safe_text(text) or ""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _SHORT.get(c) or _escape_char(c) for c in text)


def _escape_char(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"
