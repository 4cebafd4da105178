"""Parametric Nd L3/L2 absorption spectra of the simulated phases (pure numpy/scipy/xraydb).

The model follows ``docs/physics.md``: every phase has an edge-step-normalized shape
(arctan edge step + Voigt white line + FEFF-table EXAFS) at the Nd L3 edge and, 514 eV higher,
at the L2 edge. :func:`absolute_mu` turns the two normalized shapes into an absolute linear
attenuation coefficient (1/um) of the phase material, using the Elam tables of :mod:`xraydb`
for the smooth part and for the other elements.

Nothing is computed or read at import time; the FEFF tables
(``txm_live/sim/data/nd_feff_paths.json``) and the Elam fits are loaded lazily and cached.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import voigt_profile

__all__ = [
    "Shell",
    "PhaseSpectrum",
    "METAL",
    "OXIDE",
    "L2_OFFSET_EV",
    "JUMP_L3",
    "JUMP_L2",
    "S02",
    "load_feff_paths",
    "wavenumber",
    "chi_k",
    "normalized_mu",
    "absolute_mu",
    "nd_cross_section",
    "nd_number_density",
    "edge_step_per_um",
    "ground_truth_normalized",
]

#: Energy difference between the Nd L2 and L3 edges (eV), 6722 - 6208.
L2_OFFSET_EV: float = 514.0
#: Nd L3 edge jump ratio (absolute cross section above / below the edge). *Tunable.*
JUMP_L3: float = 2.77
#: Nd L2 edge jump ratio. *Tunable.*
JUMP_L2: float = 1.36
#: Amplitude reduction factor S0^2 of the EXAFS.
S02: float = 0.9
#: k [1/A] = sqrt(ETOK * (E - E0) [eV]).
ETOK: float = 0.2625
#: Energy range (eV) over which the Elam tables of the non-Nd elements are pre-tabulated.
_TABLE_RANGE: tuple[float, float] = (5800.0, 7300.0)


class Shell(NamedTuple):
    """One EXAFS scattering shell.

    Attributes
    ----------
    path : str
        Name of the FEFF path in ``nd_feff_paths.json`` (``"Nd-O"``, ``"Nd-Fe"`` or ``"Nd-Nd"``).
    n : float
        Coordination number.
    r : float
        Half path length (A).
    sigma2 : float
        Debye-Waller factor (A^2).
    """

    path: str
    n: float
    r: float
    sigma2: float


@dataclass(frozen=True)
class PhaseSpectrum:
    """Parameters of the Nd L-edge spectrum of one chemical phase.

    Attributes
    ----------
    name : str
        Human-readable name.
    formula : str
        Chemical formula of the phase material (parsed by :func:`xraydb.chemparse`).
    density_g_cm3 : float
        Mass density (g/cm^3).
    edge_energy : float
        L3 edge position ``Ee`` of the arctan step (eV).
    white_line_energy : float
        L3 white-line position ``Ewl`` (eV).
    white_line_amplitude : float
        Peak height ``A`` of the L3 white line in edge-step units.
    white_line_sigma : float
        Gaussian width ``sigma_G`` of the Voigt white line (eV).
    shells : tuple of Shell
        EXAFS shells.
    l2_amplitude_ratio : float
        ``A_L2 / A_L3``.
    core_hole_l3, core_hole_l2 : float
        Core-hole widths (FWHM, eV) = arctan width ``G`` and Lorentzian FWHM of the white line.
    double_excitation_step : float
        Height of the multi-electron (2p4d) step in edge-step units.
    double_excitation_offset : float
        Position of the double-excitation step above ``Ee`` (eV).
    double_excitation_width : float
        Arctan width of the double-excitation step (eV).
    """

    name: str
    formula: str
    density_g_cm3: float
    edge_energy: float
    white_line_energy: float
    white_line_amplitude: float
    white_line_sigma: float
    shells: tuple[Shell, ...]
    l2_amplitude_ratio: float = 0.8
    core_hole_l3: float = 3.65
    core_hole_l2: float = 3.97
    double_excitation_step: float = 0.01
    double_excitation_offset: float = 125.0
    double_excitation_width: float = 8.0

    def __post_init__(self) -> None:
        if self.density_g_cm3 <= 0:
            raise ValueError(f"density_g_cm3 must be > 0, got {self.density_g_cm3}")
        if self.white_line_sigma <= 0:
            raise ValueError(f"white_line_sigma must be > 0, got {self.white_line_sigma}")
        if self.core_hole_l3 <= 0 or self.core_hole_l2 <= 0:
            raise ValueError("core_hole_l3 and core_hole_l2 must be > 0")
        if self.white_line_amplitude < 0:
            raise ValueError(
                f"white_line_amplitude must be >= 0, got {self.white_line_amplitude}"
            )
        for shell in self.shells:
            if shell.path not in ("Nd-O", "Nd-Fe", "Nd-Nd"):
                raise ValueError(f"shells: unknown FEFF path {shell.path!r}")


#: Metallic Nd2Fe14B (paper phase 2): white line ~2.50 / ~9 eV FWHM, Nd-Fe first shell.
METAL = PhaseSpectrum(
    name="Nd2Fe14B (metal)",
    formula="Nd2Fe14B",
    density_g_cm3=7.60,
    edge_energy=6208.5,
    white_line_energy=6211.0,
    white_line_amplitude=1.70,
    white_line_sigma=3.0,
    shells=(Shell("Nd-Fe", 16.0, 3.17, 0.012), Shell("Nd-Nd", 2.5, 3.70, 0.010)),
)

#: Nd(OH)3 corrosion product (paper phase 3): white line ~3.55 / ~6 eV FWHM, Nd-O first shell.
#: Density 4.86 g/cm^3 is the X-ray density of hexagonal Nd(OH)3 (a = 6.42 A, c = 3.74 A, Z = 2).
OXIDE = PhaseSpectrum(
    name="Nd(OH)3 (oxide)",
    formula="Nd(OH)3",
    density_g_cm3=4.86,
    edge_energy=6209.5,
    white_line_energy=6212.0,
    white_line_amplitude=2.75,
    white_line_sigma=1.7,
    shells=(
        Shell("Nd-O", 9.0, 2.50, 0.010),
        Shell("Nd-Nd", 2.0, 3.74, 0.008),
        Shell("Nd-Nd", 6.0, 4.15, 0.012),
    ),
)


@lru_cache(maxsize=1)
def load_feff_paths() -> dict[str, dict[str, NDArray[np.float64]]]:
    """FEFF6L scattering tables of the Nd-O, Nd-Fe and Nd-Nd paths (read once, cached).

    Returns
    -------
    dict
        ``{path: {"k", "mag", "phase", "lam", "redfac": ndarray}}`` on k = 1.5 - 12 1/A.
    """
    text = resources.files("txm_live.sim").joinpath("data/nd_feff_paths.json").read_text()
    raw = json.loads(text)
    k = np.asarray(raw["k"], dtype=np.float64)
    tables: dict[str, dict[str, NDArray[np.float64]]] = {}
    for path, columns in raw.items():
        if path == "k":
            continue
        tables[path] = {"k": k}
        for key in ("mag", "phase", "lam", "redfac"):
            tables[path][key] = np.asarray(columns[key], dtype=np.float64)
    return tables


def wavenumber(energies: ArrayLike, e0: float) -> NDArray[np.float64]:
    """Photoelectron wavenumber ``k = sqrt(0.2625 (E - E0))`` (1/A), 0 below ``e0``."""
    de = np.asarray(energies, dtype=np.float64) - float(e0)
    return np.sqrt(ETOK * np.clip(de, 0.0, None))


def chi_k(k: ArrayLike, shells: tuple[Shell, ...], *, s02: float = S02) -> NDArray[np.float64]:
    """EXAFS ``chi(k)`` of a set of shells from the FEFF tables.

    Parameters
    ----------
    k : array_like
        Wavenumbers (1/A), any shape.
    shells : tuple of Shell
        Scattering shells.
    s02 : float, optional
        Amplitude reduction factor.

    Returns
    -------
    ndarray of float64, same shape as ``k``

    Notes
    -----
    ``chi(k) = sum N S0^2 |f(k)| redfac(k) / (k R^2) exp(-2 s2 k^2) exp(-2R/lambda(k))
    sin(2kR + Phi(k))``; the tables are interpolated linearly and held constant outside
    k = 1.5 - 12 1/A (the turn-on factor of :func:`normalized_mu` removes k < 2.5).
    """
    k = np.asarray(k, dtype=np.float64)
    tables = load_feff_paths()
    safe_k = np.maximum(k, 1e-3)
    chi = np.zeros_like(k)
    for shell in shells:
        table = tables[shell.path]
        mag = np.interp(safe_k, table["k"], table["mag"])
        phase = np.interp(safe_k, table["k"], table["phase"])
        lam = np.interp(safe_k, table["k"], table["lam"])
        red = np.interp(safe_k, table["k"], table["redfac"])
        amp = shell.n * s02 * mag * red / (safe_k * shell.r**2)
        damp = np.exp(-2.0 * shell.sigma2 * safe_k**2 - 2.0 * shell.r / lam)
        chi += amp * damp * np.sin(2.0 * safe_k * shell.r + phase)
    return chi


def _edge_shape(
    energies: NDArray[np.float64],
    phase: PhaseSpectrum,
    *,
    shift: float,
    amplitude: float,
    width: float,
) -> NDArray[np.float64]:
    """Normalized shape of one edge at ``phase.edge_energy + shift``."""
    e_edge = phase.edge_energy + shift
    step = 0.5 + np.arctan(2.0 * (energies - e_edge) / width) / np.pi
    gamma = 0.5 * width
    peak = voigt_profile(0.0, phase.white_line_sigma, gamma)
    wl = amplitude * voigt_profile(
        energies - (phase.white_line_energy + shift), phase.white_line_sigma, gamma
    ) / peak
    k = wavenumber(energies, e_edge)
    turn_on = np.clip((k - 1.0) / 1.5, 0.0, 1.0) ** 2
    exafs = step * turn_on * chi_k(k, phase.shells)
    e_de = e_edge + phase.double_excitation_offset
    double = phase.double_excitation_step * (
        0.5 + np.arctan(2.0 * (energies - e_de) / phase.double_excitation_width) / np.pi
    )
    return step + wl + exafs + double


def normalized_mu(
    energies: ArrayLike,
    phase: PhaseSpectrum,
    *,
    edge: Literal["L3", "L2"] = "L3",
) -> NDArray[np.float64]:
    """Edge-step-normalized absorption shape ``s(E)`` of one phase at one Nd edge.

    Parameters
    ----------
    energies : array_like
        Photon energies (eV), any shape.
    phase : PhaseSpectrum
        Phase parameters (e.g. :data:`METAL`, :data:`OXIDE`).
    edge : {"L3", "L2"}, optional
        Which edge. The L2 shape is the L3 shape moved by +514 eV with the white line scaled by
        ``phase.l2_amplitude_ratio`` and the L2 core-hole width.

    Returns
    -------
    ndarray of float64, same shape as ``energies``
        0 far below the edge, ~1 far above (plus the EXAFS and the ~1 % double-excitation step).

    Notes
    -----
    ``s(E) = step(E) + WL(E) + step(E) turn_on(k) chi(k) + s_de step_de(E)`` with
    ``step = 1/2 + arctan(2 (E - Ee)/G)/pi``, ``WL = A V(E - Ewl; sigma_G, G/2) / V(0)``
    (Voigt), ``turn_on = clip((k - 1)/1.5, 0, 1)^2`` and ``k`` from ``Ee`` of this edge.
    """
    if edge not in ("L3", "L2"):
        raise ValueError(f"edge must be 'L3' or 'L2', got {edge!r}")
    if not isinstance(phase, PhaseSpectrum):
        raise ValueError(f"phase must be a PhaseSpectrum, got {type(phase).__name__}")
    e = np.asarray(energies, dtype=np.float64)
    if not np.all(np.isfinite(e)):
        raise ValueError("energies must be finite")
    if edge == "L3":
        return _edge_shape(
            e, phase, shift=0.0, amplitude=phase.white_line_amplitude, width=phase.core_hole_l3
        )
    return _edge_shape(
        e,
        phase,
        shift=L2_OFFSET_EV,
        amplitude=phase.l2_amplitude_ratio * phase.white_line_amplitude,
        width=phase.core_hole_l2,
    )


@lru_cache(maxsize=1)
def _nd_below_edge_fit() -> tuple[float, float]:
    """Power-law fit ``sigma = a (E/6000)^-p`` (cm^2/g) to Elam Nd values on 5600-6190 eV."""
    import xraydb

    e = np.linspace(5600.0, 6190.0, 60)
    sigma = np.asarray(xraydb.mu_elam("Nd", e), dtype=np.float64)
    slope, intercept = np.polyfit(np.log(e / 6000.0), np.log(sigma), 1)
    return float(np.exp(intercept)), float(-slope)


def nd_cross_section(
    energies: ArrayLike,
    l3_shape: ArrayLike,
    l2_shape: ArrayLike,
    *,
    jump_l3: float = JUMP_L3,
    jump_l2: float = JUMP_L2,
) -> NDArray[np.float64]:
    """Absolute Nd mass attenuation coefficient (cm^2/g) from the normalized edge shapes.

    Notes
    -----
    ``sigma_Nd(E) = sigma_below(E) [1 + (J3 - 1) s_L3(E) + J3 (J2 - 1) s_L2(E)]`` where
    ``sigma_below = a (E/6000)^-p`` is a power law fitted to the Elam Nd table below 6200 eV.
    """
    a, p = _nd_below_edge_fit()
    e = np.asarray(energies, dtype=np.float64)
    below = a * (e / 6000.0) ** (-p)
    return below * (
        1.0 + (jump_l3 - 1.0) * np.asarray(l3_shape) + jump_l3 * (jump_l2 - 1.0) * np.asarray(l2_shape)
    )


@lru_cache(maxsize=16)
def _composition(formula: str) -> tuple[tuple[str, float], ...]:
    """Mass fractions ``((element, w), ...)`` of a formula."""
    import xraydb

    counts = xraydb.chemparse(formula)
    masses = {el: n * xraydb.atomic_mass(el) for el, n in counts.items()}
    total = sum(masses.values())
    return tuple((el, m / total) for el, m in masses.items())


@lru_cache(maxsize=16)
def _other_elements_table(formula: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mass attenuation (cm^2/g of the material) of all non-Nd elements on a 1 eV grid."""
    grid = np.arange(_TABLE_RANGE[0], _TABLE_RANGE[1] + 0.5, 1.0)
    return grid, _other_elements_direct(formula, grid)


