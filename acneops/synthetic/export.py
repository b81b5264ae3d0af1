"""Exporting a synthetic dataset: per class, generate from the class generator with recorded seeds, audit every\nimage against the real train split, replace flagged near copies, and write PNGs + manifest.\n\nThe `synthesize` stage (acneops.stages.synthesize) builds :class:`SynthesizeConfig` from params and calls these."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from acneops.audit import AuditConfig, AuditResult
from acneops.core.config import ConfigError, require
from acneops.core.errors import AcneopsError, StageError
from acneops.core.paths import (
    REPORTS_DIR,
    RESTORED_DIR,
    SYNTHETIC_DIR,
    classifier_checkpoint,
    gan_checkpoint,
)

MANIFEST_FIELDS = ["file", "label", "seed", "psi", "generator", "generator_sha256", "nn_feature_dist",
                   "nn_pixel_dist", "audit"]
SEED_STRIDE = 10_000_000  # seeds of one base seed
CLASS_STRIDE = 1_000_000  # seeds of one class
TOPUP_OFFSET = 500_000  # top-up seeds start here inside a class's range
MAX_SEED = (2**32 - 1 - SEED_STRIDE) // SEED_STRIDE  # numpy RandomState seeds must stay below 2**32
MAX_CLASSES = SEED_STRIDE // CLASS_STRIDE
OVERSAMPLE_MAX = 4  # a top-up round generates at most this many images per missing one
EXTRACTORS = ("domain", "tiny", "inception")
DEFAULT_GENERATORS = {c: str(gan_checkpoint(c)) for c in ("healthy", "mild", "moderate", "severe")}


@dataclasses.dataclass(frozen=True)
class SynthesizeConfig:
    """Params section ``synthesize`` (+ the top-level ``audit`` section as ``audit``)."""

    # class -> generator checkpoint; the order is the class index of the seed ranges
    generators: dict[str, Path] = dataclasses.field(
        default_factory=lambda: {c: Path(p) for c, p in DEFAULT_GENERATORS.items()})
    counts: dict[str, int] = dataclasses.field(  # class -> images exported, count
        default_factory=lambda: dict.fromkeys(DEFAULT_GENERATORS, 150))
    out_dir: Path = SYNTHETIC_DIR  # <class>/<class>_seed<seed>.png + manifest.csv
    report_path: Path = REPORTS_DIR / "synthesize.json"  # per-class counts; audit reports go beside it
    restored_dir: Path = RESTORED_DIR  # real TRAIN split read for the anonymity audit
    # truncation psi in (0, 1]; 1 = none: the classifiers trained on these images need the full diversity
    # (truncation raises FID-style fidelity but lowers Classification Accuracy Score, Ravuri & Vinyals 2019);
    # a DCGAN generator has no truncation and needs 1
    psi: float = 1.0
    seed: int = 0  # base seed in [0, MAX_SEED]: class k uses seed*1e7 + k*1e6 + i
    batch: int = 32  # generation batch, images
    audit_extractor: str = "domain"  # audit feature space: domain | tiny | inception
    audit_checkpoint: Path | None = classifier_checkpoint("real")  # domain: classifier; inception: weights
    # class filter: a classifier (the severity sorter: trained on real train images only) that must assign each
    # exported image to its generator's class, or "" = none (then drop its dvc.yaml dep); classes it does not know
    # (healthy, for the sorter) are not filtered. Rejected images are replaced from the top-up seeds like flagged ones.
    class_filter: str = str(classifier_checkpoint("sorter"))
    # rejected when the filter's probability of another class exceeds its own class's by more than this
    # (0: whenever another class wins; 1: never, the filter only counts)
    class_filter_margin: float = 0.0
    # classes the data lacks (params ingest.prior_classes, set by the stage), exported from the base generator; the
    # class filter rejects a candidate of one when its probability of the filter's grades above the mildest exceeds
    # prior_filter_max (acneops.synthetic.class_filter)
    prior_classes: tuple[str, ...] = ()
    prior_filter_max: float = 0.5  # probability in [0, 1]; 1 = never reject (the filter only counts)
    max_rounds: int = 3  # extra generation rounds replacing flagged images, count
    max_shortfall: float = 0.1  # largest missing share of any class's count; above it the stage fails
    audit: AuditConfig = dataclasses.field(default_factory=AuditConfig)  # near-copy thresholds (section audit)

    def __post_init__(self) -> None:
        w = "params.yaml [synthesize]"
        require(0 < len(self.generators) <= MAX_CLASSES,
                f"{w}.generators must name 1..{MAX_CLASSES} classes, got {len(self.generators)}")
        for cls in self.counts:
            require(cls in self.generators, f"{w}.counts has class '{cls}' but {w}.generators has no generator "
                    f"for it; add `generators: {{{cls}: <checkpoint .pt>}}` or remove '{cls}' from counts")
        for cls in self.generators:
            require(cls in self.counts, f"{w}.generators has class '{cls}' but {w}.counts has no count for it; "
                    f"add `counts: {{{cls}: <images>}}` or remove '{cls}' from generators")
            require(cls.replace("_", "").replace("-", "").isalnum(),
                    f"{w}: class name '{cls}' must be letters, digits, '_' or '-' (it names a folder)")
        cap = TOPUP_OFFSET // (OVERSAMPLE_MAX * max(1, self.max_rounds))
        for cls, n in self.counts.items():
            require(1 <= n <= cap, f"{w}.counts.{cls} must be in [1, {cap}] (the seed range of a class with "
                    f"max_rounds={self.max_rounds}), got {n}")
        require(0 <= self.seed <= MAX_SEED, f"{w}.seed must be in [0, {MAX_SEED}], got {self.seed}")
        require(0 < self.psi <= 1, f"{w}.psi must be in (0, 1] (1 = no truncation), got {self.psi}")
        require(self.batch >= 1, f"{w}.batch must be >= 1, got {self.batch}")
        require(0 <= self.class_filter_margin <= 1,
                f"{w}.class_filter_margin must be in [0, 1], got {self.class_filter_margin}")
        require(0 <= self.prior_filter_max <= 1, f"{w}.prior_filter_max must be in [0, 1], got {self.prior_filter_max}")
        require(self.max_rounds >= 0, f"{w}.max_rounds must be >= 0, got {self.max_rounds}")
        require(0 <= self.max_shortfall <= 1, f"{w}.max_shortfall must be in [0, 1], got {self.max_shortfall}")
        require(self.audit_extractor in EXTRACTORS,
                f"{w}.audit_extractor must be one of {list(EXTRACTORS)}, got {self.audit_extractor!r}")
        require(self.audit_extractor == "tiny" or self.audit_checkpoint is not None,
                f"{w}.audit_checkpoint is required for audit_extractor '{self.audit_extractor}' "
                "(domain: a classifier checkpoint; inception: the FID weights file)")

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.generators)


def class_seeds(seed: int, class_index: int, start: int, n: int, topup: bool = False) -> list[int]:
    """``n`` consecutive seeds of one class, from offset ``start`` of its first-round or top-up range."""
    base = seed * SEED_STRIDE + class_index * CLASS_STRIDE + (TOPUP_OFFSET if topup else 0)
    return list(range(base + start, base + start + n))


def image_file(cls: str, seed: int) -> str:
    """Path of one synthetic image relative to out_dir."""
    return f"{cls}/{cls}_seed{seed}.png"


@dataclasses.dataclass(frozen=True)
class GeneratorInfo:
    path: Path  # checkpoint
    sha256: str  # of the checkpoint file
    family: str  # stylegan2 | dcgan
    resolution: int  # px
    label: str | None = None  # the class input of a class-conditional generator; None: unconditional


def check_generators(cfg: SynthesizeConfig) -> dict[str, GeneratorInfo]:
    """Load every generator before any work: a missing or unreadable checkpoint names its class and file."""
    from acneops.core.io import sha256_file
    from acneops.gan.sampling import load_generator

    infos = {}
    for cls, path in cfg.generators.items():
        try:
            G, family = load_generator(path)
        except AcneopsError as exc:
            raise StageError(f"params.yaml [synthesize.generators.{cls}]: {exc}") from exc
        if family == "dcgan" and cfg.psi != 1.0:
            raise ConfigError(f"params.yaml [synthesize.psi]={cfg.psi}: class '{cls}' uses a DCGAN generator "
                              f"({path}), which has no truncation; set synthesize.psi to 1.0")
        classes = tuple(G.labels) if getattr(G, "c_dim", 0) else None  # a conditional generator serves its labels
        if classes is not None and cls not in classes:
            raise StageError(f"params.yaml [synthesize.generators.{cls}]: {path} is a class-conditional generator of "
                             f"{list(classes)}; it cannot draw '{cls}'")
        infos[cls] = GeneratorInfo(Path(path), sha256_file(path), family, int(G.img_resolution),
                                   cls if classes is not None else None)
    return infos


@dataclasses.dataclass(frozen=True)
class RealTrain:
    images: np.ndarray  # (N, H, W, 3) uint8, every class of the real train split
    names: tuple[str, ...]  # file paths relative to restored_dir
    labels: tuple[str, ...]  # class of each image
    exact: frozenset[bytes]  # content digests of each image and its mirror (the exact-copy guard)


def _digest(image: np.ndarray) -> bytes:
    return hashlib.sha256(repr(image.shape).encode() + np.ascontiguousarray(image).tobytes()).digest()


def load_real_train(restored_dir: Path) -> RealTrain:
    """All real train images (role ``synthesize``: the test split is refused by the data access layer)."""
    from acneops.data.access import load_split
    from acneops.data.decode import read_rgb

    try:
        samples = load_split(restored_dir, "train", role="synthesize")
    except FileNotFoundError as exc:
        raise StageError(str(exc)) from exc
    manifest = Path(restored_dir) / "train" / "manifest.csv"
    if len(samples) < 2:
        raise StageError(f"{manifest}: the anonymity audit needs at least 2 real train images, found "
                         f"{len(samples)}; run ingest/restore on a larger dataset")
    images = [np.asarray(read_rgb(s.path)) for s in samples]
    for s, im in zip(samples, images):
        if im.shape != images[0].shape:
            raise StageError(f"{s.path}: {im.shape[1]}x{im.shape[0]} px but {samples[0].path} is "
                             f"{images[0].shape[1]}x{images[0].shape[0]}; restored images share one size, "
                             "re-run `dvc repro restore`")
    names = tuple(os.path.relpath(s.path, restored_dir) for s in samples)
    exact = frozenset(_digest(im) for img in images for im in (img, img[:, ::-1]))
    return RealTrain(np.stack(images), names, tuple(s.label for s in samples), exact)


class CachedExtractor:
    """A feature extractor whose features are memoised per image content.

    The audit of every class and every top-up round embeds the same real train images (and their
    mirrors) and all earlier candidates again; the cache embeds each distinct image once.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name  # the audit reports the feature space by this name
        self.identity = getattr(inner, "identity", inner.name)
        self._cache: dict[bytes, np.ndarray] = {}

    def extract(self, images: Any, progress: bool = False, **kwargs: Any) -> np.ndarray:
        from acneops.data.decode import read_rgb

        arrays = [np.asarray(read_rgb(im)) if isinstance(im, (str, Path)) else np.asarray(im) for im in images]
        keys = [_digest(im) for im in arrays]
        missing = {k: im for k, im in zip(keys, arrays) if k not in self._cache}
        if missing:
            feats = np.asarray(self.inner.extract(list(missing.values()), progress=progress, **kwargs))
            self._cache.update(zip(missing.keys(), feats))
        return np.stack([self._cache[k] for k in keys])


