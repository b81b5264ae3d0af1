"""The Prefect flow runs exactly dvc.yaml's stages, in an order that respects every dependency."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import yaml
from pipeline_repo import copy_pipeline, dag_edges, stage_names

ROOT = Path(__file__).resolve().parents[2]


def _load_flow_module():
    spec = importlib.util.spec_from_file_location("acneops_flows_pipeline", ROOT / "flows" / "pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dvc_stages() -> dict[str, dict]:
    """dvc.yaml stages with foreach expanded over params.yaml (names like train_gan@all)."""
    names = stage_names()
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {n: spec[n.split("@")[0]] for n in names if n.split("@")[0] in spec}  # not data.dvc


def test_flow_stage_list_equals_dvc_yaml():
    flow_names = _load_flow_module().stage_names()
    assert len(flow_names) == len(set(flow_names))
    assert sorted(flow_names) == sorted(_dvc_stages())


def test_flow_order_respects_dvc_dependencies():
    """`dvc dag` edges: every stage's upstream stages run in an earlier group of the flow."""
    module = _load_flow_module()
    group_of = {name: i for i, group in enumerate(module.PIPELINE) for name in
                [f"{s}@{n}" if n else s for s, n in group]}
    edges = dag_edges()
    assert edges
    for src, dst in edges:
        if src in group_of and dst in group_of:  # data.dvc is not a flow stage
            assert group_of[src] < group_of[dst], f"{src} must run before {dst}"


def test_dvc_repro_dry_runs_the_hierarchy_in_order(tmp_path):
    """`dvc repro --dry` on a fresh checkout: data stages, base, G_all + sorter, then sort and the per-class
    fine-tunes of G_all, synthesize, the three scenarios, evaluate."""
    copy_pipeline(tmp_path)
    out = subprocess.run([sys.executable, "-m", "dvc", "repro", "--dry", "--force"], cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    order = [line.split("'")[1] for line in out.stdout.splitlines() if line.startswith("Running stage")]
    assert sorted(order) == sorted(_dvc_stages())
    pos = {name: i for i, name in enumerate(order)}
    chain = ["ingest", "restore", "train_gan@base", "train_gan@all", "train_gan@mild", "synthesize",
             "train_classifier@synthetic", "evaluate"]
    assert [pos[s] for s in chain] == sorted(pos[s] for s in chain)
    assert pos["train_classifier@sorter"] < pos["sort@all"] and pos["train_gan@all"] < pos["sort@all"]
    assert pos["train_gan@all"] < min(pos[f"train_gan@{s}"] for s in ("healthy", "mild", "moderate", "severe"))
    assert max(pos[f"train_gan@{s}"] for s in ("healthy", "mild", "moderate", "severe")) < pos["synthesize"]
    assert max(pos[f"train_classifier@{s}"] for s in ("synthetic", "real", "augmented")) < pos["evaluate"]
