"""ZeroMQ: safe serialization, addresses, resynchronization, and a three-process loopback run."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time

import msgpack
import msgpack_numpy
import numpy as np
import pytest
from bluesky.callbacks.zmq import Proxy, Publisher
from event_model import compose_run

from txm_live.callbacks.catalog import free_port
from txm_live.callbacks.remote import (
    decode_msgpack,
    encode_msgpack,
    make_publisher,
    parse_address,
    serve,
)
from txm_live.callbacks.results_file import read_results
from txm_live.errors import DocumentError


def test_parse_address():
    assert parse_address("127.0.0.1:5568") == ("127.0.0.1", 5568)
    assert parse_address("tcp://beamline-ws:5567") == ("beamline-ws", 5567)
    assert parse_address(("localhost", 5568)) == ("localhost", 5568)
    assert parse_address("[::1]:5568") == ("::1", 5568)
    for bad, match in [("5568", "bare port"), ("*:5568", "wildcard"), ("0.0.0.0:5568", "wildcard"),
                       ("127.0.0.1", "HOST:PORT"), ("127.0.0.1:70000", "port"),
                       ("ipc:///tmp/x", "tcp"), (5568, "HOST:PORT")]:
        with pytest.raises(ValueError, match=match):
            parse_address(bad)


def test_msgpack_round_trip_and_refusals():
    image = np.arange(12, dtype=np.uint16).reshape(3, 4)
    doc = {"data": {"camera_image": image, "mono_energy": np.float64(6208.5), "n": 3},
           "shape": (3, 4), "name": "primary"}
    back = decode_msgpack(encode_msgpack(doc))
    np.testing.assert_array_equal(back["data"]["camera_image"], image)
    assert back["data"]["camera_image"].dtype == np.uint16
    assert back["data"]["mono_energy"] == 6208.5 and back["shape"] == [3, 4]
    # an object array would be unpickled by msgpack_numpy.decode: refused on both sides
    evil = np.array([object()], dtype=object)
    with pytest.raises(TypeError, match="pickle"):
        encode_msgpack({"x": evil})
    crafted = msgpack.packb({"x": {b"nd": True, b"type": "|O", b"kind": b"O", b"shape": [1],
                                   b"data": pickle.dumps([1])}}, use_bin_type=True)
    with pytest.raises(DocumentError, match="object array"):
        decode_msgpack(crafted)
    assert msgpack_numpy  # (the encoding format is msgpack-numpy's)
    with pytest.raises(ValueError, match="allow_pickle"):
        serve("127.0.0.1:5568", serializer="pickle")
    with pytest.raises(ValueError, match="serializer"):
        serve("127.0.0.1:5568", serializer="json")


class _Recorder:
    """Minimal consumer for serve(): keeps documents, no analysis."""

    def __init__(self):
        self.docs: list[tuple[str, dict]] = []
        self.results: list = []

    def __call__(self, name, doc):
        self.docs.append((name, doc))

    def close(self, timeout=None):
        return self.results


def _run_docs(n_events: int) -> list[tuple[str, dict]]:
    run = compose_run(metadata={"plan_name": "xanes_scan"})
    desc = run.compose_descriptor(name="primary", data_keys={
        "camera_image": {"source": "sim", "dtype": "array", "shape": [4, 5], "dtype_numpy": "<u2"},
        "mono_energy": {"source": "sim", "dtype": "number", "shape": [], "dtype_numpy": "<f8"}})
    docs = [("start", run.start_doc), ("descriptor", desc.descriptor_doc)]
    for i in range(n_events):
        docs.append(("event", desc.compose_event(
            data={"camera_image": np.full((4, 5), i, np.uint16), "mono_energy": 6000.0 + i},
            timestamps={"camera_image": 0.0, "mono_energy": 0.0})))
    docs.append(("stop", run.compose_stop()))
    return docs


def _proxy_and_consumer() -> tuple[int, _Recorder, threading.Event, threading.Thread, Publisher]:
    """A 0MQ proxy on loopback, ``serve`` consuming from it into a recorder, and a publisher.

    Both connections are established when this returns (probe runs are sent until the recorder
    receives one, then forgotten): no sleep-and-hope against ZeroMQ's slow joiner.
    """
    pin, pout = free_port(), free_port()
    proxy = Proxy(f"127.0.0.1:{pin}", f"127.0.0.1:{pout}")
    threading.Thread(target=proxy.start, daemon=True).start()
    rec, stop = _Recorder(), threading.Event()
    thread = threading.Thread(target=serve, args=(f"127.0.0.1:{pout}",),
                              kwargs={"stop_event": stop, "callback_factory": lambda: rec})
    thread.start()
    pub = Publisher(f"127.0.0.1:{pin}", serializer=encode_msgpack)
    deadline = time.monotonic() + 60
    while not any(n == "stop" for n, _ in list(rec.docs)):
        assert time.monotonic() < deadline, "serve never received the probe run"
        probe = compose_run()
        pub("start", probe.start_doc)
        pub("stop", probe.compose_stop())
        time.sleep(0.1)  # probe period, not a wait for readiness
    last = compose_run()  # one connection keeps the order: once this is in, every probe is
    pub("start", last.start_doc)
    pub("stop", last.compose_stop())
    while not any(n == "stop" and d["run_start"] == last.start_doc["uid"] for n, d in list(rec.docs)):
        assert time.monotonic() < deadline, "serve never received the last probe run"
        time.sleep(0.02)
    rec.docs.clear()
    return pin, rec, stop, thread, pub


def test_late_joiner_skips_the_run_without_start_and_resynchronizes():
    pin, rec, stop, thread, pub = _proxy_and_consumer()
    lost, complete = _run_docs(3), _run_docs(4)
    pub._socket.send(b" not-a-document \x80\x81")  # malformed: dropped, consumer goes on
    pub._socket.send(b"no-spaces")
    pub._socket.send(b" start " + msgpack.packb({"x": {b"nd": True, b"type": "|O", b"kind": b"O",
                                                        b"shape": [1], b"data": b"junk"}}))
    for name, doc in lost[1:]:  # the start of this run was "lost"
        pub(name, doc)
    for name, doc in complete:
        pub(name, doc)
    deadline = time.monotonic() + 20
    while len(rec.docs) < len(complete) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(20)
    pub.close()
    assert not thread.is_alive()
    assert [n for n, _ in rec.docs] == [n for n, _ in complete]
    assert {d.get("run_start", d["uid"]) for n, d in rec.docs if n in ("start", "stop")} == {
        complete[0][1]["uid"]}
    np.testing.assert_array_equal(rec.docs[-2][1]["data"]["camera_image"], np.full((4, 5), 3))


PUBLISHER = textwrap.dedent("""
    import sys
    import numpy as np
    from bluesky import RunEngine
    from txm_live.callbacks.live import XanesLiveCallback
    from txm_live.callbacks.remote import make_publisher
    from txm_live.callbacks.results_file import write_results
    from txm_live.sim.devices import make_txm
    from txm_live.sim.phantom import make_phantom
    from txm_live.sim.plans import xanes_scan

    address, local_out = sys.argv[1], sys.argv[2]
    energies = np.concatenate([np.arange(6000.0, 6190.0, 20.0), np.arange(6190.0, 6240.0, 2.0),
                               np.arange(6240.0, 6700.0, 20.0), np.arange(6700.0, 6760.0, 3.0),
                               np.arange(6760.0, 7024.0, 25.0)])
    phantom = make_phantom(shape=(40, 40), seed=1)
    RE = RunEngine({})
    live = XanesLiveCallback()
    RE.subscribe(live)
    publisher = make_publisher(RE, address)
    (uid,) = RE(xanes_scan(make_txm(phantom, seed=11, margin_px=4), energies, n_dark=2))
    for result in live.close(timeout=300):
        write_results(result, local_out)
    publisher.flush()
    # a second run of which only the first documents are sent: in progress at shutdown
    RE.unsubscribe(publisher.token)
    sent = []
    def first_docs(name, doc):
        if len(sent) < 12:
            sent.append(name)
            publisher.callback(name, doc)
    RE.subscribe(first_docs)
    (partial,) = RE(xanes_scan(make_txm(phantom, seed=12, margin_px=4), energies[:20], n_dark=1))
    publisher.flush()
    publisher.callback.close()
    publisher.publisher.close()
    print(uid, partial, flush=True)
