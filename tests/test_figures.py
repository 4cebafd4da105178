"""Figures render real, non-blank images from synthetic results built here."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from txm_live.results import EdgePairComparison, EdgeResult, ExafsResult, RunResult

H, W = 60, 80


def _white_line(e: np.ndarray, e0: float, amp: float, width: float) -> np.ndarray:
    step = 0.5 + np.arctan(2 * (e - e0) / 3.6) / np.pi
    return step + amp * np.exp(-0.5 * ((e - e0 - 3.0) / width) ** 2)


def make_edge(edge: str = "L3", e0: float = 6208.0, *, seed: int = 0, swap: bool = False) -> EdgeResult:
    rng = np.random.default_rng(seed)
    energies = np.arange(e0 - 200, e0 + 440, 2.0)
    yy, xx = np.mgrid[:H, :W]
    r = np.hypot(yy - H / 2, xx - W / 2)
    labels = np.full((H, W), -1)
    labels[r < 26] = 1  # mixed shell
    labels[r < 18] = 0  # metallic core
    labels[(r < 26) & (xx > 58) & (yy < 25)] = 2  # oxide pocket
    if swap:  # L2 sees a few pixels differently
        flip = (labels >= 0) & (rng.random((H, W)) < 0.05)
        labels[flip] = (labels[flip] + 1) % 3
    amps = (1.6, 2.1, 2.7)
    means = np.stack([_white_line(energies, e0, a, 4.0 - 0.8 * i) for i, a in enumerate(amps)]).astype(np.float32)
    spread = np.full_like(means, 0.08)
    counts = np.array([np.count_nonzero(labels == p) for p in range(3)])
    snr = (np.clip(26 - r, 0, None) * 0.6 + rng.normal(0, 0.5, (H, W))).astype(np.float32)
    return EdgeResult(
        edge=edge, e0=e0, energies=energies, labels=labels,
        phase_names=("majority (metal)", "majority (mixed)", "minority (oxide)"),
        mean_spectra=means, spread=spread, counts=counts, snr=snr, mask=labels >= 0,
        eps=0.3, min_samples=12, n_components=3, outlier_phases=(2,), timings={"dbscan": 0.1},
    )


def make_exafs() -> tuple[ExafsResult, ...]:
    k = np.linspace(2, 6.5, 200)
    r = np.linspace(0, 8, 300)
    out = []
    for p, r1 in enumerate((3.0, 2.7, 2.1)):
        chi = 0.3 * np.sin(2 * k * r1) / k**2
        mag = np.exp(-0.5 * ((r - r1) / 0.3) ** 2) * (1 + 0.2 * p)
        out.append(ExafsResult(phase=p, k=k, chi=chi, kweight=2, r=r, chir_mag=mag, first_shell_r=r1))
    return tuple(out)


_DEFAULT = object()


def make_run(*, l3=_DEFAULT, l2=_DEFAULT, exafs=_DEFAULT, l3_preview=_DEFAULT, pixel_size_nm=None) -> RunResult:
    """A Nd L3/L2 RunResult; ``None`` (or ``()`` for exafs) leaves a part out."""
    from txm_live.compare import compare_edges

    l3 = make_edge("L3", 6208.0) if l3 is _DEFAULT else l3
    l2 = make_edge("L2", 6722.0, seed=1, swap=True) if l2 is _DEFAULT else l2
    exafs = make_exafs() if exafs is _DEFAULT else exafs
    preview = make_edge("L3", 6208.0, seed=2, swap=True) if l3_preview is _DEFAULT else l3_preview
    edges = {k: e for k, e in (("L3", l3), ("L2", l2)) if e is not None}
    comparisons = ()
    if len(edges) == 2:
        c = compare_edges(edges["L3"], edges["L2"])
        comparisons = (EdgePairComparison("L3", "L2", c.agreement, c.mapping, c),)
    return RunResult(run_uid="0123456789abcdef", element="Nd", edges=edges,
                     previews={"L3": preview} if preview is not None else {}, comparisons=comparisons,
                     exafs={"L3": exafs} if exafs and l3 is not None else {}, n_frames=300,
                     requested_edges=("L3", "L2"), pixel_size_nm=pixel_size_nm)


def assert_real_png(path, *, min_size=(200, 200), colour: bool = True) -> np.ndarray:
    import matplotlib.image as mpimg

    assert path.exists() and path.stat().st_size > 5000, path
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] >= min_size[0] and img.shape[1] >= min_size[1], img.shape
    rgb = img[..., :3]
    assert rgb.std() > 0.05, f"{path.name} looks blank"
    # more than a handful of distinct colours: data, not just axes
    assert len(np.unique((rgb * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50
    if colour:
        chroma = rgb.max(axis=-1) - rgb.min(axis=-1)
        assert np.mean(chroma > 0.15) > 0.005, f"{path.name} has no colour content"
    return img


def test_save_report_writes_all_figures(tmp_path):
    from txm_live.figures import save_report

    paths = save_report(make_run(), tmp_path, pixel_size_nm=31.2)
    names = [p.name for p in paths]
    assert names == ["phase_maps.png", "preview_l3.png", "composite_l3.png", "composite_l2.png", "snr_l3.png",
                     "snr_l2.png", "spectra.png", "l2_l3_difference.png", "exafs_l3.png"]
    for p in paths:
        assert_real_png(p)
    img = assert_real_png(tmp_path / "phase_maps.png")
    assert img.shape[1] > img.shape[0]  # two maps side by side


def test_save_report_skips_missing_parts(tmp_path):
    from txm_live.figures import save_report

    paths = save_report(make_run(l2=None, exafs=(), l3_preview=None), tmp_path)
    assert [p.name for p in paths] == ["phase_maps.png", "composite_l3.png", "snr_l3.png", "spectra.png"]
    paths = save_report(make_run(l3=None, exafs=(), l3_preview=None), tmp_path / "l2")
    assert [p.name for p in paths] == ["phase_maps.png", "composite_l2.png", "snr_l2.png", "spectra.png"]
    assert save_report(make_run(l3=None, l2=None, exafs=(), l3_preview=None), tmp_path / "empty") == []


def test_phase_map_colours_distinct_in_greyscale():
    from txm_live.figures import phase_colors

    c = phase_colors(3)
    grey = c @ np.array([0.299, 0.587, 0.114])
    assert np.min(np.diff(np.sort(grey))) > 0.15
    from txm_live.figures import phase_hatch

    assert len({phase_hatch(i) for i in range(8)}) == 8  # and a hatch of its own per identity
    assert np.all(grey < 0.9)  # never confused with white (masked)


def test_phase_map_pixels_show_each_phase(tmp_path):
    """The map itself is drawn: the colour of every phase appears in the PNG."""
    import matplotlib.image as mpimg

    from txm_live.figures import phase_colors, plot_phase_maps

    p = plot_phase_maps([make_edge()], tmp_path / "m.png", pixel_size_nm=31.2)
    rgb = mpimg.imread(p)[..., :3]
    for c in phase_colors(3):
        close = np.all(np.abs(rgb - c) < 0.02, axis=-1)
        assert close.sum() > 30


def test_l2_to_l3_mapping_by_spectrum_and_comparison():
    from txm_live.figures import l2_to_l3_mapping

    l3 = make_edge("L3", 6208.0)
    l2 = make_edge("L2", 6722.0)
    perm = np.array([2, 0, 1])  # l2 phase i has l3 phase perm[i]'s spectrum
    l2p = EdgeResult(**{**l2.__dict__, "mean_spectra": l2.mean_spectra[perm]})
    assert l2_to_l3_mapping(l3, l2p).tolist() == perm.tolist()

    class Cmp:
        mapping = {0: 1, 1: 2, 2: 0}
        agreement = 0.9

    assert l2_to_l3_mapping(l3, l2, Cmp()).tolist() == [1, 2, 0]


def test_difference_histogram_counts_agreement(tmp_path):
    from txm_live.figures import plot_difference_histogram

    l3 = make_edge()
    p = plot_difference_histogram(l3, make_edge("L2", 6722.0), tmp_path / "d.png")
    assert_real_png(p)
    with pytest.raises(ValueError, match="shape"):
        small = EdgeResult(**{**l3.__dict__, "labels": l3.labels[:10]})
        plot_difference_histogram(l3, small, tmp_path / "x.png")


def test_bad_inputs_name_the_parameter(tmp_path):
    from txm_live.figures import plot_phase_areas, plot_phase_maps, save_report

    with pytest.raises(ValueError, match="edges"):
        plot_phase_maps([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="result"):
        save_report("not a result", tmp_path)
    with pytest.raises(ValueError, match="areas_um2"):
        plot_phase_areas([0, 1], np.zeros((3, 2)), ["a", "b"], tmp_path / "a.png")


def test_phase_areas_figure(tmp_path):
    from txm_live.figures import plot_phase_areas

    areas = np.array([[100.0, 50.0, 2.0], [95.0, 52.0, 5.0], [90.0, 55.0, np.nan]])
    assert_real_png(plot_phase_areas([0, 1, 2], areas, ["metal", "mixed", "oxide"], tmp_path / "a.png"))


def test_live_plot_headless_snapshots_from_another_thread(tmp_path):
    from txm_live.figures import LivePlot

    lp = LivePlot(window=False, snapshot=tmp_path / "live.png", pixel_size_nm=31.2)
    done = threading.Event()

    def worker():
        lp.progress("frames 10/300")
        lp.show_edge(make_edge())
        lp.show_result(make_run())
        done.set()

    t = threading.Thread(target=worker)
    t.start()
    lp.block(done)  # returns once the "plan" has finished, after a final pump
    t.join()
    assert lp.n_redraws >= 1
    assert_real_png(tmp_path / "live.png")
    assert lp.pump() is False  # nothing new


def test_live_plot_window_path_runs_with_pyplot(tmp_path):
    """The window code path (pyplot figure, pause loop) in a subprocess; Agg stands in for a display."""
    import os
    import subprocess
    import sys

    code = (
        "import threading, warnings\n"
        "warnings.simplefilter('ignore')\n"
        "import matplotlib.pyplot as plt\n"
        "from txm_live.figures import LivePlot\n"
        "lp = LivePlot(window=True)\n"
        "done = threading.Event()\n"
        "def work():\n"
        "    lp.progress('frames 1/2'); done.set()\n"
        "threading.Thread(target=work).start()\n"
        "lp.block(done)\n"
        "assert lp.n_redraws >= 1 and plt.get_fignums(), 'no window figure'\n"
        "lp.close()\n"
        "assert not plt.get_fignums()\n"
        "print('OK')\n"
    )
    env = dict(os.environ, MPLBACKEND="Agg")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert "OK" in out.stdout, out.stderr


def test_phase_colour_is_fixed_per_index():
    from txm_live.figures import phase_colors

    np.testing.assert_allclose(phase_colors(2), phase_colors(3)[:2])
    assert len({tuple(np.round(c, 3)) for c in phase_colors(5)}) == 5
    assert phase_colors(8).shape == (8, 3)


# --------------------------------------------------------------------------------------------
# publishable properties, checked on the figures themselves (captured before they are saved)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def captured(monkeypatch):
    """Every Figure the figures module saves, by file name (drawn, so extents are final)."""
    import txm_live.figures as figures

    got = {}
    save = figures._save

    def capture(fig, path):
        out = save(fig, path)
        got[out.name] = fig
        return out

    monkeypatch.setattr(figures, "_save", capture)
    return got


def _legends(fig):
    out = list(fig.legends)
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is not None:
            out.append(leg)
    return out


def _overlap(a, b, tol=1.0) -> bool:
    return a.x0 < b.x1 - tol and b.x0 < a.x1 - tol and a.y0 < b.y1 - tol and b.y0 < a.y1 - tol


@pytest.mark.parametrize("pixel_size_nm", [31.2, None])
def test_legends_inside_the_canvas_and_off_the_data(tmp_path, captured, pixel_size_nm):
    from txm_live.figures import save_report

    save_report(make_run(pixel_size_nm=pixel_size_nm), tmp_path)
    assert len(captured) == 9
    n_legends = 0
    for name, fig in captured.items():
        renderer = fig.canvas.get_renderer()
        canvas = fig.bbox
        texts = []
        for ax in fig.axes:
            texts += [t for t in (ax.xaxis.label, ax.yaxis.label, ax.title) if t.get_text()]
        for leg in _legends(fig):
            n_legends += 1
            box = leg.get_window_extent(renderer)
            assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= canvas.x1 + 1 and box.y1 <= canvas.y1 + 1, \
                (name, box, canvas)
            for ax in fig.axes:  # never on a data area (maps, curves, bars, colour bars)
                assert not _overlap(box, ax.get_window_extent(renderer)), (name, ax.get_title())
            for t in texts:  # nor on an axis label or title
                assert not _overlap(box, t.get_window_extent(renderer)), (name, t.get_text())
    assert n_legends >= 6


def _legend_colours(fig) -> dict[int, tuple]:
    """Phase identity (legend text 'id: name') -> colour used for it in this figure."""
    from matplotlib.colors import to_rgb

    out = {}
    for leg in _legends(fig):
        for handle, text in zip(leg.legend_handles, leg.get_texts()):
            head = text.get_text().split(":", 1)[0]
            if not head.isdigit():
                continue
            c = handle.get_color() if hasattr(handle, "get_linestyle") and not hasattr(handle, "get_hatch") \
                else handle.get_facecolor()
            out.setdefault(int(head), set()).add(tuple(np.round(to_rgb(c), 3)))
    return out


def test_one_colour_per_phase_identity_across_every_figure(tmp_path, captured):
    """L2 numbers its phases differently from L3: its phases still take the L3 phase's colour."""
    from matplotlib.colors import to_rgb

    from txm_live.figures import phase_colors, phase_identities, save_report

    l3 = make_edge("L3", 6208.0)
    base = make_edge("L2", 6722.0, seed=1, swap=True)
    perm = np.array([2, 0, 1])  # L2 phase j is L3 phase perm[j]
    inv = np.argsort(perm)
    labels = np.where(base.labels >= 0, inv[np.clip(base.labels, 0, 2)], -1)
    l2 = EdgeResult(**{**base.__dict__, "labels": labels, "mean_spectra": base.mean_spectra[perm],
                       "spread": base.spread[perm], "counts": base.counts[perm],
                       "phase_names": tuple(base.phase_names[i] for i in perm)})
    ids = phase_identities({"L3": l3, "L2": l2})
    assert ids["L3"].tolist() == [0, 1, 2] and ids["L2"].tolist() == perm.tolist()
    save_report(make_run(l2=l2), tmp_path, pixel_size_nm=31.2)
    seen: dict[int, set] = {}
    for name, fig in captured.items():
        for ident, colours in _legend_colours(fig).items():
            seen.setdefault(ident, set()).update(colours)
    assert set(seen) == {0, 1, 2}
    for ident, colours in seen.items():
        assert colours == {tuple(np.round(phase_colors(3)[ident], 3))}, (ident, colours)
    # the maps themselves: the pixels of L2 phase j have the colour of identity perm[j]
    fig = captured["phase_maps.png"]
    img = fig.axes[1].get_images()[0].get_array()
    for j in range(3):
        ys, xs = np.nonzero(labels == j)
        np.testing.assert_allclose(img[ys[0], xs[0], :3], to_rgb(phase_colors(3)[perm[j]]), atol=1e-6)


