"""The README's `dvc exp run -S ...` commands, applied with DVC's own code (Hydra composition of conf/ with the
overrides, as `dvc exp run` does before running): choosing a task is one flag; the mask task (second method)
gives a valid configuration for every stage and a DVC pipeline with one DCGAN per class and no sorting step;
the published sorted-set variant fine-tunes each severity on its sorted set, after `sort`."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from pipeline_repo import copy_pipeline, dag_edges, exp_run_params, stage_names

from acneops.stages import stage_module

ROOT = Path(__file__).resolve().parents[2]


def readme_overrides(tag: str) -> list[str]:
    """The -S values of the README's command under ``<!-- tag``."""
    text = (ROOT / "README.md").read_text()
    block = text.split(f"<!-- {tag}", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    command = next(c for c in block.replace("\\\n", " ").splitlines() if "dvc exp run" in c)
    args = shlex.split(command)
    return [args[i + 1] for i, a in enumerate(args) if a == "-S"]


def overridden_repo(tmp_path: Path, tag: str) -> tuple[Path, dict]:
    """A copy of the pipeline definition in ``tmp_path`` whose params.yaml DVC itself wrote from conf/ and the
    README's overrides (what ``dvc exp run -S`` does first), and the resulting params."""
    copy_pipeline(tmp_path)
    return tmp_path, exp_run_params(tmp_path, readme_overrides(tag))


def test_choosing_a_task_is_one_flag():
    assert readme_overrides("mask-task") == ["task=mask"]
    assert readme_overrides("sorted-sets") == ["task=acne_sorted"]


def test_mask_overrides_build_every_stage_config(tmp_path):
    _, params = overridden_repo(tmp_path, "mask-task")
    assert params["ingest"]["classes"] == ["mask", "no_mask"]
    for stage, names in [("ingest", [None]), ("restore", [None]), ("synthesize", [None]), ("evaluate", [None]),
                         ("register", [None]), ("train_gan", list(params["train_gan"]["runs"])),
                         ("train_classifier", list(params["train_classifier"]["runs"]))]:
        for name in names:
            cfg = stage_module(stage).config_from_params(params, name)
            if stage == "train_gan":
                assert cfg.family == "dcgan" and cfg.lr_g == 1e-4 and cfg.batch == 128 and cfg.betas == (0.5, 0.999)
            if stage == "train_classifier":
                assert cfg.labels == ("mask", "no_mask") and cfg.positive == "mask"
            if stage == "register":  # the mask task's models keep apart from the acne task's on a shared server
                assert cfg.model_name("classifier", "real") == "acneops-mask-classifier-real"
                assert set(cfg.generators) == {"mask", "no_mask"} and cfg.measure.fidelity_judge == "real"


def test_mask_overrides_give_the_second_method_pipeline(tmp_path):
    repo, _ = overridden_repo(tmp_path, "mask-task")
    stages = set(stage_names(repo))
    assert stages == {"ingest", "restore", "train_gan@mask", "train_gan@no_mask", "train_classifier@real",
                      "train_classifier@augmented", "synthesize", "evaluate", "register"}
    assert not any(re.match(r"sort", s) for s in stages)


def test_sorted_set_variant_fine_tunes_each_severity_on_its_sorted_set_after_sort(tmp_path):
    repo, params = overridden_repo(tmp_path, "sorted-sets")
    module = stage_module("train_gan")
    for severity in ("mild", "moderate", "severe"):
        cfg = module.config_from_params(params, severity)
        assert cfg.labels == () and cfg.image_dir == f"datasets/sorted/{severity}"
        assert cfg.resume_from == "models/gan/all/final.pt"
    assert module.config_from_params(params, "healthy").labels == ("healthy",)  # the rest is unchanged
    assert set(stage_names(repo)) == set(stage_names()) - {"data.dvc"}  # the copy has no data.dvc
    edges = dag_edges(repo)
    for severity in ("mild", "moderate", "severe"):
        assert ("sort@all", f"train_gan@{severity}") in edges
