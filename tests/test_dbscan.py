"""txm_live.dbscan must return exactly scikit-learn's DBSCAN labels."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import DBSCAN

from txm_live.dbscan import dbscan


def _sk(X: np.ndarray, eps: float, ms: int) -> np.ndarray:
    return DBSCAN(eps=eps, min_samples=ms).fit_predict(X)


def _check(X: np.ndarray, eps: float, ms: int) -> np.ndarray:
    got = dbscan(X, eps=eps, min_samples=ms)
    ref = _sk(X, eps, ms)
    assert got.shape == ref.shape
    assert got.dtype == np.intp
    np.testing.assert_array_equal(got, ref)
    return got


def _quantile_eps(X: np.ndarray, q: float, rng: np.random.Generator) -> float:
    sub = X[rng.choice(len(X), min(len(X), 300), replace=False)]
    dist = np.sqrt(((sub[:, None, :] - sub[None, :, :]) ** 2).sum(-1))
    return float(np.quantile(dist[np.triu_indices(len(sub), 1)], q))


@pytest.mark.parametrize("d", range(1, 9))
def test_random_gaussian_equals_sklearn(d: int) -> None:
    rng = np.random.default_rng(d)
    X = rng.normal(size=(3000, d))
    for q, ms in ((0.02, 2 * d), (0.05, 5), (0.01, 3)):
        _check(X, _quantile_eps(X, q, rng), ms)


@pytest.mark.parametrize("d", [2, 3, 5, 8])
def test_blobs_with_noise_equal_sklearn(d: int) -> None:
    rng = np.random.default_rng(100 + d)
    centres = np.zeros((3, d))
    centres[1, 0] = 6.0
    centres[2, :2] = (3.0, 4.0)
    X = np.concatenate(
        [
            rng.normal(centres[0], 1.0, (3000, d)),
            rng.normal(centres[1], 0.8, (2000, d)),
            rng.normal(centres[2], 0.5, (300, d)),
            rng.uniform(-4, 10, (200, d)),
        ]
    )
    X = X[rng.permutation(len(X))]
    k = 2 * d
    # eps around the knee of the k-distance curve, and a smaller and a larger one
    from scipy.spatial import cKDTree

    kd = np.sort(cKDTree(X).query(X[:2000], k=k)[0][:, -1])
    for q in (0.5, 0.95):
        labels = _check(X, float(kd[int(q * (len(kd) - 1))]), k)
        assert labels.max() >= 0


def test_integer_grid_ties_at_exactly_eps() -> None:
    g = np.stack(np.meshgrid(np.arange(12), np.arange(12), np.arange(4), indexing="ij"), -1)
    X = g.reshape(-1, 3).astype(float)
    rng = np.random.default_rng(1)
    X = np.concatenate([X, X[rng.choice(len(X), 100)]])  # duplicates too
    X = X[rng.permutation(len(X))]
    for eps in (1.0, np.sqrt(2.0), np.sqrt(3.0), 2.0):
        for ms in (1, 3, 5, 7, 8, 9, 12):
            _check(X, float(eps), ms)


def test_sparse_grid_ties_in_high_dimension() -> None:
    rng = np.random.default_rng(2)
    for d in (4, 6, 8):
        X = rng.integers(0, 4, size=(1500, d)).astype(float) * 0.5
        for eps in (0.5, 1.0, float(np.sqrt(0.5))):
            for ms in (2, 4, 9):
                _check(X, eps, ms)


def test_duplicates_and_min_samples_one() -> None:
    rng = np.random.default_rng(3)
    X = np.repeat(rng.normal(size=(300, 3)), rng.integers(1, 6, 300), axis=0)
    X = X[rng.permutation(len(X))]
    for ms in (1, 2, 4, 6):
        _check(X, 0.3, ms)
    # every point its own cluster when eps is tiny and min_samples=1
    Y = rng.normal(size=(500, 2))
    labels = _check(Y, 1e-9, 1)
    assert labels.max() == 499


def test_all_noise_and_one_cluster() -> None:
    rng = np.random.default_rng(4)
    X = rng.uniform(0, 1000, size=(2000, 4))
    labels = _check(X, 1e-3, 3)
    assert np.all(labels == -1)
    labels = _check(X, 1e4, 3)
    assert np.all(labels == 0)


def test_float32_input() -> None:
    rng = np.random.default_rng(5)
    X = np.concatenate([rng.normal(0, 1, (3000, 3)), rng.normal(4, 1, (3000, 3))]).astype(np.float32)
    _check(X, 0.2, 8)
    _check(X, 0.35, 8)


def test_tiny_inputs() -> None:
    assert dbscan(np.zeros((0, 3)), eps=1.0, min_samples=2).shape == (0,)
    np.testing.assert_array_equal(dbscan(np.zeros((1, 3)), eps=1.0, min_samples=1), [0])
    np.testing.assert_array_equal(dbscan(np.zeros((1, 3)), eps=1.0, min_samples=2), [-1])
    X = np.array([[0.0], [0.5], [3.0], [3.4], [10.0]])
    _check(X, 0.6, 2)
    _check(X, 0.6, 1)


def test_border_point_joins_lowest_numbered_cluster() -> None:
    # two dense clusters left and right; one border point between them within eps of both
    left = np.array([[-1.0, 0.0], [-1.1, 0.0], [-1.2, 0.0], [-1.05, 0.05]])
    right = -left
    border = np.array([[0.0, 0.0]])
    for X in (np.vstack([left, border, right]), np.vstack([right, border, left]),
              np.vstack([border, right, left])):
        _check(X, 1.0, 4)


def test_large_dense_group_pairs() -> None:
    # two huge dense blobs whose only link is a thin bridge: exercises the exact pair check
    rng = np.random.default_rng(6)
    a = rng.normal(0, 0.05, (8000, 2))
    b = rng.normal(0, 0.05, (8000, 2)) + [1.0, 0]
    bridge = np.stack([np.linspace(0.1, 0.9, 40), np.zeros(40)], 1)
    X = np.vstack([a, b, bridge])[rng.permutation(16040)]
    _check(X, 0.021, 3)
    _check(X, 0.03, 3)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"eps": 0.0, "min_samples": 2}, "eps"),
        ({"eps": -1.0, "min_samples": 2}, "eps"),
        ({"eps": float("nan"), "min_samples": 2}, "eps"),
        ({"eps": 1.0, "min_samples": 0}, "min_samples"),
        ({"eps": 1.0, "min_samples": 2.5}, "min_samples"),
    ],
)
def test_parameter_validation(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        dbscan(np.zeros((4, 2)), **kwargs)


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="X"):
        dbscan(np.zeros(5), eps=1.0, min_samples=2)
    with pytest.raises(ValueError, match="X"):
        dbscan(np.array([[0.0, np.nan]]), eps=1.0, min_samples=2)
    with pytest.raises(ValueError, match="X"):
        dbscan(np.zeros((3, 0)), eps=1.0, min_samples=2)


def test_exact_pair_check_of_huge_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    # force the tree-based path of the exact group-pair check
    import txm_live.dbscan as mod

    monkeypatch.setattr(mod, "_PAIR_BUDGET", 4)
    rng = np.random.default_rng(8)
    X = np.concatenate([rng.normal(0, 0.05, (600, 2)), rng.normal(0, 0.05, (600, 2)) + [0.3, 0]])
    for eps, ms in ((0.03, 3), (0.06, 5)):
        _check(X, eps, ms)
    _check(_far_representatives(), 0.1, 3)


def _far_representatives() -> np.ndarray:
    # two dense 1-D groups whose first (representative) points are > eps apart while their
    # facing ends are within eps: only the exact group-pair check can join them
    a = np.linspace(0.0, 0.09, 10)
    b = np.linspace(0.19, 0.15, 10)
    return np.concatenate([a, b])[:, None]


def test_far_representatives_joined_exactly() -> None:
    _check(_far_representatives(), 0.1, 3)
    _check(_far_representatives(), 0.05, 3)


def test_negligible_eps_and_huge_range() -> None:
    rng = np.random.default_rng(9)
    X = np.concatenate([rng.normal(size=(500, 3)) * 1e12, np.zeros((5, 3))])
    _check(X, 1e-3, 2)
    _check(X, 1e-3, 1)


def test_dense_cells_at_the_grid_edge_not_joined_by_wrapped_keys() -> None:
    # eps = 1 in 2-D: cells of side ~0.707. Clump A sits in the last row of column 0, clump B
    # in the first row of column 1, so A's key + 1 is B's key: the adjacent-cell lookup of
    # dense cells proposes (A, B), which the exact representative check must reject.
    rng = np.random.default_rng(11)
    a = np.array([0.1, 10.0]) + rng.uniform(0.0, 0.01, size=(20, 2))
    b = np.array([0.85, 0.1]) + rng.uniform(0.0, 0.01, size=(20, 2))
    X = np.concatenate([a, b, [[0.1, 0.1]]])  # the lone point fixes the grid origin
    labels = _check(X, 1.0, 5)
    assert labels[:20].max() == labels[:20].min() != labels[20:40].min()
    # 3-D and 4-D: wrapped keys along every axis, plus a chain of dense cells that is one
    # cluster only through cell adjacency
    for d in (3, 4):
        chain = np.zeros((60, d))
        chain[:, 0] = np.repeat(np.arange(6) * 0.45, 10) + rng.uniform(0, 0.01, 60)
        far = np.full((15, d), 7.3) + rng.uniform(0, 0.01, size=(15, d))
        far[:, 0] = 0.0
        _check(np.concatenate([chain, far]), 1.0, 5)


def test_package_level_function_is_the_exact_dbscan() -> None:
    """``txm_live.dbscan(X, eps=..., min_samples=...)`` is the public entry point (issue contract):
    the module is callable and is imported lazily by the package."""
    import txm_live

    X = np.random.default_rng(7).normal(size=(1500, 3))
    expected = DBSCAN(eps=0.35, min_samples=6).fit_predict(X)
    np.testing.assert_array_equal(txm_live.dbscan(X, eps=0.35, min_samples=6), expected)


def test_one_feature_equals_sklearn() -> None:
    """d = 1 (the full-size Nd L3 case clusters one principal component): the group pairs are
    decided from the interval ends; ties, duplicates and rounded values as scikit-learn."""
    rng = np.random.default_rng(8)
    for t in range(12):
        X = np.concatenate([rng.normal(0, 1, 3000), rng.normal(6, 0.5, 2000), rng.uniform(-5, 12, 300)])
        if t % 3 == 0:
            X = np.round(X, 2)  # many exact ties and pairs at exactly eps
        X = X[:, None]
        eps = [0.01, 0.05, 0.1, 0.3][t % 4]
        ms = [3, 5, 10][t % 3]
        np.testing.assert_array_equal(dbscan(X, eps=eps, min_samples=ms), DBSCAN(eps=eps, min_samples=ms).fit(X).labels_)


def test_one_feature_engine_equals_the_general_engine_and_sklearn() -> None:
    """The sorted one-feature engine (``_dbscan_1d``) against scikit-learn (labels and core points)
    and against the general grid/KD-tree engine run on the same points with a zero second feature
    (identical distances): duplicates, pairs at exactly eps, a large offset (eps tiny against the
    values), min_samples 1 and a sample of 40 000 points."""
    rng = np.random.default_rng(21)
    cases = []
    for t in range(24):
        n = int(rng.integers(5, 600))
        x = [rng.normal(size=n), rng.integers(0, 40, n) * 0.25, np.round(rng.normal(size=n), 2),
             1e7 + np.round(rng.normal(size=n), 3)][t % 4]
        cases.append((x, [0.25, 0.01, 0.5, 0.002][t % 4], [1, 3, 7, 12][t % 4]))
    big = np.concatenate([rng.normal(0, 1, 25000), rng.normal(5, 0.3, 15000)]).astype(np.float32).astype(np.float64)
    cases.append((big, 0.01, 11))
    for x, eps, ms in cases:
        X = x[:, None]
        labels, core = dbscan(X, eps=eps, min_samples=ms, return_core=True)
        general = dbscan(np.c_[x, np.zeros_like(x)], eps=eps, min_samples=ms, return_core=True)
        np.testing.assert_array_equal(labels, general[0])
        np.testing.assert_array_equal(core, general[1])
        if x.size < 1000:
            sk = DBSCAN(eps=eps, min_samples=ms).fit(X)
            np.testing.assert_array_equal(labels, sk.labels_)
            np.testing.assert_array_equal(core, sk.core_sample_indices_)
