"""Which classes a classifier's figures cover: on the real test split, a class with no image (a prior-only class,
``ingest.prior_classes``, or one the split happens to lack) has no recall, and its F1 of 0 would only pull the macro
averages down; it is left out of the per-class figures and the macro averages, and named with the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acneops.core.errors import StageError


def left_out_classes(name: str, labels: list[str], y_true: list[str], cfg: Any) -> dict[str, str]:
    """{class: why} for the classifier's classes with no image in the real test split (none: a StageError)."""
    absent = [c for c in labels if c not in set(y_true)]
    if len(absent) == len(labels):
        raise StageError(f"{Path(cfg.restored_dir) / 'test' / 'manifest.csv'}: no real test image of any class of "
                         f"{name} {labels}; re-run `dvc repro ingest restore` or fix the classifier's labels")
    return {c: "no image in the real test split" + (" (prior-only class: ingest.prior_classes; the base generator "
                                                    "supplies it, the data has none)" if c in cfg.prior_classes else "")
            for c in absent}


def present_only(report: dict[str, Any], left_out: dict[str, str]) -> dict[str, Any]:
    """``report`` with per-class figures and macro averages over the classes present in the real test split only,
    and ``left_out`` ({class: why}) saying which were left out: a class with no test image has no recall, and its F1
    of 0 would only pull the macro figures down. Accuracy and the confusion matrix keep every output class (an image
    predicted as a left-out class is an error). Unchanged when nothing is left out."""
    if not left_out:
        return report
    per_class = {c: m for c, m in report["per_class"].items() if c not in left_out}
    macro = {k: sum(m[k] for m in per_class.values()) / len(per_class) for k in ("precision", "recall", "f1")}
    out = {**report, "per_class": per_class, "macro": macro, "left_out": dict(left_out)}
    if report.get("positive") in left_out:  # no test image of the positive class: no sensitivity to report
        out.pop("sensitivity", None)
        out.pop("specificity", None)
        out["positive"] = None
    return out
