"""Absorption edges and the energy windows used to analyse them, for any element and edge.

An :class:`EdgeWindow` fixes, for one edge, the edge energy ``e0`` used for normalization and the
pre-edge and post-edge fitting ranges (relative to ``e0``). The analysis of an edge can start as
soon as every energy up to :attr:`EdgeWindow.end` has been acquired.

:func:`default_windows` derives the ranges of any tabulated K, L1, L2, L3, M4 or M5 edge from
~250 eV (soft X-rays) to hard X-rays, from the edge energy, its core-hole width and the
neighbouring edges of the same element (see its Notes); :func:`fit_window` fits a window into the
energies a scan announces or acquired; :func:`join_windows` joins the windows of edges of one
element that overlap (a spin-orbit pair at soft X-rays, e.g. Fe L3/L2) into one normalization.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from txm_live.errors import InsufficientDataError

__all__ = [
    "EdgeWindow",
    "FEATURE_RANGE",
    "check_edge_name",
    "MIN_EDGE_ENERGY",
    "MIN_POST_POINTS",
    "MIN_PRE_POINTS",
    "POST_ORDER_SPANS",
    "choose_post_order",
    "core_width",
    "default_windows",
    "edge_energy",
    "fit_window",
    "join_windows",
    "resolve_post_order",
    "scaled_range",
]

#: Nominal ranges (eV relative to e0) at hard X-rays. The first edge of a spin-orbit pair (L3, M5)
#: and K have a long pre-edge; the second edge (L2, M4) and L1 sit in the post-edge of the edge
#: below, so their pre-edge is short. The Nd L3/L2 values are physics.md's (the seed experiment).
_NOMINAL: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "K": ((-200.0, -60.0), (90.0, 440.0)),
    "L3": ((-200.0, -60.0), (90.0, 440.0)),
    "M5": ((-200.0, -60.0), (90.0, 440.0)),
    "L2": ((-70.0, -20.0), (60.0, 300.0)),
    "L1": ((-70.0, -20.0), (60.0, 300.0)),
    "M4": ((-70.0, -20.0), (60.0, 300.0)),
}
#: Edge energy (eV) at and above which the nominal ranges apply unscaled.
_HARD_ENERGY = 6000.0
#: Lowest supported edge energy (eV): soft X-ray microscopes start around the C K edge.
MIN_EDGE_ENERGY = 250.0
#: Fraction of the distance to the next edge above that a post-edge range may use; the rest is
#: left to the next edge's own pre-edge (Nd: the L3 window ends at 6648 eV, the L2 one starts
#: at 6652 eV).
_NEXT_EDGE_FRACTION = 0.86
#: The pre-edge range may come no closer to e0 than this many core-hole widths (or 1 eV).
_PRE_LIMIT_WIDTHS = 5.0
#: Fewest energies in the pre-edge range (a line and its residual noise).
MIN_PRE_POINTS = 3
#: Fewest energies in the post-edge range (a constant and its residual noise).
MIN_POST_POINTS = 3
#: Nominal near-edge feature range (eV relative to e0) at hard X-rays: where the phases' white
#: lines, edge positions and pre-edge peaks differ (:attr:`EdgeWindow.feature_range` scales it).
FEATURE_RANGE: tuple[float, float] = (-20.0, 60.0)


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
    post_order : int or None
        Order of the Athena post-edge polynomial: 0 (constant), 1 (line), 2 (quadratic); ``None``
        (default) chooses it from the post-edge span and point count
        (:func:`choose_post_order`).
    features : (float, float) or None
        Near-edge feature range relative to ``e0`` (eV): the energies whose normalized absorption
        is clustered and shown magnified in the figures. ``None`` (default): derived, see
        :attr:`feature_range`.
    joint : EdgeWindow or None
        Joint normalization: the window (of the lowest edge of a group of overlapping edges of
        the same element) whose ``e0``, pre- and post-edge ranges and post-edge order normalize
        this edge, instead of this window's own ``pre``/``post``. Set by :func:`join_windows`;
        ``None`` (default): the edge is normalized on its own ranges.

    Examples
    --------
    A Fe K-edge XANES window and a soft-X-ray Fe L3 window (eV relative to e0):

    >>> k = EdgeWindow("Fe", "K", 7112.0, pre=(-30.0, -10.0), post=(40.0, 150.0))
    >>> l3 = EdgeWindow("Fe", "L3", 706.8, pre=(-6.8, -2.0), post=(5.7, 11.3), post_order=0)
    """

    element: str
    edge: str
    e0: float
    pre: tuple[float, float]
    post: tuple[float, float]
    post_order: int | None = None
    features: tuple[float, float] | None = None
    joint: EdgeWindow | None = None

    def __post_init__(self) -> None:
        if not (self.pre[0] < self.pre[1] < 0.0):
            raise ValueError(f"pre must satisfy pre[0] < pre[1] < 0, got {self.pre}")
        if not (0.0 < self.post[0] < self.post[1]):
            raise ValueError(f"post must satisfy 0 < post[0] < post[1], got {self.post}")
        po = self.post_order
        if po is not None and (isinstance(po, bool) or not isinstance(po, (int, np.integer)) or not 0 <= po <= 2):
            raise ValueError(f"post_order must be None, 0, 1 or 2, got {po!r}")
        if self.features is not None:
            try:
                lo, hi = (float(v) for v in self.features)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"features must be None or a pair of numbers (eV), got {self.features!r}") from exc
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"features must satisfy features[0] < features[1], got {self.features}")
            object.__setattr__(self, "features", (lo, hi))
        j = self.joint
        if j is not None:
            if not isinstance(j, EdgeWindow) or j.joint is not None:
                raise ValueError(f"joint must be None or an EdgeWindow without a joint of its own, got {j!r}")
            if j.element != self.element:
                raise ValueError(f"joint must be a window of the same element {self.element!r}, got {j.element!r}")

    @property
    def start(self) -> float:
        """First absolute energy (eV) the analysis of this edge uses (with a joint window, the
        start of the joint normalization's pre-edge range)."""
        own = self.e0 + self.pre[0]
        return own if self.joint is None else min(own, self.joint.start)

    @property
    def end(self) -> float:
        """Last absolute energy (eV) the analysis of this edge uses."""
        own = self.e0 + self.post[1]
        return own if self.joint is None else max(own, self.joint.end)

    @property
    def normalization(self) -> EdgeWindow:
        """The window whose ``e0``, ``pre``, ``post`` and ``post_order`` normalize this edge:
        :attr:`joint` when set, else this window."""
        return self if self.joint is None else self.joint

    @property
    def feature_range(self) -> tuple[float, float]:
        """Near-edge feature range relative to ``e0`` (eV).

        :attr:`features` when given. Otherwise :data:`FEATURE_RANGE` (-20 .. +60 eV) scaled with
        the edge like the window ranges (:func:`scaled_range`: ``s = min(1, e0 / 6000 eV)``),
        then clipped to this edge's own window ``[pre[0], post[1]]``: unchanged at hard X-rays
        (Nd L3/L2, Fe K: -20 .. +60 eV), -2.4 .. +7.1 eV at Fe L3 (s = 0.12; the Fe2+/Fe3+ L3
        multiplet spans ~705-713 eV), never reaching the next edge of the element.
        """
        if self.features is not None:
            return self.features
        lo, hi = scaled_range(FEATURE_RANGE, self.e0)
        return (max(lo, self.pre[0]), min(hi, self.post[1]))

    @property
    def name(self) -> str:
        """Label such as ``"Nd L3"``."""
        return f"{self.element} {self.edge}"


