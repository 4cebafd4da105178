"""Exact DBSCAN partitioned across the workers of a Dask cluster.

:func:`dbscan_distributed` gives the labels of :func:`txm_live.dbscan.dbscan` (hence of
scikit-learn's DBSCAN) for point sets too large or too slow for one process:

1. **Slabs**: the points are cut into slabs along their widest coordinate (quantiles of a
   sample, so slabs hold similar numbers of points). Slab ``p`` *owns* the points in
   ``[b_p, b_{p+1})`` and receives a halo of the points within ``2 h`` of it,
   ``h = eps (1 + 1e-6)``.
2. **Local exact DBSCAN** on every slab (one task per slab, the single-process engine): a
   point within ``h`` of the owned range has its whole eps-neighbourhood in the slab, so its core
   flag is exact; a point farther out in the halo may be missed as core (never wrongly made
   core: a local neighbourhood is a subset of the true one). Every local cluster is therefore a
   connected set of true core points, and every edge of the true core graph (``p`` owned by
   the slab, ``q`` within eps, so within ``h``) lies inside one local cluster of ``p``'s slab.
3. **Merge**: local clusters that share a core point (a point owned by one slab and core in the
   halo of another) are joined (connected components over the local clusters); clusters are
   numbered by their lowest core index, exactly as the single-process engine does.
4. **Border points**: an owned non-core point with core neighbours lists them (exact test on its
   slab); it joins the lowest-numbered of their clusters, the engine's rule.

What crosses the network: each slab's points once (``8 d`` bytes per point plus the halo), and
back one byte of core flag, one int32 local label per point and the border pairs. The merge on
the client is O(number of local clusters + halo core points).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from txm_live.dbscan import _number_clusters, _sqdist, _validate, dbscan

__all__ = ["dbscan_distributed"]

#: Relative widening of the halo beyond eps (exact decisions never depend on it: a superset).
_HALO_REL = 1e-6
#: Points sampled to place the slab boundaries.
_BOUNDARY_SAMPLE = 200_000


def _slab_task(Xl: np.ndarray, inner: np.ndarray, owned: np.ndarray, eps: float, ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Local exact DBSCAN of one slab (runs on a worker).

    Parameters
    ----------
    Xl : points of the slab and its halo.
    inner : bool, points within ``h`` of the owned range (exact core flags).
    owned : bool, points the slab owns.

    Returns
    -------
    core : bool, locally core (exact for ``inner``; true core wherever True).
    labels : int32, local cluster of each point (-1: none).
    border_src, border_dst : int64, local indices: owned non-core point, core neighbour
        (within eps, exact), for every owned non-core point with a local label.
    """
    labels, core_idx = dbscan(Xl, eps=eps, min_samples=ms, return_core=True)
    core = np.zeros(Xl.shape[0], dtype=bool)
    core[core_idx] = True
    cand = np.flatnonzero(owned & ~core & (labels >= 0))
    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    if cand.size:
        from scipy.spatial import cKDTree

        cores = np.flatnonzero(core & inner)  # a border point's neighbours lie within h
        tree = cKDTree(Xl[cores])
        lists = tree.query_ball_point(Xl[cand], eps * (1 + 1e-9), workers=-1)
        lens = np.fromiter((len(li) for li in lists), dtype=np.int64, count=cand.size)
        if lens.sum():
            s = np.repeat(cand, lens)
            t = cores[np.concatenate([np.asarray(li, dtype=np.int64) for li in lists])]
            keep = _sqdist(Xl[s], Xl[t]) <= eps * eps
            src.append(s[keep])
            dst.append(t[keep])
    empty = np.zeros(0, dtype=np.int64)
    return (core, labels.astype(np.int32),
            np.concatenate(src) if src else empty, np.concatenate(dst) if dst else empty)


def _boundaries(x: np.ndarray, n_parts: int, h: float, rng: np.random.Generator) -> np.ndarray:
    """Inner slab boundaries (increasing), at quantiles of ``x``, at least ``4 h`` apart."""
    sample = x if x.size <= _BOUNDARY_SAMPLE else x[rng.choice(x.size, _BOUNDARY_SAMPLE, replace=False)]
    qs = np.quantile(sample, np.arange(1, n_parts) / n_parts) if n_parts > 1 else np.zeros(0)
    out: list[float] = []
    lo = float(x.min())
    for b in qs:
        if b - (out[-1] if out else lo) >= 4 * h:
            out.append(float(b))
    hi = float(x.max())
    while out and hi - out[-1] < 4 * h:
        out.pop()
    return np.asarray(out)


