"""Sample grids: many images tiled into one PNG (phantom previews, GAN samples, sorted sets).

Pillow only, so any stage can call it without torch. Cells are square; an image is fitted inside its
cell keeping its aspect ratio, upscaled with NEAREST (pixels stay visible, nothing is invented) and
downscaled with LANCZOS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from acneops.core.io import save_png


def to_image(item: Any) -> Image.Image:
    """An RGB PIL image from a path, a PIL image or an array.

    Arrays: uint8 (H, W), (H, W, 3|4) or (3, H, W); floats must be in [0, 1] (convert GAN output from
    [-1, 1] first: ``(x + 1) / 2``).
    """
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, (str, Path)):
        with Image.open(item) as im:
            return im.convert("RGB")
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


def _fit(image: Image.Image, cell: int) -> Image.Image:
    w, h = image.size
    k = cell / max(w, h)
    size = (max(1, round(w * k)), max(1, round(h * k)))
    if size == image.size:
        return image
    method = Image.Resampling.NEAREST if k > 1 else Image.Resampling.LANCZOS
    return image.resize(size, method)


def make_grid(images: Sequence[Any], ncol: int, cell: int | None = None, pad: int = 2,
              background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Tile ``images`` row by row, ``ncol`` per row, each in a ``cell``-px square (default: the largest side)."""
    if ncol < 1:
        raise ValueError(f"ncol must be >= 1, got {ncol}")
    tiles = [to_image(x) for x in images]
    if not tiles:
        raise ValueError("no images to tile")
    cell = cell or max(max(t.size) for t in tiles)
    nrow = -(-len(tiles) // ncol)
    grid = Image.new("RGB", (ncol * cell + (ncol + 1) * pad, nrow * cell + (nrow + 1) * pad), background)
    for i, tile in enumerate(tiles):
        tile = _fit(tile, cell)
        r, c = divmod(i, ncol)
        x = pad + c * (cell + pad) + (cell - tile.size[0]) // 2
        y = pad + r * (cell + pad) + (cell - tile.size[1]) // 2
        grid.paste(tile, (x, y))
    return grid


def save_grid(images: Sequence[Any], out_path: str | Path, ncol: int, cell: int | None = None,
              pad: int = 2) -> Path:
    """Save ``images`` (paths, PIL images or arrays) tiled ``ncol`` per row as a metadata-free PNG."""
    out_path = Path(out_path)
    save_png(out_path, make_grid(images, ncol, cell, pad))
    return out_path