def edge_energy(element: str, edge: str) -> float:
    """Tabulated edge energy (eV) of ``element`` at ``edge`` from xraydb (Elam tables)."""
    import xraydb  # lazy: a data package, only needed when windows are built

    try:
        return float(xraydb.xray_edge(element, edge).energy)
    except (KeyError, AttributeError, ValueError, TypeError) as exc:
        raise ValueError(f"unknown edge {edge!r} for element {element!r}") from exc


def _edge_table(element: str) -> dict[str, tuple[float, float]]:
    """Edge name -> (energy, core-hole width) of every tabulated edge of ``element`` (eV)."""
    import xraydb  # lazy

    try:
        edges = xraydb.xray_edges(element)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"element: unknown element {element!r}") from exc
    out = {}
    for name, e in edges.items():
        try:
            width = float(xraydb.core_width(element, name) or 0.0)
        except (KeyError, ValueError, TypeError, AttributeError):
            width = 0.0
        out[str(name)] = (float(e.energy), width)
    return out


def _scale(e0: float) -> float:
    return min(1.0, e0 / _HARD_ENERGY)


def scaled_range(nominal: tuple[float, float], e0: float) -> tuple[float, float]:
    """A hard-X-ray energy range relative to e0 (eV) scaled to the edge at ``e0`` (eV).

    Multiplies ``nominal`` by ``s = min(1, e0 / 6000 eV)``, the scaling of the default windows
    (:func:`default_windows`, Notes, rule 2): near-edge structure spans fewer eV at lower photon
    energy. Unchanged at and above 6 keV.
    """
    if not (math.isfinite(float(e0)) and float(e0) > 0):
        raise ValueError(f"e0 must be a positive energy (eV), got {e0!r}")
    s = _scale(float(e0))
    return (float(nominal[0]) * s, float(nominal[1]) * s)


