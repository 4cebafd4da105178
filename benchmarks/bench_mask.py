"""Benchmark: the sample mask (edge-jump significance) on simulated and real data.

For each dataset the edge windows the live callback analyses are captured (a real RunEngine scan
of the small Nd demo and of the Fe K battery, default instrument; the real ALS STXM Fe L3/L2
stack from ``../shared`` when present) and the jump-significance mask is examined:

* ``noise/hf``: the pixel's pre-edge noise (rms residual of its pre-edge line, the noise behind
  the significance) over its high-frequency noise (second differences of the pre-edge points,
  insensitive to smooth structure), median over the particle: > 1 would mean the noise estimate
  holds real structure (pessimistic).
* ``err/noise``: the standard error of the edge step in units of the per-point noise (the
  extrapolation of both fits to e0).
* ``bg>5/4/3``: fraction of the background (ground truth; real stack: blank beam, stack-mean
  OD < 0.03) whose significance exceeds 5, 4, 3; the pre-edge noise has ``n_pre - 2`` degrees of
  freedom, so Student's t is the reference, not a Gaussian.
* per threshold 5 / 4 / 3: ARI against the ground truth (simulated data), share of the particle
  clustered, number of phases.

Run::

    python benchmarks/bench_mask.py                  # seeds 0-2 (about 2 minutes)
    python benchmarks/bench_mask.py --seeds 0
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import numpy as np

_CAPTURED: dict[str, tuple] = {}


def _capture(energies, block, *, window, valid=None, tag: str = "", **kw):
    """Analysis function of the live callback that keeps its window data (in-process)."""
    from txm_live.phases import analyze_edge

    _CAPTURED[f"{tag} {window.edge}"] = (np.asarray(energies).copy(), np.asarray(block).copy(),
                                         None if valid is None else np.asarray(valid).copy(), window)
    return analyze_edge(energies, block, window=window, valid=valid, **kw)


def _scan(sample: str, seed: int) -> np.ndarray:
    """Run one scan through the live callback; returns the ground-truth labels."""
    from bluesky import RunEngine

    from txm_live.callbacks.demo import demo_energies, ground_truth_labels
    from txm_live.callbacks.live import XanesLiveCallback
    from txm_live.sim import make_txm, xanes_scan

    if sample == "nd":
        from txm_live.sim.phantom import make_phantom

        ph, e = make_phantom((128, 128), mode="mixed", seed=seed), demo_energies("small")
        txm, element, edges = make_txm(ph, seed=seed, margin_px=24), "Nd", ("L3", "L2")
    else:
        from txm_live.sim.battery import make_battery_phantom
        from txm_live.sim.standards import fe_k_energies

        ph, e = make_battery_phantom((96, 96), seed=seed), fe_k_energies()
        txm = make_txm(ph, seed=seed, margin_px=20, energy_range=(float(e[0]), float(e[-1])),
                       reference_energy=float(e[0]))
        element, edges = "Fe", ("K",)
    cb = XanesLiveCallback(element=element, edges=edges, analysis_process=False,
                           analysis=functools.partial(_capture, tag=f"{sample}{seed}"))
    RE = RunEngine({})
    RE.subscribe(cb)
    try:
        RE(xanes_scan(txm, e, n_dark=5, element=element, edges=edges))
        cb.wait(timeout=900)
    finally:
        cb.close()
    return ground_truth_labels(txm, ph, float(e[0]), 5)


def _real_stack() -> tuple | None:
    root = Path(__file__).resolve().parents[1]
    for parent in root.parents:
        path = parent / "shared" / "data" / "real-stxm-fe" / "als_stxm_fe_l23_71214098.npz"
        if path.exists():
            from txm_live.sim.stxm import blank_beam_level, load_stxm_stack

            counts, e, _ = load_stxm_stack(path)
            i0, _ = blank_beam_level(counts)
            od = (-np.log(np.clip(counts, 1.0, None) / i0[:, None, None])).astype(np.float32)
            return e, od
    return None


def _row(name: str, energies, block, valid, window, truth: np.ndarray) -> str:
    from txm_live.normalize import normalize_window
    from txm_live.phases import analyze_edge
    from txm_live.preview import agreement

    H, W = block.shape[1:]
    valid = np.ones((H, W), bool) if valid is None else valid
    sel = (energies >= window.start - 1e-6) & (energies <= window.end + 1e-6)
    E, Y = energies[sel], block[sel].reshape(int(sel.sum()), -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        nz = normalize_window(E, Y, window)
        z = (nz.edge_step / nz.edge_step_error).reshape(H, W)
        nw = window.normalization
        pre = (E >= nw.e0 + nw.pre[0]) & (E <= nw.e0 + nw.pre[1])
        yp = Y[pre].astype(np.float64)
        hf = np.sqrt(((yp[1:-1] - 0.5 * (yp[:-2] + yp[2:])) ** 2).mean(axis=0) / 1.5).reshape(H, W)
        noise = nz.pre_edge_noise.reshape(H, W)
        err = (nz.edge_step_error / nz.pre_edge_noise).reshape(H, W)
    part, bg = (truth >= 0) & valid, (truth == -1) & valid
    cells = [f"{name:<12} {int(pre.sum()):>5} {np.nanmedian(noise[part] / hf[part]):>8.2f} {np.nanmedian(err):>9.2f}"]
    cells += [f"{np.mean(z[bg] > t):>7.2%}" for t in (5, 4, 3)]
    for t in (5.0, 4.0, 3.0):
        r = analyze_edge(energies, block, window=window, valid=valid, jump_significance=t)
        ari = agreement(r, truth) if np.any(truth >= 1) else float("nan")
        cells.append(f"{ari:>6.3f} {np.mean(r.labels[part] >= 0):>5.0%} {r.n_phases:>2d}")
    return " ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    head = (f"{'data':<12} {'n_pre':>5} {'noise/hf':>8} {'err/noise':>9} {'bg>5':>7} {'bg>4':>7} {'bg>3':>7}   "
            + "   ".join(f"{'js ' + str(t) + ': ARI cov n':<15}" for t in (5, 4, 3)))
    print(head)
    for sample in ("nd", "lfp"):
        for seed in args.seeds:
            truth = _scan(sample, seed)
            for key in [k for k in _CAPTURED if k.startswith(f"{sample}{seed} ")]:
                print(_row(key, *_CAPTURED.pop(key), truth), flush=True)
    real = _real_stack()
    if real is None:
        print("real ALS STXM stack absent (../shared/data/real-stxm-fe): skipped")
        return
    from txm_live.edges import default_windows

    e, od = real
    mean_od = od.mean(axis=0)
    # no ground truth: "particle" = stack-mean OD >= 0.1, background = blank beam (OD < 0.03)
    truth = np.where(mean_od >= 0.1, 0, np.where(mean_od < 0.03, -1, -2))
    for w in default_windows("Fe", ("L3", "L2"), energies=e):
        print(_row(f"ALS Fe {w.edge}", e, od, None, w, truth))


if __name__ == "__main__":
    main()
