"""Adaptive discriminator augmentation (ADA): the differentiable augmentation pipeline and its p controller.

Paper: Karras, Aittala, Hellsten, Laine, Lehtinen, Aila, "Training Generative Adversarial Networks with
Limited Data", NeurIPS 2020 (Karras et al. 2020b). Semantics follow NVIDIA's reference implementation
(stylegan2-ada-pytorch, training/augment.py and the ADA update in training/training_loop.py); the code is
our own.

Why: with a few hundred or thousand images D memorises the training set and G training collapses. ADA
shows D only augmented images (reals *and* fakes, with the same distribution of augmentations), and
because every augmentation is applied with probability p < 1 and is differentiable, G still learns the
un-augmented distribution ("non-leaking"). p is tuned on the fly from the overfitting heuristic
r_t = E[sign(D(real))]: above the target (0.6) D is too sure of the reals, so p rises.

Pipeline (per image, each transform independently with probability ``p * multiplier``):
1. pixel blitting: x-flip, 90-degree rotations, integer translation;
2. general geometric: isotropic scale, pre-rotation, anisotropic scale, post-rotation, fractional translation
   (pre and post rotation each with probability 1 - sqrt(1 - p), so "any rotation" has probability p);
3. colour: brightness, contrast, luma flip, hue rotation, saturation.
Group 1 is composed into one integer 3x3 matrix per image and applied as an exact pixel gather (lossless,
reflecting at the border); group 2 is composed into one 3x3 matrix per image and applied once on the
result (reflect padding, 2x super-sampling with the orthogonal sym6 wavelet filter, bilinear
``grid_sample``, low-pass decimation, see :mod:`acneops.gan.ada.transforms`); group 3 is one 4x4 colour matrix
per image. The reference composes groups 1 and 2 into a single matrix and resamples once; since blits are
lossless, applying them first gives the same image except that (a) flips and quarter turns are exact here
(the reference's sym6 path shifts them by ~0.1 px, the filter not being linear-phase) and (b) content
reflected in from far outside the frame may differ when a large translation meets a large rotation.
The reference's optional image-space filtering and corruption groups (not in the issue) are not
implemented.

Random draws use torch's global RNG on the images' device, in the reference's order, so a training loop
that saves and restores the RNG state resumes bit-exactly. Further departures, both
equivalent up to float rounding: 90-degree rotations use exact integer matrices, and each stage is skipped
when every image of the batch drew its identity (the reference resamples anyway).
p == 0 returns the input tensor itself without drawing random numbers.
"""

from __future__ import annotations

import math

import torch

from acneops.core.errors import AcneopsError
from acneops.gan.ada import AUGMENT_SPECS  # noqa: F401  (re-exported: the presets live in one place)
from acneops.gan.ada import transforms as ops


