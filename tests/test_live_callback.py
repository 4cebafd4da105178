"""XanesLiveCallback: documents in (event_model.compose_run and a real RunEngine), phase maps out.

The analysis injected here is a deliberately simple stand-in with the signature of
``txm_live.phases.analyze_edge`` (Athena-like normalization + KMeans with 2 clusters), so these
tests check the live machinery (ordering, correction, registration, failure isolation), not the
phase analysis (tested elsewhere).
"""

from __future__ import annotations

import threading
import time

import event_model
import numpy as np
import pytest
from sklearn.cluster import KMeans

import txm_live_test_helpers as helpers  # tests/helpers.py, loaded by tests/conftest.py
from txm_live.callbacks.live import ProgressEvent, XanesLiveCallback
from txm_live.edges import EdgeWindow, default_windows
from txm_live.results import EdgeResult, ExafsResult

H, W = 40, 44
ENERGIES = np.concatenate([np.arange(6000.0, 6190.0, 20.0), np.arange(6190.0, 6240.0, 2.0),
                           np.arange(6240.0, 6700.0, 20.0), np.arange(6700.0, 6760.0, 3.0),
                           np.arange(6760.0, 7024.0, 25.0)])
WINDOWS = default_windows("Nd", ("L3", "L2"))


# --------------------------------------------------------------------------- synthetic scan
def _mu(e: np.ndarray, e0: float, wl: float) -> np.ndarray:
    step = 0.5 + np.arctan(2 * (e - e0) / 3.6) / np.pi
    white = wl * np.exp(-0.5 * ((e - e0 - 3.0) / 3.0) ** 2)
    return step + white


def phantom_truth() -> np.ndarray:
    """0 background, 1 phase A (left block), 2 phase B (right block)."""
    truth = np.zeros((H, W), np.int64)
    truth[8:32, 6:21] = 1
    truth[8:32, 23:38] = 2
    return truth


#: Edge energies (eV) and relative step heights of the synthetic sample: Nd L3 and L2 by default.
ND_EDGES = ((6208.0, 1.0), (6722.0, 0.45))
#: A Fe K-edge sample (one edge) and a scan across it: coarse pre-edge, 2 eV across the edge.
FE_K_EDGES = ((7112.0, 1.0),)
FE_K_ENERGIES = np.concatenate([np.arange(6900.0, 7090.0, 15.0), np.arange(7090.0, 7150.0, 2.0),
                                np.arange(7150.0, 7565.0, 20.0)])


def od_frame(energy: float, truth: np.ndarray, edges: tuple[tuple[float, float], ...] = ND_EDGES) -> np.ndarray:
    e = np.asarray([energy])
    pre = 0.25 + 0.0001 * (energy - 6000)
    a = pre + 0.6 * sum(h * _mu(e, e0, 1.0 - 0.2 * i) for i, (e0, h) in enumerate(edges))[0]
    b = pre + 0.6 * sum(h * _mu(e, e0 + 1, 2.5 - 0.5 * i) for i, (e0, h) in enumerate(edges))[0]
    od = np.zeros((H, W), np.float32)
    od[truth == 1] = a
    od[truth == 2] = b
    # texture so that registration has features
    yy, xx = np.mgrid[0:H, 0:W]
    od += 0.05 * (truth > 0) * np.sin(yy / 2.3) * np.cos(xx / 3.1)
    return od


def raw_frames(energy: float, rng: np.random.Generator, *, shift=(0.0, 0.0),
               edges: tuple[tuple[float, float], ...] = ND_EDGES) -> tuple[np.ndarray, np.ndarray]:
    """(sample, flat) uint16 counts: flat 5000 photons x gain 2.5 + bias 100."""
    from scipy import ndimage as ndi

    truth = phantom_truth()
    od = od_frame(energy, truth, edges)
    if shift != (0.0, 0.0):
        od = ndi.shift(od, shift, order=1, mode="nearest")
    flat_photons = 5000.0 * (1 + 0.05 * np.sin(np.arange(W) / 7.0))[None, :] * np.ones((H, 1))
    sample = rng.poisson(flat_photons * np.exp(-od)) * 2.5 + 100
    flat = rng.poisson(flat_photons) * 2.5 + 100
    return sample.astype(np.uint16), flat.astype(np.uint16)


