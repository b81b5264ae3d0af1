"""The `train_gan` run: resume or start, loop over minibatches, tick logs, snapshots, tracking.

Split from acneops.stages.train_gan (config) and acneops.gan.loop (the step) to keep each piece small.
Only rank 0 writes files and talks to MLflow; every rank runs the same steps.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from acneops import tracking
from acneops.core.io import (
    append_jsonl,
    read_jsonl,
    sha256_file,
    write_json,
    write_text,
)
from acneops.gan import checkpoint as ckpt_io
from acneops.gan import dist as gan_dist
from acneops.gan.bank import ImageBank, labelled_files, training_files
from acneops.gan.config import (
    ADDED_KEYS,
    RESUMABLE_CHANGES,
    TrainGanConfig,
    TrainGanResult,
)
from acneops.gan.loop import (
    TrainState,
    build_state,
    load_state,
    seed_all,
    stat_keys,
    state_dict,
    train_step,
    transfer,
    weights_sha256,
)
from acneops.report.grid import save_grid

CHECKPOINT = "checkpoint.pt"  # latest snapshot while training
FINAL = "final.pt"  # the finished checkpoint (checkpoint.pt renamed)
STATS = "stats.jsonl"  # per tick training figures (deterministic)
TIMING = "timing.jsonl"  # per tick images/s and sec/kimg (wall clock)
OWN_FILES = (CHECKPOINT, FINAL, STATS, TIMING, "config.json")


def latest_checkpoint(out_dir: Path) -> Path | None:
    """checkpoint.pt (newer, written while training) or final.pt, or None."""
    for name in (CHECKPOINT, FINAL):
        if (out_dir / name).is_file():
            return out_dir / name
    return None


def config_changes(saved: dict[str, Any], cfg: TrainGanConfig) -> dict[str, tuple[Any, Any]]:
    """Keys whose value differs from the checkpoint's config, ignoring those a resume may change
    (a key an older checkpoint lacks counts as the value it was trained with, ADDED_KEYS)."""
    saved = {**ADDED_KEYS, **saved}
    ours = cfg.to_dict()
    return {k: (saved.get(k), v) for k, v in ours.items() if k not in RESUMABLE_CHANGES and saved.get(k) != v}


def _discard(out_dir: Path) -> None:
    """Remove this stage's own files (a stale run of different settings); nothing else in out_dir."""
    for name in OWN_FILES:
        (out_dir / name).unlink(missing_ok=True)
    grids = out_dir / "grids"
    if grids.is_dir():
        for png in grids.glob("fakes_*.png"):
            png.unlink()


def _resume_point(cfg: TrainGanConfig, dist: gan_dist.Dist) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None; a checkpoint of different settings is discarded (said so)."""
    path = latest_checkpoint(cfg.out_dir)
    if path is None:
        return None
    ckpt = ckpt_io.load(path)
    changes = config_changes(ckpt["config"], cfg)
    if not changes:
        return ckpt
    gan_dist.barrier(dist)  # every rank has read it before rank 0 deletes it
    if dist.is_main:
        detail = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changes.items()))
        print(f"train_gan@{cfg.name}: {path} was trained with other settings ({detail}); starting afresh")
        _discard(cfg.out_dir)
    return None


def _truncate_logs(out_dir: Path, cur_nimg: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be recomputed)."""
    for name in (STATS, TIMING):
        rows = [r for r in read_jsonl(out_dir / name) if r.get("nimg", 0) <= cur_nimg]
        write_text(out_dir / name, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


class Ticker:
    """Accumulates detached per-step stats and turns them into one tick record."""

    def __init__(self, cur_nimg: int):
        self.reset(cur_nimg)

    def reset(self, cur_nimg: int) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.start_nimg, self.start_time = cur_nimg, time.perf_counter()

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        for k, v in stats.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] = self.counts.get(k, 0) + 1

    def records(self, state: TrainState, tick: int, dist: gan_dist.Dist) -> tuple[dict[str, Any], dict[str, Any]]:
        """(stats record, timing record) of the tick ending now, figures averaged over ranks; resets.

        Every stats record has the same keys (DVC plots need uniform rows): a figure of a lazy phase
        that did not run during the tick is None, ada_rt is None before ADA's first update.
        """
        now = time.perf_counter()
        nimg = state.cur_nimg
        stats: dict[str, Any] = {k: None for k in stat_keys(state)}
        stats.update({"tick": tick, "nimg": nimg, "kimg": nimg / 1000, "step": state.step})
        keys = sorted(self.sums)
        if keys:  # one collective per tick (every rank runs the same phases, so the keys agree)
            means = torch.stack([self.sums[k].detach().float().cpu() / self.counts[k] for k in keys])
            mean = gan_dist.mean_across_ranks(dist)
            means = mean(means.to(dist.device)).cpu() if mean is not None else means
            stats.update({k: float(v) for k, v in zip(keys, means)})
        if state.augment_pipe is not None:
            stats["ada_p"] = float(state.augment_pipe.p)
        if state.ada is not None and state.ada.rt == state.ada.rt:  # nan before the first update
            stats["ada_rt"] = float(state.ada.rt)
        secs = max(now - self.start_time, 1e-9)
        done = max(nimg - self.start_nimg, 1)
        timing = {"tick": tick, "nimg": nimg, "kimg": nimg / 1000, "sec_per_tick": secs,
                  "sec_per_kimg": secs / done * 1000, "images_per_sec": done / secs}
        self.reset(nimg)
        return stats, timing


