"""Seeded instrument effects of the simulated TXM (pure numpy/scipy, no ophyd).

This module turns a noise-free optical-density map of the sample (from
:mod:`txm_live.sim.phantom`) into the uint16 frames a TXM detector records. Every effect of
``docs/physics.md`` ("Instrument effects") can be switched on or off and tuned through
:class:`EffectsConfig`; :class:`InstrumentModel` holds the seeded, precomputed parts (flat-field
pattern, glitch energies, drift path, jumps) and renders frames.

Frame model (one detector pixel ``x`` at monochromator energy ``E``, frame number ``n``)::

    photons(x) = flux * beam(t_n) * throughput(E) * F(x) * [ g(E) * (PSF * T)(x) + leak ] / (1 + leak)
    counts(x)  = gain * Poisson(photons(x)) + bias + Normal(0, read_noise)   -> round, clip to uint16

(above ``poisson_gaussian_above`` photons the Poisson draw is replaced by a Gaussian of the same
mean and variance, see :func:`detector_counts`)

with ``PSF * T`` the optical image of the sample's transmission ``T = exp(-OD)`` evaluated at the
detector pixels (magnification about the optical axis plus drift, jitter and jumps, in ONE
resampling of the band-limited image, vacuum beyond the sample map; see :func:`optical_image`), ``F`` the
flat-field structure (vignetting, structured pattern, dust), ``beam`` the top-up sawtooth on a
virtual clock ``t_n = n * frame_time_s``, ``g(E)`` the monochromator glitch dips of the
fundamental and ``leak`` the harmonic / scattered fraction that does not see the sample
absorption and is not affected by glitches. Flats use ``T = 1``; darks have no photons.

Geometry: the detector frame is the phantom shape plus ``margin_px`` on each side. At the
reference energy and zero displacement the phantom centre sits on the detector centre with one
phantom pixel per detector pixel. The pixel size (nm in the sample plane) is proportional to the
energy, ``pixel_size(E) = pixel_size_nm * E / reference_energy`` (zone plate refocused, detector
fixed), so the sample shrinks on the detector by ``reference_energy / E`` about the optical axis
(the detector centre plus ``axis_offset_px``). Displacements (drift, jitter, jumps and the sample
stage offset) are in nominal pixels of the sample plane.

Everything is deterministic given ``seed`` and the frame number: the noise of frame ``n`` comes
from ``numpy.random.default_rng(SeedSequence([seed, 1, n]))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np
from scipy import ndimage, sparse

__all__ = [
    "EffectsConfig",
    "Glitch",
    "InstrumentModel",
    "beam_intensity",
    "detector_counts",
    "flat_field_pattern",
    "glitch_factor",
    "make_glitches",
    "optical_image",
    "place_sample",
    "spectral_throughput",
]

#: Names of the boolean switches of :class:`EffectsConfig`.
SWITCHES = (
    "noise",
    "flat_structure",
    "beam_decay",
    "throughput",
    "glitches",
    "jitter",
    "drift",
    "jumps",
    "magnification",
    "leak",
    "psf",
)

_UINT16_MAX = 65535.0


@dataclass(frozen=True)
class EffectsConfig:
    """Switches and parameters of the instrument effects (defaults from docs/physics.md).

    Parameters
    ----------
    noise : bool
        Poisson photon noise and Gaussian read noise. Off: counts are the rounded expectation.
    flux : float
        Mean photons per pixel per exposure in a flat (tunable 2000-10000).
    gain, bias, read_noise : float
        ADU per photon, ADU offset, ADU rms read noise. Counts are clipped to 16 bit.
    flat_structure : bool
        Vignetting, structured illumination pattern and dust spots; off: uniform flat.
    vignetting : float
        Relative intensity loss at the detector corners (quadratic fall-off).
    pattern_amplitude : float
        Standard deviation of the structured flat pattern (relative, "a few %").
    n_dust : int
        Number of dust spots on the scintillator.
    beam_decay : bool
        Storage-ring top-up sawtooth on the virtual clock.
    topup_period_s, topup_decay, frame_time_s : float
        Top-up period (s), relative decay per period, virtual seconds per frame.
    throughput : bool
        Smooth spectral throughput of the beamline across ``energy_range``.
    throughput_amplitude : float
        Peak-to-peak relative variation of the throughput over the scan range.
    glitches : bool
        Monochromator glitches (narrow dips of the fundamental).
    n_glitches : int
        Number of glitches placed (seeded) inside ``energy_range``, away from the Nd edges.
    glitch_depth, glitch_width_ev : float
        Relative depth of the deepest glitch and its Gaussian sigma (eV).
    jitter, jitter_px : bool, float
        Per-frame random displacement, standard deviation per axis (nominal pixels).
    drift, drift_px : bool, float
        Slow smooth drift; displacement magnitude reached at the end of ``energy_range``.
    jumps, n_jumps, jump_px : bool, int, float
        Rare persistent stage slips of at least ``jump_px`` pixels at seeded energies.
    magnification : bool
        Pixel size proportional to energy about the optical axis.
    reference_energy : float
        Energy (eV) at which the pixel size is ``pixel_size_nm`` (magnification 1).
    axis_offset_px : tuple of float
        Optical axis position relative to the detector centre (rows, columns).
    leak, leak_fraction : bool, float
        Harmonic / scattered photons that do not see the sample absorption, relative to the flat.
    psf, psf_sigma_px : bool, float
        Gaussian point-spread function of the optics and scintillator (sigma in nominal pixels,
        applied to the transmission before it is placed on the detector; see :func:`optical_image`).
    poisson_gaussian_above : float
        Expected photon count above which the photon noise is drawn as a Gaussian of equal mean
        and variance (speed; see :func:`detector_counts`). ``float("inf")``: exact Poisson.
    energy_range : tuple of float
        Scan range (eV) used as the progress variable of drift and jumps and for throughput and
        glitch placement.
    margin_px : int
        Detector margin on each side of the phantom (room for drift).

    Notes
    -----
    Use :meth:`all_off` for an ideal instrument (every switch False) and ``dataclasses.replace``
    or keyword overrides to switch single effects back on.
    """

    noise: bool = True
    flux: float = 5000.0
    gain: float = 2.5
    bias: float = 100.0
    read_noise: float = 3.0
    flat_structure: bool = True
    vignetting: float = 0.20
    pattern_amplitude: float = 0.03
    n_dust: int = 6
    beam_decay: bool = True
    topup_period_s: float = 300.0
    topup_decay: float = 0.004
    frame_time_s: float = 1.5
    throughput: bool = True
    throughput_amplitude: float = 0.10
    glitches: bool = True
    n_glitches: int = 2
    glitch_depth: float = 0.30
    glitch_width_ev: float = 0.8
    jitter: bool = True
    jitter_px: float = 1.5
    drift: bool = True
    drift_px: float = 25.0
    jumps: bool = True
    n_jumps: int = 2
    jump_px: float = 12.0
    magnification: bool = True
    reference_energy: float = 6000.0
    axis_offset_px: tuple[float, float] = (4.0, -6.0)
    leak: bool = True
    leak_fraction: float = 0.005
    psf: bool = True
    psf_sigma_px: float = 0.45
    poisson_gaussian_above: float = 1000.0
    energy_range: tuple[float, float] = (6000.0, 7023.0)
    margin_px: int = 64

    def __post_init__(self) -> None:
        for name in SWITCHES:
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        positive = ("flux", "gain", "topup_period_s", "frame_time_s", "reference_energy")
        for name in positive:
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a finite positive number, got {getattr(self, name)!r}")
        non_negative = (
            "bias", "read_noise", "vignetting", "pattern_amplitude", "topup_decay",
            "throughput_amplitude", "glitch_width_ev", "jitter_px", "drift_px", "jump_px",
            "psf_sigma_px",
        )
        for name in non_negative:
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        if not self.poisson_gaussian_above >= 0:  # inf allowed (exact Poisson), NaN rejected
            raise ValueError(f"poisson_gaussian_above must be >= 0 or inf, got {self.poisson_gaussian_above!r}")
        for name in ("n_dust", "n_glitches", "n_jumps", "margin_px"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if not 0 <= self.glitch_depth < 1:
            raise ValueError(f"glitch_depth must be in [0, 1), got {self.glitch_depth!r}")
        if not 0 <= self.leak_fraction < 1:
            raise ValueError(f"leak_fraction must be in [0, 1), got {self.leak_fraction!r}")
        if not self.vignetting < 1:
            raise ValueError(f"vignetting must be < 1, got {self.vignetting!r}")
        lo, hi = self.energy_range
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo > 0):
            raise ValueError(f"energy_range must be (low, high) with 0 < low < high, got {self.energy_range!r}")
        if len(self.axis_offset_px) != 2:
            raise ValueError(f"axis_offset_px must be (rows, cols), got {self.axis_offset_px!r}")

    @classmethod
    def all_off(cls, **overrides: object) -> EffectsConfig:
        """An ideal instrument: every switch False, then ``overrides`` applied."""
        return cls(**{**{name: False for name in SWITCHES}, **overrides})

    def with_overrides(self, **overrides: object) -> EffectsConfig:
        """Copy with fields replaced; unknown names raise ``TypeError`` naming them."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown instrument effect parameter(s) {unknown}; known: {sorted(known)}")
        return replace(self, **overrides)


