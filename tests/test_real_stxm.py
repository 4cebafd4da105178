"""The real ALS STXM Fe L3/L2 stack (../shared/data/real-stxm-fe), analysed at the core level.

Only ``element``/``edges`` are given: windows come from ``default_windows("Fe", ("L3", "L2"),
energies=...)`` and every other analysis option keeps its default. Skipped, saying why, when the
data folder is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from txm_live.edges import default_windows
from txm_live.phases import analyze_edge



def _shared() -> Path:
    """``../shared`` beside the repository root (the CI clone), or the nearest ``shared/`` above it
    (a git worktree one level deeper)."""
    root = Path(__file__).resolve().parents[1]
    for parent in root.parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared"
    return root.parent / "shared"


DATA = _shared() / "data" / "real-stxm-fe" / "als_stxm_fe_l23_71214098.npz"


@pytest.fixture(scope="module")
def stack() -> tuple[np.ndarray, np.ndarray]:
    if not DATA.exists():
        pytest.skip(f"real STXM stack absent: {DATA}")
    d = np.load(DATA)
    counts = d["counts"].astype(np.float64)
    energies = np.asarray(d["energy_ev"], dtype=np.float64)
    n = counts.shape[0]
    flat = counts.reshape(n, -1)
    # I0 = blank-beam level per energy: mean of the 2 % brightest pixels (the README's recipe)
    k = max(1, int(0.02 * flat.shape[1]))
    i0 = np.sort(flat, axis=1)[:, -k:].mean(axis=1)
    od = -np.log(np.clip(counts, 1e-3, None) / i0[:, None, None])
    return energies, od.astype(np.float32)


def _blank_beam(energies: np.ndarray, od: np.ndarray) -> np.ndarray:
    """Blank-beam pixels, defined without the analysis.

    Two plain criteria on the optical density: (1) the mean OD over the whole stack is below
    0.06 (the blank beam is the histogram peak at 0.02-0.04 OD, slightly above 0 because I0 is
    the mean of the brightest pixels; the particle's C, O, Si absorb at 700 eV too, so any
    material gives more), and (2) no Fe L3 jump by a two-point difference: the mean OD over
    712-716 eV minus the mean over 700-704 eV is within +-0.03 OD (its noise is ~0.007 OD).
    """
    mean_od = od.mean(axis=0)
    jump = od[(energies >= 712) & (energies <= 716)].mean(0) - od[(energies >= 700) & (energies <= 704)].mean(0)
    return (mean_od < 0.06) & (np.abs(jump) < 0.03)


def test_fe_l3_blank_beam_is_not_a_phase_and_two_fe_phases_in_the_particle(stack) -> None:
    energies, od = stack
    blank = _blank_beam(energies, od)
    assert blank.sum() > 5000, "the stack has a large blank-beam area around the particle"
    l3, _ = default_windows("Fe", ("L3", "L2"), energies=energies)
    res = analyze_edge(energies, od, window=l3)
    assert res.element == "Fe" and res.edge == "L3"
    assert any("post-edge model" in n for n in res.notes)
    in_phase = res.labels >= 0
    assert in_phase[blank].mean() <= 0.01, f"{in_phase[blank].mean():.3%} of the blank beam is in a phase"
    # >= 2 Fe phases with distinct near-edge spectra: their L3 white-line peaks differ by >= 1 eV
    # (Fe2+ near 708 eV, Fe3+ near 709.6 eV) and each holds >= 50 pixels
    big = np.flatnonzero(res.counts >= 50)
    assert big.size >= 2, (res.phase_names, res.counts)
    near = (res.energies >= 705.0) & (res.energies <= 713.0)
    peaks = res.energies[near][np.argmax(res.mean_spectra[big][:, near], axis=1)]
    assert np.ptp(peaks) >= 1.0, f"white-line peaks {peaks}"
    # the phases sit where the two-point Fe L3 difference shows iron
    jump = od[(energies >= 712) & (energies <= 716)].mean(0) - od[(energies >= 700) & (energies <= 704)].mean(0)
    assert np.median(jump[in_phase]) > 0.05


def test_fe_l2_window_fits_the_30_ev_stack(stack) -> None:
    energies, od = stack
    blank = _blank_beam(energies, od)
    l3, l2 = default_windows("Fe", ("L3", "L2"), energies=energies)
    # the L2 window proper starts above the L3 edge; its pre-edge (the L3 tail) overlaps the L3
    # post-edge, so L2 is normalized jointly with L3 (txm_live.edges.join_windows)
    assert l2.end <= energies.max() + 1e-9 and l2.e0 + l2.pre[0] > 706.8 + 2.0
    assert l2.joint == l3 and l2.start == l3.start
    res = analyze_edge(energies, od, window=l2)
    assert res.n_phases >= 1
    assert (res.labels[blank] >= 0).mean() <= 0.01
