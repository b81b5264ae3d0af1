"""Data contract of the ingest manifest: columns, uniqueness, splits, groups, and the frozen test split.

Checked on a manifest ingest builds from a small fixture, and on the repository's own
``datasets/ingest`` when `dvc repro` has produced it.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from acneops.core.io import read_csv, read_json, sha256_file
from acneops.data import ingest as ingest_lib
from acneops.data import restore as restore_lib
from acneops.data.access import SplitAccessError, load_split
from acneops.stages import ingest, restore

CLASSES = ("healthy", "mild", "moderate", "severe")
REPO_INGEST = Path(__file__).resolve().parents[2] / "datasets" / "ingest"


def _fixture_dataset(root: Path) -> Path:
    """8 images per class, a near-duplicate trio and an exact duplicate."""
    data = root / "data"
    (data / "images").mkdir(parents=True)
    rows = []
    for c, label in enumerate(CLASSES):
        for i in range(8):
            grid = (np.random.default_rng(10 * c + i).random((4, 4, 3)) * 255).astype(np.uint8)
            Image.fromarray(grid).resize((48, 48), Image.Resampling.BICUBIC).save(data / f"images/{label}_{i}.png")
            rows.append([f"images/{label}_{i}.png", label, str(i), "phantom-hr", ""])
    src = Image.open(data / "images/severe_4.png").convert("RGB")
    src.save(data / "images/severe_4_copy.jpg", quality=75)
    src.resize((36, 36), Image.Resampling.LANCZOS).save(data / "images/severe_4_small.png")
    (data / "images/dup.png").write_bytes((data / "images/mild_1.png").read_bytes())
    rows += [["images/severe_4_copy.jpg", "severe", "", "web", ""], ["images/severe_4_small.png", "severe", "", "web", ""],
             ["images/dup.png", "mild", "1", "x", ""]]
    with open(data / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "label", "lesions", "source", "split"])
        writer.writerows(rows)
    return data


@pytest.fixture(scope="module")
def fixture_ingest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("contract")
    data = _fixture_dataset(root)
    cfg = ingest_lib.IngestConfig(data_dir=data, out_dir=root / "ingest", report_path=root / "ingest.json",
                              classes=CLASSES, min_size=16, workers=1)
    ingest.run(cfg)
    restore.run(restore_lib.RestoreConfig(ingest_dir=root / "ingest", data_dir=data, out_dir=root / "restored",
                                      report_path=root / "restore.json", sr_dir=root / "sr", resolution=32,
                                      restorer="lanczos", compare_restorers=False, sr_patch=16, workers=1))
    return root / "ingest"


@pytest.fixture(params=["fixture", "repository"])
def ingest_dir(request, fixture_ingest) -> Path:
    if request.param == "fixture":
        return fixture_ingest
    if not (REPO_INGEST / "manifest.csv").is_file():
        pytest.skip("datasets/ingest not built yet (run `dvc repro ingest`)")
    return REPO_INGEST


def test_columns_and_values(ingest_dir):
    rows = read_csv(ingest_dir / "manifest.csv")
    contract = read_json(ingest_dir / "contract.json")
    assert rows and list(rows[0]) == ingest_lib.MANIFEST_FIELDS
    for r in rows:
        assert r["label"] in contract["classes"], r
        assert r["split"] in ("train", "val", "test"), r
        assert re.fullmatch(r"[0-9a-f]{64}", r["sha256"]) and re.fullmatch(r"[0-9a-f]{16}", r["phash"]), r
        assert int(r["width"]) > 0 and int(r["height"]) > 0
        assert r["lesions"] == "" or int(r["lesions"]) >= 0
        assert not r["image"].startswith("/") and ".." not in Path(r["image"]).parts


def test_images_and_bytes_are_unique(ingest_dir):
    rows = read_csv(ingest_dir / "manifest.csv")
    assert len({r["image"] for r in rows}) == len(rows)
    assert len({r["sha256"] for r in rows}) == len(rows)  # exact duplicates were removed


def test_every_class_is_in_every_split(ingest_dir):
    rows = read_csv(ingest_dir / "manifest.csv")
    contract = read_json(ingest_dir / "contract.json")
    present = {(r["split"], r["label"]) for r in rows}
    prior = set(contract.get("prior_classes", []))  # supplied by the base generator: no real image, in no split
    assert not {c for _, c in present} & prior
    assert all((s, c) in present for s in ("train", "val", "test") for c in contract["classes"] if c not in prior)


def test_groups_never_straddle_splits(ingest_dir):
    splits = defaultdict(set)
    for r in read_csv(ingest_dir / "manifest.csv"):
        splits[r["group"]].add(r["split"])
    assert all(len(s) == 1 for s in splits.values())


def test_contract_freezes_the_test_split(ingest_dir):
    rows = read_csv(ingest_dir / "manifest.csv")
    contract = read_json(ingest_dir / "contract.json")
    test = [r for r in rows if r["split"] == "test"]
    assert contract["test_split"] == "frozen"
    assert contract["test_sha256"] == sorted(r["sha256"] for r in test)
    assert contract["test_images"] == sorted(r["image"] for r in test)
    assert contract["manifest_sha256"] == sha256_file(ingest_dir / "manifest.csv")
    assert set(contract["test_readers"]) == {"restore", "evaluate"}
    assert {"gan", "sorter", "synthesize"} <= set(contract["test_forbidden_roles"])


def test_fixture_groups_and_restored_test_split_match_the_contract(fixture_ingest):
    rows = {r["image"]: r for r in read_csv(fixture_ingest / "manifest.csv")}
    trio = [rows[n] for n in ("images/severe_4.png", "images/severe_4_copy.jpg", "images/severe_4_small.png")]
    assert len({r["group"] for r in trio}) == 1 and "images/dup.png" not in rows
    contract = read_json(fixture_ingest / "contract.json")
    restored = fixture_ingest.parent / "restored"
    test = read_csv(restored / "test" / "manifest.csv")
    assert sorted(r["orig_sha256"] for r in test) == contract["test_sha256"]
    for role in contract["test_forbidden_roles"]:
        with pytest.raises(SplitAccessError):
            load_split(restored, "test", role=role)
    assert len(load_split(restored, "test", role="evaluate")) == len(test)
