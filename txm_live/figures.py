"""Publishable figures of a run, keyed by edge, in the spirit of Duan et al., Sci. Rep. 6, 34406 (2016).

Every ``plot_*`` function takes result objects from :mod:`txm_live.results` and writes one PNG;
:func:`save_report` writes all of them for a :class:`~txm_live.results.RunResult`: one set per
edge the run analysed (no edge is special), one difference figure per pair of edges compared.

Rendering is headless (matplotlib's Agg canvas, no pyplot state) unless a :class:`LivePlot` is
asked to open a window. matplotlib is imported lazily, inside the functions, so ``import
txm_live`` stays light.

Readability
-----------
* One colour per phase *identity* in every figure of a report: the phases of the first edge
  define identities 0, 1, 2...; the phases of every other edge of the same element take the
  identity of the phase they match (pixel overlap, :func:`txm_live.compare.match_phases`), the
  streaming preview the identity of the exact phase it overlaps most. :func:`phase_identities`.
* The palette is Paul Tol's colour-blind safe high-contrast scheme (dark blue, yellow, red)
  continued with black and lighter tones: the first three identities differ by at least 0.2 in
  greyscale luminance, and every identity also has its own hatch (maps, bars, legends) and line
  style, so a greyscale print still tells the phases apart.
* Legends sit outside the data axes (below or beside them), never on top of data, and inside
  the canvas (the figures use matplotlib's constrained layout).
* Masked pixels are white; continuous maps (SNR) use ``viridis`` with the SNR threshold drawn.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from txm_live.results import EdgeResult, ExafsResult, RunResult

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "LivePlot",
    "display_available",
    "l2_to_l3_mapping",
    "phase_colors",
    "phase_hatch",
    "phase_identities",
    "plot_composite",
    "plot_difference_histogram",
    "plot_exafs",
    "plot_phase_areas",
    "near_edge_band",
    "plot_phase_maps",
    "plot_phase_spectra",
    "plot_snr",
    "save_report",
]

#: Colour-blind safe palette: Paul Tol's high-contrast scheme (dark blue, yellow, red: greyscale
#: luminance 0.22, 0.67, 0.46), then black, light blue, dark yellow, pink, light yellow.
_PALETTE = ("#004488", "#DDAA33", "#BB5566", "#000000", "#6699CC", "#997700", "#EE99AA", "#EECC66")
#: Line styles and hatches per identity (greyscale-safe on top of the luminance levels).
_LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2)), (0, (3, 1, 1, 1)))
_HATCHES = ("", "////", "xxxx", "....", "\\\\\\\\", "oo", "++", "--")
_MASKED_RGB = (1.0, 1.0, 1.0)
#: Pixels without data (SNR not finite: outside the registered overlap, cropped, dead): mid grey,
#: apart from white (masked) and from every palette colour (they all have chroma).
_NO_DATA_RGB = (0.6, 0.6, 0.6)
_DPI = 100


def _new_figure(width: float, height: float) -> Figure:
    """A Figure on an Agg canvas, independent of pyplot (thread safe, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI, facecolor="white")
    return path


def phase_colors(n_phases: int) -> np.ndarray:
    """RGB colours (``(n_phases, 3)``) of phase identities ``0..n_phases-1``.

    Identity ``p`` always gets the same colour whatever the number of phases, so every figure
    of a report matches. Beyond eight identities the colours repeat; the hatches
    (:func:`phase_hatch`) and line styles still differ.
    """
    from matplotlib.colors import to_rgb

    if n_phases < 0:
        raise ValueError(f"n_phases must be >= 0, got {n_phases}")
    return np.array([to_rgb(_PALETTE[p % len(_PALETTE)]) for p in range(n_phases)]).reshape(n_phases, 3)


def phase_hatch(identity: int) -> str:
    """Hatch pattern of a phase identity (identity 0 is plain)."""
    return _HATCHES[int(identity) % len(_HATCHES)]


def _linestyle(identity: int) -> Any:
    return _LINESTYLES[int(identity) % len(_LINESTYLES)]


def _color(identity: int) -> np.ndarray:
    return phase_colors(int(identity) + 1)[int(identity)]


def _luminance(rgb: np.ndarray) -> float:
    return float(np.dot(rgb, (0.299, 0.587, 0.114)))


def _phase_name(edge: EdgeResult, p: int) -> str:
    return edge.phase_names[p] if p < len(edge.phase_names) else f"phase {p}"


# ---------------------------------------------------------------------------------------------
# phase identities across the edges of a run
# ---------------------------------------------------------------------------------------------


def _overlap_mapping(reference: EdgeResult, other: EdgeResult) -> np.ndarray:
    """Reference phase of each phase of ``other`` by pixel overlap (``-1``: unmatched)."""
    from txm_live.compare import match_phases

    mapping, _ = match_phases(reference.labels, other.labels)
    return np.asarray(mapping, dtype=int).reshape(-1)


def _same_element(a: EdgeResult, b: EdgeResult) -> bool:
    return not a.element or not b.element or a.element == b.element


