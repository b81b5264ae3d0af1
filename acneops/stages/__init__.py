"""The pipeline's stages: one module per dvc.yaml stage, reached through :data:`STAGES` by the CLI
(`acneops run`), dvc.yaml, the Prefect flows and the tests, so no caller holds a second copy of stage logic.

Each stage module holds the stage's params reading (``config_from_params(params, name)``, the frozen config
it builds) and ``run(cfg) -> Result``, calling the domain packages (acneops.data, gan, classify, synthetic,
evaluation, audit, metrics, report). Imports go one way: stages -> domain packages -> acneops.core.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from acneops.core.config import load_params, to_dict
from acneops.core.errors import AcneopsError


# One loader per stage: `acneops run <stage>` imports that stage's module only, so a stage's import closure
# (and its dvc.yaml deps, kept true by tests/code/test_dvc_truth.py) does not include the other stages.
def _ingest() -> ModuleType:
    from acneops.stages import ingest
    return ingest


def _restore() -> ModuleType:
    from acneops.stages import restore
    return restore


def _train_gan() -> ModuleType:
    from acneops.stages import train_gan
    return train_gan


def _train_classifier() -> ModuleType:
    from acneops.stages import train_classifier
    return train_classifier


def _sort() -> ModuleType:
    from acneops.stages import sort
    return sort


def _synthesize() -> ModuleType:
    from acneops.stages import synthesize
    return synthesize


def _evaluate() -> ModuleType:
    from acneops.stages import evaluate
    return evaluate


def _register() -> ModuleType:
    from acneops.stages import register
    return register


# dvc.yaml stage name -> loader of its module (tests/code/test_dvc_truth.py keeps this and dvc.yaml in step)
STAGES: dict[str, Callable[[], ModuleType]] = {
    "ingest": _ingest,
    "restore": _restore,
    "train_gan": _train_gan,
    "train_classifier": _train_classifier,
    "sort": _sort,
    "synthesize": _synthesize,
    "evaluate": _evaluate,
    "register": _register,
}


def stage_module(stage: str) -> ModuleType:
    """The module of ``stage`` (imported on first use); an unknown name is an error listing the stages."""
    try:
        load = STAGES[stage]
    except KeyError:
        raise AcneopsError(f"unknown stage '{stage}'; stages are {sorted(STAGES)} (the stages of dvc.yaml)") from None
    return load()


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
    from acneops.tracking import start_run

    with start_run(stage, name, to_dict(cfg)) as run:
        result = module.run(cfg)
        metrics = result.metrics() if hasattr(result, "metrics") else {}
        if metrics:
            run.log_metrics(metrics, step=0)
        for path in result.artifacts() if hasattr(result, "artifacts") else []:
            run.log_artifact(path)
    return result
