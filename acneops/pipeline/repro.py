"""`acneops repro`: reproduce the DVC pipeline inside one parent MLflow run, running independent stages side by side.

With ``jobs`` > 1 this is a small scheduler over DVC's own stage graph: every stage whose upstream stages are done
runs as ``dvc --wait-for-lock repro --single-item <stage>`` in its own process, while the CPU threads of the
running stages (each stage's count from params.yaml: :func:`acneops.pipeline.threads.stage_threads`) fit in ``jobs``
cores. The threads never outnumber the cores: measured on a calm 2-core machine, a StyleGAN2 step at the default
setting takes 10.7 s/kimg with 2 spinning OpenMP threads, 16.8 with 1, and 23.2 with 2 sleeping (``PASSIVE``)
threads; the sleeping waiters that keep oversubscribed threads tolerable cost more than a core adds. So no wait
policy is set here, and two one-thread fine-tunes run side by side while a two-thread G_all runs alone. Each
stage is therefore exactly what `dvc repro` runs (same command, same dvc.lock entry, same run cache), and DVC's
locks keep the processes apart: a stage's command runs with the repository unlocked, each process takes the
repository lock only to check its stage and to write its dvc.lock entry (read and rewritten under that lock, so no
entry is lost), and DVC's per-path read/write locks guard the deps and outs. Only the stages `dvc status` reports
out of date, and the stages downstream of them, are started, so a second `acneops repro` starts nothing.

A stage's output goes to ``.dvc/tmp/repro/<stage>.log`` while it runs and is printed as one block when it ends.
The first failure stops new starts; the stages already running finish; the exit status is non-zero and the
failed stage and its log are named. ``jobs`` = 1 runs plain `dvc repro` (DVC's own sequential order).

Results do not depend on ``jobs``: a stage's CPU thread count comes from params.yaml (train_gan ``workers``,
train_classifier ``threads``), never from how many stages run at once, so a stage computes the same bits
whether it runs alone or beside another.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from acneops.core.config import load_params
from acneops.core.errors import AcneopsError
from acneops.pipeline import dag
from acneops.pipeline.schedule import Outcome, run_graph

LOG_DIR = Path(".dvc") / "tmp" / "repro"  # under the repository root: DVC's scratch folder, ignored by git
# `dvc repro` options that keep their meaning when passed to every single-stage `dvc repro`; the others choose
# stages or change what a failure does, which the scheduler decides (use --jobs 1 to pass them to dvc)
STAGE_OPTIONS = {"-f", "--force", "--no-run-cache", "--no-commit", "--pull", "--allow-missing",
                 "-q", "--quiet", "-v", "--verbose"}
PRUNE_SAFE = {"--no-run-cache", "--no-commit", "-q", "--quiet", "-v", "--verbose"}  # `dvc status` still decides


def default_jobs() -> int:
    """The CPU cores this process may use (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def dvc_env() -> tuple[str, dict[str, str]]:
    """The dvc executable and the environment for it: this interpreter's bin folder (the project's .venv) first on
    PATH, so DVC's shell finds the same `acneops` for every stage command."""
    bin_dir = str(Path(sys.executable).parent)
    path = bin_dir + os.pathsep + os.environ.get("PATH", "")
    return shutil.which("dvc", path=path) or "dvc", {**os.environ, "PATH": path}


def reproduce(dvc_args: list[str], params: Path, jobs: int) -> int:
    """Reproduce the pipeline (``dvc_args``: targets and `dvc repro` options) as one MLflow run; returns the exit
    status. The run (stage ``repro``) records the arguments, ``jobs`` and the exit status, ends FAILED when a stage
    fails, and every stage's run nests under it (ACNEOPS_PARENT_RUN_ID, inherited by the DVC processes)."""
    from acneops import tracking

    jobs = jobs or default_jobs()
    targets = [a for a in dvc_args if not a.startswith("-")]
    options = [a for a in dvc_args if a.startswith("-")]
    unsupported = [a for a in options if a not in STAGE_OPTIONS]
    if jobs > 1 and unsupported:
        raise AcneopsError(f"acneops repro --jobs {jobs}: {unsupported} choose stages or change what a failure "
                           f"does, which the scheduler decides; pass only {sorted(STAGE_OPTIONS)}, or run them "
                           "with --jobs 1 (plain `dvc repro`)")
    config = {"dvc_args": " ".join(dvc_args), "params": str(params), "jobs": jobs}
    with tracking.start_run("repro", None, config) as run:
        with tracking.parent_run(run):
            if jobs == 1:
                dvc, env = dvc_env()
                code = subprocess.call([dvc, "repro", *dvc_args], env=env)
                failure = f"dvc repro exited with status {code}" if code else None
            else:
                code, failure, outcome = _scheduled(targets, options, jobs, params)
                if outcome is not None:
                    run.log_metrics(stage_metrics(outcome), step=0)
        run.set_tags({"acneops.exit_status": code})
        headline = headline_metrics(Path.cwd() / "reports" / "metrics.json") if not code else {}
        if headline:  # the reproduction's figures on the parent run: two reproductions side by side in the UI
            run.log_metrics(headline, step=0)
        if failure:
            run.fail(failure)
    return code


def _scheduled(targets: list[str], options: list[str], jobs: int, params: Path
               ) -> tuple[int, str | None, Outcome | None]:
    """Run the targets' stages (and their upstream) side by side; (exit status, failure reason or None, what the
    scheduler did or None when nothing ran)."""
    from acneops.pipeline.threads import stage_threads

    root = Path.cwd()
    try:
        graph = dag.stage_graph(root, targets)
        if set(options) <= PRUNE_SAFE:
            graph = dag.with_downstream(graph, dag.out_of_date(root, graph))
        values = load_params(params) if params.is_file() else {}  # a repository of other commands may have none
        # a .dvc file's node only has its hash checked: it computes nothing
        threads = {stage: 1 if stage.endswith(".dvc") else stage_threads(values, stage, jobs) for stage in graph}
    except AcneopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1, str(exc), None
    if not graph:
        print("Data and pipelines are up to date (dvc status: no stage changed).", flush=True)
        return 0, None, None
    print(f"Running {len(graph)} stages on {jobs} cores, a stage starting when its upstream stages are done and its "
          f"threads fit (each: dvc repro --single-item <stage>; logs in {LOG_DIR}/)", flush=True)
    began = time.monotonic()
    outcome = run_graph(graph, lambda stage: _start(stage, options, root), jobs, on_end=_report, cost=threads)
    print(timing_table(outcome, time.monotonic() - began, threads), flush=True)
    return (*_verdict(outcome), outcome)


def log_path(stage: str, root: Path | None = None) -> Path:
    """Where a stage's output goes: ``.dvc/tmp/repro/<stage>.log`` (``dir/dvc.yaml:stage`` flattened)."""
    name = stage.replace(os.sep, "_").replace(":", "_")
    return (root or Path.cwd()) / LOG_DIR / f"{name}.log"


def stage_command(stage: str, options: list[str] | tuple[str, ...] = ()) -> tuple[list[str], dict[str, str]]:
    """The command that reproduces one stage, and its environment: ``dvc --wait-for-lock repro --single-item``
    (also each task of the Prefect pipeline flow)."""
    dvc, env = dvc_env()
    return [dvc, "--wait-for-lock", "repro", "--single-item", *options, stage], env


def _start(stage: str, options: list[str], root: Path) -> subprocess.Popen:
    command, env = stage_command(stage, options)
    log = log_path(stage, root)
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"started  {stage}  (tail -f {log.relative_to(root)})", flush=True)
    with open(log, "wb") as fh:  # the child holds its own descriptor
        return subprocess.Popen(command, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT)


