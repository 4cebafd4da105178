"""Fast streaming preview of the phases of one edge, with river's DBSTREAM.

:func:`preview_edge` has the signature of :func:`txm_live.phases.analyze_edge` and returns the
same :class:`~txm_live.results.EdgeResult`, in about a second even at full detector size, so a
first phase map can be shown while the exact analysis (PCA + exact DBSCAN over every pixel)
runs. :func:`agreement` measures how close it came (adjusted Rand index).

How it works
------------
1. Only the energies the preview needs are read, and the block is never copied or normalized
   whole: at most ``max_fit_energies`` evenly spread energies of each of the pre- and post-edge
   fitting ranges give the Athena pre-edge line, edge step and noise of every pixel
   (the least squares of :func:`txm_live.normalize.normalize_athena`, over chunks of a few
   thousand pixels with one reused buffer), then the edge-step SNR mask (:func:`txm_live.snr.snr_mask`, Otsu threshold unless given).
2. Features: the normalized near-edge spectra divided by their mean over the upper part of the
   range (removes the per-pixel edge-step error), projected on the first ``n_components``
   principal axes of a subsample of ``smooth`` x ``smooth`` neighbourhood-averaged spectra, taken
   orthogonal to the mean spectrum, a constant and a line (the directions normalization errors
   take, as in :func:`txm_live.phases.build_features`); the
   score maps are then denoised by the exact analysis's edge-preserving sigma filter
   (:func:`txm_live.denoise.sigma_filter`: each pixel averaged with the 3 x 3 neighbours that
   agree within their noise, two passes; ``spatial_filter=False``: the plain ``smooth`` x
   ``smooth`` mean of the masked neighbours) and scaled by the robust spread of the first
   component.
   Normalization is affine per pixel, so the raw near-edge rows (a view of the block) are
   projected by one product and the k scores normalized afterwards.
3. river's :class:`~river.cluster.DBSTREAM` learns ``n_learn`` pixels in random order (the only
   per-sample Python loop, bounded) and summarizes them as weighted micro-clusters.
4. Phases are the density modes of that summary, found by quick shift (Vedaldi & Soatto 2008)
   with a Gaussian ``bandwidth``: modes holding at least ``min_phase_fraction`` of the weight are
   phases; a smaller mode farther than ``merge_distance`` from every phase is a minority
   ("outlier") phase of its own, otherwise it joins the nearest phase.
5. Every pixel (vectorized) takes the phase of its nearest micro-cluster.

No number of phases is chosen by the user; the parameters are in units of the data spread.

Memory: a few per-pixel float32 maps (tens of MB at 602 x 643); the near-edge rows are read in
place when they are consecutive float32 rows of a C-contiguous block (otherwise copied, about
125 MB at full size for 81 energies); the phase statistics gather at most
``max_stat_pixels`` pixels per phase over the returned energies. Products are written as
``einsum`` and the principal axes come from a block iteration, not an n x n ``eigh`` (skinny
shapes: faster single-threaded than multi-threaded BLAS, and no BLAS worker threads left
spinning on the other core while acquisition runs): CPU time equals wall time.
Only numpy and river are imported (no scipy.ndimage/special: a fresh analysis process pays none of
their imports, about 0.25 s; :mod:`txm_live.denoise` is numpy-only).
Time at 602 x 643 x 641 energies (float32, 2 cores shared with other jobs): 0.32-0.36 s wall
(= CPU) warm; 0.41-0.42 s for the first call in a fresh process on a shared-memory block (the
analysis process), imports included, both measured with the box-mean smoothing of the scores; the
two-pass sigma filter that replaced it adds about 0.2 s of CPU (measured at load 6: 0.98 against
0.76 s CPU per call, minimum of 4). river's updates, bounded by ``n_learn``, take about 0.1 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from txm_live.edges import EdgeWindow, resolve_post_order
from txm_live.errors import InsufficientDataError
from txm_live.results import EdgeResult

__all__ = ["agreement", "preview_edge"]

_MIN_PIXELS = 50


def _check(energies: np.ndarray, block: np.ndarray, window: EdgeWindow, valid: np.ndarray | None):
    energies = np.asarray(energies, dtype=np.float64)
    if energies.ndim != 1:
        raise ValueError(f"energies must be 1-D, got shape {energies.shape}")
    block = np.asarray(block)
    if block.ndim != 3 or block.shape[0] != energies.size:
        raise ValueError(f"block must have shape (n_energies={energies.size}, H, W), got {block.shape}")
    if not isinstance(window, EdgeWindow):
        raise ValueError(f"window must be an EdgeWindow, got {type(window).__name__}")
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != block.shape[1:]:
            raise ValueError(f"valid must have shape {block.shape[1:]}, got {valid.shape}")
    src = np.arange(energies.size)  # block row of each (sorted) energy: the block is never reordered
    if np.any(np.diff(energies) <= 0):
        src = np.argsort(energies, kind="stable")
        if np.any(np.diff(energies[src]) == 0):
            raise ValueError("energies must not repeat")
        energies = energies[src]
    return energies, block, src, valid


def _take_rows(block: np.ndarray, rows: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
    """float32 copy of ``block[rows]`` as ``(len(rows), H*W)``, or of only the pixels ``cols``.

    One row at a time, so a non-contiguous or non-float32 block never gets copied whole.
    """
    n = block.shape[1] * block.shape[2] if cols is None else cols.size
    out = np.empty((rows.size, n), dtype=np.float32)
    for j, r in enumerate(rows):  # over energies, not pixels
        frame = np.asarray(block[r]).reshape(-1)
        out[j] = frame if cols is None else frame[cols]
    return out


def _edge_fit(block: np.ndarray, rows: np.ndarray, energies: np.ndarray, window: EdgeWindow,
              chunk: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Athena pre-edge line ``c0 + c1 (E - e0)``, edge step and pre-edge noise of every pixel from
    the fitting energies ``rows`` of ``block`` (each float32, (H*W,)).

    The same least squares as :func:`txm_live.normalize.normalize_athena` (pre-edge line, post-edge
    polynomial of the order :func:`txm_live.edges.resolve_post_order` chooses, both evaluated at
    e0; noise = rms residual with n_pre - 2 degrees of freedom), but
    only its four per-pixel results, over chunks of pixels with one reused buffer: no normalized
    rows and no chunk-sized temporaries (these made the first call of a process 0.17 s slower,
    malloc growing and trimming the heap at every chunk). The pre-edge rows are centred on their
    per-pixel mean first, so the residual sum of squares keeps its precision in float32.
    """
    e = np.asarray(energies, dtype=np.float64)
    nw = window.normalization  # a joint window: its group's ranges and step (txm_live.edges.join_windows)
    rel = e - nw.e0
    pre = (rel >= nw.pre[0]) & (rel <= nw.pre[1])
    post = (rel >= nw.post[0]) & (rel <= nw.post[1])
    n_pre = int(pre.sum())
    x = rel / 100.0  # conditioning only, as txm_live.normalize
    a_pre = np.stack([np.ones(n_pre), x[pre]], axis=1)  # (n_pre, 2)
    p_pre = np.linalg.pinv(a_pre).astype(np.float32)  # (2, n_pre)
    at_pre = a_pre.T.astype(np.float32)  # (2, n_pre)
    order_post = resolve_post_order(e, window)  # the rule of analyze_edge (or window.post_order)
    w_post = np.linalg.pinv(np.vander(x[post], order_post + 1, increasing=True))[0].astype(np.float32)  # at e0
    order = np.concatenate([np.flatnonzero(pre), np.flatnonzero(post)])
    frames = [np.asarray(block[r]).reshape(-1) for r in rows[order]]  # views for a contiguous block
    n = frames[0].size
    out = np.empty((4, n), dtype=np.float32)
    buf = np.empty((len(frames), min(chunk, n)), dtype=np.float32)
    for s in range(0, n, chunk):  # over chunks of pixels, vectorized within
        stop = min(s + chunk, n)
        y = buf[:, : stop - s]
        for j, f in enumerate(frames):
            y[j] = f[s:stop]
        yp = y[:n_pre]
        level = yp.mean(axis=0)
        yp -= level  # centred pre-edge rows (in the buffer)
        coef = np.einsum("kj,jp->kp", p_pre, yp, dtype=np.float64)  # line of the centred rows
        proj = np.einsum("kj,jp->kp", at_pre, yp, dtype=np.float64)
        rss = np.einsum("jp,jp->p", yp, yp, dtype=np.float64) - np.einsum("kp,kp->p", coef, proj)
        c0 = coef[0] + level
        out[0, s:stop] = c0
        out[1, s:stop] = coef[1] / 100.0
        out[2, s:stop] = np.einsum("j,jp->p", w_post, y[n_pre:], dtype=np.float64) - c0
        out[3, s:stop] = np.sqrt(np.clip(rss, 0.0, None) / (n_pre - 2))
    if nw is not window:  # the pre-edge line about the edge's own e0
        out[0] += out[1] * np.float32(window.e0 - nw.e0)
    return out[0], out[1], out[2], out[3]


