"""The mask task (second method) is a params change: the README's `dvc exp run -S ...` overrides give a
valid configuration for every stage and a DVC pipeline with one DCGAN per class and no sorting step."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from acneops.stages import stage_module

ROOT = Path(__file__).resolve().parents[2]


def readme_overrides() -> list[str]:
    """The -S values of the README's mask-task command."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- mask-task", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    command = next(c for c in block.replace("\\\n", " ").splitlines() if "dvc exp run" in c)
    args = shlex.split(command)
    return [args[i + 1] for i, a in enumerate(args) if a == "-S"]


def apply_overrides(params: dict, overrides: list[str]) -> dict:
    """Apply Hydra-style `key=value` / `++key=value` overrides as DVC does (values parsed as YAML)."""
    for item in overrides:
        key, value = item.lstrip("+").split("=", 1)
        node = params
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = yaml.safe_load(value) if value != '""' else ""
    return params


def test_mask_overrides_build_every_stage_config():
    params = apply_overrides(yaml.safe_load((ROOT / "params.yaml").read_text()), readme_overrides())
    assert params["ingest"]["classes"] == ["mask", "no_mask"]
    for stage, names in [("ingest", [None]), ("restore", [None]), ("synthesize", [None]), ("evaluate", [None]),
                         ("train_gan", list(params["train_gan"]["runs"])),
                         ("train_classifier", list(params["train_classifier"]["runs"]))]:
        for name in names:
            cfg = stage_module(stage).config_from_params(params, name)
            if stage == "train_gan":
                assert cfg.family == "dcgan" and cfg.lr_g == 1e-4 and cfg.batch == 128 and cfg.betas == (0.5, 0.999)
            if stage == "train_classifier":
                assert cfg.labels == ("mask", "no_mask") and cfg.positive == "mask"


def test_mask_overrides_give_the_second_method_pipeline(tmp_path):
    params = apply_overrides(yaml.safe_load((ROOT / "params.yaml").read_text()), readme_overrides())
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / ".dvc", tmp_path / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    out = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--all", "--name-only"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    stages = set(out.stdout.split())
    assert stages == {"ingest", "restore", "train_gan@mask", "train_gan@no_mask", "train_classifier@real",
                      "train_classifier@augmented", "synthesize", "evaluate"}
    assert not any(re.match(r"sort", s) for s in stages)
