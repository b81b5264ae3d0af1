"""Stage `train_classifier@<name>`: train one image classifier and keep its best-validation checkpoint.

Named runs in params (``train_classifier.runs``) give the pipeline's classifiers:
- ``sorter``: severity classifier on the real train split only (acne classes; data role ``sorter``),
  used by the ``sort`` stage to label generated images;
- ``synthetic``: synthetic images only — the train-synthetic-test-real protocol of the first method;
- ``real``: real train split + traditional augmentation — scenario 1 of the second method;
- ``augmented``: real + up to N synthetic images per class — scenario 2 of the second method.

The model is selected on the real validation split by default (``val_source: real_val``), also for
the synthetic-only run: the usual protocol, at the cost of a little real information in model
selection; ``val_source: synthetic_holdout`` keeps the synthetic run free of any real image. The
real test split is never read here (the data access layer refuses it).

Outputs in ``out_dir``: config.json (written first), history.jsonl (one line per epoch), best.pt,
val_metrics.json, val_confusion.json/.png, and last.pt while training (resume after a kill).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from acneops.classifiers import REGISTRY
from acneops.config import ConfigError, build, check_upstream, require, section, to_dict

SECTION = "train_classifier"
ROLES = ("sorter", "classifier")  # data roles a classifier may take (acneops.data_access)
VAL_SOURCES = ("real_val", "synthetic_holdout")
SELECT_METRICS = ("macro_f1", "accuracy")


@dataclasses.dataclass(frozen=True)
class TrainClassifierConfig:
    """One classifier run: params ``train_classifier`` defaults merged with ``train_classifier.runs[name]``."""

    name: str  # run name (sorter, synthetic, real, augmented, ...); the MLflow run is train_classifier@name
    arch: str = "resnet18"  # backbone in acneops.classifiers.REGISTRY
    pretrained: bool | str = False  # false | true (Hugging Face hub) | path to a timm weights file
    img_size: int = 64  # px, square input of the network
    labels: tuple[str, ...] = ("healthy", "mild", "moderate", "severe")  # classes, in output order
    positive: str = ""  # class counted positive for sensitivity/specificity (binary tasks; "" = metrics default)
    role: str = "classifier"  # data role: 'sorter' (sort stage's classifier) or 'classifier'
    restored_dir: Path = Path("datasets/restored")  # restored real splits (<split>/manifest.csv)
    real_train: bool = True  # train on the real train split
    synthetic_dir: str = ""  # synthetic manifest folder to train on ("" = none)
    synthetic_per_class: int = 0  # images, cap of synthetic images per class (0 = all)
    val_source: str = "real_val"  # real_val | synthetic_holdout: data the best epoch is selected on
    synthetic_holdout: float = 0.2  # share of synthetic images per class held out when val_source=synthetic_holdout
    select_metric: str = "macro_f1"  # macro_f1 | accuracy: validation metric that picks best.pt
    out_dir: str = "models/classifier/{name}"  # output folder; '{name}' is replaced by the run name
    epochs: int = 6  # passes over the training images
    batch: int = 16  # images per optimisation step
    lr: float = 1.0e-4  # Adam learning rate
    weight_decay: float = 0.0  # Adam L2 weight decay
    rotation_deg: float = 15.0  # degrees, max random rotation (traditional augmentation; 0 = off)
    brightness: float = 0.2  # max relative brightness change (0 = off)
    hflip: float = 0.5  # probability of a horizontal flip (0 = off)
    class_weighted_loss: bool = True  # weight cross-entropy by inverse class frequency of the train set
    seed: int = 0  # seeds init, shuffling, augmentation and the synthetic holdout
    workers: int = 0  # DataLoader worker processes (0 = load in the training process)
    threads: int = 0  # torch CPU threads while training (0 = torch's default, one per core)
    keep_last: bool = False  # keep last.pt (optimizer + RNG state) after a finished run, to extend it later

    def __post_init__(self) -> None:
        where = f"params.yaml [{SECTION}@{self.name}]"
        require(self.arch in REGISTRY, f"{where}.arch: '{self.arch}' unknown; supported: {sorted(REGISTRY)}")
        min_size = REGISTRY[self.arch].min_size if self.arch in REGISTRY else 1
        require(self.img_size >= min_size, f"{where}.img_size: {self.arch} needs >= {min_size} px, got {self.img_size}")
        require(len(self.labels) >= 2, f"{where}.labels: need at least 2 classes, got {list(self.labels)}")
        require(len(set(self.labels)) == len(self.labels), f"{where}.labels: duplicates in {list(self.labels)}")
        require(self.positive in ("", *self.labels), f"{where}.positive: '{self.positive}' is not in labels")
        require(self.role in ROLES, f"{where}.role: '{self.role}' must be one of {ROLES}")
        require(self.real_train or bool(self.synthetic_dir), f"{where}: no training data (real_train false, synthetic_dir empty)")
        require(self.val_source in VAL_SOURCES, f"{where}.val_source: '{self.val_source}' must be one of {VAL_SOURCES}")
        require(self.val_source != "synthetic_holdout" or bool(self.synthetic_dir),
                f"{where}.val_source: synthetic_holdout needs synthetic_dir")
        require(0 < self.synthetic_holdout < 1, f"{where}.synthetic_holdout: must be in (0, 1)")
        require(self.select_metric in SELECT_METRICS, f"{where}.select_metric: must be one of {SELECT_METRICS}")
        require(self.synthetic_per_class >= 0, f"{where}.synthetic_per_class: must be >= 0")
        require(self.epochs >= 1 and self.batch >= 1, f"{where}: epochs and batch must be >= 1")
        require(self.lr > 0 and self.weight_decay >= 0, f"{where}: lr must be > 0 and weight_decay >= 0")
        require(0 <= self.rotation_deg <= 180, f"{where}.rotation_deg: must be in [0, 180]")
        require(0 <= self.brightness < 1 and 0 <= self.hflip <= 1, f"{where}: brightness in [0, 1), hflip in [0, 1]")
        require(self.workers >= 0 and self.threads >= 0, f"{where}: workers and threads must be >= 0")
        require(isinstance(self.pretrained, (bool, str)), f"{where}.pretrained: false, true or a file path")

    @property
    def out_path(self) -> Path:
        return Path(self.out_dir.replace("{name}", self.name))


def config_from_params(params: dict[str, Any], name: str | None) -> TrainClassifierConfig:
    """The config of run ``name``: section defaults overridden by ``runs[name]``."""
    values = dict(section(params, SECTION))
    runs = values.pop("runs", None) or {}
    if not isinstance(runs, dict):
        raise ConfigError(f"params.yaml [{SECTION}.runs]: must map run names to overrides, got {runs!r}")
    if not name:
        raise ConfigError(f"{SECTION} needs a run name: `acneops run {SECTION} --name X`, X in {sorted(runs)}")
    if name not in runs:
        raise ConfigError(f"params.yaml [{SECTION}.runs]: unknown run '{name}'; defined runs: {sorted(runs)}")
    overrides = runs[name] or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"params.yaml [{SECTION}.runs.{name}]: must be a mapping of keys to override, got {overrides!r}")
    values.update(overrides)
    values["name"] = name
    reads = values.get("synthetic_dir") or Path(str(values.get("restored_dir", "datasets/restored"))) / "train"
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


def collect_items(cfg: TrainClassifierConfig) -> tuple[list[Any], list[Any]]:
    """(train items, val items) of the run, every source checked before training starts."""
    from acneops.cls_data import holdout_split, real_items, synthetic_items

    train: list[Any] = []
    val: list[Any] = []
    if cfg.real_train:
        train += real_items(cfg.restored_dir, "train", cfg.role, cfg.labels)
    if cfg.synthetic_dir:
        synthetic = synthetic_items(Path(cfg.synthetic_dir), cfg.labels, cfg.synthetic_per_class)
        if cfg.val_source == "synthetic_holdout":
            synthetic, val = holdout_split(synthetic, cfg.synthetic_holdout, cfg.seed)
        train += synthetic
    if cfg.val_source == "real_val":
        val = real_items(cfg.restored_dir, "val", cfg.role, cfg.labels)
    return train, val


def run(cfg: TrainClassifierConfig) -> TrainClassifierResult:
    """Train the classifier of ``cfg``; resume from out_dir/last.pt when it was written by the same config."""
    from acneops import cls_train

    start = time.perf_counter()
    train_items, val_items = collect_items(cfg)
    best_epoch, val, epochs_run = cls_train.fit(cfg, to_dict(cfg), train_items, val_items)
    counts = {
        "train_real": sum(it.origin == "real" for it in train_items),
        "train_synthetic": sum(it.origin == "synthetic" for it in train_items),
        "val": len(val_items),
    }
    return TrainClassifierResult(cfg.name, cfg.out_path, best_epoch, val, counts, epochs_run, time.perf_counter() - start)
