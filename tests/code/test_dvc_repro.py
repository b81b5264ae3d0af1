"""`dvc repro` of the data stages on a tiny phantom: outputs are reproducible byte for byte (two fresh
repositories record the same hashes in dvc.lock), a second `dvc repro` is a no-op, and the metrics files are
committed with dvc.lock (not git-ignored), so a fresh clone's `dvc metrics show` has the figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pipeline_repo import copy_pipeline, tiny_params


def _repo(tmp: Path) -> Path:
    """A fresh git+DVC repository with the project's dvc.yaml and a tiny variant of its params.yaml."""
    params = tiny_params()
    params["phantom"].update(hr_size=96)
    # a small sr net trained and measured: models/sr must not depend on where the repository is
    params["restore"].update(compare_restorers=True, sr_steps=10, sr_channels=8, sr_blocks=1)
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


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> list[Path]:
    """Two fresh repositories, each with the phantom added to DVC and `dvc repro restore` run once."""
    repos = []
    for name in ("a", "b"):
        repo = _repo(tmp_path_factory.mktemp("repro") / name)
        _run([sys.executable, "-m", "acneops", "data", "phantom", "data"], repo)
        _run([sys.executable, "-m", "dvc", "add", "-q", "data"], repo)
        first = _run([sys.executable, "-m", "dvc", "repro", "restore"], repo)
        assert "Running stage 'ingest'" in first and "Running stage 'restore'" in first
        repos.append(repo)
    return repos


def test_data_stages_reproduce_exactly_and_second_repro_is_a_noop(reproduced):
    hashes = [_lock_hashes(repo) for repo in reproduced]
    assert hashes[0] == hashes[1]
    assert {"ingest:datasets/ingest", "restore:datasets/restored", "restore:models/sr"} <= set(hashes[0])
    second = _run([sys.executable, "-m", "dvc", "repro", "restore"], reproduced[1])
    assert "Running stage" not in second and "up to date" in second


def test_metrics_are_committed_with_dvc_lock_and_shown_in_a_fresh_clone(reproduced, tmp_path):
    """As DVC's example projects do: `git add` after `dvc repro` stages dvc.lock and the cache: false metrics
    (the project's .gitignore no longer hides reports/), never the DVC-cached outs."""
    repo = reproduced[0]
    _run(["git", "add", "-A"], repo)
    staged = set(_run(["git", "diff", "--cached", "--name-only"], repo).split())
    assert {"dvc.lock", "reports/ingest.json", "reports/restore.json", "data.dvc", "params.yaml"} <= staged
    assert not [f for f in staged if f.startswith(("data/", "datasets/", "models/"))], staged
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "data stages"], repo)
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    shown = json.loads(_run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], clone))
    ingest = json.loads((repo / "reports" / "ingest.json").read_text())
    figures = next(iter(shown.values()))["data"]["reports/ingest.json"]["data"]
    assert figures["rows"] == ingest["rows"] == 48 and figures["usable"] == ingest["usable"]
