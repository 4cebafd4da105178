from __future__ import annotations

import pytest

import numpy as np

from txm_live.edges import EdgeWindow, default_windows, edge_energy, fit_window
from txm_live.errors import InsufficientDataError


def test_nd_default_windows_follow_physics_and_do_not_overlap() -> None:
    l3, l2 = default_windows("Nd", ("L3", "L2"))
    assert (l3.e0, l2.e0) == (6208.0, 6722.0)
    assert (l3.start, l3.end) == (6008.0, 6648.0)
    assert l3.end < l2.start, "the L3 post-edge window must never reach the L2 edge region"
    assert l2.end <= 7023.0, "L2 window must fit inside the 6000-7023 eV scan"
    assert l3.name == "Nd L3"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"pre": (-60.0, -200.0)}, "pre"), ({"post": (-1.0, 10.0)}, "post")],
)
def test_window_validation_names_parameter(kwargs: dict, name: str) -> None:
    base = {"element": "Nd", "edge": "L3", "e0": 6208.0, "pre": (-200.0, -60.0), "post": (90.0, 440.0)}
    with pytest.raises(ValueError, match=name):
        EdgeWindow(**{**base, **kwargs})


def test_unknown_edge_is_a_named_error() -> None:
    with pytest.raises(ValueError, match="edges"):
        default_windows("Nd", ("M9",))
    with pytest.raises(ValueError, match="Nd"):
        edge_energy("Nd", "Q1")


# --------------------------------------------------------------------------------------------
# any element, any edge


@pytest.mark.parametrize(
    ("element", "edges"),
    [("Fe", ("K",)), ("Ni", ("K",)), ("Fe", ("L3", "L2")), ("Mn", ("L3", "L2")), ("Ce", ("L3", "L2", "L1")),
     ("Nd", ("M5", "M4")), ("C", ("K",)), ("U", ("M5", "M4"))],
)
def test_windows_never_reach_the_next_edge(element: str, edges: tuple[str, ...]) -> None:
    import xraydb

    all_edges = sorted(e.energy for e in xraydb.xray_edges(element).values())
    for w in default_windows(element, edges):
        # the edge's own ranges; a joint window (join_windows) is normalized on its group's ranges,
        # which start below the previous edge by design
        start, end = w.e0 + w.pre[0], w.e0 + w.post[1]
        above = [e for e in all_edges if e > w.e0]
        if above:
            assert end < min(above), f"{w.name} window ends at {end}, beyond the next edge {min(above)}"
        below = [e for e in all_edges if e < w.e0]
        if below:
            assert start > max(below), f"{w.name} window starts below the previous edge"
        assert w.pre[0] < w.pre[1] < 0 < w.post[0] < w.post[1]
        if w.joint is not None:
            assert w.joint.element == element and w.joint.e0 < w.e0 and w.start == w.joint.start


def test_soft_xray_windows_are_tens_of_ev() -> None:
    l3, l2 = default_windows("Fe", ("L3", "L2"))
    assert l3.end - l3.start < 40.0 and l2.post[1] - l2.pre[0] < 50.0, (l3, l2)
    assert l3.end < l2.e0 and l2.e0 + l2.pre[0] > l3.e0 + 2.0, "L2 pre-edge must stay out of the L3 white line"
    assert l2.end - l2.start < 80.0, "the joint L2,3 window spans the pair, tens of eV"
    (k,) = default_windows("Fe", ("K",))
    assert k.end - k.start > 300.0, "a hard-X-ray window keeps the physics.md span"


def test_fit_window_shrinks_into_the_real_stxm_energy_grid() -> None:
    energies = np.concatenate([np.arange(700.0, 703.0, 0.375), np.arange(703.0, 720.2, 0.2),
                               np.arange(720.36, 730.4, 0.357)])
    l3, l2 = default_windows("Fe", ("L3", "L2"), energies=energies)
    for w in (l3, l2):
        assert energies.min() - 1e-9 <= w.start and w.end <= energies.max() + 1e-9, w
        assert w.e0 + w.pre[1] < w.e0 - 1.0, "pre-edge never closer to e0 than 5 core-hole widths"
    assert l3.end < l2.e0
    # the window is what the scan covers: the first pre-edge point is the first energy
    assert l3.start == pytest.approx(700.0)


