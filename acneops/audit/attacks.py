"""The statistics of the anonymity audit, on plain feature / pixel arrays (no images, no I/O).

- nearest neighbours come from the one search of :mod:`acneops.metrics.neighbors` (exact L2, other
  views of the references, leave-one-out);
- the data-copying statistic C_T of Meehan, Chaudhuri, Dasgupta 2020, "A Non-Parametric Test to
  Detect Data-Copying in Generative Models" (AISTATS);
- a black-box distance-to-synthetic membership-inference attack (ROC-AUC of train vs test).

The near-copy rules live in :mod:`acneops.audit.copies`; :mod:`acneops.audit` turns images into
arrays, runs everything and writes the report. Deterministic: k-means is the only random step and
is seeded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from acneops.core.errors import AcneopsError
from acneops.metrics.neighbors import as_matrix, nearest_neighbors


def _same_dim(a: np.ndarray, b: np.ndarray, what_a: str, what_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise AcneopsError(
            f"{what_a} has dimension {a.shape[1]} but {what_b} has {b.shape[1]}; "
            "both must come from the same extractor / pixel size"
        )


def flip_pixel_vectors(pixels: np.ndarray, size: int) -> np.ndarray:
    """Horizontally flip (N, size*size*3) HWC pixel vectors (as made by ``acneops.audit.pixel_vectors``)."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.shape[1] != size * size * 3:
        raise AcneopsError(
            f"pixel vectors have shape {pixels.shape}, expected (N, {size * size * 3}) for pixel_size={size}; "
            "pass real_pixel_views explicitly or fix audit.pixel_size"
        )
    return pixels.reshape(-1, size, size, 3)[:, :, ::-1, :].reshape(pixels.shape[0], -1)


Z_LIMIT = 37.5  # |z| where the normal tail probability underflows float64 (norm.sf(37.6) == 0)


def mann_whitney_z(x: np.ndarray, y: np.ndarray) -> float:
    """Z-scored Mann-Whitney U of ``x`` against ``y`` (U counts pairs with x > y, ties 1/2).

    ``scipy.stats.mannwhitneyu`` (normal approximation under H0, tie-corrected variance, no
    continuity correction); z is read back from its two-sided p-value, |z| = isf(p / 2), and signed
    by U - m n / 2: negative when ``x`` tends to be smaller than ``y``. 0 when every value is tied.
    |z| saturates at ``Z_LIMIT`` where p underflows (only cells of thousands of samples get there).
    """
    from scipy.stats import mannwhitneyu, norm

    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(x) == 0 or len(y) == 0:
        raise AcneopsError("Mann-Whitney U needs two non-empty samples")
    res = mannwhitneyu(x, y, alternative="two-sided", method="asymptotic", use_continuity=False)
    shift = float(res.statistic) - len(x) * len(y) / 2.0
    if shift == 0.0 or not np.isfinite(res.pvalue):  # every value tied: zero variance, no evidence
        return 0.0
    return float(np.sign(shift) * min(float(norm.isf(res.pvalue / 2.0)), Z_LIMIT))


def data_copying_ct(syn_feats: Any, train_feats: Any, test_feats: Any, cfg: Any) -> dict[str, Any]:
    """The C_T data-copying statistic of Meehan et al. 2020 (strongly negative = copying).

    The training set is partitioned into ``cfg.ct_cells`` k-means cells (seeded). In each cell the
    distances of synthetic and of held-out test samples to their nearest training sample in that cell
    are compared by a z-scored Mann-Whitney U; cells with fewer than ``cfg.ct_min_samples`` synthetic
    samples (the paper's tau) or no test sample are dropped; C_T is the average of the remaining
    z-scores weighted by each cell's share of test samples. Under H0 (the generator samples the
    data distribution) C_T is about N(0, 1); a memorising generator drives it far below 0.
    """
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    syn = as_matrix(syn_feats, "synthetic features")
    train = as_matrix(train_feats, "real train features", min_rows=2)
    test = as_matrix(test_feats, "real test features")
    _same_dim(syn, train, "synthetic features", "real train features")
    _same_dim(test, train, "real test features", "real train features")
    k = max(1, min(int(cfg.ct_cells), train.shape[0]))
    # One OpenMP thread: k-means on ~1e3 points takes milliseconds, while OpenMP workers spinning on
    # a busy shared machine made it take seconds; the result does not depend on the thread count.
    with threadpool_limits(limits=1, user_api="openmp"):
        km = KMeans(n_clusters=k, random_state=int(cfg.seed), n_init=10).fit(train)
        cells_train, cells_test, cells_syn = km.labels_, km.predict(test), km.predict(syn)
    per_cell, num, den = [], 0.0, 0.0
    for c in range(k):
        t_c, p_c, q_c = train[cells_train == c], test[cells_test == c], syn[cells_syn == c]
        row: dict[str, Any] = {"cell": c, "n_train": len(t_c), "n_test": len(p_c), "n_synthetic": len(q_c)}
        if len(p_c) == 0:
            row.update(used=False, z=None, reason="no test samples in cell")
        elif len(q_c) < int(cfg.ct_min_samples):
            row.update(used=False, z=None, reason=f"fewer than {cfg.ct_min_samples} synthetic samples")
        else:
            d_q = nearest_neighbors(q_c, t_c, k=1, block_size=cfg.block_size).dist[:, 0]
            d_p = nearest_neighbors(p_c, t_c, k=1, block_size=cfg.block_size).dist[:, 0]
            z = mann_whitney_z(d_q, d_p)
            weight = len(p_c) / test.shape[0]
            num, den = num + weight * z, den + weight
            row.update(used=True, z=z, weight=weight, median_syn_dist=float(np.median(d_q)),
                       median_test_dist=float(np.median(d_p)))
        per_cell.append(row)
    used = [r for r in per_cell if r["used"]]
    return {
        "ct": float(num / den) if used else None,
        "status": "ok" if used else f"not computed: no cell has >= {cfg.ct_min_samples} synthetic samples",
        "cells_total": k,
        "cells_used": len(used),
        "synthetic_share_in_used_cells": float(sum(r["n_synthetic"] for r in used) / syn.shape[0]),
        "per_cell": per_cell,
    }


def membership_auc(train_feats: Any, test_feats: Any, syn_feats: Any, block_size: int = 1024) -> float:
    """ROC-AUC of a black-box membership-inference attack: members are closer to the synthetic set.

    Each real image is scored by minus its distance to the nearest synthetic sample; the AUC of train
    (members, label 1) against test (non-members, label 0) is ~0.5 for a generator that learned the
    distribution and ~1 for one that memorised its training images.
    """
    from sklearn.metrics import roc_auc_score

    train = as_matrix(train_feats, "real train features")
    test = as_matrix(test_feats, "real test features")
    syn = as_matrix(syn_feats, "synthetic features")
    _same_dim(train, syn, "real train features", "synthetic features")
    _same_dim(test, syn, "real test features", "synthetic features")
    d_train = nearest_neighbors(train, syn, k=1, block_size=block_size).dist[:, 0]
    d_test = nearest_neighbors(test, syn, k=1, block_size=block_size).dist[:, 0]
    labels = np.concatenate([np.ones(len(d_train)), np.zeros(len(d_test))])
    return float(roc_auc_score(labels, -np.concatenate([d_train, d_test])))
