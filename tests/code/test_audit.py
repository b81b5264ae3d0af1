"""Unit tests of the anonymity audit: pixel views, the copy rules on hand-made points, C_T and
membership statistics on known cases, the report files, the filter and bad input (its nearest-neighbour
search is tested in test_metrics_neighbors.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from acneops import audit
from acneops.audit import AuditConfig, filter_copies, run_audit, write_audit_report
from acneops.audit.attacks import (
    Z_LIMIT,
    data_copying_ct,
    mann_whitney_z,
    membership_auc,
)
from acneops.audit.copies import (
    ViewSpec,
    apply_view,
    audit_copies,
    pixel_views,
    view_specs,
)
from acneops.core.config import ConfigError
from acneops.core.errors import AcneopsError
from acneops.stages.params import audit_config


def _smooth_images(n: int, seed: int, size: int = 24) -> np.ndarray:
    """n random smooth colour images (N, size, size, 3) uint8: upsampled 4x4 noise."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(s).resize((size, size), Image.BICUBIC)) for s in small])


# ----------------------------------------------------------------------------- views


def test_pixel_views_identity_flip_and_crop_match_the_transformed_images() -> None:
    images = _smooth_images(5, 3, size=40)
    specs = view_specs((0.9,), 5, check_flips=True)
    assert len(specs) == 12 and specs[0] == ViewSpec(1.0, 0.5, 0.5, False)
    views = pixel_views(images, 8, specs)
    np.testing.assert_allclose(views[0], audit.pixel_vectors(images, 8), atol=1e-6)
    mirrored = audit.pixel_vectors(np.ascontiguousarray(images[:, :, ::-1]), 8)
    np.testing.assert_allclose(views[1], mirrored, atol=0.05)  # resize-then-flip vs flip-then-resize
    corner = specs[4]  # crop 0.9 anchored top-left ...
    assert (corner.fy, corner.fx, corner.flip) == (0.0, 0.0, False)
    cropped = np.stack([im[:36, :36] for im in images])
    diff = np.linalg.norm(views[4] - audit.pixel_vectors(cropped, 8), axis=1)
    assert diff.max() < 0.05 * np.linalg.norm(views[4], axis=1).min()  # PIL's box resize reads the margin too
    assert np.linalg.norm(views[4] - views[0], axis=1).min() > 5 * diff.max()
    assert apply_view(images[0], specs[1]).shape == images[0].shape


def test_pixel_vectors_are_brightness_invariant_when_normalized() -> None:
    images = _smooth_images(3, 4)
    brighter = np.clip(images.astype(np.int32) + 12, 0, 255).astype(np.uint8)
    a, b = audit.pixel_vectors(images, 16), audit.pixel_vectors(brighter, 16)
    raw = audit.pixel_vectors(brighter, 16, normalize=False) - audit.pixel_vectors(images, 16, normalize=False)
    assert np.linalg.norm(a - b, axis=1).max() < 0.1 * np.linalg.norm(a, axis=1).min()
    assert np.abs(raw).mean() > 0.04  # without normalisation the shift is there


# ----------------------------------------------------------------------------- rules on hand-made points


def _cfg(**kw) -> AuditConfig:
    return AuditConfig(check_flips=False, **kw)


def _grid_reals() -> np.ndarray:
    """Four reals on a 10 x 10 square: every real-real NN distance is 10."""
    return np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])


def test_pixel_ratio_and_absolute_rules() -> None:
    reals = _grid_reals()
    syn = np.array([[0.5, 0.0], [5.0, 5.0], [4.0, 0.0]])
    far_feats = np.full((3, 2), 100.0)  # features never close: rule (a) silent
    res = audit_copies(far_feats, reals, syn, reals, _cfg())
    assert res.median_real_pix_nn == pytest.approx(10.0)
    # 0.5 from a real, 9.5 from the next: d1/d2 = 0.05 and d1 = 0.05 median -> both rules
    # centre: d1 = d2 -> ratio 1: honest. (4, 0): d1/d2 = 4/6 = 0.67, d1 = 0.4 median -> not a copy
    assert res.rule_pixel_ratio.tolist() == [True, False, False]
    assert res.rule_pixel_abs.tolist() == [True, False, False]
    assert res.flags.tolist() == [True, False, False]
    assert res.pix_ratio[0] == pytest.approx(0.5 / 9.5)
    assert res.rules_of(0) == ["pixel_ratio", "pixel_abs"]


