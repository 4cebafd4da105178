"""Throughput and peak memory of the vectorized normalization at full TXM size.

Run::

    prlimit --as=8000000000 python benchmarks/bench_normalize.py            # 387k pixels x 641 energies
    python benchmarks/bench_normalize.py --pixels 50000 --repeat 3           # quicker

Prints one row per method: wall time, spectra per second, peak traced memory (numpy allocations,
via tracemalloc) beyond the input block, and the process peak RSS. Timings on a shared machine
are noisy; the table states the input size so rows can be compared.
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np

from txm_live.edges import default_windows
from txm_live.normalize import normalize_athena, normalize_mback
from txm_live.snr import snr_mask


def make_block(n_pix: int, energies: np.ndarray, e0: float, seed: int = 0) -> np.ndarray:
    """Energy-major float32 block of synthetic edge spectra, built in place (no float64 copy)."""
    rng = np.random.default_rng(seed)
    x = energies - e0
    shape = (0.5 + np.arctan(2 * x / 3.65) / np.pi + 1.8 * np.exp(-0.5 * ((x - 3) / 3) ** 2)).astype(np.float32)
    step = rng.uniform(0.0, 0.5, n_pix).astype(np.float32)
    block = np.empty((energies.size, n_pix), dtype=np.float32)
    for i in range(energies.size):  # per energy row (641 rows), never per pixel
        block[i] = 0.4 + step * shape[i] + rng.standard_normal(n_pix, dtype=np.float32) * 0.02
    return block


def run(name: str, fn, block: np.ndarray, repeat: int) -> dict[str, float]:
    times = []
    peak = 0
    for _ in range(repeat):
        tracemalloc.start()
        t0 = time.perf_counter()
        res = fn(block)
        times.append(time.perf_counter() - t0)
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        del res
    best = min(times)
    return {"name": name, "seconds": best, "rate": block.shape[1] / best, "peak_gb": peak / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pixels", type=int, default=602 * 643, help="number of pixel spectra (default 602x643)")
    ap.add_argument("--repeat", type=int, default=1, help="repetitions, best time reported")
    args = ap.parse_args()

    (l3,) = default_windows("Nd", ("L3",))
    energies = np.arange(np.floor(l3.start), np.ceil(l3.end) + 1.0, 1.0)
    block = make_block(args.pixels, energies, l3.e0)
    print(f"input: {block.shape[1]} pixels x {block.shape[0]} energies float32 = {block.nbytes / 1e9:.2f} GB "
          f"(L3 window {l3.start:.0f}-{l3.end:.0f} eV)")

    rows = [
        run("athena (post quadratic)", lambda b: normalize_athena(energies, b, e0=l3.e0, pre=l3.pre, post=l3.post), block, args.repeat),
        run("athena (post linear)", lambda b: normalize_athena(energies, b, e0=l3.e0, pre=l3.pre, post=l3.post, post_order=1), block, args.repeat),
        run("mback (Nd, linear bg)", lambda b: normalize_mback(energies, b, element="Nd", edge="L3", e0=l3.e0, pre=l3.pre, post=l3.post), block, args.repeat),
    ]
    nrm = normalize_athena(energies, block, e0=l3.e0, pre=l3.pre, post=l3.post)
    t0 = time.perf_counter()
    m = snr_mask(nrm.edge_step, nrm.pre_edge_noise)
    t_snr = time.perf_counter() - t0

    print(f"{'method':<26}{'seconds':>9}{'spectra/s':>13}{'peak alloc GB':>15}")
    for r in rows:
        print(f"{r['name']:<26}{r['seconds']:>9.2f}{r['rate']:>13.3g}{r['peak_gb']:>15.2f}")
    print(f"{'snr_mask':<26}{t_snr:>9.3f}{block.shape[1] / t_snr:>13.3g}{'':>15}  kept {m.n_kept} "
          f"(threshold {m.threshold:.2f}, {m.method})")
    print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB "
          f"(input block {block.nbytes / 1e9:.2f} GB + one result kept alive {nrm.norm.nbytes / 1e9:.2f} GB)")


if __name__ == "__main__":
    main()
