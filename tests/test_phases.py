"""Tests of txm_live.phases: the phase analysis of one edge against the simulator's ground truth,
and the L2 / L3 cross-check.

The noisy cubes are built here from the phantom's noise-free optical density (the brief's noise
model: transmitted photons ``Poisson(N0 exp(-OD))``, flat ``Poisson(N0)``, ``OD = -ln(I / F)``)
at 128 x 128 pixels and 1 eV steps. Every accuracy test uses the defaults of
:func:`analyze_edge` (no per-test tuning).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from txm_live.edges import EdgeWindow, default_windows
from txm_live.errors import InsufficientDataError
from txm_live.phases import (
    EdgeComparison,
    PhaseAnalysis,
    analyze_edge,
    compare_edges,
    l2_l3_agreement,
    match_phases,
)
from txm_live.results import EdgeResult
from txm_live.sim.phantom import make_phantom

SHAPE = (128, 128)
FLUX = 5000.0
L3, L2 = default_windows("Nd", ("L3", "L2"))


def _energies(window: EdgeWindow, step: float = 1.0) -> np.ndarray:
    return np.arange(np.ceil(window.start), window.end + 1e-9, step)


@lru_cache(maxsize=None)
def _phantom(mode: str):
    return make_phantom(SHAPE, mode=mode, seed=0)


@lru_cache(maxsize=None)
def _cube(mode: str, edge: str, flux: float = FLUX, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Noisy optical density cube (n_e, H, W) float32 of the phantom over one edge window."""
    window = L3 if edge == "L3" else L2
    energies = _energies(window)
    od = _phantom(mode).optical_density_stack(energies)
    rng = np.random.default_rng([seed, int(flux), 3 if edge == "L3" else 2, mode == "pure"])
    for i in range(od.shape[0]):  # one frame at a time: small temporaries
        sample = rng.poisson(flux * np.exp(-od[i].astype(np.float64)))
        flat = rng.poisson(flux, size=od[i].shape)
        od[i] = -np.log(np.maximum(sample, 1) / flat)
    return energies, od


@lru_cache(maxsize=None)
def _result(mode: str, edge: str, flux: float = FLUX) -> PhaseAnalysis:
    energies, cube = _cube(mode, edge, flux)
    return analyze_edge(energies, cube, window=L3 if edge == "L3" else L2)


def _scores(result: EdgeResult, mode: str) -> dict[str, float]:
    """ARI over the particle pixels kept by the mask, mask coverage, minority recall/precision."""
    truth = _phantom(mode).labels
    kept = result.mask & (truth > 0)
    ari = adjusted_rand_score(truth[kept], result.labels[kept])
    minority = np.isin(result.labels, result.outlier_phases) & kept
    oxide = (truth == 3) & kept
    tp = int(np.count_nonzero(minority & oxide))
    return {
        "ari": float(ari),
        "coverage": float(np.count_nonzero(kept) / np.count_nonzero(truth > 0)),
        "recall": tp / max(int(np.count_nonzero(oxide)), 1),
        "precision": tp / max(int(np.count_nonzero(minority)), 1),
        "background_kept": float(np.count_nonzero(result.mask & (truth == 0)) / max(np.count_nonzero(truth == 0), 1)),
    }


# ----------------------------------------------------------------------------------------------
# accuracy against ground truth


def test_pure_mode_ari_and_minority() -> None:
    result = _result("pure", "L3")
    s = _scores(result, "pure")
    print(f"pure L3: {s}, phases {result.phase_names} counts {result.counts.tolist()}")
    assert s["coverage"] >= 0.9
    assert s["background_kept"] <= 0.01
    assert s["ari"] >= 0.95
    assert s["recall"] >= 0.9 and s["precision"] >= 0.9


def test_mixed_mode_ari_and_minority() -> None:
    result = _result("mixed", "L3")
    s = _scores(result, "mixed")
    print(f"mixed L3: {s}, phases {result.phase_names} counts {result.counts.tolist()}")
    assert s["coverage"] >= 0.9
    assert s["ari"] >= 0.85
    assert s["recall"] >= 0.9 and s["precision"] >= 0.9


@pytest.mark.parametrize("mode", ["pure", "mixed"])
def test_two_majority_phases_plus_minority_in_stable_order(mode: str) -> None:
    result = _result(mode, "L3")
    truth = _phantom(mode).labels
    n_minor = len(result.outlier_phases)
    assert result.n_phases - n_minor == 2 and n_minor == 1
    assert result.outlier_phases == (2,)
    assert result.phase_names == ("phase A (low white line)", "phase B (high white line)", "minority")
    # stable order: phase 0 is the metallic core (low white line), 1 the mixed layer, 2 the oxide
    for phase, label in ((0, 2), (1, 1), (2, 3)):
        sel = result.labels == phase
        assert np.bincount(truth[sel], minlength=4).argmax() == label
    # white-line heights increase along the order, as documented
    peak = result.mean_spectra.max(axis=1)
    assert peak[0] < peak[1] < peak[2]
    assert result.counts.sum() == np.count_nonzero(result.labels >= 0)