def phase_identities(
    edges: Mapping[str, EdgeResult],
    previews: Mapping[str, EdgeResult] | None = None,
    comparisons: Sequence[Any] = (),
) -> dict[str, np.ndarray]:
    """Colour identity of every phase of every edge (and preview) of a run.

    Parameters
    ----------
    edges : mapping of str to EdgeResult
        Edge name -> result, in acquisition order (``RunResult`` edges).
    previews : mapping of str to EdgeResult, optional
        Edge name -> streaming preview of that edge.
    comparisons : sequence of EdgePairComparison, optional
        ``RunResult.comparisons``: a comparison of the first edge (``reference``) with a later
        one (``other``) gives the matching through its ``mapping``; without one the phases are
        matched here by pixel overlap, the same rule.

    Returns
    -------
    dict of str to ndarray of int
        ``ids[name][p]`` is the identity of phase ``p`` of edge ``name``; previews are keyed
        ``"<edge> preview"``. The first edge's phases are identities ``0..n-1``; a phase of a
        later edge of the same element (same detector frame) takes the identity of the
        first-edge phase it overlaps (Hungarian assignment on pixel counts), an unmatched phase
        (or an edge of another element) a new identity. A preview phase takes the identity of
        the exact phase of its edge it is matched to by the same rule; identities never repeat
        within one map.
    """
    ids: dict[str, np.ndarray] = {}
    names = list(edges)
    next_id = 0
    reference = edges[names[0]] if names else None
    for name in names:
        e = edges[name]
        if (e is reference or reference is None or not _same_element(reference, e)
                or e.labels.shape != reference.labels.shape):
            mapping = np.full(e.n_phases, -1, dtype=int)
            base = None
        else:
            given = next((c for c in comparisons if getattr(c, "reference", None) == names[0]
                          and getattr(c, "other", None) == name), None)
            mapping = (np.asarray(given.mapping, dtype=int).reshape(-1) if given is not None and len(given.mapping)
                       else _overlap_mapping(reference, e))
            base = ids[names[0]]
        out = np.empty(e.n_phases, dtype=int)
        for j in range(e.n_phases):
            m = int(mapping[j]) if j < mapping.size else -1
            if base is not None and 0 <= m < base.size:
                out[j] = base[m]
            else:
                out[j] = next_id
                next_id += 1
        ids[name] = out
    for name, pv in (previews or {}).items():
        exact = edges.get(name)
        mapping = (_overlap_mapping(exact, pv) if exact is not None and exact.labels.shape == pv.labels.shape
                   else np.full(pv.n_phases, -1, dtype=int))
        out = np.empty(pv.n_phases, dtype=int)
        for j in range(pv.n_phases):
            m = int(mapping[j]) if j < mapping.size else -1
            if 0 <= m < ids[name].size:
                out[j] = ids[name][m]
            else:
                out[j] = next_id
                next_id += 1
        ids[f"{name} preview"] = out
    return ids


def _default_ids(edge: EdgeResult, ids: Sequence[int] | np.ndarray | None) -> np.ndarray:
    if ids is None:
        return np.arange(edge.n_phases)
    out = np.asarray(ids, dtype=int).reshape(-1)
    if out.size != edge.n_phases:
        raise ValueError(f"ids must have one identity per phase of {edge.edge} ({edge.n_phases}), got {out.size}")
    return out


# ---------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------


def _no_data(edge: EdgeResult) -> np.ndarray:
    """Unlabelled pixels without data: their edge-step SNR is not finite (no spectrum after
    registration, cropping or flat/dark correction)."""
    labels = np.asarray(edge.labels)
    snr = np.asarray(edge.snr)
    if snr.shape != labels.shape:
        return np.zeros(labels.shape, dtype=bool)
    return ~np.isfinite(snr) & (labels < 0)


def _label_rgb(labels: np.ndarray, ids: np.ndarray, brightness: np.ndarray | None = None,
               no_data: np.ndarray | None = None) -> np.ndarray:
    """RGB image of a label map coloured by identity; masked pixels (-1) white, pixels without
    data (``no_data``, unlabelled) grey.

    ``brightness`` (0..1 per pixel) blends each colour towards white, so dim pixels fade into
    the white background like masked ones and every map keeps the same colours.
    """
    colors = phase_colors(int(ids.max()) + 1) if ids.size else np.zeros((0, 3))
    rgb = np.empty(labels.shape + (3,), dtype=float)
    rgb[...] = _MASKED_RGB
    ok = (labels >= 0) & (labels < ids.size)
    rgb[ok] = colors[ids[labels[ok]]]
    if brightness is not None:
        b = np.clip(np.asarray(brightness, dtype=float), 0.0, 1.0)[ok, None]
        rgb[ok] = rgb[ok] * b + (1.0 - b) * np.asarray(_MASKED_RGB)
    if no_data is not None:
        rgb[no_data & ~ok] = _NO_DATA_RGB
    return rgb


def _no_data_handle(n: int) -> Any:
    """Legend entry of the grey no-data pixels."""
    from matplotlib.patches import Patch

    return Patch(facecolor=_NO_DATA_RGB, edgecolor="black", label=f"no data ({n:,} px)")


def _hatch_phases(ax: Axes, labels: np.ndarray, ids: np.ndarray) -> None:
    """Overlay each phase region with its identity's hatch (greyscale prints stay readable)."""
    for p in range(ids.size):
        hatch = phase_hatch(ids[p])
        region = labels == p
        if not hatch or not np.any(region):
            continue
        colour = "white" if _luminance(_color(ids[p])) < 0.4 else "0.1"
        cs = ax.contourf(region.astype(float), levels=[0.5, 1.5], colors="none", hatches=[hatch])
        cs.set_edgecolor(colour)
        cs.set_linewidth(0)


def _nice_length(max_um: float) -> float:
    """Largest 1-2-5 length not above ``max_um``."""
    if max_um <= 0:
        return 0.0
    exponent = np.floor(np.log10(max_um))
    for mantissa in (5.0, 2.0, 1.0):
        value = mantissa * 10.0**exponent
        if value <= max_um:
            return float(value)
    return float(10.0**exponent)


def _valid_pixel_size(pixel_size_nm: float | None) -> bool:
    return pixel_size_nm is not None and bool(np.isfinite(pixel_size_nm)) and pixel_size_nm > 0


def _decorate_map(ax: Axes, shape: tuple[int, ...], pixel_size_nm: float | None) -> None:
    """Scale bar in um when the pixel size is known, pixel axes otherwise."""
    if not _valid_pixel_size(pixel_size_nm):
        # pixel axes; the x axis on top keeps the space under the map free for the legend
        ax.xaxis.tick_top()
        ax.xaxis.set_label_position("top")
        ax.set_xlabel("x (pixel)")
        ax.set_ylabel("y (pixel)")
        return
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    assert pixel_size_nm is not None
    width_um = shape[1] * pixel_size_nm / 1000.0
    length_um = _nice_length(width_um / 4.0)
    length_px = length_um * 1000.0 / pixel_size_nm
    label = f"{length_um:g} \u00b5m"
    bar = AnchoredSizeBar(
        ax.transData, length_px, label, "lower right", pad=0.4, color="black", frameon=True,
        size_vertical=max(shape[0] / 80.0, 1.0), label_top=True,
    )
    bar.patch.set_alpha(0.8)
    bar.set_gid("scale bar")
    ax.add_artist(bar)
    ax.set_xticks([])
    ax.set_yticks([])


