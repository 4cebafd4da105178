"""Batch replay of several recorded runs on a real Dask LocalCluster, one task per run."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import txm_live_test_helpers as helpers

pytest.importorskip("distributed")

from bluesky import RunEngine  # noqa: E402

from txm_live.callbacks.catalog import record_to, start_embedded_server  # noqa: E402
from txm_live.callbacks.replay import replay_runs  # noqa: E402
from txm_live.callbacks.results_file import read_results  # noqa: E402
from txm_live.sim.devices import make_txm  # noqa: E402
from txm_live.sim.phantom import make_phantom  # noqa: E402
from txm_live.sim.plans import xanes_scan  # noqa: E402

SHAPE = (40, 40)
ENERGIES = np.concatenate([np.arange(6000.0, 6190.0, 20.0), np.arange(6190.0, 6240.0, 2.0),
                           np.arange(6240.0, 6700.0, 20.0), np.arange(6700.0, 6760.0, 3.0),
                           np.arange(6760.0, 7024.0, 25.0)])


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("replay-dask")
    with start_embedded_server(workdir) as server:
        uids = []
        for seed in (1, 2):
            RE = RunEngine({})
            recording = record_to(RE, server.client())
            txm = make_txm(make_phantom(shape=SHAPE, seed=seed), seed=10 + seed, margin_px=4,
                           file_backed=True, write_path=workdir / "frames")
            (uid,) = RE(xanes_scan(txm, ENERGIES, n_dark=2))
            assert recording.flush(timeout=120) and recording.errors == []
            recording.close()
            uids.append(uid)
        yield server, uids


@pytest.fixture(scope="module")
def dask_client():
    with helpers.local_client(2) as client:
        yield client


@pytest.fixture(scope="module")
def serial(catalog):
    server, uids = catalog
    return replay_runs(server.client(), uids, progress=False, timeout=300)


def test_batch_replay_on_workers_equals_serial_replay(catalog, serial, dask_client, tmp_path):
    server, uids = catalog
    keys = [*uids, "nonexistent-uid"]
    got = replay_runs(server.client(), keys, out=tmp_path, progress=True, timeout=300, client=dask_client)
    assert [r.run_uid for r in got] == keys
    assert got[2].errors and got[2].errors[0].startswith("KeyError:")
    for a, b in zip(serial, got[:2]):
        assert a.l3 is not None and b.l3 is not None, (a.errors, b.errors)
        assert a.errors == b.errors
        for edge in ("l3", "l2"):  # an edge may fail the same named way on both paths
            ea, eb = getattr(a, edge), getattr(b, edge)
            assert (ea is None) == (eb is None)
            if ea is not None:
                np.testing.assert_array_equal(ea.labels, eb.labels)
        on_disk = read_results(tmp_path / b.run_uid / "phases.h5")
        np.testing.assert_array_equal(on_disk.l3.labels, a.l3.labels)


def test_live_callback_sends_edge_analyses_to_the_cluster(catalog, serial, dask_client):
    from dask.distributed import get_task_stream

    from txm_live.callbacks.live import XanesLiveCallback
    from txm_live.callbacks.replay import replay_run

    server, uids = catalog
    cb = XanesLiveCallback(dask=dask_client)
    assert cb.analysis_process is False  # the cluster replaces the local analysis process
    with get_task_stream(dask_client) as ts:
        replay_run(server.client(), uids[0], cb, progress=False)
        (result,) = cb.close(timeout=300)
    assert result.l3 is not None, result.errors
    np.testing.assert_array_equal(result.l3.labels, serial[0].l3.labels)
    ran = [t["key"] for t in ts.data if "analyze_edge" in str(t["key"])]
    assert len(ran) >= 2, ran  # L3 and L2 analysed on the workers


def test_cli_replay_with_dask_address(catalog, serial, dask_client, tmp_path, capsys):
    from txm_live.callbacks.cli import main

    server, uids = catalog
    code = main(["replay", "--catalog", server.uri_with_key, "--out", str(tmp_path), "--no-figures",
                 "--no-progress", "--dask", dask_client.scheduler.address, uids[0]])
    out = capsys.readouterr().out
    assert f"run {uids[0][:8]}" in out
    assert code == (0 if serial[0].ok else 1)
    on_disk = read_results(tmp_path / uids[0] / "phases.h5")
    np.testing.assert_array_equal(on_disk.l3.labels, serial[0].l3.labels)


def test_replay_of_inline_images_on_workers_does_not_deadlock(dask_client, tmp_path):
    """Inline (non file-backed) frames are read through Tiled, whose reads compute a dask array:
    on a worker they must not be sent to the cluster the replay task is occupying (it hung)."""
    with start_embedded_server(tmp_path / "inline") as server:
        RE = RunEngine({})
        recording = record_to(RE, server.client())
        txm = make_txm(make_phantom(shape=SHAPE, seed=3), seed=13, margin_px=4)
        (uid,) = RE(xanes_scan(txm, ENERGIES, n_dark=2))
        assert recording.flush(timeout=120) and recording.errors == []
        recording.close()
        serial = replay_runs(server.client(), [uid], progress=False, timeout=300)
        box: list = []
        worker = threading.Thread(target=lambda: box.extend(replay_runs(
            server.client(), [uid], out=None, progress=False, timeout=300, client=dask_client)), daemon=True)
        worker.start()
        worker.join(timeout=300)  # generous: ~10 s on an idle machine; a deadlock never returns
        assert not worker.is_alive(), "replay of inline images on a Dask worker did not finish (deadlock)"
    (got,) = box
    assert got.n_frames == serial[0].n_frames > 0, got.errors
    assert got.errors == serial[0].errors
    assert (got.l3 is None) == (serial[0].l3 is None)
    if got.l3 is not None:
        np.testing.assert_array_equal(got.l3.labels, serial[0].l3.labels)
