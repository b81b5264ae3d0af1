"""Core helpers: config builder errors, atomic writes, metadata-free PNG, the test-split guard, lazy CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from acneops.core import io
from acneops.core.config import ConfigError, build, load_params, require
from acneops.data import access as data_access


@dataclasses.dataclass(frozen=True)
class _Cfg:
    size: int = 64  # px
    rate: float = 0.5  # share
    name: str = "x"
    labels: tuple[str, ...] = ("a", "b")
    path: Path = Path("data")
    flag: bool = False

    def __post_init__(self) -> None:
        require(self.size > 0, f"size must be > 0, got {self.size}")


def test_build_converts_types_and_rejects_unknown_keys():
    cfg = build(_Cfg, {"size": 32, "rate": 1, "labels": ["m", "n"], "path": "x/y", "flag": True}, "s")
    assert cfg == _Cfg(size=32, rate=1.0, labels=("m", "n"), path=Path("x/y"), flag=True)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['sise'\]"):
        build(_Cfg, {"sise": 3}, "s")
    with pytest.raises(ConfigError, match=r"\[s.size\]: expected an integer"):
        build(_Cfg, {"size": 2.5}, "s")
    with pytest.raises(ConfigError, match="size must be > 0"):
        build(_Cfg, {"size": 0}, "s")
    with pytest.raises(ConfigError, match="expected true/false"):
        build(_Cfg, {"flag": "yes"}, "s")


def test_load_params_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_atomic_path_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "out.json"
    io.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_save_png_strips_all_metadata(tmp_path):
    img = Image.new("RGB", (8, 8), (200, 10, 10))
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"  # Make
    src = tmp_path / "src.jpg"
    img.save(src, exif=exif.tobytes())
    loaded = Image.open(src)
    assert loaded.getexif()
    digest = io.save_png(tmp_path / "clean.png", loaded)
    out = Image.open(tmp_path / "clean.png")
    assert not out.getexif() and "exif" not in out.info and "icc_profile" not in out.info
    assert digest == io.sha256_file(tmp_path / "clean.png")


def _restored(tmp_path: Path) -> Path:
    for split in data_access.SPLITS:
        io.write_csv(
            tmp_path / split / data_access.MANIFEST,
            [{"file": f"images/{split}0.png", "label": "mild", "lesions": "3", "source": "t"}],
            ["file", "label", "lesions", "source"],
        )
    return tmp_path


@pytest.mark.parametrize("role", ["gan", "sorter", "sort", "synthesize", "classifier"])
def test_test_split_is_refused_to_every_non_evaluate_role(tmp_path, role):
    root = _restored(tmp_path)
    with pytest.raises(data_access.SplitAccessError, match="frozen"):
        data_access.load_split(root, "test", role=role)


def test_access_log_records_granted_reads(tmp_path, monkeypatch):
    root = _restored(tmp_path / "r")
    log = tmp_path / "access.jsonl"
    monkeypatch.setenv(data_access.ACCESS_LOG_ENV, str(log))
    samples = data_access.load_split(root, "train", role="gan", labels=("mild",))
    assert samples[0].lesions == 3 and samples[0].path == root / "train" / "images/train0.png"
    assert data_access.load_split(root, "test", role="evaluate")
    assert [r["split"] for r in io.read_jsonl(log)] == ["train", "test"]


def test_cli_start_imports_no_heavy_library():
    code = (
        "import sys\nfrom acneops.cli import app\n"
        "for argv in (['--help'], ['run', '--help'], ['data', '--help']):\n"
        "    try:\n        app(argv)\n    except SystemExit:\n        pass\n"
        "heavy = [m for m in ('torch', 'mlflow', 'prefect', 'dvc', 'scipy', 'sklearn') if m in sys.modules]\n"
        "print('HEAVY:' + ','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Usage" in out.stdout and out.stdout.strip().endswith("HEAVY:"), out.stdout[-500:]


def test_cli_unknown_stage_is_a_clear_error(tmp_path):
    (tmp_path / "params.yaml").write_text("{}\n")
    out = subprocess.run(
        [sys.executable, "-m", "acneops", "run", "no_such_stage"], cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 1 and "unknown stage 'no_such_stage'" in out.stderr


def test_one_flattener_feeds_mlflow_params_and_metrics():
    """core.config.flatten is the one nested-dict flattener: MLflow params (strings) and metrics (numbers) use it."""
    from acneops.core.config import flatten, numeric_leaves
    from acneops.tracking import MAX_PARAM_CHARS, param_strings

    tree = {"a": {"b": 1, "c": {"d": 0.5}}, "e": True, "f": "x", "g": [1, 2], "h": None, "i": {}}
    assert flatten(tree) == {"a.b": 1, "a.c.d": 0.5, "e": True, "f": "x", "g": [1, 2], "h": None}
    assert numeric_leaves(tree) == {"a.b": 1.0, "a.c.d": 0.5}  # bools, strings, lists and None dropped
    assert param_strings({**tree, "long": "y" * (MAX_PARAM_CHARS + 5)}) == {
        "a.b": "1", "a.c.d": "0.5", "e": "True", "f": "x", "g": "[1, 2]", "h": "None", "long": "y" * MAX_PARAM_CHARS}
