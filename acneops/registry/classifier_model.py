"""An acneops classifier as an MLflow pyfunc model: images in, class probabilities and label out (see
acneops.registry.pyfunc)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

from acneops.registry.pyfunc import CHECKPOINT, decode_image, frame, png_base64


class ClassifierModel(mlflow.pyfunc.PythonModel):
    """A trained acneops classifier: images in, class probabilities and label out."""

    def load_context(self, context: Any) -> None:
        from acneops.classify.backbones import load_classifier

        self.model, self.args = load_classifier(context.artifacts[CHECKPOINT])
        self.labels = [str(x) for x in self.args.get("labels") or []]

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, C) softmax of uint8 images (N, H, W, 3), classes in :attr:`labels` order."""
        from acneops.classify.backbones import predict

        return predict(self.model, self.args, images)

    def predict(self, context, model_input, params=None):  # untyped: MLflow reads hints as a schema
        import pandas as pd

        df = frame(model_input)
        if "image" not in df.columns:
            raise ValueError(f"classifier input needs an 'image' column (base64 PNG/JPEG), got {list(df.columns)}")
        probs = np.stack([self.probabilities(decode_image(v)[None])[0] for v in df["image"]]) if len(df) else \
            np.zeros((0, len(self.labels)), dtype=np.float32)
        out = pd.DataFrame({"label": [self.labels[i] for i in probs.argmax(axis=1)] if len(df) else []})
        for i, c in enumerate(self.labels):
            out[f"p_{c}"] = probs[:, i].astype(float)
        return out


def drawn_images(n: int, size: int) -> list[str]:
    """``n`` base64 PNGs of plain drawn patterns (input examples: never a real face)."""
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    out = []
    for k in range(n):
        img = np.stack([np.add.outer(ramp, ramp) / 2, np.full((size, size), 40.0 + 60 * k),
                        np.add.outer(ramp[::-1], ramp) / 2], axis=-1)
        out.append(png_base64(img.astype(np.uint8)))
    return out


def spec(checkpoint: Path) -> tuple[type, Any, Any]:
    """(model class, two-row input example of drawn images, signature): image -> label, p_<class>."""
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from acneops.classify.backbones import read_checkpoint

    args = read_checkpoint(checkpoint)["model_args"]
    labels = [str(c) for c in args.get("labels") or []]
    signature = ModelSignature(inputs=Schema([ColSpec("string", "image")]),
                               outputs=Schema([ColSpec("string", "label"),
                                               *[ColSpec("double", f"p_{c}") for c in labels]]))
    return ClassifierModel, pd.DataFrame({"image": drawn_images(2, int(args["img_size"]))}), signature
