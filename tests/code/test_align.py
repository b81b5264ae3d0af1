"""FFHQ face alignment (acneops.faces.align) and its use by the restore stage, on real photos that ship offline:
matplotlib's ``grace_hopper.jpg`` and scikit-image's ``astronaut``; scikit-image's ``coffee`` and ``chelsea`` (a cat)
are photos without a human face. Needs the faces extra (installed in CI: ``.[dev,dask,faces]``).
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import yaml
from matplotlib import cbook
from PIL import Image

from acneops.core.checkpoint import save_checkpoint
from acneops.core.config import ConfigError, build
from acneops.core.errors import AcneopsError, StageError
from acneops.core.io import read_csv, read_json, sha256_file
from acneops.data import ingest as ingest_lib
from acneops.data import restore as restore_lib
from acneops.faces import align, landmarks
from acneops.stages import ingest, restore, run_stage


def grace_hopper() -> np.ndarray:
    """(600, 512, 3) uint8."""
    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return np.asarray(Image.open(path).convert("RGB"))


PHOTOS = {"grace_hopper": grace_hopper, "astronaut": skimage.data.astronaut}
# Marked by eye on 4-8x zoomed crops with a pixel grid (x, y in px of the photo): the centre of each eye opening
# (image-left eye, image-right eye) and the midpoint of the two mouth corners (FFHQ's mouth point).
HAND_MARKED = {
    "grace_hopper": {"eye_left": (222.0, 190.0), "eye_right": (305.0, 187.0), "mouth": (266.0, 279.5)},
    "astronaut": {"eye_left": (203.0, 101.0), "eye_right": (247.0, 103.5), "mouth": (223.5, 140.5)},
}
TOLERANCE_PX = 4.0


def points(face: landmarks.Face) -> dict[str, np.ndarray]:
    eye_l, eye_r, mouth = align.eye_mouth_points(face.landmarks)
    return {"eye_left": eye_l, "eye_right": eye_r, "mouth": mouth}


def eye_line_deg(face: landmarks.Face) -> float:
    eye_l, eye_r, _ = align.eye_mouth_points(face.landmarks)
    return math.degrees(math.atan2(eye_r[1] - eye_l[1], eye_r[0] - eye_l[0]))


@pytest.mark.parametrize("photo", sorted(PHOTOS))
def test_landmarks_are_within_a_few_px_of_the_hand_marked_eyes_and_mouth(photo):
    face = landmarks.detect(PHOTOS[photo]())
    assert face is not None and face.landmarks.shape == (68, 2)
    for name, found in points(face).items():
        err = float(np.hypot(*(found - HAND_MARKED[photo][name])))
        assert err <= TOLERANCE_PX, f"{photo} {name}: found {found}, marked {HAND_MARKED[photo][name]}, {err:.1f} px"
    # the lead's Face properties agree: image-left eye = subject's right eye
    marked = points(face)
    assert np.allclose(face.eye_right, marked["eye_left"]) and np.allclose(face.eye_left, marked["eye_right"])


def test_a_large_photo_is_searched_on_a_downscaled_copy_and_its_landmarks_scaled_back(monkeypatch):
    scale = 5
    photo = grace_hopper()
    big = np.asarray(Image.fromarray(photo).resize((512 * scale, 600 * scale), Image.Resampling.LANCZOS))
    seen = []
    real_detect = align.detect
    monkeypatch.setattr(align, "detect", lambda image, **kw: seen.append(image.shape) or real_detect(image, **kw))
    face = align.find_face(big, detect_size=1024, upsample=1)
    assert seen == [(1024, 874, 3)]  # the detector never scans the 2560 x 3000 photo
    for name, found in points(face).items():
        marked = (np.array(HAND_MARKED["grace_hopper"][name]) + 0.5) * scale - 0.5
        assert np.hypot(*(found - marked)) <= TOLERANCE_PX * scale, (name, found, marked)


def rotated(photo: np.ndarray, degrees: float) -> np.ndarray:
    """``photo`` turned counter-clockwise by ``degrees`` on a grey canvas large enough to keep it whole."""
    turned = Image.fromarray(photo).rotate(degrees, Image.Resampling.BICUBIC, expand=True, fillcolor=(128, 128, 128))
    return np.asarray(turned)


@pytest.mark.parametrize("degrees", [0, 25, -20])
@pytest.mark.parametrize("photo", sorted(PHOTOS))
def test_the_aligned_crop_is_upright_with_the_eyes_where_ffhq_puts_them(photo, degrees):
    size = 256
    result = align.align_face(rotated(PHOTOS[photo](), degrees), size)
    assert result.image.shape == (size, size, 3) and result.image.dtype == np.uint8
    assert abs(result.angle_deg + degrees) < 6  # the quad turned with the photo (the faces tilt by ~2 degrees)
    again = landmarks.detect(result.image)
    assert again is not None, "no face found in the aligned crop"
    assert abs(eye_line_deg(again)) < 3, f"eye line at {eye_line_deg(again):.1f} degrees"
    eye_l, eye_r, mouth = (p / size for p in align.eye_mouth_points(again.landmarks))
    middle = (eye_l + eye_r) / 2
    # FFHQ's frame: eyes a quarter of the side apart (less when the face is long), centred, at ~47% of the height;
    # the mouth ~0.2-0.3 of the side below them (a short face is framed by its eye distance)
    assert abs(middle[0] - 0.5) < 0.03 and abs(middle[1] - 0.47) < 0.03, middle
    assert 0.2 < eye_r[0] - eye_l[0] < 0.27, (eye_l, eye_r)
    assert abs(mouth[0] - 0.5) < 0.03 and 0.65 < mouth[1] < 0.8, mouth


def test_a_face_at_the_border_is_padded_with_a_blurred_reflection_not_black():
    photo = np.ascontiguousarray(grace_hopper()[100:420, 160:])  # the quad leaves the photo left and top
    result = align.align_face(photo, 128)
    assert (result.quad.min(axis=0) < 0).all()
    pixels = result.image.astype(float)

    def sharpness(patch: np.ndarray) -> float:  # mean absolute difference between neighbouring pixels
        return float(np.abs(np.diff(patch, axis=0)).mean() + np.abs(np.diff(patch, axis=1)).mean())

    corner, face = pixels[:16, :16], pixels[40:100, 40:100]
    assert corner.min() > 20 and sharpness(corner) < sharpness(face) / 2  # faded, blurred surroundings, no black
    assert abs(eye_line_deg(landmarks.detect(result.image, upsample=1))) < 3


def test_native_size_leaves_the_enlarging_to_the_restorer():
    result = align.align_face(skimage.data.astronaut(), 512, native_if_smaller=True)
    assert result.image.shape == (round(result.qsize),) * 2 + (3,) and result.qsize < 512
    assert align.align_face(skimage.data.astronaut(), 128, native_if_smaller=True).image.shape == (128, 128, 3)


@pytest.mark.parametrize("name", ["coffee", "chelsea"])
def test_a_photo_without_a_human_face_has_no_alignment(name):
    assert align.align_face(getattr(skimage.data, name)(), 64) is None


# ---- through the restore stage -------------------------------------------------------------------------------

def write_photos(root: Path, photos: list[tuple[str, np.ndarray, str, str]]) -> Path:
    """Raw layout with (file name, pixels, label, split) rows."""
    data = root / "data"
    (data / "images").mkdir(parents=True)
    with open(data / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "label", "lesions", "source", "split"])
        for name, pixels, label, split in photos:
            Image.fromarray(pixels).save(data / "images" / name, quality=95)
            writer.writerow([f"images/{name}", label, "", "photo", split])
    return data


def ingested(root: Path, photos: list[tuple[str, np.ndarray, str, str]]) -> dict[str, dict[str, str]]:
    """Ingest ``photos`` into root/ingest; {file name: manifest row}."""
    data = write_photos(root, photos)
    ingest.run(ingest_lib.IngestConfig(data_dir=data, out_dir=root / "ingest", report_path=root / "reports/ingest.json",
                                       classes=("mild", "severe"), min_size=8, val_fraction=0.0, workers=1))
    return {Path(r["image"]).name: r for r in read_csv(root / "ingest/manifest.csv")}


def restore_values(root: Path, **kw) -> dict:
    values = dict(ingest_dir=str(root / "ingest"), data_dir=str(root / "data"), out_dir=str(root / "restored"),
                  report_path=str(root / "reports/restore.json"), sr_dir=str(root / "models/sr"), resolution=256,
                  restorer="lanczos", compare_restorers=False, sr_steps=4, sr_batch=2, sr_patch=16, sr_channels=4,
                  sr_blocks=1, workers=1)
    values.update(kw)
    return values


def restore_config(root: Path, **kw) -> restore_lib.RestoreConfig:
    """The config `acneops run restore` builds from a params section with these values."""
    return build(restore_lib.RestoreConfig, restore_values(root, **kw), "restore")


def faces_and_not() -> list[tuple[str, np.ndarray, str, str]]:
    """Three faces (one turned by 25 degrees) and two photos without a human face, all in train."""
    return [("grace.jpg", grace_hopper(), "mild", "train"), ("coffee.png", skimage.data.coffee(), "mild", "train"),
            ("grace_turned.png", rotated(grace_hopper(), 25), "mild", "train"),
            ("astronaut.png", skimage.data.astronaut(), "severe", "train"),
            ("chelsea.png", skimage.data.chelsea(), "severe", "train")]


def test_restore_aligns_the_faces_and_quarantines_the_photos_without_one(tmp_path):
    """Through `acneops run restore`'s entry (run_stage on a params file), in worker processes, with the sr restorer:
    the astronaut's face (174 px) is smaller than the resolution, so it waits for sr and is enlarged by it."""
    rows = ingested(tmp_path, faces_and_not())
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"restore": restore_values(tmp_path, align=True, restorer="sr", workers=2)}))
    result = run_stage("restore", params_path=params)
    report = read_json(tmp_path / "reports/restore.json")
    reason = "no face found by dlib's detector at upsample 1 (the photo seen at a longest side of at most 1024 px)"
    assert report["quarantined"] == [  # in manifest order (by file name)
        {"id": rows["chelsea.png"]["sha256"][:16], "split": "train", "class": "severe", "reason": reason},
        {"id": rows["coffee.png"]["sha256"][:16], "split": "train", "class": "mild", "reason": reason},
    ]
    assert report["images"]["train"] == {"downscaled": 2, "upscaled": 1, "kept": 0, "quarantined": 2}
    assert report["align"] == {"enabled": True, "reason": "restore.align: true", "recipe": "ffhq", "detect_size": 1024,
                               "upsample": 1, "quarantined": 2}
    assert "2 quarantined without a face" in result.summary()
    train = tmp_path / "restored/train"
    manifest = {r["orig_sha256"]: r for r in read_csv(train / "manifest.csv")}
    faces = ("grace.jpg", "grace_turned.png", "astronaut.png")
    assert sorted(manifest) == sorted(rows[n]["sha256"] for n in faces)
    written = sorted(p.name for p in (train / "images").iterdir())
    assert written == sorted(f"{rows[n]['sha256'][:16]}.png" for n in faces)
    astronaut = manifest[rows["astronaut.png"]["sha256"]]
    assert (astronaut["resize"], astronaut["restorer"]) == ("up", "sr")
    for row in manifest.values():
        pixels = np.asarray(Image.open(train / row["file"]))
        assert pixels.shape == (256, 256, 3) and sha256_file(train / row["file"]) == row["sha256"]
        assert abs(eye_line_deg(landmarks.detect(pixels))) < 3
    quads = {r["file"]: r for r in read_csv(train / "align.csv")}
    assert sorted(quads) == sorted(r["file"] for r in manifest.values())
    turned = quads[manifest[rows["grace_turned.png"]["sha256"]]["file"]]
    assert abs(float(turned["angle_deg"]) + 25) < 6 and float(turned["qsize_px"]) > 256


