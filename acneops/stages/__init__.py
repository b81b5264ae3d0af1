"""The pipeline's stages: one module per dvc.yaml stage, reached through :data:`STAGES` by the CLI
(`acneops run`), dvc.yaml, the Prefect flows and the tests, so no caller holds a second copy of stage logic.

Each stage module holds the stage's params reading (``config_from_params(params, name)``, the frozen config
it builds) and ``run(cfg) -> Result``, calling the domain packages (acneops.data, gan, classify, synthetic,
evaluation, audit, metrics, report). Imports go one way: stages -> domain packages -> acneops.core.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from acneops.core.config import load_params, to_dict
from acneops.core.errors import AcneopsError
from acneops.stages import evaluate, ingest, restore, sort, synthesize, train_classifier, train_gan

# dvc.yaml stage name -> stage module (tests/code/test_layout.py keeps this and dvc.yaml in step)
STAGES: dict[str, ModuleType] = {
    "ingest": ingest,
    "restore": restore,
    "train_gan": train_gan,
    "train_classifier": train_classifier,
    "sort": sort,
    "synthesize": synthesize,
    "evaluate": evaluate,
}


def stage_module(stage: str) -> ModuleType:
    """The module of ``stage``; an unknown name is an error listing the stages."""
    try:
        return STAGES[stage]
    except KeyError:
        raise AcneopsError(f"unknown stage '{stage}'; stages are {sorted(STAGES)} (the stages of dvc.yaml)") from None


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
