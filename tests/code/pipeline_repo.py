"""Throwaway copies of the project's pipeline definition, and what DVC says about a pipeline (helpers for tests)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def copy_pipeline(dest: Path, params: dict | None = None, with_code: bool = False) -> Path:
    """A fresh git repository in ``dest`` with dvc.yaml, .dvcignore, the DVC config and params.yaml (or
    ``params``); ``with_code`` also copies the acneops package (the stages' dependencies)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / ".dvc", dest / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"))
    if with_code:
        shutil.copytree(ROOT / "acneops", dest / "acneops", ignore=shutil.ignore_patterns("__pycache__"))
    if params is None:
        shutil.copy(ROOT / "params.yaml", dest / "params.yaml")
    else:
        (dest / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def _dvc(args: list[str], repo: Path) -> str:
    out = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def stage_names(repo: Path = ROOT) -> list[str]:
    """`dvc stage list --all`: every stage with foreach expanded (names like train_gan@all; data.dvc too)."""
    return _dvc(["stage", "list", "--all", "--name-only"], repo).split()


def dag_edges(repo: Path = ROOT) -> set[tuple[str, str]]:
    """`dvc dag` as (upstream stage, downstream stage) pairs."""
    lines = [line.strip().rstrip(";") for line in _dvc(["dag", "--dot"], repo).splitlines() if "->" in line]
    return {tuple(part.strip().strip('"') for part in line.split("->")) for line in lines}
