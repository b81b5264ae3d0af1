"""Safe image decoding, normalisation to RGB, perceptual hashing and image-quality metrics.

Shared by ``ingest`` (which decodes every raw file fully to validate it) and ``restore`` (which
writes the normalised pixels as metadata-free PNGs). Decisions taken here, once for every stage:

- EXIF orientation is applied, then the image is converted to 8-bit RGB. Transparent modes
  (RGBA, LA, PA, P with transparency, RGBa) are composited on white: dropping alpha would expose
  whatever colour the invisible pixels happen to carry (often black or garbage).
- 16-bit and 32-bit integer images are scaled to 8 bits (I;16*: value/257; I: value/257 when any
  value exceeds 255, else kept); float images (F) are read as 0..1 when their maximum is <= 1,
  else as 0..255, and clipped.
- The decompression-bomb limit is applied per call: Pillow's global ``MAX_IMAGE_PIXELS`` is set
  for the duration of the decode and restored afterwards, and the size is checked explicitly.
- Nothing returned here carries metadata into an output: writers use ``acneops.core.io.save_png``.

:func:`read_rgb` is the one reader of an image file for every other package (classifier data, GAN bank,
audit, feature extractors, grids): the same decoding, so a file means the same pixels everywhere.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from acneops.core.errors import StageError

WHITE = (255, 255, 255)
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_INT16_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}


class ImageRejected(StageError):
    """A file that cannot be used as an image; ``kind`` is a short machine-readable reason (e.g. ``truncated``)."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@contextlib.contextmanager
def pixel_limit(max_pixels: int | None) -> Iterator[None]:
    """Reject images above ``max_pixels`` while the block runs; Pillow's global limit is restored after.

    Pillow warns above ``MAX_IMAGE_PIXELS`` and raises above twice that; the warning is turned into
    an error here so the limit is exactly ``max_pixels``. ``None`` keeps Pillow's default.
    """
    if max_pixels is None:
        yield
        return
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _high_bit_to_l(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float greyscale -> 8-bit L (scaling documented in the module docstring)."""
    arr = np.asarray(image).astype(np.float64)
    if image.mode in _INT16_MODES or (image.mode == "I" and arr.size and arr.max() > 255):
        arr = arr / 257.0
    elif image.mode == "F" and arr.size and np.nanmax(arr) <= 1.0:
        arr = arr * 255.0
    arr = np.nan_to_num(arr, nan=0.0)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (alpha composited on white, high bit depths scaled)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _INT16_MODES or mode in ("I", "F"):
        return _high_bit_to_l(image).convert("RGB")
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        if mode == "La":  # premultiplied LA has no direct conversion
            image = image.convert("LA")
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageRejected("unsupported_mode", f"image mode {mode} cannot be converted to RGB: {exc}")


def _rejection(exc: BaseException, what: str) -> ImageRejected:
    """Classify a decoder exception: ``truncated`` (file ends early) or ``corrupt`` (anything else)."""
    text = str(exc) or type(exc).__name__
    kind = "truncated" if "truncat" in text.lower() or isinstance(exc, EOFError) else "corrupt"
    return ImageRejected(kind, f"{what} ({kind}): {text}")


def open_normalised(
    source: str | Path | BinaryIO,
    draft_size: tuple[int, int] | None = None,
    max_pixels: int | None = None,
) -> Image.Image:
    """Decode ``source`` fully and return an 8-bit RGB image with EXIF orientation applied.

    ``draft_size`` lets JPEG decoding skip detail (DCT scaling by 1/2, 1/4, 1/8) while keeping
    both sides >= the requested size: a 3112x3456 ACNE04 photo needed at 64 px decodes at 1/8.
    A path is read into memory first, so no file handle stays open. Undecodable input raises
    :class:`ImageRejected` with a ``kind`` (not_an_image, decompression_bomb, truncated, corrupt).
    """
    if isinstance(source, (str, Path)):
        source = io.BytesIO(Path(source).read_bytes())  # no file handle to close, no copy needed later
    with pixel_limit(max_pixels):
        try:
            image = Image.open(source)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected("decompression_bomb", f"decompression bomb: {exc}") from None
        except UnidentifiedImageError:
            raise ImageRejected("not_an_image", "not a recognised image format") from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure on hostile input is a rejection
            raise _rejection(exc, "cannot open image") from None
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageRejected(
                "decompression_bomb",
                f"decompression bomb: {width}x{height} = {width * height} pixels > max_pixels {max_pixels}",
            )
        if draft_size is not None and image.format == "JPEG":
            image.draft(None, draft_size)
        try:
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected("decompression_bomb", f"decompression bomb: {exc}") from None
        except Exception as exc:  # noqa: BLE001
            raise _rejection(exc, "cannot decode image data") from None
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not reject good pixels
        pass
    return to_rgb(image)


def decode_file(path: str | Path, max_pixels: int | None) -> tuple[bytes, Image.Image]:
    """Read ``path`` once and return (file bytes, normalised RGB image); empty files are rejected."""
    data = Path(path).read_bytes()
    if not data:
        raise ImageRejected("zero_byte", "file is empty (0 bytes)")
    return data, open_normalised(io.BytesIO(data), max_pixels=max_pixels)


def centre_square(image: Image.Image) -> Image.Image:
    """The largest centred square of ``image`` (phantom and ACNE04 faces are roughly centred)."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def resize_lanczos(image: Image.Image, size: int, reducing_gap: float | None = 3.0) -> Image.Image:
    """Resize to ``size`` x ``size`` with Lanczos; antialiased when shrinking.

    ``reducing_gap`` (Pillow) first shrinks by an integer factor with a box filter, which speeds up large
    reductions (restore's default); ``None`` applies the exact Lanczos filter in one pass (:func:`read_rgb`).
    """
    if image.size == (size, size):
        return image
    return image.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=reducing_gap)


