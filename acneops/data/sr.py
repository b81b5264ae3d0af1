"""Small residual super-resolution CNN, trained self-supervised on the dataset's own train images.

Papers:
- VDSR: J. Kim, J. K. Lee, K. M. Lee, "Accurate Image Super-Resolution Using Very Deep Convolutional
  Networks", CVPR 2016 — the network sees the interpolated image and learns only the residual, so
  any upscale factor works and an untrained network equals the interpolation.
- EDSR: B. Lim et al., "Enhanced Deep Residual Networks for Single Image Super-Resolution", CVPRW
  2017 — residual blocks without batch normalisation, L1 loss.

The input is the Lanczos-upscaled low-resolution image (B, 3, H, W) in [0, 1]; the output adds a
learned correction. The last convolution starts at zero, so before training ``sr`` == ``lanczos``
and training can only move away from it when that lowers the loss. Training pairs come from the
high-resolution TRAIN images only (held-out and test images never reach the optimiser): a random
patch is shrunk by ``scale`` with a random filter (box/bilinear/bicubic/lanczos, for robustness to
how web images were shrunk), Lanczos-upscaled back, and the network learns to recover the patch.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image
from torch import nn

from acneops.core.checkpoint import load_checkpoint
from acneops.core.checkpoint import save_checkpoint as write_checkpoint
from acneops.data.decode import psnr, resize_lanczos, ssim

DEGRADE_FILTERS = (Image.Resampling.BOX, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC,
                   Image.Resampling.LANCZOS)
EVAL_FILTER = Image.Resampling.BICUBIC  # the degradation used to measure restorers (standard in SR papers)


@dataclasses.dataclass(frozen=True)
class SRSettings:
    """Training settings (the ``sr_*`` keys of the ``restore`` params section)."""

    steps: int = 300  # optimiser steps
    batch: int = 16  # patches per step
    patch: int = 32  # px, side of a high-res training patch (multiple of scale)
    scale: int = 2  # downscale factor of the training pairs
    channels: int = 32  # feature channels
    blocks: int = 4  # residual blocks
    lr: float = 1e-3  # Adam learning rate (cosine-decayed to 0)
    seed: int = 0  # init + patch sampling seed


class ResBlock(nn.Module):
    """conv3x3 -> ReLU -> conv3x3, added to the input (EDSR block, no batch norm)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return x + self.conv2(torch.relu(self.conv1(x)))