def test_a_class_left_without_any_face_stops_the_stage(tmp_path):
    ingested(tmp_path, [("grace.jpg", grace_hopper(), "mild", "train"),
                        ("coffee.png", skimage.data.coffee(), "severe", "train")])
    cfg = restore_config(tmp_path, align=True)
    with pytest.raises(StageError, match=r"all 1 image\(s\) of split 'train', class 'severe' were quarantined "
                                         r"\(no face found by dlib's detector at upsample 1"):
        restore.run(cfg)
    assert not (tmp_path / "restored/train").exists() and not (tmp_path / "reports/restore.json").exists()


def restored_digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()
            and "sr.json" not in p.name}  # sr.json names its folder


def test_alignment_off_is_the_centre_crop_restore_byte_for_byte(tmp_path, monkeypatch):
    """align false and auto without a base generator never touch dlib (it is made unimportable here) and write
    the same files as each other, with the report keys and manifest of the restore before alignment existed."""
    photos = faces_and_not()[:2] + [("astronaut.png", skimage.data.astronaut(), "severe", "train")]
    monkeypatch.setitem(sys.modules, "dlib", None)
    out = {}
    for align_value in ("auto", False):
        root = tmp_path / str(align_value)
        ingested(root, photos)
        result = restore.run(restore_config(root, align=align_value, resolution=64))
        assert not result.aligned and "faces aligned" not in result.summary()
        out[align_value] = restored_digests(root / "restored"), read_json(root / "reports/restore.json")
    assert out["auto"] == out[False]
    digests, report = out["auto"]
    assert sorted(report) == ["comparison", "images", "resolution", "restorer"]
    assert report["images"]["train"] == {"downscaled": 3, "upscaled": 0, "kept": 0}  # coffee kept: no quarantine
    assert not [f for f in digests if f.endswith("align.csv")]
    rows = read_csv(tmp_path / "auto/restored/train/manifest.csv")
    assert list(rows[0]) == restore_lib.SPLIT_FIELDS and len(rows) == 3


