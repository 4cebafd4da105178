"""Packaging contract: layout mapping, wheel contents, and a core free of bluesky/ophyd."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_core_import_does_not_pull_bluesky_ophyd_or_dask() -> None:
    code = (
        "import sys, importlib, pkgutil, txm_live\n"
        "for m in pkgutil.iter_modules(txm_live.__path__):\n"
        "    if m.name not in ('callbacks', 'sim'):\n"
        "        importlib.import_module('txm_live.' + m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('bluesky', 'ophyd', 'event_model', 'tiled', 'dask', 'distributed'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core modules imported {out.stdout.strip()}"


def test_subpackages_import_from_mapped_folders() -> None:
    import txm_live.callbacks
    import txm_live.sim

    assert Path(txm_live.callbacks.__file__).parent.name == "callbacks"
    assert Path(txm_live.sim.__file__).parent.name == "sim"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", "txm-live-output*")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("txm_live", "callbacks", "sim"):
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    (whl,) = out.glob("*.whl")
    return whl


def test_wheel_contains_every_subpackage_and_no_stray_top_level(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"txm_live"}, f"unexpected top-level entries in the wheel: {sorted(top)}"
    for folder, package in (("txm_live", "txm_live"), ("callbacks", "txm_live/callbacks"), ("sim", "txm_live/sim")):
        for module in (ROOT / folder).glob("*.py"):
            assert f"{package}/{module.name}" in names, f"{module} missing from the wheel"
    assert "txm_live/sim/data/nd_feff_paths.json" in names


def test_console_script_declared(wheel: Path) -> None:
    zf = zipfile.ZipFile(wheel)
    (entry,) = [n for n in zf.namelist() if n.endswith("entry_points.txt")]
    assert "txm-live = txm_live.callbacks.cli:main" in zf.read(entry).decode()
