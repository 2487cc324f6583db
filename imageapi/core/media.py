"""Plain records passed between the worker processes and the scan: what was read from one file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

# Where taken_at came from, best first.
TAKEN_SOURCES = ("exif_original", "exif_digitized", "xmp", "video", "mtime")


@dataclass
class Metadata:
    """EXIF/XMP/ffprobe facts. Every field is optional: None means the file does not say."""

    taken_at: str | None = None          # local wall-clock time, "YYYY-MM-DDTHH:MM:SS"
    taken_at_offset: int | None = None   # minutes east of UTC, when the file says
    taken_at_source: str | None = None   # one of TAKEN_SOURCES
    make: str | None = None
    model: str | None = None
    lens: str | None = None
    orientation: int | None = None       # EXIF 1..8
    width: int | None = None             # as stored (before orientation is applied)
    height: int | None = None
    gps_lat: float | None = None         # signed decimal degrees
    gps_lon: float | None = None
    gps_alt: float | None = None         # metres, negative below sea level
    exposure_time: float | None = None   # seconds
    f_number: float | None = None
    iso: int | None = None
    focal_length: float | None = None    # mm
    duration: float | None = None        # seconds (videos)
    rotation: int | None = None          # degrees clockwise to display upright (videos)
    video_codec: str | None = None
    audio_codec: str | None = None
    # Added from GPS by core/places.py in the worker (migration 19).
    place_city: str | None = None
    place_region: str | None = None
    place_country: str | None = None
    place_cc: str | None = None
    place_key: str | None = None         # "<lat>,<lon>@<dataset version>"; None: no GPS
    taken_at_offset_source: str | None = None  # exif, gps, none
    warnings: list[str] = field(default_factory=list)  # non-fatal problems while reading

    def columns(self) -> dict[str, Any]:
        """The fields stored as columns of `files` (same names)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "warnings"}


METADATA_COLUMNS = tuple(Metadata().columns().keys())


@dataclass
class ThumbResult:
    state: str                 # done, unsupported, failed
    reason: str | None = None  # why not done
    width: int | None = None   # of the written thumbnail
    height: int | None = None
    tool: str | None = None    # unsupported: the external tools tried (ffmpeg_caps.thumb_tools)


@dataclass
class FileResult:
    """One processed file, as returned by a worker process."""

    rel_path: str
    kind: str
    size: int
    mtime_ns: int
    content_hash: str | None = None
    metadata: Metadata = field(default_factory=Metadata)
    thumb: ThumbResult | None = None
    error: str | None = None   # the file could not be read or is not what its name says

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