class AugmentPipe(torch.nn.Module):
    """Differentiable ADA augmentation of images (B, C, H, W); ``p`` (buffer) is the overall probability.

    Each ``<transform>`` argument is a probability multiplier (0 disables it, 1 = ADA's 'bgc' setting);
    the ``*_std`` / ``*_max`` arguments set the strength as in the paper. p starts at 0.
    """

    def __init__(self, xflip: float = 0, rotate90: float = 0, xint: float = 0, scale: float = 0,
                 rotate: float = 0, aniso: float = 0, xfrac: float = 0, brightness: float = 0,
                 contrast: float = 0, lumaflip: float = 0, hue: float = 0, saturation: float = 0,
                 xint_max: float = 0.125, scale_std: float = 0.2, rotate_max: float = 1,
                 aniso_std: float = 0.2, xfrac_std: float = 0.125, brightness_std: float = 0.2,
                 contrast_std: float = 0.5, hue_max: float = 1, saturation_std: float = 1):
        super().__init__()
        self.register_buffer("p", torch.zeros([]))  # overall augmentation probability, scalar
        # Probability multipliers.
        self.xflip, self.rotate90, self.xint = float(xflip), float(rotate90), float(xint)
        self.scale, self.rotate = float(scale), float(rotate)
        self.aniso, self.xfrac = float(aniso), float(xfrac)
        self.brightness, self.contrast, self.lumaflip = float(brightness), float(contrast), float(lumaflip)
        self.hue, self.saturation = float(hue), float(saturation)
        # Strengths.
        self.xint_max = float(xint_max)  # integer translation range, fraction of image size
        self.scale_std = float(scale_std)  # isotropic scale, log2 standard deviation
        self.rotate_max = float(rotate_max)  # rotation range, 1 = full circle
        self.aniso_std = float(aniso_std)  # anisotropic scale, log2 standard deviation
        self.xfrac_std = float(xfrac_std)  # fractional translation std, fraction of image size
        self.brightness_std = float(brightness_std)  # additive brightness std (image units)
        self.contrast_std = float(contrast_std)  # contrast, log2 standard deviation
        self.hue_max = float(hue_max)  # hue rotation range, 1 = full circle
        self.saturation_std = float(saturation_std)  # saturation, log2 standard deviation
        for name in ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness",
                     "contrast", "lumaflip", "hue", "saturation", "xint_max", "scale_std", "rotate_max",
                     "aniso_std", "xfrac_std", "brightness_std", "contrast_std", "hue_max", "saturation_std"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise AcneopsError(f"AugmentPipe: {name}={value!r} must be a finite number >= 0; "
                                   "fix the ADA settings")
        self.register_buffer("lowpass", ops.lowpass_filter(), persistent=False)  # sym6, (12,)

    def extra_repr(self) -> str:
        on = [n for n in ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness",
                          "contrast", "lumaflip", "hue", "saturation") if getattr(self, n) > 0]
        return f"p={float(self.p):.4f}, transforms={on}"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Augment images (B, C, H, W); differentiable w.r.t. ``images`` (also twice, for R1)."""
        if not (isinstance(images, torch.Tensor) and images.ndim == 4):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise AcneopsError(f"AugmentPipe expects images of shape (B, C, H, W), got {shape}")
        if float(self.p) == 0:
            return images
        batch, channels, height, width = images.shape
        I_3 = torch.eye(3, device=images.device)
        G_blit = self._blit_matrix(batch, width, height, images.device)
        G_geom = self._geometric_matrix(batch, width, height, images.device)
        if not torch.equal(G_blit, I_3.expand_as(G_blit)):
            images = ops.apply_blit(images, G_blit)
        if not torch.equal(G_geom, I_3.expand_as(G_geom)):
            images = ops.apply_geometric(images, G_geom, self.lowpass)
        C = self._color_matrix(batch, channels, images.device)
        if not torch.equal(C, torch.eye(4, device=images.device).expand_as(C)):
            images = ops.apply_color(images, C)
        return images

    def _chosen(self, multiplier: float, shape: list[int], device: torch.device) -> torch.Tensor:
        """Bool mask of images that get a transform: uniform draw < multiplier * p."""
        return torch.rand(shape, device=device) < multiplier * self.p

    def _blit_matrix(self, batch: int, width: int, height: int, device: torch.device) -> torch.Tensor:
        """Inverse transform (B, 3, 3) of the pixel-blitting group: x-flip, quarter turns, integer shift."""
        G_inv = torch.eye(3, device=device).repeat(batch, 1, 1)
        if self.xflip > 0:
            i = torch.floor(torch.rand([batch], device=device) * 2)
            i = torch.where(self._chosen(self.xflip, [batch], device), i, torch.zeros_like(i))
            G_inv = G_inv @ ops.scale2d(1 - 2 * i, torch.ones_like(i))
        if self.rotate90 > 0:
            k = torch.floor(torch.rand([batch], device=device) * 4)
            k = torch.where(self._chosen(self.rotate90, [batch], device), k, torch.zeros_like(k))
            G_inv = G_inv @ ops.rotate2d_quarter(k)  # inverse of a rotation by -k quarter turns
        if self.xint > 0:
            t = (torch.rand([batch, 2], device=device) * 2 - 1) * self.xint_max
            t = torch.where(self._chosen(self.xint, [batch, 1], device), t, torch.zeros_like(t))
            G_inv = G_inv @ ops.translate2d(-torch.round(t[:, 0] * width), -torch.round(t[:, 1] * height))
        return G_inv

    def _geometric_matrix(self, batch: int, width: int, height: int, device: torch.device) -> torch.Tensor:
        """Inverse transform (B, 3, 3) of the general geometric group, composed in the paper's order."""
        G_inv = torch.eye(3, device=device).repeat(batch, 1, 1)
        ones = torch.ones([batch], device=device)
        if self.scale > 0:
            s = torch.exp2(torch.randn([batch], device=device) * self.scale_std)
            s = torch.where(self._chosen(self.scale, [batch], device), s, ones)
            G_inv = G_inv @ ops.scale2d(1 / s, 1 / s)
        # Pre- and post-rotation each with probability 1 - sqrt(1 - p): P(at least one) = p * rotate.
        p_rot = 1 - torch.sqrt((1 - self.rotate * self.p).clamp(0, 1))
        if self.rotate > 0:
            theta = (torch.rand([batch], device=device) * 2 - 1) * math.pi * self.rotate_max
            theta = torch.where(torch.rand([batch], device=device) < p_rot, theta, torch.zeros_like(theta))
            G_inv = G_inv @ ops.rotate2d(theta)  # inverse of a rotation by -theta
        if self.aniso > 0:
            s = torch.exp2(torch.randn([batch], device=device) * self.aniso_std)
            s = torch.where(self._chosen(self.aniso, [batch], device), s, ones)
            G_inv = G_inv @ ops.scale2d(1 / s, s)
        if self.rotate > 0:
            theta = (torch.rand([batch], device=device) * 2 - 1) * math.pi * self.rotate_max
            theta = torch.where(torch.rand([batch], device=device) < p_rot, theta, torch.zeros_like(theta))
            G_inv = G_inv @ ops.rotate2d(theta)
        if self.xfrac > 0:
            t = torch.randn([batch, 2], device=device) * self.xfrac_std
            t = torch.where(self._chosen(self.xfrac, [batch, 1], device), t, torch.zeros_like(t))
            G_inv = G_inv @ ops.translate2d(-t[:, 0] * width, -t[:, 1] * height)
        return G_inv

    def _color_matrix(self, batch: int, channels: int, device: torch.device) -> torch.Tensor:
        """Colour transform (B, 4, 4) acting on homogeneous RGB: C @ [r, g, b, 1]."""
        I_4 = torch.eye(4, device=device)
        C = I_4.repeat(batch, 1, 1)
        if self.brightness > 0:
            b = torch.randn([batch], device=device) * self.brightness_std
            b = torch.where(self._chosen(self.brightness, [batch], device), b, torch.zeros_like(b))
            C = ops.translate3d(b, b, b) @ C
        if self.contrast > 0:
            c = torch.exp2(torch.randn([batch], device=device) * self.contrast_std)
            c = torch.where(self._chosen(self.contrast, [batch], device), c, torch.ones_like(c))
            C = ops.scale3d(c, c, c) @ C
        v = ops.luma_axis(device)
        vvT = torch.outer(v, v)
        if self.lumaflip > 0:
            i = torch.floor(torch.rand([batch, 1, 1], device=device) * 2)
            i = torch.where(self._chosen(self.lumaflip, [batch, 1, 1], device), i, torch.zeros_like(i))
            C = (I_4 - 2 * vvT * i) @ C  # Householder reflection of the luma component
        if self.hue > 0 and channels > 1:
            theta = (torch.rand([batch], device=device) * 2 - 1) * math.pi * self.hue_max
            theta = torch.where(self._chosen(self.hue, [batch], device), theta, torch.zeros_like(theta))
            C = ops.rotate3d(v, theta) @ C  # rotate around the grey axis
        if self.saturation > 0 and channels > 1:
            s = torch.exp2(torch.randn([batch, 1, 1], device=device) * self.saturation_std)
            s = torch.where(self._chosen(self.saturation, [batch, 1, 1], device), s, torch.ones_like(s))
            C = (vvT + (I_4 - vvT) * s) @ C  # scale the chroma, keep the luma
        return C


