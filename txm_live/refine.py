"""Refinement of DBSCAN phases: every pixel to its dominant phase, and the distinct minority phases.

DBSCAN (:class:`txm_live.cluster.PhaseClusterer`) finds the dense cores of the majority phases;
:func:`refine_phases` fits a robust Gaussian mixture seeded by those cores (plus a uniform
background for points no phase explains), finds dense groups among the unexplained points, keeps
a candidate minority phase only if its points are not mixtures of two phases (Duan et al. 2016,
Fig. S1 reasoning), splits a majority phase that is clearly two Gaussians (Ashman's D > 3) unless
one half is the interface mixtures of the other half and another phase, and assigns every pixel
to its dominant phase (nearest phase mean in the pooled within-phase metric).
"""

from __future__ import annotations

import numpy as np

__all__ = ["refine_phases"]

#: Components :func:`refine_phases` may add for points no phase explains.
_MAX_NEW_COMPONENTS = 3
#: Ashman's D above which one majority Gaussian is split into two phases.
_SPLIT_SEPARATION = 3.0
#: Points of one majority phase the split test is fitted on.
_SPLIT_SAMPLES = 10_000
#: Points the mixture of :func:`refine_phases` is fitted on.
_EM_SAMPLES = 50_000
#: Floor of the mixture's log-responsibilities relative to each point's largest (:func:`_robust_em`):
#: ``log(1e-300)``, the floor its log-weights use.
_LOG_FLOOR = float(np.log(1e-300))


def _segment_distance(m: np.ndarray, c: np.ndarray, means: np.ndarray, covs: np.ndarray) -> float:
    """Smallest Mahalanobis distance from ``m`` (covariance ``c``) to the phase means and the
    segments between pairs of them (the mixtures of two phases), covariances summed."""
    best = np.inf
    k = means.shape[0]
    for a in range(k):  # loops over the kept phases (a few)
        dv = m - means[a]
        best = min(best, float(np.sqrt(max(dv @ np.linalg.pinv(c + covs[a]) @ dv, 0.0))))
        for b in range(a + 1, k):
            best = min(best, _segment_point_distance(m, c, means[a], covs[a], means[b], covs[b]))
    return best


def _segment_point_distance(
    m: np.ndarray, c: np.ndarray, a: np.ndarray, ca: np.ndarray, b: np.ndarray, cb: np.ndarray
) -> float:
    """Mahalanobis distance from ``m`` (covariance ``c``) to the segment between the means ``a``
    and ``b`` (the mixtures of those two phases), with the summed covariance ``c + (ca + cb) / 2``."""
    P = np.linalg.pinv(c + 0.5 * (ca + cb))
    u = b - a
    d = m - a
    uu = float(u @ P @ u)
    t = float(np.clip((d @ P @ u) / uu, 0.0, 1.0)) if uu > 0 else 0.0
    r = d - t * u
    return float(np.sqrt(max(r @ P @ r, 0.0)))


