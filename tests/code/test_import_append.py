"""Several sources, one raw dataset: `--append` adds a source to an existing raw layout (files, labels.csv rows with
their source, the import history), atomically; ingest catches exact and near duplicates across the sources."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from acneops.cli import app
from acneops.core.errors import AcneopsError
from acneops.core.io import read_csv, read_json, sha256_file
from acneops.data import importers, phantom
from acneops.data.ingest import IngestConfig
from acneops.stages import ingest
from acneops.stages.params import phantom_config

ACNE04_LISTS = ("levle0_1.jpg 0 2\nlevle1_1.jpg 1 9\nlevle2_1.jpg 2 30\n",  # trainval
                "levle0_2.jpg 0 3\nlevle1_2.jpg 1 12\nlevle2_2.jpg 2 41\n")  # test


def photo(seed: int, size: tuple[int, int] = (96, 80)) -> Image.Image:
    """A smooth, textured RGB image (bicubic-upsampled 5x5 noise): distinct pHash per seed, unlike flat colours."""
    small = np.random.default_rng(seed).integers(0, 256, size=(5, 5, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def make_acne04(root: Path) -> Path:
    """An ACNE04 tree of textured photos: two per grade 0..2, the second of each grade in the test list."""
    (root / "JPEGImages").mkdir(parents=True)
    for g in range(3):
        for n in (1, 2):
            photo(10 * g + n).save(root / "JPEGImages" / f"levle{g}_{n}.jpg", quality=95)
    (root / "NNEW_trainval_0.txt").write_text(ACNE04_LISTS[0])
    (root / "NNEW_test_0.txt").write_text(ACNE04_LISTS[1])
    return root


def make_web(root: Path) -> Path:
    """A folder of web photos: Mild/ and Severe/, one new photo each."""
    for cls, seed in (("Mild", 101), ("Severe", 102)):
        (root / cls).mkdir(parents=True)
        photo(seed).save(root / cls / "new.jpg", quality=90)
    return root


def tree(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file below ``folder``."""
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_append_adds_a_source_and_keeps_everything_already_there(tmp_path):
    out = tmp_path / "data"
    importers.import_acne04(make_acne04(tmp_path / "acne04"), out)
    before, labels_before = tree(out / "images"), (out / "labels.csv").read_text()
    runner = CliRunner()
    res = runner.invoke(app, ["data", "import-folders", str(make_web(tmp_path / "web")), str(out), "--append",
                              "--source", "web"])
    assert res.exit_code == 0, res.output
    assert f"appended 2 images (web) to {out} under images/web/" in res.output
    assert f"{out} now holds 8 images: acne04 6, web 2" in res.output
    after = tree(out / "images")
    assert {k: after[k] for k in before} == before  # every earlier file, unchanged
    assert set(after) - set(before) == {"web/mild__new.jpg", "web/severe__new.jpg"}
    text = (out / "labels.csv").read_text()
    assert text.startswith(labels_before)  # earlier rows byte for byte, new rows at the end
    new = [r for r in read_csv(out / "labels.csv") if r["source"] == "web"]
    assert [(r["image"], r["label"], r["split"]) for r in new] == [("images/web/mild__new.jpg", "mild", ""),
                                                                 ("images/web/severe__new.jpg", "severe", "")]
    report = read_json(out / "import_report.json")
    assert report["images"] == 8 and report["counts"] == {"mild": 3, "moderate": 2, "severe": 3}
    assert report["sources"] == {"acne04": {"images": 6, "counts": {"mild": 2, "moderate": 2, "severe": 2}},
                                 "web": {"images": 2, "counts": {"mild": 1, "severe": 1}}}
    assert [(e["source"], e["mode"], e["images_dir"], e["images"]) for e in report["imports"]] == [
        ("acne04", "new", "images", 6), ("web", "append", "images/web", 2)]
    assert report["imports"][0]["notes"][0].startswith("imported from the ACNE04 fold-0 lists")


def test_appending_a_source_twice_is_an_error_and_changes_nothing(tmp_path):
    out = tmp_path / "data"
    importers.import_acne04(make_acne04(tmp_path / "acne04"), out)
    web = make_web(tmp_path / "web")
    importers.import_folders(web, out, append=True, source="web")
    snapshot = tree(out)
    with pytest.raises(AcneopsError, match=r"source 'web' is already in this layout \(2 images in labels.csv, 1 "
                                           r"import\(s\).*--source web-2"):
        importers.import_folders(web, out, append=True, source="web")
    with pytest.raises(AcneopsError, match="source 'acne04' is already in this layout"):
        importers.import_acne04(tmp_path / "acne04", out, append=True)
    assert tree(out) == snapshot
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".data.")]  # no staging folder left


