"""`ingest` stage: validate the raw dataset, deduplicate it and freeze the train/val/test split.

Reads ``data/labels.csv`` + ``data/images/*`` (the raw layout written by the phantom generator and
the importers), decodes every file fully and writes:

- ``datasets/ingest/manifest.csv``: one row per usable image (image, label, lesions, source, split,
  group, sha256, phash, width, height), sorted by image path;
- ``datasets/ingest/contract.json``: the frozen test split (sha256 of every test file) and the roles
  allowed to read it, so later stages and tests can prove the test set never changed and never
  reached a GAN;
- ``reports/ingest.json``: counts and every quarantined row {image, row, kind, reason}.

Bad input never crashes the stage and is never dropped silently: each bad row is quarantined with a
reason. The stage fails (StageError) only when nothing usable is left, labels are inconsistent, or a class
has no usable image. A class the data lacks on purpose (ACNE04 has no healthy faces) is listed in
``ingest.prior_classes``: the base generator supplies it, contract.json and the report record it as prior-only.
Ingest writes no images (re-encoding ACNE04's 3112x3456 JPEGs would cost GBs); ``restore`` does.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from acneops.core.config import build, section
from acneops.core.errors import StageError
from acneops.data.ingest import (
    IngestConfig,
    Quarantine,
    check_classes,
    describe_mixed,
    load_items,
    mixed_label_groups,
    unlisted_files,
    write_outputs,
    write_report,
)
from acneops.data.split import (
    assign_splits,
    near_duplicate_groups,
    resolve_fixed_conflicts,
)


def config_from_params(params: dict[str, Any], name: str | None = None) -> IngestConfig:
    """Build the config from the ``ingest`` section of params.yaml (``name`` is unused: no foreach)."""
    return build(IngestConfig, section(params, "ingest"), "ingest")


@dataclasses.dataclass(frozen=True)
class IngestResult:
    manifest_path: Path  # datasets/ingest/manifest.csv
    contract_path: Path  # datasets/ingest/contract.json
    report_path: Path  # reports/ingest.json
    rows: int  # data rows in labels.csv
    split_counts: dict[str, int]  # usable images per split
    quarantined: dict[str, int]  # quarantined rows per kind
    mixed_label_groups: tuple[dict[str, Any], ...] = ()  # near-duplicate groups whose labels disagree
    prior_classes: tuple[str, ...] = ()  # classes with no real image, supplied by the base generator

    def summary(self) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in self.split_counts.items())
        bad = ", ".join(f"{k} {v}" for k, v in sorted(self.quarantined.items())) or "none"
        text = f"ingest: {self.rows} rows -> {splits}; quarantined: {bad}; report {self.report_path}"
        if self.prior_classes:
            text += ("\nprior-only classes (no real image; the base generator supplies them): "
                     f"{list(self.prior_classes)}")
        return text + ("\nwarning: " + describe_mixed(list(self.mixed_label_groups)) if self.mixed_label_groups else "")


def run(cfg: IngestConfig) -> IngestResult:
    """Validate, deduplicate, group and split the raw dataset; write manifest, contract and report."""
    quarantine = Quarantine()
    n_rows, items = load_items(cfg, quarantine)
    groups = near_duplicate_groups(items, cfg.phash_threshold)
    items = resolve_fixed_conflicts(items, groups, quarantine)
    extra = unlisted_files(cfg.data_dir)
    base = {"rows": n_rows, "unlisted_files": extra}
    if not items:
        write_report(cfg, quarantine, [], base)
        raise StageError(f"ingest: nothing usable in {cfg.data_dir} ({n_rows} rows, all quarantined: "
                         f"{quarantine.counts()}); see {cfg.report_path} for every row's reason")
    problem = check_classes(cfg, Counter(it.label for it in items))
    if problem:
        write_report(cfg, quarantine, items, base)
        raise StageError(f"ingest: {problem}; see {cfg.report_path}")
    assign_splits(items, cfg.classes, cfg.seed, cfg.val_fraction, cfg.test_fraction)
    split_counts = write_outputs(cfg, items)
    write_report(cfg, quarantine, items, base)
    if len(items) + len(quarantine.entries) != n_rows:  # a row lost between the checks would be a silent skip
        raise StageError(f"ingest: {n_rows} rows in labels.csv but {len(items)} usable + {len(quarantine.entries)} "
                         "quarantined; this is a bug in acneops, please report it with reports/ingest.json")
    mixed = mixed_label_groups(items)
    if mixed:
        warnings.warn(describe_mixed(mixed), stacklevel=2)
    return IngestResult(cfg.out_dir / "manifest.csv", cfg.out_dir / "contract.json", cfg.report_path,
                        n_rows, split_counts, quarantine.counts(), tuple(mixed), cfg.prior_classes)

