"""Importers: ACNE04 and folder-per-class into the raw layout; one test per bad-input kind; CLI."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from typer.testing import CliRunner

from acneops.cli import app
from acneops.core.config import ConfigError
from acneops.core.errors import AcneopsError
from acneops.core.io import read_csv, read_json, sha256_file
from acneops.data import importers
from acneops.data.decode import open_normalised
from acneops.stages.params import importers_config

HEADER = "image,label,lesions,source,split"


def _jpeg(path: Path, color=(200, 120, 100), size=(12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="JPEG")
    return path


def make_acne04(root: Path, trainval: str | None = None, test: str | None = None, fold: int = 0) -> Path:
    """A tiny ACNE04 tree: 2 images per grade 0..3; grade-0 and grade-3 first images go to test."""
    for g in range(4):
        for n in (1, 2):
            _jpeg(root / "JPEGImages" / f"levle{g}_{n}.jpg", (60 * g, 100, 100))
    if trainval is None:
        trainval = "levle0_2.jpg 0 3\nlevle1_1.jpg 1 10\nlevle1_2.jpg\t1  12\r\nlevle2_1.jpg 2 30\n\nlevle2_2.jpg 2 40\nlevle3_2.jpg 3 70\n"
    if test is None:
        test = "levle0_1.jpg 0 2\nlevle3_1.jpg 3 66\n"
    (root / f"NNEW_trainval_{fold}.txt").write_text(trainval)
    (root / f"NNEW_test_{fold}.txt").write_text(test)
    return root


def last_import(out: Path) -> dict:
    """The latest entry of OUT/import_report.json's import history."""
    return read_json(out / "import_report.json")["imports"][-1]


def rows_by_name(out: Path) -> dict[str, dict[str, str]]:
    assert (out / "labels.csv").read_text().splitlines()[0] == HEADER
    return {Path(r["image"]).name: r for r in read_csv(out / "labels.csv")}


def test_acne04_import_labels_splits_lesions_and_bytes(tmp_path):
    src = make_acne04(tmp_path / "acne04")
    result = importers.import_acne04(src, tmp_path / "out")
    rows = rows_by_name(tmp_path / "out")
    assert len(rows) == 8
    assert rows["levle0_1.jpg"] == {"image": "images/levle0_1.jpg", "label": "mild", "lesions": "2",
                                    "source": "acne04", "split": "test"}
    assert rows["levle1_2.jpg"]["lesions"] == "12" and rows["levle1_2.jpg"]["split"] == "train"
    assert rows["levle3_2.jpg"]["label"] == "severe"  # default: ACNE04 level3 (very severe) -> severe
    assert {r["label"] for r in rows.values()} == {"mild", "moderate", "severe"}
    assert result.splits == {"test": 2, "train": 6} and result.counts == {"mild": 2, "moderate": 2, "severe": 4}
    for name in rows:  # a file without metadata is copied byte for byte (the JPEG stream is only re-framed)
        assert sha256_file(tmp_path / "out" / "images" / name) == sha256_file(src / "JPEGImages" / name)
    assert read_json(result.report_path)["counts"] == result.counts


def test_acne04_grade_mapping_from_params_and_fold(tmp_path):
    src = make_acne04(tmp_path / "acne04", fold=2)
    params = {"importers": {"acne04_grades": {0: "mild", 1: "moderate", 2: "severe", 3: "very_severe"}}}
    importers.import_acne04(src, tmp_path / "out", fold=2, config=importers_config(params))
    assert rows_by_name(tmp_path / "out")["levle3_1.jpg"]["label"] == "very_severe"
    with pytest.raises(AcneopsError, match=r"fold 0.*folds present: \['2'\]"):
        importers.import_acne04(src, tmp_path / "out2", fold=0)


def test_acne04_bad_params_mapping_is_config_error(tmp_path):
    src = make_acne04(tmp_path / "acne04")
    with pytest.raises(ConfigError, match="class name"):
        importers.import_acne04(src, tmp_path / "o", config=importers_config({"importers": {"acne04_grades": {0: "Mild Acne"}}}))


