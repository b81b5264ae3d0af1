"""A folder-per-class dataset (``SRC/<Class>/...`` or ``SRC/<split>/<Class>/...``) into the raw layout."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from acneops.core.errors import AcneopsError
from acneops.core.paths import IMAGES_SUBDIR
from acneops.data.importers.acne04 import CLASS_RE, IMAGE_EXTENSIONS
from acneops.data.importers.layout import ImportResult, check_src
from acneops.data.importers.source import check_entry, walk_files
from acneops.data.importers.write import check_source_name, write_import

SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def class_name(folder_name: str) -> str:
    """Class name of a folder: lower-cased, spaces to underscores ('Very Severe' -> 'very_severe')."""
    return "_".join(folder_name.strip().lower().split())


def _entries(folder: Path, root: Path, skipped: list[tuple[Path, str, str]]) -> tuple[list[Path], list[Path]]:
    """(real sub-folders, other entries) of ``folder``; links to folders go to ``skipped`` (never walked)."""
    dirs, rest = [], []
    for p in sorted(folder.iterdir()):
        kind, reason = check_entry(p, root)
        if kind == "dir" and not p.name.startswith("."):
            dirs.append(p)
        elif kind == "file" or (kind == "dir" and p.name.startswith(".")):
            rest.append(p)
        else:
            skipped.append((p, kind, reason))
    return dirs, rest


def _class_folders(src: Path, root: Path,
                   skipped: list[tuple[Path, str, str]]) -> tuple[list[tuple[Path, str]], list[str]]:
    """[(class folder, fixed split)] and loose top-level files; SRC/<split>/<class>/ gives a fixed split."""
    dirs, loose_paths = _entries(src, root, skipped)
    loose = [p.name for p in loose_paths]
    if not dirs:
        links = f" ({len(skipped)} symbolic link(s) not followed: links are never walked)" if skipped else ""
        raise AcneopsError(
            f"{src}: no class sub-folders found{links}; expected one folder per class, e.g. {src}/Healthy/img001.jpg "
            f"and {src}/Mild/img002.jpg (or {src}/train/<Class>/... and {src}/test/<Class>/... for a fixed split)"
        )
    if all(d.name.lower() in SPLIT_FOLDERS for d in dirs):
        pairs = []
        for d in dirs:
            subdirs, rest = _entries(d, root, skipped)
            pairs += [(c, SPLIT_FOLDERS[d.name.lower()]) for c in subdirs]
            loose += [f"{d.name}/{p.name}" for p in rest]
        if not pairs:
            raise AcneopsError(f"{src}: split folders {[d.name for d in dirs]} contain no class sub-folders "
                               f"(expected {src}/train/<Class>/<image>)")
        return pairs, loose
    return [(d, "") for d in dirs], loose


def import_folders(src: str | Path, out: str | Path, append: bool = False, source: str = "folders") -> ImportResult:
    """Import SRC/<Class>/<images> (any depth inside a class folder) into the raw layout.

    Class = folder name lower-cased with spaces as underscores. Files whose extension is not an
    image extension are listed in the result, not imported; a class folder without images is an
    error. Output names are ``images/<class>__<path inside the class folder, '/' -> '__'>`` (with a
    ``<split>__`` prefix for the SRC/<split>/<Class>/ layout), so names never collide across classes.
    Files are copied without metadata; links leaving SRC are never read (importers.source). ``source`` names the
    rows in labels.csv; ``append`` adds them beside the sources already in OUT (importers.write).
    """
    src, out = Path(src), Path(out)
    check_source_name(source)
    check_src(src, out)
    root = Path(os.path.realpath(src))
    skipped: list[tuple[Path, str, str]] = []
    folders, loose = _class_folders(src, root, skipped)
    ignored = [f"{name} (not in a class folder)" for name in loose]
    rows: dict[str, dict[str, Any]] = {}
    sources: dict[str, tuple[str, Path]] = {}
    owner: dict[tuple[str, str], str] = {}
    for folder, split in folders:
        label = class_name(folder.name)
        rel_folder = folder.relative_to(src).as_posix()
        if not CLASS_RE.match(label):
            raise AcneopsError(f"{folder}: folder name gives class {label!r}; use letters, digits, spaces, _ or -")
        if (split, label) in owner:
            raise AcneopsError(f"{folder}: folders '{owner[split, label]}' and '{rel_folder}' both give class "
                               f"'{label}'; merge or rename one")
        owner[split, label] = rel_folder
        files, not_read = walk_files(folder, root)
        skipped += not_read
        images = [(p, real) for p, real in files
                  if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
        chosen = {p for p, _ in images}
        ignored += [p.relative_to(src).as_posix() for p, _ in files if p not in chosen]
        if not images and not any(kind == "refused" for _, kind, _ in not_read):
            raise AcneopsError(f"{folder}: class folder has no images (extensions {sorted(IMAGE_EXTENSIONS)}); "
                               "add images or remove the folder")
        for path, real in images:
            rel = path.relative_to(folder)
            name = "__".join(([split] if split else []) + [label, *rel.parts])
            if name in rows:
                raise AcneopsError(f"{path}: output name {name} collides with {sources[name][0]}; rename one of them")
            rows[name] = {"image": f"{IMAGES_SUBDIR}/{name}", "label": label, "lesions": "", "source": source,
                          "split": split}
            sources[name] = (path.relative_to(src).as_posix(), real)
    refused = [(p.relative_to(src).as_posix(), reason) for p, kind, reason in skipped if kind == "refused"]
    ignored += [f"{p.relative_to(src).as_posix()} ({reason})" for p, kind, reason in skipped if kind != "refused"]
    return write_import(out, rows, sources, source, append, ignored=ignored, refused=refused)
