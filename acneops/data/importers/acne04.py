"""ACNE04 (``JPEGImages/levle{grade}_{n}.jpg`` + ``NNEW_{trainval,test}_{fold}.txt``) into the raw layout."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from acneops.core.config import require
from acneops.core.errors import AcneopsError
from acneops.core.paths import IMAGES_SUBDIR
from acneops.data.importers.layout import (
    REPORT_FILE,
    ImportResult,
    bad_list,
    check_src,
    preview,
)
from acneops.data.importers.source import check_entry
from acneops.data.importers.write import check_source_name, write_import

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
CLASS_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_ACNE04_NAME_RE = re.compile(r"^levle(\d+)_")
_LINE_RE = re.compile(r"^\s*(?P<name>.+?)\s+(?P<grade>\S+)\s+(?P<lesions>\S+)\s*$")  # name = all but 2 last fields
LINE_FORMAT = "each line is `<image name> <grade> <lesion count>`, e.g. `levle0_12.jpg 0 3` (the name may hold spaces)"


@dataclasses.dataclass(frozen=True)
class ImportersConfig:
    """params.yaml section ``importers`` (optional: missing means these defaults)."""

    # ACNE04 grade -> class name. ACNE04 grades 0..3 (level3 = "very severe", >50 lesions); the
    # product's classes are healthy/mild/moderate/severe, so level3 joins severe by default.
    acne04_grades: dict[str, str] = dataclasses.field(
        default_factory=lambda: {"0": "mild", "1": "moderate", "2": "severe", "3": "severe"}
    )

    def __post_init__(self) -> None:
        require(len(self.acne04_grades) > 0, "importers.acne04_grades: map at least one ACNE04 grade")
        for grade, label in self.acne04_grades.items():
            require(grade.lstrip("-").isdigit(), f"importers.acne04_grades: key {grade!r} is not an integer grade")
            require(
                bool(CLASS_RE.match(label)),
                f"importers.acne04_grades.{grade}: class name {label!r} must be lower-case letters, digits, _ or -",
            )

    @property
    def grade_map(self) -> dict[int, str]:
        return {int(k): v for k, v in self.acne04_grades.items()}


def line_name(text: str) -> str:
    """The image name a list line gives (all but the last two fields; the first field if fewer than 3)."""
    m = _LINE_RE.match(text)
    return m["name"] if m else (text.split() or [""])[0]


def parse_line(text: str, grades: dict[int, str]) -> tuple[str, int, int]:
    """(name, grade, lesions) from one list line, or ValueError saying what is wrong."""
    m = _LINE_RE.match(text)
    if not m:
        raise ValueError(f"expected 3 fields '<name> <grade> <lesions>', got {len(text.split())}: {text.strip()!r}")
    name, grade_s, lesions_s = m["name"], m["grade"], m["lesions"]
    if "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"image name {name!r} must be a plain file name inside JPEGImages/")
    try:
        grade = int(grade_s)
    except ValueError:
        raise ValueError(f"grade {grade_s!r} is not an integer") from None
    if grade not in grades:
        raise ValueError(
            f"unknown grade {grade} (mapped grades: {sorted(grades)}; map it in params.yaml importers.acne04_grades)"
        )
    try:
        lesions = int(lesions_s)
    except ValueError:
        raise ValueError(f"lesion count {lesions_s!r} is not an integer") from None
    if lesions < 0:
        raise ValueError(f"lesion count {lesions} is negative")
    return name, grade, lesions


@dataclasses.dataclass
class _Lists:
    """What the two list files say: good rows, bad lines and everything a person should be told."""

    rows: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    where: dict[str, str] = dataclasses.field(default_factory=dict)  # image -> "file line n"
    bad: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # {file, line, text, reason}
    named_on_bad: set[str] = dataclasses.field(default_factory=set)
    mismatched: list[str] = dataclasses.field(default_factory=list)

    def add(self, name: str, grade: int, lesions: int, split: str, label: str, here: str) -> None:
        m = _ACNE04_NAME_RE.match(name)
        if m and int(m.group(1)) != grade:
            self.mismatched.append(name)
        self.where[name] = here
        self.rows[name] = {"image": f"{IMAGES_SUBDIR}/{name}", "label": label, "lesions": lesions,
                           "source": "acne04", "split": split}


def _read_lists(src: Path, fold: int, grades: dict[int, str], files: dict[str, Path], refused: set[str]) -> _Lists:
    """Parse both list files; lines naming a refused file are dropped (the file is reported as refused)."""
    lists = _Lists()
    for split, stem in (("train", "NNEW_trainval"), ("test", "NNEW_test")):
        list_path = src / f"{stem}_{fold}.txt"
        text = list_path.read_bytes().decode("utf-8", errors="replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            here = f"{list_path.name} line {lineno}"
            try:
                name, grade, lesions = parse_line(line, grades)
                if name in refused:
                    continue
                if name not in files:
                    hint = f" (the name is all but the last two of the line's {len(line.split())} fields)" \
                        if len(line.split()) > 3 else ""
                    raise ValueError(f"image JPEGImages/{name} not found{hint}")
                if name in lists.rows:
                    raise ValueError(f"{name} is already listed at {lists.where[name]} (an image may appear once)")
            except ValueError as exc:
                lists.bad.append({"file": list_path.name, "line": lineno, "text": line.strip(), "reason": str(exc)})
                lists.named_on_bad.add(line_name(line))
                continue
            lists.add(name, grade, lesions, split, grades[grade], here)
    return lists


def _list_images(src: Path, images_dir: Path) -> tuple[dict[str, Path], list[tuple[str, str]], list[str]]:
    """(name -> real path of readable files, refused (path, reason), ignored) of JPEGImages/ (flat)."""
    root = Path(os.path.realpath(src))
    if not Path(os.path.realpath(images_dir)).is_relative_to(root):
        raise AcneopsError(f"{images_dir}: is a symbolic link to a folder outside {src}; nothing is read through a "
                           f"link that leaves the source: make JPEGImages/ a real folder (e.g. `cp -rL`)")
    files, refused, ignored = {}, [], []
    for path in sorted(images_dir.iterdir()):
        kind, reason = check_entry(path, root)
        rel = f"JPEGImages/{path.name}"
        if kind == "file":
            files[path.name] = Path(os.path.realpath(path))
        elif kind == "refused":
            refused.append((rel, reason))
        else:
            ignored.append(f"{rel} ({reason or 'a folder: ACNE04 images are flat'})")
    return files, refused, ignored


def import_acne04(src: str | Path, out: str | Path, fold: int = 0, config: ImportersConfig | None = None,
                  skip_bad_lines: bool = False, append: bool = False, source: str = "acne04") -> ImportResult:
    """Import ACNE04: trainval rows get split ``train`` (ingest carves val from it), test rows ``test``.

    Images in no list are imported with an empty split when their file name gives a mapped grade
    (``levle{grade}_``), otherwise reported as not imported. Bad list lines fail the import with one
    message naming each; with ``skip_bad_lines`` they are skipped instead, listed in the report, and
    every image a bad line names is left out (a skipped line never changes an image's label or split).
    Files are copied without metadata (acneops.data.metadata); links leaving SRC are never read. ``source`` names
    the rows in labels.csv; ``append`` adds them beside the sources already in OUT (importers.write).
    """
    src, out = Path(src), Path(out)
    check_source_name(source)
    check_src(src, out)
    grades = (config or ImportersConfig()).grade_map
    images_dir = src / "JPEGImages"
    if not images_dir.is_dir():
        raise AcneopsError(
            f"{images_dir}: not found; the ACNE04 layout is SRC/JPEGImages/*.jpg + SRC/NNEW_*_<fold>.txt"
        )
    missing = [p.name for p in (src / f"NNEW_trainval_{fold}.txt", src / f"NNEW_test_{fold}.txt") if not p.is_file()]
    if missing:
        folds = sorted(p.stem.rsplit("_", 1)[-1] for p in src.glob("NNEW_test_*.txt"))
        raise AcneopsError(f"{src}: {', '.join(missing)} not found for fold {fold} (folds present: {folds or 'none'})")
    files, refused, ignored = _list_images(src, images_dir)
    lists = _read_lists(src, fold, grades, files, {Path(p).name for p, _ in refused})
    if lists.bad and not skip_bad_lines:
        raise bad_list(f"{src}: {len(lists.bad)} bad line(s) in the ACNE04 fold-{fold} lists",
                       [f"{b['file']} line {b['line']}: {b['reason']}" for b in lists.bad],
                       f"fix: {LINE_FORMAT}; or import the other lines with --skip-bad-lines "
                       f"(Python: skip_bad_lines=True): the bad lines are then listed in {out / REPORT_FILE}")
    left_out = sorted(lists.named_on_bad & (set(files) | set(lists.rows)))
    rows = {k: v for k, v in lists.rows.items() if k not in lists.named_on_bad}
    if not rows:
        raise AcneopsError(f"{src}: the fold-{fold} lists name no importable image; check NNEW_trainval_{fold}.txt")
    unlisted = []
    for name in sorted(set(files) - set(lists.rows) - lists.named_on_bad):
        m = _ACNE04_NAME_RE.match(name)
        if Path(name).suffix.lower() in IMAGE_EXTENSIONS and m and int(m.group(1)) in grades:
            unlisted.append(name)
            rows[name] = {"image": f"{IMAGES_SUBDIR}/{name}", "label": grades[int(m.group(1))], "lesions": "",
                          "source": "acne04", "split": ""}
        else:
            ignored.append(f"JPEGImages/{name}")
    notes = [f"imported from the ACNE04 fold-{fold} lists (NNEW_trainval_{fold}.txt, NNEW_test_{fold}.txt)"]
    if mismatched := [n for n in lists.mismatched if n in rows]:
        notes.append(f"{len(mismatched)} image(s) whose file-name level differs from the listed grade "
                     f"(the list wins): {preview(mismatched)}")
    return write_import(out, rows, {n: (f"JPEGImages/{n}", files[n]) for n in rows}, source, append, unlisted=unlisted,
                        ignored=ignored, refused=refused, skipped_lines=lists.bad, left_out=left_out, notes=notes)