def make_documents(
    energies: np.ndarray = ENERGIES,
    *,
    seed: int = 0,
    n_dark: int = 2,
    pages: bool = False,
    exit_status: str | None = "success",
    md_extra: dict | None = None,
    shifts: dict[int, tuple[float, float]] | None = None,
    corrupt: dict[int, str] | None = None,
    edges: tuple[tuple[float, float], ...] = ND_EDGES,
    contract_extra: dict | None = None,
) -> list[tuple[str, dict]]:
    """Documents of one xanes_scan per the stream contract (inline images)."""
    rng = np.random.default_rng(seed)
    md = {
        "plan_name": "xanes_scan",
        "txm_live": {
            "contract_version": 1,
            "energy_key": "mono_energy",
            "image_key": "camera_image",
            "pixel_size_key": "camera_pixel_size",
            "primary_stream": "primary",
            "flat_stream": "flat",
            "dark_stream": "dark",
            "element": "Nd",
            "edges": ["L3", "L2"],
            "energies": [float(e) for e in energies],
            "image_shape": [H, W],
            "pixel_size_nm": 31.2,
        },
    }
    md["txm_live"].update(contract_extra or {})
    md.update(md_extra or {})
    bundle = event_model.compose_run(metadata=md)
    docs: list[tuple[str, dict]] = [("start", bundle.start_doc)]
    img_key = {"source": "sim", "dtype": "array", "shape": [H, W], "dtype_numpy": "<u2"}
    e_key = {"source": "sim", "dtype": "number", "shape": [], "dtype_numpy": "<f8"}
    prim = bundle.compose_descriptor(
        name="primary",
        data_keys={"mono_energy": e_key, "camera_image": img_key, "camera_pixel_size": dict(e_key)},
    )
    flat = bundle.compose_descriptor(name="flat", data_keys={"mono_energy": e_key, "camera_image": img_key})
    dark = bundle.compose_descriptor(name="dark", data_keys={"camera_image": img_key})
    docs.append(("descriptor", dark.descriptor_doc))
    dark_img = (100 + rng.normal(0, 3, (H, W))).astype(np.uint16)
    dark_events = [dark.compose_event(data={"camera_image": dark_img}, timestamps={"camera_image": 0.0})
                   for _ in range(n_dark)]
    docs.extend(("event", ev) for ev in dark_events)
    docs.append(("descriptor", prim.descriptor_doc))
    docs.append(("descriptor", flat.descriptor_doc))
    prim_events, flat_events = [], []
    for i, e in enumerate(energies):
        s, f = raw_frames(float(e), rng, shift=(shifts or {}).get(i, (0.0, 0.0)), edges=edges)
        energy_value = float(e)
        if corrupt and i in corrupt:
            kind = corrupt[i]
            if kind == "shape":
                s = s[:-3]
            elif kind == "dtype":
                s = np.array(["x"] * 4)
            elif kind == "nan":
                energy_value = float("nan")
            elif kind == "beam_off":
                s = np.full_like(s, 100)  # dark level only: no usable pixel
        pe = prim.compose_event(
            data={"mono_energy": energy_value, "camera_image": s, "camera_pixel_size": 31.2},
            timestamps={"mono_energy": 0.0, "camera_image": 0.0, "camera_pixel_size": 0.0},
            validate=False,
        )
        fe = flat.compose_event(
            data={"mono_energy": float(e), "camera_image": f}, timestamps={"mono_energy": 0.0, "camera_image": 0.0}
        )
        prim_events.append(pe)
        flat_events.append(fe)
        if not pages:
            docs.append(("event", pe))
            docs.append(("event", fe))
    if pages:
        # several pages per stream, interleaved like a fly scan would deliver them
        for lo in range(0, len(energies), 16):
            docs.append(("event_page", event_model.pack_event_page(*prim_events[lo : lo + 16])))
            docs.append(("event_page", event_model.pack_event_page(*flat_events[lo : lo + 16])))
    docs.extend(("event", ev) for ev in dark_events)
    if exit_status is not None:
        docs.append(("stop", bundle.compose_stop(exit_status=exit_status)))
    return docs


# --------------------------------------------------------------------------- test analysis
def kmeans_analysis(energies: np.ndarray, block: np.ndarray, *, window: EdgeWindow, valid=None) -> EdgeResult:
    """Simple stand-in for analyze_edge: pre/post-edge normalization + KMeans(2) on the particle."""
    n_e, h, w = block.shape
    y = block.reshape(n_e, -1).astype(np.float64)
    pre = (energies >= window.start) & (energies <= window.e0 + window.pre[1])
    post = (energies >= window.e0 + window.post[0]) & (energies <= window.end)
    pre_mean = y[pre].mean(axis=0)
    step = y[post].mean(axis=0) - pre_mean
    mask = step > 0.12
    if valid is not None:
        mask &= valid.ravel()
    norm = (y - pre_mean) / np.where(mask, step, 1.0)
    labels = np.full(h * w, -1)
    feats = norm[:, mask].T
    km = KMeans(n_clusters=2, n_init=4, random_state=0).fit(feats)
    # stable order: phase 0 has the lower white line
    order = np.argsort(km.cluster_centers_.max(axis=1))
    remap = np.empty(2, int)
    remap[order] = np.arange(2)
    labels[mask] = remap[km.labels_]
    means = np.stack([norm[:, labels == k].mean(axis=1) for k in range(2)])
    spread = np.stack([norm[:, labels == k].std(axis=1) for k in range(2)])
    counts = np.array([(labels == k).sum() for k in range(2)])
    return EdgeResult(
        edge=window.edge, e0=window.e0, energies=energies.copy(), labels=labels.reshape(h, w),
        phase_names=("low white line", "high white line"), mean_spectra=means.astype(np.float32),
        spread=spread.astype(np.float32), counts=counts, snr=step.reshape(h, w).astype(np.float32),
        mask=mask.reshape(h, w), eps=0.0, min_samples=0, n_components=n_e,
    )


class Comparison:
    def __init__(self, agreement: float, mapping: np.ndarray) -> None:
        self.agreement = agreement
        self.mapping = mapping


def simple_compare(l3: EdgeResult, l2: EdgeResult) -> Comparison:
    both = (l3.labels >= 0) & (l2.labels >= 0)
    return Comparison(float(np.mean(l3.labels[both] == l2.labels[both])), np.arange(l2.n_phases))


def simple_exafs(energies, mu, *, e0) -> ExafsResult:
    k = np.sqrt(0.2625 * np.clip(energies[energies > e0] - e0, 0, None))
    chi = mu[energies > e0] - 1
    r = np.linspace(0, 6, 32)
    return ExafsResult(phase=-1, k=k, chi=chi, kweight=2, r=r, chir_mag=np.abs(np.sin(r)), first_shell_r=2.0)


