"""The client side of :func:`txm_live.phases.analyze_edge` on a Dask cluster.

:class:`TiledEdge` holds the futures of the row tiles' stages; the per-pixel intermediates
(the tile's optical density, normalized feature rows, whitened features, scores) stay on the
workers and only small things cross the network. The tiles are grouped by the worker that holds
them, and a stage is one task per group (:func:`_each`: the per-tile step function on each of the
group's tiles in turn, so every pixel goes through the same arithmetic as with one task per tile):
28 tasks per edge on 2 workers with the block on them, 42 with a numpy block (its tiles are
normalized one task each, as they arrive), against ~210 with one task per tile and stage; the
scheduler's CPU is what the client pays per task. A global step the client does not need to see
(the feature basis and noise, the PCA's weighted mean, the PCA itself) is a task that the next
stage depends on (:func:`_ordered`: the tiles' parts in band order), so the workers chain them
without a round trip to the client. Five round trips per edge:

======================  ===========================================  ======================
round trip              what crosses the network                     bytes
======================  ===========================================  ======================
data (numpy ``block``)  scattered once, band by band, to the         ``4 n_e`` per pixel
                        workers (none for a dask array)
normalization           back: finite flag, edge step, pre-edge       13 per pixel
                        noise, step significance (SNR mask: global)
features, PCA and       out: the clustered pixels (one bit per       1/8 per pixel, 12
residual noise          pixel of the image), row weights (float64    per clustered pixel,
                        and float32). On the workers: one sum per    ``8 n_f`` per band,
                        feature and band and the 50 000-pixel        ``4 n_f`` per sample
                        sample of the in-process noise estimate,     pixel (worker to
                        reduced by one task per worker on its share  worker), ``8 n_f^2``
                        of the feature rows                          per band
                        (:func:`~txm_live.tiles.feature_noise_part`);
                        whitening; weighted sums and one task for
                        the mean; Gram matrices and one task for the
                        PCA; projection. Back: the PCA, the mean
                        feature spectrum, min / max of the residual  16 per band, ``~40``
                        noise per band (noise floor) and the band's  per pixel of 2 rows
                        first and last rows (the sigma filter's
                        halos, sent on to the neighbours)
scores                  back: the filtered scores (DBSCAN, its       ``4 k`` per pixel
                        parameter estimate and the mixture
                        refinement run here, with the in-process
                        code: the same eps and labels by
                        construction)
summary                 out: phase of every clustered pixel (one     1 out, ~4 back per
                        byte); back, one task per band: per-phase    pixel
                        feature sums, the white-line map, per-phase
                        window moments
majority score          back: one value per pixel                    4 per pixel
======================  ===========================================  ======================

(``k`` principal components, ``n_f`` feature energies, ``n_e`` window energies.) A worker lost
mid-analysis loses the scattered tiles it held, which have no lineage:
:func:`retry_lost_worker` analyses the edge again once on the remaining workers.

Every per-band step is a function of :mod:`txm_live.tiles` that calls the in-process stage
function (normalization, whitening, projection, residual noise, sigma filter, phase statistics)
on the band, so every pixel goes through the same arithmetic as in process. The global sums are
added in band order (by the reduction tasks of :mod:`txm_live.tiles`); in process,
:func:`~txm_live.decompose.reduce_pca` accumulates its mean and covariance over the same bands
(``row_chunks``), so the principal axes, the scores, eps and the labels are bit-identical. (The
feature mean is a float64 sum whose rounding differs from numpy's; it only enters through a
float32 basis, which absorbs it.)
"""

from __future__ import annotations

import operator
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from txm_live import tiles as T
from txm_live.denoise import SIGMA_FILTER_PASSES
from txm_live.distributed import gather

__all__ = ["TiledEdge", "retry_lost_worker"]