def test_fit_window_keeps_a_covered_window_and_relaxes_only_when_needed() -> None:
    (l3,) = default_windows("Nd", ("L3",))
    energies = np.arange(5900.0, 7100.0, 1.0)
    fitted = fit_window(l3, energies)
    assert (fitted.pre, fitted.post) == (l3.pre, l3.post)
    # a Ce L3 reference scan starting 50 eV below the edge: the pre-edge moves towards e0
    (ce,) = default_windows("Ce", ("L3",))
    e = np.concatenate([np.arange(5673.0, 5708.0, 5.0), np.arange(5708.0, 5738.0, 0.25), np.arange(5738.0, 6100.0, 3.0)])
    fitted = fit_window(ce, e)
    assert fitted.pre[0] == pytest.approx(-50.0)
    assert -50.0 < fitted.pre[1] <= -5.0 * 3.4, "never closer than 5 core-hole widths (Ce L3: 3.48 eV)"


def test_fit_window_insufficient_data_names_edge_ranges_and_counts() -> None:
    (k,) = default_windows("Fe", ("K",))
    with pytest.raises(InsufficientDataError, match=r"Fe K.*pre-edge range.*need 3"):
        fit_window(k, np.arange(7105.0, 7300.0, 1.0))
    with pytest.raises(InsufficientDataError, match="Fe L3"):
        default_windows("Fe", ("L3",), energies=np.linspace(705.5, 712.0, 30))


def test_post_order_validation_and_unsupported_edges() -> None:
    with pytest.raises(ValueError, match="post_order"):
        EdgeWindow("Fe", "K", 7112.0, (-30.0, -10.0), (40.0, 150.0), post_order=3)
    assert EdgeWindow("Fe", "K", 7112.0, (-30.0, -10.0), (40.0, 150.0), post_order=1).post_order == 1
    with pytest.raises(ValueError, match="below 250 eV"):
        default_windows("Fe", ("M5",))
    with pytest.raises(ValueError, match="edges"):
        default_windows("Fe", "K")


# ----------------------------------------------------------------------------------------------
# joint normalization of overlapping edges, feature range scaled with the edge


def test_join_rule_is_on_the_windows_not_the_edge_names() -> None:
    from dataclasses import replace

    from txm_live.edges import join_windows

    fe_l3, fe_l2 = default_windows("Fe", ("L3", "L2"))
    assert fe_l3.joint is None and fe_l2.joint == fe_l3  # L2 pre-edge on the L3 post-edge
    assert fe_l2.normalization is fe_l2.joint and fe_l3.normalization is fe_l3
    m5, m4 = default_windows("Ce", ("M5", "M4"))
    assert m4.joint == m5  # the same rule for a spin-orbit M pair
    nd_l3, nd_l2 = default_windows("Nd", ("L3", "L2"))  # 514 eV apart: separate windows
    assert nd_l2.joint is None and nd_l3.features is None and nd_l2.features is None
    (k,) = default_windows("Fe", ("K",))
    assert k.joint is None and k.features is None
    # override: no joint
    own = default_windows("Fe", ("L3", "L2"), joint=False)
    assert all(w.joint is None and w.features is None for w in own)
    # the rule is the overlap: Nd-like windows moved to overlap are joined, in any order
    near = replace(nd_l2, pre=(-(nd_l2.e0 - nd_l3.end) - 10.0, -20.0))
    assert join_windows([near, nd_l3])[0].joint == join_windows([near, nd_l3])[1]
    # idempotent, and other elements untouched
    plain = default_windows("Fe", ("L3", "L2"), joint=False)
    once = join_windows([*plain, k])
    assert once == (fe_l3, fe_l2, k) and join_windows(once) == once
    with pytest.raises(ValueError, match="joint"):
        EdgeWindow("Fe", "L2", 719.9, (-7.0, -2.0), (7.0, 10.0), joint=nd_l3)


