"""Edge-step signal-to-noise ratio per pixel and the mask of pixels worth clustering.

Background pixels (no sample) have an edge step of about zero, thin-sample pixels a small one;
both only add noise to the phase analysis. :func:`snr_mask` keeps the pixels whose edge step
stands clearly above their own noise, with a threshold found automatically from the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SnrMask", "edge_step_snr", "otsu_threshold", "snr_mask"]

#: Automatic thresholds never go below this SNR (a 3-sigma edge step).
MIN_AUTO_SNR = 3.0
#: Otsu's between-class / total variance ratio below which log-SNR is treated as one population.
MIN_SEPARATION = 0.75
#: log10(|SNR|) is clipped to this range before the histogram.
_LOG_RANGE = (-2.0, 4.0)


@dataclass(frozen=True)
class SnrMask:
    """Pixels kept for the phase analysis.

    Attributes
    ----------
    mask : ndarray of bool
        True where the pixel is kept (``snr >= threshold``, finite, and ``edge_step >= min_step``
        when given). Same shape as the inputs.
    snr : ndarray of float32
        Edge-step SNR per pixel; ``NaN`` where the edge step or the noise is not finite or the
        noise is not positive.
    threshold : float
        SNR threshold applied.
    n_kept : int
        Number of kept pixels.
    method : str
        How the threshold was chosen: ``"given"``, ``"otsu"`` (histogram split of log-SNR,
        above the floor) or ``"floor"`` (no clear split, or the split fell below
        :data:`MIN_AUTO_SNR`).
    separation : float
        Otsu's effectiveness (between-class over total variance of log10 SNR, 0..1); ``NaN``
        when the threshold was given.
    """

    mask: np.ndarray
    snr: np.ndarray
    threshold: float
    n_kept: int
    method: str = "otsu"
    separation: float = float("nan")

    @property
    def fraction_kept(self) -> float:
        """Fraction of all pixels that were kept."""
        return float(self.n_kept / max(self.mask.size, 1))


def edge_step_snr(edge_step: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """``edge_step / noise`` as float32, ``NaN`` where undefined (no warnings).

    Parameters
    ----------
    edge_step, noise : ndarray
        Same shape. ``noise`` is the per-energy-point noise of each pixel, e.g.
        :attr:`txm_live.normalize.Normalized.pre_edge_noise`.

    Returns
    -------
    ndarray of float32
    """
    edge_step = np.asarray(edge_step, dtype=np.float64)
    noise = np.asarray(noise, dtype=np.float64)
    if edge_step.shape != noise.shape:
        raise ValueError(f"noise must have the shape of edge_step {edge_step.shape}, got {noise.shape}")
    good = np.isfinite(edge_step) & np.isfinite(noise) & (noise > 0)
    snr = np.full(edge_step.shape, np.nan)
    np.divide(edge_step, noise, out=snr, where=good)
    return snr.astype(np.float32)


def otsu_threshold(values: np.ndarray, *, bins: int = 256) -> tuple[float, float]:
    """Otsu's two-class threshold of ``values`` and its effectiveness.

    Parameters
    ----------
    values : ndarray
        Finite values (any shape).
    bins : int
        Histogram bins.

    Returns
    -------
    threshold : float
        Value separating the two classes (upper edge of the last bin of the lower class).
    separation : float
        Between-class variance over total variance, in [0, 1]; 1 for two spikes, 2/pi ~ 0.64 for
        one Gaussian population.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size < 2 or not np.all(np.isfinite(values)):
        raise ValueError("values must hold at least 2 finite numbers")
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo, 0.0
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    p = hist / hist.sum()
    w0 = np.cumsum(p)
    m = np.cumsum(p * centres)
    mt = m[-1]
    w1 = 1.0 - w0
    valid = (w0 > 0) & (w1 > 0)
    between = np.zeros_like(w0)
    between[valid] = (mt * w0[valid] - m[valid]) ** 2 / (w0[valid] * w1[valid])
    k = int(np.argmax(between))
    total = float(np.sum(p * (centres - mt) ** 2))
    separation = float(between[k] / total) if total > 0 else 0.0
    return float(edges[k + 1]), separation


