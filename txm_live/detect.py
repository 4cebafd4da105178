"""Which element and edges a scan covers: tabulated edges in an energy range, and detection from data.

:func:`edges_in_range` lists the edges of an element inside a scanned range (the default when a
run names the element but not the edges). :func:`detect_edges` finds the largest absorption
jumps of the mean spectrum of a scan and matches them to tabulated edges (xraydb, Elam tables);
an ambiguous match is an :class:`~txm_live.errors.EdgeDetectionError` listing the candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from txm_live.edges import MIN_EDGE_ENERGY
from txm_live.errors import EdgeDetectionError

__all__ = ["DetectedEdge", "EDGE_KINDS", "detect_edges", "edges_in_range"]

#: Edges txm-live analyses, by class: 0 = the edge a scan targets (K, L3, M5: the largest jump of
#: the shell), 1 = the second edge of a spin-orbit pair (L2, M4), 2 = L1 (weak, ~15 % jump).
EDGE_KINDS: dict[str, int] = {"K": 0, "L3": 0, "M5": 0, "L2": 1, "M4": 1, "L1": 2}
#: A jump at E matches a tabulated edge e0 when ``E - tol < e0 < E + tol / 2`` with
#: ``tol = max(3 eV, 0.25 % of E)``: the inflection of a spectrum lies mostly above the tabulated
#: edge by the chemical shift (up to ~+15 eV at transition-metal K edges of oxides), sometimes
#: below it (EuO, Eu2+: 6.5 eV below the tabulated Eu L3).
_MATCH_FRACTION = 2.5e-3
_MATCH_MIN_EV = 3.0
#: Jumps smaller than this fraction of the largest one are not reported.
MIN_RELATIVE_JUMP = 0.15


@dataclass(frozen=True)
class DetectedEdge:
    """An absorption edge found in a scan.

    Attributes
    ----------
    element : str
        Element symbol.
    edge : str
        Edge name (``"K"``, ``"L3"``...).
    e0 : float
        Tabulated edge energy (eV).
    jump : float
        Measured absorption jump of the mean spectrum (optical density).
    """

    element: str
    edge: str
    e0: float
    jump: float


@lru_cache(maxsize=None)
def _element_edges(element: str) -> tuple[tuple[str, float], ...]:
    import xraydb  # lazy: a data package

    try:
        edges = xraydb.xray_edges(element)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"element: unknown element {element!r}") from exc
    return tuple(
        sorted(((str(n), float(e.energy)) for n, e in edges.items() if n in EDGE_KINDS and e.energy >= MIN_EDGE_ENERGY),
               key=lambda t: t[1])
    )


@lru_cache(maxsize=1)
def _all_edges() -> tuple[tuple[str, str, float], ...]:
    import xraydb  # lazy

    rows = []
    for z in range(3, 99):
        symbol = xraydb.atomic_symbol(z)
        rows.extend((symbol, name, e0) for name, e0 in _element_edges(symbol))
    return tuple(sorted(rows, key=lambda r: r[2]))


def edges_in_range(element: str, emin: float, emax: float) -> tuple[str, ...]:
    """Tabulated edges of ``element`` inside ``[emin, emax]`` (eV), in increasing energy.

    Only the edges txm-live analyses (:data:`EDGE_KINDS`) above 250 eV are listed. Increasing
    energy is the acquisition order of a monochromator scan (L3 before L2 before L1).

    Raises
    ------
    ValueError
        Unknown element, or ``emin``/``emax`` not finite with ``emin < emax``.
    """
    emin, emax = float(emin), float(emax)
    if not (np.isfinite(emin) and np.isfinite(emax) and emin < emax):
        raise ValueError(f"emin, emax must be finite with emin < emax, got {emin}, {emax}")
    return tuple(name for name, e0 in _element_edges(element) if emin <= e0 <= emax)


def _find_jumps(energies: np.ndarray, y: np.ndarray) -> list[tuple[float, float]]:
    """(position, size) of the significant upward jumps of ``y``, largest first.

    The derivative of the spectrum smoothed over ``max(0.5 eV, 0.05 % of E)`` (a core-hole width
    or so) peaks at each edge; a peak is a jump when the rise across it, ``y`` averaged just
    above minus just below (``+-max(1 eV, 0.1 % of E)``), exceeds 5 times the point noise of the
    spectrum (from second differences) and :data:`MIN_RELATIVE_JUMP` of the largest rise.
    """
    n = energies.size
    if n < 8:
        return []
    grid = np.arange(energies[0], energies[-1], max(float(np.min(np.diff(energies))), 0.05))
    if grid.size > 200_000:
        grid = np.linspace(energies[0], energies[-1], 200_000)
    yg = np.interp(grid, energies, y)
    step = grid[1] - grid[0]
    centre = 0.5 * (energies[0] + energies[-1])
    width = max(0.5, 5e-4 * centre) / step
    from scipy.ndimage import gaussian_filter1d

    slope = gaussian_filter1d(yg, width, order=1, mode="nearest") / step
    d2 = y[2:] - 0.5 * (y[:-2] + y[2:])  # crude: noise from second differences of the data
    noise = 1.4826 * float(np.median(np.abs(d2 - np.median(d2)))) + 1e-12
    peaks = np.flatnonzero((slope[1:-1] > 0) & (slope[1:-1] >= slope[:-2]) & (slope[1:-1] > slope[2:])) + 1
    out = []
    for i in peaks[np.argsort(slope[peaks])[::-1]]:
        e = float(grid[i])
        half = max(1.0, 1e-3 * e)
        lo = y[(energies >= e - 3 * half) & (energies < e - half)]
        hi = y[(energies > e + half) & (energies <= e + 3 * half)]
        if lo.size == 0 or hi.size == 0:
            continue
        rise = float(np.mean(hi) - np.mean(lo))
        if rise <= 5.0 * noise or any(abs(e - p) < 2 * half for p, _ in out):
            continue
        out.append((e, rise))
    if not out:
        return []
    biggest = max(r for _, r in out)
    return sorted([(e, r) for e, r in out if r >= MIN_RELATIVE_JUMP * biggest], key=lambda t: -t[1])


def _matches(position: float, candidates: Sequence[tuple[str, str, float]]) -> list[tuple[str, str, float]]:
    tol = max(_MATCH_MIN_EV, _MATCH_FRACTION * position)
    return [c for c in candidates if position - tol < c[2] < position + tol / 2.0]


def detect_edges(
    energies: np.ndarray | Sequence[float],
    mean_od: np.ndarray | Sequence[float],
    *,
    element: str | None = None,
) -> tuple[DetectedEdge, ...]:
    """Absorption edges of a scan, from its mean spectrum.

    Parameters
    ----------
    energies : array-like, shape (n,)
        Energies (eV), any order.
    mean_od : array-like, shape (n,)
        Mean optical density of the field of view at each energy.
    element : str, optional
        Restrict the match to this element's edges.

    Returns
    -------
    tuple of DetectedEdge
        In increasing energy (acquisition order).

    Raises
    ------
    ValueError
        Malformed inputs (the message names the parameter).
    EdgeDetectionError
        No significant jump, no tabulated edge near the jumps, or several elements explain them
        equally well (the message lists the candidates).

    Notes
    -----
    Jumps: peaks of the smoothed derivative whose rise is significant (see ``_find_jumps``) and
    at least 15 % of the largest. Each jump is matched to the tabulated edges (xraydb) with
    ``e0`` in ``(E - tol, E + tol/2)``, ``tol = max(3 eV, 0.25 % of E)`` (chemical shifts move the
    inflection above e0). Without ``element``, the element explaining the most jumps wins; on a
    tie, the one whose edges are of the lowest class (:data:`EDGE_KINDS`: K/L3/M5 before L2/M4
    before L1, since a scan targets the main edge); a remaining tie is ambiguous. Example: a
    single jump at 12.66 keV is Se K or Tl L3.
    """
    e = np.asarray(energies, dtype=np.float64).ravel()
    y = np.asarray(mean_od, dtype=np.float64).ravel()
    if e.size != y.size:
        raise ValueError(f"mean_od must have one value per energy ({e.size}), got {y.size}")
    good = np.isfinite(e) & np.isfinite(y)
    if np.count_nonzero(good) < 8:
        raise ValueError("energies and mean_od need at least 8 finite points")
    order = np.argsort(e[good], kind="stable")
    e, y = e[good][order], y[good][order]
    e, idx = np.unique(e, return_index=True)
    y = y[idx]
    jumps = _find_jumps(e, y)
    if not jumps:
        raise EdgeDetectionError(
            f"no significant absorption jump in the mean spectrum over [{e[0]:.1f}, {e[-1]:.1f}] eV; "
            "pass element= and edges= explicitly"
        )
    table = _all_edges() if element is None else tuple((element, n, e0) for n, e0 in _element_edges(element))
    matched = [(pos, rise, _matches(pos, table)) for pos, rise in jumps]
    if not any(m for _, _, m in matched):
        near = sorted(table, key=lambda c: abs(c[2] - jumps[0][0]))[:3]
        raise EdgeDetectionError(
            f"no tabulated edge{'' if element is None else ' of ' + element} matches the jump at "
            f"{jumps[0][0]:.1f} eV; nearest: " + ", ".join(f"{el} {n} ({e0:.1f} eV)" for el, n, e0 in near)
        )
    # score each element: jumps explained (more is better), then the class of its edges
    score: dict[str, tuple[int, int]] = {}
    for _, _, cands in matched:
        best: dict[str, int] = {}
        for el, name, _ in cands:
            best[el] = min(best.get(el, 9), EDGE_KINDS[name])
        for el, kind in best.items():
            n, k = score.get(el, (0, 0))
            score[el] = (n + 1, k + kind)
    top = max(score.values(), key=lambda t: (t[0], -t[1]))
    winners = sorted(el for el, s in score.items() if s == top)
    if len(winners) > 1:
        listing = sorted({(el, n, e0) for _, _, cands in matched for el, n, e0 in cands if el in winners},
                         key=lambda c: c[2])
        raise EdgeDetectionError(
            "ambiguous edge: the jumps at " + ", ".join(f"{p:.1f} eV" for p, _, _ in matched)
            + " match " + ", ".join(f"{el} {n} ({e0:.1f} eV)" for el, n, e0 in listing)
            + "; pass element= (and edges=) explicitly"
        )
    el = winners[0]
    found: dict[str, DetectedEdge] = {}
    for _, rise, cands in matched:
        mine = sorted((c for c in cands if c[0] == el), key=lambda c: EDGE_KINDS[c[1]])
        if mine and mine[0][1] not in found:
            found[mine[0][1]] = DetectedEdge(el, mine[0][1], mine[0][2], float(rise))
    return tuple(sorted(found.values(), key=lambda d: d.e0))
