"""Per-frame cost of ``RunningRegistration.update`` and its decisions against a reference implementation.

Records the frames every :class:`~txm_live.registration.RunningRegistration` of a few scenes receives
(the scans of tests/test_registration.py: drift seeds 0-2, a still scan, the full-size demo scan across
the L3 white line; the Fe K battery scan with motion of tests/test_battery.py), replays them through
this checkout's class and, with ``--reference FILE`` (a ``registration.py``, e.g.
``git show main:txm_live/registration.py > /tmp/registration_main.py``), through that file's, and prints
per scene the largest shift difference (px), whether the set of moved frames is the same, the
best-of-``--repeat`` ms per frame of each and, for the scenes rendered with every instrument effect
(``_true_shifts`` of tests/test_registration.py: the Fe K scan and the full-size demo frames), the rms
and largest tracking error against the simulator's true shifts (px). The frames do not depend on the
registration (the session registers the optical density before resampling it), so the replay sees
what the scan saw.

Run: ``.venv/bin/python benchmarks/bench_regspeed.py --reference /tmp/registration_main.py``
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def record_scenes() -> dict[str, tuple[dict, list[np.ndarray], np.ndarray | None]]:
    """Run the scenes with a recording ``RunningRegistration``: scene -> (constructor options, frames,
    true shifts or None)."""
    from txm_live import registration

    tests = _load(ROOT / "tests" / "test_registration.py", "_bench_test_registration")
    battery = _load(ROOT / "tests" / "test_battery.py", "_bench_test_battery")
    recorded: list[tuple[dict, list[np.ndarray]]] = []
    truths: list[np.ndarray] = []
    original_truth = tests._true_shifts
    original_init, original_update = registration.RunningRegistration.__init__, registration.RunningRegistration.update

    def init(self, shape, **options):
        original_init(self, shape, **options)
        recorded.append(({"shape": tuple(shape), **options}, []))
        self._bench_frames = recorded[-1][1]

    def update(self, image):
        self._bench_frames.append(np.array(image, copy=True))
        return original_update(self, image)

    def true_shifts(*args, **kwargs):
        truths.append(original_truth(*args, **kwargs))
        return truths[-1]

    scenes: dict[str, tuple[dict, list[np.ndarray], np.ndarray | None]] = {}
    registration.RunningRegistration.__init__, registration.RunningRegistration.update = init, update
    tests._true_shifts = true_shifts
    try:
        runs = [(f"drift seed {s}", lambda s=s: tests._phantom_scan(s, register=True, drift=True)) for s in range(3)]
        runs.append(("still seed 0", lambda: tests._phantom_scan(0, register=True, drift=False)))
        runs.append(("battery Fe K with motion", lambda: battery._scan(told=True)))
        runs.append(("Fe K every effect (truth)", tests.test_tracks_the_simulated_instrument_on_a_low_contrast_k_edge_scan))
        runs.append(("full-size demo L3 (730x771)", tests.test_tracks_the_full_size_demo_scan_across_the_white_line))
        for name, run in runs:
            recorded.clear()
            truths.clear()
            run()
            (options, frames), = recorded
            scenes[name] = (options, frames, truths[0] if truths else None)
    finally:
        registration.RunningRegistration.__init__, registration.RunningRegistration.update = original_init, original_update
        tests._true_shifts = original_truth
    return scenes


def tracking(shifts: np.ndarray, truth: np.ndarray | None) -> str:
    """rms/max |shift - true shift| (px), or '-' without a truth."""
    if truth is None:
        return "-"
    err = np.hypot(*(shifts - truth).T)
    return f"{np.sqrt(np.mean(err**2)):.3f}/{err.max():.3f}"


COUNTERS = ("n_applied", "n_reverted", "n_rejected", "n_jumps")


def replay(cls, options: dict, frames: list[np.ndarray]) -> tuple[np.ndarray, tuple[int, ...], float, float]:
    """Shifts of one pass, its decision counters, wall and CPU time per frame (ms)."""
    kwargs = {k: v for k, v in options.items() if k != "shape"}
    reg = cls(options["shape"], **kwargs)
    t0, c0 = time.perf_counter(), time.process_time()
    shifts = np.array([reg.update(f) for f in frames])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return shifts, tuple(getattr(reg, name) for name in COUNTERS), wall / len(frames) * 1e3, cpu / len(frames) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", type=Path, help="a registration.py to compare with")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bench_regspeed_scenes_truth.pkl"),
                        help="recorded frames (reused when present)")
    args = parser.parse_args()
    if args.cache.exists():
        scenes = pickle.loads(args.cache.read_bytes())
    else:
        scenes = record_scenes()
        args.cache.write_bytes(pickle.dumps(scenes))
    from txm_live.registration import RunningRegistration

    reference = None if args.reference is None else _load(args.reference, "_bench_reference").RunningRegistration
    print(f"load average {os.getloadavg()[0]:.2f}; ms per frame, best of {args.repeat} (runs alternate); "
          f"counters {'/'.join(COUNTERS)}")
    print(f"{'scene':28s} {'frames':>6s} {'shape':>8s} {'wall':>6s} {'cpu':>6s} {'ref wall':>8s} {'ref cpu':>7s} "
          f"{'max|dshift|':>11s} {'moved same':>10s} {'counters':>12s} {'ref':>12s} {'err rms/max':>11s} {'ref':>11s}")
    cpu0 = os.times()
    for name, (options, frames, truth) in scenes.items():
        runs = {"this": [], "ref": []}
        for _ in range(args.repeat):
            runs["this"].append(replay(RunningRegistration, options, frames))
            if reference is not None:
                runs["ref"].append(replay(reference, options, frames))
        shifts, counters = runs["this"][0][:2]
        row = (f"{name:28s} {len(frames):6d} {'x'.join(map(str, frames[0].shape)):>8s} "
               f"{min(r[2] for r in runs['this']):6.2f} {min(r[3] for r in runs['this']):6.2f}")
        if reference is not None:
            ref_shifts, ref_counters = runs["ref"][0][:2]
            same = np.array_equal(np.any(shifts != 0, axis=1), np.any(ref_shifts != 0, axis=1))
            row += (f" {min(r[2] for r in runs['ref']):8.2f} {min(r[3] for r in runs['ref']):7.2f} "
                    f"{np.max(np.abs(shifts - ref_shifts)):11.1e} {str(same):>10s} "
                    f"{'/'.join(map(str, counters)):>12s} {'/'.join(map(str, ref_counters)):>12s} "
                    f"{tracking(shifts, truth):>11s} {tracking(ref_shifts, truth):>11s}")
        else:
            row += f" {tracking(shifts, truth):>11s}"
        print(row)
    cpu = os.times()
    print(f"CPU user {cpu.user - cpu0.user:.1f} s, sys {cpu.system - cpu0.system:.1f} s; "
          f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
