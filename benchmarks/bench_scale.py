"""Benchmark: scaling out with Dask (one edge, exact DBSCAN, batch replay, out-of-core 2k x 2k).

Sections (``--sections``, default all; each prints a table):

* ``l3``: full-size L3 (602 x 643 px, 641 energies) from "window complete" to phase maps: in
  process (the process's first call, then warm: ``threads=1`` and ``threads=2``, best of
  ``--repeat``), and with ``analyze_edge(client=...)`` on a LocalCluster of 1 and 2 worker
  processes, twice: a numpy block (scattered band by band by ``analyze_edge``, as in the live
  case) and a block already on the workers (a dask array persisted in the analysis' row bands).
  Each row prints the client's and every worker's CPU seconds (user + system) and the load
  average, so that the result can be read on a shared machine, and the 2-vs-1 speedup next to its
  bound on idle cores from the 1-worker CPU times. Each in-process stage (threads 1 and 2) is
  printed next to its floor: the bytes it must read divided by the measured memory read
  bandwidth of this machine.
  Measured 2026-12-05 07:20 UTC at load 6-9 (four other sessions busy; README "Scaling out"):
  wall clocks at that load are 2x the CPU and move by seconds from run to run, so the CPU
  seconds are the result. In process, warm, threads=1: 1.64 + 0.04 s CPU (the first call of
  the process 1.75 + 0.11 s). Block on the workers: client CPU 0.75 + 0.09 s (1 worker) and
  0.64 + 0.06 s (2 workers), workers 2.00 + 0.10 s and 1.94 + 0.06 s; bound on idle cores 1.56x
  (target 1.7x not met: the client's clustering, ~0.35 s, is serial); labels identical.
  A "client CPU breakdown" line per distributed row splits the client's CPU into its main thread
  (DBSCAN, eps estimate, mixture refinement, bookkeeping; with the cluster stage's wall time) and
  the other threads of the process (the LocalCluster's scheduler, the comms). Measured 2026-12-05
  09:45 UTC at load 3.6-4.5, block on the workers: client CPU 0.44 s with 1 worker (main thread
  0.30 s, of which the cluster stage 0.27 s; scheduler and comms 0.14 s), 0.48 s with 2 workers;
  main b0bbc23 right after: 0.68 / 0.69 s (README "Scaling out"). Measured idle 2026-12-05 12:43
  UTC (load 0.6-1.2), block on the workers: 1 worker 1.87 s, 2 workers 1.23 s (1.52x; the
  1-worker wall moves by 0.2 s from run to run), client CPU 0.37 / 0.40 s, worker CPU 1.54 s
  against 0.81 + 0.78 s; the cluster stage 0.23 s wall.
* ``dbscan``: exact DBSCAN of 10^7 points (d = 3, five blobs and uniform noise), single process
  (all cores, then one core) against ``txm_live.dbscan(..., client=)`` on 2 workers (one slab
  each); the labels must be identical. Prints wall and CPU per process, then the distributed
  call's profile: the cuts, halo fraction, bytes sent and received, the client's cut/send and
  merge times, and every slab's points, boundary core points, task CPU and wall time.
* ``replay``: 8 simulated runs recorded in an embedded Tiled catalog, replayed serially (the
  default live callback with its analysis process) and with ``replay_runs(client=)`` on 1 and 2
  workers.
* ``big``: a 2048 x 2048 x 1024 scan (1 eV steps across the Nd L3 and L2 edges, optical
  density float32, 16 GiB) written to HDF5 in chunks of 16 frames (never held in one process),
  then the L3 edge analysed with ``analyze_edge(client=)`` on a dask array over the file: the
  workers read their row tiles themselves. Prints the time, the peak RSS of each worker
  (sampled every 0.5 s) and of the client. ``--big-shape``/``--big-energies`` shrink it.

Run::

    python benchmarks/bench_scale.py                       # everything (long: ~20-40 min)
    python benchmarks/bench_scale.py --sections l3 dbscan

The machine is shared: the load average is printed with every table, and wall times under load
are upper bounds (CPU times are printed where they are meaningful).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analysis import PeakRss, noisy_od_cube  # noqa: E402

from txm_live.edges import default_windows  # noqa: E402
from txm_live.phases import analyze_edge  # noqa: E402
from txm_live.sim.phantom import FULL_SHAPE, make_phantom  # noqa: E402


def _load() -> str:
    return "load average " + ", ".join(f"{v:.1f}" for v in os.getloadavg())


def _cluster(n: int, memory_limit: str = "4GB"):
    from dask.distributed import Client

    from txm_live.distributed import local_cluster

    cluster = local_cluster(n, memory_limit=memory_limit)
    return cluster, Client(cluster)


class WorkerPeak:
    """Peak RSS of every worker of ``client``, sampled every ``interval`` s in a thread."""

    def __init__(self, client, interval: float = 0.5) -> None:
        self.client = client
        self.interval = interval
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.client.run(lambda: psutil.Process().memory_info().rss)
            except Exception:  # noqa: BLE001 - a worker restarting: sample again
                rss = {}
            for k, v in rss.items():
                self.peak[k] = max(self.peak.get(k, 0), v)
            self._stop.wait(self.interval)

    def __enter__(self) -> WorkerPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def read_bandwidth() -> float:
    """Memory read bandwidth (bytes/s): best of 3 sums over a 512 MiB float32 array."""
    a = np.ones(2**27, dtype=np.float32)
    best = np.inf
    for _ in range(3):
        t = time.perf_counter()
        a.sum()
        best = min(best, time.perf_counter() - t)
    return a.nbytes / best


# ----------------------------------------------------------------------------------------------
def _worker_cpu(client) -> dict[str, float]:
    """CPU seconds (user + system) of every worker process so far."""
    return {k: u + s for k, (u, s) in _worker_times(client).items()}


def _worker_times(client) -> dict[str, tuple[float, float]]:
    """User and system CPU seconds of every worker process so far."""
    def cpu() -> tuple[float, float]:
        t = psutil.Process().cpu_times()
        return t.user, t.system
    return client.run(cpu)


def _client_times() -> tuple[float, float]:
    """User and system CPU seconds of this process (the client, and a LocalCluster's scheduler)."""
    t = os.times()
    return t.user, t.system


def _on_workers(client, cube: np.ndarray, tiles: list[slice]):
    """``cube`` as a dask array whose row tiles were scattered to the workers (round robin)."""
    import dask
    import dask.array as da

    workers = list(client.scheduler_info(n_workers=-1)["workers"])
    parts = []
    for i, rows in enumerate(tiles):
        fut = client.scatter(np.ascontiguousarray(cube[:, rows, :]), hash=False, workers=[workers[i % len(workers)]])
        parts.append(da.from_delayed(dask.delayed(fut), shape=(cube.shape[0], rows.stop - rows.start, cube.shape[2]),
                                     dtype=cube.dtype))
    return da.concatenate(parts, axis=1)


def section_l3(args: argparse.Namespace) -> None:
    from txm_live.phases import _row_tiles

    (l3,) = default_windows("Nd", ("L3",))
    shape = tuple(args.shape)
    phantom = make_phantom(shape, mode="mixed", seed=0)
    e3 = np.arange(np.ceil(l3.start), l3.end + 1e-9, 1.0)
    cube = noisy_od_cube(phantom, e3, flux=5000.0, seed=1)
    bw = read_bandwidth()
    print(f"\n## full-size L3: {shape[0]} x {shape[1]} px, {e3.size} energies ({cube.nbytes / 2**30:.2f} GiB); "
          f"read bandwidth {bw / 2**30:.1f} GiB/s; {_load()}")
    rows = []
    gc.collect()
    c0, t0 = _client_times(), time.perf_counter()
    ref = analyze_edge(e3, cube, window=l3)  # the first call of this process (lazy imports, first page faults)
    c1 = _client_times()
    rows.append(("in process, threads=1, first call of the process", time.perf_counter() - t0,
                 (c1[0] - c0[0], c1[1] - c0[1]), [], True, _load()))
    best_in: dict[int, object] = {}
    for threads in (1, 2):  # a running analysis process (imports done), best of --repeat
        best = None
        for _ in range(max(1, args.repeat)):
            gc.collect()
            c0, t0 = _client_times(), time.perf_counter()
            got = analyze_edge(e3, cube, window=l3, threads=threads)
            wall = time.perf_counter() - t0
            c1 = _client_times()
            row = (f"in process, threads={threads}", wall, (c1[0] - c0[0], c1[1] - c0[1]), [],
                   bool(np.array_equal(got.labels, ref.labels)), _load())
            if best is None or wall < best[1]:
                best, best_in[threads] = row, got
            del got
        rows.append(best)
    tiles = _row_tiles(shape[0], shape[1], e3.size)
    split: dict[str, tuple[float, float, float]] = {}
    for n in (1, 2):
        cluster, client = _cluster(n)
        analyze_edge(e3[:], cube[:, :64], window=l3, client=client)  # warm the workers' imports
        for how in ("numpy block (scattered by analyze_edge)", "block already on the workers"):
            best = None
            for _ in range(max(1, args.repeat)):  # best of --repeat runs (the machine is shared)
                block = cube if how.startswith("numpy") else _on_workers(client, cube, tiles)
                if not isinstance(block, np.ndarray):
                    from dask.distributed import wait

                    block = client.persist(block)
                    wait(block)
                w0 = _worker_times(client)
                c0, m0, t0 = _client_times(), time.thread_time(), time.perf_counter()
                got = analyze_edge(e3, block, window=l3, client=client)
                wall = time.perf_counter() - t0
                c1, m1 = _client_times(), time.thread_time()
                w1 = _worker_times(client)
                row = (f"{n} worker{'s' if n > 1 else ''}, {how}", wall, (c1[0] - c0[0], c1[1] - c0[1]),
                       [(w1[k][0] - w0[k][0], w1[k][1] - w0[k][1]) for k in w1],
                       bool(np.array_equal(got.labels, ref.labels)), _load())
                if best is None or wall < best[1]:
                    best = row
                    # the client's CPU split: this (main) thread, i.e. DBSCAN, its parameter
                    # estimate, the mixture refinement and the client's bookkeeping, against the
                    # other threads of the process (the LocalCluster's scheduler and the comms)
                    split[row[0]] = (m1 - m0, sum(c1) - sum(c0) - (m1 - m0), got.timings["cluster"])
                del block
            rows.append(best)
        client.close()
        cluster.close()
    base = rows[1][1]  # in process, threads=1 (warm)
    # CPU seconds as user + system (system time is mostly page faults and socket copies)
    print("| run | wall (s) | client CPU (s, user + sys) | worker CPU (s, user + sys) | worker efficiency "
          "| speedup vs in process (threads=1) | labels identical | load average (1, 5, 15 min) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, wall, cpu, wcpu, same, load in rows:
        eff = ", ".join(f"{sum(w) / wall:.0%}" for w in wcpu) or "-"
        ws = ", ".join(f"{u:.2f} + {s:.2f}" for u, s in wcpu) or "-"
        print(f"| {name} | {wall:.2f} | {cpu[0]:.2f} + {cpu[1]:.2f} | {ws} | {eff} | {base / wall:.2f}x | {same} "
              f"| {load[13:]} |")
    print("\nclient CPU breakdown (the serial part of the 2-vs-1 speedup):")
    for name, (main, other, clus) in split.items():
        print(f"- {name}: main thread {main:.2f} s (the cluster stage: DBSCAN, eps estimate and refinement, "
              f"{clus:.2f} s wall), other threads (scheduler, comms) {other:.2f} s")
    for how in ("numpy", "already"):
        one = [r for r in rows if r[0].startswith("1 worker,") and how in r[0]]
        two = [r for r in rows if r[0].startswith("2 workers,") and how in r[0]]
        if one and two:
            # Amdahl from the 1-worker CPU times: the client's work (scatter, DBSCAN, refinement,
            # noise estimate, the in-process scheduler) is serial, the workers' is split in two
            c1, w1 = sum(one[0][2]), sum(sum(w) for w in one[0][3])
            # the cluster stage alone (DBSCAN, eps estimate, refinement on the client, the workers
            # idle) bounds it even with no scheduler, no latency and no other client work
            s1 = split[one[0][0]][2]
            print(f"speedup 2 vs 1 workers ({one[0][0].split(', ', 1)[1]}): {one[0][1] / two[0][1]:.2f}x "
                  f"(worker CPU {w1:.2f} s vs {sum(sum(w) for w in two[0][3]):.2f} s; client CPU {c1:.2f} s; "
                  f"bound on idle cores from the 1-worker CPU times (c + w) / (c + w / 2) = "
                  f"{(c1 + w1) / (c1 + w1 / 2):.2f}x; with only the serial cluster stage s = {s1:.2f} s "
                  f"on the client, (s + w) / (s + w / 2) = {(s1 + w1) / (s1 + w1 / 2):.2f}x)")
    # stage times of the in-process run next to their floors (bytes read / read bandwidth)
    n_pix = cube.shape[1] * cube.shape[2]
    n_f = int(np.count_nonzero((e3 >= l3.e0 - 20) & (e3 <= l3.e0 + 60)))
    n_mask = int(ref.mask.sum())
    floors = {
        "normalize": cube.nbytes,  # the window once
        "snr": 4 * 2 * n_pix,
        "features": 4 * n_f * n_pix,
        "pca": 4 * n_f * n_mask,
        "cluster": 4 * ref.n_components * n_mask,
        "summarize": 4 * e3.size * n_mask,  # the window's masked pixels once
    }
    print("\n| stage | threads=1 (s) | threads=2 (s) | bytes read (MiB) | floor (s) | threads=1 / floor "
          "| threads=2 / floor |")
    print("|---|---|---|---|---|---|---|")
    for stage, nbytes in floors.items():
        t1, t2 = (best_in[k].timings.get(stage, float("nan")) for k in (1, 2))
        fl = nbytes / bw
        print(f"| {stage} | {t1:.2f} | {t2:.2f} | {nbytes / 2**20:.0f} | {fl:.3f} | {t1 / fl:.0f}x | {t2 / fl:.0f}x |")
    print(f"| total | {best_in[1].timings['total']:.2f} | {best_in[2].timings['total']:.2f} | "
          f"| {sum(floors.values()) / bw:.3f} | | |")


def _blobs(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(5, 3)) * 3
    parts = [rng.normal(c[i], 0.6 + 0.2 * i, (n // 6, 3)) for i in range(5)]
    parts.append(rng.uniform(-8, 8, (n - 5 * (n // 6), 3)))
    X = np.concatenate(parts)
    return X[rng.permutation(len(X))]


def section_dbscan(args: argparse.Namespace) -> None:
    from txm_live.dbscan import dbscan
    from txm_live.dbscan_dist import dbscan_distributed

    n = int(args.dbscan_points)
    X = _blobs(n, seed=7)
    eps, ms = 0.15 * (1e6 / n) ** (1 / 3), 8  # the same neighbour counts as 0.15 at 10^6 points
    print(f"\n## exact DBSCAN: {n:,} points, d = 3, eps {eps:.4f}, min_samples {ms}; {_load()}")
    rows = []
    ref = None
    for name, workers in ((f"single process, k-d tree queries on all {os.cpu_count()} cores (workers=-1, the default)", -1),
                          ("single process, one core (workers=1)", 1)):
        gc.collect()
        with PeakRss() as mem:
            c0, t0 = time.process_time(), time.perf_counter()
            lab = dbscan(X, eps=eps, min_samples=ms, workers=workers)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        ref = lab if ref is None else ref
        rows.append((name, wall, cpu, [], mem.peak - mem.start, bool(np.array_equal(lab, ref)), int(lab.max()) + 1, _load()))
        del lab
    cluster, client = _cluster(2)
    client.run(lambda: __import__("txm_live.dbscan_dist"))  # warm imports
    with PeakRss() as mem, WorkerPeak(client) as wp:
        w0 = _worker_cpu(client)
        c0, t0 = time.process_time(), time.perf_counter()
        got, prof = dbscan_distributed(X, eps=eps, min_samples=ms, client=client, return_profile=True)
        t_dist = time.perf_counter() - t0
        c_dist = time.process_time() - c0
        w1 = _worker_cpu(client)
    rows.append(("2 worker processes, one slab each (txm_live.dbscan(..., client=))", t_dist, c_dist,
                 [w1[k] - w0[k] for k in w1], mem.peak - mem.start, bool(np.array_equal(got, ref)), int(got.max()) + 1,
                 _load()))
    worker_peak = max(wp.peak.values()) if wp.peak else 0
    client.close()
    cluster.close()
    print("| run | wall (s) | client CPU (s) | worker process CPU (s) | client peak RSS above start (GiB) "
          "| labels identical | clusters | load average (1, 5, 15 min) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, wall, cpu, wcpu, peak, same, k, load in rows:
        ws = ", ".join(f"{w:.1f}" for w in wcpu) or "-"
        print(f"| {name} | {wall:.1f} | {cpu:.1f} | {ws} | {peak / 2**30:.2f} | {same} | {k} | {load[13:]} |")
    print(f"(noise fraction {np.mean(ref < 0):.3f}; 2 workers: peak worker RSS {worker_peak / 2**30:.2f} GiB; "
          f"speedup vs all cores {rows[0][1] / t_dist:.2f}x, vs one core {rows[1][1] / t_dist:.2f}x; "
          f"CPU (client + workers) / one-core CPU {(c_dist + sum(rows[2][3])) / rows[1][2]:.2f})")
    print(f"\nslabs along axis {prof.axis}, cuts at {', '.join(f'{b:.3f}' for b in prof.boundaries)}; "
          f"halo fraction {prof.halo_fraction:.3f}; sent to workers {prof.bytes_to_workers / 2**20:.0f} MiB "
          f"(X is {X.nbytes / 2**20:.0f} MiB), received {prof.bytes_from_workers / 2**20:.1f} MiB; client: cut and send "
          f"{prof.split_s:.2f} s, merge {prof.merge_s * 1e3:.0f} ms; call {prof.wall_s:.1f} s")
    print("| slab | points | owned | core | boundary cores sent | halo cores sent | task CPU (s) | task wall (s) | worker |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, sl in enumerate(prof.slabs):
        print(f"| {i} | {sl.points:,} | {sl.owned:,} | {sl.core_points:,} | {sl.boundary_cores:,} | {sl.halo_cores:,} "
              f"| {sl.cpu_s:.1f} | {sl.wall_s:.1f} | {sl.worker} |")


def section_replay(args: argparse.Namespace) -> None:
    from bluesky import RunEngine

    from txm_live.callbacks.catalog import record_to, start_embedded_server
    from txm_live.callbacks.replay import replay_runs
    from txm_live.sim.devices import make_txm
    from txm_live.sim.plans import xanes_scan

    energies = np.concatenate([np.arange(6000.0, 6190.0, 10.0), np.arange(6190.0, 6240.0, 1.0),
                               np.arange(6240.0, 6700.0, 10.0), np.arange(6700.0, 6760.0, 1.5),
                               np.arange(6760.0, 7024.0, 12.0)])
    shape = tuple(args.replay_shape)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp, start_embedded_server(tmp) as server:
        uids = []
        t0 = time.perf_counter()
        for seed in range(args.runs):
            RE = RunEngine({})
            rec = record_to(RE, server.client())
            txm = make_txm(make_phantom(shape=shape, seed=seed), seed=100 + seed, margin_px=4,
                           file_backed=True, write_path=Path(tmp) / "frames")
            (uid,) = RE(xanes_scan(txm, energies, n_dark=2))
            assert rec.flush(timeout=600) and not rec.errors, rec.errors
            rec.close()
            uids.append(uid)
        print(f"\n## batch replay: {args.runs} runs of {shape[0]} x {shape[1]} px x {energies.size} energies "
              f"(recorded in {time.perf_counter() - t0:.0f} s); {_load()}")
        rows = []
        t0 = time.perf_counter()
        serial = replay_runs(server.client(), uids, progress=False, timeout=600)
        rows.append(("serial, in process", time.perf_counter() - t0, sum(r.l3 is not None for r in serial), True))
        for n in (1, 2):
            cluster, client = _cluster(n)
            client.run(lambda: __import__("txm_live.callbacks.live"))  # warm imports
            t0 = time.perf_counter()
            got = replay_runs(server.client(), uids, progress=False, timeout=600, client=client)
            wall = time.perf_counter() - t0
            same = all((a.l3 is None and b.l3 is None) or (a.l3 is not None and b.l3 is not None
                       and np.array_equal(a.l3.labels, b.l3.labels)) for a, b in zip(serial, got))
            rows.append((f"{n} worker{'s' if n > 1 else ''}", wall, sum(r.l3 is not None for r in got), same))
            client.close()
            cluster.close()
        base = rows[0][1]
        print("| run | wall (s) | runs with an L3 map | speedup vs serial | L3 labels identical |")
        print("|---|---|---|---|---|")
        for name, wall, ok, same in rows:
            print(f"| {name} | {wall:.1f} | {ok}/{len(uids)} | {base / wall:.2f}x | {same} |")


def _write_big(path: Path, shape: tuple[int, int], energies: np.ndarray, chunk_rows: int) -> float:
    """Write the noisy OD scan block by block (16 frames in memory at most).

    Photon noise: Gaussian with the Poisson variance, drawn from one pool of standard normals
    (frame size + 1 Mi values) at a random offset per frame and per flat, so that writing is
    bound by the disk rather than by the random generator (the noise of two frames is a shifted
    copy, which no per-pixel stage can tell from independent noise).
    """
    import h5py

    phantom = make_phantom(shape, mode="mixed", seed=0)
    rng = np.random.default_rng(1)
    n_px = shape[0] * shape[1]
    pool = rng.standard_normal(n_px + 2**20, dtype=np.float32)
    flux = 5000.0
    t0 = time.perf_counter()
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("od", shape=(energies.size, *shape), dtype=np.float32,
                              chunks=(16, chunk_rows, shape[1]))
        f.create_dataset("energies", data=energies)
        for b0 in range(0, energies.size, 16):
            block = np.empty((min(16, energies.size - b0), *shape), dtype=np.float32)
            for i in range(block.shape[0]):
                mu_m, mu_o = phantom.mu(float(energies[b0 + i]))
                od = phantom.metal_path_um * np.float32(mu_m)
                od += phantom.oxide_path_um * np.float32(mu_o)
                sample = (flux * np.exp(-od)).astype(np.float32)
                o1, o2 = rng.integers(0, 2**20, 2)
                sample += np.sqrt(sample) * pool[o1: o1 + n_px].reshape(shape)
                flat = np.float32(flux) + np.float32(np.sqrt(flux)) * pool[o2: o2 + n_px].reshape(shape)
                np.maximum(sample, 1.0, out=sample)
                np.divide(sample, flat, out=sample)
                np.log(sample, out=sample)
                np.negative(sample, out=block[i])
            ds[b0: b0 + block.shape[0]] = block
    return time.perf_counter() - t0


def section_big(args: argparse.Namespace) -> None:
    import shutil

    import dask.array as da

    from txm_live.distributed import hdf5_block
    from txm_live.phases import _row_tiles

    shape = tuple(args.big_shape)
    energies = 6000.0 + np.arange(args.big_energies, dtype=np.float64)  # 1 eV steps over L3 and L2
    (l3,) = default_windows("Nd", ("L3",))
    n_win = int(np.count_nonzero((energies >= l3.start) & (energies <= l3.end)))
    tile_rows = _row_tiles(shape[0], shape[1], n_win)[0].stop
    need = energies.size * shape[0] * shape[1] * 4
    directory = Path(args.big_dir) if args.big_dir else Path(tempfile.gettempdir())
    free = shutil.disk_usage(directory).free
    print(f"\n## out of core: {shape[0]} x {shape[1]} x {energies.size} ({need / 2**30:.1f} GiB float32) in "
          f"{directory} ({free / 2**30:.0f} GiB free); {_load()}")
    if need > 0.8 * free:
        print("SKIPPED: not enough disk space (use --big-energies or --big-dir)")
        return
    path = directory / f"bench-scale-{os.getpid()}.h5"
    try:
        with PeakRss() as wmem:
            t_write = _write_big(path, shape, energies, tile_rows)
        print(f"written in {t_write:.0f} s (writer peak RSS above start {(wmem.peak - wmem.start) / 2**30:.2f} GiB), "
              f"chunks (16, {tile_rows}, {shape[1]})")
        block = hdf5_block(path, "od")
        assert isinstance(block, da.Array)
        cluster, client = _cluster(args.big_workers, memory_limit=args.worker_memory)
        with PeakRss() as mem, WorkerPeak(client) as wp:
            c0, t0 = time.process_time(), time.perf_counter()
            res = analyze_edge(energies, block, window=l3, client=client)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - c0
        client.close()
        cluster.close()
        print("| edge | pixels | clustered | phases | wall (s) | client CPU (s) | client peak RSS above start (GiB) "
              "| peak RSS per worker (GiB) | worker memory limit |")
        print("|---|---|---|---|---|---|---|---|---|")
        peaks = ", ".join(f"{v / 2**30:.2f}" for v in wp.peak.values())
        print(f"| L3 | {shape[0] * shape[1]:,} | {int(res.mask.sum()):,} | {res.n_phases} | {wall:.0f} | {cpu:.0f} | "
              f"{(mem.peak - mem.start) / 2**30:.2f} | {peaks} | {args.worker_memory} |")
        print("stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in res.timings.items()))
    finally:
        path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", nargs="+", default=["l3", "dbscan", "replay", "big"],
                        choices=["l3", "dbscan", "replay", "big"])
    parser.add_argument("--shape", type=int, nargs=2, default=list(FULL_SHAPE), metavar=("H", "W"))
    parser.add_argument("--repeat", type=int, default=2, help="l3: best of this many runs per row")
    parser.add_argument("--dbscan-points", type=float, default=1e7)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--replay-shape", type=int, nargs=2, default=[96, 96], metavar=("H", "W"))
    parser.add_argument("--big-shape", type=int, nargs=2, default=[2048, 2048], metavar=("H", "W"))
    parser.add_argument("--big-energies", type=int, default=1024)
    parser.add_argument("--big-dir", default=None, help="directory of the big HDF5 file (default: temp dir)")
    parser.add_argument("--big-workers", type=int, default=2)
    parser.add_argument("--worker-memory", default="3GB", help="memory limit of each worker in the big run")
    args = parser.parse_args(argv)
    print(f"# txm-live scale-out benchmark: {len(os.sched_getaffinity(0))} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM; {_load()}")
    for name in args.sections:
        {"l3": section_l3, "dbscan": section_dbscan, "replay": section_replay, "big": section_big}[name](args)
    print(f"\n# done; {_load()}")


if __name__ == "__main__":
    main()
