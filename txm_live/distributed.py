"""Helpers to run txm-live's stage functions on a Dask cluster.

The analysis functions take ``client=None`` (in-process) or a ``dask.distributed.Client`` (a
:class:`~dask.distributed.LocalCluster` of this machine's cores, or a cluster reached by its
scheduler address). This module holds what every distributed path shares: resolving a client
from an address, counting workers, and gathering futures so that a lost worker or a dead
scheduler becomes a named :class:`~txm_live.errors.DistributedError` instead of a hang.

Dask is imported lazily inside the functions: importing this module (or ``txm_live``) never
imports dask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import logging

from txm_live.errors import DistributedError, WorkerLostError

logger = logging.getLogger(__name__)

__all__ = ["close_client", "connect", "gather", "hdf5_block", "local_cluster", "n_workers"]

#: Seconds to wait for the workers of a cluster given by address.
_CONNECT_TIMEOUT = 30.0


def connect(address: Any, *, timeout: float = _CONNECT_TIMEOUT) -> Any:
    """A ``dask.distributed.Client`` for ``address``.

    Parameters
    ----------
    address : str or Client
        ``"tcp://host:8786"`` (a running scheduler), ``"local"`` or ``"local:N"`` (a
        :class:`~dask.distributed.LocalCluster` of N worker processes on 127.0.0.1, one thread
        each, dashboard off; N defaults to the number of cores), or a Client (returned as is).
        The workers of the client's cluster get txm-live's allocator setup
        (:func:`txm_live.worker_allocator.prepare_workers`).
    timeout : float
        Seconds to wait for the scheduler.

    Raises
    ------
    ValueError
        ``address`` is not a string or a Client.
    DistributedError
        The scheduler cannot be reached in time.
    """
    from dask.distributed import Client

    from txm_live.worker_allocator import prepare_workers

    if isinstance(address, Client):
        prepare_workers(address)
        return address
    if not isinstance(address, str) or not address:
        raise ValueError(f"address must be a scheduler address, 'local[:N]' or a Client, got {address!r}")
    if address == "local" or address.startswith("local:"):
        import os

        n = int(address.split(":", 1)[1]) if ":" in address else (os.cpu_count() or 1)
        if n < 1:
            raise ValueError(f"address 'local:N' needs N >= 1, got {address!r}")
        cluster = local_cluster(n)
        client = Client(cluster, timeout=timeout)
        client._txm_live_owns_cluster = cluster  # closed by close_client
    else:
        try:
            client = Client(address, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise DistributedError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc
    prepare_workers(client)
    return client


def local_cluster(n_workers: int, **kwargs: Any) -> Any:
    """A :class:`~dask.distributed.LocalCluster` of ``n_workers`` processes on 127.0.0.1, one thread each.

    Notes
    -----
    The workers' statistical profiler is switched off: it calls ``sys._current_frames()`` every
    10 ms, which on CPython 3.11 can deadlock against a thread being started in a task (the
    analysis threads, scipy's k-d tree workers; CPython gh-106883, fixed in 3.12). A replay task
    was seen hung that way. On a cluster of your own running Python 3.11, set
    ``DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False`` in the workers' environment.

    The workers' memory allocation (glibc's mmap threshold, numpy's huge-page advice) is set by
    :func:`txm_live.worker_allocator.prepare_workers` when txm-live receives a client of the
    cluster (:func:`connect`, ``analyze_edge(client=)``, ``dbscan(client=)``), the same for this
    cluster and for clusters you start yourself.

    No dashboard, and the scheduler's remaining HTTP server (health and metrics routes) listens
    on a free port of 127.0.0.1 instead of Dask's fixed 8787: two clusters on one machine do
    not collide ("Port 8787 is already in use"). Pass ``dashboard_address=":8787"`` (or any
    address) for a dashboard.
    """
    import dask
    from dask.distributed import LocalCluster

    dashboard = kwargs.pop("dashboard_address", None)
    scheduler_kwargs = kwargs.pop("scheduler_kwargs", None) or {}
    if dashboard is None:  # the scheduler starts its HTTP server anyway, by default on port 8787
        scheduler_kwargs = {"dashboard_address": "127.0.0.1:0", **scheduler_kwargs}
    with dask.config.set({"distributed.worker.profile.enabled": False}):
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                            dashboard_address=dashboard, scheduler_kwargs=scheduler_kwargs, **kwargs)


def close_client(client: Any) -> None:
    """Close a client made by :func:`connect` (and its LocalCluster if it made one)."""
    cluster = getattr(client, "_txm_live_owns_cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def _cancel(client: Any, futures: Sequence[Any]) -> None:
    """Cancel what is left; a scheduler that is already gone cannot be told (logged, not raised)."""
    try:
        client.cancel(list(futures))
    except Exception as exc:  # noqa: BLE001 - the error being reported matters more
        logger.warning("could not cancel %d Dask task(s): %s", len(futures), exc)


def n_workers(client: Any) -> int:
    """Number of workers the scheduler knows now (at least 1)."""
    return max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))


def _direct(client: Any) -> bool | None:
    """Gather straight from the workers when they all listen on this machine's loopback (a
    LocalCluster): Dask's default for a client outside the cluster is to gather through the
    scheduler, one more copy of every result (with a LocalCluster, in this very process).
    Elsewhere the client's own setting holds (``None``: ``direct_to_workers``, default off,
    since workers of a remote cluster may not be reachable from the client)."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    local = ("tcp://127.0.0.1:", "tcp://localhost:", "tcp://[::1]:", "inproc://")
    on_loopback = str(getattr(client.scheduler, "address", "")).startswith(local)  # and the scheduler too
    if on_loopback and workers and all(str(w).startswith(local) for w in workers):
        return True
    return None


