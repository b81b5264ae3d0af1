"""The class filter of `synthesize`: a classifier (the severity sorter by default when on) that must assign each
exported image to its generator's class — the hierarchical method's sorting step applied to the exported set.

The sorter is trained on real *train* images only, like the generators, so the filter adds no information from the
validation or test splits.

Three rules, one per kind of class (:func:`filter_rule` names the one a class gets, for the report):

- a class the filter knows (mild, moderate, severe for the sorter): rejected when another class's probability beats
  the class's own by more than ``class_filter_margin``;
- a *prior* class (``ingest.prior_classes``: a class the data lacks, exported from the base generator, e.g. healthy
  for ACNE04, as the paper generated it from the FFHQ model) that the filter does not know: rejected when the
  filter's probability of the grades above its mildest (every filter class but its first: moderate + severe for the
  sorter, whose labels are in severity order) exceeds ``prior_filter_max``. So no face the sorter sees as moderate
  or severe acne is exported as healthy. Limitation: a sorter that never saw a healthy face cannot tell a
  mild-looking face from a healthy one — a face with a few lesions passes as healthy if the sorter calls it mild;
  only a classifier trained on real healthy faces could close that gap, and the data has none. Why an absolute
  threshold rather than one calibrated on the sorter's scores of real mild faces: it fails safe. A sorter that cannot
  tell its grades apart answers about 1/3 each, so P(moderate + severe) is about 2/3 and the rule keeps nothing: the
  stage stops and says why (:func:`rejection_hint`) instead of exporting faces nobody vouched for, where a calibrated
  rule would pass most of them;
- any other class the filter does not know (healthy when the data has real healthy faces and the sorter was trained
  on the acne grades only): not filtered, as before the rule for prior classes existed.
"""

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


def _labels(judge: tuple[Any, dict[str, Any]] | None) -> list[str]:
    return [str(x) for x in (judge[1].get("labels") or [])] if judge else []


def filter_rule(judge: tuple[Any, dict[str, Any]] | None, cls: str, margin: float = 0.0,
                prior_max: float | None = None) -> str:
    """The rule the filter applies to ``cls`` in words (``prior_max`` given: ``cls`` is a prior class)."""
    labels = _labels(judge)
    if not labels:
        return "none: synthesize.class_filter is '' (nothing keeps acne-looking faces out of this class)"
    if cls in labels:
        return f"own class: rejected when another class's probability beats '{cls}' by more than {margin}"
    if prior_max is None:
        return f"none: the filter does not know '{cls}' (its classes: {labels})"
    return (f"prior class: rejected when P({' + '.join(labels[1:])}) > {prior_max}, the filter's grades above its "
            f"mildest '{labels[0]}' (a filter that never saw '{cls}' cannot tell a mild-looking face from it)")


def rejection_hint(classes: dict[str, dict[str, Any]], failed: dict[str, int], prior_max: float) -> str:
    """What the class filter did to the classes that fell short (synthesize's per-class report entries), and the fix;
    '' when it rejected none of them. A prior class rejected whole means the filter sees the base generator's faces as
    acne above the mildest grade, or is too unsure to vouch for them: a sorter that cannot tell its three grades apart
    answers about 1/3 each, so P(moderate + severe) is about 2/3 and the rule keeps nothing (it fails safe)."""
    parts = []
    for cls in failed:
        entry = classes[cls]
        if not entry.get("rejected_class_filter"):
            continue
        prior = "class_filter_rule" in entry
        parts.append(f"{cls}: {entry['rejected_class_filter']} of {entry['generated']} candidates rejected by the "
                     "class filter" + (f"'s prior rule (P(grades above the mildest) > {prior_max})" if prior else ""))
    if not parts:
        return ""
    return ("; " + "; ".join(parts) + ". The filter sees these images as another class (for a prior class: as acne "
            "above the mildest grade, or it is too unsure to vouch for them, a filter that cannot tell its grades "
            "apart rejecting everything). Train the sorter better (train_classifier.runs.sorter), or loosen "
            "synthesize.class_filter_margin / synthesize.prior_filter_max (1 = the filter only counts)")


def wrong_class(judge: tuple[Any, dict[str, Any]] | None, cls: str, images: np.ndarray,
                margin: float = 0.0, prior_max: float | None = None) -> np.ndarray:
    """(N,) bool: rejected by the class filter (module docstring). For a class the judge knows: another class's
    probability exceeds that of ``cls`` by more than ``margin``. For a prior class it does not know (``prior_max``
    given): the judge's probability of every class but its first (mildest) exceeds ``prior_max``. Otherwise (no judge,
    or a class it does not know that is not a prior class) all False."""
    from acneops.classify.backbones import predict

    labels = _labels(judge)
    known = cls in labels
    if not labels or (not known and (prior_max is None or len(labels) < 2)):
        return np.zeros(len(images), dtype=bool)
    probs = predict(judge[0], judge[1], images, batch=64, desc=f"synthesize {cls}: class filter")  # (N, C)
    if not known:
        return probs[:, 1:].sum(axis=1) > prior_max
    own = probs[:, labels.index(cls)]
    other = np.delete(probs, labels.index(cls), axis=1).max(axis=1)
    return other - own > margin
