"""Per-frame cost of resampling a registered frame (:func:`txm_live.registration.transform_image`).

Every registered frame of a scan is resampled once (magnification correction and shift) on the
ingest thread, which must keep up with the scan. Rows, for ``--frames`` different float32 frames of
the full demo's detector size (730 x 771) with random sub-pixel shifts of up to +-20 px, for a pure
translation (``scale 1``) and with the demo's magnification correction (``scale 1.004``):

- ``cubic``: ``transform_image(order=3)``, the default (banded block products);
- ``cubic, former``: the implementation until 2026-12-05 (scipy's recursive ``spline_filter``,
  mirror, then four row and four column gathers), kept here as the reference row;
- ``bilinear``: ``transform_image(order=1)``;
- ``scipy affine_transform``: ``scipy.ndimage.affine_transform(order=3, mode="mirror")``.

Run::

    python benchmarks/bench_resample.py                  # 50 frames, best of 5
    python benchmarks/bench_resample.py --frames 20 --repeat 3

Prints the wall time per frame (best of ``--repeat`` passes over the frames; the frames are
allocated and touched before timing), the CPU time per frame (user + system, mean over all passes:
less sensitive to the other processes than the wall time), the system CPU seconds (page faults), the
load average, and the largest difference to the former cubic path relative to each frame's range. Timings on a shared
machine are noisy: compare rows of one run.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi

from txm_live.registration import transform_image
from txm_live.threads import limit_blas

SHAPE = (730, 771)


def former_cubic(image: np.ndarray, scale: float, shift: np.ndarray, center: np.ndarray) -> np.ndarray:
    """The cubic path until 2026-12-05: recursive prefilter (mirror), 4 row + 4 column gathers, float32."""
    coef = ndi.spline_filter(image, order=3, mode="mirror", output=np.float32)
    out = coef
    for axis, n in enumerate(image.shape):
        u = (np.arange(n) - shift[axis] - center[axis]) / scale + center[axis]
        i0 = np.floor(u)
        t = u - i0
        w = np.stack([(1 - t) ** 3 / 6, (4 - 6 * t**2 + 3 * t**3) / 6,
                      (1 + 3 * t + 3 * t**2 - 3 * t**3) / 6, t**3 / 6], axis=1).astype(np.float32)
        period = 2 * (n - 1)
        taps = np.abs(i0.astype(np.intp)[:, None] + np.arange(-1, 3)[None, :]) % period
        taps = np.where(taps > n - 1, period - taps, taps)
        shape = (n, 1) if axis == 0 else (1, n)
        res = np.take(out, taps[:, 0], axis=axis) * w[:, 0].reshape(shape)
        for k in range(1, 4):
            res += np.take(out, taps[:, k], axis=axis) * w[:, k].reshape(shape)
        inside = (u >= -1e-6) & (u <= n - 1 + 1e-6)
        if axis == 0:
            res[~inside] = 0
        else:
            res[:, ~inside] = 0
        out = res
    return out


def time_rows(frames: list[np.ndarray], shifts: np.ndarray, scale: float, repeat: int) -> list[tuple]:
    center = (np.asarray(SHAPE, dtype=np.float64) - 1) / 2
    offset_of = [center - (s + center) / scale for s in shifts]
    methods: dict[str, Callable[[int], np.ndarray]] = {
        "cubic": lambda i: transform_image(frames[i], scale=scale, shift=shifts[i], order=3),
        "cubic, former": lambda i: former_cubic(frames[i], scale, shifts[i], center),
        "bilinear": lambda i: transform_image(frames[i], scale=scale, shift=shifts[i], order=1),
        "scipy affine_transform": lambda i: ndi.affine_transform(
            frames[i], [1 / scale] * 2, offset=offset_of[i], order=3, mode="mirror"),
    }
    reference = [former_cubic(f, scale, s, center) for f, s in zip(frames, shifts)]
    for fn in methods.values():  # warm-up: first allocations of each output size, BLAS start
        fn(0)
    rows = []
    for name, fn in methods.items():
        if name == "scipy affine_transform" and repeat > 1:
            passes = 1  # ~4x slower than the others: one pass is enough to place it
        else:
            passes = repeat
        best = np.inf
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(passes):
            t0 = time.perf_counter()
            outs = [fn(i) for i in range(len(frames))]
            best = min(best, time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        diff = max(
            float(np.max(np.abs(np.where(ref != 0, o - ref, 0)))) / float(np.ptp(f))
            for o, ref, f in zip(outs, reference, frames)
        )
        cpu = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / (passes * len(frames))
        rows.append((name, scale, 1e3 * best / len(frames), 1e3 * cpu, r1.ru_stime - r0.ru_stime,
                     diff if name != "bilinear" else None))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=50, help="different frames per pass (default 50)")
    ap.add_argument("--repeat", type=int, default=5, help="passes per method, best kept (default 5)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    base = ndi.gaussian_filter(rng.random(SHAPE), 1.5).astype(np.float32)
    frames = [base + np.float32(0.01) * rng.standard_normal(SHAPE).astype(np.float32) for _ in range(args.frames)]
    shifts = rng.uniform(-20, 20, (args.frames, 2))
    rows = []
    with limit_blas(1):  # like the ingest thread: one BLAS thread next to acquisition
        for scale in (1.0, 1.004):
            rows += time_rows(frames, shifts, scale, args.repeat)
    load = os.getloadavg()
    print(f"{args.frames} frames {SHAPE[0]}x{SHAPE[1]} float32, best of {args.repeat}; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'method':<24}{'scale':>7}{'wall ms/frame':>15}{'CPU ms/frame':>14}{'sys s':>7}{'max|diff|/range':>17}")
    for name, scale, ms, cpu, sys_, diff in rows:
        d = "-" if diff is None else f"{diff:.1e}"
        print(f"{name:<24}{scale:>7.3f}{ms:>15.2f}{cpu:>14.2f}{sys_:>7.2f}{d:>17}")


if __name__ == "__main__":
    main()
