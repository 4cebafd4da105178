"""Faults that must never kill a scan or lose a run (issue 11).

Real resources where the machine allows: a small tmpfs mounted on /dev/shm and on the results
folder in a private mount namespace (``unshare --mount``, root only; skipped with the reason
otherwise), real HDF5 files, real ZeroMQ sockets, a real ``txm-live demo`` subprocess for Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import event_model
import numpy as np
import pytest

import txm_live_test_helpers as helpers  # tests/helpers.py, loaded by tests/conftest.py
from txm_live.callbacks.live import RunSummary, XanesLiveCallback
from txm_live.errors import DocumentError, FrameError, ResultsWriteError

REPO = helpers.REPO
make_cb = helpers.small_callback
to_stream_datum = helpers.to_stream_datum


def run_docs(docs, **kw):
    cb = make_cb(**kw)
    results = helpers.feed(cb, docs)
    return cb, results


def reference_labels() -> np.ndarray:
    _, (res,) = run_docs(helpers.make_run(0))
    assert res.errors == ()
    return res.l3.labels


def _private_tmpfs_available() -> str | None:
    """Why a private tmpfs cannot be mounted here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "not Linux"
    if os.geteuid() != 0:
        return "not root (mounting a tmpfs in a private mount namespace needs root)"
    if shutil.which("unshare") is None:
        return "no unshare(1)"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs -o size=1m tmpfs /mnt && umount /mnt"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return f"cannot mount a tmpfs in a private mount namespace: {probe.stderr.strip()}"
    return None


def run_with_tmpfs(mountpoint: str, size: str, code: str, *args: str) -> subprocess.CompletedProcess:
    """Run Python ``code`` in a private mount namespace where ``mountpoint`` is a fresh tmpfs."""
    reason = _private_tmpfs_available()
    if reason is not None:
        pytest.skip(f"no private tmpfs: {reason}")
    script = (f'mkdir -p "{mountpoint}" && mount -t tmpfs -o size={size} tmpfs "{mountpoint}" && '
              f'exec "{sys.executable}" -c "$0" "$@"')
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                           textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO)


# ------------------------------------------------------------------ shared memory
def test_small_dev_shm_falls_back_to_process_memory():
    """A 4 MiB /dev/shm (containers default to 64 MiB) and a 6 MiB cube: no SIGBUS, same map."""
    code = """
        import json, sys
        sys.path.insert(0, "tests")
        import numpy as np
        import helpers as h
        from txm_live.cube import IncrementalCube
        from txm_live.callbacks.live import XanesLiveCallback

        cube = IncrementalCube((128, 128), expected_energies=np.arange(100.0), shared=True)
        for e in range(100):  # would touch every page: SIGBUS without the check
            cube.update(float(e), np.full((128, 128), e, np.float32))
        # the live callback with its analysis process and the cube "in shared memory"
        docs = h.make_run(0)
        cb = XanesLiveCallback(windows=(h.WINDOW,), analysis=h.step_analysis, exafs=False, register=False,
                               analysis_process=True)
        for name, doc in docs:
            cb(name, doc)
        (res,) = cb.wait(timeout=120)
        cb.close(timeout=60)
        print(json.dumps({"shared": cube.shared, "note": cube.memory_note, "sum": float(cube.block(0, 99)[1].sum()),
                          "errors": list(res.errors), "labels": res.l3.labels.tolist()}))
    """
    fill = """
        import os, sys
        fd = os.open("/dev/shm/filler", os.O_WRONLY | os.O_CREAT)
        try:  # fill the tmpfs to the last page, so that the callback's small cube does not fit either
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:
            os.close(fd)
        exec(compile(sys.argv[1], "test", "exec"))
    """
    proc = run_with_tmpfs("/dev/shm", "4m", fill, textwrap.dedent(code))
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["shared"] is False and "process memory" in out["note"]
    assert out["sum"] == pytest.approx(128 * 128 * sum(range(100)))
    assert out["errors"] == []
    np.testing.assert_array_equal(np.array(out["labels"]), reference_labels())


# ------------------------------------------------------------------ results on a full disk
def test_full_results_disk_raises_results_write_error_and_leaves_nothing(tmp_path):
    code = """
        import os, sys
        from pathlib import Path
        sys.path.insert(0, "tests")
        import helpers as h
        from txm_live.callbacks.results_file import read_results, write_results
        from txm_live.errors import ResultsWriteError
        from txm_live.results import RunResult

        out = Path(sys.argv[1])
        small = write_results(RunResult(run_uid="run-1"), out)
        try:
            write_results(h.big_result("run-1"), out)  # ~6 MB on a 2 MiB tmpfs
        except ResultsWriteError as exc:
            print("RAISED", exc)
        leftovers = sorted(p.name for p in (out / "run-1").iterdir())
        print("LEFT", leftovers)
        print("OLD", read_results(small).l3 is None)
        print("ALIVE")
    """
    mnt = str(tmp_path / "results")
    proc = run_with_tmpfs(mnt, "2m", code, mnt)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "RAISED" in out and "No space left on device" in out, out
    assert "LEFT ['phases.h5']" in out  # no temporary file left behind
    assert "OLD True" in out  # the earlier file is intact
    assert "ALIVE" in out


