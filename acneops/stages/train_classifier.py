"""Stage `train_classifier@<name>`: train one image classifier and keep its best-validation checkpoint.

Named runs in params (``train_classifier.runs``) give the pipeline's classifiers:
- ``sorter``: severity classifier on the real train split only (acne classes; data role ``sorter``),
  used by the ``sort`` stage to label generated images;
- ``synthetic``: synthetic images only — the train-synthetic-test-real protocol of the first method;
- ``real``: real train split + traditional augmentation — scenario 1 of the second method;
- ``augmented``: real + up to N synthetic images per class — scenario 2 of the second method.

The model is selected on the real validation split (``val_source: real_val``, the config default), except
the pipeline's synthetic-only run: params give it ``val_source: synthetic_holdout``, so no real image trains
or selects it (pure TSTR; selecting a synthetic-only model on real images would put real information into
it, and the report would name that variant "selected on real val"). The real test split is never read here
(the data access layer refuses it).

Outputs in ``out_dir``: config.json (written first), history.jsonl (one line per epoch), best.pt,
val_metrics.json, val_confusion.json/.png, and last.pt while training (resume after a kill).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from acneops.classify.config import SECTION, TrainClassifierConfig, collect_items
from acneops.core.config import (
    ConfigError,
    build,
    check_upstream,
    to_dict,
)
from acneops.core.paths import RESTORED_DIR
from acneops.stages.params import foreach_values

# acneops.stages.run_stage: the training loop (acneops.classify.train.fit) opens its own MLflow run, logs per
# epoch and resumes that run after a kill (its id is in last.pt); run_stage must not open a second one.
TRACKS_ITSELF = True


def config_from_params(params: dict[str, Any], name: str | None) -> TrainClassifierConfig:
    """The config of run ``name``: section defaults overridden by ``runs[name]``."""
    values, _ = foreach_values(params, SECTION, name)
    values["name"] = name
    reads = values.get("synthetic_dir") or Path(str(values.get("restored_dir", RESTORED_DIR))) / "train"
    check_upstream(values, reads, f"{SECTION}.runs.{name}")
    pretrained = values.pop("pretrained", False)
    if pretrained is None or not isinstance(pretrained, (bool, str)):
        raise ConfigError(f"params.yaml [{SECTION}@{name}.pretrained]: false, true or a weights file path, got {pretrained!r}")
    cfg = build(TrainClassifierConfig, values, f"{SECTION}@{name}")
    return dataclasses.replace(cfg, pretrained=pretrained)


@dataclasses.dataclass(frozen=True)
class TrainClassifierResult:
    """What a run produced."""

    name: str  # run name
    out_dir: Path  # folder with best.pt, history.jsonl, val_metrics.json
    best_epoch: int  # epoch of best.pt
    val: dict[str, Any]  # validation report of best.pt
    counts: dict[str, int]  # images: train_real, train_synthetic, val
    epochs_run: int  # epochs trained in this call (fewer after a resume)
    seconds: float  # wall time of this call

    def summary(self) -> str:
        acc, f1 = self.val["accuracy"], self.val["macro"]["f1"]
        return (
            f"train_classifier@{self.name}: best epoch {self.best_epoch}, val accuracy {acc:.3f}, "
            f"macro-F1 {f1:.3f} on {self.counts['val']} images (train: {self.counts['train_real']} real, "
            f"{self.counts['train_synthetic']} synthetic); {self.epochs_run} epoch(s) in {self.seconds:.1f} s "
            f"-> {self.out_dir / 'best.pt'}"
        )


def run(cfg: TrainClassifierConfig) -> TrainClassifierResult:
    """Train the classifier of ``cfg``; resume from out_dir/last.pt when it was written by the same config."""
    from acneops.classify import train as cls_train

    start = time.perf_counter()
    train_items, val_items = collect_items(cfg)
    best_epoch, val, epochs_run = cls_train.fit(cfg, to_dict(cfg), train_items, val_items)
    counts = {
        "train_real": sum(it.origin == "real" for it in train_items),
        "train_synthetic": sum(it.origin == "synthetic" for it in train_items),
        "val": len(val_items),
    }
    return TrainClassifierResult(cfg.name, cfg.out_path, best_epoch, val, counts, epochs_run, time.perf_counter() - start)

