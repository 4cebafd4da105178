"""The xanes_scan plan on a real bluesky RunEngine: documents, contract, file-backed images."""

from __future__ import annotations

from collections import Counter, defaultdict
from urllib.parse import urlparse

import h5py
import numpy as np
import pytest
from bluesky import RunEngine
from event_model import DocumentNames, schema_validators

from txm_live.sim.devices import make_txm
from txm_live.sim.effects import EffectsConfig
from txm_live.sim.phantom import make_phantom
from txm_live.sim.plans import CONTRACT_VERSION, coarse_energies, default_energies, xanes_scan

SHAPE = (64, 64)
N_DARK = 3
ENERGIES = coarse_energies(24)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(shape=SHAPE, seed=0)


def run_scan(txm, energies=ENERGIES, *, extra_callback=None, **kwargs):
    docs: list[tuple[str, dict]] = []
    RE = RunEngine({}, call_returns_result=True)
    if extra_callback is not None:
        RE.subscribe(extra_callback)
    result = RE(xanes_scan(txm, energies, n_dark=N_DARK, **kwargs), lambda name, doc: docs.append((name, doc)))
    assert result.exit_status == "success"
    for name, doc in docs:
        schema_validators[DocumentNames[name]].validate(doc)
    return docs


def events_by_stream(docs):
    names = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    out = defaultdict(list)
    for n, d in docs:
        if n == "event":
            out[names[d["descriptor"]]].append(d)
    return out


@pytest.fixture(scope="module")
def inline_docs(phantom):
    return run_scan(make_txm(phantom, seed=7, margin_px=24), md={"operator": "test"})


class LiveFrameReader:
    """Reads each referenced frame from its HDF5 file while the scan is still writing it."""

    def __init__(self):
        self.resources: dict[str, dict] = {}
        self.frames: dict[str, np.ndarray] = {}  # stream_datum uid -> frame

    def __call__(self, name, doc):
        if name == "stream_resource":
            self.resources[doc["uid"]] = doc
        elif name == "stream_datum":
            res = self.resources[doc["stream_resource"]]
            with h5py.File(urlparse(res["uri"]).path, "r", swmr=True) as f:
                self.frames[doc["uid"]] = f[res["parameters"]["dataset"]][doc["indices"]["start"]]


@pytest.fixture(scope="module")
def file_docs(phantom, tmp_path_factory):
    path = tmp_path_factory.mktemp("frames")
    reader = LiveFrameReader()
    docs = run_scan(make_txm(phantom, seed=7, margin_px=24, file_backed=True, write_path=path),
                    extra_callback=reader)
    return docs, reader.frames


def test_start_document_follows_contract(inline_docs, phantom):
    start = inline_docs[0][1]
    assert inline_docs[0][0] == "start"
    assert start["plan_name"] == "xanes_scan"
    assert start["operator"] == "test"
    c = start["txm_live"]
    assert c == {
        "contract_version": CONTRACT_VERSION,
        "energy_key": "mono_energy",
        "image_key": "camera_image",
        "pixel_size_key": "camera_pixel_size",
        "primary_stream": "primary",
        "flat_stream": "flat",
        "dark_stream": "dark",
        "element": "Nd",
        "edges": ["L3", "L2"],
        "energies": [float(e) for e in ENERGIES],
        "image_shape": [SHAPE[0] + 48, SHAPE[1] + 48],
        "pixel_size_nm": pytest.approx(phantom.pixel_size_nm),
    }
    assert inline_docs[-1][0] == "stop" and inline_docs[-1][1]["exit_status"] == "success"


def test_streams_keys_and_order(inline_docs):
    descriptors = {d["name"]: d for n, d in inline_docs if n == "descriptor"}
    assert set(descriptors) == {"dark", "primary", "flat"}
    assert {"mono_energy", "camera_image", "camera_pixel_size"} <= set(descriptors["primary"]["data_keys"])
    assert {"mono_energy", "camera_image"} <= set(descriptors["flat"]["data_keys"])
    assert "camera_image" in descriptors["dark"]["data_keys"]
    for desc in descriptors.values():
        for key in desc["data_keys"].values():
            assert "dtype_numpy" in key
        img = desc["data_keys"]["camera_image"]
        assert img["shape"] == [SHAPE[0] + 48, SHAPE[1] + 48] and img["dtype_numpy"] == "<u2"
    ev = events_by_stream(inline_docs)
    assert len(ev["dark"]) == 2 * N_DARK
    assert len(ev["primary"]) == len(ev["flat"]) == len(ENERGIES)
    np.testing.assert_allclose([e["data"]["mono_energy"] for e in ev["primary"]], ENERGIES)
    np.testing.assert_allclose([e["data"]["mono_energy"] for e in ev["flat"]], ENERGIES)
    # document order: darks, then (primary, flat) per energy, then darks
    names = {d["uid"]: d["name"] for n, d in inline_docs if n == "descriptor"}
    order = [names[d["descriptor"]] for n, d in inline_docs if n == "event"]
    assert order == ["dark"] * N_DARK + ["primary", "flat"] * len(ENERGIES) + ["dark"] * N_DARK
    for e in ev["primary"] + ev["flat"] + ev["dark"]:
        img = e["data"]["camera_image"]
        assert isinstance(img, np.ndarray) and img.dtype == np.uint16
    # the dark frames are dark, the flats brighter than the samples
    assert max(e["data"]["camera_image"].mean() for e in ev["dark"]) < 110
    for p, f in zip(ev["primary"], ev["flat"]):
        assert p["data"]["camera_image"].mean() < f["data"]["camera_image"].mean()