def test_feature_range_scales_with_the_edge_and_keeps_hard_x_ray_numbers() -> None:
    nd_l3, nd_l2 = default_windows("Nd", ("L3", "L2"))
    (fe_k,) = default_windows("Fe", ("K",))
    for w in (nd_l3, nd_l2, fe_k):
        assert w.feature_range == (-20.0, 60.0), w.name
    fe_l3, fe_l2 = default_windows("Fe", ("L3", "L2"), joint=False)
    s = fe_l3.e0 / 6000.0
    assert fe_l3.feature_range == pytest.approx((-20.0 * s, 60.0 * s))  # 704.4 - 713.9 eV
    assert fe_l3.pre[0] < fe_l3.feature_range[0] and fe_l3.feature_range[1] < fe_l3.post[1]
    # joined: the lower edge's features run up to the upper edge's, tiling the L2,3 spectrum
    j3, j2 = default_windows("Fe", ("L3", "L2"))
    assert j3.feature_range[0] == fe_l3.feature_range[0]
    assert j3.e0 + j3.feature_range[1] == pytest.approx(j2.e0 + j2.feature_range[0])
    # explicit override, validated
    w = EdgeWindow("Fe", "L3", 706.8, (-6.8, -2.0), (5.6, 11.3), features=(-3.0, 9.0))
    assert w.feature_range == (-3.0, 9.0)
    with pytest.raises(ValueError, match="features"):
        EdgeWindow("Fe", "L3", 706.8, (-6.8, -2.0), (5.6, 11.3), features=(9.0, -3.0))


def test_fit_window_keeps_features_and_fits_the_joint_window() -> None:
    e = np.concatenate([np.arange(700.0, 703.0, 0.375), np.arange(703.0, 720.2, 0.2),
                        np.arange(720.36, 730.4, 0.357)])
    l3, l2 = default_windows("Fe", ("L3", "L2"))
    f2 = fit_window(l2, e)
    assert f2.joint == fit_window(l3, e) and f2.features == l2.features
    assert f2.start == pytest.approx(700.0) and f2.end <= 730.4


def test_joint_normalization_is_one_curve_across_the_pair() -> None:
    """A two-step L2,3 spectrum on a sloping background: the joint L2 normalization is the L3
    normalization of the same spectrum, written about the L2 e0; its post-edge is flat."""
    from txm_live.normalize import normalize_window

    e = np.arange(700.0, 730.4, 0.25)
    l3, l2 = default_windows("Fe", ("L3", "L2"), energies=e)
    step = lambda x, e0: 0.5 + np.arctan(2 * (e - e0) / 0.8) / np.pi  # noqa: E731
    mu = (0.6 - 0.004 * (e - 700.0) + 0.10 * step(e, 706.8) + 0.05 * step(e, 719.9)
          + 0.7 * np.exp(-0.5 * ((e - 708.0) / 0.8) ** 2) + 0.3 * np.exp(-0.5 * ((e - 721.0) / 0.9) ** 2))
    spectra = np.stack([mu, 2.0 * mu], axis=1)
    n3 = normalize_window(e, spectra, l3)
    n2 = normalize_window(e, spectra, l2)
    np.testing.assert_allclose(n2.norm, n3.norm)
    np.testing.assert_allclose(n2.edge_step, n3.edge_step)
    assert n2.e0 == l2.e0
    np.testing.assert_allclose(n2.pre_edge_line(e), n3.pre_edge_line(e))
    np.testing.assert_allclose(n2.post_edge_line(e), n3.post_edge_line(e))
    post = (e >= l2.e0 + l2.post[0]) & (e <= l2.e0 + l2.post[1])
    assert np.ptp(n2.norm[post, 0]) < 0.05 * n2.norm[post, 0].mean()
