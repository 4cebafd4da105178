"""The client side of :func:`txm_live.phases.analyze_edge` on a Dask cluster.

:class:`TiledEdge` holds one future per row tile and per stage; the per-pixel intermediates
(the tile's optical density, normalized feature rows, whitened features, scores) stay on the
workers and only small things cross the network:

======================  ===========================================  ======================
step                    what crosses the network                     bytes
======================  ===========================================  ======================
data (numpy ``block``)  scattered once, band by band, to the         ``4 n_e`` per pixel
                        workers (none for a dask array)
normalization           back: finite flag, edge step, pre-edge       13 per pixel
                        noise, step significance (SNR mask: global)
feature mean            back: one sum per feature per band           ``8 n_f`` per band
noise estimate          back: the 50 000-pixel sample of the         ``4 n_f`` per sample
                        in-process estimate (same pixels, same seed)  pixel
PCA                     out: row weights; back: weighted sums, then  8 per pixel; ``8 n_f
                        the weighted Gram matrix of every band        (n_f + 1)`` per band
residual noise floor    back: min / max per band                     16 per band
sigma filter            halo rows between neighbouring bands         worker to worker
DBSCAN eps estimate     out: 10 000 sample scores; back: their       ``8 min_samples`` per
                        nearest distances in each band                sample point and band
scores                  back: the filtered scores, for DBSCAN         ``4 k`` per pixel
summary                 out: pixel and phase indices; back:          ~40 per pixel
                        per-phase sums, white-line and score maps
======================  ===========================================  ======================

(``k`` principal components, ``n_f`` feature energies, ``n_e`` window energies.) DBSCAN and the
Gaussian-mixture refinement run here on the gathered ``4 k``-byte scores with the in-process code.

Every per-band step is a function of :mod:`txm_live.tiles` that calls the in-process stage
function (normalization, whitening, projection, residual noise, sigma filter, phase statistics)
on the band, so every pixel goes through the same arithmetic as in process. The global sums are
added on the client in band order; in process, :func:`~txm_live.decompose.reduce_pca` accumulates
its mean and covariance over the same bands (``row_chunks``), so the principal axes, the scores,
eps and the labels are bit-identical. (The feature mean is a float64 sum whose rounding differs
from numpy's; it only enters through a float32 basis, which absorbs it.)
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from txm_live import tiles as T
from txm_live.distributed import gather

__all__ = ["TiledEdge"]


class TiledEdge:
    """Futures of one edge analysis, one per row tile and stage.

    Parameters
    ----------
    client : dask.distributed.Client
    Y : ndarray or dask array, shape (n_e, H, W)
        The edge window. A numpy array is scattered to the workers once, tile by tile
        (round-robin); a dask array persisted in chunks equal to the tiles is used through its
        chunks' futures; any other dask array is sliced lazily and every tile is read by a worker
        (twice: for the normalization and for the per-phase spectra, so nothing of the window is
        kept: out of core).
    tiles : list of slice
        Row bands (:func:`txm_live.phases._row_tiles`).
    what : str
        Name for error messages (the edge).
    timeout : float, optional
        Seconds to wait for any gather before :class:`~txm_live.errors.DistributedError`.
    """

    def __init__(self, client: Any, Y: Any, tiles: list[slice], *, what: str, timeout: float | None) -> None:
        self.client = client
        self.Y = Y
        self.tiles = tiles
        self.what = what
        self.timeout = timeout
        self.H, self.W = Y.shape[1:]
        self.lazy = hasattr(Y, "dask")
        self.data: list[Any] = []  # futures of the tiles (numpy block, or a persisted dask array)
        if self.lazy:
            self.data = _persisted_tiles(client, Y, tiles)
            self.lazy = not self.data
        self.norm: list[Any] = []
        self.cols: list[np.ndarray] = []  # clustered pixels of each tile (in-tile flat index)
        self.lo = np.zeros(len(tiles), dtype=np.int64)  # their range in the clustered order
        self.hi = np.zeros(len(tiles), dtype=np.int64)
        self.F: list[Any] = []
        self.X: list[Any] = []
        self.proj: list[Any] = []
        self.Ef = np.zeros(0)
        self.scores: list[Any] = []  # the (filtered) scores clustered
        self.seconds: dict[str, float] = {}  # client seconds spent waiting per step

    # -- plumbing --------------------------------------------------------------------------
    def _submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Large object.*")
            return self.client.submit(fn, *args, pure=False, **kwargs)

    def _gather(self, futures: Sequence[Any], step: str) -> list[Any]:
        t = time.perf_counter()
        out = gather(self.client, futures, what=f"{self.what} {step}", timeout=self.timeout)
        self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - t
        return out

    def _scatter(self, part: np.ndarray, worker: str) -> Any:
        """Send one tile to ``worker`` (to any worker if that one is gone)."""
        from txm_live.errors import DistributedError

        t = time.perf_counter()
        try:
            try:
                return self.client.scatter(part, hash=False, workers=[worker])
            except (OSError, TimeoutError, KeyError):  # the worker died (unknown to the scheduler): any other one
                return self.client.scatter(part, hash=False)
        except (OSError, TimeoutError, KeyError) as exc:
            raise DistributedError(f"{self.what} scatter: no worker took the tile ({type(exc).__name__}: {exc})") from exc
        finally:
            self.seconds["scatter"] = self.seconds.get("scatter", 0.0) + time.perf_counter() - t

    def _on_tile(self, i: int, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(tile_data, *args)`` on the worker holding (or reading) tile ``i``."""
        if self.lazy:
            import dask

            return self.client.compute(dask.delayed(fn)(self.Y[:, self.tiles[i], :], *args))
        return self._submit(fn, self.data[i], *args)

    # -- steps -----------------------------------------------------------------------------
    def normalize(self, tile_args: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Normalize every tile; returns the per-pixel ``ok``, edge step, pre-edge noise and
        step significance (flat, ``H W``). The feature rows stay on the workers."""
        from txm_live.distributed import n_workers

        workers = list(self.client.scheduler_info(n_workers=-1)["workers"])
        nw = max(1, min(len(workers), n_workers(self.client)))
        for i, rows in enumerate(self.tiles):
            if not hasattr(self.Y, "dask"):  # one tile in client memory at a time; normalization starts at once
                part = np.ascontiguousarray(self.Y[:, rows, :])
                self.data.append(self._scatter(part, workers[i % nw]))
                del part
            self.norm.append(self._on_tile(i, T.tile_normalize, *tile_args))
        small = self._gather([self._submit(T.tile_pixel_scalars, f) for f in self.norm], "normalization")
        return tuple(np.concatenate([s[j] for s in small]) for j in range(4))  # type: ignore[return-value]

    def features(self, pix: np.ndarray, Ef: np.ndarray, *, e0: float, random_state: int) -> np.ndarray:
        """Whitened features of the clustered pixels ``pix`` (flat, increasing) on the workers
        (:func:`txm_live.phases.build_features`); returns the mean feature spectrum."""
        from txm_live.phases import _feature_basis, _noise_per_feature, _noise_sample

        W = self.W
        self.lo = np.searchsorted(pix, [t.start * W for t in self.tiles])
        self.hi = np.searchsorted(pix, [t.stop * W for t in self.tiles])
        self.cols = [pix[a:b] - t.start * W for a, b, t in zip(self.lo, self.hi, self.tiles)]
        self.F = [self._submit(T.tile_take_features, tn, c) for tn, c in zip(self.norm, self.cols)]
        sums = [self._submit(T.tile_feature_sum, f) for f in self.F]
        sub = _noise_sample(pix.size, random_state)
        samples = []
        for f, a, b in zip(self.F, self.lo, self.hi):
            loc = np.arange(b - a) if sub is None else sub[np.searchsorted(sub, a): np.searchsorted(sub, b)] - a
            samples.append(self._submit(T.tile_columns, f, loc))
        got = self._gather(sums + samples, "feature mean and noise sample")
        mean = np.sum(got[: len(sums)], axis=0) / pix.size
        noise = _noise_per_feature(np.concatenate(got[len(sums):], axis=1), np.asarray(Ef, dtype=np.float64))
        q32 = _feature_basis(mean, np.asarray(Ef, dtype=np.float64), e0)
        self.Ef = np.asarray(Ef)
        self.X = [self._submit(T.tile_whiten, f, q32, noise) for f in self.F]
        return mean

    def pca_scores(
        self,
        pix_snr: np.ndarray,
        *,
        n_components: int | None,
        max_components: int,
        noise_margin: float,
        spatial_filter: bool,
    ) -> tuple[Any, np.ndarray]:
        """PCA of the whitened features from per-band weighted sums and Gram matrices, projection and sigma
        filter on the workers; returns the :class:`~txm_live.decompose.PcaResult` (empty
        ``scores``) and the (filtered) scores of the clustered pixels, gathered."""
        from txm_live.decompose import _sample_weights, covariance_part, pca_from_covariance, weighted_sum_part
        from txm_live.phases import _floor_noise

        n = int(self.hi[-1])
        w = _sample_weights(1.0 / np.clip(pix_snr, 1e-3, None), n)
        w2 = w * w
        bands = [(x, a, b) for x, a, b in zip(self.X, self.lo, self.hi) if b > a]
        # the weighted mean and the covariance are summed band by band in band order, with the
        # same per-band products as reduce_pca(row_chunks=bands) in process: bit-identical axes
        mean = np.zeros(len(self.Ef))
        for part in self._gather([self._submit(weighted_sum_part, x, w2[a:b]) for x, a, b in bands], "PCA mean"):
            mean += part
        mean /= w2.sum()
        cov = np.zeros((mean.size, mean.size))
        for part in self._gather([self._submit(covariance_part, x, mean, w[a:b]) for x, a, b in bands], "Gram matrix"):
            cov += part
        cov /= max(n - 1, 1)
        pca = pca_from_covariance(cov, mean, n_samples=n, n_components=n_components,
                                  max_components=max_components, noise_margin=noise_margin)
        self.proj = [self._submit(T.tile_project, x, pca) for x in self.X]
        if not spatial_filter:
            self.scores = [self._submit(T.tile_scores, p) for p in self.proj]
            return pca, np.concatenate(self._gather(self.scores, "scores"))
        # the noise floor of the in-process residual noise: 1e-3 x the median positive value;
        # it changes nothing when every value is above 1e-3 x the largest (the usual case)
        ranges = np.array(self._gather([self._submit(T.tile_rms_range, p) for p in self.proj], "residual noise"))
        floor = -np.inf
        if not (np.nanmin(ranges[:, 0]) >= 1e-3 * np.nanmax(ranges[:, 1])):
            raw = np.concatenate(self._gather([self._submit(T.tile_rms, p) for p in self.proj], "residual noise"))
            floored = _floor_noise(raw)
            if np.any(floored != raw):
                floor = float(floored[floored != raw].max())
        W = self.W
        edges = []
        for p, c, t in zip(self.proj, self.cols, self.tiles):
            n_rows = t.stop - t.start
            edges.append((self._submit(T.tile_halo_row, p, c, W, 0), self._submit(T.tile_halo_row, p, c, W, n_rows - 1)))
        filtered = []
        for i, (p, c, t) in enumerate(zip(self.proj, self.cols, self.tiles)):
            above = edges[i - 1][1] if i > 0 else None
            below = edges[i + 1][0] if i + 1 < len(self.tiles) else None
            filtered.append(self._submit(T.tile_sigma_filter, p, c, t.stop - t.start, W, floor, above, below))
        self.scores = filtered
        return pca, np.concatenate(self._gather(filtered, "sigma filter"))

    def dbscan_params(self, scores: np.ndarray, min_samples: int | None) -> Any:
        """:func:`txm_live.cluster.estimate_dbscan_params` of the clustered scores as
        :class:`~txm_live.cluster.PhaseClusterer` calls it, with the k-nearest-neighbour queries of
        the sample (the same points as in process) run against each band's scores on the workers
        and the ``min_samples`` smallest distances kept: the same k-distances, hence the same eps."""
        import inspect

        from txm_live.cluster import (PhaseClusterer, _k_distance_sample, default_min_samples,
                                      estimate_dbscan_params, params_from_k_distances)

        n, d = scores.shape
        defaults = inspect.signature(estimate_dbscan_params).parameters
        ms = min(min_samples if min_samples is not None else default_min_samples(n, d), n)
        sub = _k_distance_sample(n, defaults["sample_size"].default, PhaseClusterer().random_state)
        points = np.ascontiguousarray(scores[sub], dtype=np.float64)
        pts = self.client.scatter(points, broadcast=True, hash=False)
        parts = self._gather([self._submit(T.tile_knn_distances, sc, pts, ms) for sc in self.scores], "DBSCAN eps")
        dist = np.concatenate(parts, axis=1)
        kd = np.sort(np.partition(dist, ms - 1, axis=1)[:, ms - 1])
        return params_from_k_distances(kd, ms, tail_quantile=defaults["tail_quantile"].default,
                                       span=lambda: float(np.max(scores.max(axis=0) - scores.min(axis=0))))

    def _labels_per_tile(self, idx: np.ndarray, lab: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Split positions ``idx`` (increasing, into the clustered order) and labels by tile."""
        a = np.searchsorted(idx, self.lo)
        b = np.searchsorted(idx, self.hi)
        return [(idx[i:j] - lo, lab[i:j]) for i, j, lo in zip(a, b, self.lo)]

    def feature_phase_means(self, idx: np.ndarray, lab: np.ndarray, n_phases: int) -> np.ndarray:
        """Mean feature spectrum (P, n_features) of every phase; ``idx`` index the clustered pixels."""
        parts = [self._submit(T.tile_phase_feature_sums, f, i, l, n_phases)
                 for f, (i, l) in zip(self.F, self._labels_per_tile(idx, lab)) if i.size]
        s1 = np.sum(self._gather(parts, "phase feature sums"), axis=0)
        return (s1 / np.bincount(lab, minlength=n_phases)).T

    def per_pixel(self, fn: Callable[..., Any], *args: Any, step: str) -> np.ndarray:
        """``fn(F_tile, *args)`` (one value per clustered pixel) gathered in the clustered order."""
        return np.concatenate(self._gather([self._submit(fn, f, *args) for f in self.F], step))

    def window_phase_stats(
        self, tile_args: tuple, cols: np.ndarray, lab: np.ndarray, n_phases: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-phase mean and spread over the whole window (:func:`txm_live.phases._window_phase_stats`):
        ``cols`` are flat pixel indices (increasing) and ``lab`` their phases."""
        E, window, method, _, post_order = tile_args
        W = self.W
        a = np.searchsorted(cols, [t.start * W for t in self.tiles])
        b = np.searchsorted(cols, [t.stop * W for t in self.tiles])
        futures = []
        for i, t in enumerate(self.tiles):
            if b[i] > a[i]:
                futures.append(self._on_tile(i, T.tile_window_phase_stats, self.norm[i], E, window, method,
                                             cols[a[i]:b[i]] - t.start * W, lab[a[i]:b[i]], post_order))
        return T.combine_phase_stats(self._gather(futures, "phase spectra"), n_phases)

    def release(self) -> None:
        """Drop every future (the workers free the tiles)."""
        for name in ("data", "norm", "F", "X", "proj", "scores"):
            setattr(self, name, [])


def _persisted_tiles(client: Any, Y: Any, tiles: list[slice]) -> list[Any]:
    """Futures of the chunks of ``Y`` when it is persisted on the cluster in chunks equal to the
    row tiles (whole energy and column axes); otherwise ``[]`` (the tiles are read lazily)."""
    from distributed import Future, futures_of

    rows = Y.chunks[1]
    bounds = np.cumsum((0,) + tuple(rows))
    if len(Y.chunks[0]) != 1 or len(Y.chunks[2]) != 1 or len(rows) != len(tiles):
        return []
    if any(t.start != bounds[i] or t.stop != bounds[i + 1] for i, t in enumerate(tiles)):
        return []
    held = {f.key: f for f in futures_of(Y)}
    keys = [(Y.name, 0, i, 0) for i in range(len(tiles))]
    if not all(k in held for k in keys):
        return []
    return [held[k] for k in keys]
