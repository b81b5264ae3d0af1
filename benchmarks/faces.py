"""Benchmark: real-face work on CPU (prints seconds): FFHQ alignment of ACNE04-sized photos and identity embeddings.

Two real photos ship offline (matplotlib's grace_hopper.jpg, scikit-image's astronaut). An ACNE04 photo is
3112x3456: the benchmark makes photos of that size by enlarging them (JPEG quality 95, as a camera writes), then
times, per image, wall and process CPU seconds:

1. ``align``: decode the JPEG + :func:`acneops.faces.align.align_face` (detection on a copy at most
   ``--detect-size`` px, 68 landmarks, the FFHQ quad, the warp) at each ``--resolution``;
2. ``embed``: :func:`acneops.audit.identity.embed_images` (detection + dlib's face-recognition ResNet, 128-d) on
   aligned faces at 256 px, the identity audit's per-image cost, in faces per second.

    .venv/bin/python benchmarks/faces.py                         # 3 photos, resolutions 32 256 1024, 40 faces
    .venv/bin/python benchmarks/faces.py --photos 5 --faces 100
"""

from __future__ import annotations

import argparse
import io
import os
import time

import numpy as np
from PIL import Image

ACNE04_SIZE = (3112, 3456)  # width, height of an ACNE04 photo, px


def _photos() -> list[np.ndarray]:
    import matplotlib.cbook
    from skimage import data

    hopper = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    return [np.asarray(hopper), data.astronaut()]


def _large_jpegs(photos: list[np.ndarray], n: int) -> list[bytes]:
    out = []
    for i in range(n):
        img = Image.fromarray(photos[i % len(photos)]).resize(ACNE04_SIZE, Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=95)
        out.append(buf.getvalue())
    return out


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def bench_align(jpegs: list[bytes], resolutions: list[int], detect_size: int) -> None:
    from acneops.faces.align import align_face

    align_face(np.asarray(Image.open(io.BytesIO(jpegs[0])).convert("RGB")), 32, detect_size)  # load dlib's models
    for res in resolutions:
        def run():
            found = 0
            for raw in jpegs:
                found += align_face(np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")), res, detect_size) is not None
            return found
        found, wall, cpu = _timed(run)
        print(f"align  {ACNE04_SIZE[0]}x{ACNE04_SIZE[1]} JPEG -> {res:4d} px: {wall / len(jpegs):.2f} s/image wall, "
              f"{cpu / len(jpegs):.2f} s CPU ({found}/{len(jpegs)} faces, detection at <= {detect_size} px)")


def bench_embed(photos: list[np.ndarray], n_faces: int) -> None:
    from acneops.audit.identity import embed_images
    from acneops.faces.align import align_face

    rng = np.random.default_rng(0)
    base = [align_face(p, 256).image for p in photos]
    faces = []
    for i in range(n_faces):  # brightness-jittered aligned faces: every image holds a face of realistic size
        img = base[i % len(base)].astype(np.float32) * rng.uniform(0.8, 1.2)
        faces.append(np.clip(img, 0, 255).astype(np.uint8))
    faces = np.stack(faces)
    result, wall, cpu = _timed(lambda: embed_images(faces, 1, "benchmark"))
    print(f"embed  {n_faces} faces at 256 px: {n_faces / wall:.1f} faces/s wall ({1000 * wall / n_faces:.0f} ms/face, "
          f"CPU {1000 * cpu / n_faces:.0f} ms), {int(result.found.sum())} found")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=3, help="ACNE04-sized photos aligned per resolution")
    parser.add_argument("--resolution", type=int, nargs="+", default=[32, 256, 1024], help="output sides, px")
    parser.add_argument("--detect-size", type=int, default=1024, help="longest side the detector sees, px")
    parser.add_argument("--faces", type=int, default=40, help="aligned faces embedded")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    photos = _photos()
    bench_align(_large_jpegs(photos, args.photos), args.resolution, args.detect_size)
    bench_embed(photos, args.faces)


if __name__ == "__main__":
    main()