def make_cb(**kw) -> XanesLiveCallback:
    opts = dict(analysis=kmeans_analysis, compare=simple_compare, exafs=simple_exafs, register=False,
                analysis_process=False)
    opts.update(kw)
    return XanesLiveCallback(**opts)


def label_accuracy(labels: np.ndarray) -> float:
    truth = phantom_truth()
    inner = np.zeros_like(truth, bool)
    inner[10:30, 8:19] = True
    inner[10:30, 25:36] = True
    t = truth[inner]
    pred = labels[inner]
    return float(max(np.mean(pred == t - 1), np.mean(pred == 2 - t)))


def validate_docs(docs: list[tuple[str, dict]]) -> None:
    for name, doc in docs:
        event_model.schema_validators[event_model.DocumentNames[name]].validate(doc)


# --------------------------------------------------------------------------- tests
def test_inline_documents_give_phase_maps_and_a_valid_derived_run():
    cb = make_cb()
    derived: list[tuple[str, dict]] = []
    cb.subscribe(lambda n, d: derived.append((n, d)))
    (res,) = helpers.feed(cb, make_documents(), timeout=30)
    assert res.errors == ()
    assert res.ok
    assert res.n_frames == len(ENERGIES)
    assert res.pixel_size_nm == pytest.approx(31.2)
    assert label_accuracy(res.l3.labels) > 0.98
    assert label_accuracy(res.l2.labels) > 0.98
    assert res.l2_l3_agreement is not None and res.l2_l3_agreement > 0.95
    assert list(res.edges) == ["L3", "L2"] and res.requested_edges == ("L3", "L2")
    assert [(c.reference, c.other) for c in res.comparisons] == [("L3", "L2")]
    assert list(res.exafs) == ["L3", "L2"] and [x.phase for x in res.exafs["L3"]] == [0, 1]
    # L3 energies are exactly the planned energies inside the L3 window
    w3 = WINDOWS[0]
    np.testing.assert_allclose(res.l3.energies, ENERGIES[(ENERGIES >= w3.start) & (ENERGIES <= w3.end)])
    names = [n for n, _ in derived]
    assert names[0] == "start" and names[-1] == "stop"
    validate_docs(derived)
    start = derived[0][1]
    assert start["raw_run_uid"] == res.run_uid
    streams = {d["name"]: d for n, d in derived if n == "descriptor"}
    assert {"l3_phases", "l2_phases", "l3_l2_comparison", "l3_exafs", "l2_exafs"} <= set(streams)
    assert start["txm_live"]["edges"] == ["L3", "L2"] and start["txm_live"]["element"] == "Nd"
    assert streams["l3_phases"]["data_keys"]["labels"]["shape"] == [H, W]
    assert all("dtype_numpy" in v for d in streams.values() for v in d["data_keys"].values())
    assert derived[-1][1]["exit_status"] == "success"


def test_k_only_run_has_its_k_result_no_comparison_and_no_error():
    """A Fe K-edge scan named only by the start document: results keyed "K", nothing about L2/L3."""
    cb = make_cb()
    derived: list[tuple[str, dict]] = []
    cb.subscribe(lambda n, d: derived.append((n, d)))
    docs = make_documents(FE_K_ENERGIES, edges=FE_K_EDGES, contract_extra={"element": "Fe", "edges": ["K"]})
    (res,) = helpers.feed(cb, docs, timeout=30)
    assert res.errors == () and res.ok, res.errors
    assert res.element == "Fe" and res.requested_edges == ("K",) and list(res.edges) == ["K"]
    assert res.comparisons == () and res.l3 is None and res.l2 is None and res.l2_l3_agreement is None
    assert label_accuracy(res.edges["K"].labels) > 0.98
    assert list(res.exafs) == ["K"]
    validate_docs(derived)
    streams = {d["name"] for n, d in derived if n == "descriptor"}
    assert "k_phases" in streams and not any("comparison" in s for s in streams)
    assert derived[0][1]["txm_live"]["element"] == "Fe" and derived[-1][1]["exit_status"] == "success"


def test_edges_are_keyed_in_acquisition_order_whatever_the_option_order():
    cb = make_cb(edges=("L2", "L3"))
    (res,) = helpers.feed(cb, make_documents(), timeout=30)
    assert res.ok and list(res.edges) == ["L3", "L2"] and res.requested_edges == ("L3", "L2")
    assert [(c.reference, c.other) for c in res.comparisons] == [("L3", "L2")]


def test_a_failing_preview_is_a_labelled_note_not_the_edges_failure():
    def broken_preview(energies, block, *, window, valid=None):
        raise RuntimeError("preview exploded")

    cb = make_cb(preview=broken_preview)
    (res,) = helpers.feed(cb, make_documents(), timeout=30)
    assert res.errors == () and res.ok and res.previews == {}
    assert list(res.edges) == ["L3", "L2"]
    assert any(n.startswith("Nd L3 preview failed (RuntimeError: preview exploded)") for n in res.notes), res.notes


def test_event_pages_give_identical_labels_to_events():
    results = []
    for pages in (False, True):
        cb = make_cb()
        (res,) = helpers.feed(cb, make_documents(pages=pages, seed=3), timeout=30)
        assert res.errors == ()
        results.append(res)
    np.testing.assert_array_equal(results[0].l3.labels, results[1].l3.labels)
    np.testing.assert_array_equal(results[0].l2.labels, results[1].l2.labels)


