"""Behaviour of the anonymity audit on realistic faces (the built-in phantom renderer, 64 px).

Real images: 60 train + 60 test phantom faces; an honest "generator" draws new faces from the same
renderer with another seed; planted copies are train images with the edits a memorising generator
or a careless pipeline produces. Features come from the 'tiny' extractor. The measured rates are
printed (pytest -s) so the report can quote them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from acneops.audit import AuditConfig, filter_copies, run_audit, write_audit_report
from acneops.data.phantom import PhantomConfig, render
from acneops.features.extractors import get_extractor

LABELS = ("healthy", "mild", "moderate", "severe")
CFG = AuditConfig(ct_cells=3, ct_min_samples=10)


def phantom_faces(n: int, seed: int, size: int = 64) -> np.ndarray:
    """n phantom faces (N, size, size, 3) uint8, all four acne grades in turn."""
    cfg = PhantomConfig(seed=seed, hr_size=size, supersample=1, lr_size=16)
    return np.stack([np.asarray(render(cfg, LABELS[i % 4], i // 4)[0]) for i in range(n)])


def noisy(x: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(x + rng.normal(0.0, sigma, x.shape), 0, 255).astype(np.uint8)


def crop(x: np.ndarray, frac: float, fy: float, fx: float) -> np.ndarray:
    """Crop ``frac`` of each side at anchor (fy, fx) of the free margin, resize back."""
    out = []
    for im in x:
        h, w = im.shape[:2]
        ch, cw = round(h * frac), round(w * frac)
        top, left = round((h - ch) * fy), round((w - cw) * fx)
        out.append(np.asarray(Image.fromarray(im[top:top + ch, left:left + cw]).resize((w, h), Image.BILINEAR)))
    return np.stack(out)


def brightness(x: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(x * factor, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def faces() -> dict[str, np.ndarray]:
    real = phantom_faces(120, seed=11)
    return {"train": real[:60], "test": real[60:], "honest": phantom_faces(200, seed=12)}


@pytest.fixture(scope="module")
def tiny():
    return get_extractor("tiny", seed=0)


def planted_copies(train: np.ndarray) -> dict[str, np.ndarray]:
    t = train
    mirror = np.ascontiguousarray(t[:, :, ::-1])
    return {
        "exact": t[0:6],
        "noise_sigma8": noisy(t[6:12], 8, 1),
        "noise_sigma15": noisy(t[12:18], 15, 2),
        "flip": mirror[18:24],
        "flip+noise": noisy(mirror[24:30], 8, 3),
        "crop90_centre": crop(t[30:36], 0.9, 0.5, 0.5),
        "crop90_corner": crop(t[36:42], 0.9, 0.0, 1.0),
        "crop90_offgrid": crop(t[42:48], 0.9, 0.25, 0.75),
        "brighter10": brightness(t[48:54], 1.1),
        "darker10": brightness(t[54:60], 0.9),
        "crop90+flip+noise": noisy(crop(mirror[0:6], 0.9, 0.75, 0.25), 6, 4),
    }


def test_planted_copies_all_flagged_honest_sample_mostly_not(faces, tiny, tmp_path: Path) -> None:
    planted = planted_copies(faces["train"])
    crop85 = crop(faces["train"][:12], 0.85, 0.5, 0.5)  # beyond the 0.9 crop views: partly caught
    syn = np.concatenate([faces["honest"], *planted.values(), crop85])
    result = run_audit(syn, faces["train"], CFG, tiny, name="planted")
    c, n = result.copy, len(faces["honest"])
    honest_rate = c.flags[:n].mean()
    print(f"\nhonest flagged {honest_rate:.1%}; rule (a) alone {c.rule_authenticity[:n].mean():.1%}, "
          f"pixel ratio {c.rule_pixel_ratio[:n].mean():.1%}, pixel abs {c.rule_pixel_abs[:n].mean():.1%}")
    start = n
    for kind, images in planted.items():
        part = slice(start, start + len(images))
        flags = c.flags[part]
        print(f"{kind:18s} flagged {flags.mean():.0%}  rule(a) {c.rule_authenticity[part].mean():.0%}"
              f"  d1/d2 max {c.pix_ratio[part].max():.2f}  d1/median max {c.pix_rel[part].max():.2f}")
        assert flags.all(), f"planted {kind} copies not all flagged: {np.flatnonzero(~flags) + start}"
        nearest = c.pix_nn_idx[part]
        assert len(set(nearest.tolist())) == len(images)  # each copy found its own source image
        start += len(images)
    crop85_rate = c.flags[start:].mean()
    print(f"crop85_centre      flagged {crop85_rate:.0%} (pixel ratio alone {c.rule_pixel_ratio[start:].mean():.0%})")
    assert crop85_rate >= 0.5  # rule (a) + pixel closeness is the safety net beyond the crop views
    assert honest_rate < 0.05
    # Rule (a) alone would flag a large share of honest samples: that is why it needs pixel closeness.
    assert c.rule_authenticity[:n].mean() > 0.3 > honest_rate

    report = write_audit_report(result, tmp_path / "audit_planted.json", tmp_path / "audit_planted.png")
    assert report["counts"]["flagged"] == int(c.flags.sum()) >= 66 + 6
    written = json.loads((tmp_path / "audit_planted.json").read_text())
    assert written["data_copying"]["status"].startswith("not computed")


def test_nearest_real_is_the_source_for_every_planted_kind(faces, tiny) -> None:
    train = faces["train"]
    planted = planted_copies(train)
    result = run_audit(np.concatenate(list(planted.values())), train, CFG, tiny)
    sources = np.concatenate([np.arange(0, 60), np.arange(0, 6)])  # the source train index of each copy
    np.testing.assert_array_equal(result.copy.pix_nn_idx, sources)
    names = [result.copy.view_names[v] for v in result.copy.pix_nn_view]
    assert all(n.endswith("+flip") for n in names[18:30])  # mirrored copies matched the mirrored view


def test_filter_leaves_a_set_that_passes_the_audit(faces, tiny) -> None:
    syn = np.concatenate([faces["honest"][:80], faces["train"][:10], noisy(faces["train"][10:20, :, ::-1], 8, 5)])
    first = run_audit(syn, faces["train"], CFG, tiny)
    kept = filter_copies(syn, first)
    assert set(range(80, 100)) <= set(np.flatnonzero(first.copy.flags).tolist())
    assert len(kept.indices) >= 76
    again = run_audit(kept.items, faces["train"], CFG, tiny)
    assert not again.copy.flags.any()


def test_data_copying_ct_separates_copying_from_honest_generators(faces, tiny) -> None:
    train, test = faces["train"], faces["test"]
    copier = noisy(np.repeat(train, 3, axis=0), 8, 6)  # 180 noisy copies of the train images
    honest = faces["honest"][:180]
    ct_copy = run_audit(copier, train, CFG, tiny, test).data_copying
    ct_honest = run_audit(honest, train, CFG, tiny, test).data_copying
    print(f"\nC_T copying {ct_copy['ct']:.2f} ({ct_copy['cells_used']} cells), "
          f"honest {ct_honest['ct']:.2f} ({ct_honest['cells_used']} cells)")
    assert ct_copy["ct"] < -3
    assert ct_honest["ct"] > -2
    assert ct_copy["cells_used"] >= 2 and ct_honest["cells_used"] >= 2


def test_membership_auc_near_one_for_memorising_half_for_independent(faces, tiny) -> None:
    train, test = faces["train"], faces["test"]
    memoriser = run_audit(noisy(train, 8, 7), train, CFG, tiny, test).membership
    independent = run_audit(faces["honest"], train, CFG, tiny, test).membership
    print(f"\nmembership AUC memorising {memoriser}, independent {independent}")
    assert memoriser["auc_feature"] > 0.95 and memoriser["auc_pixel"] > 0.95
    assert 0.35 < independent["auc_feature"] < 0.65 and 0.35 < independent["auc_pixel"] < 0.65


def test_audit_on_files_names_the_flagged_files_and_their_sources(faces, tiny, tmp_path: Path) -> None:
    def write(images: np.ndarray, folder: str) -> list[Path]:
        paths = []
        for i, im in enumerate(images):
            paths.append(tmp_path / folder / f"{folder}_{i:03d}.png")
            paths[-1].parent.mkdir(exist_ok=True)
            Image.fromarray(im).save(paths[-1])
        return paths

    train = write(faces["train"], "train")
    syn = write(np.concatenate([faces["honest"][:20], np.ascontiguousarray(faces["train"][[5, 9], :, ::-1])]), "syn")
    result = run_audit(syn, train, CFG, tiny, name="files")
    report = write_audit_report(result, tmp_path / "audit_files.json", tmp_path / "audit_files.png")
    pairs = {(Path(f["synthetic"]).name, Path(f["nearest_real_pixel"]).name) for f in report["flagged"]}
    assert {("syn_020.png", "train_005.png"), ("syn_021.png", "train_009.png")} <= pairs
    assert filter_copies(syn, result).items[-1] == syn[19]
