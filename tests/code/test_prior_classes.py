"""A class missing from the data (ACNE04 has no healthy faces): a clear error unless ``ingest.prior_classes`` says the
base generator supplies it; then ingest records it as prior-only, the classifiers report it instead of crashing, the
class filter keeps acne-looking faces out of it and evaluate scores only the classes of the real test split."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from acneops.cli import app
from acneops.core.config import ConfigError
from acneops.core.errors import StageError
from acneops.core.io import read_json
from acneops.data import ingest as ingest_lib
from acneops.stages import ingest

CLASSES = ("healthy", "mild", "moderate", "severe")


def smooth(seed: int, size: int = 48) -> Image.Image:
    grid = (np.random.default_rng(seed).random((4, 4, 3)) * 255).astype(np.uint8)
    return Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC)


def write_data(data: Path, classes: tuple[str, ...], per_class: int = 6) -> Path:
    """data/images/<class>_<i>.png + labels.csv for ``classes`` only."""
    (data / "images").mkdir(parents=True, exist_ok=True)
    with open(data / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "label", "lesions", "source", "split"])
        for c, label in enumerate(classes):
            for i in range(per_class):
                smooth(1000 * CLASSES.index(label) + i).save(data / f"images/{label}_{i}.png")
                writer.writerow([f"images/{label}_{i}.png", label, "", "acne04", ""])
    return data


def ingest_cfg(tmp_path: Path, **kw) -> ingest_lib.IngestConfig:
    values = dict(data_dir=tmp_path / "data", out_dir=tmp_path / "out", report_path=tmp_path / "reports/ingest.json",
                  classes=CLASSES, min_size=16, workers=1)
    return ingest_lib.IngestConfig(**{**values, **kw})


def test_a_class_without_images_is_an_error_naming_it_and_the_fix(tmp_path):
    write_data(tmp_path / "data", ("mild", "moderate", "severe"))
    with pytest.raises(StageError) as err:
        ingest.run(ingest_cfg(tmp_path))
    msg = str(err.value)
    assert "class(es) ['healthy'] of ingest.classes have no usable image" in msg
    assert "add images of it, or list it in ingest.prior_classes to draw it from the base generator" in msg
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_a_prior_class_passes_and_is_recorded_as_prior_only(tmp_path):
    write_data(tmp_path / "data", ("mild", "moderate", "severe"))
    result = ingest.run(ingest_cfg(tmp_path, prior_classes=("healthy",)))
    contract = read_json(tmp_path / "out" / "contract.json")
    assert contract["classes"] == list(CLASSES) and contract["prior_classes"] == ["healthy"]
    assert "base generator" in contract["prior_classes_note"]
    report = read_json(tmp_path / "reports" / "ingest.json")
    assert report["prior_classes"] == ["healthy"]
    assert all(report["splits"][s]["healthy"] == 0 for s in ("train", "val", "test"))
    assert "prior-only classes (no real image; the base generator supplies them): ['healthy']" in result.summary()


def test_without_prior_classes_the_outputs_keep_their_old_keys(tmp_path):
    """A dataset with every class writes no prior key: contract and report bytes are those of before the key."""
    write_data(tmp_path / "data", CLASSES)
    ingest.run(ingest_cfg(tmp_path))
    assert set(read_json(tmp_path / "out" / "contract.json")) == {
        "test_split", "test_readers", "test_forbidden_roles", "test_sha256", "test_images", "manifest_sha256",
        "classes", "counts", "max_pixels", "seed", "note"}
    assert "prior_classes" not in read_json(tmp_path / "reports" / "ingest.json")


def test_a_prior_class_that_has_images_is_an_error(tmp_path):
    write_data(tmp_path / "data", CLASSES)
    with pytest.raises(StageError, match=r"ingest.prior_classes lists \['healthy'\] but the data has usable images "
                                         r"of it \{'healthy': 6\}.*remove it from ingest.prior_classes"):
        ingest.run(ingest_cfg(tmp_path, prior_classes=("healthy",)))


@pytest.mark.parametrize("prior, message", [
    (("glowing",), r"ingest.prior_classes: \['glowing'\] not in ingest.classes"),
    (CLASSES, r"lists every class; the data must supply one"),
])
def test_bad_prior_classes_are_config_errors(tmp_path, prior, message):
    with pytest.raises(ConfigError, match=message):
        ingest_cfg(tmp_path, prior_classes=prior)


def test_acneops_run_ingest_with_prior_classes_from_params(tmp_path):
    write_data(tmp_path / "data", ("mild", "moderate", "severe"))
    cfg = ingest_cfg(tmp_path)
    params = {"ingest": {"data_dir": str(cfg.data_dir), "out_dir": str(cfg.out_dir),
                         "report_path": str(cfg.report_path), "classes": list(CLASSES), "min_size": 16, "workers": 1}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    bad = CliRunner().invoke(app, ["run", "ingest", "--params", str(tmp_path / "params.yaml")])
    assert bad.exit_code == 1 and "ingest.prior_classes" in bad.output and "Traceback" not in bad.output
    params["ingest"]["prior_classes"] = ["healthy"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    ok = CliRunner().invoke(app, ["run", "ingest", "--params", str(tmp_path / "params.yaml")])
    assert ok.exit_code == 0, ok.output
    assert "prior-only classes" in ok.output


# ---------------------------------------------------------------------------------------------------------------------
# classifiers: a prior-only class has no real image; `real` keeps it untrained and says so, `augmented` learns it from
# synthetic images


def test_classifiers_with_a_prior_only_class_report_it_instead_of_crashing(tmp_path, monkeypatch):
    from test_train_classifier import _write_folder, make_restored, params_for

    from acneops.classify.backbones import load_classifier
    from acneops.stages import train_classifier

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    data = {"restored": make_restored(tmp_path / "restored", labels=("mild", "moderate", "severe")),
            "synthetic": tmp_path / "synthetic"}
    _write_folder(data["synthetic"], {k: 4 for k in CLASSES}, seed=3)
    params = params_for(data, tmp_path / "models", epochs=1)
    with pytest.raises(StageError, match=r"no images of class\(es\) \['healthy'\].*ingest.prior_classes"):
        train_classifier.run(train_classifier.config_from_params(params, "real"))

    params["ingest"] = {"prior_classes": ["healthy"]}
    real = train_classifier.run(train_classifier.config_from_params(params, "real"))
    assert real.notes == ("healthy: 0 real train images (prior-only: ingest.prior_classes), 0 synthetic; the class "
                          "stays in the output layer but this model never saw an example of it; no real validation "
                          "image either: its validation F1 is 0 and the macro figures average it in",)
    assert real.notes[0] in real.summary()
    assert read_json(real.out_dir / "seeds" / "summary.json")["prior_only"] == list(real.notes)
    _, args = load_classifier(real.out_dir / "best.pt")
    assert args["labels"] == list(CLASSES) and args["num_classes"] == 4  # the label stays in the output layer

    augmented = train_classifier.run(train_classifier.config_from_params(params, "augmented"))
    assert augmented.notes[0].startswith("healthy: 0 real train images (prior-only: ingest.prior_classes), "
                                         "3 synthetic;")
    assert augmented.counts["train_synthetic"] == 12

    params["train_classifier"]["runs"]["real"]["prior_classes"] = ["healthy"]
    with pytest.raises(ConfigError, match=r"set once, in ingest.prior_classes"):
        train_classifier.config_from_params(params, "real")


# ---------------------------------------------------------------------------------------------------------------------
# synthesize: the class filter's rule for a prior class


SORTER_LABELS = ("mild", "moderate", "severe")


def fixed_judge(path: Path, probs: tuple[float, ...], labels: tuple[str, ...] = SORTER_LABELS) -> Path:
    """A resnet18 classifier checkpoint whose answer is ``probs`` for every image (zero weights, log-prob biases)."""
    import torch

    from acneops.classify.backbones import create_classifier, model_args_for, save_checkpoint

    torch.manual_seed(0)
    model = create_classifier("resnet18", len(labels), img_size=32)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.log(torch.tensor(probs)))
    save_checkpoint(path, model, model_args_for("resnet18", len(labels), 32, list(labels)), epoch=1, config={})
    return path


def test_the_prior_rule_rejects_what_the_sorter_grades_above_mild(tmp_path):
    from acneops.classify.backbones import load_classifier
    from acneops.synthetic.class_filter import filter_rule, wrong_class

    images = np.zeros((3, 32, 32, 3), dtype=np.uint8)
    for probs, expect in (((0.7, 0.2, 0.1), False), ((0.5, 0.3, 0.2), False),  # P(moderate + severe) 0.3, 0.5
                          ((0.4, 0.35, 0.25), True), ((0.02, 0.08, 0.9), True)):  # 0.6, 0.98: acne-looking
        judge = load_classifier(fixed_judge(tmp_path / f"{probs}.pt", probs))
        assert wrong_class(judge, "healthy", images, prior_max=0.5).tolist() == [expect] * 3, probs
        assert not wrong_class(judge, "healthy", images).any()  # not a prior class: not filtered, as before
        assert not wrong_class(judge, "healthy", images, prior_max=1.0).any()  # 1 = never reject
    judge = load_classifier(fixed_judge(tmp_path / "mild.pt", (0.7, 0.2, 0.1)))
    assert wrong_class(judge, "moderate", images, prior_max=0.5).all()  # a known class keeps its own-class rule
    assert not wrong_class(judge, "mild", images, prior_max=0.5).any()
    assert not wrong_class(None, "healthy", images, prior_max=0.5).any()
    assert filter_rule(judge, "healthy", prior_max=0.5).startswith(
        "prior class: rejected when P(moderate + severe) > 0.5, the filter's grades above its mildest 'mild'")
    assert filter_rule(judge, "healthy").startswith("none: the filter does not know 'healthy'")
    assert filter_rule(None, "healthy", prior_max=0.5).startswith("none: synthesize.class_filter is ''")


def _synthesize(root: Path, tag: str, prior: list[str], judge: Path, **overrides):
    from test_synthesize import make_params

    from acneops.stages import synthesize

    params = make_params(root, class_filter=str(judge), class_filter_margin=1.0, **overrides)
    params["synthesize"].update(out_dir=str(root / tag / "synthetic"),
                                report_path=str(root / tag / "reports" / "synthesize.json"))
    params["ingest"] = {"prior_classes": prior}
    return synthesize.run(synthesize.config_from_params(params)), root / tag / "reports" / "synthesize.json"


def test_synthesize_filters_a_prior_class_with_the_sorter_and_reports_the_rejections(tmp_path):
    """healthy from a generator, the sorter saying P(moderate + severe) = 0.3 for every face: kept at
    prior_filter_max 0.5, every candidate rejected at 0.25 (the stage fails: nothing is exported as healthy)."""
    from test_synthesize import write_generator, write_restored

    write_restored(tmp_path)
    for k, cls in enumerate(("healthy", "mild")):
        write_generator(tmp_path / "models" / cls / "final.pt", torch_seed=10 + k)
    judge = fixed_judge(tmp_path / "sorter.pt", (0.7, 0.2, 0.1))

    kept, report_path = _synthesize(tmp_path, "kept", ["healthy"], judge)
    healthy = read_json(report_path)["classes"]["healthy"]
    assert healthy["exported"] == 5 and healthy["rejected_class_filter"] == 0
    assert healthy["class_filter_rule"].startswith("prior class: rejected when P(moderate + severe) > 0.5")
    assert "class_filter_rule" not in read_json(report_path)["classes"]["mild"]

    with pytest.raises(StageError, match=r"too few images passed the anonymity audit and the class filter.*healthy: "
                                         r"\d+ of \d+ candidates rejected by the class filter's prior rule "
                                         r"\(P\(grades above the mildest\) > 0.25\).*synthesize.prior_filter_max"):
        _synthesize(tmp_path, "strict", ["healthy"], judge, prior_filter_max=0.25)
    failed = read_json(tmp_path / "strict" / "reports" / "synthesize.json")
    healthy = failed["classes"]["healthy"]
    assert healthy["exported"] == 0 and healthy["rejected_class_filter"] == healthy["generated"] - healthy["flagged"]
    assert failed["classes"]["mild"]["shortfall"] == 0

    _, report_path = _synthesize(tmp_path, "default", [], judge, prior_filter_max=0.25)  # no prior class: as before
    assert read_json(report_path)["classes"]["healthy"]["rejected_class_filter"] == 0
    assert "class_filter_rule" not in read_json(report_path)["classes"]["healthy"]


# ---------------------------------------------------------------------------------------------------------------------
# evaluate: per-class figures only for the classes of the real test split, and why the others are left out


def test_evaluate_scores_only_classes_present_in_the_real_test_split_and_says_why(tmp_path):
    from test_evaluate import evaluate_params, make_classifier, make_generator, make_restored, make_synthetic

    from acneops.stages import evaluate

    labels = ("healthy", "mild", "severe")
    make_restored(tmp_path / "restored", ("mild", "severe"), test_counts={"mild": 2, "severe": 3})
    make_synthetic(tmp_path / "synthetic", labels)
    models = tmp_path / "models"
    clf = {"real": make_classifier(models / "real.pt", labels, always="mild"),  # the healthy output never trained
           "augmented": make_classifier(models / "augmented.pt", labels, always="healthy", synthetic_dir="s")}
    gens = {name: make_generator(models / "gan" / name / "final.pt", seed=i)
            for i, name in enumerate(("healthy", "mild", "severe"))}
    params = evaluate_params(tmp_path, classifiers={k: str(v) for k, v in clf.items()},
                             sorter=str(make_classifier(models / "sorter.pt", ("mild", "severe"), always="mild")),
                             generators={k: str(v) for k, v in gens.items()}, bootstrap=200)
    with pytest.raises(StageError, match=r"generators.healthy\]: 'healthy' is not a class of the real train split"):
        evaluate.run(evaluate.config_from_params(params))  # not a prior class: a generator of no real class
    params["ingest"] = {"prior_classes": ["healthy"]}
    result = evaluate.run(evaluate.config_from_params(params))

    why = ("no image in the real test split (prior-only class: ingest.prior_classes; the base generator supplies it, "
           "the data has none)")
    real, augmented = result.details["classifiers"]["real"]["report"], result.nested["classifiers"]["augmented"]
    assert real["left_out"] == {"healthy": why} and real["labels"] == list(labels)
    m = result.nested["classifiers"]["real"]
    assert set(m["per_class"]) == {"mild", "severe"}
    mild_f1 = 2 * 0.4 / 1.4  # always 'mild' on 2 mild + 3 severe: precision 0.4, recall 1
    assert m["accuracy"] == pytest.approx(0.4) and m["macro_f1"] == pytest.approx(mild_f1 / 2, abs=1e-5)
    assert m["macro_f1_ci95_low"] <= m["macro_f1"] <= m["macro_f1_ci95_high"] + 1e-9  # the interval's average too
    assert augmented["accuracy"] == 0.0 and set(augmented["per_class"]) == {"mild", "severe"}
    pair = result.nested["comparisons"]["augmented_minus_real"]["macro_f1"]  # bootstrap: the same macro average
    assert pair["difference"] == pytest.approx(augmented["macro_f1"] - m["macro_f1"], abs=1e-5)
    report_md = result.report_path.read_text()
    assert f"left out: `healthy` ({why})" in report_md

    healthy_gen = result.details["generators"]["healthy"]
    assert healthy_gen["real_labels"] == ["mild", "severe"]  # a prior class is compared with every real face
    assert result.nested["anonymity"]["healthy"]["n_real_train"] == 12  # audited against every real train face
    assert result.nested["anonymity"]["mild"]["n_real_train"] == 6


@pytest.mark.parametrize("value", [1.5, -0.1])
def test_acneops_run_synthesize_refuses_a_prior_filter_max_outside_0_1(tmp_path, monkeypatch, value):
    """A probability outside [0, 1] is a clear error from `acneops run synthesize` before anything is generated."""
    params = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    params["synthesize"]["prior_filter_max"] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "synthesize"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # an error line, no traceback
    assert f"error: params.yaml [synthesize].prior_filter_max must be in [0, 1], got {value}" in result.output
    assert not (tmp_path / "datasets").exists() and not (tmp_path / "reports").exists()