def test_l3_analysis_starts_before_stop_and_before_l2():
    stages: list[ProgressEvent] = []
    gate = threading.Event()
    docs = make_documents()
    stop_index = len(docs) - 1

    def progress(ev: ProgressEvent) -> None:
        stages.append(ev)

    cb = make_cb(progress=progress)
    l3_end = WINDOWS[0].end
    for i, (name, doc) in enumerate(docs):
        cb(name, doc)
        if name == "event" and doc["data"].get("mono_energy", 0) > l3_end + 100 and not gate.is_set():
            gate.set()
            # give the worker time: the L3 analysis must start while the scan goes on
            t0 = time.monotonic()
            while time.monotonic() - t0 < 30 and not any(
                s.stage == "analysis-finished" and s.edge == "L3" for s in stages
            ):
                time.sleep(0.01)
            assert any(s.stage == "analysis-finished" and s.edge == "L3" for s in stages)
            assert not any(s.stage == "stop" for s in stages)
        assert i <= stop_index
    cb.wait(timeout=30)
    cb.close()
    order = [(s.stage, s.edge) for s in stages if s.stage == "analysis-started"]
    assert order[0] == ("analysis-started", "L3") and order[1] == ("analysis-started", "L2")
    frames = [s.n_frames for s in stages if s.stage == "frame"]
    assert frames[-1] == len(ENERGIES)


def test_failing_analysis_is_reported_not_raised():
    def boom(energies, block, *, window, valid=None):
        raise RuntimeError("deliberate failure")

    cb = make_cb(analysis=boom)
    derived = []
    cb.subscribe(lambda n, d: derived.append((n, d)))
    (res,) = helpers.feed(cb, make_documents(), timeout=30)  # never raises
    assert res.l3 is None and res.l2 is None
    assert any(e.startswith("AnalysisError") and "deliberate failure" in e for e in res.errors)
    assert not res.ok
    logs = [d["data"]["message"] for n, d in derived if n == "event"]
    assert any("deliberate failure" in m for m in logs)
    validate_docs(derived)
    assert derived[-1][1]["exit_status"] == "fail"


def test_corrupt_frames_are_skipped_with_named_errors():
    corrupt = {5: "shape", 30: "dtype", 60: "nan"}
    cb = make_cb()
    (res,) = helpers.feed(cb, make_documents(corrupt=corrupt), timeout=30)
    assert res.n_frames == len(ENERGIES) - 3
    frame_errors = [e for e in res.errors if e.startswith("FrameError")]
    assert any("shape" in e for e in frame_errors)
    assert any("dtype" in e for e in frame_errors)
    assert any("nan" in e.lower() for e in frame_errors)
    # windows still analysed, the lost planned energies are reported
    assert res.l3 is not None and res.l2 is not None
    assert label_accuracy(res.l3.labels) > 0.95
    assert any("analysed without" in e for e in res.errors)


def test_beam_off_frame_is_skipped_not_masking_the_window():
    cb = make_cb()
    for name, doc in make_documents(corrupt={40: "beam_off"}):
        cb(name, doc)
    (res,) = cb.wait(timeout=30)
    cb.close()
    assert res.n_frames == len(ENERGIES) - 1
    assert any(e.startswith("FrameError") and "usable pixels" in e for e in res.errors), res.errors
    assert label_accuracy(res.l3.labels) > 0.98  # the window was analysed on all other frames


def test_missing_flats_reported_and_run_finishes():
    # no flat stream at all: the flat descriptor is dropped, so its events are not ours either
    docs = [(n, d) for n, d in make_documents() if not (n == "descriptor" and d["name"] == "flat")]
    cb = make_cb()
    (res,) = helpers.feed(cb, docs, timeout=30)
    assert res.n_frames == 0
    assert any(e.startswith("MissingFlatError") for e in res.errors)
    assert res.l3 is None


def test_aborted_and_unstopped_runs_and_several_runs_in_a_row():
    cb = make_cb()
    seen = []
    cb.subscribe(lambda n, d: seen.append((n, d)))
    short = ENERGIES[ENERGIES < 6500]
    # 1: aborted mid-scan (L3 complete, L2 never reached)
    for name, doc in make_documents(short, exit_status="abort"):
        cb(name, doc)
    # 2: never sends stop; 3: normal run right after
    for name, doc in make_documents(ENERGIES[ENERGIES < 6400], exit_status=None, seed=1):
        cb(name, doc)
    results = helpers.feed(cb, make_documents(seed=2))
    assert len(results) == 3
    r1, r2, r3 = results
    assert r1.l3 is not None and r1.l2 is None
    assert any("exit_status 'abort'" in e for e in r1.errors)
    assert any(e.startswith("RunIncompleteError: no stop") for e in r2.errors)
    assert r3.ok and label_accuracy(r3.l3.labels) > 0.98
    # every raw run got its own complete derived run
    starts = [d for n, d in seen if n == "start"]
    stops = [d for n, d in seen if n == "stop"]
    assert len(starts) == len(stops) == 3
    assert [s["raw_run_uid"] for s in starts] == [r.run_uid for r in results]
    # memory released: no run state, no cube kept
    assert cb._runs == {}


