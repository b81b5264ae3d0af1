"""Identity audit: is a synthetic face the same *person* as a real train face, whatever the pixels say?

The copy audit (:mod:`acneops.audit.copies`) catches near copies of real images; a generator can also leak a patient
as a new photo of the same face (another framing, pose or light), which no pixel or feature rule sees. Here every
face goes through dlib's face-recognition ResNet (128-d, :mod:`acneops.faces.identity`; 99.38% on LFW with "same
person" below 0.6 Euclidean), and a synthetic face closer than a threshold to a real train face is flagged.

- Applicability: dlib must find a face in ``identity_min_detected`` of the real train images and tell the faces
  apart: when it calls more than ``identity_max_same_pairs`` of all pairs of them the same person (below its 0.6),
  they are not photos of different people (it finds the phantom's drawn 64 px faces, and all look alike to it) and
  a match would say nothing. Otherwise the result is ``{"applicable": False, "reason": ...}``, never a number
  (``identity: always`` makes that an error).
- Threshold (``identity_threshold: auto``), calibrated on the real train faces without identity labels: *same*
  pairs are a face and transformed copies of it (:data:`LEAK_VIEWS`: crops, mirror, brightness, JPEG, rotation,
  down-up scaling, noise, a compound: what a leaked copy looks like); *different* pairs are a face and its nearest
  other real train face (some are one person's photos, as in ACNE04). threshold = min(0.6, max(q_same, q_diff)):
  q_same, the ``identity_same_quantile`` of same-pair distances, catches the copies; q_diff, the
  ``identity_different_quantile`` of nearest-other distances, is where an honest face (distributed like a held-out
  real one) is flagged at about that rate, so the threshold reaches towards dlib's boundary as far as the data
  allows. The rule, every quantile and the share of different pairs under the threshold are reported.
- Membership (evaluate: it needs the real test split): ROC-AUC of real train against real test faces scored by the
  distance to the nearest synthetic face (:func:`acneops.audit.attacks.membership_auc`), with a percentile-bootstrap
  95% interval over both groups; 0.5 = no identity leak.

Synthetic images without a face dlib finds cannot be matched: counted (``no_face``), never silently dropped or
kept. Deterministic: dlib is, and the calibration faces are chosen by name.
"""

from __future__ import annotations

import dataclasses
import io
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from acneops.audit.copies import as_images, image_at
from acneops.core.config import require
from acneops.core.errors import AcneopsError

MODES = ("auto", "always", "never")
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)  # reported for every distance distribution
MAX_RECORDS = 100  # flagged faces listed by name in a report (all are counted)
Images = Sequence[Path] | np.ndarray  # paths, or uint8 (N, H, W, 3)


def check_config(cfg: Any, where: str = "params.yaml [audit]") -> None:
    """Validate the ``identity*`` keys of the audit section (called by AuditConfig); errors name key and fix."""
    require(cfg.identity in MODES, f"{where}.identity must be one of {list(MODES)}, got {cfg.identity!r}")
    fixed = cfg.identity_threshold
    try:
        ok = fixed == "auto" or 0 < float(fixed) <= 2
    except ValueError:
        ok = False
    require(ok, f"{where}.identity_threshold must be 'auto' or a distance in (0, 2] (dlib's same-person "
            f"threshold is 0.6), got {fixed!r}")
    for key in ("identity_min_detected", "identity_max_same_pairs", "identity_same_quantile",
                "identity_different_quantile"):
        require(0 <= getattr(cfg, key) <= 1, f"{where}.{key} must be a share in [0, 1], got {getattr(cfg, key)}")
    require(cfg.identity_calibration_faces >= 1, f"{where}.identity_calibration_faces must be >= 1")
    require(cfg.identity_upsample in (0, 1, 2, 3), f"{where}.identity_upsample must be 0..3 (image doublings)")
    require(cfg.identity_bootstrap >= 0, f"{where}.identity_bootstrap must be >= 0 (0 = no interval)")


def quantiles(x: np.ndarray) -> dict[str, float] | None:
    """{'q0': min, 'q50': median, ...} of a distance sample (None when empty)."""
    x = np.asarray(x, dtype=np.float64)
    return {f"q{round(100 * q)}": float(np.quantile(x, q)) for q in QUANTILES} if len(x) else None