@dataclass(frozen=True)
class Glitch:
    """One monochromator glitch: a Gaussian dip of the fundamental at ``energy`` (eV)."""

    energy: float
    depth: float
    width_ev: float


def _rng(seed: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *tags]))


def flat_field_pattern(
    shape: tuple[int, int],
    *,
    seed: int = 0,
    vignetting: float = 0.2,
    pattern_amplitude: float = 0.03,
    n_dust: int = 6,
    center: tuple[float, float] | None = None,
) -> np.ndarray:
    """Seeded relative flat-field structure, float32, mean 1.

    Parameters
    ----------
    shape : (H, W)
        Detector frame shape.
    seed : int
        Seed of the pattern and dust positions.
    vignetting : float
        Relative loss at the corners (quadratic radial fall-off from ``center``).
    pattern_amplitude : float
        Standard deviation of the structured pattern (smoothed noise plus condenser stripes).
    n_dust : int
        Number of Gaussian dust spots (depth 10-40 %, sigma 1.5-5 px).
    center : (row, col), optional
        Centre of the vignetting; the frame centre by default.

    Returns
    -------
    ndarray of float32, shape (H, W)
    """
    h, w = (int(s) for s in shape)
    if h < 2 or w < 2:
        raise ValueError(f"shape must be at least 2 x 2, got {shape!r}")
    rng = _rng(seed, 11)
    cy, cx = center if center is not None else ((h - 1) / 2, (w - 1) / 2)
    y = (np.arange(h, dtype=np.float32) - cy)[:, None]
    x = (np.arange(w, dtype=np.float32) - cx)[None, :]
    r2 = (y / (h / 2)) ** 2 + (x / (w / 2)) ** 2
    pattern = 1.0 - np.float32(vignetting) * r2 / 2.0  # r2 == 2 at the corners
    if pattern_amplitude > 0:
        noise = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), sigma=12.0)
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(40.0, 90.0)
        stripes = np.sin(2 * np.pi * (np.cos(angle) * y + np.sin(angle) * x) / period).astype(np.float32)
        structured = noise / max(float(noise.std()), 1e-12) + 0.7 * stripes
        structured /= max(float(structured.std()), 1e-12)
        pattern = pattern * (1.0 + np.float32(pattern_amplitude) * structured)
    for _ in range(int(n_dust)):
        py, px = rng.uniform(0, h), rng.uniform(0, w)
        sigma = rng.uniform(1.5, 5.0)
        depth = rng.uniform(0.10, 0.40)
        r = int(math.ceil(4 * sigma))
        y0, y1 = max(int(py) - r, 0), min(int(py) + r + 1, h)
        x0, x1 = max(int(px) - r, 0), min(int(px) + r + 1, w)
        yy = (np.arange(y0, y1) - py)[:, None]
        xx = (np.arange(x0, x1) - px)[None, :]
        spot = 1.0 - depth * np.exp(-(yy**2 + xx**2) / (2 * sigma**2))
        pattern[y0:y1, x0:x1] *= spot.astype(np.float32)
    pattern = np.clip(pattern, 0.05, None)
    return (pattern / pattern.mean()).astype(np.float32)


