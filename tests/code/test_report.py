"""report.md rendering from metrics/details dicts: tables, chance level, honest names, images only if present."""

from __future__ import annotations

from pathlib import Path

from acneops.report import markdown as report

CLASSIFIERS = {
    "real": {"accuracy": 0.9, "macro_f1": 0.85, "macro_precision": 0.86, "macro_recall": 0.84, "n_test": 40,
             "chance_uniform": 0.5, "chance_majority": 0.6, "sensitivity": 0.95, "specificity": 0.8,
             "per_class": {"mask": {"f1": 0.9}, "no_mask": {"f1": 0.8}}},
    "synthetic": {"accuracy": 0.75, "macro_f1": 0.7, "macro_precision": 0.72, "macro_recall": 0.7, "n_test": 40,
                  "chance_uniform": 0.5, "chance_majority": 0.6, "sensitivity": 0.7, "specificity": 0.8,
                  "per_class": {"mask": {"f1": 0.72}, "no_mask": {"f1": 0.68}}},
}
FEATURE = {"name": "domain", "metric_prefix": "fd_domain", "kernel_prefix": "kd_domain", "identity": "domain:resnet18",
           "checkpoint": "models/classifier/real/best.pt", "explanation": "Fréchet distance in classifier features (not FID)."}


def test_scenario_table_renders_rows_in_scenario_order_with_binary_columns():
    table = report.scenario_table(CLASSIFIERS, {"synthetic": "synthetic only (TSTR)", "real": "real only"})
    lines = table.splitlines()
    assert lines[0] == ("| scenario | trained on | seeds | accuracy | macro-F1 | macro precision | macro recall "
                        "| sensitivity | specificity | chance acc. (uniform / majority) | test images |")
    assert lines[1].count("---") == 11
    assert lines[2] == ("| **synthetic** | synthetic only (TSTR) | – | 0.750 | 0.700 | 0.720 | 0.700 | 0.700 | 0.800 "
                        "| 0.500 / 0.600 | 40 |")  # TSTR first, whatever the dict order
    assert lines[3].startswith("| **real** | real only | – | 0.900 | 0.850 |")
    seeded = {"real": {**CLASSIFIERS["real"], "n_seeds": 3, "accuracy_sd": 0.021, "accuracy_ci95_low": 0.81,
                       "accuracy_ci95_high": 0.95}}
    assert "| **real** | – | 3 | 0.900 ± 0.021 [0.810, 0.950] | 0.850 |" in report.scenario_table(seeded)


def test_scenario_table_without_binary_task_has_no_sensitivity_columns():
    multi = {k: {m: v for m, v in c.items() if m not in ("sensitivity", "specificity")} for k, c in CLASSIFIERS.items()}
    table = report.scenario_table(multi)
    assert "sensitivity" not in table and "| **real** | – | – | 0.900 |" in table


def test_generator_fidelity_and_anonymity_tables():
    gens = {"mild": {"fd_domain": 12.3456, "kd_domain_mean": 0.0123, "kd_domain_std": 0.001, "precision_domain": 0.7,
                     "recall_domain": 0.4, "density_domain": 0.9, "coverage_domain": 0.5, "class_fidelity": 0.8,
                     "n_real": 100, "n_fake": 300}}
    table = report.generator_table(gens, FEATURE, {"mild": ["mild"]})
    assert "| generator | real classes | fd_domain | kd_domain (mean ± std) |" in table
    assert "| **mild** | mild | 12.35 | 0.0123 ± 0.001 | 0.700 | 0.400 | 0.900 | 0.500 | 0.800 | 100 / 300 |" in table
    assert "FID" not in table
    drawn = {"mild": {**gens["mild"], "fd_domain_sd": 0.42, "class_fidelity_sd": 0.05}}
    assert "| **mild** | mild | 12.35 ± 0.42 |" in report.generator_table(drawn, FEATURE, {"mild": ["mild"]})
    assert "| 0.800 ± 0.05 | 100 / 300 |" in report.generator_table(drawn, FEATURE, {"mild": ["mild"]})
    fid = report.fidelity_table({"mild": {"mild": 0.8, "severe": 0.2}, "all": {"mild": 0.5, "severe": 0.5}})
    assert "| **mild** | **0.800** | 0.200 |" in fid and "| **all** | 0.500 | 0.500 |" in fid
    anon = report.anonymity_table({"mild": {"n_synthetic": 50, "flagged": 2, "flagged_rate": 0.04,
                                            "mia_auc_feature": 0.51, "mia_auc_pixel": 0.49}},
                                  {"mild": {"json": "audit_evaluate_mild.json", "png": "audit_evaluate_mild.png"}})
    assert "| **mild** | 50 | 2 | 0.040 | – | – | 0.510 | 0.490 | [json](audit_evaluate_mild.json)" in anon


