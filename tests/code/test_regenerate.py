"""The `regenerate` flow end to end, as a user runs it (`python flows/pipeline.py regenerate`, Prefect's temporary
server, a real MLflow tracking server on loopback with registered champions): a new versioned dataset from the pinned
champion versions with its manifest, card and MLflow run; a failed quality gate leaves every earlier dataset as it was;
two regenerations at once give two complete, distinct folders."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image
from registered_repo import COUNT, FLOWS, datasets_in, regenerate, regenerate_params, registered_repo
from test_register import LABELS

from acneops.synthetic.export import SEED_STRIDE


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("regenerate")
    with registered_repo(root) as r:
        done = regenerate(root, r["env"])
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        yield {**r, "first": done}


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(folder)).encode() + f.read_bytes())
    return h.hexdigest()


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_new_dataset_from_the_pinned_champions_with_manifest_and_card(repo):
    [folder] = datasets_in(repo["root"])
    client = _client(repo["uri"])
    versions = {c: client.get_model_version_by_alias(f"acneops-generator-{c}", "champion").version for c in LABELS}
    stamp, *parts = folder.name.split("-")
    assert len(stamp) == 16 and stamp.endswith("Z") and parts == [f"{c}.v{versions[c]}" for c in sorted(LABELS)]
    rows = _rows(folder)
    assert sorted(r["label"] for r in rows) == sorted(c for c in LABELS for _ in range(COUNT))
    card = json.loads((folder / "card.json").read_text())
    for r in rows:
        assert r["model"] == f"acneops-generator-{r['label']}" and r["model_version"] == versions[r["label"]]
        assert r["model_uri"] == f"models:/{r['model']}/{r['model_version']}" and r["audit"] == "pass"
        assert int(r["seed"]) // SEED_STRIDE == card["seed"]  # the fresh seed is recorded and drew every image
        image = Image.open(folder / r["file"])
        assert image.size == (32, 32) and not image.info.get("exif") and not image.text  # metadata-free PNG
    assert card["counts"] == {c: COUNT for c in LABELS}
    assert {c: m["version"] for c, m in card["models"].items()} == versions
    for c in LABELS:
        q = card["quality"][c]
        assert q["n"] == COUNT and q["champion_fd"] > 0 and q["checks"]["fd"]["passed"]
    assert "# Dataset card" in (folder / "card.md").read_text() and (folder / "samples.png").is_file()
    # no real image is ever written into a synthetic dataset
    real = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (repo["root"] / "restored").rglob("*.png")}
    assert not real & {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.png")}
    assert not list((repo["root"] / "datasets" / "regenerated").glob(".staging-*"))


def test_the_run_is_recorded_in_mlflow_with_the_dataset_as_input(repo):
    [folder] = datasets_in(repo["root"])
    client = _client(repo["uri"])
    experiment = client.get_experiment_by_name("acneops").experiment_id
    [run] = client.search_runs([experiment], filter_string="tags.`acneops.stage` = 'regenerate'")
    assert run.info.status == "FINISHED"
    assert run.data.tags["acneops.dataset"] == f"datasets/regenerated/{folder.name}"
    for c in LABELS:
        assert run.data.params[f"model.{c}"].startswith(f"acneops-generator-{c}/")
        assert run.data.metrics[f"{c}/exported"] == COUNT and f"{c}/fd" in run.data.metrics
    [dataset] = run.inputs.dataset_inputs
    assert dataset.dataset.name == f"regenerated/{folder.name}" and dataset.dataset.digest
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"card.json", "card.md"} <= names


def test_a_flow_run_prints_no_traceback(repo):
    out = repo["first"].stdout + repo["first"].stderr
    assert "Traceback" not in out and "database is locked" not in out, out[-3000:]
    assert f"regenerated dataset: {datasets_in(repo['root'])[0]}" in out


def test_a_failed_quality_gate_leaves_the_previous_dataset_untouched(repo):
    root, env = repo["root"], repo["env"]
    before = {p.name: _tree_digest(p) for p in datasets_in(root)}
    (root / "params.yaml").write_text(yaml.safe_dump(regenerate_params(root, max_fd_ratio=1e-6)))
    try:
        done = regenerate(root, env)
    finally:
        (root / "params.yaml").write_text(yaml.safe_dump(regenerate_params(root)))
    assert done.returncode != 0
    assert "worse than its champion allows" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr, (done.stdout + done.stderr)[-3000:]  # a refusal, not a crash
    assert {p.name: _tree_digest(p) for p in datasets_in(root)} == before
    assert not list((root / "datasets" / "regenerated").glob(".staging-*"))
    client = _client(repo["uri"])
    experiment = client.get_experiment_by_name("acneops").experiment_id
    runs = client.search_runs([experiment], filter_string="tags.`acneops.stage` = 'regenerate'",
                              order_by=["attributes.start_time DESC"])
    assert runs[0].info.status == "FAILED" and "acneops.dataset" not in runs[0].data.tags


def test_two_regenerations_at_once_give_two_complete_distinct_folders(repo):
    root, env = repo["root"], repo["env"]
    before = set(datasets_in(root))
    procs = [subprocess.Popen([sys.executable, str(FLOWS), "regenerate", "--params", "params.yaml"], cwd=root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outs)
    new = sorted(set(datasets_in(root)) - before)
    assert len(new) == 2
    seeds = []
    for folder in new:
        rows = _rows(folder)
        assert len(rows) == COUNT * len(LABELS) and all((folder / r["file"]).is_file() for r in rows)
        assert len(list(folder.rglob("*.png"))) == COUNT * len(LABELS) + 1  # + samples.png
        seeds.append(json.loads((folder / "card.json").read_text())["seed"])
    assert seeds[0] != seeds[1]  # each run draws its own fresh seed
    assert not list((root / "datasets" / "regenerated").glob(".staging-*"))


@pytest.mark.parametrize("section, message", [
    ({"max_shortfall": 1.5}, "regenerate.max_shortfall must be in [0, 1)"),
    ({"cron": "every monday"}, "regenerate.cron: five cron fields"),
])
def test_bad_params_give_a_clear_error_and_write_nothing(repo, section, message):
    root, env = repo["root"], repo["env"]
    before = {p.name: _tree_digest(p) for p in datasets_in(root)}
    (root / "params.yaml").write_text(yaml.safe_dump(regenerate_params(root, **section)))
    try:
        done = regenerate(root, env)
    finally:
        (root / "params.yaml").write_text(yaml.safe_dump(regenerate_params(root)))
    out = done.stdout + done.stderr
    assert done.returncode == 1 and message in out and "Traceback" not in out, out[-3000:]
    assert {p.name: _tree_digest(p) for p in datasets_in(root)} == before