def _feature_rows(block: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``block[rows]`` as a float32 ``(len(rows), H*W)`` view when the rows are consecutive, else a copy."""
    if (block.dtype == np.float32 and rows.size and np.all(np.diff(rows) == 1)
            and block[rows[0]].flags.c_contiguous and block.strides[0] == block[0].nbytes):
        return block[rows[0] : rows[-1] + 1].reshape(rows.size, -1)
    return _take_rows(block, rows)


def _spread_pick(idx: np.ndarray, n: int) -> np.ndarray:
    if idx.size <= n:
        return idx
    return idx[np.unique(np.linspace(0, idx.size - 1, n).round().astype(int))]


def _box_sum(a: np.ndarray, size: int) -> np.ndarray:
    """Sum over a ``size x size`` window of the last two axes, zeros outside (float32).

    Same windows as ``scipy.ndimage.uniform_filter(..., mode="constant") * size**2``, by
    cumulative sums (float64) along each axis; numpy only, so a preview in a fresh process does
    not pay the import of scipy.ndimage (about 0.1 s).
    """
    r = size // 2
    *lead, H, W = a.shape
    # one more leading zero than the window reaches: c[i + size] - c[i] is the window of i
    c = np.zeros((*lead, H, W + size), dtype=np.float64)
    np.cumsum(a, axis=-1, out=c[..., r + 1 : r + 1 + W])
    c[..., r + 1 + W :] = c[..., r + W : r + 1 + W]
    rows = c[..., size:] - c[..., :W]  # sums along x, (..., H, W)
    c = np.zeros((*lead, H + size, W), dtype=np.float64)
    np.cumsum(rows, axis=-2, out=c[..., r + 1 : r + 1 + H, :])
    c[..., r + 1 + H :, :] = c[..., r + H : r + 1 + H, :]
    return (c[..., size:, :] - c[..., :H, :]).astype(np.float32)


def _box_mean(stack: np.ndarray, mask: np.ndarray, size: int) -> np.ndarray:
    """Mean over a ``size x size`` neighbourhood of masked pixels, per row of ``stack`` (n, H, W)."""
    masked = np.where(mask, stack, np.float32(0.0)).astype(np.float32, copy=False)
    if size <= 1:
        return masked
    num = _box_sum(masked, size)
    den = _box_sum(mask.astype(np.float32), size)
    return num / np.maximum(den, 1e-6)[None]


def _neighbourhood_mean(Y: np.ndarray, x: np.ndarray, c0: np.ndarray, c1: np.ndarray, gain: np.ndarray,
                        mask: np.ndarray, flat_idx: np.ndarray, size: int) -> np.ndarray:
    """Normalized spectra ``(Y - c0 - c1 x) * gain`` averaged over the masked ``size x size``
    neighbourhood of a few pixels, (n_f, len(flat_idx)); ``Y`` is raw, (n_f, H*W)."""
    H, W = mask.shape
    ys, xs = np.divmod(flat_idx, W)
    r = size // 2
    dy, dx = (a.ravel() for a in np.mgrid[-r : size - r, -r : size - r])
    y, xx = ys[None] + dy[:, None], xs[None] + dx[:, None]  # (size**2, n)
    inside = (y >= 0) & (y < H) & (xx >= 0) & (xx < W)
    q = (np.clip(y, 0, H - 1) * W + np.clip(xx, 0, W - 1)).ravel()
    w = (inside.ravel() & mask.ravel()[q]).astype(np.float64)
    vals = (Y[:, q] - c0[q] - np.multiply.outer(x, c1[q])) * gain[q]  # (n_f, size**2 * n) float32
    vals = np.where(w > 0, vals, np.float32(0.0)).reshape(Y.shape[0], dy.size, -1).sum(axis=1, dtype=np.float64)
    return vals / np.maximum(w.reshape(dy.size, -1).sum(axis=0), 1.0)


def _leading_axes(cov: np.ndarray, k: int, *, tol: float = 1e-9, max_iter: int = 500) -> np.ndarray:
    """The ``k`` leading eigenvectors of a symmetric positive semi-definite ``cov`` (n, n), as columns.

    Block (subspace) iteration with a Rayleigh-Ritz step, ``k + 5`` vectors: only n x (k + 5)
    products, QR and a tiny eigh. Same axes as ``numpy.linalg.eigh`` (up to sign) to ``tol``, but
    none of the LAPACK calls of an n x n eigh, whose multi-threaded BLAS workers would keep a second
    core spinning (about 0.1 s of CPU) after a call of a millisecond.
    """
    n = cov.shape[0]
    p = min(n, k + 5)
    q = np.linalg.qr(cov @ np.random.default_rng(0).standard_normal((n, p)))[0]
    prev = None
    for _ in range(max_iter):
        q = np.linalg.qr(cov @ q)[0]
        ritz = np.linalg.eigvalsh(q.T @ cov @ q)[::-1][:k]
        if prev is not None and np.all(np.abs(ritz - prev) <= tol * max(abs(ritz[0]), 1e-300)):
            break
        prev = ritz
    vecs = np.linalg.eigh(q.T @ cov @ q)[1]
    return q @ vecs[:, ::-1][:, :k]


def _nuisance_part(spectra: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Least-squares fit of ``s m + a + b x`` to every row of ``spectra`` (n, n_f), evaluated at
    ``x`` (``m`` the mean row): the part of each spectrum that normalization errors can make."""
    basis = np.stack([spectra.mean(axis=0), np.ones(x.size), (x - x.mean()) / max(float(np.ptp(x)), 1e-12)],
                     axis=1)
    q = np.linalg.qr(basis)[0]  # (n_f, 3), orthonormal
    return (spectra @ q) @ q.T


def _quick_shift(C: np.ndarray, Wm: np.ndarray, *, bandwidth: float, max_step: float) -> np.ndarray:
    """Mode of every weighted point by quick shift (Vedaldi & Soatto 2008): link each point to
    the nearest denser point within ``max_step``; the roots are the density modes."""
    d = np.sqrt(((C[:, None] - C[None]) ** 2).sum(-1))
    density = (Wm[None] * np.exp(-0.5 * (d / bandwidth) ** 2)).sum(axis=1)
    cand = (density[None] > density[:, None]) & (d < max_step)
    dist = np.where(cand, d, np.inf)
    parent = np.where(cand.any(axis=1), dist.argmin(axis=1), np.arange(len(C)))
    for _ in range(len(C)):  # pointer jumping to the roots
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            break
        parent = nxt
    return np.unique(parent, return_inverse=True)[1]


def _phases_from_modes(C: np.ndarray, Wm: np.ndarray, mode: np.ndarray, *, min_phase_fraction: float,
                       merge_distance: float) -> np.ndarray:
    """Phase index of every micro-cluster from its density mode.

    Modes holding at least ``min_phase_fraction`` of the weight are phases. A smaller mode joins
    the phase of the nearest phase micro-cluster when closer than ``merge_distance`` or when it
    weighs less than half of ``min_phase_fraction``; otherwise (a separate, populated region of
    feature space) it becomes a minority phase of its own.
    """
    weight = np.bincount(mode, weights=Wm)
    big = np.flatnonzero(weight >= min_phase_fraction * Wm.sum())
    if big.size == 0:
        big = np.array([int(np.argmax(weight))])
    phase = np.full(len(C), -1, dtype=np.int64)
    for g, b in enumerate(big):
        phase[mode == b] = g
    n = big.size
    d = np.sqrt(((C[:, None] - C[None]) ** 2).sum(-1))
    owned = np.flatnonzero(phase >= 0)
    small = np.setdiff1d(np.unique(mode), big)
    for r in small[np.argsort(-weight[small], kind="stable")]:
        members = np.flatnonzero(mode == r)
        dd = d[np.ix_(members, owned)]
        if dd.min() < merge_distance or weight[r] < 0.5 * min_phase_fraction * Wm.sum():
            phase[members] = phase[owned[np.unravel_index(np.argmin(dd), dd.shape)[1]]]
        else:
            phase[members] = n
            n += 1
    return phase


def preview_edge(
    energies: np.ndarray,
    block: np.ndarray,
    *,
    window: EdgeWindow,
    valid: np.ndarray | None = None,
    feature_range: tuple[float, float] | None = None,
    n_components: int = 3,
    smooth: int = 3,
    spatial_filter: bool = True,
    n_learn: int = 3000,
    clustering_threshold: float = 0.3,
    bandwidth: float = 0.2,
    merge_distance: float = 0.5,
    min_phase_fraction: float = 0.01,
    minority_fraction: float = 0.1,
    max_fit_energies: int = 40,
    snr_threshold: float | None = None,
    max_stat_pixels: int = 20000,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> EdgeResult:
    """First phase map of one edge from a bounded number of streaming updates.

    Parameters
    ----------
    energies : ndarray, shape (n_e,)
        Energies (eV) of the rows of ``block``. Rows outside the window are ignored.
    block : ndarray, shape (n_e, H, W)
        Optical density, energy-major (a view of the incremental cube is fine; only the needed
        energies are read, the block is never copied whole nor modified).
    window : EdgeWindow
        Edge energy and pre/post-edge fitting ranges.
    valid : ndarray of bool, shape (H, W), optional
        Pixels that may be used (e.g. inside the field of view after registration).
    feature_range : (float, float), optional
        Near-edge energies relative to e0 (eV) that are clustered; default
        ``window.feature_range`` (:attr:`txm_live.edges.EdgeWindow.feature_range`).
    n_components : int
        Principal components kept as features (white-line height, position and width).
    smooth : int
        Side of the pixel neighbourhood averaged for the sample mask, the edge-step level and the
        spectra the principal axes are learnt from, and for the scores when ``spatial_filter``
        is false (1 disables it).
    spatial_filter : bool
        Denoise the scores with :func:`txm_live.denoise.sigma_filter` (edge-preserving, two 3 x 3
        passes; the noise of a pixel's scores is its pre-edge noise per energy times its
        normalization gain) instead of the plain ``smooth`` x ``smooth`` mean, which blurs
        boundaries and leaves more noise where the noise is high (measured on the full-size
        demo, L3 / L2 preview ARI with bilinear resampling 0.963 / 0.928 -> 0.973 / 0.951, with
        cubic 0.964 / 0.900 -> 0.974 / 0.939; the filter costs ~0.1-0.3 s at full size).
    n_learn : int
        Pixels DBSTREAM learns from; bounds the Python time (tens of us per pixel).
    clustering_threshold : float
        DBSTREAM micro-cluster radius, in units of the first component's robust spread.
    bandwidth : float
        Gaussian bandwidth of the density of the micro-cluster summary (same units); quick
        shift links to denser micro-clusters within 2.5 bandwidths.
    merge_distance : float
        A small density mode closer than this (same units) to a phase joins it.
    min_phase_fraction : float
        Smallest weight fraction of a density mode to become a phase by itself.
    minority_fraction : float
        Phases holding less than this fraction of the clustered pixels are called minority
        (listed in ``outlier_phases``).
    max_fit_energies : int
        Energies used at most from each of the pre- and post-edge fitting ranges.
    snr_threshold : float, optional
        Edge-step SNR threshold; default: Otsu threshold of the SNR histogram.
    max_stat_pixels : int
        Pixels of each phase (random subset) behind ``mean_spectra`` and ``spread``; ``counts``
        and ``labels`` always cover every pixel.
    seed : int
        Seed of the pixel subsamples.
    progress : callable, optional
        Called with the name of each stage.

    Returns
    -------
    EdgeResult
        Same conventions as :func:`txm_live.phases.analyze_edge`: majority phases by increasing
        white-line height, then minority phases; ``eps`` holds the DBSTREAM radius and
        ``min_samples`` the number of learned pixels; ``timings`` per stage.

    Raises
    ------
    ValueError
        Bad shapes or parameters (named).
    InsufficientDataError
        Too few energies in the window or too few pixels above the SNR threshold.

    Notes
    -----
    Measured on the simulator (phantom + photon noise at 5000 photons/pixel, 96-128 px):
    adjusted Rand index 0.80-0.89 against the ground truth (0.96 at 602 x 643) (tests/test_preview.py).
    Time at 602 x 643 x 641 energies: about 0.55 s warm (0.35 s with ``spatial_filter=False``),
    single-threaded (see the module docstring).
    The preview is deliberately approximate: the mask and the principal axes use the ``smooth``
    neighbourhood mean, and the pixel subsample may miss a phase rarer than about ``1 / n_learn``.
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    energies, block, src, valid = _check(energies, block, window, valid)
    for name, value, lo in (("n_components", n_components, 1), ("smooth", smooth, 1), ("n_learn", n_learn, 10),
                            ("max_fit_energies", max_fit_energies, 4), ("max_stat_pixels", max_stat_pixels, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    for name, value in (("clustering_threshold", clustering_threshold), ("merge_distance", merge_distance),
                        ("bandwidth", bandwidth)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
    if not 0 <= min_phase_fraction < 1:
        raise ValueError(f"min_phase_fraction must be in [0, 1), got {min_phase_fraction!r}")
    if feature_range is None:
        feature_range = window.feature_range
    f_lo, f_hi = (float(v) for v in feature_range)
    if not f_lo < f_hi:
        raise ValueError(f"feature_range must satisfy feature_range[0] < feature_range[1], got {feature_range}")

    def stage(name: str) -> float:
        if progress is not None:
            progress(name)
        return time.perf_counter()

    # 1. energies, edge step, SNR mask ---------------------------------------------------------
    t = stage("normalize")
    rel = energies - window.e0
    nw = window.normalization
    rel_n = energies - nw.e0
    i_pre = np.flatnonzero((rel_n >= nw.pre[0]) & (rel_n <= nw.pre[1]))
    i_post = np.flatnonzero((rel_n >= nw.post[0]) & (rel_n <= nw.post[1]))
    i_feat = np.flatnonzero((rel >= f_lo) & (rel <= f_hi))
    if i_pre.size < 3 or i_post.size < 4 or i_feat.size < 8:
        raise InsufficientDataError(
            f"{window.name}: too few energies for a preview: {i_pre.size} pre-edge (need 3), "
            f"{i_post.size} post-edge (need 4), {i_feat.size} near-edge in {feature_range} (need 8)")
    i_fit = np.concatenate([_spread_pick(i_pre, max_fit_energies), _spread_pick(i_post, max_fit_energies)])
    rows = np.unique(np.concatenate([i_fit, i_feat]))
    E = energies[rows]
    H, W = block.shape[1:]
    from txm_live.snr import snr_mask

    # pre-edge line, noise and edge step from the (subsampled) fitting energies only; the
    # near-edge rows are never normalized as a block: the features are projected from the raw
    # rows and normalized per pixel afterwards (normalization is affine per pixel)
    c0, c1, step, noise = _edge_fit(block, src[i_fit], energies[i_fit], window)
    sm = snr_mask(step.reshape(H, W), noise.reshape(H, W), threshold=snr_threshold)
    snr = np.asarray(sm.snr, dtype=np.float32).reshape(H, W)
    Yf = _feature_rows(block, src[i_feat])  # (n_f, H*W) raw optical density, a view when possible
    ef = (energies[i_feat] - window.e0).astype(np.float32)
    # upper part of the feature range: its mean level removes the per-pixel edge-step error
    tail = ef >= f_lo + 0.55 * (f_hi - f_lo)
    sums = np.einsum("kf,fp->kp", np.stack([np.ones(ef.size, np.float32), tail / np.float32(tail.sum())]), Yf)
    # a usable pixel: above the SNR threshold, a positive edge step (also with a given threshold
    # <= 0) and finite near-edge rows
    mask = np.asarray(sm.mask, dtype=bool).ravel() & (step > 0) & np.isfinite(step) & np.isfinite(sums[0])
    inv_step = np.zeros(H * W, dtype=np.float32)
    np.divide(np.float32(1.0), step, out=inv_step, where=mask)
    mask = mask.reshape(H, W)
    if valid is not None:
        mask &= valid
    if smooth > 1:
        # isolated pixels above the SNR threshold are background noise: keep a pixel only when most
        # of its smoothing neighbourhood is sample too
        mask &= _box_sum(mask.astype(np.float32), int(smooth)) >= 0.5 * int(smooth) ** 2
    n_pix = int(mask.sum())
    timings["normalize"] = time.perf_counter() - t
    if n_pix < _MIN_PIXELS:
        raise InsufficientDataError(
            f"{window.name}: only {n_pix} pixels pass the edge-step SNR threshold {float(sm.threshold):.2f}; "
            f"at least {_MIN_PIXELS} are needed for a preview")

    # 2. features -----------------------------------------------------------------------------
    t = stage("features")
    # mean normalized level over the upper feature range, averaged over the neighbourhood: dividing
    # by it removes the per-pixel edge-step error (an amplitude factor) that otherwise dominates
    # the first component
    tail_mean = (sums[1] - c0 - c1 * np.float32(ef[tail].mean())) * inv_step
    del sums
    level = _box_mean(tail_mean.reshape(1, H, W), mask, int(smooth))[0].ravel()
    # a level far from 1 means the normalization of that neighbourhood failed (edge of the
    # particle, glitch): such pixels are left out of the preview
    mask &= ((level > 0.5) & (level < 2.0)).reshape(H, W)
    n_pix = int(mask.sum())
    if n_pix < _MIN_PIXELS:
        raise InsufficientDataError(
            f"{window.name}: only {n_pix} pixels have a usable normalized spectrum; at least {_MIN_PIXELS} are needed")
    pix = np.flatnonzero(mask.ravel())
    # per-pixel affine map raw -> feature: x_norm = (y - c0 - c1 (E - e0)) * gain
    gain = np.zeros(H * W, dtype=np.float32)
    gain[pix] = inv_step[pix] / level[pix]
    rng = np.random.default_rng(seed)
    # principal axes from a subsample of neighbourhood-averaged spectra (the same smoothing as the
    # scores below, so the axes follow the chemistry rather than the pixel noise)
    sub = _neighbourhood_mean(Yf, ef, c0, c1, gain, mask,
                              pix[rng.choice(n_pix, size=min(n_pix, 5000), replace=False)],
                              int(smooth)).T.astype(np.float64)
    # principal axes orthogonal to the mean spectrum, a constant and a line in energy, as the
    # exact analysis's features (txm_live.phases.build_features): a pixel's scores then ignore
    # the error of its edge step (a scale, along the mean spectrum) and of its pre-edge line
    # (offset, slope). Otherwise these errors are the first axis wherever the edge step is
    # noisy (L2 of the small demo: the class separation along the true phase contrast was
    # d' = 1.4 in the averaged spectra, the first eigenvalue 2.6x the variance of that contrast)
    # and the chemistry is squeezed into the weaker axes.
    sub -= _nuisance_part(sub, ef)
    mean = sub.mean(axis=0)
    sub -= mean
    k = min(int(n_components), sub.shape[1])
    axes = _leading_axes(np.einsum("ni,nj->ij", sub, sub), k)  # n_f x n_f scatter matrix
    comps = np.ascontiguousarray(axes, dtype=np.float32)  # leading principal axes, (n_f, k)
    # project the raw rows (one float32 matrix product over the rows, no normalized copy), then
    # normalize the k scores per pixel, then denoise the k score maps: the same linear operations
    # as normalizing the n_f spectra first, at k / n_f of the cost
    raw = np.einsum("fk,fp->kp", comps, Yf)  # (k, H*W)
    del Yf
    off0, off1 = comps.sum(axis=0), comps.T @ ef  # projections of the pre-edge line's terms
    cmean = (comps.T.astype(np.float64) @ mean).astype(np.float32)
    scores = np.zeros((k, H * W), dtype=np.float32)
    scores[:, pix] = ((raw[:, pix] - off0[:, None] * c0[pix] - off1[:, None] * c1[pix]) * gain[pix]
                      - cmean[:, None])
    del raw
    if spatial_filter:
        # edge-preserving, as the exact analysis: each pixel's scores averaged with the 3 x 3
        # neighbours that agree within their noise, twice (txm_live.denoise.sigma_filter). The
        # noise of a score is the pixel's pre-edge noise per energy times its gain (orthonormal
        # axes: white noise keeps its level in every component)
        from txm_live.denoise import PREVIEW_FILTER_PASSES, sigma_filter

        sd = noise[pix] * gain[pix]
        positive = sd[sd > 0]  # a noise-free pixel (simulated data) must not take all the weight
        sd = np.maximum(sd, np.float32(1e-3 * np.median(positive)) if positive.size else np.float32(1.0))
        Z = sigma_filter(np.ascontiguousarray(scores[:, pix].T), pix, (H, W), sd, passes=PREVIEW_FILTER_PASSES)
    else:
        Z = _box_mean(scores.reshape(k, H, W), mask, int(smooth)).reshape(k, -1)[:, pix].T.copy()
    # one isotropic scale, the robust spread (median absolute deviation) of the first component:
    # the weaker components keep their smaller (mostly noise) spread instead of being blown up
    scale = float(1.4826 * np.median(np.abs(Z[:, 0] - np.median(Z[:, 0]))))
    Z /= scale if scale > 0 else 1.0
    timings["features"] = time.perf_counter() - t

    # 3. streaming clustering with river --------------------------------------------------------
    t = stage("stream")
    from river import cluster as river_cluster

    db = river_cluster.DBSTREAM(clustering_threshold=float(clustering_threshold), fading_factor=1e-4,
                                cleanup_interval=max(n_learn, 1000), intersection_factor=0.3,
                                minimum_weight=3.0)
    learn = rng.choice(n_pix, size=min(n_pix, int(n_learn)), replace=False)
    for z in Z[learn].tolist():  # the bounded per-sample loop: river is a streaming learner
        db.learn_one(dict(enumerate(z)))
    ids = list(db.micro_clusters)
    C = np.array([[db.micro_clusters[i].center.get(j, 0.0) for j in range(k)] for i in ids], dtype=np.float64)
    Wm = np.array([db.micro_clusters[i].weight for i in ids], dtype=np.float64)
    timings["stream"] = time.perf_counter() - t

    # 4. phases: density modes of the micro-cluster summary ---------------------------------------
    t = stage("assign")
    mode = _quick_shift(C, Wm, bandwidth=float(bandwidth), max_step=2.5 * float(bandwidth))
    mphase = _phases_from_modes(C, Wm, mode, min_phase_fraction=float(min_phase_fraction),
                                merge_distance=float(merge_distance))
    # nearest micro-cluster for every pixel, in chunks (n_pix x n_micro distances)
    nearest = np.empty(n_pix, dtype=np.int64)
    Cf = C.astype(np.float32)
    c2 = (Cf**2).sum(1)
    m2 = -2.0 * Cf.T
    for s in range(0, n_pix, 512):  # 512 x n_micro float32 temporaries: stay in cache
        d = Z[s : s + 512] @ m2
        d += c2
        nearest[s : s + 512] = np.argmin(d, axis=1)
    raw = mphase[nearest]
    timings["assign"] = time.perf_counter() - t

    # 5. summary, same conventions as analyze_edge ------------------------------------------------
    t = stage("summarize")
    present = np.unique(raw)
    dense = np.searchsorted(present, raw)
    n_phases = present.size
    counts = np.bincount(dense, minlength=n_phases).astype(np.int64)
    # phase statistics from at most `max_stat_pixels` pixels of each phase (the standard error of a
    # mean of 20000 noisy spectra is negligible), normalized from a small gather of raw rows
    take = [np.flatnonzero(dense == p) for p in range(n_phases)]
    take = [np.sort(t if t.size <= max_stat_pixels else rng.choice(t, size=max_stat_pixels, replace=False))
            for t in take]  # sorted: cache-friendly gathers
    cols = pix[np.concatenate(take)] if take else np.zeros(0, dtype=np.int64)
    # normalized spectra of these pixels only (finite: masked pixels have a positive edge step)
    norm2 = _take_rows(block, src[rows], cols)
    norm2 -= c0[cols]
    norm2 -= np.multiply.outer((E - window.e0).astype(np.float32), c1[cols])
    norm2 *= inv_step[cols]
    bounds = np.cumsum([0] + [t.size for t in take])
    mean_spectra = np.zeros((n_phases, E.size))
    spread = np.zeros((n_phases, E.size))
    for p in range(n_phases):  # over the few phases; each a vectorized reduction over its pixels
        part = norm2[:, bounds[p] : bounds[p + 1]]
        mean_spectra[p] = part.mean(axis=1, dtype=np.float64)
        spread[p] = part.std(axis=1, dtype=np.float64)
    # order and names as analyze_edge: majority phases by edge position then white line, then
    # minority phases
    from txm_live.phase_order import edge_levels, edge_positions, edge_tolerance, phase_names

    fr = np.searchsorted(rows, i_feat)  # feature energies among the returned ones
    wl = mean_spectra[:, fr].max(axis=1) if n_phases else np.zeros(0)
    pos = edge_positions(E[fr], mean_spectra[:, fr]) if n_phases else np.zeros(0)
    level = edge_levels(pos, edge_tolerance(E[fr], window.e0))
    minor = counts < minority_fraction * n_pix
    if minor.all():
        minor[:] = False
    major_idx = np.flatnonzero(~minor)[np.lexsort((wl[~minor], level[~minor]))]
    minor_idx = np.flatnonzero(minor)[np.lexsort((wl[minor], level[minor]))]
    order = np.concatenate([major_idx, minor_idx]).astype(np.int64)
    rank = np.empty(n_phases, dtype=np.int64)
    rank[order] = np.arange(n_phases)
    labels = np.full(H * W, -1, dtype=np.int64)
    labels[pix] = rank[dense]
    labels = labels.reshape(H, W)
    mean_spectra, spread, counts = mean_spectra[order], spread[order], counts[order]
    names = phase_names(wl[major_idx], level[major_idx], wl[minor_idx], level[minor_idx], pos[order])
    timings["summarize"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start
    return EdgeResult(
        edge=window.edge, e0=float(window.e0), energies=E.copy(), labels=labels, phase_names=names,
        mean_spectra=mean_spectra, spread=spread, counts=counts, snr=snr, mask=mask,
        eps=float(clustering_threshold), min_samples=int(learn.size), n_components=k,
        outlier_phases=tuple(range(major_idx.size, n_phases)), timings=timings, element=window.element,
    )


def agreement(preview: EdgeResult | np.ndarray, exact: EdgeResult | np.ndarray) -> float:
    """Adjusted Rand index of two phase maps over the pixels labelled (>= 0) in both.

    Parameters
    ----------
    preview, exact : EdgeResult or ndarray of int, shape (H, W)
        Label maps (an EdgeResult's ``labels``). Ground-truth maps from the simulator work too
        (mark background as -1 first).

    Returns
    -------
    float
        1 for identical partitions (up to renaming), about 0 for unrelated ones; ``nan`` when
        no pixel is labelled in both.
    """
    from sklearn.metrics import adjusted_rand_score

    a = preview.labels if isinstance(preview, EdgeResult) else np.asarray(preview)
    b = exact.labels if isinstance(exact, EdgeResult) else np.asarray(exact)
    if a.shape != b.shape:
        raise ValueError(f"exact labels shape {b.shape} differs from preview labels shape {a.shape}")
    both = (a >= 0) & (b >= 0)
    if not np.any(both):
        return float("nan")
    return float(adjusted_rand_score(b[both], a[both]))
