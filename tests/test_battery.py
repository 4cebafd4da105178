"""The Fe K-edge battery sample: measured standards on an absolute scale, the phantom, and its scan.

The scan tests run the simulated TXM (real ophyd devices, real RunEngine) across the Fe K edge of
a 96 x 96 LiFePO4 / FePO4 / magnetite particle and analyse it live with
:class:`~txm_live.callbacks.live.XanesLiveCallback`, once told ``element="Fe", edges=("K",)`` and
once told nothing (the start document carries neither: the edge is detected from the data).
"""

from __future__ import annotations

import numpy as np
import pytest
import xraydb

from txm_live.sim.battery import BatteryPhantom, make_battery_phantom
from txm_live.sim.standards import (
    EXTEND_PRE_EV,
    FE3O4,
    FEPO4,
    LIFEPO4,
    LINIO2,
    NIO,
    fe_k_energies,
    load_standard,
    ni_k_energies,
    standards_source,
)

SHAPE = (96, 96)
N_DARK = 5
MATERIALS = (LIFEPO4, FEPO4, FE3O4, LINIO2, NIO)


def test_standards_ship_with_their_licence() -> None:
    from importlib import resources

    src = standards_source()
    assert src["source"].endswith("stetef/nano-XANES-microscopy-of-Fe")
    assert "MIT License" in src["license"] and "stetef" in src["copyright"]
    licence = resources.files("txm_live.sim").joinpath("data/LICENSE-nano-XANES-microscopy-of-Fe.txt").read_text()
    assert "Permission is hereby granted" in licence


@pytest.mark.parametrize("name, lo, hi", [("LiFe(II)PO4", 7090, 7200), ("Fe(III)PO4", 7090, 7200),
                                          ("Magnetite", 7090, 7200), ("LiNiO2", 8200, 9000), ("NiO", 8200, 9000)])
def test_standards_are_measured_and_extended_without_invented_structure(name: str, lo: float, hi: float) -> None:
    s = load_standard(name)
    assert s.measured_range == pytest.approx((lo, hi), abs=1.0)
    # Inside: the measured values themselves (interpolation is exact on the grid).
    np.testing.assert_array_equal(s(s.energy), s.mu)
    # Below: 0 (the normalized pre-edge line) beyond EXTEND_PRE_EV, continuous at the first point.
    assert np.all(s(np.array([lo - EXTEND_PRE_EV - 1.0, lo - 100.0])) == 0.0)
    assert abs(float(s(np.array([lo - 0.01]))[0]) - float(s.mu[0])) < 0.01
    # Above: relaxes monotonically to 1 (the edge step), continuous at the last point.
    above = s(np.array([hi + 0.01, hi + 50.0, hi + 300.0]))
    assert abs(above[0] - float(np.mean(s.mu[s.energy >= hi - 5.0]))) < 0.01
    assert abs(above[2] - 1.0) < 1e-3
    # A white line well above 1 sits inside the measured range.
    assert float(s.mu.max()) > 1.2


@pytest.mark.parametrize("material", MATERIALS, ids=lambda m: m.name)
def test_absolute_scale_matches_xraydb(material) -> None:
    e0 = xraydb.xray_edge(material.element, "K").energy
    below, above = xraydb.material_mu(material.formula, [e0 - 0.01, e0 + 0.01], density=material.density_g_cm3) * 1e-4
    # Edge step per um at the tabulated edge: within 1 % of xraydb (only the power-law fits differ).
    assert material.edge_step_per_um() == pytest.approx(above - below, rel=0.01)
    # Far from the edge the model IS xraydb's attenuation, within 2 % (fits; no EXAFS there).
    e = np.array([e0 - 100.0, e0 + 500.0])
    ref = xraydb.material_mu(material.formula, e, density=material.density_g_cm3) * 1e-4
    np.testing.assert_allclose(material.mu(e), ref, rtol=0.02)


