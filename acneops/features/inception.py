"""The TF-Inception-v3 network of the FID reference code, loaded from a local weights file.

Papers: Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer Vision" (the
network); Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium" (FID on its 2048-d pool3 features).

FID values are only comparable across papers when they use the *same* network: the 2015-12-05
TensorFlow Inception graph, not torchvision's ImageNet Inception. pytorch-fid ported that graph to
PyTorch; it differs from torchvision's ``inception_v3`` in three places, reproduced here:

- the average-pool branch of the A, C and E blocks ignores padded zeros (TensorFlow's
  ``count_include_pad=False``);
- the last E block (``Mixed_7c``) pools with max instead of average;
- the classifier has 1008 outputs (unused for FID, kept so the weights file loads strictly).

Weights: ``pt_inception-2015-12-05-6726825d.pth`` from the pytorch-fid release (:data:`WEIGHTS_URL`).
Nothing is downloaded here: the user places the file and names it in params.yaml
(``metrics.inception_weights``). The file's SHA-256 is checked when one is given (params
``metrics.inception_sha256`` or the ``ACNEOPS_INCEPTION_SHA256`` environment variable); pytorch-fid
does not publish a full checksum, so none is hard-coded (its file name carries the torch-hub style
prefix ``6726825d``). The computed SHA-256 is part of the extractor identity, so cached statistics
never mix weights files.

Preprocessing matches pytorch-fid (``InceptionV3(resize_input=True, normalize_input=True)``):
uint8 -> float in [0, 1] -> bilinear resize to 299x299 (``align_corners=False``, no antialias) ->
scale to [-1, 1]. NVIDIA's StyleGAN3 TorchScript detector resizes differently, so figures match
pytorch-fid's, not NVIDIA's, to the decimal.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.inception import (
    BasicConv2d,
    InceptionA,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
)

from acneops.core.errors import AcneopsError
from acneops.core.io import sha256_file

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"
SHA256_ENV = "ACNEOPS_INCEPTION_SHA256"
PARAMS_KEY = "metrics.inception_weights"
INPUT_SIZE = 299  # px, square input of the TF graph
FEATURE_DIM = 2048  # pool3 features
NUM_TF_CLASSES = 1008  # logits of the TF graph (unused, present in the weights file)


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool that, like TensorFlow, averages only over real (unpadded) pixels."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class TFInceptionA(InceptionA):
    """torchvision's InceptionA with TensorFlow's average pool (padding excluded from the mean)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b5, b3, bp], 1)


class TFInceptionC(InceptionC):
    """torchvision's InceptionC with TensorFlow's average pool."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                     self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = conv(d)
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b7, d, bp], 1)


class TFInceptionE(InceptionE):
    """torchvision's InceptionE with the TF graph's pool branch: average (padding excluded) or max."""

    def __init__(self, in_channels: int, pool: str) -> None:
        super().__init__(in_channels)
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        s = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(s), self.branch3x3_2b(s)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        if self.pool == "max":
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _tf_avg_pool(x)
        bp = self.branch_pool(pooled)
        return torch.cat([b1, b3, bd, bp], 1)


class FIDInceptionV3(nn.Module):
    """The TF FID Inception graph up to pool3; ``forward`` maps (B, 3, 299, 299) in [-1, 1] to (B, 2048).

    Module names equal torchvision's ``Inception3`` so pytorch-fid's weights file loads strictly.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = TFInceptionA(192, pool_features=32)
        self.Mixed_5c = TFInceptionA(256, pool_features=64)
        self.Mixed_5d = TFInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = TFInceptionC(768, channels_7x7=128)
        self.Mixed_6c = TFInceptionC(768, channels_7x7=160)
        self.Mixed_6d = TFInceptionC(768, channels_7x7=160)
        self.Mixed_6e = TFInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = TFInceptionE(1280, pool="avg")
        self.Mixed_7c = TFInceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, NUM_TF_CLASSES)  # TF logits; not used for features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (B, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 192, 35, 35)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                      self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b,
                      self.Mixed_7c):
            x = block(x)  # ends at (B, 2048, 8, 8)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (B, 2048) pool3


def missing_weights_message(path: Path) -> str:
    """What to do when the weights file is absent: the file name, where to get it, which key to set."""
    return (
        f"{path}: TF-Inception FID weights file not found. Download {WEIGHTS_FILE} from {WEIGHTS_URL} "
        f"(the pytorch-fid release; nothing is downloaded automatically), then set params.yaml "
        f"[{PARAMS_KEY}] to its path, or use the offline 'domain' feature extractor (figures named fd_domain)."
    )


def load_fid_inception(
    weights_path: str | Path, expected_sha256: str | None = None, device: str = "cpu"
) -> tuple[FIDInceptionV3, str]:
    """Build :class:`FIDInceptionV3`, load ``weights_path`` strictly, return (eval model, file sha256).

    ``expected_sha256`` (or ``$ACNEOPS_INCEPTION_SHA256``) is compared with the file's SHA-256 when set.
    """
    path = Path(weights_path)
    if not path.is_file():
        raise AcneopsError(missing_weights_message(path))
    sha = sha256_file(path)
    expected = (expected_sha256 or os.environ.get(SHA256_ENV) or "").strip().lower()
    if expected and sha != expected:
        raise AcneopsError(
            f"{path}: SHA-256 {sha} does not match the expected {expected} (from params "
            f"metrics.inception_sha256 or ${SHA256_ENV}); re-download {WEIGHTS_URL}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or not a torch file: name it and the fix
        raise AcneopsError(f"{path}: cannot read as a torch state_dict ({exc}); re-download {WEIGHTS_URL}") from exc
    if not isinstance(state, dict):
        raise AcneopsError(f"{path}: expected a state_dict (mapping), got {type(state).__name__}")
    model = FIDInceptionV3()
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # right names, wrong shapes
        raise AcneopsError(f"{path}: weights do not fit the TF-Inception graph ({exc}); use {WEIGHTS_URL}") from exc
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]  # absent in old files
    if missing or result.unexpected_keys:
        raise AcneopsError(
            f"{path}: not the TF-Inception FID weights (missing keys {missing[:5]}, "
            f"unexpected keys {result.unexpected_keys[:5]}); use {WEIGHTS_FILE} from {WEIGHTS_URL}"
        )
    return model.eval().to(device), sha
