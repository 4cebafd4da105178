"""Facility streams: energy units, N frames per event, autodetection, illuminated darks, error counts.

Small and fast: documents from the FXI-style plan on a real RunEngine (tiny phantom), or composed
with event-model, through the real XanesLiveCallback. Accuracy of whole Nd scans is in
tests/test_fxi_plan.py.
"""

from __future__ import annotations

import copy

import event_model
import numpy as np
import pytest

import txm_live_test_helpers as helpers  # tests/helpers.py, loaded by tests/conftest.py
from txm_live.callbacks.live import XanesLiveCallback
from txm_live.edges import EdgeWindow
from txm_live.results import EdgeResult
from txm_live.session import XanesSession

NI_LIST = helpers.REFERENCE / "NiK_TXM_energy_list.txt"


class _Capture:
    """Analysis stand-in that records what the live callback hands over (energies, block)."""

    def __init__(self) -> None:
        self.calls: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, energies, block, *, window: EdgeWindow, valid=None) -> EdgeResult:
        self.calls[window.edge] = (np.array(energies), np.array(block))
        h, w = block.shape[1:]
        return EdgeResult(edge=window.edge, e0=window.e0, energies=np.asarray(energies), labels=np.zeros((h, w), np.int64),
                          mask=np.ones((h, w), bool), snr=np.ones((h, w), np.float32),
                          mean_spectra=np.zeros((1, len(energies))), spread=np.zeros((1, len(energies))),
                          counts=np.array([h * w]), phase_names=("p",), outlier_phases=(), n_components=1,
                          eps=1.0, min_samples=1)


def _callback(**kw) -> tuple[XanesLiveCallback, _Capture]:
    cap = _Capture()
    cb = XanesLiveCallback(analysis=cap, exafs=False, analysis_process=False, **kw)
    return cb, cap


def _run(docs, **kw):
    cb, cap = _callback(**kw)
    for name, doc in docs:
        cb(name, doc)
    result = cb.wait(120)[-1]
    cb.close()
    return result, cap


# ------------------------------------------------------------------------------- session level
def test_chunk_of_n_frames_equals_its_averaged_frame() -> None:
    rng = np.random.default_rng(0)
    shape = (5, 24, 26)
    dark = (100 + rng.normal(0, 3, shape)).astype(np.uint16)
    flat = rng.poisson(5000, shape).astype(np.uint16) + 100
    od = np.linspace(0.1, 1.5, 24 * 26).reshape(24, 26)
    sample = (rng.poisson(5000 * np.exp(-od), shape) + 100).astype(np.uint16)
    a = XanesSession(register=False, expected_energies=[6200.0])
    b = XanesSession(register=False, expected_energies=[6200.0])
    a.add_dark(dark)
    b.add_dark(dark.mean(axis=0))
    a.add_flat(6200.0, flat)
    b.add_flat(6200.0, flat.mean(axis=0))
    a.add_sample(6200.0, sample)
    b.add_sample(6200.0, sample.mean(axis=0))
    (_, cube_a), (_, cube_b) = a.cube.block(6100, 6300), b.cube.block(6100, 6300)
    # the same arithmetic in float32 (mean of the chunk) on both sides
    np.testing.assert_allclose(cube_a, cube_b, rtol=0, atol=1e-6)
    # summing the counts of 5 exposures keeps their Poisson statistics: the OD noise of the chunk
    # is ~sqrt(5) below that of one exposure
    one = XanesSession(register=False)
    one.add_dark(dark[0])
    one.add_flat(6200.0, flat[0])
    one.add_sample(6200.0, sample[0])
    _, cube_one = one.cube.block(6100, 6300)
    ratio = np.std(cube_one[0] - od) / np.std(cube_a[0] - od)
    assert 1.8 < ratio < 2.7, ratio  # sqrt(5) = 2.24


def test_chunk_saturated_in_one_exposure_is_flagged() -> None:
    s = XanesSession(register=False)
    flat = np.full((3, 8, 8), 20000, np.uint16)
    sample = np.full((3, 8, 8), 10000, np.uint16)
    sample[1, 2, 3] = 65535
    s.add_flat(6200.0, flat)
    s.add_sample(6200.0, sample)
    assert not s.cube.valid_mask(6100, 6300)[2, 3]
    assert s.cube.valid_mask(6100, 6300).sum() == 63


