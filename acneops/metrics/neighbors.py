"""Exact k-nearest-neighbour search in L2: the one search the distribution metrics and the audit share.

The distances come from scikit-learn's ``pairwise_distances_chunked`` (Euclidean, |q|² + |r|² - 2 q·r
in float64 with the reference norms computed once), one block of query rows at a time, so a
5,000 x 30,000 search never holds the whole matrix. On top of it:

- *views* (:func:`nearest_neighbors` ``ref_views``): other versions of the same references (mirrored,
  cropped and resized) are stacked after them; the distance to reference j is the smallest over
  its views, so a mirrored copy matches its source, and :attr:`Neighbors.view` says which view won
  (the first one on a tie);
- leave-one-out (``exclude_self``): each query's own row is skipped in every view, so the real-to-real
  reference distances never see the zero distance to themselves, while an exact duplicate still does;
- order: nearest first, ties broken by the smaller reference index;
- the returned distances of the selected pairs are recomputed as ||q - r|| in float64, so an exact
  copy has distance 0 (the expanded formula leaves a ~1e-7 residue).

Domain code imports :func:`nearest_neighbors` and :func:`distance_blocks` from here, never a copy.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Sequence

import numpy as np

from acneops.core.errors import AcneopsError


@dataclasses.dataclass(frozen=True)
class Neighbors:
    """The k nearest references of each query, nearest first."""

    dist: np.ndarray  # (Q, k) L2 distances, float64
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


def _working_memory_mib(block_rows: int, n_refs: int) -> float:
    """The ``working_memory`` (MiB) that makes ``pairwise_distances_chunked`` take ``block_rows`` query rows."""
    return max(1, int(block_rows)) * 8 * n_refs / 2**20  # exact: an integer over a power of two


def distance_blocks(query: np.ndarray, ref: np.ndarray, block_rows: int = 1024,
                    squared: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """(start, D) with D[i, j] = ||query[start + i] - ref[j]|| (float64), ``block_rows`` query rows at a time."""
    from sklearn.metrics import pairwise_distances_chunked

    query, ref = np.asarray(query, np.float64), np.asarray(ref, np.float64)
    ref_sq = np.einsum("ij,ij->i", ref, ref)[None, :]  # (1, R), computed once instead of once per block
    start = 0
    for block in pairwise_distances_chunked(query, ref, metric="euclidean",
                                            working_memory=_working_memory_mib(block_rows, len(ref)),
                                            Y_norm_squared=ref_sq, squared=squared):
        yield start, block
        start += len(block)


def nearest_neighbors(queries: Any, refs: Any, k: int = 1, ref_views: Sequence[Any] = (),
                      exclude_self: bool = False, block_size: int = 1024, exact: bool = True) -> Neighbors:
    """Exact k nearest references of every query in L2, ``block_size`` query rows per distance block.

    ``ref_views`` are other views of the same references (same rows and shape); the distance to a
    reference is the smallest over its views. ``exclude_self`` (queries are the references) skips each
    query's own row in every view. ``exact`` recomputes the selected distances as ||q - r|| (an exact
    copy at 0); ``exact=False`` returns the distances the search ranked by, from the same formula as
    :func:`distance_blocks` (what k-NN radii compared against those blocks need). Memory: about ``block_size * len(refs) * (1 + len(ref_views)) * 16``
    bytes per block plus one float64 copy of the stacked views.
    """
    q = as_matrix(queries, "queries")
    r = as_matrix(refs, "references")
    if q.shape[1] != r.shape[1]:
        raise AcneopsError(f"queries have dimension {q.shape[1]} but references have {r.shape[1]}; "
                           "both must come from the same extractor / pixel size")
    if exclude_self and q.shape[0] != r.shape[0]:
        raise AcneopsError("exclude_self needs queries and references to be the same set")
    n_avail = r.shape[0] - (1 if exclude_self else 0)
    if not 1 <= k <= n_avail:
        raise AcneopsError(f"asked for {k} nearest neighbours but only {n_avail} reference(s) are available")
    views = [r] + [as_matrix(v, f"reference view {i + 1}") for i, v in enumerate(ref_views)]
    for i, v in enumerate(views[1:]):
        if v.shape != r.shape:
            raise AcneopsError(f"reference view {i + 1} has shape {v.shape}, references {r.shape}; must match")
    stacked = np.concatenate(views) if len(views) > 1 else r  # (V * R, D): view v of ref j is row v * R + j
    dist, idx = np.empty((q.shape[0], k)), np.empty((q.shape[0], k), dtype=np.int64)
    view = np.empty((q.shape[0], k), dtype=np.int64)
    for start, d2 in distance_blocks(q, stacked, block_size, squared=True):  # d2 (B, V * R)
        rows = slice(start, start + len(d2))
        idx[rows], view[rows] = _k_smallest(d2.reshape(len(d2), len(views), r.shape[0]), k,
                                            start if exclude_self else None)
        if exact:
            matched = stacked[view[rows] * r.shape[0] + idx[rows]]  # (B, k, D) the matched view of each ref
            dist[rows] = np.linalg.norm(q[rows, None, :] - matched, axis=2)
        else:
            dist[rows] = np.sqrt(d2[np.arange(len(d2))[:, None], view[rows] * r.shape[0] + idx[rows]])
    return Neighbors(dist=dist, idx=idx, view=view)


def _k_smallest(d2: np.ndarray, k: int, self_start: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(reference indices (B, k), views (B, k)) of the k smallest of ``d2`` (B, V, R) over its closest views.

    ``self_start`` (leave-one-out): block row i is reference ``self_start + i`` and is skipped.
    Sorted by distance, ties by the smaller index; on a tie between views the first view wins.
    """
    best = d2.min(axis=1) if d2.shape[1] > 1 else d2[:, 0, :]  # (B, R) distance to the closest view
    n_rows, n_ref = best.shape
    if self_start is not None:
        best[np.arange(n_rows), self_start + np.arange(n_rows)] = np.inf
    if k == 1:  # argmin takes the first (smallest index) of tied minima, as the lexsort below does
        idx = best.argmin(axis=1)[:, None]
    else:
        part = np.argpartition(best, k - 1, axis=1)[:, :k] if k < n_ref else np.tile(np.arange(n_ref), (n_rows, 1))
        order = np.lexsort((part, np.take_along_axis(best, part, axis=1)), axis=1)
        idx = np.take_along_axis(part, order, axis=1)
    which = d2[np.arange(n_rows)[:, None], :, idx].argmin(axis=2)  # (B, k): the first view at the minimum
    return idx, which
