"""Helpers for the GAN behaviour tests: tiny restored folders, params files and stage subprocesses.

Not a conftest: imported by name from the test files in this folder (pytest puts it on sys.path).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]

# A tiny StyleGAN2 (32 px, G ~40 k parameters) that trains a step in well under a second on CPU.
TINY = {
    "family": "stylegan2",
    "resolution": 32,
    "z_dim": 32,
    "w_dim": 32,
    "mapping_layers": 2,
    "channel_base": 256,
    "channel_max": 32,
    "batch": 4,
    "lr_g": 0.0025,
    "lr_d": 0.0025,
    "r1_gamma": 0.1,
    "r1_interval": 4,
    "pl_weight": 2.0,  # path length and style mixing on (NVIDIA's values): the tests exercise those code paths
    "pl_interval": 2,
    "style_mixing": 0.9,
    "ema_kimg": 0.05,
    "ema_rampup": 0.05,
    "ada": True,
    "ada_interval": 2,
    "ada_kimg": 1.0,
    "augment_p": 0.3,
    "grid_seeds": 4,
    "workers": 1,
    "device": "cpu",
}


def make_restored(root: Path, resolution: int = 32, per_class: int = 12,
                  labels: tuple[str, ...] = ("healthy", "mild")) -> Path:
    """Phantom faces as a restored train split: root/datasets/restored/train/{images/*.png, manifest.csv}."""
    from acneops.core.io import save_png
    from acneops.data import phantom

    cfg = phantom.PhantomConfig(hr_size=max(resolution, 32), lr_size=16, n_per_class=per_class)
    split = root / "datasets" / "restored" / "train"
    rows = []
    for label in labels:
        for i in range(per_class):
            image, _ = phantom.render(cfg, label, i)
            if image.size != (resolution, resolution):
                image = image.resize((resolution, resolution))
            name = f"images/{label}_{i:03d}.png"
            save_png(split / name, image)
            rows.append({"file": name, "label": label, "split": "train"})
    with open(split / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return root / "datasets" / "restored"


def write_params(root: Path, run: str, **overrides) -> Path:
    """params.yaml with a train_gan section whose only run is ``run`` (labels [healthy] by default)."""
    section = {**TINY, **overrides.pop("common", {})}
    section["runs"] = {run: {"labels": ["healthy"], **overrides}}
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump({"train_gan": section}))
    return path


def stage_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    env.pop("ACNEOPS_PARENT_RUN_ID", None)
    return env


def stage_cmd(run: str, launcher: list[str] | None = None) -> list[str]:
    return [sys.executable, *(launcher or []), "-m", "acneops", "run", "train_gan", "--name", run,
            "--params", "params.yaml"]


def run_stage(root: Path, run: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m acneops run train_gan --name run` in ``root``; fails the test with its output if it fails."""
    done = subprocess.run(stage_cmd(run), cwd=root, env=stage_env(root), capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"train_gan failed:\n{done.stdout}\n{done.stderr}"
    return done


def read_jsonl_lines(path: Path) -> int:
    """Number of complete lines in a JSONL file (0 when absent)."""
    try:
        return path.read_text().count("\n")
    except FileNotFoundError:
        return 0


def assert_same(a, b, where: str = "ckpt") -> None:
    """Recursive equality of checkpoints and their parts; tensors bitwise (same dtype, torch.equal)."""
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {sorted(set(a) ^ set(b))}"
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