def _details(tmp_path: Path) -> dict:
    entry = {"checkpoint": "models/classifier/real/best.pt", "sha256": "ab" * 32, "trained_on": "real only",
             "report": {"labels": ["mask", "no_mask"], "positive": "mask"},
             "chance": {"uniform": 0.5, "majority": 0.6, "majority_class": "no_mask"}, "confusion_png": "confusion_real.png"}
    return {
        "provenance": {"git_commit": "abc123", "data_dvc_md5": "feed.dir",
                       "config": {"n_fake": 300, "seed": 0, "psi": 1.0, "metrics_path": str(tmp_path / "metrics.json")}},
        "feature": FEATURE,
        "classifiers": {"real": entry, "synthetic": {**entry, "trained_on": "synthetic only (TSTR)",
                                                     "confusion_png": "confusion_synthetic.png"}},
        "sorter": None, "generators": {}, "anonymity": {}, "grids": {"mask": "grids/mask.png", "no_mask": "grids/no_mask.png"},
    }


def test_render_report_states_provenance_chance_and_embeds_only_existing_images(tmp_path):
    (tmp_path / "grids").mkdir()
    (tmp_path / "grids" / "mask.png").write_bytes(b"png")
    (tmp_path / "confusion_real.png").write_bytes(b"png")
    text = report.render_report(_details(tmp_path), {"classifiers": CLASSIFIERS}, tmp_path)
    assert "`abc123`" in text and "`feed.dir`" in text
    assert "Chance level: guessing uniformly among the 2 classes gives accuracy 0.500" in text
    assert "positive class `mask`" in text
    assert "| f1 per class | mask | no_mask |" in text
    assert "![mask synthetic samples](grids/mask.png)" in text
    assert "grids/no_mask.png" not in text  # file absent: not embedded as a broken image
    assert "![confusion matrix of real](confusion_real.png)" in text and "confusion_synthetic.png" not in text
    assert "[`metrics.json`](metrics.json)" in text
    assert "nothing was audited" in text


def _grid_inputs():
    import numpy as np

    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), rng.integers(0, 256, (16, 24, 3), dtype=np.uint8),
            rng.random((3, 8, 8)).astype(np.float32), rng.integers(0, 256, (40, 40), dtype=np.uint8),
            rng.integers(0, 256, (20, 10, 4), dtype=np.uint8)]


def test_grid_layout_rows_cols_padding_and_pixels_as_callers_expect(tmp_path):
    """The one grid writer (torchvision's make_grid inside): layout the report and GAN callers rely on, and the
    pixels the two former grid writers produced (checksums recorded before they were merged)."""
    import hashlib
    import math

    import numpy as np
    from PIL import Image

    from acneops.report.grid import make_grid, save_grid

    def digest(image):
        a = np.ascontiguousarray(np.asarray(image))
        return hashlib.sha256(repr((a.shape, str(a.dtype))).encode() + a.tobytes()).hexdigest()[:16]

    # report grids (evaluate's per-class grids): cell = largest side (40), pad 2, white; 5 images, 2 per row
    grid = make_grid(_grid_inputs(), ncol=2)
    assert grid.size == (2 * 40 + 3 * 2, 3 * 40 + 4 * 2) and digest(grid) == "fac85be03ccd37cc"
    px = np.asarray(grid)
    assert (px[:2] == 255).all() and (px[:, 42:44] == 255).all()  # outer and inner padding
    assert (px[2 + 2 * 42:, 44:] == 255).all()  # the empty last cell is background
    assert np.array_equal(px[2:42, 2:42], np.asarray(Image.fromarray(_grid_inputs()[0]).resize((40, 40),
                                                                                               Image.NEAREST)))
    for kwargs, size, want in [({"ncol": 3, "cell": 24, "pad": 1}, (76, 51), "3f3b0c90385f2546"),
                               ({"ncol": 5, "pad": 0}, (200, 40), "2f66e4a0fdcbaed6"),
                               ({"ncol": 4, "pad": 3}, (175, 89), "638c363790679cee")]:
        grid = make_grid(_grid_inputs(), **kwargs)
        assert grid.size == size and digest(grid) == want, kwargs
    # GAN sample grids (train_gan): ceil(sqrt(N)) columns, no padding, black empty cells
    rng = np.random.default_rng(5)
    for n, size, want in [(16, (32, 32), "8b8dd1ee5ce7c734"), (5, (24, 16), "2f03db0622958446")]:
        images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
        out = save_grid(images, tmp_path / f"g{n}.png", ncol=math.ceil(math.sqrt(n)), pad=0, background=0)
        with Image.open(out) as im:
            assert im.size == size and digest(im.convert("RGB")) == want and not im.info.get("exif")
            px = np.asarray(im)
        assert np.array_equal(px[8:16, 0:8], images[math.ceil(math.sqrt(n))])  # row 2 starts with the next image
    assert make_grid(_grid_inputs()[:2], ncol=4).size == (2 * 32 + 3 * 2, 32 + 2 * 2)  # fewer images than ncol
