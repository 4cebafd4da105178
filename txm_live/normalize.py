"""Edge-step normalization of every pixel spectrum at once (Athena pre/post-edge lines and MBACK).

Spectra are energy-major, ``(n_energies, n_pixels)`` or ``(n_energies, H, W)`` (the cube layout):
each window of energies is one small design matrix shared by all pixels, so one least-squares
solve per window normalizes the whole image. Nothing here loops over pixels in Python; pixels are
processed in chunks only to bound the size of float64 temporaries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import erfc

from txm_live.edges import POST_ORDER_SPANS, EdgeWindow, choose_post_order, resolve_post_order

__all__ = [
    "EdgeFeatures",
    "Normalized",
    "POST_ORDER_SPANS",
    "athena_features",
    "athena_window_features",
    "choose_post_order",
    "normalize_athena",
    "normalize_mback",
    "normalize_window",
    "resolve_post_order",
]

#: Scale (eV) of the internal polynomial variable ``(E - e0) / _X_SCALE`` (conditioning only).
_X_SCALE = 100.0
#: Float64 temporaries per chunk are kept below about this many bytes.
_CHUNK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Normalized:
    """Edge-step normalized spectra of many pixels.

    Attributes
    ----------
    norm : ndarray
        Normalized spectra, same shape and dtype as the input (float32 stays float32, everything
        else becomes float64). ``NaN`` for pixels whose edge step is not positive and finite.
    edge_step : ndarray, shape spectra.shape[1:]
        Edge step per pixel in the units of the input (optical density).
    pre_edge_noise : ndarray, shape spectra.shape[1:]
        Root-mean-square residual of the straight pre-edge line fit per pixel, with
        ``n_pre - 2`` degrees of freedom: the per-energy-point noise of the pixel (optical density),
        the denominator of the edge-step SNR (:func:`txm_live.snr.snr_mask`).
    pre_coefficients : ndarray, shape (2, *spectra.shape[1:])
        Pre-edge line ``c0 + c1 (E - e0)`` per pixel (c1 per eV).
    post_coefficients : ndarray
        Athena: post-edge polynomial ``sum_k c_k (E - e0)**k`` per pixel, shape
        ``(post_order + 1, *spectra.shape[1:])`` (c_k per eV**k). MBACK: row 0 is the amplitude
        ``A`` of the tabulated f''(E) in the units of mu, the following rows are the Legendre
        coefficients of the background polynomial (and the erfc amplitude last when fitted), see
        :func:`normalize_mback`.
    e0 : float
        Edge energy (eV) at which the edge step is evaluated.
    method : str
        ``"athena"`` or ``"mback"``.
    edge_step_error : ndarray or None, shape spectra.shape[1:]
        Standard error of :attr:`edge_step` per pixel from the pixel's own fit residuals and the
        point counts (see :func:`normalize_athena`, Notes); ``edge_step / edge_step_error`` is the
        significance of the fitted step. ``None`` when not computed.
    """

    norm: np.ndarray
    edge_step: np.ndarray
    pre_edge_noise: np.ndarray
    pre_coefficients: np.ndarray
    post_coefficients: np.ndarray
    e0: float
    method: str = "athena"
    edge_step_error: np.ndarray | None = None

    def pre_edge_line(self, energies: np.ndarray) -> np.ndarray:
        """Evaluate the pre-edge line of every pixel at ``energies``; shape ``(n_e, *pixels)``."""
        x = np.asarray(energies, dtype=np.float64) - self.e0
        x = x.reshape((-1,) + (1,) * (self.pre_coefficients.ndim - 1))
        return self.pre_coefficients[0] + x * self.pre_coefficients[1]

    def post_edge_line(self, energies: np.ndarray) -> np.ndarray:
        """Evaluate the Athena post-edge polynomial at ``energies``; shape ``(n_e, *pixels)``."""
        if self.method != "athena":
            raise ValueError("post_edge_line is defined for method='athena' only")
        x = np.asarray(energies, dtype=np.float64) - self.e0
        x = x.reshape((-1,) + (1,) * (self.post_coefficients.ndim - 1))
        out = np.zeros(x.shape[:1] + self.post_coefficients.shape[1:])
        for k in range(self.post_coefficients.shape[0] - 1, -1, -1):  # Horner over orders, not pixels
            out = out * x + self.post_coefficients[k]
        return out


# ----------------------------------------------------------------------------------------------
# validation helpers


def _check_inputs(energies: np.ndarray, spectra: np.ndarray, e0: float) -> tuple[np.ndarray, np.ndarray, float]:
    energies = np.asarray(energies, dtype=np.float64)
    if energies.ndim != 1 or energies.size < 2:
        raise ValueError(f"energies must be a 1-D array of at least 2 values, got shape {energies.shape}")
    if not np.all(np.isfinite(energies)):
        raise ValueError("energies must be finite")
    if np.any(np.diff(energies) <= 0):
        raise ValueError("energies must be strictly increasing")
    spectra = np.asarray(spectra)
    if spectra.ndim < 1 or spectra.shape[0] != energies.size:
        raise ValueError(
            f"spectra must be energy-major with shape (n_energies={energies.size}, ...), got {spectra.shape}"
        )
    if not (np.issubdtype(spectra.dtype, np.floating) or np.issubdtype(spectra.dtype, np.integer)):
        raise ValueError(f"spectra must be a real numeric array, got dtype {spectra.dtype}")
    try:
        e0 = float(e0)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"e0 must be a number, got {e0!r}") from exc
    if not np.isfinite(e0):
        raise ValueError(f"e0 must be finite, got {e0}")
    if not energies[0] < e0 < energies[-1]:
        raise ValueError(f"e0={e0} lies outside the energy range [{energies[0]}, {energies[-1]}]")
    return energies, spectra, e0


def _check_range(name: str, rng: tuple[float, float], *, negative: bool) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in rng)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a pair of numbers (eV relative to e0), got {rng!r}") from exc
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"{name} must satisfy {name}[0] < {name}[1], got {rng!r}")
    if negative and not hi < 0:
        raise ValueError(f"{name} must lie below e0 ({name}[1] < 0), got {rng!r}")
    if not negative and not lo > 0:
        raise ValueError(f"{name} must lie above e0 ({name}[0] > 0), got {rng!r}")
    return lo, hi


def _window_index(name: str, energies: np.ndarray, e0: float, rng: tuple[float, float], n_min: int) -> np.ndarray:
    idx = np.flatnonzero((energies >= e0 + rng[0]) & (energies <= e0 + rng[1]))
    if idx.size < n_min:
        raise ValueError(
            f"{name}={rng} holds {idx.size} energies in [{e0 + rng[0]:.1f}, {e0 + rng[1]:.1f}] eV; "
            f"at least {n_min} are needed"
        )
    return idx


def _as_2d(spectra: np.ndarray) -> tuple[np.ndarray, tuple[int, ...], np.dtype]:
    """Energy-major 2-D view (no copy when possible) and the output dtype."""
    out_dtype = np.dtype(np.float32) if spectra.dtype == np.float32 else np.dtype(np.float64)
    return spectra.reshape(spectra.shape[0], -1), spectra.shape[1:], out_dtype


def _chunks(n_pix: int, rows: int) -> list[slice]:
    step = max(1, int(_CHUNK_BYTES // (8 * max(rows, 1))))
    return [slice(i, min(i + step, n_pix)) for i in range(0, n_pix, step)]


def _fill_norm(
    y: np.ndarray,
    out_dtype: np.dtype,
    baseline: Callable[[slice], np.ndarray],
    inv_step: np.ndarray,
) -> np.ndarray:
    """norm = (y - baseline) * inv_step, chunk by chunk in the output dtype."""
    n_e, n_pix = y.shape
    norm = np.empty((n_e, n_pix), dtype=out_dtype)
    for sl in _chunks(n_pix, n_e):
        out = norm[:, sl]
        np.subtract(y[:, sl], baseline(sl), out=out, dtype=out_dtype)
        out *= inv_step[sl].astype(out_dtype)
    return norm


def _pre_edge_fit(
    y: np.ndarray, energies: np.ndarray, e0: float, idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Straight line on the pre-edge window for all pixels: coefficients (2, n_pix), rms noise and
    the variance factor of the fitted value at e0 (``sum(pinv[0]**2)``: var(c0) = factor sigma^2)."""
    x = (energies[idx] - e0) / _X_SCALE
    design = np.stack([np.ones_like(x), x], axis=1)  # (n_win, 2)
    pinv = np.linalg.pinv(design)  # (2, n_win), shared by all pixels
    n_pix = y.shape[1]
    coef = np.empty((2, n_pix))
    noise = np.empty(n_pix)
    for sl in _chunks(n_pix, idx.size):
        win = y[idx, sl].astype(np.float64)
        c = pinv @ win
        resid = win - design @ c
        coef[:, sl] = c
        noise[sl] = np.sqrt(np.einsum("ij,ij->j", resid, resid) / (idx.size - 2))
    coef[1] /= _X_SCALE
    return coef, noise, float(pinv[0] @ pinv[0])