""")

SERVER = textwrap.dedent("""
    import logging, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    from txm_live.callbacks.remote import serve
    results = serve(sys.argv[1], out=sys.argv[2])
    print("SERVED", len(results), flush=True)
""")


def test_three_processes_on_loopback_match_in_process(tmp_path):
    pin, pout = free_port(), free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = []
    try:
        proxy = subprocess.Popen(
            [sys.executable, "-c", "from bluesky.commandline.zmq_proxy import main; main()",
             "--in-address", f"127.0.0.1:{pin}", "--out-address", f"127.0.0.1:{pout}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        procs.append(proxy)
        server = subprocess.Popen([sys.executable, "-c", SERVER, f"127.0.0.1:{pout}",
                                   str(tmp_path / "remote")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        procs.append(server)
        deadline = time.monotonic() + 60
        for line in server.stderr:  # wait until the consumer is subscribed
            if "subscribed to tcp://127.0.0.1" in line or time.monotonic() > deadline:
                break
        threading.Thread(target=server.stderr.read, daemon=True).start()  # drain
        time.sleep(0.5)
        pub = subprocess.run([sys.executable, "-c", PUBLISHER, f"127.0.0.1:{pin}",
                              str(tmp_path / "local")], capture_output=True, text=True,
                             env=env, timeout=300)
        assert pub.returncode == 0, pub.stderr[-3000:]
        uid, partial = pub.stdout.split()
        # wait for the complete run's results, then stop the consumer with SIGTERM
        deadline = time.monotonic() + 120
        while not (tmp_path / "remote" / uid / "phases.h5").exists():
            assert time.monotonic() < deadline and server.poll() is None
            time.sleep(0.2)
        time.sleep(1.0)  # the partial run's documents are in
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=120)
        assert server.returncode == 0 and "SERVED 2" in out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    remote, local = read_results(tmp_path / "remote" / uid), read_results(tmp_path / "local" / uid)
    assert local.l3 is not None and local.l2 is not None, local.errors
    for edge in ("l3", "l2"):
        np.testing.assert_array_equal(getattr(remote, edge).labels, getattr(local, edge).labels)
        np.testing.assert_array_equal(getattr(remote, edge).mean_spectra,
                                      getattr(local, edge).mean_spectra)
    assert remote.l2_l3_agreement == local.l2_l3_agreement
    assert remote.n_frames == local.n_frames
    # the run in progress at SIGTERM was finished as incomplete and written
    incomplete = read_results(tmp_path / "remote" / partial)
    assert any("RunIncompleteError" in e or "no stop" in e for e in incomplete.errors)


def test_make_publisher_waits_for_the_proxy_subscription():
    """No pause between connecting and the first document: the start is still delivered."""
    from bluesky import RunEngine
    from bluesky.plans import count
    from ophyd.sim import det

    pin, rec, stop, thread, probe_pub = _proxy_and_consumer()
    probe_pub.close()
    RE = RunEngine({})
    first = _run_docs(1)
    with make_publisher(RE, f"127.0.0.1:{pin}") as publisher:
        for name, doc in first:  # at once (a plain bluesky Publisher loses these)
            publisher.callback(name, doc)
        RE(count([det], num=3))
        assert publisher.flush(timeout=10) and publisher.errors == []
    deadline = time.monotonic() + 10
    while [n for n, _ in rec.docs].count("stop") < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(20)
    assert [n for n, _ in rec.docs] == [n for n, _ in first] + [
        "start", "descriptor", "event", "event", "event", "stop"]
    with pytest.raises(ValueError, match="bare port"):
        make_publisher(RE, "5567")


def test_serve_honours_the_toml_element_and_edges(tmp_path):
    """serve() with the CLI's callback factory: the config's element/edges win over the start document."""
    from bluesky import RunEngine

    from txm_live.callbacks.cli import _callback_factory
    from txm_live.config import load_config
    from txm_live.sim.devices import make_txm
    from txm_live.sim.phantom import make_phantom
    from txm_live.sim.plans import xanes_scan

    toml = tmp_path / "nd.toml"
    toml.write_text('[analysis]\nelement = "Nd"\nedges = ["L3"]\n[preview]\nenabled = false\n')
    cfg = load_config(toml)
    energies = np.concatenate([np.arange(6000.0, 6190.0, 20.0), np.arange(6190.0, 6240.0, 2.0),
                               np.arange(6240.0, 6700.0, 20.0)])
    RE = RunEngine({})
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    # a Nd scan whose start document wrongly claims Fe K: the configuration decides
    (uid,) = RE(xanes_scan(make_txm(make_phantom(shape=(40, 40), seed=1), seed=11, margin_px=4), energies,
                           n_dark=2, element="Fe", edges=("K",)))
    pin, pout = free_port(), free_port()
    proxy = Proxy(f"127.0.0.1:{pin}", f"127.0.0.1:{pout}")
    threading.Thread(target=proxy.start, daemon=True).start()
    stop, served = threading.Event(), []
    thread = threading.Thread(target=lambda: served.extend(serve(
        f"127.0.0.1:{pout}", out=tmp_path / "out", stop_event=stop, callback_factory=_callback_factory(cfg))))
    thread.start()
    time.sleep(1.0)  # consumer subscribed (slow joiner)
    pub = Publisher(f"127.0.0.1:{pin}", serializer=encode_msgpack)
    time.sleep(0.5)  # publisher connected to the proxy
    for name, doc in docs:
        pub(name, doc)
    deadline = time.monotonic() + 180
    while not (tmp_path / "out" / uid / "phases.h5").exists():
        assert time.monotonic() < deadline, "no results from serve"
        time.sleep(0.2)
    stop.set()
    thread.join(60)
    pub.close()
    assert not thread.is_alive()
    r = read_results(tmp_path / "out" / uid)
    assert r.errors == () and r.ok, r.errors
    assert r.element == "Nd" and list(r.edges) == ["L3"] and r.requested_edges == ("L3",)
