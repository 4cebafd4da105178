"""Tests of txm_live.decompose: PCA with automatic rank, closed-form 2-reference NNLS, PCA vs LCF."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import nnls
from sklearn.decomposition import PCA

from txm_live.decompose import (
    LcfComparison,
    PcaResult,
    marchenko_pastur_edge,
    nnls_two_references,
    pca_lcf_comparison,
    reduce_pca,
)


def _low_rank(n: int, p: int, rank: int, noise: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, p)) * 0.5
    return (signal + rng.normal(scale=noise, size=(n, p))).astype(np.float32)


@pytest.mark.parametrize("solver", ["covariance", "randomized"])
@pytest.mark.parametrize("rank", [1, 3, 5])
def test_reduce_pca_finds_signal_rank(solver: str, rank: int) -> None:
    X = _low_rank(4000, 80, rank, 0.3, seed=rank)
    res = reduce_pca(X, svd_solver=solver)
    assert isinstance(res, PcaResult)
    assert res.n_components == rank
    assert res.scores.dtype == np.float32 and res.scores.shape == (4000, rank)
    assert res.components.shape == (rank, 80)
    # noise variance estimated to a few percent (true 0.09)
    assert res.noise_variance == pytest.approx(0.09, rel=0.05)
    np.testing.assert_allclose(res.components @ res.components.T, np.eye(rank), atol=1e-4)


def test_reduce_pca_pure_noise_keeps_one_component() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(5000, 60)).astype(np.float32)
    res = reduce_pca(X)
    assert res.n_components == 1
    # all noise eigenvalues lie below the Marchenko-Pastur edge times the margin
    assert res.explained_variance.max() < res.threshold
    assert res.threshold == pytest.approx(1.5 * marchenko_pastur_edge(1.0, 5000, 60), rel=0.05)


def test_reduce_pca_matches_sklearn_for_fixed_components() -> None:
    X = _low_rank(2000, 40, 4, 0.2, seed=7)
    res = reduce_pca(X, n_components=4)
    ref = PCA(n_components=4, svd_solver="full").fit(X.astype(np.float64))
    for k in range(4):
        cos = abs(float(res.components[k] @ ref.components_[k]))
        assert cos > 0.9999
    np.testing.assert_allclose(res.explained_variance[:4], ref.explained_variance_, rtol=1e-3)
    np.testing.assert_allclose(np.abs(res.scores), np.abs(ref.transform(X)), atol=2e-3)
    np.testing.assert_allclose(res.inverse_transform(res.scores), ref.inverse_transform(ref.transform(X)), atol=2e-3)
    assert np.isnan(res.threshold)


def test_reduce_pca_sample_noise_handles_heteroscedastic_rows() -> None:
    """Rows with 10x the noise of others inflate the noise eigenvalues unless weighted."""
    rng = np.random.default_rng(11)
    n, p = 6000, 80
    signal = np.outer(rng.normal(size=n), rng.normal(size=p))
    level = np.where(rng.random(n) < 0.2, 3.0, 0.3)
    X = (signal + rng.normal(size=(n, p)) * level[:, None]).astype(np.float32)
    res = reduce_pca(X, sample_noise=level)
    assert res.n_components == 1
    unweighted = reduce_pca(X)
    assert unweighted.n_components >= 1  # runs; the count is not meaningful without weights
    # scores are projections of the unscaled rows
    np.testing.assert_allclose(res.transform(X[:10]), res.scores[:10], atol=1e-4)


def test_reduce_pca_deterministic_sign_and_dtype() -> None:
    X = _low_rank(1000, 30, 2, 0.1)
    a = reduce_pca(X, n_components=2)
    b = reduce_pca(X[::-1].copy(), n_components=2)
    np.testing.assert_allclose(a.components, b.components, atol=1e-4)
    X64 = X.astype(np.float64)
    assert reduce_pca(X64, n_components=2).scores.dtype == np.float32


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"X": np.zeros(5)}, "X must be 2-D"),
        ({"X": np.zeros((1, 4))}, "at least 2 samples"),
        ({"X": np.full((5, 3), np.nan)}, "finite"),
        ({"X": np.zeros((5, 3)), "n_components": 4}, "n_components"),
        ({"X": np.zeros((5, 3)), "max_components": 0}, "max_components"),
        ({"X": np.zeros((5, 3)), "svd_solver": "arpack"}, "svd_solver"),
        ({"X": np.zeros((5, 3)), "noise_margin": 0.5}, "noise_margin"),
        ({"X": np.zeros((5, 3)), "sample_noise": np.ones(4)}, "sample_noise"),
    ],
)
def test_reduce_pca_validation(kwargs: dict, match: str) -> None:
    X = kwargs.pop("X")
    with pytest.raises(ValueError, match=match):
        reduce_pca(X, **kwargs)


def test_nnls_two_references_equals_scipy_nnls() -> None:
    rng = np.random.default_rng(5)
    n_e = 50
    refs = np.abs(rng.normal(size=(2, n_e))) + np.linspace(0, 1, n_e)
    # mixtures with weights of both signs, so every active set occurs
    w = rng.normal(size=(2, 300))
    Y = (refs.T @ w + rng.normal(scale=0.05, size=(n_e, 300))).astype(np.float32)
    weights, rms = nnls_two_references(Y, refs)
    assert weights.dtype == np.float32 and rms.dtype == np.float32
    for j in range(Y.shape[1]):  # reference solver, test only
        ref_w, ref_res = nnls(refs.T, Y[:, j].astype(np.float64))
        np.testing.assert_allclose(weights[:, j], ref_w, atol=2e-4)
        assert rms[j] == pytest.approx(ref_res / np.sqrt(n_e), abs=2e-4)
    assert (weights >= 0).all()


def test_nnls_two_references_rejects_dependent_references() -> None:
    r = np.linspace(0, 1, 10)
    with pytest.raises(ValueError, match="linearly dependent"):
        nnls_two_references(np.zeros((10, 3)), np.stack([r, 2 * r]))
    with pytest.raises(ValueError, match="references must have shape"):
        nnls_two_references(np.zeros((10, 3)), np.zeros((3, 10)))


def _three_phase_stack(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Energy-major (n_e, H, W) stack: two majority phases and a minority that is a
    linear combination of them with a negative weight (like the Nd oxide vs metal and mixture)."""
    rng = np.random.default_rng(seed)
    e = np.linspace(-20, 60, 81)
    step = 0.5 + np.arctan(e / 2.0) / np.pi
    metal = step + 1.7 * np.exp(-0.5 * ((e - 3) / 3.5) ** 2)
    oxide = step + 2.75 * np.exp(-0.5 * ((e - 4) / 2.2) ** 2)
    mixed = 0.5 * metal + 0.5 * oxide
    H = W = 40
    labels = np.full((H, W), 2)
    labels[:, :18] = 1
    labels[10:14, 25:30] = 3
    spectra = np.stack([mixed, metal, oxide])[labels - 1]  # (H, W, n_e)
    cube = np.moveaxis(spectra, -1, 0) + rng.normal(scale=0.02, size=(e.size, H, W))
    return cube.astype(np.float32), labels, np.stack([metal, mixed])