# ----------------------------------------------------------------------------------------------
# Athena


def normalize_athena(
    energies: np.ndarray,
    spectra: np.ndarray,
    *,
    e0: float,
    pre: tuple[float, float] = (-200.0, -60.0),
    post: tuple[float, float] = (90.0, 440.0),
    post_order: int = 2,
    flatten: bool = False,
    rows: slice | None = None,
) -> Normalized:
    """Athena-style pre/post-edge normalization of all pixel spectra with one solve per window.

    Parameters
    ----------
    energies : ndarray, shape (n_e,)
        Energies (eV), strictly increasing; the grid may be non-uniform.
    spectra : ndarray, shape (n_e, n_pixels) or (n_e, H, W) or (n_e,)
        Absorption (optical density, mu t) of every pixel, energy-major. float32 stays float32.
    e0 : float
        Edge energy (eV), fixed for all pixels (per-pixel E0 finding is too noisy at TXM SNR).
    pre : (float, float)
        Pre-edge fitting range relative to ``e0`` (eV), both negative. At least 3 energies.
    post : (float, float)
        Post-edge fitting range relative to ``e0`` (eV), both positive. At least
        ``post_order + 2`` energies. For an L3 edge keep ``e0 + post[1]`` below the L2 pre-edge
        (:func:`txm_live.edges.default_windows` does).
    post_order : int
        Order of the post-edge polynomial: 0 (constant), 1 (line) or 2 (quadratic), 3 at most.
    flatten : bool
        Return Athena's *flattened* spectrum: above ``e0`` the difference between the post-edge
        polynomial and the extrapolated pre-edge line is removed,
        ``norm = (mu - post(E) + step) / step`` for ``E >= e0`` (larch ``pre_edge(...).flat``).
        The post-edge then oscillates about 1 instead of following the decay of the absorption
        cross section (~ -15 % over 440 eV at the Nd L3 edge), like the simulator's ground-truth
        normalized spectra. Default False (plain ``(mu - pre)/step``).

    rows : slice, optional
        Return ``norm`` only for ``energies[rows]`` (the fits still use the whole pre- and
        post-edge ranges; the rows returned are exactly those of the full ``norm``). Filling
        ``norm`` is most of the cost: a caller that keeps only the near-edge rows saves it.

    Returns
    -------
    Normalized
        ``norm = (mu - pre_line) / edge_step`` with ``edge_step = post(e0) - pre(e0)``.

    Raises
    ------
    ValueError
        Bad shapes, non-increasing energies, ``e0`` outside the data, a window holding too few
        energies (the message names the parameter).

    Notes
    -----
    The pre-edge line and post-edge polynomial are written in ``x = E - e0``, so ``c0`` of each
    is the value at ``e0`` and ``edge_step = post_c0 - pre_c0``. Both fits are linear least
    squares with a design matrix ``A`` shared by all pixels: ``coef = pinv(A) @ Y_window``.
    The post-edge polynomial is fitted to ``mu`` itself; since it has at least the pre-edge
    line's degrees of freedom this equals Athena/larch's fit of ``mu - pre_line`` (for
    ``post_order >= 1``). larch evaluates both curves at the grid point nearest to ``e0``; we
    evaluate them at ``e0``.

    Memory: the output ``norm`` has the size of the input (387k pixels x 640 energies float32:
    0.99 GB in, 0.99 GB out). Only the window rows are converted to float64, in chunks of pixels
    of at most ~64 MB, and ``norm`` is filled chunk by chunk in the input dtype, so the peak is
    about ``2 x input + 0.2 GB``. Pass a view of only the energies you need (e.g. the L3 window
    of the cube) to keep it small.
    """
    energies, spectra, e0 = _check_inputs(energies, spectra, e0)
    pre = _check_range("pre", pre, negative=True)
    post = _check_range("post", post, negative=False)
    if isinstance(post_order, bool) or not isinstance(post_order, (int, np.integer)) or not 0 <= post_order <= 3:
        raise ValueError(f"post_order must be an integer in 0..3, got {post_order!r}")
    post_order = int(post_order)
    i_pre = _window_index("pre", energies, e0, pre, 3)
    i_post = _window_index("post", energies, e0, post, post_order + 2)

    y, spatial, out_dtype = _as_2d(spectra)
    n_pix = y.shape[1]
    pre_coef, noise, pre_var0 = _pre_edge_fit(y, energies, e0, i_pre)

    xp = (energies[i_post] - e0) / _X_SCALE
    design = np.vander(xp, post_order + 1, increasing=True)
    pinv = np.linalg.pinv(design)
    post_coef = np.empty((post_order + 1, n_pix))
    for sl in _chunks(n_pix, i_post.size):
        post_coef[:, sl] = pinv @ y[i_post, sl].astype(np.float64)
    post_coef /= (_X_SCALE ** np.arange(post_order + 1))[:, None]

    step = post_coef[0] - pre_coef[0]
    # standard error of post(e0) - pre(e0) with the per-point noise of the pixel's pre-edge (the
    # post-edge residuals also hold EXAFS and white-line tails the model does not follow)
    sigma2 = noise.astype(np.float64) ** 2
    step_error = np.sqrt(sigma2 * (pre_var0 + float(pinv[0] @ pinv[0])))
    inv_step = _safe_inverse(step)
    x_all = energies - e0 if rows is None else (energies - e0)[rows]

    x_out = x_all.astype(out_dtype)
    c_out = pre_coef.astype(out_dtype)
    above = np.flatnonzero(x_all >= 0) if flatten else np.zeros(0, dtype=int)
    post_out = post_coef.astype(out_dtype)
    step_out = step.astype(out_dtype)

    def baseline(sl: slice) -> np.ndarray:
        # in the output dtype: float32 input gets a float32 baseline (half the memory traffic)
        line = np.multiply.outer(x_out, c_out[1, sl])
        line += c_out[0, sl]
        if above.size:  # flattened: post(E) - step above e0
            xa = x_out[above][:, None]
            post_line = np.zeros((above.size, line.shape[1]), dtype=out_dtype)
            for k in range(post_order, -1, -1):  # Horner over the orders
                post_line *= xa
                post_line += post_out[k, sl]
            line[above] = post_line - step_out[sl]
        return line

    norm = _fill_norm(y if rows is None else y[rows], out_dtype, baseline, inv_step)
    return Normalized(
        norm=norm.reshape((norm.shape[0],) + spectra.shape[1:]),
        edge_step=step.astype(out_dtype).reshape(spatial),
        pre_edge_noise=noise.astype(out_dtype).reshape(spatial),
        pre_coefficients=pre_coef.astype(out_dtype).reshape((2,) + spatial),
        post_coefficients=post_coef.astype(out_dtype).reshape((post_order + 1,) + spatial),
        e0=e0,
        method="athena",
        edge_step_error=step_error.astype(out_dtype).reshape(spatial),
    )


