"""Prefect flows over the same stage functions that dvc.yaml runs (acneops.stages.run_stage).

- ``pipeline``: every stage of dvc.yaml in dependency order; the per-severity fine-tunes are submitted
  together so a Dask task runner (``--dask``) spreads them over a cluster. Like ``acneops repro``, one
  flow run is one parent MLflow run (stage ``pipeline``) with every stage's run nested under it.
- ``regenerate``: the synthesize stage alone (a fresh synthetic dataset from the current generators),
  the flow a schedule serves: ``python flows/pipeline.py serve --cron "0 3 * * 1"``.

Flows run without a Prefect server (Prefect starts a temporary local API); set PREFECT_API_URL to use a
shared one. No stage logic lives here: ``tests/code/test_flows.py`` keeps PIPELINE and dvc.yaml in step.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from prefect import flow, task

# (stage, foreach item) in dvc.yaml's dependency order; items in one inner list may run in parallel.
PIPELINE: list[list[tuple[str, str | None]]] = [
    [("ingest", None)],
    [("restore", None)],
    [("train_gan", "base")],
    [("train_gan", "all"), ("train_classifier", "sorter"), ("train_classifier", "real")],
    [("sort", "all"), ("train_gan", "healthy"), ("train_gan", "mild"), ("train_gan", "moderate"),
     ("train_gan", "severe")],
    [("synthesize", None)],
    [("train_classifier", "synthetic"), ("train_classifier", "augmented")],
    [("evaluate", None)],
    [("register", None)],
]


def stage_names() -> list[str]:
    """dvc.yaml names of the flow's stages, in order (``train_gan@all`` for foreach items)."""
    return [f"{s}@{n}" if n else s for group in PIPELINE for s, n in group]


@task(name="stage", task_run_name="{stage}@{name}")
def stage_task(stage: str, name: str | None, params_path: str, parent_run_id: str | None = None) -> str:
    """One stage through acneops.stages.run_stage; its MLflow run nests under ``parent_run_id`` (passed
    explicitly, not inherited, because a Dask worker is another process with its own environment)."""
    import os

    from acneops.stages import run_stage
    from acneops.tracking import PARENT_RUN_ENV

    if parent_run_id:
        os.environ[PARENT_RUN_ENV] = parent_run_id
    result = run_stage(stage, name, params_path)
    return result.summary() if hasattr(result, "summary") else str(result)


@flow(name="acneops-pipeline", log_prints=True)
def pipeline(params_path: str = "params.yaml") -> list[str]:
    """Run every stage in order (stages of one group are submitted together) inside one parent MLflow run;
    the parent ends FAILED when a stage fails."""
    from acneops import tracking

    summaries: list[str] = []
    with tracking.start_run("pipeline", None, {"params_path": params_path, "stages": stage_names()}) as run:
        with tracking.parent_run(run) as parent_id:
            for group in PIPELINE:
                futures = [stage_task.submit(stage, name, params_path, parent_id) for stage, name in group]
                summaries += [f.result() for f in futures]
        from acneops.pipeline.repro import headline_metrics

        headline = headline_metrics(Path("reports") / "metrics.json")
        if headline:  # the run's figures on the parent run, as `acneops repro` logs them
            run.log_metrics(headline, step=0)
    for line in summaries:
        print(line)
    return summaries


@flow(name="acneops-regenerate", log_prints=True)
def regenerate(params_path: str = "params.yaml") -> str:
    """A fresh synthetic dataset (with its anonymity filter) from the current generators."""
    summary = stage_task(stage="synthesize", name=None, params_path=params_path)
    print(summary)
    return summary


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["pipeline", "regenerate", "serve"])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--cron", default="0 3 * * 1", help="schedule of `serve` (regenerate), cron syntax")
    parser.add_argument("--dask", action="store_true", help="run the pipeline on a Dask task runner")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return regenerate.serve(name="acneops-regenerate", cron=args.cron, parameters={"params_path": args.params})
    target = pipeline if args.command == "pipeline" else regenerate
    if args.dask:
        from prefect_dask import DaskTaskRunner  # optional: pip install prefect-dask

        target = target.with_options(task_runner=DaskTaskRunner())
    return target(params_path=args.params)


if __name__ == "__main__":
    main()
