"""The training loop of `train_classifier`: train_epoch, evaluate, checkpoint, resume, final report.

Kept apart from the stage module so each piece stays small. Determinism on CPU: the model init,
the shuffling (a seeded DataLoader generator) and the augmentation (torch's global RNG in the
loading process, or per-worker seeds drawn from that generator) all derive from ``seed``, and
``torch.use_deterministic_algorithms`` is on while training. last.pt holds the optimizer and both
RNG states at the end of each epoch, so a run killed mid-way and restarted gives the same weights
as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from acneops import tracking
from acneops.classify.backbones import (
    create_classifier,
    model_args_for,
    read_checkpoint,
    save_checkpoint,
)
from acneops.classify.data import ImageDataset, eval_transform, train_transform
from acneops.core.io import (
    append_jsonl,
    read_jsonl,
    sha256_file,
    write_json,
    write_text,
)
from acneops.core.progress import progress

RESUME_FREE_KEYS = ("epochs", "keep_last", "workers", "threads")  # config keys that may change between kill and resume


@contextlib.contextmanager
def deterministic(seed: int, threads: int = 0) -> Iterator[None]:
    """Seed torch, switch on deterministic algorithms and set the CPU thread count (0: keep) inside
    the block; restore all three afterwards."""
    was_det, was_threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    rng = torch.get_rng_state()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_det)
        torch.set_num_threads(was_threads)
        torch.set_rng_state(rng)


def class_weights(labels: Sequence[str], item_labels: Sequence[str]) -> torch.Tensor:
    """Inverse-frequency weights (C,), mean 1 over the samples: each class weighs the same in the loss."""
    counts = np.array([sum(1 for x in item_labels if x == label) for label in labels], dtype=np.float64)
    weights = len(item_labels) / (len(labels) * np.maximum(counts, 1.0))
    return torch.tensor(weights, dtype=torch.float32)


def train_epoch(model: nn.Module, loader: DataLoader, opt: torch.optim.Optimizer, loss_fn: nn.Module,
                device: torch.device, desc: str) -> tuple[float, float]:
    """One pass over ``loader``; returns (mean loss, accuracy) on the augmented training batches."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in progress(loader, desc=desc, leave=False, unit="batch"):
        x, y = x.to(device), y.to(device)  # (B, 3, S, S), (B,)
        logits = model(x)  # (B, C)
        loss = loss_fn(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total_loss += float(loss.detach()) * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
    return total_loss / max(seen, 1), correct / max(seen, 1)


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(true class indices (N,), predicted class indices (N,)) over ``loader`` in eval mode."""
    model.eval()
    y_true, y_pred = [], []
    with torch.inference_mode():
        for x, y in loader:
            y_pred.append(model(x.to(device)).argmax(1).cpu().numpy())
            y_true.append(y.numpy())
    return np.concatenate(y_true), np.concatenate(y_pred)


def val_report(labels: Sequence[str], positive: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """The shared classification report (acneops.metrics.classification) of class indices into ``labels``."""
    from acneops.metrics.classification import classification_report

    return classification_report([int(v) for v in y_true], [int(v) for v in y_pred], list(labels),
                                 positive=positive or None)


def _loaders(cfg: Any, model_args: dict[str, Any], train_items: list, val_items: list) -> tuple[DataLoader, DataLoader, torch.Generator]:
    """Seeded, shuffled training loader and ordered validation loader."""
    size, mean, std = cfg.img_size, model_args["mean"], model_args["std"]
    train_ds = ImageDataset(train_items, cfg.labels, train_transform(size, mean, std, cfg.rotation_deg, cfg.brightness, cfg.hflip))
    val_ds = ImageDataset(val_items, cfg.labels, eval_transform(size, mean, std))
    gen = torch.Generator().manual_seed(cfg.seed)
    # a final batch of one image breaks BatchNorm in train mode: drop it (it is a different image each epoch)
    train = DataLoader(train_ds, batch_size=cfg.batch, shuffle=True, generator=gen, num_workers=cfg.workers,
                       drop_last=len(train_ds) % cfg.batch == 1)
    val = DataLoader(val_ds, batch_size=max(cfg.batch, 64), shuffle=False, num_workers=cfg.workers)
    return train, val, gen


def _resume_state(out: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """last.pt of an interrupted run with the same config (up to RESUME_FREE_KEYS), else None."""
    last = out / "last.pt"
    if not last.is_file():
        return None
    ckpt = read_checkpoint(last)
    strip = lambda c: {k: v for k, v in (c or {}).items() if k not in RESUME_FREE_KEYS}
    if strip(ckpt.get("config")) != strip(config):
        print(f"{last}: written by a different config; starting afresh")
        return None
    return ckpt


def _start_fresh(out: Path) -> None:
    """Remove the trail of an earlier run so history.jsonl and best.pt describe this run only."""
    for name in ("last.pt", "best.pt", "history.jsonl", "val_metrics.json", "val_confusion.json", "val_confusion.png"):
        (out / name).unlink(missing_ok=True)


def _truncate_history(out: Path, epoch: int) -> None:
    """Keep the history lines of epochs <= ``epoch`` (a kill may leave a line past the last checkpoint)."""
    lines = [r for r in read_jsonl(out / "history.jsonl") if r["epoch"] <= epoch]
    write_text(out / "history.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in lines))


def _lineage_tags(cfg: Any, train_items: list) -> dict[str, Any]:
    """Tags naming the exact inputs: manifests' sha256 and image counts per origin."""
    tags: dict[str, Any] = {
        "acneops.arch": cfg.arch,
        "acneops.train_real": sum(it.origin == "real" for it in train_items),
        "acneops.train_synthetic": sum(it.origin == "synthetic" for it in train_items),
    }
    for split in ("train", "val"):
        manifest = Path(cfg.restored_dir) / split / "manifest.csv"
        if manifest.is_file():
            tags[f"acneops.restored_{split}_sha256"] = sha256_file(manifest)
    if cfg.synthetic_dir and (Path(cfg.synthetic_dir) / "manifest.csv").is_file():
        tags["acneops.synthetic_sha256"] = sha256_file(Path(cfg.synthetic_dir) / "manifest.csv")
    return tags


@dataclasses.dataclass
class Session:
    """Everything one training run works on (built once, then passed to the per-epoch steps)."""

    cfg: Any  # TrainClassifierConfig
    config: dict[str, Any]  # cfg as plain data (stored in every checkpoint)
    model_args: dict[str, Any]  # acneops.classify.backbones.model_args_for
    model: nn.Module
    opt: torch.optim.Optimizer
    loss_fn: nn.Module
    train_dl: DataLoader
    val_dl: DataLoader
    gen: torch.Generator  # shuffling RNG of train_dl
    device: torch.device
    out: Path  # output folder


def _session(cfg: Any, config: dict[str, Any], train_items: list, val_items: list) -> Session:
    """Model (seeded init), Adam, loss (class-weighted if asked) and loaders of a run."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model_args = model_args_for(cfg.arch, len(cfg.labels), cfg.img_size, cfg.labels)
    model = create_classifier(cfg.arch, len(cfg.labels), cfg.pretrained, cfg.img_size).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    weights = class_weights(cfg.labels, [it.label for it in train_items]).to(device) if cfg.class_weighted_loss else None
    train_dl, val_dl, gen = _loaders(cfg, model_args, train_items, val_items)
    return Session(cfg, config, model_args, model, opt, nn.CrossEntropyLoss(weight=weights),
                   train_dl, val_dl, gen, device, cfg.out_path)


def _begin(s: Session) -> tuple[int, dict[str, Any], str | None]:
    """Resume from last.pt of the same config, or clear the old trail; return (first epoch, best, MLflow run id)."""
    state = _resume_state(s.out, s.config)
    if state is None:
        _start_fresh(s.out)
        write_json(s.out / "config.json", s.config)
        return 1, {"epoch": 0, "score": -1.0}, None
    s.model.load_state_dict(state["model"])
    s.opt.load_state_dict(state["optim"])
    torch.set_rng_state(state["rng"]["torch"])
    s.gen.set_state(state["rng"]["loader"])
    _truncate_history(s.out, state["epoch"])
    return state["epoch"] + 1, state["best"], state.get("mlflow_run_id")


def _epoch(s: Session, epoch: int, best: dict[str, Any], mlrun: Any) -> dict[str, Any]:
    """Train one epoch, validate, write best.pt (if better), history, last.pt, MLflow; return the best so far."""
    cfg, t0 = s.cfg, time.perf_counter()
    train_loss, train_acc = train_epoch(s.model, s.train_dl, s.opt, s.loss_fn, s.device,
                                        f"{cfg.name} epoch {epoch}/{cfg.epochs}")
    report = val_report(cfg.labels, cfg.positive, *evaluate(s.model, s.val_dl, s.device))
    record = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_acc": report["accuracy"],
              "val_macro_f1": report["macro"]["f1"], "seconds": round(time.perf_counter() - t0, 3)}
    score = record["val_macro_f1" if cfg.select_metric == "macro_f1" else "val_acc"]
    # the checkpoint holds no wall-clock time (history.jsonl does): the same params and seed give the same file
    common = {"model_args": s.model_args, "epoch": epoch, "config": s.config,
              "metrics": {k: v for k, v in record.items() if k != "seconds"}}
    if score > best["score"]:  # ties keep the earlier epoch
        best = {"epoch": epoch, "score": score}
        save_checkpoint(s.out / "best.pt", s.model, **common)
    append_jsonl(s.out / "history.jsonl", record)
    # metrics before last.pt: a kill between the two repeats this epoch's (identical) metrics on resume
    # instead of leaving a gap in the run's history
    mlrun.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=epoch)
    save_checkpoint(s.out / "last.pt", s.model, **common, optim=s.opt.state_dict(), best=best,
                    rng={"torch": torch.get_rng_state(), "loader": s.gen.get_state()}, mlflow_run_id=mlrun.run_id)
    print(f"{cfg.name} epoch {epoch}: loss {train_loss:.4f} train acc {train_acc:.3f} "
          f"val acc {record['val_acc']:.3f} val macro-F1 {record['val_macro_f1']:.3f}")
    return best


def fit(cfg: Any, config: dict[str, Any], train_items: list, val_items: list) -> tuple[int, dict[str, Any], int, str]:
    """Train, keep best.pt by ``cfg.select_metric`` on validation; return (best epoch, val report, epochs run,
    MLflow run id)."""
    cfg.out_path.mkdir(parents=True, exist_ok=True)
    with deterministic(cfg.seed, cfg.threads):
        s = _session(cfg, config, train_items, val_items)
        start, best, run_id = _begin(s)
        with tracking.start_run("train_classifier", cfg.name, config, run_id=run_id,
                                tags=_lineage_tags(cfg, train_items)) as mlrun:
            _log_datasets(cfg, mlrun)
            for epoch in range(start, cfg.epochs + 1):
                best = _epoch(s, epoch, best, mlrun)
            val = _final_report(cfg, s.out, s.val_dl, s.device, best["epoch"], mlrun)
    if not cfg.keep_last:
        (s.out / "last.pt").unlink(missing_ok=True)
    return best["epoch"], val, max(0, cfg.epochs + 1 - start), mlrun.run_id


def _log_datasets(cfg: Any, mlrun: Any) -> None:
    """The manifests of the data this run trains and selects on, as the run's MLflow dataset inputs."""
    restored = Path(cfg.restored_dir)
    if cfg.real_train:
        mlrun.log_dataset(restored / "train", "real-train", "training")
    if cfg.synthetic_dir:
        mlrun.log_dataset(Path(cfg.synthetic_dir), f"synthetic:{Path(cfg.synthetic_dir).name}", "training")
    if cfg.val_source == "real_val":
        mlrun.log_dataset(restored / "val", "real-val", "validation")


def _final_report(cfg: Any, out: Path, val_dl: DataLoader, device: torch.device, best_epoch: int, mlrun: Any) -> dict[str, Any]:
    """Re-evaluate best.pt on validation; write val_metrics.json and the confusion matrix; log them."""
    import timm

    from acneops.metrics.classification import save_confusion_matrix

    ckpt = read_checkpoint(out / "best.pt")
    args = ckpt["model_args"]
    model = timm.create_model(args["arch"], num_classes=args["num_classes"], pretrained=False)
    model.load_state_dict(ckpt["model"])
    report = val_report(cfg.labels, cfg.positive, *evaluate(model.to(device), val_dl, device))
    report = {**report, "best_epoch": best_epoch, "select_metric": cfg.select_metric, "val_source": cfg.val_source}
    write_json(out / "val_metrics.json", report)
    save_confusion_matrix(report, out / "val_confusion.json", out / "val_confusion.png")
    mlrun.log_metrics({"best_val_acc": report["accuracy"], "best_val_macro_f1": report["macro"]["f1"],
                       "best_epoch": best_epoch}, step=best_epoch)
    for name in ("val_metrics.json", "val_confusion.json", "val_confusion.png", "history.jsonl", "config.json"):
        mlrun.log_artifact(out / name, "classifier")
    return report
