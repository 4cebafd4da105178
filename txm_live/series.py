"""Phase tracking across a series of scans (e.g. a corrosion or cycling experiment).

Each scan's analysis numbers its phases on its own (majority phases by white-line height, then
minority phases), so "phase 1" of scan 3 need not be "phase 1" of scan 1, and a phase may
appear or vanish. :class:`PhaseTracker` gives every phase a stable id: it keeps an online model
of each tracked phase's mean spectrum (river's exponentially weighted mean and variance per
energy, on a grid relative to the edge energy) and matches every new scan's phases to it by the
Hungarian algorithm on the spectral distance. A phase farther than ``max_distance`` from every
tracked phase gets a new id.

:meth:`PhaseTracker.summary` returns each phase's area (pixel count x pixel area, um^2) per
scan, and :meth:`SeriesSummary.plot` draws areas versus scan index.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from txm_live.results import EdgeResult, RunResult

__all__ = ["PhaseTracker", "SeriesSummary", "TrackedPhases"]


@dataclass(frozen=True)
class TrackedPhases:
    """The phases of one scan under their stable ids.

    Attributes
    ----------
    scan_index : int
        0 for the first scan given to the tracker.
    ids : tuple of int
        ``ids[p]`` is the stable id of phase ``p`` of the scan's :class:`EdgeResult`.
    new_ids : tuple of int
        Ids created by this scan.
    distances : ndarray, shape (n_phases,)
        Spectral distance (RMS of the normalized mean spectra, in edge-step units) to the
        matched tracked phase; ``nan`` for new phases.
    labels : ndarray of int, shape (H, W)
        The scan's label map with stable ids (``-1`` masked).
    counts : ndarray of int, shape (n_phases,)
        Pixels of each phase of the scan.
    areas_um2 : ndarray, shape (n_phases,)
        ``counts`` times the pixel area.
    """

    scan_index: int
    ids: tuple[int, ...]
    new_ids: tuple[int, ...]
    distances: np.ndarray
    labels: np.ndarray
    counts: np.ndarray
    areas_um2: np.ndarray


@dataclass(frozen=True)
class SeriesSummary:
    """Areas of every tracked phase over the series.

    Attributes
    ----------
    phase_ids : tuple of int
        Stable ids, in order of first appearance.
    names : tuple of str
        Name of each id (from the scan where it first appeared).
    scan_index : ndarray of int, shape (n_scans,)
    pixel_counts : ndarray of int, shape (n_scans, n_ids)
        0 where the phase was not found in a scan.
    areas_um2 : ndarray, shape (n_scans, n_ids)
        ``pixel_counts`` x pixel area (um^2).
    relative_energies : ndarray, shape (n_grid,)
        Grid (eV relative to e0) of :attr:`mean_spectra`.
    mean_spectra : ndarray, shape (n_ids, n_grid)
        Current model spectrum (exponentially weighted mean over the scans) of each id.
    pixel_size_nm : float
    """

    phase_ids: tuple[int, ...]
    names: tuple[str, ...]
    scan_index: np.ndarray
    pixel_counts: np.ndarray
    areas_um2: np.ndarray
    relative_energies: np.ndarray
    mean_spectra: np.ndarray
    pixel_size_nm: float

    def area_of(self, phase_id: int) -> np.ndarray:
        """Area (um^2) of ``phase_id`` in every scan."""
        if phase_id not in self.phase_ids:
            raise ValueError(f"phase_id {phase_id} is not tracked; tracked ids: {self.phase_ids}")
        return self.areas_um2[:, self.phase_ids.index(phase_id)]

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """PNG of the phase areas versus scan index (see :func:`txm_live.figures.plot_phase_areas`)."""
        from txm_live.figures import plot_phase_areas

        return plot_phase_areas(self.scan_index, self.areas_um2, self.names, path, phase_ids=self.phase_ids)


@dataclass
class _Track:
    id: int
    name: str
    mean: list  # river.stats.EWMean per grid energy
    var: list  # river.stats.EWVar per grid energy
    n_seen: int = 0

    def spectrum(self) -> np.ndarray:
        return np.array([m.get() for m in self.mean])

    def update(self, spectrum: np.ndarray) -> None:
        for m, v, x in zip(self.mean, self.var, spectrum.tolist()):
            m.update(x)
            v.update(x)
        self.n_seen += 1


@dataclass
class PhaseTracker:
    """Online matcher of phases across scans.

    Parameters
    ----------
    pixel_size_nm : float
        Pixel size for the areas (31.2 nm at the seed experiment).
    max_distance : float
        Largest RMS difference (edge-step units) between a phase's mean spectrum and a tracked
        phase for them to be the same phase. On the simulator the closest distinct phases
        (metal and mixed) are 0.08 apart and the same phase moves by < 0.01 between scans.
    fading_factor : float
        Weight of the newest scan in each tracked spectrum (river ``EWMean``/``EWVar``); lets a
        phase drift slowly (e.g. the mixed phase getting more oxidized) and stay matched.
    relative_range : (float, float)
        Energy range (eV relative to e0) compared, by default the near-edge region.
    grid_step : float
        Spacing (eV) of the comparison grid; spectra are interpolated onto it.

    Notes
    -----
    One :meth:`update` costs a few ms: the model holds ``n_ids x n_grid`` river statistics
    (about 80 per phase), whatever the image size.
    """

    pixel_size_nm: float = 31.2
    max_distance: float = 0.04
    fading_factor: float = 0.5
    relative_range: tuple[float, float] = (-20.0, 60.0)
    grid_step: float = 1.0
    _tracks: list[_Track] = field(default_factory=list, init=False, repr=False)
    _history: list[TrackedPhases] = field(default_factory=list, init=False, repr=False)
    _edge: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.pixel_size_nm > 0:
            raise ValueError(f"pixel_size_nm must be > 0, got {self.pixel_size_nm}")
        if not self.max_distance > 0:
            raise ValueError(f"max_distance must be > 0, got {self.max_distance}")
        if not 0 < self.fading_factor <= 1:
            raise ValueError(f"fading_factor must be in (0, 1], got {self.fading_factor}")
        lo, hi = self.relative_range
        if not lo < hi:
            raise ValueError(f"relative_range must satisfy relative_range[0] < relative_range[1], got {self.relative_range}")
        if not self.grid_step > 0:
            raise ValueError(f"grid_step must be > 0, got {self.grid_step}")
        self.grid = np.arange(lo, hi + 1e-9, self.grid_step)

    @property
    def n_scans(self) -> int:
        """Scans seen so far."""
        return len(self._history)

    def _resample(self, result: EdgeResult) -> np.ndarray:
        rel = np.asarray(result.energies, dtype=float) - result.e0
        if rel.min() > self.grid[0] + self.grid_step or rel.max() < self.grid[-1] - self.grid_step:
            raise ValueError(
                f"result: energies cover [{rel.min():.1f}, {rel.max():.1f}] eV around e0, the tracker compares "
                f"{self.relative_range}; pass relative_range inside the analysed window")
        return np.stack([np.interp(self.grid, rel, np.asarray(m, dtype=float)) for m in result.mean_spectra]) \
            if result.n_phases else np.zeros((0, self.grid.size))

    def _new_track(self, name: str) -> _Track:
        from river import stats

        t = _Track(id=len(self._tracks), name=name,
                   mean=[stats.EWMean(fading_factor=self.fading_factor) for _ in self.grid],
                   var=[stats.EWVar(fading_factor=self.fading_factor) for _ in self.grid])
        self._tracks.append(t)
        return t

    def update(self, result: RunResult | EdgeResult, *, edge: str | None = None,
               pixel_size_nm: float | None = None) -> TrackedPhases:
        """Match the phases of the next scan to the tracked phases and update the model.

        Parameters
        ----------
        result : RunResult or EdgeResult
            The next scan: its whole :class:`RunResult` (the tracked edge is taken from it) or
            the analysis of one edge. The same edge is followed for every scan.
        edge : str, optional
            Edge to follow in a :class:`RunResult` (``"L3"``, ``"K"``...). Default: the edge
            this tracker already follows, else the first analysed edge of the run (acquisition
            order).
        pixel_size_nm : float, optional
            Pixel size of this scan, if it differs from the tracker's. Default for a
            :class:`RunResult`: its ``pixel_size_nm`` when known.

        Returns
        -------
        TrackedPhases

        Raises
        ------
        ValueError
            ``result`` is neither; the run has no analysis of the edge followed (message names
            the edges it has); an :class:`EdgeResult` of another edge than the one followed.
        """
        from scipy.optimize import linear_sum_assignment

        if isinstance(result, RunResult):
            run = result
            key = edge or self._edge or next(iter(run.edges), None)
            if key is None or key not in run.edges:
                raise ValueError(
                    f"result: run {run.run_uid[:8]} has no analysis of edge {key!r} "
                    f"(analysed: {list(run.edges) or 'none'}; errors: {list(run.errors[:2])})")
            result = run.edges[key]
            if pixel_size_nm is None and run.pixel_size_nm is not None:
                pixel_size_nm = run.pixel_size_nm
        elif not isinstance(result, EdgeResult):
            raise ValueError(f"result must be a RunResult or an EdgeResult, got {type(result).__name__}")
        elif edge is not None and result.edge != edge:
            raise ValueError(f"edge is {edge!r} but result.edge is {result.edge!r}")
        if self._edge is not None and result.edge != self._edge:
            raise ValueError(f"result.edge is {result.edge!r} but the tracker follows {self._edge!r}")
        px = self.pixel_size_nm if pixel_size_nm is None else float(pixel_size_nm)
        if not px > 0:
            raise ValueError(f"pixel_size_nm must be > 0, got {pixel_size_nm}")
        spectra = self._resample(result)
        n = spectra.shape[0]
        ids = np.full(n, -1, dtype=np.int64)
        dist = np.full(n, np.nan)
        if self._tracks and n:
            model = np.stack([t.spectrum() for t in self._tracks])
            cost = np.sqrt(((spectra[:, None, :] - model[None]) ** 2).mean(axis=-1))
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols):
                if cost[r, c] <= self.max_distance:
                    ids[r] = self._tracks[c].id
                    dist[r] = cost[r, c]
        new_ids = []
        for p in np.flatnonzero(ids < 0):
            name = result.phase_names[p] if p < len(result.phase_names) else f"phase {p}"
            t = self._new_track(name)
            ids[p] = t.id
            new_ids.append(t.id)
        for p in range(n):
            self._tracks[ids[p]].update(spectra[p])
        self._edge = result.edge
        lut = np.concatenate([ids, [-1]])
        labels = np.where(result.labels >= 0, lut[np.clip(result.labels, 0, n)], -1) if n else \
            np.full(result.labels.shape, -1, dtype=np.int64)
        counts = np.asarray(result.counts, dtype=np.int64)
        tracked = TrackedPhases(
            scan_index=len(self._history), ids=tuple(int(i) for i in ids), new_ids=tuple(new_ids),
            distances=dist, labels=labels, counts=counts, areas_um2=counts * (px / 1000.0) ** 2,
        )
        self._history.append(tracked)
        return tracked

    def summary(self) -> SeriesSummary:
        """Areas and spectra of every tracked phase over the scans seen so far."""
        n_ids = len(self._tracks)
        counts = np.zeros((len(self._history), n_ids), dtype=np.int64)
        areas = np.zeros((len(self._history), n_ids))
        for s, h in enumerate(self._history):
            for p, i in enumerate(h.ids):
                counts[s, i] += h.counts[p]
                areas[s, i] += h.areas_um2[p]
        spectra = np.stack([t.spectrum() for t in self._tracks]) if n_ids else np.zeros((0, self.grid.size))
        return SeriesSummary(
            phase_ids=tuple(t.id for t in self._tracks), names=tuple(t.name for t in self._tracks),
            scan_index=np.arange(len(self._history)), pixel_counts=counts, areas_um2=areas,
            relative_energies=self.grid.copy(), mean_spectra=spectra, pixel_size_nm=self.pixel_size_nm,
        )