def _phase_handles(edge: EdgeResult, ids: np.ndarray, *, with_counts: bool = True, masked: bool = True) -> list[Any]:
    """Legend entries: every phase, then "masked" and, when the map has any, "no data"."""
    from matplotlib.patches import Patch

    handles = []
    for p in sorted(range(edge.n_phases), key=lambda q: int(ids[q])):  # legend in identity order
        text = f"{ids[p]}: {_phase_name(edge, p)}"
        if with_counts and p < len(edge.counts):
            text += f" ({int(edge.counts[p]):,} px)"
        handles.append(Patch(facecolor=_color(ids[p]), edgecolor="black", hatch=phase_hatch(ids[p]), label=text))
    if masked:
        handles.append(Patch(facecolor=_MASKED_RGB, edgecolor="black", label="masked"))
        n_no_data = int(np.count_nonzero(_no_data(edge)))
        if n_no_data:
            handles.append(_no_data_handle(n_no_data))
    return handles


def _legend_below(ax: Axes, handles: list[Any], *, ncol: int = 1) -> None:
    """Legend under the axes (outside the data), kept in the canvas by the constrained layout."""
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.03), fontsize="small",
              framealpha=0.9, ncol=ncol, borderaxespad=0.0)


def _check_edge(edge: EdgeResult, name: str) -> None:
    if not isinstance(edge, EdgeResult):
        raise ValueError(f"{name} must be an EdgeResult, got {type(edge).__name__}")


def _edge_list(edges: Sequence[EdgeResult | None]) -> list[EdgeResult]:
    out = [e for e in edges if e is not None]
    if not out:
        raise ValueError("edges must hold at least one EdgeResult")
    for i, e in enumerate(out):
        _check_edge(e, f"edges[{i}]")
    return out


def _ids_list(edges: list[EdgeResult], ids: Sequence[Any] | None) -> list[np.ndarray]:
    if ids is None:
        return [np.arange(e.n_phases) for e in edges]
    if len(ids) != len(edges):
        raise ValueError(f"ids must hold one identity array per edge ({len(edges)}), got {len(ids)}")
    return [_default_ids(e, i) for e, i in zip(edges, ids)]


# ---------------------------------------------------------------------------------------------
# individual figures
# ---------------------------------------------------------------------------------------------


def plot_phase_maps(
    edges: Sequence[EdgeResult],
    path: str | os.PathLike[str],
    *,
    pixel_size_nm: float | None = None,
    title: str | None = None,
    ids: Sequence[Sequence[int] | np.ndarray] | None = None,
) -> Path:
    """Phase maps of one or more edges side by side (Duan et al. Fig. 3a-f).

    Parameters
    ----------
    edges : sequence of EdgeResult
        Usually every edge of a run. Each map uses its own phase names.
    path : path-like
        PNG file to write.
    pixel_size_nm : float, optional
        Pixel size in nm; draws a micrometre scale bar. Without it the axes are in pixels.
    title : str, optional
        Figure title.
    ids : sequence of int arrays, optional
        Colour identity of each phase of each edge (:func:`phase_identities`); default: the
        phase index.

    Returns
    -------
    Path
        The PNG written.
    """
    edges = _edge_list(edges)
    idl = _ids_list(edges, ids)
    h, w = edges[0].labels.shape
    panel_w = 4.6
    n_rows = max(e.n_phases for e in edges) + 2  # legend entries, one per row (width stays the panel's)
    panel_h = max(3.0, min(6.0, panel_w * h / max(w, 1))) + 1.1 + 0.3 * n_rows
    fig = _new_figure(panel_w * len(edges), panel_h)
    axes = fig.subplots(1, len(edges), squeeze=False)[0]
    for ax, e, i in zip(axes, edges, idl):
        no_data = _no_data(e)
        ax.imshow(_label_rgb(e.labels, i, no_data=no_data), interpolation="nearest")
        _hatch_phases(ax, e.labels, i)
        n_masked = int(np.count_nonzero(e.labels < 0)) - int(np.count_nonzero(no_data))
        ax.set_title(f"{e.element + ' ' if e.element else ''}{e.edge} phases (E0 = {e.e0:.1f} eV)\n"
                     f"{e.n_phases} phases, {n_masked:,} px masked", fontsize="medium")
        _decorate_map(ax, e.labels.shape, pixel_size_nm)
        _legend_below(ax, _phase_handles(e, i))
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _relative_resample(edge: EdgeResult, rel_grid: np.ndarray) -> np.ndarray:
    rel = np.asarray(edge.energies, dtype=float) - edge.e0
    return np.stack([np.interp(rel_grid, rel, m) for m in np.asarray(edge.mean_spectra, dtype=float)]) \
        if edge.n_phases else np.zeros((0, rel_grid.size))


def l2_to_l3_mapping(l3: EdgeResult, l2: EdgeResult, comparison: Any = None) -> np.ndarray:
    """Index of the matching phase of ``l3`` for every phase of ``l2`` (``-1`` when unmatched).

    Works for any two edges of one element (the names follow the Nd magnet). Uses
    ``comparison.mapping`` from :func:`txm_live.phases.compare_edges` when given (a dict or a
    sequence indexed by ``l2`` phase). Otherwise the phases are matched by their mean spectra
    on the energy grid relative to each edge's E0 (Hungarian assignment on the RMS
    difference), which is what a scientist does by eye: the L2 white line repeats the L3 one.
    """
    _check_edge(l3, "l3")
    _check_edge(l2, "l2")
    mapping = getattr(comparison, "mapping", None) if comparison is not None else None
    if mapping is not None:
        out = np.full(l2.n_phases, -1, dtype=int)
        items = mapping.items() if isinstance(mapping, dict) else enumerate(np.asarray(mapping).tolist())
        for k, v in items:
            if 0 <= int(k) < l2.n_phases and v is not None and int(v) >= 0:
                out[int(k)] = int(v)
        return out
    from scipy.optimize import linear_sum_assignment

    out = np.full(l2.n_phases, -1, dtype=int)
    if l3.n_phases == 0 or l2.n_phases == 0:
        return out
    rel3 = np.asarray(l3.energies, dtype=float) - l3.e0
    rel2 = np.asarray(l2.energies, dtype=float) - l2.e0
    lo, hi = max(rel3.min(), rel2.min(), -30.0), min(rel3.max(), rel2.max(), 60.0)
    if hi <= lo:
        lo, hi = max(rel3.min(), rel2.min()), min(rel3.max(), rel2.max())
    grid = np.linspace(lo, hi, 200)
    a = _relative_resample(l3, grid)
    b = _relative_resample(l2, grid)
    cost = np.sqrt(((b[:, None, :] - a[None, :, :]) ** 2).mean(axis=-1))
    rows, cols = linear_sum_assignment(cost)
    out[rows] = cols
    return out


