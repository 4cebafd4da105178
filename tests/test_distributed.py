"""Dask: distributed analyze_edge and exact DBSCAN on a real LocalCluster equal the in-process ones.

One LocalCluster per module (2 worker processes, 1 thread each, 127.0.0.1, dashboard off).
"""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest
import txm_live_test_helpers as helpers

pytest.importorskip("distributed")

from txm_live.dbscan import dbscan  # noqa: E402
from txm_live.edges import default_windows  # noqa: E402
from txm_live.errors import DistributedError  # noqa: E402
from txm_live.phases import analyze_edge  # noqa: E402
from txm_live.sim.phantom import make_phantom  # noqa: E402

L3 = default_windows("Nd", ("L3",))[0]


@pytest.fixture(scope="module")
def client():
    with helpers.local_client(2) as c:
        yield c


def _cube(shape=(96, 80), seed=1):
    energies = np.arange(np.ceil(L3.start), L3.end + 1e-9, 1.0)
    od = make_phantom(shape, mode="mixed", seed=0).optical_density_stack(energies)
    rng = np.random.default_rng(seed)
    for i in range(od.shape[0]):
        sample = rng.poisson(5000.0 * np.exp(-od[i].astype(np.float64)))
        od[i] = -np.log(np.maximum(sample, 1) / rng.poisson(5000.0, size=od[i].shape))
    return energies, od