def _other_elements_direct(formula: str, e: NDArray[np.float64]) -> NDArray[np.float64]:
    """Sum of ``w_i mu_Elam,i(E)`` (cm^2/g) over the non-Nd elements of ``formula``."""
    import xraydb

    total = np.zeros_like(e)
    for element, w in _composition(formula):
        if element != "Nd":
            total += w * np.asarray(xraydb.mu_elam(element, e), dtype=np.float64)
    return total


def _other_elements(formula: str, e: NDArray[np.float64]) -> NDArray[np.float64]:
    """Like :func:`_other_elements_direct`, from the cached table inside 5800-7300 eV."""
    if e.size and e.min() >= _TABLE_RANGE[0] and e.max() <= _TABLE_RANGE[1]:
        grid, values = _other_elements_table(formula)
        # Elam is a smooth log-log spline here (no edge of Fe, B, O, H in this range), so
        # log-log interpolation on a 1 eV grid reproduces it to < 1e-6 relative.
        return np.exp(np.interp(np.log(e), np.log(grid), np.log(np.maximum(values, 1e-30))))
    return _other_elements_direct(formula, e)


def nd_number_density(phase: PhaseSpectrum) -> float:
    """Nd atoms per cm^3 of the phase material."""
    import xraydb

    w_nd = dict(_composition(phase.formula)).get("Nd", 0.0)
    return phase.density_g_cm3 * w_nd / xraydb.atomic_mass("Nd") * 6.02214076e23


