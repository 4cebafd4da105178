"""Benchmark: the Fe K battery scan (LiFePO4 / FePO4 / magnetite) against its ground truth.

Runs the simulated TXM (real ophyd devices, real RunEngine) across the Fe K edge of
:func:`txm_live.sim.battery.make_battery_phantom` on :func:`txm_live.sim.standards.fe_k_energies`
(100 energies) and analyses it live with ``XanesLiveCallback(element="Fe", edges=("K",))``, for
several seeds, with the default instrument (every effect of ``EffectsConfig``) and with an ideal
one (noise only), so that the cost of the instrument effects on the phase maps is visible. Prints
a table: adjusted Rand index against the ground truth, magnetite recall and precision of the phase
that covers it best, phases found, share of particle pixels left unclustered, and wall time.

Run::

    python benchmarks/bench_battery.py                       # 96 x 96, seeds 0-2
    python benchmarks/bench_battery.py --size 128 --seeds 0 1 2 3

Targets (issue 9, tests/test_battery.py): ARI >= 0.9, magnetite recall and precision >= 0.8.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from txm_live.sim.effects import SWITCHES

INSTRUMENTS = {
    "default": {},
    "ideal (noise only)": {name: False for name in SWITCHES if name != "noise"},
}


def run(size: int, seed: int, overrides: dict) -> dict:
    from bluesky import RunEngine

    from txm_live.callbacks.demo import ground_truth_labels
    from txm_live.callbacks.live import XanesLiveCallback
    from txm_live.preview import agreement
    from txm_live.sim import make_txm, xanes_scan
    from txm_live.sim.battery import make_battery_phantom
    from txm_live.sim.standards import fe_k_energies

    phantom = make_battery_phantom((size, size), seed=seed)
    e = fe_k_energies()
    txm = make_txm(phantom, seed=seed, margin_px=20, energy_range=(float(e[0]), float(e[-1])),
                   reference_energy=float(e[0]), **overrides)
    cb = XanesLiveCallback(element="Fe", edges=("K",))
    RE = RunEngine({})
    RE.subscribe(cb)
    t = time.perf_counter()
    try:
        RE(xanes_scan(txm, e, n_dark=5, element="Fe", edges=("K",)))
        result = cb.wait(timeout=900)[-1]
    finally:
        cb.close()
    seconds = time.perf_counter() - t
    truth = ground_truth_labels(txm, phantom, float(e[0]), 5)
    k = result.edges.get("K")
    if k is None:
        return {"error": "; ".join(result.errors) or "no K result", "seconds": seconds}
    labels = k.labels
    true = truth == 3
    values, counts = np.unique(labels[true & (labels >= 0)], return_counts=True)
    phase = values[np.argmax(counts)] if values.size else -2
    hit = np.count_nonzero(true & (labels == phase))
    return {
        "ari": agreement(k, truth),
        "recall": hit / max(np.count_nonzero(true), 1),
        "precision": hit / max(np.count_nonzero(labels == phase), 1),
        "phases": k.n_phases,
        "unclustered": float(np.mean(labels[truth >= 0] < 0)),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    print(f"Fe K battery scan, {args.size} x {args.size} px, 100 energies")
    print(f"{'instrument':<20} {'seed':>4} {'ARI':>6} {'Fe3O4 R':>8} {'Fe3O4 P':>8} {'phases':>6} "
          f"{'unclust.':>8} {'time s':>7}")
    for name, overrides in INSTRUMENTS.items():
        for seed in args.seeds:
            r = run(args.size, seed, overrides)
            if "error" in r:
                print(f"{name:<20} {seed:>4}  error: {r['error']}  ({r['seconds']:.1f} s)")
                continue
            print(f"{name:<20} {seed:>4} {r['ari']:>6.3f} {r['recall']:>8.2f} {r['precision']:>8.2f} "
                  f"{r['phases']:>6d} {r['unclustered']:>8.0%} {r['seconds']:>7.1f}")


if __name__ == "__main__":
    main()
