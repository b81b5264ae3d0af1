"""Ingest's domain logic: validate the raw layout row by row, quarantine bad rows with a reason, hash and\ngroup near duplicates, and write the manifest, the frozen test-split contract and the report.\n\nThe `ingest` stage (acneops.stages.ingest) builds :class:`IngestConfig` from params and calls these."""

from __future__ import annotations

import csv
import dataclasses
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

from acneops.core.config import require
from acneops.core.errors import StageError
from acneops.core.io import sha256_bytes, write_csv, write_json
from acneops.core.paths import (
    DATA_DIR,
    IMAGES_SUBDIR,
    INGEST_DIR,
    LABELS_FILE,
    REPORTS_DIR,
)
from acneops.data.records import Item, Quarantine
from acneops.data.split import (
    split_table,
)

MANIFEST_FIELDS = ["image", "label", "lesions", "source", "split", "group", "sha256", "phash", "width", "height"]



LABEL_COLUMNS = ("image", "label", "lesions", "source", "split")



REQUIRED_COLUMNS = ("image", "label")



VALID_SPLITS = ("train", "val", "test")



@dataclasses.dataclass(frozen=True)
class IngestConfig:
    """Params section ``ingest``."""

    data_dir: Path = DATA_DIR  # raw layout: images/ + labels.csv
    out_dir: Path = INGEST_DIR  # manifest.csv + contract.json
    report_path: Path = REPORTS_DIR / "ingest.json"  # counts + every quarantined row
    classes: tuple[str, ...] = ("healthy", "mild", "moderate", "severe")  # expected labels, in order
    # classes of `classes` the data lacks, supplied by the base generator (ACNE04 has no healthy faces: [healthy]);
    # a class with no usable image that is not listed here is an error
    prior_classes: tuple[str, ...] = ()
    seed: int = 0  # split seed
    val_fraction: float = 0.1  # share of each class put in val (carved from train under a fixed train/test split)
    test_fraction: float = 0.2  # share of each class put in test (ignored for rows with a fixed split)
    min_size: int = 32  # px, shorter side below which an image is quarantined
    max_pixels: int = 64_000_000  # pixels (width*height) above which a file is a decompression bomb
    phash_threshold: int = 4  # bits of 64: pHash Hamming distance at or below which images are near duplicates
    workers: int = 0  # processes for decoding + hashing; 0 = all cores

    def __post_init__(self) -> None:
        require(len(self.classes) >= 1, "ingest.classes: list at least one class name")
        require(len(set(self.classes)) == len(self.classes), f"ingest.classes: duplicate names in {self.classes}")
        stray = [c for c in self.prior_classes if c not in self.classes]
        require(not stray, f"ingest.prior_classes: {stray} not in ingest.classes {list(self.classes)}; a prior class "
                "is one of the task's classes that the data lacks")
        require(len(set(self.classes) - set(self.prior_classes)) >= 1,
                f"ingest.prior_classes: {list(self.prior_classes)} lists every class; the data must supply one")
        require(0 <= self.val_fraction < 1, f"ingest.val_fraction: {self.val_fraction} must be in [0, 1)")
        require(0 <= self.test_fraction < 1, f"ingest.test_fraction: {self.test_fraction} must be in [0, 1)")
        require(self.val_fraction + self.test_fraction < 1, "ingest: val_fraction + test_fraction must be < 1")
        require(self.min_size >= 1, f"ingest.min_size: {self.min_size} must be >= 1 px")
        require(self.max_pixels >= 1, f"ingest.max_pixels: {self.max_pixels} must be >= 1")
        require(0 <= self.phash_threshold <= 64, f"ingest.phash_threshold: {self.phash_threshold} not in [0, 64]")
        require(self.workers >= 0, f"ingest.workers: {self.workers} must be >= 0 (0 = all cores)")



