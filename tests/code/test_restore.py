"""restore + imaging: normalisation, metadata stripping, resolution, restorers, metrics, determinism."""

from __future__ import annotations

import csv
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from acneops.core.errors import StageError
from acneops.core.io import read_csv, read_json, sha256_file
from acneops.data import decode as imaging
from acneops.data import ingest as ingest_lib
from acneops.data import restore as restore_lib
from acneops.data.access import load_split
from acneops.stages import ingest, restore

CLASSES = ("healthy", "mild", "moderate", "severe")
RES = 32


def smooth(seed: int, size: int) -> Image.Image:
    grid = (np.random.default_rng(seed).random((5, 5, 3)) * 255).astype(np.uint8)
    return Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC)


def make_data(root: Path, per_class: int = 5, low_res: int = 2, extra: list[tuple[str, str]] = ()) -> Path:
    """Raw layout: per class ``per_class`` 64 px JPEGs + ``low_res`` 16 px web PNGs; ``extra`` rows (file, label)."""
    data = root / "data"
    (data / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for c, label in enumerate(CLASSES):
        for i in range(per_class + low_res):
            web = i >= per_class
            name = f"images/{label}_{i}.{'png' if web else 'jpg'}"
            img = smooth(100 * c + i, 64)
            (img.resize((16, 16), Image.Resampling.BICUBIC) if web else img).save(data / name, quality=95)
            rows.append([name, label, str(i), "phantom-web" if web else "phantom-hr", ""])
    rows += [[name, label, "", "custom", ""] for name, label in extra]
    with open(data / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "label", "lesions", "source", "split"])
        writer.writerows(rows)
    return data


def run_both(root: Path, data: Path, **kw) -> restore_lib.RestoreConfig:
    icfg = ingest_lib.IngestConfig(data_dir=data, out_dir=root / "ingest", report_path=root / "reports/ingest.json",
                               classes=CLASSES, min_size=8, workers=1)
    ingest.run(icfg)
    values = dict(ingest_dir=root / "ingest", data_dir=data, out_dir=root / "restored",
                  report_path=root / "reports/restore.json", sr_dir=root / "models/sr", resolution=RES,
                  restorer="lanczos", sr_steps=4, sr_batch=2, sr_patch=16, sr_channels=4, sr_blocks=1, workers=1)
    values.update(kw)
    cfg = restore_lib.RestoreConfig(**values)
    restore.run(cfg)
    return cfg


def all_rows(cfg: restore_lib.RestoreConfig) -> list[dict]:
    return [r for s in ("train", "val", "test") for r in read_csv(cfg.out_dir / s / "manifest.csv")]


def png_chunks(path: Path) -> list[str]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        kinds.append(kind.decode())
        pos += 12 + length
    return kinds


def test_every_image_is_restored_at_the_resolution_and_readable_by_load_split(tmp_path):
    cfg = run_both(tmp_path, make_data(tmp_path))
    rows = all_rows(cfg)
    assert len(rows) == 28 and list(rows[0])[:7] == ["file", "label", "lesions", "source", "split", "restorer",
                                                      "orig_sha256"]
    for split in ("train", "val", "test"):
        for sample in load_split(cfg.out_dir, split, role="restore"):
            with Image.open(sample.path) as im:
                assert im.size == (RES, RES) and im.mode == "RGB" and im.format == "PNG"
    web = [r for r in rows if r["source"] == "phantom-web"]
    assert len(web) == 8 and all(r["resize"] == "up" and r["restorer"] == "lanczos" for r in web)
    assert all(r["resize"] == "down" and r["restorer"] == "none" for r in rows if r["source"] == "phantom-hr")
    assert not list(cfg.out_dir.glob(".tmp-*")) and not list(cfg.out_dir.glob(".old-*"))
    ingest_rows = read_csv(tmp_path / "ingest/manifest.csv")
    assert sorted(r["orig_sha256"] for r in rows) == sorted(r["sha256"] for r in ingest_rows)