def test_mean_spectra_match_ground_truth_pure_mode() -> None:
    result = _result("pure", "L3")
    truth = _phantom("pure").ground_truth_spectra(result.energies)  # rows: mixed, metal, oxide
    near = (result.energies >= L3.e0 - 20) & (result.energies <= L3.e0 + 60)
    # the model shapes omit the slow decline of the Nd cross section above the edge, so an
    # Athena normalization reproduces them to a few percent (phantom docs)
    for phase, row in ((0, 1), (1, 0), (2, 2)):
        diff = result.mean_spectra[phase, near] - truth[row, near]
        assert np.abs(diff).max() < 0.05 * truth[row, near].max(), (phase, np.abs(diff).max())
        assert np.sqrt(np.mean(diff**2)) < 0.05, phase
        assert np.all(result.spread[phase, near] > 0)


@pytest.mark.parametrize("flux", [FLUX / 2, FLUX * 2])
def test_half_and_double_flux_find_two_majority_and_minority(flux: float) -> None:
    result = _result("mixed", "L3", flux)
    s = _scores(result, "mixed")
    print(f"mixed L3 flux {flux:g}: {s}, phases {result.phase_names} counts {result.counts.tolist()}")
    assert result.n_phases - len(result.outlier_phases) == 2
    assert len(result.outlier_phases) == 1
    assert s["ari"] >= 0.85
    assert s["recall"] >= 0.9 and s["precision"] >= 0.9


def test_l2_l3_agreement_pure_mode() -> None:
    l3 = _result("pure", "L3")
    l2 = _result("pure", "L2")
    comp = compare_edges(l3, l2)
    print(f"pure L2/L3 agreement {comp.agreement:.4f} over {comp.n_compared} px, mapping {comp.mapping}")
    assert isinstance(comp, EdgeComparison)
    assert comp.agreement >= 0.95
    assert comp.mapping[: l2.n_phases] == tuple(range(l2.n_phases))[: len(comp.mapping)]
    assert comp.n_compared >= 0.8 * np.count_nonzero(_phantom("pure").labels > 0)
    assert l2_l3_agreement(l3, l2) == comp.agreement
    # Fig. 3g: the phase-index difference histogram peaks at 0 for every L3 phase
    zero = int(np.flatnonzero(comp.difference_bins == 0)[0])
    assert np.all(comp.difference_histograms.argmax(axis=1) == zero)
    # the continuous majority scores agree between edges: median difference near 0
    assert comp.score_histograms.shape == (l3.n_phases, comp.score_bin_edges.size - 1)
    assert np.all(np.abs(comp.score_difference_median[: 2]) < 0.1)


def test_mixed_mode_l2_finds_the_same_phases() -> None:
    l3 = _result("mixed", "L3")
    l2 = _result("mixed", "L2")
    comp = compare_edges(l3, l2)
    print(f"mixed L2/L3 agreement {comp.agreement:.4f}, L2 phases {l2.phase_names}")
    assert comp.agreement >= 0.8


# ----------------------------------------------------------------------------------------------
# behaviour


def test_result_fields_maps_and_timings() -> None:
    result = _result("pure", "L3")
    assert isinstance(result, EdgeResult) and isinstance(result, PhaseAnalysis)
    H, W = SHAPE
    assert result.labels.shape == (H, W) and result.mask.shape == (H, W) and result.snr.shape == (H, W)
    assert result.snr.dtype == np.float32
    assert np.all(result.labels[~result.mask] == -1)
    assert result.mean_spectra.shape == (result.n_phases, result.energies.size)
    assert result.energies[0] >= L3.start and result.energies[-1] <= L3.end
    assert result.edge == "L3" and result.e0 == L3.e0
    assert result.n_components >= 1 and result.eps > 0 and result.min_samples >= 1
    for key in ("select", "normalize", "snr", "features", "pca", "cluster", "summarize", "total"):
        assert result.timings[key] >= 0
    assert np.isfinite(result.white_line[result.mask]).all() and np.isnan(result.white_line[~result.mask]).all()
    # majority score: ~0 on the metal core, ~1 on the mixed layer, > 1 on the oxide
    truth = _phantom("pure").labels
    med = [np.nanmedian(result.majority_score[(truth == k) & result.mask]) for k in (2, 1, 3)]
    assert abs(med[0]) < 0.1 and abs(med[1] - 1) < 0.1 and med[2] > 1.5


def test_valid_mask_and_determinism() -> None:
    energies, cube = _cube("pure", "L3")
    valid = np.ones(SHAPE, dtype=bool)
    valid[:, :20] = False
    a = analyze_edge(energies, cube, window=L3, valid=valid)
    assert not a.mask[:, :20].any() and np.all(a.labels[:, :20] == -1)
    b = analyze_edge(energies, cube, window=L3, valid=valid)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_non_finite_pixels_are_masked() -> None:
    energies, cube = _cube("pure", "L3")
    bad = cube.copy()
    mid = int(np.flatnonzero(energies > L3.e0 - 40)[0])  # between pre-edge and feature range
    bad[mid, 60, 60] = np.nan
    bad[:, 61, 61] = np.inf
    res = analyze_edge(energies, bad, window=L3)
    assert not res.mask[60, 60] and not res.mask[61, 61] and res.labels[60, 60] == -1
    assert np.isfinite(res.mean_spectra).all() and np.isfinite(res.spread).all()