def test_acne04_unlisted_images_are_kept_with_empty_split_and_reported(tmp_path):
    src = make_acne04(tmp_path / "acne04", test="levle0_1.jpg 0 2\n")  # levle3_1.jpg is now in no list
    (src / "JPEGImages" / "README.txt").write_text("not an image")
    result = importers.import_acne04(src, tmp_path / "out")
    row = rows_by_name(tmp_path / "out")["levle3_1.jpg"]
    assert (row["label"], row["split"], row["lesions"]) == ("severe", "", "")
    assert result.unlisted == ("levle3_1.jpg",) and result.ignored == ("JPEGImages/README.txt",)
    assert "in no list" in result.summary() and "README.txt" in result.summary()


@pytest.mark.parametrize(
    ("trainval", "needle"),
    [
        ("levle0_2.jpg 0\n", r"NNEW_trainval_0.txt line 1: expected 3 fields"),
        ("levle0_2.jpg 0 3 5\n", r"line 1: image JPEGImages/levle0_2.jpg 0 not found \(the name is all but the last two"),
        ("levle1_1.jpg 1 10\nlevle0_2.jpg zero 3\n", r"NNEW_trainval_0.txt line 2: grade 'zero' is not an integer"),
        ("levle0_2.jpg 7 3\n", r"line 1: unknown grade 7"),
        ("levle0_2.jpg 0 many\n", r"line 1: lesion count 'many' is not an integer"),
        ("levle0_9.jpg 0 3\n", r"line 1: image JPEGImages/levle0_9.jpg not found"),
        ("../secret.jpg 0 3\n", r"line 1: image name '../secret.jpg' must be a plain file name"),
        ("levle0_1.jpg 0 3\n", r"NNEW_test_0.txt line 1: levle0_1.jpg is already listed at NNEW_trainval_0.txt line 1"),
    ],
    ids=["field-count", "extra-field", "non-integer-grade", "unknown-grade", "bad-lesions", "missing-image", "path",
         "duplicate"],
)
def test_acne04_bad_lines_name_file_and_line(tmp_path, trainval, needle):
    src = make_acne04(tmp_path / "acne04", trainval=trainval)
    with pytest.raises(AcneopsError, match=needle) as info:
        importers.import_acne04(src, tmp_path / "out")
    assert "--skip-bad-lines" in str(info.value)  # the message says how to import the rest
    assert not (tmp_path / "out").exists()  # nothing half-imported


def test_acne04_lists_every_bad_line_in_one_error(tmp_path):
    src = make_acne04(tmp_path / "acne04", trainval="levle0_2.jpg 0\nlevle1_1.jpg 1 10\nlevle1_2.jpg 9 1\n")
    with pytest.raises(AcneopsError) as info:
        importers.import_acne04(src, tmp_path / "out")
    msg = str(info.value)
    assert "2 bad line(s)" in msg and "line 1:" in msg and "line 3:" in msg and "levle0_12.jpg 0 3" in msg


def test_acne04_missing_images_folder(tmp_path):
    (tmp_path / "acne04").mkdir()
    with pytest.raises(AcneopsError, match="JPEGImages"):
        importers.import_acne04(tmp_path / "acne04", tmp_path / "out")


def make_folders(root: Path) -> Path:
    _jpeg(root / "Healthy" / "a.jpg")
    _jpeg(root / "Healthy" / "b.JPG")
    _jpeg(root / "Mild" / "a.jpg")
    _jpeg(root / "Very Severe" / "batch1" / "x.png")
    (root / "Mild" / "notes.txt").write_text("clinic notes")
    (root / "index.csv").write_text("stray")
    return root


def test_import_folders_classes_names_and_report(tmp_path):
    src = make_folders(tmp_path / "src")
    result = importers.import_folders(src, tmp_path / "out")
    rows = rows_by_name(tmp_path / "out")
    assert set(rows) == {"healthy__a.jpg", "healthy__b.JPG", "mild__a.jpg", "very_severe__batch1__x.png"}
    assert {r["label"] for r in rows.values()} == {"healthy", "mild", "very_severe"}
    assert all(r["source"] == "folders" and r["split"] == "" and r["lesions"] == "" for r in rows.values())
    assert sha256_file(tmp_path / "out/images/mild__a.jpg") == sha256_file(src / "Mild/a.jpg")
    assert "Mild/notes.txt" in result.ignored and "index.csv (not in a class folder)" in result.ignored
    assert "2 file(s) not imported" in result.summary()