def make_extractor(cfg: SynthesizeConfig) -> CachedExtractor:
    from acneops.features.extractors import get_extractor

    if cfg.audit_extractor == "domain":
        inner = get_extractor("domain", checkpoint=cfg.audit_checkpoint)
    elif cfg.audit_extractor == "inception":
        inner = get_extractor("inception", weights_path=cfg.audit_checkpoint)
    else:
        inner = get_extractor("tiny", seed=0)
    return CachedExtractor(inner)


@dataclasses.dataclass
class ClassOutcome:
    """Everything generated and audited for one class; ``export`` indexes the images written."""

    cls: str
    requested: int
    seeds: list[int]  # every candidate seed, generation order
    images: np.ndarray  # (S, H, W, 3) uint8 candidates
    flags: np.ndarray  # (S,) bool: near copy (audit), exact copy or a real train person (identity audit)
    exact: np.ndarray  # (S,) bool: pixels equal a real train image or its mirror
    own_class: np.ndarray  # (S,) bool: near copy against the class's own real train images (evaluate's reference)
    wrong_class: np.ndarray  # (S,) bool: the class filter assigned it to another class
    rounds: int  # extra rounds used after the first
    audit: AuditResult  # audit of all candidates
    export: np.ndarray  # indices of the exported candidates (the first `requested` unflagged)
    seconds: dict[str, float]  # wall time of generation and audit, s
    identity: Any = None  # acneops.audit.identity.Matches of every candidate; None: identity audit not applicable

    @property
    def shortfall(self) -> int:
        return self.requested - len(self.export)


