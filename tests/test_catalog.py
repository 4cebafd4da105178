"""Recording real RunEngine scans of the simulated TXM into a real embedded Tiled server."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from urllib.parse import urlparse

import h5py
import httpx
import numpy as np
import pytest
from bluesky import RunEngine
from event_model import compose_run

from txm_live.callbacks.catalog import (
    ThreadedCallback,
    connect,
    record_to,
    start_embedded_server,
)
from txm_live.callbacks.results_file import collect_documents, publish_results
from txm_live.errors import DocumentError
from txm_live.sim.devices import make_txm
from txm_live.sim.phantom import make_phantom
from txm_live.sim.plans import coarse_energies, xanes_scan

SHAPE = (40, 48)
ENERGIES = coarse_energies(12)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(shape=SHAPE, seed=0)


def _scan(tiled, phantom, workdir, *, file_backed):
    RE = RunEngine({})
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    recording = record_to(RE, tiled.client())
    txm = make_txm(phantom, seed=5, margin_px=4, file_backed=file_backed,
                   write_path=workdir / "frames")
    (uid,) = RE(xanes_scan(txm, ENERGIES, n_dark=2, md={"sample": "NdFeB"}))
    assert recording.flush(timeout=60)
    recording.close()
    assert recording.errors == []
    return uid, docs


def _live_frames(docs):
    """Images and energies per stream, as the RunEngine emitted them (inline scans)."""
    names = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    out = defaultdict(list)
    for n, d in docs:
        if n == "event":
            out[names[d["descriptor"]]].append(d["data"])
    return out


def test_server_is_loopback_and_requires_the_key(tiled):
    assert urlparse(tiled.uri).hostname == "127.0.0.1"
    base = tiled.uri.rsplit("/api/v1", 1)[0]
    with httpx.Client(trust_env=False) as http:
        assert http.get(f"{tiled.uri}/metadata/").status_code == 401
        ok = http.get(f"{tiled.uri}/metadata/", headers={"Authorization": f"Apikey {tiled.api_key}"})
        assert ok.status_code == 200
        assert http.get(f"{base}/healthz").status_code == 200
    assert (tiled.directory / "catalog.db").exists()
    assert tiled.directory == tiled.directory.parent / "catalog"


def test_record_inline_scan(tiled, phantom, workdir):
    uid, docs = _scan(tiled, phantom, workdir, file_backed=False)
    run = tiled.client()[uid]
    assert run.metadata["start"]["txm_live"]["image_key"] == "camera_image"
    assert run.metadata["stop"]["exit_status"] == "success"
    assert set(run) == {"primary", "flat", "dark"}
    live = _live_frames(docs)
    for stream in ("primary", "flat", "dark"):
        images = run[stream]["camera_image"]
        assert images.dtype == np.uint16 and images.shape[1:] == (SHAPE[0] + 8, SHAPE[1] + 8)
        expected = np.stack([d["camera_image"] for d in live[stream]])
        np.testing.assert_array_equal(images.read(), expected)
        # block-wise reads return the same frames
        np.testing.assert_array_equal(images.read(slice(1, 3)), expected[1:3])
    table = run["primary"].base["internal"].read()
    np.testing.assert_allclose(table["mono_energy"], ENERGIES)


def test_record_file_backed_scan_registers_hdf5(tiled, phantom, workdir):
    uid, docs = _scan(tiled, phantom, workdir, file_backed=True)
    run = tiled.client()[uid]
    resources = {d["uid"]: d for n, d in docs if n == "stream_resource"}
    assert len(resources) == 3
    for stream in ("primary", "flat", "dark"):
        node = run[stream]["camera_image"]
        (source,) = node.data_sources()
        assert source.mimetype == "application/x-hdf5"
        (asset,) = source.assets
        path = urlparse(asset.data_uri).path
        assert path.endswith(".h5") and path.startswith(str(workdir))  # file stays in place
        with h5py.File(path, "r") as f:
            np.testing.assert_array_equal(node.read(), f["/entry/data/data"][()])
    assert run["primary"]["camera_image"].shape[0] == len(ENERGIES)
    assert run["dark"]["camera_image"].shape[0] == 4


def test_recorder_never_blocks_nor_raises_into_the_runengine(phantom, workdir):
    release = threading.Event()
    seen: list[str] = []

    def slow_then_failing(name, doc):
        release.wait(30)
        seen.append(name)
        if name == "event":
            raise RuntimeError("catalog is down")

    threaded = ThreadedCallback(slow_then_failing)
    RE = RunEngine({})
    RE.subscribe(threaded)
    txm = make_txm(phantom, seed=5, margin_px=4)
    RE(xanes_scan(txm, ENERGIES[:3], n_dark=1))
    # the writer is blocked (30 s at most): nothing written yet means the scan did not wait for it
    assert seen == [] and threaded.backlog > 0
    release.set()
    assert threaded.flush(timeout=30)
    threaded.close()
    assert seen[0] == "start" and seen[-1] == "stop"
    n_events = seen.count("event")
    assert n_events == 2 * 3 + 2 and len(threaded.errors) == n_events
    assert threaded.errors[0] == "event: RuntimeError: catalog is down"


def test_catalog_persists_and_reopens_in_process(tiled, phantom, workdir):
    uid, _ = _scan(tiled, phantom, workdir, file_backed=False)
    n_before = len(tiled.client())
    RE = RunEngine({})
    with start_embedded_server(workdir, in_process=True) as again:
        client = again.client()
        assert again.port != tiled.port and len(client) == n_before
        assert client[uid]["primary"]["camera_image"].shape[0] == len(ENERGIES)
        recording = record_to(RE, client, backup_directory=str(workdir / "backup"))
    # the server is gone: the scan still succeeds, the run is kept in a JSON-lines backup
    import stamina

    stamina.set_testing(True, attempts=1)  # no 45 s of connection retries in a unit test
    try:
        txm = make_txm(phantom, seed=6, margin_px=4, file_backed=True, write_path=workdir / "f2")
        (lost,) = RE(xanes_scan(txm, ENERGIES[:2], n_dark=1))
        assert recording.flush(timeout=120)
    finally:
        stamina.set_testing(False)
    recording.close()
    assert recording.errors == []  # TiledWriter switched this run to its backup
    (backup,) = (workdir / "backup").iterdir()
    assert backup.name == f"{lost.split('-')[0]}.jsonl"
    lines = [json.loads(line) for line in backup.read_text().splitlines()]
    assert lines[0]["name"] == "start" and lines[0]["doc"]["uid"] == lost
    assert lines[-1]["name"] == "stop" and sum(x["name"] == "stream_datum" for x in lines) == 2 * 2 + 2


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="uri"):
        connect("127.0.0.1:8000")
    with pytest.raises(ValueError, match="catalog_uri"):
        start_embedded_server(tmp_path, catalog_uri="catalog.db")
    with pytest.raises(ValueError, match="port"):
        start_embedded_server(tmp_path, port=70000)
    with pytest.raises(ValueError, match="callback"):
        ThreadedCallback(None)  # type: ignore[arg-type]


def _derived_run(raw_uid: str, labels: np.ndarray) -> list[tuple[str, dict]]:
    """A derived run as XanesLiveCallback publishes it: compose_run, linked to the raw uid."""
    docs = collect_documents()
    run = compose_run(metadata={"plan_name": "txm_live_phases", "raw_run_uid": raw_uid})
    docs("start", run.start_doc)
    desc = run.compose_descriptor(name="phases", data_keys={
        "l3_labels": {"source": "txm-live", "dtype": "array", "shape": list(labels.shape),
                      "dtype_numpy": labels.dtype.str},
        "l3_n_phases": {"source": "txm-live", "dtype": "integer", "shape": [],
                        "dtype_numpy": "<i8"},
        "l3_counts": {"source": "txm-live", "dtype": "array", "shape": [3],  # a small array
                      "dtype_numpy": "<i8"}})
    docs("descriptor", desc.descriptor_doc)
    now = time.time()
    counts = np.array([(labels == i).sum() for i in range(3)])
    docs("event", desc.compose_event(data={"l3_labels": labels, "l3_n_phases": 3, "l3_counts": counts},
                                     timestamps={"l3_labels": now, "l3_n_phases": now,
                                                 "l3_counts": now}))
    docs("stop", run.compose_stop())
    return docs


def test_publish_derived_run_is_searchable(tiled):
    """results_file.publish_results: the derived run goes next to the raw data, searchable."""
    from tiled.queries import Key

    labels = np.random.default_rng(1).integers(-1, 3, (23, 31)).astype(np.int32)
    docs = _derived_run("raw-uid-42", labels)
    client = tiled.client()
    (uid,) = publish_results(client, docs)
    found = client.search(Key("start.raw_run_uid") == "raw-uid-42")
    assert list(found) == [uid]
    np.testing.assert_array_equal(found[uid]["phases"]["l3_labels"].read()[0], labels)
    np.testing.assert_array_equal(found[uid]["phases"]["l3_counts"].read()[0],
                                  [(labels == i).sum() for i in range(3)])
    with pytest.raises(DocumentError, match="stop"):
        publish_results(client, docs[:-1])
    with pytest.raises(DocumentError, match="start"):
        publish_results(client, docs[1:])


_SERVE_THEN_WAIT = """
import sys, threading, time
from txm_live.callbacks.catalog import start_embedded_server
started = []
def start():
    started.append(start_embedded_server(sys.argv[1]))
