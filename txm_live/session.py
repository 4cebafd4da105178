"""Online state of one XANES imaging scan: raw frames in, corrected and registered cube out.

:class:`XanesSession` is what a live consumer feeds frame by frame (pure numpy, no Bluesky). It
keeps the dark and flat state, turns each sample frame into optical density, corrects the
energy-dependent magnification, registers the frame to a running reference, stores it in an
:class:`~txm_live.cube.IncrementalCube` and tells the caller when the energy window of an edge is
complete so that its analysis can start while the scan goes on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from txm_live.cube import IncrementalCube, SharedBlockRef
from txm_live.edges import EdgeWindow, default_windows
from txm_live.errors import FrameError, IlluminatedDarkError, MissingFlatError
from txm_live.flatfield import DarkAverage, FlatStore, optical_density
from txm_live.registration import RunningRegistration, transform_image, transform_mask

__all__ = ["XanesSession", "WindowData", "FrameRecord"]


@dataclass(frozen=True)
class WindowData:
    """Data of one edge window, ready for the analysis.

    Attributes
    ----------
    window : EdgeWindow
    energies : ndarray, shape (n,)
        Acquired energies in the window, increasing.
    block : ndarray of float32, shape (n, H, W)
        Registered optical density (a view of the cube when possible; do not write into it).
    valid : ndarray of bool, shape (H, W)
        Pixels valid in every frame of the window (inside the field of view after registration,
        not saturated, defined logarithm).
    missing : ndarray
        Planned energies of the window that were not acquired (empty without a plan).
    shared : SharedBlockRef or None
        The same block in shared memory, for an analysis in another process (sessions created
        with ``shared_memory=True``, when the block is a view).
    """

    window: EdgeWindow
    energies: np.ndarray
    block: np.ndarray
    valid: np.ndarray
    missing: np.ndarray
    shared: SharedBlockRef | None = None


@dataclass(frozen=True)
class FrameRecord:
    """Bookkeeping of one ingested sample frame (energy, applied scale and shift, masked pixels)."""

    energy: float
    scale: float
    shift: tuple[float, float]
    n_invalid: int


@dataclass
class _Pending:
    energy: float
    image: np.ndarray
    pixel_size: float | None
    i0: float | None


class XanesSession:
    """Incremental flat/dark correction, registration and cube building for one scan.

    Parameters
    ----------
    windows : sequence of EdgeWindow, optional
        Edge windows to watch (default: ``default_windows("Nd", ("L3", "L2"))``).
    expected_energies : sequence of float, optional
        Planned energies in acquisition order. Enables preallocation and exact completeness.
    frame_shape : tuple of int, optional
        Detector frame shape; taken from the first frame otherwise.
    register : bool
        Register frames to a running reference (:class:`~txm_live.registration.RunningRegistration`).
    correct_magnification : bool
        Rescale every frame by ``pixel_size / pixel_size_ref`` about ``optical_axis``.
    pixel_size_ref : float, optional
        Reference pixel size; the first frame's pixel size otherwise.
    optical_axis : tuple of float, optional
        ``(row, col)`` of the optical axis; the image centre otherwise.
    flat_mode : {"nearest", "interpolate"}
        How a flat is chosen when none was taken at the sample's energy.
    energy_tolerance : float
        Energies closer than this (eV) are the same energy.
    max_pending : int
        A sample frame waits for the flat of its energy (the flat comes right after the sample in
        the stream contract, or in a later event page) while at most this many frames wait;
        beyond, the oldest frame is corrected with the nearest stored flat (``flat_mode``), or
        dropped with a ``MissingFlatError`` if there is none. When a flat arrives, the frames
        that waited longer than the frame matching it are corrected with the best stored flat.
        The waiting frames are references to the incoming raw images (no copy).
    saturation : float or None
        Raw saturation level (see :func:`~txm_live.flatfield.optical_density`).
    registration_options : dict, optional
        Keyword arguments of :class:`~txm_live.registration.RunningRegistration`.
    interpolation_order : {1, 3}
        Resampling of a frame that moved or whose pixel size differs from the reference (one
        interpolation for both): 3 (default), cubic B-spline with its interpolating prefilter
        (near band-limited, see Notes of :func:`~txm_live.registration.transform_image`; ~1.7x the
        cost of bilinear, 4.2 against 2.5 ms CPU per 730x771 frame); 1, bilinear. Frames that neither moved nor changed scale are not
        resampled. The choice is a trade of resolution against noise: bilinear weights average
        neighbouring pixels with weights that depend on the sub-pixel shift, so every moved frame
        gets its own blur (at a half-pixel shift 59 % of the modulation at 0.3 cycles/px, the
        cubic spline 93 %) but also a lower photon noise (~0.67 of the standard deviation on
        average over sub-pixel positions); the cubic spline keeps both the resolution and the
        noise. Measured 2026-12-05 (``benchmarks/bench_motion.py``, registered, cubic / bilinear):
        96 px Nd drift scans (the motion rendered as the simulator renders it) seeds 0-2 0.912 /
        0.945 / 0.943 against 0.898 / 0.942 / 0.900 (drift-free 0.930 / 0.937 / 0.945; bilinear
        cannot reach 0.900 on seed 0 even with the true shifts, 0.895); Fe K battery seeds 0-9 mean
        0.926 (magnetite found on 8) against 0.886 (3); FXI Nd plan seeds 0-2 0.928 / 0.939 / 0.923
        against 0.933 / 0.941 / 0.922 (seeds 0-5 mean 0.937 / 0.934); 301 x 322 px Nd particle 0.956
        / 0.960 / 0.968 against 0.955 / 0.959 / 0.964. The cost: the noise-limited Nd L2 edge of the
        full-size demo, where every frame moves, L2 ARI 0.916 against 0.937 (L3 0.973 / 0.972):
        cubic keeps the photon noise that bilinear weights average away.
    min_valid_fraction : float
        A sample frame with fewer usable pixels than this fraction (beam off, shutter closed,
        saturated detector...) is skipped with a ``FrameError`` in :attr:`errors` instead of
        invalidating those pixels for the whole edge window. Usable: valid and optical density
        below ``max_usable_od``.
    max_usable_od : float
        Optical density above which a pixel carries no measurable transmission (6: 0.25 %,
        about 12 photons of a 5000-photon flat); used only for the frame test above.
    max_dark_fraction : float
        Dark frames whose mean exceeds this fraction of the flats' mean were taken with the beam
        on (shutter open, a plan's dry-run mode): they are rejected with an
        :class:`~txm_live.errors.IlluminatedDarkError` in :attr:`errors` and the scan goes on
        without dark subtraction. Checked when the first flat arrives, and for every later dark.
    shared_memory : bool
        Keep the cube in shared memory (see :class:`~txm_live.cube.IncrementalCube`), so that
        window blocks can be analysed in another process without a copy.

    Notes
    -----
    Flats: a flat at the sample's energy is used as is. Flats taken before the scan (flats stored
    before the first sample frame, or stored flats bracketing the sample's energy) are looked up
    by ``flat_mode`` (nearest or interpolated by energy) and the frame is corrected at once;
    otherwise the frame waits for the flat of its energy (see ``max_pending``). I0: when a sample
    and its flat both carry an ``i0`` monitor reading, each dark-subtracted image is divided by its
    own reading (the dark is not); a scalar ``i0`` stands in for the flat when no flat image exists. Darks: the running mean of the dark frames
    seen so far; without darks no dark is subtracted and :attr:`warnings` says so.

    Frames per event: an image of shape ``(N, H, W)`` is a chunk of N exposures taken at the
    same point (``chunk_size`` / ``frame_per_point`` of area detectors). Its counts are summed
    and divided by N, i.e. the dark is scaled by N to match: ``(sum_i I_i - N D) / N``, and the
    same for flats (chunks of any length). The optical density is then exactly that of the
    summed counts ``-ln((sum I - N D) / (sum F - N D))`` for equal chunk lengths, and keeps the
    Poisson statistics of all N exposures. A pixel saturated in any exposure is flagged. A dark
    chunk adds N frames to the dark average.

    Memory: the float32 cube (see :class:`~txm_live.cube.IncrementalCube`), the flats as
    received until released (flats more than one energy below the newest sample are released in
    monotonic scans), a few pending raw frames and the registration reference (~30 MB).
    """

    def __init__(
        self,
        *,
        windows: Sequence[EdgeWindow] | None = None,
        expected_energies: Sequence[float] | np.ndarray | None = None,
        frame_shape: tuple[int, int] | None = None,
        register: bool = True,
        correct_magnification: bool = True,
        pixel_size_ref: float | None = None,
        optical_axis: tuple[float, float] | None = None,
        flat_mode: str = "nearest",
        energy_tolerance: float = 0.01,
        max_pending: int = 64,
        saturation: float | None = 65535,
        registration_options: dict | None = None,
        interpolation_order: int = 3,
        shared_memory: bool = False,
        min_valid_fraction: float = 0.5,
        max_usable_od: float = 6.0,
        max_dark_fraction: float = 0.2,
    ) -> None:
        if flat_mode not in ("nearest", "interpolate"):
            raise ValueError(f"flat_mode must be 'nearest' or 'interpolate', got {flat_mode!r}")
        if not 0.0 <= min_valid_fraction <= 1.0:
            raise ValueError(f"min_valid_fraction must be in [0, 1], got {min_valid_fraction}")
        if interpolation_order not in (1, 3):
            raise ValueError(f"interpolation_order must be 1 or 3, got {interpolation_order!r}")
        if max_pending < 0:
            raise ValueError(f"max_pending must be >= 0, got {max_pending}")
        if pixel_size_ref is not None and not (np.isfinite(pixel_size_ref) and pixel_size_ref > 0):
            raise ValueError(f"pixel_size_ref must be positive, got {pixel_size_ref}")
        self.windows: tuple[EdgeWindow, ...] = tuple(default_windows() if windows is None else windows)
        plan = None
        if expected_energies is not None:
            plan = np.asarray(expected_energies, dtype=np.float64).ravel()
            if plan.size == 0:
                plan = None
            elif not np.all(np.isfinite(plan)):
                raise ValueError("expected_energies must be finite")
        self.expected_energies = plan
        self.register = bool(register)
        self.correct_magnification = bool(correct_magnification)
        self.pixel_size_ref = pixel_size_ref
        self.optical_axis = optical_axis
        self.flat_mode = flat_mode
        self.energy_tolerance = float(energy_tolerance)
        self.max_pending = int(max_pending)
        self.saturation = saturation
        self.registration_options = dict(registration_options or {})
        self.interpolation_order = int(interpolation_order)
        self.shared_memory = bool(shared_memory)
        self.min_valid_fraction = float(min_valid_fraction)
        if not max_usable_od > 0:
            raise ValueError(f"max_usable_od must be > 0, got {max_usable_od}")
        self.max_usable_od = float(max_usable_od)
        if not 0.0 < max_dark_fraction < 1.0:
            raise ValueError(f"max_dark_fraction must be in (0, 1), got {max_dark_fraction}")
        self.max_dark_fraction = float(max_dark_fraction)
        self.n_rejected_darks = 0
        #: Sample frames normalized by their own and their flat's I0 monitor readings.
        self.n_i0_normalized = 0
        self.frame_shape: tuple[int, int] | None = None
        self.cube: IncrementalCube | None = None
        self.darks = DarkAverage()
        self.flats = FlatStore(energy_tolerance=energy_tolerance)
        self._registrar: RunningRegistration | None = None
        self._pending: list[_Pending] = []
        self._completed: list[EdgeWindow] = []
        self.frames: list[FrameRecord] = []
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.n_dropped = 0
        self._max_order_seen = -1
        self._last_energy = -np.inf
        self._prescan_flats: bool | None = None
        self._monotonic = True
        if frame_shape is not None:
            self._init_shape(tuple(frame_shape))

    # ------------------------------------------------------------- helpers
    def _init_shape(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"frame_shape must be (H, W), got {shape}")
        self.frame_shape = (int(shape[0]), int(shape[1]))
        self.cube = IncrementalCube(
            self.frame_shape,
            expected_energies=self.expected_energies,
            energy_tolerance=self.energy_tolerance,
            shared=self.shared_memory,
        )

    def _check_frame(self, image: np.ndarray, what: str, *, combine: bool = True) -> np.ndarray:
        """Validate a frame; a chunk ``(N, H, W)`` becomes its per-exposure mean (see Notes)."""
        arr = np.asarray(image)
        if arr.dtype.kind not in "uif":
            raise FrameError(f"{what}: expected integer or float pixels, got dtype {arr.dtype}")
        if arr.ndim == 3 and arr.shape[0] >= 1:
            if combine:
                arr = self._combine_chunk(arr)
        elif arr.ndim != 2:
            raise FrameError(f"{what}: expected a 2-D image or an (N, H, W) chunk, got shape {arr.shape}")
        shape = arr.shape[-2:]
        if self.frame_shape is None:
            self._init_shape(shape)
        elif shape != self.frame_shape:
            raise FrameError(f"{what}: shape {shape} differs from the run's frame shape {self.frame_shape}")
        return arr

    def _combine_chunk(self, chunk: np.ndarray) -> np.ndarray:
        """Per-exposure mean of an (N, H, W) chunk (float32), saturated where any exposure was."""
        if chunk.shape[0] == 1:
            return chunk[0]
        mean = chunk.sum(axis=0, dtype=np.float64)
        mean /= chunk.shape[0]
        out = mean.astype(np.float32)
        if self.saturation is not None:
            out[np.any(chunk >= self.saturation, axis=0)] = np.float32(self.saturation)
        return out

    @staticmethod
    def _check_energy(energy: float | None, what: str) -> float:
        try:
            e = float(energy)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise FrameError(f"{what}: energy {energy!r} is not a number") from exc
        if not np.isfinite(e):
            raise FrameError(f"{what}: energy is {e}")
        return e

    # ------------------------------------------------------------- ingest
    def add_dark(self, image: np.ndarray) -> None:
        """Add one dark frame (shutter closed) or an ``(N, H, W)`` chunk of N dark frames.

        A dark taken with the beam on (see ``max_dark_fraction``) is rejected: recorded in
        :attr:`errors`, not added.
        """
        arr = self._check_frame(image, "dark frame", combine=False)
        frames = arr if arr.ndim == 3 else arr[None]
        if len(self.flats):
            ratio = float(frames.mean(dtype=np.float64)) / self._flat_level()
            if ratio > self.max_dark_fraction:
                self._reject_darks(len(frames), ratio)
                return
        for frame in frames:
            self.darks.update(frame)

    def _flat_level(self) -> float:
        """Mean count of the stored flats (per exposure), for the illuminated-dark test."""
        return max(float(np.mean([self.flats.lookup(e).mean(dtype=np.float64) for e in self.flats.energies[:3]])),
                   1e-12)

    def _reject_darks(self, n: int, ratio: float) -> None:
        self.n_rejected_darks += n
        self.errors.append(
            f"IlluminatedDarkError: {n} dark frame(s) with a mean of {ratio:.0%} of the flat's were taken with "
            f"the beam on (shutter open, dry-run mode?); rejected, the scan goes on without them"
        )

    def _check_darks(self) -> None:
        """Reject the darks gathered so far if they were illuminated (called at the first flat)."""
        mean = self.darks.mean
        if mean is None:
            return
        ratio = float(mean.mean(dtype=np.float64)) / self._flat_level()
        if ratio > self.max_dark_fraction:
            self._reject_darks(self.darks.count, ratio)
            self.darks = DarkAverage()

    def add_flat(self, energy: float, image: np.ndarray, *, i0: float | None = None) -> tuple[EdgeWindow, ...]:
        """Add the flat taken at ``energy``; returns the edge windows completed by it.

        ``i0``: the incident-intensity monitor reading during the flat (see :meth:`add_sample`).
        """
        e = self._check_energy(energy, "flat frame")
        img = self._check_frame(image, f"flat frame at {e:.2f} eV")
        first = len(self.flats) == 0
        self.flats.update(e, img, i0=self._usable_i0(i0, f"flat frame at {e:.2f} eV"))
        if first:
            self._check_darks()
        done: list[EdgeWindow] = []
        matched = [i for i, p in enumerate(self._pending) if abs(p.energy - e) <= self.energy_tolerance]
        if matched:
            # frames that arrived before the matched one will not get a flat of their own any more:
            # the flat stream moved past them
            ready, self._pending = self._pending[: matched[-1] + 1], self._pending[matched[-1] + 1 :]
            for p in ready:
                done.extend(self._process(p, *self._flat_for(p.energy, self.flat_mode)))
        if done and self._monotonic:
            self.flats.discard_below(e)  # per-energy flats of an increasing scan: keep memory flat
        return tuple(done)

    def add_sample(
        self, energy: float, image: np.ndarray, *, pixel_size: float | None = None, i0: float | None = None
    ) -> tuple[EdgeWindow, ...]:
        """Add the sample frame taken at ``energy``; returns the edge windows completed so far.

        ``i0``: the incident-intensity monitor reading (ion chamber) during the exposure. When the
        flat has one too, both images are normalized by their own I0 (see
        :func:`~txm_live.flatfield.optical_density`); without any flat image, ``i0`` itself stands
        in for the flat (dark-free counts). Unusable readings (None, non-finite, <= 0) are ignored.

        Raises
        ------
        FrameError
            Non-finite energy, non-numeric pixels or a frame shape different from the run's.
        """
        e = self._check_energy(energy, "sample frame")
        img = self._check_frame(image, f"sample frame at {e:.2f} eV")
        if pixel_size is not None:
            try:
                pixel_size = float(pixel_size)
            except (TypeError, ValueError):
                pixel_size = None
            if pixel_size is not None and not (np.isfinite(pixel_size) and pixel_size > 0):
                self.warnings.append(f"pixel size {pixel_size} at {e:.2f} eV ignored")
                pixel_size = None
        p = _Pending(e, img, pixel_size, self._usable_i0(i0, f"sample frame at {e:.2f} eV"))
        if self._prescan_flats is None:
            # flats stored before the first sample frame: a flat series taken before the scan
            self._prescan_flats = len(self.flats) > 0
        if self.flats.has(e):
            return tuple(self._process(p, *self._flat_for(e, "nearest")))
        fe = self.flats.energies
        bracketed = fe.size >= 2 and fe[0] - self.energy_tolerance <= e <= fe[-1] + self.energy_tolerance
        if self._prescan_flats or bracketed:
            return tuple(self._process(p, *self._flat_for(e, self.flat_mode)))
        self._pending.append(p)
        done: list[EdgeWindow] = []
        while len(self._pending) > self.max_pending:
            done.extend(self._resolve_oldest())
        return tuple(done)

    def update(
        self,
        kind: str,
        image: np.ndarray,
        *,
        energy: float | None = None,
        pixel_size: float | None = None,
        i0: float | None = None,
    ) -> tuple[EdgeWindow, ...]:
        """Add one frame of ``kind`` ``"sample"``, ``"flat"`` or ``"dark"``; returns completed windows."""
        if kind == "sample":
            return self.add_sample(energy, image, pixel_size=pixel_size, i0=i0)  # type: ignore[arg-type]
        if kind == "flat":
            return self.add_flat(energy, image, i0=i0)  # type: ignore[arg-type]
        if kind == "dark":
            self.add_dark(image)
            return ()
        raise ValueError(f"kind must be 'sample', 'flat' or 'dark', got {kind!r}")

    def flush(self) -> tuple[EdgeWindow, ...]:
        """Correct every waiting frame with the best flat available (end of the scan)."""
        done: list[EdgeWindow] = []
        while self._pending:
            done.extend(self._resolve_oldest())
        return tuple(done)

    def _resolve_oldest(self) -> list[EdgeWindow]:
        p = self._pending.pop(0)
        if len(self.flats):
            return self._process(p, *self._flat_for(p.energy, self.flat_mode))
        if p.i0 is not None:
            return self._process(p, float(p.i0))
        self.n_dropped += 1
        self.errors.append(
            f"MissingFlatError: no flat image or I0 for the sample frame at {p.energy:.2f} eV; frame dropped"
        )
        return []

    def _usable_i0(self, value: Any, what: str) -> float | None:
        """A monitor reading as a positive float, else None (a warning names the first bad one)."""
        if value is None:
            return None
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = float("nan")
        if np.isfinite(v) and v > 0:
            return v
        if not any(w.startswith("I0 reading") for w in self.warnings):
            self.warnings.append(f"I0 reading {value!r} of the {what} unusable (beam off?): that frame is not "
                                 "normalized by I0")
        return None

    def _flat_for(self, energy: float, mode: str) -> tuple[np.ndarray, float | None]:
        """The flat image for ``energy`` and its I0 reading (None if it has none)."""
        return self.flats.lookup(energy, mode=mode), self.flats.lookup_i0(energy, mode=mode)

    def _process(self, p: _Pending, flat: np.ndarray | float, flat_i0: float | None = None) -> list[EdgeWindow]:
        assert self.cube is not None and self.frame_shape is not None
        i0 = (p.i0, flat_i0) if p.i0 is not None and flat_i0 is not None and np.ndim(flat) else None
        if i0 is not None:
            self.n_i0_normalized += 1
        ff = optical_density(p.image, flat, self.darks.mean, i0=i0, saturation=self.saturation)
        usable = np.count_nonzero(ff.valid & (ff.od < self.max_usable_od))
        valid_fraction = usable / ff.valid.size
        if valid_fraction < self.min_valid_fraction:
            self.n_dropped += 1
            self.errors.append(
                f"FrameError: sample frame at {p.energy:.2f} eV has only {valid_fraction:.0%} usable pixels "
                "(beam off, shutter closed, saturation?); frame skipped"
            )
            return []
        if self.darks.count == 0 and not any(w.startswith("no dark") for w in self.warnings):
            self.warnings.append("no dark frames before the first sample frame: OD not dark-corrected")
        scale = 1.0
        if self.correct_magnification and p.pixel_size is not None:
            if self.pixel_size_ref is None:
                self.pixel_size_ref = p.pixel_size
            scale = p.pixel_size / self.pixel_size_ref
        shift = np.zeros(2)
        if self.register:
            if self._registrar is None:
                self._registrar = RunningRegistration(self.frame_shape, **self.registration_options)
            pre = ff.od if scale == 1.0 else transform_image(ff.od, scale=scale, center=self.optical_axis)
            shift = self._registrar.update(pre)
        if scale != 1.0 or np.any(shift != 0):
            order = self.interpolation_order
            od = transform_image(ff.od, scale=scale, shift=shift, center=self.optical_axis, order=order)
            valid = self._field_of_view(scale, shift)
            if ff.n_invalid:
                # cubic taps reach 1 px further, the prefilter's tail decays 0.27x per px: erode twice
                valid &= transform_mask(ff.valid, scale=scale, shift=shift, center=self.optical_axis,
                                        erode=2 if order == 3 else 0)
        else:
            od, valid = ff.od, ff.valid
        self.cube.update(p.energy, od, valid)
        self.frames.append(FrameRecord(p.energy, float(scale), (float(shift[0]), float(shift[1])), ff.n_invalid))
        self._note_order(p.energy)
        if p.energy < self._last_energy - self.energy_tolerance:
            self._monotonic = False
        self._last_energy = max(self._last_energy, p.energy)
        return self._newly_complete()

    def _field_of_view(self, scale: float, shift: np.ndarray) -> np.ndarray:
        """Output pixels whose source lies inside the detector (separable for this affine map)."""
        assert self.frame_shape is not None
        h, w = self.frame_shape
        c = (
            ((h - 1) / 2, (w - 1) / 2)
            if self.optical_axis is None
            else (float(self.optical_axis[0]), float(self.optical_axis[1]))
        )
        ys = (np.arange(h) - shift[0] - c[0]) / scale + c[0]
        xs = (np.arange(w) - shift[1] - c[1]) / scale + c[1]
        ry = (ys >= -1e-6) & (ys <= h - 1 + 1e-6)
        rx = (xs >= -1e-6) & (xs <= w - 1 + 1e-6)
        return ry[:, None] & rx[None, :]

    # ------------------------------------------------------- completeness
    def _note_order(self, energy: float) -> None:
        if self.expected_energies is None:
            return
        d = np.abs(self.expected_energies - energy)
        i = int(np.argmin(d))
        if d[i] <= self.energy_tolerance:
            self._max_order_seen = max(self._max_order_seen, i)

    def is_complete(self, window: EdgeWindow) -> bool:
        """Whether ``window`` is complete.

        With a plan: every planned energy in the window was acquired, or the scan already acquired
        a planned energy that comes after all of the window's energies in acquisition order (frames
        lost in between are listed in :attr:`WindowData.missing`). Without a plan: an energy at or
        above ``window.end`` was acquired.
        """
        if self.cube is None:
            return False
        if self.cube.covers(window.start, window.end):
            return True
        plan = self.expected_energies
        if plan is None:
            return False
        tol = self.energy_tolerance
        inside = np.flatnonzero((plan >= window.start - tol) & (plan <= window.end + tol))
        return bool(inside.size) and self._max_order_seen > int(inside.max()) and len(self.cube.block(window.start, window.end)[0]) > 0

    def _newly_complete(self) -> list[EdgeWindow]:
        out = []
        for w in self.windows:
            if w not in self._completed and self.is_complete(w):
                self._completed.append(w)
                out.append(w)
        return out

    @property
    def completed(self) -> tuple[EdgeWindow, ...]:
        """Windows reported complete so far, in completion order."""
        return tuple(self._completed)

    @property
    def n_pending(self) -> int:
        """Sample frames waiting for their flat."""
        return len(self._pending)

    @property
    def n_frames(self) -> int:
        """Sample frames stored in the cube."""
        return len(self.frames)

    def window_data(self, window: EdgeWindow) -> WindowData:
        """Energies, optical-density block and valid mask of ``window`` (see :class:`WindowData`).

        Raises
        ------
        MissingFlatError
            If no frame was stored yet (typically: no flats at all).
        """
        if self.cube is None or self.n_frames == 0:
            raise MissingFlatError(f"no corrected frame stored for {window.name}")
        energies, block = self.cube.block(window.start, window.end)
        valid = self.cube.valid_mask(window.start, window.end)
        return WindowData(
            window,
            energies,
            block,
            valid,
            self.cube.missing(window.start, window.end),
            self.cube.shared_block(window.start, window.end),
        )

    def release(self) -> None:
        """Free the cube, flats, pending frames and registration state."""
        if self.cube is not None:
            self.cube.release()
        self.cube = None
        self.flats = FlatStore(energy_tolerance=self.energy_tolerance)
        self._pending = []
        self._registrar = None