def plot_difference_histogram(
    l3: EdgeResult,
    l2: EdgeResult,
    path: str | os.PathLike[str],
    *,
    comparison: Any = None,
    ids: Sequence[int] | np.ndarray | None = None,
) -> Path:
    """Per-pixel phase difference between two edges (Duan et al. Fig. 3g) and their confusion matrix.

    ``l3`` is the reference edge and ``l2`` the edge compared with it (any two edges of one
    element). The phases of ``l2`` are first renamed to the reference phase they match
    (:func:`l2_to_l3_mapping`); the left panel counts, over pixels unmasked at both edges, the
    difference of phase indices, one bar per reference phase (hatched), on a logarithmic
    scale so that disagreements of a few pixels stay visible next to the agreeing majority.
    The right panel is the confusion matrix over the phases that exist: rows the reference
    phases, columns the phases of ``l2`` (labelled with the reference phase they match), each
    row the fraction of that reference phase's pixels.

    ``ids`` are the colour identities of the reference phases (default: their indices).
    """
    _check_edge(l3, "l3")
    _check_edge(l2, "l2")
    if l3.labels.shape != l2.labels.shape:
        raise ValueError(f"l2.labels shape {l2.labels.shape} differs from l3.labels shape {l3.labels.shape}")
    ref_ids = _default_ids(l3, ids)
    a_name, b_name = l3.edge, l2.edge
    mapping = l2_to_l3_mapping(l3, l2, comparison)
    lab3 = l3.labels.ravel()
    lab2 = l2.labels.ravel()
    both = (lab3 >= 0) & (lab2 >= 0) & (lab3 < l3.n_phases) & (lab2 < l2.n_phases)
    mapped2 = np.full_like(lab2, -1)
    if mapping.size:
        mapped2[both] = mapping[lab2[both]]
    matched = both & (mapped2 >= 0)
    diff = mapped2[matched] - lab3[matched]
    n = max(l3.n_phases, 1)
    bins = np.arange(-(n - 1), n)
    agreement = float(np.mean(diff == 0)) if diff.size else float("nan")
    given = getattr(comparison, "agreement", None) if comparison is not None else None
    if given is not None:
        agreement = float(given)

    fig = _new_figure(11.0, 4.6 + 0.22 * l3.n_phases)
    ax, axc = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.5, 1.0]})
    width = 0.8 / max(l3.n_phases, 1)
    top = 1.0
    for p in range(l3.n_phases):
        sel = lab3[matched] == p
        counts = np.array([np.count_nonzero(diff[sel] == d) for d in bins], dtype=float)
        top = max(top, float(counts.max()) if counts.size else 1.0)
        x = bins - 0.4 + width * (p + 0.5)
        ax.bar(x, counts, width=width, color=_color(ref_ids[p]), edgecolor="black", linewidth=0.6,
               hatch=phase_hatch(ref_ids[p]), label=f"{ref_ids[p]}: {_phase_name(l3, p)} ({a_name})")
    ax.set_yscale("log")
    ax.set_ylim(0.7, top * 2.0)
    ax.set_xticks(bins)
    ax.set_xlim(bins[0] - 0.6, bins[-1] + 0.6)
    ax.set_xlabel(f"phase index difference, {b_name} \u2212 {a_name} (after matching phases)")
    ax.set_ylabel("pixels (log scale)")
    ax.set_title(f"{b_name} vs {a_name}: {agreement:.1%} of {int(matched.sum()):,} px agree")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=min(3, max(l3.n_phases, 1)),
               fontsize="small")

    conf = np.zeros((l3.n_phases, l2.n_phases))
    for p in range(l3.n_phases):
        sel = lab3[both] == p
        if np.any(sel):
            conf[p] = np.bincount(lab2[both][sel], minlength=l2.n_phases)[: l2.n_phases] / sel.sum()
    im = axc.imshow(conf, cmap="cividis", vmin=0, vmax=1, aspect="auto")
    for (i, j), v in np.ndenumerate(conf):
        axc.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black")
    axc.set_xlabel(f"{b_name} phase (\u2192 matched {a_name} phase)")
    axc.set_ylabel(f"{a_name} phase")
    axc.set_xticks(range(l2.n_phases), [f"{j} \u2192 {mapping[j]}" if mapping[j] >= 0 else f"{j} (unmatched)"
                                        for j in range(l2.n_phases)])
    axc.set_yticks(range(l3.n_phases), [str(p) for p in range(l3.n_phases)])
    axc.set_title(f"fraction of each {a_name} phase")
    fig.colorbar(im, ax=axc, shrink=0.8, label="fraction")
    return _save(fig, path)


#: Near-edge band of the spectra figure at hard X-rays (eV relative to e0), scaled with the edge.
_NEAR_EDGE: tuple[float, float] = (-15.0, 35.0)


