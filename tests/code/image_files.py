"""Small image files of every kind the readers meet (PNG: RGB, RGBA, LA, L, 16-bit, palette; JPEG: RGB, L,
CMYK, EXIF-rotated), written deterministically from a seeded RNG. Shared by the image-reader parity test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (24, 16)  # (W, H): non-square, so a rotation or a transpose would show


def write_image_files(folder: Path) -> dict[str, Path]:
    """Write every fixture into ``folder``; name -> path."""
    rng = np.random.default_rng(7)
    w, h = SIZE
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (h, w), dtype=np.uint8)
    grey = rng.integers(0, 256, (h, w), dtype=np.uint8)
    images: dict[str, tuple[Image.Image, dict]] = {
        "rgb.png": (Image.fromarray(rgb, "RGB"), {}),
        "rgba_opaque.png": (Image.fromarray(np.dstack([rgb, np.full((h, w), 255, np.uint8)]), "RGBA"), {}),
        "rgba.png": (Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), {}),
        "la.png": (Image.fromarray(np.dstack([grey, alpha]), "LA"), {}),
        "l.png": (Image.fromarray(grey, "L"), {}),
        "i16.png": (Image.fromarray((grey.astype(np.uint16) * 257 - rng.integers(0, 200, (h, w))).clip(0)
                                    .astype(np.uint16)), {}),
        "p.png": (Image.fromarray(rgb, "RGB").quantize(colors=16, method=Image.Quantize.MEDIANCUT), {}),
        "rgb.jpg": (Image.fromarray(rgb, "RGB"), {"quality": 90}),
        "l.jpg": (Image.fromarray(grey, "L"), {"quality": 90}),
        "cmyk.jpg": (Image.fromarray(rgb, "RGB").convert("CMYK"), {"quality": 90}),
    }
    paths = {}
    for name, (image, kwargs) in images.items():
        paths[name] = folder / name
        image.save(paths[name], **kwargs)
    paths["p_transparent.png"] = folder / "p_transparent.png"
    images["p.png"][0].save(paths["p_transparent.png"], transparency=3)  # palette index 3 is transparent
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    paths["exif_rotated.jpg"] = folder / "exif_rotated.jpg"
    Image.fromarray(rgb, "RGB").save(paths["exif_rotated.jpg"], quality=90, exif=exif.tobytes())
    return paths


def write_square_files(folder: Path) -> dict[str, Path]:
    """Square RGB PNGs for the GAN bank: 32, 64 and 256 px (256 -> 32 is the 8x shrink where Pillow's
    ``reducing_gap`` would change pixels)."""
    rng = np.random.default_rng(11)
    paths = {}
    for side in (32, 64, 256):
        paths[f"sq{side}.png"] = folder / f"sq{side}.png"
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), "RGB").save(paths[f"sq{side}.png"])
    return paths
