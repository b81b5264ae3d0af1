"""Feature extractors behind one interface, registered by name (as NVIDIA's stylegan3 registers metrics).

Every distribution metric and the anonymity audit work on features, never on pixels directly, so the
feature space is a choice in params (``metrics.extractor``):

- ``inception`` — the TF-Inception FID network (pool3, 2048-d) from a local weights file
  (:mod:`acneops.features.inception`); figures computed with it are ``fid`` / ``kid``.
- ``domain`` — penultimate features of an acneops (timm) classifier checkpoint, the honest offline
  default; figures are ``fd_domain`` / ``kd_domain``, never "FID": the numbers are not comparable to
  published FIDs.
- ``tiny`` — a small fixed random CNN (seeded, 64-d) for tests and smoke runs (``fd_tiny``).

``extract`` takes uint8 (N, H, W, 3) arrays or image file paths (read by :func:`acneops.data.decode.read_rgb`)
and returns float64 (N, dim); images go through the net in batches under ``torch.inference_mode``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from acneops.core.errors import AcneopsError
from acneops.data.decode import read_rgb

if TYPE_CHECKING:
    import torch

    from acneops.metrics import MetricsConfig

ImageInput = np.ndarray | Sequence[str | Path | np.ndarray]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TINY_DIM = 64  # features of the tiny net
TINY_INPUT_SIZE = 64  # px


class FeatureExtractor:
    """A frozen network mapping RGB images to feature vectors, plus the names of figures measured with it.

    ``identity`` names the exact network (kind, weights SHA-256, preprocessing version): the feature
    cache keys on it, so statistics from different weights never mix.
    """

    def __init__(self, *, name: str, forward: Callable[["torch.Tensor"], "torch.Tensor"], dim: int,
                 input_size: int, mean: Sequence[float], std: Sequence[float], antialias: bool,
                 metric_prefix: str, kernel_prefix: str, identity: str, device: str = "cpu") -> None:
        self.name = name  # registry name
        self.dim = dim  # feature dimension
        self.input_size = input_size  # px, square network input
        self.mean = tuple(float(m) for m in mean)  # per-channel mean subtracted from [0, 1] pixels
        self.std = tuple(float(s) for s in std)  # per-channel std dividing them
        self.antialias = antialias  # antialiased bilinear resize (False = pytorch-fid's plain bilinear)
        self.metric_prefix = metric_prefix  # name of the Fréchet distance: fid | fd_domain | fd_tiny
        self.kernel_prefix = kernel_prefix  # name of the kernel distance: kid | kd_domain | kd_tiny
        self.identity = identity
        self.device = device
        self._forward = forward

    def __repr__(self) -> str:
        return f"FeatureExtractor(name={self.name!r}, dim={self.dim}, identity={self.identity!r})"

    def preprocess(self, images: list[np.ndarray]) -> "torch.Tensor":
        """uint8 (H, W, 3) images -> float (B, 3, S, S): [0, 1], bilinear resize to S, then (x - mean) / std."""
        import torch
        import torch.nn.functional as F

        size = (self.input_size, self.input_size)
        if len({im.shape for im in images}) == 1:
            groups = [np.stack(images)]
        else:  # mixed sizes: resize one by one (identical maths to a batched resize)
            groups = [im[None] for im in images]
        resized = []
        for group in groups:
            x = torch.from_numpy(np.require(group, requirements=["C", "W"])).permute(0, 3, 1, 2).float() / 255.0
            resized.append(F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                                         antialias=self.antialias))
        x = torch.cat(resized)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((x - mean) / std).to(self.device)

    def extract(self, images: ImageInput, batch_size: int = 64, progress: bool = True,
                desc: str | None = None) -> np.ndarray:
        """Features (N, dim) float64 of uint8 (N, H, W, 3) images or a list of image files/arrays.

        ``progress``: a bar over the images on stderr named ``desc`` (the stage and class; default
        ``features[<extractor>]``), see :mod:`acneops.core.progress`.
        """
        import torch

        from acneops.core.progress import progress as progress_bar

        if batch_size < 1:
            raise AcneopsError(f"batch_size must be >= 1, got {batch_size}")
        n = _count(images)
        out = np.empty((n, self.dim), dtype=np.float64)
        done = 0
        with torch.inference_mode(), progress_bar(total=n, unit="img", desc=desc or f"features[{self.name}]",
                                                  leave=False, disable=not progress) as bar:
            for batch in _iter_batches(images, batch_size):
                feats = self._forward(self.preprocess(batch))  # (B, dim)
                out[done:done + len(batch)] = feats.double().cpu().numpy().reshape(len(batch), -1)
                done += len(batch)
                bar.update(len(batch))
        return out


def _check_image(image: np.ndarray, where: str) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise AcneopsError(
            f"{where}: expected a uint8 (H, W, 3) RGB image, got dtype {image.dtype} shape {image.shape}; "
            "pass the image file's path instead (read by acneops.data.decode.read_rgb)"
        )
    return image


def _count(images: ImageInput) -> int:
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise AcneopsError(
                f"images: expected uint8 (N, H, W, 3), got dtype {images.dtype} shape {images.shape}"
            )
    elif isinstance(images, (str, Path)):
        raise AcneopsError(f"images: expected a list of image files, got the single path {images!r}")
    return len(images)


def _iter_batches(images: ImageInput, batch_size: int) -> Iterator[list[np.ndarray]]:
    """Batches of uint8 (H, W, 3) arrays; files are read lazily, one batch at a time."""
    for start in range(0, len(images), batch_size):
        batch = []
        for i, item in enumerate(images[start:start + batch_size], start):
            if isinstance(item, np.ndarray):
                batch.append(_check_image(item, f"images[{i}]"))
            else:
                batch.append(np.asarray(read_rgb(item)))
        yield batch


def tiny_extractor(seed: int = 0, device: str = "cpu") -> FeatureExtractor:
    """A fixed random 3-layer CNN (64-d): deterministic for a seed, cheap, for tests and smoke runs."""
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(int(seed))
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, TINY_DIM, 3, stride=2, padding=1),  # no final ReLU: features are not clipped at 0
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    with torch.no_grad():
        for p in net.parameters():
            fan_in = int(np.prod(p.shape[1:])) if p.ndim > 1 else 1
            scale = (2.0 / fan_in) ** 0.5 if p.ndim > 1 else 0.1  # He init for weights
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    net = net.eval().to(device)
    return FeatureExtractor(
        name="tiny", forward=net, dim=TINY_DIM, input_size=TINY_INPUT_SIZE, mean=(0.5,) * 3,
        std=(0.5,) * 3, antialias=True, metric_prefix="fd_tiny", kernel_prefix="kd_tiny",
        identity=f"tiny:seed={int(seed)}:v1", device=device,
    )


def inception_extractor(weights_path: str | Path | None = None, expected_sha256: str | None = None,
                        device: str = "cpu") -> FeatureExtractor:
    """The TF-Inception FID network (pool3, 2048-d) from a local file; preprocessing as pytorch-fid."""
    from acneops.features import inception

    if weights_path is None:
        raise AcneopsError(inception.missing_weights_message(Path(inception.WEIGHTS_FILE)))
    net, sha = inception.load_fid_inception(weights_path, expected_sha256, device)
    return FeatureExtractor(
        name="inception", forward=net, dim=inception.FEATURE_DIM, input_size=inception.INPUT_SIZE,
        mean=(0.5,) * 3, std=(0.5,) * 3, antialias=False, metric_prefix="fid", kernel_prefix="kid",
        identity=f"inception:sha256={sha}:pytorch-fid-preprocess", device=device,
    )


def domain_extractor(checkpoint: str | Path | None = None, device: str = "cpu") -> FeatureExtractor:
    """Penultimate (pre-logits) features of an acneops timm classifier checkpoint.

    Input: resize to ``model_args['img_size']`` (bilinear, antialiased) and normalise with the
    checkpoint's mean/std (ImageNet's if absent) — the classifier's eval transform, except that it
    resizes in float where torchvision's PIL path rounds to uint8 first (sub-1/255 differences).
    """
    import torch

    from acneops.classify.backbones import (
        load_classifier,  # the classifier stage's own loader, not a copy
    )
    from acneops.core.io import sha256_file

    if checkpoint is None:
        raise AcneopsError("domain feature extractor: no classifier checkpoint given; set params.yaml "
                           "[metrics.domain_checkpoint] to a checkpoint written by train_classifier")
    path = Path(checkpoint)
    model, args = load_classifier(path)  # clear AcneopsError for a missing, foreign or mismatched file
    model = model.eval().to(device)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return model.forward_head(model.forward_features(x), pre_logits=True).flatten(1)

    size = int(args.get("img_size", 224))
    with torch.inference_mode():
        dim = int(forward(torch.zeros(1, 3, size, size, device=device)).shape[1])
    return FeatureExtractor(
        name="domain", forward=forward, dim=dim, input_size=size,
        mean=args.get("mean") or IMAGENET_MEAN, std=args.get("std") or IMAGENET_STD, antialias=True,
        metric_prefix="fd_domain", kernel_prefix="kd_domain",
        identity=f"domain:{args['arch']}:sha256={sha256_file(path)}", device=device,
    )


EXTRACTORS: dict[str, Callable[..., FeatureExtractor]] = {
    "inception": inception_extractor,
    "domain": domain_extractor,
    "tiny": tiny_extractor,
}


def get_extractor(name: str, **kwargs: Any) -> FeatureExtractor:
    """Build the extractor registered as ``name`` (``inception``, ``domain``, ``tiny``) with ``kwargs``."""
    if name not in EXTRACTORS:
        raise AcneopsError(f"unknown feature extractor '{name}'; registered: {sorted(EXTRACTORS)}")
    return EXTRACTORS[name](**kwargs)


def extractor_from_config(cfg: "MetricsConfig", device: str = "cpu") -> FeatureExtractor:
    """The extractor ``cfg.extractor`` with its params (weights file, checkpoint or seed)."""
    if cfg.extractor == "inception":
        return get_extractor("inception", weights_path=cfg.inception_weights,
                             expected_sha256=cfg.inception_sha256 or None, device=device)
    if cfg.extractor == "domain":
        return get_extractor("domain", checkpoint=cfg.domain_checkpoint, device=device)
    return get_extractor("tiny", seed=cfg.tiny_seed, device=device)
