"""Phase tracking across scans: stable identities, new phases, areas, figure."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from txm_live.edges import default_windows
from txm_live.results import EdgeResult
from txm_live.series import PhaseTracker

L3 = default_windows("Nd", ("L3",))[0]


def simulated_scan(oxide_fraction: float, *, shape=(96, 96), seed=3, flux=5000.0):
    """L3 optical density of the simulator's phantom with photon noise (see test_preview)."""
    from txm_live.sim.phantom import make_phantom

    ph = make_phantom(shape, mode="mixed", seed=seed, oxide_pocket_fraction=oxide_fraction)
    energies = np.arange(L3.start, L3.end + 0.5, 1.0)
    od = ph.optical_density_stack(energies)
    rng = np.random.default_rng(int(oxide_fraction * 1000) + 7)
    sigma = np.sqrt(1.0 / (flux * np.exp(-od)) + 1.0 / flux).astype(np.float32)
    od += rng.standard_normal(od.shape, dtype=np.float32) * sigma
    return ph, energies, od


@pytest.fixture(scope="module")
def series():
    from txm_live.preview import preview_edge

    tracker = PhaseTracker(pixel_size_nm=31.2)
    out = []
    for f in (0.02, 0.06, 0.12):  # the particle corrodes: more oxide pockets scan after scan
        ph, e, od = simulated_scan(f)
        res = preview_edge(e, od, window=L3)
        out.append((ph, res, tracker.update(res)))
    return tracker, out


def _dominant_id(tracked, truth_mask):
    v = tracked.labels[truth_mask]
    v = v[v >= 0]
    return int(np.bincount(v).argmax())


def test_identities_stable_and_oxide_grows(series):
    tracker, out = series
    metal_ids = {_dominant_id(t, ph.labels == 2) for ph, _, t in out}
    mixed_ids = {_dominant_id(t, ph.labels == 1) for ph, _, t in out}
    assert len(metal_ids) == 1 and len(mixed_ids) == 1 and metal_ids != mixed_ids
    summary = tracker.summary()
    assert tracker.n_scans == 3 and summary.areas_um2.shape == (3, len(summary.phase_ids))
    # the oxide is the id whose area grows; it holds the truth's oxide pockets in the last scan
    ph_last, _, t_last = out[-1]
    oxide_id = _dominant_id(t_last, ph_last.labels == 3)
    assert oxide_id not in metal_ids | mixed_ids
    oxide_area = summary.area_of(oxide_id)
    assert np.all(np.diff(oxide_area) > 0), oxide_area
    assert oxide_area[-1] > 2 * max(oxide_area[0], 0.05)
    # areas are pixel counts times the pixel area
    np.testing.assert_allclose(summary.areas_um2, summary.pixel_counts * 0.0312**2)
    # matched phases are close to their model, new ones have no distance
    for _, _, t in out[1:]:
        matched = [d for i, d in zip(t.ids, t.distances) if i not in t.new_ids]
        assert matched and max(matched) < tracker.max_distance


def test_series_figure(series, tmp_path):
    import matplotlib.image as mpimg

    tracker, _ = series
    path = tracker.summary().plot(tmp_path / "areas.png")
    img = mpimg.imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 300 and img[..., :3].std() > 0.05


def _edge(order, amps=(1.6, 2.2, 2.9), shape=(20, 20)):
    e = np.arange(6000.0, 6650.0, 2.0)
    rel = e - L3.e0
    step = 0.5 + np.arctan(rel / 2.0) / np.pi
    spectra = np.stack([step + a * np.exp(-0.5 * ((rel - 3) / 4) ** 2) for a in amps])[list(order)]
    labels = np.tile(np.arange(len(order)), shape[0] * shape[1] // len(order) + 1)[: shape[0] * shape[1]]
    labels = labels.reshape(shape)
    counts = np.bincount(labels.ravel(), minlength=len(order))
    return EdgeResult(edge="L3", e0=L3.e0, energies=e, labels=labels,
                      phase_names=tuple(f"amp {amps[o]}" for o in order), mean_spectra=spectra,
                      spread=np.zeros_like(spectra), counts=counts, snr=np.ones(shape, np.float32),
                      mask=np.ones(shape, bool), eps=0.1, min_samples=5, n_components=2)


def test_permuted_phase_order_keeps_ids():
    tr = PhaseTracker()
    first = tr.update(_edge((0, 1, 2)))
    assert first.ids == (0, 1, 2) and first.new_ids == (0, 1, 2)
    second = tr.update(_edge((2, 0, 1)))
    assert second.ids == (2, 0, 1) and second.new_ids == ()
    # relabelled map uses the stable ids
    assert np.all(second.labels == np.array([2, 0, 1])[_edge((2, 0, 1)).labels])
    # a genuinely new phase gets a new id; a vanished one has zero area
    third = tr.update(_edge((0, 1), amps=(1.6, 4.0)))
    assert third.ids[0] == 0 and third.new_ids == (3,)
    s = tr.summary()
    assert s.phase_ids == (0, 1, 2, 3)
    assert s.pixel_counts[2, 2] == 0 and s.pixel_counts[2, 3] > 0


def test_errors_are_named():
    with pytest.raises(ValueError, match="max_distance"):
        PhaseTracker(max_distance=0)
    tr = PhaseTracker()
    with pytest.raises(ValueError, match="result"):
        tr.update("scan")  # type: ignore[arg-type]
    tr.update(_edge((0, 1, 2)))
    l2 = _edge((0, 1, 2))
    with pytest.raises(ValueError, match="edge"):
        tr.update(EdgeResult(**{**l2.__dict__, "edge": "L2"}))
    with pytest.raises(ValueError, match="phase_id"):
        tr.summary().area_of(42)


def test_update_accepts_a_run_result():
    """PhaseTracker.update(RunResult): follows the first analysed edge, or the one named."""
    from txm_live.results import RunResult

    l3, l2 = _edge((0, 1, 2)), replace(_edge((1, 0, 2)), edge="L2")
    run = RunResult(run_uid="scan-1", element="Nd", edges={"L3": l3, "L2": l2}, pixel_size_nm=20.0)
    tr = PhaseTracker(pixel_size_nm=31.2)
    first = tr.update(run)  # L3, the first edge acquired; the run's pixel size
    assert first.ids == (0, 1, 2)
    np.testing.assert_allclose(first.areas_um2, first.counts * 0.020**2)
    # the next run: same edge followed, whether given as a RunResult or as its EdgeResult
    second = tr.update(RunResult(run_uid="scan-2", edges={"L2": l2, "L3": _edge((2, 0, 1))}))
    assert second.ids == (2, 0, 1)
    third = tr.update(_edge((0, 1, 2)))
    assert third.ids == (0, 1, 2)
    other = PhaseTracker().update(run, edge="L2")
    assert other.ids == (0, 1, 2)
    with pytest.raises(ValueError, match="no analysis of edge 'L3'.*analysed: \\['K'\\]"):
        tr.update(RunResult(run_uid="k-only", edges={"K": replace(_edge((0, 1)), edge="K")}))
    with pytest.raises(ValueError, match="edge"):
        tr.update(_edge((0, 1, 2)), edge="L2")
