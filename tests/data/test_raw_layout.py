"""Data contract of the raw layout (OUT/images/* + OUT/labels.csv [+ OUT/import_report.json]) that ingest reads.

Every image in it is free of metadata (stripping it again changes nothing: no GPS, no comments, at most the
EXIF orientation), because data/ is versioned and pushed.

Checked on a freshly generated phantom set of both tasks, on an ACNE04-style import, and on the
repository's own data/ folder when it exists (the default dataset tracked by data.dvc).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from acneops.core.io import read_csv, read_json
from acneops.data import importers, phantom
from acneops.data.metadata import UnsupportedImage, strip_metadata
from acneops.stages.params import phantom_config

HEADER = ["image", "label", "lesions", "source", "split"]
TOP_LEVEL = {"images", "labels.csv", "import_report.json"}
REPO_DATA = Path(__file__).resolve().parents[2] / "data"


def raw_layout_problems(folder: Path, classes: set[str]) -> list[str]:
    """Every way ``folder`` breaks the raw-layout contract (empty list = valid)."""
    labels = folder / "labels.csv"
    header = labels.read_text(encoding="utf-8").splitlines()[0].split(",")
    if header != HEADER:
        return [f"header {header} != {HEADER}"]
    problems, seen = [], set()
    rows = read_csv(labels)
    for i, r in enumerate(rows, start=2):
        image = r["image"]
        if image in seen:
            problems.append(f"row {i}: duplicate image {image}")
        seen.add(image)
        path = (folder / image).resolve()
        if not image.startswith("images/") or folder.resolve() / "images" not in path.parents:
            problems.append(f"row {i}: image {image!r} is not under images/")
        elif not path.is_file():
            problems.append(f"row {i}: {image} missing")
        if r["label"] not in classes:
            problems.append(f"row {i}: label {r['label']!r} not in {sorted(classes)}")
        if r["lesions"] and not (r["lesions"].isdigit()):
            problems.append(f"row {i}: lesions {r['lesions']!r} is not a non-negative integer")
        if not importers.SOURCE_RE.match(r["source"]):
            problems.append(f"row {i}: source {r['source']!r} is not a source name (lower-case letters, digits, _, -)")
        if r["split"] not in ("", "train", "val", "test"):
            problems.append(f"row {i}: split {r['split']!r} invalid")
    on_disk = {p.relative_to(folder).as_posix() for p in (folder / "images").rglob("*") if p.is_file()}
    problems += [f"{name}: file not in labels.csv" for name in sorted(on_disk - seen)]
    top = {p.name for p in folder.iterdir()}
    problems += [f"{name}: unexpected top-level entry" for name in sorted(top - TOP_LEVEL)]
    problems += [f"{name}: carries metadata" for name in sorted(on_disk) if _has_metadata(folder / name)]
    if (folder / "import_report.json").is_file() and read_json(folder / "import_report.json")["images"] != len(rows):
        problems.append("import_report.json: image count differs from labels.csv")
    return problems


def _has_metadata(path: Path) -> bool:
    data = path.read_bytes()
    try:
        return strip_metadata(data).data != data
    except UnsupportedImage:
        return False  # not an image at all: ingest quarantines it (this contract is about metadata)


@pytest.mark.parametrize("task", ["acne", "mask"])
def test_phantom_raw_layout(tmp_path, task):
    cfg = phantom_config(
        {"phantom": {"n_per_class": 5, "hr_size": 32, "lr_size": 8, "lowres_fraction": 0.4, "supersample": 1}}, task
    )
    phantom.generate(cfg, tmp_path / "raw")
    assert raw_layout_problems(tmp_path / "raw", set(cfg.classes)) == []
    rows = read_csv(tmp_path / "raw" / "labels.csv")
    assert {r["source"] for r in rows} == {"phantom-hr", "phantom-web"}
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["images", "labels.csv"]


def test_import_raw_layout(tmp_path):
    src = tmp_path / "acne04"
    (src / "JPEGImages").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "ClinicCam", 6
    for name in ("levle0_1.jpg", "levle2_1.jpg"):
        Image.new("RGB", (8, 8), (180, 90, 80)).save(src / "JPEGImages" / name, exif=exif, comment="patient 0042")
    (src / "NNEW_trainval_0.txt").write_text("levle0_1.jpg 0 4\n")
    (src / "NNEW_test_0.txt").write_text("levle2_1.jpg 2 30\n")
    importers.import_acne04(src, tmp_path / "raw")
    assert raw_layout_problems(tmp_path / "raw", {"mild", "moderate", "severe"}) == []
    assert _has_metadata(src / "JPEGImages" / "levle0_1.jpg")  # the source had some: the check can fail


def test_appended_raw_layout(tmp_path):
    """ACNE04 plus a web folder appended: one layout, each row with its source, the report counting all of them."""
    src = tmp_path / "acne04"
    (src / "JPEGImages").mkdir(parents=True)
    Image.new("RGB", (8, 8), (180, 90, 80)).save(src / "JPEGImages" / "levle0_1.jpg")
    (src / "NNEW_trainval_0.txt").write_text("levle0_1.jpg 0 4\n")
    (src / "NNEW_test_0.txt").write_text("")
    (tmp_path / "web" / "Healthy").mkdir(parents=True)
    Image.new("RGB", (8, 8), (90, 90, 80)).save(tmp_path / "web" / "Healthy" / "a.png")
    importers.import_acne04(src, tmp_path / "raw")
    importers.import_folders(tmp_path / "web", tmp_path / "raw", append=True, source="web")
    assert raw_layout_problems(tmp_path / "raw", {"healthy", "mild"}) == []
    rows = read_csv(tmp_path / "raw" / "labels.csv")
    assert [(r["image"], r["source"]) for r in rows] == [("images/levle0_1.jpg", "acne04"),
                                                          ("images/web/healthy__a.png", "web")]


def test_contract_check_catches_broken_layouts(tmp_path):
    """The checker above must fail on each kind of break, or the contract tests prove nothing."""
    cfg = phantom_config({"phantom": {"n_per_class": 2, "hr_size": 16, "lr_size": 8, "supersample": 1}})
    phantom.generate(cfg, tmp_path / "raw")
    labels = tmp_path / "raw" / "labels.csv"
    good = labels.read_text()
    lines = good.splitlines()
    breaks = {
        "duplicate": good + lines[1] + "\n",
        "missing": good + "images/ghost.png,mild,1,phantom-hr,\n",
        "label": good.replace(",mild,", ",acne,", 1),
        "split": good.replace("phantom-hr,\n", "phantom-hr,holdout\n", 1),
        "source": good.replace("phantom-hr,", "Phantom HR,", 1),
        "escape": good + "../labels.csv,mild,1,phantom-hr,\n",
        "not in labels.csv": "\n".join(lines[:-1]) + "\n",
    }
    for kind, text in breaks.items():
        labels.write_text(text)
        assert raw_layout_problems(tmp_path / "raw", set(cfg.classes)), kind
    labels.write_text(good)
    assert raw_layout_problems(tmp_path / "raw", set(cfg.classes)) == []
    first = tmp_path / "raw" / lines[1].split(",")[0]
    exif = Image.Exif()
    exif[0x010F] = "ClinicCam"
    Image.open(first).save(first, format="PNG", exif=exif)
    assert raw_layout_problems(tmp_path / "raw", set(cfg.classes)) == [f"{lines[1].split(',')[0]}: carries metadata"]
    Image.open(first).save(first, format="PNG")
    (tmp_path / "raw" / "notes.txt").write_text("patient list")
    assert raw_layout_problems(tmp_path / "raw", set(cfg.classes)) == ["notes.txt: unexpected top-level entry"]


@pytest.mark.skipif(not (REPO_DATA / "labels.csv").is_file(), reason="no data/ in this checkout (dvc pull or acneops repro)")
def test_repository_data_folder_raw_layout():
    classes = {r["label"] for r in read_csv(REPO_DATA / "labels.csv")}  # any classes: data/ may be imported
    assert raw_layout_problems(REPO_DATA, classes) == []
