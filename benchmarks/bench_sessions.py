"""Long sessions: memory over 200 runs through one live callback and through ``serve``.

A beamtime analyses hundreds of runs in one process. This benchmark feeds ``--runs`` runs (default
200) of small synthetic frames (``--shape``, default 32x32; the Nd L3 window every ``--step`` eV, 65
energies) with the default analysis (``txm_live.phases.analyze_edge`` in the analysis process,
cube in shared memory) through

1. one :class:`~txm_live.callbacks.live.XanesLiveCallback` (``cb.wait()`` after each run), and
2. :func:`~txm_live.callbacks.remote.serve` behind a real ZeroMQ proxy (msgpack over loopback),
   writing ``phases.h5`` for every run,

and prints the resident memory (RSS, MB) of this process and of the analysis process after every
``--every`` runs, and the growth per 100 runs fitted over the second half of the session (target:
flat, i.e. no growth beyond allocator noise; the callback keeps ``max_results`` full results and
a small summary of the others).

Usage::

    python benchmarks/bench_sessions.py                    # 200 runs each, a few minutes on 2 cores
    python benchmarks/bench_sessions.py --runs 50 --every 5

Numbers depend on the machine load; they are printed, not asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import event_model
import numpy as np

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb(pid: int | None = None) -> float:
    """Resident set size of ``pid`` (this process by default), MB."""
    try:
        with open(f"/proc/{pid or 'self'}/statm") as f:
            return int(f.read().split()[1]) * PAGE / 2**20
    except (FileNotFoundError, ProcessLookupError):
        return float("nan")


class Frames:
    """Uint16 sample/flat/dark images of a two-phase particle for each energy (made once, reused)."""

    def __init__(self, shape: tuple[int, int], energies: np.ndarray, e0: float) -> None:
        rng = np.random.default_rng(0)
        h, w = shape
        jump = rng.uniform(0.4, 1.0, shape)
        jump[:, : w // 4] = 0.0
        white = np.where(np.arange(w)[None, :] > w // 2, 1.5, 0.5) * np.ones((h, 1))
        self.flat = np.full(shape, 4000, np.uint16)
        self.dark = np.full(shape, 100, np.uint16)
        self.samples = []
        for e in energies:
            od = 0.2 + jump * (0.5 + np.arctan((e - e0) / 2) / np.pi + white * np.exp(-0.5 * ((e - e0 - 3) / 4) ** 2))
            counts = 3900 * np.exp(-od) * (1 + 0.01 * rng.normal(size=shape))
            self.samples.append((100 + counts).round().astype(np.uint16))
        self.energies = energies
        self.shape = shape


def run_documents(frames: Frames) -> list[tuple[str, dict]]:
    """One run's documents (new uids, the same image arrays)."""
    h, w = frames.shape
    bundle = event_model.compose_run(metadata={"plan_name": "bench_sessions", "txm_live": {
        "energy_key": "mono_energy", "image_key": "camera_image", "element": "Nd", "edges": ["L3"],
        "energies": [float(e) for e in frames.energies], "image_shape": [h, w]}})
    img = {"source": "sim", "dtype": "array", "shape": [h, w], "dtype_numpy": "<u2"}
    num = {"source": "sim", "dtype": "number", "shape": [], "dtype_numpy": "<f8"}
    prim = bundle.compose_descriptor(name="primary", data_keys={"mono_energy": num, "camera_image": img})
    flat = bundle.compose_descriptor(name="flat", data_keys={"mono_energy": num, "camera_image": img})
    dark = bundle.compose_descriptor(name="dark", data_keys={"camera_image": img})
    ts = {"mono_energy": 0.0, "camera_image": 0.0}
    docs = [("start", bundle.start_doc), ("descriptor", dark.descriptor_doc),
            ("event", dark.compose_event(data={"camera_image": frames.dark}, timestamps={"camera_image": 0.0})),
            ("descriptor", prim.descriptor_doc), ("descriptor", flat.descriptor_doc)]
    for e, s in zip(frames.energies, frames.samples):
        docs.append(("event", prim.compose_event(data={"mono_energy": float(e), "camera_image": s}, timestamps=ts)))
        docs.append(("event", flat.compose_event(data={"mono_energy": float(e), "camera_image": frames.flat},
                                                 timestamps=ts)))
    docs.append(("stop", bundle.compose_stop()))
    return docs


def make_callback():  # noqa: ANN201
    from txm_live.callbacks.live import XanesLiveCallback

    return XanesLiveCallback(exafs=False, register=False)


