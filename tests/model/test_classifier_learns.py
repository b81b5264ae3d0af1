"""Behaviour of train_classifier: it learns hue classes hidden under random brightness, textures and
noise to high validation accuracy, and a run killed mid-training resumes to the same weights as an
uninterrupted one."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from acneops.stages import train_classifier
from acneops.stages.train_classifier import config_from_params

REPO = Path(__file__).resolve().parents[2]
LABELS = ("red", "green", "blue", "yellow")
HUES = {"red": (1.0, 0.25, 0.25), "green": (0.25, 1.0, 0.25), "blue": (0.25, 0.25, 1.0), "yellow": (1.0, 1.0, 0.25)}


def tinted(label: str, rng: np.random.Generator, size: int = 40) -> np.ndarray:
    """(size, size, 3) uint8: the class hue at a random brightness, over a random stripe/check/noise
    texture shared by all classes (a distractor), plus pixel noise."""
    period = int(rng.integers(2, 5))
    yy, xx = np.mgrid[0:size, 0:size] // period
    pattern = [yy % 2, xx % 2, (yy + xx) % 2, rng.integers(0, 2, (size, size))][int(rng.integers(0, 4))]
    shade = rng.uniform(0.45, 1.0) * (0.7 + 0.3 * pattern)  # (size, size) brightness field
    image = 255 * shade[..., None] * np.array(HUES[label]) + rng.normal(0, 20, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_split(folder: Path, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for label in LABELS:
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(tinted(label, rng)).save(folder / label / f"{i:03d}.png")
            rows.append({"file": f"{label}/{i:03d}.png", "label": label})
    with open(folder / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "label"])
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture()
def restored(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("ACNEOPS_PARENT_RUN_ID", raising=False)
    make_split(tmp_path / "restored" / "train", 16, seed=1)
    make_split(tmp_path / "restored" / "val", 8, seed=2)
    return tmp_path / "restored"


def params(restored: Path, out_root: Path, **overrides) -> dict:
    section = {"arch": "resnet18", "img_size": 32, "labels": list(LABELS), "restored_dir": str(restored),
               "out_dir": str(out_root / "{name}"), "epochs": 5, "batch": 16, "lr": 1e-3, "seed": 0,
               "threads": 1, "rotation_deg": 10, "runs": {"real": {}}}
    section.update(overrides)
    return {"train_classifier": section}


def test_resnet18_learns_separable_classes_to_high_val_accuracy(restored, tmp_path):
    result = train_classifier.run(config_from_params(params(restored, tmp_path), "real"))
    history = [json.loads(x) for x in (tmp_path / "real" / "history.jsonl").read_text().splitlines()]
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert result.val["accuracy"] >= 0.9, history
    assert result.val["macro"]["f1"] >= 0.9


@pytest.mark.slow
def test_killed_run_resumes_to_uninterrupted_weights(restored, tmp_path):
    """SIGKILL after the first epoch's checkpoint; the restarted run ends with identical weights."""
    full = config_from_params(params(restored, tmp_path / "full", epochs=3, keep_last=True), "real")
    train_classifier.run(full)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params(restored, tmp_path / "killed", epochs=3, keep_last=True)))
    cmd = [sys.executable, "-m", "acneops", "run", "train_classifier", "--name", "real", "--params", str(path)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = tmp_path / "killed" / "real" / "last.pt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists(), proc.stderr.read().decode()[-2000:]
    assert torch.load(last, weights_only=True)["epoch"] < 3
    subprocess.run(cmd, env=env, cwd=tmp_path, check=True, capture_output=True)
    a = torch.load(tmp_path / "full" / "real" / "last.pt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert b["epoch"] == 3 and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    epochs = [json.loads(x)["epoch"] for x in (tmp_path / "killed" / "real" / "history.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
