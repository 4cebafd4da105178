"""Benchmark of the live callback at full detector size.

Measures, for a scan of ``--energies`` energies of ``--shape`` frames (default 1024 x 602x643):

1. **RunEngine-thread cost** of ``XanesLiveCallback.__call__`` per document (median, p99, max)
   during a real ``bluesky.RunEngine`` scan, with ingest and analysis running on the worker
   threads (target: median <= 1 ms, max <= 20 ms).
2. **Worker ingest rate** (frames/s: flat/dark correction, magnification, registration, cube)
   with and without registration, documents fed as fast as possible (targets >= 100 and >= 25
   frames/s on 2 cores).
3. **Peak memory** (RSS above the baseline) of a full scan with the analyses, compared with the
   size of the float32 cube (target <= 2.5x).

Frames are synthetic (two-phase particle with Nd L3/L2-like spectra, a flat with structure,
Poisson-like noise from a recycled pool, integer drift and a jump, +17 % magnification);
``--source sim`` renders them with the ophyd simulator instead (slower; use fewer energies).

Usage::

    prlimit --as=8000000000 python benchmarks/bench_live.py               # full size, 1024 energies
    python benchmarks/bench_live.py --energies 256 --shape 301x321         # quick
    python benchmarks/bench_live.py --skip-memory --skip-re                # ingest rates only

Numbers depend on the machine load; they are printed, not asserted.
"""

from __future__ import annotations

import argparse
import gc
import threading
import time

import numpy as np


