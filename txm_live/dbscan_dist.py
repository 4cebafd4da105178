"""Exact DBSCAN partitioned across the workers of a Dask cluster.

:func:`dbscan_distributed` gives the labels of :func:`txm_live.dbscan.dbscan` (hence of
scikit-learn's DBSCAN) for point sets too large or too slow for one process:

1. **Slabs**: the points are cut into slabs along their widest coordinate, one slab per worker
   thread by default. Each cut starts at an equal-count quantile (of a sample) and moves by at
   most 2 % in quantile to the plane with the fewest points within ``2 h`` of it,
   ``h = eps (1 + 1e-6)``: the halo it creates. Slab ``p`` *owns* the points in
   ``[b_p, b_{p+1})`` and receives a halo of the points within ``2 h`` of it.
2. **Local exact DBSCAN** on every slab (one task per slab: the single-process engine on one
   thread): a point within ``h`` of the owned range has its whole eps-neighbourhood in the slab,
   so its core flag is exact; a point farther out in the halo may be missed as core (never
   wrongly made core: a local neighbourhood is a subset of the true one). Every local cluster is
   therefore a connected set of true core points, and every edge of the true core graph (``p``
   owned by the slab, ``q`` within eps, so within ``h``) lies inside one local cluster of
   ``p``'s slab.
3. **Merge**: local clusters that share a core point (a point owned by one slab and core in the
   halo of another) are joined (connected components over the local clusters); clusters are
   numbered by their lowest core index, exactly as the single-process engine does.
4. **Border points**: an owned non-core point's neighbour list, from the engine's exact query,
   is complete (all its neighbours are in the slab) and names its core neighbours, whose flags
   are exact; it joins the lowest-numbered of their clusters, the engine's rule.

What crosses the network: the client sends each slab its points (with the halo) once, straight
to the worker that clusters it (``8 d`` bytes per point and halo point; nothing moves between
workers). Back come, per slab, the *boundary* core points (owned ones within ``2 h`` of a slab
edge and those of the halo: 4-byte position and local cluster) and one number per local
cluster; the client joins them (union-find by sparse connected components, a few ms), sends
each slab the final number of its local clusters (4 bytes each), and the int32 labels of the
owned points come back, in index order.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from txm_live.dbscan import _validate

__all__ = ["DbscanProfile", "SlabStats", "dbscan_distributed"]

logger = logging.getLogger(__name__)

#: Relative widening of the halo beyond eps (exact decisions never depend on it: a superset).
_HALO_REL = 1e-6
#: Points sampled to place the slab boundaries.
_BOUNDARY_SAMPLE = 200_000
#: A boundary may move this far (in quantile) from its equal-count position to a sparser plane.
_CUT_WINDOW = 0.02


@dataclass(frozen=True)
class SlabStats:
    """What one slab cost (measured on its worker)."""

    points: int  #: points clustered by the slab (owned + halo)
    owned: int  #: points the slab labels
    core_points: int  #: locally core points
    boundary_cores: int  #: owned core points within ``2 h`` of a slab edge (sent for the merge)
    halo_cores: int  #: core points of the halo (sent for the merge)
    cpu_s: float  #: CPU seconds of the slab task (thread time: the engine runs single-threaded)
    wall_s: float  #: wall seconds of the slab task
    worker: str  #: address of the worker that ran it


@dataclass(frozen=True)
class DbscanProfile:
    """Where a :func:`dbscan_distributed` call spent its time and what crossed the network."""

    axis: int  #: coordinate the slabs are cut along
    boundaries: tuple[float, ...]  #: inner slab boundaries along ``axis``
    halo_fraction: float  #: halo points / points (the duplicated work)
    slabs: tuple[SlabStats, ...]
    bytes_to_workers: int  #: slab coordinates plus the merge's cluster maps
    bytes_from_workers: int  #: merge summaries plus labels (and core flags)
    split_s: float  #: client: choosing the cuts and copying and sending the slabs
    merge_s: float  #: client: union-find over the local clusters and their numbering
    wall_s: float  #: the whole call


class _Slab(NamedTuple):
    """What a slab task leaves on its worker (positions are local: the slab's points are in
    increasing global index order, so local order is global order)."""

    owned: np.ndarray  #: bool
    core: np.ndarray  #: bool, locally core (exact for owned points and within ``h`` of them)
    labels: np.ndarray  #: int32 local cluster of every locally core point (-1 elsewhere)
    edge: np.ndarray  #: int32 positions of the owned core points within ``2 h`` of a slab edge
    border_src: np.ndarray  #: int32 position of an owned non-core point ...
    border_cl: np.ndarray  #: ... and the local cluster of one of its core neighbours
    cpu_s: float
    wall_s: float
    worker: str


def _run_slab(Xs: np.ndarray, lo: float, hi: float, axis: int, h: float, eps: float, ms: int) -> _Slab:
    """Exact local DBSCAN of the slab ``[lo, hi)`` and its ``2 h`` halo (runs on a worker).

    The single-process engine runs on one thread (the workers are the parallelism). An owned
    point has its whole eps-neighbourhood in the slab, so its core flag is exact, and so is that
    of every point within ``h`` of the owned range; a point farther out may be missed as core,
    never wrongly made core. An owned non-core point's neighbour list (complete, from the
    engine's exact query) names the core points it borders, whose flags are exact.
    """
    import time

    from txm_live.dbscan import _dbscan_nd

    c0, t0 = time.thread_time(), time.perf_counter()
    m = Xs.shape[0]
    xl = Xs[:, axis]
    owned = (xl >= lo) & (xl < hi)
    if m < ms:
        lab = np.full(m, -1, dtype=np.intp)
        core = np.zeros(m, dtype=bool)
        src = dst = np.zeros(0, dtype=np.int64)
    else:
        # one feature: a zero second column keeps every squared distance bit for bit
        # (t * t + 0.0) and lets the d >= 2 engine give the border pairs
        Xw = Xs if Xs.shape[1] > 1 else np.column_stack([Xs, np.zeros(m)])
        lab, core, src, dst = _dbscan_nd(Xw, eps, ms, workers=1)
    keep = owned[src]
    src, dst = src[keep], dst[keep]
    labels = np.where(core, lab, -1).astype(np.int32)
    edge = np.flatnonzero(owned & core & ((xl < lo + 2 * h) | (xl >= hi - 2 * h))).astype(np.int32)
    try:
        from distributed import get_worker

        where = get_worker().address
    except (ImportError, ValueError):  # called outside a worker
        where = ""
    return _Slab(owned, core, labels, edge, src.astype(np.int32), labels[dst],
                 time.thread_time() - c0, time.perf_counter() - t0, where)


def _slab_summary(slab: _Slab) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple]:
    """What the merge needs from one slab: the number of local clusters; the position of the
    lowest owned core point of each local cluster (``-1``: none); the owned core points near an
    edge (the only ones another slab's halo can hold) and the core points of the halo, as
    (position, local cluster); and the slab's statistics."""
    lab = slab.labels
    n_local = int(lab.max()) + 1 if lab.size else 0
    mine = np.flatnonzero(slab.owned & slab.core)  # increasing: the first hit is the lowest
    first = np.full(n_local, lab.size, dtype=np.int64)
    np.minimum.at(first, lab[mine], mine)
    first[first == lab.size] = -1
    halo = np.flatnonzero(~slab.owned & slab.core).astype(np.int32)
    stats = (int(lab.size), int(slab.owned.sum()), int(slab.core.sum()), int(slab.edge.size), int(halo.size),
             slab.cpu_s, slab.wall_s, slab.worker)
    return n_local, first, slab.edge, lab[slab.edge], halo, lab[halo], stats


def _slab_labels(slab: _Slab, final: np.ndarray, return_core: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Final labels of the owned points (index order) from the local-to-final cluster map; an
    owned border point takes the lowest label among the clusters of its core neighbours (the
    single-process rule)."""
    lab = np.full(slab.labels.size, -1, dtype=np.int32)
    c = slab.core
    lab[c] = final[slab.labels[c]]
    if slab.border_src.size:
        big = np.iinfo(np.int32).max
        bl = np.full(slab.labels.size, big, dtype=np.int32)
        np.minimum.at(bl, slab.border_src, final[slab.border_cl])
        hit = bl < big
        lab[hit] = bl[hit]
    own = slab.owned
    return lab[own], (slab.core[own] if return_core else None)


def _boundaries(x: np.ndarray, n_parts: int, h: float, rng: np.random.Generator) -> np.ndarray:
    """Inner slab boundaries (increasing), at least ``4 h`` apart and from the data's ends.

    Each starts at an equal-count quantile of a sample of ``x`` and moves, within
    ``_CUT_WINDOW`` in quantile, to the plane with the fewest sample points within ``2 h``
    (the halo it creates). The labels never depend on where the cuts are.
    """
    if n_parts < 2:
        return np.zeros(0)
    sample = x if x.size <= _BOUNDARY_SAMPLE else x[rng.choice(x.size, _BOUNDARY_SAMPLE, replace=False)]
    sample = np.sort(sample)
    m = sample.size
    out: list[float] = []
    lo = float(x.min())
    for i in range(1, n_parts):
        q = i / n_parts
        a = sample[max(0, int((q - _CUT_WINDOW) * m))]
        b = sample[min(m - 1, int((q + _CUT_WINDOW) * m))]
        cand = np.linspace(a, b, int(min(512, max(1, (b - a) / (h / 4)))) + 1)
        halo = np.searchsorted(sample, cand + 2 * h) - np.searchsorted(sample, cand - 2 * h)
        target = sample[min(m - 1, int(q * m))]
        best = cand[np.lexsort((np.abs(cand - target), halo))[0]]
        if best - (out[-1] if out else lo) >= 4 * h:
            out.append(float(best))
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
    return_profile: bool = False,
    timeout: float | None = None,
) -> np.ndarray | tuple[np.ndarray, ...]:
    """Exact DBSCAN with the slabs of the points clustered on the workers of ``client``.

    Parameters
    ----------
    X : array_like, shape (n_samples, n_features)
    eps, min_samples :
        As :func:`txm_live.dbscan.dbscan`.
    client : dask.distributed.Client
    n_partitions : int, optional
        Slabs (default: one per worker thread). Fewer are used when the data are too narrow for
        slabs at least ``4 eps`` wide. The labels never depend on it.
    return_core : bool
        Also return the sorted indices of the core points.
    return_profile : bool
        Also return a :class:`DbscanProfile` (per-slab CPU, halo fraction, bytes, merge time).
    timeout : float, optional
        Seconds to wait for the cluster before raising :class:`~txm_live.errors.DistributedError`.

    Returns
    -------
    labels : ndarray of intp
        Identical to ``txm_live.dbscan.dbscan(X, eps=eps, min_samples=min_samples)``.
    core_indices : ndarray of intp
        Only with ``return_core``.
    profile : DbscanProfile
        Only with ``return_profile`` (last).

    Notes
    -----
    A worker lost while the slabs are clustered loses the slab sent to it; the whole
    computation then runs once more (``X`` is still here), and a second loss raises
    :class:`~txm_live.errors.DistributedError`.

    What crosses the network: each slab's points once (``8 d`` bytes per point and halo
    point); back, per slab, the boundary core points (4-byte position and local cluster) and one
    number per local cluster; out, one int32 per local cluster; back, the int32 labels of the
    owned points. Memory on the client: ``X``, one slab copy at a time, the slab index arrays
    (8 bytes per point and halo point) and the labels; on a worker: its slab and the
    single-process engine's O(slab * (d + min_samples)). Work grows by the halo fraction
    (``4 eps`` times the density at each cut, which is placed at a sparse plane).
    """
    X, eps, ms = _validate(X, eps, min_samples)
    if n_partitions is not None and (isinstance(n_partitions, bool) or not isinstance(n_partitions, int) or n_partitions < 1):
        raise ValueError(f"n_partitions must be an integer >= 1, got {n_partitions!r}")
    if X.shape[0] < ms:  # nobody can have min_samples neighbours (an empty X included)
        labels = np.full(X.shape[0], -1, dtype=np.intp)
        out: list[Any] = [labels] + [np.zeros(0, dtype=np.intp)] * return_core
        if return_profile:
            out.append(DbscanProfile(axis=0, boundaries=(), halo_fraction=0.0, slabs=(), bytes_to_workers=0,
                                     bytes_from_workers=0, split_s=0.0, merge_s=0.0, wall_s=0.0))
        return out[0] if len(out) == 1 else tuple(out)
    from concurrent.futures import CancelledError

    from txm_live.errors import DistributedError

    try:
        return _dbscan_on_cluster(X, eps, ms, client, n_partitions, return_core, return_profile, timeout)
    except DistributedError as exc:
        if not isinstance(exc.__cause__, CancelledError):
            raise
        # the scattered slabs were lost with a worker: the points are still here, so once more
        logger.warning("distributed DBSCAN: %s; running it once more", exc)
        return _dbscan_on_cluster(X, eps, ms, client, n_partitions, return_core, return_profile, timeout)


def _dbscan_on_cluster(X: np.ndarray, eps: float, ms: int, client: Any, n_partitions: int | None,
                       return_core: bool, return_profile: bool, timeout: float | None) -> np.ndarray | tuple:
    import time
    import uuid
    import warnings

    from txm_live.dbscan import _components
    from txm_live.distributed import gather
    from txm_live.worker_allocator import prepare_workers

    t_start = time.perf_counter()
    prepare_workers(client)  # the slabs' many large temporaries: see txm_live.worker_allocator
    n, d = X.shape
    labels = np.full(n, -1, dtype=np.intp)
    info = client.scheduler_info(n_workers=-1)["workers"]
    slots = [w for w, v in sorted(info.items()) for _ in range(max(1, int(v.get("nthreads", 1))))] or [None]
    parts = n_partitions if n_partitions is not None else len(slots)
    lo_, hi_ = np.empty(d), np.empty(d)
    for j in range(d):
        lo_[j], hi_[j] = X[:, j].min(), X[:, j].max()
    axis = int(np.argmax(hi_ - lo_))
    x = X[:, axis]
    h = eps * (1.0 + _HALO_REL) + 1e-12 * max(abs(float(lo_[axis])), abs(float(hi_[axis])), 1.0)
    bounds = _boundaries(x, parts, h, np.random.default_rng(0))
    edges = np.concatenate(([-math.inf], bounds, [math.inf]))
    n_slabs = edges.size - 1
    what = f"distributed DBSCAN ({n_slabs} slabs)"
    call = uuid.uuid4().hex

    # ---- each slab (with its 2 h halo) goes straight to its worker, and starts there --------
    sel: list[np.ndarray] = []
    slabs = []
    sent = 0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Large object.*")
        for p in range(n_slabs):
            idx = np.flatnonzero((x >= edges[p] - 2 * h) & (x < edges[p + 1] + 2 * h))
            sel.append(idx)
            Xs = np.take(X, idx, axis=0)
            sent += Xs.nbytes
            w = slots[p % len(slots)]
            try:
                fut = client.scatter(Xs, hash=False, workers=None if w is None else [w])
            except (OSError, TimeoutError, KeyError):  # that worker is gone: any other one
                fut = client.scatter(Xs, hash=False)
            del Xs
            slabs.append(client.submit(_run_slab, fut, edges[p], edges[p + 1], axis, h, eps, ms, pure=False,
                                       key=f"txm-live-dbscan-slab-{p}-{call}"))
    t_split = time.perf_counter() - t_start
    summaries = gather(client, [client.submit(_slab_summary, s, pure=False, key=f"txm-live-dbscan-summary-{p}-{call}")
                                for p, s in enumerate(slabs)], what=what, timeout=timeout)

    # ---- merge local clusters that share core points (boundary points only) -----------------
    t0 = time.perf_counter()
    offsets = np.zeros(n_slabs + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([sm[0] for sm in summaries])
    n_nodes = int(offsets[-1])
    own_idx = np.concatenate([sel[p][sm[2]] for p, sm in enumerate(summaries)])
    own_node = np.concatenate([offsets[p] + sm[3] for p, sm in enumerate(summaries)])
    order = np.argsort(own_idx)
    own_idx, own_node = own_idx[order], own_node[order]
    halo_idx = np.concatenate([sel[p][sm[4]] for p, sm in enumerate(summaries)])
    halo_node = np.concatenate([offsets[p] + sm[5] for p, sm in enumerate(summaries)])
    # a core point seen in a halo is a true core point, owned (and core) near an edge of its slab
    b_node = own_node[np.searchsorted(own_idx, halo_idx)]
    first = np.concatenate([np.where(sm[1] >= 0, sel[p][np.maximum(sm[1], 0)], n) for p, sm in enumerate(summaries)])
    finals: list[np.ndarray] = [np.zeros(0, dtype=np.int32)] * n_slabs
    if n_nodes:
        comp = _components(n_nodes, halo_node, b_node) if halo_node.size else np.arange(n_nodes)
        # clusters numbered by their lowest core point index (the single-process numbering)
        n_comp = int(comp.max()) + 1
        cfirst = np.full(n_comp, n, dtype=np.int64)
        np.minimum.at(cfirst, comp, first)
        used = np.flatnonzero(cfirst < n)
        number = np.full(n_comp, -1, dtype=np.int32)
        number[used[np.argsort(cfirst[used])]] = np.arange(used.size, dtype=np.int32)
        finals = [number[comp[offsets[p]: offsets[p + 1]]] for p in range(n_slabs)]
    t_merge = time.perf_counter() - t0
    done = gather(client, [client.submit(_slab_labels, s, finals[p], return_core, pure=False,
                                         key=f"txm-live-dbscan-labels-{p}-{call}")
                           for p, s in enumerate(slabs)], what=what, timeout=timeout)
    del slabs
    core = np.zeros(n, dtype=bool) if return_core else None
    for p, (lab, c) in enumerate(done):
        own = sel[p][(x[sel[p]] >= edges[p]) & (x[sel[p]] < edges[p + 1])]
        labels[own] = lab
        if core is not None:
            core[own] = c
    out: list[Any] = [labels]
    if return_core:
        out.append(np.flatnonzero(core).astype(np.intp))
    if return_profile:
        received = sum(sum(a.nbytes for a in sm[1:6]) for sm in summaries)
        received += sum(lab.nbytes + (0 if c is None else c.nbytes) for lab, c in done)
        stats = tuple(SlabStats(*sm[6]) for sm in summaries)
        out.append(DbscanProfile(axis=axis, boundaries=tuple(float(b) for b in bounds),
                                 halo_fraction=sum(s.size for s in sel) / n - 1.0, slabs=stats,
                                 bytes_to_workers=sent + sum(f.nbytes for f in finals),
                                 bytes_from_workers=received, split_s=t_split, merge_s=t_merge,
                                 wall_s=time.perf_counter() - t_start))
    return out[0] if len(out) == 1 else tuple(out)
