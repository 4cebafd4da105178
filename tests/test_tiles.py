"""Pixel-tile stage functions (txm_live.tiles) and normalize_window(rows=) without a cluster."""

from __future__ import annotations

import numpy as np
import pytest

from txm_live.edges import default_windows
from txm_live.normalize import normalize_window
from txm_live.tiles import combine_phase_sums, normalize_tile, phase_sums_tile

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


def test_tile_phase_sums_combine_to_the_whole_image_statistics() -> None:
    E, Y = _spectra(shape=(24, 20), seed=3)
    Y2 = Y.reshape(E.size, -1)
    rng = np.random.default_rng(1)
    cols = np.sort(rng.choice(Y2.shape[1], 300, replace=False))
    lab = rng.integers(0, 3, cols.size)
    norm = normalize_window(E, Y2[:, cols], L3).norm.astype(np.float64)
    mean = np.stack([norm[:, lab == p].mean(axis=1) for p in range(3)])
    std = np.stack([norm[:, lab == p].std(axis=1) for p in range(3)])
    parts = []
    for lo, hi in ((0, 100), (100, 250), (250, 480)):  # three tiles of pixels
        sel = (cols >= lo) & (cols < hi)
        parts.append(phase_sums_tile(Y2[:, lo:hi], E, L3, "athena", cols[sel] - lo,
                                     lab[sel], 3, None))
    got_mean, got_std, counts = combine_phase_sums(parts)
    np.testing.assert_array_equal(counts, np.bincount(lab, minlength=3))
    np.testing.assert_allclose(got_mean, mean, atol=1e-5)  # float32 sums per tile
    np.testing.assert_allclose(got_std, std, atol=1e-4)
