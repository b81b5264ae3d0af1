"""FFHQ face alignment: the crop a StyleGAN trained on FFHQ expects, from dlib's 68 facial landmarks.

Recipe of the FFHQ dataset (Karras, Laine, Aila 2019, "A Style-Based Generator Architecture for Generative
Adversarial Networks", CVPR; ``recreate_aligned_images`` in NVlabs/ffhq-dataset ``download_ffhq.py``), written
here with PIL and numpy: the eye centres and the mouth corners give an oriented square (``quad``) that levels the
eyes and frames the face at a fixed scale; the photo is shrunk when the quad is much larger than the output,
cropped around the quad with a border, padded by reflection with a blurred, median-faded border where the quad
leaves the photo, mapped onto a (4 x output) square by a QUAD transform and resized to the output with
antialiasing. A generator fine-tuned from an FFHQ checkpoint then sees faces where FFHQ put them: eyes level
at about 47% of the height, a quarter of the width apart, mouth at about 75%.

Detection on a large photo (ACNE04: 3112 x 3456) runs on a copy whose longest side is at most ``detect_size``
and the landmarks are scaled back, so it stays fast; the warp itself reads the full-resolution photo.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image

from acneops.faces.landmarks import EYE_LEFT, EYE_RIGHT, Face, _as_rgb, detect

MOUTH_CORNERS = (48, 54)  # iBUG 300-W: outer mouth corners, image-left then image-right
TRANSFORM_FACTOR = 4  # FFHQ warps to 4x the output side (4096 for 1024), then resizes down with antialiasing


@dataclasses.dataclass(frozen=True)
class Alignment:
    """One aligned face: the crop and what produced it (for the report and the audit)."""

    image: np.ndarray  # (S, S, 3) uint8 RGB; S = output_size (or the face's own size, see align_face)
    landmarks: np.ndarray  # (68, 2) float64, x then y, px of the input image
    quad: np.ndarray  # (4, 2) float64 corners top-left, bottom-left, bottom-right, top-right, px of the input
    score: float  # dlib detector score of the face

    @property
    def qsize(self) -> float:
        """Side of the quad in input px: the face's own resolution before resampling."""
        return float(np.hypot(*(self.quad[3] - self.quad[0])))

    @property
    def angle_deg(self) -> float:
        """Rotation of the quad's top edge in the input, degrees (positive = clockwise on screen)."""
        dx, dy = self.quad[3] - self.quad[0]
        return math.degrees(math.atan2(dy, dx))