def _mixture_distance(X: np.ndarray, means: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """Per point of ``X`` (n, d): the smallest Mahalanobis distance to a phase mean (that phase's
    covariance) or to the segment between two phase means (their mean covariance), i.e. how far
    the point is from being one phase or a two-phase mixture. Vectorized over points; loops over
    the pairs of phases (a few)."""
    best = np.full(X.shape[0], np.inf)
    k = means.shape[0]
    for a in range(k):
        best = np.minimum(best, _mahalanobis2(X, means[a], covs[a]))
        for b in range(a + 1, k):
            P = np.linalg.pinv(0.5 * (covs[a] + covs[b]))
            u = means[b] - means[a]
            D = X - means[a]
            uu = float(u @ P @ u)
            t = np.clip((D @ (P @ u)) / uu, 0.0, 1.0) if uu > 0 else np.zeros(X.shape[0])
            D -= t[:, None] * u
            best = np.minimum(best, np.einsum("ij,jk,ik->i", D, P, D))
    return np.sqrt(np.maximum(best, 0.0))


def _log_gauss(X: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-density of a Gaussian at every row of ``X`` and the squared Mahalanobis distance."""
    d = X.shape[1]
    L = np.linalg.cholesky(cov)
    logdet = 2.0 * float(np.log(np.diag(L)).sum())
    if d == 1:
        # one feature: the whitening product below is one multiplication per point (a single
        # rounding either way, so the values are identical), without matmul's transposed
        # operand and einsum (4-5x faster at 50 000 points)
        z = X[:, 0] - mean[0]
        z *= np.linalg.inv(L)[0, 0]
        m2 = np.multiply(z, z, out=z)
    else:
        # whitening by the inverse Cholesky factor (d x d): one thin matrix product; LAPACK's
        # triangular solve with n = 10^4..10^5 right-hand sides is ~100x slower for d of 1-3
        z = np.linalg.inv(L) @ (X - mean).T  # (d, n)
        m2 = np.einsum("ij,ij->j", z, z)
    return -0.5 * (m2 + logdet + d * np.log(2.0 * np.pi)), m2


def _mahalanobis2(X: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """``_log_gauss(X, mean, cov)[1]`` (the squared Mahalanobis distance) without the density:
    for one feature the same operations on the 1 x 1 factor ``sqrt(var)`` (see
    :func:`_log_density_1d`)."""
    if X.shape[1] != 1:
        return _log_gauss(X, mean, cov)[1]
    z = X[:, 0] - mean[0]
    z *= 1.0 / np.sqrt(float(cov[0, 0]))
    return np.multiply(z, z, out=z)


def _log_density_1d(x: np.ndarray, mean: float, var: float, shift: float, out: np.ndarray) -> np.ndarray:
    """``shift + _log_gauss(x[:, None], [mean], [[var]])[0]`` for one feature, written into
    ``out`` (n,): the same operations in the same order, in place (no temporaries). The 1 x 1
    Cholesky factor is ``sqrt(var)`` and its inverse ``1 / sqrt(var)``, the values LAPACK returns
    (tested: ``test_refine_one_feature_scalars_equal_lapack``)."""
    L = np.sqrt(var)
    np.subtract(x, mean, out=out)
    out *= 1.0 / L
    np.multiply(out, out, out=out)
    out += 2.0 * float(np.log(L))
    out += np.log(2.0 * np.pi)
    out *= -0.5
    out += shift
    return out


def _robust_em(
    X: np.ndarray, means: list[np.ndarray], covs: list[np.ndarray], weights: list[float], n_iter: int
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    """EM of Gaussian components plus a uniform background over the bounding box.

    Returns the means, covariances, weights (last: background) and the responsibilities
    ``(k + 1, n)``. The background takes the points no Gaussian explains, so a far group cannot
    drag a phase's Gaussian over to itself (the failure of a plain mixture). Stops early when
    the mean log-likelihood changes by less than 1e-7.
    """
    n, d = X.shape
    span = np.maximum(X.max(axis=0) - X.min(axis=0), 1e-9)
    log_bg = -float(np.log(span).sum())
    k = len(means)
    w = np.asarray(list(weights) + [max(0.01 * sum(weights), 1.0)], dtype=np.float64)
    w /= w.sum()
    reg = 1e-6 * np.eye(d)
    resp = np.empty((k + 1, n))
    last = -np.inf
    x = np.ascontiguousarray(X[:, 0]) if d == 1 else None
    dx = np.empty(n) if d == 1 else None  # one feature: the M-step's (n,) work buffers
    dr = np.empty(n) if d == 1 else None
    for _ in range(n_iter):
        for j in range(k):
            if x is not None:  # one feature: in place, the same values
                _log_density_1d(x, float(means[j][0]), float(covs[j][0, 0]), float(np.log(w[j] + 1e-300)), resp[j])
            else:
                resp[j] = np.log(w[j] + 1e-300) + _log_gauss(X, means[j], covs[j])[0]
        resp[k] = np.log(w[k] + 1e-300) + log_bg
        top = resp.max(axis=0)
        resp -= top
        # a responsibility below 1e-300 of the point's largest is raised to 1e-300 (before the
        # normalization): exp near and below log(2.2e-308) and every product with its subnormal
        # results take numpy and the CPU 5-15x longer than normal values, and most entries of a
        # far component are such. Each point's largest entry is 1 and every phase's sums are
        # far above 1e-250, so the raised entries (< 1e-296 in all) are absorbed by the rounding
        # of every sum: the same means, covariances and weights (tested on the captured
        # full-size scores and random mixtures); only a dead component's weight (below
        # 1e-296 either way) differs
        np.maximum(resp, _LOG_FLOOR, out=resp)
        np.exp(resp, out=resp)
        total = resp.sum(axis=0)
        resp /= total
        loglik = float(np.mean(top + np.log(total)))
        nk = resp.sum(axis=1)
        w = nk / n
        for j in range(k):
            if nk[j] <= d:
                continue
            r = resp[j]
            if x is not None:
                # one feature: the same products and sums as the matrix forms below (numpy
                # reduces those (n,) @ (n, 1) and (1, n) @ (n, 1) products to the same dot
                # product), without (n, 1) temporaries
                m = np.dot(r, x) / nk[j]
                means[j] = np.array([m])
                np.subtract(x, m, out=dx)
                np.multiply(dx, r, out=dr)
                covs[j] = np.array([[np.dot(dr, dx) / nk[j]]]) + reg
                continue
            means[j] = (r @ X) / nk[j]
            D = X - means[j]
            covs[j] = (D * r[:, None]).T @ D / nk[j] + reg
        if abs(loglik - last) < 1e-7 * max(1.0, abs(loglik)):
            break
        last = loglik
    return means, covs, w, resp


def _split_bimodal(
    Xs: np.ndarray, assign: np.ndarray, means_major: list[np.ndarray], covs_major: list[np.ndarray],
    explained: np.ndarray, random_state: int, separation: float,
) -> dict[int, tuple[list[np.ndarray], list[np.ndarray]]]:
    """Majority components whose points form two well separated Gaussians (Ashman's D > 3).

    Returns, per component to split, the two means and covariances of a two-component mixture
    fitted to its points (EM seeded by the halves on either side of the median along the
    principal axis). A split is refused when one half lies within ``separation`` of the segment
    between the other half and another majority phase: those points are the interface mixtures of
    two phases, not a phase of their own.
    """
    n_major = len(means_major)
    out = {}
    d = Xs.shape[1]
    for j in range(n_major):
        P = Xs[explained & (assign == j)]
        if P.shape[0] < 50:
            continue
        if P.shape[0] > _SPLIT_SAMPLES:  # two Gaussians need few points
            P = P[np.random.default_rng(random_state).choice(P.shape[0], _SPLIT_SAMPLES, replace=False)]
        c = P - P.mean(axis=0)
        axis = np.linalg.eigh(np.atleast_2d(np.cov(c.T)))[1][:, -1]
        t = c @ axis
        halves = [P[t <= np.median(t)], P[t > np.median(t)]]
        if min(h.shape[0] for h in halves) <= d + 1:
            continue
        means = [h.mean(axis=0) for h in halves]
        covs = [np.atleast_2d(np.cov(h.T)) + 1e-6 * np.eye(d) for h in halves]
        means, covs, w, _ = _robust_em(P, means, covs, [1.0, 1.0], 50)
        if min(w[0], w[1]) < 0.1 * (w[0] + w[1]):
            continue
        dv = means[1] - means[0]
        D = float(np.sqrt(max(dv @ np.linalg.pinv(0.5 * (covs[0] + covs[1])) @ dv, 0.0)))
        if D > _SPLIT_SEPARATION and not any(
            _segment_point_distance(means[h], covs[h], means[1 - h], covs[1 - h], means_major[o], covs_major[o])
            <= separation
            for h in (0, 1) for o in range(n_major) if o != j
        ):
            out[j] = (means, covs)
    return out


def _dense_groups(Xu: np.ndarray, min_points: int, workers: int = -1) -> list[np.ndarray]:
    """Dense groups among unexplained points (DBSCAN at parameters estimated on them alone)."""
    from txm_live.cluster import estimate_dbscan_params
    from txm_live.dbscan import dbscan

    if Xu.shape[0] < max(min_points, 3):
        return []
    params = estimate_dbscan_params(Xu, workers=workers)
    lab = dbscan(Xu, eps=params.eps, min_samples=params.min_samples, workers=workers)
    sizes = np.bincount(lab[lab >= 0]) if np.any(lab >= 0) else np.zeros(0, dtype=np.int64)
    return [Xu[lab == g] for g in np.flatnonzero(sizes >= min_points)]


def _distinct_minorities(
    Xs: np.ndarray, resp: np.ndarray, means: list[np.ndarray], covs: list[np.ndarray], w: np.ndarray,
    n_major: int, *, separation: float, min_fraction: float, min_points: int,
) -> list[int]:
    """The added components that are phases: not interface mixtures of the phases already kept.

    A component's members are the points it is most responsible for. Each member is tested on its
    own (:func:`_mixture_distance`): is it within ``separation`` of a kept phase or of the segment
    between two kept phases? The component is kept when at least ``min_points`` members, and at
    least half of them, are not: a group whose points are all well explained as mixtures of two
    phases is an interface artefact. The unexplained members must also be a group: the mean of
    their core, its covariance added (:func:`_group_core`), lies beyond ``separation`` from every
    kept phase and segment (the scattered tails around a phase are not). Candidates are tested in decreasing number of members no
    majority mixture explains, and every kept minority joins the phases the next candidates are
    tested against (a mixture of the minority and a majority phase is not a phase either).
    """
    member = resp.argmax(axis=0)
    d = Xs.shape[1]
    candidates = [j for j in range(n_major, len(means)) if w[j] >= min_fraction]
    if not candidates:
        return []
    off_major = _mixture_distance(Xs, np.stack(means[:n_major]), np.stack(covs[:n_major])) > separation
    candidates.sort(key=lambda j: -np.count_nonzero((member == j) & off_major))
    kept: list[int] = []
    for j in candidates:
        inside = member == j
        pm = np.stack([means[i] for i in list(range(n_major)) + kept])
        pc = np.stack([covs[i] for i in list(range(n_major)) + kept])
        off = _mixture_distance(Xs[inside], pm, pc) > separation
        n_off = np.count_nonzero(off)
        if n_off < max(min_points, d + 2) or 2 * n_off < np.count_nonzero(inside):
            continue
        # the unexplained members must form a group of their own, not the scattered tails around a
        # phase: the group's core lies beyond separation from every phase and segment (its spread
        # added)
        core_mean, core_cov = _group_core(Xs[inside][off])
        if _segment_distance(core_mean, core_cov, pm, pc) > separation:
            kept.append(j)
    return kept


def _group_core(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Location and scatter of the core of a group of points (one reweighting step of a minimum
    covariance determinant estimate).

    The half of the points nearest (Mahalanobis, sample covariance) to the coordinate-wise
    median; their mean, and their covariance scaled by the consistency factor of a Gaussian
    truncated at its median distance, ``0.5 / F_{chi2, d+2}(chi2_d(0.5))`` (unbiased for a
    Gaussian group).

    Notes
    -----
    A minority phase's group is its pure pixels plus their interface mixtures with the phase
    around it, spread along the segment between the two (the more so after a spatial filter
    whose support reaches across the interface): their plain covariance measures that mixing
    line, not the phase, and would put the phase's mean within ``separation`` of the segment it
    is the end of. The core's statistics are those of the pure pixels. Scattered tails around a
    phase have no compact core away from it: their median stays near the phase.
    """
    from scipy.special import gammainc, gammaincinv

    d = P.shape[1]
    med = np.median(P, axis=0)
    D = P - med
    m2 = np.einsum("ij,jk,ik->i", D, np.linalg.pinv(np.atleast_2d(np.cov(P.T))), D)
    core = P[m2 <= np.median(m2)]
    consistency = 0.5 / float(gammainc(0.5 * d + 1.0, gammaincinv(0.5 * d, 0.5)))
    return core.mean(axis=0), np.atleast_2d(np.cov(core.T)) * consistency


def refine_phases(
    scores: np.ndarray,
    labels: np.ndarray,
    majority: tuple[int, ...],
    *,
    separation: float = 4.0,
    min_fraction: float = 0.005,
    n_iter: int = 50,
    random_state: int = 0,
    workers: int = -1,
) -> tuple[np.ndarray, tuple[int, ...], tuple[int, ...]]:
    """Assign every point to a phase by likelihood and find the distinct minority phases.

    Parameters
    ----------
    scores : ndarray, shape (n, k)
        Points that were clustered.
    labels : ndarray of int, shape (n,)
        Phases from the DBSCAN clusterer.
    majority : tuple of int
        Labels of the majority phases (their DBSCAN clusters seed the mixture).
    separation : float
        Points farther than this many standard deviations (Mahalanobis) from every phase are
        unexplained; a minority phase is kept only if its mean lies farther than this from
        every majority phase and every segment between two majority phases (summed
        covariances); minority phases closer than this to each other are merged.
    min_fraction : float
        Smallest minority phase, as a fraction of the points.
    n_iter : int
        Largest number of EM iterations per round (stops earlier at convergence).
    random_state : int
        Seed of the subsample (at most 50 000 points) the mixture is fitted on.
    workers : int
        Threads of the KD-tree queries of the DBSCAN runs on unexplained points (-1: all
        cores); the result does not depend on it.

    Returns
    -------
    labels : ndarray of int, shape (n,)
        ``0..n_major-1`` majority phases (in the order of ``majority``), then minority phases.
    majority, minority : tuple of int
        Label values of the majority and minority phases in the returned labels.

    Notes
    -----
    DBSCAN at one density threshold finds the dense cores of the majority phases; which phase
    the remaining points (noise tails, interfaces, the sparse minority) belong to is decided
    here. Each majority phase becomes a full-covariance Gaussian, seeded with its DBSCAN
    cluster, in a mixture with a uniform background (EM). Points the background takes (no phase
    explains them) are clustered on their own (DBSCAN, parameters estimated on them) and each
    dense group seeds one more Gaussian, for up to three rounds: the minority phase, which
    DBSCAN scatters over its noise pool, is recovered this way. A majority Gaussian whose points
    are two well separated Gaussians (two-component fit, Ashman's D > 3, each >= 10 %) is split:
    two phases DBSCAN merged across a shallow valley (low SNR, e.g. the L2 edge), unless one
    half lies within ``separation`` of the segment between the other half and another majority
    phase (then it is their interface mixtures).

    Interface pixels are mixtures ``w A + (1 - w) B`` of two phases (features and scores are
    linear in the normalized spectrum), and with sample motion ``w`` even varies with energy
    (every frame is resampled at a different sub-pixel phase): they lie on or near the segment
    between the two phase means (the argument of the non-negative linear-combination test of
    Duan et al., Fig. S1). Hence:

    - a new component is kept as a minority phase only when at least half of its members, and at
      least ``min_fraction`` of the points, lie farther than ``separation`` from every kept phase
      and every segment between two kept phases (tested point by point, candidates in
      decreasing number of such members; a kept minority joins the phases the next candidates
      are tested against), and when the core of those unexplained members (the half nearest
      their median), its spread added, lies farther than ``separation`` from every kept phase and
      segment (scattered tails around a phase are not a group; a minority's interface mixtures
      with its host do not widen its core). A group of mixtures is an interface artefact, not a phase; small
      inclusions whose rim pixels are mixed with the surrounding phase are still found;
    - every point joins its dominant phase: the nearest phase mean in the pooled within-phase
      covariance of the majority phases, without priors or per-phase widths. A likelihood rule
      would hand the mixtures to the widest phase: a thin phase (a rim, cracks) is mostly
      interface pixels, so its Gaussian is stretched along the mixing line. A point explained
      as a mixture of two majority phases (within ``separation`` of their segment) goes to one
      of them, never to a minority phase that happens to lie near their midpoint.

    Cost: ``O(n_iter m k d^2)`` on a subsample of ``m <= 50 000`` points, plus one pass over
    all points for the assignment; vectorized over points.
    """
    X = np.asarray(scores, dtype=np.float64)
    n, d = X.shape
    seeds = [g for g in majority if np.count_nonzero(labels == g) > d + 1]
    if not seeds:
        ids = tuple(int(i) for i in np.unique(labels[labels >= 0]))
        return labels, tuple(i for i in ids if i in majority), tuple(i for i in ids if i not in majority)
    n_major = len(seeds)
    means = [X[labels == g].mean(axis=0) for g in seeds]
    covs = [np.atleast_2d(np.cov(X[labels == g].T)) + 1e-6 * np.eye(d) for g in seeds]
    weights = [float(np.count_nonzero(labels == g)) for g in seeds]
    # the mixture is fitted on a random subsample (parameters of a few Gaussians need far
    # fewer than 10^5 points); every point is assigned at the end
    if n > _EM_SAMPLES:
        Xs = X[np.sort(np.random.default_rng(random_state).choice(n, _EM_SAMPLES, replace=False))]
    else:
        Xs = X
    min_points_s = max(int(np.ceil(min_fraction * Xs.shape[0])), d + 2)
    for round_ in range(_MAX_NEW_COMPONENTS + 1):
        means, covs, w, resp = _robust_em(Xs, means, covs, weights, n_iter)
        unexplained = resp.argmax(axis=0) == len(means)
        if round_ == _MAX_NEW_COMPONENTS or np.count_nonzero(unexplained) < min_points_s:
            break
        groups = _dense_groups(Xs[unexplained], min_points_s, workers)
        if not groups:
            break
        means = means + [g.mean(axis=0) for g in groups]
        covs = covs + [np.atleast_2d(np.cov(g.T)) + 1e-6 * np.eye(d) for g in groups]
        weights = list(w[:-1] * Xs.shape[0]) + [float(g.shape[0]) for g in groups]
    # a majority Gaussian that is really two phases DBSCAN did not separate (a shallow valley)
    split = _split_bimodal(Xs, resp[:n_major].argmax(axis=0), means[:n_major], covs[:n_major],
                           resp.argmax(axis=0) < n_major, random_state, separation)
    if split:
        for j, (m2, c2) in split.items():
            means[j], covs[j] = m2[0], c2[0]
            means.insert(n_major, m2[1])
            covs.insert(n_major, c2[1])
        n_major += len(split)
        weights = [1.0] * len(means)
        means, covs, w, resp = _robust_em(Xs, means, covs, weights, n_iter)
    k = len(means)
    minor = _distinct_minorities(Xs, resp, means, covs, w, n_major, separation=separation,
                                 min_fraction=min_fraction, min_points=min_points_s)
    minor.sort(key=lambda j: -w[j])
    heads: list[list[int]] = []
    for j in minor:
        for h in heads:
            dv = means[j] - means[h[0]]
            P = np.linalg.pinv(covs[j] + covs[h[0]])
            if float(np.sqrt(max(dv @ P @ dv, 0.0))) <= separation:
                h.append(j)
                break
        else:
            heads.append([j])
    final = [[j] for j in range(n_major)] + heads
    # every point to its dominant phase: the nearest phase mean in the pooled within-phase metric
    # (no priors, no per-phase widths); a point explained as a mixture of two majority phases
    # goes to one of them, never to a minority phase that lies near their midpoint
    pooled = sum(w[j] * covs[j] for j in range(n_major)) / float(sum(w[j] for j in range(n_major)))
    dist2 = np.stack([np.min([_mahalanobis2(X, means[j], pooled) for j in f], axis=0) for f in final], axis=1)
    if len(final) > n_major:
        pooled_k = np.broadcast_to(pooled, (n_major, d, d))
        mixture = _mixture_distance(X, np.stack(means[:n_major]), pooled_k) <= separation
        dist2[mixture, n_major:] = np.inf
    new = dist2.argmin(axis=1)
    present = np.unique(new)
    remap = np.full(len(final), -1, dtype=np.int64)
    remap[present] = np.arange(present.size)
    out = remap[new]
    maj = tuple(int(remap[i]) for i in range(n_major) if remap[i] >= 0)
    mino = tuple(int(remap[i]) for i in range(n_major, len(final)) if remap[i] >= 0)
    return out, maj, mino
