"""Replay of simulated scans recorded in a real embedded Tiled server, against the live analysis."""

from __future__ import annotations

import numpy as np
import pytest
from bluesky import RunEngine
from event_model import DocumentNames, schema_validators, unpack_event_page

from txm_live.callbacks.catalog import make_writer, record_to, start_embedded_server
from txm_live.callbacks.live import XanesLiveCallback
from txm_live.callbacks.replay import (
    find_catalog_directory,
    replay_run,
    replay_runs,
    resolve_run,
)
from txm_live.callbacks.results_file import collect_documents, publish_results, read_results
from txm_live.errors import DocumentError
from txm_live.sim.devices import make_txm
from txm_live.sim.phantom import make_phantom
from txm_live.sim.plans import xanes_scan

SHAPE = (40, 40)
# dense around the L3 (6208 eV) and L2 (6722 eV) edges, coarse elsewhere
ENERGIES = np.concatenate([np.arange(6000.0, 6190.0, 20.0), np.arange(6190.0, 6240.0, 2.0),
                           np.arange(6240.0, 6700.0, 20.0), np.arange(6700.0, 6760.0, 3.0),
                           np.arange(6760.0, 7024.0, 25.0)])


# the inline run only checks transport; the file-backed one (production path) is also analysed live
ENERGIES_OF = {False: ENERGIES[::4], True: ENERGIES}


@pytest.fixture(scope="module")
def recorded(tiled, workdir):
    """Two runs (inline, file-backed) recorded; the live analysis ran on the file-backed one."""
    phantom = make_phantom(shape=SHAPE, seed=1)
    out = {}
    for file_backed in (False, True):
        RE = RunEngine({})
        docs: list[tuple[str, dict]] = []
        RE.subscribe(lambda name, doc: docs.append((name, doc)))
        live = XanesLiveCallback() if file_backed else None
        derived = collect_documents()
        if live is not None:
            live.subscribe(derived)
            RE.subscribe(live)
        recording = record_to(RE, tiled.client())
        txm = make_txm(phantom, seed=11, margin_px=4, file_backed=file_backed,
                       write_path=workdir / "frames")
        (uid,) = RE(xanes_scan(txm, ENERGIES_OF[file_backed], n_dark=2))
        assert recording.flush(timeout=120) and recording.errors == []
        recording.close()
        results = live.close(timeout=300) if live is not None else None
        out[file_backed] = (uid, docs, results)
        out["derived"] = derived
    return out


def _events(docs):
    """(stream, seq_num, data) of every event, in emission order (pages unpacked)."""
    names = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    rows = []
    for n, d in docs:
        pages = [d] if n == "event_page" else []
        evs = [d] if n == "event" else [e for p in pages for e in unpack_event_page(p)]
        rows += [(names[e["descriptor"]], e["seq_num"], e["data"]) for e in evs]
    return rows


