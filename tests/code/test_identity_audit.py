"""The identity audit (acneops.audit.identity) on real photos: Eileen Collins (scikit-image's ``astronaut``) and
Grace Hopper (matplotlib's ``grace_hopper.jpg``), cut to 128 px portraits around the face dlib finds.

- transformed copies of one photo (crop, mirror, brightness, JPEG) are that person; the other person is not, in
  both directions;
- the calibration reports its threshold, rule and quantiles, and stays at the transformed copies when the real set
  holds several photos of one person; a number from params replaces it;
- images without faces, drawn faces dlib cannot tell apart and ``identity: never`` are "not applicable" with the
  reason (``always`` makes it an error); bad params are rejected;
- through the stage entry: synthesize with a generator that plants new framings of a real train person (which the
  copy audit lets through) drops and counts every one, writes none of them, and keeps and counts faceless images;
- through ``acneops run`` on the phantom at the default 32 px, synthesize and evaluate say "not applicable".
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from acneops.audit import AuditConfig
from acneops.audit import identity as ida
from acneops.core.config import ConfigError
from acneops.core.errors import AcneopsError
from acneops.stages.params import audit_config

SIZE = 128  # px, side of the portraits and of every fixture image


def portrait(image: np.ndarray, margin: float = 2.2, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """A SIZE px square around the face dlib finds (side = margin x the face box), shifted by (dx, dy) face widths."""
    from acneops.faces.landmarks import detect

    left, top, right, bottom = detect(image).box
    w = right - left
    cx, cy, side = (left + right) / 2 + dx * w, (top + bottom) / 2 + dy * w, margin * w
    box = tuple(int(v) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
    return np.asarray(Image.fromarray(image).crop(box).resize((SIZE, SIZE), Image.LANCZOS))


def plain(n: int, seed: int) -> np.ndarray:
    """n smooth colour images without a face (bicubic-upsampled 4x4 noise), (n, SIZE, SIZE, 3) uint8."""
    small = np.random.default_rng(seed).integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(s).resize((SIZE, SIZE), Image.BICUBIC)) for s in small])


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


COPIES = {  # other parameters than the calibration's LEAK_VIEWS
    "crop": lambda im: ida._crop(im, 0.8, 0.3, 0.6),
    "mirror": lambda im: np.ascontiguousarray(im[:, ::-1]),
    "brightness": lambda im: ida._gain(im, 1.25),
    "jpeg": lambda im: jpeg(im, 40),
}


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    import matplotlib.cbook
    from skimage import data

    hopper = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    return {"astronaut": data.astronaut(), "hopper": np.asarray(hopper)}


@pytest.fixture(scope="module")
def faces(photos: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: portrait(image) for name, image in photos.items()}


def one_person(ref: ida.IdentityReference, row: int) -> ida.IdentityReference:
    """``ref`` cut down to its face ``row`` (same threshold)."""
    kept = ida.Faces(ref.faces.embeddings[[row]], np.array([True]), 1)
    return dataclasses.replace(ref, faces=kept, names=(ref.real_name(row),))


def test_transformed_copies_of_a_photo_are_flagged_and_the_other_person_is_not(faces):
    ref = ida.reference(np.stack([faces["astronaut"], faces["hopper"]]), ["astronaut.png", "hopper.png"],
                        AuditConfig(), "test")
    assert isinstance(ref, ida.IdentityReference) and 0 < ref.threshold <= 0.6
    for row, (person, other) in enumerate((("astronaut", "hopper"), ("hopper", "astronaut"))):
        copies = np.stack([f(faces[person]) for f in COPIES.values()])
        alone = one_person(ref, row)
        hits = ida.match_images(alone, copies, "copies")
        assert hits.face.all() and hits.flags.all(), dict(zip(COPIES, hits.distance))
        misses = ida.match_images(alone, np.stack([faces[other], *[f(faces[other]) for f in COPIES.values()]]), "x")
        assert misses.face.all() and not misses.flags.any(), misses.distance
        assert misses.distance.min() > ref.threshold + 0.03  # not by a hair
        both = ida.match_images(ref, copies, "both")
        assert {ref.real_name(j) for j in both.nearest} == {f"{person}.png"} and both.flags.all()


def test_calibration_reports_threshold_rule_and_quantiles(faces):
    images = np.stack([faces["astronaut"], faces["hopper"], *plain(2, 1)])
    names = ["a.png", "h.png", "p0.png", "p1.png"]
    ref = ida.reference(images, names, AuditConfig(), "test")
    report = ref.report()
    cal = report["calibration"]
    assert report["real_train"] == {"images": 4, "faces": 2, "detected_rate": 0.5}
    assert cal["source"] == "calibrated" and "min(dlib 0.6, max(q0.99" in cal["rule"]
    same, diff = cal["same_pairs"], cal["different_pairs"]
    assert same["faces"] == 2 and same["n"] + same["views_without_face"] == 2 * len(ida.LEAK_VIEWS)
    for q in ("q0", "q5", "q50", "q95", "q99", "q100"):
        assert q in same["quantiles"] and q in diff["quantiles"]
    assert cal["threshold"] == ref.threshold == pytest.approx(min(0.6, max(cal["q_same"], cal["q_different"])))
    assert same["quantiles"]["q100"] < ref.threshold  # every transformed copy is caught
    assert diff["share_below_threshold"] == 0.0 and cal["all_pairs"]["share_below_dlib_same_person"] == 0.0
    fixed = ida.reference(images, names, AuditConfig(identity_threshold="0.3"), "test")
    assert fixed.threshold == 0.3 and fixed.calibration["source"] == "params.yaml [audit.identity_threshold]"
    assert fixed.calibration["same_pairs"] is None and fixed.calibration["different_pairs"]["n"] == 2


def test_several_photos_of_one_person_keep_the_threshold_at_the_copies_and_are_reported(photos, faces):
    """ACNE04 has several photos per patient: their nearest other real face is the same person."""
    second = {name: portrait(image, margin=2.8, dx=-0.2, dy=0.2) for name, image in photos.items()}
    images = np.stack([faces["astronaut"], second["astronaut"], faces["hopper"], second["hopper"]])
    ref = ida.reference(images, ["a1", "a2", "h1", "h2"], AuditConfig(), "test")
    cal = ref.calibration
    assert cal["different_pairs"]["quantiles"]["q100"] < 0.6  # every nearest other face is the same person
    assert cal["all_pairs"]["share_below_dlib_same_person"] == pytest.approx(2 / 6)  # two same-person pairs of six
    assert ref.threshold == pytest.approx(cal["q_same"]) and cal["q_different"] < cal["q_same"] < 0.6
    assert cal["different_pairs"]["share_below_threshold"] == 1.0  # reported: each 'different' pair is one person


def test_no_faces_drawn_faces_and_never_are_not_applicable_with_the_reason():
    from acneops.data.phantom import PhantomConfig, render

    names = [f"p{i}.png" for i in range(10)]
    out = ida.reference(plain(10, 3), names, AuditConfig(), "test")
    assert out == {"applicable": False, "reason": "dlib found a face in 0 of the first 6 of 10 real train images and "
                   "stopped: at most 4 can have one (needs >= 50% (audit.identity_min_detected) and at least 2)"}
    with pytest.raises(AcneopsError, match=r"dlib found a face in 0 .* is 'always': set it to 'auto'"):
        ida.reference(plain(10, 3), names, AuditConfig(identity="always"), "test")
    assert ida.reference(plain(10, 3), names, AuditConfig(identity="never"), "test") == {
        "applicable": False, "reason": "params.yaml [audit.identity] is 'never'"}
    cfg = PhantomConfig(seed=11, hr_size=64, supersample=1, lr_size=16)  # dlib finds these, and all look alike
    drawn = np.stack([np.asarray(render(cfg, label, i)[0].convert("RGB"))
                      for label in ("healthy", "mild", "moderate", "severe") for i in range(4)])
    out = ida.reference(drawn, [f"d{i}" for i in range(16)], AuditConfig(), "test")
    assert out["applicable"] is False and "of the pairs of real train faces the same person" in out["reason"]
    assert "drawn faces" in out["reason"]


@pytest.mark.parametrize("values, match", [
    ({"identity": "yes"}, r"\[audit\].identity must be one of \['auto', 'always', 'never'\], got 'yes'"),
    ({"identity": True}, r"\[audit.identity\]: expected a string"),
    ({"identity_threshold": "close"}, r"identity_threshold must be 'auto' or a distance in \(0, 2\]"),
    ({"identity_threshold": 0}, r"identity_threshold must be 'auto' or a distance"),
    ({"identity_min_detected": 1.5}, r"identity_min_detected must be a share in \[0, 1\]"),
    ({"identity_upsample": 5}, r"identity_upsample must be 0..3"),
    ({"identity_bogus": 1}, r"unknown key\(s\) \['identity_bogus'\]"),
])
def test_bad_identity_params_are_rejected(values, match):
    with pytest.raises(ConfigError, match=match):
        audit_config({"audit": values})


def test_a_number_threshold_is_accepted_from_yaml():
    assert audit_config({"audit": {"identity_threshold": 0.45}}).identity_threshold == "0.45"


# ----------------------------------------------------------------------------- through the stages


def write_restored(root: Path, train: dict[str, np.ndarray]) -> Path:
    """restored/train (the given images per class) and a test manifest whose files do not exist (never read)."""
    restored = root / "restored"
    for split in ("train", "test"):
        (restored / split / "images").mkdir(parents=True)
        rows = []
        for label, images in train.items():
            for i, img in enumerate(images):
                file = f"images/{label}_{i:03d}.png"
                if split == "train":
                    Image.fromarray(img).save(restored / split / file)
                rows.append({"file": file, "label": label, "lesions": "", "source": "photo", "split": split,
                             "restorer": "lanczos", "orig_sha256": "0" * 64})
        with open(restored / split / "manifest.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return restored


def leak(photo: np.ndarray, seed: int) -> np.ndarray:
    """A new framing of the same person: wider or tighter, shifted, mirrored, rotated, darker (not a near copy)."""
    k = seed % 3
    framed = portrait(photo, margin=(1.6, 2.8, 3.0)[k], dx=(0.1, -0.3, 0.0)[k], dy=(0.0, 0.2, 0.3)[k])
    framed = np.ascontiguousarray(framed[:, ::-1]) if seed % 2 else framed
    return ida._gain(np.asarray(Image.fromarray(framed).rotate((10, -12, 0)[k], Image.BICUBIC)), 0.85)


def test_synthesize_drops_and_counts_planted_identities_and_keeps_faceless_images(photos, faces, tmp_path,
                                                                                  monkeypatch):
    from acneops.core.io import read_csv
    from acneops.gan import sampling as gen
    from acneops.stages import run_stage
    from test_synthesize import write_generator

    restored = write_restored(tmp_path, {"healthy": np.stack([faces["astronaut"], plain(1, 1)[0]]),
                                         "mild": np.stack([faces["hopper"], plain(1, 2)[0]])})
    gens = {c: write_generator(tmp_path / f"{c}.pt", torch_seed=k) for k, c in enumerate(("healthy", "mild"))}

    def generate(path, seeds, psi=1.0, batch=32, **kw):  # noqa: ANN001, ANN202
        leaker = Path(path).stem == "healthy"  # plants the astronaut in every third seed
        return np.stack([leak(photos["astronaut"], s) if leaker and s % 3 == 0 else plain(1, 100 + s % 997)[0]
                         for s in seeds])

    monkeypatch.setattr(gen, "generate", generate)
    out = tmp_path / "out"
    params = {"synthesize": {"out_dir": str(out / "synthetic"), "report_path": str(out / "reports/synthesize.json"),
                             "restored_dir": str(restored), "generators": {c: str(p) for c, p in gens.items()},
                             "counts": {"healthy": 6, "mild": 6}, "psi": 1.0, "seed": 0, "batch": 8,
                             "audit_extractor": "tiny", "audit_checkpoint": None, "max_rounds": 2, "class_filter": ""},
              "audit": {"ct_cells": 2}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_stage("synthesize", None, tmp_path / "params.yaml")
    report = json.loads((out / "reports/synthesize.json").read_text())
    assert report["identity"]["applicable"] is True and report["identity"]["real_train"]["faces"] == 2
    assert "kept and counted" in report["identity"]["no_face"]
    h, m = report["classes"]["healthy"], report["classes"]["mild"]
    first, last = h["seeds"]["first_round"]
    generated = [*range(first, last + 1), *range(first + 500_000, first + 500_000 + h["seeds"]["topup_generated"])]
    planted = [s for s in generated if s % 3 == 0]
    assert h["exported"] == 6 and h["shortfall"] == 0 and h["rounds"] >= 1 and len(generated) == h["generated"]
    assert h["flagged_identity"] == h["identity"]["flagged"] == len(planted)  # every planted face, nothing else
    assert h["identity"]["flagged_identity_only"] >= 1  # the copy audit let at least one new framing through
    assert {r["nearest_real"] for r in h["identity"]["flagged_records"]} == {"train/images/healthy_000.png"}
    assert h["identity"]["no_face"] == h["generated"] - len(planted)  # faceless images: kept and counted
    assert m["flagged_identity"] == 0 and m["identity"]["no_face"] == m["generated"]
    written = {int(r["seed"]) for r in read_csv(out / "synthetic" / "manifest.csv") if r["label"] == "healthy"}
    assert len(written) == 6 and not written & set(planted)
    assert not any((out / "synthetic" / "healthy" / f"healthy_seed{s}.png").exists() for s in planted)
    assert result.metrics()["healthy/flagged_identity"] == h["flagged_identity"]


def test_phantom_default_says_not_applicable_through_acneops_run(tmp_path, monkeypatch):
    """The built-in phantom at the default 32 px: no face for dlib, so no identity number anywhere."""
    from pipeline_repo import copy_pipeline, tiny_params
    from test_evaluate import make_classifier, make_generator

    from acneops.data import phantom
    from acneops.stages import run_stage
    from acneops.stages.params import phantom_config

    params = tiny_params()
    repo = copy_pipeline(tmp_path / "repo", params)
    monkeypatch.chdir(repo)
    phantom.generate(phantom_config(params), Path(params["ingest"]["data_dir"]))
    run_stage("ingest", None, "params.yaml")
    run_stage("restore", None, "params.yaml")
    classes = list(params["synthesize"]["counts"])
    gens = {c: str(make_generator(repo / f"models/gan/{c}.pt", seed=k)) for k, c in enumerate(classes)}
    real = str(make_classifier(repo / "models/real.pt", tuple(classes)))
    params["synthesize"].update(generators=gens, audit_extractor="tiny", audit_checkpoint=None, class_filter="")
    params["evaluate"].update(classifiers={"real": real}, sorter="", fidelity_judge="", extractor="tiny",
                              generators=gens, comparisons=[], positive="", bootstrap=0)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("synthesize", "evaluate"):
        done = subprocess.run([sys.executable, "-m", "acneops", "run", stage], cwd=repo, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    reason = "dlib found a face in 0 of the first"
    synth = json.loads((repo / "reports/synthesize.json").read_text())
    assert synth["identity"]["applicable"] is False and synth["identity"]["reason"].startswith(reason)
    assert all(c["identity"] == {"applicable": False} and c["flagged_identity"] is None
               for c in synth["classes"].values())
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert metrics["identity"] == {"applicable": False}
    assert all(a["identity_applicable"] is False and not any(k.startswith("identity_") and k != "identity_applicable"
                                                            for k in a) for a in metrics["anonymity"].values())
    details = json.loads((repo / "reports/evaluation.json").read_text())
    assert details["identity"]["reason"].startswith(reason)
    assert "Not applicable: dlib found a face in 0" in (repo / "reports/report.md").read_text()


def lfw_faces() -> np.ndarray:
    """scikit-image's LFW subset (100 faces of public figures, 25 px grey) at SIZE px RGB: real identities."""
    from skimage import data

    grey = (data.lfw_subset()[:100] * 255).round().astype(np.uint8)
    return np.stack([np.asarray(Image.fromarray(g).convert("RGB").resize((SIZE, SIZE), Image.BICUBIC)) for g in grey])