def _safe_inverse(step: np.ndarray) -> np.ndarray:
    """1/step where step is positive and finite, NaN elsewhere (no warnings)."""
    good = np.isfinite(step) & (step > 0)
    inv = np.full(step.shape, np.nan)
    np.divide(1.0, step, out=inv, where=good)
    return inv


# ----------------------------------------------------------------------------------------------
# MBACK


def tabulated_f2(element: str, energies: np.ndarray) -> np.ndarray:
    """Chantler f''(E) of ``element`` at ``energies`` (electrons/atom), from xraydb."""
    import xraydb  # lazy: data package, only needed for MBACK

    try:
        return np.asarray(xraydb.f2_chantler(element, np.asarray(energies, dtype=np.float64)), dtype=np.float64)
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"element: no Chantler f'' table for {element!r}") from exc


def _edge_below(element: str, energy: float) -> float:
    """Highest tabulated absorption edge of ``element`` below ``energy`` (eV), 0 if none."""
    import xraydb  # lazy

    try:
        edges = [float(v.energy) for v in xraydb.xray_edges(element).values()]
    except (KeyError, ValueError, TypeError, AttributeError):
        return 0.0
    below = [x for x in edges if x < energy]
    return max(below) if below else 0.0


def normalize_mback(
    energies: np.ndarray,
    spectra: np.ndarray,
    *,
    element: str,
    edge: str,
    e0: float,
    pre: tuple[float, float] = (-200.0, -60.0),
    post: tuple[float, float] = (90.0, 440.0),
    order: int = 1,
    fit_erfc: bool = False,
    erfc_width: float = 20.0,
    post_ramp: bool = False,
    baseline: str = "mback",
) -> Normalized:
    """MBACK normalization: match every pixel's mu(E) to tabulated f''(E), all pixels at once.

    Parameters
    ----------
    energies : ndarray, shape (n_e,)
        Energies (eV), strictly increasing.
    spectra : ndarray, shape (n_e, n_pixels) or (n_e, H, W) or (n_e,)
        Absorption of every pixel, energy-major. float32 stays float32.
    element : str
        Absorbing element (``"Nd"``); f''(E) comes from ``xraydb.f2_chantler``.
    edge : str
        Edge name (``"L3"``); recorded for the caller, the windows decide what is fitted.
    e0 : float
        Edge energy (eV).
    pre, post : (float, float)
        Pre- and post-edge ranges relative to ``e0`` (eV). Only these points enter the fit.
    order : int
        Order of the background polynomial (Legendre in ``(E - e0)``), 0..3. 1 (a line, like
        larch's ``mback_norm``) is the default.
    fit_erfc : bool
        Also fit the amplitude of ``erfc((E - e0) / erfc_width)`` (MBACK's term for a smooth
        background step, e.g. fluorescence emission-line tails). The width is fixed, not fitted.
    erfc_width : float
        Width (eV) of the erfc term.
    post_ramp : bool
        Weight the post-edge points linearly from 0.1 (first) to 1 (last point, by index), as
        larch's ``mback_norm`` does, so the EXAFS-rich start of the post-edge counts less.
        Default: uniform weights.
    baseline : {"mback", "pre_edge"}
        What is subtracted before dividing by the edge step. ``"mback"``: the fitted background
        ``poly + A f2_below`` (uses pre- and post-edge points). ``"pre_edge"``: the straight
        pre-edge line of :func:`normalize_athena` (what larch's ``mback_norm`` reports as
        ``norm``); then only the edge step differs from Athena normalization.

    Returns
    -------
    Normalized
        ``post_coefficients[0]`` is the amplitude ``A`` of f''(E) per pixel, the following rows
        the Legendre coefficients (and the erfc amplitude last). ``edge_step = A * step_f2`` in the
        units of ``spectra``. ``pre_coefficients`` and ``pre_edge_noise`` come from the same
        straight pre-edge line fit as :func:`normalize_athena` (for the SNR).

    Notes
    -----
    MBACK (Weng, Waldo & Penner-Hahn, J. Synchrotron Rad. 12, 506 (2005)) matches mu(E) to the
    tabulated f''(E) plus a smooth background, using only the pre- and post-edge points. We
    write the match in the units of the measurement, like larch's ``mback_norm``:
    ``mu(E) ~= A f''(E) + sum_k c_k P_k(t) [+ a erfc((E - e0)/w)]`` with Legendre ``P_k`` and
    ``t = (E - e0) / max|E - e0|`` over the fitted points. This is linear in ``(A, c, a)`` with a
    design matrix shared by every pixel, so all pixels are solved with one ``pinv(D) @ Y``.
    (Scaling the noisy mu onto f'' instead, ``s mu + poly ~= f''``, makes the design differ per
    pixel and, worse, biases ``s`` low by about 1/SNR**2 per point: errors in the regressor.
    With per-pixel SNR ~ 10 that is a few % in the edge step, so we do not do that.)

    ``step_f2`` is the Athena edge step (line/line, same windows) of the tabulated f''(E) itself;
    the edge step of a pixel is ``A * step_f2``, it comes from the tabulated curve rather than
    from extrapolating a noisy post-edge line. The normalized spectrum is
    ``(mu - poly - A f2_below) / (A step_f2)``, ``f2_below`` a power law fitted to the table on
    [e0-250, e0-40] eV (raised to 40 eV above the next lower edge of the element, e.g. L3 for an
    L2 edge of a light element): the below-edge baseline of each pixel is fitted on pre- *and* post-edge
    points, more robust than a pre-edge line alone when the
    pre-edge is short or noisy (L2). Pixels with ``A <= 0`` (no edge) get ``NaN``.

    The Chantler tables smear the edge over ~10 eV; only points outside ``[e0+pre[1],
    e0+post[0]]`` are fitted, so keep those ranges clear of the edge.

    Memory: as :func:`normalize_athena` (output the size of the input, float64 temporaries in
    chunks of ~64 MB).
    """
    energies, spectra, e0 = _check_inputs(energies, spectra, e0)
    pre = _check_range("pre", pre, negative=True)
    post = _check_range("post", post, negative=False)
    if not isinstance(element, str) or not element:
        raise ValueError(f"element must be an element symbol, got {element!r}")
    if not isinstance(edge, str) or not edge:
        raise ValueError(f"edge must be an edge name, got {edge!r}")
    if baseline not in ("mback", "pre_edge"):
        raise ValueError(f"baseline must be 'mback' or 'pre_edge', got {baseline!r}")
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 0 <= order <= 3:
        raise ValueError(f"order must be an integer in 0..3, got {order!r}")
    order = int(order)
    erfc_width = float(erfc_width)
    if fit_erfc and not (np.isfinite(erfc_width) and erfc_width > 0):
        raise ValueError(f"erfc_width must be positive, got {erfc_width}")
    i_pre = _window_index("pre", energies, e0, pre, 3)
    i_post = _window_index("post", energies, e0, post, 2)
    fit = np.concatenate([i_pre, i_post])
    n_cols = order + 1 + int(fit_erfc)
    if fit.size < n_cols + 2:
        raise ValueError(f"pre and post hold {fit.size} energies; order={order} needs at least {n_cols + 2}")

    f2 = tabulated_f2(element, energies)
    y, spatial, out_dtype = _as_2d(spectra)
    n_pix = y.shape[1]
    pre_coef, noise, pre_var0 = _pre_edge_fit(y, energies, e0, i_pre)

    # shared design: [f'', Legendre P_0..P_order (t), (erfc)] over all energies
    half = float(np.max(np.abs(energies[fit] - e0)))
    t_all = (energies - e0) / half
    cols = [f2] + [np.polynomial.legendre.legval(t_all, np.eye(order + 1)[k]) for k in range(order + 1)]
    if fit_erfc:
        cols.append(erfc((energies - e0) / erfc_width))
    design_all = np.stack(cols, axis=1)  # (n_e, 1 + n_cols)
    weights = np.ones(fit.size)
    if post_ramp:
        weights[i_pre.size :] = np.linspace(0.1, 1.0, i_post.size)
    # weighted least squares: pinv(W D) W, shared by all pixels, (1 + n_cols, n_fit)
    pinv = np.linalg.pinv(design_all[fit] * weights[:, None]) * weights[None, :]
    coef = np.empty((1 + n_cols, n_pix))
    ssr = np.empty(n_pix)
    d_fit = design_all[fit]
    for sl in _chunks(n_pix, fit.size):
        win = y[fit, sl].astype(np.float64)
        c = pinv @ win
        resid = win - d_fit @ c
        coef[:, sl] = c
        ssr[sl] = np.einsum("ij,ij->j", resid, resid)
    amplitude = coef[0]
    sigma = np.sqrt(ssr / max(fit.size - (1 + n_cols), 1))
    amp_error = sigma * np.sqrt(float(pinv[0] @ pinv[0]))

    # edge step of the tabulated curve with straight lines on the same windows
    f2_pre = np.polynomial.polynomial.polyfit(energies[i_pre] - e0, f2[i_pre], 1)
    f2_post = np.polynomial.polynomial.polyfit(energies[i_post] - e0, f2[i_post], 1)
    step_f2 = float(f2_post[0] - f2_pre[0])
    if not step_f2 > 0:
        raise ValueError(f"element={element!r}: tabulated f'' has no edge step at e0={e0} with these windows")
    # below-edge part of the tabulated curve for the "mback" baseline: a power law fitted to the
    # table on a 1 eV grid over [e0-250, e0-40] whatever the data range (a line extrapolated
    # hundreds of eV from a short pre-edge, or the Chantler edge smearing close to e0, would bend
    # the normalized post-edge)
    lo = max(e0 - 250.0, _edge_below(element, e0 - 40.0) + 40.0)
    e_tab = np.arange(lo, e0 - 39.5, 1.0) if e0 - 40.0 - lo >= 20.0 else np.array([e0 - 60.0, e0 - 40.0])
    f2_tab = tabulated_f2(element, e_tab)
    if np.all(f2_tab > 0):
        p_law = np.polynomial.polynomial.polyfit(np.log(e_tab / e0), np.log(f2_tab), 1)
        f2_below = np.exp(p_law[0]) * (energies / e0) ** p_law[1]
    else:  # pragma: no cover - tabulated f'' is positive for every element
        f2_below = f2_pre[0] + (energies - e0) * f2_pre[1]

    step = amplitude * step_f2
    inv_step = _safe_inverse(step)
    # baseline below the edge: background polynomial (+ erfc) plus the scaled below-edge f''
    bg_design = np.concatenate([f2_below[:, None], design_all[:, 1:]], axis=1)
    x_all = energies - e0

    bg_out = bg_design.astype(out_dtype)
    coef_out = coef.astype(out_dtype)

    def mback_baseline(sl: slice) -> np.ndarray:
        return bg_out @ coef_out[:, sl]

    x_out = x_all.astype(out_dtype)
    c_out = pre_coef.astype(out_dtype)

    def pre_edge_baseline(sl: slice) -> np.ndarray:
        line = np.multiply.outer(x_out, c_out[1, sl])
        line += c_out[0, sl]
        return line

    norm = _fill_norm(y, out_dtype, mback_baseline if baseline == "mback" else pre_edge_baseline, inv_step)
    return Normalized(
        norm=norm.reshape(spectra.shape),
        edge_step=step.astype(out_dtype).reshape(spatial),
        pre_edge_noise=noise.astype(out_dtype).reshape(spatial),
        pre_coefficients=pre_coef.astype(out_dtype).reshape((2,) + spatial),
        post_coefficients=coef.astype(out_dtype).reshape((n_cols + 1,) + spatial),
        e0=e0,
        method="mback",
        edge_step_error=(amp_error * abs(step_f2)).astype(out_dtype).reshape(spatial),
    )


