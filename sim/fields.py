"""Seeded building blocks shared by the phantoms (Nd magnet, battery particle); pure numpy.

:func:`txm_live.sim.phantom.make_phantom` and :func:`txm_live.sim.battery.make_battery_phantom`
draw the same kind of particle: frame coordinates centred on a slightly jittered point
(:func:`frame_coordinates`), an irregular outline scaled to a given area (:func:`particle_outline`), a
thickness map with a smooth undulation (:func:`undulating_thickness`), smooth random fields
(:func:`smooth_field`), and features placed along rotated axes (:func:`rotated`,
:func:`elliptic_gaussian`); both phantom classes derive from :class:`LabelledFrame`. Each function draws from the generator it is given in a fixed order,
so a phantom stays bit-identical for a given seed. :func:`cached_per_energy` is the bounded
per-energy cache of the phantoms' attenuation coefficients.

Coordinates are in frame units: ``u`` (columns) and ``v`` (rows) are pixel offsets from the
centre divided by ``scale = min(H, W) / 2``, so geometry scales with the frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "MU_CACHE_SIZE",
    "LabelledFrame",
    "cached_per_energy",
    "check_energies",
    "check_open_range",
    "check_seed",
    "check_shape",
    "elliptic_gaussian",
    "frame_coordinates",
    "particle_outline",
    "rotated",
    "smooth_field",
    "undulating_thickness",
]

#: Energies whose attenuation coefficients a phantom keeps (the cache is emptied when full).
MU_CACHE_SIZE: int = 8192

T = TypeVar("T")


class LabelledFrame:
    """Mixin of the phantoms: frame shape, particle and phase fractions from ``labels`` (0 = background)."""

    labels: NDArray[np.int8]

    @property
    def shape(self) -> tuple[int, int]:
        """Frame shape ``(H, W)``."""
        return (int(self.labels.shape[0]), int(self.labels.shape[1]))

    @property
    def particle(self) -> NDArray[np.bool_]:
        """Boolean map of the particle pixels (label > 0)."""
        return self.labels > 0

    def _fractions(self, phases: Iterable[int]) -> dict[int, float]:
        """Fraction of the particle pixels carrying each label of ``phases``."""
        n = max(int(np.count_nonzero(self.labels)), 1)
        return {k: float(np.count_nonzero(self.labels == k)) / n for k in phases}


def check_shape(shape: object, *, min_size: int) -> tuple[int, int]:
    """``(H, W)`` as ints; ``ValueError`` naming ``shape`` unless a pair of ints >= ``min_size``."""
    if (
        not isinstance(shape, (tuple, list))
        or len(shape) != 2
        or not all(isinstance(n, (int, np.integer)) for n in shape)
        or min(shape) < min_size
    ):
        raise ValueError(f"shape must be a pair of ints >= {min_size}, got {shape!r}")
    return int(shape[0]), int(shape[1])


def check_seed(seed: object) -> int:
    """``seed`` as an int; ``ValueError`` naming ``seed`` unless a non-negative int."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def check_open_range(name: str, value: float, low: float = 0.0, high: float = 1.0) -> float:
    """``value`` as a float; ``ValueError`` naming ``name`` unless finite and in ``(low, high)``."""
    value = float(value)
    if not np.isfinite(value) or not (low < value < high):
        raise ValueError(f"{name} must be in ({low}, {high}), got {value}")
    return value


def check_energies(energies: ArrayLike) -> NDArray[np.float64]:
    """``energies`` as a float64 array; ``ValueError`` naming ``energies`` unless 1-D, finite and > 0 (eV)."""
    e = np.asarray(energies, dtype=np.float64)
    if e.ndim != 1:
        raise ValueError(f"energies must be 1-D, got shape {e.shape}")
    if not np.all(np.isfinite(e)) or np.any(e <= 0):
        raise ValueError("energies must be finite and > 0 eV")
    return e


def cached_per_energy(cache: dict[float, T], energy: float, compute: Callable[[float], T]) -> T:
    """``compute(energy)``, kept in ``cache`` (at most :data:`MU_CACHE_SIZE` energies).

    Raises
    ------
    ValueError
        If ``energy`` is not finite and > 0 (eV).
    """
    key = float(energy)
    if not np.isfinite(key) or key <= 0:
        raise ValueError(f"energy must be finite and > 0 eV, got {energy!r}")
    cached = cache.get(key)
    if cached is None:
        cached = compute(key)
        if len(cache) >= MU_CACHE_SIZE:
            cache.clear()
        cache[key] = cached
    return cached