def test_evaluate_reports_identity_matches_and_membership_on_real_faces(tmp_path):
    """A leaky class (mirrored copies of its real train faces) against an honest one (people nobody trained on)."""
    from test_evaluate import MANIFEST_FIELDS, _write_csv, evaluate_params, make_classifier, make_generator

    from acneops.stages import evaluate

    lfw, labels = lfw_faces(), ("healthy", "mild")
    splits = {"train": {"healthy": lfw[0:20], "mild": lfw[20:40]}, "test": {"healthy": lfw[40:50], "mild": lfw[50:60]},
              "val": {"healthy": lfw[90:92], "mild": lfw[92:94]}}
    for split, by_label in splits.items():
        (tmp_path / "restored" / split / "images").mkdir(parents=True)
        rows = []
        for label, images in by_label.items():
            for i, img in enumerate(images):
                Image.fromarray(img).save(tmp_path / "restored" / split / f"images/{label}_{i:02d}.png")
                rows.append({"file": f"images/{label}_{i:02d}.png", "label": label, "lesions": "", "source": "lfw",
                             "split": split, "restorer": "none", "orig_sha256": f"{i:064d}"})
        _write_csv(tmp_path / "restored" / split / "manifest.csv", rows, MANIFEST_FIELDS)
    exported = {"healthy": [np.ascontiguousarray(im[:, ::-1]) for im in lfw[0:10]], "mild": list(lfw[60:70])}
    rows = []
    for label, images in exported.items():
        (tmp_path / "synthetic" / label).mkdir(parents=True)
        for i, img in enumerate(images):
            Image.fromarray(img).save(tmp_path / "synthetic" / label / f"seed{i:06d}.png")
            rows.append({"file": f"{label}/seed{i:06d}.png", "class": label, "seed": i})
    _write_csv(tmp_path / "synthetic" / "manifest.csv", rows, ["file", "class", "seed"])
    gens = {c: str(make_generator(tmp_path / f"models/gan/{c}.pt", seed=k)) for k, c in enumerate(labels)}
    params = evaluate_params(tmp_path, classifiers={"real": str(make_classifier(tmp_path / "real.pt", labels))},
                             sorter="", fidelity_judge="", generators=gens, comparisons=[], positive="", bootstrap=0)
    params["audit"].update(identity_calibration_faces=8, identity_bootstrap=200)
    result = evaluate.run(evaluate.config_from_params(params))
    ident, details = result.nested["identity"], result.details["identity"]
    assert ident["applicable"] is True and 0 < ident["threshold"] <= 0.6
    per_class = result.nested["anonymity"]
    assert per_class["healthy"]["identity_match_rate"] >= 0.8  # the mirrored train faces are those people
    assert per_class["mild"]["identity_match_rate"] <= 0.3 < per_class["healthy"]["identity_match_rate"]
    assert ident["flagged"] == per_class["healthy"]["identity_flagged"] + per_class["mild"]["identity_flagged"]
    assert {r["nearest_real"] for r in details["flagged"] if r["synthetic"].startswith("healthy/")} <= {
        f"train/images/healthy_{i:02d}.png" for i in range(10)}
    lo, hi = ident["membership_auc_ci95_low"], ident["membership_auc_ci95_high"]
    assert 0.55 < ident["membership_auc"] and lo < ident["membership_auc"] < hi  # train faces sit nearer the set
    assert details["membership"]["n_test_faces"] >= 15 and details["calibration"]["same_pairs"]["faces"] == 8
    assert "identity matches" in result.summary()
    report = (tmp_path / "reports" / "report.md").read_text()
    assert "### Identity (dlib face recognition)" in report and "identity membership AUC" in report


