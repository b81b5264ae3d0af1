"""Seconds per training epoch of `train_classifier` at the CPU default (resnet18, 64 px, batch 16).

Builds a throw-away restored fixture of the default phantom's size (420 train, 60 val images at 64
px) in a temp dir, runs the real stage for a few epochs with a temp MLflow store and prints the
per-epoch wall time from history.jsonl (the first epoch includes warm-up and is shown apart).

    python benchmarks/train_classifier_epoch.py [--train 420] [--val 60] [--epochs 3] [--threads 0]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

LABELS = ("healthy", "mild", "moderate", "severe")


def write_split(folder: Path, n: int, size: int, rng: np.random.Generator) -> None:
    rows = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        (folder / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / label / f"{i:04d}.png")
        rows.append({"file": f"{label}/{i:04d}.png", "label": label})
    with open(folder / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "label"])
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=420, help="train images")
    parser.add_argument("--val", type=int, default=60, help="val images")
    parser.add_argument("--size", type=int, default=64, help="px, image and network input side")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--arch", default="resnet18")
    args = parser.parse_args()

    from acneops.stages import train_classifier

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        rng = np.random.default_rng(0)
        write_split(root / "restored" / "train", args.train, args.size, rng)
        write_split(root / "restored" / "val", args.val, args.size, rng)
        params = {"train_classifier": {
            "arch": args.arch, "img_size": args.size, "restored_dir": str(root / "restored"),
            "out_dir": str(root / "{name}"), "epochs": args.epochs, "threads": args.threads, "runs": {"real": {}},
        }}
        start = time.perf_counter()
        train_classifier.run(train_classifier.config_from_params(params, "real"))
        total = time.perf_counter() - start
        history = [json.loads(x) for x in (root / "real" / "history.jsonl").read_text().splitlines()]
    steady = [h["seconds"] for h in history[1:]] or [history[0]["seconds"]]
    print(f"arch={args.arch} size={args.size}px train={args.train} val={args.val} threads={args.threads or 'default'} "
          f"load={os.getloadavg()[0]:.1f}")
    print(f"first epoch {history[0]['seconds']:.2f} s; steady {np.mean(steady):.2f} s/epoch "
          f"({np.mean(steady) / args.train * 1000:.1f} ms/train image incl. validation); whole run {total:.1f} s")


if __name__ == "__main__":
    main()