def test_report_has_psnr_and_ssim_for_both_restorers(tmp_path):
    cfg = run_both(tmp_path, make_data(tmp_path))
    cmp = read_json(cfg.report_path)["comparison"]
    for name in ("lanczos", "sr"):
        assert 10 < cmp[name]["psnr"] < 100 and 0 < cmp[name]["ssim"] <= 1
    assert set(cmp["sr_beats_lanczos"]) == {"psnr", "ssim"} and cmp["holdout_images"] >= 1
    ckpt = __import__("torch").load(cfg.sr_dir / "sr.pt", weights_only=True)
    assert {"format", "kind", "family", "model", "model_args", "step", "config", "optim"} <= set(ckpt)
    assert ckpt["kind"] == "sr"  # the one checkpoint format (acneops.core.checkpoint)
    train = {r["orig_sha256"] for r in read_csv(cfg.out_dir / "train/manifest.csv")}
    assert set(ckpt["train_sha256"]) <= train and set(ckpt["holdout_sha256"]) <= train
    assert not set(ckpt["train_sha256"]) & set(ckpt["holdout_sha256"])  # held-out images never trained sr


def test_sr_restorer_upscales_low_res_images(tmp_path):
    cfg = run_both(tmp_path, make_data(tmp_path), restorer="sr")
    web = [r for r in all_rows(cfg) if r["source"] == "phantom-web"]
    assert web and all(r["restorer"] == "sr" and r["resize"] == "up" for r in web)
    with Image.open(cfg.out_dir / web[0]["split"] / web[0]["file"]) as im:
        assert im.size == (RES, RES)


def test_same_seed_gives_byte_identical_outputs(tmp_path):
    data = make_data(tmp_path)
    a = run_both(tmp_path / "a", data, restorer="sr")
    b = run_both(tmp_path / "b", data, restorer="sr")

    def digests(cfg):
        return {p.relative_to(cfg.out_dir).as_posix(): sha256_file(p) for p in sorted(cfg.out_dir.rglob("*"))
                if p.is_file()}

    assert digests(a) == digests(b) and len(digests(a)) == 28 + 3


def test_exif_orientation_is_applied(tmp_path):
    stored = Image.new("RGB", (96, 64))
    stored.paste((255, 0, 0), (0, 0, 48, 64))  # left half red
    stored.paste((0, 0, 255), (48, 0, 96, 64))  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display: left half becomes the top
    data = make_data(tmp_path, extra=[("images/rotated.jpg", "mild")])
    stored.save(data / "images/rotated.jpg", exif=exif, quality=95)
    cfg = run_both(tmp_path, data, compare_restorers=False)
    ingested = {r["image"]: r for r in read_csv(tmp_path / "ingest/manifest.csv")}["images/rotated.jpg"]
    assert (ingested["width"], ingested["height"]) == ("64", "96")
    row = next(r for r in all_rows(cfg) if r["source"] == "custom")
    pixels = np.asarray(Image.open(cfg.out_dir / row["split"] / row["file"]), dtype=int)
    assert pixels[2, RES // 2, 0] > 200 and pixels[2, RES // 2, 2] < 60  # top: red
    assert pixels[-3, RES // 2, 2] > 200 and pixels[-3, RES // 2, 0] < 60  # bottom: blue


def test_gps_exif_icc_and_text_never_reach_the_restored_png(tmp_path):
    exif = Image.Exif()
    exif[0x010E] = "patient Jane Doe"  # ImageDescription
    exif.get_ifd(0x8825)[2] = (48.0, 51.0, 24.0)  # GPSLatitude
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = make_data(tmp_path, extra=[("images/gps.jpg", "mild"), ("images/text.png", "severe")])
    smooth(7, 64).save(data / "images/gps.jpg", exif=exif, icc_profile=icc, quality=95)
    with Image.open(data / "images/gps.jpg") as check:  # the input really carries GPS and ICC
        assert check.getexif().get_ifd(0x8825) and check.info["icc_profile"]
    from PIL import PngImagePlugin
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "patient Jane Doe")
    smooth(8, 64).save(data / "images/text.png", pnginfo=text)
    cfg = run_both(tmp_path, data, compare_restorers=False)
    for row in all_rows(cfg):
        path = cfg.out_dir / row["split"] / row["file"]
        assert set(png_chunks(path)) <= {"IHDR", "IDAT", "IEND"}
        with Image.open(path) as im:
            assert not im.getexif() and "icc_profile" not in im.info and not im.info.get("Comment")
        assert b"Jane" not in path.read_bytes()


@pytest.mark.parametrize("mode", ["L", "LA", "P", "CMYK", "I;16", "RGBA", "I", "F"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    base = smooth(5, 40)
    if mode == "I;16":
        image = Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257))
        assert image.mode == "I;16"
    elif mode == "F":
        image = Image.fromarray(np.asarray(base.convert("L"), dtype=np.float32) / 255.0)
    else:
        image = base.convert(mode)
    out = imaging.to_rgb(image)
    assert out.mode == "RGB" and out.size == (40, 40)
    grey = np.asarray(base.convert("L"), dtype=int)
    if mode in ("L", "LA", "I;16", "F"):  # high bit depths are scaled, not clipped to white
        assert np.abs(np.asarray(out, dtype=int)[..., 0] - grey).max() <= 1


def test_modes_on_disk_are_restored_as_rgb(tmp_path):
    files = {"l.png": "L", "la.png": "LA", "p.png": "P", "cmyk.jpg": "CMYK", "i16.png": "I;16", "rgba.png": "RGBA"}
    data = make_data(tmp_path, extra=[(f"images/{n}", "mild") for n in files])
    for i, (name, mode) in enumerate(files.items()):
        img = smooth(40 + i, 48)
        img = Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 257) if mode == "I;16" else img.convert(mode)
        img.save(data / "images" / name)
        with Image.open(data / "images" / name) as check:
            assert check.mode == mode
    cfg = run_both(tmp_path, data, compare_restorers=False)
    custom = [r for r in all_rows(cfg) if r["source"] == "custom"]
    assert len(custom) == len(files)
    for row in custom:
        with Image.open(cfg.out_dir / row["split"] / row["file"]) as im:
            assert im.mode == "RGB" and im.size == (RES, RES)