def eye_mouth_points(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(eye on the image's left, eye on the image's right, mouth) centres, (x, y) px, as FFHQ defines them:
    eye = mean of its 6 contour points, mouth = midpoint of the two outer mouth corners."""
    eye_l = landmarks[EYE_RIGHT].mean(axis=0)  # the subject's right eye is on the image's left
    eye_r = landmarks[EYE_LEFT].mean(axis=0)
    mouth = (landmarks[MOUTH_CORNERS[0]] + landmarks[MOUTH_CORNERS[1]]) * 0.5
    return eye_l, eye_r, mouth


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """(4, 2) FFHQ crop quad (top-left, bottom-left, bottom-right, top-right; px) from (68, 2) landmarks.

    x points along the eye line, averaged with the eye-to-mouth direction turned by 90 degrees so one tilted
    feature does not tilt the crop; its half-length is the larger of 2 eye distances and 1.8 eye-to-mouth
    distances; the centre sits a tenth of the way from the eyes to the mouth.
    """
    eye_l, eye_r, mouth = eye_mouth_points(np.asarray(landmarks, dtype=np.float64))
    eye_avg = (eye_l + eye_r) * 0.5
    eye_to_eye = eye_r - eye_l
    eye_to_mouth = mouth - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def find_face(image: np.ndarray, detect_size: int = 1024, upsample: int = 1) -> Face | None:
    """The most confident face of ``image`` ((H, W, 3) uint8 RGB), landmarks in ``image``'s px, or None.

    A photo whose longest side exceeds ``detect_size`` is shrunk (Lanczos) for the detector, which costs time
    in proportion to the pixels it scans; the landmarks and box are scaled back to the full photo (the returned
    Face then has no dlib ``shape``: it belongs to the copy).
    """
    image = _as_rgb(image)
    h, w = image.shape[:2]
    scale = min(1.0, detect_size / max(h, w))
    if scale == 1.0:
        return detect(image, upsample=upsample)
    small = Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                          Image.Resampling.LANCZOS)
    face = detect(np.asarray(small), upsample=upsample)
    if face is None:
        return None
    sx, sy = w / small.width, h / small.height  # pixel centres: x_full + 0.5 = (x_small + 0.5) * sx
    points = (face.landmarks + 0.5) * [sx, sy] - 0.5
    box = tuple(int(round(v * s)) for v, s in zip(face.box, (sx, sy, sx, sy)))
    return Face(box=box, score=face.score, landmarks=points)  # type: ignore[arg-type]


def _shrink_and_crop(img: Image.Image, quad: np.ndarray, output_size: int) -> tuple[Image.Image, np.ndarray, float]:
    """FFHQ's shrink (when the quad is over twice the output) and crop to the quad plus a border."""
    qsize = float(np.hypot(*(quad[3] - quad[0])))
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        size = (int(np.rint(img.width / shrink)), int(np.rint(img.height / shrink)))
        img = img.resize(size, Image.Resampling.LANCZOS)
        quad, qsize = quad / shrink, qsize / shrink
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo, hi = np.floor(quad.min(axis=0)).astype(int), np.ceil(quad.max(axis=0)).astype(int)
    crop = (max(lo[0] - border, 0), max(lo[1] - border, 0), min(hi[0] + border, img.width),
            min(hi[1] + border, img.height))
    if crop[2] - crop[0] < img.width or crop[3] - crop[1] < img.height:
        img = img.crop(crop)
        quad = quad - crop[:2]
    return img, quad, qsize


def _pad_blurred(img: Image.Image, quad: np.ndarray, qsize: float) -> tuple[Image.Image, np.ndarray]:
    """FFHQ's padding where the quad leaves the photo: reflect, blur towards the edge, fade to the median colour
    (a hard mirrored edge would be a feature the GAN learns)."""
    from scipy.ndimage import gaussian_filter

    border = max(int(np.rint(qsize * 0.1)), 3)
    lo, hi = np.floor(quad.min(axis=0)).astype(int), np.ceil(quad.max(axis=0)).astype(int)
    pad = (max(-lo[0] + border, 0), max(-lo[1] + border, 0), max(hi[0] - img.width + border, 0),
           max(hi[1] - img.height + border, 0))
    if max(pad) <= border - 4:
        return img, quad
    pad = tuple(int(p) for p in np.maximum(pad, max(1, int(np.rint(qsize * 0.3)))))
    pixels = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
    h, w, _ = pixels.shape
    y, x, _ = np.ogrid[:h, :w, :1]
    mask = np.maximum(1.0 - np.minimum(np.float32(x) / pad[0], np.float32(w - 1 - x) / pad[2]),
                      1.0 - np.minimum(np.float32(y) / pad[1], np.float32(h - 1 - y) / pad[3]))
    blur = qsize * 0.02
    pixels += (gaussian_filter(pixels, [blur, blur, 0]) - pixels) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    pixels += (np.median(pixels, axis=(0, 1)) - pixels) * np.clip(mask, 0.0, 1.0)
    img = Image.fromarray(np.uint8(np.clip(np.rint(pixels), 0, 255)), "RGB")
    return img, quad + pad[:2]


def warp(image: Image.Image, quad: np.ndarray, output_size: int) -> Image.Image:
    """The (output_size, output_size) RGB crop of ``image`` under ``quad`` (FFHQ: shrink, crop, pad, transform to
    4 x output_size with bilinear sampling, resize to output_size with antialiasing)."""
    img, quad, qsize = _shrink_and_crop(image.convert("RGB"), np.asarray(quad, dtype=np.float64), output_size)
    img, quad = _pad_blurred(img, quad, qsize)
    transform_size = TRANSFORM_FACTOR * output_size
    img = img.transform((transform_size, transform_size), Image.Transform.QUAD, tuple((quad + 0.5).flatten()),
                        Image.Resampling.BILINEAR)
    return img.resize((output_size, output_size), Image.Resampling.LANCZOS)


def align_face(image: np.ndarray, output_size: int, detect_size: int = 1024, upsample: int = 1,
               native_if_smaller: bool = False) -> Alignment | None:
    """The FFHQ-aligned crop of the most confident face in ``image`` ((H, W, 3) uint8 RGB), or None (no face).

    ``output_size``: side of the crop, px (the GAN resolution). ``native_if_smaller``: when the face's quad is
    smaller than ``output_size`` in the photo, return the crop at the quad's own side instead, so the caller's
    restorer (not FFHQ's bilinear warp) enlarges it. ``detect_size``, ``upsample``: see :func:`find_face`.
    """
    image = _as_rgb(image)
    face = find_face(image, detect_size=detect_size, upsample=upsample)
    if face is None:
        return None
    quad = ffhq_quad(face.landmarks)
    side = output_size
    if native_if_smaller:
        side = max(1, min(output_size, int(round(float(np.hypot(*(quad[3] - quad[0])))))))
    crop = warp(Image.fromarray(image), quad, side)
    return Alignment(image=np.asarray(crop), landmarks=face.landmarks, quad=quad, score=face.score)