def test_threads_give_identical_results() -> None:
    """Two tile threads (normalization, features, PCA, phase spectra) change nothing but speed:
    labels and masks are identical, the phase spectra equal to float64 rounding."""
    energies, cube = _cube("mixed", "L3")
    bad = cube.copy()
    bad[:, 5, 7] = np.nan  # a non-finite pixel: its tile of the phase spectra is gathered
    one = analyze_edge(energies, bad, window=L3, threads=1)
    two = analyze_edge(energies, bad, window=L3, threads=2)
    np.testing.assert_array_equal(one.labels, two.labels)
    np.testing.assert_array_equal(one.mask, two.mask)
    np.testing.assert_array_equal(one.snr, two.snr)
    np.testing.assert_allclose(two.mean_spectra, one.mean_spectra, rtol=0, atol=1e-12)
    np.testing.assert_allclose(two.spread, one.spread, rtol=0, atol=1e-12)


def test_phase_moments_equal_the_normalized_spectra() -> None:
    """The per-phase mean and spread from the raw block (rank-3 baseline, float32 chunks) equal
    those of the explicitly normalized spectra (float64 reference), with chunks holding NaN
    pixels outside the phases, on one and two threads."""
    from txm_live.phases import _athena_phase_moments

    rng = np.random.default_rng(4)
    n_e, n_pix = 300, 9000  # energies: three row bands of _MOMENT_ROWS (128), the last partial
    x = np.linspace(-100.0, 200.0, n_e)
    c0 = rng.uniform(0.5, 2.0, n_pix).astype(np.float32)
    c1 = rng.uniform(-1e-3, 1e-3, n_pix).astype(np.float32)
    g = rng.uniform(1.0, 5.0, n_pix).astype(np.float32)
    z = 1.0 + 0.3 * rng.standard_normal((n_e, n_pix))
    Y = (z / g + c0 + np.outer(x, c1)).astype(np.float32)
    Y[3, 4200] = np.nan  # a masked pixel: not in ``pix``
    finite = np.isfinite(Y).all(axis=0)
    pix = np.sort(rng.choice(np.flatnonzero(finite), 6000, replace=False))
    lab = rng.integers(0, 3, pix.size)
    mean, std = _athena_phase_moments(x, Y, pix, lab, 3, c0[pix], c1[pix], g[pix], finite=finite, threads=2)
    one = _athena_phase_moments(x, Y, pix, lab, 3, c0[pix], c1[pix], g[pix], finite=finite, threads=1)
    np.testing.assert_allclose(one[0], mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(one[1], std, rtol=0, atol=1e-12)
    zz = (Y[:, pix].astype(np.float64) - c0[pix] - np.outer(x, c1[pix].astype(np.float64))) * g[pix]
    for p in range(3):
        sel = zz[:, lab == p]
        # float32 chunks centred on a reference spectrum: errors ~1e-7 of values ~1
        np.testing.assert_allclose(mean[p], sel.mean(axis=1), rtol=0, atol=1e-6)
        np.testing.assert_allclose(std[p], sel.std(axis=1), rtol=1e-5, atol=0)


def test_row_medians_equal_numpy() -> None:
    from txm_live.phases import _row_medians

    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 4, 1001, 1000):
        for d in (rng.standard_normal((6, n)), np.round(rng.standard_normal((6, n)), 1), np.ones((6, n))):
            np.testing.assert_array_equal(_row_medians(d), np.median(d, axis=1))


def test_unordered_energies_and_wider_block() -> None:
    """A block wider than the window, with energies out of order, gives the same phases."""
    energies, cube = _cube("pure", "L3")
    extra_e = np.array([L3.end + 5.0, L3.start - 10.0])
    extra = np.repeat(cube[:1], 2, axis=0)
    order = np.random.default_rng(0).permutation(energies.size + 2)
    e_all = np.concatenate([energies, extra_e])[order]
    c_all = np.concatenate([cube, extra])[order]
    res = analyze_edge(e_all, c_all, window=L3)
    ref = _result("pure", "L3")
    np.testing.assert_array_equal(res.energies, ref.energies)
    assert adjusted_rand_score(ref.labels.ravel(), res.labels.ravel()) > 0.99


def test_progress_callback_names_stages() -> None:
    energies, cube = _cube("pure", "L3")
    seen: list[str] = []
    analyze_edge(energies, cube[:, :64, :64], window=L3, progress=seen.append)
    assert seen == ["select", "normalize", "snr", "features", "pca", "cluster", "summarize"]


