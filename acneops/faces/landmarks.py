"""Find the most confident face in an RGB image and its 68 landmarks (dlib HOG detector + shape predictor)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from acneops.faces import models

# iBUG 300-W indices of the 68-point layout (subject's right eye is on the image's left)
EYE_RIGHT = slice(36, 42)
EYE_LEFT = slice(42, 48)
MOUTH = slice(48, 68)


@dataclass(frozen=True)
class Face:
    """One detected face: its box (left, top, right, bottom; px), detector score and 68 landmarks (68, 2) as (x, y)."""

    box: tuple[int, int, int, int]
    score: float
    landmarks: np.ndarray  # (68, 2) float64, x then y, px
    shape: Any = None  # dlib full_object_detection, for the recognition net

    @property
    def eye_left(self) -> np.ndarray:
        """Centre of the eye on the image's right (the subject's left), (x, y) px."""
        return self.landmarks[EYE_LEFT].mean(axis=0)

    @property
    def eye_right(self) -> np.ndarray:
        """Centre of the eye on the image's left (the subject's right), (x, y) px."""
        return self.landmarks[EYE_RIGHT].mean(axis=0)

    @property
    def mouth(self) -> np.ndarray:
        """Centre of the mouth (mean of its 20 landmarks), (x, y) px."""
        return self.landmarks[MOUTH].mean(axis=0)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    return image


def detect(image: np.ndarray, upsample: int = 1, min_score: float = 0.0) -> Face | None:
    """The highest-scoring face in ``image`` ((H, W, 3) uint8 RGB) with its landmarks, or None when there is none.

    ``upsample``: times the image is doubled before detection (1 finds faces down to ~40 px wide);
    ``min_score``: detector confidence below which a detection is ignored (dlib's default threshold is 0).
    """
    image = _as_rgb(image)
    rects, scores, _ = models.detector().run(image, upsample, 0.0)
    found = [(float(s), r) for s, r in zip(scores, rects) if float(s) >= min_score]
    if not found:
        return None
    score, rect = max(found, key=lambda pair: pair[0])
    shape = models.landmark_predictor()(image, rect)
    points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
    return Face(box=(rect.left(), rect.top(), rect.right(), rect.bottom()), score=score, landmarks=points, shape=shape)