def test_absolute_rule_catches_a_copy_of_a_real_with_a_near_duplicate() -> None:
    reals = np.vstack([_grid_reals(), [[0.2, 0.0]]])  # real 4 duplicates real 0
    syn = np.array([[0.1, 0.0]])
    res = audit_copies(np.full((1, 2), 100.0), reals, syn, reals, _cfg())
    assert not res.rule_pixel_ratio[0]  # d1/d2 = 0.1 / 0.1: the ratio test is blind here
    assert res.rule_pixel_abs[0] and res.flags[0]


def test_authenticity_rule_counts_only_when_close_in_pixels() -> None:
    real_feats = _grid_reals()  # every real's own NN feature distance is 10
    syn_feats = np.array([[3.0, 0.0], [3.0, 0.0], [0.0, 8.0], [5.0, 5.0]])  # 3, 3, 2 < 10; last 7.1 < 10 too
    syn_feats[3] = [50.0, 50.0]  # ... moved far away: rule (a) silent
    syn_pix = np.array([[5.0, 1.0], [7.0, 7.0], [5.0, 4.0], [7.0, 7.0]])  # d1 = 5.10, 4.24, 6.40, 4.24
    res = audit_copies(syn_feats, real_feats, syn_pix, _grid_reals(), _cfg(authenticity_pixel_factor=0.6))
    assert res.rule_authenticity.tolist() == [True, True, True, False]
    np.testing.assert_allclose(res.pix_nn_dist, [26**0.5, 18**0.5, 41**0.5, 18**0.5])
    assert not res.rule_pixel_ratio.any() and not res.rule_pixel_abs.any()  # 0.56 > 0.5, 0.42 > 0.3
    assert res.pixel_close.tolist() == [True, True, False, True]  # d1 < 0.6 * 10
    assert res.flags.tolist() == [True, True, False, False]
    assert res.rules_of(0) == ["authenticity_and_pixel_close"]
    strict = audit_copies(syn_feats, real_feats, syn_pix, _grid_reals(), _cfg(authenticity_ratio=0.15))
    assert not strict.rule_authenticity.any() and not strict.flags.any()  # 3 and 2 are not < 0.15 * 10


def test_flipped_copy_matches_its_source_only_with_flip_checks() -> None:
    images = _smooth_images(12, 5)
    mirrored = np.ascontiguousarray(images[:3, :, ::-1])
    cfg = AuditConfig(crop_scales=(), ct_cells=2)
    with_flips = run_audit(mirrored, images, cfg, None)
    assert with_flips.copy.flags.all()
    assert [with_flips.copy.view_names[v] for v in with_flips.copy.pix_nn_view] == ["full+flip"] * 3
    no_flips = run_audit(mirrored, images, AuditConfig(crop_scales=(), check_flips=False), None)
    assert not no_flips.copy.rule_pixel_abs.any()


# ----------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("seed", [6, 7, 8])
def test_mann_whitney_z_equals_the_hand_written_one_it_replaced(seed: int) -> None:
    """scipy.stats.mannwhitneyu gives the z the hand-written rank sum of commit 95bc14d gave: ties, both signs."""
    from legacy_oracles import mann_whitney_z as legacy_z

    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 8, 40).astype(float), rng.integers(2, 10, 55).astype(float)  # many ties, x smaller
    assert mann_whitney_z(x, y) == pytest.approx(legacy_z(x, y), rel=1e-9) and mann_whitney_z(x, y) < 0
    assert mann_whitney_z(y, x) == pytest.approx(legacy_z(y, x), rel=1e-9) and mann_whitney_z(y, x) > 0
    a, b = rng.normal(size=300), rng.normal(0.3, size=200)  # continuous, the C_T distances' case
    assert mann_whitney_z(a, b) == pytest.approx(legacy_z(a, b), rel=1e-9)
    assert mann_whitney_z(np.ones(4), np.ones(5)) == 0.0 == legacy_z(np.ones(4), np.ones(5))
    with pytest.raises(AcneopsError, match="non-empty"):
        mann_whitney_z(np.array([]), y)