@pytest.mark.parametrize("file_backed,direct", [(False, True), (True, True), (True, False)])
def test_replay_emits_the_live_documents(tiled, recorded, file_backed, direct):
    uid, live_docs, _ = recorded[file_backed]
    replayed: list[tuple[str, dict]] = []
    stats = replay_run(tiled.client(), uid, lambda n, d: replayed.append((n, d)),
                       progress=False, block_size=16, direct_files=direct)
    n_e = ENERGIES_OF[file_backed].size
    assert stats.n_events == {"dark": 4, "primary": n_e, "flat": n_e}
    assert stats.warnings == ()
    mode = "hdf5" if (file_backed and direct) else "http"
    assert stats.sources == {f"{s}/camera_image": mode for s in ("dark", "primary", "flat")}
    names = [n for n, _ in replayed]
    assert names[0] == "start" and names[-1] == "stop" and names.count("descriptor") == 3
    # descriptors come as live: each right before the first event of its stream
    for k, (n, d) in enumerate(replayed):
        if n == "descriptor":
            assert replayed[k + 1][0] == "event_page"
            assert replayed[k + 1][1]["descriptor"] == d["uid"]
    for n, d in replayed:
        schema_validators[DocumentNames[n]].validate(d)
    live_start = live_docs[0][1]
    assert replayed[0][1]["uid"] == uid
    assert replayed[0][1]["txm_live"]["energies"] == live_start["txm_live"]["energies"]
    for n, d in replayed:
        if n == "descriptor":  # every image arrives inline in a replay
            assert "external" not in d["data_keys"]["camera_image"]
            assert d["data_keys"]["camera_image"]["dtype_numpy"] == "<u2"
    live_rows, rep_rows = _events(live_docs), _events(replayed)
    assert [r[:2] for r in rep_rows] == [r[:2] for r in live_rows]  # acquisition order
    streams = [r[0] for r in rep_rows]
    assert streams[:2] == ["dark", "dark"] and streams[-2:] == ["dark", "dark"]
    assert streams[2:6] == ["primary", "flat", "primary", "flat"]
    frames_of = {}
    if file_backed:  # live events carry no image: compare with the camera's HDF5 files
        import h5py
        from urllib.parse import urlparse

        for n, d in live_docs:
            if n == "stream_resource":
                with h5py.File(urlparse(d["uri"]).path, "r") as f:
                    frames_of[d["parameters"]["frame_kind"]] = f["/entry/data/data"][()]
    counters = {"dark": 0, "primary": 0, "flat": 0}
    for (stream, _, live), (_, _, rep) in zip(live_rows, rep_rows):
        for key, value in rep.items():
            if key == "camera_image" and file_backed:
                kind = {"primary": "sample"}.get(stream, stream)
                expected = frames_of[kind][counters[stream]]
            else:
                expected = live[key]
            np.testing.assert_array_equal(value, expected, err_msg=f"{stream} {key}")
        counters[stream] += 1


def test_replayed_results_equal_live_results(tiled, recorded, tmp_path):
    uid, _, live_results = recorded[True]
    (live,) = live_results
    assert live.l3 is not None and live.l2 is not None, live.errors
    (rep,) = replay_runs(tiled.client(), [uid], out=tmp_path, progress=False)
    assert rep.run_uid == uid and rep.n_frames == live.n_frames
    for edge in ("l3", "l2"):
        a, b = getattr(live, edge), getattr(rep, edge)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.mean_spectra, b.mean_spectra)
        assert a.n_phases == b.n_phases and (a.eps, a.min_samples) == (b.eps, b.min_samples)
    assert rep.l2_l3_agreement == live.l2_l3_agreement
    assert list(rep.exafs) == list(live.exafs)
    for edge in live.exafs:
        assert [e.first_shell_r for e in rep.exafs[edge]] == [e.first_shell_r for e in live.exafs[edge]]
    on_disk = read_results(tmp_path / uid / "phases.h5")
    np.testing.assert_array_equal(on_disk.l3.labels, live.l3.labels)


def test_live_derived_run_published_next_to_the_raw_run(tiled, recorded):
    from tiled.queries import Key

    uid, _, (live,) = recorded[True]
    client = tiled.client()
    (derived_uid,) = publish_results(client, recorded["derived"])
    (found,) = client.search(Key("start.raw_run_uid") == uid).values()
    assert found.metadata["start"]["uid"] == derived_uid
    np.testing.assert_array_equal(found["l3_phases"]["labels"].read()[0], live.l3.labels)
    np.testing.assert_array_equal(found["l3_phases"]["counts"].read()[0], live.l3.counts)


class _FrameCounter:
    """A minimal consumer for ``callback_factory``: counts the replayed frames of its run into
    ``n_frames`` (run uid -> frames) and returns a RunResult carrying that count."""

    def __init__(self, n_frames: dict) -> None:
        self.docs: list = []
        self.n_frames = n_frames

    def __call__(self, name, doc):
        self.docs.append((name, doc))

    def wait(self, timeout=None):
        from txm_live.results import RunResult

        uid = self.docs[0][1]["uid"]
        n = self.n_frames[uid] = sum(len(d["seq_num"]) for name, d in self.docs if name == "event_page")
        return [RunResult(run_uid=uid, n_frames=n)]


