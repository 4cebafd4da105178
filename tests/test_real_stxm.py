"""The real ALS STXM Fe L3/L2 stack (../shared/data/real-stxm-fe), analysed at the core level.

Only ``element``/``edges`` are given: windows come from ``default_windows("Fe", ("L3", "L2"),
energies=...)`` and every other analysis option keeps its default. Skipped, saying why, when the
data folder is absent.
"""

from __future__ import annotations

import numpy as np
import pytest

import txm_live_test_helpers as helpers  # tests/helpers.py, loaded by tests/conftest.py
from txm_live.edges import default_windows
from txm_live.phases import analyze_edge

DATA = helpers.STXM_FE_STACK


@pytest.fixture(scope="module")
def stack() -> tuple[np.ndarray, np.ndarray]:
    d = np.load(helpers.need(DATA))
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


@pytest.fixture(scope="module")
def joint_l23(stack):
    energies, od = stack
    l3, l2 = default_windows("Fe", ("L3", "L2"), energies=energies)
    return l3, l2, analyze_edge(energies, od, window=l3), analyze_edge(energies, od, window=l2)


def test_fe_l2_jointly_normalized_post_edge_is_flat(joint_l23) -> None:
    """The L2 pre-edge (712-717 eV) is the L3 white-line tail: normalized on its own (a pre-edge
    line through the falling tail), the L2 phase spectra kept rising through the post-edge, by
    0.79 and 1.05 over its 3.2 eV, above their own white line (post-edge/white-line peak 1.18).
    Jointly normalized with L3 (txm_live.edges.join_windows) they lie flat: measured change over
    the post-edge -0.021 and -0.007, 1.5-3.7 % of the L2 white line above it. Tolerance 10 % of
    that white line: the L2 multiplet tail still decays over the first eV of the post-edge (a few
    %), the noise of a phase mean of >= 100 pixels is ~0.01-0.03."""
    _, l2, _, r2 = joint_l23
    assert l2.joint is not None and any("normalized jointly with Fe L3" in n for n in r2.notes)
    e = r2.energies
    post = (e >= l2.e0 + l2.post[0]) & (e <= l2.e0 + l2.post[1])
    near = (e >= l2.e0 - 2.0) & (e <= l2.e0 + 6.0)
    assert post.sum() >= 5 and np.any(r2.counts >= 100)
    for p in np.flatnonzero(r2.counts >= 100):  # phase means of >= 100 px (noise ~0.01 per point)
        m = r2.mean_spectra[p]
        change = np.polyfit(e[post], m[post], 1)[0] * np.ptp(e[post])
        white_line = m[near].max() - m[post].mean()
        assert white_line > 0.2, (p, white_line)  # an L2 white line above a flat post-edge
        assert abs(change) <= 0.1 * white_line, (p, change, white_line)


def test_fe_l2_clusters_the_particle_like_l3_and_agrees_with_it(joint_l23, stack) -> None:
    """Before: L2 clustered 145 px (its own edge step, on the L3 tail, is insignificant in most
    pixels) against 3153 at L3. Jointly normalized: the group's jump decides the sample mask and
    both edges cluster the same pixels (3066 here, 3153 with the blank-beam flat of the live
    test). The L2 phase count is not robust on this stack (1 or 2 phases depending on the flat
    and the feature range: the weaker L2 white line puts the Fe3+ group at the clusterer's
    threshold), so the agreement bound holds for either: 84 % with one L2 phase (the Fe2+
    majority), 94.8 % with two (live test)."""
    from txm_live.compare import compare_edges

    energies, od = stack
    _, _, r3, r2 = joint_l23
    particle = od.mean(axis=0) >= 0.1
    n3, n2 = np.count_nonzero(r3.labels[particle] >= 0), np.count_nonzero(r2.labels[particle] >= 0)
    assert n3 >= 1000 and n2 >= 0.8 * n3, (n3, n2)
    assert r3.n_phases >= 2, r3.counts
    assert compare_edges(r3, r2).agreement >= 0.8
    blank = _blank_beam(energies, od)
    assert (r2.labels[blank] >= 0).mean() <= 0.01


def test_soft_edge_feature_range_stays_inside_the_window(joint_l23) -> None:
    """The hard-X-ray feature range (-20 .. +60 eV) spanned the whole 18 eV Fe L3 window and more;
    scaled with the edge it is the near-edge band of each edge, inside its own window."""
    l3, l2, r3, r2 = joint_l23
    for w, r in ((l3, r3), (l2, r2)):
        lo, hi = w.feature_range
        assert w.pre[0] < lo < 0.0 < hi <= w.post[1], (w.name, w.feature_range)
        assert r.feature_range == w.feature_range
    # the two edges' ranges tile the joint spectrum without overlapping
    assert l3.e0 + l3.feature_range[1] <= l2.e0 + l2.feature_range[0] + 1e-9
