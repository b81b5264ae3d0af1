"""The Prefect flow runs exactly dvc.yaml's stages, in an order that respects every dependency."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _load_flow_module():
    spec = importlib.util.spec_from_file_location("acneops_flows_pipeline", ROOT / "flows" / "pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dvc_stages() -> dict[str, dict]:
    """dvc.yaml stages with foreach expanded over params.yaml (names like train_gan@all)."""
    out = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--all", "--name-only"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
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
    out = subprocess.run([sys.executable, "-m", "dvc", "dag", "--dot"], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    edges = [line.strip().rstrip(";") for line in out.stdout.splitlines() if "->" in line]
    assert edges, out.stdout
    for edge in edges:
        src, dst = (part.strip().strip('"') for part in edge.split("->"))
        if src in group_of and dst in group_of:  # data.dvc is not a flow stage
            assert group_of[src] < group_of[dst], f"{src} must run before {dst}"