def test_pixel_size_per_frame_grows_17_percent(inline_docs):
    ev = events_by_stream(inline_docs)
    sizes = np.array([e["data"]["camera_pixel_size"] for e in ev["primary"]])
    assert np.all(np.diff(sizes) > 0)
    assert sizes[-1] / sizes[0] == pytest.approx(7023.0 / 6000.0)
    assert 0.16 < sizes[-1] / sizes[0] - 1 < 0.18


def test_file_backed_documents_and_frames_equal_inline(inline_docs, file_docs):
    """Frames read live (during the scan) through the resource parameters equal the inline ones."""
    file_docs, live_frames = file_docs
    counts = Counter(n for n, _ in file_docs)
    assert counts["stream_resource"] == 3
    assert counts["stream_datum"] == counts["event"] == 2 * N_DARK + 2 * len(ENERGIES)
    descriptors = {d["uid"]: d for n, d in file_docs if n == "descriptor"}
    for desc in descriptors.values():
        assert desc["data_keys"]["camera_image"]["external"] == "STREAM:"
        assert desc["data_keys"]["camera_image"]["dtype_numpy"] == "<u2"
    resources = {d["uid"]: d for n, d in file_docs if n == "stream_resource"}
    for res in resources.values():
        assert res["mimetype"] == "application/x-hdf5"
        assert res["data_key"] == "camera_image"
        assert res["parameters"]["dataset"] == "/entry/data/data"
        assert res["run_start"] == file_docs[0][1]["uid"]
    # each resource is referenced from exactly one stream
    streams_per_resource = defaultdict(set)
    frames = defaultdict(dict)  # stream -> seq_num -> image
    for n, d in file_docs:
        if n == "stream_datum":
            res = resources[d["stream_resource"]]
            stream = descriptors[d["descriptor"]]["name"]
            streams_per_resource[res["uid"]].add(stream)
            assert d["indices"]["stop"] - d["indices"]["start"] == 1
            assert d["seq_nums"]["stop"] - d["seq_nums"]["start"] == 1
            frames[stream][d["seq_nums"]["start"]] = live_frames[d["uid"]]
            path = urlparse(res["uri"]).path
            with h5py.File(path, "r") as f:  # after the run: file closed, same content
                np.testing.assert_array_equal(f[res["parameters"]["dataset"]][d["indices"]["start"]],
                                              live_frames[d["uid"]])
    assert all(len(s) == 1 for s in streams_per_resource.values())
    for n, d in file_docs:
        if n == "event":
            assert "camera_image" not in d["data"]
    inline = events_by_stream(inline_docs)
    for stream, events in inline.items():
        assert sorted(frames[stream]) == [e["seq_num"] for e in events]
        for e in events:
            np.testing.assert_array_equal(frames[stream][e["seq_num"]], e["data"]["camera_image"])


def test_file_backed_second_run_gets_new_files(phantom, tmp_path):
    txm = make_txm(phantom, margin_px=8, file_backed=True, write_path=tmp_path)
    uris = []
    for _ in range(2):
        docs = run_scan(txm, energies=[6000.0, 6001.0])
        uris.append({d["uri"] for n, d in docs if n == "stream_resource"})
    assert len(uris[0]) == len(uris[1]) == 3 and not uris[0] & uris[1]
    assert len(list(tmp_path.glob("*.h5"))) == 6


def test_ideal_scan_recovers_phantom_od(phantom):
    """Through the whole RunEngine path, an ideal instrument gives back the phantom OD."""
    margin = 8
    txm = make_txm(phantom, effects=EffectsConfig.all_off(margin_px=margin, noise=True))
    energies = [6150.0, 6230.0, 6800.0]
    ev = events_by_stream(run_scan(txm, energies=energies))
    dark = np.mean([e["data"]["camera_image"] for e in ev["dark"]], axis=0)
    for energy, p, f in zip(energies, ev["primary"], ev["flat"]):
        od = -np.log((p["data"]["camera_image"] - dark) / (f["data"]["camera_image"] - dark))
        truth = phantom.optical_density(energy)
        inner = od[margin:-margin, margin:-margin]
        assert np.abs(inner - truth).mean() < 0.03
        assert np.corrcoef(inner.ravel(), truth.ravel())[0, 1] > 0.95


