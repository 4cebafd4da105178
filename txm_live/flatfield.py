"""Flat/dark correction: raw detector counts to optical density.

The optical density of a pixel is ``OD = -ln((I - D) / (F - D))`` with ``I`` the sample image,
``F`` the flat (reference) image taken with the sample out of the field of view and ``D`` the dark
(shutter closed) image. Pixels where the logarithm is undefined (zero or negative counts after dark
subtraction) or where the detector saturated are *flagged* in a validity mask and set to a defined
fill value; they are never returned as NaN or inf.

Besides the pure function :func:`optical_density`, two small online objects keep the state that
a live consumer needs: :class:`DarkAverage` (running mean of dark frames) and :class:`FlatStore`
(flat images by energy, looked up by exact energy, nearest energy or linear interpolation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FlatFieldResult", "optical_density", "DarkAverage", "FlatStore"]


@dataclass(frozen=True)
class FlatFieldResult:
    """Optical density of one frame and its pixel-validity bookkeeping.

    Attributes
    ----------
    od : ndarray of float32, shape (H, W)
        ``-ln((I - D) / (F - D))``; equal to the fill value (0 by default) where ``valid`` is False.
    valid : ndarray of bool, shape (H, W)
        Pixels whose optical density is defined and not affected by saturation.
    n_zero : int
        Pixels with zero signal (sample or flat) after dark subtraction.
    n_negative : int
        Pixels with negative signal (sample or flat) after dark subtraction.
    n_saturated : int
        Pixels where the raw sample or flat reached the saturation level.
    """

    od: np.ndarray
    valid: np.ndarray
    n_zero: int
    n_negative: int
    n_saturated: int

    @property
    def n_invalid(self) -> int:
        """Number of masked pixels."""
        return int(self.valid.size - np.count_nonzero(self.valid))


def _as_image_or_scalar(value: np.ndarray | float, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "uif":
        raise ValueError(f"{name}: expected a numeric array or scalar, got dtype {arr.dtype}")
    if arr.ndim == 0:
        return arr.astype(np.float32)
    if arr.shape != shape:
        raise ValueError(f"{name}: shape {arr.shape} does not match sample shape {shape}")
    return arr


def optical_density(
    sample: np.ndarray,
    flat: np.ndarray | float,
    dark: np.ndarray | float | None = None,
    *,
    i0: tuple[float, float] | None = None,
    saturation: float | None = 65535,
    fill: float = 0.0,
) -> FlatFieldResult:
    """Flat- and dark-corrected optical density of one frame.

    Parameters
    ----------
    sample : ndarray, shape (H, W)
        Raw sample image (any integer or float dtype, e.g. uint16 counts).
    flat : ndarray, shape (H, W), or float
        Flat (reference) image at the same energy, or a scalar incident-intensity monitor (I0):
        the dark-free counts a pixel would see without the sample, in the units of ``sample``
        (the camera dark is not subtracted from a scalar).
    dark : ndarray, shape (H, W), float or None
        Dark image (e.g. the mean of the dark frames) or a scalar offset; ``None`` for no dark
        subtraction.
    i0 : (float, float), optional
        Incident-intensity monitor readings (ion chamber) during the sample and during the flat
        exposure, ``(I0_sample, I0_flat)``, both finite and positive: each dark-subtracted image is
        divided by its own I0, ``OD = -ln(((I - D) / I0_sample) / ((F - D) / I0_flat))``. The dark
        is not scaled (it does not come from the beam). Only with a flat image.
    saturation : float or None
        Raw count level at or above which a sample or flat pixel counts as saturated (65535 for
        16-bit detectors); ``None`` disables the saturation check.
    fill : float
        Value written into masked pixels of ``od``.

    Returns
    -------
    FlatFieldResult

    Raises
    ------
    ValueError
        If ``sample`` is not 2-D and numeric, or ``flat``/``dark`` do not match its shape.

    Notes
    -----
    Computed in float32 (relative precision 6e-8, far below photon noise). Memory: about five
    float32 frames of temporaries. A pixel is masked if the dark-subtracted sample or flat is
    ``<= 0`` (``n_zero`` counts exact zeros, ``n_negative`` values below zero; a pixel bad in both
    images counts once, as negative if either is negative) or if the raw sample or flat is
    saturated. Masked pixels are set to ``fill`` and flagged, never NaN.
    """
    sample = np.asarray(sample)
    if sample.ndim != 2:
        raise ValueError(f"sample: expected a 2-D image, got shape {sample.shape}")
    if sample.dtype.kind not in "uif":
        raise ValueError(f"sample: expected a numeric image, got dtype {sample.dtype}")
    flat_arr = _as_image_or_scalar(flat, sample.shape, "flat")
    dark_arr = None if dark is None else _as_image_or_scalar(dark, sample.shape, "dark")
    beam_ratio = None
    if i0 is not None:
        try:
            i0_s, i0_f = (float(v) for v in i0)
        except (TypeError, ValueError):
            raise ValueError(f"i0: expected (I0 of the sample, I0 of the flat), got {i0!r}") from None
        if not (np.isfinite(i0_s) and np.isfinite(i0_f) and i0_s > 0 and i0_f > 0):
            raise ValueError(f"i0: both readings must be finite and positive, got {i0!r}")
        if not flat_arr.ndim:
            raise ValueError("i0: a pair of I0 readings needs a flat image, not a scalar flat")
        beam_ratio = np.float32(i0_f / i0_s)

    s = sample.astype(np.float32)  # a copy: safe to modify in place
    f = flat_arr.astype(np.float32, copy=True) if flat_arr.ndim else np.full(sample.shape, flat_arr, np.float32)
    if dark_arr is not None:
        s -= dark_arr
        if flat_arr.ndim:  # a scalar I0 monitor is not a camera image: no camera dark in it
            f -= dark_arr

    negative = (s < 0) | (f < 0)
    zero = ((s == 0) | (f == 0)) & ~negative
    bad = negative | zero
    if saturation is not None:
        saturated = sample >= saturation
        if flat_arr.ndim:
            saturated |= flat_arr >= saturation
        bad |= saturated
        n_saturated = int(np.count_nonzero(saturated))
    else:
        n_saturated = 0
    nonfinite = ~(np.isfinite(s) & np.isfinite(f))
    bad |= nonfinite
    valid = ~bad

    s[bad] = 1.0
    f[bad] = 1.0
    np.divide(s, f, out=s)
    if beam_ratio is not None:  # (S - D) / I0_S over (F - D) / I0_F
        s *= beam_ratio
    np.log(s, out=s)
    np.negative(s, out=s)
    s[bad] = fill
    return FlatFieldResult(
        od=s,
        valid=valid,
        n_zero=int(np.count_nonzero(zero)),
        n_negative=int(np.count_nonzero(negative)),
        n_saturated=n_saturated,
    )


class DarkAverage:
    """Running mean of dark frames.

    Notes
    -----
    Holds one float64 frame (the sum); ``mean`` is float32. Darks taken at the start and at the
    end of a scan are averaged together; frames corrected before the end darks arrive use the
    mean of the darks seen so far.
    """

    def __init__(self) -> None:
        self._sum: np.ndarray | None = None
        self._mean: np.ndarray | None = None
        self.count: int = 0

    def update(self, image: np.ndarray) -> DarkAverage:
        """Add one dark frame; returns self."""
        image = np.asarray(image)
        if image.ndim != 2 or image.dtype.kind not in "uif":
            raise ValueError(f"image: expected a numeric 2-D dark frame, got {image.dtype} {image.shape}")
        if self._sum is None:
            self._sum = image.astype(np.float64)
        else:
            if image.shape != self._sum.shape:
                raise ValueError(f"image: dark shape {image.shape} differs from earlier darks {self._sum.shape}")
            self._sum += image
        self.count += 1
        self._mean = None
        return self

    @property
    def mean(self) -> np.ndarray | None:
        """Mean dark frame (float32), or None before the first dark."""
        if self._sum is None:
            return None
        if self._mean is None:
            self._mean = (self._sum / self.count).astype(np.float32)
            self._mean.flags.writeable = False
        return self._mean


class FlatStore:
    """Flat (reference) images indexed by energy.

    Parameters
    ----------
    energy_tolerance : float
        Two energies closer than this (eV) are the same energy. A repeated flat at the same energy
        is averaged with the earlier ones.

    Notes
    -----
    Flats are kept as given (e.g. uint16: 0.77 MB per 602x643 frame), so a scan with one flat per
    energy keeps all flats: 0.8 GB for 1024 energies. Call :meth:`discard_below` to release flats
    no longer needed when energies increase monotonically.
    """

    def __init__(self, *, energy_tolerance: float = 0.01) -> None:
        if not energy_tolerance >= 0:
            raise ValueError(f"energy_tolerance must be >= 0, got {energy_tolerance}")
        self.energy_tolerance = float(energy_tolerance)
        self._energies: list[float] = []
        self._images: list[np.ndarray] = []
        self._counts: list[int] = []
        self._i0: list[float | None] = []  # I0 monitor reading of each stored flat (mean if averaged)

    def __len__(self) -> int:
        return len(self._energies)

    @property
    def energies(self) -> np.ndarray:
        """Energies of the stored flats, sorted (eV)."""
        return np.sort(np.asarray(self._energies, dtype=np.float64))

    def _index(self, energy: float) -> int | None:
        if not self._energies:
            return None
        e = np.asarray(self._energies)
        i = int(np.argmin(np.abs(e - energy)))
        return i if abs(e[i] - energy) <= self.energy_tolerance else None

    def update(self, energy: float, image: np.ndarray, *, i0: float | None = None) -> FlatStore:
        """Store the flat taken at ``energy`` (eV) and its I0 monitor reading, if any; returns self.

        A flat averaged with earlier ones at the same energy gets the mean of their I0 (None if
        any of them has none).
        """
        energy = float(energy)
        if i0 is not None and not (np.isfinite(i0) and i0 > 0):
            raise ValueError(f"i0: must be finite and positive or None, got {i0}")
        if not np.isfinite(energy):
            raise ValueError(f"energy: must be finite, got {energy}")
        image = np.asarray(image)
        if image.ndim != 2 or image.dtype.kind not in "uif":
            raise ValueError(f"image: expected a numeric 2-D flat, got {image.dtype} {image.shape}")
        i = self._index(energy)
        if i is None:
            self._energies.append(energy)
            self._images.append(image)
            self._counts.append(1)
            self._i0.append(None if i0 is None else float(i0))
        else:
            n = self._counts[i]
            self._images[i] = ((self._images[i].astype(np.float32) * n + image) / (n + 1)).astype(np.float32)
            self._counts[i] = n + 1
            old = self._i0[i]
            self._i0[i] = None if old is None or i0 is None else (old * n + float(i0)) / (n + 1)
        return self

    def has(self, energy: float) -> bool:
        """True if a flat within ``energy_tolerance`` of ``energy`` is stored."""
        return self._index(float(energy)) is not None

    def _choice(self, energy: float, mode: str) -> list[tuple[int, float]]:
        """The stored flats used for ``energy`` and their weights (see :meth:`lookup`)."""
        if mode not in ("nearest", "interpolate"):
            raise ValueError(f"mode must be 'nearest' or 'interpolate', got {mode!r}")
        if not self._energies:
            raise KeyError("no flat images stored")
        energy = float(energy)
        i = self._index(energy)
        if i is not None:
            return [(i, 1.0)]
        e = np.asarray(self._energies)
        nearest = int(np.argmin(np.abs(e - energy)))
        if mode == "nearest" or len(e) == 1:
            return [(nearest, 1.0)]
        below = np.flatnonzero(e < energy)
        above = np.flatnonzero(e > energy)
        if below.size == 0 or above.size == 0:
            return [(nearest, 1.0)]
        lo = int(below[np.argmax(e[below])])
        hi = int(above[np.argmin(e[above])])
        w = float((energy - e[lo]) / (e[hi] - e[lo]))
        return [(lo, 1.0 - w), (hi, w)]

    def lookup(self, energy: float, *, mode: str = "nearest") -> np.ndarray:
        """Flat image for ``energy``.

        Parameters
        ----------
        energy : float
            Energy (eV) of the sample frame.
        mode : {"nearest", "interpolate"}
            A flat within tolerance is always used as is. Otherwise ``"nearest"`` returns the flat of
            the nearest energy and ``"interpolate"`` interpolates linearly between the two
            bracketing flats (nearest outside their range).

        Raises
        ------
        KeyError
            If the store is empty.
        """
        choice = self._choice(energy, mode)
        if len(choice) == 1:
            return self._images[choice[0][0]]
        (lo, _), (hi, w_hi) = choice
        w = np.float32(w_hi)
        return (1 - w) * self._images[lo].astype(np.float32) + w * self._images[hi].astype(np.float32)

    def lookup_i0(self, energy: float, *, mode: str = "nearest") -> float | None:
        """I0 of the flat :meth:`lookup` returns for ``energy`` (interpolated alike), or None.

        None when a flat it uses was stored without I0.
        """
        choice = self._choice(energy, mode)
        values = [self._i0[i] for i, _ in choice]
        if any(v is None for v in values):
            return None
        return float(sum(w * v for (_, w), v in zip(choice, values)))  # type: ignore[operator]

    def discard_below(self, energy: float) -> int:
        """Forget flats more than ``energy_tolerance`` below ``energy`` except the highest of them.

        Returns the number of flats released.
        """
        e = np.asarray(self._energies)
        below = np.flatnonzero(e < energy - self.energy_tolerance)
        if below.size <= 1:
            return 0
        keep_below = below[np.argmax(e[below])]
        drop = set(below.tolist()) - {int(keep_below)}
        self._energies = [x for j, x in enumerate(self._energies) if j not in drop]
        self._images = [x for j, x in enumerate(self._images) if j not in drop]
        self._counts = [x for j, x in enumerate(self._counts) if j not in drop]
        self._i0 = [x for j, x in enumerate(self._i0) if j not in drop]
        return len(drop)