def absolute_mu(
    energies: ArrayLike,
    phase: PhaseSpectrum,
    *,
    jump_l3: float = JUMP_L3,
    jump_l2: float = JUMP_L2,
) -> NDArray[np.float64]:
    """Linear attenuation coefficient (1/um) of the phase material.

    Parameters
    ----------
    energies : array_like
        Photon energies (eV), any shape; the model is meant for 6000 - 7023 eV (Fe K at
        7112 eV and Nd L1 at 7126 eV are not modelled beyond what the Elam table of Fe holds).
    phase : PhaseSpectrum
        Phase parameters, including formula and density.
    jump_l3, jump_l2 : float, optional
        Nd edge jump ratios.

    Returns
    -------
    ndarray of float64, same shape as ``energies``
        mu in 1/um (so that optical density = path length in um x mu).

    Notes
    -----
    ``mu = rho [w_Nd sigma_Nd(E) + sum_other w_i mu_Elam,i(E)]`` with ``sigma_Nd`` from
    :func:`nd_cross_section` (the normalized L3 and L2 shapes of the phase on a power-law
    Elam background). The edge step per um at L3 is ``rho w_Nd sigma_below(E3) (J3 - 1)``:
    0.063 /um for Nd2Fe14B (7.60 g/cm^3) and 0.112 /um for Nd(OH)3 (4.86 g/cm^3).
    The other elements' Elam values are tabulated once per formula on 5800-7300 eV, so a
    call with a single energy costs ~0.1 ms after the first one.
    """
    if jump_l3 <= 1.0 or jump_l2 <= 1.0:
        raise ValueError("jump_l3 and jump_l2 must be > 1")
    e = np.asarray(energies, dtype=np.float64)
    if not np.all(np.isfinite(e)) or np.any(e <= 0):
        raise ValueError("energies must be finite and > 0")
    s3 = normalized_mu(e, phase, edge="L3")
    s2 = normalized_mu(e, phase, edge="L2")
    sigma_nd = nd_cross_section(e, s3, s2, jump_l3=jump_l3, jump_l2=jump_l2)
    w_nd = dict(_composition(phase.formula)).get("Nd", 0.0)
    flat = e.reshape(-1)
    other = _other_elements(phase.formula, flat).reshape(e.shape)
    mu_cm = phase.density_g_cm3 * (w_nd * sigma_nd + other)
    return mu_cm * 1e-4