def test_import_folders_with_fixed_split_layout(tmp_path):
    for split in ("train", "Test"):
        for cls in ("mask", "no_mask"):
            _jpeg(tmp_path / "src" / split / cls / "1.jpg")
    result = importers.import_folders(tmp_path / "src", tmp_path / "out")
    rows = rows_by_name(tmp_path / "out")
    assert rows["test__mask__1.jpg"]["split"] == "test" and rows["train__no_mask__1.jpg"]["split"] == "train"
    assert result.splits == {"test": 2, "train": 2}


def test_import_folders_empty_class_folder(tmp_path):
    src = make_folders(tmp_path / "src")
    (src / "Moderate").mkdir()
    with pytest.raises(AcneopsError, match=r"Moderate: class folder has no images"):
        importers.import_folders(src, tmp_path / "out")


def test_import_folders_no_subfolders_names_expected_layout(tmp_path):
    _jpeg(tmp_path / "src" / "a.jpg")
    with pytest.raises(AcneopsError, match=r"no class sub-folders.*Healthy/img001.jpg"):
        importers.import_folders(tmp_path / "src", tmp_path / "out")


def test_import_folders_two_folders_one_class(tmp_path):
    _jpeg(tmp_path / "src" / "Mild" / "a.jpg")
    _jpeg(tmp_path / "src" / "mild" / "b.jpg")
    with pytest.raises(AcneopsError, match="both give class 'mild'"):
        importers.import_folders(tmp_path / "src", tmp_path / "out")


def test_refuses_foreign_output_but_replaces_previous_import(tmp_path):
    src = make_folders(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.docx").write_text("precious")
    with pytest.raises(AcneopsError, match="refusing to overwrite"):
        importers.import_folders(src, out)
    assert (out / "thesis.docx").read_text() == "precious"

    (out / "thesis.docx").unlink()
    importers.import_folders(src, out)
    (src / "Healthy" / "b.JPG").unlink()
    importers.import_folders(src, out)  # a previous import is replaced as a whole: no stale files
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(rows_by_name(out))
    assert len(rows_by_name(out)) == 3


def test_output_inside_source_is_refused(tmp_path):
    src = make_folders(tmp_path / "src")
    with pytest.raises(AcneopsError, match="inside the source"):
        importers.import_folders(src, src / "out")


def test_cli_import_acne04(tmp_path):
    src = make_acne04(tmp_path / "acne04")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"importers": {"acne04_grades": {0: "mild", 1: "moderate", 2: "severe", 3: "vs"}}}))
    runner = CliRunner()
    ok = runner.invoke(app, ["data", "import-acne04", str(src), str(tmp_path / "out"), "--fold", "0", "--params", str(params)])
    assert ok.exit_code == 0, ok.output
    assert "imported 8 images" in ok.output
    assert rows_by_name(tmp_path / "out")["levle3_1.jpg"]["label"] == "vs"
    bad = runner.invoke(app, ["data", "import-acne04", str(src), str(tmp_path / "o2"), "--fold", "3", "--params", str(params)])
    assert bad.exit_code == 1 and "NNEW_trainval_3.txt" in bad.output


def test_cli_import_folders(tmp_path):
    src = make_folders(tmp_path / "src")
    runner = CliRunner()
    ok = runner.invoke(app, ["data", "import-folders", str(src), str(tmp_path / "out")])
    assert ok.exit_code == 0, ok.output
    assert "imported 4 images" in ok.output and "notes.txt" in ok.output
    (tmp_path / "empty").mkdir()
    bad = runner.invoke(app, ["data", "import-folders", str(tmp_path / "empty"), str(tmp_path / "o2")])
    assert bad.exit_code == 1 and "no class sub-folders" in bad.output


def test_acne04_grade_differing_from_file_name_is_noted_and_list_wins(tmp_path):
    src = make_acne04(tmp_path / "acne04", trainval="levle0_2.jpg 1 8\n")
    result = importers.import_acne04(src, tmp_path / "out")
    assert rows_by_name(tmp_path / "out")["levle0_2.jpg"]["label"] == "moderate"
    assert "file-name level differs" in result.summary() and "levle0_2.jpg" in result.summary()


# ---------------------------------------------------------------------------------------------
# Issue 10: links leaving the source, bad lines skipped on request, names with spaces


