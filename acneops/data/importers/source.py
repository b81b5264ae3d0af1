"""Reading a source folder safely: nothing is read through a symbolic link that leaves it.

A dataset folder handed to an importer may hold links (``JPEGImages/x.jpg -> /home/me/.ssh/id_rsa``,
or a whole class folder linked from elsewhere). Whatever an importer copies ends up in ``data/``,
which is versioned and pushed, so the rule is:

- a link (to a file, or a folder on the way to it) whose target is outside the source folder is never
  read: it is *refused*, listed in the import report with the reason;
- a link to a file inside the source folder is followed (the dataset itself holds the target);
- a link to a folder is never walked, wherever it points (no cycles, no second copy of a folder): a
  folder link leaving the source is refused, one staying inside is listed as not followed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

LEAVES = "symbolic link pointing outside the source folder: not read; copy the target into the source if it belongs"
LEAVES_DIR = "symbolic link to a folder outside the source folder: not read; copy the folder in if it belongs"
BROKEN = "broken symbolic link: not imported"
DIR_LINK_INSIDE = "symbolic link to a folder inside the source: not followed (the folder is imported where it is)"


def inside(path: Path, root_real: Path) -> bool:
    """True when ``path`` with every link resolved is ``root_real`` or below it."""
    return Path(os.path.realpath(path)).is_relative_to(root_real)


def check_entry(path: Path, root_real: Path) -> tuple[str, str]:
    """Classify one directory entry: ("file" | "dir" | "other" | "refused", reason if refused or other)."""
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(root_real):
        return "refused", LEAVES_DIR if real.is_dir() else LEAVES
    if path.is_symlink() and real.is_dir():
        return "other", DIR_LINK_INSIDE
    if not real.exists():
        return "refused", BROKEN
    if real.is_dir():
        return "dir", ""
    if real.is_file():
        return "file", ""
    return "other", "not a regular file (device, socket or pipe)"


def walk_files(folder: Path, root_real: Path) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str, str]]]:
    """Every regular file below ``folder`` as (path, real path), and (path, kind, reason) for entries not
    read (kind "refused": a link leaving the source or broken; "other": anything else). Folders are walked
    without following links; see the module docstring for the link rules."""
    files: list[tuple[Path, Path]] = []
    skipped: list[tuple[Path, str, str]] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        walk = []
        for name in sorted(dirnames):
            kind, reason = check_entry(here / name, root_real)
            if kind == "dir" and not (here / name).is_symlink():
                walk.append(name)
            else:
                skipped.append((here / name, kind, reason))
        dirnames[:] = walk
        for name in sorted(filenames):
            path = here / name
            kind, reason = check_entry(path, root_real)
            if kind == "file":
                files.append((path, Path(os.path.realpath(path))))
            else:
                skipped.append((path, kind, reason))
    return files, skipped


def read_regular_file(real: Path) -> bytes:
    """Read a checked, link-free path; O_NOFOLLOW refuses a file swapped for a link since the check."""
    fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{real}: not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)
