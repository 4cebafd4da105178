"""Incrementally built energy-major optical-density cube.

:class:`IncrementalCube` stores frames as they arrive in a preallocated ``(n_energies, H, W)``
float32 array, one contiguous frame per energy, so that a block of consecutive energies is a view
and ``block.reshape(n_e, -1)`` gives all pixel spectra at once.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

__all__ = ["IncrementalCube", "SharedBlockRef"]


@dataclass(frozen=True)
class SharedBlockRef:
    """Picklable reference to an array in a named shared-memory segment (no data inside).

    Lets another process (e.g. an analysis process) read a block of the cube without a copy.
    """

    name: str
    offset: int
    shape: tuple[int, ...]
    dtype: str
    owner_pid: int = 0

    @contextlib.contextmanager
    def attach(self) -> Iterator[np.ndarray]:
        """Map the segment and yield the array (read-only); unmapped on exit."""
        shm = shared_memory.SharedMemory(name=self.name)
        if os.getpid() != self.owner_pid:
            # Python < 3.13 registers attached segments with this process's resource tracker, which
            # would unlink the owner's segment when this process exits (bpo-38119).
            from multiprocessing import resource_tracker

            resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
        try:
            arr = np.ndarray(self.shape, dtype=np.dtype(self.dtype), buffer=shm.buf, offset=self.offset)
            arr.flags.writeable = False
            yield arr
            del arr
        finally:
            with contextlib.suppress(BufferError):  # a caller kept a view: the mapping dies with it
                shm.close()


def _unlink_segments(segments: list[shared_memory.SharedMemory]) -> None:
    for shm in segments:
        with contextlib.suppress(FileNotFoundError):
            shm.unlink()
        with contextlib.suppress(BufferError):
            shm.close()
    segments.clear()


#: Where POSIX shared memory lives on Linux (a tmpfs, often small in containers).
SHM_DIR = "/dev/shm"


def _reserved_segment(nbytes: int) -> shared_memory.SharedMemory:
    """A new shared-memory segment whose ``nbytes`` are reserved up front, or :class:`OSError`.

    A segment is created sparse: on a full tmpfs the first write to a page that cannot be backed
    kills the process with SIGBUS. So the free space is checked first and the pages are then
    reserved with ``posix_fallocate``, which fails cleanly (``ENOSPC``) instead.
    """
    if os.path.isdir(SHM_DIR):
        st = os.statvfs(SHM_DIR)
        free = st.f_bavail * st.f_frsize
        if free < nbytes:
            raise OSError(f"{SHM_DIR} has {free / 2**20:.0f} MiB free")
    shm = shared_memory.SharedMemory(create=True, size=nbytes)
    fallocate = getattr(os, "posix_fallocate", None)
    fd = getattr(shm, "_fd", -1)
    if fallocate is not None and fd >= 0:
        try:
            fallocate(fd, 0, nbytes)
        except OSError:
            _unlink_segments([shm])
            raise
    return shm


_HUGEPAGE_MIN_BYTES = 64 * 2**20


def _zeros(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Zero-filled array; large ones in anonymous memory advised to use transparent huge pages.

    Frames are written into fresh memory one by one: with 4 KB pages every frame costs hundreds of
    page faults (measured 2-7 ms per 602x643 float32 frame on a busy machine), with 2 MB pages a
    handful. The memory is returned to the system when the last view of the array is dropped.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if nbytes < _HUGEPAGE_MIN_BYTES or advice is None:
        return np.zeros(shape, dtype=dtype)
    buf = mmap.mmap(-1, nbytes)
    with contextlib.suppress(OSError):  # kernel without THP: plain anonymous memory, still zero-filled
        buf.madvise(advice)
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


class IncrementalCube:
    """Energy-major cube ``(n_energies, H, W)`` filled frame by frame.

    Parameters
    ----------
    frame_shape : tuple of int
        ``(H, W)`` of every frame.
    expected_energies : sequence of float, optional
        Planned energies (eV), any order. Storage is preallocated for them in increasing energy
        order, so frames may arrive in any order and blocks of planned energies are views.
    dtype : numpy dtype
        Storage dtype (float32 by default).
    energy_tolerance : float
        Energies closer than this (eV) are the same energy.
    initial_capacity : int
        Frames preallocated when no plan is given (grows by doubling).
    shared : bool
        Keep the storage in a named shared-memory segment so that another process can analyse a
        block without a copy (:meth:`shared_block`). Segments are unlinked by :meth:`release` or
        when the cube is garbage collected. When ``/dev/shm`` has no room for the cube (checked
        and reserved before use, so a full ``/dev/shm`` never means SIGBUS), the cube falls back
        to process memory: :attr:`shared` becomes False and :attr:`memory_note` says why.

    Notes
    -----
    Memory: ``n_energies * H * W * 4`` bytes for float32 (1.59 GB for 1024 energies at 602x643)
    plus a bit-packed validity mask (1/32 of that). Unplanned energies are appended after the
    planned ones; storage grows by doubling (a temporary second copy while growing). Blocks are
    views when the stored frames of the range are consecutive and increasing in energy (true for
    planned energies, and for an unplanned scan that increases monotonically); otherwise they are
    gathered copies.

    Duplicates: a frame at an energy already stored is averaged with the earlier frames at that
    energy (running mean weighted by the repeat count; pixels invalid in the new frame keep the
    earlier value, pixels invalid before take the new value). :attr:`n_duplicates` counts them and
    :meth:`repeats` gives the count per energy.
    """

    def __init__(
        self,
        frame_shape: tuple[int, int],
        *,
        expected_energies: Sequence[float] | np.ndarray | None = None,
        dtype: np.dtype | type = np.float32,
        energy_tolerance: float = 0.01,
        initial_capacity: int = 64,
        shared: bool = False,
    ) -> None:
        if len(frame_shape) != 2 or min(frame_shape) < 1:
            raise ValueError(f"frame_shape must be (H, W) with positive sizes, got {frame_shape}")
        if not energy_tolerance >= 0:
            raise ValueError(f"energy_tolerance must be >= 0, got {energy_tolerance}")
        if initial_capacity < 1:
            raise ValueError(f"initial_capacity must be >= 1, got {initial_capacity}")
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise ValueError(f"dtype must be a floating dtype, got {self.dtype}")
        self.energy_tolerance = float(energy_tolerance)
        planned = np.zeros(0)
        if expected_energies is not None:
            planned = np.unique(np.asarray(expected_energies, dtype=np.float64))
            if planned.ndim != 1 or not np.all(np.isfinite(planned)):
                raise ValueError("expected_energies must be a 1-D sequence of finite energies")
            if planned.size > 1 and np.min(np.diff(planned)) <= self.energy_tolerance:
                # merge planned energies closer than the tolerance
                keep = np.concatenate([[True], np.diff(planned) > self.energy_tolerance])
                planned = planned[keep]
        self._planned = planned
        self.shared = bool(shared)
        #: Why the cube is not in shared memory although ``shared=True`` was asked (else ``""``).
        self.memory_note = ""
        self._segments: list[shared_memory.SharedMemory] = []
        self._finalizer = weakref.finalize(self, _unlink_segments, self._segments)
        capacity = max(planned.size, initial_capacity if planned.size == 0 else planned.size)
        self._data = self._alloc((capacity, *self.frame_shape))
        self._packed_w = (self.frame_shape[1] + 7) // 8
        self._valid = np.zeros((capacity, self.frame_shape[0], self._packed_w), dtype=np.uint8)
        self._slot_energy = np.full(capacity, np.nan)
        self._slot_energy[: planned.size] = planned
        self._counts = np.zeros(capacity, dtype=np.int64)
        self._n_slots = planned.size  # slots with an assigned energy
        self.n_duplicates = 0
        self.n_frames = 0

    def _alloc(self, shape: tuple[int, ...]) -> np.ndarray:
        if self.shared:
            nbytes = max(int(np.prod(shape)) * self.dtype.itemsize, 1)
            try:
                shm = _reserved_segment(nbytes)
            except OSError as exc:
                # /dev/shm too small (containers default to 64 MiB) or unusable: private memory
                self.shared = False
                self.memory_note = (
                    f"cube kept in process memory, not shared memory ({nbytes / 2**20:.0f} MiB "
                    f"needed: {exc}); the analysis ran in this process"
                )
            else:
                self._segments.append(shm)
                return np.ndarray(shape, dtype=self.dtype, buffer=shm.buf)
        return _zeros(shape, self.dtype)

    # ------------------------------------------------------------------ state
    @property
    def nbytes(self) -> int:
        """Bytes held by the cube storage and its masks."""
        return int(self._data.nbytes + self._valid.nbytes)

    @property
    def planned_energies(self) -> np.ndarray:
        """Planned energies, increasing (empty when no plan was given)."""
        return self._planned.copy()

    @property
    def _filled(self) -> np.ndarray:
        return np.flatnonzero(self._counts[: self._n_slots] > 0)

    @property
    def energies(self) -> np.ndarray:
        """Acquired energies, increasing (eV)."""
        return np.sort(self._slot_energy[self._filled])

    def __len__(self) -> int:
        return int(self._filled.size)

    def repeats(self) -> tuple[np.ndarray, np.ndarray]:
        """``(energies, counts)``: number of frames averaged at each acquired energy."""
        idx = self._filled
        order = np.argsort(self._slot_energy[idx])
        return self._slot_energy[idx][order], self._counts[idx][order].copy()

    # ----------------------------------------------------------------- update
    def _find_slot(self, energy: float) -> int | None:
        e = self._slot_energy[: self._n_slots]
        if e.size == 0:
            return None
        if self._planned.size:
            i = int(np.searchsorted(self._planned, energy))
            for j in (i - 1, i):
                if 0 <= j < self._planned.size and abs(self._planned[j] - energy) <= self.energy_tolerance:
                    return j
        extra = e[self._planned.size :]
        if extra.size:
            j = int(np.argmin(np.abs(extra - energy)))
            if abs(extra[j] - energy) <= self.energy_tolerance:
                return self._planned.size + j
        return None

    def _grow(self) -> None:
        cap = self._data.shape[0]
        new_cap = max(2 * cap, 1)
        was_shared = self.shared
        data = self._alloc((new_cap, *self.frame_shape))
        data[:cap] = self._data
        if was_shared and not self.shared:  # fell back while growing: the old segments go now
            _unlink_segments(self._segments)
        valid = np.zeros((new_cap, self.frame_shape[0], self._packed_w), dtype=np.uint8)
        valid[:cap] = self._valid
        slot_e = np.full(new_cap, np.nan)
        slot_e[:cap] = self._slot_energy
        counts = np.zeros(new_cap, dtype=np.int64)
        counts[:cap] = self._counts
        self._data, self._valid, self._slot_energy, self._counts = data, valid, slot_e, counts

    def update(self, energy: float, frame: np.ndarray, valid: np.ndarray | None = None) -> IncrementalCube:
        """Store the frame measured at ``energy`` (eV); returns self.

        Parameters
        ----------
        energy : float
            Photon energy (eV), finite.
        frame : ndarray, shape (H, W)
            Optical density (or any real quantity) of the frame.
        valid : ndarray of bool, shape (H, W), optional
            Pixels to trust; all pixels by default.

        Raises
        ------
        ValueError
            On a non-finite energy, a wrong frame shape, a non-numeric frame or a wrong mask shape.
        """
        energy = float(energy)
        if not np.isfinite(energy):
            raise ValueError(f"energy: must be finite, got {energy}")
        frame = np.asarray(frame)
        if frame.shape != self.frame_shape:
            raise ValueError(f"frame: shape {frame.shape} differs from cube frame shape {self.frame_shape}")
        if frame.dtype.kind not in "uif":
            raise ValueError(f"frame: expected a real numeric frame, got dtype {frame.dtype}")
        if valid is not None:
            valid = np.asarray(valid)
            if valid.shape != self.frame_shape or valid.dtype != bool:
                raise ValueError(f"valid: expected a bool mask of shape {self.frame_shape}, got {valid.dtype} {valid.shape}")
        slot = self._find_slot(energy)
        if slot is None:
            if self._n_slots == self._data.shape[0]:
                self._grow()
            slot = self._n_slots
            self._slot_energy[slot] = energy
            self._n_slots += 1
        n = int(self._counts[slot])
        if n == 0:
            self._data[slot] = frame
            self._valid[slot] = np.packbits(np.ones(self.frame_shape, bool) if valid is None else valid, axis=1)
        else:
            self.n_duplicates += 1
            old_valid = np.unpackbits(self._valid[slot], axis=1, count=self.frame_shape[1]).astype(bool)
            new_valid = np.ones(self.frame_shape, bool) if valid is None else valid
            both = old_valid & new_valid
            dst = self._data[slot]
            mean = (dst * np.float32(n) + frame.astype(self.dtype, copy=False)) / np.float32(n + 1)
            dst[both] = mean[both]
            only_new = new_valid & ~old_valid
            dst[only_new] = frame[only_new]
            self._valid[slot] = np.packbits(old_valid | new_valid, axis=1)
        self._counts[slot] = n + 1
        self.n_frames += 1
        return self

    # ---------------------------------------------------------------- queries
    def _slots_in(self, emin: float, emax: float) -> np.ndarray:
        idx = self._filled
        e = self._slot_energy[idx]
        sel = idx[(e >= emin - self.energy_tolerance) & (e <= emax + self.energy_tolerance)]
        return sel[np.argsort(self._slot_energy[sel], kind="stable")]

    def covers(self, emin: float, emax: float) -> bool:
        """Whether the energy range ``[emin, emax]`` is complete.

        With a plan: every planned energy in the range has been acquired (and the range holds at
        least one planned energy). Without a plan: some energy in the range was acquired and an
        energy ``>= emax`` was acquired (the scan passed the end of the range).
        """
        if not emin <= emax:
            raise ValueError(f"emin must be <= emax, got {emin}, {emax}")
        tol = self.energy_tolerance
        if self._planned.size:
            in_range = np.flatnonzero((self._planned >= emin - tol) & (self._planned <= emax + tol))
            return bool(in_range.size) and bool(np.all(self._counts[in_range] > 0))
        e = self._slot_energy[self._filled]
        if e.size == 0:
            return False
        has_inside = np.any((e >= emin - tol) & (e <= emax + tol))
        return bool(has_inside and np.max(e) >= emax - tol)

    def missing(self, emin: float, emax: float) -> np.ndarray:
        """Planned energies in ``[emin, emax]`` not acquired yet (empty without a plan)."""
        tol = self.energy_tolerance
        in_range = np.flatnonzero((self._planned >= emin - tol) & (self._planned <= emax + tol))
        return self._planned[in_range[self._counts[in_range] == 0]]

    def block(self, emin: float, emax: float) -> tuple[np.ndarray, np.ndarray]:
        """Acquired frames with energies in ``[emin, emax]``, increasing energy.

        Returns
        -------
        energies : ndarray, shape (n,)
        block : ndarray, shape (n, H, W)
            A view of the storage when the frames are stored consecutively in increasing energy
            (planned scans, monotonic unplanned scans); a copy otherwise. Do not write into it.
        """
        slots = self._slots_in(emin, emax)
        energies = self._slot_energy[slots].copy()
        if slots.size and np.all(np.diff(slots) == 1):
            return energies, self._data[slots[0] : slots[-1] + 1]
        return energies, self._data[slots]

    def shared_block(self, emin: float, emax: float) -> SharedBlockRef | None:
        """Reference to :meth:`block` in shared memory, or None (not shared, or not a view)."""
        if not self.shared or not self._segments:
            return None
        slots = self._slots_in(emin, emax)
        if slots.size == 0 or not np.all(np.diff(slots) == 1):
            return None
        frame_bytes = self.frame_shape[0] * self.frame_shape[1] * self.dtype.itemsize
        return SharedBlockRef(
            self._segments[-1].name,
            int(slots[0]) * frame_bytes,
            (int(slots.size), *self.frame_shape),
            self.dtype.str,
            os.getpid(),
        )

    def valid_mask(self, emin: float | None = None, emax: float | None = None) -> np.ndarray:
        """Pixels valid in every acquired frame of ``[emin, emax]`` (whole cube by default)."""
        lo = -np.inf if emin is None else emin
        hi = np.inf if emax is None else emax
        slots = self._slots_in(lo, hi)
        if slots.size == 0:
            return np.ones(self.frame_shape, bool)
        packed = np.bitwise_and.reduce(self._valid[slots], axis=0)
        return np.unpackbits(packed, axis=1, count=self.frame_shape[1]).astype(bool)

    def release(self) -> None:
        """Drop the storage (the cube becomes empty and unusable); unlinks shared segments."""
        self._data = np.zeros((0, *self.frame_shape), dtype=self.dtype)
        _unlink_segments(self._segments)
        self._valid = np.zeros((0, self.frame_shape[0], self._packed_w), dtype=np.uint8)
        self._slot_energy = np.zeros(0)
        self._counts = np.zeros(0, dtype=np.int64)
        self._n_slots = 0
        self._planned = np.zeros(0)
