"""Sample grids: many images tiled into one PNG (GAN sample grids during training, per-class grids in reports).

The one grid writer of the project. Cells are square; an image is fitted inside its cell keeping its aspect
ratio (upscaled with NEAREST so pixels stay visible and nothing is invented, downscaled with LANCZOS) and
centred; ``torchvision.utils.make_grid`` then tiles the cells with ``pad`` px of ``background`` between and
around them. torch is imported only when a grid is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from acneops.core.io import save_png


def to_image(item: Any) -> Image.Image:
    """An RGB PIL image from a path (read by :func:`acneops.data.decode.read_rgb`), a PIL image or an array.

    Arrays: uint8 (H, W), (H, W, 3|4) or (3, H, W); floats must be in [0, 1] (convert GAN output from
    [-1, 1] first: ``(x + 1) / 2``).
    """
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, (str, Path)):
        from acneops.data.decode import read_rgb

        return read_rgb(item)
    arr = np.asarray(item)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3, 4):
        arr = arr.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"cannot tile an array of shape {arr.shape}; expected (H, W), (H, W, 3|4) or (3, H, W)")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"cannot tile an array of dtype {arr.dtype}; use uint8 or floats in [0, 1]")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"float image values must lie in [0, 1], got [{lo:.3f}, {hi:.3f}]")
        arr = np.floor(np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(arr).convert("RGB")


def _cell(image: Image.Image, cell: int, background: int) -> np.ndarray:
    """``image`` fitted into a ``cell`` x ``cell`` square on ``background``, centred: uint8 (3, cell, cell)."""
    w, h = image.size
    k = cell / max(w, h)
    size = (max(1, round(w * k)), max(1, round(h * k)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.NEAREST if k > 1 else Image.Resampling.LANCZOS)
    square = Image.new("RGB", (cell, cell), (background,) * 3)
    square.paste(image, ((cell - size[0]) // 2, (cell - size[1]) // 2))
    return np.asarray(square).transpose(2, 0, 1)


def make_grid(images: Sequence[Any], ncol: int, cell: int | None = None, pad: int = 2,
              background: int = 255) -> Image.Image:
    """Tile ``images`` row by row, ``ncol`` per row (fewer when there are fewer images), each in a ``cell``-px
    square (default: the largest side), ``pad`` px apart and from the edges.

    The grid is ``min(ncol, N) * (cell + pad) + pad`` px wide and ``ceil(N / ncol) * (cell + pad) + pad`` px
    high; padding and empty cells are grey level ``background`` (255 white, 0 black).
    """
    import torch
    from torchvision.utils import make_grid as tv_make_grid

    if ncol < 1:
        raise ValueError(f"ncol must be >= 1, got {ncol}")
    if not 0 <= background <= 255:
        raise ValueError(f"background is a grey level 0..255, got {background}")
    tiles = [to_image(x) for x in images]
    if not tiles:
        raise ValueError("no images to tile")
    cell = cell or max(max(t.size) for t in tiles)
    cells = torch.from_numpy(np.stack([_cell(t, cell, background) for t in tiles]))  # (N, 3, cell, cell) uint8
    grid = tv_make_grid(cells, nrow=ncol, padding=pad, pad_value=background)  # (3, H, W) uint8
    return Image.fromarray(grid.permute(1, 2, 0).numpy(), "RGB")


def save_grid(images: Sequence[Any], out_path: str | Path, ncol: int, cell: int | None = None,
              pad: int = 2, background: int = 255) -> Path:
    """Save ``images`` (paths, PIL images or arrays) tiled ``ncol`` per row as a metadata-free PNG at ``out_path``."""
    out_path = Path(out_path)
    save_png(out_path, make_grid(images, ncol, cell, pad, background))
    return out_path