def not_applicable(reason: str) -> dict[str, Any]:
    """The report of an audit that does not apply: a reason, never a number."""
    return {"applicable": False, "reason": reason}


# ----------------------------------------------------------------------------- embedding


@dataclasses.dataclass(frozen=True)
class Faces:
    """Identity embeddings of a set of images: rows only for the images where dlib found a face."""

    embeddings: np.ndarray  # (F, 128) float64
    found: np.ndarray  # (looked,) bool: a face in image i
    total: int  # images in the set (looked < total when the search stopped early)

    @property
    def index(self) -> np.ndarray:
        """(F,) image index of each embedding row."""
        return np.flatnonzero(self.found)


def embed_images(images: Images, upsample: int, desc: str, need: int = 0) -> Faces:
    """Embed the most confident face of every image; stop once fewer than ``need`` faces remain possible."""
    from acneops.core.progress import progress
    from acneops.faces.identity import EMBED_DIM, embed

    vectors, found = [], []
    with progress(total=len(images), desc=desc, unit="img") as bar:
        for i in range(len(images)):
            vector = embed(image_at(images, i), upsample=upsample)
            found.append(vector is not None)
            vectors += [] if vector is None else [vector]
            bar.update(1)
            if len(images) - found.count(False) < need:
                break
    stacked = np.stack(vectors) if vectors else np.zeros((0, EMBED_DIM))
    return Faces(stacked, np.array(found, dtype=bool), len(images))


# ----------------------------------------------------------------------------- calibration


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def _resized(image: np.ndarray, box: tuple[int, int, int, int] | None, scale: float = 1.0,
             angle: float = 0.0) -> np.ndarray:
    """``image`` cropped to ``box`` (left, top, right, bottom), rotated, scaled and brought back to its size."""
    from PIL import Image

    h, w = image.shape[:2]
    im = Image.fromarray(image).rotate(angle, Image.BICUBIC) if angle else Image.fromarray(image)
    im = im.crop(box) if box else im
    if scale != 1.0:
        im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
    return np.asarray(im.resize((w, h), Image.BICUBIC))


