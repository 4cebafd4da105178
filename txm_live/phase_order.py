"""Stable order and generic names of chemical phases (numpy only: the preview imports it too).

Phases are ordered by edge position (the half-step crossing of the mean normalized spectrum),
edges closer than :func:`edge_tolerance` counting as equal, then by white-line height; names
say which phase has the lower edge and the lower white line, with no element- or sample-specific
wording.
"""

from __future__ import annotations

import numpy as np

__all__ = ["EDGE_TOLERANCE_FRACTION", "edge_levels", "edge_positions", "edge_tolerance", "phase_names"]

#: Edge positions closer than this fraction of e0 (or two energy steps) count as equal: about the
#: core-hole width (Nd L3 3.65 eV = 0.06 %, Fe K 1.25 eV = 0.02 %, Fe L3 0.36 eV = 0.05 % of e0),
#: the scale over which a higher white line moves the half-step crossing of the same edge
#: (1.6 eV between the simulated Nd metal and oxide, whose edges coincide).
EDGE_TOLERANCE_FRACTION = 3e-4


def edge_tolerance(energies: np.ndarray, e0: float) -> float:
    """Edge-position tolerance (eV): ``max(2 x median energy step, EDGE_TOLERANCE_FRACTION x e0)``."""
    e = np.asarray(energies, dtype=np.float64)
    step = float(np.median(np.diff(e))) if e.size > 1 else 0.0
    return max(2.0 * step, EDGE_TOLERANCE_FRACTION * float(e0))


def edge_positions(energies: np.ndarray, spectra: np.ndarray) -> np.ndarray:
    """Edge position (eV) of each normalized spectrum: first crossing of 0.5 (linear interpolation).

    Parameters
    ----------
    energies : ndarray, shape (n_e,)
        Increasing energies (eV).
    spectra : ndarray, shape (n_spectra, n_e)
        Edge-step normalized spectra (0 before, ~1 after the edge).

    Returns
    -------
    ndarray, shape (n_spectra,)
        ``nan`` for a spectrum that never reaches 0.5.
    """
    spectra = np.asarray(spectra, dtype=np.float64)
    above = spectra >= 0.5
    first = np.argmax(above, axis=1)
    out = np.full(spectra.shape[0], np.nan)
    ok = above.any(axis=1) & (first > 0)
    rows = np.flatnonzero(ok)
    j = first[rows]
    y0, y1 = spectra[rows, j - 1], spectra[rows, j]
    t = np.clip((0.5 - y0) / np.where(y1 > y0, y1 - y0, 1.0), 0.0, 1.0)
    out[rows] = energies[j - 1] + t * (energies[j] - energies[j - 1])
    out[above.any(axis=1) & (first == 0)] = energies[0]
    return out


def edge_levels(pos: np.ndarray, tol: float) -> np.ndarray:
    """Rank of each edge position, positions within ``tol`` of the previous one sharing a rank.

    A white line shifts the half-step crossing by a fraction of the core-hole width, so phases
    whose edges differ by less than ``tol`` are ordered by white-line height instead.
    """
    level = np.zeros(pos.size, dtype=np.int64)
    if pos.size == 0:
        return level
    filled = np.where(np.isfinite(pos), pos, np.inf)
    order = np.argsort(filled, kind="stable")
    steps = np.diff(filled[order])
    level[order] = np.concatenate([[0], np.cumsum(~(steps <= tol))])
    return level


def phase_names(
    wl_major: np.ndarray,
    level_major: np.ndarray,
    wl_minor: np.ndarray,
    level_minor: np.ndarray,
    edges: np.ndarray | None = None,
) -> tuple[str, ...]:
    """Short generic names of phases already in their stable order (majority phases first).

    Majority phases are ``"phase A"``, ``"phase B"``...; with two of them the name says which has
    the lower edge (when their edges differ) and the lower white line, e.g.
    ``"phase A (lower edge, low white line)"``. Minority phases are ``"minority"`` or
    ``"minority 1 (white line 2.31)"``. No element- or sample-specific wording.
    """
    n_major, n_minor = len(wl_major), len(wl_minor)
    letters = [chr(ord("A") + i) if i < 26 else f"{i + 1}" for i in range(n_major)]
    if n_major == 1:
        names = ["phase A"]
    elif n_major == 2:
        edge_words = ("lower edge", "higher edge") if level_major[0] != level_major[1] else (None, None)
        wl_low = 0 if wl_major[0] <= wl_major[1] else 1
        wl_words = ["high white line", "high white line"]
        wl_words[wl_low] = "low white line"
        names = [
            f"phase {letters[i]} (" + ", ".join(w for w in (edge_words[i], wl_words[i]) if w) + ")"
            for i in range(2)
        ]
    else:
        e = np.full(n_major, np.nan) if edges is None else np.asarray(edges, dtype=np.float64)[:n_major]
        names = [
            f"phase {letters[i]} (edge {e[i]:.1f} eV, white line {wl_major[i]:.2f})" if np.isfinite(e[i])
            else f"phase {letters[i]} (white line {wl_major[i]:.2f})"
            for i in range(n_major)
        ]
    if n_minor == 1:
        names.append("minority")
    else:
        names += [f"minority {i + 1} (white line {h:.2f})" for i, h in enumerate(wl_minor)]
    return tuple(names)
