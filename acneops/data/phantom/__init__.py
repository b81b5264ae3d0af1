"""The built-in phantom dataset: a deterministic, procedural stand-in for ACNE04 (and a mask task).

Why: the whole pipeline must run on a laptop CPU with no download and no patient data. Each image is
a drawn face (varied skin tone, face shape, position, tilt, hair, lighting, background) with acne
lesions (comedones, papules, pustules, nodules) on the forehead, cheeks and chin. Lesion counts follow
the Hayashi criterion that ACNE04 uses (mild 1-5, moderate 6-20, severe 21-50, healthy 0) and are
recorded per image; severe faces also carry more nodules and pustules. A share of every class is a
low-resolution "web" part (drawn at hr_size, then downscaled to lr_size) that `restore` must upscale.
The ``mask`` task draws faces with or without a surgical-mask-like shape (the second method's task).

Every image has its own RNG seeded from (seed, task, class, index), so the same params give
byte-identical PNGs on any run (see acneops.data.phantom.draw for why drawing avoids transcendental maths).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
from PIL import Image

from acneops.core.config import require
from acneops.core.io import save_png
from acneops.core.paths import IMAGES_SUBDIR
from acneops.data.importers import staged_output, write_labels
from acneops.data.phantom import draw

TASK_CLASSES = {"acne": ("healthy", "mild", "moderate", "severe"), "mask": ("mask", "no_mask")}
_TASK_CODE = {"acne": 1, "mask": 2}  # part of every image's seed, so the tasks never share faces

# Lesion-kind mix per grade: probabilities of (comedone, papule, pustule, nodule).
KIND_MIX = {
    "healthy": (1.0, 0.0, 0.0, 0.0),
    "mild": (0.35, 0.5, 0.15, 0.0),
    "moderate": (0.3, 0.4, 0.25, 0.05),
    "severe": (0.1, 0.3, 0.3, 0.3),
}
# Lesion radius range per kind, as a fraction of the image side (exaggerated: visible at 64 px).
RADIUS = {"comedone": (0.008, 0.011), "papule": (0.013, 0.019), "pustule": (0.015, 0.021), "nodule": (0.026, 0.036)}
# Where lesions go, in face coordinates (u0, u1, v0, v1): forehead, both cheeks, chin.
REGIONS = ((-0.5, 0.5, -0.62, -0.42), (-0.78, -0.32, 0.02, 0.42), (0.32, 0.78, 0.02, 0.42), (-0.28, 0.28, 0.70, 0.86))


def _default_ranges() -> dict[str, tuple[int, int]]:
    return {"healthy": (0, 0), "mild": (1, 5), "moderate": (6, 20), "severe": (21, 50)}


@dataclasses.dataclass(frozen=True)
class PhantomConfig:
    """params.yaml section ``phantom``; ``task`` comes from the command line (--task), not params."""

    seed: int = 2024  # base seed; image i of class c uses the RNG seeded by (seed, task, c, i)
    n_per_class: int = 150  # images per class (high-res and web parts together)
    hr_size: int = 128  # side of the high-resolution images, px
    lr_size: int = 32  # side of the low-resolution "web" images, px
    lowres_fraction: float = 0.25  # share of each class in the web part, 0..1 (rounded half up)
    supersample: int = 2  # drawing scale before the LANCZOS downscale to hr_size (antialiasing), factor
    lesion_scale: float = 1.0  # multiplier on lesion radii, ratio (1.0 = clearly visible at 64 px)
    # Hayashi lesion-count range per acne class, [min, max] inclusive, lesions per face
    lesion_ranges: dict[str, tuple[int, int]] = dataclasses.field(default_factory=_default_ranges)
    task: str = "acne"  # acne (healthy/mild/moderate/severe) | mask (mask/no_mask)

    def __post_init__(self) -> None:
        require(self.task in TASK_CLASSES, f"phantom task {self.task!r} unknown; use one of {sorted(TASK_CLASSES)}")
        require(self.seed >= 0, f"phantom.seed must be >= 0, got {self.seed}")
        require(self.n_per_class >= 1, f"phantom.n_per_class must be >= 1, got {self.n_per_class}")
        require(16 <= self.hr_size <= 2048, f"phantom.hr_size must be 16..2048 px, got {self.hr_size}")
        require(4 <= self.lr_size < self.hr_size, f"phantom.lr_size must be 4..hr_size-1 px, got {self.lr_size}")
        require(0.0 <= self.lowres_fraction <= 1.0,
                f"phantom.lowres_fraction must be in 0..1, got {self.lowres_fraction}")
        require(1 <= self.supersample <= 4, f"phantom.supersample must be 1..4, got {self.supersample}")
        require(0.25 <= self.lesion_scale <= 4.0, f"phantom.lesion_scale must be 0.25..4, got {self.lesion_scale}")
        want = set(TASK_CLASSES["acne"])
        require(set(self.lesion_ranges) == want,
                f"phantom.lesion_ranges must have exactly the keys {sorted(want)}, got {sorted(self.lesion_ranges)}")
        for name, (lo, hi) in self.lesion_ranges.items():
            require(0 <= lo <= hi <= 200,
                    f"phantom.lesion_ranges.{name}: need 0 <= min <= max <= 200, got [{lo}, {hi}]")

    @property
    def classes(self) -> tuple[str, ...]:
        return TASK_CLASSES[self.task]

    @property
    def n_lowres(self) -> int:
        """Web images per class."""
        return int(self.n_per_class * self.lowres_fraction + 0.5)


@dataclasses.dataclass(frozen=True)
class PhantomResult:
    """What generate() wrote."""

    out_dir: Path
    config: PhantomConfig
    counts: dict[str, int]  # images per class
    web_counts: dict[str, int]  # low-resolution images per class
    lesions: dict[str, tuple[int, int]]  # observed (min, max) lesion count per acne class
    sha256: dict[str, str]  # image path (relative to out_dir) -> sha256 of its bytes
    seconds: float  # wall time

    def summary(self) -> str:
        cfg = self.config
        per = ", ".join(f"{c} {n} ({self.web_counts[c]} web)" for c, n in self.counts.items())
        les = "; lesions " + ", ".join(f"{c} {lo}-{hi}" for c, (lo, hi) in self.lesions.items()) if self.lesions else ""
        return (f"phantom {cfg.task} dataset (seed {cfg.seed}) in {self.out_dir}: {sum(self.counts.values())} images: "
                f"{per}; {cfg.hr_size} px high-res, {cfg.lr_size} px web{les}; {self.seconds:.1f} s")


def image_rng(cfg: PhantomConfig, class_index: int, index: int) -> np.random.Generator:
    """The RNG of one image: independent of every other image, so any image can be redrawn alone."""
    return np.random.default_rng([cfg.seed, _TASK_CODE[cfg.task], class_index, index])


def _lesion_sites(rng: np.random.Generator, n: int) -> list[tuple[float, float]]:
    """n face points (u, v) drawn uniformly over the forehead, cheek and chin regions (area-weighted)."""
    areas = [(u1 - u0) * (v1 - v0) for u0, u1, v0, v1 in REGIONS]
    weights = [a / sum(areas) for a in areas]
    sites = []
    while len(sites) < n:
        u0, u1, v0, v1 = REGIONS[int(rng.choice(len(REGIONS), p=weights))]
        u, v = rng.uniform(u0, u1), rng.uniform(v0, v1)
        if u * u + v * v < 0.88:  # stay inside the face outline
            sites.append((u, v))
    return sites


def _draw_acne(canvas: np.ndarray, rng: np.random.Generator, face: draw.Face, cfg: PhantomConfig, label: str) -> int:
    """Moles (distractors, any class) then the grade's lesions; returns the lesion count."""
    size = canvas.shape[0]
    for u, v in _lesion_sites(rng, int(rng.random() < 0.4)):
        draw.draw_mole(canvas, rng, *face.to_px(u, v), size * rng.uniform(0.005, 0.008))
    lo, hi = cfg.lesion_ranges[label]
    n = int(rng.integers(lo, hi + 1))
    for u, v in _lesion_sites(rng, n):
        kind = draw.LESION_KINDS[int(rng.choice(len(draw.LESION_KINDS), p=KIND_MIX[label]))]
        r = size * cfg.lesion_scale * rng.uniform(*RADIUS[kind])
        draw.draw_lesion(canvas, rng, *face.to_px(u, v), r, kind)
    return n