#: Seconds a direct scatter waits for the scheduler to list its worker as running (a worker
#: lost meanwhile then costs this once, not Dask's 30 s connect timeout per tile).
_DIRECT_WAIT = 2.0


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
        self.bits: list[np.ndarray] = []  # clustered pixels of each tile, one bit per pixel (:func:`_pack`)
        self.n_tile: list[int] = []  # pixels of each tile
        self.lo = np.zeros(len(tiles), dtype=np.int64)  # their range in the clustered order
        self.hi = np.zeros(len(tiles), dtype=np.int64)
        self.F: list[Any] = []
        self.X: list[Any] = []
        self.proj: list[Any] = []
        self.Ef = np.zeros(0)
        self.basis: Any = None  # future: the mean feature spectrum and a part of the noise (tiles.feature_noise_part)
        self.mean_feature = np.zeros(0)  # the mean feature spectrum, gathered with the PCA
        self.scores: list[Any] = []  # the (filtered) scores clustered
        self.seconds: dict[str, float] = {}  # client seconds spent waiting per step
        # the tiles of each worker (increasing), fixed where the tiles are (:meth:`_group`):
        # every per-tile step is one task per group, not per tile (:func:`_each`), except the
        # reads of a lazy block and the normalization of each scattered tile as it arrives
        self.groups: list[list[int]] = []
        self.group_workers: list[str] = []

    # -- plumbing --------------------------------------------------------------------------
    def _submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Large object.*")
            return self.client.submit(fn, *args, pure=False, **kwargs)

    def _map(self, fn: Callable[..., Any], *per_tile: Sequence[Any], **same: Any) -> list[Any]:
        """``fn(a_i, b_i, ..., **same)`` for every tile ``i``: one message to the scheduler for all
        tiles (``per_tile`` hold one value or future per tile; ``same`` is shared)."""
        if not per_tile or not len(per_tile[0]):
            return []
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Large object.*")
            return list(self.client.map(fn, *per_tile, pure=False, **same))

    def _group(self, futures: list[Any]) -> None:
        """Group the tiles by the worker holding ``futures`` (one per tile; one group per worker)."""
        held = self.client.who_has(futures)
        by: dict[str, list[int]] = {}
        for i, f in enumerate(futures):
            where = sorted(held.get(f.key, ()))
            by.setdefault(where[0] if where else "", []).append(i)
        self.groups = [by[k] for k in sorted(by)]
        self.group_workers = sorted(by)  # the worker holding each group ("": unknown)

    def _gmap(self, fn: Callable[..., Any], *per_tile: Any, skip: Sequence[bool] | None = None,
              **same: Any) -> _Grouped:
        """``fn(a_i, b_i, ..., **same)`` for every tile ``i``, one task per group of tiles
        (:func:`_each`): ``per_tile`` hold one value or future per tile, or a :class:`_Grouped`
        (an earlier step's groups); tiles with ``skip`` give ``None``."""
        out = _Grouped()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Large object.*")
            for g, tiles in enumerate(self.groups):
                args = [a[g] if isinstance(a, _Grouped) else [a[i] for i in tiles] for a in per_tile]
                out.append(self.client.submit(_each, fn, *args, skip=None if skip is None else [skip[i] for i in tiles],
                                              pure=False, **same))
        return out

    def _in_order(self, values: list[list[Any]]) -> list[Any]:
        """Per-group results (:meth:`_gmap`, gathered) as one list in tile order."""
        return _tile_order(values, self.groups)

    def _gather(self, futures: Sequence[Any], step: str) -> list[Any]:
        t = time.perf_counter()
        out = gather(self.client, futures, what=f"{self.what} {step}", timeout=self.timeout)
        self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - t
        return out

    def _scatter(self, part: np.ndarray, worker: str, gone: set[str]) -> Any:
        """Send one tile to ``worker``, or to any worker through the scheduler if that one is
        gone (it is then added to ``gone``)."""
        from txm_live.errors import DistributedError

        t = time.perf_counter()
        try:
            if worker not in gone:
                try:  # straight to the worker: through the scheduler, every byte is copied twice more
                    # (timeout: how long to wait for the scheduler to list the worker as running;
                    # a worker it has dropped is not waited for)
                    return self.client.scatter(part, hash=False, workers=[worker], direct=True, timeout=_DIRECT_WAIT)
                except (OSError, TimeoutError, KeyError, ValueError):  # the worker died or cannot be reached
                    gone.add(worker)
            return self.client.scatter(part, hash=False)
        except (OSError, TimeoutError, KeyError) as exc:
            raise DistributedError(f"{self.what} scatter: no worker took the tile ({type(exc).__name__}: {exc})") from exc
        finally:
            self.seconds["scatter"] = self.seconds.get("scatter", 0.0) + time.perf_counter() - t

    def _on_tiles(self, fn: Callable[..., Any], *per_tile: Sequence[Any], **same: Any) -> list[Any]:
        """``fn(tile_data, *per_tile_args, **same)`` for every tile of a lazy block, one task per
        tile that reads the tile itself (out of core)."""
        import dask

        return [self.client.compute(dask.delayed(fn)(self.Y[:, rows, :], *(a[i] for a in per_tile), **same))
                for i, rows in enumerate(self.tiles)]

    # -- steps -----------------------------------------------------------------------------
    def normalize(self, tile_args: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Normalize every tile; returns the per-pixel ``ok``, edge step, pre-edge noise and
        step significance (flat, ``H W``). The feature rows stay on the workers."""
        from txm_live.distributed import n_workers

        E, window, method, f_rows, post_order = tile_args
        same = dict(E=E, window=window, method=method, f_rows=f_rows, post_order=post_order)
        if self.lazy:  # every tile read by a worker, one task per tile
            self.norm = self._on_tiles(T.tile_normalize, **same)
        elif hasattr(self.Y, "dask"):  # persisted: one task per worker, on the tiles it holds
            self._group(self.data)
            self.norm = self._gmap(T.tile_normalize, self.data, **same)
        else:
            workers = list(self.client.scheduler_info(n_workers=-1)["workers"])
            nw = max(1, min(len(workers), n_workers(self.client)))
            # one tile buffer in client memory, reused: the scatter returns once the worker holds
            # its copy of the tile, and a fresh 64 MiB buffer per tile would be faulted in page by
            # page (not with in-process workers, which would hold the buffer itself)
            reuse = not any(w.startswith("inproc://") for w in workers)
            buf = np.empty((self.Y.shape[0], max(t.stop - t.start for t in self.tiles), self.W), dtype=self.Y.dtype)
            gone: set[str] = set()
            for i, rows in enumerate(self.tiles):  # normalization starts as soon as a tile is there
                part = buf[:, : rows.stop - rows.start] if reuse else np.empty_like(buf[:, : rows.stop - rows.start])
                np.copyto(part, self.Y[:, rows, :])
                self.data.append(self._scatter(part, workers[i % nw], gone))
                self.norm.append(self._submit(T.tile_normalize, self.data[i], **same))
            del buf
            self._group(self.data)
        if self.lazy:  # grouped where the tiles were normalized
            small = self._gather(self._map(T.tile_pixel_scalars, self.norm), "normalization")
            self._group(self.norm)
        else:
            small = self._in_order(self._gather(list(self._gmap(T.tile_pixel_scalars, self.norm)), "normalization"))
        return tuple(np.concatenate([s[j] for s in small]) for j in range(4))  # type: ignore[return-value]

    def features(self, pix: np.ndarray, Ef: np.ndarray, *, e0: float, random_state: int) -> None:
        """Submit the whitened features of the clustered pixels ``pix`` (flat, increasing)
        (:func:`txm_live.phases.build_features`): each tile's feature sums and share of the noise
        sample, their reduction (:func:`txm_live.tiles.feature_noise_part`: one task per worker,
        each on its share of the feature rows, joined by the whitening) and the
        whitening. Nothing is gathered here: :meth:`pca_scores` gathers the mean feature
        spectrum (:attr:`mean_feature`) with the PCA."""
        from txm_live.phases import _noise_sample

        W = self.W
        self.lo = np.searchsorted(pix, [t.start * W for t in self.tiles])
        self.hi = np.searchsorted(pix, [t.stop * W for t in self.tiles])
        # the clustered pixels of each tile as the tasks get them: one bit per pixel of the tile
        # (3 kB per tile at full size, not 8 bytes per clustered pixel through the scheduler at
        # every step that reads them)
        self.n_tile = [(t.stop - t.start) * W for t in self.tiles]
        self.bits = [_pack(pix[a:b] - t.start * W, n) for a, b, t, n in zip(self.lo, self.hi, self.tiles, self.n_tile)]
        self.F = self._gmap(_take_features, self.norm, self.bits, self.n_tile)
        sub = _noise_sample(pix.size, random_state)
        locs = [np.arange(b - a) if sub is None else sub[np.searchsorted(sub, a): np.searchsorted(sub, b)] - a
                for a, b in zip(self.lo, self.hi)]
        stats = list(self._gmap(T.tile_feature_stats, self.F, locs))
        x = np.asarray(Ef, dtype=np.float64)
        n_in, n_parts = x.size - 2, len(self.groups)
        # the noise medians of the interior feature rows, split between the workers (each task
        # placed where its group's tiles are; any worker if that one is gone)
        parts = [self._submit(_ordered, T.feature_noise_part, stats, self.groups, None, int(pix.size), x,
                              slice(g * n_in // n_parts, (g + 1) * n_in // n_parts),
                              **({"workers": [w], "allow_other_workers": True} if w else {}))
                 for g, w in enumerate(self.group_workers)]
        self.basis = parts[0]  # (mean feature spectrum, ...): gathered with the PCA
        self.Ef = np.asarray(Ef)
        self.X = self._gmap(T.tile_whiten_parts, self.F, parts=parts, Ef=x, e0=float(e0))

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
        ``scores``) and the (filtered) scores of the clustered pixels, gathered. The feature
        basis, the weighted mean and the PCA itself are tasks too (:mod:`txm_live.tiles`), so the
        chain from the feature rows to the projected bands runs without a round trip to the
        client; their arithmetic and order of summation are the client's former ones."""
        from txm_live.decompose import _sample_weights, covariance_part, weighted_sum_part
        from txm_live.phases import _floor_noise

        n = int(self.hi[-1])
        w = _sample_weights(1.0 / np.clip(pix_snr, 1e-3, None), n)
        w2 = w * w
        k = len(self.tiles)
        busy = [bool(self.hi[i] > self.lo[i]) for i in range(k)]
        idle = [not b for b in busy]
        # the weighted mean and the covariance are summed band by band in band order, with the
        # same per-band products as reduce_pca(row_chunks=bands) in process: bit-identical axes
        sums = self._gmap(weighted_sum_part, self.X, [w2[self.lo[i]:self.hi[i]] for i in range(k)], skip=idle)
        mean = self._submit(_ordered, T.weighted_mean, list(sums), self.groups, busy, float(w2.sum()))
        # (covariance_part multiplies the float32 features by the weights cast to float32: sent so)
        grams = self._gmap(covariance_part, self.X, [mean] * k,
                           [w[self.lo[i]:self.hi[i]].astype(np.float32) for i in range(k)], skip=idle)
        pca_f = self._submit(_ordered, T.pca_of_parts, list(grams), self.groups, busy, mean, n,
                             n_components=n_components, max_components=max_components, noise_margin=noise_margin)
        self.proj = self._gmap(T.tile_project, self.X, pca=pca_f)
        if not spatial_filter:
            self.scores = self._gmap(T.tile_scores, self.proj)
            got = self._gather([self.basis, pca_f] + list(self.scores), "PCA and scores")
            self.mean_feature = got[0][0]
            return got[1], np.concatenate(self._in_order(got[2:]))
        # one round trip: the PCA, the residual-noise range of every tile and its first and last rows
        n_rows = [t.stop - t.start for t in self.tiles]
        got = self._gather([self.basis, pca_f] + list(self._gmap(_border, self.proj, self.bits, self.n_tile,
                                                                  [self.W] * k, n_rows)), "PCA and residual noise")
        self.mean_feature, pca, border = got[0][0], got[1], self._in_order(got[2:])
        # the noise floor of the in-process residual noise: 1e-3 x the median positive value;
        # it changes nothing when every value is above 1e-3 x the largest (the usual case)
        ranges = np.array([b[0] for b in border])
        floor = -np.inf
        if not (np.nanmin(ranges[:, 0]) >= 1e-3 * np.nanmax(ranges[:, 1])):
            raw = np.concatenate(self._in_order(self._gather(list(self._gmap(T.tile_rms, self.proj)), "residual noise")))
            floored = _floor_noise(raw)
            if np.any(floored != raw):
                floor = float(floored[floored != raw].max())
        above = [_halo(border, i, -1) for i in range(k)]
        below = [_halo(border, i, +1) for i in range(k)]
        self.scores = self._gmap(_sigma_filter, self.proj, self.bits, self.n_tile, n_rows, [self.W] * k, [floor] * k,
                                 above, below)
        return pca, np.concatenate(self._in_order(self._gather(list(self.scores), "sigma filter")))

    def phase_summary(
        self, tile_args: tuple, idx: np.ndarray, lab: np.ndarray, n_phases: int, near: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """One round trip for three per-phase and per-pixel reductions of the clustered pixels:
        ``idx`` index the clustered pixels, ``lab`` their phases (``0..n_phases-1``).

        Returns the mean feature spectrum of every phase (P, n_features), the white-line value
        of every clustered pixel (mean of the feature rows ``near``) and the per-phase mean,
        spread and count over the whole window (:func:`txm_live.phases._window_phase_stats`)."""
        E, window, method, _, post_order = tile_args
        # per tile: the phase of each of its clustered pixels (-1: none), in the smallest integer
        # type (1 byte per pixel, not 24 for positions, pixels and phases)
        full = np.full(int(self.hi[-1]), -1, dtype=np.int8 if n_phases <= 127 else np.int64)
        full[idx] = lab
        labs = [full[a:b] for a, b in zip(self.lo, self.hi)]
        busy = [i for i, lb in enumerate(labs) if np.any(lb >= 0)]
        # per tile: feature sums, white line and (with a phase pixel) window moments, one task
        same = dict(n_phases=n_phases, rows=near, E=E, window=window, method=method, post_order=post_order)
        if self.lazy:  # every tile read again by a worker: per tile, the feature rows picked from their group
            F = [None] * len(self.tiles)
            for g, tiles in enumerate(self.groups):
                for pos, i in enumerate(tiles):
                    F[i] = self._submit(operator.getitem, self.F[g], pos)
            got = self._gather(self._on_tiles(_tile_summary, self.norm, F, self.bits, self.n_tile, labs, **same),
                               "phase spectra")
        else:
            got = self._in_order(self._gather(list(self._gmap(_tile_summary, self.data, self.norm, self.F, self.bits,
                                                              self.n_tile, labs, **same)), "phase spectra"))
        s1 = np.sum([g[0] for g in got], axis=0)
        fmean = (s1 / np.bincount(lab, minlength=n_phases)).T
        white = np.concatenate([g[1] for g in got])
        if not busy:  # no phase
            return fmean, white, (np.zeros((0, E.size)), np.zeros((0, E.size)), np.zeros(0, dtype=np.int64))
        return fmean, white, T.combine_phase_stats([got[i][2] for i in busy], n_phases)

    def per_pixel(self, fn: Callable[..., Any], *args: Any, step: str) -> np.ndarray:
        """``fn(F_tile, *args)`` (one value per clustered pixel) gathered in the clustered order."""
        k = len(self.tiles)
        return np.concatenate(self._in_order(self._gather(list(self._gmap(fn, self.F, *([a] * k for a in args))), step)))

    def release(self) -> None:
        """Drop every future (the workers free the tiles)."""
        for name in ("data", "norm", "F", "X", "proj", "scores"):
            setattr(self, name, [])
        self.basis = None


class _Grouped(list):
    """Futures of one step, one per group of tiles (:meth:`TiledEdge._gmap`); each resolves to
    the list of the group's per-tile results."""


def _each(fn: Callable[..., Any], *per_tile: list[Any], skip: list[bool] | None = None, **same: Any) -> list[Any]:
    """``fn(a_i, b_i, ..., **same)`` for every tile ``i`` of a group, in one task (``None`` for
    the tiles to ``skip``): the per-tile step functions of :mod:`txm_live.tiles` on each tile,
    so every pixel goes through the same arithmetic as with one task per tile."""
    n = len(per_tile[0]) if per_tile else 0
    return [None if skip is not None and skip[i] else fn(*(a[i] for a in per_tile), **same) for i in range(n)]


def _ordered(fn: Callable[..., Any], grouped: list[list[Any]], groups: list[list[int]], keep: list[bool] | None,
             *args: Any, **kwargs: Any) -> Any:
    """``fn(parts, *args, **kwargs)`` with ``parts`` the groups' per-tile results in tile order
    (the tiles with ``keep``): a global step that adds the tiles' parts in band order."""
    parts = _tile_order(grouped, groups)
    return fn([p for i, p in enumerate(parts) if keep is None or keep[i]], *args, **kwargs)


def _tile_order(grouped: list[list[Any]], groups: list[list[int]]) -> list[Any]:
    """The per-tile results of each group of tiles (``groups[g]`` the tiles of ``grouped[g]``)
    as one list in tile order."""
    out: list[Any] = [None] * sum(len(g) for g in groups)
    for tiles, vals in zip(groups, grouped):
        for i, v in zip(tiles, vals):
            out[i] = v
    return out


def _pack(cols: np.ndarray, n: int) -> np.ndarray:
    """The in-tile pixels ``cols`` (increasing) of a tile of ``n`` pixels as packed bits."""
    mask = np.zeros(n, dtype=bool)
    mask[cols] = True
    return np.packbits(mask)


def _unpack(bits: np.ndarray, n: int) -> np.ndarray:
    """The in-tile pixels (int64, increasing) of :func:`_pack`."""
    return np.flatnonzero(np.unpackbits(bits, count=n))


def _take_features(tn: Any, bits: np.ndarray, n: int) -> np.ndarray:
    """:func:`txm_live.tiles.tile_take_features` of the tile's clustered pixels (packed)."""
    return T.tile_take_features(tn, _unpack(bits, n))


def _border(proj: tuple, bits: np.ndarray, n: int, W: int, n_rows: int) -> tuple:
    """:func:`txm_live.tiles.tile_border` of the tile's clustered pixels (packed)."""
    return T.tile_border(proj, _unpack(bits, n), W, n_rows)


def _sigma_filter(proj: tuple, bits: np.ndarray, n: int, n_rows: int, W: int, floor: float,
                  above: list[tuple] | None, below: list[tuple] | None) -> np.ndarray:
    """:func:`txm_live.tiles.tile_sigma_filter` of the tile's clustered pixels (packed)."""
    return T.tile_sigma_filter(proj, _unpack(bits, n), n_rows, W, floor, above, below)


def _tile_summary(Yt: Any, tn: Any, F: np.ndarray, bits: np.ndarray, n: int, labs: np.ndarray, *,
                  n_phases: int, rows: np.ndarray, E: np.ndarray, window: Any, method: str,
                  post_order: int | None) -> tuple:
    """:func:`txm_live.tiles.tile_phase_summary` of a tile with a phase pixel, else its feature
    sums and white line alone (:func:`txm_live.tiles.tile_phase_feature_sums`): ``labs`` is the
    phase of each clustered pixel of the tile (-1: none), ``bits`` those pixels (packed)."""
    idx = np.flatnonzero(labs >= 0)
    lab = labs[idx].astype(np.int64)
    if not idx.size:
        return T.tile_phase_feature_sums(F, idx, lab, n_phases, rows)
    cols = _unpack(bits, n)[idx]
    return T.tile_phase_summary(Yt, tn, F, idx, cols, lab, n_phases, rows, E, window, method, post_order)


def _halo(border: list[tuple], i: int, side: int) -> list[tuple] | None:
    """The :data:`txm_live.denoise.SIGMA_FILTER_PASSES` image rows just above (``side=-1``) or
    below (``+1``) tile ``i``, top to bottom, from the tiles' border rows (:func:`txm_live.tiles.tile_border`;
    a tile shorter than that lends all its rows and the next tile the rest); ``None`` at the image
    border."""
    rows: list[tuple] = []
    j = i + side
    while 0 <= j < len(border) and len(rows) < SIGMA_FILTER_PASSES:
        need = SIGMA_FILTER_PASSES - len(rows)
        rows = list(border[j][2][-need:]) + rows if side < 0 else rows + list(border[j][1][:need])
        j += side
    return rows or None


def retry_lost_worker(
    analyze: Callable[..., Any], client: Any, *, what: str, timeout: float | None
) -> Callable[..., Any]:
    """``analyze`` (the body of :func:`~txm_live.phases.analyze_edge`) run once more when a
    worker is lost (:class:`~txm_live.errors.WorkerLostError`).

    A scattered tile has no lineage: when its worker dies, Dask cancels everything computed
    from it, and re-running the lost band's chain of futures would mean rebuilding every stage
    up to the failed one. The client still holds the block (or the workers can read it again
    from its file), so the edge is analysed again from the start on the workers that remain
    (after waiting up to ``timeout`` s, default 60 s, for one); the result carries a note. A
    second loss raises. Errors other than a lost worker (timeouts, the task functions' own
    errors) are never retried.
    """
    import dataclasses
    import logging

    from txm_live.errors import DistributedError, WorkerLostError

    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return analyze(*args, **kwargs)
        except WorkerLostError as exc:
            lost = f"{type(exc).__name__}: {exc}"
        # out of the except block: the failed attempt's traceback, and with it its futures (the
        # surviving workers' tiles), is released before the edge is analysed again
        logging.getLogger(__name__).warning("%s: %s; analysing the edge again once", what, lost)
        try:
            client.wait_for_workers(1, timeout=timeout if timeout is not None else 60.0)
        except (TimeoutError, OSError) as exc2:
            raise DistributedError(f"{what}: a worker was lost ({lost}) and no worker is left to retry on "
                                   f"({type(exc2).__name__}: {exc2})") from exc2
        res = analyze(*args, **kwargs)
        return dataclasses.replace(res, notes=tuple(res.notes) + (
            "a Dask worker was lost during the analysis (WorkerLostError); analysed again once",))

    return run


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
