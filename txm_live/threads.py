"""Thread pools for the per-pixel passes of the in-process analysis.

numpy releases the GIL inside its element loops, reductions and BLAS calls, so tiles of pixels
(or row chunks) processed by a few threads run in parallel on the cores. Each tile thread calls
BLAS single-threaded (``threadpoolctl``), so the cores are never oversubscribed. With
``threads=1`` everything runs in the calling thread, in order. Results never depend on the
number of threads: tiles write disjoint outputs, and :func:`map_ordered` returns per-tile
results in tile order so that a caller sums them in a fixed order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TypeVar

__all__ = ["limit_blas", "map_ordered", "run_tiles"]

_T = TypeVar("_T")
_R = TypeVar("_R")


@functools.cache
def _blas_controller() -> object:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def limit_blas(threads: int) -> AbstractContextManager:
    """Context manager limiting the BLAS libraries to ``threads`` threads.

    Same effect as ``threadpoolctl.threadpool_limits(limits=threads, user_api="blas")``, but
    the shared libraries are inspected once, at the first call (numpy's and scipy's OpenBLAS are
    loaded by then), instead of at every call: ``threadpool_limits`` scans every loaded library
    each time (~2.5 ms, half of it system time), which added up over the dozen tile passes of an
    analysis.
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
