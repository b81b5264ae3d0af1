"""Restore's domain logic: bring every ingested image to the GAN resolution (centre square, or the FFHQ-aligned
face when alignment is on; LANCZOS or the learned super-resolution net for small images), strip metadata, and
measure the restorers on held-out images.

With alignment on (acneops.faces.align, needs ``acneops[faces]``), a photo in which dlib finds no face is
quarantined: not written, listed with its reason, never replaced by a silent centre crop.

The `restore` stage (acneops.stages.restore) builds :class:`RestoreConfig` from params and calls these."""

from __future__ import annotations

import dataclasses
import io
import multiprocessing
import os
import random
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from acneops.core.config import require
from acneops.core.errors import StageError
from acneops.core.io import read_csv, read_json, sha256_bytes, write_csv, write_json
from acneops.core.paths import (
    DATA_DIR,
    INGEST_DIR,
    MODELS_DIR,
    REPORTS_DIR,
    RESTORED_DIR,
)
from acneops.data.access import MANIFEST, SPLITS, check_access

RESTORERS = ("lanczos", "sr")


SPLIT_FIELDS = ["file", "label", "lesions", "source", "split", "restorer", "orig_sha256", "group", "resize", "sha256"]


@dataclasses.dataclass(frozen=True)
class RestoreConfig:
    """Params section ``restore``."""

    ingest_dir: Path = INGEST_DIR  # manifest.csv + contract.json from ingest
    data_dir: Path = DATA_DIR  # raw images (manifest paths are relative to it)
    out_dir: Path = RESTORED_DIR  # <split>/images/*.png + <split>/manifest.csv
    report_path: Path = REPORTS_DIR / "restore.json"  # counts + PSNR/SSIM of both restorers
    sr_dir: Path = MODELS_DIR / "sr"  # sr.pt checkpoint + sr.json
    resolution: int = 32  # px, side of every restored image (GAN resolution; the paper uses 1024)
    restorer: str = "sr"  # lanczos | sr: how images smaller than resolution are enlarged
    compare_restorers: bool = True  # train sr and measure both restorers even when restorer is lanczos
    holdout_fraction: float = 0.2  # share of high-res train images held out to measure the restorers
    sr_scale: int = 2  # shrink factor of sr training pairs and of the held-out measurement
    sr_steps: int = 300  # sr optimiser steps
    sr_batch: int = 16  # patches per sr step
    sr_patch: int = 32  # px, sr training patch side (multiple of sr_scale, <= resolution)
    sr_channels: int = 32  # sr feature channels
    sr_blocks: int = 4  # sr residual blocks
    sr_lr: float = 1e-3  # sr Adam learning rate (cosine-decayed)
    seed: int = 0  # holdout choice + sr init and patch sampling
    workers: int = 0  # processes for decode/resize/write; 0 = all cores
    align: Literal["auto", True, False] = "auto"  # FFHQ face alignment on dlib's 68 landmarks (acneops[faces]);
    # auto = on when base_generator is an NVIDIA import (acneops.stages.restore.align_decision)
    base_generator: str = ""  # checkpoint the GAN hierarchy starts from ("" = none); only read by align: auto
    align_detect_size: int = 1024  # px, longest side of the copy of each photo the face detector sees
    align_upsample: int = 1  # times the detector doubles that copy (1 finds faces down to ~40 px wide there)

    def __post_init__(self) -> None:
        require(self.restorer in RESTORERS, f"restore.restorer: {self.restorer!r} must be one of {RESTORERS}")
        require(self.resolution >= 16, f"restore.resolution: {self.resolution} must be >= 16 px")
        require(0 < self.holdout_fraction < 1, f"restore.holdout_fraction: {self.holdout_fraction} not in (0, 1)")
        require(self.sr_scale >= 2, f"restore.sr_scale: {self.sr_scale} must be >= 2")
        require(self.sr_patch % self.sr_scale == 0 and self.sr_scale < self.sr_patch <= self.resolution,
                f"restore.sr_patch: {self.sr_patch} must be a multiple of sr_scale {self.sr_scale} "
                f"and at most resolution {self.resolution}")
        require(self.resolution // self.sr_scale >= 1, "restore: resolution // sr_scale must be >= 1")
        for key in ("sr_steps", "sr_batch", "sr_channels", "sr_blocks"):
            require(getattr(self, key) >= 1, f"restore.{key}: {getattr(self, key)} must be >= 1")
        require(self.sr_lr > 0, f"restore.sr_lr: {self.sr_lr} must be > 0")
        require(self.workers >= 0, f"restore.workers: {self.workers} must be >= 0 (0 = all cores)")
        require(self.align == "auto" or isinstance(self.align, bool),
                f"restore.align: {self.align!r} must be auto, true or false")
        require(self.align_detect_size >= 64, f"restore.align_detect_size: {self.align_detect_size} must be >= 64 px")
        require(0 <= self.align_upsample <= 3, f"restore.align_upsample: {self.align_upsample} must be 0..3")

    def sr_settings(self) -> Any:
        from acneops.data.sr import SRSettings

        return SRSettings(steps=self.sr_steps, batch=self.sr_batch, patch=self.sr_patch, scale=self.sr_scale,
                          channels=self.sr_channels, blocks=self.sr_blocks, lr=self.sr_lr, seed=self.seed)


def _load_ingest(cfg: RestoreConfig) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The ingest manifest and contract; the frozen test split must still match the contract."""
    manifest, contract_path = cfg.ingest_dir / "manifest.csv", cfg.ingest_dir / "contract.json"
    if not manifest.is_file() or not contract_path.is_file():
        raise StageError(f"{cfg.ingest_dir}: manifest.csv/contract.json missing; run the ingest stage first "
                         "(`dvc repro ingest`)")
    rows, contract = read_csv(manifest), read_json(contract_path)
    test = sorted(r["sha256"] for r in rows if r["split"] == "test")
    if test != contract.get("test_sha256"):
        raise StageError(f"{manifest}: its test rows differ from the frozen test split in {contract_path}; "
                         "the manifest was edited after ingest — re-run ingest, never edit the test split by hand")
    for split in SPLITS:
        check_access("restore", split)
    return rows, contract


@lru_cache(maxsize=2)
def _sr_model(checkpoint: str) -> Any:
    from acneops.data.sr import load_sr

    return load_sr(checkpoint)


def _restore_one(task: dict[str, Any]) -> dict[str, Any]:
    """Worker: check the source bytes, decode, square-crop (or align the face), resize/restore, write the PNG."""
    from acneops.core.io import save_png
    from acneops.data.decode import ImageRejected, centre_square, open_normalised, resize_lanczos

    data = Path(task["src"]).read_bytes()
    if sha256_bytes(data) != task["orig_sha256"]:
        return {"error": f"{task['src']} changed since ingest (sha256 differs); re-run ingest (`dvc repro`)"}
    res = task["resolution"]
    draft = None if task["align"] else (2 * res, 2 * res)  # the aligner reads the face at full detail
    try:
        image = open_normalised(io.BytesIO(data), draft_size=draft, max_pixels=task["max_pixels"])
    except ImageRejected as exc:
        return {"error": f"{task['src']}: {exc.reason} (it passed ingest; re-run ingest)"}
    if task["align"]:
        return _restore_aligned(task, image)
    image = centre_square(image)
    side = image.width
    if side > res:
        image, resize = resize_lanczos(image, res), "down"
    elif side < res:
        image, resize = _enlarge(task, image), "up"
    else:
        resize = "none"
    return {"sha256": save_png(task["dst"], image), "resize": resize}


def _enlarge(task: dict[str, Any], image: Any) -> Any:
    """``image`` (smaller than the resolution) enlarged by the configured restorer."""
    from acneops.data.decode import resize_lanczos

    if task["restorer"] == "sr":
        from acneops.data.sr import sr_upscale

        return sr_upscale(_sr_model(task["checkpoint"]), image, task["resolution"])
    return resize_lanczos(image, task["resolution"])


def _restore_aligned(task: dict[str, Any], image: Any) -> dict[str, Any]:
    """Worker, alignment on: the FFHQ crop of the face, enlarged by the restorer when the face is smaller than
    the resolution; no face = a quarantine entry (never a centre crop). A small face waits for the sr pass
    (``defer``) when sr is the restorer and not trained yet."""
    import numpy as np
    from PIL import Image

    from acneops.core.io import save_png
    from acneops.faces.align import align_face

    res, spec = task["resolution"], task["align"]
    found = align_face(np.asarray(image), res, detect_size=spec["detect_size"], upsample=spec["upsample"],
                       native_if_smaller=True)
    if found is None:
        return {"quarantine": f"no face found by dlib's detector at upsample {spec['upsample']} (the photo seen "
                              f"at a longest side of at most {spec['detect_size']} px)"}
    crop = Image.fromarray(found.image)
    if crop.width < res and task["restorer"] == "sr" and task["checkpoint"] is None:
        return {"defer": True}
    crop, resize = (_enlarge(task, crop), "up") if crop.width < res else (crop, "down")
    record = {"score": round(found.score, 4), "qsize_px": round(found.qsize, 1), "angle_deg": round(found.angle_deg, 2)}
    record.update({f"quad_{a}{i}": round(float(v), 1) for i, xy in enumerate(found.quad) for a, v in zip("xy", xy)})
    return {"sha256": save_png(task["dst"], crop), "resize": resize, "align": record}


def _run_tasks(tasks: list[dict[str, Any]], workers: int, desc: str) -> list[dict[str, Any]]:
    """Run ``_restore_one`` over tasks (processes when workers > 1); results in task order.

    Workers start with forkserver, not fork: forking a process whose torch/OpenMP threads already
    ran (after sr training) can deadlock the children.
    """
    from acneops.core.progress import progress
    from acneops.data.decode import cpu_workers

    workers = min(cpu_workers(workers), max(1, len(tasks)))
    bar = dict(total=len(tasks), desc=desc, unit="img")
    if workers == 1:
        results = [_restore_one(t) for t in progress(tasks, **bar)]
    else:
        ctx = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            results = list(progress(pool.map(_restore_one, tasks, chunksize=max(1, len(tasks) // (workers * 8))), **bar))
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise StageError(f"restore: {len(errors)} image(s) failed, first: {errors[0]}")
    return results


def _task(cfg: RestoreConfig, row: dict[str, str], stage_dir: Path, max_pixels: int, checkpoint: str | None,
          align: bool) -> dict[str, Any]:
    file = f"images/{row['sha256'][:16]}.png"
    return {"src": str((cfg.data_dir / row["image"]).resolve()), "orig_sha256": row["sha256"], "file": file,
            "dst": str((stage_dir / row["split"] / file).resolve()), "resolution": cfg.resolution,
            "restorer": cfg.restorer, "checkpoint": checkpoint, "max_pixels": max_pixels,
            "align": {"detect_size": cfg.align_detect_size, "upsample": cfg.align_upsample} if align else None}


def _swap_in(stage_dir: Path, out_dir: Path) -> None:
    """Move each finished split folder into ``out_dir``, replacing the old one (never half a split)."""
    for split in SPLITS:
        final = out_dir / split
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".old-{split}-", dir=out_dir))
            os.replace(final, old / split)
        os.replace(stage_dir / split, final)
        if old is not None:
            shutil.rmtree(old)


def _clean_stale(out_dir: Path) -> None:
    """Remove temporary folders a killed earlier run left behind."""
    for p in out_dir.glob(".tmp-restore-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in out_dir.glob(".old-*"):
        shutil.rmtree(p, ignore_errors=True)


def _holdout_split(rows: list[dict[str, str]], fraction: float, seed: int) -> tuple[list, list]:
    """(sr training rows, held-out rows) of the high-res train rows, chosen with ``seed``."""
    ordered = sorted(rows, key=lambda r: r["sha256"])
    k = max(1, int(round(fraction * len(ordered))))
    held = set(random.Random(f"restore-holdout:{seed}").sample(range(len(ordered)), k))
    return [r for i, r in enumerate(ordered) if i not in held], [r for i, r in enumerate(ordered) if i in held]


def _train_and_compare(cfg: RestoreConfig, hr_train: list[dict[str, str]], stage_dir: Path) -> tuple[str, dict]:
    """Train sr on high-res train images, measure both restorers on held-out ones; (checkpoint, comparison)."""
    from PIL import Image

    from acneops.data import sr
    from acneops.data.decode import read_rgb

    train_rows, held_rows = _holdout_split(hr_train, cfg.holdout_fraction, cfg.seed)

    def pixels(r: dict[str, str]) -> Image.Image:  # the restored (res x res) high-res image
        return read_rgb(stage_dir / "train" / f"images/{r['sha256'][:16]}.png")

    settings = cfg.sr_settings()
    model, opt, losses = sr.train_sr([pixels(r) for r in train_rows], settings)
    checkpoint = cfg.sr_dir / "sr.pt"
    sr.save_checkpoint(checkpoint, model, opt, settings, {
        "train_sha256": sorted(r["sha256"] for r in train_rows),
        "holdout_sha256": sorted(r["sha256"] for r in held_rows),
        "resolution": cfg.resolution,
    })
    _sr_model.cache_clear()
    comparison = sr.compare_restorers(model, [pixels(r) for r in held_rows], cfg.sr_scale)
    comparison["sr_train"] = {"images": len(train_rows), "steps": len(losses),
                              "loss_first": losses[0], "loss_last": losses[-1]}
    return str(checkpoint), comparison


def _maybe_train_sr(cfg: RestoreConfig, rows: list[dict[str, str]], stage_dir: Path) -> tuple[str | None, dict]:
    """Train and measure sr when configured; explain clearly when it cannot be trained."""
    wanted = cfg.restorer == "sr" or cfg.compare_restorers
    hr_train = [r for r in rows if r["split"] == "train" and min(int(r["width"]), int(r["height"])) >= cfg.resolution]
    if not wanted:
        info: dict[str, Any] = {"skipped": "restorer is lanczos and compare_restorers is false"}
    elif len(hr_train) < 2:
        info = {"skipped": f"{len(hr_train)} high-res train image(s) (>= {cfg.resolution} px); sr needs at least 2"}
        if cfg.restorer == "sr":
            raise StageError(f"restore: restorer 'sr' needs high-res train images to learn from, but {info['skipped']};"
                             " set restore.restorer: lanczos or add high-resolution images")
    else:
        checkpoint, info = _train_and_compare(cfg, hr_train, stage_dir)
        # sr.json names the checkpoint as params do (relative to the repository): a DVC output must not depend on
        # where the repository is cloned; the workers get the absolute path
        write_json(cfg.sr_dir / "sr.json", {"trained": True, "checkpoint": checkpoint, **info})
        return str(Path(checkpoint).resolve()), info
    write_json(cfg.sr_dir / "sr.json", {"trained": False, **info})
    return None, info


def _write_manifests(cfg: RestoreConfig, rows: list[dict[str, str]], results: dict[str, dict],
                     stage_dir: Path) -> dict[str, dict[str, int]]:
    """Write <split>/manifest.csv in the staging folder (every split, even an empty one)."""
    counts = {}
    for split in SPLITS:
        out = []
        for r in (r for r in rows if r["split"] == split):
            res = results[r["image"]]
            out.append({"file": f"images/{r['sha256'][:16]}.png", "label": r["label"], "lesions": r["lesions"],
                        "source": r["source"], "split": split,
                        "restorer": cfg.restorer if res["resize"] == "up" else "none",
                        "orig_sha256": r["sha256"], "group": r["group"], "resize": res["resize"],
                        "sha256": res["sha256"]})
        (stage_dir / split / "images").mkdir(parents=True, exist_ok=True)
        write_csv(stage_dir / split / MANIFEST, out, SPLIT_FIELDS)
        counts[split] = {k: sum(1 for o in out if o["resize"] == v)
                         for k, v in (("downscaled", "down"), ("upscaled", "up"), ("kept", "none"))}
    return counts


def _quarantine(cfg: RestoreConfig, rows: list[dict[str, str]], results: dict[str, dict]) -> list[dict[str, str]]:
    """The quarantine entries (id, split, class, reason) in manifest order. A split/class whose every image is
    quarantined is a StageError: the class would silently vanish from the restored data."""
    entries = [{"id": r["sha256"][:16], "split": r["split"], "class": r["label"],
                "reason": results[r["image"]]["quarantine"]} for r in rows if "quarantine" in results[r["image"]]]
    for split, label in sorted({(e["split"], e["class"]) for e in entries}):
        lost = [e for e in entries if e["split"] == split and e["class"] == label]
        if len(lost) == sum(1 for r in rows if r["split"] == split and r["label"] == label):
            ids = ", ".join(e["id"] for e in lost[:5]) + (", ..." if len(lost) > 5 else "")
            raise StageError(
                f"restore: all {len(lost)} image(s) of split '{split}', class '{label}' were quarantined "
                f"({lost[0]['reason']}); ids {ids} (first 16 hex digits of the sha256 column of "
                f"{cfg.ingest_dir / 'manifest.csv'}). Check that those photos show a frontal face, raise "
                "restore.align_upsample to find smaller faces, or set restore.align: false (centre crop)")
    return entries


def _write_alignments(rows: list[dict[str, str]], results: dict[str, dict], stage_dir: Path) -> None:
    """Write <split>/align.csv: per restored image the detector score, the quad (input px) and its angle."""
    for split in SPLITS:
        out = [{"file": f"images/{r['sha256'][:16]}.png", **results[r["image"]]["align"]}
               for r in rows if r["split"] == split]
        fields = ["file", "score", "qsize_px", "angle_deg"] + [f"quad_{a}{i}" for i in range(4) for a in "xy"]
        write_csv(stage_dir / split / "align.csv", out, fields)


def restore_dataset(cfg: RestoreConfig, align: bool = False
                    ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, str]]]:
    """Restore every ingested image to ``resolution`` into ``out_dir`` (split folders swapped in at once);
    return (images per split and restorer, the restorer comparison, the quarantined images).

    ``align``: FFHQ-align each face (acneops.faces.align) instead of the centre square; images without a face
    are quarantined (counted per split, listed with the reason) and the rest get <split>/align.csv.
    """
    rows, contract = _load_ingest(cfg)
    max_pixels = int(contract.get("max_pixels", 64_000_000))
    if align:  # the missing extra is one clear error here, not one per worker
        from acneops.faces import models

        models.dlib_module()
        models.model_path("landmarks68")
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    _clean_stale(cfg.out_dir)
    stage_dir = Path(tempfile.mkdtemp(prefix=".tmp-restore-", dir=cfg.out_dir))
    try:
        big = [r for r in rows if min(int(r["width"]), int(r["height"])) >= cfg.resolution]
        small = [r for r in rows if min(int(r["width"]), int(r["height"])) < cfg.resolution]
        results = dict(zip((r["image"] for r in big), _run_tasks(
            [_task(cfg, r, stage_dir, max_pixels, None, align) for r in big], cfg.workers, "restore: shrink")))
        small += [r for r in big if results[r["image"]].get("defer")]  # aligned faces smaller than resolution
        written = [r for r in rows if "sha256" in results.get(r["image"], {})]
        checkpoint, comparison = _maybe_train_sr(cfg, written, stage_dir)
        results.update(zip((r["image"] for r in small), _run_tasks(
            [_task(cfg, r, stage_dir, max_pixels, checkpoint, align) for r in small], cfg.workers,
            "restore: enlarge")))
        quarantined = _quarantine(cfg, rows, results)
        kept = [r for r in rows if "sha256" in results[r["image"]]]
        counts = _write_manifests(cfg, kept, results, stage_dir)
        if align:
            _write_alignments(kept, results, stage_dir)
            for split in SPLITS:
                counts[split]["quarantined"] = sum(1 for e in quarantined if e["split"] == split)
        _swap_in(stage_dir, cfg.out_dir)
    finally:
        shutil.rmtree(stage_dir, ignore_errors=True)
    return counts, comparison, quarantined