def test_illuminated_darks_rejected_with_a_named_error() -> None:
    s = XanesSession(register=False)
    s.add_dark(np.full((8, 8), 9000, np.uint16))  # beam on: 75 % of the flat
    s.add_flat(6200.0, np.full((8, 8), 12000, np.uint16))
    s.add_sample(6200.0, np.full((8, 8), 6000, np.uint16))
    assert any(e.startswith("IlluminatedDarkError") and "beam on" in e for e in s.errors), s.errors
    assert s.darks.count == 0 and s.n_rejected_darks == 1
    # the frame is still corrected, without dark: OD = ln 2
    np.testing.assert_allclose(s.cube.block(6100, 6300)[1][0], np.log(2.0), rtol=1e-5)
    # a later real dark is accepted, a later illuminated one rejected
    s.add_dark(np.full((8, 8), 100, np.uint16))
    s.add_dark(np.full((8, 8), 11000, np.uint16))
    assert s.darks.count == 1 and s.n_rejected_darks == 2


# ------------------------------------------------------------------------- documents level
def _fxi_docs(tmp_path, *, n_energies=12, chunk=3, shape=(32, 32), simu=False, units="keV", file_backed=False):
    from bluesky import RunEngine

    from txm_live.sim.fxi import make_fxi, xanes_scan2
    from txm_live.sim.phantom import make_phantom

    ph = make_phantom(shape, mode="pure", seed=0)
    fxi = make_fxi(ph, seed=0, margin_px=8, chunk_size=chunk, energy_units=units, file_backed=file_backed,
                   write_path=tmp_path / "raw")
    eng = np.round(np.linspace(6.008, 6.648, n_energies), 4)  # the Nd L3 window, keV
    docs: list = []
    RE = RunEngine({})
    RE.subscribe(lambda n, d: docs.append((n, d)))
    RE(xanes_scan2(fxi, eng, chunk_size=chunk, simu=simu))
    return docs, eng


def _retype(docs, *, factor: float, units: str | None):
    """Copy of FXI documents with XEng (and eng_list) multiplied by ``factor`` and ``units`` set/removed."""
    out = []
    for name, doc in docs:
        doc = copy.deepcopy(doc)
        if name == "start":
            doc["eng_list"] = [round(e * factor, 6) for e in doc["eng_list"]]
        elif name == "descriptor":
            key = doc["data_keys"]["XEng"]
            key.pop("units", None)
            if units is not None:
                key["units"] = units
        elif name == "event":
            doc["data"]["XEng"] = round(doc["data"]["XEng"] * factor, 6)
        out.append((name, doc))
    return out


def test_ev_kev_and_unitless_energies_give_the_same_cube(tmp_path) -> None:
    docs, eng = _fxi_docs(tmp_path)
    kw = dict(element="Nd", edges=("L3",))
    r_kev, cap_kev = _run(docs, **kw)
    r_ev, cap_ev = _run(_retype(docs, factor=1000.0, units="eV"), **kw)
    r_none, cap_none = _run(_retype(docs, factor=1.0, units=None), **kw)
    for cap in (cap_kev, cap_ev, cap_none):
        np.testing.assert_array_equal(cap.calls["L3"][0], np.round(eng * 1000, 6))
        np.testing.assert_array_equal(cap.calls["L3"][1], cap_kev.calls["L3"][1])
    assert r_kev.errors == r_ev.errors == r_none.errors == ()
    assert any("keV (converted to eV)" in n for n in r_kev.notes), r_kev.notes
    assert any(n == "energy units: eV" for n in r_ev.notes), r_ev.notes
    assert any("no units" in n and "keV" in n for n in r_none.notes), r_none.notes
    # 12 energies x 3 frames per event: 12 frames in the cube, none merged as "duplicates"
    assert r_kev.n_frames == r_ev.n_frames == r_none.n_frames == len(eng)


def test_energies_outside_every_window_get_a_named_error(tmp_path) -> None:
    docs, _ = _fxi_docs(tmp_path, n_energies=4)
    result, _ = _run(docs, element="Ni", edges=("K",))
    errs = [e for e in result.errors if e.startswith("EnergyRangeError")]
    assert len(errs) == 1, result.errors
    assert "6.008-6.648 keV" in errs[0] and "Ni K" in errs[0], errs[0]


def test_illuminated_darks_in_a_dry_run_are_flagged(tmp_path) -> None:
    docs, eng = _fxi_docs(tmp_path, simu=True)
    result, cap = _run(docs, element="Nd", edges=("L3",))
    flagged = [e for e in result.errors if e.startswith("IlluminatedDarkError")]
    assert len(flagged) == 1 and "beam on" in flagged[0], result.errors
    # the scan went on: every frame was corrected (no "shutter" frame skips)
    assert result.n_frames == len(eng)
    assert not any("usable pixels" in e for e in result.errors), result.errors