@pytest.mark.parametrize("stop_at", [6740.0, 6900.0])
def test_a_run_stopped_inside_a_window_says_so(stop_at):
    """A run aborted inside the L2 window (the plan goes on): its progress says "window closed at
    stop (incomplete)", never "window-complete L2"; when too few points were acquired the
    InsufficientDataError says the scan stopped, not "pass an EdgeWindow that fits the scan"
    (wrong advice for an aborted scan); with enough points L2 is analysed as is."""
    events: list[ProgressEvent] = []
    cb = make_cb(progress=events.append)
    docs = make_documents(ENERGIES[ENERGIES < stop_at], exit_status="abort",
                          contract_extra={"energies": [float(e) for e in ENERGIES]})
    res = _run(cb, docs)
    stages = [(e.stage, e.edge) for e in events if e.stage.startswith("window")]
    assert stages == [("window-complete", "L3"), ("window-incomplete", "L2")], stages
    (closed,) = [e for e in events if e.stage == "window-incomplete"]
    assert closed.message == "window closed at stop (incomplete)"
    assert res.incomplete and res.l3 is not None
    assert any(e.startswith("RunIncompleteError: Nd L2 window incomplete at stop") for e in res.errors), res.errors
    assert not any("pass an EdgeWindow" in e for e in res.errors), res.errors
    short = [e for e in res.errors if e.startswith("InsufficientDataError")]
    if stop_at < 6750:
        assert res.l2 is None
        assert len(short) == 1 and short[0].endswith("the scan stopped before the window was complete"), short
    else:
        assert res.l2 is not None and not short


def test_new_run_while_previous_analysis_is_running():
    release = threading.Event()
    calls = []

    def slow(energies, block, *, window, valid=None):
        calls.append(window.edge)
        release.wait(10)
        return kmeans_analysis(energies, block, window=window, valid=valid)

    cb = make_cb(analysis=slow)
    t0 = time.monotonic()
    for name, doc in make_documents(seed=4):
        cb(name, doc)
    for name, doc in make_documents(seed=5):
        cb(name, doc)
    # ingest of both runs proceeds while the first analysis blocks
    while cb.backlog and time.monotonic() - t0 < 20:
        time.sleep(0.01)
    assert cb.backlog == 0
    release.set()
    results = cb.wait(timeout=30)
    cb.close()
    assert len(results) == 2 and all(r.ok for r in results)


def test_re_thread_only_enqueues_while_the_worker_is_busy():
    """The RunEngine-thread call hands documents over and returns, even when the worker is stuck.

    The worker is held inside the progress report of the first document; every later call must
    still return at once, leaving its document queued (the cost itself is measured in
    benchmarks/bench_live.py, not here).
    """
    docs = make_documents()
    entered, release = threading.Event(), threading.Event()

    def stuck(ev):
        entered.set()
        release.wait(30)

    cb = make_cb(progress=stuck)
    cb(*docs[0])
    assert entered.wait(10), "the worker never picked up the start document"
    for name, doc in docs[1:]:
        cb(name, doc)
    assert cb.backlog == len(docs)  # none done: the worker is stuck in the first, the rest queued
    release.set()
    cb.wait(timeout=60)
    assert cb.backlog == 0
    cb.close()


def test_documents_are_not_mutated():
    import copy

    docs = make_documents(pages=True)
    snapshot = copy.deepcopy(docs)
    cb = make_cb()
    for name, doc in docs:
        cb(name, doc)
    cb.wait(timeout=30)
    cb.close()
    for (n1, d1), (n2, d2) in zip(docs, snapshot):
        assert n1 == n2
        assert d1.keys() == d2.keys()
        for k in d1:
            if k == "data":
                for kk in d1[k]:
                    np.testing.assert_array_equal(np.asarray(d1[k][kk]), np.asarray(d2[k][kk]))
            else:
                assert d1[k] == d2[k] or k in ("data",)


# --------------------------------------------------------------------------- real RunEngine + simulator
SIM_SHAPE = (64, 64)
SIM_ENERGIES = np.concatenate([np.arange(6000.0, 6180.0, 20.0), np.arange(6180.0, 6240.0, 2.5),
                               np.arange(6240.0, 6690.0, 30.0), np.arange(6690.0, 6750.0, 2.5),
                               np.arange(6750.0, 7023.0, 30.0)])
SIM_NDARK = 2
SIM_MARGIN = 16


@pytest.fixture(scope="module")
def sim_phantom():
    from txm_live.sim.phantom import make_phantom

    return make_phantom(shape=SIM_SHAPE, seed=0, mode="pure")


class CapturingAnalysis:
    """Test analysis that also keeps the block it was given (to check the corrected cube)."""

    def __init__(self, inner=None) -> None:
        self.blocks: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.inner = inner or kmeans_analysis

    def __call__(self, energies, block, *, window, valid=None):
        self.blocks[window.edge] = (energies.copy(), np.array(block), valid.copy())
        return self.inner(energies, block, window=window, valid=valid)


def run_sim_scan(phantom, *, register: bool, file_backed: bool = False, tmp_path=None, seed: int = 1, cb_kw=None,
                 energies=SIM_ENERGIES, inner=None):
    from bluesky import RunEngine

    from txm_live.sim.devices import make_txm
    from txm_live.sim.plans import xanes_scan

    txm = make_txm(phantom, seed=seed, margin_px=SIM_MARGIN, file_backed=file_backed, write_path=tmp_path)
    cap = CapturingAnalysis(inner)
    opts = dict(analysis=cap, compare=simple_compare, exafs=simple_exafs, register=register, analysis_process=False)
    opts.update(cb_kw or {})
    cb = XanesLiveCallback(**opts)
    derived = []
    cb.subscribe(lambda n, d: derived.append((n, d)))
    RE = RunEngine({}, call_returns_result=True)
    RE.subscribe(cb)
    result = RE(xanes_scan(txm, energies, n_dark=SIM_NDARK))
    assert result.exit_status == "success"
    (res,) = cb.wait(timeout=60)
    cb.close()
    return txm, cap, res, derived