def test_mann_whitney_z_saturates_where_the_normal_tail_underflows() -> None:
    from legacy_oracles import mann_whitney_z as legacy_z

    x, y = np.arange(3000.0), np.arange(3000.0) + 5000  # disjoint: the hand-written z is -94.9
    assert legacy_z(x, y) < -Z_LIMIT
    assert mann_whitney_z(x, y) == -Z_LIMIT and mann_whitney_z(y, x) == Z_LIMIT


def test_ct_negative_for_copies_positive_for_underfitting_and_deterministic() -> None:
    rng = np.random.default_rng(7)
    train, test = rng.normal(size=(300, 4)), rng.normal(size=(300, 4))
    cfg = AuditConfig(ct_cells=4, ct_min_samples=10)
    honest = data_copying_ct(rng.normal(size=(400, 4)), train, test, cfg)
    copies = data_copying_ct(train + rng.normal(scale=0.01, size=train.shape), train, test, cfg)
    blurry = data_copying_ct(1.6 * rng.normal(size=(400, 4)), train, test, cfg)
    assert abs(honest["ct"]) < 3 and copies["ct"] < -10 and blurry["ct"] > 3
    assert honest["cells_used"] == honest["cells_total"] == 4
    assert data_copying_ct(rng.normal(size=(400, 4)), train, test, cfg)["ct"] != honest["ct"]
    again = data_copying_ct(train + 0.0, train, test, cfg)
    assert again["per_cell"] == data_copying_ct(train + 0.0, train, test, cfg)["per_cell"]
    few = data_copying_ct(rng.normal(size=(12, 4)), train, test, cfg)
    assert few["ct"] is None and few["cells_used"] == 0 and "fewer than 10" in few["per_cell"][0]["reason"]


def test_membership_auc_one_for_memorisation_half_for_independent() -> None:
    rng = np.random.default_rng(8)
    train, test = rng.normal(size=(200, 6)), rng.normal(size=(200, 6))
    assert membership_auc(train, test, train + 1e-3) == pytest.approx(1.0)
    assert 0.4 < membership_auc(train, test, rng.normal(size=(400, 6))) < 0.6


# ----------------------------------------------------------------------------- run, report, filter


@pytest.fixture(scope="module")
def small_audit() -> tuple[np.ndarray, audit.AuditResult]:
    reals = _smooth_images(30, 10)
    syn = np.concatenate([_smooth_images(10, 11), reals[:2], np.ascontiguousarray(reals[2:3, :, ::-1])])
    result = run_audit(syn, reals[:20], AuditConfig(ct_cells=2, ct_min_samples=3, max_pairs_png=4), None,
                       reals[20:], name="unit")
    return syn, result


def test_report_json_and_png_written_atomically(small_audit, tmp_path: Path, monkeypatch) -> None:
    syn, result = small_audit
    json_path, png_path = tmp_path / "reports" / "audit_unit.json", tmp_path / "reports" / "audit_unit.png"
    write_audit_report(result, json_path, png_path)
    report = json.loads(json_path.read_text())
    assert report["counts"] == {"synthetic": 13, "real_train": 20, "real_test": 10, "flagged": 3, "kept": 10}
    assert [f["index"] for f in report["flagged"]] == [10, 11, 12]
    assert report["flagged"][2]["nearest_real_pixel"] == "train[2]"
    assert report["flagged"][2]["nearest_real_pixel_view"] == "full+flip"
    assert report["thresholds"]["pixel_ratio_threshold"] == 0.5 and report["pairs_png"] == "audit_unit.png"
    assert isinstance(report["data_copying"]["ct"], float) and 0 <= report["membership"]["auc_feature"] <= 1
    with Image.open(png_path) as im:
        assert im.size == (4 * (2 * 96 + 12), 96 + 28) and not im.info  # 4 pairs, no metadata
    assert sorted(p.name for p in json_path.parent.iterdir()) == ["audit_unit.json", "audit_unit.png"]

    before = json_path.read_bytes()

    def boom(_result):
        raise RuntimeError("disk full")

    monkeypatch.setattr(audit, "_pairs_png", boom)
    with pytest.raises(RuntimeError):
        write_audit_report(result, json_path, png_path)
    assert json_path.read_bytes() == before  # a failed rewrite leaves the old report whole
    assert sorted(p.name for p in json_path.parent.iterdir()) == ["audit_unit.json", "audit_unit.png"]


