"""DCGAN generator and discriminator (the second method's per-class GAN).

Paper: Radford, Metz, Chintala, "Unsupervised Representation Learning with Deep Convolutional Generative
Adversarial Networks", ICLR 2016. Used as in the project's second method (DESIGN.md): one DCGAN per
class at 64x64, z of 128x1x1, binary cross-entropy, Adam lr 1e-4, batch 128.

Architecture (paper section 3 and figure 1):
- G: z (B, z_dim) -> (B, z_dim, 1, 1) -> transposed conv 4x4 to a 4x4 map -> stride-2 transposed convs
  (kernel 4, padding 1), each doubling the resolution and halving the channels, with batch norm + ReLU,
  -> last transposed conv to ``img_channels`` with tanh (no batch norm on the output layer).
- D: the mirror image: stride-2 convs (kernel 4, padding 1) with LeakyReLU(0.2) and batch norm on every
  layer except the first, down to 4x4, then a 4x4 valid conv to one logit per image.
- No pooling, no fully connected hidden layers; weights N(0, 0.02), batch-norm scales N(1, 0.02),
  biases 0; conv biases are omitted where batch norm follows (it would cancel them), as in the
  PyTorch reference implementation.

Channels at resolution r are ``base_channels * img_resolution / (2 r)`` (capped at ``channel_max``), so
64 px with base 64 gives the classic 512-256-128-64 ladder; the number of blocks follows from the
resolution (any power of two >= 8; the project uses 32..256).

D returns logits (B, 1), not probabilities: the paper's sigmoid output is folded into the loss,
``binary_cross_entropy_with_logits`` == sigmoid + BCE but numerically stable (see :func:`bce_d_loss`).

Sampling: batch norm makes a train-mode forward depend on the other images in the batch. Generation
therefore runs ``G.eval()``, which uses the running statistics accumulated during training, so an image is
a function of its z (and so of its seed) only, whatever batch it is generated in.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from acneops.core.errors import AcneopsError

LRELU_SLOPE = 0.2  # LeakyReLU negative slope in D (paper, section 3)
INIT_STD = 0.02  # std of the N(0, 0.02) weight init (paper, section 4)


def _check_resolution(img_resolution: int, who: str) -> int:
    """The number of stride-2 layers (log2(res) - 2); a clear error for a non power of two or < 8."""
    res = int(img_resolution)
    if res < 8 or res & (res - 1) != 0:
        raise AcneopsError(f"{who}: img_resolution={img_resolution!r} must be a power of two >= 8 "
                           "(e.g. 32, 64, 128, 256); fix the resolution in params.yaml")
    return int(math.log2(res)) - 2


def _channels(res: int, img_resolution: int, base_channels: int, channel_max: int) -> int:
    """Feature maps at resolution ``res``: base * img_resolution / (2 res), capped at channel_max."""
    return min(base_channels * img_resolution // (2 * res), channel_max)


def init_weights(module: nn.Module) -> None:
    """DCGAN init: conv weights N(0, 0.02), batch-norm scale N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, INIT_STD)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, INIT_STD)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """z (B, z_dim) -> images (B, img_channels, R, R) in [-1, 1]. Sample with ``G.eval()`` (module doc)."""

    def __init__(self, z_dim: int = 128, img_resolution: int = 64, img_channels: int = 3,
                 base_channels: int = 64, channel_max: int = 512):
        super().__init__()
        n_up = _check_resolution(img_resolution, "DCGAN Generator")
        if min(z_dim, img_channels, base_channels, channel_max) < 1:
            raise AcneopsError(f"DCGAN Generator: z_dim={z_dim}, img_channels={img_channels}, "
                               f"base_channels={base_channels}, channel_max={channel_max} must all be >= 1")
        self.z_dim = int(z_dim)
        self.img_resolution = int(img_resolution)
        self.img_channels = int(img_channels)
        self.model_args = dict(z_dim=self.z_dim, img_resolution=self.img_resolution,
                               img_channels=self.img_channels, base_channels=int(base_channels),
                               channel_max=int(channel_max))
        ch = lambda r: _channels(r, self.img_resolution, base_channels, channel_max)  # noqa: E731
        layers: list[nn.Module] = [nn.ConvTranspose2d(self.z_dim, ch(4), 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(ch(4)), nn.ReLU(inplace=True)]  # (B, ch(4), 4, 4)
        res = 4
        for _ in range(n_up - 1):
            layers += [nn.ConvTranspose2d(ch(res), ch(2 * res), 4, 2, 1, bias=False),
                       nn.BatchNorm2d(ch(2 * res)), nn.ReLU(inplace=True)]
            res *= 2
        layers += [nn.ConvTranspose2d(ch(res), self.img_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, z_dim) (or (B, z_dim, 1, 1)) -> images (B, C, R, R) in [-1, 1]."""
        if z.ndim == 2:
            z = z[:, :, None, None]
        if z.ndim != 4 or tuple(z.shape[1:]) != (self.z_dim, 1, 1):
            raise AcneopsError(f"DCGAN Generator expects z of shape (B, {self.z_dim}), got {tuple(z.shape)}")
        return self.main(z)


class Discriminator(nn.Module):
    """images (B, img_channels, R, R) -> logits (B, 1); apply the sigmoid in the loss (module doc).

    Call it separately on a real and on a fake batch, as the DCGAN reference does, so each batch-norm
    statistic comes from one kind of image.
    """

    def __init__(self, img_resolution: int = 64, img_channels: int = 3, base_channels: int = 64,
                 channel_max: int = 512):
        super().__init__()
        n_down = _check_resolution(img_resolution, "DCGAN Discriminator")
        if min(img_channels, base_channels, channel_max) < 1:
            raise AcneopsError(f"DCGAN Discriminator: img_channels={img_channels}, base_channels="
                               f"{base_channels}, channel_max={channel_max} must all be >= 1")
        self.img_resolution = int(img_resolution)
        self.img_channels = int(img_channels)
        self.model_args = dict(img_resolution=self.img_resolution, img_channels=self.img_channels,
                               base_channels=int(base_channels), channel_max=int(channel_max))
        ch = lambda r: _channels(r, self.img_resolution, base_channels, channel_max)  # noqa: E731
        res = self.img_resolution // 2
        # No batch norm on the input layer (paper, section 3).
        layers: list[nn.Module] = [nn.Conv2d(self.img_channels, ch(res), 4, 2, 1, bias=False),
                                   nn.LeakyReLU(LRELU_SLOPE, inplace=True)]
        for _ in range(n_down - 1):
            layers += [nn.Conv2d(ch(res), ch(res // 2), 4, 2, 1, bias=False),
                       nn.BatchNorm2d(ch(res // 2)), nn.LeakyReLU(LRELU_SLOPE, inplace=True)]
            res //= 2
        layers += [nn.Conv2d(ch(4), 1, 4, 1, 0, bias=False)]  # (B, 1, 1, 1)
        self.main = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """images (B, C, R, R) -> logits (B, 1)."""
        expected = (self.img_channels, self.img_resolution, self.img_resolution)
        if img.ndim != 4 or tuple(img.shape[1:]) != expected:
            raise AcneopsError(f"DCGAN Discriminator expects images of shape (B, {expected[0]}, "
                               f"{expected[1]}, {expected[2]}), got {tuple(img.shape)}")
        return self.main(img).flatten(1)


def bce_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D's BCE loss: -log sigmoid(D(real)) - log(1 - sigmoid(D(fake))), each averaged over its batch."""
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def bce_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """G's non-saturating BCE loss -log sigmoid(D(G(z))) (fakes labelled real, as in the DCGAN reference)."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def build_dcgan(img_resolution: int = 64, z_dim: int = 128, base_channels: int = 64,
                img_channels: int = 3) -> tuple[Generator, Discriminator]:
    """A matching (G, D) pair, freshly initialised from torch's global RNG."""
    G = Generator(z_dim=z_dim, img_resolution=img_resolution, img_channels=img_channels,
                  base_channels=base_channels)
    D = Discriminator(img_resolution=img_resolution, img_channels=img_channels, base_channels=base_channels)
    return G, D


MODELS = {"dcgan": (Generator, Discriminator)}  # family name -> (G class, D class)
