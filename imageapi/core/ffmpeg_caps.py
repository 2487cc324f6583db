"""What an ffmpeg binary is and supports, asked once per binary instead of assumed.

Distributions ship ffmpeg 4.4 (Ubuntu 22.04), 5.1 (Debian 12), 6.1 (Ubuntu 24.04), 7.x (Debian 13),
and the imageio-ffmpeg package ships its own static build: options come and go between them
(`-fpsmax` and `-readrate` are 4.4/5.0 additions, `-display_rotation` a 6.0 one), and a bare
boolean option such as `-autorotate` is parsed differently before 7.0 (it takes the next word as
its value). The command builders ask here instead of guessing from a version number.

Answers are cached per binary path, size and mtime: a binary replaced in place (an upgrade) is
asked again, one left alone costs a stat per question. `version` runs `-version` only; `caps`
also lists options (`-h full`), filters, muxers, encoders and decoders (a few tenths of a second,
once).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from imageapi.core.errors import ToolError

PROBE_TIMEOUT = 20.0


@dataclass(frozen=True)
class Caps:
    path: str
    version: str                        # as `-version` prints it: "5.1.9-0+deb12u1", "n7.0.2", "N-1234-g..."
    release: tuple[int, int] | None     # (major, minor), None for a git snapshot that names none
    options: frozenset[str] = frozenset()   # ffmpeg's own options, without the dash
    filters: frozenset[str] = frozenset()
    muxers: frozenset[str] = frozenset()
    encoders: frozenset[str] = frozenset()
    decoders: frozenset[str] = frozenset()

    def has_option(self, name: str) -> bool:
        return name in self.options

    def at_least(self, major: int, minor: int = 0) -> bool:
        """Whether the release is at least major.minor (an unnamed git snapshot counts as new)."""
        return self.release is None or self.release >= (major, minor)


_VERSION_RE = re.compile(r"^\S+ version (\S+)")
# "5.1.9-0+deb12u1", "n7.0.2", "7.0.2-static", "4.4.2-0ubuntu0.22.04.1"; not "N-113000-g..."
_RELEASE_RE = re.compile(r"^n?(\d+)\.(\d+)")
_OPTION_RE = re.compile(r"^-(\w+)")
_FILTER_RE = re.compile(r"^ [A-Z.]{2,3} (\S+)\s+\S*->\S*")

_versions: dict[tuple[str, int, int], str] = {}
_caps: dict[tuple[str, int, int], Caps] = {}


def _key(path: str) -> tuple[str, int, int]:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ToolError(f"cannot run {path}: {exc.strerror or exc}") from exc
    return (path, st.st_size, st.st_mtime_ns)


def _output(path: str, *args: str) -> str:
    from imageapi.core.ffmpeg import run  # ffmpeg.py imports this module

    out = run([path, "-hide_banner", *args], PROBE_TIMEOUT)
    if out.returncode != 0:
        name = os.path.basename(path)
        raise ToolError(f"{name} {' '.join(args)} exited with code {out.returncode}: "
                        f"{out.stderr.decode('utf-8', 'replace').strip()[:200]}")
    return out.stdout.decode("utf-8", "replace")


def parse_version(text: str) -> str:
    """The version word of the first line of `-version` ("ffmpeg version 5.1.9-0+deb12u1 ...")."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    m = _VERSION_RE.match(first)
    if not m:
        raise ToolError(f"not an ffmpeg version line: {first[:100]!r}")
    return m.group(1)


