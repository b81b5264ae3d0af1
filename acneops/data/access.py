"""The one door to the restored real images, and the guard of the frozen test split.

Every stage that reads real images asks for a split through :func:`load_split` and names its
``role``. The test split is frozen at ingest; only ``evaluate`` (and the data stages that build it)
may read it. A GAN, the sorter or the synthesize stage asking for it gets :class:`SplitAccessError`
— the contract is enforced here, not by convention. When ``ACNEOPS_ACCESS_LOG`` names a file, every
granted read is appended to it as JSONL (role, split, files), so tests can prove which files a
whole pipeline run touched.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from acneops.core.io import append_jsonl, read_csv

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.csv"  # per split: datasets/restored/<split>/manifest.csv
ACCESS_LOG_ENV = "ACNEOPS_ACCESS_LOG"

# Which real splits each role may read. The test split is readable by the data stages that create
# it and by `evaluate` (and the anonymity audit run inside evaluate) only.
ROLE_SPLITS: dict[str, frozenset[str]] = {
    "ingest": frozenset(SPLITS),
    "restore": frozenset(SPLITS),
    "gan": frozenset({"train"}),
    "sorter": frozenset({"train", "val"}),
    "sort": frozenset({"val"}),
    "synthesize": frozenset({"train"}),
    "classifier": frozenset({"train", "val"}),
    "evaluate": frozenset(SPLITS),
}


class SplitAccessError(PermissionError):
    """A stage asked for a real split its role may not read (above all: the frozen test split)."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """One restored real image."""

    path: Path  # absolute or repo-relative path of the PNG
    label: str  # class name
    split: str  # train | val | test
    lesions: int | None = None  # true lesion count when known
    source: str = ""  # where the raw image came from (phantom-hr, phantom-web, acne04, ...)


def check_access(role: str, split: str) -> None:
    """Raise SplitAccessError unless ``role`` may read ``split``."""
    if role not in ROLE_SPLITS:
        raise ValueError(f"unknown data role '{role}'; known roles: {sorted(ROLE_SPLITS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; splits are {SPLITS}")
    if split not in ROLE_SPLITS[role]:
        raise SplitAccessError(
            f"role '{role}' may not read the real '{split}' split (allowed: {sorted(ROLE_SPLITS[role])}). "
            "The test split is frozen at ingest and only `evaluate` reads it; fix the stage, not this guard."
        )


def load_split(
    restored_dir: str | Path, split: str, role: str, labels: tuple[str, ...] | None = None
) -> list[Sample]:
    """The samples of one restored split, filtered to ``labels`` if given, after the access check."""
    check_access(role, split)
    split_dir = Path(restored_dir) / split
    manifest = split_dir / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: restored manifest missing; run `dvc repro restore` first")
    samples = []
    for row in read_csv(manifest):
        if labels is not None and row["label"] not in labels:
            continue
        lesions = row.get("lesions") or ""
        samples.append(
            Sample(
                path=split_dir / row["file"],
                label=row["label"],
                split=split,
                lesions=int(lesions) if lesions.strip() else None,
                source=row.get("source", ""),
            )
        )
    log = os.environ.get(ACCESS_LOG_ENV)
    if log:
        append_jsonl(log, {"role": role, "split": split, "files": [str(s.path) for s in samples]})
    return samples
