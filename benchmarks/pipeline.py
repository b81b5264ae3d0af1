"""The default pipeline from a fresh clone, as README's first command runs it: wall time and CPU use per stage.

    .venv/bin/python benchmarks/pipeline.py [--repo .] [--jobs 0] [--keep]

Clones the committed repository into a temporary folder and runs `acneops repro --jobs N` there (N = 0: one per
CPU core; 1: plain sequential `dvc repro`) with the run cache off (`-- --no-run-cache`), so every stage really
computes: the command generates the phantom data, then runs every stage, independent stages side by side while
their threads fit in the cores (acneops.pipeline.repro). Uses this interpreter's environment (.venv).

Prints, per stage: its threads, start and end (s after the command started), wall time, CPU time of its process
tree and CPU utilisation (100% = one core busy); then the whole command's wall time and CPU utilisation, the same
over the span of the GAN and classifier stages (first start to last end), the machine (CPU model, cores) and the
load average before and after; then the time of a second `acneops repro`, which finds everything up to date.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gan_reference import machine  # benchmarks/: the machine line every benchmark prints

from acneops.pipeline.repro import dvc_env


def _env() -> dict[str, str]:
    """acneops repro's own environment for DVC (this .venv first on PATH), not nested under a caller's run."""
    env = dvc_env()[1]
    env.pop("ACNEOPS_PARENT_RUN_ID", None)
    return env


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_repro(clone: Path, jobs: int, log: Path) -> tuple[float, float, dict[str, list[float]], list[str]]:
    """Run `acneops repro` in ``clone``; (wall s, CPU s, {stage: [start s, end s]}, the table lines it printed).
    Each output line is stamped as it arrives, so start and end come from the scheduler's started/finished lines."""
    cmd = [sys.executable, "-m", "acneops", "repro", "--jobs", str(jobs), "--", "--no-run-cache"]
    cpu0, began = _children_cpu(), time.monotonic()
    spans: dict[str, list[float]] = {}
    table: list[str] = []
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=clone, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        in_table = False
        for line in proc.stdout:
            now = time.monotonic() - began
            out.write(line)
            if m := re.match(r"(started|finished|FAILED.*?)\s+(\S+)\s", line):
                spans.setdefault(m.group(2), [now, now])[1 if m.group(1) != "started" else 0] = now
            in_table = in_table or line.startswith("stage ") and "threads" in line
            if in_table and line.strip():
                table.append(line.rstrip("\n"))
            in_table = in_table and not line.startswith("all ")
        code = proc.wait()
    wall, cpu = time.monotonic() - began, _children_cpu() - cpu0
    if code != 0:
        sys.exit(f"{' '.join(cmd)} failed with status {code}; output in {log}")
    return wall, cpu, spans, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--jobs", type=int, default=0, help="acneops repro --jobs (0 = one per core)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary clone")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="acneops-bench-"))
    clone = work / "repo"
    subprocess.run(["git", "clone", "-q", str(args.repo), str(clone)], check=True)
    load_before = os.getloadavg()
    wall, cpu, spans, table = run_repro(clone, args.jobs, work / "repro.log")
    load_after = os.getloadavg()
    print("\n".join(table))
    print(f"\n{'stage':32s} {'start s':>8s} {'end s':>8s}")
    for stage, (start, end) in sorted(spans.items(), key=lambda kv: kv[1][0]):
        print(f"{stage:32s} {start:8.1f} {end:8.1f}")
    cpu_by_stage = {line.split()[0]: float(line.split()[3]) for line in table[1:-1]}
    heavy = [s for s in spans if s.startswith(("train_gan@", "train_classifier@"))]
    if heavy:
        first, last = min(spans[s][0] for s in heavy), max(spans[s][1] for s in heavy)
        # every stage's CPU inside that span: the heavy ones and whatever else ran beside them
        inside = [s for s in spans if spans[s][0] >= first and spans[s][1] <= last]
        busy = sum(cpu_by_stage.get(s, 0.0) for s in inside)
        print(f"\nGAN and classifier stages: {last - first:.0f} s from the first start to the last end, "
              f"CPU {100 * busy / (last - first):.0f}% ({len(heavy)} stages)")
    print(f"acneops repro --jobs {args.jobs} (fresh clone, phantom data included): {wall:.1f} s = {wall / 60:.1f} min, "
          f"CPU {100 * cpu / wall:.0f}%")
    print(f"machine: {machine()}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} "
          "after (1 min)")
    began = time.monotonic()
    again = subprocess.run([sys.executable, "-m", "acneops", "repro", "--jobs", str(args.jobs)], cwd=clone,
                           env=_env(), capture_output=True, text=True)
    print(f"second acneops repro: {time.monotonic() - began:.1f} s, exit {again.returncode}, "
          f"{'nothing to run' if 'up to date' in again.stdout else 'RAN STAGES'}")
    if args.keep:
        print(f"clone kept in {clone}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
