"""acneops.gan.sampling: deterministic per seed, independent of batch size, self-describing checkpoints."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from acneops.core.config import build
from acneops.core.errors import AcneopsError
from acneops.gan import checkpoint
from acneops.gan import dist as gan_dist
from acneops.gan.config import TrainGanConfig
from acneops.gan.sampling import generate, load_generator, save_images

NET = {"resolution": 32, "z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 128, "channel_max": 16,
       "batch": 4, "labels": ["healthy"], "name": "g", "device": "cpu"}


def _checkpoint(tmp_path: Path, family: str = "stylegan2", seed: int = 0) -> Path:
    """A checkpoint of freshly initialised networks (with a non-trivial w_avg), as train_gan writes it."""
    from acneops.gan.loop import build_state, state_dict

    extra = {"family": "dcgan", "base_channels": 8, "r1_gamma": 0.0, "pl_weight": 0.0,
             "style_mixing": 0.0} if family == "dcgan" else {}
    cfg = build(TrainGanConfig, {**NET, "out_dir": str(tmp_path), "seed": seed, **extra}, "test")
    state = build_state(cfg, gan_dist.Dist())
    if family == "stylegan2":
        with torch.no_grad():
            state.G_ema.mapping(torch.randn(64, cfg.z_dim), update_emas=True)
    path = tmp_path / f"{family}-{seed}.pt"
    checkpoint.save(path, state_dict(state, cfg))
    return path


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to one grey level (GEMM rounding differs between batch sizes, module doc)."""
    return a.shape == b.shape and int(np.abs(a.astype(np.int16) - b).max()) <= 1


def test_same_seed_same_image_whatever_the_batch(tmp_path):
    path = _checkpoint(tmp_path)
    seeds = [3, 4, 5, 6, 7, 8, 9]
    a = generate(path, seeds, batch=4)
    assert a.dtype == np.uint8 and a.shape == (7, 32, 32, 3)
    assert np.array_equal(a, generate(path, seeds, batch=4))  # same call, same bytes
    assert _close(a, generate(path, seeds, batch=1))
    assert _close(a, generate(path, seeds, batch=32))
    assert _close(a[2:3], generate(path, [5]))
    assert not np.array_equal(a[0], a[1])  # different seeds, different images
    assert a.std() > 1  # not a constant image


def test_truncation_and_random_noise(tmp_path):
    path = _checkpoint(tmp_path)
    psi0 = generate(path, [1, 2, 3], psi=0.0)
    assert np.array_equal(psi0[0], psi0[1]) and np.array_equal(psi0[1], psi0[2])  # all at w_avg
    assert not np.array_equal(generate(path, [1], psi=0.7), generate(path, [1], psi=1.0))
    r = generate(path, [1, 2, 3], noise_mode="random", batch=3)
    assert np.array_equal(r, generate(path, [1, 2, 3], noise_mode="random", batch=1))  # one at a time anyway
    assert np.array_equal(r[1:2], generate(path, [2], noise_mode="random"))
    state = torch.get_rng_state()
    generate(path, [1], noise_mode="random")
    assert torch.equal(state, torch.get_rng_state())  # the caller's RNG is left alone


def test_dcgan_checkpoint_generates_and_rejects_truncation(tmp_path):
    path = _checkpoint(tmp_path, "dcgan")
    images = generate(path, [0, 1, 2], batch=2)
    assert images.shape == (3, 32, 32, 3)
    assert _close(images, generate(path, [0, 1, 2], batch=3))
    with pytest.raises(AcneopsError, match="no truncation"):
        generate(path, [0], psi=0.7)


def test_load_generator_is_cached_per_file_version(tmp_path):
    path = _checkpoint(tmp_path)
    G1, family = load_generator(path)
    assert family == "stylegan2" and not G1.training
    assert load_generator(path)[0] is G1
    other = _checkpoint(tmp_path, seed=1)
    other.replace(path)  # a new training replaced the file
    assert load_generator(path)[0] is not G1


def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(AcneopsError, match="checkpoint not found"):
        generate(tmp_path / "missing.pt", [0])
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(AcneopsError, match="not a readable acneops checkpoint"):
        generate(junk, [0])
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(AcneopsError, match="not an acneops GAN checkpoint"):
        generate(foreign, [0])


def test_save_images_writes_clean_pngs(tmp_path):
    from PIL import Image

    images = generate(_checkpoint(tmp_path), [0, 1])
    shas = save_images(images, tmp_path / "out", ["seed0000.png", "seed0001.png"])
    assert len(shas) == 2 and shas[0] != shas[1]
    with Image.open(tmp_path / "out" / "seed0000.png") as im:
        assert np.array_equal(np.asarray(im), images[0]) and not im.info.get("exif")
    with pytest.raises(AcneopsError, match="2 images but 1 names"):
        save_images(images, tmp_path / "out", ["x.png"])


def test_training_after_generation_in_the_same_process(tmp_path):
    """A flow may generate (inference mode) and then train in one process: nothing generation
    caches may leak inference tensors into training (StyleGAN2's FIR kernel cache once did)."""
    generate(_checkpoint(tmp_path), [0, 1])
    G, _ = load_generator(_checkpoint(tmp_path, seed=2))
    G = copy.deepcopy(G).train().requires_grad_(True)
    G(torch.randn(2, G.z_dim)).square().mean().backward()
    assert all(p.grad is not None for p in G.synthesis.parameters())