def test_insufficient_energies_and_pixels() -> None:
    energies, cube = _cube("pure", "L3")
    near = (energies > L3.e0 - 100) & (energies < L3.e0 + 80)  # no post-edge energies
    with pytest.raises(InsufficientDataError, match="too few energies"):
        analyze_edge(energies[near], cube[near], window=L3)
    with pytest.raises(InsufficientDataError, match="too few energies"):
        analyze_edge(energies[::20], cube[::20], window=L3)  # 20 eV steps: feature range too sparse
    blank = np.random.default_rng(0).normal(0.0, 0.01, size=(energies.size, 32, 32)).astype(np.float32)
    with pytest.raises(InsufficientDataError, match="pixels pass the edge-step SNR"):
        analyze_edge(energies, blank, window=L3)
    valid = np.zeros(SHAPE, dtype=bool)
    with pytest.raises(InsufficientDataError, match="pixels pass"):
        analyze_edge(energies, cube, window=L3, valid=valid)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"energies": np.zeros((3, 3))}, "energies must be 1-D"),
        ({"block": np.zeros((5, 4, 4), dtype=np.float32)}, "block must be energy-major"),
        ({"block_dtype": np.int32}, "float array"),
        ({"window": "L3"}, "window must be an EdgeWindow"),
        ({"valid": np.ones((3, 3), dtype=bool)}, "valid must be a bool array"),
        ({"feature_range": (60.0, -20.0)}, "feature_range"),
        ({"method": "fancy"}, "method"),
        ({"threads": 0}, "threads"),
        ({"threads": 1.5}, "threads"),
    ],
)
def test_analyze_edge_validation(kwargs: dict, match: str) -> None:
    energies = _energies(L3, 10.0)
    block = np.zeros((energies.size, 8, 8), dtype=kwargs.pop("block_dtype", np.float32))
    args = {"energies": energies, "block": block, "window": L3}
    for key in ("energies", "block", "window"):
        if key in kwargs:
            args[key] = kwargs.pop(key)
    with pytest.raises(ValueError, match=match):
        analyze_edge(args["energies"], args["block"], window=args["window"], **kwargs)


# ----------------------------------------------------------------------------------------------
# compare_edges on constructed label maps


def _edge_result(labels: np.ndarray, edge: str, n_phases: int, score: np.ndarray | None = None) -> EdgeResult:
    n_e = 5
    kwargs = dict(
        edge=edge, e0=0.0, energies=np.arange(n_e, dtype=float), labels=labels,
        phase_names=tuple(f"p{i}" for i in range(n_phases)), mean_spectra=np.zeros((n_phases, n_e)),
        spread=np.zeros((n_phases, n_e)), counts=np.bincount(labels[labels >= 0], minlength=n_phases),
        snr=np.ones(labels.shape, np.float32), mask=labels >= 0, eps=1.0, min_samples=5, n_components=1,
    )
    if score is None:
        return EdgeResult(**kwargs)
    return PhaseAnalysis(**kwargs, majority_score=score)


def test_compare_edges_permuted_labels() -> None:
    rng = np.random.default_rng(0)
    l3 = rng.integers(-1, 3, size=(30, 30))
    perm = np.array([2, 0, 1])
    l2 = np.where(l3 >= 0, perm[np.clip(l3, 0, 2)], -1)
    l2[0, :10] = -1  # masked at L2 only
    flip = (l3 == 1) & (rng.random(l3.shape) < 0.1)  # 10 % of phase 1 disagree
    l2[flip] = perm[0]
    comp = compare_edges(_edge_result(l3, "L3", 3), _edge_result(l2, "L2", 3))
    assert comp.mapping == (1, 2, 0)  # L2 phase j -> L3 phase
    both = (l3 >= 0) & (l2 >= 0)
    assert comp.n_compared == int(both.sum())
    assert comp.contingency.sum() == comp.n_compared
    expected = 1.0 - np.count_nonzero(flip & both) / both.sum()
    assert comp.agreement == pytest.approx(expected)
    # phase 1 pixels that moved to phase 0 show up at difference -1 in row 1
    assert comp.difference_bins.tolist() == [-2, -1, 0, 1, 2]
    assert comp.difference_histograms[1, 1] == np.count_nonzero(flip & both)
    assert comp.difference_histograms.sum() == comp.n_compared
    assert comp.score_histograms.shape[0] == 0  # plain EdgeResults carry no score map


def test_compare_edges_unmatched_phase_and_scores() -> None:
    l3 = np.zeros((10, 10), dtype=int)
    l3[:, 5:] = 1
    l2 = l3.copy()
    l2[:2, :2] = 2  # an extra L2 phase with no L3 partner
    s3 = np.where(l3 == 1, 1.0, 0.0).astype(np.float32)
    s2 = s3 + 0.05
    comp = compare_edges(_edge_result(l3, "L3", 2, s3), _edge_result(l2, "L2", 3, s2))
    assert comp.mapping == (0, 1, -1)
    assert comp.agreement == pytest.approx(96 / 100)
    np.testing.assert_allclose(comp.score_difference_median, 0.05, atol=1e-6)
    assert comp.score_histograms.sum() == 100


def test_match_phases_and_compare_validation() -> None:
    mapping, cont = match_phases(np.full((4, 4), -1), np.zeros((4, 4), dtype=int))
    assert mapping == (-1,) and cont.shape == (0, 1)
    a = _edge_result(np.zeros((4, 4), dtype=int), "L3", 1)
    b = _edge_result(np.zeros((5, 4), dtype=int), "L2", 1)
    with pytest.raises(ValueError, match="shape"):
        compare_edges(a, b)
    with pytest.raises(ValueError, match="EdgeResult"):
        compare_edges(a, "L2")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# sigma filter and the MBACK path