def gather(client: Any, futures: Sequence[Any], *, what: str, timeout: float | None = None) -> list[Any]:
    """Results of ``futures``; a failure on the cluster becomes a :class:`DistributedError`.

    A worker lost mid-task has its tasks rescheduled by Dask (up to the scheduler's
    ``allowed-failures``); beyond that, or when data only the lost worker held is needed
    (:class:`~txm_live.errors.WorkerLostError`), or when the scheduler is gone, or after
    ``timeout`` seconds, the remaining futures are cancelled and a ``DistributedError`` naming
    ``what`` is raised. Exceptions raised by the task functions themselves (e.g. ``ValueError``,
    :class:`~txm_live.errors.InsufficientDataError`) propagate unchanged.
    """
    from dask.distributed import wait
    from distributed.client import FutureCancelledError, FuturesCancelledError
    from distributed.scheduler import KilledWorker

    try:
        wait(list(futures), timeout=timeout)
        return client.gather(list(futures), direct=_direct(client))
    except KilledWorker as exc:
        _cancel(client, futures)
        raise WorkerLostError(f"{what}: a worker died while running {exc.args[0] if exc.args else 'a task'} "
                               f"(retried until the scheduler gave up): {exc}") from exc
    except (FutureCancelledError, FuturesCancelledError) as exc:  # e.g. scattered data lost with a worker
        _cancel(client, futures)
        raise WorkerLostError(f"{what}: tasks were cancelled, a worker was lost ({type(exc).__name__}: {exc})") from exc
    except (TimeoutError, OSError) as exc:
        _cancel(client, futures)
        raise DistributedError(f"{what}: the Dask cluster did not answer ({type(exc).__name__}: {exc})") from exc


class _Hdf5Reader:
    """Picklable array-like over one HDF5 dataset, opened lazily in each process that reads it."""

    def __init__(self, path: str, dataset: str) -> None:
        import h5py

        self.path = str(path)
        self.dataset = dataset
        with h5py.File(self.path, "r") as f:
            ds = f[dataset]
            self.shape = tuple(ds.shape)
            self.dtype = ds.dtype
            self.chunks = ds.chunks
        self.ndim = len(self.shape)
        self._file: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_file"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._file = None

    def __getitem__(self, key: Any) -> Any:
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r")
        return self._file[self.dataset][key]


def hdf5_block(path: Any, dataset: str, *, chunks: Any = None) -> Any:
    """A dask array over an HDF5 dataset that the workers read themselves.

    Parameters
    ----------
    path : str or path
        HDF5 file, readable at the same path on every worker (local disk or shared filesystem).
    dataset : str
        Dataset name, e.g. an energy-major ``(n_e, H, W)`` optical density block.
    chunks : optional
        Dask chunks (default: the whole first axis times the dataset's HDF5 chunk of the
        others: one read task per band of rows).

    Notes
    -----
    Use it as the ``block`` of :func:`txm_live.phases.analyze_edge` with ``client=``: each row
    tile is read on the cluster, never through the client, so a scan far larger than one
    machine's memory is analysed with about one tile (plus its normalization temporaries) per
    worker. Write the file with chunks whose rows divide the analysis tiles
    (:func:`txm_live.phases._row_tiles`) to avoid reading rows twice.
    """
    import dask.array as da

    reader = _Hdf5Reader(str(path), dataset)
    if chunks is None:  # whole first axis (energies) x the file's chunk of the other axes:
        # one read task per row tile; a slice of the energies (the edge window) is fused into
        # that read by dask's slice optimization, so only the window's rows are read
        c = reader.chunks or reader.shape
        chunks = (reader.shape[0], *c[1:])
    return da.from_array(reader, chunks=chunks, lock=False, asarray=True, fancy=False)