def test_unwritable_results_raise_a_named_error(tmp_path):
    from txm_live.callbacks.results_file import write_results

    (tmp_path / "run-2").write_text("a file where the run folder should be")
    with pytest.raises(ResultsWriteError, match="run-2"):
        write_results(helpers.big_result("run-2"), tmp_path)


# ------------------------------------------------------------------ hostile documents
def test_schema_invalid_start_does_not_break_wait_close_or_later_runs():
    bad = helpers.make_run(0)
    bad[0] = ("start", dict(bad[0][1], scan_id="abc", sample=12))  # what ZeroMQ or replay may deliver
    good = helpers.make_run(1)
    derived = []
    cb = make_cb()
    cb.subscribe(lambda n, d: derived.append((n, d)))
    for name, doc in bad + good:
        cb(name, doc)
    results = cb.wait(timeout=60)  # must not raise
    cb.close(timeout=60)  # must not raise
    assert [r.run_uid for r in results] == [bad[0][1]["uid"], good[0][1]["uid"]]
    r_bad, r_good = results
    np.testing.assert_array_equal(r_bad.l3.labels, reference_labels())
    assert any(e.startswith("DocumentError: start document field 'scan_id'") for e in r_bad.errors)
    assert r_good.errors == () and r_good.l3 is not None
    for name, doc in derived:  # the derived runs are valid documents
        event_model.schema_validators[event_model.DocumentNames[name]].validate(doc)
    starts = [d for n, d in derived if n == "start"]
    assert "scan_id" not in starts[0] and starts[1]["scan_id"] == 7


