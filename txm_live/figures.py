"""Figures a scientist reads at a glance, in the spirit of Duan et al., Sci. Rep. 6, 34406 (2016).

Every ``plot_*`` function takes result objects from :mod:`txm_live.results` and writes one PNG;
:func:`save_report` writes all of them for a :class:`~txm_live.results.RunResult`.

Rendering is headless (matplotlib's Agg canvas, no pyplot state) unless a :class:`LivePlot` is
asked to open a window. matplotlib is imported lazily, inside the functions, so ``import
txm_live`` stays light.

Readability
-----------
Phase colours are drawn from ``cividis`` at well separated brightness levels, so the maps stay
readable when printed in greyscale; line plots also use a distinct line style per phase and bar
charts a distinct hatch. Continuous maps (SNR) use ``viridis``. Masked pixels are white.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Sequence
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
    "plot_composite",
    "plot_difference_histogram",
    "plot_exafs",
    "plot_phase_areas",
    "plot_phase_maps",
    "plot_phase_spectra",
    "plot_snr",
    "save_report",
]

#: Line styles and hatches cycled per phase (greyscale-safe on top of the brightness levels).
_LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))
_HATCHES = ("", "//", "xx", "..", "\\\\", "oo")
_MASKED_RGB = (1.0, 1.0, 1.0)
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
    """RGB colours (``(n_phases, 3)``) of the phases, from cividis at distinct brightness levels.

    Up to five phases, phase ``p`` always gets the same colour whatever the number of phases (so
    side-by-side maps match). The levels avoid both ends of the map (pure dark blue reads as black, the bright end as the
    white used for masked pixels), so every phase stays distinguishable in greyscale.
    """
    from matplotlib import colormaps

    if n_phases < 0:
        raise ValueError(f"n_phases must be >= 0, got {n_phases}")
    if n_phases == 0:
        return np.zeros((0, 3))
    # a fixed level per phase index, so phase p has the same colour in every map of a report
    fixed = np.array([0.0, 0.45, 0.82, 0.22, 0.64])
    levels = fixed[:n_phases] if n_phases <= fixed.size else np.linspace(0.0, 0.82, n_phases)
    return np.asarray(colormaps["cividis"](levels))[:, :3]


def _label_rgb(labels: np.ndarray, n_phases: int) -> np.ndarray:
    """RGB image of a label map; masked pixels (-1) white."""
    colors = phase_colors(n_phases)
    rgb = np.empty(labels.shape + (3,), dtype=float)
    rgb[...] = _MASKED_RGB
    ok = (labels >= 0) & (labels < n_phases)
    rgb[ok] = colors[labels[ok]]
    return rgb


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


def _decorate_map(ax: Axes, shape: tuple[int, ...], pixel_size_nm: float | None) -> None:
    """Scale bar in um when the pixel size is known, pixel axes otherwise."""
    if pixel_size_nm is None or not np.isfinite(pixel_size_nm) or pixel_size_nm <= 0:
        ax.set_xlabel("x (pixel)")
        ax.set_ylabel("y (pixel)")
        return
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    width_um = shape[1] * pixel_size_nm / 1000.0
    length_um = _nice_length(width_um / 4.0)
    length_px = length_um * 1000.0 / pixel_size_nm
    label = f"{length_um:g} \u00b5m"
    bar = AnchoredSizeBar(
        ax.transData, length_px, label, "lower right", pad=0.4, color="black", frameon=True,
        size_vertical=max(shape[0] / 80.0, 1.0), label_top=True,
    )
    bar.patch.set_alpha(0.75)
    ax.add_artist(bar)
    ax.set_xticks([])
    ax.set_yticks([])


def _phase_legend(ax: Axes, edge: EdgeResult, *, with_counts: bool = True) -> None:
    from matplotlib.patches import Patch

    colors = phase_colors(edge.n_phases)
    handles = []
    for p in range(edge.n_phases):
        name = edge.phase_names[p] if p < len(edge.phase_names) else f"phase {p}"
        text = f"{p}: {name}"
        if with_counts and p < len(edge.counts):
            text += f" ({int(edge.counts[p]):,} px)"
        handles.append(Patch(facecolor=colors[p], edgecolor="black", hatch=_HATCHES[p % len(_HATCHES)], label=text))
    handles.append(Patch(facecolor=_MASKED_RGB, edgecolor="black", label="masked"))
    # below the map, so it never hides part of the sample
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), fontsize="small",
              framealpha=0.85, ncol=1)


def _check_edge(edge: EdgeResult, name: str) -> None:
    if not isinstance(edge, EdgeResult):
        raise ValueError(f"{name} must be an EdgeResult, got {type(edge).__name__}")


# ---------------------------------------------------------------------------------------------
# individual figures
# ---------------------------------------------------------------------------------------------


def plot_phase_maps(
    edges: Sequence[EdgeResult],
    path: str | os.PathLike[str],
    *,
    pixel_size_nm: float | None = None,
    title: str | None = None,
) -> Path:
    """Phase maps of one or more edges side by side (Duan et al. Fig. 3a-f).

    Parameters
    ----------
    edges : sequence of EdgeResult
        Usually ``(l3, l2)``. Each map uses its own phase numbering and names.
    path : path-like
        PNG file to write.
    pixel_size_nm : float, optional
        Pixel size in nm; draws a micrometre scale bar. Without it the axes are in pixels.
    title : str, optional
        Figure title.

    Returns
    -------
    Path
        The PNG written.
    """
    edges = [e for e in edges if e is not None]
    if not edges:
        raise ValueError("edges must hold at least one EdgeResult")
    for i, e in enumerate(edges):
        _check_edge(e, f"edges[{i}]")
    h, w = edges[0].labels.shape
    panel_w = 4.6
    panel_h = max(3.0, min(6.0, panel_w * h / max(w, 1))) + 1.0 + 0.22 * (max(e.n_phases for e in edges) + 1)
    fig = _new_figure(panel_w * len(edges), panel_h)
    axes = fig.subplots(1, len(edges), squeeze=False)[0]
    for ax, e in zip(axes, edges):
        ax.imshow(_label_rgb(e.labels, e.n_phases), interpolation="nearest")
        n_masked = int(np.count_nonzero(e.labels < 0))
        ax.set_title(f"{e.edge} phases (E0 = {e.e0:.1f} eV)\n{e.n_phases} phases, {n_masked:,} px masked",
                     fontsize="medium")
        _decorate_map(ax, e.labels.shape, pixel_size_nm)
        _phase_legend(ax, e)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _relative_resample(edge: EdgeResult, rel_grid: np.ndarray) -> np.ndarray:
    rel = np.asarray(edge.energies, dtype=float) - edge.e0
    return np.stack([np.interp(rel_grid, rel, m) for m in np.asarray(edge.mean_spectra, dtype=float)]) \
        if edge.n_phases else np.zeros((0, rel_grid.size))


def l2_to_l3_mapping(l3: EdgeResult, l2: EdgeResult, comparison: Any = None) -> np.ndarray:
    """Index of the matching L3 phase for every L2 phase (``-1`` when unmatched).

    Uses ``comparison.mapping`` from :func:`txm_live.phases.compare_edges` when given (a dict or
    a sequence indexed by L2 phase). Otherwise the phases are matched by their mean spectra on
    the energy grid relative to each edge's E0 (Hungarian assignment on the RMS difference),
    which is what a scientist does by eye: the L2 white line repeats the L3 one.
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
) -> Path:
    """Histogram of the per-pixel phase difference L2 - L3 (Duan et al. Fig. 3g).

    L2 phases are first renamed to the L3 phase they match (:func:`l2_to_l3_mapping`); the
    histogram counts, over pixels unmasked at both edges, the difference of phase indices,
    stacked by L3 phase (hatched). A single bar at 0 means the two edges agree everywhere.
    The right panel is the confusion matrix (fraction of each L3 phase per L2 phase).
    """
    _check_edge(l3, "l3")
    _check_edge(l2, "l2")
    if l3.labels.shape != l2.labels.shape:
        raise ValueError(f"l2.labels shape {l2.labels.shape} differs from l3.labels shape {l3.labels.shape}")
    mapping = l2_to_l3_mapping(l3, l2, comparison)
    lab3 = l3.labels.ravel()
    lab2 = l2.labels.ravel()
    both = (lab3 >= 0) & (lab2 >= 0)
    mapped2 = np.full_like(lab2, -1)
    if mapping.size:
        mapped2[lab2 >= 0] = mapping[np.clip(lab2[lab2 >= 0], 0, mapping.size - 1)]
    both &= mapped2 >= 0
    diff = mapped2[both] - lab3[both]
    n = max(l3.n_phases, 1)
    bins = np.arange(-(n - 1), n)
    agreement = float(np.mean(diff == 0)) if diff.size else float("nan")
    given = getattr(comparison, "agreement", None) if comparison is not None else None
    if given is not None:
        agreement = float(given)

    fig = _new_figure(10.0, 4.2)
    ax, axc = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1.0]})
    colors = phase_colors(l3.n_phases)
    bottom = np.zeros(bins.size)
    for p in range(l3.n_phases):
        sel = lab3[both] == p
        counts = np.array([np.count_nonzero(diff[sel] == d) for d in bins], dtype=float)
        name = l3.phase_names[p] if p < len(l3.phase_names) else f"phase {p}"
        ax.bar(bins, counts, bottom=bottom, color=colors[p], edgecolor="black",
               hatch=_HATCHES[p % len(_HATCHES)], label=f"L3 phase {p}: {name}")
        bottom += counts
    ax.set_xticks(bins)
    ax.set_xlabel("phase index difference, L2 - L3 (after matching phases by spectrum)")
    ax.set_ylabel("pixels")
    ax.set_title(f"L2 vs L3 phase difference: {agreement:.1%} of {int(both.sum()):,} px agree")
    ax.legend(fontsize="small")

    conf = np.zeros((max(l3.n_phases, 1), max(l3.n_phases, 1)))
    for p in range(l3.n_phases):
        sel = lab3[both] == p
        if np.any(sel):
            conf[p] = np.bincount(mapped2[both][sel], minlength=conf.shape[1])[: conf.shape[1]] / sel.sum()
    im = axc.imshow(conf, cmap="cividis", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(conf):
        axc.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black")
    axc.set_xlabel("L2 phase (matched to L3 index)")
    axc.set_ylabel("L3 phase")
    axc.set_xticks(range(conf.shape[1]))
    axc.set_yticks(range(conf.shape[0]))
    axc.set_title("fraction of L3 phase")
    fig.colorbar(im, ax=axc, shrink=0.8)
    return _save(fig, path)


def plot_phase_spectra(
    edges: Sequence[EdgeResult],
    path: str | os.PathLike[str],
    *,
    inset: tuple[float, float] = (-15.0, 35.0),
) -> Path:
    """Normalized mean spectrum of each phase with +/- 1 std bands (Duan et al. Fig. 3h).

    One panel per edge; an inset magnifies the near-edge region ``e0 + inset`` (eV) where the
    white lines of the phases differ.
    """
    edges = [e for e in edges if e is not None]
    if not edges:
        raise ValueError("edges must hold at least one EdgeResult")
    fig = _new_figure(6.2 * len(edges), 4.6)
    axes = fig.subplots(1, len(edges), squeeze=False)[0]
    for ax, e in zip(axes, edges):
        _check_edge(e, "edges[]")
        energies = np.asarray(e.energies, dtype=float)
        colors = phase_colors(e.n_phases)
        lo, hi = e.e0 + inset[0], e.e0 + inset[1]
        ins = ax.inset_axes([0.52, 0.08, 0.45, 0.45])
        for p in range(e.n_phases):
            mean = np.asarray(e.mean_spectra[p], dtype=float)
            spread = np.asarray(e.spread[p], dtype=float)
            name = e.phase_names[p] if p < len(e.phase_names) else f"phase {p}"
            ls = _LINESTYLES[p % len(_LINESTYLES)]
            for a in (ax, ins):
                a.fill_between(energies, mean - spread, mean + spread, color=colors[p], alpha=0.18, linewidth=0)
                a.plot(energies, mean, color=colors[p], linestyle=ls, linewidth=1.6,
                       label=f"{p}: {name} ({int(e.counts[p]):,} px)" if a is ax else None)
        ax.axvline(e.e0, color="0.5", linewidth=0.8, linestyle=":")
        ax.set_xlabel("energy (eV)")
        ax.set_ylabel("normalized absorption")
        ax.set_title(f"{e.edge} phase mean spectra (band: \u00b11 std)")
        ax.legend(loc="upper left", fontsize="small")
        sel = (energies >= lo) & (energies <= hi)
        ins.set_xlim(lo, hi)
        if np.any(sel) and e.n_phases:
            top = np.max(np.asarray(e.mean_spectra, dtype=float)[:, sel] + np.asarray(e.spread, dtype=float)[:, sel])
            bot = np.min(np.asarray(e.mean_spectra, dtype=float)[:, sel] - np.asarray(e.spread, dtype=float)[:, sel])
            pad = 0.05 * (top - bot) if top > bot else 0.1
            ins.set_ylim(bot - pad, top + pad)
        ins.tick_params(labelsize="x-small")
        ins.set_title("near edge", fontsize="x-small")
        ax.indicate_inset_zoom(ins, edgecolor="0.3")
    return _save(fig, path)


def plot_exafs(
    exafs: Sequence[ExafsResult],
    path: str | os.PathLike[str],
    *,
    phase_names: Sequence[str] | None = None,
    n_phases: int | None = None,
) -> Path:
    """k-weighted chi(k) and |chi(R)| of each phase mean spectrum (Duan et al. Fig. 4).

    The apparent first-shell distance (not phase corrected) is marked in R space.
    """
    exafs = list(exafs)
    if not exafs:
        raise ValueError("exafs must hold at least one ExafsResult")
    n = n_phases if n_phases is not None else max(x.phase for x in exafs) + 1
    colors = phase_colors(max(n, 1))
    fig = _new_figure(11.0, 4.2)
    axk, axr = fig.subplots(1, 2)
    for x in exafs:
        p = x.phase
        name = phase_names[p] if phase_names is not None and p < len(phase_names) else f"phase {p}"
        c = colors[min(p, len(colors) - 1)]
        ls = _LINESTYLES[p % len(_LINESTYLES)]
        k = np.asarray(x.k, dtype=float)
        axk.plot(k, k ** x.kweight * np.asarray(x.chi, dtype=float), color=c, linestyle=ls, label=f"{p}: {name}")
        axr.plot(np.asarray(x.r), np.asarray(x.chir_mag), color=c, linestyle=ls,
                 label=f"{p}: {name}, R1 = {x.first_shell_r:.2f} \u00c5")
        if np.isfinite(x.first_shell_r):
            axr.axvline(x.first_shell_r, color=c, linestyle=ls, linewidth=0.8, alpha=0.8)
    kw = exafs[0].kweight
    axk.set_xlabel("k (1/\u00c5)")
    axk.set_ylabel(f"k$^{kw}$ \u03c7(k) (\u00c5$^{{-{kw}}}$)")
    axk.set_title(f"k$^{kw}$-weighted EXAFS per phase")
    axk.axhline(0, color="0.6", linewidth=0.6)
    axk.legend(fontsize="small")
    axr.set_xlabel("R (\u00c5, not phase corrected)")
    axr.set_ylabel(f"|\u03c7(R)| (\u00c5$^{{-{kw + 1}}}$)")
    axr.set_title("Fourier transform magnitude")
    axr.set_xlim(0, min(6.0, float(np.max(exafs[0].r)) if np.size(exafs[0].r) else 6.0))
    axr.legend(fontsize="small")
    return _save(fig, path)


def plot_composite(
    edge: EdgeResult,
    path: str | os.PathLike[str],
    *,
    pixel_size_nm: float | None = None,
) -> Path:
    """Composite RGB phase map: hue from the phase, brightness from the edge-step SNR.

    Every phase gets one primary-like colour (red, green, blue, then mixtures); the brightness
    follows the pixel's SNR (clipped at its 99th percentile) so thick, reliable regions stand out
    and thin edges fade to black. Masked pixels are black.
    """
    _check_edge(edge, "edge")
    base = np.array([[0.95, 0.2, 0.2], [0.2, 0.85, 0.2], [0.25, 0.45, 1.0], [1.0, 0.85, 0.1],
                     [0.9, 0.2, 0.9], [0.1, 0.9, 0.9]])
    labels = edge.labels
    snr = np.nan_to_num(np.asarray(edge.snr, dtype=float), nan=0.0)
    ok = labels >= 0
    scale = np.percentile(snr[ok], 99) if np.any(ok) else 1.0
    bright = np.clip(snr / scale if scale > 0 else np.ones_like(snr), 0.0, 1.0) * 0.75 + 0.25
    rgb = np.zeros(labels.shape + (3,))
    rgb[ok] = base[labels[ok] % len(base)] * bright[ok, None]
    h, w = labels.shape
    fig = _new_figure(6.0, max(3.5, min(7.0, 6.0 * h / max(w, 1))) + 0.8 + 0.22 * edge.n_phases)
    ax = fig.subplots()
    ax.imshow(rgb, interpolation="nearest")
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=base[p % len(base)], edgecolor="black",
                     label=f"{p}: {edge.phase_names[p] if p < len(edge.phase_names) else 'phase'}")
               for p in range(edge.n_phases)]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), fontsize="small", framealpha=0.85)
    ax.set_title(f"{edge.edge} composite phase map (brightness = edge-step SNR)")
    _decorate_map(ax, labels.shape, pixel_size_nm)
    return _save(fig, path)


