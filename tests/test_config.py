"""TOML configuration: defaults, round trip, overrides, helpful errors."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from txm_live.config import TxmLiveConfig, WindowOverride, default_toml, load_config


def test_defaults_without_file():
    cfg = load_config()
    assert cfg == TxmLiveConfig()
    assert cfg.element == "Nd" and cfg.edges == ("L3", "L2")
    assert cfg.analysis_options() == {}
    l3, l2 = cfg.edge_windows()
    assert l3.edge == "L3" and 6200 < l3.e0 < 6215 and l2.edge == "L2"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]


def test_default_toml_is_valid_and_round_trips(tmp_path):
    text = default_toml()
    data = tomllib.loads(text)
    assert {"analysis", "stream", "preview", "output", "demo", "windows"} <= set(data)
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
        ("[windows.L1]\ne0 = 7126.0\n", "windows: edge 'L1'"),
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