def near_edge_band(edge: EdgeResult, inset: tuple[float, float] | None = None) -> tuple[float, float]:
    """Absolute energies (eV) of the near-edge band of the spectra figure for ``edge``.

    ``inset`` (eV relative to e0) when given; else -15 .. +35 eV scaled with the edge like the
    windows (:func:`txm_live.edges.scaled_range`; unchanged at and above 6 keV) and clipped to
    the result's energies.
    """
    if inset is not None:
        return edge.e0 + float(inset[0]), edge.e0 + float(inset[1])
    from txm_live.edges import scaled_range

    band = scaled_range(_NEAR_EDGE, edge.e0)
    lo, hi = edge.e0 + band[0], edge.e0 + band[1]
    energies = np.asarray(edge.energies, dtype=float)
    if energies.size:
        lo, hi = max(lo, float(energies.min())), min(hi, float(energies.max()))
    return lo, hi


def plot_phase_spectra(
    edges: Sequence[EdgeResult],
    path: str | os.PathLike[str],
    *,
    inset: tuple[float, float] | None = None,
    ids: Sequence[Sequence[int] | np.ndarray] | None = None,
) -> Path:
    """Normalized mean spectrum of each phase with +/- 1 std bands (Duan et al. Fig. 3h).

    One row per edge: the whole window on the left, the near-edge region ``e0 + inset`` (eV),
    where the white lines of the phases differ, magnified on the right; the legend beside it.
    ``inset=None`` (default): -15 .. +35 eV at hard X-rays, scaled with the edge like the windows
    and feature ranges (:func:`txm_live.edges.scaled_range`: -1.8 .. +4.1 eV at Fe L3), and kept
    inside the spectrum's energies.
    """
    edges = _edge_list(edges)
    idl = _ids_list(edges, ids)
    fig = _new_figure(12.5, 3.9 * len(edges))
    axes = fig.subplots(len(edges), 2, squeeze=False, gridspec_kw={"width_ratios": [1.5, 1.0]})
    for (ax, axz), e, i in zip(axes, edges, idl):
        energies = np.asarray(e.energies, dtype=float)
        lo, hi = near_edge_band(e, inset)
        for p in range(e.n_phases):
            mean = np.asarray(e.mean_spectra[p], dtype=float)
            spread = np.asarray(e.spread[p], dtype=float)
            c, ls = _color(i[p]), _linestyle(i[p])
            for a in (ax, axz):
                a.fill_between(energies, mean - spread, mean + spread, color=c, alpha=0.18, linewidth=0)
                a.plot(energies, mean, color=c, linestyle=ls, linewidth=1.6,
                       label=f"{i[p]}: {_phase_name(e, p)} ({int(e.counts[p]):,} px)" if a is axz else None)
        for a in (ax, axz):
            a.axvline(e.e0, color="0.5", linewidth=0.8, linestyle=":")
            a.set_xlabel("energy (eV)")
        ax.set_ylabel("normalized absorption")
        label = f"{e.element + ' ' if e.element else ''}{e.edge}"
        ax.set_title(f"{label} phase mean spectra (band: \u00b11 std)")
        ax.axvspan(lo, hi, color="0.85", zorder=0, linewidth=0)
        sel = (energies >= lo) & (energies <= hi)
        axz.set_xlim(lo, hi)
        if np.any(sel) and e.n_phases:
            m = np.asarray(e.mean_spectra, dtype=float)[:, sel]
            sd = np.asarray(e.spread, dtype=float)[:, sel]
            top, bot = float(np.max(m + sd)), float(np.min(m - sd))
            pad = 0.05 * (top - bot) if top > bot else 0.1
            axz.set_ylim(bot - pad, top + pad)
        axz.set_title(f"{label} near edge (the grey range at left, magnified)", fontsize="medium")
        if e.n_phases:
            axz.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small", borderaxespad=0.0)
    return _save(fig, path)


def plot_exafs(
    exafs: Sequence[ExafsResult],
    path: str | os.PathLike[str],
    *,
    phase_names: Sequence[str] | None = None,
    n_phases: int | None = None,
    ids: Sequence[int] | np.ndarray | None = None,
    edge: str = "",
) -> Path:
    """k-weighted chi(k) and |chi(R)| of each phase mean spectrum (Duan et al. Fig. 4).

    chi(k) is drawn only over the k range it was extracted on (the measured range, no
    extrapolation) and the Fourier-transform window (``ExafsResult.k_window`` with its tapers
    of ``dk``) is drawn under it, so what enters |chi(R)| is visible. The apparent
    first-shell distance (not phase corrected) is marked in R space.

    ``ids`` gives the colour identity of each phase index (default: the index itself).
    """
    exafs = list(exafs)
    if not exafs:
        raise ValueError("exafs must hold at least one ExafsResult")
    n = n_phases if n_phases is not None else max(x.phase for x in exafs) + 1
    ident = np.arange(max(n, max(x.phase for x in exafs) + 1)) if ids is None else np.asarray(ids, dtype=int)
    fig = _new_figure(11.0, 4.4 + 0.22 * len(exafs))
    axk, axr = fig.subplots(1, 2)
    kw = exafs[0].kweight
    k_lo, k_hi, y_abs = np.inf, -np.inf, 0.0
    for x in exafs:
        p = x.phase
        name = phase_names[p] if phase_names is not None and p < len(phase_names) else f"phase {p}"
        q = int(ident[p]) if p < ident.size else p
        c, ls = _color(q), _linestyle(q)
        k = np.asarray(x.k, dtype=float)
        chi = np.asarray(x.chi, dtype=float)
        ok = np.isfinite(chi) & np.isfinite(k)
        if not np.any(ok):
            continue
        y = k[ok] ** x.kweight * chi[ok]
        k_lo, k_hi = min(k_lo, float(k[ok].min())), max(k_hi, float(k[ok].max()))
        y_abs = max(y_abs, float(np.max(np.abs(y))))
        axk.plot(k[ok], y, color=c, linestyle=ls, label=f"{q}: {name}, R1 = {x.first_shell_r:.2f} \u00c5")
        axr.plot(np.asarray(x.r), np.asarray(x.chir_mag), color=c, linestyle=ls)
        if np.isfinite(x.first_shell_r):
            axr.axvline(x.first_shell_r, color=c, linestyle=ls, linewidth=0.8, alpha=0.8)
    if np.isfinite(k_lo):
        axk.set_xlim(k_lo, k_hi)
    win = _ft_window(exafs[0])
    if win is not None:
        kmin, kmax, dk = win
        kk = np.linspace(max(k_lo, kmin - dk / 2), min(k_hi, kmax + dk / 2), 400) if np.isfinite(k_lo) else np.zeros(0)
        from txm_live.exafs import ft_window

        w = ft_window(kk, kmin=kmin, kmax=kmax, dk=dk)
        scale = y_abs if y_abs > 0 else 1.0
        axk.fill_between(kk, -scale * w, scale * w, color="0.88", zorder=0, linewidth=0,
                         label=f"FT window, k = {kmin:g}\u2013{kmax:g} 1/\u00c5 (dk {dk:g})")
    axk.set_xlabel("k (1/\u00c5)")
    axk.set_ylabel(f"k$^{kw}$ \u03c7(k) (\u00c5$^{{-{kw}}}$)")
    axk.set_title(f"{edge + ' ' if edge else ''}k$^{kw}$-weighted EXAFS per phase")
    axk.axhline(0, color="0.6", linewidth=0.6)
    axr.set_xlabel("R (\u00c5, not phase corrected)")
    axr.set_ylabel(f"|\u03c7(R)| (\u00c5$^{{-{kw + 1}}}$)")
    axr.set_title("Fourier transform magnitude")
    axr.set_xlim(0, min(6.0, float(np.max(exafs[0].r)) if np.size(exafs[0].r) else 6.0))
    handles, labels = axk.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize="small")
    return _save(fig, path)


