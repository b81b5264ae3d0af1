"""Lineage tags for every tracked stage run: where its code, data and inputs came from.

So the MLflow UI can compare runs across reproductions, each stage run is tagged with the git commit
(``-dirty`` when the work tree has uncommitted changes), the md5 that ``data.dvc`` records for the raw
data, a hash of the stage's resolved config, and the sha256 of every input the config names: a
checkpoint file (the parent checkpoint of a fine-tune, a classifier) or a dataset folder (by its
``manifest.csv``, which lists every file's hash).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from acneops.core.io import sha256_file

INPUT_SUFFIXES = (".pt", ".pth", ".safetensors", ".csv")  # files whose hash identifies an input


def git_commit(root: Path) -> str:
    """HEAD's commit, with ``-dirty`` if tracked files changed; '' outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return ""


def data_md5(root: Path) -> str:
    """The md5 that ``data.dvc`` records for ``data/`` ('' when there is no data.dvc)."""
    import yaml

    path = root / "data.dvc"
    if not path.is_file():
        return ""
    outs = (yaml.safe_load(path.read_text()) or {}).get("outs") or [{}]
    return str(outs[0].get("md5", ""))


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _input_paths(config: dict[str, Any], prefix: str = "") -> dict[str, Path]:
    """Config values that name an existing input file (checkpoint, manifest) or dataset folder."""
    found: dict[str, Path] = {}
    for key, value in config.items():
        where = f"{prefix}{key}"
        if isinstance(value, dict):
            found.update(_input_paths(value, f"{where}."))
        elif isinstance(value, str) and value and not key.endswith(("out_dir", "report_path", "metrics_path")):
            path = Path(value)
            if path.is_file() and path.suffix in INPUT_SUFFIXES:
                found[where] = path
            elif path.is_dir() and (path / "manifest.csv").is_file():
                found[where] = path / "manifest.csv"
    return found


def lineage_tags(root: Path, stage: str, name: str | None, config: dict[str, Any]) -> dict[str, str]:
    """Tags for one stage run: git commit, data.dvc md5, config hash, sha256 of every named input."""
    tags = {
        "acneops.git_commit": git_commit(root),
        "acneops.data_md5": data_md5(root),
        "acneops.config_hash": config_hash(config),
        "acneops.dvc_stage": f"{stage}@{name}" if name else stage,
    }
    for key, path in _input_paths(config).items():
        tags[f"acneops.input.{key}"] = sha256_file(path)
    return tags
