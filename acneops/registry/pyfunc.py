"""What acneops' MLflow pyfunc models share (acneops.registry.generator_model, acneops.registry.classifier_model: what
`mlflow models serve` and ``mlflow.pyfunc.load_model('models:/acneops-generator-mild@champion')`` run).

Both wrap an acneops checkpoint, shipped as the model's artifact ``checkpoint``; the acneops package goes with the
model as a code path, so loading needs torch, timm and Pillow (the model's pip requirements), not a checkout.

- Generator: input rows ``seed`` (int) and optionally ``psi`` (float, default 1) and ``label`` (a conditional
  generator's class) -> rows ``seed``, ``psi``, ``png`` (a metadata-free PNG, base64): the same pixels, and the same
  PNG bytes, as ``acneops`` generation writes for that seed (:func:`acneops.gan.sampling.generate`, constant noise).
  Python callers get the uint8 array ``(N, H, W, 3)`` from ``model.unwrap_python_model().images(seeds, psi)``.
- Classifier: input rows ``image`` (PNG or JPEG bytes, base64) -> rows ``label`` and one ``p_<class>`` per class
  (softmax), preprocessed exactly as in validation (:func:`acneops.classify.backbones.predict`). Python callers pass
  uint8 arrays to ``model.unwrap_python_model().probabilities(images)``.

Both model modules import mlflow at module level: import them only where a model is logged or loaded.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

CHECKPOINT = "checkpoint"  # the artifact key of the wrapped acneops checkpoint


def png_base64(image: np.ndarray) -> str:
    """uint8 (H, W, 3) -> base64 of acneops' metadata-free PNG encoding (acneops.core.io.png_bytes)."""
    from PIL import Image

    from acneops.core.io import png_bytes

    return base64.b64encode(png_bytes(Image.fromarray(np.ascontiguousarray(image), "RGB"))).decode("ascii")


def decode_image(value: Any) -> np.ndarray:
    """A base64 string (or raw bytes) of a PNG/JPEG file -> uint8 (H, W, 3) RGB; anything else is a ValueError."""
    from PIL import Image, UnidentifiedImageError

    try:
        data = value if isinstance(value, (bytes, bytearray)) else base64.b64decode(str(value), validate=True)
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except (ValueError, UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"input 'image' must be base64 of a PNG or JPEG file: {exc}") from None


def frame(model_input: Any) -> Any:
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, dict):
        return pd.DataFrame(model_input)
    return pd.DataFrame(list(model_input))
