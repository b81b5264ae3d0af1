"""StyleGAN2 generator and discriminator (config E/F: skip generator, residual discriminator).

Paper: Karras, Laine, Aittala, Hellsten, Lehtinen, Aila. "Analyzing and Improving the Image Quality of
StyleGAN", CVPR 2020 (arXiv:1912.04958).

Mapping network (normalised z, equalized-LR dense layers with lr multiplier 0.01, tracked w_avg for
truncation), synthesis network (learned 4x4 constant, modulated 3x3 convolutions with weight
demodulation, per-layer noise with learned strength, a toRGB at every resolution summed through FIR
upsampling), discriminator (residual blocks with FIR downsampling, minibatch standard deviation,
conv + fc + out epilogue). ``c_dim`` > 0: class-conditional as NVIDIA's stylegan2-ada-pytorch (Karras et
al. 2020, arXiv:2006.06676; projection D of Miyato & Koyama 2018); c_dim = 0 is exactly the unconditional
network. Names are NVIDIA's (``networks_stylegan2.py``): their checkpoints load through acneops.gan.nvlabs
unrenamed; tests/model/test_nvlabs_parity.py reproduces a network built with NVIDIA's code to 1e-4.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from acneops.core.config import ConfigError
from acneops.gan.ops import (
    Conv2dLayer,
    FullyConnectedLayer,
    activate,
    check_c,
    conv_weight,
    modulated_conv2d,
    upsample2d,
)

NOISE_MODES = ("random", "const", "none")
# Per-sample grouped convs (fused) vs activation scaling around one conv (unfused) are numerically
# equivalent; benchmarks/stylegan2_forward.py measured the unfused path faster for training on CPU,
# which is also what NVIDIA's training uses (fused_modconv only at inference).
FUSED_MODCONV_DEFAULT = False
# Activations (and 3x3 conv weights) stored channels-last: mkldnn's 3x3, strided and transposed convs
# run 15-40% faster on CPU in that layout, ~13% less CPU per training iteration overall
# (benchmarks/stylegan2_forward.py); every op here handles both layouts.
CHANNELS_LAST_DEFAULT = True


def normalize_2nd_moment(x: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """Scale each row to unit root-mean-square (the paper's normalised z)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def _check_arch(img_resolution: int, channel_base: int, channel_max: int) -> None:
    """Reject resolutions and channel settings the architecture cannot be built with."""
    if not isinstance(img_resolution, int) or img_resolution < 8 or img_resolution & (img_resolution - 1):
        raise ConfigError(f"img_resolution must be a power of two >= 8 (e.g. 32 ... 1024), got {img_resolution!r}")
    if channel_max < 1 or channel_base // img_resolution < 1:
        raise ConfigError(f"channel_base={channel_base} / channel_max={channel_max} give no channels at "
                          f"{img_resolution} px; need channel_base >= img_resolution and channel_max >= 1")


def _channels(res: int, channel_base: int, channel_max: int) -> int:
    """Feature maps at resolution ``res``: min(channel_base // res, channel_max), as in NVIDIA's code."""
    return min(channel_base // res, channel_max)


class MappingNetwork(nn.Module):
    """(z (B, z_dim), c (B, c_dim)) -> ws (B, num_ws, w_dim) ((B, w_dim) if num_ws is None); tracks w_avg.

    c_dim > 0: ``embed`` maps c to embed_features (default w_dim); z and the embedding are normalised
    separately and concatenated (fc0 reads z_dim + embed_features). As NVIDIA, ONE w_avg is tracked over
    all classes: truncation pulls every class toward the common centre, not a per-class mean. D's class
    mapping is this network with z_dim=0, num_ws=None, w_avg_beta=None (no w_avg), as NVIDIA's.
    """

    def __init__(self, z_dim: int, w_dim: int, num_ws: int | None, num_layers: int = 8,
                 lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.995, c_dim: int = 0,
                 embed_features: int | None = None) -> None:
        super().__init__()
        if num_layers < 1:
            raise ConfigError(f"mapping_layers must be >= 1, got {num_layers}")
        if c_dim < 0 or z_dim + c_dim < 1:
            raise ConfigError(f"mapping network needs z_dim > 0 or c_dim > 0 (got z_dim={z_dim}, c_dim={c_dim})")
        self.z_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, w_dim, num_ws, num_layers
        self.c_dim, self.w_avg_beta = c_dim, w_avg_beta
        embed_features = (embed_features or w_dim) if c_dim else 0
        if c_dim:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(z_dim + embed_features if idx == 0 else w_dim, w_dim, activation="lrelu",
                                        lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: Tensor | None, c: Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> Tensor:
        """ws (B, num_ws, w_dim). ``update_emas`` moves w_avg toward this batch's mean w
        (w_avg <- lerp(mean w, w_avg, w_avg_beta)); truncation pulls the first ``truncation_cutoff``
        ws (all if None) toward w_avg: w_avg + psi * (w - w_avg)."""
        parts = []
        if self.z_dim:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ValueError(f"z must have shape (B, {self.z_dim}), got {None if z is None else tuple(z.shape)}")
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        c = check_c(c, self.c_dim, len(z) if self.z_dim else len(c if c is not None else ()), "this generator")
        if c is not None:
            parts.append(normalize_2nd_moment(self.embed(c)))
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_emas and self.w_avg_beta is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is None:
            return x
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                head = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
                x = torch.cat([head, x[:, truncation_cutoff:]], dim=1)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x upsampling) + noise + bias + lrelu (gain sqrt 2) + clamp."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: int = 1,
                 conv_clamp: float | None = None, kernel_size: int = 3) -> None:
        super().__init__()
        self.resolution, self.up, self.conv_clamp, self.padding = resolution, up, conv_clamp, kernel_size // 2
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(conv_weight(out_channels, in_channels, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(self, x: Tensor, w: Tensor, noise_mode: str = "random", fused: bool = True,
                gain: float = 1.0) -> Tensor:
        """x (B, I, R/up, R/up), w (B, w_dim) -> (B, O, R, R)."""
        styles = self.affine(w)
        noise = None
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device,
                                dtype=x.dtype) * self.noise_strength
        elif noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, noise, up=self.up, padding=self.padding,
                             fused=fused, gain=math.sqrt(2.0) * gain, bias=self.bias)
        return activate(x, "lrelu", None if self.conv_clamp is None else self.conv_clamp * gain)


class ToRGBLayer(nn.Module):
    """Modulated (not demodulated) 1x1 conv to image channels + bias + clamp."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor, fused: bool = True) -> Tensor:
        """x (B, I, R, R), w (B, w_dim) -> (B, img_channels, R, R)."""
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused, bias=self.bias)
        return activate(x, "linear", self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: [const | conv0 (up 2)], conv1, toRGB added to the upsampled image."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def forward(self, x: Tensor | None, img: Tensor | None, ws: Tensor, noise_mode: str = "random",
                fused: bool = True, memory_format: torch.memory_format = torch.contiguous_format
                ) -> tuple[Tensor, Tensor]:
        """ws (B, num_conv + 1, w_dim); returns features (B, C, R, R) and image (B, img_channels, R, R)."""
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1).contiguous(memory_format=memory_format)
        else:
            x = self.conv0(x, next(w_iter), noise_mode, fused)
        x = self.conv1(x, next(w_iter), noise_mode, fused)
        y = self.torgb(x, next(w_iter), fused)
        img = y if img is None else upsample2d(img) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws (B, num_ws, w_dim) -> image (B, img_channels, R, R), unclamped, roughly in [-1, 1]."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, conv_clamp: float | None = 256) -> None:
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
        self.block_names = [f"b{res}" for res in self.block_resolutions]
        self.fused_modconv = FUSED_MODCONV_DEFAULT
        self.channels_last = CHANNELS_LAST_DEFAULT
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = _channels(res // 2, channel_base, channel_max) if res > 4 else 0
            block = SynthesisBlock(in_channels, _channels(res, channel_base, channel_max), w_dim, res,
                                   img_channels, conv_clamp=conv_clamp)
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
        self.num_ws += 1  # the last toRGB; every other toRGB shares the w of the next block's conv0

    def forward(self, ws: Tensor, noise_mode: str = "random", fused_modconv: bool | None = None) -> Tensor:
        """``noise_mode``: 'random' (fresh noise), 'const' (the stored noise_const buffers, deterministic)
        or 'none'. ``fused_modconv`` None = self.fused_modconv."""
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape (B, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        fused = self.fused_modconv if fused_modconv is None else fused_modconv
        fmt = torch.channels_last if self.channels_last and not fused else torch.contiguous_format
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for name in self.block_names:
            block = getattr(self, name)
            x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + block.num_torgb), noise_mode, fused, fmt)
            w_idx += block.num_conv
        return img.contiguous()


class Generator(nn.Module):
    """``G(z, c) = G.synthesis(G.mapping(z, c))``; ``model_args`` rebuilds it. ``c_dim`` > 0: conditional over
    ``labels`` (class names in c's column order, kept in model_args; c_dim = 0 leaves model_args as before)."""

    def __init__(self, z_dim: int = 512, w_dim: int = 512, img_resolution: int = 64, img_channels: int = 3,
                 mapping_layers: int = 8, channel_base: int = 32768, channel_max: int = 512,
                 conv_clamp: float | None = 256, mapping_lr_mult: float = 0.01, w_avg_beta: float = 0.995,
                 c_dim: int = 0, labels: list[str] | tuple[str, ...] | None = None) -> None:
        super().__init__()
        _check_arch(img_resolution, channel_base, channel_max)
        self.labels = tuple(labels or ())
        if len(self.labels) != c_dim or len(set(self.labels)) != c_dim:
            raise ConfigError(f"a generator with c_dim={c_dim} needs {c_dim} distinct class names, got {labels!r}")
        self.model_args = dict(z_dim=z_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                               mapping_layers=mapping_layers, channel_base=channel_base, channel_max=channel_max,
                               conv_clamp=conv_clamp, mapping_lr_mult=mapping_lr_mult, w_avg_beta=w_avg_beta)
        if c_dim:
            self.model_args.update(c_dim=c_dim, labels=list(self.labels))
        self.z_dim, self.w_dim, self.img_resolution, self.img_channels = z_dim, w_dim, img_resolution, img_channels
        self.c_dim = c_dim
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, channel_base, channel_max, conv_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, mapping_layers, mapping_lr_mult, w_avg_beta,
                                      c_dim=c_dim)

    def forward(self, z: Tensor, c: Tensor | None = None, truncation_psi: float = 1.0, noise_mode: str = "random",
                update_emas: bool = False, truncation_cutoff: int | None = None) -> Tensor:
        """z (B, z_dim), c (B, c_dim) one-hot (None when unconditional) -> image (B, img_channels, R, R)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, noise_mode=noise_mode)


class DiscriminatorBlock(nn.Module):
    """Residual block: [fromRGB], conv0, conv1 (down 2), plus a 1x1 down skip; both paths times sqrt(0.5)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.in_channels = in_channels
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: Tensor | None, img: Tensor) -> Tensor:
        """(B, C, R, R) features (or the image for the first block) -> (B, C', R/2, R/2)."""
        if self.in_channels == 0:
            x = self.fromrgb(img)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x


