"""Benchmark: ingest + restore throughput on large JPEGs (ACNE04 photos are 3112x3456).

Creates N synthetic WxW JPEGs (random smooth images, quality 90) in a temporary folder, then runs
the real ``ingest`` stage (full decode, sha256, pHash, dedup, split) and ``restore`` (draft-mode
decode, centre crop, antialiased shrink to the GAN resolution, metadata-free PNG) with every core,
and prints images/s for each stage and in total. A benchmark, not a test:

    .venv/bin/python benchmarks/ingest.py            # 200 images, 3000 px, resolution 64
    .venv/bin/python benchmarks/ingest.py --n 20     # quicker look
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from acneops.data import ingest as ingest_lib
from acneops.data import restore as restore_lib
from acneops.data.decode import cpu_workers
from acneops.stages import ingest, restore

CLASSES = ("healthy", "mild", "moderate", "severe")


def _make_one(task: tuple[str, int, int]) -> None:
    path, size, seed = task
    rng = np.random.default_rng(seed)
    grid = (rng.random((24, 24, 3)) * 255).astype(np.uint8)
    Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC).save(path, quality=90)


def make_dataset(root: Path, n: int, size: int, workers: int) -> Path:
    """Raw layout with ``n`` synthetic ``size`` x ``size`` JPEGs spread over the four classes."""
    data = root / "data"
    (data / "images").mkdir(parents=True)
    names = [f"images/img_{i:04d}.jpg" for i in range(n)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_make_one, [(str(data / name), size, i) for i, name in enumerate(names)]))
    with open(data / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "label", "lesions", "source", "split"])
        writer.writerows([name, CLASSES[i % len(CLASSES)], "", "benchmark", ""] for i, name in enumerate(names))
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="number of images")
    parser.add_argument("--size", type=int, default=3000, help="px, side of each JPEG")
    parser.add_argument("--resolution", type=int, default=64, help="px, restore resolution")
    parser.add_argument("--workers", type=int, default=0, help="processes (0 = all cores)")
    args = parser.parse_args()
    workers = cpu_workers(args.workers)
    with tempfile.TemporaryDirectory(prefix="acneops-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        data = make_dataset(root, args.n, args.size, workers)
        mb = sum(p.stat().st_size for p in (data / "images").iterdir()) / 1e6
        print(f"created {args.n} {args.size}x{args.size} JPEGs ({mb:.0f} MB) in {time.perf_counter() - t0:.1f} s")
        icfg = ingest_lib.IngestConfig(data_dir=data, out_dir=root / "ingest", report_path=root / "ingest.json",
                                   classes=CLASSES, max_pixels=args.size * args.size + 1, workers=args.workers)
        rcfg = restore_lib.RestoreConfig(ingest_dir=root / "ingest", data_dir=data, out_dir=root / "restored",
                                     report_path=root / "restore.json", sr_dir=root / "sr",
                                     resolution=args.resolution, restorer="lanczos", compare_restorers=False,
                                     sr_patch=min(32, args.resolution), workers=args.workers)
        t1 = time.perf_counter()
        ingest.run(icfg)
        t2 = time.perf_counter()
        restore.run(rcfg)
        t3 = time.perf_counter()
    n = args.n
    print(f"machine: {os.cpu_count()} cores, workers={workers}")
    print(f"ingest : {n / (t2 - t1):7.2f} images/s ({t2 - t1:.1f} s)")
    print(f"restore: {n / (t3 - t2):7.2f} images/s ({t3 - t2:.1f} s)")
    print(f"total  : {n / (t3 - t1):7.2f} images/s ({t3 - t1:.1f} s)")


if __name__ == "__main__":
    main()
