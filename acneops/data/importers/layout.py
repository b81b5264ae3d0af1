"""The raw layout an import writes (OUT/images/*, OUT/labels.csv, OUT/import_report.json), the result of
an import and its entry in the report. Shared by the ACNE04 and folder importers and by ``acneops.data.phantom``;
:mod:`.write` writes an import into OUT (a new layout, or a source appended to one)."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from pathlib import Path
from typing import Any, Iterator

from acneops.core.errors import AcneopsError
from acneops.core.io import atomic_dir, write_csv
from acneops.core.paths import IMAGES_SUBDIR, LABELS_FILE

RAW_COLUMNS = ["image", "label", "lesions", "source", "split"]  # labels.csv header, in this order
REPORT_FILE = "import_report.json"  # what an import left out and what it removed, next to labels.csv
MAX_LISTED = 30  # bad lines / files shown in one error message
SOURCE_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")  # a source name (labels.csv `source`, the folder images/<source>/)


@dataclasses.dataclass(frozen=True)
class ImportResult:
    """What an import wrote and what it left out (never silently); also written to OUT/import_report.json."""

    out_dir: Path
    source: str  # the source's name in labels.csv (default acne04 | folders; --source NAME)
    counts: dict[str, int]  # images per class
    splits: dict[str, int]  # images per fixed split ('' = left to ingest)
    unlisted: tuple[str, ...] = ()  # ACNE04 images in no list: imported with an empty split
    ignored: tuple[str, ...] = ()  # files not imported (not images / no class), relative to SRC
    refused: tuple[tuple[str, str], ...] = ()  # (path relative to SRC, reason): links leaving SRC, unparseable files
    skipped_lines: tuple[dict[str, Any], ...] = ()  # {file, line, text, reason} skipped with skip_bad_lines
    left_out: tuple[str, ...] = ()  # images named on a skipped line: not imported at all
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)  # what strip_metadata removed
    notes: tuple[str, ...] = ()  # anything else a person should know
    mode: str = "new"  # new: OUT holds this import only | append: added beside the sources already in OUT
    images_dir: str = IMAGES_SUBDIR  # where this import's files went: images (new) or images/<source> (append)
    layout: dict[str, int] = dataclasses.field(default_factory=dict)  # images per source in OUT after the import
    replaced: dict[str, int] = dataclasses.field(default_factory=dict)  # images per source a new import replaced

    @property
    def n_images(self) -> int:
        return sum(self.counts.values())

    @property
    def report_path(self) -> Path:
        return self.out_dir / REPORT_FILE

    def report(self) -> dict[str, Any]:
        """This import's entry in the report's ``imports`` history (paths relative to the source folder: no host
        paths end up in versioned data)."""
        return {"source": self.source, "mode": self.mode, "images_dir": self.images_dir, "replaced": self.replaced,
                "images": self.n_images, "counts": self.counts, "splits": self.splits,
                "refused": [{"path": p, "reason": r} for p, r in self.refused],
                "skipped_lines": list(self.skipped_lines), "left_out": list(self.left_out),
                "unlisted": list(self.unlisted), "ignored": list(self.ignored), "metadata": self.metadata,
                "notes": list(self.notes)}

    def summary(self) -> str:
        classes = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        splits = ", ".join(f"{k or 'unsplit'} {v}" for k, v in self.splits.items())
        verb = "appended" if self.mode == "append" else "imported"
        where = f"to {self.out_dir} under {self.images_dir}/" if self.mode == "append" else f"into {self.out_dir}"
        lines = [f"{verb} {self.n_images} images ({self.source}) {where}: {classes}; splits: {splits}"]
        if self.mode == "append":
            lines.append(f"{self.out_dir} now holds {sum(self.layout.values())} images: "
                         + ", ".join(f"{k} {v}" for k, v in self.layout.items()))
        if self.replaced:
            lines.append("replaced the previous layout in " + str(self.out_dir) + " ("
                         + ", ".join(f"{k} {v}" for k, v in self.replaced.items())
                         + " images); to add a source beside the others, import with --append")
        if self.unlisted:
            lines.append(f"{len(self.unlisted)} image(s) in no list, imported with an empty split (label from the "
                         "file name): " + preview(self.unlisted))
        if self.refused:
            lines.append(f"{len(self.refused)} file(s) refused, not read or not copied: "
                         + preview([f"{p} ({r})" for p, r in self.refused], 5))
        if self.skipped_lines:
            lines.append(f"{len(self.skipped_lines)} bad line(s) skipped: "
                         + preview([f"{s['file']} line {s['line']}: {s['reason']}" for s in self.skipped_lines], 5))
        if self.left_out:
            lines.append(f"{len(self.left_out)} image(s) named on a skipped line, not imported: "
                         + preview(self.left_out))
        if self.ignored:
            lines.append(f"{len(self.ignored)} file(s) not imported: " + preview(self.ignored))
        meta = self.metadata
        if meta.get("files_changed"):
            removed = ", ".join(f"{k} {v}" for k, v in meta["removed"].items())
            lines.append(f"metadata removed from {meta['files_changed']} file(s) ({removed}); pixels unchanged; "
                         f"EXIF orientation kept in {meta['orientation_kept']}")
        lines.extend(self.notes)
        lines.append(f"full list: {self.report_path}")
        return "\n".join(lines)


def preview(items: tuple[str, ...] | list[str], n: int = 10) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def bad_list(header: str, errors: list[str], fix: str) -> AcneopsError:
    """One error listing every problem (up to MAX_LISTED) and the fix."""
    shown = "\n  ".join(errors[:MAX_LISTED])
    more = f"\n  ... and {len(errors) - MAX_LISTED} more" if len(errors) > MAX_LISTED else ""
    return AcneopsError(f"{header}:\n  {shown}{more}\n{fix}")


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
    if header != ",".join(RAW_COLUMNS) or set(entries) - {LABELS_FILE, IMAGES_SUBDIR, REPORT_FILE}:
        raise AcneopsError(
            f"{out}: refusing to overwrite a non-empty folder that is not a previous import "
            f"(found {preview(entries, 5)}); choose a new or empty folder, or delete this one first"
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


def check_src(src: Path, out: Path) -> None:
    if not src.is_dir():
        raise AcneopsError(f"{src}: source folder not found")
    s, o = src.resolve(), out.resolve()
    if s == o or s in o.parents or o in s.parents:
        raise AcneopsError(f"{out}: output must not be inside the source {src} (or contain it); choose another folder")