def normalize_window(
    energies: np.ndarray,
    spectra: np.ndarray,
    window: EdgeWindow,
    *,
    method: str = "athena",
    post_order: int | None = None,
    order: int = 1,
    flatten: bool = False,
    rows: slice | None = None,
) -> Normalized:
    """Normalize with the e0 and ranges of an :class:`~txm_live.edges.EdgeWindow`.

    ``rows`` (a slice of the energies) limits the returned ``norm`` to those energies
    (:func:`normalize_athena` then skips the others; MBACK normalizes all and slices).

    Parameters
    ----------
    energies, spectra
        As in :func:`normalize_athena`.
    window : EdgeWindow
        Supplies ``e0``, ``pre``, ``post`` (and ``element``, ``edge`` for MBACK). A window with
        a ``joint`` window is normalized with the joint window's e0 and ranges, then re-expressed
        about its own e0 (:func:`txm_live.joint.rebase_normalized`).
    method : {"athena", "mback"}
        Normalization method.
    post_order : int, optional
        Athena post-edge polynomial order. Default: ``window.post_order``, and when that is
        ``None`` the rule of :func:`choose_post_order` on the post-edge points of ``energies``.
    order : int
        MBACK background polynomial order.
    flatten : bool
        Athena only: flattened post-edge (see :func:`normalize_athena`).

    Returns
    -------
    Normalized
    """
    if not isinstance(window, EdgeWindow):
        raise ValueError(f"window must be an EdgeWindow, got {type(window).__name__}")
    if window.joint is not None:  # joint normalization (txm_live.edges.join_windows), about window.e0
        from txm_live.joint import rebase_normalized

        nz = normalize_window(energies, spectra, window.joint, method=method, post_order=post_order, order=order,
                              flatten=flatten, rows=rows)
        return rebase_normalized(nz, window.e0)
    if method == "athena":
        post_order = resolve_post_order(energies, window, post_order)
        return normalize_athena(
            energies, spectra, e0=window.e0, pre=window.pre, post=window.post, post_order=post_order,
            flatten=flatten, rows=rows,
        )
    if method == "mback":
        if flatten:
            raise ValueError("flatten is defined for method='athena' only")
        nz = normalize_mback(
            energies,
            spectra,
            element=window.element,
            edge=window.edge,
            e0=window.e0,
            pre=window.pre,
            post=window.post,
            order=order,
        )
        if rows is None:
            return nz
        from dataclasses import replace

        return replace(nz, norm=nz.norm[rows])
    raise ValueError(f"method must be 'athena' or 'mback', got {method!r}")


