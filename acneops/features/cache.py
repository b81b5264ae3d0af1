"""Feature statistics cached per dataset, so re-evaluating an unchanged dataset costs only file hashing.

An entry is one ``.npz`` under the cache dir (default ``datasets/.feature_cache``: git-ignored and
outside every DVC output), named by a key over

- the extractor identity (kind + weights/checkpoint SHA-256 + preprocessing version), and
- the *sorted* SHA-256s of the image files (the dataset as a multiset of contents: renaming or
  reordering files keeps the entry, changing one pixel invalidates it).

It holds mu, sigma and optionally the features (rows in sorted-hash order, re-ordered to the
caller's file order on read). Entries are written atomically; an unreadable entry is recomputed
and replaced (it is derived data), with a warning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from acneops.core.errors import AcneopsError
from acneops.core.io import atomic_path, sha256_file
from acneops.features.extractors import FeatureExtractor
from acneops.metrics import DEFAULT_CACHE_DIR
from acneops.metrics.distribution import feature_stats

CACHE_VERSION = 1  # bump when the entry layout changes


@dataclasses.dataclass(frozen=True)
class FeatureStats:
    """Statistics of one dataset in one feature space."""

    mu: np.ndarray  # (dim,) feature mean, float64
    sigma: np.ndarray  # (dim, dim) feature covariance, float64
    features: np.ndarray | None  # (N, dim) in the caller's file order, or None if not requested
    n: int  # number of images
    key: str  # cache key (sha256 hex)
    path: Path  # the cache entry file
    cache_hit: bool  # True when read from the cache, False when extracted now


def dataset_key(identity: str, file_sha256s: Sequence[str]) -> str:
    """Cache key of a dataset: sha256 over the extractor identity and the sorted file hashes."""
    payload = json.dumps({"v": CACHE_VERSION, "extractor": identity, "files": sorted(file_sha256s)})
    return hashlib.sha256(payload.encode()).hexdigest()


def _read_entry(path: Path, identity: str, shas_sorted: list[str], want_features: bool):
    """(mu, sigma, features-or-None) of a valid entry, or None if absent, stale, unreadable or too thin."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["identity"]) != identity or list(z["file_sha256s"]) != shas_sorted:
                return None
            if want_features and "features" not in z.files:
                return None
            feats = z["features"] if want_features else None
            return z["mu"], z["sigma"], feats
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        warnings.warn(f"{path}: unreadable feature cache entry ({exc}); recomputing it", stacklevel=3)
        return None


def _write_entry(path: Path, identity: str, shas_sorted: list[str], mu: np.ndarray, sigma: np.ndarray,
                 features: np.ndarray | None) -> None:
    arrays = {"identity": np.array(identity), "file_sha256s": np.array(shas_sorted), "mu": mu, "sigma": sigma}
    if features is not None:
        arrays["features"] = features
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def cached_stats(extractor: FeatureExtractor, files: Sequence[str | Path],
                 cache_dir: str | Path = DEFAULT_CACHE_DIR, keep_features: bool = False,
                 batch_size: int = 64, progress: bool = True, desc: str | None = None) -> FeatureStats:
    """Feature statistics of the image ``files`` in ``extractor``'s space, from the cache when valid.

    A cache miss extracts with a progress bar named ``desc`` (when ``progress``).

    With ``keep_features`` the (N, dim) features are returned (and stored) too, row i for files[i].
    """
    files = [Path(f) for f in files]
    if len(files) < 2:
        raise AcneopsError(f"feature statistics need at least 2 images, got {len(files)} files")
    shas = [sha256_file(f) for f in files]
    order = sorted(range(len(files)), key=lambda i: shas[i])  # rows of the entry: sorted-hash order
    shas_sorted = [shas[i] for i in order]
    key = dataset_key(extractor.identity, shas)
    path = Path(cache_dir) / f"{extractor.name}-{key[:32]}.npz"
    entry = _read_entry(path, extractor.identity, shas_sorted, keep_features)
    if entry is not None:
        mu, sigma, sorted_feats = entry
        feats = None
        if keep_features:
            first_row = {}
            for row, sha in enumerate(shas_sorted):
                first_row.setdefault(sha, row)
            feats = sorted_feats[[first_row[s] for s in shas]]
        return FeatureStats(mu, sigma, feats, len(files), key, path, cache_hit=True)
    sorted_feats = extractor.extract([files[i] for i in order], batch_size=batch_size, progress=progress, desc=desc)
    mu, sigma = feature_stats(sorted_feats)
    _write_entry(path, extractor.identity, shas_sorted, mu, sigma, sorted_feats if keep_features else None)
    feats = None
    if keep_features:
        feats = np.empty_like(sorted_feats)
        feats[order] = sorted_feats
    return FeatureStats(mu, sigma, feats, len(files), key, path, cache_hit=False)