def render(cfg: PhantomConfig, label: str, index: int) -> tuple[Image.Image, int | None]:
    """Draw image ``index`` of class ``label`` at hr_size; returns (RGB image, lesion count or None)."""
    rng = image_rng(cfg, cfg.classes.index(label), index)
    size = cfg.hr_size * cfg.supersample
    canvas = np.empty((size, size, 3), dtype=np.float32)
    draw.draw_background(canvas, rng)
    face, look = draw.sample_face(rng, size), draw.sample_look(rng)
    face_alpha = draw.draw_head(canvas, rng, face, look)
    lesions = None
    if cfg.task == "mask":
        if rng.random() < 0.2:
            draw.draw_beard(canvas, rng, face, look, face_alpha)
        draw.draw_features(canvas, rng, face, look)
        if label == "mask":
            draw.draw_mask(canvas, rng, face)
    else:
        draw.draw_features(canvas, rng, face, look)
        lesions = _draw_acne(canvas, rng, face, cfg, label)
    draw.finish(canvas, rng)
    image = Image.fromarray(draw.to_uint8(canvas), "RGB")
    if cfg.supersample > 1:
        image = image.resize((cfg.hr_size, cfg.hr_size), Image.Resampling.LANCZOS)
    return image, lesions


def generate(cfg: PhantomConfig, out_dir: str | Path) -> PhantomResult:
    """Write the phantom dataset in the raw layout (images/*.png + labels.csv) to ``out_dir``.

    The first n_per_class - n_lowres images of each class are high-res (source ``phantom-hr``), the
    rest are downscaled to lr_size (``phantom-web``). ``out_dir`` must be new, empty or a previous
    raw-layout dataset; it is replaced in one rename when everything is written.
    """
    from acneops.core.progress import progress

    start = time.perf_counter()
    out_dir = Path(out_dir)
    rows, sha, lesion_span = [], {}, {}
    with staged_output(out_dir) as stage, progress(total=cfg.n_per_class * len(cfg.classes), desc="phantom",
                                                   unit="img", leave=False) as bar:
        for label in cfg.classes:
            for i in range(cfg.n_per_class):
                image, lesions = render(cfg, label, i)
                web = i >= cfg.n_per_class - cfg.n_lowres
                if web:
                    image = image.resize((cfg.lr_size, cfg.lr_size), Image.Resampling.LANCZOS)
                name = f"{IMAGES_SUBDIR}/{label}_{i:04d}.png"
                sha[name] = save_png(stage / name, image)
                rows.append({"image": name, "label": label, "lesions": "" if lesions is None else lesions,
                             "source": "phantom-web" if web else "phantom-hr", "split": ""})
                if lesions is not None:
                    lo, hi = lesion_span.get(label, (lesions, lesions))
                    lesion_span[label] = (min(lo, lesions), max(hi, lesions))
                bar.update()
        write_labels(stage, rows)
    counts = {c: cfg.n_per_class for c in cfg.classes}
    web = {c: cfg.n_lowres for c in cfg.classes}
    return PhantomResult(out_dir, cfg, counts, web, lesion_span, sha, time.perf_counter() - start)
