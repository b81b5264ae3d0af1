"""Near-copy detection: pixel vectors of images and their views, and the rules that flag a copy.

The rules combine the authenticity rule of Alaa et al. 2022, "How Faithful is your Synthetic Data?
Sample-level Metrics for Evaluating and Auditing Generative Models" (ICML), in feature space with a
nearest-neighbour ratio test in pixel space (Lowe's ratio test turned to memorisation: a copy is
much closer to its source than to any other real image). Pixel comparisons run against *views* of
every real image — horizontal flip, small crops resized back, and their flips — so a mirrored or
slightly cropped copy still matches its source.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from acneops.audit.attacks import _same_dim, flip_pixel_vectors
from acneops.core.errors import AcneopsError
from acneops.data.decode import read_rgb
from acneops.metrics.neighbors import as_matrix, nearest_neighbors

# crop anchors (fy, fx) as fractions of the free margin: 0 = top/left, 1 = bottom/right
CROP_ANCHORS = {
    1: ((0.5, 0.5),),
    5: ((0.5, 0.5), (0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)),
    9: tuple((fy, fx) for fy in (0.0, 0.5, 1.0) for fx in (0.0, 0.5, 1.0)),
}


class ViewSpec(NamedTuple):
    """One view of a real image: crop ``scale`` of each side at anchor (fy, fx), resized back, maybe mirrored."""

    scale: float  # kept fraction of each side (1.0 = whole image)
    fy: float  # vertical anchor of the crop in the free margin, 0..1
    fx: float  # horizontal anchor, 0..1
    flip: bool  # mirrored left-right after cropping

    @property
    def name(self) -> str:
        base = "full" if self.scale >= 1.0 else f"crop{self.scale:.2f}@{self.fy:.1f},{self.fx:.1f}"
        return base + ("+flip" if self.flip else "")

    def box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The crop box (left, top, right, bottom) in pixels of a width x height image."""
        w, h = width * self.scale, height * self.scale
        left, top = (width - w) * self.fx, (height - h) * self.fy
        return (left, top, left + w, top + h)


def view_specs(crop_scales: Sequence[float], crop_positions: int, check_flips: bool) -> tuple[ViewSpec, ...]:
    """All views compared against, the identity first: full image and crops, each also mirrored if flips."""
    if crop_positions not in CROP_ANCHORS:
        raise AcneopsError(f"crop_positions must be one of {sorted(CROP_ANCHORS)}, got {crop_positions}")
    bases = [ViewSpec(1.0, 0.5, 0.5, False)]
    bases += [ViewSpec(float(s), fy, fx, False) for s in crop_scales for fy, fx in CROP_ANCHORS[crop_positions]]
    specs = []
    for b in bases:
        specs.append(b)
        if check_flips:
            specs.append(b._replace(flip=True))
    return tuple(specs)


def as_images(x: Any, what: str) -> list[Path] | np.ndarray:
    """Validate an image set: a non-empty uint8 (N, H, W, 3) array or a list of existing files."""
    if isinstance(x, np.ndarray):
        if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
            raise AcneopsError(f"{what}: expected a uint8 array (N, H, W, 3), got {x.dtype} {x.shape}")
        if x.shape[0] == 0:
            raise AcneopsError(f"{what}: the set is empty; nothing to audit")
        return x
    if isinstance(x, (str, Path)):
        raise AcneopsError(f"{what}: got a single path {x!r}; pass a list of image files")
    paths = [Path(p) for p in x]
    if not paths:
        raise AcneopsError(f"{what}: the set is empty; nothing to audit")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise AcneopsError(f"{what}: {len(missing)} file(s) not found, first: {missing[0]}")
    return paths


def image_at(images: list[Path] | np.ndarray, i: int) -> np.ndarray:
    """Image ``i`` of a validated set as uint8 (H, W, 3)."""
    return images[i] if isinstance(images, np.ndarray) else np.asarray(read_rgb(images[i]))


def apply_view(image: np.ndarray, spec: ViewSpec, size: int | None = None) -> np.ndarray:
    """``image`` (H, W, 3) seen through ``spec``, resized to size x size (default: its own size)."""
    from PIL import Image

    h, w = image.shape[:2]
    out = Image.fromarray(np.ascontiguousarray(image)).resize(
        (size or w, size or h), Image.BILINEAR, box=spec.box(w, h))
    arr = np.asarray(out)
    return np.ascontiguousarray(arr[:, ::-1]) if spec.flip else arr


def _vector(small: np.ndarray, normalize: bool) -> np.ndarray:
    v = small.astype(np.float32) / 255.0
    if normalize:
        v = v - v.mean(axis=(0, 1), keepdims=True)
        v = v / (v.std() + 1e-2)
    return v.reshape(-1)


