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


def _tiny_raw_repo(folder: Path) -> Path:
    """params.yaml (tiny phantom) and its phantom raw data in ``folder``, the layout `acneops repro` starts from."""
    from acneops.data import phantom
    from acneops.stages.params import phantom_config

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["phantom"].update(n_per_class=12, hr_size=96)  # tiny, as in test_dvc_repro.py
    params["ingest"].update(workers=1)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    phantom.generate(phantom_config(params, task="acne"), folder / "data")
    return folder / "params.yaml"


def test_pipeline_flow_is_one_parent_mlflow_run_with_the_stage_runs_nested(tmp_path):
    """`flows/pipeline.py pipeline` with PIPELINE cut to its first stage (ingest), in a fresh process as a user
    runs it: the stage's run is nested under the flow's `pipeline` run; when a stage fails (labels.csv
    removed), the flow fails and its run ends FAILED."""
    import os
    import textwrap

    from mlflow import MlflowClient

    params_path = _tiny_raw_repo(tmp_path)
    code = textwrap.dedent(
        f"""
        import importlib.util, pathlib
        spec = importlib.util.spec_from_file_location("flows_pipeline", {str(ROOT / "flows" / "pipeline.py")!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.PIPELINE = [[("ingest", None)]]
        module.main(["pipeline", "--params", {str(params_path)!r}])
        pathlib.Path("data/labels.csv").unlink()
        try:
            module.main(["pipeline", "--params", {str(params_path)!r}])
        except Exception as exc:
            print("STAGE FAILED:", exc)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_LOGGING_LEVEL": "WARNING",  # PREFECT_HOME: conftest
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}  # Prefect's 20 s is too short on a busy 2-core CI box
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "STAGE FAILED:" in done.stdout and "labels" in done.stdout.split("STAGE FAILED:")[1]
    assert (tmp_path / "datasets" / "ingest" / "manifest.csv").is_file()
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("acneops").experiment_id
    ingest = client.search_runs([experiment], filter_string="tags.`acneops.stage` = 'ingest'")
    assert sorted(r.info.status for r in ingest) == ["FAILED", "FINISHED"]
    for run in ingest:
        parent = client.get_run(run.data.tags["mlflow.parentRunId"])
        assert parent.data.tags["acneops.stage"] == "pipeline" and parent.info.status == run.info.status
