"""The regenerate flow on a repository that has run the pipeline (registered champions): wall time and CPU of one
regeneration as a user starts it, with the time of each Prefect task and the images per second exported.

    .venv/bin/python benchmarks/regenerate.py --repo /path/to/repo [--seed 7] [--repeat 1]

Runs `python flows/pipeline.py regenerate` in the repository (Prefect's temporary server included, as a user's
run has it), reads each task's span from the flow's log lines and the exported count from the new dataset's card.
Each run adds one folder to the repository's datasets/regenerated/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from gan_reference import machine  # benchmarks/: the machine line every benchmark prints

ROOT = Path(__file__).resolve().parents[1]
LOG_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) \| \w+ +\| (?:Task run '(.+?)-\w+'|Flow run '.+?') - (.*)$")


def one(repo: Path, seed: int | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_LOGGING_LEVEL"}
    args = [sys.executable, str(ROOT / "flows" / "pipeline.py"), "regenerate", "--params", "params.yaml"]
    if seed is not None:
        args += ["--seed", str(seed)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"regenerate failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    folder = Path(done.stdout.strip().splitlines()[-1].split("regenerated dataset: ", 1)[1])
    card = json.loads((folder / "card.json").read_text())
    stamps: list[tuple[str, datetime]] = []
    for line in (done.stdout + done.stderr).splitlines():
        m = LOG_LINE.match(line)
        if m:
            stamps.append((m.group(2) or "flow", datetime.strptime(m.group(1), "%H:%M:%S.%f")))
    tasks, previous = {}, None
    for name, at in stamps:  # a task's span: from the previous log line to its "Finished" line
        if name != "flow" and previous is not None:
            tasks[name] = (at - previous).total_seconds()
        previous = at
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"wall": wall, "cpu": cpu, "images": sum(card["counts"].values()), "tasks": tasks, "folder": folder.name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    for i in range(args.repeat):
        r = one(args.repo.resolve(), args.seed)
        print(f"run {i + 1}: {r['images']} images in {r['wall']:.1f} s wall ({r['images'] / r['wall']:.1f} img/s), "
              f"CPU {r['cpu']:.1f} s ({100 * r['cpu'] / r['wall']:.0f}%) -> {r['folder']}")
        for name, seconds in r["tasks"].items():
            print(f"  {name:<36} {seconds:6.1f} s")
    print(machine())


if __name__ == "__main__":
    main()
