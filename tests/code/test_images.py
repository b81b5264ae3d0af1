"""The one image reader (acneops.data.decode.read_rgb) gives the pixels the five readers it replaced gave.

Before this reader there were ``classify.data.load_rgb``, ``audit.copies.load_rgb``, ``metrics.features.load_rgb``,
``report.grid.to_image`` (all ``Image.open(p).convert('RGB')``), ``gan.bank.read_image`` (the same plus a LANCZOS
downscale) and ``data.decode.open_normalised`` (ingest/restore: EXIF orientation, alpha on white, 16-bit scaled).
The checksums below were taken from those readers before they were removed (same fixture files, same Pillow).

Where the old readers agreed (RGB, L, palette, opaque RGBA, JPEG RGB/L/CMYK) the new reader gives exactly their
arrays. Where they disagreed (transparent RGBA/LA/palette, 16-bit, EXIF-rotated JPEG) it gives open_normalised's
arrays — the pixels every ingested and restored image already had — and the test pins that the plain
``convert('RGB')`` readers differed there (they dropped alpha, clipped 16-bit values at 255, ignored EXIF).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from image_files import write_image_files, write_square_files
from PIL import Image

from acneops.core.errors import StageError
from acneops.data.decode import ImageRejected, read_rgb

# sha256[:16] of (shape, dtype, bytes) of each old reader's output, recorded before the readers were merged
OLD_CONVERT_RGB = {  # classify / audit / features / grid readers: identical on every file
    "cmyk.jpg": "2881c9a7375d3409", "exif_rotated.jpg": "22f578f1230f3cc4", "i16.png": "6f95272145827847",
    "l.jpg": "bba16c704b7a4e12", "l.png": "03d1c400000fd689", "la.png": "03d1c400000fd689",
    "p.png": "43988a1444c995b6", "p_transparent.png": "43988a1444c995b6", "rgb.jpg": "22f578f1230f3cc4",
    "rgb.png": "b2ba77bdb70a3371", "rgba.png": "b2ba77bdb70a3371", "rgba_opaque.png": "b2ba77bdb70a3371",
}
OLD_OPEN_NORMALISED = {  # ingest / restore
    "cmyk.jpg": "2881c9a7375d3409", "exif_rotated.jpg": "eac3d5038f866ce8", "i16.png": "b3870b0f0d9ff244",
    "l.jpg": "bba16c704b7a4e12", "l.png": "03d1c400000fd689", "la.png": "b55b4841b4acb70b",
    "p.png": "43988a1444c995b6", "p_transparent.png": "6ac240e95c6885dd", "rgb.jpg": "22f578f1230f3cc4",
    "rgb.png": "b2ba77bdb70a3371", "rgba.png": "17620499a48422c3", "rgba_opaque.png": "b2ba77bdb70a3371",
}
OLD_GAN_BANK = {  # gan.bank.read_image(file, resolution) as uint8 (3, H, W)
    ("sq256.png", 32): "3640faa75b467d9c", ("sq256.png", 64): "97672f7ed668a4e8",
    ("sq32.png", 32): "866e6ea5e6eedf60", ("sq64.png", 32): "ad996aa7ea05405b", ("sq64.png", 64): "ea66aa939ace55d8",
}
DISAGREED = {"exif_rotated.jpg", "i16.png", "la.png", "p_transparent.png", "rgba.png"}


def digest(array) -> str:
    a = np.ascontiguousarray(np.asarray(array))
    return hashlib.sha256(repr((a.shape, str(a.dtype))).encode() + a.tobytes()).hexdigest()[:16]


def old_convert_rgb(path) -> np.ndarray:
    """A copy of the removed readers' logic (classify/audit/features/grid)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_image_files(tmp_path_factory.mktemp("images"))


