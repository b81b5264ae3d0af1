"""`dvc repro` of the data stages on a tiny phantom: outputs are reproducible byte for byte (two fresh
repositories record the same hashes in dvc.lock) and a second `dvc repro` is a no-op."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from pipeline_repo import copy_pipeline

ROOT = Path(__file__).resolve().parents[2]


def _repo(tmp: Path) -> Path:
    """A fresh git+DVC repository with the project's dvc.yaml and a tiny variant of its params.yaml."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["phantom"].update(n_per_class=12, hr_size=96)
    params["restore"].update(restorer="lanczos", compare_restorers=False, workers=1)
    params["ingest"].update(workers=1)
    return copy_pipeline(tmp, params, with_code=True)


def _run(args: list[str], cwd: Path) -> str:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def _lock_hashes(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {f"{stage}:{o['path']}": o["md5"] for stage, spec in lock.items() for o in spec.get("outs", [])}


def test_data_stages_reproduce_exactly_and_second_repro_is_a_noop(tmp_path):
    hashes = []
    for name in ("a", "b"):
        repo = _repo(tmp_path / name)
        _run([sys.executable, "-m", "acneops", "data", "phantom", "data"], repo)
        _run([sys.executable, "-m", "dvc", "add", "-q", "data"], repo)
        first = _run([sys.executable, "-m", "dvc", "repro", "restore"], repo)
        assert "Running stage 'ingest'" in first and "Running stage 'restore'" in first
        hashes.append(_lock_hashes(repo))
    assert hashes[0] == hashes[1]
    assert {"ingest:datasets/ingest", "restore:datasets/restored", "restore:models/sr"} <= set(hashes[0])
    second = _run([sys.executable, "-m", "dvc", "repro", "restore"], repo)
    assert "Running stage" not in second and "up to date" in second
