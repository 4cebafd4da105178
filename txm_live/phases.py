"""Chemical phase maps of one absorption edge, and the L2 / L3 cross-check.

:func:`analyze_edge` turns an energy-major block of optical density ``(n_e, H, W)`` into a phase
map without anyone choosing the number of phases (Duan et al., Sci. Rep. 6, 34406 (2016)):

1. **select** the energies of the edge window (a view of the block, no copy when the energies
   are increasing);
2. **normalize** every pixel (Athena pre/post-edge lines or MBACK, :mod:`txm_live.normalize`);
3. **snr**: keep pixels whose edge-step SNR passes :func:`txm_live.snr.snr_mask` (and ``valid``);
4. **features**: the near-edge part of each normalized spectrum (``feature_range``, default
   the window's :attr:`~txm_live.edges.EdgeWindow.feature_range`: ``e0 - 20 .. e0 + 60`` eV at
   hard X-rays, scaled with the edge below 6 keV; where the phases differ: white-line height,
   width and position).
   The span of the mean spectrum, a constant and a line is projected out of every pixel, which
   removes per-pixel edge-step (scale), offset and pre-edge slope errors of the normalization
   (the dominant noise at TXM SNR) while keeping the chemical contrast; then every energy is
   divided by its noise level (estimated from second differences across energy) so the noise
   is isotropic;
5. **pca**: :func:`txm_live.decompose.reduce_pca` keeps the components above the noise floor
   (pixels weighted by their SNR); an edge-preserving 3 x 3 sigma filter (:func:`sigma_filter`)
   then averages each pixel's scores with the neighbours that agree with it within
   the noise;
6. **cluster**: :class:`txm_live.cluster.PhaseClusterer` (DBSCAN with parameters estimated
   from the data) finds the dense cores of the majority phases; :func:`refine_phases` finds
   the minority phase among the pixels no majority phase explains (robust Gaussian mixture
   seeded by those cores), keeping it only if its pixels are not two-phase mixtures, and
   assigns every pixel to its dominant phase (nearest phase mean in the pooled within-phase
   metric: interface pixels, mixtures of two phases, go to the larger fraction);
7. **summarize**: phases in a stable order, mean spectra, spread, counts, names, white-line
   and majority-score maps.

Phase order (stable across runs and edges): majority phases first, by edge position (the
half-step crossing of their mean normalized spectrum; edges closer than
:func:`txm_live.phase_order.edge_tolerance` count as equal), then by increasing white-line
height; then the minority (outlier) phases in the same order. Names are generic
(:func:`txm_live.phase_order.phase_names`):
``"phase A (low white line)"``, ``"phase B (high white line)"``, ``"minority"``.

:func:`compare_edges` (from :mod:`txm_live.compare`, re-exported here) matches the L2 phases to
the L3 phases and measures how often the two edges agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from txm_live.buffers import work_array
from txm_live.compare import EdgeComparison, compare_edges, l2_l3_agreement, match_phases
from txm_live.decompose import PcaResult, reduce_pca
from txm_live.denoise import SIGMA_FILTER_PASSES, sigma_filter
from txm_live.refine import refine_phases
from txm_live.edges import FEATURE_RANGE, MIN_POST_POINTS, MIN_PRE_POINTS, EdgeWindow, resolve_post_order
from txm_live.phase_order import edge_levels, edge_positions, edge_tolerance, phase_names
from txm_live.errors import InsufficientDataError
from txm_live.normalize import EdgeFeatures, athena_window_features
from txm_live.threads import limit_blas, map_ordered, run_tiles
from txm_live.results import EdgeResult
from txm_live.tiles import normalize_tile

__all__ = [
    "DEFAULT_FEATURE_RANGE",
    "DEFAULT_JUMP_SIGNIFICANCE",
    "MIN_PIXELS",
    "SIGMA_FILTER_PASSES",
    "PhaseAnalysis",
    "EdgeComparison",
    "analyze_edge",
    "build_features",
    "compare_edges",
    "refine_phases",
    "sigma_filter",
    "match_phases",
    "l2_l3_agreement",
]

#: Near-edge feature range relative to e0 (eV) at hard X-rays, where the white lines of the phases
#: differ; an edge's own range is :attr:`txm_live.edges.EdgeWindow.feature_range` (scaled below 6 keV).
DEFAULT_FEATURE_RANGE: tuple[float, float] = FEATURE_RANGE
#: Default sample mask: an edge jump must exceed this many times its own standard error.
DEFAULT_JUMP_SIGNIFICANCE: float = 5.0
_POST_MODELS = {0: "constant", 1: "linear", 2: "quadratic"}
#: Fewest unmasked pixels an edge analysis accepts.
MIN_PIXELS: int = 50
#: Fewest energies inside the feature range.
MIN_FEATURE_ENERGIES: int = 8
#: Energies (rows) per chunk when accumulating per-phase sums over the feature range.
_ROW_CHUNK = 32
#: Bytes of one float32 pixel chunk of the window block (bounds the normalization temporaries).
_CHUNK_BYTES = 64 * 2**20
#: BLAS threads inside :func:`analyze_edge`: its matrix products are thin (memory-bound) or tiny
#: (the mixture's EM), where multi-threaded BLAS spins more than it computes (measured: 2 BLAS
#: threads made the cluster stage 3-6x slower on a loaded 2-core machine).
_BLAS_THREADS = 1
#: Threads of :func:`analyze_edge` by default (its per-pixel passes over pixel tiles and its BLAS
#: calls): one, because on the beamline computer the analysis shares the machine with
#: acquisition.
DEFAULT_THREADS: int = 1
#: Pixels per block of the feature projection (81 features x 8192 px float32 = 2.7 MB).
_PIXEL_BLOCK = 8192
#: Pixels used to estimate the noise level of each feature.
_NOISE_SAMPLES = 50_000
#: Feature rows per block of the noise estimate (8 x 50 000 float64 = 3.2 MB temporaries).
_NOISE_ROWS = 8


@dataclass(frozen=True)
class PhaseAnalysis(EdgeResult):
    """:class:`~txm_live.results.EdgeResult` plus the per-pixel maps of the analysis.

    Attributes
    ----------
    white_line : ndarray of float32, shape (H, W)
        Normalized white-line intensity of each pixel: mean normalized absorption within
        +-2 eV of the white-line peak of the mean spectrum of all clustered pixels
        (``nan`` where masked).
    majority_score : ndarray of float32, shape (H, W)
        Position of each pixel spectrum (near-edge range) on the line from the low-white-line
        majority phase mean (0) to the high-white-line majority phase mean (1), by least
        squares; > 1 beyond the second majority phase.
        ``nan`` where masked, or everywhere when fewer than two majority phases were found.
    feature_range : (float, float)
        Feature range relative to e0 (eV).
    snr_threshold : float
        Edge-step SNR threshold that was applied.
    explained_variance_ratio : ndarray, shape (n_components,)
        Variance fraction of the clustered principal components (of the whitened features).
    """

    white_line: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    majority_score: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    feature_range: tuple[float, float] = DEFAULT_FEATURE_RANGE
    snr_threshold: float = float("nan")
    explained_variance_ratio: np.ndarray = field(default_factory=lambda: np.zeros(0))


# ----------------------------------------------------------------------------------------------
# helpers


def _select_window(energies: np.ndarray, block: np.ndarray, window: EdgeWindow) -> tuple[np.ndarray, np.ndarray]:
    """Energies and block rows within ``[window.start, window.end]``, increasing in energy."""
    tol = 1e-6
    order = None
    if np.any(np.diff(energies) <= 0):
        order = np.argsort(energies, kind="stable")
        if np.any(np.diff(energies[order]) == 0):
            raise ValueError("energies must not repeat")
    if order is None:
        inside = np.flatnonzero((energies >= window.start - tol) & (energies <= window.end + tol))
        if inside.size == 0:
            return energies[:0], block[:0]
        sl = slice(int(inside[0]), int(inside[-1]) + 1)
        return energies[sl], block[sl]  # a view: no copy of the cube
    keep = order[(energies[order] >= window.start - tol) & (energies[order] <= window.end + tol)]
    return energies[keep], block[keep]


def _pack_columns(rows: np.ndarray, cols: np.ndarray) -> None:
    """``rows[:, :cols.size] = rows[:, cols]`` in place, for sorted distinct ``cols`` (one row
    at a time through a row-sized buffer: the gathered values are those of a copy)."""
    buf = np.empty(cols.size, dtype=rows.dtype)
    for row in rows:
        np.take(row, cols, out=buf, mode="clip")  # cols are in range
        row[: cols.size] = buf


def _count_in(energies: np.ndarray, e0: float, rng: tuple[float, float]) -> int:
    return int(np.count_nonzero((energies >= e0 + rng[0]) & (energies <= e0 + rng[1])))


def _row_medians(d: np.ndarray) -> np.ndarray:
    """``np.median(d, axis=1)`` of a finite 2-D array, with one selection per row instead of two.

    For an even row length the median is the mean of the order statistics ``n/2 - 1`` and
    ``n/2``; after selecting the first, the second is the smallest value above it. Same
    arithmetic as :func:`numpy.median` (``(a + b) / 2``), so the values are identical.
    """
    n = d.shape[1]
    k = (n - 1) // 2
    part = np.partition(d, k, axis=1)
    lo = part[:, k]
    if n % 2:
        return lo.copy()
    return np.add(lo, part[:, k + 1 :].min(axis=1)) / 2.0


def _noise_per_feature(F: np.ndarray, x: np.ndarray, *, threads: int = 1) -> np.ndarray:
    """Noise standard deviation of every row of ``F`` (n_features, n_pixels) from second
    differences across energy (robust: median absolute deviation over pixels).

    For row j, ``d = F_j - (w_l F_{j-1} + w_r F_{j+1})`` (linear interpolation of the
    neighbours) removes the smooth spectrum; for independent noise ``var(d) = sigma_j^2 (1 +
    w_l^2 + w_r^2)`` with equal neighbour noise. The end rows copy their neighbour's estimate.
    """
    n_in = F.shape[0] - 2
    mad = np.empty(n_in)

    def mad_rows(r: slice) -> None:
        b = min(r.stop, n_in)
        mad[r.start : b] = _noise_mad(F[r.start : b + 2], x[r.start : b + 2])

    run_tiles(mad_rows, [slice(r, r + _NOISE_ROWS) for r in range(0, n_in, _NOISE_ROWS)], threads)
    return _noise_from_mad(mad, x)


def _neighbour_weights(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights of the left and right neighbours that interpolate every interior energy of ``x``
    linearly (:func:`_noise_mad` and :func:`_noise_from_mad`)."""
    h = np.diff(x)
    wl = h[1:] / (h[:-1] + h[1:])
    return wl, 1.0 - wl


