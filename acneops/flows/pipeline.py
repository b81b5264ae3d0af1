"""The ``pipeline`` flow: dvc.yaml's stages as Prefect tasks, each in its own process through DVC.

The stage graph is DVC's (:func:`acneops.pipeline.dag.stage_graph`: dvc.yaml with its foreach expanded over
params.yaml), never a copy kept here, so the default task, the mask task and a user's own stages run alike. As in
`acneops repro`, only the stages `dvc status` reports out of date and those downstream of them become tasks, so a
second run starts nothing.

**Each task goes through DVC.** A stage's task runs exactly what `acneops repro` runs for it,
``dvc --wait-for-lock repro --single-item <stage>`` in the repository root, its output in
``.dvc/tmp/repro/<stage>.log``; the stage command is `acneops run <stage>`, as in `dvc repro`. This, rather than
running `acneops run` in the tasks and `dvc commit` after the flow, because DVC then does for each stage what it
does in `dvc repro`: it skips a stage whose deps and params are unchanged (or restores it from its run cache), fails
the stage when its command did not write a declared out, and writes the stage's dvc.lock entry under its repository
lock the moment the stage ends, from the files the stage has just read and written. So the results equal `dvc
repro`'s byte for byte, `dvc status` reports the pipeline up to date after the flow, and a flow that fails halfway
leaves dvc.lock true for every stage that finished (the next run resumes there). A `dvc commit` at the end would
hash whatever the workspace holds by then, record nothing when the flow failed, and vouch for outs DVC never saw
being written.

**Concurrency.** Tasks are submitted in topological order, each with ``wait_for`` its upstream stages' futures, so
independent stages (the per-class fine-tunes, the classifiers) run at once. On the default thread task runner a
task first takes its stage's CPU threads (:func:`acneops.pipeline.threads.stage_threads`, from params.yaml) from a
budget of ``jobs`` cores and gives them back when the stage ends, so the running stages' threads never outnumber the
cores (why that matters: acneops.pipeline.repro). On Dask (``--dask local:N`` or a scheduler's address) the workers
bound it instead: a local cluster's workers are processes of one thread, each running one stage at a time.

**Retries, for transient failures only**: a stage whose `acneops run` exited with
:data:`acneops.cli.TRANSIENT_EXIT` (75: tracking server unreachable, an I/O or network error) raises
:class:`TransientStageError`, which the task's ``retry_condition_fn`` retries. A stage failing on bad input
(StageError, ConfigError: exit status 1) or on a bug fails at once with its log's last lines in the error; the
stages downstream of it do not start, independent ones run to their end (dvc.lock records them).

**Tracking.** One MLflow run per flow run (stage ``pipeline``, tagged with the Prefect flow run id) holds every
stage's run: each task hands its stage process the parent's id and the tracking URI explicitly (a Dask worker is
another process, maybe on another machine, and inherits nothing from the flow's); the headline figures are logged
on it at the end; it ends FAILED when a stage fails.
"""

from __future__ import annotations

import contextlib
import graphlib
import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from acneops.flows import prefect_defaults

prefect_defaults()  # before Prefect is imported: the temporary server's settings (a user's own settings win)

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.runtime import flow_run, task_run  # noqa: E402
from prefect.states import Failed, State  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from acneops.cli import TRANSIENT_EXIT  # noqa: E402
from acneops.core.config import load_params  # noqa: E402
from acneops.core.errors import AcneopsError  # noqa: E402
from acneops.pipeline import dag  # noqa: E402
from acneops.pipeline.repro import (  # noqa: E402
    default_jobs, headline_metrics, log_path, stage_command, stage_metrics, timing_table)
from acneops.pipeline.schedule import Outcome  # noqa: E402
from acneops.pipeline.threads import stage_threads  # noqa: E402

RETRIES = 2  # retries of a stage after a transient failure (never after bad input)
RETRY_DELAY_S = 30.0  # wait before a retry, s: a tracking server restarting, a network blip
LOG_LINES = 40  # lines of a stage's log quoted in the task's log (finished) or in its error (failed)
# DVC's message when a stage's command failed; its exit status tells a transient failure from bad input
DVC_COMMAND_FAILED = re.compile(r"failed to run: .*, exited with (-?\d+)")