def test_transparent_pixels_are_composited_on_white():
    rgba = Image.new("RGBA", (12, 12), (0, 0, 0, 0))
    assert imaging.to_rgb(rgba).getpixel((3, 3)) == (255, 255, 255)


def test_draft_mode_decodes_large_jpegs_at_a_reduced_size(tmp_path):
    path = tmp_path / "big.jpg"
    smooth(3, 1024).save(path, quality=90)
    assert imaging.open_normalised(path, draft_size=(64, 64)).size == (128, 128)  # 1/8 DCT scaling
    assert imaging.open_normalised(path, draft_size=(300, 300)).size == (512, 512)
    assert imaging.open_normalised(path).size == (1024, 1024)


def test_ssim_and_psnr_sanity():
    x = np.asarray(smooth(1, 48), dtype=np.float64)
    assert imaging.ssim(x, x) == pytest.approx(1.0) and imaging.psnr(x, x) == float("inf")
    assert imaging.psnr(np.zeros((16, 16)), np.full((16, 16), 10.0)) == pytest.approx(10 * np.log10(255**2 / 100))
    rng = np.random.default_rng(0)
    slight = np.clip(x + rng.normal(0, 5, x.shape), 0, 255)
    heavy = np.clip(x + rng.normal(0, 40, x.shape), 0, 255)
    assert 1 > imaging.ssim(x, slight) > imaging.ssim(x, heavy) > 0
    assert imaging.ssim(x, slight) == pytest.approx(imaging.ssim(slight, x))
    assert imaging.psnr(x, slight) > imaging.psnr(x, heavy)


def test_untrained_sr_equals_lanczos():
    from acneops.data import sr

    low = smooth(2, 16)
    assert np.array_equal(np.asarray(sr.sr_upscale(sr.build_sr(8, 2), low, 32)),
                          np.asarray(imaging.resize_lanczos(low, 32)))


def test_a_failed_restore_keeps_the_previous_splits_whole(tmp_path):
    data = make_data(tmp_path)
    cfg = run_both(tmp_path, data, compare_restorers=False)
    before = {p: sha256_file(p) for p in cfg.out_dir.rglob("*") if p.is_file()}
    smooth(999, 64).save(data / "images/mild_0.jpg")  # changed after ingest
    with pytest.raises(StageError, match=r"mild_0.jpg changed since ingest"):
        restore.run(cfg)
    assert {p: sha256_file(p) for p in cfg.out_dir.rglob("*") if p.is_file()} == before
    assert not list(cfg.out_dir.glob(".tmp-*"))


def test_an_edited_test_split_is_refused(tmp_path):
    cfg = run_both(tmp_path, make_data(tmp_path), compare_restorers=False)
    manifest = tmp_path / "ingest/manifest.csv"
    text = manifest.read_text().replace(",test,", ",train,", 1)
    manifest.write_text(text)
    with pytest.raises(StageError, match="differ from the frozen test split"):
        restore.run(cfg)


def test_sr_without_high_res_train_images_is_a_clear_error(tmp_path):
    data = make_data(tmp_path, per_class=0, low_res=5)
    with pytest.raises(StageError, match="restorer 'sr' needs high-res train images"):
        run_both(tmp_path, data, restorer="sr")