def test_sigma_filter_denoises_but_keeps_edges_and_thin_lines() -> None:
    from txm_live.phases import sigma_filter

    rng = np.random.default_rng(0)
    H, W = 200, 40
    truth = np.zeros((H, W), dtype=np.float32)
    truth[:, 20:] = 6.0  # a step of 6 sigma
    truth[100, :] = -6.0  # a one-pixel line
    noisy = truth + rng.normal(size=(H, W)).astype(np.float32)
    pix = np.arange(H * W)
    out = sigma_filter(noisy.reshape(-1, 1), pix, (H, W), np.ones(H * W))[:, 0].reshape(H, W)
    err = out - truth
    rows = np.r_[5:95, 105:195]
    inside = err[rows][:, 2:17]
    assert np.std(inside) < 0.5 * np.std((noisy - truth)[rows][:, 2:17])
    # no blurring across the step: the columns next to it are unbiased
    assert abs(err[rows, 19].mean()) < 0.15 and abs(err[rows, 20].mean()) < 0.15
    # the one-pixel line keeps its contrast
    assert abs(err[100, 2:38].mean()) < 0.3
    # pixels outside ``pixels`` neither enter nor leave the filter
    part = pix[pix % W < 20]
    sub = sigma_filter(noisy.reshape(-1, 1)[part], part, (H, W), np.ones(part.size))
    assert sub.shape == (part.size, 1)
    assert abs((sub[:, 0].reshape(H, 20) - truth[:, :20])[rows, 19].mean()) < 0.15


def test_second_sigma_pass_separates_a_low_contrast_step_better() -> None:
    """Two phases 3 noise sigmas apart (a weak edge, frames resampled without bilinear smoothing):
    one pass cannot tell a neighbour across the step from a noisy one (its tolerance is ~3.9
    sigma for a difference). The second pass, on the filtered scores and their reduced noise,
    lowers the noise inside the phases by more than a quarter, biases the columns next to the
    step no more than one pass, and misclassifies fewer pixels (threshold halfway). Measured
    (seed 0): interior noise 0.40 -> 0.27, errors 0.60 % -> 0.40 % of the pixels."""
    from txm_live.phases import sigma_filter

    rng = np.random.default_rng(0)
    H, W = 200, 40
    truth = np.zeros((H, W), dtype=np.float32)
    truth[:, 20:] = 3.0
    noisy = truth + rng.normal(size=(H, W)).astype(np.float32)
    pix = np.arange(H * W)
    got = {}
    for passes in (1, 2):
        out = sigma_filter(noisy.reshape(-1, 1), pix, (H, W), np.ones(H * W), passes=passes)[:, 0].reshape(H, W)
        err = out - truth
        got[passes] = (np.std(err[:, 2:17]), abs(err[:, 19].mean()) + abs(err[:, 20].mean()),
                       np.mean((out > 1.5) != (truth > 1.5)))
    assert got[2][0] < 0.75 * got[1][0], got
    assert got[2][1] <= got[1][1], got
    assert got[2][2] < got[1][2], got
    with pytest.raises(ValueError, match="passes"):
        sigma_filter(noisy.reshape(-1, 1), pix, (H, W), np.ones(H * W), passes=0)


def test_mback_normalization_gives_the_same_phases() -> None:
    energies, cube = _cube("pure", "L3")
    res = analyze_edge(energies, cube[:, :64, :], window=L3, method="mback")
    ref = _result("pure", "L3")
    both = res.mask & ref.mask[:64]
    assert adjusted_rand_score(ref.labels[:64][both], res.labels[both]) > 0.9
    assert res.n_phases == ref.n_phases


# ----------------------------------------------------------------------------------------------
# phase refinement, one- and two-phase samples, options


def test_refine_phases_recovers_far_minority_and_absorbs_interfaces() -> None:
    from txm_live.phases import refine_phases

    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, 5000)
    b = rng.normal(10.0, 1.0, 4000)
    interface = rng.uniform(2.5, 7.5, 300)  # mixtures of a and b
    minority = rng.normal(-15.0, 0.7, 200)
    x = np.concatenate([a, b, interface, minority])[:, None]
    truth = np.repeat([0, 1, 0, 2], [5000, 4000, 300, 200])
    # DBSCAN-like input: dense cores of a and b, everything else in one noise pool (label 2)
    labels = np.where(np.abs(x[:, 0]) < 1.5, 0, np.where(np.abs(x[:, 0] - 10) < 1.5, 1, 2))
    out, major, minor = refine_phases(x, labels, (0, 1))
    assert major == (0, 1) and minor == (2,)
    found = out == 2
    assert np.count_nonzero(found & (truth == 2)) >= 0.98 * 200
    assert np.count_nonzero(found & (truth != 2)) <= 5  # interfaces and tails are not a phase
    # interface points join the nearer majority phase
    mid = np.flatnonzero(truth[:9000] < 2)
    assert np.mean(out[mid] == truth[mid]) > 0.99