class StageFailed(AcneopsError):
    """A stage's `dvc repro` failed on its input or on a bug: no retry. Built from its args alone, so it pickles
    (a Dask worker sends it back to the flow)."""

    def __init__(self, stage: str, status: int, log: str, tail: str, attempts: int = 1, seconds: float = 0.0,
                 cpu_seconds: float = 0.0):
        super().__init__(stage, status, log, tail, attempts, seconds, cpu_seconds)
        self.stage, self.status, self.log, self.tail = stage, status, log, tail
        self.attempts, self.seconds, self.cpu_seconds = attempts, seconds, cpu_seconds

    def __repr__(self) -> str:  # what Prefect's log lines show: the first line
        return f"{type(self).__name__}({str(self).splitlines()[0]})"

    def __str__(self) -> str:
        tries = f" (attempt {self.attempts})" if self.attempts > 1 else ""
        return (f"stage {self.stage}: its command exited with status {self.status}{tries} (log: {self.log}); "
                f"the log ends:\n{self.tail}")


class TransientStageError(StageFailed):
    """A stage's command exited with TRANSIENT_EXIT (tracking server unreachable, an I/O or network error): the
    task retries it."""


class PipelineError(AcneopsError):
    """The flow ran, and a stage failed (the message names it, its log and the stages not run)."""


def retry_transient(stage_task: Any, stage_run: Any, state: Any) -> bool:
    """The stage task's ``retry_condition_fn`` (Prefect passes the task, its run and its Failed state): retry a
    TransientStageError, nothing else."""
    try:
        state.result()
    except TransientStageError:
        return True
    except BaseException:
        return False
    return False


class Cores:
    """A weighted semaphore over ``total`` cores: a stage holds its threads' worth while it runs."""

    def __init__(self, total: int):
        self.total = self.free = total
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, n: int) -> Iterator[None]:
        n = max(1, min(n, self.total))  # a stage wanting more than the budget runs alone
        with self._changed:
            self._changed.wait_for(lambda: self.free >= n)
            self.free -= n
        try:
            yield
        finally:
            with self._changed:
                self.free += n
                self._changed.notify_all()


_BUDGETS: dict[str, Cores] = {}  # flow run's key -> the cores its stage tasks share (thread task runner only)
_BUDGETS_LOCK = threading.Lock()


def _budget(key: str, cores: int) -> Cores:
    with _BUDGETS_LOCK:
        return _BUDGETS.setdefault(key, Cores(cores))


def _drop_budget(key: str) -> None:
    """Forget a flow run's budget. (A function, not inline: on Dask the flow's own function is pickled by value
    with the globals it names, and a lock does not pickle.)"""
    with _BUDGETS_LOCK:
        _BUDGETS.pop(key, None)


@task(name="stage", task_run_name="{stage}", retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S,
      retry_condition_fn=retry_transient)
def stage_task(stage: str, root: str, threads: int, env: dict[str, str], budget: tuple[str, int] | None
               ) -> dict[str, Any]:
    """`dvc --wait-for-lock repro --single-item <stage>` in ``root``, with ``env`` added to the environment (the
    MLflow parent run id and tracking URI). ``budget`` (key, cores): hold ``threads`` of those cores while the stage
    runs. Returns the stage's summary; raises StageFailed or TransientStageError with the log's last lines."""
    attempt = task_run.run_count or 1
    held = _budget(*budget).hold(threads) if budget else contextlib.nullcontext()
    with held:
        status, seconds, cpu_seconds, text = dvc_repro(stage, Path(root), env, attempt)
    log = str(log_path(stage, Path(root)))
    if status != 0:
        found = DVC_COMMAND_FAILED.findall(text)
        command_status = int(found[-1]) if found else status
        error = TransientStageError if command_status == TRANSIENT_EXIT else StageFailed
        raise error(stage, command_status, log, _tail(text, LOG_LINES), attempt, seconds, cpu_seconds)
    get_run_logger().info("finished %s in %.1f s (CPU %.1f s); its log (%s):\n%s", stage, seconds, cpu_seconds, log,
                          _tail(text, LOG_LINES))
    return {"stage": stage, "seconds": seconds, "cpu_seconds": cpu_seconds, "threads": threads,
            "attempts": attempt, "log": log, "ended": time.time()}


def dvc_repro(stage: str, root: Path, env: dict[str, str], attempt: int = 1) -> tuple[int, float, float, str]:
    """Run the stage as `acneops repro` does, its output to its log (a first attempt starts the log afresh, a retry
    appends); (exit status, wall seconds, CPU seconds of its process tree, this attempt's output)."""
    command, dvc_environ = stage_command(stage)
    log = log_path(stage, root)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab" if attempt > 1 else "wb") as fh:  # the child writes through its own descriptor
        fh.write(f"--- attempt {attempt}: {' '.join(['dvc', *command[1:]])}\n".encode())
        fh.flush()
        start = fh.tell()
        began = time.monotonic()
        proc = subprocess.Popen(command, cwd=root, env={**dvc_environ, **env}, stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT)
        _, wait_status, usage = os.wait4(proc.pid, 0)  # blocks this task's thread only
        proc.returncode = os.waitstatus_to_exitcode(wait_status)
        seconds = time.monotonic() - began
    with open(log, "rb") as fh:
        fh.seek(start)
        text = fh.read().decode(errors="replace")
    return proc.returncode, seconds, usage.ru_utime + usage.ru_stime, text


