"""Element and edge detection (txm_live.detect) on measured reference spectra (../shared)."""

from __future__ import annotations

import numpy as np
import pytest

import txm_live_test_helpers as helpers  # tests/helpers.py, loaded by tests/conftest.py
from txm_live.detect import DetectedEdge, detect_edges, edges_in_range
from txm_live.errors import EdgeDetectionError


def _fe_k_lfp() -> tuple[np.ndarray, np.ndarray]:
    data = np.loadtxt(helpers.need(helpers.REFERENCE / "FeK_library_HXN.nor"), comments="#")
    return data[:, 0], 0.3 + 0.8 * data[:, 7]  # LiFePO4 column, as an optical density


def test_edges_in_range_in_acquisition_order() -> None:
    assert edges_in_range("Nd", 6000.0, 7200.0) == ("L3", "L2", "L1")
    assert edges_in_range("Fe", 700.0, 730.0) == ("L3", "L2")
    assert edges_in_range("Fe", 7000.0, 7500.0) == ("K",)
    assert edges_in_range("Fe", 100.0, 600.0) == ()
    with pytest.raises(ValueError, match="emin"):
        edges_in_range("Fe", 800.0, 700.0)


def test_fe_k_standard_is_fe_k() -> None:
    e, mu = _fe_k_lfp()
    (found,) = detect_edges(e, mu)
    assert isinstance(found, DetectedEdge)
    assert (found.element, found.edge, found.e0) == ("Fe", "K", 7112.0)
    assert 0.5 < found.jump < 1.5


@pytest.mark.parametrize(("name", "expected"), [("CeO2.xdi", ("Ce", "L3")), ("CePO4.xdi", ("Ce", "L3")),
                                               ("Eu2O3_eu_l3_001.xdi", ("Eu", "L3")),
                                               ("EuO_eu_l3_001.xdi", ("Eu", "L3"))])  # Eu2+: 6.5 eV below e0
def test_rare_earth_l3_standards(name: str, expected: tuple[str, str]) -> None:
    e, mu = helpers.reference_xdi(name)
    found = detect_edges(e, mu)
    assert [(d.element, d.edge) for d in found] == [expected]


def test_real_stxm_fe_l3_l2_with_and_without_element() -> None:
    d = np.load(helpers.need(helpers.STXM_FE_STACK))
    counts = d["counts"].reshape(d["counts"].shape[0], -1).astype(np.float64)
    i0 = np.sort(counts, axis=1)[:, -450:].mean(axis=1)
    mean_od = -np.log(counts / i0[:, None]).mean(axis=1)
    for element in (None, "Fe"):
        found = detect_edges(d["energy_ev"], mean_od, element=element)
        assert [(x.element, x.edge) for x in found] == [("Fe", "L3"), ("Fe", "L2")], found


def test_ambiguous_jump_lists_the_candidates() -> None:
    """A K-edge spectrum moved to 12.66 keV: Se K and Tl L3 are both tabulated at 12658 eV."""
    e, mu = _fe_k_lfp()
    e_moved = e + (12658.0 - 7112.0)
    with pytest.raises(EdgeDetectionError, match=r"Se K \(12658\.0 eV\).*Tl L3|Tl L3 \(12658\.0 eV\).*Se K"):
        detect_edges(e_moved, mu)
    (se,) = detect_edges(e_moved, mu, element="Se")
    assert (se.element, se.edge) == ("Se", "K")


def test_flat_spectrum_and_bad_inputs() -> None:
    e = np.linspace(7000.0, 7300.0, 200)
    flat = 0.5 + np.random.default_rng(0).normal(0, 0.01, e.size)
    with pytest.raises(EdgeDetectionError, match="no significant absorption jump"):
        detect_edges(e, flat)
    with pytest.raises(ValueError, match="mean_od"):
        detect_edges(e, flat[:-1])