def _ft_window(x: ExafsResult) -> tuple[float, float, float] | None:
    """(kmin, kmax, dk) of the Fourier-transform window of an EXAFS result, when recorded."""
    kmin, kmax = (float(v) for v in getattr(x, "k_window", (np.nan, np.nan)))
    dk = float(getattr(x, "window_dk", np.nan))
    if not (np.isfinite(kmin) and np.isfinite(kmax) and kmax > kmin):
        return None
    return kmin, kmax, dk if np.isfinite(dk) else 0.0


def plot_composite(
    edge: EdgeResult,
    path: str | os.PathLike[str],
    *,
    pixel_size_nm: float | None = None,
    ids: Sequence[int] | np.ndarray | None = None,
) -> Path:
    """Composite phase map: colour from the phase, intensity from the edge-step SNR.

    The colours are the phase identities' colours of every other figure; a pixel with a weak
    edge step fades towards the white background (brightness = SNR / its 99th percentile over
    the clustered pixels, from 25 % to full colour), so thick, reliable regions stand out.
    The scale under the map gives, per phase, the colour at each SNR. Masked pixels are white;
    pixels without data (no finite SNR) are grey, with a row of their own under the scale.
    """
    _check_edge(edge, "edge")
    ident = _default_ids(edge, ids)
    labels = edge.labels
    no_data = _no_data(edge)
    n_no_data = int(np.count_nonzero(no_data))
    snr = np.nan_to_num(np.asarray(edge.snr, dtype=float), nan=0.0)
    ok = labels >= 0
    scale = float(np.percentile(snr[ok], 99)) if np.any(ok) else 1.0
    scale = scale if scale > 0 else 1.0
    bright = 0.25 + 0.75 * np.clip(snr / scale, 0.0, 1.0)
    h, w = labels.shape
    map_h = max(3.0, min(6.5, 5.0 * h / max(w, 1)))
    n_rows = max(edge.n_phases, 1) + (1 if n_no_data else 0)
    fig = _new_figure(6.2, map_h + 1.3 + 0.3 * n_rows)
    ax, axs = fig.subplots(2, 1, gridspec_kw={"height_ratios": [map_h, 0.3 * n_rows + 0.2]})
    ax.imshow(_label_rgb(labels, ident, bright, no_data=no_data), interpolation="nearest")
    label = f"{edge.element + ' ' if edge.element else ''}{edge.edge}"
    ax.set_title(f"{label} composite: colour = phase, intensity = edge-step SNR", fontsize="medium")
    _decorate_map(ax, labels.shape, pixel_size_nm)
    # brightness scale: one row per phase, its colour from faint (SNR 0) to full (SNR >= scale)
    ramp = np.linspace(0.0, scale, 128)
    b = 0.25 + 0.75 * np.clip(ramp / scale, 0.0, 1.0)
    rows = np.stack([_color(ident[p])[None, :] * b[:, None] + (1 - b[:, None]) * np.asarray(_MASKED_RGB)
                     for p in range(edge.n_phases)]) if edge.n_phases else np.ones((1, 128, 3))
    if n_no_data:  # the grey of the pixels without data: a row of its own (its legend entry)
        rows = np.concatenate([rows, np.broadcast_to(np.asarray(_NO_DATA_RGB), (1, 128, 3))])
    axs.imshow(rows, aspect="auto", extent=(0.0, scale, rows.shape[0] - 0.5, -0.5), interpolation="nearest")
    axs.set_yticks([])
    for p in range(edge.n_phases):  # names on the faint end of each row, so the map keeps the full width
        axs.text(0.01 * scale, p, f"{ident[p]}: {_phase_name(edge, p)}", va="center", ha="left", fontsize="small")
    if n_no_data:
        axs.text(0.01 * scale, rows.shape[0] - 1, f"no data ({n_no_data:,} px)", va="center", ha="left",
                 fontsize="small")
    axs.set_xlabel("edge-step SNR (brightness scale)")
    return _save(fig, path)