def generate_images(path: Path, seeds: list[int], psi: float, batch: int, desc: str,
                    label: str | None = None) -> np.ndarray:
    """uint8 (N, H, W, 3), one image per seed (of class ``label`` for a conditional generator), with a progress
    bar named ``desc`` over the images."""
    from acneops.gan import sampling as gen

    return gen.generate(path, seeds, psi=psi, batch=batch, desc=desc, label=label)


def _audit(cfg: SynthesizeConfig, cls: str, seeds: list[int], images: np.ndarray, real: RealTrain,
           extractor: CachedExtractor) -> tuple[AuditResult, np.ndarray, np.ndarray]:
    """(audit against every real train image, exact-copy flags, near-copy flags against the class's own images)"""
    from acneops.audit import run_audit

    names = [image_file(cls, s) for s in seeds]
    result = run_audit(images, real.images, cfg.audit, extractor, name=f"synthesize_{cls}",
                       synthetic_names=names, real_names=real.names)
    exact = np.array([_digest(im) in real.exact for im in images], dtype=bool)
    own = [i for i, label in enumerate(real.labels) if label == cls]
    own_flags = np.zeros(len(images), dtype=bool)
    if 2 <= len(own) < len(real.labels):  # the class's own images, as evaluate audits this generator
        own_flags = run_audit(images, real.images[own], cfg.audit, extractor, name=f"synthesize_{cls}_own_class",
                              synthetic_names=names, real_names=[real.names[i] for i in own]).copy.flags
    return result, exact, own_flags