def test_file_backed_chunks_and_late_datum_documents(tmp_path) -> None:
    docs, eng = _fxi_docs(tmp_path, file_backed=True)
    assert any(n == "resource" and d["resource_kwargs"]["frame_per_point"] == 3 for n, d in docs)
    inline_docs, _ = _fxi_docs(tmp_path / "inline")
    _, cap_inline = _run(inline_docs, element="Nd", edges=("L3",))
    _, cap_file = _run(docs, element="Nd", edges=("L3",))
    np.testing.assert_array_equal(cap_file.calls["L3"][1], cap_inline.calls["L3"][1])
    # resource and datum documents after all the events (as some exports order them)
    late = [(n, d) for n, d in docs if n not in ("resource", "datum", "stop")]
    late += [(n, d) for n, d in docs if n in ("resource", "datum")] + [docs[-1]]
    result, cap_late = _run(late, element="Nd", edges=("L3",))
    assert result.n_frames == len(eng), result.errors
    np.testing.assert_array_equal(cap_late.calls["L3"][1], cap_inline.calls["L3"][1])


def test_ni_k_list_unitless_energy_key_follows_the_plan() -> None:
    """A real Ni K TXM energy list (keV, float32 rounding), motor without units or 'energy' in its name."""
    eng = np.loadtxt(helpers.need(NI_LIST))
    rng = np.random.default_rng(1)
    bundle = event_model.compose_run(metadata={"plan_name": "xanes_scan2", "eng_list": [float(e) for e in eng],
                                               "motors": ["dcm_th2", "XEng", "zps_sx"], "hints": {}})
    num = {"dtype": "number", "shape": [], "source": "sim"}
    img = {"dtype": "array", "shape": [2, 16, 16], "source": "sim", "dtype_numpy": "<u2"}
    keys = {"KinetixU_image": img, "XEng": dict(num), "dcm_th2": dict(num), "zps_sx": dict(num), "ic3": dict(num)}
    prim = bundle.compose_descriptor(name="primary", data_keys=keys)
    bkg = bundle.compose_descriptor(name="bkg", data_keys=keys)
    docs = [("start", bundle.start_doc), ("descriptor", prim.descriptor_doc), ("descriptor", bkg.descriptor_doc)]
    for e in eng:
        flat = rng.poisson(4000, (2, 16, 16)).astype(np.uint16)
        sample = rng.poisson(4000 * np.exp(-0.5), (2, 16, 16)).astype(np.uint16)
        row = {"XEng": float(e), "dcm_th2": 13.9, "zps_sx": 0.0, "ic3": 1.0}
        for desc, im in ((prim, sample), (bkg, flat)):
            data = {**row, "KinetixU_image": im}
            docs.append(("event", desc.compose_event(data=data, timestamps={k: 0.0 for k in data})))
    docs.append(("stop", bundle.compose_stop()))
    result, cap = _run(docs, element="Ni", edges=("K",))
    assert result.errors == (), result.errors
    np.testing.assert_allclose(cap.calls["K"][0], np.round(eng * 1000, 6)[(eng * 1000 >= 8133) & (eng * 1000 <= 8773)])
    notes = "\n".join(result.notes)
    assert "'XEng' (its value follows the planned list eng_list)" in notes, notes
    assert "keV" in notes and "'KinetixU_image'" in notes and "flat stream: 'bkg'" in notes, notes


def test_explicit_keys_win_over_autodetection(tmp_path) -> None:
    docs, eng = _fxi_docs(tmp_path)
    # zps_sx (0 for the sample frames) as an explicit energy key: used as told, nothing autodetected
    result, cap = _run(docs, element="Nd", edges=("L3",), energy_key="zps_sx", energy_units="keV")
    assert not any(n.startswith("energy key") for n in result.notes), result.notes
    assert any(e.startswith("InsufficientDataError") for e in result.errors), result.errors
    assert "L3" not in cap.calls  # every sample frame at "energy" 0: no L3 window to analyse