def test_without_append_the_previous_layout_is_replaced_and_the_summary_says_so(tmp_path):
    out = tmp_path / "data"
    importers.import_acne04(make_acne04(tmp_path / "acne04"), out)
    importers.import_folders(make_web(tmp_path / "web"), out, append=True, source="web")
    result = importers.import_folders(tmp_path / "web", out, source="web")
    assert "replaced the previous layout in" in result.summary() and "acne04 6, web 2 images" in result.summary()
    assert {r["source"] for r in read_csv(out / "labels.csv")} == {"web"}
    assert sorted(tree(out / "images")) == ["mild__new.jpg", "severe__new.jpg"]  # a new layout: no images/web/
    report = read_json(out / "import_report.json")
    assert [e["mode"] for e in report["imports"]] == ["new"] and report["imports"][0]["replaced"] == {
        "acne04": 6, "web": 2}


def test_append_to_a_missing_folder_is_a_first_import(tmp_path):
    result = importers.import_folders(make_web(tmp_path / "web"), tmp_path / "data", append=True, source="web")
    assert result.mode == "new" and "held no layout yet" in result.summary()
    assert sorted(tree(tmp_path / "data" / "images")) == ["mild__new.jpg", "severe__new.jpg"]


@pytest.mark.parametrize("name", ["Web", "web images", "../x", "", "-web"])
def test_bad_source_names_are_refused_before_anything_is_read(tmp_path, name):
    with pytest.raises(AcneopsError, match="use lower-case letters, digits, _ or -"):
        importers.import_folders(tmp_path / "missing", tmp_path / "data", source=name)


def test_a_folder_in_the_way_of_the_new_source_is_an_error(tmp_path):
    out = tmp_path / "data"
    importers.import_acne04(make_acne04(tmp_path / "acne04"), out)
    (out / "images" / "web").mkdir()
    with pytest.raises(AcneopsError, match=r"images/web: already exists although no labels.csv row has source 'web'"):
        importers.import_folders(make_web(tmp_path / "web"), out, append=True, source="web")


def test_append_to_a_phantom_and_to_an_old_one_import_report(tmp_path):
    out = tmp_path / "data"
    cfg = phantom_config({"phantom": {"n_per_class": 2, "hr_size": 32, "lr_size": 8, "supersample": 1}})
    phantom.generate(cfg, out)
    result = importers.import_folders(make_web(tmp_path / "web"), out, append=True, source="web")
    assert "source(s) ['phantom-hr', 'phantom-web'] with no import record" in result.summary()
    report = read_json(out / "import_report.json")
    assert report["images"] == 10 and set(report["sources"]) == {"phantom-hr", "phantom-web", "web"}

    # an import report written before the history existed (one import, top-level fields) becomes its first entry
    old = {"source": "acne04", "images": 6, "counts": {"mild": 2}, "splits": {}, "refused": [], "notes": []}
    (out / "import_report.json").write_text(json.dumps(old))
    importers.import_acne04(make_acne04(tmp_path / "acne04"), out, append=True, source="acne04-b")
    assert [e["source"] for e in read_json(out / "import_report.json")["imports"]] == ["acne04", "acne04-b"]
    (out / "import_report.json").write_text("{not json")
    with pytest.raises(AcneopsError, match=r"import_report.json: not readable JSON .* delete .* to start a new "
                                           r"history"):
        importers.import_folders(tmp_path / "web", out, append=True, source="web2")


# ---------------------------------------------------------------------------------------------------------------------
# an interrupted append leaves the old layout intact and readable


def _ingest(data: Path, out: Path, classes=("mild", "moderate", "severe")) -> ingest.IngestResult:
    cfg = IngestConfig(data_dir=data, out_dir=out / "ingest", report_path=out / "ingest.json", classes=classes,
                       min_size=16, workers=1)
    return ingest.run(cfg)


