"""Real data through the live pipeline: the ALS STXM Fe L3/L2 stack as Bluesky documents.

The stack (../shared/data/real-stxm-fe, read its README) is replayed by
:func:`txm_live.sim.stxm.stxm_documents` (flat = blank-beam level per energy, 80 nm pixels, eV) into
``XanesLiveCallback(element="Fe", edges=("L3", "L2"))`` with no other option. There is no ground
truth; what a sound analysis must show: no error, ``ok``, at most 1 % of the blank-beam pixels in a
phase, at least two Fe phases inside the particle with distinct near-edge spectra, results and
figures written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from event_model import DocumentNames, schema_validators

import txm_live_test_helpers as helpers  # tests/helpers.py, loaded by tests/conftest.py
from txm_live.sim.stxm import STXM_IMAGE_KEY, blank_beam_level, load_stxm_stack, stxm_documents

STACK = helpers.STXM_FE_STACK
# Blank beam: stack-mean transmission >= 97 % (OD < 0.03); particle: stack-mean OD >= 0.1.
BLANK_OD = 0.03
PARTICLE_OD = 0.1


def _small_stack(path: Path) -> None:
    rng = np.random.default_rng(0)
    e = np.linspace(700.0, 730.0, 12)
    i0 = 3000.0 * (1.0 + 0.01 * (e - 700.0))
    od = np.zeros((12, 20, 24))
    od[:, 5:15, 6:18] = 0.5 + 0.3 * (e > 708)[:, None, None]
    counts = rng.poisson(i0[:, None, None] * np.exp(-od)).astype(np.float32)
    np.savez(path, counts=counts, energy_ev=e, pixel_size_nm=np.float64(80.0))


def test_documents_are_valid_and_carry_the_blank_beam_flat(tmp_path: Path) -> None:
    path = tmp_path / "stack.npz"
    _small_stack(path)
    docs = list(stxm_documents(path, md={"sample": "synthetic"}))
    for name, doc in docs:
        schema_validators[DocumentNames[name]].validate(doc)
    names = [n for n, _ in docs]
    assert names[0] == "start" and names[-1] == "stop" and names.count("event") == 24
    start = docs[0][1]
    assert start["sample"] == "synthetic"
    contract = start["txm_live"]
    assert "element" not in contract and "edges" not in contract  # the consumer is told or detects
    assert contract["pixel_size_nm"] == 80.0 and len(contract["energies"]) == 12
    desc = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    counts, energies, _ = load_stxm_stack(path)
    i0, blank = blank_beam_level(counts)
    empty = np.ones((20, 24), dtype=bool)
    empty[5:15, 6:18] = False
    assert np.all(empty[blank]) and blank.sum() >= 0.9 * empty.sum()  # the empty pixels
    true_i0 = 3000.0 * (1.0 + 0.01 * (energies - 700.0))
    np.testing.assert_allclose(i0, true_i0, rtol=0.01)  # median of ~300 pixels of ~3000 counts
    flats = [d for n, d in docs if n == "event" and desc[d["descriptor"]] == "flat"]
    primary = [d for n, d in docs if n == "event" and desc[d["descriptor"]] == "primary"]
    for k, (f, p) in enumerate(zip(flats, primary)):
        assert f["data"]["mono_energy"] == p["data"]["mono_energy"] == energies[k]
        assert np.all(f["data"][STXM_IMAGE_KEY] == np.float32(i0[k]))
        np.testing.assert_array_equal(p["data"][STXM_IMAGE_KEY], counts[k])
    assert docs[-1][1]["exit_status"] == "success"
    with pytest.raises(ValueError, match="md"):
        next(stxm_documents(path, md={"txm_live": {}}))


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    helpers.need(STACK)
    from txm_live.callbacks.live import XanesLiveCallback

    cb = XanesLiveCallback(element="Fe", edges=("L3", "L2"))
    try:
        for name, doc in stxm_documents(STACK):
            cb(name, doc)
        results = cb.wait(timeout=600)
    finally:
        cb.close()
    counts, energies, pixel = load_stxm_stack(STACK)
    i0, _ = blank_beam_level(counts)
    mean_od = -np.log(np.clip(counts, 1.0, None) / i0[:, None, None]).mean(axis=0)
    return results[-1], mean_od, tmp_path_factory.mktemp("stxm")


def test_no_error_and_ok(real_run) -> None:
    result, _, _ = real_run
    assert result.errors == ()
    assert result.ok
    assert result.l3 is not None and result.l2 is not None
    assert result.pixel_size_nm == pytest.approx(80.0)


def test_blank_beam_is_not_a_phase(real_run) -> None:
    result, mean_od, _ = real_run
    blank = mean_od < BLANK_OD
    assert blank.sum() > 5000  # about half of the 150 x 150 field is blank beam
    for edge in (result.l3, result.l2):
        assert edge.labels.shape == mean_od.shape
        in_phase = np.count_nonzero(blank & (edge.labels >= 0)) / np.count_nonzero(blank)
        assert in_phase <= 0.01, (edge.edge, in_phase)


def test_two_fe_phases_with_distinct_near_edge_spectra(real_run) -> None:
    result, mean_od, _ = real_run
    l3 = result.l3
    particle = mean_od >= PARTICLE_OD
    inside = [p for p in range(l3.n_phases)
              if np.count_nonzero((l3.labels == p) & particle) >= 0.9 * np.count_nonzero(l3.labels == p) > 0]
    assert len(inside) >= 2, (l3.phase_names, l3.counts)
    near = (l3.energies >= l3.e0 - 3.0) & (l3.energies <= l3.e0 + 5.0)
    spectra = l3.mean_spectra[inside][:, near]
    diffs = [np.abs(spectra[i] - spectra[j]).max() for i in range(len(inside)) for j in range(i)]
    # Fe2+ and Fe3+ L3 multiplets differ by tenths of the edge step; 0.1 is far above the
    # noise of a phase mean over hundreds of pixels.
    assert max(diffs) >= 0.1, diffs


def test_results_and_figures_written(real_run) -> None:
    from txm_live.callbacks.results_file import write_results
    from txm_live.figures import save_report

    result, _, out = real_run
    h5 = write_results(result, out)
    assert h5.name == "phases.h5" and h5.stat().st_size > 0
    figures = save_report(result, out / result.run_uid, pixel_size_nm=result.pixel_size_nm)
    assert figures and all(p.suffix == ".png" and p.stat().st_size > 0 for p in figures)


def test_l2_is_normalized_with_l3_and_clusters_the_particle(real_run) -> None:
    """The L2 pre-edge is the L3 white-line tail: L2 is normalized jointly with L3
    (txm_live.edges.join_windows), so it clusters the particle like L3 (before: 145 px against
    3153) with a flat post-edge (before: rising to 4 edge steps), and agrees with L3."""
    result, mean_od, _ = real_run
    l3, l2 = result.l3, result.l2
    particle = mean_od >= PARTICLE_OD
    n3, n2 = np.count_nonzero(l3.labels[particle] >= 0), np.count_nonzero(l2.labels[particle] >= 0)
    assert n3 >= 1000 and n2 >= 0.8 * n3, (n3, n2)
    assert any("normalized jointly with Fe L3" in n for n in l2.notes)
    post = l2.energies >= 727.0  # the L2 post-edge of the fitted window (727.1-730.4 eV)
    assert np.any(l2.counts >= 100)
    for p in np.flatnonzero(l2.counts >= 100):  # phase means of >= 100 px (noise ~0.01 per point)
        m = l2.mean_spectra[p]
        change = np.polyfit(l2.energies[post], m[post], 1)[0] * np.ptp(l2.energies[post])
        white_line = m[(l2.energies >= 718.0) & (l2.energies <= 726.0)].max() - m[post].mean()
        assert white_line > 0.2 and abs(change) <= 0.1 * white_line, (p, change, white_line)
    (cmp,) = result.comparisons
    assert cmp.agreement >= 0.8, cmp.agreement
