"""Bring your own data: import ACNE04 or a folder-per-class dataset into the canonical raw layout.

The raw layout (what `ingest` reads, and what `acneops data phantom` writes too) is::

    OUT/images/<file>
    OUT/labels.csv   header: image,label,lesions,source,split

``image`` is the path relative to OUT, ``lesions`` an integer or empty, ``source`` a short tag
(``acne04``, ``folders``, ``phantom-hr``, ``phantom-web``) and ``split`` empty or a fixed
train/val/test assignment that ingest must respect. Importers copy image bytes unchanged (ingest
decodes, validates and strips metadata); they check names, labels and lists, and fail with one
message listing every bad line rather than importing half a dataset. A whole import is built in a
hidden sibling folder and renamed into place, so OUT is either the old import or the new one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

from acneops.core.config import require
from acneops.core.errors import AcneopsError
from acneops.core.io import atomic_dir, write_csv
from acneops.core.paths import IMAGES_SUBDIR, LABELS_FILE

RAW_COLUMNS = ["image", "label", "lesions", "source", "split"]  # labels.csv header, in this order
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
SPLITS = ("train", "val", "test")
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_CLASS_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_ACNE04_NAME_RE = re.compile(r"^levle(\d+)_")
MAX_LISTED = 30  # bad lines / files shown in one error message


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
                bool(_CLASS_RE.match(label)),
                f"importers.acne04_grades.{grade}: class name {label!r} must be lower-case letters, digits, _ or -",
            )

    @property
    def grade_map(self) -> dict[int, str]:
        return {int(k): v for k, v in self.acne04_grades.items()}


@dataclasses.dataclass(frozen=True)
class ImportResult:
    """What an import wrote and what it left out (never silently)."""

    out_dir: Path
    source: str  # acne04 | folders
    counts: dict[str, int]  # images per class
    splits: dict[str, int]  # images per fixed split ('' = left to ingest)
    unlisted: tuple[str, ...] = ()  # ACNE04 images in no list: imported with an empty split
    ignored: tuple[str, ...] = ()  # files not imported (not images / no class), relative to SRC
    notes: tuple[str, ...] = ()  # anything else a person should know

    @property
    def n_images(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        classes = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        splits = ", ".join(f"{k or 'unsplit'} {v}" for k, v in self.splits.items())
        lines = [f"imported {self.n_images} images ({self.source}) into {self.out_dir}: {classes}; splits: {splits}"]
        if self.unlisted:
            lines.append(
                f"{len(self.unlisted)} image(s) in no list, imported with an empty split (label from the file name): "
                + _preview(self.unlisted)
            )
        if self.ignored:
            lines.append(f"{len(self.ignored)} file(s) not imported: " + _preview(self.ignored))
        lines.extend(self.notes)
        return "\n".join(lines)


def _preview(items: tuple[str, ...] | list[str], n: int = 10) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def _bad_list(header: str, errors: list[str], fix: str) -> AcneopsError:
    """One error listing every problem (up to MAX_LISTED) and the fix."""
    shown = "\n  ".join(errors[:MAX_LISTED])
    more = f"\n  ... and {len(errors) - MAX_LISTED} more" if len(errors) > MAX_LISTED else ""
    return AcneopsError(f"{header}:\n  {shown}{more}\n{fix}")


# ---------------------------------------------------------------------------------------------
# Raw layout output (shared with acneops.data.phantom)


def check_output_dir(out: Path) -> None:
    """Refuse an OUT that exists and is not empty unless it holds a previous raw-layout import."""
    out = Path(out)
    resolved = out.resolve()
    if resolved == Path(resolved.anchor) or resolved in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
        raise AcneopsError(
            f"{out}: output must be a dedicated folder (not '.', a parent of it or '/'); name a new folder"
        )
    if not out.exists():
        return
    if not out.is_dir():
        raise AcneopsError(f"{out}: exists and is not a folder; choose another output path")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    labels = out / LABELS_FILE
    header = labels.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0].strip() if labels.is_file() else ""
    if header != ",".join(RAW_COLUMNS) or set(entries) - {LABELS_FILE, IMAGES_SUBDIR}:
        raise AcneopsError(
            f"{out}: refusing to overwrite a non-empty folder that is not a previous import "
            f"(found {_preview(entries, 5)}); choose a new or empty folder, or delete this one first"
        )


@contextlib.contextmanager
def staged_output(out: str | Path) -> Iterator[Path]:
    """Yield a hidden staging folder (with images/); on success it replaces OUT in one rename (io.atomic_dir)."""
    out = Path(out)
    check_output_dir(out)
    with atomic_dir(out) as stage:
        (stage / IMAGES_SUBDIR).mkdir(parents=True)
        yield stage


def write_labels(folder: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``folder/labels.csv`` (raw layout header) atomically."""
    write_csv(Path(folder) / LABELS_FILE, rows, RAW_COLUMNS)


