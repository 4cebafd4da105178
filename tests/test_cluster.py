"""Automatic DBSCAN parameters and PhaseClusterer on phase-map-like synthetic scores."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score

from txm_live.cluster import DbscanParams, PhaseClusterer, default_min_samples, estimate_dbscan_params


def make_scores(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two majority phases (60/40), a 3 % minority phase, 1 % uniform noise (label -1)."""
    rng = np.random.default_rng(seed)
    n_min, n_noise = int(0.03 * n), int(0.01 * n)
    n_maj = n - n_min - n_noise
    n_a = int(0.6 * n_maj)
    c = np.zeros((3, d))
    c[1, 0] = 12.0
    c[2, :2] = (6.0, 9.0)
    X = np.concatenate([
        rng.normal(c[0], 1.0, (n_a, d)),
        rng.normal(c[1], 1.0, (n_maj - n_a, d)),
        rng.normal(c[2], 1.0, (n_min, d)),
        rng.uniform(-6.0, 18.0, (n_noise, d)),
    ])
    y = np.concatenate([np.zeros(n_a), np.ones(n_maj - n_a), np.full(n_min, 2), np.full(n_noise, -1)])
    perm = rng.permutation(n)
    return X[perm], y[perm].astype(int)


@pytest.mark.parametrize("d", [3, 5])
def test_phase_clusterer_finds_two_majority_and_minority(d: int) -> None:
    X, y = make_scores(20_000, d, seed=d)
    pc = PhaseClusterer().fit(X)
    assert pc.phase_kinds_[:3] == ("majority", "majority", "minority")
    assert set(pc.phase_kinds_[3:]) <= {"outlier"}
    assert pc.n_phases_ in (3, 4)
    keep = y >= 0
    assert adjusted_rand_score(y[keep], pc.labels_[keep]) >= 0.95
    # stable order: majority phases by decreasing size, every point labelled
    assert pc.labels_.min() == 0 and pc.labels_.max() == pc.n_phases_ - 1
    assert pc.counts_[0] >= pc.counts_[1]
    assert pc.counts_.sum() == len(X)
    assert pc.outlier_labels_ == tuple(range(2, pc.n_phases_))
    # the minority phase is the 3 % group
    minority = pc.labels_ == 2
    assert np.mean(y[minority] == 2) > 0.95
    assert abs(minority.sum() - np.sum(y == 2)) < 0.1 * np.sum(y == 2)
    assert isinstance(pc.params_, DbscanParams)
    assert pc.eps_ == pc.params_.eps


def test_dbscan_labels_are_sklearns() -> None:
    X, _ = make_scores(6000, 3, seed=7)
    pc = PhaseClusterer(eps=0.5, min_samples=8).fit(X)
    ref = DBSCAN(eps=0.5, min_samples=8).fit(X)
    np.testing.assert_array_equal(pc.dbscan_labels_, ref.labels_)
    np.testing.assert_array_equal(pc.core_sample_indices_, ref.core_sample_indices_)
    assert pc.params_ is None and pc.eps_ == 0.5 and pc.min_samples_ == 8


def test_paper_mode_outlier_phase_is_dbscan_noise() -> None:
    X, _ = make_scores(8000, 3, seed=3)
    pc = PhaseClusterer(split_minority=False, fringe_factor=0.0, majority_fraction=0.2).fit(X)
    raw = pc.dbscan_labels_
    two_largest = np.argsort(np.bincount(raw[raw >= 0]))[-2:]
    assert pc.phase_kinds_ == ("majority", "majority", "outlier")
    # Duan et al.: everything outside the majority clusters (DBSCAN noise, small clusters)
    np.testing.assert_array_equal(pc.labels_ == 2, ~np.isin(raw, two_largest))


def test_tiny_clusters_fold_into_outlier_phase() -> None:
    rng = np.random.default_rng(11)
    big = np.concatenate([rng.normal(0, 1, (5000, 2)), rng.normal([12, 0], 1, (4000, 2))])
    tiny = np.concatenate([rng.normal([40 + 5 * i, 40], 0.01, (12, 2)) for i in range(15)])
    X = np.concatenate([big, tiny])
    pc = PhaseClusterer().fit(X)
    assert pc.dbscan_labels_.max() >= 10  # DBSCAN does see the tiny clusters ...
    assert pc.n_phases_ == 3  # ... but they form one outlier phase, not 15 phases
    assert pc.phase_kinds_ == ("majority", "majority", "outlier")
    assert np.all(pc.labels_[len(big):] == 2)


def test_uniform_background_is_not_a_phase() -> None:
    rng = np.random.default_rng(12)
    blobs = np.concatenate([rng.normal(0, 1, (6000, 3)), rng.normal([12, 0, 0], 1, (4000, 3))])
    background = rng.uniform(-10, 22, (600, 3))
    pc = PhaseClusterer().fit(np.concatenate([blobs, background]))
    assert "minority" not in pc.phase_kinds_