def test_repeated_start_document_does_not_split_the_run():
    docs = helpers.make_run(0)
    docs.insert(len(docs) // 2, docs[0])
    cb, results = run_docs(docs)
    assert len(results) == 1
    (res,) = results
    assert res.n_frames == len(helpers.ENERGIES)
    assert any("repeated start document" in e for e in res.errors)
    np.testing.assert_array_equal(res.l3.labels, reference_labels())


def test_pixel_size_far_from_the_median_skips_the_frame():
    docs = helpers.make_run(0)
    events = [i for i, (n, d) in enumerate(docs) if n == "event" and "camera_pixel_size" in d["data"]]
    name, ev = docs[events[5]]
    docs[events[5]] = (name, dict(ev, data=dict(ev["data"], camera_pixel_size=10 * helpers.PIXEL_NM)))
    _, (res,) = run_docs(docs)
    assert any(e.startswith("FrameError") and "pixel size 300 nm" in e for e in res.errors), res.errors
    assert res.n_frames == len(helpers.ENERGIES) - 1


def test_first_frame_pixel_size_is_checked_against_the_start_document():
    """The start document's ``txm_live.pixel_size_nm`` is the reference before any frame: a first
    frame 10x off is skipped alone (the later, correct frames are kept)."""
    docs = helpers.make_run(0)
    events = [i for i, (n, d) in enumerate(docs) if n == "event" and "camera_pixel_size" in d["data"]]
    name, ev = docs[events[0]]
    docs[events[0]] = (name, dict(ev, data=dict(ev["data"], camera_pixel_size=10 * helpers.PIXEL_NM)))
    _, (res,) = run_docs(docs)
    assert [e for e in res.errors if "pixel size" in e] == [
        f"FrameError: sample frame at {helpers.ENERGIES[0]} eV: pixel size 300 nm is 10 x the run's 30 nm; "
        "frame skipped"], res.errors
    assert res.n_frames == len(helpers.ENERGIES) - 1


def test_pixel_size_of_the_maps_from_the_start_document_when_frames_carry_none():
    docs = [(n, dict(d, data={k: v for k, v in d["data"].items() if k != "camera_pixel_size"}) if n == "event" else d)
            for n, d in helpers.make_run(0)]
    _, (res,) = run_docs(docs)
    assert res.n_frames == len(helpers.ENERGIES)
    assert res.pixel_size_nm == helpers.PIXEL_NM


def test_ragged_event_page_is_a_named_error():
    docs = helpers.make_run(0, pages=True)
    i = next(i for i, (n, _) in enumerate(docs) if n == "event_page")
    page = dict(docs[i][1])
    page["data"] = dict(page["data"], mono_energy=list(page["data"]["mono_energy"])[:-1])
    docs[i] = ("event_page", page)
    _, (res,) = run_docs(docs)
    assert any(e.startswith("DocumentError") and "ragged event_page" in e for e in res.errors), res.errors
    assert res.n_frames == 0


# ------------------------------------------------------------------ file-backed frames
def test_constant_seq_num_file_backed_events_read_their_own_frames(tmp_path):
    docs = to_stream_datum(helpers.make_run(0), tmp_path, constant_seq=True)
    _, (res,) = run_docs(docs)
    assert res.n_frames == len(helpers.ENERGIES)
    assert any(e.startswith("DocumentError") and "repeated an earlier event's seq_num" in e for e in res.errors)
    assert not any(e.startswith("FrameError") for e in res.errors), res.errors
    # every event read its own frame: the map is the inline run's (all would read frame 0 otherwise)
    np.testing.assert_array_equal(res.l3.labels, reference_labels())


def test_negative_stream_datum_index_is_a_named_error_not_the_last_frame(tmp_path):
    docs = to_stream_datum(helpers.make_run(0), tmp_path, negative=4)
    _, (res,) = run_docs(docs)
    assert any(e.startswith("DocumentError") and "non-negative" in e for e in res.errors), res.errors
    assert res.n_frames == len(helpers.ENERGIES) - 1


def test_asset_registry_refuses_negative_datum_indices(tmp_path):
    from txm_live.callbacks.assets import AssetRegistry

    reg = AssetRegistry(retries=0)
    reg.resource({"uid": "r", "spec": "AD_HDF5", "root": str(tmp_path), "resource_path": "x.h5",
                  "resource_kwargs": {"frame_per_point": 1}})
    reg.datum({"datum_id": "r/0", "resource": "r", "datum_kwargs": {"point_number": -1}})
    with pytest.raises(FrameError, match="out of range"):
        reg.datum_frame("r/0")
    with pytest.raises(DocumentError):
        reg.stream_datum({"uid": "sd", "stream_resource": "unknown", "descriptor": "d",
                          "seq_nums": {"start": 1, "stop": 2}, "indices": {"start": 0, "stop": 1}})


# ------------------------------------------------------------------ long sessions
def test_only_max_results_full_results_are_kept():
    cb = make_cb(max_results=2)
    uids = []
    for seed in range(4):
        docs = helpers.make_run(seed)
        uids.append(docs[0][1]["uid"])
        for name, doc in docs:
            cb(name, doc)
    results = cb.wait(timeout=60)
    cb.close(timeout=60)
    assert [r.run_uid for r in results] == uids[2:]
    assert cb.n_finished == 4
    summaries = cb.summaries
    assert [s.run_uid for s in summaries] == uids and all(isinstance(s, RunSummary) for s in summaries)
    assert all(s.n_errors == 0 and s.edges == ("L3",) and s.n_frames == len(helpers.ENERGIES) for s in summaries)
    with pytest.raises(ValueError, match="max_results"):
        XanesLiveCallback(max_results=0)


# ------------------------------------------------------------------ interrupted runs
def test_aborted_run_is_flagged_incomplete_and_written(tmp_path):
    from txm_live.callbacks.results_file import read_results, write_results

    docs = helpers.make_run(0)
    stop = dict(docs[-1][1], exit_status="abort", reason="RE.abort()")
    events = [i for i, (n, _) in enumerate(docs) if n == "event"]
    docs = docs[: events[-6]] + [("stop", stop)]  # aborted before the last energies
    _, (res,) = run_docs(docs)
    assert res.incomplete
    assert any("exit_status 'abort'" in e for e in res.errors)
    back = read_results(write_results(res, tmp_path))
    assert back.incomplete and back.errors == res.errors


def test_catalog_that_accepts_nothing_does_not_hold_shutdown():
    from txm_live.callbacks.catalog import ThreadedCallback

    release = threading.Event()

    def dead_catalog(name, doc):  # a server that never answers (the client would retry for minutes)
        release.wait(120)
        raise ConnectionError("catalog unreachable")

    threaded = ThreadedCallback(dead_catalog)
    for name, doc in helpers.make_run(0):
        threaded(name, doc)
    threaded.close(stall_timeout=1.0)  # returns although the worker is stuck
    assert threaded._thread.is_alive()
    assert any("CatalogError" in e for e in threaded.errors), threaded.errors
    release.set()
    threaded._thread.join(30)
    assert not threaded._thread.is_alive()
    assert threaded.n_dropped > 0  # the rest was dropped, not written after close


def test_analysis_process_dies_with_its_parent(tmp_path):
    code = """
        import sys, time
        from txm_live.callbacks.analysis_process import AnalysisProcess
        p = AnalysisProcess()
        p.warm_up()
        print(p._proc.pid, flush=True)
        time.sleep(600)
    """
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        parent.kill()  # no chance to clean up
        parent.wait(30)
        deadline = time.monotonic() + 30
        while _alive(child) and time.monotonic() < deadline:
            threading.Event().wait(0.05)
        assert not _alive(child), "the analysis process outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGINT delivery to a subprocess, Linux")
