"""Automatic DBSCAN parameters and the phase clusterer of txm-live.

:func:`estimate_dbscan_params` picks ``eps`` at the knee of the sorted k-distance curve (the
distance of each point to its ``min_samples``-th nearest neighbour, itself included), computed
for a random subsample against all points. :class:`PhaseClusterer` runs the exact
:func:`txm_live.dbscan.dbscan` with those parameters and turns its clusters into chemical
phases the way Duan et al. (Sci. Rep. 6, 34406, 2016) read them: large DBSCAN clusters are the
majority phases, and the good-SNR points DBSCAN leaves as noise are the minority ("outlier")
phase. Beyond the paper, genuinely distinct minority groups are split off as their own phases
when the data support it, and tiny clusters are folded into the outlier phase instead of
producing dozens of phases.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np
from scipy.spatial import cKDTree

from txm_live.dbscan import dbscan

__all__ = ["DbscanParams", "PhaseClusterer", "estimate_dbscan_params", "default_min_samples"]


@dataclass(frozen=True)
class DbscanParams:
    """DBSCAN parameters chosen from the data, with the evidence behind them.

    Attributes
    ----------
    eps : float
        Neighbourhood radius at the knee of the k-distance curve.
    min_samples : int
        Minimum neighbourhood size (the point itself included); ``k`` of the k-distance curve.
    k_distances : ndarray, shape (n_sample,)
        Sorted (increasing) distance of each subsampled point to its ``min_samples``-th nearest
        neighbour among all points (itself included). Plot it to see the knee.
    knee_index : int
        Index of the knee in :attr:`k_distances` (``eps = k_distances[knee_index]``).
    core_fraction : float
        Fraction of the subsample whose k-distance is ``<= eps``: the expected fraction of core
        points.
    n_sample : int
        Number of points on the curve.
    """

    eps: float
    min_samples: int
    k_distances: np.ndarray = field(repr=False)
    knee_index: int
    core_fraction: float
    n_sample: int


def default_min_samples(n_samples: int, n_features: int) -> int:
    """Default DBSCAN ``min_samples``: ``2 * n_features`` (Sander et al. 1998), at least 4.

    For very large inputs the count grows slowly with ``log(n_samples)`` so that isolated noise
    pairs cannot chain clusters together: ``max(4, 2 * d, round(log(n) - 2))``.
    """
    return int(max(4, 2 * n_features, round(math.log(max(n_samples, 1)) - 2)))


def _validate_points(X: object, name: str = "X") -> np.ndarray:
    arr = np.asarray(X)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"{name} must be a 2-D array (n_samples, n_features), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return arr


def _knee(y: np.ndarray) -> int:
    """Kneedle knee of an increasing curve: farthest point below the chord, normalized axes."""
    m = y.size
    if m < 3 or y[-1] <= y[0]:
        return m - 1
    x = np.linspace(0.0, 1.0, m)
    yn = (y - y[0]) / (y[-1] - y[0])
    return int(np.argmax(x - yn))


def estimate_dbscan_params(
    X: np.ndarray,
    *,
    min_samples: int | None = None,
    sample_size: int = 10_000,
    tail_quantile: float = 0.995,
    random_state: int | None = 0,
    workers: int = -1,
) -> DbscanParams:
    """Choose DBSCAN ``eps`` (and ``min_samples``) from the data.

    Parameters
    ----------
    X : array_like, shape (n_samples, n_features)
        Points to cluster (e.g. PCA scores of pixel spectra).
    min_samples : int, optional
        Neighbourhood size; default :func:`default_min_samples`.
    sample_size : int
        Points on the k-distance curve (a random subsample, queried against all points).
    tail_quantile : float
        The curve is cut at this quantile before the knee search so that a few far outliers do
        not flatten it; in (0.5, 1].
    random_state : int or None
        Seed of the subsample.
    workers : int
        Threads of the k-nearest-neighbour queries (-1: all cores); the result does not depend
        on it.

    Returns
    -------
    DbscanParams
        ``eps`` at the knee of the k-distance curve, ``min_samples`` and the curve itself.

    Raises
    ------
    ValueError
        If ``X`` is not a finite 2-D array with at least 2 points, or an option is out of range.

    Notes
    -----
    The k-distance of a point is the radius of its smallest ball holding ``min_samples`` points;
    a point is a DBSCAN core point iff its k-distance is ``<= eps``. Sorted, the curve is flat
    over the phases and rises steeply over noise; its knee (Kneedle: the point farthest below
    the chord of the normalized curve) is the usual choice of eps (Ester et al. 1996; Schubert
    et al. 2017). Cost: ``sample_size`` k-nearest-neighbour queries (about 0.1 s at d=3 and a
    few seconds at d=8 for 387k points); memory O(n d). Duplicated data: a zero knee is
    replaced by the smallest positive k-distance, or by ``1e-6`` times the data range when
    every sampled point sits on ``min_samples`` exact duplicates.
    """
    arr = _validate_points(X)
    n, d = arr.shape
    if n < 2:
        raise ValueError(f"X must hold at least 2 points to estimate eps, got {n}")
    if min_samples is None:
        ms = default_min_samples(n, d)
    elif isinstance(min_samples, bool) or not isinstance(min_samples, Integral) or min_samples < 1:
        raise ValueError(f"min_samples must be an integer >= 1, got {min_samples!r}")
    else:
        ms = int(min_samples)
    ms = min(ms, n)
    if isinstance(sample_size, bool) or not isinstance(sample_size, Integral) or sample_size < 10:
        raise ValueError(f"sample_size must be an integer >= 10, got {sample_size!r}")
    if not (isinstance(tail_quantile, Real) and 0.5 < tail_quantile <= 1.0):
        raise ValueError(f"tail_quantile must be in (0.5, 1], got {tail_quantile!r}")
    X64 = np.ascontiguousarray(arr, dtype=np.float64)
    sub = _k_distance_sample(n, sample_size, random_state)
    m = sub.size
    if d == 1:
        kd = np.sort(_k_distances_1d(X64[:, 0], sub, ms))
    else:
        tree = cKDTree(X64, balanced_tree=False, compact_nodes=False)
        rank = np.empty(n, dtype=np.int64)
        rank[tree.indices] = np.arange(n)
        sub = sub[np.argsort(rank[sub])]  # tree order: neighbouring queries share cache
        dist, _ = tree.query(X64[sub], k=ms, workers=workers)
        kd = np.sort(np.asarray(dist).reshape(m, ms)[:, -1])
    return params_from_k_distances(kd, ms, tail_quantile=tail_quantile,
                                   span=lambda: float(np.max(X64.max(axis=0) - X64.min(axis=0))))


def _k_distances_1d(x: np.ndarray, sub: np.ndarray, k: int) -> np.ndarray:
    """Distance of each point ``x[sub]`` to its ``k``-th nearest point of ``x`` (itself
    included), one feature, by sorting: the values of scipy's exact k-NN query.

    The ``k`` nearest points of a point form a window of ``k`` consecutive sorted values that
    contains it (the computed distance ``sqrt((a - b)**2)``, scipy's formula, is monotone in the
    sorted position on each side), so the ``k``-th distance is the smallest, over the ``k``
    windows containing the point, of the larger distance to the window's two ends. Which of
    several equal values stands for the point changes no distance.
    """
    order = np.argsort(x)
    s = x[order]
    where = np.empty(x.size, dtype=np.int64)
    where[order] = np.arange(x.size)
    p = where[sub]
    start = p[:, None] - np.arange(k)[None, :]  # windows [start, start + k - 1] holding p
    valid = (start >= 0) & (start + k - 1 < x.size)
    start = np.clip(start, 0, x.size - k)
    a = s[p][:, None] - s[start]
    b = s[start + k - 1] - s[p][:, None]
    da = np.sqrt(a * a)
    db = np.sqrt(b * b)
    far = np.where(valid, np.maximum(da, db), np.inf)
    return far.min(axis=1)


def _k_distance_sample(n: int, sample_size: int, random_state: int | None) -> np.ndarray:
    """Indices of the points on the k-distance curve (all when ``n <= sample_size``)."""
    m = min(n, int(sample_size))
    return np.random.default_rng(random_state).choice(n, m, replace=False) if m < n else np.arange(n)


def params_from_k_distances(
    kd: np.ndarray, ms: int, *, tail_quantile: float = 0.995, span: Callable[[], float]
) -> DbscanParams:
    """:class:`DbscanParams` from the sorted k-distances of the sample (the knee step of
    :func:`estimate_dbscan_params`, for k-distances computed elsewhere). ``span`` gives the largest coordinate range of the points,
    used only when every sampled point sits on ``ms`` exact duplicates."""
    m = kd.size
    top = max(2, int(math.ceil(tail_quantile * m)))
    knee = _knee(kd[:top])
    eps = float(kd[knee])
    if eps <= 0.0:  # heavily duplicated data: the smallest positive k-distance
        positive = kd[kd > 0]
        if positive.size:
            eps = float(positive[0])
            knee = int(np.searchsorted(kd, eps))
        else:  # every sampled point sits on min_samples duplicates: separate the sites only
            sp = span()
            eps = sp * 1e-6 if sp > 0 else 1.0
    return DbscanParams(
        eps=eps,
        min_samples=ms,
        k_distances=kd,
        knee_index=knee,
        core_fraction=float(np.mean(kd <= eps)),
        n_sample=m,
    )


class _Nearest:
    """Nearest point of a fixed set ``P`` (n, d) to query points: the answers of
    :meth:`scipy.spatial.cKDTree.query` (``k=1``), without building a tree of ``P`` in one
    dimension.

    With one feature the points near a query are a run of the sorted values
    (:func:`numpy.searchsorted`). A query is answered there when the answer cannot depend on
    rounding or on how the tree breaks ties: its nearest distance lies farther than ``1e-9``
    (relative) from the bound, and every point within that margin of the nearest distance
    carries the same ``values`` entry. A query at the bound within the margin (common: float32
    scores make exact distance ties) is asked to a tree of the points near it only, which gives
    the full tree's distance; one whose nearest points carry different values (an exact tie) is
    asked to the tree of all points, built on first need. With more features the tree answers
    every query.
    """

    _REL = 1e-9  # margin, relative: far beyond the rounding of a difference and its square

    def __init__(self, P: np.ndarray, values: np.ndarray | None = None, workers: int = -1) -> None:
        self.P = P
        self.values = values
        self.workers = workers
        self._tree: cKDTree | None = None
        if P.shape[1] == 1:
            order = np.argsort(P[:, 0])  # the order among equal values changes nothing below
            self.s = P[order, 0]
            if values is not None:
                self.v = values[order]
                self.run = np.concatenate([[0], np.cumsum(self.v[1:] != self.v[:-1])])  # one id per run of equal values

    def tree(self) -> cKDTree:
        if self._tree is None:
            self._tree = cKDTree(self.P)
        return self._tree

    def _window(self, q: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sorted positions ``[a, b)`` of the points within ``r`` (and a rounding) of ``q``."""
        slack = 4.0 * (np.spacing(np.abs(q)) + np.spacing(np.abs(r)))
        return (np.searchsorted(self.s, q - (r + slack), side="left"),
                np.searchsorted(self.s, q + (r + slack), side="right"))

    def _near_tree(self, a: np.ndarray, b: np.ndarray) -> tuple[cKDTree, np.ndarray]:
        """A tree of the points in the sorted windows ``[a_i, b_i)``, and their positions."""
        pos = np.unique(np.concatenate([np.arange(i, j) for i, j in zip(a, b)]))
        return cKDTree(self.s[pos, None]), pos

    def within(self, Q: np.ndarray, bound: float) -> tuple[np.ndarray, np.ndarray | None]:
        """Whether each query has a point within ``bound`` (cKDTree's ``distance_upper_bound``)
        and, when ``values`` were given, the nearest point's entry (-1 where none)."""
        m = Q.shape[0]
        found = np.zeros(m, dtype=bool)
        got = np.full(m, -1, dtype=np.int64) if self.values is not None else None
        if self.P.shape[0] == 0 or m == 0:
            return found, got
        if self.P.shape[1] != 1:
            ask = np.arange(m)
        else:
            q = Q[:, 0]
            s = self.s
            k = np.searchsorted(s, q)
            d = np.minimum(np.where(k > 0, q - s[np.maximum(k - 1, 0)], np.inf),
                           np.where(k < s.size, s[np.minimum(k, s.size - 1)] - q, np.inf))
            hi = d * (1.0 + self._REL)
            found = hi < bound
            unsure = ~found & ~(d * (1.0 - self._REL) > bound)
            # the candidates: within the nearest distance (found), within the bound (unsure)
            a, b = self._window(q, np.where(unsure, bound * (1.0 + self._REL), hi))
            uniform = b > a
            if got is not None:
                uniform[uniform] = self.run[b[uniform] - 1] == self.run[a[uniform]]
                take = found & uniform
                got[take] = self.v[a[take]]
            ask = np.flatnonzero((found | unsure) & ~uniform)  # an exact tie of different values
            found &= uniform
            near = np.flatnonzero(unsure & uniform)
            if near.size:  # at the bound: the distance of the tree, from the points near the query
                tree, pos = self._near_tree(a[near], b[near])
                dist, j = tree.query(Q[near], k=1, distance_upper_bound=bound)
                hit = np.isfinite(dist)
                found[near[hit]] = True
                if got is not None:
                    got[near[hit]] = self.v[pos[j[hit]]]
        if ask.size:
            dist, j = self.tree().query(Q[ask], k=1, distance_upper_bound=bound, workers=self.workers)
            hit = np.isfinite(dist)
            found[ask] = hit
            if got is not None:
                got[ask[hit]] = self.values[j[hit]]
        return found, got

    def farther_than(self, c: np.ndarray, r: float) -> bool:
        """Whether the nearest point to ``c`` (d,) lies farther than ``r``."""
        if self.P.shape[1] != 1:
            return float(self.tree().query(c, k=1)[0]) > r
        q = np.asarray(c, dtype=np.float64).reshape(1)
        a, b = self._window(q, np.array([r * (1.0 + self._REL)]))
        if b[0] <= a[0]:  # nothing within r and a margin
            return True
        tree, _ = self._near_tree(a, b)  # the nearest point is among these: the tree's distance
        return float(tree.query(c, k=1)[0]) > r

