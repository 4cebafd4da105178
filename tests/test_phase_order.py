"""Generic phase names and the stable order by edge position, then white-line height."""

from __future__ import annotations

import numpy as np

from txm_live.phase_order import edge_levels, edge_positions, edge_tolerance, phase_names


def _edge(e: np.ndarray, e0: float, wl: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(e - e0))) + wl * np.exp(-0.5 * ((e - e0 - 2.0) / 1.5) ** 2)


def test_edge_positions_and_levels() -> None:
    e = np.arange(7090.0, 7170.0, 0.5)
    spectra = np.stack([_edge(e, 7120.0, 0.5), _edge(e, 7124.0, 0.5), _edge(e, 7120.2, 1.5)])
    pos = edge_positions(e, spectra)
    assert abs(pos[1] - pos[0] - 4.0) < 0.6
    tol = edge_tolerance(e, 7112.0)
    assert 2.0 <= tol < 3.0
    level = edge_levels(pos, tol)
    assert level[0] == level[2] != level[1], "a higher white line alone does not make a higher edge"
    assert np.isnan(edge_positions(e, np.zeros((1, e.size))))[0]


def test_generic_short_names() -> None:
    assert phase_names(np.array([1.2, 1.9]), np.array([0, 0]), np.array([2.5]), np.array([0])) == (
        "phase A (low white line)", "phase B (high white line)", "minority")
    assert phase_names(np.array([1.9, 1.2]), np.array([0, 1]), np.zeros(0), np.zeros(0, int)) == (
        "phase A (lower edge, high white line)", "phase B (higher edge, low white line)")
    assert phase_names(np.array([1.0]), np.array([0]), np.array([1.0, 2.0]), np.array([0, 0]))[0] == "phase A"
    three = phase_names(np.array([1.0, 1.2, 1.4]), np.array([0, 1, 2]), np.zeros(0), np.zeros(0, int),
                        np.array([7120.0, 7122.5, 7125.0]))
    assert three[2] == "phase C (edge 7125.0 eV, white line 1.40)"
    for name in three:
        assert "Nd" not in name and "metal" not in name and "oxide" not in name
