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

Where it runs: ``X`` is scattered once in row blocks; each block is cut into its slab pieces on
its worker and every slab gathers its pieces from the other workers (``8 (d + 1)`` bytes per
point and halo point, worker to worker). Only the *boundary* core points (those within ``2 h``
of a slab edge: global index and local cluster, 16 bytes each) and one number per local cluster
come back to the client for the union-find merge; the client sends each slab the final number
of its local clusters, and the labels of the owned points come back at the end (4 bytes per
point, in index order). The client never indexes ``X`` beyond one column.
"""

from __future__ import annotations

import logging
import math
from typing import Any, NamedTuple

import numpy as np

from txm_live.dbscan import _sqdist, _validate, dbscan

__all__ = ["dbscan_distributed"]

logger = logging.getLogger(__name__)

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


class _Slab(NamedTuple):
    """What a slab task leaves on its worker."""

    idx: np.ndarray  #: int64 global index of every local point (increasing)
    x: np.ndarray  #: coordinate along the cut axis
    core: np.ndarray  #: bool, locally core
    labels: np.ndarray  #: int32 local cluster (-1: none)
    owned: np.ndarray  #: bool
    border_src: np.ndarray  #: int64 local index of an owned non-core point ...
    border_dst: np.ndarray  #: ... and of one of its core neighbours


def _split_block(Xb: np.ndarray, offset: int, axis: int, edges: np.ndarray, h: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cut one row block of ``X`` into the pieces of every slab (with their ``2 h`` halos):
    ``(global index, points)`` per slab; runs where the block was scattered."""
    x = Xb[:, axis]
    out = []
    for p in range(edges.size - 1):
        sel = np.flatnonzero((x >= edges[p] - 2 * h) & (x < edges[p + 1] + 2 * h))
        out.append((sel.astype(np.int64) + offset, Xb[sel]))
    return out


def _piece(pieces: list[tuple[np.ndarray, np.ndarray]], p: int) -> tuple[np.ndarray, np.ndarray]:
    return pieces[p]


def _run_slab(lo: float, hi: float, axis: int, h: float, eps: float, ms: int, *pieces: tuple[np.ndarray, np.ndarray]) -> _Slab:
    """Local exact DBSCAN of the slab ``[lo, hi)`` from its pieces (runs on a worker)."""
    idx = np.concatenate([pc[0] for pc in pieces])
    Xl = np.concatenate([pc[1] for pc in pieces])
    xl = Xl[:, axis]
    owned = (xl >= lo) & (xl < hi)
    inner = (xl >= lo - h) & (xl < hi + h)
    core, labels, src, dst = _slab_task(Xl, inner, owned, eps, ms)
    return _Slab(idx, xl, core, labels, owned, src, dst)


def _slab_boundary(slab: _Slab, lo: float, hi: float, h: float, n: int) -> tuple:
    """What the merge needs from one slab: the number of local clusters; the lowest owned core
    index of each local cluster (``n`` if none); the owned core points within ``2 h`` of an edge,
    the only ones another slab's halo can hold (global index, local label); and the core points
    of the halo (global index, local label)."""
    lab = slab.labels
    n_local = int(lab.max()) + 1 if lab.size else 0
    first = np.full(n_local, n, dtype=np.int64)
    mine = slab.owned & slab.core
    np.minimum.at(first, lab[mine], slab.idx[mine])
    edge = mine & ((slab.x < lo + 2 * h) | (slab.x >= hi - 2 * h))
    halo = ~slab.owned & slab.core
    return n_local, first, slab.idx[edge], lab[edge], slab.idx[halo], lab[halo]


