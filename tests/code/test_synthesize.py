"""The `synthesize` stage on tiny real fixtures: a restored split on disk (PNG + manifests), tiny StyleGAN2
checkpoints saved in the acneops format, the 'tiny' feature extractor. Checks the files and manifest,
seeds, determinism, seed/count isolation, the test-split guard, the exact-copy guard and bad config."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from acneops.core.config import ConfigError
from acneops.core.errors import AcneopsError, StageError
from acneops.core.io import read_csv, read_jsonl, sha256_file
from acneops.data.access import ACCESS_LOG_ENV
from acneops.gan import checkpoint
from acneops.stages import synthesize
from acneops.synthetic import export as synthesize_lib

RES = 32  # px
CLASSES = ("healthy", "mild")
RESTORED_FIELDS = ["file", "label", "lesions", "source", "split", "restorer", "orig_sha256"]


def smooth_images(n: int, seed: int, size: int = RES) -> np.ndarray:
    """n distinct smooth colour images (N, size, size, 3) uint8: bicubic-upsampled 4x4 noise."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(s).resize((size, size), Image.BICUBIC)) for s in small])


def write_restored(root: Path, n_train: int = 8) -> Path:
    """datasets/restored/<split>/{images/*.png, manifest.csv}; the test manifest points to missing files."""
    restored = root / "datasets" / "restored"
    for split, n, seed in (("train", n_train, 1), ("val", 2, 2), ("test", 3, 3)):
        rows = []
        (restored / split).mkdir(parents=True, exist_ok=True)
        for k, label in enumerate(CLASSES):
            for i, img in enumerate(smooth_images(n, seed * 100 + k)):
                file = f"images/{label}_{i:03d}.png"
                if split != "test":  # the frozen test split: listed, never present, never read
                    (restored / split / "images").mkdir(parents=True, exist_ok=True)
                    Image.fromarray(img).save(restored / split / file)
                rows.append({"file": file, "label": label, "lesions": "", "source": "fixture", "split": split,
                             "restorer": "lanczos", "orig_sha256": "0" * 64})
        with open(restored / split / "manifest.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=RESTORED_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    return restored


def write_generator(path: Path, torch_seed: int, family: str = "stylegan2", labels: tuple[str, ...] = ()) -> Path:
    """A tiny randomly initialised generator saved as an acneops GAN checkpoint (what train_gan writes); with
    ``labels``, a class-conditional StyleGAN2 over those classes."""
    torch.manual_seed(torch_seed)
    if family == "stylegan2":
        arch = dict(img_resolution=RES, channel_base=256, channel_max=32)
        G_args = dict(z_dim=16, w_dim=16, mapping_layers=2, **arch)
        D_args = arch
        if labels:
            G_args = {**G_args, "c_dim": len(labels), "labels": list(labels)}
            D_args = {**D_args, "c_dim": len(labels), "mapping_layers": 2}
    else:
        G_args = dict(z_dim=16, img_resolution=RES, base_channels=8)
        D_args = dict(img_resolution=RES, base_channels=8)
    G_cls, D_cls = checkpoint.family_models(family)
    G, D = G_cls(**G_args), D_cls(**D_args)
    checkpoint.save(path, {"format": checkpoint.FORMAT, "family": family,
                           "model": {"G": G.state_dict(), "D": D.state_dict(), "G_ema": G.state_dict()},
                           "model_args": {"G": G_args, "D": D_args}, "step": 0, "cur_nimg": 0, "config": {}})
    return path


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_restored(root)
    for k, cls in enumerate(CLASSES):
        write_generator(root / "models" / cls / "final.pt", torch_seed=10 + k)
    return root


def make_params(root: Path, **overrides: object) -> dict:
    section = {
        "out_dir": str(root / "out" / "synthetic"),
        "report_path": str(root / "out" / "reports" / "synthesize.json"),
        "restored_dir": str(root / "datasets" / "restored"),
        "generators": {cls: str(root / "models" / cls / "final.pt") for cls in CLASSES},
        "counts": {"healthy": 5, "mild": 4},
        "psi": 0.8, "seed": 3, "batch": 4, "audit_extractor": "tiny", "audit_checkpoint": None, "max_rounds": 2,
        "class_filter": "",
    }
    section.update(overrides)
    return {"synthesize": section, "audit": {"ct_cells": 2}}


def run_with(root: Path, tag: str, **overrides: object) -> tuple[synthesize.SynthesizeResult, Path]:
    params = make_params(root, **overrides)
    params["synthesize"]["out_dir"] = str(root / tag / "synthetic")
    params["synthesize"]["report_path"] = str(root / tag / "reports" / "synthesize.json")
    return synthesize.run(synthesize.config_from_params(params)), root / tag / "synthetic"


def file_hashes(out_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(out_dir)): sha256_file(p) for p in sorted(out_dir.rglob("*.png"))}