def synthesize_class(cfg: SynthesizeConfig, cls: str, info: GeneratorInfo, real: RealTrain,
                     extractor: CachedExtractor, judge: tuple[Any, dict[str, Any]] | None = None,
                     identity: Any = None) -> ClassOutcome:
    """Generate, audit, filter by class, top up: round 0 uses seeds 0..count-1 of the class, later rounds its top-up
    range. ``identity`` (an :class:`acneops.audit.identity.IdentityReference`) also drops real train persons; each
    candidate is embedded once, in the round that made it."""
    from acneops.audit.identity import Matches, match_images
    from acneops.synthetic.class_filter import wrong_class

    k, count = cfg.classes.index(cls), cfg.counts[cls]
    seeds = class_seeds(cfg.seed, k, 0, count)
    new, parts, wrong_parts, id_parts, used_topup, rnd = seeds, [], [], [], 0, 0
    clock = {"generate": 0.0, "audit": 0.0}  # seconds
    while True:
        t0 = time.perf_counter()
        parts.append(generate_images(info.path, new, cfg.psi, cfg.batch, f"synthesize {cls}: generate round {rnd}",
                                     info.label))
        wrong_parts.append(wrong_class(judge, cls, parts[-1], cfg.class_filter_margin,
                                       cfg.prior_filter_max if cls in cfg.prior_classes else None))
        images, wrong = np.concatenate(parts), np.concatenate(wrong_parts)
        t1 = time.perf_counter()
        result, exact, own_flags = _audit(cfg, cls, seeds, images, real, extractor)
        flags = result.copy.flags | exact | own_flags
        if identity is not None:
            id_parts.append(match_images(identity, parts[-1], f"synthesize {cls}: identity round {rnd}"))
            flags = flags | Matches.concatenate(id_parts).flags
        clock["generate"] += t1 - t0
        clock["audit"] += time.perf_counter() - t1
        passed = np.flatnonzero(~flags & ~wrong)
        need = count - len(passed)
        if need <= 0 or rnd == cfg.max_rounds:
            break
        pass_rate = max(len(passed) / len(seeds), 1.0 / OVERSAMPLE_MAX)
        n_new = min(math.ceil(need / pass_rate), OVERSAMPLE_MAX * need)
        new = class_seeds(cfg.seed, k, used_topup, n_new, topup=True)
        used_topup, rnd = used_topup + n_new, rnd + 1
        seeds = seeds + new
    return ClassOutcome(cls=cls, requested=count, seeds=seeds, images=images, flags=flags, exact=exact,
                        own_class=own_flags, wrong_class=wrong,
                        rounds=rnd, audit=result, export=passed[:count],
                        seconds={k: round(v, 2) for k, v in clock.items()},
                        identity=Matches.concatenate(id_parts) if id_parts else None)