def frame_coordinates(
    shape: tuple[int, int], rng: np.random.Generator
) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    """Frame coordinates ``(u, v, scale)`` about a centre jittered by up to 3 % of ``scale``.

    ``u`` (along columns) and ``v`` (along rows), shape ``(H, W)``, are in frame units;
    ``scale = min(H, W) / 2`` is the frame unit in pixels. Draws 2 uniforms from ``rng``.
    """
    h, w = int(shape[0]), int(shape[1])
    scale = 0.5 * min(h, w)  # frame unit in pixels
    cy = 0.5 * (h - 1) + rng.uniform(-0.03, 0.03) * scale
    cx = 0.5 * (w - 1) + rng.uniform(-0.03, 0.03) * scale
    yy, xx = np.mgrid[0:h, 0:w]
    v = (yy - cy) / scale
    u = (xx - cx) / scale
    return u, v, scale


def smooth_field(
    rng: np.random.Generator,
    u: NDArray[np.float64],
    v: NDArray[np.float64],
    *,
    n_waves: int,
    k_min: float,
    k_max: float,
) -> NDArray[np.float64]:
    """Smooth random field of unit-order amplitude: sum of random plane waves (frame units)."""
    out = np.zeros_like(u)
    kk = rng.uniform(k_min, k_max, n_waves)
    angle = rng.uniform(0.0, 2.0 * np.pi, n_waves)
    phase = rng.uniform(0.0, 2.0 * np.pi, n_waves)
    for j in range(n_waves):
        out += np.cos(kk[j] * (np.cos(angle[j]) * u + np.sin(angle[j]) * v) + phase[j])
    return out * np.sqrt(2.0 / n_waves)


def particle_outline(
    rng: np.random.Generator,
    r: NDArray[np.float64],
    theta: NDArray[np.float64],
    *,
    harmonics: Sequence[tuple[int, float]],
    floor: float,
    area_fraction: float,
    min_pixels: int,
    shape: object,
) -> tuple[NDArray[np.float64], NDArray[np.bool_], int]:
    """An irregular particle covering ``area_fraction`` of the frame.

    The outline is ``1 + sum_k a_k cos(k theta + phi_k)`` (``a_k ~ N(0, sigma_k)`` for each
    ``(k, sigma_k)`` of ``harmonics``, ``phi_k`` uniform), floored at ``floor``; the
    outline-relative radius ``rho = r / outline`` is scaled so that ``rho < 1`` on exactly
    ``area_fraction`` of the pixels.

    Returns
    -------
    rho : ndarray of float64, shape (H, W)
        Outline-relative radius (1 on the outline).
    particle : ndarray of bool, shape (H, W)
        ``rho < 1``.
    n_particle : int
        Particle pixels.

    Raises
    ------
    ValueError
        If fewer than ``min_pixels`` pixels are in the particle (``shape`` is named as too small).
    """
    outline = np.ones_like(r)
    for k, sigma in harmonics:
        outline += rng.normal(0.0, sigma) * np.cos(k * theta + rng.uniform(0.0, 2.0 * np.pi))
    rho0 = r / np.maximum(outline, floor)
    rho = rho0 / float(np.quantile(rho0, area_fraction))
    inside = rho < 1.0
    n_particle = int(np.count_nonzero(inside))
    if n_particle < min_pixels:
        raise ValueError(f"shape {shape!r} is too small: only {n_particle} particle pixels")
    return rho, inside, n_particle


def undulating_thickness(
    rng: np.random.Generator,
    u: NDArray[np.float64],
    v: NDArray[np.float64],
    rho: NDArray[np.float64],
    inside: NDArray[np.bool_],
    *,
    max_thickness_um: float,
    power: int,
) -> NDArray[np.float64]:
    """Thickness (um) ``t_max (1 - rho^power)^(1/2)`` with a +-5 % smooth undulation, 0 outside.

    ``power`` 2 is a dome (ellipsoid), larger powers a platelet with a flat top.
    """
    undulation = 1.0 + 0.05 * np.tanh(smooth_field(rng, u, v, n_waves=6, k_min=2.0, k_max=6.0))
    return np.where(
        inside,
        max_thickness_um * np.sqrt(np.clip(1.0 - rho**power, 0.0, 1.0)) * undulation / 1.05,
        0.0,
    )


def rotated(
    u: NDArray[np.float64], v: NDArray[np.float64], centre: int, angle: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Coordinates ``(along, across)`` relative to pixel ``centre`` (flat index), rotated by ``angle``."""
    du, dv = u - u.ravel()[centre], v - v.ravel()[centre]
    along = np.cos(angle) * du + np.sin(angle) * dv
    across = -np.sin(angle) * du + np.cos(angle) * dv
    return along, across


def elliptic_gaussian(
    u: NDArray[np.float64], v: NDArray[np.float64], centre: int, angle: float, sigma_a: float, sigma_b: float
) -> NDArray[np.float64]:
    """Elliptic Gaussian blob (peak 1) at pixel ``centre``, axes rotated by ``angle`` (frame units)."""
    a1, a2 = rotated(u, v, centre, angle)
    return np.exp(-0.5 * ((a1 / sigma_a) ** 2 + (a2 / sigma_b) ** 2))
