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
    """Build the stage's config from params (section ``stage``, foreach item ``name``) and run it."""
    module = stage_module(stage)
    cfg = module.config_from_params(load_params(params_path), name)
    return module.run(cfg)