# ----------------------------------------------------------------------------------------------
# fused single pass for the phase analysis


@dataclass(frozen=True)
class EdgeFeatures:
    """What the phase analysis keeps of an Athena normalization, per pixel (all float32).

    Attributes
    ----------
    finite : ndarray of bool, shape (n_pixels,)
        Every energy of the pixel's spectrum is finite.
    edge_step : ndarray, shape (n_pixels,)
        As :attr:`Normalized.edge_step`.
    pre_edge_noise : ndarray, shape (n_pixels,)
        As :attr:`Normalized.pre_edge_noise`.
    step_significance : ndarray, shape (n_pixels,)
        ``edge_step / edge_step_error`` (float32 division of the float32 values).
    pre_coefficients : ndarray, shape (2, n_pixels)
        As :attr:`Normalized.pre_coefficients`.
    norm : ndarray, shape (n_rows, n_pixels)
        Normalized spectra on ``energies[rows]``.
    """

    finite: np.ndarray
    edge_step: np.ndarray
    pre_edge_noise: np.ndarray
    step_significance: np.ndarray
    pre_coefficients: np.ndarray
    norm: np.ndarray


#: Pixels per cache-resident chunk of :func:`athena_features` (the float64 pre- and post-edge
#: windows of a chunk, ~(n_pre + n_post) x 8 B x this, stay in the per-core L2 cache).
_CACHE_PIXELS = 512
#: Pixels per block of the feature rows of :func:`athena_features` (81 rows x 4096 x 4 B = 1.3 MB).
_ROW_PIXELS = 4096