def beam_intensity(
    time_s: np.ndarray | float, *, period_s: float = 300.0, decay: float = 0.004, phase_s: float = 0.0
) -> np.ndarray:
    """Storage-ring top-up sawtooth: 1 right after a top-up, ``1 - decay`` just before the next.

    Vectorized over ``time_s`` (seconds); returns float64.
    """
    if period_s <= 0:
        raise ValueError(f"period_s must be > 0, got {period_s!r}")
    t = np.asarray(time_s, dtype=np.float64) + phase_s
    return 1.0 - decay * np.mod(t, period_s) / period_s


def spectral_throughput(
    energy: np.ndarray | float, *, energy_range: tuple[float, float] = (6000.0, 7023.0), amplitude: float = 0.1
) -> np.ndarray:
    """Smooth relative beamline throughput (mirror reflectivity, crystal bandwidth) vs energy.

    A gentle slope and curvature with ``amplitude`` peak-to-peak variation over ``energy_range``,
    normalised to 1 at the start of the range. Vectorized; float64.
    """
    lo, hi = energy_range
    f = (np.asarray(energy, dtype=np.float64) - lo) / (hi - lo)
    shape = 0.6 * f - 1.4 * f * (f - 1.0) * 0.5  # 0 at f=0, 0.6 at f=1, bulge in between
    return 1.0 + amplitude * shape / 0.6


def make_glitches(
    *,
    seed: int = 0,
    n: int = 2,
    energy_range: tuple[float, float] = (6000.0, 7023.0),
    depth: float = 0.3,
    width_ev: float = 0.8,
    avoid: tuple[float, ...] = (6208.0, 6722.0),
    avoid_ev: float = 25.0,
) -> tuple[Glitch, ...]:
    """Seeded glitch list: ``n`` energies in ``energy_range`` at least ``avoid_ev`` from ``avoid``.

    The first glitch has ``depth``, later ones half of it.
    """
    rng = _rng(seed, 23)
    lo, hi = energy_range
    out: list[Glitch] = []
    while len(out) < n:
        e = float(np.round(rng.uniform(lo + 10, hi - 10), 1))
        if all(abs(e - a) >= avoid_ev for a in avoid) and all(abs(e - g.energy) > 20 for g in out):
            out.append(Glitch(energy=e, depth=depth if not out else depth / 2, width_ev=width_ev))
    return tuple(out)