@pytest.fixture(scope="module")
def first_run(fixture_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    log = tmp_path_factory.mktemp("log") / "access.jsonl"
    mp = pytest.MonkeyPatch()
    mp.setenv(ACCESS_LOG_ENV, str(log))
    try:
        result, out_dir = run_with(fixture_root, "a")
    finally:
        mp.undo()
    return result, out_dir, log


def test_files_manifest_counts_and_seeds(first_run: tuple) -> None:
    result, out_dir, _ = first_run
    rows = read_csv(out_dir / "manifest.csv")
    assert list(rows[0]) == synthesize_lib.MANIFEST_FIELDS
    assert {c: sum(r["label"] == c for r in rows) for c in CLASSES} == {"healthy": 5, "mild": 4}
    assert result.shortfall == {}
    on_disk = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*.png"))
    assert sorted(r["file"] for r in rows) == on_disk
    for r in rows:
        seed = int(r["seed"])
        k = CLASSES.index(r["label"])
        assert r["file"] == f"{r['label']}/{r['label']}_seed{seed}.png"
        assert seed // synthesize_lib.SEED_STRIDE == 3 and seed % synthesize_lib.SEED_STRIDE // synthesize_lib.CLASS_STRIDE == k
        assert float(r["psi"]) == 0.8 and r["audit"] == "pass"
        assert r["generator_sha256"] == sha256_file(r["generator"])
        assert float(r["nn_feature_dist"]) > 0 and float(r["nn_pixel_dist"]) > 0
        with Image.open(out_dir / r["file"]) as im:
            assert im.size == (RES, RES) and im.mode == "RGB" and not im.info  # metadata-free PNG
    report = json.loads(result.report_path.read_text())
    assert report["status"] == "ok" and report["exported"] == 9
    for cls in CLASSES:
        entry = report["classes"][cls]
        assert entry["exported"] == entry["requested"] and entry["shortfall"] == 0
        assert entry["generated"] == entry["requested"] + entry["seeds"]["topup_generated"]
        audit_json = result.report_path.parent / "audit_synthesize" / f"{cls}.json"
        assert json.loads(audit_json.read_text())["counts"]["real_train"] == 16  # every class's train images
        assert audit_json.with_suffix(".png").is_file()
    metrics = result.metrics()
    assert metrics["total/exported"] == 9.0 and all(isinstance(v, float) for v in metrics.values())


def test_test_split_is_never_read(first_run: tuple) -> None:
    _, _, log = first_run
    entries = read_jsonl(log)
    assert entries and {(e["role"], e["split"]) for e in entries} == {("synthesize", "train")}
    assert not any("/test/" in f for e in entries for f in e["files"])


def test_same_params_same_files(fixture_root: Path, first_run: tuple) -> None:
    _, out_a, _ = first_run
    _, out_b = run_with(fixture_root, "b")
    assert file_hashes(out_a) == file_hashes(out_b)
    assert (out_a / "manifest.csv").read_bytes() == (out_b / "manifest.csv").read_bytes()


def test_changing_seed_changes_every_image(fixture_root: Path, first_run: tuple) -> None:
    _, out_a, _ = first_run
    _, out_c = run_with(fixture_root, "c", seed=4)
    a, c = file_hashes(out_a), file_hashes(out_c)
    assert len(c) == len(a) == 9
    assert not set(a) & set(c) and not set(a.values()) & set(c.values())


def test_changing_one_count_changes_only_that_class(fixture_root: Path, first_run: tuple) -> None:
    _, out_a, _ = first_run
    _, out_d = run_with(fixture_root, "d", counts={"healthy": 5, "mild": 6})
    a, d = file_hashes(out_a), file_hashes(out_d)
    assert {f: h for f, h in a.items() if f.startswith("healthy/")} == \
        {f: h for f, h in d.items() if f.startswith("healthy/")}
    mild_a = {f: h for f, h in a.items() if f.startswith("mild/")}
    assert len(mild_a) == 4 and all(d.get(f) == h for f, h in mild_a.items())  # first seeds kept
    assert sum(f.startswith("mild/") for f in d) == 6


def test_no_output_equals_a_real_train_image(first_run: tuple, fixture_root: Path) -> None:
    _, out_dir, _ = first_run
    real = [np.asarray(Image.open(p).convert("RGB")) for p in (fixture_root / "datasets/restored/train").rglob("*.png")]
    for p in out_dir.rglob("*.png"):
        img = np.asarray(Image.open(p).convert("RGB"))
        assert not any(np.array_equal(img, r) for r in real)


def test_exact_copies_are_dropped_even_with_the_audit_disabled(fixture_root: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The exact-pixel guard does not depend on the audit thresholds: plant one verbatim real image."""
    from acneops.gan import sampling as gen

    real = synthesize_lib.load_real_train(fixture_root / "datasets" / "restored")
    honest = gen.generate
    planted_seed = synthesize_lib.class_seeds(3, 0, 1, 1)[0]

    def generate(path, seeds, psi=1.0, batch=32, **kw):  # noqa: ANN001, ANN202
        images = honest(path, seeds, psi=psi, batch=batch, **kw)
        for i, s in enumerate(seeds):
            if s == planted_seed:
                images[i] = real.images[5][:, ::-1]  # a mirrored real image, bit for bit
        return images

    def no_flags(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        result = real_audit_copies(*args, **kwargs)
        return dataclasses.replace(result, flags=np.zeros_like(result.flags))

    from acneops import audit as audit_mod
    real_audit_copies = audit_mod.audit_copies
    monkeypatch.setattr(gen, "generate", generate)
    monkeypatch.setattr(audit_mod, "audit_copies", no_flags)
    result, out_dir = run_with(fixture_root, "exact")
    files = {r["file"] for r in read_csv(out_dir / "manifest.csv")}
    assert synthesize_lib.image_file("healthy", planted_seed) not in files
    assert result.classes["healthy"]["flagged_exact_pixels"] == 1
    assert result.classes["healthy"]["exported"] == 5  # replaced by a top-up seed


# ----------------------------------------------------------------------------- bad config


def test_class_without_generator_is_a_config_error(fixture_root: Path) -> None:
    params = make_params(fixture_root, counts={"healthy": 5, "mild": 4, "severe": 3})
    with pytest.raises(ConfigError, match=r"counts has class 'severe' but .*generators has no generator"):
        synthesize.config_from_params(params)


def test_missing_checkpoint_names_the_class_and_file(fixture_root: Path) -> None:
    gens = {"healthy": str(fixture_root / "models/healthy/final.pt"), "mild": str(fixture_root / "nope.pt")}
    cfg = synthesize.config_from_params(make_params(fixture_root, generators=gens))
    with pytest.raises(StageError, match=r"synthesize.generators.mild.*nope.pt: GAN checkpoint not found"):
        synthesize.run(cfg)


@pytest.mark.parametrize("override, match", [
    ({"psi": 0.0}, "psi must be in"),
    ({"seed": synthesize_lib.MAX_SEED + 1}, "seed must be in"),
    ({"audit_extractor": "domain"}, "audit_checkpoint is required"),
    ({"audit_extractor": "clip", "audit_checkpoint": "x.pt"}, "audit_extractor must be one of"),
    ({"counts": {"healthy": 0, "mild": 4}}, r"counts.healthy must be in"),
    ({"max_shortfall": 1.5}, "max_shortfall must be in"),
    ({"audit": {"seed": 1}}, "top-level 'audit' section"),
])
def test_bad_values_are_rejected(fixture_root: Path, override: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        synthesize.config_from_params(make_params(fixture_root, **override))


def test_missing_audit_section_and_domain_checkpoint(fixture_root: Path) -> None:
    params = make_params(fixture_root)
    del params["audit"]
    with pytest.raises(ConfigError, match="section 'audit' is missing"):
        synthesize.config_from_params(params)
    cfg = synthesize.config_from_params(make_params(fixture_root, audit_extractor="domain",
                                                    audit_checkpoint=str(fixture_root / "no_classifier.pt")))
    with pytest.raises(AcneopsError, match="no_classifier.pt: classifier checkpoint not found"):
        synthesize.run(cfg)


def test_dcgan_with_truncation_is_rejected_before_any_work(fixture_root: Path, tmp_path: Path) -> None:
    dcgan = write_generator(tmp_path / "dcgan.pt", torch_seed=0, family="dcgan")
    gens = {"healthy": str(dcgan), "mild": str(fixture_root / "models/mild/final.pt")}
    params = make_params(fixture_root, generators=gens, psi=0.7)
    params["synthesize"]["out_dir"] = str(tmp_path / "out")
    with pytest.raises(ConfigError, match="DCGAN generator .* set synthesize.psi to 1.0"):
        synthesize.run(synthesize.config_from_params(params))
    assert not (tmp_path / "out").exists()


def test_previous_dataset_survives_a_failed_run(fixture_root: Path, tmp_path: Path) -> None:
    params = make_params(fixture_root)
    params["synthesize"]["out_dir"] = str(tmp_path / "synthetic")
    params["synthesize"]["report_path"] = str(tmp_path / "reports" / "synthesize.json")
    synthesize.run(synthesize.config_from_params(params))
    before = file_hashes(tmp_path / "synthetic")
    broken = copy.deepcopy(params)
    broken["synthesize"]["restored_dir"] = str(tmp_path / "nowhere")
    with pytest.raises(StageError, match="restored manifest missing"):
        synthesize.run(synthesize.config_from_params(broken))
    assert file_hashes(tmp_path / "synthetic") == before


def test_runs_through_the_shared_stage_runner(fixture_root: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`acneops run synthesize`, dvc.yaml and Prefect all go through stages.run_stage with params.yaml,
    which logs the result's metrics and artifacts to MLflow (a real store in a temp dir)."""
    import yaml
    from mlflow import MlflowClient

    from acneops.stages import run_stage

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("ACNEOPS_PARENT_RUN_ID", raising=False)

    params = make_params(fixture_root, counts={"healthy": 2, "mild": 2})
    params["synthesize"]["out_dir"] = str(tmp_path / "synthetic")
    params["synthesize"]["report_path"] = str(tmp_path / "reports" / "synthesize.json")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_stage("synthesize", None, tmp_path / "params.yaml")
    assert "exported healthy=2/2" in result.summary()
    assert len(read_csv(tmp_path / "synthetic" / "manifest.csv")) == 4
    runs = MlflowClient(uri).search_runs([e.experiment_id for e in MlflowClient(uri).search_experiments()])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["total/exported"] == 4.0 and runs[0].data.metrics["mild/flag_rate"] == 0.0
    logged = {a.path for a in MlflowClient(uri).list_artifacts(runs[0].info.run_id)}
    assert {"synthesize.json", "healthy.json", "mild.png"} <= logged


def test_default_filter_uses_the_feature_space_the_report_audits_in():
    """The exported set is filtered with the features evaluate's anonymity audit reports in, so an image the
    filter kept is not flagged by the report for lack of a shared feature space (the healthy class included:
    the severity sorter never saw healthy faces)."""
    import yaml

    from acneops.stages import evaluate

    params = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    syn, ev = synthesize.config_from_params(params), evaluate.config_from_params(params)
    assert syn.audit_extractor == ev.extractor == "domain"
    assert Path(syn.audit_checkpoint) == Path(ev.extractor_checkpoint or ev.classifiers["real"])
    assert syn.audit_checkpoint != Path(params["evaluate"]["sorter"])
    assert dataclasses.asdict(ev.audit) == dataclasses.asdict(syn.audit)


def test_images_flagged_against_their_own_class_are_not_exported(fixture_root: Path, monkeypatch) -> None:
    """evaluate audits each generator against its own class's real images, whose sparser neighbourhoods loosen
    the relative thresholds; synthesize runs that audit too, so what it exports passes the report's audit."""
    from acneops import audit

    real_audit, references = audit.run_audit, []

    def planted(synthetic, real_train, cfg, extractor, real_test=None, **kw):
        result = real_audit(synthetic, real_train, cfg, extractor, real_test, **kw)
        references.append((kw["name"], sorted(kw["real_names"])))
        if kw["name"] == "synthesize_healthy_own_class":  # the own-class audit flags the first candidate
            result.copy.flags[0] = True
        return result

    monkeypatch.setattr(audit, "run_audit", planted)
    result, out_dir = run_with(fixture_root, "own_class")
    healthy_train = sorted(f"train/images/healthy_{i:03d}.png" for i in range(8))
    assert ("synthesize_healthy_own_class", healthy_train) in references
    assert any(name == "synthesize_healthy" and len(names) == 16 for name, names in references)
    seeds = [int(r["seed"]) for r in read_csv(out_dir / "manifest.csv") if r["label"] == "healthy"]
    first = synthesize_lib.class_seeds(3, 0, 0, 1)[0]
    assert first not in seeds and len(seeds) == 5  # dropped, and topped up from the class's own seed range
    report = json.loads((fixture_root / "own_class" / "reports" / "synthesize.json").read_text())
    assert report["classes"]["healthy"]["flagged_own_class"] >= 1
    assert report["classes"]["mild"]["flagged_own_class"] == 0


def test_progress_bars_name_the_stage_and_class(fixture_root: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    """stderr shows generation, the audit (phases and feature extractions) and the PNG writes of each class."""
    monkeypatch.setenv("TQDM_DELAY", "0")  # bars off a terminal show only slow loops; show these short ones
    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    run_with(fixture_root, "progress", counts={"healthy": 3, "mild": 2})
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    for cls, n in (("healthy", 3), ("mild", 2)):
        for bar in (f"synthesize {cls}: generate round 0", f"audit synthesize_{cls}: features (synthetic)",
                    f"synthesize {cls}: write PNGs"):
            assert any(bar in line and f"{n}/{n}" in line for line in lines), bar
        assert any(f"audit synthesize_{cls}: 100%" in line for line in lines)


def write_judge(path: Path, torch_seed: int, always: str | None = None) -> Path:
    """A resnet18 over (mild, severe), as the severity sorter is over acne classes; with ``always`` it answers that
    class for every image, otherwise its random head splits the images."""
    from acneops.classify.backbones import create_classifier, model_args_for, save_checkpoint

    torch.manual_seed(torch_seed)
    labels = ("mild", "severe")
    model = create_classifier("resnet18", 2, img_size=RES)
    with torch.no_grad():
        if always:
            model.fc.weight.zero_()
            model.fc.bias.copy_(torch.tensor([10.0 if c == always else 0.0 for c in labels]))
        else:
            model.fc.weight.mul_(40.0)
    save_checkpoint(path, model, model_args_for("resnet18", 2, RES, labels), epoch=1, config={})
    return path


def test_class_filter_exports_only_images_the_judge_puts_in_their_class(fixture_root: Path, first_run: tuple,
                                                                         tmp_path: Path) -> None:
    """The hierarchical method's sorting step on the export: a mild image the judge calls severe is replaced from the
    top-up seeds; healthy (a class the judge does not know) is untouched; a judge that rejects every image of a class
    fails the stage with a message naming the filter, leaving the previous dataset in place."""
    from acneops.classify.backbones import load_classifier, predict

    judge = write_judge(tmp_path / "judge.pt", torch_seed=0)  # calls about half of them mild
    result, out_dir = run_with(fixture_root, "filtered", class_filter=str(judge))
    mild = result.classes["mild"]
    assert mild["rejected_class_filter"] > 0 and mild["exported"] == 4 and mild["rounds"] >= 1
    model, args = load_classifier(judge)
    files = sorted((out_dir / "mild").glob("*.png"))
    probs = predict(model, args, files, batch=8)
    assert len(files) == 4 and (probs.argmax(axis=1) == 0).all()  # every exported mild image judged mild
    _, unfiltered, _ = first_run
    healthy = {k: v for k, v in file_hashes(out_dir).items() if k.startswith("healthy/")}
    assert healthy == {k: v for k, v in file_hashes(unfiltered).items() if k.startswith("healthy/")}
    assert result.classes["healthy"]["rejected_class_filter"] == 0

    kept = file_hashes(out_dir)
    counting, counted_dir = run_with(fixture_root, "filter_counts_only", class_filter=str(judge), class_filter_margin=1.0)
    assert counting.classes["mild"]["rejected_class_filter"] == 0  # margin 1: never rejected ...
    assert file_hashes(counted_dir) == file_hashes(unfiltered)  # ... so the export is the unfiltered one
    severe_only = write_judge(tmp_path / "severe.pt", torch_seed=5, always="severe")
    with pytest.raises(StageError, match="the class filter"):
        run_with(fixture_root, "filtered", class_filter=str(severe_only))
    assert file_hashes(out_dir) == kept
    with pytest.raises(StageError, match="class_filter"):
        run_with(fixture_root, "filtered", class_filter=str(tmp_path / "missing.pt"))


def test_one_conditional_generator_serves_every_class(fixture_root: Path, tmp_path: Path) -> None:
    """synthesize.generators may name the same class-conditional checkpoint for each class: each class's images are
    the generator's at that class input; a class it was not trained on is an error naming its classes."""
    from acneops.gan.sampling import generate

    cond = write_generator(tmp_path / "cond.pt", torch_seed=3, labels=("healthy", "mild", "severe"))
    result, out_dir = run_with(fixture_root, "conditional", generators={c: str(cond) for c in CLASSES})
    for cls in CLASSES:
        rows = [r for r in read_csv(out_dir / "manifest.csv") if r["label"] == cls]
        images = generate(cond, [int(r["seed"]) for r in rows], psi=0.8, batch=4, label=cls)
        assert len(rows) == result.classes[cls]["exported"]
        for row, image in zip(rows, images):
            assert np.array_equal(np.asarray(Image.open(out_dir / row["file"]).convert("RGB")), image)
    other = write_generator(tmp_path / "other.pt", torch_seed=3, labels=("severe", "mask"))
    with pytest.raises(StageError, match=r"class-conditional generator of \['severe', 'mask'\]"):
        run_with(fixture_root, "conditional", generators={"healthy": str(cond), "mild": str(other)})