def _read_label_rows(labels_path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, fields)]) of labels.csv; an unreadable file is a StageError."""
    if not labels_path.is_file():
        raise StageError(f"{labels_path}: labels file not found; the raw layout is images/ + labels.csv "
                         "(create it with `acneops data phantom` or an importer)")
    try:
        with open(labels_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            rows = [(reader.line_num, fields) for fields in reader if any(f.strip() for f in fields)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise StageError(f"{labels_path}: not a readable UTF-8 CSV ({exc}); re-save it as UTF-8 CSV") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise StageError(f"{labels_path}: header {header} lacks column(s) {missing}; "
                         f"expected header {','.join(LABEL_COLUMNS)}")
    return header, rows



def _parse_row(header: list[str], line: int, fields: list[str], classes: tuple[str, ...],
               quarantine: Quarantine) -> Item | None:
    """Validate one labels.csv row; bad rows go to quarantine and return None."""
    guess = fields[header.index("image")].strip() if len(fields) > header.index("image") else ""
    if len(fields) != len(header):
        quarantine.add(guess, line, "bad_row", f"row has {len(fields)} fields, header has {len(header)}")
        return None
    row = {k: v.strip() for k, v in zip(header, fields)}
    image, label, lesions, split = row["image"], row["label"], row.get("lesions", ""), row.get("split", "")
    if not image:
        quarantine.add(image, line, "bad_row", "empty image path")
        return None
    if lesions and not (lesions.isdigit() and lesions.isascii()):
        quarantine.add(image, line, "bad_row", f"lesions value {lesions!r} is not a non-negative integer")
        return None
    if split not in ("",) + VALID_SPLITS:
        quarantine.add(image, line, "bad_row", f"split value {split!r} is not one of {VALID_SPLITS} or empty")
        return None
    if label not in classes:
        quarantine.add(image, line, "unknown_label", f"label {label!r} is not in ingest.classes {list(classes)}")
        return None
    return Item(line, image, label, str(int(lesions)) if lesions else "", row.get("source", ""), split)



def _check_path(item: Item, data_real: Path, quarantine: Quarantine) -> bool:
    """Resolve ``item.image`` inside the data folder; escaping paths and missing files are quarantined."""
    raw = item.image
    if raw.startswith(("/", "\\")) or (len(raw) > 1 and raw[1] == ":"):
        quarantine.add(raw, item.row, "unsafe_path", "absolute path; image paths must be relative to the data folder")
        return False
    parts = PurePosixPath(raw.replace("\\", "/")).parts
    if ".." in parts:
        quarantine.add(raw, item.row, "unsafe_path", "path escapes the data folder via '..'")
        return False
    item.image = "/".join(p for p in parts if p != ".")
    real = Path(os.path.realpath(data_real / item.image))
    dvc_cache = Path(os.path.realpath(data_real.parent / ".dvc" / "cache"))
    if not (real.is_relative_to(data_real) or real.is_relative_to(dvc_cache)):
        quarantine.add(raw, item.row, "unsafe_path", f"symlink resolves outside the data folder (to {real})")
        return False
    if not real.is_file():
        why = "not a regular file" if real.exists() else "file not found"
        quarantine.add(raw, item.row, "missing_file", f"{why}: {data_real / item.image}")
        return False
    item.path = real
    return True



def _inspect_file(task: tuple[str, int, int]) -> dict[str, Any]:
    """Worker: decode one file fully; return its hashes and size, or a rejection (kind, reason)."""
    from acneops.core.io import sha256_bytes
    from acneops.data.decode import ImageRejected, decode_file, phash

    path, max_pixels, min_size = task
    try:
        data, image = decode_file(path, max_pixels)
    except ImageRejected as exc:
        return {"ok": False, "kind": exc.kind, "reason": exc.reason}
    except OSError as exc:
        return {"ok": False, "kind": "unreadable", "reason": f"cannot read file: {exc}"}
    width, height = image.size
    if min(width, height) < min_size:
        return {"ok": False, "kind": "too_small",
                "reason": f"{width}x{height} px is below ingest.min_size {min_size} px"}
    return {"ok": True, "sha256": sha256_bytes(data), "phash": f"{phash(image):016x}",
            "width": width, "height": height}



def _inspect_all(items: list[Item], cfg: IngestConfig) -> list[dict[str, Any]]:
    """Decode + hash every item, in processes when workers > 1; results in input order."""
    from acneops.core.progress import progress
    from acneops.data.decode import cpu_workers

    tasks = [(str(it.path), cfg.max_pixels, cfg.min_size) for it in items]
    workers = min(cpu_workers(cfg.workers), max(1, len(tasks)))
    bar = dict(total=len(tasks), desc="ingest: decode", unit="img")
    if workers == 1:
        return [_inspect_file(t) for t in progress(tasks, **bar)]
    chunk = max(1, len(tasks) // (workers * 8))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(progress(pool.map(_inspect_file, tasks, chunksize=chunk), **bar))



def _drop_duplicate_rows(items: list[Item], labels_path: Path, quarantine: Quarantine) -> list[Item]:
    """The same path listed twice: later rows quarantined; listed with two labels: a StageError."""
    first: dict[str, Item] = {}
    kept = []
    for it in items:
        seen = first.get(it.image)
        if seen is None:
            first[it.image] = it
            kept.append(it)
        elif seen.label != it.label:
            raise StageError(f"{labels_path}: inconsistent labels: '{it.image}' is labelled '{seen.label}' "
                             f"(row {seen.row}) and '{it.label}' (row {it.row}); keep one row and fix the other")
        else:
            quarantine.add(it.image, it.row, "duplicate_row", f"same image listed again (first at row {seen.row})")
    return kept



def _drop_exact_duplicates(items: list[Item], quarantine: Quarantine) -> list[Item]:
    """Same bytes in several files: keep one if labels agree, else quarantine all copies.

    The copy kept is the one in the most protected imported split (test > val > train > none), then
    the first row, so deduplication never shrinks an imported test split.
    """
    by_hash: dict[str, list[Item]] = {}
    for it in items:
        by_hash.setdefault(it.info["sha256"], []).append(it)
    rank = {"test": 0, "val": 1, "train": 2, "": 3}
    kept = []
    for it in items:
        copies = by_hash[it.info["sha256"]]
        labels = sorted({c.label for c in copies})
        keep = min(copies, key=lambda c: (rank[c.fixed_split], c.row))
        if len(labels) > 1:
            others = [c.image for c in copies if c is not it]
            quarantine.add(it.image, it.row, "conflicting_duplicate",
                           f"same bytes as {others} but labels differ {labels}; fix the labels, then re-run")
        elif keep is it:
            kept.append(it)
        else:
            quarantine.add(it.image, it.row, "exact_duplicate", f"exact duplicate of {keep.image}")
    return kept



def load_items(cfg: IngestConfig, quarantine: Quarantine) -> tuple[int, list[Item]]:
    """Read, validate and decode every labels.csv row: (row count, usable items)."""
    labels_path = cfg.data_dir / LABELS_FILE
    header, rows = _read_label_rows(labels_path)
    items = [it for line, fields in rows if (it := _parse_row(header, line, fields, cfg.classes, quarantine))]
    data_real = Path(os.path.realpath(cfg.data_dir))
    items = [it for it in items if _check_path(it, data_real, quarantine)]
    items = _drop_duplicate_rows(items, labels_path, quarantine)
    usable = []
    for it, res in zip(items, _inspect_all(items, cfg)):
        if res.pop("ok"):
            it.info = res
            usable.append(it)
        else:
            quarantine.add(it.image, it.row, res["kind"], res["reason"])
    return len(rows), _drop_exact_duplicates(usable, quarantine)



def unlisted_files(data_dir: Path, limit: int = 50) -> dict[str, Any]:
    """Files under data/images that labels.csv does not list (reported, never ingested)."""
    images_dir = data_dir / IMAGES_SUBDIR
    if not images_dir.is_dir():
        return {"count": 0, "examples": []}
    try:
        with open(data_dir / LABELS_FILE, newline="", encoding="utf-8-sig") as fh:
            listed = {PurePosixPath(r[0].strip()).as_posix() for r in csv.reader(fh) if r}
    except (OSError, UnicodeDecodeError, csv.Error):
        listed = set()
    files = sorted(p.relative_to(data_dir).as_posix() for p in images_dir.rglob("*") if p.is_file())
    missing = [f for f in files if f not in listed]
    return {"count": len(missing), "examples": missing[:limit]}



def _test_readers() -> list[str]:
    """Roles data_access lets read the real test split (ingest creates it and is not a reader)."""
    from acneops.data.access import ROLE_SPLITS

    return sorted(r for r, splits in ROLE_SPLITS.items() if "test" in splits and r != "ingest")



def write_outputs(cfg: IngestConfig, items: list[Item]) -> dict[str, int]:
    """Write manifest.csv (sorted by image) and contract.json; return images per split."""
    from acneops.data.access import ROLE_SPLITS

    rows = [{"image": it.image, "label": it.label, "lesions": it.lesions, "source": it.source,
             "split": it.split, "group": it.group, **it.info} for it in sorted(items, key=lambda i: i.image)]
    manifest = cfg.out_dir / "manifest.csv"
    write_csv(manifest, rows, MANIFEST_FIELDS)
    test = [r for r in rows if r["split"] == "test"]
    counts = {s: sum(1 for r in rows if r["split"] == s) for s in VALID_SPLITS}
    write_json(cfg.out_dir / "contract.json", {
        "test_split": "frozen",
        "test_readers": _test_readers(),
        "test_forbidden_roles": sorted(r for r, s in ROLE_SPLITS.items() if "test" not in s),
        "test_sha256": sorted(r["sha256"] for r in test),
        "test_images": sorted(r["image"] for r in test),
        "manifest_sha256": sha256_bytes(manifest.read_bytes()),
        "classes": list(cfg.classes),
        **prior_record(cfg),
        "counts": counts,
        "max_pixels": cfg.max_pixels,
        "seed": cfg.seed,
        "note": "The test split is frozen at ingest: no GAN, sorter or synthetic stage may read it "
                "(enforced by acneops.data.access.load_split).",
    })
    return counts



def prior_record(cfg: IngestConfig) -> dict[str, Any]:
    """The prior-only classes as contract.json and reports/ingest.json record them: ``prior_classes`` with the reason,
    only when there are any (a dataset holding every class writes the same files as before the key existed)."""
    if not cfg.prior_classes:
        return {}
    return {"prior_classes": list(cfg.prior_classes),
            "prior_classes_note": "no real image of these classes: the base generator supplies them "
                                  "(ingest.prior_classes); they are in no split"}


def check_classes(cfg: IngestConfig, present: dict[str, int]) -> str:
    """'' when every class has usable images except the prior classes, which have none; else what is wrong and the
    fix (``present``: usable images per class)."""
    empty = [c for c in cfg.classes if not present.get(c) and c not in cfg.prior_classes]
    if empty:
        return (f"class(es) {empty} of ingest.classes have no usable image in {cfg.data_dir} (usable per class: "
                f"{dict(present)}); add images of it, or list it in ingest.prior_classes to draw it from the base "
                "generator (ACNE04 has no healthy faces: prior_classes: [healthy])")
    stocked = {c: present[c] for c in cfg.prior_classes if present.get(c)}
    if stocked:
        return (f"ingest.prior_classes lists {sorted(stocked)} but the data has usable images of it {stocked}; a "
                "prior class comes from the base generator only: remove it from ingest.prior_classes to use the "
                "images, or remove them from labels.csv")
    return ""


def mixed_label_groups(items: list[Item]) -> list[dict[str, Any]]:
    """Near-duplicate groups whose members carry different labels: label noise a person must look at.

    Each group is kept whole in one split (majority label decides its stratum), so nothing is dropped;
    the list says which images disagree: [{group, labels, images: [{image, label, split}]}]."""
    members: dict[str, list[Item]] = {}
    for it in items:
        members.setdefault(it.group, []).append(it)
    return [{"group": g, "labels": sorted({m.label for m in ms}),
             "images": [{"image": m.image, "label": m.label, "split": m.split}
                        for m in sorted(ms, key=lambda m: m.image)]}
            for g, ms in sorted(members.items()) if len({m.label for m in ms}) > 1]


def describe_mixed(groups: list[dict[str, Any]], limit: int = 5) -> str:
    """One message naming each mixed-label group's images and labels (the first ``limit`` groups)."""
    shown = "; ".join(", ".join(f"{m['image']} ({m['label']})" for m in g["images"]) for g in groups[:limit])
    more = f"; ... and {len(groups) - limit} more group(s)" if len(groups) > limit else ""
    return (f"{len(groups)} near-duplicate group(s) with different labels (label noise: check and fix the labels, "
            f"all listed in groups_with_mixed_labels of the ingest report): {shown}{more}")


def write_report(cfg: IngestConfig, quarantine: Quarantine, items: list[Item], base: dict[str, Any]) -> None:
    """reports/ingest.json: counts, near-duplicate groups (mixed-label ones in full) and every quarantined row."""
    groups = Counter(it.group for it in items)
    mixed = mixed_label_groups(items)
    write_json(cfg.report_path, {
        **base,
        **prior_record(cfg),
        "usable": len(items),
        "quarantined": len(quarantine.entries),
        "quarantined_by_kind": quarantine.counts(),
        "splits": split_table(items, cfg.classes) if items and items[0].split else {},
        "near_duplicate_groups": sum(1 for n in groups.values() if n > 1),
        "images_in_near_duplicate_groups": sum(n for n in groups.values() if n > 1),
        "largest_group": max(groups.values(), default=0),
        "groups_with_mixed_labels": mixed,
        "quarantine": sorted(quarantine.entries, key=lambda e: (e["row"], e["image"])),
    })