def pixel_views(
    images_or_paths: Any, size: int, specs: Sequence[ViewSpec], normalize: bool = True
) -> list[np.ndarray]:
    """One (N, size*size*3) float32 array per view in ``specs``: downscaled (antialiased bilinear) HWC colour.

    With ``normalize`` each vector has its per-channel mean removed and is divided by its standard
    deviation, so a brightness or contrast change of a real image stays close to it in L2.
    """
    images = as_images(images_or_paths, "images")
    out = [np.empty((len(images), size * size * 3), dtype=np.float32) for _ in specs]
    unflipped = {s._replace(flip=False) for s in specs}
    for i in range(len(images)):
        img = image_at(images, i)
        small = {u: apply_view(img, u, size) for u in unflipped}
        for k, spec in enumerate(specs):
            s = small[spec._replace(flip=False)]
            out[k][i] = _vector(s[:, ::-1] if spec.flip else s, normalize)
    return out


def pixel_vectors(images_or_paths: Any, size: int, normalize: bool = True) -> np.ndarray:
    """(N, size*size*3) float32 pixel vectors of the whole images (see :func:`pixel_views`)."""
    return pixel_views(images_or_paths, size, (ViewSpec(1.0, 0.5, 0.5, False),), normalize)[0]


@dataclasses.dataclass(frozen=True)
class CopyAudit:
    """Per-synthetic-image nearest real neighbours, the rules that fired, and the real-real references."""

    flags: np.ndarray  # (S,) bool: near copy (the combined rule, see audit_copies)
    rule_authenticity: np.ndarray  # (S,) bool: Alaa et al. rule (a) in feature space
    rule_pixel_ratio: np.ndarray  # (S,) bool: d1/d2 < pixel_ratio_threshold (pixel space)
    rule_pixel_abs: np.ndarray  # (S,) bool: d1 < pixel_copy_threshold * median real-real pixel NN distance
    pixel_close: np.ndarray  # (S,) bool: d1 < authenticity_pixel_factor * median real-real pixel NN distance
    feat_nn_idx: np.ndarray  # (S,) nearest real (feature space)
    feat_nn_dist: np.ndarray  # (S,) its distance
    feat_nn_flipped: np.ndarray  # (S,) bool: matched the mirrored real
    pix_nn_idx: np.ndarray  # (S,) nearest real (pixel space, closest view)
    pix_nn_dist: np.ndarray  # (S,) d1
    pix_nn2_dist: np.ndarray  # (S,) d2: distance to the second-nearest distinct real
    pix_nn_view: np.ndarray  # (S,) index into view_names of the matching view of the nearest real
    view_names: tuple[str, ...]  # pixel views compared against, identity first
    real_feat_nn_dist: np.ndarray  # (N,) leave-one-out real-real NN distance, feature space
    real_pix_nn_dist: np.ndarray  # (N,) leave-one-out real-real NN distance, pixel space
    median_real_pix_nn: float  # median of real_pix_nn_dist: the pixel distance unit of the rules

    @property
    def pix_ratio(self) -> np.ndarray:
        """(S,) d1/d2 in pixel space (0 for an exact copy, ~1 for an honest sample)."""
        return self.pix_nn_dist / np.maximum(self.pix_nn2_dist, 1e-12)

    @property
    def pix_rel(self) -> np.ndarray:
        """(S,) d1 divided by the median real-real pixel NN distance."""
        return self.pix_nn_dist / max(self.median_real_pix_nn, 1e-12)

    @property
    def flagged_indices(self) -> np.ndarray:
        return np.flatnonzero(self.flags)

    def rates(self) -> dict[str, float]:
        """Share of synthetic images flagged by each rule and by the combined flag."""
        return {
            "flagged": float(self.flags.mean()),
            "authenticity": float(self.rule_authenticity.mean()),
            "pixel_ratio": float(self.rule_pixel_ratio.mean()),
            "pixel_abs": float(self.rule_pixel_abs.mean()),
            "authenticity_and_pixel_close": float((self.rule_authenticity & self.pixel_close).mean()),
        }

    def rules_of(self, i: int) -> list[str]:
        """Names of the rules that fired for synthetic image ``i``."""
        fired = {
            "pixel_ratio": self.rule_pixel_ratio[i],
            "pixel_abs": self.rule_pixel_abs[i],
            "authenticity_and_pixel_close": self.rule_authenticity[i] and self.pixel_close[i],
        }
        return [name for name, on in fired.items() if on]


