"""Scoring classifiers on the frozen real test split, the judge and feature extractor evaluate uses, and the\nflat metrics.json figures.\n\nThe `evaluate` stage (acneops.stages.evaluate) builds :class:`EvaluateConfig` from params and calls these."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from acneops.audit import AuditConfig
from acneops.core.config import require, to_dict
from acneops.core.errors import StageError
from acneops.core.io import sha256_file, write_json
from acneops.core.paths import (
    REPORTS_DIR,
    RESTORED_DIR,
    SYNTHETIC_DIR,
    classifier_checkpoint,
    gan_checkpoint,
)
from acneops.evaluation.classes import left_out_classes, present_only
from acneops.metrics import DEFAULT_CACHE_DIR, EXTRACTOR_NAMES

SECTION = "evaluate"  # params section (named in error messages)

ROLE = "evaluate"  # data-access role: the only one allowed to read the real test split



DETAILS_FILE = "evaluation.json"  # everything behind metrics.json, under reports_dir



REPORT_FILE = "report.md"



DEFAULT_CLASSIFIERS = {s: classifier_checkpoint(s) for s in ("synthetic", "real", "augmented")}



DEFAULT_GENERATORS = {c: gan_checkpoint(c) for c in ("healthy", "mild", "moderate", "severe", "all")}



@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """params.yaml section ``evaluate`` (plus the shared ``audit`` section)."""

    restored_dir: Path = RESTORED_DIR  # restored real splits (<split>/manifest.csv)
    # scenario -> classifier checkpoint, each scored on the real test split
    classifiers: dict[str, Path] = dataclasses.field(default_factory=lambda: dict(DEFAULT_CLASSIFIERS))
    sorter: str = str(classifier_checkpoint("sorter"))  # severity sorter checkpoint; "" = none (e.g. the mask task)
    # generator name (a class, or 'all') -> GAN checkpoint
    generators: dict[str, Path] = dataclasses.field(default_factory=lambda: dict(DEFAULT_GENERATORS))
    # generator name -> real classes it is compared with; default [name], and 'all' = the sorter's classes
    generator_labels: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    # generator name -> stats.jsonl to plot; default <checkpoint dir>/stats.jsonl
    gan_logs: dict[str, Path] = dataclasses.field(default_factory=dict)
    synthetic_dir: str = str(SYNTHETIC_DIR)  # exported synthetic set (manifest.csv): audit + grids; "" = none
    extractor: str = "domain"  # feature space of FD/KID/PRDC and the audit: domain | tiny | inception
    extractor_checkpoint: str = ""  # domain: classifier checkpoint of the feature space; "" = classifiers.real
    inception_weights: str = ""  # inception: local pt_inception-2015-12-05-6726825d.pth
    inception_sha256: str = ""  # inception: expected SHA-256 of that file; "" = not checked
    feature_batch: int = 32  # images per feature-extractor forward pass
    cache_dir: Path = DEFAULT_CACHE_DIR  # feature statistics cache of the real image sets
    n_fake: int = 200  # images generated per generator for FD/KID/PRDC and class fidelity, count
    psi: float = 1.0  # truncation psi of stylegan2 generators (dcgan has none: always 1)
    generation_draws: int = 3  # draws of n_fake images per generator from disjoint seed ranges: FD/fidelity mean ± SD
    seed: int = 0  # first generation seed (seeds seed..seed+n_fake-1); also KID subsets, the tiny net, bootstrap
    # scenario pairs (a, b) compared on the same resampled test images as a - b and a / b; pairs of which a scenario
    # is not in classifiers are left out (so a task without e.g. a synthetic classifier keeps the default)
    comparisons: tuple[tuple[str, str], ...] = (("augmented", "real"), ("synthetic", "real"))
    bootstrap: int = 2000  # resamples of the test images for the 95% intervals of the classifier figures; 0 = none
    kid_subsets: int = 100  # KID: random subsets, count
    kid_subset_size: int = 1000  # KID: samples per subset (capped at the smaller set), count
    nearest_k: int = 3  # precision/recall/density/coverage: k of the k-NN balls
    fidelity_judge: str = "sorter"  # who assigns generated images to classes: sorter | a classifiers key | "" = none
    positive: str = ""  # positive class of binary tasks (e.g. mask); "" = the second label
    # classes with no real image (params ingest.prior_classes, set by the stage): named as such when left out of the
    # per-class figures (every class without a real test image is left out, prior or not)
    prior_classes: tuple[str, ...] = ()
    batch: int = 32  # generation and classification batch, images
    grid_images: int = 16  # synthetic images per class in reports/grids/<class>.png, count
    grid_ncol: int = 8  # images per grid row, count
    repo_root: Path = Path(".")  # repository root: its git commit and data.dvc md5 go into the report
    reports_dir: Path = REPORTS_DIR  # confusion/, audit_evaluate/, grids/, gan_curves/, plots/, report.md
    metrics_path: Path = REPORTS_DIR / "metrics.json"  # DVC metrics file
    audit: AuditConfig = dataclasses.field(default_factory=AuditConfig)  # top-level params section `audit`

    def __post_init__(self) -> None:
        where = f"params.yaml [{SECTION}]"
        require(self.extractor in EXTRACTOR_NAMES,
                f"{where}.extractor: '{self.extractor}' is not one of {list(EXTRACTOR_NAMES)}")
        require(self.extractor != "inception" or bool(self.inception_weights),
                f"{where}.inception_weights: required when extractor is 'inception' "
                "(pt_inception-2015-12-05-6726825d.pth)")
        require(self.extractor != "domain" or bool(self.extractor_checkpoint) or "real" in self.classifiers,
                f"{where}.extractor_checkpoint: the domain extractor needs a classifier checkpoint; set it or add "
                "classifiers.real (the default feature space: the classifier trained on real images)")
        require(self.n_fake > self.nearest_k,
                f"{where}.n_fake: must be > nearest_k ({self.nearest_k}), got {self.n_fake}")
        require(self.nearest_k >= 1 and self.kid_subsets >= 1 and self.kid_subset_size >= 2,
                f"{where}: nearest_k and kid_subsets must be >= 1, kid_subset_size >= 2")
        require(self.psi >= 0, f"{where}.psi: must be >= 0, got {self.psi}")
        require(all(len(pair) == 2 and pair[0] != pair[1] for pair in self.comparisons),
                f"{where}.comparisons: a list of [a, b] scenario pairs, got {self.comparisons}")
        require(self.generation_draws >= 1, f"{where}.generation_draws: must be >= 1, got {self.generation_draws}")
        require(self.bootstrap >= 0, f"{where}.bootstrap: must be >= 0 (0 = no intervals), got {self.bootstrap}")
        require(min(self.batch, self.feature_batch, self.grid_images, self.grid_ncol) >= 1,
                f"{where}: batch, feature_batch, grid_images and grid_ncol must be >= 1")
        require(self.fidelity_judge in ("", "sorter", *self.classifiers),
                f"{where}.fidelity_judge: '{self.fidelity_judge}' must be 'sorter', '' or one of "
                f"{sorted(self.classifiers)}")
        require(self.fidelity_judge != "sorter" or bool(self.sorter),
                f"{where}.fidelity_judge: 'sorter' needs evaluate.sorter; set fidelity_judge to a classifier or ''")
        unknown = sorted(set(self.gan_logs) - set(self.generators))
        require(not unknown, f"{where}.gan_logs: {unknown} are not generators {sorted(self.generators)}")
        unknown = sorted(set(self.generator_labels) - set(self.generators))
        require(not unknown, f"{where}.generator_labels: {unknown} are not generators {sorted(self.generators)}")
        require(isinstance(self.audit, AuditConfig), f"{where}: audit must be an AuditConfig (params section audit)")



def _need_file(path: Path | str, key: str, fix: str) -> None:
    if not Path(path).is_file():
        raise StageError(f"params.yaml [{SECTION}.{key}]: {path} not found; {fix}")



def check_inputs(cfg: EvaluateConfig) -> None:
    """Every checkpoint and folder the stage needs, checked before any work (the error names the key)."""
    for scenario, path in cfg.classifiers.items():
        _need_file(path, f"classifiers.{scenario}", f"run `dvc repro train_classifier@{scenario}` or remove the entry")
    if cfg.sorter:
        _need_file(cfg.sorter, "sorter", "run `dvc repro train_classifier@sorter` or set evaluate.sorter to ''")
    for name, path in cfg.generators.items():
        _need_file(path, f"generators.{name}", f"run `dvc repro train_gan@{name}` or remove the entry")
    for name, path in cfg.gan_logs.items():
        _need_file(path, f"gan_logs.{name}", "point it at the generator's stats.jsonl or remove the entry")
    if cfg.extractor == "domain" and cfg.extractor_checkpoint:
        _need_file(cfg.extractor_checkpoint, "extractor_checkpoint", "train that classifier or fix the path")
    if cfg.synthetic_dir:
        _need_file(Path(cfg.synthetic_dir) / "manifest.csv", "synthetic_dir",
                   "run `dvc repro synthesize` or set evaluate.synthetic_dir to ''")
    for split in ("train", "test"):
        _need_file(Path(cfg.restored_dir) / split / "manifest.csv", "restored_dir", "run `dvc repro restore` first")



def build_extractor(cfg: EvaluateConfig) -> Any:
    """The feature extractor of ``cfg.extractor`` (domain: the real-scenario classifier by default)."""
    from acneops.features.extractors import extractor_from_config
    from acneops.metrics import MetricsConfig

    domain = Path(cfg.extractor_checkpoint or cfg.classifiers.get("real", "")) if cfg.extractor == "domain" else None
    inception = Path(cfg.inception_weights) if cfg.inception_weights else None
    mcfg = MetricsConfig(extractor=cfg.extractor, inception_weights=inception,
                         inception_sha256=cfg.inception_sha256, domain_checkpoint=domain, tiny_seed=cfg.seed,
                         batch_size=cfg.feature_batch, cache_dir=cfg.cache_dir, kid_subsets=cfg.kid_subsets,
                         kid_subset_size=cfg.kid_subset_size, nearest_k=cfg.nearest_k, seed=cfg.seed)
    return extractor_from_config(mcfg), domain



def trained_on(config: dict[str, Any] | None) -> str:
    """What a classifier was trained on, read from the config stored in its checkpoint."""
    if not isinstance(config, dict) or "real_train" not in config:
        return "unknown (no training config in the checkpoint)"
    real, synthetic = bool(config.get("real_train")), bool(config.get("synthetic_dir"))
    if real and synthetic:
        return "real + synthetic"
    if not synthetic:
        return "real only"
    # pure TSTR: no real image trains or selects it; otherwise the variant is named by what selected it
    if config.get("val_source") == "synthetic_holdout":
        return "synthetic only (TSTR)"
    return "synthetic only, selected on real val"



def chance_levels(y_true: list[str], labels: list[str]) -> dict[str, Any]:
    """Accuracy of uniform guessing (1/K) and of always answering the test split's majority class."""
    counts = {label: y_true.count(label) for label in labels}
    majority = max(labels, key=lambda label: (counts[label], -labels.index(label)))
    return {"uniform": 1.0 / len(labels), "majority": counts[majority] / len(y_true), "majority_class": majority}