def child_rss(cb) -> float:  # noqa: ANN001
    proc = getattr(getattr(cb, "_process", None), "_proc", None)
    return rss_mb(proc.pid) if proc is not None else float("nan")


def bench_callback(frames: Frames, n_runs: int, every: int) -> list[tuple[int, float, float, float]]:
    cb = make_callback()
    rows = []
    t0 = time.perf_counter()
    for i in range(1, n_runs + 1):
        for name, doc in run_documents(frames):
            cb(name, doc)
        cb.wait()
        if i % every == 0 or i == 1:
            rows.append((i, rss_mb(), child_rss(cb), time.perf_counter() - t0))
    errors = [e for s in cb.summaries for e in s.errors]
    cb.close()
    if errors:
        print(f"  (callback: {len(errors)} errors, first: {errors[0]})")
    return rows


def bench_serve(frames: Frames, n_runs: int, every: int, out: Path) -> list[tuple[int, float, float, float]]:
    from bluesky.callbacks.zmq import Proxy, Publisher

    from txm_live.callbacks.catalog import free_port
    from txm_live.callbacks.remote import encode_msgpack, serve

    pin, pout = free_port(), free_port()
    threading.Thread(target=Proxy(f"127.0.0.1:{pin}", f"127.0.0.1:{pout}").start, daemon=True).start()
    done = threading.Condition()
    n_done = [0]
    cbs = []

    def on_result(r) -> None:  # noqa: ANN001
        with done:
            n_done[0] += 1
            done.notify_all()

    def factory():  # noqa: ANN202
        cbs.append(make_callback())
        return cbs[-1]

    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(f"127.0.0.1:{pout}",),
                              kwargs={"out": out, "stop_event": stop, "on_result": on_result, "callback_factory": factory})
    thread.start()
    pub = Publisher(f"127.0.0.1:{pin}", serializer=encode_msgpack)
    # ZeroMQ slow joiner: empty probe runs until the consumer has seen one
    with done:
        while not n_done[0]:
            probe = event_model.compose_run()
            pub("start", probe.start_doc)
            pub("stop", probe.compose_stop())
            done.wait(0.5)
    base = n_done[0]
    rows = []
    t0 = time.perf_counter()
    for i in range(1, n_runs + 1):
        for name, doc in run_documents(frames):
            pub(name, doc)
        with done:
            while n_done[0] < base + i:
                done.wait(1.0)
        if i % every == 0 or i == 1:
            rows.append((i, rss_mb(), child_rss(cbs[0]), time.perf_counter() - t0))
    stop.set()
    thread.join()
    pub.close()
    return rows


def growth_per_100(rows: list[tuple[int, float, float, float]]) -> float:
    half = [r for r in rows if r[0] >= rows[-1][0] / 2]
    if len(half) < 2:
        return float("nan")
    x = np.array([r[0] for r in half], float)
    y = np.array([r[1] for r in half])
    return float(np.polyfit(x, y, 1)[0] * 100)


def print_table(title: str, rows: list[tuple[int, float, float, float]]) -> None:
    print(f"\n{title}")
    print(f"{'runs':>6} {'RSS MB':>8} {'analysis process MB':>20} {'seconds':>8}")
    for i, rss, child, t in rows:
        print(f"{i:>6} {rss:>8.1f} {child:>20.1f} {t:>8.1f}")
    print(f"growth over the second half: {growth_per_100(rows):+.2f} MB per 100 runs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--shape", default="32x32", help="frame HxW")
    ap.add_argument("--step", type=float, default=10.0, help="energy step (eV) over the Nd L3 window")
    args = ap.parse_args()
    from txm_live.edges import default_windows

    window = default_windows("Nd", ("L3",))[0]
    energies = np.arange(window.start, window.end + 1e-9, args.step)
    h, w = (int(v) for v in args.shape.split("x"))
    frames = Frames((h, w), energies, window.e0)
    print(f"{args.runs} runs of {len(energies)} energies x {h}x{w} px (Nd L3, default analysis in the analysis "
          f"process); RSS at start {rss_mb():.1f} MB")
    print_table("1. one XanesLiveCallback, cb.wait() after each run", bench_callback(frames, args.runs, args.every))
    with tempfile.TemporaryDirectory() as tmp:
        print_table("2. txm-live serve behind a ZeroMQ proxy (same process), phases.h5 written per run",
                    bench_serve(frames, args.runs, args.every, Path(tmp)))


if __name__ == "__main__":
    main()