def test_analyze_edge_on_workers_equals_in_process(client, monkeypatch) -> None:
    import txm_live.phases as phases

    monkeypatch.setattr(phases, "_CHUNK_BYTES", 1 << 20)  # several tiles even on a small image
    energies, cube = _cube()
    ref = analyze_edge(energies, cube, window=L3)
    got = analyze_edge(energies, cube, window=L3, client=client, timeout=120)
    assert len(phases._row_tiles(*cube.shape[1:], cube.shape[0])) > 3
    assert ref.n_phases >= 2
    np.testing.assert_array_equal(got.labels, ref.labels)
    assert (got.eps, got.min_samples) == (ref.eps, ref.min_samples)  # k-distances reduced from the workers
    np.testing.assert_array_equal(got.mask, ref.mask)
    assert got.phase_names == ref.phase_names
    np.testing.assert_array_equal(got.counts, ref.counts)
    # per-phase sums are added tile by tile (float64 sums of float32 tiles): rounding only
    np.testing.assert_allclose(got.mean_spectra, ref.mean_spectra, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got.spread, ref.spread, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(got.white_line, ref.white_line)


@pytest.mark.parametrize("kw", [{"spatial_filter": False}, {"method": "mback"}])
def test_analyze_edge_on_workers_other_options_equal_in_process(client, monkeypatch, kw) -> None:
    """Without the sigma filter (scores straight from the projection) and with MBACK
    normalization (the generic per-tile normalization and phase statistics)."""
    import txm_live.phases as phases

    monkeypatch.setattr(phases, "_CHUNK_BYTES", 1 << 20)
    energies, cube = _cube(seed=5)
    ref = analyze_edge(energies, cube, window=L3, **kw)
    got = analyze_edge(energies, cube, window=L3, client=client, timeout=120, **kw)
    assert ref.n_phases >= 2
    np.testing.assert_array_equal(got.labels, ref.labels)
    # not bit for bit: the MBACK fits run through BLAS, whose float64 sums depend on how it splits
    # the pixels (a tile vs the whole image), so eps may move in the 7th digit (measured 2e-5
    # relative once in two fresh-clone runs); the labels above must still be identical
    np.testing.assert_allclose(got.eps, ref.eps, rtol=1e-4)
    np.testing.assert_allclose(got.mean_spectra, ref.mean_spectra, rtol=0, atol=1e-5)


def test_analyze_edge_reads_a_dask_array_on_the_workers(client, monkeypatch) -> None:
    import dask.array as da

    import txm_live.phases as phases

    monkeypatch.setattr(phases, "_CHUNK_BYTES", 1 << 20)
    energies, cube = _cube(seed=2)
    ref = analyze_edge(energies, cube, window=L3)
    lazy = da.from_array(cube, chunks=(16, 24, -1))
    got = analyze_edge(energies, lazy, window=L3, client=client, timeout=120)
    np.testing.assert_array_equal(got.labels, ref.labels)
    np.testing.assert_allclose(got.mean_spectra, ref.mean_spectra, rtol=0, atol=1e-5)


def test_dbscan_on_workers_equals_sklearn_small(client) -> None:
    from sklearn.cluster import DBSCAN

    from txm_live.dbscan_dist import dbscan_distributed

    X = helpers.blobs(6000, 2, seed=3)
    for eps, ms in ((0.2, 5), (0.5, 12)):
        ref = DBSCAN(eps=eps, min_samples=ms).fit_predict(X)
        got = dbscan_distributed(X, eps=eps, min_samples=ms, client=client, n_partitions=5)
        np.testing.assert_array_equal(got, ref)


def test_worker_killed_mid_dbscan_is_retried_or_named(client) -> None:
    """SIGKILL one worker process while the slabs are clustered: the scheduler reruns its task
    on the other (or the nanny's restarted) worker and the labels are still exact; if it gives
    up, a DistributedError is raised. Never a hang (timeout)."""
    from txm_live.dbscan_dist import dbscan_distributed

    X = helpers.blobs(400_000, 3, seed=11)
    ref = dbscan(X, eps=0.1, min_samples=6)
    pids = list(client.run(os.getpid).values())
    started = threading.Event()

    def killer() -> None:
        # wait until a slab task is running on the cluster, then kill the first worker
        import time

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            busy = client.processing()
            if any(busy.values()):
                break
            time.sleep(0.01)
        os.kill(pids[0], signal.SIGKILL)
        started.set()

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        got = dbscan_distributed(X, eps=0.1, min_samples=6, client=client, n_partitions=4, timeout=120)
    except DistributedError as exc:
        assert "worker" in str(exc) or "did not answer" in str(exc)
    else:
        np.testing.assert_array_equal(got, ref)
    t.join(60)
    assert started.is_set()
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it for the next tests


def test_gather_names_a_timeout(client) -> None:
    import time

    from txm_live.distributed import gather

    fut = client.submit(time.sleep, 5, pure=False)
    with pytest.raises(DistributedError, match="did not answer"):
        gather(client, [fut], what="a sleeping task", timeout=0.5)


def test_gather_goes_straight_to_loopback_workers(client) -> None:
    """A LocalCluster's workers (127.0.0.1) are gathered from directly, not through the scheduler
    that lives in this process; the results are the tasks' results."""
    from txm_live.distributed import _direct, gather

    assert client.scheduler.address.startswith("tcp://127.0.0.1:")
    assert _direct(client) is True
    futs = client.map(np.arange, [3, 5], pure=False)
    got = gather(client, futs, what="two ranges", timeout=60)
    assert [g.tolist() for g in got] == [[0, 1, 2], [0, 1, 2, 3, 4]]


def _scattered_block(client, cube, tiles):
    """``cube`` as a dask array persisted on the workers in chunks equal to the row tiles."""
    import dask
    import dask.array as da

    parts = []
    for rows in tiles:
        fut = client.scatter(np.ascontiguousarray(cube[:, rows, :]), hash=False)
        parts.append(da.from_delayed(dask.delayed(fut), shape=(cube.shape[0], rows.stop - rows.start, cube.shape[2]),
                                     dtype=cube.dtype))
    return client.persist(da.concatenate(parts, axis=1))


def test_analyze_edge_uses_a_block_already_on_the_workers(client, monkeypatch) -> None:
    """A dask array persisted in row-tile chunks is analysed from its chunks' futures (no read,
    no copy through the client) and gives the in-process labels."""
    import txm_live.phases as phases
    from txm_live.tiled_edge import _persisted_tiles

    monkeypatch.setattr(phases, "_CHUNK_BYTES", 1 << 20)
    energies, cube = _cube(seed=3)
    ref = analyze_edge(energies, cube, window=L3)
    tiles = phases._row_tiles(*cube.shape[1:], cube.shape[0])
    block = _scattered_block(client, cube, tiles)
    assert len(_persisted_tiles(client, block, tiles)) == len(tiles) > 3
    got = analyze_edge(energies, block, window=L3, client=client, timeout=120)
    np.testing.assert_array_equal(got.labels, ref.labels)
    np.testing.assert_array_equal(got.white_line, ref.white_line)
    np.testing.assert_allclose(got.mean_spectra, ref.mean_spectra, rtol=0, atol=1e-5)


@pytest.fixture
def own_client():
    """A LocalCluster of 2 workers of its own, for tests that kill workers."""
    with helpers.local_client(2) as c:
        yield c


def _busiest_pid(client) -> int:
    """Process id of the worker holding the most data (tiles and their intermediates)."""
    held = client.has_what()
    pids = client.run(os.getpid)
    return pids[max(pids, key=lambda w: len(held.get(w, ())))]


@pytest.mark.parametrize("stage", ["normalize", "pca", "summarize"])
def test_worker_killed_mid_analyze_edge_is_analysed_again(own_client, monkeypatch, stage) -> None:
    """SIGKILL a worker process when the analysis reaches ``stage`` (the tiles it held, scattered
    from the client, and everything computed from them are lost): the edge is analysed again
    once on the remaining workers, with the in-process labels and a note saying so; never a
    hang (well under the timeout). At "normalize" nothing was scattered yet: the tiles go to
    the live worker at once."""
    import time

    import txm_live.phases as phases

    monkeypatch.setattr(phases, "_CHUNK_BYTES", 1 << 20)
    energies, cube = _cube(seed=4)
    ref = analyze_edge(energies, cube, window=L3)
    killed = []

    def progress(name: str) -> None:
        if name == stage and not killed:
            os.kill(_busiest_pid(own_client), signal.SIGKILL)
            killed.append(name)

    t0 = time.monotonic()
    got = analyze_edge(energies, cube, window=L3, client=own_client, timeout=120, progress=progress)
    assert time.monotonic() - t0 < 120
    assert killed == [stage]
    np.testing.assert_array_equal(got.labels, ref.labels)
    np.testing.assert_allclose(got.mean_spectra, ref.mean_spectra, rtol=0, atol=1e-5)
    # killed before any tile was scattered, the scatter usually goes to the other worker (no retry
    # needed); later, the lost tiles must have been analysed again
    if stage != "normalize":
        assert any("worker was lost" in n for n in got.notes), got.notes


def test_worker_lost_twice_is_named(own_client, monkeypatch) -> None:
    """A worker killed in the first analysis and again in the retry: a WorkerLostError (a
    DistributedError) names it, no third attempt, no hang."""
    import time

    import txm_live.phases as phases
    from txm_live.errors import WorkerLostError

    monkeypatch.setattr(phases, "_CHUNK_BYTES", 1 << 20)
    energies, cube = _cube(seed=4)
    kills = []

    def progress(name: str) -> None:
        if name == "pca":
            os.kill(_busiest_pid(own_client), signal.SIGKILL)
            kills.append(name)

    t0 = time.monotonic()
    with pytest.raises(WorkerLostError, match="worker"):
        analyze_edge(energies, cube, window=L3, client=own_client, timeout=120, progress=progress)
    assert time.monotonic() - t0 < 200
    assert kills == ["pca", "pca"]


def test_phase_moments_with_another_reference_agree() -> None:
    """A tile's per-phase moments take their reference spectrum from the tile's own pixels, not
    the whole image's: the reference only centres the float32 differences, so mean and spread
    agree to float32 rounding of the spread (here ~1e-7 of values ~1) whatever the reference."""
    import txm_live.phases as phases

    energies, cube = _cube(shape=(64, 64), seed=3)
    ref = analyze_edge(energies, cube, window=L3)
    E = ref.energies
    Y2 = cube[np.isin(energies, E)].reshape(E.size, -1)
    pix = np.flatnonzero(ref.labels.ravel() >= 0)
    lab = ref.labels.ravel()[pix]
    from txm_live.tiles import normalize_tile

    f_rows = slice(0, 4)
    finite, step, _, _, coef, _ = normalize_tile(Y2, E, L3, "athena", f_rows)
    args = (E, Y2, L3, "athena", pix, lab, ref.n_phases)
    kw = dict(athena=(coef[:, pix], step[pix]), finite=finite)
    m0, s0, c0 = phases._window_phase_stats(*args, **kw)
    assert phases._REFERENCE_PIXELS < pix.size
    m1, s1, c1 = phases._window_phase_stats(*args, reference_pixels=pix.size, **kw)
    np.testing.assert_array_equal(c1, c0)
    np.testing.assert_allclose(m1, m0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(s1, s0, rtol=0, atol=1e-5)
    np.testing.assert_allclose(m0, ref.mean_spectra, rtol=0, atol=1e-6)  # the in-process path itself


def test_analyze_edge_on_in_process_workers_equals_in_process(monkeypatch) -> None:
    """Workers in the client's own process (``LocalCluster(processes=False)``) hold the scattered
    tiles themselves: each tile gets a buffer of its own (with worker processes, one client
    buffer is reused, since the scatter returns once the worker has its copy)."""
    from dask.distributed import Client, LocalCluster

    import txm_live.phases as phases

    monkeypatch.setattr(phases, "_CHUNK_BYTES", 1 << 20)
    energies, cube = _cube(seed=6)
    ref = analyze_edge(energies, cube, window=L3)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as c:
        assert all(w.startswith("inproc://") for w in c.scheduler_info(n_workers=-1)["workers"])
        got = analyze_edge(energies, cube, window=L3, client=c, timeout=120)
    assert len(phases._row_tiles(*cube.shape[1:], cube.shape[0])) > 3
    np.testing.assert_array_equal(got.labels, ref.labels)
    np.testing.assert_array_equal(got.white_line, ref.white_line)


@pytest.mark.parametrize("H,W,n_e", [(602, 643, 641), (2048, 2048, 300), (100, 100, 50), (37, 513, 2000), (1, 5, 5)])
def test_row_tiles_are_even(H: int, W: int, n_e: int) -> None:
    """The row bands of the analysis (in process and on the workers) cover the image once, as many
    as the block size needs, none taller than it allows, all of one height but the last, which is
    within one row per band of it (two workers get nearly equal shares: at full size 15 x 38 + 32
    rows, not 15 x 40 + 2)."""
    from txm_live import phases

    tiles = phases._row_tiles(H, W, n_e)
    step = max(1, int(phases._CHUNK_BYTES // (4 * n_e * W)))
    heights = [t.stop - t.start for t in tiles]
    assert tiles[0].start == 0 and tiles[-1].stop == H
    assert all(a.stop == b.start for a, b in zip(tiles, tiles[1:]))
    assert len(tiles) == -(-H // step) and max(heights) <= step
    assert len(set(heights[:-1])) <= 1 and heights[-1] > heights[0] - len(tiles)
    if (H, W, n_e) == (602, 643, 641):
        assert heights == [38] * 15 + [32]


@pytest.mark.parametrize("n_parts", [1, 2, 3, 7])
def test_feature_noise_split_between_workers_equals_in_process(n_parts: int) -> None:
    """The feature noise of the distributed analysis, its rows split between the workers
    (tiles.feature_noise_part per share of the rows, joined in tiles.tile_whiten_parts), is bit
    for bit the in-process estimate (phases._noise_per_feature on the same pixel sample), and so
    are the whitened features."""
    from txm_live import tiles as T
    from txm_live.phases import _feature_basis, _noise_per_feature, _noise_from_mad, _whiten

    rng = np.random.default_rng(3)
    x = np.cumsum(rng.uniform(0.3, 1.5, 41)) + 6200.0
    F = (np.sin(x / 7.0)[:, None] + rng.normal(0, 0.05, (x.size, 3000)) * rng.uniform(0.5, 2, (x.size, 1)))
    F = F.astype(np.float32)
    bounds = [0, 700, 1500, 3000]  # three tiles: the sums and the sample pixels of each
    stats = [T.tile_feature_stats(F[:, a:b], np.arange(0, b - a, 3)) for a, b in zip(bounds, bounds[1:])]
    sample = np.concatenate([F[:, a:b][:, ::3] for a, b in zip(bounds, bounds[1:])], axis=1)
    n_in = x.size - 2
    parts = [T.feature_noise_part(stats, F.shape[1], x, slice(g * n_in // n_parts, (g + 1) * n_in // n_parts))
             for g in range(n_parts)]
    noise = _noise_per_feature(sample, x)
    np.testing.assert_array_equal(_noise_from_mad(np.concatenate([p[1] for p in parts]), x), noise)
    mean = np.sum([s[0] for s in stats], axis=0) / F.shape[1]
    np.testing.assert_array_equal(parts[0][0], mean)
    np.testing.assert_array_equal(T.tile_whiten_parts(F[:, :700], parts, x, 6220.0),
                                  _whiten(F[:, :700], _feature_basis(mean, x, 6220.0), noise))