def evaluate_classifier(name: str, checkpoint: Path, cfg: EvaluateConfig, strict_positive: bool = True) -> dict[str, Any]:
    """One classifier on the real test split (its classes): report, chance, confusion JSON/PNG/plot rows.

    ``evaluate.positive`` must be one of the classifier's classes, unless ``strict_positive`` is False
    (the sorter: the positive class of the task may be one it does not know, e.g. healthy).
    """
    from acneops.classify.backbones import load_classifier, predict, read_checkpoint
    from acneops.classify.config import replicate_checkpoints
    from acneops.classify.data import real_items
    from acneops.metrics.classification import (
        classification_report,
        confusion_plot_rows,
        save_confusion_matrix,
    )

    models = replicate_checkpoints(checkpoint)  # the shipped model first, then its replicates of other seeds
    model, args = load_classifier(checkpoint)
    labels = [str(x) for x in args.get("labels") or []]
    if len(labels) != int(args["num_classes"]):
        raise StageError(f"{checkpoint}: model_args has no class names (labels) for its {args['num_classes']} "
                         "outputs; retrain it with `dvc repro train_classifier`")
    positive = cfg.positive or None
    if positive is not None and positive not in labels:
        if strict_positive:
            raise StageError(f"params.yaml [{SECTION}.positive]: '{positive}' is not a class of {name} "
                             f"({checkpoint}: {labels})")
        positive = None
    items = real_items(Path(cfg.restored_dir), "test", ROLE, labels, absent_ok=labels)
    y_true = [it.label for it in items]
    left_out = left_out_classes(name, labels, y_true, cfg)
    preds, reports = [], []
    for seed, path in models:
        model_args = args
        if path != checkpoint:
            model, model_args = load_classifier(path)
            if [str(x) for x in model_args.get("labels") or []] != labels:
                raise StageError(f"{path}: classes {model_args.get('labels')} differ from {checkpoint}'s {labels}")
        probs = predict(model, model_args, [it.path for it in items], batch=cfg.batch,
                        desc=f"evaluate {name}{'' if seed is None else f' seed {seed}'}: predict real test")  # (N, C)
        preds.append([labels[i] for i in probs.argmax(axis=1)])
        reports.append(present_only(classification_report(y_true, preds[-1], labels, positive=positive), left_out))
    out = Path(cfg.reports_dir)
    save_confusion_matrix(reports[0], out / "confusion" / f"{name}.json", out / "confusion" / f"{name}.png")
    write_json(out / "plots" / f"confusion_{name}.json", confusion_plot_rows(reports[0]))
    return {
        "checkpoint": str(checkpoint),
        "sha256": sha256_file(checkpoint),
        "arch": args.get("arch"),
        "trained_on": trained_on(read_checkpoint(checkpoint).get("config")),
        "report": mean_report(reports),  # figures: means over the seeds; confusion matrix: the shipped model's
        "seeds": [{"seed": seed, "sha256": sha256_file(path), "accuracy": r["accuracy"], "macro_f1": r["macro"]["f1"]}
                  for (seed, path), r in zip(models, reports)],
        "chance": chance_levels(y_true, labels),
        "confusion_png": f"confusion/{name}.png",
        PREDICTIONS: (y_true, preds, labels),  # in memory only: run() takes it out before anything is written
    }