def test_error_counts_survive_the_cap() -> None:
    bundle = event_model.compose_run(metadata={"txm_live": {"energy_key": "e", "image_key": "img"}})
    desc = bundle.compose_descriptor(name="primary", data_keys={
        "e": {"dtype": "number", "shape": [], "source": "s", "units": "eV"},
        "img": {"dtype": "array", "shape": [8, 8], "source": "s"}})
    docs = [("start", bundle.start_doc), ("descriptor", desc.descriptor_doc)]
    good = np.full((8, 8), 1000, np.uint16)
    for i in range(250):
        bad = np.zeros((3, 4, 4, 4), np.uint16)  # 4-D: not a frame
        docs.append(("event", desc.compose_event(data={"e": 6000.0 + i, "img": bad if i % 50 else good},
                                                 timestamps={"e": 0, "img": 0})))
    docs.append(("stop", bundle.compose_stop()))
    result, _ = _run(docs, element="Nd", edges=("L3",))
    summary = [e for e in result.errors if e.startswith("TxmLiveError: error summary")]
    assert len(summary) == 1, result.errors[-5:]
    assert "FrameError x245" in summary[0]
    assert any(e.startswith("FrameError x245: ") for e in result.errors)


# ----------------------------------------------------------------------------------- I0 monitor
def test_i0_monitor_detection_rules() -> None:
    from txm_live.callbacks.ingest import i0_monitor

    scalar = {"dtype": "number", "shape": []}
    image = {"dtype": "array", "shape": [5, 8, 8]}
    start: dict = {"uid": "u"}
    dks = {"KinetixU_image": image, "XEng": scalar, "ic3": scalar}
    assert i0_monitor(start, dks, "primary", option=None) == (None, "")  # ic3: not conclusive by its name
    for name in ("I0", "i0", "dcm_i0", "I0_current", "mon-i0"):
        key, note = i0_monitor(start, {**dks, name: scalar}, "primary", option=None)
        assert key == name and "incident-intensity monitor" in note, (name, note)
    for name in ("ic1", "Ic0", "ion_chamber1", "sclr1_channels_chan2", "Io"):  # numbered chambers: the data decide
        assert i0_monitor(start, {**dks, name: scalar}, "primary", option=None) == (None, ""), name
    assert i0_monitor(start, {**dks, "i0": image}, "primary", option=None)[0] is None  # not a scalar
    assert i0_monitor(start, {**dks, "I0": scalar, "dcm_i0": scalar}, "primary", option=None)[0] == "I0"
    key, note = i0_monitor(start, {**dks, "dcm_i0": scalar, "bpm_i0": scalar}, "flat", option=None)
    assert key is None and "several monitor-like keys ['bpm_i0', 'dcm_i0'] in stream 'flat'" in note
    # the plan names its ion chamber (FXI's fly_scan: md "ion_chamber": ic3.name)
    assert i0_monitor({"uid": "u", "ion_chamber": "ic3"}, {**dks, "ic4": scalar}, "primary", option=None) == (
        "ic3", "'ic3' (the start document's 'ion_chamber')")
    # explicit option wins; False turns it off; the start document's contract in between
    assert i0_monitor(start, {**dks, "I0": scalar}, "primary", option="ic3") == ("ic3", "'ic3' (i0_key=)")
    assert i0_monitor(start, {**dks, "I0": scalar}, "primary", option=False) == (None, "off (i0_key=False)")
    contract = {"uid": "u", "txm_live": {"i0_key": "ic3"}}
    assert i0_monitor(contract, {**dks, "I0": scalar}, "primary", option=None)[0] == "ic3"
    off = {"uid": "u", "txm_live": {"i0_key": None}}
    assert i0_monitor(off, {**dks, "I0": scalar}, "primary", option=None)[0] is None
    key, note = i0_monitor(start, dks, "flat", option="I0")
    assert key is None and "not in stream 'flat'" in note


def test_i0_candidates_are_the_detectors_scalar_readings() -> None:
    from txm_live.callbacks.ingest import i0_candidates

    num = {"dtype": "number", "shape": []}
    dks = {"KinetixU_image": {"dtype": "array", "shape": [5, 8, 8]}, "XEng": {**num, "units": "keV"},
           "zps_sx": {**num, "units": "um"}, "ic3": num, "ic4": num, "sclr1_channels_chan2": num,
           "sclr1_time": {**num, "units": "s"}, "cam_temperature": {**num, "units": "degC"},
           "pixel_size": num, "ring_current": num}
    fxi = {"uid": "u", "detectors": ["ic3", "ic4", "KinetixU", "sclr1"], "motors": ["XEng", "zps_sx"]}
    assert i0_candidates(fxi, dks, exclude=("XEng", "pixel_size")) == ["ic3", "ic4", "sclr1_channels_chan2"]
    # no detectors list: every scalar that is not a motor, an excluded key, or in non-monitor units
    assert i0_candidates({"uid": "u", "motors": ["XEng"]}, dks, exclude=("pixel_size",)) == [
        "ic3", "ic4", "sclr1_channels_chan2", "ring_current"]
    # ophyd-async names: <device>-<signal>
    assert i0_candidates({"uid": "u", "detectors": ["ic1"]}, {"ic1-value": num, "ic10": num}) == ["ic1-value"]


