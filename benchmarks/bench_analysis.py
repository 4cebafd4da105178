"""Benchmark: full-size phase analysis of one edge (time from "L3 window complete" to "phase
maps ready") and its peak memory.

Builds the seed experiment's frame (602 x 643 pixels, phantom of :mod:`txm_live.sim.phantom`)
over the Nd L3 window at 1 eV steps (641 energies, 0.99 GB float32), adds photon noise, then
times :func:`txm_live.phases.analyze_edge` stage by stage; optionally also the L2 edge and
:func:`txm_live.phases.compare_edges`. Prints a table.

Run::

    python benchmarks/bench_analysis.py                    # full size, mixed mode, L3 + L2
    python benchmarks/bench_analysis.py --shape 301 322 --no-l2
    python benchmarks/bench_analysis.py --no-l2 --threads 1 2 --repeat 3   # the stage/floor table

Target (issue 12 item 6): full-size L3 from window complete to phase maps in <= 1.5 s on this
2-core machine (time and peak RSS are printed; the peak is sampled every 20 ms by a thread, so
short spikes may be missed).

Distance to the physical limit: the script measures the memory bandwidth of this machine
(``np.copyto`` of a 512 MiB array, and a BLAS ``ones @ A`` read of the same array, with 1 and 2
threads) and prints, for each stage of the L3 analysis and each thread count, its wall time,
its process CPU time and the system (kernel) part of it, the bytes the stage must at least move
through memory, and its *floor* = bytes / read bandwidth (:func:`stage_bytes` says what is
counted). Wall and CPU are the best of ``--repeat`` runs; the machine is shared, so the load
average is printed next to them. ``threads=2`` uses both cores of the 2-core machine
(``analyze_edge``'s default, used by the live pipeline and the CLI, is 1).

Noise model: ``I = N0 exp(-OD)`` transmitted and ``F = N0`` flat photons per pixel with Poisson
statistics, drawn with the Gaussian approximation (exact mean and variance; at N0 = 5000 the
difference from Poisson is negligible and it is several times faster), one frame at a time in
float32, so the cube is the only large array: ``OD = -ln(I / F)``.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import threading
import time

import numpy as np
import psutil

from txm_live.edges import default_windows
from txm_live.phases import analyze_edge, compare_edges
from txm_live.sim.phantom import FULL_SHAPE, make_phantom


class PeakRss:
    """Sample the resident set size of this process in a thread; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.02) -> None:
        self._proc = psutil.Process(os.getpid())
        self._interval = interval
        self._stop = threading.Event()
        self.start = self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakRss:
        self.start = self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def noisy_od_cube(phantom, energies: np.ndarray, *, flux: float, seed: int) -> np.ndarray:
    """Noisy optical density (float32, energy-major ``(n_e, H, W)``), built frame by frame."""
    rng = np.random.default_rng(seed)
    out = np.empty((energies.size, *phantom.shape), dtype=np.float32)
    shape = phantom.shape
    for i, e in enumerate(energies):
        mu_m, mu_o = phantom.mu(float(e))
        od = phantom.metal_path_um * mu_m
        od += phantom.oxide_path_um * mu_o
        sample = flux * np.exp(-od)
        sample += np.sqrt(sample) * rng.standard_normal(shape, dtype=np.float32)
        flat = flux + np.sqrt(flux) * rng.standard_normal(shape, dtype=np.float32)
        np.maximum(sample, 1.0, out=sample)
        np.divide(sample, flat, out=sample)
        np.log(sample, out=sample)
        np.negative(sample, out=out[i])
    return out


