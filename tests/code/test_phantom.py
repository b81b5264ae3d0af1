"""The built-in phantom dataset: determinism, counts, sizes, Hayashi lesion ranges, grade signal, CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from acneops.cli import app
from acneops.core.config import ConfigError
from acneops.core.errors import AcneopsError
from acneops.core.io import read_csv, sha256_file
from acneops.data import phantom
from acneops.report.grid import make_grid, save_grid
from acneops.stages.params import phantom_config

ROOT = Path(__file__).resolve().parents[2]
TINY = {"seed": 7, "n_per_class": 6, "hr_size": 32, "lr_size": 8, "lowres_fraction": 0.25, "supersample": 2}


def tiny(task: str = "acne", **over) -> phantom.PhantomConfig:
    return phantom_config({"phantom": {**TINY, **over}}, task=task)


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path):
    a = phantom.generate(tiny(), tmp_path / "a")
    phantom.generate(tiny(), tmp_path / "b")
    ha, hb = file_hashes(tmp_path / "a"), file_hashes(tmp_path / "b")
    assert len(ha) == 4 * 6 + 1  # every image + labels.csv
    assert ha == hb
    assert a.sha256 == {k: v for k, v in ha.items() if k.startswith("images/")}


def test_same_bytes_from_a_fresh_process_with_another_hash_seed(tmp_path):
    """Nothing may depend on process state (dict/set order, hash seed, warm caches)."""
    phantom.generate(tiny(), tmp_path / "a")
    code = (
        "import json, sys; from acneops.data import phantom; from acneops.stages.params import phantom_config; "
        "phantom.generate(phantom_config({'phantom': json.loads(sys.argv[2])}), sys.argv[1])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-c", code, str(tmp_path / "b"), json.dumps(TINY)]
    subprocess.run(args, check=True, cwd=ROOT, env=env, capture_output=True)
    assert file_hashes(tmp_path / "a") == file_hashes(tmp_path / "b")


def test_different_seed_gives_different_images(tmp_path):
    phantom.generate(tiny(), tmp_path / "a")
    phantom.generate(tiny(seed=8), tmp_path / "b")
    ha, hb = file_hashes(tmp_path / "a"), file_hashes(tmp_path / "b")
    images = [k for k in ha if k.startswith("images/")]
    assert all(ha[k] != hb[k] for k in images)


def test_counts_web_share_and_sizes(tmp_path):
    cfg = tiny()
    result = phantom.generate(cfg, tmp_path / "d")
    rows = read_csv(tmp_path / "d" / "labels.csv")
    assert cfg.n_lowres == 2  # 6 * 0.25 = 1.5, rounded half up
    for label in ("healthy", "mild", "moderate", "severe"):
        mine = [r for r in rows if r["label"] == label]
        assert len(mine) == 6
        assert sum(r["source"] == "phantom-web" for r in mine) == 2
        assert sum(r["source"] == "phantom-hr" for r in mine) == 4
    for r in rows:
        with Image.open(tmp_path / "d" / r["image"]) as im:
            side = 32 if r["source"] == "phantom-hr" else 8
            assert im.size == (side, side) and im.mode == "RGB" and im.format == "PNG"
    assert result.counts == {c: 6 for c in cfg.classes}
    assert "24 images" in result.summary()


def test_labels_schema_and_recorded_lesions_within_hayashi_ranges(tmp_path):
    phantom.generate(tiny(n_per_class=12, lowres_fraction=0.0), tmp_path / "d")
    text = (tmp_path / "d" / "labels.csv").read_text()
    assert text.splitlines()[0] == "image,label,lesions,source,split"
    ranges = {"healthy": (0, 0), "mild": (1, 5), "moderate": (6, 20), "severe": (21, 50)}
    seen = {k: set() for k in ranges}
    for r in read_csv(tmp_path / "d" / "labels.csv"):
        n = int(r["lesions"])
        lo, hi = ranges[r["label"]]
        assert lo <= n <= hi, r
        assert r["split"] == "" and r["image"] == f"images/{r['label']}_{r['image'][-8:-4]}.png"
        seen[r["label"]].add(n)
    assert len(seen["severe"]) > 3  # counts are drawn, not constant


def test_custom_lesion_ranges_are_used():
    cfg = tiny(lesion_ranges={"healthy": [0, 0], "mild": [2, 2], "moderate": [7, 7], "severe": [30, 30]})
    assert [phantom.render(cfg, "severe", i)[1] for i in range(3)] == [30, 30, 30]
    assert phantom.render(cfg, "mild", 0)[1] == 2


def _redness(image: Image.Image) -> float:
    """Share of strongly red pixels in the central half of the image (where the face is)."""
    a = np.asarray(image, dtype=np.float32) / 255
    n = a.shape[0]
    a = a[n // 4 : 3 * n // 4, n // 4 : 3 * n // 4]
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    return float(np.mean((r > 0.3) & (g < 0.5 * r) & (b < 0.5 * r)))


def test_lesion_redness_increases_with_grade():
    cfg = tiny(hr_size=64, supersample=1)
    means = [np.mean([_redness(phantom.render(cfg, c, i)[0]) for i in range(16)]) for c in cfg.classes]
    assert means[0] < means[1] < means[2] < means[3], means
    assert means[3] > 3 * means[1]


def test_mask_task_classes_and_no_lesions(tmp_path):
    phantom.generate(tiny("mask"), tmp_path / "m")
    rows = read_csv(tmp_path / "m" / "labels.csv")
    assert sorted({r["label"] for r in rows}) == ["mask", "no_mask"]
    assert all(r["lesions"] == "" for r in rows) and len(rows) == 12
    acne = phantom.render(tiny(), "healthy", 0)[0]
    assert np.asarray(phantom.render(tiny("mask"), "no_mask", 0)[0]).tobytes() != np.asarray(acne).tobytes()


def test_mask_covers_lower_face():
    """A masked face has fewer skin-coloured pixels around the mouth than an unmasked one, on average."""
    cfg = tiny("mask", hr_size=64, supersample=1)

    def lip_red(image):
        a = np.asarray(image, dtype=np.float32)[38:50, 22:42] / 255  # around the mouth
        return float(np.mean(a[..., 0] - a[..., 2]))  # skin and lips: red >> blue

    masked = np.mean([lip_red(phantom.render(cfg, "mask", i)[0]) for i in range(12)])
    bare = np.mean([lip_red(phantom.render(cfg, "no_mask", i)[0]) for i in range(12)])
    assert masked < bare - 0.05, (masked, bare)


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"hr_size": 32, "lr_size": 32}, "lr_size"),
        ({"lowres_fraction": 1.5}, "lowres_fraction"),
        ({"n_per_class": 0}, "n_per_class"),
        ({"lesion_ranges": {"mild": [1, 5]}}, "lesion_ranges"),
        ({"lesion_ranges": {"healthy": [0, 0], "mild": [5, 1], "moderate": [6, 20], "severe": [21, 50]}}, "mild"),
        ({"n_per_clas": 3}, "unknown key"),
        ({"task": "mask"}, "--task"),
    ],
)
def test_bad_params_are_config_errors(over, needle):
    with pytest.raises(ConfigError, match=needle):
        phantom_config({"phantom": {**TINY, **over}})


def test_unknown_task_is_rejected():
    with pytest.raises(ConfigError, match="task"):
        tiny("faces")


def test_refuses_foreign_folder_and_replaces_previous_output(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(AcneopsError, match="refusing to overwrite"):
        phantom.generate(tiny(), foreign)
    assert (foreign / "notes.txt").read_text() == "mine"

    out = tmp_path / "d"
    phantom.generate(tiny(), out)
    phantom.generate(tiny(n_per_class=2), out)  # a previous phantom output is replaced as a whole
    assert len(list((out / "images").iterdir())) == 8
    assert len(read_csv(out / "labels.csv")) == 8
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left over


def test_default_config_is_documented_default():
    cfg = phantom.PhantomConfig()
    assert (cfg.n_per_class, cfg.hr_size, cfg.lr_size, cfg.classes) == (150, 128, 32, phantom.TASK_CLASSES["acne"])
    assert dataclasses.replace(cfg, task="mask").classes == ("mask", "no_mask")


def test_save_grid_tiles_paths_and_arrays(tmp_path):
    phantom.generate(tiny(), tmp_path / "d")
    paths = sorted((tmp_path / "d" / "images").glob("*.png"))[:5]
    arrays = [np.zeros((16, 16, 3), np.uint8), np.ones((3, 8, 8), np.float32)]
    out = save_grid([*paths, *arrays], tmp_path / "grid.png", ncol=4, pad=2)
    with Image.open(out) as im:
        assert im.size == (4 * 32 + 5 * 2, 2 * 32 + 3 * 2)
        px = np.asarray(im)
    assert (px[2 + 32 + 2 : 2 + 64 + 2, 2 + 2 * 34 : 2 + 2 * 34 + 32] == 255).all()  # the float ones tile, upscaled
    with pytest.raises(ValueError, match="0, 1"):
        make_grid([np.full((4, 4), 2.0)], ncol=1)
    with pytest.raises(ValueError, match="no images"):
        make_grid([], ncol=2)


def _params_file(tmp_path: Path, **over) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"phantom": {**TINY, **over}}))
    return path


def test_cli_data_phantom(tmp_path):
    params = _params_file(tmp_path)
    result = CliRunner().invoke(app, ["data", "phantom", str(tmp_path / "m"), "--task", "mask", "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert "12 images" in result.output
    assert {r["label"] for r in read_csv(tmp_path / "m" / "labels.csv")} == {"mask", "no_mask"}


def test_cli_data_phantom_bad_params_exit_1_with_message(tmp_path):
    params = _params_file(tmp_path, lr_size=64)
    result = CliRunner().invoke(app, ["data", "phantom", str(tmp_path / "x"), "--params", str(params)])
    assert result.exit_code == 1
    assert "lr_size" in result.output
    assert not (tmp_path / "x").exists()
