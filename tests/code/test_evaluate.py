"""Stage evaluate end to end on tiny fixtures: restored splits, timm classifiers with known behaviour,
DCGAN checkpoints, an exported synthetic set; the 'tiny' feature extractor.

Classifiers whose head is set to always answer one class give exact, checkable numbers (accuracy =
that class's share of the test split, sensitivity 1 / specificity 0, class fidelity 1 or 0).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from acneops.classify.backbones import (
    create_classifier,
    model_args_for,
    save_checkpoint,
)
from acneops.core.config import ConfigError
from acneops.core.errors import StageError
from acneops.core.io import append_jsonl, read_jsonl
from acneops.gan import checkpoint as gan_ckpt
from acneops.gan.dcgan import Discriminator, Generator
from acneops.stages import evaluate

COLOURS = {"healthy": (200, 60, 60), "mild": (60, 200, 60), "severe": (60, 60, 200),
           "mask": (220, 220, 220), "no_mask": (120, 80, 60)}
SPLIT_COUNTS = {"train": 6, "val": 2, "test": 3}  # images per class and split
MANIFEST_FIELDS = ["file", "label", "lesions", "source", "split", "restorer", "orig_sha256"]


def _image(label: str, rng: np.random.Generator) -> Image.Image:
    noise = rng.integers(-50, 51, (32, 32, 3))
    return Image.fromarray(np.clip(np.array(COLOURS[label]) + noise, 0, 255).astype(np.uint8))


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def make_restored(root: Path, labels: tuple[str, ...], test_counts: dict[str, int] | None = None) -> Path:
    """restored/<split>/images/*.png + manifest.csv per split, the restore stage's layout."""
    rng = np.random.default_rng(0)
    for split, n in SPLIT_COUNTS.items():
        rows = []
        for label in labels:
            count = (test_counts or {}).get(label, n) if split == "test" else n
            for i in range(count):
                rel = f"images/{label}_{i:02d}.png"
                (root / split / "images").mkdir(parents=True, exist_ok=True)
                _image(label, rng).save(root / split / rel)
                rows.append({"file": rel, "label": label, "lesions": "", "source": "phantom-hr", "split": split,
                             "restorer": "none", "orig_sha256": f"{i:064d}"})
        _write_csv(root / split / "manifest.csv", rows, MANIFEST_FIELDS)
    return root


def make_synthetic(root: Path, labels: tuple[str, ...], n: int = 8) -> Path:
    rng = np.random.default_rng(7)
    rows = []
    for label in labels:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _image(label, rng).save(root / label / f"seed{i:06d}.png")
            rows.append({"file": f"{label}/seed{i:06d}.png", "class": label, "seed": i})
    _write_csv(root / "manifest.csv", rows, ["file", "class", "seed"])
    return root


def make_classifier(path: Path, labels: tuple[str, ...], always: str | None = None, seed: int = 0,
                    real_train: bool = True, synthetic_dir: str = "", val_source: str = "real_val") -> Path:
    """A resnet18 at 32 px; with ``always`` its head answers that class for every image."""
    torch.manual_seed(seed)
    model = create_classifier("resnet18", len(labels), img_size=32)
    if always is not None:
        with torch.no_grad():
            model.fc.weight.zero_()
            model.fc.bias.copy_(torch.tensor([10.0 if c == always else 0.0 for c in labels]))
    save_checkpoint(path, model, model_args_for("resnet18", len(labels), 32, labels), epoch=1,
                    config={"real_train": real_train, "synthetic_dir": synthetic_dir, "val_source": val_source})
    return path


def make_generator(path: Path, seed: int) -> Path:
    """A tiny DCGAN checkpoint in the acneops-gan/1 format."""
    torch.manual_seed(seed)
    G, D = Generator(z_dim=8, img_resolution=32, base_channels=8), Discriminator(img_resolution=32, base_channels=8)
    gan_ckpt.save(path, {
        "format": gan_ckpt.FORMAT, "family": "dcgan",
        "model": {"G": G.state_dict(), "D": D.state_dict(), "G_ema": G.state_dict()},
        "model_args": {"G": G.model_args, "D": D.model_args}, "step": 0, "cur_nimg": 0, "config": {},
    })
    return path


def evaluate_params(root: Path, **overrides) -> dict:
    section = {
        "restored_dir": str(root / "restored"),
        "synthetic_dir": str(root / "synthetic"),
        "extractor": "tiny",
        "n_fake": 8,
        "kid_subsets": 4,
        "kid_subset_size": 6,
        "batch": 8,
        "grid_images": 4,
        "grid_ncol": 2,
        "cache_dir": str(root / "cache"),
        "reports_dir": str(root / "reports"),
        "metrics_path": str(root / "reports" / "metrics.json"),
        "repo_root": str(root),
        **overrides,
    }
    return {"evaluate": section, "audit": {"ct_cells": 2, "ct_min_samples": 2, "max_pairs_png": 4, "png_tile": 32}}


@pytest.fixture(scope="module")
def acne(tmp_path_factory) -> dict:
    """Multi-class task: healthy/mild/severe, sorter on mild/severe that always answers 'mild'."""
    root = tmp_path_factory.mktemp("eval_acne")
    labels = ("healthy", "mild", "severe")
    make_restored(root / "restored", labels, test_counts={"healthy": 3, "mild": 2, "severe": 3})
    make_synthetic(root / "synthetic", labels)
    models = root / "models"
    clf = {"synthetic": make_classifier(models / "synthetic.pt", labels, seed=1, real_train=False, synthetic_dir="s",
                                        val_source="synthetic_holdout"),
           "real": make_classifier(models / "real.pt", labels, seed=2),
           "augmented": make_classifier(models / "augmented.pt", labels, always="severe", synthetic_dir="s")}
    sorter = make_classifier(models / "sorter.pt", ("mild", "severe"), always="mild")
    gens = {name: make_generator(models / "gan" / name / "final.pt", seed=i)
            for i, name in enumerate(("healthy", "mild", "severe", "all"))}
    for kimg in (0.25, 0.5):
        append_jsonl(models / "gan" / "mild" / "stats.jsonl", {"kimg": kimg, "loss_G": 1.0 + kimg, "loss_D": 1.2 - kimg})
    (root / "data.dvc").write_text("outs:\n- md5: 0123abcd.dir\n  path: data\n")
    params = evaluate_params(root, classifiers={k: str(v) for k, v in clf.items()}, sorter=str(sorter),
                             generators={k: str(v) for k, v in gens.items()})
    cfg = evaluate.config_from_params(params)
    result = evaluate.run(cfg)
    return {"root": root, "cfg": cfg, "params": params, "result": result, "reports": root / "reports"}


def test_metrics_json_holds_every_section_with_valid_numbers(acne):
    metrics = json.loads((acne["reports"] / "metrics.json").read_text())
    assert set(metrics) == {"classifiers", "comparisons", "sorter", "generators", "class_fidelity",
                            "class_fidelity_summary", "anonymity", "identity"}
    assert metrics["identity"] == {"applicable": False}  # colour-noise images: no face for dlib, no number
    assert set(metrics["classifiers"]) == {"synthetic", "real", "augmented"}
    for m in [*metrics["classifiers"].values(), metrics["sorter"]]:
        for key in ("accuracy", "macro_precision", "macro_recall", "macro_f1", "chance_uniform", "chance_majority"):
            assert 0.0 <= m[key] <= 1.0, key
        for key in ("accuracy", "macro_f1"):  # 95% bootstrap interval over the test images around the figure
            assert 0.0 <= m[f"{key}_ci95_low"] <= m[key] <= m[f"{key}_ci95_high"] <= 1.0, key
    # scenario differences, paired on the same resampled test images, with what can be read from them
    assert set(metrics["comparisons"]) == {"augmented_minus_real", "synthetic_minus_real"}
    for pair in metrics["comparisons"].values():
        for v in pair.values():
            assert v["ci95_low"] <= v["ci95_high"]
            assert v["distinguishable"] == (not v["ci95_low"] <= 0.0 <= v["ci95_high"])
    report = (acne["reports"] / "report.md").read_text()
    assert "95% percentile bootstrap intervals over the test images" in report
    assert "`augmented` − `real`" in report and "`synthetic` − `real`" in report
    evaluation = json.loads((acne["reports"] / "evaluation.json").read_text())
    assert "_predictions" not in json.dumps(evaluation)  # per-image predictions are never written
    assert metrics["classifiers"]["real"]["n_test"] == 8
    assert metrics["classifiers"]["real"]["chance_uniform"] == pytest.approx(1 / 3, abs=1e-5)
    assert metrics["classifiers"]["real"]["chance_majority"] == pytest.approx(3 / 8)
    assert "sensitivity" not in metrics["classifiers"]["real"]  # multi-class: no single positive class
    for name, g in metrics["generators"].items():
        assert "fid" not in g and g["fd_tiny"] >= 0.0, name  # named by its feature space, never FID
        assert g["kd_tiny_std"] >= 0.0 and g["n_fake"] == 8
        for key in ("precision_tiny", "recall_tiny", "density_tiny", "coverage_tiny"):
            assert key in g and g[key] >= 0.0
    assert metrics["generators"]["all"]["n_real"] == 12  # 'all' = the sorter's classes (mild + severe train)
    assert metrics["generators"]["healthy"]["n_real"] == 6
    for cls, a in metrics["anonymity"].items():
        assert a["n_synthetic"] == 8 and 0 <= a["flagged"] <= 8 and 0.0 <= a["flagged_rate"] <= 1.0
        assert 0.0 <= a["mia_auc_feature"] <= 1.0 and 0.0 <= a["mia_auc_pixel"] <= 1.0
        assert a["n_real_test"] == {"healthy": 3, "mild": 2, "severe": 3}[cls]


def test_forced_classifiers_give_exact_accuracy_confusion_and_fidelity(acne):
    metrics = acne["result"].nested
    assert metrics["classifiers"]["augmented"]["accuracy"] == pytest.approx(3 / 8)  # always 'severe'
    assert metrics["sorter"]["accuracy"] == pytest.approx(2 / 5)  # always 'mild' on mild(2) + severe(3)
    assert metrics["sorter"]["n_test"] == 5  # the sorter sees its acne classes only
    assert metrics["class_fidelity"]["mild"] == {"mild": 1.0, "severe": 0.0}
    assert metrics["generators"]["mild"]["class_fidelity"] == 1.0
    assert metrics["generators"]["severe"]["class_fidelity"] == 0.0
    # three draws of n_fake images from disjoint seed ranges: means with the SD between draws
    assert metrics["generators"]["mild"]["class_fidelity_sd"] == 0.0
    assert all(g["n_draws"] == 3 and g["fd_tiny_sd"] >= 0.0 for g in metrics["generators"].values())
    assert metrics["class_fidelity_summary"] == {"mean_own": 0.5, "own_is_top": 1, "generators": 2}
    assert "class_fidelity" not in metrics["generators"]["healthy"]  # the sorter has no healthy class ...
    assert set(metrics["class_fidelity"]) == {"mild", "severe", "all"}  # ... so no healthy row is forced onto acne
    cm = json.loads((acne["reports"] / "confusion" / "augmented.json").read_text())
    assert cm["labels"] == ["healthy", "mild", "severe"]
    assert cm["confusion_matrix"] == [[0, 0, 3], [0, 0, 2], [0, 0, 3]]
    rows = json.loads((acne["reports"] / "plots" / "confusion_augmented.json").read_text())
    assert len(rows) == 8 and all(r["predicted"] == "severe" for r in rows)
    for name in ("synthetic", "real", "augmented", "sorter"):
        with Image.open(acne["reports"] / "confusion" / f"{name}.png") as im:
            assert im.size[0] > 50


def test_every_seed_of_a_scenario_is_scored_and_reported_as_mean_and_sd(acne, tmp_path):
    """A classifier trained with seeds [0, 1, 2] (train_classifier's layout: seeds/<seed>/best.pt + summary.json):
    its figures are the seed means, with the SD and each seed's figures; a listed seed that is missing is an error."""
    import statistics

    labels = ("healthy", "mild", "severe")  # test split: healthy 3, mild 2, severe 3
    real = make_classifier(tmp_path / "real" / "best.pt", labels, always="healthy")
    make_classifier(tmp_path / "real" / "seeds" / "1" / "best.pt", labels, always="severe")
    make_classifier(tmp_path / "real" / "seeds" / "2" / "best.pt", labels, always="mild")
    (tmp_path / "real" / "seeds" / "summary.json").write_text(json.dumps({"seeds": [0, 1, 2]}))
    params = evaluate_params(acne["root"], classifiers={"real": str(real)}, sorter="", fidelity_judge="",
                             generators={}, synthetic_dir="", reports_dir=str(tmp_path / "reports"),
                             metrics_path=str(tmp_path / "reports" / "metrics.json"))
    m = evaluate.run(evaluate.config_from_params(params)).nested["classifiers"]["real"]
    per_seed = [3 / 8, 3 / 8, 2 / 8]
    assert m["n_seeds"] == 3 and m["accuracy"] == pytest.approx(sum(per_seed) / 3, abs=1e-5)
    assert {s: v["accuracy"] for s, v in m["per_seed"].items()} == {"0": 0.375, "1": 0.375, "2": 0.25}
    assert m["accuracy_sd"] == pytest.approx(statistics.stdev(per_seed), abs=1e-5)
    assert (m["accuracy_min"], m["accuracy_max"]) == (0.25, 0.375)
    assert m["accuracy_ci95_low"] <= m["accuracy"] <= m["accuracy_ci95_high"]
    assert m["per_class"]["healthy"]["recall"] == pytest.approx(1 / 3, abs=1e-5)  # 1, 0, 0 over the seeds
    cm = json.loads((tmp_path / "reports" / "confusion" / "real.json").read_text())
    assert cm["confusion_matrix"] == [[3, 0, 0], [2, 0, 0], [3, 0, 0]]  # the shipped (first) model's
    text = (tmp_path / "reports" / "report.md").read_text()
    assert f"| **real** | real only | 3 | {m['accuracy']:.3f} ± {m['accuracy_sd']:.3f} [" in text
    shutil.rmtree(tmp_path / "real" / "seeds" / "2")
    with pytest.raises(StageError, match="seed 2's model"):
        evaluate.run(evaluate.config_from_params(params))


def test_report_md_has_scenarios_embedded_images_and_honest_names(acne):
    reports = acne["reports"]
    text = (reports / "report.md").read_text()
    assert "| scenario | trained on | seeds | accuracy | macro-F1 |" in text
    assert "| **synthetic** | synthetic only (TSTR) |" in text and "| **augmented** | real + synthetic |" in text
    assert "Chance level" in text and "0.333" in text
    assert "`0123abcd.dir`" in text  # data.dvc md5
    assert "Severity sorter" in text and "0.400" in text
    assert "Own class is the most frequent assignment for 1 of 2 per-class generators" in text
    assert "fd_tiny" in text and "FID" not in text.replace("not FID", "")
    for cls in ("healthy", "mild", "severe"):
        assert f"![{cls} synthetic samples](grids/{cls}.png)" in text
        assert (reports / "grids" / f"{cls}.png").is_file()
        assert (reports / "audit_evaluate" / f"{cls}.json").is_file()
        assert (reports / "audit_evaluate" / f"{cls}.png").is_file()
    assert "![training curves of mild](gan_curves/mild.png)" in text and (reports / "gan_curves" / "mild.png").is_file()
    assert "no training log at" in text  # the other generators have no stats.jsonl: said, not hidden
    assert "![confusion matrix of real](confusion/real.png)" in text


def test_dvc_reads_the_metrics_and_plots_files(acne, tmp_path):
    """The real DVC (in a temp repo) reads metrics.json, the confusion rows and the GAN curve JSON."""
    assert json.loads((acne["reports"] / "plots" / "gan_mild.json").read_text()) == read_jsonl(
        acne["root"] / "models" / "gan" / "mild" / "stats.jsonl")
    repo = tmp_path / "repo"
    shutil.copytree(acne["reports"], repo / "reports")
    dvc = str(Path(sys.executable).parent / "dvc")
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"]):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
    (repo / "dvc.yaml").write_text(
        "metrics:\n  - reports/metrics.json\n"
        "plots:\n  - reports/plots/confusion_augmented.json:\n      template: confusion\n      x: actual\n"
        "      y: predicted\n  - gan_losses:\n      x: kimg\n      y:\n        reports/plots/gan_mild.json: [loss_G, loss_D]\n")
    shown = json.loads(subprocess.run([dvc, "metrics", "show", "--json"], cwd=repo, check=True, capture_output=True,
                                      text=True).stdout)
    data = next(iter(shown.values()))["data"]["reports/metrics.json"]["data"]  # one revision: the workspace
    assert data["classifiers"]["augmented"]["accuracy"] == pytest.approx(0.375)
    plots = json.loads(subprocess.run([dvc, "plots", "show", "--json"], cwd=repo, check=True, capture_output=True,
                                      text=True).stdout)
    assert not plots.get("errors")
    confusion = plots["data"]["reports/plots/confusion_augmented.json"][0]["content"]["data"]["values"]
    assert len(confusion) == 8
    assert len(plots["data"]["gan_losses"][0]["content"]["data"]["values"]) == 4  # 2 ticks x 2 columns


def test_metrics_json_is_deterministic(acne):
    before = (acne["reports"] / "metrics.json").read_bytes()
    result = evaluate.run(acne["cfg"])
    assert (acne["reports"] / "metrics.json").read_bytes() == before
    flat = result.metrics()
    assert flat["classifiers.augmented.accuracy"] == pytest.approx(0.375)
    assert all(isinstance(v, float) for v in flat.values())
    assert "evaluate:" in result.summary()
    artifacts = result.artifacts()
    assert acne["reports"] / "metrics.json" in artifacts and acne["reports"] / "report.md" in artifacts
    assert acne["reports"] / "grids" / "mild.png" in artifacts and acne["reports"] / "confusion" / "sorter.png" in artifacts
    assert all(p.is_file() for p in artifacts)


def test_only_evaluate_reads_the_test_split(tmp_path, monkeypatch, acne):
    log = tmp_path / "access.jsonl"
    monkeypatch.setenv("ACNEOPS_ACCESS_LOG", str(log))
    cfg = evaluate.config_from_params(evaluate_params(acne["root"], **{
        **acne["params"]["evaluate"], "generators": {}, "synthetic_dir": "", "reports_dir": str(tmp_path / "r"),
        "metrics_path": str(tmp_path / "r" / "metrics.json")}))
    evaluate.run(cfg)
    reads = read_jsonl(log)
    assert {r["role"] for r in reads} == {"evaluate"}
    assert any(r["split"] == "test" for r in reads)
    text = (tmp_path / "r" / "report.md").read_text()
    assert "nothing was audited" in text  # no synthetic set configured: the report says so


def test_stage_runner_logs_metrics_and_report_to_mlflow(acne, tmp_path, monkeypatch):
    """`acneops run evaluate` path: the real MLflow store (sqlite in a temp dir) gets the numbers and the report."""
    import yaml
    from mlflow import MlflowClient

    from acneops.stages import run_stage

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("ACNEOPS_PARENT_RUN_ID", raising=False)
    section = {**acne["params"]["evaluate"], "generators": {}, "synthetic_dir": "", "reports_dir": str(tmp_path / "r"),
               "metrics_path": str(tmp_path / "r" / "metrics.json")}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**acne["params"], "evaluate": section}))
    run_stage("evaluate", None, tmp_path / "params.yaml")
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("acneops").experiment_id])
    assert run.data.metrics["classifiers.augmented.accuracy"] == pytest.approx(0.375)
    assert run.data.metrics["sorter.accuracy"] == pytest.approx(0.4)
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.md", "metrics.json", "evaluation.json"} <= logged


def test_binary_task_reports_sensitivity_and_specificity(tmp_path):
    labels = ("mask", "no_mask")
    make_restored(tmp_path / "restored", labels)
    make_synthetic(tmp_path / "synthetic", labels)
    clf = {"real": make_classifier(tmp_path / "real.pt", labels, always="mask"),
           "augmented": make_classifier(tmp_path / "aug.pt", labels, always="no_mask", synthetic_dir="s")}
    gens = {c: make_generator(tmp_path / "gan" / c / "final.pt", seed=i) for i, c in enumerate(labels)}
    params = evaluate_params(tmp_path, classifiers={k: str(v) for k, v in clf.items()}, sorter="",
                             generators={k: str(v) for k, v in gens.items()}, positive="mask", fidelity_judge="real")
    result = evaluate.run(evaluate.config_from_params(params))
    real, aug = result.nested["classifiers"]["real"], result.nested["classifiers"]["augmented"]
    assert (real["sensitivity"], real["specificity"]) == (1.0, 0.0)  # always 'mask'
    assert (aug["sensitivity"], aug["specificity"]) == (0.0, 1.0)  # always 'no_mask'
    assert result.nested["generators"]["mask"]["class_fidelity"] == 1.0  # judged by the 'real' classifier
    assert "sorter" not in result.nested
    text = result.report_path.read_text()
    assert "| sensitivity | specificity |" in text and "positive class `mask`" in text


def test_missing_classifier_checkpoint_is_a_clear_error(acne, tmp_path):
    section = dict(acne["params"]["evaluate"])
    section["classifiers"] = {**section["classifiers"], "augmented": str(tmp_path / "nope" / "best.pt")}
    section["reports_dir"] = str(tmp_path / "r")
    cfg = evaluate.config_from_params({**acne["params"], "evaluate": section})
    with pytest.raises(StageError, match=r"evaluate\.classifiers\.augmented\].*nope/best\.pt not found"):
        evaluate.run(cfg)
    assert not (tmp_path / "r").exists()  # checked before any output is written


def test_bad_params_are_rejected(acne):
    params = acne["params"]
    with pytest.raises(ConfigError, match="unknown key"):
        evaluate.config_from_params({**params, "evaluate": {**params["evaluate"], "n_fakes": 3}})
    with pytest.raises(ConfigError, match="fidelity_judge"):
        evaluate.config_from_params({**params, "evaluate": {**params["evaluate"], "fidelity_judge": "oracle"}})
    with pytest.raises(ConfigError, match="section 'audit' is missing"):
        evaluate.config_from_params({"evaluate": params["evaluate"]})
    with pytest.raises(ConfigError, match=r"evaluate\]\.bootstrap: must be >= 0 \(0 = no intervals\), got -1"):
        evaluate.config_from_params({**params, "evaluate": {**params["evaluate"], "bootstrap": -1}})
    with pytest.raises(ConfigError, match=r"generation_draws: must be >= 1, got 0"):
        evaluate.config_from_params({**params, "evaluate": {**params["evaluate"], "generation_draws": 0}})
    with pytest.raises(ConfigError, match=r"comparisons: a list of \[a, b\] scenario pairs"):
        evaluate.config_from_params({**params, "evaluate": {**params["evaluate"], "comparisons": [["real", "real"]]}})


def test_generator_not_named_after_a_class_needs_its_labels(acne, tmp_path):
    section = {**acne["params"]["evaluate"], "generators": {"moderate": acne["params"]["evaluate"]["generators"]["mild"]},
               "reports_dir": str(tmp_path / "r"), "synthetic_dir": "", "classifiers": {},
               "fidelity_judge": "", "sorter": ""}
    with pytest.raises(StageError, match=r"generators\.moderate.*generator_labels\.moderate"):
        evaluate.run(evaluate.config_from_params({**acne["params"], "evaluate": section}))


def test_progress_bars_name_the_stage_and_the_generator_or_classifier(acne, tmp_path, monkeypatch, capsys):
    """stderr shows each loop evaluate waits on: test-split predictions, generation, features, fidelity, audit."""
    monkeypatch.setenv("TQDM_DELAY", "0")  # bars off a terminal show only slow loops; show these short ones
    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    section = {**acne["params"]["evaluate"], "reports_dir": str(tmp_path / "r"), "cache_dir": str(tmp_path / "cache"),
               "metrics_path": str(tmp_path / "r" / "metrics.json")}  # a fresh cache: real features are extracted
    evaluate.run(evaluate.config_from_params({**acne["params"], "evaluate": section}))
    err = capsys.readouterr().err
    for bar in ("evaluate real: predict real test", "evaluate mild: generate", "evaluate mild: features (synthetic)",
                "evaluate mild: features (real train", "evaluate mild: class fidelity",
                "audit evaluate_mild: features (real test)"):
        assert bar in err, bar


def test_a_synthetic_only_classifier_selected_on_real_images_is_named_so():
    """Pure TSTR is the synthetic-only run selected on a synthetic hold-out; one whose best epoch was picked on the
    real val split used real information and is reported under its own name (issue 12)."""
    from acneops.evaluation.scoring import trained_on

    base = {"real_train": False, "synthetic_dir": "datasets/synthetic"}
    assert trained_on({**base, "val_source": "synthetic_holdout"}) == "synthetic only (TSTR)"
    assert trained_on({**base, "val_source": "real_val"}) == "synthetic only, selected on real val"
    assert trained_on({**base, "real_train": True}) == "real + synthetic"


def test_a_class_conditional_generator_is_measured_per_class(acne, tmp_path):
    """One conditional StyleGAN2 named for each class in evaluate.generators: each entry generates its own class;
    an entry named after a class the generator does not have is a clear error."""
    from acneops.gan.stylegan2 import Discriminator as SGD
    from acneops.gan.stylegan2 import Generator as SGG

    labels = ["healthy", "mild", "severe"]
    torch.manual_seed(0)
    g_args = dict(z_dim=16, w_dim=16, mapping_layers=2, img_resolution=32, channel_base=256, channel_max=32,
                  c_dim=3, labels=labels)
    d_args = dict(img_resolution=32, channel_base=256, channel_max=32, c_dim=3, mapping_layers=2)
    G, D = SGG(**g_args), SGD(**d_args)
    path = tmp_path / "cond" / "final.pt"
    gan_ckpt.save(path, {"format": gan_ckpt.FORMAT, "family": "stylegan2",
                         "model": {"G": G.state_dict(), "D": D.state_dict(), "G_ema": G.state_dict()},
                         "model_args": {"G": g_args, "D": d_args}, "step": 0, "cur_nimg": 0, "config": {}})
    params = evaluate_params(acne["root"], classifiers={"real": str(acne["cfg"].classifiers["real"])}, sorter="",
                             fidelity_judge="", synthetic_dir="", generation_draws=1,
                             generators={"mild": str(path), "severe": str(path)},
                             reports_dir=str(tmp_path / "reports"), metrics_path=str(tmp_path / "reports" / "m.json"))
    gens = evaluate.run(evaluate.config_from_params(params)).nested["generators"]
    assert gens["mild"]["n_real"] == 6 and gens["severe"]["n_real"] == 6
    assert gens["mild"]["fd_tiny"] != gens["severe"]["fd_tiny"]
    params["evaluate"]["generators"] = {"all": str(path)}
    with pytest.raises(StageError, match="class-conditional generator of"):
        evaluate.run(evaluate.config_from_params(params))