def read_rgb(path: str | Path, size: int | None = None, fix: str = "replace or remove the file") -> Image.Image:
    """The image file at ``path`` as 8-bit RGB, decoded by :func:`open_normalised` (EXIF orientation applied,
    alpha composited on white, 16-bit scaled: the pixels ingest and restore saw).

    With ``size``, a square image of at least that side is shrunk to ``size`` x ``size`` with exact Lanczos
    (no ``reducing_gap``: deterministic and as NVIDIA's dataset_tool); any other shape is refused. A missing,
    unreadable or wrongly sized file raises :class:`ImageRejected` naming the file and ending with ``fix``.
    """
    try:
        image = open_normalised(path)
    except FileNotFoundError:
        raise ImageRejected("missing_file", f"{path}: cannot read image (file not found); {fix}") from None
    except (ImageRejected, OSError) as exc:
        raise ImageRejected(getattr(exc, "kind", "unreadable"), f"{path}: cannot read image ({exc}); {fix}") from None
    if size is None:
        return image
    width, height = image.size
    if width != height or width < size:
        raise ImageRejected("wrong_size", f"{path}: image is {width}x{height}, {size}x{size} is needed (square "
                                          f"images of at least that side); {fix}")
    return resize_lanczos(image, size, reducing_gap=None)


# ---------------------------------------------------------------------------------------------
# Perceptual hash (DCT pHash, 64 bits)


@lru_cache(maxsize=4)
def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix (n, n): coefficients = D @ x @ D.T."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d


def phash(image: Image.Image, hash_size: int = 8, highfreq_factor: int = 4) -> int:
    """64-bit DCT perceptual hash: greyscale 32x32, 2-D DCT, 8x8 low frequencies vs their median.

    Robust to re-encoding, resizing and mild colour changes, so near-duplicates (the same photo
    saved twice, a resized copy) have a small Hamming distance; unrelated images differ in ~32 bits.
    """
    n = hash_size * highfreq_factor
    grey = image.resize((n, n), Image.Resampling.LANCZOS, reducing_gap=2.0).convert("L")
    pixels = np.asarray(grey, dtype=np.float64)
    d = _dct_matrix(n)
    low = (d @ pixels @ d.T)[:hash_size, :hash_size]
    bits = (low > np.median(low)).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return (a ^ b).bit_count()


# ---------------------------------------------------------------------------------------------
# Quality metrics: PSNR and SSIM on luma (ITU-R BT.601 Y, 8-bit range), as usual in SR papers


def luma(image: Image.Image | np.ndarray) -> np.ndarray:
    """BT.601 luma Y in 0..255 (float64, (H, W)) of an RGB image or (H, W, 3) array."""
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 2:
        return arr
    return arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114


def psnr(a: Image.Image | np.ndarray, b: Image.Image | np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB on luma; ``inf`` for identical images."""
    ya, yb = luma(a), luma(b)
    if ya.shape != yb.shape:
        raise ValueError(f"psnr: shapes differ {ya.shape} vs {yb.shape}")
    mse = float(np.mean((ya - yb) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range**2 / mse))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' convolution of (H, W) ``x`` with the 1-D window ``g`` on both axes."""
    w = len(g)
    rows = np.lib.stride_tricks.sliding_window_view(x, w, axis=0) @ g  # (H-w+1, W)
    return np.lib.stride_tricks.sliding_window_view(rows, w, axis=1) @ g  # (H-w+1, W-w+1)


def ssim(
    a: Image.Image | np.ndarray,
    b: Image.Image | np.ndarray,
    data_range: float = 255.0,
    window: int = 11,
    sigma: float = 1.5,
) -> float:
    """Mean structural similarity (Wang et al. 2004) on luma: Gaussian window 11, sigma 1.5, K=(0.01, 0.03)."""
    ya, yb = luma(a), luma(b)
    if ya.shape != yb.shape:
        raise ValueError(f"ssim: shapes differ {ya.shape} vs {yb.shape}")
    if min(ya.shape) < window:
        raise ValueError(f"ssim: images must be at least {window}x{window}, got {ya.shape}")
    g = _gaussian_window(window, sigma)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _filter_valid(ya, g), _filter_valid(yb, g)
    var_a = _filter_valid(ya * ya, g) - mu_a**2
    var_b = _filter_valid(yb * yb, g) - mu_b**2
    cov = _filter_valid(ya * yb, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def cpu_workers(workers: int) -> int:
    """Resolve a ``workers`` setting: 0 means every core of this machine."""
    return workers if workers > 0 else max(1, os.cpu_count() or 1)
