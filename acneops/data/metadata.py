"""Strip metadata from image files without touching the pixels (used by the importers).

Raw data is versioned and pushed (``data.dvc``), so it must not carry GPS positions, camera serials,
comments ("patient 0042, clinic X") or editing history. Each container is rewritten segment by
segment, never re-encoded, so the decoded pixels are byte-identical:

- JPEG: APP1 (EXIF, XMP), APP2 other than ICC (FlashPix, MPF), APP3-APP13 (IPTC/Photoshop, ...),
  APP15, COM and anything after EOI (MPF second images, vendor trailers) are dropped. Kept, because
  decoding or colour depends on them: JFIF APP0 (its embedded thumbnail removed: a thumbnail can show
  what a crop removed), ICC APP2, Adobe APP14 (colour transform), and every frame/scan segment.
- PNG: every ancillary chunk except the ones that change how pixels are shown (tRNS, gAMA, cHRM,
  sRGB, iCCP, sBIT, cICP, mDCv, cLLI, pHYs, bKGD, APNG frames) is dropped: tEXt, zTXt, iTXt, eXIf,
  tIME and private chunks go; anything after IEND goes.
- WebP: EXIF and XMP chunks (and unknown chunks) are dropped, the VP8X flags updated.
- TIFF keeps metadata in the same tag directory as the pixel layout, so it is converted to PNG
  (``.png`` appended to the name), verified pixel-identical after decoding (Pillow applies a TIFF's
  orientation while decoding, so the PNG holds the upright pixels), or refused.
- BMP carries no text metadata and is copied unchanged.

EXIF orientation: the decoder (``acneops.data.decode``) applies it, so dropping it would turn photos
sideways. Rotating a JPEG losslessly needs DCT-domain surgery (jpegtran), so instead the orientation
Pillow would apply (EXIF, or XMP ``tiff:Orientation`` as fallback) is *recorded*: a 26-byte EXIF block
holding only the Orientation tag replaces the dropped ones when it is 2..8.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import zlib

from PIL import Image

from acneops.core.errors import AcneopsError

ORIENTATION_TAG = 0x0112
EXIF_HEADER = b"Exif\x00\x00"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_KEEP = frozenset({b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"cICP", b"mDCv", b"cLLI",
                      b"pHYs", b"bKGD", b"acTL", b"fcTL", b"fdAT"})
WEBP_KEEP = frozenset({b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ANIM", b"ANMF", b"ICCP"})
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field


class UnsupportedImage(AcneopsError):
    """A file whose container cannot be parsed, so its metadata cannot be removed: not imported."""


@dataclasses.dataclass(frozen=True)
class Stripped:
    data: bytes  # the file to write
    format: str  # jpeg | png | webp | bmp | tiff
    removed: tuple[str, ...]  # what was dropped, e.g. ("exif", "comment"); empty = nothing found
    orientation: int = 1  # EXIF orientation kept as a minimal EXIF block (1 = none kept)
    suffix: str = ""  # appended to the file name when the format changed (TIFF -> ".png")


def minimal_exif(orientation: int) -> bytes:
    """A little-endian TIFF/EXIF block with one IFD entry: Orientation (SHORT) = ``orientation``."""
    return b"II*\x00" + struct.pack("<IHHHIHHI", 8, 1, ORIENTATION_TAG, 3, 1, orientation, 0, 0)


def decoder_orientation(data: bytes) -> int:
    """The orientation Pillow's ``exif_transpose`` would apply to ``data`` (1 when none or unreadable)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            value = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - decode.open_normalised ignores a broken EXIF block the same way
        return 1
    return value if isinstance(value, int) and 2 <= value <= 8 else 1


