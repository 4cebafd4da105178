"""Benchmark: txm_live.dbscan versus scikit-learn's DBSCAN on phase-map-like data.

Synthetic PCA scores of pixel spectra (387k points by default): two large Gaussian majority
phases, a 3 % minority phase and 1 % uniform noise, in d = 3, 5 and 8 dimensions. eps and
min_samples come from :func:`txm_live.cluster.estimate_dbscan_params` (the eps that separates
the phases). Every engine runs in its own subprocess so that peak memory (max RSS) is its own;
the labels of both engines are compared point by point.

Usage::

    python benchmarks/bench_dbscan.py                       # n=387000, d=3,5,8, both engines
    python benchmarks/bench_dbscan.py --n 100000 --dims 3 5
    python benchmarks/bench_dbscan.py --skip-sklearn         # txm_live only
    prlimit --as=24000000000 python benchmarks/bench_dbscan.py   # cap address space

scikit-learn stores every neighbourhood: on 387k points it needs several GB at d=3 and up to
~20 GB at larger eps; run it with care on a shared machine (``--sklearn-max-gb`` caps its
address space; a run that hits the cap is reported as failed, not retried).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def make_phase_scores(n: int, d: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic PCA scores: 2 majority phases (60/40), 3 % minority, 1 % uniform noise.

    Unit-variance Gaussian phases (the noise of every score), centres 12 and 10.8 sigma apart.
    """
    rng = np.random.default_rng(seed)
    n_min, n_noise = int(0.03 * n), int(0.01 * n)
    n_maj = n - n_min - n_noise
    n_a = int(0.6 * n_maj)
    centres = np.zeros((3, d))
    centres[1, 0] = 12.0  # 12 sigma apart: separable by density up to d = 8
    centres[2, :2] = (6.0, 9.0)
    X = np.concatenate(
        [
            rng.normal(centres[0], 1.0, (n_a, d)),
            rng.normal(centres[1], 1.0, (n_maj - n_a, d)),
            rng.normal(centres[2], 1.0, (n_min, d)),
            rng.uniform(-6.0, 18.0, (n_noise, d)),
        ]
    )
    y = np.concatenate(
        [np.zeros(n_a), np.ones(n_maj - n_a), np.full(n_min, 2), np.full(n_noise, -1)]
    ).astype(int)
    perm = rng.permutation(n)
    return X[perm], y[perm]


def _worker(engine: str, path: str, eps: float, ms: int, out: str) -> None:
    import resource

    import psutil

    X = np.load(path)
    if engine != "txm_live":
        from sklearn.cluster import DBSCAN  # import before the baseline, like txm_live's
    else:
        import txm_live.dbscan  # noqa: F401
    base = psutil.Process().memory_info().rss / 2**20
    t0, c0 = time.perf_counter(), time.process_time()
    if engine == "txm_live":
        from txm_live.dbscan import dbscan

        labels = dbscan(X, eps=eps, min_samples=ms)
    else:
        labels = DBSCAN(eps=eps, min_samples=ms).fit_predict(X)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    np.save(out + ".npy", labels)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # MiB
    with open(out + ".json", "w") as fh:
        json.dump({"wall": wall, "cpu": cpu, "rss_mib": rss, "extra_mib": rss - base}, fh)


def _run(engine: str, path: str, eps: float, ms: int, tmp: str, max_gb: float | None) -> dict:
    out = os.path.join(tmp, engine)
    cmd = [sys.executable, __file__, "--worker", engine, path, repr(eps), str(ms), out]
    if max_gb is not None:
        cmd = ["prlimit", f"--as={int(max_gb * 1e9)}", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": tail[:60]}
    with open(out + ".json") as fh:
        res = json.load(fh)
    res["labels"] = np.load(out + ".npy")
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=387_000, help="number of points (default 387000)")
    p.add_argument("--dims", type=int, nargs="+", default=[3, 5, 8], help="dimensions")
    p.add_argument("--skip-sklearn", action="store_true", help="time txm_live.dbscan only")
    p.add_argument("--sklearn-max-gb", type=float, default=22.0,
                   help="address-space cap of the scikit-learn subprocess (GB)")
    p.add_argument("--eps", type=float, default=None, help="override the automatic eps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        engine, path, eps, ms, out = args.worker
        _worker(engine, path, float(eps), int(ms), out)
        return 0

    from sklearn.metrics import adjusted_rand_score

    from txm_live.cluster import estimate_dbscan_params

    print(f"# bench_dbscan: n={args.n}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} (timings on a shared machine are noisy)")
    print("# peak MiB = max RSS of the engine's subprocess; +MiB = above its RSS just before "
          "the call; wall and cpu seconds of the call only (txm_live uses all cores in its "
          "KD-tree queries, scikit-learn's DBSCAN one)")
    header = (f"{'d':>2} {'eps':>7} {'ms':>3} {'engine':>9} {'wall s':>8} {'cpu s':>8} "
              f"{'peak MiB':>9} {'+MiB':>7} {'clusters':>8} {'noise %':>7} {'ARI':>6} {'speedup':>8} exact")
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for d in args.dims:
            X, y = make_phase_scores(args.n, d, seed=args.seed)
            t0 = time.perf_counter()
            params = estimate_dbscan_params(X)
            t_est = time.perf_counter() - t0
            eps = params.eps if args.eps is None else args.eps
            ms = params.min_samples
            path = os.path.join(tmp, f"X{d}.npy")
            np.save(path, X)
            res = {"txm_live": _run("txm_live", path, eps, ms, tmp, None)}
            if not args.skip_sklearn:
                res["sklearn"] = _run("sklearn", path, eps, ms, tmp, args.sklearn_max_gb)
            ref = res.get("sklearn", {}).get("labels")
            for engine, r in res.items():
                if "error" in r:
                    print(f"{d:>2} {eps:7.4f} {ms:>3} {engine:>9}  failed: {r['error']}")
                    continue
                lab = r["labels"]
                keep = y >= 0
                ari = adjusted_rand_score(y[keep], lab[keep])
                speed = ""
                exact = ""
                if engine == "txm_live" and ref is not None:
                    speed = f"{res['sklearn']['wall'] / r['wall']:7.1f}x"
                    n_diff = int(np.count_nonzero(lab != ref))
                    exact = "identical" if n_diff == 0 else f"{n_diff} labels differ"
                print(f"{d:>2} {eps:7.4f} {ms:>3} {engine:>9} {r['wall']:8.2f} {r['cpu']:8.2f} "
                      f"{r['rss_mib']:9.0f} {r['extra_mib']:7.0f} {lab.max() + 1:8d} {100 * np.mean(lab < 0):7.2f} "
                      f"{ari:6.3f} {speed:>8} {exact}")
            print(f"   (estimate_dbscan_params: {t_est:.2f} s; input array "
                  f"{X.nbytes / 2**20:.0f} MiB)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