def test_refine_phases_splits_two_phases_dbscan_merged() -> None:
    from txm_live.phases import refine_phases

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0.0, 1.0, 3000), rng.normal(5.0, 1.0, 2000)])[:, None]
    out, major, minor = refine_phases(x, np.zeros(5000, dtype=int), (0,))
    assert len(major) == 2 and minor == ()
    truth = np.repeat([0, 1], [3000, 2000])
    assert adjusted_rand_score(truth, out) > 0.85
    # one broad, skewed phase is not split
    y = rng.gamma(3.0, 1.0, 5000)[:, None]
    out1, major1, minor1 = refine_phases(y, np.zeros(5000, dtype=int), (0,))
    assert len(major1) == 1


def _mixtures(rng: np.random.Generator, a: np.ndarray, b: np.ndarray, fractions: np.ndarray,
              noise: float) -> np.ndarray:
    """Points ``(1 - f) a + f b`` plus isotropic noise: interface pixels of phases a and b."""
    return (1.0 - fractions)[:, None] * a + fractions[:, None] * b + rng.normal(0.0, noise, (fractions.size, a.size))


def _core_labels(x: np.ndarray, centres: list[tuple[float, float]]) -> np.ndarray:
    """DBSCAN-like input: the dense core around each centre, everything else one noise pool."""
    labels = np.full(x.shape[0], len(centres))
    for i, c in enumerate(centres):
        labels[np.hypot(*(x - np.asarray(c)).T) < 1.5] = i
    return labels


def test_refine_phases_gives_interface_mixtures_their_dominant_phase() -> None:
    """A thin phase (a rim, cracks) is mostly interface pixels, so its Gaussian is stretched along
    the mixing line; a likelihood rule then hands it the pixels that are mostly the other phase
    (measured before: 32 % of them). The dominant fraction decides, and the mixtures are no phase."""
    from txm_live.phases import refine_phases

    rng = np.random.default_rng(3)
    a, b = np.array([0.0, 0.0]), np.array([20.0, 0.0])
    f = rng.uniform(0.0, 1.0, 1500)
    x = np.concatenate([rng.normal(0.0, 1.0, (4000, 2)), b + rng.normal(0.0, 1.0, (600, 2)),
                        _mixtures(rng, a, b, f, 1.0)])
    truth = np.concatenate([np.zeros(4000), np.ones(600), (f > 0.5).astype(float)])
    out, major, minor = refine_phases(x, _core_labels(x, [(0, 0), (20, 0)]), (0, 1))
    assert major == (0, 1) and minor == ()
    mixed = slice(4600, None)
    clear = np.abs(f - 0.5) > 0.1  # the noise decides within +-0.1 of an even mixture
    assert np.mean(out[mixed][clear] == truth[mixed][clear]) > 0.97


def test_refine_phases_keeps_a_minority_and_rejects_a_clump_of_mixtures() -> None:
    """Both directions of the interface test: small inclusions (half of their pixels mixed with the
    phase around them) stay a minority phase; a dense clump of even mixtures of the two majority
    phases (an interface band) does not become one."""
    from txm_live.phases import refine_phases

    rng = np.random.default_rng(4)
    a, b, m = np.array([0.0, 0.0]), np.array([20.0, 0.0]), np.array([10.0, 8.0])
    x = np.concatenate([
        rng.normal(0.0, 1.0, (4000, 2)), b + rng.normal(0.0, 1.0, (3000, 2)),
        m + rng.normal(0.0, 0.7, (150, 2)), _mixtures(rng, a, m, rng.uniform(0.2, 0.5, 150), 0.7),
        _mixtures(rng, a, b, rng.normal(0.5, 0.03, 250), 0.7),
    ])
    out, major, minor = refine_phases(x, _core_labels(x, [(0, 0), (20, 0)]), (0, 1))
    assert major == (0, 1) and len(minor) == 1
    found = out == minor[0]
    assert np.count_nonzero(found[7000:7150]) >= 0.95 * 150  # the inclusions
    assert np.count_nonzero(found[7300:]) == 0  # the interface band is not the minority
    assert np.isin(out[7300:], major).all()  # nor a phase of its own


def test_refine_phases_does_not_split_off_interface_mixtures() -> None:
    """A majority cluster holding its phase and a band of mixtures with another phase is bimodal,
    but the band is not a phase (its mean lies on the segment between the two)."""
    from txm_live.phases import refine_phases

    rng = np.random.default_rng(5)
    a, b = np.array([0.0, 0.0]), np.array([20.0, 0.0])
    x = np.concatenate([rng.normal(0.0, 1.0, (4000, 2)), b + rng.normal(0.0, 1.0, (2000, 2)),
                        _mixtures(rng, a, b, rng.normal(0.6, 0.03, 800), 1.0)])
    labels = np.repeat([0, 1, 1], [4000, 2000, 800])  # DBSCAN chained the band to b
    out, major, minor = refine_phases(x, labels, (0, 1))
    assert len(major) == 2 and minor == ()


