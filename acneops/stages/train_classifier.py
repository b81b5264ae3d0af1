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
val_metrics.json, val_confusion.json/.png, and last.pt while training (resume after a kill). ``seeds: [a, b, c]``
trains one model per seed in turn: ``a``'s is the one above (what sort, synthesize and the registry use), the
others the same files under ``out_dir/seeds/<seed>/``; ``out_dir/seeds/summary.json`` lists every seed's folder
and validation figures, and evaluate scores them all (mean ± SD over seeds; issue 12).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from acneops.classify.config import (
    SECTION,
    SEEDS_DIR,
    TrainClassifierConfig,
    collect_items,
    prior_only_notes,
)
from acneops.core.config import (
    ConfigError,
    build,
    check_upstream,
    to_dict,
)
from acneops.core.io import write_json
from acneops.core.paths import RESTORED_DIR
from acneops.stages.params import foreach_values, with_prior_classes

# acneops.stages.run_stage: the training loop (acneops.classify.train.fit) opens its own MLflow run, logs per
# epoch and resumes that run after a kill (its id is in last.pt); run_stage must not open a second one.
TRACKS_ITSELF = True


def config_from_params(params: dict[str, Any], name: str | None) -> TrainClassifierConfig:
    """The config of run ``name``: section defaults overridden by ``runs[name]``."""
    values, _ = foreach_values(params, SECTION, name)
    values["name"] = name
    if "seed" in values:  # the single-seed spelling of earlier params files
        if "seeds" in values:
            raise ConfigError(f"params.yaml [{SECTION}@{name}]: give `seeds` (a list) or `seed`, not both")
        values["seeds"] = [values.pop("seed")]
    reads = values.get("synthetic_dir") or Path(str(values.get("restored_dir", RESTORED_DIR))) / "train"
    check_upstream(values, reads, f"{SECTION}.runs.{name}")
    values = with_prior_classes(params, values, f"{SECTION}@{name}")
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
    epochs_run: int  # epochs trained in this call over all seeds (fewer after a resume)
    seconds: float  # wall time of this call
    per_seed: dict[int, tuple[float, float]] = dataclasses.field(default_factory=dict)  # seed -> (val acc, macro-F1)
    notes: tuple[str, ...] = ()  # prior-only classes: how many images of them it trained and selected on

    def summary(self) -> str:
        acc, f1 = self.val["accuracy"], self.val["macro"]["f1"]
        return (
            f"train_classifier@{self.name}: best epoch {self.best_epoch}, val accuracy {acc:.3f}, "
            f"macro-F1 {f1:.3f} on {self.counts['val']} images (train: {self.counts['train_real']} real, "
            f"{self.counts['train_synthetic']} synthetic); {self.epochs_run} epoch(s) in {self.seconds:.1f} s "
            f"-> {self.out_dir / 'best.pt'}" + self._seeds_line() + "".join(f"\n{n}" for n in self.notes)
        )

    def _seeds_line(self) -> str:
        if len(self.per_seed) < 2:
            return ""
        figures = ", ".join(f"seed {s}: {a:.3f}/{f:.3f}" for s, (a, f) in self.per_seed.items())
        return f"; val accuracy/macro-F1 per seed: {figures}"


def run(cfg: TrainClassifierConfig) -> TrainClassifierResult:
    """Train one model per seed of ``cfg`` (the first at out_dir, replicates under out_dir/seeds/<seed>) and write
    out_dir/seeds/summary.json; each resumes from its own last.pt when that was written by the same config."""
    from acneops.classify import train as cls_train

    start = time.perf_counter()
    replicates = cfg.replicates()
    _drop_stale_replicates(cfg)
    per_seed, epochs_run, notes = {}, 0, []
    for rep in replicates:
        train_items, val_items = collect_items(rep)
        if rep is replicates[0]:
            notes = prior_only_notes(rep, train_items, val_items)
        best_epoch, val, ran, run_id = cls_train.fit(rep, to_dict(rep), train_items, val_items)
        if rep is replicates[0]:  # the shipped model, as an MLflow pyfunc model of its run (`register` finds it)
            _log_model(rep, run_id)
        epochs_run += ran
        per_seed[rep.seed] = {"best_epoch": best_epoch, "accuracy": val["accuracy"], "macro_f1": val["macro"]["f1"],
                              "dir": str(rep.out_path), "val": val, "counts": _counts(train_items, val_items)}
    write_json(cfg.out_path / SEEDS_DIR / SUMMARY_FILE, {**_seed_summary(cfg, per_seed),
                                                         **({"prior_only": notes} if notes else {})})
    first = per_seed[cfg.seed]
    return TrainClassifierResult(cfg.name, cfg.out_path, first["best_epoch"], first["val"], first["counts"], epochs_run,
                                 time.perf_counter() - start,
                                 {s: (v["accuracy"], v["macro_f1"]) for s, v in per_seed.items()}, tuple(notes))


SUMMARY_FILE = "summary.json"  # <out_dir>/seeds/summary.json


def _log_model(cfg: TrainClassifierConfig, run_id: str) -> None:
    from acneops.registry import classifier_model
    from acneops.registry.models import ensure_logged

    ensure_logged(run_id, cfg.out_path / "best.pt", classifier_model.spec, "classifier", cfg.name,
                  tags={"backbone": cfg.arch, "scenario": cfg.name})


def _counts(train_items: list, val_items: list) -> dict[str, int]:
    return {"train_real": sum(it.origin == "real" for it in train_items),
            "train_synthetic": sum(it.origin == "synthetic" for it in train_items), "val": len(val_items)}


def _drop_stale_replicates(cfg: TrainClassifierConfig) -> None:
    """Remove replicate folders of seeds no longer in params: evaluate must never score a model of another config."""
    import shutil

    folder = cfg.out_path / SEEDS_DIR
    keep = {str(s) for s in cfg.seeds[1:]}
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        if entry.is_dir() and entry.name not in keep:
            shutil.rmtree(entry)


def _seed_summary(cfg: TrainClassifierConfig, per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Every seed's model folder and validation figures, with their mean and sample SD (what evaluate reads)."""
    import statistics

    out: dict[str, Any] = {"name": cfg.name, "seeds": list(cfg.seeds), "val_source": cfg.val_source,
                           "models": {str(s): {k: v[k] for k in ("dir", "best_epoch", "accuracy", "macro_f1")}
                                      for s, v in per_seed.items()}}
    for stat in ("accuracy", "macro_f1"):
        values = [v[stat] for v in per_seed.values()]
        out[f"val_{stat}_mean"] = statistics.fmean(values)
        out[f"val_{stat}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out
