"""dlib and its offline model files, loaded once per process; a clear error names the extra when missing.

The model files come from the ``face_recognition_models`` package. Its ``__init__`` imports
``pkg_resources`` (gone from recent setuptools), so the files are located through the package's folder
without importing it.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

from acneops.core.errors import AcneopsError

EXTRA_HINT = "pip install 'acneops[faces]' (dlib-bin + face_recognition_models)"
MODEL_FILES = {
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
    "cnn_detector": "mmod_human_face_detector.dat",
}


def dlib_module() -> Any:
    """The ``dlib`` module, or an AcneopsError naming the optional extra."""
    try:
        import dlib
    except ImportError as exc:
        raise AcneopsError(f"face detection, alignment and the identity audit need dlib: {EXTRA_HINT}; or turn them "
                           "off: params.yaml audit.identity: never, restore.align: false") from exc
    return dlib


def model_path(kind: str) -> Path:
    """Path of one of dlib's offline model files (``MODEL_FILES`` key) from ``face_recognition_models``."""
    if kind not in MODEL_FILES:
        raise AcneopsError(f"unknown dlib model {kind!r}; one of {sorted(MODEL_FILES)}")
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise AcneopsError(f"dlib's face models are missing: {EXTRA_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / MODEL_FILES[kind]
    if not path.is_file():
        raise AcneopsError(f"{path}: dlib model file missing from face_recognition_models; reinstall it ({EXTRA_HINT})")
    return path


@lru_cache(maxsize=None)
def detector() -> Any:
    """dlib's HOG frontal-face detector (fast on CPU; finds upright, roughly frontal faces)."""
    return dlib_module().get_frontal_face_detector()


@lru_cache(maxsize=None)
def landmark_predictor() -> Any:
    """dlib's 68-point shape predictor (iBUG 300-W layout: 36-41 right eye, 42-47 left eye, 48-67 mouth)."""
    return dlib_module().shape_predictor(str(model_path("landmarks68")))


@lru_cache(maxsize=None)
def recognition_net() -> Any:
    """dlib's face-recognition ResNet: 128-d embeddings; same person below 0.6 Euclidean (99.38% on LFW)."""
    return dlib_module().face_recognition_model_v1(str(model_path("recognition")))