def test_acne04_link_leaving_the_source_is_refused_never_read(tmp_path):
    """A crafted ACNE04 folder: JPEGImages/ holds links to a host file outside it (listed and unlisted)."""
    src = make_acne04(tmp_path / "acne04", trainval="levle0_2.jpg 0 3\nlevle1_3.jpg 1 9\nlevle2_1.jpg 2 30\n")
    outside = _jpeg(tmp_path / "host" / "private.jpg", (1, 2, 3), size=(16, 16))
    (tmp_path / "host" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (src / "JPEGImages" / "levle1_3.jpg").symlink_to(outside)  # listed in trainval
    (src / "JPEGImages" / "levle0_7.jpg").symlink_to(tmp_path / "host" / "passwd")  # unlisted
    (src / "JPEGImages" / "levle2_9.jpg").symlink_to(src / "JPEGImages" / "levle2_2.jpg")  # stays inside: followed
    runner = CliRunner()
    res = runner.invoke(app, ["data", "import-acne04", str(src), str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    rows = rows_by_name(tmp_path / "out")
    assert "levle1_3.jpg" not in rows and "levle0_7.jpg" not in rows
    assert rows["levle2_9.jpg"]["split"] == ""  # an inside link is read like its target
    secret = (outside.read_bytes(), b"root:x:0:0")
    for f in (tmp_path / "out").rglob("*"):
        assert not f.is_symlink()
        if f.is_file():
            assert f.read_bytes() != secret[0] and secret[1] not in f.read_bytes()
    refused = {r["path"]: r["reason"] for r in last_import(tmp_path / "out")["refused"]}
    assert set(refused) == {"JPEGImages/levle1_3.jpg", "JPEGImages/levle0_7.jpg"}
    assert all("outside the source folder: not read" in r for r in refused.values())
    assert "2 file(s) refused" in res.output and "JPEGImages/levle1_3.jpg" in res.output


def test_acne04_images_folder_linked_from_outside_is_an_error(tmp_path):
    real = make_acne04(tmp_path / "elsewhere")
    src = tmp_path / "acne04"
    src.mkdir()
    for f in ("NNEW_trainval_0.txt", "NNEW_test_0.txt"):
        (src / f).write_text((real / f).read_text())
    (src / "JPEGImages").symlink_to(real / "JPEGImages", target_is_directory=True)
    with pytest.raises(AcneopsError, match=r"JPEGImages: is a symbolic link to a folder outside .*cp -rL"):
        importers.import_acne04(src, tmp_path / "out")


def test_import_folders_links_leaving_the_source_are_refused(tmp_path):
    src = make_folders(tmp_path / "src")
    host = tmp_path / "host"
    _jpeg(host / "holiday" / "me.jpg", (9, 9, 9))
    (src / "Mild" / "linked.jpg").symlink_to(host / "holiday" / "me.jpg")
    (src / "Mild" / "album").symlink_to(host / "holiday", target_is_directory=True)
    (src / "Moderate").symlink_to(host / "holiday", target_is_directory=True)  # a whole class folder
    (src / "Healthy" / "again.jpg").symlink_to(src / "Healthy" / "a.jpg")  # inside: followed
    (src / "Healthy" / "alias").symlink_to(src / "Mild", target_is_directory=True)  # inside folder: not walked
    result = importers.import_folders(src, tmp_path / "out")
    rows = rows_by_name(tmp_path / "out")
    assert set(rows) == {"healthy__a.jpg", "healthy__again.jpg", "healthy__b.JPG", "mild__a.jpg",
                         "very_severe__batch1__x.png"}
    assert dict(result.refused).keys() == {"Mild/linked.jpg", "Mild/album", "Moderate"}
    assert any(i.startswith("Healthy/alias (symbolic link to a folder inside the source: not followed")
               for i in result.ignored)
    report = last_import(result.out_dir)
    assert {r["path"] for r in report["refused"]} == {"Mild/linked.jpg", "Mild/album", "Moderate"}


def test_acne04_one_bad_line_among_hundreds_skip_bad_lines(tmp_path):
    src = tmp_path / "acne04"
    for k in range(150):
        for g in range(2):
            _jpeg(src / "JPEGImages" / f"levle{g}_{k}.jpg", (g * 90, k, 80), size=(8, 8))
    good = [f"levle{g}_{k}.jpg {g} {k % 50}" for k in range(150) for g in range(2)]
    good[137] = "levle1_68.jpg 1 lots"  # one malformed line among 300
    good.append("levle0_3.jpg 0 3")  # listed twice: the image is left out, not put in either place
    (src / "NNEW_trainval_0.txt").write_text("\n".join(good[:200]) + "\n")
    (src / "NNEW_test_0.txt").write_text("\n".join(good[200:]) + "\n")
    runner = CliRunner()
    res = runner.invoke(app, ["data", "import-acne04", str(src), str(tmp_path / "out")])
    assert res.exit_code == 1
    assert "NNEW_trainval_0.txt line 138: lesion count 'lots' is not an integer" in res.output
    assert "NNEW_test_0.txt line 101: levle0_3.jpg is already listed at NNEW_trainval_0.txt line 7" in res.output
    assert "--skip-bad-lines" in res.output and not (tmp_path / "out").exists()

    res = runner.invoke(app, ["data", "import-acne04", str(src), str(tmp_path / "out"), "--skip-bad-lines"])
    assert res.exit_code == 0, res.output
    rows = rows_by_name(tmp_path / "out")
    assert len(rows) == 298 and "levle1_68.jpg" not in rows and "levle0_3.jpg" not in rows
    report = last_import(tmp_path / "out")
    assert [(s["file"], s["line"]) for s in report["skipped_lines"]] == [("NNEW_trainval_0.txt", 138),
                                                                          ("NNEW_test_0.txt", 101)]
    assert report["skipped_lines"][0]["text"] == "levle1_68.jpg 1 lots"
    assert report["left_out"] == ["levle0_3.jpg", "levle1_68.jpg"] and report["unlisted"] == []
    assert "2 bad line(s) skipped" in res.output and "import_report.json" in res.output


def test_acne04_file_names_with_spaces(tmp_path):
    src = make_acne04(tmp_path / "acne04", trainval="levle0_2.jpg 0 3\nlevle1 (copy 2).jpg\t1  12\n")
    _jpeg(src / "JPEGImages" / "levle1 (copy 2).jpg")
    importers.import_acne04(src, tmp_path / "out")
    row = rows_by_name(tmp_path / "out")["levle1 (copy 2).jpg"]
    assert (row["label"], row["lesions"], row["split"]) == ("moderate", "12", "train")


def test_import_strips_gps_exif_and_comments_keeps_pixels_and_orientation(tmp_path):
    """GPS EXIF and a 'patient 0042, clinic X' comment do not reach data/; decoded pixels are identical."""
    src = make_acne04(tmp_path / "acne04")
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "ClinicCam", 6  # Make, Orientation (rotate 90 degrees on display)
    exif[0x8825] = {1: "N", 2: (52.0, 22.0, 5.0), 3: "E", 4: (4.0, 53.0, 0.0)}  # GPS IFD
    original = src / "JPEGImages" / "levle1_1.jpg"
    photo.save(original, format="JPEG", exif=exif, comment="patient 0042, clinic X", quality=90)
    pinfo = PngInfo()
    pinfo.add_text("Comment", "patient 0042, clinic X")
    (tmp_path / "folders" / "Mild").mkdir(parents=True)
    photo.save(tmp_path / "folders" / "Mild" / "p.png", format="PNG", pnginfo=pinfo, exif=exif)
    runner = CliRunner()
    for cmd, dest in ((["import-acne04", str(src)], "images/levle1_1.jpg"),
                      (["import-folders", str(tmp_path / "folders")], "images/mild__p.png")):
        out = tmp_path / cmd[0]
        res = runner.invoke(app, ["data", *cmd, str(out)])
        assert res.exit_code == 0, res.output
        assert "metadata removed from" in res.output and "EXIF orientation kept in 1" in res.output
        before = (original if cmd[0] == "import-acne04" else tmp_path / "folders/Mild/p.png").read_bytes()
        after = (out / dest).read_bytes()
        for needle in (b"patient 0042", b"clinic X", b"ClinicCam"):
            assert needle in before and needle not in after
        with Image.open(out / dest) as im:
            assert dict(im.getexif()) == {0x0112: 6} and "comment" not in im.info and "Comment" not in im.info
            assert im.getexif().get_ifd(0x8825) == {}
        with Image.open(io.BytesIO(before)) as a, Image.open(out / dest) as b:
            assert a.mode == b.mode and a.tobytes() == b.tobytes()  # same pixels, byte for byte
        assert open_normalised(io.BytesIO(before)).tobytes() == open_normalised(out / dest).tobytes()
        assert last_import(out)["metadata"]["orientation_kept"] == 1