def test_chi_k_drawn_only_over_its_k_range_with_the_ft_window(tmp_path, captured):
    from txm_live.figures import plot_exafs

    k = np.arange(1.5, 10.6, 0.05)
    r = np.linspace(0, 8, 300)
    xs = [ExafsResult(phase=p, k=k, chi=0.3 * np.sin(2 * k * (3 - 0.3 * p)) / k**2, kweight=2, r=r,
                      chir_mag=np.exp(-0.5 * ((r - 2.5) / 0.3) ** 2), first_shell_r=2.5,
                      k_window=(2.0, 6.5), window_dk=1.0) for p in range(2)]
    plot_exafs(xs, tmp_path / "x.png", phase_names=["a", "b"])
    axk = captured["x.png"].axes[0]
    lo, hi = axk.get_xlim()
    assert (lo, hi) == pytest.approx((k[0], k[-1]))
    for line in axk.get_lines():
        x = np.asarray(line.get_xdata(), dtype=float)
        if x.size > 2:
            assert x.min() >= k[0] - 1e-9 and x.max() <= k[-1] + 1e-9
    window = [c for c in axk.collections if "FT window" in str(c.get_label())]
    assert len(window) == 1
    verts = window[0].get_paths()[0].vertices
    assert verts[:, 0].min() >= 2.0 - 0.5 - 1e-6 and verts[:, 0].max() <= 6.5 + 0.5 + 1e-6
    assert "2\u20136.5" in window[0].get_label()