def _crossed(before: int, after: int, every_nimg: int) -> bool:
    return after // every_nimg > before // every_nimg


def _snapshot(state: TrainState, cfg: TrainGanConfig, run: tracking.Run, dist: gan_dist.Dist,
              num_images: int) -> str:
    """Checkpoint (atomic) + sample grid; on rank 0 log them. Replicas are checked identical first."""
    digests = gan_dist.gather_strings(weights_sha256(state), dist)
    if len(set(digests)) != 1:  # a bug, not bad input: NVIDIA's check_ddp_consistency does the same
        raise RuntimeError(f"train_gan@{cfg.name}: replicas diverged at nimg {state.cur_nimg}: {digests}")
    if not dist.is_main:
        return ""
    grid_path = cfg.out_dir / "grids" / f"fakes_kimg{state.cur_nimg / 1000:09.3f}.png"
    _save_grid(state.G_ema, cfg, grid_path, str(dist.device))
    ckpt = {**state_dict(state, cfg), "mlflow_run_id": run.run_id, "world": dist.world, "num_images": num_images,
            "replica_sha256": digests, "torch_version": str(torch.__version__)}
    sha = ckpt_io.save(cfg.out_dir / CHECKPOINT, ckpt)
    run.log_artifact(grid_path, artifact_path="grids")
    run.set_tags({"checkpoint_path": str((cfg.out_dir / CHECKPOINT).resolve()), "checkpoint_sha256": sha,
                  "checkpoint_kimg": state.cur_nimg / 1000})
    return sha


def _save_grid(G: torch.nn.Module, cfg: TrainGanConfig, grid_path: Path, device: str) -> None:
    """Seeds 0..grid_seeds-1 of G_ema as one seamless grid: square, or one row per class (labels order)
    for a conditional run (column j is seed j in every row)."""
    from acneops.gan.sampling import synthesize

    seeds = list(range(cfg.grid_seeds))
    if not cfg.c_dim:
        images = synthesize(G, cfg.family, seeds, psi=cfg.truncation_psi, device=device)
        save_grid(images, grid_path, ncol=math.ceil(math.sqrt(len(images))), pad=0, background=0)
        return
    rows = [synthesize(G, cfg.family, seeds, psi=cfg.truncation_psi, device=device, label=label)
            for label in cfg.labels]
    save_grid([img for row in rows for img in row], grid_path, ncol=len(seeds), pad=0, background=0)


def _loop(state: TrainState, cfg: TrainGanConfig, bank: ImageBank, run: tracking.Run, dist: gan_dist.Dist) -> str:
    """Train until total_kimg; returns the sha256 of the last checkpoint written (rank 0)."""
    from acneops.core.progress import progress

    total = round(cfg.total_kimg * 1000)
    tick_nimg, snap_nimg = max(round(cfg.tick_kimg * 1000), 1), max(round(cfg.snapshot_kimg * 1000), 1)
    ticker, tick, sha = Ticker(state.cur_nimg), state.cur_nimg // tick_nimg, ""
    bar = progress(total=cfg.total_kimg, initial=state.cur_nimg / 1000, unit="kimg", disable=not dist.is_main,
                   desc=f"train_gan@{cfg.name}",
                   bar_format="{l_bar}{bar}| {n:.3f}/{total:.3f} kimg [{elapsed}<{remaining}]")
    while state.cur_nimg < total:
        before = state.cur_nimg
        ticker.add(train_step(state, cfg, bank, dist))
        bar.update(min(state.cur_nimg, total) / 1000 - bar.n)
        done = state.cur_nimg >= total
        if done or _crossed(before, state.cur_nimg, tick_nimg):
            tick += 1
            stats, timing = ticker.records(state, tick, dist)
            if dist.is_main:
                append_jsonl(cfg.out_dir / STATS, stats)
                append_jsonl(cfg.out_dir / TIMING, timing)
                write_json(cfg.plots_file, read_jsonl(cfg.out_dir / STATS))
                numeric = {k: v for k, v in {**stats, **timing}.items()
                           if k not in ("tick", "nimg", "step") and v is not None}
                run.log_metrics(numeric, step=state.cur_nimg)
                bar.set_postfix({k: f"{stats[k]:.3g}" for k in ("loss_G", "loss_D", "ada_p")
                                 if stats.get(k) is not None})
        if done or _crossed(before, state.cur_nimg, snap_nimg):
            sha = _snapshot(state, cfg, run, dist, len(bank)) or sha
    bar.close()
    return sha


