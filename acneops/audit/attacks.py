"""The statistics of the anonymity audit, on plain feature / pixel arrays (no images, no I/O).

- exact chunked nearest-neighbour search (L2), optionally against other views of the references
  (flipped, cropped: a mirrored copy is a copy) and leave-one-out (real-to-real reference distances);
- the data-copying statistic C_T of Meehan, Chaudhuri, Dasgupta 2020, "A Non-Parametric Test to
  Detect Data-Copying in Generative Models" (AISTATS);
- a black-box distance-to-synthetic membership-inference attack (ROC-AUC of train vs test).

The near-copy rules live in :mod:`acneops.audit.copies`; :mod:`acneops.audit` turns images into
arrays, runs everything and writes the report. Deterministic: k-means is the only random step and
is seeded.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from acneops.core.errors import AcneopsError


@dataclasses.dataclass(frozen=True)
class Neighbors:
    """The k nearest references of each query, nearest first."""

    dist: np.ndarray  # (Q, k) L2 distances
    idx: np.ndarray  # (Q, k) reference indices
    view: np.ndarray  # (Q, k) which view of the reference matched: 0 = as given, v = ref_views[v - 1]


def as_matrix(x: Any, what: str, min_rows: int = 1, dtype: Any = np.float64) -> np.ndarray:
    """``x`` as a finite (N, D) matrix of ``dtype`` with at least ``min_rows`` rows, else an AcneopsError."""
    arr = np.asarray(x, dtype=dtype)
    if arr.ndim != 2:
        raise AcneopsError(f"{what}: expected a 2-D array (N, D), got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise AcneopsError(f"{what}: needs at least {min_rows} row(s), got {arr.shape[0]}; provide more images")
    if arr.shape[1] == 0:
        raise AcneopsError(f"{what}: feature dimension is 0")
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise AcneopsError(f"{what}: row {bad} has NaN/inf values; check the extractor or the image")
    return arr


def _same_dim(a: np.ndarray, b: np.ndarray, what_a: str, what_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise AcneopsError(
            f"{what_a} has dimension {a.shape[1]} but {what_b} has {b.shape[1]}; "
            "both must come from the same extractor / pixel size"
        )


def _sq_dists(q: np.ndarray, r: np.ndarray, r_sq: np.ndarray) -> np.ndarray:
    """Squared L2 distances (Bq, R) via |q|^2 + |r|^2 - 2 q.r, clipped at 0 (float64)."""
    d2 = (q * q).sum(axis=1)[:, None] + r_sq[None, :] - 2.0 * (q @ r.T)
    return np.maximum(d2, 0.0, out=d2)


def nearest_neighbors(
    queries: np.ndarray,
    refs: np.ndarray,
    k: int = 1,
    ref_views: Sequence[np.ndarray] = (),
    exclude_self: bool = False,
    block_size: int = 1024,
) -> Neighbors:
    """Exact k nearest references of every query in L2, computed in blocks of ``block_size`` queries.

    ``ref_views`` are other views of the same references (same rows: horizontally flipped, cropped
    and resized...): the distance to reference j is the smallest distance to any of its views, so a
    mirrored or cropped copy matches its source. With ``exclude_self`` (queries are the references)
    each query's own row is excluded in every view: a leave-one-out search for the real-to-real
    reference distances. The search ranks in float32 (BLAS speed); the returned distances of the
    selected pairs are recomputed in float64, so an exact copy has distance 0. Memory: about
    ``block_size * len(refs) * 12`` bytes, plus the float32 copies of the views.
    """
    q = as_matrix(queries, "queries", dtype=np.float32)
    r = as_matrix(refs, "references", dtype=np.float32)
    _same_dim(q, r, "queries", "references")
    n_avail = r.shape[0] - (1 if exclude_self else 0)
    if exclude_self and q.shape[0] != r.shape[0]:
        raise AcneopsError("exclude_self needs queries and references to be the same set")
    if not 1 <= k <= n_avail:
        raise AcneopsError(f"asked for {k} nearest neighbours but only {n_avail} reference(s) are available")
    views = [r] + [as_matrix(v, f"reference view {i + 1}", dtype=np.float32) for i, v in enumerate(ref_views)]
    for i, v in enumerate(views[1:]):
        if v.shape != r.shape:
            raise AcneopsError(f"reference view {i + 1} has shape {v.shape}, references {r.shape}; must match")
    exact = [np.asarray(refs)] + [np.asarray(v) for v in ref_views]  # for the float64 refinement
    views_sq = [(v * v).sum(axis=1) for v in views]
    step = max(1, int(block_size))
    out_d, out_i = np.empty((q.shape[0], k)), np.empty((q.shape[0], k), dtype=np.int64)
    out_v = np.zeros((q.shape[0], k), dtype=np.int64)
    for start in range(0, q.shape[0], step):
        stop = min(start + step, q.shape[0])
        d2, which = _min_over_views(q[start:stop], views, views_sq)
        if exclude_self:
            rows = np.arange(stop - start)
            d2[rows, rows + start] = np.inf
        part = np.argpartition(d2, k - 1, axis=1)[:, :k] if k < d2.shape[1] else np.tile(
            np.arange(d2.shape[1]), (d2.shape[0], 1))
        order = np.lexsort((part, np.take_along_axis(d2, part, axis=1)), axis=1)  # ties by index
        idx = np.take_along_axis(part, order, axis=1)
        out_i[start:stop], out_v[start:stop] = idx, np.take_along_axis(which, idx, axis=1)
        q64 = np.asarray(queries[start:stop], dtype=np.float64)
        for j in range(k):  # exact float64 distances of the selected pairs (the search ran in float32)
            matched = np.stack([exact[v][i] for i, v in zip(out_i[start:stop, j], out_v[start:stop, j])])
            out_d[start:stop, j] = np.linalg.norm(q64 - matched.astype(np.float64), axis=1)
    return Neighbors(dist=out_d, idx=out_i, view=out_v)


def _min_over_views(
    q: np.ndarray, views: list[np.ndarray], views_sq: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances (Bq, N) to the closest view of each reference, and which view it was."""
    d2 = _sq_dists(q, views[0], views_sq[0])
    which = np.zeros(d2.shape, dtype=np.int16)
    for v_id in range(1, len(views)):
        d2v = _sq_dists(q, views[v_id], views_sq[v_id])
        better = d2v < d2
        np.copyto(d2, d2v, where=better)
        which[better] = v_id
    return d2, which