def _noise_mad(F: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Median absolute deviation over pixels of the second difference of every interior row of
    ``F`` (n_rows, n_pixels; energies ``x``) (:func:`_noise_per_feature`; the rows of any
    band of a larger ``F`` plus one on each side give that band's values: float64, element by
    element the same arithmetic, no n_features x n_pixels float64 temporary)."""
    wl, wr = _neighbour_weights(x)
    dr = F[1:-1] - (wl[:, None] * F[:-2] + wr[:, None] * F[2:])
    dr -= _row_medians(dr)[:, None]
    np.abs(dr, out=dr)
    return _row_medians(dr)


def _noise_from_mad(mad: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The noise of every feature row from the :func:`_noise_mad` of the interior rows."""
    wl, wr = _neighbour_weights(x)
    sig = np.empty(mad.size + 2)
    sig[1:-1] = 1.4826 * mad / np.sqrt(1.0 + wl**2 + wr**2)
    sig[0], sig[-1] = sig[1], sig[-2]
    positive = sig[sig > 0]
    floor = float(np.median(positive)) * 1e-3 if positive.size else 1.0
    return np.maximum(sig, floor)


def build_features(
    norm_features: np.ndarray,
    feature_energies: np.ndarray,
    *,
    e0: float,
    random_state: int = 0,
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise-whitened near-edge features of the clustered pixels.

    Parameters
    ----------
    norm_features : ndarray, shape (n_features, n_pixels)
        Normalized spectra in the feature range, energy-major, masked pixels only.
    feature_energies : ndarray, shape (n_features,)
        Their energies (eV), increasing.
    e0 : float
        Edge energy (eV).
    random_state : int
        Seed of the pixel subsample (at most 50 000 pixels) used for the noise estimate.
    threads : int
        Threads for the noise medians and the per-pixel-block projection (the result does not
        depend on it).

    Returns
    -------
    X : ndarray of float32, shape (n_pixels, n_features)
        Features, pixel-major, ready for :func:`~txm_live.decompose.reduce_pca`.
    mean_spectrum : ndarray, shape (n_features,)
        Mean normalized spectrum of the pixels.
    noise : ndarray, shape (n_features,)
        Estimated noise standard deviation of each feature before whitening.

    Notes
    -----
    Every pixel spectrum ``y`` is replaced by its residual after a least-squares fit of
    ``a m + b + c (E - e0)`` (``m`` the mean spectrum): a per-pixel error of the edge step
    multiplies the whole spectrum (it lies along ``m``), errors of the pre-edge line add a
    constant and a slope; none of them is chemistry. The residual keeps the part of the
    phase contrast (white-line height, width, shift) orthogonal to these three vectors, and the
    phases still sit in the same order along it. Then each feature is divided by its noise
    level. One matrix product serves all pixels.
    """
    F = np.asarray(norm_features, dtype=np.float32)
    x = np.asarray(feature_energies, dtype=np.float64)
    mean = np.empty(F.shape[0])
    step = max(1, -(-F.shape[0] // threads))

    def row_means(r: slice) -> None:  # each row's own (pairwise) sum: any blocking gives the same
        mean[r] = F[r].mean(axis=1, dtype=np.float64)

    run_tiles(row_means, [slice(r, r + step) for r in range(0, F.shape[0], step)], threads)
    sub = _noise_sample(F.shape[1], random_state)
    noise = _noise_per_feature(F if sub is None else F[:, sub], x, threads=threads)
    q32 = _feature_basis(mean, x, e0)
    X = work_array((F.shape[1], F.shape[0]), np.float32)  # (no huge-page compaction stall: txm_live.buffers)

    def project(sl: slice) -> None:
        # per block of pixels (the products are column-independent: identical to one product);
        # the pixel-major copy of an L2-sized block avoids striding through memory
        X[sl] = _whitened_rows(F[:, sl], q32, noise).T

    run_tiles(project, [slice(b, b + _PIXEL_BLOCK) for b in range(0, F.shape[1], _PIXEL_BLOCK)], threads)
    return X, mean, noise


def _noise_sample(n_pixels: int, random_state: int) -> np.ndarray | None:
    """Sorted pixel subsample of :func:`build_features`' noise estimate (``None``: all pixels)."""
    if n_pixels <= _NOISE_SAMPLES:
        return None
    return np.sort(np.random.default_rng(random_state).choice(n_pixels, _NOISE_SAMPLES, replace=False))


def _feature_basis(mean: np.ndarray, x: np.ndarray, e0: float) -> np.ndarray:
    """Orthonormal float32 basis (n_features, 3) of the mean spectrum, a constant and a line."""
    basis = np.stack([mean, np.ones_like(mean), (x - e0) / max(float(np.ptp(x)), 1.0)], axis=1)
    q, _ = np.linalg.qr(basis)
    return q.astype(np.float32)


def _whitened_rows(F: np.ndarray, q32: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """``F`` (n_features, n) minus its projection on ``q32``, divided by the noise per row."""
    R = q32 @ (q32.T @ F)
    np.subtract(F, R, out=R)
    R /= noise.astype(np.float32)[:, None]
    return R


def _whiten(F: np.ndarray, q32: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Pixel-major whitened features of the columns of ``F`` (as :func:`build_features`)."""
    X = np.empty((F.shape[1], F.shape[0]), dtype=np.float32)
    for b in range(0, F.shape[1], _PIXEL_BLOCK):
        X[b : b + _PIXEL_BLOCK] = _whitened_rows(F[:, b : b + _PIXEL_BLOCK], q32, noise).T
    return X


def _residual_noise(X: np.ndarray, pca: PcaResult, *, threads: int = 1) -> np.ndarray:
    """Per-row noise level (rms per feature) of ``X`` left after the retained components.

    ``|x - mean|^2 - |score|^2`` is the squared norm of the part of a row outside the retained
    components (orthonormal axes), which is noise spread over ``p - k`` features.
    """
    out = np.empty(X.shape[0], dtype=np.float64)

    def rows(sl: slice) -> None:
        out[sl] = _residual_rms(X[sl], pca.mean, pca.scores[sl])

    # (blocks of _PIXEL_BLOCK rows: cache-sized temporaries; each row's sums are the same for any block)
    run_tiles(rows, [slice(start, start + _PIXEL_BLOCK) for start in range(0, X.shape[0], _PIXEL_BLOCK)], threads)
    return _floor_noise(out)


def _residual_rms(X: np.ndarray, mean: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-row rms (float64) of ``X`` outside the components of ``scores`` (before the floor)."""
    p, k = X.shape[1], scores.shape[1]
    xc = X - mean
    r2 = np.einsum("ij,ij->i", xc, xc, dtype=np.float64) - np.einsum("ij,ij->i", scores, scores, dtype=np.float64)
    return np.sqrt(np.clip(r2, 0.0, None) / max(p - k, 1))


def _floor_noise(out: np.ndarray) -> np.ndarray:
    """``out`` raised to 1e-3 times its median positive value (1 when none is positive)."""
    positive = out[out > 0]
    floor = float(np.median(positive)) * 1e-3 if positive.size else 1.0
    return np.maximum(out, floor)


def _fit_clusterer(
    scores: np.ndarray, *, eps: float | None, min_samples: int | None, workers: int = -1
) -> tuple[np.ndarray, tuple[int, ...], float, int]:
    """Run :class:`txm_live.cluster.PhaseClusterer`.

    Returns the labels, the majority labels (the others are minority/outlier phases), and the
    eps and min_samples used.
    """
    from txm_live.cluster import PhaseClusterer

    clf = PhaseClusterer(eps=eps, min_samples=min_samples, split_minority=True, n_jobs=workers).fit(scores)
    labels = np.asarray(clf.labels_)
    ids = np.unique(labels[labels >= 0])
    pool = {int(v) for v in getattr(clf, "outlier_labels_", ())}
    majority = tuple(int(i) for i in ids if int(i) not in pool)
    eps_used = float(getattr(clf, "eps_", eps if eps is not None else float("nan")))
    ms_used = int(getattr(clf, "min_samples_", min_samples if min_samples is not None else 0))
    return labels, majority, eps_used, ms_used


def _row_tiles(H: int, W: int, n_rows: int) -> list[slice]:
    """Bands of image rows whose ``n_rows x pixels`` float32 block stays near :data:`_CHUNK_BYTES`
    (the pixel tiles of the normalization, in process and on Dask workers alike).

    Every band but the last has the same number of rows (a file chunked by those rows is read
    band by band), and the last one is nearly as tall: the bands are as few as that block size
    allows and as even as a common height makes them (at 602 x 643 x 641: 15 x 38 + 32 rows,
    not 15 x 40 + 2, so two threads or workers get 304 and 298 rows, not 320 and 282).
    """
    step = max(1, int(_CHUNK_BYTES // (4 * max(n_rows, 1) * max(W, 1))))
    step = -(-H // -(-H // step)) if H > 0 else step  # same number of bands, as even as possible
    return [slice(r, min(r + step, H)) for r in range(0, H, step)]


def _pixel_bands(pix: np.ndarray, tiles: list[slice], W: int) -> list[slice]:
    """Ranges of the sorted flat pixel indices ``pix`` falling in each band of rows (non-empty)."""
    lo = np.searchsorted(pix, [t.start * W for t in tiles])
    hi = np.searchsorted(pix, [t.stop * W for t in tiles])
    return [slice(int(a), int(b)) for a, b in zip(lo, hi) if b > a]


def _pixel_chunks(n_pix: int, n_rows: int) -> list[slice]:
    """Pixel slices whose ``n_rows x chunk`` float32 block stays near :data:`_CHUNK_BYTES`."""
    step = max(1024, int(_CHUNK_BYTES // (4 * max(n_rows, 1))))
    return [slice(i, min(i + step, n_pix)) for i in range(0, n_pix, step)]


def _window_phase_stats(
    E: np.ndarray,
    Y2: np.ndarray,
    window: EdgeWindow,
    method: str,
    pix: np.ndarray,
    lab: np.ndarray,
    n_phases: int,
    *,
    athena: tuple[np.ndarray, np.ndarray] | None = None,
    post_order: int | None = None,
    finite: np.ndarray | None = None,
    threads: int = 1,
    reference_pixels: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and standard deviation of the normalized spectra of each phase over the window.

    With ``athena=(pre_coefficients, edge_step)`` of the pixels ``pix`` the per-phase moments
    of the normalized spectra ``(mu - c0 - c1 (E - e0)) / step`` come from matrix products with
    the raw block (:func:`_athena_phase_moments`, one streaming pass; ``finite`` marks the
    pixels of ``Y2`` whose spectra are all finite, ``threads`` the threads of that pass,
    ``reference_pixels`` the pixels of its reference spectrum, default
    :data:`_REFERENCE_PIXELS`); otherwise the pixels are normalized again in pixel chunks (normalization
    is per pixel, so a subset normalizes exactly as in the full image). No normalized copy of
    the whole window is ever held.
    """
    from txm_live.normalize import normalize_window

    n_e = E.size
    if athena is not None:
        counts = _phase_counts(lab, n_phases)
        c, step = athena
        mean, std = _athena_phase_moments(
            E - window.e0, Y2, pix, lab, n_phases, c[0], c[1], 1.0 / step, finite=finite, threads=threads,
            reference_pixels=reference_pixels,
        )
        return mean, std, counts
    onehot, counts = _onehot(lab, n_phases)
    s1 = np.zeros((n_e, n_phases))
    s2 = np.zeros((n_e, n_phases))
    # generic path: normalize pixel chunks again (float64 sums of values and squares)
    for sl in _pixel_chunks(pix.size, n_e):
        nz = normalize_window(
            E, np.take(Y2, pix[sl], axis=1), window, method=method, post_order=post_order
        ).norm.astype(np.float64)
        oh = onehot[sl].astype(np.float64)
        s1 += nz @ oh
        s2 += (nz * nz) @ oh
    mean = (s1 / counts).T
    var = np.clip(s2 / counts - (s1 / counts) ** 2, 0.0, None).T
    return mean, np.sqrt(var), counts


#: Pixel span and energy rows of one float32 chunk of :func:`_athena_phase_moments`
#: (128 x 2048 x 4 B = 1 MB; rows of 8 kB keep the reads from memory streaming), and the pixels
#: of its reference spectrum (it only centres the float32 differences: 256 scattered columns are
#: gathered in ~3 ms where 4096 took ~50 ms, and the moments move by ~2e-7 of the spread). The
#: rows do not change the sums (each energy is its own); the span does (float32 sums over its
#: pixels). 128 rows, not 32: each chunk is seven numpy calls, and each call gives up and takes
#: back the GIL; with two threads the ~30 000 handoffs of 32-row chunks serialized them (full-size
#: L3: 0.66 s with 2 threads against 0.49 s with one; with 128 rows 0.23-0.29 s against 0.44 s).
_MOMENT_PIXELS = 2048
_MOMENT_ROWS = 128
_REFERENCE_PIXELS = 256
#: Groups of pixel spans of :func:`_athena_phase_moments` (summed in order; independent of the threads).
_MOMENT_GROUPS = 8


def _athena_phase_moments(
    x: np.ndarray,
    Y2: np.ndarray,
    pix: np.ndarray,
    lab: np.ndarray,
    n_phases: int,
    c0: np.ndarray,
    c1: np.ndarray,
    g: np.ndarray,
    *,
    finite: np.ndarray | None = None,
    threads: int = 1,
    reference_pixels: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-phase mean and standard deviation (P, n_e) of ``z = (y - c0 - c1 x) g`` over the
    pixels ``pix`` (sorted, phase ``lab``) of ``Y2`` (n_e, n_pixels), in one pass over ``Y2``.

    ``z`` is linear in the raw spectra ``y``. With a reference spectrum ``rho`` (the mean ``z``
    of at most ``reference_pixels`` (default :data:`_REFERENCE_PIXELS`) pixels spread over ``pix``;
    its columns are gathered from the whole block, so a row tile of a Dask worker takes fewer),
    ``z - rho = g d`` with
    ``d = y - [1, x, rho] . [c0, c1, 1/g]``: a rank-3 product subtracted from the raw block.
    Per chunk of :data:`_MOMENT_ROWS` energies x :data:`_MOMENT_PIXELS` pixels,
    ``d`` is formed in float32 and two thin products of the one-hot phase weights ``w g`` and
    ``w g^2`` (phase-major, ``(P, pixels) @ d.T``) give ``sum w (z - rho)`` and
    ``sum w (z - rho)^2``, accumulated over chunks in float64. Centring on ``rho`` keeps ``d``
    at the scale of the spread, so float32 loses nothing that matters (relative error ~1e-6 of
    the spread). Spans whose pixels are all finite
    (``finite``) are used whole with zero weight outside ``pix``; others gather their ``pix``
    columns first (a masked pixel may hold NaN). The spans form :data:`_MOMENT_GROUPS`
    contiguous groups that ``threads`` threads take in turn; the groups' sums are added in
    group order, and BLAS runs on one thread (a multi-threaded OpenBLAS splits the 128-row
    products differently), so the result does not depend on ``threads`` or on the process it
    runs in (a Dask worker's BLAS is single-threaded).
    """
    n_e, n_pix = Y2.shape
    x = np.asarray(x, dtype=np.float64)
    # the float32 coefficients of the normalization, as the feature rows used them
    a32 = np.asarray(c0, dtype=np.float32)
    b32 = np.asarray(c1, dtype=np.float32)
    g32 = np.asarray(g, dtype=np.float32)
    a, b, gg = (v.astype(np.float64) for v in (a32, b32, g32))
    P = n_phases
    Pp = -(-P // 4) * 4  # OpenBLAS is fastest for thin products of N = 4 columns
    n_ref = _REFERENCE_PIXELS if reference_pixels is None else max(1, int(reference_pixels))
    ref = np.linspace(0, pix.size - 1, min(n_ref, pix.size)).astype(np.int64)
    zr = np.empty((n_e, ref.size))
    band = max(1, -(-n_e // threads))
    cols = pix[ref]
    # (indexing gathers these few scattered columns ~2x faster than np.take)
    run_tiles(lambda r: np.copyto(zr[r], Y2[r][:, cols]), [slice(r, r + band) for r in range(0, n_e, band)], threads)
    zr -= a[ref]
    zr -= np.outer(x, b[ref])
    zr *= gg[ref]
    rho = zr.mean(axis=1)
    x3 = np.stack([np.ones(n_e), x, rho], axis=1).astype(np.float32)  # (n_e, 3)
    coef = np.stack([a32, b32, (1.0 / gg).astype(np.float32)])  # (3, n) per pixel of ``pix``
    hot = np.arange(Pp)[:, None] == lab  # (Pp, n)
    w1 = hot * g32  # (Pp, n) float32
    w2 = hot * (g32 * g32)
    spans = [slice(i, min(i + _MOMENT_PIXELS, n_pix)) for i in range(0, n_pix, _MOMENT_PIXELS)]
    lo = np.searchsorted(pix, [c.start for c in spans])
    hi = np.searchsorted(pix, [c.stop for c in spans])
    busy = [i for i in range(len(spans)) if hi[i] > lo[i]]
    # a fixed number of groups whatever ``threads``: the threads pull them as they go (a thread
    # slowed by the machine's other work does not hold the others up) and the sums are the same
    # for any number of threads
    n_groups = max(1, min(_MOMENT_GROUPS, len(busy)))
    groups = [busy[k * len(busy) // n_groups : (k + 1) * len(busy) // n_groups] for k in range(n_groups)]

    def run(k: int) -> np.ndarray:
        acc = np.zeros((2, Pp, n_e))
        buf = np.empty((_MOMENT_ROWS, _MOMENT_PIXELS), dtype=np.float32)
        cfull = np.zeros((3, _MOMENT_PIXELS), dtype=np.float32)
        wfull = np.zeros((2, Pp, _MOMENT_PIXELS), dtype=np.float32)
        t = np.empty((Pp, _MOMENT_ROWS), dtype=np.float32)
        for i in groups[k]:
            ch = spans[i]
            sel = slice(lo[i], hi[i])
            if finite is not None and finite[ch].all():  # whole span, zero weight off ``pix``
                src = Y2[:, ch]
                m = ch.stop - ch.start
                local = pix[sel] - ch.start
                cm, wm = cfull[:, :m], wfull[:, :, :m]
                cm[:] = 0.0
                wm[:] = 0.0
                cm[:, local] = coef[:, sel]
                wm[0][:, local] = w1[:, sel]
                wm[1][:, local] = w2[:, sel]
            else:  # a masked pixel may hold NaN: gather the span's ``pix`` columns
                src = np.take(Y2[:, ch], pix[sel] - ch.start, axis=1)
                m = src.shape[1]
                cm, wm = coef[:, sel], np.stack([w1[:, sel], w2[:, sel]])
            for r0 in range(0, n_e, _MOMENT_ROWS):  # row bands: long contiguous reads
                r1 = min(r0 + _MOMENT_ROWS, n_e)
                d = buf[: r1 - r0, :m]
                np.matmul(x3[r0:r1], cm, out=d)
                np.subtract(src[r0:r1], d, out=d)
                tt = t[:, : r1 - r0]
                np.matmul(wm[0], d.T, out=tt)
                acc[0, :, r0:r1] += tt
                np.multiply(d, d, out=d)
                np.matmul(wm[1], d.T, out=tt)
                acc[1, :, r0:r1] += tt
        return acc

    with limit_blas(1):  # one-thread products, whatever ``threads`` and wherever this runs: the same sums
        parts = map_ordered(run, list(range(len(groups))), threads)
    S = parts[0]
    for part in parts[1:]:  # in group order
        S = S + part
    counts = np.bincount(lab, minlength=P).astype(np.float64)
    m1 = S[0, :P].T / counts
    mean = rho[:, None] + m1
    var = np.clip(S[1, :P].T / counts - m1 * m1, 0.0, None)
    return mean.T, np.sqrt(var).T


def _phase_counts(lab: np.ndarray, n_phases: int) -> np.ndarray:
    """Pixels per phase (int64), all > 0."""
    counts = np.bincount(lab, minlength=n_phases).astype(np.int64)
    if np.any(counts == 0):
        raise ValueError("every phase needs at least one pixel")
    return counts


def _onehot(lab: np.ndarray, n_phases: int) -> tuple[np.ndarray, np.ndarray]:
    """One-hot matrix (n_pixels, n_phases) float32 and the counts per phase (all > 0)."""
    counts = _phase_counts(lab, n_phases)
    onehot = np.zeros((lab.size, n_phases), dtype=np.float32)
    onehot[np.arange(lab.size), lab] = 1.0
    return onehot, counts


def _accumulate(sub: np.ndarray, onehot: np.ndarray, s1: np.ndarray, s2: np.ndarray, ref: np.ndarray) -> None:
    """Per-phase sums of ``sub`` (rows x pixels, float32) and of its squares about ``ref``.

    One matrix product per sum. The squares are taken about the per-row mean ``ref`` of all
    pixels, which avoids the cancellation of ``E[x^2] - E[x]^2`` in float32.
    """
    s1[:] = sub @ onehot
    ref[:] = s1.sum(axis=1) / sub.shape[1]
    sub -= ref[:, None].astype(sub.dtype)
    np.multiply(sub, sub, out=sub)
    s2[:] = sub @ onehot


def _finish(s1: np.ndarray, s2: np.ndarray, ref: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = s1 / counts
    var = np.clip(s2 / counts - (mean - ref[:, None]) ** 2, 0.0, None)
    return mean.T, np.sqrt(var).T


def _phase_sums(
    norm2: np.ndarray, pix: np.ndarray, lab: np.ndarray, n_phases: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-phase mean and standard deviation of the columns ``pix`` of ``norm2`` (n_e, n_pix).

    Chunked over energies with one-hot matrix products: no per-pixel loop, temporaries of
    ``_ROW_CHUNK x len(pix)``.
    """
    n_e = norm2.shape[0]
    onehot, counts = _onehot(lab, n_phases)
    s1 = np.empty((n_e, n_phases))
    s2 = np.empty((n_e, n_phases))
    ref = np.empty(n_e)
    for r0 in range(0, n_e, _ROW_CHUNK):
        r = slice(r0, r0 + _ROW_CHUNK)
        sub = np.take(norm2[r], pix, axis=1).astype(np.float32, copy=False)
        _accumulate(sub, onehot, s1[r], s2[r], ref[r])
    mean, std = _finish(s1, s2, ref, counts)
    return mean, std, counts


def _phase_means(norm2: np.ndarray, pix: np.ndarray, lab: np.ndarray, n_phases: int, *, threads: int = 1) -> np.ndarray:
    """Per-phase mean (n_phases, n_e) of the columns ``pix`` of ``norm2``: the mean of
    :func:`_phase_sums` (same float32 products per chunk of :data:`_ROW_CHUNK` rows, so the
    values are identical) without its second moments.

    When ``pix`` holds every column in order (every clustered pixel got a phase) the chunks are
    used in place instead of gathered. The chunks are independent products, so ``threads``
    threads share them without changing a bit.
    """
    n_e, n = norm2.shape
    onehot, counts = _onehot(lab, n_phases)
    every = pix.size == n and (n == 0 or (int(pix[0]) == 0 and int(pix[-1]) == n - 1))  # sorted, unique
    s1 = np.empty((n_e, n_phases))

    def chunk(r: slice) -> None:
        sub = norm2[r] if every else np.take(norm2[r], pix, axis=1)
        s1[r] = sub.astype(np.float32, copy=False) @ onehot

    run_tiles(chunk, [slice(r0, r0 + _ROW_CHUNK) for r0 in range(0, n_e, _ROW_CHUNK)], threads)
    return (s1 / counts).T


def _check_inputs(
    energies: np.ndarray, block: np.ndarray, window: EdgeWindow, valid: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if not isinstance(window, EdgeWindow):
        raise ValueError(f"window must be an EdgeWindow, got {type(window).__name__}")
    energies = np.asarray(energies, dtype=np.float64)
    if energies.ndim != 1:
        raise ValueError(f"energies must be 1-D, got shape {energies.shape}")
    if not np.all(np.isfinite(energies)):
        raise ValueError("energies must be finite")
    if not hasattr(block, "dask"):  # a dask array stays lazy (read by the workers)
        block = np.asarray(block)
    if block.ndim != 3 or block.shape[0] != energies.size:
        raise ValueError(
            f"block must be energy-major (n_energies={energies.size}, H, W), got shape {block.shape}"
        )
    if not np.issubdtype(block.dtype, np.floating):
        raise ValueError(f"block must be a float array of optical density, got dtype {block.dtype}")
    if valid is not None:
        valid = np.asarray(valid)
        if valid.shape != block.shape[1:] or valid.dtype != bool:
            raise ValueError(f"valid must be a bool array of shape {block.shape[1:]}, got {valid.dtype} {valid.shape}")
    return energies, block, valid


# ----------------------------------------------------------------------------------------------
# public API


def analyze_edge(
    energies: np.ndarray,
    block: np.ndarray,
    *,
    window: EdgeWindow,
    valid: np.ndarray | None = None,
    method: str = "athena",
    post_order: int | None = None,
    jump_significance: float = DEFAULT_JUMP_SIGNIFICANCE,
    feature_range: tuple[float, float] | None = None,
    n_components: int | None = None,
    max_components: int = 10,
    pca_noise_margin: float = 2.5,
    eps: float | None = None,
    min_samples: int | None = None,
    snr_threshold: float | None = None,
    spatial_filter: bool = True,
    refine: bool = True,
    random_state: int = 0,
    progress: Callable[[str], None] | None = None,
    client: object = None,
    timeout: float | None = None,
    threads: int = DEFAULT_THREADS,
) -> PhaseAnalysis:
    """Phase map of one absorption edge from an energy-major block of optical density.

    Parameters
    ----------
    energies : ndarray, shape (n_e,)
        Energies (eV) of the rows of ``block``; energies outside the window are ignored.
    block : ndarray of float32, shape (n_e, H, W)
        Optical density ``-ln(I / I0)``, energy-major (one frame per row), registered.
    window : EdgeWindow
        The edge: ``e0`` and the pre/post-edge ranges of the normalization.
    valid : ndarray of bool, shape (H, W), optional
        Pixels usable at all energies (e.g. inside every registered frame). Others are masked.
    method : {"athena", "mback"}
        Normalization (:func:`txm_live.normalize.normalize_window`).
    post_order : int, optional
        Athena post-edge polynomial order (0 constant, 1 line, 2 quadratic). Default:
        ``window.post_order``, else the rule of :func:`txm_live.edges.choose_post_order`
        (from the post-edge span relative to e0 and the number of points); the choice is
        recorded in ``notes``.
    jump_significance : float
        Sample mask: a pixel is clustered only if its edge step at e0 exceeds this many times
        its own standard error (:attr:`txm_live.normalize.Normalized.edge_step_error`: the
        pixel's pre-edge noise propagated through both fits, so it accounts for the point counts
        and for how far the fits extrapolate to e0). Blank beam has no edge, so its steps
        scatter about 0 within their error. The error uses the pixel's own pre-edge noise, an
        estimate with ``n_pre - 2`` degrees of freedom, so the ratio of a blank pixel follows
        Student's t, not a Gaussian: measured 0.1-0.3 % of the background above 5 (t with 5-7
        dof: 0.08-0.2 %), not the Gaussian 3e-7. With a joint window the group's edge step and
        error decide (:func:`txm_live.edges.join_windows`). The edge-step SNR mask
        (``snr_threshold``) stays as a second guard.
    feature_range : (float, float), optional
        Energies relative to ``e0`` (eV) whose normalized absorption is clustered. Default:
        ``window.feature_range`` (-20 .. +60 eV at hard X-rays, scaled with the edge below
        6 keV, :attr:`txm_live.edges.EdgeWindow.feature_range`).
    n_components : int, optional
        Principal components clustered; by default those above the noise floor
        (Marchenko-Pastur, :func:`~txm_live.decompose.reduce_pca`).
    max_components : int
        Upper bound of the automatic choice.
    pca_noise_margin : float
        A component is clustered when its eigenvalue exceeds this factor times the
        Marchenko-Pastur edge of the noise. 2.5 (stricter than :func:`reduce_pca`'s generic
        1.5) because registration, magnification resampling and the point-spread function make
        TXM noise spatially and spectrally coloured: their weak, smooth components (eigenvalues
        ~2x the white-noise floor in the simulated beamline) carry no chemistry and blur the
        phases when clustered.
    eps, min_samples : optional
        DBSCAN parameters; estimated from the data by default
        (:func:`txm_live.cluster.estimate_dbscan_params`).
    snr_threshold : float, optional
        Minimum edge-step SNR of a clustered pixel; automatic by default
        (:func:`txm_live.snr.snr_mask`).
    spatial_filter : bool
        Denoise the principal-component scores with an edge-preserving 3 x 3 sigma filter
        (:func:`sigma_filter`, :data:`SIGMA_FILTER_PASSES` = 2 passes) before clustering: a
        neighbour is averaged in only when its scores agree with the pixel's within their noise,
        so phase boundaries and one-pixel features survive while noise inside a phase drops (up
        to 3x per pass). Labels stay per pixel.
    refine : bool
        Find the minority phases with a robust Gaussian mixture seeded by the DBSCAN majority
        phases, keep only those whose pixels are not two-phase mixtures, and assign every pixel
        to its dominant phase (:func:`refine_phases`). ``False`` keeps the clusterer's phases.
    random_state : int
        Seed of the randomized parts.
    progress : callable, optional
        Called with the name of each stage when it starts.
    client : dask.distributed.Client, optional
        Run the analysis on bands of image rows on the workers of this Dask cluster
        (:mod:`txm_live.tiled_edge`): the bands and every per-pixel intermediate stay on the
        workers, the global steps are reductions (feature mean, noise sample, PCA Gram matrices
        added in band order, sigma filter with halo rows, per-phase sums), and the clustering
        runs here on the gathered scores. The labels are identical to ``client=None``. ``block``
        may then be a dask array: persisted in chunks of the row bands (used in place) or lazy,
        e.g. over the run's HDF5 files (:func:`txm_live.distributed.hdf5_block`, read by the
        workers). A worker lost mid-analysis (:class:`~txm_live.errors.WorkerLostError`): the
        edge is analysed again once on the remaining workers (a note says so); a second loss
        raises.
    timeout : float, optional
        With ``client``: seconds to wait for a tile before raising
        :class:`~txm_live.errors.DistributedError`.
    threads : int
        Threads of the in-process analysis (default :data:`DEFAULT_THREADS` = 1): the two passes
        over the block (normalization and the per-phase spectra) run on pixel tiles in this many
        threads (BLAS stays single-threaded in each). 1 is gentle
        with the cores acquisition needs; on an analysis server give it more. With ``client``,
        the neighbour queries of the clusterer and of the refinement, which run here, use this
        many threads while the workers wait.
        The result does not depend on it (labels identical).

    Returns
    -------
    PhaseAnalysis
        An :class:`~txm_live.results.EdgeResult` (labels ``-1`` where masked or left unassigned,
        phases in the stable order described in the module docstring, timings per stage:
        ``select``, ``normalize``, ``snr``, ``features``, ``pca``, ``cluster``, ``summarize``,
        ``total``) plus the white-line and majority-score maps.

    Raises
    ------
    ValueError
        Malformed inputs (the message names the parameter).
    InsufficientDataError
        Too few energies in the pre-edge, post-edge or feature range, or fewer than
        :data:`MIN_PIXELS` pixels passing the SNR mask.

    Notes
    -----
    Memory: the block is not copied when ``energies`` are increasing. Pixels are normalized in
    one fused pass (:func:`txm_live.normalize.athena_features`, cache-sized chunks) and only
    the edge step, the noise, the pre-edge line and the feature rows are kept
    (``n_features x H W`` float32, 0.12 GB at 602 x 643 with 81 features); the per-phase means
    and spreads over the whole window come from a second streaming pass of thin matrix products
    with the raw block (no normalized copy). Peak extra memory at full size is ~0.5 GB, not
    another copy of the cube. BLAS runs single-threaded inside this function
    (``threadpoolctl``); ``threads`` parallelizes the two passes over the block.
    """
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    threads = int(threads)
    run = _analyze_edge
    if client is not None:  # a worker lost mid-analysis: analysed again once on the others
        from txm_live.tiled_edge import retry_lost_worker
        from txm_live.worker_allocator import prepare_workers

        prepare_workers(client)

        run = retry_lost_worker(_analyze_edge, client, what=window.name, timeout=timeout)
    with limit_blas(_BLAS_THREADS):
        return run(
            energies, block, window=window, valid=valid, method=method, post_order=post_order,
            jump_significance=jump_significance, feature_range=feature_range,
            n_components=n_components, max_components=max_components, pca_noise_margin=pca_noise_margin,
            eps=eps, min_samples=min_samples,
            snr_threshold=snr_threshold, spatial_filter=spatial_filter, refine=refine, random_state=random_state,
            progress=progress, client=client, timeout=timeout, threads=threads,
        )


def _analyze_edge(
    energies: np.ndarray,
    block: np.ndarray,
    *,
    window: EdgeWindow,
    valid: np.ndarray | None,
    method: str,
    post_order: int | None,
    jump_significance: float,
    feature_range: tuple[float, float] | None,
    n_components: int | None,
    max_components: int,
    pca_noise_margin: float,
    eps: float | None,
    min_samples: int | None,
    snr_threshold: float | None,
    spatial_filter: bool,
    refine: bool,
    random_state: int,
    progress: Callable[[str], None] | None,
    client: object = None,
    timeout: float | None = None,
    threads: int = 1,
) -> PhaseAnalysis:
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    energies, block, valid = _check_inputs(energies, block, window, valid)
    if feature_range is None:
        feature_range = window.feature_range
    f_lo, f_hi = (float(v) for v in feature_range)
    if not f_lo < f_hi:
        raise ValueError(f"feature_range must satisfy feature_range[0] < feature_range[1], got {feature_range}")
    if method not in ("athena", "mback"):
        raise ValueError(f"method must be 'athena' or 'mback', got {method!r}")
    if post_order is not None and (isinstance(post_order, bool) or post_order not in (0, 1, 2)):
        raise ValueError(f"post_order must be None, 0, 1 or 2, got {post_order!r}")
    if not (np.isfinite(jump_significance) and jump_significance >= 0):
        raise ValueError(f"jump_significance must be a non-negative number, got {jump_significance!r}")

    def stage(name: str) -> float:
        if progress is not None:
            progress(name)
        return time.perf_counter()

    # 1. select ---------------------------------------------------------------------------
    t = stage("select")
    E, Y = _select_window(energies, block, window)
    nw = window.normalization  # a joint window is normalized on its group's ranges
    n_pre = _count_in(E, nw.e0, nw.pre)
    n_post = _count_in(E, nw.e0, nw.post)
    n_feat = _count_in(E, window.e0, (f_lo, f_hi))
    if n_pre < MIN_PRE_POINTS or n_post < MIN_POST_POINTS or n_feat < MIN_FEATURE_ENERGIES:
        raise InsufficientDataError(
            f"{window.name}: too few energies in the window [{window.start:.1f}, {window.end:.1f}] eV: "
            f"{n_pre} in the pre-edge range {nw.pre} (need {MIN_PRE_POINTS}), {n_post} in the "
            f"post-edge range {nw.post} (need {MIN_POST_POINTS}), {n_feat} in the feature range "
            f"{(f_lo, f_hi)} (need "
            f"{MIN_FEATURE_ENERGIES}); got {energies.size} energies in [{energies.min():.1f}, "
            f"{energies.max():.1f}] eV"
        )
    H, W = Y.shape[1:]
    notes: list[str] = []
    if method == "athena":
        post_order = resolve_post_order(E, window, post_order)
        e_post = E[(E >= nw.e0 + nw.post[0]) & (E <= nw.e0 + nw.post[1])]
        notes.append(
            f"post-edge model: {_POST_MODELS[post_order]} ({e_post.size} energies over "
            f"{float(np.ptp(e_post)):.1f} eV)"
        )
    if window.joint is not None:
        notes.append(
            f"normalized jointly with {nw.name} (txm_live.edges.join_windows): pre-edge "
            f"[{nw.start:.1f}, {nw.e0 + nw.pre[1]:.1f}] eV, edge step at {nw.e0:.1f} eV from the post-edge "
            f"[{nw.e0 + nw.post[0]:.1f}, {nw.end:.1f}] eV"
        )
    timings["select"] = time.perf_counter() - t

    # 2. normalize: pixel chunks, keeping only edge step, noise and the feature rows -------
    t = stage("normalize")
    if client is None and hasattr(Y, "dask"):
        Y = np.asarray(Y)
    Y2 = Y.reshape(E.size, -1) if client is None else None  # a view
    n_pix = H * W
    fsel = np.flatnonzero((E >= window.e0 + f_lo) & (E <= window.e0 + f_hi))
    f_rows = slice(int(fsel[0]), int(fsel[-1]) + 1)
    Ef = E[f_rows]
    tiles = _row_tiles(H, W, E.size)
    tile_args = (E, window, method, f_rows, post_order)
    if client is None:
        edge_step = np.empty(n_pix, dtype=np.float32)
        pre_noise = np.empty(n_pix, dtype=np.float32)
        step_z = np.empty(n_pix, dtype=np.float32)
        pre_coef = np.empty((2, n_pix), dtype=np.float32)
        feat_all = work_array((Ef.size, n_pix), np.float32)  # (see txm_live.buffers)
        finite = np.empty(n_pix, dtype=bool)
    if client is None and method == "athena":
        # one fused pass over the block, written straight into the per-pixel arrays
        def athena_tile(rs: slice) -> None:
            sl = slice(rs.start * W, rs.stop * W)
            with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # those are masked
                athena_window_features(
                    E, Y2[:, sl], window, post_order=post_order, rows=f_rows,
                    out=EdgeFeatures(finite[sl], edge_step[sl], pre_noise[sl], step_z[sl], pre_coef[:, sl],
                                     feat_all[:, sl]),
                )

        run_tiles(athena_tile, tiles, threads)
    elif client is None:
        for i, rs in enumerate(tiles):
            res = normalize_tile(Y2[:, rs.start * W : rs.stop * W], *tile_args)
            sl = slice(tiles[i].start * W, tiles[i].stop * W)
            finite[sl], edge_step[sl], pre_noise[sl], step_z[sl], pre_coef[:, sl], feat_all[:, sl] = res
            del res
    else:  # the tiles and their feature rows stay on the workers (finite: features included)
        from txm_live.tiled_edge import TiledEdge

        tiled = TiledEdge(client, Y, tiles, what=window.name, timeout=timeout)
        finite, edge_step, pre_noise, step_z = tiled.normalize(tile_args)
    timings["normalize"] = time.perf_counter() - t

    # 3. snr ------------------------------------------------------------------------------
    from txm_live.snr import snr_mask

    t = stage("snr")
    sm = snr_mask(edge_step.reshape(H, W), pre_noise.reshape(H, W), threshold=snr_threshold)
    good = np.asarray(sm.mask, dtype=bool).ravel() & np.isfinite(edge_step) & finite
    with np.errstate(invalid="ignore"):
        significant = step_z > jump_significance  # NaN: never significant
    good &= significant
    if valid is not None:
        good &= valid.ravel()
    if client is None:
        # every feature finite: one sum per pixel, non-finite sums checked exactly (overflow)
        feat_ok = np.isfinite(feat_all.sum(axis=0))
        unsure = np.flatnonzero(~feat_ok & good)
        if unsure.size:
            feat_ok[unsure] = np.isfinite(feat_all[:, unsure]).all(axis=0)
        good &= feat_ok
    pix = np.flatnonzero(good)
    mask = np.zeros(n_pix, dtype=bool)
    mask[pix] = True
    mask = mask.reshape(H, W)
    timings["snr"] = time.perf_counter() - t
    if pix.size < MIN_PIXELS:
        raise InsufficientDataError(
            f"{window.name}: only {pix.size} pixels pass the edge-step SNR threshold "
            f"{float(sm.threshold):.2f} with an edge jump above {jump_significance:g} times its own "
            f"error (and the valid mask); at least {MIN_PIXELS} are needed. "
            "Check the flat field, the sample position, or lower snr_threshold."
        )

    # 4. features -------------------------------------------------------------------------
    t = stage("features")
    if client is None:
        # the clustered pixels' feature columns packed to the front of each row, in place: F is
        # a view (rows of n_pix stride) and no new n_features x n_clustered array is faulted in
        F = feat_all[:, : pix.size]
        step = max(1, -(-F.shape[0] // threads))
        run_tiles(lambda r: _pack_columns(feat_all[r], pix), [slice(r, r + step) for r in range(0, F.shape[0], step)],
                  threads)
        del feat_all
        X, mean_feat, _noise = build_features(F, Ef, e0=window.e0, random_state=random_state, threads=threads)
    else:
        tiled.features(pix, Ef, e0=window.e0, random_state=random_state)  # submitted; gathered with the PCA
    timings["features"] = time.perf_counter() - t

    # 5. pca ------------------------------------------------------------------------------
    t = stage("pca")
    pix_snr = np.asarray(sm.snr, dtype=np.float64).ravel()[pix]
    if client is not None:
        pca, scores = tiled.pca_scores(pix_snr, n_components=n_components, max_components=min(max_components, Ef.size),
                                       noise_margin=pca_noise_margin, spatial_filter=spatial_filter)
        mean_feat = tiled.mean_feature
    else:
        pca: PcaResult = reduce_pca(
            X,
            n_components=n_components,
            max_components=min(max_components, X.shape[1]),
            sample_noise=1.0 / np.clip(pix_snr, 1e-3, None),
            noise_margin=pca_noise_margin,
            random_state=random_state,
            threads=threads,
            row_chunks=_pixel_bands(pix, tiles, W),  # the bands a Dask run sums: identical axes
        )
        scores = pca.scores
        score_noise = _residual_noise(X, pca, threads=threads).astype(np.float32)
        if spatial_filter:
            scores, score_noise = sigma_filter(scores, pix, (H, W), score_noise, return_noise=True,
                                               threads=threads)
        del X
    timings["pca"] = time.perf_counter() - t

    # 6. cluster --------------------------------------------------------------------------
    t = stage("cluster")
    raw, majority, eps_used, ms_used = _fit_clusterer(scores, eps=eps, min_samples=min_samples, workers=threads)
    if refine:
        raw, majority, minority = refine_phases(scores, raw, majority, random_state=random_state, workers=threads)
    else:
        minority = tuple(int(i) for i in np.unique(raw[raw >= 0]) if int(i) not in majority)
    timings["cluster"] = time.perf_counter() - t

    # 7. summarize ------------------------------------------------------------------------
    t = stage("summarize")
    ids = np.unique(raw[raw >= 0])
    assigned = raw >= 0
    dense = np.searchsorted(ids, raw[assigned])  # 0..len(ids)-1
    n_phases = int(ids.size)
    # white-line map: mean normalized absorption within +-2 eV of the peak of the mean spectrum
    i_peak = int(np.argmax(mean_feat))
    near = np.flatnonzero(np.abs(Ef - Ef[i_peak]) <= 2.0 + 1e-9)
    white_line = np.full(n_pix, np.nan, dtype=np.float32)
    if client is not None:  # one round trip: per-phase sums, white line, window statistics (dense labels)
        fmean, white_line[pix], dense_stats = tiled.phase_summary(tile_args, np.flatnonzero(assigned), dense,
                                                                  n_phases, near)
    if n_phases:
        if client is None:
            fmean = _phase_means(F, np.flatnonzero(assigned), dense, n_phases, threads=threads)
        wl_height = fmean.max(axis=1)
        edge_pos = edge_positions(Ef, fmean)
    else:
        wl_height = np.zeros(0)
        edge_pos = np.zeros(0)
    level = edge_levels(edge_pos, edge_tolerance(Ef, window.e0))
    is_minor = np.isin(ids, np.asarray(minority, dtype=ids.dtype))
    major_idx = np.flatnonzero(~is_minor)[np.lexsort((wl_height[~is_minor], level[~is_minor]))]
    minor_idx = np.flatnonzero(is_minor)[np.lexsort((wl_height[is_minor], level[is_minor]))]
    order = np.concatenate([major_idx, minor_idx]).astype(np.int64)
    rank = np.empty(n_phases, dtype=np.int64)
    rank[order] = np.arange(n_phases)
    phase_of_pix = np.full(pix.size, -1, dtype=np.int64)
    phase_of_pix[assigned] = rank[dense]

    labels = np.full(n_pix, -1, dtype=np.int64)
    labels[pix] = phase_of_pix
    if n_phases:
        cols = pix[assigned]
        if client is None:
            athena = (pre_coef[:, cols], edge_step[cols]) if method == "athena" else None
            mean_spectra, spread, counts = _window_phase_stats(
                E, Y2, window, method, cols, phase_of_pix[assigned], n_phases, athena=athena, post_order=post_order,
                finite=finite, threads=threads,
            )
        else:  # computed on the workers per dense label: phase r is dense label order[r]
            mean_spectra, spread, counts = (v[order] for v in dense_stats)
    else:
        mean_spectra = np.zeros((0, E.size))
        spread = np.zeros((0, E.size))
        counts = np.zeros(0, dtype=np.int64)
    names = phase_names(
        wl_height[major_idx], level[major_idx], wl_height[minor_idx], level[minor_idx], edge_pos[order]
    )
    outlier_phases = tuple(range(major_idx.size, n_phases))

    if client is None:
        white_line[pix] = F[near].mean(axis=0)
    # majority score: projection on the line between the two majority means (feature range)
    score = np.full(n_pix, np.nan, dtype=np.float32)
    if major_idx.size >= 2:
        lo, hi = mean_spectra[0, f_rows], mean_spectra[1, f_rows]
        d = (hi - lo).astype(np.float32)
        dd = float(d @ d)
        if dd > 0:
            offset = float(d @ lo.astype(np.float32))
            if client is None:
                score[pix] = (d @ F - offset) / dd
            else:
                from txm_live.tiles import tile_line_score

                score[pix] = tiled.per_pixel(tile_line_score, d, offset, dd, step="majority score")
    if client is not None:
        tiled.release()
    timings["summarize"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start

    return PhaseAnalysis(
        edge=window.edge,
        e0=float(window.e0),
        energies=E.copy(),
        labels=labels.reshape(H, W),
        phase_names=names,
        mean_spectra=mean_spectra.astype(np.float64),
        spread=spread.astype(np.float64),
        counts=np.asarray(counts, dtype=np.int64),
        snr=np.asarray(sm.snr, dtype=np.float32).reshape(H, W),
        mask=mask,
        eps=eps_used,
        min_samples=ms_used,
        n_components=int(pca.n_components),
        outlier_phases=outlier_phases,
        timings=timings,
        white_line=white_line.reshape(H, W),
        majority_score=score.reshape(H, W),
        feature_range=(f_lo, f_hi),
        snr_threshold=float(sm.threshold),
        explained_variance_ratio=np.asarray(pca.explained_variance_ratio[: pca.n_components]),
        element=window.element,
        notes=tuple(notes),
    )