class MinibatchStdLayer(nn.Module):
    """Appends the mean standard deviation over groups of ``group_size`` samples as extra channels."""

    def __init__(self, group_size: int | None = 4, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C + num_channels, H, W); sample n joins group n mod (N / G) as in NVIDIA's code."""
        n, c, h, w = x.shape
        g = n if self.group_size is None else min(self.group_size, n)
        if n % g:
            raise ValueError(f"minibatch-std: batch size {n} must be a multiple of the group size {g}; "
                             f"use a batch that is a multiple of mbstd_group_size")
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=(2, 3, 4))  # (n/G, F)
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: minibatch std, 3x3 conv, fc (lrelu), out (linear) -> (B, 1) logits; with ``cmap_dim`` > 0
    out has cmap_dim features and the logit is their projection on cmap: (x * cmap).sum(1) / sqrt(cmap_dim)."""

    def __init__(self, in_channels: int, resolution: int = 4, mbstd_group_size: int | None = 4,
                 mbstd_num_channels: int = 1, conv_clamp: float | None = None, cmap_dim: int = 0) -> None:
        super().__init__()
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu",
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation="lrelu")
        self.cmap_dim, self.out = cmap_dim, FullyConnectedLayer(in_channels, cmap_dim or 1)

    def forward(self, x: Tensor, cmap: Tensor | None = None) -> Tensor:
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.out(self.fc(self.conv(x).flatten(1)))
        if self.cmap_dim:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator: image (B, C, R, R) [, c (B, c_dim)] -> logits (B, 1). ``c_dim`` > 0:
    projection D, ``mapping`` (mapping_layers deep) turns c into cmap (B, cmap_dim; default channels at 4x4)."""

    def __init__(self, img_resolution: int = 64, img_channels: int = 3, channel_base: int = 32768,
                 channel_max: int = 512, conv_clamp: float | None = 256, mbstd_group_size: int | None = 4,
                 mbstd_num_channels: int = 1, c_dim: int = 0, cmap_dim: int | None = None,
                 mapping_layers: int = 8) -> None:
        super().__init__()
        _check_arch(img_resolution, channel_base, channel_max)
        c4 = _channels(4, channel_base, channel_max)
        if mbstd_num_channels < 0 or (mbstd_num_channels and c4 % mbstd_num_channels):
            raise ConfigError(f"mbstd_num_channels={mbstd_num_channels} must be >= 0 and divide the "
                              f"{c4} channels at 4x4")
        self.model_args = dict(img_resolution=img_resolution, img_channels=img_channels, channel_base=channel_base,
                               channel_max=channel_max, conv_clamp=conv_clamp, mbstd_group_size=mbstd_group_size,
                               mbstd_num_channels=mbstd_num_channels)
        cmap_dim = (cmap_dim or c4) if c_dim else 0
        if c_dim:
            self.model_args.update(c_dim=c_dim, cmap_dim=cmap_dim, mapping_layers=mapping_layers)
        self.img_resolution, self.img_channels, self.c_dim = img_resolution, img_channels, c_dim
        self.block_resolutions = [2 ** i for i in range(int(math.log2(img_resolution)), 2, -1)]
        for res in self.block_resolutions:
            tmp = _channels(res, channel_base, channel_max)
            block = DiscriminatorBlock(tmp if res < img_resolution else 0, tmp,
                                       _channels(res // 2, channel_base, channel_max), img_channels, conv_clamp)
            setattr(self, f"b{res}", block)
        if c_dim:
            self.mapping = MappingNetwork(0, cmap_dim, None, mapping_layers, w_avg_beta=None, c_dim=c_dim)
        self.b4 = DiscriminatorEpilogue(c4, 4, mbstd_group_size, mbstd_num_channels, conv_clamp, cmap_dim)
        self.block_names = [f"b{res}" for res in self.block_resolutions] + ["b4"]
        self.channels_last = CHANNELS_LAST_DEFAULT

    def forward(self, img: Tensor, c: Tensor | None = None) -> Tensor:
        """img (B, img_channels, R, R), c (B, c_dim) one-hot (None when unconditional) -> logits (B, 1)."""
        if img.ndim != 4 or img.shape[1:] != (self.img_channels, self.img_resolution, self.img_resolution):
            raise ValueError(f"D expects images of shape (B, {self.img_channels}, {self.img_resolution}, "
                             f"{self.img_resolution}), got {tuple(img.shape)}")
        if self.channels_last:
            img = img.contiguous(memory_format=torch.channels_last)
        c = check_c(c, self.c_dim, img.shape[0], "this discriminator")
        x = None
        for name in self.block_names[:-1]:
            x = getattr(self, name)(x, img)
        return self.b4(x, None if c is None else self.mapping(None, c))


MODELS = {"stylegan2": (Generator, Discriminator)}


def build_stylegan2(img_resolution: int, channel_base: int = 32768, channel_max: int = 512, z_dim: int = 512,
                    w_dim: int = 512, mapping_layers: int = 8, img_channels: int = 3,
                    conv_clamp: float | None = 256, mapping_lr_mult: float = 0.01, w_avg_beta: float = 0.995,
                    mbstd_group_size: int | None = 4, mbstd_num_channels: int = 1) -> tuple[Generator, Discriminator]:
    """A matching (G, D) pair; config F at 1024 px is ``build_stylegan2(1024)`` with the defaults."""
    G = Generator(z_dim=z_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                  mapping_layers=mapping_layers, channel_base=channel_base, channel_max=channel_max,
                  conv_clamp=conv_clamp, mapping_lr_mult=mapping_lr_mult, w_avg_beta=w_avg_beta)
    D = Discriminator(img_resolution=img_resolution, img_channels=img_channels, channel_base=channel_base,
                      channel_max=channel_max, conv_clamp=conv_clamp, mbstd_group_size=mbstd_group_size,
                      mbstd_num_channels=mbstd_num_channels)
    return G, D