def test_estimate_dbscan_params() -> None:
    X, y = make_scores(20_000, 3, seed=1)
    p = estimate_dbscan_params(X)
    assert p.min_samples == default_min_samples(20_000, 3)
    assert np.all(np.diff(p.k_distances) >= 0)
    assert p.k_distances.size == p.n_sample == 10_000
    assert p.eps == p.k_distances[p.knee_index]
    assert 0.8 < p.core_fraction < 0.995
    # the eps separates the phases: well below the gap between phase centres, and larger
    # than the typical k-distance inside a phase
    assert np.median(p.k_distances) < p.eps < 2.0
    # reproducible, and min_samples is honoured
    assert estimate_dbscan_params(X).eps == p.eps
    assert estimate_dbscan_params(X, min_samples=20).min_samples == 20
    # small inputs use every point
    small = estimate_dbscan_params(X[:500])
    assert small.n_sample == 500


def test_default_min_samples() -> None:
    assert default_min_samples(100, 2) == 4
    assert default_min_samples(1000, 8) == 16
    assert default_min_samples(387_000, 3) == 11


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda X: estimate_dbscan_params(X, min_samples=0), "min_samples"),
        (lambda X: estimate_dbscan_params(X, sample_size=3), "sample_size"),
        (lambda X: estimate_dbscan_params(X, tail_quantile=0.2), "tail_quantile"),
        (lambda X: estimate_dbscan_params(X[:, 0]), "X"),
        (lambda X: PhaseClusterer(eps=-1.0).fit(X), "eps"),
        (lambda X: PhaseClusterer(min_samples=0).fit(X), "min_samples"),
        (lambda X: PhaseClusterer(majority_fraction=0.0).fit(X), "majority_fraction"),
        (lambda X: PhaseClusterer(min_phase_fraction=0.5).fit(X), "min_phase_fraction"),
        (lambda X: PhaseClusterer(fringe_factor=-1).fit(X), "fringe_factor"),
        (lambda X: PhaseClusterer().fit(np.where(X > 1, np.nan, X)), "X"),
    ],
)
def test_validation(call, name: str) -> None:
    X = np.random.default_rng(0).normal(size=(200, 3))
    with pytest.raises(ValueError, match=name):
        call(X)


def test_duplicated_sites() -> None:
    # two measured sites, each repeated 100 times: two phases, no crash on a zero knee
    X = np.concatenate([np.zeros((100, 2)), np.ones((60, 2))])
    pc = PhaseClusterer().fit(X)
    assert pc.phase_kinds_ == ("majority", "majority")
    np.testing.assert_array_equal(pc.labels_, np.r_[np.zeros(100), np.ones(60)])
    assert PhaseClusterer().fit(np.zeros((50, 3))).phase_kinds_ == ("majority",)


def test_one_feature_k_distances_equal_scipy() -> None:
    """The sorted-window k-distances of one feature equal scipy's exact k-NN distances (ties,
    duplicates, a large offset), so the estimated eps is the same as with the KD-tree."""
    from scipy.spatial import cKDTree

    from txm_live.cluster import _k_distances_1d

    rng = np.random.default_rng(3)
    for x in (rng.normal(size=4000), np.round(rng.normal(size=3000), 2), rng.integers(0, 5, 200).astype(float),
              1e6 + rng.normal(size=2000) * 1e-3):
        for k in (1, 2, 5, 11):
            sub = rng.choice(x.size, min(500, x.size), replace=False)
            ref = cKDTree(x[:, None]).query(x[sub][:, None], k=k)[0].reshape(sub.size, k)[:, -1]
            np.testing.assert_array_equal(_k_distances_1d(x, sub, k), ref)


def test_one_feature_nearest_equals_kdtree() -> None:
    """The sorted-neighbour answers of the clusterer's fringe and distinctness queries in one
    feature equal the KD-tree's: which queries have a point within the bound, the nearest
    point's label, and whether the nearest point lies beyond a radius. The points are float32
    values on coarse grids, so distances equal to the bound and equidistant points of different
    labels (exact ties) are common."""
    from scipy.spatial import cKDTree

    from txm_live.cluster import _Nearest

    rng = np.random.default_rng(1)
    ties = 0
    for _ in range(200):
        grid = float(rng.choice([0.5, 0.25, 1 / 3, 1e-3]))
        P = (np.round(rng.normal(size=(int(rng.integers(1, 300)), 1)) / grid) * grid).astype(np.float32).astype(float)
        Q = (np.round(rng.normal(size=(int(rng.integers(1, 300)), 1)) / grid) * grid).astype(np.float32).astype(float)
        labels = rng.integers(0, 3, P.shape[0])
        bound = float(rng.choice([grid, 2 * grid, np.float32(1.5 * grid)]))
        tree = cKDTree(P)
        dist, j = tree.query(Q, k=1, distance_upper_bound=bound)
        ref = np.isfinite(dist)
        ties += int(np.count_nonzero(tree.query(Q, k=1)[0] == bound))
        found, lab = _Nearest(P, labels).within(Q, bound)
        np.testing.assert_array_equal(found, ref)
        np.testing.assert_array_equal(lab[found], labels[j[ref]])
        np.testing.assert_array_equal(_Nearest(P).within(Q, bound)[0], ref)
        for c in Q[:5]:
            assert _Nearest(P).farther_than(c, bound) == (float(tree.query(c, k=1)[0]) > bound)
    assert ties > 0  # distances exactly at the bound were exercised


