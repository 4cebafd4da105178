"""Tests of txm_live.snr: edge-step SNR and the automatic background / particle mask."""

from __future__ import annotations

import numpy as np
import pytest

from txm_live.normalize import normalize_athena
from txm_live.snr import MIN_AUTO_SNR, SnrMask, edge_step_snr, otsu_threshold, snr_mask


def _mixture(n_bg: int, n_particle: int, *, lo: float = 5.0, hi: float = 20.0, seed: int = 0):
    """Background (fitted step ~ N(0, 0.3 noise), SNR ~ 0) and particle pixels with SNR lo..hi."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0.01, 0.03, n_bg + n_particle)
    step = np.empty_like(noise)
    step[:n_bg] = rng.normal(0.0, 0.3, n_bg) * noise[:n_bg]
    step[n_bg:] = rng.uniform(lo, hi, n_particle) * noise[n_bg:]
    truth = np.zeros(noise.size, bool)
    truth[n_bg:] = True
    perm = rng.permutation(noise.size)
    return step[perm], noise[perm], truth[perm]


@pytest.mark.parametrize("frac_particle", [0.05, 0.3, 0.7])
def test_auto_threshold_separates_background_from_particle(frac_particle):
    n = 20000
    step, noise, truth = _mixture(int(n * (1 - frac_particle)), int(n * frac_particle))
    res = snr_mask(step.reshape(100, 200), noise.reshape(100, 200))
    assert isinstance(res, SnrMask)
    assert res.mask.shape == (100, 200) and res.snr.dtype == np.float32
    assert MIN_AUTO_SNR <= res.threshold <= 5.0
    kept = res.mask.ravel()
    assert np.count_nonzero(kept & ~truth) == 0  # no background pixel
    assert np.count_nonzero(kept & truth) >= 0.99 * np.count_nonzero(truth)
    assert res.n_kept == np.count_nonzero(kept)
    assert res.fraction_kept == pytest.approx(res.n_kept / n)


def test_thin_sample_pixels_excluded_by_floor():
    """A continuum of thin-sample pixels (SNR 0.5-3) between background and particle is dropped."""
    rng = np.random.default_rng(3)
    step_bg, noise_bg, _ = _mixture(8000, 0, seed=1)
    noise_thin = np.full(3000, 0.02)
    step_thin = rng.uniform(0.5, 2.9, 3000) * noise_thin
    noise_p = np.full(4000, 0.02)
    step_p = rng.uniform(6, 20, 4000) * noise_p
    res = snr_mask(np.concatenate([step_bg, step_thin, step_p]), np.concatenate([noise_bg, noise_thin, noise_p]))
    assert res.threshold >= MIN_AUTO_SNR
    assert not res.mask[:11000].any()
    assert res.mask[11000:].all()


def test_single_population_is_not_cut_in_half():
    """A field of view covered by sample (one log-normal SNR population) keeps nearly all of it."""
    rng = np.random.default_rng(5)
    snr = np.exp(rng.normal(np.log(11.0), 0.25, 10000))
    res = snr_mask(snr * 0.02, np.full(snr.shape, 0.02))
    assert res.method == "floor" and res.threshold == MIN_AUTO_SNR
    assert res.n_kept >= 0.999 * snr.size


def test_nan_inf_zero_noise_are_safe():
    step, noise, truth = _mixture(5000, 2000)
    step[:10] = np.nan
    step[10:20] = np.inf
    noise[20:30] = 0.0
    noise[30:40] = np.nan
    noise[40:50] = -1.0
    with np.errstate(all="raise"):
        res = snr_mask(step, noise)
    assert not res.mask[:50].any()
    assert np.all(np.isnan(res.snr[:50]))
    assert np.isfinite(res.threshold)
    assert np.count_nonzero(res.mask[50:] & truth[50:]) >= 0.99 * np.count_nonzero(truth[50:])


def test_given_threshold_and_min_step():
    step = np.array([0.05, 0.2, 0.5, 1.0, -1.0])
    noise = np.full(5, 0.05)
    res = snr_mask(step, noise, threshold=3.5)
    assert res.method == "given" and res.threshold == 3.5
    np.testing.assert_array_equal(res.mask, [False, True, True, True, False])
    np.testing.assert_allclose(res.snr, [1, 4, 10, 20, -20])
    res2 = snr_mask(step, noise, threshold=3.5, min_step=0.4)
    np.testing.assert_array_equal(res2.mask, [False, False, True, True, False])


def test_all_nan_falls_back_to_floor():
    res = snr_mask(np.full((3, 3), np.nan), np.ones((3, 3)))
    assert res.n_kept == 0 and res.method == "floor"


def test_bad_inputs_name_the_parameter():
    with pytest.raises(ValueError, match="noise"):
        snr_mask(np.ones(4), np.ones(5))
    with pytest.raises(ValueError, match="edge_step"):
        snr_mask(np.float64(1.0), np.float64(1.0))
    with pytest.raises(ValueError, match="threshold"):
        snr_mask(np.ones(4), np.ones(4), threshold=float("nan"))
    with pytest.raises(ValueError, match="min_step"):
        snr_mask(np.ones(4), np.ones(4), min_step=float("inf"))
    with pytest.raises(ValueError, match="edge_step"):
        snr_mask(np.array(["a", "b"]), np.ones(2))
    with pytest.raises(ValueError, match="values"):
        otsu_threshold(np.array([1.0]))


def test_otsu_two_spikes():
    v = np.r_[np.zeros(100), np.ones(300)]
    t, sep = otsu_threshold(v)
    assert 0.0 < t <= 1.0 and sep == pytest.approx(1.0)


def test_end_to_end_with_normalize_on_synthetic_image():
    """Pixels with and without an edge, normalized by normalize_athena, separated by snr_mask; the
    measured SNR matches the simulated one (edge step / per-point noise)."""
    rng = np.random.default_rng(11)
    e = np.arange(6000.0, 6650.0, 1.0)
    x = e - 6208.0
    edge = 0.5 + np.arctan(2 * x / 3.65) / np.pi
    h, w = 30, 40
    yy, xx = np.mgrid[:h, :w]
    particle = (yy - 15) ** 2 + (xx - 20) ** 2 < 10**2
    sigma = 0.02
    step = np.where(particle, 0.25, 0.0)  # SNR 12.5
    cube = 0.3 + step[None] * edge[:, None, None] + rng.normal(0, sigma, (e.size, h, w))
    nrm = normalize_athena(e, cube.astype(np.float32), e0=6208.0)
    res = snr_mask(nrm.edge_step, nrm.pre_edge_noise)
    np.testing.assert_array_equal(res.mask, particle)
    assert np.median(res.snr[particle]) == pytest.approx(12.5, rel=0.1)
    assert np.allclose(edge_step_snr(nrm.edge_step, nrm.pre_edge_noise), res.snr, equal_nan=True)


def test_otsu_raises_threshold_above_floor_when_background_fakes_steps():
    """Flat-field structure can give background pixels |SNR| up to ~5; with bright particle pixels
    (SNR 15-40) Otsu moves the threshold above the floor and drops most of those false positives."""
    rng = np.random.default_rng(0)
    nb, npart = 12000, 8000
    noise = np.full(nb + npart, 0.02)
    step = np.r_[rng.normal(0, 1.5, nb), rng.uniform(15, 40, npart)] * noise
    truth = np.r_[np.zeros(nb, bool), np.ones(npart, bool)]
    res = snr_mask(step, noise)
    assert res.method == "otsu" and res.threshold > MIN_AUTO_SNR
    floor_false = np.count_nonzero((step / noise >= MIN_AUTO_SNR) & ~truth)
    assert np.count_nonzero(res.mask & ~truth) < 0.2 * floor_false
    assert res.mask[truth].all()