def _check_src(src: Path, out: Path) -> None:
    if not src.is_dir():
        raise AcneopsError(f"{src}: source folder not found")
    s, o = src.resolve(), out.resolve()
    if s == o or s in o.parents or o in s.parents:
        raise AcneopsError(f"{out}: output must not be inside the source {src} (or contain it); choose another folder")


# ---------------------------------------------------------------------------------------------
# ACNE04


def _parse_acne04_line(text: str, grades: dict[int, str], files: dict[str, Path]) -> tuple[str, int, int]:
    """(name, grade, lesions) from one list line, or ValueError saying what is wrong."""
    parts = text.split()
    if len(parts) != 3:
        raise ValueError(f"expected 3 fields 'name grade lesions', got {len(parts)}: {text.strip()!r}")
    name, grade_s, lesions_s = parts
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
    if name not in files:
        raise ValueError(f"image JPEGImages/{name} not found")
    return name, grade, lesions


def _read_acne04_lists(src: Path, fold: int, grades: dict[int, str], files: dict[str, Path]):
    """Rows for every listed image plus notes; raises one error naming every bad line."""
    rows: dict[str, dict[str, Any]] = {}
    where: dict[str, str] = {}
    errors, mismatched = [], []
    for split, stem in (("train", "NNEW_trainval"), ("test", "NNEW_test")):
        list_path = src / f"{stem}_{fold}.txt"
        text = list_path.read_bytes().decode("utf-8", errors="replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            here = f"{list_path.name} line {lineno}"
            try:
                name, grade, lesions = _parse_acne04_line(line, grades, files)
            except ValueError as exc:
                errors.append(f"{here}: {exc}")
                continue
            if name in rows:
                errors.append(f"{here}: {name} is already listed at {where[name]} (an image may appear once)")
                continue
            m = _ACNE04_NAME_RE.match(name)
            if m and int(m.group(1)) != grade:
                mismatched.append(name)
            where[name] = here
            rows[name] = {"image": f"{IMAGES_SUBDIR}/{name}", "label": grades[grade], "lesions": lesions,
                          "source": "acne04", "split": split}
    if errors:
        raise _bad_list(f"{src}: {len(errors)} bad line(s) in the ACNE04 fold-{fold} lists", errors,
                        "fix: each line is `<image name> <grade> <lesion count>`, e.g. `levle0_12.jpg 0 3`")
    notes = []
    if mismatched:
        notes.append(f"{len(mismatched)} image(s) whose file-name level differs from the listed grade "
                     f"(the list wins): {_preview(mismatched)}")
    return rows, notes


def import_acne04(
    src: str | Path, out: str | Path, fold: int = 0, config: ImportersConfig | None = None
) -> ImportResult:
    """Import ACNE04 (``JPEGImages/levle{grade}_{n}.jpg`` + ``NNEW_{trainval,test}_{fold}.txt``).

    trainval rows get split ``train`` (ingest carves val from it), test rows ``test``. Images in no
    list are imported with an empty split when their file name gives a mapped grade
    (``levle{grade}_``), otherwise reported as not imported. Bytes are copied unchanged.
    """
    src, out = Path(src), Path(out)
    _check_src(src, out)
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
    files = {p.name: p for p in images_dir.iterdir() if p.is_file()}
    rows, notes = _read_acne04_lists(src, fold, grades, files)
    if not rows:
        raise AcneopsError(f"{src}: the fold-{fold} lists name no images; check NNEW_trainval_{fold}.txt")
    unlisted, ignored = [], []
    for name in sorted(set(files) - set(rows)):
        m = _ACNE04_NAME_RE.match(name)
        if Path(name).suffix.lower() in IMAGE_EXTENSIONS and m and int(m.group(1)) in grades:
            unlisted.append(name)
            rows[name] = {"image": f"{IMAGES_SUBDIR}/{name}", "label": grades[int(m.group(1))], "lesions": "",
                          "source": "acne04", "split": ""}
        else:
            ignored.append(f"JPEGImages/{name}")
    return _write_import(out, rows, {n: files[n] for n in rows}, "acne04", unlisted, ignored, notes)


def _write_import(out: Path, rows: dict[str, dict[str, Any]], sources: dict[str, Path], source: str,
                  unlisted: list[str], ignored: list[str], notes: list[str]) -> ImportResult:
    """Copy the files (dest name -> source path) and write labels.csv, all in one staged swap."""
    ordered = [rows[k] for k in sorted(rows)]
    with staged_output(out) as stage:
        for key in sorted(rows):
            shutil.copyfile(sources[key], stage / rows[key]["image"])
        write_labels(stage, ordered)
    counts: dict[str, int] = {}
    splits: dict[str, int] = {}
    for r in ordered:
        counts[r["label"]] = counts.get(r["label"], 0) + 1
        splits[r["split"]] = splits.get(r["split"], 0) + 1
    return ImportResult(out, source, dict(sorted(counts.items())), dict(sorted(splits.items())),
                        tuple(unlisted), tuple(ignored), tuple(notes))


# ---------------------------------------------------------------------------------------------
# Folder per class


def class_name(folder_name: str) -> str:
    """Class name of a folder: lower-cased, spaces to underscores ('Very Severe' -> 'very_severe')."""
    return "_".join(folder_name.strip().lower().split())


def _class_folders(src: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """[(class folder, fixed split)] and loose top-level files; SRC/<split>/<class>/ gives a fixed split."""
    dirs = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = sorted(p.name for p in src.iterdir() if not p.is_dir())
    if not dirs:
        raise AcneopsError(
            f"{src}: no class sub-folders found; expected one folder per class, e.g. {src}/Healthy/img001.jpg "
            f"and {src}/Mild/img002.jpg (or {src}/train/<Class>/... and {src}/test/<Class>/... for a fixed split)"
        )
    if all(d.name.lower() in SPLIT_FOLDERS for d in dirs):
        pairs = []
        for d in dirs:
            subdirs = [c for c in sorted(d.iterdir()) if c.is_dir() and not c.name.startswith(".")]
            pairs += [(c, SPLIT_FOLDERS[d.name.lower()]) for c in subdirs]
            loose += [f"{d.name}/{p.name}" for p in sorted(d.iterdir()) if not p.is_dir()]
        if not pairs:
            raise AcneopsError(f"{src}: split folders {[d.name for d in dirs]} contain no class sub-folders "
                               f"(expected {src}/train/<Class>/<image>)")
        return pairs, loose
    return [(d, "") for d in dirs], loose


def import_folders(src: str | Path, out: str | Path) -> ImportResult:
    """Import SRC/<Class>/<images> (any depth inside a class folder) into the raw layout.

    Class = folder name lower-cased with spaces as underscores. Files whose extension is not an
    image extension are listed in the result, not imported; a class folder without images is an
    error. Output names are ``images/<class>__<path inside the class folder, '/' -> '__'>`` (with a
    ``<split>__`` prefix for the SRC/<split>/<Class>/ layout), so names never collide across classes.
    """
    src, out = Path(src), Path(out)
    _check_src(src, out)
    folders, loose = _class_folders(src)
    ignored = [f"{name} (not in a class folder)" for name in loose]
    rows: dict[str, dict[str, Any]] = {}
    sources: dict[str, Path] = {}
    owner: dict[tuple[str, str], str] = {}
    for folder, split in folders:
        label = class_name(folder.name)
        rel_folder = folder.relative_to(src).as_posix()
        if not _CLASS_RE.match(label):
            raise AcneopsError(f"{folder}: folder name gives class {label!r}; use letters, digits, spaces, _ or -")
        if (split, label) in owner:
            raise AcneopsError(f"{folder}: folders '{owner[split, label]}' and '{rel_folder}' both give class "
                               f"'{label}'; merge or rename one")
        owner[split, label] = rel_folder
        n_before = len(rows)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = path.relative_to(folder)
            if path.suffix.lower() not in IMAGE_EXTENSIONS or path.name.startswith("."):
                ignored.append(path.relative_to(src).as_posix())
                continue
            name = "__".join(([split] if split else []) + [label, *rel.parts])
            if name in rows:
                raise AcneopsError(f"{path}: output name {name} collides with {sources[name]}; rename one of them")
            rows[name] = {"image": f"{IMAGES_SUBDIR}/{name}", "label": label, "lesions": "", "source": "folders",
                          "split": split}
            sources[name] = path
        if len(rows) == n_before:
            raise AcneopsError(f"{folder}: class folder has no images (extensions {sorted(IMAGE_EXTENSIONS)}); "
                               "add images or remove the folder")
    return _write_import(out, rows, sources, "folders", [], ignored, [])
