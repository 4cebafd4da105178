"""Pytest configuration of the test folder: the shared test helpers and fixtures.

The test folder is not a package and tests are imported with ``--import-mode=importlib``, so
``tests/helpers.py`` is loaded here, once and by path, as the module ``txm_live_test_helpers``
(conftest files are imported before the test modules of their folder); test modules
``import txm_live_test_helpers as helpers``.

Fixtures: ``workdir`` (a temporary folder per test module) and ``tiled`` (a real embedded Tiled
server with its catalog in ``workdir``, per test module). A module may define its own.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_NAME = "txm_live_test_helpers"
if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, Path(__file__).with_name("helpers.py"))
    assert _spec is not None and _spec.loader is not None
    sys.modules[_NAME] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_NAME])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary folder shared by the tests of one module."""
    return tmp_path_factory.mktemp("workdir")


@pytest.fixture(scope="module")
def tiled(workdir: Path) -> Iterator[Any]:
    """A real embedded Tiled server (SQLite catalog and files in ``workdir``), per test module."""
    from txm_live.callbacks.catalog import start_embedded_server

    with start_embedded_server(workdir) as server:
        yield server
