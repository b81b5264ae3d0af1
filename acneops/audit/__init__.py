"""Anonymity audit of a synthetic image set against the real train images its generator saw.

Used by ``synthesize`` (as a filter before export, without the test split) and by ``evaluate`` /
the registry gates (with the frozen real test split, which adds C_T and membership inference).

- near copies: nearest real neighbour of every synthetic image in feature space (a pluggable
  extractor from :mod:`acneops.features.extractors`) and in pixel space (downscaled, per-image
  standardised colour vectors), against flipped and slightly cropped views of the reals too;
  flagged by the rules in :func:`acneops.audit.copies.audit_copies` (authenticity rule of Alaa et
  al. 2022 + a pixel nearest-neighbour ratio test);
- data copying: the C_T statistic of Meehan et al. 2020 (needs the real test split);
- membership inference: ROC-AUC of train vs test by distance to the synthetic set (needs the test split);
- ``reports/audit_<name>.json`` + a PNG of the closest pairs (:func:`write_audit_report`) and
  :func:`filter_copies`, which drops flagged images before export.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from acneops.audit.attacks import data_copying_ct, membership_auc
from acneops.audit.copies import (
    CopyAudit,
    ViewSpec,
    apply_view,
    as_images,
    audit_copies,
    image_at,
    pixel_vectors,
    pixel_views,
    view_specs,
)
from acneops.audit.identity import check_config as check_identity_config
from acneops.core.config import require, to_dict
from acneops.core.errors import AcneopsError
from acneops.metrics.neighbors import nearest_neighbors

__all__ = [
    "AuditConfig", "AuditResult", "CopyAudit", "Kept", "audit_copies",
    "data_copying_ct", "filter_copies", "membership_auc", "nearest_neighbors", "pixel_vectors",
    "run_audit", "write_audit_report",
]

NOT_COMPUTED = "not computed (no test split in this role)"
Images = Sequence[Path] | np.ndarray  # paths, or uint8 (N, H, W, 3)


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """Params section ``audit``."""

    # rule (a), feature space: copy if d(syn, nn real) < ratio * d(nn real, its own nn real); unitless
    authenticity_ratio: float = 1.0
    # rule (a) counts only if pixel d1 < factor * median real-real pixel NN distance; unitless
    authenticity_pixel_factor: float = 0.6
    pixel_size: int = 16  # side of the downscaled pixel vectors, px (vector = size * size * 3)
    pixel_normalize: bool = True  # standardise each pixel vector (brightness / contrast invariant)
    pixel_ratio_threshold: float = 0.5  # rule (b1): copy if d1 / d2 < this (nearest / 2nd distinct real)
    pixel_copy_threshold: float = 0.3  # rule (b2): copy if d1 < this * median real-real pixel NN distance
    check_flips: bool = True  # compare against mirrored reals too (a mirrored copy is a copy)
    crop_scales: tuple[float, ...] = (0.9,)  # pixel views: crops keeping this fraction of each side
    crop_positions: int = 9  # crop anchors per scale: 1 (centre), 5 (+ corners) or 9 (3x3 grid)
    ct_cells: int = 10  # k-means cells on the train features for C_T (capped at the train count)
    ct_min_samples: int = 20  # tau of C_T: cells with fewer synthetic samples are dropped, count
    seed: int = 0  # k-means seed (the only random step)
    max_pairs_png: int = 16  # closest synthetic|real pairs drawn in the report PNG
    png_tile: int = 96  # side of one image in the report PNG, px
    block_size: int = 1024  # query rows per NN search block (memory ~ block * n_real * 12 bytes)
    # identity audit (acneops.audit.identity): dlib's face-recognition ResNet, where real train faces are detectable
    identity: str = "auto"  # auto | always | never; auto: 'not applicable' when faces are not found or told apart
    identity_threshold: str = "auto"  # dlib-space distance below which two faces are one person; auto = calibrated
    identity_min_detected: float = 0.5  # share of real train images with a face dlib finds, needed to apply
    identity_max_same_pairs: float = 0.5  # largest share of real face pairs dlib calls one person (< 0.6) to apply
    identity_same_quantile: float = 0.99  # calibration: quantile of transformed-copy distances the threshold covers
    identity_different_quantile: float = 0.05  # calibration: quantile of nearest-other-real distances (honest flags)
    identity_calibration_faces: int = 32  # real train faces whose transformed copies calibrate the threshold, count
    identity_upsample: int = 1  # dlib detector doublings: 1 finds faces from ~40 px wide, 2 from ~20 px (4x slower)
    identity_bootstrap: int = 1000  # resamples for the 95% interval of the identity membership AUC; 0 = none

    def __post_init__(self) -> None:
        where = "params.yaml [audit]"
        require(self.authenticity_ratio > 0, f"{where}.authenticity_ratio must be > 0, got {self.authenticity_ratio}")
        require(self.authenticity_pixel_factor >= 0, f"{where}.authenticity_pixel_factor must be >= 0")
        require(4 <= self.pixel_size <= 256, f"{where}.pixel_size must be in [4, 256] px, got {self.pixel_size}")
        require(0 < self.pixel_ratio_threshold <= 1, f"{where}.pixel_ratio_threshold must be in (0, 1]")
        require(self.pixel_copy_threshold >= 0, f"{where}.pixel_copy_threshold must be >= 0")
        require(all(0.5 <= c < 1 for c in self.crop_scales), f"{where}.crop_scales must each be in [0.5, 1)")
        require(self.crop_positions in (1, 5, 9), f"{where}.crop_positions must be 1, 5 or 9")
        require(self.ct_cells >= 1, f"{where}.ct_cells must be >= 1, got {self.ct_cells}")
        require(self.ct_min_samples >= 1, f"{where}.ct_min_samples must be >= 1, got {self.ct_min_samples}")
        require(self.max_pairs_png >= 0, f"{where}.max_pairs_png must be >= 0")
        require(16 <= self.png_tile <= 512, f"{where}.png_tile must be in [16, 512] px")
        require(self.block_size >= 1, f"{where}.block_size must be >= 1")
        check_identity_config(self, where)


def _flipped_features(extractor: Any, images: list[Path] | np.ndarray, desc: str, chunk: int = 256) -> np.ndarray:
    """Features of the horizontally flipped images, extracted in chunks to bound memory (one bar: ``desc``)."""
    from acneops.core.progress import progress

    parts = []
    with progress(total=len(images), desc=desc, unit="img", leave=False) as bar:
        for start in range(0, len(images), chunk):
            batch = [np.ascontiguousarray(image_at(images, i)[:, ::-1])
                     for i in range(start, min(start + chunk, len(images)))]
            parts.append(np.asarray(extractor.extract(batch, progress=False), dtype=np.float64))
            bar.update(len(batch))
    return np.concatenate(parts)


def _features(extractor: Any, images: list[Path] | np.ndarray, pixels: np.ndarray, desc: str) -> np.ndarray:
    """Extractor features (a progress bar named ``desc``), or the pixel vectors when ``extractor`` is None."""
    if extractor is None:
        return pixels
    return np.asarray(extractor.extract(images, progress=True, desc=desc), dtype=np.float64)


# ----------------------------------------------------------------------------- audit


@dataclasses.dataclass(frozen=True)
class AuditResult:
    """Everything the audit found; ``to_dict`` is the JSON report."""

    name: str  # audit name: reports/audit_<name>.json
    config: AuditConfig
    feature_space: str  # extractor name ('pixels' when no extractor was given)
    copy: CopyAudit
    synthetic_names: tuple[str, ...]
    real_names: tuple[str, ...]
    n_real_test: int | None  # None: no test split in this role
    data_copying: dict[str, Any]  # C_T in feature space (or {'status': NOT_COMPUTED})
    data_copying_pixel: dict[str, Any]  # C_T in pixel space
    membership: dict[str, Any]  # {'auc_feature', 'auc_pixel'} (or {'status': NOT_COMPUTED})
    timings: dict[str, float]  # seconds per phase
    view_specs: tuple[ViewSpec, ...] = ()  # pixel views of the reals, in CopyAudit.view_names order
    synthetic_images: Any = dataclasses.field(default=None, repr=False, compare=False)  # for the PNG
    real_images: Any = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def flagged_indices(self) -> np.ndarray:
        return self.copy.flagged_indices

    def flagged_records(self) -> list[dict[str, Any]]:
        """One record per flagged synthetic image with its nearest real images and the rules that fired."""
        c = self.copy
        return [
            {
                "index": int(i),
                "synthetic": self.synthetic_names[i],
                "nearest_real_pixel": self.real_names[c.pix_nn_idx[i]],
                "nearest_real_pixel_view": c.view_names[c.pix_nn_view[i]],
                "nearest_real_feature": self.real_names[c.feat_nn_idx[i]],
                "nearest_real_feature_flipped": bool(c.feat_nn_flipped[i]),
                "pixel_distance": float(c.pix_nn_dist[i]),
                "pixel_distance_rel": float(c.pix_rel[i]),
                "pixel_ratio": float(c.pix_ratio[i]),
                "feature_distance": float(c.feat_nn_dist[i]),
                "real_feature_nn_distance": float(c.real_feat_nn_dist[c.feat_nn_idx[i]]),
                "rules": c.rules_of(int(i)),
            }
            for i in c.flagged_indices
        ]

    def to_dict(self) -> dict[str, Any]:
        c, cfg = self.copy, self.config
        return {
            "name": self.name,
            "feature_space": self.feature_space,
            "counts": {
                "synthetic": len(self.synthetic_names),
                "real_train": len(self.real_names),
                "real_test": self.n_real_test,
                "flagged": int(c.flags.sum()),
                "kept": int((~c.flags).sum()),
            },
            "rates": c.rates(),
            "thresholds": {
                **to_dict(cfg),
                "pixel_abs_distance": cfg.pixel_copy_threshold * c.median_real_pix_nn,
                "pixel_close_distance": cfg.authenticity_pixel_factor * c.median_real_pix_nn,
            },
            "reference": {
                "median_real_nn_pixel": c.median_real_pix_nn,
                "median_real_nn_feature": float(np.median(c.real_feat_nn_dist)),
                "median_synthetic_nn_pixel": float(np.median(c.pix_nn_dist)),
                "median_synthetic_nn_feature": float(np.median(c.feat_nn_dist)),
                "median_pixel_ratio": float(np.median(c.pix_ratio)),
            },
            "flagged": self.flagged_records(),
            "data_copying": self.data_copying,
            "data_copying_pixel": self.data_copying_pixel,
            "membership": self.membership,
            "timings_s": self.timings,
        }

    def summary(self) -> str:
        ct = self.data_copying.get("ct")
        auc = self.membership.get("auc_feature")
        return (
            f"audit {self.name}: {int(self.copy.flags.sum())}/{len(self.synthetic_names)} synthetic images flagged "
            f"as near copies of {len(self.real_names)} real train images; "
            f"C_T={'n/a' if ct is None else f'{ct:.2f}'}, membership AUC={'n/a' if auc is None else f'{auc:.3f}'}"
        )


def _names(given: Sequence[str] | None, images: Any, prefix: str) -> tuple[str, ...]:
    if given is not None:
        if len(given) != len(images):
            raise AcneopsError(f"{prefix}: {len(given)} names for {len(images)} images")
        return tuple(str(n) for n in given)
    if isinstance(images, np.ndarray):
        return tuple(f"{prefix}[{i}]" for i in range(len(images)))
    return tuple(str(p) for p in images)


class _Laps:
    """Wall seconds per phase: ``lap(name)`` closes the phase that started at the previous lap.

    Also the audit's progress bar: one step per phase, named ``audit <name>``; ``close()`` ends it.
    """

    def __init__(self, desc: str, phases: int) -> None:
        from acneops.core.progress import progress

        self.seconds: dict[str, float] = {}
        self._clock = time.perf_counter()
        self.desc = desc
        self.bar = progress(total=phases, desc=desc, unit="phase")

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = round(self.seconds.get(phase, 0.0) + now - self._clock, 4)
        self._clock = now
        self.bar.set_postfix_str(f"{phase} done", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _held_out_statistics(
    test: list[Path] | np.ndarray, extractor: Any, cfg: AuditConfig, laps: _Laps,
    syn_f: np.ndarray, train_f: np.ndarray, syn_pix: np.ndarray, train_pix: np.ndarray,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """C_T in feature and pixel space and the membership AUCs, which need the real test split."""
    test_pix = pixel_vectors(test, cfg.pixel_size, cfg.pixel_normalize)
    test_f = _features(extractor, test, test_pix, f"{laps.desc}: features (real test)")
    laps.lap("test_features")
    ct, ct_pix = data_copying_ct(syn_f, train_f, test_f, cfg), data_copying_ct(syn_pix, train_pix, test_pix, cfg)
    laps.lap("data_copying")
    membership = {
        "auc_feature": membership_auc(train_f, test_f, syn_f, cfg.block_size),
        "auc_pixel": membership_auc(train_pix, test_pix, syn_pix, cfg.block_size),
    }
    laps.lap("membership")
    return ct, ct_pix, membership


def run_audit(
    synthetic: Images,
    real_train: Images,
    cfg: AuditConfig,
    extractor: Any,
    real_test: Images | None = None,
    *,
    name: str = "audit",
    synthetic_names: Sequence[str] | None = None,
    real_names: Sequence[str] | None = None,
) -> AuditResult:
    """Audit ``synthetic`` against ``real_train`` (paths or uint8 (N, H, W, 3) arrays).

    ``extractor`` has ``extract(images, progress=..., desc=...) -> (N, D)`` (``acneops.features.extractors``);
    None uses the pixel vectors as features. Without ``real_test`` (the synthesize stage may not read
    the test split) C_T and membership inference are reported as not computed. Progress: a bar
    ``audit <name>`` over the phases and one per feature extraction, on stderr (:mod:`acneops.core.progress`).
    """
    syn = as_images(synthetic, "synthetic images")
    train = as_images(real_train, "real train images")
    if len(train) < 2:
        raise AcneopsError(f"real train images: the audit needs at least 2, got {len(train)}")
    test = None if real_test is None else as_images(real_test, "real test images")
    syn_names, train_names = _names(synthetic_names, syn, "synthetic"), _names(real_names, train, "train")
    laps = _Laps(f"audit {name}", phases=3 if test is None else 6)
    specs = view_specs(cfg.crop_scales, cfg.crop_positions, cfg.check_flips)
    syn_pix = pixel_vectors(syn, cfg.pixel_size, cfg.pixel_normalize)
    train_views = pixel_views(train, cfg.pixel_size, specs, cfg.pixel_normalize)
    train_pix = train_views[0]
    laps.lap("pixel_vectors")
    desc = f"audit {name}: features"
    syn_f = _features(extractor, syn, syn_pix, f"{desc} (synthetic)")
    train_f = _features(extractor, train, train_pix, f"{desc} (real train)")
    train_f_flip = None
    if cfg.check_flips:
        train_f_flip = (train_views[1] if extractor is None
                        else _flipped_features(extractor, train, f"{desc} (real train, mirrored)"))
    laps.lap("features")
    copy = audit_copies(syn_f, train_f, syn_pix, train_pix, cfg, real_feats_flipped=train_f_flip,
                        real_pixel_views=train_views[1:], view_names=[v.name for v in specs])
    laps.lap("copies")
    ct = ct_pix = membership = {"status": NOT_COMPUTED}
    if test is not None:
        ct, ct_pix, membership = _held_out_statistics(test, extractor, cfg, laps, syn_f, train_f, syn_pix, train_pix)
    laps.close()
    return AuditResult(
        name=name, config=cfg,
        feature_space="pixels" if extractor is None else str(getattr(extractor, "name", type(extractor).__name__)),
        copy=copy, synthetic_names=syn_names, real_names=train_names,
        n_real_test=None if test is None else len(test),
        data_copying=ct, data_copying_pixel=ct_pix, membership=membership, timings=laps.seconds,
        view_specs=specs, synthetic_images=syn, real_images=train,
    )


# ----------------------------------------------------------------------------- report and filter


def _pairs_png(result: AuditResult) -> Any:
    """PIL image of the closest pairs (synthetic | nearest real in pixels, mirrored if matched mirrored)."""
    from PIL import Image, ImageDraw

    c, cfg, tile = result.copy, result.config, result.config.png_tile
    order = np.lexsort((np.arange(len(c.flags)), c.pix_rel, ~c.flags))[: cfg.max_pairs_png]  # flagged first
    cols = max(1, min(4, len(order)))
    rows = max(1, -(-len(order) // cols))
    cell_w, cell_h = 2 * tile + 12, tile + 28
    canvas = Image.new("RGB", (cols * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if result.synthetic_images is None or result.real_images is None or len(order) == 0:
        draw.text((4, 4), "no pairs to show", fill=(0, 0, 0))
        return canvas
    for k, i in enumerate(order):
        x0, y0 = (k % cols) * cell_w, (k // cols) * cell_h
        j = int(c.pix_nn_idx[i])
        real = image_at(result.real_images, j)
        view = c.view_names[c.pix_nn_view[i]]
        if result.view_specs:
            real = apply_view(real, result.view_specs[c.pix_nn_view[i]])
        for dx, arr in ((0, image_at(result.synthetic_images, int(i))), (tile + 4, real)):
            small = Image.fromarray(np.ascontiguousarray(arr)).resize((tile, tile), Image.BILINEAR)
            canvas.paste(small, (x0 + dx, y0))
        draw.text((x0, y0 + tile + 2), f"#{int(i)} {'COPY' if c.flags[i] else 'ok'} {view}",
                  fill=(200, 0, 0) if c.flags[i] else (0, 110, 0))
        draw.text((x0, y0 + tile + 14), f"d/med={c.pix_rel[i]:.2f} d1/d2={c.pix_ratio[i]:.2f}", fill=(0, 0, 0))
    return canvas


def write_audit_report(result: AuditResult, json_path: str | Path, png_path: str | Path) -> dict[str, Any]:
    """Write the JSON report and the PNG of the closest synthetic|real pairs (both atomically); return the dict.

    The PNG shows up to ``max_pairs_png`` pairs, flagged ones first, then the closest unflagged ones
    so a reviewer also sees what "not a copy" looked like.
    """
    from acneops.core.io import save_png, write_json

    report = result.to_dict()
    report["pairs_png"] = Path(png_path).name
    save_png(png_path, _pairs_png(result))
    write_json(json_path, report)
    return report


class Kept(NamedTuple):
    """What survives the anonymity filter."""

    indices: np.ndarray  # (K,) indices of the kept synthetic images, ascending
    items: list[Path] | np.ndarray  # the kept paths (list) or images (array)


def filter_copies(synthetic: Images, result: AuditResult) -> Kept:
    """Drop the synthetic images ``result`` flagged as near copies; keep order.

    ``synthetic`` must be the set that was audited: same length and, for paths, the same names
    (a different list would silently export unaudited images).
    """
    n = len(result.synthetic_names)
    if len(synthetic) != n:
        raise AcneopsError(f"filter_copies: got {len(synthetic)} synthetic images but the audit covered {n}")
    audited = result.synthetic_images
    if not isinstance(synthetic, np.ndarray) and audited is not None and not isinstance(audited, np.ndarray):
        for i, (p, q) in enumerate(zip(synthetic, audited)):
            if Path(p) != Path(q):
                raise AcneopsError(
                    f"filter_copies: image {i} is {p} but the audit saw {q}; filter the exact list that was audited"
                )
    keep = np.flatnonzero(~result.copy.flags)
    items = synthetic[keep] if isinstance(synthetic, np.ndarray) else [Path(synthetic[i]) for i in keep]
    return Kept(indices=keep, items=items)
