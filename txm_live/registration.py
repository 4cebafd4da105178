"""Frame registration: sub-pixel translation, shifting and magnification correction.

:func:`phase_cross_correlation` follows the algorithm of scikit-image (Guizar-Sicairos et al.,
Opt. Lett. 33, 156 (2008)): the peak of the (phase-normalized) cross-power spectrum gives the
integer shift, then a matrix-multiply DFT upsampled ``upsample_factor`` times in a 1.5 pixel
neighbourhood refines it. It is written with :mod:`scipy.fft` in float32/complex64.

Across an absorption edge the contrast of a XANES frame changes (the particle's optical density
jumps by a factor of ~2-3). :func:`edge_features` turns a frame into a contrast-robust
representation (gradient magnitude of the smoothed image, tapered at the borders: it keeps its sign
where a phase's contrast inverts across the edge); the online :class:`RunningRegistration`
registers every frame's features to the mean of the frames registered so far, so slow drift and
isolated jumps of tens of pixels are followed.
:func:`transform_image` resamples a frame once for magnification and shift (bilinear, or cubic
B-spline with its prefilter: near band-limited).
"""

from __future__ import annotations

import functools
from collections import deque

import numpy as np
import scipy.fft as sfft
from scipy import ndimage as ndi

from txm_live.threads import limit_blas

__all__ = [
    "phase_cross_correlation",
    "shift_image",
    "rescale_image",
    "transform_image",
    "transform_mask",
    "edge_features",
    "RunningRegistration",
]


def _upsampled_dft(
    data: np.ndarray, region_size: int, upsample_factor: int, offsets: np.ndarray
) -> np.ndarray:
    """Upsampled inverse DFT of 2-D ``data`` on a ``region_size``-square grid starting at ``offsets``.

    Equivalent to scikit-image's ``_upsampled_dft`` (matrix-multiply DFT, Guizar-Sicairos 2008)
    written as ``ky @ data @ kx.T``.
    """
    kernels = []
    for n_items, offset in zip(data.shape, offsets):
        k = (np.arange(region_size) - offset)[:, None] * sfft.fftfreq(n_items, upsample_factor)
        kernels.append(np.exp(-2j * np.pi * k).astype(np.complex64))
    with limit_blas(1):
        return kernels[0] @ data @ kernels[1].T


#: Floor of the cross-power modulus in the normalizations (:func:`_correlation_peak`,
#: :meth:`RunningRegistration._estimate`).
_TINY = np.float32(100 * np.finfo(np.float32).eps)


def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D image, got shape {image.shape}")
    if image.dtype.kind not in "uifc":
        raise ValueError(f"{name}: expected a numeric image, got dtype {image.dtype}")
    return image