def mean_report(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The classification reports of one scenario's seeds as one: every float the mean over the seeds, counts and
    the confusion matrix those of the first (shipped) model. One report is returned unchanged."""
    def merge(values: list[Any]) -> Any:
        first = values[0]
        if isinstance(first, dict):
            return {k: merge([v[k] for v in values]) for k in first}
        if isinstance(first, float):
            return sum(values) / len(values)
        return first

    return reports[0] if len(reports) == 1 else merge(reports)


PREDICTIONS = "_predictions"


def add_intervals(details: dict[str, Any], cfg: EvaluateConfig) -> None:
    """95% bootstrap intervals over the test images for every classifier (and the sorter), and paired intervals of
    the scenario differences, into ``details["intervals"]``; takes the per-image predictions out of ``details``."""
    from acneops.metrics.bootstrap import intervals

    entries = {**details["classifiers"], **({"sorter": details["sorter"]} if details.get("sorter") else {})}
    predictions = {name: e.pop(PREDICTIONS) for name, e in entries.items()}
    if cfg.bootstrap:  # the sorter (its own classes and images) gets intervals, never a pair
        details["intervals"] = intervals(predictions, cfg.bootstrap, cfg.seed, cfg.comparisons)



def load_judge(cfg: EvaluateConfig) -> tuple[Any, dict[str, Any], str] | None:
    """(model, model_args, name) of the classifier that assigns generated images to classes, or None."""
    from acneops.classify.backbones import load_classifier

    if not cfg.fidelity_judge:
        return None
    path = Path(cfg.sorter) if cfg.fidelity_judge == "sorter" else cfg.classifiers[cfg.fidelity_judge]
    model, args = load_classifier(path)
    return model, args, cfg.fidelity_judge



def provenance(cfg: EvaluateConfig) -> dict[str, Any]:
    """Git commit, data.dvc md5 and the resolved config: what the numbers were computed from."""
    from acneops.tracking.lineage import data_md5, git_commit

    root = Path(cfg.repo_root)
    return {"git_commit": git_commit(root) or f"unknown ({root} is not a git checkout)",
            "data_dvc_md5": data_md5(root) or f"unknown (no {root / 'data.dvc'})", "config": to_dict(cfg)}



def _sig(x: float) -> float:
    """Six significant digits: readable DVC diffs, and bit-level float noise never shows."""
    return float(f"{x:.6g}")



def _classifier_numbers(entry: dict[str, Any]) -> dict[str, Any]:
    r = entry["report"]
    out: dict[str, Any] = {"accuracy": _sig(r["accuracy"]), "macro_precision": _sig(r["macro"]["precision"]),
                           "macro_recall": _sig(r["macro"]["recall"]), "macro_f1": _sig(r["macro"]["f1"]),
                           "n_test": r["n"], "chance_uniform": _sig(entry["chance"]["uniform"]),
                           "chance_majority": _sig(entry["chance"]["majority"])}
    if len(r["labels"]) == 2 and "sensitivity" in r:
        out["sensitivity"], out["specificity"] = _sig(r["sensitivity"]), _sig(r["specificity"])
    out["per_class"] = {c: {k: (v if k == "support" else _sig(v)) for k, v in m.items()}
                        for c, m in r["per_class"].items()}
    out.update(_seed_numbers(entry.get("seeds") or []))
    return out


def _seed_numbers(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Spread over training seeds: count, sample SD, min and max of accuracy and macro-F1, and each seed's figures."""
    import statistics

    out: dict[str, Any] = {"n_seeds": len(seeds)}
    if len(seeds) < 2:
        return out
    for stat in ("accuracy", "macro_f1"):
        values = [s[stat] for s in seeds]
        out.update({f"{stat}_sd": _sig(statistics.stdev(values)), f"{stat}_min": _sig(min(values)),
                    f"{stat}_max": _sig(max(values))})
    out["per_seed"] = {str(s["seed"]): {"accuracy": _sig(s["accuracy"]), "macro_f1": _sig(s["macro_f1"])}
                       for s in seeds}
    return out



def _with_intervals(numbers: dict[str, Any], ci: dict[str, list[float]] | None) -> dict[str, Any]:
    """The classifier's numbers with ``<stat>_ci95_low`` / ``_high`` after each statistic that has an interval."""
    if not ci:
        return numbers
    out: dict[str, Any] = {}
    for key, value in numbers.items():
        out[key] = value
        if key in ci:
            out[f"{key}_ci95_low"], out[f"{key}_ci95_high"] = _sig(ci[key][0]), _sig(ci[key][1])
    return out


def _comparison(v: dict[str, Any]) -> dict[str, Any]:
    """One paired comparison of acneops.metrics.bootstrap as flat metrics.json numbers."""
    out = {"difference": _sig(v["difference"]), "ci95_low": _sig(v["ci95"][0]), "ci95_high": _sig(v["ci95"][1]),
           "distinguishable": v["distinguishable"]}
    if v["ratio"] is not None and v["ratio_ci95"] is not None:
        out.update(ratio=_sig(v["ratio"]), ratio_ci95_low=_sig(v["ratio_ci95"][0]),
                   ratio_ci95_high=_sig(v["ratio_ci95"][1]))
    return out


def metrics_from(details: dict[str, Any]) -> dict[str, Any]:
    """The numbers of ``details`` as the nested metrics.json (deterministic: no timings, no paths)."""
    ci = details.get("intervals", {}).get("classifiers", {})
    nested: dict[str, Any] = {"classifiers": {s: _with_intervals(_classifier_numbers(e), ci.get(s))
                                              for s, e in details["classifiers"].items()}}
    if details.get("intervals", {}).get("pairs"):
        nested["comparisons"] = {pair: {stat: _comparison(v) for stat, v in stats.items()}
                                 for pair, stats in details["intervals"]["pairs"].items()}
    if details.get("sorter"):
        nested["sorter"] = _with_intervals(_classifier_numbers(details["sorter"]), ci.get("sorter"))
    gens, fidelity = {}, {}
    for name, g in details.get("generators", {}).items():
        nums = {k: (_sig(v) if isinstance(v, float) else v) for k, v in g["distribution"].items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}
        fid = g.get("fidelity")
        if fid:
            fidelity[name] = {c: _sig(s) for c, s in fid["shares"].items()}
            if fid.get("own") is not None:
                nums["class_fidelity"] = _sig(fid["own"])
            if fid.get("own_sd") is not None:
                nums["class_fidelity_sd"] = _sig(fid["own_sd"])
        gens[name] = nums
    if gens:
        nested["generators"] = gens
    if fidelity:
        nested["class_fidelity"] = fidelity
        own = {g: f[g] for g, f in fidelity.items() if g in f}  # per-class generators judged on their own class
        if own:
            nested["class_fidelity_summary"] = {
                "mean_own": _sig(sum(own.values()) / len(own)),
                "own_is_top": sum(f[g] == max(f.values()) and f[g] > 0 for g, f in fidelity.items() if g in own),
                "generators": len(own),
            }
    anonymity = {c: {k: (_sig(v) if isinstance(v, float) else v) for k, v in a["headline"].items() if v is not None}
                 for c, a in details.get("anonymity", {}).items()}
    if anonymity:
        nested["anonymity"] = anonymity
    return nested