def _as_slice(idx: np.ndarray) -> slice | np.ndarray:
    """A contiguous run of indices as a slice (basic indexing: a view), else the indices."""
    if idx.size and int(idx[-1]) - int(idx[0]) + 1 == idx.size:
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def athena_features(
    energies: np.ndarray,
    spectra: np.ndarray,
    *,
    e0: float,
    pre: tuple[float, float],
    post: tuple[float, float],
    post_order: int,
    rows: slice,
    out: EdgeFeatures | None = None,
    line_e0: float | None = None,
) -> EdgeFeatures:
    """:func:`normalize_athena` of every pixel reduced to what the phase analysis keeps, in one pass.

    Parameters
    ----------
    energies : ndarray, shape (n_e,)
        Energies (eV), strictly increasing.
    spectra : ndarray, shape (n_e, n_pixels)
        Optical density, energy-major; may be a strided view (a band of pixels of a larger block).
    e0, pre, post, post_order
        As in :func:`normalize_athena`.
    rows : slice
        Energies whose normalized values are returned (the feature range).
    out : EdgeFeatures, optional
        Arrays to write into (float32, bool for ``finite``; views of larger arrays are fine, e.g.
        the columns of one tile of the whole image), returned filled.
    line_e0 : float, optional
        Write the returned pre-edge line about this energy, ``c0' + c1 (E - line_e0)``, as
        :func:`txm_live.joint.rebase_normalized` does for a joint normalization (same
        arithmetic, in the dtype of the normalization); the feature rows and the edge step are
        those of ``e0``. Default: ``e0``.

    Returns
    -------
    EdgeFeatures
        The values of ``normalize_athena(..., rows=rows)`` (same float64 fits, same float32
        arithmetic per element), plus the finiteness of every spectrum. The float64 fits can
        differ in the last bit where BLAS blocks the pixels differently, which the float32
        results hide (bit-identical at full size and on the real STXM stack) except where the
        fit is pure cancellation (e.g. a spectrum of constant 3e37).

    Notes
    -----
    Three passes. (1) Chunks of :data:`_CACHE_PIXELS` pixels: the float64 copies of a chunk's
    pre- and post-edge rows and the residuals live in the core's cache, so the block is read
    from memory once (``n_e x n_pixels x 4`` bytes); only the fits' per-pixel results (4 float64
    per pixel) are kept. (2) The per-pixel values (noise, step, significance, coefficients) for
    all pixels at once. (3) The feature rows in blocks of :data:`_ROW_PIXELS` pixels (their
    ``n_rows x n_pixels x 4`` bytes are read again). The element-wise arithmetic is that of one
    chunk at a time; doing the per-pixel steps once per call instead of once per chunk leaves
    ~10 numpy calls per chunk instead of ~35, so threads running other pixel bands wait less for
    the GIL. Finiteness comes from one sum over energies per pixel (``ones @ spectra``): a
    non-finite sum is checked exactly, so a finite spectrum whose float32 sum overflows is still
    reported finite. No Python loop over pixels beyond the chunks. The GIL is released inside
    every numpy operation, so different pixel bands can run in threads.
    """
    energies, spectra, e0 = _check_inputs(energies, spectra, e0)
    pre = _check_range("pre", pre, negative=True)
    post = _check_range("post", post, negative=False)
    if isinstance(post_order, bool) or not isinstance(post_order, (int, np.integer)) or not 0 <= post_order <= 3:
        raise ValueError(f"post_order must be an integer in 0..3, got {post_order!r}")
    if not isinstance(rows, slice):
        raise ValueError(f"rows must be a slice of the energies, got {type(rows).__name__}")
    if spectra.ndim != 2:
        raise ValueError(f"spectra must be 2-D (n_energies, n_pixels), got shape {spectra.shape}")
    post_order = int(post_order)
    i_pre = _window_index("pre", energies, e0, pre, 3)
    i_post = _window_index("post", energies, e0, post, post_order + 2)
    y = spectra
    out_dtype = np.dtype(np.float32) if y.dtype == np.float32 else np.dtype(np.float64)
    n_e, n_pix = y.shape

    x_pre = (energies[i_pre] - e0) / _X_SCALE
    d_pre = np.stack([np.ones_like(x_pre), x_pre], axis=1)
    p_pre = np.linalg.pinv(d_pre)
    pre_var0 = float(p_pre[0] @ p_pre[0])
    x_post = (energies[i_post] - e0) / _X_SCALE
    p_post = np.linalg.pinv(np.vander(x_post, post_order + 1, increasing=True))
    post_var = pre_var0 + float(p_post[0] @ p_post[0])
    s_pre, s_post = _as_slice(i_pre), _as_slice(i_post)
    x_out = (energies - e0)[rows].astype(out_dtype)
    n_rows = x_out.size
    ones = np.ones(n_e, dtype=y.dtype)
    shift = None if line_e0 is None or float(line_e0) == e0 else out_dtype.type(float(line_e0) - e0)

    if out is None:
        out = EdgeFeatures(
            finite=np.empty(n_pix, dtype=bool), edge_step=np.empty(n_pix, dtype=np.float32),
            pre_edge_noise=np.empty(n_pix, dtype=np.float32), step_significance=np.empty(n_pix, dtype=np.float32),
            pre_coefficients=np.empty((2, n_pix), dtype=np.float32), norm=np.empty((n_rows, n_pix), dtype=np.float32),
        )
    want = {"finite": (n_pix,), "edge_step": (n_pix,), "pre_edge_noise": (n_pix,), "step_significance": (n_pix,),
            "pre_coefficients": (2, n_pix), "norm": (n_rows, n_pix)}
    for name, shape in want.items():
        arr = getattr(out, name)
        if arr.shape != shape or arr.dtype != (bool if name == "finite" else np.float32):
            raise ValueError(f"out.{name} must have shape {shape} and dtype "
                             f"{'bool' if name == 'finite' else 'float32'}, got {arr.dtype} {arr.shape}")
    finite, step32, noise32, z32 = out.finite, out.edge_step, out.pre_edge_noise, out.step_significance
    coef32, norm = out.pre_coefficients, out.norm
    # pass 1, cache-sized chunks: finiteness and the float64 fits (few numpy calls per chunk:
    # threads running other chunks wait less for the GIL); the per-pixel results are kept
    coef = np.empty((2, n_pix))  # pre-edge line (c0, c1 in the scaled variable, then per eV)
    ss = np.empty(n_pix)  # sum of squared pre-edge residuals
    post0 = np.empty(n_pix)  # post-edge polynomial at e0
    bufs: dict[int, tuple[np.ndarray, ...]] = {}
    for c0 in range(0, n_pix, _CACHE_PIXELS):
        sl = slice(c0, min(c0 + _CACHE_PIXELS, n_pix))
        m = sl.stop - sl.start
        if m not in bufs:  # work buffers reused chunk after chunk (no page faults per chunk)
            bufs[m] = (np.empty((x_pre.size, m)), np.empty((x_pre.size, m)), np.empty((x_post.size, m)),
                       np.empty((2, m)))
        win, resid, wpost, c = bufs[m]
        yc = y[:, sl]
        total = ones @ yc
        fin = np.isfinite(total)
        if not fin.all():  # exact: a finite spectrum whose sum overflowed is still finite
            bad = np.flatnonzero(~fin)
            fin[bad] = np.isfinite(yc[:, bad]).all(axis=0)
        finite[sl] = fin
        np.copyto(win, yc[s_pre])
        np.matmul(p_pre, win, out=c)
        coef[:, sl] = c
        np.matmul(d_pre, c, out=resid)
        np.subtract(win, resid, out=resid)
        np.einsum("ij,ij->j", resid, resid, out=ss[sl])
        np.copyto(wpost, yc[s_post])
        np.matmul(p_post[0], wpost, out=post0[sl])
    # pass 2, all pixels at once: the per-pixel values (the same element-wise arithmetic)
    noise = np.sqrt(ss / (x_pre.size - 2))
    coef[1] /= _X_SCALE
    step = post0
    step -= coef[0]
    step_error = np.sqrt(noise * noise * post_var)
    inv = _safe_inverse(step).astype(out_dtype)
    st = step.astype(out_dtype)
    step32[...] = st
    noise32[...] = noise
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(st, step_error.astype(out_dtype), out=z32, casting="unsafe")
    cc = coef.astype(out_dtype)
    coef32[1] = cc[1]
    coef32[0] = cc[0] if shift is None else cc[0] + cc[1] * shift
    # pass 3, cache-sized blocks of pixels: the feature rows (y - line) / step
    line_buf = np.empty((n_rows, min(n_pix, _ROW_PIXELS)), dtype=out_dtype)
    for c0 in range(0, n_pix, _ROW_PIXELS):
        sl = slice(c0, min(c0 + _ROW_PIXELS, n_pix))
        line = line_buf[:, : sl.stop - sl.start]
        np.multiply.outer(x_out, cc[1, sl], out=line)
        line += cc[0, sl]
        dst = norm[:, sl]
        if out_dtype == np.float32:
            np.subtract(y[rows, sl], line, out=dst, dtype=out_dtype)
            dst *= inv[sl]
        else:  # float64 input: float64 arithmetic, float32 result (as normalize_athena + astype)
            tmp = np.subtract(y[rows, sl], line, dtype=out_dtype)
            tmp *= inv[sl]
            dst[...] = tmp
    return out


def athena_window_features(
    energies: np.ndarray,
    spectra: np.ndarray,
    window: EdgeWindow,
    *,
    rows: slice,
    post_order: int | None = None,
    out: EdgeFeatures | None = None,
) -> EdgeFeatures:
    """:func:`athena_features` with the ranges of an :class:`~txm_live.edges.EdgeWindow`.

    A joint window (:func:`txm_live.edges.join_windows`) is normalized with the ranges of the
    window it joins and its pre-edge line written about its own e0, as
    :func:`normalize_window` does; ``post_order`` is resolved as there
    (:func:`~txm_live.edges.resolve_post_order`).
    """
    if not isinstance(window, EdgeWindow):
        raise ValueError(f"window must be an EdgeWindow, got {type(window).__name__}")
    nw = window.normalization
    return athena_features(
        energies, spectra, e0=nw.e0, pre=nw.pre, post=nw.post,
        post_order=resolve_post_order(energies, window, post_order), rows=rows, out=out,
        line_e0=window.e0,
    )