class ShortfallWarning(UserWarning):
    """A class got fewer images than requested because too many were flagged as near copies."""


def write_dataset(cfg: SynthesizeConfig, outcomes: dict[str, ClassOutcome], infos: dict[str, GeneratorInfo]) -> int:
    """Write the passing images and manifest.csv into a fresh folder that replaces ``out_dir`` whole."""
    from PIL import Image

    from acneops.core.io import atomic_dir, save_png, write_csv
    from acneops.core.progress import progress

    rows = []
    with atomic_dir(cfg.out_dir) as tmp:
        for cls, o in outcomes.items():
            (tmp / cls).mkdir()
            c = o.audit.copy
            for i in progress(o.export, desc=f"synthesize {cls}: write PNGs", unit="img"):
                file = image_file(cls, o.seeds[i])
                save_png(tmp / file, Image.fromarray(o.images[i], "RGB"))
                rows.append({"file": file, "label": cls, "seed": o.seeds[i], "psi": cfg.psi,
                             "generator": str(infos[cls].path), "generator_sha256": infos[cls].sha256,
                             "nn_feature_dist": f"{float(c.feat_nn_dist[i]):.6g}",
                             "nn_pixel_dist": f"{float(c.pix_nn_dist[i]):.6g}", "audit": "pass"})
        write_csv(tmp / "manifest.csv", rows, MANIFEST_FIELDS)
    return len(rows)


def identity_report(o: ClassOutcome, ref: Any) -> dict[str, Any]:
    """The identity audit of one class's candidates: counts (a face, none, flagged, flagged by identity alone) and
    the flagged candidates with their nearest real train face; not applicable when there was no reference."""
    if o.identity is None:
        return {"applicable": False}
    alone = o.identity.flags & ~(o.audit.copy.flags | o.exact | o.own_class)
    return {"applicable": True, **o.identity.counts(), "flagged_identity_only": int(alone.sum()),
            "flagged_records": o.identity.records(ref, [image_file(o.cls, s) for s in o.seeds])}


def class_report(o: ClassOutcome, info: GeneratorInfo, audit_json: Path, identity: Any = None) -> dict[str, Any]:
    """One class's entry in reports/synthesize.json (``identity``: the IdentityReference, when applicable)."""
    generated, flagged = len(o.seeds), int(o.flags.sum())
    audit = o.audit.to_dict()
    return {
        "requested": o.requested, "exported": len(o.export), "shortfall": o.shortfall,
        "generated": generated, "flagged": flagged, "flag_rate": flagged / generated,
        "flagged_exact_pixels": int(o.exact.sum()), "flagged_own_class": int(o.own_class.sum()),
        "flagged_identity": None if o.identity is None else int(o.identity.flags.sum()),
        "rejected_class_filter": int((o.wrong_class & ~o.flags).sum()), "rounds": o.rounds,
        "seeds": {"first_round": [o.seeds[0], o.seeds[o.requested - 1]], "topup_generated": generated - o.requested},
        "generator": str(info.path), "generator_sha256": info.sha256, "family": info.family,
        "resolution": info.resolution, "seconds": o.seconds,
        "audit": {"summary": o.audit.summary(), "report": str(audit_json), "rates": audit["rates"],
                  "reference": audit["reference"], "feature_space": audit["feature_space"]},
        "identity": identity_report(o, identity),
    }

