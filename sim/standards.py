"""Measured XANES standards on an absolute scale (pure numpy; xraydb for the cross sections).

The simulated battery samples of :mod:`txm_live.sim.battery` are built from MEASURED normalized
spectra, not from a model: Fe K-edge standards of magnetite, LiFePO4 and FePO4 (columns of
``FeK_library_HXN.nor``, an Athena multicolumn file measured on 7090-7200 eV; its folder's README
says 7300 eV but the last row is 7199.7 eV) and Ni K-edge spectra of LiNiO2
and NiO (8200-9000 eV), from the public repository stetef/nano-XANES-microscopy-of-Fe (MIT licence,
copyright (c) 2022 stetef). The few columns used ship inside the package
(``txm_live/sim/data/xanes_standards.json``, 31 kB, with the licence text and the source; the
licence is also ``txm_live/sim/data/LICENSE-nano-XANES-microscopy-of-Fe.txt``), so the simulator
needs no file outside the installed package. The same JSON holds the energy list of a real Ni K
full-field TXM scan (keV).

:class:`Material` puts a normalized spectrum ``n(E)`` on an absolute scale::

    mu(E) = rho [ w_A (pre_A(E) + n(E) (post_A(E) - pre_A(E))) + sum_other w_i mu_i(E) ]

with ``rho`` the density, ``w`` mass fractions from the formula, ``A`` the absorbing element,
``pre_A`` / ``post_A`` power laws fitted to the Elam mass attenuation of ``A`` (xraydb) just below
and just above its edge, and ``mu_i`` the Elam values of the other elements (no edge nearby).
This is exactly the definition of an Athena normalization (``n = (mu - pre) / step``) read
backwards, so the edge step per um is the xraydb one.

Outside the measured range nothing is invented: below the first measured energy ``n`` goes to 0
(the pre-edge line of the normalization, i.e. the xraydb pre-edge of the absorber) over
:data:`EXTEND_PRE_EV`; above the last measured energy it relaxes to 1 (the xraydb post-edge, no
EXAFS structure) with the decay length :data:`EXTEND_POST_EV`. Spectra that are not
"flattened" would give the same result to the accuracy of the measurement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "EXTEND_POST_EV",
    "EXTEND_PRE_EV",
    "FE3O4",
    "FEPO4",
    "LIFEPO4",
    "LINIO2",
    "NIO",
    "Material",
    "NormalizedStandard",
    "fe_k_energies",
    "load_standard",
    "ni_k_energies",
    "standards_source",
]

#: Width (eV) over which a standard goes from its first measured value to 0 below its range.
EXTEND_PRE_EV: float = 10.0
#: Decay length (eV) with which a standard relaxes to 1 above its last measured energy.
EXTEND_POST_EV: float = 30.0
# Mean of the last measured points (eV) taken as the value that relaxes to 1 above the range.
_TAIL_EV: float = 5.0
# Fit ranges (eV relative to the edge) of the pre- and post-edge power laws of the absorber.
_PRE_FIT = (-400.0, -3.0)
_POST_FIT = (3.0, 800.0)
_AVOGADRO = 6.02214076e23


@lru_cache(maxsize=1)
def _raw() -> dict:
    text = resources.files("txm_live.sim").joinpath("data/xanes_standards.json").read_text()
    return json.loads(text)


def standards_source() -> dict[str, str]:
    """Provenance of the shipped standards: ``source`` URL, ``copyright`` and ``license`` text."""
    raw = _raw()
    return {"source": raw["source"], "copyright": raw["copyright"], "license": raw["license"]}


@dataclass(frozen=True, eq=False)
class NormalizedStandard:
    """A measured edge-step-normalized spectrum ``n(E)`` (0 below the edge, ~1 far above).

    Attributes
    ----------
    name : str
        Column name in the source file (e.g. ``"LiFe(II)PO4"``).
    element, edge : str
        Absorbing element and edge (``"Fe"``, ``"K"``).
    energy : ndarray of float64
        Measured energies (eV), increasing.
    mu : ndarray of float64
        Normalized absorption at ``energy``.
    """

    name: str
    element: str
    edge: str
    energy: NDArray[np.float64]
    mu: NDArray[np.float64]

    @property
    def measured_range(self) -> tuple[float, float]:
        """First and last measured energy (eV)."""
        return float(self.energy[0]), float(self.energy[-1])

    def __call__(self, energies: ArrayLike) -> NDArray[np.float64]:
        """Normalized absorption at ``energies`` (eV), extended outside the measured range.

        Notes
        -----
        Linear interpolation inside the measured range. Below it the first value fades linearly
        to 0 over :data:`EXTEND_PRE_EV` (the normalized pre-edge is 0 by definition); above it
        ``n`` relaxes from the mean of the last :data:`_TAIL_EV` eV to 1 as
        ``exp(-(E - E_last) / EXTEND_POST_EV)``: the edge step stays the xraydb one and no
        EXAFS structure is invented beyond the measurement.
        """
        e = np.asarray(energies, dtype=np.float64)
        if not np.all(np.isfinite(e)):
            raise ValueError("energies must be finite")
        lo, hi = self.measured_range
        out = np.interp(e, self.energy, self.mu)
        below = e < lo
        if np.any(below):
            out[below] = self.mu[0] * np.clip(1.0 - (lo - e[below]) / EXTEND_PRE_EV, 0.0, 1.0)
        above = e > hi
        if np.any(above):
            tail = float(self.mu[self.energy >= hi - _TAIL_EV].mean())
            out[above] = 1.0 + (tail - 1.0) * np.exp(-(e[above] - hi) / EXTEND_POST_EV)
        return out


@lru_cache(maxsize=8)
def load_standard(name: str) -> NormalizedStandard:
    """One shipped standard by name.

    Parameters
    ----------
    name : str
        ``"Magnetite"``, ``"LiFe(II)PO4"``, ``"Fe(III)PO4"`` (Fe K) or ``"LiNiO2"``, ``"NiO"`` (Ni K).

    Returns
    -------
    NormalizedStandard
    """
    raw = _raw()["standards"]
    fe, ni = raw["Fe K"], raw["Ni K"]
    if name in fe["spectra"]:
        energy = np.asarray(fe["energy"], dtype=np.float64)
        mu = np.asarray(fe["spectra"][name], dtype=np.float64)
        element, edge = fe["element"], fe["edge"]
    elif name in ni["spectra"]:
        energy = 1000.0 * np.asarray(ni["spectra"][name]["energy"], dtype=np.float64)  # keV -> eV
        mu = np.asarray(ni["spectra"][name]["mu"], dtype=np.float64)
        element, edge = ni["element"], ni["edge"]
    else:
        known = sorted([*fe["spectra"], *ni["spectra"]])
        raise ValueError(f"name must be one of {known}, got {name!r}")
    order = np.argsort(energy, kind="stable")
    energy, mu = energy[order], mu[order]
    keep = np.concatenate([[True], np.diff(energy) > 0])  # drop repeated energies
    energy.setflags(write=False)
    mu.setflags(write=False)
    return NormalizedStandard(name=name, element=element, edge=edge, energy=energy[keep], mu=mu[keep])


@lru_cache(maxsize=16)
def _mass_fractions(formula: str) -> tuple[tuple[str, float], ...]:
    import xraydb

    counts = xraydb.chemparse(formula)
    masses = {el: n * xraydb.atomic_mass(el) for el, n in counts.items()}
    total = sum(masses.values())
    return tuple((el, m / total) for el, m in masses.items())


@lru_cache(maxsize=16)
def _edge_power_laws(element: str, edge: str) -> tuple[float, float, float, float, float]:
    """``(E_edge, a_pre, p_pre, a_post, p_post)``: ``mu_Elam = a (E / E_edge)^-p`` (cm^2/g)."""
    import xraydb

    e_edge = float(xraydb.xray_edge(element, edge).energy)
    fits = []
    for lo, hi in (_PRE_FIT, _POST_FIT):
        e = np.linspace(e_edge + lo, e_edge + hi, 80)
        sigma = np.asarray(xraydb.mu_elam(element, e), dtype=np.float64)
        slope, intercept = np.polyfit(np.log(e / e_edge), np.log(sigma), 1)
        fits += [float(np.exp(intercept)), float(-slope)]
    return (e_edge, *fits)


@dataclass(frozen=True)
class Material:
    """A phase of a sample: formula, density and the measured normalized spectrum of its absorber.

    Attributes
    ----------
    name : str
        Human-readable name (also the ground-truth label name).
    formula : str
        Chemical formula (xraydb syntax), e.g. ``"LiFePO4"``.
    density_g_cm3 : float
        Density (g/cm^3).
    standard : str
        Name of the shipped standard (:func:`load_standard`).
    """

    name: str
    formula: str
    density_g_cm3: float
    standard: str

    def __post_init__(self) -> None:
        if not (np.isfinite(self.density_g_cm3) and self.density_g_cm3 > 0):
            raise ValueError(f"density_g_cm3 must be > 0, got {self.density_g_cm3!r}")
        element = load_standard(self.standard).element
        if element not in dict(_mass_fractions(self.formula)):
            raise ValueError(f"formula {self.formula!r} has no {element}, the absorber of {self.standard!r}")

    @property
    def element(self) -> str:
        """Absorbing element of the standard."""
        return load_standard(self.standard).element

    @property
    def edge(self) -> str:
        """Edge of the standard (``"K"``)."""
        return load_standard(self.standard).edge

    def absorber_atoms_per_cm3(self) -> float:
        """Number density of the absorbing element (atoms / cm^3)."""
        import xraydb

        w = dict(_mass_fractions(self.formula))[self.element]
        return self.density_g_cm3 * w / xraydb.atomic_mass(self.element) * _AVOGADRO

    def mu(self, energies: ArrayLike) -> NDArray[np.float64]:
        """Linear attenuation coefficient (1/um) at ``energies`` (eV), any shape.

        Notes
        -----
        See the module docstring for the model. The other elements' Elam values are evaluated
        directly (xraydb, ~50 us per call and element).
        """
        import xraydb

        e = np.asarray(energies, dtype=np.float64)
        if not np.all(np.isfinite(e)) or np.any(e <= 0):
            raise ValueError("energies must be finite and > 0 eV")
        flat = e.reshape(-1)
        e_edge, a_pre, p_pre, a_post, p_post = _edge_power_laws(self.element, self.edge)
        pre = a_pre * (flat / e_edge) ** (-p_pre)
        post = a_post * (flat / e_edge) ** (-p_post)
        n = load_standard(self.standard)(flat)
        total = np.zeros_like(flat)
        for element, w in _mass_fractions(self.formula):
            if element == self.element:
                total += w * (pre + n * (post - pre))
            else:
                total += w * np.asarray(xraydb.mu_elam(element, flat), dtype=np.float64)
        return (self.density_g_cm3 * total * 1e-4).reshape(e.shape)

    def edge_step_per_um(self) -> float:
        """Absolute edge step (1/um) at the tabulated edge energy: ``rho w_A (post - pre)``."""
        e_edge, a_pre, _, a_post, _ = _edge_power_laws(self.element, self.edge)
        w = dict(_mass_fractions(self.formula))[self.element]
        return float(self.density_g_cm3 * w * (a_post - a_pre) * 1e-4)


#: Olivine LiFePO4 (triphylite); X-ray density from a = 10.33, b = 6.01, c = 4.69 A, Z = 4.
LIFEPO4 = Material("LiFePO4", "LiFePO4", 3.60, "LiFe(II)PO4")
#: Heterosite FePO4 (delithiated olivine); X-ray density from a = 9.81, b = 5.79, c = 4.78 A, Z = 4.
FEPO4 = Material("FePO4", "FePO4", 3.69, "Fe(III)PO4")
#: Magnetite Fe3O4 (spinel, a = 8.396 A, Z = 8).
FE3O4 = Material("magnetite", "Fe3O4", 5.18, "Magnetite")
#: Layered LiNiO2 (Ni3+), X-ray density 4.78 g/cm^3.
LINIO2 = Material("LiNiO2", "LiNiO2", 4.78, "LiNiO2")
#: Rock-salt NiO (Ni2+), 6.67 g/cm^3.
NIO = Material("NiO", "NiO", 6.67, "NiO")


def fe_k_energies() -> NDArray[np.float64]:
    """A realistic full-field TXM energy list across the Fe K edge (eV, 100 energies).

    Notes
    -----
    Modelled on the real Ni K list (:func:`ni_k_energies`, 101 energies: 10 eV pre-edge steps,
    1 eV across the edge, 40 eV post-edge steps) and on the range of the measured Fe standards:
    6990-7080 eV in 10 eV steps (pre-edge line), 7085-7100 eV in 5 eV, 7101-7160 eV in 1 eV
    (pre-edge peak, edge and white lines of Fe2+ and Fe3+ at ~7126 and ~7133 eV),
    7162-7200 eV in 2 eV (the end of the measured standards), and 7220-7420 eV in 40 eV steps,
    where the standards are extended with the xraydb post-edge, without EXAFS (see the module
    docstring).
    """
    parts = [
        np.arange(6990.0, 7081.0, 10.0),
        np.arange(7085.0, 7101.0, 5.0),
        np.arange(7101.0, 7161.0, 1.0),
        np.arange(7162.0, 7201.0, 2.0),
        np.arange(7220.0, 7421.0, 40.0),
    ]
    return np.unique(np.concatenate(parts))


def ni_k_energies() -> NDArray[np.float64]:
    """The energy list of a real full-field TXM XANES scan across the Ni K edge, in eV (101 energies).

    Notes
    -----
    Shipped in keV (as measured: monochromator read-back, 8212-8777 eV, 10 eV steps before the
    edge, 1 eV from 8312 to 8392 eV, 40 eV after), converted to eV here.
    """
    raw = _raw()["energy_lists"]["Ni K TXM"]
    return 1000.0 * np.asarray(raw["energy"], dtype=np.float64)