def test_pca_lcf_comparison_residual_reveals_minority() -> None:
    cube, labels, refs = _three_phase_stack()
    out = pca_lcf_comparison(cube, references=refs)
    assert isinstance(out, LcfComparison)
    assert out.weights.shape == (2, 40, 40) and out.residual_rms.shape == (40, 40)
    minority = labels == 3
    # the minority is (nearly) in the span of 2 PCs: PCA residual is noise everywhere ...
    assert np.nanmax(out.pca_residual_rms) < 0.05
    # ... but not a non-negative mixture of the majority spectra: LCF residual flags it
    assert out.residual_rms[minority].min() > 3 * out.residual_rms[~minority].max()
    # majority pixels get their own reference
    np.testing.assert_allclose(out.fractions[0][labels == 2], 1.0, atol=0.1)
    np.testing.assert_allclose(out.fractions[1][labels == 1], 1.0, atol=0.1)
    assert out.explained_variance_ratio.shape == (2,) and out.explained_variance_ratio.sum() > 0.9


def test_pca_lcf_comparison_default_references_and_mask() -> None:
    cube, labels, refs = _three_phase_stack(1)
    mask = np.ones(labels.shape, dtype=bool)
    mask[0, :] = False
    out = pca_lcf_comparison(cube, mask=mask)
    assert np.isnan(out.residual_rms[0]).all() and np.isfinite(out.residual_rms[1:]).all()
    # k-means references are the two majority means (low white line first)
    np.testing.assert_allclose(out.references, refs, atol=0.1)
    minority = labels == 3
    assert np.nanmin(out.residual_rms[minority]) > 3 * np.nanmax(out.residual_rms[~minority & mask])
    with pytest.raises(ValueError, match="mask must have shape"):
        pca_lcf_comparison(cube, mask=mask[1:])
    with pytest.raises(ValueError, match="references must have shape"):
        pca_lcf_comparison(cube, references=refs[:, 1:])