def test_replay_runs_from_a_local_directory_and_bad_uids(tiled, recorded, workdir):
    uid, _, _ = recorded[False]
    assert find_catalog_directory(tiled.directory) == workdir
    results = replay_runs(workdir, [uid[:8], "nonexistent-uid"], progress=False,
                          callback_factory=lambda: _FrameCounter({}))
    assert [r.run_uid for r in results] == [uid, "nonexistent-uid"]
    assert results[0].n_frames == 2 * ENERGIES_OF[False].size + 4 and not results[0].errors
    assert results[1].errors[0].startswith("KeyError:")
    client = tiled.client()
    latest = list(client.keys())[-1]  # insertion order: the most recent run
    assert resolve_run(client, -1).metadata["start"]["uid"] == latest
    assert resolve_run(client, "-2").metadata["start"]["uid"] == list(client.keys())[-2]
    assert resolve_run(client, uid[:8]).metadata["start"]["uid"] == uid
    with pytest.raises(FileNotFoundError, match="no txm-live catalog"):
        find_catalog_directory(workdir / "frames")


def test_run_without_stop_is_replayed_as_incomplete(tiled, recorded):
    uid, live_docs, _ = recorded[False]  # inline run: events carry their images
    client = tiled.client()
    writer = make_writer(client, batch_size=1)  # every event written at once; no stop follows
    start = dict(live_docs[0][1], uid="0000aaaa-incomplete-run-0000-000000000000")
    writer("start", start)
    n_events = 0
    for n, d in live_docs[1:9]:
        if n == "descriptor":
            writer("descriptor", dict(d, run_start=start["uid"], uid=d["uid"] + "-x"))
        elif n == "event":
            writer("event", dict(d, descriptor=d["descriptor"] + "-x", uid=d["uid"] + "-x"))
            n_events += 1
    replayed = []
    stats = replay_run(client, start["uid"], lambda n, d: replayed.append((n, d)),
                       progress=False)
    assert sum(stats.n_events.values()) == n_events
    name, stop = replayed[-1]
    assert name == "stop" and stop["exit_status"] == "abort"
    assert stop["reason"].startswith("RunIncompleteError")
    assert any(w.startswith("RunIncompleteError") for w in stats.warnings)


def test_cli_replay_honours_the_toml_element_and_edges(tiled, recorded, workdir, tmp_path):
    """`txm-live replay --config`: the file's element/edges win over the start document's (Nd L3/L2)."""
    from txm_live.callbacks.cli import main

    uid = recorded[True][0]
    only_l3 = tmp_path / "l3.toml"
    only_l3.write_text('[analysis]\nelement = "Nd"\nedges = ["L3"]\n[preview]\nenabled = false\n')
    assert main(["replay", "--catalog", str(workdir), "--config", str(only_l3), "--out", str(tmp_path / "a"),
                 "--no-progress", "--no-figures", uid]) == 0
    r = read_results(tmp_path / "a" / uid)
    assert r.ok and list(r.edges) == ["L3"] and r.requested_edges == ("L3",) and r.comparisons == ()
    assert r.element == "Nd" and any("(options)" in n for n in r.notes), r.notes
    # another element: its K window is not in this Nd scan, a named error before any analysis
    fe_k = tmp_path / "fe.toml"
    fe_k.write_text('[analysis]\nelement = "Fe"\nedges = ["K"]\n')
    assert main(["replay", "--catalog", str(workdir), "--config", str(fe_k), "--out", str(tmp_path / "b"),
                 "--no-progress", "--no-figures", uid]) == 1
    r = read_results(tmp_path / "b" / uid)
    assert r.edges == {} and r.element == "Fe" and r.requested_edges == ("K",)
    assert any(e.startswith("InsufficientDataError: Fe K") for e in r.errors), r.errors
    # the command-line flags win over the file
    assert main(["replay", "--catalog", str(workdir), "--config", str(fe_k), "--element", "Nd", "--edges", "L3",
                 "--out", str(tmp_path / "c"), "--no-progress", "--no-figures", uid]) == 0
    assert list(read_results(tmp_path / "c" / uid).edges) == ["L3"]


