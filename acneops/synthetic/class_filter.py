"""The class filter of `synthesize`: a classifier (the severity sorter by default when on) that must assign each
exported image to its generator's class — the hierarchical method's sorting step applied to the exported set.

The sorter is trained on real *train* images only, like the generators, so the filter adds no information from the
validation or test splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from acneops.core.errors import StageError


def load_class_filter(cfg: Any) -> tuple[Any, dict[str, Any]] | None:
    """(model, model_args) of the class filter, or None when it is off."""
    from acneops.classify.backbones import load_classifier

    if not cfg.class_filter:
        return None
    if not Path(cfg.class_filter).is_file():
        raise StageError(f"params.yaml [synthesize.class_filter]: {cfg.class_filter} not found; run "
                         "`dvc repro train_classifier@sorter` or set class_filter to ''")
    return load_classifier(Path(cfg.class_filter))


def wrong_class(judge: tuple[Any, dict[str, Any]] | None, cls: str, images: np.ndarray,
                margin: float = 0.0) -> np.ndarray:
    """(N,) bool: the judge's probability of some other class exceeds that of ``cls`` by more than ``margin`` (all
    False when it does not know ``cls``)."""
    from acneops.classify.backbones import predict

    labels = [str(x) for x in (judge[1].get("labels") or [])] if judge else []
    if cls not in labels:
        return np.zeros(len(images), dtype=bool)
    probs = predict(judge[0], judge[1], images, batch=64, desc=f"synthesize {cls}: class filter")  # (N, C)
    own = probs[:, labels.index(cls)]
    other = np.delete(probs, labels.index(cls), axis=1).max(axis=1)
    return other - own > margin
