"""L2 / L3 cross-check of two phase maps (Duan et al., Sci. Rep. 6, 34406 (2016), Fig. 3g).

:func:`compare_edges` matches the L2 phases to the L3 phases (Hungarian assignment on the pixel
contingency table) and measures how often the two edges agree, with the paper's difference
histograms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from txm_live.results import EdgeResult

__all__ = ["EdgeComparison", "compare_edges", "l2_l3_agreement", "match_phases"]


@dataclass(frozen=True)
class EdgeComparison:
    """Agreement of the L2 and L3 phase maps (Duan et al. 2016, Fig. 3g).

    Attributes
    ----------
    mapping : tuple of int
        ``mapping[j]`` is the L3 phase matched to L2 phase ``j`` (``-1``: unmatched).
    contingency : ndarray of int, shape (n_l3_phases, n_l2_phases)
        Pixels (unmasked at both edges) with L3 phase ``i`` and L2 phase ``j``.
    agreement : float
        Fraction of the pixels unmasked at both edges whose L2 phase, after the mapping, equals
        their L3 phase (``nan`` if no pixel is unmasked at both edges).
    n_compared : int
        Pixels unmasked at both edges.
    difference_bins : ndarray of int, shape (2 n_l3 - 1,)
        Phase-index differences ``mapped L2 phase - L3 phase`` counted by
        :attr:`difference_histograms` (``-(n-1) .. n-1``; unmatched L2 phases are not counted).
    difference_histograms : ndarray of int, shape (n_l3_phases, 2 n_l3 - 1)
        Row ``i``: histogram of the phase-index difference over the pixels of L3 phase ``i``
        (the paper's Fig. 3g: one bar at 0 means perfect agreement).
    score_bin_edges : ndarray, shape (n_bins + 1,)
        Bin edges of :attr:`score_histograms`.
    score_histograms : ndarray of int, shape (n_l3_phases, n_bins)
        Row ``i``: histogram over the pixels of L3 phase ``i`` of the pixel-wise difference of
        the continuous majority scores, L2 minus L3 (:attr:`PhaseAnalysis.majority_score`, each
        measured against the edge's own majority-phase means, so it is 0 for a pixel that sits
        at the same place between the phases at both edges). Empty (zero rows) when either
        result has no score map.
    score_difference_median : ndarray, shape (n_l3_phases,)
        Median of the score difference per L3 phase (``nan`` where undefined).
    """

    mapping: tuple[int, ...]
    contingency: np.ndarray
    agreement: float
    n_compared: int
    difference_bins: np.ndarray
    difference_histograms: np.ndarray
    score_bin_edges: np.ndarray
    score_histograms: np.ndarray
    score_difference_median: np.ndarray


def match_phases(l3_labels: np.ndarray, l2_labels: np.ndarray) -> tuple[tuple[int, ...], np.ndarray]:
    """Match L2 phases to L3 phases by pixel overlap (Hungarian assignment).

    Parameters
    ----------
    l3_labels, l2_labels : ndarray of int, shape (H, W)
        Phase maps (``-1`` masked) in the same detector frame.

    Returns
    -------
    mapping : tuple of int
        L3 phase of every L2 phase (``-1`` when unmatched: more L2 than L3 phases).
    contingency : ndarray of int, shape (n_l3, n_l2)
        Pixel counts over pixels unmasked in both maps.
    """
    a = np.asarray(l3_labels)
    b = np.asarray(l2_labels)
    if a.shape != b.shape:
        raise ValueError(f"l2_labels shape {b.shape} differs from l3_labels shape {a.shape}")
    n3 = int(a.max()) + 1 if a.size and a.max() >= 0 else 0
    n2 = int(b.max()) + 1 if b.size and b.max() >= 0 else 0
    both = (a >= 0) & (b >= 0)
    cont = np.zeros((n3, n2), dtype=np.int64)
    if n3 and n2:
        np.add.at(cont, (a[both], b[both]), 1)
    mapping = [-1] * n2
    if n3 and n2 and both.any():
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(-cont)
        for r, c in zip(rows, cols):
            mapping[int(c)] = int(r)
    return tuple(mapping), cont


def _n_phases(result: EdgeResult) -> int:
    lab = np.asarray(result.labels)
    top = int(lab.max()) + 1 if lab.size else 0
    return max(result.n_phases, top)


def compare_edges(l3: EdgeResult, l2: EdgeResult, *, score_bins: int = 81, score_range: float = 2.0) -> EdgeComparison:
    """Cross-check the L2 phase map against the L3 phase map.

    Parameters
    ----------
    l3, l2 : EdgeResult
        Analyses of the two edges of the same scan, labels in the same detector frame.
    score_bins : int
        Number of bins of the majority-score difference histograms.
    score_range : float
        The score histograms span ``[-score_range, score_range]``.

    Returns
    -------
    EdgeComparison

    Notes
    -----
    Phases are matched on the contingency table of the two label maps (pixels unmasked at both
    edges) by maximizing the matched overlap (``scipy.optimize.linear_sum_assignment``), so
    ``agreement`` is the best achievable one-to-one agreement; a phase found at one edge only
    stays unmatched and its pixels count as disagreeing. Two difference histograms are given
    (Duan et al. 2016, Fig. 3g): the phase-index difference (discrete) and the difference of
    the continuous majority scores (when both results carry them).
    """
    if not isinstance(l3, EdgeResult) or not isinstance(l2, EdgeResult):
        raise ValueError("l3 and l2 must be EdgeResult instances")
    if np.shape(l3.labels) != np.shape(l2.labels):
        raise ValueError(f"l2.labels shape {np.shape(l2.labels)} differs from l3.labels shape {np.shape(l3.labels)}")
    if score_bins < 1 or not score_range > 0:
        raise ValueError("score_bins must be >= 1 and score_range > 0")
    a = np.asarray(l3.labels).ravel()
    b = np.asarray(l2.labels).ravel()
    mapping, cont = match_phases(a, b)
    n3 = max(_n_phases(l3), cont.shape[0])
    if cont.shape[0] < n3:
        cont = np.vstack([cont, np.zeros((n3 - cont.shape[0], cont.shape[1]), dtype=np.int64)])
    both = (a >= 0) & (b >= 0)
    n_compared = int(np.count_nonzero(both))
    map_arr = np.asarray(mapping + (-1,), dtype=np.int64)  # index -1 -> last entry -> -1
    mapped = np.where(b >= 0, map_arr[np.where(b >= 0, b, -1)], -1)
    agree = both & (mapped == a)
    agreement = float(np.count_nonzero(agree)) / n_compared if n_compared else float("nan")

    bins = np.arange(-(max(n3, 1) - 1), max(n3, 1))
    counted = both & (mapped >= 0)
    diff = mapped[counted] - a[counted]
    hist = np.zeros((n3, bins.size), dtype=np.int64)
    if diff.size:
        np.add.at(hist, (a[counted], diff - bins[0]), 1)

    edges = np.linspace(-score_range, score_range, score_bins + 1)
    s3 = getattr(l3, "majority_score", None)
    s2 = getattr(l2, "majority_score", None)
    if s3 is not None and s2 is not None and np.shape(s3) == np.shape(l3.labels) and np.shape(s2) == np.shape(s3):
        ds = (np.asarray(s2, dtype=np.float64) - np.asarray(s3, dtype=np.float64)).ravel()
        ok = both & np.isfinite(ds)
        shist = np.zeros((n3, score_bins), dtype=np.int64)
        med = np.full(n3, np.nan)
        for p in range(n3):  # loop over phases (a handful), vectorized over pixels
            sel = ok & (a == p)
            if sel.any():
                shist[p] = np.histogram(np.clip(ds[sel], -score_range, score_range), bins=edges)[0]
                med[p] = float(np.median(ds[sel]))
    else:
        shist = np.zeros((0, score_bins), dtype=np.int64)
        med = np.full(n3, np.nan)
    return EdgeComparison(
        mapping=mapping,
        contingency=cont,
        agreement=agreement,
        n_compared=n_compared,
        difference_bins=bins,
        difference_histograms=hist,
        score_bin_edges=edges,
        score_histograms=shist,
        score_difference_median=med,
    )


def l2_l3_agreement(l3: EdgeResult, l2: EdgeResult) -> float:
    """Fraction of pixels unmasked at both edges whose matched L2 phase equals the L3 phase."""
    return compare_edges(l3, l2).agreement
