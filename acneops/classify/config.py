"""Options of one classifier training (frozen config) and the items it trains and selects on.\n\nThe `train_classifier` stage (acneops.stages.train_classifier) builds :class:`TrainClassifierConfig` from params."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from acneops.classify.backbones import REGISTRY
from acneops.core.config import (
    require,
)
from acneops.core.paths import RESTORED_DIR, classifier_dir

SECTION = "train_classifier"  # params section (named in error messages)

ROLES = ("sorter", "classifier")  # data roles a classifier may take (acneops.data.access)


VAL_SOURCES = ("real_val", "synthetic_holdout")


SELECT_METRICS = ("macro_f1", "accuracy")

REAL_SUBSET_SEED = 0  # the real_fraction subset: the same images for every training seed and scenario

SEEDS_DIR = "seeds"  # <out_dir>/seeds/<seed>/: the replicate models; <out_dir>/seeds/summary.json: all seeds


@dataclasses.dataclass(frozen=True)
class TrainClassifierConfig:
    """One classifier run: params ``train_classifier`` defaults merged with ``train_classifier.runs[name]``."""

    name: str  # run name (sorter, synthetic, real, augmented, ...); the MLflow run is train_classifier@name
    arch: str = "resnet18"  # backbone in acneops.classify.backbones.REGISTRY
    pretrained: bool | str = False  # false | true (Hugging Face hub) | path to a timm weights file
    img_size: int = 64  # px, square input of the network
    labels: tuple[str, ...] = ("healthy", "mild", "moderate", "severe")  # classes, in output order
    positive: str = ""  # class counted positive for sensitivity/specificity (binary tasks; "" = metrics default)
    role: str = "classifier"  # data role: 'sorter' (sort stage's classifier) or 'classifier'
    restored_dir: Path = RESTORED_DIR  # restored real splits (<split>/manifest.csv)
    real_train: bool = True  # train on the real train split
    real_fraction: float = 1.0  # share of the real train images per class used (scarce-data scenarios; 1 = all)
    synthetic_dir: str = ""  # synthetic manifest folder to train on ("" = none)
    synthetic_per_class: int = 0  # images, cap of synthetic images per class (0 = all)
    val_source: str = "real_val"  # real_val | synthetic_holdout: data the best epoch is selected on
    synthetic_holdout: float = 0.2  # share of synthetic images per class held out when val_source=synthetic_holdout
    select_metric: str = "macro_f1"  # macro_f1 | accuracy: validation metric that picks best.pt
    out_dir: str = str(classifier_dir("{name}"))  # output folder; '{name}' is replaced by the run name
    epochs: int = 10  # passes over the training images
    batch: int = 16  # images per optimisation step
    lr: float = 1.0e-3  # Adam learning rate (the papers' 1e-4 assumes ImageNet-pretrained backbones)
    weight_decay: float = 0.0  # Adam L2 weight decay
    rotation_deg: float = 15.0  # degrees, max random rotation (traditional augmentation; 0 = off)
    brightness: float = 0.2  # max relative brightness change (0 = off)
    hflip: float = 0.5  # probability of a horizontal flip (0 = off)
    class_weighted_loss: bool = True  # weight cross-entropy by inverse class frequency of the train set
    # training seeds (init, shuffling, augmentation, synthetic holdout), one model each: the first is the model the
    # pipeline uses (out_dir/best.pt), the others are replicates (out_dir/seeds/<seed>/) that evaluate scores too
    seeds: tuple[int, ...] = (0, 1, 2)
    workers: int = 0  # DataLoader worker processes (0 = load in the training process)
    threads: int = 1  # torch CPU threads (0 = one per core); fixed: results differ in the last bits between counts
    keep_last: bool = False  # keep last.pt (optimizer + RNG state) after a finished run, to extend it later
    # classes with no real image (params ingest.prior_classes, set by the stage): their absence from the real splits is
    # expected and reported, not an error; any other class of `labels` without real images stays an error
    prior_classes: tuple[str, ...] = ()

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
        require(0 < self.real_fraction <= 1, f"{where}.real_fraction: must be in (0, 1], got {self.real_fraction}")
        require(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds) and min(self.seeds) >= 0,
                f"{where}.seeds: one or more distinct seeds >= 0, got {list(self.seeds)}")

    @property
    def out_path(self) -> Path:
        return Path(self.out_dir.replace("{name}", self.name))

    @property
    def seed(self) -> int:
        """The seed of the model at out_path (the first of ``seeds``)."""
        return self.seeds[0]

    def replicates(self) -> list["TrainClassifierConfig"]:
        """One single-seed config per seed: the first writes to out_path, the others to out_path/seeds/<seed>."""
        out = [dataclasses.replace(self, seeds=(self.seeds[0],), out_dir=str(self.out_path))]
        out += [dataclasses.replace(self, name=f"{self.name}-seed{s}", seeds=(s,),
                                    out_dir=str(self.out_path / SEEDS_DIR / str(s))) for s in self.seeds[1:]]
        return out


def collect_items(cfg: TrainClassifierConfig) -> tuple[list[Any], list[Any]]:
    """(train items, val items) of the run, every source checked before training starts."""
    from acneops.classify.data import holdout_split, per_class_subset, real_items, synthetic_items

    train: list[Any] = []
    val: list[Any] = []
    if cfg.real_train:
        real = real_items(cfg.restored_dir, "train", cfg.role, cfg.labels, absent_ok=cfg.prior_classes)
        # the same subset for every seed and scenario of a fraction: a fixed seed, not the training seed
        train += real if cfg.real_fraction == 1 else per_class_subset(real, cfg.real_fraction, REAL_SUBSET_SEED)
    if cfg.synthetic_dir:
        synthetic = synthetic_items(Path(cfg.synthetic_dir), cfg.labels, cfg.synthetic_per_class)
        if cfg.val_source == "synthetic_holdout":
            synthetic, val = holdout_split(synthetic, cfg.synthetic_holdout, cfg.seed)
        train += synthetic
    if cfg.val_source == "real_val":
        val = real_items(cfg.restored_dir, "val", cfg.role, cfg.labels, absent_ok=cfg.prior_classes)
    return train, val


def prior_only_notes(cfg: TrainClassifierConfig, train: list[Any], val: list[Any]) -> list[str]:
    """One line per prior-only class of the run: its real, synthetic and validation images. A class with no training
    image at all (the `real` scenario) stays in the output layer, untrained: the line says so."""
    notes = []
    for label in (c for c in cfg.labels if c in cfg.prior_classes):
        synthetic = sum(it.label == label and it.origin == "synthetic" for it in train)
        n_val = sum(it.label == label for it in val)
        line = f"{label}: 0 real train images (prior-only: ingest.prior_classes), {synthetic} synthetic"
        if not synthetic:
            line += "; the class stays in the output layer but this model never saw an example of it"
        if not n_val:
            line += (f"; no {'real ' if cfg.val_source == 'real_val' else ''}validation image either: its validation "
                     "F1 is 0 and the macro figures average it in")
        notes.append(line)
    return notes



def replicate_checkpoints(checkpoint: Path) -> list[tuple[int | None, Path]]:
    """[(seed, checkpoint)] of a classifier and its replicates: ``checkpoint`` first, then the file of the same name
    under ``<its folder>/seeds/<seed>/`` for every further seed in ``seeds/summary.json``. A checkpoint trained
    outside the pipeline (no summary) is one model of unknown seed. A listed replicate that is missing is an error."""
    import json

    from acneops.core.errors import StageError

    checkpoint = Path(checkpoint)
    summary = checkpoint.parent / SEEDS_DIR / "summary.json"
    if not summary.is_file():
        return [(None, checkpoint)]
    seeds = [int(s) for s in json.loads(summary.read_text()).get("seeds") or []]
    out: list[tuple[int | None, Path]] = [(seeds[0] if seeds else None, checkpoint)]
    for seed in seeds[1:]:
        path = checkpoint.parent / SEEDS_DIR / str(seed) / checkpoint.name
        if not path.is_file():
            raise StageError(f"{summary}: seed {seed}'s model {path} is missing; re-run the classifier's "
                             "`dvc repro train_classifier@<name>`")
        out.append((seed, path))
    return out