def _check_affine(
    shape: tuple[int, ...], scale: float, shift: tuple[float, float] | np.ndarray, center: tuple[float, float] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate the map of :func:`transform_image` / :func:`transform_mask`; returns the shift and
    the centre (default: the image centre) as float64 ``(2,)`` arrays."""
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    shift_arr = np.asarray(shift, dtype=np.float64)
    if shift_arr.shape != (2,) or not np.all(np.isfinite(shift_arr)):
        raise ValueError(f"shift must be two finite numbers (dy, dx), got {shift!r}")
    c = (np.asarray(shape, dtype=np.float64) - 1) / 2 if center is None else np.asarray(center, dtype=np.float64)
    if c.shape != (2,):
        raise ValueError(f"center must be (cy, cx), got {center!r}")
    return shift_arr, c


def _fft_shape(shape: tuple[int, int], *, real: bool = False) -> tuple[int, int]:
    """Padded FFT shape: ``scipy.fft.next_fast_len`` per axis (``real``: its 5-smooth lengths,
    faster for real transforms, e.g. 375 x 400 instead of 375 x 385: 2.3 instead of 2.8 ms for 3
    ``rfft2`` and 4 ``irfft2``, measured 2026-12-05)."""
    return (sfft.next_fast_len(int(shape[0]), real=real), sfft.next_fast_len(int(shape[1]), real=real))


def _cross_power_shift(
    image_product: np.ndarray,
    upsample_factor: int,
    normalization: str | None,
    *,
    real_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Shift from a cross-power spectrum (full, or the ``rfft2`` half of a real pair when
    ``real_shape`` gives the real-space shape)."""
    shifts, image_product = _correlation_peak(image_product, normalization, real_shape=real_shape)
    return _refine_peak(shifts, image_product, upsample_factor, real_shape=real_shape)


def _correlation_peak(
    image_product: np.ndarray, normalization: str | None, *, real_shape: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Integer shift at the cross-correlation peak, and the (normalized) cross-power spectrum."""
    if normalization == "phase":
        scale = np.abs(image_product)
        image_product = image_product / np.maximum(scale, _TINY, out=scale)
    if real_shape is None:
        cross_correlation = np.abs(sfft.ifft2(image_product))
        shape = np.asarray(image_product.shape)
    else:
        cross_correlation = sfft.irfft2(image_product, s=real_shape)
        np.abs(cross_correlation, out=cross_correlation)
        shape = np.asarray(real_shape)
    maxima = np.unravel_index(int(np.argmax(cross_correlation)), cross_correlation.shape)
    midpoints = np.fix(shape / 2)
    shifts = np.asarray(maxima, dtype=np.float64)
    shifts[shifts > midpoints] -= shape[shifts > midpoints]
    return shifts, image_product


def _refine_radius(upsample_factor: int) -> float:
    """Largest change (px, per axis) :func:`_refine_peak` makes to the integer peak."""
    if upsample_factor <= 1:
        return 0.0
    region = int(np.ceil(upsample_factor * 1.5))
    dftshift = np.fix(region / 2.0)
    return float(max(dftshift, region - 1 - dftshift) / upsample_factor)


def _refine_peak(
    shifts: np.ndarray, image_product: np.ndarray, upsample_factor: int, *, real_shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Sub-pixel refinement of the integer peak ``shifts`` by an upsampled DFT around it."""
    if upsample_factor > 1:
        shifts = np.round(shifts * upsample_factor) / upsample_factor
        region = int(np.ceil(upsample_factor * 1.5))
        dftshift = np.fix(region / 2.0)
        offsets = dftshift - shifts * upsample_factor
        if real_shape is None:
            cc = np.abs(_upsampled_dft(np.conj(image_product), region, upsample_factor, offsets))
        else:
            cc = np.abs(_upsampled_dft_half(image_product, real_shape, region, upsample_factor, offsets))
        peak = np.unravel_index(int(np.argmax(cc)), cc.shape)
        shifts = shifts + (np.asarray(peak, dtype=np.float64) - dftshift) / upsample_factor
    return shifts


@functools.lru_cache(maxsize=32)
def _dft_grid(n: int, upsample_factor: int, region_size: int, *, real: bool) -> tuple[np.ndarray, np.ndarray]:
    """``exp(2 pi i r f)`` (complex64, read-only) for ``r = 0 .. region_size - 1`` and the
    frequencies ``f`` (cycles per upsampled sample) of a length-``n`` axis (``rfftfreq`` with
    ``real``, else ``fftfreq``), and ``f``."""
    f = (sfft.rfftfreq if real else sfft.fftfreq)(n, upsample_factor)
    base = np.exp(2j * np.pi * np.arange(region_size)[:, None] * f).astype(np.complex64)
    base.setflags(write=False)
    f.setflags(write=False)
    return base, f


def _upsampled_dft_half(
    half: np.ndarray, real_shape: tuple[int, int], region_size: int, upsample_factor: int, offsets: np.ndarray
) -> np.ndarray:
    """Real upsampled cross-correlation from the ``rfft2`` half spectrum (Hermitian symmetry).

    The full sum over frequencies equals the real part of the sum over the half spectrum with
    the columns that have a mirror image counted twice. The column weights (1 or 2, exact in
    floating point) are applied to ``ky @ half`` (``region_size`` rows) instead of the spectrum.
    """
    ny, nx = real_shape
    weights = np.full(half.shape[1], 2.0, np.float32)
    weights[0] = 1.0
    if nx % 2 == 0:
        weights[-1] = 1.0
    # exp(2 pi i (r - offset) f) = exp(2 pi i r f) exp(-2 pi i offset f): the first factor is cached
    base_y, fy = _dft_grid(ny, upsample_factor, region_size, real=False)
    base_x, fx = _dft_grid(nx, upsample_factor, region_size, real=True)
    ky = base_y * np.exp(-2j * np.pi * offsets[0] * fy).astype(np.complex64)
    kx = base_x * np.exp(-2j * np.pi * offsets[1] * fx).astype(np.complex64)
    with limit_blas(1):
        rows = ky @ half
        rows *= weights[None, :]
        return (rows @ kx.T).real


def phase_cross_correlation(
    reference: np.ndarray,
    moving: np.ndarray,
    *,
    upsample_factor: int = 10,
    normalization: str | None = "phase",
    space: str = "real",
) -> np.ndarray:
    """Sub-pixel translation that registers ``moving`` to ``reference``.

    Parameters
    ----------
    reference, moving : ndarray, shape (H, W)
        Images (``space="real"``) or their 2-D Fourier transforms (``space="fourier"``), same shape.
    upsample_factor : int
        Precision of the result is ``1/upsample_factor`` pixel (1: integer shifts only).
    normalization : {"phase", None}
        ``"phase"`` whitens the cross-power spectrum (phase correlation; robust to contrast
        changes), ``None`` uses the plain cross-correlation.
    space : {"real", "fourier"}
        Whether the inputs are images or already Fourier transformed.

    Returns
    -------
    shift : ndarray of float, shape (2,)
        ``(dy, dx)`` in pixels: ``shift_image(moving, shift)`` is aligned with ``reference``
        (same convention as ``skimage.registration.phase_cross_correlation``).

    Notes
    -----
    Real-space inputs are zero-padded to FFT-friendly sizes (``scipy.fft.next_fast_len``) and
    transformed with real FFTs (half spectrum, Hermitian symmetry used in the upsampled DFT). Memory: about six complex64 copies of the padded frame. Shifts are
    found modulo the frame size: the largest recoverable shift is half the frame.
    """
    if not isinstance(upsample_factor, (int, np.integer)) or upsample_factor < 1:
        raise ValueError(f"upsample_factor must be an integer >= 1, got {upsample_factor!r}")
    if normalization not in ("phase", None):
        raise ValueError(f"normalization must be 'phase' or None, got {normalization!r}")
    if space not in ("real", "fourier"):
        raise ValueError(f"space must be 'real' or 'fourier', got {space!r}")
    reference = _check_image(reference, "reference")
    moving = _check_image(moving, "moving")
    if reference.shape != moving.shape:
        raise ValueError(f"moving: shape {moving.shape} differs from reference shape {reference.shape}")
    if space == "real" and reference.dtype.kind != "c" and moving.dtype.kind != "c":
        s = _fft_shape(reference.shape)
        ref_f = sfft.rfft2(reference.astype(np.float32, copy=False), s=s)
        mov_f = sfft.rfft2(moving.astype(np.float32, copy=False), s=s)
        return _cross_power_shift(ref_f * np.conj(mov_f), int(upsample_factor), normalization, real_shape=s)
    if space == "real":
        s = _fft_shape(reference.shape)
        ref_f = sfft.fft2(reference, s=s)
        mov_f = sfft.fft2(moving, s=s)
    else:
        ref_f = reference.astype(np.complex64, copy=False)
        mov_f = moving.astype(np.complex64, copy=False)
    return _cross_power_shift(ref_f * np.conj(mov_f), int(upsample_factor), normalization)


def transform_image(
    image: np.ndarray,
    *,
    scale: float = 1.0,
    shift: tuple[float, float] | np.ndarray = (0.0, 0.0),
    center: tuple[float, float] | None = None,
    order: int = 1,
    cval: float = 0.0,
) -> np.ndarray:
    """Magnify by ``scale`` about ``center``, then translate by ``shift``, with one interpolation.

    ``out[y] = image[(y - shift - center) / scale + center]`` (spline interpolation of ``order``,
    ``cval`` outside the input). Returns float32 for float32/integer input.

    Notes
    -----
    ``order=1`` (bilinear) and ``order=3`` (cubic B-spline with its interpolating prefilter,
    boundary mirrored) run separably, axis by axis. The cubic path folds prefilter and B-spline
    weights into one banded matrix per axis (the prefilter's impulse response
    ``sqrt(3) (sqrt(3) - 2)^|k|`` truncated where it falls below the dtype's rounding: 27 taps in
    float32, 59 in float64), applied to the frame (mirrored at its borders) as products by dense
    blocks of 48 output rows (BLAS, one thread): same values as scipy's recursive prefilter and the
    four-tap gathers (max |difference| 4e-7 of the image's range in float32). Measured per 730x771
    float32 frame (``benchmarks/bench_resample.py``, 50 frames, best of 7, 2026-12-05, load 3-4,
    CPU time): cubic 4.2 ms (scale 1 or 1.004), the former recursive prefilter and gathers
    16.7 ms, bilinear 2.5 ms, scipy's ``affine_transform(order=3)`` 40 ms. A TXM image is
    band-limited by the zone-plate optics (the pixel is usually below the resolution), so the
    right interpolator is band-limited: bilinear interpolation averages neighbours with
    shift-dependent weights (a half-pixel shift keeps 81 / 59 / 45 % of the modulation at
    0.2 / 0.3 / 0.35 cycles/px), the prefiltered cubic spline 99 / 93 / 84 %. Other
    orders use ``scipy.ndimage.affine_transform``.
    """
    image = _check_image(image, "image")
    shift_arr, c = _check_affine(image.shape, scale, shift, center)
    src = image if image.dtype == np.float64 else image.astype(np.float32, copy=False)
    if scale == 1.0 and np.all(shift_arr == 0):
        return src.copy()
    if order == 1 and min(src.shape) >= 2:
        return _bilinear_separable(src, scale, shift_arr, c, cval)
    if order == 3 and min(src.shape) >= 4:
        return _cubic_spline_separable(src, scale, shift_arr, c, cval)
    inv = 1.0 / scale
    offset = c - (shift_arr + c) * inv
    return ndi.affine_transform(src, [inv, inv], offset=offset, order=order, mode="constant", cval=cval)


def transform_mask(
    valid: np.ndarray,
    *,
    scale: float = 1.0,
    shift: tuple[float, float] | np.ndarray = (0.0, 0.0),
    center: tuple[float, float] | None = None,
    erode: int = 0,
) -> np.ndarray:
    """Where a frame resampled by :func:`transform_image` draws only on ``valid`` input pixels.

    Output pixels whose bilinear resampling of ``valid`` (as 0/1) exceeds 0.999 and whose source
    lies inside the input, then eroded ``erode`` times by the 4-neighbour cross (outside the image
    counts as valid): ``erode=2`` covers the cubic spline's wider taps.

    Notes
    -----
    Same result as ``transform_image(valid.astype(np.float32), ...) > 0.999`` followed by
    ``scipy.ndimage.binary_erosion(iterations=erode, border_value=1)``, computed only on the
    output rows that tap an input row holding an invalid pixel (the others are exactly 1 inside
    the field of view), and the erosion by shifted logical ANDs: with a few dead or saturated
    pixels per frame (5-50 scattered) ~0.7-0.8 ms CPU per 730x771 frame instead of 10 ms; with
    2,000 scattered ones every row is affected: 7.8 instead of 11 ms (measured 2026-12-05, load 4).
    """
    valid = np.asarray(valid, dtype=bool)
    if valid.ndim != 2 or min(valid.shape) < 2:
        raise ValueError(f"valid: expected a 2-D mask of at least 2x2, got shape {valid.shape}")
    shift_arr, c = _check_affine(valid.shape, scale, shift, center)
    if int(erode) != erode or erode < 0:
        raise ValueError(f"erode must be a non-negative integer, got {erode!r}")
    h, w = valid.shape
    iy, wy, in_y = _axis_sampling(h, scale, float(shift_arr[0]), float(c[0]))
    ix, wx, in_x = _axis_sampling(w, scale, float(shift_arr[1]), float(c[1]))
    moved = in_y[:, None] & in_x[None, :]
    bad_rows = ~valid.all(axis=1)
    rows = np.flatnonzero(in_y & (bad_rows[iy] | bad_rows[iy + 1]))
    if rows.size:
        src = valid.astype(np.float32)
        top = src[iy[rows]]
        tmp = src[iy[rows] + 1]
        tmp -= top
        tmp *= wy[rows, None]
        tmp += top
        left = np.take(tmp, ix, axis=1)
        part = np.take(tmp, ix + 1, axis=1)
        part -= left
        part *= wx[None, :]
        part += left
        moved[rows] &= part > 0.999
    for _ in range(int(erode)):
        eroded = moved.copy()
        eroded[1:] &= moved[:-1]
        eroded[:-1] &= moved[1:]
        eroded[:, 1:] &= moved[:, :-1]
        eroded[:, :-1] &= moved[:, 1:]
        moved = eroded
    return moved


def _axis_sampling(n: int, scale: float, shift: float, center: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src = (np.arange(n, dtype=np.float64) - shift - center) / scale + center
    inside = (src >= -1e-6) & (src <= n - 1 + 1e-6)
    i0 = np.clip(np.floor(src), 0, n - 2).astype(np.intp)
    w = np.clip(src - i0, 0.0, 1.0).astype(np.float32)
    return i0, w, inside


def _bilinear_separable(src: np.ndarray, scale: float, shift: np.ndarray, c: np.ndarray, cval: float) -> np.ndarray:
    """Order-1 (bilinear) resampling for a diagonal affine map, done axis by axis.

    Same values as ``scipy.ndimage.affine_transform(order=1, mode="constant")`` (to float
    rounding) at about a third of the cost: row gathers and a lerp, then column gathers and a lerp.
    """
    h, w = src.shape
    iy, wy, in_y = _axis_sampling(h, scale, float(shift[0]), float(c[0]))
    ix, wx, in_x = _axis_sampling(w, scale, float(shift[1]), float(c[1]))
    top = src[iy]
    tmp = src[iy + 1]
    tmp -= top
    tmp *= wy[:, None].astype(src.dtype, copy=False)
    tmp += top
    left = np.take(tmp, ix, axis=1)
    out = np.take(tmp, ix + 1, axis=1)
    out -= left
    out *= wx[None, :].astype(src.dtype, copy=False)
    out += left
    if not in_y.all():
        out[~in_y] = cval
    if not in_x.all():
        out[:, ~in_x] = cval
    return out


_CUBIC_BLOCK = 48  # output rows per block product (best of 16-96 on 730x771 float32)
_BSPLINE_POLE = float(np.sqrt(3.0) - 2.0)  # pole z of the cubic B-spline's inverse filter


def _prefilter_taps(dtype: np.dtype) -> np.ndarray:
    """Truncated impulse response ``sqrt(3) z^|k|`` of the cubic B-spline's inverse, summing to 1.

    Truncated at the ``K`` where the dropped tail, ``2 sqrt(3) |z|^(K+1) / (1 - |z|)`` of the
    largest |value|, is below ``dtype``'s rounding (K = 13 for float32, 29 for float64).
    """
    eps = float(np.finfo(dtype).eps) / 2
    z = abs(_BSPLINE_POLE)
    k_max = int(np.ceil(np.log(eps * (1 - z) / (2 * np.sqrt(3.0))) / np.log(z))) - 1
    k = np.arange(-k_max, k_max + 1)
    p = np.sqrt(3.0) * _BSPLINE_POLE ** np.abs(k)
    return p / p.sum()


def _cubic_axis_blocks(
    n: int, scale: float, shift: float, center: float, p: np.ndarray, block: int, dtype: np.dtype
) -> tuple[int, int, list[tuple[int, int, int, np.ndarray]]]:
    """One axis of the cubic resampling as banded blocks acting on the mirror-extended input.

    Returns the output range ``[y0, y1)`` inside the field of view and, per block of at most
    ``block`` output samples, ``(ya, yb, lo, m)``: ``out[ya:yb] = m @ ext[lo:lo + m.shape[1]]``
    where ``ext[i]`` is input sample ``i`` mirrored about the first and last samples
    (scipy's ``mode="mirror"``; ``lo`` may be negative). ``m``'s rows are the prefilter ``p``
    convolved with the four B-spline weights of the output sample, placed at its taps.
    """
    src = (np.arange(n, dtype=np.float64) - shift - center) / scale + center
    inside = np.flatnonzero((src >= -1e-6) & (src <= n - 1 + 1e-6))
    if inside.size == 0:
        return 0, 0, []
    y0, y1 = int(inside[0]), int(inside[-1]) + 1  # the field of view is one interval
    u = src[y0:y1]
    i0 = np.floor(u)
    t = u - i0
    w = np.empty((y1 - y0, 4), np.float64)
    w[:, 0] = (1 - t) ** 3 / 6
    w[:, 1] = (4 - 6 * t**2 + 3 * t**3) / 6
    w[:, 2] = (1 + 3 * t + 3 * t**2 - 3 * t**3) / 6
    w[:, 3] = t**3 / 6
    span = len(p) + 3  # taps i0 - 1 .. i0 + 2, each widened by the prefilter's len(p) // 2 a side
    rows = np.zeros((y1 - y0, span))  # column 0 of row a is input sample i0[a] - 1 - len(p) // 2
    for k in range(4):
        rows[:, k : k + len(p)] += w[:, k : k + 1] * p[None, :]
    i0 = i0.astype(np.intp)
    a = np.arange(y1 - y0)
    first = i0[a - a % block]  # i0 of each row's block start
    offset = i0 - first  # >= 0: i0 is non-decreasing
    n_blocks = -(-(y1 - y0) // block)
    mats = np.zeros((n_blocks, block, int(offset.max()) + span), dtype=dtype)
    mats[(a // block)[:, None], (a % block)[:, None], offset[:, None] + np.arange(span)[None, :]] = rows
    blocks = []
    for b in range(n_blocks):
        ya, yb = b * block, min((b + 1) * block, y1 - y0)
        width = int(offset[yb - 1]) + span
        blocks.append((y0 + ya, y0 + yb, int(i0[ya]) - 1 - len(p) // 2, mats[b, : yb - ya, :width]))
    return y0, y1, blocks


def _mirrored(n: int, lo: int, hi: int) -> slice | np.ndarray:
    """Indices of samples ``lo .. hi - 1`` of a length-``n`` axis mirrored about its end samples."""
    if lo >= 0 and hi <= n:
        return slice(lo, hi)
    period = 2 * (n - 1)
    idx = np.abs(np.arange(lo, hi)) % period
    return np.where(idx > n - 1, period - idx, idx)


def _cubic_spline_separable(src: np.ndarray, scale: float, shift: np.ndarray, c: np.ndarray, cval: float) -> np.ndarray:
    """Order-3 B-spline resampling (with the interpolating prefilter) for a diagonal affine map.

    Same values as ``scipy.ndimage.affine_transform(order=3, mode="mirror")`` inside the field of
    view (``cval`` outside it), to the float rounding of ``src.dtype``. Per axis, prefilter and
    B-spline weights are one linear map whose matrix is banded (the prefilter's impulse response
    ``sqrt(3) (sqrt(3) - 2)^|k|`` truncated below the dtype's rounding): it is applied as products
    of small dense blocks of ``_CUBIC_BLOCK`` output rows (BLAS) with the input rows they reach,
    mirrored at the borders, instead of scipy's recursive prefilter and gathers.
    """
    h, w = src.shape
    p = _prefilter_taps(src.dtype)
    y0, y1, by = _cubic_axis_blocks(h, scale, float(shift[0]), float(c[0]), p, _CUBIC_BLOCK, src.dtype)
    x0, x1, bx = _cubic_axis_blocks(w, scale, float(shift[1]), float(c[1]), p, _CUBIC_BLOCK, src.dtype)
    out = np.empty((h, w), dtype=src.dtype)
    out[:y0] = cval
    out[y1:] = cval
    out[y0:y1, :x0] = cval
    out[y0:y1, x1:] = cval
    if y1 <= y0 or x1 <= x0:
        return out
    rows = np.empty((y1 - y0, w), src.dtype)
    with limit_blas(1):
        for ya, yb, lo, m in by:
            np.matmul(m, src[_mirrored(h, lo, lo + m.shape[1])], out=rows[ya - y0 : yb - y0])
        for xa, xb, lo, m in bx:
            np.matmul(rows[:, _mirrored(w, lo, lo + m.shape[1])], m.T, out=out[y0:y1, xa:xb])
    return out


def shift_image(image: np.ndarray, shift: tuple[float, float] | np.ndarray, *, order: int = 1, cval: float = 0.0) -> np.ndarray:
    """Translate ``image`` by ``shift = (dy, dx)`` pixels (``scipy.ndimage.shift``, spline ``order``)."""
    return transform_image(image, shift=shift, order=order, cval=cval)


def rescale_image(
    image: np.ndarray,
    scale: float,
    *,
    center: tuple[float, float] | None = None,
    order: int = 1,
    cval: float = 0.0,
) -> np.ndarray:
    """Magnify ``image`` by ``scale`` about ``center`` (default: image centre), same output shape.

    Notes
    -----
    For energy-dependent magnification use ``scale = pixel_size / pixel_size_ref``: a frame
    recorded with larger pixels shows the object smaller, and is enlarged back onto the reference
    pixel grid. ``center`` is the optical axis (row, column) in pixels.
    """
    return transform_image(image, scale=scale, center=center, order=order, cval=cval)


def edge_features(image: np.ndarray, *, sigma: float = 1.5, taper: float = 0.1) -> np.ndarray:
    """Contrast-robust registration features of an optical-density frame.

    Gradient magnitude of the Gaussian-smoothed image (``sigma`` px), with its mean removed and
    multiplied by a Tukey window that tapers the outer ``taper`` fraction of each axis to zero.
    Float32, same shape as ``image``.

    Notes
    -----
    The gradient magnitude does not change sign when a phase's contrast against its neighbours
    inverts across an absorption edge (a phase denser below the edge and less absorbing above
    it, or the reverse). A linear band-pass (Laplacian of Gaussian) does: on the full-size
    simulated Nd magnet (602 x 643 px) the Laplacian features of frames at 6230-6300 eV are
    anti-correlated with those at 6100 eV at zero offset (correlation at 0 about -0.9 to -1.4
    times the peak), the peak moves to a side lobe 1-3 px away, and a reference built from the
    pre-edge frames registered every post-edge frame ~2 px off (the minority phase was lost,
    L3 ARI 0.960 -> 0.881). With the gradient magnitude the same noise-free frames register to
    within 0.05 px at half whitening.
    """
    image = _check_image(image, "image")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if not 0 <= taper < 0.5:
        raise ValueError(f"taper must be in [0, 0.5), got {taper}")
    if min(image.shape) < 2:
        raise ValueError(f"image: needs at least 2 pixels per axis for a gradient, got shape {image.shape}")
    img = image.astype(np.float32, copy=False)
    return _features(_smooth(img, sigma, sigma), 1.0, _tukey(img.shape[0], taper), _tukey(img.shape[1], taper))


def _gaussian_taps(sigma: float) -> np.ndarray:
    """The float64 weights of ``scipy.ndimage.gaussian_filter1d(sigma, truncate=3.0)`` (symmetric)."""
    radius = int(3.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    taps = np.exp(-0.5 / sigma**2 * x**2)
    return taps / taps.sum()


def _smooth(image: np.ndarray, sigma_y: float, sigma_x: float) -> np.ndarray:
    """Separable Gaussian smoothing of a float32 image (``sigma_y``, ``sigma_x`` px, truncated at 3 sigma)."""
    across = ndi.gaussian_filter1d(image, sigma_x, axis=1, truncate=3.0, output=np.float32)
    return ndi.gaussian_filter1d(across, sigma_y, axis=0, truncate=3.0, output=np.float32)


def _features(
    smooth: np.ndarray,
    y_spacing: float,
    wy: np.ndarray,
    wx: np.ndarray,
    padded: np.ndarray | None = None,
    work: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Tapered, mean-free gradient magnitude of a smoothed float32 image (rows ``y_spacing`` px apart).

    With ``padded`` (float32, at least as large, zero outside the image) the result is written
    into its top-left corner, the rows below it are zeroed, and ``padded`` is returned: the
    zero-padded input of an FFT without another copy. ``work``: two float32 buffers of the image's
    shape for :func:`_gradient_magnitude`.
    """
    gy = _gradient_magnitude(smooth, y_spacing, out=work)
    gy -= gy.mean(dtype=np.float64)
    gy *= wy[:, None]
    if padded is None:
        gy *= wx[None, :]
        return gy
    h, w = gy.shape
    np.multiply(gy, wx[None, :], out=padded[:h, :w])
    padded[h:, :w] = 0
    return padded


def _gradient_magnitude(
    smooth: np.ndarray, y_spacing: float, *, out: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """``hypot(gy / y_spacing, gx)`` of ``gy, gx = np.gradient(smooth)``, without its temporaries.

    Central differences inside, one-sided at the borders, as :func:`numpy.gradient` with unit
    spacing (its ``/ 2.0`` is the exact ``* 0.5`` here, same differences); the magnitude is
    ``sqrt(gy**2 + gx**2)`` in float32, a few float32 ulps from ``np.hypot`` at a third of its cost.
    ``out``: two buffers shaped like ``smooth`` (the first one is returned), reused instead of
    fresh arrays whose first touch costs page faults.
    """
    half = smooth.dtype.type(0.5)
    gy, gx = (np.empty_like(smooth), np.empty_like(smooth)) if out is None else out
    np.subtract(smooth[2:], smooth[:-2], out=gy[1:-1])
    gy[1:-1] *= half
    np.subtract(smooth[1], smooth[0], out=gy[0])
    np.subtract(smooth[-1], smooth[-2], out=gy[-1])
    if y_spacing != 1.0:
        gy *= smooth.dtype.type(1.0 / y_spacing)
    np.subtract(smooth[:, 2:], smooth[:, :-2], out=gx[:, 1:-1])
    gx[:, 1:-1] *= half
    np.subtract(smooth[:, 1], smooth[:, 0], out=gx[:, 0])
    np.subtract(smooth[:, -1], smooth[:, -2], out=gx[:, -1])
    np.multiply(gy, gy, out=gy)
    np.multiply(gx, gx, out=gx)
    gy += gx
    return np.sqrt(gy, out=gy)


#: Automatic binning (:func:`_auto_binning`): smallest binned side (px) and smoothing (binned px).
_MIN_BINNED_SIDE = 256
_MIN_BINNED_SIGMA = 0.7


def _auto_binning(shape: tuple[int, int], sigma: float) -> int:
    """Largest power of two ``b`` with ``min(shape) // b >= 256`` and ``sigma / b >= 0.7``.

    The features are smoothed by a Gaussian of ``sigma`` px: its transfer at the Nyquist
    frequency of the binned grid, ``1 / (2 b)`` cycles/px, is ``exp(-pi**2 (sigma / b)**2 / 2)``,
    0.06 at ``sigma / b = 0.75`` and below 0.09 while ``sigma / b >= 0.7``: binning keeps what the
    features carry. The binned frame keeps at least 256 px per axis (smaller frames, such as
    the 96-160 px test scans, are registered unbinned).
    """
    b = 1
    while min(shape) // (2 * b) >= _MIN_BINNED_SIDE and sigma / (2 * b) >= _MIN_BINNED_SIGMA:
        b *= 2
    return b


def _checkerboard_bins(image: np.ndarray, b: int, out: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sums of the two checkerboard colours of each ``b`` x ``b`` bin (``b`` even) of a float32
    image, written into ``out`` (two float32 arrays of the grid of whole bins: a partial last row
    or column of bins is dropped).

    Each colour holds half the bin's pixels, point-symmetric about the bin centre: both halves are
    sampled at the bin centres, with independent photon noise, and their mean is the binned frame.
    """
    h, w = out[0].shape
    for colour, total in enumerate(out):
        views = [image[i : h * b : b, j : w * b : b] for i in range(b) for j in range(b) if (i + j) % 2 == colour]
        np.add(views[0], views[1], out=total)
        for view in views[2:]:
            total += view
    return out


def _tukey(n: int, fraction: float) -> np.ndarray:
    w = np.ones(n, np.float32)
    m = int(round(fraction * n))
    if m > 0:
        ramp = 0.5 * (1 - np.cos(np.pi * (np.arange(m) + 0.5) / m))
        w[:m] = ramp
        w[n - m :] = ramp[::-1]
    return w


class RunningRegistration:
    """Online registration of a frame sequence to a running reference, applying only significant shifts.

    Parameters
    ----------
    shape : tuple of int
        Frame shape (H, W).
    n_reference : int or None
        The reference is the mean of the features of the last ``n_reference`` registered frames;
        ``None`` (default): of every frame registered so far (see Notes).
    upsample_factor : int
        Sub-pixel precision ``1/upsample_factor``.
    sigma : float
        Smoothing of :func:`edge_features` (px).
    max_jump : float or None
        A shift differing from the previous one by more than this (px) is still accepted (jumps
        happen) but counted in :attr:`n_jumps`.
    significance : float or None
        A shift is applied only when the estimate differs from zero by more than
        ``significance`` times its own standard error on either axis (see Notes), so a sample
        that does not move is never resampled (the shift stays exactly ``(0, 0)``); a change of
        more than that from the shift in use is a jump (pending until the next frame confirms
        it). ``None`` applies every estimate (every frame is resampled).
    noise_window : int
        Frames over which the standard error of the estimate is pooled.
    whitening : float
        Exponent ``p`` of the cross-power normalization ``C / |C|**p`` of the estimate: 1 is phase
        correlation (every frequency weighted alike), 0 the plain cross-correlation of the
        features. Full whitening amplifies the noisy high frequencies of low-contrast frames
        (below an absorption edge, OD ~0.1) and pulls their estimates towards the reference's
        position by up to 40 % of the shift, so a drift drags the running reference along;
        0.5 keeps the robustness to contrast changes (see Notes for the cross-check); 0.25
        measured no better on the simulated scans (with the earlier Laplacian features) and let
        a still Fe K sample be resampled.
    binning : int or None
        Register the frame binned ``binning`` x ``binning`` (1, or an even number); shifts stay in
        frame pixels with the same sub-pixel step. ``None`` (default): the largest power of two
        that keeps at least 256 bins per axis and a smoothing ``sigma`` of at least 0.7 bin (see
        Notes): 2 for the 730 x 771 px frames of the full-size demo, 1 below 512 px.

    Attributes
    ----------
    binning : int
        The binning in use.
    last_estimate : ndarray, shape (2,)
        Raw phase-correlation estimate of the last frame.
    uncertainty : ndarray, shape (2,)
        Current standard error (px) of one estimate, per axis.
    n_applied : int
        Frames whose shift was changed because the change was significant.
    n_reverted : int
        Changes undone because the next frame's estimate agreed with the shift before the change
        and not with the new one (one-frame outliers, e.g. where the contrast changes at the edge).
    n_rejected : int
        Significant changes not applied because the phase-correlation estimate (full whitening)
        was closer to the shift in use than to the change (``whitening < 1`` only).
    reference_offset : ndarray, shape (2,)
        Where the running reference's sample sits relative to the first frame's (px), from the
        frames that entered it at ``(0, 0)`` before the sample was seen to move (see Notes);
        subtracted from every applied shift.

    Notes
    -----
    Per frame: one real forward FFT of the padded feature image, one inverse real FFT and an
    upsampled DFT on the half spectrum; the registered features enter the reference via the
    Fourier shift theorem (no extra FFT). Two halves of the frame with independent photon noise
    are also registered, each to its own reference: unbinned the even and the odd detector rows
    (half-size FFTs), binned the two checkerboard colours of every bin (the bin's pixels ``(i,
    j)`` with ``i + j`` even, and odd: point-symmetric about the bin centre, so both are sampled
    at the bin centres; their mean is the binned frame). Half their difference measures the
    noise of the estimate on the frame itself (pooled by a median over the last
    ``noise_window`` frames, robust to outliers; never below half the sub-pixel step,
    ``0.5 / upsample_factor``), whatever the sample, contrast or photon budget. A real movement
    moves both halves alike and does not enter it. The smoothing is shared where it is linear
    (along x for the frame and its row sets; the binned frame is the mean of its two smoothed
    halves), the features are written into persistent zero-padded FFT inputs (and, binned, the
    intermediate images into reused buffers: fresh ones cost ~2 ms of page faults per frame),
    and the phase-correlation cross-check of a significant change reuses the estimate's
    cross-power spectrum and skips its sub-pixel refinement when the integer peak already
    decides; the whitened division multiplies by ``1 / r`` as numpy's complex division does
    (:func:`_divide_by_real`).

    Binning: the features are smoothed by a Gaussian of ``sigma`` px, whose transfer at the
    Nyquist frequency of a grid binned by ``b``, ``1 / (2 b)`` cycles/px, is
    ``exp(-pi**2 (sigma / b)**2 / 2)``: 0.06 for the default ``sigma`` binned 2 x 2, below 0.09
    while ``sigma / b >= 0.7`` (the automatic rule), so the binned frame keeps what the features
    carry. It is smoothed by ``sigma / b`` bins and registered with ``upsample_factor * b`` (same
    sub-pixel step in frame pixels), at ~1/4 of the cost: 3 binned feature images instead of a
    full-size and two half-size ones. Tracking error on full-size demo frames (730 x 771 px, 62
    frames across the L3 white line, every instrument effect; the scene of
    tests/test_registration.py with seeds 0-3): rms 0.070 / 0.070 / 0.102 / 0.047 px binned
    against 0.052 / 0.294 / 0.063 / 0.111 px unbinned, largest 0.12 / 0.15 / 0.19 / 0.10 px
    against 0.10 / 0.92 / 0.12 / 0.17 px; noise-free frames of seed 0: 0.052 / 0.11 px binned,
    0.086 / 0.51 px unbinned. The 256-bin floor keeps smaller frames (the 96-260 px test
    scans) unbinned: coarser grids were not measured.

    Cost (``benchmarks/bench_regspeed.py``, 62 full-size demo frames of 730 x 771 px, best of 5
    CPU time, 2026-12-05, load 1.6-1.8): 10.8 ms per frame binned 2 x 2 (37.9 ms unbinned before
    the binning, 43 ms before the earlier savings); 96-136 px scans 0.8-1.5 ms, same shifts and
    decisions as before. Memory: 3 complex64 half spectra of the (binned) grid for the
    cumulative reference (``3 (n_reference + 1)`` for a finite one), padded float32 FFT inputs,
    plus a few per frame (~3.4 MB at 602 x 643 unbinned; binned at 730 x 771: 1.8 MB of
    reference, 5 MB of reused buffers).

    Reference: the mean of every registered frame's features (``n_reference=None``). A mean of
    the last 8 frames random-walks: each frame enters it with its own estimation error (over the
    649 frames of the full-size demo's L3 window it wandered up to 0.9 px with the Laplacian
    features, 0.4 px with the gradient magnitude); the cumulative mean converges. Across the edge
    the gradient magnitude keeps its sign, so post-edge frames still correlate with a reference
    made mostly of pre-edge frames (see :func:`edge_features` for the Laplacian-of-Gaussian
    features that did not, and lost the full-size demo's minority phase).

    Decision per frame: while the estimate is within ``significance`` standard errors of zero the
    frame is not resampled. Once the sample has moved, an estimate consistent with the confirmed
    shift is applied as it is (a drift is followed frame by frame), and after the first confirmed
    change also when it is back within the threshold of zero: a drifting sample that crosses its
    starting position is not snapped to exactly ``(0, 0)`` (that snap is a bias of up to the
    threshold, 5 standard errors). A larger change is applied
    at once (jumps are followed on their first frame); if the next frame's estimate is
    consistent with the shift before the change and not with the change, the change was a
    one-frame outlier and is undone. A change is applied only if the fully whitened
    (phase-correlation) estimate of the same frame is closer to it than to the shift in use: the
    less whitened estimate can lock onto a false shift of several pixels, phase correlation does
    not, and for a real movement both agree. The reference takes each frame at the applied shift
    (taking it at the raw estimate instead let the early, noisy estimates of a low-contrast
    pre-edge set a 0.3 px offset of the whole reference on a still Fe K scan, which then became
    significant above the edge).

    Frame of reference: the shifts register every frame onto the first one. The reference is the
    mean of the frames' features at their applied shifts, so a frame that entered it at ``(0, 0)``
    while its estimate was ``est`` (below the threshold, before the sample was seen to move: a
    slow drift in the first frames) moved the reference's sample by ``-est`` times that frame's
    share of the reference (its feature amplitude over the total). That offset is accumulated in
    :attr:`reference_offset` (no image kept) and, once shifts are applied, subtracted from them:
    the still frames are not resampled, the moved ones land on the first frame's position and not
    on wherever the early drift left the reference. Frames applied at their estimate do not move
    the reference. Without it, a 0.3 px/frame random walk left every later frame ~0.25 px off
    (seeds 0-5 of the drift scans: a constant error of (0.23, 0.24), (0.35, -0.03), (0.05,
    -0.26)... px; the same constant offset added to the TRUE shifts costs as much ARI, 0.931 ->
    0.899 on seed 0). Estimating the offset instead by registering the first frame's features to
    the reference (tried) rests on one low-contrast frame's estimate: mean tracking error 1.52 px
    on seed 9 of the drift scans, Fe K battery seeds 4 / 5 ARI 0.830 / 0.839 against 0.986 /
    0.959. With a finite ``n_reference`` frames leave the
    reference and the offset is not tracked (it stays zero).

    Measured (2026-12-05, loaded machine): simulated 96 px Nd L3 scans of
    tests/test_registration.py (the drift rendered as the simulator renders a displaced sample),
    cubic resampling: a still sample has 0 / 0 / 1 of 160 frames resampled (seeds 0-2; at most 2
    over seeds 0-5) and the ARI of ``register=False``; a 0.3 px/frame random walk plus two 10 px
    jumps gives ARI 0.912 / 0.945 / 0.943 against 0.930 / 0.937 / 0.945 drift-free, mean
    tracking error 0.25 / 0.47 / 0.24 px (seeds 0-9: mean ARI difference +0.001, worst -0.028,
    mean tracking error 0.32 px; without the reference offset -0.045, worst -0.386, 0.40 px; with
    the TRUE shifts 0.931 / 0.976 / 0.953). What remains is the estimator's own bias: noise-free
    frames with every estimate applied are still 0.21 px off on average (seeds 0-5), more after
    the white line, where the features of a frame differ from the reference's by more than a
    translation. The 8-frame reference gave 0.859 / 0.889 / 0.843 on seeds 0-2 (with the earlier
    bilinear rendering of the drift).
    Full-size demo frames (730 x 771 px, every instrument effect, 62 frames across the L3 edge,
    tests/test_registration.py): 0.070 px rms, 0.12 px max tracking error binned 2 x 2 (0.052 /
    0.095 px unbinned; 1.35 / 1.86 px with the Laplacian features); over the demo's whole L3
    window (649 frames) 0.17 px rms with the 8-frame reference and 1.6 px with the Laplacian
    features and the cumulative reference (both unbinned). Known limit:
    below the threshold, in the noisy pre-edge frames before the first significant move, the
    drifting frames themselves are not resampled (they are off by up to the threshold).
    """

    def __init__(
        self,
        shape: tuple[int, int],
        *,
        n_reference: int | None = None,
        upsample_factor: int = 10,
        sigma: float = 1.5,
        max_jump: float | None = 5.0,
        significance: float | None = 5.0,
        noise_window: int = 16,
        whitening: float = 0.5,
        binning: int | None = None,
    ) -> None:
        if len(shape) != 2 or min(shape) < 8:
            raise ValueError(f"shape must be (H, W) with H, W >= 8, got {shape}")
        if not (np.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a positive number, got {sigma!r}")
        if binning is not None and not (
            isinstance(binning, (int, np.integer)) and (binning == 1 or (binning >= 2 and binning % 2 == 0))
        ):
            raise ValueError(f"binning must be None, 1 or an even integer, got {binning!r}")
        if binning is not None and min(shape) // binning < 8:
            raise ValueError(f"binning: {binning} leaves fewer than 8 px per axis of shape {tuple(shape)}")
        if n_reference is not None and n_reference < 1:
            raise ValueError(f"n_reference must be None or >= 1, got {n_reference}")
        if significance is not None and not (np.isfinite(significance) and significance >= 0):
            raise ValueError(f"significance must be None or a non-negative number, got {significance!r}")
        if noise_window < 1:
            raise ValueError(f"noise_window must be >= 1, got {noise_window}")
        if not (np.isfinite(whitening) and 0 <= whitening <= 1):
            raise ValueError(f"whitening must be in [0, 1], got {whitening!r}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.n_reference = None if n_reference is None else int(n_reference)
        self.upsample_factor = int(upsample_factor)
        self.sigma = float(sigma)
        self.max_jump = max_jump
        self.significance = None if significance is None else float(significance)
        self.noise_window = int(noise_window)
        self.whitening = float(whitening)
        self.binning = _auto_binning(self.shape, self.sigma) if binning is None else int(binning)
        self._cross_check: tuple[np.ndarray, np.ndarray | None] | None = None
        b = self.binning
        self._grid = (self.shape[0] // b, self.shape[1] // b)  # registered grid (binned pixels)
        self._step = float(b)  # full-frame px per grid px
        self._upsample = self.upsample_factor * b  # same sub-pixel step in full-frame px
        self._fshape = _fft_shape(self._grid, real=b > 1)
        self._ramp_y, self._ramp_x = _ramps(self._fshape)
        self._taper_y = _tukey(self._grid[0], 0.1)
        self._taper_x = _tukey(self._grid[1], 0.1)
        self._padded = np.zeros(self._fshape, np.float32)  # FFT inputs, zero-padded (see _features)
        if b == 1:  # the two halves: even and odd rows (y spacing 2 px)
            self._hshape = _fft_shape(((self.shape[0] + 1) // 2, self.shape[1]))
            self._half_step = np.array([2.0, 1.0])
            self._taper_rows = {n: _tukey(n, 0.1) for n in {(self.shape[0] + 1) // 2, self.shape[0] // 2}}
            self._padded_rows = np.zeros(self._hshape, np.float32)
        else:  # the two halves: the two checkerboard colours of each bin, on the binned grid
            self._taps = _gaussian_taps(self.sigma / b)
            self._taps_mean = self._taps * np.float32(2.0 / (b * b))  # also turns sums of b * b / 2 px into means
            # reused float32 buffers of the grid (fresh ones cost page faults, ~2 ms per frame):
            # 2 checkerboard sums, smoothed along x, 3 smoothed (2 halves, their mean), 2 gradients
            self._work = [np.empty(self._grid, np.float32) for _ in range(8)]
            self._hshape = self._fshape
            self._half_step = np.array([self._step, self._step])
            self._padded_rows = self._padded
        self._hramp_y, self._hramp_x = _ramps(self._hshape)
        self._ref = _RunningSum(self.n_reference)
        self._ref_halves = (_RunningSum(self.n_reference), _RunningSum(self.n_reference))
        self._noise: deque[np.ndarray] = deque(maxlen=self.noise_window)
        self.last_shift = np.zeros(2)
        self.last_estimate = np.zeros(2)
        self.reference_offset = np.zeros(2)
        self._weight = 0.0
        self._gated = False
        self._decided = np.zeros(2)
        self.uncertainty = np.full(2, np.inf)
        self.n_frames = 0
        self.n_jumps = 0
        self.n_applied = 0
        self.n_reverted = 0
        self._pending: np.ndarray | None = None
        self.n_rejected = 0
        self._confirmed = np.zeros(2)
        self._moved = False

    def features_fft(self, image: np.ndarray) -> np.ndarray:
        """Half-spectrum FFT (``rfft2``, complex64, padded) of the registration features of ``image``
        (of the frame binned ``binning`` x ``binning`` when :attr:`binning` > 1)."""
        return self._spectra(image, halves=False)[0]

    def _spectra(self, image: np.ndarray, *, halves: bool = True) -> list[np.ndarray]:
        """:meth:`features_fft` of ``image`` and, with ``halves``, the FFTs of the features of its two
        halves of independent photon noise (see Notes of the class).

        Unbinned, the halves are the even and the odd rows (y spacing 2 px: smoothing halved along
        y; the smoothing along x is done once for the three, it acts on each row alone). Binned,
        they are the two checkerboard colours of each ``b`` x ``b`` bin (same centroid as the bin),
        and the binned frame is their mean (smoothed once per half: the smoothing is linear).
        """
        img = np.asarray(image).astype(np.float32, copy=False)
        b = self.binning
        if b == 1:
            across = ndi.gaussian_filter1d(img, self.sigma, axis=1, truncate=3.0, output=np.float32)
            smooth = ndi.gaussian_filter1d(across, self.sigma, axis=0, truncate=3.0, output=np.float32)
            ffts = [sfft.rfft2(_features(smooth, 1.0, self._taper_y, self._taper_x, self._padded))]
            for half in (across[0::2], across[1::2]) if halves else ():
                smooth = ndi.gaussian_filter1d(half, self.sigma / 2, axis=0, truncate=3.0, output=np.float32)
                g = _features(smooth, 2.0, self._taper_rows[half.shape[0]], self._taper_x, self._padded_rows)
                ffts.append(sfft.rfft2(g))
            return [f.astype(np.complex64, copy=False) for f in ffts]
        colours, across, smooth, work = self._work[:2], self._work[2], self._work[3:6], self._work[6:]
        for colour, out in zip(_checkerboard_bins(img, b, colours), smooth):  # sums of b * b / 2 px
            ndi.correlate1d(colour, self._taps_mean, axis=1, output=across, mode="reflect")  # -> means
            ndi.correlate1d(across, self._taps, axis=0, output=out, mode="reflect")
        binned = np.add(smooth[0], smooth[1], out=smooth[2])
        binned *= np.float32(0.5)
        ffts = []
        for g in (binned, *smooth[:2]) if halves else (binned,):
            ffts.append(sfft.rfft2(_features(g, 1.0, self._taper_y, self._taper_x, self._padded, work)))
        return [f.astype(np.complex64, copy=False) for f in ffts]

    def update(self, image: np.ndarray) -> np.ndarray:
        """Shift ``(dy, dx)`` registering ``image`` to the running reference; adds it to the reference.

        The first frame defines the frame of reference and returns ``(0, 0)``. The shift changes
        only when the change is significant (``significance``); an unchanged zero shift is
        exactly ``(0, 0)``. A non-zero shift registers onto the first frame's position
        (:attr:`reference_offset` removed).
        """
        image = _check_image(image, "image")
        if image.shape != self.shape:
            raise ValueError(f"image: shape {image.shape} differs from registration shape {self.shape}")
        f, fe, fo = self._spectra(image)
        shift = self._decided.copy()
        weight = float(np.sqrt(np.vdot(f, f).real))
        self._gated = False
        if self._ref.total is not None:
            est = self._estimate(self._ref.total, f, self._fshape, keep=True) * self._step
            self.last_estimate = est
            half = [self._estimate(r.total, g, self._hshape) for r, g in zip(self._ref_halves, (fe, fo))]
            diff = (half[0] - half[1]) * self._half_step  # in full-frame pixels
            self._noise.append(diff * diff)
            # var(even - odd) = 2 var(one half) = 4 var(full estimate); median of chi2(1) = 0.455
            var = np.median(np.asarray(self._noise), axis=0) / (4.0 * 0.455)
            floor = 0.5 / self.upsample_factor
            self.uncertainty = np.maximum(np.sqrt(var), floor)
            shift = self._decide(est)
        ref_shift = shift
        self._weight += weight
        if self._gated and self.n_reference is None:
            # placed at (0, 0) although estimated at ``est``: the reference's sample position moves
            # by that frame's share of -est (see Notes)
            self.reference_offset = self.reference_offset - (weight / self._weight) * self.last_estimate
        out = shift - self.reference_offset if np.any(shift != 0) else shift
        if np.any(ref_shift != 0):
            f = _fourier_shift(f, ref_shift / self._step, self._ramp_y, self._ramp_x)
            fe = _fourier_shift(fe, ref_shift / self._half_step, self._hramp_y, self._hramp_x)
            fo = _fourier_shift(fo, ref_shift / self._half_step, self._hramp_y, self._hramp_x)
        self._ref.push(f)
        self._ref_halves[0].push(fe)
        self._ref_halves[1].push(fo)
        self._decided = shift
        self.last_shift = out
        self.n_frames += 1
        return out.copy()

    def _significant(self, change: np.ndarray) -> bool:
        return self.significance is None or bool(np.any(np.abs(change) > self.significance * self.uncertainty))

    def _decide(self, est: np.ndarray) -> np.ndarray:
        """Shift to apply given the estimate.

        While the estimate is within ``significance`` standard errors of zero, the frame is not
        resampled (exactly ``(0, 0)``): a sample that does not move never is. Once the sample has
        moved, an estimate consistent with the confirmed shift is applied as it is, so a slow
        drift is followed frame by frame instead of in steps of the gate; after the first
        confirmed change also back near zero. A significant change
        is applied at once (jumps are followed on their first frame) but stays *pending*: it is
        confirmed when the next frame's estimate agrees with it and not with the previous shift;
        if the next estimate is consistent with the previous shift instead, the change was a
        one-frame outlier (e.g. where the contrast changes across the edge) and is undone.
        """
        if self._pending is not None:
            pending, self._pending = self._pending, None
            if not self._significant(est - self._confirmed):  # back where it was: the null wins
                self.n_reverted += 1
                return self._follow(est)
            if not self._significant(est - pending):
                self._confirmed = pending
                self._moved = True
                return self._follow(est)
        elif not self._significant(est - self._confirmed):
            return self._follow(est)
        if self.whitening != 1.0 and self.significance is not None:
            if self._whitened_keeps_confirmed(est):
                self.n_rejected += 1  # the phase-correlation estimate stays with the shift in use
                return self._confirmed.copy()
        change = est - self._decided
        if self.max_jump is not None and np.max(np.abs(change)) > self.max_jump:
            self.n_jumps += 1
        self.n_applied += 1
        self._pending = est.copy()
        return est.copy()

    def _follow(self, est: np.ndarray) -> np.ndarray:
        """Shift to apply for an estimate consistent with the confirmed shift."""
        if self.significance is not None and not self._significant(est) and not self._moved:
            self._confirmed = np.zeros(2)
            self._gated = True
            return self._confirmed.copy()  # not moved from the reference position: exactly (0, 0)
        self._confirmed = est.copy()
        return est.copy()

    def _whitened_keeps_confirmed(self, est: np.ndarray) -> bool:
        """Whether the phase-correlation estimate of the frame is at least as far (Chebyshev
        distance) from ``est`` as from the confirmed shift.

        Uses the cross-power spectrum and its modulus kept by :meth:`_estimate`. The sub-pixel
        refinement moves the integer peak by at most :func:`_refine_radius` per axis, so it is
        skipped when the integer peak already decides.
        """
        product, scale = self._cross_check
        if scale is None:
            scale = np.maximum(np.abs(product), _TINY)
        coarse, phase = _correlation_peak(_divide_by_real(product, scale), None, real_shape=self._fshape)
        peak = coarse * self._step  # in full-frame pixels
        margin = np.max(np.abs(peak - est)) - np.max(np.abs(peak - self._confirmed))
        bound = 2 * _refine_radius(self._upsample) * self._step + 1e-6
        if margin >= bound or margin < -bound:
            return bool(margin >= bound)
        whitened = _refine_peak(coarse, phase, self._upsample, real_shape=self._fshape) * self._step
        return bool(np.max(np.abs(whitened - est)) >= np.max(np.abs(whitened - self._confirmed)))

    def _estimate(self, ref: np.ndarray, f: np.ndarray, fshape: tuple[int, int], *, keep: bool = False) -> np.ndarray:
        """Shift (grid pixels) of ``f`` against ``ref`` (cross-power spectrum whitened by ``whitening``); ``keep``
        keeps the spectrum and its modulus for :meth:`_whitened_keeps_confirmed`."""
        product = np.conj(f)
        np.multiply(ref, product, out=product)
        if self.whitening == 1.0:
            return _cross_power_shift(product, self._upsample, "phase", real_shape=fshape)
        scale = None
        if self.whitening > 0:
            scale = np.abs(product)
            np.maximum(scale, _TINY, out=scale)
            if self.whitening == 0.5:
                whitened = _divide_by_real(product, np.sqrt(scale))
            else:
                whitened = _divide_by_real(product, scale ** np.float32(self.whitening))
        else:
            whitened = product
        if keep:
            self._cross_check = (product, scale)
        return _cross_power_shift(whitened, self._upsample, None, real_shape=fshape)


def _divide_by_real(z: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``z / r`` for complex64 ``z`` and positive float32 ``r``, without promoting ``r`` to complex.

    numpy's complex division by ``r + 0j`` multiplies both parts by ``1 / r`` (Smith's method with
    a zero ratio): the same values (up to the sign of zeros) at ~2/3 of the cost.
    """
    out = np.empty_like(z)
    inverse = np.divide(np.float32(1), r)
    np.multiply(z.real, inverse, out=out.real)
    np.multiply(z.imag, inverse, out=out.imag)
    return out



def _ramps(fshape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    fy = sfft.fftfreq(fshape[0]).astype(np.float32)
    fx = sfft.rfftfreq(fshape[1]).astype(np.float32)
    return (-2j * np.pi * fy).astype(np.complex64), (-2j * np.pi * fx).astype(np.complex64)


def _fourier_shift(f: np.ndarray, shift, ramp_y: np.ndarray, ramp_x: np.ndarray) -> np.ndarray:
    """Half spectrum of the image translated by ``shift`` (Fourier shift theorem)."""
    out = f * np.exp(ramp_y[:, None] * np.float32(shift[0]))
    out *= np.exp(ramp_x[None, :] * np.float32(shift[1]))
    return out.astype(np.complex64, copy=False)


class _RunningSum:
    """Sum of the last ``n`` half spectra."""

    def __init__(self, n: int | None) -> None:
        self.n = n
        self.total: np.ndarray | None = None
        self._recent: deque[np.ndarray] = deque()

    def push(self, f: np.ndarray) -> None:
        if self.total is None:
            self.total = f.copy()
        else:
            self.total += f
        if self.n is None:  # cumulative: nothing to forget
            return
        self._recent.append(f)
        if len(self._recent) > self.n:
            self.total -= self._recent.popleft()
