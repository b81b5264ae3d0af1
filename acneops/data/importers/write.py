"""Writing an import into OUT: a new raw layout, or one more source appended to an existing layout.

Why appending: the paper's data is several sources in one dataset (ACNE04 plus web photos); each keeps its name in
the ``source`` column, and ingest deduplicates across all of them (an exact copy in two sources is quarantined, a
resized or recompressed one joins the other's near-duplicate group and split).

- **New** (no ``--append``): OUT must be missing, empty or a previous raw layout, which is replaced as a whole (as
  before appending existed; the summary names the sources it replaced). Files go to ``images/<name>``.
- **Append** (``--append``): everything OUT holds is kept — every file under ``images/``, labels.csv byte for byte
  (the new rows are added at its end) and the import history. The new files go to ``images/<source>/<name>``:
  source names are unique in a layout, so they cannot collide with earlier files. A source already in OUT is an
  error (appending it again would add every image twice), as is a file already at ``images/<source>``. Appending
  to a missing or empty OUT is a plain first import.

Either way the complete new layout is built in a hidden sibling folder and swapped in with one rename
(:func:`acneops.core.io.atomic_dir`); an append hard-links the old files into it (ACNE04 is gigabytes; files in a
raw layout are never changed in place), copying only where links are not supported. A failed or killed import
leaves the old OUT as it was, readable by ingest.

``import_report.json`` holds the layout's totals (``images``, ``counts``, ``splits``, per ``sources``) and
``imports``: one entry per import in order (:meth:`ImportResult.report`), so an append adds to the history
instead of overwriting it. A report of an earlier acneops (one import, no ``imports`` list) becomes the first entry.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from acneops.core.errors import AcneopsError
from acneops.core.io import read_csv, write_json, write_text
from acneops.core.paths import IMAGES_SUBDIR, LABELS_FILE
from acneops.data.importers.layout import (
    RAW_COLUMNS,
    REPORT_FILE,
    SOURCE_RE,
    ImportResult,
    check_output_dir,
    preview,
    staged_output,
    write_labels,
)
from acneops.data.importers.source import read_regular_file
from acneops.data.metadata import UnsupportedImage, strip_metadata


@dataclasses.dataclass(frozen=True)
class Layout:
    """The raw layout an import finds in OUT."""

    labels_text: str  # labels.csv as written (an append keeps it byte for byte)
    sources: dict[str, int]  # images per source named in labels.csv
    imports: list[dict[str, Any]]  # import_report.json's history, oldest first ([] when there is no report)


def check_source_name(source: str) -> None:
    if not SOURCE_RE.match(source or ""):
        raise AcneopsError(f"source name {source!r}: use lower-case letters, digits, _ or - (e.g. --source web); "
                           "it is the labels.csv `source` of every image and the folder images/<source>/ of an append")


def read_layout(out: Path) -> Layout | None:
    """The raw layout in OUT, or None when OUT is missing or holds no labels.csv (check_output_dir vetted it)."""
    labels = out / LABELS_FILE
    if not labels.is_file():
        return None
    text = labels.read_text(encoding="utf-8")
    sources = Counter((r.get("source") or "") for r in csv.DictReader(io.StringIO(text)))
    return Layout(text, dict(sorted(sources.items())), _read_history(out / REPORT_FILE))


def _read_history(path: Path) -> list[dict[str, Any]]:
    """The ``imports`` list of an import report; an older one-import report is one entry; no report, none."""
    if not path.is_file():
        return []
    fix = (f"an import would lose the history it holds: restore it (`dvc checkout`, git) or delete {path} to start "
           "a new history")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AcneopsError(f"{path}: not readable JSON ({exc}); {fix}") from exc
    if isinstance(report, dict) and isinstance(report.get("imports"), list):
        return list(report["imports"])
    if isinstance(report, dict) and "source" in report:
        return [report]
    raise AcneopsError(f"{path}: not an import report (neither an 'imports' list nor a 'source'); {fix}")


def check_append(layout: Layout, source: str, out: Path) -> None:
    """An appended source must be new to the layout and its folder images/<source> free."""
    recorded = [e for e in layout.imports if e.get("source") == source]
    if source in layout.sources or recorded:
        raise AcneopsError(
            f"{out}: source '{source}' is already in this layout ({layout.sources.get(source, 0)} images in "
            f"{LABELS_FILE}, {len(recorded)} import(s) in {REPORT_FILE}); appending it again would add its images "
            f"twice. Give this import another name (--source {source}-2), or rebuild the layout: import the first "
            "source without --append, then append each other source once")
    folder = out / IMAGES_SUBDIR / source
    if folder.exists() or folder.is_symlink():
        raise AcneopsError(f"{folder}: already exists although no {LABELS_FILE} row has source '{source}'; move it "
                           "out of the layout or choose another --source")


def link_tree(src_dir: Path, dst_dir: Path) -> None:
    """Every entry below ``src_dir`` at the same place below ``dst_dir``: files hard-linked (copied where links
    are not supported), symbolic links recreated as links (DVC's symlink cache type), folders made."""
    for dirpath, dirnames, filenames in os.walk(src_dir, followlinks=False):
        here = Path(dirpath)
        target = dst_dir / here.relative_to(src_dir)
        target.mkdir(parents=True, exist_ok=True)
        for name in sorted(filenames) + [d for d in sorted(dirnames) if (here / d).is_symlink()]:
            path = here / name
            if path.is_symlink():
                os.symlink(os.readlink(path), target / name)
                continue
            try:
                os.link(path, target / name)
            except OSError:
                shutil.copy2(path, target / name)


def _copy_stripped(stage: Path, rows: dict[str, dict[str, Any]], sources: dict[str, tuple[str, Path]],
                   refused: list[tuple[str, str]]) -> dict[str, Any]:
    """Write every source file without its metadata; unparseable files move from ``rows`` to ``refused``."""
    from acneops.core.progress import progress

    removed: dict[str, int] = {}
    changed, oriented, converted = 0, 0, []
    for key in progress(sorted(rows), desc="import", unit="img"):
        rel, path = sources[key]
        try:
            clean = strip_metadata(read_regular_file(path))
        except (UnsupportedImage, OSError) as exc:
            refused.append((rel, str(exc)))
            del rows[key]
            continue
        if clean.suffix:
            rows[key]["image"] += clean.suffix
            converted.append(rel)
        dest = stage / rows[key]["image"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(clean.data)  # the staging folder is renamed in whole
        changed += bool(clean.removed)
        oriented += clean.orientation != 1
        for what in clean.removed:
            removed[what] = removed.get(what, 0) + 1
    return {"files_changed": changed, "removed": dict(sorted(removed.items())), "orientation_kept": oriented,
            "converted_to_png": converted}


def _tally(rows: list[dict[str, Any]], key: str) -> dict[str, int]:
    return dict(sorted(Counter(str(r.get(key) or "") for r in rows).items()))


def layout_report(labels_path: Path, imports: list[dict[str, Any]]) -> dict[str, Any]:
    """import_report.json: the totals of labels.csv (all sources) and the history of imports."""
    rows = read_csv(labels_path)
    sources = {s: {"images": n, "counts": _tally([r for r in rows if (r.get("source") or "") == s], "label")}
               for s, n in _tally(rows, "source").items()}
    return {"images": len(rows), "counts": _tally(rows, "label"), "splits": _tally(rows, "split"),
            "sources": sources, "imports": imports}


def _appended(labels_text: str, rows: list[dict[str, Any]]) -> str:
    """labels.csv text with ``rows`` added at the end; the existing text is kept byte for byte."""
    buf = io.StringIO()
    csv.DictWriter(buf, fieldnames=RAW_COLUMNS, lineterminator="\n").writerows(rows)
    return labels_text + ("" if labels_text.endswith("\n") else "\n") + buf.getvalue()


def _history_notes(base: Layout | None, mode: str, append: bool, out: Path) -> list[str]:
    if append and mode == "new":
        return [f"--append: {out} held no layout yet, so this import is its first source"]
    if mode != "append":
        return []
    unrecorded = sorted(set(base.sources) - {str(e.get("source")) for e in base.imports})
    return [f"{out} held images of source(s) {unrecorded} with no import record (e.g. written by `acneops data "
            "phantom`); they are kept as they were"] if unrecorded else []


def write_import(out: Path, rows: dict[str, dict[str, Any]], sources: dict[str, tuple[str, Path]],
                 source: str, append: bool = False, **found: Any) -> ImportResult:
    """Copy the files (key -> (path relative to SRC, real path)) without metadata, write labels.csv and the
    report, all in one staged swap: a new layout, or with ``append`` one more source beside those in OUT (see
    the module docstring). ``found`` holds the ImportResult fields the importer collected."""
    out = Path(out)
    check_source_name(source)
    check_output_dir(out)
    base = read_layout(out)
    mode = "append" if append and base is not None else "new"
    if mode == "append":
        check_append(base, source, out)
    images_dir = f"{IMAGES_SUBDIR}/{source}" if mode == "append" else IMAGES_SUBDIR
    for r in rows.values():
        r["source"], r["image"] = source, f"{images_dir}/{r['image'].split('/', 1)[1]}"
    refused = list(found.pop("refused", ()))
    notes = list(found.pop("notes", ())) + _history_notes(base, mode, append, out)
    with staged_output(out) as stage:
        if mode == "append":
            link_tree(out / IMAGES_SUBDIR, stage / IMAGES_SUBDIR)
        metadata = _copy_stripped(stage, rows, sources, refused)
        if not rows:
            why = preview([f"{p} ({r})" for p, r in refused], 5)
            raise AcneopsError(f"{out}: no importable image left (refused: {why}); {out} was left unchanged")
        ordered = [rows[k] for k in sorted(rows)]
        if mode == "append":
            write_text(stage / LABELS_FILE, _appended(base.labels_text, ordered))
        else:
            write_labels(stage, ordered)
        totals = layout_report(stage / LABELS_FILE, [])
        result = ImportResult(out, source, _tally(ordered, "label"), _tally(ordered, "split"),
                              refused=tuple(sorted(refused)), metadata=metadata, notes=tuple(notes), mode=mode,
                              images_dir=images_dir, layout={s: v["images"] for s, v in totals["sources"].items()},
                              replaced=base.sources if base is not None and mode == "new" else {},
                              **{k: tuple(v) for k, v in found.items()})
        history = (base.imports if mode == "append" else []) + [result.report()]
        write_json(stage / REPORT_FILE, {**totals, "imports": history})
    return result
