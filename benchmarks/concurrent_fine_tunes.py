"""The four per-class GAN fine-tunes one after another (2 threads each) vs two at a time (1 thread each).

    .venv/bin/python benchmarks/concurrent_fine_tunes.py [--kimg 1.0] [--per-class 40] [--threads 2]

`acneops repro --jobs 2` runs the fine-tunes train_gan@{healthy,mild,moderate,severe} side by side, each with the
one thread params.yaml gives it (`workers: 1`); a plain `dvc repro` runs them one at a time. This times, with the
default network (params.yaml's train_gan section) and ``--kimg`` per fine-tune, each fine-tune being the command
DVC runs (`acneops run train_gan --name <class>`) on phantom faces at 32 px in a temporary folder:
0. one fine-tune alone with 1 thread (its sec/kimg against the 2-thread figure of way 1);
1. the four one after another, ``--threads`` threads each;
2. the four two at a time (the scheduler of `acneops repro`), 1 thread each.
It prints per run the wall time and sec/kimg (timing.jsonl, the first tick left out as warm-up), each way's total
wall time, the trainings' CPU utilisation (their CPU time / wall time; 200% = both cores busy) and the load
average before and after each way: the machine may be shared, so read the figures with the load.
The fine-tunes start from fresh weights instead of G_all's: a step costs the same.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from acneops.core.io import save_png
from acneops.data import phantom
from acneops.pipeline.schedule import run_graph

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("healthy", "mild", "moderate", "severe")


def make_restored(root: Path, per_class: int) -> None:
    """Phantom faces as a restored train split at 32 px (what train_gan reads)."""
    cfg = phantom.PhantomConfig(hr_size=64, lr_size=16, n_per_class=per_class)
    split = root / "datasets" / "restored" / "train"
    rows = []
    for label in CLASSES:
        for i in range(per_class):
            image, _ = phantom.render(cfg, label, i)
            name = f"images/{label}_{i:03d}.png"
            save_png(split / name, image.resize((32, 32)))
            rows.append({"file": name, "label": label, "split": "train"})
    with open(split / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)


def write_params(folder: Path, kimg: float, threads: int) -> None:
    section = yaml.safe_load((ROOT / "params.yaml").read_text())["train_gan"]
    section.update(snapshot_kimg=kimg, tick_kimg=kimg / 4, total_kimg=kimg, grid_seeds=4)
    section["runs"] = {c: {"labels": [c], "workers": threads} for c in CLASSES}
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump({"train_gan": section}))
    os.symlink(folder.parent / "datasets", folder / "datasets")


def tracking_store(work: Path) -> str:
    """One MLflow store for every run, created before any training starts: two processes creating a fresh
    sqlite store at once race in its schema migration (`acneops repro` opens its parent run first, for the same
    reason)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{work / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()
    return uri


def start(folder: Path, run: str) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder.parent / 'mlflow.db'}", "TQDM_DISABLE": "1"}
    env.pop("ACNEOPS_PARENT_RUN_ID", None)
    return subprocess.Popen([sys.executable, "-m", "acneops", "run", "train_gan", "--name", run], cwd=folder,
                            env=env, stdout=subprocess.DEVNULL)


def sec_per_kimg(folder: Path, run: str) -> float:
    """Mean sec/kimg of the run's ticks, the first (warm-up) left out when there are others."""
    ticks = [json.loads(line) for line in (folder / "models/gan" / run / "timing.jsonl").read_text().splitlines()]
    timed = ticks[1:] or ticks
    return sum(t["sec_per_kimg"] for t in timed) / len(timed)


def timed(folder: Path, runs: tuple[str, ...], jobs: int) -> dict:
    """Run the fine-tunes ``runs`` in ``folder``, ``jobs`` at a time; wall time, CPU use and per-run figures."""
    load_before, cpu_before, began = os.getloadavg()[0], os.times(), time.monotonic()
    out = run_graph({c: set() for c in runs}, lambda run: start(folder, run), jobs)
    wall, cpu_after = time.monotonic() - began, os.times()
    if not out.ok:
        sys.exit(f"fine-tunes failed in {folder}: {out.failed}")
    cpu = sum(getattr(cpu_after, k) - getattr(cpu_before, k) for k in ("children_user", "children_system"))
    return {"wall": wall, "cpu_pct": 100 * cpu / wall, "load": (load_before, os.getloadavg()[0]),
            "runs": {c: (out.seconds[c], sec_per_kimg(folder, c)) for c in runs}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kimg", type=float, default=1.0, help="training length of each fine-tune, kimg")
    ap.add_argument("--per-class", type=int, default=40, help="phantom training images per class")
    ap.add_argument("--threads", type=int, default=2, help="threads of each fine-tune run one after another")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="acneops-finetunes-"))
    make_restored(work, args.per_class)
    tracking_store(work)
    ways = {"one alone, 1 thread": (1, CLASSES[:1], 1),
            f"one after another, {args.threads} threads each": (args.threads, CLASSES, 1),
            "two at a time, 1 thread each": (1, CLASSES, 2)}
    results = {}
    for i, (name, (threads, runs, jobs)) in enumerate(ways.items()):
        write_params(work / f"way{i}", args.kimg, threads)
        results[name] = timed(work / f"way{i}", runs, jobs)
    print(f"\n{os.cpu_count()} CPU cores; {args.kimg} kimg per fine-tune; work folder {work}")
    for name, res in results.items():
        runs = "  ".join(f"{c} {s:.0f} s ({k:.1f} s/kimg)" for c, (s, k) in res["runs"].items())
        print(f"{name:36s} total {res['wall']:6.1f} s  CPU {res['cpu_pct']:4.0f}%  load {res['load'][0]:.1f}"
              f"->{res['load'][1]:.1f}\n    {runs}")
    seq, par = (r["wall"] for r in list(results.values())[1:])
    print(f"two at a time / one after another: {par / seq:.2f} of the wall time ({seq / par:.2f}x faster)")


if __name__ == "__main__":
    main()
