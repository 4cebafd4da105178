from __future__ import annotations

import pytest

from txm_live.edges import EdgeWindow, default_windows, edge_energy


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