def test_difference_histogram_log_scale_and_confusion_over_existing_phases(tmp_path, captured):
    from txm_live.figures import plot_difference_histogram

    l3 = make_edge()
    two = make_edge("L2", 6722.0)
    labels = np.where(two.labels == 2, 1, two.labels)  # L2 finds only two phases
    l2 = EdgeResult(**{**two.__dict__, "labels": labels, "mean_spectra": two.mean_spectra[:2],
                       "spread": two.spread[:2], "counts": np.bincount(labels[labels >= 0], minlength=2),
                       "phase_names": two.phase_names[:2]})
    plot_difference_histogram(l3, l2, tmp_path / "d.png")
    ax, axc = captured["d.png"].axes[:2]
    assert ax.get_yscale() == "log"
    conf = np.asarray(axc.get_images()[0].get_array())
    assert conf.shape == (3, 2)  # rows: the 3 L3 phases, columns: only the 2 L2 phases that exist
    np.testing.assert_allclose(conf.sum(axis=1), 1.0)
    assert conf[2, 1] == pytest.approx(1.0)


def test_snr_map_draws_the_threshold(tmp_path, captured):
    from txm_live.figures import plot_snr
    from txm_live.phases import PhaseAnalysis

    e = make_edge()
    pa = PhaseAnalysis(**e.__dict__, snr_threshold=4.0)
    plot_snr(pa, tmp_path / "s.png")
    ax = captured["s.png"].axes[0]
    assert "threshold 4.0" in ax.get_title()
    contours = [c for c in ax.collections if hasattr(c, "levels")]
    assert contours and list(contours[0].levels) == [4.0]
    plot_snr(e, tmp_path / "n.png")  # a result without the threshold says so
    assert "threshold not recorded" in captured["n.png"].axes[0].get_title()


