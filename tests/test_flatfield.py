"""Flat/dark correction: optical density, masks, dark averaging and the flat store."""

from __future__ import annotations

import numpy as np
import pytest

from txm_live.flatfield import DarkAverage, FlatStore, optical_density


def _frames(seed: int = 0, shape=(32, 40)):
    rng = np.random.default_rng(seed)
    dark = rng.normal(100, 3, shape).astype(np.float32)
    flat = (rng.uniform(4000, 6000, shape) * 2.5 + dark).astype(np.uint16)
    od = rng.uniform(0.0, 2.0, shape)
    sample = ((flat - dark) * np.exp(-od) + dark).astype(np.uint16)
    return sample, flat, dark


def test_optical_density_matches_float64_formula():
    sample, flat, dark = _frames()
    res = optical_density(sample, flat, dark)
    ref = -np.log((sample.astype(np.float64) - dark) / (flat.astype(np.float64) - dark))
    assert res.od.dtype == np.float32
    assert res.valid.all()
    assert (res.n_zero, res.n_negative, res.n_saturated) == (0, 0, 0)
    np.testing.assert_allclose(res.od, ref, rtol=1e-5, atol=1e-5)


def test_inputs_are_not_modified():
    sample, flat, dark = _frames()
    copies = sample.copy(), flat.copy(), dark.copy()
    optical_density(sample, flat, dark)
    for a, b in zip((sample, flat, dark), copies):
        np.testing.assert_array_equal(a, b)


def test_zero_negative_saturated_pixels_are_masked_and_filled():
    sample, flat, dark = _frames()
    dark = np.full(sample.shape, 100.0, np.float32)
    sample[0, 0] = 100  # zero after dark subtraction
    sample[1, 1] = 90  # negative
    flat[2, 2] = 95  # negative flat
    sample[3, 3] = 65535  # saturated sample
    flat[4, 4] = 65535  # saturated flat
    flat[5, 5] = 100  # zero flat
    res = optical_density(sample, flat, dark, fill=-7.0)
    bad = [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]
    for y, x in bad:
        assert not res.valid[y, x]
        assert res.od[y, x] == -7.0
    assert res.n_invalid == len(bad)
    assert res.n_zero == 2
    assert res.n_negative == 2
    assert res.n_saturated == 2
    assert np.all(np.isfinite(res.od))
    # default fill is 0
    assert optical_density(sample, flat, dark).od[0, 0] == 0.0


def test_saturation_check_can_be_disabled():
    sample, flat, _ = _frames()
    flat[0, 0] = 65535
    assert optical_density(sample, flat, saturation=None).valid[0, 0]
    assert not optical_density(sample, flat).valid[0, 0]


def test_nan_pixels_are_masked_not_propagated():
    sample, flat, dark = _frames()
    s = sample.astype(np.float32)
    s[3, 4] = np.nan
    res = optical_density(s, flat, dark)
    assert not res.valid[3, 4] and res.od[3, 4] == 0.0
    assert np.all(np.isfinite(res.od))


def test_scalar_i0_and_scalar_dark():
    sample = np.full((4, 5), 1100.0)
    res = optical_density(sample, 2000.0, 100.0)  # scalar I0 is dark-free
    np.testing.assert_allclose(res.od, -np.log(1000.0 / 2000.0), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(sample=np.zeros(5), flat=1.0), "sample"),
        (dict(sample=np.zeros((3, 3)), flat=np.ones((3, 4))), "flat"),
        (dict(sample=np.zeros((3, 3)), flat=1.0, dark=np.ones((2, 3))), "dark"),
        (dict(sample=np.array([["a"]]), flat=1.0), "sample"),
    ],
)
def test_invalid_inputs_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        optical_density(**kwargs)


def test_dark_average():
    d = DarkAverage()
    assert d.mean is None
    d.update(np.full((2, 3), 100, np.uint16)).update(np.full((2, 3), 104, np.uint16))
    assert d.count == 2
    np.testing.assert_array_equal(d.mean, np.full((2, 3), 102.0, np.float32))
    with pytest.raises(ValueError, match="image"):
        d.update(np.zeros((3, 3)))


def test_flat_store_exact_nearest_interpolate_and_duplicates():
    s = FlatStore(energy_tolerance=0.05)
    with pytest.raises(KeyError):
        s.lookup(6000.0)
    s.update(6000.0, np.full((2, 2), 10.0))
    s.update(6010.0, np.full((2, 2), 20.0))
    assert s.has(6000.02) and not s.has(6005.0)
    assert s.lookup(6000.01)[0, 0] == 10.0
    assert s.lookup(6004.0)[0, 0] == 10.0
    assert s.lookup(6004.0, mode="interpolate")[0, 0] == pytest.approx(14.0)
    assert s.lookup(5990.0, mode="interpolate")[0, 0] == 10.0  # outside: nearest
    s.update(6010.0, np.full((2, 2), 30.0))  # repeated flat: averaged
    assert s.lookup(6010.0)[0, 0] == pytest.approx(25.0)
    assert len(s) == 2
    np.testing.assert_array_equal(s.energies, [6000.0, 6010.0])
    with pytest.raises(ValueError, match="mode"):
        s.lookup(6000.0, mode="cubic")
    with pytest.raises(ValueError, match="energy"):
        s.update(float("nan"), np.zeros((2, 2)))


def test_flat_store_discard_keeps_the_closest_below():
    s = FlatStore()
    for e in (1.0, 2.0, 3.0, 4.0):
        s.update(e, np.full((1, 1), e))
    assert s.discard_below(3.5) == 2
    np.testing.assert_array_equal(s.energies, [3.0, 4.0])
