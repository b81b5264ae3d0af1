"""A short training on a trivially learnable distribution (phantom healthy faces, 32 px) measurably
moves the generator toward it.

Distance: Fréchet distance between Gaussians fitted to pixel statistics (the mean colour of each
4x4 patch of the 32x32 image, 192 numbers per image) of 128 generated and the 64 training images.
It is computed for the untrained generator (the same seed's initial weights) and for the trained
G_ema, both through the public generation path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gan_testkit import make_restored
from scipy import linalg

SEEDS = list(range(1000, 1128))


def patch_features(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 32, 32, 3) -> (N, 192) mean colour of each 4x4 patch, in [0, 1]."""
    x = images.astype(np.float64) / 255.0
    n, h, w, c = x.shape
    return x.reshape(n, 8, h // 8, 8, w // 8, c).mean(axis=(2, 4)).reshape(n, -1)


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


FAMILIES = {
    "stylegan2": ({"channel_base": 1024, "channel_max": 64, "r1_gamma": 0.05, "lr_g": 0.0025, "lr_d": 0.0025,
                   "ema_kimg": 0.1, "total_kimg": 0.32}, 0.6),
    # DCGAN at its paper's Adam settings learns more slowly: a smaller but still clear improvement
    "dcgan": ({"family": "dcgan", "base_channels": 16, "betas": [0.5, 0.999], "lr_g": 0.0002, "lr_d": 0.0002,
               "ema_kimg": 0.0, "r1_gamma": 0.0, "pl_weight": 0.0, "style_mixing": 0.0, "total_kimg": 0.64}, 0.93),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_short_training_moves_the_generator_toward_the_data(tmp_path, monkeypatch, family):
    from acneops.core.config import build
    from acneops.gan import checkpoint
    from acneops.gan import dist as gan_dist
    from acneops.gan.bank import ImageBank, training_files
    from acneops.gan.config import TrainGanConfig
    from acneops.gan.loop import build_state
    from acneops.gan.sampling import generate, synthesize
    from acneops.stages.train_gan import run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    restored = make_restored(tmp_path, per_class=64, labels=("healthy",))
    settings, ratio = FAMILIES[family]
    values = {"name": "learn", "out_dir": str(tmp_path / "out"), "metrics_path": str(tmp_path / "learn.json"),
              "plots_path": str(tmp_path / "learn_stats.json"),
              "labels": ["healthy"], "restored_dir": str(restored),
              "resolution": 32, "z_dim": 64, "w_dim": 64, "mapping_layers": 2, "batch": 16, "ada": False,
              "snapshot_kimg": 1.0, "tick_kimg": 0.16, "grid_seeds": 4, "workers": 2, "device": "cpu", **settings}
    cfg = build(TrainGanConfig, values, "test")
    result = run(cfg)

    real = ImageBank(training_files(restored, ("healthy",), None), 32).batch(torch.arange(64))
    real_feats = patch_features(real.permute(0, 2, 3, 1).numpy())
    untrained = build_state(cfg, gan_dist.Dist()).G_ema  # the run's initial weights (seeded)
    before = frechet(real_feats, patch_features(synthesize(untrained, family, SEEDS)))
    after = frechet(real_feats, patch_features(generate(result.checkpoint, SEEDS)))
    assert np.isfinite(after) and after < ratio * before, f"{family}: FD {before:.3f} -> {after:.3f}"
    assert checkpoint.load(result.checkpoint)["cur_nimg"] == round(cfg.total_kimg * 1000)
