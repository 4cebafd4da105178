"""Tests of txm_live.threads: ordered results, exceptions, validation."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from txm_live.threads import map_ordered, run_tiles


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_map_ordered_keeps_tile_order(threads: int) -> None:
    tiles = [slice(i, i + 7) for i in range(0, 100, 7)]
    out = map_ordered(lambda sl: np.arange(100)[sl].sum(), tiles, threads)
    assert out == [np.arange(100)[sl].sum() for sl in tiles]


def test_run_tiles_uses_threads_and_writes_disjoint_outputs() -> None:
    seen: set[str] = set()
    out = np.zeros(64)
    gate = threading.Barrier(2, timeout=30)  # both threads must be inside at once

    def fill(sl: slice) -> None:
        seen.add(threading.current_thread().name)
        gate.wait()
        out[sl] = sl.start

    run_tiles(fill, [slice(0, 32), slice(32, 64)], 2)
    assert len(seen) == 2 and np.all(out[:32] == 0) and np.all(out[32:] == 32)


def test_exceptions_propagate_and_validation() -> None:
    def boom(i: int) -> int:
        if i == 3:
            raise RuntimeError("tile 3")
        return i

    with pytest.raises(RuntimeError, match="tile 3"):
        map_ordered(boom, list(range(6)), 2)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            map_ordered(boom, [1], bad)


def test_limit_blas_limits_and_restores() -> None:
    """``limit_blas`` (one library scan, then cheap limits) sets every BLAS library to the given
    thread count inside the block and restores the previous counts after it."""
    from threadpoolctl import threadpool_info

    from txm_live.threads import limit_blas

    def blas_threads() -> list[int]:
        return [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]

    before = blas_threads()
    with limit_blas(1):
        assert blas_threads() and all(n == 1 for n in blas_threads())
    assert blas_threads() == before


_LATE_LIBRARY = """
import json
import numpy  # its BLAS only
from threadpoolctl import threadpool_info
from txm_live.threads import limit_blas

def blas():
    return [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]

with limit_blas(1):  # the first call scans: only numpy's BLAS is loaded
    pass
n_before = len(blas())
import scipy.linalg  # noqa: E402  loads scipy's own BLAS in a pip install
with limit_blas(1):
    inside = blas()
print(json.dumps({"n_before": n_before, "inside": inside}))
"""


def test_limit_blas_sees_a_library_loaded_after_its_first_call() -> None:
    """The controller is cached between calls, but a BLAS library loaded by a later import is
    limited too (the cache is renewed when ``sys.modules`` grew). Run in a fresh interpreter,
    where scipy's BLAS is not loaded yet."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _LATE_LIBRARY], capture_output=True, text=True, timeout=120,
                         check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    if len(seen["inside"]) <= seen["n_before"]:
        pytest.skip(f"scipy shares numpy's BLAS in this environment ({seen}): no late library to limit")
    assert seen["inside"] == [1] * len(seen["inside"]), seen
