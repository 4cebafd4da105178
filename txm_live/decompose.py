"""Dimension reduction of pixel spectra: PCA with a data-driven number of components, and the
PCA versus linear-combination-fit comparison of Duan et al. (Sci. Rep. 6, 34406 (2016), Fig. S1).

Spectra enter pixel-major for :func:`reduce_pca` (``X`` of shape ``(n_pixels, n_features)``, the
layout scikit-learn uses) and energy-major for :func:`pca_lcf_comparison` (``(n_energies, ...)``,
the layout of the cube), so each function takes its data without a transposed copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from txm_live.threads import map_ordered, run_tiles

__all__ = [
    "PcaResult",
    "LcfComparison",
    "reduce_pca",
    "pca_from_covariance",
    "covariance_part",
    "weighted_sum_part",
    "marchenko_pastur_edge",
    "nnls_two_references",
    "pca_lcf_comparison",
]

#: Rows per chunk when accumulating the covariance matrix (bounds the float64 temporaries).
_CHUNK_ROWS = 65536
#: The covariance solver is exact and faster than randomized SVD up to this many features.
_COVARIANCE_MAX_FEATURES = 256


@dataclass(frozen=True)
class PcaResult:
    """Principal component analysis of pixel spectra.

    Attributes
    ----------
    scores : ndarray of float32, shape (n_samples, n_components)
        Coordinates of each sample (pixel) on the retained components.
    components : ndarray of float32, shape (n_components, n_features)
        Orthonormal principal axes, strongest first.
    mean : ndarray of float32, shape (n_features,)
        Mean spectrum subtracted before projecting.
    explained_variance : ndarray of float64, shape (n_computed,)
        Eigenvalues of the sample covariance, strongest first, for every computed component
        (``n_computed >= n_components``: the retained ones first).
    noise_variance : float
        Estimated per-feature noise variance (from the eigenvalues beyond ``max_components``,
        corrected with the Marchenko-Pastur law).
    threshold : float
        Eigenvalue above which a component counts as signal (``noise_margin`` times the
        Marchenko-Pastur bulk edge of the estimated noise); ``nan`` when ``n_components`` was
        given.
    n_components : int
        Number of retained components.
    total_variance : float
        Sum of the variances of all features (trace of the covariance).
    """

    scores: np.ndarray
    components: np.ndarray
    mean: np.ndarray
    explained_variance: np.ndarray
    noise_variance: float
    threshold: float
    n_components: int
    total_variance: float

    @property
    def explained_variance_ratio(self) -> np.ndarray:
        """Fraction of the total variance carried by each computed component."""
        if self.total_variance <= 0:
            return np.zeros_like(self.explained_variance)
        return self.explained_variance / self.total_variance

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Project new samples ``X`` (n_samples, n_features) on the retained components."""
        X = np.asarray(X)
        return ((X - self.mean) @ self.components.T).astype(np.float32, copy=False)

    def inverse_transform(self, scores: np.ndarray) -> np.ndarray:
        """Reconstruct spectra (n_samples, n_features) from component ``scores``."""
        return (np.asarray(scores) @ self.components + self.mean).astype(np.float32, copy=False)


@dataclass(frozen=True)
class LcfComparison:
    """Two-component PCA and two-reference linear-combination fit of every pixel.

    Attributes
    ----------
    references : ndarray, shape (2, n_energies)
        Reference spectra of the fit (the two majority phases).
    weights : ndarray of float32, shape (2, ...)
        Non-negative fit weights of the two references per pixel (pixel shape of the input).
    residual_rms : ndarray of float32, shape (...)
        Root-mean-square residual of the non-negative fit per pixel: large where a pixel holds a
        phase that is not a non-negative mixture of the references (the minority phase).
    pca_scores : ndarray of float32, shape (n_components, ...)
        Scores of the first principal components per pixel.
    pca_residual_rms : ndarray of float32, shape (...)
        Root-mean-square residual of the ``n_components`` PCA reconstruction per pixel: the
        minority phase hides in it when it is (nearly) a linear combination of the majority
        phases, which is why PCA alone misses it.
    explained_variance_ratio : ndarray, shape (n_components,)
        Variance fraction of each retained principal component.
    """

    references: np.ndarray
    weights: np.ndarray
    residual_rms: np.ndarray
    pca_scores: np.ndarray
    pca_residual_rms: np.ndarray
    explained_variance_ratio: np.ndarray

    @property
    def fractions(self) -> np.ndarray:
        """Weights scaled to sum to one per pixel (``nan`` where both weights are zero)."""
        total = self.weights.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (self.weights / np.where(total > 0, total, np.nan)).astype(np.float32)