def test_scale_bar_from_the_result_pixel_size(tmp_path, captured):
    """Replays and remote analyses pass no pixel size: the run's own (start document) is used."""
    from txm_live.figures import save_report

    save_report(make_run(pixel_size_nm=31.2), tmp_path)
    for name in ("phase_maps.png", "composite_l3.png", "snr_l3.png", "preview_l3.png"):
        bars = [a for a in captured[name].axes[0].artists if a.get_gid() == "scale bar"]
        assert len(bars) == 1, name
    save_report(make_run(), tmp_path / "none")
    assert not [a for a in captured["phase_maps.png"].axes[0].artists if a.get_gid() == "scale bar"]


def test_identities_never_repeat_within_a_map():
    """Two preview phases inside one exact phase: one keeps its identity, the other gets a new one."""
    from txm_live.figures import phase_identities

    l3 = make_edge()
    base = make_edge(seed=3)
    labels = np.where(base.labels >= 0, 0, -1)
    labels[(labels == 0) & (np.arange(W)[None, :] > W // 2)] = 1  # both halves lie in exact phases 0/1
    two = EdgeResult(**{**base.__dict__, "labels": labels, "mean_spectra": base.mean_spectra[:2],
                        "spread": base.spread[:2], "counts": np.bincount(labels[labels >= 0], minlength=2),
                        "phase_names": base.phase_names[:2]})
    ids = phase_identities({"L3": l3}, {"L3": two})
    assert len(set(ids["L3 preview"].tolist())) == 2
    assert set(ids["L3 preview"].tolist()) <= {0, 1, 2, 3}


def test_many_phases_legend_stays_in_the_canvas(tmp_path, captured):
    """Six phases (a streaming preview can find that many): the legend still fits below the map."""
    from txm_live.figures import plot_phase_maps

    e = make_edge()
    labels = np.where(e.labels >= 0, (np.arange(W)[None, :] // 14) % 6, -1)
    six = EdgeResult(**{**e.__dict__, "labels": labels, "mean_spectra": np.repeat(e.mean_spectra, 2, axis=0),
                        "spread": np.repeat(e.spread, 2, axis=0),
                        "counts": np.bincount(labels[labels >= 0], minlength=6),
                        "phase_names": tuple(f"phase {c} (a long descriptive name)" for c in "ABCDEF")})
    plot_phase_maps([six], tmp_path / "six.png", pixel_size_nm=31.2)
    fig = captured["six.png"]
    renderer = fig.canvas.get_renderer()
    for leg in _legends(fig):
        box = leg.get_window_extent(renderer)
        assert box.y0 >= -1 and box.x0 >= -1 and box.x1 <= fig.bbox.x1 + 1, (box, fig.bbox)
        assert not _overlap(box, fig.axes[0].get_window_extent(renderer))


def test_near_edge_band_scales_with_the_edge():
    """-15 .. +35 eV at hard X-rays (the Nd numbers unchanged); scaled like the windows at soft
    X-rays, where the hard-X-ray band (-15 .. +35 eV) covered the whole 30 eV Fe L2,3 stack."""
    from dataclasses import replace

    from txm_live.figures import near_edge_band

    nd = make_edge("L3", 6208.0)
    assert near_edge_band(nd) == (6208.0 - 15.0, 6208.0 + 35.0)
    assert near_edge_band(nd, (-5.0, 5.0)) == (6203.0, 6213.0)
    fe = replace(make_edge("L3", 706.8), energies=np.linspace(700.0, 717.9, 90))
    lo, hi = near_edge_band(fe)
    s = 706.8 / 6000.0
    assert lo == pytest.approx(706.8 - 15.0 * s) and hi == pytest.approx(706.8 + 35.0 * s)
    assert 700.0 < lo < 706.8 < hi < 717.9
    # clipped to the spectrum's energies
    short = replace(fe, energies=np.linspace(706.0, 709.0, 20))
    assert near_edge_band(short) == (706.0, 709.0)


def test_pixels_without_data_are_grey_with_a_legend_entry_in_every_map(tmp_path, captured):
    """NaN SNR rows (no data after registration/cropping; never clustered) were drawn white like
    masked pixels, unexplained: every map figure draws them grey and names them in its legend."""
    import matplotlib.image as mpimg

    from txm_live.figures import _NO_DATA_RGB, LivePlot, plot_composite, plot_phase_maps, plot_snr
    from txm_live.phases import PhaseAnalysis

    e = make_edge()
    labels, snr = e.labels.copy(), e.snr.copy()
    labels[-6:] = -1
    snr[-6:] = np.nan
    e = PhaseAnalysis(**{**e.__dict__, "labels": labels, "snr": snr, "mask": labels >= 0}, snr_threshold=4.0)
    n = 6 * W
    paths = {"maps": plot_phase_maps([e], tmp_path / "m.png", pixel_size_nm=31.2),
             "composite": plot_composite(e, tmp_path / "c.png", pixel_size_nm=31.2),
             "snr": plot_snr(e, tmp_path / "s.png", pixel_size_nm=31.2)}
    lp = LivePlot(snapshot=tmp_path / "live.png")
    lp.show_edge(e)
    lp.pump()
    paths["live"] = tmp_path / "live.png"
    for what, p in paths.items():
        rgb = mpimg.imread(p)[..., :3]
        grey = np.all(np.abs(rgb - np.asarray(_NO_DATA_RGB)) < 0.02, axis=-1)
        # the rows are drawn scaled: at least half their pixel count, in any figure
        assert grey.sum() > n / 2, (what, int(grey.sum()))
    texts = []
    for name in ("m.png", "c.png", "s.png"):
        fig = captured[name]
        texts += [t.get_text() for leg in _legends(fig) for t in leg.get_texts()]
        texts += [t.get_text() for ax in fig.axes for t in ax.texts]
        assert any(t == f"no data ({n:,} px)" for t in texts), (name, texts)
        texts = []
    assert "masked" in captured["m.png"].axes[0].get_title()
    assert f"{int(np.count_nonzero(labels < 0)) - n:,} px masked" in captured["m.png"].axes[0].get_title()