class AdaController:
    """Adjusts ``pipe.p`` from the sign of D's logits on real images (ADA's r_t heuristic).

    Call :meth:`accumulate` with D's real logits on every D step and :meth:`update` once every
    ``interval`` D steps. Each update moves p by ``sign(r_t - target) * batch_size * interval /
    (speed_kimg * 1000)`` (so p can go from 0 to 1 in ``speed_kimg`` thousand real images), clamped to
    [0, 1]; r_t is the mean sign over everything accumulated since the previous update. Under
    torch.distributed the sums are all-reduced, so every rank computes the same p (``batch_size`` is then
    the global batch).
    """

    def __init__(self, pipe: AugmentPipe, target: float = 0.6, interval: int = 4, speed_kimg: float = 500,
                 batch_size: int = 32):
        checks = {"target": 0 <= target <= 1, "interval": interval >= 1, "speed_kimg": speed_kimg > 0,
                  "batch_size": batch_size >= 1}
        for name, ok in checks.items():
            if not ok:
                raise AcneopsError(f"AdaController: invalid {name}={locals()[name]!r} (target in [0,1], "
                                   "interval >= 1, speed_kimg > 0, batch_size >= 1); fix the ADA settings")
        self.pipe = pipe
        self.target = float(target)  # r_t the controller steers to
        self.interval = int(interval)  # D steps between updates
        self.speed_kimg = float(speed_kimg)  # kimg of reals for p to move by 1
        self.batch_size = int(batch_size)  # real images per D step (global)
        self.rt = float("nan")  # last r_t estimate (nan before the first update)
        self._sum = 0.0  # sum of sign(D(real)) since the last update
        self._count = 0  # number of logits since the last update
        self._pending: list[torch.Tensor] = []  # device tensors (sum, count) not yet read, avoids syncs

    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Add the signs of D's logits on a batch of real images (any shape, e.g. (B, 1))."""
        logits = real_logits.detach()
        self._pending.append(torch.stack([logits.sign().sum().double(),
                                          torch.tensor(float(logits.numel()), dtype=torch.float64,
                                                       device=logits.device)]))

    def _flush(self) -> None:
        """Move pending device sums into the python accumulators."""
        if self._pending:
            total = torch.stack(self._pending).sum(dim=0)
            self._pending = []
            self._sum += float(total[0])
            self._count += int(total[1])

    def update(self) -> float:
        """Compute r_t from the accumulated signs, move p, reset the accumulators; returns the new p.

        With nothing accumulated (on every rank) p and r_t are left unchanged.
        """
        self._flush()
        total, count = self._sum, self._count
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            buf = torch.tensor([total, float(count)], dtype=torch.float64, device=self.pipe.p.device)
            torch.distributed.all_reduce(buf)
            total, count = float(buf[0]), int(buf[1])
        self._sum, self._count = 0.0, 0
        if count == 0:
            return float(self.pipe.p)
        self.rt = total / count
        step = self.batch_size * self.interval / (self.speed_kimg * 1000)
        adjust = float(math.copysign(step, self.rt - self.target)) if self.rt != self.target else 0.0
        with torch.no_grad():
            self.pipe.p.copy_((self.pipe.p + adjust).clamp(0, 1))
        return float(self.pipe.p)

    def state_dict(self) -> dict:
        """Everything needed for an exact resume: p, r_t and the partial accumulators."""
        self._flush()
        return {"p": float(self.pipe.p), "rt": self.rt, "sum": self._sum, "count": self._count,
                "target": self.target, "interval": self.interval, "speed_kimg": self.speed_kimg,
                "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict` (p is written into the pipe's buffer)."""
        missing = {"p", "rt", "sum", "count"} - set(state)
        if missing:
            raise AcneopsError(f"AdaController state is missing {sorted(missing)}; the checkpoint does not "
                               "hold an ADA state written by AdaController.state_dict()")
        with torch.no_grad():
            self.pipe.p.fill_(float(state["p"]))
        self.rt = float(state["rt"])
        self._sum, self._count, self._pending = float(state["sum"]), int(state["count"]), []