if sys.argv[2] == "thread":  # started from a thread that ends: only the parent-pid watch applies
    t = threading.Thread(target=start); t.start(); t.join()
else:
    start()
print(started[0].uri, flush=True)
time.sleep(600)  # hung: never closes the server
"""


@pytest.mark.parametrize(("sig", "where"), [("SIGKILL", "main"), ("SIGTERM", "main"), ("SIGKILL", "thread")])
def test_embedded_server_does_not_outlive_a_killed_parent(tmp_path, sig, where):
    """A process that started an embedded server and is then killed (SIGKILL, or SIGTERM, which
    ends Python without cleanup; a hung replay was seen leaving its servers as orphans): the
    server process ends too. Real subprocesses, real Tiled server."""
    import os
    import signal
    import subprocess
    import sys

    import psutil

    parent = subprocess.Popen([sys.executable, "-c", _SERVE_THEN_WAIT, str(tmp_path), where],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        uri = parent.stdout.readline().strip()
        assert uri.startswith("http://127.0.0.1:"), uri
        servers = psutil.Process(parent.pid).children()
        assert len(servers) == 1 and servers[0].is_running()
        if where == "thread":  # the starting thread has ended: the server must stay up
            with pytest.raises(psutil.TimeoutExpired):
                servers[0].wait(timeout=2)
            with httpx.Client(trust_env=False) as http:
                assert http.get(uri.rsplit("/api/v1", 1)[0] + "/healthz", timeout=30).status_code == 200
        os.kill(parent.pid, getattr(signal, sig))
        parent.wait(timeout=30)
        gone, alive = psutil.wait_procs(servers, timeout=60)
        for p in alive:  # do not leave it behind when the test fails
            p.kill()
        assert not alive, f"server {alive[0].pid} outlived its parent ({sig})"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=30)
