"""acneops.data.metadata: every container the importers accept loses its metadata, never a pixel."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from acneops.data.decode import open_normalised
from acneops.data.metadata import UnsupportedImage, strip_metadata

SECRET = "patient 0042, clinic X"
PHOTO = Image.fromarray(np.random.default_rng(1).integers(0, 256, (33, 47, 3), dtype=np.uint8))


def _exif(orientation: int | None = None, gps: bool = True) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "ClinicCam"  # Make
    exif[0x010E] = SECRET  # ImageDescription
    if orientation:
        exif[0x0112] = orientation
    if gps:
        exif[0x8825] = {1: "N", 2: (52.0, 22.0, 5.0)}
    return exif


def _save(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_text() -> PngInfo:
    info = PngInfo()
    info.add_text("Comment", SECRET)
    info.add_text("Author", SECRET, zip=True)
    info.add_itxt("Description", SECRET)
    return info


def _with_jfif_thumbnail(data: bytes) -> bytes:
    """Replace Pillow's JFIF APP0 by one carrying a 1x1 thumbnail whose RGB bytes spell 'pat'."""
    length = struct.unpack(">H", data[4:6])[0]
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x01\x01pat"
    return data[:2] + b"\xff\xe0" + struct.pack(">H", len(app0) + 2) + app0 + data[4 + length:]


def _with_chunk(png: bytes, kind: bytes, payload: bytes) -> bytes:
    """Insert an ancillary chunk right after IHDR."""
    chunk = struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    return png[:33] + chunk + png[33:]


def _mpo() -> bytes:
    buf = io.BytesIO()
    PHOTO.save(buf, format="MPO", save_all=True, append_images=[PHOTO.rotate(90)], exif=_exif())
    return buf.getvalue()


CASES = {
    "jpeg-exif-gps-comment": lambda: _save(PHOTO, "JPEG", exif=_exif(), comment=SECRET),
    "jpeg-orientation-6": lambda: _save(PHOTO, "JPEG", exif=_exif(6), comment=SECRET),
    "jpeg-progressive": lambda: _save(PHOTO, "JPEG", progressive=True, exif=_exif(3), comment=SECRET),
    "jpeg-restart-markers": lambda: _save(PHOTO, "JPEG", restart_marker_blocks=1, exif=_exif(), comment=SECRET),
    "jpeg-cmyk-adobe": lambda: _save(PHOTO.convert("CMYK"), "JPEG", exif=_exif(8), comment=SECRET),
    "jpeg-grey-icc": lambda: _save(PHOTO.convert("L"), "JPEG", icc_profile=b"\x00" * 128, exif=_exif()),
    "jpeg-xmp-orientation": lambda: _save(
        PHOTO, "JPEG", xmp=f'<x:xmpmeta tiff:Orientation="6" dc:creator="{SECRET}"/>'.encode()),
    "jpeg-jfif-thumbnail": lambda: _with_jfif_thumbnail(_save(PHOTO, "JPEG", comment=SECRET)),
    "jpeg-trailer": lambda: _save(PHOTO, "JPEG") + SECRET.encode(),
    "mpo-second-image": _mpo,
    "png-text-exif": lambda: _save(PHOTO, "PNG", pnginfo=_png_text(), exif=_exif(6)),
    "png-time-private": lambda: _with_chunk(_with_chunk(_save(PHOTO, "PNG"), b"tIME", b"\x07\xe9\x01\x02\x03\x04\x05"),
                                           b"prVt", SECRET.encode()),
    "png-palette-transparency": lambda: _save(PHOTO.convert("P"), "PNG", transparency=3, pnginfo=_png_text()),
    "png-16-bit": lambda: _save(Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30) * 97), "PNG",
                                pnginfo=_png_text()),
    "webp-exif-xmp": lambda: _save(PHOTO, "WEBP", lossless=True, exif=_exif(6), xmp=SECRET.encode()),
    "tiff-description": lambda: _save(PHOTO, "TIFF", exif=_exif(6, gps=False), description=SECRET),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_metadata_removed_pixels_identical(case):
    data = CASES[case]()
    clean = strip_metadata(data)
    assert clean.removed
    for needle in (SECRET.encode(), b"ClinicCam", b"pat\xff"):
        assert needle not in clean.data
    with Image.open(io.BytesIO(data)) as a, Image.open(io.BytesIO(clean.data)) as b:
        a.load(), b.load()
        assert (a.mode, a.size, a.tobytes()) == (b.mode, b.size, b.tobytes())  # decoded pixels, byte for byte
        assert "comment" not in b.info and "Comment" not in b.info
        assert set(b.getexif()) <= {0x0112}  # at most the orientation, nothing else
    # what every stage sees (orientation applied, RGB) is unchanged too
    assert open_normalised(io.BytesIO(data)).tobytes() == open_normalised(io.BytesIO(clean.data)).tobytes()
    assert strip_metadata(clean.data).data == clean.data  # idempotent


def test_orientation_is_recorded_as_a_minimal_exif_block():
    clean = strip_metadata(CASES["jpeg-orientation-6"]())
    assert clean.orientation == 6 and {"exif", "comment"} <= set(clean.removed)
    with Image.open(io.BytesIO(clean.data)) as im:
        assert dict(im.getexif()) == {0x0112: 6}
    assert strip_metadata(CASES["jpeg-exif-gps-comment"]()).orientation == 1


def test_clean_files_pass_unchanged_and_bmp_is_copied():
    for data in (_save(PHOTO, "JPEG"), _save(PHOTO, "PNG"), _save(PHOTO, "BMP")):
        assert strip_metadata(data).data == data and strip_metadata(data).removed == ()


@pytest.mark.parametrize(("data", "needle"), [
    (b"just text named .jpg", "not a JPEG, PNG, WebP, TIFF or BMP"),
    (b"\xff\xd8\xff\xe1\x40\x00Exif", "runs past the end of the file"),
    (_save(Image.fromarray(np.zeros((4, 4), np.float32)), "TIFF"), "convert it to PNG yourself"),
])
def test_unparseable_files_are_refused_with_a_reason(data, needle):
    with pytest.raises(UnsupportedImage, match=needle):
        strip_metadata(data)