def dbscan_distributed(
    X: np.ndarray,
    *,
    eps: float,
    min_samples: int,
    client: Any,
    n_partitions: int | None = None,
    return_core: bool = False,
    timeout: float | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Exact DBSCAN with the slabs of the points clustered on the workers of ``client``.

    Parameters
    ----------
    X : array_like, shape (n_samples, n_features)
    eps, min_samples :
        As :func:`txm_live.dbscan.dbscan`.
    client : dask.distributed.Client
    n_partitions : int, optional
        Slabs (default: twice the number of workers). Fewer are used when the data are too
        narrow for slabs at least ``4 eps`` wide. The labels never depend on it.
    return_core : bool
        Also return the sorted indices of the core points.
    timeout : float, optional
        Seconds to wait for the cluster before raising :class:`~txm_live.errors.DistributedError`.

    Returns
    -------
    labels : ndarray of intp
        Identical to ``txm_live.dbscan.dbscan(X, eps=eps, min_samples=min_samples)``.
    core_indices : ndarray of intp
        Only with ``return_core``.

    Notes
    -----
    Memory on the client: ``X`` (float64) plus O(n) int64 index arrays; on a worker: its slab and
    the single-process engine's O(slab * (d + min_samples)). Work grows by the halo fraction
    (``4 eps`` over the slab width along the cut axis).
    """
    from txm_live.distributed import gather, n_workers

    X, eps, ms = _validate(X, eps, min_samples)
    if n_partitions is not None and (isinstance(n_partitions, bool) or not isinstance(n_partitions, int) or n_partitions < 1):
        raise ValueError(f"n_partitions must be an integer >= 1, got {n_partitions!r}")
    n, d = X.shape
    labels = np.full(n, -1, dtype=np.intp)
    if n < ms:
        return (labels, np.zeros(0, dtype=np.intp)) if return_core else labels
    parts = n_partitions if n_partitions is not None else 2 * n_workers(client)
    spread = np.array([float(np.ptp(X[:, j])) for j in range(d)])
    axis = int(np.argmax(spread))
    x = np.ascontiguousarray(X[:, axis])
    h = eps * (1.0 + _HALO_REL) + 1e-12 * max(float(np.abs(x).max()), 1.0)
    bounds = _boundaries(x, parts, h, np.random.default_rng(0))
    edges = np.concatenate(([-math.inf], bounds, [math.inf]))

    # ---- local exact DBSCAN per slab ------------------------------------------------------
    import uuid
    import warnings

    call = uuid.uuid4().hex
    locals_: list[np.ndarray] = []
    futures = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Large object.*")  # each slab is the payload
        for p in range(edges.size - 1):
            lo, hi = edges[p], edges[p + 1]
            idx = np.flatnonzero((x >= lo - 2 * h) & (x < hi + 2 * h))
            xl = x[idx]
            owned = (xl >= lo) & (xl < hi)
            inner = (xl >= lo - h) & (xl < hi + h)
            locals_.append(idx)
            futures.append(client.submit(_slab_task, X[idx], inner, owned, eps, ms, pure=False,
                                         key=f"txm-live-dbscan-slab-{p}-{call}"))
    results = gather(client, futures, what=f"distributed DBSCAN ({len(futures)} slabs)", timeout=timeout)
    del futures

    # ---- merge local clusters that share core points ---------------------------------------
    owner = np.searchsorted(bounds, x, side="right")  # slab owning each point
    offsets = np.zeros(len(results) + 1, dtype=np.int64)
    for p, (_, lab, _, _) in enumerate(results):
        offsets[p + 1] = offsets[p] + (int(lab.max()) + 1 if lab.size else 0)
    core = np.zeros(n, dtype=bool)
    node_of = np.full(n, -1, dtype=np.int64)  # local cluster node of each core point (owner's)
    for p, (c, lab, _, _) in enumerate(results):
        idx = locals_[p]
        mine = (owner[idx] == p) & c
        core[idx[mine]] = True
        node_of[idx[mine]] = offsets[p] + lab[mine]
    ea: list[np.ndarray] = []
    eb: list[np.ndarray] = []
    for p, (c, lab, _, _) in enumerate(results):
        idx = locals_[p]
        shared = (owner[idx] != p) & c  # true core points seen in the halo
        ea.append(offsets[p] + lab[shared].astype(np.int64))
        eb.append(node_of[idx[shared]])
    n_nodes = int(offsets[-1])
    core_idx = np.flatnonzero(core)
    if core_idx.size == 0:
        return (labels, core_idx.astype(np.intp)) if return_core else labels
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    a = np.concatenate(ea) if ea else np.zeros(0, dtype=np.int64)
    b = np.concatenate(eb) if eb else np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(n_nodes, n_nodes)).tocsr()
    comp = connected_components(graph, directed=False)[1]
    labels[core_idx] = _number_clusters(comp, comp[node_of[core_idx]], core_idx, n)

    # ---- border points: the lowest-numbered cluster among their core neighbours -------------
    big = np.iinfo(np.intp).max
    bl = np.full(n, big, dtype=np.intp)
    for p, (_, _, src, dst) in enumerate(results):
        if src.size:
            idx = locals_[p]
            np.minimum.at(bl, idx[src], labels[idx[dst]])
    hit = bl < big
    labels[hit] = bl[hit]
    if return_core:
        return labels, core_idx.astype(np.intp)
    return labels
