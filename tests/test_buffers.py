"""txm_live.buffers.work_array: np.empty semantics, large arrays mapped without huge-page advice."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from txm_live.buffers import work_array


def _vm_flags(addr: int) -> list[str] | None:
    """VmFlags of the mapping of this process holding ``addr`` (Linux smaps), None if unknown."""
    smaps = Path("/proc/self/smaps")
    if not smaps.exists():
        return None
    inside = False
    for line in smaps.read_text().splitlines():
        head = line.split()[0] if line else ""
        if "-" in head and ":" not in head:  # a mapping's first line: "start-end perms ..."
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo <= addr < hi
        elif inside and line.startswith("VmFlags:"):
            return line.split()[1:]
    return None


@pytest.mark.parametrize("dtype", [np.float32, np.float64, bool])
def test_work_array_is_a_writable_empty_array(dtype: type) -> None:
    for shape in [(3, 5), (81, 20_000), (0, 4)]:
        a = work_array(shape, dtype)
        assert a.shape == shape and a.dtype == np.dtype(dtype)
        assert a.flags.c_contiguous and a.flags.writeable
        a[...] = 1
        assert np.all(a == 1)
    big = work_array((1024, 2048), np.float32)  # 8 MiB: mapped, reads as zeros
    assert not np.any(big)
    big[-1, -1] = 3.0
    assert big.sum() == 3.0


def test_work_array_checks_its_shape() -> None:
    with pytest.raises(ValueError, match="shape"):
        work_array((-1, 4), np.float32)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmFlags of /proc/self/smaps are Linux only")
def test_large_work_arrays_carry_no_huge_page_advice() -> None:
    # numpy advises the 2 MiB-aligned part of its arrays (a separate mapping): look mid-array
    big = work_array((4096, 1024), np.float32)  # 16 MiB
    big[...] = 0.0
    flags = _vm_flags(big.ctypes.data + big.nbytes // 2)
    if flags is None:
        pytest.skip("absent: /proc/self/smaps VmFlags")
    assert "hg" not in flags  # hg: MADV_HUGEPAGE
    try:
        from numpy._core.multiarray import _get_madvise_hugepage
    except ImportError:  # numpy < 2: no switch to read
        return
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if _get_madvise_hugepage() and thp.exists() and "[never]" not in thp.read_text():
        # numpy's own array of the same size is advised: the difference work_array makes
        ref = np.empty((4096, 1024), dtype=np.float32)
        ref[...] = 0.0
        assert "hg" in (_vm_flags(ref.ctypes.data + ref.nbytes // 2) or [])