class ResidualSR(nn.Module):
    """Residual refinement of an upscaled image: y = x + tail(body(head(x - 0.5)))."""

    def __init__(self, channels: int = 32, blocks: int = 4):
        super().__init__()
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(channels) for _ in range(blocks)])
        self.tail = nn.Conv2d(channels, 3, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [0, 1] -> same
        features = self.head(x - 0.5)
        return x + self.tail(self.body(features) + features)


def build_sr(channels: int, blocks: int) -> ResidualSR:
    return ResidualSR(channels=channels, blocks=blocks)


def degrade(hr: Image.Image, scale: int, resample: int) -> Image.Image:
    """Shrink ``hr`` by ``scale`` with ``resample`` and Lanczos-upscale it back to its size."""
    width, height = hr.size
    small = hr.resize((max(1, width // scale), max(1, height // scale)), resample)
    return small.resize((width, height), Image.Resampling.LANCZOS)


def _to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """List of RGB images -> (B, 3, H, W) float32 in [0, 1]."""
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 255.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def _to_image(x: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> RGB image (rounded to 8 bits)."""
    arr = (x.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(arr), mode="RGB")


def sample_batch(images: list[Image.Image], s: SRSettings, rng: np.random.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of (degraded input, high-res target) patches, each (B, 3, patch, patch)."""
    inputs, targets = [], []
    for _ in range(s.batch):
        hr = images[int(rng.integers(len(images)))]
        cells_x = (hr.width - s.patch) // s.scale + 1
        cells_y = (hr.height - s.patch) // s.scale + 1
        left = int(rng.integers(cells_x)) * s.scale
        top = int(rng.integers(cells_y)) * s.scale
        patch = hr.crop((left, top, left + s.patch, top + s.patch))
        resample = DEGRADE_FILTERS[int(rng.integers(len(DEGRADE_FILTERS)))]
        inputs.append(degrade(patch, s.scale, resample))
        targets.append(patch)
    return _to_tensor(inputs), _to_tensor(targets)


def train_sr(images: list[Image.Image], s: SRSettings) -> tuple[ResidualSR, torch.optim.Optimizer, list[float]]:
    """Train on high-res images (each at least ``patch`` px); returns (model, optimiser, loss per step).

    Single-threaded (see :func:`single_thread`): a few hundred steps on 32 px patches take about a minute.
    """
    from acneops.core.progress import progress

    if not images or min(min(im.size) for im in images) < s.patch:
        raise ValueError(f"train_sr needs images of at least {s.patch} px (sr_patch)")
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    model = build_sr(s.channels, s.blocks)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, s.steps))
    losses = []
    model.train()
    with single_thread():
        for _ in progress(range(s.steps), desc="restore: train sr", unit="step"):
            x, y = sample_batch(images, s, rng)
            loss = torch.nn.functional.l1_loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
    model.eval()
    return model, opt, losses


def save_checkpoint(path: Any, model: ResidualSR, opt: torch.optim.Optimizer, s: SRSettings,
                    extra: dict[str, Any]) -> str:
    """Write the SR net as kind ``sr`` of :mod:`acneops.core.checkpoint` ({'model', 'model_args', 'family',
    'step', 'config', 'optim', ...}), atomically; return the file's sha256."""
    return write_checkpoint(path, "sr", {
        "model": model.state_dict(),
        "model_args": {"channels": s.channels, "blocks": s.blocks},
        "family": "residual_sr",  # VDSR-style residual on a Lanczos upscale, EDSR blocks
        "step": s.steps,
        "config": dataclasses.asdict(s),
        "optim": opt.state_dict(),
        **extra,
    })


def load_sr(path: Any) -> ResidualSR:
    """Rebuild the network from a checkpoint written by :func:`save_checkpoint` (a wrong file names the fix)."""
    ckpt = load_checkpoint(path, "sr")
    model = build_sr(**ckpt["model_args"])
    model.load_state_dict(ckpt["model"])
    return model.eval()


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block: results then do not depend on the core count, and
    several worker processes do not oversubscribe a small machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def sr_upscale(model: ResidualSR, image: Image.Image, size: int) -> Image.Image:
    """Upscale ``image`` to ``size`` x ``size``: Lanczos, then the learned residual.

    Runs single-threaded so the bytes do not depend on how many threads or workers are used.
    """
    with single_thread():
        base = resize_lanczos(image, size)
        return _to_image(model(_to_tensor([base]))[0])


def compare_restorers(model: ResidualSR, holdout: list[Image.Image], scale: int) -> dict[str, Any]:
    """PSNR/SSIM (luma) of lanczos and sr on held-out high-res images shrunk by ``scale`` (bicubic)."""
    scores: dict[str, dict[str, list[float]]] = {"lanczos": {"psnr": [], "ssim": []}, "sr": {"psnr": [], "ssim": []}}
    for hr in holdout:
        size = hr.width
        low = hr.resize((size // scale, size // scale), EVAL_FILTER)
        for name, restored in (("lanczos", resize_lanczos(low, size)), ("sr", sr_upscale(model, low, size))):
            scores[name]["psnr"].append(min(psnr(restored, hr), 100.0))  # identical images: capped at 100 dB
            scores[name]["ssim"].append(ssim(restored, hr))
    means = {name: {k: float(np.mean(v)) for k, v in m.items()} for name, m in scores.items()}
    return {
        **means,
        "sr_beats_lanczos": {k: means["sr"][k] > means["lanczos"][k] for k in ("psnr", "ssim")},
        "holdout_images": len(holdout),
        "low_res": holdout[0].width // scale if holdout else 0,
        "degradation": f"bicubic downscale by {scale}",
        "metric_space": "luma BT.601, SSIM gauss 11/1.5",
    }
