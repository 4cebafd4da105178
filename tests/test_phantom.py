"""Tests of the corroded-particle phantom (txm_live.sim.phantom)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from txm_live.sim.phantom import FULL_SHAPE, Phantom, make_phantom
from txm_live.sim.spectra import METAL, OXIDE, absolute_mu, nd_number_density, normalized_mu

SMALL = (64, 64)


@pytest.fixture(scope="module")
def mixed() -> Phantom:
    return make_phantom(SMALL, mode="mixed", seed=0)


@pytest.fixture(scope="module")
def pure() -> Phantom:
    return make_phantom(SMALL, mode="pure", seed=0)


def test_interface_used_by_the_camera(mixed: Phantom) -> None:
    assert mixed.shape == SMALL
    assert mixed.pixel_size_nm == pytest.approx(31.2)
    assert mixed.labels.dtype == np.int8 and mixed.labels.shape == SMALL
    assert set(np.unique(mixed.labels)) == {0, 1, 2, 3}
    od = mixed.optical_density(6211.0)
    assert od.dtype == np.float32 and od.shape == SMALL
    for name in ("oxidized_fraction", "thickness_um", "metal_path_um", "oxide_path_um"):
        arr = getattr(mixed, name)
        assert arr.dtype == np.float32 and arr.shape == SMALL
        assert not arr.flags.writeable
    with pytest.raises(dataclasses.FrozenInstanceError):
        mixed.seed = 3  # type: ignore[misc]
    od[0, 0] = -1.0  # returned frames are the caller's to modify
    assert mixed.optical_density(6211.0)[0, 0] != -1.0


@pytest.mark.parametrize("mode", ["mixed", "pure"])
@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_phase_fractions(mode: str, size: int, seed: int) -> None:
    p = make_phantom((size, size), mode=mode, seed=seed)  # type: ignore[arg-type]
    fractions = p.phase_fractions()
    assert 0.02 <= fractions[3] <= 0.04, fractions
    assert 0.3 <= fractions[1] <= 0.5, fractions
    assert 0.45 <= fractions[2] <= 0.65, fractions
    assert np.count_nonzero(p.labels == 3) >= 60  # enough minority pixels to cluster


def test_full_size_geometry() -> None:
    p = make_phantom(FULL_SHAPE, mode="mixed", seed=0)
    area_um2 = np.count_nonzero(p.particle) * (p.pixel_size_nm * 1e-3) ** 2
    diameter = 2.0 * np.sqrt(area_um2 / np.pi)
    assert diameter == pytest.approx(18.7, abs=0.2)
    assert 6.5 < float(p.thickness_um.max()) <= 7.0
    assert p.phase_fractions()[3] == pytest.approx(0.03, abs=0.005)


def test_pure_mode_has_discrete_fractions(pure: Phantom) -> None:
    f, lab = pure.oxidized_fraction, pure.labels
    np.testing.assert_array_equal(np.unique(f), np.array([0.0, 0.5, 1.0], dtype=np.float32))
    assert np.all(f[lab == 2] == 0.0) and np.all(f[lab == 1] == 0.5) and np.all(f[lab == 3] == 1.0)
    assert np.all(pure.oxide_path_um[lab == 2] == 0.0)
    assert np.all(pure.metal_path_um[lab == 3] == 0.0)
    # the phase-1 material has the stated Nd fraction
    r = nd_number_density(OXIDE) / nd_number_density(METAL)
    sel = lab == 1
    nd_ox = r * pure.oxide_path_um[sel]
    np.testing.assert_allclose(nd_ox / (nd_ox + pure.metal_path_um[sel]), 0.5, rtol=1e-4)


def test_mixed_mode_has_continuous_fractions(mixed: Phantom) -> None:
    f, lab = mixed.oxidized_fraction, mixed.labels
    assert np.all((f >= 0) & (f <= 1))
    assert np.unique(f[lab == 1]).size > 200
    assert np.unique(f[lab == 2]).size > 200
    means = mixed.mean_oxidized_fraction()  # labels 1, 2, 3
    assert means[1] < means[0] < means[2]
    assert 0.05 < means[1] < 0.3 and 0.4 < means[0] < 0.6 and means[2] > 0.8
    # every column has both species (skin + mixed layer + core)
    particle = lab > 0
    assert np.all(mixed.oxide_path_um[particle] > 0)


@pytest.mark.parametrize("mode", ["mixed", "pure"])
def test_thickness_and_paths(mode: str) -> None:
    p = make_phantom(SMALL, mode=mode, seed=0)  # type: ignore[arg-type]
    np.testing.assert_allclose(p.metal_path_um + p.oxide_path_um, p.thickness_um, atol=1e-5)
    assert np.all(p.thickness_um[p.labels == 0] == 0)
    assert np.all(p.thickness_um[p.labels > 0] > 0)
    assert p.thickness_um.max() <= 7.0
    # minority pockets sit in the thick part so their spectra have a usable SNR
    assert p.thickness_um[p.labels == 3].min() >= 3.0


@pytest.mark.parametrize("mode", ["mixed", "pure"])
def test_transmissions_are_physical(mode: str) -> None:
    """Particle transmissions: > 0.5 below the L3 edge, > 0.25 on the post-edge, > 0.03 on the
    white line (thickest oxide column); background transmits 1."""
    p = make_phantom(SMALL, mode=mode, seed=0)  # type: ignore[arg-type]
    part = p.particle
    t_pre = np.exp(-p.optical_density(6150.0))
    t_wl = np.exp(-p.optical_density(6211.5))
    t_post = np.exp(-p.optical_density(6350.0))
    assert t_pre[part].min() > 0.5
    assert t_post[part].min() > 0.25
    assert t_wl[part].min() > 0.03
    assert np.all(t_pre[~part] == 1.0)
    assert np.all(t_wl[part] < t_pre[part])  # every particle pixel shows the edge


def test_optical_density_is_paths_times_mu(mixed: Phantom) -> None:
    energies = np.array([6100.0, 6208.0, 6211.0, 6500.0, 6724.0, 7000.0])
    stack = mixed.optical_density_stack(energies)
    assert stack.shape == (energies.size, *SMALL) and stack.dtype == np.float32
    mu_m, mu_o = absolute_mu(energies, METAL), absolute_mu(energies, OXIDE)
    expected = (
        mixed.metal_path_um[None].astype(np.float64) * mu_m[:, None, None]
        + mixed.oxide_path_um[None].astype(np.float64) * mu_o[:, None, None]
    )
    np.testing.assert_allclose(stack, expected, rtol=1e-5, atol=1e-7)
    for i, e in enumerate(energies):
        np.testing.assert_allclose(mixed.optical_density(float(e)), stack[i], rtol=1e-6)
    # cached second call gives the same frame
    np.testing.assert_array_equal(mixed.optical_density(6211.0), mixed.optical_density(6211.0))


def test_ground_truth_spectra(pure: Phantom, mixed: Phantom) -> None:
    e = np.arange(6150.0, 6400.0, 1.0)
    gt = pure.ground_truth_spectra(e)
    assert gt.shape == (3, e.size)
    np.testing.assert_allclose(gt[1], normalized_mu(e, METAL))
    np.testing.assert_allclose(gt[2], normalized_mu(e, OXIDE))
    np.testing.assert_allclose(gt[0], 0.5 * (gt[1] + gt[2]))
    gm = mixed.ground_truth_spectra(e, edge="L3")
    # white-line heights ordered metal < mixed < oxide
    assert gm[1].max() < gm[0].max() < gm[2].max()


def test_label_mean_optical_density(mixed: Phantom) -> None:
    e = np.array([6150.0, 6211.0, 6400.0])
    mean_od = mixed.label_mean_optical_density(e)
    stack = mixed.optical_density_stack(e)
    for i, k in enumerate((1, 2, 3)):
        np.testing.assert_allclose(mean_od[i], stack[:, mixed.labels == k].mean(axis=1), rtol=1e-4)


def test_deterministic_by_seed() -> None:
    a = make_phantom(SMALL, mode="mixed", seed=7)
    b = make_phantom(SMALL, mode="mixed", seed=7)
    c = make_phantom(SMALL, mode="mixed", seed=8)
    for name in ("labels", "oxidized_fraction", "metal_path_um", "oxide_path_um"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert np.mean(a.labels != c.labels) > 0.05
    assert not np.array_equal(a.thickness_um, c.thickness_um)
    # pure and mixed share the geometry
    p = make_phantom(SMALL, mode="pure", seed=7)
    np.testing.assert_array_equal(p.labels > 0, a.labels > 0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"shape": (8, 64)}, "shape"),
        ({"shape": (64.0, 64)}, "shape"),
        ({"mode": "crisp"}, "mode"),
        ({"seed": -1}, "seed"),
        ({"oxide_pocket_fraction": 0.0}, "oxide_pocket_fraction"),
        ({"oxide_pocket_fraction": 0.5}, "oxide_pocket_fraction"),
        ({"mixed_zone_fraction": 1.2}, "mixed_zone_fraction"),
        ({"mixed_oxide_fraction": 1.0}, "mixed_oxide_fraction"),
        ({"max_thickness_um": -1.0}, "max_thickness_um"),
        ({"area_fraction": 0.99}, "area_fraction"),
        ({"pixel_size_nm": 0.0}, "pixel_size_nm"),
        ({"interface_width_px": float("nan")}, "interface_width_px"),
    ],
)
def test_invalid_arguments_name_the_parameter(kwargs: dict, name: str) -> None:
    args = {"shape": SMALL, **kwargs}
    shape = args.pop("shape")
    with pytest.raises(ValueError, match=name):
        make_phantom(shape, **args)


def test_invalid_energy(mixed: Phantom) -> None:
    with pytest.raises(ValueError, match="energy"):
        mixed.optical_density(float("nan"))
    with pytest.raises(ValueError, match="energies"):
        mixed.optical_density_stack(np.array([[6200.0]]))


def _oracle_scores(p: Phantom, n_photons: float, seed: int) -> tuple[float, float, float]:
    """Classify pixels from Poisson-noisy spectra with the true reference mu (ideal analysis).

    Per pixel, a least-squares fit of the noisy OD on [6100, 6500] eV with the two true
    absolute mu gives the Nd oxidized fraction, thresholded half-way between the label means.
    Pixels thinner than 1 um (edge-step SNR < ~3) are left out, as an SNR mask would.
    """
    e = np.arange(6100.0, 6500.0, 2.0)
    od = p.optical_density_stack(e).reshape(e.size, -1).astype(np.float64)
    rng = np.random.default_rng(seed)
    sample = rng.poisson(n_photons * np.exp(-od))
    flat = rng.poisson(n_photons, size=od.shape)
    od_meas = -np.log(np.maximum(sample, 1) / flat)
    basis = np.stack([absolute_mu(e, METAL), absolute_mu(e, OXIDE)], axis=1)
    coef = np.linalg.lstsq(basis, od_meas, rcond=None)[0]
    nd_ox = nd_number_density(OXIDE) / nd_number_density(METAL) * coef[1]
    f_hat = nd_ox / np.maximum(nd_ox + coef[0], 1e-9)
    means = p.mean_oxidized_fraction()
    pred = np.where(
        f_hat > 0.5 * (means[0] + means[2]), 3, np.where(f_hat > 0.5 * (means[0] + means[1]), 1, 2)
    )
    labels = p.labels.ravel()
    keep = (labels > 0) & (p.thickness_um.ravel() > 1.0)
    lab, pr = labels[keep], pred[keep]
    tp = np.count_nonzero((lab == 3) & (pr == 3))
    return (
        float(adjusted_rand_score(lab, pr)),
        tp / max(np.count_nonzero(lab == 3), 1),
        tp / max(np.count_nonzero(pr == 3), 1),
    )


@pytest.mark.parametrize(("mode", "min_ari"), [("pure", 0.95), ("mixed", 0.85)])
def test_phases_are_separable_at_the_default_photon_budget(mode: str, min_ari: float) -> None:
    """Design check: an ideal analysis reaches the accuracy targets on this phantom."""
    p = make_phantom((128, 128), mode=mode, seed=3)  # type: ignore[arg-type]
    ari, recall, precision = _oracle_scores(p, 5000.0, seed=0)
    assert ari >= min_ari
    assert recall >= 0.9 and precision >= 0.9