def _report(stage: str, status: int, seconds: float, cpu_seconds: float) -> None:
    """Print the stage's whole log as one block, then one line with its outcome."""
    text = log_path(stage).read_text(errors="replace")
    print(text, end="" if text.endswith("\n") or not text else "\n")
    verdict = "finished" if status == 0 else f"FAILED (dvc repro exited with status {status})"
    print(f"{verdict}  {stage}  in {seconds:.1f} s (CPU {_percent(cpu_seconds, seconds)})", flush=True)


def _percent(cpu_seconds: float, seconds: float) -> str:
    return f"{100 * cpu_seconds / seconds:.0f}%" if seconds > 0 else "-"


def timing_table(outcome: Outcome, wall_s: float, threads: dict[str, int]) -> str:
    """Per stage: threads, wall time, CPU time and CPU utilisation (100% = one core busy), in completion order,
    then the whole run's: the sum of the stages' CPU time over the wall time of the schedule."""
    ended = [*outcome.finished, *outcome.failed]
    width = max([len(stage) for stage in ended] + [5])
    lines = [f"{'stage':<{width}}  threads  wall s   CPU s   CPU"]
    for stage in ended:
        wall, cpu = outcome.seconds[stage], outcome.cpu_seconds[stage]
        lines.append(f"{stage:<{width}}  {threads.get(stage, 1):>7}  {wall:>6.1f}  {cpu:>6.1f}  "
                     f"{_percent(cpu, wall):>4}")
    cpu_total = sum(outcome.cpu_seconds.values())
    lines.append(f"{'all':<{width}}  {'':>7}  {wall_s:>6.1f}  {cpu_total:>6.1f}  {_percent(cpu_total, wall_s):>4}")
    return "\n".join(lines)