def parse_release(version: str) -> tuple[int, int] | None:
    m = _RELEASE_RE.match(version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def version(path: str) -> str:
    """The binary's version (ffmpeg or ffprobe): ToolError when it does not run or say one."""
    key = _key(path)
    if key not in _versions:
        _versions[key] = parse_version(_output(path, "-version"))
    return _versions[key]


def _listed(text: str) -> list[str]:
    """The second word of each line after the " --" rule of `-muxers`/`-encoders`."""
    names, started = [], False
    for line in text.splitlines():
        if not started:
            started = line.strip().startswith("--")
            continue
        words = line.split()
        if len(words) >= 2:
            names.append(words[1])
    return names


def caps(path: str) -> Caps:
    """Everything the builders ask about one ffmpeg binary."""
    key = _key(path)
    found = _caps.get(key)
    if found is None:
        ver = version(path)
        options = {m.group(1) for line in _output(path, "-h", "full").splitlines()
                   if (m := _OPTION_RE.match(line))}
        filters = {m.group(1) for line in _output(path, "-filters").splitlines()
                   if (m := _FILTER_RE.match(line))}
        muxers = {n for name in _listed(_output(path, "-muxers")) for n in name.split(",")}
        encoders = set(_listed(_output(path, "-encoders")))
        decoders = set(_listed(_output(path, "-decoders")))
        found = Caps(path, ver, parse_release(ver), frozenset(options), frozenset(filters),
                     frozenset(muxers), frozenset(encoders), frozenset(decoders))
        _caps[key] = found
    return found


def current() -> Caps:
    """The caps of the ffmpeg imageapi uses (IMAGEAPI_FFMPEG, PATH or imageio-ffmpeg)."""
    from imageapi.core.ffmpeg import ffmpeg_path

    return caps(ffmpeg_path())


def exiftool_version() -> str | None:
    """exiftool's version on PATH, None when it is absent or does not run."""
    from imageapi.core.ffmpeg import run

    path = shutil.which("exiftool")
    if path is None:
        return None
    try:
        key = _key(path)
    except ToolError:
        return None
    if key not in _versions:
        try:
            out = run([path, "-ver"], PROBE_TIMEOUT)
        except ToolError:
            return None
        text = out.stdout.decode("utf-8", "replace").strip()
        if out.returncode != 0 or not text:
            return None
        _versions[key] = text.splitlines()[0]
    return _versions[key]


# --------------------------------------------------------------------------------------------
# Arguments that differ between versions


def rotation_args(c: Caps, ccw_degrees: int) -> tuple[list[str], list[str]]:
    """Arguments that give a remuxed video stream a display rotation (ffmpeg's counter-clockwise
    degrees): the input option `-display_rotation` where it exists (6.0 on), else the `rotate`
    stream tag, which the MP4/MOV muxer of earlier versions writes as a matrix of that many degrees
    (counter-clockwise as written, although its demuxer reads the tag back clockwise).
    Returns (arguments before the input, arguments after it)."""
    if c.has_option("display_rotation"):
        return ["-display_rotation:v:0", str(ccw_degrees)], []
    return [], ["-metadata:s:v:0", f"rotate={ccw_degrees % 360}"]


def readrate_args(c: Caps, rate: float) -> list[str]:
    """Input options that read at `rate` times real time: `-readrate` (5.0 on), else `-re`
    (real time), the only pace older versions have."""
    if c.has_option("readrate"):
        return ["-readrate", f"{rate:g}"]
    return ["-re"]


# --------------------------------------------------------------------------------------------
# Which tools a kind's thumbnail depends on


TOOL_KINDS = ("video", "raw")   # kinds whose thumbnails external tools make (or help make)


def thumb_tools(kind: str) -> str | None:
    """The external tools (and versions) a thumbnail of `kind` is made with now, as recorded next
    to an `.unsupported` sentinel: when this changes (a new ffmpeg, exiftool installed), such
    sentinels are tried again. None for kinds made without external tools."""
    if kind not in TOOL_KINDS:
        return None
    from imageapi.core.ffmpeg import ffmpeg_path, ffprobe_path

    def named(tool: str, find: Callable[[], str | None]) -> str:
        try:
            path = find()
            return f"{tool} {version(path)}" if path else f"no {tool}"
        except ToolError:
            return f"no usable {tool}"

    parts = [named("ffmpeg", ffmpeg_path)]
    if kind == "video":
        parts.append(named("ffprobe", ffprobe_path))
    else:
        exiftool = exiftool_version()
        parts.insert(0, f"exiftool {exiftool}" if exiftool else "no exiftool")
    return ", ".join(parts)
