"""Benchmark of the simulated TXM: frame rendering and a full xanes_scan through a RunEngine.

Usage::

    python benchmarks/bench_simulator.py                 # full 1024-energy scan (target <= 120 s)
    python benchmarks/bench_simulator.py --energies 128  # shorter scan, projected to 1024
    python benchmarks/bench_simulator.py --file-backed   # camera writes HDF5 (StreamResource)

Prints a table: phantom optical density per energy, sample / flat / dark frame rendering
(median and p95 over ``--frames`` frames, full 602 x 643 phantom in a 730 x 771 detector frame),
and the measured wall time of a RunEngine scan with ``--energies`` energies plus its projection to
1024 energies. Timings on a shared machine are noisy: compare medians, rerun when in doubt.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time

import numpy as np


def _stats(samples: list[float]) -> tuple[float, float]:
    a = np.asarray(samples) * 1e3
    return float(np.median(a)), float(np.percentile(a, 95))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--energies", type=int, default=1024, help="energies in the RunEngine scan (default 1024)")
    parser.add_argument("--frames", type=int, default=30, help="frames per kind for the rendering timings")
    parser.add_argument("--file-backed", action="store_true", help="write frames to HDF5 during the scan")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.energies < 1 or args.frames < 1:
        parser.error("--energies and --frames must be >= 1")

    from bluesky import RunEngine

    from txm_live.sim.devices import CLOSED, OPEN, make_txm
    from txm_live.sim.phantom import make_phantom
    from txm_live.sim.plans import default_energies, xanes_scan

    t0 = time.perf_counter()
    phantom = make_phantom(shape=(602, 643), seed=args.seed)
    t_phantom = time.perf_counter() - t0
    txm = make_txm(phantom, seed=args.seed)
    energies_all = default_energies()
    rows: list[tuple[str, float, float]] = []

    od_times = []
    for e in energies_all[:: max(1, len(energies_all) // args.frames)][: args.frames]:
        t = time.perf_counter()
        phantom.optical_density(float(e))
        od_times.append(time.perf_counter() - t)
    rows.append(("phantom.optical_density (per energy)", *_stats(od_times)))

    cam = txm.camera
    timings: dict[str, list[float]] = {"sample": [], "flat": [], "dark": []}
    sel = energies_all[:: max(1, len(energies_all) // args.frames)][: args.frames]
    for kind in ("sample", "flat", "dark"):
        txm.shutter.put(CLOSED if kind == "dark" else OPEN)
        txm.stage.move(txm.sample_out if kind == "flat" else txm.sample_in)
        for e in sel:
            txm.mono.move(float(e))
            cam._od_cache = None  # include the optical density in the sample-frame cost
            t = time.perf_counter()
            cam.trigger()
            timings[kind].append(time.perf_counter() - t)
    for kind in ("sample", "flat", "dark"):
        rows.append((f"camera.trigger() {kind} frame (incl. OD)" if kind == "sample" else
                     f"camera.trigger() {kind} frame", *_stats(timings[kind])))

    energies = energies_all[: args.energies] if args.energies <= 1024 else np.linspace(6000, 7023, args.energies)
    with tempfile.TemporaryDirectory() as tmp:
        txm_scan = make_txm(phantom, seed=args.seed, file_backed=args.file_backed,
                            write_path=tmp if args.file_backed else None)
        n_docs = {"n": 0}

        def count(name: str, doc: dict) -> None:
            n_docs["n"] += 1

        RE = RunEngine({})
        t = time.perf_counter()
        RE(xanes_scan(txm_scan, energies, n_dark=5), count)
        t_scan = time.perf_counter() - t

    per_energy = t_scan / len(energies)
    projected = per_energy * 1024
    hd, wd = txm.detector_shape
    print(f"\nSimulated TXM benchmark: phantom 602 x 643 (built in {t_phantom:.2f} s), "
          f"detector {hd} x {wd}, seed {args.seed}")
    print(f"{'stage':<44} {'median ms':>10} {'p95 ms':>10}")
    print("-" * 66)
    for name, med, p95 in rows:
        print(f"{name:<44} {med:>10.1f} {p95:>10.1f}")
    print("-" * 66)
    mode = "file-backed (HDF5 + stream_datum)" if args.file_backed else "inline images"
    print(f"RunEngine xanes_scan, {len(energies)} energies, {mode}: {t_scan:.1f} s "
          f"({per_energy * 1e3:.1f} ms per energy, {n_docs['n']} documents)")
    print(f"projected full scan (1024 energies): {projected:.1f} s  (target <= 120 s: "
          f"{'OK' if projected <= 120 else 'MISSED'})")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
