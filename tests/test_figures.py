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


def make_run(*, l3=_DEFAULT, l2=_DEFAULT, exafs=_DEFAULT, l3_preview=_DEFAULT) -> RunResult:
    """A Nd L3/L2 RunResult; ``None`` (or ``()`` for exafs) leaves a part out."""
    l3 = make_edge("L3", 6208.0) if l3 is _DEFAULT else l3
    l2 = make_edge("L2", 6722.0, seed=1, swap=True) if l2 is _DEFAULT else l2
    exafs = make_exafs() if exafs is _DEFAULT else exafs
    preview = make_edge("L3", 6208.0, seed=2, swap=True) if l3_preview is _DEFAULT else l3_preview
    edges = {k: e for k, e in (("L3", l3), ("L2", l2)) if e is not None}
    comparisons = (EdgePairComparison("L3", "L2", 0.95, (0, 1, 2)),) if len(edges) == 2 else ()
    return RunResult(run_uid="0123456789abcdef", element="Nd", edges=edges,
                     previews={"L3": preview} if preview is not None else {}, comparisons=comparisons,
                     exafs={"L3": exafs} if exafs and l3 is not None else {}, n_frames=300,
                     requested_edges=("L3", "L2"))


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
    assert names == ["phase_maps.png", "preview_l3.png", "composite_l3.png", "snr_l3.png", "spectra.png",
                     "l2_l3_difference.png", "exafs.png"]
    for p in paths:
        assert_real_png(p)
    img = assert_real_png(tmp_path / "phase_maps.png")
    assert img.shape[1] > img.shape[0]  # two maps side by side


def test_save_report_skips_missing_parts(tmp_path):
    from txm_live.figures import save_report

    paths = save_report(make_run(l2=None, exafs=(), l3_preview=None), tmp_path)
    assert [p.name for p in paths] == ["phase_maps.png", "composite_l3.png", "snr_l3.png", "spectra.png"]
    assert save_report(make_run(l3=None, l2=None, exafs=(), l3_preview=None), tmp_path / "empty") == []


def test_phase_map_colours_distinct_in_greyscale():
    from txm_live.figures import phase_colors

    c = phase_colors(3)
    grey = c @ np.array([0.299, 0.587, 0.114])
    assert np.min(np.diff(np.sort(grey))) > 0.15
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