def edge_step_per_um(phase: PhaseSpectrum, *, edge: Literal["L3", "L2"] = "L3") -> float:
    """Absolute edge step (1/um) of the phase material at the Nd L3 or L2 edge.

    Notes
    -----
    L3: ``rho w_Nd sigma_below(E3) (J3 - 1)``; L2: ``rho w_Nd sigma_below(E2) J3 (J2 - 1)``,
    with the edge energies of ``phase``.
    """
    if edge not in ("L3", "L2"):
        raise ValueError(f"edge must be 'L3' or 'L2', got {edge!r}")
    a, p = _nd_below_edge_fit()
    w_nd = dict(_composition(phase.formula)).get("Nd", 0.0)
    if edge == "L3":
        e = phase.edge_energy
        factor = JUMP_L3 - 1.0
    else:
        e = phase.edge_energy + L2_OFFSET_EV
        factor = JUMP_L3 * (JUMP_L2 - 1.0)
    return float(phase.density_g_cm3 * w_nd * a * (e / 6000.0) ** (-p) * factor * 1e-4)


def ground_truth_normalized(
    energies: ArrayLike,
    oxide_fraction: ArrayLike,
    *,
    edge: Literal["L3", "L2"] = "L3",
    metal: PhaseSpectrum = METAL,
    oxide: PhaseSpectrum = OXIDE,
) -> NDArray[np.float64]:
    """Normalized spectra of metal/oxide mixtures (linear combination of the two shapes).

    Parameters
    ----------
    energies : array_like, shape (n_energies,)
    oxide_fraction : array_like, shape (n_mixtures,)
        Fraction of the Nd atoms that sit in the oxide (0 = metal, 1 = oxide).
    edge : {"L3", "L2"}, optional
    metal, oxide : PhaseSpectrum, optional

    Returns
    -------
    ndarray of float64, shape (n_mixtures, n_energies)

    Notes
    -----
    Each phase contributes to the edge-step-normalized spectrum in proportion to its Nd atoms,
    so a mixture with Nd oxide fraction ``f`` is ``(1 - f) s_metal + f s_oxide``.
    """
    f = np.atleast_1d(np.asarray(oxide_fraction, dtype=np.float64))
    if f.ndim != 1 or np.any((f < 0) | (f > 1)) or not np.all(np.isfinite(f)):
        raise ValueError("oxide_fraction must be a 1-D array of values in [0, 1]")
    e = np.asarray(energies, dtype=np.float64)
    if e.ndim != 1:
        raise ValueError("energies must be 1-D")
    s_m = normalized_mu(e, metal, edge=edge)
    s_o = normalized_mu(e, oxide, edge=edge)
    return (1.0 - f)[:, None] * s_m[None, :] + f[:, None] * s_o[None, :]