def glitch_factor(energy: np.ndarray | float, glitches: tuple[Glitch, ...]) -> np.ndarray:
    """Relative intensity of the fundamental, 1 outside glitches. Vectorized; float64."""
    e = np.asarray(energy, dtype=np.float64)
    factor = np.ones_like(e)
    for g in glitches:
        if g.width_ev == 0:
            continue
        factor = factor * (1.0 - g.depth * np.exp(-0.5 * ((e - g.energy) / g.width_ev) ** 2))
    return factor


def _map_offset(
    map_shape: tuple[int, int], detector_shape: tuple[int, int], scale: float, shift: tuple[float, float],
    axis_offset: tuple[float, float],
) -> np.ndarray:
    """``offset`` of the affine map ``map_coordinate = scale * detector_index + offset`` (per axis).

    The magnification is about the optical axis (detector centre plus ``axis_offset``); at zero
    ``shift`` and ``scale == 1`` the map's centre sits on the detector centre.
    """
    dc = np.array([(detector_shape[0] - 1) / 2, (detector_shape[1] - 1) / 2])
    pc = np.array([(map_shape[0] - 1) / 2, (map_shape[1] - 1) / 2])
    axis = dc + np.asarray(axis_offset, dtype=np.float64)
    return axis - axis * scale - np.asarray(shift, dtype=np.float64) - dc + pc


def _check_geometry(scale: float, shift: tuple[float, float], axis_offset: tuple[float, float]) -> None:
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be > 0, got {scale!r}")
    if np.shape(shift) != (2,) or not np.all(np.isfinite(shift)):
        raise ValueError(f"shift must be two finite numbers (dy, dx), got {shift!r}")
    if np.shape(axis_offset) != (2,) or not np.all(np.isfinite(axis_offset)):
        raise ValueError(f"axis_offset must be two finite numbers (dy, dx), got {axis_offset!r}")


def _tap_matrix(k: np.ndarray, weight: np.ndarray, keep: np.ndarray, n_in: int) -> sparse.csr_matrix:
    """(n_out, n_in) float32 sparse matrix with ``weight[j, t]`` at column ``k[j, t]`` of row ``j``, where ``keep``."""
    rows = np.broadcast_to(np.arange(k.shape[0])[:, None], k.shape)
    return sparse.csr_matrix((weight[keep].astype(np.float32), (rows[keep], k[keep])), shape=(k.shape[0], n_in))


def _pixel_overlaps(n_out: int, n_in: int, scale: float, offset: float) -> sparse.csr_matrix:
    """Fraction of each output pixel's area (one axis) that each input pixel covers.

    Output pixel ``j`` spans ``[c - scale/2, c + scale/2]`` in input coordinates with
    ``c = scale * j + offset``; input pixel ``k`` spans ``[k - 1/2, k + 1/2]``. Row ``j`` holds the
    overlap lengths divided by ``scale`` (so a row sums to 1 where the output pixel lies inside the
    input grid; the shortfall is the part outside it). At most ``ceil(scale) + 1`` non-zeros a row.
    """
    centre = scale * np.arange(n_out, dtype=np.float64) + offset
    lo = centre - scale / 2
    hi = centre + scale / 2
    taps = int(math.ceil(scale)) + 1
    k = np.floor(lo + 0.5).astype(np.intp)[:, None] + np.arange(taps)[None, :]
    weight = (np.clip(hi[:, None], k - 0.5, k + 0.5) - np.clip(lo[:, None], k - 0.5, k + 0.5)) / scale
    return _tap_matrix(k, weight, (k >= 0) & (k < n_in) & (weight > 1e-9), n_in)