def plot_snr(
    edge: EdgeResult,
    path: str | os.PathLike[str],
    *,
    pixel_size_nm: float | None = None,
) -> Path:
    """Edge-step SNR map (viridis) next to the mask of pixels that entered the clustering."""
    _check_edge(edge, "edge")
    snr = np.asarray(edge.snr, dtype=float)
    h, w = snr.shape
    fig = _new_figure(10.0, max(3.5, min(6.5, 5.0 * h / max(w, 1))) + 1.0)
    ax, axm = fig.subplots(1, 2)
    finite = np.isfinite(snr)
    vmax = np.percentile(snr[finite], 99.5) if np.any(finite) else 1.0
    im = ax.imshow(snr, cmap="viridis", vmin=0, vmax=max(vmax, 1e-6), interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.85, label="edge-step SNR")
    ax.set_title(f"{edge.edge} edge-step SNR (median in mask {np.median(snr[edge.mask]) if np.any(edge.mask) else float('nan'):.1f})")
    _decorate_map(ax, snr.shape, pixel_size_nm)
    axm.imshow(np.asarray(edge.mask, dtype=float), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    frac = float(np.mean(edge.mask)) if edge.mask.size else 0.0
    axm.set_title(f"clustered pixels (white): {int(np.count_nonzero(edge.mask)):,} ({frac:.1%})")
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

    ``areas_um2`` has shape ``(n_scans, n_phases)``; NaN where a phase was absent.
    """
    areas = np.asarray(areas_um2, dtype=float)
    x = np.asarray(scan_index, dtype=float)
    if areas.ndim != 2 or areas.shape[0] != x.size:
        raise ValueError(f"areas_um2 must have shape (n_scans={x.size}, n_phases), got {areas.shape}")
    if len(phase_names) != areas.shape[1]:
        raise ValueError(f"phase_names must have {areas.shape[1]} entries, got {len(phase_names)}")
    ids = list(phase_ids) if phase_ids is not None else list(range(areas.shape[1]))
    colors = phase_colors(areas.shape[1])
    markers = ("o", "s", "^", "D", "v", "P")
    fig = _new_figure(6.5, 4.2)
    ax = fig.subplots()
    for j in range(areas.shape[1]):
        ax.plot(x, areas[:, j], color=colors[j], linestyle=_LINESTYLES[j % len(_LINESTYLES)],
                marker=markers[j % len(markers)], label=f"id {ids[j]}: {phase_names[j]}")
    ax.set_xlabel("scan index")
    ax.set_ylabel("phase area (\u00b5m$^2$)")
    ax.set_title("phase areas across the series")
    ax.set_xticks(x)
    ax.legend(fontsize="small")
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------


def save_report(
    result: RunResult,
    directory: str | os.PathLike[str],
    *,
    pixel_size_nm: float | None = None,
    comparison: Any = None,
) -> list[Path]:
    """Write every figure that ``result`` supports as PNG files in ``directory``.

    Parameters
    ----------
    result : RunResult
        Output of the live callback, a replay or a remote analysis.
    directory : path-like
        Created if needed. Files: ``phase_maps.png`` (L3 and L2, plus the streaming preview when
        present), ``composite_l3.png``, ``snr_l3.png``, ``spectra.png``, ``l2_l3_difference.png``
        (needs both edges), ``exafs.png`` (needs EXAFS results).
    pixel_size_nm : float, optional
        Pixel size for the micrometre scale bars.
    comparison : EdgeComparison, optional
        Output of :func:`txm_live.phases.compare_edges`; used for the L2/L3 phase matching.

    Returns
    -------
    list of Path
        The files written, in the order above. Edges that are missing are skipped.
    """
    if not isinstance(result, RunResult):
        raise ValueError(f"result must be a RunResult, got {type(result).__name__}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    edges = [e for e in (result.l3, result.l2) if e is not None]
    if edges:
        written.append(plot_phase_maps(edges, out / "phase_maps.png", pixel_size_nm=pixel_size_nm,
                                       title=f"run {result.run_uid[:8]}"))
    if result.l3_preview is not None:
        written.append(plot_phase_maps([result.l3_preview], out / "preview_l3.png", pixel_size_nm=pixel_size_nm,
                                       title="streaming preview (river), before the exact analysis"))
    first = result.l3 if result.l3 is not None else result.l2
    if first is not None:
        tag = first.edge.lower()
        written.append(plot_composite(first, out / f"composite_{tag}.png", pixel_size_nm=pixel_size_nm))
        written.append(plot_snr(first, out / f"snr_{tag}.png", pixel_size_nm=pixel_size_nm))
    if edges:
        written.append(plot_phase_spectra(edges, out / "spectra.png"))
    if result.l3 is not None and result.l2 is not None:
        written.append(plot_difference_histogram(result.l3, result.l2, out / "l2_l3_difference.png",
                                                 comparison=comparison))
    exafs = result.exafs.get(first.edge, ()) if first is not None else ()
    if exafs:
        written.append(plot_exafs(exafs, out / "exafs.png", phase_names=first.phase_names, n_phases=first.n_phases))
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
            self._edge = result.l3 or result.l2 or self._edge
            self._text = f"run {result.run_uid[:8]} done: {self._text}"
        if not changed:
            if self.window:
                self._fig.canvas.flush_events() if self._fig is not None else None
            return False
        fig = self._ensure_figure()
        fig.clear()
        ax = fig.subplots()
        if self._edge is not None:
            ax.imshow(_label_rgb(self._edge.labels, self._edge.n_phases), interpolation="nearest")
            _decorate_map(ax, self._edge.labels.shape, self.pixel_size_nm)
            _phase_legend(ax, self._edge)
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
