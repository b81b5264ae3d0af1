"""Run a pipeline stage by name: the one entry point shared by the CLI (`acneops run`), dvc.yaml and the
Prefect flows, so no caller holds a second copy of the stage logic."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from acneops.config import load_params
from acneops.errors import AcneopsError


def stage_module(stage: str) -> Any:
    """The module ``acneops.<stage>``; it must expose ``config_from_params`` and ``run``."""
    try:
        module = importlib.import_module(f"acneops.{stage}")
    except ModuleNotFoundError as exc:
        if exc.name == f"acneops.{stage}":
            raise AcneopsError(f"unknown stage '{stage}'; stages are the modules named in dvc.yaml") from exc
        raise
    if not hasattr(module, "run") or not hasattr(module, "config_from_params"):
        raise AcneopsError(f"'{stage}' is not a stage (acneops/{stage}.py has no run/config_from_params)")
    return module


def run_stage(stage: str, name: str | None = None, params_path: str | Path = "params.yaml") -> Any:
    """Build the stage's config from params (section ``stage``, foreach item ``name``) and run it.

    Every run is an MLflow run (acneops.tracking): the resolved config as params, lineage tags, and the
    result's ``metrics()`` and ``artifacts()`` when it has them. Stages that track themselves (training
    loops that log per tick/epoch and resume their run) set ``TRACKS_ITSELF = True`` and are called directly.
    """
    module = stage_module(stage)
    cfg = module.config_from_params(load_params(params_path), name)
    if getattr(module, "TRACKS_ITSELF", False):
        return module.run(cfg)
    from acneops.config import to_dict
    from acneops.tracking import start_run

    with start_run(stage, name, to_dict(cfg)) as run:
        result = module.run(cfg)
        metrics = result.metrics() if hasattr(result, "metrics") else {}
        if metrics:
            run.log_metrics(metrics, step=0)
        for path in result.artifacts() if hasattr(result, "artifacts") else []:
            run.log_artifact(path)
    return result
