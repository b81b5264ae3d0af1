"""Throughput of the feature extractors and time of the distribution metrics on CPU (prints figures).

- features/s of each registered extractor: ``tiny`` (64 px), ``domain`` (a randomly initialised
  timm resnet18 classifier checkpoint at 64 px), ``inception`` (random weights in the format of
  pytorch-fid's file, 299 px) — random weights cost the same as real ones;
- seconds of FD, KID (100 subsets of 1,000 by default) and precision/recall/density/coverage (k=3)
  on 5,000 real x 1,500 synthetic features of 2,048 and 512 dimensions.

Run: ``python benchmarks/metrics.py`` (``--quick`` for a smaller smoke run).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from acneops.features import inception as inc
from acneops.features.extractors import get_extractor
from acneops.metrics import distribution as dm


def _random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _build_extractors(tmp: Path) -> dict:
    """The three extractors, with a random resnet18 checkpoint and random Inception weights on disk."""
    import timm
    import torchvision

    torch.manual_seed(0)
    clf = timm.create_model("resnet18", pretrained=False, num_classes=4)
    torch.save({"model": clf.state_dict(), "model_args": {"arch": "resnet18", "num_classes": 4, "img_size": 64}},
               tmp / "clf.pt")
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    torch.save(net.state_dict(), tmp / inc.WEIGHTS_FILE)
    return {
        "tiny": get_extractor("tiny", seed=0),
        "domain": get_extractor("domain", checkpoint=tmp / "clf.pt"),
        "inception": get_extractor("inception", weights_path=tmp / inc.WEIGHTS_FILE),
    }


def bench_extractors(n_images: dict[str, int], batch_size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        extractors = _build_extractors(Path(tmp))
        for name, ext in extractors.items():
            images = _random_images(n_images[name], 64 if name != "inception" else 128)
            ext.extract(images[:batch_size], batch_size=batch_size, progress=False)  # warm-up
            t0 = time.perf_counter()
            ext.extract(images, batch_size=batch_size, progress=False)
            dt = time.perf_counter() - t0
            print(f"features  {name:9s} dim {ext.dim:5d}  input {ext.input_size:3d}px  "
                  f"{len(images):5d} images  {len(images) / dt:8.1f} img/s")


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench_distribution(n_real: int, n_fake: int, dims: list[int], kid_subsets: int, kid_subset_size: int) -> None:
    for d in dims:
        rng = np.random.default_rng(0)
        real = rng.normal(size=(n_real, d))
        fake = rng.normal(size=(n_fake, d)) + 0.05
        t_fd, fd = _timed(lambda: dm.fd_from_features(real, fake))
        t_eig, fd_eig = _timed(lambda: dm.fd_from_features(real, fake, method="eig"))
        t_kid, kid = _timed(lambda: dm.kid_from_features(real, fake, kid_subsets, kid_subset_size))
        t_pr, pr = _timed(lambda: dm.prdc(real, fake, nearest_k=3))
        print(f"metrics   {n_real} x {n_fake} x {d:4d}-d   FD sqrtm {t_fd:6.2f} s   FD eig {t_eig:6.2f} s   "
              f"KID({kid_subsets}x{min(kid_subset_size, n_real, n_fake)}) {t_kid:6.2f} s   PR/DC {t_pr:6.2f} s   "
              f"(fd {fd:.3f} / eig {fd_eig:.3f}, kid {kid[0]:.4f}, precision {pr['precision']:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        bench_extractors({"tiny": 64, "domain": 64, "inception": 8}, 8)
        bench_distribution(500, 150, [2048, 512], 10, 100)
        return
    bench_extractors({"tiny": 1024, "domain": 512, "inception": 64}, args.batch_size)
    bench_distribution(5000, 1500, [2048, 512], 100, 1000)


if __name__ == "__main__":
    main()
