"""txm-live: live chemical phase mapping of full-field TXM XANES imaging.

The core package is pure numpy/scipy/scikit-learn; the Bluesky document consumers live in
:mod:`txm_live.callbacks` and the simulated beamline in :mod:`txm_live.sim`. Importing
``txm_live`` never imports bluesky or ophyd.

``txm_live.dbscan(X, eps=..., min_samples=...)`` runs the exact, memory-bounded DBSCAN: the module
:mod:`txm_live.dbscan` is callable (it forwards to :func:`txm_live.dbscan.dbscan`) and is imported
on first use, so ``import txm_live`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from txm_live.errors import (
    AnalysisError,
    DistributedError,
    DocumentError,
    EdgeDetectionError,
    ExafsUnavailableError,
    FrameError,
    InsufficientDataError,
    MissingFlatError,
    RunIncompleteError,
    TxmLiveError,
    WorkerLostError,
)

__version__ = "0.1.0"

__all__ = [
    "dbscan",
    "AnalysisError",
    "DistributedError",
    "DocumentError",
    "EdgeDetectionError",
    "ExafsUnavailableError",
    "FrameError",
    "InsufficientDataError",
    "MissingFlatError",
    "RunIncompleteError",
    "TxmLiveError",
    "WorkerLostError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "dbscan":  # lazy: scipy is imported only when DBSCAN is used
        return importlib.import_module("txm_live.dbscan")
    raise AttributeError(f"module 'txm_live' has no attribute {name!r}")