def write_reports(cfg: TrainGanConfig, cur_nimg: int, num_images: int) -> dict[str, Any]:
    """The DVC metrics file (last tick's figures, kimg, image count) and plots file (every tick)."""
    rows = read_jsonl(cfg.out_dir / STATS)
    last = {k: v for k, v in (rows[-1] if rows else {}).items()
            if k not in ("tick", "step", "nimg", "kimg") and v is not None}
    figures = {**last, "kimg": cur_nimg / 1000, "num_images": num_images}
    write_json(cfg.metrics_file, figures)
    write_json(cfg.plots_file, rows)
    return figures


def _finish(cfg: TrainGanConfig, run: tracking.Run, sha: str, state: TrainState, num_images: int) -> Path:
    final = cfg.out_dir / FINAL
    if (cfg.out_dir / CHECKPOINT).is_file():
        os.replace(cfg.out_dir / CHECKPOINT, final)
    run.set_tags({"checkpoint_path": str(final.resolve()), "checkpoint_sha256": sha or sha256_file(final)})
    write_reports(cfg, state.cur_nimg, num_images)
    return final


def _setup(cfg: TrainGanConfig, dist: gan_dist.Dist) -> ImageBank:
    torch.set_num_threads(cfg.workers or max(1, (os.cpu_count() or 1) // dist.world))
    if dist.is_main:
        write_json(cfg.out_dir / "config.json", cfg.to_dict())  # the resolved config, before training
    if cfg.conditional:  # each image's class index in labels: the column of its one-hot c
        files, classes = labelled_files(cfg.restored_dir, cfg.labels)
        return ImageBank(files, cfg.resolution, classes=classes)
    files = training_files(cfg.restored_dir, cfg.labels, Path(cfg.image_dir) if cfg.image_dir else None)
    return ImageBank(files, cfg.resolution)


def _finished(cfg: TrainGanConfig, resume: dict[str, Any] | None, dist: gan_dist.Dist) -> TrainGanResult | None:
    """The result of an earlier run that already reached total_kimg (nothing to train), else None."""
    final = cfg.out_dir / FINAL
    if resume is None or resume["cur_nimg"] < round(cfg.total_kimg * 1000) or not final.is_file():
        return None
    if dist.is_main and not (cfg.metrics_file.is_file() and cfg.plots_file.is_file()):
        write_reports(cfg, int(resume["cur_nimg"]), int(resume.get("num_images", 0)))
    return TrainGanResult(cfg.name, final, sha256_file(final), int(resume["cur_nimg"]), True,
                          str(resume.get("mlflow_run_id", "")))


def _prepare(cfg: TrainGanConfig, dist: gan_dist.Dist, resume: dict[str, Any] | None) -> TrainState:
    """Fresh state, then the run's own checkpoint (exact resume) or the base checkpoint (transfer)."""
    seed_all(cfg.seed, dist.rank)
    state = build_state(cfg, dist)
    if resume is not None:
        load_state(state, resume)
        if dist.is_main:
            _truncate_logs(cfg.out_dir, state.cur_nimg)
    elif cfg.resume_from:
        fresh = transfer(state, cfg, cfg.resume_from)
        if fresh and dist.is_main:
            print(f"train_gan@{cfg.name}: resume_from {cfg.resume_from} has other class conditioning; loaded the "
                  f"tensors matching by name and shape, freshly initialised: {', '.join(fresh)}")
    return state


def _tracked(cfg: TrainGanConfig, dist: gan_dist.Dist, resume: dict[str, Any] | None):
    """The MLflow run context on rank 0 (resuming the checkpoint's run), a no-op elsewhere."""
    if not dist.is_main:
        return contextlib.nullcontext(tracking.NullRun())
    run_id = (resume or {}).get("mlflow_run_id") or None
    tags = {"family": cfg.family, "resume_from": cfg.resume_from}
    return tracking.start_run("train_gan", cfg.name, cfg.to_dict(), run_id=run_id, tags=tags)


def train(cfg: TrainGanConfig) -> TrainGanResult:
    """Train, resume or confirm finished; see acneops.stages.train_gan for the trail this leaves."""
    dist = gan_dist.init(cfg.device)
    try:
        cfg.batch_gpu(dist.world)
        resume = _resume_point(cfg, dist)
        done = _finished(cfg, resume, dist)
        if done is not None:
            return done
        bank = _setup(cfg, dist)
        state = _prepare(cfg, dist, resume)
        with _tracked(cfg, dist, resume) as run:
            source = Path(cfg.image_dir) if cfg.image_dir else Path(cfg.restored_dir) / "train"
            run.log_dataset(source, "real-train" if not cfg.image_dir else f"images:{source.name}", "training")
            sha = _loop(state, cfg, bank, run, dist)
            final = _finish(cfg, run, sha, state, len(bank)) if dist.is_main else cfg.out_dir / FINAL
        gan_dist.barrier(dist)
        return TrainGanResult(cfg.name, final, sha or sha256_file(final), state.cur_nimg,
                              resume is not None, run.run_id)
    finally:
        gan_dist.shutdown(dist)
