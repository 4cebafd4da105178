"""txm-live: live chemical phase mapping of full-field TXM XANES imaging.

The core package is pure numpy/scipy/scikit-learn; the Bluesky document consumers live in
:mod:`txm_live.callbacks` and the simulated beamline in :mod:`txm_live.sim`. Importing
``txm_live`` never imports bluesky or ophyd.

``txm_live.dbscan(X, eps=..., min_samples=...)`` is the exact, memory-bounded DBSCAN (the function;
its module is :mod:`txm_live.dbscan`).
"""

from __future__ import annotations

from txm_live.dbscan import dbscan
from txm_live.errors import (
    AnalysisError,
    DocumentError,
    FrameError,
    InsufficientDataError,
    MissingFlatError,
    RunIncompleteError,
    TxmLiveError,
)

__version__ = "0.1.0"

__all__ = [
    "dbscan",
    "AnalysisError",
    "DocumentError",
    "FrameError",
    "InsufficientDataError",
    "MissingFlatError",
    "RunIncompleteError",
    "TxmLiveError",
    "__version__",
]