def marchenko_pastur_edge(noise_variance: float, n_samples: int, n_features: int) -> float:
    """Largest eigenvalue of the covariance of pure white noise (Marchenko-Pastur bulk edge).

    ``sigma^2 (1 + sqrt(n_features / n_samples))^2``.
    """
    if n_samples < 1 or n_features < 1:
        raise ValueError("n_samples and n_features must be positive")
    return float(noise_variance) * (1.0 + np.sqrt(n_features / n_samples)) ** 2


def _mp_expected_eigenvalues(n_samples: int, n_features: int) -> np.ndarray:
    """Expected sorted (descending) covariance eigenvalues of unit-variance white noise.

    Quantiles of the Marchenko-Pastur law at ``1 - (j - 1/2) / p`` for ``j = 1..p`` (ratio
    ``p / n <= 1``; for ``p > n`` the law of the ``n`` non-zero eigenvalues is used and the rest
    are zero).
    """
    p, n = n_features, n_samples
    gamma = p / n
    if gamma > 1.0:  # non-zero part of the spectrum follows MP with ratio n/p, scaled by p/n
        nz = _mp_expected_eigenvalues(p, n) * gamma
        return np.concatenate([nz, np.zeros(p - n)])
    a, b = (1 - np.sqrt(gamma)) ** 2, (1 + np.sqrt(gamma)) ** 2
    x = np.linspace(a, b, 4097)
    dens = np.sqrt(np.clip((b - x) * (x - a), 0.0, None)) / (2 * np.pi * gamma * x)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(x))])
    cdf /= cdf[-1]
    q = 1.0 - (np.arange(1, p + 1) - 0.5) / p
    return np.interp(q, cdf, x)


def _noise_variance(tail_sum: float, n_skipped: int, n_samples: int, n_features: int) -> float:
    """Noise variance from the sum of the eigenvalues beyond the first ``n_skipped``.

    The smallest ``p - n_skipped`` noise eigenvalues average less than ``sigma^2``; dividing by
    their expected Marchenko-Pastur mean removes that bias.
    """
    remaining = n_features - n_skipped
    if remaining <= 0:
        return 0.0
    expected = _mp_expected_eigenvalues(n_samples, n_features)[n_skipped:]
    scale = float(expected.sum())
    return max(tail_sum, 0.0) / scale if scale > 0 else 0.0


def _row_chunks(n: int) -> list[slice]:
    return [slice(start, min(start + _CHUNK_ROWS, n)) for start in range(0, n, _CHUNK_ROWS)]