def flip_pixel_vectors(pixels: np.ndarray, size: int) -> np.ndarray:
    """Horizontally flip (N, size*size*3) HWC pixel vectors (as made by ``acneops.audit.pixel_vectors``)."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.shape[1] != size * size * 3:
        raise AcneopsError(
            f"pixel vectors have shape {pixels.shape}, expected (N, {size * size * 3}) for pixel_size={size}; "
            "pass real_pixel_views explicitly or fix audit.pixel_size"
        )
    return pixels.reshape(-1, size, size, 3)[:, :, ::-1, :].reshape(pixels.shape[0], -1)


def mann_whitney_z(x: np.ndarray, y: np.ndarray) -> float:
    """Z-scored Mann-Whitney U of ``x`` against ``y`` (U counts pairs with x > y, ties 1/2).

    Normal approximation under H0 with the tie-corrected variance and no continuity correction;
    negative when ``x`` tends to be smaller than ``y``. 0 when every value is tied.
    """
    from scipy.stats import rankdata

    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    m, n = len(x), len(y)
    if m == 0 or n == 0:
        raise AcneopsError("Mann-Whitney U needs two non-empty samples")
    ranks = rankdata(np.concatenate([x, y]))
    u = ranks[:m].sum() - m * (m + 1) / 2.0
    total = m + n
    _, ties = np.unique(np.concatenate([x, y]), return_counts=True)
    tie_term = (ties**3 - ties).sum() / (total * (total - 1)) if total > 1 else 0.0
    var = m * n / 12.0 * ((total + 1) - tie_term)
    if var <= 0:
        return 0.0
    return float((u - m * n / 2.0) / np.sqrt(var))


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
