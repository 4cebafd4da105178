"""Thread pools for the per-pixel passes of the in-process analysis.

numpy releases the GIL inside its element loops, reductions and BLAS calls, so tiles of pixels
(or row chunks) processed by a few threads run in parallel on the cores. Each tile thread calls
BLAS single-threaded (``threadpoolctl``), so the cores are never oversubscribed. With
``threads=1`` everything runs in the calling thread, in order. Results never depend on the
number of threads: tiles write disjoint outputs, and :func:`map_ordered` returns per-tile
results in tile order so that a caller sums them in a fixed order.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TypeVar

__all__ = ["limit_blas", "map_ordered", "run_tiles"]

_T = TypeVar("_T")
_R = TypeVar("_R")


_CONTROLLER_LOCK = threading.Lock()
_CONTROLLER: list = []  # [(len(sys.modules) at the scan, ThreadpoolController)]


def _blas_controller() -> object:
    """The ``ThreadpoolController`` of the loaded libraries, rescanned when modules were imported.

    A BLAS library is only loaded with an extension module (numpy, scipy.linalg, scikit-learn
    ...), and every import grows ``sys.modules``: comparing its length with the length at the
    last scan is an O(1) test that catches a library loaded after the first call, without the
    ~2.5 ms scan of every shared object at each call.
    """
    n_modules = len(sys.modules)
    with _CONTROLLER_LOCK:
        if not _CONTROLLER or _CONTROLLER[0][0] != n_modules:
            from threadpoolctl import ThreadpoolController  # a scikit-learn dependency

            _CONTROLLER[:] = [(n_modules, ThreadpoolController())]
        return _CONTROLLER[0][1]


def limit_blas(threads: int) -> AbstractContextManager:
    """Context manager limiting the BLAS libraries to ``threads`` threads.

    Same effect as ``threadpoolctl.threadpool_limits(limits=threads, user_api="blas")``, but
    the shared libraries are scanned again only when modules were imported since the last scan
    (see :func:`_blas_controller`): ``threadpool_limits`` scans every loaded library each time
    (~2.5 ms, half of it system time), which added up over the dozen tile passes of an analysis
    and the two small products of every registered frame. Multi-threaded OpenBLAS also turns a
    1 ms product into 10-30 ms when the cores are busy, as they are next to acquisition.
    """
    return _blas_controller().limit(limits=threads, user_api="blas")


def map_ordered(fn: Callable[[_T], _R], tiles: Sequence[_T], threads: int) -> list[_R]:
    """``[fn(t) for t in tiles]`` computed on ``threads`` threads, in tile order.

    Parameters
    ----------
    fn : callable
        Called once per tile; its exceptions propagate.
    tiles : sequence
        Slices of pixels or rows, or any tile descriptions.
    threads : int
        Threads (>= 1). 1 runs in the calling thread.

    Returns
    -------
    list
        The results, in the order of ``tiles``.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    if threads == 1 or len(tiles) <= 1:
        return [fn(t) for t in tiles]
    from concurrent.futures import ThreadPoolExecutor

    with limit_blas(1), ThreadPoolExecutor(
        max_workers=min(threads, len(tiles)), thread_name_prefix="txm-live-tile"
    ) as pool:
        return [fut.result() for fut in [pool.submit(fn, t) for t in tiles]]


def run_tiles(fn: Callable[[_T], object], tiles: Sequence[_T], threads: int) -> None:
    """``fn(t)`` for every tile on ``threads`` threads (for tiles that write their own output)."""
    map_ordered(fn, tiles, threads)