def test_ad_hdf5_file_shared_by_all_streams_replays_to_the_live_labels(tmp_path):
    """An area detector staged once writes one AD_HDF5 file for darks, samples and backgrounds
    (datums count triggers across streams, ``frame_per_point`` frames each). TiledWriter registers
    the whole file under every stream, which the Tiled server cannot serve (422 on reshape); the
    replay reads each stream's chunks from the file in trigger order, frame-identical to an
    inline run of the same seed, and the labels equal the live ones."""
    from txm_live.sim.fxi import make_fxi, xanes_scan2

    eng = np.round(np.concatenate([np.arange(6010, 6150, 26), np.arange(6150, 6188, 10),
                                   np.arange(6188, 6270, 4), np.arange(6290, 6650, 50)]) / 1000, 4)
    kw = dict(element="Nd", edges=("L3",))
    with start_embedded_server(tmp_path) as server:
        phantom = make_phantom((32, 32), mode="pure", seed=0)
        RE = RunEngine({})
        live_cb = XanesLiveCallback(**kw)
        RE.subscribe(live_cb)
        recording = record_to(RE, server.client())
        fxi = make_fxi(phantom, seed=0, margin_px=8, file_backed=True, write_path=tmp_path / "frames")
        (uid,) = RE(xanes_scan2(fxi, eng, chunk_size=2))
        assert recording.flush(timeout=120) and recording.errors == []
        recording.close()
        live = live_cb.close(timeout=300)[-1]
        assert live.errors == () and live.l3 is not None, live.errors
        inline_docs: list = []
        RE2 = RunEngine({})
        RE2.subscribe(lambda n, d: inline_docs.append((n, d)))
        RE2(xanes_scan2(make_fxi(phantom, seed=0, margin_px=8), eng, chunk_size=2))

        replayed: list = []
        stats = replay_run(server.client(), uid, lambda n, d: replayed.append((n, d)), progress=False)
        assert set(stats.sources.values()) == {"hdf5-shared"}, stats.sources
        got, want = _events(replayed), _events(inline_docs)
        assert [(s, n) for s, n, _ in got] == [(s, n) for s, n, _ in want]
        for (_, _, a), (_, _, b) in zip(got, want):
            np.testing.assert_array_equal(a["KinetixU_image"], b["KinetixU_image"])
        (r,) = replay_runs(server.client(), [uid], progress=False,
                           callback_factory=lambda: XanesLiveCallback(**kw))
        assert r.errors == (), r.errors
        np.testing.assert_array_equal(r.l3.labels, live.l3.labels)

        # as a client on another machine: the file through the server's raw asset endpoint
        # (HTTP Range requests, the client's API key), never opened here
        remote: list = []
        stats = replay_run(server.client(), uid, lambda n, d: remote.append((n, d)), progress=False,
                           direct_files=False)
        assert set(stats.sources.values()) == {"hdf5-asset"} and stats.warnings == (), stats
        got = _events(remote)
        assert [(s, n) for s, n, _ in got] == [(s, n) for s, n, _ in want]
        for (_, _, a), (_, _, b) in zip(got, want):
            np.testing.assert_array_equal(a["KinetixU_image"], b["KinetixU_image"])
        cb = XanesLiveCallback(**kw)
        replay_run(server.client(), uid, cb, progress=False, direct_files=False)
        (r,) = cb.wait(300)
        cb.close()
        assert r.errors == (), r.errors
        np.testing.assert_array_equal(r.l3.labels, live.l3.labels)

        # a file that no longer holds exactly those frames: not split; the server's refusal is a
        # named error of that run, not an exception out of replay_runs
        import h5py

        (path,) = (tmp_path / "frames").glob("*.h5")
        with h5py.File(path, "a") as f:
            ds = f["/entry/data/data"]
            ds.resize(ds.shape[0] + 1, axis=0)
        (bad,) = replay_runs(server.client(), [uid], progress=False,
                             callback_factory=lambda: XanesLiveCallback(**kw))
        assert bad.errors and bad.errors[0].startswith("DocumentError: cannot read rows"), bad.errors

    # a server that does not expose raw assets, the file not readable here: a named error of that
    # run saying why, never the server's reshape of other streams' frames
    with start_embedded_server(tmp_path, expose_raw_assets=False) as server:
        with h5py.File(path, "a") as f:  # back to exactly the run's frames
            ds = f["/entry/data/data"]
            ds.resize(ds.shape[0] - 1, axis=0)
        cb = XanesLiveCallback(**kw)
        with pytest.raises(DocumentError, match="cannot be opened through the server asset endpoint: .*HTTP 403"):
            replay_run(server.client(), uid, cb, progress=False, direct_files=False)
        cb.close()


