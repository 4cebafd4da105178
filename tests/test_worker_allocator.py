"""One allocator setup for every Dask worker that runs txm-live tasks (txm_live.worker_allocator).

Each test starts its own real LocalCluster the way a user would (plain ``LocalCluster``: Dask's
nanny gives the workers ``MALLOC_TRIM_THRESHOLD_=65536``), checks that the workers show the
problem, hands the client to a txm-live entry point, and checks that the workers changed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("distributed")

from txm_live.dbscan import dbscan  # noqa: E402
from txm_live.distributed import connect, local_cluster  # noqa: E402
from txm_live.edges import default_windows  # noqa: E402
from txm_live.phases import analyze_edge  # noqa: E402
from txm_live.sim.phantom import make_phantom  # noqa: E402
from txm_live.worker_allocator import PLUGIN_NAME, prepare_workers  # noqa: E402

#: 1 MiB float64 temporaries: above glibc's static 128 KiB mmap threshold, below 32 MiB.
_N = 1 << 17
#: Faults per fresh 1 MiB array when it is mapped anew (256 pages of 4 KiB); reused heap: ~0.
_MAPPED, _REUSED = 200, 20


def _probe() -> tuple[float, bool]:
    """(minor page faults per 1 MiB temporary, numpy's huge-page advice) in this worker."""
    import resource

    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    a = np.ones(_N)
    del a
    f0 = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(50):
        a = np.ones(_N)  # written: every page touched
        del a
    faults = (resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - f0) / 50
    return faults, bool(multiarray._get_madvise_hugepage())


def _users_cluster(n: int = 1):
    """A cluster as a user starts it (not txm-live's local_cluster), nanny defaults."""
    import dask
    from dask.distributed import Client, LocalCluster

    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        pytest.skip("MALLOC_MMAP_THRESHOLD_ / NUMPY_MADVISE_HUGEPAGE set in this process's environment "
                    "(inherited by the workers and respected by design)")
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), "MALLOC_TRIM_THRESHOLD_": 65536}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0")
    return cluster, Client(cluster)


def _edge_call(client) -> None:
    L3 = default_windows("Nd", ("L3",))[0]
    energies = np.arange(np.ceil(L3.start), L3.end + 1e-9, 1.0)
    od = make_phantom((48, 40), mode="mixed", seed=0).optical_density_stack(energies)
    analyze_edge(energies, od, window=L3, client=client, timeout=120)


def _dbscan_call(client) -> None:
    X = np.random.default_rng(0).normal(size=(3000, 2))
    dbscan(X, eps=0.2, min_samples=5, client=client)


@pytest.mark.parametrize("entry", ["connect", "analyze_edge", "dbscan"])
def test_workers_of_a_users_cluster_get_the_allocator_setup(entry) -> None:
    """Every txm-live entry that receives a client prepares its workers: afterwards a 1 MiB
    temporary reuses heap memory instead of being mapped and faulted in anew (glibc's mmap
    threshold), and numpy gives no huge-page advice. Before: both problems present."""
    cluster, client = _users_cluster()
    try:
        (before,) = client.run(_probe).values()
        assert before[0] > _MAPPED, f"the nanny's MALLOC_TRIM_THRESHOLD_ should map each temporary: {before}"
        assert before[1] is True
        {"connect": connect, "analyze_edge": _edge_call, "dbscan": _dbscan_call}[entry](client)
        (after,) = client.run(_probe).values()
        assert after[0] < _REUSED, after
        assert after[1] is False
    finally:
        client.close()
        cluster.close()


def test_registration_is_idempotent_and_covers_workers_that_join_later() -> None:
    cluster, client = _users_cluster()
    try:
        prepare_workers(client)
        prepare_workers(client)  # no-op (cached on the client)
        from dask.distributed import Client

        with Client(cluster.scheduler_address) as other:  # another client: the scheduler ignores it
            prepare_workers(other)
        plugins = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.worker_plugins))
        assert plugins.count(PLUGIN_NAME) == 1
        cluster.scale(2)
        client.wait_for_workers(2, timeout=120)
        got = client.run(_probe)
        assert len(got) == 2
        assert all(f < _REUSED and not huge for f, huge in got.values()), got
        settings = client.run(lambda dask_worker: dask_worker._txm_live_allocator)
        assert all(s.malloc_thresholds and s.numpy_huge_pages_off and s.reason == "" for s in settings.values())
    finally:
        client.close()
        cluster.close()


def test_explicit_worker_environment_is_respected() -> None:
    """``MALLOC_MMAP_THRESHOLD_`` / ``NUMPY_MADVISE_HUGEPAGE`` in a worker's environment are explicit
    choices: left alone, and the reason is reported."""
    code = ("from txm_live.worker_allocator import apply_in_this_process\n"
            "from numpy._core import multiarray\n"
            "s = apply_in_this_process()\n"
            "print(s.malloc_thresholds, s.numpy_huge_pages_off, multiarray._get_madvise_hugepage(), '|', s.reason)\n")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "NUMPY_MADVISE_HUGEPAGE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=120)
    flags, reason = out.stdout.split("|")
    assert flags.split() == ["False", "False", "True"]
    assert "MALLOC_MMAP_THRESHOLD_" in reason and "NUMPY_MADVISE_HUGEPAGE" in reason


def test_local_cluster_takes_no_fixed_http_port() -> None:
    """Two local_clusters at once: no "Port 8787 is already in use" warning, neither on 8787,
    both on 127.0.0.1 (Dask's scheduler starts an HTTP server even without a dashboard)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        first = local_cluster(1)
        try:
            second = local_cluster(1)
            try:
                for c in (first, second):
                    assert c.scheduler.http_server.port != 8787
                    assert c.scheduler.http_server.address == "127.0.0.1"
            finally:
                second.close()
        finally:
            first.close()
