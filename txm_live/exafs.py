"""EXAFS of phase mean spectra: background removal, chi(k), and the Fourier transform |chi(R)|.

Per-pixel EXAFS is buried in noise at TXM photon budgets; the mean spectrum of a chemical phase
(thousands of pixels) is not. :func:`extract_exafs` takes one mean spectrum, :func:`extract_exafs_many`
several at once (shared design matrices and one FFT call, no per-spectrum Python loop in the numerics).

Conventions follow larch (``autobk``/``xftf``): ``k = sqrt(0.2625 (E - e0))`` in 1/A, chi(k) on a
uniform grid of step 0.05 1/A starting at 0, k-weighted, windowed (Hanning taper of width
``dk``), zero-padded to 2048 points and transformed with ``kstep/sqrt(pi) * FFT``, so
``R = pi/(0.05 * 2048) * n`` (0.0307 A steps), not phase-corrected.
"""

from __future__ import annotations

import numpy as np

from txm_live.errors import ExafsUnavailableError, InsufficientDataError
from txm_live.edges import choose_post_order
from txm_live.normalize import normalize_athena
from txm_live.results import ExafsResult

__all__ = ["ETOK", "KSTEP", "NFFT", "MIN_K_SPAN", "default_k_range", "extract_exafs", "extract_exafs_many", "ft_window"]

#: k [1/A] = sqrt(ETOK * (E - e0) [eV]) (2 m_e / hbar^2).
ETOK = 0.2625
#: Step of the uniform k grid (1/A), as larch.
KSTEP = 0.05
#: Length of the zero-padded FFT, as larch's xftf.
NFFT = 2048
#: First-shell peak search range (A, apparent distance).
FIRST_SHELL_RANGE = (1.0, 4.0)
_WINDOWS = ("hanning", "sine", "welch", "parzen", "rectangular")
#: Default Fourier-transform range (1/A): the seed paper's 2 - 6.5 (Duan et al. 2016; TXM phase
#: means are too noisy beyond), shortened when the window ends earlier.
DEFAULT_K_RANGE = (2.0, 6.5)
#: Fewest 1/A of k range that resolve a first shell (two periods of a 2.5 A shell: pi / 2.5 each,
#: plus the tapers); shorter ranges are "EXAFS not available".
MIN_K_SPAN = 3.0
#: Default normalization ranges (eV relative to e0) before they are fitted into the energies.
_DEFAULT_NORM = ((-200.0, -60.0), (90.0, 440.0))


def default_k_range(k_end: float, *, dk: float = 1.0) -> tuple[float, float]:
    """Default Fourier-transform range for data ending at ``k_end`` (1/A).

    ``kmin = 2`` (below, about 15 eV above e0, the near-edge structure is not EXAFS) and
    ``kmax = min(6.5, k_end - dk)`` so the falling taper ends inside the data.

    Raises
    ------
    ExafsUnavailableError
        ``kmax - kmin < MIN_K_SPAN`` (3 1/A): the window does not reach far enough above e0.
    """
    kmin, kmax = DEFAULT_K_RANGE[0], min(DEFAULT_K_RANGE[1], float(k_end) - float(dk))
    if kmax - kmin < MIN_K_SPAN:
        need = kmin + MIN_K_SPAN + dk
        raise ExafsUnavailableError(
            f"EXAFS not available: the window ends at k = {k_end:.1f} 1/\u00c5 "
            f"({k_end**2 / ETOK:.0f} eV above e0); the default transform needs k >= {need:.1f} 1/\u00c5 "
            f"({need**2 / ETOK:.0f} eV above e0)"
        )
    return kmin, kmax


