"""Result types shared by the analysis, the live callbacks, the writers and the figures.

All results are frozen dataclasses holding numpy arrays; nothing here computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["EdgeResult", "ExafsResult", "RunResult"]


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
        One human-readable name per phase (e.g. ``"majority (low white line)"``, ``"minority"``).
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
        Phase index in the L3 :class:`EdgeResult`.
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
class RunResult:
    """Everything txm-live derived from one Bluesky run.

    Attributes
    ----------
    run_uid : str
        uid of the raw run's start document.
    l3, l2 : EdgeResult or None
        Phase analyses of the L3 and L2 edges; ``None`` when the edge was not reached or failed
        (see :attr:`errors`).
    l2_l3_agreement : float or None
        Fraction of pixels unmasked at both edges whose L2 phase matches their L3 phase after the
        phases were matched by spectrum.
    exafs : tuple of ExafsResult
        EXAFS of each L3 phase mean spectrum.
    errors : tuple of str
        Named errors met while processing the run (``"FrameError: ..."``); processing went on.
    n_frames : int
        Number of sample frames ingested.
    l3_preview : EdgeResult or None
        Fast streaming-clustering preview of the L3 phases, shown before the exact analysis.
    pixel_size_nm : float or None
        Pixel size (nm) of the phase maps (first sample frame), from the start document's
        ``txm_live.pixel_size_nm``; used for scale bars and phase areas.
    """

    run_uid: str
    l3: EdgeResult | None
    l2: EdgeResult | None
    l2_l3_agreement: float | None
    exafs: tuple[ExafsResult, ...] = ()
    errors: tuple[str, ...] = ()
    n_frames: int = 0
    l3_preview: EdgeResult | None = None
    pixel_size_nm: float | None = None

    @property
    def ok(self) -> bool:
        """True when both edges were analysed without error."""
        return self.l3 is not None and self.l2 is not None and not self.errors
