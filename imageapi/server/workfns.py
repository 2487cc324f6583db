"""What request handlers send to the worker pool (imported by the worker processes: no aiohttp).
Positional-argument wrappers, because the pool passes arguments positionally."""

from __future__ import annotations

from pathlib import Path

from imageapi.core.media import ThumbResult
from imageapi.core.thumbs import Rendered, make_thumbnail, render


def thumbnail(src: str, kind: str, dest: str, box: int, duration: float | None) -> ThumbResult:
    return make_thumbnail(Path(src), kind, Path(dest), box, duration=duration)


def preview(src: str, kind: str, box: int, duration: float | None) -> Rendered:
    return render(Path(src), kind, box, duration=duration, quality=88)
