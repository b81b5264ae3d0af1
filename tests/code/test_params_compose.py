"""params.yaml is conf/ composed by DVC's Hydra support: the committed file is exactly what `dvc exp run` writes
for the default task (so `dvc repro` and an experiment without overrides read the same values), and every
task of conf/task/ composes into a valid configuration of every stage and foreach run."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_repo import copy_pipeline, exp_run_params

from acneops.stages import STAGES, stage_module

ROOT = Path(__file__).resolve().parents[2]
TASKS = sorted(p.stem for p in (ROOT / "conf" / "task").glob("*.yaml"))
REWRITE = ("cd <repo> && .venv/bin/python -c \"import os; from dvc.utils.hydra import compose_and_dump; "
           "compose_and_dump('params.yaml', os.path.abspath('conf'), None, 'config', '', [])\"")


def test_dvc_exp_run_composes_params_yaml_from_conf():
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        hydra = repo.config["hydra"]
    assert hydra["enabled"] is True and hydra.get("config_dir", "conf") == "conf"
    assert hydra.get("config_name", "config") == "config" and (ROOT / "conf" / "config.yaml").is_file()
    assert {"acne", "acne_sorted", "mask"} <= set(TASKS)


def test_committed_params_yaml_is_the_composition_of_the_defaults(tmp_path):
    repo = copy_pipeline(tmp_path)
    exp_run_params(repo, [])
    assert (repo / "params.yaml").read_text() == (ROOT / "params.yaml").read_text(), (
        "params.yaml is not conf/ composed with its defaults (task=acne). params.yaml is generated: make the change "
        f"in conf/config.yaml or conf/task/<task>.yaml, then rewrite params.yaml with DVC's own code: {REWRITE}")


@pytest.mark.parametrize("task", TASKS)
def test_every_task_configures_every_stage_run(tmp_path, task):
    params = exp_run_params(copy_pipeline(tmp_path), [f"task={task}"])
    assert "???" not in (tmp_path / "params.yaml").read_text(), f"conf/task/{task}.yaml leaves a ??? key unset"
    built = 0
    for stage in STAGES:
        runs = params[stage].get("runs")
        for name in (list(runs) if runs is not None else [None]):
            stage_module(stage).config_from_params(params, name)
            built += 1
    assert built >= len(STAGES)


def test_a_task_missing_a_key_is_caught(tmp_path):
    repo = copy_pipeline(tmp_path)
    task = repo / "conf" / "task" / "mask.yaml"
    task.write_text(task.read_text().replace("  positive: mask\n", "", 1))
    exp_run_params(repo, ["task=mask"])
    assert "positive: ???" in (repo / "params.yaml").read_text()