def test_energy_helpers_and_plan_validation(phantom):
    e = default_energies()
    assert e.shape == (1024,) and e[0] == 6000.0 and e[-1] == 7023.0
    np.testing.assert_allclose(np.diff(e), 1.0)
    assert coarse_energies(10)[-1] == 7023.0
    with pytest.raises(ValueError, match="n_points"):
        coarse_energies(1)
    txm = make_txm(phantom, margin_px=8)
    with pytest.raises(ValueError, match="energies"):
        list(xanes_scan(txm, []))
    with pytest.raises(ValueError, match="n_dark"):
        list(xanes_scan(txm, [6000.0], n_dark=-1))
    with pytest.raises(ValueError, match="txm_live"):
        list(xanes_scan(txm, [6000.0], md={"txm_live": {}}))


def test_file_backed_documents_consolidate_in_tiled(file_docs):
    """The Tiled writer's HDF5 consolidator accepts the documents and reads every frame."""
    consolidators = pytest.importorskip("bluesky_tiled_plugins.writing.consolidators")
    file_docs, live_frames = file_docs
    descriptors = {d["uid"]: d for n, d in file_docs if n == "descriptor"}
    resources = {d["uid"]: d for n, d in file_docs if n == "stream_resource"}
    made = {}
    for n, d in file_docs:
        if n == "stream_datum":
            key = d["stream_resource"]
            if key not in made:
                made[key] = consolidators.consolidator_factory(resources[key], descriptors[d["descriptor"]])
            made[key].consume_stream_datum(d)
    shapes = {descriptors[d["descriptor"]]["name"]: made[d["stream_resource"]].structure().shape
              for n, d in file_docs if n == "stream_datum"}
    assert shapes == {"dark": (2 * N_DARK, 112, 112), "primary": (len(ENERGIES), 112, 112),
                      "flat": (len(ENERGIES), 112, 112)}
    for c in made.values():
        data = np.asarray(c.init_adapter().read())
        assert data.dtype == np.uint16 and data.shape == c.structure().shape


def test_pause_resume_replays_from_last_energy_checkpoint(phantom, tmp_path):
    """A hard pause mid-energy rewinds to the energy checkpoint; the retaken events repeat the
    seq_num and energy of the dropped ones (consumers let the later frame win) and the
    file-backed documents stay valid and consistent."""
    from bluesky.preprocessors import plan_mutator
    from bluesky.utils import Msg, RunEngineInterrupted

    txm = make_txm(phantom, margin_px=8, file_backed=True, write_path=tmp_path)
    RE = RunEngine({})
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    saves = {"n": 0}

    def pause_after_second_primary(msg):
        # a hard pause right after the 2nd sample image, before its flat: deterministic
        if msg.command == "save":
            saves["n"] += 1
            if saves["n"] == N_DARK + 3:
                def then_pause():
                    yield msg
                    yield Msg("pause", None, defer=False)
                return then_pause(), None
        return None, None

    energies = coarse_energies(5)
    with pytest.raises(RunEngineInterrupted):
        RE(plan_mutator(xanes_scan(txm, energies, n_dark=N_DARK), pause_after_second_primary))
    assert RE.state == "paused"
    RE.resume()
    assert docs[-1][0] == "stop" and docs[-1][1]["exit_status"] == "success"
    for name, doc in docs:
        schema_validators[DocumentNames[name]].validate(doc)
    ev = events_by_stream(docs)
    seen = {}
    for e in ev["primary"]:
        seen[e["seq_num"]] = e["data"]["mono_energy"]  # later events replace earlier ones
    assert [seen[k] for k in sorted(seen)] == pytest.approx(list(energies))
    assert len(ev["primary"]) == len(energies) + 1 and len(ev["flat"]) == len(energies)
    assert ev["primary"][1]["seq_num"] == ev["primary"][2]["seq_num"] == 2
    # every stream_datum points at a distinct, existing row of its file
    resources = {d["uid"]: d for n, d in docs if n == "stream_resource"}
    rows = defaultdict(set)
    for n, d in docs:
        if n == "stream_datum":
            res = resources[d["stream_resource"]]
            assert d["indices"]["start"] not in rows[res["uid"]]
            rows[res["uid"]].add(d["indices"]["start"])
            with h5py.File(urlparse(res["uri"]).path, "r") as f:
                assert d["indices"]["start"] < f[res["parameters"]["dataset"]].shape[0]


def test_file_backed_frames_go_to_a_folder_named_after_the_run_uid(phantom, tmp_path):
    """What ``txm-live demo --size full`` does: a start subscriber puts each run's files in raw/<uid>/."""
    txm = make_txm(phantom, margin_px=8, file_backed=True, write_path=tmp_path)
    RE = RunEngine({})
    RE.subscribe(lambda name, doc: txm.camera.set_write_path(tmp_path / doc["uid"]) if name == "start" else None)
    uids = [RE(xanes_scan(txm, [6000.0, 6001.0]))[0] for _ in range(2)]
    for uid in uids:
        files = sorted(p.name for p in (tmp_path / uid).glob("*.h5"))
        assert len(files) == 3, files  # dark, sample and flat frames of that run only
    assert not list(tmp_path.glob("*.h5"))  # nothing outside the run folders
