"""Result types shared by the analysis, the live callbacks, the writers and the figures.

All results are frozen dataclasses holding numpy arrays; nothing here computes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["EdgePairComparison", "EdgeResult", "ExafsResult", "RunResult"]


@dataclass(frozen=True)
class EdgeResult:
    """Phase analysis of one absorption edge.

    Attributes
    ----------
    edge : str
        Edge name, e.g. ``"L3"``.
    e0 : float
        Edge energy used for normalization (eV).
    energies : ndarray, shape (n_energies,)
        Energies of the analysed window (eV), increasing.
    labels : ndarray of int, shape (H, W)
        Phase index per pixel in the detector frame of the first sample image; ``-1`` where the
        pixel was masked (background, low SNR, invalid). Phases are numbered ``0..n_phases-1`` in
        the stable order of :attr:`phase_names`.
    phase_names : tuple of str
        One human-readable name per phase (e.g. ``"phase A (low white line)"``, ``"minority"``).
    mean_spectra : ndarray, shape (n_phases, n_energies)
        Edge-step normalized mean spectrum of each phase.
    spread : ndarray, shape (n_phases, n_energies)
        Standard deviation of the normalized spectra of each phase.
    counts : ndarray of int, shape (n_phases,)
        Number of pixels in each phase.
    snr : ndarray of float32, shape (H, W)
        Edge-step signal-to-noise ratio of each pixel.
    mask : ndarray of bool, shape (H, W)
        Pixels that entered the clustering.
    eps, min_samples : float, int
        DBSCAN parameters used (chosen automatically unless given).
    n_components : int
        Dimension of the reduced feature space that was clustered.
    outlier_phases : tuple of int
        Indices of the minority ("outlier") phases: good-SNR pixels DBSCAN left as noise.
    timings : dict of str to float
        Wall-clock seconds per analysis stage, for progress reports and benchmarks.
    element : str
        Element symbol of the edge (``"Nd"``, ``"Fe"``...); empty when unknown.
    notes : tuple of str
        Plain-language notes on choices the analysis made for this edge (normalization model
        chosen for a short window, features skipped...). Not errors.
    """

    edge: str
    e0: float
    energies: np.ndarray
    labels: np.ndarray
    phase_names: tuple[str, ...]
    mean_spectra: np.ndarray
    spread: np.ndarray
    counts: np.ndarray
    snr: np.ndarray
    mask: np.ndarray
    eps: float
    min_samples: int
    n_components: int
    outlier_phases: tuple[int, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    element: str = ""
    notes: tuple[str, ...] = ()

    @property
    def n_phases(self) -> int:
        """Number of phases found."""
        return int(self.mean_spectra.shape[0])


@dataclass(frozen=True)
class ExafsResult:
    """EXAFS of one phase mean spectrum.

    Attributes
    ----------
    phase : int
        Phase index in the :class:`EdgeResult` of its edge.
    k : ndarray
        Photo-electron wavenumber grid (1/Angstrom).
    chi : ndarray
        chi(k), unweighted.
    kweight : int
        k-weight used for the Fourier transform.
    r : ndarray
        Radial distance grid of the transform (Angstrom, not phase-corrected).
    chir_mag : ndarray
        |chi(R)| of the k-weighted, windowed chi(k).
    first_shell_r : float
        Position of the first-shell peak in |chi(R)| (Angstrom, apparent distance).
    k_window : (float, float)
        ``(kmin, kmax)`` of the Fourier-transform window (1/Angstrom); ``nan`` when unknown
        (results read from files written before it was recorded).
    window_dk : float
        Width of the window's tapers (1/Angstrom); ``nan`` when unknown.
    """

    phase: int
    k: np.ndarray
    chi: np.ndarray
    kweight: int
    r: np.ndarray
    chir_mag: np.ndarray
    first_shell_r: float
    k_window: tuple[float, float] = (float("nan"), float("nan"))
    window_dk: float = float("nan")


@dataclass(frozen=True)
class EdgePairComparison:
    """Cross-check of the phase maps of two edges of the same element in one run.

    Attributes
    ----------
    reference, other : str
        Edge names (keys of :attr:`RunResult.edges`); ``reference`` is the one acquired first
        (lower energy), e.g. ``"L3"`` and ``"L2"``.
    agreement : float
        Fraction of the pixels unmasked at both edges whose ``other`` phase, after matching,
        equals their ``reference`` phase (``nan`` when no pixel is unmasked at both).
    mapping : tuple of int
        ``mapping[j]`` is the ``reference`` phase matched to ``other`` phase ``j`` (``-1``:
        unmatched).
    detail : object or None
        The full object returned by the comparison function (by default a
        :class:`txm_live.compare.EdgeComparison` with the contingency table and the difference
        histograms); not written to files.
    """

    reference: str
    other: str
    agreement: float
    mapping: tuple[int, ...] = ()
    detail: Any = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        """Label such as ``"L3/L2"``."""
        return f"{self.reference}/{self.other}"


def _edge_map(value: Mapping[str, EdgeResult] | None, what: str) -> dict[str, EdgeResult]:
    out: dict[str, EdgeResult] = {}
    for key, item in dict(value or {}).items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{what}: keys must be non-empty edge names, got {key!r}")
        if not isinstance(item, EdgeResult):
            raise ValueError(f"{what}[{key!r}] must be an EdgeResult, got {type(item).__name__}")
        out[key] = item
    return out


@dataclass(frozen=True)
class RunResult:
    """Everything txm-live derived from one Bluesky run, keyed by edge.

    Attributes
    ----------
    run_uid : str
        uid of the raw run's start document.
    element : str
        Absorbing element analysed (``"Nd"``, ``"Fe"``...); empty when unknown (no edge could be
        chosen or detected).
    edges : mapping of str to EdgeResult
        Exact phase analysis of each analysed edge, keyed by edge name (``"L3"``, ``"K"``...), in
        acquisition order (increasing energy). An edge that was requested but not analysed
        (window never reached, analysis failed) is absent and named in :attr:`errors`.
    previews : mapping of str to EdgeResult
        Fast streaming-clustering previews, keyed by edge name, shown before the exact analysis.
    comparisons : tuple of EdgePairComparison
        One cross-check per pair of analysed edges of the same element (L3/L2 for the Nd magnet;
        none for a K-only scan), in acquisition order of the pairs.
    exafs : mapping of str to tuple of ExafsResult
        EXAFS of each phase mean spectrum, per edge, only for edges whose window reaches far
        enough above the edge (otherwise a note says why).
    errors : tuple of str
        Named errors met while processing the run (``"FrameError: ..."``); processing went on.
    notes : tuple of str
        Plain-language notes that are not failures: which element and edges were used and where
        they came from (option, start document, detection), EXAFS not available, preview
        failures (labelled ``"... preview: ..."``).
    n_frames : int
        Number of sample frames ingested.
    pixel_size_nm : float or None
        Pixel size (nm) of the phase maps (first sample frame), from the start document's
        ``txm_live.pixel_size_nm``; used for scale bars and phase areas.
    requested_edges : tuple of str
        Edges the run was asked to analyse (options, start document) or that were detected, in
        acquisition order; :attr:`ok` requires each of them in :attr:`edges`. Empty: the
        analysed edges are taken as the requested ones.
    incomplete : bool
        The run was interrupted (Ctrl-C, ``RE.abort()``, no stop document) or an edge window was
        not complete: the results are for what was measured.

    Notes
    -----
    The edge mappings are plain ``dict`` copies (picklable, ordered); do not mutate them. The
    properties :attr:`l3`, :attr:`l2`, :attr:`l2_l3_agreement` and :attr:`l3_preview` are
    shortcuts kept for scripts written for the Nd L3/L2 magnet.
    """

    run_uid: str
    element: str = ""
    edges: Mapping[str, EdgeResult] = field(default_factory=dict)
    previews: Mapping[str, EdgeResult] = field(default_factory=dict)
    comparisons: tuple[EdgePairComparison, ...] = ()
    exafs: Mapping[str, tuple[ExafsResult, ...]] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    n_frames: int = 0
    pixel_size_nm: float | None = None
    requested_edges: tuple[str, ...] = ()
    incomplete: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "edges", _edge_map(self.edges, "edges"))
        object.__setattr__(self, "previews", _edge_map(self.previews, "previews"))
        exafs: dict[str, tuple[ExafsResult, ...]] = {}
        for key, items in dict(self.exafs or {}).items():
            items = tuple(items)
            if not all(isinstance(x, ExafsResult) for x in items):
                raise ValueError(f"exafs[{key!r}] must be a sequence of ExafsResult")
            exafs[str(key)] = items
        object.__setattr__(self, "exafs", exafs)
        comps = tuple(self.comparisons)
        if not all(isinstance(c, EdgePairComparison) for c in comps):
            raise ValueError("comparisons must be EdgePairComparison instances")
        object.__setattr__(self, "comparisons", comps)
        object.__setattr__(self, "errors", tuple(str(e) for e in self.errors))
        object.__setattr__(self, "notes", tuple(str(n) for n in self.notes))
        object.__setattr__(self, "requested_edges", tuple(str(e) for e in self.requested_edges))

    @property
    def ok(self) -> bool:
        """True when every requested edge was analysed and no error was met (notes do not count)."""
        wanted = self.requested_edges or tuple(self.edges)
        return bool(wanted) and all(e in self.edges for e in wanted) and not self.errors

    def comparison(self, reference: str, other: str) -> EdgePairComparison | None:
        """The comparison of edges ``reference`` and ``other`` (in either order), or ``None``."""
        for c in self.comparisons:
            if {c.reference, c.other} == {reference, other}:
                return c
        return None

    # ------------------------------------------------ shortcuts for the Nd L3/L2 scripts
    @property
    def l3(self) -> EdgeResult | None:
        """``edges.get("L3")``."""
        return self.edges.get("L3")

    @property
    def l2(self) -> EdgeResult | None:
        """``edges.get("L2")``."""
        return self.edges.get("L2")

    @property
    def l3_preview(self) -> EdgeResult | None:
        """``previews.get("L3")``."""
        return self.previews.get("L3")

    @property
    def l2_l3_agreement(self) -> float | None:
        """Agreement of the L3/L2 comparison, ``None`` without one."""
        c = self.comparison("L3", "L2")
        return None if c is None else float(c.agreement)
