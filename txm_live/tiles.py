"""Per-pixel stages of :func:`txm_live.phases.analyze_edge` on pixel tiles, for Dask workers.

A *tile* is a band of whole image rows, the same pixel chunks the in-process analysis uses
(:func:`txm_live.phases._pixel_chunks`), so every pixel goes through exactly the same arithmetic
in both: the per-pixel outputs, hence the labels, are identical.

* :func:`normalize_tile` (normalization, finiteness, the feature rows) is the per-tile stage of
  the in-process analysis too.
* The ``tile_*`` functions are the per-tile steps of the distributed analysis
  (:mod:`txm_live.tiled_edge` drives them): each takes what an earlier step left on the worker
  and returns either a per-pixel intermediate that stays there (features, whitened features,
  scores) or a small result for the client (per-pixel scalars, partial sums, a sample).
* :func:`feature_noise_part`, :func:`weighted_mean` and :func:`pca_of_parts` are the global
  steps between the per-tile ones, run as tasks that take every tile's partial result (in tile
  order) so that the workers chain the stages without a round trip to the client.
* :func:`tile_window_phase_stats` gives the per-phase mean and spread over the whole window
  of a tile's pixels (the in-process kernel); :func:`combine_phase_stats` pools the tiles.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from txm_live.denoise import SIGMA_FILTER_PASSES, sigma_filter
from txm_live.edges import EdgeWindow

__all__ = ["TileNorm", "normalize_tile", "tile_normalize", "combine_phase_stats"]


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


class TileNorm(NamedTuple):
    """What :func:`tile_normalize` leaves on a worker for one tile (one column per pixel)."""

    ok: np.ndarray  #: bool: finite spectrum and finite feature rows
    finite: np.ndarray  #: bool: finite spectrum (the raw block's columns; the phase moments read them)
    edge_step: np.ndarray  #: float32
    pre_noise: np.ndarray  #: float32
    step_z: np.ndarray  #: float32: edge step / its standard error
    pre_coefficients: np.ndarray  #: float32 (2, n): pre-edge line
    features: np.ndarray  #: float32 (n_features, n): normalized feature rows


def tile_normalize(Yt: np.ndarray, E: np.ndarray, window: EdgeWindow, method: str, f_rows: slice,
                   post_order: int | None = None) -> TileNorm:
    """:func:`normalize_tile` (the in-process kernel), kept on the worker; ``ok`` folds in the
    finiteness of the feature rows."""
    finite, step, noise, z, coef, feat = normalize_tile(Yt, E, window, method, f_rows, post_order)
    return TileNorm(finite & np.isfinite(feat).all(axis=0), finite, step, noise, z, coef, feat)


def tile_pixel_scalars(tn: TileNorm) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The per-pixel scalars the SNR mask needs (13 bytes per pixel)."""
    return tn.ok, tn.edge_step, tn.pre_noise, tn.step_z


def tile_take_features(tn: TileNorm, cols: np.ndarray) -> np.ndarray:
    """Feature rows of the clustered pixels ``cols`` of the tile, (n_features, n_cols) float32."""
    return np.take(tn.features, cols, axis=1)