def _gain(image: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(image.astype(np.float64) * factor, 0, 255).astype(np.uint8)


def _crop(image: np.ndarray, keep: float, ax: float, ay: float) -> np.ndarray:
    h, w = image.shape[:2]
    cw, ch = round(w * keep), round(h * keep)
    x, y = round((w - cw) * ax), round((h - ch) * ay)
    return _resized(image, (x, y, x + cw, y + ch))


LEAK_VIEWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {  # name -> a transformed copy of a real photo
    "crop90": lambda im: _crop(im, 0.9, 0.5, 0.5),
    "crop85_corner": lambda im: _crop(im, 0.85, 0.0, 0.0),
    "mirror": lambda im: np.ascontiguousarray(im[:, ::-1]),
    "brighter": lambda im: _gain(im, 1.3),
    "darker": lambda im: _gain(im, 0.75),
    "jpeg30": lambda im: _jpeg(im, 30),
    "rotate8": lambda im: _resized(im, None, angle=8.0),
    "half_scale": lambda im: _resized(im, None, scale=0.5),
    "noise": lambda im: np.clip(im + np.random.default_rng(0).normal(0.0, 6.0, im.shape), 0, 255).astype(np.uint8),
    "mirror_crop_jpeg_brighter": lambda im: _gain(_jpeg(_crop(np.ascontiguousarray(im[:, ::-1]), 0.85, 0.5, 0.2),
                                                        40), 1.15),
}


def _pair_shares(emb: np.ndarray, limits: Sequence[float]) -> list[float]:
    """Share of all pairs of distinct rows of ``emb`` closer than each limit (exact, blocked)."""
    from acneops.metrics.neighbors import distance_blocks

    n = len(emb)
    counts = np.zeros(len(limits))
    for start, block in distance_blocks(emb, emb, block_rows=512):
        block[np.arange(len(block)), start + np.arange(len(block))] = np.inf  # not the face with itself
        counts += [(block < t).sum() for t in limits]
    return [float(c / (n * (n - 1))) for c in counts]


def same_pair_distances(images: Images, faces: Faces, chosen: np.ndarray, upsample: int,
                        desc: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Distances between chosen real faces (rows of ``faces``) and their transformed copies; the per-view report."""
    from acneops.core.progress import progress
    from acneops.faces.identity import embed

    per_view: dict[str, list[float]] = {name: [] for name in LEAK_VIEWS}
    lost = 0
    for row in progress(chosen, desc=desc, unit="face"):
        image = image_at(images, int(faces.index[row]))
        for name, view in LEAK_VIEWS.items():
            vector = embed(view(image), upsample=upsample)
            if vector is None:
                lost += 1
            else:
                per_view[name].append(float(np.linalg.norm(vector - faces.embeddings[row])))
    same = np.array([d for ds in per_view.values() for d in ds])
    report = {"n": len(same), "faces": len(chosen), "views": list(LEAK_VIEWS), "views_without_face": lost,
              "max_per_view": {k: max(v) for k, v in per_view.items() if v}, "quantiles": quantiles(same)}
    return same, report


def calibrate(images: Images, names: Sequence[str], faces: Faces, cfg: Any, desc: str) -> dict[str, Any]:
    """The threshold (a number from params, or calibrated: see the module docstring) and every figure behind it."""
    from acneops.faces.identity import DLIB_SAME_PERSON
    from acneops.metrics.neighbors import nearest_neighbors

    different = nearest_neighbors(faces.embeddings, faces.embeddings, 1, exclude_self=True).dist[:, 0]
    out: dict[str, Any] = {"dlib_same_person": DLIB_SAME_PERSON}
    if cfg.identity_threshold != "auto":
        threshold = float(cfg.identity_threshold)
        out.update(source="params.yaml [audit.identity_threshold]", same_pairs=None)
    else:
        by_name = sorted(range(len(faces.index)), key=lambda r: str(names[faces.index[r]]))
        picks = np.unique(np.linspace(0, len(by_name) - 1, min(cfg.identity_calibration_faces, len(by_name)))
                          .round().astype(int))
        same, out["same_pairs"] = same_pair_distances(images, faces, np.array(by_name)[picks], cfg.identity_upsample,
                                                      f"{desc}: calibration (transformed copies)")
        q_same = float(np.quantile(same, cfg.identity_same_quantile)) if len(same) else 0.0
        q_diff = float(np.quantile(different, cfg.identity_different_quantile))
        threshold = min(DLIB_SAME_PERSON, max(q_same, q_diff))
        out.update(source="calibrated", q_same=q_same, q_different=q_diff,
                   rule=f"min(dlib {DLIB_SAME_PERSON}, max(q{cfg.identity_same_quantile:g} of same-person pair "
                        f"distances, q{cfg.identity_different_quantile:g} of nearest-other-real distances))")
    share_dlib, share_t = _pair_shares(faces.embeddings, (DLIB_SAME_PERSON, threshold))
    out.update(threshold=threshold, different_pairs={
        "n": len(different), "what": "each real train face and its nearest other real train face (same-person "
        "pairs when a person has several photos)", "quantiles": quantiles(different),
        "share_below_threshold": float(np.mean(different < threshold))},
        all_pairs={"n": len(different) * (len(different) - 1) // 2, "share_below_dlib_same_person": share_dlib,
                   "share_below_threshold": share_t})
    return out


# ----------------------------------------------------------------------------- reference and matches


@dataclasses.dataclass(frozen=True)
class IdentityReference:
    """The real train faces in dlib's identity space, the same-person threshold and how it was chosen."""

    faces: Faces
    names: tuple[str, ...]  # of every real train image (index with faces.index)
    threshold: float  # Euclidean distance below which a synthetic face is a real train person
    calibration: dict[str, Any]  # calibrate()'s report
    upsample: int  # dlib detector upsampling used for every image
    seconds: float  # wall time of embedding and calibration

    def report(self) -> dict[str, Any]:
        looked = len(self.faces.found)
        return {"applicable": True, "threshold": self.threshold, "calibration": self.calibration,
                "real_train": {"images": self.faces.total, "faces": int(self.faces.found.sum()),
                               "detected_rate": float(self.faces.found.sum() / max(looked, 1))},
                "embedding": "dlib_face_recognition_resnet_model_v1 (128-d)", "seconds": round(self.seconds, 2)}

    def real_name(self, row: int) -> str:
        return self.names[int(self.faces.index[row])]


@dataclasses.dataclass(frozen=True)
class Matches:
    """Per synthetic image: a face or not, its distance to the nearest real train face, which one."""

    face: np.ndarray  # (S,) bool: dlib found a face
    distance: np.ndarray  # (S,) Euclidean distance to the nearest real train face; NaN without a face
    nearest: np.ndarray  # (S,) row of IdentityReference.faces; -1 without a face
    threshold: float  # flagged below this distance

    @property
    def flags(self) -> np.ndarray:
        """(S,) bool: the face is a real train person (closer than the threshold)."""
        return self.face & (np.nan_to_num(self.distance, nan=np.inf) < self.threshold)

    @staticmethod
    def concatenate(parts: Sequence[Matches]) -> Matches:
        return Matches(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("face", "distance", "nearest")),
                       parts[0].threshold)

    def counts(self, rows: np.ndarray | None = None) -> dict[str, Any]:
        """Images, faces, no-face images, flagged faces and the match rate (of faces) over ``rows`` (default all)."""
        rows = np.arange(len(self.face)) if rows is None else rows
        faces, flagged = int(self.face[rows].sum()), int(self.flags[rows].sum())
        return {"images": len(rows), "faces": faces, "no_face": len(rows) - faces, "flagged": flagged,
                "match_rate": flagged / faces if faces else None}

    def records(self, ref: IdentityReference, names: Sequence[str], rows: np.ndarray | None = None) -> list[dict]:
        """The flagged images by name with their nearest real train face, closest first (at most MAX_RECORDS)."""
        rows = np.arange(len(self.face)) if rows is None else rows
        hits = sorted((float(self.distance[i]), int(i)) for i in rows if self.flags[i])
        return [{"synthetic": str(names[i]), "nearest_real": ref.real_name(self.nearest[i]), "distance": d}
                for d, i in hits[:MAX_RECORDS]]


def reference(images: Images, names: Sequence[str], cfg: Any, desc: str) -> IdentityReference | dict[str, Any]:
    """The real train faces and threshold, or the not-applicable report (see the module docstring).

    ``cfg``: the audit section (AuditConfig). With ``identity: always`` a not-applicable outcome is an AcneopsError.
    """
    if cfg.identity == "never":
        return not_applicable("params.yaml [audit.identity] is 'never'")
    start, n = time.perf_counter(), len(images)
    need = int(np.ceil(cfg.identity_min_detected * n))
    faces = embed_images(images, cfg.identity_upsample, f"{desc}: faces (real train)", need=need)
    reason = _unusable(faces, need, cfg)
    if reason is None:
        calibration = calibrate(images, names, faces, cfg, desc)
        return IdentityReference(faces, tuple(str(x) for x in names), calibration["threshold"], calibration,
                                 cfg.identity_upsample, time.perf_counter() - start)
    if cfg.identity == "always":
        raise AcneopsError(f"identity audit: {reason}. params.yaml [audit.identity] is 'always': set it to 'auto' to "
                           "report 'not applicable' instead, or audit real face photos (dlib finds faces from ~40 px "
                           "wide; audit.identity_upsample: 2 finds smaller ones)")
    return not_applicable(reason)


def _unusable(faces: Faces, need: int, cfg: Any) -> str | None:
    """Why the real train faces cannot anchor an identity audit (too few found, or not told apart), or None."""
    from acneops.faces.identity import DLIB_SAME_PERSON

    n, looked, found = faces.total, len(faces.found), int(faces.found.sum())
    if found < max(need, 2):
        needs = f"needs >= {cfg.identity_min_detected:.0%} (audit.identity_min_detected) and at least 2"
        return (f"dlib found a face in {found} of {n} real train images ({needs})" if looked == n else
                f"dlib found a face in {found} of the first {looked} of {n} real train images and stopped: at most "
                f"{n - looked + found} can have one ({needs})")
    share = _pair_shares(faces.embeddings, (DLIB_SAME_PERSON,))[0]
    if share > cfg.identity_max_same_pairs:
        return (f"dlib calls {share:.0%} of the pairs of real train faces the same person (distance < "
                f"{DLIB_SAME_PERSON}; audit.identity_max_same_pairs = {cfg.identity_max_same_pairs:.0%}): these are "
                "not photos of different people (drawn faces, or one person), so a match would say nothing")
    return None


# ----------------------------------------------------------------------------- evaluate: match rate, membership


def membership(ref: IdentityReference, test: Faces, syn_emb: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """Identity membership attack: train vs held-out faces scored by the distance to the nearest synthetic face."""
    from sklearn.metrics import roc_auc_score

    from acneops.audit.attacks import membership_auc
    from acneops.metrics.bootstrap import LEVEL, resample_index
    from acneops.metrics.neighbors import nearest_neighbors

    train = ref.faces.embeddings
    if len(test.embeddings) == 0 or len(syn_emb) == 0:
        return {"auc": None, "status": f"not computed: {len(test.embeddings)} real test faces, {len(syn_emb)} "
                "synthetic faces (needs at least one of each)"}
    out: dict[str, Any] = {"auc": membership_auc(train, test.embeddings, syn_emb), "ci95": None,
                           "n_train_faces": len(train), "n_test_faces": len(test.embeddings),
                           "score": "minus the distance to the nearest synthetic face; members = real train faces"}
    if n_boot:
        d_train = nearest_neighbors(train, syn_emb, 1).dist[:, 0]
        d_test = nearest_neighbors(test.embeddings, syn_emb, 1).dist[:, 0]
        i_train, i_test = resample_index(len(d_train), n_boot, seed), resample_index(len(d_test), n_boot, seed + 1)
        labels = np.r_[np.ones(len(d_train)), np.zeros(len(d_test))]
        aucs = [roc_auc_score(labels, -np.r_[d_train[a], d_test[b]]) for a, b in zip(i_train, i_test)]
        lo, hi = np.percentile(aucs, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
        out.update(ci95=[float(lo), float(hi)], bootstrap=n_boot)
    return out


def audit_identity(synthetic: Images, synthetic_names: Sequence[str], synthetic_labels: Sequence[str],
                   real_train: Images, real_names: Sequence[str], real_test: Images | None, cfg: Any, *,
                   seed: int = 0, desc: str = "identity") -> dict[str, Any]:
    """The identity audit of an exported synthetic set (evaluate): threshold, match rate overall and per class,
    nearest-identity distances and, with ``real_test``, the identity membership AUC. A dict (JSON report)."""
    ref = reference(as_images(real_train, "real train images"), real_names, cfg, desc)
    if isinstance(ref, dict):
        return ref
    start = time.perf_counter()
    syn = embed_images(as_images(synthetic, "synthetic images"), ref.upsample, f"{desc}: faces (synthetic)")
    matches = matches_of(ref, syn)
    labels = np.asarray(synthetic_labels)
    report = ref.report()
    report["synthetic"] = {**matches.counts(), "nearest_distance": quantiles(matches.distance[matches.face])}
    report["per_class"] = {str(c): matches.counts(np.flatnonzero(labels == c)) for c in sorted(set(labels))}
    report["flagged"] = matches.records(ref, synthetic_names)
    if real_test is not None:
        test = embed_images(as_images(real_test, "real test images"), ref.upsample, f"{desc}: faces (real test)")
        report["real_test"] = {"images": test.total, "faces": len(test.embeddings)}
        report["membership"] = membership(ref, test, syn.embeddings, cfg.identity_bootstrap, seed)
    else:
        report["membership"] = {"auc": None, "status": "not computed (no test split in this role)"}
    report["seconds"] = round(report["seconds"] + time.perf_counter() - start, 2)
    return report


def match_images(ref: IdentityReference, images: Images, desc: str) -> Matches:
    """The nearest real train face of every image in ``images`` (no face: NaN distance, index -1)."""
    return matches_of(ref, embed_images(images, ref.upsample, desc))


def matches_of(ref: IdentityReference, syn: Faces) -> Matches:
    """The nearest real train face of each embedded synthetic image (no face: NaN distance, index -1)."""
    from acneops.metrics.neighbors import nearest_neighbors

    dist, nearest = np.full(syn.total, np.nan), np.full(syn.total, -1)
    if len(syn.embeddings):
        nn = nearest_neighbors(syn.embeddings, ref.faces.embeddings, 1)
        dist[syn.found], nearest[syn.found] = nn.dist[:, 0], nn.idx[:, 0]
    return Matches(syn.found, dist, nearest, ref.threshold)
