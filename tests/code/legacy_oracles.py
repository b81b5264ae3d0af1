"""Frozen copies of hand-written code that maintained libraries replaced (as of commit 95bc14d), kept
only as parity oracles for the tests and as the timing baseline of benchmarks/audit.py:

- the two blocked nearest-neighbour searches (audit/attacks.py, metrics/distribution.py), now
  :mod:`acneops.metrics.neighbors` on ``sklearn.metrics.pairwise_distances_chunked``;
- the z-scored Mann-Whitney U (audit/attacks.py), now ``scipy.stats.mannwhitneyu``;
- union-find grouping of near-duplicate pHashes (data/split.py), now
  ``scipy.sparse.csgraph.connected_components``.

Never import this from acneops.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _sq_dists(q: np.ndarray, r: np.ndarray, r_sq: np.ndarray) -> np.ndarray:
    d2 = (q * q).sum(axis=1)[:, None] + r_sq[None, :] - 2.0 * (q @ r.T)
    return np.maximum(d2, 0.0, out=d2)


def _min_over_views(q, views, views_sq):
    d2 = _sq_dists(q, views[0], views_sq[0])
    which = np.zeros(d2.shape, dtype=np.int16)
    for v_id in range(1, len(views)):
        d2v = _sq_dists(q, views[v_id], views_sq[v_id])
        better = d2v < d2
        np.copyto(d2, d2v, where=better)
        which[better] = v_id
    return d2, which


def audit_search(queries: np.ndarray, refs: np.ndarray, k: int = 1, ref_views: Sequence[np.ndarray] = (),
                 exclude_self: bool = False, block_size: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dist, idx, view), each (Q, k): the audit's search (float32 ranking, float64 refinement)."""
    q, r = np.asarray(queries, np.float32), np.asarray(refs, np.float32)
    views = [r] + [np.asarray(v, np.float32) for v in ref_views]
    exact = [np.asarray(refs)] + [np.asarray(v) for v in ref_views]
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
        order = np.lexsort((part, np.take_along_axis(d2, part, axis=1)), axis=1)
        idx = np.take_along_axis(part, order, axis=1)
        out_i[start:stop], out_v[start:stop] = idx, np.take_along_axis(which, idx, axis=1)
        q64 = np.asarray(queries[start:stop], dtype=np.float64)
        for j in range(k):
            matched = np.stack([exact[v][i] for i, v in zip(out_i[start:stop, j], out_v[start:stop, j])])
            out_d[start:stop, j] = np.linalg.norm(q64 - matched.astype(np.float64), axis=1)
    return out_d, out_i, out_v


def distribution_search(query: np.ndarray, ref: np.ndarray, k: int = 1, exclude_self: bool = False,
                        max_block_bytes: int = 64 << 20) -> tuple[np.ndarray, np.ndarray]:
    """(dist, idx), each (Q, k): the distribution metrics' search (float64 throughout)."""
    query, ref = np.asarray(query, np.float64), np.asarray(ref, np.float64)
    dist = np.empty((len(query), k))
    idx = np.empty((len(query), k), dtype=np.int64)
    rows = max(1, int(max_block_bytes // (8 * max(1, len(ref)))))
    ref_sq = np.einsum("ij,ij->i", ref, ref)
    for start in range(0, len(query), rows):
        q = query[start:start + rows]
        sq = np.einsum("ij,ij->i", q, q)[:, None] - 2.0 * (q @ ref.T) + ref_sq[None, :]
        block = np.sqrt(np.clip(sq, 0.0, None))
        if exclude_self:
            r = np.arange(len(block))
            block[r, start + r] = np.inf
        part = np.argpartition(block, k - 1, axis=1)[:, :k]
        part_d = np.take_along_axis(block, part, axis=1)
        order = np.argsort(part_d, axis=1, kind="stable")
        idx[start:start + len(block)] = np.take_along_axis(part, order, axis=1)
        dist[start:start + len(block)] = np.take_along_axis(part_d, order, axis=1)
    return dist, idx


def mann_whitney_z(x: np.ndarray, y: np.ndarray) -> float:
    """Z-scored U of x against y: normal approximation, tie-corrected variance, no continuity correction."""
    from scipy.stats import rankdata

    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    m, n = len(x), len(y)
    ranks = rankdata(np.concatenate([x, y]))
    u = ranks[:m].sum() - m * (m + 1) / 2.0
    total = m + n
    _, ties = np.unique(np.concatenate([x, y]), return_counts=True)
    tie_term = (ties**3 - ties).sum() / (total * (total - 1)) if total > 1 else 0.0
    var = m * n / 12.0 * ((total + 1) - tie_term)
    if var <= 0:
        return 0.0
    return float((u - m * n / 2.0) / np.sqrt(var))


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def union_find_group_ids(images: list[str], phashes: list[str], sha256s: list[str], threshold: int) -> dict[str, str]:
    """{image: group id} as ingest wrote it: union-find over pHash Hamming distance <= threshold."""
    order = sorted(range(len(images)), key=lambda i: images[i])
    hashes = np.array([int(phashes[i], 16) for i in order], dtype=np.uint64)
    parent = list(range(len(order)))
    for start in range(0, len(order), 2048):
        block = hashes[start:start + 2048, None] ^ hashes[None, :]
        bits = np.bitwise_count(block) if hasattr(np, "bitwise_count") else np.unpackbits(
            block.view(np.uint8).reshape(*block.shape, 8), axis=-1).sum(axis=-1)
        rows, cols = np.nonzero(bits <= threshold)
        for r, c in zip((rows + start).tolist(), cols.tolist()):
            if c > r:
                a, b = _find(parent, r), _find(parent, c)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return {images[order[i]]: sha256s[order[_find(parent, i)]][:16] for i in range(len(order))}