def truth_od(txm, phantom, energy: float) -> np.ndarray:
    """Noise-free OD of ``energy`` placed like the FIRST sample frame (the registration reference)."""
    from txm_live.sim.effects import place_sample

    model = txm.model
    e0 = float(SIM_ENERGIES[0])
    offset = model.sample_offset(e0, SIM_NDARK)  # first sample frame comes after the darks
    return place_sample(phantom.optical_density(energy), model.detector_shape, scale=model.scale(e0),
                        shift=tuple(offset), axis_offset=model.config.axis_offset_px)


def cube_error(txm, phantom, cap) -> float:
    """RMS difference between the registered OD frames of the L3 window and the truth (valid pixels)."""
    energies, block, valid = cap.blocks["L3"]
    inner = valid.copy()
    errs = []
    for i in range(0, len(energies), 4):
        t = truth_od(txm, phantom, float(energies[i]))
        errs.append(np.sqrt(np.mean((block[i][inner] - t[inner]) ** 2)))
    return float(np.median(errs))


def truth_labels(txm, phantom) -> np.ndarray:
    """Ground-truth phase labels placed like the first sample frame (-1 outside the particle)."""
    from txm_live.sim.effects import place_sample

    model = txm.model
    e0 = float(SIM_ENERGIES[0])
    offset = tuple(model.sample_offset(e0, SIM_NDARK))
    classes = [k for k in np.unique(phantom.labels) if k > 0]
    stack = np.stack([
        place_sample((phantom.labels == k).astype(np.float32), model.detector_shape, scale=model.scale(e0),
                     shift=offset, axis_offset=model.config.axis_offset_px)
        for k in classes
    ])
    out = np.asarray(classes)[np.argmax(stack, axis=0)]
    out[stack.max(axis=0) < 0.75] = -1
    return out


def test_runengine_scan_with_registration_recovers_the_sample_frame(sim_phantom):
    """Real RunEngine + simulator (drift, jumps, +17 % magnification, flats, darks) + the default analysis."""
    from txm_live.phases import analyze_edge

    txm, cap, res, derived = run_sim_scan(
        sim_phantom, register=True, inner=analyze_edge, cb_kw={"compare": None, "exafs": True}
    )
    assert res.errors == (), res.errors
    assert res.ok and res.n_frames == len(SIM_ENERGIES)
    assert res.pixel_size_nm == pytest.approx(txm.pixel_size_at(float(SIM_ENERGIES[0])))
    assert len(res.exafs["L3"]) == res.l3.n_phases
    validate_docs(derived)
    err_reg = cube_error(txm, sim_phantom, cap)
    # the phase map lies on the particle (its geometry is that of the cube checked below; the
    # number of phases is the analysis's business, tested with the analysis)
    from scipy import ndimage as ndi

    particle = ndi.binary_dilation(truth_labels(txm, sim_phantom) >= 0, iterations=2)
    labelled = res.l3.labels >= 0
    assert labelled.sum() > 0.5 * particle.sum()
    assert np.mean(particle[labelled]) > 0.85
    # the same scan without registration/magnification correction
    txm2, cap2, res2, _ = run_sim_scan(sim_phantom, register=False, cb_kw={"correct_magnification": False},
                                       energies=SIM_ENERGIES[::2])
    err_raw = cube_error(txm2, sim_phantom, cap2)
    # drift (~25 px over the scan), jumps and +17 % magnification are undone by the correction:
    # the residual is photon noise and interpolation at the particle edges
    assert err_reg < 0.35 * err_raw, (err_reg, err_raw)
    assert err_reg < 0.08, err_reg


def test_runengine_file_backed_scan_matches_inline(sim_phantom, tmp_path):
    energies = SIM_ENERGIES[::3]  # too few points for the L2 window (a named error at start): L3 only
    _, cap_i, res_i, _ = run_sim_scan(sim_phantom, register=False, seed=5, energies=energies,
                                      cb_kw={"edges": ("L3",)})
    _, cap_f, res_f, derived = run_sim_scan(sim_phantom, register=False, seed=5, file_backed=True,
                                            tmp_path=tmp_path, energies=energies, cb_kw={"edges": ("L3",)})
    assert res_f.errors == (), res_f.errors
    assert res_f.n_frames == res_i.n_frames == len(energies)
    np.testing.assert_array_equal(cap_i.blocks["L3"][1], cap_f.blocks["L3"][1])
    np.testing.assert_array_equal(res_i.l3.labels, res_f.l3.labels)