def place_sample(
    od: np.ndarray,
    detector_shape: tuple[int, int],
    *,
    scale: float = 1.0,
    shift: tuple[float, float] = (0.0, 0.0),
    axis_offset: tuple[float, float] = (0.0, 0.0),
    outside: float = 0.0,
) -> np.ndarray:
    """Average a sample-plane map over each detector pixel (exact pixel-area integration).

    Parameters
    ----------
    od : ndarray, shape (H, W)
        Map in the sample plane, constant over each nominal pixel (one element per pixel), e.g.
        a transmission, a label fraction or an optical density.
    detector_shape : (Hd, Wd)
        Output shape.
    scale : float
        Sample-plane pixels per detector pixel (``pixel_size(E) / pixel_size_nm``); > 1 shrinks
        the sample on the detector.
    shift : (dy, dx)
        Sample displacement in nominal pixels (positive moves it to larger indices).
    axis_offset : (dy, dx)
        Optical axis relative to the detector centre; the fixed point of the magnification.
    outside : float
        Value of the map beyond its edges (0 for an optical density or a label fraction, 1 for
        a transmission: vacuum).

    Returns
    -------
    ndarray of float32, shape detector_shape; ``outside`` where a detector pixel sees no map.

    Notes
    -----
    Each detector pixel, a square of side ``scale`` nominal pixels in the sample plane, records
    the mean of the map over its area: the map is taken as constant over each nominal pixel
    (the phantom's voxels), and the weight of a map pixel is the area both squares share. The
    magnification is about the optical axis (detector centre plus ``axis_offset``); at zero
    displacement and ``scale == 1`` the map's centre sits on the detector centre. The simulator
    images the sample with :func:`optical_image`; this function places maps that are truly
    constant over each pixel, such as the ground-truth label fractions. The geometry is
    separable, so the placement is two sparse products with at most ``ceil(scale) + 1``
    non-zeros per row and column: ``out = Ry (map - outside) Rx^T + outside``. For a
    translation at ``scale == 1`` the area weights are exactly the bilinear interpolation
    weights; for ``scale > 1`` every map pixel contributes in proportion to its area (point
    sampling would skip part of the map), for ``scale < 1`` it reduces to bilinear-like weights
    of width ``scale``. Memory: the output and one (Hd, W) float32 intermediate.
    """
    od = np.asarray(od)
    if od.ndim != 2:
        raise ValueError(f"od must be 2-D, got shape {od.shape}")
    _check_geometry(scale, shift, axis_offset)
    if not math.isfinite(outside):
        raise ValueError(f"outside must be finite, got {outside!r}")
    hd, wd = (int(n) for n in detector_shape)
    offset = _map_offset(od.shape, (hd, wd), scale, shift, axis_offset)
    ry = _pixel_overlaps(hd, od.shape[0], float(scale), float(offset[0]))
    rx = _pixel_overlaps(wd, od.shape[1], float(scale), float(offset[1]))
    m = od.astype(np.float32, copy=outside != 0)
    if outside != 0:
        m -= np.float32(outside)
    out = np.asarray(rx @ np.asarray(ry @ m).T, dtype=np.float32).T
    out = np.ascontiguousarray(out)
    if outside != 0:
        out += np.float32(outside)
    return out

_PSF_TRUNCATE = 3.5  # Gaussian kernel radius in sigmas