@pytest.fixture(scope="module")
def phantom() -> BatteryPhantom:
    return make_battery_phantom(SHAPE, seed=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("size", [96, 160])
def test_ground_truth_fractions(seed: int, size: int) -> None:
    p = make_battery_phantom((size, size), seed=seed)
    assert p.label_names == {0: "background", 1: "LiFePO4", 2: "FePO4", 3: "magnetite"}
    f = p.phase_fractions()
    assert 0.025 <= f[3] <= 0.035, f  # "about 3 % magnetite"
    assert 0.28 <= f[2] <= 0.40, f  # FePO4 rim and crack faces
    assert f[1] == pytest.approx(1.0 - f[2] - f[3])
    assert np.count_nonzero(p.labels == 3) >= 100 * (size / 96) ** 2
    share = p.absorber_fraction()
    for k in (1, 2, 3):  # each label holds the majority of the column's Fe, mostly far more
        sel = p.labels == k
        assert share[k - 1][sel].min() >= 1.0 / 3.0
        assert np.median(share[k - 1][sel]) >= 0.85
    assert np.all(p.thickness_um[~p.particle] == 0) and p.thickness_um.max() <= 5.0 * 1.01


def test_optical_density_is_thickness_times_xraydb(phantom: BatteryPhantom) -> None:
    share = phantom.absorber_fraction()
    pure = (share[0] > 0.999) & (phantom.thickness_um > 1.0)
    t = phantom.thickness_um[pure].astype(np.float64)
    for e in (7000.0, 7420.0):  # pre-edge, and post-edge beyond the measured range (xraydb)
        ref = xraydb.material_mu(LIFEPO4.formula, e, density=LIFEPO4.density_g_cm3) * 1e-4
        np.testing.assert_allclose(phantom.optical_density(e)[pure], t * ref, rtol=0.03)
    # Edge step per um of the LiFePO4 core, within a few % of xraydb's jump.
    jump = (phantom.optical_density(7300.0)[pure] - phantom.optical_density(7085.0)[pure]) / t
    e0 = xraydb.xray_edge("Fe", "K").energy
    lo, hi = xraydb.material_mu("LiFePO4", [e0 - 0.01, e0 + 0.01], density=3.60) * 1e-4
    assert np.median(jump) == pytest.approx(hi - lo, rel=0.10)  # 7085/7300 eV are 27/188 eV off the edge
    od = phantom.optical_density(7125.0)
    assert od.dtype == np.float32 and od.shape == SHAPE
    od[:] = -1.0  # returned frames are the caller's
    assert phantom.optical_density(7125.0).min() >= 0.0


def test_deterministic_by_seed() -> None:
    a, b, c = (make_battery_phantom(SHAPE, seed=s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.path_um, b.path_um)
    assert not np.array_equal(a.labels, c.labels)
    assert not a.labels.flags.writeable and not a.path_um.flags.writeable


def test_nickel_pair() -> None:
    p = make_battery_phantom(SHAPE, seed=0, materials=(LINIO2, NIO))
    assert (p.element, p.edge) == ("Ni", "K")
    assert set(np.unique(p.labels)) == {0, 1, 2}
    e = ni_k_energies()
    assert e.size == 101 and 8200 < e[0] < e[-1] < 8800
    assert np.count_nonzero(np.diff(e) < 1.5) >= 70  # 1 eV steps across the edge
    od = p.optical_density_stack(e[[0, -1]])
    assert np.all(od[1][p.particle] > od[0][p.particle])  # above the edge absorbs more


@pytest.mark.parametrize("kwargs, match", [
    ({"shape": (16, 16)}, "shape"), ({"seed": -1}, "seed"), ({"materials": (LIFEPO4,)}, "materials"),
    ({"materials": (LIFEPO4, NIO)}, "materials"), ({"inclusion_fraction": 0.5}, "inclusion_fraction"),
    ({"max_thickness_um": 0.0}, "max_thickness_um"), ({"n_cracks": 9}, "n_cracks"),
])
def test_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_battery_phantom(**{"shape": SHAPE, **kwargs})


def test_energy_list_is_a_realistic_k_edge_scan() -> None:
    e = fe_k_energies()
    steps = np.diff(e)
    assert np.all(steps > 0) and 90 <= e.size <= 130
    edge = (e >= 7105) & (e <= 7150)
    assert np.all(np.diff(e[edge]) == 1.0)  # ~1 eV across the edge
    assert np.all(np.diff(e[e <= 7080]) == 10.0)  # coarse pre-edge
    assert steps[-1] >= 20.0  # coarse post-edge


# ------------------------------------------------------------------------- the Fe K scan
#: The instrument effects that move the sample in the frame (resampled twice: by the simulator, then by
#: the registration and magnification correction of the analysis).
MOTION = ("jitter", "drift", "jumps", "magnification")


def _scan(*, told: bool, still: bool = False):
    from bluesky import RunEngine

    from txm_live.callbacks.demo import ground_truth_labels
    from txm_live.callbacks.live import XanesLiveCallback
    from txm_live.sim import make_txm, xanes_scan

    ph = make_battery_phantom(SHAPE, seed=0)
    e = fe_k_energies()
    overrides = {name: False for name in MOTION} if still else {}
    txm = make_txm(ph, seed=0, margin_px=20, energy_range=(float(e[0]), float(e[-1])), reference_energy=float(e[0]),
                   **overrides)
    cb = XanesLiveCallback(element="Fe", edges=("K",)) if told else XanesLiveCallback()
    RE = RunEngine({}, call_returns_result=True)
    RE.subscribe(cb)
    try:
        run = RE(xanes_scan(txm, e, n_dark=N_DARK, element=None, edges=None))
        results = cb.wait(timeout=600)
    finally:
        cb.close()
    assert run.exit_status == "success"
    return results[-1], ground_truth_labels(txm, ph, float(e[0]), N_DARK)


@pytest.fixture(scope="module", params=["element and edges given", "nothing given"])
def fe_k_run(request):
    return request.param, *_scan(told=request.param == "element and edges given")


def magnetite_scores(labels: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Recall and precision of the phase that best covers the true magnetite pixels (label 3)."""
    true = truth == 3
    values, counts = np.unique(labels[true & (labels >= 0)], return_counts=True)
    if values.size == 0:
        return 0.0, 0.0
    phase = values[np.argmax(counts)]
    hit = np.count_nonzero(true & (labels == phase))
    return hit / np.count_nonzero(true), hit / np.count_nonzero(labels == phase)


def test_fe_k_scan_gives_its_k_result(fe_k_run) -> None:
    how, result, truth = fe_k_run
    assert result.errors == (), how
    assert result.ok, how
    assert tuple(result.edges) == ("K",), how
    k = result.edges["K"]
    assert k.element == "Fe" and k.edge == "K"
    assert result.comparisons == ()  # a single edge: nothing to compare, and no error for it


def _check_phases(how: str, result, truth: np.ndarray) -> None:
    from txm_live.preview import agreement

    k = result.edges["K"]
    assert k.labels.shape == truth.shape
    ari = agreement(k, truth)
    recall, precision = magnetite_scores(k.labels, truth)
    assert ari >= 0.9, (how, ari, k.phase_names, k.counts)
    assert recall >= 0.8 and precision >= 0.8, (how, recall, precision)


def test_fe_k_phases_match_the_ground_truth_on_a_still_sample() -> None:
    """Every instrument effect but sample motion (noise, flat structure, beam decay, throughput,
    glitches, leak, PSF), edges detected from the data: the K-edge analysis itself meets the target."""
    result, truth = _scan(told=False, still=True)
    assert tuple(result.edges) == ("K",) and result.ok, (result.errors, result.notes)
    _check_phases("still sample, nothing given", result, truth)


def test_fe_k_phases_match_the_ground_truth(fe_k_run) -> None:
    """Every instrument effect including sample motion (jitter, drift, jumps, energy-proportional
    magnification), seed 0. Measured 2026-12-05 with cubic resampling (the default): ARI 0.902,
    magnetite recall 0.955, precision 0.815, both ways (told / detected); with bilinear
    resampling 0.829 and no magnetite phase (precision 0.061). Seeds 0-9 of
    ``benchmarks/bench_motion.py --cases battery`` (cubic, registered): 0.902 / 0.885 / 0.840 /
    0.840 / 0.986 / 0.959 / 0.988 / 0.983 / 0.890 / 0.984, magnetite (recall and precision >= 0.5)
    found on 8 of 10 (bilinear: mean 0.776, 3 of 10): the target holds on this seed, not on every
    seed."""
    _check_phases(*fe_k_run)