def test_filter_removes_exactly_the_flagged(small_audit, tmp_path: Path) -> None:
    syn, result = small_audit
    kept = filter_copies(syn, result)
    assert kept.indices.tolist() == list(range(10))
    np.testing.assert_array_equal(kept.items, syn[:10])

    paths = []
    for i, im in enumerate(syn):
        paths.append(tmp_path / f"s{i:02d}.png")
        Image.fromarray(im).save(paths[-1])
    on_files = run_audit(paths, result.real_images, result.config, None)
    kept_paths = filter_copies(paths, on_files)
    assert kept_paths.items == paths[:10]
    assert on_files.data_copying == {"status": audit.NOT_COMPUTED}  # no test split in this role
    with pytest.raises(AcneopsError, match="audit saw"):
        filter_copies(list(reversed(paths)), on_files)
    with pytest.raises(AcneopsError, match="covered 13"):
        filter_copies(syn[:5], result)


def test_same_inputs_same_report(small_audit) -> None:
    syn, result = small_audit
    again = run_audit(syn, result.real_images, result.config, None, result.real_images[:10], name="unit")
    first, second = result.to_dict(), again.to_dict()
    for d in (first, second):
        d.pop("timings_s"), d.pop("data_copying"), d.pop("data_copying_pixel"), d.pop("membership")
    assert first == second


# ----------------------------------------------------------------------------- bad input


def test_bad_input_gives_clear_errors(tmp_path: Path) -> None:
    reals = _smooth_images(6, 12)
    cfg = AuditConfig(ct_cells=2)
    with pytest.raises(AcneopsError, match="synthetic images: the set is empty"):
        run_audit([], reals, cfg, None)
    with pytest.raises(AcneopsError, match="synthetic images: the set is empty"):
        run_audit(reals[:0], reals, cfg, None)
    with pytest.raises(AcneopsError, match="at least 2"):
        run_audit(reals[:2], reals[:1], cfg, None)
    with pytest.raises(AcneopsError, match=r"uint8 array \(N, H, W, 3\)"):
        run_audit(reals.astype(np.float32), reals, cfg, None)
    with pytest.raises(AcneopsError, match="missing.png"):
        run_audit([tmp_path / "missing.png"], reals, cfg, None)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(AcneopsError, match="broken.png: cannot read image"):
        run_audit([bad], reals, cfg, None)
    with pytest.raises(AcneopsError, match="dimension 3 but real features has 4"):
        audit_copies(np.zeros((2, 3)), np.zeros((3, 4)), np.zeros((2, 5)), np.zeros((3, 5)), _cfg())
    with pytest.raises(AcneopsError, match="row 1 has NaN"):
        audit_copies(np.array([[0.0], [np.nan]]), np.zeros((3, 1)), np.zeros((2, 5)), np.zeros((3, 5)), _cfg())
    with pytest.raises(AcneopsError, match="disagree on the number of images"):
        audit_copies(np.zeros((2, 3)), np.zeros((3, 3)), np.zeros((4, 5)), np.zeros((3, 5)), _cfg())
    with pytest.raises(AcneopsError, match="dimension"):
        membership_auc(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 5)))


def test_config_from_params_rejects_unknown_keys_and_bad_values() -> None:
    cfg = audit_config({"audit": {"pixel_size": 32, "crop_scales": [0.9, 0.8]}})
    assert cfg.crop_scales == (0.9, 0.8) and cfg.pixel_size == 32
    with pytest.raises(ConfigError, match="unknown key"):
        audit_config({"audit": {"pixel_ratio": 0.5}})
    with pytest.raises(ConfigError, match="pixel_ratio_threshold"):
        audit_config({"audit": {"pixel_ratio_threshold": 1.5}})
    with pytest.raises(ConfigError, match="crop_positions"):
        audit_config({"audit": {"crop_positions": 4}})
    with pytest.raises(ConfigError, match="section 'audit'"):
        audit_config({})