def stage_metrics(outcome: Outcome) -> dict[str, float]:
    """The repro run's metrics: each stage's wall and CPU seconds, ``stage_wall_s/train_gan.mild`` (MLflow metric
    names allow no '@')."""
    metrics: dict[str, float] = {}
    for stage, wall in outcome.seconds.items():
        name = re.sub(r"[^\w\-. /]", "_", stage.replace("@", "."))
        metrics[f"stage_wall_s/{name}"] = round(wall, 3)
        metrics[f"stage_cpu_s/{name}"] = round(outcome.cpu_seconds[stage], 3)
    return metrics


def _verdict(outcome: Outcome) -> tuple[int, str | None]:
    if outcome.ok:
        total = sum(outcome.seconds.values())
        print(f"All {len(outcome.finished)} stages finished ({total:.0f} s of stage time, up to "
              f"{outcome.most_at_once} at once).", flush=True)
        return 0, None
    failed = "; ".join(f"stage {stage}: dvc repro exited with status {status} (log: {log_path(stage)})"
                       for stage, status in outcome.failed.items())
    reason = failed + (f"; not run: {', '.join(outcome.not_run)}" if outcome.not_run else "")
    print(f"error: {reason}", file=sys.stderr, flush=True)
    return 1, reason


def headline_metrics(path: Path) -> dict[str, float]:
    """The figures a reproduction is compared by, under names stable across runs: per classifier scenario accuracy
    and macro-F1 with their 95% interval (``<scenario>.accuracy``, ``<scenario>.accuracy_ci95_low``, ...), each
    paired comparison's difference and interval (``augmented_minus_real.macro_f1`` ...), per generator FD and class
    fidelity (``gen.<class>.fd``, ``gen.<class>.class_fidelity``) and per class flagged exports
    (``anon.<class>.flagged``). Empty when evaluate has not written ``path``."""
    import json

    if not path.is_file():
        return {}
    m = json.loads(path.read_text())
    out: dict[str, float] = {}
    for scenario, c in (m.get("classifiers") or {}).items():
        for stat in ("accuracy", "macro_f1"):
            for suffix in ("", "_ci95_low", "_ci95_high", "_sd"):
                if isinstance(c.get(stat + suffix), (int, float)):
                    out[f"{scenario}.{stat}{suffix}"] = float(c[stat + suffix])
    for pair, stats in (m.get("comparisons") or {}).items():
        for stat, v in stats.items():
            for key, name in (("difference", ""), ("ci95_low", "_ci95_low"), ("ci95_high", "_ci95_high")):
                if isinstance(v.get(key), (int, float)):
                    out[f"{pair}.{stat}{name}"] = float(v[key])
    for gen, g in (m.get("generators") or {}).items():
        fd = next((k for k in g if k.startswith(("fd_", "fid")) and not k.endswith("_sd")), None)
        if fd:
            out[f"gen.{gen}.fd"] = float(g[fd])
        if isinstance(g.get("class_fidelity"), (int, float)):
            out[f"gen.{gen}.class_fidelity"] = float(g["class_fidelity"])
    for cls, a in (m.get("anonymity") or {}).items():
        if isinstance(a.get("flagged"), (int, float)):
            out[f"anon.{cls}.flagged"] = float(a["flagged"])
    return out
