"""An acneops generator as an MLflow pyfunc model: seeds in, PNG images out (see acneops.registry.pyfunc)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

from acneops.registry.pyfunc import CHECKPOINT, frame, png_base64


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """A trained acneops generator (G_ema): seeds in, images out."""

    def load_context(self, context: Any) -> None:
        from acneops.gan.sampling import load_generator

        self.G, self.family = load_generator(context.artifacts[CHECKPOINT])
        self.labels = tuple(getattr(self.G, "labels", ())) if getattr(self.G, "c_dim", 0) else ()

    def images(self, seeds: list[int], psi: float = 1.0, label: str | None = None) -> np.ndarray:
        """uint8 (N, H, W, 3), one image per seed, as acneops generation draws them."""
        from acneops.gan.sampling import synthesize

        psi = psi if self.family == "stylegan2" else 1.0
        return synthesize(self.G, self.family, [int(s) for s in seeds], psi=float(psi), label=label,
                          where="this registered generator")

    def predict(self, context, model_input, params=None):  # untyped: MLflow reads hints as a schema
        import pandas as pd

        df = frame(model_input)
        if "seed" not in df.columns:
            raise ValueError(f"generator input needs a 'seed' column, got columns {list(df.columns)}")
        psi = df["psi"].astype(float) if "psi" in df.columns else pd.Series([1.0] * len(df))
        labels = df["label"] if "label" in df.columns else pd.Series([None] * len(df))
        pngs = []
        for seed, p, label in zip(df["seed"].astype(int), psi, labels):
            image = self.images([int(seed)], float(p), None if label is None or label == "" else str(label))[0]
            pngs.append(png_base64(image))
        return pd.DataFrame({"seed": df["seed"].astype("int64"), "psi": psi.astype(float), "png": pngs})


def spec(checkpoint: Path) -> tuple[type, Any, Any]:
    """(model class, two-row input example, signature): seed (required), psi and label (optional) -> seed, psi, png."""
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    signature = ModelSignature(
        inputs=Schema([ColSpec("long", "seed"), ColSpec("double", "psi", required=False),
                       ColSpec("string", "label", required=False)]),
        outputs=Schema([ColSpec("long", "seed"), ColSpec("double", "psi"), ColSpec("string", "png")]))
    return GeneratorModel, pd.DataFrame({"seed": [0, 1], "psi": [1.0, 1.0]}), signature