def test_an_append_failing_midway_leaves_the_old_layout_as_it_was(tmp_path, monkeypatch):
    out = tmp_path / "data"
    importers.import_acne04(make_acne04(tmp_path / "acne04"), out)
    snapshot = tree(out)
    from acneops.data.importers import write

    real, calls = write.strip_metadata, []

    def interrupted(data):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C after the first new file was written into the staging folder
        return real(data)

    monkeypatch.setattr(write, "strip_metadata", interrupted)
    with pytest.raises(KeyboardInterrupt):
        importers.import_folders(make_web(tmp_path / "web"), out, append=True, source="web")
    assert tree(out) == snapshot
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".data.")]
    assert _ingest(out, tmp_path / "ingested").rows == 6  # readable: ingest takes it as before


KILLED_APPEND = """
import os, signal, sys
from acneops.data.importers import write
real, calls = write.strip_metadata, []
def killed(data):
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # killed mid-append: no exception handler, no cleanup runs
    return real(data)
write.strip_metadata = killed
from acneops.data import importers
importers.import_folders(sys.argv[1], sys.argv[2], append=True, source="web")
"""


def test_an_append_killed_midway_leaves_the_old_layout_and_the_next_append_works(tmp_path):
    out = tmp_path / "data"
    importers.import_acne04(make_acne04(tmp_path / "acne04"), out)
    snapshot = tree(out)
    web = make_web(tmp_path / "web")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED_APPEND), str(web), str(out)],
                          capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    assert proc.returncode == -9, proc.stderr
    assert tree(out) == snapshot  # the half-built layout stayed in the hidden staging folder
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".data.")]
    assert _ingest(out, tmp_path / "ingested").rows == 6
    importers.import_folders(web, out, append=True, source="web")  # the next run clears the stale staging folder
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".data.")]
    assert read_json(out / "import_report.json")["images"] == 8


# ---------------------------------------------------------------------------------------------------------------------
# the same photo in two sources: ingest catches it as it does within one source


def test_the_same_photo_in_acne04_and_in_the_web_folder_is_caught_at_ingest(tmp_path):
    """ACNE04's test photo levle0_2.jpg reappears in the web folder twice: byte for byte, and resized + recompressed.
    The exact copy is quarantined (ACNE04's test copy kept: the most protected split), the near copy joins its
    near-duplicate group and therefore the frozen test split: no copy of a test photo can train anything."""
    acne04, out = make_acne04(tmp_path / "acne04"), tmp_path / "data"
    web = make_web(tmp_path / "web")
    original = acne04 / "JPEGImages" / "levle0_2.jpg"
    (web / "Mild" / "same.jpg").write_bytes(original.read_bytes())
    with Image.open(original) as im:
        im.resize((72, 60), Image.Resampling.LANCZOS).save(web / "Mild" / "resized.jpg", quality=70)
    importers.import_acne04(acne04, out)
    importers.import_folders(web, out, append=True, source="web")

    result = _ingest(out, tmp_path / "ingested")
    report = read_json(tmp_path / "ingested" / "ingest.json")
    quarantined = {q["image"]: q for q in report["quarantine"]}
    assert set(quarantined) == {"images/web/mild__same.jpg"}
    assert quarantined["images/web/mild__same.jpg"]["kind"] == "exact_duplicate"
    assert quarantined["images/web/mild__same.jpg"]["reason"] == "exact duplicate of images/levle0_2.jpg"
    rows = {r["image"]: r for r in read_csv(tmp_path / "ingested" / "ingest" / "manifest.csv")}
    kept, near = rows["images/levle0_2.jpg"], rows["images/web/mild__resized.jpg"]
    assert (kept["source"], kept["split"]) == ("acne04", "test")
    assert near["source"] == "web" and near["group"] == kept["group"] and near["split"] == "test"
    assert result.quarantined == {"exact_duplicate": 1} and result.rows == 10


def test_cli_appends_acne04_to_a_web_layout_and_refuses_a_second_time(tmp_path):
    out = tmp_path / "data"
    runner = CliRunner()
    first = runner.invoke(app, ["data", "import-folders", str(make_web(tmp_path / "web")), str(out), "--source", "web"])
    assert first.exit_code == 0, first.output
    cmd = ["data", "import-acne04", str(make_acne04(tmp_path / "acne04")), str(out), "--append"]
    ok = runner.invoke(app, cmd)
    assert ok.exit_code == 0, ok.output
    assert "appended 6 images (acne04)" in ok.output and "now holds 8 images: acne04 6, web 2" in ok.output
    again = runner.invoke(app, cmd)
    assert again.exit_code == 1 and "source 'acne04' is already in this layout" in again.output
    assert "Traceback" not in again.output
