"""The txm-live command line: instant help, documented options, config printing, clean errors."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from pathlib import Path

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
    a = p.parse_args(["demo", "--size", "small", "--out", "o", "--seed", "3", "--live-plot", "--no-keep-raw"])
    assert (a.command, a.size, a.out, a.seed, a.live_plot, a.keep_raw) == ("demo", "small", "o", 3, True, False)
    with pytest.raises(SystemExit):
        p.parse_args(["demo", "--size", "tiny"])  # gone: it gave wrong science without a warning
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
    assert main(["serve", "--zmq", "127.0.0.1:5599", "--serializer", "pickle"]) == 2
    assert "--allow-pickle" in capsys.readouterr().err


def test_no_command_prints_help_and_version(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("txm-live ")


def test_console_script_installed():
    """The console script of the environment running the tests (next to its interpreter, else on PATH)."""
    import shutil

    exe = shutil.which("txm-live", path=str(Path(sys.executable).parent)) or shutil.which("txm-live")
    if exe is None:
        pytest.skip("console script not installed in this environment (pip install -e . creates it)")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "txm-live" in out


@pytest.mark.parametrize(("address", "why"), [
    ("5568", "bare port"),
    ("no-such-host.invalid:5568", "does not resolve"),
    ("127.0.0.1:99999", "port"),
    ("0.0.0.0:5568", "wildcard"),
])
def test_serve_refuses_a_bad_address_before_listening(capsys, tmp_path, address, why):
    assert main(["serve", "--zmq", address, "--out", str(tmp_path / "o")]) == 2
    cap = capsys.readouterr()
    assert why in cap.err and "listening" not in cap.out + cap.err
    assert not (tmp_path / "o").exists()


def test_serve_prints_each_run_event(capsys):
    """The progress lines serve prints while runs arrive (one per event, not per frame)."""
    from txm_live.callbacks.cli import _serve_progress
    from txm_live.callbacks.live import ProgressEvent

    uid = "0123456789abcdef"
    for ev in (ProgressEvent(uid, "start", 0, 225), ProgressEvent(uid, "frame", 1, 225),
               ProgressEvent(uid, "window-complete", 1, 225, "L3"),
               ProgressEvent(uid, "window-incomplete", 1, 225, "L2", "window closed at stop (incomplete)"),
               ProgressEvent(uid, "stop", 1, 225)):
        _serve_progress(ev)
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["run 01234567: started, 225 energies planned",
                     "run 01234567: L3 window complete after 1 frame",
                     "run 01234567: L2 window closed at stop (incomplete) after 1 frame",
                     "run 01234567: stopped after 1 frame, finishing the analysis"]


@pytest.mark.parametrize(("text", "expected"), [
    ('[analysis]\nsnr_threshold = "high"\n',
     "[analysis] snr_threshold: expected a number (or omit it), got 'high' (str)"),
    ("[analysis]\nregister = 1\n", "[analysis] register: expected true or false, got 1 (int)"),
    ("[analysis]\nedges = [3]\n", "[analysis] edges: expected a list of strings (or omit it), got [3] (list)"),
    ('[analysis]\nmethod = "larch"\n', "[analysis] method: method must be 'athena' or 'mback', got 'larch'"),
    ("[windows.L3]\npost_order = 5\n", "[windows.L3] post_order: expected 0, 1 or 2"),
    ("[demo]\nseed = 1.5\n", "[demo] seed: expected an integer, got 1.5 (float)"),
    ("[demo]\nseed = -1\n", "[demo] seed: seed must be an integer >= 0"),
    ('[windows.L3]\ne0 = "x"\n', "[windows.L3] e0: expected a positive number (eV), got 'x' (str)"),
    ("[windows.L3]\npre = [-60.0, -200.0]\n", "[windows.L3] pre: expected [low, high] with low < high"),
    ("[windows.L3]\npost = 90.0\n", "[windows.L3] post: expected a list of two numbers"),
    ("windows = 3\n", "[windows] must be a table"),
    ("analysis = 3\n", "[analysis] must be a table"),
])
def test_bad_config_values_name_file_key_type_and_value(tmp_path, capsys, text, expected):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    assert main(["config", "--config", str(f)]) == 1
    err = capsys.readouterr().err
    assert str(f) in err and expected in err, err


def test_bad_seed_flag_is_refused_before_the_demo_runs(tmp_path, capsys):
    assert main(["demo", "--seed", "-3", "--out", str(tmp_path / "o")]) == 1
    assert "seed" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("argv", "expected"), [
    (["demo", "--element", "Xx"], "cannot build edge windows: element: unknown element 'Xx'"),
    (["demo", "--edges", "L9"], "cannot build edge windows: edges: no default window for edge 'L9'"),
    (["demo", "--sample", "lfp", "--edges", "K,L9"], "no default window for edge 'L9'"),
    (["demo", "--element", "Fe", "--edges", "M5"], "edges:"),  # Fe M5: not tabulated above 250 eV
    (["replay", "--catalog", "{tmp}/absent", "--element", "Xx"], "element: unknown element 'Xx'"),
    (["replay", "--catalog", "{tmp}/absent", "--edges", "L9"], "no default window for edge 'L9'"),
    (["serve", "--zmq", "127.0.0.1:5568", "--edges", "L3,L9"], "no default window for edge 'L9'"),
])
def test_unknown_element_or_edge_is_refused_before_the_scan(tmp_path, capsys, argv, expected):
    """--element/--edges that cannot give windows: the analysis' message, exit 2, nothing scanned,
    replayed or listened to (before: the whole demo scan ran and the error came at the end)."""
    out = tmp_path / "o"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main([*argv, "--out", str(out)]) == 2
    cap = capsys.readouterr()
    assert expected in cap.err, cap.err
    assert "listening" not in cap.out and "replaying" not in cap.out and "detector frame" not in cap.out
    assert not out.exists()


def test_unknown_element_from_the_config_file_exits_1(tmp_path, capsys):
    """The same refusal for values from --config exits 1, as every configuration-file error."""
    f = tmp_path / "c.toml"
    f.write_text('[analysis]\nelement = "Xx"\n')
    assert main(["demo", "--config", str(f), "--out", str(tmp_path / "o")]) == 1
    assert "unknown element 'Xx'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_plural():
    from txm_live.callbacks.cli import _plural

    assert (_plural(1, "run"), _plural(0, "run"), _plural(2, "phase")) == ("1 run", "0 runs", "2 phases")


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
