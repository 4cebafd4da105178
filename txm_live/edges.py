"""Absorption edges and the energy windows used to analyse them.

An :class:`EdgeWindow` fixes, for one edge, the edge energy ``e0`` used for normalization and the
pre-edge and post-edge fitting ranges (relative to ``e0``). The analysis of an edge can start as
soon as every energy up to :attr:`EdgeWindow.end` has been acquired.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["EdgeWindow", "default_windows", "edge_energy"]

#: Default windows relative to e0 (eV), from physics.md. The L3 post-edge stops at +440 eV so it
#: never reaches the L2 edge (514 eV above L3 for Nd).
_DEFAULT_RANGES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "L3": ((-200.0, -60.0), (90.0, 440.0)),
    "L2": ((-70.0, -20.0), (60.0, 300.0)),
    "K": ((-200.0, -60.0), (90.0, 440.0)),
    "L1": ((-70.0, -20.0), (60.0, 300.0)),
}


@dataclass(frozen=True)
class EdgeWindow:
    """Energy window of one absorption edge.

    Attributes
    ----------
    element : str
        Element symbol, e.g. ``"Nd"``.
    edge : str
        Edge name, e.g. ``"L3"``.
    e0 : float
        Edge energy (eV) used as the fixed normalization point for every pixel.
    pre : tuple of float
        Pre-edge fitting range, relative to ``e0`` (eV), both negative.
    post : tuple of float
        Post-edge fitting range, relative to ``e0`` (eV), both positive.
    """

    element: str
    edge: str
    e0: float
    pre: tuple[float, float]
    post: tuple[float, float]

    def __post_init__(self) -> None:
        if not (self.pre[0] < self.pre[1] < 0.0):
            raise ValueError(f"pre must satisfy pre[0] < pre[1] < 0, got {self.pre}")
        if not (0.0 < self.post[0] < self.post[1]):
            raise ValueError(f"post must satisfy 0 < post[0] < post[1], got {self.post}")

    @property
    def start(self) -> float:
        """First absolute energy (eV) the analysis of this edge uses."""
        return self.e0 + self.pre[0]

    @property
    def end(self) -> float:
        """Last absolute energy (eV) the analysis of this edge uses."""
        return self.e0 + self.post[1]

    @property
    def name(self) -> str:
        """Label such as ``"Nd L3"``."""
        return f"{self.element} {self.edge}"


def edge_energy(element: str, edge: str) -> float:
    """Tabulated edge energy (eV) of ``element`` at ``edge`` from xraydb (Elam tables)."""
    import xraydb  # lazy: a data package, only needed when windows are built

    try:
        return float(xraydb.xray_edge(element, edge).energy)
    except (KeyError, AttributeError, ValueError) as exc:
        raise ValueError(f"unknown edge {edge!r} for element {element!r}") from exc


def default_windows(element: str = "Nd", edges: Sequence[str] = ("L3", "L2")) -> tuple[EdgeWindow, ...]:
    """Default analysis windows for ``edges`` of ``element``, in the order given.

    Parameters
    ----------
    element : str
        Element symbol.
    edges : sequence of str
        Edge names; ``"L3"``, ``"L2"``, ``"L1"`` and ``"K"`` have default ranges.

    Returns
    -------
    tuple of EdgeWindow

    Notes
    -----
    L3: pre-edge [e0-200, e0-60], post-edge [e0+90, e0+440] eV. L2: pre-edge [e0-70, e0-20],
    post-edge [e0+60, e0+300] eV (physics.md). For Nd the L3 window ends at 6648 eV, before the L2
    pre-edge starts (6652 eV).
    """
    if not edges:
        raise ValueError("edges must name at least one edge")
    windows = []
    for edge in edges:
        if edge not in _DEFAULT_RANGES:
            raise ValueError(f"edges: no default window for edge {edge!r}; build an EdgeWindow yourself")
        pre, post = _DEFAULT_RANGES[edge]
        windows.append(EdgeWindow(element, edge, edge_energy(element, edge), pre, post))
    return tuple(windows)