def _tail(text: str, lines: int) -> str:
    kept = text.rstrip("\n").splitlines()
    if len(kept) <= lines:
        return "\n".join(kept)
    return "\n".join([f"[... {len(kept) - lines} lines above]", *kept[-lines:]])


def plan(targets: list[str], params_path: Path, jobs: int) -> tuple[dict[str, set[str]], dict[str, int]]:
    """What the flow runs in the repository at the working directory (DVC names stages relative to it): {stage:
    the stages of the plan it waits for}, DVC's graph of ``targets`` and their upstream (every stage when there are
    none) cut to the stages `dvc status` reports out of date and everything downstream of them; and each stage's
    CPU threads on ``jobs`` cores (a .dvc file's node: 1, it only checks)."""
    root = Path.cwd()
    graph = dag.stage_graph(root, targets)
    graph = dag.with_downstream(graph, dag.out_of_date(root, graph))
    values = load_params(params_path) if params_path.is_file() else {}  # a repository of other commands may have none
    threads = {stage: 1 if stage.endswith(".dvc") else min(jobs, stage_threads(values, stage, jobs))
               for stage in graph}
    return graph, threads


def task_runner(dask: str | None) -> Any:
    """Prefect's thread task runner (``dask`` None), or prefect-dask's DaskTaskRunner on ``local:N`` (a local
    cluster of N one-thread worker processes) or on the scheduler at an address (``tcp://host:8786``: its workers
    run the stages in the repository at the flow's path, so they need it on a shared filesystem and the same venv;
    the flow's PREFECT_API_URL and tracking URI, which every stage is handed, must be servers they reach)."""
    if dask is None:
        return ThreadPoolTaskRunner()  # no thread cap: a task's thread only waits for its stage process
    n = dask.partition(":")[2] if dask.startswith("local:") else None
    if n is not None and not (n.isdigit() and int(n) >= 1):
        raise AcneopsError(f"--dask {dask}: expected local:N with N >= 1 worker processes, e.g. --dask local:2")
    if n is None and "://" not in dask:
        raise AcneopsError(f"--dask {dask}: expected local:N (a local cluster of N worker processes) or a Dask "
                           "scheduler's address, e.g. tcp://scheduler:8786")
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise AcneopsError(f"--dask needs the optional extra acneops[dask] ({exc}): pip install 'acneops[dask]'"
                           ) from None
    if n is not None:
        return DaskTaskRunner(cluster_class=local_cluster,
                              cluster_kwargs={"n_workers": int(n), "threads_per_worker": 1, "processes": True})
    return DaskTaskRunner(address=dask)


def local_cluster(**cluster_kwargs: Any) -> Any:
    """A distributed.LocalCluster whose worker processes report their task runs to this flow's Prefect API. Called
    by DaskTaskRunner inside the flow run: when the flow runs on Prefect's temporary server (no PREFECT_API_URL),
    its address goes into the workers' environment; else each worker would start a temporary server of its own,
    and the task runs would vanish with it."""
    from distributed import LocalCluster
    from prefect.settings import PREFECT_API_URL

    env = dict(cluster_kwargs.pop("env", None) or {})
    if not PREFECT_API_URL.value():
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()  # the flow's temporary server (one per process)
        if server.running:
            env.setdefault("PREFECT_API_URL", server.api_url)
    return LocalCluster(env=env, **cluster_kwargs)


@flow(name="acneops-pipeline", log_prints=True)
def pipeline_flow(root: str, graph: dict[str, list[str]], threads: dict[str, int], jobs: int, config: dict[str, Any],
                  retries: int = RETRIES, retry_delay_s: float = RETRY_DELAY_S) -> list[dict[str, Any]] | State:
    """Run ``graph``'s stages (each one's upstream first) inside one parent MLflow run; ``jobs`` > 0: the running
    stages' ``threads`` fit in ``jobs`` cores (thread task runner), 0: the task runner bounds them (Dask). Returns
    the finished stages' summaries, or a Failed state holding a PipelineError when a stage failed."""
    from acneops import tracking

    if not graph:
        print("Data and pipelines are up to date (dvc status: no stage changed).")
    with tracking.start_run("pipeline", None, config) as run:
        run.set_tags({"acneops.prefect_flow_run_id": flow_run.id})
        env = {tracking.PARENT_RUN_ENV: run.run_id, tracking.TRACKING_URI_ENV: tracking.tracking_uri()}
        budget = (run.run_id, jobs) if jobs else None
        began = time.monotonic()
        try:
            summaries, outcome, errors = _run_stages(root, graph, threads, env, budget, retries, retry_delay_s)
        finally:
            _drop_budget(run.run_id)
        if graph:
            print(timing_table(outcome, time.monotonic() - began, threads))
            run.log_metrics(stage_metrics(outcome), step=0)
        reason = _failure(outcome, errors)
        run.set_tags({"acneops.exit_status": 1 if reason else 0})
        if reason:  # a Failed state, not an exception: Prefect would log the flow's traceback over the stage's error
            run.fail(reason)
            return Failed(message=reason, data=PipelineError(reason))
        headline = headline_metrics(Path(root) / "reports" / "metrics.json")
        if headline:  # the run's figures on the parent run, as `acneops repro` logs them
            run.log_metrics(headline, step=0)
    return summaries


