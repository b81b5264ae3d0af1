"""Stage train_classifier on tiny restored/synthetic fixtures: outputs, split guard, sources, errors,
determinism, resume, MLflow (real sqlite store in a temp dir)."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from acneops.core.config import ConfigError
from acneops.core.errors import AcneopsError
from acneops.stages import train_classifier
from acneops.stages.train_classifier import config_from_params

REPO = Path(__file__).resolve().parents[2]
COLOURS = {"healthy": (200, 60, 60), "mild": (60, 200, 60), "moderate": (60, 60, 200), "severe": (200, 200, 60)}
SIZE = 32  # px, network input in these tests


def _write_folder(root: Path, counts: dict[str, int], seed: int, label_col: str = "label") -> list[dict]:
    """PNG folder per class of noisy solid-colour images + manifest.csv (file relative to root)."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, n in counts.items():
        for i in range(n):
            pixels = np.clip(np.array(COLOURS[label]) + rng.integers(-40, 41, (36, 36, 3)), 0, 255).astype(np.uint8)
            rel = f"{label}/{i:03d}.png"
            (root / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / rel)
            rows.append({"file": rel, label_col: label})
    _write_manifest(root / "manifest.csv", rows)
    return rows


def _write_manifest(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def make_restored(root: Path, labels=tuple(COLOURS), n_train: int = 5, n_val: int = 2) -> Path:
    """restored/{train,val}/ with images; restored/test/manifest.csv names files that do not exist."""
    _write_folder(root / "train", {k: n_train for k in labels}, seed=1)
    _write_folder(root / "val", {k: n_val for k in labels}, seed=2)
    (root / "test").mkdir(parents=True)
    _write_manifest(root / "test" / "manifest.csv", [{"file": f"{k}/missing.png", "label": k} for k in labels])
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cls")
    make_restored(root / "restored")
    _write_folder(root / "synthetic", {k: 4 for k in COLOURS}, seed=3)
    return {"restored": root / "restored", "synthetic": root / "synthetic", "root": root}


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _env(mlflow_uri, tmp_path, monkeypatch) -> Path:
    """Real MLflow store in a temp dir; every granted real-split read logged to access.jsonl."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    monkeypatch.delenv("ACNEOPS_PARENT_RUN_ID", raising=False)
    monkeypatch.setenv("ACNEOPS_ACCESS_LOG", str(tmp_path / "access.jsonl"))
    return tmp_path / "access.jsonl"


def params_for(data: dict[str, Path], out_root: Path, **defaults) -> dict:
    section = {
        "arch": "resnet18", "pretrained": False, "img_size": SIZE, "labels": list(COLOURS),
        "restored_dir": str(data["restored"]), "out_dir": str(out_root / "{name}"),
        "epochs": 2, "batch": 8, "lr": 1e-3, "threads": 1, "seeds": [0],
        "runs": {
            "sorter": {"role": "sorter", "labels": ["mild", "moderate", "severe"]},
            "synthetic": {"real_train": False, "synthetic_dir": str(data["synthetic"])},
            "real": {},
            "augmented": {"synthetic_dir": str(data["synthetic"]), "synthetic_per_class": 3},
        },
    }
    if "seed" in defaults:  # the single-seed spelling replaces the list
        section.pop("seeds")
    section.update(defaults)
    return {"train_classifier": section}


def splits_read(log: Path) -> list[str]:
    return [json.loads(line)["split"] for line in log.read_text().splitlines()] if log.exists() else []


def test_config_merges_run_over_defaults_and_rejects_bad_names(data, tmp_path):
    params = params_for(data, tmp_path)
    cfg = config_from_params(params, "sorter")
    assert cfg.role == "sorter" and cfg.labels == ("mild", "moderate", "severe") and cfg.epochs == 2
    assert cfg.out_path == tmp_path / "sorter"
    with pytest.raises(ConfigError, match=r"unknown run 'nope'.*augmented"):
        config_from_params(params, "nope")
    with pytest.raises(ConfigError, match="needs a run name"):
        config_from_params(params, None)
    params["train_classifier"]["runs"]["real"] = {"epoch": 3}
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['epoch'\]"):
        config_from_params(params, "real")


def test_config_validates_values(data, tmp_path):
    with pytest.raises(ConfigError, match="needs >= 75 px"):
        config_from_params(params_for(data, tmp_path, arch="inception_resnet_v2"), "real")
    with pytest.raises(ConfigError, match="role"):
        config_from_params(params_for(data, tmp_path, role="evaluate"), "real")
    with pytest.raises(ConfigError, match="synthetic_holdout needs synthetic_dir"):
        config_from_params(params_for(data, tmp_path, val_source="synthetic_holdout"), "real")
    with pytest.raises(ConfigError, match="pretrained"):
        config_from_params(params_for(data, tmp_path, pretrained=3), "real")
    cfg = config_from_params(params_for(data, tmp_path, pretrained="/w/resnet18.safetensors"), "real")
    assert cfg.pretrained == "/w/resnet18.safetensors"


def test_sorter_run_writes_its_trail_and_never_reads_test(data, tmp_path, _env, mlflow_uri):
    cfg = config_from_params(params_for(data, tmp_path), "sorter")
    result = train_classifier.run(cfg)
    out = tmp_path / "sorter"
    for name in ("best.pt", "history.jsonl", "val_metrics.json", "val_confusion.json", "val_confusion.png", "config.json"):
        assert (out / name).is_file(), name
    assert not (out / "last.pt").exists() and not list(out.glob("*.tmp"))
    history = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert set(history[0]) >= {"train_loss", "train_acc", "val_acc", "val_macro_f1"}
    val = json.loads((out / "val_metrics.json").read_text())
    assert val["labels"] == ["mild", "moderate", "severe"] and val["n"] == 6
    assert val["best_epoch"] == result.best_epoch and "train_classifier@sorter" in result.summary()
    assert result.counts == {"train_real": 15, "train_synthetic": 0, "val": 6}
    ckpt = torch.load(out / "best.pt", weights_only=True)
    assert ckpt["model_args"]["labels"] == ["mild", "moderate", "severe"] and ckpt["epoch"] == result.best_epoch
    assert sorted(set(splits_read(_env))) == ["train", "val"]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("acneops").experiment_id],
                              filter_string="tags.`acneops.name` = 'sorter'")
    assert runs[0].info.status == "FINISHED" and runs[0].data.params["role"] == "sorter"
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "val_acc")] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id, "classifier")}
    assert "classifier/val_confusion.png" in artifacts


def test_augmented_run_reads_real_and_capped_synthetic(data, tmp_path, _env):
    result = train_classifier.run(config_from_params(params_for(data, tmp_path, epochs=1), "augmented"))
    assert result.counts == {"train_real": 20, "train_synthetic": 12, "val": 8}
    assert sorted(set(splits_read(_env))) == ["train", "val"]


def test_synthetic_holdout_run_reads_no_real_image(data, tmp_path, _env):
    """Pure TSTR, every seed: the data-access log (every granted read of a real split) stays empty."""
    params = params_for(data, tmp_path, epochs=1, seeds=[0, 1])
    params["train_classifier"]["runs"]["synthetic"]["val_source"] = "synthetic_holdout"
    result = train_classifier.run(config_from_params(params, "synthetic"))
    assert result.counts == {"train_real": 0, "train_synthetic": 12, "val": 4} and sorted(result.per_seed) == [0, 1]
    assert splits_read(_env) == []


def test_same_seed_gives_identical_weights_and_another_seed_does_not(data, tmp_path):
    runs = {}
    for key, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = config_from_params(params_for(data, tmp_path / key, epochs=1, seed=seed), "real")
        train_classifier.run(cfg)
        runs[key] = torch.load(cfg.out_path / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not torch.equal(runs["a"]["fc.weight"], runs["c"]["fc.weight"])


def test_the_same_params_and_seed_give_the_same_checkpoint_file(data, tmp_path):
    """Byte for byte (DVC hashes and the registry's versions rely on it): no wall-clock time in the checkpoint."""
    import shutil

    from acneops.core.io import sha256_file

    cfg = config_from_params(params_for(data, tmp_path, epochs=1, seed=0), "real")
    train_classifier.run(cfg)
    first = sha256_file(cfg.out_path / "best.pt")
    shutil.rmtree(cfg.out_path)
    train_classifier.run(cfg)
    assert sha256_file(cfg.out_path / "best.pt") == first


def test_seeds_train_one_model_each_equal_to_training_that_seed_alone(data, tmp_path):
    """`seeds: [3, 1]`: seed 3's model at out_dir (what sort/synthesize use), seed 1's under seeds/1, each equal to
    a run of that seed alone; summary.json lists both; evaluate finds them; a dropped seed's folder is removed."""
    from acneops.classify.config import replicate_checkpoints

    loop = config_from_params(params_for(data, tmp_path / "loop", epochs=1, seeds=[3, 1]), "real")
    result = train_classifier.run(loop)
    alone = {s: config_from_params(params_for(data, tmp_path / f"alone{s}", epochs=1, seeds=[s]), "real")
             for s in (3, 1)}
    for cfg in alone.values():
        train_classifier.run(cfg)

    def weights(path: Path) -> dict:
        return torch.load(path, weights_only=True)["model"]

    def same(a: Path, b: Path) -> bool:
        wa, wb = weights(a), weights(b)
        return all(torch.equal(wa[k], wb[k]) for k in wa)

    replicate = loop.out_path / "seeds" / "1" / "best.pt"
    assert same(loop.out_path / "best.pt", alone[3].out_path / "best.pt")
    assert same(replicate, alone[1].out_path / "best.pt")
    assert not same(loop.out_path / "best.pt", replicate)
    summary = json.loads((loop.out_path / "seeds" / "summary.json").read_text())
    assert summary["seeds"] == [3, 1] and sorted(summary["models"]) == ["1", "3"]
    val = {s: json.loads((alone[s].out_path / "val_metrics.json").read_text())["accuracy"] for s in (3, 1)}
    assert summary["val_accuracy_mean"] == pytest.approx((val[3] + val[1]) / 2)
    assert sorted(result.per_seed) == [1, 3] and result.counts["train_real"] == 20
    assert replicate_checkpoints(loop.out_path / "best.pt") == [(3, loop.out_path / "best.pt"), (1, replicate)]
    assert json.loads((replicate.parent / "config.json").read_text())["seeds"] == [1]

    train_classifier.run(dataclasses.replace(loop, seeds=(3,)))
    assert not replicate.parent.exists()
    assert replicate_checkpoints(loop.out_path / "best.pt") == [(3, loop.out_path / "best.pt")]
    with pytest.raises(ConfigError, match="seeds"):
        config_from_params(params_for(data, tmp_path, seeds=[1, 1]), "real")
    with pytest.raises(ConfigError, match="not both"):
        config_from_params(params_for(data, tmp_path, seed=0, seeds=[0, 1]), "real")


def test_real_fraction_trains_on_the_same_per_class_subset_for_every_seed(data, tmp_path, _env):
    """A scarce-data scenario: 40% of the 5 real train images per class = 2 each, the same images whatever the seed."""
    from acneops.classify.config import collect_items

    subsets = []
    for seed in (0, 7):
        cfg = config_from_params(params_for(data, tmp_path, seeds=[seed], real_fraction=0.4), "augmented")
        train, val = collect_items(cfg)
        real = [it for it in train if it.origin == "real"]
        assert {lab: sum(it.label == lab for it in real) for lab in COLOURS} == {lab: 2 for lab in COLOURS}
        assert sum(it.origin == "synthetic" for it in train) == 12 and len(val) == 8  # synthetic and val untouched
        subsets.append([it.path for it in real])
    assert subsets[0] == subsets[1]
    with pytest.raises(ConfigError, match="real_fraction"):
        config_from_params(params_for(data, tmp_path, real_fraction=0), "real")


def test_resume_from_last_equals_uninterrupted(data, tmp_path):
    """A run stopped after epoch 1 (last.pt kept) and restarted gives the uninterrupted run's weights."""
    full = config_from_params(params_for(data, tmp_path / "full", keep_last=True), "real")
    train_classifier.run(full)
    part = config_from_params(params_for(data, tmp_path / "part", keep_last=True, epochs=1), "real")
    train_classifier.run(part)
    resumed = train_classifier.run(dataclasses.replace(part, epochs=2))
    assert resumed.epochs_run == 1
    wf = torch.load(full.out_path / "last.pt", weights_only=True)
    wr = torch.load(part.out_path / "last.pt", weights_only=True)
    assert wr["epoch"] == 2 and all(torch.equal(wf["model"][k], wr["model"][k]) for k in wf["model"])
    lines = (part.out_path / "history.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


def test_label_absent_from_data_is_a_clear_error(data, tmp_path):
    cfg = config_from_params(params_for(data, tmp_path, labels=["healthy", "mild", "scarring"]), "real")
    with pytest.raises(AcneopsError, match=r"train[/\\]manifest.csv: no images of class\(es\) \['scarring'\]"):
        train_classifier.run(cfg)
    cfg = config_from_params(params_for(data, tmp_path, restored_dir=str(tmp_path / "nowhere")), "real")
    with pytest.raises(AcneopsError, match="restored manifest missing"):
        train_classifier.run(cfg)


def test_bad_synthetic_inputs_are_clear_errors(data, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    params = params_for(data, tmp_path)
    params["train_classifier"]["runs"]["synthetic"]["synthetic_dir"] = str(empty)
    with pytest.raises(AcneopsError, match=f"{empty}.*manifest missing"):
        train_classifier.run(config_from_params(params, "synthetic"))
    broken = tmp_path / "broken"
    rows = _write_folder(broken, {"healthy": 2, "mild": 2}, seed=5)
    rows[2]["file"] = "mild/gone.png"
    _write_manifest(broken / "manifest.csv", rows)
    params["train_classifier"]["runs"]["synthetic"]["synthetic_dir"] = str(broken)
    params["train_classifier"]["labels"] = ["healthy", "mild"]
    with pytest.raises(AcneopsError, match=r"row 3 \(line 4\) names file 'mild/gone.png'"):
        train_classifier.run(config_from_params(params, "synthetic"))


def test_synthetic_manifest_with_class_column_is_read(data, tmp_path):
    from acneops.classify.data import synthetic_items

    folder = tmp_path / "syn"
    _write_folder(folder, {"mild": 3, "severe": 2}, seed=7, label_col="class")
    items = synthetic_items(folder, ["mild", "severe"], per_class=2)
    assert [(it.path.name, it.label) for it in items] == [("000.png", "mild"), ("001.png", "mild"),
                                                         ("000.png", "severe"), ("001.png", "severe")]


def _stage_runs(uri: str, name: str) -> list:
    """Every MLflow run of train_classifier@``name`` in the store at ``uri``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("acneops")
    return client.search_runs([experiment.experiment_id], filter_string=(
        f"tags.`acneops.stage` = 'train_classifier' and tags.`acneops.name` = '{name}'")) if experiment else []


def test_stage_runs_from_a_params_file_as_one_finished_mlflow_run(data, tmp_path, monkeypatch):
    """The path DVC takes: params.yaml -> acneops.stages.run_stage('train_classifier', name). The training
    loop's own run is the only run (run_stage opened a second one and the loop marked it 'killed')."""
    from mlflow import MlflowClient

    from acneops.stages import run_stage

    uri = f"sqlite:///{tmp_path / 'own.db'}"  # a store of its own: exactly one run must be in it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params_for(data, tmp_path, epochs=2)))
    result = run_stage("train_classifier", "real", path)
    assert (tmp_path / "real" / "best.pt").is_file() and result.best_epoch in (1, 2)
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("acneops").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", [(r.info.run_name, r.info.status) for r in runs]
    run = runs[0]
    assert run.info.run_name == "train_classifier@real" and "acneops.failure" not in run.data.tags
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [1, 2]
    assert run.data.metrics["best_val_acc"] == pytest.approx(result.val["accuracy"])
    assert run.data.metrics["best_epoch"] == result.best_epoch
    assert run.data.params["epochs"] == "2"


def test_killed_cli_run_resumes_to_uninterrupted_weights_in_one_mlflow_run(data, tmp_path, mlflow_uri):
    """`acneops run train_classifier` killed with SIGKILL after its first epoch's checkpoint, then run again
    (through run_stage, the function the command calls): the weights and history of an uninterrupted run, and
    one MLflow run, resumed and FINISHED, holding every epoch's metrics."""
    from mlflow import MlflowClient

    from acneops.stages import run_stage

    epochs = 3  # the first last.pt appears seconds before the run would end (each epoch writes ~130 MB)
    params = params_for(data, tmp_path, epochs=epochs, keep_last=True)
    params["train_classifier"]["runs"]["resumable"] = {}  # a run name of its own in the module's store
    train_classifier.run(config_from_params(params_for(data, tmp_path / "full", epochs=epochs, keep_last=True), "real"))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    cmd = [sys.executable, "-m", "acneops", "run", "train_classifier", "--name", "resumable", "--params", str(path)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = tmp_path / "resumable" / "last.pt"
    deadline = time.time() + 120
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists(), proc.stderr.read().decode()[-2000:]
    assert torch.load(last, weights_only=True)["epoch"] < epochs
    assert [r.info.status for r in _stage_runs(mlflow_uri, "resumable")] == ["RUNNING"]  # killed: no clean-up
    assert run_stage("train_classifier", "resumable", path).epochs_run < epochs
    a = torch.load(tmp_path / "full" / "real" / "last.pt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert b["epoch"] == epochs and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    history = [json.loads(x)["epoch"] for x in (last.parent / "history.jsonl").read_text().splitlines()]
    assert history == list(range(1, epochs + 1))
    runs = _stage_runs(mlflow_uri, "resumable")
    assert [(r.info.status, r.data.tags["acneops.resumed"]) for r in runs] == [("FINISHED", "True")]
    history = MlflowClient(tracking_uri=mlflow_uri).get_metric_history(runs[0].info.run_id, "val_acc")
    assert {m.step for m in history} == set(range(1, epochs + 1))


def test_the_default_tstr_run_is_pure():
    """The pipeline's synthetic-only classifier: no real image trains it or picks its best epoch (issue 12)."""
    from acneops.core.config import load_params

    root = Path(__file__).resolve().parents[2]
    cfg = config_from_params(load_params(root / "params.yaml"), "synthetic")
    assert not cfg.real_train and cfg.synthetic_dir and cfg.val_source == "synthetic_holdout"