def plot_snr(
    edge: EdgeResult,
    path: str | os.PathLike[str],
    *,
    pixel_size_nm: float | None = None,
) -> Path:
    """Edge-step SNR map with the SNR threshold, next to the mask of pixels that were clustered.

    The threshold (``snr_threshold`` of a :class:`~txm_live.phases.PhaseAnalysis`) is drawn as a
    contour on the map and as a line on the colour bar; a result that does not record it (read
    back from an old file) says so in the title. Pixels without data (SNR not finite) are grey in
    both panels, with a legend entry under the map.
    """
    _check_edge(edge, "edge")
    snr = np.asarray(edge.snr, dtype=float)
    h, w = snr.shape
    threshold = float(getattr(edge, "snr_threshold", np.nan))
    fig = _new_figure(10.0, max(3.5, min(6.5, 5.0 * h / max(w, 1))) + 1.2)
    ax, axm = fig.subplots(1, 2)
    finite = np.isfinite(snr)
    n_no_data = int(np.count_nonzero(~finite))
    vmax = float(np.percentile(snr[finite], 99.5)) if np.any(finite) else 1.0
    vmax = max(vmax, threshold * 1.2 if np.isfinite(threshold) else 0.0, 1e-6)
    import matplotlib as mpl

    cmap = mpl.colormaps["viridis"].with_extremes(bad=_NO_DATA_RGB)
    im = ax.imshow(np.ma.masked_invalid(snr), cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
    cbar = fig.colorbar(im, ax=ax, shrink=0.85, label="edge-step SNR")
    median = float(np.median(snr[edge.mask])) if np.any(edge.mask) else float("nan")
    label = f"{edge.element + ' ' if edge.element else ''}{edge.edge}"
    if np.isfinite(threshold):
        ax.contour(np.where(finite, snr, 0.0), levels=[threshold], colors="white", linewidths=0.8)
        cbar.ax.axhline(threshold, color="white", linewidth=2.0)
        cbar.ax.axhline(threshold, color="black", linewidth=0.8, linestyle="--")
        ax.set_title(f"{label} edge-step SNR; threshold {threshold:.1f} (white contour)\n"
                     f"median in mask {median:.1f}", fontsize="medium")
    else:
        ax.set_title(f"{label} edge-step SNR (threshold not recorded)\nmedian in mask {median:.1f}",
                     fontsize="medium")
    _decorate_map(ax, snr.shape, pixel_size_nm)
    if n_no_data:
        _legend_below(ax, [_no_data_handle(n_no_data)])
    mask_rgb = np.where(np.asarray(edge.mask, dtype=bool)[..., None], 1.0, 0.0) * np.ones(3)
    mask_rgb[~finite & ~np.asarray(edge.mask, dtype=bool)] = _NO_DATA_RGB
    axm.imshow(mask_rgb, interpolation="nearest")
    frac = float(np.mean(edge.mask)) if edge.mask.size else 0.0
    axm.set_title(f"clustered pixels (white): {int(np.count_nonzero(edge.mask)):,} ({frac:.1%})"
                  + ("\nno data: grey" if n_no_data else ""), fontsize="medium")
    _decorate_map(axm, snr.shape, pixel_size_nm)
    return _save(fig, path)


def plot_phase_areas(
    scan_index: Sequence[float],
    areas_um2: np.ndarray,
    phase_names: Sequence[str],
    path: str | os.PathLike[str],
    *,
    phase_ids: Sequence[int] | None = None,
) -> Path:
    """Area of every tracked phase (um^2) versus scan index (see :mod:`txm_live.series`).

    ``areas_um2`` has shape ``(n_scans, n_phases)``; NaN where a phase was absent. Each phase
    is drawn in the colour of its tracked id.
    """
    areas = np.asarray(areas_um2, dtype=float)
    x = np.asarray(scan_index, dtype=float)
    if areas.ndim != 2 or areas.shape[0] != x.size:
        raise ValueError(f"areas_um2 must have shape (n_scans={x.size}, n_phases), got {areas.shape}")
    if len(phase_names) != areas.shape[1]:
        raise ValueError(f"phase_names must have {areas.shape[1]} entries, got {len(phase_names)}")
    ids = list(phase_ids) if phase_ids is not None else list(range(areas.shape[1]))
    markers = ("o", "s", "^", "D", "v", "P")
    fig = _new_figure(6.5, 4.4 + 0.22 * areas.shape[1])
    ax = fig.subplots()
    for j in range(areas.shape[1]):
        ax.plot(x, areas[:, j], color=_color(ids[j]), linestyle=_linestyle(ids[j]),
                marker=markers[j % len(markers)], label=f"{ids[j]}: {phase_names[j]}")
    ax.set_xlabel("scan index")
    ax.set_ylabel("phase area (\u00b5m$^2$)")
    ax.set_title("phase areas across the series")
    ax.set_xticks(x)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize="small")
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------


def save_report(
    result: RunResult,
    directory: str | os.PathLike[str],
    *,
    pixel_size_nm: float | None = None,
) -> list[Path]:
    """Write every figure that ``result`` supports as PNG files in ``directory``.

    Parameters
    ----------
    result : RunResult
        Output of the live callback, a replay or a remote analysis.
    directory : path-like
        Created if needed. Files, ``<edge>`` in lower case: ``phase_maps.png`` (every edge side
        by side), ``preview_<edge>.png`` (each streaming preview), ``composite_<edge>.png`` and
        ``snr_<edge>.png`` (each edge), ``spectra.png`` (every edge), ``<other>_<reference>_difference.png``
        (each comparison of two edges of one element in ``result.comparisons``), ``exafs_<edge>.png``
        (each edge with EXAFS).
    pixel_size_nm : float, optional
        Pixel size for the micrometre scale bars. Default: ``result.pixel_size_nm`` (the start
        document's, so replays and remote analyses keep their scale bars).
    Returns
    -------
    list of Path
        The files written, in the order above. Missing parts are skipped.
    """
    if not isinstance(result, RunResult):
        raise ValueError(f"result must be a RunResult, got {type(result).__name__}")
    if pixel_size_nm is None:
        pixel_size_nm = result.pixel_size_nm
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    edges = dict(result.edges)
    ids = phase_identities(edges, result.previews, result.comparisons)
    names = list(edges)
    if edges:
        written.append(plot_phase_maps(list(edges.values()), out / "phase_maps.png", pixel_size_nm=pixel_size_nm,
                                       title=f"run {result.run_uid[:8]}", ids=[ids[n] for n in names]))
    for name, pv in result.previews.items():
        written.append(plot_phase_maps([pv], out / f"preview_{name.lower()}.png", pixel_size_nm=pixel_size_nm,
                                       title="streaming preview (river), before the exact analysis",
                                       ids=[ids[f"{name} preview"]]))
    for name, e in edges.items():
        written.append(plot_composite(e, out / f"composite_{name.lower()}.png", pixel_size_nm=pixel_size_nm,
                                      ids=ids[name]))
    for name, e in edges.items():
        written.append(plot_snr(e, out / f"snr_{name.lower()}.png", pixel_size_nm=pixel_size_nm))
    if edges:
        written.append(plot_phase_spectra(list(edges.values()), out / "spectra.png", ids=[ids[n] for n in names]))
    for c in result.comparisons:
        ref, other = edges.get(c.reference), edges.get(c.other)
        if ref is None or other is None or ref.labels.shape != other.labels.shape:
            continue
        written.append(plot_difference_histogram(
            ref, other, out / f"{c.other.lower()}_{c.reference.lower()}_difference.png",
            comparison=c, ids=ids[c.reference] if c.reference == names[0] else None))
    for name, items in result.exafs.items():
        if not items:
            continue
        e = edges.get(name)
        written.append(plot_exafs(items, out / f"exafs_{name.lower()}.png",
                                  phase_names=e.phase_names if e is not None else None,
                                  n_phases=e.n_phases if e is not None else None,
                                  ids=ids.get(name), edge=name))
    return written


