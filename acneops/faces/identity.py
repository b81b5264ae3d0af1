"""Identity embeddings: dlib's face-recognition ResNet (128-d; same person below 0.6 Euclidean on LFW)."""

from __future__ import annotations

import numpy as np

from acneops.faces import models
from acneops.faces.landmarks import _as_rgb, detect

EMBED_DIM = 128
DLIB_SAME_PERSON = 0.6  # dlib's own threshold: Euclidean distance below it = same person (LFW benchmark)


def embed(image: np.ndarray, upsample: int = 1, jitters: int = 0) -> np.ndarray | None:
    """(128,) float64 identity embedding of the most confident face in ``image``, or None when no face is found.

    ``jitters``: extra randomly jittered crops averaged by dlib (0 = the face chip alone, deterministic).
    """
    image = _as_rgb(image)
    face = detect(image, upsample=upsample)
    if face is None:
        return None
    vector = models.recognition_net().compute_face_descriptor(image, face.shape, jitters)
    return np.asarray(vector, dtype=np.float64)