def gan_checkpoint(path: Path, source: dict | None) -> Path:
    ckpt = {"family": "stylegan2", "model": {}, "model_args": {}, "step": 0, "config": {}}
    if source is not None:
        ckpt["source"] = source
    save_checkpoint(path, "gan", ckpt)
    return path


def test_auto_aligns_exactly_when_the_base_generator_is_an_nvidia_import(tmp_path):
    nvidia = gan_checkpoint(tmp_path / "ffhq.pt", {"kind": "nvlabs", "pickle_name": "ffhq.pkl"})
    ours = gan_checkpoint(tmp_path / "ours.pt", None)

    def decide(**kw):
        return restore.align_decision(restore_lib.RestoreConfig(**kw))

    assert decide() == (False, "restore.align: auto, no base_generator")
    on, why = decide(base_generator=str(nvidia))
    assert on and "is an NVIDIA import (from ffhq.pkl)" in why
    on, why = decide(base_generator=str(ours))
    assert not on and "not an NVIDIA import" in why
    assert decide(align=True, base_generator=str(ours))[0] and not decide(align=False, base_generator=str(nvidia))[0]
    with pytest.raises(StageError, match=r"missing.pt not found; import the NVIDIA generator first"):
        decide(base_generator=str(tmp_path / "missing.pt"))


def test_align_must_be_auto_true_or_false():
    assert build(restore_lib.RestoreConfig, {"align": True}, "restore").align is True
    with pytest.raises(ConfigError, match="restore.align: 'yes please' must be auto, true or false"):
        build(restore_lib.RestoreConfig, {"align": "yes please"}, "restore")


def test_without_the_faces_extra_the_error_names_it(tmp_path, monkeypatch):
    ingested(tmp_path, faces_and_not()[:1] + [("astronaut.png", skimage.data.astronaut(), "severe", "train")])
    monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` now raises ImportError, as without the extra
    with pytest.raises(AcneopsError, match=r"pip install 'acneops\[faces\]'"):
        restore.run(restore_config(tmp_path, align=True))
    assert not (tmp_path / "restored/train").exists()