def _norm_ranges(
    energies: np.ndarray, e0: float, pre: tuple[float, float] | None, post: tuple[float, float] | None
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Explicit ranges as given; missing ones from the hard-X-ray defaults fitted into the data."""
    if pre is not None and post is not None:
        return pre, post
    from txm_live.edges import EdgeWindow, fit_window

    nominal = EdgeWindow("", "", e0, *_DEFAULT_NORM)
    try:
        fitted = fit_window(nominal, energies)
    except InsufficientDataError as exc:
        raise ExafsUnavailableError(f"EXAFS not available: cannot normalize the spectrum: {exc}") from exc
    return (fitted.pre if pre is None else pre), (fitted.post if post is None else post)


def ft_window(k: np.ndarray, *, kmin: float, kmax: float, dk: float = 1.0, window: str = "hanning") -> np.ndarray:
    """Fourier-transform window on ``k`` (larch ``ftwindow`` conventions, evaluated analytically).

    Parameters
    ----------
    k : ndarray
        Wavenumbers (1/A).
    kmin, kmax : float
        Window range; the taper runs from ``kmin - dk/2`` to ``kmin + dk/2`` and from
        ``kmax - dk/2`` to ``kmax + dk/2``.
    dk : float
        Taper width (1/A). 0 gives a rectangular window.
    window : {"hanning", "sine", "welch", "parzen", "rectangular"}
        Taper shape: cos^2 (Hanning), sine, Welch (parabolic), Parzen (linear) or none.

    Returns
    -------
    ndarray, same shape as ``k``, values in [0, 1]
    """
    if window not in _WINDOWS:
        raise ValueError(f"window must be one of {_WINDOWS}, got {window!r}")
    if not (np.isfinite(kmin) and np.isfinite(kmax) and 0 <= kmin < kmax):
        raise ValueError(f"kmin, kmax must satisfy 0 <= kmin < kmax, got {kmin}, {kmax}")
    if not (np.isfinite(dk) and dk >= 0):
        raise ValueError(f"dk must be >= 0, got {dk}")
    k = np.asarray(k, dtype=np.float64)
    if window == "rectangular" or dk == 0:
        return ((k >= kmin) & (k <= kmax)).astype(np.float64)
    x1, x2, x3, x4 = kmin - dk / 2, kmin + dk / 2, kmax - dk / 2, kmax + dk / 2
    up = np.clip((k - x1) / (x2 - x1), 0.0, 1.0)  # 0 -> 1 over the rising taper
    down = np.clip((x4 - k) / (x4 - x3), 0.0, 1.0)  # 1 -> 0 over the falling taper
    if window == "hanning":
        shape = lambda t: np.sin(0.5 * np.pi * t) ** 2  # noqa: E731
    elif window == "sine":
        shape = lambda t: np.sin(0.5 * np.pi * t)  # noqa: E731
    elif window == "welch":
        shape = lambda t: 1.0 - (1.0 - t) ** 2  # noqa: E731
    else:  # parzen: linear
        shape = lambda t: t  # noqa: E731
    return shape(up) * shape(down)


def _check(energies: np.ndarray, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    energies = np.asarray(energies, dtype=np.float64)
    if energies.ndim != 1 or energies.size < 10:
        raise ValueError(f"energies must be 1-D with at least 10 values, got shape {energies.shape}")
    if not np.all(np.isfinite(energies)) or np.any(np.diff(energies) <= 0):
        raise ValueError("energies must be finite and strictly increasing")
    mu = np.asarray(mu)
    if mu.shape[0] != energies.size:
        raise ValueError(f"mu must have n_energies={energies.size} rows, got shape {mu.shape}")
    if not np.issubdtype(mu.dtype, np.number) or np.iscomplexobj(mu):
        raise ValueError(f"mu must be real numbers, got dtype {mu.dtype}")
    return energies, mu


def extract_exafs_many(
    energies: np.ndarray,
    spectra: np.ndarray,
    *,
    e0: float,
    kmin: float | None = None,
    kmax: float | None = None,
    kweight: int = 2,
    window: str = "hanning",
    dk: float = 1.0,
    rmax: float = 6.0,
    post_end: float | None = None,
    bkg_kmin: float | None = None,
    bkg_order: int = 3,
    pre: tuple[float, float] | None = None,
    post: tuple[float, float] | None = None,
    normalize: bool = True,
    phases: np.ndarray | None = None,
) -> tuple[ExafsResult, ...]:
    """EXAFS of several spectra at once; see :func:`extract_exafs` for the parameters.

    Parameters
    ----------
    spectra : ndarray, shape (n_energies, n_spectra)
        Energy-major like the cube (one column per phase mean spectrum).
    phases : ndarray of int, optional
        Phase index stored in each result; default ``0..n_spectra-1``.

    Returns
    -------
    tuple of ExafsResult, one per column.
    """
    energies, spectra = _check(energies, spectra)
    if spectra.ndim != 2:
        raise ValueError(f"spectra must be 2-D (n_energies, n_spectra), got shape {spectra.shape}")
    n_spec = spectra.shape[1]
    e0 = float(e0)
    if not (np.isfinite(e0) and energies[0] < e0 < energies[-1]):
        raise ValueError(f"e0={e0} must lie inside the energy range [{energies[0]}, {energies[-1]}]")
    if isinstance(kweight, bool) or not isinstance(kweight, (int, np.integer)) or not 0 <= kweight <= 4:
        raise ValueError(f"kweight must be an integer in 0..4, got {kweight!r}")
    if isinstance(bkg_order, bool) or not isinstance(bkg_order, (int, np.integer)) or not 0 <= bkg_order <= 8:
        raise ValueError(f"bkg_order must be an integer in 0..8, got {bkg_order!r}")
    if not (np.isfinite(rmax) and rmax > FIRST_SHELL_RANGE[1]):
        raise ValueError(f"rmax must be > {FIRST_SHELL_RANGE[1]} A, got {rmax}")
    post_end = float(energies[-1]) if post_end is None else float(post_end)
    if not (np.isfinite(post_end) and post_end > e0):
        raise ValueError(f"post_end must be an energy above e0={e0}, got {post_end}")
    post_end = min(post_end, float(energies[-1]))
    k_end = np.sqrt(ETOK * (post_end - e0))
    if kmin is None and kmax is None:
        kmin, kmax = default_k_range(k_end, dk=dk)
    elif kmin is None:
        kmin = DEFAULT_K_RANGE[0]
    elif kmax is None:
        kmax = min(DEFAULT_K_RANGE[1], k_end - dk)
    kmin, kmax = float(kmin), float(kmax)
    if not (np.isfinite(kmin) and np.isfinite(kmax) and 0 <= kmin < kmax):
        raise ValueError(f"kmin, kmax must satisfy 0 <= kmin < kmax, got {kmin}, {kmax}")
    if kmax > k_end:
        raise ValueError(
            f"kmax={kmax} is beyond the data: post_end={post_end:.1f} eV gives k_end={k_end:.2f} 1/A"
        )
    win_k = ft_window(np.zeros(1), kmin=kmin, kmax=kmax, dk=dk, window=window)  # validates window, dk
    del win_k
    bkg_kmin = max(kmin, 0.5) if bkg_kmin is None else float(bkg_kmin)
    if not (np.isfinite(bkg_kmin) and 0 < bkg_kmin < kmax):
        raise ValueError(f"bkg_kmin must satisfy 0 < bkg_kmin < kmax, got {bkg_kmin}")
    if phases is None:
        phases = np.arange(n_spec)
    phases = np.asarray(phases)
    if phases.shape != (n_spec,):
        raise ValueError(f"phases must have one entry per spectrum ({n_spec}), got shape {phases.shape}")

    # 1. edge-step normalization (harmless on already normalized means: step ~ 1)
    if normalize:
        pre, post = _norm_ranges(energies, e0, pre, post)
        in_post = energies[(energies >= e0 + post[0]) & (energies <= e0 + post[1])]
        order = choose_post_order(float(np.ptp(in_post)) if in_post.size else 0.0, int(in_post.size), e0)
        norm = normalize_athena(
            energies, spectra.astype(np.float64), e0=e0, pre=pre, post=post, post_order=order
        ).norm
    else:
        norm = spectra.astype(np.float64)

    # 2. onto the uniform k grid 0..k_end: shared linear-interpolation weights for all spectra
    k = KSTEP * np.arange(int(np.floor(k_end / KSTEP + 1e-9)) + 1)
    e_k = e0 + k**2 / ETOK
    j = np.clip(np.searchsorted(energies, e_k, side="right") - 1, 0, energies.size - 2)
    frac = ((e_k - energies[j]) / (energies[j + 1] - energies[j]))[:, None]
    norm_k = norm[j] * (1.0 - frac) + norm[j + 1] * frac  # (n_k, n_spec)

    # 3. background: polynomial in k on [bkg_kmin, k_end], one shared least-squares solve
    fit = k >= bkg_kmin - 1e-9
    if np.count_nonzero(fit) < bkg_order + 5:
        raise ValueError(f"bkg_kmin={bkg_kmin}: too few k points up to k_end={k_end:.2f} for bkg_order={bkg_order}")
    kc = (k - 0.5 * (bkg_kmin + k_end)) / (0.5 * (k_end - bkg_kmin))  # [-1, 1] on the fit range
    design = np.polynomial.legendre.legvander(kc, bkg_order)  # (n_k, order+1)
    coef = np.linalg.pinv(design[fit]) @ norm_k[fit]
    bkg = design @ coef
    chi = np.where(fit[:, None], norm_k - bkg, 0.0)  # chi below bkg_kmin is unknown: 0

    # 4. k-weight, window, zero-padded FFT (larch xftf conventions)
    win = ft_window(k, kmin=kmin, kmax=kmax, dk=dk, window=window)
    weighted = chi * (k**kweight * win)[:, None]
    padded = np.zeros((NFFT, n_spec))
    padded[: k.size] = weighted
    chir = (KSTEP / np.sqrt(np.pi)) * np.fft.fft(padded, axis=0)[: NFFT // 2]
    rstep = np.pi / (KSTEP * NFFT)
    n_r = int(min(NFFT // 2, 1.01 + rmax / rstep))
    r = rstep * np.arange(n_r)
    mag = np.abs(chir[:n_r])

    # 5. first-shell peak: largest local maximum of |chi(R)| in 1..4 A, parabolic refinement
    first = _first_shell(r, mag)

    k_out = k[fit]
    return tuple(
        ExafsResult(
            phase=int(phases[i]),
            k=k_out,
            chi=chi[fit, i].copy(),
            kweight=int(kweight),
            r=r,
            chir_mag=mag[:, i].copy(),
            first_shell_r=float(first[i]),
            k_window=(float(kmin), float(kmax)),
            window_dk=float(dk),
        )
        for i in range(n_spec)  # packaging only: one dataclass per spectrum
    )


def _first_shell(r: np.ndarray, mag: np.ndarray) -> np.ndarray:
    """Position of the largest |chi(R)| maximum in FIRST_SHELL_RANGE per column (sub-grid)."""
    sel = np.flatnonzero((r >= FIRST_SHELL_RANGE[0]) & (r <= FIRST_SHELL_RANGE[1]))
    i = sel[np.argmax(mag[sel], axis=0)]  # (n_spec,)
    cols = np.arange(mag.shape[1])
    inner = (i > 0) & (i < r.size - 1)
    ic = np.clip(i, 1, r.size - 2)
    ym, y0, yp = mag[ic - 1, cols], mag[ic, cols], mag[ic + 1, cols]
    denom = ym - 2 * y0 + yp
    shift = np.zeros_like(y0)
    np.divide(0.5 * (ym - yp), denom, out=shift, where=inner & (denom < 0))
    shift = np.clip(shift, -0.5, 0.5)
    out = r[i] + shift * (r[1] - r[0])
    out[~np.isfinite(mag[i, cols])] = np.nan
    return out


def extract_exafs(
    energies: np.ndarray,
    mu: np.ndarray,
    *,
    e0: float,
    kmin: float | None = None,
    kmax: float | None = None,
    kweight: int = 2,
    window: str = "hanning",
    dk: float = 1.0,
    rmax: float = 6.0,
    post_end: float | None = None,
    bkg_kmin: float | None = None,
    bkg_order: int = 3,
    pre: tuple[float, float] | None = None,
    post: tuple[float, float] | None = None,
    normalize: bool = True,
    phase: int = 0,
) -> ExafsResult:
    """EXAFS of one (phase mean) spectrum: chi(k), |chi(R)| and the apparent first-shell distance.

    Parameters
    ----------
    energies : ndarray, shape (n_e,)
        Energies (eV), strictly increasing, any grid.
    mu : ndarray, shape (n_e,)
        Absorption, raw or edge-step normalized (e.g. ``EdgeResult.mean_spectra[i]``).
    e0 : float
        Edge energy (eV); k = 0 there.
    kmin, kmax : float, optional
        Fourier-transform k range (1/A). Default: scaled to the window by
        :func:`default_k_range`, the seed paper's 2 - 6.5 (Duan et al. 2016) with ``kmax``
        lowered to ``k(post_end) - dk``; given values are used as they are.
    kweight : int
        chi(k) is multiplied by k**kweight before the transform.
    window : {"hanning", "sine", "welch", "parzen", "rectangular"}
        Window taper (``dk`` wide at each end, larch conventions).
    dk : float
        Taper width (1/A).
    rmax : float
        Last R (A) returned.
    post_end : float, optional
        Last energy (eV) used for the background and chi(k). Default: the last energy. For an L3
        edge it must stay below the L2 pre-edge (Nd: the L3 window ends at 6648 eV, k = 10.7).
    bkg_kmin : float, optional
        Start of the background fit (1/A), default ``max(kmin, 0.5)``; chi(k) starts here.
    bkg_order : int
        Order of the background polynomial in k (Legendre basis on the fit range).
    pre, post : (float, float), optional
        Windows of the edge-step normalization done first (relative to ``e0``, eV). Default:
        [-200, -60] and [+90, +440] eV fitted into the energies
        (:func:`txm_live.edges.fit_window`); the post-edge order follows
        :func:`txm_live.edges.choose_post_order`.
    normalize : bool
        Normalize first (default). Pass False if ``mu`` is already normalized *and* flat
        pre-edge-subtracted.
    phase : int
        Phase index stored in the result.

    Returns
    -------
    ExafsResult
        ``k`` from ``bkg_kmin`` to ``k(post_end)`` in 0.05 steps, unweighted ``chi``, ``r`` (0.0307 A
        steps up to ``rmax``), ``chir_mag`` and ``first_shell_r``. A spectrum containing NaN
        (e.g. the mean of an empty phase) gives NaN results, not an exception.

    Raises
    ------
    ValueError
        Bad shapes, ``e0`` outside the data, an explicit ``kmax`` beyond ``post_end`` (names
        the parameter).
    ExafsUnavailableError
        With the default k range: the window ends below ``k = kmin + MIN_K_SPAN + dk`` (6 1/A,
        137 eV above e0), e.g. a soft-X-ray L3 window 11 eV long (k = 1.7 1/A). The message
        reads ``"EXAFS not available: the window ends at k = ..."``; callers report it as a
        note, not an error.

    Notes
    -----
    Background: ``mu0(k)`` is a polynomial of order ``bkg_order`` in k fitted to the normalized
    spectrum on ``[bkg_kmin, k(post_end)]``. Over several EXAFS periods (first shell 2R ~ 5 A,
    period ~ 1.3 1/A; the fit range spans ~ 8.7 1/A for the Nd L3 window) a low-order
    polynomial cannot follow the oscillation, so ``chi = mu_norm - mu0`` keeps it. This is simpler
    than larch's AUTOBK spline (no R-space optimisation) and linear, so several spectra share one
    solve. Edge-step normalization means ``chi`` is in edge-step units, like larch's.

    The apparent first-shell distance is the position of the largest maximum of ``|chi(R)|`` in
    R = 1 - 4 A, refined by a parabola through the three grid points around it; it is shorter
    than the true bond length by the scattering phase shift (~0.4 - 0.5 A for Nd-O and Nd-Fe).

    Memory and time: O(n_e + 2048) per spectrum; microseconds to milliseconds.
    """
    mu = np.asarray(mu)
    if mu.ndim != 1:
        raise ValueError(f"mu must be 1-D (one spectrum); use extract_exafs_many for several, got shape {mu.shape}")
    (res,) = extract_exafs_many(
        energies,
        mu[:, None],
        e0=e0,
        kmin=kmin,
        kmax=kmax,
        kweight=kweight,
        window=window,
        dk=dk,
        rmax=rmax,
        post_end=post_end,
        bkg_kmin=bkg_kmin,
        bkg_order=bkg_order,
        pre=pre,
        post=post,
        normalize=normalize,
        phases=np.array([phase]),
    )
    return res
