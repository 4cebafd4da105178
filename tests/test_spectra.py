"""Tests of the parametric Nd L3/L2 spectra of the simulator (txm_live.sim.spectra)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import xraydb

from txm_live.sim.spectra import (
    JUMP_L2,
    JUMP_L3,
    L2_OFFSET_EV,
    METAL,
    OXIDE,
    PhaseSpectrum,
    Shell,
    absolute_mu,
    chi_k,
    edge_step_per_um,
    ground_truth_normalized,
    normalized_mu,
)

SCAN = np.arange(6000.0, 7024.0, 1.0)
FINE_L3 = np.arange(6150.0, 6260.0, 0.05)
FINE_L2 = FINE_L3 + L2_OFFSET_EV


def _line(e: np.ndarray, y: np.ndarray, lo: float, hi: float) -> np.poly1d:
    sel = (e >= lo) & (e <= hi)
    return np.poly1d(np.polyfit(e[sel], y[sel], 1))


def _half_height_energy(e: np.ndarray, mu: np.ndarray, pre: np.poly1d) -> float:
    """Energy where mu first rises through half of its peak (white line) above the pre-edge line."""
    y = mu - pre(e)
    y = y / y.max() - 0.5
    i = int(np.flatnonzero(y >= 0)[0])
    return float(e[i - 1] - y[i - 1] * (e[i] - e[i - 1]) / (y[i] - y[i - 1]))


def test_import_is_lazy() -> None:
    code = (
        "import sys, txm_live.sim.spectra as s; "
        "assert s.load_feff_paths.cache_info().currsize == 0; "
        "assert 'xraydb' not in sys.modules, 'xraydb imported at import time'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("phase", "tol"),
    # the oxide is shifted +1 eV on purpose (physics.md), so it gets 1 eV more tolerance
    [(METAL, 1.0), (OXIDE, 2.0)],
)
def test_edge_positions_of_absolute_mu(phase: PhaseSpectrum, tol: float) -> None:
    for fine, e_edge in ((FINE_L3, 6208.0), (FINE_L2, 6722.0)):
        mu = absolute_mu(fine, phase)
        slope = np.gradient(mu, fine)
        e_dmax = float(fine[np.argmax(slope)])
        assert abs(e_dmax - e_edge) <= tol, (phase.name, e_edge, e_dmax)
        pre = _line(fine, mu, e_edge - 55.0, e_edge - 25.0)
        e_half = _half_height_energy(fine[fine < e_edge + 20], mu[fine < e_edge + 20], pre)
        assert abs(e_half - e_edge) <= 1.5, (phase.name, e_edge, e_half)


@pytest.mark.parametrize("phase", [METAL, OXIDE])
def test_l3_l2_absolute_step_ratio(phase: PhaseSpectrum) -> None:
    # Model value.
    ratio_model = edge_step_per_um(phase, edge="L3") / edge_step_per_um(phase, edge="L2")
    assert 2.0 <= ratio_model <= 2.4
    # Measured from the absolute spectrum with Athena-like pre/post lines.
    mu = absolute_mu(SCAN, phase)
    e3, e2 = 6208.0, 6722.0
    step3 = _line(SCAN, mu, e3 + 150, e3 + 440)(e3) - _line(SCAN, mu, e3 - 200, e3 - 60)(e3)
    # L2 pre-edge sits on the L3 post-edge: a line on [e2 - 150, e2 - 30].
    step2 = _line(SCAN, mu, e2 + 60, e2 + 300)(e2) - _line(SCAN, mu, e2 - 150, e2 - 30)(e2)
    ratio = step3 / step2
    assert 2.0 <= ratio <= 2.4, ratio


def test_edge_step_per_um_matches_physics_table() -> None:
    assert edge_step_per_um(METAL) == pytest.approx(0.063, abs=0.002)
    assert edge_step_per_um(OXIDE) == pytest.approx(0.112, abs=0.003)
    nd2o3 = PhaseSpectrum(
        name="Nd2O3", formula="Nd2O3", density_g_cm3=7.24, edge_energy=6209.5,
        white_line_energy=6212.0, white_line_amplitude=2.75, white_line_sigma=1.7, shells=(),
    )
    assert edge_step_per_um(nd2o3) == pytest.approx(0.194, abs=0.005)


@pytest.mark.parametrize("phase", [METAL, OXIDE])
def test_absolute_mu_agrees_with_elam_away_from_the_edges(phase: PhaseSpectrum) -> None:
    energies = np.array([6000.0, 6100.0, 6400.0, 6650.0, 6800.0, 7000.0])
    ours = absolute_mu(energies, phase)
    elam = np.array(
        [xraydb.material_mu(phase.formula, e, density=phase.density_g_cm3) for e in energies]
    ) * 1e-4
    # EXAFS and J3 = 2.77 (Elam: 2.82) make a few % difference above the edge.
    np.testing.assert_allclose(ours, elam, rtol=0.03)


@pytest.mark.parametrize(("phase", "height", "fwhm"), [(METAL, 2.50, 9.0), (OXIDE, 3.55, 6.0)])
def test_white_line_height_and_width(phase: PhaseSpectrum, height: float, fwhm: float) -> None:
    s = normalized_mu(FINE_L3, phase)
    assert s.max() == pytest.approx(height, abs=0.05)
    # the rising arctan step pushes the maximum a little above Ewl
    assert FINE_L3[np.argmax(s)] == pytest.approx(phase.white_line_energy, abs=0.6)
    step = 0.5 + np.arctan(2 * (FINE_L3 - phase.edge_energy) / phase.core_hole_l3) / np.pi
    wl = s - step
    above = FINE_L3[wl > 0.5 * wl.max()]
    assert above[-1] - above[0] == pytest.approx(fwhm, abs=1.0)


def test_oxide_white_line_higher_and_shifted() -> None:
    sm, so = normalized_mu(FINE_L3, METAL), normalized_mu(FINE_L3, OXIDE)
    assert so.max() - sm.max() > 0.9
    assert FINE_L3[np.argmax(so)] - FINE_L3[np.argmax(sm)] == pytest.approx(1.0, abs=0.4)


@pytest.mark.parametrize("phase", [METAL, OXIDE])
def test_l2_is_shifted_scaled_l3(phase: PhaseSpectrum) -> None:
    s2 = normalized_mu(FINE_L2, phase, edge="L2")
    assert FINE_L2[np.argmax(s2)] == pytest.approx(phase.white_line_energy + 514.0, abs=0.6)
    wl_l3 = normalized_mu(FINE_L3, phase).max() - 0.8  # ~0.8 = arctan step at the peak
    assert s2.max() - 0.8 == pytest.approx(0.8 * wl_l3, rel=0.05)
    # far from the edges the shapes are 0 below and ~1 above
    assert abs(normalized_mu(np.array([6000.0]), phase)[0]) < 0.01
    assert normalized_mu(np.array([6600.0]), phase, edge="L3")[0] == pytest.approx(1.0, abs=0.1)


def test_exafs_first_shell_order_in_r_space() -> None:
    """Apparent first-shell distance (k^2, k = 2 - 6.5): metal > mixture > oxide (Duan 2016)."""
    k = np.arange(2.0, 6.5, 0.05)
    r = np.linspace(1.0, 4.0, 301)
    chi_m, chi_o = chi_k(k, METAL.shells), chi_k(k, OXIDE.shells)
    peaks = []
    for chi in (chi_m, 0.5 * chi_m + 0.5 * chi_o, chi_o):
        weighted = np.hanning(k.size) * chi * k**2
        ft = np.abs((weighted[None, :] * np.exp(2j * k[None, :] * r[:, None])).sum(axis=1))
        peaks.append(float(r[np.argmax(ft)]))
    assert peaks[0] > peaks[1] > peaks[2], peaks


def test_exafs_amplitude_is_realistic() -> None:
    e = np.arange(6260.0, 6650.0, 1.0)
    s = normalized_mu(e, METAL)
    # oscillation around the smooth post-edge of a few %, not more than 15 %
    resid = s - np.poly1d(np.polyfit(e, s, 3))(e)
    assert 0.005 < np.abs(resid).max() < 0.15


def test_ground_truth_normalized_mixtures() -> None:
    gt = ground_truth_normalized(SCAN, [0.0, 0.5, 1.0])
    assert gt.shape == (3, SCAN.size)
    np.testing.assert_allclose(gt[0], normalized_mu(SCAN, METAL))
    np.testing.assert_allclose(gt[2], normalized_mu(SCAN, OXIDE))
    np.testing.assert_allclose(gt[1], 0.5 * (gt[0] + gt[2]))
    with pytest.raises(ValueError, match="oxide_fraction"):
        ground_truth_normalized(SCAN, [1.5])


def test_errors_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="edge"):
        normalized_mu(SCAN, METAL, edge="K")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="energies"):
        absolute_mu(np.array([np.nan]), METAL)
    with pytest.raises(ValueError, match="jump_l3"):
        absolute_mu(SCAN, METAL, jump_l3=0.5)
    with pytest.raises(ValueError, match="density_g_cm3"):
        PhaseSpectrum(
            name="x", formula="Nd", density_g_cm3=0.0, edge_energy=6208.0,
            white_line_energy=6210.0, white_line_amplitude=1.0, white_line_sigma=1.0, shells=(),
        )
    with pytest.raises(ValueError, match="shells"):
        PhaseSpectrum(
            name="x", formula="Nd", density_g_cm3=7.0, edge_energy=6208.0,
            white_line_energy=6210.0, white_line_amplitude=1.0, white_line_sigma=1.0,
            shells=(Shell("Nd-Cu", 1.0, 2.0, 0.01),),
        )


def test_shapes_and_dtypes() -> None:
    e2d = SCAN.reshape(32, 32)
    assert normalized_mu(e2d, METAL).shape == (32, 32)
    assert absolute_mu(e2d, OXIDE).shape == (32, 32)
    assert absolute_mu(SCAN, METAL).dtype == np.float64
    assert JUMP_L3 > JUMP_L2 > 1.0
