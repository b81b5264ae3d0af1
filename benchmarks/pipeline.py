"""Wall time per stage of the default `dvc repro`, from a fresh clone (prints a table and the total).

    .venv/bin/python benchmarks/pipeline.py [--repo .] [--keep]

Clones the committed repository into a temporary folder, generates the phantom data (as `acneops repro`
does on a fresh clone), then runs every stage of dvc.yaml one at a time in `dvc repro --dry` order with
the run cache disabled, so every stage really computes. Uses this interpreter's environment (.venv).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def _run(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return time.perf_counter() - start


def stage_order(repo: Path) -> list[str]:
    """Stages in the order `dvc repro --dry` would run them."""
    out = subprocess.run(["dvc", "repro", "--dry", "--force"], cwd=repo, env=_env(), capture_output=True,
                         text=True, check=True)
    return re.findall(r"Running stage '([^']+)'", out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--keep", action="store_true", help="keep the temporary clone")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="acneops-bench-"))
    clone = work / "repo"
    subprocess.run(["git", "clone", "-q", str(args.repo), str(clone)], check=True)
    times = {"phantom data": _run(["acneops", "data", "phantom", "data"], clone)}
    for stage in stage_order(clone):
        times[stage] = _run(["dvc", "repro", "--single-item", "--no-run-cache", stage], clone)
        print(f"{stage:30s} {times[stage]:8.1f} s", flush=True)
    times["second dvc repro (no-op)"] = _run(["dvc", "repro"], clone)
    print(f"\n{'stage':30s} {'wall s':>8s}")
    for stage, seconds in times.items():
        print(f"{stage:30s} {seconds:8.1f}")
    total = sum(v for k, v in times.items() if not k.startswith("second"))
    print(f"{'total (fresh clone)':30s} {total:8.1f}  ({total / 60:.1f} min, {os.cpu_count()} CPU cores)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