def test_fixture_kinds_cover_every_mode(files):
    modes = {name: Image.open(p).mode for name, p in files.items()}
    assert {modes[n] for n in ("rgba.png", "la.png", "l.png", "i16.png", "p.png", "cmyk.jpg")} == \
        {"RGBA", "LA", "L", "I;16", "P", "CMYK"}
    assert set(files) == set(OLD_CONVERT_RGB) == set(OLD_OPEN_NORMALISED)


@pytest.mark.parametrize("name", sorted(OLD_CONVERT_RGB))
def test_reader_matches_every_old_reader_where_they_agreed_and_ingest_where_they_did_not(files, name):
    got = np.asarray(read_rgb(files[name]))
    assert got.dtype == np.uint8 and got.ndim == 3 and got.shape[2] == 3
    assert digest(got) == OLD_OPEN_NORMALISED[name]  # the pixels ingest/restore gave this file
    assert digest(old_convert_rgb(files[name])) == OLD_CONVERT_RGB[name]  # the copy of the old logic is faithful
    if name in DISAGREED:
        assert digest(got) != OLD_CONVERT_RGB[name]  # a documented change for the convert('RGB') readers
    else:
        assert np.array_equal(got, old_convert_rgb(files[name]))


def test_documented_normalisation_on_the_files_where_old_readers_disagreed(files):
    rgba = np.asarray(Image.open(files["rgba.png"]))
    got = np.asarray(read_rgb(files["rgba.png"])).astype(int)
    alpha = rgba[..., 3:].astype(int)
    assert np.abs(got - (rgba[..., :3] * alpha + 255 * (255 - alpha)) / 255).max() <= 1  # composited on white
    i16 = np.asarray(Image.open(files["i16.png"])).astype(float)
    assert np.array_equal(np.asarray(read_rgb(files["i16.png"]))[..., 0], np.rint(i16 / 257).astype(np.uint8))
    assert read_rgb(files["exif_rotated.jpg"]).size == (16, 24)  # EXIF orientation 6 applied (24x16 stored)


def test_gan_bank_reads_the_old_pixels_at_its_resolution(tmp_path):
    from acneops.gan.bank import read_image

    squares = write_square_files(tmp_path)
    for (name, res), want in OLD_GAN_BANK.items():
        got = read_image(squares[name], res)
        assert got.shape == (3, res, res) and digest(got) == want, (name, res)
    with Image.open(squares["sq256.png"]) as im:  # exact Lanczos: Pillow's reducing_gap would change pixels here
        gapped = np.asarray(im.resize((32, 32), Image.Resampling.LANCZOS, reducing_gap=3.0)).transpose(2, 0, 1)
    assert digest(gapped) != OLD_GAN_BANK[("sq256.png", 32)]


def test_unreadable_missing_and_wrong_size_files_name_the_file_and_the_fix(tmp_path, files):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(StageError, match=r"broken.png: cannot read image \(.*\); replace or remove the file"):
        read_rgb(tmp_path / "broken.png")
    with pytest.raises(ImageRejected, match=r"nothing.png: cannot read image \(file not found\); do X"):
        read_rgb(tmp_path / "nothing.png", fix="do X")
    with pytest.raises(ImageRejected, match=r"rgb.png: image is 24x16, 16x16 is needed \(square") as err:
        read_rgb(files["rgb.png"], 16)
    assert err.value.kind == "wrong_size"
    assert read_rgb(files["rgb.png"]).size == (24, 16)  # no size: the file's own size


def test_every_former_reader_now_calls_the_one_reader(files, tmp_path):
    """The callers that had their own reader read a file exactly as read_rgb does."""
    from acneops.audit.copies import image_at
    from acneops.features.extractors import _iter_batches
    from acneops.report.grid import to_image

    want = np.asarray(read_rgb(files["rgba.png"]))  # a file where the old readers would have differed
    assert np.array_equal(image_at([files["rgba.png"]], 0), want)
    assert np.array_equal(next(_iter_batches([files["rgba.png"]], 1))[0], want)
    assert np.array_equal(np.asarray(to_image(files["rgba.png"])), want)