def test_runengine_failing_analysis_scan_succeeds(sim_phantom):
    from bluesky import RunEngine

    from txm_live.sim.devices import make_txm
    from txm_live.sim.plans import xanes_scan

    def boom(energies, block, *, window, valid=None):
        raise ZeroDivisionError("analysis exploded")

    cb = XanesLiveCallback(analysis=boom, register=True)
    RE = RunEngine({}, call_returns_result=True)
    RE.subscribe(cb)
    costs = []
    RE.subscribe(lambda n, d: costs.append(n))
    # every other energy: enough points in both windows (with every third, L2 is a named error at start)
    result = RE(xanes_scan(make_txm(sim_phantom, seed=2, margin_px=SIM_MARGIN), SIM_ENERGIES[::2], n_dark=1))
    assert result.exit_status == "success"
    (res,) = cb.wait(timeout=60)
    cb.close()
    assert res.l3 is None and res.l2 is None
    assert sum("analysis exploded" in e for e in res.errors) == 2


def test_preview_runs_before_the_exact_analysis_and_is_published():
    stages = []
    cb = make_cb(preview=kmeans_analysis, progress=lambda ev: stages.append((ev.stage, ev.edge, ev.message)))
    derived = []
    cb.subscribe(lambda n, d: derived.append((n, d)))
    for name, doc in make_documents(ENERGIES[ENERGIES < 6650]):  # L3 only
        cb(name, doc)
    (res,) = cb.wait(timeout=30)
    cb.close()
    assert res.l3_preview is not None and res.l3 is not None
    started = [s for s in stages if s[0] == "analysis-started" and s[1] == "L3"]
    assert [s[2] for s in started] == ["preview", "exact"]
    assert "l3_preview" in {d["name"] for n, d in derived if n == "descriptor"}
    validate_docs(derived)


def test_options_are_validated():
    with pytest.raises(ValueError, match="analysis"):
        XanesLiveCallback(analysis=42)
    with pytest.raises(ValueError, match="preview"):
        XanesLiveCallback(preview="yes")
    with pytest.raises(ValueError, match="exafs"):
        XanesLiveCallback(exafs="no")


def test_analysis_process_runs_picklable_analyses_out_of_process():
    """A package-level analysis runs in the analysis process on shared memory; errors keep their names."""
    import functools
    import os

    from txm_live.preview import preview_edge

    cb = XanesLiveCallback(analysis=preview_edge, compare=simple_compare, exafs=False, register=False)
    for name, doc in make_documents(ENERGIES[ENERGIES < 6650], seed=7):
        cb(name, doc)
    (res,) = cb.wait(timeout=60)
    child = cb._process._proc
    assert child is not None and child.pid != os.getpid()  # it really ran in another process
    cb.close()
    assert res.l3 is not None and res.l3.labels.shape == (H, W)
    assert child.poll() is not None  # the child exits with close()
    # an analysis raising in the child: named error, scan unaffected
    bad = functools.partial(preview_edge, feature_range=(1.0e6, 2.0e6))
    cb = XanesLiveCallback(analysis=bad, exafs=False, register=False)
    (res,) = helpers.feed(cb, make_documents(ENERGIES[ENERGIES < 6650], seed=7))
    assert res.l3 is None
    assert any(e.startswith(("AnalysisError", "InsufficientDataError")) for e in res.errors), res.errors


def test_unpicklable_analysis_falls_back_to_the_analysis_thread():
    seen = []

    def local(energies, block, *, window, valid=None):
        seen.append(threading.current_thread().name)
        return kmeans_analysis(energies, block, window=window, valid=valid)

    cb = XanesLiveCallback(analysis=local, exafs=False, register=False)  # analysis_process on
    (res,) = helpers.feed(cb, make_documents(ENERGIES[ENERGIES < 6650]))
    assert res.l3 is not None
    assert seen and seen[0].startswith("txm-live-analysis")


def test_old_style_resource_datum_files_give_the_same_result(tmp_path):
    docs = make_documents(ENERGIES[ENERGIES < 6650], seed=11)
    file_docs = helpers.to_resource_datum(docs, tmp_path)
    validate_docs([(n, d) for n, d in file_docs if n != "event"])
    results = []
    for stream in (docs, file_docs):
        cb = make_cb()
        (res,) = helpers.feed(cb, stream, timeout=30)
        results.append(res)
    assert results[1].n_frames == results[0].n_frames == int(np.sum(ENERGIES < 6650))
    assert not any(e.startswith("FrameError") for e in results[1].errors), results[1].errors
    np.testing.assert_array_equal(results[0].l3.labels, results[1].l3.labels)


def test_close_with_timeout_abandons_a_hung_analysis():
    release = threading.Event()

    def hang(energies, block, *, window, valid=None):
        release.wait(20)
        raise RuntimeError("released")

    cb = make_cb(analysis=hang)
    for name, doc in make_documents(ENERGIES[ENERGIES < 6650]):
        cb(name, doc)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        cb.close(timeout=1.0)
    assert time.monotonic() - t0 < 15  # not the 20 s of the hung analysis (generous: loaded CI machine)
    release.set()


# --------------------------------------------------------------------------- element and edge choice
def _run(cb: XanesLiveCallback, docs: list[tuple[str, dict]]):
    (res,) = helpers.feed(cb, docs)
    return res


def test_a_window_the_plan_cannot_fill_is_a_named_error_at_the_start_of_the_run():
    """Fe K asked for, the plan covers only up to 7100 eV: the error comes before the first frame."""
    events: list[ProgressEvent] = []
    cb = make_cb(progress=events.append)
    plan = FE_K_ENERGIES[FE_K_ENERGIES < 7100]
    docs = make_documents(plan, edges=FE_K_EDGES, contract_extra={"element": "Fe", "edges": ["K"]})
    cb(*docs[0])  # the start document only
    cb.wait(timeout=30)
    early = [e for e in events if e.stage == "error"]
    assert early and early[0].n_frames == 0
    assert early[0].message.startswith("InsufficientDataError: Fe K: the scan"), early[0].message
    res = _run(cb, docs[1:])
    assert not res.ok and res.edges == {} and res.requested_edges == ("K",)
    assert sum(e.startswith("InsufficientDataError: Fe K") for e in res.errors) == 1, res.errors
    assert not any("incomplete at stop" in e for e in res.errors)


