"""The paper's data situation on the acne task, through `acneops run` as dvc.yaml calls it: the raw data has no healthy
face (as ACNE04), ``ingest.prior_classes: [healthy]`` and the healthy class exported from the base generator.

The tiny phantom (tests/code/pipeline_repo.tiny_params) loses its healthy rows; params point the healthy class at
the base generator (``synthesize.generators.healthy: models/gan/base/final.pt``), the base and G_all train on the acne
classes, and no ``train_gan@healthy`` runs (there is nothing to fine-tune it on). Then: ingest passes and records
healthy as prior-only; the classifiers train (``real`` with 0 healthy images, reported); synthesize exports healthy
with the sorter's prior rule applied and reports its rejections; evaluate scores only the classes of the real test
split and says which it left out and why.

The tiny pipeline's one-epoch sorter cannot tell the grades apart (about 1/3 each, so P(moderate + severe) is about
2/3 for every face): at the default prior_filter_max 0.5 it rejects every healthy candidate and synthesize stops with
that reason (checked last); the pipeline runs with 0.9, where the rule is applied and counted but passes such faces.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml
from pipeline_repo import copy_pipeline, tiny_params
from typer.testing import CliRunner

from acneops.cli import app
from acneops.core.io import read_csv, read_json

BASE = "models/gan/base/final.pt"
STAGES = ["ingest", "restore", "train_gan@base", "train_gan@all", "train_gan@mild", "train_gan@moderate",
          "train_gan@severe", "train_classifier@sorter", "train_classifier@real", "synthesize",
          "train_classifier@synthetic", "train_classifier@augmented", "evaluate"]


def prior_params() -> dict:
    """tiny_params with healthy as a prior class drawn from the base generator."""
    p = tiny_params()
    p["ingest"]["prior_classes"] = ["healthy"]
    runs = p["train_gan"]["runs"]
    del runs["healthy"]
    runs["base"]["labels"] = ["mild", "moderate", "severe"]  # a stand-in for the FFHQ model: every real face there is
    p["synthesize"]["generators"]["healthy"] = BASE
    p["synthesize"]["prior_filter_max"] = 0.9  # the one-epoch sorter's ~2/3 passes (module docstring)
    p["evaluate"]["generators"]["healthy"] = BASE
    p["train_classifier"]["seeds"] = [0]
    return p


def drop_class(data: Path, label: str) -> int:
    """Delete ``label``'s rows and files from a raw layout (ACNE04 has no healthy faces); returns rows removed."""
    rows = read_csv(data / "labels.csv")
    gone = [r for r in rows if r["label"] == label]
    for r in gone:
        (data / r["image"]).unlink()
    with open(data / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(r for r in rows if r["label"] != label)
    return len(gone)


def acneops_run(stage: str) -> str:
    name, _, item = stage.partition("@")
    res = CliRunner().invoke(app, ["run", name, *(["--name", item] if item else []), "--params", "params.yaml"])
    assert res.exit_code == 0, f"acneops run {stage}:\n{res.output}"
    return res.output


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = copy_pipeline(tmp_path_factory.mktemp("prior") / "repo", prior_params())
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    try:
        res = CliRunner().invoke(app, ["data", "phantom", "data", "--params", "params.yaml"])
        assert res.exit_code == 0, res.output
        assert drop_class(root / "data", "healthy") == 12
        outputs = {stage: acneops_run(stage) for stage in STAGES}
        strict = prior_params()  # the default threshold, written beside the pipeline's outputs
        strict["synthesize"].update(prior_filter_max=0.5, out_dir="strict/synthetic",
                                    report_path="strict/synthesize.json")
        (root / "strict.yaml").write_text(yaml.safe_dump(strict))
        outputs["strict"] = CliRunner().invoke(app, ["run", "synthesize", "--params", "strict.yaml"])
    finally:
        mp.undo()
    return {"root": root, "outputs": outputs}


def test_ingest_records_healthy_as_prior_only(repo):
    root = repo["root"]
    contract = read_json(root / "datasets/ingest/contract.json")
    assert contract["prior_classes"] == ["healthy"] and "healthy" in contract["classes"]
    assert {r["label"] for r in read_csv(root / "datasets/ingest/manifest.csv")} == {"mild", "moderate", "severe"}
    assert "prior-only classes (no real image; the base generator supplies them): ['healthy']" in repo["outputs"][
        "ingest"]


def test_the_real_classifier_reports_zero_healthy_images(repo):
    out = repo["outputs"]["train_classifier@real"]
    assert "healthy: 0 real train images (prior-only: ingest.prior_classes), 0 synthetic; the class stays in the " \
           "output layer but this model never saw an example of it" in out
    augmented = read_json(repo["root"] / "models/classifier/augmented/seeds/summary.json")["prior_only"]
    assert augmented[0].startswith("healthy: 0 real train images (prior-only: ingest.prior_classes), 4 synthetic")


def test_synthesize_exports_healthy_from_the_base_generator_through_the_sorters_prior_rule(repo):
    from acneops.classify.backbones import load_classifier, predict

    root = repo["root"]
    report = read_json(root / "reports/synthesize.json")
    healthy = report["classes"]["healthy"]
    assert healthy["generator"] == BASE
    assert healthy["class_filter_rule"].startswith("prior class: rejected when P(moderate + severe) > 0.9")
    assert healthy["exported"] + healthy["shortfall"] == healthy["requested"] == 6
    # every exported healthy image passes the rule, and the rejections are those of the candidates the audit kept
    rows = [r for r in read_csv(root / "datasets/synthetic/manifest.csv") if r["label"] == "healthy"]
    assert len(rows) == healthy["exported"] and all(r["generator"] == BASE for r in rows)
    model, args = load_classifier(root / "models/classifier/sorter/best.pt")
    if rows:
        probs = predict(model, args, [root / "datasets/synthetic" / r["file"] for r in rows])
        assert (probs[:, 1:].sum(axis=1) <= 0.9).all()
    assert healthy["rejected_class_filter"] >= 0 and "rejected_class_filter" in healthy
    assert "class_filter_rule" not in report["classes"]["mild"]


def test_at_the_default_threshold_an_unsure_sorter_keeps_no_healthy_face_and_says_why(repo):
    res = repo["outputs"]["strict"]
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "healthy: " in res.output and "candidates rejected by the class filter's prior rule" in res.output
    assert "synthesize.prior_filter_max" in res.output
    failed = read_json(repo["root"] / "strict/synthesize.json")["classes"]["healthy"]
    assert failed["exported"] == 0 and failed["rejected_class_filter"] == failed["generated"] - failed["flagged"]
    assert not (repo["root"] / "strict/synthetic").exists()


def test_evaluate_scores_the_classes_of_the_real_test_split_and_says_healthy_was_left_out(repo):
    root = repo["root"]
    metrics = read_json(root / "reports/metrics.json")
    for scenario in ("synthetic", "real", "augmented"):
        m = metrics["classifiers"][scenario]
        assert set(m["per_class"]) == {"mild", "moderate", "severe"}, scenario
        assert m["macro_f1"] == pytest.approx(np.mean([c["f1"] for c in m["per_class"].values()]), abs=1e-5)
    details = read_json(root / "reports/evaluation.json")
    assert details["classifiers"]["real"]["report"]["left_out"] == {
        "healthy": "no image in the real test split (prior-only class: ingest.prior_classes; the base generator "
                   "supplies it, the data has none)"}
    assert "left out: `healthy` (no image in the real test split (prior-only class" in (
        root / "reports/report.md").read_text()
    assert details["generators"]["healthy"]["real_labels"] == ["mild", "moderate", "severe"]


def test_registers_classifier_gates_score_the_classes_of_the_real_test_split(repo, monkeypatch):
    """register re-scores a classifier on the real test split as evaluate does: healthy (prior-only, no test image)
    is left out of macro-F1 and named, instead of a missing-class error or an F1 of 0 pulling the gate down."""
    from acneops.registry import gates
    from acneops.stages.register import config_from_params

    root = repo["root"]
    monkeypatch.chdir(root)
    cfg = config_from_params(yaml.safe_load((root / "params.yaml").read_text()))
    assert list(cfg.measure.prior_classes) == ["healthy"]
    real = Path("models/classifier/real/best.pt")
    scores = gates.score_classifiers(cfg, cfg.measure, real, real)
    assert scores["left_out"] == {"healthy": "no image in the real test split (prior-only class: ingest.prior_classes;"
                                             " the base generator supplies it, the data has none)"}
    evaluated = read_json(root / "reports/metrics.json")["classifiers"]["real"]
    assert scores["candidate"]["macro_f1"] == pytest.approx(evaluated["macro_f1"], abs=1e-6)
    assert scores["difference"]["difference"] == 0.0 and 0 < scores["majority_macro_f1"] < 1
