"""Identity embeddings: dlib's face-recognition ResNet (128-d; same person below 0.6 Euclidean on LFW)."""

from __future__ import annotations

from collections.abc import Iterable

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


def embed_many(images: Iterable[np.ndarray], upsample: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (N_found, 128), found (N,) bool): the faces of ``images``; rows only for images with a face."""
    vectors, found = [], []
    for image in images:
        vector = embed(image, upsample=upsample)
        found.append(vector is not None)
        if vector is not None:
            vectors.append(vector)
    stacked = np.stack(vectors) if vectors else np.zeros((0, EMBED_DIM))
    return stacked, np.array(found, dtype=bool)
