"""Large work arrays mapped without the transparent-huge-page advice numpy gives them.

numpy asks the kernel to back every array of 4 MiB or more with 2 MiB pages
(``madvise(MADV_HUGEPAGE)``). Where transparent huge pages are enabled for advised memory only
and their ``defrag`` setting is ``madvise`` (a common default), a page fault in advised memory
compacts memory on the spot to find a free 2 MiB page; on a machine whose memory is fragmented
by other processes, that stalls in the kernel. :func:`work_array` maps a large array as plain
private anonymous memory (``mmap``), which the kernel fills with ordinary pages without
compaction (with ``enabled = always`` it still gets huge pages when free ones exist, again
without compaction: only advised memory compacts under ``defrag = madvise``). The values and
the dtype are those of :func:`numpy.empty` (the pages read as zeros).

Nothing process-wide is changed (unlike
:func:`txm_live.worker_allocator.apply_in_this_process`, which switches numpy's advice off for a
whole Dask worker).
"""

from __future__ import annotations

import mmap

import numpy as np

__all__ = ["work_array"]

#: Arrays below this size come from :func:`numpy.empty` (numpy advises only from 4 MiB on).
_MIN_BYTES = 4 * 2**20


def work_array(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """A writable C-contiguous array like ``np.empty(shape, dtype)``, large ones without huge-page advice.

    Parameters
    ----------
    shape : tuple of int
        Array shape (non-negative sizes).
    dtype : dtype
        Element type.

    Returns
    -------
    ndarray
        Arrays of at least 4 MiB are views of a private anonymous ``mmap`` (zero-filled, unmapped
        when the last view is gone); smaller ones are plain ``np.empty``.

    Notes
    -----
    Measured on the 2-core development VM with full-size L3 (2026-12-05, load 3-5): the
    features stage's pixel-major feature matrix (0.09 GB) spent 0.4-0.8 s of system time being
    faulted in under numpy's advice in most runs, 0.01-0.04 s without it.
    """
    shape = tuple(int(v) for v in shape)
    if any(v < 0 for v in shape):
        raise ValueError(f"shape must hold non-negative sizes, got {shape}")
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = count * dtype.itemsize
    if nbytes < _MIN_BYTES:
        return np.empty(shape, dtype=dtype)
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)