class PhaseClusterer:
    """Chemical phases from DBSCAN without choosing the number of phases.

    Parameters
    ----------
    eps : float, optional
        DBSCAN radius; default from :func:`estimate_dbscan_params`.
    min_samples : int, optional
        DBSCAN neighbourhood size; default :func:`default_min_samples`.
    split_minority : bool
        Split the minority pool into distinct minority phases when the data support it (default
        True). False reproduces Duan et al.: one outlier phase holding all DBSCAN noise.
    majority_fraction : float
        A DBSCAN cluster holding at least this fraction of the points is a majority phase
        (default 0.1).
    min_phase_fraction : float
        Smallest minority phase, as a fraction of the points (default 0.005); smaller clusters
        join the outlier phase.
    fringe_factor : float
        Noise points within ``fringe_factor * eps`` of a core point of a majority phase (or of a
        member of a minority phase) join that phase: they are its noisy fringe (default 2.0;
        0 keeps all DBSCAN noise in the minority pool as in Duan et al.).
    random_state : int or None
        Seed of the subsample used by the parameter estimate.
    n_jobs : int
        Threads of the KD-tree queries (-1: all cores, the default); the phases do not depend
        on it.

    Attributes
    ----------
    labels_ : ndarray of intp, shape (n_samples,)
        Phase of every point, ``0..n_phases_-1``: majority phases by decreasing size, then the
        distinct minority phases by decreasing size, then the outlier phase (if any point is
        left). Every point gets a phase.
    n_phases_ : int
    phase_kinds_ : tuple of str
        ``"majority"``, ``"minority"`` or ``"outlier"`` per phase.
    outlier_labels_ : tuple of int
        Phases of the minority pool (distinct minority phases and the outlier phase).
    counts_ : ndarray of int, shape (n_phases_,)
    dbscan_labels_ : ndarray of intp
        Raw DBSCAN labels (``-1`` noise), identical to scikit-learn's.
    core_sample_indices_ : ndarray of intp
        Indices of the DBSCAN core points.
    eps_, min_samples_ : float, int
        Parameters used.
    params_ : DbscanParams or None
        The automatic estimate, when eps was not given.

    Notes
    -----
    How the minority pool is split (``split_minority=True``): the DBSCAN noise that is not the
    fringe of a majority phase (farther than ``fringe_factor * eps_`` from its core points) is
    clustered again with DBSCAN at parameters estimated on it alone (it is sparser, so its eps
    is larger). A resulting group
    becomes a minority phase when it holds at least ``min_phase_fraction`` of the points and its
    centroid lies farther than both ``2 * eps_`` and the group's RMS radius from every core
    point of the majority phases: the fringe of a majority phase (its centroid falls inside the
    phase) and diffuse background (wider than its distance to the phases) are not phases.
    DBSCAN clusters between ``min_phase_fraction`` and ``majority_fraction`` are distinct by
    construction and pass the same centroid test. Everything else forms the outlier phase.
    Memory and time are those of :func:`txm_live.dbscan.dbscan` plus a second, smaller run on
    the pool.
    """

    def __init__(
        self,
        *,
        eps: float | None = None,
        min_samples: int | None = None,
        split_minority: bool = True,
        majority_fraction: float = 0.1,
        min_phase_fraction: float = 0.005,
        fringe_factor: float = 2.0,
        random_state: int | None = 0,
        n_jobs: int = -1,
    ) -> None:
        self.eps = eps
        self.fringe_factor = fringe_factor
        self.min_samples = min_samples
        self.split_minority = split_minority
        self.majority_fraction = majority_fraction
        self.min_phase_fraction = min_phase_fraction
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _check_options(self) -> None:
        if self.eps is not None and (
            isinstance(self.eps, bool) or not isinstance(self.eps, Real)
            or not math.isfinite(self.eps) or self.eps <= 0
        ):
            raise ValueError(f"eps must be a finite number > 0 or None, got {self.eps!r}")
        if self.min_samples is not None and (
            isinstance(self.min_samples, bool) or not isinstance(self.min_samples, Integral)
            or self.min_samples < 1
        ):
            raise ValueError(f"min_samples must be an integer >= 1 or None, got {self.min_samples!r}")
        if not (isinstance(self.fringe_factor, Real) and self.fringe_factor >= 0):
            raise ValueError(f"fringe_factor must be a number >= 0, got {self.fringe_factor!r}")
        if not (isinstance(self.majority_fraction, Real) and 0 < self.majority_fraction <= 1):
            raise ValueError(f"majority_fraction must be in (0, 1], got {self.majority_fraction!r}")
        if not (isinstance(self.min_phase_fraction, Real)
                and 0 <= self.min_phase_fraction <= self.majority_fraction):
            raise ValueError(
                "min_phase_fraction must be in [0, majority_fraction], "
                f"got {self.min_phase_fraction!r}"
            )

    def fit(self, X: np.ndarray, y: object = None) -> PhaseClusterer:
        """Cluster ``X`` (n_samples, n_features) into phases; returns self."""
        self._check_options()
        arr = _validate_points(X)
        n, d = arr.shape
        if n < 2:
            raise ValueError(f"X must hold at least 2 points, got {n}")
        self.params_ = None
        ms = self.min_samples if self.min_samples is not None else default_min_samples(n, d)
        if self.eps is None:
            self.params_ = estimate_dbscan_params(
                arr, min_samples=ms, random_state=self.random_state, workers=self.n_jobs
            )
            eps, ms = self.params_.eps, self.params_.min_samples
        else:
            eps = float(self.eps)
        self.eps_, self.min_samples_ = float(eps), int(ms)
        raw, core_idx = dbscan(arr, eps=eps, min_samples=ms, return_core=True, workers=self.n_jobs)
        self.dbscan_labels_ = raw
        self.core_sample_indices_ = core_idx
        self.n_features_in_ = d

        sizes = np.bincount(raw[raw >= 0]) if np.any(raw >= 0) else np.zeros(0, dtype=np.int64)
        by_size = np.argsort(-sizes, kind="stable")
        major = [int(c) for c in by_size if sizes[c] >= self.majority_fraction * n]
        min_size = max(2, int(math.ceil(self.min_phase_fraction * n)))
        # members of every DBSCAN cluster, in one sort
        clustered = np.flatnonzero(raw >= 0)
        clustered = clustered[np.argsort(raw[clustered], kind="stable")]
        members_of = np.split(clustered, np.cumsum(sizes)[:-1]) if sizes.size else []
        phases: list[np.ndarray] = [members_of[c] for c in major]
        kinds = ["majority"] * len(major)
        in_major = np.isin(raw, major) if major else np.zeros(n, dtype=bool)
        pool = np.flatnonzero(~in_major)
        X64 = np.asarray(arr, dtype=np.float64)
        # core points of the majority phases, for the distinctness test
        core = np.zeros(n, dtype=bool)
        core[core_idx] = True
        major_core = np.flatnonzero(core & in_major)
        core_near = _Nearest(X64[major_core], None, self.n_jobs) if major_core.size else None

        def distinct(members: np.ndarray) -> bool:
            # compact and away from the majority phases: the centroid is farther from every
            # majority core point than both 2 eps and the group's own RMS radius
            if core_near is None:
                return True
            pts = X64[members]
            centroid = pts.mean(axis=0)
            rms = float(np.sqrt(((pts - centroid) ** 2).sum(axis=1).mean()))
            return core_near.farther_than(centroid, max(2.0 * eps, rms))

        reach = self.fringe_factor * eps
        # fringe of the majority phases: noise within reach of a majority core point
        noise = np.flatnonzero(raw < 0)
        if core_near is not None and reach > 0 and noise.size:
            unexplained = noise[~core_near.within(X64[noise], reach)[0]]
        else:
            unexplained = noise
        minority: list[np.ndarray] = []
        if self.split_minority and pool.size >= min_size:
            # (a) DBSCAN clusters too small to be majority phases
            cand = [members_of[c] for c in by_size[len(major):]]
            # (b) groups among the unexplained noise, at parameters estimated on it alone
            if unexplained.size >= max(min_size, 2 * ms + 2):
                sub = dbscan_on_subset(X64[unexplained], ms, self.random_state, workers=self.n_jobs)
                cand += [unexplained[sub == c] for c in range(int(sub.max()) + 1)]
            # largest first; a group close to an accepted minority phase (same test as for the
            # majority phases) is part of it, e.g. the fringe of a minority DBSCAN cluster
            trees: list[cKDTree] = []
            for members in sorted(cand, key=lambda m: -m.size):
                if members.size < min_size or not distinct(members):
                    continue
                centroid = X64[members].mean(axis=0)
                rms = float(np.sqrt(((X64[members] - centroid) ** 2).sum(axis=1).mean()))
                gaps = [float(t.query(centroid, k=1)[0]) for t in trees]
                close = [i for i, g in enumerate(gaps) if g <= max(2.0 * eps, rms)]
                if close:
                    i = close[int(np.argmin([gaps[c] for c in close]))]
                    minority[i] = np.concatenate([minority[i], members])
                    trees[i] = cKDTree(X64[minority[i]])
                else:
                    minority.append(members)
                    trees.append(cKDTree(X64[members]))
            minority = [np.sort(m) for m in sorted(minority, key=lambda m: -m.size)]
        labels = np.full(n, -1, dtype=np.intp)
        for i, members in enumerate(phases + minority):
            labels[members] = i
        # fringe: remaining pool points within reach of a majority core point or of a member
        # of a minority phase are noisy pixels of that phase, not a phase of their own
        rest = np.flatnonzero(labels < 0)
        anchors = np.concatenate([major_core, *minority]) if minority else major_core
        if anchors.size and reach > 0 and rest.size:
            near, phase = _Nearest(X64[anchors], labels[anchors], self.n_jobs).within(X64[rest], reach)
            labels[rest[near]] = phase[near]
        kinds += ["minority"] * len(minority)
        if np.any(labels < 0):
            labels[labels < 0] = len(kinds)
            kinds.append("outlier")
        self.labels_ = labels
        self.phase_kinds_ = tuple(kinds)
        self.n_phases_ = len(kinds)
        self.outlier_labels_ = tuple(i for i, k in enumerate(kinds) if k != "majority")
        self.counts_ = np.bincount(labels, minlength=self.n_phases_)
        return self

    def fit_predict(self, X: np.ndarray, y: object = None) -> np.ndarray:
        """Fit and return :attr:`labels_`."""
        return self.fit(X).labels_


def dbscan_on_subset(Xs: np.ndarray, ms: int, random_state: int | None, *, workers: int = -1) -> np.ndarray:
    """DBSCAN of a point subset at parameters estimated on that subset alone."""
    params = estimate_dbscan_params(Xs, min_samples=min(ms, Xs.shape[0]), random_state=random_state,
                                    workers=workers)
    return dbscan(Xs, eps=params.eps, min_samples=params.min_samples, workers=workers)