def _covariance_eigh(
    X: np.ndarray, mean: np.ndarray, weights: np.ndarray | None = None, threads: int = 1,
    chunks: list[slice] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors (rows) of the (row-weighted) covariance of ``X``.

    The chunk products run on ``threads`` threads and are summed in chunk order (the result
    does not depend on ``threads``)."""
    n, p = X.shape
    cov = np.zeros((p, p), dtype=np.float64)

    def chunk_product(sl: slice) -> np.ndarray:
        return covariance_part(X[sl], mean, None if weights is None else weights[sl])

    for part in map_ordered(chunk_product, chunks if chunks is not None else _row_chunks(n), threads):
        cov += part
    cov /= max(n - 1, 1)
    return _eigh_descending(cov)


def weighted_sum_part(X: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """``w2 @ X`` in float64: one block's share of the weighted mean of :func:`reduce_pca`."""
    return w2 @ X.astype(np.float64)


def covariance_part(X: np.ndarray, mean: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """One block's share (float64) of the (row-weighted) covariance sum of :func:`reduce_pca`:
    the product of the centered, weighted block with itself in the data's precision."""
    chunk = X - mean.astype(X.dtype, copy=False)
    if weights is not None:
        chunk *= weights[:, None].astype(chunk.dtype)
    return (chunk.T @ chunk).astype(np.float64)


def _eigh_descending(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending, clipped at 0) and eigenvectors (rows) of a covariance matrix."""
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    return np.clip(evals[order], 0.0, None), evecs[:, order].T


def _sample_weights(sample_noise: np.ndarray, n: int) -> np.ndarray:
    """Row weights ``1 / sample_noise`` scaled to a median of 1 (see :func:`reduce_pca`)."""
    sample_noise = np.asarray(sample_noise, dtype=np.float64)
    if sample_noise.shape != (n,) or not np.all(np.isfinite(sample_noise)) or np.any(sample_noise <= 0):
        raise ValueError(f"sample_noise must hold {n} finite positive values, got shape {sample_noise.shape}")
    weights = 1.0 / sample_noise
    weights /= np.median(weights)
    return weights


def _retained(
    evals: np.ndarray,
    evecs: np.ndarray,
    noise_var: float,
    n: int,
    p: int,
    *,
    n_components: int | None,
    max_components: int,
    noise_margin: float,
) -> tuple[int, np.ndarray, float]:
    """Number of retained components, their axes (deterministic sign) and the threshold."""
    if n_components is None:
        threshold = noise_margin * marchenko_pastur_edge(noise_var, n, p)
        k = int(np.count_nonzero(evals > threshold))
        k = min(max(k, 1), max_components, evals.size)
    else:
        threshold = float("nan")
        k = int(n_components)
    # Deterministic sign: the largest-magnitude loading of each axis is positive.
    comps = evecs[:k].copy()
    flip = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
    comps *= flip[:, None]
    return k, comps, float(threshold)


def pca_from_covariance(
    cov: np.ndarray,
    mean: np.ndarray,
    *,
    n_samples: int,
    n_components: int | None = None,
    max_components: int = 10,
    noise_margin: float = 1.5,
) -> PcaResult:
    """:func:`reduce_pca` (covariance solver, float32 data) from an accumulated covariance.

    For data that never sit in one process (e.g. pixel tiles on Dask workers): ``cov`` is the
    (row-weighted) covariance ``(n_samples - 1)``-normalized and ``mean`` the (weighted) mean of
    the rows, both reduced from partial sums. The components are chosen exactly as
    :func:`reduce_pca` does; ``scores`` is empty (project with :meth:`PcaResult.transform`).
    """
    cov = np.asarray(cov, dtype=np.float64)
    p = cov.shape[0]
    if cov.shape != (p, p) or np.shape(mean) != (p,):
        raise ValueError(f"cov must be square (p, p) and mean (p,), got {cov.shape} and {np.shape(mean)}")
    n = int(n_samples)
    if n < 2:
        raise ValueError(f"n_samples must be >= 2, got {n_samples}")
    if n_components is not None and not (1 <= n_components <= min(n, p)):
        raise ValueError(f"n_components must be in [1, {min(n, p)}], got {n_components}")
    n_max = min(n, p, max(max_components, n_components or 0))
    evals, evecs = _eigh_descending(cov)
    total_var = float(evals.sum())
    noise_var = _noise_variance(float(evals[n_max:].sum()), n_max, n, p)
    evals, evecs = evals[:n_max], evecs[:n_max]
    k, comps, threshold = _retained(evals, evecs, noise_var, n, p, n_components=n_components,
                                    max_components=max_components, noise_margin=noise_margin)
    return PcaResult(
        scores=np.zeros((0, k), dtype=np.float32),
        components=comps.astype(np.float32),
        mean=np.asarray(mean, dtype=np.float64).astype(np.float32),
        explained_variance=np.asarray(evals, dtype=np.float64),
        noise_variance=float(noise_var),
        threshold=threshold,
        n_components=k,
        total_variance=total_var,
    )


def _randomized_eig(
    X: np.ndarray, mean: np.ndarray, n_compute: int, random_state: int, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Top eigenpairs by randomized SVD plus the total variance (for the noise estimate)."""
    from sklearn.utils.extmath import randomized_svd

    Xc = X - mean.astype(X.dtype, copy=False)
    if weights is not None:
        Xc *= weights[:, None].astype(Xc.dtype)
    n = X.shape[0]
    total_var = float(np.einsum("ij,ij->", Xc, Xc, dtype=np.float64)) / max(n - 1, 1)
    _, s, vt = randomized_svd(Xc, n_compute, n_oversamples=10, n_iter=4, random_state=random_state)
    return (s.astype(np.float64) ** 2) / max(n - 1, 1), vt, total_var


def reduce_pca(
    X: np.ndarray,
    *,
    n_components: int | None = None,
    max_components: int = 10,
    svd_solver: str = "auto",
    sample_noise: np.ndarray | None = None,
    noise_margin: float = 1.5,
    random_state: int = 0,
    threads: int = 1,
    row_chunks: list[slice] | None = None,
) -> PcaResult:
    """Principal component analysis with the number of components chosen from the data.

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_features)
        One spectrum (feature vector) per row; float32 stays float32.
    n_components : int, optional
        Number of components to keep. By default the components whose covariance eigenvalue
        exceeds the Marchenko-Pastur edge of the estimated noise are kept (at least one, at most
        ``max_components``).
    max_components : int
        Upper bound on the automatically chosen number of components.
    svd_solver : {"auto", "covariance", "randomized"}
        ``"covariance"``: exact eigen-decomposition of the ``n_features x n_features`` covariance
        (accumulated in float64 over row chunks); ``"randomized"``: randomized SVD of the centered
        data (Halko et al., via scikit-learn). ``"auto"`` uses the covariance solver up to 256
        features, where it is exact and faster, and randomized SVD beyond.
    sample_noise : ndarray, shape (n_samples,), optional
        Relative noise level of each sample (e.g. ``1 / SNR`` of each pixel). When given, the
        mean, the axes and the number of components come from the rows scaled by
        ``1 / sample_noise`` (normalized to a median weight of 1), whose noise is the same for
        every row, so the Marchenko-Pastur rule holds and noisy rows do not inflate the noise
        eigenvalues; the scores are still the projections of the unscaled rows.
    noise_margin : float
        Factor (>= 1) on the Marchenko-Pastur edge: real noise is neither perfectly white across
        features nor the same in every row (photon noise grows where a pixel absorbs more, e.g.
        on the white line), which spreads the noise eigenvalues ~10-20 % beyond the ideal edge.
    random_state : int
        Seed of the randomized solver.
    threads : int
        Threads for the row-chunk passes of the covariance solver (mean, covariance, scores);
        chunk results are combined in chunk order, so the result does not depend on it.
    row_chunks : list of slice, optional
        Consecutive row blocks over which the weighted mean and the covariance are accumulated
        (covariance solver) and the scores projected (default blocks of 65536 rows). The float32
        products round differently for different blocks (BLAS kernels treat the rows at the end
        of a block apart), so a caller that computes the same blocks elsewhere (the bands of image
        rows of :func:`txm_live.phases.analyze_edge` on Dask workers) gets bit-identical
        components and scores.

    Returns
    -------
    PcaResult

    Raises
    ------
    ValueError
        If ``X`` is not a finite 2-D array with at least 2 samples, or an option is invalid.

    Notes
    -----
    Noise that is white across features (photon noise of independent energy points) puts every
    covariance eigenvalue of a pure-noise matrix below the Marchenko-Pastur edge
    ``sigma^2 (1 + sqrt(p/n))^2``; chemical contrast between phases shows up as eigenvalues above
    it. ``sigma^2`` is estimated from the variance left after the first ``max_components``
    components (the sum of the tail eigenvalues), divided by the expected sum of the smallest
    ``p - max_components`` Marchenko-Pastur eigenvalues, which is unbiased while the signal rank
    is below ``max_components``. Per-pixel noise that differs between pixels (thin and thick regions)
    keeps the noise covariance isotropic, so the rule still holds.

    Memory: the covariance solver needs one centered chunk of 65536 rows plus a ``p x p`` matrix;
    the randomized solver makes one centered copy of ``X``. Scores are ``n_samples x
    n_components`` float32.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    n, p = X.shape
    if n < 2 or p < 1:
        raise ValueError(f"X needs at least 2 samples and 1 feature, got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    if max_components < 1:
        raise ValueError(f"max_components must be >= 1, got {max_components}")
    if n_components is not None and not (1 <= n_components <= min(n, p)):
        raise ValueError(f"n_components must be in [1, {min(n, p)}], got {n_components}")
    if not (np.isfinite(noise_margin) and noise_margin >= 1.0):
        raise ValueError(f"noise_margin must be >= 1, got {noise_margin}")
    if svd_solver not in ("auto", "covariance", "randomized"):
        raise ValueError(f"svd_solver must be 'auto', 'covariance' or 'randomized', got {svd_solver!r}")
    # finite: one sum (NaN/inf propagate); a non-finite sum is checked exactly (overflow)
    if not (np.isfinite(X.sum()) or np.isfinite(X).all()):
        raise ValueError("X must be finite (mask NaN/inf samples before the PCA)")

    weights = None
    if sample_noise is not None:
        weights = _sample_weights(sample_noise, n)
        w2 = weights * weights
        mean = np.zeros(p)
        blocks = row_chunks if row_chunks is not None else _row_chunks(n)
        for part in map_ordered(lambda sl: weighted_sum_part(X[sl], w2[sl]), blocks, threads):
            mean += part
        mean /= w2.sum()
    else:
        mean = X.mean(axis=0, dtype=np.float64)
    n_max = min(n, p, max(max_components, n_components or 0))
    solver = svd_solver
    if solver == "auto":
        solver = "covariance" if p <= _COVARIANCE_MAX_FEATURES else "randomized"

    if solver == "covariance":
        evals, evecs = _covariance_eigh(X, mean, weights, threads, row_chunks)
        total_var = float(evals.sum())
        noise_var = _noise_variance(float(evals[n_max:].sum()), n_max, n, p)
        evals, evecs = evals[:n_max], evecs[:n_max]
    else:
        n_compute = min(n_max, min(n, p) - 1) if min(n, p) > 1 else 1
        evals, evecs, total_var = _randomized_eig(X, mean, max(n_compute, 1), random_state, weights)
        noise_var = _noise_variance(total_var - float(evals.sum()), evals.size, n, p)

    k, comps, threshold = _retained(evals, evecs, noise_var, n, p, n_components=n_components,
                                    max_components=max_components, noise_margin=noise_margin)
    comps32 = comps.astype(X.dtype if X.dtype == np.float32 else np.float64)
    mean_out = mean.astype(comps32.dtype)
    scores = np.empty((n, k), dtype=np.float32)

    def project(sl: slice) -> None:
        scores[sl] = (X[sl] - mean_out) @ comps32.T

    run_tiles(project, row_chunks if row_chunks is not None else _row_chunks(n), threads)
    return PcaResult(
        scores=scores,
        components=comps32.astype(np.float32),
        mean=mean_out.astype(np.float32),
        explained_variance=np.asarray(evals, dtype=np.float64),
        noise_variance=float(noise_var),
        threshold=float(threshold),
        n_components=k,
        total_variance=total_var,
    )


def nnls_two_references(Y: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative least squares of every column of ``Y`` on two reference spectra.

    Parameters
    ----------
    Y : ndarray, shape (n_energies, n_pixels)
        Spectra, energy-major.
    references : ndarray, shape (2, n_energies)

    Returns
    -------
    weights : ndarray of float32, shape (2, n_pixels)
    residual_rms : ndarray of float32, shape (n_pixels,)

    Notes
    -----
    Closed form, vectorized over pixels: the unconstrained solution where both weights are
    non-negative, otherwise the better of the two single-reference fits with a clipped weight
    (the exact NNLS solution for two references, since the active set is one of these).
    """
    Y = np.asarray(Y)
    R = np.asarray(references, dtype=np.float64)
    if Y.ndim != 2 or R.shape != (2, Y.shape[0]):
        raise ValueError(f"references must have shape (2, {Y.shape[0]}), got {R.shape}")
    G = R @ R.T
    if abs(np.linalg.det(G)) <= 1e-12 * float(np.trace(G)) ** 2:
        raise ValueError("references are linearly dependent")
    dtype = np.float32 if Y.dtype == np.float32 else np.float64
    b = (R.astype(dtype) @ Y).astype(np.float64)  # (2, n)
    yy = np.einsum("ij,ij->j", Y, Y, dtype=np.float64)
    c = np.linalg.solve(G, b)  # unconstrained
    # single-reference fits, clipped at zero
    s0 = np.clip(b[0] / G[0, 0], 0.0, None)
    s1 = np.clip(b[1] / G[1, 1], 0.0, None)
    # squared residual |y - Rc|^2 = yy - 2 c.b + c.G.c
    r_full = yy - 2 * (c * b).sum(0) + np.einsum("in,ij,jn->n", c, G, c)
    r0 = yy - 2 * s0 * b[0] + s0 * s0 * G[0, 0]
    r1 = yy - 2 * s1 * b[1] + s1 * s1 * G[1, 1]
    both = (c >= 0).all(axis=0)
    use0 = ~both & (r0 <= r1)
    use1 = ~both & ~use0
    w = np.where(both, c, 0.0)
    w[0] = np.where(use0, s0, w[0])
    w[1] = np.where(use1, s1, w[1])
    res = np.where(both, r_full, np.where(use0, r0, r1))
    rms = np.sqrt(np.clip(res, 0.0, None) / Y.shape[0])
    return w.astype(np.float32), rms.astype(np.float32)


def pca_lcf_comparison(
    norm_spectra: np.ndarray,
    *,
    references: np.ndarray | None = None,
    n_components: int = 2,
    mask: np.ndarray | None = None,
    random_state: int = 0,
) -> LcfComparison:
    """PCA with ``n_components`` components versus a non-negative two-reference LCF per pixel.

    Reproduces the argument of Duan et al. (2016), Supplementary Fig. S1: two principal components
    reconstruct nearly every pixel, yet a non-negative linear combination of the two majority
    phase spectra leaves a large residual exactly on the minority (third) phase.

    Parameters
    ----------
    norm_spectra : ndarray, shape (n_energies, ...)
        Edge-step normalized spectra, energy-major (``(n_e, H, W)`` or ``(n_e, n_pixels)``).
    references : ndarray, shape (2, n_energies), optional
        The two majority-phase mean spectra. By default they are the means of the two k-means
        clusters (k = 2) of the pixels in the ``n_components``-dimensional PCA space, which the
        two majority phases dominate.
    n_components : int
        Number of principal components (2 in the paper).
    mask : ndarray of bool, shape (...), optional
        Pixels to analyse; others get ``nan``.
    random_state : int
        Seed of the k-means initialisation.

    Returns
    -------
    LcfComparison

    Notes
    -----
    One matrix product serves all pixels; memory is about two float32 copies of the masked
    spectra.
    """
    Y = np.asarray(norm_spectra)
    if Y.ndim < 2:
        raise ValueError(f"norm_spectra must be (n_energies, ...), got shape {Y.shape}")
    n_e = Y.shape[0]
    pix_shape = Y.shape[1:]
    Y2 = Y.reshape(n_e, -1)
    if mask is None:
        sel = np.isfinite(Y2).all(axis=0)
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != pix_shape:
            raise ValueError(f"mask must have shape {pix_shape}, got {mask.shape}")
        sel = mask.reshape(-1) & np.isfinite(Y2).all(axis=0)
    if np.count_nonzero(sel) < max(3, n_components + 1):
        raise ValueError("norm_spectra: too few finite (masked) pixels for the comparison")
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    Ysel = Y2[:, sel]
    if not np.issubdtype(Ysel.dtype, np.floating):
        Ysel = Ysel.astype(np.float64)
    pca = reduce_pca(np.ascontiguousarray(Ysel.T), n_components=n_components, random_state=random_state)
    recon = pca.inverse_transform(pca.scores)  # (n_sel, n_e)
    pca_rms = np.sqrt(np.mean((recon - Ysel.T) ** 2, axis=1))

    if references is None:
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=2, n_init=4, random_state=random_state).fit(pca.scores)
        refs = np.stack([Ysel[:, km.labels_ == j].mean(axis=1) for j in range(2)])
        refs = refs[np.argsort(refs.max(axis=1))]  # low white line first
    else:
        refs = np.asarray(references, dtype=np.float64)
        if refs.shape != (2, n_e):
            raise ValueError(f"references must have shape (2, {n_e}), got {refs.shape}")
    w, rms = nnls_two_references(Ysel, refs)

    npix = Y2.shape[1]
    weights = np.full((2, npix), np.nan, dtype=np.float32)
    weights[:, sel] = w
    res_out = np.full(npix, np.nan, dtype=np.float32)
    res_out[sel] = rms
    scores_out = np.full((n_components, npix), np.nan, dtype=np.float32)
    scores_out[:, sel] = pca.scores.T
    pca_out = np.full(npix, np.nan, dtype=np.float32)
    pca_out[sel] = pca_rms
    evr = pca.explained_variance_ratio[:n_components]
    return LcfComparison(
        references=refs,
        weights=weights.reshape((2, *pix_shape)),
        residual_rms=res_out.reshape(pix_shape),
        pca_scores=scores_out.reshape((n_components, *pix_shape)),
        pca_residual_rms=pca_out.reshape(pix_shape),
        explained_variance_ratio=np.asarray(evr),
    )
