"""Distribution metrics against their references: pytorch-fid (FD), a naive MMD² (KID), prdc (PR/DC)."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from acneops.core.errors import AcneopsError
from acneops.metrics import distribution as dm


def _gauss(n: int, d: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """n samples of one fixed correlated Gaussian per dimension d (``seed`` only draws the samples)."""
    mix = np.random.default_rng(1234).normal(size=(d, d)) / np.sqrt(d) + np.eye(d)
    return np.random.default_rng(seed).normal(size=(n, d)) @ mix * scale + shift


# ---------------------------------------------------------------- Fréchet distance
@pytest.mark.parametrize("n1,n2,d", [(400, 300, 8), (500, 500, 64), (40, 30, 64)])
def test_fd_equals_pytorch_fid(n1, n2, d):
    """Includes N < dim (singular covariances), where both take the eps * I path or its equivalent."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    a, b = _gauss(n1, d, 0), _gauss(n2, d, 1, shift=0.3, scale=1.2)
    s1, s2 = dm.feature_stats(a), dm.feature_stats(b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pytorch-fid passes scipy's deprecated `disp`
        ref = calculate_frechet_distance(*s1, *s2)
    ours = dm.frechet_distance(*s1, *s2)
    assert ours == pytest.approx(float(ref), rel=1e-6)
    assert dm.frechet_distance(*s1, *s2, method="eig") == pytest.approx(float(ref), rel=1e-6)
    assert dm.fd_from_features(a, b) == pytest.approx(ours, rel=1e-12)


def test_fd_zero_for_same_set_and_grows_with_planted_shift():
    x = _gauss(600, 16, 2)
    assert abs(dm.fd_from_features(x, x)) < 1e-6
    values = [dm.fd_from_features(x, x + delta) for delta in (0.1, 0.3, 1.0)]
    # same covariance: FD is exactly the squared mean shift, d * delta²
    np.testing.assert_allclose(values, [16 * 0.01, 16 * 0.09, 16 * 1.0], rtol=1e-6)
    independent = dm.fd_from_features(x, _gauss(600, 16, 3))
    assert dm.fd_from_features(x, _gauss(600, 16, 3, shift=0.5)) > independent + 3.0


def test_fd_eigenvalue_fallback_matches_sqrtm(monkeypatch):
    a, b = _gauss(300, 12, 4), _gauss(300, 12, 5, shift=0.2)
    s1, s2 = dm.feature_stats(a), dm.feature_stats(b)
    expected = dm.frechet_distance(*s1, *s2)
    import scipy.linalg

    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda m: np.full_like(m, np.inf))
    assert dm.frechet_distance(*s1, *s2) == pytest.approx(expected, rel=1e-8)


def test_fd_rejects_imaginary_root_and_mismatched_shapes():
    with pytest.raises(AcneopsError, match="imaginary"):
        dm.frechet_distance(np.zeros(2), np.diag([1.0, 1.0]), np.zeros(2), np.diag([-1.0, 1.0]))
    with pytest.raises(AcneopsError, match="differ"):
        dm.fd_from_features(_gauss(50, 4, 0), _gauss(50, 5, 1))
    with pytest.raises(AcneopsError, match="NaN"):
        dm.feature_stats(np.array([[0.0, 1.0], [np.nan, 2.0]]))


# ---------------------------------------------------------------- KID
def _naive_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the cubic kernel, written out pair by pair (torchmetrics' formula)."""
    d, m = x.shape[1], len(x)

    def k(u, v):
        return (float(np.dot(u, v)) / d + 1.0) ** 3

    kxx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return kxx + kyy - 2.0 * kxy


def test_kid_equals_naive_unbiased_mmd():
    """One subset as large as both sets is a permutation of them, so KID is the full-set MMD²."""
    real, fake = _gauss(40, 6, 0), _gauss(40, 6, 1, shift=0.4)
    mean, std = dm.kid_from_features(real, fake, num_subsets=1, subset_size=100)
    assert mean == pytest.approx(_naive_mmd2_unbiased(fake, real), rel=1e-9)
    assert std == 0.0


def test_kid_near_zero_for_same_distribution_positive_for_shift():
    real = _gauss(1500, 32, 0)
    same = dm.kid_from_features(real, _gauss(1200, 32, 1), num_subsets=20, subset_size=500, seed=0)
    shifted = dm.kid_from_features(real, _gauss(1200, 32, 1, shift=0.3), num_subsets=20, subset_size=500)
    assert abs(same[0]) < 3 * same[1] + 1e-3
    assert shifted[0] > 10 * abs(same[0]) and shifted[0] > 5 * shifted[1]
    assert dm.kid_from_features(real, _gauss(1200, 32, 1), num_subsets=20, subset_size=500, seed=0) == same


def test_kid_bad_arguments():
    with pytest.raises(AcneopsError, match="subset_size"):
        dm.kid_from_features(_gauss(10, 3, 0), _gauss(10, 3, 1), subset_size=1)


# ---------------------------------------------------------------- precision / recall / density / coverage
@pytest.mark.parametrize("k,block", [(3, dm.BLOCK_BYTES), (5, 4096)])
def test_prdc_equals_prdc_package(k, block, capsys):
    from prdc import compute_prdc

    real, fake = _gauss(300, 16, 0), _gauss(250, 16, 1, shift=0.25, scale=0.9)
    ref = compute_prdc(real, fake, nearest_k=k)
    ours = dm.prdc(real, fake, nearest_k=k, max_block_bytes=block)  # 4096 bytes: blocks of 2 rows
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key] == pytest.approx(float(ref[key]), abs=1e-9), key
    assert 0.0 < ours["precision"] < 1.0 and 0.0 < ours["coverage"] < 1.0  # not a degenerate case


def test_prdc_separates_shifted_sets():
    real = _gauss(400, 8, 0)
    good = dm.prdc(real, _gauss(400, 8, 1))
    bad = dm.prdc(real, _gauss(400, 8, 1, shift=2.0))
    assert good["precision"] > 0.6 and good["coverage"] > 0.6
    assert bad["precision"] < good["precision"] / 2 and bad["coverage"] < good["coverage"] / 2


def test_knn_radii_are_the_kth_leave_one_out_distance():
    """k-NN radii from the shared search (acneops.metrics.neighbors, tested there), 8 rows per block."""
    from scipy.spatial.distance import cdist

    r = _gauss(53, 5, 1)
    self_full = cdist(r, r) + np.diag(np.full(len(r), np.inf))
    np.testing.assert_allclose(dm.knn_radii(r, 3, max_block_bytes=8 * 53 * 8), np.sort(self_full, axis=1)[:, 2],
                               rtol=1e-9)
    dup = np.vstack([r, r[:1]])  # an exact duplicate is its twin's nearest neighbour, at distance ~0
    assert dm.knn_radii(dup, 1)[0] < 1e-6


def test_distribution_report_names_the_feature_space():
    real, fake = _gauss(60, 4, 0), _gauss(50, 4, 1)
    rep = dm.distribution_report(real, fake, "fd_domain", "kd_domain", "domain", kid_subsets=3, kid_subset_size=20)
    assert {"fd_domain", "kd_domain_mean", "kd_domain_std", "precision_domain", "recall_domain",
            "density_domain", "coverage_domain"} <= set(rep)
    assert not any("fid" in key for key in rep)
    assert (rep["n_real"], rep["n_fake"], rep["feature_space"]) == (60, 50, "domain")
    assert rep["fd_domain"] == pytest.approx(dm.fd_from_features(real, fake))
    with pytest.raises(AcneopsError, match="method"):
        dm.fd_from_features(real, fake, method="svd")
