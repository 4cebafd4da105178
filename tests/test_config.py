"""TOML configuration: defaults, round trip, overrides, helpful errors."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from txm_live.config import TxmLiveConfig, WindowOverride, default_toml, load_config


def test_defaults_without_file():
    cfg = load_config()
    assert cfg == TxmLiveConfig()
    # element and edges: from the start document, else the data (never a silent "Nd")
    assert cfg.element is None and cfg.edges is None and cfg.edge_windows() == ()
    assert cfg.method == "athena" and cfg.post_order is None
    assert cfg.analysis_options() == {}
    l3, l2 = cfg.replace(element="Nd", edges=("L3", "L2")).edge_windows()
    assert l3.edge == "L3" and 6200 < l3.e0 < 6215 and l2.edge == "L2"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]


def test_default_toml_is_valid_and_round_trips(tmp_path):
    text = default_toml()
    data = tomllib.loads(text)
    assert {"analysis", "stream", "preview", "output", "demo"} <= set(data)
    assert "# [windows.K]" in text  # an example, commented out: windows need element and edges
    path = tmp_path / "c.toml"
    path.write_text(text)
    cfg = load_config(path)
    # the printed windows are the defaults, so the loaded windows equal the default ones
    assert cfg.edge_windows() == TxmLiveConfig().edge_windows()
    assert dataclasses.replace(cfg, windows=()) == TxmLiveConfig()


def test_file_values_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        """
[analysis]
element = "Nd"
edges = ["L3"]
snr_threshold = 4.5
[analysis.dbscan]
eps = 0.3
min_samples = 15
[windows.L3]
post = [90.0, 400.0]
[stream]
energy_key = "energy"
[output]
directory = "somewhere"
[demo]
flux = 8000.0
"""
    )
    cfg = load_config(path, seed=7, out=tmp_path / "flag", snr_threshold=None)
    assert cfg.edges == ("L3",) and cfg.energy_key == "energy" and cfg.flux == 8000.0
    assert cfg.seed == 7 and cfg.out == str(tmp_path / "flag")  # flags win
    assert cfg.snr_threshold == 4.5  # unset flag (None) leaves the file's value
    assert cfg.analysis_options() == {"eps": 0.3, "min_samples": 15, "snr_threshold": 4.5}
    (l3,) = cfg.edge_windows()
    assert l3.post == (90.0, 400.0) and l3.pre == (-200.0, -60.0)
    assert cfg.windows == (WindowOverride("L3", post=(90.0, 400.0)),)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[analysis]\nelemnt = 'Nd'\n", "unknown key 'elemnt'"),
        ("[analysys]\nelement = 'Nd'\n", r"unknown section \[analysys\]"),
        ("[windows.L3]\nstart = 1\n", "windows.L3"),
        ("[analysis]\nelement = 'Nd'\nedges = ['L3']\n[windows.L1]\ne0 = 7126.0\n", "windows: edge 'L1'"),
        ("[windows.K]\npost_order = 1\n", r"needs \[analysis\] element and edges"),
        ("[analysis]\nmethod = 'larch'\n", "method must be 'athena' or 'mback'"),
        ("[analysis]\npost_order = 3\n", "post_order must be 0, 1 or 2"),
        ("[analysis]\nedges = []\n", "edges must name at least one edge"),
        ("[demo]\nsize = 'huge'\n", "size must be one of"),
        ("[analysis.dbscan]\neps = -1.0\n", "dbscan_eps"),
        ("[analysis\n", "invalid TOML"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        load_config(path)
    assert "bad.toml" in str(info.value)


def test_missing_file_and_unknown_override(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ValueError, match="unknown configuration option"):
        load_config(sedd=3)


def test_element_edges_method_and_post_order(tmp_path):
    path = tmp_path / "fe.toml"
    path.write_text(
        """
[analysis]
element = "Fe"
edges = ["K"]
method = "mback"
post_order = 1
[windows.K]
post = [40.0, 150.0]
post_order = 2
"""
    )
    cfg = load_config(path)
    assert cfg.element == "Fe" and cfg.edges == ("K",)
    assert cfg.analysis_options() == {"method": "mback", "post_order": 1}
    (k,) = cfg.edge_windows()
    assert k.element == "Fe" and k.edge == "K" and 7100 < k.e0 < 7125
    assert k.post == (40.0, 150.0) and k.post_order == 2
    # a single edge given as a string (a CLI flag) is one edge, not its letters
    assert TxmLiveConfig().replace(edges="L3").edges == ("L3",)
    # the printed file keeps all of it
    again = tmp_path / "again.toml"
    again.write_text(cfg.to_toml())
    assert load_config(again).edge_windows() == cfg.edge_windows()
    assert load_config(again).analysis_options() == cfg.analysis_options()


def test_analysis_threads_from_the_file_reach_analyze_edge(tmp_path):
    """``[analysis] threads`` (an analysis server, a replay) is passed to every edge analysis;
    the default 1 passes nothing (analyze_edge's own default, gentle with acquisition)."""
    import inspect

    from txm_live.phases import analyze_edge

    path = tmp_path / "c.toml"
    path.write_text("[analysis]\nthreads = 2\n")
    opts = load_config(path).analysis_options()
    assert opts == {"threads": 2}
    assert "threads" in inspect.signature(analyze_edge).parameters
    assert "threads" not in load_config().analysis_options()
    path.write_text("[analysis]\nthreads = 0\n")
    with pytest.raises(ValueError, match=r"\[analysis\] threads"):
        load_config(path)
    path.write_text("[analysis]\nthreads = 1.5\n")
    with pytest.raises(ValueError, match=r"\[analysis\] threads.*integer"):
        load_config(path)


def test_interpolation_order_from_the_file_reaches_the_callbacks_sessions(tmp_path):
    """``[analysis] interpolation_order`` (1 bilinear, 3 cubic: the default) is passed to the
    session of every run of demo, replay and serve; anything else is refused naming the key."""
    from txm_live.callbacks.cli import _callback_factory
    from txm_live.session import XanesSession

    assert load_config().session_options() == {"interpolation_order": 3}
    path = tmp_path / "c.toml"
    path.write_text("[analysis]\ninterpolation_order = 1\n")
    cfg = load_config(path)
    cb = _callback_factory(cfg)()
    assert cb.session_options["interpolation_order"] == 1
    session = XanesSession(**cb.session_options)
    assert session.interpolation_order == 1
    path.write_text("[analysis]\ninterpolation_order = 2\n")
    with pytest.raises(ValueError, match=r"\[analysis\] interpolation_order"):
        load_config(path)