def _nominal_ranges(
    table: dict[str, tuple[float, float]], edge: str
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Nominal pre/post ranges of ``edge`` with the soft-X-ray scaling and the next edge above."""
    e0, _ = table[edge]
    s = _scale(e0)
    (pre_far, pre_near), (post_near, post_far) = _NOMINAL[edge]
    above = [e for e, _ in table.values() if e > e0 + 1e-6]
    post_far *= s
    if above:
        post_far = min(post_far, _NEXT_EDGE_FRACTION * (min(above) - e0))
    post_near = min(post_near * s, 0.5 * post_far)
    return (pre_far * s, pre_near * s), (post_near, post_far)


def check_edge_name(edge: str) -> None:
    """Raise the ``ValueError`` of :func:`default_windows` when txm-live has no default window
    for an edge called ``edge`` (any element)."""
    if edge not in _NOMINAL:
        raise ValueError(f"edges: no default window for edge {edge!r} (known: {', '.join(_NOMINAL)}); "
                         "build an EdgeWindow yourself")


def _default_window(element: str, edge: str, table: dict[str, tuple[float, float]]) -> EdgeWindow:
    check_edge_name(edge)
    if edge not in table:
        raise ValueError(f"edges: element {element!r} has no tabulated {edge} edge")
    e0, _ = table[edge]
    if e0 < MIN_EDGE_ENERGY:
        raise ValueError(
            f"edges: {element} {edge} at {e0:.1f} eV is below {MIN_EDGE_ENERGY:.0f} eV, outside the "
            "supported range; build an EdgeWindow yourself"
        )
    (pre_far, pre_near), post = _nominal_ranges(table, edge)
    # the pre-edge must not reach back into the near-edge region of the edge below (L2 above L3)
    below = [(e, name) for name, (e, _) in table.items() if e < e0 - 1e-6 and name in _NOMINAL]
    if below:
        e_low, low = max(below)
        if e_low >= MIN_EDGE_ENERGY:
            _, (low_post_near, _) = _nominal_ranges(table, low)
            pre_far = max(pre_far, -(e0 - (e_low + low_post_near)))
    return EdgeWindow(element, edge, e0, (pre_far, pre_near), post)


def default_windows(
    element: str = "Nd",
    edges: Sequence[str] = ("L3", "L2"),
    *,
    energies: np.ndarray | Sequence[float] | None = None,
    joint: bool = True,
) -> tuple[EdgeWindow, ...]:
    """Default analysis windows for ``edges`` of ``element``, in the order given.

    Parameters
    ----------
    element : str
        Element symbol.
    edges : sequence of str
        Edge names among ``"K"``, ``"L1"``, ``"L2"``, ``"L3"``, ``"M4"``, ``"M5"``; the edge must
        be tabulated for the element (xraydb) and lie above 250 eV.
    energies : array-like, optional
        Energies (eV) the scan plans or acquired. Each window is then fitted into them
        (:func:`fit_window`).
    joint : bool
        Join the windows of overlapping edges into one normalization (:func:`join_windows`;
        Notes, rule 6). ``False`` normalizes every edge on its own ranges.

    Returns
    -------
    tuple of EdgeWindow

    Raises
    ------
    ValueError
        Unknown element or edge (the message names ``edges`` or ``element``).
    InsufficientDataError
        With ``energies``: a window keeps too few points (see :func:`fit_window`).

    Notes
    -----
    Rule, all energies relative to the tabulated edge energy e0 (xraydb, Elam tables):

    1. Nominal hard-X-ray ranges (physics.md): K, L3, M5 pre-edge [-200, -60], post-edge
       [+90, +440] eV; L2, L1, M4 (which sit in the post-edge of the edge below) pre-edge
       [-70, -20], post-edge [+60, +300] eV.
    2. Soft X-rays: every range is multiplied by ``s = min(1, e0 / 6000 eV)``: near-edge
       structure and the smooth decay of the cross section span fewer eV at lower photon energy
       (Fe L3, s = 0.12: pre-edge [-24, -7] eV instead of [-200, -60]).
    3. The post-edge ends at 86 % of the distance to the next tabulated edge of the element above
       (a window never reaches the next edge; the remaining 14 % hold that edge's pre-edge) and
       starts at most halfway to its end. Fe L3 (L2 13.1 eV above): post-edge [+5.7, +11.3] eV.
    4. The pre-edge starts no lower than the start of the post-edge range of the edge below
       (the Fe L2 pre-edge is the L3 continuum, [-7.5, -2.4] eV).
    5. :func:`fit_window` may move the pre-edge end towards e0, never closer than
       ``max(1 eV, 5 core-hole widths)`` (xraydb core widths: Fe K 1.25, Fe L3 0.36, Nd L3
       3.65 eV), and the post-edge start down to half its value, when the scan measured too few
       points in the nominal ranges.
    6. Edges whose windows overlap (the upper edge's pre-edge starts before the lower edge's
       post-edge ends) are normalized together (:func:`join_windows`): Fe L2 on the soft-X-ray
       stack, whose pre-edge 712-717 eV is the L3 post-edge tail. Nd L3/L2 (L3 ends at 6648 eV,
       L2 starts at 6652 eV) and K edges are not joined.
    7. The near-edge feature range is :data:`FEATURE_RANGE` scaled by ``s`` and kept inside the
       edge's own window (:attr:`EdgeWindow.feature_range`).

    For Nd the rule gives exactly the windows of the seed experiment: L3 [6008, 6648] eV,
    L2 pre-edge from 6652 eV.
    """
    if isinstance(edges, str) or not edges:
        raise ValueError("edges must name at least one edge, e.g. ('L3', 'L2') or ('K',)")
    if not isinstance(element, str) or not element:
        raise ValueError(f"element must be an element symbol, got {element!r}")
    table = _edge_table(element)
    windows = tuple(_default_window(element, str(edge), table) for edge in edges)
    if energies is not None:
        windows = tuple(fit_window(w, energies) for w in windows)
    return join_windows(windows) if joint else windows


def join_windows(windows: Sequence[EdgeWindow]) -> tuple[EdgeWindow, ...]:
    """Join the windows of overlapping edges of one element into one normalization.

    Parameters
    ----------
    windows : sequence of EdgeWindow
        Any elements and edges, any order; windows that already have a ``joint`` are re-joined
        from their own ranges.

    Returns
    -------
    tuple of EdgeWindow
        The windows in the order given; every edge of a joined group but its lowest gets
        ``joint`` = the lowest edge's window (without ``joint``), and every edge but the highest
        an explicit ``features`` range (see Notes) unless it had one. Other windows are returned
        unchanged.

    Notes
    -----
    Rule (on the windows only, no edge names): the windows of one element, sorted by ``e0``,
    form a group while each next window's pre-edge range starts before the previous window's
    post-edge range ends (``upper.e0 + upper.pre[0] < lower.e0 + lower.post[1]``): the upper
    edge's pre-edge then lies on the lower edge's post-edge (its white-line tail), where no
    pre-edge line is valid. This happens for the spin-orbit pairs of soft X-rays (Fe L3/L2
    13 eV apart: the L2 pre-edge 712.5-717.5 eV is the L3 post-edge 712.4-718 eV; M5/M4 alike),
    not for Nd L3/L2 (514 eV apart; L3 ends at 6648 eV, L2 starts at 6652 eV) nor for K edges.

    A joined edge is normalized like the group's lowest edge and on the same spectrum, the
    standard treatment of an L2,3 (or M4,5) spectrum: the pre-edge line fitted below the lowest
    edge is extended under the whole group and the edge step is the lowest edge's (its own
    post-edge range, evaluated at its e0), so ``norm = (mu - pre_line(E)) / step`` is one curve
    across the group. Each edge is then clustered on its own near-edge sub-range
    (:attr:`EdgeWindow.feature_range`, which stays inside the edge's own window; a lower edge's
    range is extended up to the start of the next edge's range, so that the features tile the
    group's spectrum and the white-line tail between the edges, where e.g. Fe3+ charge-transfer
    satellites lie, is not dropped) and its sample mask is the group's jump. Why the lowest
    edge's step and not the total step (pre-edge below L3 to post-edge above L2): at soft X-rays
    the continuum step is a small fraction of the white lines (Fe L2,3 on the real ALS stack:
    median 0.014 OD against a per-point noise of 0.027 OD on particle pixels), far too noisy to
    divide a pixel spectrum by, whereas the lowest edge's own step (0.09 OD median) is the one
    its analysis already trusts. The scale of a pixel's spectrum does not enter the clustering
    (:func:`txm_live.phases.build_features` projects it out); the upper edge's post-edge lies
    flat at the ratio of the total to the lowest edge's step.

    Override: pass windows without ``joint`` (``default_windows(..., joint=False)`` or your own
    :class:`EdgeWindow` objects) to normalize every edge on its own ranges.
    """
    own = [w if w.joint is None else replace(w, joint=None) for w in windows]
    out = list(own)
    by_element: dict[str, list[int]] = {}
    for i, w in enumerate(own):
        by_element.setdefault(w.element, []).append(i)
    for members in by_element.values():
        members = sorted(members, key=lambda i: own[i].e0)
        groups = [[members[0]]]
        for prev, cur in zip(members, members[1:]):
            lower, upper = own[prev], own[cur]
            if upper.e0 > lower.e0 and upper.e0 + upper.pre[0] < lower.e0 + lower.post[1]:
                groups[-1].append(cur)
            else:
                groups.append([cur])
        for group in (g for g in groups if len(g) > 1):
            for lower, upper in zip(group, group[1:]):  # features tile the group's spectrum
                if own[lower].features is None:
                    lo, hi = own[lower].feature_range
                    hi = max(hi, own[upper].e0 + own[upper].feature_range[0] - own[lower].e0)
                    out[lower] = replace(out[lower], features=(lo, hi))
            root = out[group[0]]
            for i in group[1:]:
                out[i] = replace(out[i], joint=root)
    return tuple(out)


def core_width(element: str, edge: str) -> float:
    """Core-hole width (eV, xraydb) of ``element``'s ``edge``; 0 when unknown."""
    try:
        return _edge_table(element).get(edge, (0.0, 0.0))[1]
    except ValueError:
        return 0.0


def fit_window(window: EdgeWindow, energies: np.ndarray | Sequence[float], *, scan_stopped: bool = False) -> EdgeWindow:
    """Fit ``window`` into the energies a scan plans or acquired.

    Parameters
    ----------
    window : EdgeWindow
        The window (default or explicit).
    energies : array-like of float
        Energies (eV), any order; duplicates are fine.
    scan_stopped : bool
        The energies are those of a scan stopped before it completed the window (aborted,
        interrupted): a shortfall then says so instead of advising another window.

    Returns
    -------
    EdgeWindow
        Same edge, ``e0``, ``post_order`` and ``features``; a ``joint`` window is fitted too.
        The outer ends of the pre- and post-edge ranges are shrunk to the first and last energy
        inside them. When a range holds fewer than :data:`MIN_PRE_POINTS` /
        :data:`MIN_POST_POINTS` energies, its inner end is moved towards ``e0`` to take the
        points the scan has there, down to the limits of :func:`default_windows` (Notes, rule
        5).

    Raises
    ------
    InsufficientDataError
        Too few energies remain in the pre- or post-edge range (the message names the edge,
        the ranges and the counts).
    ValueError
        ``energies`` empty or not finite, ``window`` not an EdgeWindow.
    """
    if not isinstance(window, EdgeWindow):
        raise ValueError(f"window must be an EdgeWindow, got {type(window).__name__}")
    e = np.unique(np.asarray(energies, dtype=np.float64).ravel())
    if e.size == 0 or not np.all(np.isfinite(e)):
        raise ValueError("energies must be a non-empty array of finite energies (eV)")
    x = e - window.e0
    tol = 1e-6
    pre_limit = -max(1.0, _PRE_LIMIT_WIDTHS * core_width(window.element, window.edge))
    pre_limit = max(pre_limit, window.pre[1])  # an explicit window closer to e0 keeps its own end
    post_limit = 0.5 * window.post[0]

    pre_pts = x[(x >= window.pre[0] - tol) & (x <= window.pre[1] + tol)]
    if pre_pts.size < MIN_PRE_POINTS:
        pre_pts = x[(x >= window.pre[0] - tol) & (x <= pre_limit + tol)]
    post_pts = x[(x >= window.post[0] - tol) & (x <= window.post[1] + tol)]
    if post_pts.size < MIN_POST_POINTS:
        post_pts = x[(x >= post_limit - tol) & (x <= window.post[1] + tol)]
    if pre_pts.size < MIN_PRE_POINTS or post_pts.size < MIN_POST_POINTS:
        raise InsufficientDataError(
            f"{window.name}: the scan ({e.size} energies in [{e[0]:.1f}, {e[-1]:.1f}] eV) has "
            f"{pre_pts.size} energies in the pre-edge range [{window.e0 + window.pre[0]:.1f}, "
            f"{window.e0 + pre_limit:.1f}] eV (need {MIN_PRE_POINTS}) and {post_pts.size} in the "
            f"post-edge range [{window.e0 + post_limit:.1f}, {window.e0 + window.post[1]:.1f}] eV "
            f"(need {MIN_POST_POINTS}); "
            + ("the scan stopped before the window was complete" if scan_stopped
               else "pass an EdgeWindow that fits the scan")
        )
    pre = (float(pre_pts[0]), float(max(window.pre[1], pre_pts[-1])))
    post = (float(min(window.post[0], post_pts[0])), float(post_pts[-1]))
    joint = None if window.joint is None else fit_window(window.joint, energies, scan_stopped=scan_stopped)
    return replace(window, pre=pre, post=post, joint=joint)


#: Post-edge spans (fraction of e0) from which a line, then a quadratic, are fitted.
POST_ORDER_SPANS: tuple[float, float] = (0.005, 0.03)


def choose_post_order(span: float, n_points: int, e0: float) -> int:
    """Order of the Athena post-edge polynomial for a post-edge range of ``span`` eV.

    Parameters
    ----------
    span : float
        Energy span (eV) of the post-edge points (last minus first).
    n_points : int
        Number of energies in the post-edge range.
    e0 : float
        Edge energy (eV).

    Returns
    -------
    int
        0 (constant), 1 (line) or 2 (quadratic).

    Notes
    -----
    Rule: ``span / e0 < 0.5 %`` -> constant; ``0.5 % <= span / e0 < 3 %`` -> line;
    ``>= 3 %`` -> quadratic; and never more than ``n_points - 2`` (at least two residual degrees
    of freedom for the noise estimate). Why: a line fitted to a post-edge range extrapolates to
    e0 with a noise gain of about ``sqrt(1 + 12 (distance / span)^2)``, a quadratic with far
    more; on a 2 eV Fe L3 post-edge ~10 eV above e0 (0.3 % of e0) the quadratic spreads the
    edge steps of blank-beam pixels over ~1 OD, a line over 0.08, a constant over 0.02. Above
    the edge the smooth absorption falls roughly as ``E^-3``: over a relative span
    ``d = span / e0`` it changes by ~``3 d`` (slope) and bends by ~``6 d^2`` (curvature). A
    slope is worth fitting from ~0.5 % (a few eV at soft X-rays, where the post-edge also holds
    the tail of the white line), a curvature only from ~3 % (``6 d^2 >= 0.5 %``, comparable with
    the noise of an averaged phase spectrum). Examples: Nd L3/L2 of the seed experiment (350 and
    240 eV, 5.6 % and 3.6 %) quadratic; a Fe K XANES scan to +190 eV (1.4 %) a line; Fe L3 on the
    real STXM stack (5.5 eV, 0.8 %) a line; Fe L2 there (3.2 eV, 0.4 %) a constant. Like larch's
    ``pre_edge`` (``nnorm`` from the normalization span) but in units of e0, so that one rule holds
    from soft to hard X-rays.
    """
    if not (np.isfinite(span) and span >= 0):
        raise ValueError(f"span must be a non-negative number of eV, got {span!r}")
    if not (np.isfinite(e0) and e0 > 0):
        raise ValueError(f"e0 must be positive, got {e0!r}")
    d = float(span) / float(e0)
    order = 0 if d < POST_ORDER_SPANS[0] else 1 if d < POST_ORDER_SPANS[1] else 2
    return int(max(0, min(order, int(n_points) - 2)))


def resolve_post_order(energies: np.ndarray, window: EdgeWindow, post_order: int | None = None) -> int:
    """Post-edge order used for ``window``: ``post_order``, else ``window.post_order``, else the
    rule of :func:`choose_post_order` on the energies inside ``window.post``. A joint window
    (:func:`join_windows`) resolves the order of the window it is normalized with."""
    window = window.normalization
    if post_order is None:
        post_order = window.post_order
    if post_order is not None:
        return post_order
    e = np.asarray(energies, dtype=np.float64)
    inside = e[(e >= window.e0 + window.post[0]) & (e <= window.e0 + window.post[1])]
    span = float(np.ptp(inside)) if inside.size else 0.0
    return choose_post_order(span, int(inside.size), window.e0)
