"""Throwaway copies of the project's pipeline definition, and what DVC says about a pipeline (helpers for tests)."""

from __future__ import annotations

import contextlib
import copy
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def copy_pipeline(dest: Path, params: dict | None = None, with_code: bool = False) -> Path:
    """A fresh git repository in ``dest`` with dvc.yaml, .dvcignore, .gitignore, the DVC config, the Hydra
    config (conf/) and params.yaml (or ``params``); ``with_code`` also copies the acneops package (the stages'
    dependencies)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore", "reports/.gitignore"):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / ".dvc", dest / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"))
    shutil.copytree(ROOT / "conf", dest / "conf")
    if with_code:
        shutil.copytree(ROOT / "acneops", dest / "acneops", ignore=shutil.ignore_patterns("__pycache__"))
    if params is None:
        shutil.copy(ROOT / "params.yaml", dest / "params.yaml")
    else:
        (dest / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def tiny_params(params: dict | None = None) -> dict:
    """params.yaml (or ``params``) shrunk so the whole pipeline runs in about a minute on one CPU core: a 12-image
    per class phantom, lanczos restore, GANs of a few kimg-thousandths with 16 channels, one classifier epoch,
    a handful of sorted, synthetic and evaluated images. Every stage and foreach run of the default stays."""
    p = copy.deepcopy(params) if params is not None else yaml.safe_load((ROOT / "params.yaml").read_text())
    p["phantom"].update(n_per_class=12, hr_size=64)
    p["ingest"].update(workers=1)
    p["restore"].update(restorer="lanczos", compare_restorers=False, workers=1)
    p["train_gan"].update(total_kimg=0.016, snapshot_kimg=0.016, tick_kimg=0.008, batch=8, channel_base=64,
                          channel_max=16, z_dim=16, w_dim=16, mapping_layers=1, grid_seeds=4, workers=1)
    for run in p["train_gan"]["runs"].values():
        run["total_kimg"] = 0.016
    p["train_classifier"].update(epochs=1, batch=8, img_size=32, threads=1, seeds=[0, 1])  # a replicate: its outs too
    for run in p["train_classifier"]["runs"].values():
        if run.get("synthetic_per_class"):
            run["synthetic_per_class"] = 4
    p["sort"].update(n_images=24, min_per_class=2, batch=8)
    # a one-epoch sorter calls every image one class: the filter only counts here (tests/code/test_synthesize.py
    # checks its rejections)
    p["synthesize"].update(counts={cls: 6 for cls in p["synthesize"]["counts"]}, batch=8, class_filter_margin=1.0)
    p["evaluate"].update(n_fake=8, generation_draws=2, kid_subsets=2, kid_subset_size=4, feature_batch=8, batch=8, grid_images=4,
                         nearest_k=2)
    p["audit"].update(ct_cells=2, ct_min_samples=1)
    return p


def exp_run_params(repo: Path, overrides: list[str]) -> dict:
    """Write ``repo``'s params.yaml as `dvc exp run -S <override> ...` does before it runs anything (DVC's own
    code: with Hydra enabled in .dvc/config, conf/ composed with the overrides), and return the params."""
    from dvc.repo import Repo

    with contextlib.chdir(repo), Repo(str(repo)) as dvc_repo:  # DVC resolves the params path from the cwd
        dvc_repo.experiments.workspace_queue._update_params({"params.yaml": list(overrides)})
    return yaml.safe_load((repo / "params.yaml").read_text())


def _dvc(args: list[str], repo: Path) -> str:
    out = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def stage_names(repo: Path = ROOT) -> list[str]:
    """`dvc stage list --all`: every stage with foreach expanded (names like train_gan@all; data.dvc too)."""
    return _dvc(["stage", "list", "--all", "--name-only"], repo).split()


def dag_edges(repo: Path = ROOT) -> set[tuple[str, str]]:
    """`dvc dag` as (upstream stage, downstream stage) pairs."""
    lines = [line.strip().rstrip(";") for line in _dvc(["dag", "--dot"], repo).splitlines() if "->" in line]
    return {tuple(part.strip().strip('"') for part in line.split("->")) for line in lines}