def test_runs_selected_by_content_not_plan_name(tmp_path, capsys):
    """Without uids, every run holding an image stream and an energy axis is replayed (our plan,
    FXI ``xanes_scan2``), whatever its plan; the others are skipped with a one-line reason."""
    from bluesky.plans import count, scan
    from ophyd.sim import det, direct_img, motor

    from txm_live.callbacks.cli import main
    from txm_live.callbacks.replay import select_runs
    from txm_live.sim.fxi import make_fxi, xanes_scan2

    phantom = make_phantom((16, 16), mode="pure", seed=0)
    eng = np.linspace(6150.0, 6260.0, 6)
    with start_embedded_server(tmp_path) as server:
        RE = RunEngine({})
        recording = record_to(RE, server.client())
        (ours,) = RE(xanes_scan(make_txm(phantom, seed=0, margin_px=2), eng, n_dark=1))
        (fxi,) = RE(xanes_scan2(make_fxi(phantom, seed=0, margin_px=2), eng / 1000.0, chunk_size=2))
        (counted,) = RE(count([det], num=2))
        (images,) = RE(count([direct_img], num=2))
        (stepped,) = RE(scan([direct_img], motor, 0, 1, 3))
        assert recording.flush(timeout=120) and recording.errors == []
        recording.close()
        client = server.client()

        sel = select_runs(client)
        assert sel.selected == (ours, fxi), sel
        assert set(sel.skipped) == {counted, images, stepped}
        assert sel.skipped[counted].startswith("no image key: stream 'primary' has no 2-D/3-D array key")
        assert sel.skipped[images].startswith("no energy axis: no scanned motor")
        assert sel.skipped[stepped].startswith("no energy axis: the scanned key 'motor' has no units")
        assert sel.summary() == "selected 2 of 5 runs; skipped 3 (no image key: 1, no energy axis: 2)"
        assert select_runs(client, plan_name="xanes_scan2").selected == (fxi,)
        assert select_runs(client, plan_name="count").selected == ()
        # an explicit key (as given to the callback: it applies to every run) makes the stepped run eligible
        by_key = select_runs(client, energy_key="motor")
        assert by_key.selected == (stepped,) and by_key.skipped[fxi] == "no energy axis: 'motor' not in stream 'primary'"

        n_frames: dict = {}

        def Recorder():
            return _FrameCounter(n_frames)

        results = replay_runs(client, progress=False, callback_factory=Recorder)
        assert [r.run_uid for r in results] == [ours, fxi]
        assert n_frames == {u: sum(client[u].metadata["stop"]["num_events"].values()) for u in (ours, fxi)}
        assert n_frames[fxi] == 2 * eng.size + 1  # a sample and a background chunk per energy, darks once
        assert [r.run_uid for r in replay_runs(client, progress=False, callback_factory=Recorder,
                                               plan_name="xanes_scan2")] == [fxi]
        # the command line: one line per skipped run and the count summary; nothing left: exit 1
        out = tmp_path / "cli"
        assert main(["replay", "--catalog", server.uri_with_key, "--plan-name", "count", "--out", str(out),
                     "--no-progress", "--no-figures"]) == 1
        printed = capsys.readouterr()
        assert f"skipped {counted[:8]}: no image key" in printed.out
        assert f"skipped {images[:8]}: no energy axis" in printed.out
        assert "selected 0 of 2 runs; skipped 2 (no image key: 1, no energy axis: 1)" in printed.out
        assert "no run to replay" in printed.err and not out.exists()


def test_cli_i0_options_reach_the_callback():
    from txm_live.callbacks.cli import _callback_factory, _reference_options, build_parser
    from txm_live.config import load_config

    p = build_parser()
    for argv, want in ((["--i0-key", "ic3"], "ic3"), (["--no-i0"], False), ([], None)):
        args = p.parse_args(["replay", "--catalog", "x", *argv, "u1"])
        cb = _callback_factory(load_config(None), **_reference_options(args, None))()
        try:
            assert cb.i0_key == want, (argv, cb.i0_key)
        finally:
            cb.close()
    with pytest.raises(SystemExit):
        p.parse_args(["replay", "--catalog", "x", "--i0-key", "ic3", "--no-i0", "u1"])