def _slab_labels(slab: _Slab, final: np.ndarray, return_core: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Final labels of the owned points (index order) from the local-to-final cluster map;
    an owned border point takes the lowest label among its core neighbours."""
    lab = np.full(slab.labels.size, -1, dtype=np.int64)
    c = slab.core
    lab[c] = final[slab.labels[c]]
    if slab.border_src.size:
        big = np.iinfo(np.int64).max
        bl = np.full(slab.labels.size, big, dtype=np.int64)
        np.minimum.at(bl, slab.border_src, lab[slab.border_dst])
        hit = bl < big
        lab[hit] = bl[hit]
    own = slab.owned
    return lab[own].astype(np.int32), (slab.core[own] if return_core else None)


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
    A worker lost while the slabs are clustered loses the row block scattered to it; the whole
    computation then runs once more (``X`` is still here), and a second loss raises
    :class:`~txm_live.errors.DistributedError`.

    Memory on the client: ``X`` plus O(n) int32 labels and one column; on a worker: its row block,
    its slabs and the single-process engine's O(slab * (d + min_samples)). Work grows by the
    halo fraction (``4 eps`` over the slab width along the cut axis).
    """
    X, eps, ms = _validate(X, eps, min_samples)
    if n_partitions is not None and (isinstance(n_partitions, bool) or not isinstance(n_partitions, int) or n_partitions < 1):
        raise ValueError(f"n_partitions must be an integer >= 1, got {n_partitions!r}")
    n, d = X.shape
    labels = np.full(n, -1, dtype=np.intp)
    if n < ms:
        return (labels, np.zeros(0, dtype=np.intp)) if return_core else labels
    from concurrent.futures import CancelledError

    from txm_live.errors import DistributedError

    try:
        return _dbscan_on_cluster(X, eps, ms, client, n_partitions, return_core, timeout)
    except DistributedError as exc:
        if not isinstance(exc.__cause__, CancelledError):
            raise
        # the scattered points were lost with a worker: they are still here, so once more
        logger.warning("distributed DBSCAN: %s; running it once more", exc)
        return _dbscan_on_cluster(X, eps, ms, client, n_partitions, return_core, timeout)


def _dbscan_on_cluster(X: np.ndarray, eps: float, ms: int, client: Any, n_partitions: int | None,
                       return_core: bool, timeout: float | None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    import uuid
    import warnings

    from txm_live.distributed import gather, n_workers

    n, d = X.shape
    labels = np.full(n, -1, dtype=np.intp)
    nw = n_workers(client)
    parts = n_partitions if n_partitions is not None else 2 * nw
    spread = np.array([float(np.ptp(X[:, j])) for j in range(d)])
    axis = int(np.argmax(spread))
    x = X[:, axis]
    h = eps * (1.0 + _HALO_REL) + 1e-12 * max(float(np.abs(x).max()), 1.0)
    bounds = _boundaries(x, parts, h, np.random.default_rng(0))
    edges = np.concatenate(([-math.inf], bounds, [math.inf]))
    n_slabs = edges.size - 1
    what = f"distributed DBSCAN ({n_slabs} slabs)"
    call = uuid.uuid4().hex

    def submit(fn: Any, *args: Any, key: str) -> Any:
        return client.submit(fn, *args, pure=False, key=f"txm-live-dbscan-{key}-{call}")

    # ---- the points go to the workers once, in row blocks; slabs are cut there -------------
    workers = list(client.scheduler_info(n_workers=-1)["workers"]) or [None]
    n_blocks = max(1, min(len(workers), n))
    starts = np.linspace(0, n, n_blocks + 1).astype(np.int64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Large object.*")
        blocks = []
        for b in range(n_blocks):
            part = X[starts[b]: starts[b + 1]]
            try:
                blocks.append(client.scatter(part, hash=False, workers=[workers[b % len(workers)]]))
            except (OSError, TimeoutError, KeyError):  # that worker is gone: any other one
                blocks.append(client.scatter(part, hash=False))
    pieces = [submit(_split_block, blk, int(starts[b]), axis, edges, h, key=f"split-{b}") for b, blk in enumerate(blocks)]
    slabs = []
    for p in range(n_slabs):
        mine = [submit(_piece, pc, p, key=f"piece-{b}-{p}") for b, pc in enumerate(pieces)]
        slabs.append(submit(_run_slab, edges[p], edges[p + 1], axis, h, eps, ms, *mine, key=f"slab-{p}"))
    summaries = gather(client, [submit(_slab_boundary, s, edges[p], edges[p + 1], h, n, key=f"boundary-{p}")
                                for p, s in enumerate(slabs)], what=what, timeout=timeout)
    del blocks, pieces

    # ---- merge local clusters that share core points (boundary points only) -----------------
    offsets = np.zeros(n_slabs + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([sm[0] for sm in summaries])
    n_nodes = int(offsets[-1])
    own_idx = np.concatenate([sm[2] for sm in summaries])
    own_node = np.concatenate([offsets[p] + sm[3].astype(np.int64) for p, sm in enumerate(summaries)])
    order = np.argsort(own_idx, kind="stable")
    own_idx, own_node = own_idx[order], own_node[order]
    halo_idx = np.concatenate([sm[4] for sm in summaries])
    halo_node = np.concatenate([offsets[p] + sm[5].astype(np.int64) for p, sm in enumerate(summaries)])
    # a core point seen in a halo is a true core point, owned (and core) in its own slab
    b_node = own_node[np.searchsorted(own_idx, halo_idx)]
    first = np.concatenate([sm[1] for sm in summaries])
    finals: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * n_slabs
    if n_nodes:
        from txm_live.dbscan import _components

        comp = _components(n_nodes, halo_node, b_node) if halo_node.size else np.arange(n_nodes)
        # clusters numbered by their lowest core point index (the single-process numbering)
        n_comp = int(comp.max()) + 1
        cfirst = np.full(n_comp, n, dtype=np.int64)
        np.minimum.at(cfirst, comp, first)
        used = np.flatnonzero(cfirst < n)
        number = np.full(n_comp, -1, dtype=np.int64)
        number[used[np.argsort(cfirst[used])]] = np.arange(used.size)
        finals = [number[comp[offsets[p]: offsets[p + 1]]] for p in range(n_slabs)]
    done = gather(client, [submit(_slab_labels, s, finals[p], return_core, key=f"labels-{p}")
                           for p, s in enumerate(slabs)], what=what, timeout=timeout)
    del slabs
    core = np.zeros(n, dtype=bool) if return_core else None
    for p, (lab, c) in enumerate(done):
        own = np.flatnonzero((x >= edges[p]) & (x < edges[p + 1]))
        labels[own] = lab
        if core is not None:
            core[own] = c
    if return_core:
        return labels, np.flatnonzero(core).astype(np.intp)
    return labels
