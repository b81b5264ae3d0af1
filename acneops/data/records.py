"""The row records ingest passes around: one labels.csv row (:class:`Item`) and the quarantine list
(:class:`Quarantine`), shared by validation (acneops.data.ingest) and splitting (acneops.data.split)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class Item:
    """One labels.csv row on its way through ingest."""

    row: int  # line number in labels.csv (header = 1)
    image: str  # normalised path relative to data_dir
    label: str
    lesions: str  # "" or a non-negative integer as text
    source: str
    fixed_split: str  # "" or train/val/test from the importer
    path: Path | None = None  # resolved file path once the path checks passed
    info: dict[str, Any] = dataclasses.field(default_factory=dict)  # sha256, phash, width, height
    split: str = ""
    group: str = ""



class Quarantine:
    """Collects quarantined rows: every row not in the manifest is here with a reason."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def add(self, image: str, row: int, kind: str, reason: str) -> None:
        self.entries.append({"image": image, "row": row, "kind": kind, "reason": reason})

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(e["kind"] for e in self.entries).items()))
