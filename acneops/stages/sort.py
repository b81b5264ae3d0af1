"""`sort` stage: generate images with G_all and sort them by severity with the sorter classifier.

The first method fine-tunes one generator per severity on *sorted synthetic* images: G_all (trained on
every acne class of the real train split) generates ``n_images``; the severity sorter (a classifier
trained on the real train split only) labels each one; images whose top-class confidence reaches
``threshold`` go to ``out_dir/<class>/``, the rest are rejected. The report states the counts per
class, the rejected share and the sorter's own accuracy on the real validation split, so a reader can
judge how much to trust the sorting. No real image is read here except through the sorter's checkpoint.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from acneops.core.config import build
from acneops.core.errors import StageError
from acneops.core.io import sha256_file, write_json
from acneops.stages.params import foreach_values
from acneops.synthetic.sorting import SortConfig, assign, label_images, write_sorted


@dataclasses.dataclass(frozen=True)
class SortResult:
    counts: dict[str, int]  # kept images per class
    rejected: int  # images below the confidence threshold and not needed to top up a class
    topped_up: dict[str, int]  # images added below the threshold to reach min_per_class, per class
    report: dict[str, Any]  # the content of report_path
    report_path: Path

    def summary(self) -> str:
        kept = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        extra = f"; topped up below threshold {self.topped_up}" if self.topped_up else ""
        return f"sort: kept {kept}; rejected {self.rejected}{extra} -> {self.report_path}"

    def metrics(self) -> dict[str, float]:
        """Numbers for MLflow: kept/topped-up counts per class, shares."""
        out = {f"kept_{k}": float(v) for k, v in self.counts.items()}
        out.update({f"topped_up_{k}": float(v) for k, v in self.topped_up.items()})
        out.update({k: float(self.report[k]) for k in ("rejected_share", "confident_share")})
        return out

    def artifacts(self) -> list[Path]:
        return [self.report_path]


def config_from_params(params: dict[str, Any], name: str | None = None) -> SortConfig:
    """Section ``sort`` (shared settings) merged with ``sort.runs[name]`` (generator and sorter)."""
    values, _ = foreach_values(params, "sort", name)
    return build(SortConfig, values, f"sort.runs.{name}")


def run(cfg: SortConfig) -> SortResult:
    """Generate, classify, keep confident images per class, write folders + manifest + report."""
    seeds = np.arange(cfg.seed_start, cfg.seed_start + cfg.n_images)
    images, probs, labels, sorter_meta = label_images(cfg, seeds)
    if cfg.min_per_class * len(labels) > cfg.n_images:
        raise StageError(f"sort: n_images={cfg.n_images} cannot give {cfg.min_per_class} images to each of "
                         f"{len(labels)} classes; raise sort.n_images or lower sort.min_per_class")
    label, top, topped = assign(probs, cfg.threshold, cfg.min_per_class)
    source = {"generator_sha256": sha256_file(cfg.generator), "sorter_sha256": sha256_file(cfg.sorter)}
    write_sorted(cfg, images, seeds, probs, label, labels, source)
    counts = {name: int(np.sum(label == c)) for c, name in enumerate(labels)}
    confident = probs.max(axis=1) >= cfg.threshold
    report = {
        "n_generated": int(cfg.n_images),
        "threshold": cfg.threshold,
        "kept_per_class": counts,
        "topped_up_per_class": {labels[c]: n for c, n in topped.items()},
        "rejected": int(np.sum(label < 0)),
        "rejected_share": float(np.mean(label < 0)),
        "confident_share": float(np.mean(confident)),
        "mean_confidence_kept": float(probs[label >= 0, label[label >= 0]].mean()) if (label >= 0).any() else None,
        "share_per_class_before_threshold": {name: float(np.mean(top == c)) for c, name in enumerate(labels)},
        "sorter_val_metrics": sorter_meta.get("metrics"),
        **source,
    }
    write_json(cfg.report_path, report)
    return SortResult(counts=counts, rejected=report["rejected"], topped_up=report["topped_up_per_class"],
                      report=report, report_path=cfg.report_path)

