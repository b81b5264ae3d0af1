"""ingest: every bad-input kind is quarantined with a reason, dedup, groups, seeded stratified split."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from acneops.cli import app
from acneops.core.config import ConfigError
from acneops.core.errors import StageError
from acneops.core.io import read_csv, read_json
from acneops.data import ingest as ingest_lib
from acneops.stages import ingest

CLASSES = ("healthy", "mild", "moderate", "severe")
HEADER = ["image", "label", "lesions", "source", "split"]


def smooth(seed: int, size: int = 48) -> Image.Image:
    """A random smooth RGB image: distinct seeds give unrelated perceptual hashes."""
    grid = (np.random.default_rng(seed).random((4, 4, 3)) * 255).astype(np.uint8)
    return Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC)


def write_labels(data: Path, rows: list[list]) -> None:
    data.mkdir(parents=True, exist_ok=True)
    with open(data / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        writer.writerows(rows)


def base_rows(data: Path, per_class: int = 6, start_seed: int = 0, split: str = "") -> list[list]:
    """Save ``per_class`` good PNGs per class under data/images and return their label rows."""
    (data / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for c, label in enumerate(CLASSES):
        for i in range(per_class):
            name = f"images/{label}_{i}.png"
            smooth(start_seed + 1000 * c + i).save(data / name)
            rows.append([name, label, str(i), "phantom-hr", split])
    return rows


def make_cfg(tmp_path: Path, **kw) -> ingest_lib.IngestConfig:
    values = dict(data_dir=tmp_path / "data", out_dir=tmp_path / "out", report_path=tmp_path / "reports/ingest.json",
                  classes=CLASSES, min_size=16, workers=1)
    values.update(kw)
    return ingest_lib.IngestConfig(**values)


def quarantined(cfg: ingest_lib.IngestConfig) -> dict[str, dict]:
    return {e["image"]: e for e in read_json(cfg.report_path)["quarantine"]}


def manifest(cfg: ingest_lib.IngestConfig) -> dict[str, dict]:
    return {r["image"]: r for r in read_csv(cfg.out_dir / "manifest.csv")}


def run_with_extra(tmp_path: Path, extra_rows: list[list], **kw) -> ingest_lib.IngestConfig:
    data = tmp_path / "data"
    rows = base_rows(data)
    write_labels(data, rows + extra_rows)
    cfg = make_cfg(tmp_path, **kw)
    ingest.run(cfg)
    return cfg


def test_clean_dataset_gives_full_manifest_contract_and_report(tmp_path):
    cfg = run_with_extra(tmp_path, [])
    rows = read_csv(cfg.out_dir / "manifest.csv")
    assert list(rows[0]) == ingest_lib.MANIFEST_FIELDS
    assert len(rows) == 24 and [r["image"] for r in rows] == sorted(r["image"] for r in rows)
    assert {r["width"] for r in rows} == {"48"} and all(len(r["phash"]) == 16 for r in rows)
    report = read_json(cfg.report_path)
    assert report["rows"] == 24 and report["usable"] == 24 and report["quarantine"] == []
    contract = read_json(cfg.out_dir / "contract.json")
    assert contract["test_split"] == "frozen"
    assert set(contract["test_readers"]) == {"restore", "evaluate"}
    assert "gan" in contract["test_forbidden_roles"] and "sorter" in contract["test_forbidden_roles"]


def test_zero_byte_file_is_quarantined(tmp_path):
    (tmp_path / "data/images").mkdir(parents=True)
    (tmp_path / "data/images/empty.png").write_bytes(b"")
    cfg = run_with_extra(tmp_path, [["images/empty.png", "mild", "1", "x", ""]])
    assert quarantined(cfg)["images/empty.png"]["kind"] == "zero_byte"
    assert "images/empty.png" not in manifest(cfg)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_quarantined(tmp_path, fmt):
    buf = io.BytesIO()
    smooth(99, 64).save(buf, format=fmt)
    data = buf.getvalue()
    (tmp_path / "data/images").mkdir(parents=True)
    (tmp_path / f"data/images/cut.{fmt.lower()}").write_bytes(data[: len(data) // 2])
    cfg = run_with_extra(tmp_path, [[f"images/cut.{fmt.lower()}", "mild", "1", "x", ""]])
    entry = quarantined(cfg)[f"images/cut.{fmt.lower()}"]
    assert entry["kind"] == "truncated" and "truncated" in entry["reason"]
    assert entry["row"] == 26  # header is line 1, 24 good rows, then this one


def test_text_file_named_jpg_is_quarantined(tmp_path):
    (tmp_path / "data/images").mkdir(parents=True)
    (tmp_path / "data/images/notes.jpg").write_text("patient list, not a photo\n")
    cfg = run_with_extra(tmp_path, [["images/notes.jpg", "mild", "", "x", ""]])
    assert quarantined(cfg)["images/notes.jpg"]["kind"] == "not_an_image"


def test_decompression_bomb_is_quarantined_and_pillow_limit_restored(tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    (tmp_path / "data/images").mkdir(parents=True)
    smooth(7, 200).save(tmp_path / "data/images/bomb.png")  # 40,000 px > max_pixels, others 2,304 px
    cfg = run_with_extra(tmp_path, [["images/bomb.png", "mild", "", "x", ""]], max_pixels=10_000)
    entry = quarantined(cfg)["images/bomb.png"]
    assert entry["kind"] == "decompression_bomb" and "bomb" in entry["reason"]
    assert Image.MAX_IMAGE_PIXELS == before


def test_too_small_image_is_quarantined(tmp_path):
    (tmp_path / "data/images").mkdir(parents=True)
    smooth(8, 10).save(tmp_path / "data/images/tiny.png")
    cfg = run_with_extra(tmp_path, [["images/tiny.png", "mild", "", "x", ""]])
    entry = quarantined(cfg)["images/tiny.png"]
    assert entry["kind"] == "too_small" and "10x10" in entry["reason"]


def test_bad_label_rows_are_quarantined_with_the_row_number(tmp_path):
    (tmp_path / "data/images").mkdir(parents=True)
    for seed, name in enumerate("abc"):
        smooth(5000 + seed).save(tmp_path / f"data/images/{name}.png")
    extra = [["images/a.png", "mild", "many", "x", ""],  # bad lesions value
             ["images/b.png", "mild", "1", "x", "holdout"],  # bad split value
             ["images/c.png", "mild"]]  # wrong number of columns
    cfg = run_with_extra(tmp_path, extra)
    q = quarantined(cfg)
    assert {q[f"images/{n}.png"]["kind"] for n in "abc"} == {"bad_row"}
    assert "'many'" in q["images/a.png"]["reason"] and "'holdout'" in q["images/b.png"]["reason"]
    assert q["images/c.png"]["row"] == 28 and "2 fields" in q["images/c.png"]["reason"]


def test_unknown_label_is_quarantined(tmp_path):
    (tmp_path / "data/images").mkdir(parents=True)
    smooth(11).save(tmp_path / "data/images/u.png")
    cfg = run_with_extra(tmp_path, [["images/u.png", "very_severe", "", "x", ""]])
    entry = quarantined(cfg)["images/u.png"]
    assert entry["kind"] == "unknown_label" and "very_severe" in entry["reason"]


def test_paths_escaping_the_data_folder_are_quarantined(tmp_path):
    outside = tmp_path / "outside.png"
    smooth(12).save(outside)
    (tmp_path / "data/images").mkdir(parents=True)
    os.symlink(outside, tmp_path / "data/images/link.png")
    smooth(13).save(tmp_path / "data/images/real.png")
    os.symlink(tmp_path / "data/images/real.png", tmp_path / "data/images/inside_link.png")
    extra = [["../outside.png", "mild", "", "x", ""], [str(outside), "mild", "", "x", ""],
             ["images/link.png", "mild", "", "x", ""], ["images/inside_link.png", "mild", "", "x", ""]]
    cfg = run_with_extra(tmp_path, extra)
    q = quarantined(cfg)
    assert q["../outside.png"]["kind"] == "unsafe_path" and "'..'" in q["../outside.png"]["reason"]
    assert q[str(outside)]["kind"] == "unsafe_path" and "absolute" in q[str(outside)]["reason"]
    assert q["images/link.png"]["kind"] == "unsafe_path" and "symlink" in q["images/link.png"]["reason"]
    assert "images/inside_link.png" in manifest(cfg)  # a symlink that stays inside is fine


def test_missing_file_is_quarantined(tmp_path):
    cfg = run_with_extra(tmp_path, [["images/gone.png", "mild", "", "x", ""]])
    entry = quarantined(cfg)["images/gone.png"]
    assert entry["kind"] == "missing_file" and "not found" in entry["reason"]


def test_duplicate_rows_quarantined_and_conflicting_rows_fail(tmp_path):
    cfg = run_with_extra(tmp_path, [["images/mild_0.png", "mild", "0", "phantom-hr", ""]])
    entry = quarantined(cfg)["images/mild_0.png"]
    assert entry["kind"] == "duplicate_row" and "row 8" in entry["reason"]
    assert "images/mild_0.png" in manifest(cfg)
    with pytest.raises(StageError, match=r"inconsistent labels: 'images/mild_0.png'.*'severe'"):
        run_with_extra(tmp_path / "b", [["images/mild_0.png", "severe", "0", "phantom-hr", ""]])


def test_exact_duplicates_keep_first_or_quarantine_all_when_labels_differ(tmp_path):
    data = tmp_path / "data"
    rows = base_rows(data)
    same = (data / "images/mild_1.png").read_bytes()
    (data / "images/copy_same.png").write_bytes(same)
    (data / "images/copy_other.png").write_bytes((data / "images/severe_2.png").read_bytes())
    write_labels(data, rows + [["images/copy_same.png", "mild", "1", "x", ""],
                               ["images/copy_other.png", "moderate", "", "x", ""]])
    cfg = make_cfg(tmp_path)
    ingest.run(cfg)
    q, m = quarantined(cfg), manifest(cfg)
    assert q["images/copy_same.png"]["kind"] == "exact_duplicate" and "mild_1" in q["images/copy_same.png"]["reason"]
    assert "images/mild_1.png" in m
    assert q["images/copy_other.png"]["kind"] == q["images/severe_2.png"]["kind"] == "conflicting_duplicate"
    assert "images/severe_2.png" not in m


def test_near_duplicates_share_group_and_split(tmp_path):
    data = tmp_path / "data"
    rows = base_rows(data, per_class=8)
    original = Image.open(data / "images/moderate_3.png").convert("RGB")
    original.save(data / "images/re_encoded.jpg", quality=70)
    original.resize((40, 40), Image.Resampling.LANCZOS).save(data / "images/resized.png")
    write_labels(data, rows + [["images/re_encoded.jpg", "moderate", "", "x", ""],
                               ["images/resized.png", "moderate", "", "x", ""]])
    for seed in range(5):  # whichever split the group lands in, it lands there whole
        cfg = make_cfg(tmp_path / f"s{seed}", data_dir=data, seed=seed)
        ingest.run(cfg)
        m = manifest(cfg)
        trio = [m[n] for n in ("images/moderate_3.png", "images/re_encoded.jpg", "images/resized.png")]
        assert len({r["group"] for r in trio}) == 1 and len({r["split"] for r in trio}) == 1
        assert len({r["group"] for r in m.values()}) == len(m) - 2  # nothing else was grouped
        assert read_json(cfg.report_path)["largest_group"] == 3


def test_nothing_usable_fails_with_a_clear_message_and_a_report(tmp_path):
    (tmp_path / "data/images").mkdir(parents=True)
    (tmp_path / "data/images/a.jpg").write_text("not an image")
    write_labels(tmp_path / "data", [["images/a.jpg", "mild", "", "x", ""], ["images/b.jpg", "mild", "", "x", ""]])
    cfg = make_cfg(tmp_path)
    with pytest.raises(StageError, match=r"nothing usable.*2 rows.*missing_file.*not_an_image"):
        ingest.run(cfg)
    assert len(read_json(cfg.report_path)["quarantine"]) == 2


def test_class_without_usable_images_fails(tmp_path):
    data = tmp_path / "data"
    write_labels(data, [r for r in base_rows(data) if r[1] != "severe"])
    with pytest.raises(StageError, match=r"\['severe'\].*no usable image"):
        ingest.run(make_cfg(tmp_path))


def test_split_is_stratified_and_seeded(tmp_path):
    data = tmp_path / "data"
    write_labels(data, base_rows(data, per_class=10))
    a, b, c = (make_cfg(tmp_path / n, data_dir=data, seed=s) for n, s in (("a", 1), ("b", 1), ("c", 2)))
    for cfg in (a, b, c):
        ingest.run(cfg)
    assert (a.out_dir / "manifest.csv").read_bytes() == (b.out_dir / "manifest.csv").read_bytes()
    assert (a.out_dir / "manifest.csv").read_bytes() != (c.out_dir / "manifest.csv").read_bytes()
    splits = read_json(a.report_path)["splits"]
    for label in CLASSES:  # 10 per class: 2 test, 1 val, 7 train
        assert (splits["test"][label], splits["val"][label], splits["train"][label]) == (2, 1, 7)


def test_fixed_split_is_respected_and_val_carved_from_train(tmp_path):
    data = tmp_path / "data"
    rows = base_rows(data, per_class=10)
    for r in rows:
        r[4] = "test" if int(r[2]) < 3 else "train"
    write_labels(data, rows)
    cfg = make_cfg(tmp_path, val_fraction=0.2)
    ingest.run(cfg)
    m = manifest(cfg)
    for r in rows:
        got = m[r[0]]["split"]
        assert got == "test" if r[4] == "test" else got in ("train", "val")
    splits = read_json(cfg.report_path)["splits"]
    assert all(splits["val"][c] == 2 and splits["test"][c] == 3 for c in CLASSES)


def test_near_duplicate_across_fixed_splits_is_quarantined(tmp_path):
    data = tmp_path / "data"
    rows = base_rows(data, split="train")
    Image.open(data / "images/mild_2.png").convert("RGB").save(data / "images/leak.jpg", quality=80)
    rows[CLASSES.index("mild") * 6 + 2][4] = "test"  # mild_2 is fixed to test
    write_labels(data, rows + [["images/leak.jpg", "mild", "", "x", "train"]])
    cfg = make_cfg(tmp_path)
    ingest.run(cfg)
    entry = quarantined(cfg)["images/leak.jpg"]
    assert entry["kind"] == "split_conflict" and "images/mild_2.png" in entry["reason"]
    assert manifest(cfg)["images/mild_2.png"]["split"] == "test"


def test_process_pool_gives_the_same_manifest(tmp_path):
    data = tmp_path / "data"
    write_labels(data, base_rows(data))
    one, two = make_cfg(tmp_path / "one", data_dir=data), make_cfg(tmp_path / "two", data_dir=data, workers=2)
    ingest.run(one)
    ingest.run(two)
    assert (one.out_dir / "manifest.csv").read_bytes() == (two.out_dir / "manifest.csv").read_bytes()


def test_every_row_is_accounted_for_and_unlisted_files_reported(tmp_path):
    (tmp_path / "data/images").mkdir(parents=True)
    (tmp_path / "data/images/e.png").write_bytes(b"")
    smooth(3).save(tmp_path / "data/images/not_in_labels.png")
    cfg = run_with_extra(tmp_path, [["images/e.png", "mild", "", "x", ""], ["images/nope.png", "x", "", "", ""]])
    report = read_json(cfg.report_path)
    assert report["usable"] + report["quarantined"] == report["rows"] == 26
    assert report["quarantined_by_kind"] == {"unknown_label": 1, "zero_byte": 1}
    assert report["unlisted_files"]["examples"] == ["images/not_in_labels.png"]


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="unknown key"):
        ingest.config_from_params({"ingest": {"seeed": 1}})
    with pytest.raises(ConfigError, match="val_fraction \\+ test_fraction"):
        ingest.config_from_params({"ingest": {"val_fraction": 0.5, "test_fraction": 0.5}})
    cfg = ingest.config_from_params({"ingest": {"classes": ["mask", "no_mask"], "workers": 2}})
    assert cfg.classes == ("mask", "no_mask") and cfg.workers == 2


def test_missing_labels_file_is_a_stage_error(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(StageError, match="labels.csv: labels file not found"):
        ingest.run(make_cfg(tmp_path))
    (tmp_path / "data/labels.csv").write_text("file,class\na.png,mild\n")
    with pytest.raises(StageError, match=r"lacks column\(s\) \['image', 'label'\]"):
        ingest.run(make_cfg(tmp_path))


def test_exact_duplicate_keeps_the_copy_in_the_fixed_test_split(tmp_path):
    data = tmp_path / "data"
    rows = base_rows(data, split="train")
    (data / "images/copy.png").write_bytes((data / "images/mild_3.png").read_bytes())
    cfg = make_cfg(tmp_path)
    write_labels(data, rows + [["images/copy.png", "mild", "3", "x", "test"]])
    ingest.run(cfg)
    assert manifest(cfg)["images/copy.png"]["split"] == "test"
    assert quarantined(cfg)["images/mild_3.png"]["kind"] == "exact_duplicate"


@pytest.mark.parametrize("chunk", [2048, 7])  # one block, and many blocks (the per-chunk compression)
def test_near_duplicate_groups_equal_the_union_find_ids_ingest_wrote(monkeypatch, chunk):
    """Parity with the hand-written union-find of commit 95bc14d: same group ids on 300 hashes with
    planted chains (each link <= threshold bits, ends far apart), so manifests and DVC outputs do not change."""
    from legacy_oracles import union_find_group_ids

    from acneops.data import split
    from acneops.data.records import Item

    monkeypatch.setattr(split, "_CHUNK", chunk)
    rng = np.random.default_rng(0)
    hashes = [int(h) for h in rng.integers(0, 2**63, size=240, dtype=np.int64)]
    for length in (2, 3, 5, 8, 12):  # chains: each member flips 3 fresh bits of the previous one
        h, bits = hashes[int(rng.integers(len(hashes)))], rng.permutation(64)
        for step in range(length):
            h ^= sum(1 << int(b) for b in bits[3 * step % 60:3 * step % 60 + 3])
            hashes.append(h)
    names = [f"img_{int(i):04d}.png" for i in rng.permutation(len(hashes))]  # chain order != name order
    phashes = [f"{h:016x}" for h in hashes]
    shas = [f"{int(rng.integers(2**62)):016x}{i:048x}" for i in range(len(hashes))]
    items = [Item(row=i + 2, image=n, label="mild", lesions="", source="x", fixed_split="",
                  info={"phash": p, "sha256": s}) for i, (n, p, s) in enumerate(zip(names, phashes, shas))]
    groups = split.near_duplicate_groups(list(reversed(items)), threshold=4)
    want = union_find_group_ids(names, phashes, shas, threshold=4)
    assert {it.image: it.group for it in items} == want
    assert sorted(len(m) for m in groups.values())[-5:] == [3, 4, 6, 9, 13]  # chain + its random seed hash
    assert all(m == sorted(m, key=lambda it: it.image) for m in groups.values())


def test_near_duplicates_with_different_labels_are_reported_through_the_cli(tmp_path):
    """Label noise: a re-encoded copy of a moderate photo labelled severe is kept, grouped and shown to the user."""
    data = tmp_path / "data"
    rows = base_rows(data)
    Image.open(data / "images/moderate_3.png").convert("RGB").save(data / "images/relabelled.jpg", quality=80)
    write_labels(data, rows + [["images/relabelled.jpg", "severe", "", "x", ""]])
    cfg = make_cfg(tmp_path)
    params = {"ingest": {"data_dir": str(data), "out_dir": str(cfg.out_dir), "report_path": str(cfg.report_path),
                         "classes": list(CLASSES), "min_size": 16, "workers": 1}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.warns(UserWarning, match=r"1 near-duplicate group\(s\) with different labels"):
        res = CliRunner().invoke(app, ["run", "ingest", "--params", str(tmp_path / "params.yaml")])
    assert res.exit_code == 0, res.output
    assert "warning: 1 near-duplicate group(s) with different labels" in res.output
    assert "images/moderate_3.png (moderate), images/relabelled.jpg (severe)" in res.output
    m = manifest(cfg)
    group = m["images/moderate_3.png"]["group"]
    assert m["images/relabelled.jpg"]["group"] == group  # kept, grouped, in one split
    assert m["images/relabelled.jpg"]["split"] == m["images/moderate_3.png"]["split"]
    assert read_json(cfg.report_path)["groups_with_mixed_labels"] == [{
        "group": group, "labels": ["moderate", "severe"],
        "images": [{"image": name, "label": label, "split": m[name]["split"]}
                   for name, label in (("images/moderate_3.png", "moderate"), ("images/relabelled.jpg", "severe"))]}]
    clean = run_with_extra(tmp_path / "clean", [])  # and a clean set reports none
    assert read_json(clean.report_path)["groups_with_mixed_labels"] == []