def _homogeneous_cube(kind: str) -> tuple[np.ndarray, np.ndarray]:
    from txm_live.sim.spectra import METAL, OXIDE, absolute_mu

    energies = _energies(L3)
    rng = np.random.default_rng(7)
    od = np.zeros((energies.size, 64, 64), dtype=np.float32)
    mu_m = absolute_mu(energies, METAL)[:, None, None] * 4.0  # 4 um thick
    mu_o = absolute_mu(energies, OXIDE)[:, None, None] * 4.0
    if kind == "metal":
        od[:, 8:56, 8:56] = mu_m
    else:  # metal and oxide side by side
        od[:, 8:56, 8:32] = mu_m
        od[:, 8:56, 32:56] = mu_o
    sample = rng.poisson(FLUX * np.exp(-od.astype(np.float64)))
    flat = rng.poisson(FLUX, size=od.shape)
    return energies, (-np.log(np.maximum(sample, 1) / flat)).astype(np.float32)


def test_one_and_two_phase_samples() -> None:
    energies, cube = _homogeneous_cube("metal")
    one = analyze_edge(energies, cube, window=L3)
    assert one.n_phases == 1 and one.phase_names == ("phase A",) and one.outlier_phases == ()
    assert one.counts[0] == 48 * 48
    energies, cube = _homogeneous_cube("two")
    two = analyze_edge(energies, cube, window=L3)
    assert two.n_phases == 2 and two.outlier_phases == ()
    assert np.all(two.labels[8:56, 8:32] == 0) and np.all(two.labels[8:56, 32:56] == 1)
    assert np.isnan(one.majority_score[one.mask]).all()  # one majority phase: no score axis
    assert np.isfinite(two.majority_score[two.mask]).all()


def test_options_without_filter_and_refinement_and_fixed_components() -> None:
    energies, cube = _cube("pure", "L3")
    res = analyze_edge(energies, cube[:, :64], window=L3, spatial_filter=False, refine=False, n_components=2)
    assert res.n_components == 2 and res.n_phases >= 2
    assert np.all(res.labels[res.mask] >= 0) and res.counts.sum() == res.mask.sum()
    assert res.explained_variance_ratio.shape == (2,)


def test_sigma_filter_blocks_and_threads_equal_one_pass() -> None:
    """The blocked, threaded sigma filter equals the straightforward one-pass filter (nine
    shifted copies over all pixels at once), for one and three components; two passes equal
    that filter applied to its own output and noise."""
    from scipy.special import gammaincinv

    from txm_live.phases import sigma_filter

    def reference(scores, pixels, shape, noise, confidence=0.95):
        H, W = shape
        n, k = scores.shape
        smap = np.zeros((k, H + 2, W + 2), dtype=np.float32)
        vmap = np.full((H + 2, W + 2), np.inf, dtype=np.float32)
        rows, cols = np.divmod(pixels, W)
        smap[:, rows + 1, cols + 1] = scores.T
        vmap[rows + 1, cols + 1] = noise.astype(np.float32) ** 2
        t2 = np.float32(2.0 * gammaincinv(0.5 * k, confidence))
        s0, v0 = smap[:, rows + 1, cols + 1], vmap[rows + 1, cols + 1]
        acc = np.zeros((k, n), dtype=np.float32)
        wsum = np.zeros(n, dtype=np.float32)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                sj, vj = smap[:, rows + 1 + dy, cols + 1 + dx], vmap[rows + 1 + dy, cols + 1 + dx]
                d2 = ((sj - s0) ** 2).sum(axis=0)
                ok = np.isfinite(vj) & (d2 <= t2 * (v0 + vj))
                w = np.where(ok, 1.0 / np.where(ok, vj, 1.0), 0.0).astype(np.float32)
                acc += sj * w
                wsum += w
        return (acc / wsum).T.astype(np.float32), (1.0 / np.sqrt(wsum)).astype(np.float32)

    rng = np.random.default_rng(11)
    H, W = 300, 250  # 75 000 pixels: three blocks
    pixels = np.sort(rng.choice(H * W, 60000, replace=False))
    for k in (1, 3):
        scores = (rng.integers(0, 3, (pixels.size, 1)) + 0.3 * rng.standard_normal((pixels.size, k))).astype(np.float32)
        noise = rng.uniform(0.1, 0.4, pixels.size).astype(np.float32)
        ref = reference(scores, pixels, (H, W), noise)
        twice = reference(*ref[:1], pixels, (H, W), ref[1])  # the second pass: filtered scores, their noise
        for threads in (1, 2):
            out, sd = sigma_filter(scores, pixels, (H, W), noise, passes=1, return_noise=True, threads=threads)
            np.testing.assert_array_equal(out, ref[0])
            np.testing.assert_array_equal(sd, ref[1])
            out, sd = sigma_filter(scores, pixels, (H, W), noise, passes=2, return_noise=True, threads=threads)
            np.testing.assert_array_equal(out, twice[0])
            np.testing.assert_array_equal(sd, twice[1])