def tile_feature_stats(F: np.ndarray, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum over the tile's pixels of every feature row (float64) and the columns ``sample`` of
    ``F`` (the tile's part of the noise-estimate pixel sample), in one task."""
    return F.sum(axis=1, dtype=np.float64), np.take(F, sample, axis=1)


def tile_whiten(F: np.ndarray, q32: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Whitened pixel-major features of the tile (:func:`txm_live.phases.build_features`)."""
    from txm_live.phases import _whiten

    return _whiten(F, q32, noise)


# -- global steps run as tasks: the workers chain them without a round trip to the client ------
def feature_noise_part(stats: list[tuple[np.ndarray, np.ndarray]], n_pixels: int, Ef: np.ndarray,
                       rows: slice) -> tuple[np.ndarray, np.ndarray]:
    """The mean feature spectrum and the noise spread of the interior feature rows ``rows``
    (:func:`txm_live.phases._noise_mad`; row 0 is the second feature) from all tiles'
    :func:`tile_feature_stats` in tile order: the sums added in that order, the medians over
    the concatenated 50 000-pixel sample (:func:`txm_live.phases.build_features`). One task per
    worker, each on its share of the rows, so the noise medians, the costliest global step of
    the chain, are split between the workers; :func:`tile_whiten_parts` joins the parts."""
    from txm_live.phases import _noise_mad

    x = np.asarray(Ef, dtype=np.float64)
    mean = np.sum([g[0] for g in stats], axis=0) / n_pixels
    band = slice(rows.start, rows.stop + 2)  # the rows and their neighbours
    return mean, _noise_mad(np.concatenate([g[1][band] for g in stats], axis=1), x[band])


def tile_whiten_parts(F: np.ndarray, parts: list[tuple[np.ndarray, np.ndarray]], Ef: np.ndarray,
                      e0: float) -> np.ndarray:
    """:func:`tile_whiten` with the basis and noise of the :func:`feature_noise_part` of every
    share of the rows (in row order): the values of the in-process
    :func:`txm_live.phases.build_features`."""
    from txm_live.phases import _feature_basis, _noise_from_mad

    x = np.asarray(Ef, dtype=np.float64)
    noise = _noise_from_mad(np.concatenate([p[1] for p in parts]), x)
    return tile_whiten(F, _feature_basis(parts[0][0], x, e0), noise)


def weighted_mean(parts: list[np.ndarray], total_weight: float) -> np.ndarray:
    """The PCA's weighted mean from the bands' :func:`txm_live.decompose.weighted_sum_part`,
    added in band order (as :func:`txm_live.decompose.reduce_pca` adds them in process)."""
    mean = np.zeros(parts[0].shape[0])
    for part in parts:
        mean += part
    mean /= total_weight
    return mean


def pca_of_parts(parts: list[np.ndarray], mean: np.ndarray, n_samples: int, *, n_components: int | None,
                 max_components: int, noise_margin: float) -> Any:
    """:func:`txm_live.decompose.pca_from_covariance` of the bands' Gram matrices
    (:func:`txm_live.decompose.covariance_part`) added in band order."""
    from txm_live.decompose import pca_from_covariance

    cov = np.zeros((mean.size, mean.size))
    for part in parts:
        cov += part
    cov /= max(n_samples - 1, 1)
    return pca_from_covariance(cov, mean, n_samples=n_samples, n_components=n_components,
                               max_components=max_components, noise_margin=noise_margin)


def tile_project(X: np.ndarray, pca: Any) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the tile's pixels and their residual rms outside the components (float64)."""
    from txm_live.phases import _residual_rms

    scores = pca.transform(X)
    return scores, _residual_rms(X, pca.mean, scores)


def tile_border(proj: tuple[np.ndarray, np.ndarray], cols: np.ndarray, W: int, n_rows: int) -> tuple:
    """What the client needs of a projected tile before the sigma filter, in one task: the
    smallest residual rms and the largest positive one (``nan`` when empty; the noise floor) and
    the tile's first and last :data:`txm_live.denoise.SIGMA_FILTER_PASSES` image rows (fewer when
    the tile is shorter; :func:`tile_halo_row` each, top to bottom: the halos of its neighbours)."""
    rms = proj[1]
    pos = rms[rms > 0]
    span = (float(rms.min()) if rms.size else np.nan, float(pos.max()) if pos.size else np.nan)
    m = min(SIGMA_FILTER_PASSES, n_rows)
    return (span, [tile_halo_row(proj, cols, W, r) for r in range(m)],
            [tile_halo_row(proj, cols, W, r) for r in range(n_rows - m, n_rows)])


def tile_rms(proj: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return proj[1]


def tile_halo_row(proj: tuple[np.ndarray, np.ndarray], cols: np.ndarray, W: int, row: int) -> tuple:
    """Scores, residual rms and in-tile columns of the clustered pixels of local image row ``row``."""
    lo, hi = np.searchsorted(cols, [row * W, (row + 1) * W])
    return proj[0][lo:hi], proj[1][lo:hi], cols[lo:hi] - row * W


def tile_scores(proj: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return proj[0]


def tile_sigma_filter(
    proj: tuple[np.ndarray, np.ndarray],
    cols: np.ndarray,
    n_rows: int,
    W: int,
    floor: float,
    above: list[tuple] | None,
    below: list[tuple] | None,
) -> np.ndarray:
    """:func:`txm_live.denoise.sigma_filter` of the tile's scores with halo rows on each side.

    ``above`` / ``below`` are the :func:`tile_halo_row` of the image rows just above and below
    the tile, top to bottom: :data:`txm_live.denoise.SIGMA_FILTER_PASSES` rows (each pass of the
    3 x 3 filter reads one row further), fewer only at the image border, where the in-process
    filter sees no pixel either (``None``: none). The tile is filtered as an image of its rows
    plus the halos and only its own pixels are kept: each of them sees exactly the neighbours it
    has in the whole image, at every pass, so the result equals the in-process filter's.
    """
    above = list(above or [])
    below = list(below or [])
    parts_s, parts_n, parts_p = [], [], []
    for i, h in enumerate(above):
        parts_s.append(h[0]), parts_n.append(h[1]), parts_p.append(h[2] + i * W)
    top = len(above)
    parts_s.append(proj[0]), parts_n.append(proj[1]), parts_p.append(cols + top * W)
    for i, h in enumerate(below):
        parts_s.append(h[0]), parts_n.append(h[1]), parts_p.append(h[2] + (top + n_rows + i) * W)
    scores = np.concatenate(parts_s)
    noise = np.maximum(np.concatenate(parts_n), floor).astype(np.float32)
    pixels = np.concatenate(parts_p)
    out = sigma_filter(scores, pixels, (top + n_rows + len(below), W), noise)
    first = sum(h[0].shape[0] for h in above)
    return out[first : first + proj[0].shape[0]]


def tile_phase_feature_sums(
    F: np.ndarray, idx: np.ndarray, lab: np.ndarray, n_phases: int, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-phase sums (n_features, P) float64 of the feature rows of the tile's pixels ``idx``
    (phase ``lab``), and the mean over the feature rows ``rows`` of every pixel of the tile (the
    white-line map), in one task."""
    onehot = np.zeros((lab.size, n_phases), dtype=np.float32)
    onehot[np.arange(lab.size), lab] = 1.0
    return (np.take(F, idx, axis=1) @ onehot).astype(np.float64), F[rows].mean(axis=0)


def tile_phase_summary(Yt: np.ndarray, tn: TileNorm, F: np.ndarray, idx: np.ndarray, cols: np.ndarray, lab: np.ndarray,
                       n_phases: int, rows: np.ndarray, E: np.ndarray, window: EdgeWindow, method: str,
                       post_order: int | None = None) -> tuple:
    """:func:`tile_phase_feature_sums` and :func:`tile_window_phase_stats` of one tile in one task
    (one task and one result per tile instead of two): ``idx`` index the tile's clustered
    pixels with a phase (columns of ``F``), ``cols`` are the same pixels in the tile, ``lab``
    their phases. Returns the per-phase feature sums, the white-line value of every clustered
    pixel of the tile and the tile's window statistics."""
    sums, white = tile_phase_feature_sums(F, idx, lab, n_phases, rows)
    return sums, white, tile_window_phase_stats(Yt, tn, E, window, method, cols, lab, post_order)


def tile_line_score(F: np.ndarray, d: np.ndarray, offset: float, dd: float) -> np.ndarray:
    """Position of every pixel on the line from one mean spectrum to another (majority score)."""
    return (d @ F - offset) / dd


def tile_window_phase_stats(Yt: np.ndarray, tn: TileNorm, E: np.ndarray, window: EdgeWindow, method: str,
                            cols: np.ndarray, lab: np.ndarray, post_order: int | None = None) -> tuple:
    """Per-phase mean, spread and count over the window of the tile's pixels ``cols`` (phase
    ``lab``), by the in-process :func:`txm_live.phases._window_phase_stats` (Athena: moments from
    the raw tile with the pre-edge lines and steps kept on the worker). Returns the phases
    present in the tile with their ``(mean, std)`` (P_t, n_e) and counts."""
    from txm_live.phases import _window_phase_stats

    present = np.unique(lab)
    local = np.searchsorted(present, lab)
    Y2 = np.asarray(Yt).reshape(E.size, -1)
    athena = (tn.pre_coefficients[:, cols], tn.edge_step[cols]) if method == "athena" else None
    # ``finite``: the raw spectra, as in process (a pixel whose feature rows overflow still has a
    # finite raw spectrum, so its span is read whole rather than gathered column by column)
    mean, std, counts = _window_phase_stats(E, Y2, window, method, cols, local, present.size, athena=athena,
                                            post_order=post_order, finite=tn.finite)
    return present, mean, std, counts


def combine_phase_stats(parts: list[tuple], n_phases: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and standard deviation (P, n_e) and counts over all tiles from the tiles'
    :func:`tile_window_phase_stats` (pooled: ``N var = sum n_t (var_t + (m_t - m)^2)``)."""
    n_e = parts[0][1].shape[1]
    counts = np.zeros(n_phases, dtype=np.int64)
    s1 = np.zeros((n_phases, n_e))
    for present, mean, _, n in parts:
        counts[present] += n
        s1[present] += n[:, None] * mean
    mean = s1 / counts[:, None]
    ss = np.zeros((n_phases, n_e))
    for present, m, sd, n in parts:
        ss[present] += n[:, None] * (sd * sd + (m - mean[present]) ** 2)
    return mean, np.sqrt(ss / counts[:, None]), counts
