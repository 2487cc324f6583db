"""The embedded face detector: dlib's HOG face detector, its 5-point landmarks and its 128-d ResNet
face embedding (99.38% on LFW as published), with the weights of the `face_recognition_models`
package (`pip install 'imageapi[faces]'` brings it and dlib's binary wheel). Nothing is downloaded.

It answers exactly what Apollo answers (a Detection, boxes relative to the picture it was given), so
the backlog, the worker and `imageapi faces serve` treat both backends the same. CPU-bound: call it
in a worker process, never in the event loop. The models are loaded once per process.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from typing import Any

from imageapi.core.errors import UnsupportedMediaError
from imageapi.core.faces.apollo import DetectedFace, Detection

MODEL = "dlib-hog-resnet128"   # stored with every face it finds; embeddings of other models never mix
MIN_FACE_PX = 40               # HOG's smallest window is 80 px; upsampled once it finds 40 px faces
DEFAULT_UPSAMPLE = 1

_lock = threading.Lock()
_models: _Models | None = None


@dataclass(frozen=True)
class _Models:
    detector: Any
    landmarks: Any
    encoder: Any


def available() -> str | None:
    """None when the embedded backend can run here, else why not (one line)."""
    # dlib is imported (9 ms; a broken binary shows here, not in the first worker); the weights
    # package is only found: importing it costs about 0.1 s (pkg_resources), and every command
    # checks the settings at start-up.
    import importlib.util

    try:
        import dlib  # noqa: F401
    except ImportError as exc:
        return f"the embedded face detector needs pip install 'imageapi[faces]' ({exc.name or 'dlib'} is missing)"
    if importlib.util.find_spec("face_recognition_models") is None:
        return "the embedded face detector needs pip install 'imageapi[faces]' (face_recognition_models is missing)"
    return None


def _load() -> _Models:
    global _models
    with _lock:
        if _models is None:
            import dlib
            import face_recognition_models as weights

            _models = _Models(
                detector=dlib.get_frontal_face_detector(),
                landmarks=dlib.shape_predictor(weights.pose_predictor_five_point_model_location()),
                encoder=dlib.face_recognition_model_v1(weights.face_recognition_model_location()),
            )
        return _models


def detect_jpeg(data: bytes, *, upsample: int = DEFAULT_UPSAMPLE, min_score: float = 0.0,
                min_face_px: int = MIN_FACE_PX) -> Detection:
    """Faces of an (upright) picture given as encoded bytes; boxes relative to it (0..1).

    `min_score`: the HOG detector's confidence threshold (0 is dlib's default).
    Raises UnsupportedMediaError when the bytes are not a picture PIL can decode."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = opened.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UnsupportedMediaError(f"not a picture the face detector can read: {exc}") from None
    pixels = np.asarray(image)
    width, height = image.size
    models = _load()
    rects, scores, _kinds = models.detector.run(pixels, upsample, min_score)
    faces: list[DetectedFace] = []
    for rect, score in zip(rects, scores, strict=True):
        left, top = max(0, rect.left()), max(0, rect.top())
        right, bottom = min(width, rect.right()), min(height, rect.bottom())
        if min(right - left, bottom - top) < min_face_px:
            continue
        shape = models.landmarks(pixels, rect)
        embedding = models.encoder.compute_face_descriptor(pixels, shape)
        faces.append(DetectedFace(
            bbox=(left / width, top / height, (right - left) / width, (bottom - top) / height),
            score=float(score),
            embedding=tuple(float(v) for v in embedding),
        ))
    return Detection(model=MODEL, faces=faces)