def _run_stages(root: str, graph: dict[str, list[str]], threads: dict[str, int], env: dict[str, str],
                budget: tuple[str, int] | None, retries: int, retry_delay_s: float
                ) -> tuple[list[dict[str, Any]], Outcome, dict[str, str]]:
    """Submit every stage with ``wait_for`` its upstream stages' futures, wait for all; (the finished stages'
    summaries in completion order, the Outcome acneops repro's timing table and metrics read, {failed stage: its
    error})."""
    stage = stage_task.with_options(retries=retries, retry_delay_seconds=retry_delay_s)
    futures: dict[str, Any] = {}
    for name in graphlib.TopologicalSorter({s: graph[s] for s in sorted(graph)}).static_order():
        futures[name] = stage.submit(name, root, threads[name], env, budget,
                                     wait_for=[futures[up] for up in sorted(graph[name])])
    summaries, outcome, errors = [], Outcome(), {}
    for name, future in futures.items():
        future.wait()
        state = future.state
        if state.is_completed():
            summaries.append(state.result())
        elif state.is_failed():
            exc = state.result(raise_on_failure=False)
            if isinstance(exc, StageFailed):
                outcome.failed[name] = exc.status
                outcome.seconds[name], outcome.cpu_seconds[name] = exc.seconds, exc.cpu_seconds
            else:  # the task itself broke (a bug here, a lost Dask worker): no stage status
                outcome.failed[name] = -1
            errors[name] = str(exc)
        else:  # an upstream stage failed: never started
            outcome.not_run.append(name)
    summaries.sort(key=lambda summary: summary["ended"])
    for summary in summaries:
        outcome.finished.append(summary["stage"])
        outcome.seconds[summary["stage"]] = summary["seconds"]
        outcome.cpu_seconds[summary["stage"]] = summary["cpu_seconds"]
    return summaries, outcome, errors


def _failure(outcome: Outcome, errors: dict[str, str]) -> str | None:
    """Why the flow failed (each failed stage's error, the stages not run), or None."""
    if outcome.ok:
        return None
    reason = "\n".join(errors.get(stage, f"stage {stage} failed") for stage in outcome.failed)
    return reason + (f"\nnot run (upstream failed): {', '.join(outcome.not_run)}" if outcome.not_run else "")


def run(params_path: Path, targets: list[str], dask: str | None, jobs: int, retries: int = RETRIES,
        retry_delay_s: float = RETRY_DELAY_S) -> list[dict[str, Any]]:
    """Run the pipeline flow in the repository at the working directory: ``targets`` and their upstream (every
    stage when empty), the out-of-date ones; on ``dask`` (None: threads of this process, the running stages'
    threads within ``jobs`` cores, 0 = all). Returns the finished stages' summaries; raises PipelineError when a
    stage failed (after its transient failures were retried ``retries`` times, ``retry_delay_s`` apart)."""
    from acneops import tracking

    root = Path.cwd()
    jobs = jobs or default_jobs()
    tracking.check_reachable(tracking.tracking_uri())  # in seconds, before Prefect's temporary server starts
    graph, threads = plan(list(targets), params_path, jobs)
    runner = task_runner(dask)  # a missing extra fails here, before anything runs
    config = {"targets": " ".join(targets), "params": str(params_path), "jobs": jobs, "dask": dask or "",
              "stages": " ".join(sorted(graph)), "retries": retries}
    flow_fn = pipeline_flow.with_options(task_runner=runner)
    state = flow_fn(str(root), {stage: sorted(ups) for stage, ups in graph.items()}, threads, 0 if dask else jobs,
                    config, retries, retry_delay_s, return_state=True)
    return state.result()  # raises the flow's PipelineError (or whatever broke the flow)