def test_phase_means_and_noise_blocks_equal_the_references() -> None:
    """``_phase_means`` equals the means of ``_phase_sums`` (in place and gathered, 1 and 2
    threads); the row-blocked feature noise equals the all-rows-at-once formula."""
    from txm_live.phases import _noise_per_feature, _phase_means, _phase_sums, _row_medians

    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(12)
    F = rng.standard_normal((81, 20000)).astype(np.float32)
    for pix in (np.arange(F.shape[1]), np.sort(rng.choice(F.shape[1], 15000, replace=False))):
        lab = rng.integers(0, 3, pix.size)
        # single-threaded BLAS, as inside analyze_edge (a multi-threaded product splits its sums)
        with threadpool_limits(limits=1, user_api="blas"):
            ref = _phase_sums(F, pix, lab, 3)[0]
            for threads in (1, 2):
                np.testing.assert_array_equal(_phase_means(F, pix, lab, 3, threads=threads), ref)
    x = np.cumsum(rng.uniform(0.5, 1.5, F.shape[0]))
    h = np.diff(x)
    wl = h[1:] / (h[:-1] + h[1:])
    wr = 1.0 - wl
    d = F[1:-1] - (wl[:, None] * F[:-2] + wr[:, None] * F[2:])
    mad = _row_medians(np.abs(d - _row_medians(d)[:, None]))
    sig = np.empty(F.shape[0])
    sig[1:-1] = 1.4826 * mad / np.sqrt(1.0 + wl**2 + wr**2)
    sig[0], sig[-1] = sig[1], sig[-2]
    sig = np.maximum(sig, float(np.median(sig[sig > 0])) * 1e-3)
    for threads in (1, 2):
        np.testing.assert_array_equal(_noise_per_feature(F, x, threads=threads), sig)


def test_one_feature_log_density_equals_the_matrix_formula() -> None:
    """The one-feature shortcut of the mixture's Gaussian log-density gives the values of the
    general whitening product (inverse Cholesky factor times the centred points, einsum)."""
    from txm_live.refine import _log_gauss

    rng = np.random.default_rng(13)
    X = rng.normal(0.3, 2.0, (50000, 1))
    for mean, var in ((np.array([0.1]), 0.7), (np.array([-3.0]), 1e-4), (np.array([5.0]), 40.0)):
        cov = np.array([[var]])
        L = np.linalg.cholesky(cov)
        z = np.linalg.inv(L) @ (X - mean).T
        m2 = np.einsum("ij,ij->j", z, z)
        ref = -0.5 * (m2 + 2.0 * float(np.log(np.diag(L)).sum()) + np.log(2.0 * np.pi))
        got, got_m2 = _log_gauss(X, mean, cov)
        np.testing.assert_array_equal(got, ref)
        np.testing.assert_array_equal(got_m2, m2)


def test_pack_columns_in_place_equals_a_gather() -> None:
    """Packing the clustered pixels' columns to the front of each row in place gives the values
    of a gathered copy (sorted distinct columns, the first and last included)."""
    from txm_live.phases import _pack_columns

    rng = np.random.default_rng(14)
    A = rng.standard_normal((9, 5000)).astype(np.float32)
    for cols in (np.arange(5000), np.sort(rng.choice(5000, 3100, replace=False)), np.array([0, 4999]), np.array([7])):
        B = A.copy()
        _pack_columns(B, cols)
        np.testing.assert_array_equal(B[:, : cols.size], A[:, cols])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_refine_keeps_a_minority_despite_its_interface_mixtures(seed: int) -> None:
    """A minority phase far from two majority phases keeps its identity when its group also holds
    its interface mixtures with its host (a line of points toward that phase, which a two-pass
    sigma filter's 5 x 5 support multiplies): its core is tested, not the mixing line's spread
    (with the plain mean and covariance of the group this minority was rejected on all three
    seeds). Scattered tails around a phase (a halo, heavy-tailed noise) stay no phase."""
    from txm_live.refine import refine_phases

    rng = np.random.default_rng(seed)
    a, b, m = np.array([0.0, 0.0]), np.array([12.0, 0.0]), np.array([6.0, 14.0])
    t = rng.uniform(0, 1, (130, 1))
    X = np.vstack([
        rng.normal(a, 1.0, (3000, 2)), rng.normal(b, 1.0, (3000, 2)),
        rng.normal(m, 1.0, (120, 2)),  # the minority
        t * m + (1 - t) * a + rng.normal(0, 1.0, (130, 2)),  # its mixtures with its host a
        rng.uniform(0, 1, (300, 1)) * b + rng.normal(0, 1.0, (300, 2)),  # a-b interface mixtures
    ]).astype(np.float32)
    dbscan = np.r_[np.zeros(3000), np.ones(3000), -np.ones(550)].astype(np.int64)
    labels, majority, minority = refine_phases(X, dbscan, (0, 1))
    assert len(minority) == 1, minority
    assert np.all(labels[6000:6120] == minority[0])  # every pure minority point
    assert np.count_nonzero(labels == minority[0]) < 6120 + 130  # no a-b mixture

    r, th = rng.uniform(5, 12, 300), rng.uniform(0, 2 * np.pi, 300)
    X = np.vstack([
        rng.normal(a, 1.0, (3000, 2)), rng.normal(b, 1.0, (3000, 2)),
        np.c_[r * np.cos(th), r * np.sin(th)],  # a scattered halo around a
        b + 2.0 * rng.standard_t(2, (300, 2)),  # heavy tails around b
    ]).astype(np.float32)
    dbscan = np.r_[np.zeros(3000), np.ones(3000), -np.ones(600)].astype(np.int64)
    _, _, minority = refine_phases(X, dbscan, (0, 1))
    assert minority == ()