def _cubic_taps(n_out: int, n_in: int, scale: float, offset: float) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Keys cubic-convolution weights (a = -1/2) sampling ``n_in`` samples at ``scale * j + offset``.

    Returns the (n_out, n_in) sparse matrix (4 taps a row; taps beyond the input are dropped: the
    caller pads the input so that they fall on vacuum) and the floor of each sample position.
    """
    position = scale * np.arange(n_out, dtype=np.float64) + offset
    base = np.floor(position).astype(np.intp)
    k = base[:, None] + np.arange(-1, 3)[None, :]
    d = np.abs(position[:, None] - k)
    a = -0.5
    weight = np.where(d <= 1.0, ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0,
                      np.where(d < 2.0, ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a, 0.0))
    return _tap_matrix(k, weight, (k >= 0) & (k < n_in) & (weight != 0.0), n_in), base


def optical_image(
    od: np.ndarray,
    detector_shape: tuple[int, int],
    *,
    scale: float = 1.0,
    shift: tuple[float, float] = (0.0, 0.0),
    axis_offset: tuple[float, float] = (0.0, 0.0),
    psf_sigma_px: float = 0.0,
) -> np.ndarray:
    """Relative intensity of the sample's image on the detector pixels (1 = vacuum), float32.

    Parameters
    ----------
    od : ndarray, shape (H, W)
        Optical density of the sample, one nominal pixel per element.
    detector_shape : (Hd, Wd)
        Output shape.
    scale : float
        Sample-plane pixels per detector pixel (``pixel_size(E) / pixel_size_nm``).
    shift : (dy, dx)
        Sample displacement in nominal pixels (positive moves it to larger indices).
    axis_offset : (dy, dx)
        Optical axis relative to the detector centre; the fixed point of the magnification.
    psf_sigma_px : float
        Gaussian point-spread function of the optics and scintillator, sigma in nominal pixels;
        0: none.

    Returns
    -------
    ndarray of float32, shape detector_shape; 1 (vacuum) where the detector sees no sample.

    Notes
    -----
    Physics. A real sample is continuous, its edges sit anywhere between pixel centres, and the
    objective band-limits its image: a displaced sample gives a translated image, exactly as sharp
    as a still one, and the camera samples it. The phantom's OD map is taken as the samples of
    that continuous sample at the nominal pixel centres. The image is built in three steps:

    1. Transmission ``T = exp(-od)`` (the detector integrates photons, so the intensity, not the
       OD, is what is blurred and interpolated), surrounded by vacuum (``T = 1``): a particle
       that touches the map's border is blurred across it like across any edge.
    2. The optical image ``G * T``: a Gaussian of variance ``psf_sigma_px**2 + (scale**2 - 1) / 12``
       in nominal pixels. The second term is the pixel integration: at ``scale > 1`` a detector
       pixel averages ``scale**2`` nominal pixels, and a box of width ``scale`` has the variance
       ``scale**2 / 12``, of which the still frame's own pixel (``1 / 12``) is already in the
       samples. A still frame at ``scale == 1`` is therefore the PSF-blurred transmission, the
       frame model of the still sample unchanged. At ``scale < 1`` (below the reference energy)
       the image keeps the resolution of the samples: the map holds no finer detail.
    3. That band-limited image is evaluated at the detector pixel centres (magnification about
       the optical axis, displacement ``shift``) by cubic convolution (Keys, a = -1/2: it passes
       through the samples, reproduces quadratics, 4 taps per axis, so a still frame and an
       integer displacement reproduce the samples exactly), clamped to the range of the 2 x 2
       samples around each point. The clamp removes the Gibbs overshoot at sharp particle edges:
       a 0.45 px PSF leaves 37 % modulation at the Nyquist frequency, the image is under-sampled
       there and any interpolating kernel (sinc, prefiltered B-splines) rings by several % of
       the edge step, which at an edge of transmission ~0.05 becomes tenths of OD. A real image
       has no such overshoot; with the clamp the interpolated image stays within its neighbours.

    Bilinear placement of the OD (the earlier model) averaged two pixels at a half-pixel
    displacement and none at a whole one: a displacement-dependent blur of every interface,
    which no registration can undo; here a displaced frame keeps the still frame's resolution
    up to the interpolation error of an under-sampled image near its sharpest edges.

    Cost: one Gaussian filter of the padded map, two sparse products with 4 non-zeros a row and
    a clamp (~15 ms CPU for a 730 x 771 frame, as the earlier bilinear placement); memory a few
    frame-sized float32 arrays.
    """
    od = np.asarray(od)
    if od.ndim != 2:
        raise ValueError(f"od must be 2-D, got shape {od.shape}")
    _check_geometry(scale, shift, axis_offset)
    if not (math.isfinite(psf_sigma_px) and psf_sigma_px >= 0):
        raise ValueError(f"psf_sigma_px must be a finite number >= 0, got {psf_sigma_px!r}")
    sigma = math.sqrt(psf_sigma_px**2 + max(scale * scale - 1.0, 0.0) / 12.0)
    pad = math.ceil(_PSF_TRUNCATE * sigma) + 3  # the blur's reach plus the cubic taps: vacuum beyond
    t = np.pad(np.exp(-od.astype(np.float32)), pad, mode="constant", constant_values=np.float32(1.0))
    if sigma > 0:
        t = ndimage.gaussian_filter(t, sigma=sigma, truncate=_PSF_TRUNCATE, mode="constant", cval=1.0,
                                    output=np.float32)
    hd, wd = (int(n) for n in detector_shape)
    offset = _map_offset(od.shape, (hd, wd), scale, shift, axis_offset) + pad
    # taps beyond the padded map read vacuum: evaluate 1 + interpolate(T - 1)
    t -= np.float32(1.0)
    ry, iy = _cubic_taps(hd, t.shape[0], float(scale), float(offset[0]))
    rx, ix = _cubic_taps(wd, t.shape[1], float(scale), float(offset[1]))
    out = np.ascontiguousarray(np.asarray(rx @ np.asarray(ry @ t).T, dtype=np.float32).T)
    # clamp to the 2 x 2 neighbouring samples (vacuum, 0, beyond the padded map)
    t = np.pad(t, 1, mode="constant", constant_values=np.float32(0.0))
    lo = np.minimum(np.minimum(t[:-1, :-1], t[1:, :-1]), np.minimum(t[:-1, 1:], t[1:, 1:]))
    hi = np.maximum(np.maximum(t[:-1, :-1], t[1:, :-1]), np.maximum(t[:-1, 1:], t[1:, 1:]))
    cy = np.clip(iy + 1, 0, lo.shape[0] - 1)
    cx = np.clip(ix + 1, 0, lo.shape[1] - 1)
    np.clip(out, lo[np.ix_(cy, cx)], hi[np.ix_(cy, cx)], out=out)
    out += np.float32(1.0)
    return out


def detector_counts(
    photons: np.ndarray,
    *,
    rng: np.random.Generator | None,
    gain: float = 2.5,
    bias: float = 100.0,
    read_noise: float = 3.0,
    gaussian_above: float = 1000.0,
) -> np.ndarray:
    """Photon expectation -> uint16 counts (Poisson, gain, bias, read noise, 16-bit clip).

    Parameters
    ----------
    photons : ndarray
        Expected photons per pixel.
    rng : numpy Generator or None
        Noise source; ``None`` gives the rounded noise-free expectation ``gain * photons + bias``.
    gain, bias, read_noise : float
        ADU per photon, ADU offset, ADU rms Gaussian read noise.
    gaussian_above : float
        Pixels expecting more photons than this draw ``gain * N(photons, photons)`` plus read
        noise in one Gaussian draw instead of an exact Poisson draw (``inf``: exact everywhere).

    Notes
    -----
    The Gaussian shortcut keeps mean and variance exact; it only drops the Poisson skewness
    ``1/sqrt(photons)`` (< 3 % above 1000 photons) and the 2.5-ADU photon quantization, which
    the 3-ADU read noise blurs anyway. It makes a 730 x 771 frame ~4x faster than ``Generator.poisson``.
    """
    if rng is None:
        counts = np.float32(gain) * photons.astype(np.float32, copy=False) + np.float32(bias)
    else:
        lam = photons.astype(np.float32, copy=False)
        z = rng.standard_normal(lam.shape, dtype=np.float32)
        # Gaussian branch everywhere first: gain * lam + bias + sqrt(gain^2 lam + read^2) z
        counts = np.sqrt(np.float32(gain * gain) * lam + np.float32(read_noise * read_noise)) * z
        counts += np.float32(gain) * lam
        counts += np.float32(bias)
        low = (lam <= gaussian_above) & (lam > 0)  # zero photons: read noise only (done above)
        if np.any(low):
            lam_low = lam[low]
            exact = rng.poisson(lam_low).astype(np.float32) * np.float32(gain) + np.float32(bias)
            if read_noise > 0:
                exact += z[low] * np.float32(read_noise)
            counts[low] = exact
    np.rint(counts, out=counts)
    np.clip(counts, 0.0, _UINT16_MAX, out=counts)
    return counts.astype(np.uint16)


class InstrumentModel:
    """Seeded instrument: precomputed flat structure, glitches, drift path and jumps.

    Parameters
    ----------
    sample_shape : (H, W)
        Shape of the phantom (sample-plane map).
    config : EffectsConfig
        Effect switches and parameters.
    seed : int
        Seed of every random element; frame ``n`` draws its noise from ``SeedSequence([seed, 1, n])``.

    Notes
    -----
    Memory: one float32 flat pattern of the detector shape (~2.3 MB for 730 x 771) plus per-frame
    temporaries of a few detector-sized float32 arrays. Rendering a sample frame costs one Gaussian
    filter of the sample map and one clamped cubic resampling (:func:`optical_image`) and one
    Poisson draw of the detector size.
    """

    def __init__(self, sample_shape: tuple[int, int], config: EffectsConfig | None = None, *, seed: int = 0):
        if len(sample_shape) != 2 or min(sample_shape) < 2:
            raise ValueError(f"sample_shape must be (H, W) with H, W >= 2, got {sample_shape!r}")
        self.config = config if config is not None else EffectsConfig()
        self.seed = int(seed)
        self.sample_shape = (int(sample_shape[0]), int(sample_shape[1]))
        m = self.config.margin_px
        self.detector_shape = (self.sample_shape[0] + 2 * m, self.sample_shape[1] + 2 * m)
        c = self.config
        if c.flat_structure:
            hd, wd = self.detector_shape
            center = ((hd - 1) / 2 + c.axis_offset_px[0], (wd - 1) / 2 + c.axis_offset_px[1])
            self.flat = flat_field_pattern(
                self.detector_shape, seed=self.seed, vignetting=c.vignetting,
                pattern_amplitude=c.pattern_amplitude, n_dust=c.n_dust, center=center,
            )
        else:
            self.flat = None
        self.glitch_list = (
            make_glitches(seed=self.seed, n=c.n_glitches, energy_range=c.energy_range,
                          depth=c.glitch_depth, width_ev=c.glitch_width_ev)
            if c.glitches else ()
        )
        rng = _rng(self.seed, 31)
        # Drift: mostly linear in scan progress along a seeded direction, with a gentle wiggle.
        angle = rng.uniform(0, 2 * np.pi)
        self._drift_dir = np.array([np.sin(angle), np.cos(angle)])
        self._drift_perp = np.array([-self._drift_dir[1], self._drift_dir[0]])
        self._drift_wiggle = rng.uniform(0.05, 0.12)
        self._drift_freq = rng.uniform(1.0, 2.0)
        # Jumps: persistent slips at seeded progress values.
        self.jump_positions = np.sort(rng.uniform(0.15, 0.9, size=c.n_jumps)) if c.jumps else np.zeros(0)
        jump_angles = rng.uniform(0, 2 * np.pi, size=c.n_jumps) if c.jumps else np.zeros(0)
        jump_sizes = c.jump_px * rng.uniform(1.0, 1.3, size=c.n_jumps) if c.jumps else np.zeros(0)
        self.jump_vectors = np.stack([np.sin(jump_angles), np.cos(jump_angles)], axis=-1) * jump_sizes[:, None]
        self._topup_phase = float(rng.uniform(0, c.topup_period_s))

    # --- scalar effects --------------------------------------------------------------------
    def progress(self, energy: float) -> float:
        """Scan progress in [0, 1] from the energy (drives drift and jumps)."""
        lo, hi = self.config.energy_range
        return float(np.clip((energy - lo) / (hi - lo), 0.0, 1.0))

    def scale(self, energy: float) -> float:
        """Pixel size relative to the nominal one: ``energy / reference_energy`` (1 if off)."""
        return float(energy) / self.config.reference_energy if self.config.magnification else 1.0

    def pixel_size_nm(self, energy: float, nominal_nm: float) -> float:
        """Pixel size (nm, sample plane) of a frame taken at ``energy``."""
        return float(nominal_nm) * self.scale(energy)

    def sample_offset(self, energy: float, frame_index: int) -> np.ndarray:
        """Sample displacement (dy, dx) in nominal pixels: drift + jumps + jitter."""
        c = self.config
        f = self.progress(energy)
        offset = np.zeros(2)
        if c.drift:
            wiggle = self._drift_wiggle * np.sin(2 * np.pi * self._drift_freq * f)
            offset += c.drift_px * (self._drift_dir * f + self._drift_perp * wiggle)
        if c.jumps and len(self.jump_positions):
            offset += self.jump_vectors[self.jump_positions <= f].sum(axis=0)
        if c.jitter and c.jitter_px > 0:
            offset += c.jitter_px * _rng(self.seed, 2, int(frame_index)).standard_normal(2)
        return offset

    def beam_factor(self, energy: float, frame_index: int) -> float:
        """Top-up sawtooth x spectral throughput (both 1 when switched off); glitches excluded."""
        c = self.config
        b = 1.0
        if c.beam_decay:
            b *= float(beam_intensity(frame_index * c.frame_time_s, period_s=c.topup_period_s,
                                      decay=c.topup_decay, phase_s=self._topup_phase))
        if c.throughput:
            b *= float(spectral_throughput(energy, energy_range=c.energy_range, amplitude=c.throughput_amplitude))
        return b

    def glitch(self, energy: float) -> float:
        """Relative intensity of the fundamental at ``energy`` (1 without glitches)."""
        return float(glitch_factor(energy, self.glitch_list)) if self.glitch_list else 1.0

    # --- frames ----------------------------------------------------------------------------
    def expected_photons(
        self,
        od: np.ndarray | None,
        energy: float,
        frame_index: int,
        *,
        shutter_open: bool = True,
        stage_offset_px: tuple[float, float] = (0.0, 0.0),
    ) -> np.ndarray:
        """Noise-free photons per detector pixel (float32, detector shape).

        ``od=None`` means no sample in the beam (flat); ``shutter_open=False`` gives zeros (dark).
        ``stage_offset_px`` is the sample-stage displacement (nominal pixels) added to the drift.
        """
        c = self.config
        if not shutter_open:
            return np.zeros(self.detector_shape, dtype=np.float32)
        g = self.glitch(energy)
        leak = c.leak_fraction if c.leak else 0.0
        if od is None:
            rel = np.full(self.detector_shape, np.float32(g + leak), dtype=np.float32)
        else:
            if od.shape != self.sample_shape:
                raise ValueError(f"od must have shape {self.sample_shape}, got {od.shape}")
            shift = self.sample_offset(energy, frame_index) + np.asarray(stage_offset_px, dtype=np.float64)
            rel = optical_image(od, self.detector_shape, scale=self.scale(energy), shift=tuple(shift),
                                axis_offset=c.axis_offset_px, psf_sigma_px=c.psf_sigma_px if c.psf else 0.0)
            rel *= np.float32(g)
            if leak:
                rel += np.float32(leak)
        scale = np.float32(c.flux * self.beam_factor(energy, frame_index) / (1.0 + leak))
        rel *= scale
        if self.flat is not None:
            rel *= self.flat
        return rel

    def render(
        self,
        od: np.ndarray | None,
        energy: float,
        frame_index: int,
        *,
        shutter_open: bool = True,
        stage_offset_px: tuple[float, float] = (0.0, 0.0),
    ) -> np.ndarray:
        """One uint16 detector frame (see :meth:`expected_photons` for the arguments)."""
        photons = self.expected_photons(od, energy, frame_index, shutter_open=shutter_open,
                                        stage_offset_px=stage_offset_px)
        c = self.config
        rng = _rng(self.seed, 1, int(frame_index)) if c.noise else None
        return detector_counts(photons, rng=rng, gain=c.gain, bias=c.bias, read_noise=c.read_noise,
                               gaussian_above=c.poisson_gaussian_above)