def test_ctrl_c_during_demo_exits_130_writes_partial_results_and_the_run_replays(tmp_path):
    out = tmp_path / "out"
    exe = Path(sys.executable).with_name("txm-live")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "txm_live.callbacks.cli"]
    proc = subprocess.Popen(cmd + ["demo", "--size", "small", "--out", str(out), "--no-figures", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # wait until the scan is under way: 2 chunks of 16 sample frames are in the catalog
        deadline = time.monotonic() + 240
        data = out / "catalog" / "data"
        while not (data.exists() and len(list(data.glob("*/primary/camera_image/c/*"))) >= 2):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the scan did not start"
            threading.Event().wait(0.2)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "Traceback" not in stdout, stderr[-3000:]
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("txm-live: interrupted: scan of run"), stderr
    (run_dir,) = [p for p in out.iterdir() if p.is_dir() and p.name not in ("catalog", "raw")]
    from txm_live.callbacks.results_file import read_results

    partial = read_results(run_dir / "phases.h5")
    assert partial.incomplete and 0 < partial.n_frames < 225
    # the catalog got the stop document: the run replays through the same analysis
    replay = subprocess.run(cmd + ["replay", "--catalog", str(out / "catalog"), "--out", str(tmp_path / "again"),
                                   "--no-figures", "--no-progress", run_dir.name],
                            capture_output=True, text=True, timeout=600)
    assert "Traceback" not in replay.stderr, replay.stderr[-3000:]
    again = read_results(tmp_path / "again" / run_dir.name / "phases.h5")
    assert again.n_frames == partial.n_frames
    assert any("exit_status 'abort'" in e for e in again.errors)


# ------------------------------------------------------------------ serve
def test_serve_survives_a_failed_write_and_continues(tmp_path):
    from bluesky.callbacks.zmq import Proxy, Publisher

    from txm_live.callbacks.catalog import free_port
    from txm_live.callbacks.remote import encode_msgpack, serve

    pin, pout = free_port(), free_port()
    proxy = Proxy(f"127.0.0.1:{pin}", f"127.0.0.1:{pout}")
    threading.Thread(target=proxy.start, daemon=True).start()
    out = tmp_path / "out"
    out.mkdir()
    bad, good = helpers.make_run(0), helpers.make_run(1)
    (out / bad[0][1]["uid"]).write_text("not a folder: the write of this run fails")
    results, got = [], threading.Condition()

    def on_result(r):
        with got:
            results.append(r)
            got.notify_all()

    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(f"127.0.0.1:{pout}",), kwargs={
        "out": out, "stop_event": stop, "on_result": on_result, "callback_factory": make_cb})
    thread.start()
    pub = Publisher(f"127.0.0.1:{pin}", serializer=encode_msgpack)
    try:
        # ZeroMQ slow joiner: send probe runs until the consumer has analysed one
        with got:
            for _ in range(600):
                probe = event_model.compose_run()
                pub("start", probe.start_doc)
                pub("stop", probe.compose_stop())
                if got.wait_for(lambda: results, timeout=0.5):
                    break
            assert results, "serve never received a run"
        for name, doc in bad + good:
            pub(name, doc)
        with got:
            assert got.wait_for(lambda: {r.run_uid for r in results} >= {bad[0][1]["uid"], good[0][1]["uid"]},
                                timeout=120), [r.run_uid for r in results]
    finally:
        stop.set()
        thread.join(60)
        pub.close()
    assert not thread.is_alive()
    assert not (out / bad[0][1]["uid"]).is_dir()  # its write failed (logged), serve went on
    from txm_live.callbacks.results_file import read_results

    written = read_results(out / good[0][1]["uid"] / "phases.h5")
    assert written.l3 is not None and written.errors == ()


def test_resync_gate_reports_events_lost_in_transport():
    from txm_live.callbacks.remote import ResyncGate

    received = []
    gate = ResyncGate(lambda name, doc: received.append(name))
    docs = helpers.make_run(0)
    events = [i for i, (n, _) in enumerate(docs) if n == "event"]
    lost = {events[4], events[9]}  # a sample and a flat frame dropped by a full high-water mark
    for i, (name, doc) in enumerate(docs):
        if i not in lost:
            gate(name, doc)
    msgs = gate.losses[docs[0][1]["uid"]]
    assert len(msgs) == 2 and all(m.startswith("DataLossError: stream") for m in msgs), msgs
    assert received.count("event") == len(events) - 2 and received[-1] == "stop"
    # the live callback sees the same loss from the stop document's num_events
    _, (res,) = run_docs([d for i, d in enumerate(docs) if i not in lost])
    assert sum(e.startswith("DataLossError") for e in res.errors) == 2, res.errors
