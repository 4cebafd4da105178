"""Dask options: the [dask] config key, the --dask flags, and validation (no cluster needed)."""

from __future__ import annotations

import pytest

from txm_live.config import load_config


def test_dask_scheduler_from_toml_and_flag(tmp_path) -> None:
    path = tmp_path / "txm-live.toml"
    path.write_text('[dask]\nscheduler = "tcp://10.0.0.5:8786"\n')
    assert load_config(path).dask == "tcp://10.0.0.5:8786"
    assert load_config(path, dask="local:2").dask == "local:2"  # the flag wins
    assert load_config().dask is None  # default: the local analysis process
    assert 'scheduler = "local:2"' in load_config(dask="local:2").to_toml()


def test_cli_replay_and_serve_accept_dask() -> None:
    from txm_live.callbacks.cli import build_parser

    args = build_parser().parse_args(["serve", "--zmq", "127.0.0.1:5568", "--dask", "tcp://h:8786"])
    assert args.dask == "tcp://h:8786"
    args = build_parser().parse_args(["replay", "--catalog", "x", "--dask", "local:2", "abc"])
    assert args.dask == "local:2"


def test_live_callback_rejects_a_bad_dask_value() -> None:
    from txm_live.callbacks.live import XanesLiveCallback

    with pytest.raises(ValueError, match="dask must be"):
        XanesLiveCallback(dask=8786, analysis_process=False)


def test_connect_rejects_bad_addresses() -> None:
    pytest.importorskip("distributed")
    from txm_live.distributed import connect

    with pytest.raises(ValueError, match="address"):
        connect(42)
    with pytest.raises(ValueError, match="N >= 1"):
        connect("local:0")