def _pairs(choice, n, *, od, beam, readings, noise=0.0, seed=0):
    """Feed ``n`` sample/flat pairs (4 x 4 frames, dark 100) to a MonitorChoice; ``beam(i, kind)``
    gives the beam of each exposure, ``readings(i, kind, b, transmission)`` the candidates'."""
    rng = np.random.default_rng(seed)
    dark = np.full((4, 4), 100.0)
    for i in range(n):
        for kind in ("sample", "flat"):
            b = beam(i, kind)
            trans = np.exp(-od) if kind == "sample" else 1.0
            eff = 1.0 + 0.02 * i  # the camera's efficiency changes with the energy
            image = dark + 5000.0 * b * eff * trans * np.ones((4, 4))
            r = readings(i, kind, b, trans)
            r = {k: v * (1 + noise * rng.standard_normal()) for k, v in r.items()}
            choice.update(kind, 6000.0 + i, image, dark=dark, readings=r)
    return choice


def test_monitor_choice_tells_the_upstream_monitor_from_a_downstream_chamber() -> None:
    """Beam-free statistic: ln(a/b) - ln(S/F) = (1 - kappa) OD for a chamber seeing a fraction
    kappa of the sample's absorption (0 upstream, 1 downstream); a random reading does not
    follow the flats; a thin sample or no pair: none used, and the reason says why."""
    from txm_live.monitor import MonitorChoice

    def beam(i, kind):  # top-up sawtooth: a 30 % jump between some samples and their flats
        return 0.7 ** ((2 * i + (kind == "flat")) // 3)

    rng = np.random.default_rng(3)
    noise_reading = {i: rng.uniform(0.5, 1.5) for i in range(20)}

    def readings(i, kind, b, trans):
        return {"ic3": 2.0 * b, "ic4": 1.0 * b * trans, "temp": noise_reading[2 * i + (kind == "flat")],
                "ic_half": b * np.sqrt(trans)}

    od = 0.4
    ch = _pairs(MonitorChoice(["ic4", "ic3", "temp", "ic_half"], n_pairs=5), 5, od=od, beam=beam,
                readings=readings, noise=1e-3)
    assert ch.ready
    d = ch.decide()
    assert d.key == "ic3" and d.n_pairs == 5, d
    assert abs(d.mean_od - od) < 0.01, d.mean_od
    assert abs(d.seen["ic3"]) < 0.02 and abs(d.seen["ic4"] - 1) < 0.02 and abs(d.seen["ic_half"] - 0.5) < 0.02
    assert "'ic4' sees 100 %" in d.reason and "downstream" in d.reason, d.reason
    assert "'temp' does not follow the flats' counts" in d.reason and "unclear" in d.reason, d.reason
    # only a downstream chamber: never used
    d = _pairs(MonitorChoice(["ic4"]), 5, od=od, beam=beam, readings=readings).decide()
    assert d.key is None and "no upstream monitor" in d.reason and "'ic4' sees 100 %" in d.reason, d.reason
    # a sample absorbing nothing: the two cannot be told apart
    d = _pairs(MonitorChoice(["ic3", "ic4"]), 5, od=0.01, beam=beam, readings=readings).decide()
    assert d.key is None and "absorbs too little" in d.reason, d.reason
    # no flat at a sample's energy
    ch = MonitorChoice(["ic3"])
    ch.update("sample", 6000.0, np.full((2, 2), 900.0), readings={"ic3": 1.0})
    ch.update("flat", 6001.0, np.full((2, 2), 999.0), readings={"ic3": 1.0})
    assert not ch.ready and ch.decide().key is None and "no sample/flat pair" in ch.decide().reason
    with pytest.raises(ValueError, match="candidates"):
        MonitorChoice([])
    with pytest.raises(ValueError, match="kind"):
        MonitorChoice(["a"]).update("dark", 1.0, np.ones((2, 2)), readings={})


def test_frames_held_for_the_monitor_are_bounded_and_never_lost() -> None:
    """A plan taking every sample first, then every flat: no sample/flat pair within the first
    MAX_HELD_FRAMES events, so the monitor is decided (none, the note says why) and the held
    frames go on; every frame reaches the analysis, as with i0_key=False."""
    from txm_live.callbacks.run_ingest import MAX_HELD_FRAMES

    eng = np.arange(6150.0, 6290.0, 5.0)  # 28 energies: more samples than can be held
    assert eng.size > MAX_HELD_FRAMES
    rng = np.random.default_rng(2)
    bundle = event_model.compose_run(metadata={"plan_name": "xanes_scan", "detectors": ["cam", "ic1"],
                                               "motors": ["energy"]})
    num = {"dtype": "number", "shape": [], "source": "sim"}
    keys = {"cam_image": {"dtype": "array", "shape": [12, 12], "source": "sim"}, "energy": {**num, "units": "eV"},
            "ic1": dict(num)}
    prim = bundle.compose_descriptor(name="primary", data_keys=keys)
    flat = bundle.compose_descriptor(name="flat", data_keys=keys)
    docs = [("start", bundle.start_doc), ("descriptor", prim.descriptor_doc), ("descriptor", flat.descriptor_doc)]
    for desc, od in ((prim, 0.5), (flat, 0.0)):
        for e in eng:
            data = {"energy": float(e), "ic1": 2.0, "cam_image": rng.poisson(4000 * np.exp(-od), (12, 12)).astype(np.uint16)}
            docs.append(("event", desc.compose_event(data=data, timestamps={k: 0.0 for k in data})))
    docs.append(("stop", bundle.compose_stop()))
    result, cap = _run(docs, element="Nd", edges=("L3",))
    note = next(n for n in result.notes if n.startswith("sample I0 monitor"))
    assert note == "sample I0 monitor: no sample/flat pair at the same energy to compare ['ic1'] with the camera: " \
                   "none used; pass i0_key= to normalize by one", note
    off, cap_off = _run(docs, element="Nd", edges=("L3",), i0_key=False)
    assert result.n_frames == off.n_frames == eng.size, (result.n_frames, off.n_frames)
    np.testing.assert_array_equal(cap.calls["L3"][1], cap_off.calls["L3"][1])


def test_optical_density_divides_each_image_by_its_own_i0_not_the_dark() -> None:
    from txm_live.flatfield import optical_density

    rng = np.random.default_rng(1)
    od = rng.uniform(0.1, 2.0, (6, 7))
    dark = np.full((6, 7), 100.0)
    flat = dark + 10000.0 * 0.8  # beam at 80 % during the flat
    sample = dark + 10000.0 * 1.1 * np.exp(-od)  # 110 % during the sample
    got = optical_density(sample, flat, dark, i0=(1.1 * 3.0, 0.8 * 3.0), saturation=None).od
    np.testing.assert_allclose(got, od, rtol=0, atol=2e-6)  # float32 arithmetic
    plain = optical_density(sample, flat, dark, saturation=None).od
    np.testing.assert_allclose(plain - got, -np.log(1.1 / 0.8), rtol=0, atol=2e-6)
    with pytest.raises(ValueError, match="i0"):
        optical_density(sample, flat, dark, i0=(0.0, 1.0))
    with pytest.raises(ValueError, match="needs a flat image"):
        optical_density(sample, 5000.0, dark, i0=(1.0, 1.0))


# the Nd L3 energies (keV) of the I0 tests: coarse pre-edge, 4 eV across the edge
_I0_ENERGIES_KEV = np.round(np.concatenate([np.arange(6010, 6150, 26), np.arange(6150, 6188, 10),
                                            np.arange(6188, 6270, 4), np.arange(6290, 6650, 50)]) / 1000, 4)


def _keeping_cubes(cubes: dict):  # noqa: ANN202 - an analysis callable
    """``analyze_edge`` that also keeps each edge's optical-density block in ``cubes``."""
    from txm_live.phases import analyze_edge

    def analysis(energies, block, *, window, valid=None):
        cubes[window.edge] = np.array(block)
        return analyze_edge(energies, block, window=window, valid=valid)

    return analysis


def _i0_run(*, varying: bool, noise: bool, names: tuple[str, str] = ("I0", "ic4"), downstream: tuple = (),
            **cb_kw):
    """The FXI plan with an I0 ion chamber on a real RunEngine (40 x 40 px, Nd L3); the analysed
    L3 cube (None if no window was analysed), the RunResult and the ground-truth phase map.

    ``varying``: a storage ring losing 30 % between top-ups every 3 frames, so that the flat of an
    energy (taken right after its sample) sees 10 % less, or 20 % more, beam than the sample, in
    a pattern that changes from energy to energy; else a constant beam. No sample motion.
    """
    from bluesky import RunEngine

    from txm_live.callbacks.demo import ground_truth_labels
    from txm_live.sim.fxi import make_fxi, xanes_scan2
    from txm_live.sim.phantom import make_phantom

    beam = dict(beam_decay=True, topup_period_s=4.5, topup_decay=0.3) if varying else dict(beam_decay=False)
    phantom = make_phantom((40, 40), mode="pure", seed=0)
    fxi = make_fxi(phantom, seed=0, margin_px=4, noise=noise, jitter=False, drift=False, jumps=False,
                   ion_chamber_names=names, downstream=downstream, **beam)
    eng = _I0_ENERGIES_KEV
    cubes: dict = {}
    analysis = _keeping_cubes(cubes)
    cb = XanesLiveCallback(element="Nd", edges=("L3",), analysis=analysis, exafs=False,
                           analysis_process=False, **cb_kw)
    derived: list = []
    cb.subscribe(lambda name, doc: derived.append(doc) if name == "start" else None)
    RE = RunEngine({})
    RE.subscribe(cb)
    RE(xanes_scan2(fxi, eng, chunk_size=2))
    result = cb.wait(300)[-1]
    cb.close()
    if cb_kw.get("i0_key") is None:  # the derived run's start document records the ingest decisions
        for kind in ("sample", "flat"):
            assert derived[0]["txm_live"]["ingest"][f"{kind} I0 monitor"] == next(
                n.split(": ", 1)[1] for n in result.notes if n.startswith(f"{kind} I0 monitor"))
    return cubes.get("L3"), result, ground_truth_labels(fxi.txm, phantom, 6000.0, 1)


def test_i0_normalization_gives_the_constant_beam_optical_density() -> None:
    """Sample and flat frames see different beams; only dividing each by its own ion-chamber
    reading (darks not scaled) gives the optical density of the constant-beam run, the ground
    truth of this instrument. Noise-free, so that the cubes compare to 1e-3."""
    truth, constant, _ = _i0_run(varying=False, noise=False)
    with_i0, result, _ = _i0_run(varying=True, noise=False)
    without, plain, _ = _i0_run(varying=True, noise=False, i0_key=False)
    notes = "\n".join(result.notes)
    assert "sample I0 monitor: 'I0'" in notes and "flat I0 monitor: 'I0'" in notes, notes
    assert "I0 monitor: off (i0_key=False)" in "\n".join(plain.notes), plain.notes
    # 1e-3: counts rounded to integers (1/12500 relative) and float32; a dark scaled by I0 would
    # be off by ~D/F x 20 % = 1.6e-3 at every energy, an uncorrected beam by up to 0.26
    np.testing.assert_allclose(with_i0, truth, rtol=0, atol=1e-3)
    assert without is not None
    err = np.abs(without - truth).max(axis=(1, 2))
    assert np.median(err) > 0.05 and err.max() > 0.15, err
    # a constant beam: the I0 ratio is 1, normalizing changes nothing beyond float32 rounding
    truth_off, _, _ = _i0_run(varying=False, noise=False, i0_key=False)
    np.testing.assert_allclose(truth_off, truth, rtol=0, atol=1e-5)


def test_fxi_ion_chambers_ic3_ic4_upstream_monitor_decided_from_the_data() -> None:
    """FXI's plan reads ``ic3`` and ``ic4``: names that say nothing about where they sit. With
    the beam losing 30 % every 3 frames, the monitor is decided from the first sample/flat pairs
    (both chambers upstream: either is right, the one following the flats best is used) and the
    optical density is the constant beam's within 1e-3 (noise-free). A chamber placed after the
    sample follows its absorption and is never chosen; with only such chambers, none is used
    and the optical density is the one without I0."""
    truth, _, _ = _i0_run(varying=False, noise=False, names=("ic3", "ic4"))
    cube, result, _ = _i0_run(varying=True, noise=False, names=("ic3", "ic4"))
    note = next(n for n in result.notes if n.startswith("sample I0 monitor"))
    assert note.startswith("sample I0 monitor: 'ic3' (decided from the first 5 sample/flat pairs"), note
    assert "an upstream monitor" in note and "['ic4'] also qualifies" in note, note
    np.testing.assert_allclose(cube, truth, rtol=0, atol=1e-3)  # see the test above for 1e-3
    # ic3 after the sample: ic4 is the monitor, ic3 is named as following the sample's absorption
    cube, result, _ = _i0_run(varying=True, noise=False, names=("ic3", "ic4"), downstream=("ic3",))
    note = next(n for n in result.notes if n.startswith("flat I0 monitor"))
    assert note.startswith("flat I0 monitor: 'ic4' (decided"), note
    assert "'ic3' sees 100 % (it follows the sample's absorption" in note, note
    np.testing.assert_allclose(cube, truth, rtol=0, atol=1e-3)
    # both after the sample: none is used (the beam is then not corrected, as with i0_key=False)
    cube, result, _ = _i0_run(varying=True, noise=False, names=("ic3", "ic4"), downstream=("ic3", "ic4"))
    note = next(n for n in result.notes if n.startswith("sample I0 monitor"))
    assert note.startswith("sample I0 monitor: no upstream monitor from the first 5 sample/flat pairs"), note
    off, _, _ = _i0_run(varying=True, noise=False, names=("ic3", "ic4"), i0_key=False)
    np.testing.assert_array_equal(cube, off)


def _async_i0_run(tmp_path, *, varying: bool, downstream: bool = False):
    """The ophyd-async variant (StreamResource/StreamDatum, 2 collections per event) with its
    ion chamber ``ic3`` (data key ``ic3-value``) on a real RunEngine, noise-free, 40 x 40 px;
    the analysed L3 cube and the RunResult."""
    from bluesky import RunEngine

    from txm_live.sim.async_detector import make_async_txm, xanes_scan_async
    from txm_live.sim.phantom import make_phantom

    beam = dict(beam_decay=True, topup_period_s=4.5, topup_decay=0.3) if varying else dict(beam_decay=False)
    RE = RunEngine({})
    bl = make_async_txm(make_phantom((40, 40), mode="pure", seed=0), tmp_path, seed=0, margin_px=4, noise=False,
                        jitter=False, drift=False, jumps=False, frames_per_event=2, ion_chamber_downstream=downstream,
                        **beam)
    eng = _I0_ENERGIES_KEV
    cubes: dict = {}
    analysis = _keeping_cubes(cubes)
    cb = XanesLiveCallback(element="Nd", edges=("L3",), analysis=analysis, exafs=False, analysis_process=False)
    names: list = []
    RE.subscribe(lambda name, doc: names.append(name))
    RE.subscribe(cb)
    RE(xanes_scan_async(bl, eng))
    result = cb.wait(300)[-1]
    cb.close()
    assert "stream_datum" in names
    return cubes.get("L3"), result


def test_ophyd_async_ion_chamber_takes_the_same_i0_path(tmp_path) -> None:
    """The ophyd-async variant's ion chamber (an ophyd-async StandardReadable over a soft signal,
    gated by the camera's exposures) is decided from the data as FXI's ic3, and the varying
    beam's optical density is the constant beam's within 1e-3; placed after the sample, it is
    not used."""
    truth, _ = _async_i0_run(tmp_path / "c", varying=False)
    cube, result = _async_i0_run(tmp_path / "v", varying=True)
    assert result.errors == (), result.errors
    note = next(n for n in result.notes if n.startswith("sample I0 monitor"))
    assert note.startswith("sample I0 monitor: 'ic3-value' (decided from the first 5 sample/flat pairs"), note
    np.testing.assert_allclose(cube, truth, rtol=0, atol=1e-3)
    cube, result = _async_i0_run(tmp_path / "d", varying=True, downstream=True)
    note = next(n for n in result.notes if n.startswith("flat I0 monitor"))
    assert "no upstream monitor" in note and "'ic3-value' sees 100 %" in note, note
    assert np.abs(cube - truth).max() > 0.1  # the beam is then not corrected
    assert any(e.startswith("InsufficientDataError: Nd L3") for e in result.errors), result.errors


def test_i0_normalization_recovers_the_constant_beam_phase_map() -> None:
    """With photon noise: the phase map of the varying beam, normalized by I0, agrees with the
    sample's ground truth as well as the constant-beam map does; without I0 the jagged beam hides
    the edge step of every pixel and there is no phase map at all.

    Not label-for-label: the two beams give different photon counts, hence different noise
    draws, and at 40 px the clustering moves with them (measured, ARI against the truth: 0.963
    with I0, 0.967 with a constant beam)."""
    from txm_live.preview import agreement

    _, constant, truth = _i0_run(varying=False, noise=True)
    _, with_i0, _ = _i0_run(varying=True, noise=True)
    _, plain, _ = _i0_run(varying=True, noise=True, i0_key=False)
    assert constant.errors == () and with_i0.errors == (), (constant.errors, with_i0.errors)
    ari_constant, ari_i0 = agreement(constant.l3, truth), agreement(with_i0.l3, truth)
    assert ari_constant >= 0.9 and ari_i0 >= 0.9 and ari_i0 >= ari_constant - 0.02, (ari_constant, ari_i0)
    assert plain.l3 is None and any(e.startswith("InsufficientDataError: Nd L3") for e in plain.errors), plain.errors
