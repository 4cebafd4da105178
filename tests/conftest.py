"""Pytest configuration of the test folder: the shared test helpers.

The test folder is not a package and tests are imported with ``--import-mode=importlib``, so
``tests/helpers.py`` is loaded here, once and by path, as the module ``txm_live_test_helpers``
(conftest files are imported before the test modules of their folder); test modules
``import txm_live_test_helpers as helpers``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_NAME = "txm_live_test_helpers"
if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, Path(__file__).with_name("helpers.py"))
    assert _spec is not None and _spec.loader is not None
    sys.modules[_NAME] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_NAME])