def _check_inputs(syn_feats: Any, real_feats: Any, syn_pixels: Any, real_pixels: Any) -> tuple[np.ndarray, ...]:
    """The four matrices, validated: finite, matching dimensions and image counts, >= 2 reals."""
    syn_f, real_f = as_matrix(syn_feats, "synthetic features"), as_matrix(real_feats, "real features", 2)
    syn_p = as_matrix(syn_pixels, "synthetic pixel vectors", dtype=np.float32)
    real_p = as_matrix(real_pixels, "real pixel vectors", 2, dtype=np.float32)
    _same_dim(syn_f, real_f, "synthetic features", "real features")
    _same_dim(syn_p, real_p, "synthetic pixel vectors", "real pixel vectors")
    if syn_f.shape[0] != syn_p.shape[0] or real_f.shape[0] != real_p.shape[0]:
        raise AcneopsError(
            f"features and pixel vectors disagree on the number of images: synthetic {syn_f.shape[0]} vs "
            f"{syn_p.shape[0]}, real {real_f.shape[0]} vs {real_p.shape[0]}"
        )
    return syn_f, real_f, syn_p, real_p


def audit_copies(
    syn_feats: Any,
    real_feats: Any,
    syn_pixels: Any,
    real_pixels: Any,
    cfg: Any,
    real_feats_flipped: Any = None,
    real_pixel_views: Sequence[np.ndarray] | None = None,
    view_names: Sequence[str] | None = None,
) -> CopyAudit:
    """Flag synthetic images that are near copies of real (train) images.

    flag = pixel_ratio OR pixel_abs OR (authenticity AND pixel_close), where d1, d2 are the pixel
    distances to the nearest and second-nearest *distinct* real image (closest view of each) and
    "median" is the median leave-one-out real-real pixel NN distance:

    - pixel_ratio: d1/d2 < ``pixel_ratio_threshold``. A copy sits much closer to its source than to
      any other real image; an honest sample, even in a dense region, has d1/d2 near 1.
    - pixel_abs: d1 < ``pixel_copy_threshold`` x median: catches copies of a real image that has a
      near duplicate in the real set (d2 is then small too and the ratio test is blind).
    - authenticity (Alaa et al. 2022, corrected: the real image's own NN distance is leave-one-out,
      never the zero distance to itself): feature distance to the nearest real image below
      ``authenticity_ratio`` x that real image's distance to its own nearest other real image. Alone
      it fires for about half of an honest i.i.d. sample, so it only counts with pixel_close:
      d1 < ``authenticity_pixel_factor`` x median.

    ``real_pixel_views`` are extra views of ``real_pixels`` (same rows; see :func:`pixel_views`);
    without them, flips are derived when ``cfg.check_flips``. ``real_feats_flipped`` (features of the
    mirrored reals) makes the feature search flip-aware too.
    """
    syn_f, real_f, syn_p, real_p = _check_inputs(syn_feats, real_feats, syn_pixels, real_pixels)
    if real_pixel_views is None:
        real_pixel_views = [flip_pixel_vectors(real_p, cfg.pixel_size)] if cfg.check_flips else []
        view_names = ("full", "full+flip")[: 1 + len(real_pixel_views)]
    names = tuple(view_names or [f"view{i}" for i in range(1 + len(real_pixel_views))])
    if len(names) != 1 + len(real_pixel_views):
        raise AcneopsError(f"{len(names)} view names for {1 + len(real_pixel_views)} pixel views")
    flip_f = [real_feats_flipped] if (cfg.check_flips and real_feats_flipped is not None) else []
    bs = cfg.block_size
    f_syn = nearest_neighbors(syn_f, real_f, 1, flip_f, block_size=bs)
    f_real = nearest_neighbors(real_f, real_f, 1, flip_f, exclude_self=True, block_size=bs)
    p_syn = nearest_neighbors(syn_p, real_p, 2, real_pixel_views, block_size=bs)
    p_real = nearest_neighbors(real_p, real_p, 1, real_pixel_views, exclude_self=True, block_size=bs)
    real_feat_nn, real_pix_nn = f_real.dist[:, 0], p_real.dist[:, 0]
    median_pix = float(np.median(real_pix_nn))
    d1, d2, nn_f = p_syn.dist[:, 0], p_syn.dist[:, 1], f_syn.idx[:, 0]
    authenticity = f_syn.dist[:, 0] < cfg.authenticity_ratio * real_feat_nn[nn_f]
    ratio = d1 < cfg.pixel_ratio_threshold * d2
    absolute = d1 < cfg.pixel_copy_threshold * median_pix
    close = d1 < cfg.authenticity_pixel_factor * median_pix
    return CopyAudit(
        flags=ratio | absolute | (authenticity & close),
        rule_authenticity=authenticity, rule_pixel_ratio=ratio, rule_pixel_abs=absolute, pixel_close=close,
        feat_nn_idx=nn_f, feat_nn_dist=f_syn.dist[:, 0], feat_nn_flipped=f_syn.view[:, 0] == 1,
        pix_nn_idx=p_syn.idx[:, 0], pix_nn_dist=d1, pix_nn2_dist=d2, pix_nn_view=p_syn.view[:, 0],
        view_names=names, real_feat_nn_dist=real_feat_nn, real_pix_nn_dist=real_pix_nn,
        median_real_pix_nn=median_pix,
    )
