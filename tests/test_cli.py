"""The txm-live command line: instant help, documented options, config printing, clean errors."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib

import pytest

from txm_live.callbacks.cli import build_parser, main


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_help_is_instant_and_imports_nothing_heavy():
    code = (
        "import sys\n"
        "from txm_live.callbacks.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('numpy', 'bluesky', 'ophyd', 'matplotlib', 'tiled', 'river', 'zmq') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    assert "demo" in out and "replay" in out and "serve" in out and "config" in out


def test_every_option_has_help():
    parser = build_parser()
    subs = _subparsers(parser)
    assert set(subs) == {"demo", "replay", "serve", "config"}
    for name, sub in [("txm-live", parser), *subs.items()]:
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help and len(action.help) > 10, f"{name} {action.option_strings or action.dest} lacks help"


def test_subcommand_options_parse():
    p = build_parser()
    a = p.parse_args(["demo", "--size", "tiny", "--out", "o", "--seed", "3", "--live-plot"])
    assert (a.command, a.size, a.out, a.seed, a.live_plot) == ("demo", "tiny", "o", 3, True)
    a = p.parse_args(["replay", "--catalog", "http://127.0.0.1:8000", "u1", "u2"])
    assert a.uids == ["u1", "u2"] and a.catalog.startswith("http")
    a = p.parse_args(["serve", "--zmq", "127.0.0.1:5568", "--serializer", "pickle", "--allow-pickle"])
    assert a.zmq == "127.0.0.1:5568" and a.allow_pickle and a.serializer == "pickle"
    with pytest.raises(SystemExit):
        p.parse_args(["demo", "--size", "huge"])
    with pytest.raises(SystemExit):
        p.parse_args(["replay", "u1"])  # --catalog is required


def test_config_print_is_valid_toml(capsys):
    assert main(["config", "--print"]) == 0
    data = tomllib.loads(capsys.readouterr().out)
    assert "element" not in data["analysis"]  # omitted: from the start document, else detected
    assert data["analysis"]["method"] == "athena"
    assert data["demo"]["size"] == "small"
    assert "windows" not in data


def test_config_print_merges_a_file(tmp_path, capsys):
    f = tmp_path / "c.toml"
    f.write_text("[demo]\nseed = 42\n")
    assert main(["config", "--print", "--config", str(f)]) == 0
    assert tomllib.loads(capsys.readouterr().out)["demo"]["seed"] == 42


def test_bad_config_is_a_clean_error(tmp_path, capsys):
    f = tmp_path / "bad.toml"
    f.write_text("[demo]\nsede = 42\n")
    assert main(["demo", "--config", str(f)]) == 1
    err = capsys.readouterr().err
    assert "unknown key 'sede'" in err and "Traceback" not in err
    assert main(["config", "--config", str(tmp_path / "missing.toml")]) == 1
    assert "missing.toml" in capsys.readouterr().err


def test_pickle_needs_explicit_permission(capsys):
    assert main(["serve", "--zmq", "127.0.0.1:5599", "--serializer", "pickle"]) == 1
    assert "--allow-pickle" in capsys.readouterr().err


def test_no_command_prints_help_and_version(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("txm-live ")


def test_console_script_installed():
    import shutil

    exe = shutil.which("txm-live")
    if exe is None:
        pytest.skip("console script not on PATH (package not installed in this environment)")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "txm-live" in out


def test_analysis_flags_reach_the_callback(tmp_path):
    """--element/--edges/--method/--post-order: parsed, merged over the file, passed to the live callback."""
    from txm_live.callbacks.cli import _analysis_flags, _callback_factory
    from txm_live.config import load_config

    f = tmp_path / "c.toml"
    f.write_text('[analysis]\nelement = "Ni"\nmethod = "athena"\n')
    args = build_parser().parse_args(["replay", "--catalog", "x", "--config", str(f), "--element", "Fe",
                                      "--edges", "K", "--method", "mback", "--post-order", "1", "u1"])
    cfg = load_config(args.config, **_analysis_flags(args))
    assert (cfg.element, cfg.edges, cfg.method, cfg.post_order) == ("Fe", ("K",), "mback", 1)
    cb = _callback_factory(cfg)()
    try:
        assert cb.element == "Fe" and cb.edges == ("K",)
        assert cb.analysis.keywords == {"method": "mback", "post_order": 1}
    finally:
        cb.close()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--zmq", "1", "--method", "larch"])
    assert build_parser().parse_args(["demo", "--edges", "L3,L2"]).edges == ("L3", "L2")
