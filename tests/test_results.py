"""RunResult keyed by edge: order, ok, comparisons, shortcuts of the Nd scripts, validation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from txm_live.results import EdgePairComparison, EdgeResult, RunResult


def _edge(edge: str, e0: float, element: str = "Nd") -> EdgeResult:
    labels = np.array([[0, 1], [1, -1]])
    return EdgeResult(edge=edge, e0=e0, energies=np.arange(3.0) + e0, labels=labels, phase_names=("a", "b"),
                      mean_spectra=np.zeros((2, 3)), spread=np.zeros((2, 3)), counts=np.array([1, 2]),
                      snr=np.ones((2, 2), np.float32), mask=labels >= 0, eps=0.1, min_samples=3, n_components=2,
                      element=element)


def test_edges_keep_the_given_order_and_shortcuts_read_them():
    l3, l2 = _edge("L3", 6208.0), _edge("L2", 6722.0)
    r = RunResult(run_uid="u", element="Nd", edges={"L3": l3, "L2": l2}, previews={"L3": l3},
                  comparisons=(EdgePairComparison("L3", "L2", 0.9, (0, 1)),), requested_edges=("L3", "L2"))
    assert list(r.edges) == ["L3", "L2"]
    assert r.l3 is l3 and r.l2 is l2 and r.l3_preview is l3 and r.l2_l3_agreement == pytest.approx(0.9)
    assert r.comparison("L2", "L3") is r.comparisons[0] and r.comparisons[0].name == "L3/L2"
    assert r.ok
    back = pickle.loads(pickle.dumps(r))  # results cross process boundaries (Dask, analysis process)
    assert list(back.edges) == ["L3", "L2"] and back.l2_l3_agreement == pytest.approx(0.9)


def test_ok_needs_every_requested_edge_and_no_error_notes_do_not_count():
    k = _edge("K", 7112.0, "Fe")
    assert RunResult(run_uid="u", element="Fe", edges={"K": k}, requested_edges=("K",),
                     notes=("Fe K: EXAFS not available: the window ends at k = 3 1/Å",)).ok
    assert RunResult(run_uid="u", edges={"K": k}).ok  # nothing requested: the analysed edges count
    assert not RunResult(run_uid="u", edges={"K": k}, requested_edges=("K", "L3")).ok
    assert not RunResult(run_uid="u", edges={"K": k}, errors=("FrameError: x",)).ok
    assert not RunResult(run_uid="u").ok  # nothing analysed
    k_only = RunResult(run_uid="u", edges={"K": k})
    assert k_only.comparisons == () and k_only.l3 is None and k_only.l2_l3_agreement is None


def test_validation_names_the_field():
    with pytest.raises(ValueError, match="edges"):
        RunResult(run_uid="u", edges={"K": "not a result"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="previews"):
        RunResult(run_uid="u", previews={"": _edge("K", 7112.0)})
    with pytest.raises(ValueError, match="exafs"):
        RunResult(run_uid="u", exafs={"K": (1, 2)})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="comparisons"):
        RunResult(run_uid="u", comparisons=(0.9,))  # type: ignore[arg-type]