# ---------------------------------------------------------------------------------------------
# live window
# ---------------------------------------------------------------------------------------------


def display_available() -> bool:
    """True when a graphical display is reachable (X11 or Wayland on Linux, always elsewhere)."""
    import sys

    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


@dataclass(frozen=True)
class _LiveState:
    text: str | None = None
    edge: EdgeResult | None = None
    result: RunResult | None = None


class LivePlot:
    """A figure that follows the scan: progress text, then the preview and exact phase maps.

    Updates may come from any thread (the live callback's worker calls :meth:`progress`);
    drawing happens only in the thread that calls :meth:`pump` or :meth:`block`. Pass the
    object as the RunEngine's ``during_task`` (it implements ``block(blocking_event)``) so the
    main thread keeps the window responsive while the plan runs.

    Parameters
    ----------
    window : bool, optional
        Open an interactive window. Default: only when :func:`display_available`. Without a
        window the figure is drawn on an Agg canvas and, if ``snapshot`` is set, saved there at
        every redraw (useful on a headless beamline console or in tests).
    snapshot : path-like, optional
        PNG file refreshed at every redraw.
    pixel_size_nm : float, optional
        For the scale bar.
    """

    def __init__(self, *, window: bool | None = None, snapshot: str | os.PathLike[str] | None = None,
                 pixel_size_nm: float | None = None) -> None:
        self.window = display_available() if window is None else bool(window)
        self.snapshot = Path(snapshot) if snapshot is not None else None
        self.pixel_size_nm = pixel_size_nm
        self._queue: queue.SimpleQueue[_LiveState] = queue.SimpleQueue()
        self._fig: Figure | None = None
        self._text = "waiting for the first frame"
        self._edge: EdgeResult | None = None
        self.n_redraws = 0

    # thread-safe producers -------------------------------------------------------------------
    def progress(self, event: Any) -> None:
        """Record a progress event (anything with a readable ``str``); drawn at the next pump."""
        self._queue.put(_LiveState(text=_describe_event(event)))

    def show_edge(self, edge: EdgeResult) -> None:
        """Show a phase map (preview or exact) at the next pump."""
        self._queue.put(_LiveState(edge=edge))

    def show_result(self, result: RunResult) -> None:
        """Show the final result of a run at the next pump."""
        self._queue.put(_LiveState(result=result))

    # drawing (one thread) --------------------------------------------------------------------
    def _ensure_figure(self) -> Figure:
        if self._fig is None:
            if self.window:
                import matplotlib.pyplot as plt

                self._fig = plt.figure(figsize=(6.0, 5.5))
                plt.show(block=False)
            else:
                self._fig = _new_figure(6.0, 5.5)
        return self._fig

    def pump(self) -> bool:
        """Apply pending updates and redraw; returns True when something changed."""
        changed = False
        result: RunResult | None = None
        while True:
            try:
                state = self._queue.get_nowait()
            except queue.Empty:
                break
            changed = True
            if state.text is not None:
                self._text = state.text
            if state.edge is not None:
                self._edge = state.edge
            if state.result is not None:
                result = state.result
        if result is not None:
            self._edge = next(iter(result.edges.values()), self._edge)
            self._text = f"run {result.run_uid[:8]} done: {self._text}"
        if not changed:
            if self.window:
                self._fig.canvas.flush_events() if self._fig is not None else None
            return False
        fig = self._ensure_figure()
        fig.clear()
        ax = fig.subplots()
        if self._edge is not None:
            ident = np.arange(self._edge.n_phases)
            no_data = _no_data(self._edge)
            ax.imshow(_label_rgb(self._edge.labels, ident, no_data=no_data), interpolation="nearest")
            _decorate_map(ax, self._edge.labels.shape, self.pixel_size_nm)
            _legend_below(ax, _phase_handles(self._edge, ident))
            ax.set_title(f"{self._edge.edge}: {self._edge.n_phases} phases\n{self._text}", fontsize="small")
        else:
            ax.text(0.5, 0.5, self._text, ha="center", va="center", wrap=True)
            ax.set_axis_off()
            ax.set_title("txm-live")
        fig.canvas.draw()
        if self.window:
            fig.canvas.flush_events()
        if self.snapshot is not None:
            _save(fig, self.snapshot)
        self.n_redraws += 1
        return True

    def block(self, blocking_event: threading.Event) -> None:
        """RunEngine ``during_task`` hook: keep drawing until the plan finishes."""
        while not blocking_event.wait(0.2):
            self.pump()
            if self.window:
                import matplotlib.pyplot as plt

                plt.pause(0.05)
        self.pump()

    def close(self) -> None:
        """Close the window (if any)."""
        if self._fig is not None and self.window:
            import matplotlib.pyplot as plt

            plt.close(self._fig)
        self._fig = None


def _describe_event(event: Any) -> str:
    for attrs in (("stage", "message"), ("message",)):
        parts = [str(getattr(event, a)) for a in attrs if getattr(event, a, None)]
        if parts:
            return ": ".join(parts)
    return str(event)
