"""Classifier data: labelled image lists (real restored splits, synthetic manifests), Dataset, transforms.

Real images are listed only through :func:`acneops.data.access.load_split` (which guards the test
split); synthetic images come from any "synthetic manifest" folder: ``<dir>/manifest.csv`` with at
least the columns ``file`` (relative to ``<dir>``) and ``label`` (or ``class``). Every list is checked
up front — a class with no images, a manifest row naming a missing file — so a bad input fails with
the file and row before any training starts.

The training transform is the "traditional augmentation" of the DCGAN method: random rotation,
brightness jitter and horizontal flip.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any, Callable, Sequence

from torch.utils.data import Dataset

from acneops.core.errors import StageError
from acneops.core.io import read_csv
from acneops.data.access import MANIFEST, load_split
from acneops.data.decode import read_rgb

SYNTHETIC_MANIFEST = "manifest.csv"  # <synthetic_dir>/manifest.csv, columns file,label (or class)


@dataclasses.dataclass(frozen=True)
class Item:
    """One labelled image for a classifier."""

    path: Path  # image file
    label: str  # class name
    origin: str  # 'real' or 'synthetic' (counts in reports)


def real_items(restored_dir: Path, split: str, role: str, labels: Sequence[str],
               absent_ok: Sequence[str] = ()) -> list[Item]:
    """The restored real images of ``split`` in ``labels``, read through the split guard. Every class must have one,
    except those in ``absent_ok`` (prior-only classes: the data has none)."""
    try:
        samples = load_split(restored_dir, split, role=role, labels=tuple(labels))
    except FileNotFoundError as exc:  # the manifest itself is missing: an input problem, not a bug
        raise StageError(str(exc)) from exc
    items = [Item(Path(s.path), s.label, "real") for s in samples]
    where = Path(restored_dir) / split / MANIFEST
    check_labels_present(items, [c for c in labels if c not in absent_ok], str(where))
    for item in items:
        if not item.path.is_file():
            raise StageError(f"{where}: image {item.path} (label {item.label}) is missing; re-run `dvc repro restore`")
    return items


def _label_column(rows: list[dict[str, str]], manifest: Path) -> str:
    columns = set(rows[0]) if rows else set()
    if "file" not in columns or not ({"label", "class"} & columns):
        raise StageError(
            f"{manifest}: a synthetic manifest needs the columns 'file' and 'label' (or 'class'); "
            f"found {sorted(columns)}"
        )
    return "label" if "label" in columns else "class"


def synthetic_items(synthetic_dir: Path, labels: Sequence[str], per_class: int = 0) -> list[Item]:
    """Images of a synthetic manifest folder in ``labels``; at most ``per_class`` per class (0: all).

    The cap keeps the first rows of each class in manifest order (the synthesize stage writes them
    in seed order), so the subset is deterministic. Rows of other classes are ignored.
    """
    synthetic_dir = Path(synthetic_dir)
    manifest = synthetic_dir / SYNTHETIC_MANIFEST
    if not synthetic_dir.is_dir():
        raise StageError(f"{synthetic_dir}: synthetic folder not found; run `dvc repro synthesize` or fix synthetic_dir")
    if not manifest.is_file():
        raise StageError(f"{manifest}: synthetic manifest missing; {synthetic_dir} is empty or not a synthetic set")
    rows = read_csv(manifest)
    if not rows:
        raise StageError(f"{manifest}: synthetic manifest has no rows; {synthetic_dir} holds no images")
    column = _label_column(rows, manifest)
    counts = {label: 0 for label in labels}
    items = []
    for row_no, row in enumerate(rows, start=1):
        label = row[column]
        if label not in counts or (per_class and counts[label] >= per_class):
            continue
        path = synthetic_dir / row["file"]
        if not row["file"] or not path.is_file():
            raise StageError(
                f"{manifest}: row {row_no} (line {row_no + 1}) names file '{row['file']}' which does not "
                f"exist under {synthetic_dir}; regenerate the set or fix the manifest"
            )
        counts[label] += 1
        items.append(Item(path, label, "synthetic"))
    check_labels_present(items, labels, str(manifest))
    return items


def check_labels_present(items: Sequence[Item], labels: Sequence[str], where: str) -> None:
    """Every class in ``labels`` must have at least one image, else a StageError naming the source."""
    present = {item.label for item in items}
    absent = [label for label in labels if label not in present]
    if absent:
        raise StageError(
            f"{where}: no images of class(es) {absent} (labels in params: {list(labels)}; "
            f"found: {sorted(present)}); fix train_classifier.labels or the data (a class the data lacks on "
            "purpose, as ACNE04 lacks healthy faces, goes in ingest.prior_classes)"
        )


def holdout_split(items: Sequence[Item], fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """Split ``items`` per class into (train, holdout) with ``fraction`` held out (at least one each)."""
    rng = random.Random(seed)
    train, held = [], []
    for label in sorted({it.label for it in items}):
        group = [it for it in items if it.label == label]
        rng.shuffle(group)
        n_held = min(max(1, round(fraction * len(group))), len(group) - 1)
        if n_held < 1:
            raise StageError(f"class '{label}' has {len(group)} synthetic image(s): too few for a holdout")
        held += group[:n_held]
        train += group[n_held:]
    return train, held


def per_class_subset(items: Sequence[Item], fraction: float, seed: int) -> list[Item]:
    """``fraction`` of the items of each class (at least one), drawn with ``seed``, in their original order."""
    rng = random.Random(seed)
    keep: set[Path] = set()
    for label in sorted({it.label for it in items}):
        group = sorted(it.path for it in items if it.label == label)
        keep.update(rng.sample(group, max(1, round(fraction * len(group)))))
    return [it for it in items if it.path in keep]


def eval_transform(img_size: int, mean: Sequence[float], std: Sequence[float]) -> Callable[[Any], Any]:
    """PIL RGB -> normalised tensor (3, S, S): resize to ``img_size`` px, scale, normalise."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize((img_size, img_size), interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.ToTensor(),
            T.Normalize(list(mean), list(std)),
        ]
    )


def train_transform(
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    rotation_deg: float,
    brightness: float,
    hflip: float,
) -> Callable[[Any], Any]:
    """Traditional augmentation then the eval pipeline: rotation (±deg), brightness (±share), h-flip (p)."""
    from torchvision import transforms as T

    steps: list[Any] = [T.Resize((img_size, img_size), interpolation=T.InterpolationMode.BILINEAR, antialias=True)]
    if rotation_deg > 0:
        steps.append(T.RandomRotation(rotation_deg, interpolation=T.InterpolationMode.BILINEAR))
    if brightness > 0:
        steps.append(T.ColorJitter(brightness=brightness))
    if hflip > 0:
        steps.append(T.RandomHorizontalFlip(hflip))
    steps += [T.ToTensor(), T.Normalize(list(mean), list(std))]
    return T.Compose(steps)


class ImageDataset(Dataset):
    """A torch Dataset of (image tensor (3, S, S), class index) over ``items`` (decoded lazily)."""

    def __init__(self, items: Sequence[Item], labels: Sequence[str], transform: Callable[[Any], Any]):
        self.items = list(items)
        self.index = {label: i for i, label in enumerate(labels)}
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        item = self.items[i]
        return self.transform(read_rgb(item.path, fix="remove or regenerate it")), self.index[item.label]
