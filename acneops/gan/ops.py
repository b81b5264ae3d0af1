"""StyleGAN2 operations: FIR up/down-sampling, bias+activation, modulated convolution, equalized-LR layers.

Paper: Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN" (CVPR 2020).
The semantics (padding, filter orientation, gains, clamping) are those of NVIDIA's official
stylegan2-ada-pytorch / stylegan3 ``torch_utils/ops`` and ``networks_stylegan2.py``;
tests/model/test_nvlabs_parity.py proves equality on a network built with NVIDIA's code.

Written for a lean CPU path that still supports gradients of gradients (R1, path length); the
choices below were measured with benchmarks/stylegan2_forward.py:
- every FIR filter is one depthwise conv (groups=C) with the 4x4 [1,3,3,1] outer-product kernel, wrapped
  in an autograd Function whose backward is the adjoint depthwise conv (itself differentiable the same
  way): PyTorch's own double backward of a grouped conv runs one tiny conv per group, which made R1 and
  path-length steps several times slower. ``upfirdn2d`` is the generic reference the fast paths are
  tested against;
- upsampling convolutions are ``conv_transpose2d`` followed by the FIR blur, as NVIDIA does; 1x1 convs
  (toRGB, fromRGB, residual skips) are single (batched) GEMMs, which also makes toRGB modulation free;
- positive activation gains are folded into weights and biases (act(g*z) = g*act(z) for linear, relu
  and leaky relu), biases ride in the conv that precedes them, demodulation coefficients come from one
  (B,I)x(I,O) matmul, and a clamp that changes nothing is skipped on CPU (same values and gradients),
  each saving full-tensor passes;
- layers work in NCHW and channels-last memory formats (the networks default to channels-last).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LRELU_SLOPE = 0.2  # negative slope of the leaky ReLU used throughout StyleGAN2
ACT_GAINS = {"linear": 1.0, "relu": math.sqrt(2.0), "lrelu": math.sqrt(2.0)}  # He-style default gains
FIR_TAPS = (1.0, 3.0, 3.0, 1.0)  # the [1,3,3,1] binomial low-pass filter of the paper


def setup_filter(taps: tuple[float, ...] = FIR_TAPS) -> Tensor:
    """(K, K) float32 separable FIR filter: outer product of ``taps``, normalised to unit DC gain."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def _parse_padding(padding: int | tuple[int, ...] | list[int]) -> tuple[int, int, int, int]:
    """Padding as (x0, x1, y0, y1) from an int, (x, y) or (x0, x1, y0, y1)."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    x0, x1, y0, y1 = padding
    return x0, x1, y0, y1


def upfirdn2d(x: Tensor, f: Tensor | None, up: int = 1, down: int = 1,
              padding: int | tuple[int, ...] = 0, gain: float = 1.0) -> Tensor:
    """Reference upfirdn2d with a 2D filter ``f`` (K, K): upsample by zero insertion, pad (negative
    crops), convolve with f (a depthwise conv), keep every down-th pixel. Slow; tests and fallbacks."""
    f = torch.ones(1, 1) if f is None else f
    b, c, h, w = x.shape
    x0, x1, y0, y1 = _parse_padding(padding)
    if up > 1:
        x = F.pad(x.reshape(b, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(b, c, h * up, w * up)
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]
    k = (f.flip([0, 1]) * gain).to(device=x.device, dtype=x.dtype).expand(c, 1, *f.shape)
    return F.conv2d(x, k, stride=down, groups=c)


@functools.lru_cache(maxsize=64)
def _fir_kernel(taps: tuple[float, ...], gain: float, flip: bool, device: torch.device,
                dtype: torch.dtype) -> Tensor:
    """(K, K) constant kernel outer(taps, taps)/sum * gain, flipped for conv2d (upfirdn convolves).

    Built outside inference mode: the kernel is cached, and a first call under ``torch.inference_mode``
    (generation) must not leave an inference tensor that a later training step cannot save for backward.
    """
    with torch.inference_mode(False):
        f = setup_filter(taps) * gain
        return (f.flip([0, 1]) if flip else f).to(device=device, dtype=dtype)


class _DepthwiseFIR(torch.autograd.Function):
    """Depthwise (groups=C) FIR conv2d or conv_transpose2d whose backward is the adjoint FIR op, computed
    by this same Function. Gradients of every order therefore cost one depthwise conv each; PyTorch's
    own double backward of a grouped conv runs one small conv per group (128 for 128 channels), which
    made R1 and path-length penalties several times slower."""

    @staticmethod
    def forward(ctx, x: Tensor, k: Tensor, stride: int, padding: int, transpose: bool,
                output_padding: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(k)
        ctx.conf = (stride, padding, transpose, tuple(x.shape[-2:]))
        kk = k.expand(x.shape[1], 1, *k.shape)
        if transpose:
            return F.conv_transpose2d(x, kk, stride=stride, padding=padding, output_padding=output_padding,
                                      groups=x.shape[1])
        return F.conv2d(x, kk, stride=stride, padding=padding, groups=x.shape[1])

    @staticmethod
    def backward(ctx, gy: Tensor):
        (k,) = ctx.saved_tensors
        stride, padding, transpose, (h, w) = ctx.conf
        if transpose:  # the adjoint of conv_transpose2d is conv2d with the same kernel, stride, padding
            gx = _DepthwiseFIR.apply(gy, k, stride, padding, False, (0, 0))
        else:  # the adjoint of conv2d is conv_transpose2d; output_padding restores the input size
            kh = k.shape[0]
            size = [(n - 1) * stride - 2 * padding + kh for n in gy.shape[-2:]]
            gx = _DepthwiseFIR.apply(gy, k, stride, padding, True, (h - size[0], w - size[1]))
        return gx, None, None, None, None, None


def blur2d(x: Tensor, padding: int, gain: float = 1.0, down: int = 1, taps: tuple[float, ...] = FIR_TAPS) -> Tensor:
    """FIR filter with ``padding`` zeros on every side, keeping every down-th pixel: one depthwise conv.
    Equal to ``upfirdn2d(x, setup_filter(taps), down=down, padding=padding, gain=gain)``."""
    k = _fir_kernel(taps, float(gain), True, x.device, x.dtype)
    return _DepthwiseFIR.apply(x, k, down, padding, False, (0, 0))


def upsample2d(x: Tensor, taps: tuple[float, ...] = FIR_TAPS) -> Tensor:
    """2x FIR upsampling, NVIDIA's ``upsample2d`` (upfirdn2d up=2, padding [2,1,2,1] for K=4, gain 4), as
    one depthwise transposed conv: scattering with the unflipped filter is a convolution."""
    kh = len(taps)
    if kh % 2:
        raise ValueError(f"upsample2d needs an even number of filter taps, got {taps}")
    k = _fir_kernel(taps, 4.0, False, x.device, x.dtype)
    return _DepthwiseFIR.apply(x, k, 2, kh - 1 - (kh + 1) // 2, True, (0, 0))


def downsample2d(x: Tensor, taps: tuple[float, ...] = FIR_TAPS) -> Tensor:
    """2x FIR downsampling, NVIDIA's ``downsample2d`` (upfirdn2d down=2, padding [1,1,1,1] for K=4)."""
    return blur2d(x, (len(taps) - 1) // 2, down=2, taps=taps)


def _transpose_weight(w: Tensor, groups: int) -> Tensor:
    """(O, I/g, k, k) conv weight -> (g*I/g, O/g, k, k) layout that conv_transpose2d expects."""
    o, ig, kh, kw = w.shape
    if groups == 1:
        return w.transpose(0, 1)
    return w.reshape(groups, o // groups, ig, kh, kw).transpose(1, 2).reshape(groups * ig, o // groups, kh, kw)


def is_channels_last(x: Tensor) -> bool:
    """True when a (B, C, H, W) tensor is stored channels-last (channel stride 1, several channels)."""
    return x.shape[1] > 1 and x.stride(1) == 1


def conv1x1(x: Tensor, w: Tensor, bias: Tensor | None = None) -> Tensor:
    """1x1 convolution as one (batched) matrix product: x (B, I, H, W), w (O, I) shared or (B, O, I)
    per sample -> (B, O, H, W) in x's memory format. On CPU this beats mkldnn's 1x1 conv (and its
    backward) for the toRGB / fromRGB / skip shapes, and per-sample weights make modulation free."""
    b, i, h, wd = x.shape
    if is_channels_last(x):
        t = x.permute(0, 2, 3, 1).reshape(b, h * wd, i)  # (B, HW, I), a view
        if w.ndim == 2:
            t2 = t.reshape(b * h * wd, i)
            y = t2 @ w.t() if bias is None else torch.addmm(bias, t2, w.t())  # one GEMM, bias fused
        else:
            wt = w.transpose(1, 2)  # (B, I, O)
            y = torch.bmm(t, wt) if bias is None else torch.baddbmm(bias.reshape(1, 1, -1), t, wt)
        return y.reshape(b, h, wd, -1).permute(0, 3, 1, 2)
    if w.ndim == 2:
        w = w.expand(b, *w.shape)
    x3 = x.reshape(b, i, h * wd)
    y = torch.bmm(w, x3) if bias is None else torch.baddbmm(bias.reshape(1, -1, 1), w, x3)
    return y.reshape(b, -1, h, wd)


def conv2d_resample(x: Tensor, w: Tensor, up: int = 1, down: int = 1, padding: int = 0, groups: int = 1,
                    bias: Tensor | None = None, taps: tuple[float, ...] = FIR_TAPS) -> Tensor:
    """Convolution with optional 2x up/down FIR resampling, plus a per-channel bias added last.

    NVIDIA ``conv2d_resample`` semantics as its layers call it (``flip_weight = up == 1``): correlation
    without upsampling, true convolution (kernel flipped) with upsampling, which is what a transposed
    conv with the unflipped kernel computes; ``padding`` is relative to the upsampled image.
    """
    kh, kw = w.shape[2:]
    pointwise = kh == 1 and kw == 1 and padding == 0 and groups == 1
    if up == 1 and down == 1:
        return conv1x1(x, w.flatten(1), bias) if pointwise else F.conv2d(x, w, bias, padding=padding, groups=groups)
    if len(taps) == 4 and up == 1 and down == 2:
        if pointwise:
            return conv1x1(downsample2d(x, taps), w.flatten(1), bias)  # filter first: 4x fewer pixels
        return F.conv2d(blur2d(x, padding + 1, taps=taps), w, bias, stride=2, groups=groups)
    if len(taps) == 4 and up == 2 and down == 1:
        if pointwise:
            return _bias(upsample2d(conv1x1(x, w.flatten(1)), taps), bias)  # 1x1 conv at low resolution
        if 2 * padding == kh - 1 and padding + 3 - kh >= 0:
            # Transposed conv gives 2H + k - 2 pixels; the blur's padding (1 for k=3) brings it back to 2H.
            x = F.conv_transpose2d(x, _transpose_weight(w, groups), stride=2, groups=groups)
            return _bias(blur2d(x, padding + 3 - kh, gain=4.0, taps=taps), bias)
    return _conv2d_resample_generic(x, w, up, down, padding, groups, bias, taps)


def _bias(x: Tensor, bias: Tensor | None) -> Tensor:
    """x + bias over dim 1 (no-op for None)."""
    return x if bias is None else x + bias.reshape(1, -1, 1, 1)


def _conv2d_resample_generic(x: Tensor, w: Tensor, up: int, down: int, padding: int, groups: int,
                             bias: Tensor | None, taps: tuple[float, ...]) -> Tensor:
    """Slow but general path (NVIDIA's fallback): upfirdn2d up, plain conv, upfirdn2d down."""
    f, fk = setup_filter(taps), len(taps)
    x0 = x1 = padding
    if up > 1:
        x0, x1 = x0 + (fk + up - 1) // 2, x1 + (fk - up) // 2
    if down > 1:
        x0, x1 = x0 + (fk - down + 1) // 2, x1 + (fk - down) // 2
    x = upfirdn2d(x, f if up > 1 else None, up=up, padding=(x0, x1, x0, x1), gain=up * up)
    x = F.conv2d(x, w.flip([2, 3]) if up > 1 else w, groups=groups)
    if down > 1:
        x = upfirdn2d(x, f, down=down)
    return _bias(x, bias)


def clamp(x: Tensor, limit: float | None) -> Tensor:
    """x clamped to [-limit, limit]. On CPU an all-inside tensor is returned as is: identical values
    and gradients (clamp's gradient is 1 inside, bounds included) without clamp's backward passes."""
    if limit is None:
        return x
    if x.device.type == "cpu":
        flat = x.detach().permute(0, 2, 3, 1) if x.ndim == 4 and is_channels_last(x) else x.detach()
        lo, hi = torch.aminmax(flat)  # on a contiguous view: aminmax copies anything else
        if lo.item() >= -limit and hi.item() <= limit:
            return x
    return x.clamp(-limit, limit)


def conv_weight(out_channels: int, in_channels: int, kernel_size: int) -> Tensor:
    """N(0, 1) conv weight (O, I, k, k), stored channels-last for k > 1 so that convolutions on
    channels-last activations neither convert it nor its gradient (saves two copies per conv per step;
    load_state_dict and optimizers keep the layout)."""
    w = torch.randn(out_channels, in_channels, kernel_size, kernel_size)
    return w.contiguous(memory_format=torch.channels_last) if kernel_size > 1 else w


def activate(x: Tensor, act: str = "linear", clamp_limit: float | None = None) -> Tensor:
    """Activation then symmetric clamp; the caller has already added the bias and applied the gain.

    Together with gain folding this equals NVIDIA's ``bias_act(x, b, act, gain, clamp)``.
    """
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
    elif act == "relu":
        x = F.relu(x)
    elif act != "linear":
        raise ValueError(f"unknown activation {act!r}; use one of {sorted(ACT_GAINS)}")
    return clamp(x, clamp_limit)


def bias_act(x: Tensor, b: Tensor | None = None, act: str = "linear", gain: float | None = None,
             clamp_limit: float | None = None) -> Tensor:
    """Unfused NVIDIA ``bias_act``: (x + b) -> act -> * gain (default: the act's gain) -> clamp. Reference."""
    gain = ACT_GAINS[act] if gain is None else gain
    x = _bias(x, b) if x.ndim == 4 else (x if b is None else x + b)
    x = activate(x, act)
    if gain != 1.0:
        x = x * gain
    return x if clamp_limit is None else x.clamp(-clamp_limit, clamp_limit)


def demod_coefs(weight: Tensor, styles: Tensor, eps: float = 1e-8) -> Tensor:
    """(B, O) demodulation 1/sqrt(sum_{i,k} (w_oik * s_bi)^2 + eps), computed as one (B,I)x(I,O) matmul."""
    return (styles.square() @ weight.square().sum(dim=(2, 3)).t() + eps).rsqrt()


def modulated_conv2d(x: Tensor, weight: Tensor, styles: Tensor, noise: Tensor | None = None,
                     up: int = 1, padding: int = 0, demodulate: bool = True,
                     fused: bool = True, gain: float = 1.0, bias: Tensor | None = None) -> Tensor:
    """gain * (demodulated conv(x, weight modulated by styles) + noise + bias), shape (B, O, H*up, W*up).

    x (B, I, H, W); weight (O, I, k, k); styles (B, I); noise broadcastable to the output (already
    multiplied by its strength). ``fused=True`` runs modulation, demodulation and convolution as one
    grouped convolution with per-sample weights (groups=B), as in the paper; ``fused=False`` scales
    the activations before and after one ordinary convolution instead (NVIDIA's training path).
    Both are exact; which one is faster depends on the hardware.
    """
    b, i = styles.shape
    o, _, kh, kw = weight.shape
    d = demod_coefs(weight, styles) * gain if demodulate else None  # (B, O)
    gb = None if bias is None else (bias * gain if gain != 1.0 else bias)  # (O,)
    if kh == 1 and kw == 1 and up == 1:  # toRGB: per-sample (B, O, I) weights in one bmm, either mode
        coef = styles.unsqueeze(1) * (d.unsqueeze(2) if demodulate else gain)  # (B, O|1, I)
        x = conv1x1(x, weight.flatten(1).unsqueeze(0) * coef, gb)
    elif fused:
        coef = styles.unsqueeze(1) * (d.unsqueeze(2) if demodulate else gain)  # (B, O|1, I)
        w = (weight.unsqueeze(0) * coef.unsqueeze(-1).unsqueeze(-1)).reshape(-1, i, kh, kw)  # (B*O, I, k, k)
        gbias = None if gb is None else gb.repeat(b)
        x = conv2d_resample(x.reshape(1, b * i, *x.shape[2:]), w, up=up, padding=padding, groups=b, bias=gbias)
        x = x.reshape(b, o, *x.shape[2:])
    else:
        x = x * styles.reshape(b, i, 1, 1)
        if demodulate:
            x = conv2d_resample(x, weight, up=up, padding=padding)
            d = d.reshape(b, o, 1, 1)
            x = x * d if gb is None else torch.addcmul(gb.reshape(1, o, 1, 1), x, d)
        else:
            x = conv2d_resample(x, weight * gain if gain != 1.0 else weight, up=up, padding=padding, bias=gb)
    if noise is not None:
        x = x + (noise * gain if gain != 1.0 else noise)
    return x


class FullyConnectedLayer(nn.Module):
    """Equalized-learning-rate dense layer: stored weight ~ N(0, 1/lr_multiplier^2), applied times
    lr_multiplier/sqrt(in_features); bias applied times lr_multiplier (NVIDIA's convention, so
    Adam's effective step on the mapping network is lr * lr_multiplier)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0) -> None:
        super().__init__()
        if activation not in ACT_GAINS:
            raise ValueError(f"unknown activation {activation!r}; use one of {sorted(ACT_GAINS)}")
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_features) -> (B, out_features)."""
        g = ACT_GAINS[self.activation]
        w = self.weight * (self.weight_gain * g)
        b = None if self.bias is None else self.bias * (self.bias_gain * g)
        return activate(F.linear(x, w, b), self.activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(nn.Module):
    """Equalized-learning-rate conv (weight ~ N(0,1) applied times 1/sqrt(fan_in)) with optional 2x
    FIR up/down-sampling, bias, activation with its gain, and output clamping (``conv_clamp``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1, conv_clamp: float | None = None) -> None:
        super().__init__()
        if activation not in ACT_GAINS:
            raise ValueError(f"unknown activation {activation!r}; use one of {sorted(ACT_GAINS)}")
        self.in_channels, self.out_channels, self.activation = in_channels, out_channels, activation
        self.up, self.down, self.conv_clamp, self.padding = up, down, conv_clamp, kernel_size // 2
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.act_gain = ACT_GAINS[activation]
        self.weight = nn.Parameter(conv_weight(out_channels, in_channels, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        """(B, I, H, W) -> (B, O, H*up/down, W*up/down); ``gain`` scales the output and the clamp."""
        g = self.act_gain * gain
        w = self.weight * (self.weight_gain * g)
        b = None if self.bias is None else (self.bias * g if g != 1.0 else self.bias)
        x = conv2d_resample(x, w, self.up, self.down, self.padding, bias=b)
        return activate(x, self.activation, None if self.conv_clamp is None else self.conv_clamp * gain)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"activation={self.activation}, up={self.up}, down={self.down}")


def check_c(c: Tensor | None, c_dim: int, batch: int, who: str) -> Tensor | None:
    """The class input c (B, c_dim) one-hot as float32, or None for an unconditional network (c_dim = 0);
    a clear error otherwise (the networks' c argument, NVIDIA's c_dim)."""
    if c_dim == 0:
        if c is not None:
            raise ValueError(f"{who} is unconditional (c_dim=0): call it without c")
        return None
    if c is None:
        raise ValueError(f"{who} is class-conditional (c_dim={c_dim}): pass c, a (B, {c_dim}) one-hot float tensor")
    if c.ndim != 2 or c.shape != (batch, c_dim):
        raise ValueError(f"{who}: c must have shape ({batch}, {c_dim}), got {tuple(c.shape)}")
    return c.to(torch.float32)