def test_register_gates_identity_flags_only_where_the_audit_applies():
    from acneops.registry import gates
    from acneops.registry.config import RegisterConfig

    clean = {"flagged": 0, "mia_auc_feature": 0.55, "mia_auc_pixel": 0.5, "ct": 0.2, "ct_pixel": -1.0}
    cfg = RegisterConfig()
    leaky = gates.anonymity_gates(cfg, {**clean, "identity_applicable": True, "identity_flagged": 2})
    assert [g for g, v in leaky.items() if not v["passed"]] == ["identity_flagged"]
    assert leaky["identity_flagged"]["value"] == 2 and leaky["identity_flagged"]["limit"] == "<= 0"
    assert gates.passed(gates.anonymity_gates(RegisterConfig(max_identity_flagged=2),
                                              {**clean, "identity_applicable": True, "identity_flagged": 2}))
    unaudited = gates.anonymity_gates(cfg, {**clean, "identity_applicable": True})  # applicable but no figure
    assert not unaudited["identity_flagged"]["passed"]
    phantom = gates.anonymity_gates(cfg, {**clean, "identity_applicable": False})
    assert gates.passed(phantom) and phantom["identity_flagged"]["value"] is None
    assert "not applicable" in phantom["identity_flagged"]["limit"]
    assert "identity_flagged" not in gates.anonymity_gates(cfg, clean)  # an audit from before the identity audit
    with pytest.raises(ConfigError, match=r"max_identity_flagged: must be >= 0"):
        RegisterConfig(max_identity_flagged=-1)