def test_start_document_top_level_element_and_edges_and_options_first():
    # top-level keys (no txm_live element/edges): honoured
    docs = make_documents(FE_K_ENERGIES, edges=FE_K_EDGES, contract_extra={"element": None, "edges": None},
                          md_extra={"element": "Fe", "edges": "K"})
    res = _run(make_cb(), docs)
    assert res.ok and res.element == "Fe" and list(res.edges) == ["K"], res.errors
    assert any(n.startswith("element Fe, edges K (start document)") for n in res.notes), res.notes
    # the options win over the start document (which says Nd L3/L2 here)
    docs = make_documents(FE_K_ENERGIES, edges=FE_K_EDGES)
    res = _run(make_cb(element="Fe", edges=("K",)), docs)
    assert res.ok and list(res.edges) == ["K"] and res.edges["K"].e0 == pytest.approx(7112.0, abs=1)
    assert any("(options)" in n for n in res.notes), res.notes


def test_without_a_plan_a_scan_ending_before_the_nominal_window_end_is_fitted_not_an_error():
    """No txm_live.energies: the Fe K window (nominally to e0 + 440 eV) is fitted to what was acquired."""
    energies = FE_K_ENERGIES[FE_K_ENERGIES <= 7400]
    docs = make_documents(energies, edges=FE_K_EDGES, contract_extra={"element": "Fe", "edges": ["K"], "energies": None})
    res = _run(make_cb(), docs)
    assert res.errors == () and res.ok
    k = res.edges["K"]
    assert k.energies.max() <= 7400 and label_accuracy(k.labels) > 0.98
    assert any("window fitted to the acquired energies" in n for n in res.notes), res.notes


def test_exafs_unavailable_on_a_short_window_is_a_note_and_ok_stays_true():
    """A XANES-only Fe K scan (to e0 + 110 eV) with the real EXAFS extraction: a note, not an error."""
    energies = FE_K_ENERGIES[FE_K_ENERGIES <= 7222]
    docs = make_documents(energies, edges=FE_K_EDGES, contract_extra={"element": "Fe", "edges": ["K"]})
    res = _run(make_cb(exafs=True), docs)
    assert res.errors == () and res.ok, res.errors
    assert res.exafs == {} and list(res.edges) == ["K"]
    assert any(n.startswith("Fe K: EXAFS not available") for n in res.notes), res.notes


def test_element_only_gives_its_edges_inside_the_planned_range():
    """Start document says Nd and nothing about edges: L3 and L2 lie in 6000-7024 eV (L1, 7126 eV, does not)."""
    events: list[ProgressEvent] = []
    docs = make_documents(contract_extra={"edges": None})
    res = _run(make_cb(progress=events.append), docs)
    assert res.ok and res.element == "Nd" and list(res.edges) == ["L3", "L2"], res.errors
    assert any("edges in the planned range" in n for n in res.notes), res.notes
    # known at the start: the L3 analysis still starts before the scan ends
    stages = [(e.stage, e.edge) for e in events]
    assert stages.index(("analysis-started", "L3")) < stages.index(("stop", None))


@pytest.mark.parametrize("planned", [True, False])
def test_nothing_given_the_edge_is_detected_from_the_mean_spectrum(planned):
    """No element, no edges anywhere: the Fe K jump of the mean spectrum is found (plan complete, or at stop)."""
    extra = {"element": None, "edges": None}
    if not planned:
        extra["energies"] = None
    derived: list[tuple[str, dict]] = []
    cb = make_cb()
    cb.subscribe(lambda n, d: derived.append((n, d)))
    res = _run(cb, make_documents(FE_K_ENERGIES, edges=FE_K_EDGES, contract_extra=extra))
    assert res.errors == () and res.ok, res.errors
    assert res.element == "Fe" and list(res.edges) == ["K"] and res.requested_edges == ("K",)
    assert label_accuracy(res.edges["K"].labels) > 0.98
    assert any(n.startswith("detected from the mean spectrum: Fe K") for n in res.notes), res.notes
    start = derived[0][1]["txm_live"]
    assert start["element"] == "Fe" and start["edges"] == ["K"] and start["edge_choice"] == "data"
    assert any(n.startswith("detected from the mean spectrum") for n in start["notes"])


def test_an_ambiguous_edge_is_a_named_error_listing_the_candidates():
    """A single jump at 12.66 keV is Se K or Tl L3: EdgeDetectionError in the result, the run goes on."""
    energies = np.concatenate([np.arange(12450.0, 12640.0, 15.0), np.arange(12640.0, 12690.0, 2.0),
                               np.arange(12690.0, 13000.0, 20.0)])
    res = _run(make_cb(), make_documents(energies, edges=((12658.0, 1.0),),
                                         contract_extra={"element": None, "edges": None}))
    assert not res.ok and res.edges == {} and res.n_frames == len(energies)
    (err,) = [e for e in res.errors if e.startswith("EdgeDetectionError")]
    assert "ambiguous" in err and "Se K" in err and "Tl L3" in err, err
