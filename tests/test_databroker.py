"""Replay from a real databroker 2.x catalog (``databroker.temp()``) written during a RunEngine scan,
and references (``flats_from``) read from it.

The FXI-style plan (keV motor, chunks of frames per trigger) runs on a real RunEngine with the
catalog's ``insert`` and the live callback subscribed; replaying the catalog (as the ``Broker``,
as a v1 ``Header`` and as a ``BlueskyRun``) reads the frames from the catalog's array nodes (never
JSON ``documents()``) and must give the live labels exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("databroker")
pytest.importorskip("mongomock")

from txm_live.callbacks.live import XanesLiveCallback  # noqa: E402

KW = dict(element="Nd", edges=("L3",))


def _factory():
    return XanesLiveCallback(**KW)


@pytest.fixture(scope="module")
def recorded():
    from bluesky import RunEngine
    from databroker import temp

    from txm_live.sim.fxi import make_fxi, xanes_scan2
    from txm_live.sim.phantom import make_phantom

    db = temp()
    ph = make_phantom((40, 40), mode="pure", seed=0)
    fxi = make_fxi(ph, seed=0, margin_px=8)
    # a short L3 list (39 energies, keV): the MongoDB-backed temp() catalog rebuilds arrays
    # from the stored event documents, slowly (seconds per 10 events)
    eng = np.round(np.concatenate([np.arange(6010, 6150, 26), np.arange(6150, 6188, 10),
                                   np.arange(6188, 6270, 4), np.arange(6290, 6650, 50)]) / 1000, 4)
    RE = RunEngine({})
    docs: list = []
    RE.subscribe(db.insert)
    RE.subscribe(lambda n, d: docs.append((n, d)))
    cb = _factory()
    RE.subscribe(cb)
    (uid,) = RE(xanes_scan2(fxi, eng, chunk_size=2))
    live = cb.wait(600)[-1]
    cb.close()
    return db, uid, live, docs


def test_live_result_of_the_recorded_run(recorded) -> None:
    _, uid, live, _ = recorded
    assert live.run_uid == uid and live.errors == (), live.errors
    assert live.l3 is not None


@pytest.mark.parametrize("form", ["broker", "header", "bluesky_run"])
def test_databroker_replay_gives_the_live_labels(recorded, form) -> None:
    from txm_live.callbacks.replay import replay_runs

    db, uid, live, _ = recorded
    if form == "broker":
        results = replay_runs(db, [uid], progress=False, callback_factory=_factory)
    elif form == "header":
        results = replay_runs(db[uid], progress=False, callback_factory=_factory)
    else:
        results = replay_runs(db.v2[uid], progress=False, callback_factory=_factory)
    (r,) = results
    assert r.run_uid == uid and r.errors == (), r.errors
    assert r.n_frames == live.n_frames
    np.testing.assert_array_equal(r.l3.labels, live.l3.labels)
    assert any("'XEng'" in n for n in r.notes), r.notes


def test_flats_from_another_run(recorded) -> None:
    """A run without flats, analysed with flats_from=<uid> of the catalog, equals the run with its own.

    The live run chose its I0 monitor from its own sample/flat pairs ('ic3'); a run without flats
    has no such pair, so the monitor is given (i0_key=) to normalize both runs' frames alike;
    without it, no monitor is used and the note says why."""
    db, uid, live, docs = recorded
    assert any(n.startswith("sample I0 monitor: 'ic3' (decided") for n in live.notes), live.notes
    flat_desc = {d["uid"] for n, d in docs if n == "descriptor" and d["name"] == "flat"}
    no_flats = [(n, d) for n, d in docs
                if not (n == "descriptor" and d["uid"] in flat_desc)
                and not (n == "event" and d["descriptor"] in flat_desc)]
    name, stop = no_flats[-1]  # a run without flats: its stop counts no flat events
    no_flats[-1] = (name, dict(stop, num_events={k: v for k, v in stop["num_events"].items() if k != "flat"}))
    cb = XanesLiveCallback(flats_from=uid, reference_catalog=db, i0_key="ic3", **KW)
    for name, doc in no_flats:
        cb(name, doc)
    r = cb.wait(600)[-1]
    cb.close()
    assert r.errors == (), r.errors
    assert any(n.startswith("flats from: run ") for n in r.notes), r.notes
    np.testing.assert_array_equal(r.l3.labels, live.l3.labels)
    cb = XanesLiveCallback(flats_from=uid, reference_catalog=db, **KW)
    for name, doc in no_flats:
        cb(name, doc)
    undecided = cb.wait(600)[-1]
    cb.close()
    assert any(n.startswith("sample I0 monitor: no sample/flat pair") for n in undecided.notes), undecided.notes
    # without them: no flat, every frame dropped
    cb = XanesLiveCallback(**KW)
    for name, doc in no_flats:
        cb(name, doc)
    bare = cb.wait(600)[-1]
    cb.close()
    assert bare.l3 is None and any("MissingFlatError" in e for e in bare.errors), bare.errors


def test_flats_from_an_unknown_run_is_a_named_error(recorded) -> None:
    db, uid, live, docs = recorded
    cb = XanesLiveCallback(flats_from="ffffffff-0000", reference_catalog=db, **KW)
    for name, doc in docs:
        cb(name, doc)
    r = cb.wait(600)[-1]
    cb.close()
    assert any(e.startswith("DocumentError: flats_from ffffffff-0000") for e in r.errors), r.errors
    np.testing.assert_array_equal(r.l3.labels, live.l3.labels)  # its own flats still used


# ------------------------------------------------------------------ AD_HDF5 resource/datum frames
@pytest.fixture(scope="module")
def recorded_ad_hdf5(tmp_path_factory):
    """The FXI plan with a file-backed camera (one AD_HDF5 file for all streams, ``frame_per_point``
    = 2, one datum per trigger) into a real ``databroker.temp()`` catalog, analysed live."""
    pytest.importorskip("area_detector_handlers")
    from bluesky import RunEngine
    from databroker import temp

    from txm_live.sim.fxi import make_fxi, xanes_scan2
    from txm_live.sim.phantom import make_phantom

    db = temp()
    fxi = make_fxi(make_phantom((32, 32), mode="pure", seed=0), seed=0, margin_px=8, file_backed=True,
                   write_path=tmp_path_factory.mktemp("ad_hdf5"))
    eng = np.round(np.concatenate([np.arange(6010, 6150, 26), np.arange(6150, 6188, 10),
                                   np.arange(6188, 6270, 4), np.arange(6290, 6650, 50)]) / 1000, 4)
    RE = RunEngine({})
    names: list = []
    RE.subscribe(db.insert)
    RE.subscribe(lambda n, d: names.append(n))
    cb = _factory()
    RE.subscribe(cb)
    (uid,) = RE(xanes_scan2(fxi, eng, chunk_size=2))
    live = cb.wait(600)[-1]
    cb.close()
    assert names.count("resource") == 1 and names.count("datum") == 1 + 2 * eng.size
    return db, uid, live


def test_ad_hdf5_frames_replay_from_databroker_to_the_live_labels(recorded_ad_hdf5) -> None:
    """The catalog fills the datum references through the AD_HDF5 handler of
    area-detector-handlers (point_number x frame_per_point): the replay sees the same chunks."""
    from txm_live.callbacks.replay import replay_run, replay_runs

    db, uid, live = recorded_ad_hdf5
    assert live.errors == () and live.l3 is not None, live.errors
    shapes: list = []
    replay_run(db, uid, lambda n, d: shapes.extend(
        np.asarray(x).shape for x in d["data"]["KinetixU_image"]) if n == "event_page" else None, progress=False)
    assert set(shapes) == {(2, 32 + 16, 32 + 16)}, set(shapes)  # a chunk of 2 frames per event
    (r,) = replay_runs(db, [uid], progress=False, callback_factory=_factory)
    assert r.run_uid == uid and r.errors == (), r.errors
    assert r.n_frames == live.n_frames
    np.testing.assert_array_equal(r.l3.labels, live.l3.labels)
