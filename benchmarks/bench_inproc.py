"""Benchmark: the in-process stages of one full-size L3 edge (issue 12 item 6), per stage.

The cube of ``bench_scale.py --sections l3`` (602 x 643 px, 641 energies, float32, 0.92 GiB;
same phantom, seeds and noise) is analysed ``--repeat`` times per thread count in one process
(warm: the first call, with its lazy imports and first page faults, is run once and not
counted). For every stage the table prints the best wall time over the repeats, the process
CPU time of that stage split in user + system (system time is mostly page faults of fresh
arrays, expensive on a VM that returns freed pages to its host), and the stage's floor: the
bytes it must read divided by the measured memory read bandwidth. Labels of every run are
compared with those of the first call (they must be identical). The load average is printed:
the machine is shared and wall times under load are upper bounds.

``--cache PATH`` keeps the cube in a ``.npy`` file (built once, ~30 s; read back in ~1 s).
``--allocator`` first gives this process the Dask workers' allocator settings
(:func:`txm_live.worker_allocator.apply_in_this_process`), to compare the page faults.

Run::

    python benchmarks/bench_inproc.py --repeat 3 --threads 1 2 --cache /tmp/l3_cube.npy
    python benchmarks/bench_inproc.py --repeat 3 --threads 1 2 --cache /tmp/l3_cube.npy --allocator
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analysis import noisy_od_cube  # noqa: E402
from bench_scale import read_bandwidth  # noqa: E402

from txm_live.edges import default_windows  # noqa: E402
from txm_live.phases import analyze_edge  # noqa: E402
from txm_live.sim.phantom import FULL_SHAPE, make_phantom  # noqa: E402

STAGES = ("select", "normalize", "snr", "features", "pca", "cluster", "summarize")


def _load() -> str:
    return "load " + ", ".join(f"{v:.1f}" for v in os.getloadavg())


def cube_and_energies(shape: tuple[int, int], cache: Path | None) -> tuple[np.ndarray, np.ndarray, object]:
    """The bench_scale L3 cube (energy-major float32) and its energies, built or read from ``cache``."""
    (l3,) = default_windows("Nd", ("L3",))
    e3 = np.arange(np.ceil(l3.start), l3.end + 1e-9, 1.0)
    if cache is not None and cache.exists():
        cube = np.load(cache)
        if cube.shape == (e3.size, *shape):
            return e3, cube, l3
    cube = noisy_od_cube(make_phantom(shape, mode="mixed", seed=0), e3, flux=5000.0, seed=1)
    if cache is not None:
        np.save(cache, cube)
    return e3, cube, l3


def timed(e3: np.ndarray, cube: np.ndarray, window, threads: int) -> tuple[object, float, dict, dict, dict]:
    """One analyze_edge: result, wall, per-stage wall, user CPU and system CPU."""
    marks: list[tuple[str, float, float, float]] = []

    def progress(name: str) -> None:
        t = os.times()
        marks.append((name, time.perf_counter(), t.user, t.system))

    gc.collect()
    t0 = time.perf_counter()
    res = analyze_edge(e3, cube, window=window, threads=threads, progress=progress)
    wall = time.perf_counter() - t0
    t = os.times()
    marks.append(("end", time.perf_counter(), t.user, t.system))
    user = {a[0]: b[2] - a[2] for a, b in zip(marks, marks[1:])}
    system = {a[0]: b[3] - a[3] for a, b in zip(marks, marks[1:])}
    return res, wall, dict(res.timings), user, system


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--shape", type=int, nargs=2, default=list(FULL_SHAPE))
    ap.add_argument("--cache", type=Path, default=None, help="keep the cube in this .npy file")
    ap.add_argument("--allocator", action="store_true",
                    help="first apply txm_live.worker_allocator.apply_in_this_process() (the Dask workers' "
                         "malloc thresholds, no numpy huge-page advice) to this process")
    args = ap.parse_args(argv)
    if args.allocator:
        from txm_live.worker_allocator import apply_in_this_process

        print(f"allocator: {apply_in_this_process()}")
    e3, cube, l3 = cube_and_energies(tuple(args.shape), args.cache)
    bw = read_bandwidth()
    print(f"## in-process full-size L3: {cube.shape[1]} x {cube.shape[2]} px, {e3.size} energies "
          f"({cube.nbytes / 2**30:.2f} GiB); read bandwidth {bw / 2**30:.1f} GiB/s; {_load()}")
    ref, wall0, *_ = timed(e3, cube, l3, args.threads[0])
    print(f"first call of the process (threads={args.threads[0]}): {wall0:.2f} s")
    n_pix = cube.shape[1] * cube.shape[2]
    n_f = int(np.count_nonzero((e3 >= l3.e0 - 20) & (e3 <= l3.e0 + 60)))
    n_mask = int(ref.mask.sum())
    floors = {"normalize": cube.nbytes, "snr": 8 * n_pix, "features": 4 * n_f * n_pix, "pca": 4 * n_f * n_mask,
              "cluster": 4 * ref.n_components * n_mask, "summarize": 4 * e3.size * n_mask}
    for threads in args.threads:
        runs = [timed(e3, cube, l3, threads) for _ in range(max(1, args.repeat))]
        same = all(np.array_equal(r[0].labels, ref.labels) for r in runs)
        best = min(runs, key=lambda r: r[1])
        print(f"\n### threads={threads}: best total {best[1]:.2f} s (walls "
              f"{', '.join(f'{r[1]:.2f}' for r in runs)}); labels identical to the first call: {same}; {_load()}")
        print("| stage | best wall (s) | CPU user + sys in the best run (s) | floor (s) | wall / floor |")
        print("|---|---|---|---|---|")
        for st in STAGES:
            w = min(r[2].get(st, float("nan")) for r in runs)
            fl = floors.get(st, 0.0) / bw
            ratio = f"{w / fl:.0f}x" if fl else "-"
            print(f"| {st} | {w:.3f} | {best[3].get(st, 0):.2f} + {best[4].get(st, 0):.2f} | "
                  f"{fl:.3f} | {ratio} |")
        print(f"| total | {best[1]:.3f} | {sum(best[3].values()):.2f} + {sum(best[4].values()):.2f} | "
              f"{sum(floors.values()) / bw:.3f} | |")
        del runs, best


if __name__ == "__main__":
    main()