def _system_time() -> float:
    """System (kernel) CPU time of this process so far (s)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def _run_edge(
    energies: np.ndarray, cube: np.ndarray, window, *, threads: int = 1
) -> tuple[object, float, float, int, int, dict[str, float], dict[str, float]]:
    """One timed :func:`analyze_edge`; also the process CPU time of every stage and its system
    part (page faults of new arrays: the kernel zeroes every page a new array touches)."""
    gc.collect()
    marks: list[tuple[str, float, float]] = []
    with PeakRss() as mem:
        c0 = time.process_time()
        s0 = _system_time()
        t0 = time.perf_counter()
        result = analyze_edge(energies, cube, window=window, threads=threads,
                              progress=lambda name: marks.append((name, time.process_time(), _system_time())))
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        sys_total = _system_time() - s0
    marks.append(("end", c0 + cpu, s0 + sys_total))
    stage_cpu = {a[0]: b[1] - a[1] for a, b in zip(marks, marks[1:])}
    stage_sys = {a[0]: b[2] - a[2] for a, b in zip(marks, marks[1:])}
    stage_sys["total"] = sys_total
    return result, wall, cpu, mem.start, mem.peak, stage_cpu, stage_sys


def memory_bandwidth(threads: int, *, nbytes: int = 512 * 2**20, repeat: int = 3) -> tuple[float, float]:
    """Measured (copy, read) bandwidth in bytes/s with ``threads`` threads.

    copy: ``np.copyto`` of an ``nbytes`` float32 array (bytes read + written per second), the
    threads each copying a share of the rows; read: BLAS ``ones @ A`` (single-precision
    matrix-vector product, memory-bound) with ``threads`` BLAS threads. Best of ``repeat``.
    """
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    rows = 1024
    a = np.ones((rows, nbytes // (4 * rows)), dtype=np.float32)
    b = np.empty_like(a)
    b.fill(0.0)  # touch the pages before timing
    ones = np.ones(rows, dtype=np.float32)
    shares = [slice(k * rows // threads, (k + 1) * rows // threads) for k in range(threads)]
    best_copy = best_read = 0.0
    with ThreadPoolExecutor(max_workers=threads) as pool, threadpool_limits(limits=threads, user_api="blas"):
        for _ in range(repeat):
            t0 = time.perf_counter()
            list(pool.map(lambda sl: np.copyto(b[sl], a[sl]), shares))
            best_copy = max(best_copy, 2 * a.nbytes / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            ones @ a
            best_read = max(best_read, a.nbytes / (time.perf_counter() - t0))
    return best_copy, best_read


def stage_bytes(n_e: int, n_pix: int, n_clustered: int, n_feat: int, n_comp: int) -> dict[str, int]:
    """Bytes each stage of :func:`analyze_edge` must at least move through memory (float32).

    normalize: read the whole window block once (every energy: finiteness needs them all) and
    write the per-pixel results (feature rows, edge step, noise, significance, pre-edge line);
    snr: read three per-pixel maps; features: read the feature rows of the clustered pixels and
    write the whitened features; pca: read the features once and write the scores;
    cluster: read the scores (a compute-bound stage: its floor is ~0); summarize: read the
    whole block once more (the per-phase spectra over the whole window need the labels, which
    exist only after clustering).
    """
    block = 4 * n_e * n_pix
    return {
        "normalize": block + 4 * (n_feat + 5) * n_pix,
        "snr": 4 * 3 * n_pix,
        "features": 2 * 4 * n_feat * n_clustered,
        "pca": 4 * (n_feat + n_comp) * n_clustered,
        "cluster": 4 * n_comp * n_clustered,
        "summarize": block,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=2, default=list(FULL_SHAPE), metavar=("H", "W"))
    parser.add_argument("--flux", type=float, default=5000.0, help="flat photons per pixel")
    parser.add_argument("--mode", choices=("mixed", "pure"), default="mixed")
    parser.add_argument("--step", type=float, default=1.0, help="energy step (eV)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-l2", action="store_true", help="skip the L2 edge and the comparison")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="thread counts of the L3 stage/floor table (analyze_edge(threads=))")
    parser.add_argument("--repeat", type=int, default=2, help="L3 runs per thread count (best is kept)")
    args = parser.parse_args(argv)

    l3, l2 = default_windows("Nd", ("L3", "L2"))
    shape = (int(args.shape[0]), int(args.shape[1]))
    phantom = make_phantom(shape, mode=args.mode, seed=args.seed)
    e3 = np.arange(np.ceil(l3.start), l3.end + 1e-9, args.step)
    t0 = time.perf_counter()
    cube = noisy_od_cube(phantom, e3, flux=args.flux, seed=args.seed + 1)
    t_sim = time.perf_counter() - t0
    print(f"# txm-live analysis benchmark: {shape[0]} x {shape[1]} px, {args.mode} phantom, flux {args.flux:g}")
    print(f"# cores available: {len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.1f}")
    print(f"# L3 cube: {e3.size} energies x {shape[0]*shape[1]:,} px, {cube.nbytes/2**30:.2f} GiB, simulated in {t_sim:.1f} s")

    rows = []
    per_threads = {}
    for th in args.threads:
        runs = [_run_edge(e3, cube, l3, threads=th) for _ in range(max(1, args.repeat))]
        best = min(runs, key=lambda r: r[1])
        stage_wall = {k: min(r[0].timings[k] for r in runs) for k in best[0].timings}
        stage_cpu = {k: min(r[5].get(k, float("nan")) for r in runs) for k in best[5]}
        stage_sys = {k: min(r[6].get(k, float("nan")) for r in runs) for k in best[6]}
        per_threads[th] = (best, stage_wall, stage_cpu, stage_sys, os.getloadavg()[0])
        same = all(np.array_equal(r[0].labels, best[0].labels) for r in runs)
        if th != args.threads[0]:
            same = same and np.array_equal(best[0].labels, per_threads[args.threads[0]][0][0].labels)
        print(f"# L3 threads={th}: labels identical across runs and thread counts: {same}")
    r3, wall3, cpu3, base3, peak3, _, _ = per_threads[args.threads[0]][0]
    rows.append(("L3", r3, wall3, cpu3, base3, peak3))
    n_e, n_pix = cube.shape[0], cube.shape[1] * cube.shape[2]
    del cube
    if not args.no_l2:
        e2 = np.arange(np.ceil(l2.start), l2.end + 1e-9, args.step)
        cube2 = noisy_od_cube(phantom, e2, flux=args.flux, seed=args.seed + 2)
        r2, wall2, cpu2, base2, peak2, _, _ = _run_edge(e2, cube2, l2, threads=args.threads[0])
        rows.append(("L2", r2, wall2, cpu2, base2, peak2))
        del cube2
        t0 = time.perf_counter()
        comp = compare_edges(r3, r2)
        t_cmp = time.perf_counter() - t0

    stages = ["select", "normalize", "snr", "features", "pca", "cluster", "summarize"]
    print()
    print("| edge | energies | pixels clustered | " + " | ".join(stages)
          + " | total wall (s) | CPU (s) | peak RSS above start (GiB) | phases |")
    print("|---" * (len(stages) + 7) + "|")
    for name, r, wall, cpu, base, peak in rows:
        cells = " | ".join(f"{r.timings.get(s, float('nan')):.2f}" for s in stages)
        print(
            f"| {name} | {r.energies.size} | {int(r.mask.sum()):,} | {cells} | {wall:.2f} | {cpu:.2f} | "
            f"{(peak - base) / 2**30:.2f} | {r.n_phases} ({', '.join(f'{c:,}' for c in r.counts)}) |"
        )
    print()
    for name, r, *_ in rows:  # noqa: B007
        print(f"{name}: {r.n_components} PCA components, eps {r.eps:.3g}, min_samples {r.min_samples}, "
              f"phases {list(r.phase_names)}")
    if not args.no_l2:
        print(f"L2 vs L3: agreement {comp.agreement:.3f} over {comp.n_compared:,} px, mapping {comp.mapping}, "
              f"compare_edges {t_cmp:.2f} s")
    try:
        from sklearn.metrics import adjusted_rand_score

        m = r3.mask
        print(f"L3 ARI vs ground truth (clustered pixels): {adjusted_rand_score(phantom.labels[m], r3.labels[m]):.3f}, "
              f"mask coverage of particle {m.sum() / max(int((phantom.labels > 0).sum()), 1):.3f}")
    except ImportError:  # pragma: no cover
        pass
    # stage times against their memory floors, per thread count
    f_lo, f_hi = r3.feature_range
    n_feat = int(np.count_nonzero((r3.energies >= r3.e0 + f_lo) & (r3.energies <= r3.e0 + f_hi)))
    nbytes = stage_bytes(n_e, n_pix, int(r3.mask.sum()), n_feat, r3.n_components)
    print("\n## L3 stages against their memory floor (floor = bytes / measured read bandwidth)")
    print("CPU = process CPU time (all threads), of which sys = kernel time (mostly zeroing the pages of new "
          "arrays); wall and CPU are the best of --repeat runs.")
    print("| threads | copy GB/s | read GB/s | stage | wall (s) | CPU (s) | sys (s) | bytes (GB) | floor (s) | wall / floor |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    target = 1.5
    for th, ((r, wall, cpu, *_), stage_wall, stage_cpu, stage_sys, load) in per_threads.items():
        bw_copy, bw_read = memory_bandwidth(th)
        floor_total = 0.0
        for stage in ("normalize", "snr", "features", "pca", "cluster", "summarize"):
            floor = nbytes[stage] / bw_read
            floor_total += floor
            print(f"| {th} | {bw_copy / 1e9:.1f} | {bw_read / 1e9:.1f} | {stage} | {stage_wall[stage]:.3f} | "
                  f"{stage_cpu.get(stage, float('nan')):.3f} | {stage_sys.get(stage, float('nan')):.3f} | "
                  f"{nbytes[stage] / 1e9:.3f} | {floor:.3f} | {stage_wall[stage] / floor:.1f} |")
        print(f"| {th} | | | **total** (load {load:.1f}) | **{wall:.2f}** | {cpu:.2f} | "
              f"{stage_sys.get('total', float('nan')):.2f} | {sum(nbytes.values()) / 1e9:.3f} | {floor_total:.3f} | "
              f"{wall / floor_total:.1f} |")
    for th, ((r, wall, cpu, *_), *_rest) in per_threads.items():
        if shape == tuple(FULL_SHAPE):
            verdict = f"{'meets' if wall <= target else 'MISSES'} the {target} s target"
        else:
            verdict = f"(the {target} s target is for {FULL_SHAPE[0]} x {FULL_SHAPE[1]} px)"
        print(f"L3 analyze_edge threads={th}: {wall:.2f} s wall, {cpu:.2f} s CPU: {verdict}")
    print(f"(wall clock on a shared machine, load average now {os.getloadavg()[0]:.1f}; cores "
          f"{len(os.sched_getaffinity(0))})")


if __name__ == "__main__":
    main()
