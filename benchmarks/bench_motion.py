"""Benchmark: phase-map accuracy with sample motion: still sample, registered, and the oracle (true shifts).

For each case and seed the same scan is analysed three ways, scored against the ground truth
(adjusted Rand index over the labelled pixels) together with whether the minority phase was found:

- ``still``: the sample does not move (no jitter, drift, jumps, magnification);
- ``registered``: every motion effect, the current registration (:mod:`txm_live.registration`);
- ``oracle``: every motion effect, and the registration replaced by the TRUE shifts. The session
  still resamples each frame (magnification correction and shift, one interpolation, cubic by default),
  so ``still - oracle`` is what the simulator's rendering plus the analysis's resampling cost,
  and ``oracle - registered`` what the shift estimates cost.

Cases (each reuses its test's helpers or the simulator, nothing copied):

- ``drift``: tests/test_registration.py ``_phantom_scan`` (Nd L3, 96 px, random-walk drift and two
  10 px jumps rendered by the test with the simulator's :func:`~txm_live.sim.effects.optical_image`:
  the band-limited image translated, as sharp as a still frame, like a real instrument's. Until
  2026-12-05 the test moved the OD map with a bilinear ``ndimage.shift``, a displacement-dependent
  blur no registration can undo: even the true shifts lost 0.035 ARI on seed 0; still =
  ``drift=False, register=False``). Minority not scored (``-``).
- ``battery``: benchmarks/bench_battery.py ``run`` (Fe K LiFePO4/FePO4/magnetite, 96 px, RunEngine +
  live callback); minority = magnetite recall and precision >= 0.5.
- ``fxi``: tests/test_fxi_plan.py (FXI-style plan, Nd L3/L2, 96 px pure phantom, instrument seed);
  minority = oxide flagged as an outlier phase with recall >= 0.5.
- ``medium``: a half-size Nd particle (301 x 322 mixed phantom, 64 px margin like the full demo) on the
  full demo's 1 eV grid over the L3 window (641 energies), through :class:`~txm_live.session.XanesSession`
  and :func:`~txm_live.phases.analyze_edge`, every instrument effect of the simulator; minority = the
  oxide pockets flagged as an outlier phase with recall >= 0.5. At this size the minority (~2,100 px)
  is resolved as in the full-size demo.

The true shifts come from the simulator itself: every sample frame's displacement
(``InstrumentModel.sample_offset`` + stage offset) and ``scale`` are recorded as it renders, and the
k-th registration call of the session returns ``(shift_0 - shift_k) / scale_0`` (the session corrects
the magnification first), minus ``axis_offset * (scale_k / scale_0 - 1)`` where the session is not
told the optical axis (the live callback: it magnifies about the detector centre).

Run::

    python benchmarks/bench_motion.py                        # every case, seeds 0-2 (30-60 min loaded)
    python benchmarks/bench_motion.py --cases medium --seeds 0
    python benchmarks/bench_motion.py --cases battery --interpolation-order 3 --modes registered oracle
    python benchmarks/bench_motion.py --cases battery fxi --without noise     # noise-free renders

Measured 2026-12-05 ~07:00-07:30 UTC (loaded 2-core machine), registered (oracle), seeds 0-2,
``--interpolation-order 3`` (the session default since then) / ``1``: drift 0.912 / 0.945 / 0.943
(0.931 / 0.976 / 0.953; still 0.930 / 0.937 / 0.945) / bilinear 0.898 / 0.942 / 0.900 (0.895 / 0.977
/ 0.938); battery 0.902 / 0.885 / 0.840 (0.920 / 0.839 / 0.848; still 0.992 / 0.995 / 0.992) / 0.829
/ 0.901 / 0.880, seeds 0-9 mean 0.926 / 0.886, magnetite on 8 / 3 of 10; FXI 0.928 / 0.939 / 0.923 /
0.933 / 0.941 / 0.922, seeds 3-5 0.931 / 0.910 / 0.989 / 0.897 / 0.941 / 0.970; medium 0.956 / 0.960
/ 0.968 (0.957 / 0.962 / 0.969) / 0.955 / 0.959 / 0.964 (0.956 / 0.959 / 0.965). Before 2026-12-05
the drift case's motion was a bilinear ``ndimage.shift`` of the OD and the registration ended ~0.25
px off the first frame on drifting scans (see :class:`~txm_live.registration.RunningRegistration`,
reference offset).

``--interpolation-order`` sets the ``interpolation_order`` of every :class:`~txm_live.session.XanesSession`
the cases build (their helpers build the session or the live callback themselves and do not pass
``session_options``, so the benchmark changes the constructor's default for the run; a session given
the option explicitly keeps it). ``still`` frames are not resampled, so ``still`` does not depend on it.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MOTION = ("jitter", "drift", "jumps", "magnification")
STILL = {name: False for name in MOTION}
MODES = ("still", "registered", "oracle")
WITHOUT: dict[str, bool] = {}  # simulator effects turned off in every mode (--without), e.g. {"noise": False}


def _module(relpath: str) -> types.ModuleType:
    """Import a test or benchmark file by path (tests/ and benchmarks/ are not packages)."""
    name = "_bench_motion_" + Path(relpath).stem
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / relpath)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class _Oracle:
    """Stands in for ``RunningRegistration``: each ``update`` returns the next true shift."""

    def __init__(self, next_shift: Callable[[], np.ndarray]) -> None:
        self._next = next_shift

    def update(self, image: np.ndarray) -> np.ndarray:
        return np.asarray(self._next(), dtype=np.float64)


@contextmanager
def _registration(next_shift: Callable[[], np.ndarray]) -> Iterator[None]:
    import txm_live.session as session_module

    if not hasattr(session_module, "RunningRegistration"):
        raise RuntimeError("txm_live.session no longer builds a RunningRegistration: update the oracle hook")
    original = session_module.RunningRegistration
    session_module.RunningRegistration = lambda *args, **kwargs: _Oracle(next_shift)
    try:
        yield
    finally:
        session_module.RunningRegistration = original


@contextmanager
def simulator_oracle(*, axis_known: bool) -> Iterator[None]:
    """Record every sample frame the simulator renders and feed the true shifts to the session.

    ``axis_known``: the session corrects the magnification about the simulator's optical axis
    (``optical_axis=`` given); False: about the detector centre (the live callback is not told the
    axis), which moves frame ``k`` by ``axis_offset * (scale_k / scale_0 - 1)`` more.
    """
    from txm_live.sim.effects import InstrumentModel

    frames: list[tuple[np.ndarray, float, np.ndarray]] = []
    render = InstrumentModel.expected_photons

    def recording(self, od, energy, frame_index, *, shutter_open=True, stage_offset_px=(0.0, 0.0)):
        if od is not None and shutter_open:
            shift = self.sample_offset(energy, frame_index) + np.asarray(stage_offset_px, dtype=np.float64)
            frames.append((shift, self.scale(energy), np.asarray(self.config.axis_offset_px, dtype=np.float64)))
        return render(self, od, energy, frame_index, shutter_open=shutter_open, stage_offset_px=stage_offset_px)

    used = iter(range(10**9))

    def next_shift() -> np.ndarray:
        k = next(used)
        (first, scale0, _), (shift, scale, axis_offset) = frames[0], frames[k]
        true = (first - shift) / scale0
        return true if axis_known else true - axis_offset * (scale / scale0 - 1.0)

    InstrumentModel.expected_photons = recording
    try:
        with _registration(next_shift):
            yield
    finally:
        InstrumentModel.expected_photons = render


@contextmanager
def interpolation(order: int) -> Iterator[list[int]]:
    """Every ``XanesSession`` built inside uses ``interpolation_order=order`` unless told otherwise.

    Yields the list of the orders of the sessions built, so the run can check the option reached them.
    """
    from txm_live.session import XanesSession

    built: list[int] = []
    init = XanesSession.__init__

    def patched(self, *args, **kwargs):
        kwargs.setdefault("interpolation_order", order)
        init(self, *args, **kwargs)
        built.append(self.interpolation_order)

    XanesSession.__init__ = patched
    try:
        yield built
    finally:
        XanesSession.__init__ = init


# --- cases: (seed, mode) -> (ari, minority found or None) -------------------------------------------


def case_drift(seed: int, mode: str) -> tuple[float, bool | None]:
    test = _module("tests/test_registration.py")
    if mode == "still":
        return test._phantom_scan(seed, register=False, drift=False)[0], None
    if mode == "registered":
        return test._phantom_scan(seed, register=True, drift=True)[0], None

    render = test.optical_image
    pending: list[np.ndarray] = []

    def recording(od, shape, *, shift=(0.0, 0.0), **kwargs):  # the test renders each frame just before adding it
        pending.append(np.asarray(shift, dtype=np.float64))
        return render(od, shape, shift=shift, **kwargs)

    def next_shift() -> np.ndarray:
        return -pending.pop() if pending else np.zeros(2)

    test.optical_image = recording
    try:
        with _registration(next_shift):
            return test._phantom_scan(seed, register=True, drift=True)[0], None
    finally:
        test.optical_image = render


def case_battery(seed: int, mode: str) -> tuple[float, bool | None]:
    bench = _module("benchmarks/bench_battery.py")
    if mode == "oracle":
        with simulator_oracle(axis_known=False):
            r = bench.run(96, seed, dict(WITHOUT))
    else:
        r = bench.run(96, seed, {**WITHOUT, **(STILL if mode == "still" else {})})
    if "error" in r:
        return float("nan"), False
    return r["ari"], bool(r["recall"] >= 0.5 and r["precision"] >= 0.5)


def case_fxi(seed: int, mode: str) -> tuple[float, bool | None]:
    from bluesky import RunEngine

    from txm_live.sim.fxi import fxi_nd_energies, make_fxi, xanes_scan2

    test = _module("tests/test_fxi_plan.py")
    ph = test._phantom()

    def scan():
        fxi = make_fxi(ph, seed=seed, margin_px=20, **{**WITHOUT, **(STILL if mode == "still" else {})})
        result = test._live(RunEngine({}), xanes_scan2(fxi, fxi_nd_energies(), chunk_size=5))
        return result, fxi

    if mode == "oracle":
        with simulator_oracle(axis_known=False):
            result, fxi = scan()
    else:
        result, fxi = scan()
    ari, recall = test._scores(result, fxi.txm, ph)
    return ari, bool(len(result.l3.outlier_phases) >= 1 and recall >= 0.5)


MEDIUM_SHAPE = (301, 322)


def case_medium(seed: int, mode: str) -> tuple[float, bool | None]:
    from txm_live.callbacks.demo import ground_truth_labels
    from txm_live.edges import default_windows
    from txm_live.phases import analyze_edge
    from txm_live.preview import agreement
    from txm_live.session import XanesSession
    from txm_live.sim import make_phantom
    from txm_live.sim.effects import EffectsConfig, InstrumentModel

    phantom = make_phantom(MEDIUM_SHAPE, mode="mixed", seed=seed)
    (l3,) = default_windows("Nd", ("L3",))
    energies = np.arange(6008.0, 6649.0, 1.0)  # the full demo's grid over the L3 window
    cfg = EffectsConfig(margin_px=64).with_overrides(**WITHOUT)
    if mode == "still":
        cfg = cfg.with_overrides(**STILL)
    n_dark = 3

    def scan() -> tuple[object, InstrumentModel]:
        model = InstrumentModel(phantom.shape, cfg, seed=seed)
        hd, wd = model.detector_shape
        axis = ((hd - 1) / 2 + cfg.axis_offset_px[0], (wd - 1) / 2 + cfg.axis_offset_px[1])
        session = XanesSession(frame_shape=model.detector_shape, windows=(l3,), optical_axis=axis)
        for j in range(n_dark):
            session.add_dark(model.render(None, float(energies[0]), j, shutter_open=False))
        for j, e in enumerate(map(float, energies)):
            index = n_dark + 2 * j
            session.add_flat(e, model.render(None, e, index + 1))
            session.add_sample(e, model.render(phantom.optical_density(e), e, index),
                               pixel_size=model.pixel_size_nm(e, phantom.pixel_size_nm))
        data = session.window_data(l3)
        return analyze_edge(data.energies, data.block, window=l3, valid=data.valid), model

    if mode == "oracle":
        with simulator_oracle(axis_known=True):
            result, model = scan()
    else:
        result, model = scan()
    truth = ground_truth_labels(types.SimpleNamespace(model=model), phantom, float(energies[0]), n_dark)
    minority = np.isin(result.labels, result.outlier_phases) & result.mask
    oxide = (truth == 3) & result.mask
    recall = np.count_nonzero(minority & oxide) / max(np.count_nonzero(oxide), 1)
    return agreement(result, truth), bool(len(result.outlier_phases) >= 1 and recall >= 0.5)


CASES = {"drift": case_drift, "battery": case_battery, "fxi": case_fxi, "medium": case_medium}
SIZES = {"drift": "96", "battery": "96", "fxi": "96", "medium": "301x322"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=tuple(CASES), default=list(CASES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--interpolation-order", type=int, choices=(1, 3), default=3,
                        help="XanesSession interpolation_order of every session the cases build (default 3, the session default)")
    parser.add_argument("--without", nargs="+", default=[], metavar="EFFECT",
                        help="simulator effects (EffectsConfig flags, e.g. noise psf) turned off in every mode "
                             "of battery, fxi and medium; drift renders its own frames and refuses it")
    args = parser.parse_args(argv)
    from txm_live.sim.effects import EffectsConfig

    for effect in args.without:
        if not isinstance(getattr(EffectsConfig(), effect, None), bool):
            parser.error(f"--without: {effect!r} is not an EffectsConfig flag")
        WITHOUT[effect] = False
    if WITHOUT and "drift" in args.cases:
        parser.error("--without does not apply to the drift case (the test renders its frames)")
    import logging

    logging.getLogger("txm_live").setLevel(logging.ERROR)
    header = f"{'case':8s} {'size':8s} {'seed':>4s} | {'still':>6s} {'registered':>10s} {'oracle':>6s} | " \
             f"{'minority s/r/o':14s} | {'seconds':>7s}"
    print(header)
    print("-" * len(header), flush=True)
    for name in args.cases:
        for seed in args.seeds:
            t = time.perf_counter()
            scores = {mode: (float("nan"), None) for mode in MODES}
            for mode in args.modes:
                with interpolation(args.interpolation_order) as built:
                    scores[mode] = CASES[name](seed, mode)
                if not built or set(built) != {args.interpolation_order}:
                    raise RuntimeError(f"{name} {mode}: sessions built with orders {built}, "
                                       f"expected {args.interpolation_order}")
            found = "/".join("." if m not in args.modes else "-" if scores[m][1] is None
                             else ("yes" if scores[m][1] else "no") for m in MODES)
            print(f"{name:8s} {SIZES[name]:8s} {seed:4d} | {scores['still'][0]:6.3f} {scores['registered'][0]:10.3f} "
                  f"{scores['oracle'][0]:6.3f} | {found:14s} | {time.perf_counter() - t:7.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
