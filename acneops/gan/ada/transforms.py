"""Low-level operations of the ADA augmentation pipeline (see :mod:`acneops.gan.ada.pipe`).

Paper: Karras, Aittala, Hellsten, Laine, Lehtinen, Aila, "Training Generative Adversarial Networks with
Limited Data", NeurIPS 2020 (Karras et al. 2020b), appendix B ("Our augmentation pipeline").

What is here and why:
- batched homogeneous transform matrices (3x3 for image geometry, 4x4 for colour), built from per-image
  parameter tensors so one matrix per image can be composed from many transforms and applied once;
- :func:`apply_blit`: the pixel-blitting group (x-flip, quarter turns, integer translation) as an exact
  gather of input pixels, reflected at the border;
- :func:`apply_geometric`: the general group, as in the reference: reflect padding, 2x super-sampling with
  the orthogonal ``sym6`` wavelet low-pass filter, bilinear ``grid_sample`` on the 2x grid, low-pass with
  the time-reversed filter and decimation. Padding, zero insertion, filtering and decimation along one axis
  are linear, so each is folded into one small dense matrix per axis and applied with two matmuls (several
  times faster on CPU than depthwise FIR convolutions, identical result). Because ``sym6`` is orthogonal,
  up- then down-sampling is the identity and integer translations keep pixel values; it is not
  linear-phase, so flips and quarter turns through this path would be off by ~0.1 px (hence apply_blit);
- :func:`apply_color`: one 4x4 matrix per image on RGB (or its grey-pixel action on greyscale).

Everything is plain differentiable torch (gather, matmul, grid_sample), so gradients, and the second
derivatives that lazy R1 on augmented reals needs, flow back to the input images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from acneops.core.errors import AcneopsError

# Daubechies symlet-6 low-pass decomposition filter (the coefficients are the standard published values
# of this wavelet; any orthogonal low-pass filter works, this is the one the ADA paper uses for geometry).
SYM6 = (
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
)


def lowpass_filter() -> torch.Tensor:
    """The ``sym6`` filter normalised to unit DC gain, shape (12,), float32."""
    f = torch.tensor(SYM6, dtype=torch.float64)
    return (f / f.sum()).to(torch.float32)


# ------------------------------------------------------------------------------------------------
# Batched transform matrices. Each entry is a python number or a (B,) tensor; the result is (B, n, n)
# (or (n, n) when every entry is a number).


def matrix(*rows: list, device: torch.device | None = None) -> torch.Tensor:
    """Stack rows of numbers / (B,) tensors into a (B, R, K) matrix (or (R, K) without tensors)."""
    entries = [e for row in rows for e in row]
    ref = next((e for e in entries if isinstance(e, torch.Tensor)), None)
    if ref is None:
        return torch.tensor(rows, dtype=torch.float32, device=device)
    full = [e if isinstance(e, torch.Tensor) else torch.full_like(ref, float(e)) for e in entries]
    return torch.stack(full, dim=-1).reshape(ref.shape + (len(rows), len(rows[0])))


def translate2d(tx, ty, device=None) -> torch.Tensor:
    """3x3 translation by (tx, ty) pixels."""
    return matrix([1, 0, tx], [0, 1, ty], [0, 0, 1], device=device)


def scale2d(sx, sy, device=None) -> torch.Tensor:
    """3x3 axis-aligned scaling."""
    return matrix([sx, 0, 0], [0, sy, 0], [0, 0, 1], device=device)


def rotate2d(theta: torch.Tensor) -> torch.Tensor:
    """3x3 counter-clockwise rotation by ``theta`` radians (B,)."""
    c, s = torch.cos(theta), torch.sin(theta)
    return matrix([c, -s, 0], [s, c, 0], [0, 0, 1])


def rotate2d_quarter(k: torch.Tensor) -> torch.Tensor:
    """3x3 rotation by ``k`` quarter turns (B,) with exact integer entries (cos/sin of k*pi/2 rounded)."""
    k = k.long() % 4
    cos = torch.tensor([1.0, 0.0, -1.0, 0.0], device=k.device)[k]
    sin = torch.tensor([0.0, 1.0, 0.0, -1.0], device=k.device)[k]
    return matrix([cos, -sin, 0], [sin, cos, 0], [0, 0, 1])


def translate3d(tx, ty, tz, device=None) -> torch.Tensor:
    """4x4 translation in RGB space (adds (tx, ty, tz) to the colour)."""
    return matrix([1, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1], device=device)


def scale3d(sx, sy, sz, device=None) -> torch.Tensor:
    """4x4 scaling in RGB space."""
    return matrix([sx, 0, 0, 0], [0, sy, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1], device=device)


def rotate3d(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """4x4 rotation by ``theta`` (B,) around the unit ``axis`` (4,) (Rodrigues' formula)."""
    vx, vy, vz = (float(a) for a in axis[:3])
    s, c = torch.sin(theta), torch.cos(theta)
    cc = 1 - c
    return matrix(
        [vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
        [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
        [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
        [0, 0, 0, 1],
    )


def luma_axis(device=None) -> torch.Tensor:
    """Unit vector (4,) along the grey axis (1, 1, 1, 0)/sqrt(3) of homogeneous RGB."""
    return torch.tensor([1.0, 1.0, 1.0, 0.0], device=device) / math.sqrt(3.0)


# ------------------------------------------------------------------------------------------------
# Separable FIR resampling as per-axis matrices (see the module docstring).


def _reflect_index(i: torch.Tensor, size: int) -> torch.Tensor:
    """Map integer indices onto [0, size) by mirror reflection without repeating the edge ('reflect' pad)."""
    if size == 1:
        return torch.zeros_like(i)
    period = 2 * (size - 1)
    i = i.remainder(period)
    return torch.where(i > size - 1, period - i, i)


def _fir_matrix(f: torch.Tensor, n_in: int, n_out: int, offset: int, stride_in: int, stride_out: int,
                gain: float) -> torch.Tensor:
    """Matrix M (n_in, n_out), M[i, o] = gain * f[stride_out*o - stride_in*i + offset] (0 off the taps)."""
    i = torch.arange(n_in, device=f.device).unsqueeze(1)
    o = torch.arange(n_out, device=f.device).unsqueeze(0)
    k = stride_out * o - stride_in * i + offset
    valid = (k >= 0) & (k < f.numel())
    return torch.where(valid, f[k.clamp(0, f.numel() - 1)] * gain, torch.zeros((), device=f.device))


def pad_upsample_matrix(f: torch.Tensor, n: int, pad0: int, pad1: int) -> torch.Tensor:
    """(n, 2*(n+pad0+pad1)) matrix: reflect-pad a signal of length n, then upsample it 2x with ``f``.

    The upsampling is zero insertion + true convolution with ``f`` (gain 2, so DC is preserved) with the
    padding that keeps the output exactly twice as long; it places input sample i at output 2i.
    """
    k = f.numel()
    n_pad = n + pad0 + pad1
    reflect = torch.zeros(n, n_pad, dtype=f.dtype, device=f.device)
    src = _reflect_index(torch.arange(n_pad, device=f.device) - pad0, n)
    reflect[src, torch.arange(n_pad, device=f.device)] = 1.0
    up = _fir_matrix(f, n_pad, 2 * n_pad, offset=k - 1 - (k + 1) // 2, stride_in=2, stride_out=1, gain=2.0)
    return reflect @ up


def downsample_matrix(f: torch.Tensor, n: int, crop: int) -> torch.Tensor:
    """(n, n_out) matrix: crop ``crop`` samples per side, correlate with ``f`` and keep every second sample.

    The adjoint of :func:`pad_upsample_matrix`'s filtering step (time-reversed filter), so for the
    orthogonal sym6 filter downsampling an upsampled signal returns it exactly.
    """
    k = f.numel()
    pad0, pad1 = (k - 1) // 2 - crop, (k - 2) // 2 - crop
    n_out = (n + pad0 + pad1 - k) // 2 + 1
    return _fir_matrix(f, n, n_out, offset=pad0, stride_in=-1, stride_out=-2, gain=1.0)


def apply_axes(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """rows.T @ image @ cols for every image channel: (B, C, H, W) -> (B, C, H', W')."""
    return torch.matmul(rows.t().to(images.dtype), torch.matmul(images, cols.to(images.dtype)))


# ------------------------------------------------------------------------------------------------
# Applying the matrices to images.


def apply_blit(images: torch.Tensor, G_inv: torch.Tensor) -> torch.Tensor:
    """Exact pixel blit of images (B, C, H, W) with integer-valued inverse transforms G_inv (B, 3, 3).

    For x-flips, quarter turns and integer translations every output pixel centre maps onto an input pixel
    centre, so the output is a gather of input pixels (reflected at the border, like the reference's
    reflect padding): lossless and differentiable. (Routing these through the resampling filter as the
    reference does is not exact, because the sym6 filter is not linear-phase.)
    """
    batch, channels, height, width = images.shape
    device = images.device
    cx, cy = (width - 1) / 2, (height - 1) / 2
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32) - cy,
                            torch.arange(width, device=device, dtype=torch.float32) - cx, indexing="ij")
    coords = torch.stack([xs.flatten(), ys.flatten(), torch.ones_like(xs.flatten())])  # (3, H*W)
    src = G_inv.to(torch.float32) @ coords  # (B, 3, H*W), centred input coordinates
    ix = _reflect_index(torch.round(src[:, 0] + cx).long(), width)
    iy = _reflect_index(torch.round(src[:, 1] + cy).long(), height)
    index = (iy * width + ix).unsqueeze(1).expand(batch, channels, height * width)
    flat = images.reshape(batch, channels, height * width)
    return flat.gather(2, index).reshape(batch, channels, height, width)


def _padding(G_inv: torch.Tensor, width: int, height: int, filter_pad: int) -> tuple[int, int, int, int]:
    """Reflect padding (x0, y0, x1, y1) so every output pixel (and filter tap) lands inside the input."""
    cx, cy = (width - 1) / 2, (height - 1) / 2
    corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]],
                           dtype=G_inv.dtype, device=G_inv.device)
    mapped = G_inv @ corners.t()  # (B, 3, 4): where the output corners come from in the input
    xy = mapped[:, :2, :].permute(1, 0, 2).flatten(1)  # (2, B*4)
    margin = torch.cat([-xy, xy]).max(dim=1).values  # (4,) = x0, y0, x1, y1 overshoot from the centre
    margin = margin + torch.tensor([2 * filter_pad - cx, 2 * filter_pad - cy] * 2, device=G_inv.device)
    upper = torch.tensor([width - 1, height - 1] * 2, dtype=margin.dtype, device=G_inv.device)
    margin = margin.clamp(min=0).minimum(upper)
    x0, y0, x1, y1 = (int(v) for v in margin.ceil().tolist())
    return x0, y0, x1, y1


def apply_geometric(images: torch.Tensor, G_inv: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Resample images (B, C, H, W) with per-image inverse transforms G_inv (B, 3, 3).

    G_inv maps an output pixel (centred pixel coordinates, y down) to the input position it reads.
    Steps (ADA appendix B): reflect-pad so the transformed image never reads outside the data; upsample 2x
    with the orthogonal low-pass filter; bilinear ``grid_sample`` at the transformed positions of the 2x
    output grid; low-pass and decimate 2x (which also crops the padding). Resampling happens once for the
    whole composed transform, so chained transforms do not blur the image repeatedly.
    """
    batch, channels, height, width = images.shape
    device = images.device
    f = f.to(device=device, dtype=torch.float32)
    filter_pad = f.numel() // 4
    x0, y0, x1, y1 = _padding(G_inv, width, height, filter_pad)
    images = apply_axes(images, pad_upsample_matrix(f, height, y0, y1), pad_upsample_matrix(f, width, x0, x1))
    G_inv = translate2d((x0 - x1) / 2, (y0 - y1) / 2, device=device) @ G_inv
    # The 2x image places input pixel i at 2i: scale the centred coordinates and re-centre.
    G_inv = scale2d(2, 2, device=device) @ G_inv @ scale2d(0.5, 0.5, device=device)
    G_inv = translate2d(-0.5, -0.5, device=device) @ G_inv @ translate2d(0.5, 0.5, device=device)

    out_h, out_w = (height + 2 * filter_pad) * 2, (width + 2 * filter_pad) * 2
    in_h, in_w = images.shape[2], images.shape[3]
    # Pixel coordinates -> grid_sample's normalised [-1, 1] coordinates (align_corners=False).
    G_inv = scale2d(2 / in_w, 2 / in_h, device=device) @ G_inv @ scale2d(out_w / 2, out_h / 2, device=device)
    theta = G_inv[:, :2, :].to(images.dtype)
    grid = F.affine_grid(theta, [batch, channels, out_h, out_w], align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    crop = 2 * filter_pad
    return apply_axes(images, downsample_matrix(f, out_h, crop), downsample_matrix(f, out_w, crop))


def apply_color(images: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Apply per-image homogeneous colour matrices C (B, 4, 4) to RGB or greyscale images (B, C, H, W).

    Greyscale images use the mean of the RGB rows, i.e. the effect of the matrix on a grey pixel.
    """
    batch, channels, height, width = images.shape
    flat = images.reshape(batch, channels, height * width)
    C = C.to(images.dtype)
    if channels == 3:
        flat = C[:, :3, :3] @ flat + C[:, :3, 3:]
    elif channels == 1:
        grey = C[:, :3, :].mean(dim=1, keepdim=True)  # (B, 1, 4)
        flat = flat * grey[:, :, :3].sum(dim=2, keepdim=True) + grey[:, :, 3:]
    else:
        raise AcneopsError(
            f"ADA colour augmentation needs RGB (3 channels) or greyscale (1 channel) images, got {channels} "
            "channels; convert the images or disable brightness/contrast/lumaflip/hue/saturation"
        )
    return flat.reshape(batch, channels, height, width)