def strip_metadata(data: bytes) -> Stripped:
    """Remove metadata from an image file's bytes (format told by content, not by file name)."""
    if data.startswith(b"\xff\xd8\xff"):
        return _strip_jpeg(data)
    if data.startswith(PNG_SIGNATURE):
        return _strip_png(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _strip_webp(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_to_png(data)
    if data[:2] == b"BM":
        return Stripped(data, "bmp", ())
    raise UnsupportedImage("not a JPEG, PNG, WebP, TIFF or BMP file (judged by its content, not its name)")


# ---------------------------------------------------------------------------------------------
# JPEG


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def _jpeg_decision(marker: int, payload: bytes) -> tuple[bytes | None, str]:
    """(segment payload to write or None to drop, name of what was dropped or '')."""
    if marker == 0xE0:
        if payload.startswith(b"JFIF\x00") and len(payload) >= 14:
            thumb = "thumbnail" if len(payload) > 14 and payload[12] * payload[13] else ""
            return payload[:12] + b"\x00\x00", thumb  # JFIF fields kept, embedded thumbnail dropped
        return None, "jfxx-thumbnail" if payload.startswith(b"JFXX\x00") else "app0"
    if marker == 0xE1:
        return None, "exif" if payload.startswith(EXIF_HEADER) else "xmp" if b"adobe" in payload[:40] else "app1"
    if marker == 0xE2 and payload.startswith(b"ICC_PROFILE\x00"):
        return payload, ""
    if marker == 0xEE and payload.startswith(b"Adobe"):
        return payload, ""
    if 0xE2 <= marker <= 0xEF:
        names = {0xE2: "app2-flashpix-mpf", 0xED: "iptc-photoshop"}
        return None, names.get(marker, f"app{marker - 0xE0}")
    if marker == 0xFE:
        return None, "comment"
    return payload, ""


def _entropy_end(data: bytes, pos: int) -> int:
    """Index of the marker that ends the entropy-coded data starting at ``pos`` (len(data) if none)."""
    while True:
        j = data.find(b"\xff", pos)
        if j < 0 or j + 1 >= len(data):
            return len(data)
        nxt = data[j + 1]
        if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
            pos = j + 2  # stuffed 0xFF or a restart marker: still inside the scan
        elif nxt == 0xFF:
            pos = j + 1  # fill byte before a marker
        else:
            return j


def _strip_jpeg(data: bytes) -> Stripped:
    out, removed, pos = [b"\xff\xd8"], [], 2
    while pos < len(data):
        if data[pos] != 0xFF:  # extraneous bytes between segments: decoders skip them, so do we
            nxt = data.find(b"\xff", pos)
            removed.append("extraneous-bytes")
            pos = len(data) if nxt < 0 else nxt
            continue
        while pos + 1 < len(data) and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes
        if pos + 1 >= len(data):
            break
        marker = data[pos + 1]
        if marker == 0xD9:  # EOI: anything after it (MPF images, vendor trailers) is dropped
            out.append(b"\xff\xd9")
            if pos + 2 < len(data):
                removed.append("trailing-data")
            break
        if marker in _JPEG_STANDALONE:
            out.append(bytes((0xFF, marker)))
            pos += 2
            continue
        if marker == 0xD8 or pos + 4 > len(data):
            raise UnsupportedImage(f"malformed JPEG: unexpected marker 0x{marker:02X} at byte {pos}")
        end = pos + 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if end > len(data) or end < pos + 4:
            raise UnsupportedImage(
                f"malformed JPEG: segment 0x{marker:02X} at byte {pos} runs past the end of the file")
        keep, what = _jpeg_decision(marker, data[pos + 4:end])
        if what:
            removed.append(what)
        if keep is not None:
            out.append(_jpeg_segment(marker, keep))
        pos = end
        if marker == 0xDA:  # start of scan: copy the entropy-coded data up to the next marker
            stop = _entropy_end(data, pos)
            out.append(data[pos:stop])
            pos = stop
    orientation = decoder_orientation(data) if {"exif", "xmp", "app1"} & set(removed) else 1
    if orientation != 1:
        at = 2 if len(out) > 1 and out[1].startswith(b"\xff\xe0") else 1  # after SOI and JFIF
        out.insert(at, _jpeg_segment(0xE1, EXIF_HEADER + minimal_exif(orientation)))
    return Stripped(b"".join(out), "jpeg", tuple(dict.fromkeys(removed)), orientation)


# ---------------------------------------------------------------------------------------------
# PNG, WebP, TIFF


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _strip_png(data: bytes) -> Stripped:
    out, removed, pos = [PNG_SIGNATURE], [], len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        critical = kind[:1].isupper()  # IHDR, PLTE, IDAT, IEND and any unknown critical chunk
        if critical or kind in PNG_KEEP:
            out.append(data[pos:end])  # a truncated last chunk stays truncated: ingest reports it
        else:
            removed.append(kind.decode("latin-1"))
        pos = end
        if kind == b"IEND":
            break
    if pos < len(data):
        removed.append("trailing-data")
    orientation = decoder_orientation(data) if {"eXIf", "tEXt", "zTXt", "iTXt"} & set(removed) else 1
    if orientation != 1 and len(out) > 1:
        out.insert(2, _png_chunk(b"eXIf", minimal_exif(orientation)))  # after IHDR, before IDAT
    return Stripped(b"".join(out), "png", tuple(dict.fromkeys(removed)), orientation)


def _strip_webp(data: bytes) -> Stripped:
    chunks, removed, pos = [], [], 12
    while pos + 8 <= len(data):
        kind, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        end = pos + 8 + size + (size & 1)
        if end > len(data):
            raise UnsupportedImage(f"malformed WebP: chunk {kind!r} at byte {pos} runs past the end of the file")
        if kind in WEBP_KEEP:
            chunks.append([kind, data[pos + 8:pos + 8 + size]])
        else:
            removed.append(kind.decode("latin-1").strip().lower())
        pos = end
    orientation = decoder_orientation(data) if "exif" in removed else 1
    vp8x = next((c for c in chunks if c[0] == b"VP8X"), None)
    if vp8x is not None:
        flags = vp8x[1][0] & ~0x0C  # EXIF (0x08) and XMP (0x04) flags cleared ...
        if orientation != 1:
            flags |= 0x08  # ... EXIF set again for the minimal orientation block
            chunks.append([b"EXIF", minimal_exif(orientation)])
        vp8x[1] = bytes((flags,)) + vp8x[1][1:]
    else:
        orientation = 1  # a simple-format WebP cannot carry EXIF that decoders read
    body = b"WEBP" + b"".join(k + struct.pack("<I", len(p)) + p + b"\x00" * (len(p) & 1) for k, p in chunks)
    return Stripped(b"RIFF" + struct.pack("<I", len(body)) + body, "webp", tuple(dict.fromkeys(removed)),
                    orientation)


def _tiff_to_png(data: bytes) -> Stripped:
    """TIFF -> PNG with the same decoded pixels (mode and bytes checked) and ICC profile.

    Pillow applies a TIFF's orientation tag while loading it, so the PNG holds upright pixels and needs
    no orientation block."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            options = {k: image.info[k] for k in ("icc_profile", "transparency") if k in image.info}
            buf = io.BytesIO()
            image.save(buf, format="PNG", **options)
            mode, pixels = image.mode, image.tobytes()
        with Image.open(io.BytesIO(buf.getvalue())) as again:
            same = again.mode == mode and again.tobytes() == pixels
    except Exception as exc:  # noqa: BLE001 - hostile input: refuse the file, never crash the import
        raise UnsupportedImage(f"TIFF could not be converted to PNG ({exc}); convert it to PNG yourself") from None
    if not same:
        raise UnsupportedImage(f"TIFF in mode {mode} cannot be stored as PNG with identical pixels "
                               "(TIFF keeps metadata next to the pixels, so it is converted); "
                               "convert it to PNG yourself")
    return Stripped(buf.getvalue(), "tiff", ("tiff-tags",), 1, ".png")