# ----------------------------------------------------------------------------- synthetic frames
class SyntheticTXM:
    """Cheap frame factory: uint16 sample and flat images per energy, reusing noise pools."""

    def __init__(self, shape: tuple[int, int], energies: np.ndarray, seed: int = 0) -> None:
        from scipy import ndimage as ndi

        rng = np.random.default_rng(seed)
        h, w = shape
        self.shape = shape
        self.energies = energies
        yy, xx = np.mgrid[0:h, 0:w]
        particle = ((yy - h / 2) ** 2 / (0.38 * h) ** 2 + (xx - w / 2) ** 2 / (0.4 * w) ** 2) < 1
        texture = ndi.gaussian_filter(rng.random(shape), 3).astype(np.float32)
        texture = (texture - texture.min()) / np.ptp(texture)
        oxide = particle & (ndi.gaussian_filter(rng.random(shape), 12) > 0.5)
        self.t_metal = (particle & ~oxide) * (0.6 + 0.8 * texture)
        self.t_oxide = oxide * (0.6 + 0.8 * texture)
        self.flat = (4000 * (1 + 0.05 * np.sin(xx / 37.0) * np.cos(yy / 23.0))).astype(np.float32)
        self.noise = [rng.normal(0, 1, shape).astype(np.float32) for _ in range(7)]
        self.dark = np.full(shape, 100, np.uint16)
        self._i = 0

    @staticmethod
    def _mu(e: float, wl: float) -> float:
        def edge(e0: float, a: float) -> float:
            return 0.5 + np.arctan(2 * (e - e0) / 3.7) / np.pi + a * np.exp(-0.5 * ((e - e0 - 3) / 3.0) ** 2)

        return 0.3 + 0.0002 * (e - 6000) + 0.6 * edge(6208.0, wl) + 0.27 * edge(6722.0, 0.8 * wl)

    def frames(self, index: int, energy: float) -> tuple[np.ndarray, np.ndarray, float]:
        """(sample uint16, flat uint16, pixel size nm) of scan point ``index``."""
        od = self.t_metal * self._mu(energy, 1.7) + self.t_oxide * self._mu(energy, 2.75)
        n = len(self.energies)
        drift = (int(20 * index / n), int(-12 * index / n) + (10 if index > n // 2 else 0))
        od = np.roll(od, drift, axis=(0, 1))
        counts = self.flat * np.exp(-od)
        k = self._i % len(self.noise)
        self._i += 1
        sample = counts + np.sqrt(counts) * self.noise[k] + 100
        flat = self.flat + np.sqrt(self.flat) * self.noise[(k + 3) % len(self.noise)] + 100
        pixel = 31.2 * energy / float(self.energies[0])
        return sample.astype(np.uint16), flat.astype(np.uint16), pixel


class _Readable:
    """Minimal bluesky-readable object returning preset readings (no ophyd overhead)."""

    def __init__(self, name: str, keys: dict[str, dict]) -> None:
        self.name = name
        self.parent = None
        self._keys = keys
        self.values: dict[str, object] = {}

    def describe(self) -> dict:
        return {k: dict(v) for k, v in self._keys.items()}

    def read(self) -> dict:
        now = time.time()
        return {k: {"value": self.values[k], "timestamp": now} for k in self._keys}

    def describe_configuration(self) -> dict:
        return {}

    def read_configuration(self) -> dict:
        return {}


def synthetic_plan(txm: SyntheticTXM, n_dark: int = 5, rate: float = 0.0):
    from bluesky import plan_stubs as bps
    from bluesky import preprocessors as bpp

    h, w = txm.shape
    img = {"source": "bench", "dtype": "array", "shape": [h, w], "dtype_numpy": "<u2"}
    num = {"source": "bench", "dtype": "number", "shape": [], "dtype_numpy": "<f8"}
    cam = _Readable("camera", {"camera_image": img, "camera_pixel_size": num})
    mono = _Readable("mono", {"mono_energy": num})
    md = {
        "plan_name": "xanes_scan",
        "txm_live": {
            "contract_version": 1, "energy_key": "mono_energy", "image_key": "camera_image",
            "pixel_size_key": "camera_pixel_size", "primary_stream": "primary", "flat_stream": "flat",
            "dark_stream": "dark", "element": "Nd", "edges": ["L3", "L2"],
            "energies": [float(e) for e in txm.energies], "image_shape": [h, w], "pixel_size_nm": 31.2,
        },
    }

    def shot(stream: str, objs):
        yield from bps.create(stream)
        for o in objs:
            yield from bps.read(o)
        yield from bps.save()

    @bpp.run_decorator(md=md)
    def inner():
        cam.values.update(camera_image=txm.dark, camera_pixel_size=31.2)
        for _ in range(n_dark):
            yield from shot("dark", [cam])
        t_start = time.monotonic()
        for i, e in enumerate(txm.energies):
            if rate > 0:  # pace the scan like a detector: energy i not before t_start + i / rate
                delay = t_start + i / rate - time.monotonic()
                if delay > 0:
                    yield from bps.sleep(delay)
            sample, flat, px = txm.frames(i, float(e))
            mono.values["mono_energy"] = float(e)
            cam.values.update(camera_image=sample, camera_pixel_size=px)
            yield from shot("primary", [mono, cam])
            cam.values.update(camera_image=flat)
            yield from shot("flat", [mono, cam])
        cam.values.update(camera_image=txm.dark, camera_pixel_size=31.2)
        for _ in range(n_dark):
            yield from shot("dark", [cam])

    return inner()


# ----------------------------------------------------------------------------- measurements
class PeakRSS:
    """Samples the memory of the process and its children every 20 ms in a thread."""

    def __init__(self, cb=None) -> None:  # noqa: ANN001
        import psutil

        self._cb = cb
        self.max_backlog = 0
        self._p = psutil.Process()
        self.baseline = self._total()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _total(self) -> int:
        """RSS of this process plus the private memory of its children (the analysis process)."""
        import psutil

        total = self._p.memory_info().rss
        for child in self._p.children(recursive=True):
            try:
                mi = child.memory_info()
                total += mi.rss - mi.shared
            except psutil.Error:
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total())
            if self._cb is not None:
                self.max_backlog = max(self.max_backlog, self._cb.backlog)
            time.sleep(0.02)

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return (self.peak - self.baseline) / 1e9


def make_callback(args, *, register: bool):
    from txm_live.callbacks.live import XanesLiveCallback

    analysis = None
    if args.analysis == "preview":
        from txm_live.preview import preview_edge as analysis
    if args.analysis == "none":
        def analysis(energies, block, *, window, valid=None):  # noqa: ANN001, ANN202
            from txm_live.errors import AnalysisError

            raise AnalysisError("analysis disabled in this benchmark")
    return XanesLiveCallback(register=register, analysis=analysis, exafs=args.analysis != "none")


def run_re_scan(args, txm, *, register: bool, memory: bool):
    from bluesky import RunEngine

    cb = make_callback(args, register=register)
    costs: list[float] = []
    null_costs: list[float] = []

    def timed(name, doc):  # noqa: ANN001, ANN202
        t = time.perf_counter()
        cb(name, doc)
        costs.append(time.perf_counter() - t)

    def null(name, doc):  # noqa: ANN001, ANN202
        return None

    def timed_null(name, doc):  # noqa: ANN001, ANN202 - control: same wrapper, callback doing nothing
        t = time.perf_counter()
        null(name, doc)
        null_costs.append(time.perf_counter() - t)

    gc.collect()
    rss = PeakRSS(cb) if memory else None
    RE = RunEngine({})
    RE.subscribe(timed)
    RE.subscribe(timed_null)
    t0 = time.perf_counter()
    if args.source == "sim":
        from txm_live.sim.plans import xanes_scan

        RE(xanes_scan(txm, txm_energies(args), n_dark=5))
    else:
        RE(synthetic_plan(txm, rate=args.rate))
    t_scan = time.perf_counter() - t0
    backlog = cb.backlog
    (res,) = cb.wait(timeout=3600)
    t_all = time.perf_counter() - t0
    cb.close()
    peak = rss.stop() if rss else float("nan")
    return costs, null_costs, t_scan, t_all, backlog, res, peak, (rss.max_backlog if rss else -1)


def txm_energies(args) -> np.ndarray:
    return np.linspace(6000.0, 7023.0, args.energies)


def ingest_rate(args, txm, *, register: bool) -> tuple[float, int]:
    """Frames/s of the worker alone: documents composed up front, fed in a burst, analysis off."""
    import event_model

    from txm_live.callbacks.live import XanesLiveCallback
    from txm_live.errors import AnalysisError

    n = min(args.energies, args.ingest_frames)
    energies = txm.energies[:n]
    h, w = txm.shape
    bundle = event_model.compose_run(metadata={"txm_live": {"energies": [float(e) for e in energies],
                                                             "image_shape": [h, w]}})
    img = {"source": "bench", "dtype": "array", "shape": [h, w], "dtype_numpy": "<u2"}
    num = {"source": "bench", "dtype": "number", "shape": [], "dtype_numpy": "<f8"}
    keys = {"mono_energy": num, "camera_image": img, "camera_pixel_size": num}
    prim = bundle.compose_descriptor(name="primary", data_keys=keys)
    flat = bundle.compose_descriptor(name="flat", data_keys=keys)
    dark = bundle.compose_descriptor(name="dark", data_keys={"camera_image": img})
    docs = [("start", bundle.start_doc), ("descriptor", dark.descriptor_doc),
            ("event", dark.compose_event(data={"camera_image": txm.dark}, timestamps={"camera_image": 0})),
            ("descriptor", prim.descriptor_doc), ("descriptor", flat.descriptor_doc)]
    ts = {k: 0.0 for k in keys}
    for i, e in enumerate(energies):
        s, f, px = txm.frames(i, float(e))
        docs.append(("event", prim.compose_event(data={"mono_energy": float(e), "camera_image": s,
                                                        "camera_pixel_size": px}, timestamps=ts)))
        docs.append(("event", flat.compose_event(data={"mono_energy": float(e), "camera_image": f,
                                                        "camera_pixel_size": px}, timestamps=ts)))

    def off(energies, block, *, window, valid=None):  # noqa: ANN001, ANN202
        raise AnalysisError("analysis switched off to time the ingest alone (expected)")

    cb = XanesLiveCallback(register=register, analysis=off, exafs=False)
    t0 = time.perf_counter()
    for name, doc in docs:
        cb(name, doc)
    while cb.backlog:
        time.sleep(0.005)
    dt = time.perf_counter() - t0
    cb.close()
    return n / dt, n


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--energies", type=int, default=1024, help="scan points (default 1024)")
    ap.add_argument("--shape", default="602x643", help="frame shape HxW (default 602x643)")
    ap.add_argument("--source", choices=("synthetic", "sim"), default="synthetic")
    ap.add_argument("--analysis", choices=("default", "preview", "none"), default="default",
                    help="'default': txm_live.phases.analyze_edge runs during the scan; 'preview': "
                         "txm_live.preview.preview_edge as the analysis; 'none': disabled")
    ap.add_argument("--rate", type=float, default=15.0,
                    help="synthetic scan pace, energies/s (0: as fast as frames are generated)")
    ap.add_argument("--ingest-frames", type=int, default=200, help="frames for the ingest-rate runs")
    ap.add_argument("--skip-re", action="store_true", help="skip the RunEngine scan (RE-thread cost, memory)")
    ap.add_argument("--skip-memory", action="store_true", help="do not sample RSS during the RunEngine scan")
    ap.add_argument("--no-register", action="store_true", help="RunEngine scan without registration")
    args = ap.parse_args(argv)
    h, w = (int(x) for x in args.shape.lower().split("x"))
    energies = txm_energies(args)
    if args.source == "sim":
        from txm_live.sim.devices import make_txm
        from txm_live.sim.phantom import make_phantom

        txm = make_txm(make_phantom(shape=(h, w), seed=0), seed=0)
        h, w = txm.model.detector_shape
        synth = SyntheticTXM((h, w), energies)
    else:
        txm = synth = SyntheticTXM((h, w), energies)
    cube_gb = args.energies * h * w * 4 / 1e9
    print(f"txm-live live-callback benchmark: {args.energies} energies, frames {h}x{w}, source={args.source}, "
          f"analysis={args.analysis}, scan pace {args.rate or 'unpaced'} energies/s; float32 cube {cube_gb:.2f} GB")
    rows = []
    for register in (False, True):
        rate, n = ingest_rate(args, synth, register=register)
        target = 25 if register else 100
        rows.append((f"worker ingest, registration {'on' if register else 'off'} ({n} frames)",
                     f"{rate:.1f} frames/s", f">= {target}", "ok" if rate >= target else "MISSED"))
    if not args.skip_re:
        costs, null_costs, t_scan, t_all, backlog, res, peak, max_backlog = run_re_scan(
            args, txm, register=not args.no_register, memory=not args.skip_memory)
        c = np.asarray(costs) * 1e3
        rows.append(("RE-thread cost per document, median", f"{np.median(c):.4f} ms", "<= 1 ms",
                     "ok" if np.median(c) <= 1 else "MISSED"))
        rows.append(("RE-thread cost per document, p99", f"{np.percentile(c, 99):.4f} ms", "", ""))
        rows.append(("RE-thread cost per document, max", f"{c.max():.3f} ms", "<= 20 ms",
                     "ok" if c.max() <= 20 else "MISSED"))
        rows.append(("documents (> 5 ms / > 20 ms)", f"{len(c)} ({np.sum(c > 5)} / {np.sum(c > 20)})", "", ""))
        n = np.asarray(null_costs) * 1e3
        rows.append(("control: no-op callback, p99 / max", f"{np.percentile(n, 99):.4f} / {n.max():.3f} ms", "",
                     f"> 5 ms: {np.sum(n > 5)} (GIL/OS scheduling, not txm-live)"))
        rows.append(("scan wall time / until results", f"{t_scan:.1f} s / {t_all:.1f} s",
                     "", f"backlog at stop: {backlog} docs, max {max_backlog}"))
        rows.append(("analyses", ", ".join(f"{k} {'ok' if k in res.edges else 'failed'}"
                                           for k in res.requested_edges), "",
                     "; ".join(e[:60] for e in res.errors[:2])))
        if not args.skip_memory:
            rows.append(("peak memory above baseline (RSS + children private)", f"{peak:.2f} GB ({peak / cube_gb:.2f}x cube)",
                         "<= 2.5x cube", "ok" if peak <= 2.5 * cube_gb else "MISSED"))
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':<28} {'target':<14} note")
    for r in rows:
        print(f"{r[0]:<{width}}  {r[1]:<28} {r[2]:<14} {r[3]}")
    print("(2 cores shared with other jobs: one run each, timings are noisy)")


if __name__ == "__main__":
    main()
