"""Pixel-tile stage functions (txm_live.tiles) and normalize_window(rows=) without a cluster."""

from __future__ import annotations

import numpy as np
import pytest

from txm_live.edges import default_windows
from txm_live.normalize import normalize_window
from txm_live.tiles import normalize_tile

L3 = default_windows("Nd", ("L3",))[0]


def _spectra(shape=(30, 40), seed=0):
    E = np.arange(np.ceil(L3.start), L3.end + 1e-9, 1.0)
    rng = np.random.default_rng(seed)
    step = rng.uniform(0.2, 1.0, shape).astype(np.float32)
    Y = (E > L3.e0)[:, None, None] * step + rng.normal(0, 0.01, (E.size, *shape)).astype(np.float32)
    Y += ((E - L3.e0) * 1e-4)[:, None, None]
    return E, Y.astype(np.float32)


@pytest.mark.parametrize("kw", [{}, {"flatten": True}, {"method": "mback"}, {"post_order": 1}])
def test_normalize_rows_are_exactly_those_of_the_full_normalization(kw) -> None:
    E, Y = _spectra()
    rows = slice(150, 260)
    full = normalize_window(E, Y, L3, **kw)
    part = normalize_window(E, Y, L3, rows=rows, **kw)
    assert part.norm.shape == (110, *Y.shape[1:])
    np.testing.assert_array_equal(part.norm, full.norm[rows])
    np.testing.assert_array_equal(part.edge_step, full.edge_step)
    np.testing.assert_array_equal(part.pre_coefficients, full.pre_coefficients)


def test_normalize_tile_marks_non_finite_pixels_and_keeps_feature_rows() -> None:
    E, Y = _spectra()
    Y[5, 2, 3] = np.nan
    f_rows = slice(180, 261)
    finite, step, noise, z, coef, feat = normalize_tile(Y, E, L3, "athena", f_rows)
    assert finite.shape == (Y.shape[1] * Y.shape[2],) and not finite[2 * Y.shape[2] + 3]
    assert finite.sum() == finite.size - 1
    ref = normalize_window(E, Y.reshape(E.size, -1), L3)
    np.testing.assert_array_equal(feat, ref.norm[f_rows])
    assert step.dtype == noise.dtype == z.dtype == coef.dtype == feat.dtype == np.float32


def test_tile_phase_stats_combine_to_the_whole_image_statistics() -> None:
    """Per-tile phase statistics (in-process kernel on each tile, phases missing from a tile
    included) pool to the statistics of the whole image."""
    from txm_live.tiles import combine_phase_stats, tile_normalize, tile_window_phase_stats

    E, Y = _spectra(shape=(24, 20), seed=3)
    Y2 = Y.reshape(E.size, -1)
    rng = np.random.default_rng(1)
    cols = np.sort(rng.choice(Y2.shape[1], 300, replace=False))
    lab = rng.integers(0, 3, cols.size)
    lab[cols < 100] = np.minimum(lab[cols < 100], 1)  # phase 2 absent from the first tile
    norm = normalize_window(E, Y2[:, cols], L3, post_order=1).norm.astype(np.float64)
    mean = np.stack([norm[:, lab == p].mean(axis=1) for p in range(3)])
    std = np.stack([norm[:, lab == p].std(axis=1) for p in range(3)])
    f_rows = slice(100, 180)
    for method in ("athena", "mback"):
        parts = []
        for lo, hi in ((0, 100), (100, 250), (250, 480)):  # three tiles of pixels
            sel = (cols >= lo) & (cols < hi)
            tn = tile_normalize(Y2[:, lo:hi], E, L3, method, f_rows, 1)
            parts.append(tile_window_phase_stats(Y2[:, lo:hi], tn, E, L3, method, cols[sel] - lo, lab[sel], 1))
        got_mean, got_std, counts = combine_phase_stats(parts, 3)
        np.testing.assert_array_equal(counts, np.bincount(lab, minlength=3))
        if method == "athena":
            np.testing.assert_allclose(got_mean, mean, atol=1e-5)  # float32 normalization per pixel
            np.testing.assert_allclose(got_std, std, atol=1e-4)
        else:
            assert np.isfinite(got_mean).all() and (got_std >= 0).all()

def test_tile_sigma_filter_with_halo_rows_equals_the_whole_image_filter() -> None:
    """Each row band filtered with the halo rows of its neighbours (tile_border, assembled as the
    client does, across a band of a single row) gives exactly the in-process sigma filter of the
    whole image, at every number of passes' halo (SIGMA_FILTER_PASSES rows)."""
    from txm_live.phases import sigma_filter
    from txm_live.tiled_edge import _halo
    from txm_live.tiles import tile_border, tile_sigma_filter

    rng = np.random.default_rng(5)
    H, W, k = 23, 17, 3
    pix = np.flatnonzero(rng.random(H * W) < 0.8)  # holes: masked pixels
    scores = (rng.normal(size=(pix.size, k)) + (pix[:, None] % W > W // 2) * 4).astype(np.float32)
    rms = rng.uniform(0.5, 1.5, pix.size)
    ref = sigma_filter(scores, pix, (H, W), rms.astype(np.float32))
    bands = [slice(0, 5), slice(5, 6), slice(6, 14), slice(14, 23)]  # one band of a single row
    parts, cols = [], []
    for b in bands:
        sel = (pix >= b.start * W) & (pix < b.stop * W)
        parts.append((scores[sel], rms[sel]))
        cols.append(pix[sel] - b.start * W)
    border = [tile_border(parts[i], cols[i], W, b.stop - b.start) for i, b in enumerate(bands)]
    got = [tile_sigma_filter(parts[i], cols[i], b.stop - b.start, W, -np.inf, _halo(border, i, -1), _halo(border, i, +1))
           for i, b in enumerate(bands)]
    np.testing.assert_array_equal(np.concatenate(got), ref)


def test_band_sums_give_the_pca_of_the_whole_matrix_bit_for_bit() -> None:
    """Per-band weighted sums and Gram matrices, added in band order, give exactly the
    components of reduce_pca accumulated over the same bands (the Dask path's PCA)."""
    from txm_live.decompose import (_sample_weights, covariance_part, pca_from_covariance, reduce_pca,
                                    weighted_sum_part)

    rng = np.random.default_rng(2)
    n, p = 5000, 12
    X = (rng.normal(size=(n, p)) + np.outer(rng.normal(size=n) * 3, rng.normal(size=p))).astype(np.float32)
    noise = rng.uniform(0.5, 2.0, n)
    bands = [slice(0, 1000), slice(1000, 1001), slice(1001, 3500), slice(3500, n)]
    ref = reduce_pca(X, sample_noise=noise, max_components=4, row_chunks=bands)
    w = _sample_weights(noise, n)
    w2 = w * w
    mean = np.zeros(p)
    for b in bands:
        mean += weighted_sum_part(X[b], w2[b])
    mean /= w2.sum()
    cov = np.zeros((p, p))
    for b in bands:
        cov += covariance_part(X[b], mean, w[b])
    got = pca_from_covariance(cov / (n - 1), mean, n_samples=n, max_components=4)
    assert got.n_components == ref.n_components
    np.testing.assert_array_equal(got.explained_variance, ref.explained_variance)
    np.testing.assert_array_equal(got.components, ref.components)
    np.testing.assert_array_equal(got.mean, ref.mean)
    np.testing.assert_array_equal(np.concatenate([got.transform(X[b]) for b in bands]), ref.scores)
    other = reduce_pca(X, sample_noise=noise, max_components=4)  # default 65536-row blocks
    np.testing.assert_allclose(other.components, ref.components, atol=1e-5)
