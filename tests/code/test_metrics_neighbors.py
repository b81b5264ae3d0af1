"""The one nearest-neighbour search (acneops.metrics.neighbors, on scikit-learn's pairwise_distances_chunked):
brute-force truth, parity with the two hand-written searches it replaced, views, leave-one-out, bad input."""

from __future__ import annotations

import legacy_oracles as legacy
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from acneops.core.errors import AcneopsError
from acneops.metrics.neighbors import distance_blocks, nearest_neighbors


def _feats(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim))


@pytest.mark.parametrize("block_size", [1, 7, 1000])
@pytest.mark.parametrize("k", [1, 3])
def test_chunked_search_equals_brute_force(block_size: int, k: int) -> None:
    q, r = _feats(53, 9, 0), _feats(31, 9, 1)
    nn = nearest_neighbors(q, r, k=k, block_size=block_size)
    d = cdist(q, r)
    want_idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(nn.idx, want_idx)
    np.testing.assert_allclose(nn.dist, np.take_along_axis(d, want_idx, axis=1), rtol=1e-10, atol=1e-12)
    assert (nn.view == 0).all()


def test_closest_view_wins_and_leave_one_out_skips_every_view_of_self() -> None:
    q, r, r_alt = _feats(40, 5, 1), _feats(20, 5, 2), _feats(20, 5, 3)
    nn = nearest_neighbors(q, r, k=2, ref_views=[r_alt], block_size=8)
    d = np.minimum(cdist(q, r), cdist(q, r_alt))
    want = np.argsort(d, axis=1, kind="stable")[:, :2]
    np.testing.assert_array_equal(nn.idx, want)
    np.testing.assert_allclose(nn.dist, np.take_along_axis(d, want, axis=1), rtol=1e-10)
    view_want = (cdist(q, r_alt) < cdist(q, r))[np.arange(40), want[:, 0]].astype(int)
    np.testing.assert_array_equal(nn.view[:, 0], view_want)

    loo = nearest_neighbors(r, r, k=1, ref_views=[r], exclude_self=True, block_size=3)
    d_rr = cdist(r, r)
    np.fill_diagonal(d_rr, np.inf)
    np.testing.assert_array_equal(loo.idx[:, 0], d_rr.argmin(axis=1))
    assert (loo.idx[:, 0] != np.arange(20)).all()


def test_exact_copies_have_distance_exactly_zero_and_duplicates_survive_leave_one_out() -> None:
    r = _feats(10, 768, 2).astype(np.float32) * 30
    nn = nearest_neighbors(r[3:5], r, k=2)
    assert nn.dist[:, 0].tolist() == [0.0, 0.0]
    assert nn.idx[:, 0].tolist() == [3, 4]
    dup = np.vstack([r, r[:1]])  # an exact duplicate is its twin's nearest neighbour, at distance 0
    loo = nearest_neighbors(dup, dup, k=1, exclude_self=True)
    assert loo.dist[0, 0] == 0.0 and loo.idx[0, 0] == len(r) and loo.idx[-1, 0] == 0


@pytest.mark.parametrize("k,n_views,exclude_self,block_size", [
    (1, 0, False, 1024), (2, 1, False, 13), (3, 3, False, 1), (2, 2, True, 17), (1, 0, True, 5)])
def test_parity_with_the_audit_search_it_replaced(k: int, n_views: int, exclude_self: bool, block_size: int) -> None:
    """Same indices, views and (float64-refined) distances as audit/attacks.py's hand-written search."""
    refs = _feats(120, 48, 10).astype(np.float32)
    views = [_feats(120, 48, 20 + v).astype(np.float32) for v in range(n_views)]
    queries = refs if exclude_self else _feats(300, 48, 11).astype(np.float32)
    nn = nearest_neighbors(queries, refs, k, views, exclude_self=exclude_self, block_size=block_size)
    dist, idx, view = legacy.audit_search(queries, refs, k, views, exclude_self=exclude_self, block_size=block_size)
    np.testing.assert_array_equal(nn.idx, idx)
    np.testing.assert_array_equal(nn.view, view)
    np.testing.assert_allclose(nn.dist, dist, rtol=1e-12, atol=0)


@pytest.mark.parametrize("k,exclude_self,max_block_bytes", [(1, False, 64 << 20), (4, False, 8 * 90 * 3),
                                                            (3, True, 1000)])
def test_parity_with_the_distribution_search_it_replaced(k: int, exclude_self: bool, max_block_bytes: int) -> None:
    """Same indices and distances as metrics/distribution.py's hand-written search (used for k-NN radii)."""
    ref = _feats(90, 16, 30)
    query = ref if exclude_self else _feats(70, 16, 31)
    dist, idx = legacy.distribution_search(query, ref, k, exclude_self, max_block_bytes)
    rows = max(1, max_block_bytes // (8 * len(ref)))
    for exact in (True, False):
        nn = nearest_neighbors(query, ref, k, exclude_self=exclude_self, block_size=rows, exact=exact)
        np.testing.assert_array_equal(nn.idx, idx)
        np.testing.assert_allclose(nn.dist, dist, rtol=1e-9)


def test_distance_blocks_take_the_asked_rows_and_cover_the_matrix() -> None:
    q, r = _feats(23, 6, 4), _feats(11, 6, 5)
    blocks = list(distance_blocks(q, r, block_rows=5))
    assert [start for start, _ in blocks] == [0, 5, 10, 15, 20]
    assert [len(b) for _, b in blocks] == [5, 5, 5, 5, 3]
    np.testing.assert_allclose(np.vstack([b for _, b in blocks]), cdist(q, r), rtol=1e-9, atol=1e-12)


def test_bad_input_names_the_problem() -> None:
    q, r = _feats(5, 4, 0), _feats(3, 4, 1)
    with pytest.raises(AcneopsError, match="only 3 reference"):
        nearest_neighbors(q, r, k=4)
    with pytest.raises(AcneopsError, match="only 2 reference"):
        nearest_neighbors(r, r, k=3, exclude_self=True)
    with pytest.raises(AcneopsError, match="same set"):
        nearest_neighbors(q, r, exclude_self=True)
    with pytest.raises(AcneopsError, match="dimension 4 but references have 3"):
        nearest_neighbors(q, r[:, :3])
    with pytest.raises(AcneopsError, match="reference view 1 has shape"):
        nearest_neighbors(q, r, ref_views=[r[:2]])
    bad = q.copy()
    bad[2, 1] = np.nan
    with pytest.raises(AcneopsError, match="queries: row 2 has NaN"):
        nearest_neighbors(bad, r)
