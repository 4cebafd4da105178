"""Benchmark: recording into Tiled, replay to phase maps, ZeroMQ latency.

Measures, on the simulated TXM (default: full size, 602 x 643 phantom, 730 x 771 frames,
1024 energies = 2048 sample/flat frames + darks):

1. recording cost per document **on the RunEngine thread** (the threaded TiledWriter's
   ``__call__``), median and p99 -- target <= 5 ms median;
2. how long the writer needs after the scan to have everything in the catalog;
3. replay from the embedded catalog: raw read speed (block-wise array reads, no analysis) and
   replay **to phase maps** through ``XanesLiveCallback`` -- target <= 60 s for 1024 energies;
4. ZeroMQ per-frame latency RunEngine -> Publisher -> proxy -> ``serve`` consumer (msgpack).

Usage::

    python benchmarks/bench_catalog.py                 # full size (several minutes, ~6 GB)
    python benchmarks/bench_catalog.py --energies 128 --shape 256 256   # quick
    prlimit --as=12000000000 python benchmarks/bench_catalog.py

Timings on a shared machine are noisy; run twice.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def energies_for(n: int) -> np.ndarray:
    """``n`` energies: the production 1 eV grid for 1024, else dense at both edges."""
    if n >= 1024:
        return np.arange(6000.0, 7024.0, 1.0)
    n_l3 = n * 2 // 5
    n_l2 = n * 2 // 5
    rest = n - n_l3 - n_l2
    parts = [np.linspace(6000.0, 6170.0, rest // 3, endpoint=False),
             np.linspace(6170.0, 6400.0, n_l3, endpoint=False),
             np.linspace(6400.0, 6680.0, rest // 3, endpoint=False),
             np.linspace(6680.0, 6920.0, n_l2, endpoint=False)]
    parts.append(np.linspace(6920.0, 7023.0, n - sum(p.size for p in parts)))
    return np.concatenate(parts)


class _Timed:
    """Wrap a callback and time each call on the calling (RunEngine) thread."""

    def __init__(self, inner):
        self.inner = inner
        self.times: dict[str, list[float]] = {}

    def __call__(self, name, doc):
        t0 = time.perf_counter()
        self.inner(name, doc)
        self.times.setdefault(name, []).append(time.perf_counter() - t0)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def bench(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    from bluesky import RunEngine

    from txm_live.callbacks.catalog import record_to, start_embedded_server
    from txm_live.callbacks.live import XanesLiveCallback
    from txm_live.callbacks.replay import replay_run, replay_runs
    from txm_live.sim.devices import make_txm
    from txm_live.sim.phantom import make_phantom
    from txm_live.sim.plans import xanes_scan

    rows: list[tuple[str, str, str]] = []
    energies = energies_for(args.energies)
    if args.dir is None:  # frames of a full-size scan take 2.2 GB: removed afterwards
        with tempfile.TemporaryDirectory(prefix="bench-catalog-") as tmp:
            args.dir = tmp
            try:
                return bench(args)
            finally:
                args.dir = None
    work = Path(args.dir)
    phantom = make_phantom(shape=tuple(args.shape), seed=0)
    print(f"# {energies.size} energies, phantom {tuple(args.shape)}, file_backed="
          f"{not args.inline}, work dir {work}", file=sys.stderr)
    with start_embedded_server(work) as tiled:
        client = tiled.client()
        RE = RunEngine({})
        recording = record_to(RE, client)
        RE.unsubscribe(recording.token)
        timed = _Timed(recording.callback)
        RE.subscribe(timed)
        txm = make_txm(phantom, seed=1, file_backed=not args.inline, write_path=work / "frames")
        t0 = time.perf_counter()
        (uid,) = RE(xanes_scan(txm, energies, n_dark=args.n_dark))
        t_scan = time.perf_counter() - t0
        t1 = time.perf_counter()
        recording.flush()
        t_flush = time.perf_counter() - t1
        recording.close()
        per_frame = timed.times.get("event", [])
        n_frames = len(per_frame)
        rows += [
            ("scan (simulated acquisition + recording)", f"{t_scan:.1f} s",
             f"{n_frames} events, frame {txm.detector_shape}"),
            ("recording cost per event on RE thread, median", f"{1e3 * statistics.median(per_frame):.3f} ms",
             "target <= 5 ms"),
            ("recording cost per event on RE thread, p99", f"{1e3 * _pct(per_frame, 99):.3f} ms", ""),
            ("writer catch-up after the scan", f"{t_flush:.1f} s",
             f"errors: {len(recording.errors)}"),
        ]
        # raw replay speed (no analysis)
        class _Null:
            n = 0

            def __call__(self, name, doc):
                if name == "event_page":
                    self.n += len(doc["seq_num"])

        for direct in ((True, False) if not args.inline else (False,)):
            null = _Null()
            t2 = time.perf_counter()
            stats = replay_run(client, uid, null, progress=not args.quiet, direct_files=direct)
            t_read = time.perf_counter() - t2
            mb = null.n * int(np.prod(txm.detector_shape)) * 2 / 1e6
            how = sorted(set(stats.sources.values()))
            rows.append((f"replay read only ({'/'.join(how)} block reads, no analysis)",
                         f"{t_read:.1f} s", f"{null.n / t_read:.0f} frames/s, "
                         f"{mb / t_read:.0f} MB/s"))
        if not args.no_analysis:
            t3 = time.perf_counter()
            (result,) = replay_runs(client, [uid], out=work / "out", progress=not args.quiet,
                                    callback_factory=XanesLiveCallback)
            t_ana = time.perf_counter() - t3
            phases = ", ".join([f"{k} {e.n_phases} phases" for k, e in result.edges.items()]
                               + [f"{k} failed" for k in result.requested_edges if k not in result.edges])
            rows.append(("replay to phase maps (L3 + L2 + EXAFS, phases.h5)", f"{t_ana:.1f} s",
                         f"target <= 60 s (1024 energies); {phases}; errors {len(result.errors)}"))
    if not args.no_zmq:
        rows += bench_zmq(args, phantom)
    return rows


def bench_zmq(args: argparse.Namespace, phantom) -> list[tuple[str, str, str]]:
    from bluesky import RunEngine
    from bluesky.callbacks.zmq import Proxy

    from txm_live.callbacks.catalog import free_port
    from txm_live.callbacks.remote import make_publisher, serve
    from txm_live.sim.devices import make_txm
    from txm_live.sim.plans import xanes_scan

    pin, pout = free_port(), free_port()
    proxy = Proxy(f"127.0.0.1:{pin}", f"127.0.0.1:{pout}")
    threading.Thread(target=proxy.start, daemon=True).start()

    class _Latency:
        def __init__(self):
            self.lat: list[float] = []
            self.results: list = []

        def __call__(self, name, doc):
            if name == "event" and "camera_image" in doc["data"]:
                self.lat.append(time.time() - doc["time"])

        def close(self, timeout=None):
            return []

    consumer, stop = _Latency(), threading.Event()
    th = threading.Thread(target=serve, args=(f"127.0.0.1:{pout}",),
                          kwargs={"stop_event": stop, "callback_factory": lambda: consumer})
    th.start()
    time.sleep(1.0)
    RE = RunEngine({})
    pub = make_publisher(RE, f"127.0.0.1:{pin}")
    timed = _Timed(pub.callback)
    RE.unsubscribe(pub.token)
    RE.subscribe(timed)
    n = min(args.zmq_energies, args.energies)
    txm = make_txm(phantom, seed=2)
    RE(xanes_scan(txm, energies_for(n), n_dark=1))
    pub.flush()
    deadline = time.monotonic() + 60
    while len(consumer.lat) < 2 * n + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    th.join(30)
    pub.callback.close()
    pub.publisher.close()
    lat = consumer.lat
    return [
        ("ZeroMQ latency per frame (event time -> consumer), median",
         f"{1e3 * statistics.median(lat):.1f} ms", f"{len(lat)} inline frames, msgpack, loopback"),
        ("ZeroMQ latency per frame, p95", f"{1e3 * _pct(lat, 95):.1f} ms", ""),
        ("ZeroMQ publish cost on RE thread, median",
         f"{1e3 * statistics.median(timed.times['event']):.3f} ms", "threaded Publisher"),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--energies", type=int, default=1024, help="energies (frames = 2 x energies)")
    p.add_argument("--shape", type=int, nargs=2, default=(602, 643), metavar=("H", "W"),
                   help="phantom shape (the detector adds a margin)")
    p.add_argument("--n-dark", type=int, default=5)
    p.add_argument("--inline", action="store_true", help="inline images instead of HDF5 files")
    p.add_argument("--no-analysis", action="store_true", help="skip replay to phase maps")
    p.add_argument("--no-zmq", action="store_true", help="skip the ZeroMQ latency")
    p.add_argument("--zmq-energies", type=int, default=64, help="energies of the ZeroMQ scan")
    p.add_argument("--dir", help="work directory, kept (default: a temporary one, removed)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    rows = bench(args)
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"{'measure':<{w0}}  {'value':>{w1}}  notes")
    print("-" * (w0 + w1 + 40))
    for name, value, note in rows:
        print(f"{name:<{w0}}  {value:>{w1}}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