def test_refine_one_feature_scalars_equal_lapack() -> None:
    """The mixture's one-feature E-step (``refine._log_density_1d``: in place, ``sqrt(var)`` and
    ``1 / sqrt(var)`` for the 1 x 1 Cholesky factor and its inverse) gives bit for bit the values of
    the general ``_log_gauss`` (LAPACK's Cholesky factor and inverse), so the refined labels are
    unchanged."""
    from txm_live.refine import _log_density_1d, _log_gauss, _mahalanobis2

    rng = np.random.default_rng(5)
    var = np.concatenate([10.0 ** rng.uniform(-12, 6, 2000), rng.uniform(0.5, 2.0, 2000)])
    L = np.array([np.linalg.cholesky(np.array([[v]]))[0, 0] for v in var])
    np.testing.assert_array_equal(L, np.sqrt(var))
    np.testing.assert_array_equal(np.array([np.linalg.inv(np.array([[x]]))[0, 0] for x in L]), 1.0 / L)
    x = rng.normal(size=5000) * 3.0
    for v in var[::200]:
        m, shift = float(rng.normal()), float(np.log(rng.uniform(1e-3, 1.0)))
        ref = shift + _log_gauss(x[:, None], np.array([m]), np.array([[v]]))[0]
        np.testing.assert_array_equal(_log_density_1d(x, m, float(v), shift, np.empty_like(x)), ref)
        np.testing.assert_array_equal(_mahalanobis2(x[:, None], np.array([m]), np.array([[v]])),
                                      _log_gauss(x[:, None], np.array([m]), np.array([[v]]))[1])


def _reference_em(X, means, covs, weights, n_iter):
    """The mixture EM of ``refine._robust_em`` in its plain matrix form: every responsibility
    exact (no floor), the general density and M-step for any number of features."""
    from txm_live.refine import _log_gauss

    n, d = X.shape
    log_bg = -float(np.log(np.maximum(X.max(axis=0) - X.min(axis=0), 1e-9)).sum())
    k = len(means)
    w = np.asarray(list(weights) + [max(0.01 * sum(weights), 1.0)], dtype=np.float64)
    w /= w.sum()
    last = -np.inf
    for _ in range(n_iter):
        resp = np.stack([np.log(w[j] + 1e-300) + _log_gauss(X, means[j], covs[j])[0] for j in range(k)]
                        + [np.full(n, np.log(w[k] + 1e-300) + log_bg)])
        top = resp.max(axis=0)
        resp = np.exp(resp - top)
        total = resp.sum(axis=0)
        resp /= total
        loglik = float(np.mean(top + np.log(total)))
        nk = resp.sum(axis=1)
        w = nk / n
        for j in range(k):
            if nk[j] > d:
                r = resp[j]
                means[j] = (r @ X) / nk[j]
                D = X - means[j]
                covs[j] = (D * r[:, None]).T @ D / nk[j] + 1e-6 * np.eye(d)
        if abs(loglik - last) < 1e-7 * max(1.0, abs(loglik)):
            break
        last = loglik
    return means, covs, w, resp


@pytest.mark.parametrize("d", [1, 2])
def test_robust_em_equals_exact_responsibilities(d: int) -> None:
    """``refine._robust_em`` raises responsibilities below 1e-300 of a point's largest to 1e-300
    (their subnormal exps are 5-15x slower) and uses dot products for one feature: the means,
    covariances and weights are bit for bit those of the plain EM with exact responsibilities,
    on mixtures whose far components make most responsibilities subnormal or zero."""
    from txm_live.refine import _robust_em

    rng = np.random.default_rng(11)
    checked = 0
    for trial in range(12):
        k = int(rng.integers(2, 5))
        centers = rng.normal(size=(k, d)) * rng.uniform(20.0, 300.0)
        n = int(rng.integers(2000, 20000))
        X = centers[rng.integers(0, k, n)] + rng.normal(size=(n, d)) * rng.uniform(0.3, 2.0)
        X = np.concatenate([X, rng.uniform(X.min(axis=0) - 30, X.max(axis=0) + 30, (n // 30, d))])
        means = [c + rng.normal(size=d) for c in centers]
        covs = [np.eye(d) * rng.uniform(0.5, 3.0) for _ in range(k)]
        weights = [float(v) for v in rng.uniform(1.0, 100.0, k)]
        got = _robust_em(X, [m.copy() for m in means], [c.copy() for c in covs], list(weights), 50)
        ref = _reference_em(X, [m.copy() for m in means], [c.copy() for c in covs], list(weights), 50)
        for a, b in zip(got[0] + got[1], ref[0] + ref[1]):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(got[2], ref[2])
        np.testing.assert_array_equal(got[3].argmax(axis=0), ref[3].argmax(axis=0))
        # the floor was exercised: exact responsibilities below 1e-300 (subnormal or zero)
        checked += int(np.count_nonzero(ref[3] < 1e-300) > 0)
    assert checked >= 6
