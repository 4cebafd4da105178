"""Per-pixel stages of :func:`txm_live.phases.analyze_edge` on pixel tiles, for Dask workers.

A *tile* is a band of whole image rows, the same pixel chunks the in-process analysis uses
(:func:`txm_live.phases._pixel_chunks`), so every pixel goes through exactly the same arithmetic
in both: the per-pixel outputs, hence the labels, are identical.

* :func:`normalize_tile` (normalization, finiteness, the feature rows) runs per tile on the
  workers; only the compact per-pixel results (edge step, pre-edge noise and line, feature
  rows: ``4 (n_features + 5)`` bytes per pixel) come back.
* :func:`phase_sums_tile` accumulates the per-phase sums of the normalized spectra over the
  whole window for the summary; the client adds the tiles' sums (float64), shifting each
  tile's sum of squares to the common reference.

The global steps (SNR threshold, noise estimate on a pixel sample, PCA, spatial filter,
clustering) run on the client on the gathered per-pixel arrays, with the in-process code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from txm_live.edges import EdgeWindow

__all__ = ["normalize_tile", "phase_sums_tile", "map_tiles"]

#: Tiles in flight per worker (bounds the memory of a numpy block shipped to the workers).
_IN_FLIGHT_PER_WORKER = 2


def normalize_tile(
    Yt: np.ndarray, E: np.ndarray, window: EdgeWindow, method: str, f_rows: slice, post_order: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Normalize the pixels of one tile ``Yt`` (n_e, rows, W) or (n_e, n_pix).

    Returns ``finite`` (bool), ``edge_step``, ``pre_edge_noise``, the edge-step significance
    ``edge_step / edge_step_error``, ``pre_coefficients`` (2, n) and the feature rows
    ``norm[f_rows]`` (float32), one column per pixel.
    """
    from txm_live.normalize import athena_window_features, normalize_window

    Y2 = np.asarray(Yt).reshape(E.size, -1)
    if method == "athena":  # one fused, cache-blocked pass; the values of the generic path below
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # those are masked
            f = athena_window_features(E, Y2, window, post_order=post_order, rows=f_rows)
        return f.finite, f.edge_step, f.pre_edge_noise, f.step_significance, f.pre_coefficients, f.norm
    finite = np.isfinite(Y2).all(axis=0)  # NaN anywhere: never clustered
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # those are masked
        nz = normalize_window(E, Y2, window, method=method, post_order=post_order, rows=f_rows)
    with np.errstate(invalid="ignore", divide="ignore"):
        step_z = (nz.edge_step / nz.edge_step_error).astype(np.float32)
    return (finite, nz.edge_step.astype(np.float32), nz.pre_edge_noise.astype(np.float32), step_z,
            nz.pre_coefficients.astype(np.float32), np.ascontiguousarray(nz.norm, dtype=np.float32))


def phase_sums_tile(
    Yt: np.ndarray,
    E: np.ndarray,
    window: EdgeWindow,
    method: str,
    cols: np.ndarray,
    lab: np.ndarray,
    n_phases: int,
    athena: tuple[np.ndarray, np.ndarray] | None,
    post_order: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-phase sums over one tile: ``s1`` (n_e, P), ``s2`` about the tile's per-row mean
    ``ref`` (n_e,), and the counts (P,). ``cols`` index the tile's pixels, ``lab`` their phase."""
    from txm_live.normalize import normalize_window

    Y2 = np.asarray(Yt).reshape(E.size, -1)
    if athena is not None:
        c, step = athena
        sub = np.take(Y2, cols, axis=1).astype(np.float32, copy=True)
        sub -= c[0].astype(np.float32)
        sub -= (E - window.e0).astype(np.float32)[:, None] * c[1].astype(np.float32)
        sub *= (1.0 / step).astype(np.float32)
    else:
        sub = normalize_window(E, np.take(Y2, cols, axis=1), window, method=method,
                               post_order=post_order).norm.astype(np.float32)
    onehot = np.zeros((lab.size, n_phases), dtype=np.float32)
    onehot[np.arange(lab.size), lab] = 1.0
    s1 = (sub @ onehot).astype(np.float64)
    ref = s1.sum(axis=1) / max(sub.shape[1], 1)
    sub -= ref[:, None].astype(np.float32)
    np.multiply(sub, sub, out=sub)
    s2 = (sub @ onehot).astype(np.float64)
    return s1, s2, ref, np.bincount(lab, minlength=n_phases).astype(np.int64)


def combine_phase_sums(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and standard deviation per phase (P, n_e) and the counts from the tiles' sums."""
    s1 = sum(p[0] for p in parts)
    counts = sum(p[3] for p in parts)
    mean = s1 / counts  # (n_e, P)
    # sum over a tile of (x - m)^2 = s2_t + 2 (ref_t - m) (s1_t - n_t ref_t) + n_t (ref_t - m)^2
    ss = np.zeros_like(s1)
    for t1, t2, ref, n in parts:
        dr = ref[:, None] - mean
        ss += t2 + 2.0 * dr * (t1 - n * ref[:, None]) + n * dr * dr
    var = np.clip(ss / counts, 0.0, None)
    return mean.T, np.sqrt(var).T, counts


def _tile_data(Y: Any, rows: slice) -> Any:
    """The rows of a tile: a contiguous numpy copy (shipped) or a lazy dask slice."""
    part = Y[:, rows, :]
    if hasattr(part, "dask"):
        return part
    return np.ascontiguousarray(part)


def map_tiles(
    client: Any,
    fn: Callable[..., Any],
    Y: Any,
    tiles: list[slice],
    args: Callable[[int], tuple],
    *,
    what: str,
    timeout: float | None = None,
) -> Iterator[tuple[int, Any]]:
    """Run ``fn(tile_data, *args(i))`` for every tile on the cluster; yields ``(i, result)``.

    ``tiles`` are row slices of ``Y`` (n_e, H, W). A numpy ``Y`` is shipped tile by tile with at
    most a few tiles in flight per worker (bounded memory on the client and the workers); a
    dask array is sliced lazily, so the workers read their tiles themselves (e.g. from HDF5).
    """
    import warnings

    from dask.distributed import as_completed

    from txm_live.distributed import gather, n_workers

    in_flight = _IN_FLIGHT_PER_WORKER * n_workers(client)
    pending = iter(range(len(tiles)))
    index: dict[Any, int] = {}

    def submit(i: int) -> Any:
        data = _tile_data(Y, tiles[i])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Large object.*")  # the tile is the payload
            if hasattr(data, "dask"):
                import dask

                fut = client.compute(dask.delayed(fn)(data, *args(i)))
            else:
                fut = client.submit(fn, data, *args(i), pure=False)
        index[fut.key] = i
        return fut

    ac = as_completed([submit(i) for _, i in zip(range(in_flight), pending)])
    for fut in ac:
        (res,) = gather(client, [fut], what=what, timeout=timeout)
        yield index.pop(fut.key), res
        nxt = next(pending, None)
        if nxt is not None:
            ac.add(submit(nxt))
