"""Metrics: numbers computed on features and predictions, and their params.

Modules (import the one you need; nothing heavy is imported here):

- :mod:`acneops.metrics.distribution` — Fréchet distance, KID, precision/recall, density/coverage;
- :mod:`acneops.metrics.neighbors` — the one blocked nearest-neighbour search (audit and metrics);
- :mod:`acneops.metrics.classification` — accuracy, precision/recall/F1, sensitivity/specificity, confusion.

The feature spaces these are computed in live in :mod:`acneops.features`. :class:`MetricsConfig` is the
``metrics`` section of params.yaml, shared by every stage that measures.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from acneops.core.config import build, require
from acneops.core.paths import DATASETS_DIR

EXTRACTOR_NAMES = ("inception", "domain", "tiny")
DEFAULT_CACHE_DIR = DATASETS_DIR / ".feature_cache"  # under the git-ignored datasets/, outside every DVC out


@dataclasses.dataclass(frozen=True)
class MetricsConfig:
    """How distribution metrics are measured (params.yaml section ``metrics``)."""

    extractor: str = "domain"  # feature space: inception (true FID, needs weights file) | domain | tiny
    inception_weights: Path | None = None  # local pt_inception-2015-12-05-6726825d.pth (pytorch-fid release)
    inception_sha256: str = ""  # expected SHA-256 of the weights file; "" = not checked
    domain_checkpoint: Path | None = None  # acneops classifier checkpoint whose penultimate layer is the space
    tiny_seed: int = 0  # seed of the fixed random 'tiny' network (tests, smoke runs)
    batch_size: int = 32  # images per forward pass, count
    cache_dir: Path = DEFAULT_CACHE_DIR  # feature statistics cache, one .npz per (extractor, dataset)
    kid_subsets: int = 100  # KID: number of random subsets, count
    kid_subset_size: int = 1000  # KID: samples per subset (capped at the smaller set), count
    nearest_k: int = 3  # precision/recall/density/coverage: k of the k-NN radii
    seed: int = 0  # seed of the KID subset sampling
    fd_method: str = "sqrtm"  # Fréchet distance: sqrtm (pytorch-fid's computation) | eig (same value, faster)

    def __post_init__(self) -> None:
        require(self.extractor in EXTRACTOR_NAMES,
                f"params.yaml [metrics.extractor]: '{self.extractor}' is not one of {list(EXTRACTOR_NAMES)}")
        require(self.batch_size >= 1, f"params.yaml [metrics.batch_size]: must be >= 1, got {self.batch_size}")
        require(self.kid_subsets >= 1, f"params.yaml [metrics.kid_subsets]: must be >= 1, got {self.kid_subsets}")
        require(self.kid_subset_size >= 2,
                f"params.yaml [metrics.kid_subset_size]: must be >= 2, got {self.kid_subset_size}")
        require(self.fd_method in ("sqrtm", "eig"),
                f"params.yaml [metrics.fd_method]: '{self.fd_method}' is not one of ['sqrtm', 'eig']")
        require(self.nearest_k >= 1, f"params.yaml [metrics.nearest_k]: must be >= 1, got {self.nearest_k}")
        require(self.extractor != "inception" or self.inception_weights is not None,
                "params.yaml [metrics.inception_weights]: required when metrics.extractor is 'inception' "
                "(path of pt_inception-2015-12-05-6726825d.pth)")
        require(self.extractor != "domain" or self.domain_checkpoint is not None,
                "params.yaml [metrics.domain_checkpoint]: required when metrics.extractor is 'domain' "
                "(path of an acneops classifier checkpoint)")


def build_metrics_config(values: dict[str, Any], where: str = "metrics") -> MetricsConfig:
    """Build :class:`MetricsConfig` from the ``metrics`` section of params.yaml (``where`` names it in errors)."""
    return build(MetricsConfig, values, where)