def snr_mask(
    edge_step: np.ndarray,
    noise: np.ndarray,
    *,
    threshold: float | None = None,
    min_step: float | None = None,
) -> SnrMask:
    """Mask of pixels with a clear edge step: background and thin-sample pixels are excluded.

    Parameters
    ----------
    edge_step : ndarray
        Edge step per pixel (:attr:`~txm_live.normalize.Normalized.edge_step`), e.g. shape (H, W).
    noise : ndarray
        Per-energy-point noise of each pixel, same shape
        (:attr:`~txm_live.normalize.Normalized.pre_edge_noise`).
    threshold : float, optional
        SNR threshold. ``None`` (default) chooses it automatically, see Notes.
    min_step : float, optional
        Also require ``edge_step >= min_step`` (optical density), e.g. to drop thin edges of the
        particle whatever their noise.

    Returns
    -------
    SnrMask

    Notes
    -----
    ``SNR = edge_step / noise`` where ``noise`` is the rms residual of the pre-edge line fit, i.e.
    the noise of *one* energy point of the pixel's spectrum (not the noise of the fitted step,
    which is smaller by about sqrt(number of points)). A pixel with SNR 10 thus has an edge step
    ten times the scatter of its individual points; physics.md quotes ~11 for the simulated
    particle at the default photon budget.

    Automatic threshold: Otsu's method on the histogram of ``log10(|SNR|)`` (clipped to
    [-2, 4]) over all finite pixels. The absolute value folds the background's negative fitted
    steps onto the positive ones, so the background is one population (|SNR| ~ 0-2, wider when
    flat-field structure fakes small steps) and the particle another (~5-20); in log space they
    are well separated. Pixels with negative steps are never kept (the threshold applies to the
    signed SNR). The Otsu split is used only when it is clear
    (effectiveness >= :data:`MIN_SEPARATION` = 0.75; one Gaussian population gives 0.64), and
    never below the floor :data:`MIN_AUTO_SNR` = 3. Otherwise (e.g. a field of view fully
    covered by sample) the floor alone is used, so a single population is not cut in half.

    Non-finite SNR (NaN edge step from :func:`~txm_live.normalize.normalize_athena`, zero or
    NaN noise, dead pixels) is never kept and does not enter the histogram. Memory: a few
    temporaries of the size of ``edge_step``.
    """
    edge_step = np.asarray(edge_step)
    noise = np.asarray(noise)
    if edge_step.ndim == 0:
        raise ValueError("edge_step must be an array of pixels, got a scalar")
    if not np.issubdtype(edge_step.dtype, np.number) or np.iscomplexobj(edge_step):
        raise ValueError(f"edge_step must be real numbers, got dtype {edge_step.dtype}")
    if not np.issubdtype(noise.dtype, np.number) or np.iscomplexobj(noise):
        raise ValueError(f"noise must be real numbers, got dtype {noise.dtype}")
    if threshold is not None:
        threshold = float(threshold)
        if not np.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold}")
    if min_step is not None:
        min_step = float(min_step)
        if not np.isfinite(min_step):
            raise ValueError(f"min_step must be finite, got {min_step}")
    snr = edge_step_snr(edge_step, noise)
    finite = np.isfinite(snr)

    separation = float("nan")
    if threshold is not None:
        method = "given"
    elif np.count_nonzero(finite) < 2:
        threshold, method = MIN_AUTO_SNR, "floor"
    else:
        s = np.abs(snr[finite].astype(np.float64))
        logs = np.full(s.shape, _LOG_RANGE[0])
        pos = s > 0
        logs[pos] = np.clip(np.log10(s[pos]), *_LOG_RANGE)
        split, separation = otsu_threshold(logs)
        if separation >= MIN_SEPARATION and 10.0**split > MIN_AUTO_SNR:
            threshold, method = float(10.0**split), "otsu"
        else:
            threshold, method = MIN_AUTO_SNR, "floor"

    mask = finite & (np.where(finite, snr, -np.inf) >= threshold)
    if min_step is not None:
        with np.errstate(invalid="ignore"):
            mask &= np.asarray(edge_step, dtype=np.float64) >= min_step
    return SnrMask(
        mask=mask,
        snr=snr,
        threshold=float(threshold),
        n_kept=int(np.count_nonzero(mask)),
        method=method,
        separation=separation,
    )
